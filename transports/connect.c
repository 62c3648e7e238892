/*
 * What every transport of the Phoenix socket does with the HTTP request that
 * opens it, before the socket's connect: Phoenix's check_origin and the
 * decoding of the query parameters (see connect.h).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/xalloc.h"
#include "transports/connect.h"

/* Phoenix's check_origin: an origin matches an allowed entry
 * "scheme://host[:port]", "//host[:port]" (any scheme) or with a host
 * "*.example.com" (any subdomain).  Scheme and port are compared only when
 * the entry has them.  url_parts: the pieces of one URL, pointing into it (a
 * value on the caller's stack). */
typedef struct url_parts {
	const char *scheme, *host;
	size_t scheme_len, host_len;
	int port; /* -1: none given */
} url_parts;

static bool
url_split(const char *p, size_t n, url_parts *u)
{
	memset(u, 0, sizeof(*u));
	u->port = -1;
	size_t sep = 0;
	while (sep + 1 < n && !(p[sep] == '/' && p[sep + 1] == '/'))
		sep++;
	if (sep + 1 >= n)
		return false;
	if (sep > 0) {
		if (p[sep - 1] != ':')
			return false;
		u->scheme = p;
		u->scheme_len = sep - 1;
	}
	size_t h = sep + 2, end = h;
	while (end < n && p[end] != '/')
		end++;
	size_t colon = end, rb = h;
	if (h < end && p[h] == '[') { /* IPv6 literal: the port comes after ']' */
		while (rb < end && p[rb] != ']')
			rb++;
		if (rb == end)
			return false;
	}
	for (size_t q = rb; q < end; q++)
		if (p[q] == ':')
			colon = q;
	u->host = p + h;
	u->host_len = colon - h;
	if (colon < end) {
		int port = 0;
		if (colon + 1 == end)
			return false;
		for (size_t q = colon + 1; q < end; q++) {
			if (p[q] < '0' || p[q] > '9' || port > 65535)
				return false;
			port = port * 10 + (p[q] - '0');
		}
		u->port = port;
	}
	return u->host_len > 0;
}

static int
default_port(const url_parts *u)
{
	if (u->scheme_len == 5 && strncasecmp(u->scheme, "https", 5) == 0)
		return 443;
	return 80;
}

bool
tp_origin_allowed(const tp_endpoint *ep, const tp_http_str *origin)
{
	url_parts o;
	if (!url_split(origin->ptr, origin->len, &o) || !o.scheme)
		return false;
	for (size_t i = 0; i < ep->norigins; i++) {
		url_parts a;
		if (!url_split(ep->origins[i], strlen(ep->origins[i]), &a))
			continue;
		if (a.scheme && (a.scheme_len != o.scheme_len ||
		                 strncasecmp(a.scheme, o.scheme, a.scheme_len) != 0))
			continue;
		if (a.port >= 0 && a.port != (o.port >= 0 ? o.port : default_port(&o)))
			continue;
		if (a.host_len > 2 && a.host[0] == '*' && a.host[1] == '.') {
			size_t sl = a.host_len - 1; /* ".example.com" */
			if (o.host_len > sl &&
			    strncasecmp(o.host + o.host_len - sl, a.host + 1, sl) == 0)
				return true;
		} else if (a.host_len == o.host_len &&
		           strncasecmp(a.host, o.host, a.host_len) == 0) {
			return true;
		}
	}
	return false;
}

int
tp_params_decode(const tp_http_str *q, ch_params *out, void **mem)
{
	size_t pos = 0, n = 0;
	tp_http_str k, v;
	while (tp_http_query_next(q->ptr, q->len, &pos, &k, &v))
		n++;
	size_t strcap = q->len + 2 * n + 1;
	char *block = rt_xmalloc(n * sizeof(ch_param) + strcap);
	ch_param *items = (ch_param *)block;
	char *s = block + n * sizeof(ch_param), *end = s + strcap;
	size_t i = 0;
	pos = 0;
	while (tp_http_query_next(q->ptr, q->len, &pos, &k, &v)) {
		ssize_t kl = tp_http_form_decode(k.ptr, k.len, s, (size_t)(end - s));
		if (kl < 0)
			goto bad;
		items[i].key = s;
		s += kl + 1;
		ssize_t vl = tp_http_form_decode(v.ptr, v.len, s, (size_t)(end - s));
		if (vl < 0)
			goto bad;
		items[i].value = s;
		s += vl + 1;
		i++;
	}
	out->items = items;
	out->n = n;
	*mem = block;
	return 0;
bad:
	free(block);
	return -1;
}
