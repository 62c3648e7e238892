/*
 * fuzz_envelope: the frame every node sends (cluster/envelope.h:
 * cl_env_decode) and the heartbeat body inside it (cl_env_hb_decode).
 * Input: a frame.  A frame that decodes is encoded again (cl_env_head plus
 * its body) and must decode to the same envelope; a heartbeat body that
 * decodes is encoded again (cl_env_hb_encode) and must give the same
 * addresses.
 */
#include "cluster/envelope.h"
#include "fuzz/fuzz.h"

#define HB_MAX 64

/* The addresses of a heartbeat body, collected by cl_env_hb_decode. */
typedef struct addrs {
	char a[HB_MAX][CL_ADDR_MAX];
	size_t n;
} addrs;

static void
collect(void *ud, size_t i, const char *addr)
{
	addrs *s = ud;
	FUZZ_CHECK(i == s->n && i < HB_MAX);
	FUZZ_CHECK(cl_env_addr_ok(addr, strlen(addr)));
	snprintf(s->a[s->n++], CL_ADDR_MAX, "%s", addr);
}

static void
heartbeat(const void *body, size_t len)
{
	static addrs s, t; /* large; one input at a time */
	s.n = 0;
	int n = cl_env_hb_decode(body, len, HB_MAX, collect, &s);
	if (n < 0) {
		FUZZ_CHECK(s.n == 0);
		return;
	}
	FUZZ_CHECK((size_t)n == s.n);
	const char *ptrs[HB_MAX];
	for (size_t i = 0; i < s.n; i++)
		ptrs[i] = s.a[i];
	size_t cap = 16 + s.n * (CL_ADDR_MAX + 8);
	uint8_t *out = malloc(cap);
	FUZZ_CHECK(out);
	size_t el = cl_env_hb_encode(ptrs, s.n, out, cap);
	FUZZ_CHECK(el > 0);
	t.n = 0;
	FUZZ_CHECK(cl_env_hb_decode(out, el, HB_MAX, collect, &t) == n);
	for (size_t i = 0; i < s.n; i++)
		FUZZ_CHECK(strcmp(s.a[i], t.a[i]) == 0);
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *frame = fuzz_dup(data, size);
	cl_env e;
	int r = cl_env_decode(frame, size, &e);
	FUZZ_CHECK(r == CL_ENV_OK || r == CL_ENV_MALFORMED || r == CL_ENV_BAD_VERSION);
	if (r == CL_ENV_OK) {
		FUZZ_CHECK(cl_env_name_ok(e.from, strlen(e.from)));
		FUZZ_CHECK(e.to[0] == '\0' || cl_env_name_ok(e.to, strlen(e.to)));
		FUZZ_CHECK(e.service >= 0 && e.service < 256); /* node.c counts unknown ones */
		FUZZ_CHECK(e.body_len <= size && (e.body_len == 0 || e.body));
		if (e.body_len)
			FUZZ_CHECK((const uint8_t *)e.body >= frame &&
			           (const uint8_t *)e.body + e.body_len == frame + size);
		uint8_t *again = malloc(CL_ENV_HEAD_MAX + e.body_len);
		FUZZ_CHECK(again);
		size_t hl = cl_env_head(&e, again);
		FUZZ_CHECK(hl > 0 && hl <= CL_ENV_HEAD_MAX);
		if (e.body_len)
			memcpy(again + hl, e.body, e.body_len);
		cl_env back;
		FUZZ_CHECK(cl_env_decode(again, hl + e.body_len, &back) == CL_ENV_OK);
		FUZZ_CHECK(back.version == e.version && back.kind == e.kind);
		FUZZ_CHECK(strcmp(back.from, e.from) == 0 && strcmp(back.to, e.to) == 0);
		FUZZ_CHECK(back.incarnation == e.incarnation && back.seq == e.seq);
		FUZZ_CHECK(back.service == e.service && back.body_len == e.body_len);
		FUZZ_CHECK(e.body_len == 0 || memcmp(back.body, e.body, e.body_len) == 0);
		free(again);
		if (e.kind == CL_K_HEARTBEAT)
			heartbeat(e.body, e.body_len);
	}
	/* The input as a heartbeat body too. */
	heartbeat(frame, size);
	free(frame);
	return 0;
}
