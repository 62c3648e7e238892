/*
 * Unit tests of bench/hist.h, the log-linear histogram of the load generator:
 * bucket geometry and precision, percentiles of known distributions, merge.
 */
#include "bench/hist.h"

#include "test/harness.h"

/* |got - want| <= want * tol */
static int
near(uint64_t got, uint64_t want, double tol)
{
	double d = (double)got - (double)want;
	if (d < 0)
		d = -d;
	return d <= (double)want * tol;
}

static uint64_t
xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void
test_empty(void)
{
	static hist h;
	hist_init(&h);
	CHECK_EQ(h.count, 0);
	CHECK_EQ(hist_percentile(&h, 50), 0);
	CHECK_EQ(hist_percentile(&h, 100), 0);
	CHECK_EQ(hist_min(&h), 0);
	CHECK(hist_mean(&h) == 0.0);
}

static void
test_geometry(void)
{
	/* Small values are exact; buckets are contiguous, ordered, and narrow. */
	for (unsigned v = 0; v < 2 * HIST_SUB; v++) {
		CHECK_EQ(hist_index(v), v);
		CHECK_EQ(hist_bucket_low(v), v);
		CHECK_EQ(hist_bucket_high(v), v);
	}
	for (unsigned i = 1; i < HIST_BUCKETS; i++) {
		CHECK_EQ(hist_bucket_low(i), hist_bucket_high(i - 1) + 1);
		CHECK_EQ(hist_index(hist_bucket_low(i)), i);
		CHECK_EQ(hist_index(hist_bucket_high(i)), i);
		double width = (double)(hist_bucket_high(i) - hist_bucket_low(i) + 1);
		CHECK(i < 2 * HIST_SUB ? width == 1
		                       : width / (double)hist_bucket_low(i) <= 1.0 / HIST_SUB);
	}
	CHECK_EQ(hist_index(HIST_MAX_VALUE), HIST_BUCKETS - 1);
	CHECK_EQ(hist_bucket_high(HIST_BUCKETS - 1), HIST_MAX_VALUE);
	CHECK_EQ(hist_index(UINT64_MAX), HIST_BUCKETS - 1);

	uint64_t s = 88172645463325252ull;
	for (int k = 0; k < 100000; k++) {
		uint64_t v = xorshift(&s) >> (xorshift(&s) % 64);
		if (v > HIST_MAX_VALUE)
			continue;
		unsigned i = hist_index(v);
		CHECK(hist_bucket_low(i) <= v && v <= hist_bucket_high(i));
	}
}

static void
test_single_value(void)
{
	static hist h;
	hist_init(&h);
	hist_record(&h, 123456789);
	CHECK_EQ(h.count, 1);
	CHECK_EQ(hist_min(&h), 123456789);
	CHECK_EQ(h.max, 123456789);
	/* Every percentile is the one value: capped to max and min. */
	CHECK_EQ(hist_percentile(&h, 0), 123456789);
	CHECK_EQ(hist_percentile(&h, 50), 123456789);
	CHECK_EQ(hist_percentile(&h, 99.9), 123456789);
	CHECK_EQ(hist_percentile(&h, 100), 123456789);
	CHECK(hist_mean(&h) == 123456789.0);
}

static void
test_exact_small(void)
{
	/* 1..100 once each: below 256 every value has its own bucket. */
	static hist h;
	hist_init(&h);
	for (int v = 100; v >= 1; v--)
		hist_record(&h, (uint64_t)v);
	CHECK_EQ(hist_percentile(&h, 50), 50);
	CHECK_EQ(hist_percentile(&h, 90), 90);
	CHECK_EQ(hist_percentile(&h, 99), 99);
	CHECK_EQ(hist_percentile(&h, 99.9), 100);
	CHECK_EQ(hist_percentile(&h, 100), 100);
	CHECK_EQ(hist_percentile(&h, 0.5), 1);
	CHECK(hist_mean(&h) == 50.5);
}

static void
test_uniform(void)
{
	/* 1..1,000,000 ns: percentile p is p * 10,000, within a bucket (0.8 %). */
	static hist h;
	hist_init(&h);
	for (uint64_t v = 1; v <= 1000000; v++)
		hist_record(&h, v);
	CHECK_EQ(h.count, 1000000);
	CHECK(near(hist_percentile(&h, 50), 500000, 1.0 / HIST_SUB));
	CHECK(near(hist_percentile(&h, 90), 900000, 1.0 / HIST_SUB));
	CHECK(near(hist_percentile(&h, 99), 990000, 1.0 / HIST_SUB));
	CHECK(near(hist_percentile(&h, 99.9), 999000, 1.0 / HIST_SUB));
	CHECK_EQ(hist_percentile(&h, 100), 1000000);
	/* Never below the true value: the highest equivalent value is reported. */
	CHECK(hist_percentile(&h, 50) >= 500000);
	CHECK(hist_percentile(&h, 99) >= 990000);
	CHECK(near((uint64_t)hist_mean(&h), 500000, 1e-6));
}

static void
test_exponential(void)
{
	/* Exponential with mean 1 ms: quantile q is -ln(1 - q) ms. */
	static hist h;
	hist_init(&h);
	uint64_t s = 0x9E3779B97F4A7C15ull;
	const int n = 2000000;
	for (int k = 0; k < n; k++) {
		double u = (double)(xorshift(&s) >> 11) / 9007199254740992.0; /* [0, 1) */
		hist_record(&h, (uint64_t)(-log(1.0 - u) * 1e6));
	}
	CHECK(near(hist_percentile(&h, 50), (uint64_t)(log(2.0) * 1e6), 0.02));
	CHECK(near(hist_percentile(&h, 90), (uint64_t)(log(10.0) * 1e6), 0.02));
	CHECK(near(hist_percentile(&h, 99), (uint64_t)(log(100.0) * 1e6), 0.02));
	CHECK(near(hist_percentile(&h, 99.9), (uint64_t)(log(1000.0) * 1e6), 0.05));
	CHECK(near((uint64_t)hist_mean(&h), 1000000, 0.01));
}

static void
test_merge(void)
{
	/* Two halves merged equal one histogram of everything. */
	static hist a, b, all;
	hist_init(&a);
	hist_init(&b);
	hist_init(&all);
	uint64_t s = 12345;
	for (int k = 0; k < 200000; k++) {
		uint64_t v = xorshift(&s) % 50000000;
		hist_record(k % 3 ? &a : &b, v);
		hist_record(&all, v);
	}
	hist_merge(&a, &b);
	CHECK_EQ(a.count, all.count);
	CHECK_EQ(a.min, all.min);
	CHECK_EQ(a.max, all.max);
	CHECK_MEM(a.b, all.b, sizeof(a.b));
	const double ps[] = {0, 10, 50, 90, 99, 99.9, 99.99, 100};
	for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
		CHECK_EQ(hist_percentile(&a, ps[i]), hist_percentile(&all, ps[i]));

	/* Merging an empty histogram changes nothing, in either direction. */
	static hist e;
	hist_init(&e);
	hist_merge(&a, &e);
	CHECK_EQ(a.count, all.count);
	CHECK_EQ(a.min, all.min);
	hist_merge(&e, &all);
	CHECK_EQ(e.count, all.count);
	CHECK_EQ(e.min, all.min);
	CHECK_EQ(e.max, all.max);
	CHECK_EQ(hist_percentile(&e, 99), hist_percentile(&all, 99));
}

static void
test_record_n_and_overflow(void)
{
	static hist h;
	hist_init(&h);
	hist_record_n(&h, 1000, 99);
	hist_record_n(&h, 5, 0); /* no-op */
	hist_record(&h, HIST_MAX_VALUE + 12345);
	CHECK_EQ(h.count, 100);
	CHECK_EQ(h.overflow, 1);
	CHECK_EQ(hist_min(&h), 1000);
	CHECK(near(hist_percentile(&h, 50), 1000, 1.0 / HIST_SUB));
	CHECK(near(hist_percentile(&h, 99), 1000, 1.0 / HIST_SUB));
	/* The top value keeps its exact max even though its bucket is clamped. */
	CHECK_EQ(h.max, HIST_MAX_VALUE + 12345);
	CHECK_EQ(hist_percentile(&h, 100), HIST_MAX_VALUE + 12345);
}

TEST_LIST = {
    TEST(test_empty),
    TEST(test_geometry),
    TEST(test_single_value),
    TEST(test_exact_small),
    TEST(test_uniform),
    TEST(test_exponential),
    TEST(test_merge),
    TEST(test_record_n_and_overflow),
    TEST_END,
};
