/*
 * bench/loadgen: the bundled load generator.  A libev WebSocket client that
 * speaks the Phoenix Channels protocol (V2 arrays by default, V1 objects with
 * --vsn 1) to any Phoenix-protocol server, phx-c or a real Phoenix node, and
 * measures it.  Scenarios:
 *
 *   connect    N connections opened at a paced rate, each joining one of the
 *              topics, held for D seconds: connect+join rate, join latency,
 *              failures by reason, server RSS growth per connection.
 *   broadcast  N subscribers and P publishers (extra connections, joined
 *              too) on the topics; each publisher pushes `new_msg` with body
 *              "seq:<run>:<publisher>:<seq>:<send ns>" at --rate R per second
 *              (or flat out with at most --window W in flight); deliveries/s,
 *              end-to-end latency, fan-out time (send -> last subscriber),
 *              lost / duplicated / out-of-order messages per subscriber.
 *   pingpong   N clients in closed loop: push `ping`, wait for the reply,
 *              push again: round trips/s and latency.
 *
 * Shape: the parent plans the run, forks K worker processes (fork before any
 * loop exists), each owning a slice of the clients on its own libev loop and
 * its own source address 127.0.0.(2+k) (bind before connect, port 0,
 * IP_BIND_ADDRESS_NO_PORT), so that no process passes the open-file limit and
 * no source address runs out of ports.  Workers talk to the parent over two
 * pipes in binary structs (struct msg_hdr + payload): progress counters every
 * 250 ms, READY when every client of theirs is joined or failed, SENT (the
 * publishers' final sequence numbers), FINAL (counters, histograms, time
 * series), FANOUT (per-message latest delivery) and END.  The parent sends
 * GO (all workers start the scenario at once, after every join), STOP after D
 * seconds, and EXPECT (how many messages each publisher sent, so that every
 * worker can count loss exactly and stop draining as soon as nothing is
 * missing).  Send timestamps are CLOCK_MONOTONIC, which every process on this
 * machine shares.
 *
 * Output: a progress line on a terminal, a human summary, one JSON line with
 * every figure (stdout, and --json FILE), PNG charts with gnuplot (--plot),
 * and with --compare URL the same run against a second server and the ratios.
 * Every buffer is bounded: a connection whose input or output passes its cap
 * is closed and counted as a failure.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/hist.h"
#include "bench/json_scan.h"
#include "bench/lp_client.h"
#include "bench/util.h"
#include "transports/ws.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---- limits and sizes ---- */

#define MAX_WORKERS 252          /* source addresses 127.0.0.2 .. 127.0.0.253 */
#define PER_WORKER_DEFAULT 19000 /* sockets per worker: under the 20,000 open files */
#define FD_RESERVE 200           /* fds a worker keeps for pipes, stdio, libev */
#define MAX_PUBLISHERS 1024
#define MAX_TOPICS 1024
#define MAX_PIDS 16
#define HS_MAX 8192             /* cap on the 101 response head */
#define OUT_SOFT (64 * 1024)    /* publishers pause above this much queued output */
#define OUT_CAP (1024 * 1024)   /* a connection queueing more output fails */
#define FRAME_MAX (64 * 1024)   /* largest frame we send */
#define FANOUT_SLOTS (1u << 22) /* per worker, over all publishers: 32 MB */
#define SERIES_MAX 6000         /* time-series buckets */
#define JOIN_REF 1u             /* join_ref and ref of every phx_join */
#define PARENT_BUF_MAX ((size_t)1 << 30)

/* ---- options ---- */

enum scenario { SC_CONNECT, SC_BROADCAST, SC_PINGPONG };
static const char *const scenario_names[] = {"connect", "broadcast", "pingpong"};
enum transport { T_WEBSOCKET, T_LONGPOLL };
static const char *const transport_names[] = {"websocket", "longpoll"};

static struct opts {
	int scenario;
	const char *url, *compare_url;
	const char *pub_url; /* broadcast: where the publishers connect (NULL: url) */
	int vsn;             /* 1 or 2 */
	int transport;       /* T_WEBSOCKET or T_LONGPOLL: every client but the publishers */
	int pub_transport;   /* the publishers'; -1: transport */
	long n;              /* clients (subscribers for broadcast) */
	char *topics[MAX_TOPICS];
	int ntopics;
	int publishers;
	double rate;         /* messages/s per publisher; 0: flat out */
	int window;          /* flat out: messages in flight per publisher */
	int size;            /* minimum body length */
	double duration;     /* seconds */
	double connect_rate; /* connections/s over all workers; 0: unpaced */
	int max_pending;     /* per worker: connections being set up at once */
	double timeout;      /* seconds for connect + handshake + join */
	double drain;        /* broadcast: seconds to wait for late messages */
	double heartbeat;    /* seconds; 0: none */
	int workers;         /* 0: as many as the limits need */
	long per_worker;     /* sockets per worker */
	int bind_src;        /* -1 auto (loopback targets), 0 off, 1 on */
	int src_lo, src_hi; /* --src-ports: bind these source ports in turn (0: the kernel picks) */
	size_t max_msg;     /* largest message accepted from the server */
	const char *params; /* extra query string, e.g. token=... */
	pid_t pids[MAX_PIDS], cpids[MAX_PIDS];
	int npids, ncpids;
	const char *json_path, *plot_dir;
	int quiet;
} O = {
    .scenario = -1,
    .url = "http://127.0.0.1:4000",
    .vsn = 2,
    .pub_transport = -1,
    .n = 1000,
    .publishers = 1,
    .rate = 10,
    .window = 16,
    .duration = 10,
    .connect_rate = 5000,
    .max_pending = 1000,
    .timeout = 15,
    .drain = 10,
    .heartbeat = 30,
    .per_worker = PER_WORKER_DEFAULT,
    .bind_src = -1,
    .max_msg = 256 * 1024,
};

/* Notes on limits that capped or shaped the run (printed and in the JSON). */
static char limit_notes[8][256];
static int nlimit_notes;

static void
limit_note(const char *fmt, ...)
{
	if (nlimit_notes >= 8)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(limit_notes[nlimit_notes++], sizeof(limit_notes[0]), fmt, ap);
	va_end(ap);
}

static void
die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* ---- counters and the worker/parent protocol ---- */

enum fail_reason {
	F_REFUSED,
	F_CONNECT_TIMEOUT,
	F_CONNECT_ERROR,
	F_NO_FD,
	F_HS_REFUSED,
	F_HS_INVALID,
	F_HS_TIMEOUT,
	F_JOIN_ERROR,
	F_JOIN_TIMEOUT,
	F_CLOSED,
	F_PROTOCOL,
	F_OVERFLOW,
	F_BAD_HTTP,     /* long poll: a malformed HTTP answer, or not 200 */
	F_LP_FORBIDDEN, /* long poll: status 403 (connect refused, vsn unsupported) */
	F_LP_GONE,      /* long poll: status 410 on a poll or a POST of an open session */
	F_LP_STATUS,    /* long poll: any other status in the body */
	F_REQ_TIMEOUT,  /* long poll: a poll or POST unanswered for too long */
	F_NREASONS
};
static const char *const fail_names[F_NREASONS] = {
    "refused",           "connect_timeout",   "connect_error", "no_fd",        "handshake_refused",
    "handshake_invalid", "handshake_timeout", "join_error",    "join_timeout", "closed",
    "protocol_error",    "buffer_overflow",   "bad_http",      "status_403",   "status_410",
    "bad_status",        "request_timeout",
};

/* Counters of one worker; summed (or min/max-ed) by the parent. */
struct counters {
	uint64_t attempted, connected, upgraded, joined;
	uint64_t fail[F_NREASONS]; /* clients that never joined, by reason */
	uint64_t dropped;          /* joined clients lost before the end */
	uint64_t dropped_why[F_NREASONS];
	uint64_t chan_errors;    /* phx_error / phx_close received */
	uint64_t sent;           /* new_msg or ping pushes */
	uint64_t delivered;      /* new_msg receipts by subscribers, dups included */
	uint64_t uniq;           /* distinct (publisher, seq) per subscriber */
	uint64_t expected;       /* FINAL: deliveries the joined subscribers were owed */
	uint64_t lost, dup, ooo; /* FINAL for lost */
	uint64_t subs_lost, subs_dup, subs_ooo; /* subscribers with any */
	uint64_t self_recv;                     /* publishers' receipts of their own messages */
	uint64_t replies, reply_errors;         /* pingpong */
	uint64_t foreign;                       /* new_msg not from this run */
	uint64_t bad_frames;                    /* unparseable frames */
	uint64_t bytes_in, bytes_out;
	uint64_t lp_polls, lp_posts; /* long poll: answered GETs and POSTs */
	uint64_t cpu_run_us;         /* this worker's CPU time (user + sys) from GO to STOP */
	/* Not sums: merged as maxima or last values. */
	uint64_t max_lost_sub;    /* most messages one subscriber lost */
	uint64_t pub_backlog_max; /* rate mode: most messages a publisher was behind */
	uint64_t hs_status_last;  /* last non-101 status of a refused upgrade */
	uint64_t errno_last;      /* last errno of a connect_error */
	uint64_t loop_busy_max;   /* ns: longest loop iteration of a worker during the run */
	int64_t t_first_attempt, t_last_join, t_first_send, t_last_send, t_last_recv;
};

enum { M_PROGRESS = 1, M_READY, M_SENT, M_FINAL, M_FANOUT, M_END };
enum { C_GO = 1, C_STOP, C_EXPECT };

struct msg_hdr {
	uint32_t type, len;
};

struct final_msg {
	struct counters c;
	hist hsetup, hjoin, hlat;
	uint32_t jseries[SERIES_MAX], eseries[SERIES_MAX];
};

struct fanout_hdr {
	uint32_t pub, stride, n, pad;
};

/* Writes all of p[0, n) to a blocking fd. */
static int
send_msg(int fd, uint32_t type, const void *p, size_t n)
{
	struct msg_hdr h = {type, (uint32_t)n};
	if (write_all(fd, &h, sizeof h))
		return -1;
	return n ? write_all(fd, p, n) : 0;
}

/* ---- target URL ---- */

struct target {
	const char *url;
	char host[256];     /* for the Host header */
	char path[2048];    /* path and query of the upgrade request */
	char lp_path[2048]; /* path and query of the long-poll requests */
	struct sockaddr_storage sa;
	socklen_t salen;
	int family;
	int loopback; /* IPv4 127.0.0.0/8: source addresses can be spread */
};

/* The server of --url and the publishers' of --pub-url: parsed by main before
 * the workers fork, read-only afterwards (a worker's plan points at them). */
static struct target g_t1, g_tpub;

static void
target_parse(const char *url, struct target *t)
{
	memset(t, 0, sizeof *t);
	t->url = url;
	const char *p = url;
	if (!strncmp(p, "https://", 8) || !strncmp(p, "wss://", 6))
		die("%s: TLS is not supported; use http:// or ws://", url);
	if (!strncmp(p, "http://", 7))
		p += 7;
	else if (!strncmp(p, "ws://", 5))
		p += 5;
	char host[256], port[16] = "80";
	size_t hl;
	if (*p == '[') {
		const char *e = strchr(p, ']');
		if (!e)
			die("%s: bad IPv6 address", url);
		hl = (size_t)(e - p - 1);
		if (hl >= sizeof host)
			die("%s: host too long", url);
		memcpy(host, p + 1, hl);
		host[hl] = 0;
		p = e + 1;
	} else {
		hl = strcspn(p, ":/?");
		if (hl == 0 || hl >= sizeof host)
			die("%s: bad host", url);
		memcpy(host, p, hl);
		host[hl] = 0;
		p += hl;
	}
	if (*p == ':') {
		size_t pl = strcspn(p + 1, "/?");
		if (pl == 0 || pl >= sizeof port)
			die("%s: bad port", url);
		memcpy(port, p + 1, pl);
		port[pl] = 0;
		p += 1 + pl;
	}
	snprintf(t->host, sizeof t->host, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);

	/* Paths: the socket's mount path (default /socket) + /websocket or /longpoll
	 * (Phoenix's convention); a URL may name either. */
	size_t pl = strcspn(p, "?#");
	char mount[1024];
	if (pl >= sizeof mount - 16)
		die("%s: path too long", url);
	const char *q = p[pl] == '?' ? p + pl + 1 : "";
	memcpy(mount, p, pl);
	mount[pl] = 0;
	while (pl > 0 && mount[pl - 1] == '/')
		mount[--pl] = 0;
	if (pl >= 10 && strcmp(mount + pl - 10, "/websocket") == 0)
		mount[pl -= 10] = 0; /* mounted at the root when nothing is left */
	else if (pl >= 9 && strcmp(mount + pl - 9, "/longpoll") == 0)
		mount[pl -= 9] = 0;
	else if (pl == 0)
		strcpy(mount, "/socket");
	size_t ql = strcspn(q, "#");
	for (int k = 0; k < 2; k++) {
		char *dst = k ? t->lp_path : t->path;
		int n = snprintf(dst, sizeof t->path, "%s/%s?%.*s%s%s%s%s", mount,
		                 k ? "longpoll" : "websocket", (int)ql, q, ql ? "&" : "",
		                 O.vsn == 1 ? "vsn=1.0.0" : "vsn=2.0.0", O.params ? "&" : "",
		                 O.params ? O.params : "");
		if (n < 0 || (size_t)n >= sizeof t->path)
			die("%s: URL too long", url);
	}
	if (ql && strstr(q, "vsn="))
		die("%s: give the serializer with --vsn, not in the URL", url);

	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
	int rc = getaddrinfo(host, port, &hints, &ai);
	if (rc)
		die("%s: %s", url, gai_strerror(rc));
	memcpy(&t->sa, ai->ai_addr, ai->ai_addrlen);
	t->salen = ai->ai_addrlen;
	t->family = ai->ai_family;
	if (ai->ai_family == AF_INET) {
		uint32_t a = ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr);
		t->loopback = (a >> 24) == 127;
	}
	freeaddrinfo(ai);
}

/* ---- a tiny JSON scanner for server frames ---- */

struct sl {
	const char *p;
	size_t n;
};

static int
sl_eq(struct sl s, const char *lit)
{
	size_t n = strlen(lit);
	return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* The value of key (given with its quotes) in the object obj, or {NULL, 0}. */
static struct sl
j_get(struct sl obj, const char *key)
{
	struct sl none = {NULL, 0};
	const char *p = js_ws(obj.p, obj.p + obj.n), *e = obj.p + obj.n;
	if (p >= e || *p != '{')
		return none;
	p = js_ws(p + 1, e);
	if (p < e && *p == '}')
		return none;
	size_t kl = strlen(key);
	while (p < e) {
		p = js_ws(p, e);
		const char *k = p;
		if (p >= e || *p != '"' || !(p = js_str(p, e)))
			return none;
		int match = (size_t)(p - k) == kl && !memcmp(k, key, kl);
		p = js_ws(p, e);
		if (p >= e || *p != ':')
			return none;
		const char *v = js_ws(p + 1, e);
		if (!(p = js_skip(v, e, 1)))
			return none;
		if (match)
			return (struct sl){v, (size_t)(p - v)};
		p = js_ws(p, e);
		if (p >= e || *p != ',')
			return none;
		p++;
	}
	return none;
}

/* A Phoenix message: slices of the raw JSON values (strings keep their quotes). */
struct phx_msg {
	struct sl join_ref, ref, topic, event, payload;
};

static int
phx_parse(const char *d, size_t n, struct phx_msg *m)
{
	const char *p = js_ws(d, d + n), *e = d + n;
	memset(m, 0, sizeof *m);
	if (O.vsn == 2) {
		struct sl *v[5] = {&m->join_ref, &m->ref, &m->topic, &m->event, &m->payload};
		if (p >= e || *p != '[')
			return -1;
		p++;
		for (int i = 0; i < 5; i++) {
			const char *s = js_ws(p, e), *t = js_skip(s, e, 1);
			if (!t)
				return -1;
			*v[i] = (struct sl){s, (size_t)(t - s)};
			p = js_ws(t, e);
			if (p >= e || *p != (i < 4 ? ',' : ']'))
				return -1;
			p++;
		}
		return 0;
	}
	struct sl obj = {d, n};
	m->topic = j_get(obj, "\"topic\"");
	m->event = j_get(obj, "\"event\"");
	m->payload = j_get(obj, "\"payload\"");
	m->ref = j_get(obj, "\"ref\"");
	m->join_ref = j_get(obj, "\"join_ref\"");
	return m->event.p && m->payload.p ? 0 : -1;
}

/* A ref like "123" as a number; 0 for null or anything else. */
static uint32_t
ref_num(struct sl r)
{
	if (r.n < 3 || r.p[0] != '"' || r.p[r.n - 1] != '"')
		return 0;
	uint64_t v = 0;
	for (size_t i = 1; i + 1 < r.n; i++) {
		if (!isdigit((unsigned char)r.p[i]) || v > UINT32_MAX / 10)
			return 0;
		v = v * 10 + (uint64_t)(r.p[i] - '0');
	}
	return v <= UINT32_MAX ? (uint32_t)v : 0;
}

/* Parses a decimal number at *p (< e), advancing *p; -1 when none. */
static int
parse_u64(const char **p, const char *e, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;
	while (*p < e && isdigit((unsigned char)**p)) {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(**p - '0');
		(*p)++;
	}
	*out = v;
	return *p > s ? 0 : -1;
}

/* Parses a new_msg payload {"body":"seq:RUN:PUB:SEQ:NS..."}. */
static int
parse_body(struct sl payload, uint32_t *run, uint32_t *pub, uint32_t *seq, int64_t *ts)
{
	struct sl b = j_get(payload, "\"body\"");
	if (b.n < 6 || memcmp(b.p, "\"seq:", 5) != 0)
		return -1;
	const char *p = b.p + 5, *e = b.p + b.n;
	uint64_t v[4];
	for (int i = 0; i < 4; i++) {
		if (parse_u64(&p, e, &v[i]))
			return -1;
		if (i < 3) {
			if (p >= e || *p != ':')
				return -1;
			p++;
		}
	}
	if (v[0] > UINT32_MAX || v[1] > UINT32_MAX || v[2] > UINT32_MAX || v[3] > INT64_MAX)
		return -1;
	*run = (uint32_t)v[0];
	*pub = (uint32_t)v[1];
	*seq = (uint32_t)v[2];
	*ts = (int64_t)v[3];
	return 0;
}

static int
reply_ok(struct sl payload)
{
	return sl_eq(j_get(payload, "\"status\""), "\"ok\"");
}

/* ================================================================== */
/* Worker: one libev loop, a slice of the clients.                     */
/* ================================================================== */

enum state { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_JOINING, ST_JOINED, ST_FAILED, ST_DROPPED };
enum role { R_SUB, R_PUB, R_CLIENT };
enum wphase { W_SETUP, W_WAIT_GO, W_RUN, W_STOPPED, W_DRAIN, W_DONE };

/* Per subscriber and publisher of its topic: what was received. */
struct track {
	uint32_t last; /* highest seq seen */
	uint32_t uniq; /* distinct seqs counted */
	uint64_t win;  /* bit i: seq last - i was received */
};

/* One client connection.  Owned by its worker's loop. */
struct conn {
	ev_io io; /* first member: the watcher is the connection */
	int fd;
	uint8_t state, role;
	uint16_t topic;
	uint32_t id;       /* client index (R_SUB, R_CLIENT) or publisher id (R_PUB) */
	uint32_t next_ref; /* next ref to push */
	uint32_t ping_ref; /* pingpong: the ref awaited, 0 none */
	uint32_t sent;     /* publisher: last seq sent */
	uint32_t acked;    /* publisher: highest own seq received back */
	uint32_t dup, ooo; /* subscriber */
	int64_t t_start, t_join, t_hb, t_ping;
	uint8_t *pend; /* unparsed input (a partial frame or response head) */
	uint32_t pend_len, pend_cap;
	uint8_t *out; /* queued output, out[out_off, out_len) */
	uint32_t out_len, out_off, out_cap;
	char accept[29]; /* expected Sec-WebSocket-Accept */
	tp_ws_reader rd;
	struct track *trk;  /* subscriber: one per publisher of its topic */
	struct lp_sess *lp; /* a long-poll client (fd stays -1), else NULL */
};

/* Per publisher: each sampled message's latest delivery in this worker. */
struct fan {
	uint32_t stride, cap, n;
	int64_t *v; /* v[i]: 1 + max latency (ns) of seq 1 + i * stride; 0: none */
};

/* The parent's instructions to one worker. */
struct plan {
	int index, nworkers;
	uint32_t sub_lo, sub_hi; /* client indexes [lo, hi) */
	int bind_src;
	struct sockaddr_in src;
	double connect_rate; /* this worker's share */
	int64_t t0, series_ns;
	uint32_t run_id;
	int up, down;
	const struct target *t;
	const struct target *pt; /* the publishers' server (--pub-url), else t */
};

static struct worker {
	struct ev_loop *loop;
	struct plan pl;
	struct conn *conns;
	size_t nconns, nsubs, next, pending, settled;
	struct conn **pubs; /* local publishers */
	size_t npubs;
	int phase;
	int64_t t_pace, t_go, drain_deadline;
	struct counters c;
	hist hsetup, hjoin, hlat;
	uint32_t jseries[SERIES_MAX], eseries[SERIES_MAX];
	uint8_t *scratch;
	size_t scratch_size, pend_max;
	ev_io ctl;
	uint8_t ctl_buf[8 + 4 * MAX_PUBLISHERS + 64];
	size_t ctl_len;
	ev_timer pace, sweep, pubtick, finisher;
	ev_prepare prep;
	ev_check chk;
	int64_t t_woke; /* when the loop last came back from polling */
	int64_t cpu_go_us;
	uint32_t *expect; /* per publisher: messages it sent */
	uint64_t expect_total, uniq_total;
	struct fan *fan;
	uint32_t fan_cap;
	uint32_t pubs_on_topic[MAX_TOPICS];
	struct lp_ctx lp;        /* long-poll sessions of this worker */
	struct lp_target lpt[2]; /* where they go: clients, publishers */
	uint64_t rng;
	uint32_t next_port; /* --src-ports: the next source port to try */
	char pad[FRAME_MAX / 2];
} W;

static uint64_t
rng_next(void)
{
	uint64_t x = W.rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return W.rng = x;
}

static void
series_add(uint32_t *s, int64_t now)
{
	int64_t i = (now - W.pl.t0) / W.pl.series_ns;
	if (i < 0)
		return;
	s[i >= SERIES_MAX ? SERIES_MAX - 1 : i]++;
}

static void
conn_watch(struct conn *c, int events)
{
	if ((c->io.events & (EV_READ | EV_WRITE)) == events && ev_is_active(&c->io))
		return;
	ev_io_stop(W.loop, &c->io);
	ev_io_set(&c->io, c->fd, events);
	ev_io_start(W.loop, &c->io);
}

static void
conn_close_fd(struct conn *c)
{
	if (c->lp) {
		lp_close(c->lp);
		return;
	}
	if (c->fd < 0)
		return;
	ev_io_stop(W.loop, &c->io);
	close(c->fd);
	c->fd = -1;
	free(c->pend);
	free(c->out);
	c->pend = c->out = NULL;
	c->pend_len = c->pend_cap = c->out_len = c->out_off = c->out_cap = 0;
	tp_ws_reader_free(&c->rd);
}

static void check_ready(void);

/* A client whose connection (or long-poll session) is still up. */
static int
conn_alive(const struct conn *c)
{
	return c->lp ? lp_alive(c->lp) : c->fd >= 0;
}

/* Bytes queued towards the server and not yet sent (long poll: not yet
 * acknowledged by a POST answer). */
static size_t
conn_backlog(const struct conn *c)
{
	return c->lp ? lp_backlog(c->lp) : (size_t)(c->out_len - c->out_off);
}

/* Ends a connection: a failure before the join, a drop after it. */
static void
conn_fail(struct conn *c, int why)
{
	if (c->state == ST_JOINED) {
		W.c.dropped++;
		W.c.dropped_why[why]++;
		c->state = ST_DROPPED;
	} else if (c->state != ST_FAILED && c->state != ST_DROPPED) {
		W.c.fail[why]++;
		W.pending--;
		W.settled++;
		c->state = ST_FAILED;
	}
	conn_close_fd(c);
	check_ready();
}

/* Sends or queues n bytes; -1 when the connection failed (it is closed then). */
static int
conn_send(struct conn *c, const void *p, size_t n)
{
	if (c->fd < 0)
		return -1;
	if (c->out_len == c->out_off) {
		ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
		if (r == (ssize_t)n) {
			W.c.bytes_out += n;
			return 0;
		}
		if (r < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				conn_fail(c, F_CLOSED);
				return -1;
			}
			r = 0;
		}
		W.c.bytes_out += (uint64_t)r;
		p = (const char *)p + r;
		n -= (size_t)r;
		c->out_len = c->out_off = 0;
	}
	if (c->out_off && c->out_len + n > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + n > OUT_CAP) {
		conn_fail(c, F_OVERFLOW);
		return -1;
	}
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n)
			cap *= 2;
		if (cap > OUT_CAP)
			cap = OUT_CAP;
		uint8_t *o = realloc(c->out, cap);
		if (!o)
			die("out of memory");
		c->out = o;
		c->out_cap = (uint32_t)cap;
	}
	memcpy(c->out + c->out_len, p, n);
	c->out_len += (uint32_t)n;
	conn_watch(c, EV_READ | EV_WRITE);
	return 0;
}

static void
conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t r = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			conn_fail(c, F_CLOSED);
			return;
		}
		W.c.bytes_out += (uint64_t)r;
		c->out_off += (uint32_t)r;
	}
	c->out_off = c->out_len = 0;
	conn_watch(c, EV_READ);
}

/* Sends one masked WebSocket frame. */
static int
ws_send(struct conn *c, int opcode, const void *p, size_t n)
{
	uint8_t f[FRAME_MAX + TP_WS_MAX_HEADER];
	uint32_t k = (uint32_t)rng_next();
	uint8_t key[4];
	memcpy(key, &k, 4);
	size_t fl = tp_ws_frame_encode_masked(f, sizeof f, opcode, 1, p, n, key);
	if (fl > sizeof f)
		return -1;
	return conn_send(c, f, fl);
}

/*
 * Pushes a Phoenix message on topic: V2 [join_ref, ref, topic, event, payload]
 * or V1 {topic, event, payload, ref[, join_ref]}; join_ref is "1" when
 * with_join_ref, null otherwise.  *ref_out (when not NULL) gets the ref used.
 */
static int
phx_push(struct conn *c, const char *topic, const char *event, const char *payload,
         int with_join_ref, uint32_t *ref_out)
{
	char b[FRAME_MAX];
	uint32_t ref = c->next_ref++;
	int n;
	if (O.vsn == 2)
		n = snprintf(b, sizeof b, "[%s,\"%" PRIu32 "\",\"%s\",\"%s\",%s]",
		             with_join_ref ? "\"1\"" : "null", ref, topic, event, payload);
	else
		n = snprintf(
		    b, sizeof b,
		    "{\"topic\":\"%s\",\"event\":\"%s\",\"payload\":%s,\"ref\":\"%" PRIu32 "\"%s}",
		    topic, event, payload, ref, with_join_ref ? ",\"join_ref\":\"1\"" : "");
	if (n < 0 || (size_t)n >= sizeof b)
		return -1;
	if (ref_out)
		*ref_out = ref;
	if (c->lp)
		return lp_push(c->lp, b, (size_t)n);
	return ws_send(c, TP_WS_OP_TEXT, b, (size_t)n);
}

static const char *
conn_topic(const struct conn *c)
{
	return O.topics[c->topic];
}

static void
pub_send(struct conn *c, int64_t now)
{
	char payload[FRAME_MAX - 256];
	uint32_t seq = c->sent + 1;
	int n = snprintf(payload, sizeof payload,
	                 "{\"body\":\"seq:%" PRIu32 ":%" PRIu32 ":%" PRIu32 ":%" PRId64,
	                 W.pl.run_id, c->id, seq, now);
	int padlen = O.size > n - 9 ? O.size - (n - 9) : 0;
	if (n < 0 || (size_t)n + (size_t)padlen + 3 >= sizeof payload)
		return;
	memcpy(payload + n, W.pad, (size_t)padlen);
	memcpy(payload + n + padlen, "\"}", 3);
	if (phx_push(c, conn_topic(c), "new_msg", payload, 1, NULL))
		return;
	c->sent = seq;
	W.c.sent++;
	if (!W.c.t_first_send)
		W.c.t_first_send = now;
	W.c.t_last_send = now;
}

/* Flat out: keeps --window messages of this publisher in flight. */
static void
pub_fill(struct conn *c)
{
	while (conn_alive(c) && c->state == ST_JOINED && c->sent - c->acked < (uint32_t)O.window &&
	       conn_backlog(c) < OUT_SOFT) {
		uint32_t before = c->sent;
		pub_send(c, now_ns());
		if (c->sent == before)
			break;
	}
}

static void
ping_send(struct conn *c, int64_t now)
{
	c->t_ping = now;
	if (phx_push(c, conn_topic(c), "ping", "{\"n\":1}", 1, &c->ping_ref) == 0)
		W.c.sent++;
}

/* Records the receipt of (pub, seq) for the fan-out time, sampling when needed. */
static void
fanout_note(uint32_t pub, uint32_t seq, int64_t lat)
{
	struct fan *f = &W.fan[pub];
	if (!f->v) {
		f->cap = W.fan_cap;
		f->stride = 1;
		f->v = calloc(f->cap, sizeof(int64_t));
		if (!f->v)
			die("out of memory");
	}
	uint64_t i0 = (uint64_t)seq - 1;
	if (i0 % f->stride)
		return;
	uint64_t i = i0 / f->stride;
	while (i >= f->cap) {
		/* Keep every other sample: the stride doubles, memory stays put. */
		for (uint32_t j = 0; j < f->cap / 2; j++)
			f->v[j] = f->v[2 * j];
		memset(f->v + f->cap / 2, 0, (f->cap - f->cap / 2) * sizeof(int64_t));
		f->stride *= 2;
		f->n = (f->n + 1) / 2;
		if (i0 % f->stride)
			return;
		i = i0 / f->stride;
	}
	if (lat + 1 > f->v[i])
		f->v[i] = lat + 1;
	if (i + 1 > f->n)
		f->n = (uint32_t)(i + 1);
}

static void
on_new_msg(struct conn *c, const struct phx_msg *m, int64_t now)
{
	uint32_t run, pub, seq;
	int64_t ts;
	if (parse_body(m->payload, &run, &pub, &seq, &ts) || run != W.pl.run_id ||
	    pub >= (uint32_t)O.publishers || seq == 0) {
		W.c.foreign++;
		return;
	}
	if (c->role == R_PUB) {
		if (pub == c->id) {
			W.c.self_recv++;
			if (seq > c->acked)
				c->acked = seq;
			if (O.rate == 0 && W.phase == W_RUN)
				pub_fill(c);
		}
		return;
	}
	if (c->role != R_SUB || pub % (uint32_t)O.ntopics != c->topic || !c->trk) {
		W.c.foreign++;
		return;
	}
	W.c.delivered++;
	struct track *t = &c->trk[pub / (uint32_t)O.ntopics];
	if (seq > t->last) {
		uint32_t shift = seq - t->last;
		t->win = shift >= 64 ? 0 : t->win << shift;
		t->win |= 1;
		t->last = seq;
	} else {
		uint32_t d = t->last - seq;
		if (d < 64 && (t->win >> d) & 1) {
			W.c.dup++;
			c->dup++;
			return;
		}
		/* Late: a gap is being filled (beyond 64 behind, counted as new). */
		if (d < 64)
			t->win |= UINT64_C(1) << d;
		W.c.ooo++;
		c->ooo++;
	}
	t->uniq++;
	W.uniq_total++;
	W.c.uniq++;
	int64_t lat = now - ts;
	if (lat < 0)
		lat = 0;
	hist_record(&W.hlat, (uint64_t)lat);
	series_add(W.eseries, now);
	W.c.t_last_recv = now;
	fanout_note(pub, seq, lat);
	if (W.phase == W_DRAIN && W.uniq_total >= W.expect_total && !ev_is_active(&W.finisher))
		ev_timer_start(W.loop, &W.finisher);
}

static void
on_joined(struct conn *c, int64_t now)
{
	c->state = ST_JOINED;
	W.c.joined++;
	W.pending--;
	W.settled++;
	hist_record(&W.hjoin, (uint64_t)(now - c->t_join));
	hist_record(&W.hsetup, (uint64_t)(now - c->t_start));
	series_add(W.jseries, now);
	if (now > W.c.t_last_join)
		W.c.t_last_join = now;
	/* Heartbeats start 30 s after the join, spread over a second. */
	c->t_hb = now + (int64_t)(O.heartbeat * 1e9) + (int64_t)(rng_next() % 1000000000);
	check_ready();
}

static void
on_reply(struct conn *c, const struct phx_msg *m, int64_t now)
{
	uint32_t ref = ref_num(m->ref);
	int ok = reply_ok(m->payload);
	if (c->state == ST_JOINING && ref == JOIN_REF) {
		if (ok)
			on_joined(c, now);
		else
			conn_fail(c, F_JOIN_ERROR);
		return;
	}
	if (c->role == R_CLIENT && c->ping_ref && ref == c->ping_ref) {
		c->ping_ref = 0;
		if (W.phase != W_RUN)
			return;
		if (ok) {
			W.c.replies++;
			hist_record(&W.hlat, (uint64_t)(now - c->t_ping));
			series_add(W.eseries, now);
			W.c.t_last_recv = now;
		} else {
			W.c.reply_errors++;
		}
		ping_send(c, now);
	}
	/* Anything else: heartbeat replies. */
}

static void
on_message(struct conn *c, const uint8_t *d, size_t n, int opcode, int64_t now)
{
	struct phx_msg m;
	if (opcode != TP_WS_OP_TEXT || phx_parse((const char *)d, n, &m)) {
		W.c.bad_frames++;
		return;
	}
	if (sl_eq(m.event, "\"new_msg\""))
		on_new_msg(c, &m, now);
	else if (sl_eq(m.event, "\"phx_reply\""))
		on_reply(c, &m, now);
	else if (sl_eq(m.event, "\"phx_error\"") || sl_eq(m.event, "\"phx_close\""))
		W.c.chan_errors++;
}

/* Handles the 101 response head; returns its length, 0 to wait, -1 when failed. */
static long
hs_parse(struct conn *c, const uint8_t *b, size_t len, int64_t now)
{
	const uint8_t *end = memmem(b, len, "\r\n\r\n", 4);
	if (!end) {
		if (len > HS_MAX)
			conn_fail(c, F_HS_INVALID);
		return len > HS_MAX ? -1 : 0;
	}
	size_t hl = (size_t)(end - b) + 4;
	const char *s = (const char *)b, *e = s + hl;
	if (hl < 16 || memcmp(s, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)s[9]) ||
	    !isdigit((unsigned char)s[10]) || !isdigit((unsigned char)s[11])) {
		conn_fail(c, F_HS_INVALID);
		return -1;
	}
	int status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	if (status != 101) {
		W.c.hs_status_last = (uint64_t)status;
		conn_fail(c, F_HS_REFUSED);
		return -1;
	}
	int accept_ok = 0;
	for (const char *l = memchr(s, '\n', hl); l && l + 1 < e;) {
		l++;
		const char *le = memchr(l, '\n', (size_t)(e - l));
		if (!le)
			break;
		if (le - l > 21 && !strncasecmp(l, "sec-websocket-accept:", 21)) {
			const char *v = l + 21, *ve = le;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			accept_ok = ve - v == 28 && !memcmp(v, c->accept, 28);
		}
		l = le;
	}
	if (!accept_ok) {
		conn_fail(c, F_HS_INVALID);
		return -1;
	}
	c->state = ST_JOINING;
	W.c.upgraded++;
	tp_ws_reader_init(&c->rd, TP_WS_CLIENT, O.max_msg);
	c->t_join = now;
	if (phx_push(c, conn_topic(c), "phx_join", "{}", 1, NULL))
		return -1;
	return (long)hl;
}

/* Parses WebSocket frames in b[pos, len); returns where parsing stopped. */
static size_t
ws_process(struct conn *c, uint8_t *b, size_t len, size_t pos, int64_t now)
{
	for (;;) {
		tp_ws_event ev;
		tp_ws_reader_next(&c->rd, b + pos, len - pos, &ev);
		switch (ev.type) {
		case TP_WS_EV_NEED_MORE:
			return pos + ev.consumed;
		case TP_WS_EV_MESSAGE:
			on_message(c, ev.data, ev.len, ev.opcode, now);
			break;
		case TP_WS_EV_PING:
			ws_send(c, TP_WS_OP_PONG, ev.data, ev.len);
			break;
		case TP_WS_EV_PONG:
			break;
		case TP_WS_EV_CLOSE:
			conn_fail(c, F_CLOSED);
			return 0;
		case TP_WS_EV_ERROR:
			conn_fail(c, F_PROTOCOL);
			return 0;
		}
		if (c->fd < 0)
			return 0;
		pos += ev.consumed;
	}
}

static void
conn_read(struct conn *c)
{
	for (int round = 0; round < 16; round++) {
		uint8_t *b = W.scratch;
		size_t have = c->pend_len;
		if (have)
			memcpy(b, c->pend, have);
		ssize_t r = recv(c->fd, b + have, W.scratch_size - have, 0);
		if (r == 0) {
			conn_fail(c, F_CLOSED);
			return;
		}
		if (r < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				conn_fail(c, F_CLOSED);
			return;
		}
		int64_t now = now_ns();
		W.c.bytes_in += (uint64_t)r;
		size_t len = have + (size_t)r, pos = 0;
		if (c->state == ST_HANDSHAKE) {
			long h = hs_parse(c, b, len, now);
			if (h < 0)
				return;
			pos = (size_t)h;
		}
		if (c->state != ST_HANDSHAKE) {
			pos = ws_process(c, b, len, pos, now);
			if (c->fd < 0)
				return;
		}
		size_t left = len - pos;
		if (left > W.pend_max) {
			conn_fail(c, F_OVERFLOW);
			return;
		}
		if (left > c->pend_cap) {
			size_t cap = c->pend_cap ? c->pend_cap : 1024;
			while (cap < left)
				cap *= 2;
			uint8_t *p = realloc(c->pend, cap);
			if (!p)
				die("out of memory");
			c->pend = p;
			c->pend_cap = (uint32_t)cap;
		}
		if (left)
			memcpy(c->pend, b + pos, left);
		c->pend_len = (uint32_t)left;
		if ((size_t)r < W.scratch_size - have)
			return;
	}
}

static void
base64_16(const uint8_t in[16], char out[25])
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	int o = 0;
	for (int i = 0; i < 15; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	uint32_t v = (uint32_t)in[15] << 16;
	out[o++] = tab[v >> 18];
	out[o++] = tab[(v >> 12) & 63];
	out[o++] = '=';
	out[o++] = '=';
	out[o] = 0;
}

static void
on_connected(struct conn *c)
{
	c->state = ST_HANDSHAKE;
	W.c.connected++;
	const struct target *t = c->role == R_PUB ? W.pl.pt : W.pl.t;
	uint8_t raw[16];
	uint64_t a = rng_next(), b = rng_next();
	memcpy(raw, &a, 8);
	memcpy(raw + 8, &b, 8);
	char key[25];
	base64_16(raw, key);
	if (tp_ws_accept_key(key, 24, c->accept))
		die("SHA-1 failed");
	char req[4096];
	int n = snprintf(req, sizeof req,
	                 "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
	                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
	                 "Sec-WebSocket-Version: 13\r\nUser-Agent: phx-c-loadgen\r\n\r\n",
	                 t->path, t->host, key);
	if (n < 0 || (size_t)n >= sizeof req)
		die("request too long");
	if (conn_send(c, req, (size_t)n) == 0 && c->out_len == c->out_off)
		conn_watch(c, EV_READ);
}

static void
conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	struct conn *c = (struct conn *)w;
	if (c->state == ST_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof err;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (err) {
			if (err != ECONNREFUSED)
				W.c.errno_last = (uint64_t)err;
			conn_fail(c, err == ECONNREFUSED ? F_REFUSED : F_CONNECT_ERROR);
		} else {
			on_connected(c);
		}
		return;
	}
	if (revents & EV_WRITE) {
		conn_flush(c);
		if (c->fd < 0)
			return;
	}
	if (revents & EV_READ)
		conn_read(c);
}

/* ---- long-poll clients: bench/lp_client's callbacks ---- */

static const uint8_t lp_reason[LP_F_NREASONS] = {
    [LP_F_REFUSED] = F_REFUSED,
    [LP_F_CONNECT_ERROR] = F_CONNECT_ERROR,
    [LP_F_NO_FD] = F_NO_FD,
    [LP_F_CLOSED] = F_CLOSED,
    [LP_F_BAD_HTTP] = F_BAD_HTTP,
    [LP_F_BAD_BODY] = F_PROTOCOL,
    [LP_F_FORBIDDEN] = F_LP_FORBIDDEN,
    [LP_F_GONE] = F_LP_GONE,
    [LP_F_STATUS] = F_LP_STATUS,
    [LP_F_OVERFLOW] = F_OVERFLOW,
    [LP_F_TIMEOUT] = F_REQ_TIMEOUT,
};

/* The poll connection is up: the session request is on its way. */
static void
lpc_connected(void *arg)
{
	struct conn *c = arg;
	c->state = ST_HANDSHAKE;
	W.c.connected++;
}

/* The session is open (the long-poll counterpart of the 101): join. */
static void
lpc_opened(void *arg, int64_t now)
{
	struct conn *c = arg;
	c->state = ST_JOINING;
	W.c.upgraded++;
	c->t_join = now;
	phx_push(c, conn_topic(c), "phx_join", "{}", 1, NULL);
}

static void
lpc_message(void *arg, const char *frame, size_t n, int64_t now)
{
	on_message(arg, (const uint8_t *)frame, n, TP_WS_OP_TEXT, now);
}

static void
lpc_failed(void *arg, enum lp_fail why, int64_t now)
{
	(void)now;
	conn_fail(arg, lp_reason[why]);
}

static const struct lp_ops lpc_ops = {lpc_connected, lpc_opened, lpc_message, lpc_failed};

/* Sets up this worker's long-poll state and gives every long-poll client
 * its session (before any of them starts). */
static void
lp_setup(void)
{
	struct lp_sess *ss = NULL;
	size_t nlp = 0, k = 0;
	for (size_t i = 0; i < W.nconns; i++)
		nlp += (W.conns[i].role == R_PUB ? O.pub_transport : O.transport) == T_LONGPOLL;
	if (!nlp)
		return;
	ss = calloc(nlp, sizeof *ss);
	W.lp.ops = &lpc_ops;
	W.lp.v1 = O.vsn == 1;
	W.lp.max_msg = O.max_msg;
	W.lp.body_max = LP_MAX_MESSAGES * 64 > 4 * O.max_msg ? LP_MAX_MESSAGES * 64 : 4 * O.max_msg;
	W.lp.req_timeout = (O.timeout > 20 ? O.timeout : 20) + 10;
	W.lp.bytes_in = &W.c.bytes_in;
	W.lp.bytes_out = &W.c.bytes_out;
	W.lp.polls = &W.c.lp_polls;
	W.lp.posts = &W.c.lp_posts;
	if (!ss || lp_ctx_init(&W.lp, W.loop))
		die("out of memory");
	for (int i = 0; i < 2; i++) {
		const struct target *t = i ? W.pl.pt : W.pl.t;
		W.lpt[i] = (struct lp_target){
		    .sa = (const struct sockaddr *)&t->sa,
		    .salen = t->salen,
		    .family = t->family,
		    .src = W.pl.bind_src ? &W.pl.src : NULL,
		    .host = t->host,
		    .path = t->lp_path,
		};
	}
	for (size_t i = 0; i < W.nconns; i++)
		if ((W.conns[i].role == R_PUB ? O.pub_transport : O.transport) == T_LONGPOLL)
			W.conns[i].lp = &ss[k++];
}

static void
conn_start(struct conn *c, int64_t now)
{
	W.c.attempted++;
	if (!W.c.t_first_attempt)
		W.c.t_first_attempt = now;
	c->t_start = now;
	c->state = ST_CONNECTING;
	c->next_ref = 1;
	W.pending++;
	if (c->lp) {
		lp_start(&W.lp, c->lp, &W.lpt[c->role == R_PUB], c);
		return;
	}
	const struct target *t = c->role == R_PUB ? W.pl.pt : W.pl.t;
	int fd = socket(t->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		W.c.errno_last = (uint64_t)errno;
		conn_fail(c, errno == EMFILE || errno == ENFILE ? F_NO_FD : F_CONNECT_ERROR);
		return;
	}
	c->fd = fd;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (W.pl.bind_src && O.src_lo) {
		/* Source ports chosen here, in turn: connect() then checks one
		 * 4-tuple, where with the kernel's choice it searches the port
		 * range, which takes longer the more ports are in use (at ~700,000
		 * connections on one box, most of the CPU). */
		struct sockaddr_in sa = W.pl.src;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* past TIME_WAIT */
		int span = O.src_hi - O.src_lo + 1, tries = 0, rc;
		do {
			if (W.next_port < (uint32_t)O.src_lo || W.next_port > (uint32_t)O.src_hi)
				W.next_port = (uint32_t)O.src_lo;
			sa.sin_port = htons((uint16_t)W.next_port++);
			rc = bind(fd, (const struct sockaddr *)&sa, sizeof sa);
		} while (rc < 0 && errno == EADDRINUSE && ++tries < span && tries < 256);
		if (rc < 0) {
			W.c.errno_last = (uint64_t)errno;
			conn_fail(c, F_CONNECT_ERROR);
			return;
		}
	} else if (W.pl.bind_src) {
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(fd, (const struct sockaddr *)&W.pl.src, sizeof W.pl.src) < 0) {
			W.c.errno_last = (uint64_t)errno;
			conn_fail(c, F_CONNECT_ERROR);
			return;
		}
	}
	ev_io_init(&c->io, conn_cb, fd, EV_WRITE);
	if (connect(fd, (const struct sockaddr *)&t->sa, t->salen) == 0) {
		on_connected(c);
		return;
	}
	if (errno != EINPROGRESS) {
		int err = errno;
		if (err != ECONNREFUSED)
			W.c.errno_last = (uint64_t)err;
		conn_fail(c, err == ECONNREFUSED ? F_REFUSED : F_CONNECT_ERROR);
		return;
	}
	ev_io_start(W.loop, &c->io);
}

static void
send_up(uint32_t type, const void *p, size_t n)
{
	if (send_msg(W.pl.up, type, p, n))
		_exit(3); /* the parent is gone */
}

static void
check_ready(void)
{
	if (W.phase == W_SETUP && W.next == W.nconns && W.settled == W.nconns) {
		W.phase = W_WAIT_GO;
		send_up(M_READY, &W.c, sizeof W.c);
	}
}

static void
pace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	int64_t now = now_ns();
	uint64_t due = W.pl.connect_rate > 0
	                   ? (uint64_t)((double)(now - W.t_pace) * W.pl.connect_rate / 1e9) + 1
	                   : UINT64_MAX;
	while (W.next < W.nconns && W.next < due && W.pending < (size_t)O.max_pending)
		conn_start(&W.conns[W.next++], now);
	if (W.next == W.nconns)
		ev_timer_stop(loop, w);
	check_ready();
}

static void
pubtick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	int64_t now = now_ns();
	uint64_t due = (uint64_t)((double)(now - W.t_go) * O.rate / 1e9) + 1;
	for (size_t i = 0; i < W.npubs; i++) {
		struct conn *c = W.pubs[i];
		int burst = 0;
		while (conn_alive(c) && c->state == ST_JOINED && c->sent < due &&
		       conn_backlog(c) < OUT_SOFT && burst++ < 10000)
			pub_send(c, now);
		if (c->state == ST_JOINED && due > c->sent && due - c->sent > W.c.pub_backlog_max)
			W.c.pub_backlog_max = due - c->sent;
	}
}

/* Counts loss per subscriber, sends FINAL, FANOUT and END, and leaves the loop. */
static void
finish(void)
{
	if (W.phase == W_DONE)
		return;
	W.phase = W_DONE;
	ev_timer_stop(W.loop, &W.pubtick);
	ev_timer_stop(W.loop, &W.sweep);
	ev_timer_stop(W.loop, &W.pace);
	ev_timer_stop(W.loop, &W.finisher);
	if (O.scenario == SC_BROADCAST && W.expect) {
		for (size_t i = 0; i < W.nsubs; i++) {
			struct conn *c = &W.conns[i];
			if ((c->state != ST_JOINED && c->state != ST_DROPPED) || !c->trk)
				continue;
			uint64_t lost = 0;
			for (uint32_t k = 0; k < W.pubs_on_topic[c->topic]; k++) {
				uint32_t pub = c->topic + k * (uint32_t)O.ntopics;
				uint32_t want = W.expect[pub], got = c->trk[k].uniq;
				if (got < want) {
					lost += want - got;
				} else if (got > want) {
					/* Old repeats taken for late arrivals: duplicates after
					 * all. */
					W.c.dup += got - want;
					c->dup += got - want;
				}
			}
			W.c.lost += lost;
			if (lost)
				W.c.subs_lost++;
			if (lost > W.c.max_lost_sub)
				W.c.max_lost_sub = lost;
			if (c->dup)
				W.c.subs_dup++;
			if (c->ooo)
				W.c.subs_ooo++;
		}
		W.c.expected = W.expect_total;
	}
	struct final_msg *f = calloc(1, sizeof *f);
	if (!f)
		die("out of memory");
	f->c = W.c;
	f->hsetup = W.hsetup;
	f->hjoin = W.hjoin;
	f->hlat = W.hlat;
	memcpy(f->jseries, W.jseries, sizeof f->jseries);
	memcpy(f->eseries, W.eseries, sizeof f->eseries);
	send_up(M_FINAL, f, sizeof *f);
	free(f);
	if (W.fan) {
		for (int p = 0; p < O.publishers; p++) {
			struct fan *fa = &W.fan[p];
			if (!fa->v || !fa->n)
				continue;
			struct fanout_hdr h = {(uint32_t)p, fa->stride, fa->n, 0};
			struct msg_hdr mh = {M_FANOUT,
			                     (uint32_t)(sizeof h + fa->n * sizeof(int64_t))};
			if (write_all(W.pl.up, &mh, sizeof mh) ||
			    write_all(W.pl.up, &h, sizeof h) ||
			    write_all(W.pl.up, fa->v, fa->n * sizeof(int64_t)))
				_exit(3);
		}
	}
	send_up(M_END, NULL, 0);
	ev_break(W.loop, EVBREAK_ALL);
}

static void
finisher_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	finish();
}

static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	int64_t now = now_ns(), tmo = (int64_t)(O.timeout * 1e9);
	int64_t hb = (int64_t)(O.heartbeat * 1e9);
	for (size_t i = 0; i < W.next; i++) {
		struct conn *c = &W.conns[i];
		switch (c->state) {
		case ST_CONNECTING:
		case ST_HANDSHAKE:
		case ST_JOINING:
			if (now - c->t_start > tmo)
				conn_fail(c, c->state == ST_CONNECTING  ? F_CONNECT_TIMEOUT
				             : c->state == ST_HANDSHAKE ? F_HS_TIMEOUT
				                                        : F_JOIN_TIMEOUT);
			break;
		case ST_JOINED:
			/* Long poll: no heartbeats (phoenix.js sends none over it). */
			if (hb > 0 && now >= c->t_hb && !c->lp) {
				c->t_hb = now + hb;
				phx_push(c, "phoenix", "heartbeat", "{}", 0, NULL);
			}
			break;
		default:
			break;
		}
		if (c->lp)
			lp_check(c->lp, now);
	}
	if (W.phase != W_DONE)
		send_up(M_PROGRESS, &W.c, sizeof W.c);
	if (W.phase == W_DRAIN && (W.uniq_total >= W.expect_total || now >= W.drain_deadline))
		finish();
}

static void
on_go(int64_t t_go)
{
	W.cpu_go_us = cpu_self_us();
	W.phase = W_RUN;
	W.t_go = t_go;
	int64_t now = now_ns();
	if (O.scenario == SC_BROADCAST) {
		if (O.rate > 0) {
			ev_timer_init(&W.pubtick, pubtick_cb, 0, 0.001);
			ev_timer_start(W.loop, &W.pubtick);
		} else {
			for (size_t i = 0; i < W.npubs; i++)
				pub_fill(W.pubs[i]);
		}
	} else if (O.scenario == SC_PINGPONG) {
		for (size_t i = 0; i < W.nconns; i++)
			if (W.conns[i].state == ST_JOINED)
				ping_send(&W.conns[i], now);
	}
}

static void
on_stop(void)
{
	ev_timer_stop(W.loop, &W.pubtick);
	W.c.cpu_run_us = (uint64_t)(cpu_self_us() - W.cpu_go_us);
	if (O.scenario != SC_BROADCAST) {
		finish();
		return;
	}
	W.phase = W_STOPPED;
	uint32_t pairs[2 * MAX_PUBLISHERS];
	for (size_t i = 0; i < W.npubs; i++) {
		pairs[2 * i] = W.pubs[i]->id;
		pairs[2 * i + 1] = W.pubs[i]->sent;
	}
	send_up(M_SENT, pairs, W.npubs * 2 * sizeof(uint32_t));
}

static void
on_expect(const uint32_t *sent)
{
	W.expect = calloc((size_t)O.publishers, sizeof(uint32_t));
	if (!W.expect)
		die("out of memory");
	memcpy(W.expect, sent, (size_t)O.publishers * sizeof(uint32_t));
	W.expect_total = 0;
	for (size_t i = 0; i < W.nsubs; i++) {
		struct conn *c = &W.conns[i];
		if (c->state != ST_JOINED && c->state != ST_DROPPED)
			continue;
		for (uint32_t k = 0; k < W.pubs_on_topic[c->topic]; k++)
			W.expect_total += W.expect[c->topic + k * (uint32_t)O.ntopics];
	}
	W.phase = W_DRAIN;
	W.drain_deadline = now_ns() + (int64_t)(O.drain * 1e9);
	if (W.uniq_total >= W.expect_total)
		finish();
}

static void
ctl_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	ssize_t r = read(w->fd, W.ctl_buf + W.ctl_len, sizeof W.ctl_buf - W.ctl_len);
	if (r == 0) { /* the parent is gone */
		ev_break(loop, EVBREAK_ALL);
		_exit(3);
	}
	if (r < 0)
		return;
	W.ctl_len += (size_t)r;
	while (W.ctl_len >= sizeof(struct msg_hdr)) {
		struct msg_hdr h;
		memcpy(&h, W.ctl_buf, sizeof h);
		if (h.len > sizeof W.ctl_buf - sizeof h)
			_exit(3);
		if (W.ctl_len < sizeof h + h.len)
			break;
		const uint8_t *p = W.ctl_buf + sizeof h;
		if (h.type == C_GO && h.len == sizeof(int64_t)) {
			int64_t t;
			memcpy(&t, p, sizeof t);
			on_go(t);
		} else if (h.type == C_STOP) {
			on_stop();
		} else if (h.type == C_EXPECT && h.len == (size_t)O.publishers * sizeof(uint32_t)) {
			uint32_t sent[MAX_PUBLISHERS];
			memcpy(sent, p, h.len);
			on_expect(sent);
		}
		memmove(W.ctl_buf, W.ctl_buf + sizeof h + h.len, W.ctl_len - sizeof h - h.len);
		W.ctl_len -= sizeof h + h.len;
		if (W.phase == W_DONE)
			return;
	}
}

/* The loop is about to poll: the time since it woke up was spent handling events. */
static void
prep_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (W.phase == W_RUN && W.t_woke) {
		uint64_t busy = (uint64_t)(now_ns() - W.t_woke);
		if (busy > W.c.loop_busy_max)
			W.c.loop_busy_max = busy;
	}
}

static void
chk_cb(struct ev_loop *loop, ev_check *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	W.t_woke = now_ns();
}

static void
worker_main(const struct plan *pl)
{
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	W.pl = *pl;
	W.rng = ((uint64_t)pl->run_id << 32 | (uint32_t)pl->index) * 0x9E3779B97F4A7C15ull + 1;
	uint64_t seed;
	if (getrandom(&seed, sizeof seed, 0) == sizeof seed)
		W.rng ^= seed | 1;
	W.pend_max =
	    (O.max_msg + TP_WS_MAX_HEADER > HS_MAX ? O.max_msg + TP_WS_MAX_HEADER : HS_MAX);
	W.scratch_size = 2 * W.pend_max + 256 * 1024;
	W.scratch = malloc(W.scratch_size);
	memset(W.pad, 'x', sizeof W.pad);
	hist_init(&W.hsetup);
	hist_init(&W.hjoin);
	hist_init(&W.hlat);
	for (int p = 0; p < O.publishers; p++)
		W.pubs_on_topic[p % O.ntopics]++;

	W.nsubs = pl->sub_hi - pl->sub_lo;
	size_t npubs = 0;
	if (O.scenario == SC_BROADCAST)
		for (int p = pl->index; p < O.publishers; p += pl->nworkers)
			npubs++;
	W.nconns = W.nsubs + npubs;
	W.conns = calloc(W.nconns ? W.nconns : 1, sizeof(struct conn));
	W.pubs = calloc(npubs ? npubs : 1, sizeof(struct conn *));
	if (!W.scratch || !W.conns || !W.pubs)
		die("out of memory");
	struct track *trk = NULL;
	if (O.scenario == SC_BROADCAST) {
		size_t ntrk = 0;
		for (uint32_t i = pl->sub_lo; i < pl->sub_hi; i++)
			ntrk += W.pubs_on_topic[i % (uint32_t)O.ntopics];
		trk = calloc(ntrk ? ntrk : 1, sizeof(struct track));
		W.fan = calloc((size_t)O.publishers, sizeof(struct fan));
		W.fan_cap = FANOUT_SLOTS / (uint32_t)O.publishers;
		if (W.fan_cap < 1024)
			W.fan_cap = 1024;
		W.fan_cap &= ~1u;
		if (!trk || !W.fan)
			die("out of memory");
	}
	for (size_t i = 0; i < W.nsubs; i++) {
		struct conn *c = &W.conns[i];
		c->fd = -1;
		c->id = pl->sub_lo + (uint32_t)i;
		c->topic = (uint16_t)(c->id % (uint32_t)O.ntopics);
		c->role = O.scenario == SC_BROADCAST ? R_SUB : R_CLIENT;
		if (trk) {
			c->trk = trk;
			trk += W.pubs_on_topic[c->topic];
		}
	}
	for (int p = pl->index, i = 0; O.scenario == SC_BROADCAST && p < O.publishers;
	     p += pl->nworkers, i++) {
		struct conn *c = &W.conns[W.nsubs + (size_t)i];
		c->fd = -1;
		c->id = (uint32_t)p;
		c->topic = (uint16_t)(p % O.ntopics);
		c->role = R_PUB;
		W.pubs[W.npubs++] = c;
	}

	W.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
	if (!W.loop)
		die("ev_loop_new failed");
	fcntl(pl->down, F_SETFL, O_NONBLOCK);
	ev_io_init(&W.ctl, ctl_cb, pl->down, EV_READ);
	ev_io_start(W.loop, &W.ctl);
	lp_setup();
	W.t_pace = now_ns();
	ev_timer_init(&W.pace, pace_cb, 0, 0.001);
	ev_timer_start(W.loop, &W.pace);
	ev_timer_init(&W.sweep, sweep_cb, 0.25, 0.25);
	ev_timer_start(W.loop, &W.sweep);
	ev_timer_init(&W.finisher, finisher_cb, 0, 0);
	ev_prepare_init(&W.prep, prep_cb);
	ev_prepare_start(W.loop, &W.prep);
	ev_check_init(&W.chk, chk_cb);
	ev_check_start(W.loop, &W.chk);
	ev_run(W.loop, 0);
	_exit(0);
}

/* ================================================================== */
/* Parent: plans, forks, orchestrates, merges, reports.                */
/* ================================================================== */

struct fan_rec {
	uint32_t pub, stride, n;
	int64_t *v;
};

struct wstate {
	pid_t pid;
	int up, down;
	uint8_t *buf;
	size_t len, cap;
	struct counters prog;
	int ready, sent_in, ended, dead;
	struct final_msg *fin;
};

struct result {
	const struct target *t;
	int ok;
	char err[256];
	struct counters c;
	hist hsetup, hjoin, hlat, hfan;
	uint64_t jseries[SERIES_MAX], eseries[SERIES_MAX];
	int series_len;
	int64_t series_ns;
	int64_t t0, t_ready, t_go, t_stop, t_end;
	long long rss_before, rss_after, rss_end; /* -1: unknown */
	long long cpu_go, cpu_stop;               /* server CPU ticks, -1: unknown */
	int workers;
	long n, npubs;
	uint64_t fan_msgs;
	uint32_t fan_stride;
	int interrupted;
};

static volatile sig_atomic_t g_sigint;

static void
on_sigint(int s)
{
	(void)s;
	g_sigint++;
}

/* RSS in bytes summed over pids (/proc/PID/statm), or -1. */
static long long
rss_of(const pid_t *pids, int n)
{
	if (!n)
		return -1;
	long long sum = 0;
	long page = sysconf(_SC_PAGESIZE);
	for (int i = 0; i < n; i++) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/statm", (int)pids[i]);
		FILE *f = fopen(path, "r");
		long long size, res;
		if (!f)
			return -1;
		int ok = fscanf(f, "%lld %lld", &size, &res) == 2;
		fclose(f);
		if (!ok)
			return -1;
		sum += res * page;
	}
	return sum;
}

/* CPU time (utime + stime, clock ticks) summed over pids, or -1. */
static long long
cpu_of(const pid_t *pids, int n)
{
	if (!n)
		return -1;
	long long sum = 0;
	for (int i = 0; i < n; i++) {
		char path[64], buf[1024];
		snprintf(path, sizeof path, "/proc/%d/stat", (int)pids[i]);
		FILE *f = fopen(path, "r");
		if (!f)
			return -1;
		size_t len = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[len] = 0;
		/* Fields after the command name (which may hold spaces): state is field 3. */
		const char *p = strrchr(buf, ')');
		unsigned long long ut, st;
		if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
		                 &ut, &st) != 2)
			return -1;
		sum += (long long)(ut + st);
	}
	return sum;
}

static long
port_span(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	long lo = 32768, hi = 60999;
	if (f) {
		if (fscanf(f, "%ld %ld", &lo, &hi) != 2) {
			lo = 32768;
			hi = 60999;
		}
		fclose(f);
	}
	return hi - lo + 1;
}

static int tty;
static int64_t last_progress_ns;
static uint64_t prog_last_j, prog_last_e; /* progress(): counts at the last line */
static int64_t prog_last_t;

static void
progress(const struct result *R, struct wstate *ws, int k, const char *phase, int64_t now)
{
	if (!tty || O.quiet || now - last_progress_ns < 1000000000)
		return;
	struct counters s = {0};
	for (int i = 0; i < k; i++) {
		s.joined += ws[i].prog.joined;
		s.attempted += ws[i].prog.attempted;
		s.sent += ws[i].prog.sent;
		s.uniq += ws[i].prog.uniq + ws[i].prog.replies;
		s.dropped += ws[i].prog.dropped;
		for (int r = 0; r < F_NREASONS; r++)
			s.fail[r] += ws[i].prog.fail[r];
	}
	uint64_t failed = 0;
	for (int r = 0; r < F_NREASONS; r++)
		failed += s.fail[r];
	double dt = prog_last_t ? (double)(now - prog_last_t) / 1e9 : 1;
	if (dt <= 0)
		dt = 1;
	long total = R->n + R->npubs;
	fprintf(stderr,
	        "\r\033[K[%s %5.1fs %s] joined %" PRIu64 "/%ld (%.0f/s) failed %" PRIu64
	        " dropped %" PRIu64,
	        scenario_names[O.scenario], (double)(now - R->t0) / 1e9, phase, s.joined, total,
	        (double)(s.joined - prog_last_j) / dt, failed, s.dropped);
	if (O.scenario == SC_BROADCAST)
		fprintf(stderr, " | sent %" PRIu64 " deliveries %.0f/s", s.sent,
		        (double)(s.uniq - prog_last_e) / dt);
	else if (O.scenario == SC_PINGPONG)
		fprintf(stderr, " | %.0f round trips/s", (double)(s.uniq - prog_last_e) / dt);
	prog_last_j = s.joined;
	prog_last_e = s.uniq;
	prog_last_t = now;
	last_progress_ns = now;
}

static void
progress_clear(void)
{
	if (tty && !O.quiet && last_progress_ns)
		fprintf(stderr, "\r\033[K");
	last_progress_ns = 0;
}

static void
say(const char *fmt, ...)
{
	if (O.quiet)
		return;
	progress_clear();
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static void
merge_counters(struct counters *d, const struct counters *s)
{
	/* Every field before max_lost_sub is a uint64 count to add. */
	uint64_t sums[offsetof(struct counters, max_lost_sub) / sizeof(uint64_t)],
	    add[sizeof sums / sizeof sums[0]];
	memcpy(sums, d, sizeof sums);
	memcpy(add, s, sizeof add);
	for (size_t i = 0; i < sizeof sums / sizeof sums[0]; i++)
		sums[i] += add[i];
	memcpy(d, sums, sizeof sums);
	if (s->max_lost_sub > d->max_lost_sub)
		d->max_lost_sub = s->max_lost_sub;
	if (s->pub_backlog_max > d->pub_backlog_max)
		d->pub_backlog_max = s->pub_backlog_max;
	if (s->loop_busy_max > d->loop_busy_max)
		d->loop_busy_max = s->loop_busy_max;
	if (s->hs_status_last)
		d->hs_status_last = s->hs_status_last;
	if (s->errno_last)
		d->errno_last = s->errno_last;
#define MIN_T(f)                                                                                   \
	if (s->f && (!d->f || s->f < d->f))                                                        \
	d->f = s->f
#define MAX_T(f)                                                                                   \
	if (s->f > d->f)                                                                           \
	d->f = s->f
	MIN_T(t_first_attempt);
	MIN_T(t_first_send);
	MAX_T(t_last_join);
	MAX_T(t_last_send);
	MAX_T(t_last_recv);
#undef MIN_T
#undef MAX_T
}

static void
kill_workers(struct wstate *ws, int k)
{
	for (int i = 0; i < k; i++)
		if (ws[i].pid > 0 && !ws[i].ended)
			kill(ws[i].pid, SIGKILL);
}

/* Handles one complete message from worker i. */
static void
parent_msg(struct result *R, struct wstate *w, uint32_t type, const uint8_t *p, size_t n,
           uint32_t *sent, struct fan_rec **fans, size_t *nfans)
{
	switch (type) {
	case M_PROGRESS:
	case M_READY:
		if (n == sizeof(struct counters))
			memcpy(&w->prog, p, n);
		if (type == M_READY)
			w->ready = 1;
		break;
	case M_SENT:
		for (size_t i = 0; i + 1 < n / sizeof(uint32_t); i += 2) {
			uint32_t pr[2];
			memcpy(pr, p + i * sizeof(uint32_t), sizeof pr);
			if (pr[0] < (uint32_t)O.publishers)
				sent[pr[0]] = pr[1];
		}
		w->sent_in = 1;
		break;
	case M_FINAL:
		if (n == sizeof(struct final_msg)) {
			w->fin = malloc(sizeof *w->fin);
			if (!w->fin)
				die("out of memory");
			memcpy(w->fin, p, n);
			w->prog = w->fin->c;
		}
		break;
	case M_FANOUT: {
		struct fanout_hdr h;
		if (n < sizeof h)
			break;
		memcpy(&h, p, sizeof h);
		if (h.pub >= (uint32_t)O.publishers || n != sizeof h + (size_t)h.n * 8 || !h.stride)
			break;
		struct fan_rec *f = realloc(*fans, (*nfans + 1) * sizeof **fans);
		if (!f)
			die("out of memory");
		*fans = f;
		f += (*nfans)++;
		f->pub = h.pub;
		f->stride = h.stride;
		f->n = h.n;
		f->v = malloc((size_t)h.n * 8 + 1);
		if (!f->v)
			die("out of memory");
		memcpy(f->v, p + sizeof h, (size_t)h.n * 8);
		break;
	}
	case M_END:
		w->ended = 1;
		break;
	}
	(void)R;
}

static void
merge_fanout(struct result *R, struct fan_rec *fans, size_t nfans)
{
	hist_init(&R->hfan);
	for (int p = 0; p < O.publishers; p++) {
		uint32_t S = 0;
		uint64_t len = 0;
		for (size_t i = 0; i < nfans; i++)
			if (fans[i].pub == (uint32_t)p && fans[i].stride > S)
				S = fans[i].stride;
		if (!S)
			continue;
		for (size_t i = 0; i < nfans; i++)
			if (fans[i].pub == (uint32_t)p) {
				uint64_t l = ((uint64_t)fans[i].n * fans[i].stride + S - 1) / S;
				if (l > len)
					len = l;
			}
		int64_t *m = calloc(len + 1, sizeof(int64_t));
		if (!m)
			die("out of memory");
		for (size_t i = 0; i < nfans; i++) {
			if (fans[i].pub != (uint32_t)p)
				continue;
			for (uint32_t j = 0; j < fans[i].n; j++) {
				uint64_t s0 = (uint64_t)j * fans[i].stride;
				if (s0 % S)
					continue;
				uint64_t idx = s0 / S;
				if (idx < len && fans[i].v[j] > m[idx])
					m[idx] = fans[i].v[j];
			}
		}
		for (uint64_t j = 0; j < len; j++)
			if (m[j]) {
				hist_record(&R->hfan, (uint64_t)(m[j] - 1));
				R->fan_msgs++;
			}
		if (S > R->fan_stride)
			R->fan_stride = S;
		free(m);
	}
}

static void
send_all(struct wstate *ws, int k, uint32_t type, const void *p, size_t n)
{
	for (int i = 0; i < k; i++)
		if (!ws[i].dead && !ws[i].ended)
			if (send_msg(ws[i].down, type, p, n))
				ws[i].dead = 1;
}

enum pphase { P_SETUP, P_RUN, P_STOPPING, P_DRAIN, P_DONE };

/* Runs the scenario once against t. */
static void
run_once(const struct target *t, const pid_t *pids, int npids, int K, struct result *R)
{
	memset(R, 0, sizeof *R);
	R->t = t;
	R->ok = 1;
	R->workers = K;
	R->n = O.n;
	R->npubs = O.scenario == SC_BROADCAST ? O.publishers : 0;
	hist_init(&R->hsetup);
	hist_init(&R->hjoin);
	hist_init(&R->hlat);
	hist_init(&R->hfan);
	R->rss_before = rss_of(pids, npids);
	R->rss_after = R->rss_end = -1;
	R->cpu_go = R->cpu_stop = -1;

	/* Bucket width: 100 ms, wider for long runs so SERIES_MAX covers them. */
	double est = (O.connect_rate > 0 ? (double)(O.n + R->npubs) / O.connect_rate : 10) +
	             O.timeout + O.duration + O.drain + 30;
	R->series_ns = 100000000LL * (int64_t)ceil(est / (0.1 * SERIES_MAX));
	uint32_t run_id;
	if (getrandom(&run_id, sizeof run_id, 0) != sizeof run_id)
		run_id = (uint32_t)now_ns();

	struct wstate *ws = calloc((size_t)K, sizeof *ws);
	if (!ws)
		die("out of memory");
	R->t0 = now_ns();
	prog_last_j = prog_last_e = 0;
	prog_last_t = 0;
	long per = O.n / K, extra = O.n % K, lo = 0;
	for (int i = 0; i < K; i++) {
		int up[2], down[2];
		if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC))
			die("pipe: %s", strerror(errno));
		struct plan pl = {
		    .index = i,
		    .nworkers = K,
		    .sub_lo = (uint32_t)lo,
		    .sub_hi = (uint32_t)(lo + per + (i < extra)),
		    .bind_src = O.bind_src > 0 || (O.bind_src < 0 && t->loopback),
		    .connect_rate = O.connect_rate / K,
		    .t0 = R->t0,
		    .series_ns = R->series_ns,
		    .run_id = run_id,
		    .up = up[1],
		    .down = down[0],
		    .t = t,
		    .pt = O.pub_url && t == &g_t1 ? &g_tpub : t,
		};
		lo = pl.sub_hi;
		pl.src.sin_family = AF_INET;
		pl.src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)i);
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			for (int j = 0; j < i; j++) {
				close(ws[j].up);
				close(ws[j].down);
			}
			close(up[0]);
			close(down[1]);
			worker_main(&pl);
		}
		close(up[1]);
		close(down[0]);
		ws[i].pid = pid;
		ws[i].up = up[0];
		ws[i].down = down[1];
		fcntl(ws[i].up, F_SETFL, O_NONBLOCK);
	}

	uint32_t sent[MAX_PUBLISHERS] = {0};
	struct fan_rec *fans = NULL;
	size_t nfans = 0;
	int phase = P_SETUP;
	int64_t setup_guard =
	    R->t0 +
	    (int64_t)(((O.connect_rate > 0 ? (double)(O.n + R->npubs) / O.connect_rate : 0) +
	               O.timeout) *
	              2e9) +
	    60000000000LL;
	int64_t deadline = 0;
	const char *pnames[] = {"setup", "run", "stop", "drain", "done"};
	int sig_seen = g_sigint;
	struct pollfd pfd[MAX_WORKERS];

	while (phase != P_DONE) {
		for (int i = 0; i < K; i++) {
			pfd[i].fd = ws[i].dead || ws[i].ended ? -1 : ws[i].up;
			pfd[i].events = POLLIN;
			pfd[i].revents = 0;
		}
		int wait_ms = 100;
		if (phase == P_RUN) {
			int64_t left = (deadline - now_ns()) / 1000000 + 1;
			if (left < wait_ms)
				wait_ms = left < 0 ? 0 : (int)left;
		}
		int pr = poll(pfd, (nfds_t)K, wait_ms);
		if (pr < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		for (int i = 0; i < K; i++) {
			struct wstate *w = &ws[i];
			int eof = 0;
			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			for (;;) {
				if (w->cap - w->len < 65536) {
					size_t cap = w->cap ? w->cap * 2 : 1 << 20;
					if (cap > PARENT_BUF_MAX)
						die("worker %d sends too much", i);
					uint8_t *b = realloc(w->buf, cap);
					if (!b)
						die("out of memory");
					w->buf = b;
					w->cap = cap;
				}
				ssize_t r = read(w->up, w->buf + w->len, w->cap - w->len);
				if (r > 0) {
					w->len += (size_t)r;
					continue;
				}
				if (r == 0)
					eof = 1;
				break;
			}
			size_t off = 0;
			while (w->len - off >= sizeof(struct msg_hdr)) {
				struct msg_hdr h;
				memcpy(&h, w->buf + off, sizeof h);
				if (w->len - off - sizeof h < h.len)
					break;
				parent_msg(R, w, h.type, w->buf + off + sizeof h, h.len, sent,
				           &fans, &nfans);
				off += sizeof h + h.len;
			}
			memmove(w->buf, w->buf + off, w->len - off);
			w->len -= off;
			if (eof && !w->ended) {
				w->dead = 1;
				R->ok = 0;
				snprintf(R->err, sizeof R->err, "worker %d died", i);
			}
		}

		int64_t now = now_ns();
		int all_ready = 1, all_sent = 1, all_end = 1;
		for (int i = 0; i < K; i++) {
			int gone = ws[i].dead || ws[i].ended;
			all_ready &= ws[i].ready || gone;
			all_sent &= ws[i].sent_in || gone;
			all_end &= gone;
		}
		int sig = g_sigint != sig_seen;
		sig_seen = g_sigint;
		if (all_end) {
			phase = P_DONE;
			break;
		}
		switch (phase) {
		case P_SETUP:
			if (all_ready) {
				struct counters s = {0};
				for (int i = 0; i < K; i++)
					merge_counters(&s, &ws[i].prog);
				R->rss_after = rss_of(pids, npids);
				R->t_ready = now;
				say("setup: %" PRIu64 " of %ld joined in %.2f s\n", s.joined,
				    R->n + R->npubs, (double)(now - R->t0) / 1e9);
				R->cpu_go = cpu_of(pids, npids);
				R->t_go = now_ns();
				send_all(ws, K, C_GO, &R->t_go, sizeof R->t_go);
				deadline = R->t_go + (int64_t)(O.duration * 1e9);
				phase = P_RUN;
			} else if (sig || now > setup_guard) {
				snprintf(R->err, sizeof R->err, "%s during setup",
				         sig ? "interrupted" : "stuck");
				R->ok = 0;
				R->interrupted = sig;
				kill_workers(ws, K);
				phase = P_DONE;
			}
			break;
		case P_RUN:
			if (now >= deadline || sig) {
				if (sig) {
					R->interrupted = 1;
					say("interrupted: stopping early (again to abort)\n");
				}
				R->t_stop = now;
				R->cpu_stop = cpu_of(pids, npids);
				R->rss_end = rss_of(pids, npids);
				send_all(ws, K, C_STOP, NULL, 0);
				phase = P_STOPPING;
				deadline = now + (int64_t)((O.drain + 30) * 1e9);
			}
			break;
		case P_STOPPING:
			if (O.scenario == SC_BROADCAST && all_sent) {
				send_all(ws, K, C_EXPECT, sent,
				         (size_t)O.publishers * sizeof(uint32_t));
				phase = P_DRAIN;
			}
			__attribute__((fallthrough));
		case P_DRAIN:
			if (sig || now > deadline) {
				snprintf(R->err, sizeof R->err, "%s while finishing",
				         sig ? "interrupted" : "stuck");
				R->ok = 0;
				kill_workers(ws, K);
				phase = P_DONE;
			}
			break;
		}
		progress(R, ws, K, pnames[phase], now);
	}
	progress_clear();
	R->t_end = now_ns();
	for (int i = 0; i < K; i++) {
		int st;
		while (waitpid(ws[i].pid, &st, 0) < 0 && errno == EINTR)
			;
		close(ws[i].up);
		close(ws[i].down);
		if (ws[i].fin) {
			merge_counters(&R->c, &ws[i].fin->c);
			hist_merge(&R->hsetup, &ws[i].fin->hsetup);
			hist_merge(&R->hjoin, &ws[i].fin->hjoin);
			hist_merge(&R->hlat, &ws[i].fin->hlat);
			for (int j = 0; j < SERIES_MAX; j++) {
				R->jseries[j] += ws[i].fin->jseries[j];
				R->eseries[j] += ws[i].fin->eseries[j];
			}
		} else {
			merge_counters(&R->c, &ws[i].prog);
			if (R->ok) {
				R->ok = 0;
				snprintf(R->err, sizeof R->err, "worker %d ended without results",
				         i);
			}
		}
		free(ws[i].fin);
		free(ws[i].buf);
	}
	for (int j = 0; j < SERIES_MAX; j++)
		if (R->jseries[j] || R->eseries[j])
			R->series_len = j + 1;
	merge_fanout(R, fans, nfans);
	for (size_t i = 0; i < nfans; i++)
		free(fans[i].v);
	free(fans);
	free(ws);
}

/* ---- figures ---- */

static double
ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static uint64_t
failures(const struct counters *c)
{
	uint64_t f = 0;
	for (int r = 0; r < F_NREASONS; r++)
		f += c->fail[r];
	return f;
}

static double
setup_secs(const struct result *R)
{
	if (!R->c.t_last_join || !R->c.t_first_attempt)
		return 0;
	return (double)(R->c.t_last_join - R->c.t_first_attempt) / 1e9;
}

static double
connect_rate(const struct result *R)
{
	double s = setup_secs(R);
	return s > 0 ? (double)R->c.joined / s : 0;
}

static double
run_secs(const struct result *R)
{
	return R->t_stop > R->t_go ? (double)(R->t_stop - R->t_go) / 1e9 : 0;
}

/* Deliveries per second: from GO to the last delivery. */
static double
delivery_rate(const struct result *R)
{
	if (!R->c.t_last_recv || R->c.t_last_recv <= R->t_go)
		return 0;
	return (double)R->c.uniq / ((double)(R->c.t_last_recv - R->t_go) / 1e9);
}

static double
sent_rate(const struct result *R)
{
	double s = run_secs(R);
	return s > 0 ? (double)R->c.sent / s : 0;
}

static double
rtt_rate(const struct result *R)
{
	double s = run_secs(R);
	return s > 0 ? (double)R->c.replies / s : 0;
}

/* Loadgen CPU during the run, in % of one core (all workers). */
static double
loadgen_cpu_pct(const struct result *R)
{
	double s = run_secs(R);
	return s > 0 ? (double)R->c.cpu_run_us / 1e4 / s : 0;
}

/* Server CPU during the run, in % of one core; -1 unknown. */
static double
server_cpu_pct(const struct result *R)
{
	double s = run_secs(R);
	if (R->cpu_go < 0 || R->cpu_stop < 0 || s <= 0)
		return -1;
	return (double)(R->cpu_stop - R->cpu_go) * 100.0 / (double)sysconf(_SC_CLK_TCK) / s;
}

static double
bytes_per_conn(const struct result *R)
{
	if (R->rss_before < 0 || R->rss_after < 0 || !R->c.joined)
		return -1;
	return (double)(R->rss_after - R->rss_before) / (double)R->c.joined;
}

static void
print_pcts(FILE *f, const char *label, const hist *h)
{
	if (!h->count) {
		fprintf(f, "  %-11s (none)\n", label);
		return;
	}
	fprintf(f,
	        "  %-11s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms  (mean %.3f, n "
	        "%" PRIu64 ")\n",
	        label, ms(hist_percentile(h, 50)), ms(hist_percentile(h, 90)),
	        ms(hist_percentile(h, 99)), ms(hist_percentile(h, 99.9)), ms(h->max),
	        hist_mean(h) / 1e6, h->count);
}

static void
print_failures(FILE *f, const uint64_t *fail, const struct counters *c)
{
	int any = 0;
	for (int r = 0; r < F_NREASONS; r++) {
		if (!fail[r])
			continue;
		fprintf(f, "%s%s %" PRIu64, any ? ", " : "", fail_names[r], fail[r]);
		if (r == F_HS_REFUSED && c->hs_status_last)
			fprintf(f, " (HTTP %" PRIu64 ")", c->hs_status_last);
		if (r == F_CONNECT_ERROR && c->errno_last)
			fprintf(f, " (%s)", strerror((int)c->errno_last));
		any = 1;
	}
	if (!any)
		fprintf(f, "none");
}

static void
print_summary(FILE *f, const struct result *R)
{
	const struct counters *c = &R->c;
	fprintf(f, "\nphx-c loadgen %s against %s (V%d, %s %s)%s\n", scenario_names[O.scenario],
	        R->t->url, O.vsn, transport_names[O.transport],
	        O.transport == T_LONGPOLL ? R->t->lp_path : R->t->path,
	        R->ok ? "" : "  ** INCOMPLETE **");
	if (O.pub_transport != O.transport && O.scenario == SC_BROADCAST)
		fprintf(f, "  publishers  over %s\n", transport_names[O.pub_transport]);
	if (!R->ok)
		fprintf(f, "  error       %s\n", R->err);
	fprintf(f, "  clients     %ld", R->n);
	if (O.scenario == SC_BROADCAST)
		fprintf(f, " subscribers + %ld publisher%s", R->npubs, R->npubs > 1 ? "s" : "");
	fprintf(f, " on %d topic%s, %d worker%s\n", O.ntopics, O.ntopics > 1 ? "s" : "", R->workers,
	        R->workers > 1 ? "s" : "");
	fprintf(f, "  setup       %" PRIu64 " of %" PRIu64 " joined in %.2f s: %.0f /s\n",
	        c->joined, c->attempted, setup_secs(R), connect_rate(R));
	fprintf(f, "  failures    ");
	print_failures(f, c->fail, c);
	fputc('\n', f);
	print_pcts(f, "join", &R->hjoin);
	print_pcts(f, "connect+join", &R->hsetup);
	if (O.scenario == SC_BROADCAST) {
		char how[64];
		if (O.rate > 0)
			snprintf(how, sizeof how, "at %.6g /s each", O.rate);
		else
			snprintf(how, sizeof how, "flat out (window %d)", O.window);
		fprintf(f, "  publishing  %.2f s, %ld publisher%s %s: %" PRIu64 " sent (%.1f /s)\n",
		        run_secs(R), R->npubs, R->npubs > 1 ? "s" : "", how, c->sent, sent_rate(R));
		if (O.rate > 0)
			fprintf(f,
			        "              worst backlog behind schedule: %" PRIu64
			        " messages\n",
			        c->pub_backlog_max);
		fprintf(f, "  deliveries  %" PRIu64 " of %" PRIu64 " expected: %.0f /s\n", c->uniq,
		        c->expected, delivery_rate(R));
		print_pcts(f, "latency", &R->hlat);
		print_pcts(f, "fan-out", &R->hfan);
		if (R->fan_stride > 1)
			fprintf(f, "              (fan-out sampled: every %u-th message)\n",
			        R->fan_stride);
		fprintf(f,
		        "  loss        lost %" PRIu64 " (%" PRIu64 " subscribers, worst %" PRIu64
		        "), duplicated %" PRIu64 " (%" PRIu64 " subscribers), out of order %" PRIu64
		        " (%" PRIu64 " subscribers)\n",
		        c->lost, c->subs_lost, c->max_lost_sub, c->dup, c->subs_dup, c->ooo,
		        c->subs_ooo);
	} else if (O.scenario == SC_PINGPONG) {
		fprintf(f, "  round trips %" PRIu64 " in %.2f s: %.0f /s (%" PRIu64 " errors)\n",
		        c->replies, run_secs(R), rtt_rate(R), c->reply_errors);
		print_pcts(f, "latency", &R->hlat);
	} else {
		fprintf(f, "  held        %.2f s\n", run_secs(R));
	}
	fprintf(f, "  after join  dropped %" PRIu64, c->dropped);
	if (c->dropped) {
		fprintf(f, " (");
		print_failures(f, c->dropped_why, c);
		fprintf(f, ")");
	}
	fprintf(f,
	        ", channel errors %" PRIu64 ", foreign messages %" PRIu64 ", bad frames %" PRIu64
	        "\n",
	        c->chan_errors, c->foreign, c->bad_frames);
	if (R->rss_before >= 0 && R->rss_after >= 0)
		fprintf(f, "  server      RSS %.1f MB -> %.1f MB: %.0f bytes per connection\n",
		        (double)R->rss_before / 1048576, (double)R->rss_after / 1048576,
		        bytes_per_conn(R));
	fprintf(f, "  cpu         loadgen %.0f%% of a core", loadgen_cpu_pct(R));
	if (server_cpu_pct(R) >= 0)
		fprintf(f, ", server %.0f%%", server_cpu_pct(R));
	fprintf(f, " during the run (%ld core%s here); longest loadgen loop pass %.1f ms\n",
	        sysconf(_SC_NPROCESSORS_ONLN), sysconf(_SC_NPROCESSORS_ONLN) > 1 ? "s" : "",
	        ms(c->loop_busy_max));
	fprintf(f, "  traffic     in %.1f MB, out %.1f MB\n", (double)c->bytes_in / 1048576,
	        (double)c->bytes_out / 1048576);
	if (c->lp_polls || c->lp_posts)
		fprintf(f, "  long poll   %" PRIu64 " polls and %" PRIu64 " POSTs answered\n",
		        c->lp_polls, c->lp_posts);
}

/* ---- JSON ---- */

struct jb {
	char *p;
	size_t len, cap;
};

static void __attribute__((format(printf, 2, 3))) jp(struct jb *j, const char *fmt, ...)
{
	if (!j->p) {
		j->cap = 4096;
		j->p = malloc(j->cap);
		if (!j->p)
			die("out of memory");
	}
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(j->p + j->len, j->cap - j->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < j->cap - j->len) {
			j->len += (size_t)n;
			return;
		}
		j->cap = j->cap ? j->cap * 2 : 4096;
		j->p = realloc(j->p, j->cap);
		if (!j->p)
			die("out of memory");
	}
}

static void
jstr(struct jb *j, const char *s)
{
	jp(j, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			jp(j, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			jp(j, "\\u%04x", *s);
		else
			jp(j, "%c", *s);
	}
	jp(j, "\"");
}

static void
jhist(struct jb *j, const char *name, const hist *h)
{
	jp(j,
	   "\"%s\":{\"count\":%" PRIu64 ",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,"
	   "\"max\":%.3f,\"mean\":%.3f}",
	   name, h->count, ms(hist_percentile(h, 50)), ms(hist_percentile(h, 90)),
	   ms(hist_percentile(h, 99)), ms(hist_percentile(h, 99.9)), ms(h->max),
	   hist_mean(h) / 1e6);
}

static void
jfails(struct jb *j, const uint64_t *fail)
{
	jp(j, "{");
	for (int r = 0; r < F_NREASONS; r++)
		jp(j, "%s\"%s\":%" PRIu64, r ? "," : "", fail_names[r], fail[r]);
	jp(j, "}");
}

static void
json_result(struct jb *j, const struct result *R)
{
	const struct counters *c = &R->c;
	jp(j, "\"url\":");
	jstr(j, R->t->url);
	jp(j, ",\"ok\":%s,", R->ok ? "true" : "false");
	if (!R->ok) {
		jp(j, "\"error\":");
		jstr(j, R->err);
		jp(j, ",");
	}
	jp(j, "\"interrupted\":%s,\"workers\":%d,\"n\":%ld,\"publishers\":%ld,",
	   R->interrupted ? "true" : "false", R->workers, R->n, R->npubs);
	jp(j,
	   "\"attempted\":%" PRIu64 ",\"connected\":%" PRIu64 ",\"upgraded\":%" PRIu64
	   ",\"joined\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"failures\":",
	   c->attempted, c->connected, c->upgraded, c->joined, failures(c));
	jfails(j, c->fail);
	jp(j, ",\"handshake_status_last\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"dropped_by\":",
	   c->hs_status_last, c->dropped);
	jfails(j, c->dropped_why);
	jp(j, ",\"setup_s\":%.3f,\"connect_rate_per_s\":%.1f,", setup_secs(R), connect_rate(R));
	jhist(j, "join_ms", &R->hjoin);
	jp(j, ",");
	jhist(j, "connect_join_ms", &R->hsetup);
	jp(j,
	   ",\"run_s\":%.3f,\"chan_errors\":%" PRIu64 ",\"foreign\":%" PRIu64
	   ",\"bad_frames\":%" PRIu64 ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64,
	   run_secs(R), c->chan_errors, c->foreign, c->bad_frames, c->bytes_in, c->bytes_out);
	jp(j, ",\"lp_polls\":%" PRIu64 ",\"lp_posts\":%" PRIu64, c->lp_polls, c->lp_posts);
	if (O.scenario == SC_BROADCAST) {
		jp(j,
		   ",\"sent\":%" PRIu64 ",\"sent_per_s\":%.1f,\"rate_target_per_pub\":%.1f,"
		   "\"pub_backlog_max\":%" PRIu64 ",\"expected\":%" PRIu64
		   ",\"deliveries\":%" PRIu64 ",\"received\":%" PRIu64
		   ",\"deliveries_per_s\":%.1f,",
		   c->sent, sent_rate(R), O.rate, c->pub_backlog_max, c->expected, c->uniq,
		   c->delivered, delivery_rate(R));
		jhist(j, "latency_ms", &R->hlat);
		jp(j, ",");
		jhist(j, "fanout_ms", &R->hfan);
		jp(j,
		   ",\"fanout_stride\":%u,\"lost\":%" PRIu64 ",\"duplicated\":%" PRIu64
		   ",\"out_of_order\":%" PRIu64 ",\"subs_with_loss\":%" PRIu64
		   ",\"subs_with_dup\":%" PRIu64 ",\"subs_with_ooo\":%" PRIu64
		   ",\"max_lost_per_sub\":%" PRIu64 ",\"self_received\":%" PRIu64,
		   R->fan_stride ? R->fan_stride : 1, c->lost, c->dup, c->ooo, c->subs_lost,
		   c->subs_dup, c->subs_ooo, c->max_lost_sub, c->self_recv);
	} else if (O.scenario == SC_PINGPONG) {
		jp(j,
		   ",\"round_trips\":%" PRIu64
		   ",\"round_trips_per_s\":%.1f,\"reply_errors\":%" PRIu64 ",",
		   c->replies, rtt_rate(R), c->reply_errors);
		jhist(j, "latency_ms", &R->hlat);
	}
	if (R->rss_before >= 0)
		jp(j,
		   ",\"server_rss_before\":%lld,\"server_rss_after\":%lld,\"server_rss_end\":%lld",
		   R->rss_before, R->rss_after, R->rss_end);
	jp(j, ",\"loadgen_cpu_pct\":%.1f,\"loadgen_loop_max_ms\":%.3f", loadgen_cpu_pct(R),
	   ms(c->loop_busy_max));
	if (server_cpu_pct(R) >= 0)
		jp(j, ",\"server_cpu_pct\":%.1f", server_cpu_pct(R));
	double bpc = bytes_per_conn(R);
	if (bpc >= 0)
		jp(j, ",\"server_bytes_per_conn\":%.1f", bpc);
}

/* Ratio figures for --compare: name, value of a result. */
struct metric {
	const char *name;
	double (*get)(const struct result *);
	int scen; /* -1: every scenario */
};

static double
m_join_p50(const struct result *R)
{
	return ms(hist_percentile(&R->hjoin, 50));
}
static double
m_join_p99(const struct result *R)
{
	return ms(hist_percentile(&R->hjoin, 99));
}
static double
m_lat_p50(const struct result *R)
{
	return ms(hist_percentile(&R->hlat, 50));
}
static double
m_lat_p99(const struct result *R)
{
	return ms(hist_percentile(&R->hlat, 99));
}
static double
m_lat_p999(const struct result *R)
{
	return ms(hist_percentile(&R->hlat, 99.9));
}
static double
m_lat_max(const struct result *R)
{
	return ms(R->hlat.max);
}
static double
m_fan_p50(const struct result *R)
{
	return ms(hist_percentile(&R->hfan, 50));
}
static double
m_fan_p99(const struct result *R)
{
	return ms(hist_percentile(&R->hfan, 99));
}

static const struct metric metrics[] = {
    {"connect_rate_per_s", connect_rate, -1},
    {"join_p50_ms", m_join_p50, -1},
    {"join_p99_ms", m_join_p99, -1},
    {"server_bytes_per_conn", bytes_per_conn, -1},
    {"deliveries_per_s", delivery_rate, SC_BROADCAST},
    {"sent_per_s", sent_rate, SC_BROADCAST},
    {"latency_p50_ms", m_lat_p50, SC_BROADCAST},
    {"latency_p99_ms", m_lat_p99, SC_BROADCAST},
    {"latency_p999_ms", m_lat_p999, SC_BROADCAST},
    {"latency_max_ms", m_lat_max, SC_BROADCAST},
    {"fanout_p50_ms", m_fan_p50, SC_BROADCAST},
    {"fanout_p99_ms", m_fan_p99, SC_BROADCAST},
    {"round_trips_per_s", rtt_rate, SC_PINGPONG},
    {"latency_p50_ms", m_lat_p50, SC_PINGPONG},
    {"latency_p99_ms", m_lat_p99, SC_PINGPONG},
    {"latency_p999_ms", m_lat_p999, SC_PINGPONG},
};

/* ---- plots ---- */

static int
in_path(const char *prog)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/bin:/bin";
	char buf[4096];
	while (*path) {
		size_t l = strcspn(path, ":");
		if (l && l + strlen(prog) + 2 < sizeof buf) {
			snprintf(buf, sizeof buf, "%.*s/%s", (int)l, path, prog);
			if (access(buf, X_OK) == 0)
				return 1;
		}
		path += l + (path[l] == ':');
	}
	return 0;
}

static int
write_latency_dat(const char *file, const hist *h)
{
	FILE *f = fopen(file, "w");
	if (!f)
		return -1;
	/* Rows "x q ms": q of the values are <= ms; x = 1 / (1 - q) spreads the tail.  Drawn
	 * with fsteps, the value of each row holds from the previous row's x up to its own. */
	uint64_t cum = 0;
	if (h->count)
		fprintf(f, "1 0 %.6f\n", ms(hist_min(h)));
	for (unsigned i = 0; i < HIST_BUCKETS && h->count; i++) {
		if (!h->b[i])
			continue;
		cum += h->b[i];
		double q = (double)cum / (double)h->count;
		double x = q >= 0.999999 ? 1e6 : 1.0 / (1.0 - q);
		uint64_t v = hist_bucket_high(i) > h->max ? h->max : hist_bucket_high(i);
		fprintf(f, "%.6f %.9f %.6f\n", x, q, ms(v));
	}
	fclose(f);
	return 0;
}

static int
write_series_dat(const char *file, const struct result *R)
{
	FILE *f = fopen(file, "w");
	if (!f)
		return -1;
	const uint64_t *s = O.scenario == SC_CONNECT ? R->jseries : R->eseries;
	double w = (double)R->series_ns / 1e9;
	for (int i = 0; i < R->series_len; i++)
		fprintf(f, "%.3f %.1f\n", (i + 0.5) * w, (double)s[i] / w);
	fclose(f);
	return 0;
}

static void
plot(const struct result *R, int nres)
{
	if (!O.plot_dir)
		return;
	if (mkdir(O.plot_dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "loadgen: --plot %s: %s\n", O.plot_dir, strerror(errno));
		return;
	}
	char path[4096];
	const char *label[2] = {"primary", "compare"};
	for (int i = 0; i < nres; i++) {
		const hist *h = O.scenario == SC_CONNECT ? &R[i].hjoin : &R[i].hlat;
		snprintf(path, sizeof path, "%s/latency-%s.dat", O.plot_dir, label[i]);
		write_latency_dat(path, h);
		snprintf(path, sizeof path, "%s/series-%s.dat", O.plot_dir, label[i]);
		write_series_dat(path, &R[i]);
		if (O.scenario == SC_BROADCAST) {
			snprintf(path, sizeof path, "%s/fanout-%s.dat", O.plot_dir, label[i]);
			write_latency_dat(path, &R[i].hfan);
		}
	}
	snprintf(path, sizeof path, "%s/plot.gp", O.plot_dir);
	FILE *g = fopen(path, "w");
	if (!g) {
		fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
		return;
	}
	const char *what = O.scenario == SC_BROADCAST  ? "end-to-end latency"
	                   : O.scenario == SC_PINGPONG ? "round-trip latency"
	                                               : "join latency";
	const char *rate = O.scenario == SC_BROADCAST  ? "deliveries/s"
	                   : O.scenario == SC_PINGPONG ? "round trips/s"
	                                               : "joins/s";
	fprintf(g, "# written by loadgen --plot; run with: cd DIR && gnuplot plot.gp\n");
	fprintf(g, "set terminal pngcairo size 1000,600 noenhanced\n");
	fprintf(g, "set grid\nset key below\nset yrange [0:*]\nset offsets 0, 0, graph 0.05, 0\n");
	fprintf(g, "set output 'latency.png'\nset title '%s: %s (%s)'\n",
	        scenario_names[O.scenario], what, R[0].t->url);
	fprintf(g,
	        "set logscale x\nset xrange [1:1e6]\nset xlabel 'percentile'\nset ylabel 'ms'\n");
	/* Tic labels are gnuplot format strings: a percent sign is written %%. */
	fprintf(g, "set xtics ('0%%%%' 1, '50%%%%' 2, '90%%%%' 10, '99%%%%' 100, '99.9%%%%' 1000, "
	           "'99.99%%%%' 10000, '99.999%%%%' 100000, 'max' 1000000)\n");
	fprintf(g, "plot ");
	for (int i = 0; i < nres; i++) {
		fprintf(g, "%s'latency-%s.dat' using 1:3 with fsteps lw 2 title '%s %s'",
		        i ? ", " : "", label[i], what, R[i].t->url);
		if (O.scenario == SC_BROADCAST)
			fprintf(
			    g,
			    ", 'fanout-%s.dat' using 1:3 with fsteps lw 2 dt 2 title 'fan-out %s'",
			    label[i], R[i].t->url);
	}
	fprintf(g, "\nunset logscale x\nset xrange [*:*]\nset xtics auto\n");
	fprintf(g, "set output 'deliveries.png'\nset title '%s: %s over time'\n",
	        scenario_names[O.scenario], rate);
	fprintf(g, "set xlabel 's since start (setup included)'\nset ylabel '%s'\n", rate);
	fprintf(g, "plot ");
	for (int i = 0; i < nres; i++)
		fprintf(g, "%s'series-%s.dat' using 1:2 with lines lw 2 title '%s'", i ? ", " : "",
		        label[i], R[i].t->url);
	fprintf(g, "\n");
	fclose(g);
	if (!in_path("gnuplot")) {
		fprintf(stderr,
		        "loadgen: gnuplot not found (Debian: gnuplot-nox); data and script "
		        "are in %s, no PNG written\n",
		        O.plot_dir);
		return;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		if (chdir(O.plot_dir) == 0)
			execlp("gnuplot", "gnuplot", "plot.gp", (char *)NULL);
		_exit(127);
	}
	int st = 0;
	if (pid > 0)
		waitpid(pid, &st, 0);
	if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fprintf(stderr, "loadgen: gnuplot failed; see %s/plot.gp\n", O.plot_dir);
	else
		say("plots: %s/latency.png, %s/deliveries.png\n", O.plot_dir, O.plot_dir);
}

/* ---- command line ---- */

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: loadgen connect|broadcast|pingpong [options]\n"
	    "  --url URL            server (http:// or ws://; default http://127.0.0.1:4000);\n"
	    "                       path defaults to /socket/websocket\n"
	    "  --vsn 1|2            serializer: V2 arrays (default) or V1 objects\n"
	    "  --transport T        websocket (default) or longpoll: each long-poll client is\n"
	    "                       a session with a poll and a POST connection (2 sockets)\n"
	    "  --pub-transport T    broadcast: the publishers' transport (default: --transport)\n"
	    "  -n, --clients N      connections (broadcast: subscribers) (default 1000)\n"
	    "  --topics LIST        comma-separated topics; client i joins topic i %% T\n"
	    "                       (default room:lobby)\n"
	    "  --params QUERY       extra socket params, e.g. token=...\n"
	    "  --publishers P       broadcast: publishing connections (default 1)\n"
	    "  --pub-url URL        broadcast: the publishers connect to URL instead (e.g.\n"
	    "                       another node of a cluster); not with --compare\n"
	    "  --rate R             broadcast: messages/s per publisher; 0 = flat out (default "
	    "10)\n"
	    "  --window W           flat out: messages in flight per publisher (default 16)\n"
	    "  --size B             broadcast: pad the body to at least B bytes\n"
	    "  --duration D         seconds to publish / ping / hold (default 10)\n"
	    "  --connect-rate C     new connections/s over all workers; 0 = unpaced "
	    "(default 5000)\n"
	    "  --max-pending M      per worker: connections being set up at once (default 1000)\n"
	    "  --timeout S          connect + upgrade + join must finish in S s (default 15)\n"
	    "  --drain S            broadcast: wait up to S s for late messages (default 10)\n"
	    "  --heartbeat S        phoenix heartbeat period, 0 = none (default 30)\n"
	    "  --workers K          worker processes (default: as the open-file limit needs)\n"
	    "  --per-worker N       sockets per worker (default 19000)\n"
	    "  --bind-src / --no-bind-src  source address 127.0.0.(2+k) per worker\n"
	    "  --src-ports LO-HI    with --bind-src: bind the source ports LO..HI in turn\n"
	    "                       instead of letting connect() search for one (which\n"
	    "                       slows down as the ports fill: for very many sockets)\n"
	    "                       (default: on for 127.x targets)\n"
	    "  --max-message B      largest server message accepted (default 262144)\n"
	    "  --server-pid PID[,PID...]    report the server's RSS per connection and CPU\n"
	    "  --compare URL        run again against URL and print the ratios\n"
	    "  --compare-pid PID[,PID...]   the second server's pids\n"
	    "  --json FILE          also write the JSON line to FILE\n"
	    "  --plot DIR           write DIR/latency.png and DIR/deliveries.png (gnuplot)\n"
	    "  --quiet              print only the JSON line\n");
}

static int
parse_pids(const char *s, pid_t *out)
{
	int n = 0;
	char *end;
	while (*s) {
		long v = strtol(s, &end, 10);
		if (end == s || v <= 0 || n >= MAX_PIDS)
			die("bad pid list: %s", s);
		out[n++] = (pid_t)v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			die("bad pid list: %s", s);
	}
	return n;
}

static double
num(const char *s, const char *opt, double lo, double hi)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || !(v >= lo && v <= hi))
		die("%s: %s is not a number in [%g, %g]", opt, s, lo, hi);
	return v;
}

static void
parse_topics(char *s)
{
	O.ntopics = 0;
	for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
		if (O.ntopics >= MAX_TOPICS)
			die("too many topics (at most %d)", MAX_TOPICS);
		for (const char *p = tok; *p; p++)
			if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
				die("topic %s: quotes, backslashes and control characters are not "
				    "supported",
				    tok);
		O.topics[O.ntopics++] = tok;
	}
	if (!O.ntopics)
		die("--topics: no topic");
}

static void
parse_args(int argc, char **argv)
{
	enum {
		o_url = 256,
		o_vsn,
		o_topics,
		o_params,
		o_pubs,
		o_puburl,
		o_rate,
		o_window,
		o_size,
		o_dur,
		o_crate,
		o_pending,
		o_timeout,
		o_drain,
		o_hb,
		o_workers,
		o_perw,
		o_bind,
		o_nobind,
		o_srcports,
		o_maxmsg,
		o_pid,
		o_compare,
		o_cpid,
		o_json,
		o_plot,
		o_quiet,
		o_transport,
		o_pubtransport,
	};
	static const struct option lo[] = {
	    {"url", 1, 0, o_url},
	    {"vsn", 1, 0, o_vsn},
	    {"clients", 1, 0, 'n'},
	    {"topics", 1, 0, o_topics},
	    {"params", 1, 0, o_params},
	    {"publishers", 1, 0, o_pubs},
	    {"pub-url", 1, 0, o_puburl},
	    {"rate", 1, 0, o_rate},
	    {"window", 1, 0, o_window},
	    {"size", 1, 0, o_size},
	    {"duration", 1, 0, o_dur},
	    {"connect-rate", 1, 0, o_crate},
	    {"max-pending", 1, 0, o_pending},
	    {"timeout", 1, 0, o_timeout},
	    {"drain", 1, 0, o_drain},
	    {"heartbeat", 1, 0, o_hb},
	    {"workers", 1, 0, o_workers},
	    {"per-worker", 1, 0, o_perw},
	    {"bind-src", 0, 0, o_bind},
	    {"no-bind-src", 0, 0, o_nobind},
	    {"src-ports", 1, 0, o_srcports},
	    {"max-message", 1, 0, o_maxmsg},
	    {"server-pid", 1, 0, o_pid},
	    {"compare", 1, 0, o_compare},
	    {"compare-pid", 1, 0, o_cpid},
	    {"json", 1, 0, o_json},
	    {"plot", 1, 0, o_plot},
	    {"quiet", 0, 0, o_quiet},
	    {"transport", 1, 0, o_transport},
	    {"pub-transport", 1, 0, o_pubtransport},
	    {"help", 0, 0, 'h'},
	    {0, 0, 0, 0},
	};
	static char default_topics[] = "room:lobby";
	parse_topics(default_topics);
	int ch;
	while ((ch = getopt_long(argc, argv, "n:h", lo, NULL)) != -1) {
		switch (ch) {
		case o_url:
			O.url = optarg;
			break;
		case o_vsn:
			O.vsn = optarg[0] == '1' ? 1 : optarg[0] == '2' ? 2 : 0;
			if (!O.vsn)
				die("--vsn: 1 or 2");
			break;
		case 'n':
			O.n = (long)num(optarg, "-n", 1, 5000000);
			break;
		case o_topics:
			parse_topics(optarg);
			break;
		case o_params:
			O.params = optarg;
			break;
		case o_puburl:
			O.pub_url = optarg;
			break;
		case o_pubs:
			O.publishers = (int)num(optarg, "--publishers", 1, MAX_PUBLISHERS);
			break;
		case o_rate:
			O.rate = num(optarg, "--rate", 0, 1e6);
			break;
		case o_window:
			O.window = (int)num(optarg, "--window", 1, 100000);
			break;
		case o_size:
			O.size = (int)num(optarg, "--size", 0, FRAME_MAX / 2 - 512);
			break;
		case o_dur:
			O.duration = num(optarg, "--duration", 0, 86400);
			break;
		case o_crate:
			O.connect_rate = num(optarg, "--connect-rate", 0, 1e7);
			break;
		case o_pending:
			O.max_pending = (int)num(optarg, "--max-pending", 1, 1000000);
			break;
		case o_timeout:
			O.timeout = num(optarg, "--timeout", 0.1, 3600);
			break;
		case o_drain:
			O.drain = num(optarg, "--drain", 0, 3600);
			break;
		case o_hb:
			O.heartbeat = num(optarg, "--heartbeat", 0, 3600);
			break;
		case o_workers:
			O.workers = (int)num(optarg, "--workers", 1, MAX_WORKERS);
			break;
		case o_perw:
			O.per_worker = (long)num(optarg, "--per-worker", 1, 1000000);
			break;
		case o_bind:
			O.bind_src = 1;
			break;
		case o_nobind:
			O.bind_src = 0;
			break;
		case o_srcports:
			if (sscanf(optarg, "%d-%d", &O.src_lo, &O.src_hi) != 2 || O.src_lo < 1 ||
			    O.src_hi > 65535 || O.src_lo > O.src_hi)
				die("--src-ports: LO-HI within 1..65535, e.g. 10000-60000");
			break;
		case o_maxmsg:
			O.max_msg = (size_t)num(optarg, "--max-message", 1024, 64 << 20);
			break;
		case o_pid:
			O.npids = parse_pids(optarg, O.pids);
			break;
		case o_compare:
			O.compare_url = optarg;
			break;
		case o_cpid:
			O.ncpids = parse_pids(optarg, O.cpids);
			break;
		case o_json:
			O.json_path = optarg;
			break;
		case o_plot:
			O.plot_dir = optarg;
			break;
		case o_quiet:
			O.quiet = 1;
			break;
		case o_transport:
		case o_pubtransport: {
			int tr = !strcmp(optarg, "websocket")  ? T_WEBSOCKET
			         : !strcmp(optarg, "longpoll") ? T_LONGPOLL
			                                       : -1;
			if (tr < 0)
				die("--%s: websocket or longpoll",
				    ch == o_transport ? "transport" : "pub-transport");
			*(ch == o_transport ? &O.transport : &O.pub_transport) = tr;
			break;
		}
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind >= argc) {
		usage(stderr);
		exit(2);
	}
	for (int i = 0; i < 3; i++)
		if (!strcmp(argv[optind], scenario_names[i]))
			O.scenario = i;
	if (O.scenario < 0 || optind + 1 != argc)
		die("unknown scenario %s (connect, broadcast or pingpong)", argv[optind]);
	if (O.heartbeat > 0 && O.heartbeat < 1)
		O.heartbeat = 1;
	if (O.pub_transport < 0)
		O.pub_transport = O.transport;
}

/* Raises the open-file limit, picks the worker count, caps N where a limit says so. */
static int
plan_workers(const struct target *t)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rlim_t old = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			say("limits: raised the open-file limit from %lu to %lu\n",
			    (unsigned long)old, (unsigned long)rl.rlim_cur);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	long fd_cap = (long)rl.rlim_cur - FD_RESERVE;
	if (fd_cap < 1)
		die("open-file limit %lu is too low", (unsigned long)rl.rlim_cur);
	long per = O.per_worker;
	if (per > fd_cap) {
		limit_note("open files: %lu per process caps a worker at %ld sockets",
		           (unsigned long)rl.rlim_cur, fd_cap);
		per = fd_cap;
	}
	int bind_src = O.bind_src > 0 || (O.bind_src < 0 && t->loopback);
	long span = bind_src && O.src_lo ? O.src_hi - O.src_lo + 1 : port_span();
	if (bind_src && per > span - 100) {
		per = span - 100;
		limit_note("source ports: %ld local ports per source address cap a worker at %ld",
		           span, per);
	}
	long npubs = O.scenario == SC_BROADCAST ? O.publishers : 0;
	/* Sockets per client: a long-poll session holds two. */
	long sc = O.transport == T_LONGPOLL ? 2 : 1, sp = O.pub_transport == T_LONGPOLL ? 2 : 1;
	long total = O.n * sc + npubs * sp;
	int K = O.workers;
	if (!K) {
		long k = (total + per - 1) / per;
		K = k > MAX_WORKERS ? MAX_WORKERS : (int)k;
	}
	if (!bind_src && K > 1 && t->loopback == 0)
		say("note: one source address for every worker (not a loopback target)\n");
	long cap = (long)K * per;
	if (!bind_src && cap > span - 100) {
		cap = span - 100;
		limit_note("source ports: one source address reaches %ld ports of the server",
		           span);
	}
	if (total > cap) {
		long n = (cap - npubs * sp) / sc;
		if (n < 1)
			die("limits leave no room for clients");
		limit_note("N capped from %ld to %ld (%d workers of at most %ld sockets)", O.n, n,
		           K, per);
		say("limits: %s\n", limit_notes[nlimit_notes - 1]);
		O.n = n;
	}
	if (K > O.n + npubs)
		K = (int)(O.n + npubs);
	if (K < 1)
		K = 1;
	return K;
}

/* Connections of this machine whose local port is the server's, neither listening,
 * closed nor in TIME-WAIT (/proc/net/tcp and tcp6): what the server still holds. */
static long
server_conns(int port)
{
	static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	long n = 0;
	int seen = 0;
	char line[512];
	for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
		FILE *fp = fopen(files[f], "r");
		if (!fp)
			continue;
		seen = 1;
		while (fgets(line, sizeof line, fp)) {
			char local[128];
			unsigned st;
			if (sscanf(line, " %*s %127s %*s %x", local, &st) != 2)
				continue; /* the header */
			const char *colon = strrchr(local, ':');
			if (!colon || (int)strtol(colon + 1, NULL, 16) != port)
				continue;
			if (st != 0x0A && st != 0x06 && st != 0x07) /* LISTEN, TIME_WAIT, CLOSE */
				n++;
		}
		fclose(fp);
	}
	return seen ? n : -1;
}

/* Between the run against --url and the one against --compare: waits (up to 30 s)
 * until the first server has closed every connection of its run, so that its
 * teardown does not overlap the second run (loopback targets: both on this machine). */
static void
settle_first(const struct target *t)
{
	int port = 0;
	if (t->family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)&t->sa)->sin_port);
	else if (t->family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)&t->sa)->sin6_port);
	if (!t->loopback || !port || server_conns(port) < 0) {
		sleep(1);
		return;
	}
	int64_t t0 = now_ns();
	long n = 0;
	while ((n = server_conns(port)) > 0 && now_ns() - t0 < 30 * (int64_t)1000000000) {
		struct timespec ts = {0, 100 * 1000000};
		nanosleep(&ts, NULL);
	}
	if (n > 0)
		say("settle: %s still holds %ld connections after 30 s\n", t->url, n);
	else
		say("settle: %s closed its connections in %.1f s\n", t->url,
		    (double)(now_ns() - t0) / 1e9);
	sleep(1);
}

int
main(int argc, char **argv)
{
	parse_args(argc, argv);
	tty = isatty(2);
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_sigint};
	sigaction(SIGINT, &sa, NULL);

	struct target *const t1p = &g_t1;
	static struct target t2;
	target_parse(O.url, t1p);
	if (O.compare_url)
		target_parse(O.compare_url, &t2);
	if (O.pub_url) {
		if (O.compare_url)
			die("--pub-url and --compare do not go together");
		if (O.scenario != SC_BROADCAST)
			die("--pub-url: broadcast only");
		target_parse(O.pub_url, &g_tpub);
		if (g_tpub.loopback != t1p->loopback)
			die("--pub-url: both servers must be loopback, or neither");
	}
	int K = plan_workers(t1p);
	if (O.compare_url && t2.loopback != t1p->loopback)
		die("--compare: both servers must be loopback, or neither");

	static struct result R[2];
	int nres = O.compare_url ? 2 : 1;
	for (int i = 0; i < nres; i++) {
		const struct target *t = i ? &t2 : t1p;
		say("%s: %s, %ld clients%s, %d worker%s\n", scenario_names[O.scenario], t->url, O.n,
		    O.scenario == SC_BROADCAST ? " + publishers" : "", K, K > 1 ? "s" : "");
		run_once(t, i ? O.cpids : O.pids, i ? O.ncpids : O.npids, K, &R[i]);
		if (!O.quiet)
			print_summary(stdout, &R[i]);
		if (R[i].interrupted && i == 0)
			break;
		if (i + 1 < nres)
			settle_first(t);
	}
	if (R[0].interrupted)
		nres = 1;

	struct jb j = {0};
	jp(&j,
	   "{\"tool\":\"phx-c-loadgen\",\"scenario\":\"%s\",\"vsn\":%d,\"transport\":\"%s\","
	   "\"pub_transport\":\"%s\",\"topics\":[",
	   scenario_names[O.scenario], O.vsn, transport_names[O.transport],
	   transport_names[O.pub_transport]);
	for (int i = 0; i < O.ntopics; i++) {
		if (i)
			jp(&j, ",");
		jstr(&j, O.topics[i]);
	}
	jp(&j, "],\"pub_url\":");
	if (O.pub_url)
		jstr(&j, O.pub_url);
	else
		jp(&j, "null");
	jp(&j,
	   ",\"duration_s\":%.3f,\"rate_per_pub\":%.3f,\"window\":%d,\"body_size\":%d,"
	   "\"connect_rate_target\":%.1f,\"limits\":[",
	   O.duration, O.rate, O.window, O.size, O.connect_rate);
	for (int i = 0; i < nlimit_notes; i++) {
		if (i)
			jp(&j, ",");
		jstr(&j, limit_notes[i]);
	}
	jp(&j, "],");
	json_result(&j, &R[0]);
	if (nres == 2) {
		jp(&j, ",\"compare\":{");
		json_result(&j, &R[1]);
		jp(&j, "},\"ratios\":{");
		if (!O.quiet)
			printf("\nratios (%s / %s):\n", t2.url, t1p->url);
		int first = 1;
		for (size_t m = 0; m < sizeof metrics / sizeof metrics[0]; m++) {
			if (metrics[m].scen >= 0 && metrics[m].scen != O.scenario)
				continue;
			double a = metrics[m].get(&R[0]), b = metrics[m].get(&R[1]);
			if (!(a > 0) || b < 0)
				continue;
			jp(&j, "%s\"%s\":%.4f", first ? "" : ",", metrics[m].name, b / a);
			first = 0;
			if (!O.quiet)
				printf("  %-22s %12.3f %12.3f   x%.3f\n", metrics[m].name, a, b,
				       b / a);
		}
		jp(&j, "}");
	}
	if (nlimit_notes && !O.quiet) {
		printf("  limits      ");
		for (int i = 0; i < nlimit_notes; i++)
			printf("%s%s", i ? "; " : "", limit_notes[i]);
		printf("\n");
	}
	jp(&j, "}");
	printf("%s\n", j.p);
	if (O.json_path) {
		FILE *f = fopen(O.json_path, "w");
		if (!f || fprintf(f, "%s\n", j.p) < 0 || fclose(f))
			fprintf(stderr, "loadgen: --json %s: %s\n", O.json_path, strerror(errno));
	}
	free(j.p);
	plot(R, nres);
	int ok = 1;
	for (int i = 0; i < nres; i++)
		ok &= R[i].ok;
	return ok ? 0 : 1;
}
