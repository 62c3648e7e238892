/*
 * The drain: what Phoenix 1.7's socket drainer (Phoenix.Socket.PoolDrainer,
 * the `drainer:` option of a socket) does at shutdown, before the normal
 * stop (tp_endpoint_stop).
 *
 * tp_endpoint_drain marks the endpoint draining and spawns the drainer.  The
 * drainer asks every listener (TP_LST_DRAIN) to close its listening socket
 * at once (with --reuse-port the kernel then sends new connections to the
 * other processes on the port) and to list the connections of its shard
 * that hold a Phoenix socket; it adds the long-poll sessions of the
 * endpoint's table.  That list, taken once (Phoenix takes the children of
 * its pool supervisors once too), is cut into batches of batch_size: one
 * batch now, the next interval_ms later, and so on.  A drained WebSocket
 * gets a close frame 1012 (Service Restart) with no reason, as Phoenix's
 * socket answers :socket_drain with {:stop, {:shutdown, :restart}} and
 * WebSockAdapter (Cowboy and Bandit alike) closes with 1012; a drained
 * long-poll session ends as Phoenix's LongPoll.Server stops (its waiting
 * poll answered at once, where Phoenix lets it run out its window), and the
 * client's next poll, finding no session, opens a new one (410 with a new
 * token, as Phoenix's GET does) on another node.  While draining, the endpoint
 * opens no new socket (a WebSocket upgrade or a new long-poll session gets
 * 503 and the connection closes) and HTTP answers do not keep their
 * connection alive, so that every client's next connection goes elsewhere.
 *
 * The drainer exits "normal" once the last batch is sent (no wait after it,
 * as Phoenix), or "shutdown: drain timeout" at timeout_ms (Phoenix's drainer `shutdown`,
 * after which its supervisor kills it): what is left is for the normal stop
 * (1001).  Sockets that open or close meanwhile are not counted again.
 *
 * Differences from Phoenix: Phoenix drains its channel processes (a socket
 * with three channels is three of its "connections", a socket without a
 * channel is not drained but cut when the HTTP server stops); here the
 * unit is the socket (a WebSocket or a long-poll session), each counted
 * once, with or without channels.  Phoenix computes div(total, size) + 1
 * rounds and so sleeps once more after a last full batch; here the batches
 * are ceil(total / size) and nothing waits after the last one.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/xalloc.h"
#include "transports/conn.h"
#include "transports/longpoll.h"

/* How long the drainer waits for the listeners' lists (a listener being
 * restarted may miss the request). */
#define DRAIN_COLLECT_MS 1000

/* A socket to drain: its process and the message that drains it. */
typedef struct drain_item {
	rt_pid pid;
	uint32_t tag; /* TP_MSG_DRAIN (a connection) or LP_SESS_DRAIN (a session) */
} drain_item;

typedef struct drain_arg {
	tp_endpoint *ep;
	uint32_t batch_size, interval_ms, timeout_ms;
} drain_arg;

/* The drainer's state: owned by the drainer process.  The list is bounded
 * by the endpoint's open connections and long-poll sessions (the fd limit
 * and lp_max_sessions). */
typedef struct drainer {
	drain_arg a;
	drain_item *items;
	size_t n, cap;
	size_t next;        /* the first item of the next batch */
	uint32_t round;     /* batches sent */
	uint32_t rounds;    /* ceil(n / batch_size), known once collected */
	int lists_missing;  /* listeners that have not answered yet */
	bool collected;     /* the list is complete: batches run */
	int64_t started_ms; /* rt_now_ms() at init */
	int64_t due_ms;     /* when the next batch is due */
} drainer;

static void
add_item(drainer *d, rt_pid pid, uint32_t tag)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 256;
		d->items = rt_xrealloc(d->items, d->cap * sizeof(*d->items));
	}
	d->items[d->n++] = (drain_item){.pid = pid, .tag = tag};
}

/* The long-poll sessions of this node (the table's values). */
static void
add_sessions(drainer *d)
{
	lp_table *t = d->a.ep->lp;
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	size_t pos = 0;
	void *v;
	while (rt_strmap_next(&t->map, &pos, NULL, &v))
		add_item(d, (rt_pid)(uintptr_t)v, LP_SESS_DRAIN);
	pthread_mutex_unlock(&t->mu);
}

/* Sends the next batch; returns RT_OK, or the stop after the last one. */
static int
send_batch(drainer *d)
{
	size_t end = d->next + d->a.batch_size;
	if (end > d->n)
		end = d->n;
	d->round++;
	rt_log_info("draining %zu of %zu socket(s) - batch %u of %u, every %u ms", end - d->next,
	            d->n, d->round, d->rounds, d->a.interval_ms);
	for (size_t i = d->next; i < end; i++)
		rt_send(d->items[i].pid, d->items[i].tag, NULL, 0); /* gone meanwhile: dropped */
	d->next = end;
	if (d->next >= d->n)
		return rt_stop("normal");
	d->due_ms = rt_now_ms() + d->a.interval_ms;
	return RT_OK;
}

/* Arms the next wake-up: the next batch, or the drain's deadline if sooner. */
static void
arm(drainer *d)
{
	int64_t deadline = d->started_ms + d->a.timeout_ms;
	int64_t at = d->due_ms < deadline ? d->due_ms : deadline;
	int64_t ms = at - rt_now_ms();
	rt_send_after(ms > 0 ? (uint64_t)ms : 0, rt_self(), TP_DRN_NEXT, NULL, 0);
}

/* The list is complete: the first batch goes now. */
static int
start_batches(drainer *d)
{
	d->collected = true;
	if (d->n == 0) {
		rt_log_info("draining: no socket open");
		return rt_stop("normal");
	}
	d->rounds = (uint32_t)((d->n + d->a.batch_size - 1) / d->a.batch_size);
	int rc = send_batch(d);
	if (rc == RT_OK)
		arm(d);
	return rc;
}

static int
drainer_init(void *state, const void *arg, size_t size)
{
	drainer *d = state;
	(void)size;
	memcpy(&d->a, arg, sizeof(d->a));
	d->started_ms = rt_now_ms();
	tp_endpoint *ep = d->a.ep;
	rt_pid self = rt_self();
	for (int i = 0; i < ep->nsched; i++)
		if (rt_send(atomic_load(&ep->listeners[i]), TP_LST_DRAIN, &self, sizeof(self)) == 0)
			d->lists_missing++;
	add_sessions(d);
	if (d->lists_missing == 0)
		return start_batches(d);
	rt_send_after(DRAIN_COLLECT_MS, self, TP_DRN_COLLECTED, NULL, 0);
	return RT_OK;
}

static int
drainer_handle(void *state, rt_msg *m)
{
	drainer *d = state;
	switch (m->tag) {
	case TP_DRN_LIST:
		if (d->collected || !m->buf)
			break; /* too late: those are for the normal stop */
		for (size_t off = 0; off + sizeof(rt_pid) <= m->buf->len; off += sizeof(rt_pid)) {
			rt_pid pid;
			memcpy(&pid, m->buf->data + off, sizeof(pid));
			add_item(d, pid, TP_MSG_DRAIN);
		}
		if (--d->lists_missing == 0)
			return start_batches(d);
		break;
	case TP_DRN_COLLECTED:
		if (!d->collected) {
			rt_log_warning("draining: %d listener(s) did not list their sockets",
			               d->lists_missing);
			return start_batches(d);
		}
		break;
	case TP_DRN_NEXT: {
		int64_t now = rt_now_ms();
		if (now >= d->started_ms + d->a.timeout_ms) {
			rt_log_warning(
			    "draining: %zu socket(s) left after %u ms (the drain timeout): "
			    "closed by the stop",
			    d->n - d->next, d->a.timeout_ms);
			return rt_stop("shutdown: drain timeout");
		}
		if (now >= d->due_ms) {
			int rc = send_batch(d);
			if (rc != RT_OK)
				return rc;
		}
		arm(d);
		break;
	}
	default:
		break;
	}
	return RT_OK;
}

static void
drainer_terminate(void *state, const char *reason)
{
	drainer *d = state;
	(void)reason;
	free(d->items);
	d->items = NULL;
}

static const rt_behaviour drainer_behaviour = {
    .name = "tp_drainer",
    .state_size = sizeof(drainer),
    .init = drainer_init,
    .handle = drainer_handle,
    .terminate = drainer_terminate,
};

rt_pid
tp_endpoint_drain(tp_endpoint *ep, const tp_drain_opts *o)
{
	if (!ep || !o || o->timeout_ms == 0)
		return RT_NOPID;
	bool no = false;
	if (!atomic_compare_exchange_strong(&ep->draining, &no, true))
		return RT_NOPID; /* once */
	drain_arg a = {.ep = ep,
	               .batch_size = o->batch_size ? o->batch_size : TP_DRAIN_BATCH_SIZE,
	               .interval_ms = o->interval_ms,
	               .timeout_ms = o->timeout_ms};
	rt_log_info("draining the sockets: batches of %u every %u ms, within %u ms", a.batch_size,
	            a.interval_ms, a.timeout_ms);
	return rt_spawn(&drainer_behaviour, &a, sizeof(a));
}
