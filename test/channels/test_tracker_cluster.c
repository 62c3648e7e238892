/*
 * Presence between nodes: trackers in one process, each on its own cluster
 * node over real TCP (nng bus) on loopback.  A track on one node is listed
 * on the others and reaches their diff callback; untracks and exits leave
 * there too; a node that stops takes its members with it; a late node gets
 * the whole state by transfer; a node restarted under the same name leaves
 * no ghost and no duplicate; a node with another shard count is refused.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "channels/tracker.h"
#include "test/harness.h"

#define NODES 3
#define BOUND_MS 5000 /* replication deadlines (loaded 2-core machines) */

/* The diffs each node's callback saw: written by shard processes, read by
 * the test thread, under mu. */
static struct {
	pthread_mutex_t mu;
	char log[NODES][256][96];
	int n[NODES];
} rec = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void
on_diff(void *ud, const char *topic, const trk_item *joins, size_t njoins, const trk_item *leaves,
        size_t nleaves)
{
	int node = (int)(intptr_t)ud;
	pthread_mutex_lock(&rec.mu);
	for (size_t i = 0; i < njoins && rec.n[node] < 256; i++)
		snprintf(rec.log[node][rec.n[node]++], 96, "J %s %s %s", topic, joins[i].key,
		         joins[i].meta);
	for (size_t i = 0; i < nleaves && rec.n[node] < 256; i++)
		snprintf(rec.log[node][rec.n[node]++], 96, "L %s %s %s", topic, leaves[i].key,
		         leaves[i].meta);
	pthread_mutex_unlock(&rec.mu);
}

/* How many diff entries of node equal line. */
static int
seen(int node, const char *line)
{
	int k = 0;
	pthread_mutex_lock(&rec.mu);
	for (int i = 0; i < rec.n[node]; i++)
		k += strcmp(rec.log[node][i], line) == 0;
	pthread_mutex_unlock(&rec.mu);
	return k;
}

/* A process to track: does nothing until it is told to exit. */
static int
idle_handle(void *st, rt_msg *m)
{
	(void)st;
	(void)m;
	return RT_OK;
}

static const rt_behaviour idle_behaviour = {.name = "idle", .handle = idle_handle};

typedef struct node {
	cl_node *cl;
	trk_tracker *trk;
} node;

static node nodes[NODES];
static char addr[NODES][CL_ADDR_MAX];

static void
boot(void)
{
	rt_config c = {.schedulers = 2, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
}

/* Starts node i on a port the system chooses, seeded with a running node's
 * address (the others are learned from its heartbeats). */
static void
node_start(int i, int shards)
{
	char name[32];
	snprintf(name, sizeof(name), "t%d@127.0.0.1", i + 1);
	const char *seed = NULL;
	for (int j = 0; j < NODES && !seed; j++)
		if (j != i && nodes[j].cl)
			seed = addr[j];
	cl_opts co = {.name = name,
	              .listen = "tcp://127.0.0.1:0",
	              .seed = seed,
	              .heartbeat_ms = 100,
	              .down_after_ms = 600};
	nodes[i].cl = cl_start(&co);
	CHECK(nodes[i].cl != NULL);
	snprintf(addr[i], sizeof(addr[i]), "%s", cl_addr(nodes[i].cl));
	trk_opts to = {.shards = shards,
	               .period_ms = 10,
	               .diff = on_diff,
	               .ud = (void *)(intptr_t)i,
	               .cluster = nodes[i].cl,
	               .broadcast_ms = 50};
	nodes[i].trk = trk_start(&to);
	CHECK(nodes[i].trk != NULL);
}

/* Stops a node the way the endpoint does: the tracker's processes, then
 * the cluster (goodbye), then the tracker's memory. */
static void
node_stop(int i)
{
	if (!nodes[i].trk)
		return;
	rt_pid sup = trk_sup(nodes[i].trk);
	rt_exit(sup, "shutdown");
	rt_wait_exit(sup, 10000);
	cl_stop(nodes[i].cl);
	trk_stop(nodes[i].trk);
	nodes[i] = (node){0};
}

static void
shutdown_all(void)
{
	for (int i = 0; i < NODES; i++)
		node_stop(i);
	rt_shutdown();
}

static bool
up_members(int i, size_t want)
{
	cl_member m[8];
	size_t n = cl_members(nodes[i].cl, m, 8), up = 0;
	for (size_t k = 0; k < n && k < 8; k++)
		up += m[k].up;
	return up >= want;
}

static size_t
count(int i, const char *topic)
{
	return trk_count(nodes[i].trk, topic, NULL);
}

/* The metas listed under key on node i, joined with '|'. */
typedef struct listing {
	char buf[512];
} listing;

static bool
list_visit(void *ud, const char *key, const char *meta, rt_pid pid, bool first)
{
	(void)key;
	(void)pid;
	(void)first;
	listing *l = ud;
	size_t n = strlen(l->buf);
	snprintf(l->buf + n, sizeof(l->buf) - n, "%s%s", n ? "|" : "", meta);
	return true;
}

static const char *
metas(int i, const char *topic, const char *key, listing *l)
{
	l->buf[0] = 0;
	trk_list(nodes[i].trk, topic, key, list_visit, l);
	return l->buf;
}

static void
test_track_untrack_and_exit_replicate(void)
{
	boot();
	node_start(0, 2);
	node_start(1, 2);
	WAIT_UNTIL(up_members(0, 1) && up_members(1, 1), BOUND_MS);

	rt_pid a = rt_spawn(&idle_behaviour, NULL, 0), b = rt_spawn(&idle_behaviour, NULL, 0);
	CHECK_EQ(trk_track(nodes[0].trk, a, "room:1", "alice", "{\"n\":1}"), 0);
	CHECK_EQ(trk_track(nodes[0].trk, b, "room:2", "bob", "{\"n\":2}"), 0);
	WAIT_UNTIL(count(1, "room:1") == 1 && count(1, "room:2") == 1, BOUND_MS);
	listing l;
	CHECK(strcmp(metas(1, "room:1", "alice", &l), "{\"n\":1}") == 0);
	WAIT_UNTIL(seen(1, "J room:1 alice {\"n\":1}") == 1, BOUND_MS);

	/* and the other way */
	rt_pid c = rt_spawn(&idle_behaviour, NULL, 0);
	CHECK_EQ(trk_track(nodes[1].trk, c, "room:1", "carol", "{}"), 0);
	WAIT_UNTIL(count(0, "room:1") == 2, BOUND_MS);
	WAIT_UNTIL(seen(0, "J room:1 carol {}") == 1, BOUND_MS);

	/* an update: the new meta joins, the old leaves, on the other node */
	CHECK_EQ(trk_update(nodes[0].trk, a, "room:1", "alice", "{\"n\":9}", NULL), 0);
	WAIT_UNTIL(strcmp(metas(1, "room:1", "alice", &l), "{\"n\":9}") == 0, BOUND_MS);
	WAIT_UNTIL(seen(1, "L room:1 alice {\"n\":1}") == 1, BOUND_MS);

	/* untrack */
	CHECK_EQ(trk_untrack(nodes[0].trk, a, "room:1", "alice"), 0);
	WAIT_UNTIL(count(1, "room:1") == 1, BOUND_MS);
	WAIT_UNTIL(seen(1, "L room:1 alice {\"n\":9}") == 1, BOUND_MS);

	/* a tracked process's exit */
	rt_exit(b, "kill");
	WAIT_UNTIL(count(1, "room:2") == 0, BOUND_MS);
	WAIT_UNTIL(seen(1, "L room:2 bob {\"n\":2}") == 1, BOUND_MS);

	trk_stats st;
	trk_get_stats(nodes[1].trk, &st);
	CHECK(st.deltas_received > 0);
	CHECK(st.deltas_sent > 0);
	CHECK_EQ(st.frames_refused, 0);
	/* nothing was counted twice */
	CHECK_EQ(seen(1, "J room:1 alice {\"n\":1}"), 1);
	CHECK_EQ(count(0, "room:1"), 1);
	shutdown_all();
}

static void
test_a_stopped_node_takes_its_members(void)
{
	boot();
	node_start(0, 2);
	node_start(1, 2);
	WAIT_UNTIL(up_members(0, 1) && up_members(1, 1), BOUND_MS);
	for (int k = 0; k < 5; k++) {
		char key[16];
		snprintf(key, sizeof(key), "u%d", k);
		CHECK_EQ(trk_track(nodes[0].trk, rt_spawn(&idle_behaviour, NULL, 0), "room:s", key,
		                   "{}"),
		         0);
	}
	CHECK_EQ(
	    trk_track(nodes[1].trk, rt_spawn(&idle_behaviour, NULL, 0), "room:s", "local", "{}"),
	    0);
	WAIT_UNTIL(count(1, "room:s") == 6 && count(0, "room:s") == 6, BOUND_MS);
	int64_t t0 = test_now_ms();
	node_stop(0); /* goodbye: its members leave at once, not after down_after */
	int64_t stop_ms = test_now_ms() - t0;
	WAIT_UNTIL(count(1, "room:s") == 1, BOUND_MS);
	/* (unless the stop itself took that long: nng 1.5.2's close can hang
	 * for the mesh's 2 s wait, cluster/mesh.c) */
	CHECK(test_now_ms() - t0 < 600 + 500 || stop_ms > 1000);
	WAIT_UNTIL(seen(1, "L room:s u4 {}") == 1, BOUND_MS);
	listing l;
	CHECK(strcmp(metas(1, "room:s", NULL, &l), "{}") == 0); /* only its own */
	shutdown_all();
}

static void
test_a_late_node_gets_the_state_by_transfer(void)
{
	boot();
	node_start(0, 2);
	node_start(1, 2);
	WAIT_UNTIL(up_members(0, 1) && up_members(1, 1), BOUND_MS);
	for (int k = 0; k < 20; k++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", k);
		int n = k % 2;
		CHECK_EQ(trk_track(nodes[n].trk, rt_spawn(&idle_behaviour, NULL, 0),
		                   k < 10 ? "room:a" : "room:b", key, "{\"x\":true}"),
		         0);
	}
	WAIT_UNTIL(count(0, "room:a") == 10 && count(1, "room:b") == 10, BOUND_MS);
	/* long after the deltas went out: only a transfer can bring them */
	usleep(300 * 1000);
	node_start(2, 2);
	WAIT_UNTIL(count(2, "room:a") == 10 && count(2, "room:b") == 10, BOUND_MS);
	WAIT_UNTIL(seen(2, "J room:b k19 {\"x\":true}") == 1, BOUND_MS);
	trk_stats st;
	trk_get_stats(nodes[2].trk, &st);
	CHECK(st.transfers_received >= 2);
	/* and its own presence reaches the others */
	CHECK_EQ(
	    trk_track(nodes[2].trk, rt_spawn(&idle_behaviour, NULL, 0), "room:a", "late", "{}"), 0);
	WAIT_UNTIL(count(0, "room:a") == 11 && count(1, "room:a") == 11, BOUND_MS);
	shutdown_all();
}

static void
test_a_restarted_node_leaves_no_ghost(void)
{
	boot();
	node_start(0, 2);
	node_start(1, 2);
	WAIT_UNTIL(up_members(0, 1) && up_members(1, 1), BOUND_MS);
	CHECK_EQ(trk_track(nodes[0].trk, rt_spawn(&idle_behaviour, NULL, 0), "room:r", "same",
	                   "{\"gen\":1}"),
	         0);
	CHECK_EQ(trk_track(nodes[0].trk, rt_spawn(&idle_behaviour, NULL, 0), "room:r", "old", "{}"),
	         0);
	WAIT_UNTIL(count(1, "room:r") == 2, BOUND_MS);
	char replica0[TRK_REPLICA_MAX];
	snprintf(replica0, sizeof(replica0), "%s", cl_name(nodes[0].cl));
	uint64_t inc0 = cl_incarnation(nodes[0].cl);
	for (int round = 0; round < 3; round++) {
		node_stop(0);
		node_start(0, 2); /* same name and address, a later incarnation */
		CHECK(cl_incarnation(nodes[0].cl) > inc0);
		inc0 = cl_incarnation(nodes[0].cl);
		CHECK_EQ(trk_track(nodes[0].trk, rt_spawn(&idle_behaviour, NULL, 0), "room:r",
		                   "same", "{\"gen\":2}"),
		         0);
		WAIT_UNTIL(up_members(1, 1), BOUND_MS);
		listing l;
		WAIT_UNTIL(strcmp(metas(1, "room:r", NULL, &l), "{\"gen\":2}") == 0, BOUND_MS);
	}
	/* it stays so: no ghost of an old incarnation comes back */
	usleep(400 * 1000);
	CHECK_EQ(count(1, "room:r"), 1);
	CHECK_EQ(count(0, "room:r"), 1);
	shutdown_all();
}

static uint64_t
refused(int i)
{
	trk_stats st;
	trk_get_stats(nodes[i].trk, &st);
	return st.frames_refused;
}

static void
test_another_shard_count_is_refused(void)
{
	boot();
	node_start(0, 2);
	node_start(1, 3);
	WAIT_UNTIL(up_members(0, 1) && up_members(1, 1), BOUND_MS);
	CHECK_EQ(trk_track(nodes[0].trk, rt_spawn(&idle_behaviour, NULL, 0), "room:m", "x", "{}"),
	         0);
	WAIT_UNTIL(refused(1) > 0, BOUND_MS);
	CHECK_EQ(count(1, "room:m"), 0);
	shutdown_all();
}

TEST_LIST = {
    TEST(test_track_untrack_and_exit_replicate),       TEST(test_a_stopped_node_takes_its_members),
    TEST(test_a_late_node_gets_the_state_by_transfer), TEST(test_a_restarted_node_leaves_no_ghost),
    TEST(test_another_shard_count_is_refused),         TEST_END,
};
