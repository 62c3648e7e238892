/*
 * fuzz_serializer: the V1 and V2 decoders (channels/serializer.h), text and
 * binary frames.
 *
 * Input: [mode byte][frame...].  Mode bit 0: V1 or V2; bit 1: a binary
 * WebSocket frame.  The frame is decoded by ch_msg_decode and
 * ch_msg_decode_raw: what the strict one accepts the raw one accepts the
 * same.  A decoded message is encoded again (a V2 binary push rebuilt from
 * its fields; a text message by ch_encode_message) and decoded once more:
 * topic, event, refs and payload must come back the same.  The helpers that
 * read raw JSON tokens run over the frame too.
 */
#include "channels/serializer.h"
#include "fuzz/fuzz.h"

static bool
same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* A V2 binary push frame of m's fields, decoded again. */
static void
binary_round_trip(const ch_msg *m)
{
	char jr[512], ref[512];
	long jl = ch_ref_string(m->join_ref, jr, sizeof(jr));
	long rl = ch_ref_string(m->ref, ref, sizeof(ref));
	FUZZ_CHECK(jl >= 0 && jl <= 255 && rl >= 0 && rl <= 255);
	size_t tl = strlen(m->topic), el = strlen(m->event);
	FUZZ_CHECK(tl <= 255 && el <= 255);
	size_t n = 5 + (size_t)jl + (size_t)rl + tl + el + m->bin_len;
	uint8_t *f = malloc(n), *p = f;
	FUZZ_CHECK(f);
	*p++ = 0;
	*p++ = (uint8_t)jl;
	*p++ = (uint8_t)rl;
	*p++ = (uint8_t)tl;
	*p++ = (uint8_t)el;
	memcpy(p, jr, (size_t)jl), p += jl;
	memcpy(p, ref, (size_t)rl), p += rl;
	memcpy(p, m->topic, tl), p += tl;
	memcpy(p, m->event, el), p += el;
	if (m->bin_len)
		memcpy(p, m->bin, m->bin_len);
	ch_msg back;
	FUZZ_CHECK(ch_msg_decode(CH_VSN_2, 1, f, n, &back, NULL) == 0);
	FUZZ_CHECK(ch_ref_equal(m->join_ref, back.join_ref) && ch_ref_equal(m->ref, back.ref));
	FUZZ_CHECK(strcmp(m->topic, back.topic) == 0 && strcmp(m->event, back.event) == 0);
	FUZZ_CHECK(back.bin_len == m->bin_len);
	FUZZ_CHECK(m->bin_len == 0 || memcmp(back.bin, m->bin, m->bin_len) == 0);
	ch_msg_free(&back);
	free(f);
}

/* m encoded as a text frame by the server's encoder, decoded again. */
static void
text_round_trip(int vsn, const ch_msg *m)
{
	rt_buf *b = NULL;
	int fr = ch_encode_message(&b, vsn, m->join_ref, m->ref, m->topic, m->event,
	                           m->payload_json, m->payload_json_len);
	if (fr < 0) { /* V2 pushes carry objects only */
		FUZZ_CHECK(vsn == CH_VSN_2 && !cJSON_IsObject(m->payload));
		rt_buf_release(b);
		return;
	}
	FUZZ_CHECK(fr == CH_FRAME_TEXT);
	ch_msg back;
	FUZZ_CHECK(ch_msg_decode(vsn, 0, b->data, b->len, &back, NULL) == 0);
	FUZZ_CHECK(strcmp(m->topic, back.topic) == 0 && strcmp(m->event, back.event) == 0);
	FUZZ_CHECK(ch_ref_equal(m->ref, back.ref));
	if (vsn == CH_VSN_2)
		FUZZ_CHECK(ch_ref_equal(m->join_ref, back.join_ref));
	/* Printed, not cJSON_Compare: that one finds the first of duplicate keys only. */
	char *pa = cJSON_PrintUnformatted(m->payload), *pb = cJSON_PrintUnformatted(back.payload);
	FUZZ_CHECK(pa && pb && strcmp(pa, pb) == 0);
	cJSON_free(pa);
	cJSON_free(pb);
	ch_msg_free(&back);
	rt_buf_release(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	uint8_t mode = fuzz_byte(&in);
	int vsn = (mode & 1) ? CH_VSN_2 : CH_VSN_1;
	int bin = (mode >> 1) & 1;
	uint8_t *frame = fuzz_dup(in.p, in.n);

	ch_msg m, raw;
	const char *err = NULL, *rerr = NULL;
	int r = ch_msg_decode(vsn, bin, frame, in.n, &m, &err);
	int rr = ch_msg_decode_raw(vsn, bin, frame, in.n, &raw, &rerr);
	FUZZ_CHECK(r == 0 ? err == NULL : (err != NULL && m.mem_ == NULL));
	FUZZ_CHECK(rr == 0 ? rerr == NULL : rerr != NULL);
	if (r == 0) {
		FUZZ_CHECK(rr == 0);
		FUZZ_CHECK(same_str(m.topic, raw.topic) && same_str(m.event, raw.event));
		FUZZ_CHECK(same_str(m.ref, raw.ref) && same_str(m.join_ref, raw.join_ref));
		FUZZ_CHECK(m.payload_json_len == raw.payload_json_len);
		FUZZ_CHECK(same_str(m.payload_json, raw.payload_json));
		FUZZ_CHECK(m.ref != NULL && m.topic && m.event);
		if (m.bin)
			binary_round_trip(&m);
		else
			text_round_trip(vsn, &m);
	}
	if (rr == 0 && raw.topic_raw)
		FUZZ_CHECK(raw.topic == NULL);
	ch_msg_free(&m);
	ch_msg_free(&raw);

	/* The raw-token helpers, over the frame as a NUL-terminated token. */
	char *tok = malloc(in.n + 1);
	FUZZ_CHECK(tok);
	memcpy(tok, in.p, in.n);
	tok[in.n] = '\0';
	char out[64];
	long sl = ch_ref_string(tok, out, sizeof(out));
	FUZZ_CHECK(sl < (long)sizeof(out));
	(void)ch_ref_is_null(tok);
	(void)ch_json_interpolable(tok);
	FUZZ_CHECK(ch_ref_equal(tok, tok));
	(void)ch_json_valid((const char *)frame, in.n);
	free(tok);
	free(frame);
	return 0;
}
