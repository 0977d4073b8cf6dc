/*
 * client.c - a client thread of mxring-bench: one io_uring, its connections.
 *
 * Each connection is a state machine (enum cstate) driven by completions:
 *
 *   IDLE -claim-> CONNECT -> [TLS if --tls] -> BANNER -> EHLO
 *        [-> STARTTLS -> TLS -> EHLO if --starttls] -> READY
 *   READY -> TXN -> READY ... (K transactions, RSET after a failed one)
 *   READY -> QUIT -> CLOSE -> IDLE (next connection) or DONE
 *
 * What a connection sends is a plan: iovecs cut into steps, each answered
 * by one reply (MAIL, each RCPT, DATA, the body, each BDAT chunk). A step
 * is released for sending when the protocol allows it: with PIPELINING
 * (RFC 2920) every step up to DATA (or every BDAT chunk, RFC 3030) at
 * once, the body after 354; without it, one step per reply. Replies are
 * checked in order against the steps. Body bytes are never copied: the
 * plan points into the shared template (gen.c); only TLS stages plaintext
 * into one record before wolfSSL encrypts it.
 *
 * Invariants: a connection has at most one connect, one recv and one send
 * in flight (counted in inflight); its slot is reused only when inflight
 * is 0, so a completion always finds the connection it was meant for.
 * While connected a recv is always armed, so a server that closes or says
 * 421 is seen at once. Every wait has a deadline (--timeout, refreshed by
 * progress), checked every SCAN_NS by a pass over the connections.
 *
 * Open loop (--rate): a connection that may start a message but finds none
 * due, or finds others already waiting, is parked on a FIFO list and woken
 * when the next one is due: connections take turns.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include "client.h"
#include "gen.h"
#include "tlsclient.h"

#define RX_CAP	      4096u	   /* plaintext replies not yet parsed */
#define CRX_CAP	      (16u * 1024) /* ciphertext not yet taken by wolfSSL */
#define SCAN_NS	      (50 * 1000000LL)
#define CLOSE_WAIT_NS (2 * 1000000000LL) /* after 221: wait this long for the server's FIN */
#define ACK_BUF_CAP   (64u * 1024)
#define RING_MAX      16384u

#define ASSERT(x)                                                                                  \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, BENCH_NAME ": %s:%d: assertion failed: %s\n", __FILE__,    \
				__LINE__, #x);                                                     \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

enum op { OP_CONNECT = 1, OP_RECV, OP_SEND, OP_CANCEL };

enum cstate {
	CS_IDLE,     /* no connection */
	CS_CONNECT,  /* connect in flight */
	CS_BANNER,   /* waiting for the 220 greeting */
	CS_TLS,	     /* handshake (implicit TLS, or after STARTTLS) */
	CS_EHLO,     /* waiting for the EHLO reply */
	CS_STARTTLS, /* waiting for 220 to STARTTLS */
	CS_READY,    /* session open, between transactions */
	CS_TXN,	     /* a transaction's replies are due */
	CS_RSET,
	CS_QUIT,
	CS_CLOSE, /* waiting for in-flight operations (or the server's FIN) */
	CS_DONE,  /* no more messages for this connection slot */
};

enum step_kind { ST_MAIL, ST_RCPT, ST_DATA, ST_BODY, ST_BDAT, ST_BDAT_LAST, ST_CMD };

struct step {
	uint32_t iov_end; /* the step is iov[previous step's iov_end .. iov_end) */
	uint8_t kind;
};

struct conn {
	struct client *cl; /* borrowed */
	unsigned num;	   /* connection number in the run (%c) */
	unsigned slot;	   /* index in cl->conns */
	unsigned gen;	   /* +1 per closed connection: stale-state guard */
	int fd;
	enum cstate state;
	uint8_t inflight;
	bool connected, recv_armed, send_armed, send_was_tls, recv_to_crx, cancel_sent;
	bool parked, woken, need_rset, hs_done, data_end_seen;
	bool cap_pipelining, cap_chunking, cap_starttls, cap_size;
	int64_t deadline_ns; /* 0: none */
	int64_t t_connect_ns, t_hs_ns, t_data_end_ns;
	unsigned msgs_on_conn;
	/* The message this connection carries. */
	bool have_msg;
	uint64_t seq;
	int64_t due_ns;
	struct gen_msg msg;
	int fail_code;	  /* first 4xx/5xx of the transaction */
	unsigned rcpt_ok; /* recipients accepted in this transaction */
	/* The plan. */
	struct iovec *iov;  /* owned, iov_cap */
	struct step *steps; /* owned, steps_cap */
	uint8_t *txbuf;	    /* owned, txbuf_cap: command lines */
	uint32_t niov, nsteps, txbuf_len;
	uint32_t out_next; /* first iov not fully sent (or, with TLS, encrypted) */
	uint32_t steps_released, steps_acked;
	struct msghdr mh;
	uint8_t hdr[GEN_HDR_MAX];
	uint8_t rx[RX_CAP];
	size_t rx_len;
	uint8_t *crx; /* owned once TLS was used, CRX_CAP */
	size_t crx_len;
	uint8_t *stage;		   /* owned once TLS was used, TLSC_PLAIN_STEP */
	struct tlsc_conn *tls;	   /* owned while the connection has TLS */
	struct tlsc_session *sess; /* owned: the last session, for --resume */
	struct conn *park_prev, *park_next;
};

struct client {
	struct bench_run *run;	     /* borrowed */
	const struct bench_cfg *cfg; /* borrowed */
	unsigned index;
	struct io_uring ring;
	bool ring_ready;
	struct conn *conns; /* owned, nconn */
	unsigned nconn;
	unsigned active; /* connections not DONE */
	int64_t now;
	int64_t next_scan;
	int64_t next_due;
	struct conn *park_head, *park_tail;
	bool aborted;
	char tls_desc[80]; /* what the first handshake negotiated */
	char ehlo[300];
	uint32_t iov_cap, steps_cap, txbuf_cap;
	uint8_t *ack; /* owned, ACK_BUF_CAP: ack-log lines not yet written */
	size_t ack_len;
	struct bench_counters ctr;
	struct hist hist[BENCH_LAT__COUNT];
};

static const char R_QUIT[] = "QUIT\r\n";
static const char R_RSET[] = "RSET\r\n";
static const char R_STARTTLS[] = "STARTTLS\r\n";
static const char R_DOT[] = ".\r\n";

static void conn_next(struct conn *c);
static void conn_flush(struct conn *c);
static void conn_close(struct conn *c);
static void parse_replies(struct conn *c);

/* ---- small helpers ------------------------------------------------------ */

static struct io_uring_sqe *sqe_get(struct client *cl)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&cl->ring);
	if (!sqe) {
		io_uring_submit(&cl->ring);
		sqe = io_uring_get_sqe(&cl->ring);
	}
	ASSERT(sqe);
	return sqe;
}

static uint64_t udata(const struct conn *c, enum op op)
{
	return (uint64_t)c->slot << 8 | (uint64_t)op;
}

static void touch(struct conn *c)
{
	c->deadline_ns = c->cl->now + (int64_t)(c->cl->cfg->timeout_s * 1e9);
}

static void enter(struct conn *c, enum cstate st)
{
	c->state = st;
	touch(c);
}

static const char *step_name(int kind)
{
	static const char *const names[] = {"MAIL", "RCPT",	 "DATA",   "end of data",
					    "BDAT", "BDAT LAST", "command"};
	return names[kind];
}

/* What the connection waits for, for error messages. */
static const char *conn_what(const struct conn *c)
{
	switch (c->state) {
	case CS_CONNECT:
		return "connect";
	case CS_BANNER:
		return "the greeting";
	case CS_TLS:
		return "the TLS handshake";
	case CS_EHLO:
		return "EHLO";
	case CS_STARTTLS:
		return "STARTTLS";
	case CS_TXN:
		if (c->steps_acked < c->nsteps)
			return step_name(c->steps[c->steps_acked].kind);
		return "the transaction";
	case CS_RSET:
		return "RSET";
	case CS_QUIT:
		return "QUIT";
	default:
		return "nothing (idle)";
	}
}

static uint32_t released_end(const struct conn *c)
{
	return c->steps_released ? c->steps[c->steps_released - 1].iov_end : 0;
}

/*
 * The plan may be replaced: every released byte is sent (plaintext: no
 * send in flight still reads txbuf or hdr) or, with TLS, encrypted.
 */
static bool plan_done(const struct conn *c)
{
	return c->out_next >= released_end(c) && !(c->send_armed && !c->send_was_tls);
}

/* Every released byte has left: nothing in flight, nothing queued. */
static bool drained(const struct conn *c)
{
	if (c->send_armed || c->out_next < released_end(c))
		return false;
	if (c->tls) {
		size_t len;
		tlsc_output(c->tls, &len);
		return len == 0;
	}
	return true;
}

/* ---- errors ------------------------------------------------------------- */

static void count_error(struct conn *c, enum bench_err e)
{
	struct bench_run *run = c->cl->run;
	ctr_add(&c->cl->ctr.err[e], 1);
	ctr_add(&c->cl->ctr.errors, 1);
	uint64_t n = atomic_fetch_add(&run->errors, 1) + 1;
	uint64_t max = c->cl->cfg->max_errors;
	if (max && n >= max) {
		atomic_store(&run->stop, 2);
		if (atomic_exchange(&run->gave_up, 1) == 0)
			fprintf(stderr, BENCH_NAME ": %llu errors: giving up (--max-errors %llu)\n",
				(unsigned long long)n, (unsigned long long)max);
	}
}

/* A connection-level error: counted, reported, the message lost, the connection closed. */
__attribute__((format(printf, 3, 4))) static void conn_error(struct conn *c, enum bench_err e,
							     const char *fmt, ...)
{
	if (c->state == CS_CLOSE || c->state == CS_DONE)
		return;
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	count_error(c, e);
	bench_report_error(c->cl->run, e, "connection %u: %s", c->num, text);
	if (c->have_msg) {
		ctr_add(&c->cl->ctr.failed, 1);
		c->have_msg = false;
	}
	conn_close(c);
}

/* ---- the plan ----------------------------------------------------------- */

static void plan_reset(struct conn *c)
{
	ASSERT(plan_done(c));
	c->niov = c->nsteps = c->txbuf_len = 0;
	c->out_next = c->steps_released = c->steps_acked = 0;
}

static void plan_iov(struct conn *c, const void *p, size_t len)
{
	if (len == 0)
		return;
	ASSERT(c->niov < c->cl->iov_cap);
	c->iov[c->niov].iov_base = (void *)p;
	c->iov[c->niov].iov_len = len;
	c->niov++;
}

static void plan_step(struct conn *c, enum step_kind kind)
{
	ASSERT(c->nsteps < c->cl->steps_cap);
	c->steps[c->nsteps].iov_end = c->niov;
	c->steps[c->nsteps].kind = (uint8_t)kind;
	c->nsteps++;
}

__attribute__((format(printf, 2, 3))) static void plan_text(struct conn *c, const char *fmt, ...)
{
	size_t room = c->cl->txbuf_cap - c->txbuf_len;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf((char *)c->txbuf + c->txbuf_len, room, fmt, ap);
	va_end(ap);
	ASSERT(n > 0 && (size_t)n < room);
	plan_iov(c, c->txbuf + c->txbuf_len, (size_t)n);
	c->txbuf_len += (uint32_t)n;
}

static void plan_release(struct conn *c, uint32_t steps)
{
	c->steps_released += steps;
	ASSERT(c->steps_released <= c->nsteps);
}

/* A one-step plan of a session command (EHLO, STARTTLS, RSET, QUIT), sent now. */
static void plan_cmd(struct conn *c, const char *cmd, enum cstate st)
{
	plan_reset(c);
	plan_iov(c, cmd, strlen(cmd));
	plan_step(c, ST_CMD);
	plan_release(c, 1);
	enter(c, st);
	conn_flush(c);
}

/* BDAT chunks over the message (header block, then body), each with its own command. */
static void plan_bdat(struct conn *c)
{
	const struct gen_msg *m = &c->msg;
	uint64_t total = m->size, chunk = c->cl->cfg->bdat_chunk ? c->cl->cfg->bdat_chunk : total;
	for (uint64_t off = 0; off < total; off += chunk) {
		uint64_t n = total - off < chunk ? total - off : chunk, end = off + n;
		bool last = end == total;
		plan_text(c, "BDAT %llu%s\r\n", (unsigned long long)n, last ? " LAST" : "");
		if (off < m->hdr_len)
			plan_iov(c, c->hdr + off, (end < m->hdr_len ? end : m->hdr_len) - off);
		if (end > m->hdr_len) {
			uint64_t b0 = off > m->hdr_len ? off - m->hdr_len : 0;
			plan_iov(c, m->body + b0, end - m->hdr_len - b0);
		}
		plan_step(c, last ? ST_BDAT_LAST : ST_BDAT);
	}
}

static int txn_build(struct conn *c)
{
	const struct bench_cfg *cfg = c->cl->cfg;
	char from[BENCH_ADDR_MAX], to[BENCH_ADDR_MAX], size[32] = "";
	if (gen_expand(cfg->from, c->seq, 0, c->num, from, sizeof(from)) < 0 ||
	    gen_expand(cfg->to, c->seq, 0, c->num, to, sizeof(to)) < 0)
		return -ENAMETOOLONG;
	int rc = gen_message(c->cl->run->gen, c->seq, from, to, c->hdr, &c->msg);
	if (rc)
		return rc;
	if (c->cap_size)
		snprintf(size, sizeof(size), " SIZE=%llu", (unsigned long long)c->msg.size);
	plan_reset(c);
	plan_text(c, "MAIL FROM:<%s>%s\r\n", from, size);
	plan_step(c, ST_MAIL);
	for (unsigned r = 0; r < cfg->rcpts; r++) {
		if (gen_expand(cfg->to, c->seq, r, c->num, to, sizeof(to)) < 0)
			return -ENAMETOOLONG;
		plan_text(c, "RCPT TO:<%s>\r\n", to);
		plan_step(c, ST_RCPT);
	}
	if (cfg->bdat) {
		plan_bdat(c);
		return 0;
	}
	plan_text(c, "DATA\r\n");
	plan_step(c, ST_DATA);
	plan_iov(c, c->hdr, c->msg.hdr_len);
	plan_iov(c, c->msg.body_stuffed, c->msg.body_stuffed_len);
	plan_iov(c, R_DOT, sizeof(R_DOT) - 1);
	plan_step(c, ST_BODY);
	return 0;
}

/* ---- sending ------------------------------------------------------------ */

static void iov_advance(struct conn *c, size_t n)
{
	while (n > 0) {
		struct iovec *v = &c->iov[c->out_next];
		if (n < v->iov_len) {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= n;
			return;
		}
		n -= v->iov_len;
		c->out_next++;
	}
}

/* Encrypts released plaintext into the TLS output, a record at a time, while it has room. */
static int tls_fill(struct conn *c)
{
	uint32_t end = released_end(c);
	size_t out;
	tlsc_output(c->tls, &out);
	while (c->out_next < end && out + TLSC_PLAIN_STEP + 1024 <= TLSC_OUT_MAX) {
		size_t n = 0;
		for (uint32_t i = c->out_next; i < end && n < TLSC_PLAIN_STEP; i++) {
			size_t take = c->iov[i].iov_len;
			if (take > TLSC_PLAIN_STEP - n)
				take = TLSC_PLAIN_STEP - n;
			memcpy(c->stage + n, c->iov[i].iov_base, take);
			n += take;
		}
		if (tlsc_write(c->tls, c->stage, n) != TLSC_OK)
			return -EIO;
		iov_advance(c, n);
		tlsc_output(c->tls, &out);
	}
	return 0;
}

static void conn_flush(struct conn *c)
{
	if (c->send_armed || c->fd < 0 || c->state == CS_CLOSE)
		return;
	struct io_uring_sqe *sqe;
	if (c->tls) {
		char why[160];
		if (c->hs_done && tls_fill(c) < 0) {
			conn_error(c, BENCH_ERR_TLS, "TLS write: %s",
				   tlsc_error(c->tls, why, sizeof(why)));
			return;
		}
		size_t len;
		const uint8_t *p = tlsc_output(c->tls, &len);
		if (len == 0)
			return;
		sqe = sqe_get(c->cl);
		io_uring_prep_send(sqe, c->fd, p, len, MSG_NOSIGNAL);
		c->send_was_tls = true;
	} else {
		uint32_t end = released_end(c);
		if (c->out_next >= end)
			return;
		uint32_t n = end - c->out_next;
		c->mh.msg_iov = c->iov + c->out_next;
		c->mh.msg_iovlen = n < IOV_MAX ? n : IOV_MAX;
		sqe = sqe_get(c->cl);
		io_uring_prep_sendmsg(sqe, c->fd, &c->mh, MSG_NOSIGNAL);
		c->send_was_tls = false;
	}
	io_uring_sqe_set_data64(sqe, udata(c, OP_SEND));
	c->send_armed = true;
	c->inflight++;
}

/* ---- connections -------------------------------------------------------- */

static void arm_recv(struct conn *c)
{
	if (c->recv_armed || c->fd < 0 || c->state == CS_CLOSE)
		return;
	uint8_t *p;
	size_t room;
	if (c->tls) {
		p = c->crx + c->crx_len;
		room = CRX_CAP - c->crx_len;
	} else {
		p = c->rx + c->rx_len;
		room = RX_CAP - c->rx_len;
	}
	if (room == 0) {
		conn_error(c, BENCH_ERR_PROTOCOL, "receive buffer full while waiting for %s",
			   conn_what(c));
		return;
	}
	struct io_uring_sqe *sqe = sqe_get(c->cl);
	io_uring_prep_recv(sqe, c->fd, p, room, 0);
	io_uring_sqe_set_data64(sqe, udata(c, OP_RECV));
	c->recv_to_crx = c->tls != NULL;
	c->recv_armed = true;
	c->inflight++;
}

static void park_unlink(struct conn *c)
{
	struct client *cl = c->cl;
	if (!c->parked)
		return;
	if (c->park_prev)
		c->park_prev->park_next = c->park_next;
	else
		cl->park_head = c->park_next;
	if (c->park_next)
		c->park_next->park_prev = c->park_prev;
	else
		cl->park_tail = c->park_prev;
	c->park_prev = c->park_next = NULL;
	c->parked = false;
}

static void park(struct conn *c, int64_t due_ns)
{
	struct client *cl = c->cl;
	ASSERT(!c->parked);
	c->parked = true;
	c->park_prev = cl->park_tail;
	c->park_next = NULL;
	if (cl->park_tail)
		cl->park_tail->park_next = c;
	else
		cl->park_head = c;
	cl->park_tail = c;
	cl->next_due = due_ns;
	c->deadline_ns = 0; /* waiting on the schedule, not on the server */
}

/* Moves a parked connection to the head of the list. */
static void park_to_front(struct conn *c)
{
	struct client *cl = c->cl;
	ASSERT(c->parked);
	if (cl->park_head == c)
		return;
	int64_t due = cl->next_due;
	park_unlink(c);
	c->parked = true;
	c->park_prev = NULL;
	c->park_next = cl->park_head;
	if (cl->park_head)
		cl->park_head->park_prev = c;
	else
		cl->park_tail = c;
	cl->park_head = c;
	cl->next_due = due;
}

/* The connection is gone (inflight 0): free its per-connection state, go on. */
static void conn_closed(struct conn *c)
{
	ASSERT(c->inflight == 0);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->connected)
		atomic_fetch_sub_explicit(&c->cl->ctr.conns_open, 1, memory_order_relaxed);
	c->connected = false;
	tlsc_conn_free(c->tls);
	c->tls = NULL;
	c->gen++;
	c->rx_len = c->crx_len = 0;
	c->cancel_sent = c->need_rset = c->hs_done = false;
	c->cap_pipelining = c->cap_chunking = c->cap_starttls = c->cap_size = false;
	c->msgs_on_conn = 0;
	c->niov = c->nsteps = c->out_next = c->steps_released = c->steps_acked = 0;
	c->deadline_ns = 0;
	c->state = CS_IDLE;
	conn_next(c);
}

/* Closes now: cancels what is in flight (a graceful wait for the FIN included). */
static void conn_close(struct conn *c)
{
	park_unlink(c);
	c->state = CS_CLOSE;
	c->deadline_ns = c->cl->now + (int64_t)(c->cl->cfg->timeout_s * 1e9);
	if (c->inflight == 0) {
		conn_closed(c);
		return;
	}
	if (!c->cancel_sent) {
		struct io_uring_sqe *sqe = sqe_get(c->cl);
		io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, udata(c, OP_CANCEL));
		c->cancel_sent = true;
	}
}

/* After 221: let the server close first (no TIME_WAIT here), for at most CLOSE_WAIT_NS. */
static void conn_close_wait(struct conn *c)
{
	park_unlink(c);
	c->state = CS_CLOSE;
	c->deadline_ns = c->cl->now + CLOSE_WAIT_NS;
	if (c->inflight == 0)
		conn_closed(c);
}

/* The slot cannot connect at all (no socket, an unusable source address):
 * counted, reported, the message lost, the slot done. */
static void conn_cannot(struct conn *c, const char *what, int e)
{
	count_error(c, BENCH_ERR_IO);
	bench_report_error(c->cl->run, BENCH_ERR_IO, "connection %u: %s: %s", c->num, what,
			   strerror(e));
	if (c->have_msg)
		ctr_add(&c->cl->ctr.failed, 1);
	c->have_msg = false;
	c->state = CS_DONE;
	c->cl->active--;
}

/*
 * --source: binds fd to ss. The port is left to connect
 * (IP_BIND_ADDRESS_NO_PORT), which picks one unique for the address pair,
 * so each source has the whole ephemeral range per server. 0 or -errno.
 */
static int source_bind(int fd, const struct sockaddr_storage *ss)
{
	socklen_t len =
	    ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	int one = 1;
	(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	return bind(fd, (const struct sockaddr *)ss, len) == 0 ? 0 : -errno;
}

static void conn_connect(struct conn *c)
{
	const struct bench_cfg *cfg = c->cl->cfg;
	int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		conn_cannot(c, "socket", errno);
		return;
	}
	if (cfg->nsources) {
		const struct sockaddr_storage *ss = &cfg->source[c->num % cfg->nsources];
		int rc = source_bind(fd, ss);
		if (rc) {
			char a[INET6_ADDRSTRLEN], what[INET6_ADDRSTRLEN + 16];
			snprintf(what, sizeof(what), "bind to %s",
				 bench_addr_text(ss, a, sizeof(a)));
			close(fd);
			conn_cannot(c, what, -rc);
			return;
		}
	}
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->t_connect_ns = c->cl->now;
	enter(c, CS_CONNECT);
	struct io_uring_sqe *sqe = sqe_get(c->cl);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen);
	io_uring_sqe_set_data64(sqe, udata(c, OP_CONNECT));
	c->inflight++;
}

static void conn_done(struct conn *c)
{
	c->state = CS_DONE;
	c->deadline_ns = 0;
	c->cl->active--;
}

static void txn_start(struct conn *c)
{
	const struct bench_cfg *cfg = c->cl->cfg;
	int rc = txn_build(c);
	if (rc) {
		conn_error(c, BENCH_ERR_PROTOCOL, "cannot build message %llu: %s",
			   (unsigned long long)c->seq, strerror(-rc));
		return;
	}
	c->fail_code = 0;
	c->rcpt_ok = 0;
	c->data_end_seen = false;
	enter(c, CS_TXN);
	if (!cfg->pipelining)
		plan_release(c, 1);
	else if (cfg->bdat)
		plan_release(c, c->nsteps);
	else
		plan_release(c, c->nsteps - 1); /* the body waits for 354 */
	conn_flush(c);
}

/* Decides what a connection does next when it has nothing in progress. */
static void conn_next(struct conn *c)
{
	struct client *cl = c->cl;
	int stop = atomic_load_explicit(&cl->run->stop, memory_order_relaxed);
	bool woken = c->woken; /* taken off the park list for this call */
	c->woken = false;
	if (c->state == CS_IDLE) {
		if (stop) {
			conn_done(c);
			return;
		}
		enum bench_claim r = bench_claim(cl->run, cl->now, &c->seq, &c->due_ns);
		if (r == BENCH_CLAIM_DONE)
			conn_done(c);
		else if (r == BENCH_CLAIM_WAIT)
			park(c, c->due_ns);
		else {
			c->have_msg = true;
			conn_connect(c);
		}
		return;
	}
	if (c->state != CS_READY || !plan_done(c))
		return;
	if (stop == 2) {
		conn_close(c);
		return;
	}
	if (c->need_rset) {
		c->need_rset = false;
		plan_cmd(c, R_RSET, CS_RSET);
		return;
	}
	if (!c->have_msg) {
		if (stop || c->msgs_on_conn >= cl->cfg->msgs_per_conn) {
			plan_cmd(c, R_QUIT, CS_QUIT);
			return;
		}
		/* Open loop: connections take turns. One that just finished a
		 * transaction queues behind those already waiting, so each
		 * carries messages in its turn and all N are open after N
		 * messages (a due message goes to the longest waiting). */
		if (cl->cfg->rate > 0 && cl->park_head && !woken) {
			park(c, cl->next_due);
			return;
		}
		enum bench_claim r = bench_claim(cl->run, cl->now, &c->seq, &c->due_ns);
		if (r == BENCH_CLAIM_DONE) {
			plan_cmd(c, R_QUIT, CS_QUIT);
			return;
		}
		if (r == BENCH_CLAIM_WAIT) {
			park(c, c->due_ns);
			return;
		}
		c->have_msg = true;
	}
	txn_start(c);
}

/* ---- replies ------------------------------------------------------------ */

static void ack_flush(struct client *cl)
{
	size_t off = 0;
	while (off < cl->ack_len) {
		ssize_t n = write(cl->run->ack_fd, cl->ack + off, cl->ack_len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, BENCH_NAME ": --ack-log: write: %s\n",
				n < 0 ? strerror(errno) : "no progress");
			break;
		}
		off += (size_t)n;
	}
	cl->ack_len = 0;
}

/* The queue id in a final reply: the word after "queued as", else its last word. */
static void reply_qid(const char *text, size_t len, char *qid, size_t cap)
{
	const char *p = text, *end = text + len, *w = NULL;
	static const char key[] = "queued as ";
	for (const char *q = text; q + sizeof(key) - 1 <= end; q++)
		if (strncasecmp(q, key, sizeof(key) - 1) == 0) {
			w = q + sizeof(key) - 1;
			break;
		}
	if (!w) {
		w = p;
		for (const char *q = p; q < end; q++)
			if (*q == ' ')
				w = q + 1;
	}
	size_t n = 0;
	while (w < end && n + 1 < cap &&
	       (isalnum((unsigned char)*w) || *w == '-' || *w == '.' || *w == '_'))
		qid[n++] = *w++;
	if (n == 0)
		qid[n++] = '-';
	qid[n] = 0;
}

static void txn_accepted(struct conn *c, const char *text, size_t len)
{
	struct client *cl = c->cl;
	ctr_add(&cl->ctr.accepted, 1);
	ctr_add(&cl->ctr.bytes, c->msg.size);
	if (c->data_end_seen)
		hist_record(&cl->hist[BENCH_LAT_DATA_END], (uint64_t)(cl->now - c->t_data_end_ns));
	hist_record(&cl->hist[BENCH_LAT_MESSAGE],
		    (uint64_t)(cl->now > c->due_ns ? cl->now - c->due_ns : 0));
	if (cl->run->ack_fd < 0)
		return;
	char qid[72];
	reply_qid(text, len, qid, sizeof(qid));
	if (cl->ack_len + 200 > ACK_BUF_CAP)
		ack_flush(cl);
	cl->ack_len += (size_t)snprintf(
	    (char *)cl->ack + cl->ack_len, ACK_BUF_CAP - cl->ack_len, "%s-%llu %s %llu\n",
	    cl->run->run_id, (unsigned long long)c->seq, qid, (unsigned long long)c->msg.size);
}

/* The transaction is over: final says whether its last reply (to the body) came. */
static void txn_end(struct conn *c, int code, bool final, const char *text, size_t len)
{
	struct client *cl = c->cl;
	if (final && code / 100 == 2) {
		txn_accepted(c, text, len);
	} else {
		if (c->fail_code)
			code = c->fail_code;
		ctr_add(code / 100 == 4 ? &cl->ctr.tempfail : &cl->ctr.rejected, 1);
		c->need_rset = !final;
	}
	c->have_msg = false;
	c->msgs_on_conn++;
	enter(c, CS_READY);
	conn_next(c);
}

/* Whether the transaction goes on after step kind got its reply (without PIPELINING). */
static bool txn_goes_on(const struct conn *c, int kind, bool ok)
{
	if (kind != ST_RCPT)
		return ok;
	bool more_rcpts = c->steps_acked < c->nsteps && c->steps[c->steps_acked].kind == ST_RCPT;
	return more_rcpts || c->rcpt_ok > 0;
}

static void txn_reply(struct conn *c, int code, const char *text, size_t len)
{
	ASSERT(c->steps_acked < c->steps_released);
	int kind = c->steps[c->steps_acked++].kind;
	bool ok = code / 100 == 2;
	switch (kind) {
	case ST_BODY:
	case ST_BDAT_LAST:
		txn_end(c, code, true, text, len);
		return;
	case ST_RCPT:
		c->rcpt_ok += ok;
		break;
	case ST_DATA:
		ok = code == 354;
		if (ok) {
			plan_release(c, 1);
			conn_flush(c);
		}
		break;
	default:
		break;
	}
	if (!ok && !c->fail_code)
		c->fail_code = code;
	if (c->steps_acked < c->steps_released)
		return;
	if (c->steps_released < c->nsteps && txn_goes_on(c, kind, ok)) {
		plan_release(c, 1);
		conn_flush(c);
		return;
	}
	txn_end(c, c->fail_code ? c->fail_code : code, false, NULL, 0);
}

static void ehlo_caps(struct conn *c, const char *p, size_t len)
{
	const char *end = p + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *kw = p + 4;
		size_t n = (size_t)((nl ? nl : end) - kw);
		if (kw < end) {
			if (n >= 10 && strncasecmp(kw, "PIPELINING", 10) == 0)
				c->cap_pipelining = true;
			else if (n >= 8 && strncasecmp(kw, "CHUNKING", 8) == 0)
				c->cap_chunking = true;
			else if (n >= 8 && strncasecmp(kw, "STARTTLS", 8) == 0)
				c->cap_starttls = true;
			else if (n >= 4 && strncasecmp(kw, "SIZE", 4) == 0)
				c->cap_size = true;
		}
		p = nl ? nl + 1 : end;
	}
}

static void tls_start(struct conn *c);

static void ehlo_reply(struct conn *c, int code, const char *all, size_t len)
{
	const struct bench_cfg *cfg = c->cl->cfg;
	if (code != 250) {
		conn_error(c, BENCH_ERR_PROTOCOL, "EHLO refused: %.*s", (int)strcspn(all, "\r\n"),
			   all);
		return;
	}
	ehlo_caps(c, all, len);
	if (cfg->tls == BENCH_TLS_STARTTLS && !c->tls) {
		if (!c->cap_starttls) {
			conn_error(c, BENCH_ERR_PROTOCOL, "the server does not offer STARTTLS");
			return;
		}
		plan_cmd(c, R_STARTTLS, CS_STARTTLS);
		return;
	}
	if (cfg->pipelining && !c->cap_pipelining) {
		conn_error(c, BENCH_ERR_PROTOCOL,
			   "the server does not advertise PIPELINING (try --pipelining off)");
		return;
	}
	if (cfg->bdat && !c->cap_chunking) {
		conn_error(c, BENCH_ERR_PROTOCOL,
			   "the server does not advertise CHUNKING (try --bdat off)");
		return;
	}
	enter(c, CS_READY);
	conn_next(c);
}

/* A 4xx/5xx reply: counted by code; the first few are printed. */
static void note_failed_reply(struct conn *c, int code, const char *line, size_t len)
{
	struct client *cl = c->cl;
	if (code >= 400 && code < BENCH_CODE_MAX)
		atomic_fetch_add_explicit(&cl->ctr.code[code], 1, memory_order_relaxed);
	if (atomic_fetch_add(&cl->run->reply_printed, 1) < 5)
		fprintf(stderr, BENCH_NAME ": connection %u: %s: %.*s\n", c->num, conn_what(c),
			(int)(len > 200 ? 200 : len), line);
}

/* The greeting or a 421 ends the session before or between transactions. */
static void session_refused(struct conn *c, int code)
{
	if (c->have_msg) {
		ctr_add(code / 100 == 4 ? &c->cl->ctr.tempfail : &c->cl->ctr.rejected, 1);
		c->have_msg = false;
	}
	conn_close(c);
}

static void on_reply(struct conn *c, int code, const char *all, size_t len, size_t rest)
{
	const char *last = all + len;
	while (last > all && (last[-1] == '\n' || last[-1] == '\r'))
		last--;
	const char *line = last;
	while (line > all && line[-1] != '\n')
		line--;
	size_t llen = (size_t)(last - line);
	if (code >= 400)
		note_failed_reply(c, code, line, llen);
	if (code == 421 && c->state != CS_QUIT) {
		if (c->state == CS_TXN && c->have_msg) {
			ctr_add(&c->cl->ctr.tempfail, 1);
			c->have_msg = false;
		}
		session_refused(c, code);
		return;
	}
	switch (c->state) {
	case CS_BANNER:
		if (code != 220) {
			session_refused(c, code);
			return;
		}
		hist_record(&c->cl->hist[BENCH_LAT_BANNER],
			    (uint64_t)(c->cl->now - c->t_connect_ns));
		plan_cmd(c, c->cl->ehlo, CS_EHLO);
		return;
	case CS_EHLO:
		ehlo_reply(c, code, all, len);
		return;
	case CS_STARTTLS:
		if (code != 220)
			conn_error(c, BENCH_ERR_PROTOCOL, "STARTTLS refused: %.*s", (int)llen,
				   line);
		else if (rest)
			conn_error(c, BENCH_ERR_PROTOCOL,
				   "the server sent %zu bytes after its 220 to STARTTLS", rest);
		else
			tls_start(c);
		return;
	case CS_TXN:
		txn_reply(c, code, line + (llen > 4 ? 4 : llen), llen > 4 ? llen - 4 : 0);
		return;
	case CS_RSET:
		if (code != 250) {
			conn_error(c, BENCH_ERR_PROTOCOL, "RSET refused: %.*s", (int)llen, line);
			return;
		}
		enter(c, CS_READY);
		conn_next(c);
		return;
	case CS_QUIT:
		/* The slot keeps the session of the last full handshake (tlsclient.h). */
		if (c->tls && c->cl->cfg->resume != BENCH_RESUME_NONE)
			tlsc_session_save(c->tls, &c->sess);
		conn_close_wait(c);
		return;
	default:
		conn_error(c, BENCH_ERR_PROTOCOL, "unexpected reply while waiting for %s: %.*s",
			   conn_what(c), (int)llen, line);
		return;
	}
}

/* Complete replies out of rx, in order; stops when the connection changed under it. */
static void parse_replies(struct conn *c)
{
	unsigned gen = c->gen;
	size_t start = 0, pos = 0;
	while (pos < c->rx_len) {
		uint8_t *p = c->rx + pos;
		uint8_t *nl = memchr(p, '\n', c->rx_len - pos);
		if (!nl)
			break;
		size_t n = (size_t)(nl - p) + 1;
		bool digits = n >= 4 && p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' &&
			      p[2] >= '0' && p[2] <= '9';
		if (!digits || (p[3] != ' ' && p[3] != '-' && p[3] != '\r' && p[3] != '\n')) {
			size_t show = strcspn((const char *)p, "\r\n");
			conn_error(c, BENCH_ERR_PROTOCOL, "malformed reply line: %.*s",
				   (int)(show > 100 ? 100 : show), (const char *)p);
			return;
		}
		pos += n;
		if (p[3] == '-')
			continue;
		int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
		on_reply(c, code, (const char *)c->rx + start, pos - start, c->rx_len - pos);
		if (c->gen != gen || c->state == CS_CLOSE || c->state == CS_DONE)
			return;
		start = pos;
		if (c->tls && !c->recv_to_crx && c->state == CS_TLS)
			break; /* STARTTLS: what follows is ciphertext (none: checked) */
	}
	memmove(c->rx, c->rx + start, c->rx_len - start);
	c->rx_len -= start;
	if (c->rx_len == RX_CAP)
		conn_error(c, BENCH_ERR_PROTOCOL, "a reply longer than %u bytes", RX_CAP);
}

/* ---- TLS ---------------------------------------------------------------- */

static void hs_finished(struct conn *c)
{
	struct client *cl = c->cl;
	bool resumed = tlsc_resumed(c->tls);
	c->hs_done = true;
	if (!cl->tls_desc[0])
		tlsc_describe(c->tls, cl->tls_desc, sizeof(cl->tls_desc));
	ctr_add(resumed ? &cl->ctr.hs_resumed : &cl->ctr.hs_full, 1);
	hist_record(&cl->hist[resumed ? BENCH_LAT_HS_RESUMED : BENCH_LAT_HS_FULL],
		    (uint64_t)(cl->now - c->t_hs_ns));
	if (cl->cfg->tls == BENCH_TLS_IMPLICIT) {
		enter(c, CS_BANNER);
		return;
	}
	c->cap_pipelining = c->cap_chunking = c->cap_starttls = c->cap_size = false;
	plan_cmd(c, cl->ehlo, CS_EHLO);
}

/* Offers the received ciphertext to wolfSSL; handshake, then replies. */
static void tls_feed(struct conn *c)
{
	unsigned gen = c->gen;
	char why[160];
	tlsc_input(c->tls, c->crx, c->crx_len);
	if (c->state == CS_TLS) {
		enum tlsc_status st = tlsc_handshake(c->tls);
		if (st == TLSC_ERROR || st == TLSC_CLOSED) {
			conn_error(c, BENCH_ERR_TLS, "TLS handshake: %s",
				   tlsc_error(c->tls, why, sizeof(why)));
			return;
		}
		if (st == TLSC_OK)
			hs_finished(c);
		if (c->gen != gen || c->state == CS_CLOSE)
			return;
	}
	while (c->hs_done) {
		size_t n;
		enum tlsc_status st = tlsc_read(c->tls, c->rx + c->rx_len, RX_CAP - c->rx_len, &n);
		if (n) {
			c->rx_len += n;
			parse_replies(c);
			if (c->gen != gen || c->state == CS_CLOSE)
				return;
			continue;
		}
		if (st == TLSC_AGAIN)
			break;
		if (st == TLSC_CLOSED)
			conn_error(c, BENCH_ERR_CLOSED,
				   "TLS closed by the server while waiting for %s", conn_what(c));
		else
			conn_error(c, BENCH_ERR_TLS, "TLS read: %s",
				   tlsc_error(c->tls, why, sizeof(why)));
		return;
	}
	size_t used = tlsc_input_used(c->tls);
	memmove(c->crx, c->crx + used, c->crx_len - used);
	c->crx_len -= used;
	conn_flush(c);
}

static void tls_start(struct conn *c)
{
	if (!c->crx) {
		c->crx = malloc(CRX_CAP);
		c->stage = malloc(TLSC_PLAIN_STEP);
	}
	if (c->crx && c->stage)
		c->tls = tlsc_conn_new(c->cl->run->tls, c->sess);
	if (!c->tls) {
		conn_error(c, BENCH_ERR_TLS, "cannot start TLS: out of memory");
		return;
	}
	c->crx_len = 0;
	c->hs_done = false;
	c->t_hs_ns = c->cl->now;
	enter(c, CS_TLS);
	tls_feed(c);
}

/* ---- completions -------------------------------------------------------- */

static void on_connect(struct conn *c, int res)
{
	struct client *cl = c->cl;
	if (res < 0) {
		enum bench_err e = res == -ECONNREFUSED ? BENCH_ERR_REFUSED
				   : res == -ECANCELED	? BENCH_ERR_CONNECT_TIMEOUT
							: BENCH_ERR_CONNECT;
		conn_error(c, e, "connect to %s: %s", cl->cfg->server, strerror(-res));
		return;
	}
	c->connected = true;
	ctr_add(&cl->ctr.conns_opened, 1);
	ctr_add(&cl->ctr.conns_open, 1);
	if (cl->cfg->tls == BENCH_TLS_IMPLICIT) {
		tls_start(c);
	} else {
		enter(c, CS_BANNER);
	}
	arm_recv(c);
}

static void on_recv(struct conn *c, int res)
{
	if (res <= 0 && c->state == CS_QUIT) {
		conn_close(c); /* the server closed (or reset) after QUIT: done either way */
		return;
	}
	if (res < 0) {
		conn_error(c, res == -ECONNRESET ? BENCH_ERR_RESET : BENCH_ERR_IO,
			   "receive while waiting for %s: %s", conn_what(c), strerror(-res));
		return;
	}
	if (res == 0) {
		conn_error(c, BENCH_ERR_CLOSED,
			   "connection closed by the server while waiting for %s "
			   "(%u messages done on it)",
			   conn_what(c), c->msgs_on_conn);
		return;
	}
	touch(c);
	if (c->recv_to_crx) {
		c->crx_len += (size_t)res;
		tls_feed(c);
	} else if (c->tls) {
		/* Armed before STARTTLS took effect: the bytes are ciphertext. */
		if (c->crx_len + (size_t)res > CRX_CAP) {
			conn_error(c, BENCH_ERR_PROTOCOL, "too much data right after STARTTLS");
			return;
		}
		memcpy(c->crx + c->crx_len, c->rx + c->rx_len, (size_t)res);
		c->crx_len += (size_t)res;
		tls_feed(c);
	} else {
		c->rx_len += (size_t)res;
		parse_replies(c);
	}
}

static void on_send(struct conn *c, int res)
{
	if (res < 0 && c->state == CS_QUIT) {
		conn_close(c);
		return;
	}
	if (res < 0) {
		conn_error(c, res == -EPIPE || res == -ECONNRESET ? BENCH_ERR_RESET : BENCH_ERR_IO,
			   "send while waiting for %s: %s", conn_what(c), strerror(-res));
		return;
	}
	touch(c);
	if (c->send_was_tls)
		tlsc_output_consumed(c->tls, (size_t)res);
	else
		iov_advance(c, (size_t)res);
	if (c->state == CS_TXN && !c->data_end_seen && c->steps_released == c->nsteps &&
	    drained(c)) {
		c->data_end_seen = true;
		c->t_data_end_ns = c->cl->now;
	}
	conn_flush(c);
	if (c->state == CS_READY)
		conn_next(c);
}

static void on_cqe(struct client *cl, const struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	enum op op = (enum op)(ud & 0xff);
	unsigned slot = (unsigned)(ud >> 8);
	ASSERT(slot < cl->nconn);
	struct conn *c = &cl->conns[slot];
	if (op == OP_CANCEL) {
		/* A kernel without cancel-by-fd: wake the operations another way. */
		if (cqe->res == -EINVAL && c->fd >= 0)
			(void)shutdown(c->fd, SHUT_RDWR);
		return;
	}
	ASSERT(c->inflight > 0);
	c->inflight--;
	if (op == OP_RECV)
		c->recv_armed = false;
	else if (op == OP_SEND)
		c->send_armed = false;
	if (c->state == CS_CLOSE) {
		if (c->inflight == 0)
			conn_closed(c);
		return;
	}
	if (op == OP_CONNECT)
		on_connect(c, cqe->res);
	else if (op == OP_RECV)
		on_recv(c, cqe->res);
	else
		on_send(c, cqe->res);
	if (c->state != CS_CLOSE && c->state != CS_DONE && c->connected)
		arm_recv(c);
}

/* ---- the loop ----------------------------------------------------------- */

static void scan_deadlines(struct client *cl)
{
	double t = cl->cfg->timeout_s;
	for (unsigned i = 0; i < cl->nconn; i++) {
		struct conn *c = &cl->conns[i];
		if (!c->deadline_ns || cl->now < c->deadline_ns)
			continue;
		c->deadline_ns = 0;
		switch (c->state) {
		case CS_CLOSE:
		case CS_QUIT:
			conn_close(c);
			break;
		case CS_CONNECT:
			conn_error(c, BENCH_ERR_CONNECT_TIMEOUT,
				   "connect to %s: no answer within %g s", cl->cfg->server, t);
			break;
		case CS_TXN:
		case CS_BANNER:
		case CS_TLS:
		case CS_EHLO:
		case CS_STARTTLS:
		case CS_RSET:
			conn_error(c, BENCH_ERR_TIMEOUT, "%s %s within %g s",
				   drained(c) ? "no reply to" : "could not send", conn_what(c), t);
			break;
		default:
			break;
		}
	}
}

static void wake_parked(struct client *cl, bool all)
{
	unsigned n = cl->nconn;
	while (cl->park_head && n--) {
		if (!all && cl->now < cl->next_due)
			return;
		struct conn *c = cl->park_head;
		park_unlink(c);
		c->woken = true;
		conn_next(c);
		if (c->parked && !all) {
			/* Nothing due for it after all: it keeps its turn. */
			park_to_front(c);
			return;
		}
	}
}

static void abort_all(struct client *cl)
{
	cl->aborted = true;
	for (unsigned i = 0; i < cl->nconn; i++) {
		struct conn *c = &cl->conns[i];
		park_unlink(c);
		c->have_msg = false;
		if (c->state == CS_IDLE)
			conn_done(c);
		else if (c->state != CS_DONE)
			conn_close(c);
	}
}

static int ring_setup(struct client *cl)
{
	unsigned entries = 64;
	while (entries < 2 * cl->nconn + 16 && entries < RING_MAX)
		entries *= 2;
	struct io_uring_params p = {0};
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = entries * 4;
	int rc = io_uring_queue_init_params(entries, &cl->ring, &p);
	if (rc == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN;
		p.cq_entries = entries * 4;
		rc = io_uring_queue_init_params(entries, &cl->ring, &p);
	}
	if (rc == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 4;
		rc = io_uring_queue_init_params(entries, &cl->ring, &p);
	}
	if (rc < 0)
		return rc;
	cl->ring_ready = true;
	return 0;
}

static int64_t wait_ns(struct client *cl)
{
	int64_t until = cl->next_scan;
	if (cl->park_head && cl->next_due < until)
		until = cl->next_due;
	int64_t d = until - cl->now;
	return d < 0 ? 0 : d;
}

int client_run(struct client *cl)
{
	int rc = ring_setup(cl);
	if (rc < 0) {
		fprintf(stderr, BENCH_NAME ": thread %u: io_uring_queue_init: %s\n", cl->index,
			strerror(-rc));
		atomic_store(&cl->run->stop, 2);
		return rc;
	}
	cl->now = bench_now_ns();
	cl->next_scan = cl->now + SCAN_NS;
	for (unsigned i = 0; i < cl->nconn; i++)
		conn_next(&cl->conns[i]);
	while (cl->active > 0) {
		int stop = atomic_load_explicit(&cl->run->stop, memory_order_relaxed);
		if (stop == 2 && !cl->aborted)
			abort_all(cl);
		if (cl->park_head)
			wake_parked(cl, stop != 0);
		int64_t d = wait_ns(cl);
		struct __kernel_timespec ts = {.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
		struct io_uring_cqe *cqe;
		rc = io_uring_submit_and_wait_timeout(&cl->ring, &cqe, 1, &ts, NULL);
		if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
			fprintf(stderr, BENCH_NAME ": thread %u: io_uring_submit_and_wait: %s\n",
				cl->index, strerror(-rc));
			atomic_store(&cl->run->stop, 2);
			return rc;
		}
		cl->now = bench_now_ns();
		unsigned head, n = 0;
		io_uring_for_each_cqe(&cl->ring, head, cqe)
		{
			on_cqe(cl, cqe);
			n++;
		}
		io_uring_cq_advance(&cl->ring, n);
		if (cl->now >= cl->next_scan) {
			scan_deadlines(cl);
			cl->next_scan = cl->now + SCAN_NS;
		}
	}
	if (cl->ack_len)
		ack_flush(cl);
	return 0;
}

/* ---- set-up ------------------------------------------------------------- */

struct client *client_new(struct bench_run *run, unsigned index, unsigned first_conn,
			  unsigned nconn, char *err, size_t errcap)
{
	const struct bench_cfg *cfg = run->cfg;
	struct client *cl = calloc(1, sizeof(*cl));
	if (!cl)
		goto oom;
	cl->run = run;
	cl->cfg = cfg;
	cl->index = index;
	cl->nconn = cl->active = nconn;
	snprintf(cl->ehlo, sizeof(cl->ehlo), "EHLO %s\r\n", cfg->ehlo);
	for (unsigned l = 0; l < BENCH_LAT__COUNT; l++)
		hist_init(&cl->hist[l]);
	uint64_t max_size = gen_size_max(run->gen);
	uint64_t chunks = 1;
	if (cfg->bdat && cfg->bdat_chunk)
		chunks = (max_size + cfg->bdat_chunk - 1) / cfg->bdat_chunk;
	cl->steps_cap = 2 + cfg->rcpts + (uint32_t)chunks;
	cl->iov_cap = 4 + cfg->rcpts + 3 * (uint32_t)chunks;
	cl->txbuf_cap = 64 + (cfg->rcpts + 1) * (BENCH_ADDR_MAX + 32) + 32 * (uint32_t)chunks;
	cl->conns = calloc(nconn, sizeof(*cl->conns));
	if (run->ack_fd >= 0)
		cl->ack = malloc(ACK_BUF_CAP);
	if (!cl->conns || (run->ack_fd >= 0 && !cl->ack))
		goto oom;
	for (unsigned i = 0; i < nconn; i++) {
		struct conn *c = &cl->conns[i];
		c->cl = cl;
		c->num = first_conn + i;
		c->slot = i;
		c->fd = -1;
		c->state = CS_IDLE;
		c->iov = calloc(cl->iov_cap, sizeof(*c->iov));
		c->steps = calloc(cl->steps_cap, sizeof(*c->steps));
		c->txbuf = malloc(cl->txbuf_cap);
		if (!c->iov || !c->steps || !c->txbuf)
			goto oom;
	}
	return cl;
oom:
	snprintf(err, errcap, "out of memory for %u connections", nconn);
	client_free(cl);
	return NULL;
}

void client_free(struct client *cl)
{
	if (!cl)
		return;
	for (unsigned i = 0; cl->conns && i < cl->nconn; i++) {
		struct conn *c = &cl->conns[i];
		if (c->fd >= 0)
			close(c->fd);
		tlsc_conn_free(c->tls);
		tlsc_session_free(c->sess);
		free(c->iov);
		free(c->steps);
		free(c->txbuf);
		free(c->crx);
		free(c->stage);
	}
	if (cl->ring_ready)
		io_uring_queue_exit(&cl->ring);
	free(cl->conns);
	free(cl->ack);
	free(cl);
}

struct bench_counters *client_counters(struct client *cl)
{
	return &cl->ctr;
}

const struct hist *client_hist(const struct client *cl, enum bench_lat l)
{
	return &cl->hist[l];
}

const char *client_tls_desc(const struct client *cl)
{
	return cl->tls_desc;
}
