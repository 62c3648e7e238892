/*
 * Unit tests of transports/connect: Phoenix's check_origin (tp_origin_allowed)
 * against exact, "//host" and wildcard entries, with the odd origins that
 * URI.parse splits differently from a naive scan (query, fragment, path,
 * userinfo, backslash, bad ports), and the decoding of connect params as
 * Plug's fetch_query_params (byte strings, the last value wins, nested keys).
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

/* Decodes q (a C string) into *p; the block to free goes in *mem. */
static int
decode(const char *q, ch_params *p, void **mem)
{
	tp_http_str s = {q, strlen(q)};
	return tp_params_decode(&s, p, mem);
}

#define CHECK_BYTES(ptr, len, lit)                                                                 \
	do {                                                                                       \
		CHECK_EQ((len), sizeof(lit) - 1);                                                  \
		if ((len) == sizeof(lit) - 1)                                                      \
			CHECK_MEM((ptr), (lit), sizeof(lit) - 1);                                  \
		CHECK_EQ((ptr)[(len)], '\0');                                                      \
	} while (0)

/* Every pair in the query's order, decoded as URI.decode_www_form: byte
 * strings with lengths, NUL bytes kept, malformed escapes kept as they are. */
static void
test_params_decode(void)
{
	ch_params p;
	void *mem;
	CHECK_EQ(
	    decode("vsn=2.0.0&token=a%2Bb+c&x&&=&a==b&k%00x=v%00w&%41%62=%zz%2%&t=%", &p, &mem), 0);
	CHECK_EQ(p.n, 8);
	CHECK_BYTES(p.items[0].key, p.items[0].key_len, "vsn");
	CHECK_BYTES(p.items[0].value, p.items[0].value_len, "2.0.0");
	CHECK_BYTES(p.items[1].value, p.items[1].value_len, "a+b c");
	CHECK_BYTES(p.items[2].key, p.items[2].key_len, "x"); /* no '=': empty value */
	CHECK_BYTES(p.items[2].value, p.items[2].value_len, "");
	CHECK_BYTES(p.items[3].key, p.items[3].key_len, ""); /* "&&" skipped; "=" kept */
	CHECK_BYTES(p.items[3].value, p.items[3].value_len, "");
	CHECK_BYTES(p.items[4].key, p.items[4].key_len, "a"); /* split at the first '=' */
	CHECK_BYTES(p.items[4].value, p.items[4].value_len, "=b");
	CHECK_BYTES(p.items[5].key, p.items[5].key_len, "k\0x");
	CHECK_BYTES(p.items[5].value, p.items[5].value_len, "v\0w");
	CHECK_BYTES(p.items[6].key, p.items[6].key_len, "Ab");
	CHECK_BYTES(p.items[6].value, p.items[6].value_len, "%zz%2%");
	CHECK_BYTES(p.items[7].value, p.items[7].value_len, "%");
	free(mem);

	CHECK_EQ(decode("", &p, &mem), 0);
	CHECK_EQ(p.n, 0);
	free(mem);
	CHECK_EQ(decode("%C3%A9=%F0%9F%98%80", &p, &mem), 0); /* UTF-8: fine */
	CHECK_BYTES(p.items[0].key, p.items[0].key_len, "\xc3\xa9");
	free(mem);
	/* Plug validates keys and values as UTF-8 once decoded (400). */
	static const char *const bad[] = {
	    "a=%ff",          "%ff=1",    "a=%C3", "a=%ED%A0%80", /* a surrogate */
	    "a=%F4%90%80%80", "a=%C0%80", /* beyond U+10FFFF; overlong NUL */
	    "a=1&b=%zz%fe",   "a=\xff",   NULL};
	for (const char *const *q = bad; *q; q++)
		CHECK_MSG(decode(*q, &p, &mem) == -1, "%s decoded", *q);
}

/* Plug's params map of query q: kind and value of key. */
static ch_param_kind
find(const char *q, const char *key, const char **v, size_t *len)
{
	ch_params p;
	void *mem;
	static char copy[256];
	*v = NULL;
	*len = 0;
	if (decode(q, &p, &mem) < 0)
		return (ch_param_kind)-1;
	const char *val;
	ch_param_kind k = ch_params_find(&p, key, &val, len);
	if (val) {
		memcpy(copy, val, *len + 1);
		*v = copy;
	}
	free(mem);
	return k;
}

typedef struct find_case {
	const char *query, *key;
	ch_param_kind kind;
	const char *value; /* for CH_PARAM_STRING */
	size_t len;
} find_case;

/* The cases checked against Phoenix 1.7.24 (Plug 1.19.2): see the report of
 * branch params; the status each gets is in bad_input.test.js. */
static void
test_params_find(void)
{
	static const find_case cases[] = {
	    {"a=1&a=2", "a", CH_PARAM_STRING, "2", 1}, /* the last one wins */
	    {"a", "a", CH_PARAM_STRING, "", 0},
	    {"=1", "", CH_PARAM_STRING, "1", 1},
	    {"=1", "a", CH_PARAM_NONE, NULL, 0},
	    {"a=%00", "a", CH_PARAM_STRING, "\0", 1},
	    {"a%00b=1", "a", CH_PARAM_NONE, NULL, 0},
	    {"token%00x=A&token=B", "token", CH_PARAM_STRING, "B", 1},
	    {"token=B&token%00x=A", "token", CH_PARAM_STRING, "B", 1},
	    {"token=T%00junk", "token", CH_PARAM_STRING, "T\0junk", 6},
	    {"a=x+y", "a", CH_PARAM_STRING, "x y", 3},
	    {"a%5Bb%5D=1", "a", CH_PARAM_NESTED, NULL, 0}, /* decoded, then split */
	    {"a[]=1&a[]=2", "a", CH_PARAM_NESTED, NULL, 0},
	    {"a[b]=1", "a", CH_PARAM_NESTED, NULL, 0},
	    {"a[b][c]=1", "a", CH_PARAM_NESTED, NULL, 0},
	    {"a[b]=1", "a[b]", CH_PARAM_NONE, NULL, 0},
	    {"a=1&a[]=2", "a", CH_PARAM_NESTED, NULL, 0},
	    {"a[]=2&a=1", "a", CH_PARAM_STRING, "1", 1},
	    /* a later a[] adds to the list the first one placed: "1" stays last */
	    {"a[]=2&a=1&a[]=3", "a", CH_PARAM_STRING, "1", 1},
	    {"a=0&a[]=2&a=1&a[]=3", "a", CH_PARAM_STRING, "1", 1},
	    {"[a]=1", "[a]", CH_PARAM_STRING, "1", 1}, /* '[' first: not nested */
	    {"[a]=1", "", CH_PARAM_NONE, NULL, 0},
	    {"a[=1", "a[", CH_PARAM_STRING, "1", 1},
	    {"a[=1", "a", CH_PARAM_NONE, NULL, 0},
	    {"a]=1", "a]", CH_PARAM_STRING, "1", 1},
	    {"a[]x=1", "a[]x", CH_PARAM_STRING, "1", 1},
	    {"a[b]c]=1", "a", CH_PARAM_NESTED, NULL, 0},
	    {"ab=1", "a", CH_PARAM_NONE, NULL, 0},
	    {"a=1", "ab", CH_PARAM_NONE, NULL, 0},
	    {"", "a", CH_PARAM_NONE, NULL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const find_case *c = &cases[i];
		const char *v;
		size_t len;
		ch_param_kind k = find(c->query, c->key, &v, &len);
		CHECK_MSG(k == c->kind, "%s [%s]: kind %d, not %d", c->query, c->key, (int)k,
		          (int)c->kind);
		if (k != c->kind)
			continue;
		CHECK_MSG(len == c->len, "%s [%s]: length %zu, not %zu", c->query, c->key, len,
		          c->len);
		if (c->value && v && len == c->len)
			CHECK_MSG(memcmp(v, c->value, len) == 0, "%s [%s]: other bytes", c->query,
			          c->key);
		CHECK_MSG((v != NULL) == (c->value != NULL), "%s [%s]: value", c->query, c->key);
	}
}

/* ch_params_get_n gives strings only; ch_params_get only those without NUL. */
static void
test_params_get(void)
{
	ch_params p;
	void *mem;
	CHECK_EQ(decode("s=abc&z=a%00b&n[]=1&e=", &p, &mem), 0);
	size_t len = 99;
	CHECK_STR(ch_params_get_n(&p, "s", &len), "abc");
	CHECK_EQ(len, 3);
	const char *z = ch_params_get_n(&p, "z", &len);
	CHECK(z != NULL);
	CHECK_EQ(len, 3);
	CHECK(z && memcmp(z, "a\0b", 3) == 0);
	len = 99;
	CHECK(ch_params_get_n(&p, "n", &len) == NULL);
	CHECK_EQ(len, 0);
	CHECK(ch_params_get_n(&p, "missing", NULL) == NULL);
	CHECK_STR(ch_params_get_n(&p, "e", &len), "");
	CHECK_EQ(len, 0);
	CHECK_STR(ch_params_get(&p, "s"), "abc");
	CHECK(ch_params_get(&p, "z") == NULL); /* holds a NUL: not a C string */
	CHECK(ch_params_get(&p, "n") == NULL);
	CHECK(ch_params_get(&p, "missing") == NULL);
	CHECK_STR(ch_params_get(&p, "e"), "");
	free(mem);
	/* no params at all (a transport that decoded nothing) */
	ch_params none = {0};
	CHECK_EQ(ch_params_find(&none, "a", NULL, NULL), CH_PARAM_NONE);
	CHECK(ch_params_get(NULL, "a") == NULL);
}

TEST_LIST = {
    TEST(test_origin_wildcard),   TEST(test_origin_exact),
    TEST(test_origin_any_scheme), TEST(test_origin_bad_entries),
    TEST(test_params_decode),     TEST(test_params_find),
    TEST(test_params_get),        TEST_END,
};
