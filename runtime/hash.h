/*
 * hash.h: FNV-1a over a NUL-terminated string, for the name tables of the
 * runtime and the topic tables of channels/ (short keys, few collisions).
 */
#ifndef runtime_hash_h
#define runtime_hash_h

#include <stdint.h>

static inline uint64_t
rt_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

#endif
