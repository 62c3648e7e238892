/*
 * pubsub.h: Phoenix.PubSub for C: topics, subscribers and broadcasts, with
 * no knowledge of frames, sockets or serializers.
 *
 * Registry.  A topic has subscriptions {pid, value}: the value is 24 opaque
 * bytes given by the subscriber and read only by the dispatcher of a
 * broadcast (channels/ keeps its fastlane there: transport, serializer,
 * intercepts).  A process subscribes at most once per topic (subscribing
 * again replaces the value).  Its subscription ends when it unsubscribes, or
 * when a dispatcher finds it dead; channel processes unsubscribe themselves
 * in terminate, which runs for every exit, so a subscription has one owner.
 *
 * Partitions.  Subscriptions live in one partition per scheduler, each owned
 * by a partition process pinned to that scheduler (Registry's partitions,
 * grouped as Discord's Manifold groups recipients by core).  A subscription
 * goes to the partition of the scheduler its subscriber (or the transport
 * named by ch_ps_subscribe_on) is pinned to.  A broadcast is one runtime
 * message per partition that has subscribers of the topic; the partition
 * process runs the dispatcher over its subscribers there, on the thread that
 * owns their connections.  Broadcasts read no lock that a subscribe waits
 * on: a partition's table belongs to its process alone, and the registry's
 * index (topic -> partitions, for the publisher) is locked for O(1) work.
 * Order: two broadcasts from one process reach every subscriber in the
 * order sent; a subscription made before a broadcast was sent (by a process
 * the broadcaster heard from) sees it.
 *
 * Dispatchers.  A dispatcher (ops table) delivers one broadcast to the
 * subscribers of one partition.  The default one sends every subscriber but
 * the sender a message {tag, message buffer}.  channels/ supplies the
 * fastlane dispatcher (one encoding per serializer per broadcast).
 * Dispatchers have names so that a broadcast can name its dispatcher to
 * another node.
 *
 * Adapters.  An adapter (ops table) carries broadcasts to the other nodes of
 * a cluster, which dispatch them to their own subscribers.  With none, the
 * node is alone: broadcast == local_broadcast.
 *
 * Threading: every function may be called from any thread, unless noted.
 */
#ifndef channels_pubsub_h
#define channels_pubsub_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/rt.h"

typedef struct ch_pubsub ch_pubsub;

/* Bytes of a subscription's value. */
#define CH_PS_VALUE_SIZE 24

/* One subscription, as a dispatcher sees it: owned by the partition process
 * that holds the topic; borrowed read-only by the dispatcher during dispatch. */
typedef struct ch_ps_sub {
	rt_pid pid;
	_Alignas(8) unsigned char value[CH_PS_VALUE_SIZE];
} ch_ps_sub;

/* One broadcast in flight: shared by the partitions that dispatch it. */
typedef struct ch_ps_bcast ch_ps_bcast;

/* Slots a dispatcher may use to share work between the partitions of one
 * broadcast (e.g. the frame encoded for each serializer). */
#define CH_PS_CACHE_SLOTS 4

/* A dispatcher: constant data (normally static const), read by every
 * partition process; its callbacks run in the partition that calls them. */
typedef struct ch_ps_dispatcher {
	const char *name; /* unique; names the dispatcher to other nodes */
	/* Delivers b to the n subscriptions of one partition (run by the
	 * partition process, on its scheduler).  *ctx is this dispatcher's
	 * state in this partition (NULL at first; the dispatcher may set it).
	 * Writes the pids of subscribers found dead to dead[] (at most
	 * dead_cap) and returns how many: their subscriptions are removed. */
	size_t (*dispatch)(ch_ps_bcast *b, const ch_ps_sub *subs, size_t n, rt_pid *dead,
	                   size_t dead_cap, void **ctx);
	/* Optional: runs after a batch of the partition's messages in which
	 * dispatch ran, and again after each later batch while it returns true
	 * (work still held back).  more: the partition has messages waiting, so
	 * the dispatcher may hold work back to do it once for several
	 * broadcasts (the fastlane writes each connection once for all of
	 * them); with more false it must not. */
	bool (*flush)(void **ctx, bool more);
	/* Optional: frees *ctx when the partition ends (after a last flush). */
	void (*free_ctx)(void *ctx);
	/* Optional: whether a broadcast that came from another node (tag,
	 * message, on topic) is well-formed for this dispatcher; a broadcast
	 * it refuses is dropped (ch_ps_remote_broadcast returns -1).  Any
	 * thread. */
	bool (*check)(const char *topic, uint32_t tag, const rt_buf *message);
} ch_ps_dispatcher;

/* Sends each subscriber but the sender a message {tag, message buffer}. */
extern const ch_ps_dispatcher ch_ps_default_dispatcher;

/* A cluster adapter: constant data given to ch_ps_start; its callbacks are
 * called from any thread that publishes (ctx must be thread-safe). */
typedef struct ch_ps_adapter {
	const char *name;
	/* This node's name. */
	const char *(*node_name)(void *ctx);
	/* Carries a broadcast to every other node (each dispatches it with the
	 * dispatcher of that name).  message: borrowed.  0, or -1. */
	int (*broadcast)(void *ctx, const char *topic, uint32_t tag, const rt_buf *message,
	                 const char *dispatcher);
	/* The same to one node. */
	int (*direct_broadcast)(void *ctx, const char *node, const char *topic, uint32_t tag,
	                        const rt_buf *message, const char *dispatcher);
} ch_ps_adapter;

/* Options of ch_ps_start: the caller's, read during the call (adapter and
 * dispatchers must outlive the PubSub). */
typedef struct ch_ps_opts {
	const ch_ps_adapter *adapter; /* NULL: this node alone */
	void *adapter_ctx;
	/* Dispatchers that remote broadcasts may name, NULL-terminated (the
	 * default dispatcher is always known). */
	const ch_ps_dispatcher *const *dispatchers;
	/* The static supervisor to start the PubSub's own supervisor under (a
	 * significant subtree: rt_sup_start_under), e.g. the node's root;
	 * RT_NOPID: a supervisor on its own. */
	rt_pid supervisor;
} ch_ps_opts;

/* Starts PubSub: a supervisor (one_for_all, no restarts) of one partition
 * process per scheduler (after rt_start).  A partition that crashes is not
 * restarted: its table of subscriptions is gone while its subscribers
 * believe they are subscribed, so the PubSub stops as a whole, and under a
 * supervisor takes it down too (as Phoenix, where a Registry partition's
 * crash kills the processes registered in it).  Returns NULL when processes
 * cannot be spawned. */
ch_pubsub *ch_ps_start(const ch_ps_opts *opts);

/* Stops the partition processes (their supervisor, unless its parent has
 * already stopped it) and frees everything (from outside the schedulers,
 * before rt_shutdown; no other call may run meanwhile). */
void ch_ps_stop(ch_pubsub *ps);

/* Subscribes pid to topic with value (value_len ≤ CH_PS_VALUE_SIZE bytes,
 * copied; the rest zeroed), in the partition of the scheduler pid is pinned
 * to (or one picked by pid).  Returns 0, or -1 for a bad argument. */
int ch_ps_subscribe(ch_pubsub *ps, const char *topic, rt_pid pid, const void *value,
                    size_t value_len);

/* The same in the partition of the scheduler `near` is pinned to (the
 * transport that the dispatcher will write to). */
int ch_ps_subscribe_on(ch_pubsub *ps, rt_pid near, const char *topic, rt_pid pid, const void *value,
                       size_t value_len);

/* Ends pid's subscription to topic.  Returns 0, or -1 when there was none. */
int ch_ps_unsubscribe(ch_pubsub *ps, const char *topic, rt_pid pid);

/* Subscribers of topic on this node. */
size_t ch_ps_subscribers(ch_pubsub *ps, const char *topic);

/* Broadcasts message (tag, bytes; the call takes over this reference) to the
 * subscribers of topic on every node, through dispatcher d (NULL: the
 * default).  _from: not to `from` (a local pid).  _local: this node only.
 * Returns 0, -1 for a bad argument, or CH_PS_EREMOTE when the adapter could
 * not take it (local subscribers still get it). */
enum { CH_PS_EREMOTE = -2 };
int ch_ps_broadcast(ch_pubsub *ps, const char *topic, uint32_t tag, rt_buf *message,
                    const ch_ps_dispatcher *d);
int ch_ps_broadcast_from(ch_pubsub *ps, rt_pid from, const char *topic, uint32_t tag,
                         rt_buf *message, const ch_ps_dispatcher *d);
int ch_ps_local_broadcast(ch_pubsub *ps, const char *topic, uint32_t tag, rt_buf *message,
                          const ch_ps_dispatcher *d);
int ch_ps_local_broadcast_from(ch_pubsub *ps, rt_pid from, const char *topic, uint32_t tag,
                               rt_buf *message, const ch_ps_dispatcher *d);

/* All of the above in one call: from (RT_NOPID: none), local (this node
 * only), and track: when not NULL, *track gets a reference to the
 * broadcast on this node (NULL when no local partition got it), for
 * ch_ps_bcast_done and ch_ps_bcast_release. */
int ch_ps_publish(ch_pubsub *ps, rt_pid from, const char *topic, uint32_t tag, rt_buf *message,
                  const ch_ps_dispatcher *d, bool local, ch_ps_bcast **track);

/* Whether the partition of near's scheduler is done with b: what it
 * delivered to processes of that scheduler is in their queues. */
bool ch_ps_bcast_done(const ch_pubsub *ps, const ch_ps_bcast *b, rt_pid near);
void ch_ps_bcast_release(ch_ps_bcast *b);

/* Sends m (from rt_msg_alloc, taken over; its sender is the caller) to `to`
 * through the partition of near's scheduler, so that it arrives after every
 * broadcast that partition was given before: how a process that broadcasts
 * and also sends to a subscriber directly (a channel replying to its
 * client) keeps Phoenix's per-sender order.  0, or -1 when that partition
 * is gone (m is freed). */
int ch_ps_forward(ch_pubsub *ps, rt_pid near, rt_pid to, rt_msg *m);

/* Broadcasts to the subscribers of topic on one node (this one included). */
int ch_ps_direct_broadcast(ch_pubsub *ps, const char *node, const char *topic, uint32_t tag,
                           rt_buf *message, const ch_ps_dispatcher *d);

/* For adapters: a broadcast that arrived from another node, naming its
 * dispatcher (message: taken over).  Returns 0, or -1 when the dispatcher
 * is unknown or refuses the message (its check), or the tag is the
 * runtime's. */
int ch_ps_remote_broadcast(ch_pubsub *ps, const char *topic, uint32_t tag, rt_buf *message,
                           const char *dispatcher);

/* This node's name ("nonode@nohost" without an adapter). */
const char *ch_ps_node_name(const ch_pubsub *ps);

/* ------------------------------------------------------------------ for dispatchers */

const char *ch_ps_bcast_topic(const ch_ps_bcast *b);
uint32_t ch_ps_bcast_tag(const ch_ps_bcast *b);
rt_buf *ch_ps_bcast_message(const ch_ps_bcast *b); /* borrowed */
rt_pid ch_ps_bcast_from(const ch_ps_bcast *b);     /* RT_NOPID: from no local process */

/* The buffer cached in slot i of b, or NULL (borrowed: valid while b is). */
rt_buf *ch_ps_cache_get(ch_ps_bcast *b, int i);
/* Offers buf (taking over the reference) for slot i; returns the buffer now
 * in the slot (buf, or one another partition put there first; borrowed). */
rt_buf *ch_ps_cache_put(ch_ps_bcast *b, int i, rt_buf *buf);

#endif /* channels_pubsub_h */
