/*
 * hist.c - log-linear latency histogram (see hist.h).
 *
 * Bucket index: a value v below 256 is its own index. Otherwise, with msb
 * the index of its highest set bit and shift = msb - 7, the mantissa
 * m = v >> shift lies in [128, 255] and the index is shift * 128 + m, which
 * continues the linear part without a gap (shift 1, m 128 gives 256).
 */
#include <string.h>

#include "hist.h"

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

static unsigned hist_index(uint64_t v)
{
	if (v > HIST_VALUE_MAX)
		v = HIST_VALUE_MAX;
	if (v < 256)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - HIST_SUB_BITS;
	return (shift << HIST_SUB_BITS) + (unsigned)(v >> shift);
}

/* The lowest value of bucket i, and its width. */
static uint64_t hist_low(unsigned i, uint64_t *width)
{
	if (i < 256) {
		*width = 1;
		return i;
	}
	unsigned shift = (i >> HIST_SUB_BITS) - 1;
	uint64_t m = (i & ((1u << HIST_SUB_BITS) - 1)) + (1u << HIST_SUB_BITS);
	*width = UINT64_C(1) << shift;
	return m << shift;
}

void hist_record(struct hist *h, uint64_t v)
{
	h->bucket[hist_index(v)]++;
	h->count++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	if (src->count == 0)
		return;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	if (h->count == 0)
		return 0;
	if (q <= 0)
		return h->min;
	if (q >= 1)
		return h->max;
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen < rank)
			continue;
		uint64_t width, v = hist_low(i, &width);
		v += width / 2;
		if (v < h->min)
			v = h->min;
		if (v > h->max)
			v = h->max;
		return v;
	}
	return h->max;
}
