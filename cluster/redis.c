/*
 * redis.c: the redis link (cluster/link.h), the role of
 * Phoenix.PubSub.Redis: nodes without direct links reach each other through
 * PUBLISH/SUBSCRIBE on a redis-server, with hiredis's async API.
 *
 * Channels.  With <ns> the namespace (cl_opts.namespace_, "phx" when NULL):
 * every node subscribes to "<ns>:all" and to "<ns>:node:<its name>";
 * send_all publishes to the first, send_to to the second of the addressee.
 *
 * Payload.  What is published is a 9-byte link header, then the frame:
 *   byte 0      REDIS_LINK_VERSION (1)
 *   bytes 1..8  the sender link's id (random, big-endian)
 * A node hears its own "<ns>:all" messages: the id lets it drop them (as
 * Phoenix.PubSub.Redis drops those that name its own node).  A payload too
 * short or of another version is counted as malformed
 * (cl_link_count_malformed), one whose frame exceeds max_frame as oversized
 * (cl_link_count_oversized); both are dropped.
 *
 * Two connections: a subscriber and a publisher (a subscribed connection
 * can do nothing but subscribe).  Both belong to the cluster process, the
 * only one that touches hiredis: attach, on_io, tick and detach run there.
 * The event adapter of hiredis (ac->ev) maps onto one rt_io watcher per
 * connection, opened on a dup() of hiredis's descriptor (rt_io_close and
 * hiredis both close theirs).
 *
 * Sending.  send_all and send_to run on any thread and must not block:
 * they copy the frame into a queue under a mutex (at most queue_frames
 * frames and QUEUE_BYTES bytes) and, when it was empty, wake the cluster
 * process through an eventfd it watches (the link owns that eventfd, so a
 * sender never writes to a descriptor a dead process closed; the watcher
 * has a dup).  The cluster process turns the queue into PUBLISH commands,
 * at most DRAIN_BATCH per turn (it wakes itself for the rest) and only while
 * hiredis's output buffer holds less than OBUF_MAX bytes and fewer than
 * queue_frames PUBLISHes await their reply: past that it waits for the
 * socket.  While the publisher is not connected, or the queue is full,
 * sends return -1 (the core counts a send drop); what was queued when the
 * publisher went down is dropped (receivers see the gap in sequences).
 *
 * Receiving.  hiredis 0.14 has no limit on the size of a reply it reads,
 * so after each read the link looks at what its reader holds of a reply
 * not yet complete: past max_frame + READ_SLACK bytes the message is
 * counted as oversized, and the subscriber is dropped and connected again
 * at once (the rest of that message cannot be skipped otherwise).  Reads
 * are 16 KiB each, so the reader never holds much more.  Replies of other
 * shapes than ["subscribe", ch, n] and ["message", ch, payload] are
 * ignored.  (hiredis itself asserts on pub/sub replies that are not arrays
 * of two strings: a redis-server does not send those.)
 *
 * Reconnection.  When a connection fails, drops, does not connect within
 * CONNECT_TIMEOUT_MS, or (the publisher) gets no reply to its PUBLISHes for
 * REPLY_TIMEOUT_MS, the link logs one line (once, until it is up again),
 * and tries again after a back-off from BACKOFF_MIN_MS doubling to
 * BACKOFF_MAX_MS, timed by a timerfd watched like the rest (tick checks
 * too).  The subscriber subscribes again on every connection; the link logs
 * one line when both connections are up again.  A subscriber whose server
 * vanished without closing the connection is found by TCP keepalive (hiredis
 * 0.14 cannot PING on a subscribed connection without leaking a callback).
 *
 * SIGPIPE.  hiredis writes with write(2): a write to a connection redis
 * closed would raise SIGPIPE in a program that did not ignore it, so the
 * link blocks SIGPIPE around its writes and takes a SIGPIPE they raised.
 *
 * The host of the URL is resolved once, in open (outside the schedulers):
 * a reconnect never blocks the cluster process on DNS.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include "cluster/link.h"
#include "runtime/xalloc.h"

#define REDIS_LINK_VERSION 1
#define HDR_LEN 9                           /* version + sender id */
#define NS_MAX 64                           /* bytes of a namespace */
#define CHAN_MAX (NS_MAX + 6 + CL_NAME_MAX) /* "<ns>:node:<name>", NUL included */
#define QUEUE_BYTES (64u << 20)             /* bytes queued by senders */
#define OBUF_MAX (4u << 20)                 /* hiredis output buffer before waiting */
#define DRAIN_BATCH 256                     /* PUBLISHes per turn of the cluster process */
#define READ_SLACK (64u << 10)              /* reader bytes beyond max_frame: headers */
#define READS_PER_TURN 64                   /* 16 KiB reads per readiness report */
#define CONNECT_TIMEOUT_MS 3000
#define REPLY_TIMEOUT_MS 10000 /* PUBLISHes unanswered this long: the publisher is dropped */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct rlink;

/* One connection to redis (the subscriber or the publisher): owned by the
 * cluster process (and by close, once that process is gone). */
typedef struct rconn {
	struct rlink *l;
	const char *role;      /* "subscriber", "publisher" */
	redisAsyncContext *ac; /* NULL while down */
	rt_io *io;             /* watcher on a dup of ac's fd; NULL when none */
	int events;            /* RT_IO_* hiredis asked for */
	bool ready;            /* publisher: connected; subscriber: both channels subscribed */
	bool closing;          /* the link is freeing ac itself: no reconnect */
	int subs;              /* subscriber: subscriptions confirmed */
	int64_t started_ms;    /* when the connection attempt began */
	int64_t retry_ms;      /* down: when to try again */
	uint32_t backoff_ms;   /* the next back-off */
} rconn;

/* A frame waiting for the cluster process: allocated by a sender, freed by
 * the cluster process (or by whoever drops the queue). */
typedef struct qframe {
	struct qframe *next;
	uint32_t len;   /* payload bytes (link header + frame) */
	uint8_t to_len; /* bytes of the addressee's name; 0: to all */
	char bytes[];   /* the name (to_len bytes), then the payload */
} qframe;

enum { LOG_NONE, LOG_UP, LOG_DOWN };

/* The link of one node.  Set by open and read-only afterwards, unless a
 * comment says otherwise. */
typedef struct rlink {
	cl_node *node;
	char url[CL_ADDR_MAX]; /* as given, for logs */
	char host[INET6_ADDRSTRLEN];
	int port;
	char ch_all[CHAN_MAX];
	size_t ch_all_len;
	char ch_me[CHAN_MAX];
	size_t ch_me_len;
	char ns[NS_MAX + 1];
	size_t max_frame;
	uint32_t q_max_frames;
	uint64_t id; /* this link's id in the link header */
	int wake_fd; /* eventfd: senders wake the cluster process (owned here) */

	/* The send queue: any thread, under mu. */
	pthread_mutex_t mu;
	qframe *head, *tail;
	uint32_t q_frames;
	size_t q_bytes;
	atomic_bool pub_up; /* written under mu; read without it as a hint */

	/* The cluster process only (attach .. detach; close afterwards). */
	bool attached;
	rt_io *wake_io, *timer_io;
	int wake_tag, timer_tag; /* their watchers' udata: &wake_tag, &timer_tag */
	rconn sub, pub;
	uint32_t inflight;   /* PUBLISHes awaiting their reply */
	int64_t progress_ms; /* the last reply, or when inflight left 0 */
	int log_state;       /* LOG_*: the last state logged */
	uint64_t dropped;    /* frames queued, then dropped (publisher down) */
} rlink;

static void schedule(rlink *l);
static void drain(rlink *l);

/* ------------------------------------------------------------ the queue */

/* Drops every queued frame; with mu held. */
static void
queue_clear_locked(rlink *l)
{
	while (l->head) {
		qframe *f = l->head;
		l->head = f->next;
		free(f);
		l->dropped++;
	}
	l->tail = NULL;
	l->q_frames = 0;
	l->q_bytes = 0;
}

static void
set_pub_up(rlink *l, bool up)
{
	pthread_mutex_lock(&l->mu);
	atomic_store(&l->pub_up, up);
	if (!up)
		queue_clear_locked(l);
	pthread_mutex_unlock(&l->mu);
}

static void
wake(rlink *l)
{
	uint64_t one = 1;
	ssize_t w = write(l->wake_fd, &one, sizeof one);
	(void)w; /* EAGAIN: the counter is already non-zero, a wake-up is pending */
}

static int
enqueue(rlink *l, const char *to, size_t to_len, const void *frame, size_t len)
{
	if (len > l->max_frame || !atomic_load_explicit(&l->pub_up, memory_order_relaxed))
		return -1;
	size_t plen = HDR_LEN + len;
	qframe *f = rt_xmalloc(sizeof *f + to_len + plen);
	f->next = NULL;
	f->len = (uint32_t)plen;
	f->to_len = (uint8_t)to_len;
	memcpy(f->bytes, to, to_len);
	unsigned char *p = (unsigned char *)f->bytes + to_len;
	p[0] = REDIS_LINK_VERSION;
	for (int i = 0; i < 8; i++)
		p[1 + i] = (unsigned char)(l->id >> (56 - 8 * i));
	memcpy(p + HDR_LEN, frame, len);

	pthread_mutex_lock(&l->mu);
	if (!atomic_load(&l->pub_up) || l->q_frames >= l->q_max_frames ||
	    l->q_bytes + plen > QUEUE_BYTES) {
		pthread_mutex_unlock(&l->mu);
		free(f);
		return -1;
	}
	bool was_empty = l->head == NULL;
	if (l->tail)
		l->tail->next = f;
	else
		l->head = f;
	l->tail = f;
	l->q_frames++;
	l->q_bytes += plen;
	pthread_mutex_unlock(&l->mu);
	if (was_empty)
		wake(l);
	return 0;
}

static qframe *
dequeue(rlink *l)
{
	pthread_mutex_lock(&l->mu);
	qframe *f = l->head;
	if (f) {
		l->head = f->next;
		if (!l->head)
			l->tail = NULL;
		l->q_frames--;
		l->q_bytes -= f->len;
	}
	pthread_mutex_unlock(&l->mu);
	return f;
}

/* ------------------------------------------------ the hiredis event adapter */

static void
ev_set(rconn *k, int events)
{
	if (k->io && events != k->events)
		rt_io_set(k->io, events);
	k->events = events;
}

static void
ev_add_read(void *p)
{
	rconn *k = p;
	ev_set(k, k->events | RT_IO_READ);
}

static void
ev_del_read(void *p)
{
	rconn *k = p;
	ev_set(k, k->events & ~RT_IO_READ);
}

static void
ev_add_write(void *p)
{
	rconn *k = p;
	ev_set(k, k->events | RT_IO_WRITE);
}

static void
ev_del_write(void *p)
{
	rconn *k = p;
	ev_set(k, k->events & ~RT_IO_WRITE);
}

/* hiredis frees the context: close the watcher (unless it is already gone
 * with a dead cluster process: io was set to NULL then). */
static void
ev_cleanup(void *p)
{
	rconn *k = p;
	if (k->io)
		rt_io_close(k->io);
	k->io = NULL;
	k->events = 0;
}

/* ------------------------------------------------------------ connections */

static void
log_up_if(rlink *l)
{
	if (l->sub.ready && l->pub.ready && l->log_state != LOG_UP) {
		rt_log_info("cluster redis: connected to %s (%.*s, %.*s)", l->url,
		            (int)l->ch_all_len, l->ch_all, (int)l->ch_me_len, l->ch_me);
		l->log_state = LOG_UP;
	}
}

/* k is down (its context is gone or going): one log line per outage, and
 * a retry after the back-off. */
static void
conn_down(rconn *k, const char *why)
{
	rlink *l = k->l;
	bool was_ready = k->ready;
	k->ac = NULL;
	k->ready = false;
	k->subs = 0;
	if (k == &l->pub)
		set_pub_up(l, false);
	if (l->log_state != LOG_DOWN) {
		rt_log_warning("cluster redis: %s %s %s: %s; reconnecting", k->role,
		               was_ready ? "lost" : "cannot reach", l->url,
		               why && *why ? why : "error");
		l->log_state = LOG_DOWN;
	}
	k->retry_ms = rt_now_ms() + k->backoff_ms;
	k->backoff_ms = k->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : k->backoff_ms * 2;
	schedule(l);
}

static void
conn_ready(rconn *k)
{
	k->ready = true;
	k->backoff_ms = BACKOFF_MIN_MS;
	if (k == &k->l->pub)
		set_pub_up(k->l, true);
	log_up_if(k->l);
}

/* Frees k's context on the link's own initiative (no reconnect by the
 * callbacks; the caller decides). */
static void
conn_free(rconn *k)
{
	if (!k->ac)
		return;
	k->closing = true;
	redisAsyncFree(k->ac);
	k->closing = false;
	k->ac = NULL;
	k->ready = false;
	k->subs = 0;
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
	rconn *k = ac->data;
	if (status != REDIS_OK) {
		/* hiredis frees ac after this call. */
		conn_down(k, ac->c.errstr);
		return;
	}
	redisEnableKeepAlive(&k->ac->c); /* TCP keepalive, 15 s */
	if (k == &k->l->pub)
		conn_ready(k);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	(void)status;
	rconn *k = ac->data;
	if (k->closing)
		return;
	conn_down(k, ac->errstr ? ac->errstr : ac->c.errstr);
}

static void
deliver(rlink *l, const redisReply *payload)
{
	const unsigned char *p = (const unsigned char *)payload->str;
	size_t n = payload->len;
	if (n < HDR_LEN || p[0] != REDIS_LINK_VERSION) {
		cl_link_count_malformed(l->node);
		return;
	}
	uint64_t id = 0;
	for (int i = 0; i < 8; i++)
		id = id << 8 | p[1 + i];
	if (id == l->id)
		return; /* our own broadcast */
	if (n - HDR_LEN > l->max_frame) {
		cl_link_count_oversized(l->node);
		return;
	}
	cl_link_deliver(l->node, p + HDR_LEN, n - HDR_LEN);
}

/* Every reply of the subscriber: confirmations, then messages. */
static void
on_message(redisAsyncContext *ac, void *r, void *priv)
{
	rlink *l = priv;
	redisReply *reply = r;
	if (!reply) /* the context is being freed */
		return;
	(void)ac;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_STRING)
		return;
	const redisReply *kind = reply->element[0];
	if (kind->len == 7 && memcmp(kind->str, "message", 7) == 0) {
		if (reply->element[2]->type == REDIS_REPLY_STRING)
			deliver(l, reply->element[2]);
		else
			cl_link_count_malformed(l->node);
	} else if (kind->len == 9 && memcmp(kind->str, "subscribe", 9) == 0) {
		if (++l->sub.subs == 2)
			conn_ready(&l->sub);
	}
}

static void
on_published(redisAsyncContext *ac, void *r, void *priv)
{
	(void)ac;
	(void)r;
	rlink *l = priv;
	if (l->inflight > 0)
		l->inflight--;
	l->progress_ms = rt_now_ms();
}

/* Starts connecting k; on failure k is down again (with a retry). */
static void
conn_start(rconn *k)
{
	rlink *l = k->l;
	redisAsyncContext *ac = redisAsyncConnect(l->host, l->port);
	if (!ac) {
		conn_down(k, "out of memory");
		return;
	}
	if (ac->err) {
		char why[128];
		snprintf(why, sizeof why, "%s", ac->errstr);
		redisAsyncFree(ac);
		conn_down(k, why);
		return;
	}
	int fd = fcntl(ac->c.fd, F_DUPFD_CLOEXEC, 0);
	rt_io *io = fd < 0 ? NULL : rt_io_open(fd, 0, k);
	if (!io) {
		char why[128];
		snprintf(why, sizeof why, "cannot watch the socket: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		redisAsyncFree(ac);
		conn_down(k, why);
		return;
	}
	k->ac = ac;
	k->io = io;
	k->events = 0;
	k->ready = false;
	k->subs = 0;
	k->started_ms = rt_now_ms();
	ac->data = k;
	ac->ev.data = k;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	redisAsyncSetConnectCallback(ac, on_connect); /* watches for writability */
	if (k == &l->sub && redisAsyncCommand(ac, on_message, l, "SUBSCRIBE %b %b", l->ch_all,
	                                      l->ch_all_len, l->ch_me, l->ch_me_len) != REDIS_OK) {
		conn_free(k);
		conn_down(k, "cannot subscribe");
	}
}

/* Arms the timerfd for the next thing due (a retry, a connect timeout). */
static void
schedule(rlink *l)
{
	if (!l->timer_io)
		return;
	int64_t next = INT64_MAX;
	rconn *ks[2] = {&l->sub, &l->pub};
	for (int i = 0; i < 2; i++) {
		rconn *k = ks[i];
		int64_t t = !k->ac      ? k->retry_ms
		            : !k->ready ? k->started_ms + CONNECT_TIMEOUT_MS
		                        : INT64_MAX;
		if (t < next)
			next = t;
	}
	struct itimerspec its = {0};
	if (next != INT64_MAX) {
		int64_t d = next - rt_now_ms();
		if (d < 1)
			d = 1;
		its.it_value.tv_sec = d / 1000;
		its.it_value.tv_nsec = (d % 1000) * 1000000;
	}
	timerfd_settime(rt_io_fd(l->timer_io), 0, &its, NULL);
}

/* Connect timeouts and retries that are due; then re-arms the timer. */
static void
service(rlink *l)
{
	rconn *ks[2] = {&l->sub, &l->pub};
	for (int i = 0; i < 2; i++) {
		rconn *k = ks[i];
		int64_t now = rt_now_ms();
		if (k->ac && !k->ready && now - k->started_ms >= CONNECT_TIMEOUT_MS) {
			conn_free(k);
			conn_down(k, "timed out");
		}
		if (k == &l->pub && k->ready && l->inflight > 0 &&
		    now - l->progress_ms >= REPLY_TIMEOUT_MS) {
			conn_free(k);
			conn_down(k, "no reply to PUBLISH");
		}
		if (!k->ac && now >= k->retry_ms)
			conn_start(k);
	}
	schedule(l);
}

/* Writes what hiredis has buffered, with SIGPIPE blocked (see the head
 * comment). */
static void
conn_write(rconn *k)
{
	sigset_t pipe_set, old, pending;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigpending(&pending);
	bool was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	redisAsyncHandleWrite(k->ac);
	if (!was_pending) {
		sigpending(&pending);
		if (sigismember(&pending, SIGPIPE)) {
			struct timespec zero = {0, 0};
			while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
				;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void
conn_read(rconn *k)
{
	rlink *l = k->l;
	for (int i = 0; i < READS_PER_TURN && k->ac; i++) {
		redisAsyncHandleRead(k->ac);
		if (!k->ac)
			return;
		const redisReader *r = k->ac->c.reader;
		if (r->len - r->pos > l->max_frame + READ_SLACK) {
			cl_link_count_oversized(l->node);
			rt_log_warning("cluster redis: %s: a message larger than the largest "
			               "frame (%zu bytes) is arriving; dropping it (reconnecting)",
			               k->role, l->max_frame);
			conn_free(k);
			k->retry_ms = 0;
			service(l);
			return;
		}
		int avail = 0;
		if (ioctl(k->ac->c.fd, FIONREAD, &avail) < 0 || avail <= 0)
			return;
	}
}

/* Turns queued frames into PUBLISH commands, within the bounds. */
static void
drain(rlink *l)
{
	rconn *k = &l->pub;
	for (int n = 0; n < DRAIN_BATCH; n++) {
		if (!k->ready || !k->ac || sdslen(k->ac->c.obuf) >= OBUF_MAX ||
		    l->inflight >= l->q_max_frames)
			return;
		qframe *f = dequeue(l);
		if (!f)
			return;
		char chan[CHAN_MAX];
		const char *ch = l->ch_all;
		size_t chlen = l->ch_all_len;
		if (f->to_len) {
			int w = snprintf(chan, sizeof chan, "%s:node:%.*s", l->ns, (int)f->to_len,
			                 f->bytes);
			ch = chan;
			chlen = (size_t)w;
		}
		if (redisAsyncCommand(k->ac, on_published, l, "PUBLISH %b %b", ch, chlen,
		                      f->bytes + f->to_len, (size_t)f->len) == REDIS_OK) {
			if (l->inflight++ == 0)
				l->progress_ms = rt_now_ms();
		} else {
			l->dropped++;
		}
		free(f);
	}
	/* A full batch: the rest on a later turn, after other messages. */
	pthread_mutex_lock(&l->mu);
	bool more = l->head != NULL;
	pthread_mutex_unlock(&l->mu);
	if (more)
		wake(l);
}

/* Forgets the watchers of a cluster process that died without detach (the
 * runtime closed them), then frees the contexts. */
static void
forget(rlink *l)
{
	l->wake_io = NULL;
	l->timer_io = NULL;
	l->sub.io = NULL;
	l->pub.io = NULL;
	conn_free(&l->sub);
	conn_free(&l->pub);
	set_pub_up(l, false);
	l->attached = false;
}

/* ------------------------------------------------------------ the ops */

/* Parses "redis://host[:port][/]" into host and port; 0 or -1. */
static int
parse_url(const char *url, char *host, size_t hcap, int *port)
{
	const char *p = url;
	if (strncmp(p, "redis://", 8) != 0)
		return -1;
	p += 8;
	const char *h = p, *he;
	if (*p == '[') { /* [v6] */
		h = ++p;
		he = strchr(p, ']');
		if (!he)
			return -1;
		p = he + 1;
	} else {
		while (*p && *p != ':' && *p != '/' && *p != '@')
			p++;
		he = p;
	}
	if (he == h || (size_t)(he - h) >= hcap || *p == '@')
		return -1;
	memcpy(host, h, (size_t)(he - h));
	host[he - h] = '\0';
	*port = 6379;
	if (*p == ':') {
		char *end;
		long v = strtol(++p, &end, 10);
		if (end == p || v < 1 || v > 65535)
			return -1;
		*port = (int)v;
		p = end;
	}
	if (*p == '/')
		p++;
	return *p ? -1 : 0;
}

static int
redis_open(cl_node *c, const cl_opts *o, void **ctx)
{
	const char *url = o->redis_url ? o->redis_url : "";
	char host[256];
	int port;
	if (strlen(url) >= CL_ADDR_MAX || parse_url(url, host, sizeof host, &port) < 0) {
		fprintf(stderr, "cluster redis: bad URL \"%s\" (expected redis://host:port)\n",
		        url);
		return -1;
	}
	const char *ns = o->namespace_ ? o->namespace_ : "phx";
	if (!*ns || strlen(ns) > NS_MAX) {
		fprintf(stderr, "cluster redis: bad namespace \"%s\" (1 to %d bytes)\n", ns,
		        NS_MAX);
		return -1;
	}
	if (!o->name || !*o->name || strlen(o->name) >= CL_NAME_MAX) {
		fprintf(stderr, "cluster redis: bad node name\n");
		return -1;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	int rc = getaddrinfo(host, NULL, &hints, &ai);
	if (rc != 0) {
		fprintf(stderr, "cluster redis: cannot resolve \"%s\": %s\n", host,
		        gai_strerror(rc));
		return -1;
	}
	rlink *l = rt_xcalloc(1, sizeof *l);
	const void *a = ai->ai_family == AF_INET6
	                    ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
	                    : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
	inet_ntop(ai->ai_family, a, l->host, sizeof l->host);
	freeaddrinfo(ai);

	l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wake_fd < 0) {
		fprintf(stderr, "cluster redis: eventfd: %s\n", strerror(errno));
		free(l);
		return -1;
	}
	l->node = c;
	snprintf(l->url, sizeof l->url, "%s", url);
	l->port = port;
	snprintf(l->ns, sizeof l->ns, "%s", ns);
	l->ch_all_len = (size_t)snprintf(l->ch_all, sizeof l->ch_all, "%s:all", ns);
	l->ch_me_len = (size_t)snprintf(l->ch_me, sizeof l->ch_me, "%s:node:%s", ns, o->name);
	l->max_frame = o->max_frame ? o->max_frame : 16u << 20;
	l->q_max_frames = o->queue_frames ? o->queue_frames : 8192;
	if (getrandom(&l->id, sizeof l->id, 0) != (ssize_t)sizeof l->id)
		l->id = (uint64_t)rt_now_ns() ^ ((uint64_t)getpid() << 32);
	pthread_mutex_init(&l->mu, NULL);
	atomic_init(&l->pub_up, false);
	l->sub.l = l->pub.l = l;
	l->sub.role = "subscriber";
	l->pub.role = "publisher";
	l->sub.backoff_ms = l->pub.backoff_ms = BACKOFF_MIN_MS;
	*ctx = l;
	return 0;
}

static int
redis_attach(void *ctx)
{
	rlink *l = ctx;
	if (l->attached)
		forget(l); /* the previous cluster process died */
	int wfd = fcntl(l->wake_fd, F_DUPFD_CLOEXEC, 0);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (wfd < 0 || tfd < 0) {
		rt_log_error("cluster redis: cannot attach: %s", strerror(errno));
		if (wfd >= 0)
			close(wfd);
		if (tfd >= 0)
			close(tfd);
		return -1;
	}
	l->wake_io = rt_io_open(wfd, RT_IO_READ, &l->wake_tag);
	l->timer_io = rt_io_open(tfd, RT_IO_READ, &l->timer_tag);
	l->attached = true;
	l->sub.retry_ms = l->pub.retry_ms = 0;
	service(l);
	return 0;
}

static void
redis_on_io(void *ctx, const rt_io_event *ev)
{
	rlink *l = ctx;
	uint64_t v;
	if (ev->udata == &l->wake_tag) {
		while (read(rt_io_fd(l->wake_io), &v, sizeof v) < 0 && errno == EINTR)
			;
	} else if (ev->udata == &l->timer_tag) {
		while (read(rt_io_fd(l->timer_io), &v, sizeof v) < 0 && errno == EINTR)
			;
		service(l);
	} else if (ev->udata == &l->sub || ev->udata == &l->pub) {
		rconn *k = ev->udata;
		if (k->ac && (ev->revents & RT_IO_WRITE))
			conn_write(k);
		if (k->ac && (ev->revents & RT_IO_READ))
			conn_read(k);
		if (k->ac && !k->ready)
			schedule(l); /* a connect timeout from now on */
	} else {
		return; /* not ours */
	}
	drain(l);
}

static void
redis_tick(void *ctx)
{
	rlink *l = ctx;
	service(l);
	drain(l);
}

static void
redis_detach(void *ctx)
{
	rlink *l = ctx;
	if (!l->attached)
		return;
	conn_free(&l->sub);
	conn_free(&l->pub);
	set_pub_up(l, false);
	if (l->wake_io)
		rt_io_close(l->wake_io);
	if (l->timer_io)
		rt_io_close(l->timer_io);
	l->wake_io = l->timer_io = NULL;
	l->attached = false;
}

static void
redis_close(void *ctx)
{
	rlink *l = ctx;
	if (!l)
		return;
	if (l->attached)
		forget(l);
	pthread_mutex_lock(&l->mu);
	queue_clear_locked(l);
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_destroy(&l->mu);
	close(l->wake_fd);
	free(l);
}

static int
redis_send_all(void *ctx, const void *frame, size_t len)
{
	return enqueue(ctx, "", 0, frame, len);
}

static int
redis_send_to(void *ctx, const char *node, const void *frame, size_t len)
{
	size_t n = node ? strlen(node) : 0;
	if (n == 0 || n >= CL_NAME_MAX)
		return -1;
	return enqueue(ctx, node, n, frame, len);
}

static const char *
redis_addr(void *ctx)
{
	(void)ctx;
	return "";
}

const cl_link_ops cl_redis_link = {
    .name = "redis",
    .open = redis_open,
    .attach = redis_attach,
    .on_io = redis_on_io,
    .tick = redis_tick,
    .detach = redis_detach,
    .close = redis_close,
    .send_all = redis_send_all,
    .send_to = redis_send_to,
    .learn = NULL,
    .addr = redis_addr,
};
