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

#include "channels/token.h"

#define APP_DEFAULT_PORT 4000
#define APP_DEFAULT_BIND "127.0.0.1"
#define APP_DEFAULT_SALT "user socket"
#define APP_STOP_TIMEOUT_MS 5000
#define APP_MAX_ORIGINS 64

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
	int max_frame; /* --max-frame-size, 0: the endpoint's default */
	bool help;
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
	        "  --secret-key-base S      secret for tokens (default: $SECRET_KEY_BASE,\n"
	        "                           else a fixed development secret)\n"
	        "  --mint-token USER_ID     print a Phoenix.Token for USER_ID and exit\n"
	        "  --salt S                 the token's salt with --mint-token (default \"%s\")\n"
	        "  --help                   print this help and exit\n"
	        "\n"
	        "Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot start (port in use),\n"
	        "2 on a bad command line.\n",
	        APP_DEFAULT_PORT, APP_DEFAULT_BIND, TP_DEFAULT_MAX_FRAME, APP_DEFAULT_SALT);
}

static int
app_usage_error(const app_def *app, const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", app->name ? app->name : "phx-app");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '%s --help'.\n", app->name ? app->name : "phx-app");
	return APP_EXIT_USAGE;
}

/* Parses a decimal integer in [lo, hi]; returns 0 or -1. */
static int
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

/* Splits o->check_origin at commas into o->origins; returns 0 or -1. */
static int
app_split_origins(app_opts *o)
{
	size_t n = 0;
	char *save = NULL;
	for (char *tok = strtok_r(o->check_origin, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ' || *tok == '\t')
			tok++;
		size_t len = strlen(tok);
		while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
			tok[--len] = '\0';
		while (len > 0 && tok[len - 1] == '/') /* "http://h:4000/" is "http://h:4000" */
			tok[--len] = '\0';
		if (len == 0)
			continue;
		if (n == APP_MAX_ORIGINS)
			return -1;
		o->origins[n++] = tok;
	}
	o->origins[n] = NULL;
	return n > 0 ? 0 : -1;
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
		static const char *const known[] = {"--port",           "--bind",
		                                    "--schedulers",     "--log-level",
		                                    "--check-origin",   "--secret-key-base",
		                                    "--mint-token",     "--salt",
		                                    "--max-frame-size", NULL};
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
			if (!o->check_origin || app_split_origins(o) < 0)
				return app_usage_error(app, "bad --check-origin '%s'", val);
		} else if (strcmp(flag, "--max-frame-size") == 0) {
			if (app_parse_int(val, 1, (long)TP_MAX_MAX_FRAME, &o->max_frame) < 0)
				return app_usage_error(
				    app, "bad --max-frame-size '%s' (1..1073741824)", val);
		} else if (strcmp(flag, "--secret-key-base") == 0) {
			if (!*val)
				return app_usage_error(app, "empty --secret-key-base%s", "");
			o->secret = val;
		} else if (strcmp(flag, "--mint-token") == 0) {
			o->mint_user = val;
		} else if (strcmp(flag, "--salt") == 0) {
			o->salt = val;
		}
	}
	if (o->salt && !o->mint_user && !o->help)
		return app_usage_error(app, "--salt goes with --mint-token%s", "");
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
	              .log_level = RT_LOG_INFO};
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

	if (app_probe_port(app, o.bind, o.port) < 0) {
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

	ch_endpoint_opts chopts = {.handler = app->socket, .secret_key_base = o.secret};
	ch_endpoint *ep = ch_endpoint_start(&chopts);
	if (!ep) {
		fprintf(stderr, "%s: cannot start the channel endpoint\n", app->name);
		rt_shutdown();
		rc = APP_EXIT_FAILURE;
		goto out;
	}

	/* The app's routes, each with an app_ctx as udata (see launcher.h). */
	size_t nroutes = app->nroutes;
	app_ctx *ctxs = calloc(nroutes ? nroutes : 1, sizeof(*ctxs));
	tp_route *routes = calloc(nroutes ? nroutes : 1, sizeof(*routes));
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
	    .nroutes = nroutes,
	    .static_dir = static_dir,
	    .static_aliases = nalias ? (const char *const *)aliases : NULL,
	    .check_origin = o.check_origin != NULL,
	    .origins = o.check_origin ? o.origins : NULL,
	    .max_frame = (size_t)o.max_frame,
	};
	tp = tp_endpoint_start(&tpopts);
	if (!tp) {
		fprintf(stderr, "%s: cannot listen on %s:%d (is the port in use?)\n", app->name,
		        o.bind, o.port);
		goto stop_channels;
	}
	int port = tp_endpoint_port(tp) > 0 ? tp_endpoint_port(tp) : o.port;
	if (strchr(o.bind, ':'))
		rt_log_info("%s listening on http://[%s]:%d", app->name, o.bind, port);
	else
		rt_log_info("%s listening on http://%s:%d", app->name, o.bind, port);

	rt_pid root = ch_endpoint_supervisor(ep);
	rt_pid watch = rt_spawn(&watch_behaviour, &root, sizeof(root));
	int sig = app_wait_signal(&stop_set);
	rt_exit(watch, "kill");
	bool tree_down = !rt_alive(root);
	if (!tree_down)
		rt_log_info("%s: %s received, shutting down", app->name,
		            sig == SIGINT ? "SIGINT" : "SIGTERM");
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
	return rc;
}
