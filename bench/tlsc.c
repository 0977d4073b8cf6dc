/*
 * tlsc.c - TLS client on wolfSSL over in-memory I/O (see tlsc.h).
 *
 * Versions: --tls-version 1.2 or 1.3 pins the method; without it the
 * client offers both and the server picks. Key exchange X25519 then P-256
 * (the server's preference in tls/tls.c, so no HelloRetryRequest).
 * --resume tickets asks for RFC 5077 tickets under TLS 1.2 (TLS 1.3
 * resumes by its own PSK tickets); --resume ids relies on TLS 1.2 session
 * IDs (the server's cache); --resume none offers nothing.
 *
 * wolfSSL's process-wide session cache is one small array behind a mutex;
 * each connection slot keeps its own session instead, so the client
 * context stores nothing there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "tlsc.h"

struct tlsc_ctx {
	WOLFSSL_CTX *ctx; /* owned */
	enum bench_resume resume;
};

struct tlsc_conn {
	WOLFSSL *ssl;	   /* owned */
	const uint8_t *in; /* borrowed: the connection's receive buffer */
	size_t in_len, in_used;
	uint8_t *out; /* owned, TLSC_OUT_MAX bytes */
	size_t out_len;
	int err;
};

bool tlsc_available(void)
{
	return true;
}

const char *tlsc_library(void)
{
	static char buf[64];
	snprintf(buf, sizeof(buf), "wolfSSL %s", wolfSSL_lib_version());
	return buf;
}

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *vctx)
{
	struct tlsc_conn *t = vctx;
	(void)ssl;
	size_t avail = t->in_len - t->in_used;
	if (avail == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	size_t n = (size_t)sz < avail ? (size_t)sz : avail;
	memcpy(buf, t->in + t->in_used, n);
	t->in_used += n;
	return (int)n;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *vctx)
{
	struct tlsc_conn *t = vctx;
	(void)ssl;
	if (t->out_len + (size_t)sz > TLSC_OUT_MAX)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	memcpy(t->out + t->out_len, buf, (size_t)sz);
	t->out_len += (size_t)sz;
	return sz;
}

static WOLFSSL_METHOD *tlsc_method(int version)
{
	if (version == 12)
		return wolfTLSv1_2_client_method();
	if (version == 13)
		return wolfTLSv1_3_client_method();
	return wolfSSLv23_client_method();
}

int tlsc_ctx_new(const struct bench_cfg *cfg, struct tlsc_ctx **out, char *err, size_t errcap)
{
	if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
		snprintf(err, errcap, "wolfSSL_Init failed");
		return -EIO;
	}
	struct tlsc_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errcap, "out of memory");
		return -ENOMEM;
	}
	c->resume = cfg->resume;
	c->ctx = wolfSSL_CTX_new(tlsc_method(cfg->tls_version));
	if (!c->ctx) {
		snprintf(err, errcap, "wolfSSL_CTX_new failed");
		goto fail;
	}
	if (cfg->tls_version == 0 &&
	    wolfSSL_CTX_SetMinVersion(c->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
		snprintf(err, errcap, "this wolfSSL cannot restrict itself to TLS 1.2+");
		goto fail;
	}
	/* Groups (and so the TLS 1.3 key share); TLS 1.2 keeps the supported-curves default. */
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	if (cfg->tls_version != 12 &&
	    wolfSSL_CTX_set_groups(c->ctx, groups, 2) != WOLFSSL_SUCCESS) {
		snprintf(err, errcap, "this wolfSSL lacks X25519 or P-256");
		goto fail;
	}
	wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_NONE, NULL);
	wolfSSL_CTX_set_session_cache_mode(c->ctx, WOLFSSL_SESS_CACHE_NO_INTERNAL_STORE);
	if (cfg->resume == BENCH_RESUME_TICKETS &&
	    wolfSSL_CTX_UseSessionTicket(c->ctx) != WOLFSSL_SUCCESS) {
		snprintf(err, errcap, "this wolfSSL has no session tickets");
		goto fail;
	}
	wolfSSL_CTX_SetIORecv(c->ctx, io_recv);
	wolfSSL_CTX_SetIOSend(c->ctx, io_send);
	*out = c;
	return 0;
fail:
	tlsc_ctx_free(c);
	return -EINVAL;
}

void tlsc_ctx_free(struct tlsc_ctx *c)
{
	if (!c)
		return;
	if (c->ctx)
		wolfSSL_CTX_free(c->ctx);
	free(c);
}

struct tlsc_conn *tlsc_conn_new(struct tlsc_ctx *c, struct tlsc_session *resume)
{
	struct tlsc_conn *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->out = malloc(TLSC_OUT_MAX);
	t->ssl = wolfSSL_new(c->ctx);
	if (!t->out || !t->ssl) {
		tlsc_conn_free(t);
		return NULL;
	}
	wolfSSL_SetIOReadCtx(t->ssl, t);
	wolfSSL_SetIOWriteCtx(t->ssl, t);
	/* A session the server no longer knows just means a full handshake. */
	if (resume && c->resume != BENCH_RESUME_NONE)
		(void)wolfSSL_set_session(t->ssl, (WOLFSSL_SESSION *)resume);
	return t;
}

void tlsc_conn_free(struct tlsc_conn *t)
{
	if (!t)
		return;
	if (t->ssl)
		wolfSSL_free(t->ssl);
	free(t->out);
	free(t);
}

void tlsc_input(struct tlsc_conn *t, const uint8_t *in, size_t len)
{
	t->in = in;
	t->in_len = len;
	t->in_used = 0;
}

size_t tlsc_input_used(const struct tlsc_conn *t)
{
	return t->in_used;
}

const uint8_t *tlsc_output(const struct tlsc_conn *t, size_t *len)
{
	*len = t->out_len;
	return t->out;
}

void tlsc_output_consumed(struct tlsc_conn *t, size_t len)
{
	if (len >= t->out_len) {
		t->out_len = 0;
		return;
	}
	memmove(t->out, t->out + len, t->out_len - len);
	t->out_len -= len;
}

static enum tlsc_status tlsc_status_of(struct tlsc_conn *t, int ret)
{
	int e = wolfSSL_get_error(t->ssl, ret);
	if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
		return TLSC_AGAIN;
	if (e == WOLFSSL_ERROR_ZERO_RETURN)
		return TLSC_CLOSED;
	t->err = e;
	return TLSC_ERROR;
}

enum tlsc_status tlsc_handshake(struct tlsc_conn *t)
{
	int ret = wolfSSL_connect(t->ssl);
	return ret == WOLFSSL_SUCCESS ? TLSC_OK : tlsc_status_of(t, ret);
}

bool tlsc_resumed(const struct tlsc_conn *t)
{
	return wolfSSL_session_reused(t->ssl) != 0;
}

enum tlsc_status tlsc_read(struct tlsc_conn *t, uint8_t *buf, size_t cap, size_t *n)
{
	*n = 0;
	int ret = wolfSSL_read(t->ssl, buf, (int)cap);
	if (ret > 0) {
		*n = (size_t)ret;
		return TLSC_OK;
	}
	return tlsc_status_of(t, ret);
}

enum tlsc_status tlsc_write(struct tlsc_conn *t, const uint8_t *p, size_t len)
{
	int ret = wolfSSL_write(t->ssl, p, (int)len);
	if (ret == (int)len)
		return TLSC_OK;
	if (ret > 0) {
		t->err = -1;
		return TLSC_ERROR;
	}
	return tlsc_status_of(t, ret);
}

const char *tlsc_describe(struct tlsc_conn *t, char *buf, size_t cap)
{
	const char *v = wolfSSL_get_version(t->ssl);
	const char *c = wolfSSL_get_cipher_name(t->ssl);
	snprintf(buf, cap, "%s %s", v ? v : "?", c ? c : "?");
	return buf;
}

const char *tlsc_error(struct tlsc_conn *t, char *buf, size_t cap)
{
	if (t->err == -1) {
		snprintf(buf, cap, "short write");
		return buf;
	}
	char text[WOLFSSL_MAX_ERROR_SZ];
	wolfSSL_ERR_error_string_n((unsigned long)t->err, text, sizeof(text));
	snprintf(buf, cap, "%s (%d)", text, t->err);
	return buf;
}

void tlsc_session_save(struct tlsc_conn *t, struct tlsc_session **slot)
{
	WOLFSSL_SESSION *s = wolfSSL_get1_session(t->ssl);
	if (!s)
		return;
	tlsc_session_free(*slot);
	*slot = (struct tlsc_session *)s;
}

void tlsc_session_free(struct tlsc_session *s)
{
	if (s)
		wolfSSL_SESSION_free((WOLFSSL_SESSION *)s);
}
