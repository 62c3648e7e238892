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

struct ch_chan {
	ch_endpoint *ep;
	const ch_channel_ops *ops;
	void *state;
	rt_pid transport;
	uint64_t transport_mon;
	char *topic;
	char *join_ref; /* raw JSON token */
	char *socket_id;
	cJSON *assigns;      /* NULL when empty */
	const char *cur_ref; /* raw ref of the event being handled */
	char *join_reply;    /* JSON set by ch_join_reply / ch_join_error */
	char *stop_reason;
	cJSON *cur_json; /* payload being handled: freed by terminate if a handler crashes */
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
	char *s = malloc(n + 1);
	if (!s)
		abort();
	memcpy(s, p, n);
	s[n] = 0;
	return s;
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
	rt_send_msg(ch->transport, m);
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
		ch->state = calloc(1, ch->ops->state_size);
		if (!ch->state)
			abort();
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
	pubsub_subscribe(ch->ep->pubsub, ch->topic, rt_self(), ch->transport, ch->vsn,
	                 ch->ops->intercepts);
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
			rt_send(ch->transport, CHAN_CLOSE, NULL, 0);
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
	if (!ch->ops->handle_in) {
		cJSON_Delete(json);
		rt_crash("no handle_in clause in %s for event \"%s\"", ch->ops->name, event);
	}
	ch->cur_ref = ref;
	ch->cur_json = json;
	int rc = ch->ops->handle_in(ch, ch->state, event, &pl);
	ch->cur_ref = NULL;
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
		rt_send(ch->transport, CHAN_CLOSE, NULL, 0);
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
		pubsub_unsubscribe(ch->ep->pubsub, ch->topic, rt_self());
	free(ch->state);
	free(ch->topic);
	free(ch->join_ref);
	free(ch->socket_id);
	free(ch->join_reply);
	free(ch->stop_reason);
	cJSON_Delete(ch->cur_json);
	cJSON_Delete(ch->assigns);
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
	ch->join_reply = strdup(json ? json : "{}");
}

int
ch_join_error(ch_chan *ch, const char *json)
{
	ch_join_reply(ch, json);
	return CH_ERROR;
}

void
ch_reply(ch_chan *ch, const char *status, const char *json)
{
	if (!ch->cur_ref)
		return;
	rt_buf *b = NULL;
	int kind = ch_encode_reply(&b, ch->vsn, ch->join_ref, ch->cur_ref, ch->topic, status, json,
	                           json ? strlen(json) : 0);
	if (kind < 0) {
		rt_buf_release(b);
		rt_crash("cannot encode the reply to %s on %s", ch->cur_ref, ch->topic);
	}
	send_frame(ch->transport, b, kind);
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
	send_frame(ch->transport, b, kind);
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
ch_push(ch_chan *ch, const char *event, const char *json)
{
	rt_buf *b = NULL;
	int kind = ch_encode_message(&b, ch->vsn, ch->join_ref, NULL, ch->topic, event,
	                             json ? json : "{}", json ? strlen(json) : 2);
	if (kind < 0) {
		rt_buf_release(b);
		rt_crash("cannot encode push %s on %s", event, ch->topic);
	}
	send_frame(ch->transport, b, kind);
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
	send_frame(ch->transport, b, kind);
}

int
ch_broadcast(ch_chan *ch, const char *event, const char *json)
{
	return pubsub_local_broadcast(ch->ep->pubsub, RT_NOPID, ch->topic, event, json,
	                              strlen(json));
}

int
ch_broadcast_from(ch_chan *ch, const char *event, const char *json)
{
	return pubsub_local_broadcast(ch->ep->pubsub, rt_self(), ch->topic, event, json,
	                              strlen(json));
}

int
ch_stop(ch_chan *ch, const char *reason)
{
	free(ch->stop_reason);
	ch->stop_reason = strdup(reason ? reason : "normal");
	return CH_STOP;
}
