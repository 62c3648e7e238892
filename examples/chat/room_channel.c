/*
 * room_channel.c: RoomChannel of the chat app (room:*), RefWeb.RoomChannel
 * of shared/reference-app.md clause for clause:
 *
 *   join room:lobby            ok {}
 *   join room:user:ID          ok only for the socket whose user_id is ID
 *   join any other room:*      error {"reason":"unauthorized"}
 *   new_msg {"body":B}         broadcast! new_msg {"body":B} (sender included)
 *   shout P                    broadcast_from! shout P (sender excluded)
 *   ping P                     reply ok P (the payload exactly as received)
 *   fail P                     reply error {"reason":"failed"}
 *   crash                      raise: the client receives phx_error
 *   slow {"ms":N}              reply ok {} after N ms (timer + socket ref)
 *   bin_echo <binary>          reply ok with the same bytes
 *   ignore {"user_id":U}       remember U in this channel; reply ok {}
 *   announce {"user_id":U}     broadcast! user_joined {"user_id":U}
 *
 * user_joined is intercepted: handle_out drops it when this channel ignores
 * that user_id.  An event without a clause, or a payload no clause matches,
 * crashes the channel (FunctionClauseError) and the client gets phx_error.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "examples/chat/chat.h"

/* How many ignored user ids one channel remembers (the oldest go first). */
#define CHAT_MAX_IGNORED 1000

/* The largest delay Erlang's send_after accepts. */
#define CHAT_MAX_SLOW_MS 4294967295.0

/* A RoomChannel's assigns; owned by its channel process. */
typedef struct chat_room {
	cJSON *ignored; /* MapSet of user ids: an object keyed by each id's JSON text, or NULL */
	int nignored;
} chat_room;

static const char *const chat_room_intercepts[] = {"user_joined", NULL};

static int
chat_room_join(ch_chan *ch, void *state, const char *topic, const ch_payload *params)
{
	(void)params;
	(void)state;
	const cJSON *uid = cJSON_GetObjectItemCaseSensitive(ch_assigns(ch), "user_id");
	bool ok = strcmp(topic, "room:lobby") == 0 ||
	          (strncmp(topic, "room:user:", 10) == 0 && cJSON_IsString(uid) &&
	           strcmp(uid->valuestring, topic + 10) == 0);
	if (!ok)
		return ch_join_error(ch, "{\"reason\":\"unauthorized\"}");
	return CH_OK; /* the ignored set is made at the first ignore: most channels never have one
	               */
}

/* broadcast!(socket, event, %{key => value}). */
static int
chat_broadcast_field(ch_chan *ch, const char *event, const char *key, const cJSON *value)
{
	cJSON *msg = cJSON_CreateObject();
	int rc = msg && cJSON_AddItemReferenceToObject(msg, key, (cJSON *)value)
	             ? ch_broadcast_json(ch, event, msg)
	             : -1;
	cJSON_Delete(msg);
	if (rc != 0)
		rt_crash("broadcast! of %s failed", event);
	return CH_OK;
}

/* handle_in("new_msg", %{"body" => body}, socket) */
static int
chat_new_msg(ch_chan *ch, void *state, const ch_payload *p)
{
	(void)state;
	const cJSON *body = ch_payload_get(p, "body");
	if (!body)
		ch_no_clause(ch);
	return chat_broadcast_field(ch, "new_msg", "body", body);
}

/* handle_in("shout", payload, socket): a binary payload goes out as a
 * binary broadcast; Phoenix's serializers raise on any other payload that is
 * not a map. */
static int
chat_shout(ch_chan *ch, void *state, const ch_payload *p)
{
	(void)state;
	if (p->bin) {
		ch_broadcast_from_binary(ch, "shout", p->bin, p->bin_len);
		return CH_OK;
	}
	if (ch_broadcast_from(ch, "shout", p->raw) != 0)
		rt_crash("ArgumentError: expected broadcasted payload to be a map");
	return CH_OK;
}

/* handle_in("ping", payload, socket), do: {:reply, {:ok, payload}, socket} */
static int
chat_ping(ch_chan *ch, void *state, const ch_payload *p)
{
	(void)state;
	ch_reply_payload(ch, "ok", p);
	return CH_OK;
}

static int
chat_fail(ch_chan *ch, void *state, const ch_payload *p)
{
	(void)state;
	(void)p;
	ch_reply(ch, "error", "{\"reason\":\"failed\"}");
	return CH_OK;
}

static int
chat_crash(ch_chan *ch, void *state, const ch_payload *p)
{
	(void)ch;
	(void)state;
	(void)p;
	rt_crash("crash requested by the client");
}

/* handle_in("slow", %{"ms" => ms}, socket) when is_integer(ms) and ms >= 0:
 * Process.send_after(self(), {:slow_reply, socket_ref(socket)}, ms). */
static int
chat_slow(ch_chan *ch, void *state, const ch_payload *p)
{
	(void)state;
	const cJSON *ms = ch_payload_get(p, "ms");
	if (!cJSON_IsNumber(ms) || ms->valuedouble < 0 || ms->valuedouble > CHAT_MAX_SLOW_MS ||
	    floor(ms->valuedouble) != ms->valuedouble)
		ch_no_clause(ch);
	ch_ref ref = ch_socket_ref(ch);
	rt_send_after((uint64_t)ms->valuedouble, rt_self(), CHAT_MSG_SLOW_REPLY, &ref, sizeof(ref));
	return CH_OK;
}

/* handle_in("bin_echo", {:binary, data}, socket) */
static int
chat_bin_echo(ch_chan *ch, void *state, const ch_payload *p)
{
	(void)state;
	if (!p->bin)
		ch_no_clause(ch);
	ch_reply_payload(ch, "ok", p);
	return CH_OK;
}

/* The JSON text of a user id (nil when absent), the key of the ignored set. */
static char *
chat_id_key(const cJSON *uid)
{
	char *key = uid ? cJSON_PrintUnformatted(uid) : strdup("null");
	if (!key)
		rt_crash("out of memory");
	return key;
}

/* handle_in("ignore", %{"user_id" => user_id}, socket): MapSet.put */
static int
chat_ignore(ch_chan *ch, void *state, const ch_payload *p)
{
	chat_room *st = state;
	const cJSON *uid = ch_payload_get(p, "user_id");
	if (!uid)
		ch_no_clause(ch);
	if (!st->ignored && !(st->ignored = cJSON_CreateObject()))
		rt_crash("out of memory");
	char *key = chat_id_key(uid);
	if (!cJSON_GetObjectItemCaseSensitive(st->ignored, key)) {
		if (st->nignored == CHAT_MAX_IGNORED)
			cJSON_DeleteItemFromArray(st->ignored, 0); /* the oldest */
		else
			st->nignored++;
		cJSON_AddItemToObject(st->ignored, key, cJSON_CreateTrue());
	}
	free(key);
	ch_reply(ch, "ok", "{}");
	return CH_OK;
}

/* handle_in("announce", %{"user_id" => user_id}, socket) */
static int
chat_announce(ch_chan *ch, void *state, const ch_payload *p)
{
	(void)state;
	const cJSON *uid = ch_payload_get(p, "user_id");
	if (!uid)
		ch_no_clause(ch);
	return chat_broadcast_field(ch, "user_joined", "user_id", uid);
}

static const ch_in_clause chat_room_in[] = {
    {"new_msg", chat_new_msg},   {"shout", chat_shout},
    {"ping", chat_ping},         {"fail", chat_fail},
    {"crash", chat_crash},       {"slow", chat_slow},
    {"bin_echo", chat_bin_echo}, {"ignore", chat_ignore},
    {"announce", chat_announce}, {NULL, NULL},
};

/* handle_out("user_joined", payload, socket): dropped for ignored users. */
static int
chat_room_handle_out(ch_chan *ch, void *state, const char *event, const cJSON *payload)
{
	chat_room *st = state;
	char *key = chat_id_key(cJSON_GetObjectItemCaseSensitive(payload, "user_id"));
	bool drop = cJSON_GetObjectItemCaseSensitive(st->ignored, key) != NULL;
	free(key);
	if (!drop)
		ch_push_json(ch, event, payload);
	return CH_OK;
}

/* handle_info({:slow_reply, ref}, socket): reply(ref, {:ok, %{}}) */
static int
chat_room_handle_info(ch_chan *ch, void *state, rt_msg *msg)
{
	(void)ch;
	(void)state;
	if (msg->tag == CHAT_MSG_SLOW_REPLY && msg->size == sizeof(ch_ref))
		ch_reply_ref(rt_msg_data(msg), "ok", "{}");
	return CH_OK;
}

static void
chat_room_terminate(ch_chan *ch, void *state, const char *reason)
{
	(void)ch;
	(void)reason;
	chat_room *st = state;
	cJSON_Delete(st->ignored);
	st->ignored = NULL;
}

const ch_channel_ops chat_room_channel = {
    .name = "RoomChannel",
    .state_size = sizeof(chat_room),
    .intercepts = chat_room_intercepts,
    .join = chat_room_join,
    .in = chat_room_in,
    .handle_out = chat_room_handle_out,
    .handle_info = chat_room_handle_info,
    .terminate = chat_room_terminate,
};
