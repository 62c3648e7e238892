/*
 * Unit tests of bench/lp_client's parsers, the long-poll client of the load
 * generator: HTTP/1.1 answers (Content-Length, chunked, split and hostile),
 * the JSON-string unescape (escapes, \u sequences and surrogate pairs, bad
 * input), the answer body and the messages-array walk (truncated arrays,
 * non-string elements, huge counts, a callback that stops the walk).
 */
#include "bench/lp_client.h"

#include "test/harness.h"

static long
resp(const char *s, size_t body_max, struct lp_resp *r)
{
	static uint8_t buf[65536];
	size_t n = strlen(s);
	CHECK(n <= sizeof buf);
	memcpy(buf, s, n);
	return lp_http_response(buf, n, body_max, r);
}

static void
test_http_content_length(void)
{
	struct lp_resp r;
	const char *a = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
	                "Content-Length: 14\r\n\r\n{\"status\":200}";
	CHECK_EQ(resp(a, 1024, &r), (long)strlen(a));
	CHECK_EQ(r.status, 200);
	CHECK_EQ(r.close, 0);
	CHECK_EQ(r.body_len, 14);
	/* Every strict prefix needs more bytes. */
	for (size_t i = 0; i < strlen(a); i++) {
		uint8_t buf[256];
		memcpy(buf, a, i);
		CHECK_EQ(lp_http_response(buf, i, 1024, &r), 0);
	}
	/* A second answer behind the first is not consumed. */
	char two[512];
	snprintf(two, sizeof two, "%s%s", a, a);
	CHECK_EQ(resp(two, 1024, &r), (long)strlen(a));
	/* Connection: close, and HTTP/1.0 without keep-alive. */
	CHECK(resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 1024,
	           &r) > 0);
	CHECK_EQ(r.close, 1);
	CHECK(resp("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", 1024, &r) > 0);
	CHECK_EQ(r.close, 1);
	CHECK(resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}", 1024,
	           &r) > 0);
	CHECK_EQ(r.close, 0);
	CHECK(resp("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 1024, &r) > 0);
	CHECK_EQ(r.status, 404);
}

static void
test_http_hostile(void)
{
	struct lp_resp r;
	/* No body length at all; a body past the cap; bad or conflicting lengths. */
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\n\r\n{}", 1024, &r), -1);
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", 1024, &r), -1);
	CHECK_EQ(
	    resp("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", 1024, &r),
	    -1);
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 1024, &r), -1);
	CHECK_EQ(
	    resp("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}}", 1024, &r),
	    -1);
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", 1024, &r), -1);
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 1024, &r), -1);
	/* Not a status line. */
	CHECK_EQ(resp("HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", 1024, &r), -1);
	CHECK_EQ(resp("HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", 1024, &r), -1);
	CHECK_EQ(resp("SSH-2.0-OpenSSH_9.2\r\n\r\n", 1024, &r), -1);
	/* A head that never ends: more bytes until the cap, then malformed. */
	static uint8_t big[LP_HEAD_MAX + 100];
	memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 21);
	memset(big + 21, 'a', sizeof big - 21);
	CHECK_EQ(lp_http_response(big, LP_HEAD_MAX - 1, 1024, &r), 0);
	CHECK_EQ(lp_http_response(big, sizeof big, 1024, &r), -1);
}

static void
test_http_chunked(void)
{
	struct lp_resp r;
	static uint8_t buf[1024];
	const char *a = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	                "5\r\n{\"sta\r\n"
	                "A;ext=1\r\ntus\":204}\n\r\n"
	                "0\r\n\r\nHTTP/1.1";
	size_t n = strlen(a);
	memcpy(buf, a, n);
	/* Prefixes: incomplete, never malformed, and the buffer left alone. */
	for (size_t i = 0; i < n - 8; i++) {
		uint8_t copy[1024];
		memcpy(copy, a, i);
		CHECK_EQ(lp_http_response(copy, i, 1024, &r), 0);
		CHECK(memcmp(copy, a, i) == 0);
	}
	long got = lp_http_response(buf, n, 1024, &r);
	CHECK_EQ(got, (long)(n - 8));
	CHECK_EQ(r.body_len, 15);
	CHECK(memcmp(buf + r.body_off, "{\"status\":204}\n", 15) == 0);
	/* Trailers after the last chunk. */
	CHECK(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
	           "X-T: 1\r\n\r\n",
	           1024, &r) > 0);
	CHECK_EQ(r.body_len, 2);
	/* Hostile: bad size, a size past the cap, overflowing hex, missing CRLF. */
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 1024, &r), -1);
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\n", 1024, &r),
	         -1);
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	              "ffffffffffffffffffff\r\n",
	              1024, &r),
	         -1);
	CHECK_EQ(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
	              1024, &r),
	         -1);
	/* Many small chunks whose sum passes the cap. */
	char many[4096] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
	for (int i = 0; i < 300; i++)
		strcat(many, "1\r\nx\r\n");
	strcat(many, "0\r\n\r\n");
	CHECK_EQ(resp(many, 256, &r), -1);
	CHECK(resp(many, 300, &r) > 0);
	CHECK_EQ(r.body_len, 300);
}

static long
unesc(const char *s, char *out, size_t cap)
{
	const char *end = NULL;
	long n = lp_json_unescape(s, s + strlen(s), out, cap, &end);
	if (n >= 0) {
		CHECK(end && *(end - 1) == '"');
		out[n < (long)cap ? n : (long)cap - 1] = 0;
	}
	return n;
}

static void
test_unescape(void)
{
	char o[256];
	CHECK_EQ(unesc("\"\"", o, sizeof o), 0);
	CHECK_EQ(unesc("\"abc\" tail", o, sizeof o), 3);
	CHECK(strcmp(o, "abc") == 0);
	CHECK_EQ(unesc("\"[\\\"1\\\",null,\\\"a\\/b\\\\\\\\\\\"]\"", o, sizeof o), 18);
	CHECK(strcmp(o, "[\"1\",null,\"a/b\\\\\"]") == 0);
	CHECK_EQ(unesc("\"\\b\\f\\n\\r\\t\"", o, sizeof o), 5);
	CHECK(strcmp(o, "\b\f\n\r\t") == 0);
	/* \u: one, two, three bytes of UTF-8, and a surrogate pair (four). */
	CHECK_EQ(unesc("\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"", o, sizeof o), 1 + 2 + 3 + 4);
	CHECK(strcmp(o, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == 0);
	/* Raw UTF-8 passes through. */
	CHECK_EQ(unesc("\"\xc3\xa9\"", o, sizeof o), 2);
	/* Hostile. */
	CHECK_EQ(unesc("\"abc", o, sizeof o), -1);              /* unterminated */
	CHECK_EQ(unesc("\"abc\\", o, sizeof o), -1);            /* ends in a backslash */
	CHECK_EQ(unesc("\"abc\\\"", o, sizeof o), -1);          /* the quote is escaped */
	CHECK_EQ(unesc("abc\"", o, sizeof o), -1);              /* no opening quote */
	CHECK_EQ(unesc("\"a\\x41\"", o, sizeof o), -1);         /* unknown escape */
	CHECK_EQ(unesc("\"a\nb\"", o, sizeof o), -1);           /* raw control character */
	CHECK_EQ(unesc("\"\\u00\"", o, sizeof o), -1);          /* short \u */
	CHECK_EQ(unesc("\"\\u00g1\"", o, sizeof o), -1);        /* not hex */
	CHECK_EQ(unesc("\"\\ud83d\"", o, sizeof o), -1);        /* lone high surrogate */
	CHECK_EQ(unesc("\"\\ud83dx\"", o, sizeof o), -1);       /* high, then no escape */
	CHECK_EQ(unesc("\"\\ud83d\\u0041\"", o, sizeof o), -1); /* high, then no low */
	CHECK_EQ(unesc("\"\\ude00\"", o, sizeof o), -1);        /* lone low surrogate */
	CHECK_EQ(unesc("\"\\ud83d\\ude", o, sizeof o), -1);     /* truncated pair */
	/* The output cap, for plain bytes, escapes and multi-byte sequences. */
	CHECK_EQ(unesc("\"abcd\"", o, 4), 4);
	CHECK_EQ(unesc("\"abcde\"", o, 4), -1);
	CHECK_EQ(unesc("\"abc\\n\"", o, 3), -1);
	CHECK_EQ(unesc("\"ab\\u20ac\"", o, 4), -1);
	CHECK_EQ(unesc("\"a\\ud83d\\ude00\"", o, 4), -1);
}

static void
test_body(void)
{
	struct lp_body b;
	const char *a = "{\"messages\":[],\"status\":410,\"token\":\"SFMy.abc-_\"}";
	CHECK_EQ(lp_body_parse(a, strlen(a), &b), 0);
	CHECK_EQ(b.status, 410);
	CHECK(b.token && b.token_end - b.token == 12);
	CHECK(b.msgs && b.msgs_end - b.msgs == 2);
	const char *c = " { \"status\" : 403 } \n";
	CHECK_EQ(lp_body_parse(c, strlen(c), &b), 0);
	CHECK_EQ(b.status, 403);
	CHECK(!b.token && !b.msgs);
	/* Unknown keys of any shape are skipped; a null token is no token. */
	const char *d = "{\"x\":{\"y\":[1,2,{\"z\":\"]}\"}]},\"token\":null,\"status\":204,"
	                "\"w\":true}";
	CHECK_EQ(lp_body_parse(d, strlen(d), &b), 0);
	CHECK_EQ(b.status, 204);
	CHECK(!b.token);
	CHECK_EQ(lp_body_parse("{}", 2, &b), 0);
	CHECK_EQ(b.status, -1);
	/* Hostile. */
	const char *bad[] = {
	    "",
	    "[]",
	    "{\"status\":200",
	    "{\"status\":200,}",
	    "{\"status\":\"200\"}",
	    "{\"status\":2000}",
	    "{\"status\":-1}",
	    "{\"token\":5}",
	    "{\"messages\":{}}",
	    "{\"messages\":[}",
	    "{\"status\":200} x",
	    "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
	    "]]]]]]]]]}",
	    "{status:200}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK_MSG(lp_body_parse(bad[i], strlen(bad[i]), &b) == -1, "accepted %s", bad[i]);
}

struct seen {
	int n, stop_at;
	char last[256];
	size_t total;
};

static int
seen_cb(void *arg, const char *msg, size_t len)
{
	struct seen *s = arg;
	s->n++;
	s->total += len;
	size_t k = len < sizeof s->last - 1 ? len : sizeof s->last - 1;
	memcpy(s->last, msg, k);
	s->last[k] = 0;
	return s->stop_at && s->n >= s->stop_at;
}

static long
walk(const char *a, size_t cap, long max, struct seen *s)
{
	static char scratch[4096];
	memset(s, 0, sizeof *s);
	return lp_messages_walk(a, a + strlen(a), scratch, cap, max, seen_cb, s);
}

static void
test_messages_walk(void)
{
	struct seen s;
	/* A real poll answer's array (Phoenix 1.7.24 on the wire). */
	const char *a =
	    "[\"[\\\"1\\\",\\\"1\\\",\\\"room:lobby\\\",\\\"phx_reply\\\","
	    "{\\\"response\\\":{},\\\"status\\\":\\\"ok\\\"}]\", "
	    "\"[null,null,\\\"room:lobby\\\",\\\"new_msg\\\",{\\\"body\\\":\\\"h\\u00e9\\\"}]\"]";
	CHECK_EQ(walk(a, 4096, 100, &s), 2);
	CHECK_EQ(s.n, 2);
	CHECK(strcmp(s.last, "[null,null,\"room:lobby\",\"new_msg\",{\"body\":\"h\xc3\xa9\"}]") ==
	      0);
	CHECK_EQ(walk("[]", 4096, 100, &s), 0);
	CHECK_EQ(walk(" [ ] ", 4096, 100, &s), 0);
	CHECK_EQ(walk("[\"\"]", 4096, 100, &s), 1);
	/* The callback stops the walk. */
	memset(&s, 0, sizeof s);
	static char scratch[64];
	s.stop_at = 2;
	const char *three = "[\"a\",\"b\",\"c\"]";
	CHECK_EQ(lp_messages_walk(three, three + strlen(three), scratch, sizeof scratch, 100,
	                          seen_cb, &s),
	         2);
	CHECK_EQ(s.n, 2);
	/* Hostile: truncated (messages before the fault were delivered), not
	 * strings, bad separators, an element too long for the scratch. */
	CHECK_EQ(walk("[\"a\",\"b\"", 4096, 100, &s), -1);
	CHECK_EQ(s.n, 2);
	CHECK_EQ(walk("[\"a\",\"b", 4096, 100, &s), -1);
	CHECK_EQ(s.n, 1);
	CHECK_EQ(walk("[\"a\",", 4096, 100, &s), -1);
	CHECK_EQ(walk("[", 4096, 100, &s), -1);
	CHECK_EQ(walk("", 4096, 100, &s), -1);
	CHECK_EQ(walk("[1]", 4096, 100, &s), -1);
	CHECK_EQ(walk("[[\"a\"]]", 4096, 100, &s), -1);
	CHECK_EQ(walk("[\"a\" \"b\"]", 4096, 100, &s), -1);
	CHECK_EQ(walk("[\"a\",]", 4096, 100, &s), -1);
	CHECK_EQ(walk("[\"\\ud800\"]", 4096, 100, &s), -1);
	CHECK_EQ(walk("[\"abcdef\"]", 5, 100, &s), -1);
	CHECK_EQ(s.n, 0);
	CHECK_EQ(walk("[\"abcde\"]", 5, 100, &s), 1);
	/* Huge counts: 200,000 empty strings against a cap of 100,000. */
	size_t n = 200000, len = 2 + n * 3;
	char *big = malloc(len + 1);
	CHECK(big);
	big[0] = '[';
	for (size_t i = 0; i < n; i++)
		memcpy(big + 1 + 3 * i, i + 1 < n ? "\"\"," : "\"\"]", 3);
	big[len - 1] = 0;
	memset(&s, 0, sizeof s);
	CHECK_EQ(lp_messages_walk(big, big + strlen(big), scratch, sizeof scratch, LP_MAX_MESSAGES,
	                          seen_cb, &s),
	         -1);
	CHECK_EQ(s.n, LP_MAX_MESSAGES);
	memset(&s, 0, sizeof s);
	CHECK_EQ(
	    lp_messages_walk(big, big + strlen(big), scratch, sizeof scratch, (long)n, seen_cb, &s),
	    (long)n);
	free(big);
}

TEST_LIST = {
    TEST(test_http_content_length),
    TEST(test_http_hostile),
    TEST(test_http_chunked),
    TEST(test_unescape),
    TEST(test_body),
    TEST(test_messages_walk),
    TEST_END,
};
