/*
 * b64.h: base64 for phx-c, on OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock.
 *
 * Two alphabets: the standard one with "=" padding (RFC 4648 section 4, as
 * Sec-WebSocket-Accept needs) and the URL-safe one without padding (section
 * 5, as Phoenix.Token and phx_refs use).  Pure functions: any thread.
 */
#ifndef channels_b64_h
#define channels_b64_h

#include <stddef.h>
#include <stdint.h>

/* Length of the standard, padded encoding of n bytes (without a NUL). */
#define CH_B64_LEN(n) (((n) + 2) / 3 * 4)

/* Length of the URL-safe, unpadded encoding of n bytes (without a NUL). */
#define CH_B64URL_LEN(n) ((n) / 3 * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))

/* Writes the standard base64 of in[0, n) with "=" padding, then a NUL, to
 * out (room for CH_B64_LEN(n) + 1 bytes).  Returns CH_B64_LEN(n). */
size_t ch_b64_encode(const uint8_t *in, size_t n, char *out);

/* Writes the URL-safe base64 of in[0, n) without padding and without a NUL
 * to out (room for CH_B64URL_LEN(n) bytes).  Returns CH_B64URL_LEN(n). */
size_t ch_b64url_encode(const uint8_t *in, size_t n, char *out);

/* Decodes s[0, n) as Elixir's Base.url_decode64(s, padding: false) does:
 * URL-safe alphabet only; "=" padding is allowed only as the one or two last
 * characters of a string whose length is a multiple of 4 (and then only where
 * it completes the last group); a length of 1 mod 4 (after padding) is an
 * error; unused low bits of the last character are ignored.  Writes at most
 * cap bytes to out.  Returns the decoded length, or -1 if s is invalid or
 * the result would not fit. */
long ch_b64url_decode(const char *s, size_t n, uint8_t *out, size_t cap);

#endif
