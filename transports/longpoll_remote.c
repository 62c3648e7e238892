/*
 * Long-poll requests for another node's sessions (longpoll.h).
 *
 * A session lives on the node that opened it, and its token names that
 * node.  With one URL in front of many nodes (the cluster's one-port mode,
 * or any load balancer), a client's polls and POSTs land on any node.  As
 * Phoenix sends {:flush, ...} and {:dispatch, ...} to the LongPoll.Server's
 * pid on a connected node, the node that gets such a request sends the op
 * to the session's node as a frame of CL_SVC_LONGPOLL, and the session's
 * answer comes back the same way to the request, which waits parked as it
 * would for a session of its own node.
 *
 * Frames (msgpack arrays):
 *
 *     [1, op: 1 poll | 2 post, ref: uint, id: bin 16, messages: [str | bin ...]]
 *     [2, ref: uint, body: bin]        the session's answer (a JSON text)
 *     [3, ref: uint]                   no such session on that node
 *
 * A POST's messages travel as msgpack strs (text) and bins (binary), at
 * most LP_MAX_BATCH, and are packed again for the session on arrival.
 * Every frame is validated like client input (cl_msgpack_scan, then the
 * exact shape); a bad one is dropped and counted (lp_remote_refused), with
 * one log line per table.
 *
 * Who gets an answer.  The requesting node keeps ref -> the parked
 * connection's pid and the node asked in t->pending (ref is unique per
 * endpoint); an answer reaches a connection only through that table, never
 * through a pid taken from a frame, and only from the node that was asked;
 * the entry goes when the request is answered or given up
 * (lp_remote_forget).  The session's node needs no table: the op's
 * origin field names the node to answer (lp_answer_to).
 *
 * Loss.  The link may drop a frame (a node down, a full queue): a poll then
 * ends at its deadline with 204 and the client polls again, a POST with
 * {"status":408}; frames the session had given that answer are lost, as
 * Phoenix loses a message to a node that went down.  Counted in
 * lp_remote_lost where this node can see it.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/xalloc.h"
#include "transports/longpoll.h"

enum { LPR_REQ = 1, LPR_ANSWER = 2, LPR_NOSESSION = 3 };
enum { LPR_POLL = 1, LPR_POST = 2 };

/* A request of this node waiting on another node (t->pending's values,
 * malloc'ed; under t->mu). */
typedef struct lp_pending {
	rt_pid pid;             /* the parked connection */
	char node[CL_NAME_MAX]; /* the node asked: only it may answer */
} lp_pending;

static void
ref_key(uint64_t ref, char out[17])
{
	snprintf(out, 17, "%016llx", (unsigned long long)ref);
}

static void
refused(lp_table *t, const cl_member *from, const char *what)
{
	if (atomic_fetch_add_explicit(&t->remote_refused, 1, memory_order_relaxed) == 0)
		rt_log_warning("longpoll: dropped a malformed frame from node %s: %s "
		               "(logged once; counted as lp_remote_refused)",
		               from->name, what);
}

/* ------------------------------------------------------------------ sending */

static int
send_frame(lp_table *t, const char *node, msgpack_sbuffer *sb)
{
	int rc = cl_send_to(t->cl, node, CL_SVC_LONGPOLL, sb->data, sb->size);
	msgpack_sbuffer_destroy(sb);
	return rc;
}

static void
send_nosession(lp_table *t, const char *node, uint64_t ref)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, LPR_NOSESSION);
	msgpack_pack_uint64(&pk, ref);
	if (send_frame(t, node, &sb) < 0)
		atomic_fetch_add_explicit(&t->remote_lost, 1, memory_order_relaxed);
}

int
lp_remote_route(lp_table *t, const lp_sid *sid, uint32_t op, uint64_t ref, rt_buf *buf)
{
	size_t nl = strlen(sid->node);
	if (nl == 0 || nl >= CL_NAME_MAX) { /* no node of a cluster has such a name */
		rt_buf_release(buf);
		return -1;
	}
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 5);
	msgpack_pack_uint8(&pk, LPR_REQ);
	msgpack_pack_uint8(&pk, op == LP_OP_POST ? LPR_POST : LPR_POLL);
	msgpack_pack_uint64(&pk, ref);
	msgpack_pack_bin(&pk, LP_ID_LEN);
	msgpack_pack_bin_body(&pk, sid->id, LP_ID_LEN);
	/* The packed messages (longpoll.h: LP_PACK_HDR), ours: well formed. */
	const uint8_t *p = buf ? buf->data : NULL;
	size_t n = buf ? buf->len : 0, count = 0;
	for (size_t pos = 0; pos + LP_PACK_HDR <= n; count++) {
		uint32_t len;
		memcpy(&len, p + pos, 4);
		pos += LP_PACK_HDR + len;
	}
	msgpack_pack_array(&pk, count);
	for (size_t pos = 0; pos + LP_PACK_HDR <= n;) {
		uint32_t len;
		memcpy(&len, p + pos, 4);
		const uint8_t *m = p + pos + LP_PACK_HDR;
		if (p[pos + 4]) {
			msgpack_pack_bin(&pk, len);
			msgpack_pack_bin_body(&pk, m, len);
		} else {
			msgpack_pack_str(&pk, len);
			msgpack_pack_str_body(&pk, m, len);
		}
		pos += LP_PACK_HDR + len;
	}
	rt_buf_release(buf);

	char key[17];
	ref_key(ref, key);
	lp_pending *pe = rt_xmalloc(sizeof(*pe));
	pe->pid = rt_self();
	memcpy(pe->node, sid->node, nl + 1);
	pthread_mutex_lock(&t->mu);
	free(rt_strmap_put(&t->pending, key, pe)); /* refs are unique: NULL */
	pthread_mutex_unlock(&t->mu);
	if (send_frame(t, sid->node, &sb) < 0) {
		lp_remote_forget(t, ref);
		return -1;
	}
	atomic_fetch_add_explicit(&t->remote_sent, 1, memory_order_relaxed);
	return 0;
}

void
lp_remote_forget(lp_table *t, uint64_t ref)
{
	char key[17];
	ref_key(ref, key);
	pthread_mutex_lock(&t->mu);
	free(rt_strmap_del(&t->pending, key));
	pthread_mutex_unlock(&t->mu);
}

void
lp_answer_to(lp_table *t, const lp_waiter *w, rt_buf *body)
{
	if (!w->node[0]) {
		lp_answer a = {.ref = w->ref, .http_status = 200};
		rt_send_buf(w->pid, LP_MSG_ANSWER, &a, sizeof(a), body);
		return;
	}
	if (!t->cl) { /* cannot happen: a waiter of another node came over the cluster */
		rt_buf_release(body);
		atomic_fetch_add_explicit(&t->remote_lost, 1, memory_order_relaxed);
		return;
	}
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_uint8(&pk, LPR_ANSWER);
	msgpack_pack_uint64(&pk, w->ref);
	size_t n = body ? body->len : 0;
	msgpack_pack_bin(&pk, n);
	if (n)
		msgpack_pack_bin_body(&pk, body->data, n);
	rt_buf_release(body);
	if (send_frame(t, w->node, &sb) < 0)
		atomic_fetch_add_explicit(&t->remote_lost, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ receiving */

/* The connection waiting for ref on node `from`, taken out of the table
 * (RT_NOPID: none; an entry of another node stays). */
static rt_pid
take_pending(lp_table *t, uint64_t ref, const char *from)
{
	char key[17];
	ref_key(ref, key);
	rt_pid pid = RT_NOPID;
	pthread_mutex_lock(&t->mu);
	lp_pending *pe = rt_strmap_get(&t->pending, key);
	if (pe && strcmp(pe->node, from) == 0) {
		pid = pe->pid;
		rt_strmap_del(&t->pending, key);
		free(pe);
	}
	pthread_mutex_unlock(&t->mu);
	return pid;
}

rt_buf *
lp_remote_pack(const struct msgpack_object *msgs)
{
	const msgpack_object_array *a = &msgs->via.array;
	size_t total = 0;
	for (uint32_t i = 0; i < a->size; i++)
		total += LP_PACK_HDR + a->ptr[i].via.str.size; /* str and bin: same layout */
	rt_buf *packed = rt_buf_alloc(total ? total : 1);
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *m = &a->ptr[i];
		bool binary = m->type == MSGPACK_OBJECT_BIN;
		uint32_t len = binary ? m->via.bin.size : m->via.str.size;
		uint8_t hdr[LP_PACK_HDR];
		memcpy(hdr, &len, 4);
		hdr[4] = binary;
		packed = rt_buf_append(packed, hdr, LP_PACK_HDR);
		packed = rt_buf_append(packed, binary ? m->via.bin.ptr : m->via.str.ptr, len);
	}
	return packed;
}

/* An op for a session of this node, from `from`. */
static void
serve_request(lp_table *t, const cl_member *from, const msgpack_object *f)
{
	uint64_t op = f[1].via.u64, ref = f[2].via.u64;
	const msgpack_object_array *msgs = &f[4].via.array;
	if (op == LPR_POLL && msgs->size != 0) {
		refused(t, from, "a poll with messages");
		return;
	}
	rt_pid pid = lp_lookup(t, (const uint8_t *)f[3].via.bin.ptr);
	if (!pid) {
		send_nosession(t, from->name, ref);
		return;
	}
	rt_buf *packed = op == LPR_POST ? lp_remote_pack(&f[4]) : NULL;
	lp_op o = {.ref = ref};
	snprintf(o.origin, sizeof(o.origin), "%s", from->name);
	if (rt_send_buf(pid, op == LPR_POST ? LP_OP_POST : LP_OP_POLL, &o, sizeof(o), packed) < 0) {
		send_nosession(t, from->name, ref); /* ended since the lookup */
		return;
	}
	atomic_fetch_add_explicit(&t->remote_served, 1, memory_order_relaxed);
}

/* The shape of a frame: 1..LP_MAX_BATCH message kinds are checked here. */
static bool
shape_ok(const msgpack_object *o)
{
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 2 ||
	    o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    o->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return false;
	const msgpack_object *f = o->via.array.ptr;
	switch (f[0].via.u64) {
	case LPR_REQ: {
		if (o->via.array.size != 5 || f[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    (f[1].via.u64 != LPR_POLL && f[1].via.u64 != LPR_POST) ||
		    f[3].type != MSGPACK_OBJECT_BIN || f[3].via.bin.size != LP_ID_LEN ||
		    f[4].type != MSGPACK_OBJECT_ARRAY || f[4].via.array.size > LP_MAX_BATCH)
			return false;
		for (uint32_t i = 0; i < f[4].via.array.size; i++) {
			msgpack_object_type ty = f[4].via.array.ptr[i].type;
			if (ty != MSGPACK_OBJECT_STR && ty != MSGPACK_OBJECT_BIN)
				return false;
		}
		return true;
	}
	case LPR_ANSWER:
		return o->via.array.size == 3 && f[2].type == MSGPACK_OBJECT_BIN;
	case LPR_NOSESSION:
		return o->via.array.size == 2;
	default:
		return false;
	}
}

const char *
lp_remote_parse(const void *body, size_t len, struct msgpack_unpacked *u)
{
	msgpack_unpacked_init(u);
	if (!cl_msgpack_scan(body, len))
		return "not one well-formed msgpack object";
	size_t off = 0;
	if (msgpack_unpack_next(u, body, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
	    !shape_ok(&u->data))
		return "not a long-poll frame";
	return NULL;
}

/* The cluster's handler of CL_SVC_LONGPOLL frames (in the cluster process). */
static void
remote_receive(void *ud, const cl_member *from, const void *body, size_t len)
{
	lp_table *t = ud;
	msgpack_unpacked u;
	const char *bad = lp_remote_parse(body, len, &u);
	if (bad) {
		msgpack_unpacked_destroy(&u);
		refused(t, from, bad);
		return;
	}
	const msgpack_object *f = u.data.via.array.ptr;
	switch (f[0].via.u64) {
	case LPR_REQ:
		serve_request(t, from, f);
		break;
	case LPR_ANSWER: {
		rt_pid pid = take_pending(t, f[1].via.u64, from->name);
		if (!pid) { /* answered by its deadline already, or not ours */
			atomic_fetch_add_explicit(&t->remote_lost, 1, memory_order_relaxed);
			break;
		}
		lp_answer a = {.ref = f[1].via.u64, .http_status = 200};
		rt_buf *b = rt_buf_alloc(f[2].via.bin.size ? f[2].via.bin.size : 1);
		b = rt_buf_append(b, f[2].via.bin.ptr, f[2].via.bin.size);
		rt_send_buf(pid, LP_MSG_ANSWER, &a, sizeof(a), b);
		break;
	}
	case LPR_NOSESSION: {
		uint64_t ref = f[1].via.u64;
		rt_pid pid = take_pending(t, ref, from->name);
		if (pid)
			rt_send(pid, LP_MSG_NOSESSION, &ref, sizeof(ref));
		break;
	}
	}
	msgpack_unpacked_destroy(&u);
}

int
lp_remote_start(lp_table *t)
{
	if (!t->cl)
		return 0;
	if (cl_register(t->cl, CL_SVC_LONGPOLL, remote_receive, t) < 0) {
		rt_log_error("longpoll: the cluster's long-poll service is taken");
		return -1;
	}
	t->remote_registered = true;
	return 0;
}

void
lp_remote_stop(lp_table *t)
{
	if (t->remote_registered)
		cl_unregister(t->cl, CL_SVC_LONGPOLL);
	t->remote_registered = false;
}
