/*
 * The Phoenix socket (Phoenix.Socket's __in__/__info__), run inside the
 * transport process of one client connection.
 *
 * It routes decoded client messages: heartbeats, phx_join (a channel process
 * per topic, started under the channel supervisor), phx_leave (obeyed only
 * with the current join's join_ref), and events for joined topics (sent to
 * the topic's channel whatever their join_ref, as Phoenix does: the channel
 * replies with its own join_ref); it turns channel exits into phx_close
 * (clean) or phx_error (crash).  A message whose topic is not a string (any
 * JSON value passes Phoenix's serializers) matches no channel and gets the
 * answer Phoenix gives it, the topic echoed as sent.
 *
 * Phoenix's socket process waits, blocked, for a joining channel's answer
 * (and for a duplicate channel to stop).  Here nothing blocks: the socket
 * enters a "blocked" state and defers every client frame and every message
 * until the answer arrives, then replays them in order, so the client sees
 * exactly the order Phoenix gives (e.g. the join reply before any broadcast
 * on the new topic).  The deferred queue is bounded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channels/internal.h"

#define DEFER_MAX_ITEMS 4096
#define DEFER_MAX_BYTES (8u << 20)
#define DUP_TIMEOUT_MS 5000
/* Events a client may have queued for one of its channels: past this the
 * client is flooding a channel that cannot keep up, and is disconnected
 * (1008) rather than growing the node's memory. */
#define CHANNEL_BACKLOG_MAX 10000

/* A joined channel of a socket: owned by the socket (its transport
 * process), like everything below. */
typedef struct chan_ent {
	char *topic;
	char *join_ref; /* the join message's raw join_ref (may be NULL for V1) */
	rt_pid pid;
	uint64_t mon;
} chan_ent;

/* A frame or message held back while the socket is blocked: owned by the
 * socket's pending state (transport process only). */
typedef struct deferred {
	struct deferred *next;
	bool is_frame; /* a client frame, else a runtime message */
	bool binary;
	uint32_t tag;
	rt_pid from;
	rt_buf *buf;
	size_t len;
	uint8_t data[];
} deferred;

enum block { B_NONE, B_JOINING, B_DUPLICATE };

/* State needed only while the socket is blocked (a join or a duplicate join
 * in progress) or has work deferred: allocated on demand, so that an idle
 * socket stays small.  Owned by the socket (transport process only). */
typedef struct pending {
	/* B_JOINING */
	rt_pid join_pid;
	uint64_t join_mon;
	char *join_topic, *join_join_ref, *join_ref;
	/* B_DUPLICATE */
	rt_pid dup_pid;
	uint64_t dup_mon; /* rt_shutdown_child's monitor: DOWN when it is gone */
	char *dup_topic, *dup_join_ref;
	/* frames to send after the next join reply (phx_close of a duplicate) */
	rt_buf *after[4];
	int after_kind[4];
	int nafter;
	deferred *dq_head, *dq_tail;
	size_t dq_n, dq_bytes;
	bool overflowed;
} pending;

/* A client's socket: owned by its transport process, which alone writes it.
 * The fastlane reads `block` and `t` (ch_socket_push_local) from the same
 * scheduler thread, only while the transport is idle, so never concurrently. */
struct ch_socket {
	ch_endpoint *ep;
	ch_transport t;
	char *assigns_json; /* printed once, NULL when empty */
	char *id;
	chan_ent *chans;
	uint32_t nchans, capchans;
	uint8_t vsn;
	uint8_t block; /* enum block */
	/* The flood limit's token bucket: tokens in 1/1000 message, refilled
	 * at ep->msg_rate per second since tokens_ms (rt_now_ms, truncated:
	 * differences are wrap-safe). */
	uint32_t tokens;
	uint32_t tokens_ms;
	pending *pd;
};

static pending *
pd_get(ch_socket *s)
{
	if (!s->pd) {
		s->pd = rt_xcalloc(1, sizeof(pending));
	}
	return s->pd;
}

/* Frees the pending state once nothing needs it. */
static void
pd_put(ch_socket *s)
{
	pending *pd = s->pd;
	if (pd && s->block == B_NONE && !pd->dq_head && pd->nafter == 0) {
		free(pd->join_topic);
		free(pd->join_join_ref);
		free(pd->join_ref);
		free(pd->dup_topic);
		free(pd->dup_join_ref);
		free(pd);
		s->pd = NULL;
	}
}

static int process_in(ch_socket *s, const uint8_t *data, size_t len, bool binary);
static bool handle_info(ch_socket *s, rt_msg *m);

/* ------------------------------------------------------------------ sending */

static void
send_kind(ch_socket *s, rt_buf *b, int kind)
{
	if (kind < 0) {
		rt_buf_release(b);
		return;
	}
	b->flags = (uint32_t)kind;
	s->t.send(s->t.conn, b);
}

static void
reply(ch_socket *s, const char *join_ref, const char *ref, const char *topic, const char *status,
      const char *json)
{
	rt_buf *b = NULL;
	int kind = ch_encode_reply(&b, s->vsn, join_ref, ref, topic, status, json, strlen(json));
	send_kind(s, b, kind);
}

/* A reply whose topic is the raw JSON token the client sent. */
static void
reply_raw_topic(ch_socket *s, const char *join_ref, const char *ref, const char *topic_json,
                const char *status, const char *json)
{
	rt_buf *b = NULL;
	int kind = ch_encode_reply_raw_topic(&b, s->vsn, join_ref, ref, topic_json, status, json,
	                                     strlen(json));
	send_kind(s, b, kind);
}

/* phx_close / phx_error: [join_ref, join_ref, topic, event, {}]. */
static rt_buf *
encode_exit(ch_socket *s, const char *topic, const char *join_ref, const char *event, int *kind)
{
	rt_buf *b = NULL;
	*kind = ch_encode_message(&b, s->vsn, join_ref, join_ref, topic, event, "{}", 2);
	return b;
}

static void
flush_after(ch_socket *s)
{
	if (!s->pd)
		return;
	for (int i = 0; i < s->pd->nafter; i++)
		send_kind(s, s->pd->after[i], s->pd->after_kind[i]);
	s->pd->nafter = 0;
}

/* ------------------------------------------------------------------ channels */

static chan_ent *
find_topic(ch_socket *s, const char *topic)
{
	for (uint32_t i = 0; i < s->nchans; i++)
		if (strcmp(s->chans[i].topic, topic) == 0)
			return &s->chans[i];
	return NULL;
}

static chan_ent *
find_pid(ch_socket *s, rt_pid pid)
{
	for (uint32_t i = 0; i < s->nchans; i++)
		if (s->chans[i].pid == pid)
			return &s->chans[i];
	return NULL;
}

static void
delete_chan(ch_socket *s, chan_ent *c)
{
	rt_demonitor(c->mon);
	free(c->topic);
	free(c->join_ref);
	*c = s->chans[--s->nchans];
}

static char *
dup_or_null(const char *p)
{
	if (!p)
		return NULL;
	char *d = rt_xstrdup(p);
	return d;
}

/* ------------------------------------------------------------------ deferral */

static bool
defer(ch_socket *s, bool is_frame, bool binary, uint32_t tag, rt_pid from, rt_buf *buf,
      const void *data, size_t len)
{
	pd_get(s);
	if (s->pd->dq_n >= DEFER_MAX_ITEMS || s->pd->dq_bytes + len > DEFER_MAX_BYTES) {
		if (!s->pd->overflowed)
			rt_log_warning(
			    "socket %s: too much arrived while a join was pending; closing",
			    s->id ? s->id : "(anonymous)");
		s->pd->overflowed = true;
		return false;
	}
	deferred *d = rt_xmalloc(sizeof(*d) + len);
	d->next = NULL;
	d->is_frame = is_frame;
	d->binary = binary;
	d->tag = tag;
	d->from = from;
	d->buf = buf ? rt_buf_retain(buf) : NULL;
	d->len = len;
	if (len)
		memcpy(d->data, data, len);
	if (s->pd->dq_tail)
		s->pd->dq_tail->next = d;
	else
		s->pd->dq_head = d;
	s->pd->dq_tail = d;
	s->pd->dq_n++;
	s->pd->dq_bytes += len;
	return true;
}

static void
defer_front_frame(ch_socket *s, const uint8_t *data, size_t len, bool binary)
{
	deferred *d = rt_xmalloc(sizeof(*d) + len);
	memset(d, 0, sizeof(*d));
	d->is_frame = true;
	d->binary = binary;
	d->len = len;
	memcpy(d->data, data, len);
	pd_get(s);
	d->next = s->pd->dq_head;
	s->pd->dq_head = d;
	if (!s->pd->dq_tail)
		s->pd->dq_tail = d;
	s->pd->dq_n++;
	s->pd->dq_bytes += len;
}

/* Replays deferred work until the queue is empty or the socket blocks again. */
static void
replay(ch_socket *s)
{
	while (s->block == B_NONE && s->pd && s->pd->dq_head) {
		deferred *d = s->pd->dq_head;
		s->pd->dq_head = d->next;
		if (!s->pd->dq_head)
			s->pd->dq_tail = NULL;
		s->pd->dq_n--;
		s->pd->dq_bytes -= d->len;
		if (d->is_frame) {
			int code = process_in(s, d->data, d->len, d->binary);
			if (code)
				s->t.close(s->t.conn, code, "undecodable message");
		} else {
			rt_msg *m = rt_msg_alloc(d->tag, d->len);
			if (d->len)
				memcpy(rt_msg_data(m), d->data, d->len);
			m->from = d->from;
			m->buf = d->buf;
			d->buf = NULL;
			handle_info(s, m);
			rt_msg_free(m);
		}
		rt_buf_release(d->buf);
		free(d);
	}
}

static void
unblock(ch_socket *s)
{
	s->block = B_NONE;
	flush_after(s);
	replay(s);
	pd_put(s);
}

/* ------------------------------------------------------------------ join */

static void
start_join(ch_socket *s, const ch_msg *m, const ch_channel_ops *ops)
{
	const char *chan_join_ref = ch_ref_is_null(m->join_ref) ? m->ref : m->join_ref;
	size_t tl = strlen(m->topic), jl = strlen(chan_join_ref);
	const void *params = m->bin ? (const void *)m->bin : (const void *)m->payload_json;
	size_t pl = m->bin ? m->bin_len : m->payload_json_len;
	size_t al = s->assigns_json ? strlen(s->assigns_json) : 0;
	size_t il = s->id ? strlen(s->id) : 0;
	size_t size = sizeof(chan_start) + tl + jl + pl + al + il + 5;
	chan_start *cs = rt_xmalloc(size);
	memset(cs, 0, sizeof(*cs));
	cs->ops = ops;
	cs->ep = s->ep;
	cs->transport = rt_self();
	cs->sock = s;
	cs->vsn = (uint8_t)s->vsn;
	cs->topic_len = (uint32_t)tl;
	cs->join_ref_len = (uint32_t)jl;
	cs->params_len = (uint32_t)pl;
	cs->params_binary = m->bin != NULL;
	cs->assigns_len = (uint32_t)al;
	cs->id_len = (uint32_t)il;
	char *p = (char *)(cs + 1);
	memcpy(p, m->topic, tl + 1);
	p += tl + 1;
	memcpy(p, chan_join_ref, jl + 1);
	p += jl + 1;
	if (pl)
		memcpy(p, params, pl);
	p[pl] = 0;
	p += pl + 1;
	if (al)
		memcpy(p, s->assigns_json, al);
	p[al] = 0;
	p += al + 1;
	if (il)
		memcpy(p, s->id, il);
	p[il] = 0;
	rt_pid pid = rt_sup_start_child(s->ep->chan_sup, &ch_channel_behaviour, cs, size);
	free(cs);
	if (!pid) {
		reply(s, m->join_ref, m->ref, m->topic, "error", "{\"reason\":\"join crashed\"}");
		return;
	}
	pd_get(s);
	s->block = B_JOINING;
	s->pd->join_pid = pid;
	s->pd->join_mon = rt_monitor(pid);
	s->pd->join_topic = dup_or_null(m->topic);
	s->pd->join_join_ref = dup_or_null(m->join_ref);
	s->pd->join_ref = dup_or_null(m->ref);
}

static void
end_join(ch_socket *s, bool ok, const char *response)
{
	reply(s, s->pd->join_join_ref, s->pd->join_ref, s->pd->join_topic, ok ? "ok" : "error",
	      response);
	if (ok) {
		if (s->nchans == s->capchans) {
			s->capchans = s->capchans ? s->capchans * 2 : 1;
			s->chans = rt_xrealloc(s->chans, s->capchans * sizeof(chan_ent));
		}
		s->chans[s->nchans++] = (chan_ent){.topic = s->pd->join_topic,
		                                   .join_ref = s->pd->join_join_ref,
		                                   .pid = s->pd->join_pid,
		                                   .mon = s->pd->join_mon};
	} else {
		rt_demonitor(s->pd->join_mon);
		free(s->pd->join_topic);
		free(s->pd->join_join_ref);
	}
	free(s->pd->join_ref);
	s->pd->join_topic = s->pd->join_join_ref = s->pd->join_ref = NULL;
	s->pd->join_pid = RT_NOPID;
	unblock(s);
}

/* A second join of a joined topic: stop the old channel first (as Phoenix,
 * waiting for it up to 5 s, then killing it: rt_shutdown_child), then join
 * again once its DOWN comes. */
static void
start_duplicate(ch_socket *s, chan_ent *old, const uint8_t *frame, size_t len, bool binary)
{
	pd_get(s);
	s->pd->dup_pid = old->pid;
	s->pd->dup_topic = old->topic;
	s->pd->dup_join_ref = old->join_ref;
	rt_demonitor(old->mon); /* its terminate ends its subscription */
	*old = s->chans[--s->nchans];
	s->pd->dup_mon =
	    rt_shutdown_child(s->pd->dup_pid, "shutdown: duplicate_join", DUP_TIMEOUT_MS);
	s->block = B_DUPLICATE;
	defer_front_frame(s, frame, len, binary);
}

static void
end_duplicate(ch_socket *s)
{
	int kind;
	rt_buf *b = encode_exit(s, s->pd->dup_topic, s->pd->dup_join_ref, "phx_close", &kind);
	if (s->pd->nafter < 4) {
		s->pd->after[s->pd->nafter] = b;
		s->pd->after_kind[s->pd->nafter++] = kind;
	} else {
		rt_buf_release(b);
	}
	free(s->pd->dup_topic);
	free(s->pd->dup_join_ref);
	s->pd->dup_topic = s->pd->dup_join_ref = NULL;
	s->pd->dup_pid = RT_NOPID;
	/* Unlike a join, the replies queued in `after` wait for the new join's reply. */
	s->block = B_NONE;
	replay(s);
}

/* ------------------------------------------------------------------ in */

static void
forward_event(chan_ent *c, const ch_msg *m)
{
	const char *ref = m->ref ? m->ref : "null";
	const char *event = m->event ? m->event : m->event_raw;
	size_t rl = strlen(ref), el = strlen(event);
	const void *payload = m->bin ? (const void *)m->bin : (const void *)m->payload_json;
	size_t pl = m->bin ? m->bin_len : m->payload_json_len;
	rt_msg *msg = rt_msg_alloc(CHAN_IN, sizeof(chan_in_hdr) + rl + el + pl + 3);
	chan_in_hdr *h = rt_msg_data(msg);
	h->ref_len = (uint32_t)rl;
	h->event_len = (uint32_t)el;
	h->payload_len = (uint32_t)pl;
	h->binary = m->bin != NULL;
	h->event_raw = m->event == NULL;
	char *p = (char *)(h + 1);
	memcpy(p, ref, rl + 1);
	p += rl + 1;
	memcpy(p, event, el + 1);
	p += el + 1;
	if (pl)
		memcpy(p, payload, pl);
	p[pl] = 0;
	rt_send_msg(c->pid, msg);
}

/* Whether a phx_leave is for the current join: Phoenix's
 * `existing_join_ref in [join_ref, nil]` (nil: a V1 join without join_ref). */
static bool
leave_matches(const chan_ent *c, const ch_msg *m)
{
	return ch_ref_is_null(c->join_ref) || ch_ref_equal(c->join_ref, m->join_ref);
}

/* Whether the bytes of a JSON string token (which holds a NUL, so cannot be a
 * C string) match a channel route, as Phoenix's __channel__ would. */
static bool
raw_topic_routed(const ch_socket *s, const char *topic_json)
{
	size_t cap = strlen(topic_json) + 1;
	char *t = rt_xmalloc(cap);
	long n = ch_ref_string(topic_json, t, cap);
	bool hit = false;
	const ch_socket_handler *h = s->ep->handler;
	for (size_t i = 0; n >= 0 && h && i < h->nroutes && !hit; i++) {
		const char *pat = h->routes[i].pattern;
		size_t pl = strlen(pat);
		if (pl > 0 && pat[pl - 1] == '*')
			hit = (size_t)n >= pl - 1 && memcmp(t, pat, pl - 1) == 0;
		else
			hit = (size_t)n == pl && memcmp(t, pat, pl) == 0;
	}
	free(t);
	return hit;
}

/*
 * A message whose topic is not a string without NUL.  No channel has such a
 * topic, so Phoenix's socket answers it from its handle_in(nil, ...) clauses,
 * echoing the topic as decoded: phx_leave gets ok {}, anything else
 * "unmatched topic".  For phx_join it first logs the topic interpolated
 * ("Ignoring unmatched topic \"#{topic}\""), which raises for a map or a list
 * that is not chardata: the socket process crashes, as on undecodable input
 * (1011).  A string topic holding a NUL that a route matches would start a
 * channel here, which cannot hold such a topic: refused the same way.
 */
static int
in_raw_topic(ch_socket *s, const ch_msg *m)
{
	const char *t = m->topic_raw;
	if (m->event && strcmp(m->event, "phx_leave") == 0) {
		reply_raw_topic(s, m->join_ref, m->ref, t, "ok", "{}");
		return 0;
	}
	if (m->event && strcmp(m->event, "phx_join") == 0) {
		if (!ch_json_interpolable(t)) {
			rt_log_debug("socket: join of topic %.64s, which Phoenix cannot log: 1011",
			             t);
			return 1011;
		}
		if (t[0] == '"' && raw_topic_routed(s, t)) {
			rt_log_warning("socket: refusing to join a topic holding a NUL byte: %.64s",
			               t);
			return 1011;
		}
		rt_log_warning("ignoring unmatched topic %.64s", t);
	}
	reply_raw_topic(s, NULL, m->ref, t, "error", "{\"reason\":\"unmatched topic\"}");
	return 0;
}

static int
process_in(ch_socket *s, const uint8_t *data, size_t len, bool binary)
{
	ch_msg m;
	const char *err = NULL;
	if (ch_msg_decode_raw(s->vsn, binary, data, len, &m, &err) < 0) {
		rt_log_debug("socket: undecodable message (%s): closing with 1011",
		             err ? err : "?");
		return CH_CLOSE_INTERNAL_ERROR;
	}
	if (m.topic_raw) {
		int code = in_raw_topic(s, &m);
		ch_msg_free(&m);
		return code;
	}
	if (m.event && strcmp(m.topic, "phoenix") == 0 && strcmp(m.event, "heartbeat") == 0) {
		reply(s, NULL, m.ref, "phoenix", "ok", "{}");
		ch_msg_free(&m);
		return 0;
	}
	chan_ent *c = find_topic(s, m.topic);
	bool is_join = m.event && strcmp(m.event, "phx_join") == 0;
	if (is_join && c) {
		start_duplicate(s, c, data, len, binary);
	} else if (is_join) {
		const ch_channel_ops *ops = endpoint_route(s->ep, m.topic);
		if (!ops) {
			rt_log_warning("ignoring unmatched topic \"%s\"", m.topic);
			reply(s, NULL, m.ref, m.topic, "error", "{\"reason\":\"unmatched topic\"}");
		} else if (s->nchans >= s->ep->max_channels) {
			rt_log_error("reached max channels per transport limit of %u for socket %s",
			             s->ep->max_channels, s->id ? s->id : "nil");
			reply(s, m.join_ref, m.ref, m.topic, "error",
			      "{\"reason\":\"too many channels joined\"}");
		} else {
			start_join(s, &m, ops);
		}
	} else if (m.event && strcmp(m.event, "phx_leave") == 0) {
		if (!c) {
			reply(s, m.join_ref, m.ref, m.topic, "ok", "{}");
		} else if (leave_matches(c, &m)) {
			const char *ref = m.ref ? m.ref : "null";
			rt_send(c->pid, CHAN_LEAVE, ref, strlen(ref) + 1);
		}
		/* else the client raced a server close: no reply, as in Phoenix */
	} else if (c) {
		/* Any join_ref: an event sent for an earlier join of the topic goes
		 * to the current channel, which replies with its own join_ref. */
		if (rt_msgq_len(c->pid) >= CHANNEL_BACKLOG_MAX) {
			rt_log_warning("socket %s: %u events queued for %s; closing (1008)",
			               s->id ? s->id : "(anonymous)", CHANNEL_BACKLOG_MAX,
			               c->topic);
			ch_msg_free(&m);
			return CH_CLOSE_POLICY_VIOLATION;
		} else {
			forward_event(c, &m);
		}
	} else {
		reply(s, NULL, m.ref, m.topic, "error", "{\"reason\":\"unmatched topic\"}");
	}
	if (s->block == B_NONE) {
		flush_after(s);
		pd_put(s);
	}
	ch_msg_free(&m);
	return 0;
}

/* The flood limit (ch_endpoint_opts.max_messages_per_second): takes one
 * message from the socket's bucket; false when it is empty.
 *
 * What to do with a client over the limit: Phoenix has no limit, and its
 * protocol has no error a client library would act on for "slow down" (an
 * error reply to every event would only be retried by the app, and the
 * socket would still have to read and decode each message to answer it).
 * A client that sends more than the limit (generous: 1000 a second, bursts
 * of 2000, far above what the phoenix client does) is misbehaving, so the
 * socket is closed with 1008 (policy violation), as for a client flooding
 * a busy channel (CHANNEL_BACKLOG_MAX): the reading stops at once, the
 * client library sees the close and reconnects after its backoff, which
 * bounds the rate at which one client costs the node work. */
static bool
take_token(ch_socket *s)
{
	const ch_endpoint *ep = s->ep;
	if (!ep->msg_rate)
		return true;
	uint32_t now = (uint32_t)rt_now_ms();
	uint32_t elapsed = now - s->tokens_ms;
	if (elapsed) {
		uint64_t t = (uint64_t)s->tokens + (uint64_t)elapsed * ep->msg_rate;
		s->tokens = t > ep->msg_burst_milli ? ep->msg_burst_milli : (uint32_t)t;
		s->tokens_ms = now;
	}
	if (s->tokens < 1000)
		return false;
	s->tokens -= 1000;
	return true;
}

int
ch_socket_in(ch_socket *s, const uint8_t *data, size_t len, bool binary)
{
	if (!take_token(s)) {
		atomic_fetch_add_explicit(&s->ep->flood_closed, 1, memory_order_relaxed);
		rt_log_warning("socket %s: over %u messages a second; closing (1008)",
		               s->id ? s->id : "(anonymous)", s->ep->msg_rate);
		return CH_CLOSE_POLICY_VIOLATION;
	}
	if (s->block != B_NONE)
		return defer(s, true, binary, 0, RT_NOPID, NULL, data, len)
		           ? 0
		           : CH_CLOSE_INTERNAL_ERROR;
	return process_in(s, data, len, binary);
}

/* ------------------------------------------------------------------ info */

/* Whether m ends the current block (and is handled now, not deferred). */
static bool
unblocks(ch_socket *s, rt_msg *m)
{
	if (s->block == B_JOINING) {
		if (m->tag == CHAN_JOINED && m->from == s->pd->join_pid)
			return true;
		if (m->tag == RT_MSG_DOWN &&
		    ((rt_down_info *)rt_msg_data(m))->ref == s->pd->join_mon)
			return true;
	} else if (s->block == B_DUPLICATE) {
		if (m->tag == RT_MSG_DOWN &&
		    ((rt_down_info *)rt_msg_data(m))->ref == s->pd->dup_mon)
			return true;
	}
	return false;
}

static bool
handle_info(ch_socket *s, rt_msg *m)
{
	switch (m->tag) {
	case CH_MSG_FRAME:
		if (m->buf) { /* the transport takes the message's reference */
			rt_buf *b = m->buf;
			m->buf = NULL;
			s->t.send(s->t.conn, b);
		}
		return true;
	case CHAN_JOINED: {
		if (s->block != B_JOINING || m->from != s->pd->join_pid)
			return true;
		chan_joined *j = rt_msg_data(m);
		end_join(s, j->ok, (const char *)(j + 1));
		return true;
	}
	case CHAN_CLOSE: {
		chan_ent *c = find_pid(s, m->from);
		if (c) {
			int kind;
			rt_buf *b = encode_exit(s, c->topic, c->join_ref, "phx_close", &kind);
			delete_chan(s, c);
			send_kind(s, b, kind);
		}
		return true;
	}
	case RT_MSG_DOWN: {
		rt_down_info *d = rt_msg_data(m);
		if (s->block == B_JOINING && d->ref == s->pd->join_mon) {
			rt_log_error("join of %s crashed: %s", s->pd->join_topic, d->reason);
			end_join(s, false, "{\"reason\":\"join crashed\"}");
			return true;
		}
		if (s->block == B_DUPLICATE && d->ref == s->pd->dup_mon) {
			end_duplicate(s);
			return true;
		}
		chan_ent *c = find_pid(s, d->pid);
		if (c && c->mon == d->ref) {
			int kind;
			rt_buf *b = encode_exit(s, c->topic, c->join_ref, "phx_error", &kind);
			delete_chan(s, c);
			send_kind(s, b, kind);
			return true;
		}
		return false;
	}
	case CH_MSG_BROADCAST: {
		ch_broadcast_view v;
		if (ch_broadcast_read(m, &v) == 0 && s->id && strcmp(v.topic, s->id) == 0 &&
		    strcmp(v.event, "disconnect") == 0)
			s->t.close(s->t.conn, CH_CLOSE_NORMAL, "disconnected");
		return true;
	}
	default:
		return false;
	}
}

static bool
is_socket_tag(uint32_t tag)
{
	return tag == CH_MSG_FRAME || tag == CHAN_JOINED || tag == CHAN_CLOSE ||
	       tag == RT_MSG_DOWN || tag == CH_MSG_BROADCAST;
}

bool
ch_socket_info(ch_socket *s, rt_msg *m)
{
	if (!is_socket_tag(m->tag))
		return false;
	if (s->block != B_NONE && !unblocks(s, m)) {
		if (!defer(s, false, false, m->tag, m->from, m->buf, rt_msg_data(m), m->size))
			s->t.close(s->t.conn, CH_CLOSE_INTERNAL_ERROR, "overloaded");
		return true;
	}
	return handle_info(s, m);
}

/* ------------------------------------------------------------------ open/close */

static bool
ascii_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* The length of the SemVer 2.0 identifier at v[0, n) (ASCII letters, digits,
 * '-'), 0 when empty or, for a pre-release one (numeric_rule), a numeric
 * identifier with a leading zero, which Elixir's Version.parse refuses. */
static size_t
semver_ident(const char *v, size_t n, bool numeric_rule)
{
	size_t i = 0;
	bool digits = true;
	while (i < n && (ascii_digit((unsigned char)v[i]) || v[i] == '-' ||
	                 ((v[i] | 0x20) >= 'a' && (v[i] | 0x20) <= 'z'))) {
		digits = digits && ascii_digit((unsigned char)v[i]);
		i++;
	}
	if (numeric_rule && digits && i > 1 && v[0] == '0')
		return 0;
	return i;
}

/* The length of the dot-separated identifiers at v[0, n), 0 when one of
 * them is empty or invalid. */
static size_t
semver_idents(const char *v, size_t n, bool numeric_rule)
{
	size_t i = 0;
	for (;;) {
		size_t l = semver_ident(v + i, n - i, numeric_rule);
		if (!l)
			return 0;
		i += l;
		if (i == n || v[i] != '.')
			return i;
		i++;
	}
}

/*
 * The serializer version the client asks for with the "vsn" parameter v[0,
 * n) (v NULL: none, so 1.0.0), as Phoenix.Socket negotiates it: Elixir's
 * Version.parse (SemVer 2.0: MAJOR.MINOR.PATCH without leading zeros, an
 * optional -pre-release and +build) must succeed and the version match
 * "~> 1.0.0" (V1) or "~> 2.0.0" (V2), i.e. >= X.0.0 and < X.1.0-0: so
 * "2.0.7" and "2.0.1-rc" do, "2.0.0-rc" (before 2.0.0) does not.  0 when
 * neither matches.
 */
static int
parse_vsn(const char *v, size_t n)
{
	if (!v)
		return CH_VSN_1;
	if (n < 5 || (v[0] != '1' && v[0] != '2') || memcmp(v + 1, ".0.", 3) != 0)
		return 0;
	size_t i = 4, patch = i;
	while (i < n && ascii_digit((unsigned char)v[i]))
		i++;
	if (i == patch || (v[patch] == '0' && i - patch > 1))
		return 0;
	bool zero = i - patch == 1 && v[patch] == '0';
	if (i < n && v[i] == '-') {
		size_t l = semver_idents(v + i + 1, n - i - 1, true);
		if (!l || zero) /* X.0.0-pre sorts before X.0.0 */
			return 0;
		i += 1 + l;
	}
	if (i < n && v[i] == '+') {
		size_t l = semver_idents(v + i + 1, n - i - 1, false);
		if (!l)
			return 0;
		i += 1 + l;
	}
	if (i != n)
		return 0;
	return v[0] == '1' ? CH_VSN_1 : CH_VSN_2;
}

ch_socket *
ch_socket_open(ch_endpoint *ep, const ch_params *params, const ch_connect_info *info,
               const ch_transport *t, int *http_status)
{
	const char *v;
	size_t vl;
	ch_param_kind vk = ch_params_find(params, "vsn", &v, &vl);
	if (vk == CH_PARAM_NESTED) {
		/* Phoenix's Version.parse raises on a list or map: HTTP 500. */
		rt_log_error("the client's serializer version \"vsn\" is not a string");
		*http_status = 500;
		return NULL;
	}
	int vsn = parse_vsn(v, vl);
	if (!vsn) {
		rt_log_error("the client's requested serializer version \"%.*s\" is not supported",
		             (int)(vl > 64 ? 64 : vl), v);
		*http_status = 403;
		return NULL;
	}
	const ch_socket_handler *h = ep->handler;
	cJSON *assigns = cJSON_CreateObject();
	if (!assigns)
		rt_oom("cJSON_CreateObject", sizeof(cJSON));
	int rc = h && h->connect ? h->connect(ep, params, info, assigns) : CH_OK;
	if (rc != CH_OK) {
		cJSON_Delete(assigns);
		if (rc != CH_ERROR)
			rt_log_error("the socket's connect crashed (result %d)", rc);
		*http_status = rc == CH_ERROR ? 403 : 500;
		return NULL;
	}
	ch_socket *s = rt_xcalloc(1, sizeof(*s));
	s->ep = ep;
	s->tokens = ep->msg_burst_milli;
	s->tokens_ms = (uint32_t)rt_now_ms();
	s->t = *t;
	s->vsn = (uint8_t)vsn;
	if (assigns->child)
		s->assigns_json = cJSON_PrintUnformatted(assigns);
	char id[256];
	size_t n = h && h->id ? h->id(assigns, id, sizeof(id)) : 0;
	if (n > 0 && n < sizeof(id)) {
		id[n] = 0;
		s->id = dup_or_null(id);
		ch_ps_subscribe(ep->pubsub, s->id, rt_self(), NULL, 0);
	}
	cJSON_Delete(assigns); /* channels get them as text */
	*http_status = 0;
	return s;
}

void
ch_socket_close(ch_socket *s, const char *reason)
{
	(void)reason;
	if (!s)
		return;
	if (s->id) {
		ch_ps_unsubscribe(s->ep->pubsub, s->id, rt_self());
		free(s->id);
	}
	/* Channel processes monitor this process and stop when it exits. */
	for (uint32_t i = 0; i < s->nchans; i++) {
		free(s->chans[i].topic);
		free(s->chans[i].join_ref);
	}
	free(s->chans);
	pending *pd = s->pd;
	if (pd) {
		for (int i = 0; i < pd->nafter; i++)
			rt_buf_release(pd->after[i]);
		pd->nafter = 0;
		deferred *d = pd->dq_head;
		while (d) {
			deferred *n = d->next;
			rt_buf_release(d->buf);
			free(d);
			d = n;
		}
		pd->dq_head = NULL;
		s->block = B_NONE;
		pd_put(s);
	}
	free(s->assigns_json);
	free(s);
}

int
ch_socket_push_local(ch_socket *s, rt_buf *frame)
{
	if (s->block != B_NONE || !s->t.push_local)
		return CH_PUSH_DECLINED;
	return s->t.push_local(s->t.conn, frame);
}

void
ch_socket_flush_local(ch_socket *s)
{
	if (s->t.flush_local)
		s->t.flush_local(s->t.conn);
}

int
ch_socket_vsn(const ch_socket *s)
{
	return s->vsn;
}
