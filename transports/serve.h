/*
 * serve.h: HTTP serving (serve.c), the protocol every connection starts
 * with (not for apps).
 */
#ifndef transports_serve_h
#define transports_serve_h

#include "transports/conn.h"

/* HTTP/1.1 serving: the app's routes, static files, error answers, and the
 * hand-over of <socket_path>/websocket to the WebSocket transport.  The
 * listener gives it to every new connection (conn_arg.proto). */
extern const tp_proto tp_http_proto;

#endif /* transports_serve_h */
