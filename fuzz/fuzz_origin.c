/*
 * fuzz_origin: check_origin (transports/connect.h: tp_origin_allowed).
 *
 * Input: [mode byte][bytes...].  Mode bit 0 clear: the bytes are an Origin
 * header, checked against four fixed entries, and the answer must be the
 * one a small independent model of the rule gives (below): an origin is
 * scheme "://" host [":" port] ["/"], and it matches an entry when scheme,
 * port and host agree.  Bit 0 set: the bytes are an entry, a NUL, then an
 * origin, and only the absence of crashes and of an accepted origin with a
 * query, fragment or userinfo is checked.
 */
#include <ctype.h>
#include <strings.h>

#include "fuzz/fuzz.h"
#include "transports/connect.h"

static char *fixed[] = {"https://example.org", "//*.example.com", "http://localhost:4000",
                        "https://*.example.org:8443"};

static bool
ends_with_domain(const char *h, size_t n, const char *dom)
{
	size_t d = strlen(dom);
	if (n == d)
		return memcmp(h, dom, d) == 0;
	return n > d && h[n - d - 1] == '.' && memcmp(h + n - d, dom, d) == 0;
}

/* The model: whether origin p[0, n) matches one of `fixed`. */
static bool
model(const char *p, size_t n)
{
	size_t i = 0;
	if (i == n || !isalpha((unsigned char)p[i]))
		return false;
	while (i < n && (isalnum((unsigned char)p[i]) || p[i] == '+' || p[i] == '-' || p[i] == '.'))
		i++;
	size_t sl = i;
	if (n - i < 3 || memcmp(p + i, "://", 3) != 0)
		return false;
	i += 3;
	size_t h = i;
	while (i < n && (isalnum((unsigned char)p[i]) || p[i] == '-' || p[i] == '.' || p[i] == '_'))
		i++;
	size_t hl = i - h;
	if (hl == 0)
		return false;
	bool https = sl == 5 && strncasecmp(p, "https", 5) == 0;
	bool http = sl == 4 && strncasecmp(p, "http", 4) == 0;
	long port = https ? 443 : http ? 80 : -1;
	/* other schemes with a default port cannot match an entry with a port
	 * unless they name it: none of the fixed entries' ports is one */
	if (i < n && p[i] == ':') {
		size_t d = ++i;
		port = 0;
		while (i < n && isdigit((unsigned char)p[i])) {
			port = port * 10 + (p[i] - '0');
			if (port > 65535)
				return false;
			i++;
		}
		if (i == d)
			return false;
	}
	if (i < n && p[i] == '/')
		i++;
	if (i != n)
		return false;
	const char *host = p + h;
	if (https && port == 443 && hl == 11 && memcmp(host, "example.org", 11) == 0)
		return true;
	if (ends_with_domain(host, hl, "example.com"))
		return true;
	if (http && port == 4000 && hl == 9 && memcmp(host, "localhost", 9) == 0)
		return true;
	return https && port == 8443 && ends_with_domain(host, hl, "example.org");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	uint8_t mode = fuzz_byte(&in);
	tp_endpoint ep;
	memset(&ep, 0, sizeof(ep));
	char *entry = NULL;
	const uint8_t *o = in.p;
	size_t on = in.n;
	if (mode & 1) {
		const uint8_t *nul = memchr(in.p, 0, in.n);
		size_t el = nul ? (size_t)(nul - in.p) : in.n;
		entry = malloc(el + 1);
		FUZZ_CHECK(entry);
		memcpy(entry, in.p, el);
		entry[el] = '\0';
		o = nul ? nul + 1 : in.p + in.n;
		on = in.n - (size_t)(o - in.p);
		ep.origins = &entry;
		ep.norigins = 1;
	} else {
		ep.origins = fixed;
		ep.norigins = sizeof(fixed) / sizeof(fixed[0]);
	}
	char *copy = (char *)fuzz_dup(o, on);
	tp_http_str origin = {copy, on};
	bool ok = tp_origin_allowed(&ep, &origin);
	if (mode & 1) {
		if (ok)
			FUZZ_CHECK(!memchr(copy, '?', on) && !memchr(copy, '#', on) &&
			           !memchr(copy, '@', on) && !memchr(copy, '\\', on));
	} else {
		FUZZ_CHECK(ok == model(copy, on));
	}
	free(copy);
	free(entry);
	return 0;
}
