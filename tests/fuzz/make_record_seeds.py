#!/usr/bin/env python3
"""make_record_seeds.py - writes the seed corpus of fuzz_record (tests/fuzz/corpus/record/).

Usage: tests/fuzz/make_record_seeds.py  (from anywhere; needs Python's
`cryptography` package for the wire seeds)

The input layout is fuzz_record.c's: byte 0 the suite (low 6 bits mod 3:
AES-128, AES-256, ChaCha20), TLS 1.2 (bit 6) and the mode (bit 7: plain),
byte 1 the room for plaintext (0: 4 * (2^14 + 1), else 67 bytes a step),
byte 2 the number of cuts (low 3 bits) and TLS 1.2's first sequence number
(bits 3-4: 1, 0, 2^64 - 4, 0x0102030405060708), 2 bytes per cut, then the
rest:
  p-*  mode plain: records in the clear (flags, 2-byte length, inner
       plaintext) that the harness seals itself;
  w-*  mode wire: records sealed here, with the harness's fixed secret and
       RFC 8446 7.1-7.3 (HKDF-Expand-Label, "key", "iv", "traffic upd"), an
       implementation apart from record.c's;
  p-tls12-*  mode plain, TLS 1.2: records in the clear (flags, outer type,
       2-byte length, plaintext);
  w-tls12-*  mode wire, TLS 1.2: records sealed here with the harness's
       fixed key and IV (RFC 5246 6.2.3.3, RFC 5288 3, RFC 7905 2).
Files this script writes are named p-* / w-*; reproducers of bugs found by
fuzzing (crash-*, named by the bug) are kept as they are.
"""
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'corpus', 'record')

AES128, AES256, CHACHA = 0, 1, 2
PLAIN, TLS12 = 0x80, 0x40
SECRET = bytes(range(48))  # fuzz_record.c's secret48
APP, ALERT, HANDSHAKE, CCS = 23, 21, 22, 20

# flags of a plain record (fuzz_record.c)
FLIP_TAG, OUTER_HANDSHAKE, WRONG_SEQ, FILLER = 1, 2, 4, 8
# and of a plain TLS 1.2 record: 2 alters the explicit nonce
FLIP_NONCE = 2
# TLS 1.2's first sequence number, by byte 2's bits 3-4
SEQS12 = (1, 0, 2**64 - 4, 0x0102030405060708)


def header(suite, cap_step=0, cuts=(), seq_sel=0):
    h = bytes([suite, cap_step, len(cuts) | seq_sel << 3])
    for c in cuts:
        h += struct.pack('>H', c)
    return h


def plain_record(inner, flags=0):
    return bytes([flags]) + struct.pack('>H', len(inner)) + inner


def inner(content, ctype, pad=0):
    return content + bytes([ctype]) + bytes(pad)


KEY_UPDATE_ASK = inner(b'\x18\x00\x00\x01\x01', HANDSHAKE)
KEY_UPDATE = inner(b'\x18\x00\x00\x01\x00', HANDSHAKE)
CLOSE = inner(b'\x01\x00', ALERT)


class Sealer:
    """The client's side of RFC 8446 5.2-5.3 and 7.1-7.3."""

    def __init__(self, suite):
        self.suite = suite
        self.hash = hashes.SHA384() if suite == AES256 else hashes.SHA256()
        self.secret = SECRET[:self.hash.digest_size]
        self.keys()

    def expand_label(self, secret, label, length):
        info = struct.pack('>H', length) + bytes([6 + len(label)]) + b'tls13 ' + label + b'\x00'
        return HKDFExpand(self.hash, length, info).derive(secret)

    def keys(self):
        key = self.expand_label(self.secret, b'key', 16 if self.suite == AES128 else 32)
        self.iv = self.expand_label(self.secret, b'iv', 12)
        self.aead = ChaCha20Poly1305(key) if self.suite == CHACHA else AESGCM(key)
        self.seq = 0

    def update(self):
        self.secret = self.expand_label(self.secret, b'traffic upd', self.hash.digest_size)
        self.keys()

    def seal(self, inner_plaintext):
        hdr = bytes([APP, 3, 3]) + struct.pack('>H', len(inner_plaintext) + 16)
        nonce = bytes(a ^ b for a, b in zip(self.iv, bytes(4) + struct.pack('>Q', self.seq)))
        self.seq += 1
        return hdr + self.aead.encrypt(nonce, inner_plaintext, hdr)


def plain_record12(ctype, plaintext, flags=0):
    return bytes([flags, ctype]) + struct.pack('>H', len(plaintext)) + plaintext


class Sealer12:
    """The client's side of RFC 5246 6.2.3.3 with RFC 5288 (AES-GCM) or RFC 7905 (ChaCha20)."""

    def __init__(self, suite, seq_sel=0):
        self.suite = suite
        key = SECRET[:16 if suite == AES128 else 32]
        self.iv = SECRET[32:32 + (12 if suite == CHACHA else 4)]
        self.aead = ChaCha20Poly1305(key) if suite == CHACHA else AESGCM(key)
        self.seq = SEQS12[seq_sel]

    def seal(self, ctype, plaintext):
        seq = struct.pack('>Q', self.seq)
        self.seq += 1
        aad = seq + bytes([ctype, 3, 3]) + struct.pack('>H', len(plaintext))
        if self.suite == CHACHA:
            explicit = b''
            nonce = bytes(a ^ b for a, b in zip(self.iv, bytes(4) + seq))
        else:
            explicit = bytes(a ^ 0xa5 for a in seq)  # any value: it travels
            nonce = self.iv + explicit
        body = explicit + self.aead.encrypt(nonce, plaintext, aad)
        return bytes([ctype, 3, 3]) + struct.pack('>H', len(body)) + body


def clean():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.startswith(('p-', 'w-')):
            os.unlink(os.path.join(OUT, f))


def write(name, data):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(data)


def plain_seeds():
    hello = inner(b'hello', APP)
    write('p-aes128-data', header(PLAIN | AES128) + plain_record(hello) +
          plain_record(inner(b'padded', APP, 40)) + plain_record(inner(b'', APP)) +
          plain_record(CLOSE))
    write('p-chacha-key-updates', header(PLAIN | CHACHA, cuts=(0x1000, 0x8000, 0xc000)) +
          plain_record(hello) + plain_record(KEY_UPDATE_ASK) + plain_record(hello) +
          plain_record(KEY_UPDATE) + plain_record(inner(b'after two', APP, 3)) +
          plain_record(CLOSE))
    write('p-aes256-alert', header(PLAIN | AES256) + plain_record(hello) +
          plain_record(inner(b'\x02\x28', ALERT)))
    write('p-aes128-many-key-updates', header(PLAIN | AES128) +
          b''.join(plain_record(KEY_UPDATE_ASK if i % 3 == 0 else KEY_UPDATE) +
                   plain_record(inner(bytes([i]), APP)) for i in range(40)))
    # 14 * 1100 bytes of filler and 985 given: an inner plaintext of 2^14 + 1.
    write('p-chacha-inner-max', header(PLAIN | CHACHA) +
          plain_record(inner(b'y' * 900, APP, 84), FILLER | (14 << 4)) + plain_record(CLOSE))
    write('p-aes128-inner-over', header(PLAIN | AES128) + plain_record(hello) +
          plain_record(inner(b'z' * 885, APP, 100), FILLER | (14 << 4)))
    write('p-aes256-bad-tag', header(PLAIN | AES256) + plain_record(hello) +
          plain_record(hello, FLIP_TAG | (5 << 4)))
    write('p-chacha-outer-handshake', header(PLAIN | CHACHA) +
          plain_record(hello, OUTER_HANDSHAKE))
    write('p-aes128-wrong-seq', header(PLAIN | AES128) + plain_record(hello) +
          plain_record(hello, WRONG_SEQ))
    write('p-aes256-zero-inner', header(PLAIN | AES256) + plain_record(bytes(7)))
    write('p-chacha-bad-key-update', header(PLAIN | CHACHA) + plain_record(hello) +
          plain_record(inner(b'\x18\x00\x00\x01\x02', HANDSHAKE)))
    write('p-aes128-two-messages', header(PLAIN | AES128) +
          plain_record(inner(b'\x18\x00\x00\x01\x00\x18\x00\x00\x01\x00', HANDSHAKE)))
    write('p-aes256-small-room', header(PLAIN | AES256, cap_step=2, cuts=(0x4000,)) +
          b''.join(plain_record(inner(bytes([0x41 + i]) * (20 * i), APP)) for i in range(8)))
    write('p-chacha-other-types', header(PLAIN | CHACHA) + plain_record(hello) +
          plain_record(inner(b'\x01', 20)))


def wire_seeds():
    s = Sealer(AES128)
    write('w-aes128-data-close', header(AES128) + s.seal(inner(b'hello', APP)) +
          s.seal(inner(b'x' * 1000, APP, 24)) + s.seal(CLOSE))
    s = Sealer(CHACHA)
    w = s.seal(inner(b'before', APP)) + s.seal(KEY_UPDATE_ASK)
    s.update()
    w += s.seal(inner(b'after', APP)) + s.seal(KEY_UPDATE)
    s.update()
    w += s.seal(inner(b'and again', APP)) + s.seal(CLOSE)
    write('w-chacha-key-updates', header(CHACHA, cuts=(0x0800, 0x2000, 0x2001, 0x9000)) + w)
    s = Sealer(AES256)
    w = s.seal(inner(b'a' * 16384, APP)) + s.seal(inner(b'b' * 3, APP))
    write('w-aes256-full-record', header(AES256, cuts=(0x7fff,)) + w)
    s = Sealer(AES128)
    w = s.seal(inner(b'whole', APP)) + s.seal(inner(b'cut short', APP))
    write('w-aes128-truncated', header(AES128) + w[:-7])
    # A ClientHello's first bytes where a protected record should be.
    write('w-chacha-plaintext-record', header(CHACHA) + bytes.fromhex('160301020001') + bytes(40))


def plain_seeds12():
    hello, close = b'hello', b'\x01\x00'
    write('p-tls12-aes128-data', header(PLAIN | TLS12 | AES128) +
          plain_record12(APP, hello) + plain_record12(APP, b'') +
          plain_record12(ALERT, b'\x01\x5a') + plain_record12(APP, b'after a warning') +
          plain_record12(ALERT, close))
    write('p-tls12-chacha-fatal', header(PLAIN | TLS12 | CHACHA, cuts=(0x4000, 0x8000)) +
          plain_record12(APP, hello) + plain_record12(ALERT, b'\x02\x28'))
    write('p-tls12-aes256-renegotiation', header(PLAIN | TLS12 | AES256) +
          plain_record12(APP, hello) + plain_record12(HANDSHAKE, b'\x01\x00\x00\x00'))
    write('p-tls12-aes128-ccs', header(PLAIN | TLS12 | AES128) + plain_record12(CCS, b'\x01'))
    write('p-tls12-chacha-bad-tag', header(PLAIN | TLS12 | CHACHA) +
          plain_record12(APP, hello) + plain_record12(APP, hello, FLIP_TAG | (5 << 4)))
    write('p-tls12-aes256-bad-nonce', header(PLAIN | TLS12 | AES256) +
          plain_record12(APP, hello) + plain_record12(APP, hello, FLIP_NONCE))
    write('p-tls12-aes128-wrong-seq', header(PLAIN | TLS12 | AES128, seq_sel=3) +
          plain_record12(APP, hello) + plain_record12(APP, hello, WRONG_SEQ))
    # 14 * 1100 bytes of filler and 984 given: 2^14 bytes, then one more.
    write('p-tls12-chacha-max', header(PLAIN | TLS12 | CHACHA) +
          plain_record12(APP, b'y' * 984, FILLER | (14 << 4)) + plain_record12(ALERT, close))
    write('p-tls12-aes128-over', header(PLAIN | TLS12 | AES128) + plain_record12(APP, hello) +
          plain_record12(APP, b'z' * 985, FILLER | (14 << 4)))
    write('p-tls12-aes256-small-room', header(PLAIN | TLS12 | AES256, cap_step=2, cuts=(0x4000,)) +
          b''.join(plain_record12(APP, bytes([0x41 + i]) * (20 * i)) for i in range(8)))
    write('p-tls12-chacha-seq-limit', header(PLAIN | TLS12 | CHACHA, seq_sel=2) +
          b''.join(plain_record12(APP, bytes([0x61 + i])) for i in range(5)))
    write('p-tls12-aes128-long-alert', header(PLAIN | TLS12 | AES128, seq_sel=1) +
          plain_record12(APP, hello) + plain_record12(ALERT, b'\x02\x28\x00'))


def wire_seeds12():
    s = Sealer12(AES128)
    write('w-tls12-aes128-data-close', header(TLS12 | AES128) + s.seal(APP, b'hello') +
          s.seal(APP, b'x' * 1000) + s.seal(ALERT, b'\x01\x00'))
    s = Sealer12(CHACHA, 3)
    w = (s.seal(APP, b'before') + s.seal(ALERT, b'\x01\x5a') + s.seal(APP, b'') +
         s.seal(APP, b'after') + s.seal(ALERT, b'\x02\x28'))
    write('w-tls12-chacha-alerts', header(TLS12 | CHACHA, cuts=(0x0800, 0x2000, 0x9000),
                                          seq_sel=3) + w)
    s = Sealer12(AES256)
    w = s.seal(APP, b'a' * 16384) + s.seal(APP, b'b' * 3)
    write('w-tls12-aes256-full-record', header(TLS12 | AES256, cuts=(0x7fff,)) + w)
    s = Sealer12(AES128, 1)
    w = s.seal(APP, b'whole') + s.seal(HANDSHAKE, b'\x00\x00\x00\x00')
    write('w-tls12-aes128-renegotiation', header(TLS12 | AES128, seq_sel=1) + w)
    s = Sealer12(CHACHA)
    w = s.seal(APP, b'whole') + s.seal(APP, b'cut short')
    write('w-tls12-chacha-truncated', header(TLS12 | CHACHA) + w[:-7])


def main():
    clean()
    plain_seeds()
    wire_seeds()
    plain_seeds12()
    wire_seeds12()


if __name__ == '__main__':
    main()
