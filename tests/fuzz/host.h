/*
 * host.h - the fake shard the engine fuzz targets drive smtp.c with.
 *
 * It does what a shard does with a session (smtp.h's contract): keeps the
 * unused input (a partial command line) and feeds it again joined with the
 * next bytes, drains the output after each feed, resumes a deferred end of
 * data, and after SMTP_STARTTLS drops the rest of what it had read and calls
 * smtp_tls_started. Its hooks answer with verdicts taken from the fuzz input
 * and check that the engine calls them in a valid order. Each feed's input
 * is an exact-size allocation, so a sanitizer sees a read past it.
 *
 * Invariants checked (abort on violation): replies are whole CRLF lines of
 * at most 512 octets (fuzz_check_replies); a body run lies inside the
 * current feed's input or in body_static, is not empty, and a message never
 * gets more than message_size_limit bytes; hooks come in a valid order (no
 * helo/mail inside a transaction, rcpt only before content and below
 * recipient_limit, data_start once per transaction with a recipient, body
 * only inside content, data_end only after data_start, abort only for an
 * open transaction, nothing while a message is with the host); SMTP_BLOCKED
 * only when something is deferred or the output is short of
 * SMTP_OUT_RESERVE; unused input only in command state, without LF, shorter
 * than the line limit; SMTP_CLOSE after a 221 or 421; SMTP_STARTTLS only
 * when enabled, outside TLS and a transaction, after a 220.
 */
#ifndef MXRING_FUZZ_HOST_H
#define MXRING_FUZZ_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "smtp.h"

/* Configuration flags (fhost_init). */
#define FH_STARTTLS   0x01u /* smtp_conf starttls */
#define FH_BARE_LF    0x02u /* bare_newline = reject */
#define FH_SMALL_MSG  0x04u /* message_size_limit = 256 */
#define FH_FEW_RCPT   0x08u /* recipient_limit = 2 */
#define FH_FEW_ERRORS 0x10u /* error_limit = 3 */
#define FH_SMALL_OUT  0x20u /* output buffer of SMTP_OUT_RESERVE + 32 bytes */
#define FH_LONG_LINES 0x40u /* command_line_limit = 1000 */
#define FH_BODY_FAIL  0x80u /* the body hook fails past body_fail_after bytes */

enum fhost_end { FE_MORE, FE_CLOSED, FE_STARTTLS };

struct fhost {
	struct config cfg;
	struct smtp_conf conf;
	struct smtp_session s;
	struct smtp_out out;
	uint8_t *stash; /* unused input kept for the next feed (owned) */
	size_t stash_len;
	const uint8_t *in; /* the input of the feed in progress, or NULL */
	size_t in_len;
	bool txn, content, defer, tls, closed;
	unsigned nrcpt;
	uint64_t msg_bytes;
	uint64_t body_fail_after;
	uint16_t vbits; /* verdicts: 2 bits per hook call, in turn */
	unsigned vcalls;
	bool refuse_data; /* data_start always refuses (command-only fuzzing) */
	bool hold_defer;  /* a deferred message is not resumed by fhost_feed */
	unsigned qid;
	unsigned long body_runs, hook_calls;
};

void fhost_init(struct fhost *h, unsigned flags, uint16_t vbits, uint64_t body_fail_after);
void fhost_free(struct fhost *h);

/*
 * Feeds the stash plus n bytes of p until the engine wants more, closes or
 * starts TLS. On FE_STARTTLS the rest of the input is dropped and the
 * handshake is taken as done (smtp_tls_started). On FE_CLOSED the session
 * is over.
 */
enum fhost_end fhost_feed(struct fhost *h, const uint8_t *p, size_t n);

/* Resumes a held deferred message (hold_defer) with the next verdict. */
void fhost_resume(struct fhost *h);

/* Ends an open session: 0 peer close, 1 timeout, 2 shutdown; checks the host is left clean. */
void fhost_end(struct fhost *h, unsigned how);

#endif
