/*
 * The WebSocket transport of the Phoenix socket: a connection protocol
 * (conn.h: tp_proto) and an implementation of the channels' transport
 * contract (channels/transport.h: ch_transport).
 *
 * Opening (tp_ws_upgrade) follows Phoenix 1.7 on Bandit step by step (see
 * websocket.h): the socket's connect runs before the upgrade headers are
 * looked at, so what a client learns from a refused upgrade is what Phoenix
 * tells it.
 *
 * Frames.  The core buffers input; the codec (ws.h) turns it into events.
 * A frame is handed over once all of it has arrived; a header announcing
 * more than max_frame is refused (1009) before its payload is read, and the
 * core's buffer only grows with the bytes that arrive.  Data messages go to
 * the socket (ch_socket_in), pings are answered, a close frame is echoed.
 *
 * Output.  ch_transport.send queues a frame's payload buffer (often shared:
 * a fastlane broadcast is one buffer for all its subscribers) behind a
 * header of the connection's own; its kind (text or binary) is the buffer's
 * flags.  Past max_outbound queued bytes the client is a slow consumer and is
 * disconnected at once.
 *
 * Timeouts.  TQ_WS: no client data for ws_idle_ms closes with 1000 (as
 * cowboy does); TQ_CLOSE bounds the close handshake.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/xalloc.h"
#include "transports/connect.h"
#include "transports/websocket.h"

/* Protocol flags (conn.h: F_PROTO_BITS). */
enum {
	F_OPEN = 1 << 12,       /* the 101 is queued: frames may be written */
	F_CLOSE_SENT = 1 << 13, /* close frame queued */
	F_CLOSE_RCVD = 1 << 14, /* close frame received (or input failed) */
};

static const tp_proto ws_proto;

/* ------------------------------------------------------------------ closing */

/* Queues a close frame and closes once the peer answers (or at once after
 * writing it when its close already came). */
static void
ws_close(conn *c, int code, const char *reason)
{
	if (c->flags & (F_CLOSE_SENT | F_DEAD))
		return;
	tp_shard *sh = conn_shard(c);
	switch (code) {
	case CH_CLOSE_PROTOCOL_ERROR:
		tp_count(&sh->closed_1002, 1);
		break;
	case CH_CLOSE_INVALID_PAYLOAD:
		tp_count(&sh->closed_1007, 1);
		break;
	case CH_CLOSE_MESSAGE_TOO_BIG:
		tp_count(&sh->closed_1009, 1);
		break;
	case CH_CLOSE_INTERNAL_ERROR:
		tp_count(&sh->closed_1011, 1);
		break;
	default:
		break;
	}
	conn_push(c, tp_ws_close_append(NULL, code, reason, reason ? strlen(reason) : 0));
	c->flags |= F_CLOSE_SENT;
	if (c->flags & F_CLOSE_RCVD)
		conn_close_graceful(c);
	else
		conn_set_timeout(c, TQ_CLOSE);
}

static void
slow_consumer(conn *c, size_t adding)
{
	char peer[64];
	tp_count(&conn_shard(c)->slow_disconnects, 1);
	rt_log_warning("websocket %s: %zu bytes queued for the client, over max_outbound (%zu): "
	               "disconnected (slow consumer)",
	               conn_peer(c, peer, sizeof(peer)), c->oq_bytes + adding, c->ep->max_outbound);
	conn_finish(c, W_SLOW);
}

/* ------------------------------------------------------------------ ch_transport */

static void
tr_send(void *conn_, rt_buf *frame)
{
	conn *c = conn_;
	if (!frame)
		return;
	if (c->flags & (F_DEAD | F_CLOSE_SENT)) {
		rt_buf_release(frame);
		return;
	}
	size_t add = frame->len + 10;
	if (tp_mem_cut(c->ep, c->oq_bytes)) {
		/* Over the memory budget: a consumer this far behind is cut. */
		if ((c->flags & F_OPEN) && c->oq_tail && conn_write_now(c) < 0) {
			rt_buf_release(frame);
			conn_finish(c, W_RESET);
			return;
		}
		if (tp_mem_cut(c->ep, c->oq_bytes)) {
			rt_buf_release(frame);
			tp_count(&c->ep->mem_cut, 1);
			slow_consumer(c, add);
			return;
		}
	}
	if (c->oq_bytes + add > c->ep->max_outbound) {
		/* Frames are written once per batch; before calling the client slow,
		 * see whether the socket takes what this batch queued so far. */
		if ((c->flags & F_OPEN) && c->oq_tail && conn_write_now(c) < 0) {
			rt_buf_release(frame);
			conn_finish(c, W_RESET);
			return;
		}
		if (c->oq_bytes + add > c->ep->max_outbound) {
			rt_buf_release(frame);
			slow_consumer(c, add);
			return;
		}
	}
	uint8_t hdr[10];
	int op = frame->flags == CH_FRAME_BINARY_KIND ? TP_WS_OP_BINARY : TP_WS_OP_TEXT;
	size_t hl = tp_ws_frame_header(hdr, op, 1, frame->len);
	conn_push_with_header(c, frame, hdr, hl);
}

static void
tr_close(void *conn_, int code, const char *reason)
{
	ws_close(conn_, code, reason);
}

/* The fastlane's direct path (channels/transport.h): a PubSub partition of
 * this connection's scheduler queues broadcast frames while the connection's
 * process cannot run, then writes them (tr_flush_local) after its batch.
 * Anything unusual (closing, over the output limit) is declined: the frame
 * then comes as a message, and this process handles it as any other. */
static int
tr_push_local(void *conn_, rt_buf *frame)
{
	conn *c = conn_;
	if (c->flags & (F_DEAD | F_CLOSE_SENT | F_CLOSING | F_STOP_SENT))
		return CH_PUSH_DECLINED;
	if (c->oq_bytes + frame->len + 10 > c->ep->max_outbound || tp_mem_cut(c->ep, c->oq_bytes))
		return CH_PUSH_DECLINED;
	uint8_t hdr[10];
	int op = frame->flags == CH_FRAME_BINARY_KIND ? TP_WS_OP_BINARY : TP_WS_OP_TEXT;
	size_t hl = tp_ws_frame_header(hdr, op, 1, frame->len);
	conn_push_with_header(c, frame, hdr, hl);
	return conn_mark_foreign(c) ? CH_PUSH_FIRST : CH_PUSH_QUEUED;
}

static void
tr_flush_local(void *conn_)
{
	conn_flush_foreign(conn_);
}

/* ------------------------------------------------------------------ tp_proto */

/* Parses frames from buf[0, len); returns the bytes used. */
static size_t
ws_input(conn *c, uint8_t *buf, size_t len)
{
	size_t pos = 0;
	while (!(c->flags & F_DEAD)) {
		if (c->flags & F_CLOSE_RCVD)
			return len; /* nothing after a close is read */
		tp_ws_event ev;
		tp_ws_reader_next(&c->u.ws.reader, buf + pos, len - pos, &ev);
		if (ev.type == TP_WS_EV_NEED_MORE) {
			c->in_need = ev.need > UINT32_MAX ? UINT32_MAX : (uint32_t)ev.need;
			return pos + ev.consumed;
		}
		if (c->tq == TQ_WS)
			conn_set_timeout(c, TQ_WS); /* client activity */
		switch (ev.type) {
		case TP_WS_EV_MESSAGE:
			if (!(c->flags & F_CLOSE_SENT)) {
				int rc = ch_socket_in(c->u.ws.sock, ev.data, ev.len,
				                      ev.opcode == TP_WS_OP_BINARY);
				if (rc)
					ws_close(c, rc, NULL);
			}
			if (ev.len && (ev.data < buf || ev.data >= buf + len))
				/* reassembled from fragments in the reader's buffer: do
				 * not keep that buffer on an idle connection */
				tp_ws_reader_free(&c->u.ws.reader);
			break;
		case TP_WS_EV_PING:
			if (!(c->flags & F_CLOSE_SENT))
				conn_push(c,
				          tp_ws_frame_append(NULL, TP_WS_OP_PONG, ev.data, ev.len));
			break;
		case TP_WS_EV_PONG:
			break;
		case TP_WS_EV_CLOSE:
			c->flags |= F_CLOSE_RCVD | F_CLEAN_END;
			if (c->flags & F_CLOSE_SENT)
				conn_close_graceful(c);
			else /* echo the code (1000 when none was given) */
				ws_close(c,
				         ev.code == CH_CLOSE_NO_STATUS ? CH_CLOSE_NORMAL : ev.code,
				         NULL);
			return len;
		case TP_WS_EV_ERROR: {
			char peer[64];
			rt_log_debug("websocket %s: %s: closing with %d",
			             conn_peer(c, peer, sizeof(peer)), ev.error, ev.code);
			c->flags |= F_CLOSE_RCVD; /* fail the connection: no close handshake */
			if (c->flags & F_CLOSE_SENT)
				conn_close_graceful(c);
			else
				ws_close(c, ev.code, NULL);
			return len;
		}
		default:
			break;
		}
		pos += ev.consumed;
	}
	return len;
}

static void
ws_eof(conn *c)
{
	conn_finish(c, (c->flags & F_CLOSE_RCVD) ? W_NORMAL : W_RESET);
}

static void
ws_timeout(conn *c)
{
	if (c->flags & F_CLOSE_SENT)
		conn_finish(c, W_TIMEOUT); /* the close handshake took too long */
	else
		ws_close(c, CH_CLOSE_NORMAL, NULL); /* idle, as cowboy: close 1000 */
}

static void
ws_shutdown(conn *c)
{
	ws_close(c, CH_CLOSE_GOING_AWAY, "going away");
}

/* Drained (drain.c): what Phoenix 1.7 does to a drained socket on the wire,
 * a close frame 1012 (Service Restart) with no reason (the socket's
 * {:stop, {:shutdown, :restart}, state}, which WebSockAdapter turns into
 * 1012), after what is queued; the channels then see the transport end. */
static void
ws_drain(conn *c)
{
	if (!c->u.ws.sock || (c->flags & (F_CLOSE_SENT | F_CLOSING)))
		return;
	atomic_fetch_add_explicit(&c->ep->drained, 1, memory_order_relaxed);
	ws_close(c, CH_CLOSE_SERVICE_RESTART, NULL);
}

static void
ws_info(conn *c, rt_msg *m)
{
	if (c->u.ws.sock)
		ch_socket_info(c->u.ws.sock, m);
}

static void
ws_terminate(conn *c, const char *reason)
{
	if (c->u.ws.sock) {
		ch_socket_close(c->u.ws.sock, reason);
		c->u.ws.sock = NULL;
		tp_count(&conn_shard(c)->ws_open, -1);
	}
	tp_ws_reader_free(&c->u.ws.reader);
}

static const tp_proto ws_proto = {
    .name = "websocket",
    .input = ws_input,
    .eof = ws_eof,
    .timeout = ws_timeout,
    .shutdown = ws_shutdown,
    .drain = ws_drain,
    .info = ws_info,
    .terminate = ws_terminate,
};

/* ------------------------------------------------------------------ upgrade */

static char *
dup_str(const tp_http_str *s)
{
	if (!s)
		return NULL;
	char *p = rt_xmalloc(s->len + 1);
	memcpy(p, s->ptr, s->len);
	p[s->len] = 0;
	return p;
}

/* Back to the protocol that asked (HTTP) after a refusal: drops what the
 * socket queued while it opened. */
static int
refused(conn *c, const tp_proto *prev, oq_ent *mark, int status)
{
	conn_truncate(c, mark);
	conn_set_proto(c, prev);
	return status;
}

int
tp_ws_upgrade(conn *c, const tp_http_request *req, char *body, size_t cap)
{
	tp_endpoint *ep = c->ep;
	if (cap)
		body[0] = '\0';
	/* Phoenix.Transports.WebSocket.call/2 takes GET only. */
	if (req->method_id != TP_HTTP_GET)
		return 400;
	/* Bandit refuses an HTTP/1.1 request without Host before Phoenix runs. */
	if (req->minor_version == 1 && !tp_http_header_get(req, "host"))
		return 400;
	/* fetch_query_params, then check_origin. */
	ch_params params = {0};
	void *pmem = NULL;
	if (tp_params_decode(&req->query, &params, &pmem) < 0)
		return 400;
	const tp_http_str *origin = tp_http_header_get(req, "origin");
	if (ep->check_origin && origin && !tp_origin_allowed(ep, origin)) {
		rt_log_debug("websocket upgrade refused: origin %.*s not allowed", (int)origin->len,
		             origin->ptr);
		free(pmem);
		return 403;
	}
	/* The socket's connect (vsn, then the handler's connect).  The connection
	 * is a WebSocket transport from here on, so that whatever the socket
	 * sends while it opens is queued as frames (after the 101). */
	char peer[64];
	char *origin_s = dup_str(origin);
	char *ua_s = dup_str(tp_http_header_get(req, "user-agent"));
	ch_connect_info info = {.peer = conn_peer(c, peer, sizeof(peer)),
	                        .origin = origin_s,
	                        .user_agent = ua_s,
	                        .transport = "websocket"};
	ch_transport tr = {.conn = c,
	                   .send = tr_send,
	                   .close = tr_close,
	                   .push_local = tr_push_local,
	                   .flush_local = tr_flush_local};
	oq_ent *mark = conn_mark(c); /* the 101 goes after what is queued now */
	const tp_proto *prev = c->proto;
	conn_set_proto(c, &ws_proto);
	int status = 403;
	ch_socket *s = ch_socket_open(ep->socket, &params, &info, &tr, &status);
	free(pmem);
	free(origin_s);
	free(ua_s);
	if (s) {
		c->u.ws.sock = s;
		tp_count(&conn_shard(c)->ws_open, 1);
	}
	if (c->flags & F_DEAD) /* the socket overflowed the queue while opening */
		return 0;
	if (!s)
		return refused(c, prev, mark, status >= 400 && status <= 599 ? status : 403);
	/* Only now the upgrade headers (WebSockAdapter.upgrade). */
	int st = tp_ws_check_upgrade(req, body, cap);
	if (st) {
		rt_log_debug("websocket %s: upgrade refused: %s", peer, body);
		ch_socket_close(s, "upgrade refused");
		c->u.ws.sock = NULL;
		tp_count(&conn_shard(c)->ws_open, -1);
		return refused(c, prev, mark, st);
	}
	const tp_http_str *key = tp_http_header_get(req, "sec-websocket-key");
	const char *proto =
	    tp_http_header_has_token(req, "sec-websocket-protocol", "phoenix") ? "phoenix" : NULL;
	conn_push_at(c, mark, tp_ws_handshake_append(NULL, key->ptr, key->len, proto));
	c->flags |= F_OPEN;
	tp_ws_reader_init(&c->u.ws.reader, TP_WS_SERVER, ep->max_frame);
	if (!(c->flags & F_CLOSE_SENT))
		conn_set_timeout(c, TQ_WS);
	rt_log_debug("websocket %s: open", peer);
	return 0;
}
