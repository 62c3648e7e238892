/*
 * fuzz_ws: the WebSocket frame reader (transports/ws.h), with fragmentation,
 * control frames between fragments, UTF-8 and close payloads.
 *
 * Input: [config byte][piece seed: 2 bytes][stream...].  The config byte
 * picks the role (bit 0: server reads masked client frames, client reads
 * unmasked ones) and the message limit (the rest: 0 for the default, else
 * small).  The stream is read whole, as a connection that got it in one
 * read, and again in pieces of sizes drawn from the seed, as a connection
 * that appends each read to its buffer and drops what each event consumed:
 * both must report the same events with the same bytes.  Every message is
 * then encoded as a masked client frame and read back by a server reader.
 */
#include "fuzz/fuzz.h"
#include "transports/ws.h"

#define MAX_EVENTS 64

/* One event as seen by the caller: its kind and a digest of its bytes. */
typedef struct seen {
	int type, opcode, code;
	size_t len;
	uint64_t digest;
} seen;

static uint64_t
digest(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

/* Checks what the reader promises about one event and records it. */
static void
record(const tp_ws_reader *r, const tp_ws_event *ev, seen *out)
{
	memset(out, 0, sizeof(*out)); /* padding too: records are compared with memcmp */
	out->type = ev->type;
	out->opcode = ev->opcode;
	out->code = ev->code;
	out->len = ev->len;
	out->digest = digest(ev->data, ev->len);
	FUZZ_CHECK(ev->len == 0 || ev->data);
	switch (ev->type) {
	case TP_WS_EV_MESSAGE:
		FUZZ_CHECK(ev->opcode == TP_WS_OP_TEXT || ev->opcode == TP_WS_OP_BINARY);
		FUZZ_CHECK(ev->len <= r->max_message);
		if (ev->opcode == TP_WS_OP_TEXT)
			FUZZ_CHECK(tp_ws_utf8_valid(ev->data, ev->len));
		break;
	case TP_WS_EV_PING:
	case TP_WS_EV_PONG:
		FUZZ_CHECK(ev->len <= 125);
		break;
	case TP_WS_EV_CLOSE:
		FUZZ_CHECK(ev->code == 1005 || tp_ws_close_code_ok(ev->code));
		FUZZ_CHECK(tp_ws_utf8_valid(ev->data, ev->len));
		break;
	case TP_WS_EV_ERROR:
		FUZZ_CHECK(ev->code >= 1000 && ev->code < 5000 && ev->error);
		break;
	case TP_WS_EV_NEED_MORE:
		FUZZ_CHECK(0);
	}
}

/* Reads in[0, n) (modified in place: unmasking) as one buffer. */
static size_t
read_whole(tp_ws_reader *r, uint8_t *in, size_t n, seen *out)
{
	size_t k = 0, off = 0;
	while (k < MAX_EVENTS) {
		tp_ws_event ev;
		tp_ws_reader_next(r, in + off, n - off, &ev);
		FUZZ_CHECK(ev.consumed <= n - off);
		off += ev.consumed;
		if (ev.type == TP_WS_EV_NEED_MORE) {
			FUZZ_CHECK(ev.need > n - off);
			break;
		}
		record(r, &ev, &out[k++]);
		if (ev.type == TP_WS_EV_ERROR)
			break;
	}
	return k;
}

/* Reads stream[0, n) as it arrives in pieces: each read is appended to a
 * buffer of exactly the unconsumed bytes (so it moves, as a connection's
 * may), and the consumed bytes are dropped after each event. */
static size_t
read_pieces(tp_ws_reader *r, const uint8_t *stream, size_t n, uint16_t seed, seen *out)
{
	size_t k = 0, fed = 0, have = 0;
	uint8_t *buf = NULL;
	uint32_t x = seed | 1u;
	while (k < MAX_EVENTS && fed < n) {
		x = x * 1103515245u + 12345u;
		size_t piece = 1 + (x >> 16) % ((seed & 0x300) ? 200 : 7);
		if (piece > n - fed)
			piece = n - fed;
		uint8_t *nb = malloc(have + piece); /* the bytes kept, then the new */
		FUZZ_CHECK(nb);
		if (have)
			memcpy(nb, buf, have);
		memcpy(nb + have, stream + fed, piece);
		free(buf);
		buf = nb;
		have += piece;
		fed += piece;
		for (;;) {
			tp_ws_event ev;
			tp_ws_reader_next(r, buf, have, &ev);
			if (ev.type != TP_WS_EV_NEED_MORE) {
				record(r, &ev, &out[k++]);
				if (ev.type == TP_WS_EV_ERROR) {
					free(buf);
					return k;
				}
			}
			FUZZ_CHECK(ev.consumed <= have);
			memmove(buf, buf + ev.consumed, have - ev.consumed);
			have -= ev.consumed;
			if (ev.type == TP_WS_EV_NEED_MORE || k == MAX_EVENTS)
				break;
		}
	}
	free(buf);
	return k;
}

/* A message, sent again by a client (masked, in one frame), reads back the same. */
static void
round_trip(size_t max, const tp_ws_event *ev)
{
	static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
	size_t cap = ev->len + TP_WS_MAX_HEADER;
	uint8_t *frame = malloc(cap);
	FUZZ_CHECK(frame);
	size_t fl = tp_ws_frame_encode_masked(frame, cap, ev->opcode, 1, ev->data, ev->len, key);
	FUZZ_CHECK(fl <= cap);
	tp_ws_reader r;
	tp_ws_reader_init(&r, TP_WS_SERVER, max);
	tp_ws_event back;
	tp_ws_reader_next(&r, frame, fl, &back);
	FUZZ_CHECK(back.type == TP_WS_EV_MESSAGE && back.opcode == ev->opcode);
	FUZZ_CHECK(back.len == ev->len && back.consumed == fl);
	FUZZ_CHECK(ev->len == 0 || memcmp(back.data, ev->data, ev->len) == 0);
	tp_ws_reader_free(&r);
	free(frame);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	uint8_t cfg = fuzz_byte(&in);
	uint16_t seed = fuzz_u16(&in);
	tp_ws_role role = (cfg & 1) ? TP_WS_CLIENT : TP_WS_SERVER;
	size_t max = (cfg >> 1) ? (size_t)(cfg >> 1) * 5 : 0;

	/* UTF-8: fed in two pieces, the validator ends where it does whole. */
	size_t cut = in.n ? seed % (in.n + 1) : 0;
	uint32_t st = tp_ws_utf8_feed(TP_WS_UTF8_ACCEPT, in.p, cut);
	st = tp_ws_utf8_feed(st, in.p + cut, in.n - cut);
	FUZZ_CHECK((st == TP_WS_UTF8_ACCEPT) == (tp_ws_utf8_valid(in.p, in.n) == 1));
	FUZZ_CHECK((st == TP_WS_UTF8_REJECT) ==
	           (tp_ws_utf8_feed(TP_WS_UTF8_ACCEPT, in.p, in.n) == TP_WS_UTF8_REJECT));

	seen a[MAX_EVENTS], b[MAX_EVENTS];
	tp_ws_reader r;
	tp_ws_reader_init(&r, role, max);
	uint8_t *whole = fuzz_dup(in.p, in.n);
	size_t na = read_whole(&r, whole, in.n, a);
	tp_ws_reader_free(&r);
	free(whole);

	tp_ws_reader_init(&r, role, max);
	size_t nb = read_pieces(&r, in.p, in.n, seed, b);
	tp_ws_reader_free(&r);
	FUZZ_CHECK(na == nb);
	FUZZ_CHECK(memcmp(a, b, na * sizeof(seen)) == 0);

	/* Round trips of the messages (read again, whole). */
	tp_ws_reader_init(&r, role, max);
	whole = fuzz_dup(in.p, in.n);
	size_t off = 0;
	for (size_t k = 0; k < na; k++) {
		tp_ws_event ev;
		tp_ws_reader_next(&r, whole + off, in.n - off, &ev);
		off += ev.consumed;
		if (ev.type == TP_WS_EV_MESSAGE)
			round_trip(r.max_message, &ev);
		else if (ev.type == TP_WS_EV_CLOSE) {
			rt_buf *cb =
			    tp_ws_close_append(NULL, ev.code, (const char *)ev.data, ev.len);
			FUZZ_CHECK(cb && cb->len >= 2 && cb->len <= 127);
			rt_buf_release(cb);
		}
	}
	tp_ws_reader_free(&r);
	free(whole);
	return 0;
}
