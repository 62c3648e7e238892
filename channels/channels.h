/*
 * channels.h: Phoenix Channels for applications written in C.
 *
 * An application defines a socket handler (connect, id, channel routes with
 * `*` wildcards) and channel modules as ops tables (join, handle_in clauses
 * by event name, handle_out for intercepted events, handle_info, terminate).
 * Each joined topic of each client runs as its own process under the
 * endpoint's channel supervisor, as in Phoenix.  Payloads are JSON: handlers
 * read them as cJSON trees and answer with cJSON trees or JSON text (or
 * binary data for the V2 serializer).  A channel module reads like a Phoenix
 * channel:
 *
 *     static int new_msg(ch_chan *ch, void *state, const ch_payload *p)
 *     {
 *             const cJSON *body = ch_payload_get(p, "body");
 *             if (!body)
 *                     ch_no_clause(ch);      // %{"body" => body} did not match
 *             cJSON *msg = cJSON_CreateObject();
 *             cJSON_AddItemReferenceToObject(msg, "body", (cJSON *)body);
 *             int rc = ch_broadcast_json(ch, "new_msg", msg);
 *             cJSON_Delete(msg);
 *             return rc == 0 ? CH_OK : CH_ERROR;
 *     }
 *     static const ch_in_clause room_in[] = {{"new_msg", new_msg}, {NULL, NULL}};
 *     const ch_channel_ops room = {.name = "RoomChannel", .join = room_join,
 *                                  .in = room_in};
 *
 * Crashes: a handler ends its channel with rt_crash (as `raise`), or by
 * returning CH_ERROR; the client gets phx_error.  See rt_crash in
 * runtime/rt.h for what a crash releases and what it does not.
 *
 * Threading: callbacks run inside the channel's process; every ch_* call
 * that takes a ch_chan (ch_broadcast_* included) must be made from that
 * process.  ch_endpoint_broadcast, ch_reply_ref and ch_reply_ref_json may be
 * called from any thread.
 */
#ifndef channels_channels_h
#define channels_channels_h

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "runtime/rt.h"

/* Results of join, handle_in, handle_out, handle_info. */
enum {
	CH_OK = 0,    /* join: accepted; others: {:noreply, socket} */
	CH_STOP = 1,  /* stop the channel with the reason given to ch_stop */
	CH_ERROR = -1 /* join: refused (reply set with ch_join_error); others: crash */
};

/* ch_socket_handler.connect's third result, besides CH_OK and CH_ERROR: the
 * connect crashed, as a raise in Phoenix's connect/3 (HTTP 500). */
enum { CH_CONNECT_CRASH = -2 };

typedef struct ch_chan ch_chan;
typedef struct ch_endpoint ch_endpoint;

/* A payload received from a client: JSON (parsed) or binary (V2 only).
 * Borrowed: valid for the duration of the callback. */
typedef struct ch_payload {
	const cJSON *json; /* NULL for binary payloads */
	const char *raw;   /* the JSON text as received (for exact echo; NUL-terminated), NULL for
	                      binary */
	size_t raw_len;
	const uint8_t *bin; /* binary payload, or NULL */
	size_t bin_len;
} ch_payload;

/* A reference to a client message, for replying later (Phoenix's socket_ref):
 * a plain value, safe to copy into a message or a timer. */
typedef struct ch_ref {
	rt_pid transport;
	uint8_t vsn;
	char join_ref[48]; /* raw JSON tokens, as received */
	char ref[48];
	char topic[256];
} ch_ref;

/* One handle_in clause: the handler of the client event it is listed under.
 * Reply with ch_reply / ch_reply_json / ch_reply_payload (or later with
 * ch_socket_ref + ch_reply_ref), or not at all; return CH_OK, CH_STOP (after
 * ch_stop) or CH_ERROR (crash). */
typedef int (*ch_in_fn)(ch_chan *ch, void *state, const ch_payload *payload);

/* An entry of a channel module's event table: constant data, normally a
 * static const array, read (never written) by every channel process. */
typedef struct ch_in_clause {
	const char *event; /* the event name, matched exactly */
	ch_in_fn fn;
} ch_in_clause;

/* A channel module: constant data the application defines (normally a
 * static const), read by every channel process of its routes; never written. */
typedef struct ch_channel_ops {
	const char *name;              /* the module name, for logs and crash reasons */
	size_t state_size;             /* private state, zeroed, per channel process */
	const char *const *intercepts; /* NULL-terminated events routed through handle_out */
	/* Joins `topic` with `params`.  Return CH_OK (reply {} unless ch_join_reply
	 * set one) or CH_ERROR after ch_join_error. */
	int (*join)(ch_chan *ch, void *state, const char *topic, const ch_payload *params);
	/* handle_in by event name: entries ended by {NULL, NULL}, or NULL.  An
	 * event no entry names goes to handle_in; with no handle_in either, the
	 * channel crashes as Phoenix's missing handle_in clause does
	 * (FunctionClauseError): the client gets phx_error for the topic.  So does
	 * an event that is not a JSON string (which a C handler cannot match). */
	const ch_in_clause *in;
	/* The catch-all: any string event the `in` table does not list (optional). */
	int (*handle_in)(ch_chan *ch, void *state, const char *event, const ch_payload *payload);
	/* An intercepted broadcast about to go to this client; push it with ch_push
	 * or drop it.  payload is the broadcast's JSON. */
	int (*handle_out)(ch_chan *ch, void *state, const char *event, const cJSON *payload);
	/* Any other message sent to the channel process: the application's own
	 * tags (CH_TAG_APP_MIN..CH_TAG_APP_MAX, e.g. a timer set in handle_in),
	 * and RT_MSG_DOWN / RT_MSG_EXIT of monitors and links the channel set up.
	 * Without handle_info such messages are dropped. */
	int (*handle_info)(ch_chan *ch, void *state, rt_msg *msg);
	/* The channel ends: "normal", "shutdown", "shutdown: left", "shutdown: closed",
	 * or a crash reason. */
	void (*terminate)(ch_chan *ch, void *state, const char *reason);
} ch_channel_ops;

/* A topic route of a socket handler: constant application data, read by
 * every socket process when a client joins. */
typedef struct ch_route {
	const char *pattern; /* "room:*" matches any topic starting with "room:"; else exact */
	const ch_channel_ops *channel;
} ch_route;

/* One query parameter of the connection request, decoded as Plug does
 * (x-www-form-urlencoded: '+' is a space, "%XX" a byte, a malformed escape
 * stays as it is).  Key and value are byte strings: they may hold NUL bytes
 * ("%00"), so compare them by their lengths.  Each is also followed by a NUL
 * (at key[key_len], value[value_len]), which makes it a C string only when it
 * holds no NUL itself.  The key is the raw one: "a[b]" stays "a[b]" here.
 * Owned by the transport process that decoded it; borrowed by the callbacks
 * it makes (connect), valid for the call only. */
typedef struct ch_param {
	const char *key;
	size_t key_len;
	const char *value;
	size_t value_len;
} ch_param;

/* Every parameter of the query, in the order it gives them (repeated keys
 * included): owned and written by the transport process, read-only for the
 * callbacks it is passed to.  Read them with ch_params_find (Plug's params
 * map), not by walking items, unless the order matters to the app. */
typedef struct ch_params {
	const ch_param *items;
	size_t n;
} ch_params;

/* What Plug's params map holds under a key (ch_params_find). */
typedef enum ch_param_kind {
	CH_PARAM_NONE = 0, /* no such key */
	CH_PARAM_STRING,   /* a byte string */
	CH_PARAM_NESTED    /* a list or map, from "key[]=..." or "key[sub]=..." */
} ch_param_kind;

/*
 * params[key] as Plug.Conn.Query decodes the query (key is a NUL-terminated
 * root name, compared with each parameter's key byte by byte):
 *  - a later "key=v" overrides an earlier one (the last one wins);
 *  - a parameter "key[...]" (its key ends in ']' and its first '[' is not its
 *    first byte) makes params[key] a list or map: CH_PARAM_NESTED, which a
 *    later "key=v" overrides, and which the first such parameter places (a
 *    later "key[...]" adds to the list or map but does not move it);
 *  - anything else ("key%00x", "[a]", "a[b") is a key of its own.
 * Returns the kind; for CH_PARAM_STRING sets *value (followed by a NUL) and
 * *len (either may be NULL), else sets *value to NULL and *len to 0.  The
 * members of a nested value are not given: read items for them.
 */
ch_param_kind ch_params_find(const ch_params *p, const char *key, const char **value, size_t *len);

/* params[key] when it is a byte string: its first byte (followed by a NUL)
 * and its length in *len (may be NULL); NULL when it is missing or nested. */
const char *ch_params_get_n(const ch_params *p, const char *key, size_t *len);

/* A C-string convenience for parameters that are plain text: params[key]
 * when it is a byte string with no NUL byte, else NULL (missing, nested, or
 * holding a NUL: use ch_params_find to tell these apart; never for
 * credentials, where "present but not text" must not read as "absent"). */
const char *ch_params_get(const ch_params *p, const char *key);

/* Facts about the connection request: written by the transport process,
 * borrowed read-only by ch_socket_handler.connect for the call. */
typedef struct ch_connect_info {
	const char *peer;       /* "127.0.0.1:5555" */
	const char *origin;     /* Origin header or NULL */
	const char *user_agent; /* or NULL */
	const char *transport;  /* "websocket" or "longpoll" */
} ch_connect_info;

/* A socket module: constant application data, read (never written) by
 * every transport process from the endpoint; must outlive the endpoint. */
typedef struct ch_socket_handler {
	/* Accepts (CH_OK, filling `assigns`, a JSON object owned by the socket)
	 * or refuses (CH_ERROR: HTTP 403) a connection; CH_CONNECT_CRASH (or any
	 * other result) is a connect that crashed (HTTP 500), e.g. as Phoenix's
	 * when a parameter it needs as a string is CH_PARAM_NESTED. */
	int (*connect)(const ch_endpoint *ep, const ch_params *params, const ch_connect_info *info,
	               cJSON *assigns);
	/* Names the socket ("users_socket:42") into buf; returns its length, 0 for none. */
	size_t (*id)(const cJSON *assigns, char *buf, size_t cap);
	const ch_route *routes;
	size_t nroutes;
	uint32_t max_channels; /* per socket; 0: 100 as in Phoenix */
} ch_socket_handler;

/* ------------------------------------------------------------------ endpoint */

/* Options of ch_endpoint_start: the caller's, read once during the call
 * (what must outlive it, like handler, is said at the field). */
typedef struct ch_endpoint_opts {
	const ch_socket_handler *handler;
	const char *secret_key_base;   /* for tokens */
	uint32_t heartbeat_timeout_ms; /* transports close a socket silent this long (60000) */
	/* Presence (Phoenix.Tracker): shard processes (0: one per scheduler), the
	 * period over which a topic's joins and leaves are coalesced into one
	 * presence_diff (0: 20 ms; UINT32_MAX: none, one diff per batch of
	 * changes), and the track/update requests a shard may have queued before
	 * refusing more with CH_PRESENCE_EBUSY (0: 10,000). */
	int presence_shards;
	uint32_t presence_period_ms;
	uint32_t presence_max_pending;
	/* Presence between nodes (when clustered; every node must run the same
	 * presence_shards): how often a shard sends its changes to the other
	 * nodes (0: 200 ms; Phoenix's broadcast_period is 1500), how long a
	 * node gone silent keeps its presences listed before they leave (0:
	 * they leave when the cluster declares it down; a node that stops or
	 * restarts loses them at once), and after how long a down node is
	 * forgotten (0: 20 minutes, Phoenix's permdown_period). */
	uint32_t presence_broadcast_ms;
	uint32_t presence_down_ms;
	uint32_t presence_permdown_ms;
	/* The cluster this node joins (cluster/cluster.h; its supervisor field
	 * is ignored: the cluster process starts under the node's root, first).
	 * NULL: the node is alone. */
	const cl_opts *cluster;
	/* Flood limit: messages a client may send on one socket per second (a
	 * token bucket refilled at this rate, holding at most twice as many, so
	 * that a burst of 2 s worth passes).  0 (the default) or
	 * CH_MSGS_UNLIMITED: no limit, as Phoenix, which has none (a client
	 * library or load test that publishes flat out on one socket works as
	 * against Phoenix); set it for endpoints open to the public.  At most
	 * CH_MAX_MAX_MSGS_PER_S.  Every
	 * frame the client sends counts (joins, events, heartbeats; a long-poll
	 * POST counts each message of its batch).  Past the limit the socket is
	 * closed with 1008 (policy violation), logged and counted
	 * (ch_endpoint_flood_closed). */
	uint32_t max_messages_per_second;
} ch_endpoint_opts;

#define CH_MAX_MAX_MSGS_PER_S 1000000u
#define CH_MSGS_UNLIMITED UINT32_MAX

/* Sockets closed (1008) for going over max_messages_per_second, since start. */
uint64_t ch_endpoint_flood_closed(const ch_endpoint *ep);

/* Starts the node's supervision tree (after rt_start): the root supervisor
 * and under it PubSub, the presence tracker's shards and the channel
 * supervisor.  NULL on failure. */
ch_endpoint *ch_endpoint_start(const ch_endpoint_opts *opts);

/* Stops the node: shuts the root supervisor down, which stops its children
 * in reverse start order (the HTTP listeners if still there, then the
 * channels, then PubSub), waits for it (no polling), and frees the endpoint.
 * From outside the schedulers, before rt_shutdown (and after tp_endpoint_stop,
 * which frees the HTTP endpoint). */
void ch_endpoint_stop(ch_endpoint *ep);

/* The node's root supervisor (a static one_for_one): where subsystems join
 * the tree with rt_sup_start_under, as tp_endpoint_start does with the HTTP
 * listeners.  A subtree that exits on its own takes the root, and so the
 * node, down; RT_NOPID for a NULL ep. */
rt_pid ch_endpoint_supervisor(const ch_endpoint *ep);

/* The node's cluster, or NULL when it is alone. */
cl_node *ch_endpoint_cluster(const ch_endpoint *ep);

const ch_socket_handler *ch_endpoint_handler(const ch_endpoint *ep);
const char *ch_endpoint_secret(const ch_endpoint *ep);

/* Broadcasts {topic, event, payload JSON text} to every subscriber of topic
 * on every node.  Any thread.  Returns 0; -1 if the payload is not a JSON
 * object or a field is too long; CH_EREMOTE when this node's subscribers
 * got it but the cluster could not take it (counted in cl_stats). */
enum { CH_EREMOTE = -2 };
int ch_endpoint_broadcast(ch_endpoint *ep, const char *topic, const char *event,
                          const char *payload_json);

/* PubSub for application processes (Phoenix.PubSub.subscribe(self(), topic)
 * in a process of the app): subscribes the calling process to topic; it
 * receives CH_MSG_BROADCAST messages (read them with ch_broadcast_read).
 * 0, or -1 outside a process. */
int ch_pubsub_subscribe(ch_endpoint *ep, const char *topic);
int ch_pubsub_unsubscribe(ch_endpoint *ep, const char *topic);

/*
 * Message tags (rt_msg.tag).  Applications own CH_TAG_APP_MIN..CH_TAG_APP_MAX:
 * messages with those tags reach a channel's handle_info untouched (send them
 * with rt_send / rt_send_after).  The framework owns every tag from
 * CH_TAG_FRAMEWORK up, in these ranges:
 *   0xFFFF0000-0xFFFFFFFF  runtime (RT_TAG_SYSTEM: RT_MSG_EXIT, RT_MSG_DOWN,
 *                          RT_MSG_IO and its internal signals)
 *   0xFFFE0000-0xFFFEFFFF  channels: CH_MSG_BROADCAST, CH_MSG_FRAME (transport.h),
 *                          socket <-> channel messages (internal.h), presence
 *   0xFFFD0000-0xFFFDFFFF  transports (connection timeouts, sweeps)
 *   0xF0000000-0xFFFCFFFF  reserved for further layers (cluster, launcher)
 */
#define CH_TAG_APP_MIN 0x00000000u
#define CH_TAG_APP_MAX 0xEFFFFFFFu
#define CH_TAG_FRAMEWORK 0xF0000000u
#define CH_TAG_TRANSPORTS_MIN 0xFFFD0000u
#define CH_TAG_CHANNELS_MIN 0xFFFE0000u
#define CH_TAG_CHANNELS_MAX 0xFFFEFFFFu

/* Subscribers of topic on this node. */
size_t ch_pubsub_subscribers(ch_endpoint *ep, const char *topic);

/* Broadcasts a binary payload (V2 clients get a binary frame; V1 clients,
 * which cannot take one, are skipped with a warning).  Any thread. */
int ch_endpoint_broadcast_binary(ch_endpoint *ep, const char *topic, const char *event,
                                 const void *data, size_t len);

enum { CH_MSG_BROADCAST = 0xFFFE0001u };

/* A view of a broadcast message: filled by ch_broadcast_read into the
 * receiving process's variable; its pointers borrow the message. */
typedef struct ch_broadcast_view {
	const char *topic;
	const char *event;
	const char *payload; /* JSON text, or bytes when binary */
	size_t payload_len;
	bool binary;
} ch_broadcast_view;

/* Reads a CH_MSG_BROADCAST message (valid while the message is); 0 or -1. */
int ch_broadcast_read(const rt_msg *m, ch_broadcast_view *out);

/* ------------------------------------------------------------------ inside a channel */

const char *ch_topic(const ch_chan *ch);
ch_endpoint *ch_endpoint_of(const ch_chan *ch);
/* The socket's assigns (from connect) merged with the channel's own. */
const cJSON *ch_assigns(const ch_chan *ch);
/* Stores an assign (takes ownership of value; replaces one of the same key). */
void ch_assign(ch_chan *ch, const char *key, cJSON *value);
/* The socket id ("users_socket:42") or NULL. */
const char *ch_socket_id(const ch_chan *ch);

/* join: the reply payload for an accepted join (JSON object text). */
void ch_join_reply(ch_chan *ch, const char *json);
/* join: refuse with this reply payload (JSON object text); returns CH_ERROR. */
int ch_join_error(ch_chan *ch, const char *json);

/* The member `key` of a JSON object payload; NULL when absent, or when the
 * payload is binary or not an object (Elixir's %{"key" => v} not matching). */
const cJSON *ch_payload_get(const ch_payload *p, const char *key);

/* handle_in: the event being handled, NULL outside handle_in. */
const char *ch_event(const ch_chan *ch);

/* handle_in: the payload matches none of the event's clauses.  Crashes the
 * channel as Phoenix's FunctionClauseError does (the client gets phx_error);
 * never returns. */
_Noreturn void ch_no_clause(ch_chan *ch);

/* handle_in: replies to the message being handled ({"status":..,"response":..}):
 * with JSON text (NULL: {}), a cJSON value (NULL: {}; printed by cJSON, so
 * 1.0 prints as 1), binary data (V2), or a received payload exactly as it
 * came ({:reply, {:ok, payload}, socket}).  Not encodable (invalid UTF-8 in
 * status, binary on V1): the channel crashes, as Phoenix's encoder raises. */
void ch_reply(ch_chan *ch, const char *status, const char *json);
void ch_reply_json(ch_chan *ch, const char *status, const cJSON *response);
void ch_reply_binary(ch_chan *ch, const char *status, const void *data, size_t len);
void ch_reply_payload(ch_chan *ch, const char *status, const ch_payload *payload);

/* A reference to the message being handled, for ch_reply_ref later. */
ch_ref ch_socket_ref(const ch_chan *ch);
/* Replies through a reference, from any process or thread (dropped when
 * it cannot be encoded). */
void ch_reply_ref(const ch_ref *ref, const char *status, const char *json);
void ch_reply_ref_json(const ch_ref *ref, const char *status, const cJSON *response);

/* Pushes an event to this channel's client: a JSON object as text (NULL: {})
 * or as a cJSON tree (NULL: {}), or binary data (V2).  Not encodable (V2 and
 * not an object, binary on V1): the channel crashes, as Phoenix's push does. */
void ch_push(ch_chan *ch, const char *event, const char *json);
void ch_push_json(ch_chan *ch, const char *event, const cJSON *payload);
void ch_push_binary(ch_chan *ch, const char *event, const void *data, size_t len);

/* Broadcasts to every subscriber of this channel's topic (broadcast!), or to
 * all but this channel's client (broadcast_from!).  The payload is a JSON
 * object, as text or as a cJSON tree.  Returns 0, or -1 when it is not an
 * object or cannot be delivered (Phoenix's broadcast! raises then: crash). */
int ch_broadcast(ch_chan *ch, const char *event, const char *json);
int ch_broadcast_from(ch_chan *ch, const char *event, const char *json);
int ch_broadcast_json(ch_chan *ch, const char *event, const cJSON *payload);
int ch_broadcast_from_json(ch_chan *ch, const char *event, const cJSON *payload);
/* Binary broadcasts ({:binary, data} in Phoenix): V2 subscribers get a
 * binary frame; V1 ones, which cannot take it, are skipped with a warning.
 * Intercepting channels push it unchanged (handle_out takes JSON). */
int ch_broadcast_binary(ch_chan *ch, const char *event, const void *data, size_t len);
int ch_broadcast_from_binary(ch_chan *ch, const char *event, const void *data, size_t len);

/* Sets the stop reason and returns CH_STOP ("normal", "shutdown" or
 * "shutdown: ..." close the channel with phx_close; others give phx_error). */
int ch_stop(ch_chan *ch, const char *reason);

/* ------------------------------------------------------------------ presence */

/* Phoenix.Presence.  Presences are {topic, pid, key, meta}; the endpoint's
 * tracker (a pool of shard processes, the shard chosen by topic) monitors
 * every tracked pid, so the exit of a tracked process, for any reason,
 * removes its presences.  Every change reaches the topic's subscribers as
 * a "presence_diff" {"joins": {key: {"metas": [...]}}, "leaves": {...}},
 * coalesced per topic over ch_endpoint_opts.presence_period_ms.  Metas are
 * JSON objects; each gets a "phx_ref" (and "phx_ref_prev" after an update).
 *
 * Changes are applied asynchronously by the shard, in the order each caller
 * made them, and a caller's later list sees its own tracks already.  Any
 * thread may call the *_pid functions and the readers; the ch_chan ones act
 * for the calling channel process. */

/* Results of the presence calls: 0 or one of these. */
enum {
	CH_PRESENCE_EINVAL = -1, /* meta is not a JSON object, or topic/key empty or too long */
	CH_PRESENCE_EEXIST = -2, /* track: pid is already tracked under this topic and key */
	CH_PRESENCE_ENOENT = -3, /* update: pid is not tracked under this topic and key */
	CH_PRESENCE_EBUSY = -4,  /* the topic's shard has presence_max_pending requests queued */
};

/* Room for a phx_ref, NUL included. */
#define CH_PRESENCE_REF_MAX 32

/* Tracks the calling channel's process under `key` in its topic with `meta`
 * (a JSON object; a "phx_ref" is added), as Phoenix.Presence.track does:
 * every subscriber of the topic gets a presence_diff with the join, and the
 * entry goes away (presence_diff with the leave) when the channel process
 * exits.  Returns 0 or CH_PRESENCE_E*. */
int ch_presence_track(ch_chan *ch, const char *key, const char *meta_json);

/* The topic's presence state as JSON text ({key: {"metas": [...]}, ...}),
 * malloc'd: the payload of a "presence_state" push.  It includes the
 * caller's own tracks, even those the shard has not applied yet. */
char *ch_presence_list(ch_chan *ch);

/* Untracks / updates the calling channel's presence under key in its topic
 * (update: the new meta gets a new phx_ref and "phx_ref_prev", and the diff
 * carries the new meta as a join and the old one as a leave). */
int ch_presence_untrack(ch_chan *ch, const char *key);
int ch_presence_update(ch_chan *ch, const char *key, const char *meta_json);

/* The same for any process: track, update (ref_out, if not NULL, gets the
 * new phx_ref: CH_PRESENCE_REF_MAX bytes), untrack one presence, untrack
 * every presence of pid in every topic.  Untracks are never refused for
 * load. */
int ch_presence_track_pid(ch_endpoint *ep, rt_pid pid, const char *topic, const char *key,
                          const char *meta_json, char *ref_out);
int ch_presence_update_pid(ch_endpoint *ep, rt_pid pid, const char *topic, const char *key,
                           const char *meta_json, char *ref_out);
int ch_presence_untrack_pid(ch_endpoint *ep, rt_pid pid, const char *topic, const char *key);
int ch_presence_untrack_all(ch_endpoint *ep, rt_pid pid);

/* Presence.list(topic): {key: {"metas": [...]}, ...}, malloc'd. */
char *ch_presence_list_topic(ch_endpoint *ep, const char *topic);

/* Presence.get_by_key(topic, key): {"metas": [...]} (after the fetch hook),
 * malloc'd, or NULL when the key has no presence. */
char *ch_presence_get_by_key(ch_endpoint *ep, const char *topic, const char *key);

/* Presences (metas) in topic, and (nkeys, if not NULL) distinct keys: both
 * O(1).  Applied changes only. */
size_t ch_presence_count(ch_endpoint *ep, const char *topic, size_t *nkeys);

/* Presence's fetch/2: called with the topic and a {key: {"metas": [...]}}
 * object to enrich in place (add fields beside "metas") before it goes out:
 * on every list and get_by_key (in the caller), and on the joins and on
 * the leaves of every presence_diff (in the shard process: keep it fast and
 * thread-safe).  NULL removes it.  Set it before traffic starts. */
typedef void (*ch_presence_fetch_fn)(const char *topic, cJSON *presences, void *ud);
void ch_presence_set_fetch(ch_endpoint *ep, ch_presence_fetch_fn fn, void *ud);

/* ------------------------------------------------------------------ tokens */

/* Signs `data` (a string, e.g. a user id) as Phoenix.Token.sign(endpoint, salt, data)
 * does, into out (NUL-terminated); returns the length or -1. */
int ch_token_sign_string(const ch_endpoint *ep, const char *salt, const char *data, char *out,
                         size_t cap);
/* Verifies the len-byte token (every byte of it: a valid token followed by
 * anything, a NUL included, is invalid, as Phoenix.Token.verify compares
 * the whole binary); on success copies the data (a string without NUL
 * bytes, or an integer printed in decimal) into out, NUL-terminated, and
 * returns 0; -1 invalid, expired, or data that does not fit. */
int ch_token_verify_string(const ch_endpoint *ep, const char *salt, const char *token, size_t len,
                           int64_t max_age_s, char *out, size_t cap);

#endif /* channels_channels_h */
