/*
 * The channel process (Phoenix.Channel.Server): one per client per joined
 * topic, a temporary child of the endpoint's channel supervisor.
 *
 * It runs the module's join in its init; on success it subscribes to the
 * topic with the client's fastlane (transport pid + serializer + intercepts),
 * monitors the transport, and tells the socket the result, which answers the
 * client.  Then it serves handle_in (client events forwarded by the socket),
 * handle_out (intercepted broadcasts), handle_info (anything else), and
 * stops when the module asks, on phx_leave, or when the transport exits.
 * A clean stop (normal / shutdown) tells the socket first, so the client
 * gets phx_close; any other exit reaches the socket as a DOWN: phx_error.
 */
#include <stdlib.h>
#include <string.h>

#include "channels/internal.h"

/* A channel process's state: owned by that process (its callbacks only). */
struct ch_chan {
	ch_endpoint *ep;
	const ch_channel_ops *ops;
	void *state;
	rt_pid transport;
	uint64_t transport_mon;
	char *topic;
	char *join_ref; /* raw JSON token */
	char *socket_id;
	cJSON *assigns;        /* NULL when empty */
	const char *cur_ref;   /* raw ref of the event being handled */
	const char *cur_event; /* the event being handled (handle_in), for ch_no_clause */
	char *join_reply;      /* JSON set by ch_join_reply / ch_join_error */
	char *stop_reason;
	cJSON *cur_json; /* payload being handled: freed by terminate if a handler crashes */
	ch_ps_bcast *last_bcast; /* this channel's last broadcast, while possibly in flight */
	uint8_t vsn;
	bool joined;
};

static bool
clean_reason(const char *r)
{
	return strcmp(r, "normal") == 0 || strncmp(r, "shutdown", 8) == 0;
}

static char *
dup_n(const char *p, size_t n)
{
	char *s = rt_xmalloc(n + 1);
	memcpy(s, p, n);
	s[n] = 0;
	return s;
}

/* Sends m to the client's transport.  A broadcast of this channel reaches
 * its client through the PubSub partition of the transport's scheduler, so
 * while the last one may still be there, what the channel sends next goes
 * the same way (ch_ps_forward): the client sees the channel's broadcasts,
 * replies, pushes and phx_close in the order the channel made them, as with
 * Phoenix's fastlane, which sends from the broadcasting process itself. */
static int
chan_send(ch_chan *ch, rt_msg *m)
{
	if (ch->last_bcast) {
		if (!ch_ps_bcast_done(ch->ep->pubsub, ch->last_bcast, ch->transport))
			return ch_ps_forward(ch->ep->pubsub, ch->transport, ch->transport, m);
		ch_ps_bcast_release(ch->last_bcast);
		ch->last_bcast = NULL;
	}
	return rt_send_msg(ch->transport, m);
}

static void
chan_send_frame(ch_chan *ch, rt_buf *frame, int kind)
{
	frame->flags = (uint32_t)kind;
	rt_msg *m = rt_msg_alloc(CH_MSG_FRAME, 0);
	m->buf = frame;
	chan_send(ch, m);
}

static void
chan_send_tag(ch_chan *ch, uint32_t tag)
{
	chan_send(ch, rt_msg_alloc(tag, 0));
}

/* Broadcasts from this channel, tracking it for chan_send. */
static int
chan_broadcast(ch_chan *ch, rt_pid from, const char *event, const void *payload, size_t len,
               bool binary)
{
	ch_ps_bcast *b;
	int rc = chan_publish(ch->ep, from, ch->topic, event, payload, len, binary, false, &b);
	if (b) {
		ch_ps_bcast_release(ch->last_bcast);
		ch->last_bcast = b;
	}
	return rc;
}

static void
send_joined(ch_chan *ch, bool ok)
{
	const char *reply = ch->join_reply ? ch->join_reply : "{}";
	size_t n = strlen(reply) + 1;
	rt_msg *m = rt_msg_alloc(CHAN_JOINED, sizeof(chan_joined) + n);
	chan_joined *j = rt_msg_data(m);
	j->ok = ok;
	memcpy(j + 1, reply, n);
	chan_send(ch, m);
}

static int
chan_init(void *st, const void *arg, size_t size)
{
	ch_chan *ch = st;
	const chan_start *cs = arg;
	(void)size;
	const char *p = (const char *)(cs + 1);
	ch->ops = cs->ops;
	ch->ep = cs->ep;
	ch->transport = cs->transport;
	ch->vsn = cs->vsn;
	ch->topic = dup_n(p, cs->topic_len);
	p += cs->topic_len + 1;
	ch->join_ref = dup_n(p, cs->join_ref_len);
	p += cs->join_ref_len + 1;
	const char *params = p;
	p += cs->params_len + 1;
	if (cs->assigns_len)
		ch->assigns = cJSON_ParseWithLength(p, cs->assigns_len);
	p += cs->assigns_len + 1;
	if (cs->id_len)
		ch->socket_id = dup_n(p, cs->id_len);
	if (ch->ops->state_size) {
		ch->state = rt_xcalloc(1, ch->ops->state_size);
	}

	ch_payload pl = {0};
	cJSON *json = NULL;
	if (cs->params_binary) {
		pl.bin = (const uint8_t *)params;
		pl.bin_len = cs->params_len;
	} else {
		json = cJSON_ParseWithLength(params, cs->params_len);
		pl.json = json;
		pl.raw = params;
		pl.raw_len = cs->params_len;
	}
	ch->cur_json = json;
	int rc = ch->ops->join ? ch->ops->join(ch, ch->state, ch->topic, &pl) : CH_ERROR;
	ch->cur_json = NULL;
	cJSON_Delete(json);
	if (rc != CH_OK) {
		send_joined(ch, false);
		return rt_stop("shutdown");
	}
	ch_fastlane fl = {.transport = ch->transport,
	                  .sock = cs->sock,
	                  .intercepts_vsn = ch_fastlane_pack(ch->ops->intercepts, ch->vsn)};
	ch_ps_subscribe_on(ch->ep->pubsub, ch->transport, ch->topic, rt_self(), &fl, sizeof(fl));
	ch->joined = true;
	ch->transport_mon = rt_monitor(ch->transport);
	send_joined(ch, true);
	free(ch->join_reply);
	ch->join_reply = NULL;
	return RT_OK;
}

/* Turns a callback result into the process's. */
static int
result(ch_chan *ch, int rc, const char *callback)
{
	if (rc == CH_OK)
		return RT_OK;
	if (rc == CH_STOP) {
		const char *r = ch->stop_reason ? ch->stop_reason : "normal";
		if (clean_reason(r))
			chan_send_tag(ch, CHAN_CLOSE);
		return rt_stop(r);
	}
	rt_crash("%s of %s on %s returned an error", callback, ch->ops->name, ch->topic);
}

static int
handle_event(ch_chan *ch, rt_msg *m)
{
	const chan_in_hdr *h = rt_msg_data(m);
	const char *ref = (const char *)(h + 1);
	const char *event = ref + h->ref_len + 1;
	const char *payload = event + h->event_len + 1;
	ch_payload pl = {0};
	cJSON *json = NULL;
	if (h->binary) {
		pl.bin = (const uint8_t *)payload;
		pl.bin_len = h->payload_len;
	} else {
		json = cJSON_ParseWithLength(payload, h->payload_len);
		if (!json) /* validated by the socket: only cJSON's own limits fail */
			rt_crash("%s: payload of %s cannot be parsed", ch->topic, event);
		pl.json = json;
		pl.raw = payload;
		pl.raw_len = h->payload_len;
	}
	ch->cur_ref = ref;
	ch->cur_event = event;
	ch->cur_json = json; /* freed by terminate if the handler crashes */
	ch_in_fn fn = NULL;
	for (const ch_in_clause *c = ch->ops->in; !h->event_raw && c && c->event; c++)
		if (strcmp(c->event, event) == 0) {
			fn = c->fn;
			break;
		}
	int rc;
	if (fn)
		rc = fn(ch, ch->state, &pl);
	else if (ch->ops->handle_in && !h->event_raw)
		rc = ch->ops->handle_in(ch, ch->state, event, &pl);
	else
		ch_no_clause(ch);
	ch->cur_ref = NULL;
	ch->cur_event = NULL;
	ch->cur_json = NULL;
	cJSON_Delete(json);
	return result(ch, rc, "handle_in");
}

static int
handle_out(ch_chan *ch, rt_msg *m)
{
	ch_broadcast_view v;
	if (ch_broadcast_read(m, &v) < 0 || strcmp(v.topic, ch->topic) != 0)
		return RT_OK;
	if (v.binary) { /* handle_out takes JSON: binary broadcasts go out as they are */
		ch_push_binary(ch, v.event, v.payload, v.payload_len);
		return RT_OK;
	}
	if (!ch->ops->handle_out) {
		ch_push(ch, v.event, v.payload);
		return RT_OK;
	}
	cJSON *json = cJSON_ParseWithLength(v.payload, v.payload_len);
	ch->cur_json = json;
	int rc = ch->ops->handle_out(ch, ch->state, v.event, json);
	ch->cur_json = NULL;
	cJSON_Delete(json);
	return result(ch, rc, "handle_out");
}

static int
chan_handle(void *st, rt_msg *m)
{
	ch_chan *ch = st;
	switch (m->tag) {
	case CHAN_IN:
		return handle_event(ch, m);
	case CHAN_LEAVE:
		ch->cur_ref = rt_msg_data(m);
		ch_reply(ch, "ok", "{}");
		ch->cur_ref = NULL;
		chan_send_tag(ch, CHAN_CLOSE);
		return rt_stop("shutdown: left");
	case CH_MSG_BROADCAST:
		return handle_out(ch, m);
	case RT_MSG_DOWN: {
		rt_down_info *d = rt_msg_data(m);
		if (d->ref == ch->transport_mon)
			return rt_stop(strcmp(d->reason, "normal") == 0 ? "shutdown: closed"
			                                                : d->reason);
		break;
	}
	default:
		break;
	}
	if (!ch->ops->handle_info)
		return RT_OK;
	return result(ch, ch->ops->handle_info(ch, ch->state, m), "handle_info");
}

static void
chan_terminate(void *st, const char *reason)
{
	ch_chan *ch = st;
	if (ch->ops && ch->ops->terminate && strcmp(reason, "killed") != 0)
		ch->ops->terminate(ch, ch->state, reason);
	if (ch->joined)
		ch_ps_unsubscribe(ch->ep->pubsub, ch->topic, rt_self());
	free(ch->state);
	free(ch->topic);
	free(ch->join_ref);
	free(ch->socket_id);
	free(ch->join_reply);
	free(ch->stop_reason);
	cJSON_Delete(ch->cur_json);
	cJSON_Delete(ch->assigns);
	ch_ps_bcast_release(ch->last_bcast);
}

const rt_behaviour ch_channel_behaviour = {
    .name = "channel",
    .state_size = sizeof(ch_chan),
    .init = chan_init,
    .handle = chan_handle,
    .terminate = chan_terminate,
};

/* ------------------------------------------------------------------ API */

const char *
ch_topic(const ch_chan *ch)
{
	return ch->topic;
}

ch_endpoint *
ch_endpoint_of(const ch_chan *ch)
{
	return ch->ep;
}

const cJSON *
ch_assigns(const ch_chan *ch)
{
	return ch->assigns;
}

void
ch_assign(ch_chan *ch, const char *key, cJSON *value)
{
	if (!ch->assigns)
		ch->assigns = cJSON_CreateObject();
	if (cJSON_GetObjectItemCaseSensitive(ch->assigns, key))
		cJSON_ReplaceItemInObjectCaseSensitive(ch->assigns, key, value);
	else
		cJSON_AddItemToObject(ch->assigns, key, value);
}

const char *
ch_socket_id(const ch_chan *ch)
{
	return ch->socket_id;
}

void
ch_join_reply(ch_chan *ch, const char *json)
{
	free(ch->join_reply);
	ch->join_reply = rt_xstrdup(json ? json : "{}");
}

int
ch_join_error(ch_chan *ch, const char *json)
{
	ch_join_reply(ch, json);
	return CH_ERROR;
}

const cJSON *
ch_payload_get(const ch_payload *p, const char *key)
{
	if (!p || !p->json || !cJSON_IsObject(p->json) || !key)
		return NULL;
	return cJSON_GetObjectItemCaseSensitive(p->json, key);
}

const char *
ch_event(const ch_chan *ch)
{
	return ch->cur_event;
}

_Noreturn void
ch_no_clause(ch_chan *ch)
{
	rt_crash("FunctionClauseError: no function clause matching %s.handle_in/3 for event %.64s",
	         ch->ops->name ? ch->ops->name : "channel",
	         ch->cur_event ? ch->cur_event : "(none)");
}

/* Replies with JSON text of len bytes (json NULL: {}). */
static void
reply_n(ch_chan *ch, const char *status, const char *json, size_t len)
{
	if (!ch->cur_ref)
		return;
	rt_buf *b = NULL;
	int kind =
	    ch_encode_reply(&b, ch->vsn, ch->join_ref, ch->cur_ref, ch->topic, status, json, len);
	if (kind < 0) {
		rt_buf_release(b);
		rt_crash("cannot encode the reply to %s on %s", ch->cur_ref, ch->topic);
	}
	chan_send_frame(ch, b, kind);
}

void
ch_reply(ch_chan *ch, const char *status, const char *json)
{
	reply_n(ch, status, json, json ? strlen(json) : 0);
}

/* Prints a cJSON value (NULL: NULL, standing for {}); crashes when out of memory. */
static char *
print_or_crash(const cJSON *v)
{
	if (!v)
		return NULL;
	char *s = cJSON_PrintUnformatted(v);
	if (!s)
		rt_crash("cannot print a JSON value (out of memory)");
	return s;
}

void
ch_reply_json(ch_chan *ch, const char *status, const cJSON *response)
{
	if (!ch->cur_ref)
		return;
	char *json = print_or_crash(response);
	rt_buf *b = NULL;
	int kind = ch_encode_reply(&b, ch->vsn, ch->join_ref, ch->cur_ref, ch->topic, status, json,
	                           json ? strlen(json) : 0);
	free(json);
	if (kind < 0) {
		rt_buf_release(b);
		rt_crash("cannot encode the reply to %s on %s", ch->cur_ref, ch->topic);
	}
	chan_send_frame(ch, b, kind);
}

void
ch_reply_payload(ch_chan *ch, const char *status, const ch_payload *payload)
{
	if (payload && payload->bin)
		ch_reply_binary(ch, status, payload->bin, payload->bin_len);
	else if (payload && payload->raw)
		reply_n(ch, status, payload->raw, payload->raw_len);
	else
		reply_n(ch, status, NULL, 0);
}

void
ch_reply_binary(ch_chan *ch, const char *status, const void *data, size_t len)
{
	if (!ch->cur_ref)
		return;
	rt_buf *b = NULL;
	int kind = ch_encode_reply_bin(&b, ch->vsn, ch->join_ref, ch->cur_ref, ch->topic, status,
	                               data, len);
	if (kind < 0) {
		rt_buf_release(b);
		rt_crash("cannot encode a binary reply on %s (serializer V%d)", ch->topic, ch->vsn);
	}
	chan_send_frame(ch, b, kind);
}

static void
copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strlen(src) : 0;
	if (n >= cap)
		n = cap - 1;
	if (n)
		memcpy(dst, src, n);
	dst[n] = 0;
}

ch_ref
ch_socket_ref(const ch_chan *ch)
{
	ch_ref r;
	memset(&r, 0, sizeof(r));
	r.transport = ch->transport;
	r.vsn = ch->vsn;
	copy_str(r.join_ref, sizeof(r.join_ref), ch->join_ref);
	copy_str(r.ref, sizeof(r.ref), ch->cur_ref ? ch->cur_ref : "null");
	copy_str(r.topic, sizeof(r.topic), ch->topic);
	return r;
}

void
ch_reply_ref(const ch_ref *ref, const char *status, const char *json)
{
	rt_buf *b = NULL;
	int kind = ch_encode_reply(&b, ref->vsn, ref->join_ref, ref->ref, ref->topic, status, json,
	                           json ? strlen(json) : 0);
	if (kind < 0) {
		rt_buf_release(b);
		return;
	}
	send_frame(ref->transport, b, kind);
}

void
ch_reply_ref_json(const ch_ref *ref, const char *status, const cJSON *response)
{
	char *json = response ? cJSON_PrintUnformatted(response) : NULL;
	if (response && !json)
		return;
	ch_reply_ref(ref, status, json);
	free(json);
}

void
ch_push_json(ch_chan *ch, const char *event, const cJSON *payload)
{
	char *json = print_or_crash(payload);
	ch_push(ch, event, json);
	free(json);
}

void
ch_push(ch_chan *ch, const char *event, const char *json)
{
	rt_buf *b = NULL;
	int kind = ch_encode_message(&b, ch->vsn, ch->join_ref, NULL, ch->topic, event,
	                             json ? json : "{}", json ? strlen(json) : 2);
	if (kind < 0) {
		rt_buf_release(b);
		rt_crash("cannot encode push %s on %s", event, ch->topic);
	}
	chan_send_frame(ch, b, kind);
}

void
ch_push_binary(ch_chan *ch, const char *event, const void *data, size_t len)
{
	rt_buf *b = NULL;
	int kind = ch_encode_message_bin(&b, ch->vsn, ch->join_ref, ch->topic, event, data, len);
	if (kind < 0) {
		rt_buf_release(b);
		rt_crash("cannot encode binary push %s on %s", event, ch->topic);
	}
	chan_send_frame(ch, b, kind);
}

/* Whether JSON text (trusted to be valid) is an object. */
static bool
is_object_text(const char *json)
{
	if (!json)
		return false;
	while (*json == ' ' || *json == '\t' || *json == '\n' || *json == '\r')
		json++;
	return *json == '{';
}

/* Broadcasts on ch's topic to every subscriber but `from` (RT_NOPID: all). */
static int
broadcast_text(ch_chan *ch, rt_pid from, const char *event, const char *json)
{
	if (!event || !is_object_text(json))
		return -1;
	return chan_broadcast(ch, from, event, json, strlen(json), false);
}

static int
broadcast_json(ch_chan *ch, rt_pid from, const char *event, const cJSON *payload)
{
	if (!cJSON_IsObject(payload))
		return -1;
	char *json = print_or_crash(payload);
	int rc = broadcast_text(ch, from, event, json);
	free(json);
	return rc;
}

int
ch_broadcast(ch_chan *ch, const char *event, const char *json)
{
	return broadcast_text(ch, RT_NOPID, event, json);
}

int
ch_broadcast_from(ch_chan *ch, const char *event, const char *json)
{
	return broadcast_text(ch, rt_self(), event, json);
}

int
ch_broadcast_json(ch_chan *ch, const char *event, const cJSON *payload)
{
	return broadcast_json(ch, RT_NOPID, event, payload);
}

int
ch_broadcast_from_json(ch_chan *ch, const char *event, const cJSON *payload)
{
	return broadcast_json(ch, rt_self(), event, payload);
}

int
ch_broadcast_binary(ch_chan *ch, const char *event, const void *data, size_t len)
{
	return chan_broadcast(ch, RT_NOPID, event, data, len, true);
}

int
ch_broadcast_from_binary(ch_chan *ch, const char *event, const void *data, size_t len)
{
	return chan_broadcast(ch, rt_self(), event, data, len, true);
}

int
ch_stop(ch_chan *ch, const char *reason)
{
	free(ch->stop_reason);
	ch->stop_reason = rt_xstrdup(reason ? reason : "normal");
	return CH_STOP;
}
