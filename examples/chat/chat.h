/*
 * chat.h: the pieces of the example chat app (examples/chat) that main.c
 * puts together: the UserSocket handler, the RoomChannel and PresenceChannel
 * modules and the HTTP API routes.  See shared/reference-app.md for what each one does.
 */
#ifndef examples_chat_chat_h
#define examples_chat_chat_h

#include <stddef.h>

#include "channels/channels.h"
#include "transports/transports.h"

/* Token salt and max age (two weeks), shared by /token and UserSocket.connect. */
#define CHAT_TOKEN_SALT "user socket"
#define CHAT_TOKEN_MAX_AGE_S 1209600

/* The longest user id accepted by /token and /api/disconnect (bytes). */
#define CHAT_MAX_USER_ID 128

/* The app's own message tags (in channels.h's application range). */
enum {
	CHAT_MSG_SLOW_REPLY = CH_TAG_APP_MIN + 1, /* RoomChannel: {:slow_reply, ref}, a ch_ref */
	CHAT_MSG_AFTER_JOIN = CH_TAG_APP_MIN + 2, /* PresenceChannel: :after_join, no data */
};

/* UserSocket: token auth, id "users_socket:ID", routes "room:*" and "presence:*". */
extern const ch_socket_handler chat_user_socket;

/* RoomChannel (room:*). */
extern const ch_channel_ops chat_room_channel;

/* PresenceChannel (presence:*). */
extern const ch_channel_ops chat_presence_channel;

/* GET /token, POST /api/broadcast, POST /api/disconnect. */
extern const tp_route chat_http_routes[];
extern const size_t chat_http_nroutes;

#endif /* examples_chat_chat_h */
