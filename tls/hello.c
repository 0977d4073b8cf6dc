/*
 * hello.c - ClientHello scanner (see hello.h).
 *
 * The handshake layer is read through a cursor that steps over record
 * headers, so a ClientHello split over several records (RFC 8446 5.1) reads
 * like one. Lengths nest: the handshake body, the extensions block and each
 * extension end at offsets (in handshake bytes) that every inner length is
 * checked against. Running out of input is HELLO_MORE until the input cap
 * is reached; anything that breaks the grammar is HELLO_BAD.
 *
 * Bugs: signature_algorithms_cert (50) is not read; the certificate is
 * chosen by its key, not by how its issuer signed it.
 */
#include <string.h>

#include "hello.h"

#define REC_HANDSHAKE	   22
#define HS_CLIENT_HELLO	   1
#define REC_BODY_MAX	   16384u /* RFC 8446 5.1: 2^14 */
#define HELLO_BODY_MIN	   (2u + 32u + 1u + 2u + 2u + 1u + 1u)
#define SESSION_ID_MAX	   32u
#define EXT_SUPPORTED_VERS 43u
#define EXT_SIG_ALGS	   13u
#define EXT_GROUPS	   10u

struct cursor {
	const uint8_t *p;      /* borrowed: the input */
	size_t len;	       /* input bytes looked at (at most HELLO_INPUT_MAX) */
	size_t pos;	       /* next input byte */
	size_t rec_left;       /* bytes left in the current record */
	size_t hs;	       /* handshake bytes read so far */
	bool capped;	       /* len was cut to HELLO_INPUT_MAX */
	enum hello_result err; /* HELLO_OK until something stops the scan */
};

static bool fail(struct cursor *c, enum hello_result r)
{
	if (c->err == HELLO_OK)
		c->err = r;
	return false;
}

/* The input ended: more may help, unless the cap was reached. */
static bool short_input(struct cursor *c)
{
	return fail(c, c->capped ? HELLO_BAD : HELLO_MORE);
}

/* Makes sure a record has bytes left, reading the next record header. */
static bool record(struct cursor *c)
{
	if (c->rec_left > 0)
		return true;
	if (c->len - c->pos < 5)
		return short_input(c);
	const uint8_t *r = c->p + c->pos;
	size_t n = (size_t)r[3] << 8 | r[4];
	/* Zero-length handshake fragments are forbidden (RFC 8446 5.1). */
	if (r[0] != REC_HANDSHAKE || r[1] != 3 || n == 0 || n > REC_BODY_MAX)
		return fail(c, HELLO_BAD);
	c->pos += 5;
	c->rec_left = n;
	return true;
}

/* Reads n handshake bytes into out (NULL: skips them). */
static bool take(struct cursor *c, uint8_t *out, size_t n)
{
	while (n > 0) {
		if (!record(c))
			return false;
		size_t avail = c->len - c->pos;
		if (avail == 0)
			return short_input(c);
		size_t k = n;
		if (k > c->rec_left)
			k = c->rec_left;
		if (k > avail)
			k = avail;
		if (out) {
			memcpy(out, c->p + c->pos, k);
			out += k;
		}
		c->pos += k;
		c->rec_left -= k;
		c->hs += k;
		n -= k;
	}
	return true;
}

static bool u8(struct cursor *c, unsigned *v)
{
	uint8_t b[1];
	if (!take(c, b, 1))
		return false;
	*v = b[0];
	return true;
}

static bool u16(struct cursor *c, unsigned *v)
{
	uint8_t b[2];
	if (!take(c, b, 2))
		return false;
	*v = (unsigned)b[0] << 8 | b[1];
	return true;
}

/* A vector with a length prefix of w bytes that must end at or before end. */
static bool vec(struct cursor *c, unsigned w, size_t end, size_t *vend)
{
	unsigned n;
	if (!(w == 1 ? u8(c, &n) : u16(c, &n)))
		return false;
	if (c->hs + n > end)
		return fail(c, HELLO_BAD);
	*vend = c->hs + n;
	return true;
}

static unsigned curve_of_group(unsigned g)
{
	switch (g) {
	case 23:
		return HELLO_P256;
	case 24:
		return HELLO_P384;
	case 25:
		return HELLO_P521;
	}
	return 0;
}

static void note_suite(struct hello_info *h, unsigned s)
{
	h->nsuites++;
	switch (s) {
	case 0xc02b: /* ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 */
	case 0xc02c: /* ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 */
	case 0xcca9: /* ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 */
		h->ecdsa_suites++;
		break;
	case 0xc02f: /* ECDHE_RSA_WITH_AES_128_GCM_SHA256 */
	case 0xc030: /* ECDHE_RSA_WITH_AES_256_GCM_SHA384 */
	case 0xcca8: /* ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 */
		h->rsa_suites++;
		break;
	}
}

static void note_sigalg(struct hello_info *h, unsigned s)
{
	unsigned hash = s >> 8, sig = s & 0xff;
	if (s == 0x0403)
		h->ecdsa_sigalgs |= HELLO_P256;
	else if (s == 0x0503)
		h->ecdsa_sigalgs |= HELLO_P384;
	else if (s == 0x0603)
		h->ecdsa_sigalgs |= HELLO_P521;
	/* TLS 1.2 pairs: hash sha1(2)..sha512(6), signature rsa(1) or ecdsa(3). */
	if (sig == 3 && hash >= 2 && hash <= 6)
		h->ecdsa_tls12 = true;
	if (sig == 1 && hash >= 2 && hash <= 6)
		h->rsa_sigalgs = true;
	if ((s >= 0x0804 && s <= 0x0806) || (s >= 0x0809 && s <= 0x080b))
		h->rsa_sigalgs = true; /* rsa_pss_rsae_*, rsa_pss_pss_* */
}

/* A list of 16-bit values filling the extension [.., end) after its w-byte length. */
static bool list16(struct cursor *c, unsigned w, size_t end, struct hello_info *h,
		   void (*note)(struct hello_info *, unsigned))
{
	size_t lend;
	if (!vec(c, w, end, &lend))
		return false;
	if (lend != end || lend == c->hs || (lend - c->hs) % 2)
		return fail(c, HELLO_BAD);
	while (c->hs < lend) {
		unsigned v;
		if (!u16(c, &v))
			return false;
		note(h, v);
	}
	return true;
}

static void note_version(struct hello_info *h, unsigned v)
{
	if (v == 0x0304)
		h->tls13 = true;
}

static void note_group(struct hello_info *h, unsigned g)
{
	h->groups |= (uint8_t)curve_of_group(g);
}

static bool extensions(struct cursor *c, size_t end, struct hello_info *h)
{
	size_t xend;
	if (!vec(c, 2, end, &xend))
		return false;
	if (xend != end)
		return fail(c, HELLO_BAD);
	unsigned seen = 0;
	while (c->hs < xend) {
		unsigned type, bit = 0;
		size_t eend;
		if (!u16(c, &type) || !vec(c, 2, xend, &eend))
			return false;
		bool ok = true;
		switch (type) {
		case EXT_SUPPORTED_VERS:
			bit = 1;
			ok = list16(c, 1, eend, h, note_version);
			break;
		case EXT_SIG_ALGS:
			bit = 2;
			h->has_sigalgs = true;
			ok = list16(c, 2, eend, h, note_sigalg);
			break;
		case EXT_GROUPS:
			bit = 4;
			h->has_groups = true;
			ok = list16(c, 2, eend, h, note_group);
			break;
		default:
			ok = take(c, NULL, eend - c->hs);
			break;
		}
		if (!ok)
			return false;
		/* RFC 8446 4.2: one extension of each type at most. */
		if (seen & bit)
			return fail(c, HELLO_BAD);
		seen |= bit;
	}
	return true;
}

static bool client_hello(struct cursor *c, struct hello_info *h)
{
	uint8_t hdr[4];
	if (!take(c, hdr, 4))
		return false;
	size_t body = (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
	if (hdr[0] != HS_CLIENT_HELLO || body < HELLO_BODY_MIN)
		return fail(c, HELLO_BAD);
	size_t end = c->hs + body;
	unsigned v;
	size_t vend;
	if (!u16(c, &v))
		return false;
	if (v >> 8 != 3)
		return fail(c, HELLO_BAD);
	h->legacy_version = (uint16_t)v;
	if (!take(c, NULL, 32) || !vec(c, 1, end, &vend)) /* random, session id */
		return false;
	if (vend - c->hs > SESSION_ID_MAX)
		return fail(c, HELLO_BAD);
	if (!take(c, NULL, vend - c->hs) || !vec(c, 2, end, &vend))
		return false;
	if (vend == c->hs || (vend - c->hs) % 2)
		return fail(c, HELLO_BAD);
	while (c->hs < vend) {
		if (!u16(c, &v))
			return false;
		note_suite(h, v);
	}
	if (!vec(c, 1, end, &vend)) /* compression methods */
		return false;
	if (vend == c->hs)
		return fail(c, HELLO_BAD);
	if (!take(c, NULL, vend - c->hs))
		return false;
	/* A TLS 1.2 ClientHello may end here, without extensions. */
	return c->hs == end || extensions(c, end, h);
}

enum hello_result hello_scan(const uint8_t *p, size_t len, struct hello_info *h)
{
	struct cursor c = {.p = p, .len = len, .err = HELLO_OK};
	if (len >= HELLO_INPUT_MAX) {
		c.len = HELLO_INPUT_MAX;
		c.capped = true;
	}
	memset(h, 0, sizeof(*h));
	if (!client_hello(&c, h))
		return c.err;
	h->bytes = (uint32_t)c.pos;
	return HELLO_OK;
}

bool hello_accepts_ecdsa(const struct hello_info *h, unsigned curve)
{
	if (h->tls13)
		return (h->ecdsa_sigalgs & curve) != 0;
	if (h->ecdsa_suites == 0)
		return false;
	if (h->has_sigalgs && !h->ecdsa_tls12)
		return false;
	return !h->has_groups || (h->groups & curve) != 0;
}
