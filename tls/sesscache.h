/*
 * sesscache.h - the server-side TLS session-ID cache (RFC 5246 7.3, F.1.4)
 * that every shard of the process shares.
 *
 * TLS 1.2 clients that take no ticket resume by session ID; SO_REUSEPORT
 * spreads a client's connections over the shards, so a per-shard cache
 * would hit 1 time in N. This one is a bounded hash table split into
 * stripes, each behind its own mutex: two shards contend only when their
 * IDs hash to the same stripe.
 *
 * Entries are opaque byte strings (wolfSSL_i2d_SSL_SESSION blobs) keyed by
 * the session ID, in fixed-size slots allocated once: a blob longer than
 * SESSCACHE_BLOB_MAX is refused, never truncated. A full stripe evicts by
 * CLOCK (a looked-up entry gets a second chance); an entry older than the
 * timeout is never returned. Freed slots are zeroed (they hold master
 * secrets). Time is a caller-supplied count of seconds (monotonic), so tests
 * drive it.
 *
 * No wolfSSL, no I/O: thread-safe, never allocates after sesscache_new.
 */
#ifndef MXRING_SESSCACHE_H
#define MXRING_SESSCACHE_H

#include <stddef.h>
#include <stdint.h>

#define SESSCACHE_ID_MAX      32u     /* RFC 5246 7.4.1.2: session_id<0..32> */
#define SESSCACHE_BLOB_MAX    192u    /* a TLS 1.2 server session is 115 bytes here */
#define SESSCACHE_STRIPES     64u     /* a power of two, >= 4 x the shards of a typical box */
#define SESSCACHE_ENTRIES_MAX 1000000 /* what tls_session_cache_size may be set to */

struct sesscache;

struct sesscache_stats {
	uint64_t hits;	    /* lookups that returned an entry */
	uint64_t misses;    /* lookups that found none (expired ones included) */
	uint64_t stores;    /* entries stored (new or replaced) */
	uint64_t evictions; /* live entries pushed out by a store into a full stripe */
	uint64_t expired;   /* entries dropped because their time was up */
	uint64_t refused;   /* stores refused: blob too big or bad id */
	uint64_t removed;   /* entries removed on request */
	uint64_t entries;   /* entries held now */
	uint64_t capacity;  /* entries it can hold */
};

/*
 * A cache of capacity entries (1..SESSCACHE_ENTRIES_MAX) whose entries live
 * timeout_s seconds. 0, -EINVAL or -ENOMEM.
 */
int sesscache_new(size_t capacity, uint32_t timeout_s, struct sesscache **out)
    __attribute__((warn_unused_result));

/* Zeroes and frees it; no call may be in progress. NULL is fine. */
void sesscache_free(struct sesscache *c);

/*
 * Stores blob under id at time now_s (replacing an entry with the same id).
 * 0, -EINVAL (id length 0 or over SESSCACHE_ID_MAX) or -E2BIG (blob longer
 * than SESSCACHE_BLOB_MAX, or empty).
 */
int sesscache_store(struct sesscache *c, const uint8_t *id, size_t id_len, const uint8_t *blob,
		    size_t blob_len, uint64_t now_s);

/*
 * Copies the blob stored under id into out (cap bytes, at least
 * SESSCACHE_BLOB_MAX) and returns its length, or -ENOENT (none, or expired
 * at now_s: then it is dropped).
 */
int sesscache_lookup(struct sesscache *c, const uint8_t *id, size_t id_len, uint64_t now_s,
		     uint8_t *out, size_t cap) __attribute__((warn_unused_result));

/* Drops the entry stored under id. 0 or -ENOENT. */
int sesscache_remove(struct sesscache *c, const uint8_t *id, size_t id_len);

/* Counters summed over the stripes (each read under its stripe's lock). */
void sesscache_stats(struct sesscache *c, struct sesscache_stats *out);

/* Bytes of memory per entry of capacity: slot plus index. */
size_t sesscache_entry_bytes(const struct sesscache *c);

#endif
