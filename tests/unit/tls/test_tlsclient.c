/*
 * test_tlsclient.c - tls/tlsclient.c (the relay's and mxring-bench's TLS
 * client) against the server of tls/tls.c, both in memory.
 *
 * Certificates are made at start with `openssl` in a temporary folder: a
 * CA, the hub's certificate signed by it (CN and subjectAltName hub.test),
 * and another CA that signed nothing of this. Cases:
 *   - checks: no verification accepts anything; verify with the right CA
 *     and name succeeds; a wrong name fails with "certificate name
 *     mismatch"; another CA fails with "certificate verify failed";
 *   - SNI: the name is in the ClientHello when set, not for an address;
 *   - resumption: a second and a third session offered the saved session
 *     resume, under TLS 1.3 and TLS 1.2 (tickets and session IDs), with and
 *     without verification; a session of another context is not offered;
 *   - options tlsc_ctx_new refuses, each with its message.
 *
 * Usage: test_tlsclient (exits 77, skipped, without openssl on PATH).
 */
#include <errno.h>
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

#include "config.h"
#include "tls.h"
#include "tlsclient.h"

enum { PIPE_BYTES_MAX = 128 * 1024, ROUNDS_MAX = 64, READS_MAX = 16 };

static char dir[64];
static char ca_file[96], other_ca_file[96], hub_cert[96], hub_key[96];

/* ---- certificates ------------------------------------------------------- */

static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < sizeof cmd);
	if (system(cmd) != 0)
		fail_msg("failed: %s", cmd);
}

/* A self-signed P-256 CA: DIR/NAME.pem and DIR/NAME.key. */
static void make_ca(const char *name, const char *cn)
{
	sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 "
	   "-subj '/CN=%s' -keyout %s/%s.key -out %s/%s.pem 2>/dev/null",
	   cn, dir, name, dir, name);
}

/* The hub's P-256 certificate for hub.test, signed by DIR/ca. */
static void make_hub(void)
{
	sh("printf 'subjectAltName=DNS:hub.test\\nbasicConstraints=CA:FALSE\\n"
	   "keyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\n' >%s/hub.ext",
	   dir);
	sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=hub.test "
	   "-keyout %s/hub.key -out %s/hub.csr 2>/dev/null",
	   dir, dir);
	sh("openssl x509 -req -in %s/hub.csr -CA %s/ca.pem -CAkey %s/ca.key -set_serial 2 "
	   "-days 30 -extfile %s/hub.ext -out %s/hub.pem 2>/dev/null",
	   dir, dir, dir, dir, dir);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof dir, "/tmp/test_tlsclient.XXXXXX");
	assert_non_null(mkdtemp(dir));
	make_ca("ca", "mxring test CA");
	make_ca("other", "another test CA");
	make_hub();
	snprintf(ca_file, sizeof ca_file, "%s/ca.pem", dir);
	snprintf(other_ca_file, sizeof other_ca_file, "%s/other.pem", dir);
	snprintf(hub_cert, sizeof hub_cert, "%s/hub.pem", dir);
	snprintf(hub_key, sizeof hub_key, "%s/hub.key", dir);

	/* The server: tls/tls.c with the hub's certificate. */
	struct config cfg;
	config_defaults(&cfg);
	cfg.tls_security_level = TLS_LEVEL_MAY;
	snprintf(cfg.tls_cert_file, sizeof cfg.tls_cert_file, "%s", hub_cert);
	snprintf(cfg.tls_key_file, sizeof cfg.tls_key_file, "%s", hub_key);
	char err[512] = "";
	FILE *ef = fmemopen(err, sizeof err, "w");
	struct tls_ctx *ctx;
	int rc = tls_ctx_new(&cfg, &ctx, ef);
	fclose(ef);
	if (rc != 0)
		fail_msg("tls_ctx_new: %s", err);
	tls_set_current(ctx);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tls_set_current(NULL);
	sh("rm -f %s/ca.pem %s/ca.key %s/other.pem %s/other.key %s/hub.pem %s/hub.key %s/hub.csr "
	   "%s/hub.ext",
	   dir, dir, dir, dir, dir, dir, dir, dir);
	rmdir(dir);
	return 0;
}

/* ---- a tlsc_conn and a tls_conn joined in memory ------------------------ */

struct pair {
	struct tlsc_conn *c; /* owned */
	struct tls_conn *s;  /* owned */
	size_t c2s_len, s2c_len;
	uint8_t c2s[PIPE_BYTES_MAX], s2c[PIPE_BYTES_MAX];
	uint8_t plain[TLS_PLAIN_BUF];
};

static void take(uint8_t *b, size_t *len, size_t n)
{
	assert_true(n <= *len);
	memmove(b, b + n, *len - n);
	*len -= n;
}

static void pair_open(struct pair *p, struct tlsc_ctx *cctx, struct tlsc_session *resume)
{
	memset(p, 0, sizeof *p);
	p->c = tlsc_conn_new(cctx, resume);
	assert_non_null(p->c);
	struct tls_ctx *sctx = tls_current();
	p->s = tls_conn_new(sctx);
	tls_ctx_unref(sctx);
	assert_non_null(p->s);
}

static void pair_close(struct pair *p)
{
	tlsc_conn_free(p->c);
	tls_conn_free(p->s);
}

/* Moves the client's output to the server's input, as a send would. */
static void client_send(struct pair *p)
{
	size_t len;
	const uint8_t *out = tlsc_output(p->c, &len);
	assert_true(p->c2s_len + len <= sizeof p->c2s);
	memcpy(p->c2s + p->c2s_len, out, len);
	p->c2s_len += len;
	tlsc_output_consumed(p->c, len);
}

/* Hands the client what the server wrote; moves the client's output. */
static enum tlsc_status client_step(struct pair *p, bool handshake, uint8_t *buf, size_t cap,
				    size_t *n)
{
	tlsc_input(p->c, p->s2c, p->s2c_len);
	enum tlsc_status st = handshake ? tlsc_handshake(p->c) : tlsc_read(p->c, buf, cap, n);
	take(p->s2c, &p->s2c_len, tlsc_input_used(p->c));
	client_send(p);
	return st;
}

/* Hands the server what the client wrote; moves the server's output. */
static enum tls_status server_step(struct pair *p, bool handshake, size_t *n)
{
	struct tls_seg seg = {p->c2s, p->c2s_len};
	tls_input(p->s, &seg, 1);
	enum tls_status st =
	    handshake ? tls_handshake(p->s) : tls_read(p->s, p->plain, sizeof p->plain, n);
	take(p->c2s, &p->c2s_len, tls_input_used(p->s));
	size_t len;
	uint8_t *out = tls_output_take(p->s, &len);
	assert_true(p->s2c_len + len <= sizeof p->s2c);
	if (len)
		memcpy(p->s2c + p->s2c_len, out, len);
	p->s2c_len += len;
	free(out);
	return st;
}

/* Runs both handshakes: TLSC_OK once both finished, or the client's failure. */
static enum tlsc_status pair_handshake(struct pair *p)
{
	enum tlsc_status cs = TLSC_AGAIN;
	enum tls_status ss = TLS_AGAIN;
	for (int r = 0; r < ROUNDS_MAX && !(cs == TLSC_OK && ss == TLS_OK); r++) {
		if (cs != TLSC_OK) {
			cs = client_step(p, true, NULL, 0, NULL);
			if (cs == TLSC_ERROR || cs == TLSC_CLOSED)
				return cs;
		}
		if (ss != TLS_OK) {
			ss = server_step(p, true, NULL);
			if (ss == TLS_ERROR || ss == TLS_CLOSED)
				fail_msg("server handshake: %s", tls_error(p->s));
		}
	}
	assert_int_equal(cs, TLSC_OK);
	assert_int_equal(ss, TLS_OK);
	return cs;
}

/* One line each way, so the client takes in the server's TLS 1.3 ticket. */
static void pair_exchange(struct pair *p)
{
	assert_int_equal(tlsc_write(p->c, (const uint8_t *)"EHLO a\r\n", 8), TLSC_OK);
	client_send(p);
	size_t n = 0;
	assert_int_equal(server_step(p, false, &n), TLS_OK);
	assert_int_equal(n, 8);
	assert_memory_equal(p->plain, "EHLO a\r\n", 8);
	assert_int_equal(tls_write(p->s, (const uint8_t *)"250 ok\r\n", 8), TLS_OK);
	server_step(p, false, &n); /* moves the output */
	uint8_t buf[64];
	n = 0;
	for (int r = 0; r < READS_MAX && n == 0; r++)
		assert_int_not_equal(client_step(p, false, buf, sizeof buf, &n), TLSC_ERROR);
	assert_int_equal(n, 8);
	assert_memory_equal(buf, "250 ok\r\n", 8);
}

static struct tlsc_ctx *client_ctx(const struct tlsc_opts *o)
{
	struct tlsc_ctx *c = NULL;
	char err[256] = "";
	if (tlsc_ctx_new(o, &c, err, sizeof err) != 0)
		fail_msg("tlsc_ctx_new: %s", err);
	return c;
}

/* ---- checks of the server ---------------------------------------------- */

struct check_case {
	const char *what;
	bool verify;
	const char *ca; /* "ca", "other" or NULL */
	const char *name;
	const char *error; /* NULL: the handshake succeeds; else in tlsc_error's text */
};

static void test_checks(void **state)
{
	(void)state;
	static const struct check_case cases[] = {
	    {"no verification", false, NULL, NULL, NULL},
	    {"no verification, wrong name, other CA", false, "other", "mx.other.test", NULL},
	    {"verify: right CA and name", true, "ca", "hub.test", NULL},
	    {"verify: wrong name", true, "ca", "mx.other.test", "certificate name mismatch"},
	    {"verify: a name that only ends like it", true, "ca", "xhub.test",
	     "certificate name mismatch"},
	    {"verify: another CA", true, "other", "hub.test", "certificate verify failed"},
	};
	for (int v = 12; v <= 13; v++)
		for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
			const struct check_case *k = &cases[i];
			const char *ca = !k->ca			    ? NULL
					 : strcmp(k->ca, "ca") == 0 ? ca_file
								    : other_ca_file;
			struct tlsc_opts o = {.version = v,
					      .verify = k->verify,
					      .ca_file = ca,
					      .server_name = k->name};
			struct tlsc_ctx *cctx = client_ctx(&o);
			struct pair *p = malloc(sizeof *p);
			assert_non_null(p);
			pair_open(p, cctx, NULL);
			enum tlsc_status st = pair_handshake(p);
			char why[256], d[64];
			tlsc_error(p->c, why, sizeof why);
			printf("TLS 1.%d %-40s %s\n", v - 10, k->what,
			       st == TLSC_OK ? tlsc_describe(p->c, d, sizeof d) : why);
			if (!k->error) {
				if (st != TLSC_OK)
					fail_msg("%s: %s", k->what, why);
				assert_int_equal(tlsc_verified(p->c), k->verify);
				assert_false(tlsc_resumed(p->c));
				assert_non_null(strstr(tlsc_describe(p->c, d, sizeof d),
						       v == 13 ? "TLSv1.3" : "TLSv1.2"));
				pair_exchange(p);
			} else {
				assert_int_equal(st, TLSC_ERROR);
				assert_false(tlsc_verified(p->c));
				if (!strstr(why, k->error))
					fail_msg("%s: \"%s\" does not say \"%s\"", k->what, why,
						 k->error);
			}
			pair_close(p);
			free(p);
			tlsc_ctx_free(cctx);
		}
}

/* The first flight names the server when server_name is a DNS name. */
static void test_sni(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		bool sent;
	} cases[] = {
	    {"hub.test", true}, {NULL, false}, {"192.0.2.7", false}, {"2001:db8::7", false}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct tlsc_opts o = {.server_name = cases[i].name};
		struct tlsc_ctx *cctx = client_ctx(&o);
		struct tlsc_conn *c = tlsc_conn_new(cctx, NULL);
		assert_non_null(c);
		tlsc_input(c, NULL, 0);
		assert_int_equal(tlsc_handshake(c), TLSC_AGAIN);
		size_t len;
		const uint8_t *hello = tlsc_output(c, &len);
		assert_true(len > 0);
		const char *look = cases[i].name ? cases[i].name : "hub.test";
		bool found = memmem(hello, len, look, strlen(look)) != NULL;
		assert_int_equal(found, cases[i].sent);
		tlsc_conn_free(c);
		tlsc_ctx_free(cctx);
	}
}

/* ---- resumption ---------------------------------------------------------- */

struct resume_case {
	int version; /* 12, 13 or 0 (the server picks 1.3) */
	enum tlsc_resume resume;
	bool verify;
};

/* A full handshake, then two sessions that resume the one it saved. */
static void test_resume(void **state)
{
	(void)state;
	static const struct resume_case cases[] = {
	    {13, TLSC_RESUME_TICKETS, false}, {13, TLSC_RESUME_TICKETS, true},
	    {12, TLSC_RESUME_TICKETS, false}, {12, TLSC_RESUME_TICKETS, true},
	    {12, TLSC_RESUME_IDS, false},     {0, TLSC_RESUME_TICKETS, false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct resume_case *k = &cases[i];
		struct tlsc_opts o = {.version = k->version,
				      .resume = k->resume,
				      .verify = k->verify,
				      .ca_file = k->verify ? ca_file : NULL,
				      .server_name = "hub.test"};
		struct tlsc_ctx *cctx = client_ctx(&o);
		struct tlsc_session *slot = NULL;
		struct pair *p = malloc(sizeof *p);
		assert_non_null(p);
		for (int n = 0; n < 3; n++) {
			pair_open(p, cctx, slot);
			assert_int_equal(pair_handshake(p), TLSC_OK);
			pair_exchange(p);
			char d[64];
			printf("version %d resume %d verify %d, session %d: %s%s\n", k->version,
			       (int)k->resume, (int)k->verify, n, tlsc_describe(p->c, d, sizeof d),
			       tlsc_resumed(p->c) ? " resumed" : "");
			assert_int_equal(tlsc_resumed(p->c), n > 0);
			assert_int_equal(tlsc_verified(p->c), k->verify);
			tlsc_session_save(p->c, &slot);
			assert_non_null(slot);
			pair_close(p);
		}
		/* The same options in another context: its own sessions only. */
		struct tlsc_ctx *other = client_ctx(&o);
		pair_open(p, other, slot);
		assert_int_equal(pair_handshake(p), TLSC_OK);
		assert_false(tlsc_resumed(p->c));
		pair_close(p);
		free(p);
		tlsc_session_free(slot);
		tlsc_ctx_free(other);
		tlsc_ctx_free(cctx);
	}
}

/* With TLSC_RESUME_NONE a saved session is not offered. */
static void test_resume_none(void **state)
{
	(void)state;
	struct tlsc_opts o = {.version = 13, .resume = TLSC_RESUME_NONE};
	struct tlsc_ctx *cctx = client_ctx(&o);
	struct tlsc_session *slot = NULL;
	struct pair *p = malloc(sizeof *p);
	assert_non_null(p);
	for (int n = 0; n < 2; n++) {
		pair_open(p, cctx, slot);
		assert_int_equal(pair_handshake(p), TLSC_OK);
		pair_exchange(p);
		assert_false(tlsc_resumed(p->c));
		tlsc_session_save(p->c, &slot);
		pair_close(p);
	}
	free(p);
	tlsc_session_free(slot);
	tlsc_ctx_free(cctx);
}

/* ---- options refused ----------------------------------------------------- */

static void test_bad_opts(void **state)
{
	(void)state;
	char missing[128], long_name[TLSC_NAME_MAX + 2];
	snprintf(missing, sizeof missing, "%s/missing.pem", dir);
	memset(long_name, 'a', sizeof long_name - 1);
	long_name[sizeof long_name - 1] = '\0';
	const struct {
		struct tlsc_opts o;
		const char *error;
	} cases[] = {
	    {{.version = 11}, "TLS version 11"},
	    {{.resume = (enum tlsc_resume)7}, "unknown resumption mode"},
	    {{.verify = true, .ca_file = ca_file}, "verify needs the server name"},
	    {{.verify = true, .server_name = "hub.test"}, "verify needs a CA file"},
	    {{.verify = true, .ca_file = missing, .server_name = "hub.test"}, "cannot load CAs"},
	    {{.verify = true, .ca_file = hub_key, .server_name = "hub.test"}, "cannot load CAs"},
	    {{.server_name = "hub test"}, "space or control"},
	    {{.server_name = long_name}, "longer than"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct tlsc_ctx *c = (struct tlsc_ctx *)&c;
		char err[256] = "";
		assert_int_equal(tlsc_ctx_new(&cases[i].o, &c, err, sizeof err), -EINVAL);
		assert_null(c);
		printf("refused: %s\n", err);
		if (!strstr(err, cases[i].error))
			fail_msg("\"%s\" does not say \"%s\"", err, cases[i].error);
	}
}

int main(void)
{
	if (system("openssl version >/dev/null 2>&1") != 0) {
		printf("openssl is not on PATH: skipped\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_checks),   cmocka_unit_test(test_sni),
	    cmocka_unit_test(test_resume),   cmocka_unit_test(test_resume_none),
	    cmocka_unit_test(test_bad_opts),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
