/*
 * dnsbl.c - the DNS list resolver thread and the verdict cache (dnsbl.h).
 *
 * Jobs. The resolver keeps one job per request it took: the request (until
 * it is given back), the deadline, and per site whether it answered,
 * failed, matched. A job stays until the last c-ares callback of its
 * queries, which c-ares makes exactly once per query (at the latest with
 * ARES_EDESTRUCTION in ares_destroy), so a late answer finds its job and
 * never the shard's request. States: HELD (request not given back yet, on
 * the deadline list), ORPHAN (given back at its deadline, callbacks still
 * to come), free. The callback's argument is the job's address with the
 * site index in its low bits (jobs are 64-byte aligned, sites < 32).
 *
 * Bounds. Jobs: min(nshards * DNSBL_INFLIGHT_MAX, DNSBL_QUERIES_MAX / nsites),
 * so c-ares never has more than DNSBL_QUERIES_MAX queries out: its query
 * ids are 16 bits, drawn at random until one is free (1.18,
 * generate_unique_id), and with every id in use that loop would not end.
 * A request popped while every job is in use is given back at once, every
 * site in timeouts (stats: overflows). A pass takes DNSBL_TAKE_MAX
 * requests at most, then reads the answers. The poll set is the eventfd and at
 * most one UDP socket per server (no TCP: ARES_FLAG_IGNTC, and a query
 * name is far below 512 bytes), at most DNS_SERVERS_MAX of them.
 *
 * Timeouts. c-ares tries each of N servers `tries` times, the timeout
 * doubling after each round: a query lives N * T * (2^tries - 1) at most.
 * One server: tries = 2, T = dnsbl_timeout / 3 (a retry at a third);
 * several: tries = 1, T = dnsbl_timeout / N (the next server each T). So
 * c-ares ends a query no later than the request's deadline, and a job
 * rarely outlives its request by more than a poll. A late answer to the
 * first send still counts (c-ares matches it by id and question).
 *
 * Sleep and wake-up: see dnsbl.h; dnsbl_wait stores sleeping, fences, and
 * looks at the rings again; dnsbl_request pushes, fences, and exchanges
 * sleeping. The eventfd is non-blocking and read after each wake-up, so a
 * stale count costs one empty pass.
 *
 * Cache. A bucket is 8 entries (one 64-byte line of reference words and
 * the CLOCK hand, then 4 lines of entries); an entry is a sequence word,
 * the 16-byte key, the expiry (seconds of CLOCK_MONOTONIC, 0 = empty), the
 * score and the matched mask. The resolver (the only writer) makes seq odd,
 * issues a release fence, stores the words, and stores seq even with
 * release. A reader loads seq with acquire, loads the words (relaxed),
 * issues an acquire fence and loads seq again: if a word it read came
 * from a later write, that write's release fence synchronizes with the
 * reader's acquire fence, so the second load sees the odd seq (or later)
 * and differs. Equal even values mean the words belong to one write
 * (Boehm, "Can seqlocks get along with programming language memory
 * models?", 2012). The 32-bit seq could only fool a reader stalled for
 * 2^31 writes of one entry. A reader that finds an entry torn
 * DNSBL_SEQ_TRIES times skips it: a miss at worst. The bucket comes from a
 * hash of the address keyed at start-up, so clients cannot pick buckets.
 */
#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "dnsbl.h"
#include "dnsbl_int.h"
#include "ring.h"

#define DNSBL_WAYS	  8	/* entries of a bucket */
#define DNSBL_SEQ_TRIES	  4	/* reads of an entry being written before it is skipped */
#define DNSBL_QUERIES_MAX 32768 /* c-ares queries out at once: half its 16-bit id space */
/* Requests taken a pass: then the answers are read, before the socket's
 * buffer overflows with the answers to a burst. */
#define DNSBL_TAKE_MAX 256
#define DNSBL_RCVBUF   (1 << 20) /* bytes, asked of each c-ares socket (rmem_max caps it) */
#define DNSBL_POLL_MAX (1 + DNS_SERVERS_MAX) /* the eventfd and one UDP socket per server */
#define JOB_NONE       UINT32_MAX
#define JOB_ALIGN      64

static_assert(DNSBL_SITES_MAX <= 32, "a site mask is 32 bits");
static_assert(DNSBL_SITES_MAX <= JOB_ALIGN, "a site index fits the low bits of a job's address");
static_assert((DNSBL_INFLIGHT_MAX & (DNSBL_INFLIGHT_MAX - 1)) == 0, "ring capacity");
static_assert(DNS_SERVERS_MAX <= ARES_GETSOCK_MAXNUM, "ares_getsock reports every socket");
static_assert(ARES_GETSOCK_MAXNUM == 16, "ares_getsock's bit map: 16 readable, 16 writable");
static_assert((uint64_t)SHARDS_MAX * DNSBL_INFLIGHT_MAX < JOB_NONE, "job indices fit");
static_assert(DNSBL_CACHE_MAX <= (1u << 30), "the bucket count is a 32-bit power of two");

enum job_state { JOB_FREE = 0, JOB_HELD, JOB_ORPHAN };

struct dnsbl_job {
	_Alignas(JOB_ALIGN) struct dnsbl *d; /* borrowed: the callback's way back */
	struct dnsbl_req *req;		     /* borrowed from the shard while HELD */
	uint64_t deadline_ms;		     /* mono_ms: given back then at the latest */
	uint32_t prev, next;		     /* deadline list while HELD; next: free list */
	uint32_t pending;		     /* c-ares callbacks still to come */
	uint32_t answered;		     /* sites that answered NOERROR or NXDOMAIN */
	uint32_t failed;		     /* sites that failed (SERVFAIL, garbage, ...) */
	uint32_t matched;		     /* sites whose answer matched their filter */
	uint32_t ttl_s;			     /* lowest TTL of the answers so far */
	uint16_t shard;
	uint8_t state; /* enum job_state */
};

struct dnsbl_entry {
	_Atomic uint32_t seq; /* odd while the resolver writes the entry */
	_Atomic uint32_t key[4];
	_Atomic uint32_t expires_s; /* 0: never written */
	_Atomic uint32_t score;	    /* int32_t's bits */
	_Atomic uint32_t matched;
};

struct dnsbl_bucket {
	_Alignas(RING_CACHE_LINE) _Atomic uint32_t ref[DNSBL_WAYS]; /* readers set, CLOCK clears */
	uint32_t hand; /* resolver only: the way CLOCK looks at next */
	_Alignas(RING_CACHE_LINE) struct dnsbl_entry way[DNSBL_WAYS];
};

/* Per shard: the two rings, and the shard's own count on its own line. */
struct dnsbl_shard {
	struct ring req;			     /* shard -> resolver */
	struct ring done;			     /* resolver -> shard */
	_Alignas(RING_CACHE_LINE) uint32_t inflight; /* shard only: requested minus reaped */
	int wake_fd; /* borrowed (dnsbl_set_wake_fd): the shard's wake eventfd */
};

struct dnsbl {
	struct dnsbl_site *sites; /* owned: a copy of cfg's */
	unsigned nsites;
	uint32_t all_sites; /* mask of every site */
	unsigned nshards;
	unsigned timeout_ms, min_ttl_s, max_ttl_s;
	struct dnsbl_shard *sh; /* owned: nshards */
	int efd;		/* owned: the resolver sleeps on it */

	/* The resolver thread's (and set-up's) alone. */
	ares_channel channel; /* owned when channel_open */
	bool library_init, channel_open, running;
	pthread_t thread;
	struct dnsbl_job *jobs; /* owned: njobs, taken from jobs_used up, then the free list */
	uint32_t njobs, jobs_used, free_head;
	uint32_t live_head, live_tail; /* HELD jobs, oldest (nearest deadline) first */
	unsigned *touched;	       /* owned: shards with results this pass */
	uint8_t *is_touched;	       /* owned: nshards flags for touched */
	unsigned ntouched;
	unsigned first;	   /* the req ring the next pass starts with */
	uint32_t take_job; /* dnsbl_take_back: the next job to look at */

	/* Cache: read by every shard, written by the resolver. */
	struct dnsbl_bucket *buckets; /* owned (mmap): nbuckets, or NULL: no cache */
	size_t cache_bytes;
	uint32_t bucket_mask;
	uint64_t seed[2]; /* the bucket hash's key */

	_Alignas(RING_CACHE_LINE) _Atomic int sleeping;
	_Atomic bool stop;
	_Alignas(RING_CACHE_LINE) _Atomic uint64_t requests, queries, answers, timeouts, failures,
	    cached, evicted, overflows;
};

static void efd_signal(int fd)
{
	uint64_t one = 1;
	/* EAGAIN means the count is already huge: the reader wakes anyway. */
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void stat_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ---- cache ---- */

static uint32_t cache_bucket(const struct dnsbl *d, const uint8_t addr[16])
{
	uint64_t a, b;
	memcpy(&a, addr, 8);
	memcpy(&b, addr + 8, 8);
	uint64_t h = (a ^ d->seed[0]) * 0x9e3779b97f4a7c15ull;
	h = (h ^ (h >> 32) ^ b ^ d->seed[1]) * 0xbf58476d1ce4e5b9ull;
	h = (h ^ (h >> 31)) * 0x94d049bb133111ebull;
	return (uint32_t)(h >> 32) & d->bucket_mask;
}

/* What a reader copies out of an entry. */
struct entry_copy {
	uint32_t key[4];
	uint32_t expires_s, score, matched;
};

static bool entry_read(struct dnsbl_entry *e, struct entry_copy *c)
{
	for (unsigned t = 0; t < DNSBL_SEQ_TRIES; t++) {
		uint32_t s0 = atomic_load_explicit(&e->seq, memory_order_acquire);
		if (s0 & 1)
			continue;
		for (unsigned k = 0; k < 4; k++)
			c->key[k] = atomic_load_explicit(&e->key[k], memory_order_relaxed);
		c->expires_s = atomic_load_explicit(&e->expires_s, memory_order_relaxed);
		c->score = atomic_load_explicit(&e->score, memory_order_relaxed);
		c->matched = atomic_load_explicit(&e->matched, memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->seq, memory_order_relaxed) == s0)
			return true;
	}
	return false;
}

/* The resolver only: the seqlock's writer side (see the file's header). */
static void entry_write(struct dnsbl_entry *e, const uint32_t key[4], uint32_t expires_s,
			uint32_t score, uint32_t matched)
{
	uint32_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);
	ASSERT((s & 1) == 0);
	atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (unsigned k = 0; k < 4; k++)
		atomic_store_explicit(&e->key[k], key[k], memory_order_relaxed);
	atomic_store_explicit(&e->expires_s, expires_s, memory_order_relaxed);
	atomic_store_explicit(&e->score, score, memory_order_relaxed);
	atomic_store_explicit(&e->matched, matched, memory_order_relaxed);
	atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

bool dnsbl_cache_get(struct dnsbl *d, const uint8_t addr[16], uint64_t now_s,
		     struct dnsbl_verdict *out)
{
	if (!d->buckets)
		return false;
	uint32_t key[4];
	memcpy(key, addr, sizeof(key));
	struct dnsbl_bucket *b = &d->buckets[cache_bucket(d, addr)];
	for (unsigned i = 0; i < DNSBL_WAYS; i++) {
		struct entry_copy c;
		if (!entry_read(&b->way[i], &c) || memcmp(c.key, key, sizeof(key)) != 0)
			continue;
		if (c.expires_s <= now_s)
			return false; /* a key is in one way at most */
		out->score = (int32_t)c.score;
		out->matched = c.matched;
		out->timeouts = 0;
		out->failed = 0;
		/* Written only when clear, so a hot entry's line is not dirtied by
		 * every hit of every shard. */
		if (atomic_load_explicit(&b->ref[i], memory_order_relaxed) == 0)
			atomic_store_explicit(&b->ref[i], 1, memory_order_relaxed);
		return true;
	}
	return false;
}

/* The way of b to write key into: the key's own, an empty or dead one, or
 * CLOCK's victim (*live set: a live entry goes). */
static unsigned cache_way(struct dnsbl_bucket *b, const uint32_t key[4], uint64_t now_s, bool *live)
{
	/* The writer's own reads of the entries cannot be torn. */
	unsigned dead = DNSBL_WAYS;
	for (unsigned i = 0; i < DNSBL_WAYS; i++) {
		struct dnsbl_entry *e = &b->way[i];
		bool same = true;
		for (unsigned k = 0; k < 4; k++)
			same &= atomic_load_explicit(&e->key[k], memory_order_relaxed) == key[k];
		uint32_t exp = atomic_load_explicit(&e->expires_s, memory_order_relaxed);
		if (same && exp != 0)
			return i;
		if (dead == DNSBL_WAYS && exp <= now_s)
			dead = i;
	}
	*live = dead == DNSBL_WAYS;
	if (!*live) {
		atomic_store_explicit(&b->ref[dead], 0, memory_order_relaxed);
		return dead;
	}
	/* Two turns of the hand at most: the first clears every bit it passes. */
	for (unsigned t = 0; t < 2 * DNSBL_WAYS; t++) {
		unsigned i = b->hand;
		b->hand = (i + 1) % DNSBL_WAYS;
		if (atomic_load_explicit(&b->ref[i], memory_order_relaxed) == 0)
			return i;
		atomic_store_explicit(&b->ref[i], 0, memory_order_relaxed);
	}
	ASSERT(!"CLOCK found no victim in two turns");
	return 0;
}

void dnsbl_cache_put(struct dnsbl *d, const uint8_t addr[16], const struct dnsbl_verdict *v,
		     uint64_t expires_s, uint64_t now_s)
{
	if (!d->buckets || expires_s <= now_s)
		return;
	ASSERT(expires_s <= UINT32_MAX);
	uint32_t key[4];
	memcpy(key, addr, sizeof(key));
	struct dnsbl_bucket *b = &d->buckets[cache_bucket(d, addr)];
	bool live = false;
	unsigned i = cache_way(b, key, now_s, &live);
	entry_write(&b->way[i], key, (uint32_t)expires_s, (uint32_t)v->score, v->matched);
	stat_add(&d->cached, 1);
	if (live)
		stat_add(&d->evicted, 1);
}

static int cache_init(struct dnsbl *d, unsigned size)
{
	if (size == 0)
		return 0;
	uint32_t n = 1;
	while ((uint64_t)n * DNSBL_WAYS < size)
		n <<= 1;
	/* mmap: zero pages, touched only as buckets are used. */
	d->cache_bytes = (size_t)n * sizeof(struct dnsbl_bucket);
	void *p =
	    mmap(NULL, d->cache_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	d->buckets = p;
	d->bucket_mask = n - 1;
	if (getrandom(d->seed, sizeof(d->seed), 0) != (ssize_t)sizeof(d->seed)) {
		/* Only the spread over buckets depends on it. */
		d->seed[0] = mono_us() ^ (uint64_t)(uintptr_t)d;
		d->seed[1] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
	}
	return 0;
}

unsigned dnsbl_cache_capacity(const struct dnsbl *d)
{
	return d->buckets ? (d->bucket_mask + 1) * DNSBL_WAYS : 0;
}

/* ---- jobs ---- */

static struct dnsbl_job *job_at(struct dnsbl *d, uint32_t i)
{
	ASSERT(i < d->jobs_used);
	return &d->jobs[i];
}

static uint32_t job_index(const struct dnsbl *d, const struct dnsbl_job *j)
{
	return (uint32_t)(j - d->jobs);
}

static struct dnsbl_job *job_get(struct dnsbl *d)
{
	struct dnsbl_job *j;
	if (d->free_head != JOB_NONE) {
		j = job_at(d, d->free_head);
		d->free_head = j->next;
	} else if (d->jobs_used < d->njobs) {
		j = &d->jobs[d->jobs_used++];
	} else {
		return NULL;
	}
	memset(j, 0, sizeof(*j));
	j->d = d;
	j->prev = j->next = JOB_NONE;
	return j;
}

static void job_put(struct dnsbl *d, struct dnsbl_job *j)
{
	ASSERT(j->pending == 0 && j->state != JOB_FREE);
	j->state = JOB_FREE;
	j->req = NULL;
	j->next = d->free_head;
	d->free_head = job_index(d, j);
}

/* Appends j to the deadline list: jobs are taken in time order and all
 * wait the same dnsbl_timeout, so the list stays sorted by deadline. */
static void live_append(struct dnsbl *d, struct dnsbl_job *j)
{
	uint32_t i = job_index(d, j);
	j->prev = d->live_tail;
	j->next = JOB_NONE;
	if (d->live_tail != JOB_NONE)
		job_at(d, d->live_tail)->next = i;
	else
		d->live_head = i;
	d->live_tail = i;
}

static void live_remove(struct dnsbl *d, struct dnsbl_job *j)
{
	if (j->prev != JOB_NONE)
		job_at(d, j->prev)->next = j->next;
	else
		d->live_head = j->next;
	if (j->next != JOB_NONE)
		job_at(d, j->next)->prev = j->prev;
	else
		d->live_tail = j->prev;
	j->prev = j->next = JOB_NONE;
}

/* ---- giving requests back ---- */

static void give_back(struct dnsbl *d, unsigned s, struct dnsbl_req *r,
		      const struct dnsbl_verdict *v)
{
	r->v = *v;
	r->done_us = mono_us();
	/* The shard has at most DNSBL_INFLIGHT_MAX out, the ring's capacity. */
	ASSERT(ring_push(&d->sh[s].done, r) >= 0);
	if (!d->is_touched[s]) {
		d->is_touched[s] = 1;
		d->touched[d->ntouched++] = s;
	}
}

/* Writes each touched shard's eventfd once for this pass's results. */
static void flush_wakes(struct dnsbl *d)
{
	for (unsigned i = 0; i < d->ntouched; i++) {
		unsigned s = d->touched[i];
		d->is_touched[s] = 0;
		efd_signal(d->sh[s].wake_fd);
	}
	d->ntouched = 0;
}

static struct dnsbl_verdict job_verdict(const struct dnsbl *d, const struct dnsbl_job *j)
{
	struct dnsbl_verdict v = {
	    .matched = j->matched,
	    .failed = j->failed,
	    .timeouts = d->all_sites & ~(j->answered | j->failed),
	};
	for (unsigned i = 0; i < d->nsites; i++)
		if (j->matched & (1u << i))
			v.score += d->sites[i].weight;
	return v;
}

/* Gives a HELD job's request back with what its sites said so far. */
static void job_give_back(struct dnsbl *d, struct dnsbl_job *j)
{
	ASSERT(j->state == JOB_HELD && j->req);
	struct dnsbl_verdict v = job_verdict(d, j);
	stat_add(&d->answers, (unsigned)__builtin_popcount(j->answered));
	stat_add(&d->failures, (unsigned)__builtin_popcount(j->failed));
	stat_add(&d->timeouts, (unsigned)__builtin_popcount(v.timeouts));
	if (j->answered == d->all_sites) {
		uint32_t ttl = j->ttl_s;
		if (ttl < d->min_ttl_s)
			ttl = d->min_ttl_s;
		if (ttl > d->max_ttl_s)
			ttl = d->max_ttl_s;
		uint64_t now_s = mono_ms() / 1000;
		dnsbl_cache_put(d, j->req->addr, &v, now_s + ttl, now_s);
	}
	live_remove(d, j);
	give_back(d, j->shard, j->req, &v);
	j->req = NULL;
	j->state = JOB_ORPHAN;
}

/* One callback (or the sender's own reference) of j has come. */
static void job_release(struct dnsbl *d, struct dnsbl_job *j)
{
	ASSERT(j->pending > 0);
	if (--j->pending > 0)
		return;
	if (j->state == JOB_HELD)
		job_give_back(d, j);
	job_put(d, j);
}

/* ---- c-ares ---- */

/* What one site's answer says, into j (HELD). */
static void job_record(struct dnsbl *d, struct dnsbl_job *j, unsigned site, int status,
		       const unsigned char *abuf, int alen)
{
	uint32_t bit = 1u << site;
	if (!abuf || alen <= 0) {
		/* c-ares passes no message when it gave up. Its status is that
		 * of the last error it noted: ARES_ETIMEOUT when a try timed
		 * out (left unanswered: a timeout), else an error. (In 1.18
		 * SERVFAIL, REFUSED and NOTIMP on every try end as
		 * ARES_ECONNREFUSED: those answers note no status of their own.) */
		if (status != ARES_ETIMEOUT)
			j->failed |= bit;
		return;
	}
	struct dnsbl_answer a;
	if (dnsbl_parse_answer(abuf, (size_t)alen, &a) != 0 ||
	    (a.rcode != ns_r_noerror && a.rcode != ns_r_nxdomain)) {
		j->failed |= bit;
		return;
	}
	j->answered |= bit;
	for (unsigned k = 0; k < a.na && k < DNSBL_ANSWERS_MAX; k++)
		if (dnsbl_site_matches(&d->sites[site], a.a[k]))
			j->matched |= bit;
	uint32_t ttl = a.has_ttl ? a.ttl : d->min_ttl_s;
	if (ttl < j->ttl_s)
		j->ttl_s = ttl;
}

/* c-ares's callback: also with NXDOMAIN, SERVFAIL and the like when a
 * message came (ares_query's qcallback passes abuf on), without one when
 * c-ares gave up. Runs inside ares_process_fd, ares_query or ares_destroy. */
static void dnsbl_answered(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	(void)timeouts;
	uintptr_t tag = (uintptr_t)arg;
	struct dnsbl_job *j = (struct dnsbl_job *)(tag & ~(uintptr_t)(JOB_ALIGN - 1));
	unsigned site = (unsigned)(tag & (JOB_ALIGN - 1));
	/* dnsbl_free: the jobs go with the channel. */
	if (status == ARES_EDESTRUCTION)
		return;
	struct dnsbl *d = j->d;
	ASSERT(site < d->nsites && j->state != JOB_FREE);
	if (j->state == JOB_HELD)
		job_record(d, j, site, status, abuf, alen);
	job_release(d, j);
}

/* Takes one request popped from shard s: from the cache, or one query per site. */
static void dnsbl_take(struct dnsbl *d, unsigned s, struct dnsbl_req *r)
{
	stat_add(&d->requests, 1);
	uint64_t now_ms = mono_ms();
	struct dnsbl_verdict v;
	/* A client seen again while its first lookup was out. */
	if (dnsbl_cache_get(d, r->addr, now_ms / 1000, &v)) {
		give_back(d, s, r, &v);
		return;
	}
	struct dnsbl_job *j = job_get(d);
	if (!j) {
		v = (struct dnsbl_verdict){.timeouts = d->all_sites};
		stat_add(&d->overflows, 1);
		give_back(d, s, r, &v);
		return;
	}
	j->req = r;
	j->shard = (uint16_t)s;
	j->state = JOB_HELD;
	j->deadline_ms = now_ms + d->timeout_ms;
	j->ttl_s = UINT32_MAX;
	live_append(d, j);
	/* One reference per site and one for this loop: a callback may run
	 * inside ares_query (an error found before sending), and the job must
	 * not end before every query is out. */
	j->pending = d->nsites + 1;
	for (unsigned i = 0; i < d->nsites; i++) {
		char name[DNSBL_QNAME_MAX];
		if (dnsbl_query_name(&d->sites[i], r->addr, name, sizeof(name)) == 0) {
			j->failed |= 1u << i;
			j->pending--;
			continue;
		}
		stat_add(&d->queries, 1);
		ares_query(d->channel, name, ns_c_in, ns_t_a, dnsbl_answered,
			   (void *)((uintptr_t)j | i));
	}
	job_release(d, j);
}

/* Pops DNSBL_TAKE_MAX requests at most, starting with a different shard
 * each pass. */
static void dnsbl_collect(struct dnsbl *d)
{
	unsigned n = 0;
	for (unsigned k = 0; k < d->nshards && n < DNSBL_TAKE_MAX; k++) {
		unsigned s = (d->first + k) % d->nshards;
		struct dnsbl_req *r;
		while (n < DNSBL_TAKE_MAX && (r = ring_pop(&d->sh[s].req)) != NULL) {
			dnsbl_take(d, s, r);
			n++;
		}
	}
	d->first = (d->first + 1) % d->nshards;
}

/* Gives back the requests whose deadline has come, oldest first. */
static void dnsbl_expire(struct dnsbl *d, uint64_t now_ms)
{
	/* Bounded by the jobs: each pass takes one off the list. */
	for (uint32_t n = 0; n < d->njobs && d->live_head != JOB_NONE; n++) {
		struct dnsbl_job *j = job_at(d, d->live_head);
		if (j->deadline_ms > now_ms)
			break;
		job_give_back(d, j);
	}
}

static bool dnsbl_has_work(struct dnsbl *d)
{
	for (unsigned s = 0; s < d->nshards; s++)
		if (ring_count(&d->sh[s].req) > 0)
			return true;
	return false;
}

/* How long poll may sleep: until the nearest deadline or c-ares timeout. */
static int dnsbl_poll_ms(struct dnsbl *d)
{
	int64_t ms = -1;
	if (d->live_head != JOB_NONE) {
		uint64_t now = mono_ms(), dl = job_at(d, d->live_head)->deadline_ms;
		ms = dl > now ? (int64_t)(dl - now) : 0;
	}
	struct timeval tv, *t = ares_timeout(d->channel, NULL, &tv);
	if (t) {
		/* c-ares rounds its offset down to the millisecond: at least 1,
		 * so that the last fraction of one is slept rather than spun. */
		int64_t a = (int64_t)t->tv_sec * 1000 + (t->tv_usec + 999) / 1000;
		if (a < 1)
			a = 1;
		if (ms < 0 || a < ms)
			ms = a;
	}
	return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Sleeps until a request, an answer or a timeout, then hands c-ares what came. */
static void dnsbl_wait(struct dnsbl *d)
{
	struct pollfd p[DNSBL_POLL_MAX];
	ares_socket_t socks[ARES_GETSOCK_MAXNUM];
	/* Bit i: socks[i] readable, bit 16 + i: writable. Not c-ares's macros:
	 * ARES_GETSOCK_WRITABLE shifts a signed 1 into the sign bit for i = 15. */
	uint32_t bits = (uint32_t)ares_getsock(d->channel, socks, ARES_GETSOCK_MAXNUM);
	nfds_t n = 0;
	p[n++] = (struct pollfd){.fd = d->efd, .events = POLLIN};
	for (unsigned i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
		short ev = (short)((bits & (1u << i) ? POLLIN : 0) |
				   (bits & (1u << (i + ARES_GETSOCK_MAXNUM)) ? POLLOUT : 0));
		if (!ev)
			continue;
		ASSERT(n < DNSBL_POLL_MAX);
		p[n++] = (struct pollfd){.fd = socks[i], .events = ev};
	}
	int ms = dnsbl_poll_ms(d);
	if (ms != 0) {
		atomic_store_explicit(&d->sleeping, 1, memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		if (dnsbl_has_work(d) || atomic_load_explicit(&d->stop, memory_order_seq_cst))
			ms = 0;
	}
	int r = poll(p, n, ms);
	atomic_store_explicit(&d->sleeping, 0, memory_order_relaxed);
	uint64_t v;
	if (r > 0 && p[0].revents)
		while (read(d->efd, &v, sizeof(v)) < 0 && errno == EINTR)
			;
	bool any = false;
	for (nfds_t i = 1; r > 0 && i < n; i++) {
		short ev = p[i].revents;
		if (!ev)
			continue;
		any = true;
		ares_socket_t rfd = ev & (POLLIN | POLLERR | POLLHUP) ? p[i].fd : ARES_SOCKET_BAD;
		ares_socket_t wfd = ev & POLLOUT ? p[i].fd : ARES_SOCKET_BAD;
		ares_process_fd(d->channel, rfd, wfd);
	}
	/* No socket ready: c-ares still has its timeouts to look at. */
	if (!any)
		ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

static void *dnsbl_main(void *arg)
{
	struct dnsbl *d = arg;
	pthread_setname_np(pthread_self(), "mxring-dns");
	while (!atomic_load_explicit(&d->stop, memory_order_acquire)) {
		dnsbl_collect(d);
		dnsbl_expire(d, mono_ms());
		flush_wakes(d);
		dnsbl_wait(d);
		/* Answers that came in the wait go out before new queries do. */
		flush_wakes(d);
	}
	return NULL;
}

/* ---- set-up and tear-down ---- */

/* The name servers of cfg, or those c-ares reads from /etc/resolv.conf
 * (the first DNS_SERVERS_MAX), into node[]. Their count, or 0 after a line to err. */
static unsigned servers_get(const struct config *cfg, struct ares_addr_port_node *node, FILE *err)
{
	unsigned n = 0;
	memset(node, 0, DNS_SERVERS_MAX * sizeof(*node));
	for (unsigned i = 0; i < cfg->ndns_servers && i < DNS_SERVERS_MAX; i++) {
		const struct listen_addr *a = &cfg->dns_servers[i];
		struct ares_addr_port_node *x = &node[n];
		if (inet_pton(AF_INET, a->host, &x->addr.addr4) == 1) {
			x->family = AF_INET;
		} else if (inet_pton(AF_INET6, a->host, &x->addr.addr6) == 1) {
			x->family = AF_INET6;
		} else {
			fprintf(err, "mxring: dnsbl: dns_servers: '%.64s' is not an address\n",
				a->host);
			return 0;
		}
		x->udp_port = x->tcp_port = a->port ? a->port : NAMESERVER_PORT;
		n++;
	}
	if (cfg->ndns_servers > 0)
		return n;

	/* A channel of its own reads resolv.conf: the real one's timeouts
	 * depend on how many servers there are. */
	struct ares_options o = {.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_IGNTC};
	ares_channel probe;
	int r = ares_init_options(&probe, &o, ARES_OPT_FLAGS);
	if (r != ARES_SUCCESS) {
		fprintf(err, "mxring: dnsbl: reading /etc/resolv.conf: %s\n", ares_strerror(r));
		return 0;
	}
	struct ares_addr_port_node *list = NULL;
	r = ares_get_servers_ports(probe, &list);
	for (struct ares_addr_port_node *s = list; r == ARES_SUCCESS && s && n < DNS_SERVERS_MAX;
	     s = s->next) {
		node[n] = *s;
		if (node[n].udp_port == 0)
			node[n].udp_port = node[n].tcp_port = NAMESERVER_PORT;
		n++;
	}
	ares_free_data(list);
	ares_destroy(probe);
	if (n == 0)
		fprintf(err, "mxring: dnsbl: no name server (/etc/resolv.conf: %s)\n",
			ares_strerror(r));
	return n;
}

static int channel_open(struct dnsbl *d, const struct config *cfg, FILE *err)
{
	int r = ares_library_init(ARES_LIB_INIT_ALL);
	if (r != ARES_SUCCESS) {
		fprintf(err, "mxring: dnsbl: ares_library_init: %s\n", ares_strerror(r));
		return -1;
	}
	d->library_init = true;
	struct ares_addr_port_node node[DNS_SERVERS_MAX];
	unsigned n = servers_get(cfg, node, err);
	if (n == 0)
		return -1;
	for (unsigned i = 0; i + 1 < n; i++)
		node[i].next = &node[i + 1];
	node[n - 1].next = NULL;

	/* See "Timeouts" above: every query gets a second send within
	 * dnsbl_timeout, and c-ares gives up by then. */
	struct ares_options o = {
	    .flags = ARES_FLAG_NOSEARCH | ARES_FLAG_IGNTC | ARES_FLAG_NOALIASES,
	    .tries = n == 1 ? 2 : 1,
	    .socket_receive_buffer_size = DNSBL_RCVBUF,
	};
	unsigned per = n == 1 ? 3 : n;
	o.timeout = (int)(d->timeout_ms / per > 0 ? d->timeout_ms / per : 1);
	r = ares_init_options(&d->channel, &o,
			      ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
				  ARES_OPT_SOCK_RCVBUF);
	if (r != ARES_SUCCESS) {
		fprintf(err, "mxring: dnsbl: ares_init_options: %s\n", ares_strerror(r));
		return -1;
	}
	d->channel_open = true;
	r = ares_set_servers_ports(d->channel, node);
	if (r != ARES_SUCCESS) {
		fprintf(err, "mxring: dnsbl: ares_set_servers_ports: %s\n", ares_strerror(r));
		return -1;
	}
	return 0;
}

static int dnsbl_alloc(struct dnsbl *d, const struct config *cfg)
{
	d->sites = calloc(d->nsites, sizeof(*d->sites));
	d->sh = cache_aligned_zalloc(d->nshards, sizeof(*d->sh));
	d->touched = calloc(d->nshards, sizeof(*d->touched));
	d->is_touched = calloc(d->nshards, 1);
	uint64_t njobs = (uint64_t)d->nshards * DNSBL_INFLIGHT_MAX;
	if (njobs > DNSBL_QUERIES_MAX / d->nsites)
		njobs = DNSBL_QUERIES_MAX / d->nsites;
	d->njobs = (uint32_t)njobs;
	/* Not zeroed: a job is set up when it is first taken (jobs_used). */
	d->jobs = aligned_alloc(JOB_ALIGN, d->njobs * sizeof(*d->jobs));
	if (!d->sites || !d->sh || !d->touched || !d->is_touched || !d->jobs)
		return -ENOMEM;
	memcpy(d->sites, cfg->dnsbl_sites, d->nsites * sizeof(*d->sites));
	for (unsigned s = 0; s < d->nshards; s++) {
		d->sh[s].wake_fd = -1;
		int r = ring_init(&d->sh[s].req, DNSBL_INFLIGHT_MAX);
		if (r == 0)
			r = ring_init(&d->sh[s].done, DNSBL_INFLIGHT_MAX);
		if (r < 0)
			return r;
	}
	d->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->efd < 0)
		return -errno;
	return cache_init(d, cfg->dnsbl_cache_size);
}

int dnsbl_create(const struct config *cfg, unsigned nshards, struct dnsbl **out, FILE *err)
{
	if (nshards == 0 || nshards > SHARDS_MAX || cfg->ndnsbl_sites == 0 ||
	    cfg->ndnsbl_sites > DNSBL_SITES_MAX || !cfg->dnsbl_sites ||
	    cfg->dnsbl_cache_size > DNSBL_CACHE_MAX || cfg->dnsbl_timeout_ms == 0 ||
	    cfg->ndns_servers > DNS_SERVERS_MAX) {
		fprintf(err,
			"mxring: dnsbl: bad shards (%u), dnsbl_sites (%u), dnsbl_cache_size (%u), "
			"dnsbl_timeout (%u ms) or dns_servers (%u)\n",
			nshards, cfg->ndnsbl_sites, cfg->dnsbl_cache_size, cfg->dnsbl_timeout_ms,
			cfg->ndns_servers);
		return -1;
	}
	struct dnsbl *d = cache_aligned_zalloc(1, sizeof(*d));
	if (!d) {
		fprintf(err, "mxring: dnsbl: out of memory\n");
		return -1;
	}
	d->efd = -1;
	d->nsites = cfg->ndnsbl_sites;
	d->all_sites = d->nsites == 32 ? UINT32_MAX : (1u << d->nsites) - 1;
	d->nshards = nshards;
	d->timeout_ms = cfg->dnsbl_timeout_ms;
	d->min_ttl_s = cfg->dnsbl_min_ttl;
	d->max_ttl_s = cfg->dnsbl_max_ttl;
	d->free_head = d->live_head = d->live_tail = JOB_NONE;
	atomic_init(&d->sleeping, 0);
	atomic_init(&d->stop, false);
	int r = dnsbl_alloc(d, cfg);
	if (r < 0) {
		fprintf(err, "mxring: dnsbl: set-up failed: %s\n", strerror(-r));
		dnsbl_free(d);
		return -1;
	}
	if (channel_open(d, cfg, err) < 0) {
		dnsbl_free(d);
		return -1;
	}
	*out = d;
	return 0;
}

void dnsbl_set_wake_fd(struct dnsbl *d, unsigned shard, int fd)
{
	ASSERT(shard < d->nshards && fd >= 0 && !d->running);
	d->sh[shard].wake_fd = fd;
}

int dnsbl_start(struct dnsbl *d)
{
	ASSERT(!d->running);
	for (unsigned s = 0; s < d->nshards; s++)
		ASSERT(d->sh[s].wake_fd >= 0); /* dnsbl_set_wake_fd before the start */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = -pthread_create(&d->thread, NULL, dnsbl_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	d->running = r == 0;
	return r;
}

void dnsbl_stop(struct dnsbl *d)
{
	if (!d || !d->running)
		return;
	atomic_store_explicit(&d->stop, true, memory_order_seq_cst);
	efd_signal(d->efd);
	pthread_join(d->thread, NULL);
	d->running = false;
}

struct dnsbl_req *dnsbl_take_back(struct dnsbl *d)
{
	ASSERT(!d->running);
	for (; d->take_job < d->jobs_used; d->take_job++) {
		struct dnsbl_job *j = &d->jobs[d->take_job];
		if (j->state == JOB_HELD && j->req) {
			struct dnsbl_req *r = j->req;
			j->req = NULL;
			return r;
		}
	}
	for (unsigned s = 0; s < d->nshards; s++) {
		struct dnsbl_req *r = ring_pop(&d->sh[s].req);
		if (!r)
			r = ring_pop(&d->sh[s].done);
		if (r)
			return r;
	}
	return NULL;
}

void dnsbl_free(struct dnsbl *d)
{
	if (!d)
		return;
	dnsbl_stop(d);
	/* Its callbacks see ARES_EDESTRUCTION and touch nothing. */
	if (d->channel_open)
		ares_destroy(d->channel);
	if (d->library_init)
		ares_library_cleanup();
	for (unsigned s = 0; d->sh && s < d->nshards; s++) {
		ring_free(&d->sh[s].req);
		ring_free(&d->sh[s].done);
	}
	if (d->buckets)
		munmap(d->buckets, d->cache_bytes);
	if (d->efd >= 0)
		close(d->efd);
	free(d->jobs);
	free(d->touched);
	free(d->is_touched);
	free(d->sh);
	free(d->sites);
	free(d);
}

/* ---- shard side ---- */

int dnsbl_request(struct dnsbl *d, unsigned shard, struct dnsbl_req *r)
{
	ASSERT(shard < d->nshards);
	struct dnsbl_shard *sh = &d->sh[shard];
	if (sh->inflight >= DNSBL_INFLIGHT_MAX)
		return -EAGAIN;
	r->start_us = mono_us();
	/* Fewer than DNSBL_INFLIGHT_MAX out: the ring has room. */
	ASSERT(ring_push(&sh->req, r) >= 0);
	sh->inflight++;
	/* Pairs with the fence in dnsbl_wait: see dnsbl.h. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&d->sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&d->sleeping, 0, memory_order_seq_cst))
		efd_signal(d->efd);
	return 0;
}

struct dnsbl_req *dnsbl_reap(struct dnsbl *d, unsigned shard)
{
	ASSERT(shard < d->nshards);
	struct dnsbl_shard *sh = &d->sh[shard];
	struct dnsbl_req *r = ring_pop(&sh->done);
	if (r) {
		ASSERT(sh->inflight > 0);
		sh->inflight--;
	}
	return r;
}

void dnsbl_stats_get(struct dnsbl *d, struct dnsbl_stats *out)
{
	out->requests = atomic_load_explicit(&d->requests, memory_order_relaxed);
	out->queries = atomic_load_explicit(&d->queries, memory_order_relaxed);
	out->answers = atomic_load_explicit(&d->answers, memory_order_relaxed);
	out->timeouts = atomic_load_explicit(&d->timeouts, memory_order_relaxed);
	out->failures = atomic_load_explicit(&d->failures, memory_order_relaxed);
	out->cached = atomic_load_explicit(&d->cached, memory_order_relaxed);
	out->evicted = atomic_load_explicit(&d->evicted, memory_order_relaxed);
	out->overflows = atomic_load_explicit(&d->overflows, memory_order_relaxed);
}
