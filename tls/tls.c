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
 * removed. A TLS 1.3 ticket opened with an older key is answered with a
 * new one; wolfSSL 5.5.4 sends none in an abbreviated TLS 1.2 handshake, so
 * a TLS 1.2 client keeps its old ticket until that key is removed.
 *
 * Certificates: tls_cert_file and tls_key_file list one or two files each,
 * in the same order; with two, one key is ECDSA and the other RSA. wolfSSL
 * as built here has no certificate callback, so each certificate gets its
 * own WOLFSSL_CTX (same policy, same ticket keys) and a session picks one
 * before wolfSSL_new, from its ClientHello (hello.h): the ECDSA one when the
 * client accepts it, else the RSA one; a ClientHello the scanner cannot
 * judge gets the first listed, and wolfSSL answers it. So the WOLFSSL object
 * (the costly part of a session) is made when the first ClientHello bytes
 * arrive, not at STARTTLS; a ClientHello split over several inputs is kept
 * (at most HELLO_INPUT_MAX bytes) and replayed to wolfSSL.
 *
 * Session-ID resumption (RFC 5246 7.3) for TLS 1.2 clients without tickets:
 * one sesscache.h cache for the process, made by the first tls_ctx_new and
 * kept across reloads, reached through wolfSSL's external cache callbacks
 * (its internal cache, 33 entries behind one global lock, is off). Entries
 * are wolfSSL_i2d_SSL_SESSION blobs; lacking wolfSSL_SESSION_get_id without
 * the OpenSSL layer, the session ID is read from the blob (byte 9 its
 * length, the ID from byte 10: wolfSSL 5.5.4's layout, checked by
 * tests/unit/tls). TLS 1.3 sessions are not stored: tickets resume them.
 * tls_session_timeout bounds both cache entries and tickets.
 *
 * Bounds: a session's ciphertext output is at most TLS_OUT_MAX bytes
 * before the shard sends it (wolfSSL is told WANT_WRITE past that); the
 * ticket key file holds at most TICKET_KEYS_MAX keys; a key file is at most
 * KEY_FILE_MAX bytes; two certificates at most.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>

#include "hello.h"
#include "record.h"
#include "sesscache.h"
#include "tls.h"

/* The fast receive path (record.h) needs the client's traffic secret and
 * AES-GCM over pieces; a wolfSSL without them reads through wolfSSL_read. */
#if defined(HAVE_SECRET_CALLBACK) && defined(WOLFSSL_AESGCM_STREAM) && defined(HAVE_HKDF) &&       \
    defined(WOLFSSL_TLS13)
#define TLS_RX_FAST 1
#else
#define TLS_RX_FAST 0
#endif

#define TICKET_KEYS_MAX 8
#define TLS_OUT_MAX	(256u * 1024)
#define TLS_OUT_MIN	4096u
#define CERTS_MAX	2
#define KEY_FILE_MAX	(64u * 1024)
#define HELLO_BUF_MIN	1024u
#define HELD_BUF_MIN	1024u
/* wolfSSL 5.5.4's session blob: side(1) bornOn(4) timeout(4) idLen(1) id. */
#define BLOB_ID_LEN_AT 9
#define BLOB_ID_AT     10
/* TLS 1.3 resumption chains: iv[TICKET_GEN_AT] (authenticated, not part of
 * ChaCha20's 12-byte nonce) counts the resumptions since the full handshake.
 * wolfSSL numbers a chain's tickets with a one-byte nonce carried in the
 * ticket and, since 5.9, fails the handshake (SESSION_TICKET_NONCE_OVERFLOW)
 * instead of wrapping past 255; a ticket this deep is refused instead, so the
 * client makes a full handshake and starts a new chain. */
#define TICKET_GEN_AT  12
#define TICKET_GEN_MAX 200

#define DEFAULT_CIPHERS                                                                            \
	"TLS13-AES128-GCM-SHA256:TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES256-GCM-SHA384:"          \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"

struct ticket_key {
	uint8_t name[WOLFSSL_TICKET_NAME_SZ];
	uint8_t key[CHACHA20_POLY1305_AEAD_KEYSIZE];
};

enum cert_kind { CERT_RSA = 0, CERT_ECDSA = 1 };

struct cert {
	WOLFSSL_CTX *ctx; /* owned: the policy with this certificate */
	enum cert_kind kind;
	unsigned curve; /* ECDSA: a hello_curve bit */
};

struct tls_ctx {
	_Atomic int refs;
	struct cert certs[CERTS_MAX];
	unsigned ncerts; /* certs[0] is the default */
	int ecdsa, rsa;	 /* index in certs, or -1 */
	struct ticket_key keys[TICKET_KEYS_MAX];
	unsigned nkeys; /* keys[0] seals */
};

struct tls_conn {
	WOLFSSL *ssl;		   /* owned; NULL until the ClientHello picked a certificate */
	struct tls_ctx *ctx;	   /* a reference */
	const struct tls_seg *seg; /* borrowed: the shard's receive buffers */
	unsigned nseg;
	size_t in_len, in_used; /* over all of seg */
	/* Where wolfSSL is in the record stream: it is never handed a byte past
	 * the record it is reading, so when the handshake ends nothing after the
	 * client's Finished is inside wolfSSL and record.c takes over there. */
	uint8_t rhdr[RX_HEADER], rhdr_got;
	uint32_t rec_left;
	uint8_t secret_len;  /* the client traffic secret, kept in rx.secret */
	enum tls_status end; /* TLS_OK, or how the session ended after data returned */
	uint8_t end_alert;   /* the alert to send with it (record.c found the error) */
	struct rx rx;	     /* after the handshake: records opened by record.c */
	uint8_t *held;	     /* owned: input moved out of receive buffers (tls_keep_input) */
	uint32_t held_len, held_cap;
	uint8_t *hello; /* owned, lazily: a ClientHello split over inputs, replayed to wolfSSL */
	uint32_t hello_len, hello_cap, hello_used;
	int cert;     /* index in ctx->certs, -1 before the choice */
	uint8_t *out; /* owned */
	size_t out_len, out_cap;
	uint8_t ticket_gen; /* iv[TICKET_GEN_AT] of the tickets this session issues */
	int err;	    /* wolfSSL's error code; 0 when errbuf already says why */
	char errbuf[96];
};

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_ctx *current;

/* The session-ID cache: made once, under current_lock, then only read. */
static struct sesscache *_Atomic shared_cache;

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

/* Of the next n bytes of the stream, how many belong to the current record. */
static size_t record_room(const struct tls_conn *t, size_t n)
{
	size_t room = t->rec_left ? t->rec_left : RX_HEADER - t->rhdr_got;
	return n < room ? n : room;
}

/* Follows the record stream over p[0..n) (n from record_room). */
static void record_track(struct tls_conn *t, const uint8_t *p, size_t n)
{
	if (t->rec_left) {
		t->rec_left -= (uint32_t)n;
		return;
	}
	memcpy(t->rhdr + t->rhdr_got, p, n);
	t->rhdr_got = (uint8_t)(t->rhdr_got + n);
	if (t->rhdr_got == RX_HEADER) {
		t->rec_left = (uint32_t)t->rhdr[3] << 8 | t->rhdr[4];
		t->rhdr_got = 0;
	}
}

/* The unread input (from in_used on) as at most max segments; their count. */
static unsigned input_rest(const struct tls_conn *t, struct tls_seg *out, unsigned max)
{
	size_t skip = t->in_used;
	unsigned k = 0;
	for (unsigned i = 0; i < t->nseg && k < max; i++) {
		if (skip >= t->seg[i].len) {
			skip -= t->seg[i].len;
			continue;
		}
		out[k++] = (struct tls_seg){t->seg[i].p + skip, t->seg[i].len - skip};
		skip = 0;
	}
	return k;
}

/* Copies up to n input bytes from in_used on into dst (across segments). */
static size_t input_copy(struct tls_conn *t, uint8_t *dst, size_t n)
{
	struct tls_seg rest[TLS_SEGS_MAX];
	unsigned k = input_rest(t, rest, TLS_SEGS_MAX);
	size_t done = 0;
	for (unsigned i = 0; i < k && done < n; i++) {
		size_t m = rest[i].len < n - done ? rest[i].len : n - done;
		memcpy(dst + done, rest[i].p, m);
		done += m;
	}
	t->in_used += done;
	return done;
}

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *vctx)
{
	struct tls_conn *t = vctx;
	(void)ssl;
	if (t->hello) {
		/* The ClientHello bytes kept while choosing the certificate come first. */
		size_t n = record_room(t, t->hello_len - t->hello_used);
		if ((size_t)sz < n)
			n = (size_t)sz;
		memcpy(buf, t->hello + t->hello_used, n);
		record_track(t, (uint8_t *)buf, n);
		t->hello_used += (uint32_t)n;
		if (t->hello_used == t->hello_len) {
			free(t->hello);
			t->hello = NULL;
			t->hello_len = t->hello_cap = t->hello_used = 0;
		}
		return (int)n;
	}
	size_t n = record_room(t, t->in_len - t->in_used);
	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if ((size_t)sz < n)
		n = (size_t)sz;
	n = input_copy(t, (uint8_t *)buf, n);
	record_track(t, (uint8_t *)buf, n);
	return (int)n;
}

#if TLS_RX_FAST
/* wolfSSL derived a TLS 1.3 secret: the client's application one is kept. */
static int secret_cb(WOLFSSL *ssl, int id, const unsigned char *secret, int len, void *vctx)
{
	struct tls_conn *t = vctx;
	(void)ssl;
	if (id == CLIENT_TRAFFIC_SECRET && len > 0 && (size_t)len <= RX_SECRET_MAX) {
		memcpy(t->rx.secret, secret, (size_t)len);
		t->secret_len = (uint8_t)len;
	}
	return 0;
}
#endif

/*
 * Makes *buf (of *cap bytes) hold need bytes (need <= max): it grows by
 * doubling from min, up to max. 0 or -ENOMEM (the buffer kept as it was).
 */
static int buf_reserve(uint8_t **buf, size_t *cap, size_t need, size_t min, size_t max)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? 2u * *cap : min;
	while (c < need)
		c *= 2;
	if (c > max)
		c = max;
	uint8_t *p = realloc(*buf, c);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = c;
	return 0;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *vctx)
{
	struct tls_conn *t = vctx;
	(void)ssl;
	size_t need = t->out_len + (size_t)sz;
	if (need > TLS_OUT_MAX)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	if (buf_reserve(&t->out, &t->out_cap, need, TLS_OUT_MIN, TLS_OUT_MAX) != 0)
		return WOLFSSL_CBIO_ERR_GENERAL;
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
	struct tls_conn *t = wolfSSL_GetIOReadCtx(ssl);
	uint8_t aad[WOLFSSL_TICKET_NAME_SZ + WOLFSSL_TICKET_IV_SZ];

	if (enc) {
		const struct ticket_key *k = &c->keys[0];
		memcpy(key_name, k->name, WOLFSSL_TICKET_NAME_SZ);
		if (random_bytes(iv, WOLFSSL_TICKET_IV_SZ) != 0)
			return WOLFSSL_TICKET_RET_FATAL;
		iv[TICKET_GEN_AT] = t->ticket_gen;
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
		if (iv[TICKET_GEN_AT] >= TICKET_GEN_MAX)
			return WOLFSSL_TICKET_RET_REJECT; /* a full handshake, a new chain */
		t->ticket_gen = (uint8_t)(iv[TICKET_GEN_AT] + 1);
		*out_len = in_len;
		/* A ticket of an older key: TLS 1.2 asks for a new one (CREATE).
		 * TLS 1.3 resumes only on OK (wolfSSL since 5.6 takes CREATE for a
		 * refusal there) and sends every session, resumed or not, a new
		 * ticket sealed with keys[0] anyway. */
		if (i == 0 || wolfSSL_GetVersion(ssl) >= WOLFSSL_TLSV1_3)
			return WOLFSSL_TICKET_RET_OK;
		return WOLFSSL_TICKET_RET_CREATE;
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

/* ---- session-ID cache ----------------------------------------------------- */

static uint64_t now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec;
}

/* The session ID inside a blob of n bytes, or 0 when there is none. */
static size_t blob_id(const uint8_t *blob, size_t n, const uint8_t **id)
{
	if (n <= BLOB_ID_AT)
		return 0;
	size_t len = blob[BLOB_ID_LEN_AT];
	if (len > SESSCACHE_ID_MAX || BLOB_ID_AT + len > n)
		return 0;
	*id = blob + BLOB_ID_AT;
	return len;
}

/* wolfSSL made a session: keep a copy (a TLS 1.2 one with an ID). */
static int cache_new_cb(WOLFSSL *ssl, WOLFSSL_SESSION *sess)
{
	struct sesscache *cache = atomic_load(&shared_cache);
	if (!cache || wolfSSL_GetVersion(ssl) == WOLFSSL_TLSV1_3)
		return 0; /* 0: wolfSSL keeps ownership of sess */
	int n = wolfSSL_i2d_SSL_SESSION(sess, NULL);
	if (n <= 0 || n > (int)SESSCACHE_BLOB_MAX) {
		/* Counted as refused; the ID cannot be read without the blob. */
		(void)sesscache_store(cache, NULL, 0, NULL, n > 0 ? (size_t)n : 0, now_s());
		return 0;
	}
	uint8_t blob[SESSCACHE_BLOB_MAX];
	uint8_t *p = blob;
	const uint8_t *id;
	size_t id_len;
	if (wolfSSL_i2d_SSL_SESSION(sess, &p) == n && (id_len = blob_id(blob, (size_t)n, &id)) > 0)
		(void)sesscache_store(cache, id, id_len, blob, (size_t)n, now_s());
	explicit_bzero(blob, sizeof(blob));
	return 0;
}

static WOLFSSL_SESSION *cache_get_cb(WOLFSSL *ssl, const unsigned char *id, int len, int *copy)
{
	(void)ssl;
	*copy = 0; /* the session returned is wolfSSL's to free */
	struct sesscache *cache = atomic_load(&shared_cache);
	if (!cache || len <= 0)
		return NULL;
	uint8_t blob[SESSCACHE_BLOB_MAX];
	int n = sesscache_lookup(cache, id, (size_t)len, now_s(), blob, sizeof(blob));
	if (n <= 0)
		return NULL;
	const unsigned char *p = blob;
	WOLFSSL_SESSION *s = wolfSSL_d2i_SSL_SESSION(NULL, &p, n);
	explicit_bzero(blob, sizeof(blob));
	return s;
}

/*
 * A connection that ends in a fatal error must not be resumed (RFC 5246
 * 7.2.2): its session leaves the cache. (wolfSSL 5.5.4's remove callback
 * is not used: it fires whenever a session object is freed, not when a
 * session turns bad.)
 */
static void cache_forget(WOLFSSL *ssl)
{
	struct sesscache *cache = atomic_load(&shared_cache);
	WOLFSSL_SESSION *sess = cache ? wolfSSL_get_session(ssl) : NULL;
	int n = sess ? wolfSSL_i2d_SSL_SESSION(sess, NULL) : 0;
	if (n <= 0 || n > (int)SESSCACHE_BLOB_MAX)
		return;
	uint8_t blob[SESSCACHE_BLOB_MAX];
	uint8_t *p = blob;
	const uint8_t *id;
	size_t id_len;
	if (wolfSSL_i2d_SSL_SESSION(sess, &p) == n && (id_len = blob_id(blob, (size_t)n, &id)) > 0)
		(void)sesscache_remove(cache, id, id_len);
	explicit_bzero(blob, sizeof(blob));
}

/* Makes the process's cache at the first call; later calls keep it (a
 * reload does not empty it; a new size needs a restart). */
static int cache_start(const struct config *cfg, FILE *err)
{
	if (cfg->tls_session_cache_size == 0 || atomic_load(&shared_cache))
		return 0;
	struct sesscache *c;
	int rc = sesscache_new(cfg->tls_session_cache_size, cfg->tls_session_timeout, &c);
	if (rc) {
		fprintf(err, "mxring: tls_session_cache_size %u: %s\n", cfg->tls_session_cache_size,
			strerror(-rc));
		return -1;
	}
	pthread_mutex_lock(&current_lock);
	struct sesscache *none = NULL;
	if (!atomic_compare_exchange_strong(&shared_cache, &none, c))
		sesscache_free(c);
	pthread_mutex_unlock(&current_lock);
	return 0;
}

const char *tls_records_mode(void)
{
#if TLS_RX_FAST && defined(ATOMIC_USER)
	return "in-place";
#elif TLS_RX_FAST
	return "in-place-tls13";
#else
	return "wolfssl";
#endif
}

void tls_session_cache_stats(struct sesscache_stats *out)
{
	struct sesscache *c = atomic_load(&shared_cache);
	if (c)
		sesscache_stats(c, out);
	else
		memset(out, 0, sizeof(*out));
}

/* ---- certificates ------------------------------------------------------- */

/*
 * Splits a comma-separated list of at most CERTS_MAX paths into out (blanks
 * around each trimmed). The count, or -1 when empty, too long or too many.
 */
static int split_paths(const char *list, char out[CERTS_MAX][1024])
{
	int n = 0;
	const char *p = list;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		while (len && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len == 0 || len >= sizeof(out[0]) || n == CERTS_MAX)
			return -1;
		memcpy(out[n], p, len);
		out[n][len] = 0;
		n++;
		if (!comma)
			return n;
		p = comma + 1;
	}
}

/* Reads a PEM private key file into DER (der: KEY_FILE_MAX bytes). Length or -1. */
static int read_key_der(const char *path, uint8_t *der, FILE *err)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(err, "mxring: tls_key_file %s: %s\n", path, strerror(errno));
		return -1;
	}
	uint8_t *pem = malloc(KEY_FILE_MAX);
	size_t n = pem ? fread(pem, 1, KEY_FILE_MAX, f) : 0;
	bool whole = n < KEY_FILE_MAX && !ferror(f);
	fclose(f);
	int len = whole ? wc_KeyPemToDer(pem, (int)n, der, (int)KEY_FILE_MAX, NULL) : -1;
	if (pem) {
		explicit_bzero(pem, KEY_FILE_MAX);
		free(pem);
	}
	if (len <= 0)
		fprintf(err, "mxring: tls_key_file %s: not an unencrypted PEM private key%s\n",
			path, whole ? "" : " (or over 64 KiB)");
	return len > 0 ? len : -1;
}

/* ECDSA (and its curve) or RSA, from the key's DER. -1 if neither. */
static int key_kind(const uint8_t *der, int len, unsigned *curve)
{
	ecc_key ek;
	word32 idx = 0;
	int kind = -1;
	*curve = 0;
	if (wc_ecc_init(&ek) == 0) {
		if (wc_EccPrivateKeyDecode(der, &idx, &ek, (word32)len) == 0 && ek.dp) {
			kind = CERT_ECDSA;
			*curve = ek.dp->id == ECC_SECP256R1   ? HELLO_P256
				 : ek.dp->id == ECC_SECP384R1 ? HELLO_P384
				 : ek.dp->id == ECC_SECP521R1 ? HELLO_P521
							      : 0;
		}
		wc_ecc_free(&ek);
	}
	if (kind >= 0)
		return *curve ? kind : -1;
	RsaKey rk;
	idx = 0;
	if (wc_InitRsaKey(&rk, NULL) == 0) {
		if (wc_RsaPrivateKeyDecode(der, &idx, &rk, (word32)len) == 0)
			kind = CERT_RSA;
		wc_FreeRsaKey(&rk);
	}
	return kind;
}

/*
 * Whether the private key (DER, of kind) belongs to the first certificate of
 * cert_file: a random digest signed with it must verify with the public key
 * in the certificate. wolfSSL_CTX_check_private_key does not catch every
 * mismatch in every wolfSSL build (Debian's passes a foreign ECDSA key), and
 * a wrong pair would fail every handshake. true, or false with no reason
 * needed beyond "does not match".
 */
static bool pair_matches(const char *cert_file, const uint8_t *key, int key_len,
			 enum cert_kind kind)
{
	bool ok = false;
	FILE *f = fopen(cert_file, "rb");
	uint8_t *pem = malloc(KEY_FILE_MAX), *der = malloc(KEY_FILE_MAX);
	uint8_t digest[32], sig[1024], pub[2048];
	word32 sig_len = sizeof(sig), pub_len = sizeof(pub), idx = 0;
	size_t n = f && pem ? fread(pem, 1, KEY_FILE_MAX, f) : 0;
	int der_len = n > 0 && n < KEY_FILE_MAX && der
			  ? wc_CertPemToDer(pem, (int)n, der, (int)KEY_FILE_MAX, CERT_TYPE)
			  : -1;
	if (f)
		fclose(f);
	DecodedCert dc;
	bool parsed = false, inited = false;
	if (der_len > 0 && random_bytes(digest, sizeof(digest)) == 0) {
		wc_InitDecodedCert(&dc, der, (word32)der_len, NULL);
		inited = true;
		parsed = wc_ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) == 0 &&
			 wc_GetPubKeyDerFromCert(&dc, pub, &pub_len) == 0;
	}
	if (parsed && kind == CERT_ECDSA) {
		ecc_key priv, pk;
		int verified = 0;
		if (wc_ecc_init(&priv) == 0) {
			if (wc_ecc_init(&pk) == 0) {
				word32 k = 0;
				ok = wc_EccPrivateKeyDecode(key, &k, &priv, (word32)key_len) == 0 &&
				     wc_ecc_sign_hash(digest, sizeof(digest), sig, &sig_len, &rng,
						      &priv) == 0 &&
				     wc_EccPublicKeyDecode(pub, &idx, &pk, pub_len) == 0 &&
				     wc_ecc_verify_hash(sig, sig_len, digest, sizeof(digest),
							&verified, &pk) == 0 &&
				     verified == 1;
				wc_ecc_free(&pk);
			}
			wc_ecc_free(&priv);
		}
	} else if (parsed && kind == CERT_RSA) {
		RsaKey priv, pk;
		uint8_t back[sizeof(digest)];
		if (wc_InitRsaKey(&priv, NULL) == 0) {
			if (wc_InitRsaKey(&pk, NULL) == 0) {
				word32 k = 0;
				int len = -1;
				if (wc_RsaPrivateKeyDecode(key, &k, &priv, (word32)key_len) == 0 &&
				    wc_RsaSetRNG(&priv, &rng) == 0)
					len = wc_RsaSSL_Sign(digest, sizeof(digest), sig,
							     sizeof(sig), &priv, &rng);
				ok = len > 0 &&
				     wc_RsaPublicKeyDecode(pub, &idx, &pk, pub_len) == 0 &&
				     wc_RsaSSL_Verify(sig, (word32)len, back, sizeof(back), &pk) ==
					 (int)sizeof(digest) &&
				     memcmp(back, digest, sizeof(digest)) == 0;
				wc_FreeRsaKey(&pk);
			}
			wc_FreeRsaKey(&priv);
		}
	}
	if (inited)
		wc_FreeDecodedCert(&dc);
	free(pem);
	free(der);
	return ok;
}

/* A context with the policy of cfg, for one certificate. NULL + message. */
static WOLFSSL_CTX *policy_ctx(struct tls_ctx *c, const struct config *cfg, FILE *err)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
	if (!ctx) {
		fprintf(err, "mxring: wolfSSL_CTX_new failed\n");
		return NULL;
	}
	if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: this wolfSSL cannot restrict itself to TLS 1.2+\n");
		goto fail;
	}
	const char *ciphers = cfg->tls_ciphers[0] ? cfg->tls_ciphers : DEFAULT_CIPHERS;
	if (wolfSSL_CTX_set_cipher_list(ctx, ciphers) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: tls_ciphers '%s': no cipher this wolfSSL supports\n",
			ciphers);
		goto fail;
	}
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	if (wolfSSL_CTX_set_groups(ctx, groups, 2) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: this wolfSSL lacks X25519 or P-256\n");
		goto fail;
	}
	/* One lifetime for cache entries and tickets (RFC 5246 F.1.4: 24 h at most). */
	/* WOLFSSL_SUCCESS, or with WOLFSSL_ERROR_CODE_OPENSSL (Debian's build) the
	 * previous timeout, as OpenSSL does; a failure is negative either way. */
	if (wolfSSL_CTX_set_timeout(ctx, cfg->tls_session_timeout) < 0) {
		fprintf(err, "mxring: tls_session_timeout %u refused by wolfSSL\n",
			cfg->tls_session_timeout);
		goto fail;
	}
	wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_NO_INTERNAL);
	if (cfg->tls_session_cache_size > 0) {
		wolfSSL_CTX_sess_set_new_cb(ctx, cache_new_cb);
		wolfSSL_CTX_sess_set_get_cb(ctx, cache_get_cb);
	}
	wolfSSL_CTX_set_TicketEncCb(ctx, ticket_cb);
	wolfSSL_CTX_set_TicketEncCtx(ctx, c);
	wolfSSL_CTX_SetIORecv(ctx, io_recv);
	wolfSSL_CTX_SetIOSend(ctx, io_send);
	return ctx;
fail:
	wolfSSL_CTX_free(ctx);
	return NULL;
}

/* Loads one certificate chain and its key into a new policy context. */
static int load_cert(struct tls_ctx *c, struct cert *ct, const struct config *cfg,
		     const char *cert_file, const char *key_file, FILE *err)
{
	uint8_t *der = malloc(KEY_FILE_MAX);
	int rc = -1;
	if (!der) {
		fprintf(err, "mxring: out of memory\n");
		return -1;
	}
	int len = read_key_der(key_file, der, err);
	if (len < 0)
		goto out;
	int kind = key_kind(der, len, &ct->curve);
	if (kind < 0) {
		fprintf(err, "mxring: tls_key_file %s: neither RSA nor ECDSA on P-256/384/521\n",
			key_file);
		goto out;
	}
	ct->kind = (enum cert_kind)kind;
	ct->ctx = policy_ctx(c, cfg, err);
	if (!ct->ctx)
		goto out;
	if (wolfSSL_CTX_use_certificate_chain_file(ct->ctx, cert_file) != WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: tls_cert_file %s: cannot load a PEM certificate chain\n",
			cert_file);
		goto out;
	}
	if (wolfSSL_CTX_use_PrivateKey_buffer(ct->ctx, der, len, WOLFSSL_FILETYPE_ASN1) !=
	    WOLFSSL_SUCCESS) {
		fprintf(err, "mxring: tls_key_file %s: cannot load the private key\n", key_file);
		goto out;
	}
	if (wolfSSL_CTX_check_private_key(ct->ctx) != WOLFSSL_SUCCESS ||
	    !pair_matches(cert_file, der, len, ct->kind)) {
		fprintf(err, "mxring: tls_key_file %s does not match tls_cert_file %s\n", key_file,
			cert_file);
		goto out;
	}
	rc = 0;
out:
	explicit_bzero(der, KEY_FILE_MAX);
	free(der);
	return rc;
}

static int load_certs(struct tls_ctx *c, const struct config *cfg, FILE *err)
{
	char certs[CERTS_MAX][1024], keys[CERTS_MAX][1024];
	int nc = split_paths(cfg->tls_cert_file, certs);
	int nk = split_paths(cfg->tls_key_file, keys);
	if (nc < 0 || nk < 0 || nc != nk) {
		fprintf(err, "mxring: tls_cert_file and tls_key_file must list the same number of "
			     "files, one or two (an ECDSA and an RSA pair), comma-separated\n");
		return -1;
	}
	for (int i = 0; i < nc; i++) {
		if (load_cert(c, &c->certs[i], cfg, certs[i], keys[i], err) != 0)
			return -1;
		c->ncerts++;
		int *slot = c->certs[i].kind == CERT_ECDSA ? &c->ecdsa : &c->rsa;
		if (*slot >= 0) {
			fprintf(err,
				"mxring: tls_key_file: two %s keys; two certificates must be "
				"one ECDSA and one RSA\n",
				c->certs[i].kind == CERT_ECDSA ? "ECDSA" : "RSA");
			return -1;
		}
		*slot = i;
	}
	return 0;
}

/* ---- context ------------------------------------------------------------ */

static bool wolf_ready;

static void ctx_free(struct tls_ctx *c)
{
	for (unsigned i = 0; i < CERTS_MAX; i++)
		if (c->certs[i].ctx)
			wolfSSL_CTX_free(c->certs[i].ctx);
	explicit_bzero(c->keys, sizeof(c->keys));
	free(c);
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
	if (cache_start(cfg, err) != 0)
		return -1;
	struct tls_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	atomic_init(&c->refs, 1);
	c->ecdsa = c->rsa = -1;
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
	*out = c;
	return 0;
fail:
	ctx_free(c);
	return -1;
}

void tls_ctx_ref(struct tls_ctx *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void tls_ctx_unref(struct tls_ctx *c)
{
	if (c && atomic_fetch_sub(&c->refs, 1) == 1)
		ctx_free(c);
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

/* The certificate for a client that sent p[0..len): an index, or -EAGAIN. */
static int choose_cert(const struct tls_ctx *c, const uint8_t *p, size_t len)
{
	if (c->ncerts == 1)
		return 0;
	struct hello_info h;
	switch (hello_scan(p, len, &h)) {
	case HELLO_MORE:
		return -EAGAIN;
	case HELLO_BAD:
		return 0; /* wolfSSL judges these bytes itself */
	case HELLO_OK:
		break;
	}
	if (c->ecdsa >= 0 && hello_accepts_ecdsa(&h, c->certs[c->ecdsa].curve))
		return c->ecdsa;
	return c->rsa >= 0 ? c->rsa : 0;
}

static struct tls_conn *conn_alloc(struct tls_ctx *ctx)
{
	struct tls_conn *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	tls_ctx_ref(ctx);
	t->ctx = ctx;
	t->cert = -1;
	return t;
}

/* Makes the WOLFSSL object on certificate i. 0 or -ENOMEM. */
static int conn_open(struct tls_conn *t, int i)
{
	t->ssl = wolfSSL_new(t->ctx->certs[i].ctx);
	if (!t->ssl)
		return -ENOMEM;
	t->cert = i;
	wolfSSL_SetIOReadCtx(t->ssl, t);
	wolfSSL_SetIOWriteCtx(t->ssl, t);
#if TLS_RX_FAST
	if (wolfSSL_set_tls13_secret_cb(t->ssl, secret_cb, t) != WOLFSSL_SUCCESS) {
		wolfSSL_free(t->ssl);
		t->ssl = NULL;
		return -ENOMEM;
	}
#endif
	return 0;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx)
{
	return conn_alloc(ctx);
}

int tls_conn_new_from_hello(const uint8_t *p, size_t len, struct tls_conn **out)
{
	*out = NULL;
	struct tls_ctx *ctx = tls_current();
	if (!ctx)
		return -ENOENT;
	int i = choose_cert(ctx, p, len), rc = 0;
	if (i == -EAGAIN) {
		rc = -EAGAIN;
	} else {
		struct tls_conn *t = conn_alloc(ctx);
		rc = t ? conn_open(t, i) : -ENOMEM;
		if (rc == 0)
			*out = t;
		else
			tls_conn_free(t);
	}
	tls_ctx_unref(ctx);
	return rc;
}

void tls_conn_free(struct tls_conn *t)
{
	if (!t)
		return;
	if (t->ssl)
		wolfSSL_free(t->ssl);
	tls_ctx_unref(t->ctx);
	rx_wipe(&t->rx);
	if (t->held)
		explicit_bzero(t->held, t->held_len);
	free(t->held);
	free(t->hello);
	free(t->out);
	free(t);
}

/*
 * Moves n bytes of unread input to the end of a session-owned buffer, grown
 * by doubling from min up to max (len + n must not pass max). 0 or -ENOMEM.
 */
static int keep_input(struct tls_conn *t, uint8_t **buf, uint32_t *len, uint32_t *cap, size_t n,
		      size_t min, size_t max)
{
	size_t c = *cap;
	int rc = buf_reserve(buf, &c, *len + n, min, max);
	*cap = (uint32_t)c;
	if (rc == 0)
		*len += (uint32_t)input_copy(t, *buf + *len, n);
	return rc;
}

/* Moves the unread input into the kept ClientHello (at most HELLO_INPUT_MAX). */
static int hello_keep(struct tls_conn *t)
{
	size_t avail = t->in_len - t->in_used;
	size_t n = HELLO_INPUT_MAX - t->hello_len;
	if (n > avail)
		n = avail;
	return keep_input(t, &t->hello, &t->hello_len, &t->hello_cap, n, HELLO_BUF_MIN,
			  HELLO_INPUT_MAX);
}

/*
 * Before the first handshake step: picks the certificate from the
 * ClientHello and makes the WOLFSSL object. A ClientHello not yet whole is
 * kept (its input counts as used). 0, -EAGAIN or -ENOMEM.
 */
static int conn_start(struct tls_conn *t)
{
	size_t avail = t->in_len - t->in_used;
	int i = -EAGAIN;
	if (avail == 0 && t->hello_len == 0)
		return -EAGAIN;
	if (t->hello_len == 0 && t->in_used == 0 && t->nseg > 0)
		i = choose_cert(t->ctx, t->seg[0].p, t->seg[0].len); /* the usual case: one piece */
	if (i == -EAGAIN) {
		int rc = hello_keep(t);
		if (rc)
			return rc;
		i = choose_cert(t->ctx, t->hello, t->hello_len);
		if (i == -EAGAIN)
			return -EAGAIN;
	}
	return conn_open(t, i);
}

void tls_input(struct tls_conn *t, const struct tls_seg *seg, unsigned nseg)
{
	t->seg = seg;
	t->nseg = nseg;
	t->in_len = 0;
	for (unsigned i = 0; i < nseg; i++)
		t->in_len += seg[i].len;
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

uint8_t *tls_output_take(struct tls_conn *t, size_t *len)
{
	uint8_t *p = t->out_len ? t->out : NULL;
	*len = t->out_len;
	if (!p)
		return NULL;
	t->out = NULL;
	t->out_len = t->out_cap = 0;
	return p;
}

static enum tls_status status(struct tls_conn *t, int ret)
{
	int e = wolfSSL_get_error(t->ssl, ret);
	if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
		return TLS_AGAIN;
	if (e == WOLFSSL_ERROR_ZERO_RETURN)
		return TLS_CLOSED;
	t->err = e;
	cache_forget(t->ssl);
	return TLS_ERROR;
}

#if TLS_RX_FAST
#ifdef ATOMIC_USER
/* TLS 1.2: the client's write key and IV, and its next sequence number. */
static void rx_start_tls12(struct tls_conn *t)
{
	int bulk = wolfSSL_GetBulkCipher(t->ssl), ks = wolfSSL_GetKeySize(t->ssl);
	int ivs = wolfSSL_GetIVSize(t->ssl);
	enum rx_suite suite = bulk == wolfssl_chacha		    ? RX_CHACHA20_POLY1305_SHA256
			      : bulk == wolfssl_aes_gcm && ks == 16 ? RX_AES_128_GCM_SHA256
			      : bulk == wolfssl_aes_gcm && ks == 32 ? RX_AES_256_GCM_SHA384
								    : 0;
	word64 seq = 0;
	const uint8_t *key = wolfSSL_GetClientWriteKey(t->ssl);
	const uint8_t *iv = wolfSSL_GetClientWriteIV(t->ssl);
	(void)wolfSSL_GetPeerSequenceNumber(t->ssl, &seq); /* "1" when seq is 0 */
	if (!suite || !key || !iv || ks <= 0 || ivs <= 0 ||
	    rx_init_tls12(&t->rx, suite, key, (size_t)ks, iv, (size_t)ivs, seq) != 0)
		rx_wipe(&t->rx);
}
#endif

/*
 * The handshake is done: from here the session's records are opened by
 * record.c, starting at the record after the client's Finished (the
 * record tracker kept wolfSSL from reading further). TLS 1.3 takes the
 * client's traffic secret, TLS 1.2 its write key (with a wolfSSL built
 * with ATOMIC_USER); otherwise wolfSSL_read goes on.
 */
static void rx_start(struct tls_conn *t)
{
	uint8_t secret[RX_SECRET_MAX];
	size_t len = t->secret_len;
	enum rx_suite suite = rx_suite_by_name(wolfSSL_get_cipher_name(t->ssl));
	int version = wolfSSL_GetVersion(t->ssl);
	bool boundary = t->rec_left == 0 && t->rhdr_got == 0;
	memcpy(secret, t->rx.secret, sizeof(secret));
	rx_wipe(&t->rx);
	t->secret_len = 0;
	if (version == WOLFSSL_TLSV1_3 && len > 0 && suite && boundary &&
	    rx_init(&t->rx, suite, secret, len) != 0)
		rx_wipe(&t->rx);
#ifdef ATOMIC_USER
	if (version == WOLFSSL_TLSV1_2 && boundary)
		rx_start_tls12(t);
#endif
	explicit_bzero(secret, sizeof(secret));
}

static void rx_consume(struct tls_conn *t, size_t pos)
{
	if (t->held_len) {
		size_t k = pos < t->held_len ? pos : t->held_len;
		memmove(t->held, t->held + k, t->held_len - k);
		t->held_len -= (uint32_t)k;
		pos -= k;
		if (t->held_len == 0) {
			free(t->held); /* an idle session keeps none */
			t->held = NULL;
			t->held_cap = 0;
		}
	}
	t->in_used += pos;
}

static const char *alert_name(uint8_t a)
{
	switch (a) {
	case RX_ALERT_UNEXPECTED_MESSAGE:
		return "unexpected_message";
	case RX_ALERT_BAD_RECORD_MAC:
		return "bad_record_mac";
	case RX_ALERT_RECORD_OVERFLOW:
		return "record_overflow";
	case RX_ALERT_DECODE_ERROR:
		return "decode_error";
	case RX_ALERT_ILLEGAL_PARAMETER:
		return "illegal_parameter";
	default:
		return "internal_error";
	}
}

/*
 * A fatal alert for an error record.c found, queued as the server's next
 * record (wolfSSL's write keys and sequence number; ATOMIC_USER has them).
 * Nothing more is written after it: the shard closes once it is sent.
 */
static void rx_send_alert(struct tls_conn *t, uint8_t desc)
{
#ifdef ATOMIC_USER
	int ks = wolfSSL_GetKeySize(t->ssl), ivs = wolfSSL_GetIVSize(t->ssl);
	const uint8_t *key = wolfSSL_GetServerWriteKey(t->ssl);
	const uint8_t *iv = wolfSSL_GetServerWriteIV(t->ssl);
	word64 seq = 0;
	(void)wolfSSL_GetSequenceNumber(t->ssl, &seq); /* "1" when seq is 0 */
	uint8_t rec[RX_ALERT_RECORD_MAX];
	int n = key && iv && ks > 0 && ivs > 0
		    ? rx_seal_alert(t->rx.suite, t->rx.tls12, key, (size_t)ks, iv, (size_t)ivs, seq,
				    desc, rec)
		    : -EINVAL;
	if (n > 0)
		(void)io_send(t->ssl, (char *)rec, n, t);
#else
	(void)t, (void)desc;
#endif
}

/* tls_read for a session whose records record.c opens. */
static enum tls_status rx_read(struct tls_conn *t, uint8_t *buf, size_t cap, size_t *n)
{
	struct tls_seg seg[1 + TLS_SEGS_MAX];
	unsigned k = 0;
	if (t->held_len)
		seg[k++] = (struct tls_seg){t->held, t->held_len};
	k += input_rest(t, seg + k, TLS_SEGS_MAX);
	size_t pos = 0;
	uint8_t alert = 0;
	enum rx_result r = RX_BAD;
	/* Bounded by record.c's cap on key updates. */
	for (unsigned guard = 0; guard <= RX_KEY_UPDATES_MAX; guard++) {
		r = rx_open(&t->rx, seg, k, &pos, buf, cap, n, &alert);
		if (r != RX_KEY_UPDATE_ASKED)
			break;
		/* Ours goes out before any more data (RFC 8446 4.6.3). */
		if (wolfSSL_update_keys(t->ssl) != WOLFSSL_SUCCESS) {
			r = RX_BAD;
			alert = RX_ALERT_INTERNAL_ERROR;
			break;
		}
	}
	rx_consume(t, pos);
	enum tls_status st;
	switch (r) {
	case RX_MORE:
	case RX_FULL:
		if (*n > 0)
			return TLS_OK;
		if (r == RX_MORE)
			return TLS_AGAIN;
		snprintf(t->errbuf, sizeof(t->errbuf), "plaintext buffer of %zu bytes too small",
			 cap);
		st = TLS_ERROR;
		break;
	case RX_CLOSE_NOTIFY:
		st = TLS_CLOSED;
		break;
	case RX_PEER_ALERT:
		snprintf(t->errbuf, sizeof(t->errbuf), "the client sent alert %u", alert);
		st = TLS_ERROR;
		break;
	default:
		snprintf(t->errbuf, sizeof(t->errbuf), "a record refused: %s", alert_name(alert));
		st = TLS_ERROR;
		break;
	}
	t->err = 0;
	if (st == TLS_ERROR)
		cache_forget(t->ssl); /* RFC 5246 7.2.2: not resumed after a fatal error */
	/* Our alert, unless the client's own alert ended the session. */
	uint8_t to_send = 0;
	if (st == TLS_ERROR && r != RX_PEER_ALERT)
		to_send = alert ? alert : RX_ALERT_INTERNAL_ERROR;
	if (*n > 0) {
		t->end = st; /* the data first, then the end */
		t->end_alert = to_send;
		return TLS_OK;
	}
	if (to_send)
		rx_send_alert(t, to_send);
	return st;
}
#endif

int tls_keep_input(struct tls_conn *t)
{
	size_t left = t->in_len - t->in_used;
	if (left == 0)
		return 0;
	if (!t->rx.suite || t->held_len + left > RX_RECORD_MAX)
		return -E2BIG;
	return keep_input(t, &t->held, &t->held_len, &t->held_cap, left, HELD_BUF_MIN,
			  RX_RECORD_MAX);
}

bool tls_holding(const struct tls_conn *t)
{
	return t->held_len > 0;
}

bool tls_in_place(const struct tls_conn *t)
{
	return t->rx.suite != 0;
}

enum tls_status tls_handshake(struct tls_conn *t)
{
	if (!t->ssl) {
		int rc = conn_start(t);
		if (rc == -EAGAIN)
			return TLS_AGAIN;
		if (rc) {
			t->err = MEMORY_E;
			return TLS_ERROR;
		}
	}
	int ret = wolfSSL_accept(t->ssl);
	if (ret != WOLFSSL_SUCCESS)
		return status(t, ret);
#if TLS_RX_FAST
	rx_start(t);
#endif
	return TLS_OK;
}

enum tls_status tls_read(struct tls_conn *t, uint8_t *buf, size_t cap, size_t *n)
{
	*n = 0;
	if (!t->ssl)
		return TLS_ERROR;
	if (t->end != TLS_OK) {
#if TLS_RX_FAST
		if (t->end_alert) {
			rx_send_alert(t, t->end_alert); /* after the replies to the data */
			t->end_alert = 0;
		}
#endif
		return t->end;
	}
#if TLS_RX_FAST
	if (t->rx.suite)
		return rx_read(t, buf, cap, n);
#endif
	int ret = wolfSSL_read(t->ssl, buf, (int)cap);
	if (ret > 0) {
		*n = (size_t)ret;
		return TLS_OK;
	}
	return status(t, ret);
}

enum tls_status tls_write(struct tls_conn *t, const uint8_t *p, size_t len)
{
	if (!t->ssl)
		return TLS_ERROR;
	int ret = wolfSSL_write(t->ssl, p, (int)len);
	if (ret == (int)len)
		return TLS_OK;
	return ret > 0 ? TLS_ERROR : status(t, ret);
}

void tls_close_notify(struct tls_conn *t)
{
	if (t->ssl)
		(void)wolfSSL_shutdown(t->ssl); /* "not done": the peer's alert is not awaited */
}

const char *tls_describe(struct tls_conn *t, char *buf, size_t cap, int *resumed)
{
	const char *v = t->ssl ? wolfSSL_get_version(t->ssl) : NULL;
	const char *c = t->ssl ? wolfSSL_get_cipher_name(t->ssl) : NULL;
	snprintf(buf, cap, "%s %s", v ? v : "?", c ? c : "?");
	if (resumed)
		*resumed = t->ssl ? wolfSSL_session_reused(t->ssl) : 0;
	return buf;
}

const char *tls_cert_type(const struct tls_conn *t)
{
	if (t->cert < 0)
		return "none";
	return t->ctx->certs[t->cert].kind == CERT_ECDSA ? "ecdsa" : "rsa";
}

const char *tls_error(struct tls_conn *t)
{
	if (t->err == 0)
		return t->errbuf;
	wolfSSL_ERR_error_string_n((unsigned long)t->err, t->errbuf, sizeof(t->errbuf));
	return t->errbuf;
}
