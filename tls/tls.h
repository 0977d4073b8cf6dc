/*
 * tls.h - STARTTLS (RFC 3207) on wolfSSL, driven by the shard's io_uring.
 *
 * wolfSSL never touches a socket: its I/O callbacks read ciphertext from a
 * window the shard points at (bytes that arrived in receive buffers) and
 * append ciphertext to an output buffer the shard sends. So one thread, one
 * ring, and the same buffer accounting serve plaintext and TLS sessions.
 *
 * One tls_ctx (a WOLFSSL_CTX per certificate, ECDSA and/or RSA, with the
 * cipher policy and ticket keys) serves every shard. A reload (SIGHUP)
 * builds a new tls_ctx and swaps it in; sessions already running keep the
 * one they started with (reference counted), new ones take the new one. A
 * bad file keeps the old context and says why. The session-ID cache is the
 * process's, not the context's: a reload keeps it.
 *
 * A session picks its certificate from the client's ClientHello (the ECDSA
 * one when the client accepts it), so its WOLFSSL object is made at the
 * first handshake step that has ClientHello bytes, not by tls_conn_new.
 */
#ifndef MXRING_TLS_H
#define MXRING_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "record.h"
#include "sesscache.h"

/* At most this many input segments (receive buffers) per tls_input. */
#define TLS_SEGS_MAX 4
/* A plaintext buffer for tls_read holds any one record's inner plaintext
 * (RX_INNER_MAX), so a record is opened whole or not at all. */
#define TLS_PLAIN_BUF (16384u + 256u)

struct tls_ctx;
struct tls_conn;

/* Builds a context from cfg's tls_* keys. 0 or -1 with a message on err. */
int tls_ctx_new(const struct config *cfg, struct tls_ctx **out, FILE *err)
    __attribute__((warn_unused_result));
void tls_ctx_ref(struct tls_ctx *c);
void tls_ctx_unref(struct tls_ctx *c);

/* The process-wide current context (NULL when TLS is off); a reference is taken. */
struct tls_ctx *tls_current(void);
/* Replaces the current context (takes over the caller's reference). */
void tls_set_current(struct tls_ctx *c);

/*
 * A session at STARTTLS (or at accept on an implicit-TLS port). NULL on
 * failure (memory). It holds no WOLFSSL object yet: tls_handshake makes one
 * once the ClientHello has chosen the certificate; until then it keeps a
 * ClientHello that came in pieces (at most HELLO_INPUT_MAX bytes, counted as
 * used input) and replays it to wolfSSL.
 */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx);

/*
 * The same, with the certificate chosen now from the first ciphertext bytes
 * p[0..len) (not consumed: pass them to tls_input next), on tls_current().
 * 0; -EAGAIN: the ClientHello is not whole, call again with more bytes
 * (from the start); -ENOMEM; -ENOENT: TLS is off.
 */
int tls_conn_new_from_hello(const uint8_t *p, size_t len, struct tls_conn **out)
    __attribute__((warn_unused_result));
void tls_conn_free(struct tls_conn *t);

/*
 * Ciphertext in: points the session at the concatenation of seg[0..nseg)
 * (at most TLS_SEGS_MAX; the array is borrowed until the next call). After
 * tls_handshake or tls_read, tls_input_used says how many of those bytes
 * were consumed (the caller frees consumed receive buffers at once).
 * During the handshake, and on the wolfSSL_read path, all input is
 * consumed before TLS_AGAIN. A session whose records are opened in place
 * (record.h, tls_in_place): a record not yet whole stays unconsumed, in the caller's
 * buffers, until tls_keep_input moves it into the session.
 */
void tls_input(struct tls_conn *t, const struct tls_seg *seg, unsigned nseg);
size_t tls_input_used(const struct tls_conn *t);

/*
 * Moves the unconsumed input (a record not yet whole, at most
 * RX_RECORD_MAX bytes with what is already kept) into the session's own
 * memory; it then counts as used, and tls_read reads it first. For a
 * caller that must not keep receive buffers pinned. 0, -E2BIG (more than
 * one record, or not a session that opens records in place: keep the
 * buffers) or -ENOMEM.
 */
int tls_keep_input(struct tls_conn *t) __attribute__((warn_unused_result));
/* Whether tls_keep_input holds bytes (later input should join them). */
bool tls_holding(const struct tls_conn *t);
/* Whether the session's records are opened in place by record.c (once the
 * handshake is done, see tls_records_mode), not read through wolfSSL_read. */
bool tls_in_place(const struct tls_conn *t);

/* Ciphertext out: appended here by wolfSSL (owned by the session). */
const uint8_t *tls_output(const struct tls_conn *t, size_t *len);
/* The whole output, handed over (the caller frees it with free()); the
 * session starts a new buffer for what it writes next. NULL when empty. */
uint8_t *tls_output_take(struct tls_conn *t, size_t *len);

enum tls_status { TLS_OK = 0, TLS_AGAIN = 1, TLS_CLOSED = 2, TLS_ERROR = 3 };

/* Runs the server handshake as far as the input allows. */
enum tls_status tls_handshake(struct tls_conn *t);

/* Decrypts into buf (at most cap, at least TLS_PLAIN_BUF); *n bytes.
 * TLS_AGAIN when it needs input. Data that came before the end of the
 * session (close_notify, an error) is returned first, with TLS_OK. */
enum tls_status tls_read(struct tls_conn *t, uint8_t *buf, size_t cap, size_t *n);

/* Encrypts p[0..len) into the output. */
enum tls_status tls_write(struct tls_conn *t, const uint8_t *p, size_t len);

/* Appends a close_notify alert to the output (RFC 8446 6.1): the last
 * record before the shard closes; it does not wait for the client's. */
void tls_close_notify(struct tls_conn *t);

/* "TLSv1.3 TLS_AES_128_GCM_SHA256", and whether the session was resumed. */
const char *tls_describe(struct tls_conn *t, char *buf, size_t cap, int *resumed);

/* The certificate the session presents: "ecdsa", "rsa", or "none" before the choice. */
const char *tls_cert_type(const struct tls_conn *t);

/*
 * How this build reads client records after the handshake: "in-place"
 * (record.c, TLS 1.3 and 1.2), "in-place-tls13" (TLS 1.2 through
 * wolfSSL_read: a wolfSSL without ATOMIC_USER), "wolfssl" (wolfSSL_read for
 * both), or "none" (no TLS).
 */
const char *tls_records_mode(void);

/* Counters of the process's session-ID cache (all zero when it is off), for
 * the exit stats line. */
void tls_session_cache_stats(struct sesscache_stats *out);

/* Why the last call failed, for the log. */
const char *tls_error(struct tls_conn *t);

#endif
