/*
 * hist.h - a log-linear latency histogram in the manner of HdrHistogram.
 *
 * Values are nanoseconds. Below 256 every value has its own bucket; above,
 * each power of two is cut into 128 buckets, so a bucket is at most 1/128
 * (0.8%) of its value wide. Values above HIST_VALUE_MAX (about 37 minutes)
 * land in the last bucket; min, max, count and sum are exact. The size is
 * fixed (HIST_BUCKETS counters): no allocation, no growth.
 */
#ifndef MXRING_BENCH_HIST_H
#define MXRING_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS  7
#define HIST_MSB_MAX   41
#define HIST_BUCKETS   ((HIST_MSB_MAX - HIST_SUB_BITS + 1) * (1u << HIST_SUB_BITS) + 128)
#define HIST_VALUE_MAX ((UINT64_C(1) << (HIST_MSB_MAX + 1)) - 1)

struct hist {
	uint64_t count;
	uint64_t sum;
	uint64_t min;
	uint64_t max;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t value);
/* Adds every value of src into dst. */
void hist_merge(struct hist *dst, const struct hist *src);
/* The value at quantile q (0..1): the middle of its bucket, within [min, max]; 0 if empty. */
uint64_t hist_quantile(const struct hist *h, double q);

#endif
