/*
 * websocket.h: the WebSocket transport of the Phoenix socket (websocket.c),
 * as HTTP serving (serve.c) hands a request over to it (not for apps).
 */
#ifndef transports_websocket_h
#define transports_websocket_h

#include <stddef.h>

#include "transports/conn.h"

/*
 * Answers a request for <socket_path>/websocket as Phoenix 1.7 on Bandit
 * does, in its order: a method other than GET -> 400; an HTTP/1.1 request
 * without Host -> 400 (Bandit, before Phoenix); a malformed query -> 400;
 * check_origin -> 403; the socket's connect, which also refuses an
 * unsupported vsn -> 403 (so a forged token is refused even when the upgrade
 * headers are missing); only then the upgrade headers -> 400 with
 * WebSockAdapter's message.  Returns 0 when the connection became the
 * WebSocket transport (the 101 is queued, the protocol switched, the Phoenix
 * socket open); else the HTTP status for the caller to answer, and then
 * close, with the body in body[0, cap) (NUL-terminated, possibly empty: what
 * Phoenix sends).  Runs on the connection's process.
 */
int tp_ws_upgrade(conn *c, const tp_http_request *req, char *body, size_t cap);

#endif /* transports_websocket_h */
