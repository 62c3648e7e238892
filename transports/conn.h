/*
 * conn.h: the connection process and its I/O core (conn.c), and the contract
 * between that core and the protocols a connection speaks (not for apps).
 *
 * A connection is one accepted TCP connection, owned by one process pinned
 * to the scheduler of the listener that accepted it.  conn.c owns the socket,
 * the input buffer, the output queue, the connection's place on its shard's
 * timeout lists, and closing.  What the bytes mean belongs to the
 * connection's current protocol, a tp_proto: HTTP serving (serve.c) first;
 * after an upgrade, the WebSocket transport of the Phoenix socket
 * (websocket.c), which switches the connection over with conn_set_proto.
 * Long polling (longpoll.h) stays HTTP: a request that waits for its
 * session process is parked (conn_hold) until the session answers.
 *
 * Dependencies go one way: endpoint.c -> serve.c -> websocket.c ->
 * connect.c, and each of them -> conn.c; conn.c reaches the protocols only
 * through the connection's tp_proto (endpoint.c gives the first one, in
 * conn_arg), and websocket.c hands a refused upgrade back to whichever
 * protocol asked.
 *
 * Everything here runs on the connection's own process (its scheduler
 * thread), except the tq_* accessors, which the listener of the same
 * scheduler uses.
 */
#ifndef transports_conn_h
#define transports_conn_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transports/endpoint.h"
#include "transports/tls.h"
#include "transports/ws.h"

/* Connection flags.  The core's: */
enum {
	F_CLOSING = 1 << 0,     /* close gracefully once the queue is written */
	F_LINGER = 1 << 1,      /* write side shut down: discard input until EOF */
	F_EOF = 1 << 2,         /* the peer shut its write side */
	F_PAUSED = 1 << 3,      /* input paused (HTTP: output over the high water mark) */
	F_WANT_WRITE = 1 << 4,  /* the last write would have blocked */
	F_DEAD = 1 << 5,        /* fd closed: the process is ending */
	F_STOP_SENT = 1 << 6,   /* TP_MSG_STOP sent to self */
	F_SHUTDOWN = 1 << 7,    /* endpoint stop seen */
	F_RESUME_SENT = 1 << 8, /* TP_MSG_RESUME sent to self */
	F_CLEAN_END = 1 << 9,   /* the peer ended its input cleanly (close frame): no linger */
	F_FOREIGN = 1 << 10,    /* queued by another process: conn_flush_foreign follows */
	F_HELD = 1 << 11,       /* input held by the protocol (conn_hold): no reading, no resume */
	/* Bits 12..15 belong to the current protocol (cleared by conn_set_proto). */
	F_PROTO_BITS = 0xF000,
};

/* Why the connection ended (the exit reason, given to the protocol's terminate). */
enum { W_NORMAL, W_SHUTDOWN, W_TIMEOUT, W_SLOW, W_RESET, W_NOMEM };

typedef struct oq_ent oq_ent;
typedef struct tp_proto tp_proto;

/*
 * One connection.  Owned by its process (and so by the scheduler thread it is
 * pinned to); the listener of that scheduler reads tq_next and deadline and
 * unlinks it (tq_remove) on the same thread.  At most 192 bytes, so that the
 * runtime's process block stays in the 256-byte class.
 */
struct conn {
	tp_endpoint *ep;
	rt_io *io;
	rt_pid pid;
	const tp_proto *proto;   /* what the bytes mean now */
	conn *tq_prev, *tq_next; /* timeout list links */
	oq_ent *oq_tail;         /* output queue (circular, NULL when empty) */
	uint8_t *in;             /* leftover input of an incomplete request/frame, or NULL */
	tls_conn *tls;           /* HTTPS: the TLS layer (tls.h); NULL: plain TCP */
	size_t oq_bytes;         /* bytes queued (headers + payloads - written) */
	size_t oq_off;           /* bytes of the head entry already written */
	uint32_t deadline;       /* tp_now() time at which the current list times out */
	uint32_t in_len, in_cap;
	/* Bytes the buffered input must reach before the protocol can use it (0:
	 * unknown), set by the protocol's input: the core grows c->in no further
	 * than that ahead of what arrived, and skips parsing until it is there. */
	uint32_t in_need;
	uint16_t flags;
	uint8_t tq;     /* TQ_* list the connection is on */
	uint8_t why;    /* W_* */
	uint16_t shard; /* = the scheduler it is pinned to */
	/* The current protocol's state (zeroed by conn_set_proto). */
	union {
		struct {
			/* The request at the start of the input (c->in, or the read
			 * buffer): how far its parse got, so that each read parses
			 * only the new bytes. */
			tp_http_state parse;
		} http; /* serve.c */
		struct {
			tp_ws_reader reader;
			ch_socket *sock; /* the Phoenix socket of this client */
		} ws;                    /* websocket.c */
		struct {
			uint64_t ref;   /* the parked request's reference, 0: none parked */
			uint64_t mon;   /* monitor of the session (0: none) */
			rt_timer timer; /* the parked request's deadline */
			char *token;    /* a parked poll's session token (malloc'ed) */
			void *retry;    /* a poll parked on another node: the new session's
			                   start argument, if that node has no such session */
			uint32_t retry_size;
			uint8_t op;  /* what is parked (longpoll.c: LP_PARK_*) */
			bool keep;   /* the parked request's keep-alive */
			bool remote; /* parked on another node's session */
		} lp;                /* serve.c + longpoll.c: a parked long-poll request */
	} u;
};

_Static_assert(sizeof(struct conn) <= 192, "keep the connection in the 256-byte process class");

/*
 * A protocol of a connection: a constant table (read-only, shared by every
 * connection and thread).  Every callback runs on the connection's process;
 * none is called once F_DEAD is set, except terminate.
 */
struct tp_proto {
	const char *name; /* "http", "websocket": logs */
	/* Parses buf[0, len) (buffered input, or the read buffer) and returns the
	 * bytes used; the rest is kept and given again, with more, next time.
	 * May switch the protocol (conn_set_proto): the core then gives the rest
	 * to the new one at once. */
	size_t (*input)(conn *c, uint8_t *buf, size_t len);
	/* The peer shut its write side (not called while lingering). */
	void (*eof)(conn *c);
	/* The connection's deadline passed; it is on no timeout list now.  Not
	 * called while F_CLOSING or F_LINGER (the core closes at once then). */
	void (*timeout)(conn *c);
	/* The endpoint stops (not called when aborting: the core closes at once). */
	void (*shutdown)(conn *c);
	/* Optional: the drain (drain.c) closes this connection's Phoenix socket
	 * as Phoenix's socket drainer does.  Protocols without a socket leave it
	 * NULL; the listener lists only connections whose protocol has it. */
	void (*drain)(conn *c);
	/* A runtime message that is not the core's own. */
	void (*info)(conn *c, rt_msg *m);
	/* The process ends (reason: the exit reason); release what the protocol
	 * holds.  The fd is closed and the queue freed already. */
	void (*terminate)(conn *c, const char *reason);
};

/* Connection process argument (built by the listener, copied by rt_spawn_on). */
typedef struct conn_arg {
	tp_endpoint *ep;
	int fd;
	const tp_proto *proto; /* the first protocol (HTTP serving) */
	tls_ctx *tls;          /* HTTPS: the endpoint's TLS context; NULL: plain TCP */
} conn_arg;

extern const rt_behaviour tp_conn_behaviour;

/* ---- the core, for protocols ---- */

/* The shard of the connection's scheduler (counters). */
tp_shard *conn_shard(const conn *c);

/* Writes "ip:port" of the peer into buf ("?" when unknown) and returns buf. */
const char *conn_peer(const conn *c, char *buf, size_t cap);

/* Switches the connection to protocol p: clears the protocol's flag bits and
 * zeroes c->u (the old protocol released what it held there). */
void conn_set_proto(conn *c, const tp_proto *p);

/* Puts c at the tail of timeout list q (TQ_*) with deadline now + q's duration. */
void conn_set_timeout(conn *c, int q);

/* Queues buffer b (the queue takes the reference; NULL and empty buffers are
 * dropped, and so is everything once F_DEAD is set). */
void conn_push(conn *c, rt_buf *b);

/* Queues payload (taking the reference) after a header of its own, hdr[0,
 * hlen) with hlen <= 10 (a WebSocket frame header), so that one payload
 * buffer can be shared by many connections. */
void conn_push_with_header(conn *c, rt_buf *payload, const uint8_t *hdr, size_t hlen);

/* The last queued entry (NULL: the queue is empty): a mark for conn_push_at
 * and conn_truncate. */
oq_ent *conn_mark(const conn *c);

/* Queues b (taking the reference) right after mark (NULL: at the head);
 * nothing after mark may have been written yet. */
void conn_push_at(conn *c, oq_ent *mark, rt_buf *b);

/* Drops every entry queued after mark (NULL: all); none of them may have
 * been written yet. */
void conn_truncate(conn *c, oq_ent *mark);

/* Writes what the socket takes of the queue now, instead of at the end of
 * the batch: 1 drained, 0 would block, -1 error (the caller finishes). */
int conn_write_now(conn *c);

/* For a process of the connection's own scheduler that queued output while
 * the connection's process could not run (the fastlane, channels/transport.h
 * push_local): marks the connection for conn_flush_foreign and returns true
 * when it was not marked yet. */
bool conn_mark_foreign(conn *c);

/* Writes what such a process queued, from that process.  It never ends the
 * connection's process: a write error reaches it as TP_MSG_STOP, and a
 * socket that would block is written by the connection's own flush once it
 * is writable.  Clears the mark. */
void conn_flush_foreign(conn *c);

/* Holds (on) or releases the connection's input: while held nothing is
 * read and buffered input is not parsed (a request parked while it waits for
 * another process); on release, input paused meanwhile is parsed again
 * (TP_MSG_RESUME to self). */
void conn_hold(conn *c, bool on);

/* Graceful close: write what is queued, shut the write side down, discard
 * input until the peer closes (TQ_CLOSE bounds it); then the process exits. */
void conn_close_graceful(conn *c);

/* Hard close (why: W_*): drops the output, closes the fd at once (a reset
 * for W_SLOW); the process exits after this batch. */
void conn_finish(conn *c, int why);

/* Whether an HTTP answer may leave the connection open: not once the
 * endpoint stops (F_SHUTDOWN) or drains (the client's next request should
 * open a new connection, which another node of the cluster takes). */
static inline bool
conn_may_keep(const conn *c)
{
	return !(c->flags & F_SHUTDOWN) &&
	       !atomic_load_explicit(&c->ep->draining, memory_order_relaxed);
}

/* ---- the timeout lists, for the listener ---- */

/* The first connection of l, and the one after c (NULL at the end). */
conn *tq_first(tq_list *l);
conn *tq_next(conn *c);
/* The connection's process and deadline. */
rt_pid tq_pid(const conn *c);
uint32_t tq_deadline(const conn *c);
/* Whether the drain should close c: its protocol holds a Phoenix socket
 * (has a drain) and it is not closing already. */
bool tq_drainable(const conn *c);
/* Removes c from its list (the sweep does it before sending TP_MSG_TIMEOUT). */
void tq_remove(conn *c);

#endif /* transports_conn_h */
