/*
 * shard_int.h - what the files of one shard share: its structures, the
 * encoding of io_uring user_data, and the functions each file offers the
 * others. Private to core/shard.c, conn.c, txn.c, tlspump.c, admit.c,
 * listen.c and bufpool.c; the rest of the program sees shard.h.
 *
 * Who does what:
 *  shard.c    the thread, its loop and the dispatch of completions, the
 *             tick, stop, and set-up;
 *  listen.c   listening sockets and the multishot accept;
 *  admit.c    who may open a session: per-address limits, refusals at
 *             accept, the PROXY header, the pre-greeting wait;
 *  conn.c     a connection's life: its phase, receive, send, deadlines,
 *             the engine fed, the one way a session ends, lingering close;
 *  tlspump.c  TLS over the ciphertext queue (handshake, records) behind
 *             the few tlspump_ calls conn.c makes;
 *  txn.c      the transaction: envelope, body slices, parts to the
 *             writers, their return and the 250;
 *  bufpool.c  the provided-buffer ring, the plaintext buffers and the
 *             per-connection queues of buffer ids.
 *
 * Threads: everything here is touched by the shard's own thread only,
 * except stats and gauges (relaxed atomics, read by anyone), stop_req and
 * failed, and ip_conns (admit.c), shared by all shards.
 */
#ifndef MXRING_SHARD_INT_H
#define MXRING_SHARD_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/socket.h>

#include <liburing.h>

#include "bounds.h"
#include "check.h"
#include "clock.h"
#include "msg.h"
#include "shard.h"
#include "smtp.h"
#include "timer.h"
#include "tls.h"

#define BUF_NONE   0xffffu	 /* no buffer id */
#define NONE32	   UINT32_MAX	 /* no slot */
#define PLAIN_SIZE TLS_PLAIN_BUF /* one TLS record's inner plaintext, whole */

static_assert(OUT_CAP >= 2 * SMTP_OUT_RESERVE, "reply buffer holds a reserve and a reply");
static_assert(RECV_BUFS_MAX + PLAIN_BUFS_MAX < BUF_NONE, "buffer ids fit 16 bits");
static_assert(LISTEN_MAX <= 32, "listener bits fit accept_armed");

/* ---- user_data ------------------------------------------------------------ */

enum op {
	OP_ACCEPT = 1,
	OP_RECV,
	OP_SEND,
	OP_TICK,
	OP_WAKE,
	OP_CANCEL,
	OP_ACCEPT_RESUME,
	OP_PROBE
};

/* What a completion is for: the operation, the connection slot (or the
 * listener index), and the slot's generation when the request was made. */
struct ud {
	unsigned op;
	uint32_t slot;
	uint32_t gen;
};

#define UD_SLOT_BITS 24
static_assert(CONNECTIONS_MAX <= (1u << UD_SLOT_BITS), "a slot fits user_data");
#define UD_SLOT_NONE ((1u << UD_SLOT_BITS) - 1) /* a request of no connection */

static inline uint64_t ud_encode(unsigned op, uint32_t slot, uint32_t gen)
{
	return (uint64_t)op << 56 | (uint64_t)(slot & UD_SLOT_NONE) << 32 | gen;
}

static inline struct ud ud_decode(uint64_t u)
{
	return (struct ud){.op = (unsigned)(u >> 56),
			   .slot = (uint32_t)(u >> 32) & UD_SLOT_NONE,
			   .gen = (uint32_t)u};
}

/* ---- connections ---------------------------------------------------------- */

/*
 * A connection's phase: where it is in its life. Every change goes through
 * conn_enter (conn.c). The flags below are what is orthogonal to it.
 */
enum conn_phase {
	PH_FREE = 0,  /* the slot is unused */
	PH_ACCEPTED,  /* accepted: the session starts next (conn_session_start) */
	PH_PROXY,     /* waiting for the PROXY protocol header (proxy_protocol) */
	PH_PREGREET,  /* the greeting is held back (pregreet_wait) */
	PH_HANDSHAKE, /* TLS handshake (after STARTTLS, or on an smtps_listen address) */
	PH_SESSION,   /* the SMTP session, in plaintext or inside TLS */
	PH_CLOSING,   /* the last replies go out, then the lingering close */
	PH_LINGER,    /* session over, FIN sent: input is read and dropped */
	PH_SHUT,      /* socket shut down; the slot is freed when no op is in flight */
};

/* Connection flags: what is true whatever the phase. */
#define C_RECV	     0x01u   /* multishot recv armed */
#define C_SEND	     0x02u   /* a send is in flight */
#define C_PAUSED     0x04u   /* recv cancelled: too much unread input */
#define C_DIRTY	     0x08u   /* on the dirty list */
#define C_STARVED    0x10u   /* on the starved list (waits for buffers) */
#define C_PLAIN_WAIT 0x20u   /* on the plain-wait list (waits for a plaintext buffer) */
#define C_PEER_EOF   0x40u   /* the client closed its side */
#define C_TLS_UP     0x80u   /* the TLS handshake is done: records carry the session */
#define C_NOTIFIED   0x100u  /* TLS close_notify queued (or an alert: nothing follows) */
#define C_RX	     0x200u  /* bytes arrived since cmd_start_s was set */
#define C_ACK_DUE    0x400u  /* the handshake ended: its last record is to be acknowledged */
#define C_DNS_WAIT   0x800u  /* PH_PREGREET: the greeting waits for the DNS lists */
#define C_GREET_WAIT 0x1000u /* PH_PREGREET: the greeting waits out pregreet_wait */
#define C_EXEMPT     0x2000u /* in connection_limit_exceptions: no rate limits */
#define C_HAS_BIN    0x4000u /* bin holds the client's address */

/* A connection's queue of buffers (ids into the shard's pools), oldest first. */
struct bufq {
	uint16_t head; /* BUF_NONE when empty */
	uint16_t tail;
	uint16_t n;   /* buffers queued */
	uint32_t off; /* bytes of head already consumed */
};

/* An envelope with the count of its holders: the connection while the
 * transaction is open, and every msg of it at a writer. */
struct env_box {
	struct envelope env;
	uint32_t refs;
};

struct conn {
	uint32_t gen;
	uint8_t phase; /* enum conn_phase */
	uint16_t flags;
	uint16_t nops; /* io_uring requests in flight for this slot */
	int fd;
	struct bufq in;	      /* plaintext input for the engine */
	struct bufq ct;	      /* TLS: ciphertext not yet taken by wolfSSL */
	uint16_t feed_buf;    /* buffer being fed to the engine, BUF_NONE for the stash */
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
	uint32_t next_dirty; /* dirty list link; free list link while PH_FREE */
	uint32_t next_starved;
	uint32_t next_wait;
	char *helo; /* owned, lazily */
	char addr[CLIENT_ADDR_MAX];
	uint8_t bin[16]; /* the client's address: IPv6, or IPv4 as ::ffff:a.b.c.d */
	uint16_t port;
	uint32_t nmsgs;
	uint64_t start_ms;
	uint64_t mail_ms;
	uint64_t content_start_s; /* when DATA/BDAT content began (min_data_rate), 0 if not */
	uint64_t cmd_start_s;	  /* when the server became ready for the command line being
				   * read (command_timeout), 0 if it is not reading one */
	uint32_t lines_seen;	  /* smtp.lines when cmd_start_s was set */
	uint64_t tls_start_s;	  /* when the TLS handshake began, 0 before */
	uint32_t ip_bucket;	  /* counted in admit.c's table, or IP_BUCKETS */
	uint32_t linger_bytes;	  /* input dropped while lingering */
	const char *reason;	  /* why the session ended, for the log */
};

/* ---- the shard ------------------------------------------------------------ */

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
	bool uring_restricted;	    /* the ring allows only the shard's own operations */
	bool probe;		    /* test hook: submit a forbidden operation at start */
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
	_Atomic uint64_t passes; /* loop passes ended (shard_quiesce) */
	struct dnsbl *dnsbl;	 /* shared: the DNS list resolver, or NULL */
	int stopping;
	uint64_t stop_deadline;
	_Alignas(64) struct shard_stats stats;
	_Alignas(64) struct shard_gauges gauges; /* published by pass_end */
};

/* The shard of the calling thread. A shard thread handles only its own
 * connections; the engine's hooks (txn.c) are given the connection alone. */
extern _Thread_local struct shard *shard_self;

static inline void stat_add(uint64_t *c, uint64_t n)
{
	atomic_store_explicit((_Atomic uint64_t *)c,
			      atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint32_t conn_slot(const struct shard *sh, const struct conn *c)
{
	return (uint32_t)(c - sh->conns);
}

/* shard.c: a submission queue entry (submits to make room when full). */
struct io_uring_sqe *shard_sqe(struct shard *sh);

/* ---- bufpool.c ------------------------------------------------------------ */

/* Ids [0, nbufs) are lent by the kernel (the provided-buffer ring); ids
 * [nbufs, nbufs + nplain) are the shard's own, for decrypted TLS input. */
static inline uint8_t *bufpool_addr(struct shard *sh, uint16_t bid)
{
	if (bid < sh->nbufs)
		return sh->bufs + (size_t)bid * sh->buf_size;
	return sh->plain + (size_t)(bid - sh->nbufs) * PLAIN_SIZE;
}

static inline uint32_t bufpool_cap(struct shard *sh, uint16_t bid)
{
	return bid < sh->nbufs ? sh->buf_size : PLAIN_SIZE;
}

/* A received buffer the kernel just lent (refs 1, counted as held). */
void bufpool_take(struct shard *sh, uint16_t bid);
/* A free plaintext buffer (refs 1), or BUF_NONE. */
uint16_t bufpool_plain_get(struct shard *sh);
/* Drops one reference; the last one gives the buffer back. */
void bufpool_put(struct shard *sh, uint16_t bid);
/* Appends b (len bytes) to q; q takes the caller's reference. */
void bufpool_push(struct shard *sh, struct bufq *q, uint16_t b, uint32_t len);
/* Drops the head buffer of q (all of it was consumed). */
void bufpool_pop(struct shard *sh, struct bufq *q);
/* Drops everything queued; returns the bytes that were not consumed. */
uint64_t bufpool_drop(struct shard *sh, struct bufq *q);
/* Hands the buffers given back since the last call to the kernel's ring. */
void bufpool_publish(struct shard *sh);
/* Whether the ring runs low (an eighth or less of it left). */
bool bufpool_low(const struct shard *sh);

/* ---- txn.c ---------------------------------------------------------------- */

/* The engine's hooks; their ctx is the struct conn. */
extern const struct smtp_hooks txn_hooks;
/* Drops the open transaction (envelope, gathered body, parts sent: ABORT). */
void txn_end(struct shard *sh, struct conn *c);
/* Sends the gathered slices as a part. 0, -EAGAIN (ring full) or -ENOMEM. */
int txn_flush_part(struct shard *sh, struct conn *c);
/* Takes back the msgs the writers are done with: logs, 250s, buffers. */
void txn_reap(struct shard *sh);

/* ---- conn.c --------------------------------------------------------------- */

/* Takes a free slot for an accepted socket; the caller checked there is one. */
struct conn *conn_open(struct shard *sh, int fd, unsigned li, const struct sockaddr_storage *ss,
		       bool peer, uint32_t ip_bucket);
/* Moves c to phase ph (the one place a phase changes). */
void conn_enter(struct shard *sh, struct conn *c, enum conn_phase ph);
/* The client is known: TLS first (smtps_listen), the pre-greeting wait, or the greeting. */
void conn_session_start(struct shard *sh, struct conn *c);
void conn_mark_dirty(struct shard *sh, struct conn *c);
void conn_starve(struct shard *sh, struct conn *c);
void conn_plain_wait(struct shard *sh, struct conn *c);
void conn_arm_recv(struct shard *sh, struct conn *c);
int conn_ensure_out(struct conn *c) __attribute__((warn_unused_result));
void conn_set_deadline(struct shard *sh, struct conn *c);
void conn_input_drop(struct shard *sh, struct conn *c);
/* Runs the session over what is queued (TLS, engine), then sets the deadline. */
void conn_process(struct shard *sh, struct conn *c);
/* Sends what is pending; begins the lingering close of a closing session. */
void conn_flush(struct shard *sh, struct conn *c);
/*
 * The one way a session ends with a reply: the engine writes the reply for
 * why (smtp_end), unread input is dropped, the session enters PH_CLOSING (the
 * reply goes out, then the lingering close), and a client that never reads
 * it is closed 5 s later anyway.
 */
void conn_end(struct shard *sh, struct conn *c, enum smtp_end why, const char *reason);
/* Ends the session at once: no reply; the slot is freed when its ops complete. */
void conn_close(struct shard *sh, struct conn *c, const char *reason);
/* Frees the slot once nothing is in flight for it. */
void conn_release(struct shard *sh, struct conn *c);
void conn_on_recv(struct shard *sh, struct io_uring_cqe *cqe, struct conn *c);
void conn_on_send(struct shard *sh, struct io_uring_cqe *cqe, struct conn *c);
/* c's deadline passed (the timer wheel). */
void conn_expire(struct shard *sh, struct conn *c);
/* Buffers run low: bodies gathered go to the writers, TLS records move out. */
void conn_relieve_pressure(struct shard *sh);

/* ---- tlspump.c ------------------------------------------------------------ */

/* A TLS session on the current context, in PH_HANDSHAKE; false = the connection was closed. */
bool tlspump_begin(struct shard *sh, struct conn *c);
/* The engine answered STARTTLS: later input is dropped, the handshake begins. */
void tlspump_starttls(struct shard *sh, struct conn *c);
/* Runs TLS over the ciphertext queue; *starved: no whole record queued.
 * false = the connection was closed. */
bool tlspump_run(struct shard *sh, struct conn *c, bool *starved);
/* Whether the session should decrypt more now: the engine took all it had. */
bool tlspump_more(const struct conn *c);
/* Moves a record not yet whole out of the receive buffers (force: at once). */
void tlspump_hold(struct shard *sh, struct conn *c, bool force);

/* ---- admit.c -------------------------------------------------------------- */

/* Counts a connection from ss against max_connections_per_ip; false when at it. */
bool admit_ip(struct shard *sh, const struct sockaddr_storage *ss, uint32_t *bucket);
/* Uncounts c (its session is over). */
void admit_ip_release(struct conn *c);
void admit_set_addr(struct conn *c, const struct sockaddr_storage *ss);
/* Counts a connection from ss against client_connection_rate_limit; false
 * (logged, counted) when past it. */
bool admit_rate(struct shard *sh, const struct sockaddr_storage *ss);
/* Refuses a socket at accept, before any slot is taken: a reply (client: the
 * address it names, or NULL), then close. */
void admit_refuse(struct shard *sh, int fd, enum smtp_end why, const char *client);
/* MAIL: counts it against client_message_rate_limit; false when past it. */
bool admit_mail_rate(struct shard *sh, struct conn *c);
/* The session starts: asks the DNS lists (dnsbl_sites) about the client.
 * true: the greeting waits for the answer (C_DNS_WAIT). */
bool admit_dnsbl_begin(struct shard *sh, struct conn *c);
/* Takes the DNS list answers the resolver gave back. */
void admit_dnsbl_reap(struct shard *sh);
/* PH_PREGREET's deadline passed (pregreet_wait over, or the DNS backstop). */
void admit_pregreet_expire(struct shard *sh, struct conn *c);
/* PH_PROXY: the PROXY header at the start of the input. */
void admit_proxy_input(struct shard *sh, struct conn *c);
/* PH_PREGREET: the wait is over (done), or the client talked first (talker). */
void admit_pregreet_done(struct shard *sh, struct conn *c);
void admit_pregreet_talker(struct shard *sh, struct conn *c);

/* ---- listen.c ------------------------------------------------------------- */

void listen_arm(struct shard *sh, unsigned li);
void listen_on_accept(struct shard *sh, struct io_uring_cqe *cqe, unsigned li);
void listen_on_resume(struct shard *sh, unsigned li);

#endif
