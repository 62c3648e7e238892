/*
 * launcher.h: the command-line launcher of a phx-c application.
 *
 * An application describes itself with an app_def (its Phoenix socket
 * handler, its HTTP routes, its static files and a development secret) and
 * hands it to app_main from its main().  app_main parses the command line,
 * starts the runtime, the channel endpoint and the HTTP endpoint, waits for
 * SIGINT or SIGTERM and shuts everything down in order:
 *
 *     rt_start -> ch_endpoint_start -> tp_endpoint_start -> "listening on ..."
 *     -> SIGTERM -> tp_endpoint_drain (listeners closed, the sockets closed
 *        in batches, WebSockets with 1012; --drain-*; a second SIGTERM or a
 *        SIGINT ends it at once)
 *     -> (SIGINT goes straight here) tp_endpoint_stop (what is left closed
 *        with 1001) -> ch_endpoint_stop -> rt_shutdown -> exit 0
 *
 * The endpoints form one supervision tree (ch_endpoint_supervisor); if it
 * stops on its own (a subsystem gave up), the node stops and exits 1.
 *
 * Flags (app_main --help prints them):
 *     --port N                 HTTP port (default 4000)
 *     --bind ADDR              address to listen on (default 127.0.0.1)
 *     --schedulers N           scheduler threads (default: one per core)
 *     --log-level LEVEL        error | warning | info | debug (default info)
 *     --check-origin O[,O...]  refuse WebSocket upgrades from other origins
 *                              (default: no origin check)
 *     --max-frame-size BYTES   largest WebSocket message a client may send
 *                              (default 10000000, as Phoenix; larger: 1009)
 *     --longpoll-window-ms N   how long a long poll waits for messages
 *                              (default 10000, as Phoenix); a session not
 *                              polled for 1.5 x N ends
 *     --secret-key-base S      token secret (default: $SECRET_KEY_BASE, else
 *                              the app's development default)
 *     --mint-token USER_ID     print a Phoenix.Token for USER_ID and exit
 *     --salt S                 salt for --mint-token (default "user socket")
 *     --reuse-port             share the HTTP port with other processes
 *                              started with --reuse-port (SO_REUSEPORT: the
 *                              kernel spreads connections); without it a
 *                              port in use is refused (exit 1)
 *     --drain-batch-size N     at SIGTERM, sockets closed per batch (default
 *                              10000, as Phoenix's socket drainer)
 *     --drain-interval-ms N    between two batches (default 2000)
 *     --drain-timeout-ms N     the whole drain at most (default 30000; what is
 *                              left closes with 1001); 0: no drain
 *     --https-port N           also serve HTTPS (and wss://, long polling over
 *                              https) on port N, as Phoenix's `https:` endpoint
 *                              config; needs --tls-cert and --tls-key
 *     --tls-cert FILE          PEM certificate (then its chain)
 *     --tls-key FILE           PEM private key of that certificate; a missing,
 *                              unreadable or mismatched pair is a usage error
 *     --help                   print the usage and exit
 *
 * Cluster flags: a clustered node needs --name and either --cluster-listen
 * (the mesh, with --peers or --seed to reach the others) or --pubsub (Redis);
 * other combinations are usage errors.  They fill a cl_opts handed to the
 * channel endpoint (ch_endpoint_opts.cluster; NULL without --name).
 *     --name NAME              node name, letters, digits and "@._-"
 *                              (e.g. node1@127.0.0.1)
 *     --cluster-listen URL     nng address to listen on (tcp://127.0.0.1:5001)
 *     --peers URL[,URL...]     addresses to dial (at most 64)
 *     --seed URL               one address to dial; others are learned
 *     --pubsub redis://H:P     the redis link instead of the mesh
 *     --heartbeat-ms N         heartbeat period (cl_opts default 500)
 *     --down-after-ms N        a silent node is down within N ms of its last
 *                              frame (default 3000; at least 2 heartbeats)
 *
 * Every app gets GET /api/cluster from the launcher: cl_stats_json of the
 * node's cluster, or {"name":"nonode@nohost","members":[]} when alone (an
 * app route of the same path takes precedence).
 *
 * `APP cluster --nodes N ...` runs N nodes as child processes instead
 * (bin/cluster_cmd.h).
 *
 * Exit codes: APP_EXIT_OK (clean stop), APP_EXIT_FAILURE (the runtime or an
 * endpoint could not start, e.g. the port is in use), APP_EXIT_USAGE (bad
 * command line).
 */
#ifndef bin_launcher_h
#define bin_launcher_h

#include <stddef.h>

#include "channels/channels.h"
#include "transports/transports.h"

enum {
	APP_EXIT_OK = 0,
	APP_EXIT_FAILURE = 1,
	APP_EXIT_USAGE = 2,
};

/*
 * What an app route handler receives as its udata: app_main wraps every
 * route of the app_def, so that handlers can reach the running endpoint
 * (for ch_endpoint_broadcast, ch_token_sign_string, ...) without global
 * state.  `udata` is the route's own tp_route.udata.
 */
typedef struct app_ctx {
	const struct app_def *app;
	ch_endpoint *endpoint;
	void *udata;
} app_ctx;

typedef struct app_def {
	const char *name;                /* program name for usage and logs ("phx-chat") */
	const char *description;         /* one line for --help, or NULL */
	const ch_socket_handler *socket; /* mounted at /socket */
	const tp_route *routes;          /* udata of each handler: const app_ctx * (above) */
	size_t nroutes;
	/* Static files, relative to the working directory or, failing that, to
	 * the directory above the executable's (so build/phx-chat finds
	 * examples/chat/static from anywhere).  NULL: none. */
	const char *static_dir;
	const char *const *static_aliases; /* pairs {url path, file path}, NULL-terminated */
	const char *default_secret;        /* development secret_key_base (>= 64 bytes) */
} app_def;

/* Parses a decimal integer in [lo, hi] into *out (a command-line value);
 * returns 0, or -1 for anything else (NULL, empty, trailing characters). */
int app_parse_int(const char *s, long lo, long hi, int *out);

/* Runs the application; returns the process exit code (APP_EXIT_*). */
int app_main(int argc, char **argv, const app_def *app);

#endif /* bin_launcher_h */
