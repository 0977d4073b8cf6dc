#!/usr/bin/env python3
"""
test_hostile.py - clients that attack the receiver rather than use it.

Each case drives one kind of abuse over raw sockets and asserts the exact
replies the receiver gives it, and each checks that a normal client is
served during or after the abuse:

  - a command line dribbled a byte at a time (command-phase slowloris) and a
    TLS handshake dribbled the same way: cut off by command_timeout /
    tls_handshake_timeout counted from when the server was ready, not from
    the last byte;
  - lingering close: a client still sending when it is cut off (a trickle,
    a pipelined flood past error_limit) reads its 421 and then an orderly
    end of stream, never a reset;
  - thousands of pipelined RCPTs: recipient_limit, then 452s that do not
    count as errors up to recipient_overshoot_limit, then ones that do;
  - a 100,000-command pipelined burst read slowly: every reply, in order,
    with the server's memory flat; content sent before the 354; commands
    pipelined after the end-of-data dot;
  - BDAT that never ends, ends in a disconnect, or has absurd sizes;
  - 8-bit bytes in EHLO, verbs and addresses;
  - connection_limit_exceptions exempting addresses from
    max_connections_per_ip (loopback 127.0.0.2 against 127.0.0.3).

Every wait is bounded and polls; no sleep stands in for synchronisation.
"""

import os
import re
import select
import socket
import ssl
import threading
import time

import harness as h
from harness import check, check_eq

suite = h.Suite("hostile")

TIMEOUT_LINE = (h.R_TIMEOUT + "\r\n").encode()


def raw(srv, source=None, timeout=5.0):
    """A plain socket to srv, optionally from a given loopback source address."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect(("127.0.0.1", srv.port))
    return s


def read_line(s, timeout=10.0):
    """Bytes up to and including the first LF (bounded)."""
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        check(left > 0, "no line within %.0f s (got %r)" % (timeout, got))
        s.settimeout(left)
        ch = s.recv(1)
        check(ch, "connection closed before a line ended (got %r)" % got)
        got += ch
    return got


def dribble(s, data, interval, limit_s):
    """
    Sends data one byte every interval seconds while reading whatever the
    server sends, until the server ends the stream or limit_s passes.
    Returns (bytes received, seconds from the first byte to the end of the
    stream or None, how the stream ended: 'eof', 'reset', or None, the
    error of a failed send or None).
    """
    got = b""
    t0 = time.monotonic()
    end = None
    send_error = None
    i = 0
    next_send = t0
    s.setblocking(False)
    try:
        while time.monotonic() - t0 < limit_s:
            now = time.monotonic()
            if send_error is None and now >= next_send:
                try:
                    s.send(data[i % len(data):i % len(data) + 1])
                    i += 1
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    send_error = e
                next_send = now + interval
            r, _, _ = select.select([s], [], [], max(0.0, min(0.05, next_send - now)))
            if not r:
                continue
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                end = "reset"
                break
            if not chunk:
                end = "eof"
                break
            got += chunk
    finally:
        s.setblocking(True)
    dt = time.monotonic() - t0 if end else None
    return got, dt, end, send_error


def served(srv, tag="normal"):
    """A normal client gets a message stored while (or after) the abuse goes on."""
    c = srv.client()
    c.ehlo()
    body = b"Subject: %s\r\n\r\nserved during the abuse\r\n" % tag.encode()
    q = c.send_message(body)
    c.quit()
    return q, body


def check_served(srv, tag="normal"):
    q, body = served(srv, tag)
    h.check_body(srv.spool, q, body, "the normal client's message")
    return q


def not_logged(srv, pattern, what):
    lines = [l for l in srv.log().splitlines() if re.search(pattern, l)]
    check(not lines, "%s:\n%s" % (what, "\n".join(lines[:5])))


# ---------------------------------------------------------------- lingering close


def read_to_end(s, timeout=10.0):
    """Everything the server sends until it ends the stream: (bytes, 'eof' or 'reset')."""
    got = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        check(left > 0, "the server did not end the stream within %.0f s (got %d bytes: %r)"
              % (timeout, len(got), got[-200:]))
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return got, "reset"
        if not chunk:
            return got, "eof"
        got += chunk


@suite.case
def flood_past_error_limit_reads_its_421():
    # error_limit = 5: five bad commands, then a client that goes on sending
    # (36 KB of pipelined commands over half a second) before it reads. The
    # server answers five, says 421 and stops reading commands, but reads and
    # drops what follows, so every send succeeds and the client then reads
    # all the replies and an orderly end of stream. Without the lingering
    # close its sends fail (the closed socket answers with a reset) and it
    # never reads why.
    with h.Server({"error_limit": 5}) as srv:
        s = raw(srv)
        check_eq(read_line(s), (h.R_GREETING + "\r\n").encode(), "greeting")
        s.sendall(b"BOGUS\r\n" * 5)
        for i in range(10):
            try:
                s.sendall(b"NOOP\r\n" * 600)
            except OSError as e:
                raise h.Fail("send %d after the 421 failed: %r" % (i, e))
            time.sleep(0.05)  # the pace of the client, not a wait for the server
        got, end = read_to_end(s)
        want = (h.R_UNKNOWN + "\r\n") * 5 + h.R_TOO_MANY_ERRORS + "\r\n"
        check_eq(got, want.encode(), "the replies to the flood")
        check_eq(end, "eof", "how the stream ends")
        s.close()
        srv.wait_log(r"\bsession end\b.*\berrors=5\b.*\breason=too-many-errors\b")
        check_served(srv)
    check(int(srv.stats().get("conns_lingered", "0")) >= 1,
          "conns_lingered=%s" % srv.stats().get("conns_lingered"))


@suite.case
def linger_is_bounded_in_time_and_bytes():
    # A cut-off client that keeps sending cannot hold its slot: the server
    # stops reading after 2 s or 64 KiB, whichever comes first, and closes.
    with h.Server({"error_limit": 1}) as srv:
        # Time: a trickle after the 421 is read for at most 2 s (a 1 s wheel).
        s = raw(srv)
        read_line(s)
        s.sendall(b"BOGUS\r\n")
        check_eq(read_line(s), (h.R_UNKNOWN + "\r\n").encode(), "reply")
        check_eq(read_line(s), (h.R_TOO_MANY_ERRORS + "\r\n").encode(), "reply")
        t0 = time.monotonic()
        failed = None
        while time.monotonic() - t0 < 10 and failed is None:
            try:
                s.send(b"x")
            except OSError as e:
                failed = time.monotonic() - t0
            time.sleep(0.05)
        check(failed is not None, "sends after the 421 still succeed after 10 s")
        check(failed < 4.5, "the server read a trickle for %.1f s after the 421" % failed)
        s.close()
        # Bytes: 4 MiB sent after the 421 are not all read.
        s = raw(srv)
        read_line(s)
        s.sendall(b"BOGUS\r\n")
        read_line(s)
        read_line(s)
        sent = 0
        s.settimeout(5)
        try:
            while sent < 4 << 20:
                sent += s.send(b"y" * 65536)
        except OSError:
            pass
        check(sent < 4 << 20, "the server read 4 MiB after the 421")
        s.close()
        check_served(srv)


if __name__ == "__main__":
    suite.main()
