/*
 * The redis link (cluster/redis.c) against a real redis-server, started by
 * each case on a free port as a child process (killed at the end, and with
 * the test process by PR_SET_PDEATHSIG).  Each "node" is one link instance
 * attached by a runtime process of its own (as the cluster process does):
 * it forwards RT_MSG_IO to on_io and calls tick on a timer.  The node core
 * (cluster/node.c) is not linked: this file defines cl_node as a sink and
 * the functions a link calls (cl_link_deliver, cl_link_count_oversized,
 * cl_link_count_malformed).
 *
 * Frames whose first byte is 'P' are probes (counted, not kept): the cases
 * send them until one arrives, to wait for a link to be connected.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "cluster/link.h"

#include "test/harness.h"
#include "test/support/redis_server.h"

/* ------------------------------------------------------------ the sink */

#define SINK_MAX 20000

/* What one node received: written by its host process, read by the test. */
struct cl_node {
	pthread_mutex_t mu;
	size_t n;
	struct {
		size_t len;
		unsigned char *bytes;
	} f[SINK_MAX];
	atomic_uint probes;
	atomic_uint oversized;
	atomic_uint malformed;
};

void
cl_link_deliver(cl_node *c, const void *frame, size_t len)
{
	if (len > 0 && ((const unsigned char *)frame)[0] == 'P') {
		atomic_fetch_add(&c->probes, 1);
		return;
	}
	pthread_mutex_lock(&c->mu);
	if (c->n < SINK_MAX) {
		c->f[c->n].len = len;
		c->f[c->n].bytes = malloc(len ? len : 1);
		memcpy(c->f[c->n].bytes, frame, len);
		c->n++;
	}
	pthread_mutex_unlock(&c->mu);
}

void
cl_link_count_oversized(cl_node *c)
{
	atomic_fetch_add(&c->oversized, 1);
}

void
cl_link_count_malformed(cl_node *c)
{
	atomic_fetch_add(&c->malformed, 1);
}

static size_t
sink_count(cl_node *c)
{
	pthread_mutex_lock(&c->mu);
	size_t n = c->n;
	pthread_mutex_unlock(&c->mu);
	return n;
}

/* True when c received a frame equal to (p, len). */
static bool
sink_has(cl_node *c, const void *p, size_t len)
{
	bool found = false;
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->n && !found; i++)
		found = c->f[i].len == len && memcmp(c->f[i].bytes, p, len) == 0;
	pthread_mutex_unlock(&c->mu);
	return found;
}

/* ------------------------------------------------------------ nodes */

enum { T_TICK = 1, T_STOP };

typedef struct host_arg {
	void *ctx;
} host_arg;

/* A node's cluster process stand-in: owned by the runtime. */
typedef struct host_state {
	void *ctx;
} host_state;

static int
host_init(void *state, const void *arg, size_t size)
{
	(void)size;
	host_state *h = state;
	h->ctx = ((const host_arg *)arg)->ctx;
	rt_pin();
	if (cl_redis_link.attach(h->ctx) != 0)
		return rt_stop("attach failed"), RT_ERROR;
	rt_send_after(50, rt_self(), T_TICK, NULL, 0);
	return RT_OK;
}

static int
host_handle(void *state, rt_msg *m)
{
	host_state *h = state;
	switch (m->tag) {
	case RT_MSG_IO:
		cl_redis_link.on_io(h->ctx, rt_msg_data(m));
		return RT_OK;
	case T_TICK:
		cl_redis_link.tick(h->ctx);
		rt_send_after(50, rt_self(), T_TICK, NULL, 0);
		return RT_OK;
	case T_STOP:
		cl_redis_link.detach(h->ctx);
		return RT_STOP;
	}
	return RT_OK;
}

static const rt_behaviour host_behaviour = {
    .name = "redis-link-host",
    .state_size = sizeof(host_state),
    .init = host_init,
    .handle = host_handle,
};

typedef struct node {
	cl_node *sink;
	void *ctx;
	rt_pid pid;
	char name[32];
} node;

static void
node_spawn(node *n)
{
	host_arg a = {n->ctx};
	n->pid = rt_spawn(&host_behaviour, &a, sizeof a);
	CHECK(n->pid != RT_NOPID);
}

static void
node_open(node *n, const char *name, uint32_t max_frame, uint32_t queue_frames)
{
	char url[64];
	snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis_port);
	n->sink = calloc(1, sizeof *n->sink);
	pthread_mutex_init(&n->sink->mu, NULL);
	snprintf(n->name, sizeof n->name, "%s", name);
	cl_opts o = {.name = name,
	             .link = "redis",
	             .redis_url = url,
	             .namespace_ = "t",
	             .max_frame = max_frame,
	             .queue_frames = queue_frames};
	CHECK_EQ(cl_redis_link.open(n->sink, &o, &n->ctx), 0);
	node_spawn(n);
}

static void
node_close(node *n)
{
	if (n->pid && rt_alive(n->pid)) {
		rt_send(n->pid, T_STOP, NULL, 0);
		CHECK_EQ(rt_wait_exit(n->pid, 5000), 0);
	}
	cl_redis_link.close(n->ctx);
	for (size_t i = 0; i < n->sink->n; i++)
		free(n->sink->f[i].bytes);
	pthread_mutex_destroy(&n->sink->mu);
	free(n->sink);
}

/* Sends probes from a (to all, or to `to`) until b hears one. */
static bool
probe(node *a, node *b, const char *to, int ms)
{
	unsigned before = atomic_load(&b->sink->probes);
	int64_t deadline = test_now_ms() + ms;
	while (test_now_ms() < deadline) {
		if (to)
			cl_redis_link.send_to(a->ctx, to, "P", 1);
		else
			cl_redis_link.send_all(a->ctx, "P", 1);
		for (int i = 0; i < 50; i++) {
			if (atomic_load(&b->sink->probes) > before)
				return true;
			usleep(1000);
		}
	}
	return false;
}

/* Sends until the link takes the frame (its queue may be full for a while). */
static void
send_all_retry(node *a, const void *p, size_t len)
{
	int64_t deadline = test_now_ms() + 10000;
	while (cl_redis_link.send_all(a->ctx, p, len) != 0) {
		CHECK_MSG(test_now_ms() < deadline, "send_all kept failing");
		usleep(200);
	}
}

static void
start(void)
{
	rt_config cfg = {.schedulers = 2, .log_level = RT_LOG_WARNING};
	CHECK_EQ(rt_start(&cfg), 0);
	redis_start(free_port());
}

static void
finish(void)
{
	rt_shutdown();
	redis_kill();
}

/* ------------------------------------------------------------ cases */

static void
test_open_url(void)
{
	static const char *bad[] = {
	    "http://127.0.0.1:6379",
	    "redis://",
	    "redis://127.0.0.1:0",
	    "redis://127.0.0.1:70000",
	    "redis://127.0.0.1:x",
	    "redis://u:p@127.0.0.1:6379",
	    "redis://127.0.0.1:6379/2",
	    "redis:/127.0.0.1",
	    NULL,
	};
	struct cl_node sink;
	for (int i = 0; bad[i]; i++) {
		cl_opts o = {.name = "a", .redis_url = bad[i]};
		void *ctx = NULL;
		CHECK_MSG(cl_redis_link.open(&sink, &o, &ctx) == -1, "accepted %s", bad[i]);
	}
	cl_opts none = {.name = "a"};
	void *ctx = NULL;
	CHECK_EQ(cl_redis_link.open(&sink, &none, &ctx), -1);
	static const char *good[] = {"redis://127.0.0.1", "redis://localhost:6390/",
	                             "redis://[::1]:6379", NULL};
	for (int i = 0; good[i]; i++) {
		cl_opts o = {.name = "a", .redis_url = good[i]};
		CHECK_MSG(cl_redis_link.open(&sink, &o, &ctx) == 0, "refused %s", good[i]);
		CHECK_STR(cl_redis_link.addr(ctx), "");
		/* Not attached: nothing is connected, so nothing can be sent. */
		CHECK_EQ(cl_redis_link.send_all(ctx, "x", 1), -1);
		cl_redis_link.close(ctx);
	}
	CHECK_STR(cl_redis_link.name, "redis");
	CHECK(cl_redis_link.learn == NULL);
}

/* send_all reaches every other node (not the sender), send_to only the
 * named one; bytes arrive as sent. */
static void
test_all_and_to(void)
{
	start();
	node a, b, c;
	node_open(&a, "a@h", 0, 0);
	node_open(&b, "b@h", 0, 0);
	node_open(&c, "c@h", 0, 0);
	CHECK(probe(&a, &b, NULL, 10000));
	CHECK(probe(&a, &c, NULL, 10000));
	CHECK(probe(&b, &a, NULL, 10000));

	unsigned char bin[256 + 3];
	bin[0] = 'B';
	for (int i = 0; i < 256; i++)
		bin[1 + i] = (unsigned char)(255 - i); /* 0xFF first, NUL last */
	bin[257] = '\r';
	bin[258] = '\n';
	CHECK_EQ(cl_redis_link.send_all(a.ctx, bin, sizeof bin), 0);
	WAIT_UNTIL(sink_has(b.sink, bin, sizeof bin), 5000);
	WAIT_UNTIL(sink_has(c.sink, bin, sizeof bin), 5000);

	/* An empty frame and one that is only NUL bytes. */
	CHECK_EQ(cl_redis_link.send_all(a.ctx, "", 0), 0);
	CHECK_EQ(cl_redis_link.send_all(a.ctx, "\0\0\0", 3), 0);
	WAIT_UNTIL(sink_has(b.sink, "\0\0\0", 3), 5000);
	CHECK(sink_has(b.sink, "", 0));

	/* To b only: c hears a later broadcast of a, and not the frame to b. */
	CHECK_EQ(cl_redis_link.send_to(a.ctx, "b@h", "To b", 4), 0);
	CHECK_EQ(cl_redis_link.send_all(a.ctx, "Mark", 4), 0);
	WAIT_UNTIL(sink_has(c.sink, "Mark", 4), 5000);
	WAIT_UNTIL(sink_has(b.sink, "To b", 4), 5000);
	CHECK(!sink_has(c.sink, "To b", 4));
	CHECK(!sink_has(a.sink, "To b", 4));

	/* The sender does not hear its own broadcasts: a hears b's "Next",
	 * published after a's "Mark" reached b, so after "Mark" reached a. */
	CHECK_EQ(cl_redis_link.send_to(b.ctx, "a@h", "Next", 4), 0);
	WAIT_UNTIL(sink_has(a.sink, "Next", 4), 5000);
	CHECK(!sink_has(a.sink, "Mark", 4));
	CHECK(!sink_has(a.sink, bin, sizeof bin));
	CHECK(!sink_has(c.sink, "Next", 4));

	/* Bad addressees. */
	CHECK_EQ(cl_redis_link.send_to(a.ctx, "", "x", 1), -1);
	char longname[CL_NAME_MAX + 1];
	memset(longname, 'n', CL_NAME_MAX);
	longname[CL_NAME_MAX] = '\0';
	CHECK_EQ(cl_redis_link.send_to(a.ctx, longname, "x", 1), -1);

	node_close(&a);
	node_close(&b);
	node_close(&c);
	finish();
}

/* 10,000 frames from one thread arrive once each and in order. */
static void
test_order(void)
{
	start();
	node a, b;
	node_open(&a, "a", 0, 0);
	node_open(&b, "b", 0, 0);
	CHECK(probe(&a, &b, NULL, 10000));
	enum { N = 10000 };
	unsigned char f[64];
	memset(f, 0xAB, sizeof f);
	f[0] = 'F';
	for (uint32_t i = 0; i < N; i++) {
		memcpy(f + 1, &i, 4);
		send_all_retry(&a, f, 5 + (i % 50));
	}
	WAIT_UNTIL(sink_count(b.sink) >= N, 30000);
	usleep(100000);
	CHECK_EQ(sink_count(b.sink), N);
	for (uint32_t i = 0; i < N; i++) {
		uint32_t seq;
		CHECK_EQ(b.sink->f[i].len, 5 + (i % 50));
		memcpy(&seq, b.sink->f[i].bytes + 1, 4);
		CHECK_EQ(seq, i);
	}
	node_close(&a);
	node_close(&b);
	finish();
}

/* redis-server killed: sends fail (no crash, no block); restarted on the
 * same port: both links reconnect by themselves and frames flow again. */
static void
test_redis_restart(void)
{
	start();
	node a, b;
	node_open(&a, "a", 0, 0);
	node_open(&b, "b", 0, 0);
	CHECK(probe(&a, &b, NULL, 10000));
	CHECK(probe(&b, &a, NULL, 10000));

	int port = redis_port;
	redis_kill();
	int64_t deadline = test_now_ms() + 10000;
	int failed = 0;
	while (!failed && test_now_ms() < deadline) {
		if (cl_redis_link.send_all(a.ctx, "Fdown", 5) != 0)
			failed = 1;
		usleep(1000);
	}
	CHECK_MSG(failed, "sends still accepted 10 s after redis-server died");
	/* Down for a while: several reconnect attempts fail. */
	usleep(500000);
	CHECK_EQ(cl_redis_link.send_all(b.ctx, "Fdown", 5), -1);

	redis_start(port);
	CHECK(probe(&a, &b, NULL, 10000));
	CHECK(probe(&b, &a, NULL, 10000));
	CHECK(probe(&a, &b, "b", 10000));
	CHECK_EQ(cl_redis_link.send_all(a.ctx, "Fafter", 6), 0);
	WAIT_UNTIL(sink_has(b.sink, "Fafter", 6), 5000);
	node_close(&a);
	node_close(&b);
	finish();
}

/* Frames larger than the receiver's max_frame are counted and dropped:
 * a little larger (read whole, then refused), and far larger (refused
 * while arriving: the subscriber reconnects); frames flow afterwards.  The
 * sender refuses frames larger than its own max_frame. */
static void
test_oversized(void)
{
	start();
	node a, b;
	node_open(&a, "a", 4u << 20, 0);
	node_open(&b, "b", 1000, 0);
	CHECK(probe(&a, &b, NULL, 10000));

	size_t big = 4u << 20;
	unsigned char *p = malloc(big + 1);
	memset(p, 'O', big + 1);
	CHECK_EQ(cl_redis_link.send_all(a.ctx, p, big + 1), -1);
	CHECK_EQ(cl_redis_link.send_all(b.ctx, p, 1001), -1);

	CHECK_EQ(cl_redis_link.send_all(a.ctx, p, 1000), 0);
	WAIT_UNTIL(sink_count(b.sink) == 1, 5000);
	CHECK_EQ(cl_redis_link.send_all(a.ctx, p, 2000), 0);
	WAIT_UNTIL(atomic_load(&b.sink->oversized) == 1, 5000);
	CHECK_EQ(cl_redis_link.send_all(a.ctx, p, big), 0);
	WAIT_UNTIL(atomic_load(&b.sink->oversized) == 2, 10000);
	CHECK(probe(&a, &b, NULL, 10000));
	CHECK_EQ(sink_count(b.sink), 1);
	free(p);
	node_close(&a);
	node_close(&b);
	finish();
}

/* PUBLISHes payload to channel from a Redis client of its own. */
static void
redis_publish_raw(const char *channel, const void *payload, size_t len)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
	CHECK(c && !c->err);
	const char *argv[] = {"PUBLISH", channel, payload};
	size_t argl[] = {7, strlen(channel), len};
	redisReply *r = redisCommandArgv(c, 3, argv, argl);
	CHECK(r && r->type == REDIS_REPLY_INTEGER);
	freeReplyObject(r);
	redisFree(c);
}

/* Payloads that are not the link's (too short for its header, another link
 * version) are counted as malformed, not as oversized, and dropped; frames
 * flow afterwards. */
static void
test_malformed(void)
{
	start();
	node a, b;
	node_open(&a, "a", 0, 0);
	node_open(&b, "b", 0, 0);
	CHECK(probe(&a, &b, NULL, 10000));
	redis_publish_raw("t:all", "\001abc", 4);
	unsigned char other[32] = {99};
	redis_publish_raw("t:all", other, sizeof other);
	/* both nodes hear "<ns>:all" */
	WAIT_UNTIL(atomic_load(&b.sink->malformed) == 2 && atomic_load(&a.sink->malformed) == 2,
	           5000);
	CHECK_EQ(atomic_load(&b.sink->oversized), 0u);
	CHECK(probe(&a, &b, NULL, 10000));
	CHECK_EQ(sink_count(b.sink), 0);
	node_close(&a);
	node_close(&b);
	finish();
}

/* redis-server stopped (SIGSTOP): sends keep returning at once, and the
 * queue is bounded (sends fail); after SIGCONT frames flow again. */
static void
test_bounded(void)
{
	start();
	node a, b;
	node_open(&a, "a", 0, 64);
	node_open(&b, "b", 0, 0);
	CHECK(probe(&a, &b, NULL, 10000));
	kill(redis_pid, SIGSTOP);
	static unsigned char f[4096];
	memset(f, 'F', sizeof f);
	int fails = 0;
	int64_t t0 = test_now_ms();
	for (int i = 0; i < 20000; i++)
		fails += cl_redis_link.send_all(a.ctx, f, sizeof f) != 0;
	int64_t took = test_now_ms() - t0;
	kill(redis_pid, SIGCONT);
	CHECK_MSG(fails > 0, "20,000 frames of 4 KiB queued with redis-server stopped");
	CHECK_MSG(took < 5000, "sends took %lld ms", (long long)took);
	CHECK(probe(&a, &b, NULL, 10000));
	node_close(&a);
	node_close(&b);
	finish();
}

/* The cluster process stops (detach) or dies: a new one attaches and the
 * link works again. */
static void
test_reattach(void)
{
	start();
	node a, b;
	node_open(&a, "a", 0, 0);
	node_open(&b, "b", 0, 0);
	CHECK(probe(&a, &b, NULL, 10000));

	rt_send(a.pid, T_STOP, NULL, 0);
	CHECK_EQ(rt_wait_exit(a.pid, 5000), 0);
	CHECK_EQ(cl_redis_link.send_all(a.ctx, "x", 1), -1);
	node_spawn(&a);
	CHECK(probe(&a, &b, NULL, 10000));
	CHECK(probe(&b, &a, NULL, 10000));

	rt_exit(a.pid, "kill");
	CHECK_EQ(rt_wait_exit(a.pid, 5000), 0);
	node_spawn(&a);
	CHECK(probe(&a, &b, NULL, 10000));
	CHECK(probe(&b, &a, NULL, 10000));

	/* Killed, and not restarted: close frees what the dead one left. */
	rt_exit(b.pid, "kill");
	CHECK_EQ(rt_wait_exit(b.pid, 5000), 0);
	node_close(&a);
	node_close(&b);
	finish();
}

TEST_LIST = {
    TEST(test_open_url),      TEST(test_all_and_to), TEST(test_order),
    TEST(test_redis_restart), TEST(test_oversized),  TEST(test_malformed),
    TEST(test_bounded),       TEST(test_reattach),   TEST_END,
};
