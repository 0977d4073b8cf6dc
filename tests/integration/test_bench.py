#!/usr/bin/env python3
"""
test_bench.py - mxring-bench (bench/) against the real mxring, and its
verification path (`mxring-spool verify --against ACKLOG`).

  - argument errors: each exits 2 with a message that names the argument;
    --help exits 0 and documents the size mix;
  - closed loop, 2,000 messages over 20 connections: pipelining on, off,
    and BDAT with 3 recipients and reconnects; every run exits 0, its JSON
    counts 2,000 accepted, and `mxring-spool verify --against` proves every
    acknowledged queue id is in the spool with its sequence number and
    checksum, run by run and for the three ack logs in one pass with
    --exact; the spool holds exactly the messages of those runs;
  - the verifier is not fooled: a swapped acknowledgement, a queue id the
    spool lacks, a double acknowledgement, a wrong size, a stored body whose
    X-Bench-Sum does not match, a body byte flipped on disk (caught by the
    record CRC), and the same flip with the record CRC recomputed, as a
    writer bug would leave it (caught by the X-Bench-Sum) make it exit 1;
    --exact catches a message of the run stored but never acknowledged.
    bench/verify-acks.py, an independent implementation (Python's zlib,
    through the maildir export and `cat --body`), agrees on the good log
    and on the forged checksum;
  - STARTTLS with a new session per message and --resume tickets: one full
    handshake per connection slot, the rest resumed, all verified; TLS 1.2
    session IDs resume too; implicit TLS (smtps_listen) works (skipped when
    either binary has no wolfSSL);
  - open loop: --rate 400 for 1.5 s sends about 600 messages on schedule;
    connections take turns: 200 connections at 1,000 msgs/s for 0.4 s all
    open (each due message goes to the one that waited longest);
  - --source: each bad list is refused with its exact message; 20
    connections from 127.0.0.2-127.0.0.5 reach the server from those four
    addresses, five sessions each (the server's session log says so), all
    acknowledged messages verified, and ::1 works for an IPv6 server;
  - a closed port: exit 1 within seconds, "Connection refused" and a hint;
    a server that accepts and never greets: exit 1 after --timeout with
    "no reply to the greeting";
  - bench/compare --quick (mxring and smtp-sink, 1 s of 1 KiB messages
    each) exits 0 and writes results.csv with two successful runs with
    non-zero rates and CPU, results.md with their rows and the mxring ÷
    smtp-sink ratios, and a PNG plot; its argument errors exit 2 (skipped
    without Postfix's smtp-sink);
  - bench/scale --quick --shards 1: both runs succeed and the table has
    the 1-shard row at 100% efficiency, with its plot.

The path of the tool comes as --bench PATH (meson passes it), else
$MXRING_BENCH, else build/bench/mxring-bench.
"""

import csv
import glob
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import harness as h
from harness import check, check_eq

suite = h.Suite("bench")

BENCH = None
VERIFY_PY = os.path.join(h.REPO, "bench", "verify-acks.py")
CERT_TOOL = os.path.join(h.REPO, "tools", "mxring-cert.sh")
RUN_TIMEOUT_S = 60


def bench(*args, timeout=RUN_TIMEOUT_S):
    if not os.path.exists(BENCH):
        raise h.Fail("mxring-bench not found at %s" % BENCH)
    return h.run_cmd([BENCH] + [str(a) for a in args], timeout)


def bench_ok(srv, *args, json_path=None, ack_path=None):
    """Runs the tool against srv; requires exit 0; returns the JSON report."""
    d = h.new_tmpdir("bench")
    json_path = json_path or os.path.join(d, "report.json")
    extra = ["--json", json_path, "--quiet"]
    if ack_path:
        extra += ["--ack-log", ack_path]
    p = bench("--server", "127.0.0.1:%d" % srv.port, *(list(args) + extra))
    check_eq(p.returncode, 0, "mxring-bench %s exit status\nstdout:\n%s\nstderr:\n%s"
             % (" ".join(map(str, args)), p.stdout.decode(errors="replace"),
                p.stderr.decode(errors="replace")[-3000:]))
    with open(json_path) as f:
        return json.load(f)


def verify(ack, spool, *extra):
    """Runs `mxring-spool verify SPOOL --against ACK`; (exit status, its output)."""
    rc, out, err = h.spool_tool("verify", spool, "--against", ack, *extra, check_rc=False)
    return rc, out.decode(errors="replace") + err.decode(errors="replace")


def verify_ok(ack, spool, n):
    rc, out = verify(ack, spool)
    check_eq(rc, 0, "mxring-spool verify --against exit status; output:\n%s" % out)
    check(re.search(r"\backnowledged=%d intact=%d damaged=0 missing=0 twice=0\b" % (n, n), out),
          "mxring-spool verify --against summary: %r" % out)


def verify_py(ack, spool, *extra):
    """The independent checker bench/verify-acks.py; (exit status, its output)."""
    p = h.run_cmd([sys.executable, VERIFY_PY, ack, spool, "--spool-tool", h.Paths.spool_tool]
                  + list(extra), 120)
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def have_tls():
    p = bench("--version", timeout=10)
    return b"without wolfSSL" not in p.stdout


def make_certs():
    h.require_program("openssl")
    d = h.new_tmpdir("cert")
    p = h.run_cmd(["bash", CERT_TOOL, d, h.HOSTNAME], 60)
    check_eq(p.returncode, 0, "mxring-cert.sh exit status (stderr %r)" % p.stderr)
    return d


TLSServer = h.TLSServer


def tls_server(**extra):
    """A TLS-offering server (start it with `with`); skips when mxring-bench lacks TLS."""
    if not have_tls():
        raise h.Skip("mxring-bench was built without wolfSSL")
    certs = make_certs()
    cfg = {"tls_security_level": "may",
           "tls_cert_file": os.path.join(certs, "cert.pem"),
           "tls_key_file": os.path.join(certs, "key.pem"),
           "tls_ticket_key_file": os.path.join(certs, "ticket.keys")}
    cfg.update(extra)
    return TLSServer(cfg)


# ---------------------------------------------------------------- arguments

ARG_ERRORS = [
    # arguments, the argument the message must name
    ([], "--connections"),
    (["--connections", "0", "--messages", "1"], "--connections"),
    (["--connections", "many", "--messages", "1"], "--connections"),
    (["--connections", "2"], "--messages"),
    (["--connections", "2", "--messages", "5", "--duration", "1"], "--messages"),
    (["--connections", "2", "--messages", "5", "--size", "1x"], "--size"),
    (["--connections", "2", "--messages", "5", "--size", "1k", "--size-dist", "mix"], "--size"),
    (["--connections", "2", "--messages", "5", "--size-dist", "normal"], "--size-dist"),
    (["--connections", "2", "--messages", "5", "--pipelining", "maybe"], "--pipelining"),
    (["--connections", "2", "--messages", "5", "--bdat", "2"], "--bdat"),
    (["--connections", "2", "--messages", "5", "--bdat-chunk", "4096"], "--bdat-chunk"),
    (["--connections", "2", "--messages", "5", "--rcpts", "101"], "--rcpts"),
    (["--connections", "2", "--messages", "5", "--threads", "3"], "--threads"),
    (["--connections", "2", "--messages", "5", "--timeout", "0"], "--timeout"),
    (["--connections", "2", "--messages", "5", "--rate", "-1"], "--rate"),
    (["--connections", "2", "--messages", "5", "--server", "localhost"], "--server"),
    (["--connections", "2", "--messages", "5", "--server", "127.0.0.1:99999"], "--server"),
    (["--connections", "2", "--messages", "5", "--to", "nobody"], "--to"),
    (["--connections", "2", "--messages", "5", "--from", "a%x@example.com"], "--from"),
    (["--connections", "2", "--messages", "5", "--resume", "tickets"], "--resume"),
    (["--connections", "2", "--messages", "5", "--tls-version", "1.3"], "--tls-version"),
    (["--connections", "2", "--messages", "5", "--starttls", "--tls"], "--tls"),
    (["--connections", "2", "--messages", "5", "--starttls", "--resume", "ids"], "--resume"),
    (["--connections", "2", "--messages", "5", "--starttls", "--tls-version", "1.1"],
     "--tls-version"),
    (["--connections", "2", "--messages", "5", "--cpus", "1-"], "--cpus"),
    (["--connections", "2", "--messages", "5", "--frobnicate"], "--frobnicate"),
    (["--connections", "2", "--messages"], "--messages"),
    (["--connections", "2", "--messages", "5", "extra"], "extra"),
]


@suite.case
def argument_errors():
    for args, name in ARG_ERRORS:
        p = bench(*args, timeout=10)
        err = p.stderr.decode(errors="replace")
        check_eq(p.returncode, 2, "exit status of mxring-bench %s (stderr %r)"
                 % (" ".join(args), err))
        check(("mxring-bench: %s:" % name) in err,
              "mxring-bench %s: the message should name %s: %r" % (" ".join(args), name, err))
        check(not p.stdout, "mxring-bench %s printed on stdout: %r" % (" ".join(args), p.stdout))
    p = bench("--help", timeout=10)
    check_eq(p.returncode, 0, "--help exit status")
    out = p.stdout.decode()
    for want in ("--size-dist mix", "large attachments", "--resume tickets|ids|none", "--rate"):
        check(want in out, "--help lacks %r" % want)


# ---------------------------------------------------------------- closed loop


@suite.case
def closed_loop_runs_verified():
    runs = [
        ["--pipelining", "on"],
        ["--pipelining", "off", "--msgs-per-conn", "50"],
        ["--bdat", "on", "--rcpts", "3", "--msgs-per-conn", "7", "--size", "3k"],
    ]
    total, acks = 0, []
    with h.Server() as srv:
        for args in runs:
            ack = os.path.join(h.new_tmpdir("ack"), "acks")
            acks.append(ack)
            rep = bench_ok(srv, "--connections", 20, "--messages", 2000, *args, ack_path=ack)
            check_eq(rep["messages"], {"accepted": 2000, "tempfail": 0, "rejected": 0,
                                       "failed": 0}, "messages of %s" % args)
            check(rep["msgs_per_s"] > 0 and rep["latency_ms"]["data_end_reply"]["count"] == 2000,
                  "JSON report of %s: %r" % (args, rep))
            check_eq(sum(rep["errors"].values()), 0, "errors of %s" % args)
            verify_ok(ack, srv.spool, 2000)
            total += 2000
        ls = h.spool_list(srv.spool)
        check_eq(len(ls), total, "messages in the spool")
        # All runs in one pass, and with --exact nothing else of theirs stored.
        rc, out, _ = h.spool_tool("verify", srv.spool, "--exact",
                                  *[x for a in acks for x in ("--against", a)], check_rc=False)
        out = out.decode(errors="replace")
        check(rc == 0 and ("all %d acknowledged messages stored intact" % total) in out
              and out.count(" intact=2000 damaged=0 missing=0 twice=0 unacknowledged=0") == 3,
              "verify with three --against: exit %d, output:\n%s" % (rc, out))
        check(all(e["rcpts"] in (1, 3) for e in ls), "recipient counts")
    check_eq(h.spool_verify(srv.spool), total, "mxring-spool verify count after stop")


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli), as core/crc32c.c computes it."""
    if not CRC32C_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82f63b78 if c & 1 else c >> 1
            CRC32C_TABLE.append(c)
    crc ^= 0xffffffff
    for b in data:
        crc = CRC32C_TABLE[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


CRC32C_TABLE = []


def flip_body_byte(seg_path, seq, fix_crc):
    """
    Flips one body byte of the message whose X-Bench-Seq is seq in a segment
    (core/spool.h); with fix_crc, recomputes its record's CRC so that only
    the bench checksum can tell.
    """
    with open(seg_path, "rb") as f:
        seg = bytearray(f.read())
    salt = bytes(seg[64:72])  # the SEGMENT record's payload starts with the salt
    at = seg.find(b"X-Bench-Seq: " + seq.encode() + b"\r\n")
    check(at > 0, "message %s not found in %s" % (seq, seg_path))
    seg[at + 100] ^= 0x01
    if fix_crc:
        rec = seg.rfind(struct.pack("<I", 0x5253584d), 0, at)
        rec_len = struct.unpack_from("<I", seg, rec + 12)[0]
        check(rec >= 0 and struct.unpack_from("<I", seg, rec + 8)[0] == 64
              and rec + rec_len > at + 100, "record of %s in %s" % (seq, seg_path))
        crc = crc32c(seg[rec:rec + 16], crc32c(salt))
        crc = crc32c(seg[rec + 20:rec + rec_len], crc)
        struct.pack_into("<I", seg, rec + 16, crc)
    with open(seg_path, "wb") as f:
        f.write(seg)


@suite.case
def verifier_catches_damage():
    d = h.new_tmpdir("ack")
    ack = os.path.join(d, "acks")
    with h.Server() as srv:
        bench_ok(srv, "--connections", 4, "--messages", 40, "--size", "2k", ack_path=ack)
        verify_ok(ack, srv.spool, 40)
        rc, out = verify(ack, srv.spool, "--exact")
        check_eq(rc, 0, "verify --against --exact; output:\n%s" % out)
        rc, out = verify_py(ack, srv.spool, "--exact")
        check_eq(rc, 0, "verify-acks.py --exact agrees; output:\n%s" % out)
        lines = open(ack).read().splitlines()
        head, body = lines[0], lines[1:]
        run = re.match(r"# mxring-bench ack-log run=([0-9a-f]{16})", head).group(1)

        def bad(name, new_body, want, spool=srv.spool):
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write("\n".join([head] + new_body) + "\n")
            rc, out = verify(path, spool)
            check_eq(rc, 1, "verify --against %s: exit status; output:\n%s" % (name, out))
            for w in [want] if isinstance(want, str) else want:
                check(w in out, "verify --against %s should say %r:\n%s" % (name, w, out))
            return path

        # Two acknowledgements with their queue ids swapped.
        a, b = body[0].split(), body[1].split()
        swapped = [" ".join([a[0], b[1], a[2]]), " ".join([b[0], a[1], b[2]])] + body[2:]
        bad("swapped", swapped, ["acknowledged as", "damaged=2 "])
        # A queue id the spool does not hold.
        missing = body[:-1] + [" ".join([body[-1].split()[0], "0000000000000000", "1000"])]
        bad("missing", missing, ["acknowledged but not in the spool", "missing=1 "])
        # The same message acknowledged twice.
        bad("twice", body + [body[0]], "acknowledged twice")
        # A wrong size.
        s = body[0].split()
        bad("size", [" ".join([s[0], s[1], str(int(s[2]) + 1)])] + body[1:], "bytes stored")
        # A stored message whose checksum does not match its body.
        msg = (b"X-Bench-Sum: 00000000\r\nX-Bench-Seq: %s-999999\r\nSubject: forged\r\n\r\n"
               b"not what the sum says\r\n" % run.encode())
        c = srv.client()
        c.ehlo()
        qid = c.send_message(msg)
        c.quit()
        path = bad("sum", body + ["%s-999999 %s %d" % (run, qid, len(msg))], "checksum")
        rc, out = verify_py(path, srv.spool)
        check(rc == 1 and "checksum" in out, "verify-acks.py agrees on the forged sum:\n%s" % out)
        # --exact: a message of the run stored but never acknowledged.
        rc, out = verify(ack, srv.spool, "--exact")
        check_eq(rc, 1, "verify --against --exact with an unacknowledged message; output:\n%s"
                 % out)
        check("never acknowledged" in out and "unacknowledged=1" in out, "--exact names it: %r"
              % out)
        rc, out = verify(ack, srv.spool)
        check_eq(rc, 0, "without --exact an unacknowledged message is no error:\n%s" % out)
    # Damage on disk, in copies of the stopped server's spool.
    seq = body[len(body) // 2].split()[0]
    for fix_crc, want in ((False, ["bad record", "acknowledged but not in the spool"]),
                          (True, ["checksum", "damaged=1 "])):
        spool = os.path.join(d, "spool-%s" % ("crc-fixed" if fix_crc else "flipped"))
        shutil.copytree(srv.spool, spool)
        segs = glob.glob(os.path.join(spool, "ready", "*.seg"))
        check_eq(len(segs), 1, "segments in %s" % spool)
        flip_body_byte(segs[0], seq, fix_crc)
        rc, out = verify(ack, spool)
        check_eq(rc, 1, "verify --against a flipped byte (crc fixed: %s); output:\n%s"
                 % (fix_crc, out))
        for w in want:
            check(w in out, "flipped byte (crc fixed: %s): output should say %r:\n%s"
                  % (fix_crc, w, out))
        if fix_crc:
            rc, out = h.spool_tool("verify", spool, check_rc=False)[:2]
            check_eq(rc, 0, "the recomputed record CRC fools plain verify (test premise)")


# ---------------------------------------------------------------- TLS


@suite.case
def starttls_with_resumption():
    with tls_server() as srv:
        ack = os.path.join(h.new_tmpdir("ack"), "acks")
        rep = bench_ok(srv, "--connections", 10, "--messages", 300, "--msgs-per-conn", 1,
                       "--starttls", "--resume", "tickets", ack_path=ack)
        check_eq(rep["messages"]["accepted"], 300, "accepted over STARTTLS")
        hs = rep["handshakes"]
        check_eq(hs["full"] + hs["resumed"], 300, "handshakes (one per message) %r" % hs)
        check_eq(hs["full"], 10, "full handshakes: one per connection slot %r" % hs)
        check(rep["latency_ms"]["handshake_resumed"]["count"] == 290, "resumed latency count")
        verify_ok(ack, srv.spool, 300)

        rep = bench_ok(srv, "--connections", 5, "--messages", 100, "--msgs-per-conn", 1,
                       "--starttls", "--tls-version", "1.2", "--resume", "ids")
        hs = rep["handshakes"]
        check_eq(hs["full"] + hs["resumed"], 100, "TLS 1.2 handshakes %r" % hs)
        check(hs["resumed"] >= 50, "TLS 1.2 session IDs resume most sessions %r" % hs)

        rep = bench_ok(srv, "--connections", 5, "--messages", 100, "--msgs-per-conn", 10,
                       "--starttls", "--bdat", "on", "--size-dist", "mix")
        check_eq(rep["messages"]["accepted"], 100, "BDAT with the size mix over STARTTLS")
        check_eq(rep["handshakes"]["full"], rep["connections_opened"],
                 "one full handshake per session (no --resume)")


@suite.case
def implicit_tls():
    port2 = h.free_port()
    with tls_server(smtps_listen="127.0.0.1:%d" % port2) as srv:
        d = h.new_tmpdir("bench")
        ack = os.path.join(d, "acks")
        p = bench("--server", "127.0.0.1:%d" % port2, "--tls", "--resume", "tickets",
                  "--connections", 4, "--messages", 80, "--msgs-per-conn", 4, "--quiet",
                  "--json", os.path.join(d, "r.json"), "--ack-log", ack)
        check_eq(p.returncode, 0, "implicit TLS run; stderr %r" % p.stderr[-2000:])
        rep = json.load(open(os.path.join(d, "r.json")))
        hs = rep["handshakes"]
        check_eq(hs["full"] + hs["resumed"], rep["connections_opened"],
                 "handshakes over implicit TLS %r" % hs)
        check_eq(hs["full"], 4, "full handshakes over implicit TLS (one per slot) %r" % hs)
        verify_ok(ack, srv.spool, 80)


# ---------------------------------------------------------------- open loop


@suite.case
def open_loop_keeps_the_schedule():
    with h.Server() as srv:
        rep = bench_ok(srv, "--connections", 10, "--duration", 1.5, "--rate", 400,
                       "--msgs-per-conn", 1000)
        n = rep["messages"]["accepted"]
        check(590 <= n <= 600, "open loop at 400/s for 1.5 s accepted %d" % n)
        check_eq(rep["config"]["rate"], 400, "rate in the JSON config")
        check_eq(rep["latency_ms"]["message"]["count"], n, "message latency samples")


@suite.case
def open_loop_connections_take_turns():
    # Each due message goes to the connection that waited longest, so 200
    # connections are all open after 200 of the 400 messages (a soak holds
    # N connections open with N/rate seconds of ramp).
    with h.Server() as srv:
        rep = bench_ok(srv, "--connections", 200, "--duration", 0.4, "--rate", 1000,
                       "--msgs-per-conn", 1000000)
        check(390 <= rep["messages"]["accepted"] <= 400, "accepted %r" % rep["messages"])
        check_eq(rep["connections_opened"], 200, "connections opened")


# ---------------------------------------------------------------- source addresses

SOURCE_ERRORS = [
    # --source value, extra arguments, the exact first line on stderr
    ("foo", [], "mxring-bench: --source: expected addresses or FIRST-LAST ranges, "
     "comma-separated (e.g. 127.0.0.2-127.0.0.9 or ::1), got 'foo'"),
    ("127.0.0.2,", [], "mxring-bench: --source: expected addresses or FIRST-LAST ranges, "
     "comma-separated (e.g. 127.0.0.2-127.0.0.9 or ::1), got ''"),
    ("127.0.0.9-127.0.0.2", [], "mxring-bench: --source: range '127.0.0.9-127.0.0.2' ends "
     "before it starts"),
    ("127.0.0.2-::1", [], "mxring-bench: --source: range '127.0.0.2-::1' mixes IPv4 and IPv6"),
    ("127.0.0.0-127.0.4.0", [], "mxring-bench: --source: more than 1024 addresses in "
     "'127.0.0.0-127.0.4.0'"),
    ("[::1]", [], "mxring-bench: --source: ::1 is IPv6 but --server 127.0.0.1:25 is IPv4"),
    ("127.0.0.2", ["--server", "[::1]:25"],
     "mxring-bench: --source: 127.0.0.2 is IPv4 but --server [::1]:25 is IPv6"),
    # TEST-NET-1 (RFC 5737): no host has it, so it cannot be bound.
    ("192.0.2.1", [], "mxring-bench: --source: cannot bind to 192.0.2.1: Cannot assign "
     "requested address"),
]


@suite.case
def source_argument_errors():
    for value, extra, want in SOURCE_ERRORS:
        args = ["--connections", "2", "--messages", "1", "--source", value] + extra
        p = bench(*args, timeout=10)
        err = p.stderr.decode(errors="replace")
        check_eq(p.returncode, 2, "exit status of mxring-bench %s (stderr %r)"
                 % (" ".join(args), err))
        check_eq(err.splitlines()[0] if err else "", want, "message for --source %r" % value)
        check(not p.stdout, "--source %r printed on stdout: %r" % (value, p.stdout))
    p = bench("--help", timeout=10)
    check("--source LIST" in p.stdout.decode(), "--help lacks --source")


def session_clients(srv):
    """Sessions per client address, from the server's 'session end' lines."""
    counts = {}
    for line in srv.wait_log(r"session end ", 1):
        m = re.search(r"\bclient=(\S+)", line)
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


@suite.case
def source_addresses_spread_connections():
    with h.Server() as srv:
        ack = os.path.join(h.new_tmpdir("ack"), "acks")
        # Every slot takes a message before it connects, and none runs out of
        # transactions: one session per slot, slot c from address c mod 4.
        rep = bench_ok(srv, "--connections", 20, "--messages", 200, "--msgs-per-conn", 1000,
                       "--source", "127.0.0.2-127.0.0.5", ack_path=ack)
        check_eq(rep["messages"]["accepted"], 200, "accepted from four source addresses")
        check_eq(rep["connections_opened"], 20, "sessions (one per slot)")
        check_eq(rep["config"]["sources"], 4, "sources in the JSON config")
        srv.wait_log(r"session end ", 20)
        check_eq(session_clients(srv), {"127.0.0.%d" % i: 5 for i in (2, 3, 4, 5)},
                 "sessions per client address in the server log")
        verify_ok(ack, srv.spool, 200)
    if not h.have_ipv6_loopback():
        return
    with h.Server(ipv6=True) as srv:
        d = h.new_tmpdir("bench")
        p = bench("--server", "[::1]:%d" % srv.port6, "--source", "::1", "--connections", 3,
                  "--messages", 9, "--quiet", "--json", os.path.join(d, "r.json"))
        check_eq(p.returncode, 0, "IPv6 run from ::1; stderr %r" % p.stderr[-2000:])
        srv.wait_log(r"session end ", 3)
        check_eq(session_clients(srv), {"::1": 3}, "IPv6 sessions per client address")


# ---------------------------------------------------------------- failures


@suite.case
def closed_port_fails_fast():
    port = h.free_port()
    t0 = time.monotonic()
    p = bench("--server", "127.0.0.1:%d" % port, "--connections", 5, "--messages", 1000,
              "--quiet", timeout=30)
    took = time.monotonic() - t0
    err = p.stderr.decode(errors="replace")
    check_eq(p.returncode, 1, "exit status against a closed port (stderr %r)" % err)
    check("Connection refused" in err, "stderr names the refusal: %r" % err)
    check("is the server running?" in err, "stderr has the hint: %r" % err)
    check(took < 5, "took %.1f s against a closed port" % took)


@suite.case
def silent_server_times_out():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    port = ls.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(ls.accept()[0])  # accepted, never answered
            except socket.timeout:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        p = bench("--server", "127.0.0.1:%d" % port, "--connections", 2, "--messages", 2,
                  "--timeout", 1, "--quiet", timeout=30)
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        ls.close()
    err = p.stderr.decode(errors="replace")
    check_eq(p.returncode, 1, "exit status against a silent server (stderr %r)" % err)
    check("no reply to the greeting within 1 s" in err, "stderr: %r" % err)
    check(took < 10, "took %.1f s with --timeout 1" % took)
    out = p.stdout.decode(errors="replace")
    check(re.search(r"failed 2\b", out), "two messages failed: %r" % out)


# ---------------------------------------------------------------- bench/compare, bench/scale

COMPARE = os.path.join(h.REPO, "bench", "compare")
SCALE = os.path.join(h.REPO, "bench", "scale")
SCRIPT_TIMEOUT_S = 90


def script(path, *args):
    """Runs bench/compare or bench/scale on the binaries under test; CompletedProcess."""
    return h.run_cmd([sys.executable, path, "--mxring", h.Paths.mxring, "--bench", BENCH,
                      "--spool-tool", h.Paths.spool_tool, "--work", h.new_tmpdir("work")]
                     + [str(a) for a in args], SCRIPT_TIMEOUT_S)


def script_ok(path, *args):
    p = script(path, *args)
    check_eq(p.returncode, 0, "%s %s exit status\nstdout:\n%s\nstderr:\n%s" % (
        os.path.basename(path), " ".join(map(str, args)), p.stdout.decode(errors="replace"),
        p.stderr.decode(errors="replace")[-4000:]))
    return p


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_png(path):
    if not shutil.which("gnuplot"):
        raise h.Fail("gnuplot is missing (tools/deps.sh --test installs gnuplot-nox)")
    with open(path, "rb") as f:
        check(f.read(8) == b"\x89PNG\r\n\x1a\n", "%s is not a PNG" % path)


@suite.case
def compare_quick():
    if not os.access("/usr/sbin/smtp-sink", os.X_OK):
        raise h.Skip("Postfix smtp-sink is not installed")
    for args, want in ((["--only", "mxring,nosuch"], "unknown server"),
                       (["--cases", "huge"], "unknown case"),
                       (["--duration", "0"], "must be positive")):
        p = script(COMPARE, *args)
        check(p.returncode == 2 and want.encode() in p.stderr,
              "compare %s: exit %d, stderr %r" % (args, p.returncode, p.stderr[-500:]))
    out = h.new_tmpdir("compare")
    script_ok(COMPARE, "--quick", "--no-install", "--out", out)
    rows = read_csv(os.path.join(out, "results.csv"))
    check_eq(sorted((r["server"], r["case"]) for r in rows),
             [("mxring", "small"), ("smtp-sink", "small")], "runs in results.csv")
    for r in rows:
        check(r["ok"] == "1" and int(r["accepted"]) > 0 and float(r["msgs_per_s"]) > 0
              and float(r["server_cpu_s"]) > 0 and float(r["msgs_per_cpu_s"]) > 0,
              "a sane, successful run: %r" % r)
    md = open(os.path.join(out, "results.md")).read()
    check(re.search(r"^Command: `bench/compare .*--quick --no-install --out ", md, re.M),
          "results.md names the command:\n%s" % md)
    for server in ("| mxring |", "| Postfix smtp-sink (stores nothing) |"):
        check(re.search(r"\| 1 KiB, plaintext, 100 msgs/session %s [\d,]+ \| [\d.]+ \| [\d,]+ \|"
                        % re.escape(server), md), "results.md row for %s:\n%s" % (server, md))
    check(re.search(r"\| 1 KiB, plaintext, 100 msgs/session \| \d+\.\d\d× \| \d+\.\d\d× \|",
                    md), "results.md has the mxring ÷ smtp-sink ratios:\n%s" % md)
    check_png(os.path.join(out, "plot.png"))


@suite.case
def scale_quick():
    if not have_tls():
        raise h.Skip("mxring-bench was built without wolfSSL (scale measures handshakes)")
    p = script(SCALE, "--shards", "0")
    check(p.returncode == 2 and b"--shards" in p.stderr, "scale --shards 0: exit %d, %r"
          % (p.returncode, p.stderr[-500:]))
    out = h.new_tmpdir("scale")
    script_ok(SCALE, "--quick", "--shards", "1", "--out", out)
    rows = read_csv(os.path.join(out, "results.csv"))
    check_eq(sorted(r["kind"] for r in rows), ["handshakes", "plaintext"], "runs")
    for r in rows:
        rate = r["hs_full_per_s"] if r["kind"] == "handshakes" else r["msgs_per_s"]
        check(r["ok"] == "1" and float(rate) > 0 and r["shards"] == "1",
              "a sane, successful run: %r" % r)
    md = open(os.path.join(out, "results.md")).read()
    check(re.search(r"^\| 1 \| .* \| [\d,]+ \| \d+% \| 100% \| [\d,]+ \| \d+% \| 100% \| 1 \|$",
                    md, re.M), "results.md row for 1 shard:\n%s" % md)
    check_png(os.path.join(out, "plot.png"))


if __name__ == "__main__":
    argv = sys.argv[1:]
    BENCH = h.take_bench_arg(argv)
    if not os.path.exists(BENCH):
        print("1..0 # SKIP mxring-bench not built (%s)" % BENCH)
        sys.exit(77)
    suite.main(argv)
