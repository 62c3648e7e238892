/*
 * The mesh link (cluster/link.h): one nng bus0 socket per node.  It listens
 * on opts->listen and dials opts->peers, opts->seed and the addresses the
 * core learns from heartbeats (once each: nng_dial with NNG_FLAG_NONBLOCK
 * keeps a dialer that redials by itself after a failure or a lost pipe,
 * backing off from 100 ms to 2 s).  bus does not forward, so the dials form
 * the full mesh (the core decides who dials whom, cluster/node.c).
 *
 * Receiving.  The cluster process watches a dup() of the socket's
 * NNG_OPT_RECVFD (readable while a message waits; nng owns the original,
 * rt_io_open owns and closes the copy) and reads at most RECV_BUDGET frames
 * per readiness, then returns so that other processes of its scheduler run
 * (the watcher is level-triggered: it reports again).
 *
 * Batches.  One bus message carries a batch of frames, each behind its
 * length (4 bytes, big-endian): a sender appends its frame to the open batch
 * (under batch_lock, from any thread).  A frame that opens a batch sends it
 * at once, from the sender's thread, when the previous batch left at least
 * BATCH_GAP_MS ago; otherwise an nng timer (nng_sleep_aio, on nng's own
 * threads, so no scheduler that is busy with a fan-out delays it) sends it
 * when that time is up, with every frame appended meanwhile.  A batch that
 * would pass BATCH_MAX bytes goes out at once.  So a frame alone leaves
 * straight away, and under load frames leave in at most one batch per
 * BATCH_GAP_MS (plus those that filled up): nng's 16-message queue per pipe
 * (below) then holds 16 ms of traffic, enough for nng's threads to get the
 * CPU back on a loaded machine.
 * Batches go out under batch_lock, so frames leave in the order their
 * senders appended them.
 *
 * Sending.  nng_sendmsg(NNG_FLAG_NONBLOCK) into the socket's send queue
 * (NNG_OPT_SENDBUF: queue_frames, at most nng's 8192; nng's socket is
 * thread-safe); a full queue refuses the batch, whose frames are counted as
 * send drops.  A frame to one node goes to all: the envelope names the
 * addressee and the others drop it.
 *
 * Loss.  nng 1.5.2's bus copies each message from the socket's queue into a
 * queue per pipe of a fixed 16 messages (bus0_pipe_init in
 * src/sp/protocol/bus0/bus.c) and DROPS the copy when that queue is full
 * (nni_msgq_tryput), silently.  Batching is what keeps that queue short: 16
 * batches are up to 16 x BATCH_MAX bytes in flight per peer, on top of the
 * kernel's socket buffers, so a peer loses frames only when it takes less
 * than that for longer than the sender keeps producing (a stopped node).
 * The receivers see loss as gaps in the sender's sequence numbers
 * (cl_stats.lost).  Receiving does not drop: a pipe waits for room in the
 * socket's receive queue (NNG_OPT_RECVBUF), so a slow receiver slows its
 * senders' pipes (then their queues fill, then loss).
 *
 * Two pipes per pair.  Two nodes that dial each other (each given the other
 * in --peers, or learning of each other at once) are joined by two pipes,
 * and bus brings every frame twice: the core's sequence numbers drop the
 * second copy (cl_stats.duplicates).  (Closing one of the two dialers would
 * save the copy, but nng 1.5.2's nng_close then hangs now and then.)
 *
 * Size.  NNG_OPT_RECVMAXSZ is max_frame: nng closes a pipe that brings a
 * larger frame (the far end's dialer redials); the core never sends one.
 *
 * Stop.  nng 1.5.2 drops what its queues hold when the socket closes (no
 * linger): close waits LINGER_MS first, so that the goodbye leaves.
 */
#include <fcntl.h>
#include <nng/nng.h>
#include <nng/protocol/bus0/bus.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/envelope.h"
#include "cluster/link.h"
#include "runtime/xalloc.h"

#define RECV_BUDGET 64
#define DIALED_MAX 512 /* addresses dialed (peers, seed, learned) */
#define NNG_QUEUE_MAX 8192
#define LINGER_MS 50
#define CLOSE_WAIT_MS 2000     /* whole seconds */
#define BATCH_MAX (256 * 1024) /* bytes of one bus message, unless one frame is larger */
#define BATCH_GAP_MS 1         /* least time between two flushed batches */

/* The link's state.  sock and addr are set by open, then read-only (nng_*
 * calls on sock from any thread); io and dialed are the cluster process's
 * (and open's, before it exists). */
typedef struct mesh {
	cl_node *c;
	nng_socket sock;
	int recvfd; /* nng's: never closed here */
	rt_io *io;
	char addr[CL_ADDR_MAX];
	char (*dialed)[CL_ADDR_MAX];
	size_t ndialed;
	bool warned_full;
	pthread_mutex_t batch_lock; /* guards batch, nbatch; held while a batch is sent */
	nng_msg *batch;             /* the open batch, or NULL */
	uint32_t nbatch;            /* frames in it */
	int64_t sent_ms;            /* when the last batch was sent (rt_now_ms) */
	nng_aio *timer;             /* sends the open batch when the gap is over */
	bool timer_armed;
} mesh;

/* Dials addr unless it is ours or dialed already.  -1 for an address nng
 * refuses (a bad URL). */
static int
dial(mesh *m, const char *addr)
{
	if (!addr || !addr[0] || strcmp(addr, m->addr) == 0)
		return 0;
	for (size_t i = 0; i < m->ndialed; i++)
		if (strcmp(m->dialed[i], addr) == 0)
			return 0;
	if (m->ndialed == DIALED_MAX) {
		if (!m->warned_full)
			rt_log_warning("cluster: %d addresses dialed already: not dialing %s",
			               DIALED_MAX, addr);
		m->warned_full = true;
		return 0;
	}
	if (strlen(addr) >= CL_ADDR_MAX)
		return -1;
	/* remembered even when refused, so that it is tried once */
	snprintf(m->dialed[m->ndialed++], CL_ADDR_MAX, "%s", addr);
	int rv = nng_dial(m->sock, addr, NULL, NNG_FLAG_NONBLOCK);
	if (rv != 0) {
		fprintf(stderr, "cluster: cannot dial %s: %s\n", addr, nng_strerror(rv));
		return -1;
	}
	return 0;
}

/* Listens on url; m->addr gets the address others dial (the port the system
 * chose for a tcp:// port 0). */
static int
listen_on(mesh *m, const char *url)
{
	nng_listener l;
	int rv = nng_listen(m->sock, url, &l, 0);
	if (rv != 0) {
		fprintf(stderr, "cluster: cannot listen on %s: %s\n", url, nng_strerror(rv));
		return -1;
	}
	snprintf(m->addr, sizeof(m->addr), "%s", url);
	size_t n = strlen(url);
	nng_sockaddr sa;
	if (n > 2 && strcmp(url + n - 2, ":0") == 0 &&
	    nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa) == 0 && sa.s_family == NNG_AF_INET) {
		const uint8_t *ip = (const uint8_t *)&sa.s_in.sa_addr;
		const uint8_t *pt = (const uint8_t *)&sa.s_in.sa_port;
		snprintf(m->addr, sizeof(m->addr), "tcp://%u.%u.%u.%u:%u", ip[0], ip[1], ip[2],
		         ip[3], (unsigned)(pt[0] << 8 | pt[1]));
	}
	if (!cl_env_addr_ok(m->addr, strlen(m->addr))) {
		fprintf(stderr,
		        "cluster: cannot use %s as an address (letters, digits, "
		        "\":/._-[]%%+@\")\n",
		        m->addr);
		return -1;
	}
	return 0;
}

static void batch_timer(void *arg);

static void
mesh_free(mesh *m)
{
	if (m->timer)
		nng_aio_free(m->timer);
	pthread_mutex_destroy(&m->batch_lock);
	free(m->dialed);
	free(m);
}

static int
mesh_open(cl_node *c, const cl_opts *o, void **ctx)
{
	mesh *m = rt_xcalloc(1, sizeof(*m));
	m->c = c;
	m->recvfd = -1;
	m->dialed = rt_xcalloc(DIALED_MAX, sizeof(*m->dialed));
	pthread_mutex_init(&m->batch_lock, NULL);
	if (nng_aio_alloc(&m->timer, batch_timer, m) != 0) {
		fprintf(stderr, "cluster: cannot allocate an nng timer\n");
		mesh_free(m);
		return -1;
	}
	int rv = nng_bus0_open(&m->sock);
	if (rv != 0) {
		fprintf(stderr, "cluster: cannot open a bus socket: %s\n", nng_strerror(rv));
		mesh_free(m);
		return -1;
	}
	int q = o->queue_frames > NNG_QUEUE_MAX ? NNG_QUEUE_MAX : (int)o->queue_frames;
	if (q < 1)
		q = 1;
	if ((rv = nng_socket_set_size(m->sock, NNG_OPT_RECVMAXSZ, o->max_frame)) != 0 ||
	    (rv = nng_socket_set_int(m->sock, NNG_OPT_SENDBUF, q)) != 0 ||
	    (rv = nng_socket_set_int(m->sock, NNG_OPT_RECVBUF, q)) != 0 ||
	    (rv = nng_socket_set_ms(m->sock, NNG_OPT_RECONNMINT, 100)) != 0 ||
	    (rv = nng_socket_set_ms(m->sock, NNG_OPT_RECONNMAXT, 2000)) != 0 ||
	    (rv = nng_socket_get_int(m->sock, NNG_OPT_RECVFD, &m->recvfd)) != 0) {
		fprintf(stderr, "cluster: cannot set up the bus socket: %s\n", nng_strerror(rv));
		goto fail;
	}
	if (o->listen && listen_on(m, o->listen) < 0)
		goto fail;
	for (const char *const *p = o->peers; p && *p; p++)
		if (dial(m, *p) < 0)
			goto fail;
	if (o->seed && dial(m, o->seed) < 0)
		goto fail;
	*ctx = m;
	return 0;
fail:
	m->ndialed = 0;
	nng_close(m->sock);
	mesh_free(m);
	return -1;
}

static int
mesh_attach(void *ctx)
{
	mesh *m = ctx;
	int fd = dup(m->recvfd);
	if (fd < 0)
		return -1;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	m->io = rt_io_open(fd, RT_IO_READ, m);
	if (!m->io) {
		close(fd);
		return -1;
	}
	return 0;
}

static void
mesh_on_io(void *ctx, const rt_io_event *ev)
{
	mesh *m = ctx;
	(void)ev;
	for (int i = 0; i < RECV_BUDGET; i++) {
		nng_msg *msg;
		if (nng_recvmsg(m->sock, &msg, NNG_FLAG_NONBLOCK) != 0)
			break; /* NNG_EAGAIN: nothing more; NNG_ECLOSED: stopping */
		const uint8_t *p = nng_msg_body(msg);
		size_t left = nng_msg_len(msg);
		while (left >= 4) {
			size_t n =
			    (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
			if (n > left - 4)
				break;
			cl_link_deliver(m->c, p + 4, n);
			p += 4 + n;
			left -= 4 + n;
		}
		if (left) /* a batch that lies about its lengths: the rest is dropped */
			cl_link_count_malformed(m->c);
		nng_msg_free(msg);
	}
}

static void
mesh_tick(void *ctx)
{
	(void)ctx; /* nng's dialers redial by themselves */
}

static void
mesh_detach(void *ctx)
{
	mesh *m = ctx;
	/* The process is exiting: the runtime closes the watched copy of the
	 * fd with it (rt_io_close is not safe in every terminate). */
	m->io = NULL;
}

/* Sends the open batch (under batch_lock); its frames are counted as
 * dropped when nng's queue is full. */
static void
send_batch(mesh *m)
{
	nng_msg *b = m->batch;
	uint32_t n = m->nbatch;
	m->batch = NULL;
	m->nbatch = 0;
	m->sent_ms = rt_now_ms();
	if (b && nng_sendmsg(m->sock, b, NNG_FLAG_NONBLOCK) != 0) {
		nng_msg_free(b);
		cl_link_count_dropped(m->c, n);
	}
}

/* nng's timer (one of nng's threads): the gap is over, the batch goes. */
static void
batch_timer(void *arg)
{
	mesh *m = arg;
	pthread_mutex_lock(&m->batch_lock);
	m->timer_armed = false;
	if (nng_aio_result(m->timer) == 0)
		send_batch(m);
	pthread_mutex_unlock(&m->batch_lock);
}

/* nng_close in a thread of its own, waited for CLOSE_WAIT_MS: nng 1.5.2's
 * nng_close now and then never returns (a race in its endpoint teardown,
 * nanomsg/nng#1543, fixed after 1.5.2).  The closer is shared by the two
 * threads and freed by the last one: by the waiter when the close returned
 * in time, else by the close thread if it ever returns. */
typedef struct closer {
	nng_socket sock;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done, abandoned;
} closer;

static void
closer_free(closer *k)
{
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->mu);
	free(k);
}

static void *
close_thread(void *arg)
{
	closer *k = arg;
	nng_close(k->sock);
	pthread_mutex_lock(&k->mu);
	k->done = true;
	bool abandoned = k->abandoned;
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->mu);
	if (abandoned)
		closer_free(k);
	return NULL;
}

/* Closes sock; true when it closed within CLOSE_WAIT_MS. */
static bool
close_socket(nng_socket sock)
{
	closer *k = rt_xcalloc(1, sizeof(*k));
	k->sock = sock;
	pthread_mutex_init(&k->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_t t;
	if (pthread_create(&t, NULL, close_thread, k) != 0) {
		nng_close(sock);
		closer_free(k);
		return true;
	}
	pthread_detach(t);
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += CLOSE_WAIT_MS / 1000;
	pthread_mutex_lock(&k->mu);
	while (!k->done && pthread_cond_timedwait(&k->cv, &k->mu, &until) == 0)
		;
	bool done = k->done;
	k->abandoned = !done;
	pthread_mutex_unlock(&k->mu);
	if (done)
		closer_free(k);
	return done;
}

static void
mesh_close(void *ctx)
{
	mesh *m = ctx;
	nng_aio_stop(m->timer); /* waits for a running callback */
	pthread_mutex_lock(&m->batch_lock);
	send_batch(m);
	pthread_mutex_unlock(&m->batch_lock);
	usleep(LINGER_MS * 1000);
	if (!close_socket(m->sock))
		rt_log_warning("cluster: the bus socket did not close within %d ms (nng 1.5.2's "
		               "close race): left behind",
		               CLOSE_WAIT_MS);
	mesh_free(m);
}

static int
mesh_sendv(void *ctx, const char *node, const void *head, size_t hlen, const void *body,
           size_t blen)
{
	mesh *m = ctx;
	(void)node;
	size_t n = hlen + blen;
	if (n > UINT32_MAX)
		return -1;
	int rc = 0;
	bool opened = false;
	pthread_mutex_lock(&m->batch_lock);
	if (m->batch && nng_msg_len(m->batch) + 4 + n > BATCH_MAX)
		send_batch(m);
	if (!m->batch) {
		if (nng_msg_alloc(&m->batch, 0) != 0 ||
		    nng_msg_reserve(m->batch, 4 + n > BATCH_MAX ? 4 + n : 4096) != 0) {
			if (m->batch)
				nng_msg_free(m->batch);
			m->batch = NULL;
			rc = -1;
			goto out;
		}
		opened = true;
	}
	if (nng_msg_append_u32(m->batch, (uint32_t)n) != 0 ||
	    nng_msg_append(m->batch, head, hlen) != 0 ||
	    (blen && nng_msg_append(m->batch, body, blen) != 0)) {
		nng_msg_free(m->batch); /* out of memory: drop what the batch held */
		cl_link_count_dropped(m->c, m->nbatch);
		m->batch = NULL;
		m->nbatch = 0;
		rc = -1;
		goto out;
	}
	m->nbatch++;
	int64_t since = rt_now_ms() - m->sent_ms;
	if (nng_msg_len(m->batch) >= BATCH_MAX ||
	    (opened && (since < 0 || since >= BATCH_GAP_MS))) {
		send_batch(m);
	} else if (opened && !m->timer_armed) {
		m->timer_armed = true;
		nng_sleep_aio((nng_duration)(BATCH_GAP_MS - since), m->timer);
	}
out:
	pthread_mutex_unlock(&m->batch_lock);
	return rc;
}

static int
mesh_send_all(void *ctx, const void *frame, size_t len)
{
	return mesh_sendv(ctx, NULL, frame, len, NULL, 0);
}

static int
mesh_send_to(void *ctx, const char *node, const void *frame, size_t len)
{
	return mesh_sendv(ctx, node, frame, len, NULL, 0);
}

static void
mesh_learn(void *ctx, const char *addr)
{
	dial(ctx, addr);
}

static const char *
mesh_addr(void *ctx)
{
	return ((mesh *)ctx)->addr;
}

const cl_link_ops cl_mesh_link = {
    .name = "mesh",
    .open = mesh_open,
    .attach = mesh_attach,
    .on_io = mesh_on_io,
    .tick = mesh_tick,
    .detach = mesh_detach,
    .close = mesh_close,
    .send_all = mesh_send_all,
    .send_to = mesh_send_to,
    .sendv = mesh_sendv,
    .learn = mesh_learn,
    .addr = mesh_addr,
};
