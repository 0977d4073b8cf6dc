/*
 * dsn.h - the delivery status notification (a bounce, or a delay warning)
 * that the relay sends to the envelope sender of a message it could not
 * deliver to some of its recipients.
 *
 * Formatting only: no I/O, no allocation, no clock, no locale. The caller
 * passes every time and a unique seed, and gets the whole message (header
 * and body) in its own buffer, ready to be stored in the spool as a new
 * message and relayed like any other. Its envelope is the caller's: the
 * envelope sender MUST be the null sender <> (RFC 5321 4.5.5, so that a DSN
 * never causes another), the one recipient the original envelope sender,
 * with BODY=8BITMIME / SMTPUTF8 as dsn_format reports in env_flags.
 *
 * The message (RFC 3464, RFC 6522, in the shape Postfix's bounce daemon
 * gives it, so that operators and their tools know it):
 *
 *   From: Mail Delivery System <MAILER-DAEMON@myhostname>
 *   To: <the original envelope sender>
 *   Subject: Undelivered Mail Returned to Sender
 *            (delayed: Delayed Mail (still being retried))
 *   Date, Message-ID: <YYYYMMDDhhmmss.qid.seed@myhostname>,
 *   Auto-Submitted: auto-replied (RFC 3834), MIME-Version: 1.0,
 *   Content-Type: multipart/report; report-type=delivery-status;
 *           boundary="mxring-dsn.<qid>.<16 hex digits from the seed>"
 *   1. text/plain: what happened, in words, with each recipient and the
 *      reply it got, wrapped at 78 columns;
 *   2. message/delivery-status (RFC 3464 2.2, 2.3): Reporting-MTA,
 *      X-Mxring-Queue-ID, X-Mxring-Sender, Arrival-Date; then per recipient
 *      Final-Recipient, Original-Recipient (when known), Action, Status,
 *      Remote-MTA (when known), Diagnostic-Code, Last-Attempt-Date (when
 *      known), Will-Retry-Until (delayed, when known);
 *   3. text/rfc822-headers (RFC 6522 4): the original message's headers,
 *      not its body (Postfix's default), at most DSN_HEADERS_MAX octets of
 *      them, cut before a header (or at least a line) when longer, which
 *      part 1 then says.
 * SMTPUTF8 (RFC 6533): when the original came with SMTPUTF8 and an address
 * of the report (the sender, a recipient, an original recipient) is not
 * ASCII, such addresses are written in UTF-8 with the "utf-8" address type,
 * and parts 2 and 3 are message/global-delivery-status and
 * message/global-headers; the report-type stays delivery-status, as
 * Postfix writes it.
 *
 * Invariants of the output, whatever the input: lines end in CRLF and there
 * is no other CR or LF; no line is longer than DSN_LINE_MAX octets without
 * its CRLF; no NUL or other control byte but HTAB; octets >= 0x80 only in
 * the original headers (as they came) and, SMTPUTF8, in valid UTF-8
 * addresses and replies (all declared 8bit, and reported in env_flags);
 * the boundary occurs nowhere but in its parameter and delimiters. Text from outside
 * (addresses, the hub's reply, the headers) has every control byte
 * replaced, and is cut at its bound, so nothing can add a line or a field.
 */
#ifndef MXRING_DSN_H
#define MXRING_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bounds.h"

#define DSN_HEADERS_MAX	 (64u << 10) /* octets of the original headers carried */
#define DSN_DIAG_MAX	 512u	     /* octets of a reply (JOURNAL_REPLY_MAX) */
#define DSN_MTA_MAX	 320u	     /* octets of a remote MTA's name (JOURNAL_RELAY_MAX) */
#define DSN_LINE_MAX	 998u	     /* RFC 5322 2.1.1, without CRLF */
#define DSN_WRAP_COLS	 78u	     /* the text part is wrapped here (RFC 5322 2.1.1) */
#define DSN_BOUNDARY_MAX 70u	     /* RFC 2046 5.1.1 */
/* Times dsn_format takes: from 1970-01-02 to 9999-12-30, so that a local
 * time offset by up to a day still has a four-digit year. */
#define DSN_TIME_MIN	   86400ll
#define DSN_TIME_MAX	   253402214399ll
#define DSN_UTC_OFFSET_MAX 1439 /* minutes: +2359 */

/* The report's kind; every recipient of one report has the same. */
enum dsn_action {
	DSN_FAILED = 1,	 /* Action: failed; Status 5.x.x (4.x.x when the queue lifetime ran out) */
	DSN_DELAYED = 2, /* Action: delayed; Status 4.x.x; a warning, delivery goes on */
};

/* What the diagnostic text is. */
enum dsn_diag_type {
	DSN_DIAG_SMTP = 0,  /* "smtp;": the hub's reply, SMTP or LMTP (RFC 3464 2.3.6) */
	DSN_DIAG_LOCAL = 1, /* "X-mxring;": said here (no connection, SIZE, SMTPUTF8, expiry) */
};

/* One recipient of the report. Strings are borrowed and NUL-terminated. */
struct dsn_rcpt {
	const char *addr;	/* the recipient, without <>: 1..PATH_MAX_OCTETS octets */
	const char *orig_addr;	/* ORCPT's address, or NULL / "": no Original-Recipient */
	enum dsn_action action; /* the same for all */
	const char *status;	/* RFC 3463 "5.1.1": class 4 or 5 (failed), 4 (delayed) */
	const char *remote_mta; /* the hub's host name, or NULL / "" when none answered;
				   cut at DSN_MTA_MAX */
	enum dsn_diag_type diag_type;
	const char *diag;	/* not empty: "550 5.1.1 <x@y>: Recipient address rejected"
				   or a local reason; one line is kept, cut at DSN_DIAG_MAX */
	int64_t last_attempt_s; /* 0: none, else Last-Attempt-Date (Unix time) */
	int64_t retry_until_s;	/* delayed: 0 or Will-Retry-Until; failed: must be 0 */
};

#define DSN_F_SMTPUTF8 0x1u /* the original message came with SMTPUTF8 */

/* The report. Strings and arrays are borrowed. */
struct dsn_report {
	const char *myhostname;	     /* the reporting MTA: letters, digits, '-', '.' */
	const char *qid;	     /* the original message's queue id: QID_LEN alnum at most */
	const char *sender;	     /* its envelope sender without <>; "" is refused */
	int64_t arrival_s;	     /* when it arrived (Unix time) */
	int64_t now_s;		     /* Date: and the Message-ID */
	int32_t utc_offset_min;	     /* of the local zone the dates are written in */
	uint64_t seed;		     /* unique to this report: boundary, Message-ID */
	uint32_t flags;		     /* DSN_F_* */
	const uint8_t *headers;	     /* the original header block (NULL when len 0) */
	size_t headers_len;	     /* up to its first empty line: the rest is ignored */
	const struct dsn_rcpt *rcpt; /* nrcpt of them */
	uint32_t nrcpt;		     /* 1..RCPT_LIMIT_MAX */
};

struct dsn_result {
	size_t len;	    /* octets of the message (needed, on -ENOSPC) */
	uint32_t env_flags; /* ENV_8BITMIME, ENV_SMTPUTF8 (msg.h): how to relay it */
	bool headers_cut;   /* the original headers were longer than DSN_HEADERS_MAX */
};

/*
 * Writes the notification r into dst[0..cap) (no NUL is added).
 * Returns 0 and res; -ENOSPC when cap is too small, with res->len the size
 * it needs (dst may be NULL with cap 0, to ask); -EPERM when r->sender is
 * the null sender (no DSN is ever made for a DSN: the caller logs and drops
 * it); -EINVAL when r breaks the contract above (a time out of range,
 * recipients of two actions, a status of the wrong class, a bad host name
 * or qid, an address too long); -EEXIST, in practice never, when the
 * text given (headers, addresses, replies) holds every boundary the seed
 * gives (change the seed).
 * res->len <= dsn_size_max(r->nrcpt) always.
 */
int dsn_format(const struct dsn_report *r, char *dst, size_t cap, struct dsn_result *res)
    __attribute__((warn_unused_result));

/* The largest message a report of nrcpt (<= RCPT_LIMIT_MAX) recipients makes. */
size_t dsn_size_max(uint32_t nrcpt);

#endif
