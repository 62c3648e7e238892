/*
 * utf8.h: the one strict UTF-8 validator of phx-c (RFC 3629: no overlongs, no
 * surrogates U+D800..DFFF, nothing above U+10FFFF).
 *
 * Incremental: rt_utf8_feed runs a small state machine over any number of
 * pieces (the fragments of a WebSocket text message, RFC 6455 section 8.1):
 * it fails fast on the first invalid byte, and a piece may end inside a
 * sequence; only the end of the whole input must be on a code point
 * boundary.  rt_utf8_valid checks one complete buffer; rt_utf8_seq_len one
 * sequence (for scanners that walk text a code point at a time).
 *
 * Pure functions: any thread.
 */
#ifndef runtime_utf8_h
#define runtime_utf8_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Validator states; any other value means "inside a sequence". */
#define RT_UTF8_ACCEPT 0u /* the input so far ends on a code point boundary */
#define RT_UTF8_REJECT 1u /* an invalid byte was seen (sticky) */

/* Feeds p[0, n) to the validator in `state` (RT_UTF8_ACCEPT to start) and
 * returns the new state: RT_UTF8_REJECT as soon as a byte cannot continue
 * valid UTF-8 (the rest is not looked at), RT_UTF8_ACCEPT when the input so
 * far ends on a code point boundary, another value when it ends inside a
 * sequence (valid so far; more bytes must complete it). */
uint32_t rt_utf8_feed(uint32_t state, const uint8_t *p, size_t n);

/* True when p[0, n) is complete, strictly valid UTF-8 (n may be 0). */
bool rt_utf8_valid(const uint8_t *p, size_t n);

/* The length (1-4) of the valid UTF-8 sequence starting at p, of which avail
 * (at least 1) bytes may be read; 0 when it is invalid or cut short. */
size_t rt_utf8_seq_len(const uint8_t *p, size_t avail);

#endif
