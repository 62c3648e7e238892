/*
 * launcher.c: app_main, the command line of a phx-c application (see
 * launcher.h): flag parsing, --mint-token, the start sequence (runtime,
 * channel endpoint, HTTP endpoint), waiting for SIGINT/SIGTERM and the
 * orderly shutdown.
 *
 * Signals: SIGINT and SIGTERM are blocked in the main thread before the
 * runtime starts, so every thread created afterwards (schedulers, library
 * threads) inherits the blocked mask and the signals stay pending for the
 * process; the main thread then takes them synchronously with sigwaitinfo.
 * No signal handler runs, and no global state is needed for it.  SIGPIPE is
 * ignored (writes to a closed peer fail with EPIPE instead).
 *
 * The node is one supervision tree (channels/endpoint.c): its root, under
 * which PubSub, the channels and the HTTP listeners run.  A watcher process
 * monitors the root; if the tree gives up on its own (e.g. a PubSub
 * partition crashed), the watcher raises SIGTERM so that the main thread
 * stops what is left and exits APP_EXIT_FAILURE instead of serving nothing.
 */
#include "bin/launcher.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "bin/cluster_cmd.h"
#include "bin/node_api.h"
#include "channels/token.h"

#define APP_DEFAULT_PORT 4000
#define APP_DEFAULT_BIND "127.0.0.1"
#define APP_DEFAULT_SALT "user socket"
#define APP_STOP_TIMEOUT_MS 5000
#define APP_MAX_ORIGINS 64
#define APP_MAX_PEERS 64

typedef struct app_opts {
	int port;
	const char *bind;
	int schedulers;
	rt_log_level log_level;
	char *check_origin; /* a copy of the flag's value, split in place */
	const char *origins[APP_MAX_ORIGINS + 1];
	const char *secret;
	const char *mint_user;
	const char *salt;
	int max_frame;     /* --max-frame-size, 0: the endpoint's default */
	int lp_window_ms;  /* --longpoll-window-ms, 0: the endpoint's default */
	int ws_timeout_ms; /* --websocket-timeout-ms, 0: the endpoint's default */
	bool help;
	bool reuse_port;
	/* HTTPS (0 / NULL when not given). */
	int https_port;
	const char *tls_cert;
	const char *tls_key;
	/* Cluster flags (NULL / 0 when not given). */
	const char *name;
	const char *cluster_listen;
	char *peers_copy; /* a copy of --peers, split in place */
	const char *peers[APP_MAX_PEERS + 1];
	const char *seed;
	const char *pubsub;
	int heartbeat_ms;
	int down_after_ms;
	/* The drain at SIGTERM (tp_drain_opts; defaults as Phoenix's drainer). */
	int drain_batch;
	int drain_interval_ms;
	int drain_timeout_ms; /* 0: no drain */
	/* Limits: --max-messages-per-second (-1: not given, or 0: no limit, as
	 * Phoenix) and --max-memory-mb (0: no budget). */
	int max_msgs;
	int max_memory_mb;
} app_opts;

static void
app_usage(FILE *out, const app_def *app)
{
	const char *name = app->name ? app->name : "phx-app";
	fprintf(out, "Usage: %s [options]\n", name);
	if (app->description)
		fprintf(out, "%s\n", app->description);
	fprintf(out,
	        "\n"
	        "Options:\n"
	        "  --port N                 HTTP port (default %d)\n"
	        "  --bind ADDR              address to listen on (default %s)\n"
	        "  --schedulers N           scheduler threads (default: one per core)\n"
	        "  --log-level LEVEL        error, warning, info or debug (default info)\n"
	        "  --check-origin O[,O...]  accept WebSocket upgrades only from these origins,\n"
	        "                           e.g. http://localhost:4000 (default: no check)\n"
	        "  --max-frame-size BYTES   largest WebSocket message a client may send; a\n"
	        "                           larger one closes the socket with 1009\n"
	        "                           (default %zu, as Phoenix)\n"
	        "  --longpoll-window-ms N   how long a long poll waits for messages; a\n"
	        "                           session not polled for 1.5 x N ends\n"
	        "                           (default 10000, as Phoenix)\n"
	        "  --websocket-timeout-ms N close a WebSocket silent this long: no frame,\n"
	        "                           not even a heartbeat (default 60000, as\n"
	        "                           Phoenix's websocket timeout; at most a day)\n"
	        "  --secret-key-base S      secret for tokens (default: $SECRET_KEY_BASE,\n"
	        "                           else a fixed development secret)\n"
	        "  --mint-token USER_ID     print a Phoenix.Token for USER_ID and exit\n"
	        "  --salt S                 the token's salt with --mint-token (default \"%s\")\n"
	        "  --reuse-port             share the HTTP port with other processes that\n"
	        "                           listen on it with --reuse-port too\n"
	        "  --drain-batch-size N     at SIGTERM, close the sockets N at a time\n"
	        "                           (default %d, as Phoenix's drainer)\n"
	        "  --drain-interval-ms N    between two batches (default %d)\n"
	        "  --drain-timeout-ms N     the whole drain at most; what is left then closes\n"
	        "                           with 1001 (default %d; 0: no drain)\n"
	        "  --max-messages-per-second N  messages a client may send on one socket\n"
	        "                           (bursts of 2 x N); past it the socket is closed\n"
	        "                           with 1008 (default 0: no limit, as Phoenix)\n"
	        "  --max-memory-mb N        memory budget: over N MB of RSS, refuse new\n"
	        "                           WebSockets and long-poll sessions (503) and cut\n"
	        "                           consumers 256 KiB behind, until back under 90%%\n"
	        "                           of it (default 0: none)\n"
	        "  --https-port N           also serve HTTPS and wss:// on port N (TLS 1.2+)\n"
	        "  --tls-cert FILE          its PEM certificate (then the chain)\n"
	        "  --tls-key FILE           its PEM private key (both needed with --https-port)\n"
	        "  --help                   print this help and exit\n"
	        "\n"
	        "Cluster (a node needs --name and either --cluster-listen or --pubsub):\n"
	        "  --name NAME              this node's name, e.g. node1@127.0.0.1\n"
	        "  --cluster-listen URL     nng address the other nodes dial, e.g.\n"
	        "                           tcp://127.0.0.1:5001 (the mesh link)\n"
	        "  --peers URL[,URL...]     other nodes' --cluster-listen addresses to dial\n"
	        "  --seed URL               one node to dial; the others are learned from it\n"
	        "  --pubsub redis://H:P     link through a redis-server instead of the mesh\n"
	        "  --heartbeat-ms N         heartbeat period (default 500)\n"
	        "  --down-after-ms N        a node is down within N ms of its last word (default "
	        "3000; >= 2 heartbeats)\n"
	        "  GET /api/cluster answers the node's name, members and counters.\n"
	        "\n"
	        "GET /api/stats answers the node's connection counters and RSS (JSON).\n"
	        "\n"
	        "  %s cluster --nodes N [--port P] [--one-port] [--cluster-port C]\n"
	        "           [--pubsub redis://H:P] [node options]\n"
	        "                           start and supervise N nodes of one cluster on\n"
	        "                           this machine (%s cluster --help)\n"
	        "\n"
	        "SIGTERM: stop accepting, close the sockets in batches (WebSockets with\n"
	        "1012), then stop; SIGINT, or a second signal during the drain: stop at once\n"
	        "(WebSockets closed with 1001).\n"
	        "Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot start (port in use),\n"
	        "2 on a bad command line.\n",
	        APP_DEFAULT_PORT, APP_DEFAULT_BIND, TP_DEFAULT_MAX_FRAME, APP_DEFAULT_SALT,
	        TP_DRAIN_BATCH_SIZE, TP_DRAIN_INTERVAL_MS, TP_DRAIN_TIMEOUT_MS, name, name);
}

static int
app_usage_error(const app_def *app, const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", app->name ? app->name : "phx-app");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '%s --help'.\n", app->name ? app->name : "phx-app");
	return APP_EXIT_USAGE;
}

int
app_parse_int(const char *s, long lo, long hi, int *out)
{
	if (!s || !*s)
		return -1;
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

static int
app_parse_level(const char *s, rt_log_level *out)
{
	static const char *const names[] = {"error", "warning", "info", "debug"};
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = (rt_log_level)i;
			return 0;
		}
	}
	if (strcmp(s, "warn") == 0) {
		*out = RT_LOG_WARNING;
		return 0;
	}
	return -1;
}

/* Splits list (modified) at commas into out[0..max) and a NULL after, each
 * item trimmed of blanks and, with strip_slash, of trailing "/"
 * ("http://h:4000/" is "http://h:4000"); empty items are skipped.  Returns
 * 0, or -1 for an empty list or more than max items. */
static int
app_split_list(char *list, const char **out, size_t max, bool strip_slash)
{
	size_t n = 0;
	char *save = NULL;
	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ' || *tok == '\t')
			tok++;
		size_t len = strlen(tok);
		while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
			tok[--len] = '\0';
		while (strip_slash && len > 0 && tok[len - 1] == '/')
			tok[--len] = '\0';
		if (len == 0)
			continue;
		if (n == max)
			return -1;
		out[n++] = tok;
	}
	out[n] = NULL;
	return n > 0 ? 0 : -1;
}

/* A node name: letters, digits and "@._-", 1 to CL_NAME_MAX - 1 bytes. */
static bool
app_valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= CL_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '@' || c == '.' || c == '_' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

/* A link address: "scheme://rest" (an nng URL such as tcp://127.0.0.1:5001),
 * shorter than CL_ADDR_MAX, with no space or comma. */
static bool
app_valid_addr(const char *s, const char *scheme)
{
	size_t n = strlen(s);
	const char *sep = strstr(s, "://");
	if (n == 0 || n >= CL_ADDR_MAX || !sep || sep == s || !sep[3] || strpbrk(s, " \t,"))
		return false;
	return !scheme || (strncmp(s, scheme, strlen(scheme)) == 0 && sep == s + strlen(scheme));
}

/* Checks the HTTPS flags (after parsing): --https-port needs --tls-cert and
 * --tls-key, readable PEM files of a certificate and its key (loaded here
 * once, as the endpoint will).  Returns -1 to go on, or APP_EXIT_USAGE after
 * a message. */
static int
app_check_tls(const app_def *app, const app_opts *o)
{
	if (!o->https_port) {
		if (o->tls_cert || o->tls_key)
			return app_usage_error(
			    app, "--tls-cert and --tls-key go with --https-port%s", "");
		return -1;
	}
	if (!o->tls_cert || !o->tls_key)
		return app_usage_error(
		    app, "--https-port needs --tls-cert FILE and --tls-key FILE%s", "");
	if (o->https_port == o->port)
		return app_usage_error(app, "--https-port must differ from --port%s", "");
	char err[512];
	if (tp_tls_check(o->tls_cert, o->tls_key, err, sizeof(err)) < 0)
		return app_usage_error(app, "TLS: %s", err);
	return -1;
}

/* Checks the combination of cluster flags (after parsing); returns -1 to go
 * on, or APP_EXIT_USAGE after a message. */
static int
app_check_cluster(const app_def *app, const app_opts *o)
{
	bool mesh = o->cluster_listen || o->peers_copy || o->seed;
	bool any = mesh || o->pubsub || o->heartbeat_ms || o->down_after_ms;
	if (!o->name) {
		if (any)
			return app_usage_error(app,
			                       "the cluster options need --name (e.g. --name "
			                       "node1@127.0.0.1)%s",
			                       "");
		return -1;
	}
	if (o->pubsub && mesh)
		return app_usage_error(app,
		                       "--pubsub (nodes linked through Redis) goes without "
		                       "--cluster-listen, --peers and --seed%s",
		                       "");
	if (!o->pubsub && !o->cluster_listen)
		return app_usage_error(
		    app,
		    "--name needs --cluster-listen URL (with --peers or --seed to "
		    "join others) or --pubsub redis://HOST:PORT%s",
		    "");
	int hb = o->heartbeat_ms ? o->heartbeat_ms : 500;
	int down = o->down_after_ms ? o->down_after_ms : 3000;
	if (down < 2 * hb)
		return app_usage_error(app,
		                       "--down-after-ms must be longer than two heartbeat periods "
		                       "(--heartbeat-ms)%s",
		                       "");
	return -1;
}

/*
 * Parses argv into o.  Accepts "--flag value" and "--flag=value".  Returns
 * -1 to go on, or an exit code (usage errors print their message).
 */
static int
app_parse_args(int argc, char **argv, const app_def *app, app_opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			o->help = true;
			continue;
		}
		if (strcmp(arg, "--reuse-port") == 0) {
			o->reuse_port = true;
			continue;
		}
		if (strncmp(arg, "--", 2) != 0)
			return app_usage_error(app, "unexpected argument '%s'", arg);
		char flag[64];
		const char *eq = strchr(arg, '=');
		const char *val = NULL;
		size_t flen = eq ? (size_t)(eq - arg) : strlen(arg);
		if (flen >= sizeof(flag))
			return app_usage_error(app, "unknown option '%s'", arg);
		memcpy(flag, arg, flen);
		flag[flen] = '\0';
		static const char *const known[] = {"--port",
		                                    "--bind",
		                                    "--schedulers",
		                                    "--log-level",
		                                    "--check-origin",
		                                    "--secret-key-base",
		                                    "--mint-token",
		                                    "--salt",
		                                    "--max-frame-size",
		                                    "--longpoll-window-ms",
		                                    "--websocket-timeout-ms",
		                                    "--name",
		                                    "--cluster-listen",
		                                    "--peers",
		                                    "--seed",
		                                    "--pubsub",
		                                    "--heartbeat-ms",
		                                    "--down-after-ms",
		                                    "--drain-batch-size",
		                                    "--drain-interval-ms",
		                                    "--drain-timeout-ms",
		                                    "--https-port",
		                                    "--tls-cert",
		                                    "--tls-key",
		                                    "--max-messages-per-second",
		                                    "--max-memory-mb",
		                                    NULL};
		bool ok = false;
		for (int k = 0; known[k]; k++)
			ok = ok || strcmp(flag, known[k]) == 0;
		if (!ok)
			return app_usage_error(app, "unknown option '%s'", flag);
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return app_usage_error(app, "option '%s' needs a value", flag);
			val = argv[++i];
		}
		if (strcmp(flag, "--port") == 0) {
			if (app_parse_int(val, 1, 65535, &o->port) < 0)
				return app_usage_error(app, "bad --port '%s' (1..65535)", val);
		} else if (strcmp(flag, "--https-port") == 0) {
			if (app_parse_int(val, 1, 65535, &o->https_port) < 0)
				return app_usage_error(app, "bad --https-port '%s' (1..65535)",
				                       val);
		} else if (strcmp(flag, "--tls-cert") == 0) {
			o->tls_cert = val;
		} else if (strcmp(flag, "--tls-key") == 0) {
			o->tls_key = val;
		} else if (strcmp(flag, "--bind") == 0) {
			if (!*val)
				return app_usage_error(app, "empty --bind%s", "");
			o->bind = val;
		} else if (strcmp(flag, "--schedulers") == 0) {
			if (app_parse_int(val, 1, 1024, &o->schedulers) < 0)
				return app_usage_error(app, "bad --schedulers '%s' (1..1024)", val);
		} else if (strcmp(flag, "--log-level") == 0) {
			if (app_parse_level(val, &o->log_level) < 0)
				return app_usage_error(
				    app, "bad --log-level '%s' (error, warning, info, debug)", val);
		} else if (strcmp(flag, "--check-origin") == 0) {
			free(o->check_origin);
			o->check_origin = strdup(val);
			if (!o->check_origin ||
			    app_split_list(o->check_origin, o->origins, APP_MAX_ORIGINS, true) < 0)
				return app_usage_error(app, "bad --check-origin '%s'", val);
		} else if (strcmp(flag, "--max-frame-size") == 0) {
			if (app_parse_int(val, 1, (long)TP_MAX_MAX_FRAME, &o->max_frame) < 0)
				return app_usage_error(
				    app, "bad --max-frame-size '%s' (1..1073741824)", val);
		} else if (strcmp(flag, "--longpoll-window-ms") == 0) {
			if (app_parse_int(val, 1, 3600000, &o->lp_window_ms) < 0)
				return app_usage_error(
				    app, "bad --longpoll-window-ms '%s' (1..3600000)", val);
		} else if (strcmp(flag, "--websocket-timeout-ms") == 0) {
			if (app_parse_int(val, 1000, 86400000, &o->ws_timeout_ms) < 0)
				return app_usage_error(
				    app, "bad --websocket-timeout-ms '%s' (1000..86400000)", val);
		} else if (strcmp(flag, "--secret-key-base") == 0) {
			if (!*val)
				return app_usage_error(app, "empty --secret-key-base%s", "");
			o->secret = val;
		} else if (strcmp(flag, "--mint-token") == 0) {
			o->mint_user = val;
		} else if (strcmp(flag, "--salt") == 0) {
			o->salt = val;
		} else if (strcmp(flag, "--name") == 0) {
			if (!app_valid_name(val))
				return app_usage_error(
				    app,
				    "bad --name '%s' (letters, digits and @._-, at "
				    "most 63 bytes, e.g. node1@127.0.0.1)",
				    val);
			o->name = val;
		} else if (strcmp(flag, "--cluster-listen") == 0) {
			if (!app_valid_addr(val, NULL))
				return app_usage_error(
				    app, "bad --cluster-listen '%s' (e.g. tcp://127.0.0.1:5001)",
				    val);
			o->cluster_listen = val;
		} else if (strcmp(flag, "--peers") == 0) {
			free(o->peers_copy);
			o->peers_copy = strdup(val);
			if (!o->peers_copy ||
			    app_split_list(o->peers_copy, o->peers, APP_MAX_PEERS, false) < 0)
				return app_usage_error(app, "bad --peers '%s' (URL[,URL...])", val);
			for (int k = 0; o->peers[k]; k++)
				if (!app_valid_addr(o->peers[k], NULL))
					return app_usage_error(
					    app,
					    "bad --peers address '%s' (e.g. tcp://127.0.0.1:5002)",
					    o->peers[k]);
		} else if (strcmp(flag, "--seed") == 0) {
			if (!app_valid_addr(val, NULL))
				return app_usage_error(
				    app, "bad --seed '%s' (e.g. tcp://127.0.0.1:5001)", val);
			o->seed = val;
		} else if (strcmp(flag, "--pubsub") == 0) {
			if (!app_valid_addr(val, "redis"))
				return app_usage_error(app,
				                       "bad --pubsub '%s' (redis://HOST:PORT, e.g. "
				                       "redis://127.0.0.1:6379)",
				                       val);
			o->pubsub = val;
		} else if (strcmp(flag, "--heartbeat-ms") == 0) {
			if (app_parse_int(val, 1, 60000, &o->heartbeat_ms) < 0)
				return app_usage_error(app, "bad --heartbeat-ms '%s' (1..60000)",
				                       val);
		} else if (strcmp(flag, "--down-after-ms") == 0) {
			if (app_parse_int(val, 1, 600000, &o->down_after_ms) < 0)
				return app_usage_error(app, "bad --down-after-ms '%s' (1..600000)",
				                       val);
		} else if (strcmp(flag, "--drain-batch-size") == 0) {
			if (app_parse_int(val, 1, 100000000, &o->drain_batch) < 0)
				return app_usage_error(
				    app, "bad --drain-batch-size '%s' (1..100000000)", val);
		} else if (strcmp(flag, "--drain-interval-ms") == 0) {
			if (app_parse_int(val, 0, 3600000, &o->drain_interval_ms) < 0)
				return app_usage_error(
				    app, "bad --drain-interval-ms '%s' (0..3600000)", val);
		} else if (strcmp(flag, "--max-messages-per-second") == 0) {
			if (app_parse_int(val, 0, CH_MAX_MAX_MSGS_PER_S, &o->max_msgs) < 0)
				return app_usage_error(
				    app,
				    "bad --max-messages-per-second '%s' (0..1000000; 0: no limit)",
				    val);
		} else if (strcmp(flag, "--max-memory-mb") == 0) {
			if (app_parse_int(val, 0, 16777216, &o->max_memory_mb) < 0)
				return app_usage_error(
				    app, "bad --max-memory-mb '%s' (0..16777216; 0: no budget)",
				    val);
		} else if (strcmp(flag, "--drain-timeout-ms") == 0) {
			if (app_parse_int(val, 0, 3600000, &o->drain_timeout_ms) < 0)
				return app_usage_error(
				    app, "bad --drain-timeout-ms '%s' (0..3600000; 0: no drain)",
				    val);
		}
	}
	if (o->salt && !o->mint_user && !o->help)
		return app_usage_error(app, "--salt goes with --mint-token%s", "");
	if (!o->help && !o->mint_user) {
		int rc = app_check_tls(app, o);
		return rc >= 0 ? rc : app_check_cluster(app, o);
	}
	return -1;
}

/* Prints Phoenix.Token.sign(secret, salt, user_id) (signed now, default max_age). */
static int
app_mint_token(const app_def *app, const app_opts *o)
{
	size_t ulen = strlen(o->mint_user);
	if (ulen > CH_TOKEN_MAX_BINARY) {
		fprintf(stderr, "%s: --mint-token: user id longer than %d bytes\n", app->name,
		        CH_TOKEN_MAX_BINARY);
		return APP_EXIT_USAGE;
	}
	const char *salt = o->salt ? o->salt : APP_DEFAULT_SALT;
	ch_token_key *key = ch_token_key_new(o->secret, strlen(o->secret), salt, strlen(salt));
	if (!key) {
		fprintf(stderr, "%s: --mint-token: cannot derive the signing key\n", app->name);
		return APP_EXIT_FAILURE;
	}
	ch_token_data *data = calloc(1, sizeof(*data));
	char *out = malloc(CH_TOKEN_MAX_LEN);
	int rc = APP_EXIT_FAILURE;
	if (data && out && ch_token_data_set_binary(data, o->mint_user, ulen) == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		if (ch_token_sign(key, data, now_ms, CH_TOKEN_DEFAULT_MAX_AGE, out,
		                  CH_TOKEN_MAX_LEN) >= 0) {
			printf("%s\n", out);
			rc = fflush(stdout) == 0 ? APP_EXIT_OK : APP_EXIT_FAILURE;
		}
	}
	if (rc != APP_EXIT_OK)
		fprintf(stderr, "%s: --mint-token: cannot sign the token\n", app->name);
	free(out);
	free(data);
	ch_token_key_free(key);
	return rc;
}

/*
 * Resolves a relative path of the app: as given when it exists from the
 * working directory, else relative to the parent of the executable's
 * directory (build/phx-chat -> the repository).  Returns a malloc'ed path
 * (possibly the unchanged one when neither exists), or NULL on OOM.
 */
static char *
app_resolve_path(const char *path)
{
	struct stat st;
	if (path[0] == '/' || stat(path, &st) == 0)
		return strdup(path);
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			size_t need = strlen(exe) + 4 + strlen(path) + 1;
			char *cand = malloc(need);
			if (!cand)
				return NULL;
			snprintf(cand, need, "%s/../%s", exe, path);
			if (stat(cand, &st) == 0)
				return cand;
			free(cand);
		}
	}
	return strdup(path);
}

/*
 * Checks that ADDR:PORT can be bound by a socket without SO_REUSEPORT.  The
 * HTTP endpoint binds one SO_REUSEPORT listener per scheduler, and Linux
 * lets a second process of the same user join such a group silently; this
 * probe makes a second instance on a busy port fail instead.  Returns 0,
 * or -1 with a message on stderr.
 */
static int
app_probe_port(const app_def *app, const char *bind_addr, int port)
{
	char service[16];
	snprintf(service, sizeof(service), "%d", port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int gai = getaddrinfo(bind_addr, service, &hints, &res);
	if (gai != 0) {
		fprintf(stderr, "%s: cannot resolve --bind %s: %s\n", app->name, bind_addr,
		        gai_strerror(gai));
		return -1;
	}
	int rc = 0;
	int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
	if (fd >= 0) {
		int one = 1;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
			fprintf(stderr, "%s: cannot listen on %s:%d: %s\n", app->name, bind_addr,
			        port,
			        errno == EADDRINUSE ? "address already in use (is another server "
			                              "running on this port?)"
			                            : strerror(errno));
			rc = -1;
		}
		close(fd);
	}
	freeaddrinfo(res);
	return rc;
}

/* The root's watcher: raises SIGTERM when the root exits (it is killed
 * before an ordinary stop). */
static int
watch_init(void *state, const void *arg, size_t size)
{
	(void)state;
	(void)size;
	rt_monitor(*(const rt_pid *)arg);
	return RT_OK;
}

static int
watch_handle(void *state, rt_msg *m)
{
	(void)state;
	if (m->tag != RT_MSG_DOWN)
		return RT_OK;
	rt_log_error("the node's supervision tree stopped (%s): shutting down",
	             ((rt_down_info *)rt_msg_data(m))->reason);
	kill(getpid(), SIGTERM);
	return rt_stop("normal");
}

static const rt_behaviour watch_behaviour = {
    .name = "node_watch",
    .init = watch_init,
    .handle = watch_handle,
};

/*
 * The drain at SIGTERM (tp_endpoint_drain): waits for the drainer to send
 * its last batch, at most the drain timeout (and a second more, should the
 * drainer itself be late); a second SIGINT or SIGTERM meanwhile ends the
 * drain at once.  The normal stop follows (the caller).  The main thread
 * polls the drainer every DRAIN_POLL_MS while it waits for the signals.
 */
#define DRAIN_POLL_MS 20
static void
app_drain(tp_endpoint *tp, const tp_drain_opts *o, const sigset_t *set)
{
	rt_pid drainer = tp_endpoint_drain(tp, o);
	if (!drainer)
		return;
	int64_t deadline = rt_now_ms() + o->timeout_ms + 1000;
	while (rt_alive(drainer)) {
		if (rt_now_ms() >= deadline) {
			rt_log_warning("draining: the drainer is late: stopping now");
			break;
		}
		struct timespec ts = {.tv_sec = 0, .tv_nsec = DRAIN_POLL_MS * 1000000L};
		int sig = sigtimedwait(set, NULL, &ts);
		if (sig == SIGINT || sig == SIGTERM) {
			rt_log_info("%s during the drain: stopping now",
			            sig == SIGINT ? "SIGINT" : "SIGTERM");
			break;
		}
	}
	rt_exit(drainer, "kill"); /* gone already, unless cut short */
}

/* Waits for SIGINT or SIGTERM (blocked in every thread); returns its number. */
static int
app_wait_signal(const sigset_t *set)
{
	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(set, &info);
		if (sig > 0)
			return sig;
		if (errno != EINTR)
			return SIGTERM;
	}
}

int
app_main(int argc, char **argv, const app_def *app)
{
	app_opts o = {.port = APP_DEFAULT_PORT,
	              .bind = APP_DEFAULT_BIND,
	              .schedulers = 0,
	              .log_level = RT_LOG_INFO,
	              .drain_batch = TP_DRAIN_BATCH_SIZE,
	              .drain_interval_ms = TP_DRAIN_INTERVAL_MS,
	              .drain_timeout_ms = TP_DRAIN_TIMEOUT_MS,
	              .max_msgs = -1};
	if (argc > 1 && strcmp(argv[1], "cluster") == 0)
		return app_cluster_main(argc, argv, app);
	int rc = app_parse_args(argc, argv, app, &o);
	if (rc >= 0)
		goto out;
	if (o.help) {
		app_usage(stdout, app);
		rc = APP_EXIT_OK;
		goto out;
	}
	if (!o.secret) {
		const char *env = getenv("SECRET_KEY_BASE");
		o.secret = env && *env ? env : app->default_secret;
	}
	if (!o.secret || !*o.secret) {
		fprintf(stderr, "%s: no secret key base (set SECRET_KEY_BASE)\n", app->name);
		rc = APP_EXIT_USAGE;
		goto out;
	}
	if (o.mint_user) {
		rc = app_mint_token(app, &o);
		goto out;
	}

	signal(SIGPIPE, SIG_IGN);
	rt_log_set_level(o.log_level);
	if (strlen(o.secret) < 64)
		rt_log_warning("the secret key base is shorter than 64 bytes");

	if (!o.reuse_port && (app_probe_port(app, o.bind, o.port) < 0 ||
	                      (o.https_port && app_probe_port(app, o.bind, o.https_port) < 0))) {
		rc = APP_EXIT_FAILURE;
		goto out;
	}

	/* Block the stop signals before any thread exists, so that all inherit the mask. */
	sigset_t stop_set;
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGINT);
	sigaddset(&stop_set, SIGTERM);
	if (pthread_sigmask(SIG_BLOCK, &stop_set, NULL) != 0) {
		fprintf(stderr, "%s: cannot block SIGINT/SIGTERM\n", app->name);
		rc = APP_EXIT_FAILURE;
		goto out;
	}

	rt_config cfg = {.schedulers = o.schedulers, .log_level = o.log_level};
	if (rt_start(&cfg) != 0) {
		fprintf(stderr, "%s: cannot start the runtime\n", app->name);
		rc = APP_EXIT_FAILURE;
		goto out;
	}

	cl_opts clopts = {
	    .name = o.name,
	    .link = o.pubsub ? "redis" : "mesh",
	    .listen = o.cluster_listen,
	    .peers = o.peers_copy ? o.peers : NULL,
	    .seed = o.seed,
	    .redis_url = o.pubsub,
	    .heartbeat_ms = (uint32_t)o.heartbeat_ms,
	    .down_after_ms = (uint32_t)o.down_after_ms,
	    .supervisor = RT_NOPID,
	};
	ch_endpoint_opts chopts = {.handler = app->socket,
	                           .secret_key_base = o.secret,
	                           .cluster = o.name ? &clopts : NULL,
	                           .max_messages_per_second =
	                               o.max_msgs > 0 ? (uint32_t)o.max_msgs : 0};
	ch_endpoint *ep = ch_endpoint_start(&chopts);
	if (!ep) {
		if (o.name)
			fprintf(stderr,
			        "%s: cannot start the channel endpoint or join the cluster as %s\n",
			        app->name, o.name);
		else
			fprintf(stderr, "%s: cannot start the channel endpoint\n", app->name);
		rt_shutdown();
		rc = APP_EXIT_FAILURE;
		goto out;
	}

	/* The app's routes, each with an app_ctx as udata (see launcher.h), then
	 * the launcher's own (bin/node_api.h: GET /api/cluster, GET /api/stats;
	 * an app's route of the same path comes first and wins). */
	size_t nroutes = app->nroutes;
	app_ctx *ctxs = calloc(nroutes ? nroutes : 1, sizeof(*ctxs));
	tp_route *routes = calloc(nroutes + NODE_API_NROUTES, sizeof(*routes));
	node_api api = {.channels = ep};
	size_t nalias = 0;
	while (app->static_aliases && app->static_aliases[nalias])
		nalias++;
	char **aliases = calloc(nalias + 1, sizeof(*aliases));
	char *static_dir = app->static_dir ? app_resolve_path(app->static_dir) : NULL;
	tp_endpoint *tp = NULL;
	if (!ctxs || !routes || !aliases || (app->static_dir && !static_dir)) {
		fprintf(stderr, "%s: out of memory\n", app->name);
		goto stop_channels;
	}
	for (size_t i = 0; i < nroutes; i++) {
		ctxs[i] = (app_ctx){.app = app, .endpoint = ep, .udata = app->routes[i].udata};
		routes[i] = app->routes[i];
		routes[i].udata = &ctxs[i];
	}
	node_api_routes(&api, routes + nroutes);
	for (size_t i = 0; i < nalias; i++) {
		/* Even entries are URL paths (kept), odd ones file paths (resolved). */
		aliases[i] = i % 2 ? app_resolve_path(app->static_aliases[i])
		                   : strdup(app->static_aliases[i]);
		if (!aliases[i]) {
			fprintf(stderr, "%s: out of memory\n", app->name);
			goto stop_channels;
		}
	}
	if (static_dir) {
		struct stat st;
		if (stat(static_dir, &st) != 0 || !S_ISDIR(st.st_mode))
			rt_log_warning("static directory %s not found", static_dir);
	}

	tp_endpoint_opts tpopts = {
	    .bind = o.bind,
	    .port = o.port,
	    .socket = ep,
	    .socket_path = "/socket",
	    .routes = routes,
	    .nroutes = nroutes + NODE_API_NROUTES,
	    .static_dir = static_dir,
	    .static_aliases = nalias ? (const char *const *)aliases : NULL,
	    .check_origin = o.check_origin != NULL,
	    .origins = o.check_origin ? o.origins : NULL,
	    .max_frame = (size_t)o.max_frame,
	    .max_memory_mb = (uint32_t)o.max_memory_mb,
	    .lp_window_ms = (uint32_t)o.lp_window_ms,
	    .ws_idle_ms = (uint32_t)o.ws_timeout_ms,
	    .reuse_port = o.reuse_port,
	    .https_port = o.https_port,
	    .tls_cert = o.tls_cert,
	    .tls_key = o.tls_key,
	};
	tp = tp_endpoint_start(&tpopts);
	if (!tp) {
		fprintf(stderr, "%s: cannot listen on %s:%d (is the port in use?)\n", app->name,
		        o.bind, o.port);
		goto stop_channels;
	}
	atomic_store(&api.transport, tp);
	int port = tp_endpoint_port(tp) > 0 ? tp_endpoint_port(tp) : o.port;
	bool v6 = strchr(o.bind, ':') != NULL;
	rt_log_info("%s listening on http://%s%s%s:%d", app->name, v6 ? "[" : "", o.bind,
	            v6 ? "]" : "", port);
	if (o.https_port)
		rt_log_info("%s listening on https://%s%s%s:%d", app->name, v6 ? "[" : "", o.bind,
		            v6 ? "]" : "", tp_endpoint_https_port(tp));
	if (o.name)
		rt_log_info("%s is node %s (%s %s)", app->name, o.name, o.pubsub ? "redis" : "mesh",
		            o.pubsub ? o.pubsub : o.cluster_listen);

	rt_pid root = ch_endpoint_supervisor(ep);
	rt_pid watch = rt_spawn(&watch_behaviour, &root, sizeof(root));
	int sig = app_wait_signal(&stop_set);
	rt_exit(watch, "kill");
	bool tree_down = !rt_alive(root);
	if (!tree_down)
		rt_log_info("%s: %s received, shutting down", app->name,
		            sig == SIGINT ? "SIGINT" : "SIGTERM");
	if (!tree_down && sig == SIGTERM && o.drain_timeout_ms > 0) {
		tp_drain_opts dopts = {.batch_size = (uint32_t)o.drain_batch,
		                       .interval_ms = (uint32_t)o.drain_interval_ms,
		                       .timeout_ms = (uint32_t)o.drain_timeout_ms};
		app_drain(tp, &dopts, &stop_set);
	}
	/* The listeners first (WebSockets closed with 1001 after their queue);
	 * ch_endpoint_stop then stops the rest of the tree, channels then PubSub. */
	tp_endpoint_stop(tp, APP_STOP_TIMEOUT_MS);
	rc = tree_down ? APP_EXIT_FAILURE : APP_EXIT_OK;
	goto stop_runtime;

stop_channels:
	rc = APP_EXIT_FAILURE;
stop_runtime:
	ch_endpoint_stop(ep);
	rt_shutdown();
	if (aliases)
		for (size_t i = 0; i < nalias; i++)
			free(aliases[i]);
	free(aliases);
	free(static_dir);
	free(routes);
	free(ctxs);
	if (rc == APP_EXIT_OK)
		rt_log_info("%s stopped", app->name);
out:
	free(o.check_origin);
	free(o.peers_copy);
	return rc;
}
