/*
 * msgpack_scan.c: the check every msgpack body from another node passes
 * before msgpack-c unpacks it (cluster.h: cl_msgpack_scan).
 *
 * msgpack-c allocates a container's elements from the count in its header,
 * so a 5-byte array header claiming 2^32 elements would make it ask for
 * 100 GB.  The scan walks the raw bytes once, allocating nothing: exactly
 * one well-formed object, every length within the bytes present, and every
 * container's count bounded by the bytes that follow it (each element takes
 * at least one byte), so what msgpack-c then allocates is bounded by a
 * small multiple of the frame's size.  Nesting is bounded by msgpack-c's
 * own limit (MSGPACK_EMBED_STACK_SIZE open containers; its unpacker fails
 * past it), so that what the scan accepts msgpack-c unpacks.
 */
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"

/* Reads a k-byte big-endian unsigned at p[*pos], if there. */
static bool
rd_be(const uint8_t *p, size_t len, size_t *pos, int k, uint64_t *out)
{
	if ((size_t)k > len - *pos)
		return false;
	uint64_t v = 0;
	for (int i = 0; i < k; i++)
		v = v << 8 | p[*pos + (size_t)i];
	*pos += (size_t)k;
	*out = v;
	return true;
}

bool
cl_msgpack_scan(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t pos = 0, depth = 0;
	uint64_t pending = 0;                    /* elements not yet begun, all levels */
	uint64_t left[MSGPACK_EMBED_STACK_SIZE]; /* per open container, innermost last */
	for (;;) {
		if (pos >= len)
			return false;
		if (depth)
			pending--; /* this object is one of them */
		uint8_t b = p[pos++];
		uint64_t skip = 0, items = 0, v;
		bool container = false;
		if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
			;
		else if ((b & 0xf0) == 0x80)
			items = 2u * (b & 0x0f), container = true;
		else if ((b & 0xf0) == 0x90)
			items = b & 0x0f, container = true;
		else if ((b & 0xe0) == 0xa0)
			skip = b & 0x1f;
		else {
			switch (b) {
			case 0xc4: /* bin 8, 16, 32 */
			case 0xd9: /* str 8, 16, 32 */
				if (!rd_be(p, len, &pos, 1, &skip))
					return false;
				break;
			case 0xc5:
			case 0xda:
				if (!rd_be(p, len, &pos, 2, &skip))
					return false;
				break;
			case 0xc6:
			case 0xdb:
				if (!rd_be(p, len, &pos, 4, &skip))
					return false;
				break;
			case 0xc7: /* ext 8, 16, 32: a type byte, then the data */
				if (!rd_be(p, len, &pos, 1, &v))
					return false;
				skip = v + 1;
				break;
			case 0xc8:
				if (!rd_be(p, len, &pos, 2, &v))
					return false;
				skip = v + 1;
				break;
			case 0xc9:
				if (!rd_be(p, len, &pos, 4, &v))
					return false;
				skip = v + 1;
				break;
			case 0xca:
				skip = 4;
				break;
			case 0xcb:
				skip = 8;
				break;
			case 0xcc:
			case 0xd0:
				skip = 1;
				break;
			case 0xcd:
			case 0xd1:
				skip = 2;
				break;
			case 0xce:
			case 0xd2:
				skip = 4;
				break;
			case 0xcf:
			case 0xd3:
				skip = 8;
				break;
			case 0xd4: /* fixext 1, 2, 4, 8, 16 (plus the type byte) */
				skip = 2;
				break;
			case 0xd5:
				skip = 3;
				break;
			case 0xd6:
				skip = 5;
				break;
			case 0xd7:
				skip = 9;
				break;
			case 0xd8:
				skip = 17;
				break;
			case 0xdc:
				if (!rd_be(p, len, &pos, 2, &items))
					return false;
				container = true;
				break;
			case 0xdd:
				if (!rd_be(p, len, &pos, 4, &items))
					return false;
				container = true;
				break;
			case 0xde:
				if (!rd_be(p, len, &pos, 2, &items))
					return false;
				items *= 2;
				container = true;
				break;
			case 0xdf:
				if (!rd_be(p, len, &pos, 4, &items))
					return false;
				items *= 2;
				container = true;
				break;
			default: /* 0xc1, never used */
				return false;
			}
		}
		if (skip > len - pos)
			return false;
		pos += (size_t)skip;
		if (container) {
			/* msgpack-c refuses to open one more, even an empty one */
			if (depth == MSGPACK_EMBED_STACK_SIZE)
				return false;
			if (items) {
				pending += items;
				if (pending > len - pos)
					return false;
				left[depth++] = items;
				continue;
			}
		}
		/* A whole object: one element of the innermost open container,
		 * which, when it was the last, is a whole object of its own. */
		for (;;) {
			if (depth == 0)
				return pos == len;
			if (--left[depth - 1])
				break;
			depth--;
		}
	}
}
