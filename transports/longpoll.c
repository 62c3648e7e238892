/*
 * The HTTP side of the long-poll transport (longpoll.h): requests for
 * <socket_path>/longpoll, answered as Phoenix 1.7's LongPoll plug does.
 *
 *   - every answer carries access-control-allow-origin: *; JSON answers are
 *     HTTP 200 with the real status in the body (keys sorted, as Jason);
 *   - check_origin refuses with {"status":403};
 *   - OPTIONS: the CORS preflight; a method other than GET, POST, OPTIONS:
 *     400, empty;
 *   - GET with a token that verifies and a live session: a poll (parked
 *     until the session answers); otherwise a new session (parked until its
 *     connect answered: 410 with the token, or 403);
 *   - POST with a live session: the body's messages (ndjson: at most the
 *     first 100 lines, "[" text, else base64 of a binary message; any other
 *     content type: the whole body, text), parked until the session has
 *     dispatched them ({"status":200}); no session: {"status":410}.
 *
 * Where this differs from Phoenix, on purpose: a POST line that is not valid
 * base64 makes Phoenix crash the request (HTTP 500); here the whole POST is
 * refused with HTTP 400 {"status":400} before any of its messages is
 * dispatched, and the session stays.  Empty ndjson lines (a trailing
 * newline) are skipped; Phoenix would dispatch an empty binary message and
 * crash the session.  Past the sessions limit a new session gets HTTP 503
 * with Retry-After (phoenix.js retries).
 *
 * Parking.  The connection holds its input (conn_hold: no reading, no
 * parsing of pipelined requests), keeps the request's ref, a monitor of the
 * session and a deadline timer (window_ms + LP_DEADLINE_MARGIN_MS), and
 * answers whichever comes first: the session's LP_MSG_ANSWER, the session's
 * DOWN, or the deadline (a poll: 204; a POST: {"status":408}, as Phoenix's
 * :request_timeout; a new session: 503).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "runtime/xalloc.h"
#include "transports/connect.h"
#include "transports/longpoll.h"

#define CORS "access-control-allow-origin: *\r\n"
#define JSON_CT "application/json; charset=utf-8"
#define NDJSON "application/x-ndjson"

/* ------------------------------------------------------------------ answers */

static void
finish_answer(conn *c, bool keep)
{
	if (!keep || !conn_may_keep(c))
		conn_close_graceful(c);
}

/* HTTP status with a JSON body (taken); extra: more header lines or NULL. */
static void
send_json(conn *c, int status, rt_buf *body, bool keep)
{
	keep = keep && conn_may_keep(c);
	tp_http_head h = {.status = status,
	                  .content_type = JSON_CT,
	                  .content_length = body ? (int64_t)body->len : 0,
	                  .connection = keep ? TP_HTTP_CONN_KEEP_ALIVE : TP_HTTP_CONN_CLOSE,
	                  .extra = CORS};
	conn_push(c, tp_http_head_append(NULL, &h));
	conn_push(c, body);
	finish_answer(c, keep);
}

static void
send_json_text(conn *c, const char *json, bool keep)
{
	send_json(c, 200, rt_buf_from(json, strlen(json)), keep);
}

/* A plain answer: status, optional text body (no content type unless
 * text), extra header lines. */
static void
send_plain(conn *c, int status, const char *text, const char *extra, bool keep)
{
	keep = keep && conn_may_keep(c);
	char hdrs[256];
	snprintf(hdrs, sizeof(hdrs), CORS "%s", extra ? extra : "");
	size_t n = text ? strlen(text) : 0;
	tp_http_head h = {.status = status,
	                  .content_type = n ? "text/plain" : NULL,
	                  .content_length = (int64_t)n,
	                  .connection = keep ? TP_HTTP_CONN_KEEP_ALIVE : TP_HTTP_CONN_CLOSE,
	                  .extra = hdrs};
	rt_buf *b = tp_http_head_append(NULL, &h);
	if (n)
		b = rt_buf_append(b, text, n);
	conn_push(c, b);
	finish_answer(c, keep);
}

/* {"messages":[],"status":204,"token":T}: a poll answered without its session. */
static void
send_no_content(conn *c, const char *token, bool keep)
{
	rt_buf *b = rt_buf_alloc(64 + (token ? strlen(token) : 0));
	b = rt_buf_appendf(b, "{\"messages\":[],\"status\":204,\"token\":\"%s\"}",
	                   token ? token : "");
	send_json(c, 200, b, keep);
}

/* ------------------------------------------------------------------ parking */

static void
park(conn *c, int op, uint64_t ref, uint64_t mon, bool keep, const tp_http_str *token)
{
	lp_table *t = c->ep->lp;
	c->u.lp.op = (uint8_t)op;
	c->u.lp.ref = ref;
	c->u.lp.mon = mon;
	c->u.lp.keep = keep;
	c->u.lp.remote = false;
	c->u.lp.retry = NULL;
	c->u.lp.retry_size = 0;
	c->u.lp.token = NULL;
	if (token) {
		c->u.lp.token = rt_xmalloc(token->len + 1);
		memcpy(c->u.lp.token, token->ptr, token->len);
		c->u.lp.token[token->len] = 0;
	}
	c->u.lp.timer = rt_send_after((uint64_t)t->window_ms + LP_DEADLINE_MARGIN_MS, c->pid,
	                              LP_MSG_DEADLINE, &ref, sizeof(ref));
	conn_hold(c, true);
}

/* Releases what a parked request holds (its timer unless it fired, its
 * monitor, its entry among the requests waiting on another node) and
 * forgets it. */
static void
release_parked(conn *c, bool cancel_timer)
{
	if (cancel_timer && c->u.lp.timer)
		rt_cancel_timer(c->u.lp.timer);
	if (c->u.lp.mon)
		rt_demonitor(c->u.lp.mon);
	if (c->u.lp.remote)
		lp_remote_forget(c->ep->lp, c->u.lp.ref);
	free(c->u.lp.retry);
	free(c->u.lp.token);
	memset(&c->u.lp, 0, sizeof(c->u.lp));
}

/* Forgets the parked request (answered); returns its keep-alive. */
static bool
unpark(conn *c, bool cancel_timer)
{
	bool keep = c->u.lp.keep;
	release_parked(c, cancel_timer);
	conn_hold(c, false);
	if (!(c->flags & (F_CLOSING | F_DEAD)))
		conn_set_timeout(c, TQ_HTTP); /* the next request's clock */
	return keep;
}

/* The parked request's answer when its session cannot give it. */
static void
answer_without_session(conn *c, bool deadline)
{
	int op = c->u.lp.op;
	char *token = c->u.lp.token;
	c->u.lp.token = NULL;
	bool keep = unpark(c, !deadline);
	switch (op) {
	case LP_PARK_POLL:
		send_no_content(c, token, keep);
		break;
	case LP_PARK_POST:
		send_json_text(c, deadline ? "{\"status\":408}" : "{\"status\":410}", keep);
		break;
	default: /* a new session that did not answer */
		if (deadline)
			send_plain(c, 503, "503 Service Unavailable\n", "Retry-After: 1\r\n", keep);
		else
			send_plain(c, 500, "500 Internal Server Error\n", NULL, false);
		break;
	}
	free(token);
}

static void start_session(conn *c, lp_start *a, size_t size, bool keep);

/* The node named by a parked request's token has no such session (any
 * more): as lp_route's -1 for a session of this node, a poll opens a new
 * session (with the query it came with) and a POST gets 410. */
static void
no_remote_session(conn *c)
{
	int op = c->u.lp.op;
	void *retry = c->u.lp.retry;
	size_t size = c->u.lp.retry_size;
	c->u.lp.retry = NULL;
	bool keep = unpark(c, true);
	if (op == LP_PARK_POLL && retry) {
		start_session(c, retry, size, keep); /* takes retry */
		return;
	}
	free(retry);
	send_json_text(c, "{\"status\":410}", keep);
}

void
tp_lp_info(conn *c, rt_msg *m)
{
	if (!tp_lp_parked(c))
		return; /* stale: the request was answered already */
	switch (m->tag) {
	case LP_MSG_ANSWER: {
		if (m->size < sizeof(lp_answer))
			return;
		const lp_answer *a = rt_msg_data(m);
		if (a->ref != c->u.lp.ref)
			return;
		rt_buf *body = m->buf;
		m->buf = NULL;
		bool keep = unpark(c, true);
		send_json(c, a->http_status >= 200 && a->http_status <= 599 ? a->http_status : 200,
		          body, keep);
		break;
	}
	case LP_MSG_DEADLINE:
		if (m->size == sizeof(uint64_t) &&
		    *(const uint64_t *)rt_msg_data(m) == c->u.lp.ref) {
			c->u.lp.timer = 0;
			answer_without_session(c, true);
		}
		break;
	case LP_MSG_NOSESSION:
		if (m->size == sizeof(uint64_t) && *(const uint64_t *)rt_msg_data(m) == c->u.lp.ref)
			no_remote_session(c);
		break;
	case RT_MSG_DOWN:
		if (((const rt_down_info *)rt_msg_data(m))->ref == c->u.lp.mon) {
			c->u.lp.mon = 0; /* fired */
			answer_without_session(c, false);
		}
		break;
	default:
		break;
	}
}

void
tp_lp_shutdown(conn *c)
{
	if (c->u.lp.op == LP_PARK_POLL)
		answer_without_session(c, false); /* F_SHUTDOWN: closes after it */
	else
		c->u.lp.keep = false;
}

void
tp_lp_release(conn *c)
{
	if (tp_lp_parked(c))
		release_parked(c, true);
}

/* ------------------------------------------------------------------ POST bodies */

static int
b64_val(uint8_t ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Decodes standard base64 with padding, as Elixir's Base.decode64!/1
 * (strict: length a multiple of 4, "=" only at the end); appends the bytes
 * to *out.  0, or -1 when s is not valid base64. */
static int
b64_decode_append(const uint8_t *s, size_t n, rt_buf **out)
{
	if (n % 4)
		return -1;
	size_t pad = 0;
	if (n && s[n - 1] == '=')
		pad++;
	if (n > 1 && s[n - 2] == '=')
		pad++;
	*out = rt_buf_reserve(*out, n / 4 * 3);
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		bool last = i + 4 == n;
		for (int k = 0; k < 4; k++) {
			if (last && k >= 4 - (int)pad) {
				v[k] = 0;
				continue;
			}
			v[k] = b64_val(s[i + k]);
			if (v[k] < 0)
				return -1;
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
		             (uint32_t)v[3];
		uint8_t bytes[3] = {(uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w};
		size_t nb = last ? 3 - pad : 3;
		/* Base.decode64! also refuses non-zero bits under the padding. */
		if (last && ((pad == 1 && (w & 0xFF)) || (pad == 2 && (w & 0xFFFF))))
			return -1;
		*out = rt_buf_append(*out, bytes, nb);
	}
	return 0;
}

static rt_buf *
pack_text(rt_buf *b, const uint8_t *p, size_t n)
{
	uint8_t hdr[LP_PACK_HDR];
	uint32_t len = (uint32_t)n;
	memcpy(hdr, &len, 4);
	hdr[4] = 0;
	b = rt_buf_append(b, hdr, sizeof(hdr));
	return rt_buf_append(b, p, n);
}

/* One ndjson line: "[..." is text, anything else base64 of a binary. */
static int
pack_line(rt_buf **b, const uint8_t *p, size_t n)
{
	if (n && p[0] == '[') {
		*b = pack_text(*b, p, n);
		return 0;
	}
	size_t at = (*b)->len;
	uint8_t hdr[LP_PACK_HDR] = {0, 0, 0, 0, 1};
	*b = rt_buf_append(*b, hdr, sizeof(hdr));
	if (b64_decode_append(p, n, b) < 0)
		return -1;
	uint32_t len = (uint32_t)((*b)->len - at - LP_PACK_HDR);
	memcpy((*b)->data + at, &len, 4);
	return 0;
}

rt_buf *
lp_pack_body(const uint8_t *body, size_t n, bool ndjson, uint64_t *ignored)
{
	rt_buf *b = rt_buf_alloc(n + 16);
	*ignored = 0;
	if (!ndjson)
		return pack_text(b, body ? body : (const uint8_t *)"", n);
	/* Split on "\n" and "\r\n"; the first LP_MAX_BATCH parts count. */
	size_t pos = 0, parts = 0;
	for (;;) {
		const uint8_t *nl = n > pos ? memchr(body + pos, '\n', n - pos) : NULL;
		size_t end = nl ? (size_t)(nl - body) : n;
		size_t len = end - pos;
		if (nl && len && body[end - 1] == '\r')
			len--;
		if (parts == LP_MAX_BATCH) {
			(*ignored)++;
		} else {
			parts++;
			if (len && pack_line(&b, body + pos, len) < 0) {
				rt_buf_release(b);
				return NULL;
			}
		}
		if (!nl)
			break;
		pos = end + 1;
	}
	return b;
}

/* The messages of a POST request, packed (lp_pack_body); NULL when a line
 * is not valid base64. */
static rt_buf *
pack_body(lp_table *t, const tp_http_request *req)
{
	const tp_http_str *ct = tp_http_header_get(req, "content-type");
	bool ndjson = ct && tp_http_header_count(req, "content-type") == 1 &&
	              ct->len == sizeof(NDJSON) - 1 && memcmp(ct->ptr, NDJSON, ct->len) == 0;
	uint64_t ignored;
	rt_buf *b = lp_pack_body((const uint8_t *)req->body, req->body_len, ndjson, &ignored);
	if (ignored)
		atomic_fetch_add_explicit(&t->lines_ignored, ignored, memory_order_relaxed);
	return b;
}

/* ------------------------------------------------------------------ requests */

/* The spawn argument of a new session for req (malloc'ed; *size set). */
static lp_start *
start_arg(conn *c, const tp_http_request *req, size_t *size)
{
	char peer[64];
	conn_peer(c, peer, sizeof(peer));
	const tp_http_str *origin = tp_http_header_get(req, "origin");
	const tp_http_str *ua = tp_http_header_get(req, "user-agent");
	size_t pl = strlen(peer), ol = origin ? origin->len : 0, ul = ua ? ua->len : 0;
	*size = sizeof(lp_start) + req->query.len + pl + ol + ul;
	lp_start *a = rt_xmalloc(*size);
	memset(a, 0, sizeof(*a));
	a->ep = c->ep;
	a->query_len = (uint32_t)req->query.len;
	a->peer_len = (uint32_t)pl;
	a->origin_len = origin ? (uint32_t)ol : UINT32_MAX;
	a->ua_len = ua ? (uint32_t)ul : UINT32_MAX;
	char *p = a->data;
	memcpy(p, req->query.ptr, req->query.len);
	p += req->query.len;
	memcpy(p, peer, pl);
	p += pl;
	if (ol)
		memcpy(p, origin->ptr, ol);
	p += ol;
	if (ul)
		memcpy(p, ua->ptr, ul);
	return a;
}

/* Starts a session with the spawn argument a (taken) and parks the request
 * until it answers. */
static void
start_session(conn *c, lp_start *a, size_t size, bool keep)
{
	lp_table *t = c->ep->lp;
	if (atomic_load(&c->ep->draining)) {
		/* Draining: no new session here; the client's retry goes elsewhere. */
		free(a);
		send_plain(c, 503, "503 Service Unavailable\n", "Retry-After: 1\r\n", false);
		return;
	}
	if (tp_mem_refuse(c->ep)) {
		/* Over the memory budget: no new session until back under it. */
		free(a);
		send_plain(c, 503, "503 Service Unavailable\n", "Retry-After: 5\r\n", keep);
		return;
	}
	if (atomic_fetch_add(&t->open, 1) >= t->max_sessions) {
		atomic_fetch_sub(&t->open, 1);
		atomic_fetch_add_explicit(&t->refused, 1, memory_order_relaxed);
		rt_log_warning("longpoll: %u sessions open: a new one is refused (503)",
		               t->max_sessions);
		free(a);
		send_plain(c, 503, "503 Service Unavailable\n", "Retry-After: 1\r\n", keep);
		return;
	}
	a->conn = c->pid;
	a->ref = lp_next_ref(t);
	if (getrandom(a->id, LP_ID_LEN, 0) != LP_ID_LEN) {
		/* Cannot happen on Linux >= 3.17 for 16 bytes; refuse rather than
		 * hand out guessable ids. */
		free(a);
		atomic_fetch_sub(&t->open, 1);
		send_plain(c, 500, "500 Internal Server Error\n", NULL, false);
		return;
	}
	uint64_t ref = a->ref;
	rt_pid pid = rt_sup_start_child(t->sup, &lp_session_behaviour, a, size);
	free(a);
	if (!pid) { /* the supervisor is gone: the endpoint stops */
		atomic_fetch_sub(&t->open, 1);
		send_plain(c, 503, "503 Service Unavailable\n", "Retry-After: 1\r\n", false);
		return;
	}
	park(c, LP_PARK_OPEN, ref, rt_monitor(pid), keep, NULL);
}

static void
new_session(conn *c, const tp_http_request *req, bool keep)
{
	size_t size;
	lp_start *a = start_arg(c, req, &size);
	start_session(c, a, size, keep);
}

static void
preflight(conn *c, const tp_http_request *req, bool keep)
{
	char extra[1024];
	size_t n = (size_t)snprintf(extra, sizeof(extra), "access-control-allow-headers: ");
	bool first = true;
	for (size_t i = 0; i < req->nheaders; i++) {
		const tp_http_header *h = &req->headers[i];
		if (h->name.len != 30 ||
		    strncasecmp(h->name.ptr, "access-control-request-headers", 30) != 0)
			continue;
		if (n + h->value.len + 200 >= sizeof(extra))
			break; /* longer lists are cut: the answer's head stays small */
		n += (size_t)snprintf(extra + n, sizeof(extra) - n, "%s%.*s", first ? "" : ", ",
		                      (int)h->value.len, h->value.ptr);
		first = false;
	}
	snprintf(extra + n, sizeof(extra) - n,
	         "\r\naccess-control-allow-methods: get, post, options\r\n"
	         "access-control-max-age: 3600\r\n");
	send_plain(c, 200, NULL, extra, keep);
}

/* The answers Phoenix's default ErrorJSON renders when Plug raises. */
#define BAD_REQUEST_JSON "{\"errors\":{\"detail\":\"Bad Request\"}}"
#define CRASHED_JSON "{\"errors\":{\"detail\":\"Internal Server Error\"}}"

static void
send_error_json(conn *c, int status, const char *json, bool keep)
{
	send_json(c, status, rt_buf_from(json, strlen(json)), keep);
}

void
tp_lp_request(conn *c, const tp_http_request *req, bool keep)
{
	tp_endpoint *ep = c->ep;
	lp_table *t = ep->lp;
	/* fetch_query_params comes first, for every method: a key or value that
	 * is not UTF-8 raises InvalidQueryError (400). */
	ch_params params;
	void *pmem;
	if (tp_params_decode(&req->query, &params, &pmem) < 0) {
		send_error_json(c, 400, BAD_REQUEST_JSON, keep);
		return;
	}
	/* The session's token: the last "token" parameter (Plug's params map). */
	const char *tokp;
	size_t tokl;
	ch_param_kind tk = ch_params_find(&params, "token", &tokp, &tokl);
	char tokbuf[CH_TOKEN_MAX_LEN];
	tp_http_str tok = {0};
	if (tk == CH_PARAM_STRING && tokl < sizeof(tokbuf)) {
		memcpy(tokbuf, tokp, tokl);
		tok.ptr = tokbuf;
		tok.len = tokl;
	}
	free(pmem);
	const tp_http_str *origin = tp_http_header_get(req, "origin");
	if (ep->check_origin && origin && !tp_origin_allowed(ep, origin)) {
		rt_log_debug("longpoll refused: origin %.*s not allowed", (int)origin->len,
		             origin->ptr);
		send_json_text(c, "{\"status\":403}", keep);
		return;
	}
	if (req->method_id == TP_HTTP_OPTIONS) {
		preflight(c, req, keep);
		return;
	}
	if (req->method_id != TP_HTTP_GET && req->method_id != TP_HTTP_POST) {
		send_plain(c, 400, NULL, NULL, keep);
		return;
	}
	if (tk == CH_PARAM_NESTED) {
		/* Phoenix.Token.verify of a list or map raises: 500. */
		send_error_json(c, 500, CRASHED_JSON, keep);
		return;
	}
	lp_sid sid;
	bool have = tok.ptr && lp_token_verify(t, tok.ptr, tok.len, &sid) == 0;
	uint64_t ref = lp_next_ref(t), mon = 0;
	lp_op op = {.ref = ref};
	if (req->method_id == TP_HTTP_GET) {
		if (have && lp_route(t, &sid, LP_OP_POLL, &op, sizeof(op), NULL, &mon) == 0) {
			park(c, LP_PARK_POLL, ref, mon, keep, &tok);
			if (!mon) { /* on another node: a new session here if it has none */
				size_t size;
				c->u.lp.remote = true;
				c->u.lp.retry = start_arg(c, req, &size);
				c->u.lp.retry_size = (uint32_t)size;
			}
		} else {
			new_session(c, req, keep);
		}
		return;
	}
	if (!have) {
		send_json_text(c, "{\"status\":410}", keep);
		return;
	}
	rt_buf *msgs = pack_body(t, req);
	if (!msgs) {
		/* Phoenix crashes the request (HTTP 500); a clear 400 instead. */
		atomic_fetch_add_explicit(&t->bad_posts, 1, memory_order_relaxed);
		send_json(c, 400, rt_buf_from("{\"status\":400}", 14), keep);
		return;
	}
	if (lp_route(t, &sid, LP_OP_POST, &op, sizeof(op), msgs, &mon) == 0) {
		park(c, LP_PARK_POST, ref, mon, keep, NULL);
		c->u.lp.remote = mon == 0;
	} else
		send_json_text(c, "{\"status\":410}", keep);
}
