/*
 * The connection process and its I/O core: one process per accepted TCP
 * connection, pinned to the scheduler of the listener that accepted it.  The
 * core reads, buffers input, writes the output queue, keeps the connection on
 * its timeout list and closes; what the bytes mean is the business of the
 * connection's protocol (conn.h: tp_proto), HTTP serving (serve.c) and, after
 * an upgrade, the WebSocket transport (websocket.c).
 *
 * Memory.  An idle connection owns only its state (<= 192 bytes, so that the
 * runtime's process block stays in the 256-byte class): no read buffer.
 * Input is read into a per-thread 64 KiB scratch buffer and parsed there;
 * only the bytes of an incomplete request or frame are copied into a heap
 * buffer, which grows with the bytes that actually arrive (at most doubling,
 * and never past what the protocol said the pending unit needs: a frame
 * header announcing megabytes reserves nothing), and which is freed as soon
 * as it is consumed.
 *
 * Writes.  Everything the connection sends goes through its output queue:
 * entries hold a reference to an rt_buf (shared: a fastlane broadcast is the
 * same buffer for every connection, a static file the same buffer for every
 * response) plus up to 10 bytes of WebSocket frame header of their own.
 * Nothing is written while messages are handled; the behaviour's flush
 * callback, after each batch, writes the whole queue with sendmsg (one iovec
 * per header and per payload, 64 at a time), keeps the offset of a partial
 * write, and on EAGAIN watches for writability until drained.  How much may
 * be queued is the protocol's call (WebSocket: max_outbound; HTTP pauses its
 * input, F_PAUSED, and the core resumes it once the queue drained).
 *
 * Timeouts.  A connection is always on one of its shard's timeout lists
 * (endpoint.h), which the listener of the scheduler sweeps; the protocol
 * picks the list (conn_set_timeout), the core restarts TQ_HTTP and TQ_CLOSE
 * on write progress and handles expiry while closing.
 *
 * TLS.  A connection of the HTTPS listener carries a tls_conn (tls.h), and
 * the core makes the same moves through it: the handshake first (on the
 * TQ_TLS list: a client that fails or stalls is closed quietly and
 * counted), then tls_read instead of recv and tls_writev instead of sendmsg
 * on the same queue, with OpenSSL's WANT_WRITE during a handshake or read
 * step added to the watcher's events; close_notify before the write side
 * is shut down.  The fastlane's foreign flush writes through SSL as well
 * (the same thread: no lock).  A plain connection (c->tls NULL) pays one
 * predictable branch per read, write and flush.
 *
 * Closing.  A graceful close writes what is queued, shuts the write side
 * down, and reads (discarding) until the peer closes or TQ_CLOSE expires, so
 * that unread input does not turn the close into a reset that would destroy
 * the last response.  A hard close (slow consumer, errors, timeouts) closes
 * the fd at once.  Either way the process then exits, and terminate tells
 * the protocol (which tells the socket layer) and the endpoint.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "runtime/xalloc.h"
#include "transports/conn.h"

#define SCRATCH_SIZE (64 * 1024)
#define READS_PER_EVENT 4 /* reads per readiness event (fairness) */
#define IOV_BATCH 64      /* iovecs per sendmsg */

static const char *const why_str[] = {"normal",        "shutdown", "timeout",
                                      "slow consumer", "closed",   "out of memory"};

/* One queued piece of output: an optional frame header and an optional
 * buffer.  Owned by the connection's queue. */
struct oq_ent {
	struct oq_ent *next; /* circular: the tail's next is the head */
	rt_buf *buf;
	uint8_t hlen;
	uint8_t hdr[10];
};

/* ------------------------------------------------------------------ per thread */

/* The read buffer of a scheduler thread (owned by that thread). */
typedef struct tl_data {
	uint8_t scratch[SCRATCH_SIZE];
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
		tl = rt_xmalloc(sizeof(*tl));
		pthread_setspecific(tl_key, tl);
	}
	return tl;
}

/* ------------------------------------------------------------------ helpers */

tp_shard *
conn_shard(const conn *c)
{
	return &c->ep->shards[c->shard];
}

const char *
conn_peer(const conn *c, char *buf, size_t cap)
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

void
conn_set_proto(conn *c, const tp_proto *p)
{
	c->proto = p;
	c->flags &= (uint16_t)~F_PROTO_BITS;
	c->in_need = 0;
	memset(&c->u, 0, sizeof(c->u));
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

bool
tq_drainable(const conn *c)
{
	return c->proto->drain && !(c->flags & (F_DEAD | F_CLOSING | F_SHUTDOWN));
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
	tq_list *l = &conn_shard(c)->lists[c->tq];
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

void
conn_set_timeout(conn *c, int q)
{
	uint32_t d = tp_now(c->ep) + c->ep->tq_ms[q];
	if (c->tq == q && c->deadline == d)
		return;
	tq_remove(c);
	tq_list *l = &conn_shard(c)->lists[q];
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

void
conn_push(conn *c, rt_buf *b)
{
	if (!b)
		return;
	if (b->len == 0 || (c->flags & F_DEAD)) {
		rt_buf_release(b);
		return;
	}
	oq_link(c, c->oq_tail, ent_new(b));
}

void
conn_push_with_header(conn *c, rt_buf *payload, const uint8_t *hdr, size_t hlen)
{
	if (c->flags & F_DEAD) {
		rt_buf_release(payload);
		return;
	}
	oq_ent *e = ent_new(payload);
	e->hlen = (uint8_t)(hlen <= sizeof(e->hdr) ? hlen : sizeof(e->hdr));
	memcpy(e->hdr, hdr, e->hlen);
	oq_link(c, c->oq_tail, e);
}

oq_ent *
conn_mark(const conn *c)
{
	return c->oq_tail;
}

void
conn_push_at(conn *c, oq_ent *mark, rt_buf *b)
{
	if (!b)
		return;
	if (b->len == 0 || (c->flags & F_DEAD)) {
		rt_buf_release(b);
		return;
	}
	oq_link(c, mark, ent_new(b));
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

void
conn_truncate(conn *c, oq_ent *mark)
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
		ssize_t w;
		if (!c->tls) {
			struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
			w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		} else {
			w = tls_writev(c->tls, iov, n);
		}
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

int
conn_write_now(conn *c)
{
	bool progress = false;
	if (!c->io || (c->flags & F_DEAD))
		return -1;
	return c->oq_tail ? oq_write(c, &progress) : 1;
}

bool
conn_mark_foreign(conn *c)
{
	if (c->flags & F_FOREIGN)
		return false;
	c->flags |= F_FOREIGN;
	return true;
}

void
conn_flush_foreign(conn *c)
{
	c->flags &= (uint16_t)~F_FOREIGN;
	if ((c->flags & (F_DEAD | F_WANT_WRITE | F_STOP_SENT)) || !c->oq_tail || !c->io)
		return;
	bool progress = false;
	int r = oq_write(c, &progress);
	if (r < 0) {
		c->why = W_RESET; /* conn_finish runs in the connection's own process */
		c->flags |= F_STOP_SENT;
		rt_send(c->pid, TP_MSG_STOP, NULL, 0);
	} else if (r == 0) {
		c->flags |= F_WANT_WRITE;
		rt_io_set(c->io, ((c->flags & (F_EOF | F_PAUSED)) ? 0 : RT_IO_READ) | RT_IO_WRITE);
	}
}

void
conn_hold(conn *c, bool on)
{
	if (on) {
		c->flags |= F_HELD | F_PAUSED;
		return;
	}
	if (!(c->flags & F_HELD))
		return;
	c->flags &= (uint16_t)~F_HELD;
	if (!(c->flags & (F_RESUME_SENT | F_DEAD))) {
		c->flags |= F_RESUME_SENT;
		rt_send(c->pid, TP_MSG_RESUME, NULL, 0);
	}
}

/* ------------------------------------------------------------------ closing */

void
conn_finish(conn *c, int why)
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
	if (c->tls) {
		if (why == W_NORMAL)
			tls_close_notify(c->tls);
		tls_conn_free(c->tls);
		c->tls = NULL;
	}
	if (c->io) {
		rt_io_close(c->io);
		c->io = NULL;
	}
}

void
conn_close_graceful(conn *c)
{
	if (c->flags & (F_CLOSING | F_DEAD))
		return;
	c->flags |= F_CLOSING;
	conn_set_timeout(c, TQ_CLOSE);
}

/* Endpoint stop: the protocol says how to end (WebSocket 1001, HTTP after the
 * response in flight); when aborting, at once. */
static void
conn_shutdown(conn *c)
{
	c->flags |= F_SHUTDOWN;
	if (c->flags & F_DEAD)
		return;
	if (atomic_load(&c->ep->aborting))
		conn_finish(c, W_SHUTDOWN);
	else
		c->proto->shutdown(c);
}

/* ------------------------------------------------------------------ input */

/* Gives buf[0, len) to the protocol (to the next one when it switches);
 * returns the bytes used. */
static size_t
process(conn *c, uint8_t *buf, size_t len)
{
	size_t pos = 0;
	while (pos < len && !(c->flags & (F_DEAD | F_LINGER))) {
		const tp_proto *p = c->proto;
		pos += p->input(c, buf + pos, len - pos);
		if (c->proto == p)
			break;
	}
	return (c->flags & (F_DEAD | F_LINGER)) ? len : pos;
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
		if (used) /* nothing used (an incomplete request): no copy per read */
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
		conn_finish(c, W_NOMEM);
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
			conn_finish(c, W_NOMEM);
			return;
		}
		if (need > c->in_cap) {
			/* Grow with what arrived (doubling, for amortised copies), but
			 * not past what the pending request or frame needs. */
			size_t cap = (size_t)c->in_cap * 2;
			if (c->in_need > need && cap > c->in_need)
				cap = c->in_need;
			if (cap < need)
				cap = need;
			if (cap > UINT32_MAX)
				cap = UINT32_MAX;
			uint8_t *p = realloc(c->in, cap);
			if (!p) {
				conn_finish(c, W_NOMEM);
				return;
			}
			c->in = p;
			c->in_cap = (uint32_t)cap;
		}
		memcpy(c->in + c->in_len, data, n);
		c->in_len = (uint32_t)need;
		if (need < c->in_need)
			return; /* the pending unit is not complete yet */
		buf = c->in;
		len = need;
	}
	c->in_need = 0;
	keep_rest(c, buf, len, process(c, buf, len));
}

static void
on_eof(conn *c)
{
	c->flags |= F_EOF;
	if (c->flags & F_LINGER)
		conn_finish(c, W_NORMAL);
	else
		c->proto->eof(c);
}

/* The TLS handshake of an HTTPS connection failed or timed out: closed
 * quietly (a debug line, a counter). */
static void
tls_failed(conn *c, const char *why)
{
	tp_count(&conn_shard(c)->tls_failed, 1);
	if (rt_log_get_level() >= RT_LOG_DEBUG) {
		char peer[64];
		rt_log_debug("tls %s: handshake: %s", conn_peer(c, peer, sizeof(peer)), why);
	}
	conn_finish(c, W_RESET);
}

/* HTTPS, before reading: advances the handshake; true once it is done. */
static bool
tls_step(conn *c)
{
	int r = tls_handshake(c->tls);
	if (r == TLS_AGAIN)
		return false;
	if (r == TLS_FAILED) {
		tls_failed(c, tls_error(c->tls));
		return false;
	}
	tp_count(&conn_shard(c)->tls_handshakes, 1);
	conn_set_timeout(c, TQ_HTTP); /* the first request's clock */
	return true;
}

static void
do_read(conn *c)
{
	tl_data *t = tl_get();
	if (c->tls && !(c->flags & F_LINGER) && !tls_ready(c->tls) && !tls_step(c))
		return;
	for (int i = 0; i < READS_PER_EVENT; i++) {
		if (c->flags & (F_DEAD | F_PAUSED | F_EOF))
			return;
		ssize_t n;
		if (!c->tls || (c->flags & F_LINGER)) /* lingering: the raw bytes are discarded */
			n = recv(rt_io_fd(c->io), t->scratch, SCRATCH_SIZE, 0);
		else
			n = tls_read(c->tls, t->scratch, SCRATCH_SIZE);
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
				conn_finish(c, W_RESET);
			return;
		}
	}
}

/* Output drained: parse the input buffered while paused. */
static void
resume(conn *c)
{
	if (c->flags & F_HELD) { /* held since: conn_hold(c, false) resumes */
		c->flags &= (uint16_t)~F_RESUME_SENT;
		return;
	}
	c->flags &= (uint16_t) ~(F_PAUSED | F_RESUME_SENT);
	if (c->in_len && !(c->flags & F_DEAD)) {
		c->in_need = 0;
		keep_rest(c, c->in, c->in_len, process(c, c->in, c->in_len));
	}
}

static void
on_timeout(conn *c)
{
	if ((c->flags & F_DEAD) || c->tq != TQ_NONE)
		return; /* the deadline moved after the sweep took it off its list */
	if (c->tls && !tls_ready(c->tls) && !(c->flags & (F_CLOSING | F_LINGER))) {
		tls_failed(c, "timeout");
		return;
	}
	char peer[64];
	rt_log_debug("%s %s: timeout", c->proto->name, conn_peer(c, peer, sizeof(peer)));
	if (c->flags & (F_CLOSING | F_LINGER))
		conn_finish(c, W_TIMEOUT); /* the final write or lingering took too long */
	else
		c->proto->timeout(c);
}

/* ------------------------------------------------------------------ behaviour */

static int
conn_init(void *state, const void *arg, size_t size)
{
	conn *c = state;
	const conn_arg *a = arg;
	(void)size;
	c->ep = a->ep;
	c->proto = a->proto;
	c->pid = rt_self();
	c->shard = (uint16_t)rt_scheduler_id();
	c->io = rt_io_open(a->fd, RT_IO_READ, NULL);
	if (!c->io) {
		close(a->fd);
		c->flags |= F_DEAD;
		return rt_stop("normal");
	}
	if (a->tls) {
		c->tls = tls_conn_new(a->tls, a->fd);
		if (!c->tls) {
			conn_finish(c, W_NOMEM);
			return rt_stop(why_str[W_NOMEM]);
		}
	}
	conn_set_timeout(c, c->tls ? TQ_TLS : TQ_HTTP);
	if (atomic_load(&c->ep->stopping)) {
		conn_finish(c, W_SHUTDOWN);
		return rt_stop("shutdown");
	}
	if (rt_log_get_level() >= RT_LOG_DEBUG) {
		char peer[64];
		rt_log_debug("%s %s: connected", c->proto->name, conn_peer(c, peer, sizeof(peer)));
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
		if (c->io && ((ev->revents & RT_IO_READ) ||
		              (c->tls && (ev->revents & RT_IO_WRITE) && tls_want_write(c->tls))))
			do_read(c); /* HTTPS: a handshake or read step waited for writability */
		break;              /* writability: flush writes */
	}
	case TP_MSG_TIMEOUT:
		on_timeout(c);
		break;
	case TP_MSG_STOP:
		conn_finish(c, c->why);
		break;
	case TP_MSG_RESUME:
		resume(c);
		break;
	case TP_MSG_SHUTDOWN:
		if (!(c->flags & F_SHUTDOWN) || atomic_load(&c->ep->aborting))
			conn_shutdown(c);
		break;
	case TP_MSG_ABORT:
		conn_finish(c, W_SHUTDOWN);
		break;
	case TP_MSG_DRAIN:
		if (!(c->flags & (F_DEAD | F_SHUTDOWN)) && c->proto->drain)
			c->proto->drain(c);
		break;
	default:
		if (!(c->flags & F_DEAD))
			c->proto->info(c, m);
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
		if (c->oq_tail && (!c->tls || tls_ready(c->tls))) {
			int r = oq_write(c, &progress);
			if (r < 0)
				conn_finish(c, W_RESET);
			else if (r == 0)
				c->flags |= F_WANT_WRITE;
			else
				c->flags &= (uint16_t)~F_WANT_WRITE;
		}
		if (progress && !(c->flags & (F_DEAD | F_LINGER)) &&
		    (c->tq == TQ_HTTP || c->tq == TQ_CLOSE))
			conn_set_timeout(c, c->tq); /* a client that reads is not idle */
		if (!c->oq_tail && !(c->flags & F_DEAD)) {
			if ((c->flags & F_PAUSED) && !(c->flags & (F_RESUME_SENT | F_HELD))) {
				c->flags |= F_RESUME_SENT;
				rt_send(c->pid, TP_MSG_RESUME, NULL, 0);
			}
			if ((c->flags & F_CLOSING) && !(c->flags & F_LINGER)) {
				if (c->flags & (F_EOF | F_CLEAN_END)) {
					conn_finish(c, W_NORMAL);
				} else {
					if (c->tls)
						tls_close_notify(c->tls);
					shutdown(rt_io_fd(c->io), SHUT_WR);
					c->flags |= F_LINGER;
					conn_set_timeout(c, TQ_CLOSE);
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
	if ((c->flags & F_WANT_WRITE) || (c->tls && tls_want_write(c->tls)))
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
	tp_shard *sh = conn_shard(c);
	c->flags |= F_DEAD; /* callbacks from here on only release */
	tq_remove(c);
	oq_free(c);
	free(c->in);
	c->in = NULL;
	tls_conn_free(c->tls);
	c->tls = NULL;
	c->proto->terminate(c, reason);
	rt_log_debug("%s connection %s", c->proto->name, reason);
	/* Last: once every connection is counted out, tp_endpoint_stop frees ep
	 * (after the listener, which runs on this thread, has exited). */
	rt_pid listener = atomic_load(&ep->listeners[sh - ep->shards]);
	bool stopping = atomic_load(&ep->stopping);
	if (atomic_fetch_sub(&sh->open, 1) == 1 && stopping)
		rt_send(listener, TP_LST_EMPTY, NULL, 0);
}

const rt_behaviour tp_conn_behaviour = {
    .name = "tp_conn",
    .state_size = sizeof(conn),
    .init = conn_init,
    .handle = conn_handle,
    .terminate = conn_terminate,
    .flush = conn_flush,
};
