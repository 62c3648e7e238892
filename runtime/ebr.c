/*
 * Epoch-based reclamation of process structures.
 *
 * A sender looks a pid up in the table and pushes onto the process's mailbox
 * without taking a reference; the process may exit meanwhile.  So an exited
 * process is retired, not freed: it is freed once the global epoch has moved
 * two steps past its retirement, which needs every online thread to have
 * passed a quiescent point (a point where it holds no process pointer) in
 * between.  Scheduler threads pass one between process runs and go offline
 * while blocked in the loop; other threads are online only inside one
 * rt_send/rt_spawn call.
 *
 * Invariant: a thread online at epoch L keeps the global epoch ≤ L + 1; an
 * object retired at R ≥ L is freed at ≥ R + 2, so never under a reader.
 */
#include <stdlib.h>

#include "runtime/internal.h"

/* Foreign (non-scheduler) threads get a record on first use; it lives until
 * rt_shutdown.  Thread-local by design. */
static __thread ebr_thread *tl_foreign;

void
ebr_register(ebr_thread *t)
{
	atomic_store(&t->epoch, EBR_OFFLINE);
	t->ret_head = t->ret_tail = NULL;
	t->nretired = 0;
	pthread_mutex_lock(&rt_g.ebr_lock);
	t->next = atomic_load(&rt_g.ebr_threads);
	atomic_store(&rt_g.ebr_threads, t);
	pthread_mutex_unlock(&rt_g.ebr_lock);
}

void
ebr_online(ebr_thread *t)
{
	/* Announce an epoch that is still current after the announcement is
	 * visible, so an advance that missed us cannot run two steps ahead. */
	uint64_t e;
	do {
		e = atomic_load(&rt_g.global_epoch);
		atomic_store(&t->epoch, e);
	} while (atomic_load(&rt_g.global_epoch) != e);
}

void
ebr_offline(ebr_thread *t)
{
	atomic_store_explicit(&t->epoch, EBR_OFFLINE, memory_order_release);
}

static void
try_advance(void)
{
	uint64_t e = atomic_load(&rt_g.global_epoch);
	for (ebr_thread *t = atomic_load(&rt_g.ebr_threads); t; t = t->next) {
		uint64_t l = atomic_load(&t->epoch);
		if (l != EBR_OFFLINE && l != e)
			return;
	}
	atomic_compare_exchange_strong(&rt_g.global_epoch, &e, e + 1);
}

static void
free_ready(ebr_thread *t, uint64_t global)
{
	rt_proc *p;
	while ((p = t->ret_head) && p->retire_epoch + 2 <= global) {
		t->ret_head = p->rq_next;
		if (!t->ret_head)
			t->ret_tail = NULL;
		t->nretired--;
		proc_free_final(p);
	}
}

void
ebr_quiescent(ebr_thread *t)
{
	uint64_t e = atomic_load(&rt_g.global_epoch);
	if (atomic_load_explicit(&t->epoch, memory_order_relaxed) != e)
		atomic_store(&t->epoch, e);
	/* Advancing reads every thread's announcement, cache lines the others
	 * keep writing: do it once per batch of retirements, or every 64
	 * quiescent points so that a few retired processes are not kept long. */
	if (t->ret_head && (t->nretired >= EBR_BATCH || (++t->ticks & 63) == 0)) {
		try_advance();
		free_ready(t, atomic_load(&rt_g.global_epoch));
	}
}

void
ebr_retire(ebr_thread *t, rt_proc *p)
{
	p->retire_epoch = atomic_load(&rt_g.global_epoch);
	p->rq_next = NULL;
	if (t->ret_tail)
		t->ret_tail->rq_next = p;
	else
		t->ret_head = p;
	t->ret_tail = p;
	t->nretired++;
}

/* Frees everything retired regardless of epochs (rt_shutdown, all threads joined). */
void
ebr_drain_all(ebr_thread *t)
{
	free_ready(t, UINT64_MAX);
}

void
ebr_foreign_enter(void)
{
	if (!tl_foreign) {
		tl_foreign = rt_xcalloc(1, sizeof(*tl_foreign));
		ebr_register(tl_foreign);
	}
	ebr_online(tl_foreign);
}

void
ebr_foreign_leave(void)
{
	ebr_offline(tl_foreign);
}

/* Frees the records of foreign threads (rt_shutdown). */
void
ebr_free_foreign(void)
{
	pthread_mutex_lock(&rt_g.ebr_lock);
	ebr_thread *t = atomic_load(&rt_g.ebr_threads);
	while (t) {
		ebr_thread *n = t->next;
		bool is_sched = false;
		for (int i = 0; i < rt_g.nsched; i++)
			is_sched |= t == &rt_g.scheds[i].ebr;
		if (!is_sched) /* scheduler records live in rt_g.scheds */
			free(t);
		t = n;
	}
	atomic_store(&rt_g.ebr_threads, NULL);
	pthread_mutex_unlock(&rt_g.ebr_lock);
	tl_foreign = NULL;
}
