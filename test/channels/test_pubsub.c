/*
 * PubSub (channels/pubsub.h) with a running runtime: registry bookkeeping at
 * scale, delivery through the default dispatcher, per-publisher order across
 * partitions, broadcast_from, dead subscribers, subscribe-then-broadcast
 * causality, the adapter calls of broadcast / local / direct / remote, and
 * supervision (a crashed partition stops the PubSub and its parent).
 * (The fastlane dispatcher is covered by test_socket.c and the integration
 * tests.)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "channels/pubsub.h"
#include "test/harness.h"

static ch_pubsub *ps;

static void
setup(void)
{
	rt_config c = {.schedulers = 2, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
	ps = ch_ps_start(NULL);
	CHECK(ps != NULL);
}

static void
teardown(void)
{
	ch_ps_stop(ps);
	ps = NULL;
	rt_shutdown();
}

static rt_pid
fake_pid(uint32_t i)
{
	return ((uint64_t)1 << 32) | (i + 100000); /* a pid no process has */
}

static void
test_many_subscribers_unsubscribe_in_any_order(void)
{
	setup();
	enum { N = 20000 };
	for (uint32_t i = 0; i < N; i++)
		CHECK_EQ(ch_ps_subscribe(ps, "room:big", fake_pid(i), "v", 1), 0);
	CHECK_EQ(ch_ps_subscribers(ps, "room:big"), N);
	/* a second subscription of the same process replaces it */
	CHECK_EQ(ch_ps_subscribe(ps, "room:big", fake_pid(7), "w", 1), 0);
	CHECK_EQ(ch_ps_subscribers(ps, "room:big"), N);
	/* remove with a stride co-prime to N: every index once, scattered */
	int64_t t0 = test_now_ms();
	for (uint32_t k = 0, i = 0; k < N; k++, i = (i + 7919) % N) {
		CHECK_EQ(ch_ps_unsubscribe(ps, "room:big", fake_pid(i)), 0);
		CHECK_EQ(ch_ps_unsubscribe(ps, "room:big", fake_pid(i)), -1); /* already gone */
		CHECK_EQ(ch_ps_subscribers(ps, "room:big"), N - k - 1);
	}
	printf("    %d unsubscribes in %lld ms\n", N, (long long)(test_now_ms() - t0));
	CHECK_EQ(ch_ps_subscribers(ps, "room:big"), 0);
	CHECK_EQ(ch_ps_unsubscribe(ps, "room:big", fake_pid(1)), -1);
	CHECK_EQ(ch_ps_subscribe(ps, "room:big", fake_pid(1), NULL, CH_PS_VALUE_SIZE + 1), -1);
	teardown();
}

static void
test_topics_are_independent(void)
{
	setup();
	char topic[32];
	for (int t = 0; t < 1000; t++) {
		snprintf(topic, sizeof(topic), "room:%d", t);
		for (uint32_t i = 0; i < 3; i++)
			CHECK_EQ(ch_ps_subscribe(ps, topic, fake_pid(i), NULL, 0), 0);
	}
	for (int t = 0; t < 1000; t += 2) {
		snprintf(topic, sizeof(topic), "room:%d", t);
		CHECK_EQ(ch_ps_unsubscribe(ps, topic, fake_pid(1)), 0);
	}
	for (int t = 0; t < 1000; t++) {
		snprintf(topic, sizeof(topic), "room:%d", t);
		CHECK_EQ(ch_ps_subscribers(ps, topic), t % 2 ? 3 : 2);
	}
	CHECK_EQ(ch_ps_subscribers(ps, "room:none"), 0);
	teardown();
}

/* ------------------------------------------------------------------ subscribers */

enum { T_MSG = 0x1000, T_SUBSCRIBE, T_GO };

/* What each subscriber saw (test-global: written by the subscriber's own
 * process, read by the test thread after a wait). */
#define NSUBS 64
static struct {
	_Atomic uint32_t got;  /* messages received */
	_Atomic uint32_t bad;  /* out of order */
	_Atomic uint32_t last; /* last sequence number */
	_Atomic uint32_t want; /* causality test: the broadcast it asked for */
	_Atomic uint32_t hit;  /* ... received (counted) */
} seen[NSUBS];

typedef struct sub_state {
	int idx;
	bool pinned;
} sub_state;

typedef struct sub_arg {
	int idx;
	bool pin;
	const char *topic;
} sub_arg;

static int
sub_init(void *st, const void *arg, size_t size)
{
	(void)size;
	sub_state *s = st;
	const sub_arg *a = arg;
	s->idx = a->idx;
	if (a->pin)
		rt_pin();
	if (a->topic)
		ch_ps_subscribe(ps, a->topic, rt_self(), NULL, 0);
	return RT_OK;
}

static int
sub_handle(void *st, rt_msg *m)
{
	sub_state *s = st;
	if (m->tag == T_MSG && m->buf && m->buf->len == 4) {
		uint32_t seq;
		memcpy(&seq, m->buf->data, 4);
		if (seq == atomic_load(&seen[s->idx].want))
			atomic_fetch_add(&seen[s->idx].hit, 1);
		if (seq != atomic_load(&seen[s->idx].last) + 1)
			atomic_fetch_add(&seen[s->idx].bad, 1);
		atomic_store(&seen[s->idx].last, seq);
		atomic_fetch_add(&seen[s->idx].got, 1);
	}
	return RT_OK;
}

static const rt_behaviour sub_behaviour = {
    .name = "test_sub", .state_size = sizeof(sub_state), .init = sub_init, .handle = sub_handle};

static rt_buf *
seq_buf(uint32_t seq)
{
	return rt_buf_from(&seq, 4);
}

static void
test_broadcast_reaches_all_in_order(void)
{
	setup();
	memset(seen, 0, sizeof(seen));
	rt_pid pids[NSUBS];
	for (int i = 0; i < NSUBS; i++) {
		/* half pinned (spread over both partitions), half free to move */
		sub_arg a = {.idx = i, .pin = i % 2 == 0, .topic = "t"};
		pids[i] = i % 2 == 0 ? rt_spawn_on(i % 4 / 2, &sub_behaviour, &a, sizeof(a))
		                     : rt_spawn(&sub_behaviour, &a, sizeof(a));
	}
	WAIT_UNTIL(ch_ps_subscribers(ps, "t") == NSUBS, 3000);
	enum { M = 2000 };
	for (uint32_t k = 1; k <= M; k++)
		CHECK_EQ(ch_ps_broadcast(ps, "t", T_MSG, seq_buf(k), NULL), 0);
	for (int i = 0; i < NSUBS; i++)
		WAIT_UNTIL(atomic_load(&seen[i].got) == M, 5000);
	for (int i = 0; i < NSUBS; i++)
		CHECK_EQ(atomic_load(&seen[i].bad), 0);
	/* broadcast_from skips the sender; no subscribers: nothing happens */
	CHECK_EQ(ch_ps_broadcast_from(ps, pids[3], "t", T_MSG, seq_buf(M + 1), NULL), 0);
	CHECK_EQ(ch_ps_broadcast(ps, "nobody", T_MSG, seq_buf(1), NULL), 0);
	for (int i = 0; i < NSUBS; i++)
		if (i != 3)
			WAIT_UNTIL(atomic_load(&seen[i].got) == M + 1, 3000);
	usleep(50000);
	CHECK_EQ(atomic_load(&seen[3].got), M);
	/* dead subscribers leave at the next broadcast */
	for (int i = 0; i < NSUBS; i += 2)
		rt_exit(pids[i], "kill");
	for (int i = 0; i < NSUBS; i += 2)
		WAIT_UNTIL(!rt_alive(pids[i]), 3000);
	CHECK_EQ(ch_ps_subscribers(ps, "t"), NSUBS);
	CHECK_EQ(ch_ps_broadcast(ps, "t", T_MSG, seq_buf(M + 2), NULL), 0);
	WAIT_UNTIL(ch_ps_subscribers(ps, "t") == NSUBS / 2, 3000);
	for (int i = 1; i < NSUBS; i += 2)
		rt_exit(pids[i], "kill");
	for (int i = 1; i < NSUBS; i += 2)
		WAIT_UNTIL(!rt_alive(pids[i]), 3000);
	teardown();
}

/* A subscriber subscribes, then tells the publisher, which broadcasts at
 * once: the broadcast must reach it (the subscription happened before). */
typedef struct pub_state {
	int dummy;
} pub_state;

static int
pub_handle(void *st, rt_msg *m)
{
	(void)st;
	if (m->tag == T_GO) {
		uint32_t seq;
		memcpy(&seq, rt_msg_data(m), 4);
		ch_ps_broadcast(ps, "c", T_MSG, seq_buf(seq), NULL);
	}
	return RT_OK;
}

static const rt_behaviour pub_behaviour = {
    .name = "test_pub", .state_size = sizeof(pub_state), .handle = pub_handle};

typedef struct joiner_arg {
	rt_pid publisher;
	uint32_t seq;
	int idx;
} joiner_arg;

static int
joiner_init(void *st, const void *arg, size_t size)
{
	(void)size;
	sub_state *s = st;
	const joiner_arg *a = arg;
	s->idx = a->idx;
	atomic_store(&seen[s->idx].want, a->seq);
	ch_ps_subscribe(ps, "c", rt_self(), NULL, 0);
	rt_send(a->publisher, T_GO, &a->seq, 4);
	return RT_OK;
}

static const rt_behaviour joiner_behaviour = {.name = "test_joiner",
                                              .state_size = sizeof(sub_state),
                                              .init = joiner_init,
                                              .handle = sub_handle};

static void
test_subscribe_happens_before_broadcast(void)
{
	setup();
	memset(seen, 0, sizeof(seen));
	rt_pid pub = rt_spawn(&pub_behaviour, NULL, 0);
	rt_pid js[NSUBS];
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < NSUBS; i++) {
			joiner_arg a = {
			    .publisher = pub, .seq = (uint32_t)(round * NSUBS + i + 1), .idx = i};
			js[i] = rt_spawn(&joiner_behaviour, &a, sizeof(a));
		}
		/* each joiner must get its own broadcast (and may get later ones) */
		for (int i = 0; i < NSUBS; i++)
			WAIT_UNTIL(atomic_load(&seen[i].hit) == (uint32_t)round + 1, 3000);
		for (int i = 0; i < NSUBS; i++) {
			rt_exit(js[i], "kill");
			WAIT_UNTIL(!rt_alive(js[i]), 3000);
			ch_ps_unsubscribe(ps, "c", js[i]);
		}
	}
	rt_exit(pub, "kill");
	WAIT_UNTIL(!rt_alive(pub), 3000);
	teardown();
}

/* ------------------------------------------------------------------ adapter */

static struct {
	pthread_mutex_t mu;
	int broadcasts, directs;
	char last_node[32], last_dispatcher[32], last_topic[32];
} ad = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *
ad_node(void *ctx)
{
	(void)ctx;
	return "a@host";
}

static int
ad_broadcast(void *ctx, const char *topic, uint32_t tag, const rt_buf *m, const char *d)
{
	(void)ctx;
	(void)tag;
	(void)m;
	pthread_mutex_lock(&ad.mu);
	ad.broadcasts++;
	snprintf(ad.last_topic, sizeof(ad.last_topic), "%s", topic);
	snprintf(ad.last_dispatcher, sizeof(ad.last_dispatcher), "%s", d);
	pthread_mutex_unlock(&ad.mu);
	return 0;
}

static int
ad_direct(void *ctx, const char *node, const char *topic, uint32_t tag, const rt_buf *m,
          const char *d)
{
	(void)ctx;
	(void)tag;
	(void)m;
	(void)d;
	(void)topic;
	pthread_mutex_lock(&ad.mu);
	ad.directs++;
	snprintf(ad.last_node, sizeof(ad.last_node), "%s", node);
	pthread_mutex_unlock(&ad.mu);
	return strcmp(node, "down@host") == 0 ? -1 : 0;
}

static const ch_ps_adapter test_adapter = {
    .name = "test", .node_name = ad_node, .broadcast = ad_broadcast, .direct_broadcast = ad_direct};

static void
test_adapter_calls(void)
{
	rt_config c = {.schedulers = 2, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
	ch_ps_opts o = {.adapter = &test_adapter};
	ps = ch_ps_start(&o);
	CHECK(ps != NULL);
	memset(seen, 0, sizeof(seen));
	CHECK_STR(ch_ps_node_name(ps), "a@host");
	sub_arg a = {.idx = 0, .topic = "x"};
	rt_pid p = rt_spawn(&sub_behaviour, &a, sizeof(a));
	WAIT_UNTIL(ch_ps_subscribers(ps, "x") == 1, 3000);

	CHECK_EQ(ch_ps_broadcast(ps, "x", T_MSG, seq_buf(1), NULL), 0);
	CHECK_EQ(ad.broadcasts, 1);
	CHECK_STR(ad.last_topic, "x");
	CHECK_STR(ad.last_dispatcher, "default");
	CHECK_EQ(ch_ps_local_broadcast(ps, "x", T_MSG, seq_buf(2), NULL), 0);
	CHECK_EQ(ad.broadcasts, 1); /* local: not to other nodes */
	CHECK_EQ(ch_ps_direct_broadcast(ps, "a@host", "x", T_MSG, seq_buf(3), NULL), 0);
	CHECK_EQ(ad.directs, 0); /* this node: delivered here */
	CHECK_EQ(ch_ps_direct_broadcast(ps, "b@host", "x", T_MSG, seq_buf(99), NULL), 0);
	CHECK_EQ(ad.directs, 1);
	CHECK_STR(ad.last_node, "b@host");
	CHECK_EQ(ch_ps_direct_broadcast(ps, "down@host", "x", T_MSG, seq_buf(99), NULL), -1);
	/* from another node, by dispatcher name */
	CHECK_EQ(ch_ps_remote_broadcast(ps, "x", T_MSG, seq_buf(4), "default"), 0);
	CHECK_EQ(ch_ps_remote_broadcast(ps, "x", T_MSG, seq_buf(99), "no_such"), -1);
	CHECK_EQ(ad.broadcasts, 1); /* a remote broadcast is not sent on */
	WAIT_UNTIL(atomic_load(&seen[0].got) == 4, 3000);
	CHECK_EQ(atomic_load(&seen[0].bad), 0);
	rt_exit(p, "kill");
	WAIT_UNTIL(!rt_alive(p), 3000);
	teardown();
}

/* A dispatcher that crashes the partition running it. */
static size_t
crash_dispatch(ch_ps_bcast *b, const ch_ps_sub *subs, size_t n, rt_pid *dead, size_t dead_cap,
               void **ctx)
{
	(void)b, (void)subs, (void)n, (void)dead, (void)dead_cap, (void)ctx;
	rt_crash("dispatcher crashed");
}

static const ch_ps_dispatcher crash_dispatcher = {.name = "crash", .dispatch = crash_dispatch};

/* A partition is not restarted with an empty table behind its subscribers'
 * backs: its crash stops the PubSub's subtree, which takes its parent (the
 * node's root) down. */
static void
test_partition_crash_stops_the_tree(void)
{
	rt_config c = {.schedulers = 2, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
	rt_sup_spec root_spec = {.strategy = RT_ONE_FOR_ONE};
	rt_pid root = rt_sup_start(&root_spec);
	ch_ps_opts o = {.supervisor = root};
	ps = ch_ps_start(&o);
	CHECK(ps != NULL);
	uint64_t procs = rt_process_count();
	CHECK(procs >= 4); /* root, the PubSub's supervisor, 2 partitions */
	sub_arg a = {.idx = 0, .topic = "x"};
	rt_pid p = rt_spawn(&sub_behaviour, &a, sizeof(a));
	WAIT_UNTIL(ch_ps_subscribers(ps, "x") == 1, 3000);
	CHECK_EQ(ch_ps_broadcast(ps, "x", T_MSG, seq_buf(1), &crash_dispatcher), 0);
	CHECK_EQ(rt_wait_exit(root, 5000), 0);
	WAIT_UNTIL(rt_process_count() == 1, 3000); /* the subscriber alone */
	rt_exit(p, "kill");
	teardown(); /* stopping a PubSub whose tree is gone: frees only */
}

TEST_LIST = {
    TEST(test_many_subscribers_unsubscribe_in_any_order),
    TEST(test_topics_are_independent),
    TEST(test_broadcast_reaches_all_in_order),
    TEST(test_subscribe_happens_before_broadcast),
    TEST(test_adapter_calls),
    TEST(test_partition_crash_stops_the_tree),
    TEST_END,
};
