/*
 * conn.c - a connection's life in its shard: its phase (one enum, changed
 * only by conn_enter), receive and send, deadlines, the SMTP engine fed from
 * the input queue (TLS decrypted first by tlspump.c), the one way a session
 * ends with a reply (conn_end), and the lingering close.
 *
 * A connection owns no receive buffer while idle: its multishot recv takes
 * buffers from the shard's ring as bytes arrive. At most one send is in
 * flight; replies produced meanwhile are batched into the next one (RFC
 * 2920). Backpressure: when the ring runs dry the recv ends with -ENOBUFS
 * and the connection is queued as starved, re-armed once buffers come back;
 * one with more than IN_PAUSE_BUFS buffers of unread input (a client that
 * pipelines while its message is being stored) has its recv cancelled until
 * the input is consumed.
 *
 * Phases, in order (shard_int.h): FREE -> ACCEPTED -> [PROXY] ->
 * [PREGREET | HANDSHAKE] -> SESSION (-> HANDSHAKE -> SESSION after
 * STARTTLS) -> CLOSING -> LINGER -> SHUT -> FREE; any phase may go straight
 * to CLOSING (a reply, then close) or SHUT (close now). conn_enter asserts
 * that each change is one of these, and logs it with log_level = debug.
 */
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "shard_int.h"

static const char *const phase_names[] = {
    [PH_FREE] = "free",		[PH_ACCEPTED] = "accepted",   [PH_PROXY] = "proxy",
    [PH_PREGREET] = "pregreet", [PH_HANDSHAKE] = "handshake", [PH_SESSION] = "session",
    [PH_CLOSING] = "closing",	[PH_LINGER] = "linger",	      [PH_SHUT] = "shut",
};

#define PH(x) (1u << (x))
/* The phases each phase may move to. */
static const uint16_t phase_next[] = {
    [PH_FREE] = PH(PH_ACCEPTED),
    [PH_ACCEPTED] = PH(PH_PROXY) | PH(PH_PREGREET) | PH(PH_HANDSHAKE) | PH(PH_SESSION) |
		    PH(PH_CLOSING) | PH(PH_SHUT),
    [PH_PROXY] = PH(PH_PREGREET) | PH(PH_HANDSHAKE) | PH(PH_SESSION) | PH(PH_CLOSING) | PH(PH_SHUT),
    [PH_PREGREET] = PH(PH_SESSION) | PH(PH_CLOSING) | PH(PH_SHUT),
    [PH_HANDSHAKE] = PH(PH_SESSION) | PH(PH_CLOSING) | PH(PH_SHUT),
    [PH_SESSION] = PH(PH_HANDSHAKE) | PH(PH_CLOSING) | PH(PH_SHUT),
    [PH_CLOSING] = PH(PH_LINGER) | PH(PH_SHUT),
    [PH_LINGER] = PH(PH_SHUT),
    [PH_SHUT] = PH(PH_FREE),
};
static_assert(sizeof(phase_names) / sizeof(phase_names[0]) == PH_SHUT + 1, "a name a phase");
static_assert(sizeof(phase_next) / sizeof(phase_next[0]) == PH_SHUT + 1, "moves of each phase");

void conn_enter(struct shard *sh, struct conn *c, enum conn_phase ph)
{
	ASSERT(ph <= PH_SHUT && (phase_next[c->phase] & PH(ph)));
	if (log_debugging())
		log_line("debug conn shard=%u slot=%u client=%s port=%u phase=%s->%s", sh->id,
			 conn_slot(sh, c), c->addr, c->port, phase_names[c->phase],
			 phase_names[ph]);
	c->phase = (uint8_t)ph;
}

struct conn *conn_open(struct shard *sh, int fd, unsigned li, const struct sockaddr_storage *ss,
		       bool peer, uint32_t ip_bucket)
{
	uint32_t slot = sh->free_head;
	ASSERT(slot != NONE32); /* the caller refused the socket when none is free */
	struct conn *c = &sh->conns[slot];
	ASSERT(c->phase == PH_FREE);
	sh->free_head = c->next_dirty;
	sh->nopen++;
	uint32_t gen = c->gen;
	memset(c, 0, sizeof(*c));
	c->gen = gen;
	c->fd = fd;
	c->li = (uint8_t)li;
	c->in.head = c->in.tail = c->ct.head = c->ct.tail = c->feed_buf = BUF_NONE;
	c->start_ms = mono_coarse_ms();
	c->ip_bucket = ip_bucket;
	snprintf(c->addr, sizeof(c->addr), "unknown");
	if (peer)
		admit_set_addr(c, ss);
	conn_enter(sh, c, PH_ACCEPTED);
	stat_add(&sh->stats.conns_accepted, 1);
	smtp_init(&c->smtp, sh->sconf, &txn_hooks, c);
	c->smtp.client = c->addr;
	return c;
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
	*head = conn_slot(sh, c);
}

void conn_mark_dirty(struct shard *sh, struct conn *c)
{
	list_push(sh, &sh->dirty_head, c, C_DIRTY, &c->next_dirty);
}

void conn_starve(struct shard *sh, struct conn *c)
{
	list_push(sh, &sh->starved_head, c, C_STARVED, &c->next_starved);
}

void conn_plain_wait(struct shard *sh, struct conn *c)
{
	list_push(sh, &sh->wait_head, c, C_PLAIN_WAIT, &c->next_wait);
}

void conn_arm_recv(struct shard *sh, struct conn *c)
{
	uint32_t slot = conn_slot(sh, c);
	struct io_uring_sqe *sqe = shard_sqe(sh);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	io_uring_sqe_set_data64(sqe, ud_encode(OP_RECV, slot, c->gen));
	c->flags |= C_RECV;
	c->nops++;
}

static void cancel_recv(struct shard *sh, struct conn *c)
{
	uint32_t slot = conn_slot(sh, c);
	struct io_uring_sqe *sqe = shard_sqe(sh);
	io_uring_prep_cancel64(sqe, ud_encode(OP_RECV, slot, c->gen), 0);
	io_uring_sqe_set_data64(sqe, ud_encode(OP_CANCEL, slot, c->gen));
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
void conn_set_deadline(struct shard *sh, struct conn *c)
{
	uint32_t slot = conn_slot(sh, c);
	unsigned rate = sh->cfg->min_data_rate;
	if (!smtp_in_content(&c->smtp)) {
		c->content_start_s = 0;
		if (c->phase == PH_HANDSHAKE) {
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
void conn_input_drop(struct shard *sh, struct conn *c)
{
	bufpool_drop(sh, &c->in);
	bufpool_drop(sh, &c->ct);
	c->line_len = 0;
}

static void conn_log_end(struct shard *sh, struct conn *c)
{
	char helo[LOG_CLIENT_TEXT_MAX * 4 + 8];
	log_escape(helo, sizeof(helo), c->helo ? c->helo : "", c->helo ? strlen(c->helo) : 0,
		   LOG_CLIENT_TEXT_MAX);
	char tls[TLS_DESC_MAX] = "none";
	int resumed = 0;
	if (c->flags & C_TLS_UP)
		tls_describe(c->tls, tls, sizeof(tls), &resumed);
	log_line("session end shard=%u client=%s port=%u helo=\"%s\" msgs=%u errors=%u "
		 "tls=\"%s\"%s duration_ms=%llu reason=%s",
		 sh->id, c->addr, c->port, helo, c->nmsgs, c->smtp.errors, tls,
		 resumed ? " tls_resumed=yes" : "",
		 (unsigned long long)(mono_coarse_ms() - c->start_ms),
		 c->reason ? c->reason : "close");
}

/* Frees the slot once nothing is in flight for it. */
void conn_release(struct shard *sh, struct conn *c)
{
	/* A slot on the dirty or starved list is released by pass_end, which
	 * walks those lists: their links must not be reused before. */
	if (c->nops > 0 || c->phase == PH_FREE || (c->flags & (C_DIRTY | C_STARVED | C_PLAIN_WAIT)))
		return;
	uint32_t slot = conn_slot(sh, c);
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
	c->line = c->out = c->snd = NULL;
	c->helo = NULL;
	conn_enter(sh, c, PH_FREE);
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
	conn_input_drop(sh, c);
	conn_log_end(sh, c);
	admit_ip_release(c);
}

/* Shuts the connection down now; the slot is freed when its ops complete. */
void conn_close(struct shard *sh, struct conn *c, const char *reason)
{
	if (c->phase == PH_SHUT)
		return;
	if (c->phase != PH_LINGER)
		conn_finish(sh, c, reason);
	conn_enter(sh, c, PH_SHUT);
	timer_cancel(&sh->wheel, conn_slot(sh, c));
	/* Ends the multishot recv and any send. With nothing in flight (a
	 * lingering close whose client has closed too: most sessions) the close
	 * in conn_release does the same, a system call fewer. */
	if (c->nops > 0)
		shutdown(c->fd, SHUT_RDWR);
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
	conn_enter(sh, c, PH_LINGER);
	c->flags &= (uint16_t)~C_PAUSED;
	c->linger_bytes = 0;
	shutdown(c->fd, SHUT_WR);
	timer_set(&sh->wheel, conn_slot(sh, c), sh->now_s + LINGER_S);
	if (!(c->flags & (C_RECV | C_STARVED)))
		conn_arm_recv(sh, c);
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
			conn_arm_recv(sh, c);
		return;
	}
	if (res == -ENOBUFS) {
		conn_starve(sh, c); /* re-armed when buffers return */
		return;
	}
	if (res == -ECANCELED && !(c->flags & C_RECV)) {
		conn_arm_recv(sh, c); /* the pause's cancel, from before the linger */
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
	struct io_uring_sqe *sqe = shard_sqe(sh);
	io_uring_prep_send(sqe, c->fd, c->snd, c->snd_len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_encode(OP_SEND, conn_slot(sh, c), c->gen));
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
void conn_flush(struct shard *sh, struct conn *c)
{
	if (c->phase >= PH_LINGER || c->phase == PH_FREE)
		return;
	if ((c->flags & C_TLS_UP) && c->out_len > 0) {
		if (tls_write(c->tls, c->out, c->out_len) != TLS_OK) {
			log_line("tls error client=%s port=%u error=\"%s\"", c->addr, c->port,
				 tls_error(c->tls));
			conn_close(sh, c, "tls-error");
			return;
		}
		c->out_len = 0;
	}
	if ((c->flags & C_TLS_UP) && c->phase == PH_CLOSING && !(c->flags & C_NOTIFIED)) {
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
	} else if (c->phase == PH_CLOSING) {
		conn_linger(sh, c);
	}
}

int conn_ensure_out(struct conn *c)
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
			c->reason = c->smtp.errors >= sh->cfg->error_limit ? "too-many-errors"
				    : c->smtp.blocked			   ? "dnsbl"
									   : "quit";
		conn_enter(sh, c, PH_CLOSING);
		conn_input_drop(sh, c);
		return false;
	}
	return false;
}

/*
 * Feeds queued plaintext to the engine until it is used up, the engine waits
 * (end of data with the writer, a full reply buffer) or the session ends.
 * false = the connection was closed.
 */
static bool engine_run(struct shard *sh, struct conn *c)
{
	if (conn_ensure_out(c) != 0) {
		conn_close(sh, c, "nomem");
		return false;
	}
	/* Bounded: each pass consumes input or stops. */
	for (uint32_t guard = 0;; guard++) {
		ASSERT(guard < 4u * sh->nbufs + 8);
		if (c->smtp.state == SMTP_S_WAIT || c->phase >= PH_CLOSING)
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
		const uint8_t *p = bufpool_addr(sh, b) + c->in.off;
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
			bufpool_pop(sh, &c->in);
	}
	return true;
}

void conn_process(struct shard *sh, struct conn *c)
{
	if (c->phase == PH_SHUT || c->phase == PH_FREE)
		return;
	if (c->phase == PH_PREGREET) {
		/* Input waits for the greeting (admit_pregreet_done runs it). A
		 * stopping server answers 421 instead of a greeting (RFC 5321
		 * 3.1), without waiting for the DNS lists or pregreet_wait. */
		if (sh->stopping)
			conn_end(sh, c, SMTP_END_SHUTDOWN, "shutdown");
		else if (c->flags & C_PEER_EOF && c->in.head == BUF_NONE && c->ct.head == BUF_NONE)
			conn_close(sh, c, "peer-closed");
		return;
	}
	conn_mark_dirty(sh, c);
	if (c->phase >= PH_CLOSING)
		return;
	/* Under TLS, decrypting stops at IN_PAUSE_BUFS plaintext buffers: once
	 * the engine has used them, decrypt again (bounded like the queues). */
	for (uint32_t round = 0;; round++) {
		ASSERT(round < 2u * (sh->nbufs + sh->nplain) + 2);
		bool starved = false;
		if (c->tls && !tlspump_run(sh, c, &starved))
			return;
		if (!engine_run(sh, c))
			return;
		if (starved || !tlspump_more(c))
			break;
	}
	if (c->smtp.state == SMTP_S_STARTTLS && !c->tls) {
		tlspump_starttls(sh, c);
		if (c->phase == PH_SHUT)
			return;
	}
	if (c->flags & C_PAUSED && c->in.n + c->ct.n < IN_PAUSE_BUFS / 2 && !(c->flags & C_RECV) &&
	    !(c->flags & C_PEER_EOF)) {
		c->flags &= ~C_PAUSED;
		conn_arm_recv(sh, c);
	}
	if (c->flags & C_PEER_EOF && c->in.head == BUF_NONE && c->ct.head == BUF_NONE &&
	    c->smtp.state != SMTP_S_WAIT && c->phase < PH_CLOSING) {
		/* Nothing more will come: what is unanswered is answered, then close. */
		c->reason = c->reason ? c->reason : "peer-closed";
		conn_enter(sh, c, PH_CLOSING);
	}
	if (sh->stopping && !smtp_in_transaction(&c->smtp) && c->smtp.state == SMTP_S_CMD &&
	    c->phase < PH_CLOSING) {
		conn_end(sh, c, SMTP_END_SHUTDOWN, "shutdown");
		return;
	}
	if (c->out && c->out_len == 0) {
		free(c->out);
		c->out = NULL;
	}
	if (c->phase ==
	    PH_CLOSING) /* replies out, then close: even for a client that never reads */
		timer_set(&sh->wheel, conn_slot(sh, c), sh->now_s + CLOSE_WAIT_S);
	else
		conn_set_deadline(sh, c);
}

/* The client is known: TLS first (smtps_listen), the pre-greeting wait, or the greeting. */
void conn_session_start(struct shard *sh, struct conn *c)
{
	if (c->li >= sh->cfg->nlisten) {
		/* Implicit TLS (RFC 8314): the handshake first, the greeting inside it. */
		c->implicit_tls = 1;
		if (!tlspump_begin(sh, c))
			return;
		/* What followed a PROXY header is the start of the ClientHello. */
		c->ct = c->in;
		c->in.head = c->in.tail = BUF_NONE;
		c->in.n = 0;
		c->in.off = 0;
	} else if (sh->cfg->pregreet_wait && c->in.n) {
		/* A legitimate client waits for the greeting; one that talks first
		 * is refused (the pre-greeting test of Postfix's postscreen). */
		admit_pregreet_talker(sh, c);
		return;
	} else if (admit_dnsbl_begin(sh, c) | (sh->cfg->pregreet_wait != 0)) {
		/* The greeting waits for pregreet_wait, the DNS lists, or both. */
		conn_enter(sh, c, PH_PREGREET);
		if (!(c->flags & C_RECV))
			conn_arm_recv(sh, c);
		if (sh->cfg->pregreet_wait) {
			c->flags |= C_GREET_WAIT;
			/* Whole seconds on the wheel: wait at least pregreet_wait. */
			timer_set(&sh->wheel, conn_slot(sh, c),
				  sh->now_s + sh->cfg->pregreet_wait + 1);
		} else {
			timer_set(&sh->wheel, conn_slot(sh, c),
				  c->start_ms / 1000 + (sh->cfg->dnsbl_timeout_ms + 999) / 1000 +
				      2 +
				      (sh->cfg->proxy_protocol != PROXY_PROTOCOL_NONE
					   ? sh->cfg->proxy_timeout
					   : 0));
		}
		return;
	} else {
		conn_enter(sh, c, PH_SESSION);
		struct smtp_out out = {.buf = c->out, .len = 0, .cap = OUT_CAP};
		smtp_greet(&c->smtp, &out);
		c->out_len = (uint32_t)out.len;
	}
	if (!(c->flags & C_RECV))
		conn_arm_recv(sh, c);
	conn_set_deadline(sh, c);
	conn_mark_dirty(sh, c);
	if (c->in.n || c->ct.n)
		conn_process(sh, c); /* bytes that came with the PROXY header */
}

void conn_on_recv(struct shard *sh, struct io_uring_cqe *cqe, struct conn *c)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (!more) {
		c->flags &= ~C_RECV;
		c->nops--;
	}
	if (cqe->res > 0) {
		ASSERT(cqe->flags & IORING_CQE_F_BUFFER);
		uint16_t b = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		bufpool_take(sh, b);
		if (c->phase == PH_SHUT) {
			bufpool_put(sh, b);
			conn_release(sh, c);
			return;
		}
		if (c->phase == PH_LINGER) {
			bufpool_put(sh, b);
			linger_input(sh, c, (uint32_t)cqe->res, cqe->res, more);
			return;
		}
		c->flags |= C_RX;
		/* Under TLS the bytes are ciphertext for wolfSSL, else input for the engine. */
		struct bufq *q = c->tls ? &c->ct : &c->in;
		bufpool_push(sh, q, b, (uint32_t)cqe->res);
		if (c->phase == PH_PREGREET && (c->flags & C_GREET_WAIT)) {
			admit_pregreet_talker(sh, c);
			if (!more && c->phase != PH_SHUT)
				conn_arm_recv(sh,
					      c); /* to see the EOF; input is dropped on close */
			return;
		}
		if (c->phase == PH_PREGREET) {
			/* Only the DNS lists hold the greeting: the input waits for it, as
			 * pipelined commands, up to the pause bound. */
			if (c->in.n + c->ct.n > IN_PAUSE_BUFS && (c->flags & C_RECV) &&
			    !(c->flags & C_PAUSED)) {
				c->flags |= C_PAUSED;
				stat_add(&sh->stats.recv_paused, 1);
				cancel_recv(sh, c);
			}
			if (!more && c->phase != PH_SHUT && !(c->flags & C_PAUSED))
				conn_arm_recv(sh, c);
			return;
		}
		if (c->phase == PH_PROXY) {
			admit_proxy_input(sh, c);
			if (!more && c->phase != PH_SHUT && !(c->flags & C_RECV))
				conn_arm_recv(sh, c);
			return;
		}
		if (c->in.n + c->ct.n > IN_PAUSE_BUFS && (c->flags & C_RECV) &&
		    !(c->flags & C_PAUSED)) {
			c->flags |= C_PAUSED;
			stat_add(&sh->stats.recv_paused, 1);
			cancel_recv(sh, c);
		}
		conn_process(sh, c);
		if (!more && c->phase != PH_SHUT && !(c->flags & C_PAUSED))
			conn_arm_recv(sh, c);
		return;
	}
	if (c->phase == PH_SHUT) {
		conn_release(sh, c);
		return;
	}
	if (c->phase == PH_LINGER) {
		linger_input(sh, c, 0, cqe->res, more);
		return;
	}
	if (cqe->res == -ENOBUFS) {
		stat_add(&sh->stats.enobufs, 1);
		conn_starve(sh, c);
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

void conn_on_send(struct shard *sh, struct io_uring_cqe *cqe, struct conn *c)
{
	c->nops--;
	c->flags &= ~C_SEND;
	if (c->phase == PH_SHUT) {
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
		struct io_uring_sqe *sqe = shard_sqe(sh);
		io_uring_prep_send(sqe, c->fd, c->snd + c->snd_off, c->snd_len - c->snd_off,
				   MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, ud_encode(OP_SEND, conn_slot(sh, c), c->gen));
		c->flags |= C_SEND;
		c->nops++;
		return;
	}
	/* An idle connection keeps no reply buffer. */
	free(c->snd);
	c->snd = NULL;
	conn_process(sh, c); /* the engine may have stopped for a full out; closes if due */
}

void conn_end(struct shard *sh, struct conn *c, enum smtp_end why, const char *reason)
{
	if (why == SMTP_END_SILENT) {
		smtp_end(&c->smtp, why, NULL);
	} else if (conn_ensure_out(c) == 0) {
		struct smtp_out out = {.buf = c->out, .len = c->out_len, .cap = OUT_CAP};
		smtp_end(&c->smtp, why, &out);
		c->out_len = (uint32_t)out.len;
	} else {
		conn_close(sh, c, "nomem");
		return;
	}
	c->reason = reason;
	conn_input_drop(sh, c);
	conn_enter(sh, c, PH_CLOSING);
	timer_set(&sh->wheel, conn_slot(sh, c), sh->now_s + CLOSE_WAIT_S);
	conn_mark_dirty(sh, c);
}

void conn_expire(struct shard *sh, struct conn *c)
{
	switch ((enum conn_phase)c->phase) {
	case PH_FREE:
	case PH_SHUT:
		return;
	case PH_LINGER:
		linger_expire(sh, c); /* lingered long enough */
		return;
	case PH_PREGREET:
		admit_pregreet_expire(sh, c);
		return;
	case PH_ACCEPTED:
		conn_close(sh, c, "timeout"); /* not reached: the session starts at once */
		return;
	case PH_PROXY:
		log_line("proxy error balancer=%s port=%u error=\"no whole PROXY header within "
			 "proxy_timeout\"",
			 c->addr, c->port);
		stat_add(&sh->stats.proxy_errors, 1);
		conn_close(sh, c, "proxy-timeout");
		return;
	case PH_CLOSING:
		conn_close(sh, c, NULL); /* a client that does not read its replies */
		return;
	case PH_HANDSHAKE:
		conn_close(sh, c, "tls-handshake-timeout"); /* no plaintext 421 here */
		return;
	case PH_SESSION:
		if (c->smtp.state == SMTP_S_WAIT)
			conn_set_deadline(sh, c); /* the writer has it: not the client's fault */
		else
			conn_end(sh, c, SMTP_END_TIMEOUT, "timeout");
		return;
	}
	ASSERT(0);
}

/*
 * Few buffers left: the bodies being gathered hold them. Send every
 * non-empty partial body to its writer as a part, so that buffers come back
 * even when each message is still below body_flush_bytes (many slow
 * clients each holding a little would otherwise pin the whole ring).
 */
void conn_relieve_pressure(struct shard *sh)
{
	for (uint32_t i = 0; i < sh->cap; i++) {
		struct conn *c = &sh->conns[i];
		/* A TLS record waiting in place gives its buffers back too. */
		if (c->phase == PH_FREE || c->phase == PH_SHUT)
			continue;
		if (c->flags & C_TLS_UP)
			tlspump_hold(sh, c, true);
		if (c->msg && c->msg->nslices > 0 && smtp_in_content(&c->smtp) &&
		    txn_flush_part(sh, c) == -EAGAIN)
			break; /* that writer's ring is full: try on a later pass */
	}
}
