/*
 * fuzz_longpoll_remote: the frames of long polling across nodes
 * (transports/longpoll.h: lp_remote_parse, the pure part of the
 * CL_SVC_LONGPOLL handler; the rest of the handler looks sessions up and
 * sends messages, so it is not fuzzed here).  Input: a frame body.  A
 * request frame that parses has its messages packed for the session
 * (lp_remote_pack), and they must read back as the frame's strs and bins.
 */
#include <msgpack.h>

#include "fuzz/fuzz.h"
#include "transports/longpoll.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *body = fuzz_dup(data, size);
	msgpack_unpacked u;
	const char *bad = lp_remote_parse(body, size, &u);
	if (!bad) {
		FUZZ_CHECK(u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size >= 2);
		const msgpack_object *f = u.data.via.array.ptr;
		if (f[0].via.u64 == 1 && f[1].via.u64 == 2) { /* a POST's messages */
			const msgpack_object_array *a = &f[4].via.array;
			FUZZ_CHECK(a->size <= LP_MAX_BATCH);
			rt_buf *b = lp_remote_pack(&f[4]);
			size_t pos = 0;
			for (uint32_t i = 0; i < a->size; i++) {
				const msgpack_object *m = &a->ptr[i];
				bool bin = m->type == MSGPACK_OBJECT_BIN;
				uint32_t want = bin ? m->via.bin.size : m->via.str.size, len;
				const char *bytes = bin ? m->via.bin.ptr : m->via.str.ptr;
				FUZZ_CHECK(b->len - pos >= LP_PACK_HDR);
				memcpy(&len, b->data + pos, 4);
				FUZZ_CHECK(len == want && b->data[pos + 4] == bin);
				pos += LP_PACK_HDR;
				FUZZ_CHECK(b->len - pos >= len);
				FUZZ_CHECK(len == 0 || memcmp(b->data + pos, bytes, len) == 0);
				pos += len;
			}
			FUZZ_CHECK(pos == b->len);
			rt_buf_release(b);
		}
	}
	msgpack_unpacked_destroy(&u);
	free(body);
	return 0;
}
