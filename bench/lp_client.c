/*
 * bench/lp_client.c: the long-poll client of bench/loadgen.  See
 * lp_client.h for the protocol and the interface.
 */
#include "bench/lp_client.h"

#include "bench/json_scan.h"
#include "bench/util.h"

#include <ctype.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ================================================================== */
/* HTTP/1.1 responses                                                  */
/* ================================================================== */

/* The value of header line [l, le) named name (lower case, with its colon),
 * trimmed, in [*v, *ve); 0 when the line is not that header. */
static int
header_is(const char *l, const char *le, const char *name, const char **v, const char **ve)
{
	size_t nl = strlen(name);
	if ((size_t)(le - l) < nl || strncasecmp(l, name, nl) != 0)
		return 0;
	const char *a = l + nl, *b = le;
	while (a < b && (*a == ' ' || *a == '\t'))
		a++;
	while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
		b--;
	*v = a;
	*ve = b;
	return 1;
}

static int
token_is(const char *v, const char *ve, const char *lit)
{
	size_t n = strlen(lit);
	return (size_t)(ve - v) == n && strncasecmp(v, lit, n) == 0;
}

/*
 * Walks the chunked body at buf[p, len): returns the end of the body (after
 * the last chunk's trailers), 0 when incomplete, -1 when malformed or when
 * the decoded size passes body_max.  With decode, copies the chunks' data to
 * buf[p, p + *out) (the body is complete: checked by a first walk).
 */
static long
chunked_walk(uint8_t *buf, size_t len, size_t p, size_t body_max, int decode, size_t *out)
{
	size_t w = p, total = 0;
	for (;;) {
		size_t size = 0, digits = 0;
		while (p < len && isxdigit(buf[p])) {
			if (size > (SIZE_MAX >> 4) || digits++ > 15)
				return -1;
			int c = buf[p++];
			size = size * 16 + (size_t)(isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
		}
		if (p >= len)
			return 0;
		if (!digits)
			return -1;
		if (buf[p] != ';' && buf[p] != ' ' && buf[p] != '\t' && buf[p] != '\r' &&
		    buf[p] != '\n')
			return -1;
		/* Chunk extensions: skipped up to the line's end. */
		const uint8_t *nl = memchr(buf + p, '\n', len - p);
		if (!nl)
			return len - p > LP_HEAD_MAX ? -1 : 0;
		p = (size_t)(nl - buf) + 1;
		if (size > body_max || total + size > body_max)
			return -1;
		if (size == 0) {
			/* Trailers: header lines up to an empty line. */
			for (;;) {
				const uint8_t *nl = memchr(buf + p, '\n', len - p);
				if (!nl)
					return len - p > LP_HEAD_MAX ? -1 : 0;
				size_t ll = (size_t)(nl - (buf + p));
				p += ll + 1;
				if (ll == 0 || (ll == 1 && buf[p - 2] == '\r'))
					break;
			}
			*out = total;
			return (long)p;
		}
		if (len - p < size + 2)
			return 0;
		if (decode)
			memmove(buf + w, buf + p, size);
		w += size;
		total += size;
		p += size;
		if (buf[p] == '\r')
			p++;
		if (buf[p] != '\n')
			return -1;
		p++;
	}
}

long
lp_http_response(uint8_t *buf, size_t len, size_t body_max, struct lp_resp *r)
{
	memset(r, 0, sizeof *r);
	size_t scan = len > LP_HEAD_MAX ? LP_HEAD_MAX : len;
	const uint8_t *end = memmem(buf, scan, "\r\n\r\n", 4);
	if (!end)
		return len >= LP_HEAD_MAX ? -1 : 0;
	size_t hl = (size_t)(end - buf) + 4;
	const char *s = (const char *)buf, *e = s + hl - 2;
	if (hl < 16 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') ||
	    s[8] != ' ' || !isdigit((unsigned char)s[9]) || !isdigit((unsigned char)s[10]) ||
	    !isdigit((unsigned char)s[11]) || (s[12] != ' ' && s[12] != '\r'))
		return -1;
	r->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	int http10 = s[7] == '0', keep_alive = 0, chunked = 0;
	long long clen = -1;
	const char *l = memchr(s, '\n', hl);
	while (l && ++l < e) {
		const char *le = memchr(l, '\n', (size_t)(e - l) + 1);
		if (!le)
			break;
		const char *v, *ve;
		if (header_is(l, le, "content-length:", &v, &ve)) {
			long long n = 0;
			if (v == ve)
				return -1;
			for (const char *q = v; q < ve; q++) {
				if (!isdigit((unsigned char)*q) || n > (long long)body_max)
					return -1;
				n = n * 10 + (*q - '0');
			}
			if (clen >= 0 && clen != n)
				return -1;
			clen = n;
		} else if (header_is(l, le, "transfer-encoding:", &v, &ve)) {
			if (!token_is(v, ve, "chunked"))
				return -1; /* no other coding is ever used for these answers */
			chunked = 1;
		} else if (header_is(l, le, "connection:", &v, &ve)) {
			if (token_is(v, ve, "close"))
				r->close = 1;
			else if (token_is(v, ve, "keep-alive"))
				keep_alive = 1;
		}
		l = le;
	}
	if (http10 && !keep_alive)
		r->close = 1;
	if (chunked) {
		size_t n = 0;
		long endp = chunked_walk(buf, len, hl, body_max, 0, &n);
		if (endp <= 0)
			return endp;
		chunked_walk(buf, len, hl, body_max, 1, &n);
		r->body_off = hl;
		r->body_len = n;
		return endp;
	}
	if (clen < 0 || (size_t)clen > body_max)
		return -1;
	if (len - hl < (size_t)clen)
		return 0;
	r->body_off = hl;
	r->body_len = (size_t)clen;
	return (long)(hl + (size_t)clen);
}

/* ================================================================== */
/* JSON                                                                */
/* ================================================================== */

static int
hex4(const char *p, const char *e, unsigned *out)
{
	if (e - p < 4)
		return -1;
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		int c = (unsigned char)p[i];
		if (!isxdigit(c))
			return -1;
		v = v * 16 + (unsigned)(isdigit(c) ? c - '0' : tolower(c) - 'a' + 10);
	}
	*out = v;
	return 0;
}

long
lp_json_unescape(const char *p, const char *e, char *out, size_t cap, const char **end)
{
	if (p >= e || *p != '"')
		return -1;
	size_t o = 0;
	for (p++; p < e; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"') {
			*end = p + 1;
			return (long)o;
		}
		if (c < 0x20)
			return -1;
		if (c != '\\') {
			if (o >= cap)
				return -1;
			out[o++] = (char)c;
			continue;
		}
		if (++p >= e)
			return -1;
		char ch;
		switch (*p) {
		case '"':
		case '\\':
		case '/':
			ch = *p;
			break;
		case 'b':
			ch = '\b';
			break;
		case 'f':
			ch = '\f';
			break;
		case 'n':
			ch = '\n';
			break;
		case 'r':
			ch = '\r';
			break;
		case 't':
			ch = '\t';
			break;
		case 'u': {
			unsigned u, lo;
			if (hex4(p + 1, e, &u))
				return -1;
			p += 4;
			if (u >= 0xDC00 && u <= 0xDFFF)
				return -1; /* a low surrogate first */
			if (u >= 0xD800 && u <= 0xDBFF) {
				if (e - p < 7 || p[1] != '\\' || p[2] != 'u' ||
				    hex4(p + 3, e, &lo) || lo < 0xDC00 || lo > 0xDFFF)
					return -1;
				p += 6;
				u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
			}
			uint8_t b[4];
			size_t k;
			if (u < 0x80) {
				b[0] = (uint8_t)u;
				k = 1;
			} else if (u < 0x800) {
				b[0] = (uint8_t)(0xC0 | u >> 6);
				b[1] = (uint8_t)(0x80 | (u & 0x3F));
				k = 2;
			} else if (u < 0x10000) {
				b[0] = (uint8_t)(0xE0 | u >> 12);
				b[1] = (uint8_t)(0x80 | ((u >> 6) & 0x3F));
				b[2] = (uint8_t)(0x80 | (u & 0x3F));
				k = 3;
			} else {
				b[0] = (uint8_t)(0xF0 | u >> 18);
				b[1] = (uint8_t)(0x80 | ((u >> 12) & 0x3F));
				b[2] = (uint8_t)(0x80 | ((u >> 6) & 0x3F));
				b[3] = (uint8_t)(0x80 | (u & 0x3F));
				k = 4;
			}
			if (cap - o < k)
				return -1;
			memcpy(out + o, b, k);
			o += k;
			continue;
		}
		default:
			return -1;
		}
		if (o >= cap)
			return -1;
		out[o++] = ch;
	}
	return -1;
}

static int
key_is(const char *k, const char *ke, const char *lit)
{
	size_t n = strlen(lit);
	return (size_t)(ke - k) == n + 2 && memcmp(k + 1, lit, n) == 0;
}

int
lp_body_parse(const char *p, size_t n, struct lp_body *b)
{
	const char *e = p + n;
	memset(b, 0, sizeof *b);
	b->status = -1;
	p = js_ws(p, e);
	if (p >= e || *p != '{')
		return -1;
	p = js_ws(p + 1, e);
	if (p < e && *p == '}')
		return js_ws(p + 1, e) == e ? 0 : -1;
	for (;;) {
		const char *k = p, *ke;
		if (p >= e || *p != '"' || !(ke = js_str(p, e)))
			return -1;
		p = js_ws(ke, e);
		if (p >= e || *p != ':')
			return -1;
		const char *v = js_ws(p + 1, e), *ve = js_skip(v, e, 1);
		if (!ve)
			return -1;
		if (key_is(k, ke, "status")) {
			int st = 0;
			if (ve - v > 3)
				return -1;
			for (const char *q = v; q < ve; q++) {
				if (!isdigit((unsigned char)*q))
					return -1;
				st = st * 10 + (*q - '0');
			}
			b->status = st;
		} else if (key_is(k, ke, "token")) {
			if (*v == '"') {
				b->token = v;
				b->token_end = ve;
			} else if (ve - v == 4 && !memcmp(v, "null", 4)) {
				b->token = b->token_end = NULL;
			} else {
				return -1;
			}
		} else if (key_is(k, ke, "messages")) {
			if (*v != '[')
				return -1;
			b->msgs = v;
			b->msgs_end = ve;
		}
		p = js_ws(ve, e);
		if (p < e && *p == ',') {
			p = js_ws(p + 1, e);
			continue;
		}
		if (p < e && *p == '}')
			return js_ws(p + 1, e) == e ? 0 : -1;
		return -1;
	}
}

long
lp_messages_walk(const char *a, const char *e, char *scratch, size_t cap, long max_count,
                 int (*cb)(void *arg, const char *msg, size_t len), void *arg)
{
	const char *p = js_ws(a, e);
	if (p >= e || *p != '[')
		return -1;
	p = js_ws(p + 1, e);
	if (p < e && *p == ']')
		return 0;
	long count = 0;
	for (;;) {
		if (count >= max_count)
			return -1;
		const char *end;
		long n = lp_json_unescape(p, e, scratch, cap, &end);
		if (n < 0)
			return -1;
		count++;
		if (cb(arg, scratch, (size_t)n))
			return count;
		p = js_ws(end, e);
		if (p >= e)
			return -1;
		if (*p == ']')
			return count;
		if (*p != ',')
			return -1;
		p = js_ws(p + 1, e);
	}
}

/* ================================================================== */
/* Sessions                                                            */
/* ================================================================== */

enum { LP_S_IDLE, LP_S_CONNECTING, LP_S_OPENING, LP_S_OPEN, LP_S_DEAD };

static void lh_go(struct lp_http *h, int64_t now);

static void
lh_close_fd(struct lp_sess *s, struct lp_http *h)
{
	if (h->fd < 0)
		return;
	ev_io_stop(s->ctx->loop, &h->io);
	close(h->fd);
	h->fd = -1;
	h->gen++;
	h->connecting = 0;
	h->reused = 0;
	h->in_len = 0;
}

static void
free_bufs(struct lp_sess *s)
{
	struct lp_http *hs[2] = {&s->poll, &s->post};
	for (int i = 0; i < 2; i++) {
		free(hs[i]->in);
		free(hs[i]->out);
		hs[i]->in = hs[i]->out = NULL;
		hs[i]->in_len = hs[i]->in_cap = hs[i]->out_len = hs[i]->out_off = hs[i]->out_cap =
		    0;
	}
	free(s->pend);
	free(s->token);
	s->pend = NULL;
	s->token = NULL;
	s->pend_len = s->pend_cap = s->pend_n = 0;
	s->token_len = 0;
}

void
lp_close(struct lp_sess *s)
{
	if (s->state == LP_S_DEAD || !s->ctx)
		return;
	s->state = LP_S_DEAD;
	lh_close_fd(s, &s->poll);
	lh_close_fd(s, &s->post);
	s->poll.busy = s->post.busy = 0;
	if (!s->in_cb)
		free_bufs(s);
}

static void
sess_fail(struct lp_sess *s, enum lp_fail why, int64_t now)
{
	if (s->state == LP_S_DEAD)
		return;
	lp_close(s);
	s->ctx->ops->failed(s->arg, why, now);
}

int
lp_alive(const struct lp_sess *s)
{
	return s->ctx && s->state != LP_S_DEAD;
}

size_t
lp_backlog(const struct lp_sess *s)
{
	return s->pend_len + (s->post.busy ? s->post.out_len : 0);
}

/* Grows *buf to hold need bytes (at most max); -1 past max or without memory. */
static int
grow(uint8_t **buf, uint32_t *cap, size_t need, size_t max)
{
	if (need <= *cap)
		return 0;
	if (need > max)
		return -1;
	size_t c = *cap ? *cap : 2048;
	while (c < need)
		c *= 2;
	if (c > max)
		c = max;
	uint8_t *b = realloc(*buf, c);
	if (!b)
		return -1;
	*buf = b;
	*cap = (uint32_t)c;
	return 0;
}

/* Writes the request (method, the session's URL, body) into h->out: it is
 * then outstanding until its answer.  -1 when it does not fit. */
static int
lh_prepare(struct lp_http *h, const char *method, const char *body, size_t blen, const char *ctype,
           int64_t now)
{
	struct lp_sess *s = h->s;
	char head[LP_HEAD_MAX];
	int n = snprintf(head, sizeof head,
	                 "%s %s%s%.*s HTTP/1.1\r\nHost: %s\r\n"
	                 "User-Agent: phx-c-loadgen\r\nAccept: application/json\r\n",
	                 method, s->t->path, s->token ? "&token=" : "", (int)s->token_len,
	                 s->token ? s->token : "", s->t->host);
	if (n > 0 && body && (size_t)n < sizeof head)
		n += snprintf(head + n, sizeof head - (size_t)n,
		              "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, blen);
	if (n > 0 && (size_t)n < sizeof head)
		n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
	if (n < 0 || (size_t)n >= sizeof head)
		return -1;
	size_t total = (size_t)n + (body ? blen : 0);
	if (grow(&h->out, &h->out_cap, total, (size_t)LP_HEAD_MAX + LP_PENDING_CAP))
		return -1;
	memcpy(h->out, head, (size_t)n);
	if (body)
		memcpy(h->out + n, body, blen);
	h->out_len = (uint32_t)total;
	h->out_off = 0;
	h->busy = 1;
	h->retried = 0;
	h->t_req = now;
	return 0;
}

static void
lh_watch(struct lp_sess *s, struct lp_http *h, int events)
{
	if ((h->io.events & (EV_READ | EV_WRITE)) == events && ev_is_active(&h->io))
		return;
	ev_io_stop(s->ctx->loop, &h->io);
	ev_io_set(&h->io, h->fd, events);
	ev_io_start(s->ctx->loop, &h->io);
}

static void lh_closed(struct lp_http *h, int64_t now);

static void
lh_flush(struct lp_http *h, int64_t now)
{
	struct lp_sess *s = h->s;
	while (h->out_off < h->out_len) {
		ssize_t r = send(h->fd, h->out + h->out_off, h->out_len - h->out_off, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				lh_watch(s, h, EV_READ | EV_WRITE);
				return;
			}
			lh_closed(h, now);
			return;
		}
		*s->ctx->bytes_out += (uint64_t)r;
		h->out_off += (uint32_t)r;
	}
	lh_watch(s, h, EV_READ);
}

static void
lh_connected(struct lp_http *h, int64_t now)
{
	struct lp_sess *s = h->s;
	h->connecting = 0;
	if (h == &s->poll && s->state == LP_S_CONNECTING) {
		s->state = LP_S_OPENING;
		s->ctx->ops->connected(s->arg);
		if (s->state == LP_S_DEAD)
			return;
	}
	lh_flush(h, now);
}

static void lh_cb(struct ev_loop *loop, ev_io *w, int revents);

static void
lh_connect(struct lp_http *h, int64_t now)
{
	struct lp_sess *s = h->s;
	const struct lp_target *t = s->t;
	int fd = socket(t->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		sess_fail(s, errno == EMFILE || errno == ENFILE ? LP_F_NO_FD : LP_F_CONNECT_ERROR,
		          now);
		return;
	}
	h->fd = fd;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (t->src) {
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(fd, (const struct sockaddr *)t->src, sizeof *t->src) < 0) {
			sess_fail(s, LP_F_CONNECT_ERROR, now);
			return;
		}
	}
	ev_io_init(&h->io, lh_cb, fd, EV_WRITE);
	if (connect(fd, t->sa, t->salen) == 0) {
		lh_connected(h, now);
		return;
	}
	if (errno != EINPROGRESS) {
		sess_fail(s, errno == ECONNREFUSED ? LP_F_REFUSED : LP_F_CONNECT_ERROR, now);
		return;
	}
	h->connecting = 1;
	ev_io_start(s->ctx->loop, &h->io);
}

/* Sends the prepared request: on the open connection, or on a new one. */
static void
lh_go(struct lp_http *h, int64_t now)
{
	if (h->fd < 0)
		lh_connect(h, now);
	else if (!h->connecting)
		lh_flush(h, now);
}

/* The server closed h (or it broke).  A keep-alive connection closed before
 * any byte of the answer to a reused connection's request is the usual
 * keep-alive race: the request is sent again once on a new connection. */
static void
lh_closed(struct lp_http *h, int64_t now)
{
	struct lp_sess *s = h->s;
	int race = h->busy && h->in_len == 0 && h->reused && !h->retried;
	lh_close_fd(s, h);
	if (race) {
		h->retried = 1;
		h->out_off = 0;
		lh_connect(h, now);
	} else if (h->busy) {
		sess_fail(s, LP_F_CLOSED, now);
	}
}

static void
sess_poll(struct lp_sess *s, int64_t now)
{
	if (lh_prepare(&s->poll, "GET", NULL, 0, NULL, now)) {
		sess_fail(s, LP_F_OVERFLOW, now);
		return;
	}
	lh_go(&s->poll, now);
}

/* Sends the next POST: the first LP_BATCH_MAX pending frames (one when V1). */
static void
sess_post(struct lp_sess *s, int64_t now)
{
	uint32_t k = s->ctx->v1 ? 1 : LP_BATCH_MAX, taken = 0;
	size_t off = 0;
	while (taken < k && taken < s->pend_n) {
		const uint8_t *nl = memchr(s->pend + off, '\n', s->pend_len - off);
		off = nl ? (size_t)(nl - s->pend) : s->pend_len;
		taken++;
		if (taken < k && taken < s->pend_n)
			off++;
	}
	if (lh_prepare(&s->post, "POST", (const char *)s->pend, off,
	               s->ctx->v1 ? "application/json" : "application/x-ndjson", now)) {
		sess_fail(s, LP_F_OVERFLOW, now);
		return;
	}
	size_t skip = off < s->pend_len ? off + 1 : off;
	memmove(s->pend, s->pend + skip, s->pend_len - skip);
	s->pend_len -= (uint32_t)skip;
	s->pend_n -= taken;
	lh_go(&s->post, now);
}

struct walk_arg {
	struct lp_sess *s;
	int64_t now;
};

static int
walk_cb(void *arg, const char *msg, size_t len)
{
	struct walk_arg *w = arg;
	w->s->ctx->ops->message(w->s->arg, msg, len, w->now);
	return w->s->state == LP_S_DEAD;
}

/* URL-encodes the token string (opening quote at p) into s->token. */
static int
store_token(struct lp_sess *s, const char *p, const char *e)
{
	char raw[LP_TOKEN_MAX], enc[LP_TOKEN_MAX];
	const char *end;
	long n = lp_json_unescape(p, e, raw, sizeof raw, &end);
	if (n <= 0)
		return -1;
	size_t o = 0;
	for (long i = 0; i < n; i++) {
		unsigned char c = (unsigned char)raw[i];
		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
			if (o + 1 >= sizeof enc)
				return -1;
			enc[o++] = (char)c;
		} else {
			if (o + 3 >= sizeof enc)
				return -1;
			o += (size_t)snprintf(enc + o, 4, "%%%02X", c);
		}
	}
	free(s->token);
	s->token = malloc(o + 1);
	if (!s->token)
		return -1;
	memcpy(s->token, enc, o);
	s->token[o] = 0;
	s->token_len = (uint16_t)o;
	return 0;
}

/* Handles the answer to a GET. */
static void
on_poll(struct lp_sess *s, const struct lp_body *b, int64_t now)
{
	int st = b->status;
	if (st == 403) {
		sess_fail(s, LP_F_FORBIDDEN, now);
		return;
	}
	if (s->state == LP_S_OPENING) {
		if (st != 410) {
			sess_fail(s, LP_F_STATUS, now);
			return;
		}
		if (!b->token || store_token(s, b->token, b->token_end)) {
			sess_fail(s, LP_F_BAD_BODY, now);
			return;
		}
		s->state = LP_S_OPEN;
		s->ctx->ops->opened(s->arg, now);
	} else if (st == 200) {
		if (b->msgs) {
			struct walk_arg w = {s, now};
			if (lp_messages_walk(b->msgs, b->msgs_end, s->ctx->scratch, s->ctx->max_msg,
			                     LP_MAX_MESSAGES, walk_cb, &w) < 0) {
				sess_fail(s, LP_F_BAD_BODY, now);
				return;
			}
		}
	} else if (st != 204) {
		sess_fail(s, st == 410 ? LP_F_GONE : LP_F_STATUS, now);
		return;
	}
	if (s->state == LP_S_OPEN)
		sess_poll(s, now);
}

/* Handles the answer to a POST. */
static void
on_post(struct lp_sess *s, const struct lp_body *b, int64_t now)
{
	if (b->status != 200) {
		sess_fail(s,
		          b->status == 410   ? LP_F_GONE
		          : b->status == 403 ? LP_F_FORBIDDEN
		                             : LP_F_STATUS,
		          now);
		return;
	}
	if (s->pend_n)
		sess_post(s, now);
}

/* Handles one complete response on h; the caller drops its bytes. */
static void
lh_response(struct lp_http *h, const struct lp_resp *r, int64_t now)
{
	struct lp_sess *s = h->s;
	struct lp_body b;
	if (!h->busy || r->status != 200) {
		sess_fail(s, LP_F_BAD_HTTP, now);
		return;
	}
	h->busy = 0;
	h->reused = 1;
	if (lp_body_parse((const char *)h->in + r->body_off, r->body_len, &b)) {
		sess_fail(s, LP_F_BAD_BODY, now);
		return;
	}
	if (r->close) {
		/* The bytes stay in h->in until the caller drops them. */
		uint32_t keep = h->in_len;
		lh_close_fd(s, h);
		h->in_len = keep;
	}
	if (h == &s->poll) {
		(*s->ctx->polls)++;
		on_poll(s, &b, now);
	} else {
		(*s->ctx->posts)++;
		on_post(s, &b, now);
	}
}

static void
lh_read(struct lp_http *h, int64_t now)
{
	struct lp_sess *s = h->s;
	size_t max = (size_t)LP_HEAD_MAX + 2 * s->ctx->body_max;
	for (int round = 0; round < 16; round++) {
		if (h->in_cap - h->in_len < 1024 &&
		    grow(&h->in, &h->in_cap, h->in_len + 4096, max)) {
			sess_fail(s, LP_F_OVERFLOW, now);
			return;
		}
		size_t want = h->in_cap - h->in_len;
		ssize_t r = recv(h->fd, h->in + h->in_len, want, 0);
		if (r == 0) {
			lh_closed(h, now);
			return;
		}
		if (r < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				lh_closed(h, now);
			return;
		}
		*s->ctx->bytes_in += (uint64_t)r;
		h->in_len += (uint32_t)r;
		for (;;) {
			struct lp_resp resp;
			long n = lp_http_response(h->in, h->in_len, s->ctx->body_max, &resp);
			if (n < 0) {
				sess_fail(s, LP_F_BAD_HTTP, now);
				return;
			}
			if (n == 0)
				break;
			uint32_t gen = h->gen;
			lh_response(h, &resp, now);
			if (s->state == LP_S_DEAD)
				return;
			if (h->gen != gen) {
				/* Closed after this answer (the next request may be on a new
				 * connection already): whatever followed is dropped. */
				h->in_len = 0;
				return;
			}
			memmove(h->in, h->in + n, h->in_len - (size_t)n);
			h->in_len -= (uint32_t)n;
		}
		if (h->in_len == 0 && h->in_cap > 65536) {
			free(h->in);
			h->in = NULL;
			h->in_cap = 0;
		}
		if ((size_t)r < want)
			return; /* the socket is drained */
	}
}

static void
lh_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	struct lp_http *h = (struct lp_http *)w;
	struct lp_sess *s = h->s;
	int64_t now = now_ns();
	s->in_cb++;
	if (h->connecting) {
		int err = 0;
		socklen_t el = sizeof err;
		if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (err)
			sess_fail(s, err == ECONNREFUSED ? LP_F_REFUSED : LP_F_CONNECT_ERROR, now);
		else
			lh_connected(h, now);
	} else {
		if (revents & EV_WRITE)
			lh_flush(h, now);
		if ((revents & EV_READ) && h->fd >= 0 && s->state != LP_S_DEAD)
			lh_read(h, now);
	}
	if (--s->in_cb == 0 && s->state == LP_S_DEAD)
		free_bufs(s);
}

static void
flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop;
	(void)revents;
	struct lp_ctx *ctx = (struct lp_ctx *)((char *)w - offsetof(struct lp_ctx, flush));
	struct lp_sess *list = ctx->dirty;
	ctx->dirty = NULL;
	int64_t now = list ? now_ns() : 0;
	while (list) {
		struct lp_sess *s = list;
		list = s->next_dirty;
		s->next_dirty = NULL;
		s->queued = 0;
		if (s->state == LP_S_OPEN && !s->post.busy && s->pend_n) {
			s->in_cb++;
			sess_post(s, now);
			if (--s->in_cb == 0 && s->state == LP_S_DEAD)
				free_bufs(s);
		}
	}
}

int
lp_ctx_init(struct lp_ctx *ctx, struct ev_loop *loop)
{
	ctx->loop = loop;
	ctx->dirty = NULL;
	ctx->scratch = malloc(ctx->max_msg ? ctx->max_msg : 1);
	if (!ctx->scratch)
		return -1;
	ev_prepare_init(&ctx->flush, flush_cb);
	ev_prepare_start(loop, &ctx->flush);
	return 0;
}

void
lp_start(struct lp_ctx *ctx, struct lp_sess *s, const struct lp_target *t, void *arg)
{
	memset(s, 0, sizeof *s);
	s->ctx = ctx;
	s->t = t;
	s->arg = arg;
	s->poll.s = s->post.s = s;
	s->poll.fd = s->post.fd = -1;
	s->state = LP_S_CONNECTING;
	int64_t now = now_ns();
	s->in_cb++;
	sess_poll(s, now);
	if (--s->in_cb == 0 && s->state == LP_S_DEAD)
		free_bufs(s);
}

int
lp_push(struct lp_sess *s, const char *frame, size_t n)
{
	if (!lp_alive(s) || s->state != LP_S_OPEN)
		return -1;
	size_t need = s->pend_len + n + (s->pend_n ? 1 : 0);
	if (need > LP_PENDING_CAP || memchr(frame, '\n', n) ||
	    grow(&s->pend, &s->pend_cap, need, LP_PENDING_CAP)) {
		sess_fail(s, LP_F_OVERFLOW, now_ns());
		return -1;
	}
	if (s->pend_n)
		s->pend[s->pend_len++] = '\n';
	memcpy(s->pend + s->pend_len, frame, n);
	s->pend_len += (uint32_t)n;
	s->pend_n++;
	if (!s->post.busy && !s->queued) {
		s->queued = 1;
		s->next_dirty = s->ctx->dirty;
		s->ctx->dirty = s;
	}
	return 0;
}

void
lp_check(struct lp_sess *s, int64_t now)
{
	if (!lp_alive(s))
		return;
	int64_t lim = (int64_t)(s->ctx->req_timeout * 1e9);
	if ((s->poll.busy && now - s->poll.t_req > lim) ||
	    (s->post.busy && now - s->post.t_req > lim))
		sess_fail(s, LP_F_TIMEOUT, now);
}
