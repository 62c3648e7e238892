/*
 * strmap.h: a string-keyed hash map that grows (open addressing, linear
 * probing, backward-shift deletion; no tombstones).  Keys are copied into the
 * map and freed by it; values are opaque pointers the caller owns.  A value
 * may not be NULL (rt_strmap_get returns NULL for "absent").
 *
 * For tables of names, salts and the like: a few allocations per entry, no
 * fixed capacity.  The hot topic indexes of channels/ keep their own
 * intrusive tables (records that carry their key, hashes reused to pick
 * shards), which this map would only make slower.
 *
 * Not thread-safe: the owner of a map serialises access (a lock, or one
 * thread).  Allocation failures abort (xalloc.h).
 */
#ifndef runtime_strmap_h
#define runtime_strmap_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_strmap_slot {
	char *key; /* NULL: empty slot */
	uint64_t hash;
	void *value;
} rt_strmap_slot;

typedef struct rt_strmap {
	rt_strmap_slot *slots;
	size_t cap; /* 0 or a power of two */
	size_t n;
} rt_strmap;

/* An empty map (no allocation until the first insert). */
#define RT_STRMAP_INIT                                                                             \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}

/* The value stored under key, or NULL. */
void *rt_strmap_get(const rt_strmap *m, const char *key);

/* Stores value (not NULL) under key (copied), replacing what was there.
 * Returns the value it replaced, or NULL when key is new. */
void *rt_strmap_put(rt_strmap *m, const char *key, void *value);

/* Removes key; returns the value it had, or NULL when it was absent. */
void *rt_strmap_del(rt_strmap *m, const char *key);

/* The number of keys. */
size_t rt_strmap_len(const rt_strmap *m);

/* Iterates: start with *pos = 0; returns false when done, else sets *key
 * and *value (either may be NULL) to one entry and advances *pos.  The map
 * must not change during an iteration. */
bool rt_strmap_next(const rt_strmap *m, size_t *pos, const char **key, void **value);

/* Removes every entry, calling free_value (if not NULL) on each value, and
 * releases the map's memory; the map is empty (RT_STRMAP_INIT) afterwards. */
void rt_strmap_clear(rt_strmap *m, void (*free_value)(void *));

#endif
