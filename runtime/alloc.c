/*
 * Size-class allocator for messages, process blocks and queue entries.
 *
 * Each thread keeps a free list per class (no atomics on the hot path).  A
 * block freed on another thread than the one that allocated it joins the
 * freeing thread's list.  Traffic is often one-way (a broadcast allocates
 * 19,000 messages on the publisher's thread that the subscribers' threads
 * free), so lists are capped (CACHE_BYTES per class per thread) and past the
 * cap freed blocks gather into a magazine of MAG_BLOCKS that goes to a
 * per-class depot; a thread whose list is empty takes a magazine from the
 * depot before it calls malloc (Bonwick's magazines, in their simplest form).
 * The depot is bounded too (DEPOT_BYTES per class): past it, blocks go back
 * to malloc.  Blocks above the largest class go straight to malloc.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "runtime/internal.h"

#define NCLASSES 7 /* 32, 64, ..., 2048 bytes */
#define MIN_SHIFT 5
#define CACHE_BYTES (64 * 1024)
#define MAG_BLOCKS 256
#define DEPOT_BYTES (4u << 20)

/* A free block; the first block of a magazine also links the magazines. */
typedef struct free_block {
	struct free_block *next;
	struct free_block *next_mag; /* first blocks of magazines only */
} free_block;

typedef struct class_cache {
	free_block *head;
	uint32_t n;
	free_block *mag; /* the magazine being filled past the cap */
	uint32_t mag_n;
} class_cache;

/* Per-thread caches: thread-local by design (the point is to avoid sharing). */
static __thread class_cache tl_cache[NCLASSES];

/* The depots are process-wide by design: they are where blocks freed on one
 * thread reach the thread that allocates them.  Only full magazines pass
 * through them, one lock per MAG_BLOCKS blocks. */
static struct depot {
	pthread_mutex_t lock;
	free_block *mags;
	_Atomic uint32_t nmags; /* written under lock, read as a hint without */
} depots[NCLASSES] = {
    [0 ... NCLASSES - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER},
};

static inline int
size_class(size_t size)
{
	if (size <= 32)
		return 0;
	int c = 64 - __builtin_clzll((unsigned long long)(size - 1)) - MIN_SHIFT;
	return c < NCLASSES ? c : -1;
}

static void
free_chain(free_block *b)
{
	while (b) {
		free_block *n = b->next;
		free(b);
		b = n;
	}
}

/* Hands a full magazine to the depot, or to malloc when the depot is full. */
static void
depot_put(int c, free_block *mag)
{
	struct depot *d = &depots[c];
	uint32_t max = (DEPOT_BYTES >> (c + MIN_SHIFT)) / MAG_BLOCKS;
	pthread_mutex_lock(&d->lock);
	uint32_t n = atomic_load_explicit(&d->nmags, memory_order_relaxed);
	if (n < max) {
		mag->next_mag = d->mags;
		d->mags = mag;
		atomic_store_explicit(&d->nmags, n + 1, memory_order_relaxed);
		mag = NULL;
	}
	pthread_mutex_unlock(&d->lock);
	free_chain(mag);
}

static free_block *
depot_get(int c)
{
	struct depot *d = &depots[c];
	if (!atomic_load_explicit(&d->nmags, memory_order_relaxed)) /* the lock decides */
		return NULL;
	pthread_mutex_lock(&d->lock);
	free_block *mag = d->mags;
	if (mag) {
		d->mags = mag->next_mag;
		atomic_store_explicit(&d->nmags,
		                      atomic_load_explicit(&d->nmags, memory_order_relaxed) - 1,
		                      memory_order_relaxed);
	}
	pthread_mutex_unlock(&d->lock);
	return mag;
}

void *
rt_alloc(size_t size)
{
	int c = size_class(size);
	if (c < 0) {
		void *p = malloc(size);
		if (!p)
			abort();
		return p;
	}
	class_cache *cc = &tl_cache[c];
	free_block *b = cc->head;
	if (!b && (b = depot_get(c)) != NULL)
		cc->n = MAG_BLOCKS;
	if (b) {
		cc->head = b->next;
		cc->n--;
		return b;
	}
	void *p = malloc((size_t)1 << (c + MIN_SHIFT));
	if (!p)
		abort();
	return p;
}

void
rt_free(void *p, size_t size)
{
	if (!p)
		return;
	int c = size_class(size);
	if (c < 0) {
		free(p);
		return;
	}
	class_cache *cc = &tl_cache[c];
	free_block *b = p;
	if (cc->n < (uint32_t)(CACHE_BYTES >> (c + MIN_SHIFT))) {
		b->next = cc->head;
		cc->head = b;
		cc->n++;
		return;
	}
	b->next = cc->mag;
	cc->mag = b;
	if (++cc->mag_n == MAG_BLOCKS) {
		depot_put(c, cc->mag);
		cc->mag = NULL;
		cc->mag_n = 0;
	}
}

/* Returns this thread's cached blocks to malloc (thread exit, rt_shutdown). */
void
rt_alloc_thread_fini(void)
{
	for (int c = 0; c < NCLASSES; c++) {
		free_chain(tl_cache[c].head);
		free_chain(tl_cache[c].mag);
		tl_cache[c] = (class_cache){0};
	}
}

/* Returns the depots' blocks to malloc (rt_shutdown, every thread done). */
void
rt_alloc_depot_fini(void)
{
	for (int c = 0; c < NCLASSES; c++) {
		struct depot *d = &depots[c];
		pthread_mutex_lock(&d->lock);
		while (d->mags) {
			free_block *m = d->mags;
			d->mags = m->next_mag;
			free_chain(m);
		}
		atomic_store_explicit(&d->nmags, 0, memory_order_relaxed);
		pthread_mutex_unlock(&d->lock);
	}
}
