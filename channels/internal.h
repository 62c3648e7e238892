/*
 * internal.h: structures shared by the files of channels/ (not for apps).
 */
#ifndef channels_internal_h
#define channels_internal_h

#include <pthread.h>
#include <stdatomic.h>

#include "channels/channels.h"
#include "channels/pubsub.h"
#include "channels/serializer.h"
#include "channels/token.h"
#include "channels/transport.h"
#include "runtime/strmap.h"
#include "runtime/xalloc.h"

/* Messages between the socket (transport process) and its channel processes. */
enum {
	CHAN_IN =
	    0xFFFE0100u, /* socket -> channel: a client event (chan_in_hdr + strings + payload) */
	CHAN_LEAVE,      /* socket -> channel: phx_leave (payload: ref raw, NUL-terminated) */
	CHAN_JOINED,     /* channel -> socket: join result (chan_joined + reply JSON) */
	CHAN_CLOSE,      /* channel -> socket: stopping cleanly, send phx_close */
};

/* The head of a CHAN_IN message: written by the socket (transport process)
 * into the message, read by the channel process that receives it. */
typedef struct chan_in_hdr {
	uint32_t ref_len; /* raw ref token */
	uint32_t event_len;
	uint32_t payload_len;
	uint8_t binary;    /* payload is binary (else JSON text) */
	uint8_t event_raw; /* event is a raw JSON token: not a string (no clause matches it) */
	                   /* ref, NUL, event, NUL, payload follow */
} chan_in_hdr;

/* The head of a CHAN_JOINED message: written by the channel process, read
 * by the socket (transport process) that receives it. */
typedef struct chan_joined {
	uint8_t ok;
	/* reply JSON text (NUL-terminated) follows */
} chan_joined;

/* What a channel process starts with (copied flat into the spawn argument):
 * written by the socket (transport process), read by the channel's init. */
typedef struct chan_start {
	const ch_channel_ops *ops;
	ch_endpoint *ep;
	rt_pid transport;
	ch_socket *sock; /* the transport's socket (fastlane) */
	uint8_t vsn;
	uint32_t topic_len, join_ref_len, params_len, assigns_len, id_len;
	uint8_t params_binary;
	/* topic, join_ref (raw), params (JSON text or bytes), assigns (JSON text),
	 * socket id: each followed by a NUL */
} chan_start;

/* ------------------------------------------------------------------ pubsub */

/* A channel's subscription value (ch_ps_sub.value): where the fastlane
 * dispatcher (fastlane.c) sends the topic's broadcasts.  All zero for a
 * plain subscriber (the socket's id topic, application processes), which
 * gets CH_MSG_BROADCAST messages.  Written by the channel process when it
 * subscribes; copied into the subscription, read by the partitions. */
typedef struct ch_fastlane {
	rt_pid transport; /* the client's transport process, or 0 */
	ch_socket *sock;  /* its socket: valid while the transport lives */
	/* The events that go to the channel (handle_out): a NULL-terminated
	 * list (pointer-aligned) or NULL, with the serializer version (CH_VSN_1
	 * or CH_VSN_2) in the low bits, so that a subscription is 32 bytes. */
	uintptr_t intercepts_vsn;
} ch_fastlane;

_Static_assert(sizeof(ch_fastlane) <= CH_PS_VALUE_SIZE, "a fastlane fits a subscription value");
_Static_assert(_Alignof(const char *) >= 4,
               "an intercepts list leaves two low bits for the version");
_Static_assert(CH_VSN_1 <= 3 && CH_VSN_2 <= 3, "a serializer version fits two bits");

static inline uintptr_t
ch_fastlane_pack(const char *const *intercepts, int vsn)
{
	return (uintptr_t)intercepts | (uintptr_t)(vsn & 3);
}

static inline const char *const *
ch_fastlane_intercepts(const ch_fastlane *f)
{
	return (const char *const *)(f->intercepts_vsn & ~(uintptr_t)3);
}

static inline int
ch_fastlane_vsn(const ch_fastlane *f)
{
	return (int)(f->intercepts_vsn & 3);
}

extern const ch_ps_dispatcher ch_fastlane_dispatcher;

/* rt_buf.flags of a packed broadcast: the payload is bytes, not JSON text. */
enum { CH_BCAST_BINARY = 1 };

/* Packs {topic, event, payload} as a broadcast message (one reference). */
rt_buf *ch_broadcast_pack(const char *topic, const char *event, const void *payload,
                          size_t payload_len, bool binary);

/* Reads a packed broadcast; 0, or -1 when b is not one. */
int ch_broadcast_view_of(const rt_buf *b, ch_broadcast_view *out);

/* Broadcasts {topic, event, payload} through the fastlane dispatcher to
 * every subscriber but `from` (RT_NOPID: all), on every node unless local.
 * track: as ch_ps_publish's.  0, or -1 for a bad argument or an adapter
 * failure. */
int chan_publish(ch_endpoint *ep, rt_pid from, const char *topic, const char *event,
                 const void *payload, size_t payload_len, bool binary, bool local,
                 ch_ps_bcast **track);

/* chan_publish for JSON text on this node only (presence diffs). */
int pubsub_local_broadcast(ch_pubsub *ps, rt_pid from, const char *topic, const char *event,
                           const char *payload, size_t payload_len);

/* The fastlane's direct path, for code running on the transport's own
 * scheduler (rt_local(transport)) whose mailbox is empty: queues frame (a
 * reference taken over unless declined) on the connection when no join is
 * pending on the socket and the transport can take it.  CH_PUSH_FIRST: the
 * first frame since the connection's last write, ch_socket_flush_local must
 * follow before the caller's callback returns. */
int ch_socket_push_local(ch_socket *s, rt_buf *frame);
void ch_socket_flush_local(ch_socket *s);

/* ------------------------------------------------------------------ presence */

typedef struct ch_presence ch_presence;

/* Starts the presence tracker of ep (shard processes under a supervisor of
 * their own, options from opts, which may be NULL); NULL when it cannot. */
ch_presence *presence_start(ch_endpoint *ep, const ch_endpoint_opts *opts);
/* Stops the shards (waits for them) and frees pr.  Not from a scheduler thread. */
void presence_stop(ch_presence *pr);
/* The tracker's supervisor, and the tracker (tests, stats). */
rt_pid presence_sup(const ch_presence *pr);
struct trk_tracker *presence_tracker(const ch_presence *pr);

/* The endpoint: created and freed by the thread that calls ch_endpoint_start
 * / ch_endpoint_stop; immutable in between and read from any thread, but for
 * the token key cache (keys, under key_lock). */
struct ch_endpoint {
	ch_presence *presence;
	const ch_socket_handler *handler;
	char *secret;
	rt_pid sup;      /* the node's root supervisor (endpoint.c) */
	rt_pid chan_sup; /* the channels' subtree of sup */
	ch_pubsub *pubsub;
	cl_node *cluster;           /* NULL: alone */
	struct ps_cluster *ps_link; /* PubSub's cluster adapter (pubsub_cluster.c) */
	uint32_t max_channels;
	/* The flood limit (ch_endpoint_opts.max_messages_per_second): refill
	 * rate in messages per second, 0: none; bucket size in 1/1000 message. */
	uint32_t msg_rate;
	uint32_t msg_burst_milli;
	_Atomic uint64_t flood_closed; /* sockets closed over the limit (any thread) */
	pthread_mutex_t key_lock;      /* guards keys */
	rt_strmap keys;                /* salt -> ch_token_key *, kept until the endpoint stops */
};

extern const rt_behaviour ch_channel_behaviour;

/* ------------------------------------------------------------------ the cluster adapter */

/* PubSub's adapter over the cluster (pubsub_cluster.c, Phoenix.PubSub.PG2's
 * role): one bus frame per broadcast to every other node.  ps_cluster_new
 * registers the cluster's PubSub service; ps_cluster_bind gives it the
 * PubSub that remote broadcasts go to (frames that arrive before are
 * dropped and counted); ps_cluster_free after the cluster has stopped. */
extern const ch_ps_adapter ps_cluster_adapter;
struct ps_cluster *ps_cluster_new(cl_node *cl);
void ps_cluster_bind(struct ps_cluster *pc, ch_pubsub *ps);
void ps_cluster_free(struct ps_cluster *pc);
/* Bodies from other nodes dropped as malformed, since ps_cluster_new. */
uint64_t ps_cluster_refused(const struct ps_cluster *pc);

/* A route for topic, or NULL. */
const ch_channel_ops *endpoint_route(const ch_endpoint *ep, const char *topic);

/* The derived token key for salt (cached). */
const ch_token_key *endpoint_key(ch_endpoint *ep, const char *salt);

/* Sets buf->flags to the frame kind and sends it to a transport. */
int send_frame(rt_pid transport, rt_buf *frame, int kind);

#endif /* channels_internal_h */
