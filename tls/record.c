/*
 * record.c - TLS records from the client, opened here (see record.h).
 *
 * A record is opened only when all of it has arrived: its header, tag and
 * any explicit nonce are gathered, its body is decrypted piece by piece with the
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
#define GCM_EXPLICIT_NONCE  8 /* TLS 1.2 AES-GCM (RFC 5288 3) */
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

int rx_init_tls12(struct rx *rx, enum rx_suite suite, const uint8_t *key, size_t key_len,
		  const uint8_t *iv, size_t iv_len, uint64_t seq)
{
	memset(rx, 0, sizeof(*rx));
	size_t want_key = suite == RX_AES_128_GCM_SHA256 ? 16 : 32;
	size_t want_iv = suite == RX_CHACHA20_POLY1305_SHA256 ? 12 : 4;
	if (suite < RX_AES_128_GCM_SHA256 || suite > RX_CHACHA20_POLY1305_SHA256 ||
	    key_len != want_key || iv_len != want_iv)
		return -EINVAL;
	memcpy(rx->key, key, key_len);
	memcpy(rx->iv, iv, iv_len);
	rx->key_len = (uint8_t)key_len;
	rx->iv_len = (uint8_t)iv_len;
	rx->seq = seq;
	rx->tls12 = 1;
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
 * Clears plaintext that is not handed on. Out of line: inlined, gcc's
 * value ranges under -fsanitize=undefined took dst + clen for a null
 * pointer and failed the build (-Werror=nonnull).
 */
static __attribute__((noinline)) void wipe(uint8_t *p, size_t n)
{
	if (p && n)
		explicit_bzero(p, n);
}

/*
 * Decrypts len bytes at the cursor into out and checks tag; aad[0..aad_len)
 * is the additional data. 0 when the tag verified.
 */
static int aead_open(const struct rx *rx, const uint8_t nonce[12], const uint8_t *aad,
		     size_t aad_len, struct cursor *c, size_t len, uint8_t *out, const uint8_t *tag)
{
	int rc = -1;
	if (rx->suite == RX_CHACHA20_POLY1305_SHA256) {
		ChaChaPoly_Aead a;
		uint8_t calc[RX_TAG];
		rc = wc_ChaCha20Poly1305_Init(&a, rx->key, nonce, CHACHA20_POLY1305_AEAD_DECRYPT);
		if (rc == 0)
			rc = wc_ChaCha20Poly1305_UpdateAad(&a, aad, (word32)aad_len);
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
		rc = wc_AesGcmDecryptUpdate(&aes, NULL, NULL, 0, aad, (word32)aad_len);
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
	if (len != 5 || m[0] != HS_KEY_UPDATE || m[1] != 0 || m[2] != 0 || m[3] != 1) {
		*alert = len >= 4 && m[0] == HS_KEY_UPDATE ? RX_ALERT_DECODE_ERROR
							   : RX_ALERT_UNEXPECTED_MESSAGE;
		return RX_BAD;
	}
	if (m[4] > 1) {
		*alert = RX_ALERT_ILLEGAL_PARAMETER; /* RFC 8446 4.6.3 */
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

/*
 * The AEAD nonce and additional data of a record with header hdr, body
 * bytes of plaintext and sequence number seq; explicit is TLS 1.2 AES-GCM's
 * explicit nonce (NULL otherwise). Nonce: the salt then the explicit part
 * (RFC 5288 3), else the iv xor the sequence number (RFC 8446 5.3, RFC 7905
 * 2). AAD: TLS 1.2's seq_num, type, version, length (RFC 5246 6.2.3.3),
 * TLS 1.3's header. The length of the AAD.
 */
static size_t nonce_aad(const uint8_t *iv, bool tls12, const uint8_t *explicit, uint64_t seq,
			const uint8_t *hdr, size_t body, uint8_t nonce[12], uint8_t aad[13])
{
	uint8_t seqb[8];
	for (int i = 0; i < 8; i++)
		seqb[i] = (uint8_t)(seq >> (56 - 8 * i));
	if (explicit) {
		memcpy(nonce, iv, 4);
		memcpy(nonce + 4, explicit, GCM_EXPLICIT_NONCE);
	} else {
		memcpy(nonce, iv, 12);
		for (int i = 0; i < 8; i++)
			nonce[4 + i] ^= seqb[i];
	}
	if (!tls12) {
		memcpy(aad, hdr, RX_HEADER);
		return RX_HEADER;
	}
	memcpy(aad, seqb, 8);
	memcpy(aad + 8, hdr, 3);
	aad[11] = (uint8_t)(body >> 8);
	aad[12] = (uint8_t)body;
	return 13;
}

/*
 * Checks a record's header: *len its length field; *skip the bytes before
 * the ciphertext (TLS 1.2 AES-GCM's explicit nonce); *body the bytes
 * decrypted (TLS 1.3: the inner plaintext, type and padding included).
 */
static enum rx_result check_header(const struct rx *rx, const uint8_t *hdr, size_t *len,
				   size_t *skip, size_t *body, uint8_t *alert)
{
	*len = (size_t)hdr[3] << 8 | hdr[4];
	*skip = 0;
	if (hdr[1] != 3 || hdr[2] != 3) {
		*alert = RX_ALERT_UNEXPECTED_MESSAGE;
		return RX_BAD;
	}
	if (!rx->tls12) {
		/* After the handshake every record is protected (RFC 8446 5). */
		if (hdr[0] != CT_APPLICATION_DATA) {
			*alert = RX_ALERT_UNEXPECTED_MESSAGE;
			return RX_BAD;
		}
		if (*len < RX_TAG + 1) {
			*alert = RX_ALERT_DECODE_ERROR;
			return RX_BAD;
		}
		if (*len > RX_CIPHERTEXT_MAX || *len - RX_TAG > RX_INNER_MAX) {
			*alert = RX_ALERT_RECORD_OVERFLOW;
			return RX_BAD;
		}
		*body = *len - RX_TAG;
		return RX_MORE;
	}
	/* TLS 1.2: data and alerts; a handshake record would renegotiate. */
	if (hdr[0] != CT_APPLICATION_DATA && hdr[0] != CT_ALERT) {
		*alert = RX_ALERT_UNEXPECTED_MESSAGE;
		return RX_BAD;
	}
	*skip = rx->suite == RX_CHACHA20_POLY1305_SHA256 ? 0 : GCM_EXPLICIT_NONCE;
	if (*len < *skip + RX_TAG) {
		*alert = RX_ALERT_DECODE_ERROR;
		return RX_BAD;
	}
	if (*len > RX_CIPHERTEXT12_MAX || *len - *skip - RX_TAG > 16384) {
		*alert = RX_ALERT_RECORD_OVERFLOW;
		return RX_BAD;
	}
	*body = *len - *skip - RX_TAG;
	return RX_MORE;
}

/* What a decrypted record says; RX_MORE: go on with the next one. */
static enum rx_result record_content(struct rx *rx, uint8_t type, uint8_t *dst, size_t clen,
				     size_t *n, uint8_t *alert)
{
	if (type == CT_APPLICATION_DATA) {
		if (clen > 0) {
			rx->empties = 0;
			*n += clen;
		} else if (++rx->empties > RX_EMPTY_MAX) {
			*alert = RX_ALERT_UNEXPECTED_MESSAGE;
			return RX_BAD;
		}
		return RX_MORE;
	}
	if (type == CT_ALERT) {
		if (clen != 2) {
			*alert = clen == 0 ? RX_ALERT_UNEXPECTED_MESSAGE : RX_ALERT_DECODE_ERROR;
			return RX_BAD;
		}
		if (dst[1] == 0)
			return RX_CLOSE_NOTIFY;
		if (rx->tls12 && dst[0] == 1) {
			if (++rx->empties > RX_EMPTY_MAX) {
				*alert = RX_ALERT_UNEXPECTED_MESSAGE;
				return RX_BAD;
			}
			return RX_MORE; /* a warning (RFC 5246 7.2) */
		}
		*alert = dst[1];
		return RX_PEER_ALERT;
	}
	if (type == CT_HANDSHAKE && !rx->tls12)
		return key_update(rx, dst, clen, alert);
	*alert = RX_ALERT_UNEXPECTED_MESSAGE;
	return RX_BAD;
}

enum rx_result rx_open(struct rx *rx, const struct tls_seg *seg, unsigned nseg, size_t *pos,
		       uint8_t *out, size_t cap, size_t *n, uint8_t *alert)
{
	*alert = 0;
	if (!rx->suite || !out) {
		*alert = RX_ALERT_INTERNAL_ERROR;
		return RX_BAD;
	}
	size_t total = 0;
	for (unsigned i = 0; i < nseg; i++)
		total += seg[i].len;
	/* Bounded: each pass uses at least RX_HEADER + RX_TAG bytes or returns. */
	for (size_t guard = 0; guard <= total / (RX_HEADER + RX_TAG) + 1; guard++) {
		if (total - *pos < RX_HEADER)
			return RX_MORE;
		struct cursor c;
		uint8_t hdr[RX_HEADER];
		cursor_at(&c, seg, nseg, *pos);
		(void)cursor_copy(&c, hdr, RX_HEADER);
		size_t len, skip, body;
		if (check_header(rx, hdr, &len, &skip, &body, alert) != RX_MORE)
			return RX_BAD;
		if (total - *pos < RX_HEADER + len)
			return RX_MORE;
		if (cap - *n < body)
			return RX_FULL;
		if (rx->seq == UINT64_MAX) {
			*alert = RX_ALERT_INTERNAL_ERROR; /* RFC 8446 5.3: never wrap */
			return RX_BAD;
		}
		uint8_t nonce[12], tag[RX_TAG], aad[13], explicit[GCM_EXPLICIT_NONCE];
		if (skip)
			(void)cursor_copy(&c, explicit, GCM_EXPLICIT_NONCE);
		size_t aad_len = nonce_aad(rx->iv, rx->tls12, skip ? explicit : NULL, rx->seq, hdr,
					   body, nonce, aad);
		struct cursor tc;
		cursor_at(&tc, seg, nseg, *pos + RX_HEADER + len - RX_TAG);
		(void)cursor_copy(&tc, tag, RX_TAG);
		uint8_t *dst = out + *n;
		if (aead_open(rx, nonce, aad, aad_len, &c, body, dst, tag) != 0) {
			wipe(dst, body);
			*alert = RX_ALERT_BAD_RECORD_MAC;
			return RX_BAD;
		}
		rx->seq++;
		*pos += RX_HEADER + len;
		uint8_t type = hdr[0];
		size_t clen = body;
		if (!rx->tls12) {
			/* The content type is the last non-zero byte; zeros after it are padding.
			 */
			while (clen > 0 && dst[clen - 1] == 0)
				clen--;
			if (clen == 0) {
				*alert = RX_ALERT_UNEXPECTED_MESSAGE;
				return RX_BAD;
			}
			type = dst[--clen];
		}
		enum rx_result r = record_content(rx, type, dst, clen, n, alert);
		if (type != CT_APPLICATION_DATA)
			wipe(dst, body);
		else
			wipe(dst + clen, body - clen);
		if (r != RX_MORE)
			return r;
	}
	return RX_MORE;
}

int rx_seal_alert(enum rx_suite suite, int tls12, const uint8_t *key, size_t key_len,
		  const uint8_t *iv, size_t iv_len, uint64_t seq, uint8_t desc, uint8_t *out)
{
	bool gcm = suite == RX_AES_128_GCM_SHA256 || suite == RX_AES_256_GCM_SHA384;
	size_t want_key = suite == RX_AES_128_GCM_SHA256 ? 16 : 32;
	size_t want_iv = tls12 && gcm ? 4 : 12;
	if ((!gcm && suite != RX_CHACHA20_POLY1305_SHA256) || key_len != want_key ||
	    iv_len != want_iv || seq == UINT64_MAX)
		return -EINVAL;
	size_t explicit = tls12 && gcm ? GCM_EXPLICIT_NONCE : 0;
	uint8_t plain[3] = {2, desc, CT_ALERT}; /* fatal; TLS 1.3 adds the inner type */
	size_t plen = tls12 ? 2 : 3;
	size_t len = explicit + plen + RX_TAG;
	uint8_t nonce[12], aad[13];
	out[0] = tls12 ? CT_ALERT : CT_APPLICATION_DATA;
	out[1] = 3, out[2] = 3;
	out[3] = (uint8_t)(len >> 8), out[4] = (uint8_t)len;
	/* The explicit nonce part: any unique value; the sequence number is one. */
	for (size_t i = 0; i < explicit; i++)
		out[RX_HEADER + i] = (uint8_t)(seq >> (56 - 8 * i));
	size_t aad_len =
	    nonce_aad(iv, tls12, explicit ? out + RX_HEADER : NULL, seq, out, plen, nonce, aad);
	uint8_t *ct = out + RX_HEADER + explicit, *tag = ct + plen;
	int rc;
	if (gcm) {
		Aes aes;
		rc = wc_AesInit(&aes, NULL, INVALID_DEVID);
		if (rc == 0)
			rc = wc_AesGcmSetKey(&aes, key, (word32)key_len);
		if (rc == 0)
			rc = wc_AesGcmEncrypt(&aes, ct, plain, (word32)plen, nonce, 12, tag, RX_TAG,
					      aad, (word32)aad_len);
		wc_AesFree(&aes);
		explicit_bzero(&aes, sizeof(aes));
	} else {
		rc = wc_ChaCha20Poly1305_Encrypt(key, nonce, aad, (word32)aad_len, plain,
						 (word32)plen, ct, tag);
	}
	return rc == 0 ? (int)(RX_HEADER + len) : -EINVAL;
}
