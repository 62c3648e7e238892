/*
 * Processes: spawn, send, the mailbox, signals (links, monitors, exits) and
 * the exit path.
 *
 * A process's fields are touched only by the scheduler thread running it,
 * except the mailbox head, which any sender exchanges.  Signals travel in the
 * mailbox with ordinary messages, so "link, send, exit" between two
 * processes is seen in that order.  An exiting process leaves the pid table
 * first, then is retired (ebr.c): senders that looked it up just before may
 * still push; whatever they push is drained when it is finally freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

_Static_assert(sizeof(rt_proc) == 64, "rt_proc grew past one cache line");

static const char REASON_NORMAL[] = "normal";
static const char REASON_KILLED[] = "killed";
static const char REASON_NOPROC[] = "noproc";
static const char REASON_HANDLER[] = "handler returned an error";

/* ------------------------------------------------------------------ messages */

rt_msg *
rt_msg_alloc(uint32_t tag, size_t size)
{
	rt_msg *m = rt_alloc(sizeof(rt_msg) + size);
	atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
	m->tag = tag;
	m->size = (uint32_t)size;
	m->from = RT_NOPID;
	m->buf = NULL;
	return m;
}

void
msg_free(rt_msg *m)
{
	if (m->tag == SIG_TIMER) {
		timer_msg_free(m);
		return;
	}
	rt_buf_release(m->buf);
	rt_free(m, sizeof(rt_msg) + m->size);
}

void
rt_msg_free(rt_msg *m)
{
	if (m)
		msg_free(m);
}

/* ------------------------------------------------------------------ mailbox */

/* Pushes m; returns true when the mailbox was marked empty, i.e. the caller
 * must schedule the process.  Any thread. */
bool
mbox_push(rt_proc *p, rt_msg *m)
{
	atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
	/* acq_rel: release publishes m's contents to the consumer; acquire pairs
	 * with markempty's CAS so the consumer's last writes are visible to
	 * whoever schedules it next. */
	atomic_fetch_add_explicit(&p->mb_in, 1, memory_order_relaxed);
	rt_msg *prev = atomic_exchange_explicit(&p->mb_head, m, memory_order_acq_rel);
	bool was_empty = ((uintptr_t)prev & 1) != 0;
	prev = (rt_msg *)((uintptr_t)prev & ~(uintptr_t)1);
	atomic_store_explicit(&prev->next, m, memory_order_release);
	return was_empty;
}

/* Pops the next message (consumer only).  The returned message stays owned by
 * the mailbox until the next pop, which frees it. */
static rt_msg *
mbox_pop(rt_proc *p)
{
	rt_msg *tail = p->mb_tail;
	rt_msg *next = atomic_load_explicit(&tail->next, memory_order_acquire);
	if (!next)
		return NULL;
	p->mb_tail = next;
	msg_free(tail);
	atomic_store_explicit(
	    &p->mb_out, (uint16_t)(atomic_load_explicit(&p->mb_out, memory_order_relaxed) + 1),
	    memory_order_relaxed);
	return next;
}

/* Marks the mailbox empty and unscheduled if no message is pending.  After a
 * true return the process may be scheduled by another thread at once. */
static bool
mbox_markempty(rt_proc *p)
{
	rt_msg *tail = p->mb_tail;
	rt_msg *head = atomic_load(&p->mb_head);
	if (head != tail)
		return false;
	return atomic_compare_exchange_strong(&p->mb_head, &tail, (rt_msg *)((uintptr_t)tail | 1));
}

/* ------------------------------------------------------------------ lookup */

rt_proc *
proc_lookup(rt_pid pid)
{
	rt_proc *p = ht_get(&rt_g.procs, pid);
	if (!p || p->pid != pid)
		return NULL;
	return p;
}

proc_ext *
proc_ext_get(rt_proc *p)
{
	if (!p->ext) {
		p->ext = rt_xcalloc(1, sizeof(proc_ext));
	}
	return p->ext;
}

static size_t
proc_block_size(const rt_behaviour *b)
{
	return sizeof(rt_proc) + ((b->state_size + 15) & ~(size_t)15);
}

rt_pid
rt_self(void)
{
	sched *s = rt_cur;
	return s && s->current ? s->current->pid : RT_NOPID;
}

void *
rt_self_state(void)
{
	sched *s = rt_cur;
	return s && s->current ? s->current->state : NULL;
}

char *
rt_pid_str(rt_pid pid, char *buf, size_t len)
{
	snprintf(buf, len, "<0.%u.%u>", (unsigned)(uint32_t)pid, (unsigned)(pid >> 32));
	return buf;
}

uint64_t
rt_process_count(void)
{
	return ht_live(&rt_g.procs);
}

/* ------------------------------------------------------------------ send */

int
rt_send_msg(rt_pid to, rt_msg *m)
{
	sched *s = rt_cur;
	m->from = s && s->current ? s->current->pid : RT_NOPID;
	return rt_forward_msg(to, m);
}

int
rt_forward_msg(rt_pid to, rt_msg *m)
{
	sched *s = rt_cur;
	if (!s)
		ebr_foreign_enter();
	rt_proc *p = proc_lookup(to);
	int rc = 0;
	if (!p) {
		msg_free(m);
		rc = -1;
	} else if (mbox_push(p, m)) {
		sched_make_runnable(p);
	}
	if (!s)
		ebr_foreign_leave();
	return rc;
}

int
rt_send(rt_pid to, uint32_t tag, const void *data, size_t size)
{
	rt_msg *m = rt_msg_alloc(tag, size);
	if (size)
		memcpy(rt_msg_data(m), data, size);
	return rt_send_msg(to, m);
}

int
rt_send_buf(rt_pid to, uint32_t tag, const void *data, size_t size, rt_buf *buf)
{
	rt_msg *m = rt_msg_alloc(tag, size);
	if (size)
		memcpy(rt_msg_data(m), data, size);
	m->buf = buf;
	return rt_send_msg(to, m);
}

static rt_msg *
exit_msg(uint32_t tag, rt_pid who, const char *reason)
{
	size_t n = strlen(reason) + 1;
	rt_msg *m = rt_msg_alloc(tag, sizeof(rt_exit_info) + n);
	rt_exit_info *e = rt_msg_data(m);
	e->pid = who;
	memcpy(e->reason, reason, n);
	return m;
}

/* Sends an exit signal (SIG_EXIT or SIG_EXIT_LINK) from the caller. */
static int
send_reason(rt_pid to, uint32_t tag, const char *reason)
{
	return rt_send_msg(to, exit_msg(tag, rt_self(), reason));
}

static int
send_down(rt_pid to, uint64_t ref, rt_pid who, const char *reason)
{
	size_t n = strlen(reason) + 1;
	rt_msg *m = rt_msg_alloc(RT_MSG_DOWN, sizeof(rt_down_info) + n);
	rt_down_info *d = rt_msg_data(m);
	d->ref = ref;
	d->pid = who;
	memcpy(d->reason, reason, n);
	return rt_send_msg(to, m);
}

int
rt_exit(rt_pid pid, const char *reason)
{
	return send_reason(pid, SIG_EXIT, reason);
}

/* ------------------------------------------------------------------ spawn */

static void
ext_add_link(proc_ext *x, rt_pid pid)
{
	pidmap_put(&x->links, pid, 0);
}

static bool
ext_del_link(proc_ext *x, rt_pid pid)
{
	return x && pidmap_del(&x->links, pid);
}

/* Monitor arrays are scanned while short; past MON_INDEX_MIN entries an
 * index (ref -> position) makes adding and removing O(1), for processes
 * that hold tens of thousands (a presence tracker shard). */
#define MON_INDEX_MIN 16

enum { MON_OUT = 0, MON_IN = 1 };

/* x's index of mons_out or mons_in, or NULL while there is none. */
static pidmap *
mon_idx(const proc_ext *x, int which)
{
	return x->midx && x->midx->idx[which].cap ? &x->midx->idx[which] : NULL;
}

static void
mon_add(proc_ext *x, int which, uint64_t ref, rt_pid pid)
{
	struct mon **v = which == MON_OUT ? &x->mons_out : &x->mons_in;
	uint32_t *n = which == MON_OUT ? &x->nout : &x->nin;
	uint32_t *cap = which == MON_OUT ? &x->capout : &x->capin;
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 1; /* most processes hold one monitor */
		*v = rt_xrealloc(*v, *cap * sizeof(struct mon));
	}
	(*v)[*n].ref = ref;
	(*v)[*n].pid = pid;
	(*v)[*n].kill = 0;
	(*n)++;
	pidmap *idx = mon_idx(x, which);
	if (idx) {
		pidmap_put(idx, ref + 2, *n - 1);
	} else if (*n > MON_INDEX_MIN) {
		if (!x->midx)
			x->midx = rt_xcalloc(1, sizeof(*x->midx));
		for (uint32_t i = 0; i < *n; i++)
			pidmap_put(&x->midx->idx[which], (*v)[i].ref + 2, i);
	}
}

static void
mon_idx_free(proc_ext *x)
{
	if (x->midx) {
		pidmap_free(&x->midx->idx[0]);
		pidmap_free(&x->midx->idx[1]);
		free(x->midx);
		x->midx = NULL;
	}
}

static bool
mon_del(struct mon *v, uint32_t *n, pidmap *idx, uint64_t ref, rt_pid *pid, rt_timer *kill)
{
	uint32_t i;
	if (idx) {
		if (!pidmap_get(idx, ref + 2, &i))
			return false;
		pidmap_del(idx, ref + 2);
	} else {
		for (i = 0; i < *n && v[i].ref != ref; i++)
			;
		if (i == *n)
			return false;
	}
	if (pid)
		*pid = v[i].pid;
	if (kill)
		*kill = v[i].kill;
	v[i] = v[--*n];
	if (i < *n && idx)
		pidmap_put(idx, v[i].ref + 2, i);
	return true;
}

/* Allocates a process and its pid without making it visible to lookups. */
static rt_proc *
proc_create(const rt_behaviour *b, const void *arg, size_t arg_size)
{
	rt_proc *p = rt_alloc(proc_block_size(b));
	memset(p, 0, proc_block_size(b));
	p->beh = b;
	p->home = -1;
	/* The first message in the mailbox is the stub; it carries the spawn
	 * argument, which init reads from it before any pop. */
	rt_msg *stub = rt_msg_alloc(SIG_INIT, arg_size);
	if (arg_size)
		memcpy(rt_msg_data(stub), arg, arg_size);
	p->mb_tail = stub;
	atomic_init(&p->mb_head, stub);
	p->pid = ht_alloc(&rt_g.procs, NULL);
	if (!p->pid) {
		msg_free(stub);
		rt_free(p, proc_block_size(b));
		rt_log_error("process table full (%u slots): spawn of %s refused", rt_g.procs.cap,
		             b->name);
		return NULL;
	}
	return p;
}

/* Undoes proc_create for a process that was never published. */
static void
proc_discard(rt_proc *p)
{
	ht_free(&rt_g.procs, p->pid);
	msg_free(p->mb_tail);
	if (p->ext) {
		pidmap_free(&p->ext->links);
		free(p->ext->mons_in);
		mon_idx_free(p->ext);
		free(p->ext);
	}
	rt_free(p, proc_block_size(p->beh));
}

/* Makes p visible to lookups (the release store publishes the initialised
 * block) and schedules its init. */
static void
proc_publish(rt_proc *p)
{
	atomic_store_explicit(&rt_g.procs.slots[(uint32_t)p->pid].ptr, p, memory_order_release);
	sched_make_runnable(p);
}

/* The spawn path shared by rt_spawn_opt and rt_spawn_on (home: pinned
 * scheduler, -1 for none). */
static rt_pid
spawn(const rt_behaviour *b, const void *arg, size_t arg_size, int flags, uint64_t *mref, int home)
{
	sched *s = rt_cur;
	rt_proc *parent = s ? s->current : NULL;
	if (!s)
		ebr_foreign_enter();
	rt_proc *p = proc_create(b, arg, arg_size);
	if (!p) {
		if (!s)
			ebr_foreign_leave();
		return RT_NOPID;
	}
	rt_pid pid = p->pid;
	p->home = (int16_t)home;
	if (parent && (flags & RT_SPAWN_LINK)) {
		ext_add_link(proc_ext_get(p), parent->pid);
		ext_add_link(proc_ext_get(parent), pid);
	}
	if (parent && (flags & RT_SPAWN_MONITOR)) {
		uint64_t ref = sched_new_ref();
		proc_ext *px = proc_ext_get(parent), *cx = proc_ext_get(p);
		mon_add(px, MON_OUT, ref, pid);
		mon_add(cx, MON_IN, ref, parent->pid);
		if (mref)
			*mref = ref;
	}
	proc_publish(p);
	if (!s)
		ebr_foreign_leave();
	return pid;
}

rt_pid
rt_spawn_opt(const rt_behaviour *b, const void *arg, size_t arg_size, int flags, uint64_t *mref)
{
	return spawn(b, arg, arg_size, flags, mref, -1);
}

/* Spawns a child of a dynamic supervisor from any thread: the child is born
 * linked to `sup`, and `adopt` (whose payload starts with the child's pid) is
 * queued to the supervisor before the child can run, so the supervisor
 * always learns of the child before of its exit. */
rt_pid
proc_spawn_supervised(rt_pid sup, const rt_behaviour *b, const void *arg, size_t arg_size,
                      rt_msg *adopt)
{
	return proc_spawn_supervised_on(sup, b, arg, arg_size, adopt, -1);
}

/* The same, pinned to scheduler `home` (-1: free to move). */
rt_pid
proc_spawn_supervised_on(rt_pid sup, const rt_behaviour *b, const void *arg, size_t arg_size,
                         rt_msg *adopt, int home)
{
	sched *s = rt_cur;
	if (home >= rt_g.nsched) {
		msg_free(adopt);
		return RT_NOPID;
	}
	if (!s)
		ebr_foreign_enter();
	rt_proc *p = proc_create(b, arg, arg_size);
	rt_pid pid = RT_NOPID;
	if (!p) {
		msg_free(adopt);
	} else {
		p->home = (int16_t)home;
		ext_add_link(proc_ext_get(p), sup);
		*(rt_pid *)rt_msg_data(adopt) = p->pid;
		if (rt_send_msg(sup, adopt) < 0) {
			proc_discard(p);
		} else {
			pid = p->pid;
			proc_publish(p);
		}
	}
	if (!s)
		ebr_foreign_leave();
	return pid;
}

/* Spawns a child linked to the calling process, pinned to `home` (-1: free). */
rt_pid
proc_spawn_linked_on(const rt_behaviour *b, const void *arg, size_t arg_size, int home)
{
	if (home >= rt_g.nsched)
		return RT_NOPID;
	return spawn(b, arg, arg_size, RT_SPAWN_LINK, NULL, home);
}

rt_pid
rt_spawn_on(int sched_id, const rt_behaviour *b, const void *arg, size_t arg_size)
{
	if (sched_id < 0 || sched_id >= rt_g.nsched)
		return RT_NOPID;
	return spawn(b, arg, arg_size, 0, NULL, sched_id);
}

rt_pid
rt_spawn(const rt_behaviour *b, const void *arg, size_t arg_size)
{
	return rt_spawn_opt(b, arg, arg_size, 0, NULL);
}

uint32_t
rt_msgq_len(rt_pid pid)
{
	sched *s = rt_cur;
	if (!s)
		ebr_foreign_enter();
	rt_proc *p = proc_lookup(pid);
	uint32_t n = p ? (uint16_t)(atomic_load_explicit(&p->mb_in, memory_order_relaxed) -
	                            atomic_load_explicit(&p->mb_out, memory_order_relaxed))
	               : 0;
	if (!s)
		ebr_foreign_leave();
	return n;
}

int
rt_home(rt_pid pid)
{
	sched *s = rt_cur;
	if (!s)
		ebr_foreign_enter();
	rt_proc *p = proc_lookup(pid);
	int home = p ? p->home : -1;
	if (!s)
		ebr_foreign_leave();
	return home;
}

bool
rt_local_idle(rt_pid pid)
{
	sched *s = rt_cur;
	if (!s || !s->current)
		return false;
	rt_proc *p = proc_lookup(pid);
	if (!p || p == s->current || p->home != s->id || !(p->flags & PF_STARTED) ||
	    (p->flags & PF_EXITING))
		return false;
	return atomic_load_explicit(&p->mb_in, memory_order_relaxed) ==
	       atomic_load_explicit(&p->mb_out, memory_order_relaxed);
}

void
rt_yield(void)
{
	sched *s = rt_cur;
	if (s && s->current)
		s->yield_req = true;
}

bool
rt_local(rt_pid pid)
{
	sched *s = rt_cur;
	if (!s || !s->current)
		return false;
	rt_proc *p = proc_lookup(pid);
	/* home is read first: flags belong to the thread p is pinned to. */
	return p && p != s->current && p->home == s->id && (p->flags & PF_STARTED) &&
	       !(p->flags & PF_EXITING);
}

bool
rt_alive(rt_pid pid)
{
	sched *s = rt_cur;
	if (!s)
		ebr_foreign_enter();
	bool alive = proc_lookup(pid) != NULL;
	if (!s)
		ebr_foreign_leave();
	return alive;
}

/* ------------------------------------------------------------------ links, monitors */

static rt_proc *
self_proc(const char *what)
{
	sched *s = rt_cur;
	if (!s || !s->current) {
		rt_log_error("%s called outside a process", what);
		abort();
	}
	return s->current;
}

void
rt_link(rt_pid pid)
{
	rt_proc *p = self_proc("rt_link");
	if (pid == p->pid)
		return;
	ext_add_link(proc_ext_get(p), pid);
	rt_msg *m = rt_msg_alloc(SIG_LINK, 0);
	if (rt_send_msg(pid, m) < 0) {
		/* As if the link had been made and the process had exited at once. */
		rt_msg *e = exit_msg(SIG_EXIT_LINK, pid, REASON_NOPROC);
		e->from = pid;
		if (mbox_push(p, e))
			sched_make_runnable(p);
	}
}

void
rt_unlink(rt_pid pid)
{
	rt_proc *p = self_proc("rt_unlink");
	if (ext_del_link(p->ext, pid))
		rt_send(pid, SIG_UNLINK, NULL, 0);
}

uint64_t
rt_monitor(rt_pid pid)
{
	rt_proc *p = self_proc("rt_monitor");
	uint64_t ref = sched_new_ref();
	proc_ext *x = proc_ext_get(p);
	mon_add(x, MON_OUT, ref, pid);
	if (rt_send(pid, SIG_MONITOR, &ref, sizeof(ref)) < 0) {
		size_t n = sizeof(REASON_NOPROC);
		rt_msg *m = rt_msg_alloc(RT_MSG_DOWN, sizeof(rt_down_info) + n);
		rt_down_info *d = rt_msg_data(m);
		d->ref = ref;
		d->pid = pid;
		memcpy(d->reason, REASON_NOPROC, n);
		m->from = pid;
		if (mbox_push(p, m))
			sched_make_runnable(p);
	}
	return ref;
}

void
rt_demonitor(uint64_t ref)
{
	rt_proc *p = self_proc("rt_demonitor");
	rt_pid target;
	rt_timer kill = 0;
	if (p->ext && mon_del(p->ext->mons_out, &p->ext->nout, mon_idx(p->ext, MON_OUT), ref,
	                      &target, &kill)) {
		rt_send(target, SIG_DEMONITOR, &ref, sizeof(ref));
		if (kill)
			rt_cancel_timer(kill);
	}
}

uint64_t
rt_shutdown_child(rt_pid pid, const char *reason, uint32_t timeout_ms)
{
	rt_proc *p = self_proc("rt_shutdown_child");
	/* The monitor goes first: pid sees it before the exit signal (one sender). */
	uint64_t ref = rt_monitor(pid);
	if (timeout_ms == 0) {
		rt_exit(pid, "kill");
		return ref;
	}
	rt_exit(pid, reason ? reason : "shutdown");
	if (timeout_ms == RT_INFINITY)
		return ref;
	kill_req k = {.ref = ref, .pid = pid};
	rt_timer t = rt_send_after(timeout_ms, p->pid, SIG_KILL, &k, sizeof(k));
	proc_ext *x = p->ext;
	for (uint32_t i = x->nout; i-- > 0;)
		if (x->mons_out[i].ref == ref) {
			x->mons_out[i].kill = t;
			return ref;
		}
	/* The DOWN ("noproc") is already queued and the monitor still held: the
	 * loop above always finds it. */
	return ref;
}

/* rt_shutdown_child's timeout (timer.c delivers it to p): kills the pid if p
 * still holds the monitor (neither its DOWN nor rt_demonitor came first). */
void
proc_kill_timer(rt_proc *p, const kill_req *k)
{
	proc_ext *x = p->ext;
	for (uint32_t i = 0; x && i < x->nout; i++)
		if (x->mons_out[i].ref == k->ref) {
			x->mons_out[i].kill = 0; /* fired: its id is released */
			rt_exit(k->pid, "kill");
			return;
		}
}

bool
rt_trap_exit(bool on)
{
	rt_proc *p = self_proc("rt_trap_exit");
	bool old = (p->flags & PF_TRAP_EXIT) != 0;
	if (on)
		p->flags |= PF_TRAP_EXIT;
	else
		p->flags &= (uint8_t)~PF_TRAP_EXIT;
	return old;
}

/* ------------------------------------------------------------------ exit */

static void
set_reason(rt_proc *p, const char *reason, bool owned)
{
	if (p->reason_owned)
		free((char *)p->reason);
	p->reason = reason;
	p->reason_owned = owned;
}

int
rt_stop(const char *reason)
{
	rt_proc *p = self_proc("rt_stop");
	char *r = rt_xstrdup(reason ? reason : REASON_NORMAL);
	set_reason(p, r, true);
	return RT_STOP;
}

_Noreturn void
rt_crash(const char *fmt, ...)
{
	sched *s = rt_cur;
	if (!s || !s->current) {
		va_list ap;
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputs("\nrt_crash outside a process\n", stderr);
		abort();
	}
	char *r = NULL;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&r, fmt, ap) < 0)
		r = NULL;
	va_end(ap);
	set_reason(s->current, r ? r : REASON_HANDLER, r != NULL);
	longjmp(s->crash_jb, 1);
}

static bool
reason_is_clean(const char *r)
{
	return strcmp(r, "normal") == 0 || strncmp(r, "shutdown", 8) == 0;
}

/* Answers signals that reached a process that no longer runs: a link or a
 * monitor on a dead process gets "noproc", as in Erlang. */
static void
answer_dead(rt_proc *p, rt_msg *m)
{
	(void)p;
	if (m->tag == SIG_LINK && m->from)
		rt_send_msg(m->from, exit_msg(SIG_EXIT_LINK, p->pid, REASON_NOPROC));
	else if (m->tag == SIG_MONITOR && m->from)
		send_down(m->from, *(uint64_t *)rt_msg_data(m), p->pid, REASON_NOPROC);
}

static void
drain_dead(rt_proc *p)
{
	rt_msg *m;
	while ((m = mbox_pop(p)))
		answer_dead(p, m);
}

/* Runs every step of an exit after terminate.  The process is current on s. */
static void
exit_finish(sched *s, rt_proc *p)
{
	const char *reason = p->reason ? p->reason : REASON_NORMAL;
	proc_ext *x = p->ext;
	if (x) {
		timer_proc_exit(p);
		io_proc_exit(p);
		registry_proc_exit(p);
		pidmap_ent e;
		for (uint32_t i = 0; pidmap_next(&x->links, &i, &e);)
			send_reason(e.key, SIG_EXIT_LINK, reason);
		for (uint32_t i = 0; i < x->nout; i++)
			rt_send(x->mons_out[i].pid, SIG_DEMONITOR, &x->mons_out[i].ref,
			        sizeof(uint64_t));
		for (uint32_t i = 0; i < x->nin; i++)
			send_down(x->mons_in[i].pid, x->mons_in[i].ref, p->pid, reason);
		pidmap_free(&x->links);
		free(x->mons_out);
		free(x->mons_in);
		mon_idx_free(x);
		free(x->name);
		free(x);
		p->ext = NULL;
	}
	ht_free(&rt_g.procs, p->pid);
	drain_dead(p);
	s->current = NULL;
	ebr_retire(&s->ebr, p);
}

/* Ends process p (current on s) with `reason`.  `crashed`: log a crash report. */
static void
proc_exit(sched *s, rt_proc *p, const char *reason, bool owned, bool crashed)
{
	if (reason)
		set_reason(p, reason, owned);
	p->flags |= PF_EXITING;
	const char *r = p->reason ? p->reason : REASON_NORMAL;
	if (crashed || !reason_is_clean(r)) {
		char pb[32];
		if (crashed)
			rt_log_error("crash report: process %s (%s) exited: %s",
			             rt_pid_str(p->pid, pb, sizeof(pb)), p->beh->name, r);
		else
			rt_log_debug("process %s (%s) exited: %s",
			             rt_pid_str(p->pid, pb, sizeof(pb)), p->beh->name, r);
	}
	/* Unlike Erlang, terminate runs after a kill too ("killed"): in C it is
	 * where the state's heap memory is released. */
	if (p->beh->terminate && (p->flags & PF_STARTED))
		p->beh->terminate(p->state, r);
	exit_finish(s, p);
}

/* Called by the scheduler after a longjmp out of process p. */
void
proc_crashed(sched *s, rt_proc *p)
{
	if (p->flags & PF_EXITING) {
		char pb[32];
		rt_log_error("crash report: process %s (%s) crashed in terminate: %s",
		             rt_pid_str(p->pid, pb, sizeof(pb)), p->beh->name,
		             p->reason ? p->reason : "?");
		exit_finish(s, p);
		return;
	}
	p->flags |= PF_STARTED;
	proc_exit(s, p, NULL, false, true);
}

/* Frees a retired process once no thread can see it. */
void
proc_free_final(rt_proc *p)
{
	drain_dead(p);
	msg_free(p->mb_tail);
	if (p->reason_owned)
		free((char *)p->reason);
	rt_free(p, proc_block_size(p->beh));
}

/* Runs p's terminate during rt_shutdown, surviving a crash inside it. */
static void
terminate_at_shutdown(sched *s, rt_proc *p)
{
	s->current = p;
	if (setjmp(s->crash_jb) == 0)
		p->beh->terminate(p->state, "shutdown");
	else
		rt_log_error("process %s crashed in terminate during shutdown", p->beh->name);
	s->current = NULL;
}

/* Ends every live process (rt_shutdown, schedulers joined): terminate with
 * "shutdown" for all first (they may still send to each other), then free. */
void
proc_free_all(void)
{
	handle_table *t = &rt_g.procs;
	sched *s = rt_cur;
	uint32_t n = atomic_load(&t->fresh);
	for (uint32_t i = 1; i < n && i < t->cap; i++) {
		rt_proc *p = atomic_load(&t->slots[i].ptr);
		if (p && p->beh->terminate && (p->flags & PF_STARTED) && !(p->flags & PF_EXITING)) {
			p->flags |= PF_EXITING;
			terminate_at_shutdown(s, p);
		}
	}
	for (uint32_t i = 1; i < n && i < t->cap; i++) {
		rt_proc *p = atomic_load(&t->slots[i].ptr);
		if (!p)
			continue;
		rt_msg *m;
		while ((m = mbox_pop(p)))
			;
		msg_free(p->mb_tail);
		if (p->ext) {
			timer_proc_exit(p);
			io_proc_exit(p);
			registry_proc_exit(p);
			pidmap_free(&p->ext->links);
			free(p->ext->mons_out);
			free(p->ext->mons_in);
			mon_idx_free(p->ext);
			free(p->ext->name);
			free(p->ext);
		}
		if (p->reason_owned)
			free((char *)p->reason);
		atomic_store(&t->slots[i].ptr, NULL);
		rt_free(p, proc_block_size(p->beh));
	}
}

/* ------------------------------------------------------------------ dispatch */

/* Handles one message; returns false when the process has exited. */
static bool
dispatch(sched *s, rt_proc *p, rt_msg *m)
{
	int rc;
	switch (m->tag) {
	case SIG_LINK:
		ext_add_link(proc_ext_get(p), m->from);
		return true;
	case SIG_UNLINK:
		ext_del_link(p->ext, m->from);
		return true;
	case SIG_MONITOR: {
		proc_ext *x = proc_ext_get(p);
		mon_add(x, MON_IN, *(uint64_t *)rt_msg_data(m), m->from);
		return true;
	}
	case SIG_DEMONITOR:
		if (p->ext)
			mon_del(p->ext->mons_in, &p->ext->nin, mon_idx(p->ext, MON_IN),
			        *(uint64_t *)rt_msg_data(m), NULL, NULL);
		return true;
	case SIG_EXIT_LINK:
	case SIG_EXIT: {
		rt_exit_info *e = rt_msg_data(m);
		if (m->tag == SIG_EXIT_LINK && !ext_del_link(p->ext, e->pid))
			return true; /* unlinked meanwhile: the signal is void */
		if (m->tag == SIG_EXIT && strcmp(e->reason, "kill") == 0) {
			proc_exit(s, p, REASON_KILLED, false, false);
			return false;
		}
		if (p->flags & PF_TRAP_EXIT) {
			/* The signal becomes the message the process sees. */
			m->tag = RT_MSG_EXIT;
			rc = p->beh->handle(p->state, m);
			break;
		}
		if (strcmp(e->reason, REASON_NORMAL) == 0)
			return true;
		char *r = rt_xstrdup(e->reason);
		proc_exit(s, p, r, true, false);
		return false;
	}
	case RT_MSG_DOWN: {
		rt_down_info *d = rt_msg_data(m);
		rt_timer kill = 0;
		if (!p->ext || !mon_del(p->ext->mons_out, &p->ext->nout, mon_idx(p->ext, MON_OUT),
		                        d->ref, NULL, &kill))
			return true; /* demonitored: drop */
		if (kill)            /* rt_shutdown_child: gone before its timeout */
			rt_cancel_timer(kill);
		rc = p->beh->handle(p->state, m);
		break;
	}
	case SIG_TIMER:
		timer_deliver(p, m);
		return !(p->flags & PF_EXITING);
	case SIG_IO:
		io_deliver(p, m);
		return !(p->flags & PF_EXITING);
	default:
		rc = p->beh->handle(p->state, m);
		break;
	}
	if (rc == RT_OK)
		return true;
	if (rc == RT_STOP) {
		proc_exit(s, p, NULL, false, false);
		return false;
	}
	if (!p->reason)
		set_reason(p, REASON_HANDLER, false);
	proc_exit(s, p, NULL, false, true);
	return false;
}

/* Exit requested from inside a delivery helper (timer.c, io.c): the handler
 * returned rc for the message it was given. */
void
proc_after_handle(sched *s, rt_proc *p, int rc)
{
	if (rc == RT_OK)
		return;
	if (rc == RT_STOP) {
		proc_exit(s, p, NULL, false, false);
		return;
	}
	if (!p->reason)
		set_reason(p, REASON_HANDLER, false);
	proc_exit(s, p, NULL, false, true);
}

/* Runs p for one turn on s: init if new, then up to `budget` messages. */
void
proc_run(sched *s, rt_proc *p)
{
	s->current = p;
	s->yield_req = false;
	if (!(p->flags & PF_STARTED)) {
		p->flags |= PF_STARTED;
		if (p->beh->init) {
			rt_msg *stub = p->mb_tail;
			int rc = p->beh->init(p->state, rt_msg_data(stub), stub->size);
			if (rc != RT_OK) {
				if (rc == RT_STOP)
					proc_exit(s, p, NULL, false, false);
				else {
					if (!p->reason)
						set_reason(p, "init failed", false);
					proc_exit(s, p, NULL, false, true);
				}
				return;
			}
		}
	}
	int budget = rt_g.budget;
	while (budget > 0) {
		rt_msg *m = mbox_pop(p);
		if (!m)
			break;
		budget--;
		if (!dispatch(s, p, m))
			return;
		if (s->yield_req) {
			s->yield_req = false;
			budget = 0;
		}
	}
	if (p->beh->flush)
		p->beh->flush(p->state);
	if (p->flags & PF_EXITING)
		return;
	s->current = NULL;
	if (budget == 0 || !mbox_markempty(p))
		sched_make_runnable(p);
}

/* Adds a link on p's side only (the other side already has it). */
void
proc_add_link(rt_proc *p, rt_pid pid)
{
	ext_add_link(proc_ext_get(p), pid);
}
