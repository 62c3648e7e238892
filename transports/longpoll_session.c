/*
 * A long-poll session: the process that owns one long-poll client's Phoenix
 * socket between its HTTP requests (Phoenix's LongPoll.Server), and the
 * long-poll implementation of the transport contract (channels/transport.h:
 * send and close; no push_local, so the fastlane sends it messages).
 *
 * Opening.  init runs the socket's connect with the query of the request
 * that opened the session (ch_socket_open, transport "longpoll"), then
 * answers that request through its connection: {"status":403} when refused,
 * else {"messages":[],"status":410,"token":...} with the session's token,
 * after registering the session in the endpoint's table.
 *
 * Polls.  At most one poll waits (its connection's pid and ref, or the
 * node of a connection of another node: lp_answer_to).  Frames the
 * socket sends are buffered; at the end of each batch of messages (flush),
 * a waiting poll gets every buffered frame as one answer and the buffer is
 * emptied: nothing is lost between two polls.  A poll that finds nothing
 * waits for window_ms, then gets 204.  A second poll while one waits: the
 * first gets 204 at once and the second waits.
 *
 * Limits.  The buffer holds at most max_frames frames and max_bytes bytes;
 * past either the client is a slow consumer and the session ends.  V2
 * binary frames cannot travel as JSON strings (Phoenix's LongPoll crashes
 * the request): they are dropped and counted, with one warning per session.
 *
 * Ending.  The session ends when no poll came for 1.5 x window_ms (checked
 * every 1.5 x window_ms, as Phoenix's schedule_inactive_shutdown; a waiting
 * poll counts as activity), when the socket closes it (/api/disconnect,
 * undecodable input), as a slow consumer, when drained (LP_SESS_DRAIN), or
 * at endpoint stop.  A waiting
 * poll is answered then (its buffered frames, else 204); the channels see
 * the transport exit as they would see a WebSocket close.
 */
#include <stdlib.h>
#include <string.h>

#include "channels/transport.h"
#include "runtime/xalloc.h"
#include "transports/connect.h"
#include "transports/longpoll.h"

/* A session's state: owned by the session process. */
typedef struct lp_session {
	tp_endpoint *ep;
	lp_table *t;
	ch_socket *sock;
	uint8_t id[LP_ID_LEN];
	char *token; /* its session token (the body of every poll answer) */
	rt_buf **q;  /* frames waiting for a poll, in order */
	uint32_t qn, qcap;
	size_t qbytes;
	lp_waiter waiter; /* the waiting poll (when waiting) */
	bool waiting;
	rt_timer wtimer; /* its window */
	int64_t last_poll_ms;
	const char *end; /* set: the session ends after this message (the reason) */
	bool registered, warned_binary;
} lp_session;

/* ------------------------------------------------------------------ answers */

static void
answer(rt_pid to, uint64_t ref, rt_buf *body)
{
	lp_answer a = {.ref = ref, .http_status = 200};
	rt_send_buf(to, LP_MSG_ANSWER, &a, sizeof(a), body);
}

static void
answer_text(rt_pid to, uint64_t ref, const char *json)
{
	answer(to, ref, rt_buf_from(json, strlen(json)));
}

/* Appends s[0, n) as a JSON string, as Jason writes it (UTF-8 as is). */
static rt_buf *
json_str(rt_buf *b, const uint8_t *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	b = rt_buf_reserve(b, n + 2);
	b = rt_buf_append(b, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = s[i];
		if (ch >= 0x20 && ch != '"' && ch != '\\')
			continue;
		b = rt_buf_append(b, s + run, i - run);
		run = i + 1;
		char e[6] = {'\\', 0};
		size_t el = 2;
		switch (ch) {
		case '"':
			e[1] = '"';
			break;
		case '\\':
			e[1] = '\\';
			break;
		case '\n':
			e[1] = 'n';
			break;
		case '\r':
			e[1] = 'r';
			break;
		case '\t':
			e[1] = 't';
			break;
		case '\b':
			e[1] = 'b';
			break;
		case '\f':
			e[1] = 'f';
			break;
		default:
			memcpy(e, "\\u00", 4);
			e[4] = hex[ch >> 4];
			e[5] = hex[ch & 15];
			el = 6;
		}
		b = rt_buf_append(b, e, el);
	}
	b = rt_buf_append(b, s + run, n - run);
	return rt_buf_append(b, "\"", 1);
}

/* {"messages":[...],"status":S,"token":T} with the buffered frames (taken). */
static rt_buf *
poll_body(lp_session *s, int status, bool with_frames)
{
	rt_buf *b =
	    rt_buf_alloc(64 + (with_frames ? s->qbytes + s->qbytes / 8 : 0) + strlen(s->token));
	b = rt_buf_append_str(b, "{\"messages\":[");
	for (uint32_t i = 0; with_frames && i < s->qn; i++) {
		if (i)
			b = rt_buf_append(b, ",", 1);
		b = json_str(b, s->q[i]->data, s->q[i]->len);
		rt_buf_release(s->q[i]);
	}
	if (with_frames) {
		s->qn = 0;
		s->qbytes = 0;
		if (s->qcap > 64) { /* do not keep a burst's array */
			free(s->q);
			s->q = NULL;
			s->qcap = 0;
		}
	}
	return rt_buf_appendf(b, "],\"status\":%d,\"token\":\"%s\"}", status, s->token);
}

/* Answers the waiting poll: its frames (200), or 204 when there are none. */
static void
release_waiter(lp_session *s)
{
	if (!s->waiting)
		return;
	if (s->wtimer)
		rt_cancel_timer(s->wtimer);
	bool any = s->qn > 0;
	lp_answer_to(s->t, &s->waiter, poll_body(s, any ? 200 : 204, any));
	s->waiting = false;
	s->wtimer = 0;
}

/* ------------------------------------------------------------------ ch_transport */

static void
tr_send(void *conn_, rt_buf *frame)
{
	lp_session *s = conn_;
	if (!frame)
		return;
	if (s->end) {
		rt_buf_release(frame);
		return;
	}
	if (frame->flags == CH_FRAME_BINARY_KIND) {
		rt_buf_release(frame);
		atomic_fetch_add_explicit(&s->t->binary_dropped, 1, memory_order_relaxed);
		if (!s->warned_binary)
			rt_log_warning("longpoll session: a binary frame cannot be sent over long "
			               "polling: dropped (and any later one, counted)");
		s->warned_binary = true;
		return;
	}
	if (tp_mem_cut(s->t->ep, s->qbytes)) {
		atomic_fetch_add_explicit(&s->t->slow, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&s->t->ep->mem_cut, 1, memory_order_relaxed);
		rt_log_warning("longpoll session: %zu bytes wait for a poll while over the memory "
		               "budget: ended (slow consumer)",
		               s->qbytes);
		rt_buf_release(frame);
		s->end = "slow consumer";
		return;
	}
	if (s->qn >= s->t->max_frames || s->qbytes + frame->len > s->t->max_bytes) {
		atomic_fetch_add_explicit(&s->t->slow, 1, memory_order_relaxed);
		rt_log_warning("longpoll session: %u frames (%zu bytes) wait for a poll, over the "
		               "limit (%u, %zu): ended (slow consumer)",
		               s->qn + 1, s->qbytes + frame->len, s->t->max_frames,
		               s->t->max_bytes);
		rt_buf_release(frame);
		s->end = "slow consumer";
		return;
	}
	if (s->qn == s->qcap) {
		s->qcap = s->qcap ? s->qcap * 2 : 8;
		s->q = rt_xrealloc(s->q, s->qcap * sizeof(*s->q));
	}
	s->q[s->qn++] = frame;
	s->qbytes += frame->len;
}

static void
tr_close(void *conn_, int code, const char *reason)
{
	lp_session *s = conn_;
	(void)code;
	(void)reason;
	if (!s->end)
		s->end = "normal";
}

/* ------------------------------------------------------------------ init */

static char *
take_str(const char **p, uint32_t len)
{
	if (len == UINT32_MAX)
		return NULL;
	char *s = rt_xmalloc(len + 1);
	memcpy(s, *p, len);
	s[len] = 0;
	*p += len;
	return s;
}

static void
schedule_tick(lp_session *s)
{
	uint64_t ms = (uint64_t)s->t->window_ms * 3 / 2;
	rt_send_after(ms ? ms : 1, rt_self(), LP_SESS_TICK, NULL, 0);
}

static int
session_init(void *state, const void *arg, size_t size)
{
	lp_session *s = state;
	const lp_start *a = arg;
	(void)size;
	s->ep = a->ep;
	s->t = a->ep->lp;
	memcpy(s->id, a->id, LP_ID_LEN);
	s->last_poll_ms = rt_now_ms();
	const char *p = a->data;
	tp_http_str query = {.ptr = p, .len = a->query_len};
	p += a->query_len;
	char *peer = take_str(&p, a->peer_len);
	char *origin = take_str(&p, a->origin_len);
	char *ua = take_str(&p, a->ua_len);
	ch_params params = {0};
	void *pmem = NULL;
	/* The request checked that the query decodes (400 otherwise). */
	if (tp_params_decode(&query, &params, &pmem) < 0)
		params = (ch_params){0};
	ch_connect_info info = {
	    .peer = peer, .origin = origin, .user_agent = ua, .transport = "longpoll"};
	ch_transport tr = {.conn = s, .send = tr_send, .close = tr_close};
	int status = 403;
	s->sock = ch_socket_open(s->ep->socket, &params, &info, &tr, &status);
	free(pmem);
	free(peer);
	free(origin);
	free(ua);
	if (!s->sock) {
		if (status == 500) { /* a connect that crashed: Plug's error page */
			lp_answer ans = {.ref = a->ref, .http_status = 500};
			static const char crashed[] =
			    "{\"errors\":{\"detail\":\"Internal Server Error\"}}";
			rt_send_buf(a->conn, LP_MSG_ANSWER, &ans, sizeof(ans),
			            rt_buf_from(crashed, sizeof(crashed) - 1));
			return rt_stop("normal");
		}
		/* Phoenix answers a refused connect, and an unsupported vsn, 403. */
		answer_text(a->conn, a->ref, "{\"status\":403}");
		return rt_stop("normal");
	}
	char tok[CH_TOKEN_MAX_LEN];
	if (lp_token_sign(s->t, s->id, tok, sizeof(tok)) < 0) {
		rt_log_error("longpoll session: cannot sign its token");
		answer_text(a->conn, a->ref, "{\"status\":403}");
		return rt_stop("normal");
	}
	s->token = rt_xstrdup(tok);
	lp_register(s->t, s->id, rt_self());
	s->registered = true;
	atomic_fetch_add_explicit(&s->t->opened, 1, memory_order_relaxed);
	answer(a->conn, a->ref, poll_body(s, 410, false));
	schedule_tick(s);
	if (s->end) /* the socket closed itself while opening */
		return rt_stop(s->end);
	return RT_OK;
}

/* ------------------------------------------------------------------ messages */

/* Who gets the answer to op: its sender, or the connection of another node
 * that op->origin names. */
static lp_waiter
waiter_of(const rt_msg *m, const lp_op *op)
{
	lp_waiter w = {.pid = m->from, .ref = op->ref};
	memcpy(w.node, op->origin, sizeof(w.node));
	w.node[sizeof(w.node) - 1] = 0;
	return w;
}

static void
on_poll(lp_session *s, rt_msg *m)
{
	if (m->size < sizeof(lp_op))
		return;
	const lp_op *op = rt_msg_data(m);
	if (!op->origin[0] && !m->from)
		return;
	s->last_poll_ms = rt_now_ms();
	if (s->waiting) { /* the new poll replaces the old one, which gets 204 now */
		if (s->wtimer)
			rt_cancel_timer(s->wtimer);
		lp_answer_to(s->t, &s->waiter, poll_body(s, 204, false));
	}
	s->waiter = waiter_of(m, op);
	s->waiting = true;
	s->wtimer = 0;
	if (s->qn == 0) /* else flush answers at the end of this batch */
		s->wtimer = rt_send_after(s->t->window_ms, rt_self(), LP_SESS_WINDOW, &op->ref,
		                          sizeof(op->ref));
}

static void
on_post(lp_session *s, rt_msg *m)
{
	if (m->size < sizeof(lp_op))
		return;
	const lp_op *op = rt_msg_data(m);
	const uint8_t *p = m->buf ? m->buf->data : NULL;
	size_t n = m->buf ? m->buf->len : 0, pos = 0;
	/* Each message as a WebSocket data frame would be; a message that closes
	 * the socket ends the session (Phoenix stops the server) and the rest of
	 * the batch with it. */
	while (pos + LP_PACK_HDR <= n && !s->end) {
		uint32_t len;
		memcpy(&len, p + pos, 4);
		bool binary = p[pos + 4] != 0;
		pos += LP_PACK_HDR;
		if (len > n - pos)
			break; /* the packer is ours: cannot happen */
		int rc = ch_socket_in(s->sock, p + pos, len, binary);
		if (rc)
			tr_close(s, rc,
			         rc == CH_CLOSE_POLICY_VIOLATION ? "policy violation"
			                                         : "undecodable message");
		pos += len;
	}
	if (m->from || op->origin[0]) {
		lp_waiter w = waiter_of(m, op);
		lp_answer_to(s->t, &w, rt_buf_from("{\"status\":200}", 14));
	}
}

static int
session_handle(void *state, rt_msg *m)
{
	lp_session *s = state;
	switch (m->tag) {
	case LP_OP_POLL:
		on_poll(s, m);
		break;
	case LP_OP_POST:
		on_post(s, m);
		break;
	case LP_SESS_WINDOW:
		if (s->waiting && m->size == sizeof(uint64_t) &&
		    *(const uint64_t *)rt_msg_data(m) == s->waiter.ref) {
			s->wtimer = 0; /* delivered */
			release_waiter(s);
		}
		break;
	case LP_SESS_TICK:
		if (!s->waiting &&
		    rt_now_ms() - s->last_poll_ms > (int64_t)s->t->window_ms * 3 / 2) {
			atomic_fetch_add_explicit(&s->t->expired, 1, memory_order_relaxed);
			rt_log_debug("longpoll session: no poll for %u ms: ended",
			             s->t->window_ms * 3 / 2);
			if (!s->end)
				s->end = "shutdown";
		} else {
			schedule_tick(s);
		}
		break;
	case LP_SESS_DRAIN:
		/* Phoenix's LongPoll.Server stops ({:shutdown, :restart}); the
		 * client's next poll finds no session and opens a new one (410
		 * with a new token), on another node: this one accepts no more
		 * connections and keeps none alive.  A waiting poll is answered
		 * now, below (Phoenix lets it run out its window). */
		if (!s->end) {
			atomic_fetch_add_explicit(&s->ep->drained, 1, memory_order_relaxed);
			s->end = "shutdown";
		}
		break;
	default:
		ch_socket_info(s->sock, m);
		break;
	}
	if (s->end) {
		release_waiter(s); /* what is buffered goes to a waiting poll */
		return rt_stop(s->end);
	}
	return RT_OK;
}

/* End of a batch: a waiting poll gets everything buffered, in one answer. */
static void
session_flush(void *state)
{
	lp_session *s = state;
	if (s->waiting && s->qn)
		release_waiter(s);
}

static void
session_terminate(void *state, const char *reason)
{
	lp_session *s = state;
	if (!s->t)
		return;
	release_waiter(s);
	if (s->registered)
		lp_unregister(s->t, s->id, rt_self());
	if (s->sock)
		ch_socket_close(s->sock, reason);
	s->sock = NULL;
	for (uint32_t i = 0; i < s->qn; i++)
		rt_buf_release(s->q[i]);
	free(s->q);
	free(s->token);
	s->q = NULL;
	s->token = NULL;
	atomic_fetch_sub(&s->t->open, 1);
	s->t = NULL;
}

const rt_behaviour lp_session_behaviour = {
    .name = "lp_session",
    .state_size = sizeof(lp_session),
    .init = session_init,
    .handle = session_handle,
    .terminate = session_terminate,
    .flush = session_flush,
};
