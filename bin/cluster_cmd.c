/*
 * cluster_cmd.c: the `cluster` command (see cluster_cmd.h): starts N node
 * processes and supervises them.
 *
 * The supervisor is single-threaded and handles signals synchronously:
 * SIGCHLD, SIGINT and SIGTERM are blocked and taken with sigtimedwait, whose
 * timeout is the next restart that is due.  No signal handler runs and no
 * global state is needed.  Children get the original signal mask back
 * before exec.
 */
#include "bin/cluster_cmd.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CC_MAX_NODES 64
#define CC_MAX_PASS 64            /* node options passed through (args) */
#define CC_BACKOFF_MIN_MS 100     /* first restart delay */
#define CC_BACKOFF_MAX_MS 5000    /* longest restart delay */
#define CC_STABLE_MS 30000        /* up this long: the back-off starts over */
#define CC_STOP_TIMEOUT_MS 10000  /* after the nodes' drain timeout: then SIGKILL */
#define CC_DRAIN_TIMEOUT_MS 30000 /* the nodes' default --drain-timeout-ms */
#define CC_DEFAULT_PORT 4000
#define CC_HOST "127.0.0.1"

/* One node: owned by the supervisor (the main thread). */
typedef struct cc_node {
	char name[CL_NAME_MAX];
	char http[96];          /* "http://127.0.0.1:4001", for the log */
	char addr[CL_ADDR_MAX]; /* its --cluster-listen, or the --pubsub URL */
	char port[8];
	char https_port[8];    /* its --https-port, or "" */
	char **argv;           /* the node's command line (NULL-terminated, owned) */
	char *peers;           /* its --peers value (owned), or NULL */
	pid_t pid;             /* 0 while not running */
	int64_t started_ms;    /* when the current pid was started */
	int64_t restart_at_ms; /* pid 0: when to start it again */
	uint32_t backoff_ms;   /* the delay before the next restart */
} cc_node;

/* The command line: the caller's strings, read by the supervisor. */
typedef struct cc_opts {
	int nodes;
	int port;
	int cluster_port; /* 0: port + 1000 */
	int https_port;   /* 0: no HTTPS; node i: https_port + i - 1 (one port: the same) */
	bool one_port;
	const char *pubsub;
	const char *bind; /* a --bind passed through, for the printed URLs */
	const char *pass[CC_MAX_PASS];
	int npass;
	int drain_timeout_ms; /* the nodes' --drain-timeout-ms (a stop waits for it) */
	bool schedulers;      /* --schedulers was given */
	char sched_val[24];   /* else: the cores shared out among the nodes */
} cc_opts;

static int64_t
cc_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *
cc_prog(const app_def *app)
{
	return app->name ? app->name : "phx-app";
}

static void
cc_usage(FILE *out, const app_def *app)
{
	const char *p = cc_prog(app);
	fprintf(out,
	        "Usage: %s cluster --nodes N [--port P] [--one-port] [--cluster-port C]\n"
	        "       [--pubsub redis://HOST:PORT] [node options]\n"
	        "\n"
	        "Starts N nodes of one cluster on this machine, as separate processes, and\n"
	        "restarts those that die (after 100 ms, doubling up to 5 s).\n"
	        "\n"
	        "  --nodes N            how many nodes (1..%d)\n"
	        "  --port P             node i listens for HTTP on P+i-1 (default %d)\n"
	        "  --one-port           every node listens on P (--reuse-port)\n"
	        "  --cluster-port C     node i's cluster address is tcp://%s:C+i-1\n"
	        "                       (default P+1000)\n"
	        "  --https-port H       node i also serves HTTPS on H+i-1 (H with\n"
	        "                       --one-port); give --tls-cert and --tls-key too\n"
	        "  --pubsub URL         link the nodes through this redis-server instead\n"
	        "  node options         passed to every node (see %s --help); not\n"
	        "                       --name, --cluster-listen, --peers, --seed, --reuse-port\n"
	        "\n"
	        "Node i is named node<i>@%s.  SIGINT/SIGTERM stop every node (SIGTERM:\n"
	        "each drains its sockets first); a second signal stops them at once; SIGKILL\n"
	        "%d s after their drain timeout.  A node that exits 0 (a SIGTERM to its pid:\n"
	        "one step of a rolling restart) is started again after 100 ms.\n",
	        p, CC_MAX_NODES, CC_DEFAULT_PORT, CC_HOST, p, CC_HOST, CC_STOP_TIMEOUT_MS / 1000);
}

static int
cc_usage_error(const app_def *app, const char *fmt, const char *arg)
{
	fprintf(stderr, "%s cluster: ", cc_prog(app));
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '%s cluster --help'.\n", cc_prog(app));
	return APP_EXIT_USAGE;
}

/* Parses argv (argv[1] is "cluster") into o.  Returns -1 to go on, or an
 * exit code (--help, or a usage error after its message). */
static int
cc_parse(int argc, char **argv, const app_def *app, cc_opts *o)
{
	static const char *const refused[] = {
	    "--name",       "--cluster-listen", "--peers", "--seed",
	    "--reuse-port", "--mint-token",     "--salt",  NULL};
	for (int i = 2; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			cc_usage(stdout, app);
			return APP_EXIT_OK;
		}
		if (strncmp(arg, "--", 2) != 0)
			return cc_usage_error(app, "unexpected argument '%s'", arg);
		if (strcmp(arg, "--one-port") == 0) {
			o->one_port = true;
			continue;
		}
		const char *eq = strchr(arg, '=');
		size_t flen = eq ? (size_t)(eq - arg) : strlen(arg);
		char flag[64];
		if (flen >= sizeof(flag))
			return cc_usage_error(app, "unknown option '%s'", arg);
		memcpy(flag, arg, flen);
		flag[flen] = '\0';
		for (int k = 0; refused[k]; k++)
			if (strcmp(flag, refused[k]) == 0)
				return cc_usage_error(
				    app, "%s is set by the cluster command for each node", flag);
		const char *val;
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return cc_usage_error(app, "option '%s' needs a value", flag);
			val = argv[++i];
		}
		if (strcmp(flag, "--nodes") == 0) {
			if (app_parse_int(val, 1, CC_MAX_NODES, &o->nodes) < 0)
				return cc_usage_error(app, "bad --nodes '%s' (1..64)", val);
		} else if (strcmp(flag, "--port") == 0) {
			if (app_parse_int(val, 1, 65535, &o->port) < 0)
				return cc_usage_error(app, "bad --port '%s' (1..65535)", val);
		} else if (strcmp(flag, "--https-port") == 0) {
			if (app_parse_int(val, 1, 65535, &o->https_port) < 0)
				return cc_usage_error(app, "bad --https-port '%s' (1..65535)", val);
		} else if (strcmp(flag, "--cluster-port") == 0) {
			if (app_parse_int(val, 1, 65535, &o->cluster_port) < 0)
				return cc_usage_error(app, "bad --cluster-port '%s' (1..65535)",
				                      val);
		} else if (strcmp(flag, "--pubsub") == 0) {
			o->pubsub = val; /* checked by the nodes: a bad URL is their exit 2 */
		} else {
			/* A node option: passed through as given ("--flag value" or
			 * "--flag=value"); the nodes check it (exit 2 stops us). */
			if (o->npass + 2 > CC_MAX_PASS)
				return cc_usage_error(app, "too many node options (at most %s)",
				                      "32");
			if (strcmp(flag, "--bind") == 0)
				o->bind = val;
			if (strcmp(flag, "--schedulers") == 0)
				o->schedulers = true;
			if (strcmp(flag, "--drain-timeout-ms") == 0 &&
			    app_parse_int(val, 0, 3600000, &o->drain_timeout_ms) < 0)
				o->drain_timeout_ms =
				    CC_DRAIN_TIMEOUT_MS; /* the node says exit 2 */
			o->pass[o->npass++] = arg;
			if (!eq)
				o->pass[o->npass++] = val;
		}
	}
	if (o->nodes == 0)
		return cc_usage_error(app, "--nodes N is required%s", "");
	if (!o->schedulers && o->npass + 2 <= CC_MAX_PASS) {
		/* N nodes on C cores: C/N schedulers each (at least one), so that
		 * the nodes do not fight over the cores with idle threads */
		long cores = sysconf(_SC_NPROCESSORS_ONLN);
		long per = cores > o->nodes ? cores / o->nodes : 1;
		snprintf(o->sched_val, sizeof(o->sched_val), "%ld", per);
		o->pass[o->npass++] = "--schedulers";
		o->pass[o->npass++] = o->sched_val;
	}
	if (o->cluster_port == 0)
		o->cluster_port = o->port + 1000 <= 65535 ? o->port + 1000 : o->port - 1000;
	if (!o->one_port && o->port + o->nodes - 1 > 65535)
		return cc_usage_error(app, "--port: the nodes' ports go past 65535%s", "");
	if (o->https_port && !o->one_port && o->https_port + o->nodes - 1 > 65535)
		return cc_usage_error(app, "--https-port: the nodes' ports go past 65535%s", "");
	if (o->https_port) {
		int span = o->one_port ? 0 : o->nodes - 1;
		if (o->port <= o->https_port + span && o->https_port <= o->port + span)
			return cc_usage_error(app, "the HTTP and HTTPS ports overlap%s", "");
	}
	if (!o->pubsub && o->cluster_port + o->nodes - 1 > 65535)
		return cc_usage_error(app, "--cluster-port: the nodes' ports go past 65535%s", "");
	if (!o->pubsub) {
		/* The HTTP and cluster port ranges must not overlap. */
		int hlo = o->port, hhi = o->one_port ? o->port : o->port + o->nodes - 1;
		int clo = o->cluster_port, chi = o->cluster_port + o->nodes - 1;
		if (hlo <= chi && clo <= hhi)
			return cc_usage_error(
			    app,
			    "the HTTP ports and the cluster ports (--cluster-port) "
			    "overlap%s",
			    "");
	}
	return -1;
}

/* Fills nodes[0..n) (names, addresses, command lines).  0, or -1 on OOM. */
static int
cc_prepare(const cc_opts *o, char *argv0, cc_node *nodes)
{
	const char *host = o->bind ? o->bind : CC_HOST;
	for (int i = 0; i < o->nodes; i++) {
		cc_node *n = &nodes[i];
		snprintf(n->name, sizeof(n->name), "node%d@%s", i + 1, CC_HOST);
		int port = o->one_port ? o->port : o->port + i;
		snprintf(n->port, sizeof(n->port), "%d", port);
		if (o->https_port)
			snprintf(n->https_port, sizeof(n->https_port), "%d",
			         o->one_port ? o->https_port : o->https_port + i);
		snprintf(n->http, sizeof(n->http),
		         strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d", host, port);
		if (o->pubsub)
			snprintf(n->addr, sizeof(n->addr), "%s", o->pubsub);
		else
			snprintf(n->addr, sizeof(n->addr), "tcp://%s:%d", CC_HOST,
			         o->cluster_port + i);
		n->backoff_ms = CC_BACKOFF_MIN_MS;
	}
	/* The peers of node i: every other node's address, comma-separated. */
	size_t plen = (size_t)o->nodes * CL_ADDR_MAX + 1;
	for (int i = 0; i < o->nodes; i++) {
		cc_node *n = &nodes[i];
		n->argv = calloc((size_t)(16 + o->npass), sizeof(char *));
		if (!n->argv)
			return -1;
		int a = 0;
		n->argv[a++] = argv0;
		n->argv[a++] = "--name";
		n->argv[a++] = n->name;
		n->argv[a++] = "--port";
		n->argv[a++] = n->port;
		if (o->one_port)
			n->argv[a++] = "--reuse-port";
		if (n->https_port[0]) {
			n->argv[a++] = "--https-port";
			n->argv[a++] = n->https_port;
		}
		if (o->pubsub) {
			n->argv[a++] = "--pubsub";
			n->argv[a++] = n->addr;
		} else {
			n->argv[a++] = "--cluster-listen";
			n->argv[a++] = n->addr;
			if (i > 0) {
				/* the nodes before it: each pair dials once (node 1
				 * none; it learns the others as they dial it) */
				char *peers = n->peers = calloc(1, plen);
				if (!peers)
					return -1;
				for (int j = 0; j < i; j++) {
					if (*peers)
						strcat(peers, ",");
					strcat(peers, nodes[j].addr);
				}
				n->argv[a++] = "--peers";
				n->argv[a++] = peers;
			}
		}
		for (int k = 0; k < o->npass; k++)
			n->argv[a++] = (char *)o->pass[k];
		n->argv[a] = NULL;
	}
	return 0;
}

static void
cc_free(const cc_opts *o, cc_node *nodes)
{
	for (int i = 0; i < o->nodes; i++) {
		free(nodes[i].peers);
		free(nodes[i].argv);
	}
}

/* Starts node n (fork + exec of this executable).  The child restores
 * `orig` (the signal mask before the supervisor blocked its signals) and
 * asks for SIGTERM when the supervisor dies.  0, or -1 (fork failed: the
 * caller schedules another try). */
static int
cc_spawn(cc_node *n, const sigset_t *orig, const char *role)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1); /* the supervisor died before prctl */
		sigprocmask(SIG_SETMASK, orig, NULL);
		execv("/proc/self/exe", n->argv);
		_exit(127);
	}
	n->pid = pid;
	n->started_ms = cc_now_ms();
	printf("%s %s %s %s pid %d%s\n", n->name, n->http,
	       strncmp(n->addr, "redis", 5) == 0 ? "pubsub" : "cluster", n->addr, (int)pid, role);
	fflush(stdout);
	return 0;
}

/* Describes a wait status into buf. */
static const char *
cc_describe(int status, char *buf, size_t cap)
{
	if (WIFEXITED(status))
		snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, cap, "was killed by signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	else
		snprintf(buf, cap, "stopped (status 0x%x)", (unsigned)status);
	return buf;
}

static cc_node *
cc_find(const cc_opts *o, cc_node *nodes, pid_t pid)
{
	for (int i = 0; i < o->nodes; i++)
		if (nodes[i].pid == pid)
			return &nodes[i];
	return NULL;
}

static int
cc_running(const cc_opts *o, const cc_node *nodes)
{
	int k = 0;
	for (int i = 0; i < o->nodes; i++)
		k += nodes[i].pid > 0;
	return k;
}

static void
cc_signal_all(const cc_opts *o, cc_node *nodes, int sig)
{
	for (int i = 0; i < o->nodes; i++)
		if (nodes[i].pid > 0)
			kill(nodes[i].pid, sig);
}

/* Waits for a signal in `set` for at most ms; returns it, or 0 on timeout. */
static int
cc_wait_signal(const sigset_t *set, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	int sig = sigtimedwait(set, NULL, &ts);
	return sig > 0 ? sig : 0;
}

/*
 * Reaps the children that exited.  While running, each death is logged and
 * a restart scheduled; a node that exited 2 (bad command line) sets
 * *usage.  While stopping, deaths are only counted.
 */
static void
cc_reap(const app_def *app, const cc_opts *o, cc_node *nodes, bool stopping, bool *usage)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		cc_node *n = cc_find(o, nodes, pid);
		if (!n)
			continue;
		n->pid = 0;
		if (stopping)
			continue;
		char why[96];
		cc_describe(status, why, sizeof(why));
		int64_t now = cc_now_ms();
		int64_t up = now - n->started_ms;
		if (WIFEXITED(status) && WEXITSTATUS(status) == APP_EXIT_USAGE) {
			fprintf(stderr, "%s cluster: %s (pid %d) %s: a bad node option; stopping\n",
			        cc_prog(app), n->name, (int)pid, why);
			*usage = true;
			continue;
		}
		/* A clean exit (0) is a node stopped on purpose, e.g. a SIGTERM from
		 * outside, one step of a rolling restart: started again at once,
		 * without growing the back-off.  A crash or a kill backs off. */
		bool clean = WIFEXITED(status) && WEXITSTATUS(status) == APP_EXIT_OK;
		if (up >= CC_STABLE_MS || clean)
			n->backoff_ms = CC_BACKOFF_MIN_MS;
		n->restart_at_ms = now + n->backoff_ms;
		fprintf(stderr, "%s cluster: %s (pid %d) %s after %.1f s; restarting in %u ms\n",
		        cc_prog(app), n->name, (int)pid, why, (double)up / 1000.0, n->backoff_ms);
		if (!clean)
			n->backoff_ms = n->backoff_ms * 2 > CC_BACKOFF_MAX_MS ? CC_BACKOFF_MAX_MS
			                                                      : n->backoff_ms * 2;
	}
}

/* Stops every node: `sig` to each (SIGTERM: each drains its sockets, up to
 * its --drain-timeout-ms).  A second SIGINT/SIGTERM is passed on (the nodes
 * stop at once); SIGKILL after the drain timeout + CC_STOP_TIMEOUT_MS, or at
 * a third signal.  Waits for all.  Returns true when none had to be killed. */
static bool
cc_stop_all(const app_def *app, const cc_opts *o, cc_node *nodes, const sigset_t *set, int sig)
{
	bool dummy = false;
	cc_signal_all(o, nodes, sig);
	int64_t deadline =
	    cc_now_ms() + CC_STOP_TIMEOUT_MS + (sig == SIGTERM ? o->drain_timeout_ms : 0);
	int signals = 1;
	while (cc_running(o, nodes) > 0) {
		int64_t left = deadline - cc_now_ms();
		int got = left > 0 ? cc_wait_signal(set, left < 200 ? left : 200) : 0;
		cc_reap(app, o, nodes, true, &dummy);
		if (cc_running(o, nodes) == 0)
			break;
		if ((got == SIGINT || got == SIGTERM) && ++signals == 2) {
			fprintf(stderr, "%s cluster: %s again: the nodes stop at once\n",
			        cc_prog(app), got == SIGINT ? "SIGINT" : "SIGTERM");
			cc_signal_all(o, nodes, got);
			int64_t soon = cc_now_ms() + CC_STOP_TIMEOUT_MS;
			deadline = soon < deadline ? soon : deadline;
			continue;
		}
		if (left <= 0 || got == SIGINT || got == SIGTERM) {
			fprintf(stderr, "%s cluster: %d node(s) still running: SIGKILL\n",
			        cc_prog(app), cc_running(o, nodes));
			cc_signal_all(o, nodes, SIGKILL);
			for (int i = 0; i < o->nodes; i++) {
				if (nodes[i].pid > 0) {
					while (waitpid(nodes[i].pid, NULL, 0) < 0 && errno == EINTR)
						;
					nodes[i].pid = 0;
				}
			}
			return false;
		}
	}
	return true;
}

int
app_cluster_main(int argc, char **argv, const app_def *app)
{
	cc_opts o = {.port = CC_DEFAULT_PORT, .drain_timeout_ms = CC_DRAIN_TIMEOUT_MS};
	int rc = cc_parse(argc, argv, app, &o);
	if (rc >= 0)
		return rc;
	cc_node *nodes = calloc((size_t)o.nodes, sizeof(*nodes));
	if (!nodes || cc_prepare(&o, argv[0], nodes) < 0) {
		fprintf(stderr, "%s cluster: out of memory\n", cc_prog(app));
		if (nodes)
			cc_free(&o, nodes);
		free(nodes);
		return APP_EXIT_FAILURE;
	}

	sigset_t set, orig;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, &orig);
	signal(SIGPIPE, SIG_IGN);

	int64_t now = cc_now_ms();
	for (int i = 0; i < o.nodes; i++)
		nodes[i].restart_at_ms = now;
	bool usage = false;
	int stop_sig = 0;
	while (!usage && !stop_sig) {
		/* Start what is due; wait until the next due restart (or 1 s). */
		now = cc_now_ms();
		int64_t next = now + 1000;
		for (int i = 0; i < o.nodes; i++) {
			cc_node *n = &nodes[i];
			if (n->pid > 0)
				continue;
			if (n->restart_at_ms <= now) {
				bool first = n->started_ms == 0;
				if (cc_spawn(n, &orig, first ? "" : " (restarted)") < 0) {
					fprintf(stderr, "%s cluster: cannot start %s: %s\n",
					        cc_prog(app), n->name, strerror(errno));
					n->restart_at_ms = now + CC_BACKOFF_MAX_MS;
				}
			}
			if (n->pid == 0 && n->restart_at_ms < next)
				next = n->restart_at_ms;
		}
		int sig = cc_wait_signal(&set, next - cc_now_ms());
		if (sig == SIGINT || sig == SIGTERM)
			stop_sig = sig;
		cc_reap(app, &o, nodes, stop_sig != 0, &usage);
	}
	if (stop_sig)
		fprintf(stderr, "%s cluster: %s received, stopping %d node(s)\n", cc_prog(app),
		        stop_sig == SIGINT ? "SIGINT" : "SIGTERM", cc_running(&o, nodes));
	bool clean = cc_stop_all(app, &o, nodes, &set, stop_sig ? stop_sig : SIGTERM);
	sigprocmask(SIG_SETMASK, &orig, NULL);
	cc_free(&o, nodes);
	free(nodes);
	if (usage)
		return APP_EXIT_USAGE;
	return clean ? APP_EXIT_OK : APP_EXIT_FAILURE;
}
