/*
 * shard.c - the per-CPU event loop: accept, receive, run the SMTP engine,
 * hand messages to writers, send replies, expire timers.
 *
 * io_uring use (DESIGN.md, Shards):
 *  - one multishot accept per listening socket (SO_REUSEPORT, one per shard);
 *  - one multishot recv per connection on the shard's provided-buffer ring:
 *    a connection owns no receive buffer while idle. A buffer lent by the
 *    kernel is referenced by the connection's input queue and by every body
 *    slice pointing into it (refs[]); it goes back to the ring when the last
 *    reference drops, and only this thread ever re-adds it;
 *  - at most one send per connection in flight; replies produced while it
 *    is out are batched into the next one (RFC 2920);
 *  - one 1-second timeout drives the timer wheel (timer.h);
 *  - a read on the eventfd the writers signal when they return msgs.
 * Under TLS (STARTTLS or an smtps_listen address) received bytes queue as
 * ciphertext (c->ct) for wolfSSL, which decrypts into the shard's plaintext
 * buffers (ids past the kernel's); those queue as input (c->in) exactly like
 * receive buffers do for plaintext sessions.
 * user_data holds op, slot and generation, so a completion for a slot that
 * was closed and reused is recognised and dropped.
 *
 * Backpressure: when the buffer ring runs dry a multishot recv ends with
 * -ENOBUFS; the connection is queued as starved and re-armed once buffers come
 * back. A connection with more than IN_PAUSE_BUFS buffers of unread input
 * (a client that pipelines while its message is being stored) has its recv
 * cancelled until the input is consumed. Bodies larger than body_flush_bytes
 * go to the writer in parts, so no message pins more buffers than that.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "msg.h"
#include "proxy.h"
#include "shard.h"
#include "timer.h"
#include "tls.h"
#include "uring_compat.h"

#define ASSERT(x)                                                                                  \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "mxring: %s:%d: assertion failed: %s\n", __FILE__,         \
				__LINE__, #x);                                                     \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_TICK, OP_WAKE, OP_CANCEL, OP_ACCEPT_RESUME };

#define BUF_NONE	 0xffffu
#define OUT_CAP		 4096u /* reply buffer: >= SMTP_OUT_RESERVE + the longest reply */
#define IN_PAUSE_BUFS	 8u    /* unread input buffers before recv is paused */
#define REAP_MAX	 256u
#define EXPIRE_MAX	 256u
#define NONE32		 UINT32_MAX
#define PART_BUFS_MAX	 64u	       /* receive buffers a message pins before a part */
#define PART_SLICES_MAX	 1024u	       /* slices a message gathers before a part */
#define COPY_RUN_MAX	 1024u	       /* a run shorter than this may be copied */
#define FRAG_SLICES_FREE 8u	       /* slices beyond 2 per buffer before fragments are copied */
#define COPY_CHUNK_BYTES (16u << 10)   /* copy chunks are allocated this large */
#define PLAIN_SIZE	 TLS_PLAIN_BUF /* one TLS record's inner plaintext, whole */
#define LINGER_S	 2u	       /* a closed session's input is read this long at most */
#define LINGER_BYTES	 (64u << 10)   /* and this much */
#define ACCEPT_PAUSE_MS	 500u	       /* accepting stops this long after EMFILE and the like */
#define ACCEPT_LOG_MS	 1000u	       /* accept errors are logged at most this often */

static_assert(OUT_CAP >= 2 * SMTP_OUT_RESERVE, "reply buffer holds a reserve and a reply");

/* Connection flags. */
#define C_RECV	     0x01u   /* multishot recv armed */
#define C_SEND	     0x02u   /* a send is in flight */
#define C_PAUSED     0x04u   /* recv cancelled: too much unread input */
#define C_CLOSE	     0x08u   /* close once the replies are sent */
#define C_SHUT	     0x10u   /* socket shut down; slot freed when no op is in flight */
#define C_DIRTY	     0x20u   /* on the dirty list */
#define C_STARVED    0x40u   /* on the starved list (waits for buffers) */
#define C_PEER_EOF   0x80u   /* the client closed its side */
#define C_PLAIN_WAIT 0x100u  /* on the plain-wait list (waits for a plaintext buffer) */
#define C_PREGREET   0x200u  /* the greeting is held back (pregreet_wait) */
#define C_NOTIFIED   0x400u  /* TLS close_notify queued */
#define C_RX	     0x800u  /* bytes arrived since cmd_start_s was set */
#define C_LINGER     0x1000u /* session over, FIN sent: input is read and dropped */
#define C_PROXY	     0x2000u /* waiting for the PROXY protocol header (proxy_protocol) */
#define C_ACK_DUE    0x4000u /* the handshake ended: its last record is to be acknowledged */

/* A connection's queue of buffers (ids into the shard's pools), oldest first. */
struct bufq {
	uint16_t head; /* BUF_NONE when empty */
	uint16_t tail;
	uint16_t n;   /* buffers queued */
	uint32_t off; /* bytes of head already consumed */
};

enum { TLS_NONE = 0, TLS_HANDSHAKE, TLS_UP };

/* An envelope with the count of its holders: the connection while the
 * transaction is open, and every msg of it at a writer. */
struct env_box {
	struct envelope env;
	uint32_t refs;
};

struct conn {
	uint32_t gen;
	uint8_t open;
	uint16_t flags;
	uint16_t nops; /* io_uring requests in flight for this slot */
	int fd;
	struct bufq in;	      /* plaintext input for the engine */
	struct bufq ct;	      /* TLS: ciphertext not yet taken by wolfSSL */
	uint16_t feed_buf;    /* buffer being fed to the engine, BUF_NONE for the stash */
	uint8_t tls_state;    /* TLS_NONE, TLS_HANDSHAKE, TLS_UP */
	uint8_t implicit_tls; /* accepted on an smtps_listen address */
	uint8_t li;	      /* index of the listener that accepted it */
	struct tls_conn *tls; /* owned, from STARTTLS on */
	uint16_t line_len;
	uint16_t writer; /* writer of the current transaction */
	uint8_t *line;	 /* owned, lazily: a partial command line */
	uint8_t *out;	 /* owned, lazily: replies not yet sent */
	uint8_t *snd;	 /* owned: the send in flight */
	uint32_t out_len, snd_len, snd_off;
	struct smtp_session smtp;
	struct env_box *env; /* owned reference: the open transaction */
	struct msg *msg;     /* owned: body slices being gathered */
	uint32_t next_dirty;
	uint32_t next_starved;
	uint32_t next_wait;
	char *helo; /* owned, lazily */
	char addr[CLIENT_ADDR_MAX];
	uint16_t port;
	uint32_t nmsgs;
	uint64_t start_ms;
	uint64_t mail_ms;
	uint64_t content_start_s; /* when DATA/BDAT content began (min_data_rate), 0 if not */
	uint64_t cmd_start_s;	  /* when the server became ready for the command line being
				   * read (command_timeout), 0 if it is not reading one */
	uint32_t lines_seen;	  /* smtp.lines when cmd_start_s was set */
	uint64_t tls_start_s;	  /* when the TLS handshake began, 0 before */
	uint32_t ip_bucket;	  /* counted in ip_conns[], or IP_BUCKETS */
	uint32_t linger_bytes;	  /* input dropped while lingering */
	const char *reason;	  /* why the session ended, for the log */
};

struct shard {
	unsigned id;
	const struct config *cfg;
	const struct smtp_conf *sconf;
	struct writer_set *ws;
	unsigned nwriters;
	unsigned next_writer;
	pthread_t thread;
	struct io_uring ring;
	int listen_fd[LISTEN_MAX];
	unsigned nlisten;
	uint32_t accept_armed;	/* listeners (bits) with a multishot accept in flight */
	uint32_t accept_paused; /* listeners (bits) waiting out ACCEPT_PAUSE_MS */
	struct __kernel_timespec accept_pause;
	uint64_t accept_errors;	    /* since the last accept error line */
	uint64_t accept_err_log_ms; /* when that line was written */
	const char *fail_path;	    /* test hook: fail the loop once this file exists */
	int fail_injected;
	/* Provided buffers. */
	struct io_uring_buf_ring *br;
	uint8_t *bufs; /* owned: nbufs * buf_size bytes */
	uint32_t buf_size;
	uint32_t nbufs;
	uint16_t *refs;	   /* per buffer: holders (input queue + slices) */
	uint16_t *next;	   /* per buffer: next in a connection's input queue */
	uint32_t *len;	   /* per buffer: bytes the kernel put in it */
	uint32_t returned; /* buffers added to the ring since the last advance */
	uint8_t *plain;	   /* owned: nplain * PLAIN_SIZE bytes of decrypted input */
	uint32_t nplain;
	uint16_t *plain_free; /* owned: stack of free plaintext buffer ids */
	uint32_t nplain_free;
	/* Connections. */
	struct conn *conns; /* owned: cap entries */
	uint32_t cap;
	uint32_t free_head; /* free slots, linked through next_dirty */
	uint32_t nopen;
	uint32_t dirty_head;
	uint32_t starved_head;
	uint32_t wait_head; /* connections waiting for a plaintext buffer */
	struct timer_wheel wheel;
	uint64_t now_s;
	struct __kernel_timespec tick;
	/* Writers' wake-up. */
	int wake_fd;
	uint64_t wake_val;
	uint32_t msgs_out;    /* msgs with the writers: the shard ends only at 0 */
	uint32_t held;	      /* buffers not in the kernel's ring */
	uint32_t ntls;	      /* connections with c->tls */
	uint64_t send_queued; /* bytes of sends in flight not yet completed */
	/* Stop. */
	_Atomic int stop_req;
	_Atomic int failed;
	int stopping;
	uint64_t stop_deadline;
	_Alignas(64) struct shard_stats stats;
	_Alignas(64) struct shard_gauges gauges; /* published by pass_end */
};

/*
 * Connections per client address, shared by all shards: a fixed table of
 * counters indexed by a hash of the IPv4 address or of the IPv6 /64 (one
 * host's usual allocation). Two addresses may share a counter, which only
 * ever makes the limit stricter for both; no lock, no allocation.
 */
#define IP_BUCKETS 65536u
static _Atomic uint16_t ip_conns[IP_BUCKETS];

static inline uint64_t ud(unsigned op, uint32_t slot, uint32_t gen)
{
	return (uint64_t)op << 56 | (uint64_t)(slot & 0xffffffu) << 32 | gen;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t real_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void stat_add(uint64_t *c, uint64_t n)
{
	atomic_store_explicit((_Atomic uint64_t *)c,
			      atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static struct io_uring_sqe *sqe_get(struct shard *sh)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&sh->ring);
	for (int tries = 0; !sqe && tries < 16; tries++) {
		io_uring_submit(&sh->ring);
		sqe = io_uring_get_sqe(&sh->ring);
	}
	ASSERT(sqe); /* the SQ drains on submit */
	return sqe;
}

/* ---- buffers ---------------------------------------------------------- */

/* Ids [0, nbufs) are lent by the kernel (the provided-buffer ring); ids
 * [nbufs, nbufs + nplain) are the shard's own, for decrypted TLS input. */
static uint8_t *buf_addr(struct shard *sh, uint16_t bid)
{
	if (bid < sh->nbufs)
		return sh->bufs + (size_t)bid * sh->buf_size;
	return sh->plain + (size_t)(bid - sh->nbufs) * PLAIN_SIZE;
}

static uint32_t buf_cap(struct shard *sh, uint16_t bid)
{
	return bid < sh->nbufs ? sh->buf_size : PLAIN_SIZE;
}

/* A free plaintext buffer with one reference, or BUF_NONE. */
static uint16_t plain_get(struct shard *sh)
{
	if (sh->nplain_free == 0)
		return BUF_NONE;
	uint16_t b = sh->plain_free[--sh->nplain_free];
	ASSERT(sh->refs[b] == 0);
	sh->refs[b] = 1;
	return b;
}

static void buf_put(struct shard *sh, uint16_t bid)
{
	ASSERT(bid < sh->nbufs + sh->nplain && sh->refs[bid] > 0);
	if (--sh->refs[bid] > 0)
		return;
	if (bid >= sh->nbufs) {
		sh->plain_free[sh->nplain_free++] = bid;
		return;
	}
	sh->held--;
	io_uring_buf_ring_add(sh->br, buf_addr(sh, bid), sh->buf_size, bid,
			      io_uring_buf_ring_mask(sh->nbufs), (int)sh->returned);
	sh->returned++;
}

static void bufq_push(struct shard *sh, struct bufq *q, uint16_t b, uint32_t len)
{
	sh->len[b] = len;
	sh->next[b] = BUF_NONE;
	if (q->tail != BUF_NONE)
		sh->next[q->tail] = b;
	else
		q->head = b;
	q->tail = b;
	q->n++;
}

/* Drops the head buffer (all of it was consumed). */
static void bufq_pop(struct shard *sh, struct bufq *q)
{
	uint16_t b = q->head;
	q->head = sh->next[b];
	if (q->head == BUF_NONE)
		q->tail = BUF_NONE;
	q->n--;
	q->off = 0;
	buf_put(sh, b);
}

/* Drops everything queued; returns the bytes that were not consumed. */
static uint64_t bufq_drop(struct shard *sh, struct bufq *q)
{
	uint64_t bytes = 0;
	for (uint32_t n = 0; q->head != BUF_NONE && n <= sh->nbufs + sh->nplain; n++) {
		bytes += sh->len[q->head] - q->off;
		bufq_pop(sh, q);
	}
	q->head = q->tail = BUF_NONE;
	q->n = 0;
	q->off = 0;
	return bytes;
}

static void bufs_publish(struct shard *sh)
{
	if (sh->returned) {
		io_uring_buf_ring_advance(sh->br, (int)sh->returned);
		sh->returned = 0;
	}
}

/* ---- envelope and msgs ------------------------------------------------- */

static void env_put(struct env_box *b)
{
	if (b && --b->refs == 0) {
		free(b->env.rcpts);
		free(b);
	}
}

/* Drops m's slices: its references to buffers, its copy chunks. */
static void msg_slices_drop(struct shard *sh, struct msg *m)
{
	for (uint32_t i = 0; i < m->nslices; i++)
		if (m->slices[i].buf != SLICE_COPY)
			buf_put(sh, m->slices[i].buf);
	m->nslices = 0;
	m->nbufs = 0;
	m->part_bytes = 0;
	struct copy_chunk *k = m->copies;
	m->copies = NULL;
	while (k) {
		struct copy_chunk *next = k->next;
		free(k);
		k = next;
	}
}

static void msg_free(struct shard *sh, struct msg *m)
{
	msg_slices_drop(sh, m);
	if (m->env)
		env_put((struct env_box *)(void *)m->env);
	free(m->slices);
	free(m);
}

static struct msg *msg_new(struct shard *sh, struct conn *c, uint32_t part, uint64_t offset)
{
	struct msg *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->kind = MSG_PART;
	m->shard = (uint16_t)sh->id;
	m->writer = c->writer;
	m->conn_slot = (uint32_t)(c - sh->conns);
	m->conn_gen = c->gen;
	m->part = part;
	m->body_offset = offset;
	m->env = &c->env->env;
	c->env->refs++;
	return m;
}

/* Hands m to its writer. 0, or -EAGAIN when the ring is full (m untouched). */
static int submit(struct shard *sh, struct msg *m)
{
	int rc = writer_submit(sh->ws, sh->id, m);
	if (rc == 0) {
		sh->msgs_out++;
		if (m->kind == MSG_PART)
			stat_add(&sh->stats.parts, 1);
	}
	return rc;
}

/*
 * Drops the transaction's body. If parts already went to the writer it is
 * told (MSG_ABORT); if its ring is full the abort is simply not sent: the
 * parts then stay orphans in the spool, which readers ignore (no FINAL).
 */
static void body_drop(struct shard *sh, struct conn *c)
{
	struct msg *m = c->msg;
	if (!m)
		return;
	c->msg = NULL;
	if (m->part == 0) {
		msg_free(sh, m);
		return;
	}
	msg_slices_drop(sh, m);
	m->kind = MSG_ABORT;
	if (submit(sh, m) != 0)
		msg_free(sh, m);
}

static void txn_end(struct shard *sh, struct conn *c)
{
	body_drop(sh, c);
	env_put(c->env);
	c->env = NULL;
}

/* ---- SMTP hooks -------------------------------------------------------- */

static enum smtp_verdict hook_helo(void *ctx, const char *name, size_t len, bool esmtp)
{
	struct conn *c = ctx;
	(void)esmtp;
	char *h = realloc(c->helo, len + 1);
	if (!h)
		return SMTP_V_TEMPFAIL;
	memcpy(h, name, len);
	h[len] = 0;
	c->helo = h;
	return SMTP_V_OK;
}

static struct shard *conn_shard(struct conn *c);

static void make_qid(struct shard *sh, char *qid)
{
	/* time in µs (base 62, 10 chars) + shard (2) + counter (4): unique per process
	 * and across restarts unless the clock goes back. */
	static const char digits[] =
	    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	static _Thread_local uint32_t counter;
	uint64_t t = real_us();
	char *p = qid + QID_LEN;
	*p = 0;
	uint32_t n = counter++;
	for (int i = 0; i < 4; i++, n /= 62)
		*--p = digits[n % 62];
	uint32_t s = sh->id;
	for (int i = 0; i < 2; i++, s /= 62)
		*--p = digits[s % 62];
	for (int i = 0; i < 10; i++, t /= 62)
		*--p = digits[t % 62];
}

static enum smtp_verdict hook_mail(void *ctx, const struct addr *from, uint32_t env_flags)
{
	struct conn *c = ctx;
	struct shard *sh = conn_shard(c);
	ASSERT(!c->env && !c->msg);
	struct env_box *b = calloc(1, sizeof(*b));
	if (!b)
		return SMTP_V_TEMPFAIL;
	b->refs = 1;
	struct envelope *e = &b->env;
	make_qid(sh, e->qid);
	e->time_us = real_us();
	memcpy(e->client_addr, c->addr, sizeof(e->client_addr));
	e->client_port = c->port;
	snprintf(e->helo, sizeof(e->helo), "%s", c->helo ? c->helo : "");
	snprintf(e->myhostname, sizeof(e->myhostname), "%s", sh->cfg->myhostname);
	e->flags = env_flags;
	if (c->tls_state == TLS_UP)
		tls_describe(c->tls, e->tls, sizeof(e->tls), NULL);
	memcpy(e->from, from->mailbox, from->len + 1);
	c->env = b;
	c->writer = (uint16_t)(sh->next_writer++ % sh->nwriters);
	c->mail_ms = mono_ms();
	return SMTP_V_OK;
}

static enum smtp_verdict hook_rcpt(void *ctx, const struct addr *to)
{
	struct conn *c = ctx;
	struct envelope *e = &c->env->env;
	size_t need = e->rcpts_len + to->len + 1;
	if (need > e->rcpts_cap) {
		size_t cap = e->rcpts_cap ? e->rcpts_cap * 2 : 256;
		while (cap < need)
			cap *= 2;
		char *p = realloc(e->rcpts, cap);
		if (!p)
			return SMTP_V_TEMPFAIL;
		e->rcpts = p;
		e->rcpts_cap = (uint32_t)cap;
	}
	memcpy(e->rcpts + e->rcpts_len, to->mailbox, to->len + 1);
	e->rcpts_len += (uint32_t)to->len + 1;
	e->nrcpt++;
	return SMTP_V_OK;
}

static enum smtp_verdict hook_data_start(void *ctx)
{
	struct conn *c = ctx;
	struct shard *sh = conn_shard(c);
	c->msg = msg_new(sh, c, 0, 0);
	if (!c->msg) {
		txn_end(sh, c);
		return SMTP_V_TEMPFAIL;
	}
	return SMTP_V_OK;
}

/* Sends the gathered slices as a part; the next part starts empty. */
static int flush_part(struct shard *sh, struct conn *c)
{
	struct msg *m = c->msg;
	struct msg *next = msg_new(sh, c, m->part + 1, msg_total_bytes(m));
	if (!next)
		return -ENOMEM;
	if (submit(sh, m) != 0) {
		msg_free(sh, next);
		return -EAGAIN;
	}
	c->msg = next;
	return 0;
}

/* Makes room for one more slice in m. 0 or -ENOMEM. */
static int slice_room(struct msg *m)
{
	if (m->nslices < m->slices_cap)
		return 0;
	uint32_t cap = m->slices_cap ? m->slices_cap * 2 : 16;
	struct slice *s = realloc(m->slices, cap * sizeof(*s));
	if (!s)
		return -ENOMEM;
	m->slices = s;
	m->slices_cap = cap;
	return 0;
}

/* A message the receiver cannot take (the client gets a 4xx): why, in the log. */
static void body_refused(struct shard *sh, struct conn *c, const char *why)
{
	const struct envelope *e = &c->env->env;
	stat_add(&sh->stats.msgs_failed, 1);
	log_line("refused qid=%s shard=%u writer=%u client=%s port=%u size=%llu reason=\"%s\"",
		 e->qid, sh->id, c->writer, e->client_addr, e->client_port,
		 c->msg ? (unsigned long long)msg_total_bytes(c->msg) : 0ULL, why);
}

/*
 * Appends p[0..len) to m's newest copy chunk (a new one when it is full) and
 * to the slice that ends there, or a new slice. 0 or -ENOMEM.
 */
static int copy_append(struct shard *sh, struct msg *m, const uint8_t *p, size_t len)
{
	struct copy_chunk *k = m->copies;
	if (!k || k->cap - k->len < len) {
		uint32_t cap = len > COPY_CHUNK_BYTES ? (uint32_t)len : COPY_CHUNK_BYTES;
		k = malloc(sizeof(*k) + cap);
		if (!k)
			return -ENOMEM;
		k->next = m->copies;
		k->len = 0;
		k->cap = cap;
		m->copies = k;
	}
	uint8_t *dst = k->data + k->len;
	memcpy(dst, p, len);
	k->len += (uint32_t)len;
	stat_add(&sh->stats.body_copied, len);
	struct slice *last = m->nslices ? &m->slices[m->nslices - 1] : NULL;
	if (last && last->buf == SLICE_COPY && last->base + last->len == dst) {
		last->len += (uint32_t)len;
		return 0;
	}
	if (slice_room(m) != 0)
		return -ENOMEM;
	m->slices[m->nslices++] =
	    (struct slice){.base = dst, .len = (uint32_t)len, .buf = SLICE_COPY};
	return 0;
}

/*
 * A run of content from the decoder, into the message as a slice. A run
 * that continues the last slice extends it. A byte the decoder inserted (the
 * CR of a bare LF, a kept dot) is copied. A short run cut out of the same
 * buffer, or one after a copied stretch, is a fragment: it gets a slice of
 * its own while the message has few slices per buffer (a dot-stuffed line
 * here and there costs nothing), and is copied once it has many, so that
 * bare-LF text costs a few slices per buffer, not two per line. Anything
 * else (the first run of a new buffer, a long run) is a new slice.
 */
static int body_add(struct shard *sh, struct conn *c, const uint8_t *p, size_t len)
{
	struct msg *m = c->msg;
	struct slice *last = m->nslices ? &m->slices[m->nslices - 1] : NULL;
	if (body_is_static(p))
		return copy_append(sh, m, p, len);
	/* Content always comes straight from a buffer of the pools: the stash
	 * only ever holds one command line. */
	uint16_t buf = c->feed_buf;
	ASSERT(buf != BUF_NONE);
	ASSERT(p >= buf_addr(sh, buf) && p + len <= buf_addr(sh, buf) + buf_cap(sh, buf));
	if (last && last->buf == buf && last->base + last->len == p) {
		last->len += (uint32_t)len;
		return 0;
	}
	bool fragment = last && len < COPY_RUN_MAX && (last->buf == buf || last->buf == SLICE_COPY);
	if (fragment && m->nslices >= 2 * m->nbufs + FRAG_SLICES_FREE)
		return copy_append(sh, m, p, len);
	if (slice_room(m) != 0)
		return -ENOMEM;
	m->slices[m->nslices++] = (struct slice){.base = p, .len = (uint32_t)len, .buf = buf};
	sh->refs[buf]++;
	/* Runs come in input order: a buffer's slices follow each other. */
	if (m->nbufs == 0 || m->last_buf != buf)
		m->nbufs++;
	m->last_buf = buf;
	return 0;
}

static int hook_body(void *ctx, const uint8_t *p, size_t len)
{
	struct conn *c = ctx;
	struct shard *sh = conn_shard(c);
	struct msg *m = c->msg;

	int rc = body_add(sh, c, p, len);
	if (rc != 0) {
		body_refused(sh, c, "out of memory");
		return rc;
	}
	m->part_bytes += len;
	/* Bound the bytes, the buffers and the slices a message holds (slow
	 * clients fill a buffer a few bytes at a time). */
	if (m->part_bytes >= sh->cfg->body_flush_bytes || m->nbufs >= PART_BUFS_MAX ||
	    m->nslices >= PART_SLICES_MAX) {
		rc = flush_part(sh, c);
		/* A full ring: keep gathering, but not without bound. */
		if (rc == -EAGAIN && m->part_bytes < 4 * sh->cfg->body_flush_bytes &&
		    m->nbufs < 4 * PART_BUFS_MAX && m->nslices < 4 * PART_SLICES_MAX)
			return 0;
		if (rc != 0)
			body_refused(sh, c, rc == -EAGAIN ? "writer ring full" : "out of memory");
		return rc;
	}
	return 0;
}

static enum smtp_verdict hook_data_end(void *ctx)
{
	struct conn *c = ctx;
	struct shard *sh = conn_shard(c);
	struct msg *m = c->msg;
	m->kind = MSG_FINAL;
	if (submit(sh, m) != 0) {
		m->kind = MSG_PART;
		stat_add(&sh->stats.ring_full, 1);
		body_refused(sh, c, "writer ring full");
		txn_end(sh, c);
		return SMTP_V_BUSY;
	}
	c->msg = NULL; /* with the writer now; comes back through reap */
	return SMTP_V_DEFER;
}

static void hook_abort(void *ctx)
{
	struct conn *c = ctx;
	txn_end(conn_shard(c), c);
}

static const struct smtp_hooks hooks = {
    .helo = hook_helo,
    .mail = hook_mail,
    .rcpt = hook_rcpt,
    .data_start = hook_data_start,
    .body = hook_body,
    .data_end = hook_data_end,
    .abort = hook_abort,
};

/* ---- connections ------------------------------------------------------- */

/* The shard of a connection: conns live in their shard's table. Each shard
 * thread handles only its own, so a thread-local pointer is enough. */
static _Thread_local struct shard *current;

static struct shard *conn_shard(struct conn *c)
{
	(void)c;
	return current;
}

/* Links c onto one of the shard's lists of slots (dirty, starved, waiting
 * for a plaintext buffer); flag marks membership so a slot is on it once.
 * pass_end walks and empties the lists. */
static void list_push(struct shard *sh, uint32_t *head, struct conn *c, uint16_t flag,
		      uint32_t *link)
{
	if (c->flags & flag)
		return;
	c->flags |= flag;
	*link = *head;
	*head = (uint32_t)(c - sh->conns);
}

static void mark_dirty(struct shard *sh, struct conn *c)
{
	list_push(sh, &sh->dirty_head, c, C_DIRTY, &c->next_dirty);
}

static void starve(struct shard *sh, struct conn *c)
{
	list_push(sh, &sh->starved_head, c, C_STARVED, &c->next_starved);
}

static void arm_recv(struct shard *sh, struct conn *c)
{
	uint32_t slot = (uint32_t)(c - sh->conns);
	struct io_uring_sqe *sqe = sqe_get(sh);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	io_uring_sqe_set_data64(sqe, ud(OP_RECV, slot, c->gen));
	c->flags |= C_RECV;
	c->nops++;
}

static void cancel_recv(struct shard *sh, struct conn *c)
{
	uint32_t slot = (uint32_t)(c - sh->conns);
	struct io_uring_sqe *sqe = sqe_get(sh);
	io_uring_prep_cancel64(sqe, ud(OP_RECV, slot, c->gen), 0);
	io_uring_sqe_set_data64(sqe, ud(OP_CANCEL, slot, c->gen));
	c->nops++;
}

static uint8_t *out_block(void)
{
	return malloc(OUT_CAP);
}

/*
 * Commands: a command line must arrive whole within command_timeout of the
 * server becoming ready for it (the greeting, the reply to the line before
 * it, the end of content or of the TLS handshake). Part of a line does not
 * move the deadline, so a client sending a byte now and then is cut off
 * like a silent one, while each whole command starts the clock again.
 * The TLS handshake: done within tls_handshake_timeout of its start.
 * Content (DATA, BDAT): with min_data_rate, a deadline per request that
 * only the content moves on, data_timeout plus one second per
 * min_data_rate bytes since the content began (Postfix's
 * smtpd_min_data_rate), so a client trickling a byte now and then cannot
 * hold the connection; without, data_timeout from the last input.
 * A past deadline stays put (timer.c files it for the next tick).
 */
static void set_deadline(struct shard *sh, struct conn *c)
{
	uint32_t slot = (uint32_t)(c - sh->conns);
	unsigned rate = sh->cfg->min_data_rate;
	if (!smtp_in_content(&c->smtp)) {
		c->content_start_s = 0;
		if (c->tls_state == TLS_HANDSHAKE) {
			/* The whole handshake within tls_handshake_timeout of its start. */
			c->cmd_start_s = 0;
			if (!c->tls_start_s)
				c->tls_start_s = sh->now_s;
			timer_set(&sh->wheel, slot,
				  c->tls_start_s + sh->cfg->tls_handshake_timeout);
			return;
		}
		if (c->smtp.state == SMTP_S_WAIT) {
			/* A message with the writer is not the client's delay; its
			 * clock starts when the reply is out. */
			c->cmd_start_s = 0;
			timer_set(&sh->wheel, slot, sh->now_s + sh->cfg->command_timeout);
			return;
		}
		/* Bytes that ended no line (a partial line, an overlong one being
		 * dropped, part of a TLS record) leave the clock running. */
		if (!c->cmd_start_s || c->smtp.lines != c->lines_seen || !(c->flags & C_RX)) {
			c->cmd_start_s = sh->now_s;
			c->lines_seen = c->smtp.lines;
			c->flags &= ~C_RX;
		}
		timer_set(&sh->wheel, slot, c->cmd_start_s + sh->cfg->command_timeout);
		return;
	}
	c->cmd_start_s = 0;
	if (!rate) {
		timer_set(&sh->wheel, slot, sh->now_s + sh->cfg->data_timeout);
		return;
	}
	if (!c->content_start_s)
		c->content_start_s = sh->now_s;
	uint64_t d = c->content_start_s + sh->cfg->data_timeout + c->smtp.body_bytes / rate;
	timer_set(&sh->wheel, slot, d);
}

/* Drops the unread input. */
static void input_drop(struct shard *sh, struct conn *c)
{
	bufq_drop(sh, &c->in);
	bufq_drop(sh, &c->ct);
	c->line_len = 0;
}

static void conn_log_end(struct shard *sh, struct conn *c)
{
	char helo[LOG_CLIENT_TEXT_MAX * 4 + 8];
	log_escape(helo, sizeof(helo), c->helo ? c->helo : "", c->helo ? strlen(c->helo) : 0,
		   LOG_CLIENT_TEXT_MAX);
	char tls[TLS_DESC_MAX] = "none";
	int resumed = 0;
	if (c->tls_state == TLS_UP)
		tls_describe(c->tls, tls, sizeof(tls), &resumed);
	log_line("session end shard=%u client=%s port=%u helo=\"%s\" msgs=%u errors=%u "
		 "tls=\"%s\"%s duration_ms=%llu reason=%s",
		 sh->id, c->addr, c->port, helo, c->nmsgs, c->smtp.errors, tls,
		 resumed ? " tls_resumed=yes" : "", (unsigned long long)(mono_ms() - c->start_ms),
		 c->reason ? c->reason : "close");
}

/* Frees the slot once nothing is in flight for it. */
static void conn_release(struct shard *sh, struct conn *c)
{
	/* A slot on the dirty or starved list is released by pass_end, which
	 * walks those lists: their links must not be reused before. */
	if (c->nops > 0 || !c->open || (c->flags & (C_DIRTY | C_STARVED | C_PLAIN_WAIT)))
		return;
	uint32_t slot = (uint32_t)(c - sh->conns);
	close(c->fd);
	free(c->line);
	free(c->out);
	if (c->snd) {
		ASSERT(sh->send_queued >= c->snd_len - c->snd_off);
		sh->send_queued -= c->snd_len - c->snd_off;
	}
	free(c->snd);
	free(c->helo);
	if (c->tls)
		sh->ntls--;
	tls_conn_free(c->tls);
	c->tls = NULL;
	c->tls_state = TLS_NONE;
	c->line = c->out = c->snd = NULL;
	c->helo = NULL;
	c->open = 0;
	c->gen++;
	c->next_dirty = sh->free_head;
	sh->free_head = slot;
	sh->nopen--;
	stat_add(&sh->stats.conns_closed, 1);
}

/* The session is over: its transaction is dropped, its input too, its end
 * is logged, and its address no longer counts toward max_connections_per_ip. */
static void conn_finish(struct shard *sh, struct conn *c, const char *reason)
{
	if (!c->reason)
		c->reason = reason;
	/* A message with the writer keeps its envelope (refs) and its buffers;
	 * its completion finds the slot gone and only logs. */
	if (c->smtp.state != SMTP_S_WAIT)
		smtp_close(&c->smtp);
	txn_end(sh, c);
	input_drop(sh, c);
	conn_log_end(sh, c);
	if (c->ip_bucket < IP_BUCKETS)
		atomic_fetch_sub_explicit(&ip_conns[c->ip_bucket], 1, memory_order_relaxed);
	c->ip_bucket = IP_BUCKETS;
}

/* Shuts the connection down now; the slot is freed when its ops complete. */
static void conn_close(struct shard *sh, struct conn *c, const char *reason)
{
	if (c->flags & C_SHUT)
		return;
	if (!(c->flags & C_LINGER))
		conn_finish(sh, c, reason);
	c->flags |= C_SHUT;
	timer_cancel(&sh->wheel, (uint32_t)(c - sh->conns));
	shutdown(c->fd, SHUT_RDWR); /* ends the multishot recv and any send */
	conn_release(sh, c);
}

/*
 * Lingering close (as nginx's lingering_close and Postfix do): the last
 * reply is sent, a FIN follows it (SHUT_WR), and what the client still sends
 * is read and dropped until it closes, for at most LINGER_S seconds and
 * LINGER_BYTES (past which only replies not yet acknowledged keep it open,
 * within LINGER_S). Closing at once with unread input would make the kernel
 * answer with a reset, and a client still sending (a trickle, a pipelined
 * flood) would see its send fail, or its unread 421 destroyed, before it
 * reads why it was cut off. The slot stays taken meanwhile (bounded by
 * both limits); the address no longer counts toward max_connections_per_ip.
 */
static void conn_linger(struct shard *sh, struct conn *c)
{
	if (c->flags & C_PEER_EOF) {
		conn_close(sh, c, NULL); /* the client sends nothing more */
		return;
	}
	conn_finish(sh, c, NULL);
	c->flags = (uint16_t)((c->flags | C_LINGER) & ~C_PAUSED);
	c->linger_bytes = 0;
	shutdown(c->fd, SHUT_WR);
	timer_set(&sh->wheel, (uint32_t)(c - sh->conns), sh->now_s + LINGER_S);
	if (!(c->flags & (C_RECV | C_STARVED)))
		arm_recv(sh, c);
	stat_add(&sh->stats.conns_lingered, 1);
}

/*
 * The linger ran out with the client still sending: the close resets the
 * connection (SO_LINGER 0). A plain close would not always: the recv drains
 * what is queued after shutdown, and Linux opens no window once the read
 * side is shut, so a client that had filled it is left probing a zero
 * window of the closed socket (FIN-WAIT-2) until tcp_fin_timeout, its sends
 * blocked, never told.
 */
static void linger_cut(struct shard *sh, struct conn *c)
{
	struct linger l = {.l_onoff = 1, .l_linger = 0};
	(void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	conn_close(sh, c, NULL);
}

/*
 * Whether the client has acknowledged all that was sent to it. A reset
 * discards what the kernel still holds of the replies, so a slow reader of
 * a long pipelined burst would lose the end of it, its 221 or 421 among
 * them. SIOCOUTQ counts the FIN too: 1 left is the FIN alone.
 */
static bool replies_acked(const struct conn *c)
{
	int left = 0;
	if (ioctl(c->fd, SIOCOUTQ, &left) != 0)
		return false; /* unknown: keep what may be unread */
	return left <= 1;
}

/*
 * LINGER_S ran out. A client that sent nothing since the last reply cannot
 * have filled the window, so it gets the plain close; so does one that has
 * not acknowledged all the replies yet, which the kernel goes on delivering
 * after the close (it resets the connection itself if more input comes).
 */
static void linger_expire(struct shard *sh, struct conn *c)
{
	if (c->linger_bytes > 0 && replies_acked(c))
		linger_cut(sh, c);
	else
		conn_close(sh, c, NULL);
}

/* Input of a lingering connection: n bytes were dropped, or (n = 0) its recv
 * ended with res. Closes at the client's EOF or an error, resets past
 * LINGER_BYTES once the replies are acknowledged (until then the input is
 * dropped as before, within LINGER_S). */
static void linger_input(struct shard *sh, struct conn *c, uint32_t n, int res, bool more)
{
	if (c->linger_bytes <= LINGER_BYTES)
		c->linger_bytes += n; /* n is one receive buffer at most: no overflow */
	if (n > 0 && (c->linger_bytes <= LINGER_BYTES || !replies_acked(c))) {
		if (!more)
			arm_recv(sh, c);
		return;
	}
	if (res == -ENOBUFS) {
		starve(sh, c); /* re-armed when buffers return */
		return;
	}
	if (res == -ECANCELED && !(c->flags & C_RECV)) {
		arm_recv(sh, c); /* the pause's cancel, from before the linger */
		return;
	}
	if (n > 0)
		linger_cut(sh, c); /* past LINGER_BYTES */
	else
		conn_close(sh, c, NULL);
}

/* Queues the send of what is in out, if nothing is in flight. */
static void send_block(struct shard *sh, struct conn *c, uint8_t *p, uint32_t len)
{
	ASSERT(!c->snd);
	c->snd = p;
	c->snd_len = len;
	c->snd_off = 0;
	sh->send_queued += len;
	struct io_uring_sqe *sqe = sqe_get(sh);
	io_uring_prep_send(sqe, c->fd, c->snd, c->snd_len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud(OP_SEND, (uint32_t)(c - sh->conns), c->gen));
	c->flags |= C_SEND;
	c->nops++;
}

/*
 * A client with Nagle's algorithm on (Postfix's smtp, Python's smtplib)
 * holds its next command until its last handshake record is acknowledged.
 * Data of ours carries that ACK (the TLS 1.3 ticket goes out after the
 * client's Finished, as OpenSSL servers send it); when none is about to go
 * out (a TLS 1.2 resumption ends with the client's Finished), the kernel
 * would delay the ACK by about 40 ms: TCP_QUICKACK sends it now. A client
 * that sent its next command with its Finished gets the ACK with the reply.
 */
static void ack_now(struct conn *c)
{
	c->flags &= (uint16_t)~C_ACK_DUE;
	size_t tlen = 0;
	if (c->out_len > 0 || (c->tls && tls_output(c->tls, &tlen) && tlen > 0))
		return;
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

/* Queues the send of pending replies (encrypted once TLS is up), if nothing
 * is in flight; closes when that was the last of a closing session. */
static void conn_flush(struct shard *sh, struct conn *c)
{
	if (c->flags & (C_SHUT | C_LINGER))
		return;
	if (c->tls_state == TLS_UP && c->out_len > 0) {
		if (tls_write(c->tls, c->out, c->out_len) != TLS_OK) {
			log_line("tls error client=%s port=%u error=\"%s\"", c->addr, c->port,
				 tls_error(c->tls));
			conn_close(sh, c, "tls-error");
			return;
		}
		c->out_len = 0;
	}
	if (c->tls_state == TLS_UP && (c->flags & (C_CLOSE | C_NOTIFIED)) == C_CLOSE) {
		/* The last replies are encrypted: close_notify follows them. */
		tls_close_notify(c->tls);
		c->flags |= C_NOTIFIED;
	}
	if (c->flags & C_SEND)
		return;
	size_t tlen = 0;
	uint8_t *t = NULL;
	if (c->flags & C_ACK_DUE)
		ack_now(c);
	if (c->out_len > 0) {
		/* Plaintext, or the 220 to STARTTLS that precedes the handshake. */
		uint8_t *p = c->out;
		uint32_t n = c->out_len;
		c->out = NULL;
		c->out_len = 0;
		send_block(sh, c, p, n);
	} else if (c->tls && (t = tls_output_take(c->tls, &tlen)) != NULL) {
		/* The send owns the buffer: wolfSSL appends to a new one meanwhile. */
		send_block(sh, c, t, (uint32_t)tlen);
	} else if (c->flags & C_CLOSE) {
		conn_linger(sh, c);
	}
}

/* Feeds buffered input to the engine until it is used up or the engine waits. */
static void conn_process(struct shard *sh, struct conn *c);

static int ensure_out(struct conn *c)
{
	if (!c->out) {
		c->out = out_block();
		if (!c->out)
			return -ENOMEM;
	}
	return 0;
}

/* Appends the bytes of in up to the first LF (or until full) to the line stash. */
static size_t stash_take(struct shard *sh, struct conn *c, const uint8_t *in, size_t len)
{
	size_t cap = smtp_line_max(sh->sconf);
	size_t room = cap - c->line_len;
	size_t n = len < room ? len : room;
	const uint8_t *lf = memchr(in, '\n', n);
	if (lf)
		n = (size_t)(lf - in) + 1;
	memcpy(c->line + c->line_len, in, n);
	c->line_len = (uint16_t)(c->line_len + n);
	return n;
}

static bool stash_ready(struct shard *sh, const struct conn *c)
{
	return c->line_len == smtp_line_max(sh->sconf) ||
	       (c->line_len && c->line[c->line_len - 1] == '\n');
}

static enum smtp_result feed(struct shard *sh, struct conn *c, const uint8_t *p, size_t len,
			     size_t *used)
{
	struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
	enum smtp_result r = smtp_feed(&c->smtp, p, len, used, &out);
	c->out_len = (uint32_t)out.len;
	(void)sh;
	return r;
}

/* Handles what a feed returned. true = go on feeding. */
static bool after_feed(struct shard *sh, struct conn *c, enum smtp_result r)
{
	switch (r) {
	case SMTP_MORE:
		return true;
	case SMTP_BLOCKED:
		return false; /* end of data with the writer, or out is full */
	case SMTP_STARTTLS:
		return false; /* conn_process starts TLS once the loop is left */
	case SMTP_CLOSE:
		if (!c->reason)
			c->reason =
			    c->smtp.errors >= sh->cfg->error_limit ? "too-many-errors" : "quit";
		c->flags |= C_CLOSE;
		input_drop(sh, c);
		return false;
	}
	return false;
}

static void plain_wait(struct shard *sh, struct conn *c)
{
	list_push(sh, &sh->wait_head, c, C_PLAIN_WAIT, &c->next_wait);
}

/* The handshake is done: the session starts again inside TLS (RFC 3207 4.2). */
static void tls_up(struct shard *sh, struct conn *c)
{
	int resumed = 0;
	char d[TLS_DESC_MAX];
	c->tls_state = TLS_UP;
	tls_describe(c->tls, d, sizeof(d), &resumed);
	stat_add(&sh->stats.tls_handshakes, 1);
	if (resumed)
		stat_add(&sh->stats.tls_resumed, 1);
	if (tls_in_place(c->tls))
		stat_add(&sh->stats.tls_in_place, 1);
	smtp_tls_started(&c->smtp);
	/* The client's last handshake record must be acknowledged at once:
	 * conn_flush does it when nothing of ours goes out to carry the ACK. */
	c->flags |= C_ACK_DUE;
	mark_dirty(sh, c);
	if (c->implicit_tls && ensure_out(c) == 0) {
		struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
		smtp_greet(&c->smtp, &out);
		c->out_len = (uint32_t)out.len;
	}
}

/* The first TLS_SEGS_MAX buffers of the ciphertext queue, as segments. */
static unsigned ct_segs(struct shard *sh, const struct conn *c, struct tls_seg *seg)
{
	unsigned k = 0;
	uint32_t off = c->ct.off;
	for (uint16_t b = c->ct.head; b != BUF_NONE && k < TLS_SEGS_MAX; b = sh->next[b]) {
		seg[k++] = (struct tls_seg){buf_addr(sh, b) + off, sh->len[b] - off};
		off = 0;
	}
	return k;
}

/* Drops used bytes from the front of the ciphertext queue. */
static void ct_consume(struct shard *sh, struct conn *c, size_t used)
{
	for (uint32_t n = 0; used > 0 && c->ct.head != BUF_NONE && n <= TLS_SEGS_MAX; n++) {
		size_t left = sh->len[c->ct.head] - c->ct.off;
		if (used < left) {
			c->ct.off += (uint32_t)used;
			return;
		}
		used -= left;
		bufq_pop(sh, &c->ct);
	}
	ASSERT(used == 0);
}

static bool ring_low(const struct shard *sh)
{
	return sh->held + sh->nbufs / 8 >= sh->nbufs;
}

/*
 * A TLS record not yet whole waits in its receive buffers, to be opened
 * in place when the rest comes. It may pin two buffers; past that, or when
 * the ring runs low, or once some of it is already kept, its bytes move
 * into the session and the buffers go back.
 */
static void tls_hold(struct shard *sh, struct conn *c, bool force)
{
	if (c->ct.head == BUF_NONE || !(force || c->ct.n >= 2 || tls_holding(c->tls)))
		return;
	struct tls_seg seg[TLS_SEGS_MAX];
	tls_input(c->tls, seg, ct_segs(sh, c, seg));
	if (tls_keep_input(c->tls) == 0) {
		size_t moved = tls_input_used(c->tls);
		stat_add(&sh->stats.tls_held_bytes, moved);
		ct_consume(sh, c, moved);
	}
}

/*
 * A fatal TLS error: the alert wolfSSL or record.c queued (RFC 8446 6.2)
 * goes out, then the connection closes; nothing is written after it (no
 * reply, no close_notify). A session whose message is with its writer just
 * closes: the writer's reply must not follow the alert.
 */
static void tls_fail(struct shard *sh, struct conn *c, const char *reason)
{
	size_t tlen = 0;
	(void)tls_output(c->tls, &tlen);
	if (tlen == 0 || c->smtp.state == SMTP_S_WAIT) {
		conn_close(sh, c, reason);
		return;
	}
	if (!c->reason)
		c->reason = reason;
	c->flags |= C_CLOSE | C_NOTIFIED;
	c->out_len = 0;
	input_drop(sh, c);
	mark_dirty(sh, c);
	timer_set(&sh->wheel, (uint32_t)(c - sh->conns), sh->now_s + 5);
}

/*
 * Runs TLS over the ciphertext queue: the handshake, then decryption into
 * plaintext buffers queued for the engine. Receive buffers go back as soon
 * as their bytes are used. *starved: what is queued is not a whole record
 * (only more input helps). false = the connection was closed.
 */
static bool tls_pump(struct shard *sh, struct conn *c, bool *starved)
{
	for (uint32_t guard = 0; guard < 4u * (sh->nbufs + sh->nplain) + 8; guard++) {
		struct tls_seg seg[TLS_SEGS_MAX];
		tls_input(c->tls, seg, ct_segs(sh, c, seg));
		*starved = false;
		enum tls_status st;
		bool hs = c->tls_state == TLS_HANDSHAKE;
		if (hs) {
			st = tls_handshake(c->tls);
		} else {
			if (c->in.n >= IN_PAUSE_BUFS)
				break; /* the engine catches up first */
			uint16_t pb = plain_get(sh);
			if (pb == BUF_NONE) {
				plain_wait(sh, c);
				break;
			}
			size_t n = 0;
			st = tls_read(c->tls, buf_addr(sh, pb), PLAIN_SIZE, &n);
			if (n > 0) {
				bufq_push(sh, &c->in, pb, (uint32_t)n);
				stat_add(&sh->stats.tls_plain_bytes, n);
			} else
				buf_put(sh, pb);
		}
		size_t used = tls_input_used(c->tls);
		ct_consume(sh, c, used);
		if (st == TLS_OK) {
			if (hs)
				tls_up(sh, c);
			continue;
		}
		if (st == TLS_AGAIN) {
			*starved = true;
			if (used > 0 && c->ct.head != BUF_NONE)
				continue;
			break;
		}
		if (st == TLS_CLOSED) {
			c->flags |= C_PEER_EOF; /* close_notify: answer what came, then close */
			break;
		}
		log_line("tls error client=%s port=%u stage=%s error=\"%s\"", c->addr, c->port,
			 hs ? "handshake" : "read", tls_error(c->tls));
		stat_add(&sh->stats.tls_failed, 1);
		tls_fail(sh, c, hs ? "tls-handshake-failed" : "tls-error");
		return false;
	}
	if (*starved)
		tls_hold(sh, c, ring_low(sh));
	return true;
}

/* A TLS session on the current context; false = the connection was closed. */
static bool tls_begin(struct shard *sh, struct conn *c)
{
	struct tls_ctx *ctx = tls_current();
	c->tls = ctx ? tls_conn_new(ctx) : NULL;
	tls_ctx_unref(ctx);
	if (!c->tls) {
		conn_close(sh, c, "nomem");
		return false;
	}
	sh->ntls++;
	c->tls_state = TLS_HANDSHAKE;
	return true;
}

/*
 * The engine answered STARTTLS with 220 (in c->out, sent in plaintext).
 * Anything the client sent after the STARTTLS line was sent before it saw
 * the 220: it is dropped, never read as a command (CVE-2011-0411).
 */
static void start_tls(struct shard *sh, struct conn *c)
{
	uint64_t dropped = bufq_drop(sh, &c->in) + c->line_len;
	c->line_len = 0;
	if (dropped)
		log_line("starttls dropped_bytes=%llu client=%s port=%u",
			 (unsigned long long)dropped, c->addr, c->port);
	tls_begin(sh, c);
}

/*
 * Feeds queued plaintext to the engine until it is used up, the engine waits
 * (end of data with the writer, a full reply buffer) or the session ends.
 * false = the connection was closed.
 */
static bool engine_run(struct shard *sh, struct conn *c)
{
	if (ensure_out(c) != 0) {
		conn_close(sh, c, "nomem");
		return false;
	}
	/* Bounded: each pass consumes input or stops. */
	for (uint32_t guard = 0; guard < 4u * sh->nbufs + 8; guard++) {
		if (c->smtp.state == SMTP_S_WAIT || (c->flags & (C_CLOSE | C_SHUT)))
			break;
		if (OUT_CAP - c->out_len < SMTP_OUT_RESERVE)
			break; /* resumes when the send completes */
		size_t used;
		if (c->line_len && stash_ready(sh, c)) {
			c->feed_buf = BUF_NONE;
			enum smtp_result r = feed(sh, c, c->line, c->line_len, &used);
			ASSERT(used == c->line_len || used == 0);
			if (used) {
				c->line_len = 0;
				free(c->line); /* lines rarely span buffers: keep none while idle */
				c->line = NULL;
			}
			if (!after_feed(sh, c, r) || !used)
				break;
			continue;
		}
		if (c->in.head == BUF_NONE)
			break;
		uint16_t b = c->in.head;
		const uint8_t *p = buf_addr(sh, b) + c->in.off;
		size_t len = sh->len[b] - c->in.off;
		if (c->line_len) {
			/* A command line began in an earlier buffer: complete it in the stash. */
			c->in.off += (uint32_t)stash_take(sh, c, p, len);
		} else {
			c->feed_buf = b;
			enum smtp_result r = feed(sh, c, p, len, &used);
			c->feed_buf = BUF_NONE;
			c->in.off += (uint32_t)used;
			bool go = after_feed(sh, c, r);
			if (c->in.head == BUF_NONE)
				break; /* input dropped on close */
			if (go && used < len && c->smtp.state == SMTP_S_CMD) {
				/* A partial command line: keep it, free the buffer. */
				if (!c->line && !(c->line = malloc(smtp_line_max(sh->sconf)))) {
					conn_close(sh, c, "nomem");
					return false;
				}
				c->in.off += (uint32_t)stash_take(sh, c, p + used, len - used);
			}
			if (!go && c->in.off < sh->len[b])
				break;
		}
		if (c->in.off == sh->len[b])
			bufq_pop(sh, &c->in);
	}
	return true;
}

/* Whether a TLS session should decrypt more now: the engine took all it had. */
static bool tls_more(const struct conn *c)
{
	return c->tls && c->ct.head != BUF_NONE && c->in.head == BUF_NONE &&
	       !(c->flags & (C_CLOSE | C_SHUT | C_PLAIN_WAIT)) &&
	       (c->smtp.state == SMTP_S_CMD || smtp_in_content(&c->smtp)) &&
	       OUT_CAP - c->out_len >= SMTP_OUT_RESERVE;
}

static void conn_process(struct shard *sh, struct conn *c)
{
	if (c->flags & C_SHUT)
		return;
	mark_dirty(sh, c);
	if (c->flags & C_CLOSE)
		return;
	/* Under TLS, decrypting stops at IN_PAUSE_BUFS plaintext buffers: once
	 * the engine has used them, decrypt again (bounded like the queues). */
	for (uint32_t round = 0; round < 2u * (sh->nbufs + sh->nplain) + 2; round++) {
		bool starved = false;
		if (c->tls && !tls_pump(sh, c, &starved))
			return;
		if (!engine_run(sh, c))
			return;
		if (starved || !tls_more(c))
			break;
	}
	if (c->smtp.state == SMTP_S_STARTTLS && !c->tls) {
		start_tls(sh, c);
		if (c->flags & C_SHUT)
			return;
	}
	if (c->flags & C_PAUSED && c->in.n + c->ct.n < IN_PAUSE_BUFS / 2 && !(c->flags & C_RECV) &&
	    !(c->flags & C_PEER_EOF)) {
		c->flags &= ~C_PAUSED;
		arm_recv(sh, c);
	}
	if (c->flags & C_PEER_EOF && c->in.head == BUF_NONE && c->ct.head == BUF_NONE &&
	    c->smtp.state != SMTP_S_WAIT && !(c->flags & C_CLOSE)) {
		/* Nothing more will come: what is unanswered is answered, then close. */
		c->reason = c->reason ? c->reason : "peer-closed";
		c->flags |= C_CLOSE;
	}
	if (sh->stopping && !smtp_in_transaction(&c->smtp) && c->smtp.state == SMTP_S_CMD &&
	    !(c->flags & C_CLOSE)) {
		struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
		smtp_shutdown(&c->smtp, &out);
		c->out_len = (uint32_t)out.len;
		c->reason = "shutdown";
		c->flags |= C_CLOSE;
	}
	if (c->out && c->out_len == 0) {
		free(c->out);
		c->out = NULL;
	}
	if (c->flags & C_CLOSE) /* replies out, then close: even for a client that never reads */
		timer_set(&sh->wheel, (uint32_t)(c - sh->conns), sh->now_s + 5);
	else
		set_deadline(sh, c);
}

/* ---- completions ------------------------------------------------------- */

static uint32_t ip_bucket(const struct sockaddr_storage *ss)
{
	const uint8_t *p;
	size_t n;
	if (ss->ss_family == AF_INET) {
		p = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
		n = 4;
	} else if (ss->ss_family == AF_INET6) {
		p = (const uint8_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
		n = 8;
	} else {
		return IP_BUCKETS;
	}
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return (h ^ (h >> 16)) & (IP_BUCKETS - 1);
}

/* Whether the client is in connection_limit_exceptions. */
static bool limit_exempt(const struct config *cfg, const struct sockaddr_storage *ss)
{
	if (cfg->nconnection_limit_exceptions == 0)
		return false;
	if (ss->ss_family == AF_INET)
		return cidr_list_match(
		    cfg->connection_limit_exceptions, cfg->nconnection_limit_exceptions, false,
		    (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr);
	if (ss->ss_family == AF_INET6)
		return cidr_list_match(
		    cfg->connection_limit_exceptions, cfg->nconnection_limit_exceptions, true,
		    (const uint8_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return false;
}

/*
 * Counts a connection from ss against max_connections_per_ip (shared by all
 * shards). false: the address is at its limit (nothing counted). *bucket is
 * the slot counted in, or IP_BUCKETS when none (no limit, or exempt).
 */
static bool ip_admit(struct shard *sh, const struct sockaddr_storage *ss, uint32_t *bucket)
{
	*bucket = IP_BUCKETS;
	uint32_t b = ip_bucket(ss);
	if (b >= IP_BUCKETS || !sh->cfg->max_connections_per_ip || limit_exempt(sh->cfg, ss))
		return true;
	unsigned n = atomic_fetch_add_explicit(&ip_conns[b], 1, memory_order_relaxed);
	if (n >= sh->cfg->max_connections_per_ip) {
		atomic_fetch_sub_explicit(&ip_conns[b], 1, memory_order_relaxed);
		return false;
	}
	*bucket = b;
	return true;
}

static void conn_set_addr(struct conn *c, const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, c->addr, sizeof(c->addr));
		c->port = ntohs(s4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, c->addr, sizeof(c->addr));
		c->port = ntohs(s6->sin6_port);
	}
}

static void session_start(struct shard *sh, struct conn *c);
static void pregreet_talker(struct shard *sh, struct conn *c);

/* Refuses a connection at accept, before any slot is taken. */
static void refuse(struct shard *sh, int fd, const char *why)
{
	char msg[REPLY_MAX];
	int n = snprintf(msg, sizeof(msg), "421 4.7.0 %s %s\r\n", sh->cfg->myhostname, why);
	ssize_t w = send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
	/* No slot, so no lingering: but what the client sent already is read,
	 * so that the close sends a FIN after the 421 rather than a reset. */
	shutdown(fd, SHUT_WR);
	char sink[4096];
	for (int i = 0; i < 4 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	close(fd);
	stat_add(&sh->stats.conns_refused, 1);
}

static_assert(LISTEN_MAX <= 32, "listener bits fit accept_armed");

static void accept_arm(struct shard *sh, unsigned li)
{
	struct io_uring_sqe *sqe = sqe_get(sh);
	io_uring_prep_multishot_accept(sqe, sh->listen_fd[li], NULL, NULL,
				       SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud(OP_ACCEPT, li, 0));
	sh->accept_armed |= 1u << li;
}

/*
 * accept(2) failed. Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM, or anything unexpected), the connection stays in the backlog and
 * the next try fails the same way at once: the listener stops for
 * ACCEPT_PAUSE_MS (its multishot accept is cancelled), as nginx disables
 * accept for 500 ms. A failure of one connection alone (ECONNABORTED, a
 * firewall's EPERM, a network error) lets the accept go on. Either way the
 * errors are logged at most once per ACCEPT_LOG_MS, with their count.
 */
static void accept_failed(struct shard *sh, unsigned li, int err, bool more)
{
	sh->accept_errors++;
	uint64_t now = mono_ms();
	if (now - sh->accept_err_log_ms >= ACCEPT_LOG_MS) {
		log_line("accept error shard=%u error=%s count=%llu%s", sh->id, strerror(-err),
			 (unsigned long long)sh->accept_errors,
			 err == -EMFILE || err == -ENFILE ? " (out of descriptors: paused)" : "");
		sh->accept_errors = 0;
		sh->accept_err_log_ms = now;
	}
	switch (err) {
	case -ECONNABORTED:
	case -EPERM:
	case -EPROTO:
	case -ENETDOWN:
	case -ENETUNREACH:
	case -EHOSTDOWN:
	case -EHOSTUNREACH:
	case -ENONET:
	case -ETIMEDOUT:
		return; /* the next connection may be fine */
	default:
		break;
	}
	if (sh->accept_paused & (1u << li))
		return;
	sh->accept_paused |= 1u << li;
	if (more) {
		struct io_uring_sqe *sqe = sqe_get(sh);
		io_uring_prep_cancel64(sqe, ud(OP_ACCEPT, li, 0), 0);
		io_uring_sqe_set_data64(sqe, ud(OP_CANCEL, NONE32, 0));
	}
	struct io_uring_sqe *sqe = sqe_get(sh);
	sh->accept_pause.tv_sec = 0;
	sh->accept_pause.tv_nsec = (long long)ACCEPT_PAUSE_MS * 1000000;
	io_uring_prep_timeout(sqe, &sh->accept_pause, 0, 0);
	io_uring_sqe_set_data64(sqe, ud(OP_ACCEPT_RESUME, li, 0));
}

/* The pause is over: accepting again (the multishot accept ended by now). */
static void on_accept_resume(struct shard *sh, unsigned li)
{
	sh->accept_paused &= ~(1u << li);
	if (!sh->stopping && !(sh->accept_armed & (1u << li)))
		accept_arm(sh, li);
}

static void on_accept(struct shard *sh, struct io_uring_cqe *cqe, unsigned li)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (!more)
		sh->accept_armed &= ~(1u << li);
	if (cqe->res < 0 && cqe->res != -ECANCELED && !sh->stopping)
		accept_failed(sh, li, cqe->res, more);
	if (!more && !sh->stopping && !(sh->accept_paused & (1u << li)))
		accept_arm(sh, li);
	if (cqe->res < 0)
		return;
	int fd = cqe->res;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	bool peer = getpeername(fd, (struct sockaddr *)&ss, &sl) == 0;
	if (sh->stopping || sh->free_head == NONE32) {
		refuse(sh, fd, "Error: too many connections");
		return;
	}
	bool proxied = sh->cfg->proxy_protocol != PROXY_PROTOCOL_NONE;
	/* Behind a balancer the per-address limit waits for the real address. */
	uint32_t bucket = IP_BUCKETS;
	if (!proxied && peer && !ip_admit(sh, &ss, &bucket)) {
		refuse(sh, fd, "Error: too many connections from your address");
		return;
	}
	uint32_t slot = sh->free_head;
	struct conn *c = &sh->conns[slot];
	sh->free_head = c->next_dirty;
	sh->nopen++;
	uint32_t gen = c->gen;
	memset(c, 0, sizeof(*c));
	c->gen = gen;
	c->open = 1;
	c->fd = fd;
	c->li = (uint8_t)li;
	c->in.head = c->in.tail = c->ct.head = c->ct.tail = c->feed_buf = BUF_NONE;
	c->start_ms = mono_ms();
	c->ip_bucket = bucket;
	snprintf(c->addr, sizeof(c->addr), "unknown");
	if (peer)
		conn_set_addr(c, &ss);
	stat_add(&sh->stats.conns_accepted, 1);
	current = sh;
	smtp_init(&c->smtp, sh->sconf, &hooks, c);
	if (ensure_out(c) != 0) {
		conn_close(sh, c, "nomem");
		return;
	}
	if (proxied) {
		/* Nothing is sent before the balancer's header has named the client. */
		c->flags |= C_PROXY;
		arm_recv(sh, c);
		timer_set(&sh->wheel, slot, sh->now_s + sh->cfg->proxy_timeout + 1);
		return;
	}
	session_start(sh, c);
}

/* The client is known: TLS first (smtps_listen), the pre-greeting wait, or the greeting. */
static void session_start(struct shard *sh, struct conn *c)
{
	if (c->li >= sh->cfg->nlisten) {
		/* Implicit TLS (RFC 8314): the handshake first, the greeting inside it. */
		c->implicit_tls = 1;
		if (!tls_begin(sh, c))
			return;
		/* What followed a PROXY header is the start of the ClientHello. */
		c->ct = c->in;
		c->in.head = c->in.tail = BUF_NONE;
		c->in.n = 0;
		c->in.off = 0;
	} else if (sh->cfg->pregreet_wait) {
		/* A legitimate client waits for the greeting; one that talks first
		 * is refused (the pre-greeting test of Postfix's postscreen). */
		if (c->in.n) {
			pregreet_talker(sh, c);
			return;
		}
		c->flags |= C_PREGREET;
		if (!(c->flags & C_RECV))
			arm_recv(sh, c);
		/* Whole seconds on the wheel: wait at least pregreet_wait. */
		timer_set(&sh->wheel, (uint32_t)(c - sh->conns),
			  sh->now_s + sh->cfg->pregreet_wait + 1);
		return;
	} else {
		struct smtp_out out = {.buf = c->out, .len = 0, .cap = OUT_CAP};
		smtp_greet(&c->smtp, &out);
		c->out_len = (uint32_t)out.len;
	}
	if (!(c->flags & C_RECV))
		arm_recv(sh, c);
	set_deadline(sh, c);
	mark_dirty(sh, c);
	if (c->in.n || c->ct.n)
		conn_process(sh, c); /* bytes that came with the PROXY header */
}

/* Ends a session the client has not started: a 421 line, then close. */
static void refuse_conn(struct shard *sh, struct conn *c, const char *why, const char *reason)
{
	input_drop(sh, c);
	int n = snprintf((char *)c->out + c->out_len, OUT_CAP - c->out_len, "421 4.7.0 %s %s\r\n",
			 sh->cfg->myhostname, why);
	if (n > 0 && (uint32_t)n < OUT_CAP - c->out_len)
		c->out_len += (uint32_t)n;
	smtp_close(&c->smtp);
	c->reason = reason;
	c->flags |= C_CLOSE;
	timer_set(&sh->wheel, (uint32_t)(c - sh->conns), sh->now_s + 5);
	mark_dirty(sh, c);
}

/*
 * C_PROXY: looks for the PROXY header at the start of the input (it is at
 * most PROXY_HEADER_MAX bytes, copied once to parse it). A whole header
 * gives the connection the client's address, then the session starts; a bad
 * one ends the connection with 421 and a log line saying why.
 */
static void proxy_input(struct shard *sh, struct conn *c)
{
	uint8_t hdr[PROXY_HEADER_MAX];
	size_t n = 0;
	uint32_t off = c->in.off;
	for (uint16_t b = c->in.head; b != BUF_NONE && n < sizeof(hdr); b = sh->next[b]) {
		size_t take = sh->len[b] - off;
		if (take > sizeof(hdr) - n)
			take = sizeof(hdr) - n;
		memcpy(hdr + n, buf_addr(sh, b) + off, take);
		n += take;
		off = 0;
	}
	struct proxy_info pi;
	const char *why;
	int r = proxy_parse(hdr, n, &pi, &why);
	if (r == PROXY_NEED_MORE)
		return;
	if (r == PROXY_INVALID) {
		char esc[LOG_CLIENT_TEXT_MAX * 4 + 8];
		log_escape(esc, sizeof(esc), (const char *)hdr, n < 64 ? n : 64, 64);
		log_line("proxy error balancer=%s port=%u error=\"%s\" start=\"%s\"", c->addr,
			 c->port, why, esc);
		stat_add(&sh->stats.proxy_errors, 1);
		c->flags &= ~C_PROXY;
		refuse_conn(sh, c, "Error: bad or missing PROXY protocol header", "proxy-error");
		return;
	}
	/* Consume the header's bytes. */
	for (size_t left = (size_t)r; left > 0 && c->in.head != BUF_NONE;) {
		size_t avail = sh->len[c->in.head] - c->in.off;
		if (avail > left) {
			c->in.off += (uint32_t)left;
			break;
		}
		left -= avail;
		bufq_pop(sh, &c->in);
	}
	c->flags &= ~C_PROXY;
	if (pi.has_addr) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		if (pi.family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			s4->sin_family = AF_INET;
			memcpy(&s4->sin_addr, pi.src, 4);
			s4->sin_port = htons(pi.src_port);
		} else {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			s6->sin6_family = AF_INET6;
			memcpy(&s6->sin6_addr, pi.src, 16);
			s6->sin6_port = htons(pi.src_port);
		}
		conn_set_addr(c, &ss);
		uint32_t bucket;
		if (!ip_admit(sh, &ss, &bucket)) {
			stat_add(&sh->stats.conns_refused, 1);
			refuse_conn(sh, c, "Error: too many connections from your address",
				    "per-ip-limit");
			return;
		}
		c->ip_bucket = bucket;
	}
	session_start(sh, c);
}

/* pregreet_wait is over and the client kept quiet: greet it. */
static void pregreet_done(struct shard *sh, struct conn *c)
{
	c->flags &= ~C_PREGREET;
	if (ensure_out(c) != 0) {
		conn_close(sh, c, "nomem");
		return;
	}
	struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
	smtp_greet(&c->smtp, &out);
	c->out_len = (uint32_t)out.len;
	set_deadline(sh, c);
	mark_dirty(sh, c);
}

/* The client talked before the greeting: refuse it, read nothing it sent. */
static void pregreet_talker(struct shard *sh, struct conn *c)
{
	c->flags &= ~C_PREGREET;
	input_drop(sh, c);
	if (ensure_out(c) != 0) {
		conn_close(sh, c, "nomem");
		return;
	}
	int n =
	    snprintf((char *)c->out + c->out_len, OUT_CAP - c->out_len,
		     "554 5.5.1 %s Error: talking before the greeting\r\n", sh->cfg->myhostname);
	if (n > 0 && (uint32_t)n < OUT_CAP - c->out_len)
		c->out_len += (uint32_t)n;
	smtp_close(&c->smtp);
	c->reason = "pregreet";
	c->flags |= C_CLOSE;
	timer_set(&sh->wheel, (uint32_t)(c - sh->conns), sh->now_s + 5);
	mark_dirty(sh, c);
}

static void on_recv(struct shard *sh, struct io_uring_cqe *cqe, struct conn *c)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (!more) {
		c->flags &= ~C_RECV;
		c->nops--;
	}
	if (cqe->res > 0) {
		ASSERT(cqe->flags & IORING_CQE_F_BUFFER);
		uint16_t b = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		ASSERT(b < sh->nbufs && sh->refs[b] == 0);
		sh->refs[b] = 1;
		sh->held++;
		if (c->flags & C_SHUT) {
			buf_put(sh, b);
			conn_release(sh, c);
			return;
		}
		if (c->flags & C_LINGER) {
			buf_put(sh, b);
			linger_input(sh, c, (uint32_t)cqe->res, cqe->res, more);
			return;
		}
		c->flags |= C_RX;
		/* Under TLS the bytes are ciphertext for wolfSSL, else input for the engine. */
		struct bufq *q = c->tls ? &c->ct : &c->in;
		bufq_push(sh, q, b, (uint32_t)cqe->res);
		if (c->flags & C_PREGREET) {
			pregreet_talker(sh, c);
			if (!more && !(c->flags & C_SHUT))
				arm_recv(sh, c); /* to see the EOF; input is dropped on close */
			return;
		}
		if (c->flags & C_PROXY) {
			proxy_input(sh, c);
			if (!more && !(c->flags & (C_SHUT | C_RECV)))
				arm_recv(sh, c);
			return;
		}
		if (c->in.n + c->ct.n > IN_PAUSE_BUFS && (c->flags & C_RECV) &&
		    !(c->flags & C_PAUSED)) {
			c->flags |= C_PAUSED;
			stat_add(&sh->stats.recv_paused, 1);
			cancel_recv(sh, c);
		}
		conn_process(sh, c);
		if (!more && !(c->flags & (C_SHUT | C_PAUSED)))
			arm_recv(sh, c);
		return;
	}
	if (c->flags & C_SHUT) {
		conn_release(sh, c);
		return;
	}
	if (c->flags & C_LINGER) {
		linger_input(sh, c, 0, cqe->res, more);
		return;
	}
	if (cqe->res == -ENOBUFS) {
		stat_add(&sh->stats.enobufs, 1);
		starve(sh, c);
		return;
	}
	if (cqe->res == -ECANCELED && (c->flags & C_PAUSED)) {
		/* The pause took effect; if the input was drained meanwhile, this is
		 * the last chance to resume (conn_process re-arms when it is low). */
		conn_process(sh, c);
		return;
	}
	if (cqe->res == 0) {
		/* Answer what came before the EOF, then close (conn_flush). */
		c->flags |= C_PEER_EOF;
		conn_process(sh, c);
		return;
	}
	conn_close(sh, c, "recv-error");
}

static void on_send(struct shard *sh, struct io_uring_cqe *cqe, struct conn *c)
{
	c->nops--;
	c->flags &= ~C_SEND;
	if (c->flags & C_SHUT) {
		conn_release(sh, c);
		return;
	}
	if (cqe->res < 0) {
		conn_close(sh, c, "send-error");
		return;
	}
	c->snd_off += (uint32_t)cqe->res;
	sh->send_queued -= (uint32_t)cqe->res;
	if (c->snd_off < c->snd_len) {
		struct io_uring_sqe *sqe = sqe_get(sh);
		io_uring_prep_send(sqe, c->fd, c->snd + c->snd_off, c->snd_len - c->snd_off,
				   MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, ud(OP_SEND, (uint32_t)(c - sh->conns), c->gen));
		c->flags |= C_SEND;
		c->nops++;
		return;
	}
	/* An idle connection keeps no reply buffer. */
	free(c->snd);
	c->snd = NULL;
	conn_process(sh, c); /* the engine may have stopped for a full out; closes if due */
}

static enum smtp_verdict result_verdict(int result)
{
	if (result == 0)
		return SMTP_V_OK;
	if (result == -ENOSPC || result == -EDQUOT || result == -EFBIG)
		return SMTP_V_NOSPACE;
	return SMTP_V_TEMPFAIL;
}

static void log_msg(struct shard *sh, struct conn *c, const struct msg *m)
{
	const struct envelope *e = m->env;
	char from[LOG_CLIENT_TEXT_MAX * 4 + 8];
	log_escape(from, sizeof(from), e->from, strlen(e->from), LOG_CLIENT_TEXT_MAX);
	uint64_t dur = c ? mono_ms() - c->mail_ms : 0;
	if (m->result == 0)
		log_line("queued qid=%s shard=%u writer=%u client=%s port=%u from=<%s> rcpts=%u "
			 "size=%llu duration_ms=%llu%s",
			 e->qid, sh->id, m->writer, e->client_addr, e->client_port, from, e->nrcpt,
			 (unsigned long long)msg_total_bytes(m), (unsigned long long)dur,
			 c ? "" : " client_gone=yes");
	else
		log_line("store-failed qid=%s shard=%u writer=%u client=%s error=%s", e->qid,
			 sh->id, m->writer, e->client_addr, strerror(-m->result));
}

static void on_returned(struct shard *sh, struct msg *m)
{
	struct conn *c = &sh->conns[m->conn_slot];
	bool alive = c->open && c->gen == m->conn_gen && !(c->flags & (C_SHUT | C_LINGER));
	if (m->kind == MSG_FINAL) {
		log_msg(sh, alive ? c : NULL, m);
		if (m->result == 0) {
			stat_add(&sh->stats.msgs_queued, 1);
			stat_add(&sh->stats.body_bytes, msg_total_bytes(m));
		} else {
			stat_add(&sh->stats.msgs_failed, 1);
		}
		if (alive && c->smtp.state == SMTP_S_WAIT && ensure_out(c) != 0) {
			conn_close(sh, c, "nomem");
		} else if (alive && c->smtp.state == SMTP_S_WAIT) {
			struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
			smtp_resume(&c->smtp, result_verdict(m->result), m->env->qid, &out);
			c->out_len = (uint32_t)out.len;
			if (m->result == 0)
				c->nmsgs++;
			env_put(c->env);
			c->env = NULL;
			conn_process(sh, c);
		}
	} else if (m->kind == MSG_PART && m->result != 0 && alive && c->msg && c->env &&
		   &c->env->env == m->env) {
		/* A part could not be written: the message cannot be stored whole. */
		log_line("store-failed qid=%s part=%u error=%s", m->env->qid, m->part,
			 strerror(-m->result));
	}
	msg_free(sh, m);
}

static void reap(struct shard *sh)
{
	struct msg *ms[REAP_MAX];
	unsigned n;
	unsigned rounds = 0;
	do {
		n = writer_reap(sh->ws, sh->id, ms, REAP_MAX);
		for (unsigned i = 0; i < n; i++) {
			sh->msgs_out--;
			on_returned(sh, ms[i]);
		}
	} while (n == REAP_MAX && ++rounds < 64);
}

static void arm_tick(struct shard *sh)
{
	struct io_uring_sqe *sqe = sqe_get(sh);
	sh->tick.tv_sec = 1;
	sh->tick.tv_nsec = 0;
	io_uring_prep_timeout(sqe, &sh->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, ud(OP_TICK, 0, 0));
}

static void arm_wake(struct shard *sh)
{
	struct io_uring_sqe *sqe = sqe_get(sh);
	io_uring_prep_read(sqe, sh->wake_fd, &sh->wake_val, sizeof(sh->wake_val), 0);
	io_uring_sqe_set_data64(sqe, ud(OP_WAKE, 0, 0));
}

static void begin_stop(struct shard *sh);

/*
 * Ends a session with a 421 from the engine (timeout, shutdown): the reply
 * goes out, unread input is dropped, and a client that never reads its
 * replies is closed 5 s later anyway.
 */
static void end_with_421(struct shard *sh, struct conn *c,
			 void (*say)(struct smtp_session *, struct smtp_out *), const char *reason)
{
	if (ensure_out(c) != 0) {
		conn_close(sh, c, "nomem");
		return;
	}
	struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
	say(&c->smtp, &out);
	c->out_len = (uint32_t)out.len;
	c->reason = reason;
	c->flags |= C_CLOSE;
	input_drop(sh, c);
	timer_set(&sh->wheel, (uint32_t)(c - sh->conns), sh->now_s + 5);
	mark_dirty(sh, c);
}

static void on_tick(struct shard *sh)
{
	uint32_t idx[EXPIRE_MAX];
	unsigned n;
	unsigned rounds = 0;
	sh->now_s = mono_ms() / 1000;
	do {
		n = timer_expire(&sh->wheel, sh->now_s, idx, EXPIRE_MAX);
		for (unsigned i = 0; i < n; i++) {
			struct conn *c = &sh->conns[idx[i]];
			if (!c->open || (c->flags & C_SHUT))
				continue;
			if (c->flags & C_LINGER) {
				linger_expire(sh, c); /* lingered long enough */
				continue;
			}
			if (c->flags & C_PREGREET) {
				pregreet_done(sh, c);
				continue;
			}
			if (c->flags & C_PROXY) {
				log_line("proxy error balancer=%s port=%u error=\"no whole PROXY "
					 "header within proxy_timeout\"",
					 c->addr, c->port);
				stat_add(&sh->stats.proxy_errors, 1);
				conn_close(sh, c, "proxy-timeout");
				continue;
			}
			if (c->smtp.state == SMTP_S_WAIT) {
				set_deadline(sh, c); /* the writer has it: not the client's fault */
				continue;
			}
			if (c->flags & C_CLOSE) {
				conn_close(sh, c,
					   NULL); /* a client that does not read its replies */
				continue;
			}
			if (c->tls_state == TLS_HANDSHAKE) {
				conn_close(sh, c,
					   "tls-handshake-timeout"); /* no plaintext 421 here */
				continue;
			}
			end_with_421(sh, c, smtp_timeout, "timeout");
		}
	} while (n == EXPIRE_MAX && ++rounds < 1024);
	if (sh->stopping && sh->now_s >= sh->stop_deadline) {
		/* Grace is over: every session not waiting for a writer gets 421. */
		for (uint32_t i = 0; i < sh->cap; i++) {
			struct conn *c = &sh->conns[i];
			if (!c->open || (c->flags & (C_SHUT | C_CLOSE)) ||
			    c->smtp.state == SMTP_S_WAIT)
				continue;
			end_with_421(sh, c, smtp_shutdown, "shutdown");
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
			struct io_uring_sqe *sqe = sqe_get(sh);
			io_uring_prep_cancel64(sqe, ud(OP_ACCEPT, i, 0), 0);
			io_uring_sqe_set_data64(sqe, ud(OP_CANCEL, NONE32, 0));
			shutdown(sh->listen_fd[i], SHUT_RDWR);
		}
	}
	/* Sessions outside a transaction get 421 now; the others when they end one. */
	for (uint32_t i = 0; i < sh->cap; i++) {
		struct conn *c = &sh->conns[i];
		if (c->open && !(c->flags & C_SHUT))
			conn_process(sh, c);
	}
}

static void dispatch(struct shard *sh, struct io_uring_cqe *cqe)
{
	uint64_t u = io_uring_cqe_get_data64(cqe);
	unsigned op = (unsigned)(u >> 56);
	uint32_t slot = (uint32_t)(u >> 32) & 0xffffffu;
	uint32_t gen = (uint32_t)u;
	if (op == OP_ACCEPT)
		return on_accept(sh, cqe, slot);
	if (op == OP_ACCEPT_RESUME)
		return on_accept_resume(sh, slot);
	if (op == OP_TICK)
		return on_tick(sh);
	if (op == OP_WAKE) {
		if (atomic_load(&sh->stop_req) && !sh->stopping)
			begin_stop(sh);
		arm_wake(sh);
		return;
	}
	if (slot == (NONE32 & 0xffffffu))
		return; /* a cancel of an accept */
	ASSERT(slot < sh->cap);
	struct conn *c = &sh->conns[slot];
	ASSERT(c->gen == gen && c->open); /* ops in flight keep the slot */
	switch (op) {
	case OP_RECV:
		on_recv(sh, cqe, c);
		break;
	case OP_SEND:
		on_send(sh, cqe, c);
		break;
	case OP_CANCEL:
		c->nops--;
		if (c->flags & C_SHUT)
			conn_release(sh, c);
		break;
	default:
		ASSERT(0);
	}
}

/*
 * Few buffers left: the bodies being gathered hold them. Send every
 * non-empty partial body to its writer as a part, so that buffers come back
 * even when each message is still below body_flush_bytes (many slow
 * clients each holding a little would otherwise pin the whole ring).
 */
static void relieve_pressure(struct shard *sh)
{
	for (uint32_t i = 0; i < sh->cap; i++) {
		struct conn *c = &sh->conns[i];
		/* A TLS record waiting in place gives its buffers back too. */
		if (c->open && !(c->flags & C_SHUT) && c->tls_state == TLS_UP)
			tls_hold(sh, c, true);
		if (c->open && !(c->flags & C_SHUT) && c->msg && c->msg->nslices > 0 &&
		    smtp_in_content(&c->smtp) && flush_part(sh, c) == -EAGAIN)
			break; /* that writer's ring is full: try on a later pass */
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
	if (ring_low(sh))
		relieve_pressure(sh);
	/* Re-arm starved receivers once a useful share of buffers is back. */
	uint32_t i = sh->starved_head;
	if (sh->held + sh->nbufs / 16 > sh->nbufs)
		i = NONE32; /* stay starved: the list is kept */
	else
		sh->starved_head = NONE32;
	for (uint32_t n = 0; i != NONE32 && n < sh->cap; n++) {
		struct conn *c = &sh->conns[i];
		uint32_t next = c->next_starved;
		c->flags &= ~C_STARVED;
		if (c->open && (c->flags & C_SHUT))
			conn_release(sh, c);
		else if (c->open && !(c->flags & (C_RECV | C_PAUSED)))
			arm_recv(sh, c);
		i = next;
	}
	/* Connections that waited for a plaintext buffer, while some are free. */
	i = sh->nplain_free ? sh->wait_head : NONE32;
	if (i != NONE32)
		sh->wait_head = NONE32;
	for (uint32_t n = 0; i != NONE32 && n < sh->cap; n++) {
		struct conn *c = &sh->conns[i];
		uint32_t next = c->next_wait;
		c->flags &= ~C_PLAIN_WAIT;
		if (c->open && (c->flags & C_SHUT))
			conn_release(sh, c);
		else if (c->open)
			conn_process(sh, c);
		i = next;
	}
	i = sh->dirty_head;
	sh->dirty_head = NONE32;
	for (uint32_t n = 0; i != NONE32 && n <= sh->cap; n++) {
		struct conn *c = &sh->conns[i];
		uint32_t next = c->next_dirty;
		c->flags &= ~C_DIRTY;
		if (c->open && (c->flags & C_SHUT))
			conn_release(sh, c);
		else if (c->open)
			conn_flush(sh, c);
		i = next;
	}
	/* Last: every buffer given back during the pass (relieve_pressure, the
	 * sessions above) is in the kernel's ring before the next submit. */
	bufs_publish(sh);
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
		if (!c->open)
			continue;
		conn_close(sh, c, "shard-failed");
		/* Its requests in flight end with the ring; no list is walked again. */
		c->nops = 0;
		c->flags &= (uint16_t) ~(C_DIRTY | C_STARVED | C_PLAIN_WAIT);
		conn_release(sh, c);
	}
	uint64_t deadline = mono_ms() + (uint64_t)sh->cfg->shutdown_timeout * 1000;
	while (sh->msgs_out > 0 && mono_ms() < deadline) {
		reap(sh);
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
	current = sh;
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
			log_line("shard=%u io_uring_enable_rings error=%s", sh->id, strerror(-rc));
			abort();
		}
	}
	log_batch(1);
	sh->now_s = mono_ms() / 1000;
	for (unsigned i = 0; i < sh->nlisten; i++)
		accept_arm(sh, i);
	arm_tick(sh);
	arm_wake(sh);
	for (;;) {
		int rc = io_uring_submit_and_wait(&sh->ring, 1);
		if (sh->fail_injected)
			rc = -EFAULT;
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			shard_fail(sh, "io_uring_submit_and_wait", rc);
			break;
		}
		sh->now_s = mono_ms() / 1000;
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&sh->ring, head, cqe)
		{
			dispatch(sh, cqe);
			n++;
		}
		io_uring_cq_advance(&sh->ring, n);
		reap(sh);
		pass_end(sh);
		if (sh->stopping && sh->nopen == 0 && sh->msgs_out == 0)
			break;
	}
	log_batch(0);
	return NULL;
}

/* ---- set-up ------------------------------------------------------------ */

/*
 * A listening socket for la. With reuseport, each shard gets its own on the
 * same address (SO_REUSEPORT); without, it is a probe: it fails with
 * EADDRINUSE when anything listens there already, even another mxring whose
 * sockets would otherwise share the port and take half of its connections.
 */
int listen_socket(const struct listen_addr *la, bool reuseport)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, la->host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(la->port);
		sl = sizeof(*s4);
	} else if (inet_pton(AF_INET6, la->host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(la->port);
		sl = sizeof(*s6);
	} else {
		return -EINVAL;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* Replies are batched by the shard; accepted sockets inherit this. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 4096) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
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

int shard_create(unsigned id, const struct config *cfg, const struct smtp_conf *sconf,
		 struct writer_set *ws, struct shard **out)
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
		sh->nplain = sh->nbufs / 4 < 16 ? 16 : sh->nbufs / 4 > 4096 ? 4096 : sh->nbufs / 4;
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
	static_assert(RECV_BUFS_MAX + 4096 < BUF_NONE, "buffer ids fit 16 bits");
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
		io_uring_buf_ring_add(sh->br, buf_addr(sh, (uint16_t)b), sh->buf_size,
				      (unsigned short)b, io_uring_buf_ring_mask(sh->nbufs), (int)b);
	io_uring_buf_ring_advance(sh->br, (int)sh->nbufs);
	sh->free_head = NONE32;
	for (uint32_t i = sh->cap; i-- > 0;) {
		sh->conns[i].next_dirty = sh->free_head;
		sh->free_head = i;
	}
	rc = timer_init(&sh->wheel, sh->cap, mono_ms() / 1000);
	if (rc) {
		fprintf(stderr, "mxring: shard %u: out of memory\n", id);
		goto fail;
	}
	sh->wake_fd = writer_shard_eventfd(ws, id);
	fail_hook_init(sh);
	/* Plain listeners first, then the implicit-TLS ones (index >= cfg->nlisten). */
	for (unsigned i = 0; i < cfg->nlisten + cfg->nsmtps_listen; i++) {
		const struct listen_addr *la =
		    i < cfg->nlisten ? &cfg->listen[i] : &cfg->smtps_listen[i - cfg->nlisten];
		int fd = id == 0 ? listen_socket(la, false) : 0;
		if (fd > 0)
			close(fd); /* the probe: nobody else listens here */
		if (fd >= 0)
			fd = listen_socket(la, true);
		if (fd < 0) {
			rc = fd;
			fprintf(stderr, "mxring: listen %s port %u: %s\n", la->host, la->port,
				strerror(-rc));
			goto fail;
		}
		sh->listen_fd[i] = fd;
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
