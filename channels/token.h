/*
 * Phoenix.Token: signed tokens, byte-compatible with Phoenix.Token.sign/verify
 * (phoenix 1.7, plug_crypto 2.1).
 *
 * A token is three base64url (unpadded) parts joined by ".":
 *
 *     "SFMyNTY"  .  b64(term_to_binary({data, signed_at_ms, max_age_s}))  .  b64(HMAC)
 *
 * The HMAC (SHA-256 for "SFMyNTY"; verify also accepts Plug's "SFMzODQ" and
 * "SFM1MTI", i.e. SHA-384 and SHA-512) covers the first two parts joined by
 * "."; its key is PBKDF2-HMAC-SHA256(secret_key_base, salt, 1000 iterations,
 * 32 bytes).  Deriving the key costs about a millisecond, so it is done once
 * per (secret_key_base, salt) by ch_token_key_new and the key is reused.
 *
 * The signed data may be an integer (int64 range) or a binary of at most
 * CH_TOKEN_MAX_BINARY bytes; tokens carrying any other term (atoms, lists,
 * maps, larger integers or binaries, compressed terms) are refused as invalid,
 * even though Phoenix would accept them.
 *
 * Expiry is Plug.Crypto 2.1.1's: a max_age given to verify wins over the one
 * inside the token; :infinity never expires; a max_age <= 0 is always
 * expired; otherwise the token is expired when
 * signed_at_ms + max_age_s * 1000 < now_ms (the boundary itself is valid).
 * Tokens "signed in the future" are accepted, as in plug_crypto 2.1.1.
 *
 * Thread-safety: a key is immutable once made; every function is reentrant.
 */
#ifndef channels_token_h
#define channels_token_h

#include <stddef.h>
#include <stdint.h>

/* The longest binary a token may carry (bytes); longer ones are refused. */
#define CH_TOKEN_MAX_BINARY 4096

/* An output size that fits any token ch_token_sign can produce, NUL included. */
#define CH_TOKEN_MAX_LEN (8 + ((CH_TOKEN_MAX_BINARY + 40) / 3 + 1) * 4 + 1 + 88 + 1)

/* max_age value meaning Elixir's :infinity (never expires), for sign and verify. */
#define CH_TOKEN_MAX_AGE_INFINITY INT64_MAX

/* max_age value for ch_token_verify meaning "use the max_age inside the token". */
#define CH_TOKEN_MAX_AGE_EMBEDDED (-1)

/* Plug.Crypto's default max_age when signing (one day), in seconds. */
#define CH_TOKEN_DEFAULT_MAX_AGE 86400

/* A derived signing key (opaque, immutable). */
typedef struct ch_token_key ch_token_key;

/* The kinds of term a token may carry. */
typedef enum ch_token_type {
	CH_TOKEN_INTEGER = 1, /* an Elixir integer in int64 range */
	CH_TOKEN_BINARY = 2,  /* an Elixir binary (string) */
} ch_token_type;

/* The data inside a token: a plain value in the caller's memory, written by
 * ch_token_verify / the setters, read by whoever holds it (one thread). */
typedef struct ch_token_data {
	ch_token_type type;
	int64_t integer;                      /* CH_TOKEN_INTEGER: the value */
	size_t bin_len;                       /* CH_TOKEN_BINARY: the length */
	uint8_t bin[CH_TOKEN_MAX_BINARY + 1]; /* CH_TOKEN_BINARY: the bytes, NUL-terminated */
} ch_token_data;

/* What ch_token_verify found, as Phoenix.Token.verify answers. */
typedef enum ch_token_result {
	CH_TOKEN_OK = 0,      /* {:ok, data} */
	CH_TOKEN_EXPIRED = 1, /* {:error, :expired} */
	CH_TOKEN_INVALID = 2, /* {:error, :invalid} */
	CH_TOKEN_MISSING = 3, /* {:error, :missing}: the token was nil */
} ch_token_result;

/*
 * Derives the key for (secret_key_base, salt): PBKDF2-HMAC-SHA256, 1000
 * iterations, 32 bytes, as Phoenix.Token does by default.  Neither input needs
 * a NUL.  Returns NULL only when OpenSSL fails or memory runs out.  Free with
 * ch_token_key_free.
 */
ch_token_key *ch_token_key_new(const char *secret_key_base, size_t len, const char *salt,
                               size_t salt_len);

/* Frees a key (wiping it).  NULL is ignored. */
void ch_token_key_free(ch_token_key *k);

/* Sets d to the integer v. */
void ch_token_data_set_integer(ch_token_data *d, int64_t v);

/*
 * Sets d to a copy of the n bytes at p (NUL-terminated in d->bin).
 * Returns 0, or -1 (d untouched) when n > CH_TOKEN_MAX_BINARY.
 */
int ch_token_data_set_binary(ch_token_data *d, const void *p, size_t n);

/*
 * Signs data as Phoenix.Token.sign(key_base, salt, data, signed_at: signed_at_ms / 1000,
 * max_age: max_age_s) would (the same bytes).  max_age_s may be
 * CH_TOKEN_MAX_AGE_INFINITY (signs :infinity).  Writes the token and a NUL
 * into out.  Returns the token length (without the NUL), or -1 when outcap is
 * too small (CH_TOKEN_MAX_LEN always suffices) or data is malformed.
 */
int ch_token_sign(const ch_token_key *k, const ch_token_data *data, int64_t signed_at_ms,
                  int64_t max_age_s, char *out, size_t outcap);

/*
 * Verifies the len-byte token (no NUL needed) as Phoenix.Token.verify(key_base,
 * salt, token, max_age: max_age_s) would at time now_ms (Unix milliseconds).
 * max_age_s: CH_TOKEN_MAX_AGE_EMBEDDED (any negative value) uses the max_age
 * signed into the token; CH_TOKEN_MAX_AGE_INFINITY never expires; 0 is always
 * expired.  token == NULL is CH_TOKEN_MISSING (Phoenix's nil); an empty string
 * is CH_TOKEN_INVALID, as in Phoenix.  The signature is checked in constant
 * time before anything inside the token is looked at.  On CH_TOKEN_OK, *out
 * (if out is not NULL) holds the data; otherwise *out is unspecified.
 */
ch_token_result ch_token_verify(const ch_token_key *k, const char *token, size_t len,
                                int64_t max_age_s, int64_t now_ms, ch_token_data *out);

/* "ok", "expired", "invalid" or "missing" (for logs and tests). */
const char *ch_token_result_name(ch_token_result r);

#endif /* channels_token_h */
