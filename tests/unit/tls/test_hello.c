/*
 * test_hello.c - the ClientHello scanner (tls/hello.c).
 *
 * Table-driven over real ClientHellos (tests/fuzz/corpus/hello/, written by
 * tests/fuzz/capture_hellos.py from openssl s_client and Python's ssl):
 * what each one offers and whether it accepts an ECDSA P-256 or P-384
 * certificate. Each is also fed cut at every byte (MORE until whole), re-cut
 * into records of every size from 1 byte, and followed by other bytes. Then
 * hand-made breakages (wrong record or message type, lengths that disagree,
 * a duplicate extension, oversize) are BAD, and a ClientHello without
 * extensions is read as TLS 1.2.
 *
 * Usage: test_hello CORPUS_DIR
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hello.h"

static const char *corpus_dir;

enum { HELLO_FILE_MAX = 4096 };

struct seed {
	const char *file;
	bool tls13;
	bool p256; /* hello_accepts_ecdsa(P-256) */
	bool p384;
	bool has_sigalgs;
	bool ecdsa_suites; /* some TLS 1.2 ECDHE_ECDSA AEAD suite */
};

static const struct seed seeds[] = {
    {"openssl-default", true, true, true, true, true},
    {"openssl-tls12", false, true, true, true, true},
    {"openssl-tls13", true, true, true, true, false},
    {"openssl-tls13-rsa-pss", true, false, false, true, false},
    {"openssl-rsa-sigalgs", true, false, false, true, false},
    {"openssl-tls12-rsa-suites", false, false, false, true, false},
    {"openssl-tls12-rsa-sigalgs", false, false, false, true, false},
    {"openssl-tls12-ecdsa-only", false, true, true, true, true},
    {"openssl-tls13-p384-only", true, false, true, true, false},
    {"openssl-tls12-nogroups-p256", false, false, true, true, true},
    {"openssl-tls12-noticket", false, true, true, true, true},
    {"python-ssl-default", true, true, true, true, true},
    {"r-openssl-default-7-byte-records", true, true, true, true, true},
};

static size_t load(const char *name, uint8_t *buf)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", corpus_dir, name);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("%s: cannot open", path);
	size_t n = fread(buf, 1, HELLO_FILE_MAX, f);
	fclose(f);
	assert_true(n > 0 && n < HELLO_FILE_MAX);
	return n;
}

/* The handshake message of a one-record hello, re-cut into records of size bytes. */
static size_t recut(const uint8_t *in, size_t len, size_t size, uint8_t *out, size_t cap)
{
	size_t msg = (size_t)in[3] << 8 | in[4], o = 0;
	assert_true(msg + 5 <= len);
	for (size_t i = 0; i < msg; i += size) {
		size_t k = msg - i < size ? msg - i : size;
		assert_true(o + 5 + k <= cap);
		out[o++] = 22;
		out[o++] = 3;
		out[o++] = 1;
		out[o++] = (uint8_t)(k >> 8);
		out[o++] = (uint8_t)k;
		memcpy(out + o, in + 5 + i, k);
		o += k;
	}
	return o;
}

static void check_seed(const struct seed *s, const struct hello_info *h)
{
	assert_int_equal(h->tls13, s->tls13);
	assert_int_equal(hello_accepts_ecdsa(h, HELLO_P256), s->p256);
	assert_int_equal(hello_accepts_ecdsa(h, HELLO_P384), s->p384);
	assert_int_equal(h->has_sigalgs, s->has_sigalgs);
	assert_int_equal(h->ecdsa_suites > 0, s->ecdsa_suites);
	assert_int_equal(h->legacy_version, 0x0303);
	assert_true(h->nsuites > 0);
}

static void test_seeds(void **state)
{
	(void)state;
	static uint8_t buf[HELLO_FILE_MAX], big[8 * HELLO_FILE_MAX];
	for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
		const struct seed *s = &seeds[i];
		size_t n = load(s->file, buf);
		struct hello_info h, h2;
		assert_int_equal(hello_scan(buf, n, &h), HELLO_OK);
		printf("%-34s %4zu bytes tls13=%d ecdsa-p256=%d suites=%u (ecdsa %u, rsa %u)\n",
		       s->file, n, h.tls13, hello_accepts_ecdsa(&h, HELLO_P256), h.nsuites,
		       h.ecdsa_suites, h.rsa_suites);
		check_seed(s, &h);
		assert_int_equal(h.bytes, n);

		/* Cut at every byte: the scanner asks for more until the end. */
		for (size_t k = 0; k < n; k++)
			assert_int_equal(hello_scan(buf, k, &h2), HELLO_MORE);

		/* Other bytes after it change nothing. */
		memcpy(big, buf, n);
		memset(big + n, 0x16, 100);
		assert_int_equal(hello_scan(big, n + 100, &h2), HELLO_OK);
		assert_memory_equal(&h, &h2, sizeof h);

		/* The same message in records of every size. */
		if (((size_t)buf[3] << 8 | buf[4]) + 5 == n) {
			for (size_t size = 1; size <= 64; size++) {
				size_t m = recut(buf, n, size, big, sizeof big);
				assert_int_equal(hello_scan(big, m, &h2), HELLO_OK);
				check_seed(s, &h2);
				assert_int_equal(h2.bytes, m);
			}
		}
	}
}

static void test_cut_seed(void **state)
{
	(void)state;
	uint8_t buf[HELLO_FILE_MAX];
	struct hello_info h;
	size_t n = load("r-openssl-default-cut-100", buf);
	assert_int_equal(hello_scan(buf, n, &h), HELLO_MORE);
}

/* A minimal TLS 1.2 ClientHello: one suite, no extensions. */
static size_t minimal(uint8_t *b, uint16_t suite)
{
	size_t o = 0;
	const uint8_t rec[] = {22, 3, 1, 0, 0};
	memcpy(b, rec, 5);
	o = 5;
	b[o++] = 1; /* client_hello */
	b[o++] = 0;
	b[o++] = 0;
	b[o++] = 0; /* length below */
	b[o++] = 3;
	b[o++] = 3;
	memset(b + o, 0xab, 32);
	o += 32;
	b[o++] = 0; /* session id */
	b[o++] = 0;
	b[o++] = 2;
	b[o++] = (uint8_t)(suite >> 8);
	b[o++] = (uint8_t)suite;
	b[o++] = 1; /* compression: null */
	b[o++] = 0;
	size_t body = o - 9;
	b[7] = (uint8_t)(body >> 8);
	b[8] = (uint8_t)body;
	b[3] = (uint8_t)((o - 5) >> 8);
	b[4] = (uint8_t)(o - 5);
	return o;
}

static void test_no_extensions(void **state)
{
	(void)state;
	uint8_t b[128];
	struct hello_info h;
	size_t n = minimal(b, 0xc02b);
	assert_int_equal(hello_scan(b, n, &h), HELLO_OK);
	assert_false(h.tls13);
	assert_false(h.has_sigalgs);
	assert_false(h.has_groups);
	assert_int_equal(h.ecdsa_suites, 1);
	assert_true(hello_accepts_ecdsa(&h, HELLO_P256));
	n = minimal(b, 0xc02f);
	assert_int_equal(hello_scan(b, n, &h), HELLO_OK);
	assert_false(hello_accepts_ecdsa(&h, HELLO_P256));
	assert_int_equal(h.rsa_suites, 1);
}

/* Offsets into openssl-tls12 (one record). */
static void test_broken(void **state)
{
	(void)state;
	uint8_t good[HELLO_FILE_MAX], b[HELLO_FILE_MAX];
	struct hello_info h;
	size_t n = load("openssl-tls12", good);
	size_t suites_at = 44 + good[43]; /* after the session id */
	assert_true(good[43] <= 32);

	struct {
		const char *what;
		size_t at;
		uint8_t val;
	} cases[] = {
	    {"record type 23", 0, 23},
	    {"record major version 2", 1, 2},
	    {"record length 0", 3, 0},
	    {"handshake type 2", 5, 2},
	    {"client_version 2.0", 9, 2},
	    {"session id of 33", 43, 33},
	    {"odd suites length", suites_at + 1, 0x0b},
	    {"no suites", suites_at + 1, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memcpy(b, good, n);
		if (cases[i].at == 3)
			b[4] = 0;
		b[cases[i].at] = cases[i].val;
		enum hello_result r = hello_scan(b, n, &h);
		if (r != HELLO_BAD)
			fail_msg("%s: verdict %d", cases[i].what, (int)r);
	}

	/* Where the extensions and signature_algorithms start. */
	size_t comp_at = suites_at + 2 + ((size_t)good[suites_at] << 8 | good[suites_at + 1]);
	size_t ext_at = comp_at + 1 + good[comp_at];
	size_t x = ext_at + 2, sig_at = 0, sig_len = 0;
	while (x + 4 <= n) {
		size_t type = (size_t)good[x] << 8 | good[x + 1];
		size_t len = (size_t)good[x + 2] << 8 | good[x + 3];
		if (type == 13) {
			sig_at = x;
			sig_len = 4 + len;
		}
		x += 4 + len;
	}
	assert_int_equal(x, n);
	assert_true(sig_at > 0);

	/* One more extension, of 1 byte that is not in this record: the record
	 * ends inside the ClientHello, so more is needed; BAD when the next
	 * record is not a handshake one. */
	memcpy(b, good, n);
	const uint8_t grease[] = {0x7a, 0x7a, 0, 1};
	memcpy(b + n, grease, sizeof grease);
	size_t rl = ((size_t)b[3] << 8 | b[4]) + 4, hl = ((size_t)b[7] << 8 | b[8]) + 5;
	size_t xl = ((size_t)b[ext_at] << 8 | b[ext_at + 1]) + 5;
	b[3] = (uint8_t)(rl >> 8), b[4] = (uint8_t)rl;
	b[7] = (uint8_t)(hl >> 8), b[8] = (uint8_t)hl;
	b[ext_at] = (uint8_t)(xl >> 8), b[ext_at + 1] = (uint8_t)xl;
	n += sizeof grease;
	assert_int_equal(hello_scan(b, n, &h), HELLO_MORE);
	const uint8_t alert[] = {21, 3, 3, 0, 2, 2, 40};
	memcpy(b + n, alert, sizeof alert);
	assert_int_equal(hello_scan(b, n + sizeof alert, &h), HELLO_BAD);
	/* ... and OK when it is (a ClientHello over two records). */
	const uint8_t one[] = {22, 3, 3, 0, 1, 0};
	memcpy(b + n, one, sizeof one);
	assert_int_equal(hello_scan(b, n + sizeof one, &h), HELLO_OK);
	assert_int_equal(h.bytes, n + sizeof one);
	n -= sizeof grease;

	/* Extensions length that disagrees with the handshake length. */
	memcpy(b, good, n);
	b[ext_at + 1]--;
	assert_int_equal(hello_scan(b, n, &h), HELLO_BAD);

	/* ECDSA suites offered, but signature_algorithms without ECDSA: RSA. */
	memcpy(b, good, n);
	for (size_t i = sig_at + 6; i + 1 < sig_at + sig_len; i += 2)
		if (b[i + 1] == 3)
			b[i + 1] = 1; /* (hash, ecdsa) -> (hash, rsa) */
	assert_int_equal(hello_scan(b, n, &h), HELLO_OK);
	assert_true(h.ecdsa_suites > 0);
	assert_false(h.ecdsa_tls12);
	assert_false(hello_accepts_ecdsa(&h, HELLO_P256));

	/* A second signature_algorithms extension. */
	memcpy(b, good, n);
	memcpy(b + n, b + sig_at, sig_len);
	size_t m = n + sig_len;
	size_t ext_len = ((size_t)b[ext_at] << 8 | b[ext_at + 1]) + sig_len;
	b[ext_at] = (uint8_t)(ext_len >> 8);
	b[ext_at + 1] = (uint8_t)ext_len;
	size_t body = ((size_t)b[7] << 8 | b[8]) + sig_len, rec = body + 4;
	b[7] = (uint8_t)(body >> 8);
	b[8] = (uint8_t)body;
	b[3] = (uint8_t)(rec >> 8);
	b[4] = (uint8_t)rec;
	assert_int_equal(hello_scan(b, m, &h), HELLO_BAD);
}

static void test_oversize(void **state)
{
	(void)state;
	/* A ClientHello of 60000 bytes (one big extension) in full records:
	 * MORE until the cap, then BAD. */
	static uint8_t b[HELLO_INPUT_MAX + 100];
	const size_t body = 60000, ext = body - (2 + 32 + 1 + 4 + 2 + 2);
	memset(b, 0, sizeof b);
	uint8_t head[] = {22,
			  3,
			  1,
			  0x40,
			  0x00, /* a record of 16384 */
			  1,
			  (uint8_t)(body >> 16),
			  (uint8_t)(body >> 8),
			  (uint8_t)body,
			  3,
			  3};
	memcpy(b, head, sizeof head);
	size_t o = sizeof head + 32;
	uint8_t rest[] = {0,
			  /* session id */ 0,
			  2,
			  0xc0,
			  0x2b,
			  1,
			  0,
			  (uint8_t)(ext >> 8),
			  (uint8_t)ext,
			  0x77,
			  0x77,
			  (uint8_t)((ext - 4) >> 8),
			  (uint8_t)(ext - 4)};
	memcpy(b + o, rest, sizeof rest);
	b[16389] = 22, b[16390] = 3, b[16391] = 1, b[16392] = 0x40, b[16393] = 0;
	struct hello_info h;
	assert_int_equal(hello_scan(b, 1000, &h), HELLO_MORE);
	assert_int_equal(hello_scan(b, HELLO_INPUT_MAX - 1, &h), HELLO_MORE);
	assert_int_equal(hello_scan(b, HELLO_INPUT_MAX, &h), HELLO_BAD);
	assert_int_equal(hello_scan(b, sizeof b, &h), HELLO_BAD);
	/* Nothing at all, or a lone byte, asks for more. */
	assert_int_equal(hello_scan(b, 0, &h), HELLO_MORE);
	assert_int_equal(hello_scan(b, 1, &h), HELLO_MORE);
	/* Plaintext SMTP instead of a ClientHello. */
	assert_int_equal(hello_scan((const uint8_t *)"EHLO x\r\n", 8, &h), HELLO_BAD);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: test_hello CORPUS_DIR\n");
		return 2;
	}
	corpus_dir = argv[1];
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_seeds),	  cmocka_unit_test(test_cut_seed),
	    cmocka_unit_test(test_no_extensions), cmocka_unit_test(test_broken),
	    cmocka_unit_test(test_oversize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
