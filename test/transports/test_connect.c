/*
 * Unit tests of transports/connect: Phoenix's check_origin (tp_origin_allowed)
 * against exact, "//host" and wildcard entries, with the odd origins that
 * URI.parse splits differently from a naive scan (query, fragment, path,
 * userinfo, backslash, bad ports), and the decoding of connect params.
 */
#include "transports/connect.h"

#include "test/harness.h"

/* An endpoint that only has allowed origins (all tp_origin_allowed reads). */
static bool
allowed(const char *const *entries, const char *origin)
{
	tp_endpoint ep;
	memset(&ep, 0, sizeof(ep));
	ep.origins = (char **)entries;
	while (entries[ep.norigins])
		ep.norigins++;
	tp_http_str o = {origin, strlen(origin)};
	return tp_origin_allowed(&ep, &o);
}

typedef struct origin_case {
	const char *origin;
	bool ok;
} origin_case;

static void
check_table(const char *const *entries, const origin_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		CHECK_MSG(allowed(entries, cases[i].origin) == cases[i].ok,
		          "entries [%s, ...]: origin \"%s\" %s, want %s", entries[0],
		          cases[i].origin, cases[i].ok ? "refused" : "accepted",
		          cases[i].ok ? "accepted" : "refused");
}

#define CHECK_TABLE(entries, cases)                                                                \
	check_table((entries), (cases), sizeof(cases) / sizeof(cases[0]))

/* The https entry for "*.example.org": that domain and its subdomains, on port 443 only. */
static void
test_origin_wildcard(void)
{
	static const char *const entries[] = {"https://*.example.org", NULL};
	static const origin_case cases[] = {
	    {"https://a.example.org", true},
	    {"https://a.b.example.org", true},
	    {"https://example.org", true}, /* Phoenix: the domain itself too */
	    {"https://a.example.org/", true},
	    {"https://a.example.org:443", true},
	    {"HTTPS://a.example.org", true}, /* URI.parse lowercases the scheme */
	    {"https://a.example.org:8443", false},
	    {"http://a.example.org", false},
	    {"https://aexample.org", false},
	    {"https://a.example.org.evil.com", false},
	    {"https://A.EXAMPLE.ORG", false}, /* hosts compare as they are (Phoenix) */
	    /* what is not the host */
	    {"https://evil.com?.example.org", false},
	    {"https://evil.com#.example.org", false},
	    {"https://evil.com/.example.org", false},
	    {"https://evil.com\\.example.org", false},
	    {"https://evil.com%2e.example.org", false},
	    {"https://evil.com;.example.org", false},
	    {"https://a.example.org@evil.com", false},
	    {"https://evil.com@a.example.org", false}, /* no userinfo in an Origin */
	    {"https://evil.com:80@a.example.org", false},
	    {"https://evil.com:443.example.org", false},
	    {"https://a.example.org/x", false},
	    {"https://a.example.org?x", false},
	    {"https://a.example.org#x", false},
	    {"https://a.example.org//", false},
	    {"https://a.example.org\t", false},
	    {" https://a.example.org", false},
	    /* ports */
	    {"https://a.example.org:69999", false},
	    {"https://a.example.org:65536", false},
	    {"https://a.example.org:99999999999999999999443", false},
	    {"https://a.example.org:", false},
	    {"https://a.example.org:+443", false},
	    {"https://a.example.org:-443", false},
	    {"https://a.example.org:443x", false},
	    {"https://a.example.org:0443", true}, /* decimal 443 */
	    /* no host */
	    {"null", false},
	    {"", false},
	    {"https://", false},
	    {"https://:443", false},
	    {"https:a.example.org", false},
	    {"https:///a.example.org", false},
	    {"//a.example.org", false}, /* an Origin has a scheme */
	    {"https://*.example.org", false},
	};
	CHECK_TABLE(entries, cases);
}

/* Exact entries: scheme, host and the port (explicit, or the scheme's default). */
static void
test_origin_exact(void)
{
	static const char *const entries[] = {"http://good.example", "https://app.example:8443",
	                                      "http://[::1]:4000", NULL};
	static const origin_case cases[] = {
	    {"http://good.example", true},
	    {"http://good.example:80", true},
	    {"http://good.example/", true},
	    {"http://good.example:8080", false}, /* the entry's port is 80 (URI.parse) */
	    {"https://good.example", false},
	    {"ws://good.example", false},
	    {"http://sub.good.example", false},
	    {"http://good.example.evil", false},
	    {"http://good.example?", false},
	    {"http://x@good.example", false},
	    {"https://app.example:8443", true},
	    {"https://app.example", false},
	    {"https://app.example:443", false},
	    {"http://[::1]:4000", true},
	    {"http://[::1]", false},
	    {"http://[::1:4000", false},
	    {"http://::1:4000", false},
	};
	CHECK_TABLE(entries, cases);
}

/* "//host" entries: any scheme; any port unless the entry gives one. */
static void
test_origin_any_scheme(void)
{
	static const char *const entries[] = {"//other.example", "//another.example:888",
	                                      "//*.trusted.example", NULL};
	static const origin_case cases[] = {
	    {"http://other.example", true},
	    {"https://other.example:4000", true},
	    {"chrome-extension://other.example", true},
	    {"https://another.example:888", true},
	    {"http://another.example:888", true},
	    {"https://another.example", false},
	    {"http://another.example:8888", false},
	    {"https://a.trusted.example", true},
	    {"http://trusted.example:1", true},
	    {"https://a.trusted.example?.other.example", false},
	    {"https://eviltrusted.example", false},
	    {"https://evil.example#.trusted.example", false},
	    {"https://evil.example\\.trusted.example", false},
	};
	CHECK_TABLE(entries, cases);
}

/* Entries that do not parse match nothing; the others still do. */
static void
test_origin_bad_entries(void)
{
	static const char *const entries[] = {
	    "good.example",           "https://",   "https://x.example:69999",
	    "https://y.example/path", "https://*.", NULL};
	static const origin_case cases[] = {
	    {"https://good.example", false},
	    {"https://x.example:69999", false},
	    {"https://x.example", false},
	    {"https://y.example", false},
	    {"https://.", false},
	};
	CHECK_TABLE(entries, cases);
	static const char *const more[] = {"https://*.", "https://ok.example", NULL};
	CHECK(allowed(more, "https://ok.example"));
}

static void
test_params_decode(void)
{
	tp_http_str q = {"vsn=2.0.0&token=a%2Bb&x", 23};
	ch_params p;
	void *mem;
	CHECK_EQ(tp_params_decode(&q, &p, &mem), 0);
	CHECK_EQ(p.n, 3);
	CHECK_STR(p.items[0].key, "vsn");
	CHECK_STR(p.items[0].value, "2.0.0");
	CHECK_STR(p.items[1].value, "a+b");
	CHECK_STR(p.items[2].key, "x");
	CHECK_STR(p.items[2].value, "");
	free(mem);
	tp_http_str bad = {"a=%zz", 5};
	CHECK_EQ(tp_params_decode(&bad, &p, &mem), -1);
}

TEST_LIST = {
    TEST(test_origin_wildcard),    TEST(test_origin_exact),  TEST(test_origin_any_scheme),
    TEST(test_origin_bad_entries), TEST(test_params_decode), TEST_END,
};
