/*
 * tlstest.h - what the wolfSSL unit tests of tests/unit/tls share.
 *
 * A throw-away ECDSA P-256 certificate and key; a pipe in memory with the
 * wolfSSL I/O callbacks that read and write it; a wolfSSL server and client
 * joined by two such pipes, and their handshake. The callbacks answer
 * WANT_READ on an empty pipe and WANT_WRITE on a full one, as the shard
 * drives wolfSSL. Every function here fails the running cmocka test on an
 * error, so callers check nothing.
 */
#ifndef MXRING_TLSTEST_H
#define MXRING_TLSTEST_H

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <stddef.h>
#include <stdint.h>

/* CN=mx.test, valid to 2126; PEM, NUL-terminated. */
extern const char tlstest_ec_cert_pem[];
extern const char tlstest_ec_key_pem[];

/* Bytes one side wrote and the other has not read yet, in order. */
struct tlstest_pipe {
	uint8_t *b; /* borrowed: cap bytes */
	size_t len, cap;
};

/* Drops the first n (at most len) bytes. */
void tlstest_pipe_take(struct tlstest_pipe *p, size_t n);

/*
 * A context of method whose sessions read and write pipes: each WOLFSSL of
 * it is given its two with wolfSSL_SetIOReadCtx and wolfSSL_SetIOWriteCtx.
 */
WOLFSSL_CTX *tlstest_ctx_new(WOLFSSL_METHOD *method);

#define TLSTEST_ROUNDS_MAX 64 /* handshake steps of each side */

/* A server s and a client c: c writes to c2s, s reads it; s2c the other way. */
struct tlstest_link {
	WOLFSSL *s, *c; /* owned */
	struct tlstest_pipe c2s, s2c;
};

/*
 * Makes s from sctx and c from cctx (both of tlstest_ctx_new), the client
 * to resume resume if not NULL. l's pipes are already lent their buffers
 * and empty.
 */
void tlstest_link_open(struct tlstest_link *l, WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx,
		       WOLFSSL_SESSION *resume);

/* Steps client and server in turn until both have finished the handshake. */
void tlstest_link_handshake(struct tlstest_link *l);

/* Frees s and c. */
void tlstest_link_free(struct tlstest_link *l);

/* Writes text to a new file /tmp/PROGRAM.XXXXXX; its name into path. */
void tlstest_write_temp(char *path, size_t size, const char *text);

#endif
