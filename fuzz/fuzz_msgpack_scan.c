/*
 * fuzz_msgpack_scan: the check every msgpack body from another node passes
 * before msgpack-c unpacks it (cluster/cluster.h: cl_msgpack_scan).
 * Input: the body.  When the scan says yes, msgpack-c's unpack of it must
 * succeed and consume exactly the whole body (that is what the scan is
 * for: the callers then unpack, and msgpack-c's allocations stay bounded by
 * the body's size).  The other way round is not checked: unpacking what the
 * scan refuses may ask for gigabytes.
 */
#include <msgpack.h>

#include "cluster/cluster.h"
#include "fuzz/fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *body = fuzz_dup(data, size);
	if (cl_msgpack_scan(body, size)) {
		msgpack_unpacked u;
		msgpack_unpacked_init(&u);
		size_t off = 0;
		msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)body, size, &off);
		FUZZ_CHECK(r == MSGPACK_UNPACK_SUCCESS);
		FUZZ_CHECK(off == size);
		msgpack_unpacked_destroy(&u);
	}
	free(body);
	return 0;
}
