/*
 * The channels endpoint: the node's root supervisor, the socket handler, the
 * channel supervisor (a dynamic supervisor of temporary children, as
 * Phoenix's), PubSub, the presence tracker (presence.c), token keys, and the
 * application-facing broadcast and token helpers.
 *
 * The node's supervision tree.  ch_endpoint_start starts the root
 * (one_for_one) and under it, in start order, each a significant subtree
 * (rt_sup_start_under: never restarted; its exit takes the root down):
 *
 *     root
 *      |- cluster    the cluster process, when the node is clustered (cluster/)
 *      |- pubsub     one_for_all of the partitions, one per scheduler (pubsub.c)
 *      |- tracker    one_for_one of the presence tracker's shards (tracker.c),
 *      |             after PubSub, which they broadcast through
 *      |- channels   simple_one_for_one of the channel processes
 *      `- listeners  added by tp_endpoint_start (transports/endpoint.c)
 *
 * ch_endpoint_stop shuts the root down, which terminates its children in
 * reverse order: listeners (WebSockets closed with 1001 after their queue),
 * channels (whose exits the tracker reports as leaves), the tracker, PubSub,
 * the cluster process; then cl_stop says goodbye to the other nodes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channels/internal.h"

/* How long ch_endpoint_stop waits for the tree: the listeners' drain, the
 * channels' 5 s, the partitions'. */
#define CH_STOP_WAIT_MS 60000

/* The token key cache's values (ep->keys). */
static void
free_key(void *k)
{
	ch_token_key_free(k);
}

ch_endpoint *
ch_endpoint_start(const ch_endpoint_opts *opts)
{
	ch_endpoint *ep = rt_xcalloc(1, sizeof(*ep));
	ep->handler = opts->handler;
	ep->secret = rt_xstrdup(opts->secret_key_base ? opts->secret_key_base : "");
	ep->max_channels =
	    opts->handler && opts->handler->max_channels ? opts->handler->max_channels : 100;
	uint32_t rate = opts->max_messages_per_second;
	if (rate != 0 && rate != CH_MSGS_UNLIMITED) {
		if (rate > CH_MAX_MAX_MSGS_PER_S)
			rate = CH_MAX_MAX_MSGS_PER_S;
		ep->msg_rate = rate;
		ep->msg_burst_milli = 2 * rate * 1000u; /* <= 2e9: fits */
	}
	pthread_mutex_init(&ep->key_lock, NULL);
	rt_sup_spec root = {.strategy = RT_ONE_FOR_ONE};
	ep->sup = rt_sup_start(&root);
	if (ep->sup && opts->cluster) {
		cl_opts co = *opts->cluster;
		co.supervisor = ep->sup;
		ep->cluster = cl_start(&co);
		ep->ps_link = ep->cluster ? ps_cluster_new(ep->cluster) : NULL;
		if (!ep->ps_link) {
			ch_endpoint_stop(ep);
			return NULL;
		}
	}
	static const ch_ps_dispatcher *const dispatchers[] = {&ch_fastlane_dispatcher, NULL};
	ch_ps_opts ps_opts = {.dispatchers = dispatchers, .supervisor = ep->sup};
	if (ep->ps_link) {
		ps_opts.adapter = &ps_cluster_adapter;
		ps_opts.adapter_ctx = ep->ps_link;
	}
	ep->pubsub = ep->sup ? ch_ps_start(&ps_opts) : NULL;
	if (!ep->pubsub) {
		ch_endpoint_stop(ep);
		return NULL;
	}
	if (ep->ps_link)
		ps_cluster_bind(ep->ps_link, ep->pubsub);
	ep->presence = presence_start(ep, opts); /* the tracker's subtree */
	if (!ep->presence) {
		ch_endpoint_stop(ep);
		return NULL;
	}
	static const rt_child_spec channel_spec = {
	    .id = "channel",
	    .behaviour = &ch_channel_behaviour,
	    .restart = RT_TEMPORARY,
	    .shutdown_ms = 5000,
	};
	rt_sup_spec spec = {
	    .strategy = RT_SIMPLE_ONE_FOR_ONE, .children = &channel_spec, .nchildren = 1};
	ep->chan_sup = rt_sup_start_under(ep->sup, "channels", &spec);
	if (!ep->chan_sup) {
		ch_endpoint_stop(ep);
		return NULL;
	}
	return ep;
}

void
ch_endpoint_stop(ch_endpoint *ep)
{
	if (!ep)
		return;
	if (ep->sup) {
		/* One call for the whole tree, in reverse start order. */
		rt_exit(ep->sup, "shutdown");
		if (rt_wait_exit(ep->sup, CH_STOP_WAIT_MS) < 0) {
			rt_log_error("endpoint stop: the supervision tree is still running after "
			             "%d ms (a handler is stuck?): the endpoint is not freed",
			             CH_STOP_WAIT_MS);
			return;
		}
	}
	rt_strmap_clear(&ep->keys, free_key);
	pthread_mutex_destroy(&ep->key_lock);
	if (ep->cluster)
		cl_stop(ep->cluster); /* goodbye, once nothing here sends any more */
	ps_cluster_free(ep->ps_link);
	presence_stop(ep->presence); /* after the channels: their exits are leaves */
	ch_ps_stop(ep->pubsub);
	free(ep->secret);
	free(ep);
}

rt_pid
ch_endpoint_supervisor(const ch_endpoint *ep)
{
	return ep ? ep->sup : RT_NOPID;
}

cl_node *
ch_endpoint_cluster(const ch_endpoint *ep)
{
	return ep ? ep->cluster : NULL;
}

const ch_socket_handler *
ch_endpoint_handler(const ch_endpoint *ep)
{
	return ep->handler;
}

const char *
ch_endpoint_secret(const ch_endpoint *ep)
{
	return ep->secret;
}

const ch_channel_ops *
endpoint_route(const ch_endpoint *ep, const char *topic)
{
	const ch_socket_handler *h = ep->handler;
	for (size_t i = 0; h && i < h->nroutes; i++) {
		const char *pat = h->routes[i].pattern;
		size_t n = strlen(pat);
		if (n > 0 && pat[n - 1] == '*') {
			if (strncmp(topic, pat, n - 1) == 0)
				return h->routes[i].channel;
		} else if (strcmp(topic, pat) == 0) {
			return h->routes[i].channel;
		}
	}
	return NULL;
}

/* The root name of a parameter key as Plug.Conn.Query.decode_each splits
 * it: "a[b][c]" and "a[]" are nested under "a" (*nested set); a key not
 * ending in ']', or whose first '[' is its first byte, is its own root. */
static size_t
param_root(const ch_param *it, bool *nested)
{
	*nested = false;
	if (it->key_len < 2 || it->key[it->key_len - 1] != ']')
		return it->key_len;
	const char *b = memchr(it->key, '[', it->key_len);
	if (!b || b == it->key)
		return it->key_len;
	*nested = true;
	return (size_t)(b - it->key);
}

ch_param_kind
ch_params_find(const ch_params *p, const char *key, const char **value, size_t *len)
{
	size_t kl = strlen(key);
	ch_param_kind kind = CH_PARAM_NONE;
	const ch_param *str = NULL;
	bool placed = false; /* a "key[...]" has placed the nested value */
	for (size_t i = 0; p && i < p->n; i++) {
		const ch_param *it = &p->items[i];
		bool nested;
		size_t rl = param_root(it, &nested);
		if (rl != kl || memcmp(it->key, key, kl) != 0)
			continue;
		if (!nested) {
			kind = CH_PARAM_STRING;
			str = it;
		} else if (!placed) {
			placed = true;
			kind = CH_PARAM_NESTED;
		}
	}
	if (value)
		*value = kind == CH_PARAM_STRING ? str->value : NULL;
	if (len)
		*len = kind == CH_PARAM_STRING ? str->value_len : 0;
	return kind;
}

const char *
ch_params_get_n(const ch_params *p, const char *key, size_t *len)
{
	const char *v;
	size_t n;
	if (ch_params_find(p, key, &v, &n) != CH_PARAM_STRING)
		v = NULL;
	if (len)
		*len = v ? n : 0;
	return v;
}

const char *
ch_params_get(const ch_params *p, const char *key)
{
	size_t n;
	const char *v = ch_params_get_n(p, key, &n);
	return v && !memchr(v, 0, n) ? v : NULL;
}

const ch_token_key *
endpoint_key(ch_endpoint *ep, const char *salt)
{
	pthread_mutex_lock(&ep->key_lock);
	ch_token_key *k = rt_strmap_get(&ep->keys, salt);
	if (!k) {
		k = ch_token_key_new(ep->secret, strlen(ep->secret), salt, strlen(salt));
		if (k)
			rt_strmap_put(&ep->keys, salt, k);
	}
	pthread_mutex_unlock(&ep->key_lock);
	return k;
}

int
ch_token_sign_string(const ch_endpoint *ep, const char *salt, const char *data, char *out,
                     size_t cap)
{
	const ch_token_key *k = endpoint_key((ch_endpoint *)ep, salt);
	if (!k)
		return -1;
	ch_token_data d;
	if (ch_token_data_set_binary(&d, data, strlen(data)) < 0)
		return -1;
	return ch_token_sign(k, &d, rt_wall_ms(), CH_TOKEN_DEFAULT_MAX_AGE, out, cap);
}

int
ch_token_verify_string(const ch_endpoint *ep, const char *salt, const char *token, size_t len,
                       int64_t max_age_s, char *out, size_t cap)
{
	const ch_token_key *k = endpoint_key((ch_endpoint *)ep, salt);
	if (!k || !token)
		return -1;
	ch_token_data *d = malloc(sizeof(*d));
	if (!d)
		return -1;
	int rc = -1;
	if (ch_token_verify(k, token, len, max_age_s, rt_wall_ms(), d) == CH_TOKEN_OK) {
		if (d->type == CH_TOKEN_INTEGER)
			rc = snprintf(out, cap, "%lld", (long long)d->integer) < (int)cap ? 0 : -1;
		else if (d->bin_len < cap && !memchr(d->bin, 0, d->bin_len)) {
			memcpy(out, d->bin, d->bin_len);
			out[d->bin_len] = 0;
			rc = 0;
		}
	}
	free(d);
	return rc;
}

_Static_assert((int)CH_EREMOTE == (int)CH_PS_EREMOTE, "PubSub's error is the endpoint's");

int
ch_endpoint_broadcast(ch_endpoint *ep, const char *topic, const char *event,
                      const char *payload_json)
{
	const char *p = payload_json;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p != '{')
		return -1;
	return chan_publish(ep, RT_NOPID, topic, event, payload_json, strlen(payload_json), false,
	                    false, NULL);
}

int
ch_endpoint_broadcast_binary(ch_endpoint *ep, const char *topic, const char *event,
                             const void *data, size_t len)
{
	return chan_publish(ep, RT_NOPID, topic, event, data, len, true, false, NULL);
}

int
ch_pubsub_subscribe(ch_endpoint *ep, const char *topic)
{
	rt_pid self = rt_self();
	if (!self)
		return -1;
	return ch_ps_subscribe(ep->pubsub, topic, self, NULL, 0);
}

int
ch_pubsub_unsubscribe(ch_endpoint *ep, const char *topic)
{
	rt_pid self = rt_self();
	if (!self)
		return -1;
	return ch_ps_unsubscribe(ep->pubsub, topic, self);
}

size_t
ch_pubsub_subscribers(ch_endpoint *ep, const char *topic)
{
	return ch_ps_subscribers(ep->pubsub, topic);
}

int
send_frame(rt_pid transport, rt_buf *frame, int kind)
{
	frame->flags = (uint32_t)kind;
	return rt_send_buf(transport, CH_MSG_FRAME, NULL, 0, frame);
}

uint64_t
ch_endpoint_flood_closed(const ch_endpoint *ep)
{
	return ep ? atomic_load(&ep->flood_closed) : 0;
}
