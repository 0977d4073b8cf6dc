/*
 * fuzz_record.c - the client's TLS 1.3 and 1.2 records, opened by tls/record.c.
 *
 * Input: byte 0 picks the suite (its low 6 bits mod 3: AES-128-GCM,
 * AES-256-GCM, ChaCha20-Poly1305), TLS 1.2 (bit 6) and the mode (bit 7);
 * byte 1 the room for plaintext (0: 4 * RX_INNER_MAX, else 67 bytes a
 * step, so that RX_FULL comes up); byte 2 the number of cuts (low 3 bits)
 * and, for TLS 1.2, the client's first sequence number (bits 3-4: 1, 0,
 * 2^64 - 4, 0x0102030405060708), then 2 bytes per cut, each a fraction of
 * the wire. The rest:
 *  - mode wire (bit 7 clear): the bytes the client sent, under the fixed
 *    secret below (TLS 1.3), or the fixed key (its first bytes) and IV
 *    (from its byte 32) (TLS 1.2); seeds sealed by make_record_seeds.py;
 *  - mode plain (bit 7 set): records in the clear, each a flags byte, a
 *    2-byte length and that many bytes of TLSInnerPlaintext (content, type,
 *    padding: RFC 8446 5.2), which the harness seals with the key and
 *    sequence number in force, following the KeyUpdates it seals (it derives
 *    the next secret itself, RFC 8446 7.2), so the fuzzer gets past the tag.
 *    Flags: 1 flips a tag bit, 2 makes the outer type handshake, 4 seals
 *    under the wrong sequence number, 8 puts (flags >> 4) * 1100 bytes 'x'
 *    in front of the given bytes (records near and over 2^14 from short
 *    inputs). The wire stops growing at WIRE_MAX.
 *  - mode plain, TLS 1.2: records in the clear, each a flags byte, the
 *    outer content type, a 2-byte length and that many bytes of plaintext,
 *    which the harness seals (RFC 5246 6.2.3.3, RFC 5288, RFC 7905) with
 *    the sequence number in force. Flags: 1 flips a tag bit, 2 a bit of the
 *    first byte after the header (AES-GCM's explicit nonce), 4 seals under
 *    the wrong sequence number, 8 puts filler in front as above.
 *
 * The wire is opened three ways, as tls.c calls rx_open (again after a
 * KeyUpdate that asks for ours; the plaintext taken away on RX_FULL): as
 * one segment; arriving in pieces at the cuts, each piece a segment of
 * its own, rx_open called after each; and, when short, one byte a segment.
 * Checked, besides memory safety under the sanitizers (the input pieces and
 * out are exact-size allocations):
 *  - the call returns; pos never goes back nor past the input, n never
 *    past cap; alert is 0 unless RX_BAD (one of record.h's codes) or
 *    RX_PEER_ALERT (not 0);
 *  - out past n holds nothing of any record but zeros (record.c wipes the
 *    content type byte and padding after the data; 23 at out[n] is allowed);
 *  - the three ways end alike: result, pos, alert, KeyUpdates, plaintext;
 *  - mode plain: result, pos, plaintext and KeyUpdates asked are what the
 *    harness predicts from the records it sealed (RFC 8446 5.2-5.4, 4.6.3,
 *    6; RFC 5246 6.2-6.2.3, 7.2: data and alerts only, warnings ignored),
 *    and so is the alert where the RFCs leave no choice.
 */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/hmac.h>

#include <string.h>

#include "fuzz.h"
#include "record.h"

#define WIRE_MAX    (256u << 10) /* of sealed records in mode plain */
#define CUTS_MAX    7u
#define BYTE_SEGS   512u /* the one-byte-a-segment run, for wires up to this */
#define ANY_ALERT   0xff /* expected: RX_BAD with any alert */
#define FILLER_STEP 1100u
#define IV12_AT	    32u /* TLS 1.2: the fixed IV is secret48 from here */

static const uint8_t secret48[48] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f};

/* How the input is opened. */
struct mode {
	enum rx_suite suite;
	bool tls12;
	uint64_t seq; /* TLS 1.2: of the client's first record */
};

static size_t key_len_of(enum rx_suite suite)
{
	return suite == RX_AES_128_GCM_SHA256 ? 16 : 32;
}

static size_t iv_len12_of(enum rx_suite suite)
{
	return suite == RX_CHACHA20_POLY1305_SHA256 ? 12 : 4;
}

/* A fresh rx with the fixed keys of the mode. */
static void rx_setup(const struct mode *m, struct rx *rx)
{
	int rc;
	if (m->tls12)
		rc = rx_init_tls12(rx, m->suite, secret48, key_len_of(m->suite), secret48 + IV12_AT,
				   iv_len12_of(m->suite), m->seq);
	else
		rc = rx_init(rx, m->suite, secret48, m->suite == RX_AES_256_GCM_SHA384 ? 48 : 32);
	FUZZ_CHECK(rc == 0, "rx_init: %d", rc);
}

/* What one way of opening the wire ended with. */
struct outcome {
	enum rx_result r;
	size_t pos;
	uint8_t alert;
	unsigned asked; /* RX_KEY_UPDATE_ASKED */
	uint8_t *plain; /* owned: all the plaintext, taken away or not */
	size_t plain_len;
	size_t plain_cap;
};

static void take(struct outcome *o, const uint8_t *p, size_t n)
{
	FUZZ_CHECK(o->plain_len + n <= o->plain_cap, "%zu bytes of plaintext from %zu on the wire",
		   o->plain_len + n, o->plain_cap);
	memcpy(o->plain + o->plain_len, p, n);
	o->plain_len += n;
}

/* What one call may leave: see the header. */
static void check_call(enum rx_result r, uint8_t alert, size_t pos, size_t before, size_t total,
		       const uint8_t *out, size_t n, size_t cap)
{
	FUZZ_CHECK(r >= RX_MORE && r <= RX_BAD, "result %d", (int)r);
	FUZZ_CHECK(pos >= before && pos <= total, "pos %zu after %zu, input %zu", pos, before,
		   total);
	FUZZ_CHECK(n <= cap, "n %zu over cap %zu", n, cap);
	if (r == RX_BAD)
		FUZZ_CHECK(
		    alert == RX_ALERT_UNEXPECTED_MESSAGE || alert == RX_ALERT_BAD_RECORD_MAC ||
			alert == RX_ALERT_RECORD_OVERFLOW || alert == RX_ALERT_DECODE_ERROR ||
			alert == RX_ALERT_INTERNAL_ERROR || alert == RX_ALERT_ILLEGAL_PARAMETER,
		    "RX_BAD with alert %u", alert);
	else if (r == RX_PEER_ALERT)
		FUZZ_CHECK(alert != 0, "RX_PEER_ALERT with alert 0");
	else
		FUZZ_CHECK(alert == 0, "result %d with alert %u", (int)r, alert);
	/* Every write lies below the final n plus one inner plaintext. */
	if (n < cap)
		FUZZ_CHECK(out[n] == 0 || out[n] == 23, "out[n] = %u", out[n]);
	size_t end = cap - n > RX_INNER_MAX ? n + RX_INNER_MAX : cap;
	for (size_t k = n + 1; k < end; k++)
		FUZZ_CHECK(out[k] == 0, "out[%zu] = %u past n %zu (result %d)", k, out[k], n,
			   (int)r);
}

/*
 * rx_open until it needs more input or stops, as tls.c calls it; on RX_FULL
 * the plaintext is taken away and the call made again. Returns the result.
 */
static enum rx_result drive(struct rx *rx, const struct tls_seg *seg, unsigned nseg, size_t total,
			    struct outcome *o, uint8_t *out, size_t cap, size_t *n)
{
	enum rx_result r = RX_BAD;
	/* Each pass opens a record, takes the plaintext away, or returns. */
	for (size_t guard = 0; guard <= 2 * (total / (RX_HEADER + RX_TAG + 1)) + 4; guard++) {
		size_t before = o->pos;
		uint8_t alert = 0xee;
		r = rx_open(rx, seg, nseg, &o->pos, out, cap, n, &alert);
		check_call(r, alert, o->pos, before, total, out, *n, cap);
		o->alert = alert;
		if (r == RX_KEY_UPDATE_ASKED) {
			o->asked++;
			continue;
		}
		if (r == RX_FULL && *n > 0) {
			take(o, out, *n);
			memset(out, 0, cap);
			*n = 0;
			continue;
		}
		return r;
	}
	FUZZ_CHECK(false, "rx_open did not settle on %zu bytes", total);
	return r;
}

static void outcome_init(struct outcome *o, size_t wire_len)
{
	memset(o, 0, sizeof(*o));
	o->plain_cap = wire_len;
	o->plain = fuzz_alloc(wire_len);
}

/* Opens the wire given as nseg segments, from a fresh rx, arriving at once or not. */
static void open_way(const struct mode *m, const struct tls_seg *seg, unsigned nseg, bool piecewise,
		     size_t cap, size_t wire_len, struct outcome *o)
{
	struct rx rx;
	rx_setup(m, &rx);
	outcome_init(o, wire_len);
	uint8_t *out = fuzz_alloc(cap);
	memset(out, 0, cap);
	size_t n = 0, total = 0;
	enum rx_result r = RX_MORE;
	for (unsigned k = piecewise ? 1 : nseg; k <= nseg; k++) {
		total = 0;
		for (unsigned i = 0; i < k; i++)
			total += seg[i].len;
		r = drive(&rx, seg, k, total, o, out, cap, &n);
		if (r != RX_MORE)
			break;
	}
	take(o, out, n);
	o->r = r;
	free(out);
	rx_wipe(&rx);
}

static void same_outcome(const struct outcome *a, const struct outcome *b, const char *way)
{
	FUZZ_CHECK(a->r == b->r && a->pos == b->pos && a->alert == b->alert && a->asked == b->asked,
		   "%s: result %d pos %zu alert %u asked %u, at once: %d %zu %u %u", way, (int)b->r,
		   b->pos, b->alert, b->asked, (int)a->r, a->pos, a->alert, a->asked);
	FUZZ_CHECK(a->plain_len == b->plain_len && !memcmp(a->plain, b->plain, a->plain_len),
		   "%s: %zu bytes of plaintext, at once %zu, or not the same", way, b->plain_len,
		   a->plain_len);
}

/* ---- mode plain: sealing, and what should come of it ------------------- */

struct sealer {
	enum rx_suite suite;
	struct rx keys; /* key and iv of the secret in force (from rx_init) */
	uint8_t secret[RX_SECRET_MAX];
	size_t hash_len;
	uint64_t seq;
	unsigned updates;
};

/* The next application traffic secret (RFC 8446 7.2), computed here. */
static void sealer_update(struct sealer *s)
{
	static const char label[] = "tls13 traffic upd";
	uint8_t info[2 + 1 + sizeof(label) - 1 + 1], next[RX_SECRET_MAX];
	info[0] = 0;
	info[1] = (uint8_t)s->hash_len;
	info[2] = (uint8_t)(sizeof(label) - 1);
	memcpy(info + 3, label, sizeof(label) - 1);
	info[sizeof(info) - 1] = 0;
	int type = s->hash_len == 48 ? WC_SHA384 : WC_SHA256;
	FUZZ_CHECK(wc_HKDF_Expand(type, s->secret, (word32)s->hash_len, info, sizeof(info), next,
				  (word32)s->hash_len) == 0,
		   "HKDF-Expand");
	memcpy(s->secret, next, s->hash_len);
	FUZZ_CHECK(rx_init(&s->keys, s->suite, s->secret, s->hash_len) == 0, "rx_init");
	s->seq = 0;
	s->updates++;
}

/* Header and sealed inner at out (RFC 8446 5.2); seq_skew 1 seals under the wrong nonce. */
static size_t seal(struct sealer *s, uint8_t outer, const uint8_t *inner, size_t len,
		   uint64_t seq_skew, uint8_t *out)
{
	out[0] = outer;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)((len + RX_TAG) >> 8);
	out[4] = (uint8_t)(len + RX_TAG);
	uint8_t nonce[12];
	uint64_t seq = s->seq++ + seq_skew;
	memcpy(nonce, s->keys.iv, sizeof(nonce));
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
	uint8_t *ct = out + RX_HEADER, *tag = out + RX_HEADER + len;
	int rc;
	if (s->suite == RX_CHACHA20_POLY1305_SHA256) {
		rc = wc_ChaCha20Poly1305_Encrypt(s->keys.key, nonce, out, RX_HEADER, inner,
						 (word32)len, ct, tag);
	} else {
		Aes aes;
		rc = wc_AesInit(&aes, NULL, INVALID_DEVID);
		if (rc == 0)
			rc = wc_AesGcmSetKey(&aes, s->keys.key, s->keys.key_len);
		if (rc == 0)
			rc = wc_AesGcmEncrypt(&aes, ct, inner, (word32)len, nonce, sizeof(nonce),
					      tag, RX_TAG, out, RX_HEADER);
		wc_AesFree(&aes);
	}
	FUZZ_CHECK(rc == 0, "sealing: %d", rc);
	return RX_HEADER + len + RX_TAG;
}

/* What rx_open should end with, from the records sealed (the first that stops it). */
struct expect {
	bool stopped;
	enum rx_result r;
	size_t pos;
	uint8_t alert; /* ANY_ALERT: any of RX_BAD's */
	unsigned asked;
	unsigned empties; /* records in a row without data (RX_EMPTY_MAX) */
	uint8_t *plain;	  /* owned */
	size_t plain_len;
};

static void stop(struct expect *e, enum rx_result r, size_t pos, uint8_t alert)
{
	e->stopped = true;
	e->r = r;
	e->pos = pos;
	e->alert = alert;
}

/*
 * The inner plaintext of a record that opened (RFC 8446 5.4, 6, 4.6.3):
 * false when rx_open goes on after it, else true with what it ends with.
 */
static bool expect_inner(struct expect *e, struct sealer *s, const uint8_t *inner, size_t len,
			 enum rx_result *r, uint8_t *alert)
{
	size_t clen = len;
	while (clen > 0 && inner[clen - 1] == 0)
		clen--;
	*r = RX_BAD;
	*alert = RX_ALERT_UNEXPECTED_MESSAGE;
	if (clen == 0)
		return true;
	uint8_t type = inner[--clen];
	if (type == 23) {
		if (clen == 0)
			return ++e->empties > RX_EMPTY_MAX; /* RX_BAD, unexpected_message */
		e->empties = 0;
		memcpy(e->plain + e->plain_len, inner, clen);
		e->plain_len += clen;
		return false;
	}
	if (type == 21) {
		*alert = ANY_ALERT;
		if (clen == 2) {
			*r = inner[1] == 0 ? RX_CLOSE_NOTIFY : RX_PEER_ALERT;
			*alert = inner[1];
		}
		return true;
	}
	if (type != 22)
		return true;
	if (clen != 5 || inner[0] != 24 || inner[1] != 0 || inner[2] != 0 || inner[3] != 1 ||
	    inner[4] > 1) {
		if (inner[0] == 24)
			*alert = ANY_ALERT;
		return true;
	}
	if (s->updates >= RX_KEY_UPDATES_MAX)
		return true;
	sealer_update(s);
	e->asked += inner[4];
	return false;
}

/*
 * One sealed record, at..end on the wire. Where RFC 8446 leaves the order
 * of the checks free, record.c's is taken: the header, the length, room
 * for the plaintext, the tag, then what the record holds.
 */
static void expect_record(struct expect *e, struct sealer *s, unsigned flags, const uint8_t *inner,
			  size_t len, size_t cap, size_t at, size_t end)
{
	if (e->stopped)
		return;
	enum rx_result r = RX_BAD;
	size_t pos = at;
	uint8_t alert = 0;
	if (flags & 2)
		alert = RX_ALERT_UNEXPECTED_MESSAGE;
	else if (len == 0)
		alert = ANY_ALERT; /* a length of 16: no content type */
	else if (len > RX_INNER_MAX)
		alert = RX_ALERT_RECORD_OVERFLOW;
	else if (len > cap)
		r = RX_FULL;
	else if (flags & 5)
		alert = RX_ALERT_BAD_RECORD_MAC;
	else if (expect_inner(e, s, inner, len, &r, &alert))
		pos = end;
	else
		return;
	stop(e, r, pos, alert);
}

/* Seals the records described in d[0..len) into wire; its length. */
static size_t seal_all(enum rx_suite suite, const uint8_t *d, size_t len, size_t cap, uint8_t *wire,
		       struct expect *e)
{
	static uint8_t inner[0xffff];
	struct sealer s = {.suite = suite, .hash_len = suite == RX_AES_256_GCM_SHA384 ? 48 : 32};
	memcpy(s.secret, secret48, s.hash_len);
	FUZZ_CHECK(rx_init(&s.keys, suite, s.secret, s.hash_len) == 0, "rx_init");
	size_t w = 0, i = 0;
	/* Each pass uses at least 3 bytes of d. */
	for (size_t guard = 0; guard <= len / 3 && i + 3 <= len; guard++) {
		unsigned flags = d[i];
		size_t k = (size_t)d[i + 1] << 8 | d[i + 2];
		i += 3;
		if (k > len - i)
			k = len - i;
		size_t fill = flags & 8 ? (flags >> 4) * FILLER_STEP : 0;
		size_t il = fill + k;
		if (il > sizeof(inner) - RX_TAG)
			il = sizeof(inner) - RX_TAG;
		if (w + RX_HEADER + il + RX_TAG > WIRE_MAX)
			break;
		memset(inner, 'x', fill);
		memcpy(inner + fill, d + i, il - fill);
		i += k;
		size_t at = w;
		w += seal(&s, flags & 2 ? 22 : 23, inner, il, (flags & 4) ? 1 : 0, wire + w);
		if (flags & 1)
			wire[w - 1 - (flags >> 4)] ^= (uint8_t)(1u << (flags & 7));
		expect_record(e, &s, flags, inner, il, cap, at, w);
	}
	if (!e->stopped)
		stop(e, RX_MORE, w, 0);
	rx_wipe(&s.keys);
	return w;
}

/* ---- mode plain, TLS 1.2 ------------------------------------------------ */

struct sealer12 {
	enum rx_suite suite;
	uint8_t key[32], iv[12];
	uint64_t seq;
};

/*
 * One TLS 1.2 record at out: header, AES-GCM's explicit nonce (not the
 * sequence number here: a receiver must take it from the wire), the
 * ciphertext and tag of plain under the AAD seq | type | 0303 | length
 * (RFC 5246 6.2.3.3, RFC 5288 3, RFC 7905 2). seq_skew 1 seals under the
 * wrong sequence number. Its size.
 */
static size_t seal12(struct sealer12 *s, uint8_t type, const uint8_t *plain, size_t len,
		     uint64_t seq_skew, uint8_t *out)
{
	size_t ex = s->suite == RX_CHACHA20_POLY1305_SHA256 ? 0 : 8, rlen = ex + len + RX_TAG;
	uint64_t seq = s->seq++ + seq_skew;
	uint8_t aad[13], nonce[12];
	for (int i = 0; i < 8; i++)
		aad[i] = (uint8_t)(seq >> (56 - 8 * i));
	aad[8] = type;
	aad[9] = 3;
	aad[10] = 3;
	aad[11] = (uint8_t)(len >> 8);
	aad[12] = (uint8_t)len;
	memcpy(out, aad + 8, 3);
	out[3] = (uint8_t)(rlen >> 8);
	out[4] = (uint8_t)rlen;
	uint8_t *ct = out + RX_HEADER + ex, *tag = ct + len;
	static const uint8_t none[1];
	int rc;
	if (ex) {
		memcpy(nonce, s->iv, 4);
		for (int i = 0; i < 8; i++)
			nonce[4 + i] = (uint8_t)(~seq >> (8 * i));
		memcpy(out + RX_HEADER, nonce + 4, 8);
		Aes aes;
		rc = wc_AesInit(&aes, NULL, INVALID_DEVID);
		if (rc == 0)
			rc = wc_AesGcmSetKey(&aes, s->key, (word32)key_len_of(s->suite));
		if (rc == 0)
			rc = wc_AesGcmEncrypt(&aes, ct, len ? plain : none, (word32)len, nonce,
					      sizeof(nonce), tag, RX_TAG, aad, sizeof(aad));
		wc_AesFree(&aes);
	} else {
		memcpy(nonce, s->iv, sizeof(nonce));
		for (int i = 0; i < 8; i++)
			nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
		rc = wc_ChaCha20Poly1305_Encrypt(s->key, nonce, aad, sizeof(aad),
						 len ? plain : none, (word32)len, ct, tag);
	}
	FUZZ_CHECK(rc == 0, "sealing: %d", rc);
	return RX_HEADER + rlen;
}

/*
 * One sealed TLS 1.2 record, at..end on the wire; seq the one it was
 * sealed for. record.c's order of the checks: the header (type, length),
 * room for the plaintext, the sequence number limit, the tag, then the
 * content (RFC 5246 6.2.1, 6.2.3.3, 7.2).
 */
static void expect_record12(struct expect *e, unsigned flags, uint8_t type, uint64_t seq,
			    const uint8_t *plain, size_t len, size_t cap, size_t at, size_t end)
{
	if (e->stopped)
		return;
	enum rx_result r = RX_BAD;
	size_t pos = at;
	uint8_t alert = 0;
	if (type != 23 && type != 21)
		alert = RX_ALERT_UNEXPECTED_MESSAGE;
	else if (len > 16384)
		alert = RX_ALERT_RECORD_OVERFLOW;
	else if (len > cap)
		r = RX_FULL;
	else if (seq == UINT64_MAX)
		alert = RX_ALERT_INTERNAL_ERROR;
	else if (flags & 7)
		alert = RX_ALERT_BAD_RECORD_MAC;
	else if ((type == 23 && len == 0) ||
		 (type == 21 && len == 2 && plain[1] != 0 && plain[0] == 1)) {
		if (++e->empties <= RX_EMPTY_MAX)
			return; /* no data, or a warning: goes on */
		pos = end;
		alert = RX_ALERT_UNEXPECTED_MESSAGE;
	} else if (type == 23) {
		e->empties = 0;
		memcpy(e->plain + e->plain_len, plain, len);
		e->plain_len += len;
		return;
	} else {
		pos = end;
		alert = ANY_ALERT;
		if (len == 2) {
			r = plain[1] == 0 ? RX_CLOSE_NOTIFY : RX_PEER_ALERT;
			alert = plain[1];
		}
	}
	stop(e, r, pos, alert);
}

/* Seals the TLS 1.2 records described in d[0..len) into wire; its length. */
static size_t seal_all12(const struct mode *m, const uint8_t *d, size_t len, size_t cap,
			 uint8_t *wire, struct expect *e)
{
	static uint8_t plain[0xffff];
	struct sealer12 s = {.suite = m->suite, .seq = m->seq};
	memcpy(s.key, secret48, key_len_of(m->suite));
	memcpy(s.iv, secret48 + IV12_AT, iv_len12_of(m->suite));
	/* The record's length field holds explicit nonce, plaintext and tag. */
	size_t max = 0xffff - 8 - RX_TAG, w = 0, i = 0;
	/* Each pass uses at least 4 bytes of d. */
	for (size_t guard = 0; guard <= len / 4 && i + 4 <= len; guard++) {
		unsigned flags = d[i];
		uint8_t type = d[i + 1];
		size_t k = (size_t)d[i + 2] << 8 | d[i + 3];
		i += 4;
		if (k > len - i)
			k = len - i;
		size_t fill = flags & 8 ? (flags >> 4) * FILLER_STEP : 0;
		size_t pl = fill + k;
		if (pl > max)
			pl = max;
		if (w + RX_HEADER + 8 + pl + RX_TAG > WIRE_MAX)
			break;
		memset(plain, 'x', fill);
		memcpy(plain + fill, d + i, pl - fill);
		i += k;
		size_t at = w;
		uint64_t seq = s.seq;
		w += seal12(&s, type, plain, pl, (flags & 4) ? 1 : 0, wire + w);
		if (flags & 1)
			wire[w - 1 - (flags >> 4)] ^= (uint8_t)(1u << (flags & 7));
		/* Bit 0: never the one flag 1 flips (bit 3 or 7 with flag 2 set). */
		if (flags & 2)
			wire[at + RX_HEADER] ^= 0x01;
		expect_record12(e, flags, type, seq, plain, pl, cap, at, w);
	}
	if (!e->stopped)
		stop(e, RX_MORE, w, 0);
	explicit_bzero(&s, sizeof(s));
	return w;
}

/* ---- the target --------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum rx_suite suites[3] = {RX_AES_128_GCM_SHA256, RX_AES_256_GCM_SHA384,
						RX_CHACHA20_POLY1305_SHA256};
	static const uint64_t seqs12[4] = {1, 0, UINT64_MAX - 3, 0x0102030405060708ull};
	static uint8_t sealed[WIRE_MAX];
	if (size < 3)
		return 0;
	struct mode m = {.suite = suites[(data[0] & 0x3f) % 3], .tls12 = data[0] & 0x40};
	if (m.tls12)
		m.seq = seqs12[(data[2] >> 3) & 3];
	bool plain = data[0] & 0x80;
	size_t cap = data[1] ? (size_t)data[1] * 67 : 4 * RX_INNER_MAX;
	unsigned ncut = data[2] & CUTS_MAX;
	size_t h = 3 + 2 * (size_t)ncut;
	if (size < h)
		return 0;
	const uint8_t *rest = data + h;
	size_t rest_len = size - h;

	struct expect e = {.stopped = false};
	const uint8_t *src = rest;
	size_t wire_len = rest_len;
	if (plain) {
		e.plain = fuzz_alloc(WIRE_MAX);
		wire_len = m.tls12 ? seal_all12(&m, rest, rest_len, cap, sealed, &e)
				   : seal_all(m.suite, rest, rest_len, cap, sealed, &e);
		src = sealed;
	}
	/* Exact-size pieces, so that a read past one is caught. */
	size_t cuts[CUTS_MAX + 1];
	for (unsigned i = 0; i < ncut; i++)
		cuts[i] =
		    (size_t)(((uint64_t)(data[3 + 2 * i] << 8 | data[4 + 2 * i]) * wire_len) >> 16);
	cuts[ncut] = wire_len;
	for (unsigned i = 1; i <= ncut; i++)
		for (unsigned j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
			size_t t = cuts[j];
			cuts[j] = cuts[j - 1];
			cuts[j - 1] = t;
		}
	struct tls_seg seg[CUTS_MAX + 1];
	uint8_t *piece[CUTS_MAX + 1];
	size_t from = 0;
	for (unsigned i = 0; i <= ncut; i++) {
		size_t k = cuts[i] - from;
		piece[i] = fuzz_alloc(k);
		memcpy(piece[i], src + from, k);
		seg[i] = (struct tls_seg){piece[i], k};
		from = cuts[i];
	}
	uint8_t *whole = fuzz_alloc(wire_len);
	memcpy(whole, src, wire_len);
	struct tls_seg one = {whole, wire_len};

	struct outcome at_once, pieces, bytes;
	open_way(&m, &one, 1, false, cap, wire_len, &at_once);
	open_way(&m, seg, ncut + 1, true, cap, wire_len, &pieces);
	same_outcome(&at_once, &pieces, "in pieces");
	free(pieces.plain);
	if (wire_len <= BYTE_SEGS) {
		struct tls_seg b[BYTE_SEGS];
		for (size_t i = 0; i < wire_len; i++)
			b[i] = (struct tls_seg){whole + i, 1};
		open_way(&m, b, (unsigned)wire_len, false, cap, wire_len, &bytes);
		same_outcome(&at_once, &bytes, "a byte a segment");
		free(bytes.plain);
	}

	if (plain) {
		const struct outcome *o = &at_once;
		FUZZ_CHECK(o->r == e.r && o->pos == e.pos && o->asked == e.asked,
			   "result %d pos %zu asked %u, expected %d %zu %u", (int)o->r, o->pos,
			   o->asked, (int)e.r, e.pos, e.asked);
		FUZZ_CHECK(e.alert == ANY_ALERT ? o->alert != 0 : o->alert == e.alert,
			   "alert %u, expected %u", o->alert, e.alert);
		FUZZ_CHECK(o->plain_len == e.plain_len && !memcmp(o->plain, e.plain, e.plain_len),
			   "%zu bytes of plaintext, expected %zu, or not those", o->plain_len,
			   e.plain_len);
		free(e.plain);
	}
	free(at_once.plain);
	free(whole);
	for (unsigned i = 0; i <= ncut; i++)
		free(piece[i]);
	return 0;
}
