/*
 * bench/hist.h: a header-only log-linear latency histogram in the manner of
 * HdrHistogram, for the load generator (bench/loadgen.c) and the raw fan-out
 * reference (bench/rawfanout.c).
 *
 * Values are unsigned 64-bit integers (the harness records nanoseconds).
 * Values below 2 * HIST_SUB are counted exactly; above that every power of two
 * is split into HIST_SUB equal sub-buckets, so a bucket is at most 1/HIST_SUB
 * (0.78 %) of its values wide.  Values from 2^HIST_MAX_BITS up (about 18 min
 * in ns) land in the top bucket and are counted in `overflow`; min, max, count
 * and the mean stay exact.  A histogram is a fixed-size plain struct (about
 * 35 KB): it can be copied, written to a pipe as bytes and merged by adding
 * the counts.
 *
 * Percentiles follow HdrHistogram's convention: the value at percentile p is
 * the highest value equivalent to the bucket holding the ceil(p/100 * count)-th
 * smallest recorded value, capped to the exact recorded maximum (so p100 is
 * the max, exactly).  Not thread-safe: one histogram per thread or process, merged at
 * the end.
 */
#ifndef bench_hist_h
#define bench_hist_h

#include <math.h>
#include <stdint.h>
#include <string.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_BITS 40
#define HIST_MAX_VALUE ((UINT64_C(1) << HIST_MAX_BITS) - 1)
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct hist {
	uint64_t count;    /* values recorded */
	uint64_t min, max; /* exact; min is UINT64_MAX while empty */
	uint64_t overflow; /* values above HIST_MAX_VALUE (counted in the top bucket) */
	double sum;        /* for the mean */
	uint64_t b[HIST_BUCKETS];
} hist;

/* Empties h. */
static inline void
hist_init(hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

/* The bucket index of value v (v is clamped to HIST_MAX_VALUE). */
static inline unsigned
hist_index(uint64_t v)
{
	if (v > HIST_MAX_VALUE)
		v = HIST_MAX_VALUE;
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - HIST_SUB_BITS;
	return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* The lowest value that falls into bucket i. */
static inline uint64_t
hist_bucket_low(unsigned i)
{
	if (i < 2 * HIST_SUB)
		return i;
	unsigned shift = i / HIST_SUB - 1;
	return (uint64_t)(i - shift * HIST_SUB) << shift;
}

/* The highest value that falls into bucket i. */
static inline uint64_t
hist_bucket_high(unsigned i)
{
	if (i < 2 * HIST_SUB)
		return i;
	unsigned shift = i / HIST_SUB - 1;
	return hist_bucket_low(i) + (UINT64_C(1) << shift) - 1;
}

/* Records value v n times. */
static inline void
hist_record_n(hist *h, uint64_t v, uint64_t n)
{
	if (!n)
		return;
	h->b[hist_index(v)] += n;
	h->count += n;
	h->sum += (double)v * (double)n;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	if (v > HIST_MAX_VALUE)
		h->overflow += n;
}

/* Records value v once. */
static inline void
hist_record(hist *h, uint64_t v)
{
	hist_record_n(h, v, 1);
}

/* Adds every value of src to dst. */
static inline void
hist_merge(hist *dst, const hist *src)
{
	if (!src->count)
		return;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	dst->sum += src->sum;
	dst->overflow += src->overflow;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

/* The value at percentile p (0..100); 0 for an empty histogram. */
static inline uint64_t
hist_percentile(const hist *h, double p)
{
	if (!h->count)
		return 0;
	if (p <= 0)
		return h->min;
	double t = ceil(p / 100.0 * (double)h->count);
	uint64_t target = t < 1 ? 1 : t >= (double)h->count ? h->count : (uint64_t)t;
	if (target == h->count)
		return h->max;
	uint64_t cum = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		cum += h->b[i];
		if (cum >= target) {
			uint64_t v = hist_bucket_high(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

/* The mean of the recorded values; 0 for an empty histogram. */
static inline double
hist_mean(const hist *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}

/* The smallest recorded value; 0 for an empty histogram. */
static inline uint64_t
hist_min(const hist *h)
{
	return h->count ? h->min : 0;
}

#endif /* bench_hist_h */
