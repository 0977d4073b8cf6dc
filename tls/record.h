/*
 * record.h - TLS records from the client, opened by mxring itself.
 *
 * After a TLS 1.3 handshake wolfSSL hands over the client's application
 * traffic secret, after a TLS 1.2 one the client's write key and IV and
 * its sequence number (tls.c). From then on the records the client sends are
 * opened here, straight from the shard's receive buffers into a plaintext
 * buffer: the decryption is the only pass over a body byte, where
 * wolfSSL_read would copy the ciphertext into its own buffer, decrypt it in
 * place and copy the plaintext out. wolfSSL keeps the sending side (and
 * sends the KeyUpdate a client may request).
 *
 * RFC 8446 5.2-5.3 (record protection, per-record nonce), 7.1-7.2 (key
 * schedule, traffic key update), 4.6.3 (KeyUpdate), 6 (alerts); for TLS
 * 1.2, RFC 5246 6.2.3.3 and 7.2, RFC 5288 3 (AES-GCM's explicit nonce) and
 * RFC 7905 2 (ChaCha20-Poly1305). A record
 * may lie across several input segments (receive buffers); its plaintext
 * lands whole in the output or not at all, and only once its tag verified.
 *
 * What the client may send after the handshake: application data, alerts
 * and (TLS 1.3) KeyUpdate. Anything else (change_cipher_spec, an
 * unprotected record, another handshake message, a KeyUpdate not alone at
 * the end of its record, an inner plaintext over 2^14 + 1 bytes; in TLS
 * 1.2 a handshake record, which would be a renegotiation) ends the
 * session. A TLS 1.2 warning alert other than close_notify is ignored.
 * More than RX_EMPTY_MAX records in a row without data end it too.
 *
 * No system call, no allocation, no wolfSSL session: wolfCrypt only, so the
 * unit tests and the fuzzer drive it directly.
 */
#ifndef MXRING_RECORD_H
#define MXRING_RECORD_H

#include <stddef.h>
#include <stdint.h>

/* One piece of input: bytes in a receive buffer (borrowed). */
struct tls_seg {
	const uint8_t *p;
	size_t len;
};

#define RX_HEADER	    5u
#define RX_TAG		    16u
#define RX_INNER_MAX	    (16384u + 1u)		      /* content + type (RFC 8446 5.2) */
#define RX_CIPHERTEXT_MAX   (16384u + 256u)		      /* the length field's limit */
#define RX_CIPHERTEXT12_MAX (16384u + 2048u)		      /* TLS 1.2's (RFC 5246 6.2.3) */
#define RX_RECORD_MAX	    (RX_HEADER + RX_CIPHERTEXT12_MAX) /* a whole record */
#define RX_KEY_UPDATES_MAX  1024u /* per session: each costs a derivation and, if asked, a reply */
#define RX_SECRET_MAX	    48u
/* Records in a row that carry no data (empty application data, ignored TLS 1.2
 * warnings): each costs an AEAD pass and gives nothing; OpenSSL allows 32. */
#define RX_EMPTY_MAX 32u

enum rx_suite {
	RX_AES_128_GCM_SHA256 = 1,
	RX_AES_256_GCM_SHA384 = 2,
	RX_CHACHA20_POLY1305_SHA256 = 3,
};

/* The receiving half of a TLS 1.3 or 1.2 session (about 130 bytes; the cipher's
 * key schedule is made on the stack for each call). */
struct rx {
	uint8_t suite; /* enum rx_suite; 0 = not set up */
	uint8_t tls12; /* 1: TLS 1.2 records */
	uint8_t hash_len, key_len, iv_len;
	uint16_t key_updates;
	uint8_t empties; /* records in a row without data, up to RX_EMPTY_MAX */
	uint64_t seq;	 /* of the next record under the current key */
	uint8_t secret[RX_SECRET_MAX];
	uint8_t key[32];
	uint8_t iv[12]; /* TLS 1.2 AES-GCM: the 4-byte salt */
};

enum rx_result {
	RX_MORE = 0,		 /* every whole record is opened: more input is needed */
	RX_FULL = 1,		 /* the next record's plaintext does not fit in out */
	RX_KEY_UPDATE_ASKED = 2, /* a KeyUpdate asked for ours: send it, call again */
	RX_CLOSE_NOTIFY = 3,	 /* the client closed (RFC 8446 6.1) */
	RX_PEER_ALERT = 4,	 /* the client sent another alert: *alert */
	RX_BAD = 5,		 /* a record that ends the session: *alert says why */
};

/* RFC 8446 6 alert codes used in *alert. */
enum {
	RX_ALERT_UNEXPECTED_MESSAGE = 10,
	RX_ALERT_BAD_RECORD_MAC = 20,
	RX_ALERT_RECORD_OVERFLOW = 22,
	RX_ALERT_ILLEGAL_PARAMETER = 47,
	RX_ALERT_DECODE_ERROR = 50,
	RX_ALERT_INTERNAL_ERROR = 80,
};

/* The suite for wolfSSL's (IANA) cipher name, or 0 if this file cannot open it. */
enum rx_suite rx_suite_by_name(const char *name);

/*
 * Sets rx up with the client's application traffic secret (RFC 8446 7.1):
 * key and iv derived, sequence 0. 0, or -EINVAL (bad suite or secret
 * length for its hash).
 */
int rx_init(struct rx *rx, enum rx_suite suite, const uint8_t *secret, size_t len)
    __attribute__((warn_unused_result));

/*
 * Sets rx up for TLS 1.2 with the client's write key and IV (AES-GCM: the
 * 4-byte implicit part; ChaCha20-Poly1305: 12 bytes) and the sequence number
 * of the client's next record. 0, or -EINVAL (lengths that do not fit the
 * suite).
 */
int rx_init_tls12(struct rx *rx, enum rx_suite suite, const uint8_t *key, size_t key_len,
		  const uint8_t *iv, size_t iv_len, uint64_t seq)
    __attribute__((warn_unused_result));

/* Wipes the keys. */
void rx_wipe(struct rx *rx);

/* A sealed alert record: header, TLS 1.2 AES-GCM's explicit nonce, level
 * and description (and TLS 1.3's inner type), tag. */
#define RX_ALERT_RECORD_MAX (RX_HEADER + 8u + 3u + RX_TAG)

/*
 * Seals a fatal alert (RFC 8446 6.2, RFC 5246 7.2.2) as the server's next
 * record, so that the client learns why the session ends: key, iv (TLS 1.3
 * and ChaCha20-Poly1305: 12 bytes; TLS 1.2 AES-GCM: the 4-byte salt) and
 * seq are the server's own. Writes at most RX_ALERT_RECORD_MAX bytes to
 * out; their count, or -EINVAL.
 */
int rx_seal_alert(enum rx_suite suite, int tls12, const uint8_t *key, size_t key_len,
		  const uint8_t *iv, size_t iv_len, uint64_t seq, uint8_t desc, uint8_t *out)
    __attribute__((warn_unused_result));

/*
 * Opens the whole records in the input (the concatenation of seg[0..nseg))
 * from offset *pos on, appending their application data to out[*n..cap)
 * and advancing *pos past every record it used (alerts and KeyUpdates
 * included). Stops at the first record that is not whole (RX_MORE), does
 * not fit (RX_FULL: out must have RX_INNER_MAX bytes free for any record
 * to fit), or needs the caller. Plaintext of a record that fails its tag
 * never stays in out.
 */
enum rx_result rx_open(struct rx *rx, const struct tls_seg *seg, unsigned nseg, size_t *pos,
		       uint8_t *out, size_t cap, size_t *n, uint8_t *alert);

#endif
