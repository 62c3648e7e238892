/*
 * The envelope of cluster frames (cluster/envelope.h): msgpack-c's packer
 * writes it, a strict reader of its one shape reads it.
 */
#include <msgpack.h>
#include <string.h>

#include "cluster/envelope.h"

#define MAGIC "phxc"

/* ------------------------------------------------------------------ names */

static bool
name_char(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '@' || ch == '.' || ch == '_' || ch == '-';
}

bool
cl_env_name_ok(const char *s, size_t len)
{
	if (len == 0 || len >= CL_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!name_char((unsigned char)s[i]))
			return false;
	return true;
}

bool
cl_env_addr_ok(const char *s, size_t len)
{
	if (len == 0 || len >= CL_ADDR_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!name_char(ch) &&
		    (ch == '\0' || !strchr(":/[]%+", ch))) /* strchr finds the NUL */
			return false;
	}
	return true;
}

/* ------------------------------------------------------------------ encoding */

/* The packer's output: a fixed buffer (CL_ENV_HEAD_MAX or the caller's). */
typedef struct fixbuf {
	uint8_t *p;
	size_t len, cap;
	bool overflow;
} fixbuf;

static int
fixbuf_write(void *data, const char *buf, size_t len)
{
	fixbuf *b = data;
	if (len > b->cap - b->len) {
		b->overflow = true;
		return -1;
	}
	memcpy(b->p + b->len, buf, len);
	b->len += len;
	return 0;
}

static void
pack_cstr(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

size_t
cl_env_head(const cl_env *e, uint8_t *out)
{
	if (!cl_env_name_ok(e->from, strlen(e->from)) ||
	    (e->to[0] && !cl_env_name_ok(e->to, strlen(e->to))) || e->body_len > UINT32_MAX)
		return 0;
	fixbuf b = {.p = out, .cap = CL_ENV_HEAD_MAX};
	msgpack_packer pk;
	msgpack_packer_init(&pk, &b, fixbuf_write);
	msgpack_pack_array(&pk, 9);
	pack_cstr(&pk, MAGIC);
	msgpack_pack_uint32(&pk, e->version);
	msgpack_pack_int(&pk, e->kind);
	pack_cstr(&pk, e->from);
	msgpack_pack_uint64(&pk, e->incarnation);
	msgpack_pack_uint64(&pk, e->seq);
	if (e->to[0])
		pack_cstr(&pk, e->to);
	else
		msgpack_pack_nil(&pk);
	msgpack_pack_int(&pk, e->service);
	msgpack_pack_bin(&pk, e->body_len);
	return b.overflow ? 0 : b.len;
}

size_t
cl_env_hb_encode(const char *const *addrs, size_t n, uint8_t *out, size_t cap)
{
	fixbuf b = {.p = out, .cap = cap};
	msgpack_packer pk;
	msgpack_packer_init(&pk, &b, fixbuf_write);
	msgpack_pack_array(&pk, n);
	for (size_t i = 0; i < n; i++)
		pack_cstr(&pk, addrs[i]);
	return b.overflow ? 0 : b.len;
}

/* ------------------------------------------------------------------ decoding */

/* A cursor over untrusted bytes: every read checks what is left. */
typedef struct rd {
	const uint8_t *p, *end;
} rd;

static bool
rd_be(rd *r, size_t n, uint64_t *v)
{
	if ((size_t)(r->end - r->p) < n)
		return false;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++)
		x = x << 8 | r->p[i];
	r->p += n;
	*v = x;
	return true;
}

/* An array header: its element count. */
static bool
rd_array(rd *r, uint64_t *n)
{
	if (r->p >= r->end)
		return false;
	uint8_t t = *r->p++;
	if ((t & 0xf0) == 0x90) {
		*n = t & 0x0f;
		return true;
	}
	if (t == 0xdc)
		return rd_be(r, 2, n);
	if (t == 0xdd)
		return rd_be(r, 4, n);
	return false;
}

/* A non-negative integer of any msgpack width (a positive value in a
 * signed encoding too: msgpack-c packs small ints either way). */
static bool
rd_uint(rd *r, uint64_t *v)
{
	if (r->p >= r->end)
		return false;
	uint8_t t = *r->p++;
	if (t <= 0x7f) {
		*v = t;
		return true;
	}
	uint64_t x;
	switch (t) {
	case 0xcc:
	case 0xd0:
		if (!rd_be(r, 1, &x))
			return false;
		break;
	case 0xcd:
	case 0xd1:
		if (!rd_be(r, 2, &x))
			return false;
		break;
	case 0xce:
	case 0xd2:
		if (!rd_be(r, 4, &x))
			return false;
		break;
	case 0xcf:
	case 0xd3:
		if (!rd_be(r, 8, &x))
			return false;
		break;
	default:
		return false;
	}
	/* signed encodings: refuse negative values */
	if ((t == 0xd0 && x > 0x7f) || (t == 0xd1 && x > 0x7fff) || (t == 0xd2 && x > 0x7fffffff) ||
	    (t == 0xd3 && x > (uint64_t)INT64_MAX))
		return false;
	*v = x;
	return true;
}

/* The next n bytes (borrowed), if there. */
static bool
rd_span(rd *r, uint64_t n, const void **out, size_t *len)
{
	if ((uint64_t)(r->end - r->p) < n)
		return false;
	*out = r->p;
	*len = (size_t)n;
	r->p += n;
	return true;
}

/* A str (borrowed). */
static bool
rd_str(rd *r, const char **s, size_t *len)
{
	if (r->p >= r->end)
		return false;
	uint8_t t = *r->p++;
	uint64_t n;
	if ((t & 0xe0) == 0xa0)
		n = t & 0x1f;
	else if (t == 0xd9) {
		if (!rd_be(r, 1, &n))
			return false;
	} else if (t == 0xda) {
		if (!rd_be(r, 2, &n))
			return false;
	} else if (t == 0xdb) {
		if (!rd_be(r, 4, &n))
			return false;
	} else
		return false;
	const void *v;
	if (!rd_span(r, n, &v, len))
		return false;
	*s = v;
	return true;
}

/* A bin (borrowed). */
static bool
rd_bin(rd *r, const void **b, size_t *len)
{
	if (r->p >= r->end)
		return false;
	uint8_t t = *r->p++;
	uint64_t n;
	if (!((t == 0xc4 && rd_be(r, 1, &n)) || (t == 0xc5 && rd_be(r, 2, &n)) ||
	      (t == 0xc6 && rd_be(r, 4, &n))))
		return false;
	return rd_span(r, n, b, len);
}

/* A node name into out (CL_NAME_MAX bytes). */
static bool
rd_name(rd *r, char *out)
{
	const char *s;
	size_t n;
	if (!rd_str(r, &s, &n) || !cl_env_name_ok(s, n))
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	return true;
}

int
cl_env_decode(const void *frame, size_t len, cl_env *e)
{
	memset(e, 0, sizeof(*e));
	rd r = {frame, (const uint8_t *)frame + len};
	uint64_t n, v, kind, svc;
	const char *s;
	size_t sl;
	if (!rd_array(&r, &n) || n < 2 || !rd_str(&r, &s, &sl) || sl != 4 ||
	    memcmp(s, MAGIC, 4) != 0 || !rd_uint(&r, &v))
		return CL_ENV_MALFORMED;
	if (v != CL_PROTOCOL_VERSION) {
		/* Another version: its name, if it is where v1 puts it, for the log. */
		e->version = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
		if (n < 4 || !rd_uint(&r, &kind) || !rd_name(&r, e->from))
			e->from[0] = '\0';
		return CL_ENV_BAD_VERSION;
	}
	e->version = (uint32_t)v;
	if (n != 9 || !rd_uint(&r, &kind) || kind < CL_K_HEARTBEAT || kind > CL_K_GOODBYE ||
	    !rd_name(&r, e->from) || !rd_uint(&r, &e->incarnation) || !rd_uint(&r, &e->seq))
		return CL_ENV_MALFORMED;
	if (r.p < r.end && *r.p == 0xc0)
		r.p++;
	else if (!rd_name(&r, e->to))
		return CL_ENV_MALFORMED;
	if (!rd_uint(&r, &svc) || svc >= 256 || !rd_bin(&r, &e->body, &e->body_len) || r.p != r.end)
		return CL_ENV_MALFORMED;
	e->kind = (int)kind;
	e->service = (int)svc;
	return CL_ENV_OK;
}

int
cl_env_hb_decode(const void *body, size_t len, size_t max,
                 void (*fn)(void *ud, size_t i, const char *addr), void *ud)
{
	rd r = {body, (const uint8_t *)body + len};
	uint64_t n;
	if (!rd_array(&r, &n) || n > max)
		return -1;
	const uint8_t *first = r.p;
	for (uint64_t i = 0; i < n; i++) {
		const char *s;
		size_t sl;
		if (!rd_str(&r, &s, &sl) || !cl_env_addr_ok(s, sl))
			return -1;
	}
	if (r.p != r.end)
		return -1;
	if (fn) {
		r.p = first;
		for (uint64_t i = 0; i < n; i++) {
			const char *s;
			size_t sl;
			char a[CL_ADDR_MAX];
			rd_str(&r, &s, &sl);
			memcpy(a, s, sl);
			a[sl] = '\0';
			fn(ud, (size_t)i, a);
		}
	}
	return (int)n;
}
