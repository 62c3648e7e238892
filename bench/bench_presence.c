/*
 * bench_presence: Presence (the tracker shards of channels/tracker.c) with
 * real processes.  N members (default 100,000) join one topic, each a
 * process that tracks itself; then, for D seconds (default 10), a driver
 * adds R new members and stops R random ones every second (default 1,000
 * + 1,000: a stopped member just exits, and the shard's monitor turns that
 * into the leave).  An observer process subscribed to the topic applies
 * every presence_diff as phoenix.js's syncDiff would, and records, per
 * change, the time from the track call (join) or the stop (leave) to the
 * diff's arrival.
 *
 * At the end it checks that the observer's view, built from the diffs
 * alone, equals the driver's live set and the tracker's count (no diff lost
 * or doubled), and prints the latencies (p50/p99/max) of the steady phase.
 *
 *   bench_presence [--members N] [--rate R] [--seconds D] [--period MS]
 *                  [--batch B] [--schedulers S]
 *
 * --batch 0 spawns all N at once: past the shards' request bound (10,000
 * queued per shard) tracks are refused and the members retry with
 * exponential backoff.
 *
 * The last line is a JSON object; the exit status is non-zero when a check
 * failed.
 */
#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/hist.h"
#include "channels/channels.h"

#define TOPIC "presence:big"

enum { M_STOP = 1, M_RETRY, D_TICK };

static ch_endpoint *ep;
static uint32_t max_ids;
static rt_pid *pids;             /* by member id; written by whoever spawns */
static _Atomic int64_t *stop_ns; /* by member id: when the driver stopped it */
static _Atomic uint64_t refused; /* tracks refused for load (then retried) */
static _Atomic uint64_t tracked; /* tracks accepted */
static _Atomic int steady;       /* 1 during the steady phase */

/* ------------------------------------------------------------------ members */

typedef struct member {
	uint32_t id;
	uint32_t backoff_ms; /* after a refusal: doubles, up to 1 s */
} member;

static int
track_self(member *m)
{
	char key[16], meta[48];
	snprintf(key, sizeof(key), "m%u", m->id);
	snprintf(meta, sizeof(meta), "{\"t\":%lld}", (long long)rt_now_ns());
	int rc = ch_presence_track_pid(ep, rt_self(), TOPIC, key, meta, NULL);
	if (rc == CH_PRESENCE_EBUSY) { /* past the bound: back off, with jitter */
		atomic_fetch_add(&refused, 1);
		m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : 10;
		if (m->backoff_ms > 1000)
			m->backoff_ms = 1000;
		rt_send_after(m->backoff_ms + m->id % 10, rt_self(), M_RETRY, NULL, 0);
		return RT_OK;
	}
	if (rc != 0)
		return rt_stop("track failed");
	atomic_fetch_add(&tracked, 1);
	return RT_OK;
}

static int
member_init(void *st, const void *arg, size_t size)
{
	member *m = st;
	(void)size;
	m->id = *(const uint32_t *)arg;
	return track_self(m);
}

static int
member_handle(void *st, rt_msg *msg)
{
	if (msg->tag == M_STOP)
		return RT_STOP;
	if (msg->tag == M_RETRY)
		return track_self(st);
	return RT_OK;
}

static const rt_behaviour member_behaviour = {
    .name = "member", .state_size = sizeof(member), .init = member_init, .handle = member_handle};

/* ------------------------------------------------------------------ observer */

/* Owner: the observer process; read by main once it is quiet. */
static struct {
	uint8_t *present; /* by member id: syncDiff's view */
	uint64_t joins, leaves, diffs, dup_joins, stray_leaves;
	hist join_lat, leave_lat; /* ns, steady phase */
} obs;

static uint32_t
key_id(const char *key)
{
	return key[0] == 'm' ? (uint32_t)strtoul(key + 1, NULL, 10) : UINT32_MAX;
}

static void
apply_side(const cJSON *side, bool join, int64_t now)
{
	const cJSON *k;
	cJSON_ArrayForEach(k, side)
	{
		uint32_t id = key_id(k->string);
		if (id >= max_ids)
			continue;
		const cJSON *metas = cJSON_GetObjectItemCaseSensitive(k, "metas"), *m;
		cJSON_ArrayForEach(m, metas)
		{
			if (join) {
				obs.joins++;
				if (obs.present[id])
					obs.dup_joins++;
				obs.present[id] = 1;
				const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "t");
				if (atomic_load(&steady) && cJSON_IsNumber(t))
					hist_record(&obs.join_lat,
					            (uint64_t)(now - (int64_t)t->valuedouble));
			} else {
				obs.leaves++;
				if (!obs.present[id])
					obs.stray_leaves++;
				obs.present[id] = 0;
				int64_t s = atomic_load(&stop_ns[id]);
				if (atomic_load(&steady) && s)
					hist_record(&obs.leave_lat, (uint64_t)(now - s));
			}
		}
	}
}

static int
obs_init(void *st, const void *arg, size_t size)
{
	(void)st;
	(void)arg;
	(void)size;
	return ch_pubsub_subscribe(ep, TOPIC) == 0 ? RT_OK : RT_ERROR;
}

static int
obs_handle(void *st, rt_msg *m)
{
	(void)st;
	ch_broadcast_view v;
	if (m->tag != CH_MSG_BROADCAST || ch_broadcast_read(m, &v) < 0)
		return RT_OK;
	int64_t now = rt_now_ns();
	cJSON *d = cJSON_ParseWithLength(v.payload, v.payload_len);
	if (!d)
		return RT_OK;
	obs.diffs++;
	/* syncDiff: joins first, then leaves */
	apply_side(cJSON_GetObjectItemCaseSensitive(d, "joins"), true, now);
	apply_side(cJSON_GetObjectItemCaseSensitive(d, "leaves"), false, now);
	cJSON_Delete(d);
	return RT_OK;
}

static const rt_behaviour obs_behaviour = {
    .name = "observer", .init = obs_init, .handle = obs_handle};

/* ------------------------------------------------------------------ driver */

/* Owner: the driver process; read by main once it stopped. */
static struct {
	uint32_t *live; /* ids of live members */
	uint32_t nlive;
	uint32_t next_id;
	uint32_t rate, ticks_left;
	uint64_t spawned, stopped;
	unsigned seed;
	int64_t t0, t1;
} drv;

static void
spawn_member(uint32_t id)
{
	pids[id] = rt_spawn(&member_behaviour, &id, sizeof(id));
	drv.live[drv.nlive++] = id;
}

static int
driver_init(void *st, const void *arg, size_t size)
{
	(void)st;
	(void)arg;
	(void)size;
	drv.t0 = rt_now_ns();
	rt_send_after(10, rt_self(), D_TICK, NULL, 0);
	return RT_OK;
}

static int
driver_handle(void *st, rt_msg *m)
{
	(void)st;
	if (m->tag != D_TICK)
		return RT_OK;
	/* every 10 ms: rate/100 joins and rate/100 leaves */
	uint32_t n = drv.rate / 100;
	for (uint32_t i = 0; i < n && drv.nlive; i++) {
		uint32_t at = (uint32_t)rand_r(&drv.seed) % drv.nlive;
		uint32_t id = drv.live[at];
		drv.live[at] = drv.live[--drv.nlive];
		atomic_store(&stop_ns[id], rt_now_ns());
		rt_send(pids[id], M_STOP, NULL, 0);
		drv.stopped++;
	}
	for (uint32_t i = 0; i < n && drv.next_id < max_ids; i++) {
		spawn_member(drv.next_id++);
		drv.spawned++;
	}
	if (--drv.ticks_left == 0) {
		drv.t1 = rt_now_ns();
		return RT_STOP;
	}
	rt_send_after(10, rt_self(), D_TICK, NULL, 0);
	return RT_OK;
}

static const rt_behaviour driver_behaviour = {
    .name = "driver", .init = driver_init, .handle = driver_handle};

/* ------------------------------------------------------------------ main */

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool
wait_for(bool (*cond)(void), int ms)
{
	int64_t end = now_ms() + ms;
	while (!cond()) {
		if (now_ms() > end)
			return false;
		usleep(2000);
	}
	return true;
}

static uint32_t members = 100000;

static bool
filled(void)
{
	return ch_presence_count(ep, TOPIC, NULL) == members;
}

static bool
obs_filled(void)
{
	return obs.joins >= members;
}

static rt_pid driver_pid;

static bool
driver_done(void)
{
	return !rt_alive(driver_pid);
}

static bool
settled(void)
{
	return ch_presence_count(ep, TOPIC, NULL) == drv.nlive;
}

static double
ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

int
main(int argc, char **argv)
{
	uint32_t rate = 1000, seconds = 10, period = 0, batch = 5000;
	int schedulers = 2;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--members") == 0)
			members = (uint32_t)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--rate") == 0)
			rate = (uint32_t)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--seconds") == 0)
			seconds = (uint32_t)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--period") == 0)
			period = (uint32_t)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--batch") == 0)
			batch = (uint32_t)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--schedulers") == 0)
			schedulers = atoi(argv[i + 1]);
	}
	max_ids = members + rate * seconds + 16;
	pids = calloc(max_ids, sizeof(*pids));
	stop_ns = calloc(max_ids, sizeof(*stop_ns));
	obs.present = calloc(max_ids, 1);
	drv.live = calloc(max_ids, sizeof(uint32_t));
	hist_init(&obs.join_lat);
	hist_init(&obs.leave_lat);
	rt_config c = {.schedulers = schedulers, .log_level = RT_LOG_WARNING};
	if (rt_start(&c) != 0)
		return 1;
	ch_endpoint_opts o = {.secret_key_base = "bench", .presence_period_ms = period};
	ep = ch_endpoint_start(&o);
	rt_pid observer = rt_spawn(&obs_behaviour, NULL, 0);
	(void)observer;
	usleep(50 * 1000);

	/* fill: N members track themselves as fast as they are spawned */
	int64_t f0 = now_ms();
	/* in batches, as clients would arrive: each waits for the previous */
	for (uint32_t id = 0; id < members; id++) {
		spawn_member(id);
		if (batch && id % batch == batch - 1)
			for (int w = 0; w < 30000 && ch_presence_count(ep, TOPIC, NULL) < id + 1;
			     w++)
				usleep(1000);
	}
	drv.next_id = members;
	bool ok = wait_for(filled, 120000) && wait_for(obs_filled, 30000);
	int64_t f1 = now_ms();
	printf("fill: %u members tracked in %lld ms (%.0f tracks/s; %llu refused for load "
	       "and retried)\n",
	       members, (long long)(f1 - f0), members * 1000.0 / (double)(f1 - f0 + 1),
	       (unsigned long long)atomic_load(&refused));

	/* steady: rate joins + rate leaves per second */
	atomic_store(&steady, 1);
	drv.rate = rate;
	drv.ticks_left = seconds * 100;
	drv.seed = 7;
	driver_pid = rt_spawn(&driver_behaviour, NULL, 0);
	ok = wait_for(driver_done, (int)seconds * 1000 * 3 + 10000) && ok;
	ok = wait_for(settled, 30000) && ok;
	usleep(300 * 1000); /* the last period's diffs */
	double secs = (double)(drv.t1 - drv.t0) / 1e9;

	/* the observer's view, from the diffs alone, against the live set */
	uint64_t missing = 0, extra = 0;
	uint8_t *live = calloc(max_ids, 1);
	for (uint32_t i = 0; i < drv.nlive; i++)
		live[drv.live[i]] = 1;
	for (uint32_t id = 0; id < max_ids; id++) {
		if (live[id] && !obs.present[id])
			missing++;
		if (!live[id] && obs.present[id])
			extra++;
	}
	size_t count = ch_presence_count(ep, TOPIC, NULL);
	bool consistent = missing == 0 && extra == 0 && obs.dup_joins == 0 &&
	                  obs.stray_leaves == 0 && count == drv.nlive;
	printf("steady: %.1f s, %llu joins + %llu leaves (%.0f + %.0f /s) on %u members\n", secs,
	       (unsigned long long)drv.spawned, (unsigned long long)drv.stopped,
	       (double)drv.spawned / secs, (double)drv.stopped / secs, members);
	printf("diffs: %llu received (%llu joins, %llu leaves in them)\n",
	       (unsigned long long)obs.diffs, (unsigned long long)obs.joins,
	       (unsigned long long)obs.leaves);
	printf("consistency: tracker %zu = live %u; observer view: %llu missing, %llu extra, "
	       "%llu doubled joins, %llu stray leaves -> %s\n",
	       count, drv.nlive, (unsigned long long)missing, (unsigned long long)extra,
	       (unsigned long long)obs.dup_joins, (unsigned long long)obs.stray_leaves,
	       consistent ? "no diff lost or doubled" : "MISMATCH");
	printf("track -> diff latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%llu joins)\n",
	       ms(hist_percentile(&obs.join_lat, 50)), ms(hist_percentile(&obs.join_lat, 99)),
	       ms(obs.join_lat.max), (unsigned long long)obs.join_lat.count);
	printf("stop -> diff latency:  p50 %.2f ms, p99 %.2f ms, max %.2f ms (%llu leaves)\n",
	       ms(hist_percentile(&obs.leave_lat, 50)), ms(hist_percentile(&obs.leave_lat, 99)),
	       ms(obs.leave_lat.max), (unsigned long long)obs.leave_lat.count);
	printf("{\"members\":%u,\"rate\":%u,\"seconds\":%.1f,\"fill_ms\":%lld,\"diffs\":%llu,"
	       "\"consistent\":%s,\"join_p50_ms\":%.2f,\"join_p99_ms\":%.2f,\"leave_p50_ms\":%.2f,"
	       "\"leave_p99_ms\":%.2f,\"refused\":%llu}\n",
	       members, rate, secs, (long long)(f1 - f0), (unsigned long long)obs.diffs,
	       consistent ? "true" : "false", ms(hist_percentile(&obs.join_lat, 50)),
	       ms(hist_percentile(&obs.join_lat, 99)), ms(hist_percentile(&obs.leave_lat, 50)),
	       ms(hist_percentile(&obs.leave_lat, 99)), (unsigned long long)atomic_load(&refused));
	fflush(stdout);

	for (uint32_t i = 0; i < drv.nlive; i++)
		rt_exit(pids[drv.live[i]], "kill");
	rt_exit(observer, "kill");
	ch_endpoint_stop(ep);
	rt_shutdown();
	free(live);
	free(pids);
	free(stop_ns);
	free(obs.present);
	free(drv.live);
	return ok && consistent ? 0 : 1;
}
