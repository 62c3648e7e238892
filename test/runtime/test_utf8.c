/* The strict UTF-8 validator (runtime/utf8.h): one-shot, incremental across
 * any cut, fail-fast, and the single-sequence length. */
#include "runtime/utf8.h"

#include "test/harness.h"

static const struct {
	const char *s;
	size_t n;
	bool valid;
} cases[] = {
    {"", 0, true},
    {"hello, world", 12, true},
    {"\xC2\x80", 2, true},                     /* U+0080 */
    {"\xDF\xBF", 2, true},                     /* U+07FF */
    {"\xE0\xA0\x80", 3, true},                 /* U+0800 */
    {"\xED\x9F\xBF", 3, true},                 /* U+D7FF */
    {"\xEE\x80\x80", 3, true},                 /* U+E000 */
    {"\xF0\x90\x80\x80", 4, true},             /* U+10000 */
    {"\xF4\x8F\xBF\xBF", 4, true},             /* U+10FFFF */
    {"\xCE\xBA\xE1\xBD\xB9\xCF\x83", 7, true}, /* "kosme" */
    {"\x80", 1, false},                        /* stray continuation */
    {"\xC0\xAF", 2, false},                    /* overlong "/" */
    {"\xC1\xBF", 2, false},                    /* overlong */
    {"\xE0\x9F\xBF", 3, false},                /* overlong */
    {"\xED\xA0\x80", 3, false},                /* U+D800 */
    {"\xED\xBF\xBF", 3, false},                /* U+DFFF */
    {"\xF0\x8F\xBF\xBF", 4, false},            /* overlong */
    {"\xF4\x90\x80\x80", 4, false},            /* U+110000 */
    {"\xF5\x80\x80\x80", 4, false},            /* beyond */
    {"\xFF", 1, false},
    {"\xE2\x82", 2, false},          /* cut short */
    {"abc\xC2", 4, false},           /* cut short */
    {"abcdefgh\xC2\x41", 10, false}, /* lead + ASCII */
};

static void
test_one_shot_and_every_cut(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const uint8_t *p = (const uint8_t *)cases[i].s;
		size_t n = cases[i].n;
		CHECK_MSG(rt_utf8_valid(p, n) == cases[i].valid, "case %zu", i);
		for (size_t cut = 0; cut <= n; cut++) {
			uint32_t st = rt_utf8_feed(RT_UTF8_ACCEPT, p, cut);
			st = rt_utf8_feed(st, p + cut, n - cut);
			CHECK_MSG((st == RT_UTF8_ACCEPT) == cases[i].valid, "case %zu cut %zu", i,
			          cut);
		}
	}
}

static void
test_fail_fast_and_incomplete(void)
{
	/* A fragment may end inside a sequence ... */
	uint32_t st = rt_utf8_feed(RT_UTF8_ACCEPT, (const uint8_t *)"ab\xF0\x9F", 4);
	CHECK(st != RT_UTF8_ACCEPT && st != RT_UTF8_REJECT);
	CHECK_EQ(rt_utf8_feed(st, (const uint8_t *)"\x98\x80", 2), RT_UTF8_ACCEPT);
	/* ... but an invalid byte rejects at once, and stays rejected. */
	CHECK_EQ(rt_utf8_feed(RT_UTF8_ACCEPT, (const uint8_t *)"\xED\xA0", 2), RT_UTF8_REJECT);
	CHECK_EQ(rt_utf8_feed(RT_UTF8_REJECT, (const uint8_t *)"ok", 2), RT_UTF8_REJECT);
}

static void
test_seq_len(void)
{
	CHECK_EQ(rt_utf8_seq_len((const uint8_t *)"a", 1), 1u);
	CHECK_EQ(rt_utf8_seq_len((const uint8_t *)"\xC2\x80z", 3), 2u);
	CHECK_EQ(rt_utf8_seq_len((const uint8_t *)"\xE0\xA0\x80", 3), 3u);
	CHECK_EQ(rt_utf8_seq_len((const uint8_t *)"\xF4\x8F\xBF\xBF\x80", 5), 4u);
	CHECK_EQ(rt_utf8_seq_len((const uint8_t *)"\xF0\x90\x80", 3), 0u); /* cut short */
	CHECK_EQ(rt_utf8_seq_len((const uint8_t *)"\xED\xA0\x80", 3), 0u);
	CHECK_EQ(rt_utf8_seq_len((const uint8_t *)"\x80", 1), 0u);
}

TEST_LIST = {
    TEST(test_one_shot_and_every_cut),
    TEST(test_fail_fast_and_incomplete),
    TEST(test_seq_len),
    TEST_END,
};
