/*
 * tp_http: HTTP/1.1 request parsing (a scan that resumes where the last call
 * stopped), query/path decoding and response-head writing.  See http.h for the
 * contracts and who owns which bytes.
 */
#include "transports/http.h"

#include <stdio.h>
#include <string.h>

/* Internal parse outcomes: P_OK, P_NEED, or an HTTP status (>= 400). */
enum { P_OK = 0, P_NEED = 1 };

/* The limits actually in force (defaults filled in). */
typedef struct limits {
	size_t max_request_line;
	size_t max_header_bytes;
	size_t max_headers;
	size_t max_body;
	size_t max_chunk_overhead;
} limits;

void
tp_http_config_default(tp_http_config *cfg)
{
	cfg->max_request_line = TP_HTTP_DEFAULT_MAX_REQUEST_LINE;
	cfg->max_header_bytes = TP_HTTP_DEFAULT_MAX_HEADER_BYTES;
	cfg->max_headers = TP_HTTP_DEFAULT_MAX_HEADERS;
	cfg->max_body = TP_HTTP_DEFAULT_MAX_BODY;
	cfg->max_chunk_overhead = TP_HTTP_DEFAULT_MAX_CHUNK_OVERHEAD;
}

static void
limits_from(limits *l, const tp_http_config *cfg)
{
	tp_http_config d;
	tp_http_config_default(&d);
	if (!cfg)
		cfg = &d;
	l->max_request_line = cfg->max_request_line ? cfg->max_request_line : d.max_request_line;
	l->max_header_bytes = cfg->max_header_bytes ? cfg->max_header_bytes : d.max_header_bytes;
	l->max_headers = cfg->max_headers ? cfg->max_headers : d.max_headers;
	if (l->max_headers > TP_HTTP_HEADERS_CAP)
		l->max_headers = TP_HTTP_HEADERS_CAP;
	l->max_body = cfg->max_body ? cfg->max_body : d.max_body;
	l->max_chunk_overhead =
	    cfg->max_chunk_overhead ? cfg->max_chunk_overhead : d.max_chunk_overhead;
}

/* ---- character classes ---- */

/* RFC 9110 tchar: ALPHA / DIGIT / "!#$%&'*+-.^_`|~" */
static int
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return 1;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A byte allowed in a header value (VCHAR, SP, HTAB, obs-text). */
static int
is_field_byte(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int
is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static int
hex_val(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static unsigned char
lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Case-insensitive equality of p[0, n) and the NUL-terminated s. */
static int
str_ieq(const char *p, size_t n, const char *s)
{
	size_t i;
	for (i = 0; i < n; i++)
		if (!s[i] || lower((unsigned char)p[i]) != lower((unsigned char)s[i]))
			return 0;
	return s[i] == '\0';
}

static int
str_eq(const char *p, size_t n, const char *s)
{
	return strlen(s) == n && memcmp(p, s, n) == 0;
}

/* ---- request line ---- */

static tp_http_method
method_id(const char *p, size_t n)
{
	static const struct {
		const char *name;
		tp_http_method id;
	} tab[] = {
	    {"GET", TP_HTTP_GET},     {"HEAD", TP_HTTP_HEAD},     {"POST", TP_HTTP_POST},
	    {"PUT", TP_HTTP_PUT},     {"DELETE", TP_HTTP_DELETE}, {"OPTIONS", TP_HTTP_OPTIONS},
	    {"PATCH", TP_HTTP_PATCH},
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (str_eq(p, n, tab[i].name))
			return tab[i].id;
	return TP_HTTP_OTHER;
}

/* Splits req->target into path and query (origin-form, "*" or absolute-form). */
static int
parse_target(tp_http_request *req, const char **msg)
{
	const char *t = req->target.ptr;
	size_t n = req->target.len, i = 0;

	if (t[0] == '/') {
		i = 0;
	} else if (n == 1 && t[0] == '*') {
		req->path = req->target;
		req->query.ptr = t + n;
		req->query.len = 0;
		return P_OK;
	} else {
		size_t s;
		if (n >= 7 && str_ieq(t, 7, "http://"))
			s = 7;
		else if (n >= 8 && str_ieq(t, 8, "https://"))
			s = 8;
		else {
			*msg = "bad request target";
			return 400;
		}
		i = s;
		while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#')
			i++;
		if (i == s) {
			*msg = "bad request target";
			return 400;
		}
	}
	size_t p0 = i;
	while (i < n && t[i] != '?' && t[i] != '#')
		i++;
	if (i == p0) {
		req->path.ptr = "/";
		req->path.len = 1;
	} else {
		req->path.ptr = t + p0;
		req->path.len = i - p0;
	}
	if (i < n && t[i] == '?') {
		size_t q0 = ++i;
		while (i < n && t[i] != '#')
			i++;
		req->query.ptr = t + q0;
		req->query.len = i - q0;
	} else {
		req->query.ptr = t + i;
		req->query.len = 0;
	}
	return P_OK;
}

/*
 * Splits the request line b[0, n) (without its line end), which the scan has
 * found well-formed, into req's method, target and version, and checks what
 * only the whole line tells: the version (505) and the target (400).
 */
static int
parse_request_line(tp_http_request *req, const char *b, size_t n, const char **msg)
{
	size_t i = 0;
	while (i < n && b[i] != ' ')
		i++;
	req->method.ptr = b;
	req->method.len = i;
	size_t t0 = ++i;
	while (i < n && b[i] != ' ')
		i++;
	req->target.ptr = b + t0;
	req->target.len = i - t0;
	size_t v0 = i + 1; /* "HTTP/d.d", the scan checked its shape */
	if (b[v0 + 5] != '1' || b[v0 + 7] > '1') {
		*msg = "unsupported HTTP version";
		return 505;
	}
	req->minor_version = b[v0 + 7] - '0';
	req->method_id = method_id(req->method.ptr, req->method.len);
	return parse_target(req, msg);
}

/* ---- header lines ---- */

/* Splits the header line b[0, n) (line end stripped), which the scan has found
 * well-formed, into name and value (trimmed of spaces and tabs). */
static void
split_header_line(tp_http_header *h, const char *b, size_t n)
{
	size_t i = 0;
	while (b[i] != ':')
		i++;
	h->name.ptr = b;
	h->name.len = i++;
	size_t e = n;
	while (i < e && is_ows(b[i]))
		i++;
	while (e > i && is_ows(b[e - 1]))
		e--;
	h->value.ptr = b + i;
	h->value.len = e - i;
}

/* The line starting at buf[pos], which the scan has found complete: sets
 * *content to its length without the line end and returns the offset after it. */
static size_t
line_at(const char *buf, size_t pos, size_t *content)
{
	size_t e = pos;
	while (buf[e] != '\n')
		e++;
	*content = (e > pos && buf[e - 1] == '\r') ? e - 1 - pos : e - pos;
	return e + 1;
}

/* ---- framing headers ---- */

/* Parses a Content-Length value (a list of equal decimal numbers). */
static int
parse_content_length(const tp_http_str *v, uint64_t *out, int *overflow)
{
	size_t i = 0, n = v->len;
	const char *p = v->ptr;
	int seen = 0;
	uint64_t first = 0;
	while (i <= n) {
		size_t s = i;
		while (i < n && p[i] != ',')
			i++;
		size_t a = s, b = i;
		while (a < b && is_ows(p[a]))
			a++;
		while (b > a && is_ows(p[b - 1]))
			b--;
		if (a == b)
			return -1;
		uint64_t val = 0;
		int big = 0;
		for (size_t k = a; k < b; k++) {
			if (p[k] < '0' || p[k] > '9')
				return -1;
			if (val > (UINT64_MAX - 9) / 10)
				big = 1;
			else
				val = val * 10 + (uint64_t)(p[k] - '0');
		}
		if (big)
			val = UINT64_MAX;
		if (seen && val != first)
			return -1;
		first = val;
		seen = 1;
		*overflow |= big;
		i++; /* skip ',' (or step past the end) */
	}
	*out = first;
	return 0;
}

/*
 * Fills req from the head the scan has found complete and well-formed
 * (buf[st->line, st->body)): request line, headers, framing and keep-alive.
 * Returns P_OK or the status of a request line or framing that is wrong as a
 * whole.  *clen: the Content-Length (with req->content_length >= 0).
 */
static int
fill_head(const limits *l, tp_http_request *req, const char *buf, const tp_http_state *st,
          uint64_t *clen_out, const char **msg)
{
	size_t n, pos = line_at(buf, st->line, &n);
	int r = parse_request_line(req, buf + st->line, n, msg);
	if (r != P_OK)
		return r;
	req->nheaders = 0;
	for (;;) {
		size_t next = line_at(buf, pos, &n);
		if (n == 0)
			break;
		split_header_line(&req->headers[req->nheaders++], buf + pos, n);
		pos = next;
	}
	req->examined += st->body - st->line;

	uint64_t clen = 0;
	int have_cl = 0, overflow = 0, have_te = 0, te_chunked = 0, te_other = 0;
	for (size_t h = 0; h < req->nheaders; h++) {
		const tp_http_header *hd = &req->headers[h];
		if (str_ieq(hd->name.ptr, hd->name.len, "content-length")) {
			uint64_t v;
			if (parse_content_length(&hd->value, &v, &overflow) < 0 ||
			    (have_cl && v != clen)) {
				*msg = "bad Content-Length";
				return 400;
			}
			clen = v;
			have_cl = 1;
		} else if (str_ieq(hd->name.ptr, hd->name.len, "transfer-encoding")) {
			const char *p = hd->value.ptr;
			size_t vn = hd->value.len, i = 0;
			have_te = 1;
			while (i < vn) {
				size_t s = i;
				while (i < vn && p[i] != ',')
					i++;
				size_t a = s, b = i++;
				while (a < b && is_ows(p[a]))
					a++;
				while (b > a && is_ows(p[b - 1]))
					b--;
				if (a == b)
					continue;
				if (str_ieq(p + a, b - a, "chunked"))
					te_chunked++;
				else
					te_other = 1;
			}
		}
	}
	*msg = "bad request";
	if (have_te && have_cl) {
		*msg = "both Content-Length and Transfer-Encoding";
		return 400;
	}
	if (have_te && te_other) {
		*msg = "unsupported Transfer-Encoding";
		return 501;
	}
	if (have_te && te_chunked != 1) {
		*msg = "bad Transfer-Encoding";
		return 400;
	}
	if (have_cl && (overflow || clen > l->max_body)) {
		*msg = "body too large";
		return 413;
	}
	if (req->minor_version >= 1)
		req->keep_alive = !tp_http_header_has_token(req, "connection", "close");
	else
		req->keep_alive = tp_http_header_has_token(req, "connection", "keep-alive") &&
		                  !tp_http_header_has_token(req, "connection", "close");
	if (have_te) {
		req->chunked = 1;
		if (req->minor_version == 0)
			req->keep_alive = 0; /* RFC 9112 6.1: framing of 1.0 + TE is suspect */
	}
	if (have_cl)
		req->content_length = (int64_t)clen;
	*clen_out = clen;
	return P_OK;
}

/* ---- chunked bodies ---- */

/*
 * Moves the chunk data of the chunked body the scan has found complete and
 * well-formed (buf[start, ...) up to its last chunk) to buf[start, start +
 * result), over the framing; returns the decoded length.  Data always moves
 * left past its own size line, so no unread framing is overwritten.
 */
static size_t
decode_chunked(char *buf, size_t start, tp_http_request *req)
{
	size_t pos = start, n;
	char *dst = buf + start;
	for (;;) {
		size_t size = 0;
		int v;
		while ((v = hex_val((unsigned char)buf[pos])) >= 0) {
			size = size * 16 + (size_t)v;
			pos++;
		}
		pos = line_at(buf, pos, &n);
		if (size == 0)
			break;
		memmove(dst, buf + pos, size);
		dst += size;
		pos += size;
		pos += buf[pos] == '\r' ? 2 : 1;
	}
	req->examined += pos - start;
	return (size_t)(dst - (buf + start));
}

/* ---- the parser ---- */

/*
 * The scan looks at every byte once, in order, and each byte's verdict depends
 * only on the bytes before it: the first byte that makes the request wrong
 * decides the answer (a byte past a limit is wrong whatever it is), so the
 * same bytes get the same answer however they are split across calls.  Only
 * a CR is looked at together with the byte after it.  Whole lines are
 * examined once more when they end (request line) or when the head is
 * complete (fill_head), and chunk data once when the body is complete.
 */

/* Phases of the scan (tp_http_state.phase). */
enum {
	S_START = 0,  /* empty lines before the request line */
	S_METHOD,     /* request line: method (st->line: where the line began) */
	S_TARGET,     /* request target (st->mark: where it began) */
	S_VERSION,    /* "HTTP/d.d" (st->sub: bytes of it seen), then the line end */
	S_HEADERS,    /* header lines (st->sub: H_*; st->head: where they began) */
	S_BODY,       /* Content-Length body (st->mark: where it ends) */
	S_CHUNK_SIZE, /* chunk size line (st->sub: C_*; st->size: the size so far) */
	S_CHUNK_DATA, /* chunk data (st->mark: where it ends), then its line end */
	S_TRAILER,    /* trailer lines (st->sub: H_*) */
};
/* Within a header or trailer line. */
enum { H_START = 0, H_NAME, H_VALUE };
/* Within a chunk size line. */
enum { C_START = 0, C_HEX, C_OWS, C_EXT };

/* At buf[pos], a CR or LF: returns 1 with *next after the line end, 0 when
 * more bytes are needed (a CR is the last byte), -1 for a CR without LF. */
static int
line_end(const char *buf, size_t len, size_t pos, size_t *next)
{
	if (buf[pos] == '\n') {
		*next = pos + 1;
		return 1;
	}
	if (pos + 1 == len)
		return 0;
	if (buf[pos + 1] != '\n')
		return -1;
	*next = pos + 2;
	return 1;
}

static int
is_eol(unsigned char c)
{
	return c == '\r' || c == '\n';
}

static tp_http_result
fail(tp_http_request *req, tp_http_state *st, int status, const char *msg)
{
	memset(st, 0, sizeof(*st));
	req->status = status;
	req->error = msg;
	return TP_HTTP_ERROR;
}

static tp_http_result
need_more(tp_http_request *req, size_t len, size_t need)
{
	req->need = need > len ? need : len + 1;
	return TP_HTTP_NEED_MORE;
}

tp_http_result
tp_http_parse_next(const tp_http_config *cfg, tp_http_state *st, char *buf, size_t len,
                   tp_http_request *req)
{
	limits l;
	const char *msg = "bad request";
	size_t next = 0;
	uint64_t clen = 0;
	int r, filled = 0;

	limits_from(&l, cfg);
	memset(req, 0, offsetof(tp_http_request, headers));
	req->nheaders = 0;
	req->content_length = -1;
	req->chunked = 0;
	req->body = NULL;
	req->body_len = 0;
	req->keep_alive = 0;
	req->consumed = 0;
	req->need = 0;
	req->status = 0;
	req->error = NULL;
	req->examined = 0;
	if (st->pos > len) /* not the bytes the state was made from: start over */
		memset(st, 0, sizeof(*st));

#define FAIL(status, text) return fail(req, st, (status), (text))
/* A CR or LF at st->pos ends the line: next is after it, or wait / 400. */
#define LINE_END(text)                                                                             \
	do {                                                                                       \
		int e_ = line_end(buf, len, st->pos, &next);                                       \
		if (e_ == 0)                                                                       \
			return need_more(req, len, 0);                                             \
		if (e_ < 0)                                                                        \
			FAIL(400, (text));                                                         \
	} while (0)
/* One more byte of chunked framing (n bytes: a CRLF). */
#define FRAMING(n)                                                                                 \
	do {                                                                                       \
		if (st->overhead + (n) > l.max_chunk_overhead)                                     \
			FAIL(413, "chunked framing too large");                                    \
	} while (0)

	while (st->pos < len) {
		size_t p = st->pos;
		unsigned char ch = (unsigned char)buf[p];
		req->examined++;
		switch (st->phase) {
		case S_START: /* empty lines (RFC 9112 2.2), counted in the request line limit */
			if (p >= l.max_request_line)
				FAIL(414, "request line too long");
			if (!is_eol(ch)) {
				st->phase = S_METHOD;
				st->line = p;
				continue;
			}
			LINE_END("bad request line");
			if (next > l.max_request_line)
				FAIL(414, "request line too long");
			st->pos = next;
			continue;
		case S_METHOD:
		case S_TARGET:
			if (is_eol(ch))
				FAIL(400, "bad request line");
			if (p >= l.max_request_line)
				FAIL(414, "request line too long");
			if (st->phase == S_METHOD ? is_tchar(ch) : (ch > 0x20 && ch < 0x7f)) {
				st->pos++;
			} else if (ch == ' ' && p > (st->phase == S_METHOD ? st->line : st->mark)) {
				st->phase++;
				st->mark = ++st->pos;
				st->sub = 0;
			} else {
				FAIL(400, "bad request line");
			}
			continue;
		case S_VERSION:
			if (st->sub == 8 && is_eol(ch)) {
				LINE_END("bad request line");
				r = parse_request_line(req, buf + st->line, p - st->line, &msg);
				if (r != P_OK)
					FAIL(r, msg);
				req->examined += p - st->line;
				st->phase = S_HEADERS;
				st->sub = H_START;
				st->head = st->pos = next;
				continue;
			}
			if (p >= l.max_request_line)
				FAIL(414, "request line too long");
			if (st->sub == 8 || is_eol(ch) ||
			    !(st->sub < 5    ? ch == (unsigned char)"HTTP/"[st->sub]
			      : st->sub == 6 ? ch == '.'
			                     : (ch >= '0' && ch <= '9')))
				FAIL(400, "bad request line");
			st->sub++;
			st->pos++;
			continue;
		case S_HEADERS:
		case S_TRAILER:
			if (st->phase == S_HEADERS) {
				if (p - st->head >= l.max_header_bytes)
					FAIL(431, "header section too large");
			} else {
				FRAMING(1);
			}
			if (st->sub == H_START && !is_eol(ch) && st->phase == S_HEADERS &&
			    st->nheaders == l.max_headers)
				FAIL(431, "too many headers");
			if (st->sub == H_START  ? is_tchar(ch)
			    : st->sub == H_NAME ? (is_tchar(ch) || ch == ':')
			                        : (is_field_byte(ch) && ch != '\r')) {
				if (st->sub == H_START || (st->sub == H_NAME && ch == ':'))
					st->sub++;
				st->pos++;
				if (st->phase == S_TRAILER)
					st->overhead++;
				continue;
			}
			if (st->sub == H_NAME || !is_eol(ch))
				FAIL(400, "bad header line");
			LINE_END("bad header line");
			if (st->phase == S_HEADERS) {
				if (next - st->head > l.max_header_bytes)
					FAIL(431, "header section too large");
			} else {
				FRAMING(next - p);
				st->overhead += next - p;
			}
			st->pos = next;
			if (st->sub == H_VALUE) {
				if (st->phase == S_HEADERS)
					st->nheaders++;
				st->sub = H_START;
				continue;
			}
			if (st->phase == S_TRAILER) { /* the empty line: the body is complete */
				req->chunked = 1;
				req->body_len = decode_chunked(buf, st->body, req);
				req->body = req->body_len ? buf + st->body : NULL;
				req->consumed = next;
				goto complete;
			}
			/* The empty line: the head is complete. */
			st->body = next;
			r = fill_head(&l, req, buf, st, &clen, &msg);
			if (r != P_OK)
				FAIL(r, msg);
			filled = 1;
			if (req->chunked) {
				st->phase = S_CHUNK_SIZE;
				st->sub = C_START;
				st->size = 0;
			} else {
				st->phase = S_BODY;
				st->mark = st->body + (size_t)clen;
			}
			continue;
		case S_BODY:
			req->examined--;
			if (len < st->mark)
				return need_more(req, len, st->mark);
			req->body_len = st->mark - st->body;
			req->body = req->body_len ? buf + st->body : NULL;
			req->consumed = st->mark;
			goto complete;
		case S_CHUNK_SIZE: {
			int v = hex_val(ch);
			FRAMING(1);
			if (v >= 0 && (st->sub == C_START || st->sub == C_HEX)) {
				if (st->size > (l.max_body >> 4) ||
				    st->size * 16 + (uint64_t)v > l.max_body)
					FAIL(413, "chunk too large");
				st->size = st->size * 16 + (uint64_t)v;
				st->sub = C_HEX;
			} else if (st->sub == C_START) {
				FAIL(400, "bad chunk size line");
			} else if (ch == ';' && st->sub != C_EXT) {
				st->sub = C_EXT;
			} else if (is_ows(ch) && st->sub != C_EXT) {
				st->sub = C_OWS;
			} else if (st->sub == C_EXT && is_field_byte(ch) && ch != '\r') {
				/* extension bytes */
			} else if (is_eol(ch)) {
				LINE_END("bad chunk size line");
				FRAMING(next - p);
				if (st->size > l.max_body - st->total)
					FAIL(413, "body too large");
				st->overhead += next - p;
				st->pos = next;
				if (st->size == 0) {
					st->phase = S_TRAILER;
					st->sub = H_START;
				} else {
					st->phase = S_CHUNK_DATA;
					st->mark = next + (size_t)st->size;
				}
				continue;
			} else {
				FAIL(400, "bad chunk size line");
			}
			st->overhead++;
			st->pos++;
			continue;
		}
		case S_CHUNK_DATA:
			if (p < st->mark) {
				req->examined--;
				if (len <= st->mark)
					return need_more(req, len, st->mark + 2);
				st->pos = st->mark;
				continue;
			}
			FRAMING(1);
			if (!is_eol(ch))
				FAIL(400, "bad chunk data end");
			LINE_END("bad chunk data end");
			FRAMING(next - p);
			st->overhead += next - p;
			st->total += st->size;
			st->size = 0;
			st->phase = S_CHUNK_SIZE;
			st->sub = C_START;
			st->pos = next;
			continue;
		}
	}
	if (st->phase == S_BODY && len >= st->mark) { /* an empty body, or the last bytes */
		req->body_len = st->mark - st->body;
		req->body = req->body_len ? buf + st->body : NULL;
		req->consumed = st->mark;
		goto complete;
	}
	return need_more(req, len,
	                 st->phase == S_BODY         ? st->mark
	                 : st->phase == S_CHUNK_DATA ? st->mark + 2
	                                             : 0);
#undef FAIL
#undef LINE_END
#undef FRAMING

complete:
	if (!filled) {
		const char *unused;
		(void)fill_head(&l, req, buf, st, &clen, &unused); /* it succeeded before */
	}
	memset(st, 0, sizeof(*st));
	return TP_HTTP_COMPLETE;
}

tp_http_result
tp_http_parse(const tp_http_config *cfg, char *buf, size_t len, tp_http_request *req)
{
	tp_http_state st = {0};
	return tp_http_parse_next(cfg, &st, buf, len, req);
}

/* ---- header lookup ---- */

const tp_http_str *
tp_http_header_get(const tp_http_request *req, const char *name)
{
	for (size_t i = 0; i < req->nheaders; i++)
		if (str_ieq(req->headers[i].name.ptr, req->headers[i].name.len, name))
			return &req->headers[i].value;
	return NULL;
}

size_t
tp_http_header_count(const tp_http_request *req, const char *name)
{
	size_t c = 0;
	for (size_t i = 0; i < req->nheaders; i++)
		if (str_ieq(req->headers[i].name.ptr, req->headers[i].name.len, name))
			c++;
	return c;
}

int
tp_http_has_token(const char *value, size_t len, const char *token)
{
	size_t i = 0;
	while (i < len) {
		size_t s = i;
		while (i < len && value[i] != ',')
			i++;
		size_t a = s, b = i++;
		while (a < b && is_ows(value[a]))
			a++;
		while (b > a && is_ows(value[b - 1]))
			b--;
		if (b > a && str_ieq(value + a, b - a, token))
			return 1;
	}
	return 0;
}

int
tp_http_header_has_token(const tp_http_request *req, const char *name, const char *token)
{
	for (size_t i = 0; i < req->nheaders; i++) {
		const tp_http_header *h = &req->headers[i];
		if (str_ieq(h->name.ptr, h->name.len, name) &&
		    tp_http_has_token(h->value.ptr, h->value.len, token))
			return 1;
	}
	return 0;
}

/* ---- query strings and paths ---- */

int
tp_http_query_next(const char *q, size_t qlen, size_t *pos, tp_http_str *key, tp_http_str *val)
{
	size_t i = *pos;
	while (i < qlen) {
		size_t s = i;
		while (i < qlen && q[i] != '&')
			i++;
		size_t e = i;
		if (i < qlen)
			i++;
		if (e == s)
			continue;
		size_t eq = s;
		while (eq < e && q[eq] != '=')
			eq++;
		key->ptr = q + s;
		key->len = eq - s;
		if (eq < e) {
			val->ptr = q + eq + 1;
			val->len = e - eq - 1;
		} else {
			val->ptr = q + e;
			val->len = 0;
		}
		*pos = i;
		return 1;
	}
	*pos = qlen;
	return 0;
}

/* Shared decoder: plus_space turns '+' into ' '; allow_nul accepts "%00". */
static ssize_t
pct_decode(const char *in, size_t n, char *out, size_t cap, int plus_space, int allow_nul)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '%') {
			if (n - i < 3)
				return -1;
			int h = hex_val((unsigned char)in[i + 1]),
			    lo = hex_val((unsigned char)in[i + 2]);
			if (h < 0 || lo < 0)
				return -1;
			c = (unsigned char)(h * 16 + lo);
			if (c == 0 && !allow_nul)
				return -1;
			i += 2;
		} else if (c == '+' && plus_space) {
			c = ' ';
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = (char)c;
	}
	if (o >= cap)
		return -1;
	out[o] = '\0';
	return (ssize_t)o;
}

ssize_t
tp_http_form_decode(const char *in, size_t n, char *out, size_t cap)
{
	return pct_decode(in, n, out, cap, 1, 1);
}

ssize_t
tp_http_path_decode(const char *in, size_t n, char *out, size_t cap)
{
	return pct_decode(in, n, out, cap, 0, 0);
}

/* 1 when the form-encoded key k[0, n) decodes to exactly name. */
static int
key_matches(const char *k, size_t n, const char *name)
{
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)k[i];
		if (c == '%') {
			if (n - i < 3)
				return 0;
			int h = hex_val((unsigned char)k[i + 1]),
			    lo = hex_val((unsigned char)k[i + 2]);
			if (h < 0 || lo < 0)
				return 0;
			c = (unsigned char)(h * 16 + lo);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (!name[j] || (unsigned char)name[j] != c)
			return 0;
		j++;
	}
	return name[j] == '\0';
}

ssize_t
tp_http_query_get(const char *q, size_t qlen, const char *name, char *out, size_t outcap)
{
	size_t pos = 0;
	tp_http_str k, v;
	while (tp_http_query_next(q, qlen, &pos, &k, &v))
		if (key_matches(k.ptr, k.len, name))
			return tp_http_form_decode(v.ptr, v.len, out, outcap);
	return -1;
}

/* ---- responses ---- */

const char *
tp_http_reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 304:
		return "Not Modified";
	case 307:
		return "Temporary Redirect";
	case 308:
		return "Permanent Redirect";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 410:
		return "Gone";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 426:
		return "Upgrade Required";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

/* An snprintf-like sink: counts every byte, stores those that fit. */
typedef struct sink {
	char *p;
	size_t cap, len;
} sink;

static void
sink_put(sink *s, const char *p, size_t n)
{
	if (s->len < s->cap) {
		size_t room = s->cap - s->len;
		memcpy(s->p + s->len, p, n < room ? n : room);
	}
	s->len += n;
}

static void
sink_str(sink *s, const char *p)
{
	sink_put(s, p, strlen(p));
}

static void
sink_num(sink *s, long long v)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "%lld", v);
	sink_put(s, tmp, (size_t)n);
}

static int
has_crlf(const char *s)
{
	return s && strpbrk(s, "\r\n") != NULL;
}

/* Formats the head (and optional body) into s. */
static void
format_head(sink *s, const tp_http_head *h, const char *body, size_t body_len)
{
	int status = h->status;
	if (status < 100 || status > 999)
		status = 500;
	sink_str(s, "HTTP/1.1 ");
	sink_num(s, status);
	sink_str(s, " ");
	sink_str(s, tp_http_reason(status));
	sink_str(s, "\r\n");
	if (h->content_type && !has_crlf(h->content_type)) {
		sink_str(s, "Content-Type: ");
		sink_str(s, h->content_type);
		sink_str(s, "\r\n");
	}
	if (h->content_length >= 0) {
		sink_str(s, "Content-Length: ");
		sink_num(s, (long long)h->content_length);
		sink_str(s, "\r\n");
	}
	if (h->connection == TP_HTTP_CONN_KEEP_ALIVE)
		sink_str(s, "Connection: keep-alive\r\n");
	else if (h->connection == TP_HTTP_CONN_CLOSE)
		sink_str(s, "Connection: close\r\n");
	if (h->extra)
		sink_str(s, h->extra);
	sink_str(s, "\r\n");
	if (body_len)
		sink_put(s, body, body_len);
}

/* Writes into out[0, cap) plus a NUL; -1 when it does not fit. */
static ssize_t
write_out(char *out, size_t cap, const tp_http_head *h, const char *body, size_t body_len)
{
	sink s = {out, cap, 0};
	format_head(&s, h, body, body_len);
	if (s.len >= cap)
		return -1;
	out[s.len] = '\0';
	return (ssize_t)s.len;
}

static rt_buf *
append_out(rt_buf *b, const tp_http_head *h, const char *body, size_t body_len)
{
	sink s = {NULL, 0, 0};
	format_head(&s, h, body, body_len);
	if (!b)
		b = rt_buf_alloc(s.len + 1);
	b = rt_buf_reserve(b, s.len + 1);
	sink w = {(char *)b->data + b->len, s.len + 1, 0};
	format_head(&w, h, body, body_len);
	b->len += s.len;
	return b;
}

ssize_t
tp_http_head_write(char *out, size_t cap, const tp_http_head *h)
{
	if (has_crlf(h->content_type))
		return -1;
	return write_out(out, cap, h, NULL, 0);
}

rt_buf *
tp_http_head_append(rt_buf *b, const tp_http_head *h)
{
	return append_out(b, h, NULL, 0);
}

/* Builds the head and body of an error response into h and body. */
static size_t
error_parts(tp_http_head *h, char body[64], int status, tp_http_conn conn, const char *extra)
{
	int n = snprintf(body, 64, "%d %s\n", status, tp_http_reason(status));
	size_t bl = n < 0 ? 0 : (size_t)n < 64 ? (size_t)n : 63;
	h->status = status;
	h->content_type = "text/plain";
	h->content_length = (int64_t)bl;
	h->connection = conn;
	h->extra = extra;
	return bl;
}

rt_buf *
tp_http_error_append(rt_buf *b, int status, tp_http_conn conn, const char *extra)
{
	tp_http_head h;
	char body[64];
	size_t bl = error_parts(&h, body, status, conn, extra);
	return append_out(b, &h, body, bl);
}

ssize_t
tp_http_error_write(char *out, size_t cap, int status, tp_http_conn conn, const char *extra)
{
	tp_http_head h;
	char body[64];
	size_t bl = error_parts(&h, body, status, conn, extra);
	return write_out(out, cap, &h, body, bl);
}
