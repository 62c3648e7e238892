/*
 * Phoenix.PubSub: the registry of subscriptions, its partitions, and
 * broadcasts through dispatchers and an adapter (channels/pubsub.h).
 *
 * Two structures hold a subscription:
 * - the index: topic -> {pid -> partition, subscribers per partition, the
 *   bit mask of partitions that have some}, in NSHARDS shards by topic hash,
 *   each under a mutex held for O(1) work (a subscribe, an unsubscribe, a
 *   publisher reading the mask).  It answers subscribers() and tells a
 *   publisher which partitions to send a broadcast to.
 * - the partition's table: topic -> array of {pid, value}, owned by the
 *   partition process alone (no lock), changed by PS_SUB / PS_UNSUB
 *   messages that the index sends while it changes, so the two agree in
 *   order.  A broadcast is a PS_BCAST message to each partition in the mask;
 *   the partition runs the dispatcher over its array.
 *
 * Why this order is safe: a subscribe pushes PS_SUB onto the partition's
 * mailbox before it returns, and a publisher that learnt of the subscription
 * (directly or not) pushes its PS_BCAST after that, so the partition sees
 * the subscription first (one MPSC queue is linearizable).  Broadcasts from
 * one process reach each partition, and so each subscriber, in order.
 *
 * A broadcast (ch_ps_bcast) is shared by the partitions it goes to, with a
 * reference each; dispatchers share work through its cache slots (the
 * fastlane's encoded frames).
 *
 * Supervision.  The partitions are the children of the PubSub's supervisor
 * (one_for_all, intensity 0), itself a significant subtree of the node's
 * root when ch_ps_opts.supervisor names one.  A partition is never restarted
 * on its own: a new one would start with an empty table while the index and
 * every subscriber believe they are subscribed, and broadcasts would be lost
 * without a word.  So a partition's crash stops the PubSub, which stops the
 * node's tree (Phoenix gets the same outcome differently: subscribers are
 * linked to their Registry partition and die with it).  Partitions trap
 * exits so that the supervisor's "shutdown" arrives behind the broadcasts
 * already queued, which release their references first.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "channels/pubsub.h"
#include "runtime/hash.h"
#include "runtime/pidmap.h"
#include "runtime/xalloc.h"

#define NSHARDS 64
#define MAX_PARTS 64
#define MAX_DEAD 64
#define MAX_DISP 4 /* dispatchers with a context in one partition */
/* A partition's shutdown: what it has queued, then killed. */
#define PART_SHUTDOWN_MS 5000
/* ch_ps_stop's wait: every partition's shutdown in turn, and some. */
#define PS_STOP_WAIT_MS (MAX_PARTS * PART_SHUTDOWN_MS + 1000)
/* Deliveries after which a partition ends its turn (rt_yield), so that the
 * connections and channels of its scheduler run between big broadcasts;
 * broadcasts queued meanwhile are dispatched together in the next turn (one
 * write per connection for all of them). */
#define TURN_WORK 65536

/* Tags of the partition processes' messages (from the framework's range). */
enum {
	PS_SUB = 0xFFFE0200u, /* ps_sub_msg */
	PS_UNSUB,             /* ps_unsub_msg */
	PS_BCAST,             /* ch_ps_bcast * */
	PS_FWD,               /* ps_fwd_msg: a message relayed in order (ch_ps_forward) */
};

/* PS_SUB, PS_UNSUB and PS_FWD payloads: written by the subscribing or
 * forwarding process into the message, read by the partition receiving it. */
typedef struct ps_sub_msg {
	rt_pid pid;
	uint64_t hash;
	_Alignas(8) unsigned char value[CH_PS_VALUE_SIZE];
	char topic[]; /* NUL-terminated */
} ps_sub_msg;

typedef struct ps_unsub_msg {
	rt_pid pid;
	uint64_t hash;
	char topic[];
} ps_unsub_msg;

typedef struct ps_fwd_msg {
	rt_pid to;
	rt_msg *inner;
} ps_fwd_msg;

/* Shared by the partitions dispatching it (and a publisher tracking it);
 * freed by the last reference. */
struct ch_ps_bcast {
	_Atomic uint32_t refs;
	_Atomic uint64_t done; /* partitions done with it (or never given it) */
	uint32_t tag;
	rt_pid from;
	uint64_t hash;
	const ch_ps_dispatcher *d;
	rt_buf *message;
	rt_buf *_Atomic cache[CH_PS_CACHE_SLOTS];
	uint32_t topic_len;
	char topic[];
};

/* ------------------------------------------------------------------ topic tables */

/* A chained hash table of topics, for the index's shards and the partitions'
 * tables: an entry's struct starts with its tnode.  Owned as its owner is
 * (under a shard's lock, or by a partition process). */
typedef struct tnode {
	struct tnode *next;
	uint64_t hash;
	const char *topic; /* in the entry */
} tnode;

typedef struct ttab {
	tnode **buckets;
	size_t nbuckets, n;
} ttab;

static void
ttab_init(ttab *t, size_t nbuckets)
{
	t->nbuckets = nbuckets;
	t->n = 0;
	t->buckets = rt_xcalloc(nbuckets, sizeof(tnode *));
}

/* Where topic hangs in t (*result NULL: absent, and where to insert it). */
static tnode **
ttab_find(const ttab *t, const char *topic, uint64_t h)
{
	tnode **pp = &t->buckets[h % t->nbuckets];
	while (*pp && ((*pp)->hash != h || strcmp((*pp)->topic, topic) != 0))
		pp = &(*pp)->next;
	return pp;
}

/* Hangs e at *at (from ttab_find) and grows t past 2 entries a bucket. */
static void
ttab_insert(ttab *t, tnode **at, tnode *e)
{
	e->next = NULL;
	*at = e;
	if (++t->n <= t->nbuckets * 2)
		return;
	size_t nb = t->nbuckets * 2;
	tnode **b = rt_xcalloc(nb, sizeof(*b));
	for (size_t i = 0; i < t->nbuckets; i++)
		for (tnode *x = t->buckets[i], *next; x; x = next) {
			next = x->next;
			x->next = b[x->hash % nb];
			b[x->hash % nb] = x;
		}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = nb;
}

/* Unhangs the entry at *at. */
static void
ttab_remove(ttab *t, tnode **at)
{
	*at = (*at)->next;
	t->n--;
}

/* Frees every entry with fn, then the table. */
static void
ttab_free(ttab *t, void (*fn)(tnode *))
{
	for (size_t i = 0; i < t->nbuckets; i++)
		for (tnode *x = t->buckets[i], *next; x; x = next) {
			next = x->next;
			fn(x);
		}
	free(t->buckets);
	t->buckets = NULL;
}

/* ------------------------------------------------------------------ index */

/* Owned by its shard (under the shard's lock). */
typedef struct ix_topic {
	tnode node;    /* node.topic points after count[] */
	uint64_t mask; /* partitions with count > 0 */
	pidmap subs;   /* pid -> partition */
	uint32_t count[];
} ix_topic;

/* A shard of the topic index: shared by the threads that subscribe,
 * unsubscribe and publish, and by the partitions; all of it under `lock`. */
typedef struct ix_shard {
	pthread_mutex_t lock;
	ttab topics; /* of ix_topic */
} ix_shard;

/* The PubSub: created and freed by the thread calling ch_ps_start /
 * ch_ps_stop; immutable in between (read from any thread) but for the
 * shards, each under its own lock. */
struct ch_pubsub {
	rt_pid sup;    /* the partitions' supervisor */
	rt_pid parent; /* its supervisor, or RT_NOPID */
	int nparts;
	rt_pid parts[MAX_PARTS];
	const ch_ps_adapter *adapter;
	void *adapter_ctx;
	const ch_ps_dispatcher *const *dispatchers;
	ix_shard shards[NSHARDS];
};

static ix_shard *
shard_of(ch_pubsub *ps, uint64_t h)
{
	return &ps->shards[(h >> 58) % NSHARDS];
}

static ix_topic **
ix_find(ix_shard *sh, const char *topic, uint64_t h)
{
	return (ix_topic **)ttab_find(&sh->topics, topic, h);
}

static void
ix_count(ix_topic *t, int part, int delta)
{
	t->count[part] = (uint32_t)((int64_t)t->count[part] + delta);
	if (t->count[part])
		t->mask |= (uint64_t)1 << part;
	else
		t->mask &= ~((uint64_t)1 << part);
}

static void
ix_topic_free(tnode *n)
{
	ix_topic *t = (ix_topic *)n;
	pidmap_free(&t->subs);
	free(t);
}

/* Frees t if nothing is left in it (lock held; pp is where t hangs). */
static void
ix_maybe_free(ix_shard *sh, ix_topic **pp, ix_topic *t)
{
	if (t->subs.n)
		return;
	ttab_remove(&sh->topics, (tnode **)pp);
	ix_topic_free(&t->node);
}

/* ------------------------------------------------------------------ partition messages */

static int
send_sub(ch_pubsub *ps, int part, const char *topic, uint64_t h, rt_pid pid, const void *value,
         size_t value_len)
{
	size_t tl = strlen(topic) + 1;
	rt_msg *m = rt_msg_alloc(PS_SUB, sizeof(ps_sub_msg) + tl);
	ps_sub_msg *s = rt_msg_data(m);
	s->pid = pid;
	s->hash = h;
	memset(s->value, 0, sizeof(s->value));
	if (value_len)
		memcpy(s->value, value, value_len);
	memcpy(s->topic, topic, tl);
	return rt_send_msg(ps->parts[part], m);
}

static void
send_unsub(ch_pubsub *ps, int part, const char *topic, uint64_t h, rt_pid pid)
{
	size_t tl = strlen(topic) + 1;
	rt_msg *m = rt_msg_alloc(PS_UNSUB, sizeof(ps_unsub_msg) + tl);
	ps_unsub_msg *u = rt_msg_data(m);
	u->pid = pid;
	u->hash = h;
	memcpy(u->topic, topic, tl);
	rt_send_msg(ps->parts[part], m);
}

/* ------------------------------------------------------------------ registry API */

static int
part_for(const ch_pubsub *ps, rt_pid near)
{
	int home = rt_home(near);
	if (home >= 0)
		return home % ps->nparts;
	return (int)(((near * 0x9E3779B97F4A7C15ull) >> 32) % (uint64_t)ps->nparts);
}

int
ch_ps_subscribe_on(ch_pubsub *ps, rt_pid near, const char *topic, rt_pid pid, const void *value,
                   size_t value_len)
{
	if (!ps || !topic || !pid || value_len > CH_PS_VALUE_SIZE || (value_len && !value))
		return -1;
	int part = part_for(ps, near ? near : pid);
	uint64_t h = rt_hash_str(topic);
	ix_shard *sh = shard_of(ps, h);
	pthread_mutex_lock(&sh->lock);
	ix_topic **pp = ix_find(sh, topic, h);
	ix_topic *t = *pp;
	if (!t) {
		size_t tl = strlen(topic) + 1;
		size_t cs = (size_t)ps->nparts * sizeof(uint32_t);
		t = rt_xcalloc(1, sizeof(*t) + cs + tl);
		t->node.hash = h;
		t->node.topic = memcpy((char *)t->count + cs, topic, tl);
		ttab_insert(&sh->topics, (tnode **)pp, &t->node);
	}
	uint32_t old;
	if (pidmap_get(&t->subs, pid, &old) && (int)old != part) {
		/* moved to another partition (a new transport) */
		send_unsub(ps, (int)old, topic, h, pid);
		ix_count(t, (int)old, -1);
		pidmap_del(&t->subs, pid);
	}
	if (pidmap_put(&t->subs, pid, (uint32_t)part))
		ix_count(t, part, +1);
	/* Sent under the lock: the partition sees the index's changes in order. */
	send_sub(ps, part, topic, h, pid, value, value_len);
	pthread_mutex_unlock(&sh->lock);
	return 0;
}

int
ch_ps_subscribe(ch_pubsub *ps, const char *topic, rt_pid pid, const void *value, size_t value_len)
{
	return ch_ps_subscribe_on(ps, pid, topic, pid, value, value_len);
}

/* Removes pid from the index; the partition it was in, or -1.  With
 * tell: the partition is sent PS_UNSUB. */
static int
ix_remove(ch_pubsub *ps, const char *topic, uint64_t h, rt_pid pid, bool tell)
{
	ix_shard *sh = shard_of(ps, h);
	pthread_mutex_lock(&sh->lock);
	ix_topic **pp = ix_find(sh, topic, h);
	ix_topic *t = *pp;
	uint32_t part;
	int rc = -1;
	if (t && pidmap_get(&t->subs, pid, &part)) {
		pidmap_del(&t->subs, pid);
		ix_count(t, (int)part, -1);
		if (tell)
			send_unsub(ps, (int)part, topic, h, pid);
		ix_maybe_free(sh, pp, t);
		rc = (int)part;
	}
	pthread_mutex_unlock(&sh->lock);
	return rc;
}

int
ch_ps_unsubscribe(ch_pubsub *ps, const char *topic, rt_pid pid)
{
	if (!ps || !topic)
		return -1;
	return ix_remove(ps, topic, rt_hash_str(topic), pid, true) < 0 ? -1 : 0;
}

size_t
ch_ps_subscribers(ch_pubsub *ps, const char *topic)
{
	uint64_t h = rt_hash_str(topic);
	ix_shard *sh = shard_of(ps, h);
	pthread_mutex_lock(&sh->lock);
	ix_topic *t = *ix_find(sh, topic, h);
	size_t n = t ? t->subs.n : 0;
	pthread_mutex_unlock(&sh->lock);
	return n;
}

/* ------------------------------------------------------------------ broadcasts */

static void
bcast_release(ch_ps_bcast *b)
{
	if (atomic_fetch_sub(&b->refs, 1) != 1)
		return;
	for (int i = 0; i < CH_PS_CACHE_SLOTS; i++)
		rt_buf_release(atomic_load(&b->cache[i]));
	rt_buf_release(b->message);
	rt_free(b, sizeof(*b) + b->topic_len + 1);
}

/* Sends message to the local partitions with subscribers of topic (takes
 * over the message's reference).  With track: *track gets a reference to
 * the broadcast (NULL when no partition got it). */
static void
dispatch_local(ch_pubsub *ps, rt_pid from, const char *topic, uint32_t tag, rt_buf *message,
               const ch_ps_dispatcher *d, ch_ps_bcast **track)
{
	uint64_t h = rt_hash_str(topic);
	ix_shard *sh = shard_of(ps, h);
	pthread_mutex_lock(&sh->lock);
	ix_topic *t = *ix_find(sh, topic, h);
	uint64_t mask = t ? t->mask : 0;
	pthread_mutex_unlock(&sh->lock);
	if (track)
		*track = NULL;
	if (!mask) {
		rt_buf_release(message);
		return;
	}
	size_t tl = strlen(topic);
	ch_ps_bcast *b = rt_alloc(sizeof(*b) + tl + 1);
	atomic_init(&b->refs, (uint32_t)__builtin_popcountll(mask) + (track ? 1 : 0));
	atomic_init(&b->done, ~mask);
	b->tag = tag;
	b->from = from;
	b->hash = h;
	b->d = d;
	b->message = message;
	for (int i = 0; i < CH_PS_CACHE_SLOTS; i++)
		atomic_init(&b->cache[i], NULL);
	b->topic_len = (uint32_t)tl;
	memcpy(b->topic, topic, tl + 1);
	if (track)
		*track = b;
	for (int p = 0; mask; p++, mask >>= 1) {
		if (!(mask & 1))
			continue;
		rt_msg *m = rt_msg_alloc(PS_BCAST, sizeof(b));
		memcpy(rt_msg_data(m), &b, sizeof(b));
		if (rt_send_msg(ps->parts[p], m) < 0) { /* the partition is gone (stopping) */
			atomic_fetch_or(&b->done, (uint64_t)1 << p);
			bcast_release(b);
		}
	}
}

int
ch_ps_publish(ch_pubsub *ps, rt_pid from, const char *topic, uint32_t tag, rt_buf *message,
              const ch_ps_dispatcher *d, bool local, ch_ps_bcast **track)
{
	if (track)
		*track = NULL;
	if (!ps || !topic || !message) {
		rt_buf_release(message);
		return -1;
	}
	if (!d)
		d = &ch_ps_default_dispatcher;
	int rc = 0;
	if (!local && ps->adapter && ps->adapter->broadcast &&
	    ps->adapter->broadcast(ps->adapter_ctx, topic, tag, message, d->name) < 0)
		rc = CH_PS_EREMOTE;
	dispatch_local(ps, from, topic, tag, message, d, track);
	return rc;
}

static int
publish(ch_pubsub *ps, rt_pid from, const char *topic, uint32_t tag, rt_buf *message,
        const ch_ps_dispatcher *d, bool remote)
{
	return ch_ps_publish(ps, from, topic, tag, message, d, !remote, NULL);
}

bool
ch_ps_bcast_done(const ch_pubsub *ps, const ch_ps_bcast *b, rt_pid near)
{
	int p = part_for(ps, near);
	return (atomic_load_explicit(&b->done, memory_order_acquire) >> p) & 1;
}

void
ch_ps_bcast_release(ch_ps_bcast *b)
{
	if (b)
		bcast_release(b);
}

int
ch_ps_forward(ch_pubsub *ps, rt_pid near, rt_pid to, rt_msg *m)
{
	m->from = rt_self();
	rt_msg *w = rt_msg_alloc(PS_FWD, sizeof(ps_fwd_msg));
	ps_fwd_msg *f = rt_msg_data(w);
	f->to = to;
	f->inner = m;
	if (rt_send_msg(ps->parts[part_for(ps, near)], w) < 0) {
		rt_msg_free(m);
		return -1;
	}
	return 0;
}

int
ch_ps_broadcast(ch_pubsub *ps, const char *topic, uint32_t tag, rt_buf *message,
                const ch_ps_dispatcher *d)
{
	return publish(ps, RT_NOPID, topic, tag, message, d, true);
}

int
ch_ps_broadcast_from(ch_pubsub *ps, rt_pid from, const char *topic, uint32_t tag, rt_buf *message,
                     const ch_ps_dispatcher *d)
{
	return publish(ps, from, topic, tag, message, d, true);
}

int
ch_ps_local_broadcast(ch_pubsub *ps, const char *topic, uint32_t tag, rt_buf *message,
                      const ch_ps_dispatcher *d)
{
	return publish(ps, RT_NOPID, topic, tag, message, d, false);
}

int
ch_ps_local_broadcast_from(ch_pubsub *ps, rt_pid from, const char *topic, uint32_t tag,
                           rt_buf *message, const ch_ps_dispatcher *d)
{
	return publish(ps, from, topic, tag, message, d, false);
}

const char *
ch_ps_node_name(const ch_pubsub *ps)
{
	if (ps && ps->adapter && ps->adapter->node_name)
		return ps->adapter->node_name(ps->adapter_ctx);
	return "nonode@nohost";
}

int
ch_ps_direct_broadcast(ch_pubsub *ps, const char *node, const char *topic, uint32_t tag,
                       rt_buf *message, const ch_ps_dispatcher *d)
{
	if (!ps || !node) {
		rt_buf_release(message);
		return -1;
	}
	if (!d)
		d = &ch_ps_default_dispatcher;
	if (strcmp(node, ch_ps_node_name(ps)) == 0)
		return publish(ps, RT_NOPID, topic, tag, message, d, false);
	int rc = -1;
	if (ps->adapter && ps->adapter->direct_broadcast && topic)
		rc = ps->adapter->direct_broadcast(ps->adapter_ctx, node, topic, tag, message,
		                                   d->name);
	rt_buf_release(message);
	return rc;
}

int
ch_ps_remote_broadcast(ch_pubsub *ps, const char *topic, uint32_t tag, rt_buf *message,
                       const char *dispatcher)
{
	const ch_ps_dispatcher *d = NULL;
	if (dispatcher && strcmp(dispatcher, ch_ps_default_dispatcher.name) == 0)
		d = &ch_ps_default_dispatcher;
	for (size_t i = 0; !d && dispatcher && ps->dispatchers && ps->dispatchers[i]; i++)
		if (strcmp(ps->dispatchers[i]->name, dispatcher) == 0)
			d = ps->dispatchers[i];
	if (!d || !topic || !message || tag >= RT_TAG_SYSTEM ||
	    (d->check && !d->check(topic, tag, message))) {
		rt_buf_release(message);
		return -1;
	}
	return publish(ps, RT_NOPID, topic, tag, message, d, false);
}

const char *
ch_ps_bcast_topic(const ch_ps_bcast *b)
{
	return b->topic;
}

uint32_t
ch_ps_bcast_tag(const ch_ps_bcast *b)
{
	return b->tag;
}

rt_buf *
ch_ps_bcast_message(const ch_ps_bcast *b)
{
	return b->message;
}

rt_pid
ch_ps_bcast_from(const ch_ps_bcast *b)
{
	return b->from;
}

rt_buf *
ch_ps_cache_get(ch_ps_bcast *b, int i)
{
	return atomic_load_explicit(&b->cache[i], memory_order_acquire);
}

rt_buf *
ch_ps_cache_put(ch_ps_bcast *b, int i, rt_buf *buf)
{
	rt_buf *expected = NULL;
	if (atomic_compare_exchange_strong(&b->cache[i], &expected, buf))
		return buf;
	rt_buf_release(buf);
	return expected;
}

/* ------------------------------------------------------------------ default dispatcher */

static size_t
default_dispatch(ch_ps_bcast *b, const ch_ps_sub *subs, size_t n, rt_pid *dead, size_t dead_cap,
                 void **ctx)
{
	(void)ctx;
	size_t ndead = 0;
	uint32_t spare = (uint32_t)n;
	rt_buf_retain_n(b->message, spare);
	for (size_t i = 0; i < n; i++) {
		if (subs[i].pid == b->from)
			continue;
		spare--;
		if (rt_send_buf(subs[i].pid, b->tag, NULL, 0, b->message) < 0 && ndead < dead_cap)
			dead[ndead++] = subs[i].pid;
	}
	rt_buf_release_n(b->message, spare);
	return ndead;
}

const ch_ps_dispatcher ch_ps_default_dispatcher = {
    .name = "default",
    .dispatch = default_dispatch,
};

/* ------------------------------------------------------------------ partition process */

/* A topic's subscriptions in one partition (owned by the partition process). */
typedef struct pt_topic {
	tnode node; /* node.topic is topic[] */
	ch_ps_sub *subs;
	uint32_t n, cap;
	pidmap index; /* pid -> position in subs */
	char topic[];
} pt_topic;

/* The partition process's state (its scheduler's thread only). */
typedef struct part {
	ch_pubsub *ps;
	int index;
	ttab topics; /* of pt_topic */
	struct part_disp {
		const ch_ps_dispatcher *d;
		void *ctx;    /* the dispatcher's, in this partition */
		bool pending; /* flush is due */
	} disp[MAX_DISP];
	int ndisp;
	size_t work;      /* deliveries in this turn */
	ch_ps_bcast *cur; /* being dispatched: released by terminate after a crash */
} part;

/* A partition's spawn argument: written by ch_ps_start, read by the
 * partition's init. */
typedef struct part_arg {
	ch_pubsub *ps;
	int index;
} part_arg;

static pt_topic **
pt_find(part *pt, const char *topic, uint64_t h)
{
	return (pt_topic **)ttab_find(&pt->topics, topic, h);
}

static void
pt_add(part *pt, const ps_sub_msg *s)
{
	pt_topic **pp = pt_find(pt, s->topic, s->hash);
	pt_topic *t = *pp;
	if (!t) {
		size_t tl = strlen(s->topic) + 1;
		t = rt_xcalloc(1, sizeof(*t) + tl);
		t->node.topic = memcpy(t->topic, s->topic, tl);
		t->node.hash = s->hash;
		ttab_insert(&pt->topics, (tnode **)pp, &t->node);
	}
	uint32_t i;
	if (!pidmap_get(&t->index, s->pid, &i)) {
		if (t->n == t->cap) {
			/* x1.5 past 64: a topic of 10,000 subscribers wastes less */
			t->cap = t->cap < 64 ? (t->cap ? t->cap * 2 : 2) : t->cap + t->cap / 2;
			t->subs = rt_xrealloc(t->subs, t->cap * sizeof(ch_ps_sub));
		}
		i = t->n++;
		pidmap_put(&t->index, s->pid, i);
	}
	t->subs[i].pid = s->pid;
	memcpy(t->subs[i].value, s->value, CH_PS_VALUE_SIZE);
}

static void
pt_topic_free(tnode *n)
{
	pt_topic *t = (pt_topic *)n;
	free(t->subs);
	pidmap_free(&t->index);
	free(t);
}

static void
pt_remove(part *pt, const char *topic, uint64_t h, rt_pid pid)
{
	pt_topic **pp = pt_find(pt, topic, h);
	pt_topic *t = *pp;
	uint32_t i;
	if (!t || !pidmap_get(&t->index, pid, &i))
		return;
	pidmap_del(&t->index, pid);
	if (i != --t->n) {
		t->subs[i] = t->subs[t->n];
		pidmap_put(&t->index, t->subs[i].pid, i);
	}
	if (t->n == 0) {
		ttab_remove(&pt->topics, (tnode **)pp);
		pt_topic_free(&t->node);
	} else if (t->cap > 16 && t->n < t->cap / 4) {
		t->cap /= 2;
		ch_ps_sub *s = realloc(t->subs, t->cap * sizeof(ch_ps_sub));
		if (s)
			t->subs = s;
	}
}

static void
disp_end(struct part_disp *pd)
{
	if (pd->d->flush)
		pd->d->flush(&pd->ctx, false);
	if (pd->d->free_ctx && pd->ctx)
		pd->d->free_ctx(pd->ctx);
	pd->ctx = NULL;
	pd->pending = false;
}

/* The partition's slot for dispatcher d (a full table ends its oldest). */
static struct part_disp *
disp_of(part *pt, const ch_ps_dispatcher *d)
{
	for (int i = 0; i < pt->ndisp; i++)
		if (pt->disp[i].d == d)
			return &pt->disp[i];
	if (pt->ndisp == MAX_DISP) {
		disp_end(&pt->disp[0]);
		pt->disp[0] = pt->disp[--pt->ndisp];
	}
	struct part_disp *pd = &pt->disp[pt->ndisp++];
	*pd = (struct part_disp){.d = d};
	return pd;
}

static void
pt_dispatch(part *pt, ch_ps_bcast *b)
{
	pt_topic *t = *pt_find(pt, b->topic, b->hash);
	if (t && t->n) {
		rt_pid dead[MAX_DEAD];
		struct part_disp *pd = disp_of(pt, b->d);
		pt->cur = b;
		size_t ndead = b->d->dispatch(b, t->subs, t->n, dead, MAX_DEAD, &pd->ctx);
		pt->cur = NULL;
		pd->pending = b->d->flush != NULL;
		pt->work += t->n;
		if (pt->work >= TURN_WORK)
			rt_yield();
		atomic_fetch_or_explicit(&b->done, (uint64_t)1 << pt->index, memory_order_release);
		for (size_t i = 0; i < ndead; i++) {
			/* Only if the index still has it here: it may have resubscribed elsewhere.
			 */
			if (ix_remove(pt->ps, b->topic, b->hash, dead[i], false) == pt->index)
				pt_remove(pt, b->topic, b->hash, dead[i]);
		}
	} else {
		atomic_fetch_or_explicit(&b->done, (uint64_t)1 << pt->index, memory_order_release);
	}
	bcast_release(b);
}

static int
part_init(void *state, const void *arg, size_t size)
{
	part *pt = state;
	const part_arg *a = arg;
	(void)size;
	pt->ps = a->ps;
	pt->index = a->index;
	ttab_init(&pt->topics, 64);
	rt_trap_exit(true); /* the supervisor's shutdown waits behind queued broadcasts */
	return RT_OK;
}

static int
part_handle(void *state, rt_msg *m)
{
	part *pt = state;
	switch (m->tag) {
	case PS_SUB:
		pt_add(pt, rt_msg_data(m));
		break;
	case PS_UNSUB: {
		const ps_unsub_msg *u = rt_msg_data(m);
		pt_remove(pt, u->topic, u->hash, u->pid);
		break;
	}
	case PS_BCAST: {
		ch_ps_bcast *b;
		memcpy(&b, rt_msg_data(m), sizeof(b));
		pt_dispatch(pt, b);
		break;
	}
	case PS_FWD: {
		const ps_fwd_msg *f = rt_msg_data(m);
		rt_forward_msg(f->to, f->inner);
		break;
	}
	case RT_MSG_EXIT: /* from the supervisor, the only link */
		return rt_stop("shutdown");
	default:
		break;
	}
	return RT_OK;
}

static void
part_flush(void *state)
{
	part *pt = state;
	bool more = rt_msgq_len(rt_self()) > 0;
	for (int i = 0; i < pt->ndisp; i++) {
		struct part_disp *pd = &pt->disp[i];
		if (pd->pending)
			pd->pending = pd->d->flush(&pd->ctx, more);
	}
	pt->work = 0;
}

static void
part_terminate(void *state, const char *reason)
{
	part *pt = state;
	(void)reason;
	if (pt->cur) { /* a dispatcher crashed */
		atomic_fetch_or(&pt->cur->done, (uint64_t)1 << pt->index);
		bcast_release(pt->cur);
	}
	for (int i = 0; i < pt->ndisp; i++)
		disp_end(&pt->disp[i]);
	ttab_free(&pt->topics, pt_topic_free);
}

static const rt_behaviour part_behaviour = {
    .name = "pubsub_partition",
    .state_size = sizeof(part),
    .init = part_init,
    .handle = part_handle,
    .terminate = part_terminate,
    .flush = part_flush,
};

/* ------------------------------------------------------------------ start / stop */

ch_pubsub *
ch_ps_start(const ch_ps_opts *opts)
{
	ch_pubsub *ps = rt_xcalloc(1, sizeof(*ps));
	if (opts) {
		ps->adapter = opts->adapter;
		ps->adapter_ctx = opts->adapter_ctx;
		ps->dispatchers = opts->dispatchers;
	}
	for (int i = 0; i < NSHARDS; i++) {
		pthread_mutex_init(&ps->shards[i].lock, NULL);
		ttab_init(&ps->shards[i].topics, 16);
	}
	int n = rt_schedulers();
	ps->nparts = n < 1 ? 1 : n > MAX_PARTS ? MAX_PARTS : n;
	ps->parent = opts ? opts->supervisor : RT_NOPID;
	rt_sup_spec spec = {.strategy = RT_ONE_FOR_ALL, .intensity = 0, .period_ms = 1};
	ps->sup = rt_sup_start_under(ps->parent, "pubsub", &spec);
	if (!ps->sup) {
		ch_ps_stop(ps);
		return NULL;
	}
	for (int i = 0; i < ps->nparts; i++) {
		part_arg a = {.ps = ps, .index = i};
		rt_child_spec cs = {.id = "pubsub_partition",
		                    .behaviour = &part_behaviour,
		                    .arg = &a,
		                    .arg_size = sizeof(a),
		                    .restart = RT_PERMANENT,
		                    .shutdown_ms = PART_SHUTDOWN_MS,
		                    .pin = i + 1};
		ps->parts[i] = rt_sup_add_child(ps->sup, &cs);
		if (!ps->parts[i]) {
			ch_ps_stop(ps);
			return NULL;
		}
	}
	return ps;
}

void
ch_ps_stop(ch_pubsub *ps)
{
	if (!ps)
		return;
	/* The partitions' "shutdown" comes after every broadcast already queued,
	 * which releases its references first. */
	if (ps->sup) {
		if (!ps->parent || rt_sup_terminate_child(ps->parent, ps->sup) < 0)
			rt_exit(ps->sup, "shutdown");
		if (rt_wait_exit(ps->sup, PS_STOP_WAIT_MS) < 0) {
			rt_log_error("pubsub stop: partitions still running after %d ms (a "
			             "dispatcher is stuck?): not freed",
			             PS_STOP_WAIT_MS);
			return;
		}
	}
	for (int i = 0; i < NSHARDS; i++) {
		ix_shard *sh = &ps->shards[i];
		ttab_free(&sh->topics, ix_topic_free);
		pthread_mutex_destroy(&sh->lock);
	}
	free(ps);
}
