/*
 * transports.h: the HTTP endpoint — listeners, HTTP/1.1 connections, the
 * Phoenix socket mounted over WebSocket, the application's own HTTP routes
 * and static files.
 *
 * One listener per scheduler (SO_REUSEPORT) accepts connections; each
 * connection is a process pinned to that scheduler, which owns the fd, parses
 * HTTP, answers app routes and static files, and after a WebSocket upgrade
 * on `<socket_path>/websocket` becomes the Phoenix socket of that client
 * (channels/transport.h).
 */
#ifndef transports_transports_h
#define transports_transports_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channels/channels.h"
#include "runtime/rt.h"
#include "transports/http.h"

/* What an app route handler answers.  The handler fills it in; the
 * connection writes it out and releases body. */
typedef struct tp_response {
	int status;                /* default 200 */
	const char *content_type;  /* default "application/json" */
	rt_buf *body;              /* may be NULL for an empty body */
	const char *extra_headers; /* "Name: value\r\n"... or NULL */
} tp_response;

typedef void (*tp_handler_fn)(const tp_http_request *req, tp_response *resp, void *udata);

typedef struct tp_route {
	const char *method; /* "GET", "POST", ... ; a path matched with another method gets 405 */
	const char *path;   /* exact path */
	tp_handler_fn fn;
	void *udata;
} tp_route;

/* tp_endpoint_opts.port: bind any free port (tests; see tp_endpoint_port). */
#define TP_PORT_ANY (-1)

/* tp_endpoint_opts.max_frame: Phoenix's (WebSockAdapter's) 10,000,000 bytes
 * by default; at most 1 GiB. */
#define TP_DEFAULT_MAX_FRAME ((size_t)10000000)
#define TP_MAX_MAX_FRAME ((size_t)1 << 30)

typedef struct tp_endpoint_opts {
	const char *bind;        /* default "127.0.0.1" */
	int port;                /* default (0) 4000; TP_PORT_ANY: a free port */
	ch_endpoint *socket;     /* the Phoenix socket endpoint, or NULL */
	const char *socket_path; /* default "/socket" */
	const tp_route *routes;
	size_t nroutes;
	/* Files served for GET/HEAD ("/" serves index.html); NULL: none. */
	const char *static_dir;
	/* Pairs {url path, file path}, NULL-terminated (e.g. the npm phoenix.js). */
	const char *const *static_aliases;
	/* Refuse upgrades whose Origin is not in origins (403); no Origin passes. */
	bool check_origin;
	/* NULL-terminated allowed origins, as Phoenix's check_origin list:
	 * "http://localhost:4000", "//host" (any scheme); a host starting with
	 * "*." matches that domain and its subdomains; an entry without a port
	 * means its scheme's default ("https://h": 443), "//h" any port. */
	const char *const *origins;
	/* Largest WebSocket message a client may send (default TP_DEFAULT_MAX_FRAME,
	 * at most TP_MAX_MAX_FRAME): a frame header announcing more, or fragments
	 * adding up to more, close the connection with 1009. */
	size_t max_frame;
	/* Bytes queued for one WebSocket client before it is disconnected as a
	 * slow consumer (default 4 MiB + max_frame). */
	size_t max_outbound;
	uint32_t ws_idle_ms;   /* close a WebSocket with no client frame for this long (60000) */
	uint32_t http_idle_ms; /* keep-alive idle / slow request timeout (15000) */
	size_t max_body;       /* HTTP request body limit (default 1 MiB -> 413) */
	int backlog;           /* listen backlog (default 4096) */
	/* Share the port with other processes (of the same user) that listen on
	 * it with SO_REUSEPORT too: the kernel spreads connections over all of
	 * them (several nodes of a cluster behind one port).  false (default):
	 * a port another socket listens on is refused (see tp_endpoint_start). */
	bool reuse_port;
	/* Long polling (<socket_path>/longpoll, as Phoenix's LongPoll transport):
	 * how long a poll waits for messages (default 10000 ms, Phoenix's
	 * window_ms; a session not polled for 1.5 windows ends), sessions per
	 * node (default 100000; past it a new session gets HTTP 503), and the
	 * frames a session buffers for its client between two polls (default
	 * 10000 frames and max_outbound bytes; past either the session ends as
	 * a slow consumer).  POST bodies are limited by max_body (413). */
	uint32_t lp_window_ms;
	uint32_t lp_max_sessions;
	uint32_t lp_max_frames;
	size_t lp_max_bytes;
	/* HTTPS (as Phoenix's endpoint `https:` config): a second listener on
	 * https_port (0: none; TP_PORT_ANY: a free port, see
	 * tp_endpoint_https_port) beside the plain one, on the same bind
	 * address, serving the same routes, WebSocket and long polling over TLS
	 * 1.2+ (OpenSSL; ALPN http/1.1).  tls_cert: PEM certificate (then its
	 * chain), tls_key: its PEM private key (no passphrase); both required
	 * with https_port.  A client has tls_handshake_ms (default 5000, as
	 * Ranch) to complete the handshake; one that fails or stalls is closed
	 * quietly (a debug log line, counted in tp_stats.tls_failed). */
	int https_port;
	const char *tls_cert;
	const char *tls_key;
	uint32_t tls_handshake_ms;
	/* The node's memory budget in MiB (0: none).  The process's resident
	 * size (RSS, /proc/self/statm, read every TP_MEM_CHECK_MS by one
	 * listener) over the budget makes the endpoint refuse new sockets (a
	 * WebSocket upgrade or a new long-poll session gets 503 with
	 * Retry-After, counted in tp_stats.mem_refused; plain HTTP, open
	 * sockets and polls of existing sessions go on) until it is back under
	 * 90% of the budget.  Meanwhile the slowest consumers are cut: a
	 * WebSocket with over TP_MEM_CUT_QUEUED bytes already queued when more
	 * comes, or a long-poll session with that much waiting for a poll, is
	 * disconnected as a slow consumer (counted in tp_stats.mem_cut; without
	 * the budget only max_outbound / lp_max_bytes cut them). */
	uint32_t max_memory_mb;
} tp_endpoint_opts;

#define TP_MEM_CHECK_MS 250
#define TP_MEM_CUT_QUEUED ((size_t)256 << 10)

/* Checks that cert_file and key_file are readable PEM files and that the key
 * matches the certificate, as tp_endpoint_start would load them: 0, or -1
 * with the reason in err[0, cap) (e.g. for a launcher's usage error). */
int tp_tls_check(const char *cert_file, const char *key_file, char *err, size_t cap);

typedef struct tp_endpoint tp_endpoint;

/* Binds and starts listening (after rt_start and ch_endpoint_start).  Returns
 * NULL on failure (message on stderr: e.g. port in use: the listening sockets
 * use SO_REUSEPORT among themselves, but a port that another socket already
 * listens on is refused, not shared, unless opts.reuse_port).  Everything in opts is copied, except
 * route handlers' udata and the socket endpoint.  Static files are read into memory here (files
 * over 8 MiB are skipped with a warning); a missing static_dir or alias file is a warning, not a
 * failure. */
tp_endpoint *tp_endpoint_start(const tp_endpoint_opts *opts);

/* The port the endpoint listens on (useful with opts.port 0). */
int tp_endpoint_port(const tp_endpoint *ep);

/* The HTTPS port (useful with opts.https_port TP_PORT_ANY), or 0 without one. */
int tp_endpoint_https_port(const tp_endpoint *ep);

/* Stops accepting, closes every WebSocket with 1001 (going away) after what
 * is queued for it, lets HTTP responses in flight finish (idle keep-alive
 * connections close at once), waits up to timeout_ms for connections to
 * finish, then closes the rest at once (waiting up to 1 s more), frees.  It
 * shuts down the listeners' subtree of the node's tree (see
 * ch_endpoint_supervisor); when ch_endpoint_stop has already stopped the
 * tree (the same drain, 5 s), it only frees.  Call it from outside the
 * runtime's schedulers (e.g. the main thread), before ch_endpoint_stop and
 * rt_shutdown. */
void tp_endpoint_stop(tp_endpoint *ep, uint32_t timeout_ms);

/*
 * The drain at shutdown, as Phoenix 1.7's socket drainer (the socket's
 * `drainer:` option, defaults below as Phoenix's): stop accepting, then close
 * the sockets (WebSockets with 1012 Service Restart, long-poll sessions
 * ended) in batches of batch_size, one batch every interval_ms, so that
 * clients reconnect spread out (to the other nodes of a cluster) instead of
 * all at once; what timeout_ms leaves is closed by the normal stop.
 */
#define TP_DRAIN_BATCH_SIZE 10000
#define TP_DRAIN_INTERVAL_MS 2000
#define TP_DRAIN_TIMEOUT_MS 30000
typedef struct tp_drain_opts {
	uint32_t batch_size;  /* sockets per batch (0: TP_DRAIN_BATCH_SIZE) */
	uint32_t interval_ms; /* between two batches (0: back to back) */
	uint32_t timeout_ms;  /* the whole drain at most (0: no drain) */
} tp_drain_opts;

/* Begins the drain (once; any thread, after tp_endpoint_start): closes the
 * listening sockets at once, refuses new sockets (503) and keep-alive on
 * the connections left, and spawns the drainer, which sends the batches and
 * exits after the last one (or at timeout_ms).  Returns the drainer's pid
 * (wait for its exit, e.g. rt_alive, then call tp_endpoint_stop; to stop at
 * once instead, rt_exit(pid, "kill") and tp_endpoint_stop), or RT_NOPID
 * when there is no drain (timeout_ms 0, already draining, no memory). */
rt_pid tp_endpoint_drain(tp_endpoint *ep, const tp_drain_opts *o);

/* Counters since start; open and ws_open are the connections open now,
 * lp_open the long-poll sessions alive now.  http_parsed: bytes the HTTP
 * request parser looked at (its work: about the request bytes received,
 * however they were split across reads).  lp_*: sessions opened, ended
 * unpolled (expired), ended as slow consumers; binary frames dropped (a V2
 * binary frame cannot travel in a long-poll answer); new sessions refused
 * at the sessions limit (503); POST lines ignored past the 100 of a batch;
 * POST bodies refused as malformed (400).  lp_remote_*: polls and POSTs
 * sent to another node's session, served here for another node, frames
 * from other nodes refused as malformed, answers lost between nodes.
 * drained: sockets closed by the drain (tp_endpoint_drain).
 * tls_accepted: connections accepted on the HTTPS port; tls_handshakes:
 * handshakes completed; tls_failed: handshakes failed (not TLS, refused by
 * OpenSSL, the peer closed) or timed out.  accept_paused: times a listener
 * stopped accepting for 100 ms because the process (or the system) was out
 * of file descriptors or socket memory (EMFILE, ENFILE, ENOBUFS, ENOMEM;
 * a warning is logged at most once a second for the whole endpoint); the
 * clients wait in the listen backlog meanwhile.  rss: the resident size
 * last read (bytes; 0 without a memory budget); mem_over: 1 while over the
 * budget (refusing new sockets); mem_refused: new sockets refused (503)
 * because of it; mem_cut: slow consumers cut because of it. */
typedef struct tp_stats {
	uint64_t accepted, open, ws_open, slow_disconnects, closed_1009, closed_1002, closed_1007,
	    closed_1011, http_requests, http_parsed;
	uint64_t lp_open, lp_opened, lp_expired, lp_slow, lp_binary_dropped, lp_refused,
	    lp_lines_ignored, lp_bad_posts;
	uint64_t lp_remote_sent, lp_remote_served, lp_remote_refused, lp_remote_lost;
	uint64_t drained;
	uint64_t tls_accepted, tls_handshakes, tls_failed;
	uint64_t accept_paused;
	uint64_t rss, mem_over, mem_refused, mem_cut;
} tp_stats;
void tp_endpoint_stats(const tp_endpoint *ep, tp_stats *out);

#endif /* transports_transports_h */
