/* The string-keyed map (runtime/strmap.h): against a plain array under random
 * puts and deletes, growth, iteration and clear. */
#include "runtime/strmap.h"

#include "test/harness.h"

#define NKEYS 2000

static void
test_basic(void)
{
	rt_strmap m = RT_STRMAP_INIT;
	int a = 1, b = 2;
	CHECK(rt_strmap_get(&m, "x") == NULL);
	CHECK(rt_strmap_del(&m, "x") == NULL);
	CHECK(rt_strmap_put(&m, "x", &a) == NULL);
	CHECK(rt_strmap_put(&m, "", &b) == NULL); /* the empty string is a key */
	CHECK(rt_strmap_get(&m, "x") == &a);
	CHECK(rt_strmap_get(&m, "") == &b);
	CHECK(rt_strmap_put(&m, "x", &b) == &a);
	CHECK(rt_strmap_get(&m, "x") == &b);
	CHECK_EQ(rt_strmap_len(&m), 2);
	CHECK(rt_strmap_del(&m, "x") == &b);
	CHECK(rt_strmap_get(&m, "x") == NULL);
	CHECK_EQ(rt_strmap_len(&m), 1);
	rt_strmap_clear(&m, NULL);
	CHECK_EQ(rt_strmap_len(&m), 0);
	CHECK(rt_strmap_get(&m, "") == NULL);
}

static void
test_random_against_array(void)
{
	static char keys[NKEYS][16];
	static void *ref[NKEYS];
	rt_strmap m = RT_STRMAP_INIT;
	for (int i = 0; i < NKEYS; i++)
		snprintf(keys[i], sizeof(keys[i]), "k%d", i * 7919);
	unsigned seed = 12345;
	for (int step = 0; step < 200000; step++) {
		seed = seed * 1103515245u + 12345u;
		int i = (int)((seed >> 8) % NKEYS);
		void *v = (void *)(uintptr_t)(step + 1);
		if ((seed >> 4) % 3) {
			CHECK(rt_strmap_put(&m, keys[i], v) == ref[i]);
			ref[i] = v;
		} else {
			CHECK(rt_strmap_del(&m, keys[i]) == ref[i]);
			ref[i] = NULL;
		}
		if (step % 1000 == 0) {
			size_t n = 0;
			for (int k = 0; k < NKEYS; k++) {
				CHECK(rt_strmap_get(&m, keys[k]) == ref[k]);
				n += ref[k] != NULL;
			}
			CHECK_EQ(rt_strmap_len(&m), n);
		}
	}
	/* Iteration sees every entry once. */
	size_t pos = 0, seen = 0;
	const char *k;
	void *v;
	while (rt_strmap_next(&m, &pos, &k, &v)) {
		int i = -1;
		for (int j = 0; j < NKEYS && i < 0; j++)
			if (strcmp(keys[j], k) == 0)
				i = j;
		CHECK(i >= 0 && ref[i] == v);
		ref[i] = NULL;
		seen++;
	}
	CHECK_EQ(seen, rt_strmap_len(&m));
	for (int i = 0; i < NKEYS; i++)
		CHECK(ref[i] == NULL);
	rt_strmap_clear(&m, NULL);
}

static int freed;

static void
count_free(void *p)
{
	freed++;
	free(p);
}

static void
test_grows_and_clear_frees_values(void)
{
	rt_strmap m = RT_STRMAP_INIT;
	char key[32];
	for (int i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "topic:%d", i);
		int *v = malloc(sizeof(int));
		*v = i;
		CHECK(rt_strmap_put(&m, key, v) == NULL);
	}
	CHECK_EQ(rt_strmap_len(&m), 100000);
	CHECK(m.cap >= 100000 * 4 / 3);
	for (int i = 0; i < 100000; i += 997) {
		snprintf(key, sizeof(key), "topic:%d", i);
		int *v = rt_strmap_get(&m, key);
		CHECK(v && *v == i);
	}
	rt_strmap_clear(&m, count_free);
	CHECK_EQ(freed, 100000);
	CHECK(m.slots == NULL && m.cap == 0);
}

TEST_LIST = {
    TEST(test_basic),
    TEST(test_random_against_array),
    TEST(test_grows_and_clear_frees_values),
    TEST_END,
};
