/*
 * Timers: rt_send_after / rt_cancel_timer on the libev loop of the scheduler
 * where the timer was set (ev_timer: a 4-ary heap, so a million pending
 * timers cost O(log n) each).
 *
 * A timer record is owned jointly (refcount) by its owner process's list and
 * by the loop (until it fires or is stopped), then by the SIG_TIMER message
 * that carries it to the owner.  When delivered, the owner unlinks it and
 * hands the user's message to its handler (or forwards it to another
 * destination).  state moves PENDING -> FIRED (loop) or PENDING -> CANCELLED
 * (owner) exactly once; a cancel that loses to FIRED unlinks the record so the
 * in-flight message is dropped on arrival: after rt_cancel_timer returns
 * true, the message is never delivered.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

enum { T_PENDING, T_FIRED, T_CANCELLED };

typedef struct timer_rec {
	rt_msg hdr; /* SIG_TIMER message header; must stay first */
	ev_timer w;
	rt_timer id;
	rt_pid owner;
	rt_pid dest;
	rt_msg *user;
	sched *s;
	_Atomic int state;
	_Atomic int refs;
	bool linked; /* on the owner's list (owner only) */
	struct timer_rec *prev, *next;
} timer_rec;

static void
unref(timer_rec *t)
{
	if (atomic_fetch_sub(&t->refs, 1) == 1) {
		if (t->user)
			msg_free(t->user);
		free(t);
	}
}

static void
unlink_owner(rt_proc *p, timer_rec *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		p->ext->timers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	t->linked = false;
	ht_free(&rt_g.timers, t->id);
}

static void
fire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	timer_rec *t = w->data;
	int exp = T_PENDING;
	if (atomic_compare_exchange_strong(&t->state, &exp, T_FIRED))
		rt_send_msg(t->owner, &t->hdr); /* the loop's reference moves to the message */
	else
		unref(t); /* cancelled from another thread before the stop command ran */
}

/* Runs on the timer's loop: stops a timer cancelled from another thread. */
static void
stop_cmd(sched *s, void *arg)
{
	timer_rec *t = arg;
	if (ev_is_active(&t->w)) {
		ev_timer_stop(s->loop, &t->w);
		unref(t); /* the loop's reference */
	}
	unref(t); /* the command's reference */
}

rt_timer
rt_send_after(uint64_t ms, rt_pid to, uint32_t tag, const void *data, size_t size)
{
	sched *s = rt_cur;
	if (!s || !s->current) {
		rt_log_error("rt_send_after called outside a process");
		return 0;
	}
	rt_proc *p = s->current;
	timer_rec *t = rt_xcalloc(1, sizeof(*t));
	t->hdr.tag = SIG_TIMER;
	t->user = rt_msg_alloc(tag, size);
	if (size)
		memcpy(rt_msg_data(t->user), data, size);
	t->user->from = p->pid;
	t->owner = p->pid;
	t->dest = to;
	t->s = s;
	atomic_init(&t->state, T_PENDING);
	atomic_init(&t->refs, 2);
	t->id = ht_alloc(&rt_g.timers, t);
	if (!t->id) {
		msg_free(t->user);
		free(t);
		rt_log_error("timer table full");
		return 0;
	}
	proc_ext *x = proc_ext_get(p);
	t->next = x->timers;
	if (x->timers)
		x->timers->prev = t;
	x->timers = t;
	t->linked = true;
	ev_now_update(s->loop);
	ev_timer_init(&t->w, fire_cb, (ev_tstamp)ms / 1000.0, 0.);
	t->w.data = t;
	ev_timer_start(s->loop, &t->w);
	return t->id;
}

/* Cancels a linked timer of p (p's context, or rt_shutdown). */
static void
cancel(rt_proc *p, timer_rec *t)
{
	unlink_owner(p, t);
	int exp = T_PENDING;
	if (atomic_compare_exchange_strong(&t->state, &exp, T_CANCELLED)) {
		if (t->s == rt_cur || atomic_load(&rt_g.stopping)) {
			ev_timer_stop(t->s->loop, &t->w);
			unref(t);
		} else {
			atomic_fetch_add(&t->refs, 1);
			sched_post(t->s, stop_cmd, t);
		}
	}
	/* FIRED: the message is on its way to p and is dropped on arrival,
	 * since the record is no longer linked. */
	unref(t); /* the owner's reference */
}

bool
rt_cancel_timer(rt_timer id)
{
	sched *s = rt_cur;
	if (!s || !s->current || !id)
		return false;
	timer_rec *t = ht_get_checked(&rt_g.timers, id);
	if (!t || t->owner != s->current->pid || !t->linked)
		return false;
	cancel(s->current, t);
	return true;
}

void
timer_proc_exit(rt_proc *p)
{
	while (p->ext && p->ext->timers)
		cancel(p, p->ext->timers);
}

void
timer_deliver(rt_proc *p, rt_msg *m)
{
	timer_rec *t = (timer_rec *)m;
	if (!t->linked)
		return; /* cancelled after it fired */
	unlink_owner(p, t);
	unref(t); /* the owner's; the message keeps the record until it is freed */
	if (t->user->tag == SIG_KILL) {
		proc_kill_timer(p, rt_msg_data(t->user));
		return;
	}
	if (t->dest != p->pid) {
		rt_msg *u = t->user;
		t->user = NULL;
		rt_send_msg(t->dest, u);
		return;
	}
	int rc = p->beh->handle(p->state, t->user);
	proc_after_handle(rt_cur, p, rc);
}

void
timer_msg_free(rt_msg *m)
{
	unref((timer_rec *)m);
}

uint64_t
rt_timer_count(void)
{
	return ht_live(&rt_g.timers);
}
