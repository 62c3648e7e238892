/*
 * Phoenix.Tracker: a pool of shard processes under a supervisor of their
 * own, the shard of a topic chosen by a hash of it (Shard.name_for_topic).
 *
 * Each shard owns a trk_state (tracker_state.c) and monitors every process
 * it tracks: a DOWN, for any exit reason, removes that process's presences
 * as an untrack would, so callers never untrack on exit and a process that
 * was already dead when tracked is removed at once (the monitor fires with
 * "noproc").  Phoenix links and traps exits instead; monitors give the same
 * result without tying the tracked process's life to the shard's.
 *
 * Requests are asynchronous (the runtime has no blocking call): a request
 * is queued on the shard's request list and the shard is sent a wake-up
 * message; each wake-up applies the oldest request.  The list is what keeps the API synchronous in
 * effect: a caller checks "already tracked" against the state plus the queued requests, and its own
 * queued tracks show in its trk_list (Phoenix's GenServer.call gives read-your-writes; this gives
 * the same).  The list is bounded (max_pending track/update requests per shard): past it a track or
 * update fails with TRK_EBUSY at once, so a flood of presence traffic costs the flooders, never
 * accept or join.  Untracks and DOWNs are never refused; they are bounded by the presences that
 * exist.
 *
 * Diffs: Phoenix's shard reports every local join and leave to handle_diff
 * at once (Phoenix.Presence then broadcasts one presence_diff per change);
 * only replication between nodes is batched, per broadcast_period (1.5 s).
 * Here the joins and leaves of a topic are coalesced over period_ms (20 ms
 * by default) into one diff: every member receives every diff, so this
 * caps the frames per member at 1000 / period_ms per topic whatever the
 * churn.  A join and a leave of one presence inside a period both stay in
 * the diff (joins are applied first by phoenix.js's syncDiff, so the net is
 * nothing); dropping the pair instead would strand it in a presence_state
 * read mid-period.
 *
 * Readers (trk_list, trk_count) take the shard's read lock, as Phoenix
 * readers read the shard's ETS table directly.
 *
 * The state, the request list and the pending diff live in a slot owned by
 * the trk_tracker, not in the process: a restarted shard finds them,
 * monitors every tracked process again, applies the requests queued
 * meanwhile and flushes what was pending, so a shard crash loses neither
 * presences, requests nor diffs.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "channels/tracker.h"
#include "runtime/hash.h"
#include "runtime/pidmap.h"
#include "runtime/xalloc.h"

enum {
	TRK_MSG_OP = 0xFFFE0200u, /* wake-up: apply the oldest queued request */
	TRK_MSG_FLUSH,            /* timer: send the pending diffs */
	TRK_MSG_HEARTBEAT,        /* timer: send (or, alone, drop) the delta */
	TRK_MSG_NODE,             /* cl_monitor_nodes: a cl_node_event */
	TRK_MSG_FRAME,            /* a frame from another node: frame_hdr + body */
	TRK_MSG_DOWN_AFTER,       /* timer: a silent node's down window ended (peer_timer) */
	TRK_MSG_PERMDOWN,         /* timer: a down node is forgotten (peer_timer) */
};

#define BROADCAST_MS 200       /* default broadcast period (Phoenix: 1500) */
#define PERMDOWN_MS 1200000    /* Phoenix's permdown_period */
#define MAX_DELTA 10000        /* elements and dots of a delta sent (Phoenix's largest) */
#define MAX_PEERS 256          /* nodes a shard replicates with */
#define MAX_INBOX 4096         /* frames waiting in a shard's mailbox before more are dropped */
#define SILENT_PERIODS 10      /* periods without a delta before the clock is sent alone */
#define TRANSFER_RETRY_MS 1000 /* least time before a transfer is asked for again */
#define MAX_OVERLAY 8          /* a caller's own queued tracks shown by trk_list */

typedef enum { OP_TRACK, OP_UNTRACK, OP_UNTRACK_ALL, OP_UPDATE } op_kind;

/* A queued request.  Owned by its slot's list (under qlock) until the
 * shard applies it and frees it. */
typedef struct trk_op {
	struct trk_op *prev, *next;
	op_kind kind;
	rt_pid pid;    /* the tracked process */
	rt_pid caller; /* who asked (for trk_list's read-your-writes) */
	char *topic, *key, *meta;
	char *(*make_meta)(const char *old_meta, const char *meta);
} trk_op;

/* A join or leave waiting for the flush.  Shard-only. */
typedef struct pend_item {
	struct pend_item *next;
	uint64_t seq;
	bool join;
	bool cancelled; /* met its opposite in the same flush (below) */
	char *topic, *key, *meta;
} pend_item;

/* A node this shard replicates with.  Owner: the shard process (kept in
 * the slot, so a restarted shard still knows which nodes are down). */
typedef struct peer {
	char node[CL_NAME_MAX];
	uint64_t incarnation;
	char replica[TRK_REPLICA_MAX];               /* "node#incarnation" */
	enum { PEER_UP, PEER_SILENT, PEER_DOWN } st; /* SILENT: in its down window */
	uint32_t gen;    /* bumped at every change of st: older timers are void */
	int64_t xfer_at; /* when a transfer was last asked for (0: none awaited) */
} peer;

/* The payload of TRK_MSG_DOWN_AFTER and TRK_MSG_PERMDOWN. */
typedef struct peer_timer {
	char node[CL_NAME_MAX];
	uint32_t gen;
} peer_timer;

/* The head of a TRK_MSG_FRAME payload; the frame's body follows. */
typedef struct frame_hdr {
	char node[CL_NAME_MAX];
	uint64_t incarnation;
} frame_hdr;

/* One shard's data.  Owner: the trk_tracker; `state` is written by the
 * shard process under `lock` (write) and read by any thread under `lock`
 * (read); `pid` and the request list are guarded by `qlock` (taken after
 * `lock` when both are); the pending diff and timers are the shard
 * process's own. */
typedef struct shard_slot {
	struct trk_tracker *t;
	int idx;
	pthread_rwlock_t lock;
	trk_state *state;
	pthread_mutex_t qlock;
	rt_pid pid;
	trk_op *ops_head, *ops_tail;
	uint32_t nops;     /* queued requests */
	uint32_t nbounded; /* queued tracks and updates (bounded by max_pending) */
	pidmap qpids;      /* pid -> queued requests about it (checks skip the list) */
	pidmap qcallers;   /* caller -> queued requests it made (trk_list's overlay) */
	pend_item *pend_head, **pend_tail;
	uint64_t pend_seq;
	bool flush_armed;
	bool write_held; /* the shard holds `lock` (released by terminate on a crash) */
	peer *peers;     /* the shard process's (see peer) */
	size_t npeers, cappeers;
	uint32_t silent; /* heartbeats since a delta or clock was sent */
	_Atomic uint64_t tracks, untracks, downs, diffs, refused;
	_Atomic uint64_t deltas_sent, deltas_received, deltas_skipped;
	_Atomic uint64_t transfers_requested, transfers_received;
	_Atomic uint64_t frames_refused, frames_dropped;
} shard_slot;

/* Owner: whoever called trk_start; immutable after it but for the slots. */
struct trk_tracker {
	int nshards;
	uint32_t period_ms, max_pending;
	cl_node *cl; /* NULL: alone */
	char replica[TRK_REPLICA_MAX];
	uint32_t broadcast_ms, down_ms, permdown_ms, max_delta;
	_Atomic bool mismatch_logged; /* the shard-count mismatch is logged once */
	_Atomic uint64_t frames_refused, frames_dropped; /* by the cluster handler */
	trk_diff_fn diff;
	void *ud;
	rt_pid sup;
	shard_slot *slots;
	char (*ids)[16];
};

/* ------------------------------------------------------------------ shard process */

/* The shard process's state (owner: that process); everything it works on
 * is in the slot. */
typedef struct shard_proc {
	shard_slot *slot;
} shard_proc;

static void
op_free(trk_op *op)
{
	free(op->topic);
	free(op->key);
	free(op->meta);
	free(op);
}

/* Per-pid counters of queued requests: 0 (absent) means no scan is needed. */
static void
count_add(pidmap *m, rt_pid pid)
{
	uint32_t n = 0;
	if (pid) {
		pidmap_get(m, pid, &n);
		pidmap_put(m, pid, n + 1);
	}
}

static void
count_del(pidmap *m, rt_pid pid)
{
	uint32_t n = 0;
	if (pid && pidmap_get(m, pid, &n)) {
		if (n > 1)
			pidmap_put(m, pid, n - 1);
		else
			pidmap_del(m, pid);
	}
}

static bool
count_has(const pidmap *m, rt_pid pid)
{
	uint32_t n;
	return pid && pidmap_get(m, pid, &n);
}

/* Unlinks op from its slot's list (qlock held). */
static void
op_unlink(shard_slot *sl, trk_op *op)
{
	if (op->prev)
		op->prev->next = op->next;
	else
		sl->ops_head = op->next;
	if (op->next)
		op->next->prev = op->prev;
	else
		sl->ops_tail = op->prev;
	sl->nops--;
	if (op->kind == OP_TRACK || op->kind == OP_UPDATE)
		sl->nbounded--;
	count_del(&sl->qpids, op->pid);
	count_del(&sl->qcallers, op->caller);
}

static char *
dup_or_null(const char *s)
{
	if (!s)
		return NULL;
	char *d = rt_xstrdup(s);
	return d;
}

/* trk_report_fn: queues a join or leave for the next flush. */
static void
pend_report(void *ud, const char *topic, const char *key, const char *meta, bool join)
{
	shard_slot *sl = ud;
	pend_item *it = rt_xmalloc(sizeof(*it));
	it->next = NULL;
	it->seq = sl->pend_seq++;
	it->join = join;
	it->cancelled = false;
	it->topic = dup_or_null(topic);
	it->key = dup_or_null(key);
	it->meta = dup_or_null(meta);
	*sl->pend_tail = it;
	sl->pend_tail = &it->next;
	if (!sl->flush_armed && sl->t->period_ms != UINT32_MAX) {
		rt_send_after(sl->t->period_ms, rt_self(), TRK_MSG_FLUSH, NULL, 0);
		sl->flush_armed = true;
	}
}

static int
cmp_pend(const void *a, const void *b)
{
	const pend_item *x = *(pend_item *const *)a, *y = *(pend_item *const *)b;
	int c = strcmp(x->topic, y->topic);
	if (c)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Orders one topic's items by element (key, meta: the meta holds the
 * phx_ref), then by time. */
static int
cmp_elem(const void *a, const void *b)
{
	const pend_item *x = *(pend_item *const *)a, *y = *(pend_item *const *)b;
	int c = strcmp(x->key ? x->key : "", y->key ? y->key : "");
	if (!c)
		c = strcmp(x->meta ? x->meta : "", y->meta ? y->meta : "");
	if (c)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Cancels, among the n items of one topic (scratch: room for n), each leave
 * of an element followed by its join: a member that left and came back
 * within the period (its node down, then up again) is no change, and a
 * presence_diff that carried both would lose it, since clients apply a
 * diff's joins before its leaves.  (A join then a leave stays: applied in
 * that order, it ends as it should.) */
static void
cancel_pairs(pend_item **items, size_t n, pend_item **scratch)
{
	memcpy(scratch, items, n * sizeof(*scratch));
	qsort(scratch, n, sizeof(*scratch), cmp_elem);
	for (size_t i = 0; i + 1 < n; i++) {
		pend_item *x = scratch[i], *y = scratch[i + 1];
		if (!x->join && y->join &&
		    strcmp(x->key ? x->key : "", y->key ? y->key : "") == 0 &&
		    strcmp(x->meta ? x->meta : "", y->meta ? y->meta : "") == 0) {
			x->cancelled = y->cancelled = true;
			i++;
		}
	}
}

/* Sends the pending diffs: one call of the diff callback per topic, joins
 * and leaves in the order they happened (less those that cancel out). */
static void
flush_pending(shard_slot *sl)
{
	sl->flush_armed = false;
	size_t n = 0;
	for (pend_item *it = sl->pend_head; it; it = it->next)
		n++;
	if (!n)
		return;
	pend_item **v = rt_xmalloc(n * sizeof(*v));
	pend_item **scratch = rt_xmalloc(n * sizeof(*scratch));
	trk_item *joins = rt_xmalloc(n * sizeof(*joins));
	trk_item *leaves = rt_xmalloc(n * sizeof(*leaves));
	size_t i = 0;
	for (pend_item *it = sl->pend_head; it; it = it->next)
		v[i++] = it;
	sl->pend_head = NULL;
	sl->pend_tail = &sl->pend_head;
	qsort(v, n, sizeof(*v), cmp_pend);
	for (size_t a = 0; a < n;) {
		size_t b = a, nj = 0, nl = 0;
		while (b < n && strcmp(v[b]->topic, v[a]->topic) == 0)
			b++;
		cancel_pairs(v + a, b - a, scratch);
		for (size_t k = a; k < b; k++) {
			trk_item item = {v[k]->key, v[k]->meta};
			if (v[k]->cancelled)
				continue;
			if (v[k]->join)
				joins[nj++] = item;
			else
				leaves[nl++] = item;
		}
		if (nj || nl) {
			sl->t->diff(sl->t->ud, v[a]->topic, joins, nj, leaves, nl);
			atomic_fetch_add_explicit(&sl->diffs, 1, memory_order_relaxed);
		}
		a = b;
	}
	for (i = 0; i < n; i++) {
		free(v[i]->topic);
		free(v[i]->key);
		free(v[i]->meta);
		free(v[i]);
	}
	free(v);
	free(scratch);
	free(joins);
	free(leaves);
}

static void
write_lock(shard_slot *sl)
{
	pthread_rwlock_wrlock(&sl->lock);
	sl->write_held = true;
}

static void
write_unlock(shard_slot *sl)
{
	sl->write_held = false;
	pthread_rwlock_unlock(&sl->lock);
}

/* Drops pid's monitor when it has no presence left in this shard. */
static void
maybe_demonitor(shard_slot *sl, rt_pid pid, uint64_t mon)
{
	if (mon && !trk_state_has_pid(sl->state, pid))
		rt_demonitor(mon);
}

static void
apply_op(shard_slot *sl, trk_op *op)
{
	trk_state *st = sl->state;
	uint64_t *w = trk_state_pid_word(st, op->pid);
	uint64_t mon = w ? *w : 0;
	switch (op->kind) {
	case OP_TRACK:
		if (trk_state_join(st, op->pid, op->topic, op->key, op->meta, pend_report, sl) ==
		    0) {
			atomic_fetch_add_explicit(&sl->tracks, 1, memory_order_relaxed);
			w = trk_state_pid_word(st, op->pid);
			if (!*w)
				*w = rt_monitor(op->pid);
		} else {
			rt_log_debug("tracker: %s/%s already tracked", op->topic, op->key);
		}
		break;
	case OP_UNTRACK:
		if (trk_state_leave(st, op->pid, op->topic, op->key, pend_report, sl) == 0)
			atomic_fetch_add_explicit(&sl->untracks, 1, memory_order_relaxed);
		maybe_demonitor(sl, op->pid, mon);
		break;
	case OP_UNTRACK_ALL:
		atomic_fetch_add_explicit(&sl->untracks,
		                          trk_state_leave_pid(st, op->pid, pend_report, sl),
		                          memory_order_relaxed);
		maybe_demonitor(sl, op->pid, mon);
		break;
	case OP_UPDATE: {
		const char *old = trk_state_get(st, op->pid, op->topic, op->key);
		if (!old)
			break;
		char *meta = op->make_meta ? op->make_meta(old, op->meta) : NULL;
		const char *use = meta ? meta : op->meta;
		/* Phoenix reports an update as one diff: the new meta joins and
		 * the old one leaves */
		pend_report(sl, op->topic, op->key, use, true);
		pend_report(sl, op->topic, op->key, old, false);
		trk_state_update(st, op->pid, op->topic, op->key, use);
		free(meta);
		break;
	}
	}
}

static void
remonitor(void *ud, rt_pid pid, uint64_t *word)
{
	(void)ud;
	*word = rt_monitor(pid);
}

/* ------------------------------------------------------------------ replication */

/* Replication follows Phoenix.Tracker.Shard, with the cluster (cluster/)
 * in the role of distributed Erlang and Phoenix.PubSub: shard i of every
 * node talks to shard i of the others.
 *
 * - Every broadcast_ms a shard with changes sends its delta to every node
 *   (TRK_WIRE_DELTA) and starts a new one; a delta too large to send is
 *   dropped, and its clock sent instead (TRK_WIRE_CLOCK), as it is after
 *   SILENT_PERIODS quiet periods, so that others notice what they missed.
 * - A receiver merges a delta; if the delta starts past the clock it has of
 *   the sender (one was lost, or dropped as too large), or a clock frame is
 *   ahead of it, it asks the sender for its whole state
 *   (TRK_WIRE_TRANSFER_REQ) and merges the answer (TRK_WIRE_TRANSFER_ACK,
 *   trk_state_extract).  It also asks every node that comes up.
 * - nodeup: the replica is up (a replica that was down has its members
 *   listed again).  nodedown by silence: after down_ms the replica is down
 *   (its members leave), and after permdown_ms it is forgotten; by goodbye
 *   or restart: down and forgotten at once.  A replica is named by node and
 *   incarnation, so a restarted node is a new replica and its previous
 *   one's members can never come back as ghosts.
 * Joins and leaves from merges and downs go through pend_report, like
 * local ones: the diff callback sees them all. */

static peer *
peer_find(shard_slot *sl, const char *node)
{
	for (size_t i = 0; i < sl->npeers; i++)
		if (strcmp(sl->peers[i].node, node) == 0)
			return &sl->peers[i];
	return NULL;
}

static void
replica_name(char out[TRK_REPLICA_MAX], const char *node, uint64_t incarnation)
{
	snprintf(out, TRK_REPLICA_MAX, "%s#%" PRIx64, node, incarnation);
}

static peer *
peer_add(shard_slot *sl, const char *node, uint64_t incarnation)
{
	if (sl->npeers == MAX_PEERS)
		return NULL;
	if (sl->npeers == sl->cappeers) {
		sl->cappeers = sl->cappeers ? sl->cappeers * 2 : 8;
		sl->peers = rt_xrealloc(sl->peers, sl->cappeers * sizeof(peer));
	}
	peer *p = &sl->peers[sl->npeers++];
	memset(p, 0, sizeof(*p));
	snprintf(p->node, sizeof(p->node), "%s", node);
	p->incarnation = incarnation;
	replica_name(p->replica, node, incarnation);
	return p;
}

/* Sends a frame to one node (node) or to all (NULL). */
static int
send_frame(shard_slot *sl, const char *node, trk_frame *f)
{
	f->nshards = (uint32_t)sl->t->nshards;
	f->shard = (uint32_t)sl->idx;
	char *buf;
	size_t len;
	if (trk_wire_encode(f, &buf, &len) != 0)
		return -1;
	cl_node *cl = sl->t->cl;
	int rc = node ? cl_send_to(cl, node, CL_SVC_TRACKER, buf, len)
	              : cl_send_all(cl, CL_SVC_TRACKER, buf, len);
	if (rc != 0)
		rt_log_debug("tracker: shard %d: a frame of %zu bytes could not be sent to %s",
		             sl->idx, len, node ? node : "the cluster");
	free(buf);
	return rc;
}

/* Asks p for its whole state, unless an answer is still awaited. */
static void
request_transfer(shard_slot *sl, peer *p, bool force)
{
	int64_t now = rt_now_ms();
	uint32_t retry = 5 * sl->t->broadcast_ms;
	if (retry < TRANSFER_RETRY_MS)
		retry = TRANSFER_RETRY_MS;
	if (!force && p->xfer_at && now - p->xfer_at < (int64_t)retry)
		return;
	trk_frame f = {.kind = TRK_WIRE_TRANSFER_REQ};
	if (send_frame(sl, p->node, &f) == 0) {
		p->xfer_at = now ? now : 1;
		atomic_fetch_add_explicit(&sl->transfers_requested, 1, memory_order_relaxed);
	}
}

/* Marks p's replica down (its members leave) and arms its permdown. */
static void
peer_down(shard_slot *sl, peer *p)
{
	write_lock(sl);
	trk_state_replica_down(sl->state, p->replica, pend_report, sl);
	write_unlock(sl);
	p->st = PEER_DOWN;
	p->gen++;
	peer_timer pt = {.gen = p->gen};
	memcpy(pt.node, p->node, sizeof(pt.node));
	rt_send_after(sl->t->permdown_ms, rt_self(), TRK_MSG_PERMDOWN, &pt, sizeof(pt));
}

/* Forgets p: its members leave (if still listed), its replica and entry go. */
static void
peer_forget(shard_slot *sl, peer *p)
{
	write_lock(sl);
	trk_state_replica_down(sl->state, p->replica, pend_report, sl);
	trk_state_remove_down_replica(sl->state, p->replica);
	write_unlock(sl);
	rt_log_debug("tracker: shard %d forgets %s", sl->idx, p->replica);
	*p = sl->peers[--sl->npeers];
}

static void
on_node(shard_slot *sl, const cl_node_event *ev)
{
	char node[CL_NAME_MAX];
	memcpy(node, ev->name, sizeof(node));
	node[sizeof(node) - 1] = 0;
	peer *p = peer_find(sl, node);
	if (ev->up) {
		if (p && p->incarnation != ev->incarnation) { /* restarted: the old one goes */
			peer_forget(sl, p);
			p = NULL;
		}
		if (!p && !(p = peer_add(sl, node, ev->incarnation))) {
			rt_log_warning(
			    "tracker: shard %d replicates with %d nodes already: %s ignored",
			    sl->idx, MAX_PEERS, node);
			return;
		}
		p->st = PEER_UP;
		p->gen++;
		write_lock(sl);
		int rc = trk_state_replica_up(sl->state, p->replica, pend_report, sl);
		write_unlock(sl);
		if (rc != 0) {
			rt_log_warning("tracker: shard %d: no room for replica %s", sl->idx,
			               p->replica);
			*p = sl->peers[--sl->npeers];
			return;
		}
		request_transfer(sl, p, true);
		return;
	}
	if (!p || p->incarnation != ev->incarnation || p->st == PEER_DOWN)
		return;
	if (strcmp(ev->reason, "timeout") != 0) { /* goodbye, restarted: at once */
		peer_forget(sl, p);
	} else if (sl->t->down_ms && p->st == PEER_UP) {
		p->st = PEER_SILENT;
		p->gen++;
		peer_timer pt = {.gen = p->gen};
		memcpy(pt.node, p->node, sizeof(pt.node));
		rt_send_after(sl->t->down_ms, rt_self(), TRK_MSG_DOWN_AFTER, &pt, sizeof(pt));
	} else if (!sl->t->down_ms) {
		peer_down(sl, p);
	}
}

static void
on_peer_timer(shard_slot *sl, uint32_t tag, const peer_timer *pt)
{
	char node[CL_NAME_MAX];
	memcpy(node, pt->node, sizeof(node));
	node[sizeof(node) - 1] = 0;
	peer *p = peer_find(sl, node);
	if (!p || p->gen != pt->gen)
		return; /* up again, restarted or forgotten since */
	if (tag == TRK_MSG_DOWN_AFTER && p->st == PEER_SILENT)
		peer_down(sl, p);
	else if (tag == TRK_MSG_PERMDOWN && p->st == PEER_DOWN)
		peer_forget(sl, p);
}

/* Refuses a frame (malformed, or from a node not up here). */
static void
refuse(shard_slot *sl, const char *node, const char *why)
{
	atomic_fetch_add_explicit(&sl->frames_refused, 1, memory_order_relaxed);
	rt_log_debug("tracker: shard %d refused a frame from %s: %s", sl->idx, node, why);
}

static void
on_frame(shard_slot *sl, const rt_msg *m)
{
	if (m->size < sizeof(frame_hdr))
		return;
	const frame_hdr *h = rt_msg_data(m);
	char node[CL_NAME_MAX];
	memcpy(node, h->node, sizeof(node));
	node[sizeof(node) - 1] = 0;
	trk_frame f;
	if (trk_wire_decode(h + 1, m->size - sizeof(*h), &f) != 0) {
		refuse(sl, node, "malformed");
		return;
	}
	peer *p = peer_find(sl, node);
	if (p && (p->incarnation != h->incarnation || p->st == PEER_DOWN))
		p = NULL;
	if (f.kind == TRK_WIRE_TRANSFER_REQ) {
		/* answered even before the sender is up here: it is up there */
		char remote[TRK_REPLICA_MAX];
		replica_name(remote, node, h->incarnation);
		trk_frame ack = {.kind = TRK_WIRE_TRANSFER_ACK};
		ack.delta = trk_state_extract(sl->state, remote); /* the writer reads unlocked */
		send_frame(sl, node, &ack);
		trk_delta_free(ack.delta);
		return;
	}
	if (!p) {
		refuse(sl, node, "not an up member");
		trk_delta_free(f.delta);
		return;
	}
	if (f.delta && strcmp(f.delta->replicas[0], p->replica) != 0) {
		refuse(sl, node, "another replica's data");
		trk_delta_free(f.delta);
		return;
	}
	uint64_t have = trk_state_clock(sl->state, p->replica);
	switch (f.kind) {
	case TRK_WIRE_DELTA:
		write_lock(sl);
		trk_state_merge(sl->state, f.delta, pend_report, sl);
		write_unlock(sl);
		atomic_fetch_add_explicit(&sl->deltas_received, 1, memory_order_relaxed);
		if (f.delta->start[0] > have) /* a gap: merged, and the rest is asked for */
			request_transfer(sl, p, false);
		break;
	case TRK_WIRE_CLOCK:
		if (f.clock > have)
			request_transfer(sl, p, false);
		break;
	case TRK_WIRE_TRANSFER_ACK:
		write_lock(sl);
		trk_state_merge(sl->state, f.delta, pend_report, sl);
		write_unlock(sl);
		p->xfer_at = 0;
		atomic_fetch_add_explicit(&sl->transfers_received, 1, memory_order_relaxed);
		break;
	default:
		break;
	}
	trk_delta_free(f.delta);
}

/* The heartbeat: sends the delta (or the clock) to the other nodes and
 * starts a new delta; alone, only the latter. */
static void
heartbeat(shard_slot *sl)
{
	bool peers = false;
	for (size_t i = 0; i < sl->npeers && !peers; i++)
		peers = sl->peers[i].st != PEER_DOWN;
	peers = peers && sl->t->cl;
	trk_delta *d = NULL;
	write_lock(sl);
	bool changed = trk_state_has_delta(sl->state);
	if (changed) {
		if (peers)
			d = trk_state_extract_delta(sl->state);
		trk_state_reset_delta(sl->state);
	}
	uint64_t clock = trk_state_clock(sl->state, sl->t->replica);
	write_unlock(sl);
	if (!peers) {
		trk_delta_free(d);
		return;
	}
	if (d && d->ncloud + d->nvalues > sl->t->max_delta) {
		atomic_fetch_add_explicit(&sl->deltas_skipped, 1, memory_order_relaxed);
		trk_delta_free(d);
		d = NULL;
		sl->silent = SILENT_PERIODS; /* the clock goes now: others ask for a transfer */
	}
	if (d) {
		trk_frame f = {.kind = TRK_WIRE_DELTA, .delta = d};
		if (send_frame(sl, NULL, &f) == 0)
			atomic_fetch_add_explicit(&sl->deltas_sent, 1, memory_order_relaxed);
		trk_delta_free(d);
		sl->silent = 0;
	} else if (++sl->silent >= SILENT_PERIODS) {
		trk_frame f = {.kind = TRK_WIRE_CLOCK, .clock = clock};
		send_frame(sl, NULL, &f);
		sl->silent = 0;
	}
}

/* After a shard restart: its node monitor died with the previous process;
 * the timers of nodes in their down window or down are armed again. */
static void
replication_restart(shard_slot *sl)
{
	if (!sl->t->cl)
		return;
	if (cl_monitor_nodes(sl->t->cl, rt_self(), TRK_MSG_NODE) != 0)
		rt_log_error("tracker: shard %d cannot monitor the cluster's nodes", sl->idx);
	for (size_t i = 0; i < sl->npeers; i++) {
		peer *p = &sl->peers[i];
		peer_timer pt = {.gen = p->gen};
		memcpy(pt.node, p->node, sizeof(pt.node));
		if (p->st == PEER_SILENT)
			rt_send_after(sl->t->down_ms, rt_self(), TRK_MSG_DOWN_AFTER, &pt,
			              sizeof(pt));
		else if (p->st == PEER_DOWN)
			rt_send_after(sl->t->permdown_ms, rt_self(), TRK_MSG_PERMDOWN, &pt,
			              sizeof(pt));
	}
}

/* The CL_SVC_TRACKER handler, in the cluster process: checks the header
 * and hands a copy of the frame to its shard, which decodes it. */
static void
cluster_receive(void *ud, const cl_member *from, const void *body, size_t len)
{
	trk_tracker *t = ud;
	int kind;
	uint32_t nshards, shard;
	if (trk_wire_peek(body, len, &kind, &nshards, &shard) != 0 ||
	    len > UINT32_MAX - sizeof(frame_hdr)) {
		atomic_fetch_add_explicit(&t->frames_refused, 1, memory_order_relaxed);
		return;
	}
	if (nshards != (uint32_t)t->nshards) {
		if (!atomic_exchange(&t->mismatch_logged, true))
			rt_log_error("tracker: node %s runs %u presence shards and this node %d: "
			             "presence is not replicated between them (set the same "
			             "number on every node)",
			             from->name, nshards, t->nshards);
		atomic_fetch_add_explicit(&t->frames_refused, 1, memory_order_relaxed);
		return;
	}
	shard_slot *sl = &t->slots[shard];
	pthread_mutex_lock(&sl->qlock);
	rt_pid pid = sl->pid;
	pthread_mutex_unlock(&sl->qlock);
	if (!pid || rt_msgq_len(pid) >= MAX_INBOX) { /* lost frames are caught up by transfer */
		atomic_fetch_add_explicit(&t->frames_dropped, 1, memory_order_relaxed);
		return;
	}
	rt_msg *m = rt_msg_alloc(TRK_MSG_FRAME, sizeof(frame_hdr) + len);
	frame_hdr *h = rt_msg_data(m);
	memset(h, 0, sizeof(*h));
	snprintf(h->node, sizeof(h->node), "%s", from->name);
	h->incarnation = from->incarnation;
	memcpy(h + 1, body, len);
	rt_send_msg(pid, m);
}

static int
shard_init(void *st, const void *arg, size_t size)
{
	shard_proc *sp = st;
	(void)size;
	shard_slot *sl = *(shard_slot *const *)arg;
	sp->slot = sl;
	write_lock(sl);
	/* a restart: the monitors died with the previous process */
	trk_state_foreach_pid(sl->state, remonitor, NULL);
	pthread_mutex_lock(&sl->qlock);
	/* requests queued before this process could be woken for them (the
	 * pool starting, or a previous shard that died with their wake-ups) */
	while (sl->ops_head) {
		trk_op *op = sl->ops_head;
		apply_op(sl, op);
		op_unlink(sl, op);
		op_free(op);
	}
	sl->pid = rt_self();
	pthread_mutex_unlock(&sl->qlock);
	write_unlock(sl);
	sl->flush_armed = false;
	if (sl->pend_head && sl->t->period_ms != UINT32_MAX) {
		rt_send_after(sl->t->period_ms, rt_self(), TRK_MSG_FLUSH, NULL, 0);
		sl->flush_armed = true;
	}
	replication_restart(sl);
	rt_send_after(sl->t->broadcast_ms, rt_self(), TRK_MSG_HEARTBEAT, NULL, 0);
	return RT_OK;
}

static int
shard_handle(void *st, rt_msg *m)
{
	shard_slot *sl = ((shard_proc *)st)->slot;
	switch (m->tag) {
	case TRK_MSG_OP: {
		/* one wake-up per queued request: apply the oldest */
		write_lock(sl);
		pthread_mutex_lock(&sl->qlock);
		trk_op *op = sl->ops_head;
		pthread_mutex_unlock(&sl->qlock);
		if (op) {
			apply_op(sl, op);
			pthread_mutex_lock(&sl->qlock);
			op_unlink(sl, op);
			pthread_mutex_unlock(&sl->qlock);
		}
		write_unlock(sl);
		if (op)
			op_free(op);
		break;
	}
	case RT_MSG_DOWN: {
		const rt_down_info *d = rt_msg_data(m);
		write_lock(sl);
		uint64_t *w = trk_state_pid_word(sl->state, d->pid);
		if (w && *w == d->ref)
			atomic_fetch_add_explicit(
			    &sl->downs, trk_state_leave_pid(sl->state, d->pid, pend_report, sl),
			    memory_order_relaxed);
		write_unlock(sl);
		break;
	}
	case TRK_MSG_FLUSH:
		flush_pending(sl);
		break;
	case TRK_MSG_HEARTBEAT:
		heartbeat(sl);
		rt_send_after(sl->t->broadcast_ms, rt_self(), TRK_MSG_HEARTBEAT, NULL, 0);
		break;
	case TRK_MSG_NODE:
		if (m->size == sizeof(cl_node_event))
			on_node(sl, rt_msg_data(m));
		break;
	case TRK_MSG_FRAME:
		on_frame(sl, m);
		break;
	case TRK_MSG_DOWN_AFTER:
	case TRK_MSG_PERMDOWN:
		if (m->size == sizeof(peer_timer))
			on_peer_timer(sl, m->tag, rt_msg_data(m));
		break;
	default:
		break;
	}
	return RT_OK;
}

/* With no coalescing period, diffs go out after each batch of messages. */
static void
shard_flush(void *st)
{
	shard_slot *sl = ((shard_proc *)st)->slot;
	if (sl->t->period_ms == UINT32_MAX && sl->pend_head)
		flush_pending(sl);
}

static void
shard_terminate(void *st, const char *reason)
{
	shard_slot *sl = ((shard_proc *)st)->slot;
	(void)reason;
	if (!sl)
		return;
	if (sl->write_held) /* crashed inside a change */
		write_unlock(sl);
	pthread_mutex_lock(&sl->qlock);
	if (sl->pid == rt_self())
		sl->pid = RT_NOPID;
	pthread_mutex_unlock(&sl->qlock);
}

static const rt_behaviour shard_behaviour = {
    .name = "tracker_shard",
    .state_size = sizeof(shard_proc),
    .init = shard_init,
    .handle = shard_handle,
    .terminate = shard_terminate,
    .flush = shard_flush,
};

/* ------------------------------------------------------------------ pool */

trk_tracker *
trk_start(const trk_opts *opts)
{
	if (!opts || !opts->diff)
		return NULL;
	trk_tracker *t = rt_xcalloc(1, sizeof(*t));
	t->nshards = opts->shards > 0 ? opts->shards : rt_schedulers();
	if (t->nshards < 1)
		t->nshards = 1;
	t->period_ms = opts->period_ms ? opts->period_ms : 20;
	t->max_pending = opts->max_pending ? opts->max_pending : 10000;
	t->diff = opts->diff;
	t->ud = opts->ud;
	t->cl = opts->cluster;
	t->broadcast_ms = opts->broadcast_ms ? opts->broadcast_ms : BROADCAST_MS;
	t->down_ms = opts->down_ms;
	t->permdown_ms = opts->permdown_ms ? opts->permdown_ms : PERMDOWN_MS;
	t->max_delta = opts->max_delta ? opts->max_delta : MAX_DELTA;
	if (t->cl)
		replica_name(t->replica, cl_name(t->cl), cl_incarnation(t->cl));
	else
		snprintf(t->replica, sizeof(t->replica), "%s",
		         opts->replica ? opts->replica : "nonode@nohost");
	t->slots = rt_xcalloc((size_t)t->nshards, sizeof(shard_slot));
	t->ids = rt_xcalloc((size_t)t->nshards, sizeof(*t->ids));
	rt_child_spec *kids = rt_xcalloc((size_t)t->nshards, sizeof(rt_child_spec));
	shard_slot **args = rt_xcalloc((size_t)t->nshards, sizeof(*args));
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* the shard's writes are short; readers must not starve it */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (int i = 0; i < t->nshards; i++) {
		shard_slot *sl = &t->slots[i];
		sl->t = t;
		sl->idx = i;
		pthread_rwlock_init(&sl->lock, &ra);
		pthread_mutex_init(&sl->qlock, NULL);
		sl->state = trk_state_new(t->replica);
		sl->pend_tail = &sl->pend_head;
		snprintf(t->ids[i], sizeof(t->ids[i]), "shard%d", i);
		args[i] = sl;
		kids[i] = (rt_child_spec){.id = t->ids[i],
		                          .behaviour = &shard_behaviour,
		                          .arg = &args[i],
		                          .arg_size = sizeof(shard_slot *),
		                          .restart = RT_PERMANENT,
		                          .shutdown_ms = 5000};
	}
	pthread_rwlockattr_destroy(&ra);
	rt_sup_spec spec = {.strategy = RT_ONE_FOR_ONE,
	                    .intensity = 2 * t->nshards, /* Phoenix: pool_size * 2 per second */
	                    .period_ms = 1000,
	                    .children = kids,
	                    .nchildren = (size_t)t->nshards};
	t->sup =
	    opts->parent ? rt_sup_start_under(opts->parent, "tracker", &spec) : rt_sup_start(&spec);
	free(kids);
	free(args);
	if (!t->sup) {
		trk_stop(t);
		return NULL;
	}
	if (t->cl && cl_register(t->cl, CL_SVC_TRACKER, cluster_receive, t) != 0) {
		rt_log_error("tracker: the cluster's tracker service is taken");
		trk_stop(t);
		return NULL;
	}
	return t;
}

void
trk_stop(trk_tracker *t)
{
	if (!t)
		return;
	if (t->sup) {
		rt_exit(t->sup, "shutdown"); /* void when the parent stopped it */
		rt_wait_exit(t->sup, 60000);
		for (int s = 0; s < t->nshards; s++) { /* the shards end before their supervisor */
			pthread_mutex_lock(&t->slots[s].qlock);
			rt_pid p = t->slots[s].pid;
			pthread_mutex_unlock(&t->slots[s].qlock);
			if (p)
				rt_wait_exit(p, 10000);
		}
	}
	for (int i = 0; i < t->nshards; i++) {
		shard_slot *sl = &t->slots[i];
		while (sl->ops_head) {
			trk_op *op = sl->ops_head;
			op_unlink(sl, op);
			op_free(op);
		}
		for (pend_item *it = sl->pend_head, *nx; it; it = nx) {
			nx = it->next;
			free(it->topic);
			free(it->key);
			free(it->meta);
			free(it);
		}
		trk_state_free(sl->state);
		free(sl->peers);
		pidmap_free(&sl->qpids);
		pidmap_free(&sl->qcallers);
		pthread_rwlock_destroy(&sl->lock);
		pthread_mutex_destroy(&sl->qlock);
	}
	free(t->slots);
	free(t->ids);
	free(t);
}

rt_pid
trk_sup(const trk_tracker *t)
{
	return t->sup;
}

static shard_slot *
slot_for(trk_tracker *t, const char *topic)
{
	return &t->slots[rt_hash_str(topic) % (uint64_t)t->nshards];
}

static bool
bad_field(const char *s, size_t max)
{
	return !s || !*s || strnlen(s, max) == max;
}

/* Keys may be empty: Phoenix tracks a nil key as to_string(nil), "". */
static bool
bad_key(const char *s)
{
	return !s || strnlen(s, TRK_KEY_MAX) == TRK_KEY_MAX;
}

/* Whether (pid, topic, key) will be tracked once the queued requests are
 * applied (lock and qlock held). */
static bool
will_exist(shard_slot *sl, rt_pid pid, const char *topic, const char *key)
{
	bool exists = trk_state_get(sl->state, pid, topic, key) != NULL;
	if (!count_has(&sl->qpids, pid)) /* the usual case: O(1) */
		return exists;
	for (trk_op *op = sl->ops_head; op; op = op->next) {
		if (op->pid != pid)
			continue;
		if (op->kind == OP_UNTRACK_ALL)
			exists = false;
		else if (strcmp(op->topic, topic) == 0 && strcmp(op->key, key) == 0) {
			if (op->kind == OP_TRACK)
				exists = true;
			else if (op->kind == OP_UNTRACK)
				exists = false;
		}
	}
	return exists;
}

/* Queues op on its shard and wakes the shard (qlock held).  When the shard
 * is down (starting or restarting), the op waits on the list: the next
 * shard applies everything queued before it started, in order. */
static int
enqueue(shard_slot *sl, trk_op *op)
{
	op->caller = rt_self();
	op->prev = sl->ops_tail;
	op->next = NULL;
	if (sl->ops_tail)
		sl->ops_tail->next = op;
	else
		sl->ops_head = op;
	sl->ops_tail = op;
	sl->nops++;
	if (op->kind == OP_TRACK || op->kind == OP_UPDATE)
		sl->nbounded++;
	count_add(&sl->qpids, op->pid);
	count_add(&sl->qcallers, op->caller);
	if (sl->pid)
		rt_send(sl->pid, TRK_MSG_OP, NULL, 0); /* lost if it just died: see above */
	return 0;
}

static trk_op *
op_new(op_kind kind, rt_pid pid, const char *topic, const char *key, const char *meta)
{
	trk_op *op = rt_xcalloc(1, sizeof(*op));
	op->kind = kind;
	op->pid = pid;
	op->topic = dup_or_null(topic);
	op->key = dup_or_null(key);
	op->meta = dup_or_null(meta);
	return op;
}

/* Queues a track or an update after checking it against the state and the
 * queue: `want` is whether the presence must already exist. */
static int
request_bounded(trk_tracker *t, trk_op *op, bool want)
{
	shard_slot *sl = slot_for(t, op->topic);
	pthread_rwlock_rdlock(&sl->lock);
	pthread_mutex_lock(&sl->qlock);
	int rc;
	if (will_exist(sl, op->pid, op->topic, op->key) != want) {
		op_free(op);
		rc = want ? TRK_ENOENT : TRK_EEXIST;
	} else if (sl->nbounded >= t->max_pending) {
		op_free(op);
		atomic_fetch_add_explicit(&sl->refused, 1, memory_order_relaxed);
		rc = TRK_EBUSY;
	} else {
		rc = enqueue(sl, op);
	}
	pthread_mutex_unlock(&sl->qlock);
	pthread_rwlock_unlock(&sl->lock);
	return rc;
}

int
trk_track(trk_tracker *t, rt_pid pid, const char *topic, const char *key, const char *meta)
{
	if (!pid || bad_field(topic, TRK_TOPIC_MAX) || bad_key(key) ||
	    bad_field(meta, TRK_META_MAX))
		return TRK_EINVAL;
	return request_bounded(t, op_new(OP_TRACK, pid, topic, key, meta), false);
}

int
trk_update(trk_tracker *t, rt_pid pid, const char *topic, const char *key, const char *meta,
           char *(*make_meta)(const char *old_meta, const char *meta))
{
	if (!pid || bad_field(topic, TRK_TOPIC_MAX) || bad_key(key) ||
	    bad_field(meta, TRK_META_MAX))
		return TRK_EINVAL;
	trk_op *op = op_new(OP_UPDATE, pid, topic, key, meta);
	op->make_meta = make_meta;
	return request_bounded(t, op, true);
}

int
trk_untrack(trk_tracker *t, rt_pid pid, const char *topic, const char *key)
{
	if (!pid || bad_field(topic, TRK_TOPIC_MAX) || bad_key(key))
		return TRK_EINVAL;
	shard_slot *sl = slot_for(t, topic);
	pthread_rwlock_rdlock(&sl->lock);
	pthread_mutex_lock(&sl->qlock);
	/* only what exists (or is queued) is queued: untracks stay bounded */
	if (will_exist(sl, pid, topic, key))
		enqueue(sl, op_new(OP_UNTRACK, pid, topic, key, NULL));
	pthread_mutex_unlock(&sl->qlock);
	pthread_rwlock_unlock(&sl->lock);
	return 0;
}

int
trk_untrack_all(trk_tracker *t, rt_pid pid)
{
	if (!pid)
		return TRK_EINVAL;
	int rc = 0;
	for (int i = 0; i < t->nshards; i++) {
		shard_slot *sl = &t->slots[i];
		pthread_rwlock_rdlock(&sl->lock);
		pthread_mutex_lock(&sl->qlock);
		if (trk_state_has_pid(sl->state, pid) || count_has(&sl->qpids, pid))
			rc |= enqueue(sl, op_new(OP_UNTRACK_ALL, pid, NULL, NULL, NULL));
		pthread_mutex_unlock(&sl->qlock);
		pthread_rwlock_unlock(&sl->lock);
	}
	return rc;
}

/* trk_list's walk: the state's presences, with the caller's own queued
 * tracks added to their key's group (or as groups of their own).  On the
 * caller's stack, under the shard's locks. */
typedef struct overlay {
	trk_visit_fn fn;
	void *ud;
	trk_op *own[MAX_OVERLAY];
	bool done[MAX_OVERLAY];
	int n;
	const char *cur_key; /* key of the group being visited */
	bool stopped;
} overlay;

/* Visits the own tracks of key (the end of its group in the state). */
static bool
overlay_key(overlay *o, const char *key, bool first)
{
	for (int i = 0; i < o->n; i++)
		if (!o->done[i] && strcmp(o->own[i]->key, key) == 0) {
			o->done[i] = true;
			if (!o->fn(o->ud, o->own[i]->key, o->own[i]->meta, o->own[i]->pid, first))
				return false;
			first = false;
		}
	return true;
}

static bool
overlay_visit(void *ud, const char *key, const char *meta, rt_pid pid, bool first_of_key)
{
	overlay *o = ud;
	if (first_of_key && o->cur_key && !overlay_key(o, o->cur_key, false))
		return !(o->stopped = true);
	o->cur_key = key;
	if (!o->fn(o->ud, key, meta, pid, first_of_key))
		return !(o->stopped = true);
	return true;
}

void
trk_list(trk_tracker *t, const char *topic, const char *key, trk_visit_fn fn, void *ud)
{
	if (!topic)
		return;
	shard_slot *sl = slot_for(t, topic);
	overlay o = {.fn = fn, .ud = ud};
	rt_pid self = rt_self();
	pthread_rwlock_rdlock(&sl->lock);
	pthread_mutex_lock(&sl->qlock);
	bool mine = count_has(&sl->qcallers, self);
	for (trk_op *op = mine ? sl->ops_head : NULL; op && o.n < MAX_OVERLAY; op = op->next)
		if (op->caller == self && op->kind == OP_TRACK && strcmp(op->topic, topic) == 0 &&
		    (!key || strcmp(op->key, key) == 0) &&
		    !trk_state_get(sl->state, op->pid, op->topic, op->key))
			o.own[o.n++] = op;
	if (!o.n)
		pthread_mutex_unlock(&sl->qlock);
	trk_state_foreach(sl->state, topic, key, o.n ? overlay_visit : fn, o.n ? (void *)&o : ud);
	if (o.n) {
		if (!o.stopped && o.cur_key && !overlay_key(&o, o.cur_key, false))
			o.stopped = true;
		for (int i = 0; !o.stopped && i < o.n; i++)
			if (!o.done[i] && !overlay_key(&o, o.own[i]->key, true))
				break;
		pthread_mutex_unlock(&sl->qlock);
	}
	pthread_rwlock_unlock(&sl->lock);
}

size_t
trk_count(trk_tracker *t, const char *topic, size_t *nkeys)
{
	shard_slot *sl = slot_for(t, topic);
	pthread_rwlock_rdlock(&sl->lock);
	size_t n = trk_state_count(sl->state, topic, nkeys);
	pthread_rwlock_unlock(&sl->lock);
	return n;
}

void
trk_get_stats(trk_tracker *t, trk_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->frames_refused = atomic_load(&t->frames_refused);
	out->frames_dropped = atomic_load(&t->frames_dropped);
	for (int i = 0; i < t->nshards; i++) {
		shard_slot *sl = &t->slots[i];
		out->tracks += atomic_load(&sl->tracks);
		out->untracks += atomic_load(&sl->untracks);
		out->downs += atomic_load(&sl->downs);
		out->diffs += atomic_load(&sl->diffs);
		out->refused += atomic_load(&sl->refused);
		out->deltas_sent += atomic_load(&sl->deltas_sent);
		out->deltas_received += atomic_load(&sl->deltas_received);
		out->deltas_skipped += atomic_load(&sl->deltas_skipped);
		out->transfers_requested += atomic_load(&sl->transfers_requested);
		out->transfers_received += atomic_load(&sl->transfers_received);
		out->frames_refused += atomic_load(&sl->frames_refused);
		pthread_mutex_lock(&sl->qlock);
		out->pending += sl->nops;
		pthread_mutex_unlock(&sl->qlock);
	}
}
