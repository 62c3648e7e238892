/*
 * pubsub_cluster.c: PubSub's adapter over the cluster, the role of
 * Phoenix.PubSub.PG2: a broadcast is one frame to every other node (one
 * bus message per remote node, or one Redis PUBLISH), and each node
 * dispatches it to its own subscribers with the dispatcher it names.
 *
 * The frame's body (service CL_SVC_PUBSUB), msgpack:
 *
 *     [topic: str, tag: uint, dispatcher: str, flags: uint, message: bin]
 *
 * flags are the message buffer's (the fastlane's CH_BCAST_BINARY).  A body
 * from another node is validated like a message from a client: exact
 * shape, bounded strings, a known dispatcher whose check accepts the
 * message (ch_ps_remote_broadcast); anything else is dropped and counted.
 *
 * Order: frames from one publishing thread reach a node in order (the
 * link's guarantee) and are dispatched in that order by the cluster
 * process, so two broadcasts of one process reach every remote subscriber
 * in the order sent, as they do locally.
 */
#include <msgpack.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "channels/internal.h"

/* Longest topic and dispatcher name taken from another node. */
#define PSC_TOPIC_MAX 4096
#define PSC_NAME_MAX 64

/* The adapter's state.  Owner: the endpoint (ps_cluster_new / _free); ps
 * is set once by ps_cluster_bind, read by the cluster process; counters
 * are atomics written by the cluster process, read by anyone. */
struct ps_cluster {
	cl_node *cl;
	_Atomic(ch_pubsub *) ps;
	_Atomic uint64_t received, refused;
};

static const char *
psc_node_name(void *ctx)
{
	struct ps_cluster *pc = ctx;
	return cl_name(pc->cl);
}

/* Encodes a broadcast's body into sb (msgpack). */
static void
psc_pack(msgpack_sbuffer *sb, const char *topic, uint32_t tag, const rt_buf *message,
         const char *dispatcher)
{
	msgpack_packer pk;
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	size_t tl = strlen(topic), dl = strlen(dispatcher);
	msgpack_pack_array(&pk, 5);
	msgpack_pack_str(&pk, tl);
	msgpack_pack_str_body(&pk, topic, tl);
	msgpack_pack_uint32(&pk, tag);
	msgpack_pack_str(&pk, dl);
	msgpack_pack_str_body(&pk, dispatcher, dl);
	msgpack_pack_uint32(&pk, message->flags);
	msgpack_pack_bin(&pk, message->len);
	msgpack_pack_bin_body(&pk, message->data, message->len);
}

static int
psc_send(struct ps_cluster *pc, const char *node, const char *topic, uint32_t tag,
         const rt_buf *message, const char *dispatcher)
{
	msgpack_sbuffer sb;
	psc_pack(&sb, topic, tag, message, dispatcher);
	int rc = node ? cl_send_to(pc->cl, node, CL_SVC_PUBSUB, sb.data, sb.size)
	              : cl_send_all(pc->cl, CL_SVC_PUBSUB, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int
psc_broadcast(void *ctx, const char *topic, uint32_t tag, const rt_buf *message,
              const char *dispatcher)
{
	return psc_send(ctx, NULL, topic, tag, message, dispatcher);
}

static int
psc_direct_broadcast(void *ctx, const char *node, const char *topic, uint32_t tag,
                     const rt_buf *message, const char *dispatcher)
{
	return psc_send(ctx, node, topic, tag, message, dispatcher);
}

const ch_ps_adapter ps_cluster_adapter = {
    .name = "cluster",
    .node_name = psc_node_name,
    .broadcast = psc_broadcast,
    .direct_broadcast = psc_direct_broadcast,
};

/* Copies a msgpack string of 1..cap-1 bytes with no NUL into out. */
static bool
psc_str(const msgpack_object *o, char *out, size_t cap)
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 || o->via.str.size >= cap ||
	    memchr(o->via.str.ptr, 0, o->via.str.size))
		return false;
	memcpy(out, o->via.str.ptr, o->via.str.size);
	out[o->via.str.size] = 0;
	return true;
}

/* The cluster's handler of CL_SVC_PUBSUB frames (in the cluster process). */
static void
psc_receive(void *ud, const cl_member *from, const void *body, size_t len)
{
	struct ps_cluster *pc = ud;
	ch_pubsub *ps = atomic_load_explicit(&pc->ps, memory_order_acquire);
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	size_t off = 0;
	char topic[PSC_TOPIC_MAX], dispatcher[PSC_NAME_MAX];
	/* An array of 5 scalars (0x95) and nothing else: msgpack-c allocates
	 * room for whatever count a container's header claims, so no other
	 * container may reach its unpacker. */
	bool ok = ps && len > 0 && *(const uint8_t *)body == 0x95 &&
	          msgpack_unpack_next(&u, body, len, &off) == MSGPACK_UNPACK_SUCCESS &&
	          off == len && u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 5;
	const msgpack_object *f = ok ? u.data.via.array.ptr : NULL;
	ok = ok && psc_str(&f[0], topic, sizeof(topic)) &&
	     f[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && f[1].via.u64 <= UINT32_MAX &&
	     psc_str(&f[2], dispatcher, sizeof(dispatcher)) &&
	     f[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER && f[3].via.u64 <= UINT32_MAX &&
	     f[4].type == MSGPACK_OBJECT_BIN;
	if (ok) {
		rt_buf *m = rt_buf_alloc(f[4].via.bin.size);
		m = rt_buf_append(m, f[4].via.bin.ptr, f[4].via.bin.size);
		m->flags = (uint32_t)f[3].via.u64;
		ok = ch_ps_remote_broadcast(ps, topic, (uint32_t)f[1].via.u64, m, dispatcher) == 0;
	}
	msgpack_unpacked_destroy(&u);
	if (ok) {
		atomic_fetch_add_explicit(&pc->received, 1, memory_order_relaxed);
	} else if (atomic_fetch_add_explicit(&pc->refused, 1, memory_order_relaxed) == 0) {
		rt_log(RT_LOG_WARNING,
		       "pubsub: dropped a malformed broadcast from node %s "
		       "(logged once; counted in /api/cluster)",
		       from->name);
	}
}

struct ps_cluster *
ps_cluster_new(cl_node *cl)
{
	struct ps_cluster *pc = rt_xcalloc(1, sizeof(*pc));
	pc->cl = cl;
	if (cl_register(cl, CL_SVC_PUBSUB, psc_receive, pc) < 0) {
		free(pc);
		return NULL;
	}
	return pc;
}

void
ps_cluster_bind(struct ps_cluster *pc, ch_pubsub *ps)
{
	atomic_store_explicit(&pc->ps, ps, memory_order_release);
}

void
ps_cluster_free(struct ps_cluster *pc)
{
	free(pc);
}

uint64_t
ps_cluster_refused(const struct ps_cluster *pc)
{
	return atomic_load_explicit(&pc->refused, memory_order_relaxed);
}
