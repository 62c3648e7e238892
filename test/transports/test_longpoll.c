/*
 * The long-poll transport over real TCP sockets on 127.0.0.1 (a free port),
 * with raw HTTP and a real Phoenix socket (channels/), a 300 ms window:
 * a new session (410 + token), joins and events by POST, replies and pushes
 * by GET, 204 after the window, ndjson batches in order and cut at 100
 * lines, the CORS preflight, 400 for other methods, 403 for a refused
 * connect and an unsupported vsn, garbage / forged / ended-session tokens,
 * expiry of an unpolled session (its channels end), the buffer limit (slow
 * consumer), the body limit (413), the sessions limit (503), a poll replaced
 * by a second one (204 at once), invalid base64 (400, the session stays),
 * binary frames dropped and counted, /api/disconnect's path (the socket
 * id's "disconnect") answering a waiting poll at once, and another node of
 * the cluster driving a session through CL_SVC_LONGPOLL frames (its bad
 * frames refused and counted).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <msgpack.h>

#include "channels/channels.h"
#include "transports/endpoint.h"
#include "transports/longpoll.h"
#include "transports/transports.h"

#include "test/harness.h"

#define WINDOW_MS 300

/* ------------------------------------------------------------------ fixture */

static struct {
	tp_endpoint *tp;
	ch_endpoint *ch;
	int port;
} F;

/* Channels ended (terminate called): written by channel processes. */
static _Atomic int chans_ended;

static int
sock_connect(const ch_endpoint *ep, const ch_params *params, const ch_connect_info *info,
             cJSON *assigns)
{
	(void)ep;
	const char *tok = ch_params_get(params, "token");
	if (tok && strcmp(tok, "bad") == 0)
		return CH_ERROR;
	if (strcmp(info->transport, "longpoll") != 0)
		return CH_ERROR;
	const char *user = ch_params_get(params, "user");
	if (user)
		cJSON_AddStringToObject(assigns, "user", user);
	return CH_OK;
}

static size_t
sock_id(const cJSON *assigns, char *buf, size_t cap)
{
	const cJSON *u = cJSON_GetObjectItemCaseSensitive(assigns, "user");
	if (!cJSON_IsString(u))
		return 0;
	return (size_t)snprintf(buf, cap, "user:%s", u->valuestring);
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
	if (strcmp(event, "ping") == 0) {
		ch_reply(ch, "ok", "{\"pong\":true}");
	} else if (strcmp(event, "push") == 0) {
		ch_push(ch, "pushed", "{\"n\":1}");
	} else if (strcmp(event, "flood") == 0) {
		const cJSON *n = ch_payload_get(payload, "n");
		for (int i = 0; cJSON_IsNumber(n) && i < n->valueint; i++)
			ch_push(ch, "flood", "{\"x\":\"0123456789\"}");
	} else if (strcmp(event, "bin") == 0) {
		ch_reply_binary(ch, "ok", "\x01\x02", 2);
	}
	return CH_OK;
}

static void
chan_terminate(ch_chan *ch, void *state, const char *reason)
{
	(void)ch;
	(void)state;
	(void)reason;
	atomic_fetch_add(&chans_ended, 1);
}

static const ch_channel_ops test_chan = {
    .name = "test",
    .join = chan_join,
    .handle_in = chan_in,
    .terminate = chan_terminate,
};
static const ch_route sock_routes[] = {{"test:*", &test_chan}};
static const ch_socket_handler sock_handler = {
    .connect = sock_connect,
    .id = sock_id,
    .routes = sock_routes,
    .nroutes = 1,
};

/* The cluster the next fx_start joins (NULL: none). */
static const cl_opts *fx_cluster;
/* ch_endpoint_opts.max_messages_per_second of the next fx_start (0: default). */
static uint32_t fx_rate;

static void
fx_start(void (*tweak)(tp_endpoint_opts *))
{
	rt_config rc = {.schedulers = 2, .log_level = RT_LOG_ERROR};
	CHECK_EQ(rt_start(&rc), 0);
	ch_endpoint_opts co = {.handler = &sock_handler,
	                       .secret_key_base = "secret",
	                       .cluster = fx_cluster,
	                       .max_messages_per_second = fx_rate};
	F.ch = ch_endpoint_start(&co);
	CHECK(F.ch != NULL);
	tp_endpoint_opts o = {
	    .bind = "127.0.0.1",
	    .port = TP_PORT_ANY,
	    .socket = F.ch,
	    .http_idle_ms = 200, /* shorter than a parked poll: must not cut it */
	    .max_body = 64 * 1024,
	    .lp_window_ms = WINDOW_MS,
	};
	if (tweak)
		tweak(&o);
	F.tp = tp_endpoint_start(&o);
	CHECK(F.tp != NULL);
	F.port = tp_endpoint_port(F.tp);
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
}

static tp_stats
stats(void)
{
	tp_stats s;
	tp_endpoint_stats(F.tp, &s);
	return s;
}

/* ------------------------------------------------------------------ HTTP client */

typedef struct client {
	int fd;
	char buf[1 << 20];
	size_t len;
} client;

typedef struct resp {
	int status;
	char head[4096];
	char *body; /* malloc'ed, NUL-terminated */
	size_t body_len;
} resp;

static client *
cl_open(void)
{
	client *c = calloc(1, sizeof(*c));
	CHECK(c != NULL);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c->fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_EQ(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return c;
}

static void
cl_close(client *c)
{
	close(c->fd);
	free(c);
}

static void
cl_send(client *c, const char *method, const char *target, const char *ctype, const char *body,
        size_t blen)
{
	char head[8192];
	int n = snprintf(head, sizeof(head),
	                 "%s %s HTTP/1.1\r\nHost: x\r\n%s%s%sContent-Length: %zu\r\n\r\n", method,
	                 target, ctype ? "Content-Type: " : "", ctype ? ctype : "",
	                 ctype ? "\r\n" : "", blen);
	CHECK(n > 0 && (size_t)n < sizeof(head));
	CHECK_EQ(send(c->fd, head, (size_t)n, MSG_NOSIGNAL), n);
	size_t off = 0;
	while (off < blen) {
		ssize_t w = send(c->fd, body + off, blen - off, MSG_NOSIGNAL);
		CHECK(w > 0);
		off += (size_t)w;
	}
}

static void
cl_send_raw(client *c, const char *text)
{
	CHECK_EQ(send(c->fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* Reads one response (Content-Length framed); fails on timeout (5 s). */
static void
cl_read(client *c, resp *r)
{
	memset(r, 0, sizeof(*r));
	for (;;) {
		char *end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
		if (end) {
			size_t hl = (size_t)(end - c->buf) + 4;
			CHECK(hl < sizeof(r->head));
			memcpy(r->head, c->buf, hl);
			r->head[hl] = 0;
			CHECK_EQ(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
			const char *cl = strcasestr(r->head, "\r\ncontent-length:");
			size_t blen = cl ? strtoul(cl + 17, NULL, 10) : 0;
			if (c->len >= hl + blen) {
				r->body = malloc(blen + 1);
				memcpy(r->body, c->buf + hl, blen);
				r->body[blen] = 0;
				r->body_len = blen;
				memmove(c->buf, c->buf + hl + blen, c->len - hl - blen);
				c->len -= hl + blen;
				return;
			}
		}
		CHECK_MSG(c->len < sizeof(c->buf), "response too large");
		ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		CHECK_MSG(n > 0, "no complete response (recv %zd, %zu bytes so far)", n, c->len);
		c->len += (size_t)n;
	}
}

static void
resp_free(resp *r)
{
	free(r->body);
	r->body = NULL;
}

static bool
has_header(const resp *r, const char *line)
{
	return strcasestr(r->head, line) != NULL;
}

/* One request on a fresh connection. */
static void
request(const char *method, const char *target, const char *ctype, const char *body, resp *r)
{
	client *c = cl_open();
	cl_send(c, method, target, ctype, body, body ? strlen(body) : 0);
	cl_read(c, r);
	cl_close(c);
}

/* The token of a JSON answer, copied into out. */
static void
token_of(const resp *r, char *out, size_t cap)
{
	const char *t = strstr(r->body, "\"token\":\"");
	CHECK_MSG(t != NULL, "no token in %s", r->body);
	t += 9;
	const char *e = strchr(t, '"');
	CHECK(e && (size_t)(e - t) < cap);
	memcpy(out, t, (size_t)(e - t));
	out[e - t] = 0;
}

/* Opens a session (vsn 2.0.0 and extra query): its token. */
static void
open_session(const char *extra, char *tok, size_t cap)
{
	char target[1024];
	snprintf(target, sizeof(target), "/socket/longpoll?vsn=2.0.0%s", extra ? extra : "");
	resp r;
	request("GET", target, NULL, NULL, &r);
	CHECK_EQ(r.status, 200);
	CHECK_MSG(strncmp(r.body, "{\"messages\":[],\"status\":410,\"token\":\"", 37) == 0, "%s",
	          r.body);
	token_of(&r, tok, cap);
	resp_free(&r);
}

static void
target_for(char *out, size_t cap, const char *tok)
{
	snprintf(out, cap, "/socket/longpoll?vsn=2.0.0&token=%s", tok);
}

static void
post(const char *tok, const char *ctype, const char *body, resp *r)
{
	char target[512];
	target_for(target, sizeof(target), tok);
	request("POST", target, ctype, body, r);
}

static void
post_ok(const char *tok, const char *ndjson)
{
	resp r;
	post(tok, "application/x-ndjson", ndjson, &r);
	CHECK_EQ(r.status, 200);
	CHECK_STR(r.body, "{\"status\":200}");
	resp_free(&r);
}

/* Polls until the answers hold `want` (a substring), up to 3 s; returns the
 * bodies concatenated (malloc'ed). */
static char *
poll_until(const char *tok, const char *want)
{
	char target[512];
	target_for(target, sizeof(target), tok);
	size_t cap = 1 << 16, len = 0;
	char *all = calloc(1, cap);
	int64_t deadline = test_now_ms() + 3000;
	while (!strstr(all, want)) {
		CHECK_MSG(test_now_ms() < deadline, "never got %s: %s", want, all);
		resp r;
		request("GET", target, NULL, NULL, &r);
		CHECK_EQ(r.status, 200);
		size_t n = strlen(r.body);
		while (len + n + 1 > cap)
			all = realloc(all, cap *= 2);
		memcpy(all + len, r.body, n + 1);
		len += n;
		resp_free(&r);
	}
	return all;
}

static const char JOIN[] = "[\"1\",\"1\",\"test:a\",\"phx_join\",{}]";

/* ------------------------------------------------------------------ cases */

static void
test_new_session(void)
{
	fx_start(NULL);
	resp r;
	request("GET", "/socket/longpoll?vsn=2.0.0", NULL, NULL, &r);
	CHECK_EQ(r.status, 200);
	CHECK(has_header(&r, "\r\nContent-Type: application/json; charset=utf-8\r\n"));
	CHECK(has_header(&r, "\r\naccess-control-allow-origin: *\r\n"));
	CHECK(strncmp(r.body, "{\"messages\":[],\"status\":410,\"token\":\"SFMyNTY.", 45) == 0);
	resp_free(&r);
	tp_stats s = stats();
	CHECK_EQ(s.lp_open, 1);
	CHECK_EQ(s.lp_opened, 1);
	fx_stop();
}

static void
test_join_reply_push(void)
{
	fx_start(NULL);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	/* Frames queued while nobody polls wait for the next poll. */
	post_ok(tok, JOIN);
	post_ok(tok, "[\"1\",\"2\",\"test:a\",\"ping\",{}]\n[\"1\",\"3\",\"test:a\",\"push\",{}]");
	char *all = poll_until(tok, "pushed");
	CHECK(strstr(all,
	             "\"[\\\"1\\\",\\\"1\\\",\\\"test:a\\\",\\\"phx_reply\\\",{\\\"response\\\":"
	             "{},\\\"status\\\":\\\"ok\\\"}]\"") != NULL);
	CHECK(strstr(all, "{\\\"response\\\":{\\\"pong\\\":true},\\\"status\\\":\\\"ok\\\"}") !=
	      NULL);
	CHECK(strstr(all, "\"status\":200,\"token\":\"") != NULL);
	free(all);
	/* A heartbeat is answered as over WebSocket. */
	post_ok(tok, "[null,\"9\",\"phoenix\",\"heartbeat\",{}]");
	all = poll_until(tok, "phoenix");
	CHECK(strstr(all, "[null,\\\"9\\\",\\\"phoenix\\\",\\\"phx_reply\\\"") != NULL);
	free(all);
	fx_stop();
}

static void
test_window_204(void)
{
	fx_start(NULL);
	char tok[256], target[512];
	open_session(NULL, tok, sizeof(tok));
	target_for(target, sizeof(target), tok);
	/* Pipelined behind the poll: answered only after it (input held). */
	client *c = cl_open();
	char req[1200];
	snprintf(req, sizeof(req),
	         "GET %s HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
	         target);
	int64_t t0 = test_now_ms();
	cl_send_raw(c, req);
	resp r;
	cl_read(c, &r);
	int64_t took = test_now_ms() - t0;
	CHECK_EQ(r.status, 200);
	char want[700];
	snprintf(want, sizeof(want), "{\"messages\":[],\"status\":204,\"token\":\"%s\"}", tok);
	CHECK_STR(r.body, want);
	CHECK_MSG(took >= WINDOW_MS - 20 && took < WINDOW_MS + 1500, "took %lld ms",
	          (long long)took);
	resp_free(&r);
	cl_read(c, &r);
	CHECK_EQ(r.status, 404);
	resp_free(&r);
	cl_close(c);
	fx_stop();
}

static void
test_ndjson_order(void)
{
	fx_start(NULL);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	char body[2048];
	size_t n = (size_t)snprintf(body, sizeof(body), "%s", JOIN);
	for (int i = 2; i <= 9; i++)
		n += (size_t)snprintf(body + n, sizeof(body) - n,
		                      "%s[\"1\",\"%d\",\"test:a\",\"ping\",{}]",
		                      i % 2 ? "\r\n" : "\n", i);
	post_ok(tok, body);
	char *all = poll_until(tok, "\\\"9\\\"");
	const char *prev = all;
	for (int i = 1; i <= 9; i++) {
		char ref[64];
		snprintf(ref, sizeof(ref), "[\\\"1\\\",\\\"%d\\\",\\\"test:a\\\",\\\"phx_reply\\\"",
		         i);
		const char *at = strstr(all, ref);
		CHECK_MSG(at && at >= prev, "reply %d missing or out of order: %s", i, all);
		prev = at;
	}
	free(all);
	fx_stop();
}

static void
test_batch_cut_at_100(void)
{
	fx_start(NULL);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	size_t cap = 64 * 1024, n = 0;
	char *body = malloc(cap);
	n += (size_t)snprintf(body, cap, "%s", JOIN);
	for (int i = 2; i <= 105; i++)
		n += (size_t)snprintf(body + n, cap - n, "\n[\"1\",\"%d\",\"test:a\",\"ping\",{}]",
		                      i);
	post_ok(tok, body);
	free(body);
	char *all = poll_until(tok, "\\\"100\\\"");
	free(all);
	CHECK_EQ(stats().lp_lines_ignored, 5);
	/* Nothing past the 100th line was dispatched: ref 101 never comes. */
	post_ok(tok, "[\"1\",\"200\",\"test:a\",\"ping\",{}]");
	all = poll_until(tok, "\\\"200\\\"");
	CHECK(strstr(all, "\\\"101\\\"") == NULL);
	free(all);
	fx_stop();
}

static void
test_preflight_and_methods(void)
{
	fx_start(NULL);
	client *c = cl_open();
	cl_send_raw(c, "OPTIONS /socket/longpoll HTTP/1.1\r\nHost: x\r\n"
	               "Access-Control-Request-Headers: content-type\r\n"
	               "Access-Control-Request-Headers: x-b\r\n\r\n");
	resp r;
	cl_read(c, &r);
	CHECK_EQ(r.status, 200);
	CHECK_EQ(r.body_len, 0);
	CHECK(has_header(&r, "\r\naccess-control-allow-origin: *\r\n"));
	CHECK(has_header(&r, "\r\naccess-control-allow-headers: content-type, x-b\r\n"));
	CHECK(has_header(&r, "\r\naccess-control-allow-methods: get, post, options\r\n"));
	CHECK(has_header(&r, "\r\naccess-control-max-age: 3600\r\n"));
	resp_free(&r);
	cl_send(c, "PUT", "/socket/longpoll", NULL, "x", 1);
	cl_read(c, &r);
	CHECK_EQ(r.status, 400);
	CHECK_EQ(r.body_len, 0);
	CHECK(has_header(&r, "\r\naccess-control-allow-origin: *\r\n"));
	resp_free(&r);
	cl_close(c);
	fx_stop();
}

static void
test_refused_403(void)
{
	fx_start(NULL);
	resp r;
	request("GET", "/socket/longpoll?vsn=2.0.0&token=bad", NULL, NULL, &r);
	CHECK_EQ(r.status, 200);
	CHECK_STR(r.body, "{\"status\":403}");
	resp_free(&r);
	request("GET", "/socket/longpoll?vsn=3.0.0", NULL, NULL, &r);
	CHECK_STR(r.body, "{\"status\":403}");
	resp_free(&r);
	WAIT_UNTIL(stats().lp_open == 0, 2000);
	CHECK_EQ(stats().lp_opened, 0);
	fx_stop();
}

static void
test_bad_tokens(void)
{
	fx_start(NULL);
	char tok[256], tok2[256];
	open_session(NULL, tok, sizeof(tok));
	/* Garbage: a new session. */
	open_session("&token=garbage", tok2, sizeof(tok2));
	CHECK(strcmp(tok, tok2) != 0);
	/* Forged: the signature changed. */
	char forged[256];
	snprintf(forged, sizeof(forged), "%s", tok);
	size_t n = strlen(forged);
	forged[n - 2] = forged[n - 2] == 'A' ? 'B' : 'A';
	char extra[600];
	snprintf(extra, sizeof(extra), "&token=%s", forged);
	open_session(extra, tok2, sizeof(tok2));
	CHECK(strcmp(tok, tok2) != 0);
	resp r;
	post(forged, "application/x-ndjson", JOIN, &r);
	CHECK_STR(r.body, "{\"status\":410}");
	resp_free(&r);
	post("garbage", NULL, JOIN, &r);
	CHECK_STR(r.body, "{\"status\":410}");
	resp_free(&r);
	/* The last token wins: a user token first, then the session's. */
	snprintf(extra, sizeof(extra), "/socket/longpoll?vsn=2.0.0&token=bad&token=%s", tok);
	request("POST", extra, "application/x-ndjson", JOIN, &r);
	CHECK_STR(r.body, "{\"status\":200}");
	resp_free(&r);
	CHECK_EQ(stats().lp_open, 3);
	fx_stop();
}

static void
test_unpolled_session_expires(void)
{
	fx_start(NULL);
	atomic_store(&chans_ended, 0);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	post_ok(tok, JOIN);
	/* Nobody polls: it ends after 1.5 windows (checked every 1.5 windows). */
	WAIT_UNTIL(stats().lp_open == 0, 4 * WINDOW_MS + 2000);
	CHECK_EQ(stats().lp_expired, 1);
	WAIT_UNTIL(atomic_load(&chans_ended) == 1, 2000);
	/* Its token now names no session: POST 410, GET a new session. */
	resp r;
	post(tok, "application/x-ndjson", JOIN, &r);
	CHECK_STR(r.body, "{\"status\":410}");
	resp_free(&r);
	char extra[600], tok2[256];
	snprintf(extra, sizeof(extra), "&token=%s", tok);
	open_session(extra, tok2, sizeof(tok2));
	fx_stop();
}

static void
test_polled_session_stays(void)
{
	fx_start(NULL);
	char tok[256], target[512];
	open_session(NULL, tok, sizeof(tok));
	target_for(target, sizeof(target), tok);
	int64_t until = test_now_ms() + 4 * WINDOW_MS;
	while (test_now_ms() < until) { /* polling keeps it: each poll waits a window */
		resp r;
		request("GET", target, NULL, NULL, &r);
		CHECK(strstr(r.body, "\"status\":204") != NULL);
		resp_free(&r);
	}
	CHECK_EQ(stats().lp_expired, 0);
	CHECK_EQ(stats().lp_open, 1);
	fx_stop();
}

static void
small_buffer(tp_endpoint_opts *o)
{
	o->lp_max_frames = 10;
}

static void
test_buffer_limit(void)
{
	fx_start(small_buffer);
	atomic_store(&chans_ended, 0);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	post_ok(tok, JOIN);
	post_ok(tok, "[\"1\",\"2\",\"test:a\",\"flood\",{\"n\":50}]");
	WAIT_UNTIL(stats().lp_slow == 1, 2000);
	WAIT_UNTIL(stats().lp_open == 0, 2000);
	WAIT_UNTIL(atomic_load(&chans_ended) == 1, 2000);
	resp r;
	post(tok, "application/x-ndjson", JOIN, &r);
	CHECK_STR(r.body, "{\"status\":410}");
	resp_free(&r);
	fx_stop();
}

static void
test_body_limit(void)
{
	fx_start(NULL);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	size_t n = 64 * 1024 + 1;
	char *big = malloc(n + 1);
	memset(big, 'A', n);
	big[n] = 0;
	resp r;
	post(tok, "application/x-ndjson", big, &r);
	CHECK_EQ(r.status, 413);
	resp_free(&r);
	free(big);
	CHECK_EQ(stats().lp_open, 1); /* the session is not disturbed */
	post_ok(tok, JOIN);
	fx_stop();
}

static void
two_sessions(tp_endpoint_opts *o)
{
	o->lp_max_sessions = 2;
}

static void
test_sessions_limit(void)
{
	fx_start(two_sessions);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	open_session(NULL, tok, sizeof(tok));
	resp r;
	request("GET", "/socket/longpoll?vsn=2.0.0", NULL, NULL, &r);
	CHECK_EQ(r.status, 503);
	CHECK(has_header(&r, "\r\nRetry-After: 1\r\n"));
	CHECK(has_header(&r, "\r\naccess-control-allow-origin: *\r\n"));
	resp_free(&r);
	CHECK_EQ(stats().lp_refused, 1);
	CHECK_EQ(stats().lp_open, 2);
	fx_stop();
}

/* The flood limit reaches long polling too: a batch of 50 messages at 1 a
 * second (bursts of 2) ends the session (WebSocket: 1008), counted. */
static void
test_flood_limit_ends_session(void)
{
	fx_rate = 1;
	fx_start(NULL);
	fx_rate = 0;
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	char body[4096];
	size_t n = 0;
	for (int i = 0; i < 50; i++)
		n += (size_t)snprintf(body + n, sizeof(body) - n,
		                      "[null,\"%d\",\"phoenix\",\"heartbeat\",{}]\n", i);
	post_ok(tok, body);
	WAIT_UNTIL(stats().lp_open == 0, 3000);
	CHECK_EQ(ch_endpoint_flood_closed(F.ch), 1);
	fx_stop();
}

/* Over the memory budget (forced here: no budget, so no timer resets it)
 * a session with over TP_MEM_CUT_QUEUED bytes waiting for a poll is cut
 * as a slow consumer; 8000 small pushes (~480 KB) are within the normal
 * limits, which the same flood with the budget's state cleared shows. */
static void
test_memory_budget_cuts_slow_sessions(void)
{
	fx_start(NULL);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	post_ok(tok, JOIN);
	post_ok(tok, "[\"1\",\"2\",\"test:a\",\"flood\",{\"n\":8000}]");
	char *all = poll_until(tok, "flood");
	free(all);
	CHECK_EQ(stats().lp_open, 1);
	CHECK_EQ(stats().mem_cut, 0);
	atomic_store(&F.tp->mem_over, true);
	post_ok(tok, "[\"1\",\"3\",\"test:a\",\"flood\",{\"n\":8000}]");
	WAIT_UNTIL(stats().lp_open == 0, 3000);
	CHECK_EQ(stats().mem_cut, 1);
	CHECK_EQ(stats().lp_slow, 1);
	atomic_store(&F.tp->mem_over, false);
	fx_stop();
}

static void
tiny_budget(tp_endpoint_opts *o)
{
	o->max_memory_mb = 1; /* a process with a runtime is always over 1 MiB */
}

/* Over the memory budget a new session is refused (503, counted). */
static void
test_memory_budget_refuses_sessions(void)
{
	fx_start(tiny_budget);
	resp r;
	request("GET", "/socket/longpoll?vsn=2.0.0", NULL, NULL, &r);
	CHECK_EQ(r.status, 503);
	CHECK(has_header(&r, "\r\nRetry-After: 5\r\n"));
	resp_free(&r);
	CHECK_EQ(stats().mem_refused, 1);
	CHECK_EQ(stats().lp_open, 0);
	CHECK_EQ(stats().lp_refused, 0);
	fx_stop();
}

static void
test_second_poll_replaces_first(void)
{
	fx_start(NULL);
	char tok[256], target[512];
	open_session(NULL, tok, sizeof(tok));
	post_ok(tok, JOIN);
	char *all = poll_until(tok, "phx_reply"); /* the join reply */
	free(all);
	target_for(target, sizeof(target), tok);
	client *a = cl_open(), *b = cl_open();
	cl_send(a, "GET", target, NULL, NULL, 0);
	usleep(50 * 1000); /* a's poll waits (if not, b's replaces nothing: still checked) */
	int64_t t0 = test_now_ms();
	cl_send(b, "GET", target, NULL, NULL, 0);
	resp r;
	cl_read(a, &r);
	CHECK(strstr(r.body, "\"status\":204") != NULL);
	CHECK_MSG(test_now_ms() - t0 < WINDOW_MS - 50, "a was not answered at once");
	resp_free(&r);
	post_ok(tok, "[\"1\",\"5\",\"test:a\",\"push\",{}]");
	cl_read(b, &r);
	CHECK(strstr(r.body, "pushed") != NULL);
	CHECK(strstr(r.body, "\"status\":200") != NULL);
	resp_free(&r);
	cl_close(a);
	cl_close(b);
	fx_stop();
}

static void
test_bad_base64(void)
{
	fx_start(NULL);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	resp r;
	char body[256];
	snprintf(body, sizeof(body), "%s\n!!notbase64!!", JOIN);
	post(tok, "application/x-ndjson", body, &r);
	CHECK_EQ(r.status, 400);
	CHECK_STR(r.body, "{\"status\":400}");
	resp_free(&r);
	CHECK_EQ(stats().lp_bad_posts, 1);
	/* Nothing of it was dispatched, and the session stays. */
	post_ok(tok, "[\"1\",\"7\",\"test:b\",\"phx_join\",{}]");
	char *all = poll_until(tok, "test:b");
	CHECK(strstr(all, "test:a") == NULL);
	free(all);
	fx_stop();
}

static void
test_binary_frames(void)
{
	fx_start(NULL);
	char tok[256];
	open_session(NULL, tok, sizeof(tok));
	/* A V2 binary push from the client (base64 line): join by text, then
	 * "bin", whose binary reply cannot travel as JSON: dropped, counted. */
	post_ok(tok, JOIN);
	post_ok(tok, "[\"1\",\"2\",\"test:a\",\"bin\",{}]\n[\"1\",\"3\",\"test:a\",\"ping\",{}]");
	char *all = poll_until(tok, "\\\"3\\\"");
	CHECK(strstr(all, "\\\"2\\\"") == NULL);
	free(all);
	CHECK_EQ(stats().lp_binary_dropped, 1);
	/* A binary client message (V2 push: kind 0, join_ref, ref, topic, event). */
	/* base64 of 00 01 01 06 04 "1" "8" "test:a" "ping" "x" */
	post_ok(tok, "AAEBBgQxOHRlc3Q6YXBpbmd4");
	all = poll_until(tok, "\\\"8\\\"");
	free(all);
	CHECK_EQ(stats().lp_open, 1);
	fx_stop();
}

static void
test_disconnect_answers_waiting_poll(void)
{
	fx_start(NULL);
	atomic_store(&chans_ended, 0);
	char tok[256], target[512];
	open_session("&user=42", tok, sizeof(tok));
	post_ok(tok, JOIN);
	char *all = poll_until(tok, "phx_reply");
	free(all);
	target_for(target, sizeof(target), tok);
	client *c = cl_open();
	cl_send(c, "GET", target, NULL, NULL, 0);
	usleep(50 * 1000);
	int64_t t0 = test_now_ms();
	CHECK_EQ(ch_endpoint_broadcast(F.ch, "user:42", "disconnect", "{}"), 0);
	resp r;
	cl_read(c, &r);
	CHECK(strstr(r.body, "\"status\":204") != NULL);
	CHECK_MSG(test_now_ms() - t0 < WINDOW_MS - 50, "the poll was not answered at once");
	resp_free(&r);
	cl_close(c);
	WAIT_UNTIL(stats().lp_open == 0, 2000);
	WAIT_UNTIL(atomic_load(&chans_ended) == 1, 2000);
	CHECK_EQ(stats().lp_expired, 0);
	fx_stop();
}

static void
long_window(tp_endpoint_opts *o)
{
	o->lp_window_ms = 5000;
}

static void *
stop_thread(void *arg)
{
	(void)arg;
	tp_endpoint_stop(F.tp, 3000);
	return NULL;
}

/* tp_endpoint_stop answers a waiting poll at once (204) and closes, ends the
 * sessions (their channels), and does not wait for the window. */
static void
test_stop_answers_waiting_poll(void)
{
	fx_start(long_window);
	atomic_store(&chans_ended, 0);
	char tok[256], target[512];
	open_session(NULL, tok, sizeof(tok));
	post_ok(tok, JOIN);
	char *all = poll_until(tok, "phx_reply");
	free(all);
	target_for(target, sizeof(target), tok);
	client *c = cl_open();
	cl_send(c, "GET", target, NULL, NULL, 0);
	usleep(50 * 1000);
	int64_t t0 = test_now_ms();
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, stop_thread, NULL), 0);
	resp r;
	cl_read(c, &r); /* while the stop runs: the client reads and closes */
	int64_t took = test_now_ms() - t0;
	CHECK(strstr(r.body, "\"status\":204") != NULL);
	CHECK(has_header(&r, "\r\nConnection: close\r\n"));
	resp_free(&r);
	cl_close(c);
	pthread_join(th, NULL);
	F.tp = NULL;
	CHECK_MSG(took < 2000, "the poll was answered after %lld ms", (long long)took);
	WAIT_UNTIL(atomic_load(&chans_ended) == 1, 2000);
	fx_stop();
}

/* ------------------------------------------------------------------ other nodes */

/* What the rogue node received on CL_SVC_LONGPOLL: written by its cluster
 * process, read by the test thread, under mu. */
static struct {
	pthread_mutex_t mu;
	int n;
	uint64_t kind[16], ref[16];
	char body[16][2048];
} rogue_got = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void
rogue_receive(void *ud, const cl_member *from, const void *body, size_t len)
{
	(void)ud;
	(void)from;
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	size_t off = 0;
	if (msgpack_unpack_next(&u, body, len, &off) == MSGPACK_UNPACK_SUCCESS &&
	    u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size >= 2) {
		const msgpack_object *f = u.data.via.array.ptr;
		pthread_mutex_lock(&rogue_got.mu);
		int i = rogue_got.n < 16 ? rogue_got.n++ : 15;
		rogue_got.kind[i] = f[0].via.u64;
		rogue_got.ref[i] = f[1].via.u64;
		rogue_got.body[i][0] = 0;
		if (u.data.via.array.size == 3 && f[2].type == MSGPACK_OBJECT_BIN)
			snprintf(rogue_got.body[i], sizeof(rogue_got.body[i]), "%.*s",
			         (int)f[2].via.bin.size, f[2].via.bin.ptr);
		pthread_mutex_unlock(&rogue_got.mu);
	}
	msgpack_unpacked_destroy(&u);
}

/* Waits for the rogue's answer to ref; its kind (2 answer, 3 no session). */
static uint64_t
rogue_wait(uint64_t ref, char *body, size_t cap)
{
	int64_t deadline = test_now_ms() + 3000;
	for (;;) {
		pthread_mutex_lock(&rogue_got.mu);
		for (int i = 0; i < rogue_got.n; i++) {
			if (rogue_got.ref[i] == ref) {
				uint64_t k = rogue_got.kind[i];
				if (body)
					snprintf(body, cap, "%s", rogue_got.body[i]);
				pthread_mutex_unlock(&rogue_got.mu);
				return k;
			}
		}
		pthread_mutex_unlock(&rogue_got.mu);
		CHECK_MSG(test_now_ms() < deadline, "no answer for ref %llu",
		          (unsigned long long)ref);
		usleep(2000);
	}
}

/* A request frame [1, op, ref, id, messages] (id of id_len bytes). */
static void
pack_req(msgpack_sbuffer *sb, unsigned op, uint64_t ref, const uint8_t *id, size_t id_len,
         const char *const *texts, size_t ntexts)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 5);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_uint8(&pk, (uint8_t)op);
	msgpack_pack_uint64(&pk, ref);
	msgpack_pack_bin_with_body(&pk, id, id_len);
	msgpack_pack_array(&pk, ntexts);
	for (size_t i = 0; i < ntexts; i++)
		msgpack_pack_str_with_body(&pk, texts[i], strlen(texts[i]));
}

static void
rogue_send(cl_node *rogue, const char *node, msgpack_sbuffer *sb)
{
	CHECK_EQ(cl_send_to(rogue, node, CL_SVC_LONGPOLL, sb->data, sb->size), 0);
	msgpack_sbuffer_clear(sb);
}

static bool
rogue_sees(cl_node *c, const char *name)
{
	cl_member m[8];
	size_t n = cl_members(c, m, 8);
	for (size_t i = 0; i < n && i < 8; i++)
		if (m[i].up && strcmp(m[i].name, name) == 0)
			return true;
	return false;
}

/* Another node drives a session of this one through CL_SVC_LONGPOLL frames
 * (a post, polls: the answers come back to it); frames that are not the
 * service's are refused and counted, answers nobody waits for are dropped
 * and counted, and the session is not disturbed. */
static void
test_other_node_frames(void)
{
	cl_opts node = {.name = "lp1@127.0.0.1",
	                .listen = "tcp://127.0.0.1:0",
	                .heartbeat_ms = 100,
	                .down_after_ms = 1000};
	fx_cluster = &node;
	fx_start(NULL);
	fx_cluster = NULL;
	char addr[CL_ADDR_MAX];
	snprintf(addr, sizeof(addr), "%s", cl_addr(ch_endpoint_cluster(F.ch)));
	const char *peers[] = {addr, NULL};
	cl_opts ro = {.name = "rogue@127.0.0.1",
	              .listen = "tcp://127.0.0.1:0",
	              .peers = peers,
	              .heartbeat_ms = 100,
	              .down_after_ms = 1000};
	cl_node *rogue = cl_start(&ro);
	CHECK(rogue != NULL);
	CHECK_EQ(cl_register(rogue, CL_SVC_LONGPOLL, rogue_receive, NULL), 0);
	WAIT_UNTIL(rogue_sees(rogue, "lp1@127.0.0.1") &&
	               rogue_sees(ch_endpoint_cluster(F.ch), "rogue@127.0.0.1"),
	           5000);

	char tok[512];
	open_session(NULL, tok, sizeof(tok));
	lp_sid sid;
	CHECK_EQ(lp_token_verify(F.tp->lp, tok, strlen(tok), &sid), 0);
	CHECK_STR(sid.node, "lp1@127.0.0.1");

	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	/* a POST (join, ping) from the other node: {"status":200} comes back */
	const char *msgs[] = {"[\"1\",\"1\",\"test:a\",\"phx_join\",{}]",
	                      "[\"1\",\"2\",\"test:a\",\"ping\",{}]"};
	pack_req(&sb, 2, 101, sid.id, LP_ID_LEN, msgs, 2);
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	char body[2048];
	CHECK_EQ(rogue_wait(101, body, sizeof(body)), 2u);
	CHECK_STR(body, "{\"status\":200}");
	/* a poll: the replies, with the session's token */
	pack_req(&sb, 1, 102, sid.id, LP_ID_LEN, NULL, 0);
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	CHECK_EQ(rogue_wait(102, body, sizeof(body)), 2u);
	CHECK_MSG(strstr(body, "\"status\":200") && strstr(body, "pong") && strstr(body, tok), "%s",
	          body);
	/* a poll with nothing buffered: 204 after the window */
	pack_req(&sb, 1, 103, sid.id, LP_ID_LEN, NULL, 0);
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	CHECK_EQ(rogue_wait(103, body, sizeof(body)), 2u);
	CHECK_MSG(strstr(body, "\"status\":204") != NULL, "%s", body);
	/* an id no session has: "no session" */
	uint8_t unknown[LP_ID_LEN] = {1, 2, 3};
	pack_req(&sb, 1, 104, unknown, LP_ID_LEN, NULL, 0);
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	CHECK_EQ(rogue_wait(104, NULL, 0), 3u);

	/* malformed frames: refused and counted, none answered */
	msgpack_sbuffer_write(&sb, "\xc1garbage", 8);
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	msgpack_sbuffer_write(&sb, "\xdd\xff\xff\xff\xff", 5); /* 2^32 elements claimed */
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	pack_req(&sb, 1, 105, sid.id, LP_ID_LEN - 1, NULL, 0); /* short id */
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	pack_req(&sb, 1, 106, sid.id, LP_ID_LEN, msgs, 1); /* a poll with messages */
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	pack_req(&sb, 7, 107, sid.id, LP_ID_LEN, NULL, 0); /* no such op */
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	const char *many[LP_MAX_BATCH + 1];
	for (int i = 0; i <= LP_MAX_BATCH; i++)
		many[i] = "[\"1\",null,\"test:a\",\"ping\",{}]";
	pack_req(&sb, 2, 108, sid.id, LP_ID_LEN, many, LP_MAX_BATCH + 1); /* over the batch */
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 3); /* an answer with a str body */
	msgpack_pack_uint8(&pk, 2);
	msgpack_pack_uint64(&pk, 1);
	msgpack_pack_str_with_body(&pk, "x", 1);
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	WAIT_UNTIL(stats().lp_remote_refused == 7, 3000);
	/* answers and "no session" nobody here waits for: dropped (answers counted) */
	msgpack_pack_array(&pk, 3);
	msgpack_pack_uint8(&pk, 2);
	msgpack_pack_uint64(&pk, 999999);
	msgpack_pack_bin_with_body(&pk, "{\"status\":200}", 14);
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, 3);
	msgpack_pack_uint64(&pk, 999998);
	rogue_send(rogue, "lp1@127.0.0.1", &sb);
	WAIT_UNTIL(stats().lp_remote_lost >= 1, 3000);

	/* none of the bad ones was answered, and the session still works */
	usleep(100 * 1000);
	pthread_mutex_lock(&rogue_got.mu);
	for (int i = 0; i < rogue_got.n; i++)
		CHECK_MSG(rogue_got.ref[i] < 105 || rogue_got.ref[i] > 108, "answered %llu",
		          (unsigned long long)rogue_got.ref[i]);
	pthread_mutex_unlock(&rogue_got.mu);
	post_ok(tok, "[\"1\",\"3\",\"test:a\",\"ping\",{}]");
	free(poll_until(tok, "\\\"3\\\""));
	tp_stats st = stats();
	CHECK_EQ(st.lp_remote_refused, 7u);
	CHECK_EQ(st.lp_remote_served, 3u); /* the post and two polls; not the unknown id */
	msgpack_sbuffer_destroy(&sb);
	cl_stop(rogue);
	fx_stop();
}

TEST_LIST = {
    TEST(test_new_session),
    TEST(test_join_reply_push),
    TEST(test_window_204),
    TEST(test_ndjson_order),
    TEST(test_batch_cut_at_100),
    TEST(test_preflight_and_methods),
    TEST(test_refused_403),
    TEST(test_bad_tokens),
    TEST(test_unpolled_session_expires),
    TEST(test_polled_session_stays),
    TEST(test_buffer_limit),
    TEST(test_body_limit),
    TEST(test_sessions_limit),
    TEST(test_flood_limit_ends_session),
    TEST(test_memory_budget_refuses_sessions),
    TEST(test_memory_budget_cuts_slow_sessions),
    TEST(test_second_poll_replaces_first),
    TEST(test_bad_base64),
    TEST(test_binary_frames),
    TEST(test_disconnect_answers_waiting_poll),
    TEST(test_stop_answers_waiting_poll),
    TEST(test_other_node_frames),
    TEST_END,
};
