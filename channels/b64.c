/*
 * base64 on OpenSSL (see b64.h).  OpenSSL knows only the standard alphabet
 * with padding, so the URL-safe variants translate the alphabet and handle
 * the unpadded last group here; the bit work is EVP_EncodeBlock's and
 * EVP_DecodeBlock's.  Input is handled in chunks through small stack buffers
 * (EVP_EncodeBlock writes a NUL after its output, which a caller's exact-size
 * buffer has no room for).
 */
#include "channels/b64.h"

#include <openssl/evp.h>
#include <string.h>

#define CHUNK 48 /* input bytes per EVP call: 64 characters */

size_t
ch_b64_encode(const uint8_t *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i += CHUNK) {
		size_t k = n - i < CHUNK ? n - i : CHUNK;
		o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, in + i, (int)k);
	}
	out[o] = 0;
	return o;
}

size_t
ch_b64url_encode(const uint8_t *in, size_t n, char *out)
{
	unsigned char tmp[CH_B64_LEN(CHUNK) + 1];
	size_t o = 0;
	for (size_t i = 0; i < n; i += CHUNK) {
		size_t k = n - i < CHUNK ? n - i : CHUNK;
		int m = EVP_EncodeBlock(tmp, in + i, (int)k);
		for (int j = 0; j < m && tmp[j] != '='; j++)
			out[o++] = tmp[j] == '+' ? '-' : tmp[j] == '/' ? '_' : (char)tmp[j];
	}
	return o;
}

/* The standard-alphabet character for URL-safe c, or 0 if c is not in the
 * URL-safe alphabet. */
static char
url_to_std(unsigned char c)
{
	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return (char)c;
	if (c == '-')
		return '+';
	if (c == '_')
		return '/';
	return 0;
}

long
ch_b64url_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
	if (n % 4 == 0 && n >= 4) {
		if (s[n - 1] == '=' && s[n - 2] == '=')
			n -= 2;
		else if (s[n - 1] == '=')
			n -= 1;
	}
	if (n % 4 == 1)
		return -1;
	size_t outlen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
	if (outlen > cap)
		return -1;
	unsigned char tmp[CH_B64_LEN(CHUNK)];
	uint8_t last[3];
	size_t o = 0;
	for (size_t i = 0; i < n; i += sizeof(tmp)) {
		size_t k = n - i < sizeof(tmp) ? n - i : sizeof(tmp);
		for (size_t j = 0; j < k; j++)
			if (!(tmp[j] = (unsigned char)url_to_std((unsigned char)s[i + j])))
				return -1;
		/* An unpadded last group: complete it with zero digits ('A') and
		 * keep only the whole bytes, which ignores the unused low bits. */
		size_t part = k % 4;
		for (size_t j = part ? 4 - part : 0; j; j--)
			tmp[k++] = 'A';
		size_t whole = part ? k - 4 : k;
		if (whole && EVP_DecodeBlock(out + o, tmp, (int)whole) != (int)(whole / 4 * 3))
			return -1;
		o += whole / 4 * 3;
		if (part) {
			if (EVP_DecodeBlock(last, tmp + whole, 4) != 3)
				return -1;
			memcpy(out + o, last, part - 1);
			o += part - 1;
		}
	}
	return (long)o;
}
