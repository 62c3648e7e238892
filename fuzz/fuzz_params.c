/*
 * fuzz_params: the connect parameters (transports/connect.h:
 * tp_params_decode), from a query string, and the query helpers of
 * transports/http.h.  Input: the query string.  Checks that every key and
 * value is delimited by its length (NULs inside kept), and that the three
 * readers (ch_params_find, ch_params_get_n, ch_params_get) agree.
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
		/* every key and value: its length, within the query, NUL after it
		 * (NULs inside are kept: lengths, not strlen, delimit them) */
		for (size_t i = 0; i < p.n; i++) {
			const ch_param *it = &p.items[i];
			FUZZ_CHECK(it->key_len <= size && it->value_len <= size);
			FUZZ_CHECK(it->key[it->key_len] == 0 && it->value[it->value_len] == 0);
		}
		/* Plug's params["token"]: the last plain "token" value, which
		 * ch_params_get_n returns with its length (or NULL when nested) */
		size_t len = 0;
		const char *v = ch_params_get_n(&p, "token", &len);
		const char *fv = NULL;
		size_t flen = 0;
		int kind = ch_params_find(&p, "token", &fv, &flen);
		FUZZ_CHECK(kind == CH_PARAM_STRING ? v && len == flen && memcmp(v, fv, len) == 0
		                                   : v == NULL);
		/* the C-string view is refused when the value holds a NUL */
		const char *c = ch_params_get(&p, "token");
		FUZZ_CHECK(!c || (v && strlen(c) == len));
		free(mem);
	}
	char out[256];
	ssize_t n = tp_http_query_get(q, size, "token", out, sizeof(out));
	FUZZ_CHECK(n < (ssize_t)sizeof(out));
	free(q);
	return 0;
}
