/*
 * HTTPS and wss:// on the endpoint (transports/tls.c) over real sockets on
 * 127.0.0.1, with a real TLS client (OpenSSL) that verifies a self-signed
 * certificate made by the test with the openssl command: HTTP requests
 * (keep-alive, TLS 1.2 and 1.3, ALPN), a large response written through
 * partial writes, a large request body, a WebSocket with a Phoenix channel
 * (replies, and broadcasts that the fastlane writes from another process,
 * through SSL), the plain port unaffected; bad input: plain HTTP sent to the
 * TLS port, a garbage handshake, clients that stop mid-handshake or never
 * start it (the handshake timeout), a client that vanishes mid-response:
 * each closed and counted, nothing left open.  Last, the memory an idle TLS
 * connection costs the server (clients in another process).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "channels/channels.h"
#include "transports/transports.h"
#include "transports/ws.h"

#include "test/harness.h"
#include "test/support/fs.h"

/* ------------------------------------------------------------------ fixture */

static struct {
	tp_endpoint *tp;
	ch_endpoint *ch;
	int port, https_port;
	char root[64];
	char cert[128], key[128], big[128];
	uint32_t http_idle_ms; /* 0: 5000 */
} F;

enum { BIG_SIZE = 7 * 1024 * 1024 + 123 };

static void
hello_route(const tp_http_request *req, tp_response *resp, void *udata)
{
	(void)req;
	(void)udata;
	resp->body = rt_buf_from("{\"hello\":\"world\"}", 17);
}

static void
echo_route(const tp_http_request *req, tp_response *resp, void *udata)
{
	(void)udata;
	resp->body = rt_buf_alloc(64);
	resp->body = rt_buf_appendf(resp->body, "{\"len\":%zu}", req->body_len);
}

static const tp_route routes[] = {
    {"GET", "/api/hello", hello_route, NULL},
    {"POST", "/api/echo", echo_route, NULL},
};

static int
sock_connect(const ch_endpoint *ep, const ch_params *params, const ch_connect_info *info,
             cJSON *assigns)
{
	(void)ep;
	(void)params;
	(void)info;
	(void)assigns;
	return CH_OK;
}

static int
chan_join(ch_chan *ch, void *state, const char *topic, const ch_payload *params)
{
	(void)ch;
	(void)state;
	(void)topic;
	(void)params;
	return CH_OK;
}

static int
chan_in(ch_chan *ch, void *state, const char *event, const ch_payload *payload)
{
	(void)state;
	(void)payload;
	if (strcmp(event, "ping") == 0)
		ch_reply(ch, "ok", "{\"pong\":true}");
	return CH_OK;
}

static const ch_channel_ops test_chan = {.name = "test", .join = chan_join, .handle_in = chan_in};
static const ch_route sock_routes[] = {{"test:*", &test_chan}};
static const ch_socket_handler sock_handler = {
    .connect = sock_connect, .routes = sock_routes, .nroutes = 1};

/* A self-signed certificate for localhost and 127.0.0.1, and its key. */
static void
make_cert(void)
{
	snprintf(F.root, sizeof(F.root), "/tmp/tp_tls_XXXXXX");
	CHECK(mkdtemp(F.root) != NULL);
	snprintf(F.cert, sizeof(F.cert), "%s/cert.pem", F.root);
	snprintf(F.key, sizeof(F.key), "%s/key.pem", F.root);
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
	         "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
	         "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
	         "-keyout %s -out %s >/dev/null 2>&1",
	         F.key, F.cert);
	CHECK_MSG(system(cmd) == 0, "openssl req failed (is the openssl command installed?)");
	/* a static file large enough to fill the socket: partial writes */
	char www[96];
	snprintf(www, sizeof(www), "%s/www", F.root);
	CHECK_EQ(mkdir(www, 0700), 0);
	snprintf(F.big, sizeof(F.big), "%s/big.bin", www);
	FILE *f = fopen(F.big, "w");
	CHECK(f != NULL);
	for (int i = 0; i < BIG_SIZE; i++)
		fputc('a' + (i * 7 + i / 1000) % 26, f);
	fclose(f);
}

static void
fx_start(void)
{
	if (!F.root[0])
		make_cert();
	rt_config rc = {.schedulers = 2, .log_level = RT_LOG_WARNING};
	CHECK_EQ(rt_start(&rc), 0);
	ch_endpoint_opts co = {.handler = &sock_handler, .secret_key_base = "secret"};
	F.ch = ch_endpoint_start(&co);
	CHECK(F.ch != NULL);
	char www[96];
	snprintf(www, sizeof(www), "%s/www", F.root);
	tp_endpoint_opts o = {
	    .bind = "127.0.0.1",
	    .port = TP_PORT_ANY,
	    .socket = F.ch,
	    .routes = routes,
	    .nroutes = 2,
	    .static_dir = www,
	    .http_idle_ms = F.http_idle_ms ? F.http_idle_ms : 5000,
	    .max_body = 1 << 20,
	    .https_port = TP_PORT_ANY,
	    .tls_cert = F.cert,
	    .tls_key = F.key,
	    .tls_handshake_ms = 300,
	};
	F.tp = tp_endpoint_start(&o);
	CHECK(F.tp != NULL);
	F.port = tp_endpoint_port(F.tp);
	F.https_port = tp_endpoint_https_port(F.tp);
	CHECK(F.port > 0);
	CHECK(F.https_port > 0 && F.https_port != F.port);
	/* The clients run on this thread with OpenSSL's own socket BIO (write:
	 * SIGPIPE): blocked here only, so that a SIGPIPE raised on a scheduler
	 * thread (a server write) would still end the test. */
	sigset_t pipe_set;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
}

static void
fx_stop(void)
{
	if (F.tp)
		tp_endpoint_stop(F.tp, 2000);
	F.tp = NULL;
	if (F.ch)
		ch_endpoint_stop(F.ch);
	F.ch = NULL;
	rt_shutdown();
	rm_tree(F.root);
	F.root[0] = 0;
}

static tp_stats
stats(void)
{
	tp_stats s;
	tp_endpoint_stats(F.tp, &s);
	return s;
}

/* ------------------------------------------------------------------ clients */

static int rcvbuf; /* the next connections' SO_RCVBUF, 0: the default */

static int
tcp_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_MSG(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %s",
	          strerror(errno));
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* A TLS client connection (blocking, 5 s timeouts), and what it received. */
typedef struct tcli {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	char *buf;
	size_t len, cap;
} tcli;

/* Connects to the HTTPS port and completes the handshake, verifying the
 * test's certificate for "localhost"; max_version: 0 or TLS1_2_VERSION. */
static void
tcli_open(tcli *c, int max_version)
{
	memset(c, 0, sizeof(*c));
	c->ctx = SSL_CTX_new(TLS_client_method());
	CHECK(c->ctx != NULL);
	CHECK_EQ(SSL_CTX_load_verify_locations(c->ctx, F.cert, NULL), 1);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if (max_version)
		SSL_CTX_set_max_proto_version(c->ctx, max_version);
	static const unsigned char alpn[] = "\x02h2\x08http/1.1";
	SSL_CTX_set_alpn_protos(c->ctx, alpn, sizeof(alpn) - 1);
	c->fd = tcp_connect(F.https_port);
	c->ssl = SSL_new(c->ctx);
	CHECK(c->ssl != NULL);
	SSL_set_tlsext_host_name(c->ssl, "localhost");
	CHECK_EQ(SSL_set1_host(c->ssl, "localhost"), 1);
	SSL_set_fd(c->ssl, c->fd);
	int r = SSL_connect(c->ssl);
	CHECK_MSG(r == 1, "SSL_connect: %d %s", SSL_get_error(c->ssl, r),
	          ERR_reason_error_string(ERR_peek_last_error()));
	CHECK_EQ(SSL_get_verify_result(c->ssl), X509_V_OK);
	const unsigned char *proto = NULL;
	unsigned plen = 0;
	SSL_get0_alpn_selected(c->ssl, &proto, &plen);
	CHECK(plen == 8 && memcmp(proto, "http/1.1", 8) == 0);
	c->cap = 1 << 16;
	c->buf = malloc(c->cap);
	CHECK(c->buf != NULL);
}

static void
tcli_close(tcli *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static void
tcli_send(tcli *c, const void *p, size_t n)
{
	CHECK_EQ(SSL_write(c->ssl, p, (int)n), (long long)n);
}

static void
tcli_sends(tcli *c, const char *s)
{
	tcli_send(c, s, strlen(s));
}

/* Reads more: bytes, 0 at the end, -1 on error or timeout. */
static ssize_t
tcli_fill(tcli *c)
{
	if (c->cap - c->len < 16384) {
		c->cap *= 2;
		c->buf = realloc(c->buf, c->cap);
		CHECK(c->buf != NULL);
	}
	int n = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len));
	if (n > 0) {
		c->len += (size_t)n;
		return n;
	}
	return SSL_get_error(c->ssl, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
}

static void
tcli_consume(tcli *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

/* Reads one response with a Content-Length: its status; the body into
 * *body (malloc'd) and *blen when body is not NULL. */
static int
tcli_response(tcli *c, char **body, size_t *blen)
{
	char *end;
	while (!(c->len && (end = memmem(c->buf, c->len, "\r\n\r\n", 4))))
		CHECK_MSG(tcli_fill(c) > 0, "no response head");
	size_t hlen = (size_t)(end - c->buf) + 4;
	int status = 0;
	CHECK(sscanf(c->buf, "HTTP/1.1 %d", &status) == 1);
	char *cl = strcasestr(c->buf, "content-length:");
	CHECK(cl && cl < end);
	size_t n = strtoul(cl + 15, NULL, 10);
	while (c->len < hlen + n)
		CHECK_MSG(tcli_fill(c) > 0, "short body: %zu of %zu", c->len - hlen, n);
	if (body) {
		*body = malloc(n + 1);
		memcpy(*body, c->buf + hlen, n);
		(*body)[n] = 0;
		*blen = n;
	}
	tcli_consume(c, hlen + n);
	return status;
}

/* WebSocket over c: the upgrade, then frames. */
static void
wss_open(tcli *c)
{
	tcli_open(c, 0);
	tcli_sends(c, "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: localhost\r\n"
	              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	              "Sec-WebSocket-Version: 13\r\n\r\n");
	char *end;
	while (!(c->len && (end = memmem(c->buf, c->len, "\r\n\r\n", 4))))
		CHECK_MSG(tcli_fill(c) > 0, "no upgrade answer");
	CHECK(strncmp(c->buf, "HTTP/1.1 101", 12) == 0);
	tcli_consume(c, (size_t)(end - c->buf) + 4);
}

static void
wss_send_text(tcli *c, const char *s)
{
	static const uint8_t key[4] = {1, 2, 3, 4};
	size_t n = strlen(s), cap = n + 14;
	uint8_t *out = malloc(cap);
	size_t len = tp_ws_frame_encode_masked(out, cap, TP_WS_OP_TEXT, 1, s, n, key);
	CHECK(len <= cap);
	tcli_send(c, out, len);
	free(out);
}

/* Reads frames until a text frame containing needle: 0, or -1. */
static int
wss_expect_text(tcli *c, const char *needle)
{
	for (;;) {
		if (c->len >= 2) {
			tp_ws_frame h;
			size_t need = 0;
			int hl = tp_ws_frame_parse_header((uint8_t *)c->buf, c->len, &h, &need);
			CHECK(hl >= 0);
			if (hl > 0 && c->len >= (size_t)hl + h.payload_len) {
				bool hit =
				    h.opcode == TP_WS_OP_TEXT &&
				    memmem(c->buf + hl, h.payload_len, needle, strlen(needle));
				int op = h.opcode;
				tcli_consume(c, (size_t)hl + h.payload_len);
				if (hit)
					return 0;
				if (op == TP_WS_OP_CLOSE)
					return -1;
				continue;
			}
		}
		if (tcli_fill(c) <= 0)
			return -1;
	}
}

/* Reads frames until a close frame: its code (1005: none), or -1. */
static int
wss_expect_close(tcli *c)
{
	for (;;) {
		if (c->len >= 2) {
			tp_ws_frame h;
			size_t need = 0;
			int hl = tp_ws_frame_parse_header((uint8_t *)c->buf, c->len, &h, &need);
			CHECK(hl >= 0);
			if (hl > 0 && c->len >= (size_t)hl + h.payload_len) {
				int code = -1;
				if (h.opcode == TP_WS_OP_CLOSE)
					code = h.payload_len >= 2 ? (uint8_t)c->buf[hl] << 8 |
					                                (uint8_t)c->buf[hl + 1]
					                          : 1005;
				tcli_consume(c, (size_t)hl + h.payload_len);
				if (code >= 0)
					return code;
				continue;
			}
		}
		if (tcli_fill(c) <= 0)
			return -1;
	}
}

/* The server closes fd (EOF or reset) within 5 s: true. */
static bool
closed_by_server(int fd)
{
	char b[4096];
	for (;;) {
		ssize_t n = recv(fd, b, sizeof(b), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0)
			return false; /* timeout */
	}
}

/* ------------------------------------------------------------------ cases */

static void
test_https_requests(void)
{
	fx_start();
	for (int v = 0; v < 2; v++) { /* TLS 1.3, then 1.2 */
		tcli c;
		tcli_open(&c, v ? TLS1_2_VERSION : 0);
		CHECK_EQ(SSL_version(c.ssl), v ? TLS1_2_VERSION : TLS1_3_VERSION);
		for (int i = 0; i < 3; i++) { /* keep-alive */
			char *body;
			size_t n;
			tcli_sends(&c, "GET /api/hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
			CHECK_EQ(tcli_response(&c, &body, &n), 200);
			CHECK(strcmp(body, "{\"hello\":\"world\"}") == 0);
			free(body);
		}
		/* pipelined, and a body of 200 KB (many records) */
		size_t blen = 200 * 1000;
		char *req = malloc(blen + 256);
		int hl =
		    snprintf(req, 256,
		             "GET /api/hello HTTP/1.1\r\nHost: x\r\n\r\n"
		             "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
		             blen);
		memset(req + hl, 'x', blen);
		tcli_send(&c, req, (size_t)hl + blen);
		free(req);
		CHECK_EQ(tcli_response(&c, NULL, NULL), 200);
		char *body;
		size_t n;
		CHECK_EQ(tcli_response(&c, &body, &n), 200);
		CHECK(strcmp(body, "{\"len\":200000}") == 0);
		free(body);
		tcli_close(&c);
	}
	/* the plain port is still plain HTTP */
	int fd = tcp_connect(F.port);
	const char *get = "GET /api/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	CHECK_EQ(send(fd, get, strlen(get), 0), (long long)strlen(get));
	char b[512] = {0};
	CHECK(recv(fd, b, sizeof(b) - 1, MSG_WAITALL) > 0);
	CHECK(strncmp(b, "HTTP/1.1 200", 12) == 0);
	close(fd);
	WAIT_UNTIL(stats().open == 0, 3000);
	tp_stats s = stats();
	CHECK_EQ(s.tls_accepted, 2);
	CHECK_EQ(s.tls_handshakes, 2);
	CHECK_EQ(s.tls_failed, 0);
	CHECK_EQ(s.accepted, 3);
	fx_stop();
}

/* A 7 MB response: the socket fills, SSL_write blocks mid-record and is
 * retried when writable; the client reads slowly at first.  Byte-exact. */
static void
test_https_large_response(void)
{
	fx_start();
	tcli c;
	rcvbuf = 64 * 1024; /* the server's writes block long before 7 MB */
	tcli_open(&c, 0);
	tcli_sends(&c, "GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
	usleep(200 * 1000); /* let the server hit a full socket */
	char *body;
	size_t n;
	CHECK_EQ(tcli_response(&c, &body, &n), 200);
	CHECK_EQ(n, BIG_SIZE);
	FILE *f = fopen(F.big, "r");
	CHECK(f != NULL);
	char *want = malloc(BIG_SIZE);
	CHECK_EQ(fread(want, 1, BIG_SIZE, f), BIG_SIZE);
	fclose(f);
	CHECK(memcmp(body, want, BIG_SIZE) == 0);
	free(want);
	free(body);
	/* the connection still serves */
	tcli_sends(&c, "GET /api/hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK_EQ(tcli_response(&c, NULL, NULL), 200);
	tcli_close(&c);
	/* pipelined behind large responses: the HTTP input pauses while the
	 * queue is over its high water mark and resumes once it drained; the
	 * requests wait in the socket meanwhile (whole TLS records only are
	 * read, so none waits inside OpenSSL unannounced) */
	tcli_open(&c, 0);
	char req[512] = "";
	for (int i = 0; i < 3; i++)
		strcat(req, "GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
	strcat(req, "GET /api/hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
	tcli_sends(&c, req);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(tcli_response(&c, &body, &n), 200);
		CHECK_EQ(n, BIG_SIZE);
		free(body);
	}
	CHECK_EQ(tcli_response(&c, &body, &n), 200);
	CHECK(strcmp(body, "{\"hello\":\"world\"}") == 0);
	free(body);
	tcli_close(&c);
	/* a client that vanishes in the middle of a large response */
	tcli_open(&c, 0);
	tcli_sends(&c, "GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK(tcli_fill(&c) > 0);
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(c.fd);
	c.fd = -1;
	SSL_free(c.ssl);
	c.ssl = NULL;
	tcli_close(&c);
	WAIT_UNTIL(stats().open == 0, 3000);
	fx_stop();
}

static void *
stop_main(void *tp)
{
	tp_endpoint_stop(tp, 2000);
	return NULL;
}

/* A Phoenix channel over wss://: join, a reply, and 300 broadcasts, which
 * the fastlane queues and writes from its own process (conn_flush_foreign:
 * through SSL, on the connection's thread), in order; then the endpoint's
 * stop: 1001, the close handshake and close_notify over TLS. */
static void
test_wss_channel(void)
{
	fx_start();
	tcli c;
	wss_open(&c);
	wss_send_text(&c, "[\"1\",\"1\",\"test:a\",\"phx_join\",{}]");
	CHECK_EQ(wss_expect_text(&c, "\"phx_reply\""), 0);
	wss_send_text(&c, "[\"1\",\"2\",\"test:a\",\"ping\",{}]");
	CHECK_EQ(wss_expect_text(&c, "\"pong\":true"), 0);
	CHECK_EQ(stats().ws_open, 1);
	for (int i = 0; i < 300; i++) {
		char p[64];
		snprintf(p, sizeof(p), "{\"n\":%d}", i);
		CHECK_EQ(ch_endpoint_broadcast(F.ch, "test:a", "news", p), 0);
	}
	for (int i = 0; i < 300; i++) {
		char p[64];
		snprintf(p, sizeof(p), "\"news\",{\"n\":%d}", i);
		CHECK_MSG(wss_expect_text(&c, p) == 0, "broadcast %d missing", i);
	}
	wss_send_text(&c, "[\"1\",\"3\",\"test:a\",\"ping\",{}]");
	CHECK_EQ(wss_expect_text(&c, "\"pong\":true"), 0);
	tcli_close(&c);
	WAIT_UNTIL(stats().open == 0, 3000);
	/* the endpoint's stop: 1001 through TLS, then close_notify */
	wss_open(&c);
	wss_send_text(&c, "[\"1\",\"1\",\"test:b\",\"phx_join\",{}]");
	CHECK_EQ(wss_expect_text(&c, "\"phx_reply\""), 0);
	pthread_t th;
	int64_t t0 = test_now_ms();
	pthread_create(&th, NULL, stop_main, F.tp);
	CHECK_EQ(wss_expect_close(&c), 1001);
	static const uint8_t key[4] = {9, 8, 7, 6};
	uint8_t close_frame[16];
	size_t n = tp_ws_frame_encode_masked(close_frame, sizeof(close_frame), TP_WS_OP_CLOSE, 1,
	                                     "\x03\xe9", 2, key);
	tcli_send(&c, close_frame, n);
	CHECK_EQ(tcli_fill(&c), 0); /* the server's close_notify, then its end */
	pthread_join(th, NULL);
	F.tp = NULL;
	CHECK_MSG(test_now_ms() - t0 < 1500, "stop took %lld ms", (long long)(test_now_ms() - t0));
	tcli_close(&c);
	fx_stop();
}

/* Bad input on the TLS port: each connection is closed, counted as a failed
 * handshake, and nothing stays open; the port keeps serving. */
static void
test_bad_handshakes(void)
{
	fx_start();
	/* plain HTTP */
	int fd = tcp_connect(F.https_port);
	const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	CHECK_EQ(send(fd, get, strlen(get), 0), (long long)strlen(get));
	CHECK(closed_by_server(fd));
	close(fd);
	/* garbage that looks like a handshake record, then random bytes */
	fd = tcp_connect(F.https_port);
	uint8_t junk[700] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc};
	for (size_t i = 9; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	CHECK_EQ(send(fd, junk, sizeof(junk), 0), (long long)sizeof(junk));
	CHECK(closed_by_server(fd));
	close(fd);
	fd = tcp_connect(F.https_port);
	CHECK_EQ(send(fd, junk + 9, 300, 0), 300);
	CHECK(closed_by_server(fd));
	close(fd);
	WAIT_UNTIL(stats().tls_failed == 3, 3000);
	/* a client that never starts, and one that stops mid-handshake (half a
	 * ClientHello): closed by the handshake timeout (300 ms) */
	int64_t t0 = test_now_ms();
	int idle = tcp_connect(F.https_port);
	fd = tcp_connect(F.https_port);
	uint8_t hello[4] = {0x16, 0x03, 0x01, 0x01};
	CHECK_EQ(send(fd, hello, sizeof(hello), 0), 4);
	CHECK(closed_by_server(idle));
	CHECK(closed_by_server(fd));
	CHECK(test_now_ms() - t0 >= 250);
	close(idle);
	close(fd);
	/* a client that closes in the middle of its handshake */
	fd = tcp_connect(F.https_port);
	CHECK_EQ(send(fd, hello, sizeof(hello), 0), 4);
	close(fd);
	WAIT_UNTIL(stats().tls_failed == 6, 3000);
	WAIT_UNTIL(stats().open == 0, 3000);
	/* the port still serves */
	tcli c;
	tcli_open(&c, 0);
	tcli_sends(&c, "GET /api/hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
	CHECK_EQ(tcli_response(&c, NULL, NULL), 200);
	tcli_close(&c);
	WAIT_UNTIL(stats().open == 0, 3000);
	tp_stats s = stats();
	CHECK_EQ(s.tls_accepted, 7);
	CHECK_EQ(s.tls_handshakes, 1);
	CHECK_EQ(s.tls_failed, 6);
	fx_stop();
}

/* The endpoint refuses a bad pair, as tp_tls_check does. */
static void
test_bad_cert_files(void)
{
	make_cert();
	char err[512];
	CHECK_EQ(tp_tls_check(F.cert, F.key, err, sizeof(err)), 0);
	CHECK_EQ(tp_tls_check("/nonexistent.pem", F.key, err, sizeof(err)), -1);
	CHECK(strstr(err, "/nonexistent.pem") != NULL);
	CHECK_EQ(tp_tls_check(F.key, F.key, err, sizeof(err)), -1); /* a key is no certificate */
	char other[160], cmd[512];
	snprintf(other, sizeof(other), "%s/other.pem", F.root);
	snprintf(cmd, sizeof(cmd),
	         "openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out %s "
	         ">/dev/null 2>&1",
	         other);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(tp_tls_check(F.cert, other, err, sizeof(err)), -1);
	CHECK_MSG(strstr(err, "match") != NULL, "%s", err);
	rt_config rc = {.schedulers = 2, .log_level = RT_LOG_ERROR};
	CHECK_EQ(rt_start(&rc), 0);
	tp_endpoint_opts o = {
	    .port = TP_PORT_ANY, .https_port = TP_PORT_ANY, .tls_cert = F.cert, .tls_key = other};
	CHECK(tp_endpoint_start(&o) == NULL);
	rt_shutdown();
	rm_tree(F.root);
	F.root[0] = 0;
}

static long
rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, rss = 0;
	CHECK(fscanf(f, "%ld %ld", &pages, &rss) == 2);
	fclose(f);
	return rss * sysconf(_SC_PAGESIZE);
}

/* N idle TLS connections (handshake done, one request answered) opened by
 * a child process (so that the clients' memory is not counted): the server's
 * RSS per connection. */
static void
test_idle_tls_memory(void)
{
	enum { N = 500 };
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < 4 * N) {
		rl.rlim_cur = 4 * N < rl.rlim_max ? 4 * N : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	make_cert();
	int to_child[2], from_child[2];
	CHECK_EQ(pipe(to_child), 0);
	CHECK_EQ(pipe(from_child), 0);
	pid_t pid = fork(); /* before any thread: the child only runs clients */
	CHECK(pid >= 0);
	if (pid == 0) {
		close(to_child[1]);
		close(from_child[0]);
		int ports[2];
		if (read(to_child[0], ports, sizeof(ports)) != sizeof(ports))
			_exit(1);
		F.https_port = ports[1];
		static tcli cs[N];
		char ok = 1;
		for (int round = 0; round < 2; round++) {
			int from = round ? 50 : 0, to = round ? N : 50;
			for (int i = from; i < to; i++) {
				tcli_open(&cs[i], 0);
				tcli_sends(&cs[i],
				           "GET /api/hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
				if (tcli_response(&cs[i], NULL, NULL) != 200)
					ok = 0;
			}
			if (write(from_child[1], &ok, 1) != 1)
				_exit(1);
			char go;
			if (read(to_child[0], &go, 1) != 1) /* EOF: done */
				break;
		}
		_exit(0);
	}
	close(to_child[0]);
	close(from_child[1]);
	F.http_idle_ms = 120000; /* idle for as long as the test runs (slower under ASan) */
	fx_start();
	int ports[2] = {F.port, F.https_port};
	CHECK_EQ(write(to_child[1], ports, sizeof(ports)), (long long)sizeof(ports));
	char ok = 0;
	CHECK_EQ(read(from_child[0], &ok, 1), 1); /* 50 to warm up */
	CHECK(ok);
	usleep(100 * 1000);
	long rss0 = rss_bytes();
	CHECK_EQ(write(to_child[1], "g", 1), 1);
	CHECK_EQ(read(from_child[0], &ok, 1), 1);
	CHECK(ok);
	usleep(100 * 1000);
	double rss = (double)(rss_bytes() - rss0) / (N - 50);
	printf("    idle TLS connection (TLS 1.3, after one request): %.0f bytes of RSS each\n",
	       rss);
	CHECK_EQ(stats().open, N);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	CHECK_MSG(rss < 32 * 1024, "%.0f bytes per idle TLS connection", rss);
#endif
	close(to_child[1]);
	int st = 0;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	WAIT_UNTIL(stats().open == 0, 5000);
	fx_stop();
}

TEST_LIST = {
    TEST(test_https_requests),
    TEST(test_https_large_response),
    TEST(test_wss_channel),
    TEST(test_bad_handshakes),
    TEST(test_bad_cert_files),
    TEST(test_idle_tls_memory),
    TEST_END,
};
