/*
 * clock.h - milliseconds of CLOCK_MONOTONIC, for deadlines and ages off the
 * shards' hot path (the shards read the coarse clock themselves).
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

#endif
