/*
 * tlspump.c - TLS between a connection's receive buffers and the engine.
 *
 * Under TLS (STARTTLS, or an smtps_listen address) received bytes queue as
 * ciphertext (c->ct). tlspump_run hands them to wolfSSL (tls/tls.h) for the
 * handshake, then decrypts records into the shard's plaintext buffers,
 * queued as input (c->in) exactly like receive buffers are for plaintext
 * sessions. conn.c is the only caller: tlspump_begin and tlspump_starttls
 * start a session, tlspump_run and tlspump_more drive it, tlspump_hold
 * frees receive buffers a partial record holds. Nothing in tls/ calls back
 * into core/: the segments of ciphertext go in (tls_input), how much was
 * used comes out (tls_input_used).
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "shard_int.h"

/* The handshake is done: the session starts again inside TLS (RFC 3207 4.2). */
static void tls_up(struct shard *sh, struct conn *c)
{
	int resumed = 0;
	char d[TLS_DESC_MAX];
	c->flags |= C_TLS_UP;
	conn_enter(sh, c, PH_SESSION);
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
	conn_mark_dirty(sh, c);
	if (c->implicit_tls && conn_ensure_out(c) == 0) {
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
		seg[k++] = (struct tls_seg){bufpool_addr(sh, b) + off, sh->len[b] - off};
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
		bufpool_pop(sh, &c->ct);
	}
	ASSERT(used == 0);
}

/*
 * A TLS record not yet whole waits in its receive buffers, to be opened
 * in place when the rest comes. It may pin two buffers; past that, or when
 * the ring runs low, or once some of it is already kept, its bytes move
 * into the session and the buffers go back.
 */
void tlspump_hold(struct shard *sh, struct conn *c, bool force)
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
	c->flags |= C_NOTIFIED;
	c->out_len = 0;
	conn_end(sh, c, SMTP_END_SILENT, reason);
}

/*
 * Runs TLS over the ciphertext queue: the handshake, then decryption into
 * plaintext buffers queued for the engine. Receive buffers go back as soon
 * as their bytes are used. *starved: what is queued is not a whole record
 * (only more input helps). false = the connection was closed.
 */
bool tlspump_run(struct shard *sh, struct conn *c, bool *starved)
{
	/* Each round uses input or stops: no more rounds than bytes can last. */
	for (uint32_t guard = 0;; guard++) {
		ASSERT(guard < 4u * (sh->nbufs + sh->nplain) + 8);
		struct tls_seg seg[TLS_SEGS_MAX];
		tls_input(c->tls, seg, ct_segs(sh, c, seg));
		*starved = false;
		enum tls_status st;
		bool hs = c->phase == PH_HANDSHAKE;
		if (hs) {
			st = tls_handshake(c->tls);
		} else {
			if (c->in.n >= IN_PAUSE_BUFS)
				break; /* the engine catches up first */
			uint16_t pb = bufpool_plain_get(sh);
			if (pb == BUF_NONE) {
				conn_plain_wait(sh, c);
				break;
			}
			size_t n = 0;
			st = tls_read(c->tls, bufpool_addr(sh, pb), PLAIN_SIZE, &n);
			if (n > 0) {
				bufpool_push(sh, &c->in, pb, (uint32_t)n);
				stat_add(&sh->stats.tls_plain_bytes, n);
			} else
				bufpool_put(sh, pb);
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
		tlspump_hold(sh, c, bufpool_low(sh));
	return true;
}

/* A TLS session on the current context; false = the connection was closed. */
bool tlspump_begin(struct shard *sh, struct conn *c)
{
	struct tls_ctx *ctx = tls_current();
	c->tls = ctx ? tls_conn_new(ctx) : NULL;
	tls_ctx_unref(ctx);
	if (!c->tls) {
		conn_close(sh, c, "nomem");
		return false;
	}
	sh->ntls++;
	conn_enter(sh, c, PH_HANDSHAKE);
	return true;
}

/*
 * The engine answered STARTTLS with 220 (in c->out, sent in plaintext).
 * Anything the client sent after the STARTTLS line was sent before it saw
 * the 220: it is dropped, never read as a command (CVE-2011-0411).
 */
void tlspump_starttls(struct shard *sh, struct conn *c)
{
	uint64_t dropped = bufpool_drop(sh, &c->in) + c->line_len;
	c->line_len = 0;
	if (dropped)
		log_line("starttls dropped_bytes=%llu client=%s port=%u",
			 (unsigned long long)dropped, c->addr, c->port);
	tlspump_begin(sh, c);
}

/* Whether a TLS session should decrypt more now: the engine took all it had. */
bool tlspump_more(const struct conn *c)
{
	return c->tls && c->ct.head != BUF_NONE && c->in.head == BUF_NONE &&
	       c->phase < PH_CLOSING && !(c->flags & C_PLAIN_WAIT) &&
	       (c->smtp.state == SMTP_S_CMD || smtp_in_content(&c->smtp)) &&
	       OUT_CAP - c->out_len >= SMTP_OUT_RESERVE;
}
