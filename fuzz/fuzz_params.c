/*
 * fuzz_params: the connect parameters (transports/connect.h:
 * tp_params_decode), from a query string, and the query helpers of
 * transports/http.h.  Input: the query string.  Kept small on purpose: it
 * only uses the decoder's API, so it follows changes to the params' shape.
 */
#include "fuzz/fuzz.h"
#include "transports/connect.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *q = (char *)fuzz_dup(data, size);
	tp_http_str qs = {q, size};
	ch_params p;
	void *mem = NULL;
	if (tp_params_decode(&qs, &p, &mem) == 0) {
		for (size_t i = 0; i < p.n; i++) /* every string is there and terminated */
			FUZZ_CHECK(strlen(p.items[i].key) <= size &&
			           strlen(p.items[i].value) <= size);
		(void)ch_params_get(&p, "token");
		(void)ch_params_get(&p, "vsn");
		free(mem);
	}
	char out[256];
	ssize_t n = tp_http_query_get(q, size, "token", out, sizeof(out));
	FUZZ_CHECK(n < (ssize_t)sizeof(out));
	free(q);
	return 0;
}
