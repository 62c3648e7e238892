/*
 * bench/rawfanout: the raw fan-out reference.  What this machine can do at
 * all for a broadcast, with no protocol and no framework: a server that
 * accepts N TCP clients on loopback and, for each of M messages, send()s one
 * fixed-size payload to every client with a plain blocking send() per client;
 * the clients live in a forked child that receives on one epoll loop and
 * timestamps every payload.  Both sides are single processes, as a server
 * node and the load generator are in bench/loadgen runs, so the figures are
 * directly comparable: deliveries/s, end-to-end latency (send -> receive of
 * one payload) and fan-out time (start of a message's send loop -> its last
 * receipt), in the same histogram (bench/hist.h) as bench/loadgen.
 *
 * A payload is --size bytes (default 80, about a V2 new_msg frame of the
 * reference app): an 8-byte sequence number, the 8-byte CLOCK_MONOTONIC send
 * time, padding.  Messages go flat out (blocking send() is the only back
 * pressure) or at --rate R messages/s.  --batch B sends B consecutive
 * messages per send() call, as a server that coalesces the frames queued for
 * one socket into one write does (B = 1, the default, is one send() per
 * message per client).  Loss is counted (TCP makes it 0 unless the run times
 * out).  N is capped by the open-file limit of one process.
 *
 *   rawfanout [-n N] [-m M] [--size B] [--rate R] [--batch B] [--json FILE] [--quiet]
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
#define IDLE_TIMEOUT_NS 10000000000LL

static long opt_n = 1000, opt_m = 1000;
static int opt_size = 80, opt_quiet, opt_batch = 1;
static double opt_rate;
static const char *opt_json;

/* What the receiving child reports. */
struct results {
	uint64_t deliveries, bad;
	int64_t first_recv, last_recv;
	int timed_out;
	hist lat, fan;
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

/* The clients: connect N sockets, say ready, receive everything, report. */
static void
clients(const struct sockaddr_in *addr, int ready_fd, int result_fd)
{
	int *fds = calloc((size_t)opt_n, sizeof(int));
	uint8_t *part = calloc((size_t)opt_n, (size_t)opt_size); /* partial payloads */
	uint32_t *have = calloc((size_t)opt_n, sizeof(uint32_t));
	int64_t *last = calloc((size_t)opt_m, sizeof(int64_t)); /* latest receipt per message */
	int64_t *sent = calloc((size_t)opt_m, sizeof(int64_t)); /* send time per message */
	struct results *res = calloc(1, sizeof *res);
	if (!fds || !part || !have || !last || !sent || !res)
		die("calloc");
	hist_init(&res->lat);
	hist_init(&res->fan);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	for (long i = 0; i < opt_n; i++) {
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

	uint64_t want = (uint64_t)opt_n * (uint64_t)opt_m;
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
				sent[seq] = ts;
				if (now > last[seq])
					last[seq] = now;
			}
		}
	}
	for (long m = 0; m < opt_m; m++)
		if (last[m])
			hist_record(&res->fan, (uint64_t)(last[m] - sent[m]));
	if (write_all(result_fd, res, sizeof *res))
		die("result pipe");
	_exit(0);
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: rawfanout [-n N] [-m M] [--size B] [--rate R] [--json FILE] [--quiet]\n"
	           "  -n N          clients (default 1000; capped by the open-file limit)\n"
	           "  -m M          messages (default 1000)\n"
	           "  --size B      payload bytes, 16..65536 (default 80)\n"
	           "  --rate R      messages/s; 0 = flat out (default 0)\n"
	           "  --batch B     messages per send() call (default 1)\n"
	           "  --json FILE   also write the JSON line to FILE\n"
	           "  --quiet       print only the JSON line\n");
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

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"size", 1, 0, 's'},  {"rate", 1, 0, 'r'}, {"batch", 1, 0, 'b'}, {"json", 1, 0, 'j'},
	    {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "n:m:h", lo, NULL)) != -1) {
		switch (ch) {
		case 'n':
			opt_n = atol(optarg);
			break;
		case 'm':
			opt_m = atol(optarg);
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
	    (long)opt_batch * opt_size > MAX_SEND) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* One process holds N sockets: raise the open-file limit, cap N to it. */
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	char limit[128] = "";
	if ((rlim_t)opt_n + FD_RESERVE > rl.rlim_cur) {
		long n = (long)rl.rlim_cur - FD_RESERVE;
		snprintf(limit, sizeof limit,
		         "N capped from %ld to %ld by %lu open files per process", opt_n, n,
		         (unsigned long)rl.rlim_cur);
		if (!opt_quiet)
			fprintf(stderr, "rawfanout: %s\n", limit);
		opt_n = n;
	}

	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0)
		die("socket");
	struct sockaddr_in addr = {.sin_family = AF_INET};
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t al = sizeof addr;
	if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(ls, 4096) < 0 ||
	    getsockname(ls, (struct sockaddr *)&addr, &al) < 0)
		die("listen");

	int ready[2], result[2];
	if (pipe2(ready, O_CLOEXEC) || pipe2(result, O_CLOEXEC))
		die("pipe");
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(ls);
		close(ready[0]);
		close(result[0]);
		clients(&addr, ready[1], result[1]);
	}
	close(ready[1]);
	close(result[1]);

	int *fds = calloc((size_t)opt_n, sizeof(int));
	if (!fds)
		die("calloc");
	for (long i = 0; i < opt_n; i++) {
		int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			die("accept");
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		fds[i] = fd;
	}
	char c;
	if (read_all(ready[0], &c, 1))
		die("clients failed");

	static uint8_t payload[MAX_SEND];
	memset(payload, 'x', sizeof payload);
	int64_t t_first = now_ns(), t_done;
	hist send_loop; /* how long one send() loop over every client took */
	hist_init(&send_loop);
	for (long m = 0; m < opt_m; m += opt_batch) {
		if (opt_rate > 0) {
			int64_t due = t_first + (int64_t)((double)m * 1e9 / opt_rate),
			        now = now_ns();
			if (due > now) {
				struct timespec ts = {(time_t)((due - now) / 1000000000),
				                      (long)((due - now) % 1000000000)};
				nanosleep(&ts, NULL);
			}
		}
		int64_t t = now_ns();
		long nb = opt_m - m < opt_batch ? opt_m - m : opt_batch;
		for (long b = 0; b < nb; b++) {
			uint64_t seq = (uint64_t)(m + b);
			memcpy(payload + b * opt_size, &seq, 8);
			memcpy(payload + b * opt_size + 8, &t, 8);
		}
		size_t len = (size_t)nb * (size_t)opt_size;
		for (long i = 0; i < opt_n; i++) {
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
		hist_record(&send_loop, (uint64_t)(now_ns() - t));
	}
	t_done = now_ns();

	struct results *res = calloc(1, sizeof *res);
	if (!res)
		die("calloc");
	if (read_all(result[0], res, sizeof *res))
		die("clients failed");
	int st;
	waitpid(pid, &st, 0);

	uint64_t want = (uint64_t)opt_n * (uint64_t)opt_m;
	double span = res->last_recv > t_first ? (double)(res->last_recv - t_first) / 1e9 : 0;
	double dps = span > 0 ? (double)res->deliveries / span : 0;
	double sps = t_done > t_first ? (double)want / ((double)(t_done - t_first) / 1e9) : 0;
	uint64_t lost = want > res->deliveries ? want - res->deliveries : 0;
	if (!opt_quiet) {
		printf("\nrawfanout: %ld clients x %ld messages of %d bytes, %s, %d message%s per "
		       "send() (plain blocking send() per client, loopback)\n",
		       opt_n, opt_m, opt_size, opt_rate > 0 ? "paced" : "flat out", opt_batch,
		       opt_batch > 1 ? "s" : "");
		printf("  deliveries  %" PRIu64 " of %" PRIu64 " in %.3f s: %.0f /s%s\n",
		       res->deliveries, want, span, dps, res->timed_out ? " (timed out)" : "");
		printf("  sending     %.0f deliveries/s handed to send(); one send loop over every "
		       "client:\n",
		       sps);
		print_pcts("send loop", &send_loop);
		print_pcts("latency", &res->lat);
		print_pcts("fan-out", &res->fan);
		printf("  loss        lost %" PRIu64 ", malformed %" PRIu64 "\n", lost, res->bad);
		if (limit[0])
			printf("  limits      %s\n", limit);
	}
	char j[4096];
	int n =
	    snprintf(j, sizeof j,
	             "{\"tool\":\"phx-c-rawfanout\",\"n\":%ld,\"messages\":%ld,\"size\":%d,"
	             "\"batch\":%d,\"rate\":%.3f,\"expected\":%" PRIu64 ",\"deliveries\":%" PRIu64
	             ",\"lost\":%" PRIu64 ",\"malformed\":%" PRIu64 ",\"timed_out\":%s,"
	             "\"seconds\":%.6f,\"deliveries_per_s\":%.1f,\"sends_per_s\":%.1f,",
	             opt_n, opt_m, opt_size, opt_batch, opt_rate, want, res->deliveries, lost,
	             res->bad, res->timed_out ? "true" : "false", span, dps, sps);
	n += jhist(j + n, sizeof j - (size_t)n, "send_loop_ms", &send_loop);
	n += snprintf(j + n, sizeof j - (size_t)n, ",");
	n += jhist(j + n, sizeof j - (size_t)n, "latency_ms", &res->lat);
	n += snprintf(j + n, sizeof j - (size_t)n, ",");
	n += jhist(j + n, sizeof j - (size_t)n, "fanout_ms", &res->fan);
	snprintf(j + n, sizeof j - (size_t)n, ",\"limits\":[%s%s%s]}", limit[0] ? "\"" : "", limit,
	         limit[0] ? "\"" : "");
	printf("%s\n", j);
	if (opt_json) {
		FILE *f = fopen(opt_json, "w");
		if (!f || fprintf(f, "%s\n", j) < 0 || fclose(f))
			fprintf(stderr, "rawfanout: --json %s: %s\n", opt_json, strerror(errno));
	}
	int rc = lost || res->timed_out ? 1 : 0;
	for (long i = 0; i < opt_n; i++)
		close(fds[i]);
	free(fds);
	free(res);
	return rc;
}
