/*
 * connect.h: what every transport of the Phoenix socket does with the HTTP
 * request that opens it, before the socket's connect (connect.c; not for
 * apps): the query parameters and Phoenix's check_origin.  Pure functions;
 * any thread.
 */
#ifndef transports_connect_h
#define transports_connect_h

#include <stdbool.h>

#include "channels/channels.h"
#include "transports/endpoint.h"
#include "transports/http.h"

/*
 * Phoenix's check_origin against ep's allowed origins: true when origin (the
 * Origin header's value) matches an entry "scheme://host[:port]",
 * "//host[:port]" (any scheme) or one whose host is "*.example.com" (that
 * domain and its subdomains).  As Phoenix (URI.parse): an entry's port is its
 * explicit one, else its scheme's default ("https://h" is port 443), else any
 * ("//h"); schemes compare case-insensitively, hosts exactly.  origin must be
 * a well-formed serialized origin, scheme://host[:port] with an optional
 * trailing "/" and a port 0..65535 (connect.c says what else is refused); an
 * entry that does not parse matches nothing.  Does not look at
 * ep->check_origin: the caller decides whether to check.
 */
bool tp_origin_allowed(const tp_endpoint *ep, const tp_http_str *origin);

/*
 * Decodes every parameter of the query string q into *out as Plug's
 * fetch_query_params does (Plug.Conn.Query.decode): split at '&' (empty
 * parts skipped) and at the first '=' (none: an empty value), then each key
 * and value decoded as URI.decode_www_form ('+' a space, "%XX" a byte, a
 * malformed escape kept as it is) into byte strings with lengths, in the
 * query's order (see ch_param; ch_params_find gives Plug's params map).
 * The items and their strings are one malloc'ed block, returned in *mem (free
 * it after the last use of *out).  Returns 0, or -1 when a decoded key or
 * value is not valid UTF-8 (Plug raises InvalidQueryError: HTTP 400; nothing
 * to free then).
 */
int tp_params_decode(const tp_http_str *q, ch_params *out, void **mem);

#endif /* transports_connect_h */
