/* A string-keyed hash map that grows (see strmap.h). */
#include "runtime/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/hash.h"
#include "runtime/xalloc.h"

#define MIN_CAP 8

/* The slot holding key, or the empty slot where it would go (cap > 0). */
static size_t
probe(const rt_strmap *m, const char *key, uint64_t h)
{
	size_t mask = m->cap - 1;
	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		const rt_strmap_slot *s = &m->slots[i];
		if (!s->key || (s->hash == h && strcmp(s->key, key) == 0))
			return i;
	}
}

static void
grow(rt_strmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : MIN_CAP;
	rt_strmap_slot *old = m->slots;
	size_t oldcap = m->cap;
	m->slots = rt_xcalloc(cap, sizeof(*m->slots));
	m->cap = cap;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].key) {
			size_t j = (size_t)old[i].hash & (cap - 1);
			while (m->slots[j].key)
				j = (j + 1) & (cap - 1);
			m->slots[j] = old[i];
		}
	free(old);
}

void *
rt_strmap_get(const rt_strmap *m, const char *key)
{
	if (!m->n)
		return NULL;
	const rt_strmap_slot *s = &m->slots[probe(m, key, rt_hash_str(key))];
	return s->key ? s->value : NULL;
}

void *
rt_strmap_put(rt_strmap *m, const char *key, void *value)
{
	uint64_t h = rt_hash_str(key);
	if ((m->n + 1) * 4 > m->cap * 3) /* keep the load at most 3/4 */
		grow(m);
	rt_strmap_slot *s = &m->slots[probe(m, key, h)];
	if (s->key) {
		void *old = s->value;
		s->value = value;
		return old;
	}
	s->key = rt_xstrdup(key);
	s->hash = h;
	s->value = value;
	m->n++;
	return NULL;
}

void *
rt_strmap_del(rt_strmap *m, const char *key)
{
	if (!m->n)
		return NULL;
	size_t mask = m->cap - 1;
	size_t i = probe(m, key, rt_hash_str(key));
	if (!m->slots[i].key)
		return NULL;
	void *value = m->slots[i].value;
	free(m->slots[i].key);
	/* Backward shift: move later entries of the run into the hole when
	 * their home slot does not lie (cyclically) between the hole and them. */
	for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
		size_t home = (size_t)m->slots[j].hash & mask;
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i] = (rt_strmap_slot){0};
	m->n--;
	return value;
}

size_t
rt_strmap_len(const rt_strmap *m)
{
	return m->n;
}

bool
rt_strmap_next(const rt_strmap *m, size_t *pos, const char **key, void **value)
{
	for (size_t i = *pos; i < m->cap; i++)
		if (m->slots[i].key) {
			if (key)
				*key = m->slots[i].key;
			if (value)
				*value = m->slots[i].value;
			*pos = i + 1;
			return true;
		}
	*pos = m->cap;
	return false;
}

void
rt_strmap_clear(rt_strmap *m, void (*free_value)(void *))
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].key) {
			free(m->slots[i].key);
			if (free_value)
				free_value(m->slots[i].value);
		}
	free(m->slots);
	*m = (rt_strmap)RT_STRMAP_INIT;
}
