/*
 * ring.h - bounded lock-free single-producer single-consumer ring of pointers.
 *
 * One producer thread calls ring_push, one consumer thread calls ring_pop.
 * Capacity is a power of two. head (consumer) and tail (producer) live on
 * their own cache lines, each side keeps a cached copy of the other's index
 * so that most operations touch only its own line. Publication is
 * release/acquire: the consumer sees every write the producer made to an
 * element before pushing it.
 *
 * ring_push returns whether the ring was empty before the push (the caller
 * wakes a sleeping consumer only on that edge).
 */
#ifndef MXRING_RING_H
#define MXRING_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RING_CACHE_LINE 64

struct ring {
	_Alignas(RING_CACHE_LINE) _Atomic uint32_t head; /* next slot to pop */
	uint32_t tail_cache;				 /* consumer's copy of tail */
	_Alignas(RING_CACHE_LINE) _Atomic uint32_t tail; /* next slot to push */
	uint32_t head_cache;				 /* producer's copy of head */
	_Alignas(RING_CACHE_LINE) uint32_t mask;
	void **slot; /* owned: mask + 1 entries */
};

/* n * size zeroed bytes on cache lines of their own (rounded up to whole
 * lines), so that what one thread writes shares no line with a neighbour;
 * free() frees it. NULL when out of memory. */
static inline void *cache_aligned_zalloc(size_t n, size_t size)
{
	size_t bytes = n * size;
	bytes = (bytes + RING_CACHE_LINE - 1) / RING_CACHE_LINE * RING_CACHE_LINE;
	void *p = aligned_alloc(RING_CACHE_LINE, bytes ? bytes : RING_CACHE_LINE);
	if (p)
		memset(p, 0, bytes);
	return p;
}

/* Sets up a ring of cap entries (a power of two). 0 or -ENOMEM / -EINVAL. */
static inline int ring_init(struct ring *r, uint32_t cap)
{
	if (cap < 2 || (cap & (cap - 1)) != 0)
		return -22; /* EINVAL */
	r->slot = calloc(cap, sizeof(*r->slot));
	if (!r->slot)
		return -12; /* ENOMEM */
	atomic_init(&r->head, 0);
	atomic_init(&r->tail, 0);
	r->tail_cache = 0;
	r->head_cache = 0;
	r->mask = cap - 1;
	return 0;
}

static inline void ring_free(struct ring *r)
{
	free(r->slot);
	r->slot = NULL;
}

/* Producer: 1 = pushed and the ring was empty, 0 = pushed, -1 = full. */
static inline int ring_push(struct ring *r, void *p)
{
	uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	if (tail - r->head_cache > r->mask) {
		r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
		if (tail - r->head_cache > r->mask)
			return -1;
	}
	r->slot[tail & r->mask] = p;
	atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
	/* head_cache may be stale (behind), so "was empty" can be a false
	 * positive (an extra wake-up), never a false negative. */
	return tail == r->head_cache ||
	       tail == atomic_load_explicit(&r->head, memory_order_acquire);
}

/* Consumer: the oldest entry, or NULL when empty. */
static inline void *ring_pop(struct ring *r)
{
	uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	if (head == r->tail_cache) {
		r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
		if (head == r->tail_cache)
			return NULL;
	}
	void *p = r->slot[head & r->mask];
	atomic_store_explicit(&r->head, head + 1, memory_order_release);
	return p;
}

/* Either side, or a third thread: entries currently queued (a snapshot).
 * head is read before tail, so a reader on neither side never sees head
 * past tail (both only grow); it may see more than were queued at any one
 * instant, never more than the capacity. */
static inline uint32_t ring_count(struct ring *r)
{
	uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint32_t n = tail - head;
	return n > r->mask + 1 ? r->mask + 1 : n;
}

#endif
