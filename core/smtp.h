/*
 * smtp.h - the SMTP server engine, sans-I/O.
 *
 * Bytes in, reply bytes and calls to the host's hooks out. No socket,
 * io_uring or TLS header is included and no system call is made, so unit
 * tests and fuzzers drive it directly. The engine keeps only counters and a
 * state; the envelope is stored by the host through the hooks, and body
 * bytes are reported as runs of the caller's input (see body.h), never
 * copied.
 *
 * RFC 5321 (commands, replies, limits), RFC 2920 (PIPELINING: every command
 * of a group is answered in order; the host sends what one feed produced in
 * one send), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8),
 * RFC 3030 (CHUNKING/BDAT), RFC 2034 (ENHANCEDSTATUSCODES), RFC 3207
 * (STARTTLS: nothing after the STARTTLS line is processed; the host discards
 * it and calls smtp_tls_started after the handshake).
 *
 * Contract of one connection:
 *   smtp_init; smtp_greet; then smtp_feed as bytes arrive. A feed that stops
 *   at the end of a message (SMTP_BLOCKED after hooks->data_end returned
 *   SMTP_V_DEFER) resumes with smtp_resume once the host knows the outcome.
 *   Unused input must be fed again (after more bytes are appended, for a
 *   partial command line).
 */
#ifndef MXRING_SMTP_H
#define MXRING_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "body.h"
#include "config.h"
#include "bounds.h"

/* What a hook answers. */
enum smtp_verdict {
	SMTP_V_OK = 0,	 /* go on */
	SMTP_V_DEFER,	 /* data_end only: outcome comes later through smtp_resume */
	SMTP_V_TEMPFAIL, /* 451 4.3.0 local error */
	SMTP_V_NOSPACE,	 /* 452 4.3.1 insufficient system storage */
	SMTP_V_BUSY,	 /* 451 4.3.0 queue busy (handoff ring full) */
	SMTP_V_UNKNOWN,	 /* rcpt only: 550 5.1.1 <addr>: Recipient address rejected: User
			  * unknown (recipient_table); counts toward error_limit */
	SMTP_V_RATE,	 /* mail only: 450 4.7.1 Error: too much mail from ADDR
			  * (client_message_rate_limit); counts toward error_limit */
};

struct smtp_hooks {
	/* HELO/EHLO accepted; the transaction, if any, was reset before. */
	enum smtp_verdict (*helo)(void *ctx, const char *name, size_t len, bool esmtp);
	/* MAIL accepted by syntax and limits. env_flags are ENV_* from msg.h. */
	enum smtp_verdict (*mail)(void *ctx, const struct addr *from, uint32_t env_flags);
	/* RCPT accepted by syntax, relay control and the recipient limit. */
	enum smtp_verdict (*rcpt)(void *ctx, const struct addr *to);
	/* DATA (before 354) or the first BDAT chunk. On a refusal the host has
	 * dropped the transaction itself (no abort call follows). */
	enum smtp_verdict (*data_start)(void *ctx);
	/* Content run: p is inside the input of the current feed, or in body_static. */
	int (*body)(void *ctx, const uint8_t *p, size_t len);
	/* End of content: SMTP_V_DEFER, or an immediate outcome (OK is a programmer error). */
	enum smtp_verdict (*data_end)(void *ctx);
	/* The transaction ended without being queued (RSET, EHLO, error, size, close). */
	void (*abort)(void *ctx);
};

/* Read-only, shared by every session of a process. */
struct smtp_conf {
	const struct config *cfg;
	bool starttls;		  /* advertise and accept STARTTLS */
	char greeting[REPLY_MAX]; /* "220 host ESMTP mxring\r\n" */
	char ehlo[REPLY_MAX];	  /* "250-host\r\n250-PIPELINING\r\n...250 SMTPUTF8\r\n" */
	char ehlo_tls[REPLY_MAX]; /* the same without STARTTLS (inside TLS) */
	size_t greeting_len, ehlo_len, ehlo_tls_len;
};

/* Builds the fixed replies from cfg (borrowed for the life of conf). */
void smtp_conf_init(struct smtp_conf *conf, const struct config *cfg, bool starttls);

enum smtp_state {
	SMTP_S_INIT = 0, /* before smtp_greet */
	SMTP_S_CMD,	 /* reading commands */
	SMTP_S_DATA,	 /* reading DATA content */
	SMTP_S_BDAT,	 /* reading a BDAT chunk */
	SMTP_S_WAIT,	 /* end of content handed to the host; waiting for smtp_resume */
	SMTP_S_STARTTLS, /* 220 Ready to start TLS queued; waiting for smtp_tls_started */
	SMTP_S_CLOSED,	 /* QUIT or 421: nothing more is read */
};

struct smtp_session {
	const struct smtp_conf *conf;	/* borrowed */
	const struct smtp_hooks *hooks; /* borrowed */
	void *ctx;			/* borrowed: the host's connection */
	uint8_t state;			/* enum smtp_state */
	uint8_t bdat_reply;		/* private: why the current BDAT chunk is dropped */
	uint16_t flags;			/* private: SMTP_F_* in smtp.c */
	uint16_t errors;		/* protocol errors so far */
	uint16_t junk;			/* private: junk commands since the last message queued */
	uint32_t nrcpt;			/* accepted recipients in this transaction */
	uint32_t overshoot;		/* private: 452s past recipient_limit in it */
	uint32_t env_flags;		/* ENV_* of this transaction */
	uint32_t discard;		/* private: bytes of an overlong line being dropped */
	uint32_t lines;			/* command lines ended so far (wraps): a host's clock */
	uint64_t body_bytes;		/* content reported (or counted) in this transaction */
	uint64_t bdat_left;		/* bytes left in the current BDAT chunk */
	uint64_t bdat_chunk;		/* size of the current BDAT chunk */
	struct body_dec dec;
	const char *client;  /* borrowed: the client's address as text, for replies; "" */
	const char *blocked; /* borrowed: a DNS list zone that listed the client (set by
			      * the host before the first command): every command but QUIT
			      * gets 554 5.7.1 and the session closes; NULL = served */
};

/* Reply bytes are appended to buf[len..cap). The engine does not start a
 * command unless SMTP_OUT_RESERVE bytes are free (it returns SMTP_BLOCKED
 * instead), so that a later smtp_resume always finds room for its reply. */
#define SMTP_OUT_RESERVE (2 * REPLY_MAX)

struct smtp_out {
	uint8_t *buf; /* borrowed */
	size_t len;
	size_t cap;
};

enum smtp_result {
	SMTP_MORE = 0, /* needs more input: *used may be < len (a partial command line) */
	SMTP_BLOCKED,  /* stopped: waiting for smtp_resume, or out is full; send, then feed again */
	SMTP_CLOSE,    /* send out, then close the connection */
	SMTP_STARTTLS, /* send out, discard all later input, then run the TLS handshake */
};

void smtp_init(struct smtp_session *s, const struct smtp_conf *conf, const struct smtp_hooks *hooks,
	       void *ctx);

/* Appends the 220 greeting. */
void smtp_greet(struct smtp_session *s, struct smtp_out *out);

/* Consumes input (see the contract above); *used is set to the bytes taken. */
enum smtp_result smtp_feed(struct smtp_session *s, const uint8_t *in, size_t len, size_t *used,
			   struct smtp_out *out);

/* Outcome of a deferred end of content; qid is used when v is SMTP_V_OK. */
void smtp_resume(struct smtp_session *s, enum smtp_verdict v, const char *qid,
		 struct smtp_out *out);

/* The TLS handshake completed: back to the state after the greeting (RFC 3207 4.2). */
void smtp_tls_started(struct smtp_session *s);

/* Why a session ends for a reason of the server's, not a command's. */
enum smtp_end {
	SMTP_END_TIMEOUT = 0, /* 421 4.4.2 HOST Error: timeout exceeded */
	SMTP_END_SHUTDOWN,    /* 421 4.3.2 HOST Service shutting down */
	SMTP_END_CONN_LIMIT,  /* 421 4.7.0 HOST Error: too many connections */
	SMTP_END_IP_LIMIT,    /* 421 4.7.0 HOST Error: too many connections from your address */
	SMTP_END_PROXY,	      /* 421 4.7.0 HOST Error: bad or missing PROXY protocol header */
	SMTP_END_PREGREET,    /* 554 5.5.1 HOST Error: talking before the greeting */
	SMTP_END_CONN_RATE,   /* 421 4.7.0 HOST Error: too many connections from ADDR */
	SMTP_END_SILENT,      /* no reply (a TLS alert went out instead) */
};

/* Appends the reply for why (none for SMTP_END_SILENT) and closes the
 * session; aborts a transaction, unless the host has its message (WAIT). */
void smtp_end(struct smtp_session *s, enum smtp_end why, struct smtp_out *out);

/* The same reply, CRLF-ended, into buf, for a connection refused before it
 * has a session; client is its address as text (SMTP_END_CONN_RATE names
 * it). Its length, or 0 (SMTP_END_SILENT, or cap too small). */
size_t smtp_end_reply(const struct smtp_conf *conf, enum smtp_end why, const char *client,
		      char *buf, size_t cap);

/* Ends the session without a reply (the peer closed); aborts a transaction. */
void smtp_close(struct smtp_session *s);

/* Whether the session is inside message content (data timeout applies). */
static inline bool smtp_in_content(const struct smtp_session *s)
{
	return s->state == SMTP_S_DATA || s->state == SMTP_S_BDAT;
}

/* Whether a mail transaction is open (MAIL accepted, content, or waiting for the host). */
bool smtp_in_transaction(const struct smtp_session *s);

/* The longest partial command line smtp_feed may leave unused: the caller's
 * stash must hold this many bytes. */
static inline size_t smtp_line_max(const struct smtp_conf *conf)
{
	return conf->cfg->command_line_limit;
}

#endif
