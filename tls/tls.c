/*
 * tls.c - STARTTLS on wolfSSL over in-memory I/O (see tls.h).
 *
 * Policy (RFC 3207, RFC 8314, RFC 8996): TLS 1.2 and 1.3 only; the
 * server's cipher order wins (wolfSSL's default for a server); key exchange
 * X25519 then P-256; no renegotiation (not built in). Session tickets
 * (RFC 5077, and TLS 1.3 PSK tickets) are sealed with ChaCha20-Poly1305
 * under keys from tls_ticket_key_file: the first key seals, every key
 * opens, so all nodes of a fleet that share the file resume each other's
 * sessions, and a key rotated out keeps opening tickets until it is
 * removed. A ticket opened with an older key is answered with a new one.
 *
 * Bounds: a session's ciphertext output is at most TLS_OUT_MAX bytes
 * before the shard sends it (wolfSSL is told WANT_WRITE past that); the
 * ticket key file holds at most TICKET_KEYS_MAX keys.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/random.h>

#include "log.h"
#include "tls.h"

#define TICKET_KEYS_MAX 8
#define TLS_OUT_MAX	(256u * 1024)
#define TLS_OUT_MIN	4096u

#define DEFAULT_CIPHERS                                                                            \
	"TLS13-AES128-GCM-SHA256:TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES256-GCM-SHA384:"          \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"

struct ticket_key {
	uint8_t name[WOLFSSL_TICKET_NAME_SZ];
	uint8_t key[CHACHA20_POLY1305_AEAD_KEYSIZE];
};

struct tls_ctx {
	_Atomic int refs;
	WOLFSSL_CTX *ctx; /* owned */
	struct ticket_key keys[TICKET_KEYS_MAX];
	unsigned nkeys; /* keys[0] seals */
};

struct tls_conn {
	WOLFSSL *ssl;	     /* owned */
	struct tls_ctx *ctx; /* a reference */
	const uint8_t *in;   /* borrowed: the shard's receive buffer */
	size_t in_len, in_used;
	uint8_t *out; /* owned */
	size_t out_len, out_cap;
	int err;
	char errbuf[96];
};

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_ctx *current;

static _Thread_local WC_RNG rng;
static _Thread_local bool rng_ready;
static pthread_key_t rng_key; /* its destructor frees a thread's rng when it ends */
static pthread_once_t rng_key_once = PTHREAD_ONCE_INIT;

static void rng_free(void *p)
{
	wc_FreeRng(p);
}

static void rng_key_make(void)
{
	(void)pthread_key_create(&rng_key, rng_free);
}

static int random_bytes(uint8_t *p, size_t n)
{
	if (!rng_ready) {
		if (wc_InitRng(&rng) != 0)
			return -1;
		rng_ready = true;
		(void)pthread_once(&rng_key_once, rng_key_make);
		(void)pthread_setspecific(rng_key, &rng);
	}
	return wc_RNG_GenerateBlock(&rng, p, (word32)n) == 0 ? 0 : -1;
}

/* ---- I/O callbacks ------------------------------------------------------ */

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *vctx)
{
	struct tls_conn *t = vctx;
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
	struct tls_conn *t = vctx;
	(void)ssl;
	size_t need = t->out_len + (size_t)sz;
	if (need > TLS_OUT_MAX)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	if (need > t->out_cap) {
		size_t cap = t->out_cap ? t->out_cap : TLS_OUT_MIN;
		while (cap < need)
			cap *= 2;
		uint8_t *p = realloc(t->out, cap);
		if (!p)
			return WOLFSSL_CBIO_ERR_GENERAL;
		t->out = p;
		t->out_cap = cap;
	}
	memcpy(t->out + t->out_len, buf, (size_t)sz);
	t->out_len = need;
	return sz;
}

/* ---- tickets ------------------------------------------------------------ */

static int ticket_cb(WOLFSSL *ssl, unsigned char key_name[WOLFSSL_TICKET_NAME_SZ],
		     unsigned char iv[WOLFSSL_TICKET_IV_SZ],
		     unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *ticket,
		     int in_len, int *out_len, void *user)
{
	struct tls_ctx *c = user;
	(void)ssl;
	uint8_t aad[WOLFSSL_TICKET_NAME_SZ + WOLFSSL_TICKET_IV_SZ];

	if (enc) {
		const struct ticket_key *k = &c->keys[0];
		memcpy(key_name, k->name, WOLFSSL_TICKET_NAME_SZ);
		if (random_bytes(iv, WOLFSSL_TICKET_IV_SZ) != 0)
			return WOLFSSL_TICKET_RET_FATAL;
		memcpy(aad, key_name, WOLFSSL_TICKET_NAME_SZ);
		memcpy(aad + WOLFSSL_TICKET_NAME_SZ, iv, WOLFSSL_TICKET_IV_SZ);
		memset(mac, 0, WOLFSSL_TICKET_MAC_SZ);
		if (wc_ChaCha20Poly1305_Encrypt(k->key, iv, aad, sizeof(aad), ticket,
						(word32)in_len, ticket, mac) != 0)
			return WOLFSSL_TICKET_RET_FATAL;
		*out_len = in_len;
		return WOLFSSL_TICKET_RET_OK;
	}
	for (unsigned i = 0; i < c->nkeys; i++) {
		const struct ticket_key *k = &c->keys[i];
		if (memcmp(k->name, key_name, WOLFSSL_TICKET_NAME_SZ) != 0)
			continue;
		memcpy(aad, key_name, WOLFSSL_TICKET_NAME_SZ);
		memcpy(aad + WOLFSSL_TICKET_NAME_SZ, iv, WOLFSSL_TICKET_IV_SZ);
		if (wc_ChaCha20Poly1305_Decrypt(k->key, iv, aad, sizeof(aad), ticket,
						(word32)in_len, mac, ticket) != 0)
			return WOLFSSL_TICKET_RET_REJECT;
		*out_len = in_len;
		return i == 0 ? WOLFSSL_TICKET_RET_OK : WOLFSSL_TICKET_RET_CREATE;
	}
	return WOLFSSL_TICKET_RET_REJECT; /* unknown key: a full handshake */
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * Ticket key file: one key per line, 96 hex digits (16 bytes of name, 32
 * of key), the sealing key first; '#' lines and blank lines ignored.
 * `openssl rand -hex 48` makes one.
 */
static int load_ticket_keys(struct tls_ctx *c, const char *path, FILE *err)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(err, "mxring: tls_ticket_key_file %s: %s\n", path, strerror(errno));
		return -1;
	}
	char line[256];
	unsigned lineno = 0;
	int rc = 0;
	c->nkeys = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		size_t n = strcspn(line, "\r\n");
		line[n] = 0;
		if (n == 0 || line[0] == '#')
			continue;
		uint8_t raw[sizeof(struct ticket_key)];
		bool ok = n == 2 * sizeof(raw);
		for (size_t i = 0; ok && i < sizeof(raw); i++) {
			int hi = hexval(line[2 * i]), lo = hexval(line[2 * i + 1]);
			ok = hi >= 0 && lo >= 0;
			raw[i] = (uint8_t)(hi << 4 | lo);
		}
		if (!ok) {
			fprintf(err, "mxring: %s:%u: a ticket key is 96 hex digits\n", path,
				lineno);
			rc = -1;
			break;
		}
		if (c->nkeys == TICKET_KEYS_MAX) {
			fprintf(err, "mxring: %s:%u: more than %d ticket keys\n", path, lineno,
				TICKET_KEYS_MAX);
			rc = -1;
			break;
		}
		memcpy(c->keys[c->nkeys].name, raw, WOLFSSL_TICKET_NAME_SZ);
		memcpy(c->keys[c->nkeys].key, raw + WOLFSSL_TICKET_NAME_SZ,
		       CHACHA20_POLY1305_AEAD_KEYSIZE);
		c->nkeys++;
	}
	fclose(f);
	if (rc == 0 && c->nkeys == 0) {
		fprintf(err, "mxring: tls_ticket_key_file %s: no key\n", path);
		rc = -1;
	}
	return rc;
}

/* ---- context ------------------------------------------------------------ */

static bool wolf_ready;

static int load_certs(struct tls_ctx *c, const struct config *cfg, FILE *err)
{
	if (wolfSSL_CTX_use_certificate_chain_file(c->ctx, cfg->tls_cert_file) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: tls_cert_file %s: cannot load a PEM certificate chain\n",
			cfg->tls_cert_file);
		return -1;
	}
	if (wolfSSL_CTX_use_PrivateKey_file(c->ctx, cfg->tls_key_file, WOLFSSL_FILETYPE_PEM) !=
	    WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: tls_key_file %s: cannot load a PEM private key\n",
			cfg->tls_key_file);
		return -1;
	}
	if (wolfSSL_CTX_check_private_key(c->ctx) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: tls_key_file %s does not match tls_cert_file %s\n",
			cfg->tls_key_file, cfg->tls_cert_file);
		return -1;
	}
	return 0;
}

int tls_ctx_new(const struct config *cfg, struct tls_ctx **out, FILE *err)
{
	if (!wolf_ready) {
		if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
			fprintf(err, "mxring: wolfSSL_Init failed\n");
			return -1;
		}
		wolf_ready = true;
	}
	struct tls_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	atomic_init(&c->refs, 1);
	c->ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
	if (!c->ctx) {
		fprintf(err, "mxring: wolfSSL_CTX_new failed\n");
		goto fail;
	}
	if (wolfSSL_CTX_SetMinVersion(c->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: this wolfSSL cannot restrict itself to TLS 1.2+\n");
		goto fail;
	}
	const char *ciphers = cfg->tls_ciphers[0] ? cfg->tls_ciphers : DEFAULT_CIPHERS;
	if (wolfSSL_CTX_set_cipher_list(c->ctx, ciphers) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: tls_ciphers '%s': no cipher this wolfSSL supports\n",
			ciphers);
		goto fail;
	}
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	if (wolfSSL_CTX_set_groups(c->ctx, groups, 2) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: this wolfSSL lacks X25519 or P-256\n");
		goto fail;
	}
	if (load_certs(c, cfg, err) != 0)
		goto fail;
	if (cfg->tls_ticket_key_file[0]) {
		if (load_ticket_keys(c, cfg->tls_ticket_key_file, err) != 0)
			goto fail;
	} else {
		/* Tickets only this process opens. */
		c->nkeys = 1;
		if (random_bytes((uint8_t *)&c->keys[0], sizeof(c->keys[0])) != 0)
			goto fail;
	}
	wolfSSL_CTX_set_TicketEncCb(c->ctx, ticket_cb);
	wolfSSL_CTX_set_TicketEncCtx(c->ctx, c);
	wolfSSL_CTX_SetIORecv(c->ctx, io_recv);
	wolfSSL_CTX_SetIOSend(c->ctx, io_send);
	*out = c;
	return 0;
fail:
	if (c->ctx)
		wolfSSL_CTX_free(c->ctx);
	free(c);
	return -1;
}

void tls_ctx_ref(struct tls_ctx *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void tls_ctx_unref(struct tls_ctx *c)
{
	if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
		wolfSSL_CTX_free(c->ctx);
		memset(c->keys, 0, sizeof(c->keys));
		free(c);
	}
}

struct tls_ctx *tls_current(void)
{
	pthread_mutex_lock(&current_lock);
	struct tls_ctx *c = current;
	if (c)
		tls_ctx_ref(c);
	pthread_mutex_unlock(&current_lock);
	return c;
}

void tls_set_current(struct tls_ctx *c)
{
	pthread_mutex_lock(&current_lock);
	struct tls_ctx *old = current;
	current = c;
	pthread_mutex_unlock(&current_lock);
	tls_ctx_unref(old);
}

/* ---- sessions ----------------------------------------------------------- */

struct tls_conn *tls_conn_new(struct tls_ctx *ctx)
{
	struct tls_conn *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->ssl = wolfSSL_new(ctx->ctx);
	if (!t->ssl) {
		free(t);
		return NULL;
	}
	tls_ctx_ref(ctx);
	t->ctx = ctx;
	wolfSSL_SetIOReadCtx(t->ssl, t);
	wolfSSL_SetIOWriteCtx(t->ssl, t);
	return t;
}

void tls_conn_free(struct tls_conn *t)
{
	if (!t)
		return;
	wolfSSL_free(t->ssl);
	tls_ctx_unref(t->ctx);
	free(t->out);
	free(t);
}

void tls_input(struct tls_conn *t, const uint8_t *in, size_t len)
{
	t->in = in;
	t->in_len = len;
	t->in_used = 0;
}

size_t tls_input_used(const struct tls_conn *t)
{
	return t->in_used;
}

const uint8_t *tls_output(const struct tls_conn *t, size_t *len)
{
	*len = t->out_len;
	return t->out;
}

void tls_output_consumed(struct tls_conn *t, size_t len)
{
	if (len >= t->out_len) {
		t->out_len = 0;
		/* An idle session keeps no output buffer. */
		free(t->out);
		t->out = NULL;
		t->out_cap = 0;
		return;
	}
	memmove(t->out, t->out + len, t->out_len - len);
	t->out_len -= len;
}

static enum tls_status status(struct tls_conn *t, int ret)
{
	int e = wolfSSL_get_error(t->ssl, ret);
	if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
		return TLS_AGAIN;
	if (e == WOLFSSL_ERROR_ZERO_RETURN)
		return TLS_CLOSED;
	t->err = e;
	return TLS_ERROR;
}

enum tls_status tls_handshake(struct tls_conn *t)
{
	int ret = wolfSSL_accept(t->ssl);
	return ret == WOLFSSL_SUCCESS ? TLS_OK : status(t, ret);
}

enum tls_status tls_read(struct tls_conn *t, uint8_t *buf, size_t cap, size_t *n)
{
	*n = 0;
	int ret = wolfSSL_read(t->ssl, buf, (int)cap);
	if (ret > 0) {
		*n = (size_t)ret;
		return TLS_OK;
	}
	return status(t, ret);
}

enum tls_status tls_write(struct tls_conn *t, const uint8_t *p, size_t len)
{
	int ret = wolfSSL_write(t->ssl, p, (int)len);
	if (ret == (int)len)
		return TLS_OK;
	return ret > 0 ? TLS_ERROR : status(t, ret);
}

void tls_close_notify(struct tls_conn *t)
{
	(void)wolfSSL_shutdown(t->ssl); /* "not done": the peer's alert is not awaited */
}

const char *tls_describe(struct tls_conn *t, char *buf, size_t cap, int *resumed)
{
	const char *v = wolfSSL_get_version(t->ssl);
	const char *c = wolfSSL_get_cipher_name(t->ssl);
	snprintf(buf, cap, "%s %s", v ? v : "?", c ? c : "?");
	if (resumed)
		*resumed = wolfSSL_session_reused(t->ssl);
	return buf;
}

const char *tls_error(struct tls_conn *t)
{
	wolfSSL_ERR_error_string_n((unsigned long)t->err, t->errbuf, sizeof(t->errbuf));
	return t->errbuf;
}
