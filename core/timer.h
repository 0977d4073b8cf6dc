/*
 * timer.h - a per-shard timer wheel over connection slots.
 *
 * One io_uring timeout per shard ticks the wheel once a second; no timer is
 * armed per connection. Each slot index (a connection) has at most one
 * deadline, in whole seconds of CLOCK_MONOTONIC. Moving a deadline later is
 * O(1) and touches no list (the entry is re-filed lazily when its old wheel
 * slot comes round); moving it earlier re-files it at once.
 *
 * Bounds: nodes are allocated once for cap slots; timer_expire returns at
 * most max entries per call and visits each wheel slot at most once per tick.
 */
#ifndef MXRING_TIMER_H
#define MXRING_TIMER_H

#include <stdint.h>

#define TIMER_NONE  UINT32_MAX
#define TIMER_SLOTS 512u /* seconds covered by one turn of the wheel */

struct timer_node {
	uint32_t prev, next; /* within the wheel slot's list, TIMER_NONE at the ends */
	uint32_t slot;	     /* wheel slot it is filed in, TIMER_NONE if not armed */
	uint64_t deadline;   /* seconds */
};

struct timer_wheel {
	struct timer_node *nodes; /* owned: cap entries */
	uint32_t cap;
	uint32_t head[TIMER_SLOTS];
	uint64_t now; /* last second processed */
};

/* 0 or -ENOMEM. now is the current second. */
int timer_init(struct timer_wheel *w, uint32_t cap, uint64_t now)
    __attribute__((warn_unused_result));
void timer_free(struct timer_wheel *w);

/* Arms or moves idx's deadline (seconds, > w->now). */
void timer_set(struct timer_wheel *w, uint32_t idx, uint64_t deadline);

/* Disarms idx (no-op when not armed). */
void timer_cancel(struct timer_wheel *w, uint32_t idx);

/*
 * Advances to now and writes into out up to max slot indexes whose deadline
 * has passed (they are disarmed). Returns the count; when it equals max,
 * call again with the same now.
 */
unsigned timer_expire(struct timer_wheel *w, uint64_t now, uint32_t *out, unsigned max);

#endif
