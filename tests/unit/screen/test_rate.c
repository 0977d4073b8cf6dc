/*
 * test_rate.c - events per client and minute (core/rate.c): counts within a
 * client's minute, a new minute, an IPv6 /64 as one client, the kinds
 * apart, a busy client kept while a crowd of others passes through its
 * bucket, and threads counting one client at once (none lost).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rate.h"

static void v4(uint8_t a[16], uint32_t x)
{
	memset(a, 0, 10);
	a[10] = a[11] = 0xff;
	a[12] = (uint8_t)(x >> 24), a[13] = (uint8_t)(x >> 16), a[14] = (uint8_t)(x >> 8),
	a[15] = (uint8_t)x;
}

static int setup(void **state)
{
	(void)state;
	rate_reset();
	return 0;
}

static void test_minute(void **state)
{
	(void)state;
	uint8_t a[16], b[16];
	v4(a, 0xc0000201);
	v4(b, 0xc0000202);
	for (uint32_t i = 1; i <= 100; i++)
		assert_int_equal(rate_count(RATE_CONN, a, 1000 + i / 10), i);
	/* Another address, and another kind, count apart. */
	assert_int_equal(rate_count(RATE_CONN, b, 1010), 1);
	assert_int_equal(rate_count(RATE_MSG, a, 1010), 1);
	/* The minute started at 1000: 1059 is inside it, 1060 starts a new one. */
	assert_int_equal(rate_count(RATE_CONN, a, 1059), 101);
	assert_int_equal(rate_count(RATE_CONN, a, 1060), 1);
	assert_int_equal(rate_count(RATE_CONN, a, 1061), 2);
	/* Clocks past 2^24 s wrap inside the entry without losing the minute. */
	assert_int_equal(rate_count(RATE_CONN, b, (1ull << 24) - 10), 1);
	assert_int_equal(rate_count(RATE_CONN, b, (1ull << 24) + 10), 2);
	assert_int_equal(rate_count(RATE_CONN, b, (1ull << 24) + 50), 1);
}

static void test_ipv6_prefix(void **state)
{
	(void)state;
	uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1};
	uint8_t b[16], c[16];
	memcpy(b, a, 16);
	b[15] = 0x99; /* the same /64 */
	memcpy(c, a, 16);
	c[7] = 3; /* the next /64 */
	assert_int_equal(rate_count(RATE_MSG, a, 50), 1);
	assert_int_equal(rate_count(RATE_MSG, b, 50), 2);
	assert_int_equal(rate_count(RATE_MSG, c, 50), 1);
	/* ::1 (all-zero /64) is a client like any other. */
	uint8_t lo[16] = {0};
	lo[15] = 1;
	assert_int_equal(rate_count(RATE_MSG, lo, 50), 1);
	assert_int_equal(rate_count(RATE_MSG, lo, 51), 2);
}

static void test_crowd(void **state)
{
	(void)state;
	uint8_t busy[16], other[16];
	v4(busy, 0x0a000001);
	for (int i = 0; i < 500; i++)
		rate_count(RATE_CONN, busy, 7);
	/* A million other clients in the same minute: memory stays the table's,
	 * and the busy client, never the quietest of its bucket, keeps its count. */
	for (uint32_t i = 0; i < 1000000; i++) {
		v4(other, 0x0b000000 + i);
		rate_count(RATE_CONN, other, 7);
	}
	assert_int_equal(rate_count(RATE_CONN, busy, 8), 501);
	/* Counts stop at 65535 rather than wrapping. */
	for (int i = 0; i < 70000; i++)
		rate_count(RATE_MSG, busy, 9);
	assert_int_equal(rate_count(RATE_MSG, busy, 9), 65535);
}

static void *counter(void *arg)
{
	uint8_t a[16];
	v4(a, 0x0c000001);
	for (int i = 0; i < 20000; i++)
		rate_count(RATE_CONN, a, (uint64_t)(uintptr_t)arg);
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	pthread_t t[4];
	uint8_t a[16];
	v4(a, 0x0c000001);
	rate_count(RATE_CONN, a, 5); /* the entry exists: no race to create it */
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, counter, (void *)(uintptr_t)5), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	/* Not one event lost to a race (counts stop at 65535). */
	assert_int_equal(rate_count(RATE_CONN, a, 5), 65535);
	rate_reset();
	rate_count(RATE_CONN, a, 5);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&t[i], NULL, counter, (void *)(uintptr_t)5), 0);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(rate_count(RATE_CONN, a, 5), 60002);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_minute, setup),
	    cmocka_unit_test_setup(test_ipv6_prefix, setup),
	    cmocka_unit_test_setup(test_crowd, setup),
	    cmocka_unit_test_setup(test_threads, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
