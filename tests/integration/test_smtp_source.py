#!/usr/bin/env python3
"""
test_smtp_source.py - Postfix's smtp-source (Debian package postfix) sends
10,000 messages over 50 parallel sessions, once with a new session per
message and once with sessions reused (-d). smtp-source aborts and exits
non-zero on any reply other than the expected one, so exit 0 means all
10,000 were acknowledged with 250. Then:
  - `mxring-spool verify` counts exactly 10,000 and exits 0;
  - `mxring-spool list` gives 10,000 distinct queue ids (and the per-message
    log lines name the same ids when the log has them);
  - a sample of stored bodies equals, byte for byte, what smtp-source sends,
    learned from one run against a capture peer (its Date and Message-Id
    header values change per message and are blanked on both sides).

Exits 77 when smtp-source is not installed.
"""

import os
import random
import subprocess
import time

import harness as h
from harness import check, check_eq

suite = h.Suite("smtp-source")

SMTP_SOURCE = "/usr/sbin/smtp-source"
N = 10000
SESSIONS = 50
LENGTH = 1024
SENDER = "a@example.com"
RCPT = "b@example.com"


STALL_S = 20     # the server log did not grow for this long while smtp-source runs = stalled


def _open_conns(port):
    """ss lines of established connections to the server port (diagnostics)."""
    try:
        out = subprocess.run(["ss", "-tn"], capture_output=True, timeout=10).stdout.decode()
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [l for l in out.splitlines() if " 127.0.0.1:%d " % port in l + " "
            and l.split()[3:4] == ["127.0.0.1:%d" % port]]


def smtp_source(srv, extra, count, timeout):
    """
    Runs smtp-source against srv and requires exit 0. smtp-source waits up
    to 300 s for a reply, so a lost reply would only show after minutes:
    progress is watched in the server log instead, and a stall of STALL_S
    seconds (log not growing, smtp-source still running) fails the case
    with the connections left open.
    """
    exe = h.require_program(SMTP_SOURCE)
    argv = [exe, "-s", str(SESSIONS), "-m", str(count), "-l", str(LENGTH), "-f", SENDER,
            "-t", RCPT] + extra + ["127.0.0.1:%d" % srv.port]
    d = h.new_tmpdir("smtp-source")
    errf = open(os.path.join(d, "stderr"), "w+b")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
    deadline = time.monotonic() + timeout
    last_n, last_t = -1, time.monotonic()
    try:
        while p.poll() is None:
            now = time.monotonic()
            n = os.path.getsize(srv.log_path)   # every message and session logs a line
            if n != last_n:
                last_n, last_t = n, now
            if now - last_t > STALL_S or now > deadline:
                conns = _open_conns(srv.port)
                raise h.Fail("smtp-source stalled: %d messages queued, nothing logged for %d s; "
                             "%d connections still open:\n  %s"
                             % (srv.log().count(" queued "), now - last_t, len(conns),
                                "\n  ".join(conns[:20])))
            time.sleep(0.5)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
        errf.close()
    check_eq(p.returncode, 0, "%s exit status; stderr:\n%s" % (" ".join(argv), err[-3000:]))
    return err


def reference_body(extra):
    """What smtp-source sends for one message, as the spool must store it."""
    with h.CaptureServer() as cap:
        exe = h.require_program(SMTP_SOURCE)
        p = h.run_cmd([exe, "-m", "1", "-l", str(LENGTH), "-f", SENDER, "-t", RCPT] + extra
                      + ["127.0.0.1:%d" % cap.port], 30)
        check_eq(p.returncode, 0, "smtp-source against the capture peer: %r" % p.stderr)
        check_eq(len(cap.messages), 1, "captured messages")
        return h.dot_unstuff(cap.messages[0]["wire"])


def check_run(srv, extra, rcpts_each=1):
    smtp_source(srv, extra, N, timeout=400)
    ls = h.spool_list(srv.spool)
    ids = [e["qid"] for e in ls]
    check_eq(len(ids), N, "messages listed")
    check_eq(len(set(ids)), N, "distinct queue ids")
    bad = [e for e in ls if e["from"] != SENDER or e["rcpts"] != rcpts_each]
    check(not bad, "%d entries with an unexpected envelope, e.g. %r" % (len(bad), bad[:3]))
    logged = srv.queue_ids_logged(ids[0])
    if logged:
        check_eq(logged, set(ids), "queue ids in the per-message log lines vs the spool")
    want = h.mask_lines(reference_body(extra))
    for qid in random.Random(7).sample(ids, 25):
        got = h.spool_body(srv.spool, qid)
        check_eq(h.mask_lines(got), want, "body of %s vs what smtp-source sends" % qid)
    return ids


@suite.case
def smtp_source_new_session_per_message():
    h.require_program(SMTP_SOURCE)
    with h.Server() as srv:
        check_run(srv, [])
    check_eq(h.spool_verify(srv.spool), N, "verify count after stop")


@suite.case
def smtp_source_reused_sessions():
    h.require_program(SMTP_SOURCE)
    with h.Server() as srv:
        check_run(srv, ["-d"])
    check_eq(h.spool_verify(srv.spool), N, "verify count after stop")


@suite.case
def smtp_source_five_recipients():
    h.require_program(SMTP_SOURCE)
    with h.Server() as srv:
        smtp_source(srv, ["-d", "-r", "5"], 500, timeout=120)
        ls = h.spool_list(srv.spool)
        check_eq(len(ls), 500, "messages listed")
        check(all(e["rcpts"] == 5 for e in ls), "recipient counts %r"
              % sorted(set(e["rcpts"] for e in ls)))
    check_eq(h.spool_verify(srv.spool), 500, "verify count")


if __name__ == "__main__":
    suite.main()
