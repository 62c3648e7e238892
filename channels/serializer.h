/*
 * Phoenix's socket serializers, wire-compatible with Phoenix 1.7:
 *
 *   V1 ("vsn=1.0.0", Phoenix.Socket.V1.JSONSerializer): one JSON object per
 *   text frame, {"topic", "event", "payload", "ref"} (+ "join_ref" when the
 *   client sends it; never sent back).
 *
 *   V2 ("vsn=2.0.0", Phoenix.Socket.V2.JSONSerializer, phoenix.js's default):
 *   text frames are JSON arrays [join_ref, ref, topic, event, payload]; binary
 *   payloads travel in binary frames:
 *     client push   <<0, len(join_ref), len(ref), len(topic), len(event),
 *                     join_ref, ref, topic, event, data>>
 *     server push   <<0, len(join_ref), len(topic), len(event), join_ref, topic, event, data>>
 *     reply         <<1, len(join_ref), len(ref), len(topic), len(status),
 *                     join_ref, ref, topic, status, data>>
 *     broadcast     <<2, len(topic), len(event), topic, event, data>>
 *   Each length is one byte: a field over 255 bytes cannot be encoded
 *   (Phoenix raises ArgumentError; the encoders here return -1).
 *
 * Refs (join_ref, ref) may be any JSON value: phoenix.js sends strings, other
 * clients numbers or null, and replies must echo them exactly as received.  So
 * a ref is kept as its raw JSON token text ("\"12\"", "12", "null") and spliced
 * back verbatim.  In binary frames a ref is a byte string (Elixir's
 * to_string(ref)): see ch_ref_string.  A ref from a binary push is stored as
 * the JSON string token of its bytes, which is what Phoenix echoes in a text
 * reply to it.
 *
 * Payloads are passed to encoders as raw JSON text already encoded (so a
 * broadcast payload is encoded once and spliced into every frame); NULL means
 * "{}".  JSON strings written here (topic, event, status) are escaped the way
 * Jason does by default: '"', '\\' and control characters only (\b \t \n \f \r,
 * else \u00XX in capitals); "/" and non-ASCII pass through; invalid UTF-8 is an
 * error, as in Jason.
 *
 * Thread-safety: no shared state; every function is reentrant.
 */
#ifndef channels_serializer_h
#define channels_serializer_h

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/buf.h"

/* Serializer versions, as negotiated by the "vsn" connect parameter. */
#define CH_VSN_1 1 /* vsn 1.x, and no vsn at all */
#define CH_VSN_2 2 /* vsn 2.x */

/* Nesting limit of JSON accepted by ch_msg_decode (the frame's own array or object counts). */
#define CH_JSON_MAX_DEPTH 512

/* The kind of WebSocket frame an encoder produced (its return value). */
typedef enum ch_frame {
	CH_FRAME_TEXT = 1,
	CH_FRAME_BINARY = 2,
} ch_frame;

/*
 * A decoded client message.  All strings are NUL-terminated and owned by the
 * message (one allocation; do not free fields individually).  payload may be
 * taken over by the caller: set m->payload = NULL before ch_msg_free.
 * Owned by the decoder's caller (one thread: the socket's transport process).
 */
typedef struct ch_msg {
	char *join_ref;          /* raw JSON token ("\"3\"", "3", "null"), NULL when absent (V1) */
	char *ref;               /* raw JSON token, as join_ref (always present) */
	char *topic;             /* decoded UTF-8, no NUL inside; NULL when topic_raw is set */
	char *event;             /* decoded UTF-8, no NUL inside; NULL when event_raw is set */
	char *topic_raw;         /* ch_msg_decode_raw only: the topic's raw JSON token when it */
	char *event_raw;         /* (the event's) is not a string without NUL, else NULL */
	cJSON *payload;          /* parsed payload (any JSON value); NULL for a binary payload */
	char *payload_json;      /* the payload's JSON text as received; NULL for binary */
	size_t payload_json_len; /* its length */
	uint8_t *bin;            /* binary payload (V2 binary push; non-NULL even when empty) */
	size_t bin_len;          /* its length */
	void *mem_;              /* private: the allocation behind the strings */
} ch_msg;

/*
 * Decodes one frame as Phoenix's serializer decode! would.  vsn: CH_VSN_1 or
 * CH_VSN_2; is_binary_frame: the WebSocket opcode was binary.  Returns 0 with
 * *out filled (free it with ch_msg_free), or -1 (with *err set to a static description when err is
 * not NULL, and *out zeroed) for anything Phoenix could not decode (its process would crash and the
 * socket close with 1011).  Strict and bounded: any input gives a clean result.
 *
 * V2 text: a JSON array of at least five elements (extra ones are ignored, as
 * Phoenix matches [join_ref, ref, topic, event, payload | _]); the payload may
 * be any JSON value.  V2 binary: a push (kind 0) frame; other kinds are refused.
 * V1: a JSON object with "topic", "event", "payload" and "ref" (any value,
 * null included) and an optional "join_ref"; for duplicate keys the last one
 * wins.  Phoenix's V1 serializer ignores the opcode, so a V1 binary frame is
 * decoded as JSON text too.  Stricter than Phoenix: topic and event must be
 * strings (without NUL; ch_msg_decode_raw lets other values through), and in binary frames
 * join_ref, ref, topic and event must be valid UTF-8.  The payload must also be parseable by cJSON
 * (nesting under CH_JSON_MAX_DEPTH, numbers under 64 characters).
 */
int ch_msg_decode(int vsn, int is_binary_frame, const uint8_t *data, size_t len, ch_msg *out,
                  const char **err);

/* The same, without building the payload's cJSON tree (payload stays NULL;
 * payload_json is validated JSON text): for the socket, which only routes the
 * message and hands the text to the channel process.  Unlike ch_msg_decode,
 * and like Phoenix's serializers, topic and event of text frames may be any
 * JSON value: one that is not a string without NUL is kept as its raw JSON
 * token in topic_raw / event_raw, and topic / event are NULL then. */
int ch_msg_decode_raw(int vsn, int is_binary_frame, const uint8_t *data, size_t len, ch_msg *out,
                      const char **err);

/* Frees what ch_msg_decode allocated and zeroes *m.  NULL and zeroed messages are fine. */
void ch_msg_free(ch_msg *m);

/* 1 when the raw ref is absent (NULL) or JSON null, else 0. */
int ch_ref_is_null(const char *raw);

/*
 * A ref's value as a byte string, as Elixir's to_string(ref) (what binary
 * frames carry and a convenient map key): a JSON string gives its decoded
 * contents, null/absent gives "", a number/true/false gives its raw text.
 * Writes it and a NUL into out; returns its length, or -1 when it does not fit
 * in cap bytes or the ref is an array/object (which Phoenix cannot convert).
 */
long ch_ref_string(const char *raw, char *out, size_t cap);

/*
 * 1 when two raw refs denote the same value: both null/absent, both strings
 * with the same decoded contents, or otherwise identical token texts.
 */
int ch_ref_equal(const char *a, const char *b);

/*
 * 1 when text[0, len) is one JSON value with nothing around it but
 * whitespace, within the limits the serializers apply to clients' frames
 * (nesting under CH_JSON_MAX_DEPTH, numbers under 64 characters, UTF-8
 * strings); 0 otherwise.  Allocates nothing.
 */
int ch_json_valid(const char *text, size_t len);

/*
 * Appends the n bytes at s as a JSON string (quotes included), escaped as
 * Jason does.  *b may be NULL (a buffer is allocated).  Returns 0, or -1 when
 * s is not valid UTF-8 (nothing appended).
 */
int ch_json_append_string(rt_buf **b, const char *s, size_t n);

/*
 * Encoders.  Each appends one frame to *b (allocating it when *b is NULL; the
 * buffer may move) and returns CH_FRAME_TEXT or CH_FRAME_BINARY, or -1 with *b
 * unchanged in length when Phoenix could not encode it either: V1 with a
 * binary payload, a binary-frame field over 255 bytes, a V2 push/broadcast
 * payload that is not a JSON object, invalid UTF-8 in topic/event/status, an
 * array/object ref in a binary frame, vsn not CH_VSN_1 or CH_VSN_2.  join_ref /
 * ref are raw JSON tokens (NULL = null); payload texts are trusted to be
 * valid JSON.
 */

/*
 * A reply (%Phoenix.Socket.Reply{}): status is "ok" or "error" (any string),
 * response the payload's JSON text (NULL = {}; any JSON value).
 *   V2: [join_ref,ref,topic,"phx_reply",{"status":status,"response":response}]
 *   V1: {"topic":topic,"event":"phx_reply","payload":{"status":..,"response":..},"ref":ref}
 */
int ch_encode_reply(rt_buf **b, int vsn, const char *join_ref, const char *ref, const char *topic,
                    const char *status, const char *response, size_t response_len);

/*
 * ch_encode_reply with the topic given as a raw JSON token (any JSON value,
 * spliced verbatim): the socket's answer to a message whose topic is not a
 * string, which Phoenix echoes as it decoded it.
 */
int ch_encode_reply_raw_topic(rt_buf **b, int vsn, const char *join_ref, const char *ref,
                              const char *topic_json, const char *status, const char *response,
                              size_t response_len);

/*
 * 1 when Elixir's to_string/1 (string interpolation) accepts the value of the
 * raw JSON token: a string, number, true, false, null, or a list that is
 * chardata (nested lists of strings and integer code points 0..0x10FFFF other
 * than surrogates).  0 for objects and other lists, which make it raise.
 */
int ch_json_interpolable(const char *raw);

/* A reply with a binary response: the V2 reply frame (kind 1); V1 cannot (-1). */
int ch_encode_reply_bin(rt_buf **b, int vsn, const char *join_ref, const char *ref,
                        const char *topic, const char *status, const void *data, size_t len);

/*
 * A message from the channel process (%Phoenix.Socket.Message{}).  A push is
 * (join_ref, NULL ref): [join_ref,null,topic,event,payload]; phx_error and
 * phx_close use ref = join_ref.  V2 requires a JSON object payload.
 *   V1: {"topic":topic,"event":event,"payload":payload,"ref":ref} (no join_ref)
 */
int ch_encode_message(rt_buf **b, int vsn, const char *join_ref, const char *ref, const char *topic,
                      const char *event, const char *payload, size_t payload_len);

/*
 * A message with a binary payload: the V2 server push frame (kind 0; it has
 * no ref field); V1 cannot (-1).
 */
int ch_encode_message_bin(rt_buf **b, int vsn, const char *join_ref, const char *topic,
                          const char *event, const void *data, size_t len);

/*
 * A fastlane broadcast (%Phoenix.Socket.Broadcast{}), the same frame for every
 * subscriber.  V2: [null,null,topic,event,payload] (payload must be a JSON
 * object); V1: {"topic":..,"event":..,"payload":..,"ref":null}.
 */
int ch_encode_broadcast(rt_buf **b, int vsn, const char *topic, const char *event,
                        const char *payload, size_t payload_len);

/* A broadcast with a binary payload: the V2 broadcast frame (kind 2); V1 cannot (-1). */
int ch_encode_broadcast_bin(rt_buf **b, int vsn, const char *topic, const char *event,
                            const void *data, size_t len);

/*
 * The same encoders taking a cJSON value (NULL = {}), printed unformatted by
 * cJSON (so numbers and escapes are cJSON's, not Jason's: e.g. 1.0 prints as 1).
 */
int ch_encode_reply_cjson(rt_buf **b, int vsn, const char *join_ref, const char *ref,
                          const char *topic, const char *status, const cJSON *response);
int ch_encode_message_cjson(rt_buf **b, int vsn, const char *join_ref, const char *ref,
                            const char *topic, const char *event, const cJSON *payload);
int ch_encode_broadcast_cjson(rt_buf **b, int vsn, const char *topic, const char *event,
                              const cJSON *payload);

#endif /* channels_serializer_h */
