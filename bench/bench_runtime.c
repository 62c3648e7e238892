/*
 * bench_runtime: microbenchmarks of the actor runtime (runtime/), the figures
 * compared with Erlang/OTP in bench/README.md.
 *
 *   idle       N = 1,000,000 processes that ran init and wait: RSS growth / N
 *   spawn+exit drivers (one per scheduler) spawn children whose init returns
 *              RT_STOP, on 1 and on 2 schedulers
 *   ring       1,000 processes pass one token 10,000,000 hops, 1 scheduler
 *   m2m        many-to-many: 1,000 processes, 8 tokens each, every hop goes to
 *              a random peer; ≥ 20,000,000 messages, on 2 (and 1) schedulers
 *
 * Each scenario starts its own runtime (rt_start .. rt_shutdown).  Flags:
 *   --quick      10x smaller sizes (CI smoke runs)
 *   --json-only  print only the JSON line
 *   --repeat N   run each timed scenario N times (default 3) and report the
 *                best: other work on the machine only ever slows a run down
 *   --only NAME  run one scenario (idle, spawn, ring, m2m; for profiling):
 *                the others' figures are null in the JSON
 * A human summary goes to stdout, and the last line is one JSON object.  The
 * exit status is non-zero when a scenario failed (timeout, wrong count).
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/rt.h"

/* Any scenario taking longer than this is reported as failed. */
#define TIMEOUT_S 300

enum { T_GO = 1, T_NEXT, T_TOKEN, T_START };

static bool opt_quick, opt_json_only;
static const char *opt_only;
static int failures;

#define say(...)                                                                                   \
	do {                                                                                       \
		if (!opt_json_only) {                                                              \
			printf(__VA_ARGS__);                                                       \
			fflush(stdout);                                                            \
		}                                                                                  \
	} while (0)

static double
now_s(void)
{
	return (double)rt_now_ns() / 1e9;
}

static void
fail(const char *what)
{
	fprintf(stderr, "bench_runtime: %s\n", what);
	failures++;
}

static void
start_runtime(int schedulers, uint32_t max_procs)
{
	rt_config c = {.schedulers = schedulers, .max_procs = max_procs, .log_level = RT_LOG_ERROR};
	if (rt_start(&c) != 0) {
		fprintf(stderr, "bench_runtime: rt_start failed\n");
		exit(2);
	}
}

static void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Resident set size in bytes, after giving free heap pages back to the kernel. */
static long
rss_bytes(void)
{
	malloc_trim(0);
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, resident = 0;
	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &resident) != 2)
		resident = -1;
	fclose(f);
	return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

/* A one-shot latch that a process opens and the main thread waits on. */
static pthread_mutex_t latch_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t latch_cv = PTHREAD_COND_INITIALIZER;
static bool latch_flag;

static void
latch_reset(void)
{
	pthread_mutex_lock(&latch_mu);
	latch_flag = false;
	pthread_mutex_unlock(&latch_mu);
}

static void
latch_open(void)
{
	pthread_mutex_lock(&latch_mu);
	latch_flag = true;
	pthread_cond_signal(&latch_cv);
	pthread_mutex_unlock(&latch_mu);
}

static bool
latch_wait(int timeout_s)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += timeout_s;
	pthread_mutex_lock(&latch_mu);
	int rc = 0;
	while (!latch_flag && rc == 0)
		rc = pthread_cond_timedwait(&latch_cv, &latch_mu, &dl);
	bool ok = latch_flag;
	pthread_mutex_unlock(&latch_mu);
	return ok;
}

/* Polls cond() every millisecond (low overhead: one wakeup per ms). */
static bool
poll_until(bool (*cond)(void), int timeout_s)
{
	double end = now_s() + timeout_s;
	while (!cond()) {
		if (now_s() > end)
			return false;
		sleep_ms(1);
	}
	return true;
}

/* ------------------------------------------------------------------ drivers */

/* A driver spawns `left` children of `child`, `batch` per message it sends
 * itself, so the scheduler runs the children between batches. */
typedef struct driver_arg {
	uint64_t count;
	uint32_t batch;
	const rt_behaviour *child;
} driver_arg;

typedef struct driver {
	driver_arg a;
} driver;

static int
driver_init(void *state, const void *arg, size_t size)
{
	(void)size;
	driver *d = state;
	memcpy(&d->a, arg, sizeof(d->a));
	rt_send(rt_self(), T_GO, NULL, 0);
	return RT_OK;
}

static int
driver_handle(void *state, rt_msg *msg)
{
	driver *d = state;
	if (msg->tag != T_GO)
		return RT_OK;
	uint64_t k = d->a.count < d->a.batch ? d->a.count : d->a.batch;
	for (uint64_t i = 0; i < k; i++)
		if (rt_spawn(d->a.child, NULL, 0) == RT_NOPID)
			rt_crash("spawn failed");
	d->a.count -= k;
	if (d->a.count == 0)
		return RT_STOP;
	rt_send(rt_self(), T_GO, NULL, 0);
	return RT_OK;
}

static const rt_behaviour driver_b = {.name = "bench_driver",
                                      .state_size = sizeof(driver),
                                      .init = driver_init,
                                      .handle = driver_handle};

/* Starts one driver per scheduler (foreign spawns go round robin). */
static void
start_drivers(int n, uint64_t total, uint32_t batch, const rt_behaviour *child)
{
	for (int i = 0; i < n; i++) {
		driver_arg a = {.count = total / (uint64_t)n + (i == 0 ? total % (uint64_t)n : 0),
		                .batch = batch,
		                .child = child};
		if (rt_spawn(&driver_b, &a, sizeof(a)) == RT_NOPID) {
			fprintf(stderr, "bench_runtime: driver spawn failed\n");
			exit(2);
		}
	}
}

/* ------------------------------------------------------------------ 1. idle */

static _Atomic uint64_t idle_started;

static int
idle_init(void *state, const void *arg, size_t size)
{
	(void)state;
	(void)arg;
	(void)size;
	atomic_fetch_add_explicit(&idle_started, 1, memory_order_relaxed);
	return RT_OK;
}

static int
idle_handle(void *state, rt_msg *msg)
{
	(void)state;
	(void)msg;
	return RT_OK;
}

static const rt_behaviour idle_b = {.name = "bench_idle", .init = idle_init, .handle = idle_handle};

static uint64_t idle_target;

static bool
idle_all_started(void)
{
	return atomic_load(&idle_started) >= idle_target;
}

typedef struct idle_result {
	double bytes_per_proc;
	double spawn_per_s;
	long rss_before, rss_after;
} idle_result;

static idle_result
bench_idle(uint64_t n, int schedulers)
{
	idle_result r = {0};
	start_runtime(schedulers, 1u << 21);
	sleep_ms(20);
	r.rss_before = rss_bytes();
	atomic_store(&idle_started, 0);
	idle_target = n;
	double t0 = now_s();
	start_drivers(schedulers, n, 1000, &idle_b);
	if (!poll_until(idle_all_started, TIMEOUT_S))
		fail("idle: processes did not all start");
	double t1 = now_s();
	/* Let the drivers' exits complete (they count as nothing afterwards). */
	for (int i = 0; i < 1000 && rt_process_count() != n; i++)
		sleep_ms(1);
	r.rss_after = rss_bytes();
	r.bytes_per_proc = (double)(r.rss_after - r.rss_before) / (double)n;
	r.spawn_per_s = (double)n / (t1 - t0);
	if (rt_process_count() != n)
		fail("idle: wrong process count");
	rt_shutdown();
	return r;
}

/* ------------------------------------------------------------------ 2. spawn+exit */

static int
short_init(void *state, const void *arg, size_t size)
{
	(void)state;
	(void)arg;
	(void)size;
	return RT_STOP;
}

static int
short_handle(void *state, rt_msg *msg)
{
	(void)state;
	(void)msg;
	return RT_OK;
}

static const rt_behaviour short_b = {
    .name = "bench_short", .init = short_init, .handle = short_handle};

static bool
no_processes(void)
{
	return rt_process_count() == 0;
}

/* Children spawned per driver message.  A driver handles up to `budget` (100)
 * messages per turn, so up to 800 children wait to run at a time: their
 * blocks fit the per-thread caches of runtime/alloc.c (1,024 blocks of 64
 * bytes with 64 KB per class).  With more waiting than that, spawn and exit go
 * to malloc/free: 32 per message (3,200 waiting) gives ~9.5 instead of ~13.5
 * M/s on 1 scheduler with 64 KB caches, 100 per message ~8-10 M/s. */
#define SPAWN_BATCH 8

static double
bench_spawn_exit(uint64_t n, int schedulers)
{
	start_runtime(schedulers, 1u << 21);
	sleep_ms(20);
	double t0 = now_s();
	start_drivers(schedulers, n, SPAWN_BATCH, &short_b);
	/* Let the drivers appear before polling for zero. */
	while (rt_process_count() == 0 && now_s() - t0 < 1)
		;
	if (!poll_until(no_processes, TIMEOUT_S))
		fail("spawn+exit: processes left");
	double t1 = now_s();
	rt_shutdown();
	return (double)n / (t1 - t0);
}

/* ------------------------------------------------------------------ 3. ring */

typedef struct ring_member {
	rt_pid next;
} ring_member;

static int
ring_handle(void *state, rt_msg *msg)
{
	ring_member *m = state;
	uint64_t n;
	memcpy(&n, rt_msg_data(msg), sizeof(n));
	if (msg->tag == T_NEXT) {
		m->next = (rt_pid)n;
	} else if (msg->tag == T_TOKEN) {
		if (n == 0) {
			latch_open();
			return RT_OK;
		}
		n--;
		rt_send(m->next, T_TOKEN, &n, sizeof(n));
	}
	return RT_OK;
}

static const rt_behaviour ring_b = {
    .name = "bench_ring", .state_size = sizeof(ring_member), .handle = ring_handle};

/* Returns messages per second: `hops` deliveries in a ring of `procs`. */
static double
bench_ring(uint32_t procs, uint64_t hops, int schedulers)
{
	start_runtime(schedulers, 1u << 16);
	rt_pid *pids = calloc(procs, sizeof(rt_pid));
	for (uint32_t i = 0; i < procs; i++)
		pids[i] = rt_spawn(&ring_b, NULL, 0);
	for (uint32_t i = 0; i < procs; i++) {
		uint64_t next = pids[(i + 1) % procs];
		rt_send(pids[i], T_NEXT, &next, sizeof(next));
	}
	sleep_ms(50); /* setup messages delivered, schedulers asleep */
	latch_reset();
	double t0 = now_s();
	uint64_t n = hops - 1; /* this send is the first of `hops` deliveries */
	rt_send(pids[0], T_TOKEN, &n, sizeof(n));
	if (!latch_wait(TIMEOUT_S))
		fail("ring: token lost or too slow");
	double t1 = now_s();
	rt_shutdown();
	free(pids);
	return (double)hops / (t1 - t0);
}

/* ------------------------------------------------------------------ 4. many-to-many */

/* Each member counts its deliveries in its own cache line. */
typedef struct counter {
	_Alignas(64) uint64_t n;
} counter;

static counter *m2m_count;
static rt_pid *m2m_pids;
static uint32_t m2m_procs, m2m_tokens_per_proc;
static uint64_t m2m_hops; /* forwards per token after its first delivery */
static _Atomic uint64_t m2m_tokens_done;

typedef struct m2m_member {
	uint32_t index;
	uint64_t rng;
} m2m_member;

static uint32_t
m2m_pick(m2m_member *m)
{
	/* xorshift64 */
	uint64_t x = m->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	m->rng = x;
	uint32_t i = (uint32_t)((x >> 16) % m2m_procs);
	return i == m->index ? (i + 1) % m2m_procs : i;
}

static int
m2m_init(void *state, const void *arg, size_t size)
{
	(void)size;
	m2m_member *m = state;
	memcpy(&m->index, arg, sizeof(m->index));
	m->rng = 0x9E3779B97F4A7C15ull * (m->index + 1);
	return RT_OK;
}

static int
m2m_handle(void *state, rt_msg *msg)
{
	m2m_member *m = state;
	m2m_count[m->index].n++;
	if (msg->tag == T_START) {
		/* A burst: this member's tokens go out to random peers. */
		for (uint32_t i = 0; i < m2m_tokens_per_proc; i++)
			rt_send(m2m_pids[m2m_pick(m)], T_TOKEN, &m2m_hops, sizeof(m2m_hops));
		return RT_OK;
	}
	uint64_t n;
	memcpy(&n, rt_msg_data(msg), sizeof(n));
	if (n == 0) {
		uint64_t done = atomic_fetch_add(&m2m_tokens_done, 1) + 1;
		if (done == (uint64_t)m2m_procs * m2m_tokens_per_proc)
			latch_open();
		return RT_OK;
	}
	n--;
	rt_send(m2m_pids[m2m_pick(m)], T_TOKEN, &n, sizeof(n));
	return RT_OK;
}

static const rt_behaviour m2m_b = {
    .name = "bench_m2m", .state_size = sizeof(m2m_member), .init = m2m_init, .handle = m2m_handle};

typedef struct m2m_result {
	double msgs_per_s;
	uint64_t delivered;
} m2m_result;

/* About `total` messages among `procs` members, `tokens` per member. */
static m2m_result
bench_m2m(uint32_t procs, uint32_t tokens, uint64_t total, int schedulers)
{
	m2m_result r = {0};
	start_runtime(schedulers, 1u << 16);
	m2m_procs = procs;
	m2m_tokens_per_proc = tokens;
	uint64_t ntok = (uint64_t)procs * tokens;
	m2m_hops = total / ntok - 1; /* each token is delivered hops + 1 times */
	atomic_store(&m2m_tokens_done, 0);
	m2m_count = aligned_alloc(64, procs * sizeof(counter));
	memset(m2m_count, 0, procs * sizeof(counter));
	m2m_pids = calloc(procs, sizeof(rt_pid));
	for (uint32_t i = 0; i < procs; i++)
		m2m_pids[i] = rt_spawn(&m2m_b, &i, sizeof(i));
	sleep_ms(50);
	latch_reset();
	double t0 = now_s();
	for (uint32_t i = 0; i < procs; i++)
		rt_send(m2m_pids[i], T_START, NULL, 0);
	if (!latch_wait(TIMEOUT_S))
		fail("many-to-many: tokens lost or too slow");
	double t1 = now_s();
	for (uint32_t i = 0; i < procs; i++)
		r.delivered += m2m_count[i].n;
	uint64_t expect = procs + ntok * (m2m_hops + 1);
	if (r.delivered != expect) {
		fprintf(stderr, "bench_runtime: many-to-many delivered %llu, expected %llu\n",
		        (unsigned long long)r.delivered, (unsigned long long)expect);
		failures++;
	}
	r.msgs_per_s = (double)r.delivered / (t1 - t0);
	rt_shutdown();
	free(m2m_pids);
	free(m2m_count);
	return r;
}

/* ------------------------------------------------------------------ main */

static double
maxd(double a, double b)
{
	return a > b ? a : b;
}

static bool
want(const char *name)
{
	return !opt_only || strcmp(opt_only, name) == 0;
}

/* A JSON number, or null for a scenario that did not run (negative). */
static const char *
jnum(char *buf, size_t len, double v, int prec)
{
	if (v < 0)
		snprintf(buf, len, "null");
	else
		snprintf(buf, len, "%.*f", prec, v);
	return buf;
}

/* The throughputs of the repeats of one measurement; the best is reported
 * (other work on the machine only ever slows a run down). */
#define MAX_REPEAT 20
typedef struct runs {
	int n;
	double v[MAX_REPEAT];
} runs;

static void
runs_add(runs *r, double v)
{
	if (r->n < MAX_REPEAT)
		r->v[r->n++] = v;
}

static double
runs_best(const runs *r)
{
	double b = -1;
	for (int i = 0; i < r->n; i++)
		b = maxd(b, r->v[i]);
	return b;
}

/* One line of the summary: label, best, every run (millions per second). */
static void
say_runs(const char *label, const runs *r)
{
	if (opt_json_only)
		return;
	printf("  %-50s %7.2f M/s   runs:", label, runs_best(r) / 1e6);
	for (int i = 0; i < r->n; i++)
		printf(" %.2f", r->v[i] / 1e6);
	printf("\n");
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	int repeat = 3;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0)
			opt_quick = true;
		else if (strcmp(argv[i], "--json-only") == 0)
			opt_json_only = true;
		else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
			opt_only = argv[++i];
		else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
			repeat = atoi(argv[++i]);
		else {
			fprintf(stderr,
			        "usage: %s [--quick] [--json-only] [--repeat N] [--only "
			        "idle|spawn|ring|m2m]\n",
			        argv[0]);
			return 2;
		}
	}
	if (opt_only && !want("idle") && !want("spawn") && !want("ring") && !want("m2m")) {
		fprintf(stderr, "bench_runtime: unknown scenario %s\n", opt_only);
		return 2;
	}
	if (repeat < 1 || repeat > MAX_REPEAT) {
		fprintf(stderr, "bench_runtime: --repeat takes 1..%d\n", MAX_REPEAT);
		return 2;
	}
	uint64_t div = opt_quick ? 10 : 1;
	uint64_t idle_n = 1000000 / div;
	uint64_t spawn_n = 5000000 / div;
	uint32_t ring_procs = 1000;
	uint64_t ring_hops = 10000000 / div;
	uint32_t m2m_procs_n = 1000, m2m_tokens = 8;
	uint64_t m2m_total = 20000000 / div;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	say("phx-c runtime benchmark%s: %ld cores, best of %d runs\n",
	    opt_quick ? " (--quick)" : "", ncpu, repeat);

	idle_result idle = {-1, -1, 0, 0};
	if (want("idle")) {
		/* Memory does not depend on timing: measured once. */
		idle = bench_idle(idle_n, 2);
		say("  idle: %llu processes, RSS +%.1f MB = %.1f bytes/process (spawn+init %.2f "
		    "M/s)\n",
		    (unsigned long long)idle_n,
		    (double)(idle.rss_after - idle.rss_before) / 1048576.0, idle.bytes_per_proc,
		    idle.spawn_per_s / 1e6);
	}

	char label[96];
	runs se1 = {0}, se2 = {0};
	if (want("spawn")) {
		for (int i = 0; i < repeat; i++) {
			runs_add(&se1, bench_spawn_exit(spawn_n, 1));
			runs_add(&se2, bench_spawn_exit(spawn_n, 2));
		}
		snprintf(label, sizeof(label), "spawn+exit, %llu processes, 1 scheduler",
		         (unsigned long long)spawn_n);
		say_runs(label, &se1);
		snprintf(label, sizeof(label), "spawn+exit, %llu processes, 2 schedulers",
		         (unsigned long long)spawn_n);
		say_runs(label, &se2);
	}

	runs ring = {0};
	if (want("ring")) {
		for (int i = 0; i < repeat; i++)
			runs_add(&ring, bench_ring(ring_procs, ring_hops, 1));
		snprintf(label, sizeof(label), "ring, %u processes, %llu hops, 1 scheduler",
		         ring_procs, (unsigned long long)ring_hops);
		say_runs(label, &ring);
	}

	runs m2 = {0}, m1 = {0};
	uint64_t m2m_delivered = 0;
	if (want("m2m")) {
		for (int i = 0; i < repeat; i++) {
			m2m_result r = bench_m2m(m2m_procs_n, m2m_tokens, m2m_total, 2);
			runs_add(&m2, r.msgs_per_s);
			m2m_delivered = r.delivered;
			runs_add(&m1, bench_m2m(m2m_procs_n, m2m_tokens, m2m_total, 1).msgs_per_s);
		}
		snprintf(label, sizeof(label), "many-to-many, %u x %u tokens, %lluM msgs, 2 scheds",
		         m2m_procs_n, m2m_tokens, (unsigned long long)(m2m_delivered / 1000000));
		say_runs(label, &m2);
		snprintf(label, sizeof(label), "many-to-many, %u x %u tokens, %lluM msgs, 1 sched",
		         m2m_procs_n, m2m_tokens, (unsigned long long)(m2m_delivered / 1000000));
		say_runs(label, &m1);
	}

	double se_best = maxd(runs_best(&se1), runs_best(&se2));
	if (!opt_only)
		say("  targets: <= 256 bytes/process: %s; >= 5 M spawn+exit/s: %s\n",
		    idle.bytes_per_proc <= 256 ? "met" : "MISSED",
		    se_best >= 5e6 ? "met" : "MISSED");
	if (failures)
		say("  %d scenario(s) FAILED\n", failures);

	char b[10][32];
	printf("{\"bench\":\"runtime\",\"quick\":%s,\"cores\":%ld,\"repeat\":%d,"
	       "\"idle_processes\":%llu,\"bytes_per_idle_process\":%s,\"idle_spawn_per_s\":%s,"
	       "\"spawn_exit_n\":%llu,\"spawn_exit_per_s\":%s,\"spawn_exit_per_s_1_scheduler\":%s,"
	       "\"spawn_exit_per_s_2_schedulers\":%s,"
	       "\"ring_processes\":%u,\"ring_hops\":%llu,\"local_msgs_per_s\":%s,"
	       "\"m2m_processes\":%u,\"m2m_messages\":%llu,\"msgs_per_s_2_schedulers\":%s,"
	       "\"msgs_per_s_1_scheduler_m2m\":%s,\"failures\":%d}\n",
	       opt_quick ? "true" : "false", ncpu, repeat, (unsigned long long)idle_n,
	       jnum(b[0], 32, idle.bytes_per_proc, 1), jnum(b[1], 32, idle.spawn_per_s, 0),
	       (unsigned long long)spawn_n, jnum(b[2], 32, se_best, 0),
	       jnum(b[3], 32, runs_best(&se1), 0), jnum(b[4], 32, runs_best(&se2), 0), ring_procs,
	       (unsigned long long)ring_hops, jnum(b[5], 32, runs_best(&ring), 0), m2m_procs_n,
	       (unsigned long long)m2m_delivered, jnum(b[6], 32, runs_best(&m2), 0),
	       jnum(b[7], 32, runs_best(&m1), 0), failures);
	return failures ? 1 : 0;
}
