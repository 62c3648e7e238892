/*
 * Generation-checked handle tables (pids, timer references), after libdill's
 * handle table: a handle is (generation << 32 | index); a slot's generation
 * goes up each time it is freed, so a stale handle never finds a later owner.
 *
 * The slot array is reserved whole with mmap (MAP_NORESERVE) so that only
 * pages of slots actually used cost memory.  Free indices are cached per
 * thread in small batches; the shared free list behind them takes a mutex
 * once per batch.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "runtime/internal.h"

#define TL_BATCH 32
#define TL_CAP 64
#define MAX_TABLES 2

typedef struct idx_cache {
	handle_table *t;
	uint32_t n;
	uint32_t idx[TL_CAP];
} idx_cache;

/* The shared free list holds batches of TL_BATCH indices, so that taking or
 * giving a batch under the lock is O(1) and touches no slot (slots are cold:
 * walking a list threaded through them kept the lock for microseconds). */
typedef struct idx_batch {
	struct idx_batch *next;
	uint32_t n;
	uint32_t idx[TL_BATCH];
} idx_batch;

/* One spare batch node per thread, so steady state does not malloc. */
static __thread idx_batch *tl_spare;

/* Per-thread index caches, one per table (thread-local by design). */
static __thread idx_cache tl_idx[MAX_TABLES];

/* This thread's stripe of the live counters (thread-local by design). */
static __thread int tl_stripe = -1;
static _Atomic unsigned stripe_rr; /* hands out stripes round robin */

static inline _Atomic int64_t *
live_stripe(handle_table *t)
{
	if (tl_stripe < 0)
		tl_stripe = (int)(atomic_fetch_add(&stripe_rr, 1) % HT_STRIPES);
	return &t->live[tl_stripe].n;
}

uint64_t
ht_live(handle_table *t)
{
	int64_t n = 0;
	for (int i = 0; i < HT_STRIPES; i++)
		n += atomic_load_explicit(&t->live[i].n, memory_order_relaxed);
	return n > 0 ? (uint64_t)n : 0;
}

static idx_cache *
cache_for(handle_table *t)
{
	for (int i = 0; i < MAX_TABLES; i++)
		if (tl_idx[i].t == t)
			return &tl_idx[i];
	for (int i = 0; i < MAX_TABLES; i++)
		if (!tl_idx[i].t) {
			tl_idx[i].t = t;
			tl_idx[i].n = 0;
			return &tl_idx[i];
		}
	return NULL;
}

int
ht_init(handle_table *t, uint32_t cap)
{
	memset(t, 0, sizeof(*t));
	size_t bytes = (size_t)cap * sizeof(handle_slot);
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	t->slots = p;
	t->cap = cap;
	atomic_init(&t->fresh, 1); /* index 0 is never used: pid 0 means "none" */
	pthread_mutex_init(&t->lock, NULL);
	return 0;
}

void
ht_fini(handle_table *t)
{
	if (t->slots)
		munmap(t->slots, (size_t)t->cap * sizeof(handle_slot));
	while (t->free_head) {
		idx_batch *b = t->free_head;
		t->free_head = b->next;
		free(b);
	}
	t->free_tail = NULL;
	pthread_mutex_destroy(&t->lock);
	t->slots = NULL;
}

/* Refills the calling thread's cache from the shared free list, or with never
 * used indices.  Returns the number of indices now cached. */
static uint32_t
refill(handle_table *t, idx_cache *c)
{
	pthread_mutex_lock(&t->lock);
	idx_batch *b = t->free_head;
	if (b) {
		t->free_head = b->next;
		if (!t->free_head)
			t->free_tail = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	if (b) {
		memcpy(c->idx + c->n, b->idx, b->n * sizeof(uint32_t));
		c->n += b->n;
		if (tl_spare)
			free(b);
		else
			tl_spare = b;
		return c->n;
	}
	uint32_t base = atomic_fetch_add(&t->fresh, TL_BATCH);
	for (uint32_t i = 0; i < TL_BATCH && base + i < t->cap; i++)
		c->idx[c->n++] = base + i;
	if (base >= t->cap)
		atomic_store(&t->fresh, t->cap);
	return c->n;
}

/* Moves the oldest cached indices to the shared list (so slots rotate rather
 * than one thread reusing the same few), keeping the newest `keep`. */
static void
spill(handle_table *t, idx_cache *c, uint32_t keep)
{
	uint32_t k = c->n - keep, j = 0;
	while (j < k) {
		idx_batch *b = tl_spare;
		tl_spare = NULL;
		if (!b)
			b = rt_xmalloc(sizeof(*b));
		b->next = NULL;
		b->n = k - j < TL_BATCH ? k - j : TL_BATCH;
		memcpy(b->idx, c->idx + j, b->n * sizeof(uint32_t));
		j += b->n;
		pthread_mutex_lock(&t->lock);
		if (t->free_tail)
			t->free_tail->next = b;
		else
			t->free_head = b;
		t->free_tail = b;
		pthread_mutex_unlock(&t->lock);
	}
	memmove(c->idx, c->idx + k, keep * sizeof(uint32_t));
	c->n = keep;
}

uint64_t
ht_alloc(handle_table *t, void *ptr)
{
	idx_cache *c = cache_for(t);
	if (c->n == 0 && refill(t, c) == 0)
		return 0;
	uint32_t i = c->idx[--c->n];
	handle_slot *s = &t->slots[i];
	uint32_t gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
	if (gen == 0)
		atomic_store_explicit(&s->gen, gen = 1, memory_order_relaxed);
	uint64_t h = ((uint64_t)gen << 32) | i;
	atomic_store_explicit(&s->ptr, ptr, memory_order_release);
	atomic_fetch_add_explicit(live_stripe(t), 1, memory_order_relaxed);
	return h;
}

void
ht_free(handle_table *t, uint64_t h)
{
	uint32_t i = (uint32_t)h;
	handle_slot *s = &t->slots[i];
	atomic_store_explicit(&s->ptr, NULL, memory_order_release);
	uint32_t gen = atomic_load_explicit(&s->gen, memory_order_relaxed) + 1;
	atomic_store_explicit(&s->gen, gen ? gen : 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(live_stripe(t), 1, memory_order_relaxed);
	idx_cache *c = cache_for(t);
	if (c->n == TL_CAP)
		spill(t, c, TL_CAP - TL_BATCH);
	c->idx[c->n++] = i;
}

void *
ht_get(handle_table *t, uint64_t h)
{
	uint32_t i = (uint32_t)h;
	if (i == 0 || i >= t->cap || i >= atomic_load_explicit(&t->fresh, memory_order_relaxed))
		return NULL;
	return atomic_load_explicit(&t->slots[i].ptr, memory_order_acquire);
}

void *
ht_get_checked(handle_table *t, uint64_t h)
{
	uint32_t i = (uint32_t)h;
	if (i == 0 || i >= t->cap || i >= atomic_load_explicit(&t->fresh, memory_order_relaxed))
		return NULL;
	if (atomic_load_explicit(&t->slots[i].gen, memory_order_relaxed) != (uint32_t)(h >> 32))
		return NULL;
	return atomic_load_explicit(&t->slots[i].ptr, memory_order_acquire);
}

/* Gives the calling thread's cached indices back (thread exit). */
void
ht_thread_fini(void)
{
	free(tl_spare);
	tl_spare = NULL;
	for (int i = 0; i < MAX_TABLES; i++) {
		if (tl_idx[i].t && tl_idx[i].t->slots)
			spill(tl_idx[i].t, &tl_idx[i], 0);
		tl_idx[i].t = NULL;
		tl_idx[i].n = 0;
	}
}
