/*
 * clock.h - the clocks, each named after the one it reads: milliseconds of
 * CLOCK_MONOTONIC (deadlines and ages off the hot path), of
 * CLOCK_MONOTONIC_COARSE (the shards' timers: a few ms of precision is
 * plenty and it costs no more than a memory read), and microseconds of
 * CLOCK_REALTIME (times that are dates: queue ids, the envelope, Received:).
 */
#ifndef MXRING_CLOCK_H
#define MXRING_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t mono_coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t real_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#endif
