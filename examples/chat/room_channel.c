/*
 * room_channel.c: RoomChannel of the chat app (room:*), as the table of
 * shared/reference-app.md says:
 *
 *   join room:lobby            ok {}
 *   join room:user:ID          ok only for the socket whose user_id is ID
 *   join any other room:*      error {"reason":"unauthorized"}
 *   new_msg {"body":B}         broadcast! new_msg {"body":B} (sender included)
 *   shout P                    broadcast_from! shout P (sender excluded)
 *   ping P                     reply ok P (the payload exactly as received)
 *   fail P                     reply error {"reason":"failed"}
 *   crash                      the channel process crashes (client: phx_error)
 *   slow {"ms":N}              reply ok {} after N ms (timer + socket ref)
 *   bin_echo <binary>          reply ok with the same bytes
 *   ignore {"user_id":U}       remember U in this channel; reply ok {}
 *   announce {"user_id":U}     broadcast! user_joined {"user_id":U}
 *
 * user_joined is intercepted: handle_out drops it when this channel ignores
 * that user_id and pushes it otherwise.  Any other event, or a payload of
 * the wrong shape, matches no handle_in clause: as in Elixir the process
 * crashes (FunctionClauseError) and the client receives phx_error.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "examples/chat/chat.h"

/* How many ignored user ids one channel remembers (the oldest go first). */
#define CHAT_MAX_IGNORED 1000

/* The slow timer's message: a ch_ref to reply through. */
#define CHAT_MSG_SLOW 0x43480001u

/* The largest delay Erlang's send_after accepts. */
#define CHAT_MAX_SLOW_MS 4294967295.0

typedef struct chat_room {
	char **ignored; /* ring of CHAT_MAX_IGNORED printed user ids, or NULL */
	size_t nignored;
	size_t head; /* index of the oldest entry */
} chat_room;

static const char *const chat_room_intercepts[] = {"user_joined", NULL};

/* The crash of an unmatched handle_in clause (never returns). */
static _Noreturn void
chat_no_clause(const char *event)
{
	rt_crash("FunctionClauseError: no function clause matching RoomChannel.handle_in/3 for "
	         "event \"%.64s\"",
	         event);
}

static int
chat_room_join(ch_chan *ch, void *state, const char *topic, const ch_payload *params)
{
	(void)state;
	(void)params;
	if (strcmp(topic, "room:lobby") == 0)
		return CH_OK;
	static const char user_prefix[] = "room:user:";
	if (strncmp(topic, user_prefix, sizeof(user_prefix) - 1) == 0) {
		const cJSON *uid = cJSON_GetObjectItemCaseSensitive(ch_assigns(ch), "user_id");
		if (cJSON_IsString(uid) && uid->valuestring &&
		    strcmp(uid->valuestring, topic + sizeof(user_prefix) - 1) == 0)
			return CH_OK;
	}
	return ch_join_error(ch, "{\"reason\":\"unauthorized\"}");
}

/* The member `key` of a JSON object payload, or NULL (binary, not an object, absent). */
static const cJSON *
chat_field(const ch_payload *p, const char *key)
{
	if (!p->json || !cJSON_IsObject(p->json))
		return NULL;
	return cJSON_GetObjectItemCaseSensitive(p->json, key);
}

/* Prints {"<key>": value} compactly; NULL on OOM. */
static char *
chat_print_field(const char *key, const cJSON *value)
{
	cJSON *obj = cJSON_CreateObject();
	cJSON *copy = cJSON_Duplicate(value, true);
	char *out = NULL;
	if (obj && copy) {
		cJSON_AddItemToObject(obj, key, copy);
		copy = NULL;
		out = cJSON_PrintUnformatted(obj);
	}
	cJSON_Delete(copy);
	cJSON_Delete(obj);
	return out;
}

/* broadcast!(socket, event, %{key => value}); crashes as broadcast! raises. */
static int
chat_broadcast_field(ch_chan *ch, const char *event, const char *key, const cJSON *value)
{
	char *json = chat_print_field(key, value);
	int rc = json ? ch_broadcast(ch, event, json) : -1;
	free(json);
	if (rc != 0)
		rt_crash("broadcast! of %s failed", event);
	return CH_OK;
}

static bool
chat_is_ignored(const chat_room *st, const char *uid)
{
	for (size_t i = 0; i < st->nignored; i++)
		if (strcmp(st->ignored[(st->head + i) % CHAT_MAX_IGNORED], uid) == 0)
			return true;
	return false;
}

/* Adds uid (taking it over) to the ring, dropping the oldest when full. */
static void
chat_ignore(chat_room *st, char *uid)
{
	if (chat_is_ignored(st, uid)) {
		free(uid);
		return;
	}
	if (!st->ignored) {
		st->ignored = calloc(CHAT_MAX_IGNORED, sizeof(*st->ignored));
		if (!st->ignored) {
			free(uid);
			rt_crash("out of memory");
		}
	}
	if (st->nignored == CHAT_MAX_IGNORED) {
		free(st->ignored[st->head]);
		st->ignored[st->head] = uid;
		st->head = (st->head + 1) % CHAT_MAX_IGNORED;
		return;
	}
	st->ignored[(st->head + st->nignored) % CHAT_MAX_IGNORED] = uid;
	st->nignored++;
}

/* ping: {:reply, {:ok, payload}, socket}, the payload exactly as received. */
static int
chat_ping(ch_chan *ch, const ch_payload *p)
{
	if (p->bin) {
		ch_reply_binary(ch, "ok", p->bin, p->bin_len);
		return CH_OK;
	}
	if (!p->raw)
		chat_no_clause("ping");
	char *raw = strndup(p->raw, p->raw_len);
	if (!raw)
		rt_crash("out of memory");
	ch_reply(ch, "ok", raw);
	free(raw);
	return CH_OK;
}

/* slow: Process.send_after(self(), {:slow, socket_ref(socket)}, ms). */
static int
chat_slow(ch_chan *ch, const ch_payload *p)
{
	const cJSON *ms = chat_field(p, "ms");
	if (!cJSON_IsNumber(ms) || ms->valuedouble < 0 || ms->valuedouble > CHAT_MAX_SLOW_MS ||
	    floor(ms->valuedouble) != ms->valuedouble)
		chat_no_clause("slow");
	ch_ref ref = ch_socket_ref(ch);
	rt_send_after((uint64_t)ms->valuedouble, rt_self(), CHAT_MSG_SLOW, &ref, sizeof(ref));
	return CH_OK;
}

static int
chat_room_handle_in(ch_chan *ch, void *state, const char *event, const ch_payload *p)
{
	chat_room *st = state;
	if (strcmp(event, "new_msg") == 0) {
		const cJSON *body = chat_field(p, "body");
		if (!body)
			chat_no_clause(event);
		return chat_broadcast_field(ch, "new_msg", "body", body);
	}
	if (strcmp(event, "shout") == 0) {
		/* Phoenix's serializers raise on a broadcast payload that is not a map
		 * (binary broadcasts have no API here): the channel crashes. */
		if (!p->raw || !cJSON_IsObject(p->json))
			rt_crash("ArgumentError: expected broadcasted payload to be a map");
		char *raw = strndup(p->raw, p->raw_len);
		int rc = raw ? ch_broadcast_from(ch, "shout", raw) : -1;
		free(raw);
		if (rc != 0)
			rt_crash("broadcast_from! of shout failed");
		return CH_OK;
	}
	if (strcmp(event, "ping") == 0)
		return chat_ping(ch, p);
	if (strcmp(event, "fail") == 0) {
		ch_reply(ch, "error", "{\"reason\":\"failed\"}");
		return CH_OK;
	}
	if (strcmp(event, "crash") == 0)
		rt_crash("crash requested by the client");
	if (strcmp(event, "slow") == 0)
		return chat_slow(ch, p);
	if (strcmp(event, "bin_echo") == 0) {
		if (!p->bin)
			chat_no_clause(event);
		ch_reply_binary(ch, "ok", p->bin, p->bin_len);
		return CH_OK;
	}
	if (strcmp(event, "ignore") == 0) {
		const cJSON *uid = chat_field(p, "user_id");
		if (!uid)
			chat_no_clause(event);
		char *key = cJSON_PrintUnformatted(uid);
		if (!key)
			rt_crash("out of memory");
		chat_ignore(st, key);
		ch_reply(ch, "ok", "{}");
		return CH_OK;
	}
	if (strcmp(event, "announce") == 0) {
		const cJSON *uid = chat_field(p, "user_id");
		if (!uid)
			chat_no_clause(event);
		return chat_broadcast_field(ch, "user_joined", "user_id", uid);
	}
	chat_no_clause(event);
}

static int
chat_room_handle_out(ch_chan *ch, void *state, const char *event, const cJSON *payload)
{
	chat_room *st = state;
	if (strcmp(event, "user_joined") == 0 && st->nignored > 0) {
		const cJSON *uid = cJSON_GetObjectItemCaseSensitive(payload, "user_id");
		if (uid) {
			char *key = cJSON_PrintUnformatted(uid);
			if (!key)
				rt_crash("out of memory");
			bool drop = chat_is_ignored(st, key);
			free(key);
			if (drop)
				return CH_OK;
		}
	}
	char *json = cJSON_PrintUnformatted(payload);
	if (!json)
		rt_crash("out of memory");
	ch_push(ch, event, json);
	free(json);
	return CH_OK;
}

static int
chat_room_handle_info(ch_chan *ch, void *state, rt_msg *msg)
{
	(void)ch;
	(void)state;
	if (msg->tag == CHAT_MSG_SLOW && msg->size == sizeof(ch_ref)) {
		ch_ref ref;
		memcpy(&ref, rt_msg_data(msg), sizeof(ref));
		ch_reply_ref(&ref, "ok", "{}");
		return CH_OK;
	}
	rt_log_debug("RoomChannel: unexpected message tag %#x", (unsigned)msg->tag);
	return CH_OK;
}

static void
chat_room_terminate(ch_chan *ch, void *state, const char *reason)
{
	(void)ch;
	(void)reason;
	chat_room *st = state;
	if (st->ignored) {
		for (size_t i = 0; i < st->nignored; i++)
			free(st->ignored[(st->head + i) % CHAT_MAX_IGNORED]);
		free(st->ignored);
		st->ignored = NULL;
		st->nignored = 0;
	}
}

const ch_channel_ops chat_room_channel = {
    .name = "RoomChannel",
    .state_size = sizeof(chat_room),
    .intercepts = chat_room_intercepts,
    .join = chat_room_join,
    .handle_in = chat_room_handle_in,
    .handle_out = chat_room_handle_out,
    .handle_info = chat_room_handle_info,
    .terminate = chat_room_terminate,
};
