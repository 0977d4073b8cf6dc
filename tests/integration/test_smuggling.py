#!/usr/bin/env python3
"""
test_smuggling.py - SMTP smuggling (2023): only <CR><LF>.<CR><LF> ends DATA.

Each variant of a fake end of data is followed by a smuggled transaction
(MAIL/RCPT/DATA/text) and then the real end. The receiver must send exactly
one reply (250 queued) and nothing for the smuggled commands, and the stored
body must hold the smuggled text. With bare_newline = reject the variants
with a bare LF get '550 5.5.2 Error: bare <LF> received' at the end of data.
The same is checked with the bytes split into one-byte writes, so the fake
and real ends cross receive buffers.
"""

import harness as h
from harness import check, check_eq

suite = h.Suite("smuggling")

VARIANTS = [
    ("lf_dot_lf", b"\n.\n"),
    ("lf_dot_crlf", b"\n.\r\n"),
    ("cr_dot_cr", b"\r.\r"),
    ("crlf_dot_lf", b"\r\n.\n"),
    ("crlf_dot_cr", b"\r\n.\r"),
    ("cr_dot_crlf", b"\r.\r\n"),
]
# Fake ends right at the start of the data (a line start).
START_VARIANTS = [
    ("start_dot_lf", b".\n"),
    ("start_dot_cr", b".\r"),
]

PREFIX = b"Subject: smuggle\r\n\r\nline1"
SMUGGLED = (b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            b"smuggled\r\n")
END = b".\r\n"      # SMUGGLED ends in CRLF: together the real <CR><LF>.<CR><LF>


def has_bare_lf(v):
    return any(v[i] == 0x0a and (i == 0 or v[i - 1] != 0x0d) for i in range(len(v)))


def content(variant, at_start=False):
    if at_start:
        return variant + SMUGGLED
    return PREFIX + variant + SMUGGLED


def start_transaction(c):
    c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
    c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
    c.cmd("DATA", h.R_DATA)


def send_data(c, data, slow):
    if slow:
        c.send_slowly(data, piece=1, pause=0.001)
    else:
        c.send(data)


def check_stored(srv, qid, data):
    body = h.spool_body(srv.spool, qid)
    check(SMUGGLED in body, "smuggled text missing from stored body %r" % body)
    check(body.endswith(SMUGGLED), "stored body does not end with the smuggled text: %r"
          % body[-80:])
    check(body.startswith(data[:len(PREFIX)]) or not data.startswith(PREFIX),
          "stored body does not start with the prefix: %r" % body[:80])
    check(not has_bare_lf(body), "bare LF left in a normalized body: %r" % body)
    return body


def _normalize_case(name, variant, at_start, slow):
    def fn():
        with h.Server() as srv:
            c = srv.client()
            c.ehlo()
            start_transaction(c)
            data = content(variant, at_start)
            send_data(c, data + END, slow)
            qid = c.queued()
            # Nothing for the smuggled MAIL/RCPT/DATA: the next reply is NOOP's.
            c.cmd("NOOP", h.R_OK)
            c.expect_no_reply()
            c.quit()
            check_stored(srv, qid, data)
            ls = h.spool_list(srv.spool)
            check_eq([(e["qid"], e["from"], e["rcpts"]) for e in ls],
                     [(qid, "sender@example.com", 1)], "spool contents")
        check_eq(h.spool_verify(srv.spool), 1, "verify count")
    fn.__name__ = "normalize_%s%s" % (name, "_bytewise" if slow else "")
    return fn


def _reject_case(name, variant, at_start, slow):
    def fn():
        with h.Server({"bare_newline": "reject"}) as srv:
            c = srv.client()
            c.ehlo()
            start_transaction(c)
            data = content(variant, at_start)
            send_data(c, data + END, slow)
            stored = []
            if has_bare_lf(variant):
                c.expect(h.R_BARE_LF)
            else:
                # Bare CR without LF: either stored or refused, but one reply only.
                r = c.reply1()
                m = h.QUEUED_RE.match(r)
                check(m is not None or r.startswith("550 5.5.2"),
                      "reply to a bare-CR variant: %r" % r)
                if m:
                    stored.append(m.group(1))
            c.cmd("NOOP", h.R_OK)
            c.expect_no_reply()
            # The session still works after the refusal.
            stored.append(c.send_message(b"Subject: clean\r\n\r\nclean\r\n"))
            c.quit()
            for q in stored[:-1]:
                body = h.spool_body(srv.spool, q)
                check(SMUGGLED in body, "smuggled text missing from %r" % body)
            check_eq(sorted(e["qid"] for e in h.spool_list(srv.spool)), sorted(stored),
                     "stored messages")
        check_eq(h.spool_verify(srv.spool), len(stored), "verify count")
    fn.__name__ = "reject_%s%s" % (name, "_bytewise" if slow else "")
    return fn


for _slow in (False, True):
    for _n, _v in VARIANTS:
        suite.case(_normalize_case(_n, _v, False, _slow))
    for _n, _v in START_VARIANTS:
        suite.case(_normalize_case(_n, _v, True, _slow))
for _n, _v in VARIANTS + START_VARIANTS:
    suite.case(_reject_case(_n, _v, _v in (v for _, v in START_VARIANTS), False))


@suite.case
def all_variants_one_session():
    # Every variant in one message; then every variant in its own message
    # of the same session; the reply count must match the transactions.
    with h.Server() as srv:
        c = srv.client()
        c.ehlo()
        start_transaction(c)
        data = PREFIX + b"".join(v + SMUGGLED for _, v in VARIANTS)
        c.send(data + END)
        ids = [c.queued()]
        for _, v in VARIANTS:
            start_transaction(c)
            c.send(content(v) + END)
            ids.append(c.queued())
        c.cmd("NOOP", h.R_OK)
        c.expect_no_reply()
        c.quit()
        body = h.spool_body(srv.spool, ids[0])
        check_eq(body.count(b"MAIL FROM:<evil@example.com>"), len(VARIANTS),
                 "smuggled transactions kept as content")
        check(not any(e["from"] == "evil@example.com" for e in h.spool_list(srv.spool)),
              "a smuggled sender reached the spool")
    check_eq(h.spool_verify(srv.spool), 1 + len(VARIANTS), "verify count")


@suite.case
def bare_lf_normalized_exactly():
    with h.Server() as srv:
        c = srv.client()
        c.ehlo()
        start_transaction(c)
        c.send(b"Subject: lf\n\nline a\nline b\r\nline c\r\n.\r\n")
        qid = c.queued()
        c.quit()
        h.check_body(srv.spool, qid, b"Subject: lf\r\n\r\nline a\r\nline b\r\nline c\r\n",
                     "normalized body")


@suite.case
def bdat_content_is_never_commands():
    with h.Server() as srv:
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        chunk = PREFIX + b"\r\n.\r\n" + SMUGGLED + b".\r\nQUIT\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        qid = c.queued()
        c.cmd("NOOP", h.R_OK)
        c.expect_no_reply()
        c.quit()
        h.check_body(srv.spool, qid, chunk, "BDAT body")


@suite.case
def real_end_split_every_way():
    # The real <CR><LF>.<CR><LF> cut at every position across two writes.
    with h.Server() as srv:
        c = srv.client()
        c.ehlo()
        ids = []
        tail = b"\r\n.\r\n"
        for cut in range(1, len(tail)):
            start_transaction(c)
            body = b"Subject: split %d\r\n\r\nbody %d" % (cut, cut)
            wire = body + tail
            k = len(body) + cut
            c.send(wire[:k])
            c.expect_no_reply(0.1)
            c.send(wire[k:])
            ids.append((c.queued(), body + b"\r\n"))
        c.quit()
        for q, b in ids:
            h.check_body(srv.spool, q, b)


if __name__ == "__main__":
    suite.main()
