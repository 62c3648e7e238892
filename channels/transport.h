/*
 * transport.h: what a transport (transports/websocket, later long polling)
 * and the Phoenix socket layer (channels/socket.c) promise each other.
 *
 * A transport process owns one client (a WebSocket connection; for long
 * polling, a session that outlives the HTTP requests).  Once the client is
 * accepted (ch_socket_open) the same process is the Phoenix socket: frames
 * from the client go to ch_socket_in, every runtime message that is not the
 * transport's own goes to ch_socket_info, and the socket sends frames and
 * close requests back through the ch_transport callbacks, which only queue
 * work on the connection (they never block).
 *
 * Messages to a transport process from others (the fastlane, channel
 * replies and pushes) are tagged CH_MSG_FRAME and carry an encoded frame in
 * m->buf; rt_buf.flags of such a frame is its kind, CH_FRAME_TEXT_KIND or
 * CH_FRAME_BINARY_KIND, and travels with it: ch_socket_info hands the buffer
 * to t->send as it is.
 */
#ifndef channels_transport_h
#define channels_transport_h

#include "channels/channels.h"

enum {
	CH_MSG_FRAME = 0xFFFE0010u, /* m->buf: an encoded frame for the client */
};

/* Frame kinds, in rt_buf.flags of frames (same values as the serializer's). */
enum { CH_FRAME_TEXT_KIND = 1, CH_FRAME_BINARY_KIND = 2 };

/* What ch_transport.push_local did with a frame. */
enum { CH_PUSH_DECLINED = 0, CH_PUSH_QUEUED = 1, CH_PUSH_FIRST = 2 };

/* WebSocket close codes (RFC 6455 7.4.1): what ch_socket_in returns and
 * ch_transport.close takes, and what the WebSocket codec reports. */
typedef enum ch_close_code {
	CH_CLOSE_NORMAL = 1000,
	CH_CLOSE_GOING_AWAY = 1001,     /* endpoint stop */
	CH_CLOSE_PROTOCOL_ERROR = 1002, /* a frame breaks RFC 6455 */
	CH_CLOSE_UNSUPPORTED_DATA = 1003,
	CH_CLOSE_NO_STATUS = 1005,       /* a close frame without a code; never sent */
	CH_CLOSE_INVALID_PAYLOAD = 1007, /* text that is not UTF-8 */
	CH_CLOSE_POLICY_VIOLATION = 1008,
	CH_CLOSE_MESSAGE_TOO_BIG = 1009,
	CH_CLOSE_INTERNAL_ERROR = 1011,  /* undecodable message (as Phoenix), overload */
	CH_CLOSE_SERVICE_RESTART = 1012, /* drained at SIGTERM (as Phoenix's socket drainer) */
} ch_close_code;

/* A transport as the socket sees it.  Owned by the transport process (the
 * socket keeps a copy); the callbacks run on that process only. */
typedef struct ch_transport {
	void *conn;
	/* Queues one frame to the client and takes over the buffer reference.
	 * The frame's kind (text or binary) is frame->flags: CH_FRAME_TEXT_KIND or
	 * CH_FRAME_BINARY_KIND. */
	void (*send)(void *conn, rt_buf *frame);
	/* Closes the connection after the queued frames, with a close code
	 * (ch_close_code, or an application's 4000-4999). */
	void (*close)(void *conn, int code, const char *reason);
	/* Optional, the fastlane's direct path.  Called by a dispatcher running
	 * on the connection's own scheduler while the transport process cannot
	 * run: queues frame (taking the reference) and returns
	 * CH_PUSH_QUEUED, or CH_PUSH_FIRST when it is the first frame since the
	 * last write (flush_local must follow before the caller's callback
	 * returns); CH_PUSH_DECLINED (0, reference kept by the caller) when the
	 * connection cannot take it now (closing, over its output limit): the
	 * caller then sends the frame as a message. */
	int (*push_local)(void *conn, rt_buf *frame);
	/* Writes what push_local queued (same thread and conditions). */
	void (*flush_local)(void *conn);
} ch_transport;

typedef struct ch_socket ch_socket;

/* Accepts or refuses a client: picks the serializer from the "vsn" parameter
 * (absent: V1; else a version matching "~> 1.0.0" or "~> 2.0.0", as Phoenix:
 * "2.0.0", "2.0.3"; anything else refused), runs the handler's connect,
 * subscribes to the socket id topic.  Returns the socket, or NULL with
 * *http_status set: 403 for a refused connect and, as Phoenix, for an
 * unsupported vsn; 500 where Phoenix's connect crashes (a nested "vsn", a
 * handler's connect that returned neither CH_OK nor CH_ERROR).  Must be called from the transport
 * process; the transport may still refuse the client afterwards (a WebSocket upgrade with bad
 * headers: Phoenix checks them after connect), and then ch_socket_close undoes the open. */
ch_socket *ch_socket_open(ch_endpoint *ep, const ch_params *params, const ch_connect_info *info,
                          const ch_transport *t, int *http_status);

/* A data frame from the client.  Returns 0, or a close code
 * (CH_CLOSE_INTERNAL_ERROR when the message cannot be decoded, as Phoenix
 * does; CH_CLOSE_POLICY_VIOLATION for a client over the flood limit,
 * ch_endpoint_opts.max_messages_per_second, or flooding a busy channel)
 * after which the transport closes the connection. */
int ch_socket_in(ch_socket *s, const uint8_t *data, size_t len, bool binary);

/* A runtime message for the socket.  Returns true if it was the socket's. */
bool ch_socket_info(ch_socket *s, rt_msg *m);

/* The connection ended (reason for logs).  Channels are told (they see the
 * transport exit); s is freed. */
void ch_socket_close(ch_socket *s, const char *reason);

/* The serializer version in use (CH_VSN_1 or CH_VSN_2). */
int ch_socket_vsn(const ch_socket *s);

#endif /* channels_transport_h */
