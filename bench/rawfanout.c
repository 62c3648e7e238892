/*
 * bench/rawfanout: the raw fan-out reference.  What this machine can do at
 * all for a broadcast, with no protocol and no framework: a server that
 * accepts N TCP clients on loopback and, for each of M messages, send()s one
 * fixed-size payload to every client with a plain blocking send() per client;
 * the clients live in a forked process that receives on one epoll loop and
 * timestamps every payload.  By default both sides are single processes, as a
 * server node and the load generator are in bench/loadgen runs, so the
 * figures are directly comparable: deliveries/s, end-to-end latency (send ->
 * receive of one payload) and fan-out time (start of a message's send loop ->
 * its last receipt), in the same histogram (bench/hist.h) as bench/loadgen.
 *
 * -p P splits the same fan-out over P server processes, as a cluster of P
 * nodes does: server i listens on its own port and sends every message to its
 * N/P clients (the first N mod P servers one more), which live in a client
 * process of their own (P client processes: one process holds at most the
 * open-file limit of sockets).  Every server and client process is set up
 * first; then the parent starts all of them at once (GO, with one common
 * start time that paces every server).  A message's fan-out time is then its
 * latest receipt by any client of any server - the earliest start of its send
 * loops.  -p 1 (the default) is the single server of the first paragraph.
 *
 * A payload is --size bytes (default 80, about a V2 new_msg frame of the
 * reference app): an 8-byte sequence number, the 8-byte CLOCK_MONOTONIC send
 * time, padding.  Messages go flat out (blocking send() is the only back
 * pressure) or at --rate R messages/s.  --batch B sends B consecutive
 * messages per send() call, as a server that coalesces the frames queued for
 * one socket into one write does (B = 1, the default, is one send() per
 * message per client).  Loss is counted (TCP makes it 0 unless the run times
 * out).  N / P is capped by the open-file limit of one process.
 *
 *   rawfanout [-n N] [-m M] [-p P] [--size B] [--rate R] [--batch B] [--json FILE] [--quiet]
 *
 * Prints a human summary and one JSON line with every figure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/hist.h"
#include "bench/util.h"

#define FD_RESERVE 64
#define MAX_SIZE 65536
#define MAX_SEND (1 << 20) /* bytes in one send(): batch * size */
#define MAX_PROCS 64
#define MAX_MESSAGES_MULTI 1000000 /* -p > 1: per-message arrays go through pipes */
#define IDLE_TIMEOUT_NS 10000000000LL

/* The options: set once by main before any fork, read-only afterwards (every
 * process of a run reads its copy). */
static long opt_n = 1000, opt_m = 1000;
static int opt_size = 80, opt_quiet, opt_batch = 1, opt_procs = 1;
static double opt_rate;
static const char *opt_json;

/* What one client process reports (owned by it; copied through its result
 * pipe to the parent, followed by its per-message arrays last[M], sent[M]). */
struct results {
	uint64_t deliveries, bad;
	int64_t first_recv, last_recv;
	int timed_out;
	int64_t cpu_us; /* this client process's CPU time from GO to its last receipt */
	hist lat;
};

/* What one server process reports (owned by it; copied to the parent). */
struct sresults {
	int64_t t_first, t_done; /* start of the first send loop, end of the last */
	int64_t cpu_us;          /* this server process's CPU time over its send loops */
	hist send_loop;          /* how long one send() loop over its clients took */
};

static void
die(const char *what)
{
	fprintf(stderr, "rawfanout: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int
read_all(int fd, void *p, size_t n)
{
	char *s = p;
	while (n) {
		ssize_t r = read(fd, s, n);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		s += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Client process: connect n sockets to addr, say ready, wait for GO, receive
 * everything, report (results, then last[M] and sent[M]). */
static void
clients(long n, const struct sockaddr_in *addr, int ready_fd, int go_fd, int result_fd)
{
	int *fds = calloc((size_t)n, sizeof(int));
	uint8_t *part = calloc((size_t)n, (size_t)opt_size); /* partial payloads */
	uint32_t *have = calloc((size_t)n, sizeof(uint32_t));
	int64_t *last = calloc((size_t)opt_m, sizeof(int64_t)); /* latest receipt per message */
	int64_t *sent = calloc((size_t)opt_m, sizeof(int64_t)); /* earliest send time seen */
	struct results *res = calloc(1, sizeof *res);
	if (!fds || !part || !have || !last || !sent || !res)
		die("calloc");
	hist_init(&res->lat);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	for (long i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die("socket");
		if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0)
			die("connect");
		fcntl(fd, F_SETFL, O_NONBLOCK);
		fds[i] = fd;
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			die("epoll_ctl");
	}
	char one = 1;
	if (write_all(ready_fd, &one, 1))
		die("ready pipe");
	int64_t t0;
	if (read_all(go_fd, &t0, sizeof t0))
		_exit(3); /* the parent gave up */

	int64_t cpu_go = cpu_self_us();
	uint64_t want = (uint64_t)n * (uint64_t)opt_m;
	static uint8_t buf[256 * 1024];
	struct epoll_event evs[512];
	int64_t idle_since = now_ns();
	while (res->deliveries + res->bad < want) {
		int k = epoll_wait(ep, evs, 512, 1000);
		if (k < 0 && errno != EINTR)
			die("epoll_wait");
		if (k <= 0) {
			if (now_ns() - idle_since > IDLE_TIMEOUT_NS) {
				res->timed_out = 1;
				break;
			}
			continue;
		}
		idle_since = now_ns();
		for (int e = 0; e < k; e++) {
			long i = (long)evs[e].data.u64;
			ssize_t r = recv(fds[i], buf, sizeof buf, 0);
			if (r <= 0)
				continue;
			int64_t now = now_ns();
			if (!res->first_recv)
				res->first_recv = now;
			res->last_recv = now;
			uint8_t *p = buf, *end = buf + r;
			uint8_t *pp = part + (size_t)i * (size_t)opt_size;
			while (p < end) {
				size_t take = (size_t)opt_size - have[i];
				if (take > (size_t)(end - p))
					take = (size_t)(end - p);
				memcpy(pp + have[i], p, take);
				have[i] += (uint32_t)take;
				p += take;
				if (have[i] < (uint32_t)opt_size)
					break;
				have[i] = 0;
				uint64_t seq;
				int64_t ts;
				memcpy(&seq, pp, 8);
				memcpy(&ts, pp + 8, 8);
				if (seq >= (uint64_t)opt_m) {
					res->bad++;
					continue;
				}
				res->deliveries++;
				hist_record(&res->lat, (uint64_t)(now > ts ? now - ts : 0));
				if (!sent[seq] || ts < sent[seq])
					sent[seq] = ts;
				if (now > last[seq])
					last[seq] = now;
			}
		}
	}
	res->cpu_us = cpu_self_us() - cpu_go;
	if (write_all(result_fd, res, sizeof *res) ||
	    write_all(result_fd, last, (size_t)opt_m * sizeof(int64_t)) ||
	    write_all(result_fd, sent, (size_t)opt_m * sizeof(int64_t)))
		die("result pipe");
	_exit(0);
}

/* Server process: accept n clients on ls, say so, wait for GO (the common
 * start time t0), send every message to every client, report. */
static void
server(long n, int ls, int ready_fd, int go_fd, int result_fd)
{
	int *fds = calloc((size_t)n, sizeof(int));
	struct sresults *res = calloc(1, sizeof *res);
	if (!fds || !res)
		die("calloc");
	for (long i = 0; i < n; i++) {
		int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR) {
				i--;
				continue;
			}
			die("accept");
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		fds[i] = fd;
	}
	close(ls);
	char one = 1;
	if (write_all(ready_fd, &one, 1))
		die("ready pipe");
	int64_t t0;
	if (read_all(go_fd, &t0, sizeof t0))
		_exit(3);

	static uint8_t payload[MAX_SEND];
	memset(payload, 'x', sizeof payload);
	hist_init(&res->send_loop);
	int64_t cpu_go = cpu_self_us();
	res->t_first = now_ns();
	for (long m = 0; m < opt_m; m += opt_batch) {
		if (opt_rate > 0) {
			int64_t due = t0 + (int64_t)((double)m * 1e9 / opt_rate), now = now_ns();
			if (due > now) {
				struct timespec ts = {(time_t)((due - now) / 1000000000),
				                      (long)((due - now) % 1000000000)};
				nanosleep(&ts, NULL);
			}
		}
		int64_t t = now_ns();
		if (m == 0)
			res->t_first = t;
		long nb = opt_m - m < opt_batch ? opt_m - m : opt_batch;
		for (long b = 0; b < nb; b++) {
			uint64_t seq = (uint64_t)(m + b);
			memcpy(payload + b * opt_size, &seq, 8);
			memcpy(payload + b * opt_size + 8, &t, 8);
		}
		size_t len = (size_t)nb * (size_t)opt_size;
		for (long i = 0; i < n; i++) {
			size_t off = 0;
			while (off < len) {
				ssize_t r = send(fds[i], payload + off, len - off, MSG_NOSIGNAL);
				if (r < 0) {
					if (errno == EINTR)
						continue;
					die("send");
				}
				off += (size_t)r;
			}
		}
		hist_record(&res->send_loop, (uint64_t)(now_ns() - t));
	}
	res->t_done = now_ns();
	res->cpu_us = cpu_self_us() - cpu_go;
	if (write_all(result_fd, res, sizeof *res))
		die("result pipe");
	/* Hold the sockets until the parent has every client's report (it then
	 * closes the GO pipe), so that closing them does not compete with the
	 * clients still receiving. */
	char c;
	while (read(go_fd, &c, 1) < 0 && errno == EINTR)
		;
	_exit(0);
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: rawfanout [-n N] [-m M] [-p P] [--size B] [--rate R] [--json FILE] "
	        "[--quiet]\n"
	        "  -n N          clients (default 1000; N/P capped by the open-file limit)\n"
	        "  -m M          messages (default 1000)\n"
	        "  -p P          server processes, each with its own N/P clients in a client\n"
	        "                process of its own (default 1; at most %d)\n"
	        "  --size B      payload bytes, 16..65536 (default 80)\n"
	        "  --rate R      messages/s; 0 = flat out (default 0)\n"
	        "  --batch B     messages per send() call (default 1)\n"
	        "  --json FILE   also write the JSON line to FILE\n"
	        "  --quiet       print only the JSON line\n",
	        MAX_PROCS);
}

static void
print_pcts(const char *label, const hist *h)
{
	printf("  %-11s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms  (n %" PRIu64 ")\n",
	       label, hist_percentile(h, 50) / 1e6, hist_percentile(h, 90) / 1e6,
	       hist_percentile(h, 99) / 1e6, hist_percentile(h, 99.9) / 1e6, (double)h->max / 1e6,
	       h->count);
}

static int
jhist(char *out, size_t cap, const char *name, const hist *h)
{
	return snprintf(out, cap,
	                "\"%s\":{\"count\":%" PRIu64 ",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
	                "\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f}",
	                name, h->count, hist_percentile(h, 50) / 1e6, hist_percentile(h, 90) / 1e6,
	                hist_percentile(h, 99) / 1e6, hist_percentile(h, 99.9) / 1e6,
	                (double)h->max / 1e6, hist_mean(h) / 1e6);
}

/* Where each side's process i connects / listens, and how many clients it has:
 * set by main before the forks, read-only afterwards. */
static struct sockaddr_in g_addr[MAX_PROCS];
static long g_count[MAX_PROCS];
/* The "set up" pipes of both sides ({read, write} each), so that a child
 * keeps only its own side's write end: a process that dies before saying
 * ready then ends the parent's wait with EOF. Set by main before the forks. */
static int g_ready[2][2];

/* The processes of a run, as the parent sees them (owned by main). */
struct proc {
	pid_t pid;
	int go, result; /* write end of its GO pipe, read end of its result pipe */
};

/* Forks one side's process i; fn runs in the child and never returns. */
static struct proc
spawn(int i, int ready_w, struct proc *all, int nall, int ls_keep, int *ls, int nls,
      void (*fn)(int i, int ready, int go, int result, int ls))
{
	int go[2], result[2];
	if (pipe2(go, O_CLOEXEC) || pipe2(result, O_CLOEXEC))
		die("pipe");
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		for (int j = 0; j < nall; j++) {
			close(all[j].go);
			close(all[j].result);
		}
		for (int j = 0; j < nls; j++)
			if (j != ls_keep)
				close(ls[j]);
		close(go[1]);
		close(result[0]);
		for (int s = 0; s < 2; s++) {
			close(g_ready[s][0]);
			if (g_ready[s][1] != ready_w)
				close(g_ready[s][1]);
		}
		fn(i, ready_w, go[0], result[1], ls_keep >= 0 ? ls[ls_keep] : -1);
		_exit(0);
	}
	close(go[0]);
	close(result[1]);
	return (struct proc){.pid = pid, .go = go[1], .result = result[0]};
}

static void
client_main(int i, int ready, int go, int result, int ls)
{
	(void)ls;
	clients(g_count[i], &g_addr[i], ready, go, result);
}

static void
server_main(int i, int ready, int go, int result, int ls)
{
	server(g_count[i], ls, ready, go, result);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"size", 1, 0, 's'},  {"rate", 1, 0, 'r'}, {"batch", 1, 0, 'b'}, {"json", 1, 0, 'j'},
	    {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "n:m:p:h", lo, NULL)) != -1) {
		switch (ch) {
		case 'n':
			opt_n = atol(optarg);
			break;
		case 'm':
			opt_m = atol(optarg);
			break;
		case 'p':
			opt_procs = atoi(optarg);
			break;
		case 's':
			opt_size = atoi(optarg);
			break;
		case 'r':
			opt_rate = atof(optarg);
			break;
		case 'b':
			opt_batch = atoi(optarg);
			break;
		case 'j':
			opt_json = optarg;
			break;
		case 'q':
			opt_quiet = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || opt_n < 1 || opt_m < 1 || opt_m > 100000000 || opt_size < 16 ||
	    opt_size > MAX_SIZE || opt_rate < 0 || opt_batch < 1 ||
	    (long)opt_batch * opt_size > MAX_SEND || opt_procs < 1 || opt_procs > MAX_PROCS ||
	    opt_procs > opt_n || (opt_procs > 1 && opt_m > MAX_MESSAGES_MULTI)) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	const int P = opt_procs;

	/* Each process holds N/P sockets: raise the open-file limit, cap N to it. */
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	char limit[160] = "";
	long per_cap = (long)rl.rlim_cur - FD_RESERVE;
	if ((opt_n + P - 1) / P > per_cap) {
		long n = per_cap * P;
		snprintf(limit, sizeof limit,
		         "N capped from %ld to %ld by %lu open files per process (%d per side)",
		         opt_n, n, (unsigned long)rl.rlim_cur, P);
		if (!opt_quiet)
			fprintf(stderr, "rawfanout: %s\n", limit);
		opt_n = n;
	}

	int ls[MAX_PROCS];
	for (int i = 0; i < P; i++) {
		g_count[i] = opt_n / P + (i < opt_n % P);
		ls[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (ls[i] < 0)
			die("socket");
		struct sockaddr_in *a = &g_addr[i];
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t al = sizeof *a;
		if (bind(ls[i], (struct sockaddr *)a, sizeof *a) < 0 || listen(ls[i], 4096) < 0 ||
		    getsockname(ls[i], (struct sockaddr *)a, &al) < 0)
			die("listen");
	}

	/* One pipe per side on which each process says it is set up (one byte). */
	int *cready = g_ready[0], *sready = g_ready[1];
	if (pipe2(cready, O_CLOEXEC) || pipe2(sready, O_CLOEXEC))
		die("pipe");
	struct proc procs[2 * MAX_PROCS]; /* clients 0..P-1, then servers */
	int np = 0;
	for (int i = 0; i < P; i++, np++)
		procs[np] = spawn(i, cready[1], procs, np, -1, ls, P, client_main);
	for (int i = 0; i < P; i++, np++)
		procs[np] = spawn(i, sready[1], procs, np, i, ls, P, server_main);
	close(cready[1]);
	close(sready[1]);
	for (int i = 0; i < P; i++)
		close(ls[i]);
	for (int i = 0; i < P; i++) {
		char c;
		if (read_all(cready[0], &c, 1))
			die("a client process failed");
		if (read_all(sready[0], &c, 1))
			die("a server process failed");
	}

	/* GO: clients first (they start their idle clock), then every server. */
	int64_t t0 = now_ns();
	for (int i = 0; i < np; i++)
		if (write_all(procs[i].go, &t0, sizeof t0))
			die("go pipe");

	/* Servers' reports (small: they fit in the pipe), then the clients'. */
	hist send_loop;
	hist_init(&send_loop);
	int64_t t_first = 0, t_done = 0, server_cpu_us = 0, client_cpu_us = 0;
	struct sresults *sr = calloc(1, sizeof *sr);
	struct results *res = calloc(1, sizeof *res), *cr = calloc(1, sizeof *cr);
	int64_t *last = calloc((size_t)opt_m, sizeof(int64_t)),
	        *sent = calloc((size_t)opt_m, sizeof(int64_t)),
	        *tmp = calloc((size_t)opt_m, sizeof(int64_t));
	if (!sr || !res || !cr || !last || !sent || !tmp)
		die("calloc");
	hist_init(&res->lat);
	for (int i = P; i < np; i++) {
		if (read_all(procs[i].result, sr, sizeof *sr))
			die("a server process failed");
		hist_merge(&send_loop, &sr->send_loop);
		server_cpu_us += sr->cpu_us;
		if (!t_first || sr->t_first < t_first)
			t_first = sr->t_first;
		if (sr->t_done > t_done)
			t_done = sr->t_done;
	}
	for (int i = 0; i < P; i++) {
		if (read_all(procs[i].result, cr, sizeof *cr))
			die("a client process failed");
		res->deliveries += cr->deliveries;
		res->bad += cr->bad;
		res->timed_out |= cr->timed_out;
		client_cpu_us += cr->cpu_us;
		if (cr->first_recv && (!res->first_recv || cr->first_recv < res->first_recv))
			res->first_recv = cr->first_recv;
		if (cr->last_recv > res->last_recv)
			res->last_recv = cr->last_recv;
		hist_merge(&res->lat, &cr->lat);
		if (read_all(procs[i].result, tmp, (size_t)opt_m * sizeof(int64_t)))
			die("a client process failed");
		for (long m = 0; m < opt_m; m++)
			if (tmp[m] > last[m])
				last[m] = tmp[m];
		if (read_all(procs[i].result, tmp, (size_t)opt_m * sizeof(int64_t)))
			die("a client process failed");
		for (long m = 0; m < opt_m; m++)
			if (tmp[m] && (!sent[m] || tmp[m] < sent[m]))
				sent[m] = tmp[m];
	}
	hist fan;
	hist_init(&fan);
	for (long m = 0; m < opt_m; m++)
		if (last[m] && sent[m])
			hist_record(&fan, (uint64_t)(last[m] > sent[m] ? last[m] - sent[m] : 0));
	int failed_procs = 0;
	for (int i = 0; i < np; i++) {
		int st;
		close(procs[i].go);
		close(procs[i].result);
		if (waitpid(procs[i].pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			failed_procs++;
	}

	uint64_t want = (uint64_t)opt_n * (uint64_t)opt_m;
	double span = res->last_recv > t_first ? (double)(res->last_recv - t_first) / 1e9 : 0;
	/* From the common start time GO gave every server: no paced message is
	 * sent before t0 + m / rate, however late a server started its loop. */
	double since_go = res->last_recv > t0 ? (double)(res->last_recv - t0) / 1e9 : 0;
	double dps = span > 0 ? (double)res->deliveries / span : 0;
	double sps = t_done > t_first ? (double)want / ((double)(t_done - t_first) / 1e9) : 0;
	uint64_t lost = want > res->deliveries ? want - res->deliveries : 0;
	/* CPU per delivery: what the servers (and the clients) spent, summed over
	 * their processes, divided by the deliveries; comparable with a node's
	 * CPU per delivery in a loadgen run. */
	double scpu = res->deliveries ? (double)server_cpu_us / (double)res->deliveries : 0;
	double ccpu = res->deliveries ? (double)client_cpu_us / (double)res->deliveries : 0;
	if (!opt_quiet) {
		printf("\nrawfanout: %ld clients x %ld messages of %d bytes, %s, %d message%s per "
		       "send() (plain blocking send() per client, loopback)",
		       opt_n, opt_m, opt_size, opt_rate > 0 ? "paced" : "flat out", opt_batch,
		       opt_batch > 1 ? "s" : "");
		if (P > 1)
			printf(", %d server processes of %ld-%ld clients", P, g_count[P - 1],
			       g_count[0]);
		printf("\n");
		printf("  deliveries  %" PRIu64 " of %" PRIu64 " in %.3f s: %.0f /s%s\n",
		       res->deliveries, want, span, dps, res->timed_out ? " (timed out)" : "");
		printf("  sending     %.0f deliveries/s handed to send(); one send loop over %s:\n",
		       sps, P > 1 ? "one server's clients" : "every client");
		print_pcts("send loop", &send_loop);
		print_pcts("latency", &res->lat);
		print_pcts("fan-out", &fan);
		printf("  cpu         servers %.2f us, clients %.2f us per delivery\n", scpu, ccpu);
		printf("  loss        lost %" PRIu64 ", malformed %" PRIu64 "\n", lost, res->bad);
		if (limit[0])
			printf("  limits      %s\n", limit);
		if (failed_procs)
			printf("  processes   %d of %d did not exit 0\n", failed_procs, np);
	}
	char j[4096];
	int n = snprintf(
	    j, sizeof j,
	    "{\"tool\":\"phx-c-rawfanout\",\"n\":%ld,\"messages\":%ld,\"size\":%d,"
	    "\"batch\":%d,\"procs\":%d,\"rate\":%.3f,\"expected\":%" PRIu64
	    ",\"deliveries\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"malformed\":%" PRIu64
	    ",\"timed_out\":%s,\"seconds\":%.6f,\"deliveries_per_s\":%.1f,"
	    "\"sends_per_s\":%.1f,\"since_go_s\":%.6f,\"server_cpu_us_per_delivery\":%.3f,"
	    "\"client_cpu_us_per_delivery\":%.3f,",
	    opt_n, opt_m, opt_size, opt_batch, P, opt_rate, want, res->deliveries, lost, res->bad,
	    res->timed_out ? "true" : "false", span, dps, sps, since_go, scpu, ccpu);
	n += jhist(j + n, sizeof j - (size_t)n, "send_loop_ms", &send_loop);
	n += snprintf(j + n, sizeof j - (size_t)n, ",");
	n += jhist(j + n, sizeof j - (size_t)n, "latency_ms", &res->lat);
	n += snprintf(j + n, sizeof j - (size_t)n, ",");
	n += jhist(j + n, sizeof j - (size_t)n, "fanout_ms", &fan);
	snprintf(j + n, sizeof j - (size_t)n, ",\"limits\":[%s%s%s]}", limit[0] ? "\"" : "", limit,
	         limit[0] ? "\"" : "");
	printf("%s\n", j);
	if (opt_json) {
		FILE *f = fopen(opt_json, "w");
		if (!f || fprintf(f, "%s\n", j) < 0 || fclose(f))
			fprintf(stderr, "rawfanout: --json %s: %s\n", opt_json, strerror(errno));
	}
	int rc = lost || res->timed_out || failed_procs ? 1 : 0;
	free(last);
	free(sent);
	free(tmp);
	free(sr);
	free(cr);
	free(res);
	return rc;
}
