/*
 * Supervisors, after OTP's: a process that traps exits, starts its children
 * linked, and restarts them by strategy when they exit.
 *
 * - one_for_one: only the exited child is restarted.
 * - one_for_all: the others are terminated (reverse start order), then all
 *   are started again in order.
 * - rest_for_one: the children started after it are terminated, then it and
 *   they are started again.
 * - simple_one_for_one: a dynamic supervisor for many children of one spec,
 *   added with rt_sup_start_child (the channel processes).
 *
 * Restart intensity: more than `intensity` restarts within `period_ms` and the
 * supervisor terminates every child and exits with "shutdown"; its own
 * supervisor decides what comes next.  Children are terminated one by one in
 * reverse start order with rt_shutdown_child (proc.c: "shutdown" then, after
 * shutdown_ms, "kill"; "kill" at once when shutdown_ms is 0), which is the
 * one implementation of OTP's shutdown for the whole code base.  A dynamic
 * supervisor terminates all of its children at once.
 *
 * Static supervisors grow with rt_sup_add_child (OTP's start_child/2) and
 * rt_sup_start_under (a supervisor as a child: a subtree).  A subtree is a
 * "significant" child (OTP's auto_shutdown = any_significant): never
 * restarted (its spawn argument owns the spec it was built from, which its
 * first run consumes); its exit, unless its parent asked for it, shuts the
 * parent down.  That is how the node's tree (channels/endpoint.c) escalates.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

enum {
	SUP_ADOPT = RT_TAG_SYSTEM + 0x200, /* payload: sup_adopt + arg (dynamic child started) */
	SUP_TERMINATE_CHILD,               /* payload: rt_pid */
};

/* How an adopted child came (SUP_ADOPT). */
enum adopt_kind {
	ADOPT_DYNAMIC, /* rt_sup_start_child */
	ADOPT_STATIC,  /* rt_sup_add_child: spec below */
	ADOPT_SUBTREE, /* rt_sup_start_under: a significant supervisor */
};

typedef struct sup_adopt {
	rt_pid pid; /* must stay first: filled in by proc_spawn_supervised */
	const rt_behaviour *beh;
	enum adopt_kind kind;
	rt_child_spec spec; /* ADOPT_STATIC, ADOPT_SUBTREE (arg unused) */
	size_t arg_size;
	unsigned char arg[];
} sup_adopt;

typedef struct child {
	char *id;
	const rt_behaviour *beh; /* dynamic children: their own behaviour */
	rt_pid pid;              /* RT_NOPID when not running */
	void *arg;
	size_t arg_size;
	bool terminating;
	bool significant; /* a subtree: never restarted, its exit ends the parent */
	bool removed;     /* static: terminated by rt_sup_terminate_child, stays down */
} child;

/* What to do once the children being terminated are gone. */
enum after { AFTER_NOTHING, AFTER_RESTART_FROM, AFTER_EXIT };

typedef struct sup_state {
	rt_sup_spec spec;     /* copy; spec.children points at `specs` */
	rt_child_spec *specs; /* owned copies (args too) */
	child *kids;          /* static: one per spec; dynamic: running children */
	size_t nkids, capkids;
	pidmap index;      /* pid -> position in kids, for running children */
	int64_t *restarts; /* ring of restart times (ms) */
	int nrestarts, rhead;
	/* Termination in progress. */
	size_t *term; /* indices into kids, in the order to terminate */
	size_t nterm, iterm;
	enum after after;
	size_t restart_from;
	char *exit_reason;
	rt_pid parent;
} sup_state;

static const rt_child_spec *
spec_of(sup_state *s, size_t i)
{
	return &s->specs[s->spec.strategy == RT_SIMPLE_ONE_FOR_ONE ? 0 : i];
}

static bool
clean(const char *r)
{
	return strcmp(r, "normal") == 0 || strncmp(r, "shutdown", 8) == 0;
}

static void
start_kid(sup_state *s, size_t i)
{
	const rt_child_spec *cs = spec_of(s, i);
	child *k = &s->kids[i];
	k->terminating = false;
	if (k->significant || k->removed)
		return;
	k->pid =
	    proc_spawn_linked_on(k->beh ? k->beh : cs->behaviour, k->arg, k->arg_size, cs->pin - 1);
	if (!k->pid)
		rt_log_error("supervisor: could not start child %s", cs->id);
	else
		pidmap_put(&s->index, k->pid, (uint32_t)i);
}

/* A child stops running: forget its pid (its exit was handled). */
static void
kid_stopped(sup_state *s, size_t i)
{
	if (s->kids[i].pid)
		pidmap_del(&s->index, s->kids[i].pid);
	s->kids[i].pid = RT_NOPID;
}

static void
remove_kid(sup_state *s, size_t i)
{
	kid_stopped(s, i);
	free(s->kids[i].arg);
	s->kids[i].arg = NULL;
	s->kids[i].removed = true;
	if (s->spec.strategy == RT_SIMPLE_ONE_FOR_ONE) {
		s->kids[i] = s->kids[--s->nkids];
		if (i < s->nkids && s->kids[i].pid)
			pidmap_put(&s->index, s->kids[i].pid, (uint32_t)i);
	}
}

static ssize_t
find_kid(sup_state *s, rt_pid pid)
{
	uint32_t i;
	return pidmap_get(&s->index, pid, &i) ? (ssize_t)i : -1;
}

/* Records one restart; false when the intensity is exceeded. */
static bool
note_restart(sup_state *s)
{
	int cap = s->spec.intensity + 1;
	int64_t now = rt_now_ms();
	s->restarts[s->rhead] = now;
	s->rhead = (s->rhead + 1) % cap;
	if (s->nrestarts < cap)
		s->nrestarts++;
	int recent = 0;
	for (int i = 0; i < s->nrestarts; i++)
		if (now - s->restarts[i] <= (int64_t)s->spec.period_ms)
			recent++;
	return recent <= s->spec.intensity;
}

static void terminate_next(sup_state *s);

static void
finish_after(sup_state *s, int *rc)
{
	free(s->term);
	s->term = NULL;
	s->nterm = s->iterm = 0;
	enum after a = s->after;
	s->after = AFTER_NOTHING;
	if (a == AFTER_RESTART_FROM) {
		for (size_t i = s->restart_from; i < s->nkids; i++)
			if (!s->kids[i].pid && spec_of(s, i)->restart != RT_TEMPORARY)
				start_kid(s, i);
	} else if (a == AFTER_EXIT) {
		*rc = rt_stop(s->exit_reason ? s->exit_reason : "shutdown");
	}
}

/* Starts terminating kids[from..] (all, or those after `from`) in reverse order. */
static void
begin_terminate(sup_state *s, size_t from, enum after after)
{
	free(s->term);
	s->term = rt_xcalloc(s->nkids + 1, sizeof(size_t));
	s->nterm = s->iterm = 0;
	for (size_t i = s->nkids; i-- > from;)
		if (s->kids[i].pid)
			s->term[s->nterm++] = i;
	s->after = after;
	if (s->spec.strategy == RT_SIMPLE_ONE_FOR_ONE) {
		/* All at once. */
		for (size_t j = 0; j < s->nterm; j++) {
			child *k = &s->kids[s->term[j]];
			k->terminating = true;
			rt_shutdown_child(k->pid, "shutdown", spec_of(s, 0)->shutdown_ms);
		}
		return;
	}
	terminate_next(s);
}

static void
terminate_next(sup_state *s)
{
	while (s->iterm < s->nterm) {
		child *k = &s->kids[s->term[s->iterm]];
		if (!k->pid) {
			s->iterm++;
			continue;
		}
		k->terminating = true;
		rt_shutdown_child(k->pid, "shutdown", spec_of(s, s->term[s->iterm])->shutdown_ms);
		return;
	}
}

static bool
terminating_done(sup_state *s)
{
	for (size_t j = 0; j < s->nterm; j++) {
		size_t i = s->term[j];
		if (i < s->nkids && s->kids[i].terminating && s->kids[i].pid)
			return false;
	}
	return true;
}

static int
sup_init(void *state, const void *arg, size_t arg_size)
{
	sup_state *s = state;
	(void)arg_size;
	const sup_state *src = arg; /* a filled-in template: see rt_sup_start */
	*s = *src;
	rt_trap_exit(true);
	if (s->spec.strategy != RT_SIMPLE_ONE_FOR_ONE)
		for (size_t i = 0; i < s->nkids; i++)
			start_kid(s, i);
	return RT_OK;
}

/* Terminates every child, then exits "shutdown". */
static int
escalate(sup_state *s)
{
	int rc = RT_OK;
	free(s->exit_reason);
	s->exit_reason = rt_xstrdup("shutdown");
	begin_terminate(s, 0, AFTER_EXIT);
	if (s->nterm == 0)
		finish_after(s, &rc);
	return rc;
}

static int
on_child_exit(sup_state *s, size_t i, const char *reason)
{
	int rc = RT_OK;
	child *k = &s->kids[i];
	bool was_terminating = k->terminating;
	const rt_child_spec *cs = spec_of(s, i);
	kid_stopped(s, i);
	k->terminating = false;
	if (was_terminating && s->after == AFTER_NOTHING) {
		remove_kid(s, i); /* rt_sup_terminate_child: not restarted */
		return RT_OK;
	}
	if (s->after != AFTER_NOTHING) {
		if (s->spec.strategy == RT_SIMPLE_ONE_FOR_ONE) {
			/* term[] holds indices; removal would shift them: mark only. */
			if (terminating_done(s))
				finish_after(s, &rc);
			return rc;
		}
		if (s->iterm < s->nterm && s->term[s->iterm] == i) {
			s->iterm++;
			terminate_next(s);
		}
		if (s->iterm >= s->nterm)
			finish_after(s, &rc);
		return rc;
	}
	char pb[32];
	rt_pid_str(rt_self(), pb, sizeof(pb));
	if (k->significant) {
		rt_log_error("supervisor %s: subtree %s exited (%s): shutting down", pb,
		             cs->id ? cs->id : "?", reason);
		k->removed = true;
		return escalate(s);
	}
	bool restart =
	    cs->restart == RT_PERMANENT || (cs->restart == RT_TRANSIENT && !clean(reason));
	if (!restart) {
		if (s->spec.strategy == RT_SIMPLE_ONE_FOR_ONE || cs->restart == RT_TEMPORARY)
			remove_kid(s, i);
		return RT_OK;
	}
	rt_log_warning("supervisor %s: child %s exited (%s), restarting", pb, cs->id ? cs->id : "?",
	               reason);
	if (!note_restart(s)) {
		rt_log_error("supervisor %s: reached maximum restart intensity (%d in %u ms), "
		             "shutting down",
		             pb, s->spec.intensity, s->spec.period_ms);
		return escalate(s);
	}
	if (s->spec.strategy == RT_ONE_FOR_ALL || s->spec.strategy == RT_REST_FOR_ONE) {
		/* A subtree among those to restart cannot come back: give up. */
		size_t from = s->spec.strategy == RT_ONE_FOR_ALL ? 0 : i;
		for (size_t j = from; j < s->nkids; j++)
			if (s->kids[j].significant && s->kids[j].pid) {
				rt_log_error("supervisor %s: a restart would take subtree %s "
				             "down: shutting down",
				             pb, spec_of(s, j)->id ? spec_of(s, j)->id : "?");
				return escalate(s);
			}
	}
	switch (s->spec.strategy) {
	case RT_ONE_FOR_ONE:
	case RT_SIMPLE_ONE_FOR_ONE:
		start_kid(s, i);
		break;
	case RT_ONE_FOR_ALL:
	case RT_REST_FOR_ONE:
		s->restart_from = s->spec.strategy == RT_ONE_FOR_ALL ? 0 : i;
		begin_terminate(s, s->restart_from, AFTER_RESTART_FROM);
		if (s->nterm == 0)
			finish_after(s, &rc);
		break;
	}
	return rc;
}

static int
sup_handle(void *state, rt_msg *m)
{
	sup_state *s = state;
	int rc = RT_OK;
	switch (m->tag) {
	case RT_MSG_EXIT: {
		rt_exit_info *e = rt_msg_data(m);
		ssize_t i = find_kid(s, e->pid);
		if (i >= 0)
			return on_child_exit(s, (size_t)i, e->reason);
		/* From the parent or an explicit rt_exit: terminate everything, then
		 * exit with the same reason (as OTP). */
		if (strcmp(e->reason, "normal") == 0 && e->pid != s->parent)
			return RT_OK;
		free(s->exit_reason);
		s->exit_reason = rt_xstrdup(e->reason);
		begin_terminate(s, 0, AFTER_EXIT);
		if (s->nterm == 0)
			finish_after(s, &rc);
		return rc;
	}
	case SUP_ADOPT: {
		sup_adopt *a = rt_msg_data(m);
		if (s->after == AFTER_EXIT ||
		    (a->kind == ADOPT_DYNAMIC) != (s->spec.strategy == RT_SIMPLE_ONE_FOR_ONE)) {
			rt_exit(a->pid, "kill");
			return RT_OK;
		}
		if (s->nkids == s->capkids) {
			s->capkids = s->capkids ? s->capkids * 2 : 16;
			s->kids = rt_xrealloc(s->kids, s->capkids * sizeof(child));
			if (s->spec.strategy != RT_SIMPLE_ONE_FOR_ONE) {
				s->specs =
				    rt_xrealloc(s->specs, s->capkids * sizeof(rt_child_spec));
				s->spec.children = s->specs;
			}
		}
		child *k = &s->kids[s->nkids++];
		memset(k, 0, sizeof(*k));
		k->pid = a->pid;
		pidmap_put(&s->index, a->pid, (uint32_t)(s->nkids - 1));
		proc_add_link(rt_cur->current, a->pid);
		if (a->kind != ADOPT_DYNAMIC) {
			/* Static: kids and specs stay parallel. */
			rt_child_spec *cs = &s->specs[s->nkids - 1];
			*cs = a->spec;
			cs->arg = NULL; /* the kid's copy below is the one used */
			s->spec.nchildren = s->nkids;
			k->id = (char *)cs->id;
			k->significant = a->kind == ADOPT_SUBTREE;
			if (k->significant)
				return RT_OK; /* never restarted: no argument kept */
			k->arg_size = a->arg_size;
			k->arg = rt_xmalloc(a->arg_size ? a->arg_size : 1);
			memcpy(k->arg, a->arg, a->arg_size);
			return RT_OK;
		}
		k->beh = a->beh;
		/* Only a child that may be restarted needs its argument kept. */
		if (spec_of(s, 0)->restart != RT_TEMPORARY) {
			k->arg_size = a->arg_size;
			k->arg = rt_xmalloc(a->arg_size ? a->arg_size : 1);
			memcpy(k->arg, a->arg, a->arg_size);
		}
		return RT_OK;
	}
	case SUP_TERMINATE_CHILD: {
		rt_pid pid = *(rt_pid *)rt_msg_data(m);
		ssize_t i = find_kid(s, pid);
		if (i < 0)
			return RT_OK;
		/* Make it temporary for this exit: it must not come back. */
		if (s->kids[i].terminating)
			return RT_OK;
		s->kids[i].terminating = true;
		rt_shutdown_child(pid, "shutdown", spec_of(s, (size_t)i)->shutdown_ms);
		return RT_OK;
	}
	default:
		return RT_OK;
	}
}

/* A child killed through rt_sup_terminate_child ends up here as "terminating"
 * while no bulk termination runs: it is removed, not restarted.  That case is
 * handled in on_child_exit by was_terminating with after == AFTER_NOTHING. */

static void
sup_terminate(void *state, const char *reason)
{
	sup_state *s = state;
	(void)reason;
	/* Children still running (the supervisor was killed): kill them. */
	for (size_t i = 0; i < s->nkids; i++) {
		if (s->kids[i].pid)
			rt_exit(s->kids[i].pid, "kill");
		free(s->kids[i].arg);
	}
	for (size_t i = 0; i < s->spec.nchildren; i++)
		free((void *)s->specs[i].arg);
	free(s->specs);
	free(s->kids);
	pidmap_free(&s->index);
	free(s->restarts);
	free(s->term);
	free(s->exit_reason);
}

static const rt_behaviour sup_behaviour = {
    .name = "supervisor",
    .state_size = sizeof(sup_state),
    .init = sup_init,
    .handle = sup_handle,
    .terminate = sup_terminate,
};

/* Fills t with a supervisor's start argument (it owns copies of everything). */
static bool
sup_template(const rt_sup_spec *spec, rt_pid parent, sup_state *t)
{
	memset(t, 0, sizeof(*t));
	t->spec = *spec;
	if (t->spec.intensity == 0 && t->spec.period_ms == 0) {
		t->spec.intensity = 3;
		t->spec.period_ms = 5000;
	}
	if (t->spec.intensity < 0)
		t->spec.intensity = 0;
	if (t->spec.strategy == RT_SIMPLE_ONE_FOR_ONE && spec->nchildren != 1)
		return false;
	t->specs = rt_xcalloc(spec->nchildren ? spec->nchildren : 1, sizeof(rt_child_spec));
	t->restarts = rt_xcalloc((size_t)t->spec.intensity + 1, sizeof(int64_t));
	for (size_t i = 0; i < spec->nchildren; i++) {
		t->specs[i] = spec->children[i];
		void *a = rt_xmalloc(spec->children[i].arg_size ? spec->children[i].arg_size : 1);
		if (spec->children[i].arg_size)
			memcpy(a, spec->children[i].arg, spec->children[i].arg_size);
		t->specs[i].arg = a;
	}
	t->spec.children = t->specs;
	if (t->spec.strategy != RT_SIMPLE_ONE_FOR_ONE) {
		t->nkids = t->capkids = spec->nchildren;
		t->kids = rt_xcalloc(t->nkids ? t->nkids : 1, sizeof(child));
		for (size_t i = 0; i < t->nkids; i++) {
			t->kids[i].id = (char *)spec->children[i].id;
			t->kids[i].arg_size = spec->children[i].arg_size;
			t->kids[i].arg = rt_xmalloc(t->kids[i].arg_size ? t->kids[i].arg_size : 1);
			memcpy(t->kids[i].arg, t->specs[i].arg, t->kids[i].arg_size);
		}
	}
	t->parent = parent;
	return true;
}

rt_pid
rt_sup_start(const rt_sup_spec *spec)
{
	sup_state t;
	if (!sup_template(spec, rt_self(), &t))
		return RT_NOPID;
	rt_pid pid =
	    rt_spawn_opt(&sup_behaviour, &t, sizeof(t), t.parent ? RT_SPAWN_LINK : 0, NULL);
	if (!pid)
		sup_terminate(&t, "noproc");
	return pid;
}

rt_pid
rt_sup_start_under(rt_pid parent, const char *id, const rt_sup_spec *spec)
{
	if (!parent)
		return rt_sup_start(spec);
	sup_state t;
	if (!sup_template(spec, parent, &t))
		return RT_NOPID;
	rt_msg *adopt = rt_msg_alloc(SUP_ADOPT, sizeof(sup_adopt));
	sup_adopt *a = rt_msg_data(adopt);
	a->beh = &sup_behaviour;
	a->kind = ADOPT_SUBTREE;
	a->spec = (rt_child_spec){.id = id,
	                          .behaviour = &sup_behaviour,
	                          .restart = RT_PERMANENT,
	                          .shutdown_ms = RT_INFINITY};
	a->arg_size = 0;
	rt_pid pid = proc_spawn_supervised(parent, &sup_behaviour, &t, sizeof(t), adopt);
	if (!pid)
		sup_terminate(&t, "noproc");
	return pid;
}

rt_pid
rt_sup_add_child(rt_pid sup, const rt_child_spec *spec)
{
	if (!spec || !spec->behaviour || spec->pin < 0 || spec->pin > rt_schedulers())
		return RT_NOPID;
	rt_msg *adopt = rt_msg_alloc(SUP_ADOPT, sizeof(sup_adopt) + spec->arg_size);
	sup_adopt *a = rt_msg_data(adopt);
	a->beh = spec->behaviour;
	a->kind = ADOPT_STATIC;
	a->spec = *spec;
	a->arg_size = spec->arg_size;
	if (spec->arg_size)
		memcpy(a->arg, spec->arg, spec->arg_size);
	return proc_spawn_supervised_on(sup, spec->behaviour, spec->arg, spec->arg_size, adopt,
	                                spec->pin - 1);
}

rt_pid
rt_sup_start_child(rt_pid sup, const rt_behaviour *b, const void *arg, size_t arg_size)
{
	rt_msg *adopt = rt_msg_alloc(SUP_ADOPT, sizeof(sup_adopt) + arg_size);
	sup_adopt *a = rt_msg_data(adopt);
	a->beh = b;
	a->kind = ADOPT_DYNAMIC;
	a->arg_size = arg_size;
	if (arg_size)
		memcpy(a->arg, arg, arg_size);
	return proc_spawn_supervised(sup, b, arg, arg_size, adopt);
}

int
rt_sup_terminate_child(rt_pid sup, rt_pid child)
{
	return rt_send(sup, SUP_TERMINATE_CHILD, &child, sizeof(child));
}
