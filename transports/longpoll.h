/*
 * longpoll.h: the long-poll transport of the Phoenix socket (not for apps),
 * as Phoenix 1.7's Phoenix.Transports.LongPoll speaks it on the wire.
 *
 *   longpoll.c          the HTTP side: requests for <socket_path>/longpoll,
 *                       handed over by serve.c.  A request that must wait
 *                       for a session (a poll, a POST, a new session) is
 *                       parked: the connection holds its input
 *                       (conn_hold), sends an op to the session and answers
 *                       when the session's LP_MSG_ANSWER comes back, or when
 *                       the session goes down, or at its own deadline.
 *   longpoll_session.c  the session process (Phoenix's LongPoll.Server): it
 *                       owns the client's Phoenix socket (implements
 *                       channels/transport.h), buffers frames between polls,
 *                       keeps at most one waiting poll, ends when nobody
 *                       polls for 1.5 windows or the socket closes it.
 *   longpoll_table.c    the sessions of the endpoint: the table session id ->
 *                       pid, the session tokens, the sessions' supervisor,
 *                       counters, and lp_route: THE place where an op for a
 *                       session is delivered.
 *   longpoll_remote.c   ops for a session of another node of the cluster,
 *                       and their answers, as frames of CL_SVC_LONGPOLL.
 *
 * Threading: the table is shared by every scheduler thread (a mutex guards
 * the map; counters are atomics; the rest is written once at start).
 * Everything else runs on the connection's or the session's own process.
 */
#ifndef transports_longpoll_h
#define transports_longpoll_h

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channels/token.h"
#include "cluster/cluster.h"
#include "runtime/strmap.h"
#include "transports/conn.h"

/* Message tags (the transports' range, endpoint.h). */
enum {
	/* to a session */
	LP_OP_POLL = 0xFFFD0300u, /* lp_op: a GET waits for messages (from: who waits) */
	LP_OP_POST,               /* lp_op + m->buf: packed client messages (lp_pack_*) */
	LP_SESS_WINDOW,           /* to self: a poll's window passed (payload: its ref) */
	LP_SESS_TICK,             /* to self: the inactivity check */
	LP_SESS_DRAIN,            /* the drain (drain.c): end as a drained socket */
	/* to a connection */
	LP_MSG_ANSWER = 0xFFFD0310u, /* lp_answer + m->buf: the JSON body to answer with */
	LP_MSG_DEADLINE,             /* to self: a parked request's deadline (payload: ref) */
	LP_MSG_NOSESSION,            /* another node has no such session (payload: ref) */
};

/* The payload of LP_OP_POLL and LP_OP_POST: the reference the answer
 * carries back, and where the answer goes: the message's sender when
 * origin is "", else the node named origin (longpoll_remote.c), which
 * hands it to the request that waits for ref. */
typedef struct lp_op {
	uint64_t ref;
	char origin[CL_NAME_MAX];
} lp_op;

/* Who waits for a session's answer (a copy of an op's addressee). */
typedef struct lp_waiter {
	rt_pid pid; /* a connection of this node (node "") */
	uint64_t ref;
	char node[CL_NAME_MAX]; /* "": this node; else the node of the connection */
} lp_waiter;

/* The payload of LP_MSG_ANSWER; m->buf holds the body (JSON, or NULL). */
typedef struct lp_answer {
	uint64_t ref;
	int32_t http_status; /* the HTTP status (200; the JSON body has the real one) */
} lp_answer;

/* A session's name, as its token carries it: the node that holds it and a
 * random 128-bit id.  A plain value. */
#define LP_ID_LEN 16
#define LP_NODE_MAX 255
typedef struct lp_sid {
	uint8_t id[LP_ID_LEN];
	char node[LP_NODE_MAX + 1];
} lp_sid;

/* Parked request kinds (conn.u.lp.op). */
enum { LP_PARK_NONE, LP_PARK_OPEN, LP_PARK_POLL, LP_PARK_POST };

/* A parked request waits this long past the window for its answer. */
#define LP_DEADLINE_MARGIN_MS 2000

/* At most this many messages of one POST are dispatched (Phoenix 1.7.22+). */
#define LP_MAX_BATCH 100

/* The sessions of one endpoint.  Created by tp_endpoint_start, freed by
 * endpoint_free after the sessions' supervisor is gone.  Shared by every
 * thread: `mu` guards `map`; counters are atomics; the rest is read-only
 * after lp_table_new. */
struct lp_table {
	pthread_mutex_t mu;
	rt_strmap map; /* hex session id -> pid (uintptr_t) */
	ch_token_key *key;
	tp_endpoint *ep; /* its endpoint (the memory budget) */
	rt_pid sup;      /* the sessions' dynamic supervisor */
	cl_node *cl;     /* the endpoint's cluster, or NULL */
	char node[LP_NODE_MAX + 1];
	/* Requests of this node parked on another node's session: ref (hex) ->
	 * the connection's pid, under mu (longpoll_remote.c). */
	rt_strmap pending;
	bool remote_registered;
	uint32_t window_ms, max_sessions, max_frames;
	size_t max_bytes;
	_Atomic uint64_t next_ref;
	/* tp_stats.lp_*; open = sessions alive or starting (the limit's count) */
	_Atomic uint64_t open, opened, expired, slow, binary_dropped, refused, lines_ignored,
	    bad_posts;
	/* tp_stats.lp_remote_*: ops sent to other nodes' sessions, ops of other
	 * nodes served here, frames refused as malformed, answers lost (the
	 * link could not take them, or nobody waited any more) */
	_Atomic uint64_t remote_sent, remote_served, remote_refused, remote_lost;
};

/* The spawn argument of a session (copied by the runtime): the request that
 * opens it, strings packed after the header (query, peer, origin, user
 * agent; a length of UINT32_MAX is an absent header). */
typedef struct lp_start {
	tp_endpoint *ep;
	rt_pid conn; /* who gets the LP_MSG_ANSWER */
	uint64_t ref;
	uint8_t id[LP_ID_LEN];
	uint32_t query_len, peer_len, origin_len, ua_len;
	char data[];
} lp_start;

/* The session process (longpoll_session.c). */
extern const rt_behaviour lp_session_behaviour;

/* ---- the HTTP side (longpoll.c), for serve.c; on the connection's process ---- */

/* Answers a request for <socket_path>/longpoll, or parks it (then the
 * connection's input is held until the answer is written).  keep: the
 * connection may stay open after the answer. */
void tp_lp_request(conn *c, const tp_http_request *req, bool keep);

/* Whether a request is parked on c. */
static inline bool
tp_lp_parked(const conn *c)
{
	return c->u.lp.op != LP_PARK_NONE;
}

/* A runtime message for a parked request (the answer, the deadline, the
 * session's DOWN); stale ones are dropped. */
void tp_lp_info(conn *c, rt_msg *m);

/* Endpoint stop while parked: a waiting poll is answered (204) now and the
 * connection closes after it; other parked requests finish first. */
void tp_lp_shutdown(conn *c);

/* The connection ends: releases what a parked request holds. */
void tp_lp_release(conn *c);

/* ---- the sessions (longpoll_table.c) ---- */

/* Makes the table of ep (options from o), deriving the token key from the
 * socket's secret_key_base.  NULL when ep has no socket. */
lp_table *lp_table_new(tp_endpoint *ep, const tp_endpoint_opts *o);

/* Starts the sessions' supervisor under parent (the listeners' subtree).
 * 0, or -1. */
int lp_table_start(lp_table *t, rt_pid parent);

/* Frees the table (every session has ended). */
void lp_table_free(lp_table *t);

/* Verifies a session token (the query's token) and reads the session's name
 * from it.  0, or -1 when it does not verify (garbage, forged, expired, or
 * not a session token): then it is simply "no session". */
int lp_token_verify(const lp_table *t, const char *tok, size_t len, lp_sid *out);

/* Signs the session token of sid into out (cap >= CH_TOKEN_MAX_LEN); its
 * length, or -1. */
int lp_token_sign(const lp_table *t, const uint8_t id[LP_ID_LEN], char *out, size_t cap);

/*
 * THE routing interface: delivers op (LP_OP_POLL or LP_OP_POST) with
 * data[0, len) and buf (taken over in every case) to the session named by
 * sid, from the calling process, which gets the session's LP_MSG_ANSWER.
 * Returns 0 when delivered to a session of this node; *mon is then a monitor
 * of it held by the caller (its DOWN means no answer will come).  Returns 0
 * with *mon = 0 when sent to another node (lp_remote_route): the answer is
 * LP_MSG_ANSWER, or LP_MSG_NOSESSION when that node has no such session, and
 * the caller's deadline is the only other guard.  Returns -1 when there is
 * no such session here, or its node cannot be reached.  Any process.
 */
int lp_route(lp_table *t, const lp_sid *sid, uint32_t op, const void *data, size_t len, rt_buf *buf,
             uint64_t *mon);

/* The pid of this node's session id, or RT_NOPID. */
rt_pid lp_lookup(lp_table *t, const uint8_t id[LP_ID_LEN]);

/* Sends a session's answer (body, a JSON text, taken) to whoever waits for
 * it: an LP_MSG_ANSWER to a connection of this node, or a frame to the
 * waiter's node.  From the session's process. */
void lp_answer_to(lp_table *t, const lp_waiter *w, rt_buf *body);

/* ---- other nodes' sessions (longpoll_remote.c) ---- */

/* Registers the CL_SVC_LONGPOLL handler when t has a cluster; 0, or -1. */
int lp_remote_start(lp_table *t);

/* Unregisters it (before the table is freed; the cluster still runs). */
void lp_remote_stop(lp_table *t);

/* Sends op (LP_OP_POLL, or LP_OP_POST with the packed messages buf,
 * taken) for the session sid of another node, on behalf of the calling
 * process (a connection), which gets LP_MSG_ANSWER or LP_MSG_NOSESSION
 * for ref.  0 when sent; -1 when the node is not up or the link cannot
 * take the frame.  Any process. */
int lp_remote_route(lp_table *t, const lp_sid *sid, uint32_t op, uint64_t ref, rt_buf *buf);

/* Reads a CL_SVC_LONGPOLL frame (the formats are in longpoll_remote.c)
 * from body[0, len) into *u, which the caller destroys
 * (msgpack_unpacked_destroy) whatever the result: NULL when it is one
 * well-formed frame, its fields of the right types and counts, else what is
 * wrong (a static string).  Pure; any thread. */
struct msgpack_unpacked;
const char *lp_remote_parse(const void *body, size_t len, struct msgpack_unpacked *u);

/* The messages of a request frame that lp_remote_parse accepted (its array
 * of str and bin), packed again for the session (LP_PACK_HDR).  Pure. */
struct msgpack_object;
rt_buf *lp_remote_pack(const struct msgpack_object *msgs);

/* The request ref is answered or abandoned: forget it. */
void lp_remote_forget(lp_table *t, uint64_t ref);

/* The session process registers itself under its id once its socket is
 * open, and unregisters when it ends (only if still registered as self). */
void lp_register(lp_table *t, const uint8_t id[LP_ID_LEN], rt_pid pid);
void lp_unregister(lp_table *t, const uint8_t id[LP_ID_LEN], rt_pid pid);

/* A new reference for a parked request (unique per endpoint). */
uint64_t lp_next_ref(lp_table *t);

/* Packed client messages of a POST (the LP_OP_POST buffer): each is its
 * length (4 bytes, host order), 1 byte (1: binary, 0: text), its bytes. */
#define LP_PACK_HDR 5

/* The messages of a POST body body[0, n) (body may be NULL when n is 0),
 * packed: with ndjson, each non-empty line of the first LP_MAX_BATCH (split
 * on "\n" and "\r\n") is a text message when it starts with "[", else the
 * standard base64 (padded, strict) of a binary one, and *ignored counts the
 * lines past LP_MAX_BATCH; without, the whole body is one text message and
 * *ignored is 0.  Returns a new buffer, or NULL when a line is not valid
 * base64.  Pure (longpoll.c); any thread. */
rt_buf *lp_pack_body(const uint8_t *body, size_t n, bool ndjson, uint64_t *ignored);

#endif /* transports_longpoll_h */
