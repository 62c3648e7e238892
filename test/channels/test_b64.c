/* base64 on OpenSSL (channels/b64.h): RFC 4648 vectors, the URL-safe
 * alphabet, and Base.url_decode64(padding: false)'s acceptance rules. */
#include "channels/b64.h"

#include "test/harness.h"

static void
test_rfc4648_vectors(void)
{
	static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const std[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
	                                  "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char out[16];
		size_t n = strlen(in[i]);
		CHECK_EQ(ch_b64_encode((const uint8_t *)in[i], n, out), CH_B64_LEN(n));
		CHECK_STR(out, std[i]);
		memset(out, '#', sizeof(out));
		CHECK_EQ(ch_b64url_encode((const uint8_t *)in[i], n, out), CH_B64URL_LEN(n));
		CHECK(out[CH_B64URL_LEN(n)] == '#'); /* no NUL, no padding */
		CHECK_MEM(out, url[i], CH_B64URL_LEN(n));
		uint8_t dec[16];
		CHECK_EQ(ch_b64url_decode(url[i], strlen(url[i]), dec, sizeof(dec)), (long)n);
		CHECK_MEM(dec, in[i], n);
		CHECK_EQ(ch_b64url_decode(std[i], strlen(std[i]), dec, sizeof(dec)), (long)n);
		CHECK_MEM(dec, in[i], n);
	}
}

static void
test_url_alphabet_and_long_input(void)
{
	uint8_t in[300], dec[300];
	char out[CH_B64URL_LEN(300)], std[CH_B64_LEN(300) + 1];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 7 + 0xF8);
	for (size_t n = 0; n <= sizeof(in); n++) {
		size_t m = ch_b64url_encode(in, n, out);
		CHECK_EQ(m, CH_B64URL_LEN(n));
		size_t k = ch_b64_encode(in, n, std);
		for (size_t j = 0; j < m; j++)
			CHECK(out[j] == (std[j] == '+' ? '-' : std[j] == '/' ? '_' : std[j]));
		for (size_t j = m; j < k; j++)
			CHECK(std[j] == '=');
		CHECK_EQ(ch_b64url_decode(out, m, dec, sizeof(dec)), (long)n);
		CHECK_MEM(dec, in, n);
	}
	CHECK(memchr(out, '+', sizeof(out)) == NULL && memchr(out, '/', sizeof(out)) == NULL);
}

static void
test_decode_rules(void)
{
	uint8_t d[8];
	/* unused low bits are ignored: "Zh" decodes like "Zg" */
	CHECK_EQ(ch_b64url_decode("Zh", 2, d, sizeof(d)), 1L);
	CHECK(d[0] == 'f');
	/* a length of 1 mod 4 */
	CHECK_EQ(ch_b64url_decode("Zm9vY", 5, d, sizeof(d)), -1L);
	/* padding only at the end of a multiple of 4 */
	CHECK_EQ(ch_b64url_decode("Zg=", 3, d, sizeof(d)), -1L);
	CHECK_EQ(ch_b64url_decode("Zg===", 5, d, sizeof(d)), -1L);
	CHECK_EQ(ch_b64url_decode("Z===", 4, d, sizeof(d)), -1L);
	CHECK_EQ(ch_b64url_decode("====", 4, d, sizeof(d)), -1L);
	CHECK_EQ(ch_b64url_decode("Zg==Zg==", 8, d, sizeof(d)), -1L);
	/* the standard alphabet, whitespace and anything else */
	CHECK_EQ(ch_b64url_decode("+/8=", 4, d, sizeof(d)), -1L);
	CHECK_EQ(ch_b64url_decode("-_8=", 4, d, sizeof(d)), 2L);
	CHECK(d[0] == 0xFB && d[1] == 0xFF);
	CHECK_EQ(ch_b64url_decode(" Zg", 3, d, sizeof(d)), -1L);
	CHECK_EQ(ch_b64url_decode("Zg\n", 3, d, sizeof(d)), -1L);
	CHECK_EQ(ch_b64url_decode("Z\0g=", 4, d, sizeof(d)), -1L);
	/* the result must fit */
	CHECK_EQ(ch_b64url_decode("Zm9vYmFy", 8, d, 5), -1L);
	CHECK_EQ(ch_b64url_decode("Zm9vYmFy", 8, d, 6), 6L);
	CHECK_EQ(ch_b64url_decode("", 0, d, 0), 0L);
}

TEST_LIST = {
    TEST(test_rfc4648_vectors),
    TEST(test_url_alphabet_and_long_input),
    TEST(test_decode_rules),
    TEST_END,
};
