/*
 * test_tls.c - tls/tls.c through its own API, against wolfSSL clients in
 * memory and `openssl s_client` over loopback.
 *
 * Certificates: with an ECDSA P-256 and an RSA-2048 certificate configured
 * (tls_cert_file and tls_key_file listing two files each), a default client
 * gets the ECDSA one and a client that offers only RSA gets the RSA one;
 * each client trusts only the certificate it should get, so the handshake
 * itself proves which one was sent. The ClientHello may arrive one byte at
 * a time. Bad lists and mismatched pairs are refused with a message.
 *
 * Resumption: TLS 1.2 clients without tickets resume by session ID through
 * the process's cache on another WOLFSSL object in another thread (as
 * another shard would), after a reload too; the hit rate of 100 clients
 * resuming 3 times each over 4 threads is printed. The session blob layout
 * the cache relies on (ID at byte 10) is what makes these hits.
 *
 * Usage: test_tls (openssl on PATH for the s_client cases, else skipped).
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "hello.h"
#include "tls.h"
#include "tlstest.h"

/* A throw-away RSA-2048 certificate (CN=mx.test, valid to 2126) and key (ECDSA: tlstest.h). */
static const char rsa_cert_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDBzCCAe+gAwIBAgIUd+fnIzRknkpB1iZBduVIUZ41V8EwDQYJKoZIhvcNAQEL\n"
    "BQAwEjEQMA4GA1UEAwwHbXgudGVzdDAgFw0yNjExMjgwNTM2NDZaGA8yMTI2MTEw\n"
    "NDA1MzY0NlowEjEQMA4GA1UEAwwHbXgudGVzdDCCASIwDQYJKoZIhvcNAQEBBQAD\n"
    "ggEPADCCAQoCggEBANi1XRrrc/fzm7SO5rCoH5gwmX0Se8qqorVV4YW4wmnzoNbJ\n"
    "a6B8vW4ZGpiPSiPYoUjKU8Q+S8XzQtamuRepuUc4TXahLfm6UVNpdR85kLzMiGyX\n"
    "0Cn4ZjLOHMtQW//Xv5+lg78Bltj8Xv4JNwiXUFWdjObD33bjp+V5RqvnkpdGA6am\n"
    "WPcz1VQc4veR8hElnRMzbmjahB/CpfU5OgQQc+6cm9DNVjDyzDegaijlefyb8luL\n"
    "25CmVFEZRsdwVfVrjq7OQFTG+Mnw8WgkULPJZ/miDDu5lUDhawVk/QOABJj1x55c\n"
    "V7RSDBwnCUOtPRuWJlMCs0OZxmsBa4roCg4q8QsCAwEAAaNTMFEwHQYDVR0OBBYE\n"
    "FEvlNhbn9xhKe/mjtpmFcMWcUqMZMB8GA1UdIwQYMBaAFEvlNhbn9xhKe/mjtpmF\n"
    "cMWcUqMZMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEBABWecfhK\n"
    "r7ovZOO/zk8mHtEW3zZu9wlbalrHXmg0lPd9rv8GYgc4FmJjOsK1LQBKhCAPDvNQ\n"
    "6rRem3hw8DYw/RV56HNmqbkLlqZMi3esUZFeyQxYxW6nKKrcsB0+DelKX5Nop2JE\n"
    "I7twA2/7IijuLMJucHgFXXb8hh+tZGAYdNJ0o21mrikBMZy3n4b6Ekm/PkpVpx9e\n"
    "jxp+am3SV+IGCaYGD9ZNvwYhhDiB5L1+Qv98+tvK4E/KMhExizJFPy3apI6NascW\n"
    "F7H4WJ2iNpGpuka951ZG6gAuz/fBhfnua0ah/AE5lefqxsNUCajDm/Mjn2vkLp47\n"
    "fb21MkemumFvm5g=\n"
    "-----END CERTIFICATE-----\n";
static const char rsa_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDYtV0a63P385u0\n"
    "juawqB+YMJl9EnvKqqK1VeGFuMJp86DWyWugfL1uGRqYj0oj2KFIylPEPkvF80LW\n"
    "prkXqblHOE12oS35ulFTaXUfOZC8zIhsl9Ap+GYyzhzLUFv/17+fpYO/AZbY/F7+\n"
    "CTcIl1BVnYzmw99246fleUar55KXRgOmplj3M9VUHOL3kfIRJZ0TM25o2oQfwqX1\n"
    "OToEEHPunJvQzVYw8sw3oGoo5Xn8m/Jbi9uQplRRGUbHcFX1a46uzkBUxvjJ8PFo\n"
    "JFCzyWf5ogw7uZVA4WsFZP0DgASY9ceeXFe0UgwcJwlDrT0bliZTArNDmcZrAWuK\n"
    "6AoOKvELAgMBAAECggEAE5126/Tb7lmSgmlc4CiXk4LyoauGoPWI/LjlTOFIV6bB\n"
    "rC9XGpOv4cNL8PsnTs9Q6fHGW0D4Qtad+iflIQsvxg6GlHJKYwxGSDKHc2gWfcBV\n"
    "qN6k7Oea+IZHfO+tJB83LRAiOKvAJ6vQPVZAMPrhPp6gHlMkavJ4RAESMIUpc5+r\n"
    "9YOYXcaeOrDWkEiJoJFjjbHQASkfkaWt4tgQ3Mm0nlonm/UocijBErrWWgBTyPg+\n"
    "pTNhR4K2sE51aTVLiQ8MUZ8GlS+xiC7dc4mRtlSzzETR+Q6+AsZhMcx1eEzqnBH/\n"
    "j/4a5EVFoUOhn1U+0LN/ZAA2xgYJ2aklpXky7nNfgQKBgQD/ZN5E9aPzUReLhDrR\n"
    "4oghDIlnr4D8UfQcUlx8Q4vcHAbaD2kX7DkLwFYEFHcplj07+tWodJFjypUEZ2gn\n"
    "7gA6S5HLdyz2r04IwSxCjOkdO27tsmsfvU71TJ2TEdPjjbQbUxvuNotqJP6VmH2E\n"
    "urtOtLhNc3dpvtMUdfwUF3wfEQKBgQDZOP88g2sdKj8dvvzvHAOsDgcrXUr/qEsx\n"
    "DtcOrOaVDuIk7CtCnQ6K+Z/5HlPTXWRs81qaNqqCQvi0qn0Ddk3snL939rTR8pIY\n"
    "BRc/Ai0EcYdDOVnkcfKcuhat7LxnFhsFdEORQ8R6q6rUjg/daIXoYmhQe9vv7ttW\n"
    "n5Z+sjmGWwKBgGuERWZ2mwzmCKl9g120pmZzZq0133FZ9xCtQ640qX6Cdgf7EN03\n"
    "X1SpJg0VqIzjaOgFU0lVuZdvQ4jVF64nrgTcp4Ymp9E6P/nDiSSDOehKiwqaYCq+\n"
    "ga0XEgdGLBPSJg6S0GFaqRqIdHz5822bRxt9TVGd2Jm18hrdCMBUmrZhAoGAbm3o\n"
    "a7YPrTr97Txbz575Su2yvVvnNcMzvpPhxqclbd+sHcMmVu4LJ6Gxru65BLn0xOKO\n"
    "S9nAowoy733AohLxmHkzaWQ1FopvtOBZqgGMKzcf4Y/1YAqBoSWFRBQWz31QbVxm\n"
    "wSGncAl3hilWbWOmt7XXfBsLe5V9UjM9SdmHHwMCgYA6ArLt13R5vM7LeStq9hFg\n"
    "7M9qRsTF+DwxkKUuqbsbI6aQuGMwUYAy1BWXQGQG+tWtJh2HqkP7f8Qc+OuAScSY\n"
    "0EpZghterCxJv9A8Ex6v3upjWd59VegzykMWfXzEvzWNWbdmfRD/eP/Yp3j+Fm2G\n"
    "8dMaEPtYMLWbfovHtyBvHQ==\n"
    "-----END PRIVATE KEY-----\n";

static char ec_cert[64], ec_key[64], rsa_cert[64], rsa_key[64];

/* ---- set-up ------------------------------------------------------------- */

/* A configuration with the given certificate and key lists. */
static void config_for(struct config *cfg, const char *certs, const char *keys)
{
	config_defaults(cfg);
	cfg->tls_security_level = TLS_LEVEL_MAY;
	snprintf(cfg->tls_cert_file, sizeof cfg->tls_cert_file, "%s", certs);
	snprintf(cfg->tls_key_file, sizeof cfg->tls_key_file, "%s", keys);
}

/* Makes the current context from the ECDSA+RSA pair (or what is given). */
static void make_current(const char *certs, const char *keys, unsigned cache_size)
{
	struct config cfg;
	char err[512] = "";
	FILE *ef = fmemopen(err, sizeof err, "w");
	config_for(&cfg, certs, keys);
	cfg.tls_session_cache_size = cache_size;
	struct tls_ctx *ctx;
	int rc = tls_ctx_new(&cfg, &ctx, ef);
	fclose(ef);
	if (rc != 0)
		fail_msg("tls_ctx_new: %s", err);
	tls_set_current(ctx);
}

/* Another P-256 key: of the right kind for the ECDSA certificate, but not its own. */
static const char other_ec_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MEECAQAwEwYHKoZIzj0CAQYIKoZIzj0DAQcEJzAlAgEBBCAlyN99gJqo9b2MlD4n\n"
    "fiiY8Y+c1cwFGxGWBu8E0TK+/g==\n"
    "-----END PRIVATE KEY-----\n";
static char other_ec_key[64];

static char both_certs[160], both_keys[160];

static int setup(void **state)
{
	(void)state;
	tlstest_write_temp(ec_cert, sizeof ec_cert, tlstest_ec_cert_pem);
	tlstest_write_temp(ec_key, sizeof ec_key, tlstest_ec_key_pem);
	tlstest_write_temp(rsa_cert, sizeof rsa_cert, rsa_cert_pem);
	tlstest_write_temp(rsa_key, sizeof rsa_key, rsa_key_pem);
	tlstest_write_temp(other_ec_key, sizeof other_ec_key, other_ec_key_pem);
	snprintf(both_certs, sizeof both_certs, "%s, %s", ec_cert, rsa_cert);
	snprintf(both_keys, sizeof both_keys, "%s,%s", ec_key, rsa_key);
	make_current(both_certs, both_keys, 20000);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tls_set_current(NULL);
	unlink(ec_cert);
	unlink(ec_key);
	unlink(rsa_cert);
	unlink(rsa_key);
	unlink(other_ec_key);
	return 0;
}

/* ---- an in-memory client against a tls_conn ------------------------------- */

enum { PIPE_BYTES_MAX = 65536, ROUNDS_MAX = 20000 };

/* A client context; trust: the only certificate it accepts (NULL: any). */
static WOLFSSL_CTX *client_ctx(WOLFSSL_METHOD *m, const char *ciphers, const char *trust)
{
	WOLFSSL_CTX *c = tlstest_ctx_new(m);
	if (ciphers)
		assert_int_equal(wolfSSL_CTX_set_cipher_list(c, ciphers), WOLFSSL_SUCCESS);
	if (trust) {
		assert_int_equal(wolfSSL_CTX_load_verify_buffer(c, (const unsigned char *)trust,
								(long)strlen(trust),
								WOLFSSL_FILETYPE_PEM),
				 WOLFSSL_SUCCESS);
		wolfSSL_CTX_set_verify(c, WOLFSSL_VERIFY_PEER, NULL);
	} else {
		wolfSSL_CTX_set_verify(c, WOLFSSL_VERIFY_NONE, NULL);
	}
	return c;
}

struct link {
	struct tlstest_pipe c2s, s2c;
	WOLFSSL *c;	    /* owned */
	struct tls_conn *t; /* owned */
	size_t chunk;	    /* most ciphertext bytes handed to the server at once */
	uint8_t c2s_b[PIPE_BYTES_MAX], s2c_b[PIPE_BYTES_MAX]; /* lent to the pipes */
};

static void link_open(struct link *l, WOLFSSL_CTX *cctx, WOLFSSL_SESSION *resume, size_t chunk)
{
	memset(l, 0, sizeof *l);
	l->c2s = (struct tlstest_pipe){l->c2s_b, 0, sizeof l->c2s_b};
	l->s2c = (struct tlstest_pipe){l->s2c_b, 0, sizeof l->s2c_b};
	struct tls_ctx *ctx = tls_current();
	assert_non_null(ctx);
	l->t = tls_conn_new(ctx);
	tls_ctx_unref(ctx);
	assert_non_null(l->t);
	assert_string_equal(tls_cert_type(l->t), "none");
	l->c = wolfSSL_new(cctx);
	assert_non_null(l->c);
	wolfSSL_SetIOReadCtx(l->c, &l->s2c);
	wolfSSL_SetIOWriteCtx(l->c, &l->c2s);
	if (resume)
		assert_int_equal(wolfSSL_set_session(l->c, resume), WOLFSSL_SUCCESS);
	l->chunk = chunk ? chunk : PIPE_BYTES_MAX;
}

/* Hands the server its ciphertext in chunks as the shard would; moves its output. */
static enum tls_status server_step(struct link *l, bool handshake, uint8_t *plain, size_t cap,
				   size_t *n)
{
	enum tls_status st = TLS_AGAIN;
	for (int guard = 0; guard < ROUNDS_MAX; guard++) {
		size_t len = l->c2s.len < l->chunk ? l->c2s.len : l->chunk;
		/* In up to three pieces, as receive buffers would hold it. */
		struct tls_seg seg[TLS_SEGS_MAX];
		unsigned k = 0;
		size_t piece = (len + 2) / 3;
		for (size_t off = 0; off < len && k < TLS_SEGS_MAX; off += seg[k++].len)
			seg[k] =
			    (struct tls_seg){l->c2s.b + off, len - off < piece ? len - off : piece};
		tls_input(l->t, seg, k);
		st = handshake ? tls_handshake(l->t) : tls_read(l->t, plain, cap, n);
		if (st == TLS_AGAIN && !handshake) {
			/* A record not yet whole: the session keeps it, as the shard asks. */
			int rc = tls_keep_input(l->t);
			assert_true(rc == 0 || rc == -E2BIG);
		}
		size_t used = tls_input_used(l->t);
		assert_true(used <= len);
		tlstest_pipe_take(&l->c2s, used);
		size_t olen;
		uint8_t *out = tls_output_take(l->t, &olen);
		if (olen) {
			assert_true(l->s2c.len + olen <= l->s2c.cap);
			memcpy(l->s2c.b + l->s2c.len, out, olen);
			l->s2c.len += olen;
		}
		free(out);
		if (st != TLS_AGAIN || used == 0 || l->c2s.len == 0)
			break;
	}
	return st;
}

/* Runs the handshake; returns the server's last status (TLS_OK when done). */
static enum tls_status link_handshake(struct link *l)
{
	int cr = 0;
	enum tls_status sr = TLS_AGAIN;
	for (int i = 0; i < ROUNDS_MAX && !(cr == 1 && sr == TLS_OK); i++) {
		if (cr != 1) {
			cr = wolfSSL_connect(l->c);
			if (cr != 1 && wolfSSL_get_error(l->c, cr) != WOLFSSL_ERROR_WANT_READ)
				return TLS_ERROR;
		}
		if (sr != TLS_OK) {
			sr = server_step(l, true, NULL, 0, NULL);
			if (sr == TLS_ERROR || sr == TLS_CLOSED)
				return sr;
		}
	}
	if (cr != 1)
		return TLS_ERROR;
	/* One line each way (the client takes in any ticket). */
	uint8_t buf[64];
	size_t n = 0;
	assert_int_equal(wolfSSL_write(l->c, "EHLO a\r\n", 8), 8);
	assert_int_equal(server_step(l, false, buf, sizeof buf, &n), TLS_OK);
	assert_int_equal(n, 8);
	assert_memory_equal(buf, "EHLO a\r\n", 8);
	assert_int_equal(tls_write(l->t, (const uint8_t *)"250 ok\r\n", 8), TLS_OK);
	server_step(l, false, buf, 0, &n); /* moves the output */
	assert_int_equal(wolfSSL_read(l->c, buf, sizeof buf), 8);
	return sr;
}

static void link_close(struct link *l)
{
	wolfSSL_free(l->c);
	tls_conn_free(l->t);
}

static int resumed(struct link *l)
{
	char d[TLS_DESC_MAX];
	int r = 0;
	tls_describe(l->t, d, sizeof d, &r);
	return r;
}

/* ---- certificate choice ------------------------------------------------- */

struct choice {
	const char *what;
	int v13;	     /* 1: TLS 1.3-capable client, 0: TLS 1.2 only */
	const char *ciphers; /* client's list, NULL for its default */
	const char *want;    /* "ecdsa" or "rsa" */
};

static void test_choice_memory(void **state)
{
	(void)state;
	static const struct choice cases[] = {
	    {"default client", 1, NULL, "ecdsa"},
	    {"TLS 1.2 client", 0, NULL, "ecdsa"},
	    {"TLS 1.2, RSA suites only", 0,
	     "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305", "rsa"},
	    {"TLS 1.2, ECDSA suites only", 0, "ECDHE-ECDSA-AES128-GCM-SHA256", "ecdsa"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct choice *k = &cases[i];
		bool ec = strcmp(k->want, "ecdsa") == 0;
		WOLFSSL_CTX *cctx =
		    client_ctx(k->v13 ? wolfTLS_client_method() : wolfTLSv1_2_client_method(),
			       k->ciphers, ec ? tlstest_ec_cert_pem : rsa_cert_pem);
		/* Whole, then one byte at a time, then 7 at a time. */
		size_t chunks[] = {0, 1, 7};
		for (size_t c = 0; c < 3; c++) {
			struct link l;
			link_open(&l, cctx, NULL, chunks[c]);
			enum tls_status st = link_handshake(&l);
			if (st != TLS_OK)
				fail_msg("%s (chunk %zu): handshake %d: %s", k->what, chunks[c],
					 (int)st, tls_error(l.t));
			assert_string_equal(tls_cert_type(l.t), k->want);
			char d[TLS_DESC_MAX];
			printf("%-28s chunk %zu: %s cert=%s\n", k->what, chunks[c],
			       tls_describe(l.t, d, sizeof d, NULL), tls_cert_type(l.t));
			link_close(&l);
		}
		wolfSSL_CTX_free(cctx);
	}
}

/* A client trusting the RSA certificate only fails when it is offered ECDSA. */
static void test_choice_is_proved(void **state)
{
	(void)state;
	WOLFSSL_CTX *cctx = client_ctx(wolfTLS_client_method(), NULL, rsa_cert_pem);
	struct link l;
	link_open(&l, cctx, NULL, 0);
	assert_int_not_equal(link_handshake(&l), TLS_OK);
	assert_string_equal(tls_cert_type(l.t), "ecdsa");
	link_close(&l);
	wolfSSL_CTX_free(cctx);
}

static void test_from_hello(void **state)
{
	(void)state;
	/* The ClientHello of a wolfSSL client, captured from its first flight. */
	WOLFSSL_CTX *cctx =
	    client_ctx(wolfTLSv1_2_client_method(), "ECDHE-RSA-AES128-GCM-SHA256", rsa_cert_pem);
	struct link l;
	link_open(&l, cctx, NULL, 0);
	assert_int_equal(wolfSSL_connect(l.c), -1);
	struct hello_info h;
	assert_int_equal(hello_scan(l.c2s.b, l.c2s.len, &h), HELLO_OK);
	struct tls_conn *t = NULL;
	for (size_t n = 0; n < l.c2s.len; n += 13) {
		assert_int_equal(tls_conn_new_from_hello(l.c2s.b, n, &t), -EAGAIN);
		assert_null(t);
	}
	assert_int_equal(tls_conn_new_from_hello(l.c2s.b, l.c2s.len, &t), 0);
	assert_string_equal(tls_cert_type(t), "rsa");
	/* It goes on as any session: swap it in and finish the handshake. */
	tls_conn_free(l.t);
	l.t = t;
	assert_int_equal(link_handshake(&l), TLS_OK);
	link_close(&l);

	/* Not a ClientHello: the first certificate, and wolfSSL says no. */
	assert_int_equal(tls_conn_new_from_hello((const uint8_t *)"EHLO x\r\n", 8, &t), 0);
	assert_string_equal(tls_cert_type(t), "ecdsa");
	struct tls_seg junk = {(const uint8_t *)"EHLO x\r\n", 8};
	tls_input(t, &junk, 1);
	assert_int_equal(tls_handshake(t), TLS_ERROR);
	printf("garbage: %s\n", tls_error(t));
	tls_conn_free(t);
	wolfSSL_CTX_free(cctx);
}

/* ---- openssl s_client over loopback ------------------------------------ */

static bool have_openssl(void)
{
	return system("openssl version >/dev/null 2>&1") == 0;
}

/*
 * Serves one connection from `openssl s_client ARGS -CAfile trust` with the
 * current context; returns the certificate type the session chose, and
 * whether s_client verified it (its output said "Verify return code: 0").
 */
static const char *serve_s_client(const char *args, const char *trust, bool *verified)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(ls >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(ls, 1), 0);
	socklen_t al = sizeof a;
	assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &al), 0);
	char out[64] = "/tmp/test_tls.out.XXXXXX";
	int ofd = mkstemp(out);
	assert_true(ofd >= 0);
	close(ofd);
	char cmd[1024];
	snprintf(cmd, sizeof cmd,
		 "openssl s_client -connect 127.0.0.1:%u -servername mx.test -CAfile %s %s "
		 "</dev/null >%s 2>&1",
		 ntohs(a.sin_port), trust, args, out);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	int fd = accept(ls, NULL, NULL);
	assert_true(fd >= 0);
	struct tls_ctx *ctx = tls_current();
	struct tls_conn *t = tls_conn_new(ctx);
	tls_ctx_unref(ctx);
	static uint8_t in[65536];
	size_t in_len = 0;
	enum tls_status st = TLS_AGAIN;
	for (int guard = 0; guard < 1000 && st == TLS_AGAIN; guard++) {
		ssize_t n = read(fd, in + in_len, sizeof in - in_len);
		if (n <= 0)
			break;
		in_len += (size_t)n;
		struct tls_seg seg = {in, in_len};
		tls_input(t, &seg, 1);
		st = tls_handshake(t);
		size_t used = tls_input_used(t);
		memmove(in, in + used, in_len - used);
		in_len -= used;
		size_t olen;
		uint8_t *o = tls_output_take(t, &olen);
		if (olen)
			assert_int_equal(write(fd, o, olen), (ssize_t)olen);
		free(o);
	}
	static char type[8];
	snprintf(type, sizeof type, "%s", st == TLS_OK ? tls_cert_type(t) : "failed");
	tls_close_notify(t);
	size_t olen;
	const uint8_t *o = tls_output(t, &olen);
	if (olen)
		(void)!write(fd, o, olen);
	tls_conn_free(t);
	close(fd);
	close(ls);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	FILE *f = fopen(out, "r");
	char line[512];
	*verified = false;
	while (f && fgets(line, sizeof line, f))
		if (strstr(line, "Verify return code: 0 (ok)"))
			*verified = true;
	if (f)
		fclose(f);
	unlink(out);
	return type;
}

static void test_choice_s_client(void **state)
{
	(void)state;
	if (!have_openssl())
		skip();
	static const struct {
		const char *args;
		bool ecdsa;
	} cases[] = {
	    {"", true},
	    {"-tls1_2", true},
	    {"-tls1_3 -sigalgs RSA-PSS+SHA256", false},
	    {"-sigalgs RSA-PSS+SHA256:RSA+SHA256", false},
	    {"-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256", false},
	    {"-tls1_2 -sigalgs RSA+SHA256", false},
	    {"-tls1_3 -sigalgs ECDSA+SHA256:RSA-PSS+SHA256", true},
	    {"-tls1_3 -sigalgs ECDSA+SHA384:RSA-PSS+SHA256", false}, /* P-256 not accepted */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bool verified;
		const char *want = cases[i].ecdsa ? "ecdsa" : "rsa";
		const char *got =
		    serve_s_client(cases[i].args, cases[i].ecdsa ? ec_cert : rsa_cert, &verified);
		printf("s_client %-44s cert=%s verified=%d\n", cases[i].args, got, verified);
		assert_string_equal(got, want);
		assert_true(verified);
	}
}

/* ---- configuration ------------------------------------------------------ */

static void expect_refused(const char *certs, const char *keys, const char *why)
{
	struct config cfg;
	char err[512] = "";
	FILE *ef = fmemopen(err, sizeof err, "w");
	config_for(&cfg, certs, keys);
	struct tls_ctx *ctx = NULL;
	int rc = tls_ctx_new(&cfg, &ctx, ef);
	fclose(ef);
	if (rc == 0)
		fail_msg("accepted: %s / %s", certs, keys);
	if (!strstr(err, why))
		fail_msg("message '%s' lacks '%s'", err, why);
}

static void test_config(void **state)
{
	(void)state;
	char a[200], b[200];
	snprintf(a, sizeof a, "%s,%s", ec_cert, rsa_cert);
	expect_refused(a, ec_key, "same number");
	snprintf(b, sizeof b, "%s,%s", rsa_key, ec_key);
	expect_refused(a, b, "does not match");
	/* A key of the right kind that is not the certificate's own. */
	expect_refused(ec_cert, other_ec_key, "does not match");
	snprintf(b, sizeof b, "%s,%s", other_ec_key, rsa_key);
	expect_refused(a, b, "does not match");
	snprintf(a, sizeof a, "%s,%s", ec_cert, ec_cert);
	snprintf(b, sizeof b, "%s,%s", ec_key, ec_key);
	expect_refused(a, b, "two ECDSA keys");
	snprintf(a, sizeof a, "%s,%s,%s", ec_cert, rsa_cert, ec_cert);
	snprintf(b, sizeof b, "%s,%s,%s", ec_key, rsa_key, ec_key);
	expect_refused(a, b, "same number");
	expect_refused(ec_cert, "/nonexistent/key.pem", "No such file");
	expect_refused(ec_cert, ec_cert, "not an unencrypted PEM private key");

	/* config_check sees the counts before any file is read. */
	struct config cfg;
	char err[512] = "";
	FILE *ef = fmemopen(err, sizeof err, "w");
	config_for(&cfg, "a.pem,b.pem", "a.key");
	assert_int_equal(config_check(&cfg, ef), -1);
	config_for(&cfg, "a.pem,,b.pem", "a.key,b.key");
	assert_int_equal(config_check(&cfg, ef), -1);
	config_for(&cfg, "a.pem,b.pem,c.pem", "a.key,b.key,c.key");
	assert_int_equal(config_check(&cfg, ef), -1);
	config_for(&cfg, "a.pem, b.pem", "a.key ,b.key");
	assert_int_equal(config_check(&cfg, ef), 0);
	config_for(&cfg, "a.pem", "a.key");
	assert_int_equal(config_check(&cfg, ef), 0);
	fclose(ef);
	assert_non_null(strstr(err, "tls_key_file"));
	assert_non_null(strstr(err, "tls_cert_file"));

	/* Keys and defaults. */
	config_defaults(&cfg);
	assert_int_equal(cfg.tls_session_cache_size, 20000);
	assert_int_equal(cfg.tls_session_timeout, 3600);
	ef = fmemopen(err, sizeof err, "w");
	assert_int_equal(config_set(&cfg, "tls_session_cache_size=0", ef), 0);
	assert_int_equal(config_set(&cfg, "tls_session_timeout=5m", ef), 0);
	assert_int_equal(cfg.tls_session_timeout, 300);
	assert_int_equal(config_set(&cfg, "tls_session_timeout=2d", ef), -1);
	assert_int_equal(config_set(&cfg, "tls_session_cache_size=1000001", ef), -1);
	fclose(ef);
}

/* ---- resumption --------------------------------------------------------- */

struct resume_job {
	WOLFSSL_CTX *cctx;
	WOLFSSL_SESSION *sess; /* in: resume this; out: the session made */
	int resumed;
	enum tls_status st;
};

static void *resume_thread(void *arg)
{
	struct resume_job *j = arg;
	struct link l;
	link_open(&l, j->cctx, j->sess, 0);
	j->st = link_handshake(&l);
	j->resumed = resumed(&l);
	if (!j->sess)
		j->sess = wolfSSL_get1_session(l.c);
	link_close(&l);
	return NULL;
}

static int run_in_thread(struct resume_job *j)
{
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, resume_thread, j), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	return j->st == TLS_OK ? j->resumed : -1;
}

static WOLFSSL_CTX *tls12_no_ticket(void)
{
	WOLFSSL_CTX *c = client_ctx(wolfTLSv1_2_client_method(), NULL, NULL);
	assert_int_equal(wolfSSL_CTX_NoTicketTLSv12(c), WOLFSSL_SUCCESS);
	return c;
}

static void test_resume_across_threads(void **state)
{
	(void)state;
	struct sesscache_stats before, after;
	tls_session_cache_stats(&before);
	WOLFSSL_CTX *cctx = tls12_no_ticket();
	struct resume_job j = {.cctx = cctx};
	assert_int_equal(run_in_thread(&j), 0); /* full, in one "shard" */
	assert_non_null(j.sess);
	assert_int_equal(run_in_thread(&j), 1); /* resumed in another */
	tls_session_cache_stats(&after);
	assert_int_equal(after.stores - before.stores, 1);
	assert_int_equal(after.hits - before.hits, 1);

	/* A reload keeps the cache: the session resumes on the new context. */
	make_current(both_certs, both_keys, 20000);
	assert_int_equal(run_in_thread(&j), 1);

	/* TLS 1.3 sessions are not stored (tickets resume them). */
	tls_session_cache_stats(&before);
	WOLFSSL_CTX *c13 = client_ctx(wolfTLS_client_method(), NULL, NULL);
	struct resume_job k = {.cctx = c13};
	assert_int_equal(run_in_thread(&k), 0);
	assert_int_equal(run_in_thread(&k), 1);
	tls_session_cache_stats(&after);
	assert_int_equal(after.stores, before.stores);
	wolfSSL_SESSION_free(k.sess);
	wolfSSL_CTX_free(c13);

	/* tls_session_cache_size = 0: no session-ID resumption on that context. */
	make_current(both_certs, both_keys, 0);
	assert_int_equal(run_in_thread(&j), 0);
	make_current(both_certs, both_keys, 20000);
	wolfSSL_SESSION_free(j.sess);
	wolfSSL_CTX_free(cctx);
}

/* RFC 5246 7.2.2: a connection ended by a fatal error is not resumed. */
static void test_fatal_error_forgets(void **state)
{
	(void)state;
	WOLFSSL_CTX *cctx = tls12_no_ticket();
	struct link l;
	link_open(&l, cctx, NULL, 0);
	assert_int_equal(link_handshake(&l), TLS_OK);
	WOLFSSL_SESSION *sess = wolfSSL_get1_session(l.c);
	struct sesscache_stats before, after;
	tls_session_cache_stats(&before);
	/* A record whose authentication tag fails. */
	const uint8_t bad[] = {23, 3,  3,  0,  32, 1,  2,  3,  4,  5,  6,  7,  8,
			       9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
			       22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
	memcpy(l.c2s.b, bad, sizeof bad);
	l.c2s.len = sizeof bad;
	uint8_t buf[64];
	size_t n;
	assert_int_equal(server_step(&l, false, buf, sizeof buf, &n), TLS_ERROR);
	printf("bad record: %s\n", tls_error(l.t));
	tls_session_cache_stats(&after);
	assert_int_equal(after.removed - before.removed, 1);
	link_close(&l);

	struct resume_job j = {.cctx = cctx, .sess = sess};
	assert_int_equal(run_in_thread(&j), 0); /* a full handshake */
	wolfSSL_SESSION_free(sess);
	wolfSSL_CTX_free(cctx);
}

enum { CLIENTS = 100, RESUMES = 3, SHARDS = 4 };

struct shard_job {
	WOLFSSL_CTX *cctx;
	WOLFSSL_SESSION **sess; /* CLIENTS of them, shared */
	pthread_barrier_t *round;
	unsigned id;
	unsigned attempts, resumed, failed;
};

/*
 * A record that fails its tag ends the session with a bad_record_mac alert
 * the client can read: sealed by record.c under the server's keys and next
 * sequence number (after the replies already sent), for each suite and
 * both versions, as a wolfSSL client checks it.
 */
static void test_bad_record_alert(void **state)
{
	(void)state;
	static const struct {
		int v13;
		const char *ciphers;
	} cases[] = {
	    {1, "TLS13-AES128-GCM-SHA256"},	   {1, "TLS13-AES256-GCM-SHA384"},
	    {1, "TLS13-CHACHA20-POLY1305-SHA256"}, {0, "ECDHE-ECDSA-AES128-GCM-SHA256"},
	    {0, "ECDHE-ECDSA-AES256-GCM-SHA384"},  {0, "ECDHE-ECDSA-CHACHA20-POLY1305"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		WOLFSSL_CTX *cctx = client_ctx(cases[i].v13 ? wolfTLSv1_3_client_method()
							    : wolfTLSv1_2_client_method(),
					       cases[i].ciphers, NULL);
		struct link l;
		link_open(&l, cctx, NULL, 0);
		assert_int_equal(link_handshake(&l), TLS_OK);
		/* A second reply, so the alert's sequence number is not the first. */
		assert_int_equal(tls_write(l.t, (const uint8_t *)"250 ok\r\n", 8), TLS_OK);
		uint8_t buf[64];
		size_t n = 0;
		server_step(&l, false, buf, 0, &n);
		assert_int_equal(wolfSSL_read(l.c, buf, sizeof buf), 8);
		/* A record whose tag is flipped. */
		assert_int_equal(wolfSSL_write(l.c, "NOOP\r\n", 6), 6);
		l.c2s.b[l.c2s.len - 1] ^= 1;
		assert_int_equal(server_step(&l, false, buf, sizeof buf, &n), TLS_ERROR);
		/* record.c names the alert; wolfSSL_read (a wolfSSL without the
		 * in-place path) says "verify mac problem" and sends it itself. */
		if (tls_in_place(l.t))
			assert_non_null(strstr(tls_error(l.t), "bad_record_mac"));
		/* The client reads the alert. */
		assert_true(wolfSSL_read(l.c, buf, sizeof buf) < 0);
		WOLFSSL_ALERT_HISTORY hist;
		assert_int_equal(wolfSSL_get_alert_history(l.c, &hist), WOLFSSL_SUCCESS);
		if (hist.last_rx.code != 20 || hist.last_rx.level != 2)
			fail_msg("%s: the client read alert %d level %d, want 20 level 2",
				 cases[i].ciphers, hist.last_rx.code, hist.last_rx.level);
		link_close(&l);
		wolfSSL_CTX_free(cctx);
	}
}

/* Shard id serves client i in round r when (i + r) % SHARDS == id: each
 * resumption lands on another shard than the connection before. */
static void *shard_thread(void *arg)
{
	struct shard_job *s = arg;
	for (unsigned r = 0; r <= RESUMES; r++) {
		for (unsigned i = 0; i < CLIENTS; i++) {
			if ((i + r) % SHARDS != s->id)
				continue;
			struct link l;
			link_open(&l, s->cctx, s->sess[i], 0);
			if (link_handshake(&l) != TLS_OK)
				s->failed++;
			if (r == 0) {
				s->sess[i] = wolfSSL_get1_session(l.c);
			} else {
				s->attempts++;
				s->resumed += resumed(&l) != 0;
			}
			link_close(&l);
		}
		pthread_barrier_wait(s->round);
	}
	return NULL;
}

static void test_hit_rate(void **state)
{
	(void)state;
	WOLFSSL_CTX *cctx = tls12_no_ticket();
	static WOLFSSL_SESSION *sess[CLIENTS];
	pthread_barrier_t round;
	pthread_barrier_init(&round, NULL, SHARDS);
	struct shard_job jobs[SHARDS];
	pthread_t th[SHARDS];
	struct sesscache_stats before, after;
	tls_session_cache_stats(&before);
	for (unsigned i = 0; i < SHARDS; i++) {
		jobs[i] = (struct shard_job){.cctx = cctx, .sess = sess, .round = &round, .id = i};
		assert_int_equal(pthread_create(&th[i], NULL, shard_thread, &jobs[i]), 0);
	}
	unsigned attempts = 0, ok = 0;
	for (unsigned i = 0; i < SHARDS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(jobs[i].failed, 0);
		attempts += jobs[i].attempts;
		ok += jobs[i].resumed;
	}
	tls_session_cache_stats(&after);
	uint64_t hits = after.hits - before.hits, misses = after.misses - before.misses;
	printf("%u clients x %u resumptions over %u threads: resumed %u of %u (%.1f%%); cache "
	       "hits=%llu misses=%llu stores=%llu evictions=%llu entries=%llu hit rate %.1f%%\n",
	       CLIENTS, RESUMES, SHARDS, ok, attempts, 100.0 * ok / attempts,
	       (unsigned long long)hits, (unsigned long long)misses,
	       (unsigned long long)(after.stores - before.stores),
	       (unsigned long long)(after.evictions - before.evictions),
	       (unsigned long long)after.entries, 100.0 * (double)hits / (double)(hits + misses));
	assert_int_equal(attempts, CLIENTS * RESUMES);
	assert_int_equal(ok, attempts);
	assert_int_equal(hits, attempts);
	for (unsigned i = 0; i < CLIENTS; i++)
		wolfSSL_SESSION_free(sess[i]);
	pthread_barrier_destroy(&round);
	wolfSSL_CTX_free(cctx);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_choice_memory),
	    cmocka_unit_test(test_choice_is_proved),
	    cmocka_unit_test(test_from_hello),
	    cmocka_unit_test(test_choice_s_client),
	    cmocka_unit_test(test_config),
	    cmocka_unit_test(test_resume_across_threads),
	    cmocka_unit_test(test_fatal_error_forgets),
	    cmocka_unit_test(test_bad_record_alert),
	    cmocka_unit_test(test_hit_rate),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
