#!/usr/bin/env python3
"""make_dnsbl_seeds.py - writes the seed corpus of fuzz_dnsbl.

Usage: tests/fuzz/make_dnsbl_seeds.py  (from anywhere; writes tests/fuzz/corpus/dnsbl/)

A seed's first octet chooses what fuzz_dnsbl does with the rest: '0' (even)
parses a site of dnsbl_sites, 0x01 (odd) a DNS response message. Sites are
named s-site-*, answers s-answer-*; reproducers of bugs found by fuzzing
(crash-*, named by the bug) are kept as they are.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus', 'dnsbl')

SITES = {
    'plain': 'zen.example',
    'weight': 'zen.example*3',
    'range': 'bl.example=127.0.0.[2..11]*2',
    'allow': 'wl.example=127.0.[0..255].[1..3]*-2',
    'patterns': 'x.example=127.0.0.2;127.0.0.4',
    'mixed': 'L.Example.=[10;127].0.[0..1].[1;3;5..7];1.2.3.4*+7',
    'bad-range': 'a.example=127.0.0.[5..2]',
    'bad-weight': 'a.example*1001',
}

QNAME = '2.0.0.127.zen.example'


def name(text):
    out = b''
    for label in text.split('.') if text else []:
        out += bytes([len(label)]) + label.encode()
    return out + b'\0'


def ptr(offset):
    return struct.pack('>H', 0xc000 | offset)


def header(rcode, qd, an, ns):
    return struct.pack('>6H', 0x1234, 0x8180 | rcode, qd, an, ns, 0)


def rr(owner, rtype, ttl, rdata):
    return owner + struct.pack('>HHIH', rtype, 1, ttl, len(rdata)) + rdata


def a(ttl, addr):
    return rr(ptr(12), 1, ttl, bytes(addr))


def soa(ttl, minimum):
    rdata = b'\2ns' + ptr(22) + name('hostmaster.zen.example')
    rdata += struct.pack('>5I', 2024010101, 3600, 600, 86400, minimum)
    return rr(ptr(22), 6, ttl, rdata)


Q = name(QNAME) + struct.pack('>HH', 1, 1)
CNAME = rr(ptr(12), 5, 10, name('2.0.0.127.other.example'))
ANSWERS = {
    'two-a': header(0, 1, 2, 0) + Q + a(300, [127, 0, 0, 2]) + a(60, [127, 0, 0, 10]),
    'cname-a': header(0, 1, 2, 0) + Q + CNAME + rr(ptr(12 + len(Q) + 12), 1, 120,
                                                    bytes([127, 0, 0, 4])),
    'nxdomain': header(3, 1, 0, 1) + Q + soa(900, 300),
    'nodata': header(0, 1, 0, 1) + Q + soa(120, 3600),
    'servfail': header(2, 1, 0, 0) + Q,
    'ttl-top-bit': header(0, 1, 1, 0) + Q + a(0x80000010, [127, 0, 0, 2]),
    'loop': header(0, 2, 0, 0) + Q + ptr(12 + len(Q)) + struct.pack('>HH', 1, 1),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for key, text in SITES.items():
        with open(os.path.join(OUT, 's-site-' + key), 'wb') as f:
            f.write(b'0' + text.encode())
    for key, msg in ANSWERS.items():
        with open(os.path.join(OUT, 's-answer-' + key), 'wb') as f:
            f.write(b'\1' + msg)


if __name__ == '__main__':
    main()
