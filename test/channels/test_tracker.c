/*
 * Presence as a tracker: the CRDT state alone (deltas, merges, removes,
 * full-state repair), then the shard processes with real processes
 * (monitors, diffs and their coalescing, update, read-your-writes, the
 * request bound), then the ghost: a channel whose socket closed while its
 * presence join was pending must not stay listed.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "channels/internal.h"
#include "channels/tracker.h"
#include "test/harness.h"
#include "test/support/trk_snapshot.h"

/* ------------------------------------------------------------------ State */

/* Counts reported joins and leaves. */
typedef struct tally {
	int joins, leaves;
} tally;

static void
tally_report(void *ud, const char *topic, const char *key, const char *meta, bool join)
{
	(void)topic;
	(void)key;
	(void)meta;
	tally *t = ud;
	if (join)
		t->joins++;
	else
		t->leaves++;
}

/* Sends a's delta to b and starts a new one in a. */
static void
ship(trk_state *a, trk_state *b, tally *t)
{
	trk_delta *d = trk_state_extract_delta(a);
	trk_state_reset_delta(a);
	trk_state_merge(b, d, tally_report, t);
	trk_delta_free(d);
}

static void
test_state_local_ops(void)
{
	trk_state *s = trk_state_new("a@host");
	tally t = {0};
	CHECK_EQ(trk_state_join(s, fake_pid(1), "room", "alice", "{\"n\":1}", tally_report, &t), 0);
	CHECK_EQ(trk_state_join(s, fake_pid(2), "room", "alice", "{\"n\":2}", tally_report, &t), 0);
	CHECK_EQ(trk_state_join(s, fake_pid(3), "room", "bob", "{\"n\":3}", tally_report, &t), 0);
	CHECK_EQ(trk_state_join(s, fake_pid(3), "other", "bob", "{\"n\":4}", tally_report, &t), 0);
	/* (topic, pid, key) is unique */
	CHECK_EQ(trk_state_join(s, fake_pid(1), "room", "alice", "{}", tally_report, &t), -1);
	CHECK_EQ(t.joins, 4);
	size_t keys = 0;
	CHECK_EQ(trk_state_count(s, "room", &keys), 3);
	CHECK_EQ(keys, 2);
	CHECK_EQ(trk_state_count(s, "none", &keys), 0);
	CHECK_EQ(keys, 0);
	char *snap = trk_snapshot(s, "room");
	CHECK_STR(snap, "alice={\"n\":1};alice={\"n\":2};bob={\"n\":3};");
	free(snap);
	CHECK_STR(trk_state_get(s, fake_pid(3), "other", "bob"), "{\"n\":4}");
	CHECK(trk_state_get(s, fake_pid(9), "other", "bob") == NULL);
	/* update: same element, new meta, a new tag (the clock moves twice) */
	uint64_t c0 = trk_state_clock(s, "a@host");
	CHECK_EQ(trk_state_update(s, fake_pid(1), "room", "alice", "{\"n\":9}"), 0);
	CHECK_EQ(trk_state_clock(s, "a@host"), c0 + 2);
	CHECK_STR(trk_state_get(s, fake_pid(1), "room", "alice"), "{\"n\":9}");
	CHECK_EQ(trk_state_update(s, fake_pid(1), "room", "nobody", "{}"), -1);
	/* a pid's elements in every topic go at once */
	CHECK_EQ(trk_state_leave_pid(s, fake_pid(3), tally_report, &t), 2);
	CHECK_EQ(t.leaves, 2);
	CHECK_EQ(trk_state_count(s, "room", &keys), 2);
	CHECK_EQ(keys, 1);
	CHECK_EQ(trk_state_count(s, "other", NULL), 0);
	CHECK(!trk_state_has_pid(s, fake_pid(3)));
	CHECK_EQ(trk_state_leave(s, fake_pid(2), "room", "alice", tally_report, &t), 0);
	CHECK_EQ(trk_state_leave(s, fake_pid(2), "room", "alice", tally_report, &t), -1);
	CHECK_EQ(trk_state_size(s), 1);
	trk_state_free(s);
}

static trk_state *
pair(trk_state **b)
{
	trk_state *a = trk_state_new("a@host");
	*b = trk_state_new("b@host");
	CHECK_EQ(trk_state_replica_up(a, "b@host", NULL, NULL), 0);
	CHECK_EQ(trk_state_replica_up(*b, "a@host", NULL, NULL), 0);
	return a;
}

static void
test_state_deltas_converge(void)
{
	trk_state *b, *a = pair(&b);
	tally ta = {0}, tb = {0};
	unsigned seed = 42;
	char key[16], meta[32];
	/* each replica tracks its own pids; both churn; deltas cross each round */
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 30; i++) {
			uint32_t p = (uint32_t)(rand_r(&seed) % 60);
			trk_state *s = i % 2 ? a : b;
			snprintf(key, sizeof(key), "u%u", p % 13);
			snprintf(meta, sizeof(meta), "{\"p\":%u,\"r\":%d}", p, round);
			if (trk_state_join(s, fake_pid(p), "room", key, meta, NULL, NULL) < 0)
				trk_state_leave(s, fake_pid(p), "room", key, NULL, NULL);
			if (rand_r(&seed) % 5 == 0)
				trk_state_update(s, fake_pid(p), "room", key, "{\"updated\":true}");
		}
		ship(a, b, &tb);
		ship(b, a, &ta);
	}
	char *sa = trk_snapshot(a, "room"), *sb = trk_snapshot(b, "room");
	CHECK_STR(sa, sb);
	CHECK(strlen(sa) > 0);
	CHECK_EQ(trk_state_size(a), trk_state_size(b));
	/* each side's counts agree with the joins and leaves it reported */
	CHECK_EQ(trk_state_count(b, "room", NULL), trk_state_size(b));
	CHECK(ta.joins > 0 && ta.leaves > 0 && tb.joins > 0 && tb.leaves > 0);
	/* each knows the other's clock */
	CHECK_EQ(trk_state_clock(a, "b@host"), trk_state_clock(b, "b@host"));
	CHECK_EQ(trk_state_clock(b, "a@host"), trk_state_clock(a, "a@host"));
	free(sa);
	free(sb);
	trk_state_free(a);
	trk_state_free(b);
}

static void
test_state_remove_wins_over_the_add_it_saw(void)
{
	trk_state *b, *a = pair(&b);
	trk_state *c = trk_state_new("c@host");
	trk_state_replica_up(c, "a@host", NULL, NULL);
	tally t = {0};
	trk_state_join(a, fake_pid(1), "room", "x", "{\"v\":1}", NULL, NULL);
	trk_delta *d1 = trk_state_extract_delta(a);
	trk_state_reset_delta(a);
	trk_state_merge(b, d1, tally_report, &t);
	CHECK_EQ(trk_state_count(b, "room", NULL), 1);
	/* b adds y under the same key, concurrently with a's remove of x */
	trk_state_join(b, fake_pid(2), "room", "x", "{\"v\":2}", NULL, NULL);
	trk_state_leave(a, fake_pid(1), "room", "x", NULL, NULL);
	trk_delta *d2 = trk_state_extract_delta(a);
	trk_state_reset_delta(a);
	trk_state_merge(b, d2, tally_report, &t);
	CHECK_EQ(t.joins, 1);
	CHECK_EQ(t.leaves, 1);
	char *sb = trk_snapshot(b, "room");
	CHECK_STR(sb, "x={\"v\":2};"); /* x gone, the concurrent y stays */
	free(sb);
	/* an old copy of the add does not bring x back (no ghost) */
	trk_state_merge(b, d1, tally_report, &t);
	CHECK_EQ(t.joins, 1);
	CHECK_EQ(trk_state_count(b, "room", NULL), 1);
	/* out of order: the remove first, then the add it saw: x never shows */
	tally tc = {0};
	trk_state_merge(c, d2, tally_report, &tc);
	trk_state_merge(c, d1, tally_report, &tc);
	CHECK_EQ(tc.joins, 0);
	CHECK_EQ(trk_state_count(c, "room", NULL), 0);
	/* and the concurrent add reaches a intact */
	tally ta = {0};
	ship(b, a, &ta);
	CHECK_EQ(ta.joins, 1);
	CHECK_EQ(ta.leaves, 0);
	char *sa = trk_snapshot(a, "room");
	CHECK_STR(sa, "x={\"v\":2};");
	free(sa);
	trk_delta_free(d1);
	trk_delta_free(d2);
	trk_state_free(a);
	trk_state_free(b);
	trk_state_free(c);
}

static void
test_state_no_duplicates(void)
{
	trk_state *b, *a = pair(&b);
	for (uint32_t i = 0; i < 100; i++)
		trk_state_join(a, fake_pid(i), "room", i % 2 ? "odd" : "even", "{}", NULL, NULL);
	trk_delta *d = trk_state_extract_delta(a);
	tally t = {0};
	trk_state_merge(b, d, tally_report, &t);
	trk_state_merge(b, d, tally_report, &t); /* twice */
	CHECK_EQ(t.joins, 100);
	trk_delta *full = trk_state_extract(a, "b@host");
	trk_state_merge(b, full, tally_report, &t); /* and the whole state */
	CHECK_EQ(t.joins, 100);
	CHECK_EQ(t.leaves, 0);
	size_t keys;
	CHECK_EQ(trk_state_count(b, "room", &keys), 100);
	CHECK_EQ(keys, 2);
	/* the extract left b's own elements out */
	trk_state_join(b, fake_pid(500), "room", "mine", "{}", NULL, NULL);
	trk_delta *fb = trk_state_extract(b, "b@host");
	for (size_t i = 0; i < fb->nvalues; i++)
		CHECK(strcmp(fb->values[i].key, "mine") != 0);
	trk_delta_free(fb);
	trk_delta_free(d);
	trk_delta_free(full);
	trk_state_free(a);
	trk_state_free(b);
}

static void
test_state_full_state_repairs_a_lost_delta(void)
{
	trk_state *b, *a = pair(&b);
	tally t = {0};
	for (uint32_t i = 0; i < 10; i++)
		trk_state_join(a, fake_pid(i), "room", "k", "{}", NULL, NULL);
	ship(a, b, &t);
	CHECK_EQ(trk_state_count(b, "room", NULL), 10);
	/* a delta with removes and adds is lost on the way */
	for (uint32_t i = 0; i < 5; i++)
		trk_state_leave(a, fake_pid(i), "room", "k", NULL, NULL);
	trk_state_join(a, fake_pid(20), "room", "new", "{}", NULL, NULL);
	trk_state_reset_delta(a);
	/* the next one arrives: it does not carry the lost changes */
	trk_state_join(a, fake_pid(21), "room", "newer", "{}", NULL, NULL);
	ship(a, b, &t);
	CHECK_EQ(trk_state_count(b, "room", NULL), 11);
	CHECK(trk_state_clock(b, "a@host") < trk_state_clock(a, "a@host"));
	/* the whole state repairs it: removes included */
	trk_delta *full = trk_state_extract(a, "b@host");
	trk_state_merge(b, full, tally_report, &t);
	trk_delta_free(full);
	char *sa = trk_snapshot(a, "room"), *sb = trk_snapshot(b, "room");
	CHECK_STR(sa, sb);
	CHECK_EQ(trk_state_count(b, "room", NULL), 7);
	CHECK_EQ(trk_state_clock(b, "a@host"), trk_state_clock(a, "a@host"));
	free(sa);
	free(sb);
	/* an unknown replica's data is ignored until it is up */
	trk_state *c = trk_state_new("c@host");
	trk_state_join(c, fake_pid(1), "room", "c", "{}", NULL, NULL);
	ship(c, a, &t);
	CHECK_EQ(trk_state_count(a, "room", NULL), 7);
	trk_state_replica_up(a, "c@host", NULL, NULL);
	trk_delta *fc = trk_state_extract(c, "a@host");
	trk_state_merge(a, fc, tally_report, &t);
	trk_delta_free(fc);
	CHECK_EQ(trk_state_count(a, "room", NULL), 8);
	trk_state_free(a);
	trk_state_free(b);
	trk_state_free(c);
}

static void
test_state_update_replicates(void)
{
	trk_state *b, *a = pair(&b);
	tally t = {0};
	trk_state_join(a, fake_pid(1), "room", "k", "{\"v\":1}", NULL, NULL);
	ship(a, b, &t);
	trk_state_update(a, fake_pid(1), "room", "k", "{\"v\":2}");
	ship(a, b, &t);
	char *sb = trk_snapshot(b, "room");
	CHECK_STR(sb, "k={\"v\":2};");
	free(sb);
	CHECK_EQ(t.joins, 2);
	CHECK_EQ(t.leaves, 1);
	trk_state_free(a);
	trk_state_free(b);
}

static void
test_state_replica_down_up_and_permdown(void)
{
	trk_state *b, *a = pair(&b);
	tally t = {0};
	for (uint32_t i = 0; i < 3; i++)
		trk_state_join(a, fake_pid(i), "room", "k", "{}", NULL, NULL);
	trk_state_join(b, fake_pid(9), "room", "b", "{}", NULL, NULL);
	ship(a, b, &t);
	CHECK_EQ(trk_state_count(b, "room", NULL), 4);
	/* down: a's presences leave the lists, reported as leaves */
	tally down = {0};
	CHECK_EQ(trk_state_replica_down(b, "a@host", tally_report, &down), 0);
	CHECK_EQ(down.leaves, 3);
	CHECK_EQ(trk_state_count(b, "room", NULL), 1);
	CHECK_EQ(trk_state_replica_down(b, "b@host", NULL, NULL), -1); /* the local one */
	/* its changes keep merging meanwhile, silently */
	trk_state_leave(a, fake_pid(0), "room", "k", NULL, NULL);
	trk_state_join(a, fake_pid(5), "room", "k", "{\"new\":1}", NULL, NULL);
	tally quiet = {0};
	ship(a, b, &quiet);
	CHECK_EQ(quiet.joins + quiet.leaves, 0);
	CHECK_EQ(trk_state_count(b, "room", NULL), 1);
	/* up again: what it has now joins */
	tally up = {0};
	CHECK_EQ(trk_state_replica_up(b, "a@host", tally_report, &up), 0);
	CHECK_EQ(up.joins, 3);
	char *sa = trk_snapshot(a, "room"), *sb = trk_snapshot(b, "room");
	char expected[256];
	snprintf(expected, sizeof(expected), "b={};%s", sa); /* b's own, then a's as a has them */
	CHECK_STR(sb, expected);
	CHECK_EQ(trk_state_count(b, "room", NULL), 4);
	free(sa);
	free(sb);
	/* permdown: forgotten, and its old data stays out until it is up */
	trk_state_replica_down(b, "a@host", NULL, NULL);
	CHECK_EQ(trk_state_remove_down_replica(b, "a@host"), 0);
	CHECK_EQ(trk_state_size(b), 1);
	CHECK_EQ(trk_state_clock(b, "a@host"), 0);
	trk_delta *full = trk_state_extract(a, "b@host");
	trk_state_merge(b, full, NULL, NULL);
	CHECK_EQ(trk_state_count(b, "room", NULL), 1);
	CHECK_EQ(trk_state_replica_up(b, "a@host", NULL, NULL), 0);
	tally again = {0};
	trk_state_merge(b, full, tally_report, &again);
	CHECK_EQ(again.joins, 3);
	CHECK_EQ(trk_state_count(b, "room", NULL), 4);
	CHECK_EQ(trk_state_clock(b, "a@host"), trk_state_clock(a, "a@host"));
	trk_delta_free(full);
	trk_state_free(a);
	trk_state_free(b);
}

/* Many replicas (a cluster of 51 nodes): the table of replicas grows past
 * its first slots, and a slot past the old end starts clean (it was freed
 * as if it held a cloud: a node of a 51-node cluster crashed at start).
 * The heap is first strewn with freed junk so that grown memory is not
 * zero by luck. */
static void
test_state_many_replicas(void)
{
	for (size_t sz = 64; sz <= 65536; sz += 64) {
		unsigned char *junk = malloc(sz);
		memset(junk, 0xA5, sz);
		free(junk);
	}
	trk_state *a = trk_state_new("a@host");
	char name[32];
	for (int i = 0; i < 60; i++) {
		snprintf(name, sizeof(name), "n%d@host#1", i);
		CHECK_EQ(trk_state_replica_up(a, name, NULL, NULL), 0);
	}
	/* forgotten replicas' slots are taken again, and more past them */
	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "n%d@host#1", i);
		CHECK_EQ(trk_state_replica_down(a, name, NULL, NULL), 0);
		CHECK_EQ(trk_state_remove_down_replica(a, name), 0);
	}
	for (int i = 0; i < 30; i++) {
		snprintf(name, sizeof(name), "n%d@host#2", i);
		CHECK_EQ(trk_state_replica_up(a, name, NULL, NULL), 0);
	}
	/* a replica in a grown slot replicates as any other */
	trk_state *b = trk_state_new("n59@host#1");
	CHECK_EQ(trk_state_replica_up(b, "a@host", NULL, NULL), 0);
	trk_state_join(b, fake_pid(1), "room", "k59", "{}", NULL, NULL);
	tally t = {0};
	trk_delta *full = trk_state_extract(b, "a@host");
	trk_state_merge(a, full, tally_report, &t);
	CHECK_EQ(t.joins, 1);
	CHECK_EQ(trk_state_count(a, "room", NULL), 1);
	trk_delta_free(full);
	trk_state_free(b);
	trk_state_free(a);
}

/* ------------------------------------------------------------------ shards, with processes */

static ch_endpoint *ep;

static void
setup_n(int schedulers, uint32_t period_ms, uint32_t max_pending)
{
	rt_config c = {.schedulers = schedulers, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
	ch_endpoint_opts o = {.secret_key_base = "secret",
	                      .presence_period_ms = period_ms,
	                      .presence_max_pending = max_pending};
	ep = ch_endpoint_start(&o);
	CHECK(ep != NULL);
}

static rt_pid subs[8];
static int nsubs;

static void
teardown(void)
{
	for (int i = 0; i < nsubs; i++)
		rt_exit(subs[i], "kill");
	nsubs = 0;
	ch_endpoint_stop(ep);
	WAIT_UNTIL(rt_process_count() == 0, 5000);
	rt_shutdown();
}

/* Diffs received by the subscriber process. */
static struct {
	pthread_mutex_t mu;
	char *diffs[256];
	int n;
} rx = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void
rx_clear(void)
{
	pthread_mutex_lock(&rx.mu);
	for (int i = 0; i < rx.n; i++)
		free(rx.diffs[i]);
	rx.n = 0;
	pthread_mutex_unlock(&rx.mu);
}

static int
rx_count(void)
{
	pthread_mutex_lock(&rx.mu);
	int n = rx.n;
	pthread_mutex_unlock(&rx.mu);
	return n;
}

static int
sub_init(void *st, const void *arg, size_t size)
{
	(void)st;
	return ch_pubsub_subscribe(ep, (const char *)arg) == 0 && size ? RT_OK : RT_ERROR;
}

static int
sub_handle(void *st, rt_msg *m)
{
	(void)st;
	ch_broadcast_view v;
	if (m->tag != CH_MSG_BROADCAST || ch_broadcast_read(m, &v) < 0 ||
	    strcmp(v.event, "presence_diff") != 0)
		return RT_OK;
	pthread_mutex_lock(&rx.mu);
	if (rx.n < 256)
		rx.diffs[rx.n++] = strndup(v.payload, v.payload_len);
	pthread_mutex_unlock(&rx.mu);
	return RT_OK;
}

static void
sub_terminate(void *st, const char *reason)
{
	(void)st;
	(void)reason;
}

static const rt_behaviour sub_behaviour = {
    .name = "subscriber", .init = sub_init, .handle = sub_handle, .terminate = sub_terminate};

static rt_pid
subscriber(const char *topic)
{
	rt_pid p = rt_spawn(&sub_behaviour, topic, strlen(topic) + 1);
	subs[nsubs++] = p;
	WAIT_UNTIL(ch_ps_subscribers(ep->pubsub, topic) == 1, 2000);
	return p;
}

/* phoenix.js's Presence.syncDiff over the received diffs, on a set of
 * "key/phx_ref" strings: joins first, then leaves. */
typedef struct view {
	char *refs[1024];
	int n;
} view;

static void
view_apply(view *v, const char *diff)
{
	cJSON *d = cJSON_Parse(diff);
	CHECK(d != NULL);
	const char *parts[2] = {"joins", "leaves"};
	for (int p = 0; p < 2; p++) {
		const cJSON *side = cJSON_GetObjectItemCaseSensitive(d, parts[p]);
		CHECK(cJSON_IsObject(side));
		const cJSON *k;
		cJSON_ArrayForEach(k, side)
		{
			const cJSON *metas = cJSON_GetObjectItemCaseSensitive(k, "metas");
			CHECK(cJSON_IsArray(metas));
			const cJSON *m;
			cJSON_ArrayForEach(m, metas)
			{
				const cJSON *ref = cJSON_GetObjectItemCaseSensitive(m, "phx_ref");
				CHECK(cJSON_IsString(ref));
				char id[256];
				snprintf(id, sizeof(id), "%s/%s", k->string, ref->valuestring);
				int at = -1;
				for (int i = 0; i < v->n; i++)
					if (strcmp(v->refs[i], id) == 0)
						at = i;
				if (p == 0 && at < 0 && v->n < 1024)
					v->refs[v->n++] = strdup(id);
				if (p == 1 && at >= 0) {
					free(v->refs[at]);
					v->refs[at] = v->refs[--v->n];
				}
			}
		}
	}
	cJSON_Delete(d);
}

static void
view_from_rx(view *v)
{
	pthread_mutex_lock(&rx.mu);
	for (int i = 0; i < rx.n; i++)
		view_apply(v, rx.diffs[i]);
	pthread_mutex_unlock(&rx.mu);
}

static void
view_free(view *v)
{
	for (int i = 0; i < v->n; i++)
		free(v->refs[i]);
	v->n = 0;
}

/* A member: tracks itself in init; stops, crashes or untracks on demand. */
enum { M_STOP = 1, M_CRASH, M_UNTRACK, M_UPDATE };

typedef struct member_arg {
	char topic[64], key[64], meta[128];
} member_arg;

static struct {
	pthread_mutex_t mu;
	int track_rc[64];
	bool saw_self[64];
	int n;
} mrec = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct member {
	member_arg a;
} member;

static int
member_init(void *st, const void *arg, size_t size)
{
	member *m = st;
	(void)size;
	memcpy(&m->a, arg, sizeof(m->a));
	int rc = ch_presence_track_pid(ep, rt_self(), m->a.topic, m->a.key, m->a.meta, NULL);
	/* read-your-writes: this process's list shows its own track at once */
	char *list = ch_presence_list_topic(ep, m->a.topic);
	cJSON *obj = cJSON_Parse(list);
	bool saw = cJSON_GetObjectItemCaseSensitive(obj, m->a.key) != NULL;
	cJSON_Delete(obj);
	free(list);
	pthread_mutex_lock(&mrec.mu);
	if (mrec.n < 64) {
		mrec.track_rc[mrec.n] = rc;
		mrec.saw_self[mrec.n++] = saw;
	}
	pthread_mutex_unlock(&mrec.mu);
	return RT_OK;
}

static int
member_handle(void *st, rt_msg *msg)
{
	member *m = st;
	switch (msg->tag) {
	case M_STOP:
		return rt_stop("normal");
	case M_CRASH:
		rt_crash("member crashes on purpose");
	case M_UNTRACK:
		ch_presence_untrack_pid(ep, rt_self(), m->a.topic, m->a.key);
		break;
	case M_UPDATE:
		ch_presence_update_pid(ep, rt_self(), m->a.topic, m->a.key, "{\"status\":\"away\"}",
		                       NULL);
		break;
	default:
		break;
	}
	return RT_OK;
}

static void
member_terminate(void *st, const char *reason)
{
	(void)st;
	(void)reason;
}

static const rt_behaviour member_behaviour = {.name = "member",
                                              .state_size = sizeof(member),
                                              .init = member_init,
                                              .handle = member_handle,
                                              .terminate = member_terminate};

static rt_pid
spawn_member(const char *topic, const char *key)
{
	member_arg a;
	memset(&a, 0, sizeof(a));
	snprintf(a.topic, sizeof(a.topic), "%s", topic);
	snprintf(a.key, sizeof(a.key), "%s", key);
	snprintf(a.meta, sizeof(a.meta), "{\"online_at\":%lld}", (long long)(rt_wall_ms() / 1000));
	return rt_spawn(&member_behaviour, &a, sizeof(a));
}

static void
test_exit_for_any_reason_is_a_leave(void)
{
	setup_n(2, 0, 0);
	subscriber("room:x");
	rt_pid a = spawn_member("room:x", "alice");
	rt_pid b = spawn_member("room:x", "alice");
	rt_pid c = spawn_member("room:x", "carol");
	size_t keys = 0;
	WAIT_UNTIL(ch_presence_count(ep, "room:x", &keys) == 3, 2000);
	CHECK_EQ(keys, 2);
	pthread_mutex_lock(&mrec.mu);
	for (int i = 0; i < mrec.n; i++) {
		CHECK_EQ(mrec.track_rc[i], 0);
		CHECK(mrec.saw_self[i]);
	}
	pthread_mutex_unlock(&mrec.mu);
	/* list: {key: {metas: [...]}} with a phx_ref in each meta */
	char *list = ch_presence_list_topic(ep, "room:x");
	cJSON *obj = cJSON_Parse(list);
	free(list);
	const cJSON *al = cJSON_GetObjectItemCaseSensitive(obj, "alice");
	CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(al, "metas")), 2);
	const cJSON *m0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(al, "metas"), 0);
	CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m0, "phx_ref")));
	CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m0, "online_at")));
	cJSON_Delete(obj);
	char *one = ch_presence_get_by_key(ep, "room:x", "carol");
	CHECK(one && strncmp(one, "{\"metas\":[{", 11) == 0);
	free(one);
	CHECK(ch_presence_get_by_key(ep, "room:x", "nobody") == NULL);
	/* a crash, a normal exit and a kill: each a leave */
	rt_send(a, M_CRASH, NULL, 0);
	rt_send(b, M_STOP, NULL, 0);
	rt_exit(c, "kill");
	WAIT_UNTIL(ch_presence_count(ep, "room:x", &keys) == 0, 2000);
	CHECK_EQ(keys, 0);
	/* the subscriber's view, built from the diffs alone, is empty too */
	view v = {.n = 0};
	WAIT_UNTIL((view_free(&v), view_from_rx(&v), v.n == 0 && rx_count() >= 1), 2000);
	pthread_mutex_lock(&rx.mu);
	CHECK(strstr(rx.diffs[0], "\"carol\":{\"metas\":[{\"online_at\":") != NULL);
	pthread_mutex_unlock(&rx.mu);
	view_free(&v);
	rx_clear();
	teardown();
}

static void
test_diffs_are_coalesced_per_period(void)
{
	setup_n(2, 500, 0); /* a long period, so the batch is certain */
	subscriber("room:c");
	rt_pid m[10];
	char key[16];
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "u%d", i);
		m[i] = spawn_member("room:c", key);
	}
	WAIT_UNTIL(ch_presence_count(ep, "room:c", NULL) == 10, 2000);
	/* one member joins and leaves inside the same period */
	rt_send(m[3], M_STOP, NULL, 0);
	WAIT_UNTIL(rx_count() >= 1, 2000);
	usleep(1200 * 1000);
	CHECK(rx_count() <= 2); /* 11 changes: one or two diffs, not eleven */
	view v = {.n = 0};
	view_from_rx(&v);
	CHECK_EQ(v.n, 9); /* u3's join and leave cancel out in syncDiff */
	for (int i = 0; i < v.n; i++)
		CHECK(strncmp(v.refs[i], "u3/", 3) != 0);
	view_free(&v);
	for (int i = 0; i < 10; i++)
		rt_exit(m[i], "kill");
	WAIT_UNTIL(ch_presence_count(ep, "room:c", NULL) == 0, 2000);
	rx_clear();
	teardown();
}

static void
test_update_sets_phx_ref_prev(void)
{
	setup_n(2, 10, 0);
	subscriber("room:u");
	rt_pid a = spawn_member("room:u", "alice");
	WAIT_UNTIL(rx_count() == 1, 2000);
	char *before = ch_presence_get_by_key(ep, "room:u", "alice");
	cJSON *b = cJSON_Parse(before);
	free(before);
	const char *old_ref =
	    cJSON_GetObjectItemCaseSensitive(
	        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(b, "metas"), 0), "phx_ref")
	        ->valuestring;
	rt_send(a, M_UPDATE, NULL, 0);
	WAIT_UNTIL(rx_count() == 2, 2000);
	pthread_mutex_lock(&rx.mu);
	cJSON *d = cJSON_Parse(rx.diffs[1]);
	pthread_mutex_unlock(&rx.mu);
	const cJSON *jm =
	    cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
	                           cJSON_GetObjectItemCaseSensitive(
	                               cJSON_GetObjectItemCaseSensitive(d, "joins"), "alice"),
	                           "metas"),
	                       0);
	const cJSON *lm =
	    cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
	                           cJSON_GetObjectItemCaseSensitive(
	                               cJSON_GetObjectItemCaseSensitive(d, "leaves"), "alice"),
	                           "metas"),
	                       0);
	CHECK(jm && lm);
	CHECK_STR(cJSON_GetObjectItemCaseSensitive(jm, "status")->valuestring, "away");
	CHECK_STR(cJSON_GetObjectItemCaseSensitive(jm, "phx_ref_prev")->valuestring, old_ref);
	CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(jm, "phx_ref")->valuestring, old_ref) != 0);
	CHECK_STR(cJSON_GetObjectItemCaseSensitive(lm, "phx_ref")->valuestring, old_ref);
	cJSON_Delete(d);
	cJSON_Delete(b);
	/* updating what is not tracked is refused */
	CHECK_EQ(ch_presence_update_pid(ep, a, "room:u", "nobody", "{}", NULL), CH_PRESENCE_ENOENT);
	/* untrack, then a leave */
	rt_send(a, M_UNTRACK, NULL, 0);
	WAIT_UNTIL(ch_presence_count(ep, "room:u", NULL) == 0, 2000);
	CHECK(rt_alive(a));
	rt_send(a, M_STOP, NULL, 0);
	rx_clear();
	teardown();
}

static void
fetch_hook(const char *topic, cJSON *presences, void *ud)
{
	(void)ud;
	cJSON *k;
	cJSON_ArrayForEach(k, presences) cJSON_AddStringToObject(k, "topic", topic);
}

static void
test_fetch_hook_enriches_lists_and_diffs(void)
{
	setup_n(2, 10, 0);
	ch_presence_set_fetch(ep, fetch_hook, NULL);
	subscriber("room:f");
	rt_pid a = spawn_member("room:f", "alice");
	WAIT_UNTIL(rx_count() == 1, 2000);
	pthread_mutex_lock(&rx.mu);
	CHECK(strstr(rx.diffs[0], "\"topic\":\"room:f\"") != NULL);
	pthread_mutex_unlock(&rx.mu);
	char *list = ch_presence_list_topic(ep, "room:f");
	CHECK(strstr(list, "\"topic\":\"room:f\"") != NULL);
	free(list);
	char *one = ch_presence_get_by_key(ep, "room:f", "alice");
	CHECK(strstr(one, "\"topic\":\"room:f\"") != NULL);
	free(one);
	rt_send(a, M_STOP, NULL, 0);
	WAIT_UNTIL(ch_presence_count(ep, "room:f", NULL) == 0, 2000);
	rx_clear();
	teardown();
}

/* A driver that tracks many (dead) pids in one handler call: with one
 * scheduler the shard cannot run meanwhile, so the bound shows. */
static struct {
	int ok, busy, other, dup;
	uint32_t pending, pending_after;
	_Atomic int done; /* set last: the fields above are then the main thread's */
} drv;

static int
driver_init(void *st, const void *arg, size_t size)
{
	(void)st;
	(void)arg;
	(void)size;
	for (uint32_t i = 0; i < 100; i++) {
		int rc = ch_presence_track_pid(ep, fake_pid(1000 + i), "room:b", "k", "{}", NULL);
		if (rc == 0)
			drv.ok++;
		else if (rc == CH_PRESENCE_EBUSY)
			drv.busy++;
		else
			drv.other++;
	}
	/* already tracked (queued): refused at once */
	drv.dup = ch_presence_track_pid(ep, fake_pid(1000), "room:b", "k", "{}", NULL);
	/* an untrack is never refused */
	CHECK_EQ(ch_presence_untrack_pid(ep, fake_pid(1001), "room:b", "k"), 0);
	trk_stats s;
	trk_get_stats(presence_tracker(ep->presence), &s);
	drv.pending = s.pending;
	/* and untracks of nothing queue nothing: they cannot grow the queue */
	for (uint32_t i = 0; i < 10000; i++) {
		CHECK_EQ(ch_presence_untrack_pid(ep, fake_pid(5000 + i), "room:b", "k"), 0);
		CHECK_EQ(ch_presence_untrack_all(ep, fake_pid(5000 + i)), 0);
	}
	trk_get_stats(presence_tracker(ep->presence), &s);
	drv.pending_after = s.pending;
	atomic_store(&drv.done, 1);
	return RT_STOP;
}

static const rt_behaviour driver_behaviour = {.name = "driver", .init = driver_init};

static void
test_request_queue_is_bounded(void)
{
	setup_n(1, 10, 8);
	rt_spawn(&driver_behaviour, NULL, 0);
	WAIT_UNTIL(atomic_load(&drv.done), 2000);
	CHECK_EQ(drv.ok, 8);
	CHECK_EQ(drv.busy, 92);
	CHECK_EQ(drv.other, 0);
	CHECK_EQ(drv.dup, CH_PRESENCE_EEXIST);
	CHECK_EQ(drv.pending, 9); /* 8 tracks and the untrack of one of them */
	CHECK_EQ(drv.pending_after, 9);
	/* the pids were dead: each monitor fired "noproc", nothing stays */
	WAIT_UNTIL(ch_presence_count(ep, "room:b", NULL) == 0, 2000);
	trk_stats st;
	trk_get_stats(presence_tracker(ep->presence), &st);
	CHECK_EQ(st.refused, 92);
	CHECK_EQ(st.tracks, 8);
	teardown();
}

/* ------------------------------------------------------------------ the ghost */

/* PresenceChannel variants: track in join, track after join (the chat app's
 * way), or track in join and then refuse the join. */
enum { V_IN_JOIN, V_AFTER_JOIN, V_JOIN_THEN_REFUSE };
#define AFTER_JOIN 0x7001u

static int
ghost_join(ch_chan *ch, void *state, const char *topic, const ch_payload *params)
{
	(void)state;
	(void)topic;
	int variant = (int)cJSON_GetObjectItemCaseSensitive(params->json, "v")->valueint;
	usleep(50 * 1000); /* the socket closes meanwhile */
	if (variant == V_AFTER_JOIN) {
		rt_send(rt_self(), AFTER_JOIN, NULL, 0);
		return CH_OK;
	}
	CHECK_EQ(ch_presence_track(ch, "ghost", "{}"), 0);
	if (variant == V_JOIN_THEN_REFUSE)
		return ch_join_error(ch, "{\"reason\":\"no\"}");
	return CH_OK;
}

static int
ghost_info(ch_chan *ch, void *state, rt_msg *m)
{
	(void)state;
	if (m->tag == AFTER_JOIN) {
		CHECK_EQ(ch_presence_track(ch, "ghost", "{}"), 0);
		char *list = ch_presence_list(ch);
		CHECK(strstr(list, "\"ghost\"") != NULL);
		ch_push(ch, "presence_state", list);
		free(list);
	}
	return CH_OK;
}

static const ch_channel_ops ghost_ops = {
    .name = "GhostChannel", .join = ghost_join, .handle_info = ghost_info};

/* A transport stand-in that exits on any message. */
static int
tr_handle(void *st, rt_msg *m)
{
	(void)st;
	if (m->tag == M_STOP)
		return rt_stop("normal");
	return RT_OK; /* frames: their buffer goes with the message */
}

static const rt_behaviour tr_behaviour = {.name = "transport", .handle = tr_handle};

static void
start_channel(rt_pid transport, const char *topic, int variant)
{
	char params[32];
	snprintf(params, sizeof(params), "{\"v\":%d}", variant);
	size_t tl = strlen(topic), pl = strlen(params);
	size_t size = sizeof(chan_start) + tl + 1 + 4 + pl + 1 + 1 + 1;
	chan_start *cs = calloc(1, size);
	cs->ops = &ghost_ops;
	cs->ep = ep;
	cs->transport = transport;
	cs->vsn = 2;
	cs->topic_len = (uint32_t)tl;
	cs->join_ref_len = 3;
	cs->params_len = (uint32_t)pl;
	char *p = (char *)(cs + 1);
	memcpy(p, topic, tl + 1);
	p += tl + 1;
	memcpy(p, "\"1\"", 4);
	p += 4;
	memcpy(p, params, pl + 1);
	CHECK(rt_sup_start_child(ep->chan_sup, &ch_channel_behaviour, cs, size) != RT_NOPID);
	free(cs);
}

static void
test_no_ghost_when_the_socket_closes_during_join(void)
{
	setup_n(2, 10, 0);
	char topic[32];
	for (int variant = 0; variant < 3; variant++) {
		snprintf(topic, sizeof(topic), "presence:g%d", variant);
		subscriber(topic);
		/* closed before the join even starts, and closed while it runs */
		rt_pid dead = rt_spawn(&tr_behaviour, NULL, 0);
		rt_send(dead, M_STOP, NULL, 0);
		WAIT_UNTIL(!rt_alive(dead), 2000);
		start_channel(dead, topic, variant);
		rt_pid closing = rt_spawn(&tr_behaviour, NULL, 0);
		start_channel(closing, topic, variant);
		usleep(10 * 1000);
		rt_send(closing, M_STOP, NULL, 0);
		/* the tracker saw both: the members leave, and stay gone */
		WAIT_UNTIL(ch_ps_subscribers(ep->pubsub, topic) == 1, 3000);
		WAIT_UNTIL(ch_presence_count(ep, topic, NULL) == 0, 3000);
		usleep(100 * 1000);
		CHECK_EQ(ch_presence_count(ep, topic, NULL), 0);
		char *list = ch_presence_list_topic(ep, topic);
		CHECK_STR(list, "{}");
		free(list);
		/* and whoever follows the diffs ends with nobody listed */
		view v = {.n = 0};
		view_from_rx(&v);
		CHECK_EQ(v.n, 0);
		view_free(&v);
		rx_clear();
	}
	teardown();
}

static void
test_json_follows_phoenix_order(void)
{
	setup_n(2, 10, 0);
	rt_pid p[4];
	for (int i = 0; i < 4; i++)
		p[i] = rt_spawn(&tr_behaviour, NULL, 0);
	/* from a thread that is no process: any caller may track any pid */
	CHECK_EQ(ch_presence_track_pid(ep, p[0], "room:o", "zed", "{\"z\":1,\"a\":2}", NULL), 0);
	CHECK_EQ(ch_presence_track_pid(ep, p[1], "room:o", "bob", "{\"n\":1}", NULL), 0);
	CHECK_EQ(ch_presence_track_pid(ep, p[2], "room:o", "amy", "{}", NULL), 0);
	CHECK_EQ(ch_presence_track_pid(ep, p[3], "room:o", "bob", "{\"n\":2}", NULL), 0);
	CHECK_EQ(ch_presence_track_pid(ep, p[3], "room:o", "bob", "{}", NULL), CH_PRESENCE_EEXIST);
	CHECK_EQ(ch_presence_track_pid(ep, p[3], "room:o", "bob", "[1]", NULL), CH_PRESENCE_EINVAL);
	WAIT_UNTIL(ch_presence_count(ep, "room:o", NULL) == 4, 2000);
	char *list = ch_presence_list_topic(ep, "room:o");
	/* keys in order (a small map's), metas in the order tracked, meta keys in order */
	const char *amy = strstr(list, "\"amy\""), *bob = strstr(list, "\"bob\""),
	           *zed = strstr(list, "\"zed\"");
	CHECK(list[0] == '{' && amy == list + 1 && amy < bob && bob < zed);
	CHECK(strstr(list, "\"n\":1") < strstr(list, "\"n\":2"));
	CHECK(strstr(list, "\"zed\":{\"metas\":[{\"a\":2,\"phx_ref\":\"") != NULL);
	cJSON *obj = cJSON_Parse(list);
	CHECK(obj != NULL);
	CHECK_EQ(cJSON_GetArraySize(obj), 3);
	cJSON_Delete(obj);
	free(list);
	CHECK_EQ(ch_presence_untrack_all(ep, p[3]), 0);
	CHECK_EQ(ch_presence_untrack_pid(ep, p[0], "room:o", "zed"), 0);
	size_t keys;
	WAIT_UNTIL(ch_presence_count(ep, "room:o", &keys) == 2, 2000);
	CHECK_EQ(keys, 2);
	for (int i = 0; i < 4; i++)
		rt_send(p[i], M_STOP, NULL, 0);
	WAIT_UNTIL(ch_presence_count(ep, "room:o", NULL) == 0, 2000);
	teardown();
}

/* The runtime side the tracker leans on: a process holding thousands of
 * monitors gets every DOWN, and demonitors, in any order. */
static struct {
	_Atomic int downs;
} mon;

typedef struct watcher {
	rt_pid pids[4000];
	uint64_t refs[4000];
} watcher;

enum { W_GO = 1 };

static int
watcher_handle(void *st, rt_msg *m)
{
	watcher *w = st;
	if (m->tag == W_GO) {
		for (int i = 0; i < 4000; i++) {
			w->pids[i] = rt_spawn(&tr_behaviour, NULL, 0);
			w->refs[i] = rt_monitor(w->pids[i]);
		}
		for (int i = 0; i < 4000; i += 2) /* half demonitored: no DOWN for them */
			rt_demonitor(w->refs[(i * 7919) % 4000]);
		for (int i = 0; i < 4000; i++)
			rt_send(w->pids[(i * 3571) % 4000], M_STOP, NULL, 0);
	} else if (m->tag == RT_MSG_DOWN) {
		atomic_fetch_add(&mon.downs, 1);
	}
	return RT_OK;
}

static const rt_behaviour watcher_behaviour = {
    .name = "watcher", .state_size = sizeof(watcher), .handle = watcher_handle};

static void
test_many_monitors(void)
{
	rt_config c = {.schedulers = 2, .log_level = (rt_log_level)-1};
	CHECK_EQ(rt_start(&c), 0);
	rt_pid w = rt_spawn(&watcher_behaviour, NULL, 0);
	rt_send(w, W_GO, NULL, 0);
	WAIT_UNTIL(rt_process_count() == 1 && atomic_load(&mon.downs) == 2000, 5000);
	usleep(50 * 1000);
	CHECK_EQ(atomic_load(&mon.downs), 2000);
	rt_exit(w, "kill");
	WAIT_UNTIL(rt_process_count() == 0, 5000);
	rt_shutdown();
}

TEST_LIST = {
    TEST(test_state_local_ops),
    TEST(test_state_deltas_converge),
    TEST(test_state_remove_wins_over_the_add_it_saw),
    TEST(test_state_no_duplicates),
    TEST(test_state_full_state_repairs_a_lost_delta),
    TEST(test_state_update_replicates),
    TEST(test_state_replica_down_up_and_permdown),
    TEST(test_state_many_replicas),
    TEST(test_many_monitors),
    TEST(test_exit_for_any_reason_is_a_leave),
    TEST(test_diffs_are_coalesced_per_period),
    TEST(test_update_sets_phx_ref_prev),
    TEST(test_fetch_hook_enriches_lists_and_diffs),
    TEST(test_request_queue_is_bounded),
    TEST(test_no_ghost_when_the_socket_closes_during_join),
    TEST(test_json_follows_phoenix_order),
    TEST_END,
};
