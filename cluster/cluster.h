/*
 * cluster.h: the nodes of a cluster and the messages between them (the part
 * of distributed Erlang that Phoenix relies on: node names, nodeup/nodedown,
 * sending to every node or to one).  Depends on runtime/ only; channels/
 * builds distributed PubSub and Presence on it.
 *
 * Node.  A node has a name ("chat1@127.0.0.1", the --name flag) and an
 * incarnation (a 64-bit number drawn when the node starts, increasing from
 * one start to the next: the wall clock in ns), so that a node that restarts
 * under the same name is a new member, and what its previous incarnation
 * held can be dropped at once.
 *
 * Links.  Nodes reach each other through one link (cluster/link.h):
 * - mesh (cluster/mesh.c): an nng bus socket.  Each node listens on its
 *   --cluster-listen address and dials every peer it knows of; bus does not
 *   forward, so the links form a full mesh.  A node given one --seed learns
 *   the others from the heartbeats it receives (each carries the sender's
 *   address and those of the members it knows).
 * - redis (cluster/redis.c): Redis PUBLISH/SUBSCRIBE through a redis-server,
 *   for deployments without direct links (Phoenix.PubSub.Redis).
 * The link carries opaque frames; everything above it is the same for both.
 *
 * Membership.  Every node sends a heartbeat to all nodes every heartbeat_ms.
 * A member is up from the first frame heard from it; it is declared down
 * within down_after_ms of the last frame heard from it (a killed or stopped
 * node), when it says goodbye (a clean stop), or at once when a later
 * incarnation of the same name is heard (a restart).  A member declared down
 * by silence that speaks again is up again (same incarnation).  Processes
 * that asked (cl_monitor_nodes) get a message for every nodeup and nodedown,
 * in the order they happen.
 *
 * Frames.  Every frame is msgpack with a versioned envelope (cluster/
 * envelope.c): a node speaking another version is refused with one clear log
 * line per peer; a malformed or oversized frame, or one that names no
 * registered service, is dropped and counted (cl_stats) and never crashes the
 * receiver.  A service's body is validated again by its handler, like a
 * message from a client.
 *
 * Order and loss.  Frames from one sending thread to one node arrive in the
 * order sent (one bus pipe, or one Redis connection, per pair of nodes).
 * Links may drop frames when their queues fill (bus is best-effort; Redis
 * may be down): senders count what they could not queue, receivers count
 * the gaps in each peer's sequence of broadcast frames (cl_stats.lost).
 *
 * Threading: cl_send_*, cl_members, cl_stats_get, cl_name, cl_incarnation
 * may be called from any thread.  Service handlers and membership changes
 * run in the cluster process (one runtime process, pinned to a scheduler,
 * that owns the link's file descriptors).
 */
#ifndef cluster_cluster_h
#define cluster_cluster_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/rt.h"

typedef struct cl_node cl_node;

#define CL_NAME_MAX 64  /* bytes of a node name, NUL included */
#define CL_ADDR_MAX 128 /* bytes of a link address ("tcp://127.0.0.1:5001"), NUL included */
#define CL_PROTOCOL_VERSION 1
/* Members a node keeps (up and down).  Past it, a new node takes the slot of
 * the member down the longest; when all are up, its frames are dropped and
 * counted (cl_stats.refused), with one log line. */
#define CL_MEMBERS_MAX 256

/* Options of cl_start: the caller's, read during the call. */
typedef struct cl_opts {
	const char *name;         /* required: letters, digits and "@._-", < CL_NAME_MAX bytes */
	const char *link;         /* "mesh" (default when NULL) or "redis" */
	const char *listen;       /* mesh: nng address to listen on ("tcp://127.0.0.1:5001") */
	const char *const *peers; /* mesh: addresses to dial, NULL-terminated (or NULL) */
	const char *seed;         /* mesh: one more address to dial (others are learned) */
	const char *redis_url;    /* redis: "redis://host:port" */
	const char *namespace_;   /* redis: channel prefix (NULL: "phx") */
	uint32_t heartbeat_ms;    /* 0: 500 */
	uint32_t down_after_ms;   /* 0: 3000; at least 2 x heartbeat_ms */
	uint32_t max_frame;       /* largest frame sent or received, bytes; 0: 16 MiB */
	uint32_t queue_frames;    /* link queue sizes, frames; 0: 8192 */
	rt_pid supervisor; /* a static supervisor to start the cluster process under, or RT_NOPID */
} cl_opts;

/* Services: who handles a frame's body on the receiving node. */
enum {
	CL_SVC_PUBSUB = 1,   /* distributed PubSub (channels/pubsub_cluster.c) */
	CL_SVC_TRACKER = 2,  /* presence replication (channels/tracker.c) */
	CL_SVC_LONGPOLL = 3, /* long-poll requests for another node's sessions
	                        (transports/longpoll_remote.c) */
	CL_SVC_MAX = 8,
};

/* A member as handlers and cl_members see it (a copy). */
typedef struct cl_member {
	char name[CL_NAME_MAX];
	uint64_t incarnation;
	char addr[CL_ADDR_MAX]; /* its link address ("" on redis) */
	bool up;
} cl_member;

/* A service handler: runs in the cluster process for every frame of its
 * service addressed to this node (to all, or to it), with the sender and
 * the body (borrowed for the call).  It validates the body itself. */
typedef void (*cl_handler_fn)(void *ud, const cl_member *from, const void *body, size_t len);

/* Starts the cluster: opens the link (listening, dialing) and starts the
 * cluster process (under opts->supervisor, restarted by it: the cl_node and
 * the link's socket outlive a restart).  NULL, with a line on stderr, for a
 * bad option or a link that cannot open (address in use, bad URL).  After
 * rt_start, from any thread. */
cl_node *cl_start(const cl_opts *opts);

/* Says goodbye to the other nodes (they declare this one down at once),
 * stops the cluster process and frees everything.  From a thread that is
 * not a scheduler's, before rt_shutdown; no other call may run meanwhile. */
void cl_stop(cl_node *c);

/* Registers the handler of a service (before frames of it arrive; at most
 * one per service).  Returns 0, or -1 for a bad service or one taken. */
int cl_register(cl_node *c, int service, cl_handler_fn fn, void *ud);

/* Unregisters a service's handler: once it returns, the handler is not
 * running and will not be called again (frames of the service are then
 * counted as unknown_service), so its ud may be freed.  Not from the
 * handler itself.  Any thread. */
void cl_unregister(cl_node *c, int service);

/* This node's name and incarnation. */
const char *cl_name(const cl_node *c);
uint64_t cl_incarnation(const cl_node *c);

/* This node's link address as others dial it ("" on redis).  A mesh node
 * listening on port 0 ("tcp://127.0.0.1:0") gets the port the system chose. */
const char *cl_addr(const cl_node *c);

/* The cluster process (changes when its supervisor restarts it). */
rt_pid cl_pid(const cl_node *c);

/* Sends body (copied) to every other member (to all: also those not yet
 * known), or to the member named `node`.  Returns 0 when queued, -1 when
 * the frame is too large, the link cannot take it now (counted as a send
 * drop), or `node` is not an up member. */
int cl_send_all(cl_node *c, int service, const void *body, size_t len);
int cl_send_to(cl_node *c, const char *node, int service, const void *body, size_t len);

/* nodeup / nodedown messages (:net_kernel.monitor_nodes): pid gets a
 * message with `tag` and a cl_node_event for every change of membership
 * from now on; first, one nodeup for each member already up.  Monitoring
 * again changes the tag; cl_demonitor_nodes stops it (a dead pid is
 * forgotten by itself).  0, or -1 when the table (64 monitors) is full. */
int cl_monitor_nodes(cl_node *c, rt_pid pid, uint32_t tag);
void cl_demonitor_nodes(cl_node *c, rt_pid pid);

/* The payload of a nodeup/nodedown message. */
typedef struct cl_node_event {
	bool up;
	uint64_t incarnation;
	char name[CL_NAME_MAX];
	/* nodedown: "timeout" (silent for down_after_ms), "goodbye" (it
	 * stopped), "restarted" (a later incarnation was heard: the state of
	 * this one can be dropped at once); nodeup: "" */
	char reason[16];
} cl_node_event;

/* Copies up to cap members (up and down ones known) into out; returns how
 * many there are. */
size_t cl_members(cl_node *c, cl_member *out, size_t cap);

/* True when buf[0, len) is exactly one well-formed msgpack object whose
 * containers' counts are bounded by its size: services call it on a body
 * before msgpack-c unpacks it (cluster/msgpack_scan.c).  Pure; any thread. */
bool cl_msgpack_scan(const void *buf, size_t len);

/* Counters, all since cl_start. */
typedef struct cl_stats {
	uint64_t sent, received; /* frames */
	uint64_t bytes_sent, bytes_received;
	uint64_t send_dropped; /* frames the link could not queue */
	uint64_t lost;         /* gaps in peers' sequences of broadcast frames */
	uint64_t malformed, oversized, bad_version, unknown_service;
	uint64_t duplicates; /* frames to all whose sequence number was seen already */
	uint64_t refused;    /* frames from a node the member table had no room for */
	uint64_t nodeups, nodedowns;
} cl_stats;
void cl_stats_get(cl_node *c, cl_stats *out);

/* Writes the counters and members as a JSON object into buf (for the
 * launcher's /api/cluster); returns the length, or 0 when cap is short. */
size_t cl_stats_json(cl_node *c, char *buf, size_t cap);

#endif /* cluster_cluster_h */
