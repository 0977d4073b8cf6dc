/*
 * sesscache.c - striped session-ID cache (see sesscache.h).
 *
 * Layout: one array of fixed-size slots and one array of bucket heads,
 * allocated at creation and cut into SESSCACHE_STRIPES ranges (fewer for a
 * small capacity, so that a stripe holds SESSCACHE_STRIPE_MIN slots or the
 * cache has one stripe). A stripe is a chained
 * hash table over its own slots: its free slots form a list, its live slots
 * hang from buckets (at least as many buckets as slots). The stripe and the
 * bucket come from different bits of one seeded 64-bit hash of the id.
 *
 * Invariants, under the stripe's lock: a slot is free (blob_len 0, all
 * bytes zero, on the free list) or live (blob_len > 0, on the chain of the
 * bucket its id hashes to); used counts the live ones; the hand is a slot
 * index of the stripe.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "check.h"
#include "sesscache.h"

#define NONE		     UINT32_MAX
#define SESSCACHE_STRIPE_MIN 16u /* slots per stripe, unless the capacity is smaller */

struct slot {
	uint64_t expire_s; /* live until now_s reaches it */
	uint32_t next;	   /* the bucket chain (live) or the free list (free) */
	uint16_t blob_len; /* 0: free */
	uint8_t id_len;
	uint8_t ref; /* CLOCK: looked up since the hand last passed */
	uint8_t id[SESSCACHE_ID_MAX];
	uint8_t blob[SESSCACHE_BLOB_MAX];
};

static_assert(SESSCACHE_BLOB_MAX <= UINT16_MAX, "blob_len holds a blob length");
static_assert((SESSCACHE_STRIPES & (SESSCACHE_STRIPES - 1)) == 0, "stripes: a power of two");
static_assert(SESSCACHE_ENTRIES_MAX < NONE / 2, "slot indexes fit 32 bits");

struct stripe {
	pthread_mutex_t lock;
	struct slot *slots; /* borrowed: nslots of sesscache.slots */
	uint32_t *heads;    /* borrowed: mask + 1 of sesscache.heads */
	uint32_t nslots, mask, used, hand, free_head;
	uint64_t hits, misses, stores, evictions, expired, refused, removed;
} __attribute__((aligned(64)));

struct sesscache {
	uint64_t seed;
	uint32_t timeout_s;
	uint32_t nstripes; /* a power of two */
	size_t capacity;
	size_t nheads;
	struct slot *slots; /* owned: capacity of them */
	uint32_t *heads;    /* owned: nheads of them */
	struct stripe stripes[];
};

static uint64_t hash_id(uint64_t seed, const uint8_t *id, size_t n)
{
	uint64_t h = seed ^ 0xcbf29ce484222325ull; /* FNV-1a, then a murmur3 finaliser */
	for (size_t i = 0; i < n; i++) {
		h ^= id[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static uint32_t pow2_at_least(size_t n)
{
	uint32_t p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

int sesscache_new(size_t capacity, uint32_t timeout_s, struct sesscache **out)
{
	*out = NULL;
	if (capacity == 0 || capacity > SESSCACHE_ENTRIES_MAX || timeout_s == 0)
		return -EINVAL;
	uint32_t nstripes = SESSCACHE_STRIPES;
	while (nstripes > 1 && (size_t)nstripes * SESSCACHE_STRIPE_MIN > capacity)
		nstripes >>= 1;
	struct sesscache *c = calloc(1, sizeof(*c) + nstripes * sizeof(struct stripe));
	if (!c)
		return -ENOMEM;
	c->timeout_s = timeout_s;
	c->nstripes = nstripes;
	c->capacity = capacity;
	size_t per = capacity / nstripes, extra = capacity % nstripes;
	uint32_t nb = pow2_at_least(per + (extra > 0));
	c->nheads = (size_t)nb * nstripes;
	/* Pages of slots the cache never fills are never touched. */
	c->slots = calloc(capacity, sizeof(struct slot));
	c->heads = malloc(c->nheads * sizeof(uint32_t));
	if (!c->slots || !c->heads) {
		free(c->slots);
		free(c->heads);
		free(c);
		return -ENOMEM;
	}
	memset(c->heads, 0xff, c->nheads * sizeof(uint32_t));
	if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != sizeof(c->seed))
		c->seed = (uint64_t)(uintptr_t)c ^ 0x9e3779b97f4a7c15ull;
	size_t first = 0;
	for (uint32_t i = 0; i < nstripes; i++) {
		struct stripe *s = &c->stripes[i];
		pthread_mutex_init(&s->lock, NULL);
		s->nslots = (uint32_t)(per + (i < extra));
		s->slots = c->slots + first;
		s->heads = c->heads + (size_t)i * nb;
		s->mask = nb - 1;
		ASSERT(s->nslots >= 1);
		for (uint32_t k = 0; k < s->nslots; k++)
			s->slots[k].next = k + 1 < s->nslots ? k + 1 : NONE;
		s->free_head = 0;
		first += s->nslots;
	}
	ASSERT(first == capacity);
	*out = c;
	return 0;
}

void sesscache_free(struct sesscache *c)
{
	if (!c)
		return;
	for (uint32_t i = 0; i < c->nstripes; i++)
		pthread_mutex_destroy(&c->stripes[i].lock);
	explicit_bzero(c->slots, c->capacity * sizeof(struct slot));
	free(c->slots);
	free(c->heads);
	free(c);
}

static struct stripe *stripe_of(struct sesscache *c, uint64_t h)
{
	return &c->stripes[h & (c->nstripes - 1)];
}

static uint32_t bucket_of(const struct stripe *s, uint64_t h)
{
	return (uint32_t)(h >> 32) & s->mask;
}

/* The live slot holding id in bucket b, or NONE; *prev: its predecessor. */
static uint32_t find(const struct stripe *s, uint32_t b, const uint8_t *id, size_t n,
		     uint32_t *prev)
{
	uint32_t p = NONE;
	/* A chain is at most the stripe's slots long. */
	for (uint32_t i = s->heads[b], guard = 0; i != NONE && guard <= s->nslots; guard++) {
		const struct slot *e = &s->slots[i];
		if (e->id_len == n && memcmp(e->id, id, n) == 0) {
			*prev = p;
			return i;
		}
		p = i;
		i = e->next;
	}
	return NONE;
}

static void unlink_slot(struct stripe *s, uint32_t b, uint32_t i, uint32_t prev)
{
	if (prev == NONE)
		s->heads[b] = s->slots[i].next;
	else
		s->slots[prev].next = s->slots[i].next;
}

static void free_slot(struct stripe *s, uint32_t i)
{
	explicit_bzero(&s->slots[i], sizeof(s->slots[i]));
	s->slots[i].next = s->free_head;
	s->free_head = i;
	s->used--;
}

/* Unlinks live slot i (found through the hash of its own id) and frees it. */
static void drop(struct sesscache *c, struct stripe *s, uint32_t i)
{
	struct slot *e = &s->slots[i];
	uint32_t b = bucket_of(s, hash_id(c->seed, e->id, e->id_len)), prev;
	uint32_t j = find(s, b, e->id, e->id_len, &prev);
	ASSERT(j == i);
	unlink_slot(s, b, i, prev);
	free_slot(s, i);
}

/* A free slot, taken off the free list; a full stripe first gives one up (CLOCK). */
static uint32_t take_slot(struct sesscache *c, struct stripe *s, uint64_t now_s)
{
	if (s->free_head == NONE) {
		/* Two turns at most: the first clears every reference bit. */
		uint32_t victim = NONE;
		for (uint32_t k = 0; k < 2 * s->nslots + 1 && victim == NONE; k++) {
			uint32_t i = s->hand;
			struct slot *e = &s->slots[i];
			s->hand = i + 1 < s->nslots ? i + 1 : 0;
			if (e->expire_s <= now_s) {
				s->expired++;
				victim = i;
			} else if (e->ref) {
				e->ref = 0;
			} else {
				s->evictions++;
				victim = i;
			}
		}
		ASSERT(victim != NONE);
		drop(c, s, victim);
	}
	uint32_t i = s->free_head;
	s->free_head = s->slots[i].next;
	s->used++;
	return i;
}

int sesscache_store(struct sesscache *c, const uint8_t *id, size_t id_len, const uint8_t *blob,
		    size_t blob_len, uint64_t now_s)
{
	uint64_t h = hash_id(c->seed, id, id_len);
	struct stripe *s = stripe_of(c, h);
	int rc = 0;
	pthread_mutex_lock(&s->lock);
	if (id_len == 0 || id_len > SESSCACHE_ID_MAX) {
		rc = -EINVAL;
	} else if (blob_len == 0 || blob_len > SESSCACHE_BLOB_MAX) {
		rc = -E2BIG;
	} else {
		uint32_t b = bucket_of(s, h), prev;
		uint32_t i = find(s, b, id, id_len, &prev);
		if (i == NONE) {
			i = take_slot(c, s, now_s);
			s->slots[i].next = s->heads[b];
			s->heads[b] = i;
		}
		struct slot *e = &s->slots[i];
		e->expire_s = now_s + c->timeout_s;
		e->id_len = (uint8_t)id_len;
		e->ref = 0;
		memcpy(e->id, id, id_len);
		e->blob_len = (uint16_t)blob_len;
		memcpy(e->blob, blob, blob_len);
		s->stores++;
	}
	if (rc)
		s->refused++;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int sesscache_lookup(struct sesscache *c, const uint8_t *id, size_t id_len, uint64_t now_s,
		     uint8_t *out, size_t cap)
{
	ASSERT(cap >= SESSCACHE_BLOB_MAX);
	if (id_len == 0 || id_len > SESSCACHE_ID_MAX)
		return -ENOENT;
	uint64_t h = hash_id(c->seed, id, id_len);
	struct stripe *s = stripe_of(c, h);
	int rc;
	pthread_mutex_lock(&s->lock);
	uint32_t b = bucket_of(s, h), prev;
	uint32_t i = find(s, b, id, id_len, &prev);
	if (i == NONE) {
		s->misses++;
		rc = -ENOENT;
	} else if (s->slots[i].expire_s <= now_s) {
		unlink_slot(s, b, i, prev);
		free_slot(s, i);
		s->expired++;
		s->misses++;
		rc = -ENOENT;
	} else {
		struct slot *e = &s->slots[i];
		memcpy(out, e->blob, e->blob_len);
		e->ref = 1;
		s->hits++;
		rc = e->blob_len;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int sesscache_remove(struct sesscache *c, const uint8_t *id, size_t id_len)
{
	if (id_len == 0 || id_len > SESSCACHE_ID_MAX)
		return -ENOENT;
	uint64_t h = hash_id(c->seed, id, id_len);
	struct stripe *s = stripe_of(c, h);
	pthread_mutex_lock(&s->lock);
	uint32_t b = bucket_of(s, h), prev;
	uint32_t i = find(s, b, id, id_len, &prev);
	if (i != NONE) {
		unlink_slot(s, b, i, prev);
		free_slot(s, i);
		s->removed++;
	}
	pthread_mutex_unlock(&s->lock);
	return i == NONE ? -ENOENT : 0;
}

void sesscache_stats(struct sesscache *c, struct sesscache_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (uint32_t i = 0; i < c->nstripes; i++) {
		struct stripe *s = &c->stripes[i];
		pthread_mutex_lock(&s->lock);
		out->hits += s->hits;
		out->misses += s->misses;
		out->stores += s->stores;
		out->evictions += s->evictions;
		out->expired += s->expired;
		out->refused += s->refused;
		out->removed += s->removed;
		out->entries += s->used;
		pthread_mutex_unlock(&s->lock);
	}
	out->capacity = c->capacity;
}

size_t sesscache_entry_bytes(const struct sesscache *c)
{
	return sizeof(struct slot) + (c->nheads * sizeof(uint32_t) + c->capacity - 1) / c->capacity;
}
