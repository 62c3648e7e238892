/*
 * endpoint.h: the endpoint's data, shared by the files of the HTTP endpoint
 * (not for apps).
 *
 *   endpoint.c   tp_endpoint_start/stop, the listener processes (one per
 *                scheduler), the per-scheduler shards (timeout lists and
 *                counters), stats.
 *   conn.c       the connection process: the I/O core (conn.h).
 *   serve.c      HTTP serving: requests, app routes, static files, errors.
 *   websocket.c  the WebSocket transport of the Phoenix socket.
 *   connect.c    what every transport of the Phoenix socket does with the
 *                request that opens it (params, check_origin).
 *   longpoll*.c  the long-poll transport of the Phoenix socket (longpoll.h).
 *   static.c     the in-memory cache of static files.
 *
 * Threading.  Every connection process is pinned to the scheduler of the
 * listener that accepted it, and the listener owns that scheduler's shard: the
 * shard's lists are touched only by that one thread (connections add and
 * remove themselves, the listener sweeps them), so they need no lock.  The
 * shard's counters are atomics because tp_endpoint_stats and
 * tp_endpoint_stop read them from other threads.  struct tp_endpoint is
 * written by tp_endpoint_start only, except its atomics (listening sockets
 * and listener pids change as listeners restart and stop; the stop's
 * state); every thread reads it.
 */
#ifndef transports_endpoint_h
#define transports_endpoint_h

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channels/transport.h"
#include "runtime/xalloc.h"
#include "transports/http.h"
#include "transports/transports.h"

/* Private message tags (below the channels' 0xFFFE.... and the runtime's). */
enum {
	/* to a connection */
	TP_MSG_TIMEOUT = 0xFFFD0100u, /* the sweep found the deadline passed */
	TP_MSG_STOP,                  /* end now (sent to self from flush) */
	TP_MSG_RESUME,                /* output drained: parse buffered HTTP input */
	TP_MSG_SHUTDOWN,              /* endpoint stop: 1001 / finish the response */
	TP_MSG_ABORT,                 /* endpoint stop timed out: hard close */
	TP_MSG_DRAIN,                 /* the drain: close the socket as Phoenix's drainer */
	/* to a listener */
	TP_LST_TICK = 0xFFFD0200u, /* sweep the shard's timeout lists */
	TP_LST_ACCEPT,             /* resume accepting after EMFILE */
	TP_LST_STOP,               /* close the listening socket, shut connections down */
	TP_LST_ABORT,              /* hard-close every connection */
	TP_LST_EMPTY,              /* stopping: the shard's last connection is gone */
	TP_LST_DRAIN,              /* close the listening socket, list the sockets (payload:
	                              the drainer's pid) */
	TP_LST_MEM,                /* listener 0: read the RSS against the memory budget */
	/* to the drainer (drain.c) */
	TP_DRN_LIST = 0xFFFD0400u, /* a listener's sockets: m->buf holds rt_pids */
	TP_DRN_NEXT,               /* to self: the next batch is due */
	TP_DRN_COLLECTED,          /* to self: stop waiting for the listeners' lists */
};

/* Timeout lists of a shard: each holds connections in deadline order because
 * every connection joins at the tail with now + the list's fixed duration. */
enum {
	TQ_NONE = 0,
	TQ_HTTP,  /* HTTP: keep-alive idle or request in progress (http_idle_ms) */
	TQ_WS,    /* open WebSocket: no client data for ws_idle_ms */
	TQ_CLOSE, /* closing: close handshake or lingering close (close_wait_ms) */
	TQ_TLS,   /* HTTPS: the TLS handshake (tls_handshake_ms) */
	TQ_COUNT
};

typedef struct conn conn;
typedef struct lp_table lp_table;

/* A timeout list: connections linked through conn.tq_prev/tq_next. */
typedef struct tq_list {
	conn *head, *tail;
} tq_list;

/* Per-scheduler data: written by that scheduler's thread only. */
typedef struct tp_shard {
	_Alignas(64) tq_list lists[TQ_COUNT];
	/* counters (tp_stats) */
	_Atomic uint64_t accepted, open, ws_open, slow_disconnects, closed_1009, closed_1002,
	    closed_1007, closed_1011, http_requests, http_parsed, tls_accepted, tls_handshakes,
	    tls_failed, accept_paused;
} tp_shard;

/* A cached static file. */
typedef struct tp_file {
	char *url;          /* decoded URL path, e.g. "/js/app.js" */
	const char *ctype;  /* static string */
	rt_buf *body;       /* the whole file (shared by every response) */
	rt_buf *head_keep;  /* 200 head with Connection: keep-alive */
	rt_buf *head_close; /* 200 head with Connection: close */
} tp_file;

typedef struct tp_static {
	tp_file *files; /* sorted by url */
	size_t n;
	size_t bytes;
} tp_static;

/* Loads every regular file under dir (may be NULL) and the alias pairs (may be
 * NULL).  Never NULL; problems are logged and the file skipped. */
tp_static *tp_static_load(const char *dir, const char *const *aliases);
void tp_static_free(tp_static *s);
/* The file for a decoded URL path ("/" and ".../" mean index.html), or NULL. */
const tp_file *tp_static_find(const tp_static *s, const char *path, size_t len);
/* The content type for a file name, by extension. */
const char *tp_static_ctype(const char *name);

/* An app route, copied. */
typedef struct tp_route_c {
	char *method, *path;
	tp_handler_fn fn;
	void *udata;
} tp_route_c;

struct tp_endpoint {
	/* Configuration (read-only after start). */
	ch_endpoint *socket;
	char *ws_path; /* "<socket_path>/websocket" */
	char *lp_path; /* "<socket_path>/longpoll" */
	lp_table *lp;  /* long-poll sessions (longpoll_table.c), NULL without a socket */
	tp_route_c *routes;
	size_t nroutes;
	bool check_origin;
	char **origins;
	size_t norigins;
	size_t max_frame, max_outbound;
	uint32_t tq_ms[TQ_COUNT]; /* duration of each timeout list */
	int64_t t0_ms;            /* deadlines are uint32 ms since this (rt_now_ms) */
	tp_http_config http;
	tp_static *files;
	int port; /* the bound port */
	/* HTTPS: the context (tls.h), the bound port; NULL and 0 without. */
	struct ssl_ctx_st *tls;
	int https_port;

	/* Listeners and shards: index = scheduler. */
	int nsched;
	_Atomic int *lfds;     /* listening sockets, owned by the endpoint (-1: closed) */
	_Atomic int *spare;    /* a dup of each for its listener's first start, or -1 */
	_Atomic int *tls_lfds; /* the same for the HTTPS port (NULL without) */
	_Atomic int *tls_spare;
	_Atomic rt_pid *listeners; /* the current listener of each scheduler (restarts) */
	rt_pid sup;                /* the listeners' supervisor */
	rt_pid parent;             /* its parent (ch_endpoint_supervisor), or RT_NOPID */
	tp_shard *shards;
	_Atomic int64_t last_accept_warn_ms; /* accept warnings: at most one a second */
	_Atomic uint32_t drain_ms;           /* stop: how long connections may take */
	_Atomic int64_t drain_until;         /* stop began (rt_now_ms deadline), else 0 */
	_Atomic int64_t abort_until;         /* aborting: when listeners give up waiting */
	_Atomic bool stopping;               /* the stop began: connections shut down */
	_Atomic bool aborting;               /* ... and timed out: connections close at once */
	/* The drain (drain.c) began: listeners closed, no new socket opens, no
	 * keep-alive; and how many sockets it has told to close. */
	_Atomic bool draining;
	_Atomic uint64_t drained;
	/* The memory budget (opts.max_memory_mb in bytes, 0: none): listener 0
	 * writes rss and mem_over every TP_MEM_CHECK_MS, connections read
	 * mem_over and count mem_refused. */
	uint64_t mem_budget;
	_Atomic uint64_t rss;
	_Atomic bool mem_over;
	_Atomic uint64_t mem_refused;
	_Atomic uint64_t mem_cut;
};

/* The memory budget's hysteresis: whether the endpoint refuses new sockets
 * with a resident size of rss bytes and a budget of budget bytes (not 0),
 * given whether it did (over): it starts above the budget and ends below
 * 90% of it. */
static inline bool
tp_mem_over(bool over, uint64_t rss, uint64_t budget)
{
	return over ? rss >= budget / 10 * 9 : rss > budget;
}

/* Whether a consumer with queued bytes waiting for its client is to be
 * cut now: over the memory budget and over TP_MEM_CUT_QUEUED behind. */
static inline bool
tp_mem_cut(const tp_endpoint *ep, size_t queued)
{
	return queued > TP_MEM_CUT_QUEUED &&
	       atomic_load_explicit(&ep->mem_over, memory_order_relaxed);
}

/* Refuses a new socket when over the memory budget: true after counting
 * it (the caller answers 503). */
static inline bool
tp_mem_refuse(tp_endpoint *ep)
{
	if (!atomic_load_explicit(&ep->mem_over, memory_order_relaxed))
		return false;
	atomic_fetch_add_explicit(&ep->mem_refused, 1, memory_order_relaxed);
	return true;
}

/* Milliseconds since the endpoint started (deadlines; compare with tp_before). */
static inline uint32_t
tp_now(const tp_endpoint *ep)
{
	return (uint32_t)(rt_now_ms() - ep->t0_ms);
}

/* a is at or before b (wrap-safe for differences below 24 days). */
static inline bool
tp_before(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) <= 0;
}

static inline void
tp_count(_Atomic uint64_t *ctr, int64_t delta)
{
	atomic_fetch_add_explicit(ctr, (uint64_t)delta, memory_order_relaxed);
}

#endif /* transports_endpoint_h */
