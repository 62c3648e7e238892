/*
 * The long-poll sessions of an endpoint (longpoll.h): the table session id ->
 * pid, the session tokens, the sessions' supervisor, and lp_route, the one
 * place where an op reaches a session.
 *
 * Session tokens.  A Phoenix.Token (HS256, the endpoint's secret_key_base,
 * salt LP_TOKEN_SALT, max_age 1209600 s as Phoenix's LongPoll) whose data is
 * a binary: version (1), the length of the node's name, the name, the
 * session's random 16-byte id.  Phoenix signs {:v1, endpoint_id, pid,
 * priv_topic} with the PubSub server's name as salt; the client treats the
 * token as opaque, so only the round trip matters.
 *
 * The table.  A mutex and a string map keyed by the id in hex: lookups are
 * one per request, the critical section a hash probe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transports/longpoll.h"

#define LP_TOKEN_SALT "phx-c longpoll"
#define LP_TOKEN_MAX_AGE_S 1209600 /* Phoenix's LongPoll crypto max_age: 14 days */
#define LP_TOKEN_VERSION 1

_Static_assert(sizeof(void *) >= sizeof(rt_pid), "pids are stored as map values");

static void
hex_id(const uint8_t id[LP_ID_LEN], char out[2 * LP_ID_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < LP_ID_LEN; i++) {
		out[2 * i] = digits[id[i] >> 4];
		out[2 * i + 1] = digits[id[i] & 15];
	}
	out[2 * LP_ID_LEN] = 0;
}

lp_table *
lp_table_new(tp_endpoint *ep, const tp_endpoint_opts *o)
{
	if (!ep->socket)
		return NULL;
	const char *secret = ch_endpoint_secret(ep->socket);
	if (!secret)
		secret = "";
	lp_table *t = rt_xcalloc(1, sizeof(*t));
	t->ep = ep;
	pthread_mutex_init(&t->mu, NULL);
	t->key = ch_token_key_new(secret, strlen(secret), LP_TOKEN_SALT, sizeof(LP_TOKEN_SALT) - 1);
	if (!t->key) {
		pthread_mutex_destroy(&t->mu);
		free(t);
		return NULL;
	}
	cl_node *cl = ch_endpoint_cluster(ep->socket);
	t->cl = cl;
	snprintf(t->node, sizeof(t->node), "%s", cl ? cl_name(cl) : "nonode@nohost");
	t->window_ms = o->lp_window_ms ? o->lp_window_ms : 10000;
	if (t->window_ms > 3600000u)
		t->window_ms = 3600000u;
	t->max_sessions = o->lp_max_sessions ? o->lp_max_sessions : 100000;
	t->max_frames = o->lp_max_frames ? o->lp_max_frames : 10000;
	t->max_bytes = o->lp_max_bytes ? o->lp_max_bytes : ep->max_outbound;
	atomic_store(&t->next_ref, 1);
	return t;
}

int
lp_table_start(lp_table *t, rt_pid parent)
{
	static const rt_child_spec session_spec = {
	    .id = "longpoll_session",
	    .behaviour = &lp_session_behaviour,
	    .restart = RT_TEMPORARY,
	    .shutdown_ms = 2000,
	};
	rt_sup_spec spec = {
	    .strategy = RT_SIMPLE_ONE_FOR_ONE, .children = &session_spec, .nchildren = 1};
	t->sup = rt_sup_start_under(parent, "longpoll", &spec);
	if (!t->sup)
		return -1;
	return lp_remote_start(t);
}

void
lp_table_free(lp_table *t)
{
	if (!t)
		return;
	lp_remote_stop(t);
	rt_strmap_clear(&t->map, NULL);
	rt_strmap_clear(&t->pending, free);
	ch_token_key_free(t->key);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

int
lp_token_sign(const lp_table *t, const uint8_t id[LP_ID_LEN], char *out, size_t cap)
{
	uint8_t raw[2 + LP_NODE_MAX + LP_ID_LEN];
	size_t nl = strlen(t->node);
	raw[0] = LP_TOKEN_VERSION;
	raw[1] = (uint8_t)nl;
	memcpy(raw + 2, t->node, nl);
	memcpy(raw + 2 + nl, id, LP_ID_LEN);
	ch_token_data d;
	if (ch_token_data_set_binary(&d, raw, 2 + nl + LP_ID_LEN) < 0)
		return -1;
	return ch_token_sign(t->key, &d, rt_wall_ms(), LP_TOKEN_MAX_AGE_S, out, cap);
}

int
lp_token_verify(const lp_table *t, const char *tok, size_t len, lp_sid *out)
{
	ch_token_data d;
	if (!tok ||
	    ch_token_verify(t->key, tok, len, LP_TOKEN_MAX_AGE_S, rt_wall_ms(), &d) != CH_TOKEN_OK)
		return -1;
	if (d.type != CH_TOKEN_BINARY || d.bin_len < 2 + LP_ID_LEN ||
	    d.bin[0] != LP_TOKEN_VERSION || d.bin_len != 2u + d.bin[1] + LP_ID_LEN)
		return -1;
	size_t nl = d.bin[1];
	memcpy(out->node, d.bin + 2, nl);
	out->node[nl] = 0;
	memcpy(out->id, d.bin + 2 + nl, LP_ID_LEN);
	return 0;
}

rt_pid
lp_lookup(lp_table *t, const uint8_t id[LP_ID_LEN])
{
	char key[2 * LP_ID_LEN + 1];
	hex_id(id, key);
	pthread_mutex_lock(&t->mu);
	void *v = rt_strmap_get(&t->map, key);
	pthread_mutex_unlock(&t->mu);
	return (rt_pid)(uintptr_t)v;
}

int
lp_route(lp_table *t, const lp_sid *sid, uint32_t op, const void *data, size_t len, rt_buf *buf,
         uint64_t *mon)
{
	*mon = 0;
	if (strcmp(sid->node, t->node) != 0) { /* another node's session */
		if (!t->cl || len < sizeof(lp_op)) {
			rt_buf_release(buf);
			return -1;
		}
		return lp_remote_route(t, sid, op, ((const lp_op *)data)->ref, buf);
	}
	rt_pid pid = lp_lookup(t, sid->id);
	if (!pid) {
		rt_buf_release(buf);
		return -1;
	}
	if (rt_send_buf(pid, op, data, len, buf) < 0)
		return -1;      /* ended since the lookup (the message and buf are freed) */
	*mon = rt_monitor(pid); /* ended since the send: DOWN "noproc" at once */
	return 0;
}

void
lp_register(lp_table *t, const uint8_t id[LP_ID_LEN], rt_pid pid)
{
	char key[2 * LP_ID_LEN + 1];
	hex_id(id, key);
	pthread_mutex_lock(&t->mu);
	rt_strmap_put(&t->map, key, (void *)(uintptr_t)pid);
	pthread_mutex_unlock(&t->mu);
}

void
lp_unregister(lp_table *t, const uint8_t id[LP_ID_LEN], rt_pid pid)
{
	char key[2 * LP_ID_LEN + 1];
	hex_id(id, key);
	pthread_mutex_lock(&t->mu);
	if ((rt_pid)(uintptr_t)rt_strmap_get(&t->map, key) == pid)
		rt_strmap_del(&t->map, key);
	pthread_mutex_unlock(&t->mu);
}

uint64_t
lp_next_ref(lp_table *t)
{
	return atomic_fetch_add_explicit(&t->next_ref, 1, memory_order_relaxed);
}
