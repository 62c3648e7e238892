/*
 * HTTP serving: the first protocol of every connection (conn.h: tp_proto).
 * It parses HTTP/1.1 requests (keep-alive, pipelining), answers the app's
 * routes, static files and errors, and hands a request for
 * <socket_path>/websocket to the WebSocket transport (websocket.c), which
 * either switches the connection over or says what to answer.
 *
 * Backpressure.  Pipelined requests are answered while fewer than
 * HTTP_HIGH_WATER bytes are queued; past that, parsing and reading pause
 * (F_PAUSED) until the core has written the queue out and resumes.
 *
 * Timeouts.  TQ_HTTP: a request must complete within http_idle_ms of its
 * first byte, and a keep-alive connection idle that long is closed (write
 * progress restarts the clock, in the core).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transports/longpoll.h"
#include "transports/serve.h"
#include "transports/websocket.h"

#define HTTP_HIGH_WATER (256 * 1024) /* queued HTTP bytes that pause request parsing */
#define PATH_MAX_DECODED (16 * 1024) /* decoded request path (request line is smaller) */

/* Protocol flags (conn.h: F_PROTO_BITS). */
enum {
	F_HEAD_REQ = 1 << 12, /* answering a HEAD request: error answers have no body */
};

/* ------------------------------------------------------------------ answers */

/* Queues a small error answer; keep: the connection stays open. */
static void
http_error(conn *c, int status, bool keep, const char *extra)
{
	tp_http_conn conn = keep ? TP_HTTP_CONN_KEEP_ALIVE : TP_HTTP_CONN_CLOSE;
	if (c->flags & F_HEAD_REQ) { /* the same head, without the body */
		char body[64];
		int n = snprintf(body, sizeof(body), "%d %s\n", status, tp_http_reason(status));
		tp_http_head h = {.status = status,
		                  .content_type = "text/plain",
		                  .content_length = n,
		                  .connection = conn,
		                  .extra = extra};
		conn_push(c, tp_http_head_append(NULL, &h));
	} else {
		conn_push(c, tp_http_error_append(NULL, status, conn, extra));
	}
	if (!keep)
		conn_close_graceful(c);
}

/* Queues status with body text (no Content-Type, as Plug's send_resp without
 * one) and closes after it. */
static void
answer_close(conn *c, int status, const char *text)
{
	size_t n = strlen(text);
	tp_http_head h = {.status = status,
	                  .content_type = NULL,
	                  .content_length = (int64_t)n,
	                  .connection = TP_HTTP_CONN_CLOSE};
	rt_buf *b = tp_http_head_append(NULL, &h);
	if (n && !(c->flags & F_HEAD_REQ))
		b = rt_buf_append(b, text, n);
	conn_push(c, b);
	conn_close_graceful(c);
}

static bool
str_is(const tp_http_str *s, const char *z)
{
	size_t n = strlen(z);
	return s->len == n && memcmp(s->ptr, z, n) == 0;
}

static void
respond(conn *c, const tp_response *r, bool keep, bool head_only)
{
	tp_http_head h = {.status = r->status ? r->status : 200,
	                  .content_type = r->content_type ? r->content_type : "application/json",
	                  .content_length = r->body ? (int64_t)r->body->len : 0,
	                  .connection = keep ? TP_HTTP_CONN_KEEP_ALIVE : TP_HTTP_CONN_CLOSE,
	                  .extra = r->extra_headers};
	if (h.extra) {
		size_t n = strlen(h.extra);
		if (n < 2 || strcmp(h.extra + n - 2, "\r\n") != 0) {
			rt_log_warning("route response: extra_headers must end with CRLF: ignored");
			h.extra = NULL;
		}
	}
	conn_push(c, tp_http_head_append(NULL, &h));
	if (head_only)
		rt_buf_release(r->body);
	else
		conn_push(c, r->body);
	if (!keep)
		conn_close_graceful(c);
}

static void
serve_route(conn *c, const tp_route_c *rt, const tp_http_request *req, bool keep, bool head_only)
{
	tp_response resp = {0};
	rt->fn(req, &resp, rt->udata);
	if (c->flags & F_DEAD) {
		rt_buf_release(resp.body);
		return;
	}
	respond(c, &resp, keep, head_only);
}

static void
method_not_allowed(conn *c, const char *path, size_t plen, bool keep)
{
	char allow[512];
	size_t n = (size_t)snprintf(allow, sizeof(allow), "Allow: ");
	bool first = true, get = false;
	const tp_endpoint *ep = c->ep;
	for (size_t i = 0; i < ep->nroutes; i++) {
		const tp_route_c *r = &ep->routes[i];
		if (strlen(r->path) != plen || memcmp(r->path, path, plen) != 0)
			continue;
		get |= strcmp(r->method, "GET") == 0;
		size_t ml = strlen(r->method);
		if (n + ml + 16 >= sizeof(allow))
			break;
		n += (size_t)snprintf(allow + n, sizeof(allow) - n, "%s%s", first ? "" : ", ",
		                      r->method);
		first = false;
	}
	if (get && n + 16 < sizeof(allow))
		n += (size_t)snprintf(allow + n, sizeof(allow) - n, ", HEAD");
	snprintf(allow + n, sizeof(allow) - n, "\r\n");
	http_error(c, 405, keep, allow);
}

/* ------------------------------------------------------------------ requests */

static void
handle_path(conn *c, const tp_http_request *req, const char *path, size_t plen, bool keep,
            bool is_head)
{
	tp_endpoint *ep = c->ep;

	/* App routes: exact path and method; HEAD is served by a GET route. */
	const tp_route_c *fallback = NULL;
	bool known = false;
	for (size_t i = 0; i < ep->nroutes; i++) {
		const tp_route_c *r = &ep->routes[i];
		if (strlen(r->path) != plen || memcmp(r->path, path, plen) != 0)
			continue;
		known = true;
		if (str_is(&req->method, r->method)) {
			serve_route(c, r, req, keep, is_head);
			return;
		}
		if (is_head && strcmp(r->method, "GET") == 0)
			fallback = r;
	}
	if (fallback) {
		serve_route(c, fallback, req, keep, true);
		return;
	}
	if (known) {
		method_not_allowed(c, path, plen, keep);
		return;
	}

	if (ep->socket && strlen(ep->ws_path) == plen && memcmp(ep->ws_path, path, plen) == 0) {
		if (atomic_load(&ep->draining)) {
			/* Draining: no new socket here; the client retries elsewhere. */
			http_error(c, 503, false, "Retry-After: 1\r\n");
			return;
		}
		if (tp_mem_refuse(ep)) {
			/* Over the memory budget: no new socket until back under it. */
			http_error(c, 503, false, "Retry-After: 5\r\n");
			return;
		}
		char body[256];
		int st = tp_ws_upgrade(c, req, body, sizeof(body));
		if (st)
			answer_close(c, st, body);
		return;
	}

	if (ep->lp && strlen(ep->lp_path) == plen && memcmp(ep->lp_path, path, plen) == 0) {
		tp_lp_request(c, req, keep);
		return;
	}

	const tp_file *f = tp_static_find(ep->files, path, plen);
	if (f) {
		if (req->method_id != TP_HTTP_GET && !is_head) {
			http_error(c, 405, keep, "Allow: GET, HEAD\r\n");
			return;
		}
		conn_push(c, rt_buf_retain(keep ? f->head_keep : f->head_close));
		if (!is_head)
			conn_push(c, rt_buf_retain(f->body));
		if (!keep)
			conn_close_graceful(c);
		return;
	}
	http_error(c, 404, keep, NULL);
}

static void
handle_request(conn *c, const tp_http_request *req)
{
	tp_count(&conn_shard(c)->http_requests, 1);
	bool keep = req->keep_alive && conn_may_keep(c);
	bool is_head = req->method_id == TP_HTTP_HEAD;
	if (is_head)
		c->flags |= F_HEAD_REQ;
	char path[PATH_MAX_DECODED];
	ssize_t pl = tp_http_path_decode(req->path.ptr, req->path.len, path, sizeof(path));
	if (pl < 0)
		http_error(c, 400, false, NULL);
	else
		handle_path(c, req, path, (size_t)pl, keep, is_head);
	if (c->proto == &tp_http_proto)
		c->flags &= (uint16_t)~F_HEAD_REQ;
}

/* Parses and answers one request from buf[0, len).  Returns 1 to go on with
 * the next one, 0 to stop (need more input, paused, closing, upgraded). */
static int
http_one(conn *c, uint8_t *buf, size_t len, size_t *used)
{
	*used = 0;
	if (c->flags & (F_CLOSING | F_DEAD)) {
		*used = len; /* nothing after the last answer is read */
		return 0;
	}
	if (c->oq_bytes >= HTTP_HIGH_WATER || tp_lp_parked(c)) {
		c->flags |= F_PAUSED;
		return 0;
	}
	tp_http_request req;
	tp_http_result r =
	    tp_http_parse_next(&c->ep->http, &c->u.http.parse, (char *)buf, len, &req);
	tp_count(&conn_shard(c)->http_parsed, (int64_t)req.examined);
	if (r == TP_HTTP_NEED_MORE) {
		c->in_need = req.need > UINT32_MAX ? UINT32_MAX : (uint32_t)req.need;
		return 0;
	}
	if (r == TP_HTTP_ERROR) {
		char peer[64];
		rt_log_debug("http %s: %s: %d", conn_peer(c, peer, sizeof(peer)), req.error,
		             req.status);
		http_error(c, req.status, false, NULL);
		*used = len;
		return 0;
	}
	*used = req.consumed;
	handle_request(c, &req);
	if (c->proto != &tp_http_proto)
		return 0; /* upgraded: the rest is the new protocol's */
	if (tp_lp_parked(c))
		return 0; /* the rest waits for the parked request's answer */
	if (!(c->flags & (F_CLOSING | F_DEAD)))
		conn_set_timeout(c, TQ_HTTP); /* the next request's clock */
	return 1;
}

/* ------------------------------------------------------------------ tp_proto */

static size_t
http_input(conn *c, uint8_t *buf, size_t len)
{
	if (c->in_len == 0 && !(c->flags & F_CLOSING))
		conn_set_timeout(c, TQ_HTTP); /* the first byte of a request starts its clock */
	size_t pos = 0;
	while (pos < len && !(c->flags & F_DEAD)) {
		size_t used;
		int more = http_one(c, buf + pos, len - pos, &used);
		pos += used;
		if (!more)
			break;
	}
	return pos;
}

static void
http_eof(conn *c)
{
	if (!c->oq_tail)
		conn_finish(c, W_NORMAL);
	else
		conn_close_graceful(c); /* write what is queued, then close */
}

static void
http_timeout(conn *c)
{
	if (tp_lp_parked(c)) { /* its own deadline bounds a parked request */
		conn_set_timeout(c, TQ_HTTP);
		return;
	}
	if (c->in_len && !c->oq_tail)
		http_error(c, 408, false, NULL); /* a request did not complete in time */
	else
		conn_finish(c, W_TIMEOUT); /* idle keep-alive, or the client does not read */
}

/* Endpoint stop: finish the response in flight; an idle connection closes now. */
static void
http_shutdown(conn *c)
{
	if (c->flags & F_CLOSING)
		return;
	if (tp_lp_parked(c)) {
		tp_lp_shutdown(c);
		return;
	}
	if (!c->oq_tail && c->in_len == 0)
		conn_finish(c, W_SHUTDOWN);
	else
		conn_close_graceful(c);
}

static void
http_info(conn *c, rt_msg *m)
{
	tp_lp_info(c, m); /* a parked long-poll request's answer; the rest is dropped */
}

static void
http_terminate(conn *c, const char *reason)
{
	(void)reason;
	tp_lp_release(c);
}

const tp_proto tp_http_proto = {
    .name = "http",
    .input = http_input,
    .eof = http_eof,
    .timeout = http_timeout,
    .shutdown = http_shutdown,
    .info = http_info,
    .terminate = http_terminate,
};
