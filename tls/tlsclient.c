/*
 * tlsclient.c - TLS client on wolfSSL over in-memory I/O (see tlsclient.h).
 *
 * Versions: version 12 or 13 pins the method; 0 offers both and the server
 * picks. Key exchange X25519 then P-256 (the preference of tls.c, so no
 * HelloRetryRequest against mxring). TLSC_RESUME_TICKETS asks for RFC 5077
 * tickets under TLS 1.2 (TLS 1.3 resumes by its own PSK tickets);
 * TLSC_RESUME_IDS relies on TLS 1.2 session IDs (the server's cache).
 *
 * Checks: with verify, the CAs of ca_file are loaded into the context
 * (wolfSSL_CTX_load_verify_locations) and the peer is verified
 * (WOLFSSL_VERIFY_PEER): wolfSSL checks the chain while it processes the
 * server's Certificate message and fails the handshake with the reason's
 * code. Each session is given the name to match
 * (wolfSSL_check_domain_name), which wolfSSL compares in the same place
 * with the certificate's DNS subjectAltNames, or its CN when it has none
 * (RFC 6125), failing with DOMAIN_NAME_MISMATCH. Without verify the
 * context checks nothing (WOLFSSL_VERIFY_NONE) and no name is given, since
 * wolfSSL compares names only when it verifies.
 *
 * wolfSSL's process-wide session cache is one small array behind a mutex;
 * the caller keeps each saved session in its own slot instead, so the
 * context stores nothing there. A saved session carries the id of the
 * context that made it: a context offers only its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include "tlsclient.h"

#define ERR_SHORT_WRITE (-1) /* t->err: wolfSSL_write took part of the plaintext */

struct tlsc_ctx {
	WOLFSSL_CTX *ctx; /* owned */
	uint64_t id;	  /* given to the sessions it saves */
	enum tlsc_resume resume;
	bool verify;
	char server_name[TLSC_NAME_MAX + 1]; /* "": none */
};

struct tlsc_session {
	WOLFSSL_SESSION *ws; /* owned */
	uint64_t ctx_id;     /* the context whose handshake made it */
};

struct tlsc_conn {
	WOLFSSL *ssl;		    /* owned */
	const struct tlsc_ctx *ctx; /* borrowed: outlives its sessions */
	const uint8_t *in;	    /* borrowed: the connection's receive buffer */
	size_t in_len, in_used;
	uint8_t *out; /* owned, TLSC_OUT_MAX bytes */
	size_t out_len;
	int err;   /* wolfSSL's code of the last failure, or ERR_SHORT_WRITE */
	bool done; /* the handshake finished */
};

/* Context ids start at 1, so a zeroed session matches none. */
static _Atomic uint64_t next_ctx_id = 1;

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

/* Whether name is an IPv4 or IPv6 address: SNI may not carry one (RFC 6066 3). */
static bool is_address(const char *name)
{
	uint8_t a[16];
	return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

/* Checks o against what this build can do; copies the name into c. 0 or -EINVAL. */
static int take_opts(struct tlsc_ctx *c, const struct tlsc_opts *o, char *err, size_t errcap)
{
	if (o->version != 0 && o->version != 12 && o->version != 13) {
		snprintf(err, errcap, "TLS version %d: 12, 13 or 0 (either)", o->version);
		return -EINVAL;
	}
	if (o->resume != TLSC_RESUME_NONE && o->resume != TLSC_RESUME_TICKETS &&
	    o->resume != TLSC_RESUME_IDS) {
		snprintf(err, errcap, "unknown resumption mode %d", (int)o->resume);
		return -EINVAL;
	}
	const char *name = o->server_name ? o->server_name : "";
	size_t len = strlen(name);
	if (len > TLSC_NAME_MAX) {
		snprintf(err, errcap, "server name longer than %u bytes", TLSC_NAME_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++)
		if (name[i] <= ' ' || name[i] == 0x7f) {
			snprintf(err, errcap, "server name with a space or control character");
			return -EINVAL;
		}
	if (o->verify && len == 0) {
		snprintf(err, errcap, "verify needs the server name to check");
		return -EINVAL;
	}
	if (o->verify && (!o->ca_file || !*o->ca_file)) {
		snprintf(err, errcap, "verify needs a CA file");
		return -EINVAL;
	}
	memcpy(c->server_name, name, len + 1);
	c->resume = o->resume;
	c->verify = o->verify;
	return 0;
}

/* Loads the CAs and turns verification on, or off. 0 or -EINVAL. */
static int set_verify(struct tlsc_ctx *c, const struct tlsc_opts *o, char *err, size_t errcap)
{
	if (!o->verify) {
		wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_NONE, NULL);
		return 0;
	}
	/* wolfSSL says only "bad file" for one it cannot open: say why. */
	FILE *f = fopen(o->ca_file, "r");
	if (!f) {
		snprintf(err, errcap, "cannot load CAs from %s: %s", o->ca_file, strerror(errno));
		return -EINVAL;
	}
	fclose(f);
	int ret = wolfSSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL);
	if (ret != WOLFSSL_SUCCESS) {
		char text[WOLFSSL_MAX_ERROR_SZ] = "no certificate in it";
		if (ret < 0)
			wolfSSL_ERR_error_string_n((unsigned long)ret, text, sizeof(text));
		snprintf(err, errcap, "cannot load CAs from %s: %s", o->ca_file, text);
		return -EINVAL;
	}
	wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_PEER, NULL);
	return 0;
}

/* Sends server_name as SNI when it is a DNS name. 0 or -EINVAL. */
static int set_sni(struct tlsc_ctx *c, char *err, size_t errcap)
{
	if (!c->server_name[0] || is_address(c->server_name))
		return 0;
#ifdef HAVE_SNI
	if (wolfSSL_CTX_UseSNI(c->ctx, WOLFSSL_SNI_HOST_NAME, c->server_name,
			       (unsigned short)strlen(c->server_name)) == WOLFSSL_SUCCESS)
		return 0;
	snprintf(err, errcap, "cannot set SNI %s", c->server_name);
#else
	snprintf(err, errcap, "this wolfSSL cannot send SNI (built without HAVE_SNI)");
#endif
	return -EINVAL;
}

int tlsc_ctx_new(const struct tlsc_opts *o, struct tlsc_ctx **out, char *err, size_t errcap)
{
	*out = NULL;
	if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
		snprintf(err, errcap, "wolfSSL_Init failed");
		return -EIO;
	}
	struct tlsc_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errcap, "out of memory");
		return -ENOMEM;
	}
	c->id = atomic_fetch_add(&next_ctx_id, 1);
	int rc = take_opts(c, o, err, errcap);
	if (rc)
		goto fail;
	rc = -EINVAL;
	c->ctx = wolfSSL_CTX_new(tlsc_method(o->version));
	if (!c->ctx) {
		snprintf(err, errcap, "wolfSSL_CTX_new failed");
		rc = -ENOMEM;
		goto fail;
	}
	if (o->version == 0 &&
	    wolfSSL_CTX_SetMinVersion(c->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
		snprintf(err, errcap, "this wolfSSL cannot restrict itself to TLS 1.2+");
		goto fail;
	}
	/* Groups (and so the TLS 1.3 key share); TLS 1.2 keeps the supported-curves default. */
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	if (o->version != 12 && wolfSSL_CTX_set_groups(c->ctx, groups, 2) != WOLFSSL_SUCCESS) {
		snprintf(err, errcap, "this wolfSSL lacks X25519 or P-256");
		goto fail;
	}
	if (set_verify(c, o, err, errcap) || set_sni(c, err, errcap))
		goto fail;
	wolfSSL_CTX_set_session_cache_mode(c->ctx, WOLFSSL_SESS_CACHE_NO_INTERNAL_STORE);
	if (o->resume == TLSC_RESUME_TICKETS &&
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
	return rc;
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
	t->ctx = c;
	t->out = malloc(TLSC_OUT_MAX);
	t->ssl = wolfSSL_new(c->ctx);
	if (!t->out || !t->ssl)
		goto fail;
	wolfSSL_SetIOReadCtx(t->ssl, t);
	wolfSSL_SetIOWriteCtx(t->ssl, t);
	/* wolfSSL compares the name while it verifies the chain. */
	if (c->verify && wolfSSL_check_domain_name(t->ssl, c->server_name) != WOLFSSL_SUCCESS)
		goto fail;
	/* A session the server no longer knows just means a full handshake. */
	if (resume && resume->ctx_id == c->id && c->resume != TLSC_RESUME_NONE)
		(void)wolfSSL_set_session(t->ssl, resume->ws);
	return t;
fail:
	tlsc_conn_free(t);
	return NULL;
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
	if (ret != WOLFSSL_SUCCESS)
		return tlsc_status_of(t, ret);
	t->done = true;
	return TLSC_OK;
}

bool tlsc_resumed(const struct tlsc_conn *t)
{
	return wolfSSL_session_reused(t->ssl) != 0;
}

bool tlsc_verified(const struct tlsc_conn *t)
{
	return t->done && t->ctx->verify;
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
		t->err = ERR_SHORT_WRITE;
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

/* wolfSSL's codes for a chain that does not verify, in the words of a log line. */
static const struct {
	int code;
	const char *why;
} chain_errors[] = {
    {ASN_NO_SIGNER_E, "no CA of the CA file signed the server's chain"},
    {ASN_SELF_SIGNED_E, "self-signed certificate not in the CA file"},
    {ASN_SIG_CONFIRM_E, "a signature of the chain does not verify"},
    {ASN_AFTER_DATE_E, "a certificate of the chain has expired"},
    {ASN_BEFORE_DATE_E, "a certificate of the chain is not valid yet"},
    {ASN_PATHLEN_SIZE_E, "the chain is longer than a CA of it allows"},
    {ASN_PATHLEN_INV_E, "the chain is longer than a CA of it allows"},
    {MAX_CHAIN_ERROR, "the chain is too long"},
    {EXTKEYUSE_AUTH_E, "the certificate is not for server authentication"},
    {KEYUSE_SIGNATURE_E, "the certificate's key is not for signing"},
    {NO_PEER_CERT, "the server sent no certificate"},
};

const char *tlsc_error(struct tlsc_conn *t, char *buf, size_t cap)
{
	if (t->err == ERR_SHORT_WRITE) {
		snprintf(buf, cap, "short write");
		return buf;
	}
	if (t->err == DOMAIN_NAME_MISMATCH) {
		snprintf(buf, cap,
			 "certificate name mismatch: %s is not a name of the server's certificate "
			 "(%d)",
			 t->ctx->server_name, t->err);
		return buf;
	}
	for (size_t i = 0; i < sizeof(chain_errors) / sizeof(chain_errors[0]); i++)
		if (t->err == chain_errors[i].code) {
			snprintf(buf, cap, "certificate verify failed: %s (%d)",
				 chain_errors[i].why, t->err);
			return buf;
		}
	char text[WOLFSSL_MAX_ERROR_SZ];
	wolfSSL_ERR_error_string_n((unsigned long)t->err, text, sizeof(text));
	snprintf(buf, cap, "%s (%d)", text, t->err);
	return buf;
}

void tlsc_session_save(struct tlsc_conn *t, struct tlsc_session **slot)
{
	if (!t->done || tlsc_resumed(t))
		return;
	WOLFSSL_SESSION *ws = wolfSSL_get1_session(t->ssl);
	if (!ws)
		return;
	struct tlsc_session *s = *slot;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s) {
			/* The next connection makes a full handshake. */
			wolfSSL_SESSION_free(ws);
			return;
		}
		*slot = s;
	} else {
		wolfSSL_SESSION_free(s->ws);
	}
	s->ws = ws;
	s->ctx_id = t->ctx->id;
}

void tlsc_session_free(struct tlsc_session *s)
{
	if (!s)
		return;
	wolfSSL_SESSION_free(s->ws);
	free(s);
}
