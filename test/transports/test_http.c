/*
 * Unit tests of transports/http: request parsing (complete, split, pipelined,
 * chunked, every error status), header helpers, query/path decoding and the
 * response-head writer.
 */
#include "transports/http.h"

#include "test/harness.h"

/* Parses the NUL-terminated s (copied into a private mutable buffer). */
static tp_http_result
parse_str(const tp_http_config *cfg, const char *s, tp_http_request *req, char *store, size_t cap)
{
	size_t n = strlen(s);
	if (n > cap)
		abort();
	memcpy(store, s, n);
	return tp_http_parse(cfg, store, n, req);
}

static int
slice_is(tp_http_str s, const char *want)
{
	return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

#define CHECK_SLICE(s, want)                                                                       \
	CHECK_MSG(slice_is((s), (want)), "slice %s is \"%.*s\", want \"%s\"", #s, (int)(s).len,    \
	          (s).ptr ? (s).ptr : "", (want))

/* Expects an error with the given status. */
static void
expect_status(const tp_http_config *cfg, const char *s, int status)
{
	static char store[70000];
	tp_http_request req;
	tp_http_result r = parse_str(cfg, s, &req, store, sizeof(store));
	CHECK_MSG(r == TP_HTTP_ERROR && req.status == status,
	          "request \"%.40s...\": result %d status %d, want status %d", s, r, req.status,
	          status);
	CHECK(req.error != NULL);
}

static void
test_simple_get(void)
{
	char buf[256];
	tp_http_request req;
	const char *s = "GET /chat/websocket?vsn=2.0.0&token=abc HTTP/1.1\r\n"
	                "Host: example.com\r\n"
	                "User-Agent:   curl/8  \r\n"
	                "\r\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_SLICE(req.method, "GET");
	CHECK_EQ(req.method_id, TP_HTTP_GET);
	CHECK_SLICE(req.target, "/chat/websocket?vsn=2.0.0&token=abc");
	CHECK_SLICE(req.path, "/chat/websocket");
	CHECK_SLICE(req.query, "vsn=2.0.0&token=abc");
	CHECK_EQ(req.minor_version, 1);
	CHECK_EQ(req.nheaders, 2);
	CHECK_SLICE(req.headers[0].name, "Host");
	CHECK_SLICE(req.headers[0].value, "example.com");
	CHECK_SLICE(req.headers[1].value, "curl/8");
	CHECK_EQ(req.content_length, -1);
	CHECK_EQ(req.body_len, 0);
	CHECK(req.body == NULL);
	CHECK_EQ(req.keep_alive, 1);
	CHECK_EQ(req.consumed, strlen(s));
	/* Header slices point into the caller's buffer. */
	CHECK(req.headers[0].value.ptr >= buf && req.headers[0].value.ptr < buf + sizeof(buf));

	/* Other methods, no query, bare LF line ends, leading empty line. */
	s = "\r\nDELETE /x HTTP/1.0\nA: b\n\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_EQ(req.method_id, TP_HTTP_DELETE);
	CHECK_SLICE(req.path, "/x");
	CHECK_EQ(req.query.len, 0);
	CHECK_EQ(req.minor_version, 0);
	CHECK_EQ(req.consumed, strlen(s));

	s = "BREW /pot HTTP/1.1\r\n\r\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_EQ(req.method_id, TP_HTTP_OTHER);
	CHECK_SLICE(req.method, "BREW");

	/* Absolute-form and asterisk-form targets. */
	s = "GET http://example.com:4000/a/b?c=d HTTP/1.1\r\n\r\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_SLICE(req.path, "/a/b");
	CHECK_SLICE(req.query, "c=d");
	s = "GET http://example.com HTTP/1.1\r\n\r\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_SLICE(req.path, "/");
	s = "OPTIONS * HTTP/1.1\r\n\r\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_EQ(req.method_id, TP_HTTP_OPTIONS);
	CHECK_SLICE(req.path, "*");
}

static void
test_keep_alive_defaults(void)
{
	char buf[256];
	tp_http_request req;
	static const struct {
		const char *req;
		int ka;
	} cases[] = {
	    {"GET / HTTP/1.1\r\n\r\n", 1},
	    {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0},
	    {"GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", 0},
	    {"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n", 1},
	    {"GET / HTTP/1.0\r\n\r\n", 0},
	    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1},
	    {"GET / HTTP/1.0\r\nconnection: Upgrade,Keep-Alive\r\n\r\n", 1},
	    {"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK_EQ(parse_str(NULL, cases[i].req, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
		CHECK_MSG(req.keep_alive == cases[i].ka, "case %zu: keep_alive %d", i,
		          req.keep_alive);
	}
}

static void
test_pipelined(void)
{
	char buf[256];
	tp_http_request req;
	const char *a = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
	const char *b = "GET /b?x=1 HTTP/1.1\r\n\r\n";
	char s[256];
	snprintf(s, sizeof(s), "%s%s", a, b);
	size_t n = strlen(s);
	memcpy(buf, s, n);

	CHECK_EQ(tp_http_parse(NULL, buf, n, &req), TP_HTTP_COMPLETE);
	CHECK_SLICE(req.path, "/a");
	CHECK_EQ(req.body_len, 3);
	CHECK_MEM(req.body, "abc", 3);
	CHECK_EQ(req.consumed, strlen(a));
	size_t off = req.consumed;

	CHECK_EQ(tp_http_parse(NULL, buf + off, n - off, &req), TP_HTTP_COMPLETE);
	CHECK_SLICE(req.path, "/b");
	CHECK_SLICE(req.query, "x=1");
	CHECK_EQ(req.consumed, strlen(b));
	off += req.consumed;
	CHECK_EQ(off, n);
	CHECK_EQ(tp_http_parse(NULL, buf + off, 0, &req), TP_HTTP_NEED_MORE);
}

/* Every proper prefix of s must be NEED_MORE; the whole must complete. */
static void
check_split(const char *s, size_t body_len, const char *body)
{
	size_t n = strlen(s);
	char *buf = malloc(n + 1);
	tp_http_request req;
	for (size_t k = 0; k < n; k++) {
		memcpy(buf, s, k);
		tp_http_result r = tp_http_parse(NULL, buf, k, &req);
		CHECK_MSG(r == TP_HTTP_NEED_MORE, "prefix %zu/%zu: result %d (status %d)", k, n, r,
		          req.status);
		CHECK(req.need > k);
	}
	memcpy(buf, s, n);
	CHECK_EQ(tp_http_parse(NULL, buf, n, &req), TP_HTTP_COMPLETE);
	CHECK_EQ(req.consumed, n);
	CHECK_EQ(req.body_len, body_len);
	if (body_len)
		CHECK_MEM(req.body, body, body_len);
	free(buf);
}

static void
test_split_byte_by_byte(void)
{
	check_split("GET /x?y=z HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", 0, NULL);
	check_split("GET / HTTP/1.0\nA: b\n\n", 0, NULL);
	check_split("POST /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world", 11, "hello world");
	check_split("POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	            "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
	            5, "abcde");
}

static void
test_post_content_length(void)
{
	char buf[256];
	tp_http_request req;
	const char *s =
	    "POST /api/login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded"
	    "\r\nContent-Length: 18\r\n\r\nuser=bob&pass=x%21";
	size_t n = strlen(s);
	memcpy(buf, s, n);
	/* Headers complete, body partial: need tells the total size. */
	CHECK_EQ(tp_http_parse(NULL, buf, n - 5, &req), TP_HTTP_NEED_MORE);
	CHECK_EQ(req.need, n);
	CHECK_EQ(tp_http_parse(NULL, buf, n, &req), TP_HTTP_COMPLETE);
	CHECK_EQ(req.method_id, TP_HTTP_POST);
	CHECK_EQ(req.content_length, 18);
	CHECK_EQ(req.body_len, 18);
	CHECK_MEM(req.body, "user=bob&pass=x%21", 18);
	char out[32];
	CHECK_EQ(tp_http_query_get(req.body, req.body_len, "pass", out, sizeof(out)), 2);
	CHECK_STR(out, "x!");

	/* Identical duplicate Content-Length values are accepted. */
	s = "PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_EQ(req.body_len, 2);
	CHECK_EQ(req.consumed, strlen(s));
	/* Content-Length: 0 */
	s = "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_EQ(req.content_length, 0);
	CHECK_EQ(req.body_len, 0);
}

static void
test_chunked_body(void)
{
	char buf[512];
	tp_http_request req;
	const char *body = "POST /upload HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
	                   "5;name=value;quoted=\"a b\"\r\nhello\r\n"
	                   "6 ; x\r\n world\r\n"
	                   "A\r\n0123456789\r\n"
	                   "1\r\n!\r\n"
	                   "000\r\n"
	                   "X-Checksum: abc\r\n"
	                   "X-Other: 1\r\n"
	                   "\r\n";
	const char *next = "GET /next HTTP/1.1\r\n\r\n";
	char s[512];
	snprintf(s, sizeof(s), "%s%s", body, next);
	size_t n = strlen(s);
	memcpy(buf, s, n);
	CHECK_EQ(tp_http_parse(NULL, buf, n, &req), TP_HTTP_COMPLETE);
	CHECK_EQ(req.chunked, 1);
	CHECK_EQ(req.content_length, -1);
	CHECK_EQ(req.body_len, 22);
	CHECK_MEM(req.body, "hello world0123456789!", 22);
	CHECK_EQ(req.consumed, strlen(body));
	CHECK_EQ(req.keep_alive, 1);
	/* The pipelined request after it is untouched. */
	CHECK_MEM(buf + req.consumed, next, strlen(next));
	size_t off = req.consumed;
	CHECK_EQ(tp_http_parse(NULL, buf + off, n - off, &req), TP_HTTP_COMPLETE);
	CHECK_SLICE(req.path, "/next");

	/* Empty chunked body, bare LF framing; HTTP/1.0 + chunked closes. */
	const char *e = "POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n0\n\n";
	CHECK_EQ(parse_str(NULL, e, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_EQ(req.body_len, 0);
	CHECK_EQ(req.consumed, strlen(e));
	CHECK_EQ(req.keep_alive, 0);

	/* Chunked framing errors. */
	expect_status(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 x\r\n", 400);
	expect_status(
	    NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400);
}

static void
test_error_400(void)
{
	/* Garbage, detected before any line end arrives (a TLS ClientHello). */
	expect_status(NULL, "\x16\x03\x01\x02\x00\x01", 400);
	expect_status(NULL, "GET\r\n\r\n", 400);
	expect_status(NULL, "GET /\r\n\r\n", 400);           /* HTTP/0.9 */
	expect_status(NULL, "GET  / HTTP/1.1\r\n\r\n", 400); /* double space */
	expect_status(NULL, "GET / HTTP/1.1 \r\n\r\n", 400); /* trailing space */
	expect_status(NULL, "GET / http/1.1\r\n\r\n", 400);  /* lowercase version */
	expect_status(NULL, "GET / HTTP/1.10\r\n\r\n", 400);
	expect_status(NULL, "GET x HTTP/1.1\r\n\r\n", 400);      /* not a path */
	expect_status(NULL, "GET /a\x01 HTTP/1.1\r\n\r\n", 400); /* control in target */
	expect_status(NULL, "GET / HTTP/1.1\rX\n\r\n", 400);     /* CR without LF */
	expect_status(NULL, "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400);
	expect_status(NULL, "\rGET / HTTP/1.1\r\n\r\n", 400);
	/* Bad header lines. */
	expect_status(NULL, "GET / HTTP/1.1\r\nHost example.com\r\n\r\n", 400);
	expect_status(NULL, "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400);
	expect_status(NULL, "GET / HTTP/1.1\r\nA: b\r\n  folded\r\n\r\n", 400);
	expect_status(NULL, "GET / HTTP/1.1\r\n: empty\r\n\r\n", 400);
	expect_status(NULL, "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400);
	expect_status(NULL, "GET / HTTP/1.1\r\nA: nul\x01here\r\n\r\n", 400);
	/* Bad Content-Length. */
	expect_status(NULL, "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", 400);
	/* Conflicting duplicates. */
	expect_status(NULL, "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
	              400);
	/* Both framings (request smuggling). */
	expect_status(NULL,
	              "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	              400);
}

static void
test_error_413(void)
{
	char s[256];
	snprintf(s, sizeof(s), "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
	         TP_HTTP_DEFAULT_MAX_BODY + 1);
	expect_status(NULL, s, 413); /* from the headers, before any body byte */
	expect_status(NULL, "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
	              413);
	snprintf(s, sizeof(s), "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
	         TP_HTTP_DEFAULT_MAX_BODY);
	char buf[256];
	tp_http_request req;
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_NEED_MORE);

	/* Chunked: one chunk too big (seen from its size line), or the total. */
	tp_http_config cfg = {0};
	cfg.max_body = 10;
	expect_status(&cfg, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n", 413);
	expect_status(&cfg,
	              "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	              "6\r\nabcdef\r\n5\r\n",
	              413);
	expect_status(
	    &cfg, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff", 413);
	CHECK_EQ(parse_str(&cfg,
	                   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	                   "6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n",
	                   &req, buf, sizeof(buf)),
	         TP_HTTP_COMPLETE);
	CHECK_EQ(req.body_len, 10);
	/* Chunk framing overhead is bounded too. */
	cfg.max_chunk_overhead = 20;
	expect_status(&cfg,
	              "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	              "1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	              413);
}

static void
test_error_414(void)
{
	static char s[TP_HTTP_DEFAULT_MAX_REQUEST_LINE + 64];
	tp_http_request req;
	static char buf[sizeof(s)];
	/* A request line of exactly the limit is fine. */
	size_t pre = strlen("GET /"), post = strlen(" HTTP/1.1");
	memset(s, 0, sizeof(s));
	strcpy(s, "GET /");
	memset(s + pre, 'a', TP_HTTP_DEFAULT_MAX_REQUEST_LINE - pre - post);
	strcat(s, " HTTP/1.1\r\n\r\n");
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	/* One more byte is not. */
	memset(s, 0, sizeof(s));
	strcpy(s, "GET /");
	memset(s + pre, 'a', TP_HTTP_DEFAULT_MAX_REQUEST_LINE - pre - post + 1);
	strcat(s, " HTTP/1.1\r\n\r\n");
	expect_status(NULL, s, 414);
	/* Detected before the line end arrives. */
	memset(s, 0, sizeof(s));
	strcpy(s, "GET /");
	memset(s + pre, 'a', TP_HTTP_DEFAULT_MAX_REQUEST_LINE);
	expect_status(NULL, s, 414);
	/* A smaller configured limit. */
	tp_http_config cfg = {0};
	cfg.max_request_line = 16;
	expect_status(&cfg, "GET /0123456789 HTTP/1.1\r\n\r\n", 414);
	CHECK_EQ(parse_str(&cfg, "GET /01 HTTP/1.1\r\n\r\n", &req, buf, sizeof(buf)),
	         TP_HTTP_COMPLETE);
}

static void
test_error_431(void)
{
	static char s[40000];
	char *p = s;
	tp_http_request req;
	static char buf[sizeof(s)];

	/* 64 headers are fine, 65 are not. */
	p += sprintf(p, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 64; i++)
		p += sprintf(p, "X-H%d: %d\r\n", i, i);
	sprintf(p, "\r\n");
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK_EQ(req.nheaders, 64);
	p += sprintf(p, "X-Last: 1\r\n");
	sprintf(p, "\r\n");
	expect_status(NULL, s, 431);

	/* A header section over 16384 bytes, complete or still arriving. */
	p = s;
	p += sprintf(p, "GET / HTTP/1.1\r\nX-Big: ");
	memset(p, 'v', 16400);
	p += 16400;
	*p = '\0';
	expect_status(NULL, s, 431);
	sprintf(p, "\r\n\r\n");
	expect_status(NULL, s, 431);

	/* Configured limits. */
	tp_http_config cfg = {0};
	cfg.max_headers = 1;
	expect_status(&cfg, "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", 431);
	cfg.max_headers = 0;
	cfg.max_header_bytes = 10;
	expect_status(&cfg, "GET / HTTP/1.1\r\nAbcdef: 1\r\n\r\n", 431);
	CHECK_EQ(parse_str(&cfg, "GET / HTTP/1.1\r\nA: 1\r\n\r\n", &req, buf, sizeof(buf)),
	         TP_HTTP_COMPLETE);
}

static void
test_error_501_505(void)
{
	expect_status(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
	expect_status(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
	expect_status(NULL, "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 501);
	expect_status(NULL, "GET / HTTP/2.0\r\n\r\n", 505);
	expect_status(NULL, "GET / HTTP/1.2\r\n\r\n", 505);
	expect_status(NULL, "GET / HTTP/0.9\r\n\r\n", 505);
}

static void
test_header_lookup(void)
{
	char buf[256];
	tp_http_request req;
	const char *s = "GET / HTTP/1.1\r\nHOST: a\r\nsec-websocket-key:\tK== \r\n"
	                "X-Dup: 1\r\nx-dup: 2\r\nEmpty:\r\n\r\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	const tp_http_str *v = tp_http_header_get(&req, "host");
	CHECK(v != NULL);
	CHECK_SLICE(*v, "a");
	v = tp_http_header_get(&req, "Sec-WebSocket-Key");
	CHECK(v != NULL);
	CHECK_SLICE(*v, "K==");
	v = tp_http_header_get(&req, "X-DUP");
	CHECK(v != NULL);
	CHECK_SLICE(*v, "1");
	CHECK_EQ(tp_http_header_count(&req, "x-dup"), 2);
	v = tp_http_header_get(&req, "empty");
	CHECK(v != NULL);
	CHECK_EQ(v->len, 0);
	CHECK(tp_http_header_get(&req, "missing") == NULL);
	CHECK(tp_http_header_get(&req, "hos") == NULL);
	CHECK(tp_http_header_get(&req, "hostx") == NULL);
	CHECK_EQ(tp_http_header_count(&req, "missing"), 0);
}

static void
test_token_list(void)
{
	const char *v = "keep-alive, Upgrade";
	CHECK(tp_http_has_token(v, strlen(v), "upgrade"));
	CHECK(tp_http_has_token(v, strlen(v), "KEEP-ALIVE"));
	CHECK(!tp_http_has_token(v, strlen(v), "close"));
	CHECK(!tp_http_has_token(v, strlen(v), "upgrad"));
	CHECK(!tp_http_has_token(v, strlen(v), "keep"));
	v = " ,\tupgrade\t,, ";
	CHECK(tp_http_has_token(v, strlen(v), "Upgrade"));
	CHECK(!tp_http_has_token("", 0, "x"));
	CHECK(!tp_http_has_token("upgrade-x", 9, "upgrade"));
	/* Only the given length is looked at. */
	CHECK(!tp_http_has_token("close", 4, "close"));

	char buf[256];
	tp_http_request req;
	const char *s = "GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n\r\n";
	CHECK_EQ(parse_str(NULL, s, &req, buf, sizeof(buf)), TP_HTTP_COMPLETE);
	CHECK(tp_http_header_has_token(&req, "connection", "upgrade"));
	CHECK(!tp_http_header_has_token(&req, "upgrade", "websocket"));
}

static void
test_query(void)
{
	const char *q = "a=1&name=J%C3%BCrgen+M%20x&empty=&flag&a=2&&sp%61ced+key=v&bad=%zz&"
	                "long=0123456789";
	size_t ql = strlen(q);
	char out[16];

	CHECK_EQ(tp_http_query_get(q, ql, "a", out, sizeof(out)), 1);
	CHECK_STR(out, "1"); /* first wins */
	CHECK_EQ(tp_http_query_get(q, ql, "name", out, sizeof(out)), 11);
	CHECK_STR(out, "J\xC3\xBCrgen M x");
	CHECK_EQ(tp_http_query_get(q, ql, "empty", out, sizeof(out)), 0);
	CHECK_STR(out, "");
	CHECK_EQ(tp_http_query_get(q, ql, "flag", out, sizeof(out)), 0);
	CHECK_EQ(tp_http_query_get(q, ql, "spaced key", out, sizeof(out)), 1);
	CHECK_STR(out, "v");
	CHECK_EQ(tp_http_query_get(q, ql, "missing", out, sizeof(out)), -1);
	CHECK_EQ(tp_http_query_get(q, ql, "fla", out, sizeof(out)), -1);
	CHECK_EQ(tp_http_query_get(q, ql, "bad", out, sizeof(out)), -1);
	CHECK_EQ(tp_http_query_get(q, ql, "long", out, 11), 10);
	CHECK_EQ(tp_http_query_get(q, ql, "long", out, 10), -1); /* no room for the NUL */
	CHECK_EQ(tp_http_query_get("", 0, "a", out, sizeof(out)), -1);
	/* Only qlen bytes count. */
	CHECK_EQ(tp_http_query_get("a=12", 3, "a", out, sizeof(out)), 1);

	/* Iteration: every parameter in order, raw. */
	size_t pos = 0;
	tp_http_str k, v;
	const char *want[][2] = {
	    {"a", "1"}, {"name", "J%C3%BCrgen+M%20x"}, {"empty", ""},  {"flag", ""},
	    {"a", "2"}, {"sp%61ced+key", "v"},         {"bad", "%zz"}, {"long", "0123456789"}};
	size_t i = 0;
	while (tp_http_query_next(q, ql, &pos, &k, &v)) {
		CHECK(i < sizeof(want) / sizeof(want[0]));
		CHECK_SLICE(k, want[i][0]);
		CHECK_SLICE(v, want[i][1]);
		i++;
	}
	CHECK_EQ(i, sizeof(want) / sizeof(want[0]));
	CHECK_EQ(tp_http_query_next(q, ql, &pos, &k, &v), 0);

	/* Form decoding keeps %00 (values are bytes) and decodes in place. */
	char d[] = "x%00y+z";
	CHECK_EQ(tp_http_form_decode(d, strlen(d), d, sizeof(d)), 5);
	CHECK_MEM(d, "x\0y z", 6);
	CHECK_EQ(tp_http_form_decode("%4", 2, out, sizeof(out)), -1);
	CHECK_EQ(tp_http_form_decode("%", 1, out, sizeof(out)), -1);
	CHECK_EQ(tp_http_form_decode("ab", 2, out, 2), -1);
	CHECK_EQ(tp_http_form_decode("", 0, out, 1), 0);
	CHECK_EQ(tp_http_form_decode("", 0, out, 0), -1);
}

static void
test_path_decode(void)
{
	char out[64];
	const char *p = "/a%2Fb/c%20d+e";
	CHECK_EQ(tp_http_path_decode(p, strlen(p), out, sizeof(out)), 10);
	CHECK_STR(out, "/a/b/c d+e");
	CHECK_EQ(tp_http_path_decode("/%00", 4, out, sizeof(out)), -1);
	CHECK_EQ(tp_http_path_decode("/%zz", 4, out, sizeof(out)), -1);
	CHECK_EQ(tp_http_path_decode("/%4", 3, out, sizeof(out)), -1);
	CHECK_EQ(tp_http_path_decode("/%", 2, out, sizeof(out)), -1);
	CHECK_EQ(tp_http_path_decode("/abc", 4, out, 4), -1);
	CHECK_EQ(tp_http_path_decode("/abc", 4, out, 5), 4);
	char inplace[] = "/x%41%62";
	CHECK_EQ(tp_http_path_decode(inplace, strlen(inplace), inplace, sizeof(inplace)), 4);
	CHECK_STR(inplace, "/xAb");
}

static void
test_response_head(void)
{
	char out[512];
	tp_http_head h = {200, "application/json", 13, TP_HTTP_CONN_KEEP_ALIVE, NULL};
	const char *want = "HTTP/1.1 200 OK\r\n"
	                   "Content-Type: application/json\r\n"
	                   "Content-Length: 13\r\n"
	                   "Connection: keep-alive\r\n"
	                   "\r\n";
	CHECK_EQ(tp_http_head_write(out, sizeof(out), &h), strlen(want));
	CHECK_STR(out, want);
	/* Exactly enough room (with the NUL), and one byte short. */
	CHECK_EQ(tp_http_head_write(out, strlen(want) + 1, &h), strlen(want));
	CHECK_EQ(tp_http_head_write(out, strlen(want), &h), -1);

	h = (tp_http_head){204, NULL, -1, TP_HTTP_CONN_CLOSE, "X-A: 1\r\nX-B: 2\r\n"};
	want = "HTTP/1.1 204 No Content\r\nConnection: close\r\nX-A: 1\r\nX-B: 2\r\n\r\n";
	CHECK_EQ(tp_http_head_write(out, sizeof(out), &h), strlen(want));
	CHECK_STR(out, want);

	h = (tp_http_head){304, NULL, 0, TP_HTTP_CONN_NONE, NULL};
	want = "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n";
	rt_buf *b = tp_http_head_append(NULL, &h);
	CHECK_EQ(b->len, strlen(want));
	CHECK_MEM(b->data, want, b->len);
	/* Appending to an existing buffer keeps what was there. */
	b = tp_http_head_append(b, &h);
	CHECK_EQ(b->len, 2 * strlen(want));
	CHECK_MEM(b->data + strlen(want), want, strlen(want));
	rt_buf_release(b);

	/* Header injection through the content type is refused. */
	h = (tp_http_head){200, "text/html\r\nX-Evil: 1", 0, TP_HTTP_CONN_CLOSE, NULL};
	CHECK_EQ(tp_http_head_write(out, sizeof(out), &h), -1);

	/* Reason phrases. */
	static const struct {
		int status;
		const char *reason;
	} r[] = {{200, "OK"},
	         {101, "Switching Protocols"},
	         {204, "No Content"},
	         {301, "Moved Permanently"},
	         {304, "Not Modified"},
	         {400, "Bad Request"},
	         {403, "Forbidden"},
	         {404, "Not Found"},
	         {405, "Method Not Allowed"},
	         {408, "Request Timeout"},
	         {411, "Length Required"},
	         {413, "Content Too Large"},
	         {414, "URI Too Long"},
	         {426, "Upgrade Required"},
	         {431, "Request Header Fields Too Large"},
	         {500, "Internal Server Error"},
	         {501, "Not Implemented"},
	         {503, "Service Unavailable"},
	         {505, "HTTP Version Not Supported"},
	         {299, "Unknown"}};
	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++)
		CHECK_STR(tp_http_reason(r[i].status), r[i].reason);
}

static void
test_error_response(void)
{
	char out[512];
	const char *want = "HTTP/1.1 404 Not Found\r\n"
	                   "Content-Type: text/plain\r\n"
	                   "Content-Length: 14\r\n"
	                   "Connection: close\r\n"
	                   "\r\n"
	                   "404 Not Found\n";
	CHECK_EQ(tp_http_error_write(out, sizeof(out), 404, TP_HTTP_CONN_CLOSE, NULL),
	         strlen(want));
	CHECK_STR(out, want);
	CHECK_EQ(tp_http_error_write(out, 20, 404, TP_HTTP_CONN_CLOSE, NULL), -1);

	want = "HTTP/1.1 426 Upgrade Required\r\n"
	       "Content-Type: text/plain\r\n"
	       "Content-Length: 21\r\n"
	       "Connection: keep-alive\r\n"
	       "Sec-WebSocket-Version: 13\r\n"
	       "\r\n"
	       "426 Upgrade Required\n";
	rt_buf *b = rt_buf_alloc(4);
	b = rt_buf_append(b, "x", 1);
	b = tp_http_error_append(b, 426, TP_HTTP_CONN_KEEP_ALIVE, "Sec-WebSocket-Version: 13\r\n");
	CHECK_EQ(b->len, 1 + strlen(want));
	CHECK_MEM(b->data, "x", 1);
	CHECK_MEM(b->data + 1, want, strlen(want));
	rt_buf_release(b);
}

/* Arbitrary bytes never crash the parser or make it read outside the buffer. */
static void
test_fuzz_no_crash(void)
{
	static const char *seeds[] = {
	    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	    "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: v\r\n\r\n",
	    "POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
	};
	uint32_t seed = 12345;
	for (int iter = 0; iter < 20000; iter++) {
		const char *s = seeds[iter % 3];
		size_t n = strlen(s);
		char *buf = malloc(n); /* exact size so ASan sees any overrun */
		memcpy(buf, s, n);
		for (int m = 0; m < 3; m++) {
			seed = seed * 1103515245 + 12345;
			size_t at = (seed >> 8) % n;
			seed = seed * 1103515245 + 12345;
			buf[at] = (char)(seed >> 16);
		}
		seed = seed * 1103515245 + 12345;
		size_t len = (seed >> 8) % (n + 1);
		tp_http_request req;
		tp_http_result r = tp_http_parse(NULL, buf, len, &req);
		if (r == TP_HTTP_COMPLETE)
			CHECK(req.consumed <= len);
		if (r == TP_HTTP_ERROR)
			CHECK(req.status >= 400 && req.status <= 505);
		free(buf);
	}
}

/* ---- the same answer however the bytes arrive, at a cost linear in them ---- */

/* What a parse said: the result and what distinguishes one answer from another. */
typedef struct outcome {
	tp_http_result r;
	int status;
	size_t consumed, nheaders, body_len;
	char path[64];
	char body[64];
} outcome;

static outcome
outcome_of(tp_http_result r, const tp_http_request *req)
{
	outcome o;
	memset(&o, 0, sizeof(o));
	o.r = r;
	if (r == TP_HTTP_ERROR)
		o.status = req->status;
	if (r == TP_HTTP_COMPLETE) {
		o.consumed = req->consumed;
		o.nheaders = req->nheaders;
		o.body_len = req->body_len;
		snprintf(o.path, sizeof(o.path), "%.*s", (int)req->path.len, req->path.ptr);
		memcpy(o.body, req->body ? req->body : "",
		       req->body_len < sizeof(o.body) ? req->body_len : sizeof(o.body));
	}
	return o;
}

static int
outcome_eq(const outcome *a, const outcome *b)
{
	return a->r == b->r && a->status == b->status && a->consumed == b->consumed &&
	       a->nheaders == b->nheaders && a->body_len == b->body_len &&
	       strcmp(a->path, b->path) == 0 && memcmp(a->body, b->body, sizeof(a->body)) == 0;
}

/*
 * Feeds s[0, n) to tp_http_parse_next with one state: the pieces end at the
 * offsets cuts[0..ncuts) (increasing, < n), then at n; each proper prefix must
 * be NEED_MORE until the answer comes.  Returns the answer; *examined: the
 * parse work summed over the calls.
 */
static outcome
feed_pieces(const tp_http_config *cfg, const char *s, size_t n, const size_t *cuts, size_t ncuts,
            size_t step, size_t *examined)
{
	char *buf = malloc(n ? n : 1); /* exact size: ASan sees any overrun */
	tp_http_state st;
	tp_http_request req;
	tp_http_result r = TP_HTTP_NEED_MORE;
	size_t at = 0, k = 0;
	memset(&st, 0, sizeof(st));
	*examined = 0;
	CHECK(buf != NULL);
	while (r == TP_HTTP_NEED_MORE && at < n) {
		size_t end = cuts ? (k < ncuts ? cuts[k++] : n) : (at + step < n ? at + step : n);
		memcpy(buf + at, s + at, end - at); /* the buffer only grows at its end */
		at = end;
		r = tp_http_parse_next(cfg, &st, buf, at, &req);
		*examined += req.examined;
		if (r == TP_HTTP_NEED_MORE)
			CHECK(req.need > at);
	}
	outcome o = outcome_of(r, &req);
	free(buf);
	return o;
}

/* The answer to s[0, n) at once (tp_http_parse, a fresh state). */
static outcome
whole(const tp_http_config *cfg, const char *s, size_t n)
{
	char *buf = malloc(n ? n : 1);
	tp_http_request req;
	memcpy(buf, s, n);
	outcome o = outcome_of(tp_http_parse(cfg, buf, n, &req), &req);
	free(buf);
	return o;
}

/*
 * s gets the answer want (a status, or 0: complete, and what follows the
 * request, if anything, is one whole request) at once, byte by byte,
 * and split in two at every point (every stride-th point, and every point
 * within 3 bytes of a multiple of near); and a caller that re-parses every
 * prefix from the start (no state) gets the same first answer too.
 */
static void
check_any_split(const tp_http_config *cfg, const char *s, size_t n, int want, size_t stride,
                size_t near)
{
	outcome w = whole(cfg, s, n), o;
	size_t ex;
	CHECK_MSG(want ? (w.r == TP_HTTP_ERROR && w.status == want) : w.r == TP_HTTP_COMPLETE,
	          "\"%.40s\" (%zu bytes): result %d status %d, want %d", s, n, w.r, w.status, want);
	if (w.r == TP_HTTP_COMPLETE && w.consumed < n) { /* the rest: one whole request */
		outcome rest = whole(cfg, s + w.consumed, n - w.consumed);
		CHECK_MSG(rest.r == TP_HTTP_COMPLETE && rest.consumed == n - w.consumed,
		          "\"%.40s\": %zu bytes consumed of %zu, the rest does not parse", s,
		          w.consumed, n);
	}
	o = feed_pieces(cfg, s, n, NULL, 0, 1, &ex);
	CHECK_MSG(outcome_eq(&o, &w), "\"%.40s\" byte by byte: result %d status %d, at once %d %d",
	          s, o.r, o.status, w.r, w.status);
	for (size_t k = 1; k < n; k++) {
		if (k % stride && (!near || (k + 3) % near > 6))
			continue;
		o = feed_pieces(cfg, s, n, &k, 1, 0, &ex);
		CHECK_MSG(outcome_eq(&o, &w),
		          "\"%.40s\" split at %zu: result %d status %d, at once %d %d", s, k, o.r,
		          o.status, w.r, w.status);
	}
	/* Stateless: the first prefix that is not NEED_MORE answers as the whole. */
	char *buf = malloc(n);
	for (size_t k = 1; k <= n; k += (k + 3) % (near ? near : n + 1) <= 6 ? 1 : stride) {
		tp_http_request req;
		memcpy(buf, s, k);
		tp_http_result r = tp_http_parse(cfg, buf, k, &req);
		if (r == TP_HTTP_NEED_MORE)
			continue;
		o = outcome_of(r, &req);
		if (k == n || o.r == TP_HTTP_ERROR) {
			CHECK_MSG(outcome_eq(&o, &w), "\"%.40s\" prefix %zu: result %d status %d",
			          s, k, o.r, o.status);
			break;
		}
	}
	free(buf);
}

static void
check_any_split_str(const tp_http_config *cfg, const char *s, int want)
{
	check_any_split(cfg, s, strlen(s), want, 1, 0);
}

static void
test_same_answer_any_split(void)
{
	/* Small limits, so that every split point of each case is tried. */
	tp_http_config cfg = {.max_request_line = 24,
	                      .max_header_bytes = 40,
	                      .max_headers = 3,
	                      .max_body = 16,
	                      .max_chunk_overhead = 40};
	static const struct {
		const char *s;
		int want;
	} cases[] = {
	    /* the request line: at the limit (24 bytes), one over, far over */
	    {"GET /aaaaaaaaaa HTTP/1.1\r\n\r\n", 0},
	    {"GET /aaaaaaaaaaa HTTP/1.1\r\n\r\n", 414},
	    {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", 414},
	    {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 414},
	    {"\r\n\r\nGET /aaaaaa HTTP/1.1\r\n\r\n", 0},
	    {"\r\n\r\nGET /aaaaaaa HTTP/1.1\r\n\r\n", 414},
	    {"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", 414},
	    /* a wrong byte before the limit is a 400 however long the line gets; after it, 414 */
	    {"GET /a\x01"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
	     400},
	    {"GET /aaaaaaaaaaaaaaaaaaaaaa\x01 HTTP/1.1\r\n\r\n", 414},
	    {"GET /aaaaaaaaaa HTTP/1.1 \r\n\r\n", 414},
	    {"GET /aaaaaaaaa HTTP/1.1 \r\n\r\n", 400},
	    {"GET /aaaaaaaaaa HTTP/1.1\rX\n\r\n", 400},
	    {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400},
	    {"GET / HTTP/2.0\r\n\r\n", 505},
	    {"GET x HTTP/1.1\r\n\r\n", 400},
	    /* the header section: at the limit (40 bytes), over it, a wrong byte first */
	    {"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 0},
	    {"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 431},
	    {"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 431},
	    {"GET / HTTP/1.1\r\nX: a\x01"
	     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
	     400},
	    {"GET / HTTP/1.1\r\nX y: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0},
	    {"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD\x01\r\n\r\n", 431},
	    {"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nH: a:1\r\nB::\r\n\r\n", 0}, /* ':' in values */
	    {"GET / HTTP/1.1\r\nH: a:1\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0},
	    {"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400},
	    /* bodies */
	    {"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 0},
	    {"POST /p HTTP/1.1\r\nContent-Length: 17\r\n\r\nabc", 413},
	    {"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
	    {"POST /p HTTP/1.1\r\nTE: x\r\n\r\n", 0},
	    {"POST / HTTP/1.1\nContent-Length: 1\nContent-Length: 2\n\n", 400},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_any_split_str(&cfg, cases[i].s, cases[i].want);

	/* Chunked bodies, with the default head limits. */
	cfg.max_header_bytes = 0;
	static const struct {
		const char *body;
		int want;
	} chunked[] = {
	    {"3;x=y\r\nabc\r\n2 \r\nde\r\n0\r\nT: v\r\n\r\n", 0},
	    {"1\r\na\r\n0\r\nT: a:b\r\nU: :\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0},
	    {"3\nabc\n0\n\n", 0},
	    {"g\r\n", 400},
	    {"3 x\r\n", 400},
	    {"3\r\nabcX\r\n", 400},
	    {"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n", 400},
	    {"11\r\n", 413},                                               /* 17 > max_body */
	    {"9\r\n123456789\r\n8\r\n", 413},                              /* 17 in all */
	    {"1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 413}, /* framing over 40 */
	    {"1\r\na\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n", 413},
	    {"1\r\na\r\n1;\x01\r\n", 400},
	};
	char s[512];
	for (size_t i = 0; i < sizeof(chunked) / sizeof(chunked[0]); i++) {
		snprintf(s, sizeof(s), "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%s",
		         chunked[i].body);
		check_any_split_str(&cfg, s, chunked[i].want);
	}

	/* The default limits: over-long and near-limit request lines and header sections,
	 * split at every point near the limit and every 97th elsewhere. */
	static char big[TP_HTTP_DEFAULT_MAX_HEADER_BYTES + 256];
	size_t rl = TP_HTTP_DEFAULT_MAX_REQUEST_LINE, pre = strlen("GET /"),
	       post = strlen(" HTTP/1.1");
	for (int extra = -1; extra <= 2; extra++) {
		memcpy(big, "GET /", pre);
		memset(big + pre, 'a', rl - pre - post + (size_t)(extra + 1));
		size_t n = rl - post + (size_t)(extra + 1);
		n += (size_t)sprintf(big + n, " HTTP/1.1\r\nHost: x\r\n\r\n");
		check_any_split(NULL, big, n, extra < 0 ? 0 : 414, 97, rl);
	}
	size_t hb = TP_HTTP_DEFAULT_MAX_HEADER_BYTES;
	for (int extra = -1; extra <= 1; extra++) {
		size_t n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nX: ");
		size_t h0 = strlen("GET / HTTP/1.1\r\n");
		size_t fill = hb - (n - h0) - 4 + (size_t)(extra + 1);
		memset(big + n, 'v', fill);
		n += fill;
		n += (size_t)sprintf(big + n, "\r\n\r\n");
		check_any_split(NULL, big, n, extra < 0 ? 0 : 431, 97, hb);
	}
}

/* The parse work (bytes examined) over all calls when s arrives one byte per call. */
static size_t
work_byte_by_byte(const tp_http_config *cfg, const char *s, size_t n, outcome *o)
{
	size_t ex;
	*o = feed_pieces(cfg, s, n, NULL, 0, 1, &ex);
	return ex;
}

/* A chunked request of nchunks one-byte chunks and ntrailers trailer lines. */
static char *
trickle_request(size_t nchunks, size_t ntrailers, size_t *n)
{
	size_t cap = 128 + nchunks * 6 + ntrailers * 8;
	char *s = malloc(cap), *p = s;
	p += sprintf(p, "POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (size_t i = 0; i < nchunks; i++)
		p += sprintf(p, "1\r\n%c\r\n", 'a' + (int)(i % 26));
	p += sprintf(p, "0\r\n");
	for (size_t i = 0; i < ntrailers; i++)
		p += sprintf(p, "T: v\r\n");
	p += sprintf(p, "\r\n");
	*n = (size_t)(p - s);
	return s;
}

/*
 * A request trickled one byte per call costs the parser about one look at
 * each byte, not a re-scan from the start per call: 10,000 and 40,000 one-byte
 * chunks, 10,000 trailer lines, a 16 KB head.  (A re-scan would look at about
 * n^2/2 bytes: the control case shows the counter sees it.)
 */
static void
test_linear_parse_work(void)
{
	tp_http_config cfg = {.max_body = 1 << 20, .max_chunk_overhead = 1 << 20};
	size_t n, n4, work, work4;
	outcome o;
	char *s = trickle_request(10000, 0, &n);
	work = work_byte_by_byte(&cfg, s, n, &o);
	CHECK_EQ(o.r, TP_HTTP_COMPLETE);
	CHECK_EQ(o.body_len, 10000);
	CHECK_MEM(o.body, "abcdefghij", 10);
	CHECK_EQ(o.consumed, n);
	CHECK_MSG(work <= 3 * n, "10,000 chunks: %zu bytes examined for %zu", work, n);
	free(s);
	s = trickle_request(40000, 0, &n4);
	work4 = work_byte_by_byte(&cfg, s, n4, &o);
	CHECK_EQ(o.body_len, 40000);
	CHECK_MSG(work4 <= 3 * n4, "40,000 chunks: %zu bytes examined for %zu", work4, n4);
	CHECK_MSG(work4 < 5 * work, "4x the chunks: %zu then %zu examined", work, work4);
	free(s);

	/* Trailer lines, with the default limits (60 KB of framing). */
	s = trickle_request(1, 10000, &n);
	work = work_byte_by_byte(NULL, s, n, &o);
	CHECK_EQ(o.r, TP_HTTP_COMPLETE);
	CHECK_EQ(o.body_len, 1);
	CHECK_MSG(work <= 3 * n, "trailers: %zu bytes examined for %zu", work, n);
	free(s);

	/* A head just under the limits. */
	s = malloc(TP_HTTP_DEFAULT_MAX_HEADER_BYTES + 64);
	char *p = s + sprintf(s, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 60; i++)
		p += sprintf(p, "X-%02d: %0250d\r\n", i, i);
	p += sprintf(p, "\r\n");
	n = (size_t)(p - s);
	work = work_byte_by_byte(NULL, s, n, &o);
	CHECK_EQ(o.r, TP_HTTP_COMPLETE);
	CHECK_EQ(o.nheaders, 60);
	CHECK_MSG(work <= 3 * n, "head: %zu bytes examined for %zu", work, n);
	free(s);

	/* Control: re-parsing every prefix from the start is quadratic, and counted so. */
	s = trickle_request(1000, 0, &n);
	char *buf = malloc(n);
	work = 0;
	for (size_t k = 1; k <= n; k++) {
		tp_http_request req;
		memcpy(buf, s, k);
		tp_http_parse(&cfg, buf, k, &req);
		work += req.examined;
	}
	CHECK_MSG(work > 100 * n, "re-parse: %zu bytes examined for %zu", work, n);
	free(buf);
	free(s);
}

TEST_LIST = {
    TEST(test_simple_get),
    TEST(test_keep_alive_defaults),
    TEST(test_pipelined),
    TEST(test_split_byte_by_byte),
    TEST(test_post_content_length),
    TEST(test_chunked_body),
    TEST(test_error_400),
    TEST(test_error_413),
    TEST(test_error_414),
    TEST(test_error_431),
    TEST(test_error_501_505),
    TEST(test_header_lookup),
    TEST(test_token_list),
    TEST(test_query),
    TEST(test_path_decode),
    TEST(test_response_head),
    TEST(test_error_response),
    TEST(test_fuzz_no_crash),
    TEST(test_same_answer_any_split),
    TEST(test_linear_parse_work),
    TEST_END,
};
