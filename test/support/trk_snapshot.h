/*
 * Test support for the tracker's state tests: a replica's elements of one
 * topic as one sorted, comparable string "key=meta;key=meta;...", and fake
 * pids.  Header-only; each test that includes it is one executable.
 */
#ifndef test_trk_snapshot_h
#define test_trk_snapshot_h

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channels/tracker.h"

#define TRK_SNAPSHOT_MAX 4096 /* elements kept; a test never holds more */

/* A pid no process has: node bit set, local number i + 1. */
static inline rt_pid
fake_pid(uint32_t i)
{
	return ((uint64_t)1 << 32) | (i + 1);
}

typedef struct trk_snapshot_acc {
	char *items[TRK_SNAPSHOT_MAX];
	int n;
} trk_snapshot_acc;

static inline bool
trk_snapshot_visit(void *ud, const char *key, const char *meta, rt_pid pid, bool first)
{
	(void)pid;
	(void)first;
	trk_snapshot_acc *c = ud;
	size_t n = strlen(key) + strlen(meta) + 3;
	char *one = malloc(n);
	if (!one)
		abort();
	snprintf(one, n, "%s=%s;", key, meta);
	if (c->n < TRK_SNAPSHOT_MAX)
		c->items[c->n++] = one;
	else
		free(one);
	return true;
}

static inline int
trk_snapshot_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The elements of topic in s, sorted, as one malloc'd string (free it). */
static inline char *
trk_snapshot(const trk_state *s, const char *topic)
{
	trk_snapshot_acc *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	trk_state_foreach(s, topic, NULL, trk_snapshot_visit, c);
	qsort(c->items, (size_t)c->n, sizeof(char *), trk_snapshot_cmp);
	size_t len = 1;
	for (int i = 0; i < c->n; i++)
		len += strlen(c->items[i]);
	char *out = calloc(1, len);
	if (!out)
		abort();
	for (int i = 0; i < c->n; i++) {
		strcat(out, c->items[i]);
		free(c->items[i]);
	}
	free(c);
	return out;
}

#endif /* test_trk_snapshot_h */
