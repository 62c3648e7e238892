/*
 * presence_channel.c: PresenceChannel of the chat app (presence:*), the
 * Presence example of the Phoenix guides:
 *
 *   join presence:* {"name":N}  ok {}; then (after the join reply, like the
 *                               guide's send(self(), :after_join)) tracks the
 *                               joiner under N, or under its user_id when the
 *                               socket is authenticated, with meta
 *                               {"online_at": <unix seconds>}, and pushes
 *                               presence_state (Presence.list) to the joiner.
 *
 * Joins and leaves reach every subscriber as presence_diff (channels/
 * presence.c), so the phoenix.js Presence class works unchanged.  An
 * anonymous join without a usable name matches no join clause: Phoenix
 * answers {"reason":"join crashed"}.  The channel handles no client events:
 * any push crashes it, as a missing handle_in clause does in Elixir.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "examples/chat/chat.h"

/* The after-join message the channel sends itself. */
#define CHAT_MSG_AFTER_JOIN 0x43480002u

/* The longest presence key (a name or user id), in bytes. */
#define CHAT_MAX_PRESENCE_KEY 256

typedef struct chat_presence {
	char *key; /* the tracked key, malloc'd at join */
} chat_presence;

static int
chat_presence_join(ch_chan *ch, void *state, const char *topic, const ch_payload *params)
{
	(void)topic;
	chat_presence *st = state;
	char key[CHAT_MAX_PRESENCE_KEY + 1];
	int n = -1;
	const cJSON *uid = cJSON_GetObjectItemCaseSensitive(ch_assigns(ch), "user_id");
	const cJSON *name = params->json && cJSON_IsObject(params->json)
	                        ? cJSON_GetObjectItemCaseSensitive(params->json, "name")
	                        : NULL;
	if (!name)
		return ch_join_error(ch, "{\"reason\":\"join crashed\"}");
	if (cJSON_IsString(uid) && uid->valuestring)
		n = snprintf(key, sizeof(key), "%s", uid->valuestring);
	else if (cJSON_IsString(name) && name->valuestring)
		n = snprintf(key, sizeof(key), "%s", name->valuestring);
	if (n < 0 || (size_t)n >= sizeof(key))
		return ch_join_error(ch, "{\"reason\":\"join crashed\"}");
	st->key = strdup(key);
	if (!st->key || rt_send(rt_self(), CHAT_MSG_AFTER_JOIN, NULL, 0) != 0) {
		free(st->key);
		st->key = NULL;
		return ch_join_error(ch, "{\"reason\":\"join crashed\"}");
	}
	return CH_OK;
}

static int
chat_presence_handle_in(ch_chan *ch, void *state, const char *event, const ch_payload *payload)
{
	(void)ch;
	(void)state;
	(void)payload;
	rt_crash("FunctionClauseError: no function clause matching PresenceChannel.handle_in/3 "
	         "for event \"%.64s\"",
	         event);
}

static int
chat_presence_handle_info(ch_chan *ch, void *state, rt_msg *msg)
{
	chat_presence *st = state;
	if (msg->tag != CHAT_MSG_AFTER_JOIN || !st->key) {
		rt_log_debug("PresenceChannel: unexpected message tag %#x", (unsigned)msg->tag);
		return CH_OK;
	}
	char meta[64];
	snprintf(meta, sizeof(meta), "{\"online_at\":%lld}", (long long)(rt_wall_ms() / 1000));
	if (ch_presence_track(ch, st->key, meta) != 0)
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
	free(st->key);
	st->key = NULL;
}

const ch_channel_ops chat_presence_channel = {
    .name = "PresenceChannel",
    .state_size = sizeof(chat_presence),
    .intercepts = NULL,
    .join = chat_presence_join,
    .handle_in = chat_presence_handle_in,
    .handle_out = NULL,
    .handle_info = chat_presence_handle_info,
    .terminate = chat_presence_terminate,
};
