/*
 * shard.c - a shard's thread: its event loop, the dispatch of completions,
 * the tick that drives the timer wheel, the stop, and its set-up.
 *
 * io_uring use (docs/ARCHITECTURE.md), one ring per shard:
 *  - one multishot accept per listening socket (listen.c);
 *  - one multishot recv per connection on the provided-buffer ring, and at
 *    most one send per connection in flight (conn.c);
 *  - one 1-second timeout drives the timer wheel (timer.h);
 *  - a read on the eventfd the writers signal when they return msgs.
 * user_data holds op, slot and the slot's generation (ud_encode and
 * ud_decode in shard_int.h); a slot with requests in flight is never freed,
 * so every completion finds its connection (dispatch asserts it).
 *
 * A loop pass: wait for completions, handle each (one handler per op), take
 * back what the writers returned, then pass_end: buffers for starved
 * receivers, the dirty connections' sends, the ring's buffers published,
 * the writers woken, the gauges published, the log flushed.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"
#include "shard_int.h"
#include "uring_compat.h"
#include "writer.h"

_Thread_local struct shard *shard_self;

static void begin_stop(struct shard *sh);

struct io_uring_sqe *shard_sqe(struct shard *sh)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&sh->ring);
	for (int tries = 0; !sqe && tries < 16; tries++) {
		io_uring_submit(&sh->ring);
		sqe = io_uring_get_sqe(&sh->ring);
	}
	ASSERT(sqe); /* the SQ drains on submit */
	return sqe;
}

static void arm_tick(struct shard *sh)
{
	struct io_uring_sqe *sqe = shard_sqe(sh);
	sh->tick.tv_sec = 1;
	sh->tick.tv_nsec = 0;
	io_uring_prep_timeout(sqe, &sh->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_encode(OP_TICK, 0, 0));
}

static void arm_wake(struct shard *sh)
{
	struct io_uring_sqe *sqe = shard_sqe(sh);
	io_uring_prep_read(sqe, sh->wake_fd, &sh->wake_val, sizeof(sh->wake_val), 0);
	io_uring_sqe_set_data64(sqe, ud_encode(OP_WAKE, 0, 0));
}

static void on_tick(struct shard *sh)
{
	uint32_t idx[EXPIRE_MAX];
	unsigned n;
	unsigned rounds = 0;
	sh->now_s = mono_coarse_ms() / 1000;
	do {
		n = timer_expire(&sh->wheel, sh->now_s, idx, EXPIRE_MAX);
		for (unsigned i = 0; i < n; i++)
			conn_expire(sh, &sh->conns[idx[i]]);
	} while (n == EXPIRE_MAX && ++rounds < 1024);
	if (sh->stopping && sh->now_s >= sh->stop_deadline) {
		/* Grace is over: every session not waiting for a writer gets 421. */
		for (uint32_t i = 0; i < sh->cap; i++) {
			struct conn *c = &sh->conns[i];
			if (c->phase == PH_FREE || c->phase >= PH_CLOSING ||
			    c->smtp.state == SMTP_S_WAIT)
				continue;
			if (c->phase == PH_HANDSHAKE)
				conn_close(sh, c, "shutdown"); /* no plaintext reply inside TLS */
			else
				conn_end(sh, c, SMTP_END_SHUTDOWN, "shutdown");
		}
	}
	if (atomic_load(&sh->stop_req) && !sh->stopping)
		begin_stop(sh);
	if (sh->fail_path && access(sh->fail_path, F_OK) == 0)
		sh->fail_injected = 1;
	arm_tick(sh);
}

static void begin_stop(struct shard *sh)
{
	sh->stopping = 1;
	sh->stop_deadline = sh->now_s + sh->cfg->shutdown_timeout;
	/* New clients are refused at once (shutdown(2) of a listening socket
	 * resets what waits in its backlog too) rather than left waiting for a
	 * greeting that never comes: they try the next MX. */
	for (unsigned i = 0; i < sh->nlisten; i++) {
		if (sh->listen_fd[i] >= 0) {
			struct io_uring_sqe *sqe = shard_sqe(sh);
			io_uring_prep_cancel64(sqe, ud_encode(OP_ACCEPT, i, 0), 0);
			io_uring_sqe_set_data64(sqe, ud_encode(OP_CANCEL, UD_SLOT_NONE, 0));
			shutdown(sh->listen_fd[i], SHUT_RDWR);
		}
	}
	/* Sessions outside a transaction get 421 now; the others when they end one. */
	for (uint32_t i = 0; i < sh->cap; i++) {
		struct conn *c = &sh->conns[i];
		if (c->phase != PH_FREE)
			conn_process(sh, c);
	}
}

/* Test hook (MXRING_TEST_URING_PROBE set): the shard submits an openat of "/"
 * at start, which the restricted ring must refuse; its result is logged. */
static void probe_submit(struct shard *sh)
{
	struct io_uring_sqe *sqe = shard_sqe(sh);
	io_uring_prep_openat(sqe, AT_FDCWD, "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	io_uring_sqe_set_data64(sqe, ud_encode(OP_PROBE, UD_SLOT_NONE, 0));
}

static void probe_done(struct shard *sh, const struct io_uring_cqe *cqe)
{
	log_line("uring probe shard=%u op=openat res=%d (%s)", sh->id, cqe->res,
		 cqe->res < 0 ? strerror(-cqe->res) : "allowed");
	if (cqe->res >= 0)
		close(cqe->res);
}

static void dispatch(struct shard *sh, struct io_uring_cqe *cqe)
{
	struct ud u = ud_decode(io_uring_cqe_get_data64(cqe));
	struct conn *c = NULL;
	if (u.op == OP_RECV || u.op == OP_SEND || (u.op == OP_CANCEL && u.slot != UD_SLOT_NONE)) {
		ASSERT(u.slot < sh->cap);
		c = &sh->conns[u.slot];
		/* A slot with requests in flight is never freed: the completion
		 * is always for the connection that made the request. */
		ASSERT(c->gen == u.gen && c->phase != PH_FREE && c->nops > 0);
	}
	switch ((enum op)u.op) {
	case OP_ACCEPT:
		listen_on_accept(sh, cqe, u.slot);
		break;
	case OP_ACCEPT_RESUME:
		listen_on_resume(sh, u.slot);
		break;
	case OP_TICK:
		on_tick(sh);
		break;
	case OP_WAKE:
		if (atomic_load(&sh->stop_req) && !sh->stopping)
			begin_stop(sh);
		arm_wake(sh);
		break;
	case OP_RECV:
		conn_on_recv(sh, cqe, c);
		break;
	case OP_SEND:
		conn_on_send(sh, cqe, c);
		break;
	case OP_PROBE:
		probe_done(sh, cqe);
		break;
	case OP_CANCEL:
		if (!c)
			break; /* the cancel of an accept */
		c->nops--;
		if (c->phase == PH_SHUT)
			conn_release(sh, c);
		break;
	default:
		ASSERT(0);
	}
}

static void gauge_set(uint64_t *g, uint64_t v)
{
	atomic_store_explicit((_Atomic uint64_t *)g, v, memory_order_relaxed);
}

/* What the shard holds now, for the live stats line (shard_gauges_get). */
static void gauges_publish(struct shard *sh)
{
	struct shard_gauges *g = &sh->gauges;
	gauge_set(&g->conns_open, sh->nopen);
	gauge_set(&g->tls_sessions, sh->ntls);
	gauge_set(&g->recv_bufs_used, sh->held);
	gauge_set(&g->recv_bufs_capacity, sh->nbufs);
	gauge_set(&g->plain_bufs_used, sh->nplain - sh->nplain_free);
	gauge_set(&g->plain_bufs_capacity, sh->nplain);
	gauge_set(&g->msgs_at_writers, sh->msgs_out);
	gauge_set(&g->send_queued_bytes, sh->send_queued);
}

/* End of a loop pass: give buffers back, wake starved receivers, send replies. */
static void pass_end(struct shard *sh)
{
	if (bufpool_low(sh))
		conn_relieve_pressure(sh);
	/* Re-arm starved receivers once a useful share of buffers is back. */
	uint32_t i = sh->starved_head;
	if (sh->held + sh->nbufs / 16 > sh->nbufs)
		i = NONE32; /* stay starved: the list is kept */
	else
		sh->starved_head = NONE32;
	/* Each list holds a slot at most once (its flag), so no more than cap. */
	for (uint32_t n = 0; i != NONE32; n++) {
		ASSERT(n < sh->cap);
		struct conn *c = &sh->conns[i];
		uint32_t next = c->next_starved;
		c->flags &= ~C_STARVED;
		if (c->phase == PH_SHUT)
			conn_release(sh, c);
		else if (c->phase != PH_FREE && !(c->flags & (C_RECV | C_PAUSED)))
			conn_arm_recv(sh, c);
		i = next;
	}
	/* Connections that waited for a plaintext buffer, while some are free. */
	i = sh->nplain_free ? sh->wait_head : NONE32;
	if (i != NONE32)
		sh->wait_head = NONE32;
	for (uint32_t n = 0; i != NONE32; n++) {
		ASSERT(n < sh->cap);
		struct conn *c = &sh->conns[i];
		uint32_t next = c->next_wait;
		c->flags &= ~C_PLAIN_WAIT;
		if (c->phase == PH_SHUT)
			conn_release(sh, c);
		else if (c->phase != PH_FREE)
			conn_process(sh, c);
		i = next;
	}
	i = sh->dirty_head;
	sh->dirty_head = NONE32;
	for (uint32_t n = 0; i != NONE32; n++) {
		ASSERT(n < sh->cap);
		struct conn *c = &sh->conns[i];
		uint32_t next = c->next_dirty;
		c->flags &= ~C_DIRTY;
		if (c->phase == PH_SHUT)
			conn_release(sh, c);
		else if (c->phase != PH_FREE)
			conn_flush(sh, c);
		i = next;
	}
	/* Last: every buffer given back during the pass (relieve_pressure, the
	 * sessions above) is in the kernel's ring before the next submit. */
	bufpool_publish(sh);
	writer_kick(sh->ws, sh->id);
	gauges_publish(sh);
	log_flush();
}

/*
 * The event loop cannot go on (its ring failed). What the shard holds is
 * given up at once rather than left to hang: its listeners stop (shutdown(2)
 * of a listening socket takes it out of the SO_REUSEPORT group, so new
 * connections go to the other shards), its clients are disconnected (one
 * whose message was not acknowledged sends it again: nothing acknowledged is
 * lost), the msgs it has at the writers are waited for (bounded by
 * shutdown_timeout), and the process is asked to stop: the other shards
 * finish what they hold, and mxring exits 1, so that a service manager
 * restarts it.
 */
static void shard_fail(struct shard *sh, const char *what, int err)
{
	log_line("shard=%u failed: %s error=%s; its listeners and %u connection(s) are closed, "
		 "stopping",
		 sh->id, what, strerror(-err), sh->nopen);
	atomic_store(&sh->failed, 1);
	for (unsigned i = 0; i < sh->nlisten; i++)
		shutdown(sh->listen_fd[i], SHUT_RDWR);
	for (uint32_t i = 0; i < sh->cap; i++) {
		struct conn *c = &sh->conns[i];
		if (c->phase == PH_FREE)
			continue;
		conn_close(sh, c, "shard-failed");
		/* Its requests in flight end with the ring; no list is walked again. */
		c->nops = 0;
		c->flags &= (uint16_t) ~(C_DIRTY | C_STARVED | C_PLAIN_WAIT);
		conn_release(sh, c);
	}
	uint64_t deadline = mono_coarse_ms() + (uint64_t)sh->cfg->shutdown_timeout * 1000;
	while (sh->msgs_out > 0 && mono_coarse_ms() < deadline) {
		txn_reap(sh);
		if (sh->msgs_out > 0)
			usleep(10 * 1000);
	}
	log_flush();
	kill(getpid(), SIGTERM);
}

/*
 * Test hook (tests/integration/test_lifecycle.py): with the environment
 * variable MXRING_TEST_SHARD_FAIL=ID:PATH, shard ID's event loop fails as if
 * io_uring_submit_and_wait had, at its first tick once PATH exists.
 */
static void fail_hook_init(struct shard *sh)
{
	const char *v = getenv("MXRING_TEST_SHARD_FAIL");
	char *end;
	if (!v)
		return;
	unsigned long id = strtoul(v, &end, 10);
	if (end != v && *end == ':' && end[1] && id == sh->id)
		sh->fail_path = end + 1;
}

static void *shard_main(void *arg)
{
	struct shard *sh = arg;
	shard_self = sh;
	/* "shard3" in top -H and /proc/PID/task/TID/comm (bench/ reads it). */
	char name[16];
	snprintf(name, sizeof(name), "shard%u", sh->id);
	pthread_setname_np(pthread_self(), name);
	if (sh->cfg->pin_shards) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET((int)(sh->id % (unsigned)CPU_SETSIZE), &set);
		if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
			log_line("shard=%u pin to cpu %u failed", sh->id, sh->id);
	}
	/* A SINGLE_ISSUER ring belongs to the task that enables it: this thread. */
	if (sh->ring.flags & IORING_SETUP_R_DISABLED) {
		int rc = compat_enable_rings(&sh->ring);
		if (rc) {
			shard_fail(sh, "io_uring_enable_rings", rc);
			return NULL;
		}
	}
	log_batch(1);
	sh->now_s = mono_coarse_ms() / 1000;
	for (unsigned i = 0; i < sh->nlisten; i++)
		listen_arm(sh, i);
	arm_tick(sh);
	arm_wake(sh);
	if (sh->probe)
		probe_submit(sh);
	for (;;) {
		int rc = io_uring_submit_and_wait(&sh->ring, 1);
		if (sh->fail_injected)
			rc = -EFAULT;
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			shard_fail(sh, "io_uring_submit_and_wait", rc);
			break;
		}
		sh->now_s = mono_coarse_ms() / 1000;
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&sh->ring, head, cqe)
		{
			dispatch(sh, cqe);
			n++;
		}
		io_uring_cq_advance(&sh->ring, n);
		txn_reap(sh);
		admit_dnsbl_reap(sh);
		pass_end(sh);
		/* Release: whatever this pass read of shared state (the recipient
		 * table) is done with before the count moves (shard_quiesce). */
		atomic_fetch_add_explicit(&sh->passes, 1, memory_order_release);
		if (sh->stopping && sh->nopen == 0 && sh->msgs_out == 0)
			break;
	}
	log_batch(0);
	return NULL;
}

static int ring_setup(struct shard *sh)
{
	struct io_uring_params p;
	static const unsigned flag_sets[] = {
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
		IORING_SETUP_R_DISABLED,
	    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE,
	    IORING_SETUP_CQSIZE,
	};
	int rc = -EINVAL;
	for (unsigned i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = flag_sets[i];
		p.cq_entries = 16384;
		rc = io_uring_queue_init_params(1024, &sh->ring, &p);
		if (rc == 0)
			return 0;
	}
	return rc;
}

/*
 * What the ring may do once enabled, registered while it is still disabled
 * (IORING_REGISTER_RESTRICTIONS): the operations a shard submits (accept,
 * recv, send, the read of its wake eventfd, timeouts, cancels), the one SQE
 * flag it sets (buffer select), and of the register calls only the one that
 * takes its buffer ring back at exit. A ring driven by a bug cannot open a
 * file, connect out, or register files or buffers of its choosing: such a
 * request completes with -EACCES. 0 or -errno (a ring that starts enabled,
 * on the fallback flag sets of old kernels: -EOPNOTSUPP).
 */
static int ring_restrict(struct shard *sh)
{
	if (!(sh->ring.flags & IORING_SETUP_R_DISABLED))
		return -EOPNOTSUPP;
	static const uint8_t ops[] = {IORING_OP_ACCEPT, IORING_OP_RECV,	   IORING_OP_SEND,
				      IORING_OP_READ,	IORING_OP_TIMEOUT, IORING_OP_ASYNC_CANCEL};
	struct io_uring_restriction res[sizeof(ops) + 2];
	memset(res, 0, sizeof(res));
	unsigned n = 0;
	for (unsigned i = 0; i < sizeof(ops); i++) {
		res[n].opcode = IORING_RESTRICTION_SQE_OP;
		res[n++].sqe_op = ops[i];
	}
	res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
	res[n++].sqe_flags = IOSQE_BUFFER_SELECT;
	res[n].opcode = IORING_RESTRICTION_REGISTER_OP;
	res[n++].register_op = IORING_UNREGISTER_PBUF_RING;
	return compat_register_restrictions(&sh->ring, res, n);
}

bool shard_uring_restricted(const struct shard *sh)
{
	return sh->uring_restricted;
}

int shard_create(unsigned id, const struct config *cfg, const struct smtp_conf *sconf,
		 struct writer_set *ws, int *listen_fds, struct shard **out)
{
	/* Aligned as the struct asks: its counters and gauges sit on cache lines of
	 * their own, which calloc's 16-byte alignment would not guarantee. */
	size_t size =
	    (sizeof(struct shard) + _Alignof(struct shard) - 1) & ~(_Alignof(struct shard) - 1);
	struct shard *sh = aligned_alloc(_Alignof(struct shard), size);
	if (!sh)
		return -ENOMEM;
	memset(sh, 0, size);
	int rc;
	sh->id = id;
	sh->cfg = cfg;
	sh->sconf = sconf;
	sh->ws = ws;
	sh->nwriters = cfg->writers;
	sh->buf_size = cfg->recv_buffer_size;
	sh->nbufs = cfg->recv_buffers;
	unsigned nshards = cfg->shards;
	sh->cap = (cfg->max_connections + nshards - 1) / nshards;
	sh->dirty_head = sh->starved_head = sh->wait_head = NONE32;
	for (unsigned i = 0; i < LISTEN_MAX; i++)
		sh->listen_fd[i] = -1;
	rc = ring_setup(sh);
	if (rc) {
		fprintf(stderr, "mxring: shard %u: io_uring setup: %s\n", id, strerror(-rc));
		free(sh);
		return rc;
	}
	sh->bufs = mmap(NULL, (size_t)sh->nbufs * sh->buf_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (cfg->tls_security_level != TLS_LEVEL_NONE || cfg->nsmtps_listen) {
		/* Decrypted input: a quarter of the receive buffers' count, 16 KiB each. */
		sh->nplain = sh->nbufs / 4 < 16		      ? 16
			     : sh->nbufs / 4 > PLAIN_BUFS_MAX ? PLAIN_BUFS_MAX
							      : sh->nbufs / 4;
		sh->plain = mmap(NULL, (size_t)sh->nplain * PLAIN_SIZE, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		sh->plain_free = calloc(sh->nplain, sizeof(*sh->plain_free));
		if (sh->plain == MAP_FAILED || !sh->plain_free) {
			rc = -ENOMEM;
			fprintf(stderr, "mxring: shard %u: out of memory\n", id);
			goto fail;
		}
		for (uint32_t i = 0; i < sh->nplain; i++)
			sh->plain_free[i] = (uint16_t)(sh->nbufs + sh->nplain - 1 - i);
		sh->nplain_free = sh->nplain;
	}
	sh->refs = calloc(sh->nbufs + sh->nplain, sizeof(*sh->refs));
	sh->next = calloc(sh->nbufs + sh->nplain, sizeof(*sh->next));
	sh->len = calloc(sh->nbufs + sh->nplain, sizeof(*sh->len));
	sh->conns = calloc(sh->cap, sizeof(*sh->conns));
	if (sh->bufs == MAP_FAILED || !sh->refs || !sh->next || !sh->len || !sh->conns) {
		rc = -ENOMEM;
		fprintf(stderr, "mxring: shard %u: out of memory\n", id);
		goto fail;
	}
	sh->br = io_uring_setup_buf_ring(&sh->ring, sh->nbufs, 0, 0, &rc);
	if (!sh->br) {
		fprintf(stderr, "mxring: shard %u: buffer ring: %s\n", id, strerror(-rc));
		goto fail;
	}
	for (uint32_t b = 0; b < sh->nbufs; b++)
		io_uring_buf_ring_add(sh->br, bufpool_addr(sh, (uint16_t)b), sh->buf_size,
				      (unsigned short)b, io_uring_buf_ring_mask(sh->nbufs), (int)b);
	io_uring_buf_ring_advance(sh->br, (int)sh->nbufs);
	rc = cfg->sandbox ? ring_restrict(sh) : -EOPNOTSUPP;
	sh->uring_restricted = rc == 0;
	if (rc && rc != -EOPNOTSUPP && id == 0)
		log_line("warning: io_uring restrictions not available: %s", strerror(-rc));
	sh->probe = getenv("MXRING_TEST_URING_PROBE") != NULL;
	sh->free_head = NONE32;
	for (uint32_t i = sh->cap; i-- > 0;) {
		sh->conns[i].next_dirty = sh->free_head;
		sh->free_head = i;
	}
	rc = timer_init(&sh->wheel, sh->cap, mono_coarse_ms() / 1000);
	if (rc) {
		fprintf(stderr, "mxring: shard %u: out of memory\n", id);
		goto fail;
	}
	sh->wake_fd = writer_shard_eventfd(ws, id);
	fail_hook_init(sh);
	/* Bound by listen_bind (before the privileges went): now the shard's. */
	for (unsigned i = 0; i < cfg->nlisten + cfg->nsmtps_listen; i++) {
		sh->listen_fd[i] = listen_fds[i];
		listen_fds[i] = -1;
		sh->nlisten = i + 1;
	}
	gauges_publish(sh); /* a shard with nothing to do has no loop pass for a while */
	*out = sh;
	return 0;
fail:
	for (unsigned i = 0; i < sh->nlisten; i++)
		close(sh->listen_fd[i]);
	io_uring_queue_exit(&sh->ring);
	if (sh->bufs != MAP_FAILED && sh->bufs)
		munmap(sh->bufs, (size_t)sh->nbufs * sh->buf_size);
	if (sh->plain && sh->plain != MAP_FAILED)
		munmap(sh->plain, (size_t)sh->nplain * PLAIN_SIZE);
	free(sh->plain_free);
	free(sh->refs);
	free(sh->next);
	free(sh->len);
	free(sh->conns);
	timer_free(&sh->wheel);
	free(sh);
	return rc;
}

int shard_start(struct shard *sh)
{
	int rc = pthread_create(&sh->thread, NULL, shard_main, sh);
	return -rc;
}

void shard_stop(struct shard *sh)
{
	atomic_store(&sh->stop_req, 1);
	uint64_t one = 1;
	ssize_t w = write(sh->wake_fd, &one, sizeof(one));
	(void)w;
}

void shard_join(struct shard *sh)
{
	pthread_join(sh->thread, NULL);
}

void shard_free(struct shard *sh)
{
	for (unsigned i = 0; i < sh->nlisten; i++)
		close(sh->listen_fd[i]);
	io_uring_free_buf_ring(&sh->ring, sh->br, sh->nbufs, 0);
	io_uring_queue_exit(&sh->ring);
	munmap(sh->bufs, (size_t)sh->nbufs * sh->buf_size);
	if (sh->plain)
		munmap(sh->plain, (size_t)sh->nplain * PLAIN_SIZE);
	free(sh->plain_free);
	free(sh->refs);
	free(sh->next);
	free(sh->len);
	free(sh->conns);
	timer_free(&sh->wheel);
	free(sh);
}

void shard_set_dnsbl(struct shard *sh, struct dnsbl *d)
{
	sh->dnsbl = d;
}

bool shard_quiesce(struct shard **shards, unsigned n, unsigned timeout_ms)
{
	uint64_t seen[SHARDS_MAX];
	for (unsigned i = 0; i < n && i < SHARDS_MAX; i++)
		seen[i] = atomic_load_explicit(&shards[i]->passes, memory_order_acquire);
	uint64_t deadline = mono_ms() + timeout_ms;
	for (unsigned i = 0; i < n && i < SHARDS_MAX; i++) {
		/* The next count ends either the pass under way at the first load
		 * or one that began after it. A failed shard holds nothing. */
		while (atomic_load_explicit(&shards[i]->passes, memory_order_acquire) == seen[i] &&
		       !atomic_load(&shards[i]->failed)) {
			if (mono_ms() >= deadline)
				return false;
			usleep(2000);
		}
	}
	return true;
}

int shard_failed(struct shard *sh)
{
	return atomic_load(&sh->failed);
}

void shard_stats_get(struct shard *sh, struct shard_stats *out)
{
	uint64_t *dst = (uint64_t *)out;
	uint64_t *src = (uint64_t *)&sh->stats;
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = atomic_load_explicit((_Atomic uint64_t *)&src[i], memory_order_relaxed);
}

void shard_gauges_get(struct shard *sh, struct shard_gauges *out)
{
	uint64_t *dst = (uint64_t *)out;
	uint64_t *src = (uint64_t *)&sh->gauges;
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = atomic_load_explicit((_Atomic uint64_t *)&src[i], memory_order_relaxed);
}
