/*
 * user_socket.c: UserSocket of the chat app.
 *
 * connect: an optional `token` parameter must be a valid Phoenix.Token
 * (salt "user socket", max age two weeks) and sets the `user_id` assign; a
 * bad or expired token refuses the connection (HTTP 403), a token that is
 * not a string ("token[]=...") crashes it (HTTP 500) as in the reference app.  Without a token
 * the socket is anonymous.  id: "users_socket:ID" for authenticated sockets
 * (so that POST /api/disconnect can close them), none for anonymous ones.
 * Routes: room:* -> RoomChannel, presence:* -> PresenceChannel.
 */
#include <stdio.h>
#include <string.h>

#include "examples/chat/chat.h"

static int
chat_socket_connect(const ch_endpoint *ep, const ch_params *params, const ch_connect_info *info,
                    cJSON *assigns)
{
	(void)info;
	const char *token;
	size_t len;
	switch (ch_params_find(params, "token", &token, &len)) {
	case CH_PARAM_NONE:
		return CH_OK; /* anonymous */
	case CH_PARAM_NESTED:
		/* "token[]=..." or "token[k]=...": Phoenix.Token.verify of a list or
		 * map raises in the reference app's connect: a crash (HTTP 500). */
		return CH_CONNECT_CRASH;
	case CH_PARAM_STRING:
		break;
	}
	/* Every byte counts: "<valid token>%00junk" is not the valid token. */
	char user_id[CHAT_MAX_USER_ID + 1];
	if (ch_token_verify_string(ep, CHAT_TOKEN_SALT, token, len, CHAT_TOKEN_MAX_AGE_S, user_id,
	                           sizeof(user_id)) != 0)
		return CH_ERROR;
	if (!cJSON_AddStringToObject(assigns, "user_id", user_id))
		return CH_ERROR;
	return CH_OK;
}

static size_t
chat_socket_id(const cJSON *assigns, char *buf, size_t cap)
{
	const cJSON *uid = cJSON_GetObjectItemCaseSensitive(assigns, "user_id");
	if (!cJSON_IsString(uid) || !uid->valuestring)
		return 0;
	int n = snprintf(buf, cap, "users_socket:%s", uid->valuestring);
	if (n < 0 || (size_t)n >= cap)
		return 0;
	return (size_t)n;
}

static const ch_route chat_socket_routes[] = {
    {"room:*", &chat_room_channel},
    {"presence:*", &chat_presence_channel},
};

const ch_socket_handler chat_user_socket = {
    .connect = chat_socket_connect,
    .id = chat_socket_id,
    .routes = chat_socket_routes,
    .nroutes = sizeof(chat_socket_routes) / sizeof(chat_socket_routes[0]),
    .max_channels = 100,
};
