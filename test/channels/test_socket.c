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

static int
take(int client, const char *needle, int ms, frame *f)
{
	int64_t deadline = test_now_ms() + ms;
	for (;;) {
		pthread_mutex_lock(&out.mu);
		for (int i = 0; i < out.n; i++) {
			if (out.items[i].client == client && strstr(out.items[i].text, needle)) {
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
} fake;

static void
fake_send(void *conn, rt_buf *b, int kind)
{
	fake *f = conn;
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
} fake_arg;

static int
fake_init(void *st, const void *arg, size_t size)
{
	(void)size;
	fake *f = st;
	const fake_arg *a = arg;
	f->client = a->client;
	ch_param params[2] = {{"vsn", a->vsn == 1 ? "1.0.0" : "2.0.0"}, {"user", a->token_user}};
	ch_params ps = {params, a->token_user ? 2 : 1};
	ch_connect_info info = {.peer = "127.0.0.1:1", .transport = "websocket"};
	ch_transport t = {.conn = f, .send = fake_send, .close = fake_close};
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
static const ch_route routes[] = {{"room:*", &room_ops}, {"presence:*", &pres_ops}};

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

static const ch_socket_handler handler = {
    .connect = sock_connect, .id = sock_id, .routes = routes, .nroutes = 2, .max_channels = 3};

/* ------------------------------------------------------------------ helpers */

static ch_endpoint *ep;
static rt_pid clients[8];

static void
setup(void)
{
	rt_config c = {.schedulers = 2, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
	ch_endpoint_opts o = {.handler = &handler, .secret_key_base = "secret"};
	ep = ch_endpoint_start(&o);
	CHECK(ep != NULL);
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
	WAIT_UNTIL(pubsub_count(ep->pubsub, "room:lobby") == 0, 5000);
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
	EXPECT(0, "[\"1\",\"1\",\"room:lobby\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
	send_text(0, "[\"1\",\"2\",\"room:lobby\",\"ping\",{\"n\":12345678901234567890}]");
	EXPECT(0,
	       "[\"1\",\"2\",\"room:lobby\",\"phx_reply\",{\"status\":\"ok\",\"response\":{\"n\":"
	       "12345678901234567890}}]");
	send_text(0, "[\"1\",\"3\",\"room:reply\",\"phx_join\",{}]");
	EXPECT(0, "{\"status\":\"ok\",\"response\":{\"welcome\":true}}");
	send_text(0, "[\"4\",\"4\",\"room:deny\",\"phx_join\",{}]");
	EXPECT(0, "[\"4\",\"4\",\"room:deny\",\"phx_reply\",{\"status\":\"error\",\"response\":{"
	          "\"reason\":\"unauthorized\"}}]");
	send_text(0, "[\"5\",\"5\",\"room:crashjoin\",\"phx_join\",{}]");
	EXPECT(0,
	       "[\"5\",\"5\",\"room:crashjoin\",\"phx_reply\",{\"status\":\"error\",\"response\":"
	       "{\"reason\":\"join crashed\"}}]");
	teardown();
}

static void
test_heartbeat_and_unmatched(void)
{
	setup();
	client(0, NULL, 2);
	send_text(0, "[null,\"7\",\"phoenix\",\"heartbeat\",{}]");
	EXPECT(0, "[null,\"7\",\"phoenix\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
	send_text(0, "[\"1\",\"8\",\"nope:x\",\"phx_join\",{}]");
	EXPECT(0, "[null,\"8\",\"nope:x\",\"phx_reply\",{\"status\":\"error\",\"response\":{"
	          "\"reason\":\"unmatched topic\"}}]");
	send_text(0, "[\"1\",\"9\",\"room:other\",\"ping\",{}]");
	EXPECT(0, "[null,\"9\",\"room:other\",\"phx_reply\",{\"status\":\"error\",\"response\":{"
	          "\"reason\":\"unmatched topic\"}}]");
	send_text(0, "[\"1\",\"10\",\"room:other\",\"phx_leave\",{}]");
	EXPECT(0,
	       "[\"1\",\"10\",\"room:other\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
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
	EXPECT(1, "{\"topic\":\"room:lobby\",\"event\":\"new_msg\",\"payload\":{\"body\":\"hi\"},"
	          "\"ref\":null}");
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
	EXPECT(0, "[\"3\",\"3\",\"room:lobby\",\"phx_reply\",{\"status\":\"ok\"");
	send_text(0, "[\"3\",\"4\",\"room:lobby\",\"ping\",{}]");
	EXPECT(0, "[\"3\",\"4\",\"room:lobby\",\"phx_reply\",{\"status\":\"ok\"");
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
	CHECK(take(0, "[\"1\",\"2\",\"room:lobby\",\"phx_reply\",{\"status\":\"ok\"", 3000, &f) ==
	      0);
	EXPECT(0, "[\"1\",\"1\",\"room:lobby\",\"phx_close\",{}]");
	WAIT_UNTIL(pubsub_count(ep->pubsub, "room:lobby") == 0, 3000);
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
	EXPECT(0, "[\"2\",\"2\",\"room:lobby\",\"phx_reply\",{\"status\":\"ok\"");
	EXPECT(0, "[\"1\",\"1\",\"room:lobby\",\"phx_close\",{}]");
	WAIT_UNTIL(pubsub_count(ep->pubsub, "room:lobby") == 1, 3000);
	/* a message with the old join_ref is ignored */
	send_text(0, "[\"1\",\"3\",\"room:lobby\",\"ping\",{}]");
	send_text(0, "[\"2\",\"4\",\"room:lobby\",\"ping\",{}]");
	EXPECT(0, "[\"2\",\"4\",\"room:lobby\",\"phx_reply\"");
	CHECK_EQ(count(0, "\"3\""), 0);
	/* one broadcast, one copy */
	ch_endpoint_broadcast(ep, "room:lobby", "once", "{}");
	EXPECT(0, "once");
	usleep(100000);
	CHECK_EQ(count(0, "once"), 0);
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
	EXPECT(0, "[\"9\",\"9\",\"room:r9\",\"phx_reply\",{\"status\":\"error\",\"response\":{"
	          "\"reason\":\"too many channels joined\"}}]");
	send_text(0, "[\"1\",\"10\",\"room:r0\",\"slow\",{}]");
	send_text(0, "[\"1\",\"11\",\"room:r0\",\"ping\",{}]");
	frame a, b;
	CHECK(take(0, "\"11\"", 3000, &a) == 0);
	CHECK(take(0,
	           "[\"1\",\"10\",\"room:r0\",\"phx_reply\",{\"status\":\"ok\",\"response\":{"
	           "\"slow\":true}}]",
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
	WAIT_UNTIL(pubsub_count(ep->pubsub, "users_socket:bob") == 2, 3000);
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
	CHECK_EQ(pubsub_count(ep->pubsub, "room:lobby"), 1);
	rt_send(clients[0], FT_CLOSE, NULL, 0);
	clients[0] = 0;
	WAIT_UNTIL(pubsub_count(ep->pubsub, "room:lobby") == 0 &&
	               pubsub_count(ep->pubsub, "room:two") == 0,
	           3000);
	/* only the channel supervisor, the presence tracker's supervisor and its
	 * shards (one per scheduler by default) */
	WAIT_UNTIL(rt_process_count() == 2 + (uint64_t)rt_schedulers(), 3000);
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
	EXPECT(0, "[\"p1\",\"p1\",\"presence:x\",\"phx_reply\",{\"status\":\"ok\"");
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
	setup();
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
	clients[0] = 0;
	atomic_store(&hold_released, 1);
	send_text(1, "[\"1\",\"2\",\"room:lobby\",\"ping\",{}]");
	EXPECT(1, "[\"1\",\"2\"");
	teardown();
}

TEST_LIST = {
    TEST(test_flooding_a_busy_channel_closes_1008),
    TEST(test_presence_state_and_diffs),
    TEST(test_join_reply_and_ping),
    TEST(test_heartbeat_and_unmatched),
    TEST(test_broadcast_fastlane_and_from),
    TEST(test_intercept_handle_out),
    TEST(test_crash_gives_phx_error_and_rejoin),
    TEST(test_leave_and_stop_give_phx_close),
    TEST(test_duplicate_join_and_stale_ref),
    TEST(test_max_channels_and_async_reply),
    TEST(test_connect_refused_and_disconnect),
    TEST(test_transport_exit_stops_channels),
    TEST(test_undecodable_closes_1011),
    TEST_END,
};
