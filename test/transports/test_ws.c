/*
 * Unit tests of transports/ws: handshake, the frame reader (RFC 6455 examples,
 * split input, every protocol error and its close code), encoders and the
 * UTF-8 validator.
 */
#include "transports/ws.h"

#include "test/harness.h"

static const uint8_t key_rfc[4] = {0x37, 0xfa, 0x21, 0x3d};

/* ---- a connection emulator: feeds bytes, records events ---- */

typedef struct rec {
	int type, opcode, code;
	size_t len;
	uint8_t *data;
	const char *error;
} rec;

typedef struct conn {
	tp_ws_reader r;
	uint8_t *in; /* input buffer, compacted after every event */
	size_t have, cap;
	rec ev[64];
	int nev;
} conn;

static void
conn_init(conn *c, tp_ws_role role, size_t max_message)
{
	memset(c, 0, sizeof(*c));
	tp_ws_reader_init(&c->r, role, max_message);
}

static void
conn_free(conn *c)
{
	for (int i = 0; i < c->nev; i++)
		free(c->ev[i].data);
	free(c->in);
	tp_ws_reader_free(&c->r);
}

/* Appends p[0, n) to the input and runs the reader until it needs more or failed. */
static void
conn_feed(conn *c, const uint8_t *p, size_t n)
{
	if (c->have + n > c->cap) {
		c->cap = (c->have + n) * 2;
		c->in = realloc(c->in, c->cap);
	}
	memcpy(c->in + c->have, p, n);
	c->have += n;
	for (;;) {
		tp_ws_event ev;
		tp_ws_event_type t = tp_ws_reader_next(&c->r, c->in, c->have, &ev);
		CHECK_EQ(t, ev.type);
		CHECK(ev.consumed <= c->have);
		if (t == TP_WS_EV_NEED_MORE) {
			CHECK(ev.need > c->have - ev.consumed);
		} else {
			CHECK(c->nev < 64);
			rec *e = &c->ev[c->nev++];
			e->type = t;
			e->opcode = ev.opcode;
			e->code = ev.code;
			e->len = ev.len;
			e->error = ev.error;
			e->data = malloc(ev.len + 1);
			if (ev.len)
				memcpy(e->data, ev.data, ev.len);
			e->data[ev.len] = 0;
		}
		memmove(c->in, c->in + ev.consumed, c->have - ev.consumed);
		c->have -= ev.consumed;
		if (t == TP_WS_EV_NEED_MORE || t == TP_WS_EV_ERROR)
			return;
	}
}

/* Feeds p[0, n) in pieces of step bytes. */
static void
conn_feed_steps(conn *c, const uint8_t *p, size_t n, size_t step)
{
	for (size_t i = 0; i < n; i += step)
		conn_feed(c, p + i, n - i < step ? n - i : step);
}

/* A masked client frame appended to a growing byte array. */
typedef struct bytes {
	uint8_t *p;
	size_t len;
} bytes;

static void
add_frame(bytes *b, int opcode, int fin, const void *payload, size_t n)
{
	static const uint8_t key[4] = {0xa1, 0x5b, 0x03, 0xee};
	size_t need = tp_ws_frame_encode_masked(NULL, 0, opcode, fin, payload, n, key);
	b->p = realloc(b->p, b->len + need);
	CHECK_EQ(tp_ws_frame_encode_masked(b->p + b->len, need, opcode, fin, payload, n, key),
	         need);
	b->len += need;
}

/* Runs one server reader over bytes (all at once) and expects a single error. */
static void
expect_error(const uint8_t *p, size_t n, size_t max_message, int code)
{
	conn c;
	conn_init(&c, TP_WS_SERVER, max_message);
	conn_feed(&c, p, n);
	CHECK_MSG(c.nev >= 1 && c.ev[c.nev - 1].type == TP_WS_EV_ERROR,
	          "expected an error event, got %d events", c.nev);
	CHECK_EQ(c.ev[c.nev - 1].code, code);
	CHECK(c.ev[c.nev - 1].error != NULL);
	conn_free(&c);
}

/* ---- handshake ---- */

static void
test_accept_key(void)
{
	char out[29];
	/*
	 * RFC 6455 section 1.3.  (The value "s3pPLMBiTxaQ9kYGzzhZK+xOo0s=" sometimes
	 * quoted for this key is a corruption; SHA-1 and the RFC give this one.)
	 */
	const char *k = "dGhlIHNhbXBsZSBub25jZQ==";
	CHECK_EQ(tp_ws_accept_key(k, strlen(k), out), 0);
	CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	CHECK_EQ(strlen(out), 28);
}

/* WebSockAdapter's message for the last refusal (upgrade_status). */
static char why[256];

static int
upgrade_status(const char *s)
{
	static char buf[2048];
	tp_http_request req;
	size_t n = strlen(s);
	memcpy(buf, s, n);
	CHECK_EQ(tp_http_parse(NULL, buf, n, &req), TP_HTTP_COMPLETE);
	memset(why, 'x', sizeof(why));
	return tp_ws_check_upgrade(&req, why, sizeof(why));
}

static void
test_check_upgrade(void)
{
	char s[1024];
#define REQ(method, ver, upgrade, conn, extra)                                                     \
	(snprintf(s, sizeof(s),                                                                    \
	          "%s /socket/websocket?vsn=2.0.0 HTTP/1.%d\r\nHost: example.com\r\n%s%s%s",       \
	          method, ver, upgrade, conn, extra),                                              \
	 s)
	const char *up = "Upgrade: websocket\r\n";
	const char *co = "Connection: Upgrade\r\n";
	const char *good = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                   "Sec-WebSocket-Version: 13\r\n\r\n";

	CHECK_EQ(upgrade_status(REQ("GET", 1, up, co, good)), 0);
	/* Case-insensitive tokens inside lists. */
	CHECK_EQ(upgrade_status(REQ("GET", 1, "Upgrade: WebSocket\r\n",
	                            "Connection: keep-alive, UPGRADE\r\n", good)),
	         0);
	CHECK_STR(why, "");
	/* Missing key: refused; a key of any other form passes (as Bandit); two keys
	 * are refused (one accept value cannot answer both). */
	CHECK_EQ(upgrade_status(REQ("GET", 1, up, co, "Sec-WebSocket-Version: 13\r\n\r\n")), 400);
	CHECK_STR(why, "'sec-websocket-key' header is absent");
	CHECK_EQ(upgrade_status(REQ("GET", 1, up, co,
	                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n"
	                            "Sec-WebSocket-Version: 13\r\n\r\n")),
	         0);
	CHECK_EQ(upgrade_status(REQ("GET", 1, up, co,
	                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n"
	                            "Sec-WebSocket-Version: 13\r\n\r\n")),
	         0);
	CHECK_EQ(upgrade_status(REQ("GET", 1, up, co,
	                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                            "Sec-WebSocket-Version: 13\r\n\r\n")),
	         400);
	/* Version 8, none or two: 400 (as Phoenix; RFC 6455 would say 426). */
	CHECK_EQ(upgrade_status(REQ("GET", 1, up, co,
	                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                            "Sec-WebSocket-Version: 8\r\n\r\n")),
	         400);
	CHECK_STR(why, "'sec-websocket-version' header must equal '13', got [\"8\"]");
	CHECK_EQ(upgrade_status(
	             REQ("GET", 1, up, co, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")),
	         400);
	CHECK_STR(why, "'sec-websocket-version' header must equal '13', got []");
	CHECK_EQ(
	    upgrade_status(REQ("GET", 1, up, co,
	                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n\r\n")),
	    400);
	CHECK_STR(why, "'sec-websocket-version' header must equal '13', got [\"13\", \"13\"]");
	/* Not GET, not HTTP/1.1, no Upgrade token, no Connection token. */
	CHECK_EQ(upgrade_status(REQ("POST", 1, up, co, good)), 400);
	CHECK_STR(why, "HTTP method POST unsupported");
	CHECK_EQ(upgrade_status(REQ("GET", 0, up, co, good)), 400);
	CHECK_STR(why, "HTTP version HTTP/1.0 unsupported");
	CHECK_EQ(upgrade_status(REQ("GET", 1, "", co, good)), 400);
	CHECK_STR(why, "'upgrade' header must contain 'websocket', got []");
	CHECK_EQ(upgrade_status(REQ("GET", 1, "Upgrade: h2c\r\n", co, good)), 400);
	CHECK_STR(why, "'upgrade' header must contain 'websocket', got [\"h2c\"]");
	CHECK_EQ(upgrade_status(REQ("GET", 1, up, "Connection: keep-alive\r\n", good)), 400);
	CHECK_STR(why, "'connection' header must contain 'upgrade', got [\"keep-alive\"]");
	/* The checks come in WebSockAdapter's order: Connection before Upgrade. */
	CHECK_EQ(upgrade_status(REQ("GET", 1, "", "", good)), 400);
	CHECK_STR(why, "'connection' header must contain 'upgrade', got []");
	/* Values are shown as Elixir inspects them; the message is cut to fit. */
	CHECK_EQ(upgrade_status(REQ("GET", 1, "Upgrade: a\"b\\c\r\n", co, good)), 400);
	CHECK_STR(why, "'upgrade' header must contain 'websocket', got [\"a\\\"b\\\\c\"]");
	char big[600];
	memset(big, 'z', sizeof(big));
	snprintf(big, sizeof(big), "Upgrade: %0500d\r\n", 7);
	CHECK_EQ(upgrade_status(REQ("GET", 1, big, co, good)), 400);
	CHECK_EQ(strlen(why), sizeof(why) - 1);
	/* No Host. */
	snprintf(s, sizeof(s), "GET / HTTP/1.1\r\n%s%s%s", up, co, good);
	CHECK_EQ(upgrade_status(s), 400);
	CHECK_STR(why, "'host' header is absent");
#undef REQ
}

static void
test_handshake_response(void)
{
	const char *k = "dGhlIHNhbXBsZSBub25jZQ==";
	const char *want = "HTTP/1.1 101 Switching Protocols\r\n"
	                   "Upgrade: websocket\r\n"
	                   "Connection: Upgrade\r\n"
	                   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	                   "\r\n";
	char out[512];
	CHECK_EQ(tp_ws_handshake_write(out, sizeof(out), k, strlen(k), NULL), strlen(want));
	CHECK_STR(out, want);
	rt_buf *b = tp_ws_handshake_append(NULL, k, strlen(k), NULL);
	CHECK_EQ(b->len, strlen(want));
	CHECK_MEM(b->data, want, b->len);
	rt_buf_release(b);

	want = "HTTP/1.1 101 Switching Protocols\r\n"
	       "Upgrade: websocket\r\n"
	       "Connection: Upgrade\r\n"
	       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	       "Sec-WebSocket-Protocol: chat\r\n"
	       "\r\n";
	CHECK_EQ(tp_ws_handshake_write(out, sizeof(out), k, strlen(k), "chat"), strlen(want));
	CHECK_STR(out, want);
	CHECK_EQ(tp_ws_handshake_write(out, sizeof(out), k, strlen(k), "bad\r\nX: y"), -1);
	CHECK_EQ(tp_ws_handshake_write(out, 50, k, strlen(k), NULL), -1);
}

/* ---- RFC 6455 5.7 examples ---- */

static void
test_rfc_single_masked_text(void)
{
	uint8_t f[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
	tp_ws_reader r;
	tp_ws_event ev;
	tp_ws_reader_init(&r, TP_WS_SERVER, 0);
	CHECK_EQ(tp_ws_reader_next(&r, f, sizeof(f), &ev), TP_WS_EV_MESSAGE);
	CHECK_EQ(ev.opcode, TP_WS_OP_TEXT);
	CHECK_EQ(ev.len, 5);
	CHECK_MEM(ev.data, "Hello", 5);
	CHECK_EQ(ev.consumed, sizeof(f));
	/* Unfragmented: zero-copy, unmasked in place in the input. */
	CHECK(ev.data == f + 6);
	CHECK_EQ(tp_ws_reader_next(&r, f + sizeof(f), 0, &ev), TP_WS_EV_NEED_MORE);
	CHECK_EQ(ev.consumed, 0);
	CHECK_EQ(ev.need, 2);
	tp_ws_reader_free(&r);

	/* The unmasked example is what a client reads, and a protocol error for a server. */
	uint8_t u[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
	tp_ws_reader_init(&r, TP_WS_CLIENT, 0);
	CHECK_EQ(tp_ws_reader_next(&r, u, sizeof(u), &ev), TP_WS_EV_MESSAGE);
	CHECK_MEM(ev.data, "Hello", 5);
	tp_ws_reader_free(&r);
	/* A client reader refuses masked frames. */
	uint8_t f2[sizeof(f)];
	memcpy(f2, f, sizeof(f));
	tp_ws_reader_init(&r, TP_WS_CLIENT, 0);
	CHECK_EQ(tp_ws_reader_next(&r, f2, sizeof(f2), &ev), TP_WS_EV_ERROR);
	CHECK_EQ(ev.code, 1002);
	tp_ws_reader_free(&r);
}

static void
test_rfc_fragmented_text(void)
{
	/* RFC bytes (unmasked, as a client sees them). */
	uint8_t u[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
	conn c;
	conn_init(&c, TP_WS_CLIENT, 0);
	conn_feed(&c, u, sizeof(u));
	CHECK_EQ(c.nev, 1);
	CHECK_EQ(c.ev[0].type, TP_WS_EV_MESSAGE);
	CHECK_EQ(c.ev[0].opcode, TP_WS_OP_TEXT);
	CHECK_EQ(c.ev[0].len, 5);
	CHECK_MEM(c.ev[0].data, "Hello", 5);
	conn_free(&c);

	/* The same fragments masked, for a server. */
	bytes b = {0};
	add_frame(&b, TP_WS_OP_TEXT, 0, "Hel", 3);
	add_frame(&b, TP_WS_OP_CONT, 1, "lo", 2);
	conn_init(&c, TP_WS_SERVER, 0);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 1);
	CHECK_EQ(c.ev[0].type, TP_WS_EV_MESSAGE);
	CHECK_EQ(c.ev[0].len, 5);
	CHECK_MEM(c.ev[0].data, "Hello", 5);
	CHECK_EQ(c.have, 0);
	conn_free(&c);
	free(b.p);
}

static void
test_rfc_ping_pong(void)
{
	uint8_t ping[] = {0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
	uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
	tp_ws_reader r;
	tp_ws_event ev;
	tp_ws_reader_init(&r, TP_WS_SERVER, 0);
	CHECK_EQ(tp_ws_reader_next(&r, ping, sizeof(ping), &ev), TP_WS_EV_PING);
	CHECK_EQ(ev.len, 5);
	CHECK_MEM(ev.data, "Hello", 5);
	CHECK_EQ(ev.consumed, sizeof(ping));
	CHECK_EQ(tp_ws_reader_next(&r, pong, sizeof(pong), &ev), TP_WS_EV_PONG);
	CHECK_EQ(ev.len, 5);
	CHECK_MEM(ev.data, "Hello", 5);
	tp_ws_reader_free(&r);

	/* RFC unmasked ping, as a client reads it; our encoder produces the same bytes. */
	uint8_t uping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
	rt_buf *b = tp_ws_frame_append(NULL, TP_WS_OP_PING, "Hello", 5);
	CHECK_EQ(b->len, sizeof(uping));
	CHECK_MEM(b->data, uping, sizeof(uping));
	rt_buf_release(b);
	/* And the masked pong with the RFC key. */
	uint8_t out[32];
	CHECK_EQ(tp_ws_frame_encode_masked(out, sizeof(out), TP_WS_OP_PONG, 1, "Hello", 5, key_rfc),
	         sizeof(pong));
	static const uint8_t pong_wire[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
	                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};
	CHECK_MEM(out, pong_wire, sizeof(pong_wire));
}

static void
test_rfc_binary_lengths(void)
{
	/* 256 bytes: 16-bit length; 65536 bytes: 64-bit length. */
	size_t sizes[] = {256, 65536};
	uint8_t want16[] = {0x82, 0x7E, 0x01, 0x00};
	uint8_t want64[] = {0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00};
	for (int s = 0; s < 2; s++) {
		size_t n = sizes[s];
		uint8_t *payload = malloc(n);
		for (size_t i = 0; i < n; i++)
			payload[i] = (uint8_t)(i * 7 + 3);
		/* Server encoding: header bytes exactly as in the RFC. */
		rt_buf *b = tp_ws_frame_append(NULL, TP_WS_OP_BINARY, payload, n);
		if (s == 0) {
			CHECK_EQ(b->len, 4 + n);
			CHECK_MEM(b->data, want16, 4);
		} else {
			CHECK_EQ(b->len, 10 + n);
			CHECK_MEM(b->data, want64, 10);
		}
		CHECK_MEM(b->data + b->len - n, payload, n);
		/* Client reads it. */
		conn c;
		conn_init(&c, TP_WS_CLIENT, 0);
		conn_feed(&c, b->data, b->len);
		CHECK_EQ(c.nev, 1);
		CHECK_EQ(c.ev[0].opcode, TP_WS_OP_BINARY);
		CHECK_EQ(c.ev[0].len, n);
		CHECK_MEM(c.ev[0].data, payload, n);
		conn_free(&c);
		rt_buf_release(b);
		/* Masked, server reads it. */
		bytes m = {0};
		add_frame(&m, TP_WS_OP_BINARY, 1, payload, n);
		CHECK_EQ(m.p[1], s == 0 ? 0xFE : 0xFF);
		conn_init(&c, TP_WS_SERVER, 0);
		conn_feed(&c, m.p, m.len);
		CHECK_EQ(c.nev, 1);
		CHECK_EQ(c.ev[0].len, n);
		CHECK_MEM(c.ev[0].data, payload, n);
		conn_free(&c);
		free(m.p);
		free(payload);
	}
}

/* ---- split input ---- */

static void
test_byte_by_byte(void)
{
	bytes b = {0};
	uint8_t big[300];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	add_frame(&b, TP_WS_OP_TEXT, 1, "single", 6);
	add_frame(&b, TP_WS_OP_TEXT, 0, "frag", 4);
	add_frame(&b, TP_WS_OP_PING, 1, "p1", 2);
	add_frame(&b, TP_WS_OP_CONT, 0, "men", 3);
	add_frame(&b, TP_WS_OP_CONT, 1, "ted", 3);
	add_frame(&b, TP_WS_OP_BINARY, 1, big, sizeof(big));
	add_frame(&b, TP_WS_OP_BINARY, 1, "", 0);
	add_frame(&b, TP_WS_OP_CLOSE, 1,
	          "\x03\xe8"
	          "bye",
	          5);

	for (size_t step = 1; step <= 7; step++) {
		conn c;
		conn_init(&c, TP_WS_SERVER, 0);
		conn_feed_steps(&c, b.p, b.len, step);
		CHECK_EQ(c.nev, 6);
		CHECK_EQ(c.ev[0].type, TP_WS_EV_MESSAGE);
		CHECK_STR((char *)c.ev[0].data, "single");
		CHECK_EQ(c.ev[1].type, TP_WS_EV_PING);
		CHECK_STR((char *)c.ev[1].data, "p1");
		CHECK_EQ(c.ev[2].type, TP_WS_EV_MESSAGE);
		CHECK_EQ(c.ev[2].opcode, TP_WS_OP_TEXT);
		CHECK_STR((char *)c.ev[2].data, "fragmented");
		CHECK_EQ(c.ev[3].type, TP_WS_EV_MESSAGE);
		CHECK_EQ(c.ev[3].opcode, TP_WS_OP_BINARY);
		CHECK_EQ(c.ev[3].len, sizeof(big));
		CHECK_MEM(c.ev[3].data, big, sizeof(big));
		CHECK_EQ(c.ev[4].type, TP_WS_EV_MESSAGE);
		CHECK_EQ(c.ev[4].len, 0);
		CHECK_EQ(c.ev[5].type, TP_WS_EV_CLOSE);
		CHECK_EQ(c.ev[5].code, 1000);
		CHECK_STR((char *)c.ev[5].data, "bye");
		CHECK_EQ(c.have, 0);
		conn_free(&c);
	}
	free(b.p);
}

static void
test_need_hint(void)
{
	bytes b = {0};
	uint8_t payload[1000] = {0};
	add_frame(&b, TP_WS_OP_BINARY, 1, payload, sizeof(payload)); /* 2+2+4 header */
	tp_ws_reader r;
	tp_ws_event ev;
	tp_ws_reader_init(&r, TP_WS_SERVER, 0);
	CHECK_EQ(tp_ws_reader_next(&r, b.p, 1, &ev), TP_WS_EV_NEED_MORE);
	CHECK_EQ(ev.need, 2);
	CHECK_EQ(tp_ws_reader_next(&r, b.p, 3, &ev), TP_WS_EV_NEED_MORE);
	CHECK_EQ(ev.need, 8);
	CHECK_EQ(tp_ws_reader_next(&r, b.p, 8, &ev), TP_WS_EV_NEED_MORE);
	CHECK_EQ(ev.need, 1008);
	CHECK_EQ(ev.consumed, 0);
	CHECK_EQ(tp_ws_reader_next(&r, b.p, b.len, &ev), TP_WS_EV_MESSAGE);
	CHECK_EQ(ev.consumed, 1008);
	tp_ws_reader_free(&r);
	free(b.p);
}

/* ---- protocol errors ---- */

static void
test_error_unmasked(void)
{
	uint8_t f[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
	expect_error(f, 2, 0, 1002); /* known from the first two bytes */
	expect_error(f, sizeof(f), 0, 1002);
}

static void
test_error_rsv_opcode(void)
{
	for (int rsv = 1; rsv < 8; rsv++) {
		uint8_t f[] = {(uint8_t)(0x81 | (rsv << 4)), 0x80, 0, 0, 0, 0};
		expect_error(f, sizeof(f), 0, 1002);
	}
	int bad_ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
	for (size_t i = 0; i < sizeof(bad_ops) / sizeof(bad_ops[0]); i++) {
		uint8_t f[] = {(uint8_t)(0x80 | bad_ops[i]), 0x80, 0, 0, 0, 0};
		expect_error(f, sizeof(f), 0, 1002);
	}
}

static void
test_error_control_frames(void)
{
	uint8_t p126[126] = {0};
	bytes b = {0};
	add_frame(&b, TP_WS_OP_PING, 1, p126, 126);
	expect_error(b.p, 2, 0, 1002); /* before the payload */
	expect_error(b.p, b.len, 0, 1002);
	free(b.p);
	/* A 125-byte ping is fine. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_PING, 1, p126, 125);
	conn c;
	conn_init(&c, TP_WS_SERVER, 0);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 1);
	CHECK_EQ(c.ev[0].type, TP_WS_EV_PING);
	CHECK_EQ(c.ev[0].len, 125);
	conn_free(&c);
	free(b.p);
	/* Fragmented ping / pong / close. */
	int ops[] = {TP_WS_OP_PING, TP_WS_OP_PONG, TP_WS_OP_CLOSE};
	for (int i = 0; i < 3; i++) {
		b = (bytes){0};
		add_frame(&b, ops[i], 0, "ab", 2);
		expect_error(b.p, b.len, 0, 1002);
		free(b.p);
	}
}

static void
test_error_fragment_order(void)
{
	/* Continuation without a start. */
	bytes b = {0};
	add_frame(&b, TP_WS_OP_CONT, 1, "x", 1);
	expect_error(b.p, b.len, 0, 1002);
	free(b.p);
	/* Continuation after a complete message. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_TEXT, 1, "done", 4);
	add_frame(&b, TP_WS_OP_CONT, 1, "x", 1);
	expect_error(b.p, b.len, 0, 1002);
	free(b.p);
	/* Text (or binary) while a fragmented message is in progress. */
	int ops[] = {TP_WS_OP_TEXT, TP_WS_OP_BINARY};
	for (int i = 0; i < 2; i++) {
		b = (bytes){0};
		add_frame(&b, TP_WS_OP_TEXT, 0, "part", 4);
		add_frame(&b, ops[i], 1, "new", 3);
		expect_error(b.p, b.len, 0, 1002);
		free(b.p);
	}
}

static void
test_ping_between_fragments(void)
{
	bytes b = {0};
	add_frame(&b, TP_WS_OP_BINARY, 0, "ab", 2);
	add_frame(&b, TP_WS_OP_PING, 1, "ping!", 5);
	add_frame(&b, TP_WS_OP_CONT, 0, "cd", 2);
	add_frame(&b, TP_WS_OP_PONG, 1, "", 0);
	add_frame(&b, TP_WS_OP_CONT, 1, "ef", 2);
	conn c;
	conn_init(&c, TP_WS_SERVER, 0);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 3);
	CHECK_EQ(c.ev[0].type, TP_WS_EV_PING);
	CHECK_EQ(c.ev[0].len, 5);
	CHECK_MEM(c.ev[0].data, "ping!", 5);
	CHECK_EQ(c.ev[1].type, TP_WS_EV_PONG);
	CHECK_EQ(c.ev[1].len, 0);
	CHECK_EQ(c.ev[2].type, TP_WS_EV_MESSAGE);
	CHECK_EQ(c.ev[2].opcode, TP_WS_OP_BINARY);
	CHECK_EQ(c.ev[2].len, 6);
	CHECK_MEM(c.ev[2].data, "abcdef", 6);
	/* A second fragmented message reuses the reader correctly. */
	free(b.p);
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_TEXT, 0, "x", 1);
	add_frame(&b, TP_WS_OP_CONT, 1, "y", 1);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 4);
	CHECK_EQ(c.ev[3].opcode, TP_WS_OP_TEXT);
	CHECK_EQ(c.ev[3].len, 2);
	CHECK_MEM(c.ev[3].data, "xy", 2);
	conn_free(&c);
	free(b.p);
}

static void
test_error_too_big(void)
{
	uint8_t payload[200] = {0};
	/* Single frame over max_message: only the header has arrived. */
	bytes b = {0};
	add_frame(&b, TP_WS_OP_BINARY, 1, payload, 101);
	expect_error(b.p, 6, 100, 1009);
	free(b.p);
	/* Exactly max_message is fine. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_BINARY, 1, payload, 100);
	conn c;
	conn_init(&c, TP_WS_SERVER, 100);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 1);
	CHECK_EQ(c.ev[0].len, 100);
	conn_free(&c);
	free(b.p);
	/* Sum of fragments: detected from the header of the fragment that overflows. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_TEXT, 0, payload, 60);
	size_t first = b.len;
	add_frame(&b, TP_WS_OP_CONT, 1, payload, 41);
	expect_error(b.p, first + 6, 100, 1009);
	free(b.p);
	/* A 64-bit length announcing 2^40 bytes, with the default limit. */
	uint8_t huge[] = {0x82, 0xFF, 0, 0, 0x01, 0, 0, 0, 0, 0, 1, 2, 3, 4};
	expect_error(huge, sizeof(huge), 0, 1009);
	/* A 64-bit length with the high bit set. */
	uint8_t neg[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
	expect_error(neg, sizeof(neg), 0, 1002);
}

static void
test_error_utf8(void)
{
	/* Invalid UTF-8 in one frame. */
	bytes b = {0};
	add_frame(&b, TP_WS_OP_TEXT, 1, "ab\xC0\x80", 4);
	expect_error(b.p, b.len, 0, 1007);
	free(b.p);
	/* Truncated at the end of a final frame. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_TEXT, 1, "ab\xE2\x82", 4);
	expect_error(b.p, b.len, 0, 1007);
	free(b.p);
	/* Binary messages are not checked. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_BINARY, 1, "\xC0\x80\xFF", 3);
	conn c;
	conn_init(&c, TP_WS_SERVER, 0);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 1);
	CHECK_EQ(c.ev[0].type, TP_WS_EV_MESSAGE);
	conn_free(&c);
	free(b.p);
}

static void
test_utf8_split_across_fragments(void)
{
	/* U+1F600 (F0 9F 98 80) split 1+3, 2+2, 3+1, and over three fragments. */
	const uint8_t cp[] = {0xF0, 0x9F, 0x98, 0x80};
	for (size_t cut = 1; cut < 4; cut++) {
		bytes b = {0};
		add_frame(&b, TP_WS_OP_TEXT, 0, cp, cut);
		add_frame(&b, TP_WS_OP_CONT, 1, cp + cut, 4 - cut);
		conn c;
		conn_init(&c, TP_WS_SERVER, 0);
		conn_feed(&c, b.p, b.len);
		CHECK_EQ(c.nev, 1);
		CHECK_EQ(c.ev[0].type, TP_WS_EV_MESSAGE);
		CHECK_EQ(c.ev[0].len, 4);
		CHECK_MEM(c.ev[0].data, cp, 4);
		conn_free(&c);
		free(b.p);
	}
	bytes b = {0};
	add_frame(&b, TP_WS_OP_TEXT, 0, cp, 1);
	add_frame(&b, TP_WS_OP_CONT, 0, cp + 1, 2);
	add_frame(&b, TP_WS_OP_CONT, 0, "", 0);
	add_frame(&b, TP_WS_OP_CONT, 1, cp + 3, 1);
	conn c;
	conn_init(&c, TP_WS_SERVER, 0);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 1);
	CHECK_EQ(c.ev[0].len, 4);
	conn_free(&c);
	free(b.p);
	/* A code point left unfinished by the final fragment is invalid. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_TEXT, 0, cp, 2);
	add_frame(&b, TP_WS_OP_CONT, 1, cp + 2, 1);
	expect_error(b.p, b.len, 0, 1007);
	free(b.p);
}

static void
test_utf8_invalid_in_first_fragment(void)
{
	/* Only the first (non-final) fragment has arrived: the error is already known. */
	bytes b = {0};
	add_frame(&b, TP_WS_OP_TEXT, 0, "ok\xED\xA0\x80", 5); /* a surrogate */
	conn c;
	conn_init(&c, TP_WS_SERVER, 0);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 1);
	CHECK_EQ(c.ev[0].type, TP_WS_EV_ERROR);
	CHECK_EQ(c.ev[0].code, 1007);
	/* The error is sticky. */
	tp_ws_event ev;
	uint8_t more[] = {0x80, 0x80, 0, 0, 0, 0};
	CHECK_EQ(tp_ws_reader_next(&c.r, more, sizeof(more), &ev), TP_WS_EV_ERROR);
	CHECK_EQ(ev.code, 1007);
	CHECK_EQ(ev.consumed, 0);
	conn_free(&c);
	free(b.p);
}

static void
test_close_frames(void)
{
	/* 1-byte payload: known from the header. */
	bytes b = {0};
	add_frame(&b, TP_WS_OP_CLOSE, 1, "\x03", 1);
	expect_error(b.p, 2, 0, 1002);
	expect_error(b.p, b.len, 0, 1002);
	free(b.p);
	/* Codes not allowed on the wire. */
	int bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t pl[2] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
		b = (bytes){0};
		add_frame(&b, TP_WS_OP_CLOSE, 1, pl, 2);
		expect_error(b.p, b.len, 0, 1002);
		free(b.p);
		CHECK(!tp_ws_close_code_ok(bad[i]));
	}
	/* Allowed codes. */
	int good[] = {1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4000, 4999};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint8_t pl[4] = {(uint8_t)(good[i] >> 8), (uint8_t)good[i], 'o', 'k'};
		b = (bytes){0};
		add_frame(&b, TP_WS_OP_CLOSE, 1, pl, 4);
		conn c;
		conn_init(&c, TP_WS_SERVER, 0);
		conn_feed(&c, b.p, b.len);
		CHECK_EQ(c.nev, 1);
		CHECK_EQ(c.ev[0].type, TP_WS_EV_CLOSE);
		CHECK_EQ(c.ev[0].code, good[i]);
		CHECK_EQ(c.ev[0].len, 2);
		CHECK_STR((char *)c.ev[0].data, "ok");
		conn_free(&c);
		free(b.p);
	}
	/* Reason not UTF-8. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_CLOSE, 1, "\x03\xe8\xff", 3);
	expect_error(b.p, b.len, 0, 1007);
	free(b.p);
	/* Empty close: 1005. */
	b = (bytes){0};
	add_frame(&b, TP_WS_OP_CLOSE, 1, "", 0);
	conn c;
	conn_init(&c, TP_WS_SERVER, 0);
	conn_feed(&c, b.p, b.len);
	CHECK_EQ(c.nev, 1);
	CHECK_EQ(c.ev[0].type, TP_WS_EV_CLOSE);
	CHECK_EQ(c.ev[0].code, 1005);
	CHECK_EQ(c.ev[0].len, 0);
	conn_free(&c);
	free(b.p);
	/* The standalone parser. */
	int code;
	const uint8_t *reason;
	size_t rl;
	CHECK_EQ(tp_ws_parse_close((const uint8_t *)"\x0b\xb8hi", 4, &code, &reason, &rl), 0);
	CHECK_EQ(code, 3000);
	CHECK_EQ(rl, 2);
	CHECK_MEM(reason, "hi", 2);
	CHECK_EQ(tp_ws_parse_close((const uint8_t *)"\x03", 1, &code, &reason, &rl), 1002);
}

/* ---- encoders ---- */

static void
test_frame_header_lengths(void)
{
	static const struct {
		uint64_t len;
		size_t hl;
		uint8_t bytes[10];
	} cases[] = {
	    {0, 2, {0x81, 0x00}},
	    {125, 2, {0x81, 0x7D}},
	    {126, 4, {0x81, 0x7E, 0x00, 0x7E}},
	    {65535, 4, {0x81, 0x7E, 0xFF, 0xFF}},
	    {65536, 10, {0x81, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
	    {UINT64_C(0x0123456789ABCDEF),
	     10,
	     {0x81, 0x7F, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF}},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t out[10];
		memset(out, 0xAA, sizeof(out));
		size_t hl = tp_ws_frame_header(out, TP_WS_OP_TEXT, 1, cases[i].len);
		CHECK_EQ(hl, cases[i].hl);
		CHECK_MEM(out, cases[i].bytes, hl);
		/* And the decoder agrees. */
		tp_ws_frame f;
		size_t need = 0;
		CHECK_EQ(tp_ws_frame_parse_header(out, hl, &f, &need), (int)hl);
		CHECK_EQ(f.payload_len, cases[i].len);
		CHECK_EQ(f.fin, 1);
		CHECK_EQ(f.opcode, TP_WS_OP_TEXT);
		CHECK_EQ(f.masked, 0);
		CHECK_EQ(tp_ws_frame_parse_header(out, hl - 1, &f, &need), 0);
		CHECK_EQ(need, hl > 2 ? hl : 2);
	}
	/* FIN clear, other opcodes. */
	uint8_t out[10];
	CHECK_EQ(tp_ws_frame_header(out, TP_WS_OP_BINARY, 0, 3), 2);
	CHECK_EQ(out[0], 0x02);
	CHECK_EQ(tp_ws_frame_header(out, TP_WS_OP_CLOSE, 1, 2), 2);
	CHECK_EQ(out[0], 0x88);

	/* Whole frames into an rt_buf, appended after existing bytes. */
	rt_buf *b = rt_buf_from("Z", 1);
	b = tp_ws_frame_append(b, TP_WS_OP_TEXT, "hi", 2);
	CHECK_EQ(b->len, 5);
	CHECK_MEM(b->data, "Z\x81\x02hi", 5);
	rt_buf_release(b);
	/* Control payloads are capped at 125. */
	uint8_t big[200] = {0};
	b = tp_ws_frame_append(NULL, TP_WS_OP_PONG, big, sizeof(big));
	CHECK_EQ(b->len, 127);
	CHECK_EQ(b->data[1], 125);
	rt_buf_release(b);
}

static void
test_close_encoder(void)
{
	rt_buf *b = tp_ws_close_append(NULL, 1000, "bye", 3);
	CHECK_EQ(b->len, 7);
	CHECK_MEM(b->data,
	          "\x88\x05\x03\xe8"
	          "bye",
	          7);
	rt_buf_release(b);
	/* Not sendable: empty payload. */
	b = tp_ws_close_append(NULL, 1005, "x", 1);
	CHECK_EQ(b->len, 2);
	CHECK_MEM(b->data, "\x88\x00", 2);
	rt_buf_release(b);
	/* A long reason of 2-byte characters is cut on a character boundary. */
	char reason[300];
	for (int i = 0; i < 150; i++) {
		reason[2 * i] = (char)0xC3;
		reason[2 * i + 1] = (char)0xA9; /* é */
	}
	b = tp_ws_close_append(NULL, 4000, reason, sizeof(reason));
	CHECK(b->len <= 2 + 125);
	CHECK_EQ(b->data[1], 2 + 122);
	int code;
	const uint8_t *r;
	size_t rl;
	CHECK_EQ(tp_ws_parse_close(b->data + 2, b->len - 2, &code, &r, &rl), 0);
	CHECK_EQ(code, 4000);
	CHECK_EQ(rl, 122);
	rt_buf_release(b);
	/* ASCII reason: exactly 123 bytes kept. */
	memset(reason, 'a', sizeof(reason));
	b = tp_ws_close_append(NULL, 1001, reason, sizeof(reason));
	CHECK_EQ(b->len, 2 + 125);
	rt_buf_release(b);
}

static void
test_masked_round_trip(void)
{
	size_t sizes[] = {0, 1, 7, 8, 9, 125, 126, 127, 1000, 65535, 65536, 70001};
	uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t n = sizes[s];
		uint8_t *p = malloc(n + 1);
		for (size_t i = 0; i < n; i++)
			p[i] = (uint8_t)('a' + i % 26);
		size_t need = tp_ws_frame_encode_masked(NULL, 0, TP_WS_OP_TEXT, 1, p, n, key);
		CHECK_EQ(need, n + 4 + (n < 126 ? 2 : n < 65536 ? 4 : 10));
		uint8_t *out = malloc(need);
		/* Too small: nothing is written. */
		CHECK_EQ(tp_ws_frame_encode_masked(out, need - 1, TP_WS_OP_TEXT, 1, p, n, key),
		         need);
		CHECK_EQ(tp_ws_frame_encode_masked(out, need, TP_WS_OP_TEXT, 1, p, n, key), need);
		CHECK(out[1] & 0x80);
		tp_ws_reader r;
		tp_ws_event ev;
		tp_ws_reader_init(&r, TP_WS_SERVER, 0);
		CHECK_EQ(tp_ws_reader_next(&r, out, need, &ev), TP_WS_EV_MESSAGE);
		CHECK_EQ(ev.len, n);
		if (n)
			CHECK_MEM(ev.data, p, n);
		CHECK_EQ(ev.consumed, need);
		tp_ws_reader_free(&r);
		free(out);
		free(p);
	}
	/* Unmasking with an offset continues the key phase. */
	uint8_t d[10], e[10];
	for (int i = 0; i < 10; i++)
		d[i] = e[i] = (uint8_t)i;
	tp_ws_unmask(d, 10, key, 0);
	tp_ws_unmask(e, 3, key, 0);
	tp_ws_unmask(e + 3, 7, key, 3);
	CHECK_MEM(d, e, 10);
}

/* ---- UTF-8 ---- */

static void
test_utf8_table(void)
{
	static const struct {
		const char *s;
		size_t n;
		int valid;
	} t[] = {
	    {"", 0, 1},
	    {"hello, world", 12, 1},
	    {"\x7F", 1, 1},
	    {"\xC2\x80", 2, 1},         /* U+0080 */
	    {"\xDF\xBF", 2, 1},         /* U+07FF */
	    {"\xE0\xA0\x80", 3, 1},     /* U+0800 */
	    {"\xE2\x82\xAC", 3, 1},     /* € */
	    {"\xED\x9F\xBF", 3, 1},     /* U+D7FF */
	    {"\xEE\x80\x80", 3, 1},     /* U+E000 */
	    {"\xEF\xBF\xBF", 3, 1},     /* U+FFFF */
	    {"\xF0\x90\x80\x80", 4, 1}, /* U+10000 */
	    {"\xF0\x9F\x98\x80", 4, 1}, /* U+1F600 */
	    {"\xF4\x8F\xBF\xBF", 4, 1}, /* U+10FFFF */
	    {"a\0b", 3, 1},             /* NUL is a code point */
	    {"\xC0\x80", 2, 0},         /* overlong NUL */
	    {"\xC1\xBF", 2, 0},         /* overlong */
	    {"\xE0\x80\x80", 3, 0},     /* overlong */
	    {"\xE0\x9F\xBF", 3, 0},     /* overlong */
	    {"\xF0\x80\x80\x80", 4, 0}, /* overlong */
	    {"\xF0\x8F\xBF\xBF", 4, 0}, /* overlong */
	    {"\xED\xA0\x80", 3, 0},     /* U+D800 */
	    {"\xED\xBF\xBF", 3, 0},     /* U+DFFF */
	    {"\xF4\x90\x80\x80", 4, 0}, /* U+110000 */
	    {"\xF5\x80\x80\x80", 4, 0},
	    {"\xFF", 1, 0},
	    {"\xFE", 1, 0},
	    {"\x80", 1, 0}, /* stray continuation */
	    {"a\xBF", 2, 0},
	    {"\xC2", 1, 0},         /* truncated */
	    {"\xE2\x82", 2, 0},     /* truncated */
	    {"\xF0\x9F\x98", 3, 0}, /* truncated */
	    {"\xC2\x41", 2, 0},     /* bad continuation */
	    {"\xE2\x82\x41", 3, 0},
	    {"0123456789abcdef\xC0", 17, 0}, /* after the ASCII fast path */
	    {"0123456789abcde\xE2\x82\xAC", 18, 1},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		CHECK_MSG(tp_ws_utf8_valid((const uint8_t *)t[i].s, t[i].n) == t[i].valid,
		          "case %zu: want %d", i, t[i].valid);

	/* Incremental: every split of a valid string ends in ACCEPT, mid-points are not REJECT. */
	const char *s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z";
	size_t n = strlen(s);
	for (size_t cut = 0; cut <= n; cut++) {
		uint32_t st = tp_ws_utf8_feed(TP_WS_UTF8_ACCEPT, (const uint8_t *)s, cut);
		CHECK(st != TP_WS_UTF8_REJECT);
		st = tp_ws_utf8_feed(st, (const uint8_t *)s + cut, n - cut);
		CHECK_EQ(st, TP_WS_UTF8_ACCEPT);
	}
	CHECK(tp_ws_utf8_feed(TP_WS_UTF8_ACCEPT, (const uint8_t *)"\xF0", 1) != TP_WS_UTF8_ACCEPT);
	CHECK(tp_ws_utf8_feed(TP_WS_UTF8_ACCEPT, (const uint8_t *)"\xF0", 1) != TP_WS_UTF8_REJECT);
	/* REJECT is sticky. */
	CHECK_EQ(tp_ws_utf8_feed(TP_WS_UTF8_REJECT, (const uint8_t *)"ok", 2), TP_WS_UTF8_REJECT);

	/* Exhaustive two-byte and three-byte agreement with the definition. */
	for (unsigned a = 0; a < 256; a++)
		for (unsigned b2 = 0; b2 < 256; b2++) {
			uint8_t p[2] = {(uint8_t)a, (uint8_t)b2};
			int want;
			if (a < 0x80)
				want = b2 < 0x80;
			else
				want = a >= 0xC2 && a <= 0xDF && (b2 & 0xC0) == 0x80;
			CHECK_MSG(tp_ws_utf8_valid(p, 2) == want, "%02x %02x", a, b2);
		}
	for (unsigned cp = 0x800; cp <= 0xFFFF; cp++) {
		uint8_t p[3] = {(uint8_t)(0xE0 | (cp >> 12)), (uint8_t)(0x80 | ((cp >> 6) & 0x3F)),
		                (uint8_t)(0x80 | (cp & 0x3F))};
		int want = !(cp >= 0xD800 && cp <= 0xDFFF);
		CHECK_MSG(tp_ws_utf8_valid(p, 3) == want, "U+%04X", cp);
	}
}

/* Random bytes never crash the reader or make it read outside the input. */
static void
test_fuzz_no_crash(void)
{
	uint32_t seed = 777;
	for (int iter = 0; iter < 20000; iter++) {
		seed = seed * 1103515245 + 12345;
		size_t n = (seed >> 8) % 40;
		uint8_t *p = malloc(n ? n : 1);
		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245 + 12345;
			p[i] = (uint8_t)(seed >> 16);
		}
		if (n >= 2 && (iter & 1)) { /* bias toward plausible headers */
			p[0] = (uint8_t)((p[0] & 0x8F));
			p[1] = (uint8_t)(0x80 | (p[1] & 0x1F));
		}
		tp_ws_reader r;
		tp_ws_event ev;
		tp_ws_reader_init(&r, TP_WS_SERVER, 64);
		size_t off = 0;
		for (int k = 0; k < 50; k++) {
			tp_ws_event_type t = tp_ws_reader_next(&r, p + off, n - off, &ev);
			CHECK(ev.consumed <= n - off);
			off += ev.consumed;
			if (t == TP_WS_EV_NEED_MORE || t == TP_WS_EV_ERROR)
				break;
		}
		tp_ws_reader_free(&r);
		free(p);
	}
}

TEST_LIST = {
    TEST(test_accept_key),
    TEST(test_check_upgrade),
    TEST(test_handshake_response),
    TEST(test_rfc_single_masked_text),
    TEST(test_rfc_fragmented_text),
    TEST(test_rfc_ping_pong),
    TEST(test_rfc_binary_lengths),
    TEST(test_byte_by_byte),
    TEST(test_need_hint),
    TEST(test_error_unmasked),
    TEST(test_error_rsv_opcode),
    TEST(test_error_control_frames),
    TEST(test_error_fragment_order),
    TEST(test_ping_between_fragments),
    TEST(test_error_too_big),
    TEST(test_error_utf8),
    TEST(test_utf8_split_across_fragments),
    TEST(test_utf8_invalid_in_first_fragment),
    TEST(test_close_frames),
    TEST(test_frame_header_lengths),
    TEST(test_close_encoder),
    TEST(test_masked_round_trip),
    TEST(test_utf8_table),
    TEST(test_fuzz_no_crash),
    TEST_END,
};
