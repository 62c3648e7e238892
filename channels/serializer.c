/*
 * Phoenix V1/V2 socket serializers (see serializer.h for the wire formats).
 *
 * Decoding validates the whole frame with a small strict JSON scanner (RFC
 * 8259 grammar, strict UTF-8, paired surrogate escapes: what Jason accepts),
 * which also records the spans of the message fields, so refs and the payload
 * can be kept as the exact text received.  Only the payload is then parsed
 * with cJSON.  Encoding writes frames directly into an rt_buf.
 */
#include "channels/serializer.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/utf8.h"

/* ---- JSON scanning (UTF-8: runtime/utf8.h) ------------------------------------- */

static const uint8_t *
skip_ws(const uint8_t *p, const uint8_t *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static int
hex4(const uint8_t *p, const uint8_t *end, unsigned *out)
{
	unsigned v = 0;
	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		uint8_t c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/*
 * Reads one \u escape (p just after the "u"), joining a surrogate pair.
 * Returns the position after it and the code point in *cp, or NULL.
 */
static const uint8_t *
scan_u_escape(const uint8_t *p, const uint8_t *end, unsigned *cp)
{
	unsigned hi, lo;
	if (hex4(p, end, &hi) < 0)
		return NULL;
	p += 4;
	if (hi >= 0xDC00 && hi <= 0xDFFF)
		return NULL; /* lone low surrogate */
	if (hi >= 0xD800 && hi <= 0xDBFF) {
		if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) < 0 ||
		    lo < 0xDC00 || lo > 0xDFFF)
			return NULL;
		p += 6;
		hi = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
	}
	*cp = hi;
	return p;
}

/* Validates the JSON string starting at p (at its opening quote); returns the end or NULL. */
static const uint8_t *
scan_string(const uint8_t *p, const uint8_t *end)
{
	unsigned cp;
	if (p >= end || *p != '"')
		return NULL;
	p++;
	while (p < end) {
		uint8_t c = *p;
		if (c == '"')
			return p + 1;
		if (c == '\\') {
			if (++p == end)
				return NULL;
			switch (*p) {
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				p++;
				break;
			case 'u':
				p = scan_u_escape(p + 1, end, &cp);
				if (!p)
					return NULL;
				break;
			default:
				return NULL;
			}
		} else if (c < 0x20) {
			return NULL;
		} else if (c < 0x80) {
			p++;
		} else {
			size_t k = rt_utf8_seq_len(p, (size_t)(end - p));
			if (!k)
				return NULL;
			p += k;
		}
	}
	return NULL;
}

static size_t
put_utf8(uint8_t *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xC0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t)(0xE0 | cp >> 12);
		o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (uint8_t)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (uint8_t)(0xF0 | cp >> 18);
	o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (uint8_t)(0x80 | (cp & 0x3F));
	return 4;
}

/*
 * Decodes the validated JSON string token [p, end) (quotes included) into out
 * (at most cap bytes, NUL added).  Returns the length, or -1 when it does not
 * fit.  *has_nul is set when the contents hold a NUL.
 */
static long
unescape(const uint8_t *p, const uint8_t *end, uint8_t *out, size_t cap, int *has_nul)
{
	size_t o = 0;
	uint8_t tmp[4];
	*has_nul = 0;
	p++;   /* opening quote */
	end--; /* closing quote */
	while (p < end) {
		const uint8_t *src = p;
		size_t n = 1;
		if (*p == '\\') {
			p++;
			switch (*p++) {
			case 'b':
				tmp[0] = '\b';
				break;
			case 'f':
				tmp[0] = '\f';
				break;
			case 'n':
				tmp[0] = '\n';
				break;
			case 'r':
				tmp[0] = '\r';
				break;
			case 't':
				tmp[0] = '\t';
				break;
			case 'u': {
				unsigned cp = 0;
				p = scan_u_escape(p, end, &cp);
				if (!p)
					return -1; /* not reached for validated input */
				n = put_utf8(tmp, cp);
				if (cp == 0)
					*has_nul = 1;
				break;
			}
			default: /* '"', '\\', '/' */
				tmp[0] = p[-1];
				break;
			}
			src = tmp;
		} else {
			p++;
		}
		if (o + n + 1 > cap)
			return -1;
		memcpy(out + o, src, n);
		o += n;
	}
	if (o + 1 > cap)
		return -1;
	out[o] = 0;
	return (long)o;
}

static const uint8_t *
scan_number(const uint8_t *p, const uint8_t *end)
{
	if (p < end && *p == '-')
		p++;
	if (p == end)
		return NULL;
	if (*p == '0') {
		p++;
	} else if (*p >= '1' && *p <= '9') {
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	} else {
		return NULL;
	}
	if (p < end && *p == '.') {
		p++;
		if (p == end || *p < '0' || *p > '9')
			return NULL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || *p < '0' || *p > '9')
			return NULL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	return p;
}

static const uint8_t *
scan_literal(const uint8_t *p, const uint8_t *end, const char *lit, size_t n)
{
	if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0)
		return NULL;
	return p + n;
}

/*
 * Validates one JSON value starting at p (no leading whitespace), nested at
 * most max_depth containers deep (iteratively: no recursion).  Returns its end
 * or NULL.
 */
static const uint8_t *
scan_value(const uint8_t *p, const uint8_t *end, int max_depth)
{
	uint8_t closer[CH_JSON_MAX_DEPTH];
	int depth = 0;
	if (max_depth > CH_JSON_MAX_DEPTH)
		max_depth = CH_JSON_MAX_DEPTH;
	for (;;) {
		/* A value at p. */
		if (p >= end)
			return NULL;
		switch (*p) {
		case '{':
		case '[':
			if (depth >= max_depth)
				return NULL;
			closer[depth++] = *p == '{' ? '}' : ']';
			p = skip_ws(p + 1, end);
			if (p < end && *p == closer[depth - 1]) {
				p++;
				depth--;
				break;
			}
			if (closer[depth - 1] == '}')
				goto key;
			continue;
		case '"':
			p = scan_string(p, end);
			break;
		case 't':
			p = scan_literal(p, end, "true", 4);
			break;
		case 'f':
			p = scan_literal(p, end, "false", 5);
			break;
		case 'n':
			p = scan_literal(p, end, "null", 4);
			break;
		default:
			p = scan_number(p, end);
			break;
		}
		if (!p)
			return NULL;
		/* After a value: close containers or move to the next element. */
		for (;;) {
			if (depth == 0)
				return p;
			p = skip_ws(p, end);
			if (p == end)
				return NULL;
			if (*p == closer[depth - 1]) {
				p++;
				depth--;
				continue;
			}
			if (*p != ',')
				return NULL;
			p = skip_ws(p + 1, end);
			if (closer[depth - 1] == '}')
				goto key;
			break;
		}
		continue;
	key:
		/* An object member at p: "key" : value. */
		p = scan_string(p, end);
		if (!p)
			return NULL;
		p = skip_ws(p, end);
		if (p == end || *p != ':')
			return NULL;
		p = skip_ws(p + 1, end);
	}
}

/* ---- decoding ----------------------------------------------------------------- */

/* A span of the frame being decoded: on the decoding thread's stack. */
typedef struct span {
	const uint8_t *p, *end;
} span;

static size_t
span_len(span s)
{
	return (size_t)(s.end - s.p);
}

/* Bump allocation inside the message's single block: on the decoding
 * thread's stack, for one decode. */
typedef struct arena {
	uint8_t *base;
	size_t used, cap;
} arena;

static char *
arena_copy(arena *a, const uint8_t *p, size_t n)
{
	char *o = (char *)a->base + a->used;
	if (n)
		memcpy(o, p, n);
	o[n] = 0;
	a->used += n + 1;
	return o;
}

/* Decodes a string element into the arena; -1 unless it is a string without NUL. */
static int
arena_string(arena *a, span s, char **out)
{
	int has_nul;
	if (s.p >= s.end || *s.p != '"')
		return -1;
	uint8_t *o = a->base + a->used;
	long n = unescape(s.p, s.end, o, a->cap - a->used, &has_nul);
	if (n < 0 || has_nul)
		return -1;
	a->used += (size_t)n + 1;
	*out = (char *)o;
	return 0;
}

static int
fail(ch_msg *out, const char **err, const char *why)
{
	if (out->mem_)
		free(out->mem_);
	if (out->payload)
		cJSON_Delete(out->payload);
	memset(out, 0, sizeof(*out));
	if (err)
		*err = why;
	return -1;
}

/* A topic or event: decoded into *str when it is a string without NUL; else,
 * when loose, kept as its raw JSON token in *raw (*str NULL). */
static int
arena_name(arena *a, span s, char **str, char **raw, bool loose)
{
	size_t mark = a->used;
	if (arena_string(a, s, str) == 0)
		return 0;
	a->used = mark;
	*str = NULL;
	if (!loose)
		return -1;
	*raw = arena_copy(a, s.p, span_len(s));
	return 0;
}

/* Fills *out from the five field spans (join_ref may be absent: p == NULL). */
static int
build_text_msg(span join_ref, span ref, span topic, span event, span payload, ch_msg *out,
               const char **err, bool tree)
{
	size_t need = (join_ref.p ? span_len(join_ref) : 0) + span_len(ref) + span_len(topic) +
	              span_len(event) + span_len(payload) + 5;
	arena a = {malloc(need), 0, need};
	if (!a.base)
		return fail(out, err, "out of memory");
	out->mem_ = a.base;
	if (join_ref.p)
		out->join_ref = arena_copy(&a, join_ref.p, span_len(join_ref));
	out->ref = arena_copy(&a, ref.p, span_len(ref));
	/* The raw decoder (the socket's) lets any topic and event through, as
	 * Phoenix's serializers do; the tree decoder keeps them strings. */
	if (arena_name(&a, topic, &out->topic, &out->topic_raw, !tree) < 0)
		return fail(out, err, "topic is not a string");
	if (arena_name(&a, event, &out->event, &out->event_raw, !tree) < 0)
		return fail(out, err, "event is not a string");
	out->payload_json = arena_copy(&a, payload.p, span_len(payload));
	out->payload_json_len = span_len(payload);
	if (!tree)
		return 0; /* scan_value validated it already */
	out->payload = cJSON_ParseWithLength(out->payload_json, out->payload_json_len);
	if (!out->payload)
		return fail(out, err, "payload not parseable by cJSON");
	return 0;
}

static int
decode_v2_text(const uint8_t *data, size_t len, ch_msg *out, const char **err, bool tree)
{
	const uint8_t *end = data + len;
	const uint8_t *p = skip_ws(data, end);
	span el[5] = {{0}};
	size_t count = 0;
	if (p == end || *p != '[')
		return fail(out, err, "V2 text frame is not a JSON array");
	p = skip_ws(p + 1, end);
	if (p < end && *p == ']') {
		p++;
	} else {
		for (;;) {
			const uint8_t *q = scan_value(p, end, CH_JSON_MAX_DEPTH - 1);
			if (!q)
				return fail(out, err, "invalid JSON");
			if (count < 5)
				el[count] = (span){p, q};
			count++;
			p = skip_ws(q, end);
			if (p < end && *p == ',') {
				p = skip_ws(p + 1, end);
				continue;
			}
			if (p < end && *p == ']') {
				p++;
				break;
			}
			return fail(out, err, "invalid JSON");
		}
	}
	if (skip_ws(p, end) != end)
		return fail(out, err, "invalid JSON: trailing data");
	if (count < 5)
		return fail(out, err, "V2 array has fewer than 5 elements");
	return build_text_msg(el[0], el[1], el[2], el[3], el[4], out, err, tree);
}

/* The V1 keys, in the order of the spans kept for them. */
static const char *const v1_keys[] = {"topic", "event", "payload", "ref", "join_ref"};

static int
decode_v1(const uint8_t *data, size_t len, ch_msg *out, const char **err, bool tree)
{
	const uint8_t *end = data + len;
	const uint8_t *p = skip_ws(data, end);
	span field[5] = {{0}};
	if (p == end || *p != '{')
		return fail(out, err, "V1 frame is not a JSON object");
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
	} else {
		for (;;) {
			const uint8_t *kq = scan_string(p, end);
			if (!kq)
				return fail(out, err, "invalid JSON");
			uint8_t key[64];
			int has_nul, which = -1;
			long kn = unescape(p, kq, key, sizeof(key), &has_nul);
			for (int i = 0; kn >= 0 && i < 5; i++)
				if ((size_t)kn == strlen(v1_keys[i]) &&
				    memcmp(key, v1_keys[i], (size_t)kn) == 0)
					which = i;
			p = skip_ws(kq, end);
			if (p == end || *p != ':')
				return fail(out, err, "invalid JSON");
			p = skip_ws(p + 1, end);
			const uint8_t *vq = scan_value(p, end, CH_JSON_MAX_DEPTH - 1);
			if (!vq)
				return fail(out, err, "invalid JSON");
			if (which >= 0)
				field[which] =
				    (span){p, vq}; /* the last duplicate wins, as in Jason */
			p = skip_ws(vq, end);
			if (p < end && *p == ',') {
				p = skip_ws(p + 1, end);
				continue;
			}
			if (p < end && *p == '}') {
				p++;
				break;
			}
			return fail(out, err, "invalid JSON");
		}
	}
	if (skip_ws(p, end) != end)
		return fail(out, err, "invalid JSON: trailing data");
	if (!field[0].p)
		return fail(out, err, "missing key \"topic\"");
	if (!field[1].p)
		return fail(out, err, "missing key \"event\"");
	if (!field[2].p)
		return fail(out, err, "missing key \"payload\"");
	if (!field[3].p)
		return fail(out, err, "missing key \"ref\"");
	return build_text_msg(field[4], field[3], field[0], field[1], field[2], out, err, tree);
}

/* Length of s as a JSON string token (Jason's escaping, quotes included). */
static size_t
json_string_len(const uint8_t *s, size_t n)
{
	size_t l = 2;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];
		if (c == '"' || c == '\\' || c == '\b' || c == '\t' || c == '\n' || c == '\f' ||
		    c == '\r')
			l += 2;
		else if (c < 0x20)
			l += 6;
		else
			l += 1;
	}
	return l;
}

/* The escape for byte c, or NULL when it goes through as is. */
static const char *
json_escape(uint8_t c, char tmp[8])
{
	static const char hex[] = "0123456789ABCDEF";
	switch (c) {
	case '"':
		return "\\\"";
	case '\\':
		return "\\\\";
	case '\b':
		return "\\b";
	case '\t':
		return "\\t";
	case '\n':
		return "\\n";
	case '\f':
		return "\\f";
	case '\r':
		return "\\r";
	default:
		if (c >= 0x20)
			return NULL;
		memcpy(tmp, "\\u00", 4);
		tmp[4] = hex[c >> 4];
		tmp[5] = hex[c & 15];
		tmp[6] = 0;
		return tmp;
	}
}

/* Writes s as a JSON string token at o (json_string_len bytes); s is valid UTF-8. */
static size_t
json_string_write(uint8_t *o, const uint8_t *s, size_t n)
{
	size_t k = 0;
	char tmp[8];
	o[k++] = '"';
	for (size_t i = 0; i < n; i++) {
		const char *e = json_escape(s[i], tmp);
		if (e) {
			size_t el = strlen(e);
			memcpy(o + k, e, el);
			k += el;
		} else {
			o[k++] = s[i];
		}
	}
	o[k++] = '"';
	return k;
}

static int
decode_v2_binary(const uint8_t *data, size_t len, ch_msg *out, const char **err)
{
	if (len < 5)
		return fail(out, err, "binary frame shorter than its header");
	if (data[0] != 0)
		return fail(out, err, "binary frame is not a push (kind 0)");
	size_t jl = data[1], rl = data[2], tl = data[3], el = data[4];
	if (len - 5 < jl + rl + tl + el)
		return fail(out, err, "binary frame sizes exceed the frame");
	const uint8_t *j = data + 5, *r = j + jl, *t = r + rl, *e = t + tl, *d = e + el;
	size_t dl = len - (size_t)(d - data);
	if (!rt_utf8_valid(j, jl) || !rt_utf8_valid(r, rl))
		return fail(out, err, "binary frame ref is not UTF-8");
	if (!rt_utf8_valid(t, tl) || memchr(t, 0, tl))
		return fail(out, err, "binary frame topic is not UTF-8 text");
	if (!rt_utf8_valid(e, el) || memchr(e, 0, el))
		return fail(out, err, "binary frame event is not UTF-8 text");
	size_t jq = json_string_len(j, jl), rq = json_string_len(r, rl);
	size_t need = jq + rq + tl + el + dl + 5;
	uint8_t *m = malloc(need);
	if (!m)
		return fail(out, err, "out of memory");
	out->mem_ = m;
	size_t o = 0;
	out->join_ref = (char *)m + o;
	o += json_string_write(m + o, j, jl);
	m[o++] = 0;
	out->ref = (char *)m + o;
	o += json_string_write(m + o, r, rl);
	m[o++] = 0;
	arena a = {m, o, need};
	out->topic = arena_copy(&a, t, tl);
	out->event = arena_copy(&a, e, el);
	out->bin = a.base + a.used;
	if (dl)
		memcpy(out->bin, d, dl);
	out->bin_len = dl;
	return 0;
}

static int
decode(int vsn, int is_binary_frame, const uint8_t *data, size_t len, ch_msg *out, const char **err,
       bool tree)
{
	if (err)
		*err = NULL;
	if (!out)
		return -1;
	memset(out, 0, sizeof(*out));
	if (!data && len)
		return fail(out, err, "no data");
	if (!data)
		data = (const uint8_t *)"";
	if (vsn == CH_VSN_1)
		return decode_v1(data, len, out, err, tree); /* Phoenix's V1 ignores the opcode */
	if (vsn != CH_VSN_2)
		return fail(out, err, "unknown serializer version");
	if (is_binary_frame)
		return decode_v2_binary(data, len, out, err);
	return decode_v2_text(data, len, out, err, tree);
}

int
ch_msg_decode(int vsn, int is_binary_frame, const uint8_t *data, size_t len, ch_msg *out,
              const char **err)
{
	return decode(vsn, is_binary_frame, data, len, out, err, true);
}

int
ch_msg_decode_raw(int vsn, int is_binary_frame, const uint8_t *data, size_t len, ch_msg *out,
                  const char **err)
{
	return decode(vsn, is_binary_frame, data, len, out, err, false);
}

void
ch_msg_free(ch_msg *m)
{
	if (!m)
		return;
	free(m->mem_);
	cJSON_Delete(m->payload);
	memset(m, 0, sizeof(*m));
}

/* ---- refs ------------------------------------------------------------------- */

int
ch_ref_is_null(const char *raw)
{
	return !raw || strcmp(raw, "null") == 0;
}

long
ch_ref_string(const char *raw, char *out, size_t cap)
{
	if (!out || cap == 0)
		return -1;
	if (ch_ref_is_null(raw)) {
		out[0] = 0;
		return 0;
	}
	size_t n = strlen(raw);
	const uint8_t *p = (const uint8_t *)raw, *end = p + n;
	if (n && raw[0] == '"') {
		int has_nul;
		if (scan_string(p, end) != end)
			return -1;
		return unescape(p, end, (uint8_t *)out, cap, &has_nul);
	}
	if (n == 0 || raw[0] == '[' || raw[0] == '{' || n + 1 > cap)
		return -1;
	memcpy(out, raw, n + 1);
	return (long)n;
}

int
ch_ref_equal(const char *a, const char *b)
{
	int an = ch_ref_is_null(a), bn = ch_ref_is_null(b);
	if (an || bn)
		return an && bn;
	if (strcmp(a, b) == 0)
		return 1;
	if (a[0] != '"' || b[0] != '"')
		return 0;
	size_t al = strlen(a), bl = strlen(b);
	char *x = malloc(al + 1), *y = malloc(bl + 1);
	int eq = 0;
	if (x && y) {
		long xn = ch_ref_string(a, x, al + 1), yn = ch_ref_string(b, y, bl + 1);
		eq = xn >= 0 && xn == yn && memcmp(x, y, (size_t)xn) == 0;
	}
	free(x);
	free(y);
	return eq;
}

/* ---- encoding --------------------------------------------------------------- */

static void
put(rt_buf **b, const void *p, size_t n)
{
	if (n)
		*b = rt_buf_append(*b, p, n);
}

static void
put_str(rt_buf **b, const char *s)
{
	*b = rt_buf_append(*b, s, strlen(s));
}

static void
put_byte(rt_buf **b, uint8_t c)
{
	*b = rt_buf_append(*b, &c, 1);
}

static void
put_raw(rt_buf **b, const char *raw)
{
	put_str(b, raw ? raw : "null");
}

int
ch_json_append_string(rt_buf **b, const char *s, size_t n)
{
	const uint8_t *u = (const uint8_t *)s;
	if (!b || (!s && n))
		return -1;
	if (!*b)
		*b = rt_buf_alloc(n + 16);
	if (!rt_utf8_valid(u, n))
		return -1;
	*b = rt_buf_reserve(*b, n + 2);
	char tmp[8];
	size_t run = 0;
	put_byte(b, '"');
	for (size_t i = 0; i < n; i++) {
		const char *e = json_escape(u[i], tmp);
		if (!e)
			continue;
		put(b, u + run, i - run);
		put_str(b, e);
		run = i + 1;
	}
	put(b, u + run, n - run);
	put_byte(b, '"');
	return 0;
}

static int
put_json_cstr(rt_buf **b, const char *s)
{
	return s ? ch_json_append_string(b, s, strlen(s)) : -1;
}

/* A topic: a string to escape, or (raw) a JSON token spliced verbatim. */
static int
put_topic(rt_buf **b, const char *topic, bool raw)
{
	if (!raw)
		return put_json_cstr(b, topic);
	if (!topic)
		return -1;
	put_str(b, topic);
	return 0;
}

/* Prepares *b; returns its current length (the rollback mark). */
static size_t
begin(rt_buf **b, size_t hint)
{
	if (!*b)
		*b = rt_buf_alloc(hint);
	else
		*b = rt_buf_reserve(*b, hint);
	return (*b)->len;
}

static int
rollback(rt_buf **b, size_t mark)
{
	(*b)->len = mark;
	return -1;
}

int
ch_json_valid(const char *text, size_t len)
{
	const uint8_t *p = (const uint8_t *)text, *end = p + len;
	p = skip_ws(p, end);
	if (p >= end || !(p = scan_value(p, end, CH_JSON_MAX_DEPTH)))
		return 0;
	return skip_ws(p, end) == end;
}

static int
is_json_object(const char *json, size_t len)
{
	if (!json)
		return 1; /* NULL stands for {} */
	const uint8_t *p = skip_ws((const uint8_t *)json, (const uint8_t *)json + len);
	return p < (const uint8_t *)json + len && *p == '{';
}

static void
put_payload(rt_buf **b, const char *json, size_t len)
{
	if (json)
		put(b, json, len);
	else
		put_str(b, "{}");
}

/*
 * {"event":E,"payload":P,"ref":R,"topic":T}: the V1 object, keys in the
 * order Phoenix's V1 serializer writes them (Jason writes a map's keys
 * sorted).  With status set, the payload is {"response":P,"status":status}
 * (a reply), sorted the same way.
 */
static int
put_v1(rt_buf **b, const char *topic, bool topic_raw, const char *event, const char *status,
       const char *json, size_t len, const char *ref)
{
	put_str(b, "{\"event\":");
	if (put_json_cstr(b, event) < 0)
		return -1;
	put_str(b, ",\"payload\":");
	if (status) {
		put_str(b, "{\"response\":");
		put_payload(b, json, len);
		put_str(b, ",\"status\":");
		if (put_json_cstr(b, status) < 0)
			return -1;
		put_byte(b, '}');
	} else {
		put_payload(b, json, len);
	}
	put_str(b, ",\"ref\":");
	put_raw(b, ref);
	put_str(b, ",\"topic\":");
	if (put_topic(b, topic, topic_raw) < 0)
		return -1;
	put_byte(b, '}');
	return 0;
}

/* [join_ref,ref,topic,event,: the V2 array up to the payload. */
static int
put_v2_head(rt_buf **b, const char *join_ref, const char *ref, const char *topic, bool topic_raw,
            const char *event)
{
	put_byte(b, '[');
	put_raw(b, join_ref);
	put_byte(b, ',');
	put_raw(b, ref);
	put_byte(b, ',');
	if (put_topic(b, topic, topic_raw) < 0)
		return -1;
	put_byte(b, ',');
	if (put_json_cstr(b, event) < 0)
		return -1;
	put_byte(b, ',');
	return 0;
}

/* A reply; topic_raw: the topic is a raw JSON token. */
static int
encode_reply(rt_buf **b, int vsn, const char *join_ref, const char *ref, const char *topic,
             bool topic_raw, const char *status, const char *response, size_t response_len)
{
	if (!b)
		return -1;
	size_t mark = begin(b, 64 + (response ? response_len : 2));
	if (!status)
		return rollback(b, mark);
	if (vsn == CH_VSN_1) {
		if (put_v1(b, topic, topic_raw, "phx_reply", status, response, response_len, ref) <
		    0)
			return rollback(b, mark);
		return CH_FRAME_TEXT;
	}
	if (vsn != CH_VSN_2 || put_v2_head(b, join_ref, ref, topic, topic_raw, "phx_reply") < 0)
		return rollback(b, mark);
	/* {"response":P,"status":S}: Phoenix's key order (sorted, as Jason). */
	put_str(b, "{\"response\":");
	put_payload(b, response, response_len);
	put_str(b, ",\"status\":");
	if (put_json_cstr(b, status) < 0)
		return rollback(b, mark);
	put_str(b, "}]");
	return CH_FRAME_TEXT;
}

int
ch_encode_reply(rt_buf **b, int vsn, const char *join_ref, const char *ref, const char *topic,
                const char *status, const char *response, size_t response_len)
{
	return encode_reply(b, vsn, join_ref, ref, topic, false, status, response, response_len);
}

int
ch_encode_reply_raw_topic(rt_buf **b, int vsn, const char *join_ref, const char *ref,
                          const char *topic_json, const char *status, const char *response,
                          size_t response_len)
{
	return encode_reply(b, vsn, join_ref, ref, topic_json, true, status, response,
	                    response_len);
}

int
ch_json_interpolable(const char *raw)
{
	if (!raw)
		return 0;
	const uint8_t *p = (const uint8_t *)raw, *end = p + strlen(raw);
	p = skip_ws(p, end);
	if (p == end || *p == '{')
		return 0;
	if (*p != '[')
		return 1; /* a string, number, true, false or null */
	/* A list: chardata, every leaf a string or an integer code point. */
	while (p < end) {
		switch (*p) {
		case '[':
		case ']':
		case ',':
		case ' ':
		case '\t':
		case '\n':
		case '\r':
			p++;
			break;
		case '"':
			p = scan_string(p, end);
			if (!p)
				return 0;
			break;
		default: {
			const uint8_t *q = scan_number(p, end);
			if (!q)
				return 0; /* {, true, false, null */
			bool neg = *p == '-';
			unsigned long cp = 0;
			for (const uint8_t *d = p + neg; d < q; d++) {
				if (*d < '0' || *d > '9')
					return 0; /* a float */
				cp = cp * 10 + (unsigned)(*d - '0');
				if (cp > 0x10FFFF)
					return 0;
			}
			if ((neg && cp != 0) || (cp >= 0xD800 && cp <= 0xDFFF))
				return 0;
			p = q;
			break;
		}
		}
	}
	return 1;
}

int
ch_encode_message(rt_buf **b, int vsn, const char *join_ref, const char *ref, const char *topic,
                  const char *event, const char *payload, size_t payload_len)
{
	if (!b)
		return -1;
	size_t mark = begin(b, 64 + (payload ? payload_len : 2));
	if (vsn == CH_VSN_1) {
		if (put_v1(b, topic, false, event, NULL, payload, payload_len, ref) < 0)
			return rollback(b, mark);
		return CH_FRAME_TEXT;
	}
	if (vsn != CH_VSN_2 || !is_json_object(payload, payload_len) ||
	    put_v2_head(b, join_ref, ref, topic, false, event) < 0)
		return rollback(b, mark);
	put_payload(b, payload, payload_len);
	put_byte(b, ']');
	return CH_FRAME_TEXT;
}

int
ch_encode_broadcast(rt_buf **b, int vsn, const char *topic, const char *event, const char *payload,
                    size_t payload_len)
{
	return ch_encode_message(b, vsn, NULL, NULL, topic, event, payload, payload_len);
}

/* Appends a one-byte length; -1 when n > 255. */
static int
put_size(rt_buf **b, size_t n)
{
	if (n > 255)
		return -1;
	put_byte(b, (uint8_t)n);
	return 0;
}

int
ch_encode_reply_bin(rt_buf **b, int vsn, const char *join_ref, const char *ref, const char *topic,
                    const char *status, const void *data, size_t len)
{
	char jr[256], rf[256];
	if (!b || (!data && len))
		return -1;
	size_t mark = begin(b, 16 + len);
	if (vsn != CH_VSN_2 || !topic || !status)
		return rollback(b, mark);
	long jl = ch_ref_string(join_ref, jr, sizeof(jr));
	long rl = ch_ref_string(ref, rf, sizeof(rf));
	size_t tl = strlen(topic), sl = strlen(status);
	put_byte(b, 1);
	if (jl < 0 || rl < 0 || put_size(b, (size_t)jl) < 0 || put_size(b, (size_t)rl) < 0 ||
	    put_size(b, tl) < 0 || put_size(b, sl) < 0)
		return rollback(b, mark);
	put(b, jr, (size_t)jl);
	put(b, rf, (size_t)rl);
	put(b, topic, tl);
	put(b, status, sl);
	put(b, data, len);
	return CH_FRAME_BINARY;
}

int
ch_encode_message_bin(rt_buf **b, int vsn, const char *join_ref, const char *topic,
                      const char *event, const void *data, size_t len)
{
	char jr[256];
	if (!b || (!data && len))
		return -1;
	size_t mark = begin(b, 16 + len);
	if (vsn != CH_VSN_2 || !topic || !event)
		return rollback(b, mark);
	long jl = ch_ref_string(join_ref, jr, sizeof(jr));
	size_t tl = strlen(topic), el = strlen(event);
	put_byte(b, 0);
	if (jl < 0 || put_size(b, (size_t)jl) < 0 || put_size(b, tl) < 0 || put_size(b, el) < 0)
		return rollback(b, mark);
	put(b, jr, (size_t)jl);
	put(b, topic, tl);
	put(b, event, el);
	put(b, data, len);
	return CH_FRAME_BINARY;
}

int
ch_encode_broadcast_bin(rt_buf **b, int vsn, const char *topic, const char *event, const void *data,
                        size_t len)
{
	if (!b || (!data && len))
		return -1;
	size_t mark = begin(b, 16 + len);
	if (vsn != CH_VSN_2 || !topic || !event)
		return rollback(b, mark);
	size_t tl = strlen(topic), el = strlen(event);
	put_byte(b, 2);
	if (put_size(b, tl) < 0 || put_size(b, el) < 0)
		return rollback(b, mark);
	put(b, topic, tl);
	put(b, event, el);
	put(b, data, len);
	return CH_FRAME_BINARY;
}

/* Prints v unformatted (NULL stays NULL, meaning {}); sets *bad when printing fails. */
static char *
print_json(const cJSON *v, int *bad)
{
	*bad = 0;
	if (!v)
		return NULL;
	char *s = cJSON_PrintUnformatted(v);
	if (!s)
		*bad = 1;
	return s;
}

int
ch_encode_reply_cjson(rt_buf **b, int vsn, const char *join_ref, const char *ref, const char *topic,
                      const char *status, const cJSON *response)
{
	int bad;
	char *s = print_json(response, &bad);
	int r =
	    bad ? -1 : ch_encode_reply(b, vsn, join_ref, ref, topic, status, s, s ? strlen(s) : 0);
	cJSON_free(s);
	return r;
}

int
ch_encode_message_cjson(rt_buf **b, int vsn, const char *join_ref, const char *ref,
                        const char *topic, const char *event, const cJSON *payload)
{
	int bad;
	char *s = print_json(payload, &bad);
	int r =
	    bad ? -1 : ch_encode_message(b, vsn, join_ref, ref, topic, event, s, s ? strlen(s) : 0);
	cJSON_free(s);
	return r;
}

int
ch_encode_broadcast_cjson(rt_buf **b, int vsn, const char *topic, const char *event,
                          const cJSON *payload)
{
	return ch_encode_message_cjson(b, vsn, NULL, NULL, topic, event, payload);
}
