/*
 * tp_ws: RFC 6455 WebSocket codec: handshake, frame reader with message
 * reassembly, frame encoders, UTF-8 validation.  See ws.h for the contracts
 * and who owns which bytes.
 */
#include "transports/ws.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "channels/b64.h"

/* ---- opening handshake ---- */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int
tp_ws_accept_key(const char *key, size_t len, char out[29])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) &&
	         EVP_DigestUpdate(ctx, key, len) &&
	         EVP_DigestUpdate(ctx, ws_guid, sizeof(ws_guid) - 1) &&
	         EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 20;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		out[0] = '\0';
		return -1;
	}
	ch_b64_encode(md, 20, out); /* 28 chars + NUL */
	return 0;
}

/* Appends to out[*n, cap) as snprintf does (always NUL-terminated, cut when full). */
static void
out_add(char *out, size_t cap, size_t *n, const char *p, size_t len)
{
	if (*n + 1 >= cap)
		return;
	if (len > cap - 1 - *n)
		len = cap - 1 - *n;
	memcpy(out + *n, p, len);
	*n += len;
	out[*n] = '\0';
}

/* Appends the values of every header named name as Elixir inspects a list of
 * strings (["a", "b"]), lowercased when lower. */
static void
out_values(char *out, size_t cap, size_t *n, const tp_http_request *req, const char *name,
           int lower)
{
	out_add(out, cap, n, "[", 1);
	int first = 1;
	for (size_t i = 0; i < req->nheaders; i++) {
		const tp_http_header *h = &req->headers[i];
		if (h->name.len != strlen(name) || strncasecmp(h->name.ptr, name, h->name.len) != 0)
			continue;
		out_add(out, cap, n, first ? "\"" : ", \"", first ? 1 : 3);
		first = 0;
		for (size_t k = 0; k < h->value.len; k++) {
			unsigned char c = (unsigned char)h->value.ptr[k];
			char esc[8];
			if (c == '"' || c == '\\')
				out_add(out, cap, n, (char[]){'\\', (char)c}, 2);
			else if (c == '#' && k + 1 < h->value.len && h->value.ptr[k + 1] == '{')
				out_add(out, cap, n, "\\#", 2);
			else if (c < 0x20 || c == 0x7F)
				out_add(out, cap, n, esc,
				        (size_t)snprintf(esc, sizeof(esc), "\\x%02X", c));
			else if (lower && c >= 'A' && c <= 'Z')
				out_add(out, cap, n, (char[]){(char)(c + 32)}, 1);
			else
				out_add(out, cap, n, (const char *)&c, 1);
		}
		out_add(out, cap, n, "\"", 1);
	}
	out_add(out, cap, n, "]", 1);
}

/* A refusal: status 400 with WebSockAdapter's message in why. */
static int
refuse(char *why, size_t cap, const char *a, const tp_http_request *req, const char *name,
       int lower)
{
	size_t n = 0;
	if (cap)
		why[0] = '\0';
	out_add(why, cap, &n, a, strlen(a));
	if (name)
		out_values(why, cap, &n, req, name, lower);
	return 400;
}

int
tp_ws_check_upgrade(const tp_http_request *req, char *why, size_t cap)
{
	char line[64];
	if (req->minor_version != 1)
		return refuse(why, cap, "HTTP version HTTP/1.0 unsupported", req, NULL, 0);
	if (req->method_id != TP_HTTP_GET) {
		snprintf(line, sizeof(line), "HTTP method %.*s unsupported",
		         (int)(req->method.len < 32 ? req->method.len : 32), req->method.ptr);
		return refuse(why, cap, line, req, NULL, 0);
	}
	if (!tp_http_header_get(req, "host"))
		return refuse(why, cap, "'host' header is absent", req, NULL, 0);
	if (!tp_http_header_has_token(req, "connection", "upgrade"))
		return refuse(why, cap, "'connection' header must contain 'upgrade', got ", req,
		              "connection", 0);
	if (!tp_http_header_has_token(req, "upgrade", "websocket"))
		return refuse(why, cap, "'upgrade' header must contain 'websocket', got ", req,
		              "upgrade", 0);
	if (!tp_http_header_get(req, "sec-websocket-key"))
		return refuse(why, cap, "'sec-websocket-key' header is absent", req, NULL, 0);
	const tp_http_str *v = tp_http_header_get(req, "sec-websocket-version");
	if (!v || tp_http_header_count(req, "sec-websocket-version") != 1 || v->len != 2 ||
	    memcmp(v->ptr, "13", 2) != 0)
		return refuse(why, cap, "'sec-websocket-version' header must equal '13', got ", req,
		              "sec-websocket-version", 1);
	if (tp_http_header_count(req, "sec-websocket-key") != 1)
		return refuse(why, cap, "'sec-websocket-key' header must be given once", req, NULL,
		              0);
	if (why && cap)
		why[0] = '\0';
	return 0;
}

/* 1 when p is a token of 1..128 characters (RFC 9110 tchar). */
static int
protocol_ok(const char *p)
{
	size_t n = strlen(p);
	if (n == 0 || n > 128)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      (c && strchr("!#$%&'*+-.^_`|~", c))))
			return 0;
	}
	return 1;
}

/* Fills extra (>= 256 bytes) with the handshake header lines and h with the 101 head. */
static void
handshake_head(tp_http_head *h, char extra[256], const char *key, size_t keylen,
               const char *protocol)
{
	char accept[29];
	tp_ws_accept_key(key, keylen, accept);
	strcpy(extra, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
	strcat(extra, accept);
	strcat(extra, "\r\n");
	if (protocol && protocol_ok(protocol)) {
		strcat(extra, "Sec-WebSocket-Protocol: ");
		strcat(extra, protocol);
		strcat(extra, "\r\n");
	}
	h->status = 101;
	h->content_type = NULL;
	h->content_length = -1;
	h->connection = TP_HTTP_CONN_NONE;
	h->extra = extra;
}

rt_buf *
tp_ws_handshake_append(rt_buf *b, const char *key, size_t keylen, const char *protocol)
{
	tp_http_head h;
	char extra[256];
	handshake_head(&h, extra, key, keylen, protocol);
	return tp_http_head_append(b, &h);
}

ssize_t
tp_ws_handshake_write(char *out, size_t cap, const char *key, size_t keylen, const char *protocol)
{
	tp_http_head h;
	char extra[256];
	if (protocol && !protocol_ok(protocol))
		return -1;
	handshake_head(&h, extra, key, keylen, protocol);
	return tp_http_head_write(out, cap, &h);
}

/* ---- UTF-8 (runtime/utf8.h) ---- */

uint32_t
tp_ws_utf8_feed(uint32_t state, const uint8_t *p, size_t n)
{
	return rt_utf8_feed(state, p, n);
}

int
tp_ws_utf8_valid(const uint8_t *p, size_t n)
{
	return rt_utf8_valid(p, n);
}

/* ---- close frames ---- */

int
tp_ws_close_code_ok(int code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

int
tp_ws_parse_close(const uint8_t *p, size_t n, int *code, const uint8_t **reason, size_t *reason_len)
{
	*code = CH_CLOSE_NO_STATUS;
	*reason = NULL;
	*reason_len = 0;
	if (n == 0)
		return 0;
	if (n == 1 || n > 125)
		return CH_CLOSE_PROTOCOL_ERROR;
	int c = (p[0] << 8) | p[1];
	if (!tp_ws_close_code_ok(c))
		return CH_CLOSE_PROTOCOL_ERROR;
	if (!tp_ws_utf8_valid(p + 2, n - 2))
		return CH_CLOSE_INVALID_PAYLOAD;
	*code = c;
	*reason = n > 2 ? p + 2 : NULL;
	*reason_len = n - 2;
	return 0;
}

/* ---- frame headers ---- */

int
tp_ws_frame_parse_header(const uint8_t *p, size_t n, tp_ws_frame *f, size_t *need)
{
	size_t hl = 2;
	if (n < 2) {
		if (need)
			*need = 2;
		return 0;
	}
	unsigned len7 = p[1] & 0x7F;
	if (len7 == 126)
		hl += 2;
	else if (len7 == 127)
		hl += 8;
	if (p[1] & 0x80)
		hl += 4;
	if (n < hl) {
		if (need)
			*need = hl;
		return 0;
	}
	f->fin = (p[0] >> 7) & 1;
	f->rsv = (p[0] >> 4) & 7;
	f->opcode = p[0] & 0x0F;
	f->masked = (p[1] >> 7) & 1;
	size_t i = 2;
	if (len7 == 126) {
		f->payload_len = ((uint64_t)p[2] << 8) | p[3];
		i = 4;
	} else if (len7 == 127) {
		if (p[2] & 0x80)
			return -1;
		uint64_t v = 0;
		for (i = 2; i < 10; i++)
			v = (v << 8) | p[i];
		f->payload_len = v;
	} else {
		f->payload_len = len7;
	}
	if (f->masked)
		memcpy(f->mask, p + i, 4);
	else
		memset(f->mask, 0, 4);
	f->header_len = hl;
	return (int)hl;
}

void
tp_ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], size_t offset)
{
	uint8_t m[8];
	for (int k = 0; k < 8; k++)
		m[k] = mask[(offset + (size_t)k) & 3];
	uint64_t m8;
	memcpy(&m8, m, 8);
	size_t i = 0;
	for (; n - i >= 8; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		v ^= m8;
		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] ^= m[i & 3];
}

/* ---- reader ---- */

void
tp_ws_reader_init(tp_ws_reader *r, tp_ws_role role, size_t max_message)
{
	memset(r, 0, sizeof(*r));
	r->role = role;
	r->max_message = max_message ? max_message : TP_WS_DEFAULT_MAX_MESSAGE;
	/* Keep header + payload sizes representable in size_t. */
	if (r->max_message > SIZE_MAX - 2 * TP_WS_MAX_HEADER)
		r->max_message = SIZE_MAX - 2 * TP_WS_MAX_HEADER;
}

void
tp_ws_reader_free(tp_ws_reader *r)
{
	free(r->msg);
	r->msg = NULL;
	r->msg_len = r->msg_cap = 0;
	r->msg_opcode = 0;
	r->delivered = 0;
}

static tp_ws_event_type
reader_fail(tp_ws_reader *r, tp_ws_event *ev, int code, const char *msg)
{
	r->error = code;
	r->error_msg = msg;
	ev->type = TP_WS_EV_ERROR;
	ev->code = code;
	ev->error = msg;
	return ev->type;
}

static void
msg_reset(tp_ws_reader *r)
{
	r->msg_opcode = 0;
	r->msg_len = 0;
	r->utf8 = TP_WS_UTF8_ACCEPT;
	r->delivered = 0;
	if (r->msg_cap > 64 * 1024) { /* do not pin a big buffer on an idle connection */
		free(r->msg);
		r->msg = NULL;
		r->msg_cap = 0;
	}
}

/* Appends p[0, n) to the message buffer (the caller checked max_message); -1 on OOM. */
static int
msg_append(tp_ws_reader *r, const uint8_t *p, size_t n)
{
	size_t need = r->msg_len + n;
	if (need > r->msg_cap) {
		size_t cap = r->msg_cap < 256 ? 256 : r->msg_cap;
		while (cap < need && cap <= r->max_message / 2)
			cap *= 2;
		if (cap < need)
			cap = need;
		if (cap > r->max_message && need <= r->max_message)
			cap = r->max_message;
		uint8_t *m = realloc(r->msg, cap);
		if (!m)
			return -1;
		r->msg = m;
		r->msg_cap = cap;
	}
	if (n)
		memcpy(r->msg + r->msg_len, p, n);
	r->msg_len = need;
	return 0;
}

static int
is_control(int op)
{
	return op >= 0x8;
}

tp_ws_event_type
tp_ws_reader_next(tp_ws_reader *r, uint8_t *in, size_t len, tp_ws_event *ev)
{
	size_t pos = 0;

	memset(ev, 0, sizeof(*ev));
	if (r->error) {
		ev->type = TP_WS_EV_ERROR;
		ev->code = r->error;
		ev->error = r->error_msg;
		return ev->type;
	}
	if (r->delivered)
		msg_reset(r);

	for (;;) {
		const uint8_t *h = in + pos;
		size_t avail = len - pos;
		ev->consumed = pos;

		/* Everything the first two bytes tell is judged before waiting for more. */
		if (avail < 2) {
			ev->need = 2;
			return ev->type = TP_WS_EV_NEED_MORE;
		}
		int fin = h[0] >> 7, rsv = (h[0] >> 4) & 7, op = h[0] & 0x0F;
		int masked = h[1] >> 7;
		unsigned len7 = h[1] & 0x7F;
		if (rsv)
			return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR, "reserved bits set");
		if (op != TP_WS_OP_CONT && op != TP_WS_OP_TEXT && op != TP_WS_OP_BINARY &&
		    op != TP_WS_OP_CLOSE && op != TP_WS_OP_PING && op != TP_WS_OP_PONG)
			return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR, "unknown opcode");
		if (r->role == TP_WS_SERVER && !masked)
			return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR, "unmasked client frame");
		if (r->role == TP_WS_CLIENT && masked)
			return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR, "masked server frame");
		if (is_control(op)) {
			if (!fin)
				return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR,
				                   "fragmented control frame");
			if (len7 > 125)
				return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR,
				                   "control frame too long");
			if (op == TP_WS_OP_CLOSE && len7 == 1)
				return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR,
				                   "1-byte close payload");
		} else if (op == TP_WS_OP_CONT && !r->msg_opcode) {
			return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR,
			                   "continuation without a message");
		} else if (op != TP_WS_OP_CONT && r->msg_opcode) {
			return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR,
			                   "new message inside a fragmented one");
		}

		tp_ws_frame f;
		size_t need = 0;
		int hl = tp_ws_frame_parse_header(h, avail, &f, &need);
		if (hl < 0)
			return reader_fail(r, ev, CH_CLOSE_PROTOCOL_ERROR,
			                   "64-bit length with the high bit set");
		if (hl == 0) {
			ev->need = need;
			return ev->type = TP_WS_EV_NEED_MORE;
		}
		if (!is_control(op)) {
			size_t have = op == TP_WS_OP_CONT ? r->msg_len : 0;
			if (f.payload_len > r->max_message - have)
				return reader_fail(r, ev, CH_CLOSE_MESSAGE_TOO_BIG,
				                   "message too big");
		}
		size_t n = (size_t)f.payload_len; /* <= max_message or <= 125 */
		if (avail - (size_t)hl < n) {
			ev->need = (size_t)hl + n;
			return ev->type = TP_WS_EV_NEED_MORE;
		}
		uint8_t *pl = in + pos + hl;
		if (f.masked)
			tp_ws_unmask(pl, n, f.mask, 0);
		size_t frame_end = pos + (size_t)hl + n;

		switch (op) {
		case TP_WS_OP_PING:
		case TP_WS_OP_PONG:
			ev->type = op == TP_WS_OP_PING ? TP_WS_EV_PING : TP_WS_EV_PONG;
			ev->data = n ? pl : NULL;
			ev->len = n;
			ev->consumed = frame_end;
			return ev->type;
		case TP_WS_OP_CLOSE: {
			int code;
			const uint8_t *reason;
			size_t rlen;
			int bad = tp_ws_parse_close(pl, n, &code, &reason, &rlen);
			if (bad)
				return reader_fail(r, ev, bad,
				                   bad == CH_CLOSE_INVALID_PAYLOAD
				                       ? "close reason not UTF-8"
				                       : "bad close code");
			ev->type = TP_WS_EV_CLOSE;
			ev->code = code;
			ev->data = reason;
			ev->len = rlen;
			ev->consumed = frame_end;
			return ev->type;
		}
		case TP_WS_OP_TEXT:
		case TP_WS_OP_BINARY: {
			uint32_t st = TP_WS_UTF8_ACCEPT;
			if (op == TP_WS_OP_TEXT) {
				st = tp_ws_utf8_feed(st, pl, n);
				if (st == TP_WS_UTF8_REJECT || (fin && st != TP_WS_UTF8_ACCEPT))
					return reader_fail(r, ev, CH_CLOSE_INVALID_PAYLOAD,
					                   "text is not UTF-8");
			}
			if (fin) { /* unfragmented: hand out the input bytes, no copy */
				ev->type = TP_WS_EV_MESSAGE;
				ev->opcode = op;
				ev->data = n ? pl : NULL;
				ev->len = n;
				ev->consumed = frame_end;
				return ev->type;
			}
			if (msg_append(r, pl, n) < 0)
				return reader_fail(r, ev, CH_CLOSE_INTERNAL_ERROR, "out of memory");
			r->msg_opcode = op;
			r->utf8 = st;
			break;
		}
		default: /* TP_WS_OP_CONT, with a message in progress */
			if (r->msg_opcode == TP_WS_OP_TEXT) {
				uint32_t st = tp_ws_utf8_feed(r->utf8, pl, n);
				if (st == TP_WS_UTF8_REJECT || (fin && st != TP_WS_UTF8_ACCEPT))
					return reader_fail(r, ev, CH_CLOSE_INVALID_PAYLOAD,
					                   "text is not UTF-8");
				r->utf8 = st;
			}
			if (msg_append(r, pl, n) < 0)
				return reader_fail(r, ev, CH_CLOSE_INTERNAL_ERROR, "out of memory");
			if (fin) {
				ev->type = TP_WS_EV_MESSAGE;
				ev->opcode = r->msg_opcode;
				ev->data = r->msg_len ? r->msg : NULL;
				ev->len = r->msg_len;
				ev->consumed = frame_end;
				r->delivered = 1;
				return ev->type;
			}
			break;
		}
		pos = frame_end; /* a non-final fragment was absorbed: next frame */
	}
}

/* ---- encoders ---- */

size_t
tp_ws_frame_header(uint8_t out[10], int opcode, int fin, uint64_t payload_len)
{
	out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
	if (payload_len < 126) {
		out[1] = (uint8_t)payload_len;
		return 2;
	}
	if (payload_len <= 0xFFFF) {
		out[1] = 126;
		out[2] = (uint8_t)(payload_len >> 8);
		out[3] = (uint8_t)payload_len;
		return 4;
	}
	payload_len &= UINT64_C(0x7FFFFFFFFFFFFFFF);
	out[1] = 127;
	for (int i = 0; i < 8; i++)
		out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
	return 10;
}

rt_buf *
tp_ws_frame_append(rt_buf *b, int opcode, const void *payload, size_t len)
{
	uint8_t hdr[10];
	if (is_control(opcode & 0x0F) && len > 125)
		len = 125;
	size_t hl = tp_ws_frame_header(hdr, opcode, 1, len);
	if (!b)
		b = rt_buf_alloc(hl + len);
	b = rt_buf_reserve(b, hl + len);
	b = rt_buf_append(b, hdr, hl);
	if (len)
		b = rt_buf_append(b, payload, len);
	return b;
}

rt_buf *
tp_ws_close_append(rt_buf *b, int code, const char *reason, size_t reason_len)
{
	uint8_t pl[125];
	size_t n = 0;
	if (tp_ws_close_code_ok(code)) {
		pl[0] = (uint8_t)(code >> 8);
		pl[1] = (uint8_t)code;
		if (!reason)
			reason_len = 0;
		if (reason_len > 123) {
			reason_len = 123;
			/* Do not cut a character: back off over continuation bytes. */
			while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xC0) == 0x80)
				reason_len--;
		}
		if (reason_len)
			memcpy(pl + 2, reason, reason_len);
		n = 2 + reason_len;
	}
	return tp_ws_frame_append(b, TP_WS_OP_CLOSE, pl, n);
}

size_t
tp_ws_frame_encode_masked(uint8_t *out, size_t cap, int opcode, int fin, const void *p, size_t n,
                          const uint8_t key[4])
{
	uint8_t hdr[10];
	size_t hl = tp_ws_frame_header(hdr, opcode, fin, n);
	size_t total = hl + 4 + n;
	if (total > cap || total < n)
		return total;
	hdr[1] |= 0x80;
	memcpy(out, hdr, hl);
	memcpy(out + hl, key, 4);
	if (n)
		memcpy(out + hl + 4, p, n);
	tp_ws_unmask(out + hl + 4, n, key, 0);
	return total;
}
