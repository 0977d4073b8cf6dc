/*
 * rate.c - events per client and minute (rate.h).
 */
#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "rate.h"

static_assert((RATE_BUCKETS & (RATE_BUCKETS - 1)) == 0, "buckets are a power of two");

static _Alignas(64) _Atomic uint64_t table[RATE_KINDS][RATE_BUCKETS][RATE_WAYS];

#define TAG_SHIFT	40
#define START_SHIFT	16
#define START_MASK	0xffffffu /* 24 bits of seconds: about 194 days before it wraps */
#define COUNT_MAX	0xffffu
#define RATE_ROUNDS_MAX 4096 /* compare-and-swap tries of one event */

static uint64_t pack(uint32_t tag, uint32_t start, uint32_t count)
{
	return (uint64_t)tag << TAG_SHIFT | (uint64_t)(start & START_MASK) << START_SHIFT | count;
}

static uint32_t tag_of(uint64_t e)
{
	return (uint32_t)(e >> TAG_SHIFT);
}

static uint32_t start_of(uint64_t e)
{
	return (uint32_t)(e >> START_SHIFT) & START_MASK;
}

static uint32_t count_of(uint64_t e)
{
	return (uint32_t)e & COUNT_MAX;
}

/* Whether entry e's minute still runs at now (24-bit seconds, wrapping). */
static bool current(uint64_t e, uint32_t now)
{
	return e != 0 && ((now - start_of(e)) & START_MASK) < RATE_WINDOW;
}

/* The client: an IPv4 address, or the /64 of an IPv6 one, hashed (64 bits). */
static uint64_t client_hash(const uint8_t addr[16])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	uint64_t k;
	if (memcmp(addr, mapped, sizeof(mapped)) == 0) {
		uint32_t v4;
		memcpy(&v4, addr + 12, 4);
		k = 0x4000000000000000ull ^ v4;
	} else {
		memcpy(&k, addr, 8);
		k ^= 0x6000000000000000ull;
	}
	/* A 64-bit finaliser (splitmix64): every input bit moves every output bit. */
	k += 0x9e3779b97f4a7c15ull;
	k = (k ^ (k >> 30)) * 0xbf58476d1ce4e5b9ull;
	k = (k ^ (k >> 27)) * 0x94d049bb133111ebull;
	return k ^ (k >> 31);
}

uint32_t rate_count(enum rate_kind kind, const uint8_t addr[16], uint64_t now_s)
{
	uint64_t h = client_hash(addr);
	_Atomic uint64_t *b = table[kind][h & (RATE_BUCKETS - 1)];
	uint32_t tag = (uint32_t)(h >> 40) | 1u; /* never 0: an empty entry is all zero */
	uint32_t now = (uint32_t)now_s & START_MASK;

	/* Bounded: a failed compare-and-swap means another shard counted an
	 * event of this bucket meanwhile, so a round fails only while others
	 * succeed; past the bound (never seen) the event counts as if alone. */
	for (int round = 0; round < RATE_ROUNDS_MAX; round++) {
		unsigned victim = 0;
		uint64_t ve = 0;
		uint32_t vrank = UINT32_MAX;
		bool raced = false;
		for (unsigned w = 0; w < RATE_WAYS && !raced; w++) {
			uint64_t e = atomic_load_explicit(&b[w], memory_order_relaxed);
			while (e != 0 && tag_of(e) == tag && round < RATE_ROUNDS_MAX) {
				uint32_t n = current(e, now) ? count_of(e) : 0;
				uint32_t start = n ? start_of(e) : now;
				uint64_t ne = pack(tag, start, n < COUNT_MAX ? n + 1 : COUNT_MAX);
				/* On failure e holds the entry as it is now: count again,
				 * unless another client took the entry meanwhile. */
				if (atomic_compare_exchange_weak_explicit(
					&b[w], &e, ne, memory_order_relaxed, memory_order_relaxed))
					return count_of(ne);
				round++;
			}
			if (e != 0 && tag_of(e) == tag) {
				raced = true; /* out of rounds */
				break;
			}
			/* Replacement rank: empty or over first, then the quietest. */
			uint32_t rank = current(e, now) ? 1u + count_of(e) : 0;
			if (rank < vrank) {
				vrank = rank;
				victim = w;
				ve = e;
			}
		}
		if (raced)
			break;
		if (atomic_compare_exchange_weak_explicit(&b[victim], &ve, pack(tag, now, 1),
							  memory_order_relaxed,
							  memory_order_relaxed))
			return 1;
	}
	return 1;
}

void rate_reset(void)
{
	for (unsigned k = 0; k < RATE_KINDS; k++)
		for (unsigned i = 0; i < RATE_BUCKETS; i++)
			for (unsigned w = 0; w < RATE_WAYS; w++)
				atomic_store_explicit(&table[k][i][w], 0, memory_order_relaxed);
}
