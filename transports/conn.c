/*
 * The connection process: one per accepted TCP connection, pinned to the
 * scheduler of the listener that accepted it.  It speaks HTTP/1.1 (keep-alive,
 * pipelining, app routes, static files) and, after an upgrade on
 * `<socket_path>/websocket`, is the WebSocket transport of a Phoenix socket
 * (channels/transport.h).
 *
 * Memory.  An idle connection owns only its state (≤ 192 bytes, so that the
 * runtime's process block stays in the 256-byte class): no read buffer.
 * Input is read into a per-thread 64 KiB scratch buffer and parsed there;
 * only the bytes of an incomplete request or frame are copied into a heap
 * buffer of their exact size, which is freed as soon as it is consumed.
 *
 * Writes.  Everything the connection sends goes through its output queue:
 * entries hold a reference to an rt_buf (shared: a fastlane broadcast is the
 * same buffer for every connection, a static file the same buffer for every
 * response) plus up to 10 bytes of WebSocket frame header of their own.
 * Nothing is written while messages are handled; the behaviour's flush
 * callback, after each batch, writes the whole queue with sendmsg (one iovec
 * per header and per payload, 64 at a time), keeps the offset of a partial
 * write, and on EAGAIN watches for writability until drained.  WebSocket
 * output above max_outbound disconnects the client (a slow consumer); HTTP
 * output is bounded by backpressure instead (pipelined requests wait while
 * more than HTTP_HIGH_WATER bytes are queued, and reading stops).
 *
 * Timeouts.  A connection is always on one of its shard's timeout lists
 * (conn.h), which the listener of the scheduler sweeps: TQ_HTTP (a request
 * must complete within http_idle_ms of its first byte; a keep-alive
 * connection idle that long is closed; write progress restarts it), TQ_WS
 * (no client data for ws_idle_ms) and TQ_CLOSE (close handshake, final
 * response and lingering close: close_wait_ms).
 *
 * Closing.  A graceful close writes what is queued, shuts the write side
 * down, and reads (discarding) until the peer closes or TQ_CLOSE expires, so
 * that unread input does not turn the close into a reset that would destroy
 * the last response.  A hard close (slow consumer, errors, timeouts) closes
 * the fd at once.  Either way the process then exits, and terminate tells
 * the socket layer (ch_socket_close) and the endpoint.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "transports/conn.h"

#define SCRATCH_SIZE (64 * 1024)
#define READS_PER_EVENT 4            /* reads per readiness event (fairness) */
#define HTTP_HIGH_WATER (256 * 1024) /* queued HTTP bytes that pause request parsing */
#define IOV_BATCH 64                 /* iovecs per sendmsg */
#define PATH_MAX_DECODED (16 * 1024) /* decoded request path (request line is smaller) */

/* ------------------------------------------------------------------ state */

enum {
	F_WS = 1 << 0,           /* upgraded: u.ws is live */
	F_CLOSING = 1 << 1,      /* close gracefully once the queue is written */
	F_CLOSE_SENT = 1 << 2,   /* WebSocket close frame queued */
	F_CLOSE_RCVD = 1 << 3,   /* WebSocket close frame received (or input failed) */
	F_LINGER = 1 << 4,       /* write side shut down: discard input until EOF */
	F_EOF = 1 << 5,          /* the peer shut its write side */
	F_PAUSED = 1 << 6,       /* HTTP: request parsing paused (output high water) */
	F_WANT_WRITE = 1 << 7,   /* the last write would have blocked */
	F_DEAD = 1 << 8,         /* fd closed: the process is ending */
	F_STOP_SENT = 1 << 9,    /* TP_MSG_STOP sent to self */
	F_SHUTDOWN = 1 << 10,    /* endpoint stop seen */
	F_RESUME_SENT = 1 << 11, /* TP_MSG_RESUME sent to self */
	F_CLEAN_END = 1 << 12,   /* the peer ended its input cleanly (close frame): no linger */
	F_HEAD_REQ = 1 << 13,    /* answering a HEAD request: error answers have no body */
	F_LOCAL = 1 << 14        /* frames queued by tr_push_local wait for tr_flush_local */
};

/* Why the connection ended (the exit reason, given to ch_socket_close). */
enum { W_NORMAL, W_SHUTDOWN, W_TIMEOUT, W_SLOW, W_RESET, W_NOMEM };
static const char *const why_str[] = {"normal",        "shutdown", "timeout",
                                      "slow consumer", "closed",   "out of memory"};

/* One queued piece of output: an optional frame header and an optional buffer. */
typedef struct oq_ent {
	struct oq_ent *next; /* circular: the tail's next is the head */
	rt_buf *buf;
	uint8_t hlen;
	uint8_t hdr[10];
} oq_ent;

struct conn {
	tp_endpoint *ep;
	rt_io *io;
	rt_pid pid;
	conn *tq_prev, *tq_next; /* timeout list links */
	oq_ent *oq_tail;         /* output queue (circular, NULL when empty) */
	uint8_t *in;             /* leftover input of an incomplete request/frame, or NULL */
	size_t oq_bytes;         /* bytes queued (headers + payloads - written) */
	size_t oq_off;           /* bytes of the head entry already written */
	uint32_t deadline;       /* tp_now() time at which the current list times out */
	uint32_t in_len, in_cap;
	uint16_t flags;
	uint8_t tq;     /* TQ_* list the connection is on */
	uint8_t why;    /* W_* */
	uint16_t shard; /* = the scheduler it is pinned to */
	ch_socket *sock;
	union {
		tp_ws_reader ws; /* F_WS */
		struct {
			size_t need; /* HTTP: bytes the partial request needs before re-parsing */
		} http;
	} u;
};

_Static_assert(sizeof(struct conn) <= 192, "keep the connection in the 256-byte process class");

static void finish(conn *c, int why);
static void feed(conn *c, uint8_t *data, size_t n);
static size_t process(conn *c, uint8_t *buf, size_t len);

/* ------------------------------------------------------------------ per thread */

typedef struct tl_data {
	uint8_t scratch[SCRATCH_SIZE];
	char path[PATH_MAX_DECODED];
} tl_data;

static __thread tl_data *tl;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void
tl_destroy(void *p)
{
	free(p);
	tl = NULL;
}

static void
tl_make_key(void)
{
	if (pthread_key_create(&tl_key, tl_destroy) != 0)
		abort();
}

/* The calling scheduler's scratch space (freed when the thread exits). */
static tl_data *
tl_get(void)
{
	if (!tl) {
		pthread_once(&tl_once, tl_make_key);
		tl = malloc(sizeof(*tl));
		if (!tl)
			abort();
		pthread_setspecific(tl_key, tl);
	}
	return tl;
}

/* ------------------------------------------------------------------ helpers */

static tp_shard *
shard_of(const conn *c)
{
	return &c->ep->shards[c->shard];
}

/* "ip:port" of the peer ("?" when unknown). */
static const char *
peer_str(const conn *c, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char ip[INET6_ADDRSTRLEN];
	snprintf(buf, cap, "?");
	if (!c->io || getpeername(rt_io_fd(c->io), (struct sockaddr *)&ss, &sl) != 0)
		return buf;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(buf, cap, "%s:%u", ip, ntohs(a->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(buf, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
	}
	return buf;
}

static char *
dup_str(const tp_http_str *s)
{
	if (!s)
		return NULL;
	char *p = malloc(s->len + 1);
	if (!p)
		abort();
	memcpy(p, s->ptr, s->len);
	p[s->len] = 0;
	return p;
}

/* ------------------------------------------------------------------ timeout lists */

conn *
tq_first(tq_list *l)
{
	return l->head;
}

conn *
tq_next(conn *c)
{
	return c->tq_next;
}

rt_pid
tq_pid(const conn *c)
{
	return c->pid;
}

uint32_t
tq_deadline(const conn *c)
{
	return c->deadline;
}

void
tq_remove(conn *c)
{
	if (c->tq == TQ_NONE)
		return;
	tq_list *l = &shard_of(c)->lists[c->tq];
	if (c->tq_prev)
		c->tq_prev->tq_next = c->tq_next;
	else
		l->head = c->tq_next;
	if (c->tq_next)
		c->tq_next->tq_prev = c->tq_prev;
	else
		l->tail = c->tq_prev;
	c->tq_prev = c->tq_next = NULL;
	c->tq = TQ_NONE;
}

/* Puts c at the tail of list q with deadline now + q's duration. */
static void
tq_set(conn *c, int q)
{
	uint32_t d = tp_now(c->ep) + c->ep->tq_ms[q];
	if (c->tq == q && c->deadline == d)
		return;
	tq_remove(c);
	tq_list *l = &shard_of(c)->lists[q];
	c->deadline = d;
	c->tq = (uint8_t)q;
	c->tq_next = NULL;
	c->tq_prev = l->tail;
	if (l->tail)
		l->tail->tq_next = c;
	else
		l->head = c;
	l->tail = c;
}

/* ------------------------------------------------------------------ output queue */

static size_t
ent_len(const oq_ent *e)
{
	return e->hlen + (e->buf ? e->buf->len : 0);
}

static oq_ent *
ent_new(rt_buf *b)
{
	oq_ent *e = rt_alloc(sizeof(*e)); /* pinned: freed on this thread, cache hits */
	e->next = NULL;
	e->buf = b;
	e->hlen = 0;
	return e;
}

static void
ent_free(oq_ent *e)
{
	rt_buf_release(e->buf);
	rt_free(e, sizeof(*e));
}

/* Links e after `after` (NULL: at the head). */
static void
oq_link(conn *c, oq_ent *after, oq_ent *e)
{
	c->oq_bytes += ent_len(e);
	if (!c->oq_tail) {
		e->next = e;
		c->oq_tail = e;
	} else if (!after) {
		e->next = c->oq_tail->next;
		c->oq_tail->next = e;
	} else {
		e->next = after->next;
		after->next = e;
		if (after == c->oq_tail)
			c->oq_tail = e;
	}
}

/* Queues buffer b (the queue takes the reference); empty buffers are dropped. */
static void
oq_push(conn *c, rt_buf *b)
{
	if (!b)
		return;
	if (b->len == 0 || (c->flags & F_DEAD)) {
		rt_buf_release(b);
		return;
	}
	oq_link(c, c->oq_tail, ent_new(b));
}

static void
oq_free(conn *c)
{
	if (!c->oq_tail)
		return;
	oq_ent *e = c->oq_tail->next;
	c->oq_tail->next = NULL;
	while (e) {
		oq_ent *n = e->next;
		ent_free(e);
		e = n;
	}
	c->oq_tail = NULL;
	c->oq_bytes = 0;
	c->oq_off = 0;
}

/* Drops every entry after `mark` (NULL: all of them); nothing of them is written yet. */
static void
oq_truncate(conn *c, oq_ent *mark)
{
	if (!mark) {
		oq_free(c);
		return;
	}
	while (c->oq_tail && c->oq_tail != mark) {
		oq_ent *e = mark->next;
		mark->next = e->next;
		if (e == c->oq_tail)
			c->oq_tail = mark;
		c->oq_bytes -= ent_len(e);
		ent_free(e);
	}
}

/* Drops w written bytes from the head of the queue. */
static void
oq_advance(conn *c, size_t w)
{
	c->oq_bytes -= w;
	while (w > 0) {
		oq_ent *h = c->oq_tail->next;
		size_t left = ent_len(h) - c->oq_off;
		if (w < left) {
			c->oq_off += w;
			return;
		}
		w -= left;
		c->oq_off = 0;
		if (h == c->oq_tail)
			c->oq_tail = NULL;
		else
			c->oq_tail->next = h->next;
		ent_free(h);
	}
}

/* Writes as much of the queue as the socket takes: 1 drained, 0 would
 * block, -1 error.  *progress is set when bytes were written. */
static int
oq_write(conn *c, bool *progress)
{
	int fd = rt_io_fd(c->io);
	while (c->oq_tail) {
		struct iovec iov[IOV_BATCH];
		int n = 0;
		size_t total = 0, skip = c->oq_off;
		oq_ent *head = c->oq_tail->next, *e = head;
		do {
			const uint8_t *p1 = e->hdr, *p2 = e->buf ? e->buf->data : NULL;
			size_t l1 = e->hlen, l2 = e->buf ? e->buf->len : 0;
			if (skip >= l1) {
				skip -= l1;
				l1 = 0;
				p2 += skip;
				l2 -= skip;
				skip = 0;
			} else {
				p1 += skip;
				l1 -= skip;
				skip = 0;
			}
			if (l1) {
				iov[n].iov_base = (void *)p1;
				iov[n++].iov_len = l1;
				total += l1;
			}
			if (l2) {
				iov[n].iov_base = (void *)p2;
				iov[n++].iov_len = l2;
				total += l2;
			}
			e = e->next;
		} while (e != head && n < IOV_BATCH - 1);
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		if (w > 0)
			*progress = true;
		oq_advance(c, (size_t)w);
		if ((size_t)w < total)
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ closing */

/* Hard close: drop the output, close the fd; the process exits next. */
static void
finish(conn *c, int why)
{
	if (c->flags & F_DEAD)
		return;
	c->flags |= F_DEAD;
	c->why = (uint8_t)why;
	oq_free(c);
	tq_remove(c);
	if (c->io && why == W_SLOW) {
		/* Abortive close: drop what the kernel still holds for this client
		 * (megabytes it is not reading) and reset the connection. */
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(rt_io_fd(c->io), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (c->io) {
		rt_io_close(c->io);
		c->io = NULL;
	}
}

/* Graceful close once the queue is written (flush shuts the write side). */
static void
set_closing(conn *c)
{
	if (c->flags & (F_CLOSING | F_DEAD))
		return;
	c->flags |= F_CLOSING;
	tq_set(c, TQ_CLOSE);
}

/* Queues a small error answer; keep: the connection stays open. */
static void
http_error(conn *c, int status, bool keep, const char *extra)
{
	tp_http_conn conn = keep ? TP_HTTP_CONN_KEEP_ALIVE : TP_HTTP_CONN_CLOSE;
	if (c->flags & F_HEAD_REQ) { /* the same head, without the body */
		char body[64];
		int n = snprintf(body, sizeof(body), "%d %s\n", status, tp_http_reason(status));
		tp_http_head h = {.status = status,
		                  .content_type = "text/plain",
		                  .content_length = n,
		                  .connection = conn,
		                  .extra = extra};
		oq_push(c, tp_http_head_append(NULL, &h));
	} else {
		oq_push(c, tp_http_error_append(NULL, status, conn, extra));
	}
	if (!keep)
		set_closing(c);
}

/* Queues a WebSocket close frame and closes once the peer answers (or at
 * once after writing it when its close already came). */
static void
ws_close(conn *c, int code, const char *reason)
{
	if (c->flags & (F_CLOSE_SENT | F_DEAD))
		return;
	tp_shard *sh = shard_of(c);
	switch (code) {
	case 1002:
		tp_count(&sh->closed_1002, 1);
		break;
	case 1007:
		tp_count(&sh->closed_1007, 1);
		break;
	case 1009:
		tp_count(&sh->closed_1009, 1);
		break;
	case 1011:
		tp_count(&sh->closed_1011, 1);
		break;
	}
	oq_push(c, tp_ws_close_append(NULL, code, reason, reason ? strlen(reason) : 0));
	c->flags |= F_CLOSE_SENT;
	if (c->flags & F_CLOSE_RCVD)
		set_closing(c);
	else
		tq_set(c, TQ_CLOSE);
}

static void
slow_consumer(conn *c, size_t adding)
{
	char peer[64];
	tp_count(&shard_of(c)->slow_disconnects, 1);
	rt_log_warning("websocket %s: %zu bytes queued for the client, over max_outbound (%zu): "
	               "disconnected (slow consumer)",
	               peer_str(c, peer, sizeof(peer)), c->oq_bytes + adding, c->ep->max_outbound);
	finish(c, W_SLOW);
}

/* Endpoint stop: WebSockets get 1001 after their queue, HTTP finishes the
 * response in flight (idle keep-alive connections close now). */
static void
conn_shutdown(conn *c)
{
	c->flags |= F_SHUTDOWN;
	if (c->flags & F_DEAD)
		return;
	if (atomic_load(&c->ep->aborting)) {
		finish(c, W_SHUTDOWN);
	} else if (c->flags & F_WS) {
		ws_close(c, TP_WS_CLOSE_GOING_AWAY, "going away");
	} else if (!(c->flags & F_CLOSING)) {
		if (!c->oq_tail && c->in_len == 0)
			finish(c, W_SHUTDOWN);
		else
			set_closing(c);
	}
}

/* ------------------------------------------------------------------ ch_transport */

static void
tr_send(void *conn_, rt_buf *frame, int kind)
{
	conn *c = conn_;
	if (!frame)
		return;
	if (c->flags & (F_DEAD | F_CLOSE_SENT)) {
		rt_buf_release(frame);
		return;
	}
	size_t add = frame->len + 10;
	if (c->oq_bytes + add > c->ep->max_outbound) {
		/* Frames are written once per batch; before calling the client slow,
		 * see whether the socket takes what this batch queued so far. */
		bool progress = false;
		if ((c->flags & F_WS) && c->oq_tail && oq_write(c, &progress) < 0) {
			rt_buf_release(frame);
			finish(c, W_RESET);
			return;
		}
		if (c->oq_bytes + add > c->ep->max_outbound) {
			rt_buf_release(frame);
			slow_consumer(c, add);
			return;
		}
	}
	oq_ent *e = ent_new(frame);
	e->hlen = (uint8_t)tp_ws_frame_header(
	    e->hdr, kind == CH_FRAME_BINARY_KIND ? TP_WS_OP_BINARY : TP_WS_OP_TEXT, 1, frame->len);
	oq_link(c, c->oq_tail, e);
}

static void
tr_close(void *conn_, int code, const char *reason)
{
	ws_close(conn_, code, reason);
}

/* The fastlane's direct path (channels/transport.h): a PubSub partition
 * process of this connection's scheduler queues a broadcast frame while the
 * connection's process cannot run, then writes it with tr_flush_local after
 * its batch.  Anything unusual (closing, over the output limit) is declined
 * and comes as a message instead, so that the connection's own process
 * handles it.  Nothing here may end the process: a write error is reported
 * to it as TP_MSG_STOP. */
static int
tr_push_local(void *conn_, rt_buf *frame)
{
	conn *c = conn_;
	if (c->flags & (F_DEAD | F_CLOSE_SENT | F_CLOSING | F_STOP_SENT))
		return CH_PUSH_DECLINED;
	if (c->oq_bytes + frame->len + 10 > c->ep->max_outbound)
		return CH_PUSH_DECLINED;
	oq_ent *e = ent_new(frame);
	e->hlen = (uint8_t)tp_ws_frame_header(
	    e->hdr, frame->flags == CH_FRAME_BINARY_KIND ? TP_WS_OP_BINARY : TP_WS_OP_TEXT, 1,
	    frame->len);
	oq_link(c, c->oq_tail, e);
	if (c->flags & F_LOCAL)
		return CH_PUSH_QUEUED;
	c->flags |= F_LOCAL;
	return CH_PUSH_FIRST;
}

static void
tr_flush_local(void *conn_)
{
	conn *c = conn_;
	c->flags &= (uint16_t)~F_LOCAL;
	if ((c->flags & (F_DEAD | F_WANT_WRITE | F_STOP_SENT)) || !c->oq_tail)
		return; /* a blocked socket is written when it drains (conn_flush) */
	bool progress = false;
	int r = oq_write(c, &progress);
	if (r < 0) {
		c->why = W_RESET;
		c->flags |= F_STOP_SENT;
		rt_send(c->pid, TP_MSG_STOP, NULL, 0);
	} else if (r == 0) {
		c->flags |= F_WANT_WRITE;
		rt_io_set(c->io, ((c->flags & (F_EOF | F_PAUSED)) ? 0 : RT_IO_READ) | RT_IO_WRITE);
	}
}

/* ------------------------------------------------------------------ WebSocket */

/* Phoenix's check_origin: an origin matches an allowed entry
 * "scheme://host[:port]", "//host[:port]" (any scheme) or with a host
 * "*.example.com" (any subdomain).  Scheme and port are compared only when
 * the entry has them. */
typedef struct url_parts {
	const char *scheme, *host;
	size_t scheme_len, host_len;
	int port; /* -1: none given */
} url_parts;

static bool
url_split(const char *p, size_t n, url_parts *u)
{
	memset(u, 0, sizeof(*u));
	u->port = -1;
	size_t sep = 0;
	while (sep + 1 < n && !(p[sep] == '/' && p[sep + 1] == '/'))
		sep++;
	if (sep + 1 >= n)
		return false;
	if (sep > 0) {
		if (p[sep - 1] != ':')
			return false;
		u->scheme = p;
		u->scheme_len = sep - 1;
	}
	size_t h = sep + 2, end = h;
	while (end < n && p[end] != '/')
		end++;
	size_t colon = end, rb = h;
	if (h < end && p[h] == '[') { /* IPv6 literal: the port comes after ']' */
		while (rb < end && p[rb] != ']')
			rb++;
		if (rb == end)
			return false;
	}
	for (size_t q = rb; q < end; q++)
		if (p[q] == ':')
			colon = q;
	u->host = p + h;
	u->host_len = colon - h;
	if (colon < end) {
		int port = 0;
		if (colon + 1 == end)
			return false;
		for (size_t q = colon + 1; q < end; q++) {
			if (p[q] < '0' || p[q] > '9' || port > 65535)
				return false;
			port = port * 10 + (p[q] - '0');
		}
		u->port = port;
	}
	return u->host_len > 0;
}

static int
default_port(const url_parts *u)
{
	if (u->scheme_len == 5 && strncasecmp(u->scheme, "https", 5) == 0)
		return 443;
	return 80;
}

static bool
origin_ok(const tp_endpoint *ep, const tp_http_str *origin)
{
	url_parts o;
	if (!url_split(origin->ptr, origin->len, &o) || !o.scheme)
		return false;
	for (size_t i = 0; i < ep->norigins; i++) {
		url_parts a;
		if (!url_split(ep->origins[i], strlen(ep->origins[i]), &a))
			continue;
		if (a.scheme && (a.scheme_len != o.scheme_len ||
		                 strncasecmp(a.scheme, o.scheme, a.scheme_len) != 0))
			continue;
		if (a.port >= 0 && a.port != (o.port >= 0 ? o.port : default_port(&o)))
			continue;
		if (a.host_len > 2 && a.host[0] == '*' && a.host[1] == '.') {
			size_t sl = a.host_len - 1; /* ".example.com" */
			if (o.host_len > sl &&
			    strncasecmp(o.host + o.host_len - sl, a.host + 1, sl) == 0)
				return true;
		} else if (a.host_len == o.host_len &&
		           strncasecmp(a.host, o.host, a.host_len) == 0) {
			return true;
		}
	}
	return false;
}

/* Decodes every query parameter into *out (items and strings in one block,
 * returned in *mem).  -1 on a malformed escape. */
static int
decode_params(const tp_http_str *q, ch_params *out, void **mem)
{
	size_t pos = 0, n = 0;
	tp_http_str k, v;
	while (tp_http_query_next(q->ptr, q->len, &pos, &k, &v))
		n++;
	size_t strcap = q->len + 2 * n + 1;
	char *block = malloc(n * sizeof(ch_param) + strcap);
	if (!block)
		abort();
	ch_param *items = (ch_param *)block;
	char *s = block + n * sizeof(ch_param), *end = s + strcap;
	size_t i = 0;
	pos = 0;
	while (tp_http_query_next(q->ptr, q->len, &pos, &k, &v)) {
		ssize_t kl = tp_http_form_decode(k.ptr, k.len, s, (size_t)(end - s));
		if (kl < 0)
			goto bad;
		items[i].key = s;
		s += kl + 1;
		ssize_t vl = tp_http_form_decode(v.ptr, v.len, s, (size_t)(end - s));
		if (vl < 0)
			goto bad;
		items[i].value = s;
		s += vl + 1;
		i++;
	}
	out->items = items;
	out->n = n;
	*mem = block;
	return 0;
bad:
	free(block);
	return -1;
}

static void
ws_upgrade(conn *c, const tp_http_request *req)
{
	tp_endpoint *ep = c->ep;
	int st = tp_ws_check_upgrade(req);
	if (st) {
		http_error(c, st, false, st == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
		return;
	}
	const tp_http_str *origin = tp_http_header_get(req, "origin");
	if (ep->check_origin && origin && !origin_ok(ep, origin)) {
		rt_log_debug("websocket upgrade refused: origin %.*s not allowed", (int)origin->len,
		             origin->ptr);
		http_error(c, 403, false, NULL);
		return;
	}
	ch_params params = {0};
	void *pmem = NULL;
	if (decode_params(&req->query, &params, &pmem) < 0) {
		http_error(c, 400, false, NULL);
		return;
	}
	char peer[64];
	char *origin_s = dup_str(origin);
	char *ua_s = dup_str(tp_http_header_get(req, "user-agent"));
	ch_connect_info info = {.peer = peer_str(c, peer, sizeof(peer)),
	                        .origin = origin_s,
	                        .user_agent = ua_s,
	                        .transport = "websocket"};
	ch_transport tr = {.conn = c,
	                   .send = tr_send,
	                   .close = tr_close,
	                   .push_local = tr_push_local,
	                   .flush_local = tr_flush_local};
	oq_ent *mark = c->oq_tail; /* the 101 goes after what is queued now */
	int status = 403;
	ch_socket *s = ch_socket_open(ep->socket, &params, &info, &tr, &status);
	free(pmem);
	free(origin_s);
	free(ua_s);
	if (c->flags & F_DEAD) { /* the socket layer overflowed the queue while opening */
		if (s) {
			c->sock = s;
			tp_count(&shard_of(c)->ws_open, 1);
		}
		return;
	}
	if (!s) {
		oq_truncate(c, mark);
		c->flags &= (uint16_t)~F_CLOSE_SENT;
		http_error(c, status >= 400 && status <= 599 ? status : 403, false, NULL);
		return;
	}
	c->sock = s;
	tp_count(&shard_of(c)->ws_open, 1);
	const tp_http_str *key = tp_http_header_get(req, "sec-websocket-key");
	const char *proto =
	    tp_http_header_has_token(req, "sec-websocket-protocol", "phoenix") ? "phoenix" : NULL;
	rt_buf *h = tp_ws_handshake_append(NULL, key->ptr, key->len, proto);
	oq_link(c, mark, ent_new(h));
	c->flags |= F_WS;
	tp_ws_reader_init(&c->u.ws, TP_WS_SERVER, ep->max_frame);
	if (!(c->flags & F_CLOSE_SENT))
		tq_set(c, TQ_WS);
	rt_log_debug("websocket %s: open", peer);
}

/* Parses WebSocket frames from buf[0, len); returns the bytes consumed. */
static size_t
ws_process(conn *c, uint8_t *buf, size_t len)
{
	size_t pos = 0;
	while (!(c->flags & F_DEAD)) {
		if (c->flags & F_CLOSE_RCVD)
			return len; /* nothing after a close is read */
		tp_ws_event ev;
		tp_ws_reader_next(&c->u.ws, buf + pos, len - pos, &ev);
		if (ev.type == TP_WS_EV_NEED_MORE)
			return pos + ev.consumed;
		if (c->tq == TQ_WS)
			tq_set(c, TQ_WS); /* client activity */
		switch (ev.type) {
		case TP_WS_EV_MESSAGE:
			if (!(c->flags & F_CLOSE_SENT)) {
				int rc = ch_socket_in(c->sock, ev.data, ev.len,
				                      ev.opcode == TP_WS_OP_BINARY);
				if (rc)
					ws_close(c, rc, NULL);
			}
			if (ev.len && (ev.data < buf || ev.data >= buf + len))
				/* reassembled from fragments in the reader's buffer: do
				 * not keep that buffer on an idle connection */
				tp_ws_reader_free(&c->u.ws);
			break;
		case TP_WS_EV_PING:
			if (!(c->flags & F_CLOSE_SENT))
				oq_push(c,
				        tp_ws_frame_append(NULL, TP_WS_OP_PONG, ev.data, ev.len));
			break;
		case TP_WS_EV_PONG:
			break;
		case TP_WS_EV_CLOSE:
			c->flags |= F_CLOSE_RCVD | F_CLEAN_END;
			if (c->flags & F_CLOSE_SENT)
				set_closing(c);
			else /* echo the code (1000 when none was given) */
				ws_close(c, ev.code == TP_WS_CLOSE_NO_STATUS ? 1000 : ev.code,
				         NULL);
			return len;
		case TP_WS_EV_ERROR: {
			char peer[64];
			rt_log_debug("websocket %s: %s: closing with %d",
			             peer_str(c, peer, sizeof(peer)), ev.error, ev.code);
			c->flags |= F_CLOSE_RCVD; /* fail the connection: no close handshake */
			if (c->flags & F_CLOSE_SENT)
				set_closing(c);
			else
				ws_close(c, ev.code, NULL);
			return len;
		}
		default:
			break;
		}
		pos += ev.consumed;
	}
	return len;
}

/* ------------------------------------------------------------------ HTTP */

static bool
str_is(const tp_http_str *s, const char *z)
{
	size_t n = strlen(z);
	return s->len == n && memcmp(s->ptr, z, n) == 0;
}

static void
respond(conn *c, const tp_response *r, bool keep, bool head_only)
{
	tp_http_head h = {.status = r->status ? r->status : 200,
	                  .content_type = r->content_type ? r->content_type : "application/json",
	                  .content_length = r->body ? (int64_t)r->body->len : 0,
	                  .connection = keep ? TP_HTTP_CONN_KEEP_ALIVE : TP_HTTP_CONN_CLOSE,
	                  .extra = r->extra_headers};
	if (h.extra) {
		size_t n = strlen(h.extra);
		if (n < 2 || strcmp(h.extra + n - 2, "\r\n") != 0) {
			rt_log_warning("route response: extra_headers must end with CRLF: ignored");
			h.extra = NULL;
		}
	}
	oq_push(c, tp_http_head_append(NULL, &h));
	if (head_only)
		rt_buf_release(r->body);
	else
		oq_push(c, r->body);
	if (!keep)
		set_closing(c);
}

static void
serve_route(conn *c, const tp_route_c *rt, const tp_http_request *req, bool keep, bool head_only)
{
	tp_response resp = {0};
	rt->fn(req, &resp, rt->udata);
	if (c->flags & F_DEAD) {
		rt_buf_release(resp.body);
		return;
	}
	respond(c, &resp, keep, head_only);
}

static void
method_not_allowed(conn *c, const char *path, size_t plen, bool keep)
{
	char allow[512];
	size_t n = (size_t)snprintf(allow, sizeof(allow), "Allow: ");
	bool first = true, get = false;
	const tp_endpoint *ep = c->ep;
	for (size_t i = 0; i < ep->nroutes; i++) {
		const tp_route_c *r = &ep->routes[i];
		if (strlen(r->path) != plen || memcmp(r->path, path, plen) != 0)
			continue;
		get |= strcmp(r->method, "GET") == 0;
		size_t ml = strlen(r->method);
		if (n + ml + 16 >= sizeof(allow))
			break;
		n += (size_t)snprintf(allow + n, sizeof(allow) - n, "%s%s", first ? "" : ", ",
		                      r->method);
		first = false;
	}
	if (get && n + 16 < sizeof(allow))
		n += (size_t)snprintf(allow + n, sizeof(allow) - n, ", HEAD");
	snprintf(allow + n, sizeof(allow) - n, "\r\n");
	http_error(c, 405, keep, allow);
}

static void handle_path(conn *c, const tp_http_request *req, const char *path, size_t plen,
                        bool keep, bool is_head);

static void
handle_request(conn *c, const tp_http_request *req)
{
	tp_count(&shard_of(c)->http_requests, 1);
	bool keep = req->keep_alive && !(c->flags & F_SHUTDOWN);
	bool is_head = req->method_id == TP_HTTP_HEAD;
	if (is_head)
		c->flags |= F_HEAD_REQ;
	char *path = tl_get()->path;
	ssize_t pl = tp_http_path_decode(req->path.ptr, req->path.len, path, PATH_MAX_DECODED);
	if (pl < 0)
		http_error(c, 400, false, NULL);
	else
		handle_path(c, req, path, (size_t)pl, keep, is_head);
	c->flags &= (uint16_t)~F_HEAD_REQ;
}

static void
handle_path(conn *c, const tp_http_request *req, const char *path, size_t plen, bool keep,
            bool is_head)
{
	tp_endpoint *ep = c->ep;

	/* App routes: exact path and method; HEAD is served by a GET route. */
	const tp_route_c *fallback = NULL;
	bool known = false;
	for (size_t i = 0; i < ep->nroutes; i++) {
		const tp_route_c *r = &ep->routes[i];
		if (strlen(r->path) != plen || memcmp(r->path, path, plen) != 0)
			continue;
		known = true;
		if (str_is(&req->method, r->method)) {
			serve_route(c, r, req, keep, is_head);
			return;
		}
		if (is_head && strcmp(r->method, "GET") == 0)
			fallback = r;
	}
	if (fallback) {
		serve_route(c, fallback, req, keep, true);
		return;
	}
	if (known) {
		method_not_allowed(c, path, plen, keep);
		return;
	}

	if (ep->socket && strlen(ep->ws_path) == plen && memcmp(ep->ws_path, path, plen) == 0) {
		ws_upgrade(c, req);
		return;
	}

	const tp_file *f = tp_static_find(ep->files, path, plen);
	if (f) {
		if (req->method_id != TP_HTTP_GET && !is_head) {
			http_error(c, 405, keep, "Allow: GET, HEAD\r\n");
			return;
		}
		oq_push(c, rt_buf_retain(keep ? f->head_keep : f->head_close));
		if (!is_head)
			oq_push(c, rt_buf_retain(f->body));
		if (!keep)
			set_closing(c);
		return;
	}
	http_error(c, 404, keep, NULL);
}

/* Parses and answers one request from buf[0, len).  Returns 1 to go on with
 * the next one, 0 to stop (need more input, paused, closing). */
static int
http_one(conn *c, uint8_t *buf, size_t len, size_t *used)
{
	*used = 0;
	if (c->flags & (F_CLOSING | F_DEAD)) {
		*used = len; /* nothing after the last answer is read */
		return 0;
	}
	if (c->oq_bytes >= HTTP_HIGH_WATER) {
		c->flags |= F_PAUSED;
		return 0;
	}
	if (c->u.http.need > len)
		return 0;
	tp_http_request req;
	tp_http_result r = tp_http_parse(&c->ep->http, (char *)buf, len, &req);
	if (r == TP_HTTP_NEED_MORE) {
		c->u.http.need = req.need;
		return 0;
	}
	c->u.http.need = 0;
	if (r == TP_HTTP_ERROR) {
		char peer[64];
		rt_log_debug("http %s: %s: %d", peer_str(c, peer, sizeof(peer)), req.error,
		             req.status);
		http_error(c, req.status, false, NULL);
		*used = len;
		return 0;
	}
	*used = req.consumed;
	handle_request(c, &req);
	if (!(c->flags & (F_WS | F_CLOSING | F_DEAD)))
		tq_set(c, TQ_HTTP); /* the next request's clock */
	return 1;
}

/* ------------------------------------------------------------------ input */

/* Parses buf[0, len) (HTTP, then WebSocket after an upgrade); returns the
 * bytes consumed. */
static size_t
process(conn *c, uint8_t *buf, size_t len)
{
	size_t pos = 0;
	while (pos < len) {
		if (c->flags & (F_DEAD | F_LINGER))
			return len;
		if (c->flags & F_WS)
			return pos + ws_process(c, buf + pos, len - pos);
		size_t used;
		int more = http_one(c, buf + pos, len - pos, &used);
		pos += used;
		if (!more)
			break;
	}
	return pos;
}

/* Keeps the unconsumed bytes buf[used, len) in c->in (buf is either c->in or
 * the scratch buffer). */
static void
keep_rest(conn *c, uint8_t *buf, size_t len, size_t used)
{
	size_t rest = len - used;
	if (c->flags & F_DEAD)
		rest = 0;
	if (buf == c->in) {
		if (rest == 0) {
			free(c->in);
			c->in = NULL;
			c->in_len = c->in_cap = 0;
			return;
		}
		memmove(c->in, c->in + used, rest);
		c->in_len = (uint32_t)rest;
		if (c->in_cap > 4096 && rest < c->in_cap / 4) {
			uint8_t *p = realloc(c->in, rest);
			if (p) {
				c->in = p;
				c->in_cap = (uint32_t)rest;
			}
		}
		return;
	}
	if (rest == 0)
		return;
	c->in = malloc(rest);
	if (!c->in) {
		finish(c, W_NOMEM);
		return;
	}
	memcpy(c->in, buf + used, rest);
	c->in_len = c->in_cap = (uint32_t)rest;
}

/* New input data[0, n) (in the scratch buffer). */
static void
feed(conn *c, uint8_t *data, size_t n)
{
	uint8_t *buf = data;
	size_t len = n;
	if (c->in_len) {
		size_t need = (size_t)c->in_len + n;
		if (need > UINT32_MAX) {
			finish(c, W_NOMEM);
			return;
		}
		if (need > c->in_cap) {
			size_t cap = (size_t)c->in_cap * 2;
			if (cap < need)
				cap = need;
			if (cap > UINT32_MAX)
				cap = UINT32_MAX;
			uint8_t *p = realloc(c->in, cap);
			if (!p) {
				finish(c, W_NOMEM);
				return;
			}
			c->in = p;
			c->in_cap = (uint32_t)cap;
		}
		memcpy(c->in + c->in_len, data, n);
		c->in_len = (uint32_t)need;
		buf = c->in;
		len = need;
	} else if (!(c->flags & (F_WS | F_CLOSING))) {
		tq_set(c, TQ_HTTP); /* the first byte of a request starts its clock */
	}
	keep_rest(c, buf, len, process(c, buf, len));
}

static void
on_eof(conn *c)
{
	c->flags |= F_EOF;
	if (c->flags & F_LINGER)
		finish(c, W_NORMAL);
	else if (c->flags & F_WS)
		finish(c, (c->flags & F_CLOSE_RCVD) ? W_NORMAL : W_RESET);
	else if (!c->oq_tail)
		finish(c, W_NORMAL);
	else
		set_closing(c); /* write what is queued, then close */
}

static void
do_read(conn *c)
{
	tl_data *t = tl_get();
	for (int i = 0; i < READS_PER_EVENT; i++) {
		if (c->flags & (F_DEAD | F_PAUSED | F_EOF))
			return;
		ssize_t n = recv(rt_io_fd(c->io), t->scratch, SCRATCH_SIZE, 0);
		if (n > 0) {
			if (!(c->flags & F_LINGER))
				feed(c, t->scratch, (size_t)n);
			if (n < SCRATCH_SIZE)
				return;
		} else if (n == 0) {
			on_eof(c);
			return;
		} else if (errno != EINTR) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				finish(c, W_RESET);
			return;
		}
	}
}

/* Output drained below the high water mark: answer the buffered requests. */
static void
resume(conn *c)
{
	c->flags &= (uint16_t) ~(F_PAUSED | F_RESUME_SENT);
	if (c->in_len && !(c->flags & F_DEAD))
		keep_rest(c, c->in, c->in_len, process(c, c->in, c->in_len));
}

static void
on_timeout(conn *c)
{
	if ((c->flags & F_DEAD) || c->tq != TQ_NONE)
		return; /* the deadline moved after the sweep took it off its list */
	char peer[64];
	rt_log_debug("%s %s: timeout", (c->flags & F_WS) ? "websocket" : "http",
	             peer_str(c, peer, sizeof(peer)));
	if (c->flags & (F_CLOSING | F_LINGER | F_CLOSE_SENT))
		finish(c, W_TIMEOUT); /* close handshake or final write took too long */
	else if (c->flags & F_WS)
		ws_close(c, 1000, NULL); /* idle, as cowboy: close 1000 */
	else if (c->in_len && !c->oq_tail)
		http_error(c, 408, false, NULL); /* a request did not complete in time */
	else
		finish(c, W_TIMEOUT); /* idle keep-alive, or the client does not read */
}

/* ------------------------------------------------------------------ behaviour */

static int
conn_init(void *state, const void *arg, size_t size)
{
	conn *c = state;
	const conn_arg *a = arg;
	(void)size;
	c->ep = a->ep;
	c->pid = rt_self();
	c->shard = (uint16_t)rt_scheduler_id();
	c->io = rt_io_open(a->fd, RT_IO_READ, NULL);
	if (!c->io) {
		close(a->fd);
		c->flags |= F_DEAD;
		return rt_stop("normal");
	}
	tq_set(c, TQ_HTTP);
	if (atomic_load(&c->ep->stopping)) {
		finish(c, W_SHUTDOWN);
		return rt_stop("shutdown");
	}
	if (rt_log_get_level() >= RT_LOG_DEBUG) {
		char peer[64];
		rt_log_debug("http %s: connected", peer_str(c, peer, sizeof(peer)));
	}
	return RT_OK;
}

static int
conn_handle(void *state, rt_msg *m)
{
	conn *c = state;
	if (!(c->flags & (F_SHUTDOWN | F_DEAD)) &&
	    atomic_load_explicit(&c->ep->stopping, memory_order_relaxed))
		conn_shutdown(c);
	switch (m->tag) {
	case RT_MSG_IO: {
		const rt_io_event *ev = rt_msg_data(m);
		if ((ev->revents & RT_IO_READ) && c->io)
			do_read(c);
		break; /* writability: flush writes */
	}
	case TP_MSG_TIMEOUT:
		on_timeout(c);
		break;
	case TP_MSG_STOP:
		finish(c, c->why);
		break;
	case TP_MSG_RESUME:
		resume(c);
		break;
	case TP_MSG_SHUTDOWN:
		if (!(c->flags & F_SHUTDOWN) || atomic_load(&c->ep->aborting))
			conn_shutdown(c);
		break;
	case TP_MSG_ABORT:
		finish(c, W_SHUTDOWN);
		break;
	default:
		if (c->sock && !(c->flags & F_DEAD))
			ch_socket_info(c->sock, m);
		break;
	}
	if (c->flags & F_DEAD)
		return rt_stop(why_str[c->why]);
	return RT_OK;
}

static void
conn_flush(void *state)
{
	conn *c = state;
	if (!(c->flags & F_DEAD)) {
		bool progress = false;
		if (c->oq_tail) {
			int r = oq_write(c, &progress);
			if (r < 0)
				finish(c, W_RESET);
			else if (r == 0)
				c->flags |= F_WANT_WRITE;
			else
				c->flags &= (uint16_t)~F_WANT_WRITE;
		}
		if (progress && !(c->flags & (F_DEAD | F_LINGER)) &&
		    (c->tq == TQ_HTTP || c->tq == TQ_CLOSE))
			tq_set(c, c->tq); /* a client that reads is not idle */
		if (!c->oq_tail && !(c->flags & F_DEAD)) {
			if ((c->flags & F_PAUSED) && !(c->flags & F_RESUME_SENT)) {
				c->flags |= F_RESUME_SENT;
				rt_send(c->pid, TP_MSG_RESUME, NULL, 0);
			}
			if ((c->flags & F_CLOSING) && !(c->flags & F_LINGER)) {
				if (c->flags & (F_EOF | F_CLEAN_END)) {
					finish(c, W_NORMAL);
				} else {
					shutdown(rt_io_fd(c->io), SHUT_WR);
					c->flags |= F_LINGER;
					tq_set(c, TQ_CLOSE);
				}
			}
		}
	}
	if (c->flags & F_DEAD) {
		if (!(c->flags & F_STOP_SENT)) {
			c->flags |= F_STOP_SENT;
			rt_send(c->pid, TP_MSG_STOP, NULL, 0);
		}
		return;
	}
	int ev = 0;
	if (!(c->flags & (F_EOF | F_PAUSED)))
		ev |= RT_IO_READ;
	if (c->flags & F_WANT_WRITE)
		ev |= RT_IO_WRITE;
	rt_io_set(c->io, ev);
}

static void
conn_terminate(void *state, const char *reason)
{
	conn *c = state;
	tp_endpoint *ep = c->ep;
	if (!ep)
		return;
	tp_shard *sh = shard_of(c);
	c->flags |= F_DEAD; /* socket callbacks from here on only release */
	tq_remove(c);
	oq_free(c);
	free(c->in);
	c->in = NULL;
	if (c->sock) {
		ch_socket_close(c->sock, reason);
		c->sock = NULL;
		tp_count(&sh->ws_open, -1);
	}
	if (c->flags & F_WS)
		tp_ws_reader_free(&c->u.ws);
	rt_log_debug("%s connection %s", (c->flags & F_WS) ? "websocket" : "http", reason);
	/* Last: once every connection is counted out, tp_endpoint_stop frees ep. */
	atomic_fetch_sub(&sh->open, 1);
}

const rt_behaviour tp_conn_behaviour = {
    .name = "tp_conn",
    .state_size = sizeof(conn),
    .init = conn_init,
    .handle = conn_handle,
    .terminate = conn_terminate,
    .flush = conn_flush,
};
