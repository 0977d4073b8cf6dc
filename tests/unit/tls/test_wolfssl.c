/*
 * test_wolfssl.c - smoke test of the wolfSSL that meson's `wolfssl` option chose.
 *
 * The header and the library report the same version; AES-128-GCM gives the
 * known answers of the GCM specification (test case 4), round-trips 16 KiB and
 * rejects a flipped bit; a server context takes a certificate chain file and a
 * key file; TLS 1.3 and TLS 1.2 handshakes run in memory through custom I/O
 * callbacks that answer WANT_READ when empty (as the shard drives them), with
 * the server's cipher order winning; a TLS 1.2 client resumes through the
 * external session cache callbacks alone (internal cache off) and a TLS 1.3
 * client through a session ticket.
 *
 * Against the build of tools/wolfssl-build.sh (MXRING_WOLFSSL_ACCELERATED) it
 * also checks that build's configuration: CPU acceleration in; peer-chain
 * storage, old TLS, renegotiation, the OpenSSL layer and the fixed-point
 * cache out; and a WOLFSSL object far below the ~56 KB of Debian's flags.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/random.h>

#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tlstest.h"

#define SERVER_CIPHERS                                                                             \
	"TLS13-AES128-GCM-SHA256:TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES256-GCM-SHA384:"          \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"

/* ---- in-memory transport (tlstest.h) ---------------------------------- */

enum { PIPE_BYTES_MAX = 32768 };

static uint8_t c2s_buf[PIPE_BYTES_MAX], s2c_buf[PIPE_BYTES_MAX];
static WOLFSSL_CTX *server_ctx; /* ECDSA certificate, external session cache */
static char cert_path[64], key_path[64];

static WOLFSSL_CTX *client_ctx(WOLFSSL_METHOD *method)
{
	WOLFSSL_CTX *ctx = tlstest_ctx_new(method);
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	return ctx;
}

static void link_open(struct tlstest_link *l, WOLFSSL_CTX *cctx, WOLFSSL_SESSION *resume)
{
	*l = (struct tlstest_link){.c2s = {c2s_buf, 0, sizeof c2s_buf},
				   .s2c = {s2c_buf, 0, sizeof s2c_buf}};
	tlstest_link_open(l, server_ctx, cctx, resume);
}

/* Handshake, then one line each way (the client takes in any ticket). */
static void link_handshake(struct tlstest_link *l)
{
	tlstest_link_handshake(l);

	char buf[16] = {0};
	assert_int_equal(wolfSSL_write(l->c, "EHLO a\r\n", 8), 8);
	assert_int_equal(wolfSSL_read(l->s, buf, sizeof buf), 8);
	assert_memory_equal(buf, "EHLO a\r\n", 8);
	assert_int_equal(wolfSSL_write(l->s, "250 ok\r\n", 8), 8);
	assert_int_equal(wolfSSL_read(l->c, buf, sizeof buf), 8);
	assert_memory_equal(buf, "250 ok\r\n", 8);
}

/* ---- a one-entry external session cache ------------------------------ */

static struct {
	uint8_t id[32];
	int id_len;
	uint8_t blob[4096];
	int blob_len;
	int stored, hits, misses, no_id;
} cache;

static int cache_new(WOLFSSL *ssl, WOLFSSL_SESSION *sess)
{
	(void)ssl;
	int n = wolfSSL_i2d_SSL_SESSION(sess, NULL);
	assert_in_range(n, 11, (int)sizeof cache.blob);
	uint8_t *p = cache.blob;
	cache.blob_len = wolfSSL_i2d_SSL_SESSION(sess, &p);
	/* wolfSSL 5.5.4 serialises side(1) bornOn(4) timeout(4) idLen(1) id;
	 * without the OpenSSL layer there is no wolfSSL_SESSION_get_id. */
	cache.id_len = cache.blob[9];
	if (cache.id_len == 0) {
		/* TLS 1.3 sessions come here too, with no session ID: the
		 * ticket is the state, nothing to cache. */
		cache.blob_len = 0;
		cache.no_id++;
		return 0;
	}
	assert_in_range(cache.id_len, 1, (int)sizeof cache.id);
	memcpy(cache.id, cache.blob + 10, (size_t)cache.id_len);
	cache.stored++;
	return 0; /* we keep a copy, not sess */
}

static WOLFSSL_SESSION *cache_get(WOLFSSL *ssl, const unsigned char *id, int len, int *copy)
{
	(void)ssl;
	*copy = 0; /* the returned session is wolfSSL's to free */
	if (cache.blob_len == 0 || len != cache.id_len || memcmp(id, cache.id, (size_t)len) != 0) {
		cache.misses++;
		return NULL;
	}
	cache.hits++;
	const unsigned char *p = cache.blob;
	return wolfSSL_d2i_SSL_SESSION(NULL, &p, cache.blob_len);
}

/* ---- tests ------------------------------------------------------------ */

static void test_version(void **state)
{
	(void)state;
	printf("wolfSSL %s (header %s)\n", wolfSSL_lib_version(), LIBWOLFSSL_VERSION_STRING);
	assert_string_equal(wolfSSL_lib_version(), LIBWOLFSSL_VERSION_STRING);
	assert_int_equal(wolfSSL_lib_version_hex(), LIBWOLFSSL_VERSION_HEX);
}

static void unhex(const char *hex, uint8_t *out, size_t len)
{
	assert_int_equal(strlen(hex), 2 * len);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(sscanf(hex + 2 * i, "%2hhx", &out[i]), 1);
}

static void test_aes_gcm(void **state)
{
	(void)state;
	/* GCM specification (McGrew, Viega), test case 4. */
	uint8_t key[16], iv[12], aad[20], pt[60], ct[60], tag[16], out[60], got_tag[16];
	unhex("feffe9928665731c6d6a8f9467308308", key, sizeof key);
	unhex("cafebabefacedbaddecaf888", iv, sizeof iv);
	unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad, sizeof aad);
	unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
	      pt, sizeof pt);
	unhex("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
	      "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
	      ct, sizeof ct);
	unhex("5bc94fbc3221a5db94fae95ae7121a47", tag, sizeof tag);

	Aes aes;
	assert_int_equal(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
	assert_int_equal(wc_AesGcmSetKey(&aes, key, sizeof key), 0);
	assert_int_equal(wc_AesGcmEncrypt(&aes, out, pt, sizeof pt, iv, sizeof iv, got_tag,
					  sizeof got_tag, aad, sizeof aad),
			 0);
	assert_memory_equal(out, ct, sizeof ct);
	assert_memory_equal(got_tag, tag, sizeof tag);

	/* A record-sized round trip, and a flipped bit is caught. */
	enum { N = 16384 };
	static uint8_t msg[N], enc[N], dec[N];
	WC_RNG rng;
	assert_int_equal(wc_InitRng(&rng), 0);
	assert_int_equal(wc_RNG_GenerateBlock(&rng, msg, N), 0);
	assert_int_equal(wc_FreeRng(&rng), 0);
	assert_int_equal(
	    wc_AesGcmEncrypt(&aes, enc, msg, N, iv, sizeof iv, got_tag, sizeof got_tag, aad, 13),
	    0);
	assert_int_equal(
	    wc_AesGcmDecrypt(&aes, dec, enc, N, iv, sizeof iv, got_tag, sizeof got_tag, aad, 13),
	    0);
	assert_memory_equal(dec, msg, N);
	enc[N / 2] ^= 0x01;
	assert_int_equal(
	    wc_AesGcmDecrypt(&aes, dec, enc, N, iv, sizeof iv, got_tag, sizeof got_tag, aad, 13),
	    AES_GCM_AUTH_E);
	wc_AesFree(&aes);
}

static void test_tls13(void **state)
{
	(void)state;
	WOLFSSL_CTX *only13 = wolfSSL_CTX_new(wolfTLSv1_3_server_method());
	assert_non_null(only13);
	wolfSSL_CTX_free(only13);
	WOLFSSL_CTX *cctx = client_ctx(wolfTLS_client_method());

	memset(&cache, 0, sizeof cache);
	struct tlstest_link l;
	link_open(&l, cctx, NULL);
	link_handshake(&l);
	printf("%s %s\n", wolfSSL_get_version(l.s), wolfSSL_get_cipher_name(l.s));
	assert_string_equal(wolfSSL_get_version(l.s), "TLSv1.3");
	assert_string_equal(wolfSSL_get_cipher_name(l.s), "TLS13-AES128-GCM-SHA256");
	assert_int_equal(wolfSSL_session_reused(l.s), 0);
	WOLFSSL_SESSION *sess = wolfSSL_get1_session(l.c); /* holds the ticket */
	assert_non_null(sess);
	tlstest_link_free(&l);

	link_open(&l, cctx, sess);
	link_handshake(&l);
	assert_int_equal(wolfSSL_session_reused(l.s), 1);
	assert_int_equal(cache.hits, 0); /* the ticket did it */
	tlstest_link_free(&l);
	wolfSSL_SESSION_free(sess);
	wolfSSL_CTX_free(cctx);
}

static void test_tls12(void **state)
{
	(void)state;
	/* The client prefers ChaCha20; the server's order (AES-GCM first) wins. */
	WOLFSSL_CTX *cctx = client_ctx(wolfTLSv1_2_client_method());
	assert_int_equal(wolfSSL_CTX_set_cipher_list(
			     cctx, "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"),
			 WOLFSSL_SUCCESS);

	memset(&cache, 0, sizeof cache);
	struct tlstest_link l;
	link_open(&l, cctx, NULL);
	link_handshake(&l);
	printf("%s %s\n", wolfSSL_get_version(l.s), wolfSSL_get_cipher_name(l.s));
	assert_string_equal(wolfSSL_get_version(l.s), "TLSv1.2");
	assert_string_equal(wolfSSL_get_cipher_name(l.s), "ECDHE-ECDSA-AES128-GCM-SHA256");
	assert_int_equal(cache.stored, 1);
	WOLFSSL_SESSION *sess = wolfSSL_get1_session(l.c);
	assert_non_null(sess);
	tlstest_link_free(&l);

	/* Session-ID resumption served by the external cache only. */
	link_open(&l, cctx, sess);
	link_handshake(&l);
	assert_int_equal(cache.hits, 1);
	assert_int_equal(wolfSSL_session_reused(l.s), 1);
	tlstest_link_free(&l);
	wolfSSL_SESSION_free(sess);
	wolfSSL_CTX_free(cctx);
}

#define STR(x)	#x
#define XSTR(x) STR(x)
/* Defined (empty or with a value) iff it expands to something else than its name. */
#define FLAG(m, want)                                                                              \
	{                                                                                          \
#m, strcmp(XSTR(m), #m) != 0, want                                                 \
	}

static void test_build_flags(void **state)
{
	(void)state;
#ifndef MXRING_WOLFSSL_ACCELERATED
	skip();
#else
	/* Not static: strcmp() is no constant expression in ISO C. */
	const struct {
		const char *name;
		bool have, want;
	} flags[] = {
	    FLAG(WOLFSSL_AESNI, true),	       /* AES-NI, AVX AES-GCM, by CPUID */
	    FLAG(USE_INTEL_SPEEDUP, true),     /* AVX/AVX2 ChaCha, Poly1305, SHA-2 */
	    FLAG(WOLFSSL_SP_X86_64_ASM, true), /* P-256, RSA in asm */
	    FLAG(WOLFSSL_TLS13, true),
	    FLAG(NO_OLD_TLS, true),
	    FLAG(HAVE_CURVE25519, true),
	    FLAG(HAVE_SUPPORTED_CURVES, true),
	    FLAG(HAVE_SESSION_TICKET, true),
	    FLAG(HAVE_EXT_CACHE, true),
	    FLAG(HAVE_SNI, true),
	    FLAG(HAVE_SERVER_RENEGOTIATION_INFO, true),
	    FLAG(NO_DH, true),
	    FLAG(SESSION_CERTS, false),
	    FLAG(KEEP_PEER_CERT, false),
	    FLAG(OPENSSL_EXTRA, false),
	    FLAG(FP_ECC, false),
	    FLAG(HAVE_SECURE_RENEGOTIATION, false),
	    FLAG(WOLFSSL_EARLY_DATA, false),
	    FLAG(WOLFSSL_ALLOW_SSLV3, false),
	};
	for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
		if (flags[i].have != flags[i].want)
			fail_msg("%s is %s; tools/wolfssl-build.sh means it %s", flags[i].name,
				 flags[i].have ? "defined" : "not defined",
				 flags[i].want ? "on" : "off");
	}

	/* Heap per WOLFSSL (glibc counts; under a sanitizer it reads 0). */
	enum { OBJS = 100 };
	WOLFSSL *objs[OBJS];
	size_t before = mallinfo2().uordblks;
	for (int i = 0; i < OBJS; i++)
		assert_non_null(objs[i] = wolfSSL_new(server_ctx));
	size_t per_obj = (mallinfo2().uordblks - before) / OBJS;
	for (int i = 0; i < OBJS; i++)
		wolfSSL_free(objs[i]);
	printf("heap per WOLFSSL: %zu bytes\n", per_obj);
	assert_true(per_obj < 16 * 1024);
#endif
}

/* ---- set-up ----------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	assert_int_equal(wolfSSL_Init(), WOLFSSL_SUCCESS);
	tlstest_write_temp(cert_path, sizeof cert_path, tlstest_ec_cert_pem);
	tlstest_write_temp(key_path, sizeof key_path, tlstest_ec_key_pem);

	server_ctx = tlstest_ctx_new(wolfTLS_server_method());
	assert_int_equal(wolfSSL_CTX_SetMinVersion(server_ctx, WOLFSSL_TLSV1_2), WOLFSSL_SUCCESS);
	assert_int_equal(wolfSSL_CTX_use_certificate_chain_file(server_ctx, cert_path),
			 WOLFSSL_SUCCESS);
	assert_int_equal(
	    wolfSSL_CTX_use_PrivateKey_file(server_ctx, key_path, WOLFSSL_FILETYPE_PEM),
	    WOLFSSL_SUCCESS);
	assert_int_equal(wolfSSL_CTX_set_cipher_list(server_ctx, SERVER_CIPHERS), WOLFSSL_SUCCESS);
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	assert_int_equal(wolfSSL_CTX_set_groups(server_ctx, groups, 2), WOLFSSL_SUCCESS);
	wolfSSL_CTX_set_options(server_ctx, WOLFSSL_OP_CIPHER_SERVER_PREFERENCE);
	wolfSSL_CTX_sess_set_new_cb(server_ctx, cache_new);
	wolfSSL_CTX_sess_set_get_cb(server_ctx, cache_get);
	wolfSSL_CTX_set_session_cache_mode(server_ctx, WOLFSSL_SESS_CACHE_NO_INTERNAL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	wolfSSL_CTX_free(server_ctx);
	unlink(cert_path);
	unlink(key_path);
	wolfSSL_Cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_version),	cmocka_unit_test(test_aes_gcm),
	    cmocka_unit_test(test_tls13),	cmocka_unit_test(test_tls12),
	    cmocka_unit_test(test_build_flags),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
