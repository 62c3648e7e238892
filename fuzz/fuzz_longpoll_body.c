/*
 * fuzz_longpoll_body: long-poll POST bodies (transports/longpoll.h:
 * lp_pack_body).  Input: [mode byte][body...]; mode bit 0: the body is
 * ndjson.  The packed messages are read back and compared with the body's
 * lines, split here on their own: a text line comes back as it is, a binary
 * one as the bytes whose base64 is exactly the line (the decoding is
 * strict, so the encoding is unique); lines past the batch limit are
 * counted, not packed.
 */
#include "channels/b64.h"
#include "fuzz/fuzz.h"
#include "transports/longpoll.h"

/* Reads the next packed message at *pos of b. */
static bool
next_msg(const rt_buf *b, size_t *pos, const uint8_t **p, uint32_t *len, bool *binary)
{
	if (*pos == b->len)
		return false;
	FUZZ_CHECK(b->len - *pos >= LP_PACK_HDR);
	memcpy(len, b->data + *pos, 4);
	uint8_t kind = b->data[*pos + 4];
	FUZZ_CHECK(kind == 0 || kind == 1);
	*binary = kind == 1;
	*pos += LP_PACK_HDR;
	FUZZ_CHECK(b->len - *pos >= *len);
	*p = b->data + *pos;
	*pos += *len;
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	bool ndjson = fuzz_byte(&in) & 1;
	uint8_t *body = in.n ? fuzz_dup(in.p, in.n) : NULL;
	uint64_t ignored = 99;
	rt_buf *b = lp_pack_body(body, in.n, ndjson, &ignored);
	if (!b) { /* only a line that is not base64 refuses a body */
		FUZZ_CHECK(ndjson);
		free(body);
		return 0;
	}
	size_t pos = 0;
	const uint8_t *m;
	uint32_t ml;
	bool binary;
	if (!ndjson) {
		FUZZ_CHECK(ignored == 0);
		FUZZ_CHECK(next_msg(b, &pos, &m, &ml, &binary) && !binary && ml == in.n);
		FUZZ_CHECK(in.n == 0 || memcmp(m, body, in.n) == 0);
		FUZZ_CHECK(!next_msg(b, &pos, &m, &ml, &binary));
	} else {
		size_t at = 0, lines = 0;
		uint64_t past = 0;
		for (;;) {
			const uint8_t *nl = at < in.n ? memchr(body + at, '\n', in.n - at) : NULL;
			size_t end = nl ? (size_t)(nl - body) : in.n, len = end - at;
			if (nl && len && body[end - 1] == '\r')
				len--;
			if (lines == LP_MAX_BATCH)
				past++;
			else {
				lines++;
				if (len) {
					FUZZ_CHECK(next_msg(b, &pos, &m, &ml, &binary));
					FUZZ_CHECK(binary == (body[at] != '['));
					if (!binary) {
						FUZZ_CHECK(ml == len &&
						           memcmp(m, body + at, len) == 0);
					} else {
						char *enc = malloc(CH_B64_LEN(ml) + 1);
						FUZZ_CHECK(enc);
						FUZZ_CHECK(ch_b64_encode(m, ml, enc) == len);
						FUZZ_CHECK(memcmp(enc, body + at, len) == 0);
						free(enc);
					}
				}
			}
			if (!nl)
				break;
			at = end + 1;
		}
		FUZZ_CHECK(!next_msg(b, &pos, &m, &ml, &binary));
		FUZZ_CHECK(ignored == past);
	}
	rt_buf_release(b);
	free(body);
	return 0;
}
