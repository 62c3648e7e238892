/*
 * Test support for runtime tests: a "probe" process that records every
 * message it receives into an inbox that the test's main thread can wait on,
 * and obeys a few commands (link, monitor, crash, stop, send...).
 */
#ifndef test_probe_h
#define test_probe_h

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

enum {
	P_LINK = 1000, /* payload: rt_pid */
	P_UNLINK,      /* rt_pid */
	P_MONITOR,     /* rt_pid; records P_MONITOR_REF with the ref */
	P_MONITOR_REF,
	P_DEMONITOR, /* uint64 ref */
	P_CRASH,     /* crash via rt_crash */
	P_ASSERT,    /* RT_ASSERT(0) */
	P_ERROR,     /* return RT_ERROR */
	P_STOP,      /* payload: reason string */
	P_SEND,      /* payload: probe_send */
	P_TRAP,      /* payload: bool */
	P_TIMER,     /* payload: probe_timer */
	P_TIMER_REF, /* recorded: rt_timer */
	P_CANCEL,    /* payload: rt_timer; records P_CANCELLED with bool */
	P_CANCELLED,
	P_REGISTER,   /* payload: name */
	P_REGISTERED, /* recorded: int rc */
	P_SPAWN_LINK, /* spawn a linked probe; records P_SPAWNED with its pid */
	P_SPAWNED,
	P_EXIT_SIG, /* payload: probe_exit: rt_exit(pid, reason) */
	P_USER = 2000,
};

typedef struct probe_send {
	rt_pid to;
	uint32_t tag;
	uint32_t count;
} probe_send;

typedef struct probe_timer {
	uint64_t ms;
	rt_pid to;
	uint32_t tag;
	uint32_t value;
} probe_timer;

typedef struct probe_exit {
	rt_pid pid;
	char reason[32];
} probe_exit;

typedef struct probe_arg {
	int id; /* recorded in every item */
	bool trap_exit;
	bool fail_init;
} probe_arg;

typedef struct rec {
	int id; /* the probe's id */
	rt_pid self;
	uint32_t tag;
	rt_pid from;
	uint32_t size;
	_Alignas(16) unsigned char data[128];
} rec;

/* The inbox shared by all probes of a test (each test runs in its own process). */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	rec *items;
	size_t n, cap;
	int terminated;
} inbox = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0};

static void
inbox_put(int id, uint32_t tag, rt_pid from, const void *data, size_t size)
{
	pthread_mutex_lock(&inbox.mu);
	if (inbox.n == inbox.cap) {
		inbox.cap = inbox.cap ? inbox.cap * 2 : 64;
		inbox.items = realloc(inbox.items, inbox.cap * sizeof(rec));
	}
	rec *r = &inbox.items[inbox.n++];
	memset(r, 0, sizeof(*r));
	r->id = id;
	r->self = rt_self();
	r->tag = tag;
	r->from = from;
	r->size = (uint32_t)(size < sizeof(r->data) ? size : sizeof(r->data));
	if (size)
		memcpy(r->data, data, r->size);
	pthread_cond_broadcast(&inbox.cv);
	pthread_mutex_unlock(&inbox.mu);
}

/* Waits up to ms for an item with this tag (and probe id, unless id < 0) that
 * was not taken yet; removes and returns it (copy).  Returns 0 or -1. */
static int
inbox_take(int id, uint32_t tag, int ms, rec *out)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (long)(ms % 1000) * 1000000;
	if (dl.tv_nsec >= 1000000000) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&inbox.mu);
	for (;;) {
		for (size_t i = 0; i < inbox.n; i++) {
			rec *r = &inbox.items[i];
			if (r->tag == tag && (id < 0 || r->id == id)) {
				if (out)
					*out = *r;
				memmove(r, r + 1, (inbox.n - i - 1) * sizeof(rec));
				inbox.n--;
				pthread_mutex_unlock(&inbox.mu);
				return 0;
			}
		}
		if (pthread_cond_timedwait(&inbox.cv, &inbox.mu, &dl) != 0) {
			pthread_mutex_unlock(&inbox.mu);
			return -1;
		}
	}
}

static size_t
inbox_count(int id, uint32_t tag)
{
	size_t n = 0;
	pthread_mutex_lock(&inbox.mu);
	for (size_t i = 0; i < inbox.n; i++)
		if (inbox.items[i].tag == tag && (id < 0 || inbox.items[i].id == id))
			n++;
	pthread_mutex_unlock(&inbox.mu);
	return n;
}

typedef struct probe_state {
	int id;
} probe_state;

#define P_TERMINATED 3000
#define P_STARTED 3001

static int
probe_init(void *state, const void *arg, size_t size)
{
	probe_state *s = state;
	const probe_arg *a = arg;
	if (size >= sizeof(*a)) {
		s->id = a->id;
		if (a->trap_exit)
			rt_trap_exit(true);
		if (a->fail_init)
			return RT_ERROR;
	}
	inbox_put(s->id, P_STARTED, RT_NOPID, NULL, 0);
	return RT_OK;
}

static int
probe_handle(void *state, rt_msg *m)
{
	probe_state *s = state;
	void *d = rt_msg_data(m);
	switch (m->tag) {
	case P_LINK:
		rt_link(*(rt_pid *)d);
		return RT_OK;
	case P_UNLINK:
		rt_unlink(*(rt_pid *)d);
		return RT_OK;
	case P_MONITOR: {
		uint64_t ref = rt_monitor(*(rt_pid *)d);
		inbox_put(s->id, P_MONITOR_REF, m->from, &ref, sizeof(ref));
		return RT_OK;
	}
	case P_DEMONITOR:
		rt_demonitor(*(uint64_t *)d);
		return RT_OK;
	case P_CRASH:
		rt_crash("boom %d", s->id);
	case P_ASSERT:
		RT_ASSERT(s->id < 0);
		return RT_OK;
	case P_ERROR:
		return RT_ERROR;
	case P_STOP:
		return rt_stop((const char *)d);
	case P_SEND: {
		probe_send *ps = d;
		for (uint32_t i = 0; i < ps->count; i++)
			rt_send(ps->to, ps->tag, &i, sizeof(i));
		return RT_OK;
	}
	case P_TRAP:
		rt_trap_exit(*(bool *)d);
		return RT_OK;
	case P_TIMER: {
		probe_timer *pt = d;
		rt_timer t = rt_send_after(pt->ms, pt->to ? pt->to : rt_self(), pt->tag, &pt->value,
		                           sizeof(pt->value));
		inbox_put(s->id, P_TIMER_REF, m->from, &t, sizeof(t));
		return RT_OK;
	}
	case P_CANCEL: {
		bool ok = rt_cancel_timer(*(rt_timer *)d);
		inbox_put(s->id, P_CANCELLED, m->from, &ok, sizeof(ok));
		return RT_OK;
	}
	case P_REGISTER: {
		int rc = rt_register((const char *)d);
		inbox_put(s->id, P_REGISTERED, m->from, &rc, sizeof(rc));
		return RT_OK;
	}
	case P_EXIT_SIG: {
		probe_exit *pe = d;
		rt_exit(pe->pid, pe->reason);
		return RT_OK;
	}
	default:
		inbox_put(s->id, m->tag, m->from, d, m->size);
		return RT_OK;
	}
}

static void
probe_terminate(void *state, const char *reason)
{
	probe_state *s = state;
	inbox_put(s->id, P_TERMINATED, RT_NOPID, reason, strlen(reason) + 1);
}

static const rt_behaviour probe_behaviour = {
    .name = "probe",
    .state_size = sizeof(probe_state),
    .init = probe_init,
    .handle = probe_handle,
    .terminate = probe_terminate,
};

static rt_pid
probe_spawn(int id, bool trap)
{
	probe_arg a = {.id = id, .trap_exit = trap};
	rt_pid p = rt_spawn(&probe_behaviour, &a, sizeof(a));
	inbox_take(id, P_STARTED, 5000, NULL);
	return p;
}

static void
probe_cmd(rt_pid p, uint32_t tag, const void *data, size_t size)
{
	rt_send(p, tag, data, size);
}

#endif
