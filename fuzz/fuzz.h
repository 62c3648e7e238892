/*
 * fuzz.h: what every libFuzzer target here shares (fuzz/README.md).
 *
 * FUZZ_CHECK(cond) states a property the code under test promises (a round
 * trip, two answers that must agree): when it does not hold, the target
 * prints where and aborts, which libFuzzer reports as a crash with the input
 * that caused it.  A pure header: no state.
 */
#ifndef fuzz_fuzz_h
#define fuzz_fuzz_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__,      \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Reads the input from its front: a small cursor over data[0, size). */
typedef struct fuzz_in {
	const uint8_t *p;
	size_t n;
} fuzz_in;

/* The next byte (0 once the input is used up). */
static inline uint8_t
fuzz_byte(fuzz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

/* The next 2 bytes, little-endian (0 once used up). */
static inline uint16_t
fuzz_u16(fuzz_in *in)
{
	uint16_t lo = fuzz_byte(in);
	return (uint16_t)(lo | (uint16_t)fuzz_byte(in) << 8);
}

/* A malloc'ed copy of p[0, n) of exactly n bytes (at least 1 allocated), so
 * that AddressSanitizer sees any read past n. */
static inline uint8_t *
fuzz_dup(const void *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);
	if (!c)
		abort();
	if (n)
		memcpy(c, p, n);
	return c;
}

#endif /* fuzz_fuzz_h */
