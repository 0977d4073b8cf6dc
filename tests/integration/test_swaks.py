#!/usr/bin/env python3
"""
test_swaks.py - swaks (Debian package, written by no one here) against the
real mxring: plain, --pipeline, --body from a file, --data from a file,
--protocol ESMTP with 5 recipients, HELO-only SMTP, and a refused relay.

What swaks sends is learned by running the same command against a capture
peer (harness.CaptureServer); the stored body must equal it after
dot-unstuffing, with the Date/Message-Id/Subject header values (which carry
the time) blanked on both sides.

Exits 77 when swaks is not installed.
"""

import os
import re

import harness as h
from harness import check, check_eq

suite = h.Suite("swaks")

QUEUED = re.compile(r"^<-  250 2\.0\.0 Ok: queued as ([0-9A-Za-z]{16})\s*$", re.M)
MASK = (b"Date:", b"Message-Id:", b"Message-ID:", b"Subject:")


def swaks(port, args, timeout=30):
    exe = h.require_program("swaks")
    argv = [exe, "--server", "127.0.0.1:%d" % port, "--helo", "client.example.org",
            "--timeout", "10"] + list(args)
    p = h.run_cmd(argv, timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")


def sent_by_swaks(args):
    """The message swaks sends for args, as the spool must store it."""
    with h.CaptureServer() as cap:
        rc, out = swaks(cap.port, args)
        check_eq(rc, 0, "swaks against the capture peer:\n%s" % out)
        check_eq(len(cap.messages), 1, "messages captured")
        return h.dot_unstuff(cap.messages[0]["wire"]) if cap.messages[0]["wire"] else b""


def deliver(srv, args, compare=True):
    rc, out = swaks(srv.port, args)
    check_eq(rc, 0, "swaks exit status; transcript:\n%s" % out)
    ids = QUEUED.findall(out)
    check_eq(len(ids), 1, "queued replies in the swaks transcript:\n%s" % out)
    if compare:
        want = sent_by_swaks(args)
        got = h.spool_body(srv.spool, ids[0])
        check_eq(h.mask_lines(got, MASK), h.mask_lines(want, MASK),
                 "stored body vs what swaks sent (time headers blanked)")
    return ids[0], out


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


@suite.case
def swaks_plain():
    with h.Server() as srv:
        qid, out = deliver(srv, ["--from", "sender@example.com", "--to", "rcpt@example.com"])
        check(("<-  " + h.R_GREETING) in out, "greeting not seen by swaks:\n%s" % out)
    check_eq(h.spool_verify(srv.spool), 1, "verify count")


@suite.case
def swaks_pipeline():
    with h.Server() as srv:
        qid, out = deliver(srv, ["--pipeline", "--from", "sender@example.com",
                                 "--to", "rcpt@example.com"])
        # swaks prints the whole group before the replies when it pipelines.
        i_rcpt = out.find(" -> RCPT TO:<rcpt@example.com>")
        i_mail_reply = out.find("<-  " + h.R_MAIL_OK)
        check(0 <= i_rcpt < i_mail_reply, "swaks did not pipeline:\n%s" % out)


@suite.case
def swaks_body_file():
    with h.Server() as srv:
        d = h.new_tmpdir("swaks")
        body = write(os.path.join(d, "body.txt"),
                     b".leading dot\n.\n..\nplain line\n" + b"long " * 400 + b"\nlast\n")
        deliver(srv, ["--from", "sender@example.com", "--to", "rcpt@example.com",
                      "--body", "@" + body])


@suite.case
def swaks_data_file():
    with h.Server() as srv:
        d = h.new_tmpdir("swaks")
        data = (b"From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\n"
                b"Subject: fixed\r\nMessage-Id: <fixed@example.com>\r\n\r\n"
                b".\r\n.dot\r\nline\r\n" + b"0123456789" * 30000 + b"\r\nend\r\n")
        path = write(os.path.join(d, "data.eml"), data)
        qid, _ = deliver(srv, ["--from", "sender@example.com", "--to", "rcpt@example.com",
                               "--data", "@" + path])
        # With a fixed --data nothing varies: compare the whole body unmasked.
        h.check_body(srv.spool, qid, sent_by_swaks(
            ["--from", "sender@example.com", "--to", "rcpt@example.com", "--data", "@" + path]))


@suite.case
def swaks_esmtp_five_recipients():
    rcpts = ",".join("r%d@example.com" % i for i in range(5))
    with h.Server() as srv:
        qid, out = deliver(srv, ["--protocol", "ESMTP", "--from", "sender@example.com",
                                 "--to", rcpts])
        check_eq(out.count("<-  " + h.R_RCPT_OK), 5, "RCPT replies")
        e = {x["qid"]: x for x in h.spool_list(srv.spool)}[qid]
        check_eq((e["from"], e["rcpts"]), ("sender@example.com", 5), "list entry")


@suite.case
def swaks_helo_only():
    with h.Server() as srv:
        qid, out = deliver(srv, ["--protocol", "SMTP", "--from", "sender@example.com",
                                 "--to", "rcpt@example.com"])
        check(("<-  " + h.R_HELO) in out, "HELO reply not seen:\n%s" % out)


@suite.case
def swaks_relay_refused():
    with h.Server() as srv:
        rc, out = swaks(srv.port, ["--from", "sender@example.com", "--to", "x@other.example"])
        check(rc != 0, "swaks succeeded relaying to other.example:\n%s" % out)
        check(("<** " + h.R_RELAY) in out, "relay refusal not seen:\n%s" % out)
        check_eq(h.spool_list(srv.spool), [], "spool after a refused relay")


if __name__ == "__main__":
    suite.main()
