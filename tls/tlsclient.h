/*
 * tlsclient.h - the TLS client of the relay (STARTTLS to the site's hub) and
 * of mxring-bench, on wolfSSL over in-memory I/O.
 *
 * As in tls.h (the server), wolfSSL never touches a socket: ciphertext the
 * connection received is offered with tlsc_input, and what wolfSSL writes
 * is appended to an output buffer the connection sends itself. One
 * tlsc_ctx serves every thread (read-only once made); a tlsc_conn belongs
 * to one connection and one thread.
 *
 * Checking the server (Postfix's smtp_tls_security_level): "may" and
 * "encrypt" check nothing, as Postfix does (verify false); "verify" checks
 * the chain against the CAs of ca_file and the certificate's names (its
 * DNS subjectAltNames, or its CN when it has none) against server_name,
 * and a failure of either fails the handshake, with tlsc_error saying
 * which. server_name is also sent as SNI (RFC 6066),
 * unless it is an IP address, which SNI may not carry.
 *
 * Resumption: tlsc_session_save keeps the session of a finished full
 * handshake (its TLS 1.3 ticket, or its TLS 1.2 ticket or session ID);
 * tlsc_conn_new offers it on the next connection of the same context. A
 * session made by another context (another CA file or name, or a context
 * that did not verify) is not offered: a resumed session skips the
 * certificate, so it may only come from a handshake that checked what
 * this context checks.
 *
 * Built from tlsclient_none.c when meson finds no wolfSSL: tlsc_available()
 * is false and tlsc_ctx_new fails with a message.
 */
#ifndef MXRING_TLSCLIENT_H
#define MXRING_TLSCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLSC_OUT_MAX	(72u * 1024) /* ciphertext queued before a send, at most */
#define TLSC_PLAIN_STEP (16u * 1024) /* plaintext taken per tlsc_write call, at most */
#define TLSC_NAME_MAX	253u	     /* server_name: a DNS name, RFC 1035 */

struct tlsc_ctx;
struct tlsc_conn;
struct tlsc_session;

/* What the client offers to resume with. TLS 1.3 always resumes by its PSK
 * tickets; the mode says what TLS 1.2 asks for. */
enum tlsc_resume {
	TLSC_RESUME_NONE = 0,	 /* offer no saved session */
	TLSC_RESUME_TICKETS = 1, /* TLS 1.2: ask for RFC 5077 tickets */
	TLSC_RESUME_IDS = 2,	 /* TLS 1.2: session IDs (the server's cache) */
};

/* How a context is made; the strings are borrowed during tlsc_ctx_new only. */
struct tlsc_opts {
	int version;		 /* 0: TLS 1.2 or 1.3, the server picks; 12 or 13: that one */
	enum tlsc_resume resume; /* what tlsc_conn_new offers */
	bool verify;		 /* check chain and name (needs ca_file and server_name) */
	const char *ca_file;	 /* PEM file of trusted CAs; read only with verify */
	const char *server_name; /* SNI and the name checked; NULL: neither */
};

bool tlsc_available(void);
/* What the TLS build is ("wolfSSL 5.7.2"), for --version and reports. */
const char *tlsc_library(void);

/*
 * Makes a context from o. 0 and *out; or -errno with why in err (at most
 * errcap bytes): -EINVAL for options this build or the CA file cannot
 * serve, -ENOMEM, -EIO when wolfSSL cannot start.
 */
int tlsc_ctx_new(const struct tlsc_opts *o, struct tlsc_ctx **out, char *err, size_t errcap)
    __attribute__((warn_unused_result));
/* Frees c once no tlsc_conn of it is left. NULL: nothing. */
void tlsc_ctx_free(struct tlsc_ctx *c);

/*
 * A client session of c, offering resume (borrowed, may be NULL) when the
 * context resumes and resume was saved from a session of c. NULL: no memory.
 * A saved session is not locked: use one slot from one thread at a time.
 */
struct tlsc_conn *tlsc_conn_new(struct tlsc_ctx *c, struct tlsc_session *resume);
void tlsc_conn_free(struct tlsc_conn *t);

/* Ciphertext in: in[0..len) (borrowed until the next tlsc_input);
 * tlsc_input_used says how much wolfSSL took since. */
void tlsc_input(struct tlsc_conn *t, const uint8_t *in, size_t len);
size_t tlsc_input_used(const struct tlsc_conn *t);

/* Ciphertext out (owned by t): at most TLSC_OUT_MAX bytes waiting. */
const uint8_t *tlsc_output(const struct tlsc_conn *t, size_t *len);
/* Drops the first len bytes of the output (sent). */
void tlsc_output_consumed(struct tlsc_conn *t, size_t len);

enum tlsc_status { TLSC_OK = 0, TLSC_AGAIN = 1, TLSC_CLOSED = 2, TLSC_ERROR = 3 };

/* Runs the handshake as far as the input allows: TLSC_OK once finished;
 * TLSC_ERROR with tlsc_error saying why (a check of the server's certificate
 * that failed among them). */
enum tlsc_status tlsc_handshake(struct tlsc_conn *t);
/* Whether the finished handshake resumed a saved session. */
bool tlsc_resumed(const struct tlsc_conn *t);
/* Whether the finished handshake checked the server's chain and name (or
 * resumed a session whose handshake did): the context verifies. */
bool tlsc_verified(const struct tlsc_conn *t);
/* Decrypts into buf; *n bytes. TLSC_AGAIN when it needs more input (a
 * TLS 1.3 ticket alone is taken in and gives TLSC_AGAIN). */
enum tlsc_status tlsc_read(struct tlsc_conn *t, uint8_t *buf, size_t cap, size_t *n);
/* Encrypts p[0..len) (len <= TLSC_PLAIN_STEP) into the output. */
enum tlsc_status tlsc_write(struct tlsc_conn *t, const uint8_t *p, size_t len);
/* "TLSv1.3 TLS13-AES128-GCM-SHA256" into buf; buf. */
const char *tlsc_describe(struct tlsc_conn *t, char *buf, size_t cap);
/*
 * Why the last call failed, into buf; buf. A failed check of the server's
 * certificate reads "certificate verify failed: REASON" or "certificate name
 * mismatch: NAME is not a name of the server's certificate".
 */
const char *tlsc_error(struct tlsc_conn *t, char *buf, size_t cap);

/*
 * Keeps t's session in *slot for the next connection, freeing the one there
 * before; nothing when t has no session or resumed (the slot keeps the
 * session it resumed: with wolfSSL 5.5.4 a TLS 1.3 session taken after a
 * resumption holds the server's new ticket but not the secret that goes
 * with it, and OpenSSL servers such as Postfix refuse it, "binder does not
 * verify").
 */
void tlsc_session_save(struct tlsc_conn *t, struct tlsc_session **slot);
void tlsc_session_free(struct tlsc_session *s);

#endif
