/*
 * Registered names (erlang:register/whereis): a chained hash table under one
 * mutex.  Registration is rare; lookups are short.  A process's name is
 * removed when it exits.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/hash.h"
#include "runtime/internal.h"

#define NBUCKETS 256
#define MAX_NAME 63

typedef struct reg_entry {
	struct reg_entry *next;
	rt_pid pid;
	char name[];
} reg_entry;

/* The name table is per runtime, like the pid table it complements. */
static struct {
	pthread_mutex_t lock;
	reg_entry *buckets[NBUCKETS];
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

static unsigned
hash(const char *s)
{
	return (unsigned)(rt_hash_str(s) % NBUCKETS);
}

static reg_entry **
find(const char *name)
{
	reg_entry **pp = &reg.buckets[hash(name)];
	while (*pp && strcmp((*pp)->name, name) != 0)
		pp = &(*pp)->next;
	return pp;
}

int
rt_register(const char *name)
{
	sched *s = rt_cur;
	if (!s || !s->current || !name || !*name || strlen(name) > MAX_NAME)
		return -1;
	rt_proc *p = s->current;
	proc_ext *x = proc_ext_get(p);
	if (x->name)
		return -1;
	pthread_mutex_lock(&reg.lock);
	reg_entry **pp = find(name);
	if (*pp) {
		pthread_mutex_unlock(&reg.lock);
		return -1;
	}
	size_t n = strlen(name) + 1;
	reg_entry *e = rt_xmalloc(sizeof(*e) + n);
	memcpy(e->name, name, n);
	e->pid = p->pid;
	e->next = NULL;
	*pp = e;
	pthread_mutex_unlock(&reg.lock);
	x->name = rt_xstrdup(name);
	return 0;
}

static int
unregister_pid(const char *name, rt_pid pid)
{
	pthread_mutex_lock(&reg.lock);
	reg_entry **pp = find(name);
	reg_entry *e = *pp;
	if (!e || (pid && e->pid != pid)) {
		pthread_mutex_unlock(&reg.lock);
		return -1;
	}
	*pp = e->next;
	pthread_mutex_unlock(&reg.lock);
	free(e);
	return 0;
}

int
rt_unregister(const char *name)
{
	sched *s = rt_cur;
	if (!s || !s->current || !s->current->ext || !s->current->ext->name ||
	    strcmp(s->current->ext->name, name) != 0)
		return -1;
	int rc = unregister_pid(name, s->current->pid);
	free(s->current->ext->name);
	s->current->ext->name = NULL;
	return rc;
}

rt_pid
rt_whereis(const char *name)
{
	pthread_mutex_lock(&reg.lock);
	reg_entry *e = *find(name);
	rt_pid pid = e ? e->pid : RT_NOPID;
	pthread_mutex_unlock(&reg.lock);
	return pid;
}

void
registry_proc_exit(rt_proc *p)
{
	if (p->ext && p->ext->name)
		unregister_pid(p->ext->name, p->pid);
}

void
registry_fini(void)
{
	pthread_mutex_lock(&reg.lock);
	for (int i = 0; i < NBUCKETS; i++) {
		reg_entry *e = reg.buckets[i];
		while (e) {
			reg_entry *n = e->next;
			free(e);
			e = n;
		}
		reg.buckets[i] = NULL;
	}
	pthread_mutex_unlock(&reg.lock);
}
