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
	int status;               /* default 200 */
	const char *content_type; /* default "application/json" */
	rt_buf *body;             /* may be NULL for an empty body */
	const char *extra_headers; /* "Name: value\r\n"... or NULL */
} tp_response;

typedef void (*tp_handler_fn)(const tp_http_request *req, tp_response *resp, void *udata);

typedef struct tp_route {
	const char *method; /* "GET", "POST", ... ; a path matched with another method gets 405 */
	const char *path;   /* exact path */
	tp_handler_fn fn;
	void *udata;
} tp_route;

typedef struct tp_endpoint_opts {
	const char *bind;          /* default "127.0.0.1" */
	int port;                  /* default 4000 */
	ch_endpoint *socket;       /* the Phoenix socket endpoint, or NULL */
	const char *socket_path;   /* default "/socket" */
	const tp_route *routes;
	size_t nroutes;
	const char *static_dir;    /* files served for GET/HEAD; "/" serves index.html; NULL: none */
	const char *const *static_aliases; /* pairs {url path, file path}, NULL-terminated (e.g. the npm phoenix.js) */
	bool check_origin;         /* refuse upgrades whose Origin is not in origins (403) */
	const char *const *origins; /* NULL-terminated list of allowed origins ("http://localhost:4000") */
	size_t max_frame;          /* WebSocket max message (default 1 MiB -> 1009) */
	size_t max_outbound;       /* per-connection queued bytes before disconnect (default 4 MiB) */
	uint32_t ws_idle_ms;       /* close a WebSocket with no client message for this long (60000) */
	uint32_t http_idle_ms;     /* keep-alive idle / slow request timeout (15000) */
	size_t max_body;           /* HTTP request body limit (default 1 MiB -> 413) */
	int backlog;               /* listen backlog (default 4096) */
} tp_endpoint_opts;

typedef struct tp_endpoint tp_endpoint;

/* Binds and starts listening (after rt_start and ch_endpoint_start).  Returns
 * NULL on failure (message on stderr: e.g. port in use). */
tp_endpoint *tp_endpoint_start(const tp_endpoint_opts *opts);

/* Stops accepting, closes every WebSocket with 1001 (going away) after what
 * is queued for it, waits up to timeout_ms for connections to finish, frees. */
void tp_endpoint_stop(tp_endpoint *ep, uint32_t timeout_ms);

/* Counters since start. */
typedef struct tp_stats {
	uint64_t accepted, open, ws_open, slow_disconnects, closed_1009, closed_1002, closed_1007,
	    closed_1011, http_requests;
} tp_stats;
void tp_endpoint_stats(const tp_endpoint *ep, tp_stats *out);

#endif /* transports_transports_h */
