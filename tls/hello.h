/*
 * hello.h - a bounded, defensive scanner of a TLS ClientHello, to choose the
 * certificate (ECDSA or RSA) before the handshake starts.
 *
 * wolfSSL, as built for mxring (no OpenSSL layer), has no certificate
 * callback: the server keeps one WOLFSSL_CTX per certificate and picks one
 * before wolfSSL_new, from what the client offers. This scanner reads the
 * first flight's records (RFC 8446 5.1: type 22, handshake messages may be
 * split over several records), the handshake header (RFC 8446 4), and the
 * ClientHello (RFC 8446 4.1.2, RFC 5246 7.4.1.2): it skips version, random
 * and session id, reads the cipher suites, skips the compression methods and
 * walks the extensions for supported_versions (43), signature_algorithms
 * (13) and supported_groups (10).
 *
 * A pure function over bytes: no I/O, no allocation, no wolfSSL. It never
 * reads past len nor past HELLO_INPUT_MAX bytes, and every length field is
 * checked against the one that encloses it. The verdict is only advice:
 * on HELLO_BAD the caller takes its default certificate and lets wolfSSL
 * answer the same bytes (and reject them if they are malformed).
 */
#ifndef MXRING_HELLO_H
#define MXRING_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most input (record headers included) the scanner looks at. A
 * ClientHello that does not end within it is HELLO_BAD (not judged). */
#define HELLO_INPUT_MAX (16384u + 5u)

enum hello_result {
	HELLO_OK = 0,	/* a whole ClientHello was read: h is filled */
	HELLO_MORE = 1, /* the input ends inside the ClientHello: call again with more */
	HELLO_BAD = 2,	/* not a ClientHello, malformed, or too long: not judged */
};

/* ECDSA curves, as bits of hello_info.ecdsa_sigalgs and .groups. */
enum hello_curve {
	HELLO_P256 = 1u << 0, /* secp256r1: group 23, TLS 1.3 scheme 0x0403 */
	HELLO_P384 = 1u << 1, /* secp384r1: group 24, 0x0503 */
	HELLO_P521 = 1u << 2, /* secp521r1: group 25, 0x0603 */
};

struct hello_info {
	uint16_t legacy_version; /* client_version: 0x0303 for TLS 1.2 and 1.3 */
	bool tls13;		 /* supported_versions lists 0x0304 */
	bool has_sigalgs;	 /* a signature_algorithms extension was sent */
	bool has_groups;	 /* a supported_groups extension was sent */
	uint8_t ecdsa_sigalgs;	 /* HELLO_P256...: TLS 1.3 ECDSA schemes offered */
	bool ecdsa_tls12;	 /* some (hash, ecdsa) pair offered (TLS 1.2 reading) */
	bool rsa_sigalgs;	 /* some RSA PKCS#1 or PSS scheme offered */
	uint8_t groups;		 /* HELLO_P256...: curves in supported_groups */
	uint16_t ecdsa_suites;	 /* TLS 1.2 ECDHE_ECDSA AEAD suites offered */
	uint16_t rsa_suites;	 /* TLS 1.2 ECDHE_RSA AEAD suites offered */
	uint16_t nsuites;	 /* cipher suites offered, all kinds */
	uint32_t bytes;		 /* input bytes the ClientHello took, record headers included */
};

/*
 * Scans p[0..len) for a ClientHello. HELLO_OK fills *h; HELLO_MORE asks for
 * the same bytes and more (only while len < HELLO_INPUT_MAX); HELLO_BAD says
 * the bytes are not a ClientHello this scanner can judge.
 */
enum hello_result hello_scan(const uint8_t *p, size_t len, struct hello_info *h)
    __attribute__((warn_unused_result));

/*
 * Whether a client that sent h accepts an ECDSA certificate on curve (one
 * hello_curve bit). TLS 1.3 (RFC 8446 4.2.3): signature_algorithms lists
 * the curve's ecdsa_secpXXXrY_shaZZZ scheme. TLS 1.2 (RFC 5246 7.4.1.4.1,
 * RFC 8422 5.1): an ECDHE_ECDSA AEAD suite is offered, signature_algorithms
 * (when sent) lists some ECDSA pair, and supported_groups (when sent) lists
 * the curve.
 */
bool hello_accepts_ecdsa(const struct hello_info *h, unsigned curve);

#endif
