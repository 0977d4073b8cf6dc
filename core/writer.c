/*
 * writer.c - writer threads between the shards and the spool (writer.h).
 *
 * Rings: for writer w and shard s, in[s] carries msgs s -> w and out[s]
 * carries them back. Each is single-producer single-consumer (ring.h).
 *
 * Bound: a shard never has more than ring_size msgs out with one writer;
 * writer_submit counts them (submitted minus reaped, touched only by the
 * shard thread) and answers -EAGAIN at the bound. So an inbound push never
 * finds its ring full and an outbound push can never fail: a full out ring
 * is a broken invariant and aborts.
 *
 * Sleep and wake-up without a lost wake-up: a writer with nothing to do
 * stores sleeping = 1, issues a seq_cst fence, looks at all its inbound
 * rings once more, and only then blocks in read() on its eventfd (in poll()
 * with a timeout when its segment is due for ready/ by age, spool_idle_ms,
 * and then moves it, spool_idle). A shard
 * pushes (release), issues a seq_cst fence in writer_kick, and writes the
 * eventfd of every writer it pushed to whose sleeping flag it exchanges
 * from 1 to 0. The two fences order the flag against the ring indices, so
 * either the writer sees the msg or the shard sees the flag. A stale
 * eventfd count only costs one empty pass.
 *
 * Batch (group commit): pop at most ring_size msgs from each inbound ring
 * (starting with a different shard each time) and at most SPOOL_BATCH_MAX
 * in all, spool_write each, one spool_sync, then set result and done_us,
 * push each msg to out[m->shard] and write each of those shards' eventfd
 * once.
 *
 * Stop: writers_stop sets stop and wakes every writer; a writer that sees
 * stop drains its rings until they are empty, then closes its spool (the
 * active segment is synced and moved into ready/, see spool_close) and
 * ends. Msgs the drain returns stay in the out rings, which writers_stop
 * frees: shards must have reaped what they wait for before calling it.
 *
 * Writer threads are not pinned and block every signal.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "check.h"
#include "ring.h"
#include "spool.h"
#include "writer.h"

static_assert(WRITERS_MAX <= 64, "a shard's kick set is one 64-bit mask");

struct writer {
	struct writer_set *ws;
	unsigned id;
	pthread_t thread;
	bool running;
	struct spool *spool; /* owned: closed by the thread when it ends */
	struct ring *in;     /* owned: nshards rings, shard -> writer */
	struct ring *out;    /* owned: nshards rings, writer -> shard */
	int efd;	     /* owned: read by this writer when it sleeps */
	struct msg **batch;  /* owned: batch_cap */
	unsigned batch_cap;
	unsigned first;	     /* inbound ring the next batch starts with */
	unsigned *touched;   /* owned: shards with returns in this batch */
	uint8_t *is_touched; /* owned: nshards flags for touched */
	/* What the relay may read of this writer's segments (writers_position). */
	pthread_mutex_t pos_mu;
	struct spool_pos pos;
	_Atomic int relay_efd; /* signalled after each publication; -1: no relay */
	_Alignas(RING_CACHE_LINE) _Atomic int sleeping;
	_Alignas(RING_CACHE_LINE) _Atomic uint64_t batches;
	_Atomic uint64_t finals, parts, errors, bytes;
};

/* State only the shard thread touches, on its own cache line. */
struct shard_side {
	_Alignas(RING_CACHE_LINE) uint64_t kick; /* writers pushed to since the last kick */
	uint32_t *out_count;			 /* owned: per writer, msgs out */
	unsigned reap_next;			 /* writer whose ring writer_reap starts with */
	int efd;				 /* owned: writers signal returns here */
};

struct writer_set {
	unsigned nshards, nwriters, ring_size;
	struct writer *w;      /* owned: nwriters */
	struct shard_side *sh; /* owned: nshards */
	_Alignas(RING_CACHE_LINE) _Atomic bool stop;
};

static void efd_signal(int fd)
{
	uint64_t one = 1;
	/* EAGAIN means the count is already huge: the reader wakes anyway. */
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* ---- writer thread ---- */

static bool writer_has_work(struct writer *w)
{
	for (unsigned s = 0; s < w->ws->nshards; s++)
		if (ring_count(&w->in[s]) > 0)
			return true;
	return false;
}

static unsigned writer_collect(struct writer *w)
{
	const struct writer_set *ws = w->ws;
	unsigned n = 0;
	for (unsigned k = 0; k < ws->nshards && n < w->batch_cap; k++) {
		struct ring *r = &w->in[(w->first + k) % ws->nshards];
		for (unsigned j = 0; j < ws->ring_size && n < w->batch_cap; j++) {
			struct msg *m = ring_pop(r);
			if (!m)
				break;
			w->batch[n++] = m;
		}
	}
	w->first = (w->first + 1) % ws->nshards;
	return n;
}

static void writer_account(struct writer *w, const struct msg *m)
{
	if (m->result < 0)
		atomic_fetch_add_explicit(&w->errors, 1, memory_order_relaxed);
	else if (m->kind == MSG_FINAL)
		atomic_fetch_add_explicit(&w->finals, 1, memory_order_relaxed);
	else if (m->kind == MSG_PART)
		atomic_fetch_add_explicit(&w->parts, 1, memory_order_relaxed);
	if (m->result == 0 && m->kind != MSG_ABORT)
		atomic_fetch_add_explicit(&w->bytes, m->part_bytes, memory_order_relaxed);
}

/* Publishes how far the segment is durable, and wakes the relay. */
static void writer_publish(struct writer *w)
{
	struct spool_pos p;
	spool_position(w->spool, &p);
	pthread_mutex_lock(&w->pos_mu);
	bool moved = p.valid != w->pos.valid || p.active != w->pos.active ||
		     p.run_us != w->pos.run_us || p.seq != w->pos.seq ||
		     p.synced_off != w->pos.synced_off;
	w->pos = p;
	pthread_mutex_unlock(&w->pos_mu);
	int fd = atomic_load_explicit(&w->relay_efd, memory_order_acquire);
	if (moved && fd >= 0)
		efd_signal(fd);
}

static void writer_batch(struct writer *w, unsigned n)
{
	struct writer_set *ws = w->ws;
	uint64_t syncs = spool_syncs(w->spool);

	for (unsigned i = 0; i < n; i++)
		w->batch[i]->result = spool_write(w->spool, w->batch[i]);
	int r = spool_sync(w->spool);
	atomic_fetch_add_explicit(&w->batches, spool_syncs(w->spool) - syncs, memory_order_relaxed);
	writer_publish(w);

	uint64_t done = real_us();
	unsigned ntouched = 0;
	for (unsigned i = 0; i < n; i++) {
		struct msg *m = w->batch[i];
		if (r < 0 && m->result == 0 && m->kind != MSG_ABORT)
			m->result = r;
		m->done_us = done;
		writer_account(w, m);
		ASSERT(m->shard < ws->nshards);
		unsigned s = m->shard;
		ASSERT(ring_push(&w->out[s], m) >= 0);
		if (!w->is_touched[s]) {
			w->is_touched[s] = 1;
			w->touched[ntouched++] = s;
		}
	}
	for (unsigned i = 0; i < ntouched; i++) {
		w->is_touched[w->touched[i]] = 0;
		efd_signal(ws->sh[w->touched[i]].efd);
	}
}

static void writer_sleep(struct writer *w)
{
	atomic_store_explicit(&w->sleeping, 1, memory_order_seq_cst);
	atomic_thread_fence(memory_order_seq_cst);
	if (writer_has_work(w) || atomic_load_explicit(&w->ws->stop, memory_order_seq_cst)) {
		atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
		return;
	}
	/* With a segment due for ready/ by age (segment_max_age), sleep until
	 * then at most; n = 0: the time came with no wake-up. */
	int ms = spool_idle_ms(w->spool);
	struct pollfd p = {.fd = w->efd, .events = POLLIN};
	int n = ms < 0 ? 1 : ms > 0 ? poll(&p, 1, ms) : 0;
	uint64_t v;
	if (n > 0)
		while (read(w->efd, &v, sizeof(v)) < 0 && errno == EINTR)
			;
	atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
	if (n == 0) {
		spool_idle(w->spool);
		writer_publish(w);
	}
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	char name[16];
	snprintf(name, sizeof(name), "writer%u", w->id);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		unsigned n = writer_collect(w);
		if (n > 0) {
			writer_batch(w, n);
			continue;
		}
		/* Stop is seen only with every ring found empty after it was set. */
		if (atomic_load_explicit(&w->ws->stop, memory_order_acquire)) {
			n = writer_collect(w);
			if (n == 0)
				break;
			writer_batch(w, n);
			continue;
		}
		writer_sleep(w);
	}
	int r = spool_close(w->spool);
	w->spool = NULL;
	return (void *)(intptr_t)r;
}

/* ---- set-up and tear-down ---- */

static void writers_free(struct writer_set *ws)
{
	for (unsigned i = 0; ws->w && i < ws->nwriters; i++) {
		struct writer *w = &ws->w[i];
		if (spool_close(w->spool) < 0)
			fprintf(stderr, "mxring: writer %u: spool close failed\n", i);
		for (unsigned s = 0; s < ws->nshards; s++) {
			if (w->in)
				ring_free(&w->in[s]);
			if (w->out)
				ring_free(&w->out[s]);
		}
		free(w->in);
		free(w->out);
		free(w->batch);
		free(w->touched);
		free(w->is_touched);
		if (w->efd >= 0)
			close(w->efd);
	}
	for (unsigned s = 0; ws->sh && s < ws->nshards; s++) {
		free(ws->sh[s].out_count);
		if (ws->sh[s].efd >= 0)
			close(ws->sh[s].efd);
	}
	free(ws->w);
	free(ws->sh);
	free(ws);
}

static int writer_init(struct writer_set *ws, struct writer *w, unsigned id,
		       const struct config *cfg)
{
	w->ws = ws;
	w->id = id;
	pthread_mutex_init(&w->pos_mu, NULL);
	atomic_init(&w->relay_efd, -1);
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0)
		return -errno;
	w->in = cache_aligned_zalloc(ws->nshards, sizeof(*w->in));
	w->out = cache_aligned_zalloc(ws->nshards, sizeof(*w->out));
	uint64_t cap = (uint64_t)ws->nshards * ws->ring_size;
	w->batch_cap = cap < SPOOL_BATCH_MAX ? (unsigned)cap : SPOOL_BATCH_MAX;
	w->batch = calloc(w->batch_cap, sizeof(*w->batch));
	w->touched = calloc(ws->nshards, sizeof(*w->touched));
	w->is_touched = calloc(ws->nshards, 1);
	if (!w->in || !w->out || !w->batch || !w->touched || !w->is_touched)
		return -ENOMEM;
	for (unsigned s = 0; s < ws->nshards; s++) {
		int r = ring_init(&w->in[s], ws->ring_size);
		if (r == 0)
			r = ring_init(&w->out[s], ws->ring_size);
		if (r < 0)
			return r;
	}
	/* Messages in flight: one per connection, plus the msgs queued behind them. */
	uint64_t inflight = (uint64_t)cfg->max_connections + cap;
	if (inflight > SPOOL_INFLIGHT_MAX)
		inflight = SPOOL_INFLIGHT_MAX;
	int r = spool_open(cfg, id, w->batch_cap, (unsigned)inflight, &w->spool);
	if (r == 0)
		spool_position(w->spool, &w->pos);
	return r;
}

/* Stops and joins the threads started so far (start failed half-way). */
static void writers_abort(struct writer_set *ws)
{
	atomic_store_explicit(&ws->stop, true, memory_order_seq_cst);
	for (unsigned i = 0; i < ws->nwriters; i++)
		if (ws->w[i].running)
			efd_signal(ws->w[i].efd);
	for (unsigned i = 0; i < ws->nwriters; i++)
		if (ws->w[i].running) {
			pthread_join(ws->w[i].thread, NULL);
			ws->w[i].running = false;
		}
}

int writers_start(const struct config *cfg, unsigned nshards, struct writer_set **out)
{
	unsigned rs = cfg->ring_size;
	if (nshards == 0 || nshards > SHARDS_MAX || cfg->writers == 0 ||
	    cfg->writers > WRITERS_MAX || rs < 2 || rs > RING_SIZE_MAX || (rs & (rs - 1)) != 0) {
		fprintf(stderr,
			"mxring: writers: bad shards (%u), writers (%u) or ring_size (%u)\n",
			nshards, cfg->writers, rs);
		return -EINVAL;
	}
	struct writer_set *ws = cache_aligned_zalloc(1, sizeof(*ws));
	if (!ws)
		return -ENOMEM;
	ws->nshards = nshards;
	ws->nwriters = cfg->writers;
	ws->ring_size = rs;
	atomic_init(&ws->stop, false);
	ws->w = cache_aligned_zalloc(ws->nwriters, sizeof(*ws->w));
	ws->sh = cache_aligned_zalloc(nshards, sizeof(*ws->sh));
	int r = ws->w && ws->sh ? 0 : -ENOMEM;
	for (unsigned i = 0; ws->w && i < ws->nwriters; i++)
		ws->w[i].efd = -1;
	for (unsigned s = 0; ws->sh && s < nshards; s++)
		ws->sh[s].efd = -1;
	for (unsigned s = 0; r == 0 && s < nshards; s++) {
		ws->sh[s].efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		ws->sh[s].out_count = calloc(ws->nwriters, sizeof(uint32_t));
		if (ws->sh[s].efd < 0)
			r = -errno;
		else if (!ws->sh[s].out_count)
			r = -ENOMEM;
	}
	for (unsigned i = 0; r == 0 && i < ws->nwriters; i++)
		r = writer_init(ws, &ws->w[i], i, cfg);
	if (r < 0) {
		fprintf(stderr, "mxring: writers: set-up failed: %s\n", strerror(-r));
		writers_free(ws);
		return r;
	}

	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (unsigned i = 0; r == 0 && i < ws->nwriters; i++) {
		r = -pthread_create(&ws->w[i].thread, NULL, writer_main, &ws->w[i]);
		ws->w[i].running = r == 0;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		fprintf(stderr, "mxring: writers: thread start failed: %s\n", strerror(-r));
		writers_abort(ws);
		writers_free(ws);
		return r;
	}
	*out = ws;
	return 0;
}

void writers_stop(struct writer_set *ws)
{
	if (!ws)
		return;
	writers_abort(ws);
	writers_free(ws);
}

/* ---- shard side ---- */

int writer_submit(struct writer_set *ws, unsigned shard, struct msg *m)
{
	ASSERT(shard < ws->nshards && m->shard == shard && m->writer < ws->nwriters);
	struct shard_side *sh = &ws->sh[shard];
	if (sh->out_count[m->writer] >= ws->ring_size)
		return -EAGAIN;
	if (ring_push(&ws->w[m->writer].in[shard], m) < 0)
		return -EAGAIN;
	sh->out_count[m->writer]++;
	sh->kick |= 1ull << m->writer;
	return 0;
}

void writer_kick(struct writer_set *ws, unsigned shard)
{
	struct shard_side *sh = &ws->sh[shard];
	uint64_t mask = sh->kick;
	if (!mask)
		return;
	sh->kick = 0;
	atomic_thread_fence(memory_order_seq_cst);
	while (mask) {
		unsigned i = (unsigned)__builtin_ctzll(mask);
		mask &= mask - 1;
		struct writer *w = &ws->w[i];
		if (atomic_load_explicit(&w->sleeping, memory_order_relaxed) &&
		    atomic_exchange_explicit(&w->sleeping, 0, memory_order_seq_cst))
			efd_signal(w->efd);
	}
}

unsigned writer_reap(struct writer_set *ws, unsigned shard, struct msg **out, unsigned max)
{
	struct shard_side *sh = &ws->sh[shard];
	unsigned n = 0;
	for (unsigned k = 0; k < ws->nwriters && n < max; k++) {
		unsigned i = (sh->reap_next + k) % ws->nwriters;
		struct ring *r = &ws->w[i].out[shard];
		struct msg *m;
		while (n < max && (m = ring_pop(r)) != NULL) {
			ASSERT(sh->out_count[i] > 0);
			sh->out_count[i]--;
			out[n++] = m;
		}
	}
	sh->reap_next = (sh->reap_next + 1) % ws->nwriters;
	return n;
}

int writers_position(struct writer_set *ws, unsigned writer, struct spool_pos *out)
{
	if (writer >= ws->nwriters)
		return -ENOENT;
	struct writer *w = &ws->w[writer];
	pthread_mutex_lock(&w->pos_mu);
	*out = w->pos;
	pthread_mutex_unlock(&w->pos_mu);
	return 0;
}

void writers_set_relay_wake(struct writer_set *ws, unsigned writer, int efd)
{
	if (writer < ws->nwriters)
		atomic_store_explicit(&ws->w[writer].relay_efd, efd, memory_order_release);
}

int writer_shard_eventfd(struct writer_set *ws, unsigned shard)
{
	return ws->sh[shard].efd;
}

unsigned writer_ring_size(const struct writer_set *ws)
{
	return ws->ring_size;
}

void writers_stats(struct writer_set *ws, struct writer_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < ws->nwriters; i++) {
		struct writer *w = &ws->w[i];
		out->batches += atomic_load_explicit(&w->batches, memory_order_relaxed);
		out->finals += atomic_load_explicit(&w->finals, memory_order_relaxed);
		out->parts += atomic_load_explicit(&w->parts, memory_order_relaxed);
		out->errors += atomic_load_explicit(&w->errors, memory_order_relaxed);
		out->bytes += atomic_load_explicit(&w->bytes, memory_order_relaxed);
		for (unsigned s = 0; s < ws->nshards; s++)
			out->queued += ring_count(&w->in[s]);
	}
	out->queue_cap = (uint64_t)ws->nwriters * ws->nshards * ws->ring_size;
}
