/*
 * rt_wait_exit: a thread outside the schedulers (the main thread stopping
 * the node) waits for a process's exit without polling.  A short-lived
 * waiter process monitors the target and, on its DOWN, wakes the caller
 * through a condition variable (CLOCK_MONOTONIC deadlines).
 *
 * Ownership: struct waiter is shared by the calling thread and the waiter
 * process (refcount, 2 at start); `done` is guarded by `lock`.  The caller
 * that times out kills the waiter, whose terminate drops its reference.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/internal.h"

typedef struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done; /* the target is gone (under lock) */
	_Atomic int refs;
} waiter;

typedef struct wait_arg {
	rt_pid target;
	waiter *w;
} wait_arg;

typedef struct wait_state {
	waiter *w;
} wait_state;

static void
waiter_release(waiter *w)
{
	if (atomic_fetch_sub(&w->refs, 1) == 1) {
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->lock);
		free(w);
	}
}

static int
wait_init(void *state, const void *arg, size_t size)
{
	wait_state *st = state;
	const wait_arg *a = arg;
	(void)size;
	st->w = a->w;
	rt_monitor(a->target);
	return RT_OK;
}

static int
wait_handle(void *state, rt_msg *m)
{
	wait_state *st = state;
	if (m->tag != RT_MSG_DOWN)
		return RT_OK;
	pthread_mutex_lock(&st->w->lock);
	st->w->done = true;
	pthread_cond_signal(&st->w->cond);
	pthread_mutex_unlock(&st->w->lock);
	return rt_stop("normal");
}

static void
wait_terminate(void *state, const char *reason)
{
	wait_state *st = state;
	(void)reason;
	if (st->w)
		waiter_release(st->w);
}

static const rt_behaviour wait_behaviour = {
    .name = "exit_waiter",
    .state_size = sizeof(wait_state),
    .init = wait_init,
    .handle = wait_handle,
    .terminate = wait_terminate,
};

int
rt_wait_exit(rt_pid pid, uint32_t timeout_ms)
{
	if (rt_cur) {
		rt_log_error("rt_wait_exit called from a scheduler thread");
		return -1;
	}
	if (!rt_alive(pid))
		return 0;
	waiter *w = rt_xcalloc(1, sizeof(*w));
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&w->refs, 2);
	wait_arg a = {.target = pid, .w = w};
	rt_pid wp = rt_spawn(&wait_behaviour, &a, sizeof(a));
	if (!wp) {
		waiter_release(w);
		waiter_release(w);
		return rt_alive(pid) ? -1 : 0;
	}
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->lock);
	while (!w->done) {
		if (timeout_ms == RT_INFINITY)
			pthread_cond_wait(&w->cond, &w->lock);
		else if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT)
			break;
	}
	bool done = w->done;
	pthread_mutex_unlock(&w->lock);
	if (!done)
		rt_exit(wp, "kill");
	waiter_release(w);
	return done ? 0 : -1;
}
