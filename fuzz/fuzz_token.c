/*
 * fuzz_token: Phoenix.Token verification (channels/token.h).
 *
 * Input: [mode byte][bytes...].  Mode bit 0 clear: the bytes are a token,
 * verified as they are (nearly all fail at the signature, which is checked
 * first).  Bit 0 set: the bytes are the signed term (Erlang's external term
 * format); the target signs them with the key as Phoenix would
 * (HMAC-SHA256), so the fuzzer reaches the term decoder behind the
 * signature.  Bits 1-2 pick the max_age given to verify.  A token that
 * verifies is signed again by ch_token_sign from its data and must verify to
 * the same data, and b64url decoding is checked against encoding.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "channels/b64.h"
#include "channels/token.h"
#include "fuzz/fuzz.h"

#define SECRET "fuzz-secret-key-base-0123456789abcdef0123456789abcdef0123456789"
#define SALT "user socket"

/* The key, derived once for the whole run (PBKDF2 takes a millisecond):
 * written by the first input only, read by every one after. */
static ch_token_key *key;
static unsigned char raw_key[32];

static int64_t
max_age_of(uint8_t mode)
{
	switch ((mode >> 1) & 3) {
	case 0:
		return CH_TOKEN_MAX_AGE_EMBEDDED;
	case 1:
		return CH_TOKEN_MAX_AGE_INFINITY;
	case 2:
		return 0;
	default:
		return 86400;
	}
}

/* "SFMyNTY." b64url(term) "." b64url(HMAC-SHA256): a token signed with the key. */
static char *
sign_term(const uint8_t *term, size_t n, size_t *len)
{
	char *t = malloc(8 + CH_B64URL_LEN(n) + 1 + CH_B64URL_LEN(EVP_MAX_MD_SIZE) + 1);
	FUZZ_CHECK(t);
	memcpy(t, "SFMyNTY.", 8);
	size_t o = 8 + ch_b64url_encode(term, n, t + 8);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	FUZZ_CHECK(HMAC(EVP_sha256(), raw_key, sizeof(raw_key), (const unsigned char *)t, o, mac,
	                &maclen));
	t[o++] = '.';
	o += ch_b64url_encode(mac, maclen, t + o);
	t[o] = '\0';
	*len = o;
	return t;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!key) {
		key = ch_token_key_new(SECRET, strlen(SECRET), SALT, strlen(SALT));
		FUZZ_CHECK(key);
		FUZZ_CHECK(PKCS5_PBKDF2_HMAC(SECRET, strlen(SECRET), (const unsigned char *)SALT,
		                             strlen(SALT), 1000, EVP_sha256(), sizeof(raw_key),
		                             raw_key));
	}
	fuzz_in in = {data, size};
	uint8_t mode = fuzz_byte(&in);
	const int64_t now = 1700000000000;
	size_t len;
	char *tok;
	if (mode & 1)
		tok = sign_term(in.p, in.n, &len);
	else {
		tok = (char *)fuzz_dup(in.p, in.n);
		len = in.n;
	}

	ch_token_data d;
	ch_token_result r = ch_token_verify(key, tok, len, max_age_of(mode), now, &d);
	FUZZ_CHECK(r == CH_TOKEN_OK || r == CH_TOKEN_EXPIRED || r == CH_TOKEN_INVALID);
	if (r == CH_TOKEN_OK) {
		FUZZ_CHECK(d.type == CH_TOKEN_INTEGER || d.type == CH_TOKEN_BINARY);
		if (d.type == CH_TOKEN_BINARY)
			FUZZ_CHECK(d.bin_len <= CH_TOKEN_MAX_BINARY && d.bin[d.bin_len] == 0);
		char again[CH_TOKEN_MAX_LEN];
		int n =
		    ch_token_sign(key, &d, now, CH_TOKEN_MAX_AGE_INFINITY, again, sizeof(again));
		FUZZ_CHECK(n > 0);
		ch_token_data d2;
		FUZZ_CHECK(ch_token_verify(key, again, (size_t)n, CH_TOKEN_MAX_AGE_EMBEDDED, now,
		                           &d2) == CH_TOKEN_OK);
		FUZZ_CHECK(d2.type == d.type);
		if (d.type == CH_TOKEN_INTEGER)
			FUZZ_CHECK(d2.integer == d.integer);
		else
			FUZZ_CHECK(d2.bin_len == d.bin_len &&
			           memcmp(d2.bin, d.bin, d.bin_len) == 0);
	}
	free(tok);

	/* b64url: what decodes encodes back to the same text, or to it without
	 * padding, unused low bits aside (so: decode the encoding again). */
	uint8_t *bytes = malloc(in.n + 1);
	FUZZ_CHECK(bytes);
	long bl = ch_b64url_decode((const char *)in.p, in.n, bytes, in.n + 1);
	if (bl >= 0) {
		FUZZ_CHECK((size_t)bl <= in.n);
		char *enc = malloc(CH_B64URL_LEN((size_t)bl) + 1);
		FUZZ_CHECK(enc);
		size_t el = ch_b64url_encode(bytes, (size_t)bl, enc);
		FUZZ_CHECK(el <= in.n);
		uint8_t *back = malloc((size_t)bl + 1);
		FUZZ_CHECK(back);
		FUZZ_CHECK(ch_b64url_decode(enc, el, back, (size_t)bl + 1) == bl);
		FUZZ_CHECK(bl == 0 || memcmp(back, bytes, (size_t)bl) == 0);
		free(back);
		free(enc);
	}
	free(bytes);
	return 0;
}
