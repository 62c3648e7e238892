/*
 * The cluster core (cluster/cluster.h): the node, its members, the cluster
 * process, framing and routing.  The link (cluster/link.h) moves bytes.
 *
 * The cluster process.  One runtime process per node, pinned (it owns the
 * link's descriptors), started under opts->supervisor (permanent: restarted
 * after a crash, when it attaches the link again; the cl_node and the link
 * outlive it) or alone.  It receives every frame (cl_link_deliver), runs the
 * service handlers, and every heartbeat_ms sends a heartbeat and declares
 * silent members down.
 *
 * Membership.  A member is a name and an incarnation.  Its first frame makes
 * it up; silence for down_after_ms, a goodbye, or a frame of a later
 * incarnation (a restart: nodedown "restarted" of the old one first) make it
 * down.  Frames of an older incarnation than the one known are ignored, and
 * so are those of an incarnation that said goodbye.  A node that was itself
 * stalled (stopped, swapped out) for longer than half of down_after_ms does
 * not blame the others for the silence it caused: their clocks move by the
 * stall.
 *
 * Discovery (mesh).  A heartbeat carries the sender's address, then the
 * addresses of the members it has up.  The sender's own needs no dial (its
 * frame came through a pipe), nor does that of a member up here.  Of the
 * rest, a node dials only addresses greater than its own (strcmp): when two
 * nodes learn of each other through a third, one pipe joins them, not two
 * (bus would deliver every frame twice).  Explicit peers and seeds are
 * always dialed; should two nodes dial each other all the same, the
 * sequence numbers drop the second copy of every frame (cl_stats
 * .duplicates).
 *
 * Sequence numbers.  Frames to all carry 1, 2, 3... per sender incarnation,
 * assigned and queued under one lock so that the numbers go out in order
 * from any number of threads.  A receiver counts a jump as lost frames and
 * drops a number it has seen.  Frames to one node are numbered apart (a
 * receiver sees only its own, so a jump is no loss), and a number seen is
 * dropped too: two nodes joined by two pipes get each frame once.  A member
 * declared down starts afresh.
 *
 * Locks.  c->lock guards the member table, the monitors and the handlers:
 * the cluster process writes them under it (and reads them without it, being
 * the only writer of the members); other threads read under it.  Nodeup and
 * nodedown messages are sent under it, so every monitor sees the changes in
 * the order they happened, after its initial nodeups.  Handlers run without
 * it.  c->send_lock orders the sequence numbers.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/envelope.h"
#include "cluster/link.h"
#include "runtime/xalloc.h"

#define MONITORS_MAX 64
#define WARNED_MAX 16 /* peers of another version logged (one line each) */
#define TAG_TICK 1
#define STOP_WAIT_MS 10000
/* A heartbeat body: the own address and those of every member. */
#define HB_MAX (5 + (CL_MEMBERS_MAX + 1) * (5 + CL_ADDR_MAX))

/* A member.  Owned by the cluster process; written under c->lock. */
typedef struct member {
	cl_member pub;
	bool used;
	bool gone;          /* said goodbye: frames of its incarnation are ignored */
	int64_t heard_ms;   /* last frame (rt_now_ms) */
	int64_t down_ms;    /* when declared down */
	uint64_t last_seq;  /* last number of a frame to all taken; 0: none since up */
	uint64_t last_dseq; /* the same of frames to this node alone */
} member;

/* A node.  Made by cl_start, freed by cl_stop; fields say who writes them. */
struct cl_node {
	/* Set by cl_start, then read-only. */
	char name[CL_NAME_MAX];
	uint64_t inc;
	const cl_link_ops *link;
	void *lctx;
	uint32_t hb_ms, down_ms, max_frame;
	rt_pid parent;
	_Atomic rt_pid pid; /* the cluster process (its init writes it) */

	pthread_mutex_t send_lock;
	uint64_t seq;  /* last number sent to all; under send_lock */
	uint64_t dseq; /* last number sent to one node (any); under send_lock */

	pthread_mutex_t lock;
	member members[CL_MEMBERS_MAX];
	struct {
		rt_pid pid;
		uint32_t tag;
	} mons[MONITORS_MAX];
	size_t nmons;
	struct {
		cl_handler_fn fn;
		void *ud;
	} svc[CL_SVC_MAX];
	/* Held by the cluster process while it runs a handler, and by
	 * cl_unregister: a handler unregistered is not running any more. */
	pthread_mutex_t svc_lock;

	/* The cluster process's alone. */
	char warned[WARNED_MAX][CL_NAME_MAX];
	size_t nwarned;
	bool warned_full;
	int64_t last_tick_ms;
	uint8_t hb[HB_MAX];

	struct {
		_Atomic uint64_t sent, received, bytes_sent, bytes_received, send_dropped, lost,
		    malformed, oversized, bad_version, unknown_service, duplicates, refused,
		    nodeups, nodedowns;
	} st;
};

#define COUNT(c, f, n) atomic_fetch_add_explicit(&(c)->st.f, (n), memory_order_relaxed)

/* ------------------------------------------------------------------ sending */

/* Hands head + body to the link (both parts copied); node NULL: to all. */
static int
link_send(cl_node *c, const char *node, const uint8_t *head, size_t hl, const void *body, size_t bl)
{
	if (c->link->sendv)
		return c->link->sendv(c->lctx, node, head, hl, body, bl);
	uint8_t small[4096];
	uint8_t *f = hl + bl <= sizeof(small) ? small : rt_xmalloc(hl + bl);
	memcpy(f, head, hl);
	if (bl)
		memcpy(f + hl, body, bl);
	int rc = node ? c->link->send_to(c->lctx, node, f, hl + bl)
	              : c->link->send_all(c->lctx, f, hl + bl);
	if (f != small)
		free(f);
	return rc;
}

/* Frames and sends one frame; `to` NULL: to all (numbered). */
static int
send_frame(cl_node *c, int kind, const char *to, int service, const void *body, size_t len)
{
	cl_env e = {.version = CL_PROTOCOL_VERSION,
	            .kind = kind,
	            .incarnation = c->inc,
	            .service = service,
	            .body_len = len};
	memcpy(e.from, c->name, sizeof(e.from));
	if (to)
		snprintf(e.to, sizeof(e.to), "%s", to);
	uint8_t head[CL_ENV_HEAD_MAX];
	int rc = -1;
	size_t hl = 0;
	pthread_mutex_lock(&c->send_lock);
	e.seq = (to ? c->dseq : c->seq) + 1;
	hl = cl_env_head(&e, head);
	if (hl && len <= c->max_frame && hl + len <= c->max_frame) {
		rc = link_send(c, to, head, hl, body, len);
		if (rc == 0 && to)
			c->dseq++;
		else if (rc == 0)
			c->seq++;
		if (rc == 0) {
			COUNT(c, sent, 1);
			COUNT(c, bytes_sent, hl + len);
		} else {
			COUNT(c, send_dropped, 1);
		}
	}
	pthread_mutex_unlock(&c->send_lock);
	return rc;
}

int
cl_send_all(cl_node *c, int service, const void *body, size_t len)
{
	if (service <= 0 || service >= CL_SVC_MAX)
		return -1;
	return send_frame(c, CL_K_DATA, NULL, service, body, len);
}

static member *
find(cl_node *c, const char *name)
{
	for (size_t i = 0; i < CL_MEMBERS_MAX; i++)
		if (c->members[i].used && strcmp(c->members[i].pub.name, name) == 0)
			return &c->members[i];
	return NULL;
}

int
cl_send_to(cl_node *c, const char *node, int service, const void *body, size_t len)
{
	if (service <= 0 || service >= CL_SVC_MAX || !node)
		return -1;
	pthread_mutex_lock(&c->lock);
	member *m = find(c, node);
	bool up = m && m->pub.up;
	pthread_mutex_unlock(&c->lock);
	if (!up)
		return -1;
	return send_frame(c, CL_K_DATA, node, service, body, len);
}

/* ------------------------------------------------------------------ membership */

/* Tells every monitor (under c->lock); forgets those that are gone. */
static void
notify(cl_node *c, const member *m, bool up, const char *reason)
{
	cl_node_event ev = {.up = up, .incarnation = m->pub.incarnation};
	memcpy(ev.name, m->pub.name, sizeof(ev.name));
	snprintf(ev.reason, sizeof(ev.reason), "%s", reason);
	for (size_t i = 0; i < c->nmons;) {
		if (rt_send(c->mons[i].pid, c->mons[i].tag, &ev, sizeof(ev)) < 0)
			c->mons[i] = c->mons[--c->nmons];
		else
			i++;
	}
}

static void
member_up(cl_node *c, member *m)
{
	m->pub.up = true;
	m->last_seq = m->last_dseq = 0;
	COUNT(c, nodeups, 1);
	rt_log_info("cluster: %s: nodeup %s", c->name, m->pub.name);
	notify(c, m, true, "");
}

static void
member_down(cl_node *c, member *m, const char *reason)
{
	m->pub.up = false;
	m->down_ms = rt_now_ms();
	m->last_seq = m->last_dseq = 0;
	COUNT(c, nodedowns, 1);
	rt_log_info("cluster: %s: nodedown %s (%s)", c->name, m->pub.name, reason);
	notify(c, m, false, reason);
}

/* A free slot, or that of the member down the longest; NULL when all are up. */
static member *
member_slot(cl_node *c)
{
	member *best = NULL;
	for (size_t i = 0; i < CL_MEMBERS_MAX; i++) {
		member *m = &c->members[i];
		if (!m->used)
			return m;
		if (!m->pub.up && (!best || m->down_ms < best->down_ms))
			best = m;
	}
	return best;
}

/* A frame of e's sender arrived (under c->lock): its member, up; NULL when
 * the frame is to be ignored (an older or departed incarnation, no room). */
static member *
heard(cl_node *c, const cl_env *e, int64_t now)
{
	member *m = find(c, e->from);
	if (m) {
		if (e->incarnation < m->pub.incarnation)
			return NULL;
		if (e->incarnation > m->pub.incarnation) {
			if (m->pub.up)
				member_down(c, m, "restarted");
			m->pub.incarnation = e->incarnation;
			m->gone = false;
		} else if (m->gone) {
			return NULL;
		}
	} else {
		m = member_slot(c);
		if (!m) {
			COUNT(c, refused, 1);
			if (!c->warned_full)
				rt_log_warning(
				    "cluster: %s: refused node %s: %d members up already", c->name,
				    e->from, CL_MEMBERS_MAX);
			c->warned_full = true;
			return NULL;
		}
		memset(m, 0, sizeof(*m));
		m->used = true;
		memcpy(m->pub.name, e->from, sizeof(m->pub.name));
		m->pub.incarnation = e->incarnation;
	}
	m->heard_ms = now;
	if (!m->pub.up)
		member_up(c, m);
	return m;
}

/* One line per peer speaking another version (the first WARNED_MAX peers). */
static void
warn_version(cl_node *c, const cl_env *e)
{
	for (size_t i = 0; i < c->nwarned; i++)
		if (strcmp(c->warned[i], e->from) == 0)
			return;
	if (c->nwarned == WARNED_MAX)
		return;
	memcpy(c->warned[c->nwarned++], e->from, CL_NAME_MAX);
	rt_log_error(
	    "cluster: refused node %s: it speaks cluster protocol v%u, this node speaks v%d",
	    e->from[0] ? e->from : "(unnamed)", e->version, CL_PROTOCOL_VERSION);
}

/* The addresses of a heartbeat (under c->lock): the sender's, then others to
 * dial maybe. */
typedef struct hb_ctx {
	cl_node *c;
	member *m;
} hb_ctx;

static void
hb_addr(void *ud, size_t i, const char *a)
{
	hb_ctx *h = ud;
	cl_node *c = h->c;
	if (i == 0) {
		snprintf(h->m->pub.addr, sizeof(h->m->pub.addr), "%s", a);
		return;
	}
	if (!c->link->learn)
		return;
	const char *own = c->link->addr(c->lctx);
	if (!own[0] || strcmp(own, a) >= 0) /* the lower address dials */
		return;
	for (size_t k = 0; k < CL_MEMBERS_MAX; k++)
		if (c->members[k].used && c->members[k].pub.up &&
		    strcmp(c->members[k].pub.addr, a) == 0)
			return;
	c->link->learn(c->lctx, a);
}

void
cl_link_count_oversized(cl_node *c)
{
	COUNT(c, oversized, 1);
}

void
cl_link_count_malformed(cl_node *c)
{
	COUNT(c, malformed, 1);
}

void
cl_link_deliver(cl_node *c, const void *frame, size_t len)
{
	COUNT(c, received, 1);
	COUNT(c, bytes_received, len);
	if (len > c->max_frame) {
		COUNT(c, oversized, 1);
		return;
	}
	cl_env e;
	int rc = cl_env_decode(frame, len, &e);
	if (rc == CL_ENV_BAD_VERSION) {
		COUNT(c, bad_version, 1);
		warn_version(c, &e);
		return;
	}
	if (rc != CL_ENV_OK) {
		COUNT(c, malformed, 1);
		return;
	}
	if (strcmp(e.from, c->name) == 0) /* our own (Redis echoes it) */
		return;
	if (e.kind == CL_K_HEARTBEAT &&
	    cl_env_hb_decode(e.body, e.body_len, CL_MEMBERS_MAX + 1, NULL, NULL) < 0) {
		COUNT(c, malformed, 1);
		return;
	}
	if (e.to[0] && strcmp(e.to, c->name) != 0) /* for another node */
		return;

	pthread_mutex_lock(&c->lock);
	if (e.kind == CL_K_GOODBYE) { /* never makes a member up */
		member *g = find(c, e.from);
		if (g && e.incarnation >= g->pub.incarnation &&
		    !(e.incarnation == g->pub.incarnation && g->gone)) {
			if (g->pub.up)
				member_down(c, g,
				            e.incarnation > g->pub.incarnation ? "restarted"
				                                               : "goodbye");
			g->pub.incarnation = e.incarnation;
			g->gone = true;
		}
		pthread_mutex_unlock(&c->lock);
		return;
	}
	member *m = heard(c, &e, rt_now_ms());
	if (!m) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	if (!e.to[0] && e.seq) {
		if (m->last_seq && e.seq <= m->last_seq) {
			pthread_mutex_unlock(&c->lock);
			COUNT(c, duplicates, 1);
			return;
		}
		if (m->last_seq && e.seq > m->last_seq + 1)
			COUNT(c, lost, e.seq - m->last_seq - 1);
		m->last_seq = e.seq;
	} else if (e.to[0] && e.seq) { /* numbered apart: only duplicates show */
		if (m->last_dseq && e.seq <= m->last_dseq) {
			pthread_mutex_unlock(&c->lock);
			COUNT(c, duplicates, 1);
			return;
		}
		m->last_dseq = e.seq;
	}
	cl_handler_fn fn = NULL;
	void *ud = NULL;
	switch (e.kind) {
	case CL_K_HEARTBEAT: {
		hb_ctx h = {c, m};
		cl_env_hb_decode(e.body, e.body_len, CL_MEMBERS_MAX + 1, hb_addr, &h);
		break;
	}
	case CL_K_DATA:
		if (e.service > 0 && e.service < CL_SVC_MAX) {
			fn = c->svc[e.service].fn;
			ud = c->svc[e.service].ud;
		}
		break;
	}
	cl_member from = m->pub;
	pthread_mutex_unlock(&c->lock);
	if (e.kind != CL_K_DATA)
		return;
	if (!fn) {
		COUNT(c, unknown_service, 1);
		return;
	}
	pthread_mutex_lock(&c->svc_lock);
	/* Read again under svc_lock: cl_unregister may have run meanwhile. */
	pthread_mutex_lock(&c->lock);
	fn = c->svc[e.service].fn;
	ud = c->svc[e.service].ud;
	pthread_mutex_unlock(&c->lock);
	if (fn)
		fn(ud, &from, e.body, e.body_len);
	else
		COUNT(c, unknown_service, 1);
	pthread_mutex_unlock(&c->svc_lock);
}

/* ------------------------------------------------------------------ the cluster process */

static void
send_heartbeat(cl_node *c)
{
	const char *addrs[CL_MEMBERS_MAX + 1];
	size_t n = 0, room = c->max_frame > CL_ENV_HEAD_MAX ? c->max_frame - CL_ENV_HEAD_MAX : 0;
	size_t cap = room < sizeof(c->hb) ? room : sizeof(c->hb);
	const char *own = c->link->addr(c->lctx);
	if (own[0]) {
		addrs[n++] = own;
		size_t est = 5 + 5 + strlen(own);
		for (size_t i = 0; i < CL_MEMBERS_MAX; i++) {
			const member *m = &c->members[i];
			if (!m->used || !m->pub.up || !m->pub.addr[0])
				continue;
			est += 5 + strlen(m->pub.addr);
			if (est > cap)
				break;
			addrs[n++] = m->pub.addr;
		}
	}
	size_t len = cl_env_hb_encode(addrs, n, c->hb, cap);
	send_frame(c, CL_K_HEARTBEAT, NULL, 0, c->hb, len);
}

static void
tick(cl_node *c)
{
	int64_t now = rt_now_ms();
	int64_t gap = now - c->last_tick_ms;
	c->last_tick_ms = now;
	send_heartbeat(c);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < CL_MEMBERS_MAX; i++) {
		member *m = &c->members[i];
		if (!m->used || !m->pub.up)
			continue;
		if (gap > (int64_t)c->down_ms / 2 && m->heard_ms < now - c->hb_ms)
			m->heard_ms = now - c->hb_ms; /* we were stalled, not they */
		/* down when it would be silent past down_ms before the next tick:
		 * declared within down_ms of its last frame */
		if (now - m->heard_ms > (int64_t)c->down_ms - (int64_t)c->hb_ms)
			member_down(c, m, "timeout");
	}
	for (size_t i = 0; i < c->nmons;) {
		if (!rt_alive(c->mons[i].pid))
			c->mons[i] = c->mons[--c->nmons];
		else
			i++;
	}
	pthread_mutex_unlock(&c->lock);
	if (c->link->tick)
		c->link->tick(c->lctx);
}

/* The cluster process's state (the runtime's). */
typedef struct cproc {
	cl_node *c;
	bool attached;
} cproc;

static int
cproc_init(void *state, const void *arg, size_t size)
{
	cproc *p = state;
	(void)size;
	memcpy(&p->c, arg, sizeof(p->c));
	cl_node *c = p->c;
	atomic_store(&c->pid, rt_self());
	rt_pin();
	if (c->link->attach(c->lctx) < 0) {
		rt_stop("cluster: cannot watch the link");
		return RT_ERROR;
	}
	p->attached = true;
	c->last_tick_ms = rt_now_ms();
	send_heartbeat(c);
	rt_send_after(c->hb_ms, rt_self(), TAG_TICK, NULL, 0);
	return RT_OK;
}

static int
cproc_handle(void *state, rt_msg *msg)
{
	cproc *p = state;
	if (msg->tag == TAG_TICK && msg->from == rt_self()) {
		tick(p->c);
		rt_send_after(p->c->hb_ms, rt_self(), TAG_TICK, NULL, 0);
	} else if (msg->tag == RT_MSG_IO) {
		p->c->link->on_io(p->c->lctx, rt_msg_data(msg));
	}
	return RT_OK;
}

static void
cproc_terminate(void *state, const char *reason)
{
	cproc *p = state;
	(void)reason;
	if (p->attached)
		p->c->link->detach(p->c->lctx);
}

static const rt_behaviour cproc_behaviour = {
    .name = "cluster",
    .state_size = sizeof(cproc),
    .init = cproc_init,
    .handle = cproc_handle,
    .terminate = cproc_terminate,
};

void
cl_link_count_dropped(cl_node *c, uint64_t n)
{
	COUNT(c, send_dropped, n);
}

/* ------------------------------------------------------------------ start / stop */

static uint64_t
wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

cl_node *
cl_start(const cl_opts *o)
{
	if (!o || !o->name || !cl_env_name_ok(o->name, strlen(o->name))) {
		fprintf(stderr,
		        "cluster: bad node name \"%s\" (letters, digits, \"@._-\", < %d "
		        "bytes)\n",
		        o && o->name ? o->name : "", CL_NAME_MAX);
		return NULL;
	}
	const cl_link_ops *link = NULL;
	const char *ln = o->link ? o->link : "mesh";
	if (strcmp(ln, "mesh") == 0)
		link = &cl_mesh_link;
	else if (strcmp(ln, "redis") == 0)
		link = &cl_redis_link;
	if (!link) {
		fprintf(stderr, "cluster: unknown link \"%s\" (mesh, redis)\n", ln);
		return NULL;
	}
	uint32_t hb = o->heartbeat_ms ? o->heartbeat_ms : 500;
	uint32_t down = o->down_after_ms ? o->down_after_ms : 3000;
	if (down / 2 < hb) {
		fprintf(
		    stderr,
		    "cluster: down_after_ms (%u) must be at least two heartbeat periods (%u ms)\n",
		    down, hb);
		return NULL;
	}
	cl_node *c = rt_xcalloc(1, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", o->name);
	c->inc = wall_ns();
	c->link = link;
	c->hb_ms = hb;
	c->down_ms = down;
	c->max_frame = o->max_frame ? o->max_frame : 16u << 20;
	if (c->max_frame < 1024)
		c->max_frame = 1024;
	c->parent = o->supervisor;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_mutex_init(&c->svc_lock, NULL);
	cl_opts lo = *o;
	lo.max_frame = c->max_frame;
	lo.queue_frames = o->queue_frames ? o->queue_frames : 8192;
	if (link->open(c, &lo, &c->lctx) < 0) {
		pthread_mutex_destroy(&c->lock);
		pthread_mutex_destroy(&c->send_lock);
		pthread_mutex_destroy(&c->svc_lock);
		free(c);
		return NULL;
	}
	rt_pid pid;
	if (c->parent) {
		rt_child_spec cs = {.id = "cluster",
		                    .behaviour = &cproc_behaviour,
		                    .arg = &c,
		                    .arg_size = sizeof(c),
		                    .restart = RT_PERMANENT,
		                    .shutdown_ms = 5000};
		pid = rt_sup_add_child(c->parent, &cs);
	} else {
		pid = rt_spawn(&cproc_behaviour, &c, sizeof(c));
	}
	if (!pid) {
		fprintf(stderr, "cluster: cannot start the cluster process\n");
		link->close(c->lctx);
		pthread_mutex_destroy(&c->lock);
		pthread_mutex_destroy(&c->send_lock);
		pthread_mutex_destroy(&c->svc_lock);
		free(c);
		return NULL;
	}
	rt_pid zero = RT_NOPID;
	atomic_compare_exchange_strong(&c->pid, &zero, pid); /* unless init ran already */
	return c;
}

void
cl_stop(cl_node *c)
{
	if (!c)
		return;
	send_frame(c, CL_K_GOODBYE, NULL, 0, NULL, 0);
	rt_pid pid = atomic_load(&c->pid);
	if (!c->parent || rt_sup_terminate_child(c->parent, pid) < 0)
		rt_exit(pid, "shutdown");
	if (rt_wait_exit(pid, STOP_WAIT_MS) < 0) {
		rt_log_error("cluster stop: the cluster process is still running after %d ms: "
		             "not freed",
		             STOP_WAIT_MS);
		return;
	}
	c->link->close(c->lctx);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->send_lock);
	pthread_mutex_destroy(&c->svc_lock);
	free(c);
}

int
cl_register(cl_node *c, int service, cl_handler_fn fn, void *ud)
{
	if (service <= 0 || service >= CL_SVC_MAX || !fn)
		return -1;
	int rc = -1;
	pthread_mutex_lock(&c->lock);
	if (!c->svc[service].fn) {
		c->svc[service].fn = fn;
		c->svc[service].ud = ud;
		rc = 0;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void
cl_unregister(cl_node *c, int service)
{
	if (service <= 0 || service >= CL_SVC_MAX)
		return;
	pthread_mutex_lock(&c->svc_lock);
	pthread_mutex_lock(&c->lock);
	c->svc[service].fn = NULL;
	c->svc[service].ud = NULL;
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->svc_lock);
}

const char *
cl_name(const cl_node *c)
{
	return c->name;
}

uint64_t
cl_incarnation(const cl_node *c)
{
	return c->inc;
}

const char *
cl_addr(const cl_node *c)
{
	return c->link->addr(c->lctx);
}

rt_pid
cl_pid(const cl_node *c)
{
	return atomic_load(&((cl_node *)c)->pid);
}

/* ------------------------------------------------------------------ monitors, members, stats */

int
cl_monitor_nodes(cl_node *c, rt_pid pid, uint32_t tag)
{
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	size_t i;
	for (i = 0; i < c->nmons; i++)
		if (c->mons[i].pid == pid)
			break;
	if (i < c->nmons) {
		c->mons[i].tag = tag;
	} else if (c->nmons == MONITORS_MAX) {
		rc = -1;
	} else {
		for (size_t k = 0; k < CL_MEMBERS_MAX; k++) {
			const member *m = &c->members[k];
			if (!m->used || !m->pub.up)
				continue;
			cl_node_event ev = {.up = true, .incarnation = m->pub.incarnation};
			memcpy(ev.name, m->pub.name, sizeof(ev.name));
			rt_send(pid, tag, &ev, sizeof(ev));
		}
		c->mons[c->nmons].pid = pid;
		c->mons[c->nmons].tag = tag;
		c->nmons++;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void
cl_demonitor_nodes(cl_node *c, rt_pid pid)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->nmons; i++)
		if (c->mons[i].pid == pid) {
			c->mons[i] = c->mons[--c->nmons];
			break;
		}
	pthread_mutex_unlock(&c->lock);
}

size_t
cl_members(cl_node *c, cl_member *out, size_t cap)
{
	size_t n = 0;
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < CL_MEMBERS_MAX; i++) {
		if (!c->members[i].used)
			continue;
		if (n < cap)
			out[n] = c->members[i].pub;
		n++;
	}
	pthread_mutex_unlock(&c->lock);
	return n;
}

void
cl_stats_get(cl_node *c, cl_stats *out)
{
#define LOAD(f) out->f = atomic_load_explicit(&c->st.f, memory_order_relaxed)
	LOAD(sent);
	LOAD(received);
	LOAD(bytes_sent);
	LOAD(bytes_received);
	LOAD(send_dropped);
	LOAD(lost);
	LOAD(malformed);
	LOAD(oversized);
	LOAD(bad_version);
	LOAD(unknown_service);
	LOAD(duplicates);
	LOAD(refused);
	LOAD(nodeups);
	LOAD(nodedowns);
#undef LOAD
}

/* Appends to buf as snprintf does; *len goes past cap when it is short. */
static void
put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(*len < cap ? buf + *len : NULL, *len < cap ? cap - *len : 0, fmt, ap);
	va_end(ap);
	*len += n > 0 ? (size_t)n : 0;
}

size_t
cl_stats_json(cl_node *c, char *buf, size_t cap)
{
	cl_stats s;
	cl_stats_get(c, &s);
	size_t len = 0;
	/* names and addresses are of JSON-safe characters (cl_env_*_ok) */
	put(buf, cap, &len,
	    "{\"name\":\"%s\",\"incarnation\":%llu,\"link\":\"%s\",\"addr\":\"%s\","
	    "\"protocol\":%d,\"sent\":%llu,\"received\":%llu,\"bytes_sent\":%llu,"
	    "\"bytes_received\":%llu,\"send_dropped\":%llu,\"lost\":%llu,\"malformed\":%llu,"
	    "\"oversized\":%llu,\"bad_version\":%llu,\"unknown_service\":%llu,"
	    "\"duplicates\":%llu,\"refused\":%llu,\"nodeups\":%llu,\"nodedowns\":%llu,"
	    "\"members\":[",
	    c->name, (unsigned long long)c->inc, c->link->name, cl_addr(c), CL_PROTOCOL_VERSION,
	    (unsigned long long)s.sent, (unsigned long long)s.received,
	    (unsigned long long)s.bytes_sent, (unsigned long long)s.bytes_received,
	    (unsigned long long)s.send_dropped, (unsigned long long)s.lost,
	    (unsigned long long)s.malformed, (unsigned long long)s.oversized,
	    (unsigned long long)s.bad_version, (unsigned long long)s.unknown_service,
	    (unsigned long long)s.duplicates, (unsigned long long)s.refused,
	    (unsigned long long)s.nodeups, (unsigned long long)s.nodedowns);
	pthread_mutex_lock(&c->lock);
	bool first = true;
	for (size_t i = 0; i < CL_MEMBERS_MAX; i++) {
		const member *m = &c->members[i];
		if (!m->used)
			continue;
		put(buf, cap, &len,
		    "%s{\"name\":\"%s\",\"incarnation\":%llu,\"addr\":\"%s\",\"up\":%s}",
		    first ? "" : ",", m->pub.name, (unsigned long long)m->pub.incarnation,
		    m->pub.addr, m->pub.up ? "true" : "false");
		first = false;
	}
	pthread_mutex_unlock(&c->lock);
	put(buf, cap, &len, "]}");
	return len < cap ? len : 0;
}
