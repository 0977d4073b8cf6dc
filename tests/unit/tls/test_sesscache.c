/*
 * test_sesscache.c - the shared session-ID cache (tls/sesscache.c) alone.
 *
 * Store, look up, replace and remove; the bound on entries with CLOCK
 * eviction (a looked-up entry survives a full turn); expiry at exactly the
 * timeout; blobs over SESSCACHE_BLOB_MAX and bad IDs refused, never cut;
 * threads hammering one cache while every blob they get back is checked
 * against the ID it was stored under; and the memory per entry.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sesscache.h"

/* A 32-byte ID and a blob that both derive from k. */
static void make_id(uint32_t k, uint8_t id[32])
{
	for (int i = 0; i < 32; i++)
		id[i] = (uint8_t)(k >> (8 * (i % 4))) ^ (uint8_t)(i * 37);
}

static size_t make_blob(uint32_t k, uint8_t *blob)
{
	size_t n = 1 + k % SESSCACHE_BLOB_MAX;
	for (size_t i = 0; i < n; i++)
		blob[i] = (uint8_t)(k * 131 + i);
	return n;
}

static struct sesscache *cache_new(size_t cap, uint32_t timeout_s)
{
	struct sesscache *c;
	assert_int_equal(sesscache_new(cap, timeout_s, &c), 0);
	return c;
}

static void test_store_lookup(void **state)
{
	(void)state;
	struct sesscache *c = cache_new(100, 60);
	uint8_t id[32], blob[SESSCACHE_BLOB_MAX], out[SESSCACHE_BLOB_MAX];
	make_id(1, id);
	size_t n = make_blob(1, blob);
	assert_int_equal(sesscache_lookup(c, id, 32, 0, out, sizeof out), -ENOENT);
	assert_int_equal(sesscache_store(c, id, 32, blob, n, 0), 0);
	assert_int_equal(sesscache_lookup(c, id, 32, 1, out, sizeof out), (int)n);
	assert_memory_equal(out, blob, n);
	/* A shorter ID with the same first bytes is another ID. */
	assert_int_equal(sesscache_lookup(c, id, 31, 1, out, sizeof out), -ENOENT);

	/* Replacing keeps one entry. */
	n = make_blob(2, blob);
	assert_int_equal(sesscache_store(c, id, 32, blob, n, 2), 0);
	assert_int_equal(sesscache_lookup(c, id, 32, 3, out, sizeof out), (int)n);
	assert_memory_equal(out, blob, n);

	struct sesscache_stats st;
	sesscache_stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.stores, 2);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.capacity, 100);

	assert_int_equal(sesscache_remove(c, id, 32), 0);
	assert_int_equal(sesscache_remove(c, id, 32), -ENOENT);
	assert_int_equal(sesscache_lookup(c, id, 32, 4, out, sizeof out), -ENOENT);
	sesscache_stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.removed, 1);
	sesscache_free(c);
}

static void test_bad_input(void **state)
{
	(void)state;
	struct sesscache *c;
	assert_int_equal(sesscache_new(0, 60, &c), -EINVAL);
	assert_int_equal(sesscache_new(SESSCACHE_ENTRIES_MAX + 1, 60, &c), -EINVAL);
	assert_int_equal(sesscache_new(10, 0, &c), -EINVAL);
	c = cache_new(10, 60);
	uint8_t id[33] = {1}, blob[SESSCACHE_BLOB_MAX + 1] = {0}, out[SESSCACHE_BLOB_MAX];
	/* A blob one byte too long is refused, not cut. */
	assert_int_equal(sesscache_store(c, id, 32, blob, SESSCACHE_BLOB_MAX + 1, 0), -E2BIG);
	assert_int_equal(sesscache_lookup(c, id, 32, 0, out, sizeof out), -ENOENT);
	assert_int_equal(sesscache_store(c, id, 32, blob, 0, 0), -E2BIG);
	assert_int_equal(sesscache_store(c, id, 33, blob, 10, 0), -EINVAL);
	assert_int_equal(sesscache_store(c, id, 0, blob, 10, 0), -EINVAL);
	assert_int_equal(sesscache_lookup(c, id, 33, 0, out, sizeof out), -ENOENT);
	assert_int_equal(sesscache_lookup(c, id, 0, 0, out, sizeof out), -ENOENT);
	/* The largest blob and a 1-byte ID fit. */
	assert_int_equal(sesscache_store(c, id, 1, blob, SESSCACHE_BLOB_MAX, 0), 0);
	assert_int_equal(sesscache_lookup(c, id, 1, 0, out, sizeof out), (int)SESSCACHE_BLOB_MAX);
	struct sesscache_stats st;
	sesscache_stats(c, &st);
	assert_int_equal(st.refused, 4);
	assert_int_equal(st.stores, 1);
	sesscache_free(c);
}

static void test_expiry(void **state)
{
	(void)state;
	struct sesscache *c = cache_new(20, 300);
	uint8_t id[32], blob[SESSCACHE_BLOB_MAX], out[SESSCACHE_BLOB_MAX];
	make_id(7, id);
	size_t n = make_blob(7, blob);
	assert_int_equal(sesscache_store(c, id, 32, blob, n, 1000), 0);
	assert_int_equal(sesscache_lookup(c, id, 32, 1299, out, sizeof out), (int)n);
	assert_int_equal(sesscache_lookup(c, id, 32, 1300, out, sizeof out), -ENOENT);
	/* Dropped at that lookup: gone even for an earlier clock. */
	assert_int_equal(sesscache_lookup(c, id, 32, 1000, out, sizeof out), -ENOENT);
	struct sesscache_stats st;
	sesscache_stats(c, &st);
	assert_int_equal(st.expired, 1);
	assert_int_equal(st.entries, 0);

	/* A full cache (one stripe of 20) gives up expired entries before live ones. */
	for (uint32_t k = 0; k < 20; k++) {
		make_id(k, id);
		assert_int_equal(sesscache_store(c, id, 32, blob, n, k < 10 ? 0 : 2000), 0);
	}
	for (uint32_t k = 100; k < 110; k++) {
		make_id(k, id);
		assert_int_equal(sesscache_store(c, id, 32, blob, n, 2001), 0);
	}
	for (uint32_t k = 10; k < 20; k++) {
		make_id(k, id);
		assert_int_equal(sesscache_lookup(c, id, 32, 2002, out, sizeof out), (int)n);
	}
	sesscache_stats(c, &st);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.expired, 1 + 10);
	sesscache_free(c);
}

static void test_bound_and_clock(void **state)
{
	(void)state;
	enum { CAP = 1000, N = 10 * CAP };
	struct sesscache *c = cache_new(CAP, 3600);
	uint8_t id[32], blob[SESSCACHE_BLOB_MAX], out[SESSCACHE_BLOB_MAX];
	for (uint32_t k = 0; k < N; k++) {
		make_id(k, id);
		size_t n = make_blob(k, blob);
		assert_int_equal(sesscache_store(c, id, 32, blob, n, 0), 0);
	}
	struct sesscache_stats st;
	sesscache_stats(c, &st);
	assert_int_equal(st.capacity, CAP);
	assert_int_equal(st.entries, CAP);
	assert_int_equal(st.evictions, N - CAP);
	/* Whatever survived is intact. */
	unsigned found = 0;
	for (uint32_t k = 0; k < N; k++) {
		make_id(k, id);
		int n = sesscache_lookup(c, id, 32, 1, out, sizeof out);
		if (n < 0)
			continue;
		found++;
		assert_int_equal(n, (int)make_blob(k, blob));
		assert_memory_equal(out, blob, (size_t)n);
	}
	assert_int_equal(found, CAP);
	sesscache_free(c);

	/* One stripe of 16: entries looked up since the hand passed survive
	 * the next 8 stores (second chance); the others go first. */
	c = cache_new(16, 3600);
	for (uint32_t k = 0; k < 16; k++) {
		make_id(k, id);
		assert_int_equal(sesscache_store(c, id, 32, blob, 10, 0), 0);
	}
	for (uint32_t k = 0; k < 16; k += 2) {
		make_id(k, id);
		assert_int_equal(sesscache_lookup(c, id, 32, 0, out, sizeof out), 10);
	}
	for (uint32_t k = 100; k < 108; k++) {
		make_id(k, id);
		assert_int_equal(sesscache_store(c, id, 32, blob, 10, 0), 0);
	}
	for (uint32_t k = 0; k < 16; k++) {
		make_id(k, id);
		int n = sesscache_lookup(c, id, 32, 0, out, sizeof out);
		assert_int_equal(n, k % 2 == 0 ? 10 : -ENOENT);
	}
	sesscache_free(c);
}

/* ---- threads ------------------------------------------------------------ */

enum { THREADS = 8, OPS = 200000, KEYS = 20000, HAMMER_CAP = 5000 };

struct worker {
	struct sesscache *c;
	unsigned seed;
	uint64_t lookups, hits, bad;
};

static void *hammer(void *arg)
{
	struct worker *w = arg;
	uint8_t id[32], blob[SESSCACHE_BLOB_MAX], out[SESSCACHE_BLOB_MAX];
	uint32_t x = w->seed;
	for (int i = 0; i < OPS; i++) {
		x = x * 1664525u + 1013904223u;
		uint32_t k = (x >> 8) % KEYS;
		make_id(k, id);
		if ((x & 3) == 0) {
			size_t n = make_blob(k, blob);
			if (sesscache_store(w->c, id, 32, blob, n, i / 1000) != 0)
				w->bad++;
		} else if ((x & 0xff) == 1) {
			(void)sesscache_remove(w->c, id, 32);
		} else {
			w->lookups++;
			int n = sesscache_lookup(w->c, id, 32, i / 1000, out, sizeof out);
			if (n >= 0) {
				w->hits++;
				size_t want = make_blob(k, blob);
				if ((size_t)n != want || memcmp(out, blob, want) != 0)
					w->bad++;
			}
		}
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	struct sesscache *c = cache_new(HAMMER_CAP, 3600);
	pthread_t th[THREADS];
	struct worker w[THREADS];
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){.c = c, .seed = 12345u + (unsigned)i * 7919u};
		assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
	}
	uint64_t lookups = 0, hits = 0;
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(w[i].bad, 0);
		lookups += w[i].lookups;
		hits += w[i].hits;
	}
	struct sesscache_stats st;
	sesscache_stats(c, &st);
	assert_int_equal(st.hits, hits);
	assert_int_equal(st.hits + st.misses, lookups);
	assert_true(st.entries <= HAMMER_CAP);
	printf("threads=%d ops=%d: hits=%llu misses=%llu stores=%llu evictions=%llu "
	       "removed=%llu entries=%llu\n",
	       THREADS, THREADS * OPS, (unsigned long long)st.hits, (unsigned long long)st.misses,
	       (unsigned long long)st.stores, (unsigned long long)st.evictions,
	       (unsigned long long)st.removed, (unsigned long long)st.entries);
	sesscache_free(c);
}

static void test_entry_bytes(void **state)
{
	(void)state;
	struct sesscache *c = cache_new(20000, 3600);
	size_t per = sesscache_entry_bytes(c);
	printf("memory per entry: %zu bytes (20000 entries: %zu KiB)\n", per, per * 20000 / 1024);
	assert_true(per >= SESSCACHE_BLOB_MAX + SESSCACHE_ID_MAX);
	assert_true(per <= SESSCACHE_BLOB_MAX + SESSCACHE_ID_MAX + 64);
	sesscache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_store_lookup), cmocka_unit_test(test_bad_input),
	    cmocka_unit_test(test_expiry),	 cmocka_unit_test(test_bound_and_clock),
	    cmocka_unit_test(test_threads),	 cmocka_unit_test(test_entry_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
