/*
 * tp_ws: a pure RFC 6455 WebSocket codec.
 *
 * No I/O, no threads, no global state.  Pieces:
 *   - opening handshake: validation of the client's upgrade request (a parsed
 *     tp_http_request) and the 101 response with Sec-WebSocket-Accept;
 *   - tp_ws_reader: the incremental frame parser plus message reassembly that
 *     a connection owns; it turns received bytes into events (message, ping,
 *     pong, close, protocol error with the close code to send);
 *   - encoders for server frames (unmasked) and client frames (masked);
 *   - a strict UTF-8 validator (whole buffer or incremental) and close-payload
 *     parsing.
 *
 * Byte ownership with tp_ws_reader_next: the connection keeps one contiguous
 * input buffer.  Each call looks at in[0, len), may unmask frame payloads in
 * place, and reports ev.consumed: those bytes are done with, whatever the
 * event.  Event data points either into in[0, ev.consumed) (unfragmented
 * messages, ping/pong payloads, close reasons: zero-copy) or into the reader's
 * own message buffer (reassembled fragments); it stays valid until the next
 * tp_ws_reader_next call and as long as the caller has not overwritten those
 * input bytes.  So: handle the event, then drop ev.consumed bytes, then call
 * again with the rest.  A frame is only processed once all of it is in the
 * input; ev.need says how many bytes (from in + ev.consumed) that takes.
 */
#ifndef transports_ws_h
#define transports_ws_h

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "channels/transport.h"
#include "runtime/buf.h"
#include "runtime/utf8.h"
#include "transports/http.h"

/* Frame opcodes. */
typedef enum tp_ws_opcode {
	TP_WS_OP_CONT = 0x0,
	TP_WS_OP_TEXT = 0x1,
	TP_WS_OP_BINARY = 0x2,
	TP_WS_OP_CLOSE = 0x8,
	TP_WS_OP_PING = 0x9,
	TP_WS_OP_PONG = 0xA,
} tp_ws_opcode;

/* Close codes: ch_close_code (channels/transport.h), e.g. CH_CLOSE_PROTOCOL_ERROR;
 * an empty close payload is reported as CH_CLOSE_NO_STATUS. */

/* Default tp_ws_reader message limit (used when 0 is passed). */
#define TP_WS_DEFAULT_MAX_MESSAGE (1024 * 1024)

/* Longest frame header: 2 + 8 (64-bit length) + 4 (mask key). */
#define TP_WS_MAX_HEADER 14

/* ---- opening handshake ---- */

/*
 * Computes Sec-WebSocket-Accept for the client key key[0, len):
 * base64(SHA1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), 28 characters
 * and a NUL into out.  Returns 0, or -1 if the digest failed (out is then "").
 */
int tp_ws_accept_key(const char *key, size_t len, char out[29]);

/*
 * Checks the upgrade headers of req as Phoenix (WebSockAdapter and Bandit)
 * does, in its order: HTTP/1.1, GET, a Host header, a Connection header with
 * the token "upgrade", an Upgrade header with the token "websocket" (tokens
 * of comma-separated lists, case-insensitive), a Sec-WebSocket-Key header (any
 * value: Bandit does not check its form) and exactly one Sec-WebSocket-Version
 * equal to "13"; and, beyond Bandit, that the key is given only once.
 * Returns 0 when valid, else 400 with WebSockAdapter's message in why[0, cap)
 * (NUL-terminated, cut to fit; e.g. "'sec-websocket-version' header must
 * equal '13', got [\"8\"]"), the body Phoenix answers with.  why may be NULL
 * when cap is 0.
 */
int tp_ws_check_upgrade(const tp_http_request *req, char *why, size_t cap);

/*
 * Appends the 101 response head for the client key key[0, keylen) to b (b
 * NULL: a new buffer): Upgrade: websocket, Connection: Upgrade,
 * Sec-WebSocket-Accept, and Sec-WebSocket-Protocol when protocol is not NULL.
 * protocol must be a token of at most 128 characters; otherwise it is left
 * out.  Returns the possibly moved buffer.
 */
rt_buf *tp_ws_handshake_append(rt_buf *b, const char *key, size_t keylen, const char *protocol);

/*
 * Writes the same 101 head into out[0, cap) with a NUL after it.  Returns its
 * length (without the NUL), or -1 when it does not fit or protocol is invalid.
 */
ssize_t tp_ws_handshake_write(char *out, size_t cap, const char *key, size_t keylen,
                              const char *protocol);

/* ---- UTF-8 ---- */

/* Incremental UTF-8 validator states; any other value is "inside a sequence".
 * These are runtime/utf8.h's validator and states, under the codec's names. */
#define TP_WS_UTF8_ACCEPT RT_UTF8_ACCEPT
#define TP_WS_UTF8_REJECT RT_UTF8_REJECT

/*
 * Feeds p[0, n) to the strict UTF-8 validator in state (start with
 * TP_WS_UTF8_ACCEPT) and returns the new state: TP_WS_UTF8_REJECT as soon as
 * an invalid byte is seen (sticky; overlongs, surrogates U+D800..DFFF and code
 * points above U+10FFFF are invalid), TP_WS_UTF8_ACCEPT when the input so far
 * ends on a code point boundary, another value when it ends inside one.
 */
uint32_t tp_ws_utf8_feed(uint32_t state, const uint8_t *p, size_t n);

/* 1 when p[0, n) is complete, strictly valid UTF-8, else 0. */
int tp_ws_utf8_valid(const uint8_t *p, size_t n);

/* ---- close frames ---- */

/* 1 when code may appear in a close frame: 1000-1003, 1007-1014, 3000-4999. */
int tp_ws_close_code_ok(int code);

/*
 * Parses a close payload p[0, n).  Empty: *code = 1005 and no reason.
 * Otherwise a 2-byte code and a UTF-8 reason (*reason points into p).
 * Returns 0 when valid, else the close code to fail with: 1002 for a 1-byte
 * or over-125-byte payload or a code not allowed on the wire, 1007 for a
 * reason that is not valid UTF-8.
 */
int tp_ws_parse_close(const uint8_t *p, size_t n, int *code, const uint8_t **reason,
                      size_t *reason_len);

/* ---- frame headers ---- */

/* A decoded frame header. */
typedef struct tp_ws_frame {
	int fin;              /* 1 on the last frame of a message */
	int rsv;              /* RSV1..3 as bits 2..0 */
	int opcode;           /* 0..15 as sent */
	int masked;           /* 1 when a masking key follows the length */
	uint8_t mask[4];      /* the masking key when masked */
	uint64_t payload_len; /* announced payload length */
	size_t header_len;    /* 2..14 */
} tp_ws_frame;

/*
 * Decodes a frame header from p[0, n), whatever the role.  Returns the header
 * length (2..14) with f filled; 0 when more bytes are needed (*need, when not
 * NULL, is then the header length required: 2, or the full length once the
 * first two bytes are known); -1 when a 64-bit length has its high bit set.
 * Does not judge opcodes, RSV bits or masking; tp_ws_reader does.
 */
int tp_ws_frame_parse_header(const uint8_t *p, size_t n, tp_ws_frame *f, size_t *need);

/*
 * XORs p[0, n) in place with the masking key; offset is the position of p[0]
 * within the payload (0 for a whole payload).
 */
void tp_ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], size_t offset);

/* ---- reader: frame parser and message reassembly ---- */

/* Which side the reader is on. */
typedef enum tp_ws_role {
	TP_WS_SERVER = 0, /* reads client frames: every frame must be masked */
	TP_WS_CLIENT,     /* reads server frames: no frame may be masked */
} tp_ws_role;

/*
 * Reader state, owned by one connection.  Fields are private; use the
 * functions below.  Not thread-safe (one reader per connection).
 */
typedef struct tp_ws_reader {
	size_t max_message; /* cap on a message (sum of its fragments) */
	tp_ws_role role;
	int msg_opcode; /* opcode of the fragmented message in progress, 0: none */
	uint32_t utf8;  /* validator state across text fragments */
	uint8_t *msg;   /* reassembly buffer (malloc), msg_cap bytes */
	size_t msg_len, msg_cap;
	int delivered; /* msg was handed out by the last call; reset on the next */
	int error;     /* close code of a protocol error (sticky), 0: none */
	const char *error_msg;
} tp_ws_reader;

/* What tp_ws_reader_next found. */
typedef enum tp_ws_event_type {
	TP_WS_EV_NEED_MORE = 0, /* no complete event yet: read more (ev.need) */
	TP_WS_EV_MESSAGE,       /* a whole data message: opcode, data, len */
	TP_WS_EV_PING,          /* data, len: the payload to echo in a pong */
	TP_WS_EV_PONG,          /* data, len */
	TP_WS_EV_CLOSE,         /* code (1005 when the payload was empty), data/len: reason */
	TP_WS_EV_ERROR,         /* protocol error: code is the close code, error a description */
} tp_ws_event_type;

/* One event.  data may be NULL when len is 0. */
typedef struct tp_ws_event {
	tp_ws_event_type type;
	int opcode;          /* MESSAGE: TP_WS_OP_TEXT or TP_WS_OP_BINARY */
	const uint8_t *data; /* payload / message / close reason */
	size_t len;
	int code;          /* CLOSE: received code; ERROR: close code to send */
	const char *error; /* ERROR: short static description for logs */
	size_t consumed;   /* input bytes done with (for every event type) */
	size_t need;       /* NEED_MORE: bytes needed from in + consumed to progress */
} tp_ws_event;

/*
 * Initialises r for role with a message limit of max_message bytes (0: the
 * default).  Owns no memory until the first fragmented message.
 */
void tp_ws_reader_init(tp_ws_reader *r, tp_ws_role role, size_t max_message);

/* Frees the reader's buffer; r may be initialised again afterwards. */
void tp_ws_reader_free(tp_ws_reader *r);

/*
 * Parses in[0, len) and returns the next event (also in ev->type).  Data
 * fragments are absorbed into the reassembly buffer without an event; control
 * frames between fragments are reported without disturbing reassembly.
 * Protocol errors are detected as early as possible: everything knowable from
 * a frame header (bad RSV bits, unknown opcode, masking, control frame too
 * long or fragmented, continuation out of place, message over max_message ->
 * 1009) is reported before its payload arrives; invalid UTF-8 in a text
 * fragment is reported when that fragment arrives (1007).  After an error the
 * reader keeps returning it (consumed 0): send a close with ev->code and
 * close the connection.  See the top of this file for byte ownership.
 */
tp_ws_event_type tp_ws_reader_next(tp_ws_reader *r, uint8_t *in, size_t len, tp_ws_event *ev);

/* ---- encoders ---- */

/*
 * Writes an unmasked (server role) frame header for opcode, fin and
 * payload_len (< 2^63) into out and returns its length: 2, 4 (126..65535) or
 * 10.
 */
size_t tp_ws_frame_header(uint8_t out[10], int opcode, int fin, uint64_t payload_len);

/*
 * Appends a whole unmasked frame (FIN set) to b (b NULL: a new buffer) and
 * returns the possibly moved buffer.  For control opcodes (close, ping, pong)
 * the payload is truncated to 125 bytes.
 */
rt_buf *tp_ws_frame_append(rt_buf *b, int opcode, const void *payload, size_t len);

/*
 * Appends an unmasked close frame to b (b NULL: a new buffer): the 2-byte
 * code and the reason, truncated on a UTF-8 character boundary so that the
 * payload is at most 125 bytes.  A code that may not be sent
 * (!tp_ws_close_code_ok, e.g. 0 or 1005) gives an empty payload.
 */
rt_buf *tp_ws_close_append(rt_buf *b, int code, const char *reason, size_t reason_len);

/*
 * Client role: encodes a masked frame (opcode, fin, payload p[0, n), masking
 * key key) into out[0, cap).  Returns the frame length; the frame is written
 * only when that is <= cap (otherwise nothing is written).
 */
size_t tp_ws_frame_encode_masked(uint8_t *out, size_t cap, int opcode, int fin, const void *p,
                                 size_t n, const uint8_t key[4]);

#endif /* transports_ws_h */
