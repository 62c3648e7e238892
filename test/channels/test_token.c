/*
 * Tests for channels/token: every vector of ../shared/tokens/vectors.json
 * (made by real Phoenix) verifies to the same result and re-signs to the same
 * bytes; plus tampering, expiry and max_age precedence cases.
 *
 * The shared directory is $PHX_SHARED, else ../shared (tests run from the
 * repository root).
 */
#include "test/harness.h"

#include "channels/token.h"

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Reads the vectors file; the caller cJSON_Deletes it. */
static cJSON *
load_vectors(void)
{
	const char *dir = getenv("PHX_SHARED");
	char path[4096];
	snprintf(path, sizeof(path), "%s/tokens/vectors.json", dir && *dir ? dir : "../shared");
	FILE *f = fopen(path, "rb");
	CHECK_MSG(f != NULL, "cannot open %s (set PHX_SHARED)", path);
	char *text = NULL;
	size_t len = 0, cap = 0, n;
	char chunk[4096];
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (len + n + 1 > cap) {
			cap = (len + n + 1) * 2;
			text = realloc(text, cap);
			CHECK(text != NULL);
		}
		memcpy(text + len, chunk, n);
		len += n;
	}
	fclose(f);
	CHECK(text != NULL);
	text[len] = 0;
	cJSON *root = cJSON_Parse(text);
	free(text);
	CHECK_MSG(root != NULL, "cannot parse %s", path);
	return root;
}

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *
json_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t
json_int(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	CHECK_MSG(cJSON_IsNumber(v), "missing number %s", key);
	return (int64_t)v->valuedouble;
}

static ch_token_key *
key_for(const cJSON *root, const char *salt)
{
	const char *skb = json_str(root, "secret_key_base");
	CHECK(skb != NULL && salt != NULL);
	ch_token_key *k = ch_token_key_new(skb, strlen(skb), salt, strlen(salt));
	CHECK(k != NULL);
	return k;
}

/* Fills d from a vector's {"type", "value"}. */
static void
vector_data(const cJSON *v, ch_token_data *d)
{
	const cJSON *data = cJSON_GetObjectItemCaseSensitive(v, "data");
	const char *type = json_str(data, "type");
	CHECK(type != NULL);
	const cJSON *value = cJSON_GetObjectItemCaseSensitive(data, "value");
	if (strcmp(type, "integer") == 0) {
		CHECK(cJSON_IsNumber(value));
		/* Every integer in the file is exactly representable as a double. */
		ch_token_data_set_integer(d, (int64_t)value->valuedouble);
	} else {
		CHECK_STR(type, "binary");
		CHECK(cJSON_IsString(value));
		CHECK_EQ(
		    ch_token_data_set_binary(d, value->valuestring, strlen(value->valuestring)), 0);
	}
}

static void
check_same_data(const ch_token_data *a, const ch_token_data *b)
{
	CHECK_EQ(a->type, b->type);
	if (a->type == CH_TOKEN_INTEGER) {
		CHECK_EQ(a->integer, b->integer);
	} else {
		CHECK_EQ(a->bin_len, b->bin_len);
		CHECK_MEM(a->bin, b->bin, a->bin_len);
		CHECK_EQ(b->bin[b->bin_len], 0);
	}
}

static ch_token_result
result_from_name(const char *s)
{
	CHECK(s != NULL);
	if (strcmp(s, "ok") == 0)
		return CH_TOKEN_OK;
	if (strcmp(s, "expired") == 0)
		return CH_TOKEN_EXPIRED;
	if (strcmp(s, "missing") == 0)
		return CH_TOKEN_MISSING;
	CHECK_STR(s, "invalid");
	return CH_TOKEN_INVALID;
}

static void
test_vectors_verify(void)
{
	cJSON *root = load_vectors();
	const cJSON *vectors = cJSON_GetObjectItemCaseSensitive(root, "vectors");
	CHECK(cJSON_IsArray(vectors));
	int count = 0;
	const cJSON *v;
	cJSON_ArrayForEach(v, vectors)
	{
		const char *token = json_str(v, "token");
		const char *note = json_str(v, "note");
		CHECK(token != NULL);
		ch_token_key *k = key_for(root, json_str(v, "verify_salt"));
		ch_token_result want = result_from_name(json_str(v, "result"));
		ch_token_data got;
		ch_token_result r = ch_token_verify(
		    k, token, strlen(token), json_int(v, "verify_max_age_s"), now_ms(), &got);
		CHECK_MSG(r == want, "vector \"%s\": got %s, want %s", note ? note : token,
		          ch_token_result_name(r), ch_token_result_name(want));
		if (want == CH_TOKEN_OK) {
			ch_token_data d;
			vector_data(v, &d);
			check_same_data(&d, &got);
		}
		ch_token_key_free(k);
		count++;
	}
	CHECK(count >= 10);
	cJSON_Delete(root);
}

static void
test_vectors_resign_identical(void)
{
	cJSON *root = load_vectors();
	const cJSON *vectors = cJSON_GetObjectItemCaseSensitive(root, "vectors");
	int count = 0;
	const cJSON *v;
	cJSON_ArrayForEach(v, vectors)
	{
		const char *sign_salt = json_str(v, "sign_salt");
		if (!sign_salt)
			continue; /* hand-made vectors (tampered, garbage) */
		const char *token = json_str(v, "token");
		ch_token_key *k = key_for(root, sign_salt);
		ch_token_data d;
		vector_data(v, &d);
		char out[CH_TOKEN_MAX_LEN];
		int n = ch_token_sign(k, &d, json_int(v, "signed_at_s") * 1000,
		                      json_int(v, "embedded_max_age_s"), out, sizeof(out));
		CHECK_EQ(n, (long long)strlen(token));
		CHECK_STR(out, token);
		/* Verifying with the signing salt and the embedded max_age at signing time. */
		ch_token_data got;
		CHECK_EQ(ch_token_verify(k, out, (size_t)n, CH_TOKEN_MAX_AGE_EMBEDDED,
		                         json_int(v, "signed_at_s") * 1000, &got),
		         CH_TOKEN_OK);
		check_same_data(&d, &got);
		ch_token_key_free(k);
		count++;
	}
	CHECK(count >= 10);
	cJSON_Delete(root);
}

/* The first vector's token, key and data, for the hand-made cases. */
typedef struct fixture {
	cJSON *root;
	ch_token_key *key;
	char token[CH_TOKEN_MAX_LEN];
	size_t len;
	int64_t signed_at_ms;
} fixture;

static void
fixture_init(fixture *f)
{
	f->root = load_vectors();
	const cJSON *v0 =
	    cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(f->root, "vectors"), 0);
	const char *t = json_str(v0, "token");
	CHECK(t != NULL && strlen(t) < sizeof(f->token));
	strcpy(f->token, t);
	f->len = strlen(t);
	f->signed_at_ms = json_int(v0, "signed_at_s") * 1000;
	f->key = key_for(f->root, json_str(v0, "verify_salt"));
	ch_token_data d;
	CHECK_EQ(ch_token_verify(f->key, f->token, f->len, 60, f->signed_at_ms, &d), CH_TOKEN_OK);
	CHECK_EQ(d.integer, 42);
}

static void
fixture_free(fixture *f)
{
	ch_token_key_free(f->key);
	cJSON_Delete(f->root);
}

static ch_token_result
verify_str(const ch_token_key *k, const char *t, int64_t now)
{
	return ch_token_verify(k, t, strlen(t), 86400, now, NULL);
}

static void
test_tampered(void)
{
	fixture f;
	fixture_init(&f);
	int64_t now = f.signed_at_ms;
	char t[CH_TOKEN_MAX_LEN + 16];

	/* Every single-character change is refused, wherever it is. */
	for (size_t i = 0; i < f.len; i++) {
		strcpy(t, f.token);
		t[i] = t[i] == 'A' ? 'B' : 'A';
		ch_token_result r = verify_str(f.key, t, now);
		CHECK_MSG(r == CH_TOKEN_INVALID, "changing byte %zu gave %s", i,
		          ch_token_result_name(r));
	}
	/* Truncated anywhere. */
	for (size_t n = 0; n < f.len; n++)
		CHECK_EQ(ch_token_verify(f.key, f.token, n, 86400, now, NULL), CH_TOKEN_INVALID);
	/* Appended bytes, extra parts. */
	snprintf(t, sizeof(t), "%sA", f.token);
	CHECK_EQ(verify_str(f.key, t, now), CH_TOKEN_INVALID);
	snprintf(t, sizeof(t), "%s.", f.token);
	CHECK_EQ(verify_str(f.key, t, now), CH_TOKEN_INVALID);
	snprintf(t, sizeof(t), "%s.x", f.token);
	CHECK_EQ(verify_str(f.key, t, now), CH_TOKEN_INVALID);
	fixture_free(&f);
}

static void
test_swapped_payload(void)
{
	fixture f;
	fixture_init(&f);
	/* Signed payload of the "0" vector with the signature of the "42" vector. */
	const cJSON *v1 =
	    cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(f.root, "vectors"), 1);
	const char *t1 = json_str(v1, "token");
	const char *sig0 = strrchr(f.token, '.');
	const char *sig1 = strrchr(t1, '.');
	char t[CH_TOKEN_MAX_LEN + 16];
	snprintf(t, sizeof(t), "%.*s%s", (int)(sig1 - t1), t1, sig0);
	CHECK_EQ(verify_str(f.key, t, f.signed_at_ms), CH_TOKEN_INVALID);
	snprintf(t, sizeof(t), "%.*s%s", (int)(sig0 - f.token), f.token, sig1);
	CHECK_EQ(verify_str(f.key, t, f.signed_at_ms), CH_TOKEN_INVALID);
	fixture_free(&f);
}

static void
test_wrong_salt_and_secret(void)
{
	fixture f;
	fixture_init(&f);
	const char *skb = json_str(f.root, "secret_key_base");
	ch_token_key *k = ch_token_key_new(skb, strlen(skb), "other salt", 10);
	CHECK_EQ(verify_str(k, f.token, f.signed_at_ms), CH_TOKEN_INVALID);
	ch_token_key_free(k);
	k = ch_token_key_new(skb, strlen(skb) - 1, "user socket", 11);
	CHECK_EQ(verify_str(k, f.token, f.signed_at_ms), CH_TOKEN_INVALID);
	ch_token_key_free(k);
	fixture_free(&f);
}

static void
test_garbage_empty_missing(void)
{
	fixture f;
	fixture_init(&f);
	int64_t now = f.signed_at_ms;
	CHECK_EQ(ch_token_verify(f.key, NULL, 0, 86400, now, NULL), CH_TOKEN_MISSING);
	CHECK_EQ(ch_token_verify(f.key, "", 0, 86400, now, NULL), CH_TOKEN_INVALID);
	const char *bad[] = {
	    "not-a-token",
	    ".",
	    "..",
	    "...",
	    "SFMyNTY",
	    "SFMyNTY.",
	    "SFMyNTY..",
	    "SFMyNTY.g2g.",
	    "SFMyNTY.g2gDYSpuBgDY0XQLogFiEswDAA",
	    "XFMyNTY.g2gDYSpuBgDY0XQLogFiEswDAA.AAAA",
	    "SFMyNTY.g2gDYSpuBgDY0XQLogFiEswDAA.!!!!",
	    "SFMyNTY.*.nKSn2OSE",
	    "\xff\xfe.\x80.\x01",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_MSG(verify_str(f.key, bad[i], now) == CH_TOKEN_INVALID, "accepted \"%s\"",
		          bad[i]);
	/* Embedded NUL. */
	char t[CH_TOKEN_MAX_LEN + 16];
	memcpy(t, f.token, f.len);
	t[10] = 0;
	CHECK_EQ(ch_token_verify(f.key, t, f.len, 86400, now, NULL), CH_TOKEN_INVALID);
	fixture_free(&f);
}

/* Elixir's Base.url_decode64(padding: false) also accepts padded input. */
static void
test_padded_signature_accepted(void)
{
	fixture f;
	fixture_init(&f);
	char t[CH_TOKEN_MAX_LEN + 16];
	/* 43 signature characters: one "=" completes the last group. */
	snprintf(t, sizeof(t), "%s=", f.token);
	CHECK_EQ(verify_str(f.key, t, f.signed_at_ms), CH_TOKEN_OK);
	snprintf(t, sizeof(t), "%s==", f.token);
	CHECK_EQ(verify_str(f.key, t, f.signed_at_ms), CH_TOKEN_INVALID);
	/* The last character's two unused bits are ignored: "E" (000100) -> "F" (000101). */
	strcpy(t, f.token);
	CHECK(t[f.len - 1] == 'E');
	t[f.len - 1] = 'F';
	CHECK_EQ(verify_str(f.key, t, f.signed_at_ms), CH_TOKEN_OK);
	t[f.len - 1] = 'I'; /* 001000: a used bit changes */
	CHECK_EQ(verify_str(f.key, t, f.signed_at_ms), CH_TOKEN_INVALID);
	fixture_free(&f);
}

static void
test_sign_verify_roundtrip(void)
{
	ch_token_key *k = ch_token_key_new("a secret key base of enough length", 34, "salt", 4);
	CHECK(k != NULL);
	const int64_t ints[] = {0,           1,         255,        256,          -1,
	                        -255,        -256,      2147483647, 2147483648,   -2147483648,
	                        -2147483649, INT64_MAX, INT64_MIN,  INT64_MIN + 1};
	int64_t t0 = 1700000000123;
	char out[CH_TOKEN_MAX_LEN];
	ch_token_data d, got;
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		ch_token_data_set_integer(&d, ints[i]);
		int n = ch_token_sign(k, &d, t0, 60, out, sizeof(out));
		CHECK(n > 0);
		CHECK_EQ(ch_token_verify(k, out, (size_t)n, CH_TOKEN_MAX_AGE_EMBEDDED, t0, &got),
		         CH_TOKEN_OK);
		check_same_data(&d, &got);
	}
	static uint8_t big[CH_TOKEN_MAX_BINARY];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	const size_t lens[] = {0, 1, 2, 3, 255, 256, CH_TOKEN_MAX_BINARY};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		CHECK_EQ(ch_token_data_set_binary(&d, big, lens[i]), 0);
		int n = ch_token_sign(k, &d, t0, 60, out, sizeof(out));
		CHECK(n > 0 && (size_t)n < sizeof(out));
		CHECK_EQ(ch_token_verify(k, out, (size_t)n, CH_TOKEN_MAX_AGE_EMBEDDED, t0, &got),
		         CH_TOKEN_OK);
		check_same_data(&d, &got);
		/* Too small an output buffer. */
		CHECK_EQ(ch_token_sign(k, &d, t0, 60, out, (size_t)n), -1);
		CHECK_EQ(ch_token_sign(k, &d, t0, 60, out, (size_t)n + 1), n);
	}
	CHECK_EQ(ch_token_data_set_binary(&d, big, CH_TOKEN_MAX_BINARY + 1), -1);
	/* Deterministic. */
	char again[CH_TOKEN_MAX_LEN];
	ch_token_data_set_integer(&d, 7);
	CHECK(ch_token_sign(k, &d, t0, 60, out, sizeof(out)) > 0);
	CHECK(ch_token_sign(k, &d, t0, 60, again, sizeof(again)) > 0);
	CHECK_STR(out, again);
	/* Another key does not verify it. */
	ch_token_key *k2 = ch_token_key_new("a secret key base of enough length", 34, "salt2", 5);
	CHECK_EQ(ch_token_verify(k2, out, strlen(out), 60, t0, NULL), CH_TOKEN_INVALID);
	ch_token_key_free(k2);
	ch_token_key_free(k);
}

static void
test_max_age_precedence(void)
{
	cJSON *root = load_vectors();
	const cJSON *vectors = cJSON_GetObjectItemCaseSensitive(root, "vectors");
	const cJSON *v;
	int seen = 0;
	cJSON_ArrayForEach(v, vectors)
	{
		const char *salt = json_str(v, "sign_salt");
		if (!salt || json_int(v, "embedded_max_age_s") != 100)
			continue;
		/* Embedded 100 s, signed more than 100 s ago. */
		ch_token_key *k = key_for(root, salt);
		const char *t = json_str(v, "token");
		int64_t now = now_ms();
		CHECK_EQ(ch_token_verify(k, t, strlen(t), 315360000, now, NULL), CH_TOKEN_OK);
		CHECK_EQ(ch_token_verify(k, t, strlen(t), CH_TOKEN_MAX_AGE_EMBEDDED, now, NULL),
		         CH_TOKEN_EXPIRED);
		CHECK_EQ(ch_token_verify(k, t, strlen(t), CH_TOKEN_MAX_AGE_INFINITY, now, NULL),
		         CH_TOKEN_OK);
		ch_token_key_free(k);
		seen++;
	}
	CHECK_EQ(seen, 1);

	/* The other direction: embedded ten years, verify asks for 100 s. */
	fixture f;
	fixture_init(&f);
	CHECK_EQ(ch_token_verify(f.key, f.token, f.len, CH_TOKEN_MAX_AGE_EMBEDDED,
	                         f.signed_at_ms + 200000, NULL),
	         CH_TOKEN_OK);
	CHECK_EQ(ch_token_verify(f.key, f.token, f.len, 100, f.signed_at_ms + 200000, NULL),
	         CH_TOKEN_EXPIRED);
	fixture_free(&f);
	cJSON_Delete(root);
}

static void
test_expiry_boundary(void)
{
	ch_token_key *k = ch_token_key_new("0123456789abcdefghijklmnop", 26, "s", 1);
	ch_token_data d;
	ch_token_data_set_binary(&d, "user", 4);
	char t[CH_TOKEN_MAX_LEN + 16];
	int64_t s = 1795488535123;
	int n = ch_token_sign(k, &d, s, 10, t, sizeof(t));
	CHECK(n > 0);
	/* signed + max_age*1000 < now is expired; equality is still valid. */
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, -1, s + 10000, NULL), CH_TOKEN_OK);
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, -1, s + 10001, NULL), CH_TOKEN_EXPIRED);
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, 11, s + 10001, NULL), CH_TOKEN_OK);
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, 1, s + 1000, NULL), CH_TOKEN_OK);
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, 1, s + 1001, NULL), CH_TOKEN_EXPIRED);
	/* Signed "in the future" is accepted (plug_crypto 2.1.1). */
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, -1, s - 5000, NULL), CH_TOKEN_OK);
	/* max_age 0 is always expired, even at the signing instant. */
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, 0, s, NULL), CH_TOKEN_EXPIRED);
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, 0, s - 1000, NULL), CH_TOKEN_EXPIRED);
	/* A huge max_age does not overflow into the past. */
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, INT64_MAX - 1, INT64_MAX, NULL), CH_TOKEN_OK);

	/* Embedded max_age of 0 or negative: expired. */
	n = ch_token_sign(k, &d, s, 0, t, sizeof(t));
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, -1, s, NULL), CH_TOKEN_EXPIRED);
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, 5, s, NULL), CH_TOKEN_OK);
	n = ch_token_sign(k, &d, s, -5, t, sizeof(t));
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, -1, s, NULL), CH_TOKEN_EXPIRED);

	/* Embedded :infinity never expires, unless verify gives a max_age. */
	n = ch_token_sign(k, &d, s, CH_TOKEN_MAX_AGE_INFINITY, t, sizeof(t));
	CHECK(n > 0);
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, -1, INT64_MAX, NULL), CH_TOKEN_OK);
	CHECK_EQ(ch_token_verify(k, t, (size_t)n, 1, s + 1001, NULL), CH_TOKEN_EXPIRED);
	ch_token_key_free(k);
}

/* Appends the unpadded base64url of n bytes at p to out at *o. */
static void
b64_put(char *out, size_t *o, const uint8_t *p, size_t n)
{
	static const char tbl[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[(*o)++] = tbl[v >> 18];
		out[(*o)++] = tbl[(v >> 12) & 63];
		if (i + 1 < n)
			out[(*o)++] = tbl[(v >> 6) & 63];
		if (i + 2 < n)
			out[(*o)++] = tbl[v & 63];
	}
}

/* Builds "<head>.<b64 term>.<b64 HMAC>" independently of token.c; returns the length. */
static size_t
sign_raw(const char *skb, const char *salt, const char *head, const EVP_MD *md, const uint8_t *term,
         size_t n, char *out)
{
	size_t o = strlen(head);
	memcpy(out, head, o);
	out[o++] = '.';
	b64_put(out, &o, term, n);
	unsigned char key[32], mac[EVP_MAX_MD_SIZE];
	unsigned int maclen;
	CHECK(PKCS5_PBKDF2_HMAC(skb, (int)strlen(skb), (const unsigned char *)salt,
	                        (int)strlen(salt), 1000, EVP_sha256(), 32, key));
	CHECK(HMAC(md, key, 32, (unsigned char *)out, o, mac, &maclen));
	out[o++] = '.';
	b64_put(out, &o, mac, maclen);
	out[o] = 0;
	return o;
}

/* Signs a hand-built term (to reach the decoder's refusals behind a valid signature). */
static void
sign_raw_term(const char *skb, const char *salt, const uint8_t *term, size_t n, char *out)
{
	sign_raw(skb, salt, "SFMyNTY", EVP_sha256(), term, n, out);
}

static void
test_signed_terms_decoder(void)
{
	const char *skb = "0123456789abcdefghijklmnopqrstuvwxyz";
	ch_token_key *k = ch_token_key_new(skb, strlen(skb), "s", 1);
	char t[CH_TOKEN_MAX_LEN + 16];
	ch_token_data d;
	int64_t now = 1000;
#define T(...)                                                                                     \
	do {                                                                                       \
		static const uint8_t term_[] = {__VA_ARGS__};                                      \
		sign_raw_term(skb, "s", term_, sizeof(term_), t);                                  \
	} while (0)

	/* Sanity: {7, 1000, 60} hand-built verifies. */
	T(131, 104, 3, 97, 7, 98, 0, 0, 3, 232, 97, 60);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, now, &d), CH_TOKEN_OK);
	CHECK_EQ(d.integer, 7);
	/* Old {data, signed} form: max_age 86400. */
	T(131, 104, 2, 97, 7, 98, 0, 0, 3, 232);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, 1000 + 86400000, &d), CH_TOKEN_OK);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, 1000 + 86400001, &d), CH_TOKEN_EXPIRED);
	/* Large tuple header, non-canonical integers: accepted as binary_to_term does. */
	T(131, 105, 0, 0, 0, 3, 110, 1, 0, 7, 111, 0, 0, 0, 2, 0, 232, 3, 98, 0, 0, 0, 60);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, now, &d), CH_TOKEN_OK);
	CHECK_EQ(d.integer, 7);
	/* Float max_age 1.5 s: trunc(1.5 * 1000) ms. */
	T(131, 104, 3, 97, 7, 98, 0, 0, 3, 232, 70, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, 2500, &d), CH_TOKEN_OK);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, 2501, &d), CH_TOKEN_EXPIRED);
	/* :infinity as ATOM_EXT (older OTP). */
	T(131, 104, 3, 97, 7, 98, 0, 0, 3, 232, 100, 0, 8, 'i', 'n', 'f', 'i', 'n', 'i', 't', 'y');
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, INT64_MAX, &d), CH_TOKEN_OK);
	/* Another atom as max_age: Plug.Crypto raises when it uses it; fine if overridden. */
	T(131, 104, 3, 97, 7, 98, 0, 0, 3, 232, 119, 3, 'f', 'o', 'o');
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, now, &d), CH_TOKEN_INVALID);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), 5, now, &d), CH_TOKEN_OK);
	/* Big integer data beyond int64: refused. */
	T(131, 104, 3, 110, 9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 98, 0, 0, 3, 232, 97, 60);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, now, &d), CH_TOKEN_INVALID);
	/* 2^63 - 1 and -2^63 as bigs: accepted. */
	T(131, 104, 3, 110, 8, 0, 255, 255, 255, 255, 255, 255, 255, 127, 98, 0, 0, 3, 232, 97, 60);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, now, &d), CH_TOKEN_OK);
	CHECK_EQ(d.integer, INT64_MAX);
	T(131, 104, 3, 110, 8, 1, 0, 0, 0, 0, 0, 0, 0, 128, 98, 0, 0, 3, 232, 97, 60);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, now, &d), CH_TOKEN_OK);
	CHECK_EQ(d.integer, INT64_MIN);
	T(131, 104, 3, 110, 8, 0, 0, 0, 0, 0, 0, 0, 0, 128, 98, 0, 0, 3, 232, 97, 60);
	CHECK_EQ(ch_token_verify(k, t, strlen(t), -1, now, &d), CH_TOKEN_INVALID);

	/* Refusals behind a valid signature. */
	const struct {
		const char *what;
		uint8_t term[32];
		size_t n;
	} bad[] = {
	    {"no version", {104, 3, 97, 7, 97, 0, 97, 60}, 8},
	    {"wrong version", {130, 104, 3, 97, 7, 97, 0, 97, 60}, 9},
	    {"not a tuple", {131, 97, 7}, 3},
	    {"1-tuple", {131, 104, 1, 97, 7}, 5},
	    {"4-tuple", {131, 104, 4, 97, 7, 97, 0, 97, 60, 97, 0}, 11},
	    {"trailing byte", {131, 104, 3, 97, 7, 97, 0, 97, 60, 0}, 10},
	    {"truncated", {131, 104, 3, 97, 7, 97, 0, 97}, 8},
	    {"atom data", {131, 104, 3, 119, 1, 'a', 97, 0, 97, 60}, 10},
	    {"list data", {131, 104, 3, 106, 97, 0, 97, 60}, 8},
	    {"binary over the frame", {131, 104, 3, 109, 0, 0, 0, 9, 'a', 97, 0, 97, 60}, 13},
	    {"binary size 4 GB", {131, 104, 3, 109, 255, 255, 255, 255, 97, 0, 97, 60}, 12},
	    {"big over the frame", {131, 104, 3, 110, 200, 0, 1, 97, 0, 97, 60}, 11},
	    {"large big over the frame", {131, 104, 3, 111, 255, 255, 255, 255, 0, 1}, 10},
	    {"bad big sign", {131, 104, 3, 110, 1, 2, 7, 97, 0, 97, 60}, 11},
	    {"float signed_at", {131, 104, 3, 97, 7, 70, 0, 0, 0, 0, 0, 0, 0, 0, 97, 60}, 16},
	    {"binary max_age", {131, 104, 3, 97, 7, 97, 0, 109, 0, 0, 0, 0}, 12},
	    {"atom over the frame", {131, 104, 3, 97, 7, 97, 0, 119, 9, 'i'}, 10},
	    {"compressed", {131, 80, 0, 0, 0, 9, 120, 156}, 8},
	    {"empty", {0}, 0},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sign_raw_term(skb, "s", bad[i].term, bad[i].n, t);
		CHECK_MSG(ch_token_verify(k, t, strlen(t), 60, now, &d) == CH_TOKEN_INVALID,
		          "accepted %s", bad[i].what);
	}
	/* Binary of CH_TOKEN_MAX_BINARY + 1 bytes: refused. */
	static uint8_t term[8 + CH_TOKEN_MAX_BINARY + 1 + 4];
	size_t n = 0;
	uint32_t len = CH_TOKEN_MAX_BINARY + 1;
	term[n++] = 131, term[n++] = 104, term[n++] = 3, term[n++] = 109;
	term[n++] = (uint8_t)(len >> 24), term[n++] = (uint8_t)(len >> 16);
	term[n++] = (uint8_t)(len >> 8), term[n++] = (uint8_t)len;
	memset(term + n, 'x', len);
	n += len;
	term[n++] = 97, term[n++] = 0, term[n++] = 97, term[n++] = 60;
	static char big[CH_TOKEN_MAX_LEN * 2];
	sign_raw_term(skb, "s", term, n, big);
	CHECK_EQ(ch_token_verify(k, big, strlen(big), 60, now, &d), CH_TOKEN_INVALID);
#undef T
	ch_token_key_free(k);
}

static void
test_sha384_sha512_headers(void)
{
	/* Plug.Crypto.MessageVerifier verifies "SFMzODQ" / "SFM1MTI" tokens with HMAC-SHA384/512.
	 */
	const char *skb = "0123456789abcdefghijklmnopqrstuvwxyz";
	ch_token_key *k = ch_token_key_new(skb, strlen(skb), "s", 1);
	static const uint8_t term[] = {131, 104, 3, 97, 7, 97, 0, 97, 60}; /* {7, 0, 60} */
	const char *heads[] = {"SFMzODQ", "SFM1MTI"};
	for (int h = 0; h < 2; h++) {
		char t[256];
		size_t o = sign_raw(skb, "s", heads[h], h ? EVP_sha512() : EVP_sha384(), term,
		                    sizeof(term), t);
		ch_token_data d;
		CHECK_EQ(ch_token_verify(k, t, o, -1, 0, &d), CH_TOKEN_OK);
		CHECK_EQ(d.integer, 7);
		/* The same signature under the SHA-256 header is refused. */
		memcpy(t, "SFMyNTY", 7);
		CHECK_EQ(ch_token_verify(k, t, o, -1, 0, &d), CH_TOKEN_INVALID);
	}
	ch_token_key_free(k);
}

static void
test_key_speed(void)
{
	/* Verification with a derived key is cheap (the server needs 20,000/s; this is
	 * a loose floor that holds under sanitizers and a loaded machine). */
	fixture f;
	fixture_init(&f);
	int64_t t0 = test_now_ms();
	int n = 0;
	while (test_now_ms() - t0 < 200) {
		for (int i = 0; i < 100; i++, n++)
			CHECK_EQ(ch_token_verify(f.key, f.token, f.len, -1, f.signed_at_ms, NULL),
			         CH_TOKEN_OK);
	}
	int64_t ms = test_now_ms() - t0;
	printf("    %d verifications in %lld ms\n", n, (long long)ms);
	CHECK(n * 1000LL / (ms ? ms : 1) > 10000);
	fixture_free(&f);
}

static void
test_result_names(void)
{
	CHECK_STR(ch_token_result_name(CH_TOKEN_OK), "ok");
	CHECK_STR(ch_token_result_name(CH_TOKEN_EXPIRED), "expired");
	CHECK_STR(ch_token_result_name(CH_TOKEN_INVALID), "invalid");
	CHECK_STR(ch_token_result_name(CH_TOKEN_MISSING), "missing");
	ch_token_key_free(NULL);
	ch_token_key *k = ch_token_key_new("", 0, "", 0);
	CHECK(k != NULL);
	ch_token_key_free(k);
}

TEST_LIST = {
    TEST(test_vectors_verify),
    TEST(test_vectors_resign_identical),
    TEST(test_tampered),
    TEST(test_swapped_payload),
    TEST(test_wrong_salt_and_secret),
    TEST(test_garbage_empty_missing),
    TEST(test_padded_signature_accepted),
    TEST(test_sign_verify_roundtrip),
    TEST(test_max_age_precedence),
    TEST(test_expiry_boundary),
    TEST(test_signed_terms_decoder),
    TEST(test_sha384_sha512_headers),
    TEST(test_key_speed),
    TEST(test_result_names),
    TEST_END,
};
