/*
 * test_record.c - tls/record.c: the client's TLS 1.3 and 1.2 records, opened in place.
 *
 * Known answer (RFC 8448 section 3, "Simple 1-RTT Handshake"): from the
 * client application traffic secret printed there, rx_init derives the
 * RFC's key and iv, and rx_open gives back the 50-octet payload of the
 * client's application_data record, then the close_notify of its alert
 * record, with the input cut at every byte.
 *
 * Interop: a wolfSSL TLS 1.3 client and server in memory; the server's
 * secret callback hands over the client's traffic secret, as tls.c's does.
 * For each of the three suites the client writes records of 1 to 16384
 * bytes, updates its keys twice (asking for ours the first time only, as
 * wolfSSL does) and closes. What it wrote is opened cut into segments at
 * every offset (a short flight) or at random offsets from a fixed seed (a
 * long one), and fed as a growing prefix: RX_MORE until a record is whole,
 * pos only ever at the end of a whole record, the plaintext what was
 * written, RX_KEY_UPDATE_ASKED once, RX_CLOSE_NOTIFY at the end.
 *
 * Sealed here with wolfCrypt under the key and iv rx_init derived, one
 * table over the three suites: broken headers, lengths at and over the
 * limits, padding, zero-length data, alerts, KeyUpdates good and bad, a bad
 * tag (its plaintext never stays in out). Then no room (RX_FULL consumes
 * nothing), the cap on key updates, the sequence number limit, rx_init's
 * checks, and the loop bounds: 100000 minimum-size records in one call, a
 * record in 1-byte segments.
 *
 * TLS 1.2 (RFC 5246 6.2.3.3, RFC 5288, RFC 7905): a wolfSSL TLS 1.2 client
 * and server in memory, for ECDHE-ECDSA with AES-128-GCM, AES-256-GCM and
 * ChaCha20-Poly1305; the client's write key, IV and next sequence number
 * taken from the server with the getters tls.c uses (wolfSSL's
 * ATOMIC_USER; skipped without it), after a full handshake and after an
 * abbreviated one that resumes with a session ticket. Its records (1 to
 * 16384 bytes, longer writes split by wolfSSL, the close_notify alert)
 * are opened cut as above. Sealed here under a fixed key and IV and a
 * sequence number with every byte set: bad tag, explicit nonce or
 * sequence number, outer types other than data and alert (not decrypted),
 * versions, lengths at and over the limits, zero-length data, warnings
 * ignored, fatal alerts, close_notify; rx_init_tls12's checks, RX_FULL,
 * the sequence number limit and the loop bounds.
 *
 * The two versions share the sealer, the case runner, the flight driver
 * and its cuts: what differs is a table, or a branch on tls12.
 *
 * Usage: test_record
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "record.h"
#include "tlstest.h"

#define HEX_MAX	    512		 /* bytes in a hex string of a table */
#define WIRE_MAX    (1u << 20)	 /* what a flight may write */
#define PLAIN_MAX   (512u << 10) /* the application data of a flight */
#define RECORDS_MAX 1024u	 /* records in a flight */
#define SEGS_MAX    4096u	 /* segments of one rx_open call */
#define OUT_MAX	    (PLAIN_MAX + RX_INNER_MAX)
#define BIG_RECORDS 100000u /* for the bound test */
#define ANY_ALERT   0xff    /* table: any alert of RX_BAD will do */

/* The sealed TLS 1.2 records' first sequence number: every byte counts in the AAD. */
#define SEQ12 0x0102030405060708ull

static const enum rx_suite suites[] = {RX_AES_128_GCM_SHA256, RX_AES_256_GCM_SHA384,
				       RX_CHACHA20_POLY1305_SHA256};
static const char *const suite_names[] = {"", "TLS13-AES128-GCM-SHA256", "TLS13-AES256-GCM-SHA384",
					  "TLS13-CHACHA20-POLY1305-SHA256"};
/* The TLS 1.2 suites of the same AEADs, with the test's ECDSA certificate. */
static const char *const suite_names12[] = {"", "ECDHE-ECDSA-AES128-GCM-SHA256",
					    "ECDHE-ECDSA-AES256-GCM-SHA384",
					    "ECDHE-ECDSA-CHACHA20-POLY1305"};

/* A fixed secret for the sealed tests (the first 32 bytes for SHA-256 suites). */
static const uint8_t secret48[48] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f};

static uint8_t wire_buf[WIRE_MAX], plain_buf[PLAIN_MAX], out_buf[OUT_MAX];

static size_t hash_len(enum rx_suite s)
{
	return s == RX_AES_256_GCM_SHA384 ? 48 : 32;
}

/* Hex digits (spaces allowed between bytes) into out; the byte count. */
static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; s[i] != '\0' && i < 4 * HEX_MAX;) {
		if (s[i] == ' ') {
			i++;
			continue;
		}
		unsigned v;
		assert_int_equal(sscanf(s + i, "%2x", &v), 1);
		assert_true(n < cap);
		out[n++] = (uint8_t)v;
		i += 2;
	}
	return n;
}

/* splitmix64: the fixed-seed randomness of the split points and data. */
static uint64_t rnd(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- sealing as a client would ------------------------------------------ */

struct sealer {
	enum rx_suite suite;
	bool tls12;
	uint8_t key_len;
	uint8_t key[32];
	uint8_t iv[12]; /* TLS 1.2 AES-GCM: the 4-byte salt */
	uint64_t seq;
};

/* Seals with the version, keys and sequence number rx opens with now. */
static void sealer_from(struct sealer *s, const struct rx *rx)
{
	s->suite = (enum rx_suite)rx->suite;
	s->tls12 = rx->tls12;
	s->key_len = rx->key_len;
	memcpy(s->key, rx->key, sizeof(s->key));
	memcpy(s->iv, rx->iv, sizeof(s->iv));
	s->seq = rx->seq;
}

/* Bytes of explicit nonce after the header: TLS 1.2 AES-GCM's 8. */
static size_t explicit_len(const struct sealer *s)
{
	return s->tls12 && s->suite != RX_CHACHA20_POLY1305_SHA256 ? 8 : 0;
}

/* The suite's AEAD: ct and tag of in under nonce and aad. */
static void aead_seal(const struct sealer *s, const uint8_t *nonce, const uint8_t *aad,
		      size_t aad_len, const uint8_t *in, size_t len, uint8_t *ct, uint8_t *tag)
{
	if (s->suite == RX_CHACHA20_POLY1305_SHA256) {
		assert_int_equal(wc_ChaCha20Poly1305_Encrypt(s->key, nonce, aad, (word32)aad_len,
							     in, (word32)len, ct, tag),
				 0);
		return;
	}
	Aes aes;
	assert_int_equal(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
	assert_int_equal(wc_AesGcmSetKey(&aes, s->key, s->key_len), 0);
	assert_int_equal(wc_AesGcmEncrypt(&aes, ct, in, (word32)len, nonce, 12, tag, RX_TAG, aad,
					  (word32)aad_len),
			 0);
	wc_AesFree(&aes);
}

/* How a sealed record or a case of the tables is spoilt or followed. */
enum {
	F_FLIP_TAG = 1,	   /* the tag's last byte */
	F_HEADER_ONLY = 2, /* a case: a header whose length field is len, nothing after it */
	F_FLIP_NONCE = 4,  /* TLS 1.2: the explicit nonce (ChaCha20: the first byte after it) */
	F_WRONG_SEQ = 8,   /* sealed under the sequence number after the right one */
	F_LEN_REL = 16,	   /* F_HEADER_ONLY: len + explicit nonce + tag */
	F_THEN_DATA = 32,  /* a case: a record of data "def" follows */
};

/*
 * One record under the next sequence number; its size. TLS 1.3 (RFC 8446
 * 5.2-5.3): payload is the inner plaintext, the AAD the header, the nonce
 * the IV xor the sequence number. TLS 1.2: payload is the plaintext, the
 * AAD seq | type | version | length (RFC 5246 6.2.3.3); AES-GCM's nonce is
 * salt | explicit, the explicit part sent after the header (RFC 5288 3;
 * here not the sequence number, which a receiver must not assume),
 * ChaCha20-Poly1305's the IV xor the sequence number (RFC 7905 2). flags:
 * F_FLIP_TAG, F_FLIP_NONCE and F_WRONG_SEQ.
 */
static size_t seal(struct sealer *s, uint8_t outer, uint16_t version, const uint8_t *payload,
		   size_t len, unsigned flags, uint8_t *out)
{
	size_t ex = explicit_len(s), rlen = ex + len + RX_TAG;
	assert_true(rlen <= 0xffff);
	if (!payload)
		payload = (const uint8_t *)""; /* wolfCrypt takes no NULL, even for 0 bytes */
	uint64_t seq = s->seq++ + (flags & F_WRONG_SEQ ? 1 : 0);
	out[0] = outer;
	out[1] = (uint8_t)(version >> 8);
	out[2] = (uint8_t)version;
	out[3] = (uint8_t)(rlen >> 8);
	out[4] = (uint8_t)rlen;
	uint8_t aad[13], nonce[12];
	size_t aad_len = RX_HEADER;
	memcpy(aad, out, RX_HEADER);
	if (s->tls12) {
		for (int i = 0; i < 8; i++)
			aad[i] = (uint8_t)(seq >> (56 - 8 * i));
		aad[8] = outer;
		aad[9] = (uint8_t)(version >> 8);
		aad[10] = (uint8_t)version;
		aad[11] = (uint8_t)(len >> 8);
		aad[12] = (uint8_t)len;
		aad_len = sizeof(aad);
	}
	memcpy(nonce, s->iv, sizeof(nonce));
	for (int i = 0; i < 8; i++) {
		if (ex)
			nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i)) ^ 0x5a;
		else
			nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
	}
	memcpy(out + RX_HEADER, nonce + 4, ex);
	uint8_t *ct = out + RX_HEADER + ex, *tag = ct + len;
	aead_seal(s, nonce, aad, aad_len, payload, len, ct, tag);
	if (flags & F_FLIP_TAG)
		tag[RX_TAG - 1] ^= 0x40;
	if (flags & F_FLIP_NONCE)
		out[RX_HEADER + (ex ? 7 : 0)] ^= 0x01;
	return RX_HEADER + rlen;
}

/* TLSInnerPlaintext (RFC 8446 5.2): content, type, pad zeros. Its size. */
static size_t inner_of(const uint8_t *content, size_t clen, uint8_t type, size_t pad, uint8_t *out)
{
	memmove(out, content, clen);
	out[clen] = type;
	memset(out + clen + 1, 0, pad);
	return clen + 1 + pad;
}

/* An application_data record of data (TLS 1.3: inner type 23, no padding), sealed. Its size. */
static size_t seal_data(struct sealer *s, const uint8_t *data, size_t len, uint8_t *out)
{
	static uint8_t inner[RX_INNER_MAX];
	if (s->tls12)
		return seal(s, 23, 0x0303, data, len, 0, out);
	assert_true(len < sizeof(inner));
	return seal(s, 23, 0x0303, inner, inner_of(data, len, 23, 0, inner), 0, out);
}

static size_t seal_text(struct sealer *s, const char *text, uint8_t *out)
{
	return seal_data(s, (const uint8_t *)text, strlen(text), out);
}

/*
 * rx under the sealed tests' fixed keys, from sequence number seq: TLS 1.3
 * from secret48, TLS 1.2 with the key and IV parts of it.
 */
static void rx_fixed(struct rx *rx, bool tls12, enum rx_suite suite, uint64_t seq)
{
	if (!tls12) {
		assert_int_equal(rx_init(rx, suite, secret48, hash_len(suite)), 0);
		rx->seq = seq;
		return;
	}
	size_t kl = suite == RX_AES_128_GCM_SHA256 ? 16 : 32;
	size_t il = suite == RX_CHACHA20_POLY1305_SHA256 ? 12 : 4;
	assert_int_equal(rx_init_tls12(rx, suite, secret48, kl, secret48 + 32, il, seq), 0);
}

/* ---- RFC 8448 section 3 ------------------------------------------------- */

/*
 * RFC 8448 section 3, "Simple 1-RTT Handshake": "{client} derive write
 * traffic keys for application data" (PRK, key expanded, iv expanded),
 * "{client} send application_data record" (payload, complete record) and
 * "{client} send alert record" (complete record: close_notify).
 */
static const char rfc8448_prk[] = "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52"
				  "87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5";
static const char rfc8448_key[] = "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51";
static const char rfc8448_iv[] = "5b 78 92 3d ee 08 57 90 33 e5 23 d9";
static const char rfc8448_payload[] =
    "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c"
    "1d 1e 1f 20 21 22 23 24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31";
static const char rfc8448_record[] =
    "17 03 03 00 43 a2 3f 70 54 b6 2c 94"
    "d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 bc ab 3f 2b"
    "98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62"
    "92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4";
static const char rfc8448_alert[] = "17 03 03 00 13 c9 87 27 60 65 56 66"
				    "b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3";

static void test_rfc8448(void **state)
{
	(void)state;
	uint8_t prk[32], key[16], iv[12], payload[50], wire[HEX_MAX], out[RX_INNER_MAX];
	assert_int_equal(unhex(rfc8448_prk, prk, sizeof(prk)), 32);
	assert_int_equal(unhex(rfc8448_key, key, sizeof(key)), 16);
	assert_int_equal(unhex(rfc8448_iv, iv, sizeof(iv)), 12);
	assert_int_equal(unhex(rfc8448_payload, payload, sizeof(payload)), 50);
	size_t rec = unhex(rfc8448_record, wire, sizeof(wire));
	assert_int_equal(rec, 72);
	size_t len = rec + unhex(rfc8448_alert, wire + rec, sizeof(wire) - rec);
	assert_int_equal(len, 72 + 24);

	struct rx rx;
	assert_int_equal(rx_init(&rx, RX_AES_128_GCM_SHA256, prk, sizeof(prk)), 0);
	assert_int_equal(rx.key_len, 16);
	assert_memory_equal(rx.key, key, 16);
	assert_memory_equal(rx.iv, iv, 12);

	/* The input cut in two at every byte: the same two records. */
	for (size_t cut = 0; cut <= len; cut++) {
		assert_int_equal(rx_init(&rx, RX_AES_128_GCM_SHA256, prk, sizeof(prk)), 0);
		size_t pos = 0, n = 0;
		uint8_t alert = 0xee;
		/* The application_data record alone first, then both. */
		size_t c1 = cut < rec ? cut : rec;
		struct tls_seg one[2] = {{wire, c1}, {wire + c1, rec - c1}};
		struct tls_seg two[2] = {{wire, cut}, {wire + cut, len - cut}};
		memset(out, 0xa5, sizeof(out));
		assert_int_equal(rx_open(&rx, one, 2, &pos, out, sizeof(out), &n, &alert), RX_MORE);
		assert_int_equal(alert, 0);
		assert_int_equal(pos, rec);
		assert_int_equal(n, 50);
		assert_memory_equal(out, payload, 50);
		assert_int_equal(rx.seq, 1);
		assert_int_equal(rx_open(&rx, two, 2, &pos, out, sizeof(out), &n, &alert),
				 RX_CLOSE_NOTIFY);
		assert_int_equal(alert, 0);
		assert_int_equal(pos, len);
		assert_int_equal(n, 50);
		assert_memory_equal(out, payload, 50);
		/* The alert's plaintext does not stay behind the data. */
		assert_int_equal(out[50], 0);
		assert_int_equal(out[51], 0);
		assert_int_equal(out[52], 0);
		assert_int_equal(out[53], 0xa5);
	}
	rx_wipe(&rx);
	uint8_t zero[sizeof(rx)];
	memset(zero, 0, sizeof(zero));
	assert_memory_equal(&rx, zero, sizeof(rx));
}

/* ---- names and set-up --------------------------------------------------- */

static void test_suite_names(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		enum rx_suite want;
	} cases[] = {
	    {"TLS13-AES128-GCM-SHA256", RX_AES_128_GCM_SHA256},
	    {"TLS_AES_128_GCM_SHA256", RX_AES_128_GCM_SHA256},
	    {"TLS13-AES256-GCM-SHA384", RX_AES_256_GCM_SHA384},
	    {"TLS_AES_256_GCM_SHA384", RX_AES_256_GCM_SHA384},
	    {"TLS13-CHACHA20-POLY1305-SHA256", RX_CHACHA20_POLY1305_SHA256},
	    {"TLS_CHACHA20_POLY1305_SHA256", RX_CHACHA20_POLY1305_SHA256},
	    {"TLS13-AES128-CCM-SHA256", 0},
	    {"ECDHE-ECDSA-AES128-GCM-SHA256", 0},
	    {"", 0},
	    {NULL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(rx_suite_by_name(cases[i].name), cases[i].want);
}

/*
 * A session set up opens an empty record of data: its header, explicit
 * nonce (TLS 1.2 AES-GCM), type (TLS 1.3) and tag.
 */
static void check_set(struct rx *rx)
{
	uint64_t seq = rx->seq;
	struct sealer s;
	sealer_from(&s, rx);
	size_t len = seal_text(&s, "", wire_buf);
	assert_int_equal(len, RX_HEADER + explicit_len(&s) + (s.tls12 ? 0 : 1) + RX_TAG);
	struct tls_seg seg = {wire_buf, len};
	size_t pos = 0, n = 0;
	uint8_t alert = 0;
	assert_int_equal(rx_open(rx, &seg, 1, &pos, out_buf, RX_INNER_MAX, &n, &alert), RX_MORE);
	assert_int_equal(pos, len);
	assert_int_equal(rx->seq, seq + 1);
}

/* A session left unset opens nothing. */
static void check_unset(struct rx *rx, const uint8_t *wire, size_t len)
{
	struct tls_seg seg = {wire, len};
	size_t pos = 0, n = 0;
	uint8_t alert = 0;
	assert_int_equal(rx_open(rx, &seg, 1, &pos, out_buf, RX_INNER_MAX, &n, &alert), RX_BAD);
	assert_int_equal(alert, RX_ALERT_INTERNAL_ERROR);
	assert_int_equal(pos, 0);
	assert_int_equal(n, 0);
}

static void test_init_checks(void **state)
{
	(void)state;
	static const struct {
		int suite;
		size_t len;
		int want;
		uint8_t key_len;
	} cases[] = {
	    {RX_AES_128_GCM_SHA256, 32, 0, 16},
	    {RX_AES_128_GCM_SHA256, 48, -EINVAL, 0},
	    {RX_AES_128_GCM_SHA256, 31, -EINVAL, 0},
	    {RX_AES_128_GCM_SHA256, 0, -EINVAL, 0},
	    {RX_AES_256_GCM_SHA384, 48, 0, 32},
	    {RX_AES_256_GCM_SHA384, 32, -EINVAL, 0},
	    {RX_AES_256_GCM_SHA384, 47, -EINVAL, 0},
	    {RX_CHACHA20_POLY1305_SHA256, 32, 0, 32},
	    {RX_CHACHA20_POLY1305_SHA256, 48, -EINVAL, 0},
	    {RX_CHACHA20_POLY1305_SHA256, 33, -EINVAL, 0},
	    {0, 32, -EINVAL, 0},
	    {4, 32, -EINVAL, 0},
	    {-1, 48, -EINVAL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rx rx;
		memset(&rx, 0x5a, sizeof(rx));
		int rc = rx_init(&rx, (enum rx_suite)cases[i].suite, secret48, cases[i].len);
		assert_int_equal(rc, cases[i].want);
		if (rc == 0) {
			assert_int_equal(rx.suite, cases[i].suite);
			assert_int_equal(rx.key_len, cases[i].key_len);
			assert_int_equal(rx.seq, 0);
			check_set(&rx);
		} else {
			static const uint8_t wire[RX_HEADER + 1 + RX_TAG]; /* type 0 */
			check_unset(&rx, wire, sizeof(wire));
		}
		rx_wipe(&rx);
	}
}

/* ---- records sealed here ------------------------------------------------ */

/* A record of the tables, after a good one ("abc"), and what rx_open should make of it. */
struct rec_case {
	const char *name;
	uint8_t outer;	     /* outer content type; 0: 23 */
	uint16_t version;    /* 0: 0x0303 */
	int len;	     /* F_HEADER_ONLY: the length field */
	const char *content; /* hex; NULL: none */
	size_t fill;	     /* then so many bytes 'x' */
	uint8_t type;	     /* TLS 1.3: inner content type, 0: none (all zeros) */
	size_t pad;	     /* TLS 1.3: zeros after it */
	unsigned flags;
	enum rx_result want;
	uint8_t alert; /* of RX_BAD or RX_PEER_ALERT; ANY_ALERT: any */
	bool consumed; /* pos moves past it */
};

static const struct rec_case rec_cases[] = {
    {"application data", .content = "68656c6c6f", .type = 23, .want = RX_MORE, .consumed = true},
    {"padding is stripped", .content = "68656c6c6f", .type = 23, .pad = 300, .want = RX_MORE,
     .consumed = true},
    {"zero-length application data", .type = 23, .want = RX_MORE, .consumed = true},
    {"zero-length application data, 16384 of padding", .type = 23, .pad = 16384, .want = RX_MORE,
     .consumed = true},
    {"content of 16384", .fill = 16384, .type = 23, .want = RX_MORE, .consumed = true},
    {"content of 16000, padded to 16385", .fill = 16000, .type = 23, .pad = 384, .want = RX_MORE,
     .consumed = true},
    {"inner plaintext of 16386 (padding)", .fill = 16384, .type = 23, .pad = 1, .want = RX_BAD,
     .alert = RX_ALERT_RECORD_OVERFLOW},
    {"inner plaintext of 16386 (content)", .fill = 16385, .type = 23, .want = RX_BAD,
     .alert = RX_ALERT_RECORD_OVERFLOW},
    {"tag flipped", .content = "68656c6c6f", .type = 23, .flags = F_FLIP_TAG, .want = RX_BAD,
     .alert = RX_ALERT_BAD_RECORD_MAC},
    {"tag flipped, 16384 bytes", .fill = 16384, .type = 23, .flags = F_FLIP_TAG, .want = RX_BAD,
     .alert = RX_ALERT_BAD_RECORD_MAC},
    {"tag flipped on a KeyUpdate", .content = "1800000101", .type = 22, .flags = F_FLIP_TAG,
     .want = RX_BAD, .alert = RX_ALERT_BAD_RECORD_MAC},
    {"outer type handshake", .outer = 22, .content = "68656c6c6f", .type = 23, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"outer type alert", .outer = 21, .content = "0100", .type = 21, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"outer type change_cipher_spec", .outer = 20, .content = "01", .type = 20, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"version 0x0301", .version = 0x0301, .content = "68", .type = 23, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"version 0x0304", .version = 0x0304, .content = "68", .type = 23, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"length 16: no room for the type", .len = 16, .flags = F_HEADER_ONLY, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR},
    {"length 0", .len = 0, .flags = F_HEADER_ONLY, .want = RX_BAD, .alert = RX_ALERT_DECODE_ERROR},
    {"length 16641", .len = 16641, .flags = F_HEADER_ONLY, .want = RX_BAD,
     .alert = RX_ALERT_RECORD_OVERFLOW},
    {"length 65535", .len = 65535, .flags = F_HEADER_ONLY, .want = RX_BAD,
     .alert = RX_ALERT_RECORD_OVERFLOW},
    {"length 16401, whole record not there yet", .len = 16401, .flags = F_HEADER_ONLY,
     .want = RX_MORE},
    /* Every suite's tag is 16 bytes: a longer record holds too much plaintext. */
    {"length 16402", .len = 16402, .flags = F_HEADER_ONLY, .want = RX_BAD,
     .alert = RX_ALERT_RECORD_OVERFLOW},
    {"length 16640", .len = 16640, .flags = F_HEADER_ONLY, .want = RX_BAD,
     .alert = RX_ALERT_RECORD_OVERFLOW},
    {"inner plaintext all zeros", .pad = 10, .want = RX_BAD, .alert = RX_ALERT_UNEXPECTED_MESSAGE,
     .consumed = true},
    {"inner plaintext one zero", .want = RX_BAD, .alert = RX_ALERT_UNEXPECTED_MESSAGE,
     .consumed = true},
    {"handshake: Finished", .content = "14000004deadbeef", .type = 22, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE, .consumed = true},
    {"handshake: ClientHello", .content = "01000000", .type = 22, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE, .consumed = true},
    {"handshake: empty", .type = 22, .want = RX_BAD, .alert = RX_ALERT_UNEXPECTED_MESSAGE,
     .consumed = true},
    {"KeyUpdate, update_not_requested", .content = "1800000100", .type = 22, .want = RX_MORE,
     .consumed = true},
    {"KeyUpdate, update_requested", .content = "1800000101", .type = 22,
     .want = RX_KEY_UPDATE_ASKED, .consumed = true},
    {"KeyUpdate, padded", .content = "1800000101", .type = 22, .pad = 40,
     .want = RX_KEY_UPDATE_ASKED, .consumed = true},
    {"KeyUpdate with a byte more", .content = "180000010000", .type = 22, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR, .consumed = true},
    {"KeyUpdate of length 2", .content = "180000020000", .type = 22, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR, .consumed = true},
    {"KeyUpdate cut short", .content = "18000001", .type = 22, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR, .consumed = true},
    {"two KeyUpdates in one record", .content = "18000001001800000100", .type = 22, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR, .consumed = true},
    {"KeyUpdate then Finished", .content = "180000010014000000", .type = 22, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR, .consumed = true},
    /* RFC 8446 4.6.3 asks for illegal_parameter here. */
    {"KeyUpdate, request_update 2", .content = "1800000102", .type = 22, .want = RX_BAD,
     .alert = ANY_ALERT, .consumed = true},
    {"close_notify", .content = "0100", .type = 21, .want = RX_CLOSE_NOTIFY, .consumed = true},
    {"close_notify, padded", .content = "0100", .type = 21, .pad = 9, .want = RX_CLOSE_NOTIFY,
     .consumed = true},
    {"alert handshake_failure", .content = "0228", .type = 21, .want = RX_PEER_ALERT, .alert = 40,
     .consumed = true},
    {"alert user_canceled, padded", .content = "015a", .type = 21, .pad = 3, .want = RX_PEER_ALERT,
     .alert = 90, .consumed = true},
    {"alert of 3 bytes", .content = "022800", .type = 21, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR, .consumed = true},
    {"alert of 1 byte", .content = "02", .type = 21, .want = RX_BAD, .alert = RX_ALERT_DECODE_ERROR,
     .consumed = true},
    /* RFC 8446 5.4 asks for unexpected_message here. */
    {"alert: empty", .type = 21, .want = RX_BAD, .alert = ANY_ALERT, .consumed = true},
    {"inner type change_cipher_spec", .content = "01", .type = 20, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE, .consumed = true},
    {"inner type heartbeat", .content = "01", .type = 24, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE, .consumed = true},
    {"inner type 255", .content = "01", .type = 255, .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE, .consumed = true},
};

/* A case's input in wire_buf. */
struct built {
	size_t at, end, len; /* the case's record starts at at, ends at end; len: all */
	uint8_t *content;    /* borrowed: what the record holds, */
	size_t clen;	     /* so many bytes of it */
	size_t sealed;	     /* under its tag: TLS 1.3 its inner plaintext, TLS 1.2 its content */
};

static void build_case(const struct rec_case *c, struct sealer *s, struct built *b)
{
	uint8_t *w = wire_buf;
	size_t len = seal_text(s, "abc", w);
	b->at = len;
	b->clen = c->content ? unhex(c->content, b->content, HEX_MAX) : 0;
	memset(b->content + b->clen, 'x', c->fill);
	b->clen += c->fill;
	b->sealed = 0;
	if (c->flags & F_HEADER_ONLY) {
		int l = c->len + (c->flags & F_LEN_REL ? (int)(explicit_len(s) + RX_TAG) : 0);
		assert_in_range(l, 0, 0xffff);
		uint8_t h[RX_HEADER] = {c->outer ? c->outer : 23, 3, 3, (uint8_t)(l >> 8),
					(uint8_t)l};
		memcpy(w + len, h, sizeof(h));
		b->end = b->len = len + sizeof(h);
		return;
	}
	const uint8_t *payload = b->content;
	b->sealed = b->clen;
	if (!s->tls12) {
		payload = plain_buf;
		b->sealed = c->type ? inner_of(b->content, b->clen, c->type, c->pad, plain_buf)
				    : c->pad + 1;
		if (!c->type)
			memset(plain_buf, 0, b->sealed);
	}
	len += seal(s, c->outer ? c->outer : 23, c->version ? c->version : 0x0303, payload,
		    b->sealed, c->flags, w + len);
	b->end = len;
	if (c->flags & F_THEN_DATA)
		len += seal_text(s, "def", w + len);
	b->len = len;
}

/* Opens the case's input cut in two at cut; checks what rx_open made of it. */
static void open_case(const struct rec_case *c, struct rx *rx, const struct built *b, size_t cut)
{
	struct tls_seg seg[2] = {{wire_buf, cut}, {wire_buf + cut, b->len - cut}};
	uint8_t *out = out_buf;
	size_t cap = 2 * RX_INNER_MAX;
	memset(out, 0xa5, cap);
	size_t pos = 0, n = 0;
	uint8_t alert = 0xee;
	enum rx_result r = rx_open(rx, seg, 2, &pos, out, cap, &n, &alert);
	if (r != c->want)
		fail_msg("%s (suite %d, cut %zu): result %d, want %d", c->name, rx->suite, cut, r,
			 c->want);
	if (c->alert == ANY_ALERT)
		assert_true(alert != 0);
	else
		assert_int_equal(alert,
				 c->want == RX_BAD || c->want == RX_PEER_ALERT ? c->alert : 0);
	bool then = (c->flags & F_THEN_DATA) && c->want == RX_MORE;
	assert_int_equal(pos, !c->consumed ? b->at : then ? b->len : b->end);
	assert_memory_equal(out, "abc", 3);
	uint8_t type = rx->tls12 ? (c->outer ? c->outer : 23) : c->type;
	bool app = type == 23 && c->want == RX_MORE && c->consumed;
	size_t want_n = 3 + (app ? b->clen : 0) + (then ? 3 : 0);
	assert_int_equal(n, want_n);
	if (app)
		assert_memory_equal(out + 3, b->content, b->clen);
	if (then)
		assert_memory_equal(out + want_n - 3, "def", 3);
	/*
	 * Where its plaintext went: the data, then zeros (what was not data,
	 * or failed its tag, is wiped). Nothing else is touched but, in TLS
	 * 1.3, the wiped type byte of "abc" when the record is not decrypted.
	 */
	bool decrypted = c->consumed || (c->flags & (F_FLIP_TAG | F_FLIP_NONCE | F_WRONG_SEQ));
	size_t zero_end = decrypted ? 3 + b->sealed : rx->tls12 ? 0 : 4;
	for (size_t k = n; k < cap; k++)
		if (out[k] != (k < zero_end ? 0 : 0xa5))
			fail_msg("%s (suite %d, cut %zu): out[%zu] = %#x, want %#x", c->name,
				 rx->suite, cut, k, out[k], k < zero_end ? 0 : 0xa5);
}

/* After a KeyUpdate: new keys, sequence 0, the old keys no longer open. */
static void check_updated(struct rx *rx, struct sealer *s, const uint8_t *old_key)
{
	assert_int_equal(rx->seq, 0);
	assert_int_equal(rx->key_updates, 1);
	assert_memory_not_equal(rx->key, old_key, sizeof(rx->key));
	size_t pos = 0, n = 0;
	uint8_t alert;
	size_t m = seal_text(s, "old", wire_buf);
	struct tls_seg seg = {wire_buf, m};
	assert_int_equal(rx_open(rx, &seg, 1, &pos, out_buf, OUT_MAX, &n, &alert), RX_BAD);
	assert_int_equal(alert, RX_ALERT_BAD_RECORD_MAC);
	sealer_from(s, rx);
	seg.len = seal_text(s, "new", wire_buf);
	pos = 0;
	assert_int_equal(rx_open(rx, &seg, 1, &pos, out_buf, OUT_MAX, &n, &alert), RX_MORE);
	assert_int_equal(n, 3);
	assert_memory_equal(out_buf, "new", 3);
}

static void check_case(const struct rec_case *c, bool tls12, enum rx_suite suite)
{
	uint64_t seq0 = tls12 ? SEQ12 : 0;
	struct rx rx;
	struct sealer s;
	rx_fixed(&rx, tls12, suite, seq0);
	sealer_from(&s, &rx);
	assert_int_equal(s.seq, seq0);
	uint8_t old_key[sizeof(rx.key)];
	memcpy(old_key, rx.key, sizeof(old_key));
	static uint8_t content[RX_INNER_MAX + HEX_MAX];
	struct built b = {.content = content};
	build_case(c, &s, &b);
	/* Every cut of a short input; about 64 of a long one. */
	size_t step = b.len <= 600 ? 1 : b.len / 64;
	for (size_t cut = 0; cut <= b.len; cut += step) {
		rx_fixed(&rx, tls12, suite, seq0);
		open_case(c, &rx, &b, cut);
	}
	/* Only a KeyUpdate (TLS 1.3) changes the keys. */
	bool key_update = c->type == 22 && c->want != RX_BAD;
	if (key_update)
		check_updated(&rx, &s, old_key);
	else
		assert_int_equal(rx.key_updates, 0);
	rx_wipe(&rx);
}

/* Every case of the version's table under each suite. */
static void check_cases(bool tls12, const struct rec_case *cases, size_t ncases)
{
	for (size_t si = 0; si < 3; si++)
		for (size_t i = 0; i < ncases; i++)
			check_case(&cases[i], tls12, suites[si]);
}

static void test_sealed_cases(void **state)
{
	(void)state;
	check_cases(false, rec_cases, sizeof(rec_cases) / sizeof(rec_cases[0]));
}

/*
 * After "abc", a record of 100 bytes of data (TLS 1.3: padded by 50) that
 * out has room for but one byte of its plaintext (TLS 1.3: for the content
 * but not its type and padding): RX_FULL leaves it where it is, twice; then
 * it fits exactly. The input stays in wire_buf, *a is where the record
 * starts; rx is left fresh again, from seq0.
 */
static struct tls_seg check_full_room(struct rx *rx, bool tls12, enum rx_suite suite, uint64_t seq0,
				      size_t *a)
{
	struct sealer s;
	rx_fixed(rx, tls12, suite, seq0);
	sealer_from(&s, rx);
	uint8_t y[100], inner[200];
	memset(y, 'y', sizeof(y));
	*a = seal_text(&s, "abc", wire_buf);
	size_t room = s.tls12 ? sizeof(y) : inner_of(y, sizeof(y), 23, 50, inner);
	assert_int_equal(room, s.tls12 ? 100 : 151);
	size_t len = *a + seal(&s, 23, 0x0303, s.tls12 ? y : inner, room, 0, wire_buf + *a);
	struct tls_seg seg = {wire_buf, len};
	size_t pos = 0, n = 0;
	uint8_t alert;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rx_open(rx, &seg, 1, &pos, out_buf, 3 + room - 1, &n, &alert),
				 RX_FULL);
		assert_int_equal(alert, 0);
		assert_int_equal(pos, *a);
		assert_int_equal(n, 3);
		assert_int_equal(rx->seq, seq0 + 1);
	}
	/* Exactly enough. */
	assert_int_equal(rx_open(rx, &seg, 1, &pos, out_buf, 3 + room, &n, &alert), RX_MORE);
	assert_int_equal(pos, len);
	assert_int_equal(n, 103);
	assert_memory_equal(out_buf, "abc", 3);
	assert_memory_equal(out_buf + 3, y, sizeof(y));
	rx_fixed(rx, tls12, suite, seq0);
	return seg;
}

/* A record whose inner plaintext does not fit stays where it is. */
static void test_full(void **state)
{
	(void)state;
	for (size_t si = 0; si < 3; si++) {
		struct rx rx;
		size_t a;
		struct tls_seg seg = check_full_room(&rx, false, suites[si], 0, &a);
		/* No room at all, and n already at cap. */
		size_t pos = 0, n = 0;
		uint8_t alert, *out = out_buf;
		assert_int_equal(rx_open(&rx, &seg, 1, &pos, out, 0, &n, &alert), RX_FULL);
		assert_int_equal(pos, 0);
		n = 10;
		assert_int_equal(rx_open(&rx, &seg, 1, &pos, out, 13, &n, &alert), RX_FULL);
		assert_int_equal(pos, 0);
		assert_int_equal(n, 10);
		assert_int_equal(rx_open(&rx, &seg, 1, &pos, out, 14, &n, &alert), RX_FULL);
		assert_int_equal(pos, a);
		assert_int_equal(n, 13);
		assert_memory_equal(out + 10, "abc", 3);
		rx_wipe(&rx);
	}
}

/* RX_KEY_UPDATES_MAX KeyUpdates are followed, the next one ends the session. */
static void test_key_updates_max(void **state)
{
	(void)state;
	struct rx rx;
	struct sealer s;
	assert_int_equal(rx_init(&rx, RX_AES_128_GCM_SHA256, secret48, 32), 0);
	uint8_t ku[] = {24, 0, 0, 1, 0, 22}, *out = out_buf;
	size_t n = 0;
	uint8_t alert;
	for (unsigned i = 0; i <= RX_KEY_UPDATES_MAX; i++) {
		sealer_from(&s, &rx);
		size_t len = seal_text(&s, "d", wire_buf);
		len += seal(&s, 23, 0x0303, ku, sizeof(ku), 0, wire_buf + len);
		struct tls_seg seg = {wire_buf, len};
		size_t pos = 0;
		enum rx_result r = rx_open(&rx, &seg, 1, &pos, out, RX_INNER_MAX, &n, &alert);
		if (i < RX_KEY_UPDATES_MAX) {
			assert_int_equal(r, RX_MORE);
			assert_int_equal(pos, len);
			assert_int_equal(rx.key_updates, i + 1);
		} else {
			assert_int_equal(r, RX_BAD);
			assert_int_equal(alert, RX_ALERT_UNEXPECTED_MESSAGE);
		}
		n = 0;
	}
	rx_wipe(&rx);
}

/* The sequence number never wraps (RFC 8446 5.3, RFC 5246 6.1). */
static void check_seq_limit(bool tls12, enum rx_suite suite)
{
	struct rx rx;
	struct sealer s;
	rx_fixed(&rx, tls12, suite, UINT64_MAX - 2);
	sealer_from(&s, &rx);
	size_t a = seal_text(&s, "high", wire_buf);
	size_t b = a + seal_text(&s, "last", wire_buf + a);
	size_t len = b + seal_text(&s, "wrap", wire_buf + b);
	struct tls_seg seg = {wire_buf, len};
	size_t pos = 0, n = 0;
	uint8_t alert;
	assert_int_equal(rx_open(&rx, &seg, 1, &pos, out_buf, OUT_MAX, &n, &alert), RX_BAD);
	assert_int_equal(alert, RX_ALERT_INTERNAL_ERROR);
	assert_int_equal(pos, b);
	assert_int_equal(n, 8);
	assert_memory_equal(out_buf, "highlast", 8);
	rx_wipe(&rx);
}

static void test_seq_limit(void **state)
{
	(void)state;
	for (size_t si = 0; si < 3; si++)
		check_seq_limit(false, suites[si]);
}

/* A record of the least size: one byte of data every DATA_EVERY, else none
 * (fewer than RX_EMPTY_MAX in a row). */
#define DATA_EVERY 32u

/* BIG_RECORDS small records in the first seg_len bytes of big: pos ends at
 * want_pos, with one byte of data ('x') from every DATA_EVERY-th. */
static void open_big(struct rx *rx, const uint8_t *big, size_t seg_len, size_t want_pos)
{
	struct tls_seg seg = {big, seg_len};
	size_t pos = 0, n = 0;
	uint8_t alert;
	assert_int_equal(rx_open(rx, &seg, 1, &pos, out_buf, OUT_MAX, &n, &alert), RX_MORE);
	assert_int_equal(pos, want_pos);
	assert_int_equal(n, BIG_RECORDS / DATA_EVERY);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(out_buf[i], 'x');
	assert_int_equal(rx->seq, BIG_RECORDS);
}

/* RX_EMPTY_MAX records without data in a row pass; one more ends the session. */
static void check_empty_limit(bool tls12, enum rx_suite suite)
{
	struct rx rx;
	struct sealer s;
	static const uint8_t warning[2] = {1, 90};
	for (unsigned extra = 0; extra < 2; extra++) {
		rx_fixed(&rx, tls12, suite, 0);
		sealer_from(&s, &rx);
		uint8_t type = 23;
		size_t len = seal_text(&s, "a", wire_buf);
		for (unsigned i = 0; i < RX_EMPTY_MAX + extra; i++)
			len += tls12 && i % 2 ? seal(&s, 21, 0x0303, warning, 2, 0, wire_buf + len)
			       : tls12	      ? seal(&s, 23, 0x0303, NULL, 0, 0, wire_buf + len)
					      : seal(&s, 23, 0x0303, &type, 1, 0, wire_buf + len);
		len += seal_text(&s, "b", wire_buf + len);
		struct tls_seg seg = {wire_buf, len};
		size_t pos = 0, n = 0;
		uint8_t alert;
		enum rx_result r = rx_open(&rx, &seg, 1, &pos, out_buf, OUT_MAX, &n, &alert);
		if (extra == 0) {
			assert_int_equal(r, RX_MORE);
			assert_int_equal(n, 2);
			assert_int_equal(pos, len);
		} else {
			assert_int_equal(r, RX_BAD);
			assert_int_equal(alert, RX_ALERT_UNEXPECTED_MESSAGE);
			assert_int_equal(n, 1);
		}
	}
	rx_wipe(&rx);
}

static void test_empty_limit(void **state)
{
	(void)state;
	for (size_t si = 0; si < 3; si++) {
		check_empty_limit(false, suites[si]);
		check_empty_limit(true, suites[si]);
	}
}

/* 16384 bytes of data (byte i: i * mul) in as many segments of one byte as the record has. */
static void open_bytewise(struct rx *rx, unsigned mul)
{
	static struct tls_seg one[RX_RECORD_MAX];
	struct sealer s;
	sealer_from(&s, rx);
	for (size_t i = 0; i < 16384; i++)
		plain_buf[i] = (uint8_t)(i * mul);
	size_t len = seal_data(&s, plain_buf, 16384, wire_buf);
	for (size_t i = 0; i < len; i++)
		one[i] = (struct tls_seg){wire_buf + i, 1};
	size_t pos = 0, n = 0;
	uint8_t alert;
	assert_int_equal(rx_open(rx, one, (unsigned)len, &pos, out_buf, OUT_MAX, &n, &alert),
			 RX_MORE);
	assert_int_equal(pos, len);
	assert_int_equal(n, 16384);
	assert_memory_equal(out_buf, plain_buf, 16384);
}

/* The loops end: 100000 records of the least size in one call, a record in 1-byte segments. */
static void test_bounds(void **state)
{
	(void)state;
	struct rx rx;
	struct sealer s;
	rx_fixed(&rx, false, RX_AES_128_GCM_SHA256, 0);
	sealer_from(&s, &rx);
	static uint8_t big[BIG_RECORDS * 24 + 32];
	size_t len = 0;
	static const uint8_t empty[1] = {23}, data[2] = {'x', 23};
	for (unsigned i = 0; i < BIG_RECORDS; i++)
		len += i % DATA_EVERY == DATA_EVERY - 1
			   ? seal(&s, 23, 0x0303, data, 2, 0, big + len)
			   : seal(&s, 23, 0x0303, empty, 1, 0, big + len);
	assert_int_equal(len, BIG_RECORDS * (RX_HEADER + 1 + RX_TAG) + BIG_RECORDS / DATA_EVERY);
	open_big(&rx, big, len, len);
	/* Again, with a record cut short at the end. */
	rx_fixed(&rx, false, RX_AES_128_GCM_SHA256, 0);
	s.seq = BIG_RECORDS;
	size_t tail = seal_text(&s, "tail", big + len);
	open_big(&rx, big, len + tail - 1, len);

	/* 16384 bytes of data in 16406 segments of one byte. */
	open_bytewise(&rx, 1);
	rx_wipe(&rx);
}

/* ---- TLS 1.2 records sealed here ---------------------------------------- */

static const struct rec_case rec12_cases[] = {
    {"application data", .content = "68656c6c6f", .want = RX_MORE, .consumed = true},
    {"zero-length application data", .want = RX_MORE, .consumed = true},
    {"zero-length application data, then data", .flags = F_THEN_DATA, .want = RX_MORE,
     .consumed = true},
    {"16384 bytes of data", .fill = 16384, .want = RX_MORE, .consumed = true},
    {"16385 bytes of data", .fill = 16385, .want = RX_BAD, .alert = RX_ALERT_RECORD_OVERFLOW},
    {"tag flipped", .content = "68656c6c6f", .flags = F_FLIP_TAG, .want = RX_BAD,
     .alert = RX_ALERT_BAD_RECORD_MAC},
    {"tag flipped, 16384 bytes", .fill = 16384, .flags = F_FLIP_TAG, .want = RX_BAD,
     .alert = RX_ALERT_BAD_RECORD_MAC},
    {"tag flipped on a close_notify", .outer = 21, .content = "0100", .flags = F_FLIP_TAG,
     .want = RX_BAD, .alert = RX_ALERT_BAD_RECORD_MAC},
    {"explicit nonce altered", .content = "68656c6c6f", .flags = F_FLIP_NONCE, .want = RX_BAD,
     .alert = RX_ALERT_BAD_RECORD_MAC},
    {"wrong sequence number", .content = "68656c6c6f", .flags = F_WRONG_SEQ, .want = RX_BAD,
     .alert = RX_ALERT_BAD_RECORD_MAC},
    {"wrong sequence number on an alert", .outer = 21, .content = "0228", .flags = F_WRONG_SEQ,
     .want = RX_BAD, .alert = RX_ALERT_BAD_RECORD_MAC},
    /* Not decrypted: the record stays where it is. */
    {"outer type handshake (renegotiation)", .outer = 22, .content = "01000000", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"outer type handshake: HelloRequest", .outer = 22, .content = "00000000", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"outer type change_cipher_spec", .outer = 20, .content = "01", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"outer type heartbeat", .outer = 24, .content = "01", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"outer type 255", .outer = 255, .content = "01", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"version 0x0301", .version = 0x0301, .content = "68", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"version 0x0302", .version = 0x0302, .content = "68", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"version 0x0304", .version = 0x0304, .content = "68", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"version 0x0203", .version = 0x0203, .content = "68", .want = RX_BAD,
     .alert = RX_ALERT_UNEXPECTED_MESSAGE},
    {"length explicit + 15", .len = -1, .flags = F_HEADER_ONLY | F_LEN_REL, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR},
    {"length 0", .len = 0, .flags = F_HEADER_ONLY, .want = RX_BAD, .alert = RX_ALERT_DECODE_ERROR},
    {"length 0, outer type alert", .outer = 21, .len = 0, .flags = F_HEADER_ONLY, .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR},
    {"length explicit + 16 + 16384, record not there yet", .len = 16384,
     .flags = F_HEADER_ONLY | F_LEN_REL, .want = RX_MORE},
    {"length explicit + 16 + 16385", .len = 16385, .flags = F_HEADER_ONLY | F_LEN_REL,
     .want = RX_BAD, .alert = RX_ALERT_RECORD_OVERFLOW},
    {"length 16384 + 2048: plaintext over 16384", .len = 16384 + 2048, .flags = F_HEADER_ONLY,
     .want = RX_BAD, .alert = RX_ALERT_RECORD_OVERFLOW},
    {"length 16384 + 2049", .len = 16384 + 2049, .flags = F_HEADER_ONLY, .want = RX_BAD,
     .alert = RX_ALERT_RECORD_OVERFLOW},
    {"length 65535", .len = 65535, .flags = F_HEADER_ONLY, .want = RX_BAD,
     .alert = RX_ALERT_RECORD_OVERFLOW},
    {"close_notify", .outer = 21, .content = "0100", .want = RX_CLOSE_NOTIFY, .consumed = true},
    {"close_notify, then data", .outer = 21, .content = "0100", .flags = F_THEN_DATA,
     .want = RX_CLOSE_NOTIFY, .consumed = true},
    /* RFC 5246 7.2: a warning lets the connection go on. */
    {"warning user_canceled ignored", .outer = 21, .content = "015a", .flags = F_THEN_DATA,
     .want = RX_MORE, .consumed = true},
    {"warning no_renegotiation ignored", .outer = 21, .content = "0164", .flags = F_THEN_DATA,
     .want = RX_MORE, .consumed = true},
    {"fatal handshake_failure", .outer = 21, .content = "0228", .want = RX_PEER_ALERT, .alert = 40,
     .consumed = true},
    {"fatal handshake_failure, then data", .outer = 21, .content = "0228", .flags = F_THEN_DATA,
     .want = RX_PEER_ALERT, .alert = 40, .consumed = true},
    {"alert of 3 bytes", .outer = 21, .content = "022800", .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR, .consumed = true},
    {"alert of 1 byte", .outer = 21, .content = "01", .want = RX_BAD,
     .alert = RX_ALERT_DECODE_ERROR, .consumed = true},
    {"alert: empty", .outer = 21, .want = RX_BAD, .alert = ANY_ALERT, .consumed = true},
};

static void test_sealed_cases12(void **state)
{
	(void)state;
	check_cases(true, rec12_cases, sizeof(rec12_cases) / sizeof(rec12_cases[0]));
}

/* rx_init_tls12 takes only the key and IV lengths of the suite. */
static void test_init12_checks(void **state)
{
	(void)state;
	static const struct {
		int suite;
		size_t key_len, iv_len;
		int want;
	} cases[] = {
	    {RX_AES_128_GCM_SHA256, 16, 4, 0},
	    {RX_AES_128_GCM_SHA256, 32, 4, -EINVAL},
	    {RX_AES_128_GCM_SHA256, 15, 4, -EINVAL},
	    {RX_AES_128_GCM_SHA256, 16, 12, -EINVAL},
	    {RX_AES_128_GCM_SHA256, 16, 0, -EINVAL},
	    {RX_AES_256_GCM_SHA384, 32, 4, 0},
	    {RX_AES_256_GCM_SHA384, 16, 4, -EINVAL},
	    {RX_AES_256_GCM_SHA384, 33, 4, -EINVAL},
	    {RX_AES_256_GCM_SHA384, 32, 12, -EINVAL},
	    {RX_CHACHA20_POLY1305_SHA256, 32, 12, 0},
	    {RX_CHACHA20_POLY1305_SHA256, 16, 12, -EINVAL},
	    {RX_CHACHA20_POLY1305_SHA256, 32, 4, -EINVAL},
	    {RX_CHACHA20_POLY1305_SHA256, 32, 11, -EINVAL},
	    {RX_CHACHA20_POLY1305_SHA256, 32, 13, -EINVAL},
	    {0, 16, 4, -EINVAL},
	    {0, 32, 12, -EINVAL},
	    {4, 32, 4, -EINVAL},
	    {4, 32, 12, -EINVAL},
	    {-1, 32, 12, -EINVAL},
	    {255, 16, 4, -EINVAL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rx rx;
		memset(&rx, 0x5a, sizeof(rx));
		int rc = rx_init_tls12(&rx, (enum rx_suite)cases[i].suite, secret48,
				       cases[i].key_len, secret48 + 32, cases[i].iv_len, 7);
		assert_int_equal(rc, cases[i].want);
		if (rc == 0) {
			assert_int_equal(rx.suite, cases[i].suite);
			assert_int_equal(rx.tls12, 1);
			assert_int_equal(rx.seq, 7);
			check_set(&rx);
		} else {
			static const uint8_t wire[RX_HEADER + 8 + RX_TAG] = {23};
			check_unset(&rx, wire, sizeof(wire));
		}
		rx_wipe(&rx);
	}
}

/* RX_FULL in TLS 1.2: the record stays, pos and n as they were; the last sequence number. */
static void test_full12(void **state)
{
	(void)state;
	for (size_t si = 0; si < 3; si++) {
		struct rx rx;
		size_t a;
		struct tls_seg seg = check_full_room(&rx, true, suites[si], 1, &a);
		/* n already at cap. */
		size_t pos = 0, n = 10;
		uint8_t alert;
		assert_int_equal(rx_open(&rx, &seg, 1, &pos, out_buf, 10, &n, &alert), RX_FULL);
		assert_int_equal(pos, 0);
		assert_int_equal(n, 10);
		assert_int_equal(rx.seq, 1);
		rx_wipe(&rx);
		check_seq_limit(true, suites[si]);
	}
}

/*
 * The loops end in TLS 1.2 too: 100000 ChaCha20 records of the least size
 * (21 bytes: no explicit nonce, no inner type) in one call, warnings among
 * them; a record of 16384 bytes in one-byte segments.
 */
static void test_bounds12(void **state)
{
	(void)state;
	struct rx rx;
	struct sealer s;
	rx_fixed(&rx, true, RX_CHACHA20_POLY1305_SHA256, 0);
	sealer_from(&s, &rx);
	static uint8_t big[BIG_RECORDS * 23 + 32];
	static const uint8_t warning[2] = {1, 90}, data[1] = {'x'};
	size_t len = 0;
	for (unsigned i = 0; i < BIG_RECORDS; i++)
		len += i % DATA_EVERY == DATA_EVERY - 1
			   ? seal(&s, 23, 0x0303, data, 1, 0, big + len)
		       : i % 10 == 9 ? seal(&s, 21, 0x0303, warning, 2, 0, big + len)
				     : seal(&s, 23, 0x0303, NULL, 0, 0, big + len);
	open_big(&rx, big, len, len);

	for (size_t si = 0; si < 3; si++) {
		rx_fixed(&rx, true, suites[si], 1);
		open_bytewise(&rx, 7);
	}
	rx_wipe(&rx);
}

/* ---- a wolfSSL client seals --------------------------------------------- */

struct capture {
	uint8_t secret[RX_SECRET_MAX];
	int len;
};

#ifdef HAVE_SECRET_CALLBACK
/* The server's view of the client's first application traffic secret. */
static int secret_cb(WOLFSSL *ssl, int id, const unsigned char *secret, int len, void *vctx)
{
	struct capture *c = vctx;
	(void)ssl;
	if (id == CLIENT_TRAFFIC_SECRET && c->len == 0 && len > 0 && (size_t)len <= RX_SECRET_MAX) {
		memcpy(c->secret, secret, (size_t)len);
		c->len = len;
	}
	return 0;
}
#endif

enum act_op { ACT_END, ACT_WRITE, ACT_UPDATE, ACT_CLOSE };

struct act {
	enum act_op op;
	size_t len; /* ACT_WRITE */
};

/* What the client sent after its Finished, and what rx should make of it. */
struct flight {
	enum rx_suite suite;
	bool tls12;
	uint8_t secret[RX_SECRET_MAX]; /* TLS 1.3 */
	size_t secret_len;
	uint8_t key[32], iv[12]; /* TLS 1.2: the client's write key and IV, */
	size_t key_len, iv_len;
	uint64_t seq;  /* and the sequence number of its next record */
	uint8_t *wire; /* borrowed: wire_buf */
	size_t wire_len;
	size_t ends[RECORDS_MAX]; /* where each record ends */
	unsigned nrec;
	uint8_t *plain; /* borrowed: plain_buf */
	size_t plain_len;
	unsigned asked; /* KeyUpdates asking for ours */
};

static struct flight flight;
static struct tls_seg segs[SEGS_MAX];

/* A wolfSSL server and client in memory (tlstest.h); what the server saw of the client's secret. */
struct link {
	struct tlstest_link t;
	struct capture cap; /* TLS 1.3 */
};

static uint8_t s2c_buf[1u << 18];

static WOLFSSL_CTX *server_ctx_new(bool tls12)
{
	WOLFSSL_CTX *ctx =
	    tlstest_ctx_new(tls12 ? wolfTLSv1_2_server_method() : wolfTLSv1_3_server_method());
	assert_int_equal(wolfSSL_CTX_use_certificate_buffer(
			     ctx, (const unsigned char *)tlstest_ec_cert_pem,
			     (long)strlen(tlstest_ec_cert_pem), WOLFSSL_FILETYPE_PEM),
			 WOLFSSL_SUCCESS);
	assert_int_equal(wolfSSL_CTX_use_PrivateKey_buffer(
			     ctx, (const unsigned char *)tlstest_ec_key_pem,
			     (long)strlen(tlstest_ec_key_pem), WOLFSSL_FILETYPE_PEM),
			 WOLFSSL_SUCCESS);
	return ctx;
}

/* A client that offers suite alone. */
static WOLFSSL_CTX *client_ctx_new(bool tls12, enum rx_suite suite)
{
	WOLFSSL_CTX *ctx =
	    tlstest_ctx_new(tls12 ? wolfTLSv1_2_client_method() : wolfTLSv1_3_client_method());
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	const char *name = tls12 ? suite_names12[suite] : suite_names[suite];
	assert_int_equal(wolfSSL_CTX_set_cipher_list(ctx, name), WOLFSSL_SUCCESS);
	return ctx;
}

/*
 * The handshake, the client resuming if asked; the client writes into
 * wire_buf. The server reads exactly its Finished.
 */
static void link_handshake(struct link *l, WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx,
			   WOLFSSL_SESSION *resume)
{
	memset(l, 0, sizeof(*l));
	l->t.c2s = (struct tlstest_pipe){wire_buf, 0, WIRE_MAX};
	l->t.s2c = (struct tlstest_pipe){s2c_buf, 0, sizeof(s2c_buf)};
	tlstest_link_open(&l->t, sctx, cctx, resume);
#ifdef HAVE_SECRET_CALLBACK
	if (wolfSSL_GetVersion(l->t.s) == WOLFSSL_TLSV1_3)
		assert_int_equal(wolfSSL_set_tls13_secret_cb(l->t.s, secret_cb, &l->cap),
				 WOLFSSL_SUCCESS);
#endif
	tlstest_link_handshake(&l->t);
	/* The server read exactly up to the end of the client's Finished. */
	assert_int_equal(l->t.c2s.len, 0);
}

/* The client writes and closes as acts say; the records it sent go into f. */
static void client_acts(struct flight *f, struct link *l, const struct act *acts, uint64_t *seed)
{
	f->wire = wire_buf;
	f->plain = plain_buf;
	for (unsigned i = 0; i < RECORDS_MAX && acts[i].op != ACT_END; i++) {
		const struct act *a = &acts[i];
		if (a->op == ACT_WRITE) {
			assert_true(f->plain_len + a->len <= PLAIN_MAX);
			uint8_t *d = f->plain + f->plain_len;
			for (size_t k = 0; k < a->len; k++)
				d[k] = (uint8_t)rnd(seed);
			assert_int_equal(wolfSSL_write(l->t.c, d, (int)a->len), (int)a->len);
			f->plain_len += a->len;
		} else if (a->op == ACT_UPDATE) {
			int required = -1;
			assert_false(f->tls12);
			assert_int_equal(wolfSSL_update_keys(l->t.c), WOLFSSL_SUCCESS);
			assert_int_equal(wolfSSL_key_update_response(l->t.c, &required), 0);
			f->asked += (unsigned)required;
		} else {
			size_t before = l->t.c2s.len;
			(void)wolfSSL_shutdown(l->t.c);
			assert_true(l->t.c2s.len > before);
		}
	}
	f->wire_len = l->t.c2s.len;
	/* Where the records end (wolfSSL wrote them: the headers are right). In
	 * TLS 1.2 the outer type is the real one: the close_notify is an alert. */
	for (size_t o = 0; o < f->wire_len;) {
		assert_true(o + RX_HEADER <= f->wire_len);
		assert_true(f->wire[o] == 23 || (f->tls12 && f->wire[o] == 21));
		o += RX_HEADER + ((size_t)f->wire[o + 3] << 8 | f->wire[o + 4]);
		assert_true(o <= f->wire_len && f->nrec < RECORDS_MAX);
		f->ends[f->nrec++] = o;
	}
}

#ifdef ATOMIC_USER
/*
 * The client's write key, IV and next sequence number, taken from the
 * server as tls.c's rx_start_tls12 takes them (wolfSSL's ATOMIC_USER
 * getters), and the suite they are for.
 */
static void take_keys12(struct flight *f, WOLFSSL *s)
{
	int bulk = wolfSSL_GetBulkCipher(s), ks = wolfSSL_GetKeySize(s);
	int ivs = wolfSSL_GetIVSize(s);
	enum rx_suite suite = bulk == wolfssl_chacha		    ? RX_CHACHA20_POLY1305_SHA256
			      : bulk == wolfssl_aes_gcm && ks == 16 ? RX_AES_128_GCM_SHA256
			      : bulk == wolfssl_aes_gcm && ks == 32 ? RX_AES_256_GCM_SHA384
								    : 0;
	assert_int_equal(suite, f->suite);
	assert_int_equal(ks, f->suite == RX_AES_128_GCM_SHA256 ? 16 : 32);
	assert_int_equal(ivs, f->suite == RX_CHACHA20_POLY1305_SHA256 ? 12 : 4);
	const uint8_t *key = wolfSSL_GetClientWriteKey(s), *iv = wolfSSL_GetClientWriteIV(s);
	assert_non_null(key);
	assert_non_null(iv);
	word64 seq = 0;
	(void)wolfSSL_GetPeerSequenceNumber(s, &seq);
	f->key_len = (size_t)ks;
	f->iv_len = (size_t)ivs;
	memcpy(f->key, key, f->key_len);
	memcpy(f->iv, iv, f->iv_len);
	f->seq = seq;
	/* The client's Finished was its first record under these keys. */
	assert_int_equal(f->seq, 1);
}
#else
/* Without ATOMIC_USER wolfSSL hands over no TLS 1.2 keys: the tests that need them skip. */
static void take_keys12(struct flight *f, WOLFSSL *s)
{
	(void)f;
	(void)s;
	fail_msg("TLS 1.2 keys need wolfSSL's ATOMIC_USER");
}
#endif

/*
 * The flight of a client of suite, and the secret (TLS 1.3) or the keys
 * and sequence number (TLS 1.2) to open it with. resumed (TLS 1.2): a
 * first, full handshake gets the client a session ticket (the server keeps
 * no session cache, so only the ticket can resume), and the flight follows
 * the abbreviated handshake that presents it.
 */
static void make_flight(struct flight *f, bool tls12, enum rx_suite suite, const struct act *acts,
			uint64_t *seed, bool resumed)
{
	WOLFSSL_CTX *sctx = server_ctx_new(tls12), *cctx = client_ctx_new(tls12, suite);
	WOLFSSL_SESSION *sess = NULL;
	struct link l;
	if (resumed) {
		assert_int_equal(wolfSSL_CTX_set_session_cache_mode(sctx, WOLFSSL_SESS_CACHE_OFF),
				 WOLFSSL_SUCCESS);
		assert_int_equal(wolfSSL_CTX_UseSessionTicket(cctx), WOLFSSL_SUCCESS);
		link_handshake(&l, sctx, cctx, NULL);
		assert_int_equal(wolfSSL_session_reused(l.t.s), 0);
		sess = wolfSSL_get1_session(l.t.c);
		assert_non_null(sess);
		tlstest_link_free(&l.t);
	}
	link_handshake(&l, sctx, cctx, sess);
	assert_int_equal(wolfSSL_GetVersion(l.t.s), tls12 ? WOLFSSL_TLSV1_2 : WOLFSSL_TLSV1_3);
	assert_int_equal(wolfSSL_session_reused(l.t.s), resumed ? 1 : 0);

	memset(f, 0, sizeof(*f));
	f->suite = suite;
	f->tls12 = tls12;
	if (tls12) {
		assert_string_equal(wolfSSL_get_cipher_name(l.t.s), suite_names12[suite]);
		take_keys12(f, l.t.s);
	} else {
		assert_int_equal(rx_suite_by_name(wolfSSL_get_cipher_name(l.t.s)), suite);
		assert_int_equal(l.cap.len, (int)hash_len(suite));
		memcpy(f->secret, l.cap.secret, (size_t)l.cap.len);
		f->secret_len = (size_t)l.cap.len;
	}
	client_acts(f, &l, acts, seed);
	tlstest_link_free(&l.t);
	if (sess)
		wolfSSL_SESSION_free(sess);
	wolfSSL_CTX_free(cctx);
	wolfSSL_CTX_free(sctx);
}

/* A fresh rx for the flight. */
static void flight_rx(const struct flight *f, struct rx *rx)
{
	if (f->tls12)
		assert_int_equal(
		    rx_init_tls12(rx, f->suite, f->key, f->key_len, f->iv, f->iv_len, f->seq), 0);
	else
		assert_int_equal(rx_init(rx, f->suite, f->secret, f->secret_len), 0);
}

/* Calls rx_open as tls.c does: again after each KeyUpdate that asks for ours. */
static enum rx_result open_calls(const struct flight *f, struct rx *rx, unsigned nseg, size_t *pos,
				 size_t *n, unsigned *asked)
{
	uint8_t alert = 0xee;
	enum rx_result r = RX_BAD;
	for (unsigned guard = 0; guard <= RX_KEY_UPDATES_MAX; guard++) {
		r = rx_open(rx, segs, nseg, pos, out_buf, OUT_MAX, n, &alert);
		if (r != RX_KEY_UPDATE_ASKED)
			break;
		(*asked)++;
		bool at_end = false;
		for (unsigned i = 0; i < f->nrec; i++)
			at_end |= f->ends[i] == *pos;
		assert_true(at_end);
	}
	assert_int_equal(alert, 0);
	return r;
}

/* The whole flight, given as nseg segments, from a fresh rx. */
static void open_whole(const struct flight *f, unsigned nseg)
{
	struct rx rx;
	flight_rx(f, &rx);
	size_t pos = 0, n = 0;
	unsigned asked = 0;
	assert_int_equal(open_calls(f, &rx, nseg, &pos, &n, &asked), RX_CLOSE_NOTIFY);
	assert_int_equal(asked, f->asked);
	assert_int_equal(pos, f->wire_len);
	assert_int_equal(n, f->plain_len);
	assert_memory_equal(out_buf, f->plain, n);
	rx_wipe(&rx);
}

/* Segments of the wire cut at nseg - 1 random offsets (some may be empty). */
static unsigned cut_random(const struct flight *f, size_t len, unsigned nseg, uint64_t *seed)
{
	size_t cuts[64];
	assert_true(nseg >= 1 && nseg <= 64);
	for (unsigned i = 0; i + 1 < nseg; i++)
		cuts[i] = (size_t)(rnd(seed) % (len + 1));
	cuts[nseg - 1] = len;
	/* Insertion sort: at most 64. */
	for (unsigned i = 1; i < nseg; i++)
		for (unsigned j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
			size_t t = cuts[j];
			cuts[j] = cuts[j - 1];
			cuts[j - 1] = t;
		}
	size_t from = 0;
	for (unsigned i = 0; i < nseg; i++) {
		segs[i] = (struct tls_seg){f->wire + from, cuts[i] - from};
		from = cuts[i];
	}
	return nseg;
}

/*
 * The flight arriving in pieces of 1..step_max bytes, each a segment of its
 * own: after each, pos is at the end of the last whole record.
 */
static void open_growing(const struct flight *f, size_t step_max, uint64_t *seed)
{
	struct rx rx;
	flight_rx(f, &rx);
	size_t pos = 0, n = 0, got = 0, prev_n = 0;
	unsigned asked = 0, nseg = 0, rec = 0;
	for (unsigned guard = 0; got < f->wire_len && guard < SEGS_MAX; guard++) {
		size_t step = step_max == 1 ? 1 : 1 + (size_t)(rnd(seed) % step_max);
		if (step > f->wire_len - got)
			step = f->wire_len - got;
		segs[nseg++] = (struct tls_seg){f->wire + got, step};
		got += step;
		enum rx_result r = open_calls(f, &rx, nseg, &pos, &n, &asked);
		while (rec < f->nrec && f->ends[rec] <= got)
			rec++;
		size_t want_pos = rec ? f->ends[rec - 1] : 0;
		assert_int_equal(pos, want_pos);
		assert_int_equal(r, pos == f->wire_len ? RX_CLOSE_NOTIFY : RX_MORE);
		assert_true(n >= prev_n);
		assert_memory_equal(out_buf, f->plain, n);
		prev_n = n;
	}
	assert_int_equal(got, f->wire_len);
	assert_int_equal(pos, f->wire_len);
	assert_int_equal(n, f->plain_len);
	assert_int_equal(asked, f->asked);
	rx_wipe(&rx);
}

/*
 * For each suite, a short flight of nrec records (and KeyUpdates in TLS
 * 1.3) cut at every offset, then at every pair of offsets, then byte by
 * byte, and arriving a byte at a time.
 */
static void short_flights(bool tls12, const struct act *acts, uint64_t seed, bool resumed,
			  unsigned nrec)
{
	for (size_t si = 0; si < 3; si++) {
		struct flight *f = &flight;
		make_flight(f, tls12, suites[si], acts, &seed, resumed);
		assert_int_equal(f->asked, tls12 ? 0 : 1);
		assert_int_equal(f->nrec, nrec);
		/* The close_notify: an alert record in TLS 1.2, data outside in TLS 1.3. */
		assert_int_equal(f->wire[f->ends[nrec - 2]], tls12 ? 21 : 23);
		size_t len = f->wire_len;
		assert_true(len < SEGS_MAX);
		for (size_t i = 0; i <= len; i++) {
			for (size_t j = i; j <= len; j++) {
				segs[0] = (struct tls_seg){f->wire, i};
				segs[1] = (struct tls_seg){f->wire + i, j - i};
				segs[2] = (struct tls_seg){f->wire + j, len - j};
				open_whole(f, 3);
			}
		}
		for (size_t i = 0; i < len; i++)
			segs[i] = (struct tls_seg){f->wire + i, 1};
		open_whole(f, (unsigned)len);
		open_growing(f, 1, &seed);
	}
}

/* For each suite, a long flight cut at random offsets, and arriving in random pieces. */
static void long_flights(bool tls12, const struct act *acts, uint64_t seed)
{
	for (size_t si = 0; si < 3; si++) {
		struct flight *f = &flight;
		make_flight(f, tls12, suites[si], acts, &seed, false);
		assert_int_equal(f->asked, tls12 ? 0 : 1);
		printf("%-31s %6zu bytes of data in %2u records, %6zu on the wire\n",
		       (tls12 ? suite_names12 : suite_names)[suites[si]], f->plain_len, f->nrec,
		       f->wire_len);
		segs[0] = (struct tls_seg){f->wire, f->wire_len};
		open_whole(f, 1);
		for (unsigned t = 0; t < 200; t++)
			open_whole(
			    f, cut_random(f, f->wire_len, 1 + (unsigned)(rnd(&seed) % 64), &seed));
		for (unsigned t = 0; t < 10; t++)
			open_growing(f, t < 5 ? 128 : 4000, &seed);
	}
}

#ifdef HAVE_SECRET_CALLBACK
static const struct act short_flight[] = {
    {ACT_WRITE, 1},  {ACT_WRITE, 2},  {ACT_WRITE, 17}, {ACT_UPDATE, 0}, {ACT_WRITE, 5},
    {ACT_UPDATE, 0}, {ACT_WRITE, 31}, {ACT_CLOSE, 0},  {ACT_END, 0},
};

static const struct act long_flight[] = {
    {ACT_WRITE, 1},	{ACT_WRITE, 2},	    {ACT_WRITE, 3},    {ACT_WRITE, 15},
    {ACT_WRITE, 16},	{ACT_WRITE, 17},    {ACT_WRITE, 255},  {ACT_WRITE, 256},
    {ACT_WRITE, 1000},	{ACT_WRITE, 4095},  {ACT_WRITE, 4096}, {ACT_WRITE, 16383},
    {ACT_WRITE, 16384}, {ACT_WRITE, 20000}, {ACT_UPDATE, 0},   {ACT_WRITE, 700},
    {ACT_WRITE, 16384}, {ACT_UPDATE, 0},    {ACT_WRITE, 1},    {ACT_WRITE, 9000},
    {ACT_CLOSE, 0},	{ACT_END, 0},
};
#endif

/* Without HAVE_SECRET_CALLBACK wolfSSL hands over no TLS 1.3 secret (tls.c
 * reads with wolfSSL then). */
static void test_wolfssl_short(void **state)
{
	(void)state;
#ifdef HAVE_SECRET_CALLBACK
	short_flights(false, short_flight, 8446, false, 8);
#else
	skip();
#endif
}

static void test_wolfssl_long(void **state)
{
	(void)state;
#ifdef HAVE_SECRET_CALLBACK
	long_flights(false, long_flight, 8448);
#else
	skip();
#endif
}

/* ---- a wolfSSL TLS 1.2 client seals ------------------------------------- */

static const struct act short_flight12[] = {
    {ACT_WRITE, 1}, {ACT_WRITE, 2},  {ACT_WRITE, 17}, {ACT_WRITE, 5},
    {ACT_WRITE, 0}, {ACT_WRITE, 31}, {ACT_CLOSE, 0},  {ACT_END, 0},
};

static const struct act long_flight12[] = {
    {ACT_WRITE, 1},	{ACT_WRITE, 2},	    {ACT_WRITE, 3},	{ACT_WRITE, 15},
    {ACT_WRITE, 16},	{ACT_WRITE, 17},    {ACT_WRITE, 255},	{ACT_WRITE, 256},
    {ACT_WRITE, 1000},	{ACT_WRITE, 4095},  {ACT_WRITE, 4096},	{ACT_WRITE, 16383},
    {ACT_WRITE, 16384}, {ACT_WRITE, 16385}, {ACT_WRITE, 20000}, {ACT_WRITE, 700},
    {ACT_WRITE, 32769}, {ACT_WRITE, 1},	    {ACT_WRITE, 9000},	{ACT_CLOSE, 0},
    {ACT_END, 0},
};

/* Without ATOMIC_USER wolfSSL hands over no TLS 1.2 keys (tls.c reads with wolfSSL then). */
static void test_wolfssl12_short(void **state)
{
	(void)state;
#ifdef ATOMIC_USER
	/* Five records of data (wolfSSL sends none for a write of 0), the alert. */
	short_flights(true, short_flight12, 5288, false, 6);
#else
	skip();
#endif
}

/* A long flight (records of 1 to 16384 bytes, writes split by wolfSSL) cut at random. */
static void test_wolfssl12_long(void **state)
{
	(void)state;
#ifdef ATOMIC_USER
	long_flights(true, long_flight12, 7905);
#else
	skip();
#endif
}

/* After an abbreviated handshake (session ticket) the keys and sequence number are right too. */
static void test_wolfssl12_resumed(void **state)
{
	(void)state;
#if defined(ATOMIC_USER) && defined(HAVE_SESSION_TICKET)
	short_flights(true, short_flight12, 5077, true, 6);
#else
	skip();
#endif
}

static int setup(void **state)
{
	(void)state;
	return wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	wolfSSL_Cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc8448),	   cmocka_unit_test(test_suite_names),
	    cmocka_unit_test(test_init_checks),	   cmocka_unit_test(test_sealed_cases),
	    cmocka_unit_test(test_full),	   cmocka_unit_test(test_key_updates_max),
	    cmocka_unit_test(test_seq_limit),	   cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_empty_limit),	   cmocka_unit_test(test_wolfssl_short),
	    cmocka_unit_test(test_wolfssl_long),   cmocka_unit_test(test_sealed_cases12),
	    cmocka_unit_test(test_init12_checks),  cmocka_unit_test(test_full12),
	    cmocka_unit_test(test_bounds12),	   cmocka_unit_test(test_wolfssl12_short),
	    cmocka_unit_test(test_wolfssl12_long), cmocka_unit_test(test_wolfssl12_resumed),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
