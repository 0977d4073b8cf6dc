/*
 * tlstest.c - the certificate, pipes and links of tlstest.h.
 */
#include "tlstest.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

const char tlstest_ec_cert_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBejCCASGgAwIBAgIUcgUnbtHSUflpHYvEWIpDsdGDidAwCgYIKoZIzj0EAwIw\n"
    "EjEQMA4GA1UEAwwHbXgudGVzdDAgFw0yNjExMjgwNTE1MTFaGA8yMTI2MTEwNDA1\n"
    "MTUxMVowEjEQMA4GA1UEAwwHbXgudGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEH\n"
    "A0IABJ1i+e/x4yCq0zvwTsxYC1aFzQ1pn3H7/eHYXX6scg4G+PgnloGjv5M+EAoJ\n"
    "KBYyPilzXNgMZ9o9II51gZqnDv2jUzBRMB0GA1UdDgQWBBQSNyEAHQkp+p2AR9rV\n"
    "am/1yPw/wTAfBgNVHSMEGDAWgBQSNyEAHQkp+p2AR9rVam/1yPw/wTAPBgNVHRMB\n"
    "Af8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIDGG3IV5b6O/7KOqySUfHURf/Mmb\n"
    "8/kEsRvaV8Qx3tBEAiAuVtBEgacHkZSHre5uQ7UcAMoHeo3Ib48T5p4OrsM6qQ==\n"
    "-----END CERTIFICATE-----\n";
const char tlstest_ec_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8DaSONvVrBGU9xXU\n"
    "0+OICc27q21LDce4OSc0YWDIX52hRANCAASdYvnv8eMgqtM78E7MWAtWhc0NaZ9x\n"
    "+/3h2F1+rHIOBvj4J5aBo7+TPhAKCSgWMj4pc1zYDGfaPSCOdYGapw79\n"
    "-----END PRIVATE KEY-----\n";

void tlstest_pipe_take(struct tlstest_pipe *p, size_t n)
{
	assert_true(n <= p->len);
	memmove(p->b, p->b + n, p->len - n);
	p->len -= n;
}

static int pipe_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct tlstest_pipe *p = ctx;
	(void)ssl;
	if (p->len == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	size_t n = (size_t)sz < p->len ? (size_t)sz : p->len;
	memcpy(buf, p->b, n);
	tlstest_pipe_take(p, n);
	return (int)n;
}

static int pipe_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct tlstest_pipe *p = ctx;
	(void)ssl;
	if (p->len + (size_t)sz > p->cap)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	memcpy(p->b + p->len, buf, (size_t)sz);
	p->len += (size_t)sz;
	return sz;
}

WOLFSSL_CTX *tlstest_ctx_new(WOLFSSL_METHOD *method)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(method);
	assert_non_null(ctx);
	wolfSSL_CTX_SetIORecv(ctx, pipe_recv);
	wolfSSL_CTX_SetIOSend(ctx, pipe_send);
	return ctx;
}

void tlstest_link_open(struct tlstest_link *l, WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx,
		       WOLFSSL_SESSION *resume)
{
	assert_true(l->c2s.b && l->c2s.cap && l->c2s.len == 0);
	assert_true(l->s2c.b && l->s2c.cap && l->s2c.len == 0);
	l->s = wolfSSL_new(sctx);
	l->c = wolfSSL_new(cctx);
	assert_non_null(l->s);
	assert_non_null(l->c);
	wolfSSL_SetIOReadCtx(l->s, &l->c2s);
	wolfSSL_SetIOWriteCtx(l->s, &l->s2c);
	wolfSSL_SetIOReadCtx(l->c, &l->s2c);
	wolfSSL_SetIOWriteCtx(l->c, &l->c2s);
	if (resume)
		assert_int_equal(wolfSSL_set_session(l->c, resume), WOLFSSL_SUCCESS);
}

/* One handshake step of ssl: true once it has finished. */
static bool step(WOLFSSL *ssl, int (*fn)(WOLFSSL *))
{
	int ret = fn(ssl);
	if (ret == WOLFSSL_SUCCESS)
		return true;
	assert_int_equal(wolfSSL_get_error(ssl, ret), WOLFSSL_ERROR_WANT_READ);
	return false;
}

void tlstest_link_handshake(struct tlstest_link *l)
{
	bool cdone = false, sdone = false;
	for (int r = 0; r < TLSTEST_ROUNDS_MAX && !(cdone && sdone); r++) {
		cdone = cdone || step(l->c, wolfSSL_connect);
		sdone = sdone || step(l->s, wolfSSL_accept);
	}
	assert_true(cdone);
	assert_true(sdone);
}

void tlstest_link_free(struct tlstest_link *l)
{
	wolfSSL_free(l->c);
	wolfSSL_free(l->s);
}

void tlstest_write_temp(char *path, size_t size, const char *text)
{
	assert_true((size_t)snprintf(path, size, "/tmp/%s.XXXXXX", program_invocation_short_name) <
		    size);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(close(fd), 0);
}
