/*
 * pidmap: an open-addressing hash map from pid to a 32-bit value (linear
 * probing, tombstones, load ≤ 3/4).  Used for link sets and the children of
 * dynamic supervisors, which reach tens of thousands of entries: every
 * operation is O(1) on average.  Pids 0 and 1 are never valid, so they mark
 * empty and deleted slots.  Owner-only (no locking).
 */
#ifndef runtime_pidmap_h
#define runtime_pidmap_h

#include <stdbool.h>
#include <stdint.h>

#include "runtime/rt.h"

typedef struct pidmap_ent {
	rt_pid key;
	uint32_t val;
} pidmap_ent;

typedef struct pidmap {
	pidmap_ent *slots;
	uint32_t cap;  /* power of two, or 0 */
	uint32_t n;    /* live entries */
	uint32_t used; /* live + tombstones */
} pidmap;

/* Inserts or updates key; returns true when it was new. */
bool pidmap_put(pidmap *m, rt_pid key, uint32_t val);
/* Looks key up; returns true and sets *val when present. */
bool pidmap_get(const pidmap *m, rt_pid key, uint32_t *val);
/* Removes key; returns true when it was present. */
bool pidmap_del(pidmap *m, rt_pid key);
void pidmap_free(pidmap *m);

/* Iteration: for (uint32_t i = 0; pidmap_next(m, &i, &e);) ... */
bool pidmap_next(const pidmap *m, uint32_t *i, pidmap_ent *out);

#endif
