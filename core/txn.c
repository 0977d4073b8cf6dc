/*
 * txn.c - a mail transaction between the engine and the writers: the
 * envelope, the body as slices of the shard's buffers, parts sent to a
 * writer as the body grows, and the msgs the writers hand back (txn_reap),
 * whose FINAL brings the 250 (shard_int.h).
 *
 * Ownership: the connection holds one reference to its envelope (env_box)
 * while the transaction is open, and every msg at a writer one more. A
 * slice holds a reference to the buffer it points into (bufpool.c); a msg
 * owns its slices and copy chunks, and the shard frees them when the writer
 * returns it: the writer never returns buffers itself. All msgs of one
 * transaction go to the same writer, in order. A body is cut into parts
 * (MSG_PART, written but not synced) at body_flush_bytes, PART_BUFS_MAX
 * pinned buffers or PART_SLICES_MAX slices, so no message pins more than
 * that of the receive buffers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "log.h"
#include "relay.h"
#include "screen.h"
#include "shard_int.h"

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
			bufpool_put(sh, m->slices[i].buf);
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
	m->conn_slot = conn_slot(sh, c);
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

void txn_end(struct shard *sh, struct conn *c)
{
	body_drop(sh, c);
	env_put(c->env);
	c->env = NULL;
}

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
	struct shard *sh = shard_self;
	ASSERT(!c->env && !c->msg);
	if (!admit_mail_rate(sh, c))
		return SMTP_V_RATE;
	/* The relay's hub is behind: the spool holds spool_max_bytes already. */
	if (relay_spool_full())
		return SMTP_V_NOSPACE;
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
	if (c->flags & C_TLS_UP)
		tls_describe(c->tls, e->tls, sizeof(e->tls), NULL);
	memcpy(e->from, from->mailbox, from->len + 1);
	c->env = b;
	c->writer = (uint16_t)(sh->next_writer++ % sh->nwriters);
	c->mail_ms = mono_coarse_ms();
	return SMTP_V_OK;
}

static enum smtp_verdict hook_rcpt(void *ctx, const struct addr *to)
{
	struct conn *c = ctx;
	struct shard *sh = shard_self;
	if (!screen_rcpt_known(sh->cfg, to)) {
		stat_add(&sh->stats.rcpt_unknown, 1);
		return SMTP_V_UNKNOWN;
	}
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
	struct shard *sh = shard_self;
	c->msg = msg_new(sh, c, 0, 0);
	if (!c->msg) {
		txn_end(sh, c);
		return SMTP_V_TEMPFAIL;
	}
	return SMTP_V_OK;
}

/* Sends the gathered slices as a part; the next part starts empty. */
int txn_flush_part(struct shard *sh, struct conn *c)
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
	ASSERT(p >= bufpool_addr(sh, buf) &&
	       p + len <= bufpool_addr(sh, buf) + bufpool_cap(sh, buf));
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
	struct shard *sh = shard_self;
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
		rc = txn_flush_part(sh, c);
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
	struct shard *sh = shard_self;
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
	txn_end(shard_self, c);
}

const struct smtp_hooks txn_hooks = {
    .helo = hook_helo,
    .mail = hook_mail,
    .rcpt = hook_rcpt,
    .data_start = hook_data_start,
    .body = hook_body,
    .data_end = hook_data_end,
    .abort = hook_abort,
};

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
	uint64_t dur = c ? mono_coarse_ms() - c->mail_ms : 0;
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
	/* A session closing still gets the reply to its message; one lingering
	 * or shut has been answered or is gone. */
	bool alive = c->gen == m->conn_gen && c->phase != PH_FREE && c->phase < PH_LINGER;
	if (m->kind == MSG_FINAL) {
		log_msg(sh, alive ? c : NULL, m);
		if (m->result == 0) {
			stat_add(&sh->stats.msgs_queued, 1);
			stat_add(&sh->stats.body_bytes, msg_total_bytes(m));
		} else {
			stat_add(&sh->stats.msgs_failed, 1);
		}
		if (alive && c->smtp.state == SMTP_S_WAIT && conn_ensure_out(c) != 0) {
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

void txn_reap(struct shard *sh)
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
