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
	TRK_MSG_HEARTBEAT,        /* timer: end the delta (replication hook) */
};

#define HEARTBEAT_MS 1500 /* Phoenix's broadcast_period */
#define MAX_OVERLAY 8 /* a caller's own queued tracks shown by trk_list */

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
	char *topic, *key, *meta;
} pend_item;

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
	_Atomic uint64_t tracks, untracks, downs, diffs, refused;
} shard_slot;

/* Owner: whoever called trk_start; immutable after it but for the slots. */
struct trk_tracker {
	int nshards;
	uint32_t period_ms, max_pending;
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

/* Sends the pending diffs: one call of the diff callback per topic, joins
 * and leaves in the order they happened. */
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
		for (; b < n && strcmp(v[b]->topic, v[a]->topic) == 0; b++) {
			trk_item item = {v[b]->key, v[b]->meta};
			if (v[b]->join)
				joins[nj++] = item;
			else
				leaves[nl++] = item;
		}
		sl->t->diff(sl->t->ud, v[a]->topic, joins, nj, leaves, nl);
		atomic_fetch_add_explicit(&sl->diffs, 1, memory_order_relaxed);
		a = b;
	}
	for (i = 0; i < n; i++) {
		free(v[i]->topic);
		free(v[i]->key);
		free(v[i]->meta);
		free(v[i]);
	}
	free(v);
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
	rt_send_after(HEARTBEAT_MS, rt_self(), TRK_MSG_HEARTBEAT, NULL, 0);
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
		/* Replication hook: with peers, the delta goes out here (Phoenix's
		 * broadcast_delta_heartbeat); alone, it is only reset. */
		write_lock(sl);
		if (trk_state_has_delta(sl->state))
			trk_state_reset_delta(sl->state);
		write_unlock(sl);
		rt_send_after(HEARTBEAT_MS, rt_self(), TRK_MSG_HEARTBEAT, NULL, 0);
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
		sl->state = trk_state_new(opts->replica ? opts->replica : "nonode@nohost");
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
	if (!pid || bad_field(topic, TRK_TOPIC_MAX) || bad_key(key) || bad_field(meta, TRK_META_MAX))
		return TRK_EINVAL;
	return request_bounded(t, op_new(OP_TRACK, pid, topic, key, meta), false);
}

int
trk_update(trk_tracker *t, rt_pid pid, const char *topic, const char *key, const char *meta,
           char *(*make_meta)(const char *old_meta, const char *meta))
{
	if (!pid || bad_field(topic, TRK_TOPIC_MAX) || bad_key(key) || bad_field(meta, TRK_META_MAX))
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
	for (int i = 0; i < t->nshards; i++) {
		shard_slot *sl = &t->slots[i];
		out->tracks += atomic_load(&sl->tracks);
		out->untracks += atomic_load(&sl->untracks);
		out->downs += atomic_load(&sl->downs);
		out->diffs += atomic_load(&sl->diffs);
		out->refused += atomic_load(&sl->refused);
		pthread_mutex_lock(&sl->qlock);
		out->pending += sl->nops;
		pthread_mutex_unlock(&sl->qlock);
	}
}
