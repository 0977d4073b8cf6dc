/*
 * tlsc.h - the TLS client side of mxring-bench, on wolfSSL over in-memory I/O.
 *
 * As in tls/tls.c (the server), wolfSSL never touches a socket: ciphertext
 * that the connection received is offered with tlsc_input, and what wolfSSL
 * writes is appended to an output buffer the connection sends with its
 * io_uring. One tlsc_ctx serves every thread; a tlsc_conn belongs to one
 * connection. Certificates are not verified (a load tool talks to test
 * servers with self-signed certificates).
 *
 * Resumption: tlsc_session_save keeps the session of a finished
 * connection (with its TLS 1.3 ticket, or its TLS 1.2 ticket or session
 * ID); tlsc_conn_new offers it to the server on the next connection.
 *
 * Built from tlsc_none.c when meson finds no wolfSSL: tlsc_available() is
 * false and tlsc_ctx_new fails with a message.
 */
#ifndef MXRING_BENCH_TLSC_H
#define MXRING_BENCH_TLSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench.h"

#define TLSC_OUT_MAX	(72u * 1024) /* ciphertext queued before a send, at most */
#define TLSC_PLAIN_STEP (16u * 1024) /* plaintext taken per tlsc_write call, at most */

struct tlsc_ctx;
struct tlsc_conn;
struct tlsc_session;

bool tlsc_available(void);
/* What the TLS build is ("wolfSSL 5.5.4"), for --version and the report. */
const char *tlsc_library(void);

int tlsc_ctx_new(const struct bench_cfg *cfg, struct tlsc_ctx **out, char *err, size_t errcap)
    __attribute__((warn_unused_result));
void tlsc_ctx_free(struct tlsc_ctx *c);

/* A client session; resume (borrowed, may be NULL) is offered for resumption. NULL: no memory. */
struct tlsc_conn *tlsc_conn_new(struct tlsc_ctx *c, struct tlsc_session *resume);
void tlsc_conn_free(struct tlsc_conn *t);

/* Ciphertext in: in[0..len); tlsc_input_used says how much wolfSSL took since. */
void tlsc_input(struct tlsc_conn *t, const uint8_t *in, size_t len);
size_t tlsc_input_used(const struct tlsc_conn *t);

/* Ciphertext out (owned by t). */
const uint8_t *tlsc_output(const struct tlsc_conn *t, size_t *len);
void tlsc_output_consumed(struct tlsc_conn *t, size_t len);

enum tlsc_status { TLSC_OK = 0, TLSC_AGAIN = 1, TLSC_CLOSED = 2, TLSC_ERROR = 3 };

enum tlsc_status tlsc_handshake(struct tlsc_conn *t);
/* Whether the finished handshake resumed a session. */
bool tlsc_resumed(const struct tlsc_conn *t);
/* Decrypts into buf; *n bytes. TLSC_AGAIN when it needs more input. */
enum tlsc_status tlsc_read(struct tlsc_conn *t, uint8_t *buf, size_t cap, size_t *n);
/* Encrypts p[0..len) (len <= TLSC_PLAIN_STEP) into the output. */
enum tlsc_status tlsc_write(struct tlsc_conn *t, const uint8_t *p, size_t len);
/* "TLSv1.3 TLS13-AES128-GCM-SHA256", or why the last call failed. */
const char *tlsc_describe(struct tlsc_conn *t, char *buf, size_t cap);
const char *tlsc_error(struct tlsc_conn *t, char *buf, size_t cap);

/* The connection's session for the next one (NULL if none); frees *slot's old one. */
void tlsc_session_save(struct tlsc_conn *t, struct tlsc_session **slot);
void tlsc_session_free(struct tlsc_session *s);

#endif
