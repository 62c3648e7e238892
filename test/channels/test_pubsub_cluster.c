/*
 * PubSub across nodes: two endpoints, each with its own cluster node, in one
 * process over real TCP (nng bus) on loopback.  A broadcast on one node
 * reaches the subscribers of the other once and in order; what another node
 * sends that is not a well-formed broadcast is dropped and counted, and
 * nothing reaches the subscribers.
 */
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>

#include "channels/internal.h"
#include "test/harness.h"
#include "test/support/redis_server.h"

/* What the subscriber processes received: written by them, read by the test
 * thread, under mu. */
static struct {
	pthread_mutex_t mu;
	char got[2][512][64]; /* per node: payloads in arrival order */
	int n[2];
} rec = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct sub_arg {
	ch_endpoint *ep;
	int node;
} sub_arg;

static int
sub_init(void *state, const void *arg, size_t size)
{
	(void)size;
	memcpy(state, arg, sizeof(sub_arg));
	const sub_arg *a = arg;
	return ch_pubsub_subscribe(a->ep, "room:x") == 0 ? RT_OK : RT_ERROR;
}

static int
sub_handle(void *state, rt_msg *m)
{
	sub_arg *a = state;
	ch_broadcast_view v;
	if (ch_broadcast_read(m, &v) < 0)
		return RT_OK;
	pthread_mutex_lock(&rec.mu);
	if (rec.n[a->node] < 512)
		snprintf(rec.got[a->node][rec.n[a->node]++], 64, "%s %.*s", v.event,
		         (int)v.payload_len, v.payload);
	pthread_mutex_unlock(&rec.mu);
	return RT_OK;
}

static const rt_behaviour sub_behaviour = {
    .name = "test_sub", .state_size = sizeof(sub_arg), .init = sub_init, .handle = sub_handle};

static int
count(int node)
{
	pthread_mutex_lock(&rec.mu);
	int n = rec.n[node];
	pthread_mutex_unlock(&rec.mu);
	return n;
}

static bool
up_members(cl_node *c, size_t want)
{
	cl_member m[8];
	size_t n = cl_members(c, m, 8), up = 0;
	for (size_t i = 0; i < n && i < 8; i++)
		up += m[i].up;
	return up >= want;
}

static ch_endpoint *ep[2];
static char addr[2][64];

/* Starts two nodes: over the mesh, or over Redis at redis_url. */
static void
start_nodes_on(const char *redis_url)
{
	rt_config c = {.schedulers = 2, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
	for (int i = 0; i < 2; i++) {
		char name[32];
		snprintf(name, sizeof(name), "n%d@127.0.0.1", i + 1);
		const char *peers[] = {i ? addr[0] : NULL, NULL}; /* node 2 dials node 1 */
		cl_opts co = {.name = name,
		              .listen = "tcp://127.0.0.1:0",
		              .peers = peers,
		              .heartbeat_ms = 100,
		              .down_after_ms = 1000};
		if (redis_url) {
			co.link = "redis";
			co.redis_url = redis_url;
			co.listen = NULL;
			co.peers = NULL;
		}
		ch_endpoint_opts o = {.secret_key_base = "secret", .cluster = &co};
		ep[i] = ch_endpoint_start(&o);
		CHECK(ep[i] != NULL);
		snprintf(addr[i], sizeof(addr[i]), "%s", cl_addr(ch_endpoint_cluster(ep[i])));
	}
	WAIT_UNTIL(up_members(ch_endpoint_cluster(ep[0]), 1) &&
	               up_members(ch_endpoint_cluster(ep[1]), 1),
	           5000);
}

static void
start_nodes(void)
{
	start_nodes_on(NULL);
}

static void
stop_nodes(void)
{
	for (int i = 0; i < 2; i++)
		ch_endpoint_stop(ep[i]);
	rt_shutdown();
}

static void
broadcast_once_in_order(void)
{
	for (int i = 0; i < 2; i++) {
		sub_arg a = {.ep = ep[i], .node = i};
		CHECK(rt_spawn(&sub_behaviour, &a, sizeof(a)) != RT_NOPID);
		WAIT_UNTIL(ch_pubsub_subscribers(ep[i], "room:x") == 1, 3000);
	}
	for (int k = 0; k < 200; k++) {
		char p[32];
		snprintf(p, sizeof(p), "{\"n\":%d}", k);
		CHECK_EQ(
		    ch_endpoint_broadcast(ep[k % 2 ? 1 : 0], "room:x", k % 2 ? "odd" : "even", p),
		    0);
	}
	int64_t until = test_now_ms() + 5000;
	while ((count(0) < 200 || count(1) < 200) && test_now_ms() < until)
		usleep(1000);
	cl_stats st[2];
	for (int i = 0; i < 2; i++)
		cl_stats_get(ch_endpoint_cluster(ep[i]), &st[i]);
	CHECK_MSG(count(0) == 200 && count(1) == 200,
	          "received %d and %d of 200; lost %" PRIu64 " and %" PRIu64, count(0), count(1),
	          st[0].lost, st[1].lost);
	usleep(200 * 1000);
	CHECK_EQ(count(0), 200);
	CHECK_EQ(count(1), 200);
	/* each node's own broadcasts in the order sent, on both nodes */
	for (int node = 0; node < 2; node++) {
		int next[2] = {0, 1};
		for (int j = 0; j < 200; j++) {
			const char *s = rec.got[node][j];
			int odd = s[0] == 'o', n = -1;
			CHECK(sscanf(strchr(s, ':') + 1, "%d", &n) == 1);
			CHECK_MSG(n == next[odd], "node %d: %s after %d", node, s, next[odd] - 2);
			next[odd] += 2;
		}
	}
	stop_nodes();
}

static void
test_broadcast_reaches_the_other_node_once_in_order(void)
{
	start_nodes();
	broadcast_once_in_order();
}

static void
test_broadcast_over_redis(void)
{
	int port = free_port();
	redis_start(port);
	char url[64];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
	start_nodes_on(url);
	broadcast_once_in_order();
	redis_kill();
}

static void
test_direct_broadcast_reaches_only_that_node(void)
{
	start_nodes();
	for (int i = 0; i < 2; i++) {
		sub_arg a = {.ep = ep[i], .node = i};
		CHECK(rt_spawn(&sub_behaviour, &a, sizeof(a)) != RT_NOPID);
		WAIT_UNTIL(ch_pubsub_subscribers(ep[i], "room:x") == 1, 3000);
	}
	ch_pubsub *ps = ep[0]->pubsub;
	CHECK_EQ(ch_ps_direct_broadcast(ps, "n2@127.0.0.1", "room:x", CH_MSG_BROADCAST,
	                                ch_broadcast_pack("room:x", "to2", "{}", 2, false),
	                                &ch_fastlane_dispatcher),
	         0);
	CHECK_EQ(ch_ps_direct_broadcast(ps, "n1@127.0.0.1", "room:x", CH_MSG_BROADCAST,
	                                ch_broadcast_pack("room:x", "to1", "{}", 2, false),
	                                &ch_fastlane_dispatcher),
	         0);
	CHECK(ch_ps_direct_broadcast(ps, "nobody@127.0.0.1", "room:x", CH_MSG_BROADCAST,
	                             ch_broadcast_pack("room:x", "lost", "{}", 2, false),
	                             &ch_fastlane_dispatcher) < 0);
	WAIT_UNTIL(count(0) == 1 && count(1) == 1, 5000);
	usleep(200 * 1000);
	CHECK_EQ(count(0), 1);
	CHECK_EQ(count(1), 1);
	CHECK(strcmp(rec.got[0][0], "to1 {}") == 0);
	CHECK(strcmp(rec.got[1][0], "to2 {}") == 0);
	stop_nodes();
}

/* Publishes `n` broadcasts flat out from a thread of its own. */
typedef struct pub_arg {
	ch_endpoint *ep;
	int id, n;
} pub_arg;

static void *
publisher(void *arg)
{
	pub_arg *a = arg;
	char p[256];
	for (int k = 0; k < a->n; k++) {
		/* about the size of a chat message's frame */
		snprintf(p, sizeof(p), "{\"n\":%d,\"body\":\"%0160d\"}", k, a->id);
		if (ch_endpoint_broadcast(a->ep, "room:flood", a->id ? "b" : "a", p) != 0)
			return (void *)1;
	}
	return NULL;
}

/* What a flood subscriber counted: written by it, read by the test. */
static _Atomic int flood_got[2], flood_disorder[2];

static int
flood_init(void *state, const void *arg, size_t size)
{
	(void)size;
	memcpy(state, arg, sizeof(sub_arg));
	const sub_arg *a = arg;
	return ch_pubsub_subscribe(a->ep, "room:flood") == 0 ? RT_OK : RT_ERROR;
}

static int
flood_handle(void *state, rt_msg *m)
{
	sub_arg *a = state;
	ch_broadcast_view v;
	if (ch_broadcast_read(m, &v) < 0)
		return RT_OK;
	/* per publisher, n goes up by one: state keeps the next expected */
	int *next = (int *)((char *)state + sizeof(sub_arg));
	int pubid = v.event[0] == 'b', n = atoi(v.payload + 5);
	if (n != next[pubid])
		atomic_fetch_add(&flood_disorder[a->node], 1);
	next[pubid] = n + 1;
	atomic_fetch_add(&flood_got[a->node], 1);
	return RT_OK;
}

static const rt_behaviour flood_behaviour = {.name = "test_flood",
                                             .state_size = sizeof(sub_arg) + 2 * sizeof(int),
                                             .init = flood_init,
                                             .handle = flood_handle};

/* Two publishers, one per node, flat out: every broadcast reaches both
 * nodes once and in order, and the links count no loss and no drop. */
static void
test_flood_loses_nothing(void)
{
	start_nodes();
	for (int i = 0; i < 2; i++) {
		sub_arg a = {.ep = ep[i], .node = i};
		CHECK(rt_spawn(&flood_behaviour, &a, sizeof(a)) != RT_NOPID);
		WAIT_UNTIL(ch_pubsub_subscribers(ep[i], "room:flood") == 1, 3000);
	}
	enum { N = 20000 };
	pthread_t t[2];
	pub_arg pa[2] = {{ep[0], 0, N}, {ep[1], 1, N}};
	for (int i = 0; i < 2; i++)
		CHECK_EQ(pthread_create(&t[i], NULL, publisher, &pa[i]), 0);
	for (int i = 0; i < 2; i++) {
		void *rc;
		pthread_join(t[i], &rc);
		CHECK(rc == NULL);
	}
	int64_t until = test_now_ms() + 30000;
	while ((flood_got[0] < 2 * N || flood_got[1] < 2 * N) && test_now_ms() < until)
		usleep(1000);
	cl_stats st[2];
	for (int i = 0; i < 2; i++)
		cl_stats_get(ch_endpoint_cluster(ep[i]), &st[i]);
	CHECK_MSG(flood_got[0] == 2 * N && flood_got[1] == 2 * N,
	          "received %d and %d of %d; lost %" PRIu64 " and %" PRIu64 ", dropped %" PRIu64
	          " and %" PRIu64,
	          flood_got[0], flood_got[1], 2 * N, st[0].lost, st[1].lost, st[0].send_dropped,
	          st[1].send_dropped);
	CHECK_EQ(flood_disorder[0] + flood_disorder[1], 0);
	CHECK_EQ(st[0].lost + st[1].lost + st[0].send_dropped + st[1].send_dropped, 0);
	stop_nodes();
}

/* Sends one CL_SVC_PUBSUB body from a bare cluster node. */
static void
send_raw(cl_node *c, msgpack_sbuffer *sb)
{
	CHECK_EQ(cl_send_all(c, CL_SVC_PUBSUB, sb->data, sb->size), 0);
	msgpack_sbuffer_clear(sb);
}

static void
pack_bcast(msgpack_packer *pk, const char *topic, uint32_t tag, const char *dispatcher,
           const char *msg, size_t len)
{
	msgpack_pack_array(pk, 5);
	msgpack_pack_str_with_body(pk, topic, strlen(topic));
	msgpack_pack_uint32(pk, tag);
	msgpack_pack_str_with_body(pk, dispatcher, strlen(dispatcher));
	msgpack_pack_uint32(pk, 0);
	msgpack_pack_bin_with_body(pk, msg, len);
}

static void
test_malformed_broadcasts_are_dropped(void)
{
	start_nodes();
	sub_arg a = {.ep = ep[1], .node = 1};
	CHECK(rt_spawn(&sub_behaviour, &a, sizeof(a)) != RT_NOPID);
	WAIT_UNTIL(ch_pubsub_subscribers(ep[1], "room:x") == 1, 3000);
	const char *peers[] = {addr[1], NULL};
	cl_opts co = {.name = "rogue@127.0.0.1",
	              .listen = "tcp://127.0.0.1:0",
	              .peers = peers,
	              .heartbeat_ms = 100,
	              .down_after_ms = 1000};
	cl_node *rogue = cl_start(&co);
	CHECK(rogue != NULL);
	WAIT_UNTIL(up_members(rogue, 1), 5000);
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	const char good[] = "room:x\0ev\0{\"ok\":1}";
	const char bad_json[] = "room:x\0ev\0{\"ok\":";
	const char other_topic[] = "room:y\0ev\0{}";
	const char no_event[] = "room:x\0\0{}";
	const char bad_utf8[] = "room:x\0\xff\xfe\0{}";
	msgpack_sbuffer_write(&sb, "\xc1garbage", 8);
	send_raw(rogue, &sb);
	msgpack_sbuffer_write(&sb, "\xdd\xff\xff\xff\xff", 5); /* 2^32 elements claimed */
	send_raw(rogue, &sb);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_nil(&pk);
	msgpack_pack_nil(&pk);
	msgpack_pack_nil(&pk);
	msgpack_pack_nil(&pk);
	send_raw(rogue, &sb);
	pack_bcast(&pk, "room:x", CH_MSG_BROADCAST, "nosuch", good, sizeof(good));
	send_raw(rogue, &sb);
	pack_bcast(&pk, "room:x", CH_MSG_BROADCAST, "phx_fastlane", bad_json, sizeof(bad_json));
	send_raw(rogue, &sb);
	pack_bcast(&pk, "room:x", CH_MSG_BROADCAST, "phx_fastlane", other_topic,
	           sizeof(other_topic));
	send_raw(rogue, &sb);
	pack_bcast(&pk, "room:x", CH_MSG_BROADCAST, "phx_fastlane", no_event, sizeof(no_event));
	send_raw(rogue, &sb);
	pack_bcast(&pk, "room:x", CH_MSG_BROADCAST, "phx_fastlane", bad_utf8, sizeof(bad_utf8));
	send_raw(rogue, &sb);
	pack_bcast(&pk, "room:x", RT_MSG_EXIT, "default", good, sizeof(good));
	send_raw(rogue, &sb);
	pack_bcast(&pk, "room:x", CH_MSG_BROADCAST, "phx_fastlane", good, 5); /* truncated */
	send_raw(rogue, &sb);
	/* then a good one: it arrives, and it is the only one */
	pack_bcast(&pk, "room:x", CH_MSG_BROADCAST, "phx_fastlane", good, sizeof(good));
	send_raw(rogue, &sb);
	WAIT_UNTIL(count(1) == 1, 5000);
	usleep(200 * 1000);
	CHECK_EQ(count(1), 1);
	CHECK(strcmp(rec.got[1][0], "ev {\"ok\":1}") == 0);
	CHECK_EQ(ps_cluster_refused(ep[1]->ps_link), 10);
	msgpack_sbuffer_destroy(&sb);
	cl_stop(rogue);
	stop_nodes();
}

TEST_LIST = {
    TEST(test_broadcast_reaches_the_other_node_once_in_order),
    TEST(test_broadcast_over_redis),
    TEST(test_direct_broadcast_reaches_only_that_node),
    TEST(test_flood_loses_nothing),
    TEST(test_malformed_broadcasts_are_dropped),
    TEST_END,
};
