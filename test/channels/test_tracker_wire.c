/*
 * The tracker's frames between nodes (tracker_wire.c): round trips of
 * deltas, full states and the small frames, merges of decoded data equal to
 * merges of the originals, then hostile input: every truncation, byte
 * flips (whatever decodes must merge without harm), and hand-made frames
 * each breaking one rule.  Run under ASan in CI.
 */
#include <msgpack.h>

#include "channels/tracker.h"
#include "test/harness.h"
#include "test/support/trk_snapshot.h"

/* Replica a with some churn: joins (one with non-ASCII text), a leave, an
 * update. */
static trk_state *
make_state(const char *name)
{
	trk_state *a = trk_state_new(name);
	trk_state_join(a, fake_pid(1), "room:1", "alice", "{\"phx_ref\":\"r1\"}", NULL, NULL);
	trk_state_join(a, fake_pid(2), "room:1", "bob", "{\"n\":2}", NULL, NULL);
	trk_state_join(a, fake_pid(3), "room:é", "", "{\"name\":\"Zoë ✓\"}", NULL, NULL);
	trk_state_join(a, fake_pid(4), "room:1", "carol", "[1,2,3]", NULL, NULL);
	trk_state_leave(a, fake_pid(4), "room:1", "carol", NULL, NULL);
	trk_state_update(a, fake_pid(2), "room:1", "bob", "{\"n\":3}");
	return a;
}

static char *
encode(const trk_frame *f, size_t *len)
{
	char *out = NULL;
	CHECK_EQ(trk_wire_encode(f, &out, len), 0);
	return out;
}

static void
test_delta_round_trip(void)
{
	trk_state *a = make_state("a@host#1");
	trk_delta *d = trk_state_extract_delta(a);
	trk_frame f = {.kind = TRK_WIRE_DELTA, .nshards = 4, .shard = 3, .delta = d};
	size_t len;
	char *buf = encode(&f, &len);

	int kind;
	uint32_t ns, sh;
	CHECK_EQ(trk_wire_peek(buf, len, &kind, &ns, &sh), 0);
	CHECK_EQ(kind, TRK_WIRE_DELTA);
	CHECK_EQ(ns, 4);
	CHECK_EQ(sh, 3);

	trk_frame g;
	CHECK_EQ(trk_wire_decode(buf, len, &g), 0);
	CHECK_EQ(g.kind, TRK_WIRE_DELTA);
	CHECK_EQ(g.nshards, 4);
	CHECK_EQ(g.shard, 3);
	trk_delta *e = g.delta;
	CHECK(e && !e->full);
	CHECK_EQ(e->nreplicas, d->nreplicas);
	CHECK(strcmp(e->replicas[0], "a@host#1") == 0);
	CHECK_EQ(e->start[0], d->start[0]);
	CHECK_EQ(e->end[0], d->end[0]);
	CHECK_EQ(e->ncloud, d->ncloud);
	for (size_t i = 0; i < d->ncloud; i++) {
		CHECK_EQ(e->cloud[i].replica, d->cloud[i].replica);
		CHECK_EQ(e->cloud[i].clock, d->cloud[i].clock);
	}
	CHECK_EQ(e->nvalues, d->nvalues);
	CHECK_EQ(e->nvalues, 3);
	for (size_t i = 0; i < d->nvalues; i++) {
		CHECK_EQ(e->values[i].tag.clock, d->values[i].tag.clock);
		CHECK_EQ(e->values[i].pid, d->values[i].pid);
		CHECK(strcmp(e->values[i].topic, d->values[i].topic) == 0);
		CHECK(strcmp(e->values[i].key, d->values[i].key) == 0);
		CHECK(strcmp(e->values[i].meta, d->values[i].meta) == 0);
	}

	/* merging the decoded delta is merging the original */
	trk_state *b1 = trk_state_new("b@host#1"), *b2 = trk_state_new("b@host#1");
	trk_state_replica_up(b1, "a@host#1", NULL, NULL);
	trk_state_replica_up(b2, "a@host#1", NULL, NULL);
	trk_state_merge(b1, d, NULL, NULL);
	trk_state_merge(b2, e, NULL, NULL);
	char *s1 = trk_snapshot(b1, "room:1"), *s2 = trk_snapshot(b2, "room:1");
	CHECK(strcmp(s1, s2) == 0);
	CHECK_MSG(strcmp(s2, "alice={\"phx_ref\":\"r1\"};bob={\"n\":3};") == 0, "%s", s2);
	free(s1);
	free(s2);
	s2 = trk_snapshot(b2, "room:é");
	CHECK(strcmp(s2, "={\"name\":\"Zoë ✓\"};") == 0);
	free(s2);
	CHECK_EQ(trk_state_clock(b2, "a@host#1"), trk_state_clock(a, "a@host#1"));

	trk_delta_free(d);
	trk_delta_free(e);
	free(buf);
	trk_state_free(a);
	trk_state_free(b1);
	trk_state_free(b2);
}

static void
test_full_and_small_frames(void)
{
	trk_state *a = make_state("a@host#1");
	trk_state *b = trk_state_new("b@host#2");
	trk_state_replica_up(b, "a@host#1", NULL, NULL);
	trk_state_replica_up(a, "b@host#2", NULL, NULL);
	trk_state_join(b, fake_pid(9), "room:1", "zed", "{}", NULL, NULL);
	trk_delta *db = trk_state_extract_delta(b);
	trk_state_merge(a, db, NULL, NULL); /* a now holds one of b's too */
	trk_delta_free(db);

	trk_state *c = trk_state_new("c@host#3");
	trk_state_replica_up(c, "a@host#1", NULL, NULL);
	trk_state_replica_up(c, "b@host#2", NULL, NULL);
	trk_delta *full = trk_state_extract(a, "c@host#3");
	trk_frame f = {.kind = TRK_WIRE_TRANSFER_ACK, .nshards = 1, .shard = 0, .delta = full};
	size_t len;
	char *buf = encode(&f, &len);
	trk_frame g;
	CHECK_EQ(trk_wire_decode(buf, len, &g), 0);
	CHECK_EQ(g.kind, TRK_WIRE_TRANSFER_ACK);
	CHECK(g.delta->full);
	CHECK_EQ(g.delta->nreplicas, full->nreplicas);
	for (size_t i = 0; i < full->nreplicas; i++)
		CHECK_EQ(g.delta->context[i], full->context[i]);
	trk_state_merge(c, g.delta, NULL, NULL);
	char *sa = trk_snapshot(a, "room:1"), *sc = trk_snapshot(c, "room:1");
	CHECK_MSG(strcmp(sa, sc) == 0, "%s vs %s", sa, sc);
	CHECK(strstr(sc, "zed=") != NULL);
	free(sa);
	free(sc);
	trk_delta_free(g.delta);
	/* a full state is refused in a DELTA frame, and a delta in a TRANSFER_ACK */
	CHECK_EQ((uint8_t)buf[2], TRK_WIRE_TRANSFER_ACK);
	buf[2] = TRK_WIRE_DELTA;
	CHECK_EQ(trk_wire_decode(buf, len, &g), -1);
	free(buf);
	f.kind = TRK_WIRE_DELTA;
	CHECK_EQ(trk_wire_encode(&f, &buf, &len), -1);
	trk_delta *dd = trk_state_extract_delta(a);
	f.delta = dd;
	buf = encode(&f, &len);
	buf[2] = TRK_WIRE_TRANSFER_ACK;
	CHECK_EQ(trk_wire_decode(buf, len, &g), -1);
	free(buf);
	trk_delta_free(dd);
	trk_delta_free(full);

	f = (trk_frame){.kind = TRK_WIRE_CLOCK, .nshards = 2, .shard = 1, .clock = 123456789};
	buf = encode(&f, &len);
	CHECK_EQ(trk_wire_decode(buf, len, &g), 0);
	CHECK_EQ(g.kind, TRK_WIRE_CLOCK);
	CHECK_EQ(g.clock, 123456789);
	CHECK(g.delta == NULL);
	free(buf);

	f = (trk_frame){.kind = TRK_WIRE_TRANSFER_REQ, .nshards = 300, .shard = 299};
	buf = encode(&f, &len);
	CHECK_EQ(trk_wire_decode(buf, len, &g), 0);
	CHECK_EQ(g.kind, TRK_WIRE_TRANSFER_REQ);
	CHECK_EQ(g.nshards, 300);
	CHECK_EQ(g.shard, 299);
	int kind;
	uint32_t ns, sh;
	CHECK_EQ(trk_wire_peek(buf, len, &kind, &ns, &sh), 0);
	CHECK_EQ(ns, 300);
	CHECK_EQ(sh, 299);
	free(buf);

	trk_state_free(a);
	trk_state_free(b);
	trk_state_free(c);
}

/* Decodes hostile bytes: a failure, or a frame whose delta merges into a
 * state that knows its replicas without harm. */
static int
decode_and_merge(const char *buf, size_t len)
{
	trk_frame g;
	int kind;
	uint32_t ns, sh;
	(void)trk_wire_peek(buf, len, &kind, &ns, &sh);
	if (trk_wire_decode(buf, len, &g) != 0)
		return -1;
	if (g.delta) {
		trk_state *s = trk_state_new("victim#1");
		for (size_t i = 0; i < g.delta->nreplicas; i++)
			trk_state_replica_up(s, g.delta->replicas[i], NULL, NULL);
		trk_state_merge(s, g.delta, NULL, NULL);
		trk_state_merge(s, g.delta, NULL, NULL);
		trk_state_reset_delta(s);
		trk_delta *x = trk_state_extract(s, "other#1");
		trk_delta_free(x);
		trk_state_free(s);
		trk_delta_free(g.delta);
	}
	return 0;
}

/* Frames to torment: a delta with churn and a full state of two replicas. */
static char *
sample(int which, size_t *len)
{
	trk_state *a = make_state("a@host#1");
	trk_frame f = {.nshards = 2, .shard = 1};
	if (which == 0) {
		f.kind = TRK_WIRE_DELTA;
		f.delta = trk_state_extract_delta(a);
	} else {
		trk_state *b = trk_state_new("b@host#2");
		trk_state_replica_up(b, "a@host#1", NULL, NULL);
		trk_state_join(b, fake_pid(7), "room:2", "k", "{\"x\":[true,null]}", NULL, NULL);
		trk_delta *full = trk_state_extract(a, "b@host#2");
		trk_state_merge(b, full, NULL, NULL);
		trk_delta_free(full);
		f.kind = TRK_WIRE_TRANSFER_ACK;
		f.delta = trk_state_extract(b, "c@host#3");
		trk_state_free(b);
	}
	char *buf = encode(&f, len);
	trk_delta_free(f.delta);
	trk_state_free(a);
	return buf;
}

static void
test_truncated_everywhere(void)
{
	for (int which = 0; which < 2; which++) {
		size_t len;
		char *buf = sample(which, &len);
		CHECK_EQ(decode_and_merge(buf, len), 0);
		for (size_t n = 0; n < len; n++) {
			char *cut = malloc(n ? n : 1); /* exact size: ASan sees any overread */
			memcpy(cut, buf, n);
			CHECK_MSG(decode_and_merge(cut, n) == -1, "prefix of %zu/%zu decoded", n,
			          len);
			free(cut);
		}
		/* and a byte too many */
		char *more = malloc(len + 1);
		memcpy(more, buf, len);
		more[len] = 0;
		CHECK_EQ(decode_and_merge(more, len + 1), -1);
		free(more);
		free(buf);
	}
}

static void
test_flipped_bytes(void)
{
	static const uint8_t masks[] = {0x01, 0x02, 0x10, 0x20, 0x40, 0x80, 0xff, 0x7f};
	uint32_t seed = 12345;
	for (int which = 0; which < 2; which++) {
		size_t len;
		char *buf = sample(which, &len);
		char *m = malloc(len);
		int decoded = 0, refused = 0;
		for (size_t i = 0; i < len; i++)
			for (size_t k = 0; k < sizeof(masks); k++) {
				memcpy(m, buf, len);
				m[i] = (char)(m[i] ^ masks[k]);
				if (decode_and_merge(m, len) == 0)
					decoded++;
				else
					refused++;
			}
		/* random multi-byte damage */
		for (int round = 0; round < 3000; round++) {
			memcpy(m, buf, len);
			for (int j = 0; j < 3; j++) {
				seed = seed * 1103515245u + 12345u;
				size_t at = (seed >> 8) % len;
				seed = seed * 1103515245u + 12345u;
				m[at] = (char)(seed >> 16);
			}
			if (decode_and_merge(m, len) == 0)
				decoded++;
			else
				refused++;
		}
		CHECK(refused > 0);
		CHECK(decoded > 0); /* some flips (in clocks, pids, metas' digits) still pass */
		free(m);
		free(buf);
	}
}

/* Encodes a hand-made delta (the encoder checks nothing in it). */
static int
decode_handmade(trk_delta *d, int kind)
{
	trk_frame f = {.kind = kind, .nshards = 1, .shard = 0, .delta = d};
	char *buf;
	size_t len;
	CHECK_EQ(trk_wire_encode(&f, &buf, &len), 0);
	int rc = decode_and_merge(buf, len);
	free(buf);
	return rc;
}

/* One good delta of replica "a#1" with one value; tests break one field. */
static trk_delta *
good_delta(void)
{
	trk_delta *d = calloc(1, sizeof(*d));
	d->nreplicas = 2;
	d->replicas = calloc(2, TRK_REPLICA_MAX);
	strcpy(d->replicas[0], "a#1");
	strcpy(d->replicas[1], "b#1");
	d->context = calloc(2, sizeof(uint64_t));
	d->start = calloc(2, sizeof(uint64_t));
	d->end = calloc(2, sizeof(uint64_t));
	d->start[0] = 4;
	d->end[0] = 6;
	d->ncloud = 2;
	d->cloud = calloc(2, sizeof(trk_dot));
	d->cloud[0] = (trk_dot){0, 5};
	d->cloud[1] = (trk_dot){1, 9};
	d->nvalues = 1;
	d->values = calloc(1, sizeof(trk_value));
	d->values[0] = (trk_value){.tag = {0, 5},
	                           .pid = 77,
	                           .topic = strdup("room:1"),
	                           .key = strdup("k"),
	                           .meta = strdup("{\"a\":1}")};
	return d;
}

static void
set_str(char **field, const char *v)
{
	free(*field);
	*field = strdup(v);
}

static void
test_each_rule(void)
{
	trk_delta *d = good_delta();
	CHECK_EQ(decode_handmade(d, TRK_WIRE_DELTA), 0);
	trk_delta_free(d);

	/* the cases: each breaks one rule of a good delta */
	for (int c = 0;; c++) {
		d = good_delta();
		char big[TRK_META_MAX + 8];
		switch (c) {
		case 0:
			d->values[0].tag.replica = 2;
			break; /* index out of range */
		case 1:
			d->cloud[1].replica = 7;
			break; /* same, in the cloud */
		case 2:
			d->values[0].tag.clock = 0;
			break; /* clocks start at 1 */
		case 3:
			d->cloud[0].clock = TRK_CLOCK_MAX + 1;
			break;
		case 4:
			d->values[0].tag.clock = 9;
			break; /* outside the range */
		case 5:
			d->values[0].tag.replica = 1;
			break; /* not the sender's */
		case 6:
			d->start[0] = 7;
			break; /* start > end */
		case 7:
			strcpy(d->replicas[1], "a#1");
			break; /* duplicate names */
		case 8:
			d->replicas[1][0] = 0;
			break; /* empty name */
		case 9:
			strcpy(d->replicas[1], "b\xff");
			break; /* not UTF-8 */
		case 10:
			set_str(&d->values[0].topic, "");
			break;
		case 11:
			set_str(&d->values[0].topic, "room:\xc3\x28");
			break;
		case 12:
			set_str(&d->values[0].key, "\xed\xa0\x80");
			break; /* a surrogate */
		case 13:
			set_str(&d->values[0].meta, "{\"a\":");
			break; /* not JSON */
		case 14:
			set_str(&d->values[0].meta, "{} {}");
			break; /* two values */
		case 15:
			set_str(&d->values[0].meta, "");
			break;
		case 16:
			memset(big, 'x', sizeof(big) - 1);
			big[0] = '"';
			big[sizeof(big) - 2] = '"';
			big[sizeof(big) - 1] = 0;
			set_str(&d->values[0].meta, big); /* valid JSON, too long */
			break;
		case 17:
			memset(big, 'a', TRK_TOPIC_MAX);
			big[TRK_TOPIC_MAX] = 0;
			set_str(&d->values[0].topic, big);
			break;
		default:
			trk_delta_free(d);
			d = NULL;
			break;
		}
		if (!d)
			break;
		CHECK_MSG(decode_handmade(d, TRK_WIRE_DELTA) == -1, "case %d decoded", c);
		trk_delta_free(d);
	}

	/* a NUL inside a string, packed by hand */
	{
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_array(&pk, 5);
		msgpack_pack_uint32(&pk, 1);
		msgpack_pack_uint32(&pk, TRK_WIRE_DELTA);
		msgpack_pack_uint32(&pk, 1);
		msgpack_pack_uint32(&pk, 0);
		msgpack_pack_array(&pk, 7);
		msgpack_pack_false(&pk);
		msgpack_pack_array(&pk, 1);
		msgpack_pack_str(&pk, 3);
		msgpack_pack_str_body(&pk, "a\0b", 3);
		msgpack_pack_nil(&pk);
		msgpack_pack_uint32(&pk, 0);
		msgpack_pack_uint32(&pk, 0);
		msgpack_pack_array(&pk, 0);
		msgpack_pack_array(&pk, 0);
		CHECK_EQ(decode_and_merge(sb.data, sb.size), -1);
		sb.data[sb.size - 7] = 'x'; /* "axb": fine */
		CHECK_EQ(decode_and_merge(sb.data, sb.size), 0);
		msgpack_sbuffer_destroy(&sb);
	}
}

static void
test_headers_and_huge_counts(void)
{
	trk_frame g;
	int kind;
	uint32_t ns, sh;
	/* an array header claiming 2^32-1 elements, in 5 bytes */
	static const uint8_t huge[] = {0x95, 0x01, 0x01, 0x01, 0x00, 0x97,
	                               0xc2, 0xdd, 0xff, 0xff, 0xff, 0xff};
	CHECK_EQ(trk_wire_decode(huge, sizeof(huge), &g), -1);
	static const uint8_t huge_map[] = {0x95, 0x01, 0x01, 0x01, 0x00,
	                                   0xdf, 0xff, 0xff, 0xff, 0xff};
	CHECK_EQ(trk_wire_decode(huge_map, sizeof(huge_map), &g), -1);
	static const uint8_t huge_str[] = {0x95, 0x01, 0x02, 0x01, 0x00,
	                                   0xdb, 0xff, 0xff, 0xff, 0xff};
	CHECK_EQ(trk_wire_decode(huge_str, sizeof(huge_str), &g), -1);
	/* nested arrays past msgpack-c's stack */
	uint8_t deep[200];
	memcpy(deep, "\x95\x01\x02\x01\x00", 5);
	memset(deep + 5, 0x91, sizeof(deep) - 6);
	deep[sizeof(deep) - 1] = 0x01;
	CHECK_EQ(trk_wire_decode(deep, sizeof(deep), &g), -1);

	static const uint8_t req[] = {0x95, 0x01, 0x03, 0x02, 0x01, 0xc0};
	CHECK_EQ(trk_wire_decode(req, sizeof(req), &g), 0);
	CHECK_EQ(trk_wire_peek(req, sizeof(req), &kind, &ns, &sh), 0);
	uint8_t bad[sizeof(req)];
	memcpy(bad, req, sizeof(req));
	bad[1] = 0x02; /* another version */
	CHECK_EQ(trk_wire_decode(bad, sizeof(bad), &g), -1);
	CHECK_EQ(trk_wire_peek(bad, sizeof(bad), &kind, &ns, &sh), -1);
	memcpy(bad, req, sizeof(req));
	bad[2] = 0x05; /* unknown kind */
	CHECK_EQ(trk_wire_decode(bad, sizeof(bad), &g), -1);
	CHECK_EQ(trk_wire_peek(bad, sizeof(bad), &kind, &ns, &sh), -1);
	memcpy(bad, req, sizeof(req));
	bad[4] = 0x02; /* shard 2 of 2 */
	CHECK_EQ(trk_wire_decode(bad, sizeof(bad), &g), -1);
	CHECK_EQ(trk_wire_peek(bad, sizeof(bad), &kind, &ns, &sh), -1);
	memcpy(bad, req, sizeof(req));
	bad[3] = 0x00; /* no shards */
	CHECK_EQ(trk_wire_decode(bad, sizeof(bad), &g), -1);
	CHECK_EQ(trk_wire_peek(bad, sizeof(bad), &kind, &ns, &sh), -1);
	memcpy(bad, req, sizeof(req));
	bad[5] = 0x00; /* a request carries nil */
	CHECK_EQ(trk_wire_decode(bad, sizeof(bad), &g), -1);
	CHECK_EQ(trk_wire_decode(NULL, 0, &g), -1);
	CHECK_EQ(trk_wire_peek(req, 3, &kind, &ns, &sh), -1);
}

TEST_LIST = {
    TEST(test_delta_round_trip),
    TEST(test_full_and_small_frames),
    TEST(test_truncated_everywhere),
    TEST(test_flipped_bytes),
    TEST(test_each_rule),
    TEST(test_headers_and_huge_counts),
    TEST_END,
};
