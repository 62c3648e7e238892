/*
 * Schedulers: one OS thread per scheduler, each with a libev loop.
 *
 * A scheduler runs processes from its local run queue (owner only, no
 * atomics), fed by its own sends and by an inject queue that other threads
 * push onto (mutex; the pusher wakes the loop through ev_async when the
 * scheduler sleeps).  Each turn gives a process at most `budget` messages.
 * Every 64 turns, and whenever the queue runs dry, the loop is polled for I/O
 * and timers; with nothing to run the thread blocks in the loop (epoll), so
 * an idle node uses no CPU.
 *
 * Balancing is by sharing: a scheduler with two or more processes waiting
 * while another sleeps hands half of its movable processes to the sleeper.
 * Processes that own fds are pinned to the scheduler whose loop watches them
 * and always run there.
 *
 * Sharing happens between turns, so a handler that runs for a long time (a
 * broadcast to 100,000 sockets, a blocking call) would hold up every process
 * queued behind it.  A sleeping scheduler therefore wakes every RESCUE_MS
 * while a peer is awake, and when a peer with work queued is still in the
 * same turn as at the previous tick, takes its movable processes ("rescue").  The
 * owner's turns stay free of locked instructions: processes made runnable
 * during a turn go to a turn queue, and the handshake with a rescuer is an
 * asymmetric Dekker: the owner publishes the end of its turn with a plain
 * store and then reads steal_req; the rescuer writes steal_req and issues
 * membarrier(2), which puts a full barrier into the owner's instruction
 * stream, before it reads the turn counter.  One of the two sees the other.
 */
#include <linux/membarrier.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "runtime/internal.h"

#define SHARE_MAX 32 /* processes handed over per share_work */
#define RESCUE_MS 2  /* a turn seen at two ticks this far apart is stuck */

runtime rt_g;
__thread sched *rt_cur;

/* ------------------------------------------------------------------ time */

int64_t
rt_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
rt_now_ms(void)
{
	return rt_now_ns() / 1000000;
}

int64_t
rt_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Unique references (monitors): scheduler id in the top bits, a per-thread
 * counter below; other threads draw from a shared counter. */
uint64_t
sched_new_ref(void)
{
	sched *s = rt_cur;
	if (s)
		return ((uint64_t)(s->id + 1) << 48) | ++s->ref_counter;
	return atomic_fetch_add(&rt_g.foreign_refs, 1) + 1;
}

/* ------------------------------------------------------------------ queues */

/* The queue counts are written by one thread at a time (the owner, or a
 * rescuer that holds the queue) and read by any: relaxed loads and stores,
 * never a locked add. */
static inline size_t
cnt_get(_Atomic size_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static inline void
cnt_add(_Atomic size_t *c, size_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

static inline void
cnt_sub(_Atomic size_t *c, size_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
	                      memory_order_relaxed);
}

/* Appends p to the run queue chain *head..*tail. */
static inline void
chain_push(rt_proc **head, rt_proc **tail, rt_proc *p)
{
	p->rq_next = NULL;
	if (*tail)
		(*tail)->rq_next = p;
	else
		*head = p;
	*tail = p;
}

static void
lq_push(sched *s, rt_proc *p)
{
	chain_push(&s->lq_head, &s->lq_tail, p);
	cnt_add(&s->lq_len, 1);
	if (p->home < 0)
		cnt_add(&s->lq_movable, 1);
}

static rt_proc *
lq_pop(sched *s)
{
	rt_proc *p = s->lq_head;
	if (p) {
		s->lq_head = p->rq_next;
		if (!s->lq_head)
			s->lq_tail = NULL;
		cnt_sub(&s->lq_len, 1);
		if (p->home < 0)
			cnt_sub(&s->lq_movable, 1);
	}
	return p;
}

/* Appends the chain head..tail (n processes, `movable` of them unpinned) to
 * s's local queue. */
static void
lq_append(sched *s, rt_proc *head, rt_proc *tail, size_t n, size_t movable)
{
	tail->rq_next = NULL;
	if (s->lq_tail)
		s->lq_tail->rq_next = head;
	else
		s->lq_head = head;
	s->lq_tail = tail;
	cnt_add(&s->lq_len, n);
	cnt_add(&s->lq_movable, movable);
}

/* Moves the unpinned processes of the list *head..*tail (at most `max`) to a
 * new chain; returns how many. */
static size_t
take_movable(rt_proc **head, rt_proc **tail, size_t max, size_t walk_max, rt_proc **out_head,
             rt_proc **out_tail)
{
	size_t n = 0, walked = 0;
	rt_proc *prev = NULL, *p = *head;
	*out_head = *out_tail = NULL;
	while (p && n < max && walked++ < walk_max) {
		rt_proc *next = p->rq_next;
		if (p->home < 0) {
			if (prev)
				prev->rq_next = next;
			else
				*head = next;
			if (*tail == p)
				*tail = prev;
			p->rq_next = NULL;
			if (*out_tail)
				(*out_tail)->rq_next = p;
			else
				*out_head = p;
			*out_tail = p;
			n++;
		} else {
			prev = p;
		}
		p = next;
	}
	return n;
}

/* Appends a chain of processes to s's inject queue and wakes s if asleep. */
static void
inject(sched *s, rt_proc *head, rt_proc *tail, size_t n, size_t movable)
{
	tail->rq_next = NULL;
	pthread_mutex_lock(&s->inject_lock);
	if (s->inj_tail)
		s->inj_tail->rq_next = head;
	else
		s->inj_head = head;
	s->inj_tail = tail;
	atomic_fetch_add(&s->inj_len, n);
	s->inj_movable += movable;
	pthread_mutex_unlock(&s->inject_lock);
	/* seq_cst pairs with the sleeper's store of `sleeping` before its final
	 * check of inj_len: one of the two sees the other. */
	if (atomic_load(&s->sleeping))
		ev_async_send(s->loop, &s->wake);
}

static void
drain_inject(sched *s)
{
	pthread_mutex_lock(&s->inject_lock);
	rt_proc *h = s->inj_head, *t = s->inj_tail;
	size_t n = atomic_exchange(&s->inj_len, 0);
	size_t movable = s->inj_movable;
	s->inj_movable = 0;
	s->inj_head = s->inj_tail = NULL;
	pthread_mutex_unlock(&s->inject_lock);
	if (!h)
		return;
	lq_append(s, h, t, n, movable);
}

/* Hands the batched remote wake-ups to their schedulers. */
static void
flush_pend(sched *s)
{
	s->has_pend = false;
	for (int i = 0; i < rt_g.nsched; i++) {
		struct pend *pd = &s->pend[i];
		if (pd->n) {
			inject(&rt_g.scheds[i], pd->head, pd->tail, pd->n, 0); /* all pinned */
			pd->head = pd->tail = NULL;
			pd->n = 0;
		}
	}
}

void
sched_make_runnable(rt_proc *p)
{
	sched *s = rt_cur;
	if (s && (p->home < 0 || p->home == s->id)) {
		if (s->in_turn) { /* lq may be a rescuer's until the turn ends */
			chain_push(&s->tq_head, &s->tq_tail, p);
			s->tq_len++;
			s->tq_movable += p->home < 0;
		} else {
			lq_push(s, p);
		}
		return;
	}
	if (s && !atomic_load_explicit(&rt_g.stopping, memory_order_relaxed)) {
		/* A pinned process of another scheduler: batch it (a broadcast
		 * wakes thousands of them in one turn). */
		struct pend *pd = &s->pend[p->home];
		chain_push(&pd->head, &pd->tail, p);
		pd->n++;
		s->has_pend = true;
		return;
	}
	sched *t;
	if (p->home >= 0)
		t = &rt_g.scheds[p->home];
	else
		t = &rt_g.scheds[atomic_fetch_add_explicit(&rt_g.rr, 1, memory_order_relaxed) %
		                 (uint32_t)rt_g.nsched];
	inject(t, p, p, 1, p->home < 0);
}

/* Hands half of s's movable waiting processes to a sleeping scheduler. */
static void
share_work(sched *s)
{
	if (cnt_get(&s->lq_movable) < 2 ||
	    atomic_load_explicit(&rt_g.sleepers, memory_order_relaxed) == 0)
		return;
	sched *t = NULL;
	for (int i = 1; i < rt_g.nsched && !t; i++) {
		sched *c = &rt_g.scheds[(s->id + i) % rt_g.nsched];
		if (atomic_load_explicit(&c->sleeping, memory_order_relaxed))
			t = c;
	}
	if (!t)
		return;
	/* At most SHARE_MAX: the walk below reads the header of every process it
	 * passes (a cache miss each, often on a line another core is writing). */
	size_t want = cnt_get(&s->lq_movable) / 2;
	if (want > SHARE_MAX)
		want = SHARE_MAX;
	/* The walk is bounded too: pinned processes (connections) may fill the
	 * queue and are skipped. */
	rt_proc *head, *tail;
	size_t n = take_movable(&s->lq_head, &s->lq_tail, want, 4 * SHARE_MAX, &head, &tail);
	if (n) {
		cnt_sub(&s->lq_len, n);
		cnt_sub(&s->lq_movable, n);
		inject(t, head, tail, n, n);
	}
}

/* ------------------------------------------------------------------ turns */

static inline void
turn_begin(sched *s)
{
	/* release: a rescuer that reads this odd value also sees lq as the owner
	 * left it. */
	atomic_store_explicit(&s->turn, atomic_load_explicit(&s->turn, memory_order_relaxed) + 1,
	                      memory_order_release);
	s->in_turn = true;
}

/* Ends the turn: waits out a rescuer that may be walking lq, then adds the
 * processes made runnable during the turn.  Also called after a crash. */
static void
turn_end(sched *s)
{
	uint64_t t = atomic_load_explicit(&s->turn, memory_order_relaxed);
	s->in_turn = false;
	if (t & 1) {
		atomic_store_explicit(&s->turn, t + 1, memory_order_relaxed);
		/* Only a compiler barrier: the rescuer's membarrier supplies the
		 * CPU one (see the top of this file). */
		atomic_signal_fence(memory_order_seq_cst);
		if (atomic_load_explicit(&s->steal_req, memory_order_relaxed)) {
			pthread_mutex_lock(&s->lq_lock);
			atomic_store_explicit(&s->steal_req, 0, memory_order_relaxed);
			pthread_mutex_unlock(&s->lq_lock);
		}
	}
	if (s->tq_head) {
		lq_append(s, s->tq_head, s->tq_tail, s->tq_len, s->tq_movable);
		s->tq_head = s->tq_tail = NULL;
		s->tq_len = s->tq_movable = 0;
	}
}

/* Takes the movable processes of peer v, stuck in turn `t` (odd), onto s. */
static void
rescue_from(sched *s, sched *v, uint64_t t)
{
	rt_proc *head, *tail;
	size_t n = 0;
	pthread_mutex_lock(&v->inject_lock);
	if (v->inj_movable) {
		n = take_movable(&v->inj_head, &v->inj_tail, SIZE_MAX, SIZE_MAX, &head, &tail);
		v->inj_movable -= n;
		atomic_fetch_sub(&v->inj_len, n);
	}
	pthread_mutex_unlock(&v->inject_lock);
	if (n)
		lq_append(s, head, tail, n, n);
	if (!rt_g.membarrier || cnt_get(&v->lq_movable) == 0)
		return;
	pthread_mutex_lock(&v->lq_lock);
	atomic_store(&v->steal_req, 1);
	syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	/* acquire: pairs with turn_begin's release. */
	if (atomic_load_explicit(&v->turn, memory_order_acquire) == t) {
		n = take_movable(&v->lq_head, &v->lq_tail, SIZE_MAX, SIZE_MAX, &head, &tail);
		cnt_sub(&v->lq_len, n);
		cnt_sub(&v->lq_movable, n);
		if (n)
			lq_append(s, head, tail, n, n);
	}
	pthread_mutex_unlock(&v->lq_lock);
}

/* True when some peer is awake: it may be in a turn that never ends. */
static bool
peers_awake(sched *s)
{
	for (int i = 0; i < rt_g.nsched; i++) {
		sched *v = &rt_g.scheds[i];
		if (v != s && !atomic_load_explicit(&v->sleeping, memory_order_relaxed))
			return true;
	}
	return false;
}

static void
rescue_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	sched *s = ev_userdata(loop);
	for (int i = 0; i < rt_g.nsched; i++) {
		sched *v = &rt_g.scheds[i];
		if (v == s)
			continue;
		uint64_t t = atomic_load_explicit(&v->turn, memory_order_relaxed);
		if ((t & 1) && t == s->seen_turn[i] &&
		    (cnt_get(&v->lq_movable) ||
		     atomic_load_explicit(&v->inj_len, memory_order_relaxed)))
			rescue_from(s, v, t);
		s->seen_turn[i] = t;
	}
}

/* ------------------------------------------------------------------ commands */

void
sched_post(sched *s, void (*fn)(sched *, void *), void *arg)
{
	cmd *c = rt_xmalloc(sizeof(*c));
	c->fn = fn;
	c->arg = arg;
	pthread_mutex_lock(&s->inject_lock);
	c->next = s->cmds;
	s->cmds = c;
	atomic_fetch_add(&s->ncmds, 1);
	pthread_mutex_unlock(&s->inject_lock);
	ev_async_send(s->loop, &s->wake);
}

static void
run_cmds(sched *s)
{
	pthread_mutex_lock(&s->inject_lock);
	cmd *c = s->cmds;
	s->cmds = NULL;
	atomic_store(&s->ncmds, 0);
	pthread_mutex_unlock(&s->inject_lock);
	while (c) {
		cmd *n = c->next;
		c->fn(s, c->arg);
		free(c);
		c = n;
	}
}

/* ------------------------------------------------------------------ loop */

static void
wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

/* Around the blocking poll: no process pointers are held there. */
static void
loop_release_cb(struct ev_loop *loop)
{
	sched *s = ev_userdata(loop);
	ebr_offline(&s->ebr);
}

static void
loop_acquire_cb(struct ev_loop *loop)
{
	sched *s = ev_userdata(loop);
	ebr_online(&s->ebr);
}

/* s is awake: peers sleeping without their rescue tick start ticking (they
 * wake, see s awake, and sleep again with the tick), so that a turn of s
 * that never ends is still seen. */
static void
wake_deep_sleepers(sched *s)
{
	for (int i = 0; i < rt_g.nsched; i++) {
		sched *v = &rt_g.scheds[i];
		if (v != s && atomic_load(&v->deep) && atomic_exchange(&v->deep, 0))
			ev_async_send(v->loop, &v->wake);
	}
}

static void
idle(sched *s)
{
	atomic_store(&s->sleeping, 1);
	atomic_fetch_add(&rt_g.sleepers, 1);
	/* While a peer is awake, tick to see whether it is stuck (as Go's
	 * sysmon does); a node where every scheduler sleeps has no timer.  A
	 * deep sleeper (no tick) says so in `deep`, and a peer that wakes later
	 * wakes it: each of the two stores below is followed by a load of the
	 * other's (seq_cst), so one of the two sees the other. */
	bool tick = peers_awake(s);
	if (!tick) {
		atomic_store(&s->deep, 1);
		if (peers_awake(s)) {
			atomic_store(&s->deep, 0);
			tick = true;
		}
	}
	if (tick) {
		if (!ev_is_active(&s->rescue))
			ev_timer_again(s->loop, &s->rescue);
	} else if (ev_is_active(&s->rescue)) {
		ev_timer_stop(s->loop, &s->rescue);
	}
	if (atomic_load(&s->inj_len) == 0 && atomic_load(&s->ncmds) == 0 &&
	    cnt_get(&s->lq_len) == 0 && !atomic_load(&rt_g.stopping))
		ev_run(s->loop, EVRUN_ONCE);
	atomic_store(&s->deep, 0);
	atomic_fetch_sub(&rt_g.sleepers, 1);
	atomic_store(&s->sleeping, 0);
	s->woke = true;
}

static void
sched_loop(sched *s)
{
	while (!atomic_load_explicit(&rt_g.stopping, memory_order_relaxed)) {
		ebr_quiescent(&s->ebr);
		if (atomic_load_explicit(&s->ncmds, memory_order_relaxed))
			run_cmds(s);
		if (atomic_load_explicit(&s->inj_len, memory_order_relaxed))
			drain_inject(s);
		rt_proc *p = lq_pop(s);
		if (!p) {
			ev_run(s->loop, EVRUN_NOWAIT);
			if (s->has_pend) /* I/O callbacks may have made some runnable */
				flush_pend(s);
			if (cnt_get(&s->lq_len) == 0 && atomic_load(&s->inj_len) == 0)
				idle(s);
			continue;
		}
		if (s->woke) {
			/* Up from sleep with work (not a mere tick or a peer's poke,
			 * which would make two deep sleepers wake each other forever). */
			s->woke = false;
			wake_deep_sleepers(s);
		}
		turn_begin(s);
		proc_run(s, p);
		turn_end(s);
		if (s->has_pend)
			flush_pend(s);
		if ((++s->runs & 63) == 0)
			ev_run(s->loop, EVRUN_NOWAIT);
		share_work(s);
	}
}

static void *
sched_main(void *arg)
{
	sched *s = arg;
	rt_cur = s;
	char name[16];
	snprintf(name, sizeof(name), "phx-sched-%d", s->id);
	pthread_setname_np(pthread_self(), name);
	ebr_online(&s->ebr);
	/* A crashing process longjmps back here (rt_crash); sched_loop starts
	 * afresh, so no local of the interrupted call is reused. */
	if (setjmp(s->crash_jb) != 0) {
		if (s->current)
			proc_crashed(s, s->current);
		s->current = NULL;
		turn_end(s);
	}
	sched_loop(s);
	ebr_offline(&s->ebr);
	ht_thread_fini();
	rt_alloc_thread_fini();
	return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

int
rt_start(const rt_config *cfg)
{
	rt_config c = cfg ? *cfg : (rt_config){0};
	if (atomic_exchange(&rt_g.started, true))
		return -1;
	if (c.schedulers <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		c.schedulers = n > 0 ? (int)n : 1;
	}
	if (c.max_procs == 0)
		c.max_procs = 1u << 22;
	rt_g.nsched = c.schedulers;
	rt_g.budget = c.budget > 0 ? c.budget : 100;
	rt_log_set_level(c.log_level);
	atomic_store(&rt_g.stopping, false);
	atomic_store(&rt_g.global_epoch, 1);
	pthread_mutex_init(&rt_g.ebr_lock, NULL);
	/* Without membarrier (old kernel, seccomp) a stuck turn's inject queue
	 * is still rescued, its local queue is not. */
	rt_g.membarrier =
	    c.schedulers > 1 &&
	    syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
	if (ht_init(&rt_g.procs, c.max_procs) < 0 || ht_init(&rt_g.timers, c.max_procs) < 0)
		return -1;
	rt_g.scheds = calloc((size_t)c.schedulers, sizeof(sched));
	if (!rt_g.scheds)
		return -1;
	for (int i = 0; i < c.schedulers; i++) {
		sched *s = &rt_g.scheds[i];
		s->id = i;
		s->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
		if (!s->loop)
			return -1;
		ev_set_userdata(s->loop, s);
		s->pend = calloc((size_t)c.schedulers, sizeof(struct pend));
		if (!s->pend)
			return -1;
		ev_set_loop_release_cb(s->loop, loop_release_cb, loop_acquire_cb);
		ev_async_init(&s->wake, wake_cb);
		ev_async_start(s->loop, &s->wake);
		ev_timer_init(&s->rescue, rescue_cb, 0., RESCUE_MS / 1000.);
		s->seen_turn = calloc((size_t)c.schedulers, sizeof(uint64_t));
		if (!s->seen_turn)
			return -1;
		pthread_mutex_init(&s->inject_lock, NULL);
		pthread_mutex_init(&s->lq_lock, NULL);
		ebr_register(&s->ebr);
	}
	for (int i = 0; i < c.schedulers; i++)
		if (pthread_create(&rt_g.scheds[i].thread, NULL, sched_main, &rt_g.scheds[i]) != 0)
			return -1;
	return 0;
}

void
rt_shutdown(void)
{
	if (!atomic_load(&rt_g.started))
		return;
	atomic_store(&rt_g.stopping, true);
	for (int i = 0; i < rt_g.nsched; i++)
		ev_async_send(rt_g.scheds[i].loop, &rt_g.scheds[i].wake);
	for (int i = 0; i < rt_g.nsched; i++)
		pthread_join(rt_g.scheds[i].thread, NULL);
	/* Single-threaded from here: free what is left. */
	for (int i = 0; i < rt_g.nsched; i++) {
		sched *s = &rt_g.scheds[i];
		rt_cur = s;
		ebr_drain_all(&s->ebr);
		run_cmds(s);
	}
	rt_cur = &rt_g.scheds[0];
	proc_free_all();
	for (int i = 0; i < rt_g.nsched; i++) {
		rt_cur = &rt_g.scheds[i];
		ebr_drain_all(&rt_g.scheds[i].ebr);
		run_cmds(&rt_g.scheds[i]);
	}
	rt_cur = NULL;
	registry_fini();
	for (int i = 0; i < rt_g.nsched; i++) {
		sched *s = &rt_g.scheds[i];
		ev_loop_destroy(s->loop);
		pthread_mutex_destroy(&s->inject_lock);
		pthread_mutex_destroy(&s->lq_lock);
		free(s->pend);
		free(s->seen_turn);
	}
	ebr_free_foreign();
	free(rt_g.scheds);
	rt_g.scheds = NULL;
	ht_fini(&rt_g.procs);
	ht_fini(&rt_g.timers);
	ht_thread_fini();
	rt_alloc_thread_fini();
	pthread_mutex_destroy(&rt_g.ebr_lock);
	atomic_store(&rt_g.started, false);
}

int
rt_schedulers(void)
{
	return rt_g.nsched;
}

int
rt_scheduler_id(void)
{
	sched *s = rt_cur;
	return s ? s->id : -1;
}

int
rt_pin(void)
{
	sched *s = rt_cur;
	if (!s || !s->current)
		return -1;
	s->current->home = (int16_t)s->id;
	return s->id;
}

struct ev_loop *
rt_loop(void)
{
	sched *s = rt_cur;
	return s ? s->loop : NULL;
}
