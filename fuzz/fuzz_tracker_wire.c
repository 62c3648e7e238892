/*
 * fuzz_tracker_wire: the tracker's frames between nodes (channels/tracker.h:
 * trk_wire_peek, trk_wire_decode).  Input: a frame.  A frame that decodes
 * agrees with its peeked header, encodes again, and that encoding decodes
 * and encodes to the same bytes (decode -> encode -> decode -> encode).  A
 * decoded delta is also merged into a fresh state that knows its replicas,
 * which must not crash whatever the (validated) data says.
 */
#include "channels/tracker.h"
#include "fuzz/fuzz.h"

static void
noop_report(void *ud, const char *topic, const char *key, const char *meta, bool join)
{
	(void)ud, (void)topic, (void)key, (void)meta, (void)join;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = fuzz_dup(data, size);
	trk_frame f;
	int kind;
	uint32_t nshards, shard;
	int peek = trk_wire_peek(buf, size, &kind, &nshards, &shard);
	if (trk_wire_decode(buf, size, &f) == 0) {
		/* peek reads only the unsigned encodings msgpack-c packs (so it may
		 * refuse a header decode reads); what it reads, it reads the same */
		if (peek == 0)
			FUZZ_CHECK(kind == f.kind && nshards == f.nshards && shard == f.shard);
		char *a = NULL, *b = NULL;
		size_t al = 0, bl = 0;
		FUZZ_CHECK(trk_wire_encode(&f, &a, &al) == 0);
		trk_frame g;
		FUZZ_CHECK(trk_wire_decode(a, al, &g) == 0);
		FUZZ_CHECK(trk_wire_encode(&g, &b, &bl) == 0);
		FUZZ_CHECK(al == bl && memcmp(a, b, al) == 0);
		if (f.delta && f.delta->nreplicas) {
			trk_state *s = trk_state_new("fuzz@local#1");
			for (size_t i = 0; i < f.delta->nreplicas; i++)
				if (strcmp(f.delta->replicas[i], "fuzz@local#1") != 0)
					trk_state_replica_up(s, f.delta->replicas[i], noop_report,
					                     NULL);
			trk_state_merge(s, f.delta, noop_report, NULL);
			trk_state_merge(s, g.delta, noop_report, NULL); /* again: nothing more */
			trk_state_free(s);
		}
		trk_delta_free(f.delta);
		trk_delta_free(g.delta);
		free(a);
		free(b);
	}
	free(buf);
	return 0;
}
