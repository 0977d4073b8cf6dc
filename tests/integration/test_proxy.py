#!/usr/bin/env python3
"""
test_proxy.py - proxy_protocol = haproxy: the receiver behind a TCP load
balancer that sends a PROXY protocol header (version 1 or 2) before the
client's first byte.

Checked: the real client's address from the header reaches the Received:
header, the spool envelope and the log; a LOCAL header (a balancer's health
check) keeps the connection's own address; a missing or malformed header
gets one 421 line and a 'proxy error' log line saying why; a header that does
not arrive within proxy_timeout closes the connection; a header sent a byte
at a time still works; max_connections_per_ip counts the address in the
header, not the balancer's; bytes after the header are the client's (its
EHLO, or the start of a TLS handshake on an implicit-TLS listener, or a
pre-greeting talker with pregreet_wait). A normal client (with a header) is
served after each case.
"""

import os
import re
import socket
import ssl
import struct
import subprocess
import time

import harness as h

suite = h.Suite("proxy")
check, check_eq = h.check, h.check_eq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
R_BAD_PROXY = "421 4.7.0 %s Error: bad or missing PROXY protocol header" % h.HOSTNAME


def v1(src="192.0.2.10", sport=56324, dst="198.51.100.1", dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src="192.0.2.10", sport=56324, dst="198.51.100.1", dport=25, local=False, tlvs=b""):
    if ":" in src:
        fam, a = 0x21, socket.inet_pton(socket.AF_INET6, src) + \
            socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam, a = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    block = a + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x20 if local else 0x21, fam]) + struct.pack("!H", len(block)) + block


def proxied(srv, header, greet=True, timeout=h.REPLY_TIMEOUT_S):
    """A client that sends header first; with greet, reads the greeting."""
    c = srv.client(greet=False, timeout=timeout)
    c.send(header)
    if greet:
        c.expect(h.R_GREETING)
    return c


def send_one(c, tag):
    c.ehlo()
    body = b"Subject: %s\r\n\r\nvia a balancer\r\n" % tag.encode()
    q = c.send_message(body)
    return q, body


def received_line(srv, qid):
    raw = h.spool_raw(srv.spool, qid)
    return raw.split(b"\r\n", 1)[0].decode("ascii", "replace")


def check_served(srv):
    c = proxied(srv, v1("203.0.113.77", 4242))
    q, body = send_one(c, "normal")
    c.quit()
    h.check_body(srv.spool, q, body, "a normal client's message")
    check("[203.0.113.77]:4242" in received_line(srv, q), "normal client's Received: line")


def proxy_server(**extra):
    cfg = {"proxy_protocol": "haproxy", "proxy_timeout": "2"}
    cfg.update(extra)
    return h.Server(cfg)


@suite.case
def v1_and_v2_name_the_client():
    with proxy_server() as srv:
        cases = [("v1 tcp4", v1("192.0.2.10", 56324), "192.0.2.10", 56324),
                 ("v1 tcp6", v1("2001:db8::7", 1025, "2001:db8::25"), "2001:db8::7", 1025),
                 ("v2 inet", v2("192.0.2.11", 40000, tlvs=b"\x04\x00\x02hi"), "192.0.2.11",
                  40000),
                 ("v2 inet6", v2("2001:db8::8", 40001, "2001:db8::25"), "2001:db8::8", 40001)]
        for name, header, addr, port in cases:
            c = proxied(srv, header)
            q, body = send_one(c, name)
            c.quit()
            h.check_body(srv.spool, q, body, name)
            line = received_line(srv, q)
            check("([%s]:%d)" % (addr, port) in line, "%s: Received: line %r" % (name, line))
            srv.wait_log(r"\bqueued qid=%s\b.*\bclient=%s port=%d\b" % (q, addr, port))
            srv.wait_log(r"\bsession end\b.*\bclient=%s port=%d\b" % (addr, port))
        check_served(srv)


@suite.case
def v2_local_keeps_the_socket_address():
    # A balancer's health check: LOCAL, addresses (if any) ignored.
    with proxy_server() as srv:
        for header in (V2_SIG + b"\x20\x00\x00\x00", v2(local=True)):
            c = proxied(srv, header)
            c.ehlo()
            c.quit()
        srv.wait_log(r"\bsession end\b.*\bclient=127\.0\.0\.1\b", count=2)
        check_served(srv)


@suite.case
def missing_or_bad_header_refused():
    with proxy_server() as srv:
        bad = [
            (b"EHLO client.example.org\r\n", "not a PROXY protocol header"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.1 99999 25\r\n", "a port is not a number"),
            (b"PROXY TCP5 192.0.2.1 198.51.100.1 1 25\r\n", "protocol is not TCP4"),
            (b"PROXY UNKNOWN " + b"x" * 120, "no CRLF within 107 octets"),
            (V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12, "version is not 2"),
            (V2_SIG + b"\x21\x11\x08\x00", "longer than 1024 octets"),
        ]
        for data, why in bad:
            c = srv.client(greet=False)
            c.send(data)
            c.expect(R_BAD_PROXY)
            c.expect_closed()
            srv.wait_log(r"\bproxy error balancer=127\.0\.0\.1 port=\d+ error=\"[^\"]*%s"
                         % re.escape(why))
        srv.wait_log(r"\bsession end\b.*\breason=proxy-error\b", count=len(bad))
        check_served(srv)
        srv.stop()
        check_eq(srv.stats().get("proxy_errors"), str(len(bad)), "proxy_errors in the stats line")


@suite.case
def header_timeout_and_slow_header():
    with proxy_server() as srv:
        # Nothing at all: closed after proxy_timeout (2 s on a 1 s wheel).
        t0 = time.monotonic()
        c = srv.client(greet=False, timeout=10)
        c.expect_closed(timeout=10)
        took = time.monotonic() - t0
        check(1.5 <= took <= 6, "closed after %.1f s with proxy_timeout = 2" % took)
        srv.wait_log(r"\bproxy error balancer=127\.0\.0\.1 .*within proxy_timeout")
        srv.wait_log(r"\bsession end\b.*\breason=proxy-timeout\b")
        # A header in pieces, each its own segment, well within the timeout.
        for header in (v1("192.0.2.20", 1111), v2("192.0.2.21", 2222)):
            c = srv.client(greet=False)
            c.send_slowly(header, piece=3, pause=0.01)
            c.expect(h.R_GREETING)
            q, body = send_one(c, "slow header")
            c.quit()
            check("[192.0.2.2" in received_line(srv, q), "slow header's client address")
        check_served(srv)


@suite.case
def header_and_commands_in_one_write():
    with proxy_server() as srv:
        c = srv.client(greet=False)
        c.send(v1("192.0.2.30", 3333) + b"EHLO client.example.org\r\nNOOP\r\n")
        c.expect(h.R_GREETING)
        r = c.reply()
        check(r[0].startswith("250-"), "EHLO reply %r" % r)
        c.expect(h.R_OK)
        c.quit()
        srv.wait_log(r"\bsession end\b.*\bclient=192\.0\.2\.30 port=3333\b")
        check_served(srv)


@suite.case
def per_ip_limit_counts_the_real_client():
    with proxy_server(max_connections_per_ip="1") as srv:
        a = proxied(srv, v1("192.0.2.40", 1))
        # Same real client through the same balancer: refused.
        b = proxied(srv, v1("192.0.2.40", 2), greet=False)
        b.expect("421 4.7.0 %s Error: too many connections from your address" % h.HOSTNAME)
        b.expect_closed()
        # Another client through the same balancer address: served.
        c = proxied(srv, v1("192.0.2.41", 3))
        c.ehlo()
        c.quit()
        a.ehlo()
        a.quit()
        srv.wait_log(r"\bsession end\b.*\bclient=192\.0\.2\.40 port=1\b")
        check_served(srv)


@suite.case
def pregreet_after_the_header():
    with proxy_server(pregreet_wait="1") as srv:
        c = srv.client(greet=False)
        c.send(v1("192.0.2.50", 5000) + b"EHLO talker.example\r\n")
        c.expect("554 5.5.1 %s Error: talking before the greeting" % h.HOSTNAME)
        c.expect_closed()
        srv.wait_log(r"\bsession end\b.*\bclient=192\.0\.2\.50\b.*\breason=pregreet\b")
        c = proxied(srv, v1("192.0.2.51", 5001), timeout=10)  # waits out pregreet_wait
        c.ehlo()
        c.quit()


TLSServer = h.TLSServer


@suite.case
def implicit_tls_after_the_header():
    tmp = h.new_tmpdir("proxy-tls")
    certs = os.path.join(tmp, "tls")
    p = h.run_cmd([os.path.join(ROOT, "tools", "mxring-cert.sh"), certs, h.HOSTNAME],
                  60)
    check(p.returncode == 0, "mxring-cert.sh failed: %r" % p.stderr)
    port = h.free_port()
    srv = TLSServer({"proxy_protocol": "haproxy", "proxy_timeout": "2",
                     "tls_security_level": "may",
                     "tls_cert_file": os.path.join(certs, "cert.pem"),
                     "tls_key_file": os.path.join(certs, "key.pem"),
                     "smtps_listen": "127.0.0.1:%d" % port})
    with srv:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.sendall(v2("192.0.2.60", 6000))
        t = ctx.wrap_socket(raw)
        f = t.makefile("rb")
        check_eq(f.readline().decode().rstrip("\r\n"), h.R_GREETING, "greeting inside TLS")
        t.sendall(b"QUIT\r\n")
        check(f.readline().startswith(b"221 "), "QUIT reply inside TLS")
        t.close()
        srv.wait_log(r"\bsession end\b.*\bclient=192\.0\.2\.60 port=6000\b.*\btls=\"TLSv1")
        check_served(srv)


if __name__ == "__main__":
    suite.main()
