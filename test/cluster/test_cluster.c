/*
 * Cluster tests: real nodes over nng bus sockets on 127.0.0.1 (several
 * cl_node in one runtime, and a peer node in a second OS process that the
 * tests stop, continue, kill and restart), the envelope, and bad frames
 * from a raw bus socket.
 *
 * The peer process is this binary run again with CL_TEST_PEER in its
 * environment ("name|seed"): a constructor runs the peer before the
 * harness's main.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <msgpack.h>
#include <msgpack/unpack_define.h>
#include <netinet/in.h>
#include <nng/nng.h>
#include <nng/protocol/bus0/bus.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "cluster/cluster.h"
#include "cluster/envelope.h"
#include "test/harness.h"
#include "test/support/ports.h"
#include "test/support/probe.h"

/* probe.h's helpers this file does not use */
__attribute__((unused)) static void (*const unused_cmd_)(rt_pid, uint32_t, const void *,
                                                         size_t) = probe_cmd;
__attribute__((unused)) static size_t (*const unused_count_)(int, uint32_t) = inbox_count;

#define HB 100
#define DOWN 600
#define MON_TAG (P_USER + 1)

/* ------------------------------------------------------------------ the peer process */

__attribute__((constructor)) static void
peer_main(void)
{
	const char *spec = getenv("CL_TEST_PEER");
	if (!spec)
		return;
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
	char name[CL_NAME_MAX], seed[CL_ADDR_MAX];
	const char *bar = strchr(spec, '|');
	if (!bar || (size_t)(bar - spec) >= sizeof(name))
		_exit(2);
	memcpy(name, spec, (size_t)(bar - spec));
	name[bar - spec] = '\0';
	snprintf(seed, sizeof(seed), "%s", bar + 1);
	rt_config rc = {.schedulers = 1, .log_level = RT_LOG_ERROR};
	if (rt_start(&rc) < 0)
		_exit(3);
	cl_opts o = {.name = name, .seed = seed, .heartbeat_ms = HB, .down_after_ms = DOWN};
	if (!cl_start(&o))
		_exit(4);
	for (;;)
		pause();
}

/* Starts the peer process named name, seeded with addr. */
static pid_t
peer_spawn(const char *name, const char *addr)
{
	char spec[256];
	snprintf(spec, sizeof(spec), "%s|%s", name, addr);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		setenv("CL_TEST_PEER", spec, 1);
		char *argv[] = {"test_cluster_peer", NULL};
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	CHECK(pid > 0);
	return pid;
}

static void
peer_kill(pid_t pid)
{
	kill(pid, SIGKILL);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------------ helpers */

static void
start_rt(void)
{
	rt_config c = {.schedulers = 2, .log_level = RT_LOG_ERROR};
	CHECK_EQ(rt_start(&c), 0);
}

static cl_node *
node_opts(const char *name, const char *seed, uint32_t down, rt_pid sup)
{
	cl_opts o = {.name = name,
	             .listen = "tcp://127.0.0.1:0",
	             .seed = seed,
	             .heartbeat_ms = HB,
	             .down_after_ms = down,
	             .supervisor = sup};
	cl_node *c = cl_start(&o);
	CHECK(c != NULL);
	return c;
}

static cl_node *
node(const char *name, const char *seed)
{
	return node_opts(name, seed, DOWN, RT_NOPID);
}

static size_t
ups(cl_node *c)
{
	cl_member m[8];
	size_t n = cl_members(c, m, 8), k = 0;
	for (size_t i = 0; i < n && i < 8; i++)
		k += m[i].up;
	return k;
}

static bool
is_up(cl_node *c, const char *name)
{
	cl_member m[8];
	size_t n = cl_members(c, m, 8);
	for (size_t i = 0; i < n && i < 8; i++)
		if (strcmp(m[i].name, name) == 0)
			return m[i].up;
	return false;
}

static cl_stats
stats(cl_node *c)
{
	cl_stats s;
	cl_stats_get(c, &s);
	return s;
}

/* What a node's handler received: counts per sender (by name), and the
 * order of each sender's uint32 bodies. */
#define NSEND 4
typedef struct rx {
	pthread_mutex_t mu;
	char names[NSEND][CL_NAME_MAX];
	int count[NSEND];
	uint32_t next[NSEND];
	int order_errors;
	int total;
} rx;

static void
rx_init(rx *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
}

static void
on_data(void *ud, const cl_member *from, const void *body, size_t len)
{
	rx *r = ud;
	pthread_mutex_lock(&r->mu);
	int k;
	for (k = 0; k < NSEND; k++)
		if (!r->names[k][0] || strcmp(r->names[k], from->name) == 0)
			break;
	if (k < NSEND) {
		if (!r->names[k][0])
			memcpy(r->names[k], from->name, CL_NAME_MAX);
		r->count[k]++;
		uint32_t v = UINT32_MAX;
		if (len == sizeof(v))
			memcpy(&v, body, sizeof(v));
		if (v != r->next[k])
			r->order_errors++;
		r->next[k] = v + 1;
	}
	r->total++;
	pthread_mutex_unlock(&r->mu);
}

static int
rx_count(rx *r, const char *from)
{
	int n = 0;
	pthread_mutex_lock(&r->mu);
	for (int k = 0; k < NSEND; k++)
		if (strcmp(r->names[k], from) == 0)
			n = r->count[k];
	pthread_mutex_unlock(&r->mu);
	return n;
}

static int
rx_total(rx *r)
{
	pthread_mutex_lock(&r->mu);
	int n = r->total;
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* Takes the next nodeup/nodedown of probe id within ms. */
static cl_node_event
next_event(int id, int ms)
{
	rec r;
	CHECK_MSG(inbox_take(id, MON_TAG, ms, &r) == 0, "no node event within %d ms", ms);
	cl_node_event ev;
	memcpy(&ev, r.data, sizeof(ev));
	return ev;
}

/* ------------------------------------------------------------------ envelope */

static void
test_envelope(void)
{
	cl_env e = {.version = CL_PROTOCOL_VERSION,
	            .kind = CL_K_DATA,
	            .from = "a@127.0.0.1",
	            .incarnation = 1234567890123ull,
	            .seq = 42,
	            .to = "b@x",
	            .service = CL_SVC_PUBSUB,
	            .body_len = 3};
	uint8_t f[CL_ENV_HEAD_MAX + 3];
	size_t hl = cl_env_head(&e, f);
	CHECK(hl > 0);
	memcpy(f + hl, "xyz", 3);
	cl_env d;
	CHECK_EQ(cl_env_decode(f, hl + 3, &d), CL_ENV_OK);
	CHECK_STR(d.from, "a@127.0.0.1");
	CHECK_STR(d.to, "b@x");
	CHECK(d.incarnation == 1234567890123ull);
	CHECK_EQ(d.seq, 42);
	CHECK_EQ(d.kind, CL_K_DATA);
	CHECK_EQ(d.service, CL_SVC_PUBSUB);
	CHECK_EQ(d.body_len, 3);
	CHECK_MEM(d.body, "xyz", 3);
	/* every truncation is malformed, and so is a byte more */
	for (size_t n = 0; n < hl + 3; n++)
		CHECK_EQ(cl_env_decode(f, n, &d), CL_ENV_MALFORMED);
	uint8_t g[sizeof(f) + 1];
	memcpy(g, f, hl + 3);
	g[hl + 3] = 0xc0;
	CHECK_EQ(cl_env_decode(g, hl + 4, &d), CL_ENV_MALFORMED);
	/* bad names are refused both ways */
	cl_env bad = e;
	snprintf(bad.from, sizeof(bad.from), "a b");
	CHECK_EQ(cl_env_head(&bad, f), 0);
	/* another version, with the sender's name for the log */
	e.version = 7;
	hl = cl_env_head(&e, f);
	memcpy(f + hl, "xyz", 3);
	CHECK_EQ(cl_env_decode(f, hl + 3, &d), CL_ENV_BAD_VERSION);
	CHECK_EQ(d.version, 7);
	CHECK_STR(d.from, "a@127.0.0.1");
	/* an array that claims 4 G elements */
	const uint8_t huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xa4, 'p', 'h', 'x', 'c'};
	CHECK_EQ(cl_env_decode(huge, sizeof(huge), &d), CL_ENV_MALFORMED);
	/* heartbeat bodies */
	const char *addrs[] = {"tcp://127.0.0.1:5001", "ipc:///tmp/x"};
	uint8_t hb[256];
	size_t n = cl_env_hb_encode(addrs, 2, hb, sizeof(hb));
	CHECK(n > 0);
	CHECK_EQ(cl_env_hb_decode(hb, n, 2, NULL, NULL), 2);
	CHECK_EQ(cl_env_hb_decode(hb, n, 1, NULL, NULL), -1);
	CHECK_EQ(cl_env_hb_decode(hb, n - 1, 2, NULL, NULL), -1);
	const char *evil[] = {"tcp://\"x\""};
	n = cl_env_hb_encode(evil, 1, hb, sizeof(hb));
	CHECK_EQ(cl_env_hb_decode(hb, n, 2, NULL, NULL), -1);
	/* a NUL inside an address (found by fuzz_envelope): it would be cut there */
	CHECK(!cl_env_addr_ok("tcp://a:1\0x", 11));
	CHECK(!cl_env_addr_ok("\0", 1));
	const uint8_t nul[] = {0x91, 0xa4, 0, 0, 0, 0};
	CHECK_EQ(cl_env_hb_decode(nul, sizeof(nul), 2, NULL, NULL), -1);
}

/* cl_msgpack_scan accepts what msgpack-c unpacks: nesting up to its limit
 * of open containers (found by fuzz_msgpack_scan: 33 nested arrays passed
 * the scan, and msgpack-c then failed). */
static void
test_msgpack_scan_depth(void)
{
	uint8_t b[MSGPACK_EMBED_STACK_SIZE + 2];
	for (size_t depth = MSGPACK_EMBED_STACK_SIZE - 1; depth <= MSGPACK_EMBED_STACK_SIZE + 1;
	     depth++) {
		for (uint8_t last = 0x90; last <= 0xc0; last += 0x30) { /* [] or nil innermost */
			memset(b, 0x91, depth);
			b[depth] = last;
			msgpack_unpacked u;
			msgpack_unpacked_init(&u);
			size_t off = 0;
			bool unpacks = msgpack_unpack_next(&u, (const char *)b, depth + 1, &off) ==
			                   MSGPACK_UNPACK_SUCCESS &&
			               off == depth + 1;
			msgpack_unpacked_destroy(&u);
			bool scan = cl_msgpack_scan(b, depth + 1);
			CHECK_MSG(scan == unpacks,
			          "depth %zu, innermost 0x%x: scan %d, msgpack-c %d", depth, last,
			          scan, unpacks);
			CHECK_EQ(scan, depth < MSGPACK_EMBED_STACK_SIZE ||
			                   (depth == MSGPACK_EMBED_STACK_SIZE && last == 0xc0));
		}
	}
	/* counts are still bounded by the bytes present, at every level */
	const uint8_t lying[] = {0x92, 0x93, 0xc0, 0xc0, 0xc0};
	CHECK(!cl_msgpack_scan(lying, sizeof(lying)));
	const uint8_t fine[] = {0x92, 0x92, 0xc0, 0x90, 0x80};
	CHECK(cl_msgpack_scan(fine, sizeof(fine)));
	CHECK(!cl_msgpack_scan(fine, sizeof(fine) - 1));
}

/* ------------------------------------------------------------------ in one process */

static void
test_seed_full_mesh_and_monitors(void)
{
	start_rt();
	cl_node *a = node("a@t", NULL);
	rt_pid mon = probe_spawn(1, false);
	CHECK_EQ(cl_monitor_nodes(a, mon, MON_TAG), 0);
	cl_node *b = node("b@t", cl_addr(a));
	cl_node *c = node("c@t", cl_addr(a));
	WAIT_UNTIL(ups(a) == 2 && ups(b) == 2 && ups(c) == 2, 10000);
	cl_node_event e1 = next_event(1, 1000), e2 = next_event(1, 1000);
	CHECK(e1.up && e2.up);
	CHECK(strcmp(e1.name, e2.name) != 0);
	CHECK(e1.incarnation == cl_incarnation(strcmp(e1.name, "b@t") == 0 ? b : c));
	/* a late monitor gets the members up first */
	rt_pid mon2 = probe_spawn(2, false);
	CHECK_EQ(cl_monitor_nodes(b, mon2, MON_TAG), 0);
	cl_node_event f1 = next_event(2, 1000), f2 = next_event(2, 1000);
	CHECK(f1.up && f2.up);
	/* addresses learned from heartbeats */
	cl_member m[4];
	size_t n = cl_members(c, m, 4);
	CHECK_EQ(n, 2);
	for (size_t i = 0; i < n; i++)
		CHECK_STR(m[i].addr, strcmp(m[i].name, "a@t") == 0 ? cl_addr(a) : cl_addr(b));
	cl_stop(c);
	cl_node_event g = next_event(1, 5000);
	CHECK(!g.up);
	CHECK_STR(g.name, "c@t");
	CHECK_STR(g.reason, "goodbye");
	cl_stop(b);
	cl_stop(a);
	rt_shutdown();
}

static void
test_send_all_once_send_to_only_addressee(void)
{
	start_rt();
	cl_node *a = node("a@t", NULL);
	cl_node *b = node("b@t", cl_addr(a));
	cl_node *c = node("c@t", cl_addr(b));
	rx rb, rc, tb, tc;
	rx_init(&rb);
	rx_init(&rc);
	rx_init(&tb);
	rx_init(&tc);
	CHECK_EQ(cl_register(b, CL_SVC_PUBSUB, on_data, &rb), 0);
	CHECK_EQ(cl_register(b, CL_SVC_PUBSUB, on_data, &rb), -1);
	CHECK_EQ(cl_register(c, CL_SVC_PUBSUB, on_data, &rc), 0);
	CHECK_EQ(cl_register(b, CL_SVC_TRACKER, on_data, &tb), 0);
	CHECK_EQ(cl_register(c, CL_SVC_TRACKER, on_data, &tc), 0);
	CHECK_EQ(cl_register(c, CL_SVC_MAX, on_data, &tc), -1);
	WAIT_UNTIL(ups(a) == 2 && ups(b) == 2 && ups(c) == 2, 10000);
	/* let the first dials settle (two nodes dialing each other would show
	 * as duplicates below) */
	enum { N = 10 };
	for (uint32_t i = 0; i < N; i++)
		CHECK_EQ(cl_send_all(a, CL_SVC_PUBSUB, &i, sizeof(i)), 0);
	uint32_t zero = 0;
	CHECK_EQ(cl_send_to(a, "b@t", CL_SVC_TRACKER, &zero, sizeof(zero)), 0);
	CHECK_EQ(cl_send_to(a, "nobody@t", CL_SVC_TRACKER, &zero, sizeof(zero)), -1);
	/* a marker after them: once it is in, everything before it is */
	uint32_t mark = N;
	CHECK_EQ(cl_send_all(a, CL_SVC_PUBSUB, &mark, sizeof(mark)), 0);
	WAIT_UNTIL(rx_count(&rb, "a@t") == N + 1 && rx_count(&rc, "a@t") == N + 1, 5000);
	WAIT_UNTIL(rx_count(&tb, "a@t") == 1, 5000);
	CHECK_EQ(rx_total(&tc), 0);
	CHECK_EQ(rb.order_errors, 0);
	CHECK_EQ(rc.order_errors, 0);
	/* b and c to each other (a link they made themselves) */
	uint32_t v = 0;
	CHECK_EQ(cl_send_all(c, CL_SVC_PUBSUB, &v, sizeof(v)), 0);
	WAIT_UNTIL(rx_count(&rb, "c@t") == 1, 5000);
	CHECK_EQ(cl_send_to(b, "c@t", CL_SVC_TRACKER, &v, sizeof(v)), 0);
	WAIT_UNTIL(rx_count(&tc, "b@t") == 1, 5000);
	/* nothing twice: the counts stay after more heartbeats */
	int64_t t0 = test_now_ms();
	while (test_now_ms() - t0 < 3 * HB)
		usleep(10000);
	CHECK_EQ(rx_count(&rb, "a@t"), N + 1);
	CHECK_EQ(rx_count(&rc, "a@t"), N + 1);
	CHECK_EQ(rx_count(&tb, "a@t"), 1);
	CHECK_EQ(rx_total(&tc), 1);
	CHECK_EQ(stats(b).duplicates + stats(c).duplicates, 0);
	CHECK_EQ(stats(b).lost + stats(c).lost, 0);
	CHECK_EQ(stats(b).unknown_service, 0);
	cl_stop(c);
	cl_stop(b);
	cl_stop(a);
	rt_shutdown();
}

static void
test_order_of_10000_frames(void)
{
	start_rt();
	cl_node *a = node("a@t", NULL);
	cl_node *b = node("b@t", cl_addr(a));
	rx r;
	rx_init(&r);
	CHECK_EQ(cl_register(b, CL_SVC_PUBSUB, on_data, &r), 0);
	WAIT_UNTIL(ups(a) == 1 && ups(b) == 1, 10000);
	/* flat out: the mesh's batches keep bus's 16-message pipe queue from
	 * dropping (cluster/mesh.c) */
	enum { N = 10000 };
	for (uint32_t i = 0; i < N; i++)
		CHECK_EQ(cl_send_all(a, CL_SVC_PUBSUB, &i, sizeof(i)), 0);
	WAIT_UNTIL(rx_count(&r, "a@t") == N, 10000);
	CHECK_EQ(r.order_errors, 0);
	CHECK_EQ(stats(b).lost, 0);
	CHECK_EQ(stats(a).send_dropped, 0);
	CHECK(stats(a).sent >= N);
	CHECK(stats(b).received >= N);
	cl_stop(b);
	cl_stop(a);
	rt_shutdown();
}

/* Two nodes given each other as peers dial each other: two pipes, and bus
 * brings every frame twice; the sequence numbers let each through once,
 * to all or to one node. */
static void
test_mutual_peers_frames_once(void)
{
	start_rt();
	char addr[2][64];
	for (int i = 0; i < 2; i++)
		snprintf(addr[i], sizeof(addr[i]), "tcp://127.0.0.1:%d", free_port());
	cl_node *n[2];
	for (int i = 0; i < 2; i++) {
		const char *peers[] = {addr[1 - i], NULL};
		cl_opts o = {.name = i ? "b@t" : "a@t",
		             .listen = addr[i],
		             .peers = peers,
		             .heartbeat_ms = HB,
		             .down_after_ms = DOWN};
		CHECK((n[i] = cl_start(&o)) != NULL);
	}
	rx r;
	rx_init(&r);
	CHECK_EQ(cl_register(n[1], CL_SVC_PUBSUB, on_data, &r), 0);
	WAIT_UNTIL(ups(n[0]) == 1 && ups(n[1]) == 1, 10000);
	usleep(5 * HB * 1000); /* both dials done: two pipes */
	uint64_t d0 = stats(n[1]).duplicates;
	for (uint32_t i = 0; i < 100; i++)
		CHECK_EQ(cl_send_to(n[0], "b@t", CL_SVC_PUBSUB, &i, sizeof(i)), 0);
	for (uint32_t i = 100; i < 200; i++)
		CHECK_EQ(cl_send_all(n[0], CL_SVC_PUBSUB, &i, sizeof(i)), 0);
	WAIT_UNTIL(rx_count(&r, "a@t") == 200, 5000);
	usleep(300 * 1000);
	CHECK_EQ(rx_count(&r, "a@t"), 200);
	CHECK_EQ(r.order_errors, 0);
	CHECK_MSG(stats(n[1]).duplicates - d0 >= 200, "two pipes expected: %" PRIu64 " duplicates",
	          stats(n[1]).duplicates - d0);
	cl_stop(n[1]);
	cl_stop(n[0]);
	rt_shutdown();
}

/* A raw frame from "raw@t" (v1 unless version says otherwise). */
static size_t
raw_frame(uint8_t *out, uint32_t version, int kind, uint64_t seq, int service, const void *body,
          size_t len)
{
	cl_env e = {.version = version,
	            .kind = kind,
	            .from = "raw@t",
	            .incarnation = 1,
	            .seq = seq,
	            .service = service,
	            .body_len = len};
	size_t hl = cl_env_head(&e, out);
	memcpy(out + hl, body, len);
	return hl + len;
}

/* Sends one frame as a batch of one (cluster/mesh.c: its length, then it). */
static void
raw_send(nng_socket s, const void *f, size_t len)
{
	uint8_t b[600];
	CHECK(len + 4 <= sizeof(b));
	b[0] = (uint8_t)(len >> 24);
	b[1] = (uint8_t)(len >> 16);
	b[2] = (uint8_t)(len >> 8);
	b[3] = (uint8_t)len;
	memcpy(b + 4, f, len);
	CHECK_EQ(nng_send(s, b, len + 4, 0), 0);
}

static void
test_bad_frames_counted(void)
{
	start_rt();
	cl_node *a = node("a@t", NULL);
	rx r;
	rx_init(&r);
	CHECK_EQ(cl_register(a, CL_SVC_PUBSUB, on_data, &r), 0);
	nng_socket s;
	CHECK_EQ(nng_bus0_open(&s), 0);
	CHECK_EQ(nng_dial(s, cl_addr(a), NULL, 0), 0);
	uint8_t f[512];
	uint32_t v = 0;
	/* a first good frame: the pipe is up on a's side once it is in */
	size_t n = raw_frame(f, 1, CL_K_DATA, 1, CL_SVC_PUBSUB, &v, sizeof(v));
	raw_send(s, f, n);
	WAIT_UNTIL(rx_count(&r, "raw@t") == 1, 5000);
	raw_send(s, "garbage", 7);                             /* malformed */
	raw_send(s, f, n - 1);                                 /* truncated: malformed */
	const uint8_t huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff}; /* malformed */
	raw_send(s, huge, sizeof(huge));
	CHECK_EQ(nng_send(s, f, n, 0), 0); /* no length: a batch that lies, malformed */
	uint8_t g[512];
	size_t gn = raw_frame(g, 2, CL_K_DATA, 2, CL_SVC_PUBSUB, &v, sizeof(v));
	raw_send(s, g, gn); /* bad version (logged once) */
	raw_send(s, g, gn); /* bad version */
	gn = raw_frame(g, 1, CL_K_DATA, 2, 5, &v, sizeof(v));
	raw_send(s, g, gn); /* unknown service */
	raw_send(s, f, n);  /* seq 1 again: a duplicate */
	/* a heartbeat with an address that is not one */
	uint8_t hb[64];
	const char *evil[] = {"tcp://\"}"};
	size_t hn = cl_env_hb_encode(evil, 1, hb, sizeof(hb));
	gn = raw_frame(g, 1, CL_K_HEARTBEAT, 3, 0, hb, hn);
	raw_send(s, g, gn); /* malformed */
	v = 1;
	n = raw_frame(f, 1, CL_K_DATA, 5, CL_SVC_PUBSUB, &v, sizeof(v));
	raw_send(s, f, n); /* seq 3 and 4 missing (3 was malformed: not taken) */
	WAIT_UNTIL(rx_count(&r, "raw@t") == 2, 5000);
	cl_stats st = stats(a);
	CHECK_EQ(st.malformed, 5);
	CHECK_EQ(st.bad_version, 2);
	CHECK_EQ(st.unknown_service, 1);
	CHECK_EQ(st.duplicates, 1);
	CHECK_EQ(st.lost, 2);
	CHECK_EQ(r.order_errors, 0);
	/* and a real node still gets through */
	cl_node *b = node("b@t", cl_addr(a));
	v = 0;
	WAIT_UNTIL(is_up(a, "b@t"), 5000);
	CHECK_EQ(cl_send_all(b, CL_SVC_PUBSUB, &v, sizeof(v)), 0);
	WAIT_UNTIL(rx_count(&r, "b@t") == 1, 5000);
	/* raw@t falls silent: down */
	nng_close(s);
	WAIT_UNTIL(!is_up(a, "raw@t"), 5000);
	cl_stop(b);
	cl_stop(a);
	rt_shutdown();
}

static void
test_stats_json(void)
{
	start_rt();
	cl_node *a = node("a@t", NULL);
	cl_node *b = node("b@t", cl_addr(a));
	WAIT_UNTIL(ups(a) == 1, 10000);
	char buf[4096];
	size_t n = cl_stats_json(a, buf, sizeof(buf));
	CHECK(n > 0 && n < sizeof(buf));
	cJSON *j = cJSON_Parse(buf);
	CHECK_MSG(j != NULL, "not JSON: %s", buf);
	CHECK_STR(cJSON_GetObjectItem(j, "name")->valuestring, "a@t");
	CHECK_STR(cJSON_GetObjectItem(j, "addr")->valuestring, cl_addr(a));
	CHECK(cJSON_GetObjectItem(j, "received")->valuedouble >= 1);
	cJSON *ms = cJSON_GetObjectItem(j, "members");
	CHECK(cJSON_IsArray(ms));
	CHECK_EQ(cJSON_GetArraySize(ms), 1);
	cJSON *m0 = cJSON_GetArrayItem(ms, 0);
	CHECK_STR(cJSON_GetObjectItem(m0, "name")->valuestring, "b@t");
	CHECK(cJSON_IsTrue(cJSON_GetObjectItem(m0, "up")));
	cJSON_Delete(j);
	CHECK_EQ(cl_stats_json(a, buf, 10), 0);
	cl_stop(b);
	cl_stop(a);
	rt_shutdown();
}

static void
test_bad_options(void)
{
	start_rt();
	cl_opts o = {.name = "bad name", .listen = "tcp://127.0.0.1:0"};
	CHECK(cl_start(&o) == NULL);
	o.name = "a@t";
	o.link = "carrier-pigeon";
	CHECK(cl_start(&o) == NULL);
	o.link = NULL;
	o.listen = "nonsense://x";
	CHECK(cl_start(&o) == NULL);
	cl_node *a = node("a@t", NULL);
	o.listen = cl_addr(a); /* in use */
	CHECK(cl_start(&o) == NULL);
	cl_stop(a);
	rt_shutdown();
}

static void
test_restart_reattaches(void)
{
	start_rt();
	rt_sup_spec spec = {.strategy = RT_ONE_FOR_ONE, .intensity = 5, .period_ms = 5000};
	rt_pid sup = rt_sup_start(&spec);
	CHECK(sup != RT_NOPID);
	cl_node *a = node_opts("a@t", NULL, DOWN, sup);
	cl_node *b = node("b@t", cl_addr(a));
	rx r;
	rx_init(&r);
	CHECK_EQ(cl_register(a, CL_SVC_PUBSUB, on_data, &r), 0);
	WAIT_UNTIL(ups(a) == 1 && ups(b) == 1, 10000);
	rt_pid p = cl_pid(a);
	CHECK(rt_alive(p));
	rt_exit(p, "kill");
	WAIT_UNTIL(cl_pid(a) != p && rt_alive(cl_pid(a)), 5000);
	uint32_t v = 0;
	CHECK_EQ(cl_send_all(b, CL_SVC_PUBSUB, &v, sizeof(v)), 0);
	WAIT_UNTIL(rx_count(&r, "b@t") == 1, 5000);
	CHECK(is_up(a, "b@t"));
	cl_stop(b);
	cl_stop(a);
	rt_exit(sup, "shutdown");
	CHECK_EQ(rt_wait_exit(sup, 5000), 0);
	rt_shutdown();
}

/* ------------------------------------------------------------------ a second OS process */

static void
test_peer_stop_cont_kill(void)
{
	start_rt();
	cl_node *a = node("a@t", NULL);
	rt_pid mon = probe_spawn(1, false);
	CHECK_EQ(cl_monitor_nodes(a, mon, MON_TAG), 0);
	pid_t peer = peer_spawn("peer@t", cl_addr(a));
	cl_node_event e = next_event(1, 10000);
	CHECK(e.up);
	CHECK_STR(e.name, "peer@t");
	uint64_t inc = e.incarnation;

	int64_t t0 = test_now_ms();
	kill(peer, SIGSTOP);
	e = next_event(1, DOWN + 3000);
	int64_t took = test_now_ms() - t0;
	CHECK(!e.up);
	CHECK_STR(e.reason, "timeout");
	CHECK_MSG(took >= DOWN - HB - 50, "down after %lld ms", (long long)took);

	kill(peer, SIGCONT);
	e = next_event(1, 5000);
	CHECK(e.up);
	CHECK(e.incarnation == inc);

	t0 = test_now_ms();
	peer_kill(peer);
	e = next_event(1, DOWN + 3000);
	took = test_now_ms() - t0;
	CHECK(!e.up);
	CHECK_STR(e.reason, "timeout");
	CHECK_MSG(took >= DOWN - HB - 50, "down after %lld ms", (long long)took);
	CHECK_EQ(stats(a).malformed + stats(a).bad_version, 0);
	cl_stop(a);
	rt_shutdown();
}

static void
test_peer_restart(void)
{
	start_rt();
	/* a long down_after: the restart is heard before any timeout */
	cl_node *a = node_opts("a@t", NULL, 10000, RT_NOPID);
	rt_pid mon = probe_spawn(1, false);
	CHECK_EQ(cl_monitor_nodes(a, mon, MON_TAG), 0);
	pid_t peer = peer_spawn("peer@t", cl_addr(a));
	cl_node_event e = next_event(1, 10000);
	CHECK(e.up);
	uint64_t inc1 = e.incarnation;
	peer_kill(peer);
	peer = peer_spawn("peer@t", cl_addr(a));
	e = next_event(1, 8000);
	CHECK(!e.up);
	CHECK_STR(e.reason, "restarted");
	CHECK(e.incarnation == inc1);
	e = next_event(1, 1000);
	CHECK(e.up);
	CHECK(e.incarnation > inc1);
	CHECK(is_up(a, "peer@t"));
	peer_kill(peer);
	cl_stop(a);
	rt_shutdown();
}

TEST_LIST = {
    TEST(test_envelope),
    TEST(test_msgpack_scan_depth),
    TEST(test_seed_full_mesh_and_monitors),
    TEST(test_send_all_once_send_to_only_addressee),
    TEST(test_order_of_10000_frames),
    TEST(test_bad_frames_counted),
    TEST(test_mutual_peers_frames_once),
    TEST(test_stats_json),
    TEST(test_bad_options),
    TEST(test_restart_reattaches),
    TEST(test_peer_stop_cont_kill),
    TEST(test_peer_restart),
    TEST_END,
};
