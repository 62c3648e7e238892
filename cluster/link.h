/*
 * link.h: how frames travel between nodes (internal to cluster/).
 *
 * A link carries opaque frames (bytes, at most max_frame) to every other
 * node or to one, and hands the frames it receives to the node core
 * (cl_link_deliver).  It knows nothing of envelopes, membership or
 * services: the core (cluster/node.c) frames, validates and routes.
 *
 * Two links: mesh (cluster/mesh.c, an nng bus socket) and redis
 * (cluster/redis.c, PUBLISH/SUBSCRIBE through hiredis).
 *
 * Threads.  open and close run outside the schedulers (cl_start, cl_stop).
 * attach, on_io, tick and detach run in the cluster process (a runtime
 * process, pinned to its scheduler): the link watches its descriptors with
 * rt_io_open there and gets their readiness through on_io.  A restarted
 * cluster process calls attach again (after detach, or after the old
 * process died: watchers it had are gone with it).  send_all and send_to
 * may be called from any thread at once and must not block.
 */
#ifndef cluster_link_h
#define cluster_link_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"

typedef struct cl_link_ops {
	const char *name; /* "mesh", "redis" */
	/* Opens the link for node c (listening, connecting: may start in the
	 * background); *ctx gets the link's state.  0, or -1 with a line on
	 * stderr (bad address, port in use). */
	int (*open)(cl_node *c, const cl_opts *o, void **ctx);
	/* Starts watching descriptors in the calling (cluster) process. */
	int (*attach)(void *ctx);
	/* Readiness of a descriptor the link watches (ev from RT_MSG_IO). */
	void (*on_io)(void *ctx, const rt_io_event *ev);
	/* Every heartbeat period, in the cluster process (reconnects, ...). */
	void (*tick)(void *ctx);
	/* Stops watching (the cluster process is stopping). */
	void (*detach)(void *ctx);
	/* Frees everything (after the cluster process is gone). */
	void (*close)(void *ctx);
	/* Queues a frame (copied) for every other node, or for one node (by
	 * name; a link without per-node routes may send it to all, since the
	 * envelope names its addressee).  0, or -1 when it could not be queued
	 * (the caller counts a send drop). */
	int (*send_all)(void *ctx, const void *frame, size_t len);
	int (*send_to)(void *ctx, const char *node, const void *frame, size_t len);
	/* Optional (NULL: the core joins the two parts and calls send_all or
	 * send_to): the same with the frame in two parts, the envelope's header
	 * and the body, for a link that copies a frame into a message of its
	 * own anyway (one copy of the body instead of two).  node NULL: to all. */
	int (*sendv)(void *ctx, const char *node, const void *head, size_t hlen, const void *body,
	             size_t blen);
	/* Mesh: a peer address learned from a heartbeat (dial it if new).
	 * NULL for links that have no addresses. */
	void (*learn)(void *ctx, const char *addr);
	/* This node's address as others should dial it ("" when none). */
	const char *(*addr)(void *ctx);
} cl_link_ops;

extern const cl_link_ops cl_mesh_link;
extern const cl_link_ops cl_redis_link;

/* For links: one frame received (borrowed for the call), in the cluster
 * process.  The core validates and routes it. */
void cl_link_deliver(cl_node *c, const void *frame, size_t len);

/* For links: a message that is not a well-formed batch of frames. */
void cl_link_count_malformed(cl_node *c);

/* For links: n frames that had been accepted were dropped after all (a
 * batch nng would not queue); counted as send drops.  Any thread. */
void cl_link_count_dropped(cl_node *c, uint64_t n);

/* For links: a frame that arrived but could not be read whole (too large,
 * truncated): counted as oversized.  (The mesh cannot tell: nng closes a
 * pipe that brings a frame over NNG_OPT_RECVMAXSZ, and its dialer redials.) */
void cl_link_count_oversized(cl_node *c);

#endif /* cluster_link_h */
