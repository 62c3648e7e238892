/*
 * fuzz_http: the HTTP request parser (transports/http.h).
 *
 * Input: [limits byte][split: 2 bytes][request bytes...].  The limits byte
 * picks the default limits (0) or small ones, so that 413, 414 and 431 are
 * reached with short inputs.  The request bytes are parsed whole by
 * tp_http_parse, and in two pieces (the first `split` bytes, then all of
 * them, in a new buffer) by tp_http_parse_next: both must give the same
 * result, status, consumed count, and the same request.  Pipelined requests
 * after the first are parsed too, and the decoding helpers (query, form,
 * path, header tokens) are run over what the parser returned.
 */
#include "fuzz/fuzz.h"
#include "transports/http.h"

/* What is compared between two parses of the same bytes: offsets into each
 * one's own buffer, and the request's decoded values. */
static void
same_request(const tp_http_request *a, const char *abuf, const tp_http_request *b, const char *bbuf)
{
#define SAME_STR(f)                                                                                \
	FUZZ_CHECK(a->f.len == b->f.len);                                                          \
	FUZZ_CHECK(a->f.len == 0 || (a->f.ptr - abuf == b->f.ptr - bbuf))
	SAME_STR(method);
	SAME_STR(target);
	SAME_STR(path);
	SAME_STR(query);
	FUZZ_CHECK(a->method_id == b->method_id);
	FUZZ_CHECK(a->minor_version == b->minor_version);
	FUZZ_CHECK(a->nheaders == b->nheaders);
	for (size_t i = 0; i < a->nheaders; i++) {
		SAME_STR(headers[i].name);
		SAME_STR(headers[i].value);
	}
	FUZZ_CHECK(a->content_length == b->content_length);
	FUZZ_CHECK(a->chunked == b->chunked);
	FUZZ_CHECK(a->keep_alive == b->keep_alive);
	FUZZ_CHECK(a->body_len == b->body_len);
	FUZZ_CHECK((a->body == NULL) == (b->body == NULL));
	if (a->body_len)
		FUZZ_CHECK(memcmp(a->body, b->body, a->body_len) == 0);
#undef SAME_STR
}

/* Every slice of a complete request lies inside buf[0, consumed). */
static void
inside(const tp_http_str *s, const char *buf, size_t consumed)
{
	if (s->len)
		FUZZ_CHECK(s->ptr >= buf && s->ptr + s->len <= buf + consumed);
}

/* Runs the helpers that decode what a request carries. */
static void
use_request(const tp_http_request *req, char *buf)
{
	FUZZ_CHECK(req->consumed > 0);
	inside(&req->target, buf, req->consumed);
	inside(&req->query, buf, req->consumed);
	for (size_t i = 0; i < req->nheaders; i++) {
		inside(&req->headers[i].name, buf, req->consumed);
		inside(&req->headers[i].value, buf, req->consumed);
	}
	if (req->body_len)
		FUZZ_CHECK(req->body >= buf && req->body + req->body_len <= buf + req->consumed);
	(void)tp_http_header_get(req, "content-type");
	(void)tp_http_header_has_token(req, "connection", "upgrade");
	size_t pos = 0;
	tp_http_str k, v;
	char out[512];
	while (tp_http_query_next(req->query.ptr, req->query.len, &pos, &k, &v)) {
		ssize_t n = tp_http_form_decode(k.ptr, k.len, out, sizeof(out));
		FUZZ_CHECK(n < (ssize_t)sizeof(out));
		if (n >= 0)
			FUZZ_CHECK(out[n] == '\0' && (size_t)n <= k.len);
		n = tp_http_form_decode(v.ptr, v.len, out, sizeof(out));
		if (n >= 0)
			FUZZ_CHECK(out[n] == '\0' && (size_t)n <= v.len);
	}
	(void)tp_http_query_get(req->query.ptr, req->query.len, "token", out, sizeof(out));
	ssize_t n = tp_http_path_decode(req->path.ptr, req->path.len, out, sizeof(out));
	if (n >= 0)
		FUZZ_CHECK(out[n] == '\0' && strlen(out) == (size_t)n &&
		           (size_t)n <= req->path.len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	uint8_t lim = fuzz_byte(&in);
	size_t split = fuzz_u16(&in);
	tp_http_config cfg;
	tp_http_config_default(&cfg);
	if (lim) {
		cfg.max_request_line = 8 + (lim & 0x0f) * 4;
		cfg.max_header_bytes = 16 + (lim >> 4) * 16;
		cfg.max_headers = 1 + (lim & 7);
		cfg.max_body = (lim >> 3) * 3;
		cfg.max_chunk_overhead = 8 + (lim >> 2) * 2;
	}
	size_t n = in.n;
	if (split > n)
		split = n;

	/* Whole, then pipelined requests after it. */
	char *whole = (char *)fuzz_dup(in.p, n);
	tp_http_request a;
	tp_http_result ra = tp_http_parse(&cfg, whole, n, &a);
	if (ra == TP_HTTP_ERROR)
		FUZZ_CHECK(a.status >= 400 && a.status < 600 && a.error);
	if (ra == TP_HTTP_COMPLETE)
		FUZZ_CHECK(a.consumed <= n);
	if (ra == TP_HTTP_NEED_MORE)
		FUZZ_CHECK(a.need > n);

	/* In two pieces: the first split bytes, then all (in a new buffer). */
	tp_http_state st = {0};
	tp_http_request b;
	char *first = (char *)fuzz_dup(in.p, split);
	tp_http_result rb = tp_http_parse_next(&cfg, &st, first, split, &b);
	if (rb != TP_HTTP_NEED_MORE) {
		/* Decided by the first piece: the whole must say the same. */
		FUZZ_CHECK(rb == ra);
		if (rb == TP_HTTP_ERROR)
			FUZZ_CHECK(b.status == a.status);
		else
			same_request(&a, whole, &b, first);
	} else {
		char *all = (char *)fuzz_dup(in.p, n);
		rb = tp_http_parse_next(&cfg, &st, all, n, &b);
		FUZZ_CHECK(rb == ra);
		if (rb == TP_HTTP_ERROR)
			FUZZ_CHECK(b.status == a.status);
		else if (rb == TP_HTTP_COMPLETE) {
			FUZZ_CHECK(b.consumed == a.consumed);
			same_request(&a, whole, &b, all);
		}
		free(all);
	}
	free(first);

	size_t off = 0;
	tp_http_request *req = &a;
	for (int k = 0; ra == TP_HTTP_COMPLETE && k < 8; k++) {
		use_request(req, whole + off);
		off += req->consumed;
		ra = tp_http_parse(&cfg, whole + off, n - off, req);
	}
	free(whole);
	return 0;
}
