/*
 * presence_channel.c: PresenceChannel of the chat app (presence:*),
 * RefWeb.PresenceChannel of the reference app:
 *
 *   join presence:* params     ok {}; key = socket.assigns[:user_id] ||
 *                              params["name"]; then (like the guide's
 *                              send(self(), :after_join)) tracks the joiner
 *                              under to_string(key) with meta
 *                              {"online_at": <unix seconds>} and pushes
 *                              presence_state (Presence.list) to the joiner.
 *
 * An authenticated socket is keyed by its user_id whatever the params; an
 * anonymous join without a name has key nil, tracked (as Phoenix's
 * to_string(nil)) under "".  params["name"] raises for params that are not a
 * map or null (a list, a number, binary data): the join crashes.  A name
 * that is an object is tracked by Phoenix but then cannot be listed
 * (to_string raises): here the channel crashes after the join reply, before
 * tracking; so does an array (Phoenix lists chardata arrays, joined into one
 * string).  A float name prints as cJSON prints it (1e+20, where Elixir
 * gives 1.0e20).  Joins and leaves reach every subscriber as
 * presence_diff, so the phoenix.js Presence class works unchanged.  The
 * channel handles no client events: any push crashes it, as a missing
 * handle_in clause does in Elixir.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "examples/chat/chat.h"

/* A PresenceChannel's assigns; owned by its channel process. */
typedef struct chat_presence {
	cJSON *key; /* socket.assigns[:user_id] || params["name"]: a copy, or NULL for nil */
} chat_presence;

static int
chat_presence_join(ch_chan *ch, void *state, const char *topic, const ch_payload *params)
{
	(void)topic;
	chat_presence *st = state;
	const cJSON *key = cJSON_GetObjectItemCaseSensitive(ch_assigns(ch), "user_id");
	if (!key || cJSON_IsNull(key) || cJSON_IsFalse(key)) {
		if (!params->json || (!cJSON_IsObject(params->json) && !cJSON_IsNull(params->json)))
			return ch_join_error(ch, "{\"reason\":\"join crashed\"}");
		key = ch_payload_get(params, "name");
	}
	if (key && !(st->key = cJSON_Duplicate(key, true)))
		return ch_join_error(ch, "{\"reason\":\"join crashed\"}");
	rt_send(rt_self(), CHAT_MSG_AFTER_JOIN, NULL, 0);
	return CH_OK;
}

/* to_string(key) for a key of JSON type; crashes where Elixir raises. */
static char *
chat_key_string(const cJSON *key)
{
	char *s = NULL;
	if (!key || cJSON_IsNull(key))
		s = strdup("");
	else if (cJSON_IsString(key))
		s = strdup(key->valuestring);
	else if (cJSON_IsBool(key))
		s = strdup(cJSON_IsTrue(key) ? "true" : "false");
	else if (cJSON_IsNumber(key) && fabs(key->valuedouble) < 9.0e15 &&
	         floor(key->valuedouble) == key->valuedouble) {
		if (asprintf(&s, "%lld", (long long)key->valuedouble) < 0)
			s = NULL;
	} else if (cJSON_IsNumber(key))
		s = cJSON_PrintUnformatted(key);
	else
		rt_crash("Protocol.UndefinedError: protocol String.Chars not implemented for the "
		         "presence key");
	if (!s)
		rt_crash("out of memory");
	return s;
}

/* handle_info(:after_join, socket): Presence.track, then push presence_state. */
static int
chat_presence_handle_info(ch_chan *ch, void *state, rt_msg *msg)
{
	chat_presence *st = state;
	if (msg->tag != CHAT_MSG_AFTER_JOIN)
		return CH_OK;
	char *key = chat_key_string(st->key), meta[64];
	snprintf(meta, sizeof(meta), "{\"online_at\":%lld}", (long long)(rt_wall_ms() / 1000));
	int rc = ch_presence_track(ch, key, meta);
	free(key);
	if (rc != 0)
		rt_crash("Presence.track failed");
	char *list = ch_presence_list(ch);
	if (!list)
		rt_crash("out of memory");
	ch_push(ch, "presence_state", list);
	free(list);
	return CH_OK;
}

static void
chat_presence_terminate(ch_chan *ch, void *state, const char *reason)
{
	(void)ch;
	(void)reason;
	chat_presence *st = state;
	cJSON_Delete(st->key);
	st->key = NULL;
}

const ch_channel_ops chat_presence_channel = {
    .name = "PresenceChannel",
    .state_size = sizeof(chat_presence),
    .join = chat_presence_join,
    .handle_info = chat_presence_handle_info,
    .terminate = chat_presence_terminate,
};
