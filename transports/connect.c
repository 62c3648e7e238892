/*
 * What every transport of the Phoenix socket does with the HTTP request that
 * opens it, before the socket's connect: Phoenix's check_origin and the
 * decoding of the query parameters (see connect.h).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/utf8.h"
#include "runtime/xalloc.h"
#include "transports/connect.h"

/*
 * Phoenix's check_origin (Phoenix.Socket.Transport: URI.parse of the Origin
 * and of each allowed entry, then compare?/compare_host?): an entry gives a
 * scheme (optional: "//host"), a host, which may be "*.example.com" (that
 * domain and its subdomains), and a port (explicit, else the scheme's
 * default as URI.default_port, else none).  The origin matches when the
 * entry's scheme, port and host each are absent or equal; schemes are
 * compared lowercased (URI.parse lowercases them), hosts as they are.
 *
 * The parse is stricter than URI.parse: an Origin is only what a browser
 * sends, scheme "://" host [":" port] (a port 0..65535 in decimal, an IPv6
 * host in brackets), with at most a "/" after it; userinfo, any other path,
 * a query or a fragment, an empty port, and a host with bytes other than
 * letters, digits, '-', '.' and '_' are refused.  So a host is exactly what
 * URI.parse finds, and "https://evil.com?.example.org" (host evil.com for
 * URI.parse) or "https://evil.com\.example.org" (a host URI.parse takes
 * whole, which would end in ".example.org") never match "*.example.org".
 *
 * url_parts: the pieces of one origin or entry, pointing into it (a value on
 * the caller's stack).
 */
typedef struct url_parts {
	const char *scheme, *host;
	size_t scheme_len, host_len;
	long port; /* -1: none (no scheme, or one without a default port) */
	bool wild; /* an entry's "*." host: host is the domain after it */
} url_parts;

static int
lc(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static bool
is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* The default port of the lowercased scheme (URI.default_port), or -1. */
static long
default_port(const char *s, size_t n)
{
	static const struct {
		const char *scheme;
		long port;
	} tab[] = {{"http", 80}, {"https", 443}, {"ws", 80},   {"wss", 443},
	           {"ftp", 21},  {"sftp", 22},   {"tftp", 69}, {"ldap", 389}};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		size_t k = 0;
		while (k < n && tab[i].scheme[k] && lc(s[k]) == tab[i].scheme[k])
			k++;
		if (k == n && !tab[i].scheme[k])
			return tab[i].port;
	}
	return -1;
}

/*
 * Parses p[0, n) as scheme "://" host [":" port] ["/"], or (entry) also
 * "//" host ...; entry also allows a "*." host.  Returns false for anything
 * else (see above).
 */
static bool
url_split(const char *p, size_t n, bool entry, url_parts *u)
{
	size_t i = 0;
	memset(u, 0, sizeof(*u));
	u->port = -1;
	if (i < n && is_alpha((unsigned char)p[i])) { /* RFC 3986 scheme */
		while (i < n && (is_alpha((unsigned char)p[i]) || is_digit((unsigned char)p[i]) ||
		                 p[i] == '+' || p[i] == '-' || p[i] == '.'))
			i++;
		if (i == n || p[i] != ':')
			return false;
		u->scheme = p;
		u->scheme_len = i++;
		u->port = default_port(u->scheme, u->scheme_len);
	} else if (!entry) {
		return false;
	}
	if (n - i < 2 || p[i] != '/' || p[i + 1] != '/')
		return false;
	i += 2;
	if (entry && n - i >= 2 && p[i] == '*' && p[i + 1] == '.') {
		u->wild = true;
		i += 2;
	}
	size_t h = i;
	if (i < n && p[i] == '[') { /* IPv6 literal; the host is what is inside */
		h = ++i;
		while (i < n &&
		       (is_digit((unsigned char)p[i]) ||
		        (lc((unsigned char)p[i]) >= 'a' && lc((unsigned char)p[i]) <= 'f') ||
		        p[i] == ':' || p[i] == '.'))
			i++;
		if (i == n || p[i] != ']' || i == h || u->wild)
			return false;
		u->host = p + h;
		u->host_len = i++ - h;
	} else {
		while (i < n && (is_alpha((unsigned char)p[i]) || is_digit((unsigned char)p[i]) ||
		                 p[i] == '-' || p[i] == '.' || p[i] == '_'))
			i++;
		if (i == h)
			return false;
		u->host = p + h;
		u->host_len = i - h;
	}
	if (i < n && p[i] == ':') {
		size_t d = ++i;
		long port = 0;
		while (i < n && is_digit((unsigned char)p[i])) {
			port = port * 10 + (p[i] - '0');
			if (port > 65535)
				return false;
			i++;
		}
		if (i == d)
			return false;
		u->port = port;
	}
	if (i < n && p[i] == '/')
		i++;
	return i == n;
}

bool
tp_origin_allowed(const tp_endpoint *ep, const tp_http_str *origin)
{
	url_parts o;
	if (!url_split(origin->ptr, origin->len, false, &o))
		return false;
	for (size_t i = 0; i < ep->norigins; i++) {
		url_parts a;
		if (!url_split(ep->origins[i], strlen(ep->origins[i]), true, &a))
			continue;
		if (a.scheme && (a.scheme_len != o.scheme_len ||
		                 strncasecmp(a.scheme, o.scheme, a.scheme_len) != 0))
			continue;
		if (a.port >= 0 && a.port != o.port)
			continue;
		if (a.host_len == o.host_len && memcmp(a.host, o.host, a.host_len) == 0)
			return true; /* the host, or the domain of a "*." entry itself */
		if (a.wild && o.host_len > a.host_len &&
		    o.host[o.host_len - a.host_len - 1] == '.' &&
		    memcmp(o.host + o.host_len - a.host_len, a.host, a.host_len) == 0)
			return true;
	}
	return false;
}

static int
hex_digit(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * URI.decode_www_form of Elixir 1.14 (what Plug.Conn.Query calls): '+' is a
 * space, "%XX" the byte XX, and a '%' not followed by two hex digits is kept
 * as it is ("%zz", a trailing "%2").  Writes in[0, n) decoded and a NUL into
 * out (room for n + 1 bytes) and returns the decoded length.
 */
static size_t
www_form_decode(const char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%' && n - i >= 3) {
			int h = hex_digit((unsigned char)in[i + 1]),
			    l = hex_digit((unsigned char)in[i + 2]);
			if (h >= 0 && l >= 0) {
				c = (unsigned char)(h * 16 + l);
				i += 2;
			}
		}
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return o;
}

int
tp_params_decode(const tp_http_str *q, ch_params *out, void **mem)
{
	size_t pos = 0, n = 0;
	tp_http_str k, v;
	while (tp_http_query_next(q->ptr, q->len, &pos, &k, &v))
		n++;
	/* Decoding never grows: each key and value fits in its raw bytes plus
	 * its NUL. */
	size_t strcap = q->len + 2 * n + 1;
	char *block = rt_xmalloc(n * sizeof(ch_param) + strcap);
	ch_param *items = (ch_param *)block;
	char *s = block + n * sizeof(ch_param);
	size_t i = 0;
	pos = 0;
	while (tp_http_query_next(q->ptr, q->len, &pos, &k, &v)) {
		ch_param *it = &items[i++];
		it->key = s;
		it->key_len = www_form_decode(k.ptr, k.len, s);
		s += it->key_len + 1;
		it->value = s;
		it->value_len = www_form_decode(v.ptr, v.len, s);
		s += it->value_len + 1;
		/* Plug validates both as UTF-8 (InvalidQueryError: 400). */
		if (!rt_utf8_valid((const uint8_t *)it->key, it->key_len) ||
		    !rt_utf8_valid((const uint8_t *)it->value, it->value_len)) {
			free(block);
			return -1;
		}
	}
	out->items = items;
	out->n = n;
	*mem = block;
	return 0;
}
