/*
 * Phoenix.Tracker.State: the presences a replica knows, as a delta CRDT (an
 * observed-remove set with a causal context), the shape of phoenix_pubsub's
 * lib/phoenix/tracker/state.ex.
 *
 * Elements ({topic, pid, key, meta}) are tagged with the dot {replica, clock}
 * of the change that added them.  The causal context is, per replica, the
 * clock up to which every dot was seen plus a cloud of dots seen past it.
 * Removing an element drops it but keeps its dot in the context, so a later
 * copy of the add (an old delta, a full state) is recognised as seen and
 * never resurrects it; an add concurrent with a remove (a dot the remover
 * had not seen) survives.  Phoenix keeps the elements in ETS tables; here
 * they are indexed four ways, each O(1) per change:
 *
 *   tags   dot -> element                  (merge, delta extraction)
 *   keys   (topic, key) -> key record      (lookups, grouping by key)
 *          a topic's key records and a key's elements are linked lists, and
 *          the topic keeps its member and key counts
 *   pids   local pid -> its elements       (a process's exit: O(its elements))
 *   delta  the local elements added since the last reset (a linked list)
 *          plus the dots of every change since then
 *
 * Elements of a replica marked down are parked: kept in the tag index (so
 * they keep merging, removes included) but out of the key lists, so lists
 * and counts leave them out with no filtering per read (Phoenix filters
 * down replicas in every select); up again, they are linked back.
 *
 * Owner: one thread at a time (the shard process; readers take the shard's
 * read lock, tracker.c).
 */
#include <stdlib.h>
#include <string.h>

#include "channels/tracker.h"
#include "runtime/hash.h"
#include "runtime/pidmap.h"
#include "runtime/xalloc.h"

/* ------------------------------------------------------------------ hash index */

/* An intrusive chained hash index; owned by the structure embedding it. */

typedef struct hnode {
	struct hnode *next;
	uint64_t h;
} hnode;

typedef struct htab {
	hnode **b;
	size_t cap; /* power of two, or 0 */
	size_t n;
} htab;

static void
ht_add(htab *t, hnode *x, uint64_t h)
{
	if (t->n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		hnode **b = rt_xcalloc(cap, sizeof(*b));
		for (size_t i = 0; i < t->cap; i++)
			for (hnode *y = t->b[i], *nx; y; y = nx) {
				nx = y->next;
				y->next = b[y->h & (cap - 1)];
				b[y->h & (cap - 1)] = y;
			}
		free(t->b);
		t->b = b;
		t->cap = cap;
	}
	x->h = h;
	x->next = t->b[h & (t->cap - 1)];
	t->b[h & (t->cap - 1)] = x;
	t->n++;
}

static void
ht_del(htab *t, hnode *x)
{
	hnode **pp = &t->b[x->h & (t->cap - 1)];
	while (*pp != x)
		pp = &(*pp)->next;
	*pp = x->next;
	t->n--;
}

static hnode *
ht_head(const htab *t, uint64_t h)
{
	return t->cap ? t->b[h & (t->cap - 1)] : NULL;
}

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static uint64_t
mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/* ------------------------------------------------------------------ structures */

/* Every structure below belongs to one trk_state and has its owner (see
 * the top of this file); none is shared between states. */

typedef struct trk_entry trk_entry;

/* A topic's record (topics index): owned by its trk_state. */
typedef struct trk_topic {
	hnode hn;
	char *name;
	struct trk_keyrec *keys, *keys_tail; /* doubly linked, oldest first */
	size_t members, nkeys;
} trk_topic;

/* A (topic, key) record (keys index): owned by its trk_state. */
typedef struct trk_keyrec {
	hnode hn;
	trk_topic *topic;
	char *key;
	struct trk_keyrec *prev, *next;
	trk_entry *head, *tail; /* doubly linked through kprev/knext, oldest first */
} trk_keyrec;

/* A pid's record (pids index): owned by its trk_state. */
typedef struct trk_pidrec {
	hnode hn;
	rt_pid pid;
	uint64_t word; /* the owner's (monitor reference) */
	trk_entry *head;
} trk_pidrec;

/* One element (a presence): owned by its trk_state. */
struct trk_entry {
	hnode hn; /* by tag */
	trk_keyrec *kr;
	trk_entry *kprev, *knext;
	trk_pidrec *pr; /* local elements only */
	trk_entry *pprev, *pnext;
	trk_entry *dprev, *dnext; /* in the delta (local adds since the reset) */
	bool in_delta;
	bool parked;         /* of a down replica: out of kr's lists, on its parked list */
	char *ptopic, *pkey; /* while parked (kr is NULL) */
	uint32_t replica;
	uint64_t clock;
	rt_pid pid;
	char *meta;
};

/* A replica the state knows of: owned by its trk_state (reps[]). */
typedef struct replica {
	char name[TRK_REPLICA_MAX];
	uint64_t ctx;      /* every dot up to here was seen */
	pidmap cloud;      /* dots seen past ctx: key clock + 2 */
	bool down;         /* its elements are parked: not listed, not counted */
	bool gone;         /* permanently down: forgotten, unknown until up again */
	trk_entry *parked; /* its elements while down (linked through pprev/pnext) */
} replica;

#define MAX_REPLICAS 1024

/* A tracker state: written by one thread at a time (the shard process);
 * readers hold the shard's read lock (tracker.c).  Every record above
 * (topics, keys, pids, entries, replicas) is its own. */
struct trk_state {
	replica *reps; /* [0]: the local replica, whose ctx is its clock */
	size_t nreps, capreps;
	htab topics, keys, tags, pids;
	size_t size;
	trk_entry *dhead; /* delta elements */
	trk_dot *dcloud;  /* delta dots (replica: local index) */
	size_t ndcloud, capdcloud;
	uint64_t dstart; /* local clock at the last reset */
};

static uint64_t
key_hash(const char *topic, const char *key)
{
	return mix64(rt_hash_str(topic) ^ (rt_hash_str(key) * 0x9e3779b97f4a7c15ull));
}

static uint64_t
tag_hash(uint32_t replica, uint64_t clock)
{
	return mix64(clock * 1024 + replica);
}

static trk_topic *
find_topic(const trk_state *s, const char *name)
{
	uint64_t h = rt_hash_str(name);
	for (hnode *x = ht_head(&s->topics, h); x; x = x->next)
		if (x->h == h && strcmp(container_of(x, trk_topic, hn)->name, name) == 0)
			return container_of(x, trk_topic, hn);
	return NULL;
}

static trk_keyrec *
find_keyrec(const trk_state *s, const char *topic, const char *key)
{
	uint64_t h = key_hash(topic, key);
	for (hnode *x = ht_head(&s->keys, h); x; x = x->next) {
		trk_keyrec *k = container_of(x, trk_keyrec, hn);
		if (x->h == h && strcmp(k->key, key) == 0 && strcmp(k->topic->name, topic) == 0)
			return k;
	}
	return NULL;
}

static trk_entry *
find_tag(const trk_state *s, uint32_t replica, uint64_t clock)
{
	uint64_t h = tag_hash(replica, clock);
	for (hnode *x = ht_head(&s->tags, h); x; x = x->next) {
		trk_entry *e = container_of(x, trk_entry, hn);
		if (x->h == h && e->replica == replica && e->clock == clock)
			return e;
	}
	return NULL;
}

static trk_pidrec *
find_pid(const trk_state *s, rt_pid pid)
{
	uint64_t h = mix64(pid);
	for (hnode *x = ht_head(&s->pids, h); x; x = x->next)
		if (x->h == h && container_of(x, trk_pidrec, hn)->pid == pid)
			return container_of(x, trk_pidrec, hn);
	return NULL;
}

static trk_entry *
find_local(const trk_state *s, rt_pid pid, const char *topic, const char *key)
{
	trk_keyrec *k = find_keyrec(s, topic, key);
	for (trk_entry *e = k ? k->head : NULL; e; e = e->knext)
		if (e->replica == 0 && e->pid == pid)
			return e;
	return NULL;
}

/* Links an element into its key's list (creating the key and topic). */
static void
key_link(trk_state *s, trk_entry *e, const char *topic, const char *key)
{
	trk_keyrec *k = find_keyrec(s, topic, key);
	if (!k) {
		trk_topic *t = find_topic(s, topic);
		if (!t) {
			t = rt_xcalloc(1, sizeof(*t));
			t->name = rt_xstrdup(topic);
			ht_add(&s->topics, &t->hn, rt_hash_str(topic));
		}
		k = rt_xcalloc(1, sizeof(*k));
		k->topic = t;
		k->key = rt_xstrdup(key);
		k->prev = t->keys_tail;
		if (t->keys_tail)
			t->keys_tail->next = k;
		else
			t->keys = k;
		t->keys_tail = k;
		t->nkeys++;
		ht_add(&s->keys, &k->hn, key_hash(topic, key));
	}
	e->kr = k;
	e->kprev = k->tail; /* metas in the order they were tracked, as Phoenix lists them */
	e->knext = NULL;
	if (k->tail)
		k->tail->knext = e;
	else
		k->head = e;
	k->tail = e;
	k->topic->members++;
}

/* Unlinks an element from its key's list (freeing an empty key and topic). */
static void
key_unlink(trk_state *s, trk_entry *e)
{
	trk_keyrec *k = e->kr;
	if (e->kprev)
		e->kprev->knext = e->knext;
	else
		k->head = e->knext;
	if (e->knext)
		e->knext->kprev = e->kprev;
	else
		k->tail = e->kprev;
	e->kr = NULL;
	e->kprev = e->knext = NULL;
	trk_topic *t = k->topic;
	t->members--;
	if (!k->head) {
		if (k->prev)
			k->prev->next = k->next;
		else
			t->keys = k->next;
		if (k->next)
			k->next->prev = k->prev;
		else
			t->keys_tail = k->prev;
		t->nkeys--;
		ht_del(&s->keys, &k->hn);
		free(k->key);
		free(k);
		if (!t->keys) {
			ht_del(&s->topics, &t->hn);
			free(t->name);
			free(t);
		}
	}
}

static const char *
entry_topic(const trk_entry *e)
{
	return e->parked ? e->ptopic : e->kr->topic->name;
}

static const char *
entry_key(const trk_entry *e)
{
	return e->parked ? e->pkey : e->kr->key;
}

/* Moves a remote element out of the lists onto its replica's parked list. */
static void
park(trk_state *s, trk_entry *e)
{
	replica *r = &s->reps[e->replica];
	e->ptopic = rt_xstrdup(e->kr->topic->name);
	e->pkey = rt_xstrdup(e->kr->key);
	key_unlink(s, e);
	e->parked = true;
	e->pprev = NULL;
	e->pnext = r->parked;
	if (r->parked)
		r->parked->pprev = e;
	r->parked = e;
}

static void
unpark_only(trk_state *s, trk_entry *e)
{
	replica *r = &s->reps[e->replica];
	if (e->pprev)
		e->pprev->pnext = e->pnext;
	else
		r->parked = e->pnext;
	if (e->pnext)
		e->pnext->pprev = e->pprev;
	e->pprev = e->pnext = NULL;
	e->parked = false;
}

/* Links a new element into every index (parked if its replica is down). */
static trk_entry *
entry_new(trk_state *s, uint32_t replica, uint64_t clock, rt_pid pid, const char *topic,
          const char *key, const char *meta)
{
	trk_entry *e = rt_xcalloc(1, sizeof(*e));
	e->replica = replica;
	e->clock = clock;
	e->pid = pid;
	e->meta = rt_xstrdup(meta);
	ht_add(&s->tags, &e->hn, tag_hash(replica, clock));
	key_link(s, e, topic, key);
	if (replica == 0) {
		trk_pidrec *p = find_pid(s, pid);
		if (!p) {
			p = rt_xcalloc(1, sizeof(*p));
			p->pid = pid;
			ht_add(&s->pids, &p->hn, mix64(pid));
		}
		e->pr = p;
		e->pnext = p->head;
		if (p->head)
			p->head->pprev = e;
		p->head = e;
	} else if (s->reps[replica].down) {
		park(s, e);
	}
	s->size++;
	return e;
}

static void
delta_unlink(trk_state *s, trk_entry *e)
{
	if (!e->in_delta)
		return;
	if (e->dprev)
		e->dprev->dnext = e->dnext;
	else
		s->dhead = e->dnext;
	if (e->dnext)
		e->dnext->dprev = e->dprev;
	e->dprev = e->dnext = NULL;
	e->in_delta = false;
}

static void
delta_link(trk_state *s, trk_entry *e)
{
	e->dprev = NULL;
	e->dnext = s->dhead;
	if (s->dhead)
		s->dhead->dprev = e;
	s->dhead = e;
	e->in_delta = true;
}

static void
delta_dot(trk_state *s, uint32_t replica, uint64_t clock)
{
	if (s->ndcloud == s->capdcloud) {
		s->capdcloud = s->capdcloud ? s->capdcloud * 2 : 64;
		s->dcloud = rt_xrealloc(s->dcloud, s->capdcloud * sizeof(trk_dot));
	}
	s->dcloud[s->ndcloud++] = (trk_dot){replica, clock};
}

/* Unlinks an element from every index and frees it. */
static void
entry_free(trk_state *s, trk_entry *e)
{
	delta_unlink(s, e);
	ht_del(&s->tags, &e->hn);
	if (e->parked) {
		unpark_only(s, e);
		free(e->ptopic);
		free(e->pkey);
	} else {
		key_unlink(s, e);
	}
	trk_pidrec *p = e->pr;
	if (p) {
		if (e->pprev)
			e->pprev->pnext = e->pnext;
		else
			p->head = e->pnext;
		if (e->pnext)
			e->pnext->pprev = e->pprev;
		if (!p->head) {
			ht_del(&s->pids, &p->hn);
			free(p);
		}
	}
	free(e->meta);
	free(e);
	s->size--;
}

static uint64_t
bump(trk_state *s)
{
	uint64_t c = ++s->reps[0].ctx;
	delta_dot(s, 0, c);
	return c;
}

/* A replica's number, gone (permanently down) ones included. */
static int
replica_slot(const trk_state *s, const char *name)
{
	for (size_t i = 0; i < s->nreps; i++)
		if (strcmp(s->reps[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* A known replica's number, or -1. */
static int
replica_index(const trk_state *s, const char *name)
{
	int r = replica_slot(s, name);
	return r >= 0 && !s->reps[r].gone ? r : -1;
}

static bool
seen(const trk_state *s, uint32_t r, uint64_t clock)
{
	uint32_t v;
	return clock <= s->reps[r].ctx || pidmap_get(&s->reps[r].cloud, clock + 2, &v);
}

static void
cloud_add(trk_state *s, uint32_t r, uint64_t clock)
{
	if (r != 0 && clock > s->reps[r].ctx)
		pidmap_put(&s->reps[r].cloud, clock + 2, 0);
}

/* Folds contiguous cloud dots into the clock of each replica. */
static void
compact(trk_state *s, bool purge)
{
	for (size_t r = 1; r < s->nreps; r++) {
		replica *rep = &s->reps[r];
		while (pidmap_del(&rep->cloud, rep->ctx + 1 + 2))
			rep->ctx++;
		if (purge && rep->cloud.n) {
			pidmap_ent e;
			for (uint32_t i = 0; pidmap_next(&rep->cloud, &i, &e);)
				if (e.key - 2 <= rep->ctx)
					pidmap_del(&rep->cloud, e.key);
		}
	}
}

/* ------------------------------------------------------------------ API */

trk_state *
trk_state_new(const char *name)
{
	trk_state *s = rt_xcalloc(1, sizeof(*s));
	s->capreps = 4;
	s->reps = rt_xcalloc(s->capreps, sizeof(replica));
	s->nreps = 1;
	size_t n = strlen(name);
	if (n >= TRK_REPLICA_MAX)
		n = TRK_REPLICA_MAX - 1;
	memcpy(s->reps[0].name, name, n);
	return s;
}

void
trk_state_free(trk_state *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->tags.cap; i++)
		for (hnode *x = s->tags.b[i], *nx; x; x = nx) {
			nx = x->next;
			trk_entry *e = container_of(x, trk_entry, hn);
			free(e->meta);
			free(e->ptopic);
			free(e->pkey);
			free(e);
		}
	for (size_t i = 0; i < s->keys.cap; i++)
		for (hnode *x = s->keys.b[i], *nx; x; x = nx) {
			nx = x->next;
			trk_keyrec *k = container_of(x, trk_keyrec, hn);
			free(k->key);
			free(k);
		}
	for (size_t i = 0; i < s->topics.cap; i++)
		for (hnode *x = s->topics.b[i], *nx; x; x = nx) {
			nx = x->next;
			trk_topic *t = container_of(x, trk_topic, hn);
			free(t->name);
			free(t);
		}
	for (size_t i = 0; i < s->pids.cap; i++)
		for (hnode *x = s->pids.b[i], *nx; x; x = nx) {
			nx = x->next;
			free(container_of(x, trk_pidrec, hn));
		}
	free(s->tags.b);
	free(s->keys.b);
	free(s->topics.b);
	free(s->pids.b);
	for (size_t r = 0; r < s->nreps; r++)
		pidmap_free(&s->reps[r].cloud);
	free(s->reps);
	free(s->dcloud);
	free(s);
}

const char *
trk_state_replica(const trk_state *s)
{
	return s->reps[0].name;
}

int
trk_state_join(trk_state *s, rt_pid pid, const char *topic, const char *key, const char *meta,
               trk_report_fn report, void *ud)
{
	if (find_local(s, pid, topic, key))
		return -1;
	trk_entry *e = entry_new(s, 0, bump(s), pid, topic, key, meta);
	delta_link(s, e);
	if (report)
		report(ud, topic, key, meta, true);
	return 0;
}

/* Removes a local element: its dot goes into the delta (a remove-like
 * delta), then the clock moves on. */
static void
remove_local(trk_state *s, trk_entry *e, trk_report_fn report, void *ud)
{
	if (report)
		report(ud, entry_topic(e), entry_key(e), e->meta, false);
	delta_dot(s, 0, e->clock);
	entry_free(s, e);
	bump(s);
}

int
trk_state_leave(trk_state *s, rt_pid pid, const char *topic, const char *key, trk_report_fn report,
                void *ud)
{
	trk_entry *e = find_local(s, pid, topic, key);
	if (!e)
		return -1;
	remove_local(s, e, report, ud);
	return 0;
}

size_t
trk_state_leave_pid(trk_state *s, rt_pid pid, trk_report_fn report, void *ud)
{
	size_t n = 0;
	trk_pidrec *p;
	while ((p = find_pid(s, pid)) != NULL) {
		remove_local(s, p->head, report, ud); /* frees p with the last element */
		n++;
	}
	return n;
}

int
trk_state_update(trk_state *s, rt_pid pid, const char *topic, const char *key, const char *meta)
{
	trk_entry *e = find_local(s, pid, topic, key);
	if (!e)
		return -1;
	char *m = rt_xstrdup(meta);
	/* remove-like delta for the old tag, then an add-like one under a new tag */
	delta_dot(s, 0, e->clock);
	delta_unlink(s, e);
	bump(s);
	ht_del(&s->tags, &e->hn);
	e->clock = bump(s);
	ht_add(&s->tags, &e->hn, tag_hash(0, e->clock));
	free(e->meta);
	e->meta = m;
	delta_link(s, e);
	return 0;
}

const char *
trk_state_get(const trk_state *s, rt_pid pid, const char *topic, const char *key)
{
	trk_entry *e = find_local(s, pid, topic, key);
	return e ? e->meta : NULL;
}

size_t
trk_state_count(const trk_state *s, const char *topic, size_t *nkeys)
{
	trk_topic *t = find_topic(s, topic);
	if (nkeys)
		*nkeys = t ? t->nkeys : 0;
	return t ? t->members : 0;
}

void
trk_state_foreach(const trk_state *s, const char *topic, const char *key, trk_visit_fn fn, void *ud)
{
	if (key) {
		trk_keyrec *k = find_keyrec(s, topic, key);
		for (trk_entry *e = k ? k->head : NULL; e; e = e->knext)
			if (!fn(ud, k->key, e->meta, e->pid, e == k->head))
				return;
		return;
	}
	trk_topic *t = find_topic(s, topic);
	for (trk_keyrec *k = t ? t->keys : NULL; k; k = k->next)
		for (trk_entry *e = k->head; e; e = e->knext)
			if (!fn(ud, k->key, e->meta, e->pid, e == k->head))
				return;
}

bool
trk_state_has_pid(const trk_state *s, rt_pid pid)
{
	return find_pid(s, pid) != NULL;
}

uint64_t *
trk_state_pid_word(trk_state *s, rt_pid pid)
{
	trk_pidrec *p = find_pid(s, pid);
	return p ? &p->word : NULL;
}

void
trk_state_foreach_pid(trk_state *s, void (*fn)(void *ud, rt_pid pid, uint64_t *word), void *ud)
{
	for (size_t i = 0; i < s->pids.cap; i++)
		for (hnode *x = s->pids.b[i]; x; x = x->next) {
			trk_pidrec *p = container_of(x, trk_pidrec, hn);
			fn(ud, p->pid, &p->word);
		}
}

size_t
trk_state_size(const trk_state *s)
{
	return s->size;
}

uint64_t
trk_state_clock(const trk_state *s, const char *name)
{
	int r = replica_index(s, name);
	return r < 0 ? 0 : s->reps[r].ctx;
}

int
trk_state_replica_up(trk_state *s, const char *name, trk_report_fn report, void *ud)
{
	int r = replica_slot(s, name);
	if (r == 0)
		return 0;
	if (r > 0) {
		replica *rep = &s->reps[r];
		rep->gone = false;
		rep->down = false;
		while (rep->parked) { /* Phoenix's replica_up: its users join again */
			trk_entry *e = rep->parked;
			char *topic = e->ptopic, *key = e->pkey;
			unpark_only(s, e);
			e->ptopic = e->pkey = NULL;
			key_link(s, e, topic, key);
			if (report)
				report(ud, topic, key, e->meta, true);
			free(topic);
			free(key);
		}
		return 0;
	}
	/* a forgotten replica's slot is taken again (a node restarting under a
	 * new incarnation each time must not fill the table): nothing refers to
	 * its number any more, its elements, context and delta dots are gone */
	replica *rep = NULL;
	for (size_t i = 1; i < s->nreps && !rep; i++)
		if (s->reps[i].gone && !s->reps[i].parked)
			rep = &s->reps[i];
	if (rep) {
		pidmap_free(&rep->cloud);
	} else {
		if (s->nreps == MAX_REPLICAS)
			return -1;
		if (s->nreps == s->capreps) {
			s->capreps *= 2;
			s->reps = rt_xrealloc(s->reps, s->capreps * sizeof(replica));
		}
		rep = &s->reps[s->nreps++]; /* past the old end: uninitialised */
	}
	memset(rep, 0, sizeof(*rep));
	size_t n = strlen(name);
	if (n >= TRK_REPLICA_MAX)
		n = TRK_REPLICA_MAX - 1;
	memcpy(rep->name, name, n);
	return 0;
}

int
trk_state_replica_down(trk_state *s, const char *name, trk_report_fn report, void *ud)
{
	int r = replica_index(s, name);
	if (r <= 0)
		return -1;
	if (s->reps[r].down)
		return 0;
	s->reps[r].down = true;
	/* its elements: collected first, parking changes the lists */
	size_t n = 0, cap = 16;
	trk_entry **v = rt_xcalloc(cap, sizeof(*v));
	for (size_t i = 0; i < s->tags.cap; i++)
		for (hnode *x = s->tags.b[i]; x; x = x->next) {
			trk_entry *e = container_of(x, trk_entry, hn);
			if ((int)e->replica != r || e->parked)
				continue;
			if (n == cap) {
				cap *= 2;
				v = rt_xrealloc(v, cap * sizeof(*v));
			}
			v[n++] = e;
		}
	for (size_t i = 0; i < n; i++) {
		if (report)
			report(ud, v[i]->kr->topic->name, v[i]->kr->key, v[i]->meta, false);
		park(s, v[i]);
	}
	free(v);
	return 0;
}

int
trk_state_remove_down_replica(trk_state *s, const char *name)
{
	int r = replica_index(s, name);
	if (r <= 0 || !s->reps[r].down)
		return -1;
	replica *rep = &s->reps[r];
	while (rep->parked)
		entry_free(s, rep->parked);
	/* forgotten: its context goes, its data is ignored until it is up again */
	rep->ctx = 0;
	pidmap_free(&rep->cloud);
	rep->gone = true;
	size_t j = 0;
	for (size_t i = 0; i < s->ndcloud; i++) /* and out of the delta */
		if ((int)s->dcloud[i].replica != r)
			s->dcloud[j++] = s->dcloud[i];
	s->ndcloud = j;
	return 0;
}

bool
trk_state_has_delta(const trk_state *s)
{
	return s->ndcloud > 0;
}

static trk_delta *
delta_alloc(const trk_state *s, size_t ncloud, size_t nvalues)
{
	trk_delta *d = rt_xcalloc(1, sizeof(*d));
	d->nreplicas = s->nreps;
	d->replicas = rt_xcalloc(s->nreps, TRK_REPLICA_MAX);
	d->context = rt_xcalloc(s->nreps, sizeof(uint64_t));
	d->start = rt_xcalloc(s->nreps, sizeof(uint64_t));
	d->end = rt_xcalloc(s->nreps, sizeof(uint64_t));
	for (size_t r = 0; r < s->nreps; r++)
		memcpy(d->replicas[r], s->reps[r].name, TRK_REPLICA_MAX);
	d->cloud = rt_xcalloc(ncloud, sizeof(trk_dot));
	d->values = rt_xcalloc(nvalues, sizeof(trk_value));
	return d;
}

static void
value_set(trk_value *v, const trk_entry *e)
{
	v->tag = (trk_dot){e->replica, e->clock};
	v->pid = e->pid;
	v->topic = rt_xstrdup(entry_topic(e));
	v->key = rt_xstrdup(entry_key(e));
	v->meta = rt_xstrdup(e->meta);
}

trk_delta *
trk_state_extract_delta(const trk_state *s)
{
	size_t nv = 0;
	for (trk_entry *e = s->dhead; e; e = e->dnext)
		nv++;
	trk_delta *d = delta_alloc(s, s->ndcloud, nv);
	d->start[0] = s->dstart;
	d->end[0] = s->reps[0].ctx;
	memcpy(d->cloud, s->dcloud, s->ndcloud * sizeof(trk_dot));
	d->ncloud = s->ndcloud;
	for (trk_entry *e = s->dhead; e; e = e->dnext)
		value_set(&d->values[d->nvalues++], e);
	return d;
}

void
trk_state_reset_delta(trk_state *s)
{
	while (s->dhead)
		delta_unlink(s, s->dhead);
	s->ndcloud = 0;
	s->dstart = s->reps[0].ctx;
	compact(s, false);
}

trk_delta *
trk_state_extract(const trk_state *s, const char *remote)
{
	int skip = replica_index(s, remote);
	size_t ncloud = 0;
	for (size_t r = 0; r < s->nreps; r++)
		ncloud += s->reps[r].cloud.n;
	trk_delta *d = delta_alloc(s, ncloud, s->size);
	d->full = true;
	for (size_t r = 0; r < s->nreps; r++) {
		d->context[r] = s->reps[r].ctx;
		pidmap_ent pe;
		for (uint32_t i = 0; pidmap_next(&s->reps[r].cloud, &i, &pe);)
			d->cloud[d->ncloud++] = (trk_dot){(uint32_t)r, pe.key - 2};
	}
	for (size_t i = 0; i < s->tags.cap; i++)
		for (hnode *x = s->tags.b[i]; x; x = x->next) {
			trk_entry *e = container_of(x, trk_entry, hn);
			if ((int)e->replica != skip)
				value_set(&d->values[d->nvalues++], e);
		}
	return d;
}

void
trk_delta_free(trk_delta *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->nvalues; i++) {
		free(d->values[i].topic);
		free(d->values[i].key);
		free(d->values[i].meta);
	}
	free(d->values);
	free(d->cloud);
	free(d->replicas);
	free(d->context);
	free(d->start);
	free(d->end);
	free(d);
}

static uint64_t
dot_key(uint32_t replica, uint64_t clock)
{
	return ((uint64_t)replica << 48 | clock) + 2;
}

/* Removes a remote element that the other side saw removed; its dot goes
 * into the local delta, as Phoenix's observe_removes does. */
static void
remove_remote(trk_state *s, trk_entry *e, trk_report_fn report, void *ud)
{
	if (report && !e->parked) /* a parked element's leave was reported when parked */
		report(ud, entry_topic(e), entry_key(e), e->meta, false);
	delta_dot(s, e->replica, e->clock);
	entry_free(s, e);
}

void
trk_state_merge(trk_state *s, const trk_delta *d, trk_report_fn report, void *ud)
{
	if (!d || d->nreplicas == 0)
		return;
	int *map = rt_xcalloc(d->nreplicas, sizeof(int));
	int *inv = rt_xcalloc(s->nreps, sizeof(int));
	for (size_t r = 0; r < s->nreps; r++)
		inv[r] = -1;
	for (size_t i = 0; i < d->nreplicas; i++) {
		char name[TRK_REPLICA_MAX];
		memcpy(name, d->replicas[i], TRK_REPLICA_MAX);
		name[TRK_REPLICA_MAX - 1] = 0;
		map[i] = replica_index(s, name);
		if (map[i] >= 0)
			inv[map[i]] = (int)i;
	}
	/* the tags the other side has, in local replica numbers */
	pidmap has = {0};
	for (size_t i = 0; i < d->nvalues; i++) {
		const trk_value *v = &d->values[i];
		if (v->tag.replica < d->nreplicas && map[v->tag.replica] >= 0)
			pidmap_put(&has, dot_key((uint32_t)map[v->tag.replica], v->tag.clock), 0);
	}
	uint32_t unused;
	/* leaves: elements of other replicas the sender saw and no longer has */
	if (!d->full) {
		for (size_t i = 0; i < d->ncloud; i++) {
			const trk_dot *dot = &d->cloud[i];
			if (dot->replica >= d->nreplicas || map[dot->replica] <= 0)
				continue;
			uint32_t r = (uint32_t)map[dot->replica];
			trk_entry *e = find_tag(s, r, dot->clock);
			if (e && !pidmap_get(&has, dot_key(r, dot->clock), &unused))
				remove_remote(s, e, report, ud);
		}
	} else {
		pidmap rcloud = {0};
		for (size_t i = 0; i < d->ncloud; i++) {
			const trk_dot *dot = &d->cloud[i];
			if (dot->replica < d->nreplicas && map[dot->replica] > 0)
				pidmap_put(&rcloud,
				           dot_key((uint32_t)map[dot->replica], dot->clock), 0);
		}
		size_t ngone = 0, capgone = 16;
		trk_entry **gone = rt_xcalloc(capgone, sizeof(*gone));
		for (size_t i = 0; i < s->tags.cap; i++)
			for (hnode *x = s->tags.b[i]; x; x = x->next) {
				trk_entry *e = container_of(x, trk_entry, hn);
				int ri = e->replica ? inv[e->replica] : -1;
				if (ri < 0)
					continue;
				uint64_t k = dot_key(e->replica, e->clock);
				bool saw =
				    e->clock <= d->context[ri] || pidmap_get(&rcloud, k, &unused);
				if (saw && !pidmap_get(&has, k, &unused)) {
					if (ngone == capgone) {
						capgone *= 2;
						gone = rt_xrealloc(gone, capgone * sizeof(*gone));
					}
					gone[ngone++] = e;
				}
			}
		for (size_t i = 0; i < ngone; i++)
			remove_remote(s, gone[i], report, ud);
		free(gone);
		pidmap_free(&rcloud);
	}
	/* joins: elements of known replicas whose dot was never seen here */
	for (size_t i = 0; i < d->nvalues; i++) {
		const trk_value *v = &d->values[i];
		if (v->tag.replica >= d->nreplicas || map[v->tag.replica] <= 0)
			continue;
		uint32_t r = (uint32_t)map[v->tag.replica];
		if (seen(s, r, v->tag.clock) || find_tag(s, r, v->tag.clock))
			continue;
		entry_new(s, r, v->tag.clock, v->pid, v->topic, v->key, v->meta);
		cloud_add(s, r, v->tag.clock);
		if (report && !s->reps[r].down) /* a down replica's: reported when it is up */
			report(ud, v->topic, v->key, v->meta, true);
	}
	/* the causal context: the union of both */
	bool jumped = false;
	if (d->full)
		for (size_t i = 0; i < d->nreplicas; i++)
			if (map[i] > 0 && d->context[i] > s->reps[map[i]].ctx) {
				s->reps[map[i]].ctx = d->context[i];
				jumped = true;
			}
	for (size_t i = 0; i < d->ncloud; i++) {
		const trk_dot *dot = &d->cloud[i];
		if (dot->replica < d->nreplicas && map[dot->replica] > 0)
			cloud_add(s, (uint32_t)map[dot->replica], dot->clock);
	}
	compact(s, jumped);
	pidmap_free(&has);
	free(map);
	free(inv);
}
