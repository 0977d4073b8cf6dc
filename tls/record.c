/*
 * record.c - TLS 1.3 records from the client, opened here (see record.h).
 *
 * A record is opened only when all of it has arrived: its header and tag
 * are gathered (21 bytes), its body is decrypted piece by piece with the
 * AEAD's streaming interface, from the receive buffers straight into out.
 * The key schedule is made on the stack for each record and wiped after
 * (AES: about 60 ns), so an idle session holds only its key bytes.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/hmac.h>

#include "record.h"

#define CT_APPLICATION_DATA 23
#define CT_ALERT	    21
#define CT_HANDSHAKE	    22
#define HS_KEY_UPDATE	    24

enum rx_suite rx_suite_by_name(const char *name)
{
	if (!name)
		return 0;
	/* wolfSSL's own names, and the IANA ones (RFC 8446 B.4). */
	if (!strcmp(name, "TLS13-AES128-GCM-SHA256") || !strcmp(name, "TLS_AES_128_GCM_SHA256"))
		return RX_AES_128_GCM_SHA256;
	if (!strcmp(name, "TLS13-AES256-GCM-SHA384") || !strcmp(name, "TLS_AES_256_GCM_SHA384"))
		return RX_AES_256_GCM_SHA384;
	if (!strcmp(name, "TLS13-CHACHA20-POLY1305-SHA256") ||
	    !strcmp(name, "TLS_CHACHA20_POLY1305_SHA256"))
		return RX_CHACHA20_POLY1305_SHA256;
	return 0;
}

/* HKDF-Expand-Label(secret, label, "", len) (RFC 8446 7.1). */
static int expand_label(const struct rx *rx, const uint8_t *secret, const char *label, uint8_t *out,
			size_t len)
{
	uint8_t info[2 + 1 + 6 + 16 + 1];
	size_t ll = strlen(label);
	if (ll > 16)
		return -EINVAL;
	size_t i = 0;
	info[i++] = (uint8_t)(len >> 8);
	info[i++] = (uint8_t)len;
	info[i++] = (uint8_t)(6 + ll);
	memcpy(info + i, "tls13 ", 6);
	i += 6;
	memcpy(info + i, label, ll);
	i += ll;
	info[i++] = 0; /* empty context */
	int type = rx->hash_len == 48 ? WC_SHA384 : WC_SHA256;
	return wc_HKDF_Expand(type, secret, rx->hash_len, info, (word32)i, out, (word32)len) == 0
		   ? 0
		   : -EINVAL;
}

/* Traffic key and iv from the current secret (RFC 8446 7.3); sequence 0. */
static int derive(struct rx *rx)
{
	rx->seq = 0;
	if (expand_label(rx, rx->secret, "key", rx->key, rx->key_len) != 0 ||
	    expand_label(rx, rx->secret, "iv", rx->iv, sizeof(rx->iv)) != 0)
		return -EINVAL;
	return 0;
}

int rx_init(struct rx *rx, enum rx_suite suite, const uint8_t *secret, size_t len)
{
	memset(rx, 0, sizeof(*rx));
	switch (suite) {
	case RX_AES_128_GCM_SHA256:
		rx->hash_len = 32, rx->key_len = 16;
		break;
	case RX_AES_256_GCM_SHA384:
		rx->hash_len = 48, rx->key_len = 32;
		break;
	case RX_CHACHA20_POLY1305_SHA256:
		rx->hash_len = 32, rx->key_len = 32;
		break;
	default:
		return -EINVAL;
	}
	if (len != rx->hash_len)
		return -EINVAL;
	memcpy(rx->secret, secret, len);
	if (derive(rx) != 0) {
		rx_wipe(rx);
		return -EINVAL;
	}
	rx->suite = (uint8_t)suite;
	return 0;
}

void rx_wipe(struct rx *rx)
{
	explicit_bzero(rx, sizeof(*rx));
}

/* ---- input as one stream of segments ---------------------------------- */

struct cursor {
	const struct tls_seg *seg;
	unsigned nseg, i; /* current segment */
	size_t off;	  /* in it */
};

/* A cursor at stream offset pos (which must lie within the input). */
static void cursor_at(struct cursor *c, const struct tls_seg *seg, unsigned nseg, size_t pos)
{
	c->seg = seg;
	c->nseg = nseg;
	c->i = 0;
	while (c->i < nseg && pos >= seg[c->i].len) {
		pos -= seg[c->i].len;
		c->i++;
	}
	c->off = pos;
}

/* The next contiguous run of at most max bytes; 0 at the end. */
static size_t cursor_next(struct cursor *c, size_t max, const uint8_t **p)
{
	while (c->i < c->nseg && c->off == c->seg[c->i].len) {
		c->i++;
		c->off = 0;
	}
	if (c->i == c->nseg)
		return 0;
	size_t k = c->seg[c->i].len - c->off;
	if (k > max)
		k = max;
	*p = c->seg[c->i].p + c->off;
	c->off += k;
	return k;
}

/* Copies len bytes from the cursor; false if the input ends first. */
static bool cursor_copy(struct cursor *c, uint8_t *dst, size_t len)
{
	for (unsigned guard = 0; len > 0 && guard <= c->nseg; guard++) {
		const uint8_t *p;
		size_t k = cursor_next(c, len, &p);
		if (k == 0)
			return false;
		memcpy(dst, p, k);
		dst += k;
		len -= k;
	}
	return len == 0;
}

/* ---- one record --------------------------------------------------------- */

/*
 * Decrypts len bytes at the cursor into out and checks tag; hdr is the
 * additional data. 0 when the tag verified.
 */
static int aead_open(const struct rx *rx, const uint8_t nonce[12], const uint8_t *hdr,
		     struct cursor *c, size_t len, uint8_t *out, const uint8_t *tag)
{
	int rc = -1;
	if (rx->suite == RX_CHACHA20_POLY1305_SHA256) {
		ChaChaPoly_Aead a;
		uint8_t calc[RX_TAG];
		rc = wc_ChaCha20Poly1305_Init(&a, rx->key, nonce, CHACHA20_POLY1305_AEAD_DECRYPT);
		if (rc == 0)
			rc = wc_ChaCha20Poly1305_UpdateAad(&a, hdr, RX_HEADER);
		for (unsigned guard = 0; rc == 0 && len > 0 && guard <= c->nseg; guard++) {
			const uint8_t *p;
			size_t k = cursor_next(c, len, &p);
			rc = k ? wc_ChaCha20Poly1305_UpdateData(&a, p, out, (word32)k) : -1;
			out += k;
			len -= k;
		}
		if (rc == 0 && len == 0)
			rc = wc_ChaCha20Poly1305_Final(&a, calc);
		if (rc == 0)
			rc = wc_ChaCha20Poly1305_CheckTag(tag, calc);
		explicit_bzero(&a, sizeof(a));
		return rc == 0 && len == 0 ? 0 : -1;
	}
	Aes aes;
	if (wc_AesInit(&aes, NULL, INVALID_DEVID) != 0)
		return -1;
	rc = wc_AesGcmInit(&aes, rx->key, rx->key_len, nonce, 12);
	if (rc == 0)
		rc = wc_AesGcmDecryptUpdate(&aes, NULL, NULL, 0, hdr, RX_HEADER);
	for (unsigned guard = 0; rc == 0 && len > 0 && guard <= c->nseg; guard++) {
		const uint8_t *p;
		size_t k = cursor_next(c, len, &p);
		rc = k ? wc_AesGcmDecryptUpdate(&aes, out, p, (word32)k, NULL, 0) : -1;
		out += k;
		len -= k;
	}
	if (rc == 0 && len == 0)
		rc = wc_AesGcmDecryptFinal(&aes, tag, RX_TAG);
	wc_AesFree(&aes);
	explicit_bzero(&aes, sizeof(aes));
	return rc == 0 && len == 0 ? 0 : -1;
}

/* A KeyUpdate (RFC 8446 4.6.3): the next secret, key and iv. */
static enum rx_result key_update(struct rx *rx, const uint8_t *m, size_t len, uint8_t *alert)
{
	/* One message, alone at the end of its record (RFC 8446 5.1). */
	if (len != 5 || m[0] != HS_KEY_UPDATE || m[1] != 0 || m[2] != 0 || m[3] != 1 || m[4] > 1) {
		*alert = len >= 4 && m[0] == HS_KEY_UPDATE ? RX_ALERT_DECODE_ERROR
							   : RX_ALERT_UNEXPECTED_MESSAGE;
		return RX_BAD;
	}
	if (rx->key_updates >= RX_KEY_UPDATES_MAX) {
		*alert = RX_ALERT_UNEXPECTED_MESSAGE;
		return RX_BAD;
	}
	uint8_t next[RX_SECRET_MAX];
	if (expand_label(rx, rx->secret, "traffic upd", next, rx->hash_len) != 0) {
		*alert = RX_ALERT_INTERNAL_ERROR;
		return RX_BAD;
	}
	memcpy(rx->secret, next, rx->hash_len);
	explicit_bzero(next, sizeof(next));
	if (derive(rx) != 0) {
		*alert = RX_ALERT_INTERNAL_ERROR;
		return RX_BAD;
	}
	rx->key_updates++;
	return m[4] == 1 ? RX_KEY_UPDATE_ASKED : RX_MORE;
}

enum rx_result rx_open(struct rx *rx, const struct tls_seg *seg, unsigned nseg, size_t *pos,
		       uint8_t *out, size_t cap, size_t *n, uint8_t *alert)
{
	*alert = 0;
	if (!rx->suite) {
		*alert = RX_ALERT_INTERNAL_ERROR;
		return RX_BAD;
	}
	size_t total = 0;
	for (unsigned i = 0; i < nseg; i++)
		total += seg[i].len;
	/* Bounded: each pass uses at least RX_HEADER + RX_TAG + 1 bytes or returns. */
	for (size_t guard = 0; guard <= total / (RX_HEADER + RX_TAG + 1) + 1; guard++) {
		if (total - *pos < RX_HEADER)
			return RX_MORE;
		struct cursor c;
		uint8_t hdr[RX_HEADER];
		cursor_at(&c, seg, nseg, *pos);
		(void)cursor_copy(&c, hdr, RX_HEADER);
		size_t len = (size_t)hdr[3] << 8 | hdr[4];
		/* After the handshake every record is protected (RFC 8446 5). */
		if (hdr[0] != CT_APPLICATION_DATA || hdr[1] != 3 || hdr[2] != 3) {
			*alert = RX_ALERT_UNEXPECTED_MESSAGE;
			return RX_BAD;
		}
		if (len < RX_TAG + 1) {
			*alert = RX_ALERT_DECODE_ERROR;
			return RX_BAD;
		}
		if (len > RX_CIPHERTEXT_MAX || len - RX_TAG > RX_INNER_MAX) {
			*alert = RX_ALERT_RECORD_OVERFLOW;
			return RX_BAD;
		}
		if (total - *pos < RX_HEADER + len)
			return RX_MORE;
		size_t inner = len - RX_TAG;
		if (cap - *n < inner)
			return RX_FULL;
		if (rx->seq == UINT64_MAX) {
			*alert = RX_ALERT_INTERNAL_ERROR; /* RFC 8446 5.3: never wrap */
			return RX_BAD;
		}
		uint8_t nonce[12], tag[RX_TAG];
		memcpy(nonce, rx->iv, sizeof(nonce));
		for (int i = 0; i < 8; i++)
			nonce[4 + i] ^= (uint8_t)(rx->seq >> (56 - 8 * i));
		struct cursor tc;
		cursor_at(&tc, seg, nseg, *pos + RX_HEADER + inner);
		(void)cursor_copy(&tc, tag, RX_TAG);
		uint8_t *dst = out + *n;
		if (aead_open(rx, nonce, hdr, &c, inner, dst, tag) != 0) {
			explicit_bzero(dst, inner);
			*alert = RX_ALERT_BAD_RECORD_MAC;
			return RX_BAD;
		}
		rx->seq++;
		*pos += RX_HEADER + len;
		/* The content type is the last non-zero byte; zeros after it are padding. */
		size_t clen = inner;
		while (clen > 0 && dst[clen - 1] == 0)
			clen--;
		if (clen == 0) {
			*alert = RX_ALERT_UNEXPECTED_MESSAGE;
			return RX_BAD;
		}
		uint8_t type = dst[--clen];
		if (type == CT_APPLICATION_DATA) {
			*n += clen;
			continue;
		}
		enum rx_result r;
		if (type == CT_ALERT) {
			if (clen != 2) {
				*alert = RX_ALERT_DECODE_ERROR;
				r = RX_BAD;
			} else if (dst[1] == 0) {
				r = RX_CLOSE_NOTIFY;
			} else {
				*alert = dst[1];
				r = RX_PEER_ALERT;
			}
		} else if (type == CT_HANDSHAKE) {
			r = key_update(rx, dst, clen, alert);
		} else {
			*alert = RX_ALERT_UNEXPECTED_MESSAGE;
			r = RX_BAD;
		}
		explicit_bzero(dst, inner);
		if (r != RX_MORE)
			return r;
	}
	return RX_MORE;
}
