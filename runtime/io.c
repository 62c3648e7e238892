/*
 * File descriptors owned by processes.  The watcher lives on the loop of the
 * scheduler the owner is pinned to, so only that thread touches it.
 * Readiness is level-triggered and reported as one SIG_IO message at a time
 * per watcher (turned into RT_MSG_IO for the handler); events seen while a
 * report is pending are merged into it.
 */
#include <stdlib.h>
#include <unistd.h>

#include "runtime/internal.h"

/* Reports of a still-ready fd whose owner has not run yet before its watcher
 * is parked (io_cb). */
#define PARK_AFTER 32

struct rt_io {
	ev_io w;
	rt_pid owner;
	sched *s;
	void *udata;
	int events;
	int pending; /* RT_IO_* seen since the last report */
	bool notified;
	bool parked;     /* watcher stopped until the owner takes the report */
	uint8_t repeats; /* reports while one was pending */
	bool closed;
	struct rt_io *next; /* owner's list */
};

static int
to_ev(int events)
{
	return ((events & RT_IO_READ) ? EV_READ : 0) | ((events & RT_IO_WRITE) ? EV_WRITE : 0);
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	rt_io *io = w->data;
	io->pending |=
	    ((revents & EV_READ) ? RT_IO_READ : 0) | ((revents & EV_WRITE) ? RT_IO_WRITE : 0);
	if (io->notified) {
		/* Reported again before the owner ran: the fd stays ready
		 * (level-triggered), and every poll goes over it again while its
		 * owner waits in the run queue (in a connection storm thousands of
		 * them: each poll O(backlog)).  Past PARK_AFTER reports, park the
		 * watcher until the owner takes the report: two epoll_ctl calls
		 * then cost less than the polls they save (and below it, more:
		 * parking at the first repeat cost ping-pong 10%). */
		if (++io->repeats >= PARK_AFTER) {
			ev_io_stop(loop, w);
			io->parked = true;
		}
		return;
	}
	io->notified = true;
	rt_msg *m = rt_msg_alloc(SIG_IO, sizeof(rt_io_event));
	((rt_io_event *)rt_msg_data(m))->io = io;
	rt_send_msg(io->owner, m);
}

rt_io *
rt_io_open(int fd, int events, void *udata)
{
	sched *s = rt_cur;
	if (!s || !s->current)
		return NULL;
	rt_proc *p = s->current;
	rt_pin();
	rt_io *io = rt_xcalloc(1, sizeof(*io));
	io->owner = p->pid;
	io->s = s;
	io->udata = udata;
	io->events = events;
	ev_io_init(&io->w, io_cb, fd, to_ev(events));
	io->w.data = io;
	if (events)
		ev_io_start(s->loop, &io->w);
	proc_ext *x = proc_ext_get(p);
	io->next = x->ios;
	x->ios = io;
	return io;
}

void
rt_io_set(rt_io *io, int events)
{
	if (io->closed || events == io->events)
		return;
	io->events = events;
	ev_io_stop(io->s->loop, &io->w);
	ev_io_set(&io->w, io->w.fd, to_ev(events));
	if (events)
		ev_io_start(io->s->loop, &io->w);
}

int
rt_io_fd(const rt_io *io)
{
	return io->w.fd;
}

static void
io_unlink_free(rt_proc *p, rt_io *io)
{
	for (rt_io **pp = &p->ext->ios; *pp; pp = &(*pp)->next)
		if (*pp == io) {
			*pp = io->next;
			break;
		}
	free(io);
}

void
rt_io_close(rt_io *io)
{
	if (io->closed)
		return;
	io->closed = true;
	ev_io_stop(io->s->loop, &io->w);
	close(io->w.fd);
	/* A pending report still points at io: free it when that arrives. */
	if (!io->notified) {
		sched *s = rt_cur;
		io_unlink_free(s->current, io);
	}
}

void
io_deliver(rt_proc *p, rt_msg *m)
{
	rt_io_event *ev = rt_msg_data(m);
	rt_io *io = ev->io;
	io->notified = false;
	io->repeats = 0;
	if (io->closed) {
		io_unlink_free(p, io);
		return;
	}
	if (io->parked) {
		io->parked = false;
		if (io->events && !ev_is_active(&io->w))
			ev_io_start(io->s->loop, &io->w);
	}
	ev->revents = io->pending;
	ev->udata = io->udata;
	io->pending = 0;
	m->tag = RT_MSG_IO;
	int rc = p->beh->handle(p->state, m);
	m->tag = SIG_IO;
	proc_after_handle(rt_cur, p, rc);
}

void
io_proc_exit(rt_proc *p)
{
	rt_io *io = p->ext ? p->ext->ios : NULL;
	while (io) {
		rt_io *n = io->next;
		if (!io->closed) {
			ev_io_stop(io->s->loop, &io->w);
			close(io->w.fd);
		}
		free(io);
		io = n;
	}
	if (p->ext)
		p->ext->ios = NULL;
}
