/*
 * internal.h: structures shared by the files of channels/ (not for apps).
 */
#ifndef channels_internal_h
#define channels_internal_h

#include <pthread.h>

#include "channels/channels.h"
#include "channels/serializer.h"
#include "channels/token.h"
#include "channels/transport.h"

/* Messages between the socket (transport process) and its channel processes. */
enum {
	CHAN_IN =
	    0xFFFE0100u,  /* socket -> channel: a client event (chan_in_hdr + strings + payload) */
	CHAN_LEAVE,       /* socket -> channel: phx_leave (payload: ref raw, NUL-terminated) */
	CHAN_JOINED,      /* channel -> socket: join result (chan_joined + reply JSON) */
	CHAN_CLOSE,       /* channel -> socket: stopping cleanly, send phx_close */
	SOCK_DUP_TIMEOUT, /* socket -> itself: a duplicate channel did not stop in time */
};

typedef struct chan_in_hdr {
	uint32_t ref_len; /* raw ref token */
	uint32_t event_len;
	uint32_t payload_len;
	uint8_t binary; /* payload is binary (else JSON text) */
	                /* ref, NUL, event, NUL, payload follow */
} chan_in_hdr;

typedef struct chan_joined {
	uint8_t ok;
	/* reply JSON text (NUL-terminated) follows */
} chan_joined;

/* What a channel process starts with (copied flat into the spawn argument). */
typedef struct chan_start {
	const ch_channel_ops *ops;
	ch_endpoint *ep;
	rt_pid transport;
	uint8_t vsn;
	uint32_t topic_len, join_ref_len, params_len, assigns_len, id_len;
	uint8_t params_binary;
	/* topic, join_ref (raw), params (JSON text or bytes), assigns (JSON text),
	 * socket id: each followed by a NUL */
} chan_start;

/* ------------------------------------------------------------------ pubsub */

typedef struct ch_pubsub ch_pubsub;

ch_pubsub *pubsub_new(void);
void pubsub_free(ch_pubsub *ps);

/* Subscribes pid to topic.  fastlane: the transport pid that takes encoded
 * frames directly (0: pid gets CH_MSG_BROADCAST messages); intercepts: events
 * that go to pid even with a fastlane. */
int pubsub_subscribe(ch_pubsub *ps, const char *topic, rt_pid pid, rt_pid fastlane, int vsn,
                     const char *const *intercepts);
int pubsub_unsubscribe(ch_pubsub *ps, const char *topic, rt_pid pid);

/* Delivers {topic, event, payload} to the local subscribers of topic except
 * `from`: encodes the frame once per serializer for fastlane subscribers. */
int pubsub_local_broadcast(ch_pubsub *ps, rt_pid from, const char *topic, const char *event,
                           const char *payload, size_t payload_len);

/* Subscribers of a topic (tests, stats). */
size_t pubsub_count(ch_pubsub *ps, const char *topic);

/* ------------------------------------------------------------------ endpoint */

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

struct ch_endpoint {
	ch_presence *presence;
	const ch_socket_handler *handler;
	char *secret;
	rt_pid chan_sup;
	ch_pubsub *pubsub;
	uint32_t max_channels;
	pthread_mutex_t key_lock; /* guards keys */
	struct ep_key {
		char salt[64];
		ch_token_key *key;
	} keys[8];
	int nkeys;
};

extern const rt_behaviour ch_channel_behaviour;

/* A route for topic, or NULL. */
const ch_channel_ops *endpoint_route(const ch_endpoint *ep, const char *topic);

/* The derived token key for salt (cached). */
const ch_token_key *endpoint_key(ch_endpoint *ep, const char *salt);

/* Sets buf->flags to the frame kind and sends it to a transport. */
int send_frame(rt_pid transport, rt_buf *frame, int kind);

#endif /* channels_internal_h */
