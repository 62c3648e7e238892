/*
 * Phoenix.Token signing and verification (see token.h for the format).
 *
 * The payload is Erlang's external term format for {data, signed_at_ms,
 * max_age_s}; this file writes it exactly as term_to_binary/1 does for the
 * supported terms and reads it with a small bounds-checked decoder that only
 * knows those terms.  Base64url (b64.h) decoding follows Elixir's
 * Base.url_decode64(padding: false): padding is optional, unused low bits of
 * the last character are ignored, a length of 1 mod 4 is an error.
 */
#include "channels/token.h"

#include "channels/b64.h"

#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN 32
#define PBKDF2_ITERATIONS 1000

/* Erlang external term format tags. */
enum {
	ETF_VERSION = 131,
	ETF_NEW_FLOAT = 70,
	ETF_SMALL_INTEGER = 97,
	ETF_INTEGER = 98,
	ETF_ATOM = 100,
	ETF_SMALL_TUPLE = 104,
	ETF_LARGE_TUPLE = 105,
	ETF_BINARY = 109,
	ETF_SMALL_BIG = 110,
	ETF_LARGE_BIG = 111,
	ETF_SMALL_ATOM = 115,
	ETF_ATOM_UTF8 = 118,
	ETF_SMALL_ATOM_UTF8 = 119,
};

/* The largest term payload accepted: a 3-tuple of a maximal binary and two bigs. */
#define TERM_MAX (3 + 5 + CH_TOKEN_MAX_BINARY + 2 * 11 + 16)

/* A derived key: written once by ch_token_key_new, then read-only, so any
 * thread may use it; freed by its owner (the endpoint's cache, or the caller). */
struct ch_token_key {
	unsigned char key[KEY_LEN];
};

ch_token_key *
ch_token_key_new(const char *secret_key_base, size_t len, const char *salt, size_t salt_len)
{
	if ((!secret_key_base && len) || (!salt && salt_len) || len > INT32_MAX ||
	    salt_len > INT32_MAX)
		return NULL;
	ch_token_key *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	/* OpenSSL wants non-NULL pointers even for empty inputs. */
	if (!PKCS5_PBKDF2_HMAC(secret_key_base ? secret_key_base : "", (int)len,
	                       (const unsigned char *)(salt ? salt : ""), (int)salt_len,
	                       PBKDF2_ITERATIONS, EVP_sha256(), KEY_LEN, k->key)) {
		free(k);
		return NULL;
	}
	return k;
}

void
ch_token_key_free(ch_token_key *k)
{
	if (!k)
		return;
	OPENSSL_cleanse(k->key, sizeof(k->key));
	free(k);
}

void
ch_token_data_set_integer(ch_token_data *d, int64_t v)
{
	d->type = CH_TOKEN_INTEGER;
	d->integer = v;
	d->bin_len = 0;
	d->bin[0] = 0;
}

int
ch_token_data_set_binary(ch_token_data *d, const void *p, size_t n)
{
	if (n > CH_TOKEN_MAX_BINARY || (!p && n))
		return -1;
	d->type = CH_TOKEN_BINARY;
	d->integer = 0;
	if (n)
		memcpy(d->bin, p, n);
	d->bin[n] = 0;
	d->bin_len = n;
	return 0;
}

const char *
ch_token_result_name(ch_token_result r)
{
	switch (r) {
	case CH_TOKEN_OK:
		return "ok";
	case CH_TOKEN_EXPIRED:
		return "expired";
	case CH_TOKEN_INVALID:
		return "invalid";
	case CH_TOKEN_MISSING:
		return "missing";
	}
	return "unknown";
}

/* ---- term encoding ---------------------------------------------------------- */

/* Writes v as term_to_binary does (97, 98 or 110); returns the bytes written (at most 11). */
static size_t
etf_put_integer(uint8_t *p, int64_t v)
{
	if (v >= 0 && v <= 255) {
		p[0] = ETF_SMALL_INTEGER;
		p[1] = (uint8_t)v;
		return 2;
	}
	if (v >= INT32_MIN && v <= INT32_MAX) {
		uint32_t u = (uint32_t)(int32_t)v;
		p[0] = ETF_INTEGER;
		p[1] = (uint8_t)(u >> 24);
		p[2] = (uint8_t)(u >> 16);
		p[3] = (uint8_t)(u >> 8);
		p[4] = (uint8_t)u;
		return 5;
	}
	uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	size_t n = 0;
	p[0] = ETF_SMALL_BIG;
	p[2] = v < 0;
	while (mag) {
		p[3 + n++] = (uint8_t)mag;
		mag >>= 8;
	}
	p[1] = (uint8_t)n;
	return 3 + n;
}

/* Writes the term {data, signed_at_ms, max_age_s}; returns its length or 0. */
static size_t
etf_put_token_term(uint8_t *p, const ch_token_data *d, int64_t signed_at_ms, int64_t max_age_s)
{
	size_t o = 0;
	p[o++] = ETF_VERSION;
	p[o++] = ETF_SMALL_TUPLE;
	p[o++] = 3;
	if (d->type == CH_TOKEN_INTEGER) {
		o += etf_put_integer(p + o, d->integer);
	} else if (d->type == CH_TOKEN_BINARY && d->bin_len <= CH_TOKEN_MAX_BINARY) {
		uint32_t n = (uint32_t)d->bin_len;
		p[o++] = ETF_BINARY;
		p[o++] = (uint8_t)(n >> 24);
		p[o++] = (uint8_t)(n >> 16);
		p[o++] = (uint8_t)(n >> 8);
		p[o++] = (uint8_t)n;
		memcpy(p + o, d->bin, n);
		o += n;
	} else {
		return 0;
	}
	o += etf_put_integer(p + o, signed_at_ms);
	if (max_age_s == CH_TOKEN_MAX_AGE_INFINITY) {
		/* OTP 26+ writes atoms as SMALL_ATOM_UTF8_EXT. */
		p[o++] = ETF_SMALL_ATOM_UTF8;
		p[o++] = 8;
		memcpy(p + o, "infinity", 8);
		o += 8;
	} else {
		o += etf_put_integer(p + o, max_age_s);
	}
	return o;
}

/* ---- term decoding ---------------------------------------------------------- */

/* A cursor over a term being decoded: on the verifying thread's stack. */
typedef struct etf_reader {
	const uint8_t *p;
	size_t len, pos;
} etf_reader;

static int
etf_take(etf_reader *r, size_t n, const uint8_t **out)
{
	if (r->len - r->pos < n)
		return -1;
	*out = r->p + r->pos;
	r->pos += n;
	return 0;
}

static uint32_t
be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Integer outcomes: fits int64, or too large in either direction. */
enum { INT_OK = 0, INT_TOO_BIG = 1, INT_TOO_SMALL = 2 };

/*
 * Reads an integer term at the current position into *v.  Returns INT_OK,
 * INT_TOO_BIG / INT_TOO_SMALL for valid integers outside int64 (with *v
 * saturated), -1 when the term is not an integer or is malformed.
 */
static int
etf_get_integer(etf_reader *r, int64_t *v)
{
	const uint8_t *b;
	if (etf_take(r, 1, &b) < 0)
		return -1;
	uint8_t tag = b[0];
	if (tag == ETF_SMALL_INTEGER) {
		if (etf_take(r, 1, &b) < 0)
			return -1;
		*v = b[0];
		return INT_OK;
	}
	if (tag == ETF_INTEGER) {
		if (etf_take(r, 4, &b) < 0)
			return -1;
		*v = (int32_t)be32(b);
		return INT_OK;
	}
	size_t n;
	if (tag == ETF_SMALL_BIG) {
		if (etf_take(r, 1, &b) < 0)
			return -1;
		n = b[0];
	} else if (tag == ETF_LARGE_BIG) {
		if (etf_take(r, 4, &b) < 0)
			return -1;
		n = be32(b);
	} else {
		return -1;
	}
	const uint8_t *sign, *digits;
	if (etf_take(r, 1, &sign) < 0 || sign[0] > 1 || etf_take(r, n, &digits) < 0)
		return -1;
	uint64_t mag = 0;
	int overflow = 0;
	for (size_t i = 0; i < n; i++) {
		if (i >= 8) {
			overflow |= digits[i] != 0;
			continue;
		}
		mag |= (uint64_t)digits[i] << (8 * i);
	}
	if (sign[0] == 0) {
		if (overflow || mag > (uint64_t)INT64_MAX) {
			*v = INT64_MAX;
			return INT_TOO_BIG;
		}
		*v = (int64_t)mag;
	} else {
		if (overflow || mag > (uint64_t)INT64_MAX + 1) {
			*v = INT64_MIN;
			return INT_TOO_SMALL;
		}
		*v = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
	}
	return INT_OK;
}

/* What the max_age element of the term is. */
typedef enum max_age_kind {
	MAX_AGE_INTEGER,  /* secs (saturated to int64) */
	MAX_AGE_FLOAT,    /* fsecs */
	MAX_AGE_INFINITY, /* the atom infinity */
	MAX_AGE_OTHER,    /* another atom: Plug.Crypto would raise when it is used */
} max_age_kind;

/* A max_age read from a token or given by the caller: a plain value on the
 * verifying thread's stack. */
typedef struct max_age {
	max_age_kind kind;
	int64_t secs;
	double fsecs;
} max_age;

static int
etf_get_max_age(etf_reader *r, max_age *ma)
{
	if (r->pos >= r->len)
		return -1;
	uint8_t tag = r->p[r->pos];
	const uint8_t *b;
	size_t n;
	switch (tag) {
	case ETF_SMALL_INTEGER:
	case ETF_INTEGER:
	case ETF_SMALL_BIG:
	case ETF_LARGE_BIG:
		ma->kind = MAX_AGE_INTEGER;
		return etf_get_integer(r, &ma->secs) < 0 ? -1 : 0;
	case ETF_NEW_FLOAT: {
		r->pos++;
		if (etf_take(r, 8, &b) < 0)
			return -1;
		uint64_t bits = (uint64_t)be32(b) << 32 | be32(b + 4);
		double d;
		memcpy(&d, &bits, sizeof(d));
		if (!isfinite(d))
			return -1; /* binary_to_term refuses these too */
		ma->kind = MAX_AGE_FLOAT;
		ma->fsecs = d;
		return 0;
	}
	case ETF_ATOM:
	case ETF_ATOM_UTF8:
	case ETF_SMALL_ATOM:
	case ETF_SMALL_ATOM_UTF8:
		r->pos++;
		if (tag == ETF_ATOM || tag == ETF_ATOM_UTF8) {
			if (etf_take(r, 2, &b) < 0)
				return -1;
			n = (size_t)b[0] << 8 | b[1];
		} else {
			if (etf_take(r, 1, &b) < 0)
				return -1;
			n = b[0];
		}
		if (etf_take(r, n, &b) < 0)
			return -1;
		ma->kind =
		    n == 8 && memcmp(b, "infinity", 8) == 0 ? MAX_AGE_INFINITY : MAX_AGE_OTHER;
		return 0;
	default:
		return -1;
	}
}

/*
 * Decodes {data, signed_at_ms, max_age} (or the older {data, signed_at_ms},
 * whose max_age is 86400, as Plug.Crypto still accepts).  Returns 0 or -1.
 */
static int
etf_get_token_term(const uint8_t *p, size_t len, ch_token_data *d, int64_t *signed_at, max_age *ma)
{
	etf_reader r = {p, len, 0};
	const uint8_t *b;
	uint32_t arity;
	if (etf_take(&r, 2, &b) < 0 || b[0] != ETF_VERSION)
		return -1;
	if (b[1] == ETF_SMALL_TUPLE) {
		if (etf_take(&r, 1, &b) < 0)
			return -1;
		arity = b[0];
	} else if (b[1] == ETF_LARGE_TUPLE) {
		if (etf_take(&r, 4, &b) < 0)
			return -1;
		arity = be32(b);
	} else {
		return -1;
	}
	if (arity != 2 && arity != 3)
		return -1;

	/* data */
	if (r.pos >= r.len)
		return -1;
	if (r.p[r.pos] == ETF_BINARY) {
		r.pos++;
		if (etf_take(&r, 4, &b) < 0)
			return -1;
		uint32_t n = be32(b);
		if (n > CH_TOKEN_MAX_BINARY || etf_take(&r, n, &b) < 0)
			return -1;
		d->type = CH_TOKEN_BINARY;
		d->integer = 0;
		memcpy(d->bin, b, n);
		d->bin[n] = 0;
		d->bin_len = n;
	} else {
		int64_t v;
		if (etf_get_integer(&r, &v) != INT_OK)
			return -1;
		ch_token_data_set_integer(d, v);
	}

	if (etf_get_integer(&r, signed_at) != INT_OK)
		return -1;
	if (arity == 3) {
		if (etf_get_max_age(&r, ma) < 0)
			return -1;
	} else {
		ma->kind = MAX_AGE_INTEGER;
		ma->secs = CH_TOKEN_DEFAULT_MAX_AGE;
	}
	return r.pos == r.len ? 0 : -1; /* binary_to_term refuses trailing bytes */
}

/* Plug.Crypto's expiry rule; returns CH_TOKEN_OK, CH_TOKEN_EXPIRED or CH_TOKEN_INVALID. */
static ch_token_result
check_age(int64_t signed_at, const max_age *ma, int64_t now_ms)
{
	int64_t age_ms;
	switch (ma->kind) {
	case MAX_AGE_INFINITY:
		return CH_TOKEN_OK;
	case MAX_AGE_OTHER:
		return CH_TOKEN_INVALID; /* Plug.Crypto raises on arithmetic with an atom */
	case MAX_AGE_FLOAT: {
		if (ma->fsecs <= 0)
			return CH_TOKEN_EXPIRED;
		double ms = trunc(ma->fsecs * 1000.0);
		age_ms = ms >= 9223372036854775807.0 ? INT64_MAX : (int64_t)ms;
		break;
	}
	case MAX_AGE_INTEGER:
	default:
		if (ma->secs <= 0)
			return CH_TOKEN_EXPIRED;
		if (__builtin_mul_overflow(ma->secs, (int64_t)1000, &age_ms))
			age_ms = INT64_MAX;
		break;
	}
	int64_t limit;
	if (__builtin_add_overflow(signed_at, age_ms, &limit))
		limit = INT64_MAX; /* age_ms > 0, so only upward overflow */
	return limit < now_ms ? CH_TOKEN_EXPIRED : CH_TOKEN_OK;
}

/* ---- sign / verify ---------------------------------------------------------- */

static const char protected_hs256[] = "SFMyNTY";

int
ch_token_sign(const ch_token_key *k, const ch_token_data *data, int64_t signed_at_ms,
              int64_t max_age_s, char *out, size_t outcap)
{
	uint8_t term[TERM_MAX];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	if (!k || !data || !out)
		return -1;
	size_t tlen = etf_put_token_term(term, data, signed_at_ms, max_age_s);
	if (!tlen)
		return -1;
	size_t plen = sizeof(protected_hs256) - 1;
	size_t need = plen + 1 + CH_B64URL_LEN(tlen) + 1 + CH_B64URL_LEN(32) + 1;
	if (outcap < need)
		return -1;
	size_t o = 0;
	memcpy(out, protected_hs256, plen);
	o += plen;
	out[o++] = '.';
	o += ch_b64url_encode(term, tlen, out + o);
	if (!HMAC(EVP_sha256(), k->key, KEY_LEN, (const unsigned char *)out, o, mac, &maclen))
		return -1;
	out[o++] = '.';
	o += ch_b64url_encode(mac, maclen, out + o);
	out[o] = 0;
	return (int)o;
}

ch_token_result
ch_token_verify(const ch_token_key *k, const char *token, size_t len, int64_t max_age_s,
                int64_t now_ms, ch_token_data *out)
{
	ch_token_data scratch;
	uint8_t term[TERM_MAX];
	unsigned char mac[EVP_MAX_MD_SIZE], sig[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (!token)
		return CH_TOKEN_MISSING;
	if (!k)
		return CH_TOKEN_INVALID;
	if (!out)
		out = &scratch;

	/* Exactly three parts (":binary.split(token, ".", [:global])"). */
	const char *dot1 = memchr(token, '.', len);
	if (!dot1)
		return CH_TOKEN_INVALID;
	const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
	if (!dot2)
		return CH_TOKEN_INVALID;
	const char *sig_text = dot2 + 1;
	size_t sig_len = len - (size_t)(sig_text - token);
	if (memchr(sig_text, '.', sig_len))
		return CH_TOKEN_INVALID;

	const EVP_MD *md;
	size_t prot_len = (size_t)(dot1 - token);
	if (prot_len == 7 && memcmp(token, "SFMyNTY", 7) == 0)
		md = EVP_sha256();
	else if (prot_len == 7 && memcmp(token, "SFMzODQ", 7) == 0)
		md = EVP_sha384();
	else if (prot_len == 7 && memcmp(token, "SFM1MTI", 7) == 0)
		md = EVP_sha512();
	else
		return CH_TOKEN_INVALID;

	long slen = ch_b64url_decode(sig_text, sig_len, sig, sizeof(sig));
	if (slen < 0)
		return CH_TOKEN_INVALID;
	if (!HMAC(md, k->key, KEY_LEN, (const unsigned char *)token, (size_t)(dot2 - token), mac,
	          &maclen))
		return CH_TOKEN_INVALID;
	if ((size_t)slen != maclen || CRYPTO_memcmp(mac, sig, maclen) != 0)
		return CH_TOKEN_INVALID;

	/* Authentic: now look inside. */
	long tlen = ch_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), term, sizeof(term));
	if (tlen < 0)
		return CH_TOKEN_INVALID;
	int64_t signed_at;
	max_age embedded;
	if (etf_get_token_term(term, (size_t)tlen, out, &signed_at, &embedded) < 0)
		return CH_TOKEN_INVALID;
	if (max_age_s >= 0) {
		max_age given = {MAX_AGE_INTEGER, max_age_s, 0};
		if (max_age_s == CH_TOKEN_MAX_AGE_INFINITY)
			given.kind = MAX_AGE_INFINITY;
		return check_age(signed_at, &given, now_ms);
	}
	return check_age(signed_at, &embedded, now_ms);
}
