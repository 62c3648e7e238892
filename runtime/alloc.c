/*
 * Size-class allocator for messages and process blocks.
 *
 * Each thread keeps a free list per class (no atomics on the hot path); a
 * block freed on another thread than the one that allocated it simply joins
 * that thread's list.  Lists are capped (CACHE_BYTES per class per thread) so
 * a burst does not pin memory forever: past the cap blocks go back to malloc.
 * Blocks above the largest class go straight to malloc.
 */
#include <stdint.h>
#include <stdlib.h>

#include "runtime/internal.h"

#define NCLASSES 7 /* 32, 64, ..., 2048 bytes */
#define MIN_SHIFT 5
#define CACHE_BYTES (64 * 1024)

typedef struct free_block {
	struct free_block *next;
} free_block;

typedef struct class_cache {
	free_block *head;
	uint32_t n;
} class_cache;

/* Per-thread caches: thread-local by design (the point is to avoid sharing). */
static __thread class_cache tl_cache[NCLASSES];

static inline int
size_class(size_t size)
{
	if (size <= 32)
		return 0;
	int c = 64 - __builtin_clzll((unsigned long long)(size - 1)) - MIN_SHIFT;
	return c < NCLASSES ? c : -1;
}

void *
rt_alloc(size_t size)
{
	int c = size_class(size);
	if (c < 0) {
		void *p = rt_xmalloc(size);
		return p;
	}
	class_cache *cc = &tl_cache[c];
	free_block *b = cc->head;
	if (b) {
		cc->head = b->next;
		cc->n--;
		return b;
	}
	void *p = rt_xmalloc((size_t)1 << (c + MIN_SHIFT));
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
	if (cc->n >= (uint32_t)(CACHE_BYTES >> (c + MIN_SHIFT))) {
		free(p);
		return;
	}
	free_block *b = p;
	b->next = cc->head;
	cc->head = b;
	cc->n++;
}

/* Returns this thread's cached blocks to malloc (thread exit, rt_shutdown). */
void
rt_alloc_thread_fini(void)
{
	for (int c = 0; c < NCLASSES; c++) {
		free_block *b = tl_cache[c].head;
		while (b) {
			free_block *n = b->next;
			free(b);
			b = n;
		}
		tl_cache[c].head = NULL;
		tl_cache[c].n = 0;
	}
}
