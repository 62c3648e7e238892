/*
 * The HTTP endpoint: configuration, listening sockets, one listener process
 * per scheduler, the per-scheduler shards (connection registry, timeout
 * lists, counters), stats, and the orderly stop.
 *
 * Listeners.  tp_endpoint_start binds one SO_REUSEPORT socket per scheduler
 * (the kernel spreads connections over them) and starts a listener pinned to
 * each scheduler, under a supervisor of their own (one_for_one) that joins
 * the node's tree (ch_endpoint_supervisor) as a subtree.  The endpoint owns
 * the listening sockets; a listener watches a dup of its scheduler's, so a
 * listener that crashes is restarted on the same socket and the connections
 * waiting in its accept queue are not lost.  On readiness a listener
 * accepts up to ACCEPT_BATCH connections (level-triggered: the rest comes
 * with the next event, so other processes of the scheduler are not starved)
 * and spawns a connection process for each on its own scheduler.  When out
 * of file descriptors (EMFILE/ENFILE) or socket memory it stops watching the
 * socket for EMFILE_PAUSE_MS (no busy accept loop; counted in
 * tp_stats.accept_paused), logging a warning at most once a second for the
 * whole endpoint, not one per attempt; the clients wait in the listen
 * backlog and are served once descriptors are free.
 *
 * HTTPS.  With opts.https_port, the endpoint also owns a TLS context
 * (tls.h) and a second set of listening sockets, one per scheduler; the
 * same listener watches both and gives the connections it accepts on the
 * second one the context (conn_arg.tls): everything else (shards, timeout
 * lists, the stop) is shared.
 *
 * Registry.  The set of live connections is sharded by scheduler: the
 * shard's timeout lists hold every connection of that scheduler at all
 * times, and only that scheduler's thread touches them (no lock, no bytes
 * beyond the list links).  The listener sweeps them every tick (expired
 * deadlines -> TP_MSG_TIMEOUT) and, on stop, sends every connection
 * TP_MSG_SHUTDOWN.
 *
 * Stop (the drain).  The first listener told to shut down by its supervisor
 * (or tp_endpoint_stop itself) starts the endpoint's stop once: it sets the
 * drain deadline and tells every listener to close its socket and shut its
 * connections down (WebSockets: 1001 after their queue).  A listener being
 * shut down exits when its shard's `open` counter reaches 0 (the last
 * connection tells it); at the deadline the endpoint aborts (every
 * connection closed at once) and ABORT_WAIT_MS later the listener exits
 * anyway.  So the supervisor terminating the listeners one by one takes at
 * most the drain plus the abort wait, and tp_endpoint_stop waits for the
 * subtree with rt_wait_exit.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "transports/conn.h"
#include "transports/longpoll.h"
#include "transports/serve.h"

#include <fcntl.h>

#define ACCEPT_BATCH 64
#define DEFAULT_DRAIN_MS 5000
#define LISTENER_RESTARTS 10 /* a minute */
#define EMFILE_PAUSE_MS 100
#define CLOSE_WAIT_MS 2000
#define ABORT_WAIT_MS 1000

/* ------------------------------------------------------------------ listener */

typedef struct listener_arg {
	tp_endpoint *ep;
	int idx;
} listener_arg;

/* Owned by the listener process (pinned to scheduler idx). */
typedef struct listener {
	tp_endpoint *ep;
	int idx;
	rt_io *io;     /* a dup of ep->lfds[idx], NULL once stopped */
	rt_io *tls_io; /* a dup of ep->tls_lfds[idx] (HTTPS), NULL without or once stopped */
	uint32_t tick_ms;
	bool paused;
	bool stopped;  /* TP_LST_STOP done: socket closed, connections told */
	bool draining; /* its supervisor shuts it down: exit once the shard is empty */
} listener;

/* The process's resident size in bytes (/proc/self/statm), 0 when it
 * cannot be read. */
static uint64_t
read_rss(void)
{
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[128];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	unsigned long long size, resident;
	if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
		return 0;
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Reads the RSS and updates the budget's state (listener 0, and
 * tp_endpoint_start); logs the changes. */
static void
check_memory(tp_endpoint *ep)
{
	uint64_t rss = read_rss();
	if (!rss)
		return; /* keep the last state (e.g. out of descriptors) */
	atomic_store(&ep->rss, rss);
	bool was = atomic_load(&ep->mem_over);
	bool over = tp_mem_over(was, rss, ep->mem_budget);
	if (over == was)
		return;
	atomic_store(&ep->mem_over, over);
	if (over)
		rt_log_warning("memory: %llu MiB resident, over the budget of %llu MiB: "
		               "refusing new sockets (503)",
		               (unsigned long long)(rss >> 20),
		               (unsigned long long)(ep->mem_budget >> 20));
	else
		rt_log_info("memory: %llu MiB resident, under 90%% of the budget: accepting "
		            "new sockets again",
		            (unsigned long long)(rss >> 20));
}

/* True at most once a second for the whole endpoint (all listeners). */
static bool
may_warn(tp_endpoint *ep)
{
	int64_t now = rt_now_ms(), last = atomic_load(&ep->last_accept_warn_ms);
	return now - last >= 1000 &&
	       atomic_compare_exchange_strong(&ep->last_accept_warn_ms, &last, now);
}

/* Sends tag to every connection of the shard. */
static void
tell_all(listener *l, uint32_t tag)
{
	tp_shard *sh = &l->ep->shards[l->idx];
	for (int q = 1; q < TQ_COUNT; q++)
		for (conn *c = tq_first(&sh->lists[q]); c; c = tq_next(c))
			rt_send(tq_pid(c), tag, NULL, 0);
}

/* Closes the listening socket: this listener's dup and the endpoint's (so
 * that, with --reuse-port, the kernel sends new connections to the other
 * processes on the port). */
static void
listener_close_socket(listener *l)
{
	if (l->io) {
		rt_io_close(l->io);
		l->io = NULL;
	}
	if (l->tls_io) {
		rt_io_close(l->tls_io);
		l->tls_io = NULL;
	}
	int lfd = atomic_exchange(&l->ep->lfds[l->idx], -1);
	if (lfd >= 0)
		close(lfd);
	if (l->ep->tls_lfds) {
		lfd = atomic_exchange(&l->ep->tls_lfds[l->idx], -1);
		if (lfd >= 0)
			close(lfd);
	}
}

/* Closes the listening socket and tells the shard's connections to shut
 * down; once. */
static void
listener_stop(listener *l)
{
	if (l->stopped)
		return;
	l->stopped = true;
	listener_close_socket(l);
	tell_all(l, TP_MSG_SHUTDOWN);
}

/* The drain (drain.c): closes the listening socket and sends the drainer
 * (payload) the pids of the shard's connections that hold a Phoenix socket
 * (their protocol has a drain), as one TP_DRN_LIST. */
static void
listener_drain(listener *l, rt_msg *m)
{
	if (m->size != sizeof(rt_pid))
		return;
	rt_pid drainer = *(const rt_pid *)rt_msg_data(m);
	listener_close_socket(l);
	tp_shard *sh = &l->ep->shards[l->idx];
	rt_buf *pids = rt_buf_alloc(64 * sizeof(rt_pid));
	for (int q = 1; q < TQ_COUNT; q++)
		for (conn *c = tq_first(&sh->lists[q]); c; c = tq_next(c))
			if (tq_drainable(c)) {
				rt_pid pid = tq_pid(c);
				pids = rt_buf_append(pids, &pid, sizeof(pid));
			}
	rt_send_buf(drainer, TP_DRN_LIST, NULL, 0, pids);
}

/* Watches a dup of lfds[idx]: the first start takes the dup made by
 * tp_endpoint_start in spare[idx] (the fds are all open when it returns); a
 * restart makes its own.  NULL when it cannot. */
static rt_io *
watch_listening(_Atomic int *lfds, _Atomic int *spare, int idx)
{
	int fd = atomic_exchange(&spare[idx], -1);
	if (fd < 0)
		fd = fcntl(atomic_load(&lfds[idx]), F_DUPFD_CLOEXEC, 0);
	rt_io *io = fd >= 0 ? rt_io_open(fd, RT_IO_READ, NULL) : NULL;
	if (!io && fd >= 0)
		close(fd);
	return io;
}

/* Watches (on) or stops watching the listening sockets (out of fds). */
static void
listener_watch(listener *l, bool on)
{
	if (l->io)
		rt_io_set(l->io, on ? RT_IO_READ : 0);
	if (l->tls_io)
		rt_io_set(l->tls_io, on ? RT_IO_READ : 0);
}

static int
listener_init(void *state, const void *arg, size_t size)
{
	listener *l = state;
	const listener_arg *a = arg;
	(void)size;
	l->ep = a->ep;
	l->idx = a->idx;
	RT_ASSERT(rt_scheduler_id() == l->idx);
	rt_trap_exit(true); /* the supervisor's "shutdown" starts the drain */
	atomic_store(&l->ep->listeners[l->idx], rt_self());
	int lfd = atomic_load(&l->ep->lfds[l->idx]);
	if (atomic_load(&l->ep->stopping)) {
		/* Restarted during the stop (TP_LST_STOP may have gone to the pid
		 * before): nothing to accept, the shard's connections to shut down. */
		listener_stop(l);
	} else if (lfd < 0) {
		/* Restarted during the drain: the socket is closed, nothing to
		 * accept; the connections stay until their batch or the stop. */
	} else {
		l->io = watch_listening(l->ep->lfds, l->ep->spare, l->idx);
		if (!l->io)
			return rt_stop("cannot watch the listening socket");
		if (l->ep->tls) {
			l->tls_io = watch_listening(l->ep->tls_lfds, l->ep->tls_spare, l->idx);
			if (!l->tls_io)
				return rt_stop("cannot watch the HTTPS listening socket");
		}
	}
	uint32_t m = l->ep->tq_ms[TQ_HTTP];
	for (int q = TQ_HTTP + 1; q < TQ_COUNT; q++)
		if (l->ep->tq_ms[q] < m)
			m = l->ep->tq_ms[q];
	l->tick_ms = m / 8 < 5 ? 5 : m / 8 > 250 ? 250 : m / 8;
	rt_send_after(l->tick_ms, rt_self(), TP_LST_TICK, NULL, 0);
	if (l->idx == 0 && l->ep->mem_budget) /* one timer for the endpoint */
		rt_send_after(TP_MEM_CHECK_MS, rt_self(), TP_LST_MEM, NULL, 0);
	return RT_OK;
}

/* Accepts from io (the HTTP or the HTTPS socket: tls the context, or NULL). */
static void
accept_some(listener *l, rt_io *io, tls_ctx *tls)
{
	tp_endpoint *ep = l->ep;
	tp_shard *sh = &ep->shards[l->idx];
	int lfd = rt_io_fd(io);
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				if (may_warn(ep))
					rt_log_warning("accept: %s: not accepting for %d ms",
					               strerror(errno), EMFILE_PAUSE_MS);
				tp_count(&sh->accept_paused, 1);
				listener_watch(l, false);
				l->paused = true;
				rt_send_after(EMFILE_PAUSE_MS, rt_self(), TP_LST_ACCEPT, NULL, 0);
				return;
			}
			if (may_warn(ep))
				rt_log_warning("accept: %s", strerror(errno));
			return;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		tp_count(&sh->accepted, 1);
		if (tls)
			tp_count(&sh->tls_accepted, 1);
		atomic_fetch_add(&sh->open, 1);
		conn_arg ca = {.ep = ep, .fd = fd, .proto = &tp_http_proto, .tls = tls};
		if (!rt_spawn_on(l->idx, &tp_conn_behaviour, &ca, sizeof(ca))) {
			close(fd);
			atomic_fetch_sub(&sh->open, 1);
			if (may_warn(ep))
				rt_log_warning("accept: process table full: connection refused");
		}
	}
}

/* Expired deadlines: off the list, and a TP_MSG_TIMEOUT to the connection. */
static void
sweep(listener *l)
{
	tp_shard *sh = &l->ep->shards[l->idx];
	uint32_t now = tp_now(l->ep);
	for (int q = 1; q < TQ_COUNT; q++) {
		conn *c;
		while ((c = tq_first(&sh->lists[q])) && tp_before(tq_deadline(c), now)) {
			tq_remove(c);
			rt_send(tq_pid(c), TP_MSG_TIMEOUT, NULL, 0);
		}
	}
}

/* Starts the endpoint's stop once (any thread): the drain deadline, then
 * every listener closes its socket and shuts its connections down. */
static void
begin_stop(tp_endpoint *ep)
{
	int64_t zero = 0;
	int64_t until = rt_now_ms() + atomic_load(&ep->drain_ms);
	if (!atomic_compare_exchange_strong(&ep->drain_until, &zero, until))
		return;
	atomic_store(&ep->stopping, true);
	for (int i = 0; i < ep->nsched; i++)
		rt_send(atomic_load(&ep->listeners[i]), TP_LST_STOP, NULL, 0);
}

/* Draining: RT_STOP once the shard is empty, or the abort wait is over. */
static int
check_drained(listener *l)
{
	tp_endpoint *ep = l->ep;
	tp_shard *sh = &ep->shards[l->idx];
	uint64_t open = atomic_load(&sh->open);
	if (open == 0)
		return rt_stop("shutdown");
	int64_t now = rt_now_ms();
	if (now < atomic_load(&ep->drain_until))
		return RT_OK;
	bool no = false;
	if (atomic_compare_exchange_strong(&ep->aborting, &no, true)) {
		uint64_t n = 0;
		for (int i = 0; i < ep->nsched; i++)
			n += atomic_load(&ep->shards[i].open);
		rt_log_warning("endpoint stop: %llu connections still open after %u ms: closing "
		               "them",
		               (unsigned long long)n, (unsigned)atomic_load(&ep->drain_ms));
		atomic_store(&ep->abort_until, now + ABORT_WAIT_MS);
		for (int i = 0; i < ep->nsched; i++)
			rt_send(atomic_load(&ep->listeners[i]), TP_LST_ABORT, NULL, 0);
		return RT_OK;
	}
	int64_t abort_until = atomic_load(&ep->abort_until);
	if (abort_until && now >= abort_until) {
		rt_log_error("listener %d: %llu connections did not close (a handler is stuck?)",
		             l->idx, (unsigned long long)open);
		return rt_stop("shutdown");
	}
	return RT_OK;
}

static int
listener_handle(void *state, rt_msg *m)
{
	listener *l = state;
	switch (m->tag) {
	case RT_MSG_EXIT: /* from the supervisor, the only link */
		begin_stop(l->ep);
		listener_stop(l);
		l->draining = true;
		return check_drained(l);
	case TP_LST_EMPTY:
		return l->draining ? check_drained(l) : RT_OK;
	case RT_MSG_IO: {
		const rt_io_event *ev = rt_msg_data(m);
		if (l->paused)
			break;
		if (l->io && ev->io == l->io)
			accept_some(l, l->io, NULL);
		else if (l->tls_io && ev->io == l->tls_io)
			accept_some(l, l->tls_io, l->ep->tls);
		break;
	}
	case TP_LST_TICK:
		sweep(l);
		rt_send_after(l->tick_ms, rt_self(), TP_LST_TICK, NULL, 0);
		if (l->draining)
			return check_drained(l);
		break;
	case TP_LST_ACCEPT:
		if (l->io && l->paused) {
			l->paused = false;
			listener_watch(l, true);
		}
		break;
	case TP_LST_MEM:
		check_memory(l->ep);
		rt_send_after(TP_MEM_CHECK_MS, rt_self(), TP_LST_MEM, NULL, 0);
		break;
	case TP_LST_STOP:
		listener_stop(l);
		break;
	case TP_LST_ABORT:
		tell_all(l, TP_MSG_ABORT);
		break;
	case TP_LST_DRAIN:
		listener_drain(l, m);
		break;
	default:
		break;
	}
	return RT_OK;
}

static void
listener_terminate(void *state, const char *reason)
{
	listener *l = state;
	if (l->ep && strcmp(reason, "shutdown") != 0)
		rt_log_error("listener %d of port %d exited: %s", l->idx, l->ep->port, reason);
}

static const rt_behaviour listener_behaviour = {
    .name = "tp_listener",
    .state_size = sizeof(listener),
    .init = listener_init,
    .handle = listener_handle,
    .terminate = listener_terminate,
};

/* ------------------------------------------------------------------ sockets */

static int
listen_socket(const struct addrinfo *ai, int backlog)
{
	int fd =
	    socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -1;
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void
set_port(struct sockaddr *sa, int port)
{
	if (sa->sa_family == AF_INET6)
		((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

/* Binds ep->nsched sockets to bind:port (TP_PORT_ANY: a free port, the same
 * for all) into lfds; returns the port, or -1.  Unless reuse_port, a probe without SO_REUSEPORT
 * goes first: SO_REUSEPORT would let us share a port that another process (of the same user)
 * listens on, and silently split its connections with it. */
static int
open_listeners(tp_endpoint *ep, _Atomic int *lfds, const char *addr, int port, int backlog,
               bool reuse_port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(addr, "0", &hints, &res);
	if (rc != 0 || !res) {
		fprintf(stderr, "tp_endpoint_start: bad bind address %s: %s\n", addr,
		        gai_strerror(rc));
		return -1;
	}
	set_port(res->ai_addr, port == TP_PORT_ANY ? 0 : port);
	/* With reuse_port, sharing the port is what was asked for: no probe. */
	if (!reuse_port || port == TP_PORT_ANY) {
		int probe =
		    socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
		int one = 1;
		if (probe < 0 ||
		    setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		    bind(probe, res->ai_addr, res->ai_addrlen) != 0) {
			fprintf(stderr, "tp_endpoint_start: cannot listen on %s:%d: %s\n", addr,
			        port, strerror(errno));
			if (probe >= 0)
				close(probe);
			freeaddrinfo(res);
			return -1;
		}
		if (port == TP_PORT_ANY) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			getsockname(probe, (struct sockaddr *)&ss, &sl);
			port =
			    ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
			                                   : ((struct sockaddr_in *)&ss)->sin_port);
			set_port(res->ai_addr, port);
		}
		close(probe);
	}
	for (int i = 0; i < ep->nsched; i++) {
		lfds[i] = listen_socket(res, backlog);
		if (atomic_load(&lfds[i]) < 0) {
			fprintf(stderr, "tp_endpoint_start: cannot listen on %s:%d: %s\n", addr,
			        port, strerror(errno));
			freeaddrinfo(res);
			return -1;
		}
	}
	freeaddrinfo(res);
	return port;
}

/* ------------------------------------------------------------------ lifecycle */

static char *
xstrdup(const char *s)
{
	return rt_xstrdup(s ? s : "");
}

static void
endpoint_free(tp_endpoint *ep)
{
	for (int i = 0; ep->lfds && i < ep->nsched; i++) {
		if (ep->lfds[i] >= 0)
			close(ep->lfds[i]);
		if (ep->spare[i] >= 0)
			close(ep->spare[i]);
	}
	for (int i = 0; ep->tls_lfds && i < ep->nsched; i++) {
		if (ep->tls_lfds[i] >= 0)
			close(ep->tls_lfds[i]);
		if (ep->tls_spare[i] >= 0)
			close(ep->tls_spare[i]);
	}
	free(ep->lfds);
	free(ep->spare);
	free(ep->tls_lfds);
	free(ep->tls_spare);
	tls_ctx_free(ep->tls);
	free(ep->listeners);
	free(ep->shards);
	for (size_t i = 0; i < ep->nroutes; i++) {
		free(ep->routes[i].method);
		free(ep->routes[i].path);
	}
	free(ep->routes);
	for (size_t i = 0; i < ep->norigins; i++)
		free(ep->origins[i]);
	free(ep->origins);
	free(ep->ws_path);
	free(ep->lp_path);
	lp_table_free(ep->lp);
	tp_static_free(ep->files);
	free(ep);
}

/* Shuts the listeners' subtree down: through its parent when it has one
 * (a subtree's own exit would take the parent down), else directly. */
static void
stop_tree(tp_endpoint *ep)
{
	if (!ep->parent || rt_sup_terminate_child(ep->parent, ep->sup) < 0)
		rt_exit(ep->sup, "shutdown");
}

static uint64_t
open_count(tp_endpoint *ep)
{
	uint64_t n = 0;
	for (int i = 0; i < ep->nsched; i++)
		n += atomic_load(&ep->shards[i].open);
	return n;
}

/* HTTPS: the TLS context and the listening sockets of opts->https_port. */
static int
start_https(tp_endpoint *ep, const tp_endpoint_opts *opts, const char *bind, int backlog)
{
	char err[512];
	if (opts->https_port < TP_PORT_ANY || opts->https_port > 65535) {
		fprintf(stderr, "tp_endpoint_start: bad HTTPS port %d\n", opts->https_port);
		return -1;
	}
	ep->tls = tls_ctx_new(opts->tls_cert, opts->tls_key, err, sizeof(err));
	if (!ep->tls) {
		fprintf(stderr, "tp_endpoint_start: TLS: %s\n", err);
		return -1;
	}
	ep->tls_lfds = rt_xmalloc((size_t)ep->nsched * sizeof(*ep->tls_lfds));
	ep->tls_spare = rt_xmalloc((size_t)ep->nsched * sizeof(*ep->tls_spare));
	for (int i = 0; i < ep->nsched; i++)
		ep->tls_lfds[i] = ep->tls_spare[i] = -1;
	ep->https_port =
	    open_listeners(ep, ep->tls_lfds, bind, opts->https_port, backlog, opts->reuse_port);
	return ep->https_port < 0 ? -1 : 0;
}

tp_endpoint *
tp_endpoint_start(const tp_endpoint_opts *opts)
{
	int nsched = rt_schedulers();
	if (!opts || nsched <= 0) {
		fprintf(stderr, "tp_endpoint_start: start the runtime first\n");
		return NULL;
	}
	tp_endpoint *ep = rt_xcalloc(1, sizeof(*ep));
	ep->socket = opts->socket;
	const char *sp = opts->socket_path ? opts->socket_path : "/socket";
	size_t spl = strlen(sp);
	while (spl > 0 && sp[spl - 1] == '/')
		spl--;
	ep->ws_path = rt_xmalloc(spl + sizeof("/websocket"));
	memcpy(ep->ws_path, sp, spl);
	memcpy(ep->ws_path + spl, "/websocket", sizeof("/websocket"));
	ep->lp_path = rt_xmalloc(spl + sizeof("/longpoll"));
	memcpy(ep->lp_path, sp, spl);
	memcpy(ep->lp_path + spl, "/longpoll", sizeof("/longpoll"));

	ep->nroutes = opts->routes ? opts->nroutes : 0;
	ep->routes = rt_xcalloc(ep->nroutes ? ep->nroutes : 1, sizeof(tp_route_c));
	for (size_t i = 0; i < ep->nroutes; i++) {
		const tp_route *r = &opts->routes[i];
		ep->routes[i].method = xstrdup(r->method ? r->method : "GET");
		ep->routes[i].path = xstrdup(r->path);
		ep->routes[i].fn = r->fn;
		ep->routes[i].udata = r->udata;
		if (!r->fn || !r->path || r->path[0] != '/') {
			fprintf(stderr,
			        "tp_endpoint_start: route %zu: needs a path starting with / "
			        "and a handler\n",
			        i);
			endpoint_free(ep);
			return NULL;
		}
	}
	ep->check_origin = opts->check_origin;
	while (opts->origins && opts->origins[ep->norigins])
		ep->norigins++;
	ep->origins = rt_xcalloc(ep->norigins ? ep->norigins : 1, sizeof(char *));
	for (size_t i = 0; i < ep->norigins; i++)
		ep->origins[i] = xstrdup(opts->origins[i]);

	ep->max_frame = opts->max_frame ? opts->max_frame : TP_DEFAULT_MAX_FRAME;
	if (ep->max_frame > TP_MAX_MAX_FRAME)
		ep->max_frame = TP_MAX_MAX_FRAME;
	/* By default a reply as large as the largest message fits, over the usual 4 MiB. */
	ep->max_outbound =
	    opts->max_outbound ? opts->max_outbound : ((size_t)4 << 20) + ep->max_frame;
	ep->tq_ms[TQ_HTTP] = opts->http_idle_ms ? opts->http_idle_ms : 15000;
	ep->tq_ms[TQ_WS] = opts->ws_idle_ms ? opts->ws_idle_ms : 60000;
	ep->tq_ms[TQ_CLOSE] = CLOSE_WAIT_MS;
	ep->tq_ms[TQ_TLS] = opts->tls_handshake_ms ? opts->tls_handshake_ms : 5000;
	for (int q = 1; q < TQ_COUNT; q++)
		if (ep->tq_ms[q] > 86400000u) /* deadlines are 32-bit: at most a day */
			ep->tq_ms[q] = 86400000u;
	tp_http_config_default(&ep->http);
	if (opts->max_body)
		ep->http.max_body = opts->max_body;
	ep->t0_ms = rt_now_ms();
	ep->mem_budget = (uint64_t)opts->max_memory_mb << 20;
	if (ep->mem_budget)
		check_memory(ep); /* right from the first connection */
	ep->lp = lp_table_new(ep, opts);
	if (opts->socket && !ep->lp) {
		fprintf(stderr, "tp_endpoint_start: cannot derive the long-poll token key\n");
		endpoint_free(ep);
		return NULL;
	}

	if (opts->port < TP_PORT_ANY || opts->port > 65535) {
		fprintf(stderr, "tp_endpoint_start: bad port %d\n", opts->port);
		endpoint_free(ep);
		return NULL;
	}
	ep->nsched = nsched;
	ep->lfds = rt_xmalloc((size_t)nsched * sizeof(*ep->lfds));
	ep->spare = rt_xmalloc((size_t)nsched * sizeof(*ep->spare));
	ep->listeners = rt_xcalloc((size_t)nsched, sizeof(*ep->listeners));
	ep->shards = rt_xaligned_alloc(64, (size_t)nsched * sizeof(tp_shard));
	memset(ep->shards, 0, (size_t)nsched * sizeof(tp_shard));
	for (int i = 0; i < nsched; i++)
		ep->lfds[i] = ep->spare[i] = -1;
	const char *bind = opts->bind ? opts->bind : "127.0.0.1";
	int backlog = opts->backlog > 0 ? opts->backlog : 4096;
	ep->port = open_listeners(ep, ep->lfds, bind, opts->port ? opts->port : 4000, backlog,
	                          opts->reuse_port);
	if (ep->port < 0 || (opts->https_port && start_https(ep, opts, bind, backlog) < 0)) {
		endpoint_free(ep);
		return NULL;
	}
	ep->files = tp_static_load(opts->static_dir, opts->static_aliases);
	for (int i = 0; i < nsched; i++) {
		ep->spare[i] = fcntl(ep->lfds[i], F_DUPFD_CLOEXEC, 0);
		if (ep->tls_spare)
			ep->tls_spare[i] = fcntl(ep->tls_lfds[i], F_DUPFD_CLOEXEC, 0);
		if (ep->spare[i] < 0 || (ep->tls_spare && ep->tls_spare[i] < 0)) {
			fprintf(stderr, "tp_endpoint_start: dup: %s\n", strerror(errno));
			endpoint_free(ep);
			return NULL;
		}
	}

	atomic_store(&ep->drain_ms, DEFAULT_DRAIN_MS);
	/* The listeners' subtree: a listener that crashes is restarted (on the
	 * same socket); more than LISTENER_RESTARTS a minute and the subtree
	 * gives up, which stops the node. */
	ep->parent = ch_endpoint_supervisor(opts->socket);
	rt_sup_spec lsup = {
	    .strategy = RT_ONE_FOR_ONE, .intensity = LISTENER_RESTARTS, .period_ms = 60000};
	ep->sup = rt_sup_start_under(ep->parent, "listeners", &lsup);
	bool ok = ep->sup != RT_NOPID;
	/* The long-poll sessions first: stopped last, once the connections
	 * (whose parked requests they answer) are gone. */
	if (ok && ep->lp)
		ok = lp_table_start(ep->lp, ep->sup) == 0;
	for (int i = 0; ok && i < nsched; i++) {
		listener_arg la = {.ep = ep, .idx = i};
		rt_child_spec cs = {.id = "listener",
		                    .behaviour = &listener_behaviour,
		                    .arg = &la,
		                    .arg_size = sizeof(la),
		                    .restart = RT_TRANSIENT,
		                    .shutdown_ms = RT_INFINITY, /* bounded by its drain */
		                    .pin = i + 1};
		rt_pid pid = rt_sup_add_child(ep->sup, &cs);
		atomic_store(&ep->listeners[i], pid);
		ok = pid != RT_NOPID;
	}
	if (!ok) {
		fprintf(stderr, "tp_endpoint_start: cannot spawn a listener\n");
		if (ep->sup) {
			atomic_store(&ep->drain_ms, 0);
			stop_tree(ep);
			if (rt_wait_exit(ep->sup, ABORT_WAIT_MS + 1000) < 0)
				return NULL; /* still running: leaked rather than freed under it */
		}
		endpoint_free(ep);
		return NULL;
	}
	rt_log_debug("endpoint listening on port %d (%d listeners, %zu static files)", ep->port,
	             nsched, ep->files->n);
	return ep;
}

int
tp_endpoint_port(const tp_endpoint *ep)
{
	return ep ? ep->port : -1;
}

int
tp_endpoint_https_port(const tp_endpoint *ep)
{
	return ep && ep->https_port > 0 ? ep->https_port : 0;
}

void
tp_endpoint_stop(tp_endpoint *ep, uint32_t timeout_ms)
{
	if (!ep)
		return;
	atomic_store(&ep->drain_ms, timeout_ms);
	begin_stop(ep);
	if (rt_scheduler_id() >= 0) {
		/* Waiting here would block this scheduler's connections. */
		rt_log_error("tp_endpoint_stop called from a scheduler thread: connections are "
		             "closing, the endpoint is not freed");
		return;
	}
	stop_tree(ep);
	if (rt_wait_exit(ep->sup, timeout_ms + ABORT_WAIT_MS + 2000) < 0 || open_count(ep) != 0) {
		rt_log_error("endpoint stop: processes still running (a handler is stuck?): the "
		             "endpoint is not freed");
		return;
	}
	endpoint_free(ep);
}

void
tp_endpoint_stats(const tp_endpoint *ep, tp_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!ep)
		return;
	for (int i = 0; i < ep->nsched; i++) {
		tp_shard *s = &ep->shards[i];
		out->accepted += atomic_load_explicit(&s->accepted, memory_order_relaxed);
		out->open += atomic_load_explicit(&s->open, memory_order_relaxed);
		out->ws_open += atomic_load_explicit(&s->ws_open, memory_order_relaxed);
		out->slow_disconnects +=
		    atomic_load_explicit(&s->slow_disconnects, memory_order_relaxed);
		out->closed_1009 += atomic_load_explicit(&s->closed_1009, memory_order_relaxed);
		out->closed_1002 += atomic_load_explicit(&s->closed_1002, memory_order_relaxed);
		out->closed_1007 += atomic_load_explicit(&s->closed_1007, memory_order_relaxed);
		out->closed_1011 += atomic_load_explicit(&s->closed_1011, memory_order_relaxed);
		out->http_requests += atomic_load_explicit(&s->http_requests, memory_order_relaxed);
		out->http_parsed += atomic_load_explicit(&s->http_parsed, memory_order_relaxed);
		out->tls_accepted += atomic_load_explicit(&s->tls_accepted, memory_order_relaxed);
		out->tls_handshakes +=
		    atomic_load_explicit(&s->tls_handshakes, memory_order_relaxed);
		out->tls_failed += atomic_load_explicit(&s->tls_failed, memory_order_relaxed);
		out->accept_paused += atomic_load_explicit(&s->accept_paused, memory_order_relaxed);
	}
	out->drained = atomic_load(&ep->drained);
	out->rss = atomic_load(&ep->rss);
	out->mem_over = atomic_load(&ep->mem_over);
	out->mem_refused = atomic_load(&ep->mem_refused);
	out->mem_cut = atomic_load(&ep->mem_cut);
	const lp_table *t = ep->lp;
	if (t) {
		out->lp_open = atomic_load(&t->open);
		out->lp_opened = atomic_load(&t->opened);
		out->lp_expired = atomic_load(&t->expired);
		out->lp_slow = atomic_load(&t->slow);
		out->lp_binary_dropped = atomic_load(&t->binary_dropped);
		out->lp_refused = atomic_load(&t->refused);
		out->lp_lines_ignored = atomic_load(&t->lines_ignored);
		out->lp_bad_posts = atomic_load(&t->bad_posts);
		out->lp_remote_sent = atomic_load(&t->remote_sent);
		out->lp_remote_served = atomic_load(&t->remote_served);
		out->lp_remote_refused = atomic_load(&t->remote_refused);
		out->lp_remote_lost = atomic_load(&t->remote_lost);
	}
}
