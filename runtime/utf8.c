/* The strict UTF-8 validator (see utf8.h). */
#include "runtime/utf8.h"

#include <string.h>

/* States beyond ACCEPT (0) and REJECT (1). */
enum {
	U_NEED1 = 2, /* one continuation byte 80..BF to go */
	U_NEED2,     /* two */
	U_NEED3,     /* three */
	U_E0,        /* after E0: A0..BF (no overlongs), then one more */
	U_ED,        /* after ED: 80..9F (no surrogates), then one more */
	U_F0,        /* after F0: 90..BF (no overlongs), then two more */
	U_F4,        /* after F4: 80..8F (<= U+10FFFF), then two more */
};

static uint32_t
utf8_step(uint32_t s, uint8_t c)
{
	switch (s) {
	case RT_UTF8_ACCEPT:
		if (c < 0x80)
			return RT_UTF8_ACCEPT;
		if (c < 0xC2)
			return RT_UTF8_REJECT; /* stray continuation or overlong C0/C1 */
		if (c < 0xE0)
			return U_NEED1;
		if (c == 0xE0)
			return U_E0;
		if (c == 0xED)
			return U_ED;
		if (c < 0xF0)
			return U_NEED2;
		if (c == 0xF0)
			return U_F0;
		if (c < 0xF4)
			return U_NEED3;
		if (c == 0xF4)
			return U_F4;
		return RT_UTF8_REJECT;
	case U_NEED1:
		return (c & 0xC0) == 0x80 ? RT_UTF8_ACCEPT : RT_UTF8_REJECT;
	case U_NEED2:
		return (c & 0xC0) == 0x80 ? U_NEED1 : RT_UTF8_REJECT;
	case U_NEED3:
		return (c & 0xC0) == 0x80 ? U_NEED2 : RT_UTF8_REJECT;
	case U_E0:
		return (c >= 0xA0 && c <= 0xBF) ? U_NEED1 : RT_UTF8_REJECT;
	case U_ED:
		return (c >= 0x80 && c <= 0x9F) ? U_NEED1 : RT_UTF8_REJECT;
	case U_F0:
		return (c >= 0x90 && c <= 0xBF) ? U_NEED2 : RT_UTF8_REJECT;
	case U_F4:
		return (c >= 0x80 && c <= 0x8F) ? U_NEED2 : RT_UTF8_REJECT;
	default:
		return RT_UTF8_REJECT;
	}
}

uint32_t
rt_utf8_feed(uint32_t state, const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (state == RT_UTF8_REJECT)
			return state;
		if (state == RT_UTF8_ACCEPT) {
			/* ASCII fast path, 8 bytes at a time. */
			while (n - i >= 8) {
				uint64_t w;
				memcpy(&w, p + i, 8);
				if (w & UINT64_C(0x8080808080808080))
					break;
				i += 8;
			}
			if (i == n)
				break;
		}
		state = utf8_step(state, p[i++]);
	}
	return state;
}

bool
rt_utf8_valid(const uint8_t *p, size_t n)
{
	return rt_utf8_feed(RT_UTF8_ACCEPT, p, n) == RT_UTF8_ACCEPT;
}

size_t
rt_utf8_seq_len(const uint8_t *p, size_t avail)
{
	if (p[0] < 0x80)
		return 1;
	uint32_t s = RT_UTF8_ACCEPT;
	for (size_t i = 0; i < avail && i < 4; i++) {
		s = utf8_step(s, p[i]);
		if (s == RT_UTF8_ACCEPT)
			return i + 1;
		if (s == RT_UTF8_REJECT)
			return 0;
	}
	return 0;
}
