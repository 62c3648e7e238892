/*
 * tracker_wire.c: the tracker's frames between nodes (the format is in
 * tracker.h), encoded with msgpack-c and decoded with strict validation.
 *
 * Decoding is two passes.  First cl_msgpack_scan checks that the raw bytes
 * are exactly one well-formed msgpack object whose containers' counts fit
 * in the bytes (msgpack-c allocates a container's elements from its
 * header's count).  Then msgpack_unpack_next builds the tree (strings point into the
 * buffer) and the walk below checks every field, copying into a trk_delta
 * only what passed.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "channels/serializer.h"
#include "channels/tracker.h"
#include "cluster/cluster.h"
#include "runtime/utf8.h"
#include "runtime/xalloc.h"

/* ------------------------------------------------------------------ encode */

static void
pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void
pack_delta(msgpack_packer *pk, const trk_delta *d)
{
	msgpack_pack_array(pk, 7);
	if (d->full)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
	msgpack_pack_array(pk, d->nreplicas);
	for (size_t i = 0; i < d->nreplicas; i++) {
		char name[TRK_REPLICA_MAX];
		memcpy(name, d->replicas[i], TRK_REPLICA_MAX);
		name[TRK_REPLICA_MAX - 1] = 0;
		pack_str(pk, name);
	}
	if (d->full) {
		msgpack_pack_array(pk, d->nreplicas);
		for (size_t i = 0; i < d->nreplicas; i++)
			msgpack_pack_uint64(pk, d->context[i]);
		msgpack_pack_uint64(pk, 0);
		msgpack_pack_uint64(pk, 0);
	} else {
		msgpack_pack_nil(pk);
		msgpack_pack_uint64(pk, d->nreplicas ? d->start[0] : 0);
		msgpack_pack_uint64(pk, d->nreplicas ? d->end[0] : 0);
	}
	msgpack_pack_array(pk, 2 * d->ncloud);
	for (size_t i = 0; i < d->ncloud; i++) {
		msgpack_pack_uint32(pk, d->cloud[i].replica);
		msgpack_pack_uint64(pk, d->cloud[i].clock);
	}
	msgpack_pack_array(pk, 6 * d->nvalues);
	for (size_t i = 0; i < d->nvalues; i++) {
		const trk_value *v = &d->values[i];
		msgpack_pack_uint32(pk, v->tag.replica);
		msgpack_pack_uint64(pk, v->tag.clock);
		msgpack_pack_uint64(pk, v->pid);
		pack_str(pk, v->topic);
		pack_str(pk, v->key);
		pack_str(pk, v->meta);
	}
}

int
trk_wire_encode(const trk_frame *f, char **out, size_t *len)
{
	bool wants_delta = f->kind == TRK_WIRE_DELTA || f->kind == TRK_WIRE_TRANSFER_ACK;
	if (f->kind < TRK_WIRE_DELTA || f->kind > TRK_WIRE_TRANSFER_ACK ||
	    (wants_delta && (!f->delta || f->delta->nreplicas == 0 ||
	                     f->delta->full != (f->kind == TRK_WIRE_TRANSFER_ACK))))
		return -1;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 5);
	msgpack_pack_uint32(&pk, TRK_WIRE_VERSION);
	msgpack_pack_uint32(&pk, (uint32_t)f->kind);
	msgpack_pack_uint32(&pk, f->nshards);
	msgpack_pack_uint32(&pk, f->shard);
	if (wants_delta)
		pack_delta(&pk, f->delta);
	else if (f->kind == TRK_WIRE_CLOCK)
		msgpack_pack_uint64(&pk, f->clock);
	else
		msgpack_pack_nil(&pk);
	*len = sb.size;
	*out = msgpack_sbuffer_release(&sb);
	return 0;
}

/* ------------------------------------------------------------------ decode */

static bool
get_uint(const msgpack_object *o, uint64_t max, uint64_t *out)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
		return false;
	*out = o->via.u64;
	return true;
}

/* A string of min..max-1 bytes, UTF-8 with no NUL; copied (NUL-terminated)
 * into a fresh allocation when out is not NULL. */
static bool
get_str(const msgpack_object *o, size_t min, size_t max, char **out)
{
	if (o->type != MSGPACK_OBJECT_STR)
		return false;
	size_t n = o->via.str.size;
	const char *p = o->via.str.ptr;
	if (n < min || n >= max || (n && memchr(p, 0, n)) || !rt_utf8_valid((const uint8_t *)p, n))
		return false;
	if (out) {
		char *s = rt_xmalloc(n + 1);
		if (n)
			memcpy(s, p, n);
		s[n] = 0;
		*out = s;
	}
	return true;
}

static bool
get_array(const msgpack_object *o, msgpack_object **items, size_t *n)
{
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return false;
	*items = o->via.array.ptr;
	*n = o->via.array.size;
	return true;
}

static trk_delta *
delta_new(size_t nreplicas, size_t ncloud, size_t nvalues)
{
	trk_delta *d = rt_xcalloc(1, sizeof(*d));
	d->replicas = rt_xcalloc(nreplicas, TRK_REPLICA_MAX);
	d->context = rt_xcalloc(nreplicas, sizeof(uint64_t));
	d->start = rt_xcalloc(nreplicas, sizeof(uint64_t));
	d->end = rt_xcalloc(nreplicas, sizeof(uint64_t));
	d->cloud = rt_xcalloc(ncloud ? ncloud : 1, sizeof(trk_dot));
	d->values = rt_xcalloc(nvalues ? nvalues : 1, sizeof(trk_value));
	return d;
}

/* Decodes and validates a delta object; NULL when it does not pass. */
static trk_delta *
decode_delta(const msgpack_object *o)
{
	msgpack_object *f, *reps, *ctx = NULL, *cloud, *vals;
	size_t nf, nreps, nctx = 0, ncloud, nvals;
	if (!get_array(o, &f, &nf) || nf != 7 || f[0].type != MSGPACK_OBJECT_BOOLEAN)
		return NULL;
	bool full = f[0].via.boolean;
	if (!get_array(&f[1], &reps, &nreps) || nreps < 1 || nreps > TRK_WIRE_MAX_REPLICAS)
		return NULL;
	if (full ? !get_array(&f[2], &ctx, &nctx) || nctx != nreps
	         : f[2].type != MSGPACK_OBJECT_NIL)
		return NULL;
	uint64_t start, end;
	if (!get_uint(&f[3], TRK_CLOCK_MAX, &start) || !get_uint(&f[4], TRK_CLOCK_MAX, &end) ||
	    start > end || (full && (start || end)))
		return NULL;
	if (!get_array(&f[5], &cloud, &ncloud) || ncloud % 2 || ncloud / 2 > TRK_WIRE_MAX_ITEMS)
		return NULL;
	if (!get_array(&f[6], &vals, &nvals) || nvals % 6 || nvals / 6 > TRK_WIRE_MAX_ITEMS)
		return NULL;
	trk_delta *d = delta_new(nreps, ncloud / 2, nvals / 6);
	d->full = full;
	d->nreplicas = nreps;
	for (size_t i = 0; i < nreps; i++) {
		if (!get_str(&reps[i], 1, TRK_REPLICA_MAX, NULL))
			goto bad;
		memcpy(d->replicas[i], reps[i].via.str.ptr, reps[i].via.str.size);
		for (size_t j = 0; j < i; j++) /* unique names (at most ~500k compares) */
			if (strcmp(d->replicas[i], d->replicas[j]) == 0)
				goto bad;
		if (full && !get_uint(&ctx[i], TRK_CLOCK_MAX, &d->context[i]))
			goto bad;
	}
	d->start[0] = start;
	d->end[0] = end;
	for (size_t i = 0; i < ncloud; i += 2) {
		uint64_t r, c;
		if (!get_uint(&cloud[i], nreps - 1, &r) ||
		    !get_uint(&cloud[i + 1], TRK_CLOCK_MAX, &c) || c == 0)
			goto bad;
		d->cloud[d->ncloud++] = (trk_dot){(uint32_t)r, c};
	}
	for (size_t i = 0; i < nvals; i += 6) {
		const msgpack_object *v = &vals[i];
		uint64_t r, c, pid;
		if (!get_uint(&v[0], nreps - 1, &r) || !get_uint(&v[1], TRK_CLOCK_MAX, &c) ||
		    c == 0 || !get_uint(&v[2], UINT64_MAX, &pid))
			goto bad;
		/* a delta carries its sender's own adds, made inside its range */
		if (!full && (r != 0 || c <= start || c > end))
			goto bad;
		trk_value *tv = &d->values[d->nvalues];
		if (!get_str(&v[3], 1, TRK_TOPIC_MAX, &tv->topic))
			goto bad;
		d->nvalues++; /* owns topic from here: freed with d */
		tv->tag = (trk_dot){(uint32_t)r, c};
		tv->pid = pid;
		if (!get_str(&v[4], 0, TRK_KEY_MAX, &tv->key) ||
		    !get_str(&v[5], 1, TRK_META_MAX, &tv->meta) ||
		    !ch_json_valid(tv->meta, strlen(tv->meta)))
			goto bad;
	}
	return d;
bad:
	trk_delta_free(d);
	return NULL;
}

/* Reads a k-byte big-endian unsigned at p[*pos], if there. */
static bool
peek_be(const uint8_t *p, size_t len, size_t *pos, int k, uint64_t *out)
{
	if ((size_t)k > len - *pos)
		return false;
	uint64_t v = 0;
	for (int i = 0; i < k; i++)
		v = v << 8 | p[*pos + (size_t)i];
	*pos += (size_t)k;
	*out = v;
	return true;
}

int
trk_wire_peek(const void *buf, size_t len, int *kind, uint32_t *nshards, uint32_t *shard)
{
	const uint8_t *p = buf;
	if (len < 5 || p[0] != 0x95)
		return -1;
	size_t pos = 1;
	uint64_t v[4];
	for (int i = 0; i < 4; i++) { /* small unsigned ints: fixint, uint 8/16/32 */
		if (pos >= len)
			return -1;
		uint8_t b = p[pos++];
		if (b <= 0x7f)
			v[i] = b;
		else if (b < 0xcc || b > 0xce || !peek_be(p, len, &pos, 1 << (b - 0xcc), &v[i]))
			return -1;
	}
	if (v[0] != TRK_WIRE_VERSION || v[1] < TRK_WIRE_DELTA || v[1] > TRK_WIRE_TRANSFER_ACK ||
	    v[2] < 1 || v[2] > TRK_WIRE_MAX_SHARDS || v[3] >= v[2])
		return -1;
	*kind = (int)v[1];
	*nshards = (uint32_t)v[2];
	*shard = (uint32_t)v[3];
	return 0;
}

int
trk_wire_decode(const void *buf, size_t len, trk_frame *out)
{
	memset(out, 0, sizeof(*out));
	if (!buf || !cl_msgpack_scan(buf, len))
		return -1;
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	size_t off = 0;
	int rc = -1;
	msgpack_object *f;
	size_t nf;
	uint64_t ver, kind, nshards, shard;
	if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
	    !get_array(&u.data, &f, &nf) || nf != 5 || !get_uint(&f[0], UINT32_MAX, &ver) ||
	    ver != TRK_WIRE_VERSION || !get_uint(&f[1], TRK_WIRE_TRANSFER_ACK, &kind) ||
	    kind < TRK_WIRE_DELTA || !get_uint(&f[2], TRK_WIRE_MAX_SHARDS, &nshards) ||
	    nshards < 1 || !get_uint(&f[3], nshards - 1, &shard))
		goto done;
	switch (kind) {
	case TRK_WIRE_DELTA:
	case TRK_WIRE_TRANSFER_ACK:
		out->delta = decode_delta(&f[4]);
		if (!out->delta || out->delta->full != (kind == TRK_WIRE_TRANSFER_ACK)) {
			trk_delta_free(out->delta);
			out->delta = NULL;
			goto done;
		}
		break;
	case TRK_WIRE_CLOCK:
		if (!get_uint(&f[4], TRK_CLOCK_MAX, &out->clock))
			goto done;
		break;
	default: /* TRK_WIRE_TRANSFER_REQ */
		if (f[4].type != MSGPACK_OBJECT_NIL)
			goto done;
		break;
	}
	out->kind = (int)kind;
	out->nshards = (uint32_t)nshards;
	out->shard = (uint32_t)shard;
	rc = 0;
done:
	msgpack_unpacked_destroy(&u);
	return rc;
}
