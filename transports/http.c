/*
 * tp_http: HTTP/1.1 request parsing (stateless re-parse over the caller's
 * buffer), query/path decoding and response-head writing.  See http.h for the
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
 * Parses the request line b[0, n) (without its line end).  When !complete the
 * line end has not arrived yet: reaching the end of the bytes is P_NEED
 * instead of an error, so a malformed line is reported as early as possible.
 */
static int
parse_request_line(tp_http_request *req, const char *b, size_t n, int complete, const char **msg)
{
	size_t i = 0;
	*msg = "bad request line";
#define AT_END() (i == n ? (complete ? 400 : P_NEED) : -1)
	while (i < n && is_tchar((unsigned char)b[i]))
		i++;
	if (AT_END() >= 0)
		return AT_END();
	if (i == 0 || b[i] != ' ')
		return 400;
	req->method.ptr = b;
	req->method.len = i;
	size_t t0 = ++i;
	while (i < n && (unsigned char)b[i] > 0x20 && (unsigned char)b[i] < 0x7f)
		i++;
	if (AT_END() >= 0)
		return AT_END();
	if (i == t0 || b[i] != ' ')
		return 400;
	req->target.ptr = b + t0;
	req->target.len = i - t0;
	size_t v0 = ++i;
	for (int k = 0; k < 8; k++, i++) {
		if (AT_END() >= 0)
			return AT_END();
		char c = b[i];
		int ok = k < 5 ? c == "HTTP/"[k] : k == 6 ? c == '.' : (c >= '0' && c <= '9');
		if (!ok)
			return 400;
	}
#undef AT_END
	if (i != n)
		return 400;
	if (!complete)
		return P_NEED;
	if (b[v0 + 5] != '1' || b[v0 + 7] > '1') {
		*msg = "unsupported HTTP version";
		return 505;
	}
	req->minor_version = b[v0 + 7] - '0';
	req->method_id = method_id(req->method.ptr, req->method.len);
	return parse_target(req, msg);
}

/* ---- header lines ---- */

/* Parses one header line b[0, n) (line end stripped); see parse_request_line for complete. */
static int
parse_header_line(tp_http_header *h, const char *b, size_t n, int complete, const char **msg)
{
	size_t i = 0;
	*msg = "bad header line";
	while (i < n && is_tchar((unsigned char)b[i]))
		i++;
	if (i == n)
		return complete ? 400 : P_NEED;
	if (i == 0 || b[i] != ':')
		return 400;
	size_t name_len = i++;
	for (size_t k = i; k < n; k++)
		if (!is_field_byte((unsigned char)b[k]))
			return 400;
	if (!complete)
		return P_NEED;
	size_t e = n;
	while (i < e && is_ows(b[i]))
		i++;
	while (e > i && is_ows(b[e - 1]))
		e--;
	if (h) {
		h->name.ptr = b;
		h->name.len = name_len;
		h->value.ptr = b + i;
		h->value.len = e - i;
	}
	return P_OK;
}

/*
 * Finds the line starting at pos: sets *content to its length without the line
 * end and *next to the offset after it.  Returns 1 when the LF was found; when
 * not, *content covers the available bytes minus a trailing CR (which may be
 * the start of CRLF).  A CR inside the content is left for the caller's byte
 * checks to reject.
 */
static int
find_line(const char *buf, size_t len, size_t pos, size_t *content, size_t *next)
{
	const char *lf = memchr(buf + pos, '\n', len - pos);
	size_t end = lf ? (size_t)(lf - buf) : len;
	size_t n = end - pos;
	if (n && buf[pos + n - 1] == '\r')
		n--;
	*content = n;
	*next = lf ? end + 1 : len;
	return lf != NULL;
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

/* ---- chunked bodies ---- */

/*
 * Scans a chunked body starting at buf[start].  On P_OK sets *end (offset after
 * the trailer section) and *body_len.  With decode, also moves the chunk data
 * to buf[start, start + body_len); only call it with decode after a scan
 * without decode returned P_OK (the scan reads framing the decoding has not
 * overwritten yet, since data always moves left past its own size line).
 */
static int
chunked_scan(const limits *l, char *buf, size_t len, size_t start, int decode, size_t *end,
             size_t *body_len, size_t *need, const char **msg)
{
	size_t pos = start, total = 0, overhead = 0;
	char *dst = buf + start;

	for (;;) {
		size_t n, next;
		int got = find_line(buf, len, pos, &n, &next);
		const char *b = buf + pos;
		if (overhead + (next - pos) > l->max_chunk_overhead) {
			*msg = "chunked framing too large";
			return 413;
		}
		size_t i = 0;
		uint64_t size = 0;
		while (i < n && hex_val((unsigned char)b[i]) >= 0) {
			if (size > (UINT64_MAX >> 4)) {
				*msg = "chunk too large";
				return 413;
			}
			size = size * 16 + (uint64_t)hex_val((unsigned char)b[i]);
			if (size > l->max_body) {
				*msg = "chunk too large";
				return 413;
			}
			i++;
		}
		*msg = "bad chunk size line";
		if (i == 0)
			return (n == 0 && !got) ? P_NEED : 400;
		size_t j = i;
		while (j < n && is_ows(b[j]))
			j++;
		if (j < n && b[j] != ';')
			return 400;
		for (; j < n; j++)
			if (!is_field_byte((unsigned char)b[j]))
				return 400;
		if (!got)
			return P_NEED;
		if (size > l->max_body - total) {
			*msg = "body too large";
			return 413;
		}
		overhead += next - pos;
		pos = next;
		if (size == 0)
			break;
		if (len - pos <= size) {
			*need = pos + (size_t)size + 2;
			return P_NEED;
		}
		size_t data = pos;
		pos += (size_t)size;
		if (buf[pos] == '\n') {
			pos++;
			overhead++;
		} else if (buf[pos] == '\r') {
			if (pos + 1 >= len)
				return P_NEED;
			if (buf[pos + 1] != '\n') {
				*msg = "bad chunk data end";
				return 400;
			}
			pos += 2;
			overhead += 2;
		} else {
			*msg = "bad chunk data end";
			return 400;
		}
		if (decode) {
			memmove(dst, buf + data, (size_t)size);
			dst += size;
		}
		total += (size_t)size;
	}

	/* Trailer section: header lines (validated, then ignored) up to an empty line. */
	for (;;) {
		size_t n, next;
		int got = find_line(buf, len, pos, &n, &next);
		if (overhead + (next - pos) > l->max_chunk_overhead) {
			*msg = "chunked framing too large";
			return 413;
		}
		if (!got) {
			int r = parse_header_line(NULL, buf + pos, n, 0, msg);
			return r == P_OK ? P_NEED : r;
		}
		overhead += next - pos;
		if (n > 0) {
			int r = parse_header_line(NULL, buf + pos, n, 1, msg);
			if (r != P_OK)
				return r;
		}
		pos = next;
		if (n == 0)
			break;
	}
	*end = pos;
	*body_len = total;
	return P_OK;
}

/* ---- the parser ---- */

static tp_http_result
fail(tp_http_request *req, int status, const char *msg)
{
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
tp_http_parse(const tp_http_config *cfg, char *buf, size_t len, tp_http_request *req)
{
	limits l;
	const char *msg = "bad request";
	size_t pos = 0, n, next;
	int r;

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

	/* Empty lines before the request line (RFC 9112 2.2), counted in its limit. */
	for (;;) {
		if (pos > l.max_request_line)
			return fail(req, 414, "request line too long");
		if (pos == len)
			return need_more(req, len, 0);
		if (buf[pos] == '\n') {
			pos++;
		} else if (buf[pos] == '\r') {
			if (pos + 1 == len)
				return need_more(req, len, 0);
			if (buf[pos + 1] != '\n')
				return fail(req, 400, "bad request line");
			pos += 2;
		} else {
			break;
		}
	}

	/* Request line. */
	int got = find_line(buf, len, pos, &n, &next);
	if (pos + n > l.max_request_line)
		return fail(req, 414, "request line too long");
	r = parse_request_line(req, buf + pos, n, got, &msg);
	if (r == P_NEED)
		return need_more(req, len, 0);
	if (r != P_OK)
		return fail(req, r, msg);
	pos = next;

	/* Header section. */
	size_t hstart = pos;
	for (;;) {
		got = find_line(buf, len, pos, &n, &next);
		if (next - hstart > l.max_header_bytes)
			return fail(req, 431, "header section too large");
		if (!got) {
			r = parse_header_line(NULL, buf + pos, n, 0, &msg);
			if (r == P_NEED || r == P_OK)
				return need_more(req, len, 0);
			return fail(req, r, msg);
		}
		if (n == 0) {
			pos = next;
			break;
		}
		if (req->nheaders == l.max_headers)
			return fail(req, 431, "too many headers");
		r = parse_header_line(&req->headers[req->nheaders], buf + pos, n, 1, &msg);
		if (r != P_OK)
			return fail(req, r, msg);
		req->nheaders++;
		pos = next;
	}

	/* Message framing. */
	uint64_t clen = 0;
	int have_cl = 0, overflow = 0, have_te = 0, te_chunked = 0, te_other = 0;
	for (size_t h = 0; h < req->nheaders; h++) {
		const tp_http_header *hd = &req->headers[h];
		if (str_ieq(hd->name.ptr, hd->name.len, "content-length")) {
			uint64_t v;
			if (parse_content_length(&hd->value, &v, &overflow) < 0 ||
			    (have_cl && v != clen))
				return fail(req, 400, "bad Content-Length");
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
	if (have_te && have_cl)
		return fail(req, 400, "both Content-Length and Transfer-Encoding");
	if (have_te && te_other)
		return fail(req, 501, "unsupported Transfer-Encoding");
	if (have_te && te_chunked != 1)
		return fail(req, 400, "bad Transfer-Encoding");
	if (have_cl && (overflow || clen > l.max_body))
		return fail(req, 413, "body too large");

	if (req->minor_version >= 1)
		req->keep_alive = !tp_http_header_has_token(req, "connection", "close");
	else
		req->keep_alive = tp_http_header_has_token(req, "connection", "keep-alive") &&
		                  !tp_http_header_has_token(req, "connection", "close");

	/* Body. */
	if (have_te) {
		size_t end = 0, blen = 0, need = 0;
		req->chunked = 1;
		if (req->minor_version == 0)
			req->keep_alive = 0; /* RFC 9112 6.1: framing of 1.0 + TE is suspect */
		r = chunked_scan(&l, buf, len, pos, 0, &end, &blen, &need, &msg);
		if (r == P_NEED)
			return need_more(req, len, need);
		if (r != P_OK)
			return fail(req, r, msg);
		r = chunked_scan(&l, buf, len, pos, 1, &end, &blen, &need, &msg);
		if (r != P_OK) /* cannot happen: the first scan validated the same bytes */
			return fail(req, 400, msg);
		req->body = blen ? buf + pos : NULL;
		req->body_len = blen;
		req->consumed = end;
		return TP_HTTP_COMPLETE;
	}
	if (have_cl) {
		req->content_length = (int64_t)clen;
		if (len - pos < clen)
			return need_more(req, len, pos + (size_t)clen);
		req->body = clen ? buf + pos : NULL;
		req->body_len = (size_t)clen;
		pos += (size_t)clen;
	}
	req->consumed = pos;
	return TP_HTTP_COMPLETE;
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
