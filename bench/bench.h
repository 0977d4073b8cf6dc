/*
 * bench.h - mxring-bench: options, limits and counters shared by its modules.
 *
 * mxring-bench is an SMTP load generator: T client threads, each with its
 * own io_uring, drive N connections (N/T each) through EHLO, K
 * transactions (MAIL, RCPT x R, DATA or BDAT, body) and QUIT, closed loop
 * (the next message as soon as the reply comes) or open loop (--rate:
 * messages are due at fixed times and latency counts from the due time).
 *
 * Every buffer is sized at start-up from the options; a connection owns a
 * fixed set of them, so memory is bounded by N and the limits below.
 * Counters are per thread (written by their thread, read by the main thread
 * for the progress line), histograms are per thread and merged at the end.
 */
#ifndef MXRING_BENCH_H
#define MXRING_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hist.h"

#define BENCH_NAME	      "mxring-bench"
#define BENCH_CONN_MAX	      100000u
#define BENCH_THREADS_MAX     64u
#define BENCH_RCPTS_MAX	      100u	  /* RFC 5321 4.5.3.1.8: servers take at least 100 */
#define BENCH_ADDR_MAX	      256u	  /* one address after pattern expansion */
#define BENCH_PATTERN_MAX     200u	  /* --from/--to as given */
#define BENCH_SIZE_MAX	      (64u << 20) /* --size */
#define BENCH_MIX_SIZE_MAX    (8u << 20)  /* largest message of --size-dist mix */
#define BENCH_BDAT_CHUNKS_MAX 256u	  /* chunks of one message */
#define BENCH_BDAT_CHUNK_MIN  512u
#define BENCH_MSGS_PER_CONN   100u /* default K */
#define BENCH_TIMEOUT_S	      30.0 /* default --timeout */
#define BENCH_MAX_ERRORS      100u /* default --max-errors */
#define BENCH_DURATION_MAX_S  (7 * 86400.0)
#define BENCH_RATE_MAX	      10000000.0
#define BENCH_SOURCES_MAX     1024u /* --source addresses after range expansion */

enum bench_tls { BENCH_TLS_NONE, BENCH_TLS_STARTTLS, BENCH_TLS_IMPLICIT };
enum bench_resume { BENCH_RESUME_NONE, BENCH_RESUME_TICKETS, BENCH_RESUME_IDS };

struct bench_cfg {
	char server[300]; /* as given, for messages */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	/* --source: local addresses bound before connect, connection c uses
	 * source[c % nsources]; nsources 0 = the kernel picks. */
	struct sockaddr_storage source[BENCH_SOURCES_MAX];
	unsigned nsources;
	unsigned connections;
	unsigned threads;
	unsigned ncpus; /* --cpus: thread i runs on cpus[i % ncpus]; 0: not pinned */
	unsigned short cpus[BENCH_THREADS_MAX];
	uint64_t messages; /* 0: run for duration_s */
	double duration_s; /* 0: run for messages */
	unsigned msgs_per_conn;
	uint64_t size; /* message bytes as stored, when !size_mix */
	bool size_mix;
	unsigned rcpts;
	char from[BENCH_PATTERN_MAX + 1];
	char to[BENCH_PATTERN_MAX + 1];
	char ehlo[256];
	bool pipelining;
	bool bdat;
	uint64_t bdat_chunk; /* 0: the whole message in one BDAT LAST */
	enum bench_tls tls;
	int tls_version; /* 0 (1.2 or 1.3, the server picks), 12 or 13 */
	enum bench_resume resume;
	double rate; /* messages/s; 0: closed loop */
	double timeout_s;
	uint64_t max_errors; /* 0: no limit */
	const char *ack_log; /* NULL: none */
	const char *json;    /* NULL: none */
	bool quiet;
};

/*
 * Parses argv into cfg. 0 on success; on a usage error prints a message
 * naming the argument and returns 2; for --help/--version prints and
 * returns 1 (the caller exits 0).
 */
int bench_parse_args(struct bench_cfg *cfg, int argc, char **argv);

/* The address of ss (IPv4 or IPv6, no port) as text in buf; returns buf. */
const char *bench_addr_text(const struct sockaddr_storage *ss, char *buf, size_t cap);

/* Connection-level errors, counted apart from SMTP reply codes. */
enum bench_err {
	BENCH_ERR_REFUSED,	   /* connect: ECONNREFUSED */
	BENCH_ERR_CONNECT_TIMEOUT, /* connect did not finish within --timeout */
	BENCH_ERR_CONNECT,	   /* another connect error (EADDRNOTAVAIL, ...) */
	BENCH_ERR_RESET,	   /* ECONNRESET, EPIPE */
	BENCH_ERR_CLOSED,	   /* the server closed while a reply was due */
	BENCH_ERR_TIMEOUT,	   /* no progress within --timeout */
	BENCH_ERR_TLS,		   /* handshake or record error */
	BENCH_ERR_PROTOCOL,	   /* malformed or unexpected reply, missing extension */
	BENCH_ERR_IO,		   /* another socket error */
	BENCH_ERR__COUNT
};

extern const char *const bench_err_names[BENCH_ERR__COUNT];

/* Latency histograms. */
enum bench_lat {
	BENCH_LAT_BANNER,  /* connect submitted -> 220 greeting (with --tls: after the handshake) */
	BENCH_LAT_HS_FULL, /* ClientHello -> handshake done, full */
	BENCH_LAT_HS_RESUMED, /* the same, resumed */
	BENCH_LAT_DATA_END,   /* last body byte sent -> final reply */
	BENCH_LAT_MESSAGE,    /* message due (open loop) or started -> final reply */
	BENCH_LAT__COUNT
};

extern const char *const bench_lat_names[BENCH_LAT__COUNT];

#define BENCH_CODE_MAX 600

/* One thread's counters: written by that thread only (relaxed), read by the main thread. */
struct bench_counters {
	_Atomic uint64_t accepted; /* final 250 */
	_Atomic uint64_t tempfail; /* a 4xx ended the transaction */
	_Atomic uint64_t rejected; /* a 5xx ended the transaction */
	_Atomic uint64_t failed;   /* the connection failed during the transaction */
	_Atomic uint64_t bytes;	   /* message bytes of accepted messages */
	_Atomic uint64_t hs_full;
	_Atomic uint64_t hs_resumed;
	_Atomic uint64_t conns_opened;
	_Atomic uint64_t conns_open; /* gauge */
	_Atomic uint64_t errors;     /* sum of err[] */
	_Atomic uint64_t err[BENCH_ERR__COUNT];
	_Atomic uint32_t code[BENCH_CODE_MAX]; /* 4xx and 5xx replies by code */
} __attribute__((aligned(64)));

static inline void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t ctr_get(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* What the whole run shares: the options, the schedule and the stop flags. */
struct bench_run {
	const struct bench_cfg *cfg;
	char run_id[17];	 /* 16 hex digits, in every X-Bench-Seq */
	int64_t t0_ns;		 /* CLOCK_MONOTONIC at start */
	int64_t end_ns;		 /* --duration: no message due at or after this */
	_Atomic uint64_t next;	 /* the next message number to hand out */
	_Atomic int stop;	 /* 1: no new transactions; 2: close everything now */
	_Atomic uint64_t errors; /* all threads, for --max-errors */
	int ack_fd;		 /* -1: no --ack-log */
	struct bench_gen *gen;	 /* shared, read-only after start-up */
	struct tlsc_ctx *tls;	 /* NULL without TLS */
	_Atomic unsigned err_printed[BENCH_ERR__COUNT];
	_Atomic unsigned reply_printed; /* failed replies printed so far */
	_Atomic int gave_up;		/* --max-errors reached (said once) */
};

enum bench_claim { BENCH_CLAIM_GOT, BENCH_CLAIM_WAIT, BENCH_CLAIM_DONE };

/*
 * Hands out the next message number. Closed loop: GOT at once, until
 * --messages are handed out or --duration is over (DONE). Open loop: GOT
 * when message n is due (t0 + n / rate <= now), else WAIT with *due_ns set.
 * *due_ns is the intended start of the message (now in closed loop).
 */
enum bench_claim bench_claim(struct bench_run *run, int64_t now_ns, uint64_t *seq, int64_t *due_ns);

/* Prints one error line on stderr for the first few errors of each kind. */
void bench_report_error(struct bench_run *run, enum bench_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int64_t bench_now_ns(void);

#endif
