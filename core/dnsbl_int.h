/*
 * dnsbl_int.h - the parts of dnsbl.c that its unit test drives directly.
 *
 * Not for the receiver: only the resolver thread writes the cache, and
 * these functions are how it does so.
 */
#ifndef MXRING_DNSBL_INT_H
#define MXRING_DNSBL_INT_H

#include <stdint.h>

#include "dnsbl.h"

/*
 * Stores v (score and matched) under addr until expires_s (seconds of
 * CLOCK_MONOTONIC; now_s says which entries are dead already). The cache
 * has one writer: the resolver thread, or a test's single writer thread
 * while the resolver does not run. A no-op without a cache.
 */
void dnsbl_cache_put(struct dnsbl *d, const uint8_t addr[16], const struct dnsbl_verdict *v,
		     uint64_t expires_s, uint64_t now_s);

#endif
