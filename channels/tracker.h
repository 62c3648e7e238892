/*
 * tracker.h: Phoenix.Tracker in C (internal to channels/).
 *
 * Two layers:
 *
 * - trk_state (tracker_state.c), Phoenix.Tracker.State: the presences one
 *   replica knows, as a causal CRDT.  Every local change bumps the replica's
 *   clock; an element's tag is the dot {replica, clock} of the change that
 *   added it.  The causal context (a clock per replica plus a "cloud" of
 *   dots past it) says which dots a state has seen; an element whose dot was
 *   seen but which is absent was removed.  Changes since the last reset form
 *   the delta (added elements plus the dots of every change); merging a
 *   delta or an extracted state adds the unseen elements and removes the
 *   local elements the other side saw and no longer has.  Plain data, no
 *   locks: the owner serializes access.
 *
 * - trk_tracker (tracker.c), Phoenix.Tracker: a pool of shard processes, the
 *   shard chosen by a hash of the topic.  Each shard owns one trk_state,
 *   monitors every process it tracks (its exit, for any reason, removes its
 *   presences) and reports the joins and leaves of each topic to a diff
 *   callback, coalesced over a short period.
 */
#ifndef channels_tracker_h
#define channels_tracker_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "runtime/rt.h"

/* ------------------------------------------------------------------ State */

typedef struct trk_state trk_state;

/* Bytes of a replica name, NUL included: a node's name, '#' and its
 * incarnation in hex ("chat1@127.0.0.1#17f3a2c4d5e6b7a8") fit. */
#define TRK_REPLICA_MAX 96
_Static_assert(CL_NAME_MAX + 17 <= TRK_REPLICA_MAX, "a node name and incarnation fit");

/* Bytes of a presence's fields, NUL included (the longest is one less). */
#define TRK_TOPIC_MAX 1024
#define TRK_KEY_MAX 1024
#define TRK_META_MAX (64 * 1024)

/* Reports one element joining (join true) or leaving a state. */
typedef void (*trk_report_fn)(void *ud, const char *topic, const char *key, const char *meta,
                              bool join);

/* Visits the elements of one topic grouped by key: first_of_key is true on
 * the first element of each key.  Return false to stop. */
typedef bool (*trk_visit_fn)(void *ud, const char *key, const char *meta, rt_pid pid,
                             bool first_of_key);

/* A dot: the change number `clock` of replica number `replica` (an index
 * into the names of the trk_delta that carries it).  Plain values, like
 * trk_value, owned by the trk_delta that holds them. */
typedef struct trk_dot {
	uint32_t replica;
	uint64_t clock;
} trk_dot;

/* One element of a trk_delta: a plain value owned by the delta that holds it
 * (its strings too); read by whoever holds the delta. */
typedef struct trk_value {
	trk_dot tag;
	rt_pid pid; /* meaningful on the tag's replica only */
	char *topic, *key, *meta;
} trk_value;

/* A delta or an extracted state, self-contained (replicas by name) so that
 * it can cross to another state or node.  Owned by whoever holds it; freed
 * with trk_delta_free. */
typedef struct trk_delta {
	bool full;                         /* an extracted state: context is meaningful */
	char (*replicas)[TRK_REPLICA_MAX]; /* names; [0] is the sender */
	size_t nreplicas;
	uint64_t *context; /* full: per replica, every dot up to this was seen */
	uint64_t *start;   /* delta: the sender's clock when the delta began (range) */
	uint64_t *end;     /* delta: the sender's clock at extraction */
	trk_dot *cloud;    /* dots seen past the context (full), or every change's dot (delta) */
	size_t ncloud;
	trk_value *values; /* live elements */
	size_t nvalues;
} trk_delta;

/* A new empty state for replica `name` (truncated to TRK_REPLICA_MAX - 1);
 * the caller owns it and serializes every call on it. */
trk_state *trk_state_new(const char *name);
/* Frees a state and everything in it; NULL is ignored. */
void trk_state_free(trk_state *s);
/* The state's replica name. */
const char *trk_state_replica(const trk_state *s);

/* Adds {topic, pid, key, meta} as a new element of the local replica;
 * reports the join.  Returns 0, or -1 when that (topic, pid, key) is already
 * tracked (nothing changes). */
int trk_state_join(trk_state *s, rt_pid pid, const char *topic, const char *key, const char *meta,
                   trk_report_fn report, void *ud);

/* Removes the local element (topic, pid, key); reports the leave.  Returns
 * 0, or -1 when there is none. */
int trk_state_leave(trk_state *s, rt_pid pid, const char *topic, const char *key,
                    trk_report_fn report, void *ud);

/* Removes every local element of pid; reports each leave.  Returns how many.
 * O(elements of pid). */
size_t trk_state_leave_pid(trk_state *s, rt_pid pid, trk_report_fn report, void *ud);

/* Replaces the meta of a local element, as a remove and an add under a new
 * tag (Phoenix's leave_join); reports nothing (the caller reports the
 * update as it wants).  Returns 0, or -1 when there is no such element. */
int trk_state_update(trk_state *s, rt_pid pid, const char *topic, const char *key,
                     const char *meta);

/* The meta of the local element (topic, pid, key), or NULL.  Valid until
 * the next change. */
const char *trk_state_get(const trk_state *s, rt_pid pid, const char *topic, const char *key);

/* Members (elements) of topic, in O(1); *nkeys (if not NULL) gets its
 * distinct keys, also O(1). */
size_t trk_state_count(const trk_state *s, const char *topic, size_t *nkeys);

/* Visits topic's elements grouped by key, or only those of `key` (not
 * NULL).  O(elements visited). */
void trk_state_foreach(const trk_state *s, const char *topic, const char *key, trk_visit_fn fn,
                       void *ud);

/* True when the local pid has at least one element. */
bool trk_state_has_pid(const trk_state *s, rt_pid pid);

/* Per-pid word for the owner (the shard keeps the monitor reference
 * there); 0 until set.  trk_state_pid_word returns NULL for an untracked pid. */
uint64_t *trk_state_pid_word(trk_state *s, rt_pid pid);

/* Visits every local pid (for re-monitoring after a shard restart). */
void trk_state_foreach_pid(trk_state *s, void (*fn)(void *ud, rt_pid pid, uint64_t *word),
                           void *ud);

/* Total elements (those of down replicas included), and the clock of
 * replica `name` in the causal context (0 if unknown). */
size_t trk_state_size(const trk_state *s);
uint64_t trk_state_clock(const trk_state *s, const char *name);

/* Marks replica `name` as known and up (Phoenix's replica_up): only
 * elements of known replicas are merged.  A replica that was down has its
 * elements listed again, each reported as a join.  Returns 0, or -1 when
 * the table is full. */
int trk_state_replica_up(trk_state *s, const char *name, trk_report_fn report, void *ud);

/* Marks a known replica as down (Phoenix's replica_down): its elements stay
 * (and keep merging) but are neither listed nor counted; each is reported
 * as a leave.  O(elements).  Returns 0, or -1 for an unknown replica or the
 * local one. */
int trk_state_replica_down(trk_state *s, const char *name, trk_report_fn report, void *ud);

/* Forgets a down replica (Phoenix's permdown, remove_down_replicas): its
 * elements and context go, and its data is ignored until it is up again.
 * Returns 0, or -1 when it is not a known, down replica. */
int trk_state_remove_down_replica(trk_state *s, const char *name);

/* True when changes were made since the last reset. */
bool trk_state_has_delta(const trk_state *s);

/* A copy of the delta (changes since the last reset). */
trk_delta *trk_state_extract_delta(const trk_state *s);

/* Starts a new delta and compacts the causal context. */
void trk_state_reset_delta(trk_state *s);

/* The whole state for replica `remote` (its own elements left out, as it
 * has them). */
trk_delta *trk_state_extract(const trk_state *s, const char *remote);

/* Merges a delta or an extracted state; reports the elements that joined
 * and those that left.  Elements of replicas not known (trk_state_replica_up)
 * are ignored.  Merging the same data twice, or out of order, changes
 * nothing more: a dot seen once is never added again. */
void trk_state_merge(trk_state *s, const trk_delta *d, trk_report_fn report, void *ud);

/* Frees a delta or extracted state; NULL is ignored. */
void trk_delta_free(trk_delta *d);

/* ------------------------------------------------------------------ Wire */

/*
 * tracker_wire.c: the frames shard i of one node sends shard i of the
 * others (cluster service CL_SVC_TRACKER), msgpack:
 *
 *   frame  [version 1, kind, nshards, shard, payload]
 *          kind DELTA: payload a delta; TRANSFER_ACK: a full state;
 *          CLOCK: the sender's clock (uint); TRANSFER_REQ: nil
 *   delta  [full: bool, replicas: [str...], context: [uint...] (full) | nil,
 *           start: uint, end: uint (the sender's clock range; 0, 0 when full),
 *           cloud: [replica, clock, ...], values: [replica, clock, pid, topic,
 *           key, meta, ...]]
 *
 * Decoding validates everything, as for a client's input: exact shapes,
 * counts bounded (and by the bytes present, before anything is allocated),
 * replica indexes in range and names unique, clocks in 1..TRK_CLOCK_MAX,
 * strings UTF-8 with no NUL and bounded (TRK_*_MAX), metas JSON text (they
 * reach clients), and a delta's values its sender's own adds inside its
 * range.  Pure functions: any thread.
 */
enum {
	TRK_WIRE_VERSION = 1,
	TRK_WIRE_DELTA = 1,        /* a heartbeat's delta */
	TRK_WIRE_CLOCK = 2,        /* the sender's clock, when it has no delta to send */
	TRK_WIRE_TRANSFER_REQ = 3, /* "send me your whole state" */
	TRK_WIRE_TRANSFER_ACK = 4, /* the whole state (trk_state_extract) */
};

#define TRK_WIRE_MAX_REPLICAS 1024       /* replicas named in one delta */
#define TRK_WIRE_MAX_ITEMS (1u << 22)    /* cloud dots, and values, in one delta */
#define TRK_WIRE_MAX_SHARDS 1024         /* nshards in a frame */
#define TRK_CLOCK_MAX ((1ull << 48) - 1) /* largest clock taken from another node */

/* A decoded frame, or one to encode.  Owned by its holder; the delta (when
 * any) is freed with trk_delta_free. */
typedef struct trk_frame {
	int kind;
	uint32_t nshards, shard;
	uint64_t clock;   /* CLOCK */
	trk_delta *delta; /* DELTA (full false), TRANSFER_ACK (full true) */
} trk_frame;

/* Encodes f into *out (malloc'd, *len bytes).  Returns 0, or -1 when f is
 * not encodable (a DELTA or TRANSFER_ACK without the right delta). */
int trk_wire_encode(const trk_frame *f, char **out, size_t *len);

/* Reads the header of a frame (kind, nshards, shard) without decoding the
 * rest: 0, or -1 when it is not a version-1 frame header with a known kind. */
int trk_wire_peek(const void *buf, size_t len, int *kind, uint32_t *nshards, uint32_t *shard);

/* Decodes and validates a whole frame into *out (out->delta allocated for
 * DELTA and TRANSFER_ACK).  Returns 0, or -1 (nothing allocated) for
 * anything malformed or out of bounds; never reads past buf[len). */
int trk_wire_decode(const void *buf, size_t len, trk_frame *out);

/* ------------------------------------------------------------------ Tracker */

typedef struct trk_tracker trk_tracker;

/* One presence in a diff: borrowed for the duration of the callback. */
typedef struct trk_item {
	const char *key;
	const char *meta;
} trk_item;

/* Phoenix.Tracker's handle_diff, for one topic: called in the shard process
 * once per topic per flush period, joins and leaves in the order they
 * happened. */
typedef void (*trk_diff_fn)(void *ud, const char *topic, const trk_item *joins, size_t njoins,
                            const trk_item *leaves, size_t nleaves);

/* Options of trk_start: the caller's, read once. */
typedef struct trk_opts {
	int shards;           /* pool size; 0: rt_schedulers() */
	uint32_t period_ms;   /* diff coalescing period; 0: 20 ms; UINT32_MAX: none */
	uint32_t max_pending; /* queued track/update requests per shard; 0: 10,000 */
	const char *replica;  /* replica (node) name when alone; NULL: "nonode@nohost" */
	trk_diff_fn diff;     /* required */
	void *ud;             /* for diff */
	rt_pid parent;        /* a supervisor to start under (rt_sup_start_under), or 0 */
	/* Replication (Phoenix.Tracker between nodes).  cluster: the node's
	 * cluster, NULL when alone; it must outlive the tracker's processes,
	 * and be stopped (cl_stop) before trk_stop frees the tracker, since its
	 * CL_SVC_TRACKER handler points here.  Every node must run the same
	 * number of shards (frames carry it; a mismatch is refused and logged
	 * once).  The replica name is then "<node name>#<incarnation in hex>". */
	cl_node *cluster;
	uint32_t broadcast_ms; /* a shard sends its delta this often; 0: 200 (Phoenix: 1500) */
	uint32_t down_ms;      /* a node gone silent ("timeout") keeps its members listed this
	                        * long before they leave; 0: they leave at the nodedown.  A node
	                        * that stops ("goodbye") or restarts loses them at once. */
	uint32_t permdown_ms;  /* a node down this long is forgotten; 0: 1,200,000 (Phoenix's) */
	uint32_t max_delta;    /* a delta with more elements and dots than this is not sent
	                        * (the others catch up by transfer); 0: 10,000 */
} trk_opts;

/* Starts a supervisor with the shard processes: a significant child of
 * opts->parent when given (its shutdown stops the shards), else linked to
 * the caller when called from a process.  Returns NULL when the processes
 * cannot start. */
trk_tracker *trk_start(const trk_opts *opts);

/* Stops the supervisor and the shards (if the parent has not already),
 * waits for them, frees everything.
 * From a thread that is not a scheduler's (or from the process that
 * started it, which must not be waited for).  NULL is ignored. */
void trk_stop(trk_tracker *t);

/* The supervisor's pid. */
rt_pid trk_sup(const trk_tracker *t);

/* Error codes (negative). */
enum {
	TRK_EEXIST = -1, /* track: already tracked */
	TRK_ENOENT = -2, /* update / untrack: not tracked */
	TRK_EBUSY = -3,  /* the shard has max_pending requests queued */
	TRK_EINVAL = -4, /* a field is empty or too long */
};

/* Tracks pid in topic under key with meta (JSON text, kept as is).
 * Asynchronous, like every change: the shard applies it in the order of
 * the caller's calls; a later trk_list or trk_get by the same caller sees
 * it already.  Any thread.  Returns 0 or TRK_E*. */
int trk_track(trk_tracker *t, rt_pid pid, const char *topic, const char *key, const char *meta);

/* Replaces the meta of a tracked presence (the shard reports a join of the
 * new meta and a leave of the old one).  make_meta, if not NULL, is called
 * in the shard with the old meta and `meta` to build the one stored
 * (malloc'd; NULL: `meta` as is).  Returns 0 or TRK_E*. */
int trk_update(trk_tracker *t, rt_pid pid, const char *topic, const char *key, const char *meta,
               char *(*make_meta)(const char *old_meta, const char *meta));

/* Untracks one presence, or every presence of pid in every topic
 * (trk_untrack_all).  Never refused for load; queued only when there is
 * something to remove (tracked, or a queued track), so untracks are
 * bounded by the presences.  Returns 0 or TRK_EINVAL. */
int trk_untrack(trk_tracker *t, rt_pid pid, const char *topic, const char *key);
int trk_untrack_all(trk_tracker *t, rt_pid pid);

/* Visits topic's presences (or one key's) grouped by key, under the shard's
 * read lock, with the caller's own queued tracks included.  Any thread. */
void trk_list(trk_tracker *t, const char *topic, const char *key, trk_visit_fn fn, void *ud);

/* Members and keys of a topic, O(1). */
size_t trk_count(trk_tracker *t, const char *topic, size_t *nkeys);

/* Counters for tests and benchmarks (filled into the caller's struct). */
typedef struct trk_stats {
	uint64_t tracks, untracks, downs, diffs, refused;
	uint32_t pending; /* queued requests now, all shards */
	/* replication: deltas sent and merged, deltas too large to send,
	 * transfers asked for and merged, frames from other nodes refused
	 * (malformed, wrong shard count, unknown sender) or dropped (a shard's
	 * mailbox full, the shard restarting) */
	uint64_t deltas_sent, deltas_received, deltas_skipped;
	uint64_t transfers_requested, transfers_received;
	uint64_t frames_refused, frames_dropped;
} trk_stats;
void trk_get_stats(trk_tracker *t, trk_stats *out);

#endif /* channels_tracker_h */
