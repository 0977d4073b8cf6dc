/*
 * smtpc.h - the SMTP/LMTP client engine, sans-I/O: what a relay worker says
 * to the hub, and what each reply means for each recipient.
 *
 * Server bytes in; command bytes, one result per recipient and the next
 * thing to do out. No socket, io_uring or TLS header is included and no
 * system call is made: the host connects, sends, receives, runs the TLS
 * handshake and the timers, and sends the message body itself (from the
 * spool, with as few copies as it can; smtpc_dot_next below); so unit tests
 * and fuzzers drive the engine directly. It never allocates.
 *
 * RFC 5321 (commands; reply syntax 4.2; dot stuffing 4.5.2), RFC 2033 (LMTP:
 * LHLO, and after the end of data one reply per accepted recipient, in RCPT
 * order), RFC 2920 (PIPELINING), RFC 1870 (SIZE), RFC 6152 (8BITMIME),
 * RFC 6531 (SMTPUTF8), RFC 3030 (CHUNKING: one "BDAT n LAST"), RFC 3207
 * (STARTTLS), RFC 2034 and RFC 3463 (enhanced status codes).
 *
 * Contract of one connection:
 *   smtpc_init when the connection starts (the greeting is the first thing
 *   read). Then every call returns what the host does next (enum smtpc_next),
 *   always after sending out's bytes, in order, first:
 *     MORE   receive; smtpc_feed what came, after the unused input of the
 *            last feed (a partial reply line: at most SMTPC_LINE_MAX bytes);
 *     WRITE  out filled up with commands still to write: send, empty out,
 *            call smtpc_feed again (with the unused input, or none);
 *     TLS    discard every byte received and not yet used (they came before
 *            the handshake: RFC 3207 5), run the handshake, smtpc_tls_started;
 *     DATA   send the body dot-stuffed and terminated (smtpc_dot_next,
 *            smtpc_dot_end), then smtpc_body_sent;
 *     BDAT   send exactly msg.size raw body bytes, then smtpc_body_sent;
 *     READY  no transaction is open: smtpc_send the next message, or
 *            smtpc_quit. Nothing is read meanwhile: bytes from an idle
 *            server (a 421 at its timeout) mean the session is over;
 *     CLOSE  close the connection. failed set: fail says why the session
 *            ended early (greeting, HELO/EHLO, TLS policy, a 421, a protocol
 *            error, the connection lost).
 *   The host's timers (and its read errors, the server closing, a failed
 *   handshake) end in smtpc_lost; state says what is awaited, so which
 *   timeout applies. After QUIT the engine waits for 221 (state QUIT); the
 *   host closes when it comes or after a short wait of its own.
 *
 * Results: result(ctx, i, r) is called exactly once for each recipient i of
 * each message handed to smtpc_send, between that call and the READY or
 * CLOSE that ends its transaction; r is lent for the call only. The host
 * classifies it with smtpc_classify. A reply is consumed only while a command
 * awaits it, and a session failure gives its reply (server's or the
 * engine's, stage where it happened) to every recipient not yet final.
 *
 * Choices:
 *   - RSET: a transaction that ended before the end of its content (MAIL
 *     refused, no recipient accepted, DATA refused), or a BDAT one whose end
 *     got any 4xx/5xx, may have left the server's transaction open: the next
 *     smtpc_send starts with RSET (pipelined with the group when PIPELINING
 *     is offered). A refused RSET ends the session (QUIT; the message's
 *     recipients get 421 4.5.0, whatever RSET's code). Before QUIT, no RSET.
 *   - Pipelining (RFC 2920): with PIPELINING the group [RSET] MAIL RCPT...
 *     DATA is written whole, in pieces when out is small, whatever the
 *     replies say, and every one of its replies is read; DATA still refused
 *     (503/554) when no recipient was accepted, and a 354 then is answered
 *     with "." alone (SMTP; in LMTP it is a protocol error). With BDAT in
 *     SMTP, "BDAT n LAST" ends the group (RFC 3030 4.2) and the host sends
 *     the body right behind it, before any reply: one round trip a message;
 *     the group's replies, then BDAT's, are read after the body (a server
 *     that refused every recipient refuses BDAT too, having read its
 *     bytes). In LMTP, whose replies after the data depend on how many
 *     recipients were accepted, the group stops after the last RCPT and
 *     BDAT follows its replies, only if a recipient was accepted.
 *     Without PIPELINING, one command at a time.
 *   - Checked before MAIL, each failing every recipient locally: a sender
 *     whose path (with <>) is longer than PATH_MAX_OCTETS or that has a
 *     control character (501 5.1.7);
 *     size over the server's SIZE (552 5.3.4); SMTPUTF8 needed and not
 *     offered (550 5.6.7, as Postfix bounces). SMTPUTF8 is needed when
 *     ENV_SMTPUTF8 is set or an envelope address is not ASCII (a host that
 *     wants Postfix's finer rule clears ENV_SMTPUTF8 itself). A recipient
 *     address that cannot be sent fails alone (501 5.1.3) and is not sent.
 *   - 8BITMIME: BODY=8BITMIME when ENV_8BITMIME is set and offered; set and
 *     not offered, the message goes as it is, without BODY= (Postfix's
 *     default: no downgrade).
 *   - STARTTLS (RFC 3207): wanted and offered, it is sent after EHLO; after
 *     smtpc_tls_started every capability is forgotten and EHLO is sent
 *     again. SMTPC_TLS_REQUIRED and not offered (or after HELO), or refused:
 *     session failure 421 4.7.4 (deferred). SMTPC_TLS_IF_OFFERED and
 *     refused: the session goes on in plain text, as Postfix's "may".
 *   - EHLO refused with 5xx: HELO (SMTP only; an LMTP server must take LHLO).
 *   - Every 421 ends the session (RFC 5321 3.8), without QUIT; other session
 *     failures send QUIT; a protocol error closes without it.
 *   - Replies: lines end in CRLF or a bare LF; a line longer than
 *     SMTPC_LINE_MAX, more than SMTPC_REPLY_LINES_MAX lines, a code not three
 *     digits from 200 to 599, a code changing within a reply, or a reply that
 *     makes no sense where it comes (a 3xx to RCPT, a 2xx to DATA) is a
 *     protocol error (421 4.5.0 for the recipients not final). An enhanced
 *     code (class = the reply's first digit) is taken from the first line's
 *     text whether or not ENHANCEDSTATUSCODES was offered, and cut from every
 *     line; the texts of the lines are joined by a space, made printable ASCII
 *     ('?' for any other byte) and cut to SMTPC_TEXT_MAX - 1.
 *   - Dot stuffing: a line starts at the body's start and after every LF
 *     (bare or not, as mxring's decoder and Postfix read it), so no line of
 *     the content ends the data whether the server takes a bare LF for a
 *     line end or not; a bare CR is content (mxring's spool has no bare LF:
 *     its decoder made each one CRLF). A body that does not end in CRLF gets
 *     CRLF added before ".": the content grows by those two bytes, as with
 *     every MTA.
 */
#ifndef MXRING_SMTPC_H
#define MXRING_SMTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bounds.h"

#define SMTPC_LINE_MAX	      2048 /* a server's reply line, with its line end */
#define SMTPC_REPLY_LINES_MAX 100  /* lines of one reply */
#define SMTPC_TEXT_MAX	      512  /* a reply's text, with its NUL */
#define SMTPC_ENH_MAX	      12   /* "5.123.456" and its NUL */
/* The longest command: "MAIL FROM:<path> SIZE=n BODY=8BITMIME SMTPUTF8" and CRLF. */
#define SMTPC_CMD_MAX 512
/* What out->cap must be: a command as room for the group, one kept for a reply's answer. */
#define SMTPC_OUT_MIN (2 * SMTPC_CMD_MAX)

enum smtpc_proto {
	SMTPC_SMTP = 0,
	SMTPC_LMTP,
};

/* What the host's TLS policy (none/may/encrypt/verify) asks of the engine. */
enum smtpc_tls {
	SMTPC_TLS_OFF = 0,    /* never STARTTLS */
	SMTPC_TLS_IF_OFFERED, /* STARTTLS when offered; plain text if not, or refused */
	SMTPC_TLS_REQUIRED,   /* no message without TLS: else the session fails (4.7.4) */
};

/* Read-only; may be shared by every session of a destination. */
struct smtpc_conf {
	uint8_t proto;	       /* enum smtpc_proto */
	uint8_t tls;	       /* enum smtpc_tls */
	bool bdat;	       /* BDAT instead of DATA when CHUNKING is offered */
	const char *helo_name; /* borrowed: the EHLO/LHLO/HELO argument, 1..HELO_MAX
				* bytes from '!' to '~' */
};

/* Capabilities of the last EHLO/LHLO reply (none after HELO). */
#define SMTPC_CAP_PIPELINING	      0x01u
#define SMTPC_CAP_SIZE		      0x02u
#define SMTPC_CAP_8BITMIME	      0x04u
#define SMTPC_CAP_SMTPUTF8	      0x08u
#define SMTPC_CAP_CHUNKING	      0x10u
#define SMTPC_CAP_STARTTLS	      0x20u
#define SMTPC_CAP_ENHANCEDSTATUSCODES 0x40u
#define SMTPC_CAP_DSN		      0x80u

/* Where a result was decided. */
enum smtpc_stage {
	SMTPC_STAGE_CONNECT = 0, /* the host could not connect (smtpc_lost) */
	SMTPC_STAGE_GREETING,
	SMTPC_STAGE_HELO,      /* EHLO, LHLO or HELO */
	SMTPC_STAGE_TLS,       /* STARTTLS, the handshake, the TLS policy */
	SMTPC_STAGE_MAIL,      /* MAIL (and the RSET before it; an idle session) */
	SMTPC_STAGE_RCPT,      /* the recipient's RCPT */
	SMTPC_STAGE_DATA,      /* DATA, BDAT, the body, SMTP's end-of-data reply */
	SMTPC_STAGE_LMTP_DATA, /* the recipient's own reply after LMTP's end of data */
	SMTPC_STAGE_SIZE,      /* refused here: larger than the server's SIZE */
	SMTPC_STAGE_SMTPUTF8,  /* refused here: SMTPUTF8 needed, not offered */
	SMTPC_STAGE_COUNT,
};

/* A reply, the server's or one the engine made (local). */
struct smtpc_reply {
	uint16_t code;		   /* 200..599; a result's is 2xx, 4xx or 5xx */
	uint8_t stage;		   /* enum smtpc_stage */
	bool local;		   /* made by the engine, not said by the server */
	char enh[SMTPC_ENH_MAX];   /* enhanced status code "5.1.1", or "" */
	char text[SMTPC_TEXT_MAX]; /* printable ASCII, NUL-terminated, may be "" */
};

enum smtpc_class {
	SMTPC_DELIVERED = 0, /* 2xx */
	SMTPC_DEFERRED,	     /* 4xx: retry later */
	SMTPC_FAILED,	     /* 5xx: bounce */
};

static inline enum smtpc_class smtpc_classify(const struct smtpc_reply *r)
{
	if (r->code >= 200 && r->code < 300)
		return SMTPC_DELIVERED;
	return r->code >= 500 && r->code < 600 ? SMTPC_FAILED : SMTPC_DEFERRED;
}

/* "rcpt", "lmtp-data", ...: for logs. */
const char *smtpc_stage_name(enum smtpc_stage stage);

/* One message to send. Its pointers are borrowed until the transaction ends
 * (the READY or CLOSE after smtpc_send). */
struct smtpc_msg {
	const char *from;	 /* without <>; "" = the null sender */
	uint32_t env_flags;	 /* ENV_8BITMIME, ENV_SMTPUTF8 (msg.h); others ignored */
	uint32_t nrcpt;		 /* 1..RCPT_LIMIT_MAX */
	uint64_t size;		 /* body bytes before stuffing (SIZE=, and BDAT's count) */
	const char *const *rcpt; /* nrcpt addresses without <>: the ones to try */
};

/* Result hook; r is lent for the call. It must not call the engine. */
typedef void (*smtpc_result_fn)(void *ctx, uint32_t rcpt, const struct smtpc_reply *r);

enum smtpc_state {
	SMTPC_S_GREETING = 0, /* waiting for the greeting */
	SMTPC_S_HELLO,	      /* EHLO or LHLO sent */
	SMTPC_S_HELO,	      /* HELO sent (EHLO got 5xx) */
	SMTPC_S_STARTTLS,     /* STARTTLS sent */
	SMTPC_S_TLS,	      /* 220 to STARTTLS: the host runs the handshake */
	SMTPC_S_READY,	      /* between transactions */
	SMTPC_S_ENVELOPE,     /* [RSET] MAIL RCPT... [DATA] written or being written */
	SMTPC_S_BODY,	      /* the host sends the body */
	SMTPC_S_DOT,	      /* body sent: the end-of-data reply (LMTP: replies) awaited */
	SMTPC_S_QUIT,	      /* QUIT sent: 221 awaited */
	SMTPC_S_CLOSED,	      /* nothing more is read or written */
};

enum smtpc_next {
	SMTPC_MORE = 0, /* receive and feed (*used may be < len: a partial line) */
	SMTPC_WRITE,	/* out is full: send it, then feed again */
	SMTPC_TLS,	/* run the TLS handshake, then smtpc_tls_started */
	SMTPC_DATA,	/* send the dot-stuffed body and its end, then smtpc_body_sent */
	SMTPC_BDAT,	/* send msg.size raw body bytes, then smtpc_body_sent */
	SMTPC_READY,	/* smtpc_send or smtpc_quit */
	SMTPC_CLOSE,	/* close the connection */
};

/* Commands are appended to buf[len..cap); the host sends them in order and
 * empties out (len = 0) once sent. cap >= SMTPC_OUT_MIN. */
struct smtpc_out {
	uint8_t *buf; /* borrowed */
	size_t len;
	size_t cap;
};

/* Recipient states (private). */
enum { SMTPC_R_PENDING = 0, SMTPC_R_ACCEPTED, SMTPC_R_DONE, SMTPC_R_LOCAL };

struct smtpc {
	const struct smtpc_conf *conf; /* borrowed */
	smtpc_result_fn result;
	void *ctx;	   /* borrowed: passed to result */
	uint8_t state;	   /* enum smtpc_state */
	bool tls;	   /* smtpc_tls_started was called */
	bool esmtp;	   /* EHLO/LHLO accepted (not HELO) */
	bool failed;	   /* the session ended early: fail says why */
	uint32_t caps;	   /* SMTPC_CAP_* */
	uint64_t size_max; /* SIZE's number (0: none, or no limit) */
	uint32_t msgs;	   /* smtpc_send calls */
	struct smtpc_reply fail;

	/* Private: the reply being read. */
	struct smtpc_reply r;
	uint16_t rlines; /* lines of r so far (0: between replies) */
	uint16_t tlen;	 /* bytes in r.text */

	/* Private: the transaction. */
	struct smtpc_msg msg;  /* pointers borrowed */
	bool need_rset;	       /* the last transaction may have left the server's open */
	bool pipe;	       /* PIPELINING offered */
	bool bdat;	       /* BDAT, not DATA */
	bool eager;	       /* BDAT pipelined with MAIL and RCPT (SMTP) */
	bool utf8;	       /* SMTPUTF8 needed */
	bool dead;	       /* MAIL refused: the recipients are final */
	bool dot_bad;	       /* an end-of-data reply was not 2xx */
	uint8_t rset;	       /* C_* in smtpc.c: RSET */
	uint8_t mail;	       /* MAIL */
	uint8_t data;	       /* DATA, or BDAT */
	uint8_t dot;	       /* "." alone after a 354 with no accepted recipient */
	uint32_t rcpt_send;    /* next recipient to write RCPT for */
	uint32_t rcpt_reply;   /* recipient the next RCPT reply is for */
	uint32_t rcpt_out;     /* RCPTs written, replies not read */
	uint32_t nacc;	       /* recipients accepted at RCPT */
	uint32_t nfinal;       /* recipients with their result */
	uint32_t dot_left;     /* end-of-data replies still to read */
	uint32_t lmtp_next;    /* LMTP: recipient the next end-of-data reply is for */
	struct smtpc_msg next; /* smtpc_send_next's message (pointers borrowed) */
	bool has_next;	       /* written behind the end of data */
	bool next_utf8;
	uint8_t rstate[RCPT_LIMIT_MAX]; /* SMTPC_R_* of each recipient */
};

/* Starts a session (state GREETING). -EINVAL if conf is not valid (the HELO
 * name's length or bytes, an unknown protocol or TLS mode). */
int smtpc_init(struct smtpc *c, const struct smtpc_conf *conf, smtpc_result_fn result, void *ctx)
    __attribute__((warn_unused_result));

/* Consumes server bytes (see the contract above); *used is set to the bytes
 * taken. len may be 0 (after WRITE). */
enum smtpc_next smtpc_feed(struct smtpc *c, const uint8_t *in, size_t len, size_t *used,
			   struct smtpc_out *out);

/* The handshake completed (state TLS): EHLO/LHLO again. out needs SMTPC_CMD_MAX free. */
enum smtpc_next smtpc_tls_started(struct smtpc *c, struct smtpc_out *out);

/* Starts a transaction (state READY; m->nrcpt in 1..RCPT_LIMIT_MAX; out
 * needs SMTPC_CMD_MAX free). READY at once when the engine refused every
 * recipient itself (their results are given already). */
enum smtpc_next smtpc_send(struct smtpc *c, const struct smtpc_msg *m, struct smtpc_out *out);

/* The body is sent (after DATA or BDAT): the replies to it are awaited. */
enum smtpc_next smtpc_body_sent(struct smtpc *c);

/*
 * Pipelines the next message behind this one's end of data (RFC 2920 3.1:
 * the content may start a group): in state DOT, after an SMTP DATA, with
 * PIPELINING, writes m's MAIL, RCPTs and DATA into out, for the host to
 * send right behind the body and its terminator (the host may call
 * smtpc_body_sent as soon as the body is queued, before it is sent). Then
 * the current transaction ends without a READY: its results come, then
 * m's, as for a smtpc_send at the next READY. false, and nothing written,
 * when m cannot go this way (BDAT, LMTP, no PIPELINING, a recipient or
 * sender refused here, SIZE, SMTPUTF8, no room in out): send it at READY.
 * If the session fails first, m's recipients get its failure too.
 */
bool smtpc_send_next(struct smtpc *c, const struct smtpc_msg *m, struct smtpc_out *out);

/* Ends the session (state READY): QUIT. out needs SMTPC_CMD_MAX free. */
enum smtpc_next smtpc_quit(struct smtpc *c, struct smtpc_out *out);

/* Why the host ends a session the server did not end. */
enum smtpc_lost {
	SMTPC_LOST_CONNECT = 0, /* 421 4.4.1 connection failed (stage connect) */
	SMTPC_LOST_CLOSED,	/* 421 4.4.2 lost connection (EOF, a read or write error) */
	SMTPC_LOST_TIMEOUT,	/* 421 4.4.2 conversation timed out */
	SMTPC_LOST_TLS,		/* 421 4.7.5 TLS failure (handshake, certificate, record) */
};

/* The connection is gone: the session fails with why's reply (results for
 * every recipient not final), unless it had ended (QUIT sent, or closed). */
void smtpc_lost(struct smtpc *c, enum smtpc_lost why);

/* Dot stuffing for DATA without copying the body. The host walks the body
 * with a window p[0..len) (len > 0) that starts where the last run ended;
 * smtpc_dot_next returns the length n (1..len) of the next run to send as it
 * is (sendfile or splice it from the file, or point an iovec at it), and
 * sets *dot when a single '.' must be sent before it. A run ends only at the
 * end of the window or just before a line-start dot. After the body, the
 * terminator smtpc_dot_end gives: ".\r\n" when the body is empty or ends in
 * CRLF, else "\r\n.\r\n". */
struct smtpc_dot {
	uint8_t prev[2]; /* private: the last two body bytes ("\r\n" at the start) */
};

void smtpc_dot_init(struct smtpc_dot *d);
size_t smtpc_dot_next(struct smtpc_dot *d, const uint8_t *p, size_t len, bool *dot);
const char *smtpc_dot_end(const struct smtpc_dot *d, size_t *len);

#endif
