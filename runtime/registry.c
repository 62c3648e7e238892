/*
 * Registered names (erlang:register/whereis): a string map (strmap.h) of
 * name -> pid under one mutex.  Registration is rare; lookups are short.  A
 * process's name is removed when it exits.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"
#include "runtime/strmap.h"

#define MAX_NAME 63

_Static_assert(sizeof(void *) >= sizeof(rt_pid), "a pid fits a map value");

/* The name table is per runtime, like the pid table it complements. */
static struct {
	pthread_mutex_t lock;
	rt_strmap names; /* name -> (void *)(uintptr_t)pid; pids are never 0 */
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER, .names = RT_STRMAP_INIT};

static rt_pid
lookup(const char *name)
{
	return (rt_pid)(uintptr_t)rt_strmap_get(&reg.names, name);
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
	if (lookup(name)) {
		pthread_mutex_unlock(&reg.lock);
		return -1;
	}
	rt_strmap_put(&reg.names, name, (void *)(uintptr_t)p->pid);
	pthread_mutex_unlock(&reg.lock);
	x->name = rt_xstrdup(name);
	return 0;
}

static int
unregister_pid(const char *name, rt_pid pid)
{
	pthread_mutex_lock(&reg.lock);
	rt_pid cur = lookup(name);
	if (!cur || (pid && cur != pid)) {
		pthread_mutex_unlock(&reg.lock);
		return -1;
	}
	rt_strmap_del(&reg.names, name);
	pthread_mutex_unlock(&reg.lock);
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
	rt_pid pid = lookup(name);
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
	rt_strmap_clear(&reg.names, NULL);
	pthread_mutex_unlock(&reg.lock);
}
