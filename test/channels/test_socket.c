/*
 * Socket and channel semantics without a network: a fake transport process
 * owns a ch_socket, feeds it frames sent by the test, and records every frame
 * the socket sends back.  Checks the wire behaviour of Phoenix.Socket and
 * Phoenix.Channel.Server: joins, replies, pushes, broadcasts, intercepts,
 * leave, duplicate joins, crashes, heartbeats, unmatched topics.
 */
#include <pthread.h>
#include <unistd.h>

#include "channels/internal.h"
#include "test/harness.h"

/* ------------------------------------------------------------------ recorded frames */

typedef struct frame {
	int client; /* which fake client */
	int kind;
	char text[512];
} frame;

static struct {
	pthread_mutex_t mu;
	frame items[4096];
	int n;
	int closed_code[8];
} out = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Whether text contains needle; a needle "A\x01B" matches when A occurs
 * and B occurs after it (a reply's status comes after its response). */
static bool
match(const char *text, const char *needle)
{
	const char *sep = strchr(needle, '\x01');
	if (!sep)
		return strstr(text, needle) != NULL;
	char head[512];
	size_t hl = (size_t)(sep - needle);
	if (hl >= sizeof(head))
		return false;
	memcpy(head, needle, hl);
	head[hl] = 0;
	const char *at = strstr(text, head);
	return at && strstr(at + hl, sep + 1) != NULL;
}

static int
take(int client, const char *needle, int ms, frame *f)
{
	int64_t deadline = test_now_ms() + ms;
	for (;;) {
		pthread_mutex_lock(&out.mu);
		for (int i = 0; i < out.n; i++) {
			if (out.items[i].client == client && match(out.items[i].text, needle)) {
				if (f)
					*f = out.items[i];
				memmove(&out.items[i], &out.items[i + 1],
				        (size_t)(out.n - i - 1) * sizeof(frame));
				out.n--;
				pthread_mutex_unlock(&out.mu);
				return 0;
			}
		}
		pthread_mutex_unlock(&out.mu);
		if (test_now_ms() > deadline)
			return -1;
		usleep(1000);
	}
}

static int
count(int client, const char *needle)
{
	int n = 0;
	pthread_mutex_lock(&out.mu);
	for (int i = 0; i < out.n; i++)
		if (out.items[i].client == client && strstr(out.items[i].text, needle))
			n++;
	pthread_mutex_unlock(&out.mu);
	return n;
}

/* ------------------------------------------------------------------ fake transport */

enum { FT_FRAME = 1, FT_CLOSE };

typedef struct fake {
	int client;
	ch_socket *sock;
	bool closed;
	bool marked; /* frames pushed by a dispatcher wait for fake_flush_local */
} fake;

/* The fastlane's direct path, as seen by pinned fake transports (written by
 * the PubSub partition of the client's scheduler, read by the test). */
static _Atomic int direct_pushes[8], local_flushes[8], bad_flushes;

static void record(fake *f, rt_buf *b);

static void
fake_send(void *conn, rt_buf *b)
{
	record(conn, b);
}

static int
fake_push_local(void *conn, rt_buf *b)
{
	fake *f = conn;
	if (f->closed)
		return CH_PUSH_DECLINED;
	atomic_fetch_add(&direct_pushes[f->client], 1);
	record(f, b); /* "queued" here means recorded at once, in order */
	if (f->marked)
		return CH_PUSH_QUEUED;
	f->marked = true;
	return CH_PUSH_FIRST;
}

static void
fake_flush_local(void *conn)
{
	fake *f = conn;
	if (!f->marked) /* only connections the dispatcher queued on */
		atomic_fetch_add(&bad_flushes, 1);
	f->marked = false;
	atomic_fetch_add(&local_flushes[f->client], 1);
}

static void
record(fake *f, rt_buf *b)
{
	int kind = (int)b->flags; /* the frame kind travels in the buffer */
	pthread_mutex_lock(&out.mu);
	if (out.n < 4096) {
		frame *fr = &out.items[out.n++];
		fr->client = f->client;
		fr->kind = kind;
		size_t n = b->len < sizeof(fr->text) - 1 ? b->len : sizeof(fr->text) - 1;
		memcpy(fr->text, b->data, n);
		fr->text[n] = 0;
		if (kind == 2) /* binary: mark it */
			snprintf(fr->text, sizeof(fr->text), "BINARY:%zu", b->len);
	}
	pthread_mutex_unlock(&out.mu);
	rt_buf_release(b);
}

static void
fake_close(void *conn, int code, const char *reason)
{
	(void)reason;
	fake *f = conn;
	pthread_mutex_lock(&out.mu);
	out.closed_code[f->client] = code;
	pthread_mutex_unlock(&out.mu);
	f->closed = true;
}

typedef struct fake_arg {
	ch_endpoint *ep;
	int client;
	const char *token_user; /* connect as this user id */
	int vsn;
	bool local; /* offers the fastlane's direct path (push_local) */
} fake_arg;

static int
fake_init(void *st, const void *arg, size_t size)
{
	(void)size;
	fake *f = st;
	const fake_arg *a = arg;
	f->client = a->client;
	ch_param params[2] = {
	    {.key = "vsn", .key_len = 3, .value = a->vsn == 1 ? "1.0.0" : "2.0.0", .value_len = 5},
	    {.key = "user",
	     .key_len = 4,
	     .value = a->token_user,
	     .value_len = a->token_user ? strlen(a->token_user) : 0}};
	ch_params ps = {params, a->token_user ? 2 : 1};
	ch_connect_info info = {.peer = "127.0.0.1:1", .transport = "websocket"};
	ch_transport t = {.conn = f, .send = fake_send, .close = fake_close};
	if (a->local) {
		t.push_local = fake_push_local;
		t.flush_local = fake_flush_local;
	}
	int status = 0;
	f->sock = ch_socket_open(a->ep, &ps, &info, &t, &status);
	return f->sock ? RT_OK : rt_stop("refused");
}

static int
fake_handle(void *st, rt_msg *m)
{
	fake *f = st;
	if (m->tag == FT_FRAME) {
		int code = ch_socket_in(f->sock, rt_msg_data(m), m->size, false);
		if (code)
			fake_close(f, code, "");
		return f->closed ? RT_STOP : RT_OK;
	}
	if (m->tag == FT_CLOSE)
		return RT_STOP;
	ch_socket_info(f->sock, m);
	return f->closed ? RT_STOP : RT_OK;
}

static void
fake_terminate(void *st, const char *reason)
{
	fake *f = st;
	ch_socket_close(f->sock, reason);
}

static const rt_behaviour fake_behaviour = {.name = "fake_transport",
                                            .state_size = sizeof(fake),
                                            .init = fake_init,
                                            .handle = fake_handle,
                                            .terminate = fake_terminate};

/* ------------------------------------------------------------------ a test app */

typedef struct room {
	int pings;
	char ignored[64];
} room;

static int
room_join(ch_chan *ch, void *st, const char *topic, const ch_payload *params)
{
	(void)st;
	(void)params;
	if (strcmp(topic, "room:deny") == 0)
		return ch_join_error(ch, "{\"reason\":\"unauthorized\"}");
	if (strcmp(topic, "room:crashjoin") == 0)
		rt_crash("join crash");
	if (strcmp(topic, "room:reply") == 0)
		ch_join_reply(ch, "{\"welcome\":true}");
	return CH_OK;
}

static _Atomic int hold_released;

static int
room_in(ch_chan *ch, void *st, const char *event, const ch_payload *p)
{
	room *r = st;
	if (strcmp(event, "hold") == 0) {
		while (!atomic_load(&hold_released))
			usleep(1000);
		return CH_OK;
	}
	if (strcmp(event, "ping") == 0) {
		r->pings++;
		ch_reply(ch, "ok", p->raw);
		return CH_OK;
	}
	if (strcmp(event, "new_msg") == 0)
		return ch_broadcast(ch, "new_msg", p->raw) == 0 ? CH_OK : CH_ERROR;
	if (strcmp(event, "shout") == 0)
		return ch_broadcast_from(ch, "shout", p->raw) == 0 ? CH_OK : CH_ERROR;
	if (strcmp(event, "crash") == 0)
		rt_crash("crash requested");
	if (strcmp(event, "stop") == 0)
		return ch_stop(ch, "shutdown");
	if (strcmp(event, "ignore") == 0) {
		snprintf(r->ignored, sizeof(r->ignored), "%s",
		         cJSON_GetStringValue(cJSON_GetObjectItem(p->json, "user_id")));
		ch_reply(ch, "ok", "{}");
		return CH_OK;
	}
	if (strcmp(event, "announce") == 0)
		return ch_broadcast(ch, "user_joined", p->raw) == 0 ? CH_OK : CH_ERROR;
	if (strcmp(event, "slow") == 0) {
		ch_ref ref = ch_socket_ref(ch);
		rt_send_after(50, rt_self(), 77, &ref, sizeof(ref));
		return CH_OK;
	}
	rt_crash("no clause for %s", event);
}

static int
room_out(ch_chan *ch, void *st, const char *event, const cJSON *payload)
{
	room *r = st;
	const char *u = cJSON_GetStringValue(cJSON_GetObjectItem(payload, "user_id"));
	if (u && strcmp(u, r->ignored) == 0)
		return CH_OK;
	char *txt = cJSON_PrintUnformatted(payload);
	ch_push(ch, event, txt);
	free(txt);
	return CH_OK;
}

static int
room_info(ch_chan *ch, void *st, rt_msg *m)
{
	(void)ch;
	(void)st;
	if (m->tag == 77)
		ch_reply_ref(rt_msg_data(m), "ok", "{\"slow\":true}");
	return CH_OK;
}

static int
pres_join(ch_chan *ch, void *st, const char *topic, const ch_payload *params)
{
	(void)st;
	(void)topic;
	const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(params->json, "name"));
	ch_assign(ch, "name", cJSON_CreateString(name ? name : "anon"));
	rt_send(rt_self(), 88, NULL, 0);
	return CH_OK;
}

static int
pres_info(ch_chan *ch, void *st, rt_msg *m)
{
	(void)st;
	if (m->tag != 88)
		return CH_OK;
	const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(ch_assigns(ch), "name"));
	CHECK_EQ(ch_presence_track(ch, name, "{\"online_at\":1700000000}"), 0);
	char *state = ch_presence_list(ch);
	ch_push(ch, "presence_state", state);
	free(state);
	return CH_OK;
}

static const ch_channel_ops pres_ops = {
    .name = "presence", .join = pres_join, .handle_info = pres_info};

static const char *const room_intercepts[] = {"user_joined", NULL};
static const ch_channel_ops room_ops = {.name = "room",
                                        .state_size = sizeof(room),
                                        .intercepts = room_intercepts,
                                        .join = room_join,
                                        .handle_in = room_in,
                                        .handle_out = room_out,
                                        .handle_info = room_info};
/* A channel written with the event table and the cJSON calls. */
static int
tbl_join(ch_chan *ch, void *st, const char *topic, const ch_payload *params)
{
	(void)ch;
	(void)st;
	(void)topic;
	(void)params;
	return CH_OK;
}

static int
tbl_echo(ch_chan *ch, void *st, const ch_payload *p)
{
	(void)st;
	ch_reply_json(ch, "ok", p->json);
	return CH_OK;
}

static int
tbl_raw(ch_chan *ch, void *st, const ch_payload *p)
{
	(void)st;
	CHECK_STR(ch_event(ch), "raw");
	ch_reply_payload(ch, "ok", p);
	return CH_OK;
}

static int
tbl_push(ch_chan *ch, void *st, const ch_payload *p)
{
	(void)st;
	(void)p;
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "n", 1);
	ch_push_json(ch, "pushed", o);
	ch_push_json(ch, "empty", NULL);
	cJSON_Delete(o);
	return CH_OK;
}

static int
tbl_bcast(ch_chan *ch, void *st, const ch_payload *p)
{
	(void)st;
	cJSON *o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "b", true);
	cJSON *arr = cJSON_CreateArray();
	bool from = cJSON_IsTrue(ch_payload_get(p, "from"));
	int rc = from ? ch_broadcast_from_json(ch, "bc", o) : ch_broadcast_json(ch, "bc", o);
	/* not objects: refused */
	int bad = ch_broadcast_json(ch, "bc", arr) + ch_broadcast_from_json(ch, "bc", NULL) +
	          ch_broadcast(ch, "bc", "[1]") + ch_broadcast_from(ch, "bc", "3");
	cJSON_Delete(o);
	cJSON_Delete(arr);
	cJSON *r = cJSON_CreateObject();
	cJSON_AddNumberToObject(r, "rc", rc);
	cJSON_AddNumberToObject(r, "bad", bad);
	ch_reply_json(ch, "ok", r);
	cJSON_Delete(r);
	return CH_OK;
}

/* handle_in("need_x", %{"x" => x}, socket) */
static int
tbl_need_x(ch_chan *ch, void *st, const ch_payload *p)
{
	(void)st;
	if (!ch_payload_get(p, "x"))
		ch_no_clause(ch);
	ch_reply(ch, "ok", NULL);
	return CH_OK;
}

/* Replies later, through a socket ref sent to itself. */
static int
tbl_later(ch_chan *ch, void *st, const ch_payload *p)
{
	(void)st;
	(void)p;
	ch_ref ref = ch_socket_ref(ch);
	rt_send(rt_self(), CH_TAG_APP_MIN + 5, &ref, sizeof(ref));
	return CH_OK;
}

static int
tbl_info(ch_chan *ch, void *st, rt_msg *m)
{
	(void)ch;
	(void)st;
	CHECK(m->tag <= CH_TAG_APP_MAX);
	cJSON *r = cJSON_CreateObject();
	cJSON_AddStringToObject(r, "later", "yes");
	ch_reply_ref_json(rt_msg_data(m), "ok", r);
	cJSON_Delete(r);
	return CH_OK;
}

static const ch_in_clause tbl_in[] = {
    {"later", tbl_later}, {"echo", tbl_echo},     {"raw", tbl_raw}, {"push", tbl_push},
    {"bcast", tbl_bcast}, {"need_x", tbl_need_x}, {NULL, NULL},
};

static const ch_channel_ops tbl_ops = {
    .name = "TableChannel", .join = tbl_join, .in = tbl_in, .handle_info = tbl_info};

/* The table first, then the catch-all handle_in. */
static int
mix_in(ch_chan *ch, void *st, const char *event, const ch_payload *p)
{
	(void)st;
	(void)p;
	char buf[128];
	snprintf(buf, sizeof(buf), "{\"catch_all\":\"%s\"}", event);
	ch_reply(ch, "ok", buf);
	return CH_OK;
}

static const ch_channel_ops mix_ops = {
    .name = "MixChannel", .join = tbl_join, .in = tbl_in, .handle_in = mix_in};

/* A channel that ignores the exit signal of a duplicate join (it traps
 * exits): the socket kills it after 5 s, as Phoenix. */
static int
stub_join(ch_chan *ch, void *st, const char *topic, const ch_payload *params)
{
	(void)ch, (void)st, (void)topic, (void)params;
	rt_trap_exit(true);
	return CH_OK;
}

static int
stub_info(ch_chan *ch, void *st, rt_msg *m)
{
	(void)ch, (void)st, (void)m;
	return CH_OK;
}

static const ch_channel_ops stub_ops = {
    .name = "StubbornChannel", .join = stub_join, .handle_info = stub_info};

static const ch_route routes[] = {{"room:*", &room_ops},
                                  {"presence:*", &pres_ops},
                                  {"tbl:*", &tbl_ops},
                                  {"mix:*", &mix_ops},
                                  {"stub:*", &stub_ops}};

static int
sock_connect(const ch_endpoint *ep, const ch_params *params, const ch_connect_info *info,
             cJSON *assigns)
{
	(void)ep;
	(void)info;
	const char *u = ch_params_get(params, "user");
	if (u && strcmp(u, "evil") == 0)
		return CH_ERROR;
	if (u)
		cJSON_AddStringToObject(assigns, "user_id", u);
	return CH_OK;
}

static size_t
sock_id(const cJSON *assigns, char *buf, size_t cap)
{
	const char *u = cJSON_GetStringValue(cJSON_GetObjectItem(assigns, "user_id"));
	if (!u)
		return 0;
	return (size_t)snprintf(buf, cap, "users_socket:%s", u);
}

static const ch_socket_handler handler = {.connect = sock_connect,
                                          .id = sock_id,
                                          .routes = routes,
                                          .nroutes = sizeof(routes) / sizeof(routes[0]),
                                          .max_channels = 3};

/* ------------------------------------------------------------------ helpers */

static ch_endpoint *ep;
static rt_pid clients[8];
static uint64_t base_procs; /* the endpoint's own processes (supervisor, PubSub, ...) */
/* ch_endpoint_opts.max_messages_per_second of the next setup (0: default);
 * a test that changes it sets it back to 0. */
static uint32_t setup_rate;

static void
setup(void)
{
	pthread_mutex_lock(&out.mu);
	out.n = 0;
	memset(out.closed_code, 0, sizeof(out.closed_code));
	pthread_mutex_unlock(&out.mu);
	rt_config c = {.schedulers = 2, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
	ch_endpoint_opts o = {.handler = &handler,
	                      .secret_key_base = "secret",
	                      .max_messages_per_second = setup_rate};
	ep = ch_endpoint_start(&o);
	CHECK(ep != NULL);
	/* the node's tree: the root, PubSub's supervisor and partitions (one per
	 * scheduler), the presence tracker's supervisor and shards (one per
	 * scheduler), the channel supervisor */
	base_procs = 4 + 2 * (uint64_t)rt_schedulers();
	WAIT_UNTIL(rt_process_count() == base_procs, 3000);
}

static void
teardown(void)
{
	for (int i = 0; i < 8; i++)
		if (clients[i])
			rt_send(clients[i], FT_CLOSE, NULL, 0);
	for (int i = 0; i < 8; i++)
		if (clients[i])
			WAIT_UNTIL(!rt_alive(clients[i]), 5000);
	WAIT_UNTIL(ch_ps_subscribers(ep->pubsub, "room:lobby") == 0, 5000);
	ch_endpoint_stop(ep);
	WAIT_UNTIL(rt_process_count() == 0, 5000);
	rt_shutdown();
}

static void
client(int i, const char *user, int vsn)
{
	fake_arg a = {.ep = ep, .client = i, .token_user = user, .vsn = vsn};
	clients[i] = rt_spawn(&fake_behaviour, &a, sizeof(a));
}

static void
send_text(int i, const char *text)
{
	rt_send(clients[i], FT_FRAME, text, strlen(text));
}

#define EXPECT(i, needle) CHECK_MSG(take(i, needle, 3000, NULL) == 0, "client %d: no %s", i, needle)

/* ------------------------------------------------------------------ tests */

static void
test_join_reply_and_ping(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0, "[\"1\",\"1\",\"room:lobby\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	send_text(0, "[\"1\",\"2\",\"room:lobby\",\"ping\",{\"n\":12345678901234567890}]");
	EXPECT(0, "[\"1\",\"2\",\"room:lobby\",\"phx_reply\",{\"response\":{\"n\":"
	          "12345678901234567890},\"status\":\"ok\"}]");
	send_text(0, "[\"1\",\"3\",\"room:reply\",\"phx_join\",{}]");
	EXPECT(0, "{\"response\":{\"welcome\":true},\"status\":\"ok\"}");
	send_text(0, "[\"4\",\"4\",\"room:deny\",\"phx_join\",{}]");
	EXPECT(0, "[\"4\",\"4\",\"room:deny\",\"phx_reply\",{\"response\":{"
	          "\"reason\":\"unauthorized\"},\"status\":\"error\"}]");
	send_text(0, "[\"5\",\"5\",\"room:crashjoin\",\"phx_join\",{}]");
	EXPECT(0, "[\"5\",\"5\",\"room:crashjoin\",\"phx_reply\",{\"response\":"
	          "{\"reason\":\"join crashed\"},\"status\":\"error\"}]");
	teardown();
}

static void
test_heartbeat_and_unmatched(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[null,\"7\",\"phoenix\",\"heartbeat\",{}]");
	EXPECT(0, "[null,\"7\",\"phoenix\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	send_text(0, "[\"1\",\"8\",\"nope:x\",\"phx_join\",{}]");
	EXPECT(0, "[null,\"8\",\"nope:x\",\"phx_reply\",{\"response\":{"
	          "\"reason\":\"unmatched topic\"},\"status\":\"error\"}]");
	send_text(0, "[\"1\",\"9\",\"room:other\",\"ping\",{}]");
	EXPECT(0, "[null,\"9\",\"room:other\",\"phx_reply\",{\"response\":{"
	          "\"reason\":\"unmatched topic\"},\"status\":\"error\"}]");
	send_text(0, "[\"1\",\"10\",\"room:other\",\"phx_leave\",{}]");
	EXPECT(0,
	       "[\"1\",\"10\",\"room:other\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	teardown();
}

static void
test_broadcast_fastlane_and_from(void)
{
	setup();
	client(0, NULL, 2);
	client(1, NULL, 1);
	send_text(0, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	send_text(1,
	          "{\"topic\":\"room:lobby\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"1\"}");
	EXPECT(0, "phx_reply");
	EXPECT(1, "phx_reply");
	send_text(0, "[\"1\",\"2\",\"room:lobby\",\"new_msg\",{\"body\":\"hi\"}]");
	EXPECT(0, "[null,null,\"room:lobby\",\"new_msg\",{\"body\":\"hi\"}]");
	EXPECT(1, "{\"event\":\"new_msg\",\"payload\":{\"body\":\"hi\"},\"ref\":null,\"topic\":"
	          "\"room:lobby\"}");
	send_text(0, "[\"1\",\"3\",\"room:lobby\",\"shout\",{\"x\":1}]");
	EXPECT(1, "\"shout\"");
	usleep(100000);
	CHECK_EQ(count(0, "shout"), 0);
	/* from outside (POST /api/broadcast) */
	CHECK_EQ(ch_endpoint_broadcast(ep, "room:lobby", "ext", "{\"a\":2}"), 0);
	EXPECT(0, "[null,null,\"room:lobby\",\"ext\",{\"a\":2}]");
	EXPECT(1, "\"ext\"");
	CHECK_EQ(ch_endpoint_broadcast(ep, "room:lobby", "ext", "[1]"), -1);
	teardown();
}

/* Pinned transports that offer push_local get broadcasts straight from the
 * PubSub partition of their scheduler (one runtime message per scheduler,
 * not one per subscriber), each written once per batch, in order; a reply
 * made after a broadcast still comes after it. */
static void
test_fastlane_direct_path(void)
{
	setup();
	for (int i = 0; i < 6; i++) {
		fake_arg a = {.ep = ep, .client = i, .vsn = 2, .local = true};
		clients[i] = rt_spawn_on(i % 2, &fake_behaviour, &a, sizeof(a));
		atomic_store(&direct_pushes[i], 0);
		atomic_store(&local_flushes[i], 0);
	}
	for (int i = 0; i < 6; i++) {
		send_text(i, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
		EXPECT(i, "phx_reply");
	}
	char body[64];
	for (int k = 0; k < 50; k++) {
		snprintf(body, sizeof(body), "{\"k\":%d}", k);
		CHECK_EQ(ch_endpoint_broadcast(ep, "room:lobby", "seq", body), 0);
	}
	for (int i = 0; i < 6; i++)
		for (int k = 0; k < 50; k++) {
			frame f;
			snprintf(body, sizeof(body), "\"seq\",{\"k\":%d}", k);
			CHECK_MSG(take(i, "\"seq\"", 3000, &f) == 0, "client %d: broadcast %d", i,
			          k);
			CHECK_MSG(strstr(f.text, body), "client %d: %s where k=%d was due", i,
			          f.text, k);
		}
	CHECK_EQ(atomic_load(&bad_flushes), 0);
	for (int i = 0; i < 6; i++) {
		CHECK(atomic_load(&direct_pushes[i]) > 0);
		CHECK(atomic_load(&local_flushes[i]) > 0);
		CHECK(atomic_load(&local_flushes[i]) <= atomic_load(&direct_pushes[i]));
	}
	/* a channel's broadcast, then its reply: in that order at its client */
	for (int r = 0; r < 20; r++) {
		char ref[32], msg[128];
		snprintf(ref, sizeof(ref), "r%d", r);
		snprintf(msg, sizeof(msg),
		         "[\"1\",\"%s\",\"room:lobby\",\"new_msg\",{\"body\":\"%s\"}]", ref, ref);
		send_text(0, msg);
		snprintf(msg, sizeof(msg), "[\"1\",\"%sp\",\"room:lobby\",\"ping\",{}]", ref);
		send_text(0, msg);
	}
	for (int r = 0; r < 20; r++) {
		char want[64];
		frame f;
		CHECK(take(0, "\"room:lobby\",\"", 3000, &f) == 0);
		snprintf(want, sizeof(want), "\"body\":\"r%d\"", r);
		CHECK_MSG(strstr(f.text, want), "broadcast r%d expected, got %s", r, f.text);
		CHECK(take(0, "\"room:lobby\",\"", 3000, &f) == 0);
		snprintf(want, sizeof(want), "\"r%dp\"", r);
		CHECK_MSG(strstr(f.text, want), "reply r%dp expected, got %s", r, f.text);
	}
	teardown();
}

static void
test_intercept_handle_out(void)
{
	setup();
	client(0, NULL, 2);
	client(1, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	send_text(1, "[\"3\",\"3\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0, "phx_reply");
	EXPECT(1, "phx_reply");
	send_text(1, "[\"3\",\"4\",\"room:lobby\",\"ignore\",{\"user_id\":\"bob\"}]");
	EXPECT(1, "phx_reply");
	send_text(0, "[\"1\",\"2\",\"room:lobby\",\"announce\",{\"user_id\":\"bob\"}]");
	/* a push from the channel process: [join_ref, null, ...] */
	EXPECT(0, "[\"1\",null,\"room:lobby\",\"user_joined\",{\"user_id\":\"bob\"}]");
	usleep(100000);
	CHECK_EQ(count(1, "user_joined"), 0);
	send_text(0, "[\"1\",\"5\",\"room:lobby\",\"announce\",{\"user_id\":\"al\"}]");
	EXPECT(1, "[\"3\",null,\"room:lobby\",\"user_joined\",{\"user_id\":\"al\"}]");
	teardown();
}

static void
test_crash_gives_phx_error_and_rejoin(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0, "phx_reply");
	send_text(0, "[\"1\",\"2\",\"room:lobby\",\"crash\",{}]");
	EXPECT(0, "[\"1\",\"1\",\"room:lobby\",\"phx_error\",{}]");
	send_text(0, "[\"3\",\"3\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0,
	       "[\"3\",\"3\",\"room:lobby\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	send_text(0, "[\"3\",\"4\",\"room:lobby\",\"ping\",{}]");
	EXPECT(0,
	       "[\"3\",\"4\",\"room:lobby\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	/* unknown event: no clause, the channel crashes */
	send_text(0, "[\"3\",\"5\",\"room:lobby\",\"bogus\",{}]");
	EXPECT(0, "[\"3\",\"3\",\"room:lobby\",\"phx_error\",{}]");
	teardown();
}

static void
test_leave_and_stop_give_phx_close(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0, "phx_reply");
	send_text(0, "[\"1\",\"2\",\"room:lobby\",\"phx_leave\",{}]");
	frame f;
	CHECK(
	    take(0,
	         "[\"1\",\"2\",\"room:lobby\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]",
	         3000, &f) == 0);
	EXPECT(0, "[\"1\",\"1\",\"room:lobby\",\"phx_close\",{}]");
	WAIT_UNTIL(ch_ps_subscribers(ep->pubsub, "room:lobby") == 0, 3000);
	CHECK_EQ(ch_endpoint_broadcast(ep, "room:lobby", "after", "{}"), 0);
	send_text(0, "[\"2\",\"3\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0, "[\"2\",\"3\",\"room:lobby\",\"phx_reply\"");
	send_text(0, "[\"2\",\"4\",\"room:lobby\",\"stop\",{}]");
	EXPECT(0, "[\"2\",\"2\",\"room:lobby\",\"phx_close\",{}]");
	CHECK_EQ(count(0, "after"), 0);
	CHECK_EQ(count(0, "phx_error"), 0);
	teardown();
}

static void
test_duplicate_join_and_stale_ref(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0, "phx_reply");
	send_text(0, "[\"2\",\"2\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0,
	       "[\"2\",\"2\",\"room:lobby\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	EXPECT(0, "[\"1\",\"1\",\"room:lobby\",\"phx_close\",{}]");
	WAIT_UNTIL(ch_ps_subscribers(ep->pubsub, "room:lobby") == 1, 3000);
	/* a message with the old join_ref goes to the current channel (Phoenix
	 * forwards any non-leave event), which answers with its own join_ref */
	send_text(0, "[\"1\",\"3\",\"room:lobby\",\"ping\",{\"old\":1}]");
	EXPECT(0, "[\"2\",\"3\",\"room:lobby\",\"phx_reply\",{\"response\":{"
	          "\"old\":1},\"status\":\"ok\"}]");
	send_text(0, "[\"2\",\"4\",\"room:lobby\",\"ping\",{}]");
	EXPECT(0, "[\"2\",\"4\",\"room:lobby\",\"phx_reply\"");
	/* phx_leave with the old join_ref (the client raced a close), or with
	 * none while the join had one: ignored, no reply, the channel stays */
	send_text(0, "[\"1\",\"5\",\"room:lobby\",\"phx_leave\",{}]");
	send_text(0, "[null,\"6\",\"room:lobby\",\"phx_leave\",{}]");
	send_text(0, "[\"2\",\"7\",\"room:lobby\",\"ping\",{}]");
	EXPECT(0,
	       "[\"2\",\"7\",\"room:lobby\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	CHECK_EQ(count(0, "\"5\""), 0);
	CHECK_EQ(count(0, "\"6\""), 0);
	CHECK_EQ(count(0, "phx_close"), 0);
	CHECK_EQ(ch_ps_subscribers(ep->pubsub, "room:lobby"), 1);
	/* one broadcast, one copy */
	ch_endpoint_broadcast(ep, "room:lobby", "once", "{}");
	EXPECT(0, "once");
	usleep(100000);
	CHECK_EQ(count(0, "once"), 0);
	/* the current join_ref leaves */
	send_text(0, "[\"2\",\"8\",\"room:lobby\",\"phx_leave\",{}]");
	EXPECT(0,
	       "[\"2\",\"8\",\"room:lobby\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	EXPECT(0, "[\"2\",\"2\",\"room:lobby\",\"phx_close\",{}]");
	WAIT_UNTIL(ch_ps_subscribers(ep->pubsub, "room:lobby") == 0, 3000);
	/* V1: a join without join_ref is left by a phx_leave with any join_ref */
	client(1, NULL, 1);
	send_text(1, "{\"topic\":\"room:v1\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"1\"}");
	EXPECT(1, "phx_reply");
	send_text(1, "{\"topic\":\"room:v1\",\"event\":\"phx_leave\",\"payload\":{},\"ref\":\"2\","
	             "\"join_ref\":\"77\"}");
	EXPECT(1, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
	          "\"ref\":\"2\",\"topic\":\"room:v1\"}");
	EXPECT(1, "\"phx_close\"");
	teardown();
}

static void
test_max_channels_and_async_reply(void)
{
	setup();
	client(0, NULL, 2);
	for (int i = 0; i < 3; i++) {
		char buf[128];
		snprintf(buf, sizeof(buf), "[\"%d\",\"%d\",\"room:r%d\",\"phx_join\",{}]", i + 1,
		         i + 1, i);
		send_text(0, buf);
		EXPECT(0, "\"status\":\"ok\"");
	}
	send_text(0, "[\"9\",\"9\",\"room:r9\",\"phx_join\",{}]");
	EXPECT(0, "[\"9\",\"9\",\"room:r9\",\"phx_reply\",{\"response\":{"
	          "\"reason\":\"too many channels joined\"},\"status\":\"error\"}]");
	send_text(0, "[\"1\",\"10\",\"room:r0\",\"slow\",{}]");
	send_text(0, "[\"1\",\"11\",\"room:r0\",\"ping\",{}]");
	frame a, b;
	CHECK(take(0, "\"11\"", 3000, &a) == 0);
	CHECK(take(0,
	           "[\"1\",\"10\",\"room:r0\",\"phx_reply\",{\"response\":{"
	           "\"slow\":true},\"status\":\"ok\"}]",
	           3000, &b) == 0);
	teardown();
}

static void
test_connect_refused_and_disconnect(void)
{
	setup();
	client(0, "evil", 2);
	WAIT_UNTIL(!rt_alive(clients[0]), 3000);
	clients[0] = 0;
	client(1, "bob", 2);
	client(2, "bob", 2);
	client(3, "al", 2);
	WAIT_UNTIL(ch_ps_subscribers(ep->pubsub, "users_socket:bob") == 2, 3000);
	ch_endpoint_broadcast(ep, "users_socket:bob", "disconnect", "{}");
	WAIT_UNTIL(!rt_alive(clients[1]) && !rt_alive(clients[2]), 3000);
	CHECK_EQ(out.closed_code[1], 1000);
	CHECK(rt_alive(clients[3]));
	clients[1] = clients[2] = 0;
	teardown();
}

static void
test_transport_exit_stops_channels(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	send_text(0, "[\"2\",\"2\",\"room:two\",\"phx_join\",{}]");
	EXPECT(0, "[\"2\",\"2\"");
	CHECK_EQ(ch_ps_subscribers(ep->pubsub, "room:lobby"), 1);
	rt_send(clients[0], FT_CLOSE, NULL, 0);
	clients[0] = 0;
	WAIT_UNTIL(ch_ps_subscribers(ep->pubsub, "room:lobby") == 0 &&
	               ch_ps_subscribers(ep->pubsub, "room:two") == 0,
	           3000);
	WAIT_UNTIL(rt_process_count() == base_procs, 3000); /* the endpoint's own */
	teardown();
}

static void
test_undecodable_closes_1011(void)
{
	setup();
	client(0, NULL, 2);
	client(1, NULL, 2);
	send_text(1, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(1, "phx_reply");
	send_text(0, "not json");
	WAIT_UNTIL(!rt_alive(clients[0]), 3000);
	CHECK_EQ(out.closed_code[0], 1011);
	clients[0] = 0;
	client(2, NULL, 2);
	send_text(2, "[\"1\",\"1\",\"room:lobby\"]");
	WAIT_UNTIL(!rt_alive(clients[2]), 3000);
	CHECK_EQ(out.closed_code[2], 1011);
	clients[2] = 0;
	send_text(1, "[\"1\",\"2\",\"room:lobby\",\"ping\",{}]");
	EXPECT(1, "[\"1\",\"2\"");
	teardown();
}

static void
test_presence_state_and_diffs(void)
{
	setup();
	client(0, NULL, 2);
	client(1, NULL, 2);
	send_text(0, "[\"p1\",\"p1\",\"presence:x\",\"phx_join\",{\"name\":\"first\"}]");
	EXPECT(0,
	       "[\"p1\",\"p1\",\"presence:x\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	frame f;
	CHECK(take(0,
	           "[\"p1\",null,\"presence:x\",\"presence_state\",{\"first\":{\"metas\":[{"
	           "\"online_at\":1700000000,\"phx_ref\":\"",
	           3000, &f) == 0);
	EXPECT(0, "[null,null,\"presence:x\",\"presence_diff\",{\"joins\":{\"first\":{\"metas\":[");
	send_text(1, "[\"q1\",\"q1\",\"presence:x\",\"phx_join\",{\"name\":\"first\"}]");
	CHECK(take(1, "presence_state", 3000, &f) == 0);
	CHECK(strstr(f.text, "{\"first\":{\"metas\":[{") != NULL);
	CHECK(strstr(f.text, "},{") != NULL); /* two metas under one key */
	EXPECT(0, "\"presence_diff\",{\"joins\":{\"first\"");
	rt_send(clients[1], FT_CLOSE, NULL, 0);
	WAIT_UNTIL(!rt_alive(clients[1]), 3000);
	clients[1] = 0;
	EXPECT(0, "\"presence_diff\",{\"joins\":{},\"leaves\":{\"first\":{\"metas\":[{");
	teardown();
}

static void
test_flooding_a_busy_channel_closes_1008(void)
{
	setup_rate = CH_MSGS_UNLIMITED; /* the channel's backlog, not the rate, closes it */
	setup();
	setup_rate = 0;
	client(0, NULL, 2);
	client(1, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"room:slowpoke\",\"phx_join\",{}]");
	send_text(1, "[\"1\",\"1\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0, "phx_reply");
	EXPECT(1, "phx_reply");
	send_text(0, "[\"1\",\"2\",\"room:slowpoke\",\"hold\",{}]");
	for (int i = 0; i < 10100 && rt_alive(clients[0]); i++)
		send_text(0, "[\"1\",\"3\",\"room:slowpoke\",\"ping\",{}]");
	WAIT_UNTIL(!rt_alive(clients[0]), 10000);
	CHECK_EQ(out.closed_code[0], 1008);
	CHECK_EQ(ch_endpoint_flood_closed(ep), 0);
	clients[0] = 0;
	atomic_store(&hold_released, 1);
	send_text(1, "[\"1\",\"2\",\"room:lobby\",\"ping\",{}]");
	EXPECT(1, "[\"1\",\"2\"");
	teardown();
}

/* The flood limit: a client over max_messages_per_second (here 1 a second,
 * bursts of 2) is closed with 1008 and counted; the messages within the
 * burst are answered; another client is not affected. */
static void
test_message_rate_limit_closes_1008(void)
{
	setup_rate = 1;
	setup();
	setup_rate = 0;
	client(0, NULL, 2);
	client(1, NULL, 2);
	for (int i = 0; i < 50; i++)
		send_text(0, "[null,\"7\",\"phoenix\",\"heartbeat\",{}]");
	WAIT_UNTIL(!rt_alive(clients[0]), 5000);
	clients[0] = 0;
	CHECK_EQ(out.closed_code[0], 1008);
	CHECK_EQ(ch_endpoint_flood_closed(ep), 1);
	int answered = count(0, "phx_reply");
	CHECK_MSG(answered >= 2 && answered < 50, "%d heartbeats answered", answered);
	send_text(1, "[null,\"8\",\"phoenix\",\"heartbeat\",{}]");
	EXPECT(1, "[null,\"8\",\"phoenix\",\"phx_reply\"");
	CHECK_EQ(out.closed_code[1], 0);
	teardown();
}

/* By default there is no limit, as in Phoenix: 3000 heartbeats at once (more
 * than a 1000/s limit lets through in a burst) are all answered. */
static void
test_message_rate_default_is_off(void)
{
	setup();
	client(0, NULL, 2);
	for (int i = 0; i < 3000; i++)
		send_text(0, "[null,\"7\",\"phoenix\",\"heartbeat\",{}]");
	send_text(0, "[null,\"last\",\"phoenix\",\"heartbeat\",{}]");
	EXPECT(0, "[null,\"last\",\"phoenix\",\"phx_reply\"");
	CHECK_EQ(out.closed_code[0], 0);
	CHECK_EQ(ch_endpoint_flood_closed(ep), 0);
	teardown();
}

/* Topics that are not strings (Phoenix's serializers pass any JSON value):
 * no channel route matches them, and the socket answers as Phoenix's
 * handle_in(nil, ...) clauses do, echoing the topic as sent. */
static void
test_non_string_topic_event_and_refs(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[null,\"1\",null,\"phx_join\",{}]");
	EXPECT(0, "[null,\"1\",null,\"phx_reply\",{\"response\":{\"reason\":"
	          "\"unmatched topic\"},\"status\":\"error\"}]");
	send_text(0, "[\"2\",\"2\",42,\"ping\",{}]");
	EXPECT(0, "[null,\"2\",42,\"phx_reply\",{\"response\":{\"reason\":"
	          "\"unmatched topic\"},\"status\":\"error\"}]");
	send_text(0, "[\"3\",\"3\",1.5,\"phx_leave\",{}]");
	EXPECT(0, "[\"3\",\"3\",1.5,\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	send_text(0, "[null,\"4\",true,\"heartbeat\",{}]");
	EXPECT(0, "[null,\"4\",true,\"phx_reply\",{\"response\":\x01\"status\":\"error\"}]");
	/* chardata lists can be logged: unmatched */
	send_text(0, "[\"5\",\"5\",[\"ro\",[111,109]],\"phx_join\",{}]");
	EXPECT(0, "[null,\"5\",[\"ro\",[111,109]],\"phx_reply\",{\"response\":{"
	          "\"reason\":\"unmatched topic\"},\"status\":\"error\"}]");
	/* a string holding a NUL that no route matches */
	send_text(0, "[\"6\",\"6\",\"x\\u0000y\",\"phx_join\",{}]");
	EXPECT(0,
	       "[null,\"6\",\"x\\u0000y\",\"phx_reply\",{\"response\":\x01\"status\":\"error\"}]");
	/* an object topic outside a join */
	send_text(0, "[\"7\",\"7\",{\"a\":1},\"shout\",{}]");
	EXPECT(0, "[null,\"7\",{\"a\":1},\"phx_reply\",{\"response\":\x01\"status\":\"error\"}]");
	/* any event, ref and join_ref */
	send_text(0, "[{\"j\":1},[2],\"room:none\",\"phx_leave\",{}]");
	EXPECT(0,
	       "[{\"j\":1},[2],\"room:none\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	send_text(0, "[null,\"8\",\"room:none\",17,{}]");
	EXPECT(0,
	       "[null,\"8\",\"room:none\",\"phx_reply\",{\"response\":\x01\"status\":\"error\"}]");
	/* a non-string event for a joined topic reaches the channel, which has
	 * no clause for it: phx_error */
	send_text(0, "[\"9\",\"9\",\"room:lobby\",\"phx_join\",{}]");
	EXPECT(0,
	       "[\"9\",\"9\",\"room:lobby\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	send_text(0, "[\"9\",\"10\",\"room:lobby\",[\"ping\"],{}]");
	EXPECT(0, "[\"9\",\"9\",\"room:lobby\",\"phx_error\",{}]");
	/* V1 too (Message.from_map! takes any value) */
	client(1, NULL, 1);
	send_text(1, "{\"topic\":7,\"event\":\"phx_join\",\"payload\":{},\"ref\":\"1\"}");
	EXPECT(1, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{\"reason\":"
	          "\"unmatched topic\"},\"status\":\"error\"},\"ref\":\"1\",\"topic\":7}");
	send_text(1, "{\"topic\":null,\"event\":\"phx_leave\",\"payload\":{},\"ref\":2}");
	EXPECT(1, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
	          "\"ref\":2,\"topic\":null}");
	/* the sockets are still up */
	send_text(0, "[null,\"11\",\"phoenix\",\"heartbeat\",{}]");
	EXPECT(0, "[null,\"11\",\"phoenix\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	CHECK_EQ(out.closed_code[0], 0);
	CHECK_EQ(out.closed_code[1], 0);
	/* Joining a map topic, or a list that is not chardata, makes Phoenix's
	 * log line raise: the socket crashes (1011), as on undecodable input.  So
	 * does a topic with a NUL that a route matches (no channel can hold it). */
	const char *crashers[] = {"[null,\"1\",{\"a\":1},\"phx_join\",{}]",
	                          "[null,\"1\",[1.5],\"phx_join\",{}]",
	                          "[null,\"1\",[55296],\"phx_join\",{}]",
	                          "[null,\"1\",\"room:a\\u0000\",\"phx_join\",{}]"};
	for (int i = 0; i < 4; i++) {
		client(2 + i, NULL, 2);
		send_text(2 + i, crashers[i]);
		WAIT_UNTIL(!rt_alive(clients[2 + i]), 3000);
		CHECK_MSG(out.closed_code[2 + i] == 1011, "%s: close code %d", crashers[i],
		          out.closed_code[2 + i]);
		clients[2 + i] = 0;
	}
	teardown();
}

/* Channels written with an event table and the cJSON calls. */
static void
test_event_table_and_json_calls(void)
{
	setup();
	client(0, NULL, 2);
	client(1, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"tbl:a\",\"phx_join\",{}]");
	send_text(1, "[\"1\",\"1\",\"tbl:a\",\"phx_join\",{}]");
	EXPECT(0, "[\"1\",\"1\",\"tbl:a\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	EXPECT(1, "[\"1\",\"1\",\"tbl:a\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	send_text(0, "[\"1\",\"2\",\"tbl:a\",\"echo\",{\"a\":[1,\"x\"]}]");
	EXPECT(0, "[\"1\",\"2\",\"tbl:a\",\"phx_reply\",{\"response\":{\"a\":[1,"
	          "\"x\"]},\"status\":\"ok\"}]");
	/* exactly as received, 1.50 included */
	send_text(0, "[\"1\",\"3\",\"tbl:a\",\"raw\",{\"v\":1.50}]");
	EXPECT(0, "[\"1\",\"3\",\"tbl:a\",\"phx_reply\",{\"response\":{\"v\":"
	          "1.50},\"status\":\"ok\"}]");
	send_text(0, "[\"1\",\"4\",\"tbl:a\",\"push\",{}]");
	EXPECT(0, "[\"1\",null,\"tbl:a\",\"pushed\",{\"n\":1}]");
	EXPECT(0, "[\"1\",null,\"tbl:a\",\"empty\",{}]");
	send_text(0, "[\"1\",\"5\",\"tbl:a\",\"bcast\",{}]");
	EXPECT(0, "[\"1\",\"5\",\"tbl:a\",\"phx_reply\",{\"response\":{\"rc\":0,"
	          "\"bad\":-4},\"status\":\"ok\"}]");
	EXPECT(0, "[null,null,\"tbl:a\",\"bc\",{\"b\":true}]");
	EXPECT(1, "[null,null,\"tbl:a\",\"bc\",{\"b\":true}]");
	send_text(0, "[\"1\",\"6\",\"tbl:a\",\"bcast\",{\"from\":true}]");
	EXPECT(0, "[\"1\",\"6\",\"tbl:a\",\"phx_reply\"");
	EXPECT(1, "[null,null,\"tbl:a\",\"bc\",{\"b\":true}]");
	usleep(100000);
	CHECK_EQ(count(0, "\"bc\""), 0);
	send_text(0, "[\"1\",\"77\",\"tbl:a\",\"later\",{}]");
	EXPECT(0, "[\"1\",\"77\",\"tbl:a\",\"phx_reply\",{\"response\":{\"later\":"
	          "\"yes\"},\"status\":\"ok\"}]");
	send_text(0, "[\"1\",\"7\",\"tbl:a\",\"need_x\",{\"x\":null}]");
	EXPECT(0, "[\"1\",\"7\",\"tbl:a\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	/* a payload no clause matches, an event without a clause: phx_error */
	send_text(0, "[\"1\",\"8\",\"tbl:a\",\"need_x\",{\"y\":1}]");
	EXPECT(0, "[\"1\",\"1\",\"tbl:a\",\"phx_error\",{}]");
	send_text(1, "[\"1\",\"8\",\"tbl:a\",\"nope\",{}]");
	EXPECT(1, "[\"1\",\"1\",\"tbl:a\",\"phx_error\",{}]");
	CHECK_EQ(count(0, "\"8\""), 0);
	CHECK_EQ(count(1, "\"8\""), 0);
	/* table entries first, then the catch-all */
	send_text(0, "[\"2\",\"9\",\"mix:a\",\"phx_join\",{}]");
	EXPECT(0, "[\"2\",\"9\",\"mix:a\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	send_text(0, "[\"2\",\"10\",\"mix:a\",\"echo\",{\"e\":1}]");
	EXPECT(0,
	       "[\"2\",\"10\",\"mix:a\",\"phx_reply\",{\"response\":{\"e\":1},\"status\":\"ok\"}]");
	send_text(0, "[\"2\",\"11\",\"mix:a\",\"other\",{}]");
	EXPECT(0, "[\"2\",\"11\",\"mix:a\",\"phx_reply\",{\"response\":{"
	          "\"catch_all\":\"other\"},\"status\":\"ok\"}]");
	/* a non-string event: no clause, even with a catch-all */
	send_text(0, "[\"2\",\"12\",\"mix:a\",null,{}]");
	EXPECT(0, "[\"2\",\"2\",\"mix:a\",\"phx_error\",{}]");
	teardown();
}

/* A duplicate join whose old channel ignores "shutdown": killed after 5 s
 * (rt_shutdown_child), then phx_close for the old join and the new join's
 * reply, in that order, and nothing meanwhile. */
static void
test_duplicate_join_stubborn_channel(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[\"1\",\"1\",\"stub:a\",\"phx_join\",{}]");
	EXPECT(0, "[\"1\",\"1\",\"stub:a\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]");
	int64_t t0 = rt_now_ms();
	send_text(0, "[\"2\",\"2\",\"stub:a\",\"phx_join\",{}]");
	usleep(1000000);
	CHECK_EQ(count(0, "stub:a"), 0); /* blocked while the old one lives */
	CHECK(take(0, "[\"2\",\"2\",\"stub:a\",\"phx_reply\",{\"response\":\x01\"status\":\"ok\"}]",
	           8000, NULL) == 0);
	int64_t took = rt_now_ms() - t0;
	CHECK_MSG(took >= 4900 && took < 8000, "took %lld ms", (long long)took);
	EXPECT(0, "[\"1\",\"1\",\"stub:a\",\"phx_close\",{}]");
	teardown();
}

TEST_LIST = {
    TEST(test_event_table_and_json_calls),
    TEST(test_non_string_topic_event_and_refs),
    TEST(test_flooding_a_busy_channel_closes_1008),
    TEST(test_message_rate_limit_closes_1008),
    TEST(test_message_rate_default_is_off),
    TEST(test_presence_state_and_diffs),
    TEST(test_join_reply_and_ping),
    TEST(test_heartbeat_and_unmatched),
    TEST(test_broadcast_fastlane_and_from),
    TEST(test_fastlane_direct_path),
    TEST(test_intercept_handle_out),
    TEST(test_crash_gives_phx_error_and_rejoin),
    TEST(test_leave_and_stop_give_phx_close),
    TEST(test_duplicate_join_and_stale_ref),
    TEST(test_duplicate_join_stubborn_channel),
    TEST(test_max_channels_and_async_reply),
    TEST(test_connect_refused_and_disconnect),
    TEST(test_transport_exit_stops_channels),
    TEST(test_undecodable_closes_1011),
    TEST_END,
};
