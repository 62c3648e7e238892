/*
 * bench/json_scan.h: the load generator's JSON skipping (header-only): find
 * where a value ends without building it, for the fields of server frames
 * and long-poll answers the bench reads.  Pure; any thread.
 */
#ifndef bench_json_scan_h
#define bench_json_scan_h

#include <ctype.h>
#include <stddef.h>

#define JS_DEPTH_MAX 32 /* nesting past this is refused */

/* Skips JSON whitespace in [p, e). */
static inline const char *
js_ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at an opening quote: returns the byte after the closing quote, or NULL
 * (unterminated, or a raw control character inside). */
static inline const char *
js_str(const char *p, const char *e)
{
	for (p++; p < e; p++) {
		if (*p == '\\') {
			if (++p >= e)
				return NULL;
		} else if (*p == '"') {
			return p + 1;
		} else if ((unsigned char)*p < 0x20) {
			return NULL;
		}
	}
	return NULL;
}

/* Skips one JSON value at p (after whitespace) nested depth deep; returns
 * its end, or NULL when it is malformed or nests past JS_DEPTH_MAX.
 * Scalars are only delimited, not checked. */
static inline const char *
js_skip(const char *p, const char *e, int depth)
{
	p = js_ws(p, e);
	if (p >= e)
		return NULL;
	if (*p == '"')
		return js_str(p, e);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		if (depth >= JS_DEPTH_MAX)
			return NULL;
		p = js_ws(p + 1, e);
		if (p < e && *p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				p = js_ws(p, e);
				if (p >= e || *p != '"' || !(p = js_str(p, e)))
					return NULL;
				p = js_ws(p, e);
				if (p >= e || *p != ':')
					return NULL;
				p++;
			}
			if (!(p = js_skip(p, e, depth + 1)))
				return NULL;
			p = js_ws(p, e);
			if (p >= e)
				return NULL;
			if (*p == ',') {
				p++;
				continue;
			}
			return *p == close ? p + 1 : NULL;
		}
	}
	const char *s = p;
	while (p < e && (isalnum((unsigned char)*p) || *p == '-' || *p == '+' || *p == '.'))
		p++;
	return p > s ? p : NULL;
}

#endif /* bench_json_scan_h */
