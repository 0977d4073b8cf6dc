/*
 * dnsbl.h - DNS list scoring before the greeting: one resolver thread
 * (c-ares, poll) that the shards feed through rings, and a result cache
 * shared by all shards.
 *
 * Threads and rings: for each shard s, req[s] carries struct dnsbl_req
 * pointers shard -> resolver and done[s] carries them back (ring.h, one
 * producer and one consumer each). The resolver sleeps in poll() on its
 * eventfd and the c-ares sockets; before it sleeps it stores sleeping = 1,
 * issues a seq_cst fence and looks at every req ring once more. A shard
 * pushes, issues a seq_cst fence and writes the eventfd when it exchanges
 * sleeping from 1 to 0 (the protocol of writer.c): either the resolver sees
 * the request or the shard sees the flag, so no wake-up is lost. (ring_push
 * returning 1, "was empty", is not enough on its own: the shard's load of
 * head and the resolver's last load of tail can both be stale.) The
 * resolver writes a shard's wake eventfd (the one the writers use) once
 * per batch of results pushed to done[s]. A shard has at most
 * DNSBL_INFLIGHT_MAX requests out (it counts them; dnsbl_request answers
 * -EAGAIN past it), so neither push can find its ring full.
 *
 * A request: the resolver sends one query per site at once (ares_query,
 * class IN, type A), and gives the request back when every site has
 * answered or dnsbl_timeout has passed since the request was popped,
 * whichever is first. A site that did not answer by then counts as not
 * listing (its bit in timeouts); so does one whose every server answered
 * SERVFAIL, REFUSED or garbage (its bit in failed; c-ares tries the other
 * servers first). The resolver keeps its own record (a job) of a request
 * until the last c-ares callback of it: a late answer does not touch the
 * shard's struct and is not cached. Jobs are bounded (see dnsbl.c); a
 * request popped while every job is in use is given back at once with
 * every site in timeouts (stats: overflows).
 *
 * Cache: when every site of a request answered (NOERROR or NXDOMAIN), the
 * verdict is stored under the address for the lowest TTL of the answers,
 * clamped to [dnsbl_min_ttl, dnsbl_max_ttl] (an answer without a TTL:
 * dnsbl_min_ttl; a TTL of 0 after clamping: not stored). Set-associative,
 * 8 ways a bucket, buckets a power of two: dnsbl_cache_size rounded up to
 * the next power of two (up to twice as many entries; 0 = no cache).
 * Replacement by CLOCK within the bucket (readers set a referenced word).
 * Only the resolver thread writes it; every field is an atomic 32-bit
 * word and each entry has a sequence counter (odd while written), so
 * shards read it without a lock and retry or miss on a torn read.
 */
#ifndef MXRING_DNSBL_H
#define MXRING_DNSBL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "dnsbl_sites.h"

#define DNSBL_INFLIGHT_MAX 4096 /* requests a shard may have out; a power of two */

/* The verdict for one client address. Bit i of a mask is site i of cfg->dnsbl_sites. */
struct dnsbl_verdict {
	int32_t score;	   /* sum of the weights of the sites that matched */
	uint32_t matched;  /* sites whose answer matched their filter */
	uint32_t timeouts; /* sites that did not answer within dnsbl_timeout */
	uint32_t failed;   /* sites that answered SERVFAIL, REFUSED or garbage */
};

/* A shard's request; the shard allocates it and frees it after dnsbl_reap. */
struct dnsbl_req {
	uint8_t addr[16];	/* the client, as in dnsbl_sites.h */
	uint64_t cookie;	/* the shard's, given back untouched (slot, generation) */
	uint64_t start_us;	/* set by dnsbl_request: when it was asked (CLOCK_MONOTONIC) */
	uint64_t done_us;	/* set by the resolver: when it was given back (same clock) */
	struct dnsbl_verdict v; /* set by the resolver */
};

/* Counters, relaxed atomics, read by anyone. */
struct dnsbl_stats {
	uint64_t requests;  /* requests taken from the shards */
	uint64_t queries;   /* DNS queries sent (one per site of a request) */
	uint64_t answers;   /* queries answered NOERROR or NXDOMAIN */
	uint64_t timeouts;  /* queries not answered within dnsbl_timeout */
	uint64_t failures;  /* SERVFAIL, REFUSED, malformed, c-ares errors */
	uint64_t cached;    /* verdicts stored in the cache */
	uint64_t evicted;   /* live cache entries replaced before their TTL */
	uint64_t overflows; /* requests given back unasked: every job was in use */
};

struct dnsbl;

/*
 * Sets up the resolver (c-ares channel with dns_servers, or the servers of
 * /etc/resolv.conf when dns_servers is empty; UDP only: a truncated answer
 * is taken as it is), the cache and the rings for nshards shards. Does not
 * start the thread (so it can run before privileges are dropped and the
 * sandbox closes: /etc/resolv.conf is read here; the thread later opens
 * only UDP sockets). The sites are copied, so cfg may go; a reload with
 * other sites needs a new struct dnsbl (masks and cached verdicts name
 * sites by index). Returns 0 with *out set, or -1 after a line
 * "mxring: ..." to err. cfg->ndnsbl_sites must be > 0.
 */
int dnsbl_create(const struct config *cfg, unsigned nshards, struct dnsbl **out, FILE *err)
    __attribute__((warn_unused_result));

/* The eventfd to write when results for shard are ready (before dnsbl_start;
 * the shards' wake eventfds exist only once the writers have started).
 * Borrowed: it stays open until dnsbl_free. Every shard needs one. */
void dnsbl_set_wake_fd(struct dnsbl *d, unsigned shard, int fd);

/* Starts the resolver thread. 0 or -errno. */
int dnsbl_start(struct dnsbl *d);

/* Stops and joins the thread (the shards must have stopped). NULL or a
 * second call is a no-op. */
void dnsbl_stop(struct dnsbl *d);

/* After dnsbl_stop: one request the shards made and never reaped (held by
 * a query, queued, or given back), for its owner to free; NULL when none
 * is left. */
struct dnsbl_req *dnsbl_take_back(struct dnsbl *d);

/* Stops the thread if it runs, frees everything. NULL is a no-op. Requests
 * not taken back are dropped (they stay the shards' memory to free). */
void dnsbl_free(struct dnsbl *d);

/*
 * Shard side, any shard thread, no lock: the cached verdict of addr, if
 * one is there and not expired at now_s (seconds of CLOCK_MONOTONIC, as
 * mono_coarse_ms() / 1000). A cached verdict has timeouts = failed = 0.
 */
bool dnsbl_cache_get(struct dnsbl *d, const uint8_t addr[16], uint64_t now_s,
		     struct dnsbl_verdict *out);

/*
 * Shard side: queues r (owned by the resolver until dnsbl_reap gives it
 * back). 0, or -EAGAIN when the shard has DNSBL_INFLIGHT_MAX out (r stays
 * the caller's). Sets r->start_us; wakes the resolver if it sleeps (an
 * eventfd write, only then). Callable before dnsbl_start.
 */
int dnsbl_request(struct dnsbl *d, unsigned shard, struct dnsbl_req *r)
    __attribute__((warn_unused_result));

/* Shard side: the next request given back to shard (its v and done_us
 * set), or NULL. */
struct dnsbl_req *dnsbl_reap(struct dnsbl *d, unsigned shard);

/* Any thread: the counters (each read on its own, not a snapshot). */
void dnsbl_stats_get(struct dnsbl *d, struct dnsbl_stats *out);

/* Entries the cache holds (its capacity, not its use). */
unsigned dnsbl_cache_capacity(const struct dnsbl *d);

#endif
