/* Open-addressing pid map; see pidmap.h. */
#include <stdlib.h>

#include "runtime/pidmap.h"
#include "runtime/xalloc.h"

#define EMPTY ((rt_pid)0)
#define TOMB ((rt_pid)1)

static inline uint32_t
slot_of(rt_pid k, uint32_t cap)
{
	uint64_t h = k * 0x9E3779B97F4A7C15ull;
	return (uint32_t)(h >> 32) & (cap - 1);
}

static void
rehash(pidmap *m, uint32_t cap)
{
	pidmap_ent *old = m->slots;
	uint32_t oldcap = m->cap;
	m->slots = rt_xcalloc(cap, sizeof(pidmap_ent));
	m->cap = cap;
	m->n = m->used = 0;
	for (uint32_t i = 0; i < oldcap; i++)
		if (old[i].key > TOMB)
			pidmap_put(m, old[i].key, old[i].val);
	free(old);
}

bool
pidmap_put(pidmap *m, rt_pid key, uint32_t val)
{
	if (key <= TOMB)
		return false;
	/* Load at most 3/4 (one entry fits in two slots: a process with one
	 * link costs 32 bytes). */
	if ((m->used + 1) * 4 > m->cap * 3)
		rehash(m, m->cap ? (m->n * 2 >= m->cap ? m->cap * 2 : m->cap) : 2);
	uint32_t i = slot_of(key, m->cap), tomb = UINT32_MAX;
	for (;; i = (i + 1) & (m->cap - 1)) {
		pidmap_ent *e = &m->slots[i];
		if (e->key == key) {
			e->val = val;
			return false;
		}
		if (e->key == TOMB && tomb == UINT32_MAX)
			tomb = i;
		if (e->key == EMPTY)
			break;
	}
	if (tomb != UINT32_MAX)
		i = tomb;
	else
		m->used++;
	m->slots[i].key = key;
	m->slots[i].val = val;
	m->n++;
	return true;
}

static pidmap_ent *
find(const pidmap *m, rt_pid key)
{
	if (!m->cap || key <= TOMB)
		return NULL;
	for (uint32_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		pidmap_ent *e = &m->slots[i];
		if (e->key == key)
			return e;
		if (e->key == EMPTY)
			return NULL;
	}
}

bool
pidmap_get(const pidmap *m, rt_pid key, uint32_t *val)
{
	pidmap_ent *e = find(m, key);
	if (e && val)
		*val = e->val;
	return e != NULL;
}

bool
pidmap_del(pidmap *m, rt_pid key)
{
	pidmap_ent *e = find(m, key);
	if (!e)
		return false;
	e->key = TOMB;
	m->n--;
	if (m->n == 0) {
		free(m->slots);
		m->slots = NULL;
		m->cap = m->used = 0;
	}
	return true;
}

void
pidmap_free(pidmap *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->n = m->used = 0;
}

bool
pidmap_next(const pidmap *m, uint32_t *i, pidmap_ent *out)
{
	for (; *i < m->cap; (*i)++)
		if (m->slots[*i].key > TOMB) {
			*out = m->slots[(*i)++];
			return true;
		}
	return false;
}
