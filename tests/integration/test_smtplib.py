#!/usr/bin/env python3
"""
test_smtplib.py - messages sent with Python's smtplib (a client no one here
wrote) and with raw pipelined/BDAT sessions, each checked byte for byte
against `mxring-spool cat --body`.

What smtplib put on the wire is recorded (RecSMTP) and the expected stored
body is computed from it by dot-unstuffing, so the comparison does not depend
on how smtplib formats a message.
"""

import email.message
import os
import smtplib
import socket
import time

import harness as h
from harness import check, check_eq

suite = h.Suite("smtplib")

HDR = b"From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: test\r\n\r\n"


class RecSMTP(smtplib.SMTP):
    """smtplib.SMTP that keeps every byte string it sends and every reply."""

    def __init__(self, *a, **k):
        self.sent = []
        self.replies = []
        super().__init__(*a, **k)

    def send(self, s):
        data = s.encode(self.command_encoding) if isinstance(s, str) else s
        self.sent.append(data)
        super().send(s)

    def getreply(self):
        code, msg = super().getreply()
        self.replies.append((code, msg))
        return code, msg

    def payloads(self):
        """DATA contents as sent, without the final '.<CR><LF>', one per DATA."""
        out = []
        for i, s in enumerate(self.sent[:-1]):
            if s.lower() == b"data\r\n":
                p = self.sent[i + 1]
                check(p.endswith(b"\r\n.\r\n"), "smtplib payload does not end in CRLF.CRLF")
                out.append(p[:-3])
        return out

    def queue_ids(self):
        ids = []
        for code, msg in self.replies:
            m = h.QUEUED_RE.match("%d %s" % (code, msg.decode("utf-8", "replace")))
            if m:
                ids.append(m.group(1))
        return ids


def smtp(srv, ipv6=False):
    host = "::1" if ipv6 else "127.0.0.1"
    c = RecSMTP(host, srv.port6 if ipv6 else srv.port, local_hostname="client.example.org",
                timeout=h.REPLY_TIMEOUT_S)
    code, msg = c.ehlo()
    check_eq(code, 250, "EHLO code")
    return c


def check_last(srv, c, nmsgs=1):
    """The last nmsgs DATA payloads of c are stored byte for byte; returns their QIDs."""
    ids = c.queue_ids()
    pays = c.payloads()
    check(len(ids) >= nmsgs, "got %d queued replies, want %d: %r" % (len(ids), nmsgs,
                                                                      c.replies[-5:]))
    check_eq(len(ids), len(pays), "queued replies vs DATA payloads")
    for qid, p in zip(ids[-nmsgs:], pays[-nmsgs:]):
        h.check_body(srv.spool, qid, h.dot_unstuff(p))
    return ids[-nmsgs:]


def listed(srv):
    return {e["qid"]: e for e in h.spool_list(srv.spool)}


@suite.case
def sendmail_one_recipient():
    with h.Server() as srv:
        c = smtp(srv)
        refused = c.sendmail("sender@example.com", ["rcpt@example.com"],
                             HDR + b"Hello, world.\r\nSecond line.\r\n")
        check_eq(refused, {}, "refused recipients")
        c.quit()
        (qid,) = check_last(srv, c)
        e = listed(srv)[qid]
        check_eq((e["from"], e["rcpts"]), ("sender@example.com", 1), "list entry")
    check_eq(h.spool_verify(srv.spool), 1, "verify count after stop")


@suite.case
def sendmail_several_recipients():
    with h.Server() as srv:
        c = smtp(srv)
        rcpts = ["a@example.com", "b@example.com", "c@EXAMPLE.com", "d.e+f@example.com"]
        check_eq(c.sendmail("sender@example.com", rcpts, HDR + b"to four\r\n"), {},
                 "refused")
        # A str message with bare LF line ends: smtplib turns them into CRLF.
        check_eq(c.sendmail("", ["a@example.com", "b@example.com"],
                            "Subject: null sender\n\nline one\nline two\n"), {}, "refused")
        c.quit()
        q1, q2 = check_last(srv, c, 2)
        ls = listed(srv)
        check_eq(ls[q1]["rcpts"], 4, "rcpts of first message")
        check_eq((ls[q2]["from"], ls[q2]["rcpts"]), ("", 2), "null sender message")
    check_eq(h.spool_verify(srv.spool), 2, "verify count")


@suite.case
def send_message_api():
    with h.Server() as srv:
        c = smtp(srv)
        m = email.message.EmailMessage()
        m["From"] = "Sender <sender@example.com>"
        m["To"] = "Rcpt <rcpt@example.com>, other@example.com"
        m["Bcc"] = "hidden@example.com"
        m["Subject"] = "send_message test"
        m.set_content("Body text.\n.\n..\nEnd.\n")
        m.add_attachment(os.urandom(3000), maintype="application", subtype="octet-stream",
                         filename="blob.bin")
        check_eq(c.send_message(m), {}, "refused")
        c.quit()
        (qid,) = check_last(srv, c)
        check_eq(listed(srv)[qid]["rcpts"], 3, "rcpts (To + Bcc)")
        body = h.spool_body(srv.spool, qid)
        check(b"hidden@example.com" not in body, "Bcc leaked into stored body")


@suite.case
def many_messages_one_session():
    with h.Server() as srv:
        c = smtp(srv)
        for i in range(50):
            body = HDR + (b"message %d\r\n" % i) * (i * 7 + 1)
            check_eq(c.sendmail("sender@example.com", ["rcpt@example.com"], body), {},
                     "refused")
        c.quit()
        ids = check_last(srv, c, 50)
        check_eq(len(set(ids)), 50, "distinct queue ids")
    check_eq(h.spool_verify(srv.spool), 50, "verify count")


@suite.case
def dot_stuffing():
    bodies = [
        HDR + b".\r\n..\r\n...\r\n.leading dot\r\ntrailing dot.\r\n. space\r\n.\r\n",
        HDR + b"ends with a dot line\r\n.",        # smtplib adds the CRLF
        b".\r\n",                                 # the whole message is one '.' line
        b"..\r\n.\r\n..\r\n",
    ]
    with h.Server() as srv:
        c = smtp(srv)
        for b in bodies:
            check_eq(c.sendmail("sender@example.com", ["rcpt@example.com"], b), {}, "refused")
        c.quit()
        check_last(srv, c, len(bodies))
        # Raw: empty body, and a body made only of '.' lines, sent pre-stuffed.
        r = srv.client()
        r.ehlo()
        r.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
        r.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        r.cmd("DATA", h.R_DATA)
        r.send(b".\r\n")
        q_empty = r.queued()
        q_dots = r.send_message(b".\r\n.\r\n..\r\n")
        r.quit()
        h.check_body(srv.spool, q_empty, b"", "empty message")
        h.check_body(srv.spool, q_dots, b".\r\n.\r\n..\r\n", "dot lines")


@suite.case
def eight_bit_body():
    body = HDR.replace(b"Subject: test", b"Subject: 8bit\r\nContent-Type: text/plain; "
                       b"charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit") \
        + bytes(range(128, 256)) + b"\r\n\xe9t\xe9\r\n" + bytes(b for b in range(1, 256)
                                                                if b not in (10, 13)) + b"\r\n"
    with h.Server() as srv:
        c = smtp(srv)
        check(c.has_extn("8bitmime"), "8BITMIME not advertised")
        check_eq(c.sendmail("sender@example.com", ["rcpt@example.com"], body,
                            mail_options=["BODY=8BITMIME"]), {}, "refused")
        c.quit()
        check_last(srv, c)


@suite.case
def smtputf8_addresses():
    with h.Server() as srv:
        c = smtp(srv)
        check(c.has_extn("smtputf8"), "SMTPUTF8 not advertised")
        body = ("From: <jörg@example.com>\r\nTo: <用户@example.com>\r\n"
                "Subject: ünïcödé\r\n\r\nGrüße, 你好\r\n").encode("utf-8")
        check_eq(c.sendmail("jörg@example.com", ["用户@example.com", "ascii@example.com"], body,
                            mail_options=["SMTPUTF8", "BODY=8BITMIME"]), {}, "refused")
        # send_message picks SMTPUTF8 by itself for non-ASCII addresses.
        m = email.message.EmailMessage()
        m["From"] = "jörg@example.com"
        m["To"] = "δοκιμή@example.com"
        m["Subject"] = "utf8"
        m.set_content("καλημέρα\n")
        check_eq(c.send_message(m), {}, "refused")
        c.quit()
        q1, q2 = check_last(srv, c, 2)
        check_eq(listed(srv)[q1]["rcpts"], 2, "rcpts")


@suite.case
def large_message():
    # 5 MiB with long and short lines: crosses many receive buffers.
    chunk = b"".join(b"%06d %s\r\n" % (i, b"x" * (i % 997)) for i in range(2000))
    body = HDR + chunk * (5 * 1024 * 1024 // len(chunk) + 1)
    body += b"one long line " + b"y" * 20000 + b"\r\n"
    with h.Server() as srv:
        c = smtp(srv)
        check_eq(c.sendmail("sender@example.com", ["rcpt@example.com"], body), {}, "refused")
        c.quit()
        check_last(srv, c)


@suite.case
def pipelined_raw():
    with h.Server() as srv:
        c = srv.client()
        ehlo = c.ehlo()
        check("250-PIPELINING" in ehlo, "PIPELINING not advertised: %r" % ehlo)
        # One write: MAIL/RCPT/RCPT/DATA; every reply in order.
        c.send(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.com>\r\n"
               b"RCPT TO:<b@example.com>\r\nDATA\r\n")
        c.expect(h.R_MAIL_OK)
        c.expect(h.R_RCPT_OK)
        c.expect(h.R_RCPT_OK)
        c.expect(h.R_DATA)
        b1 = HDR + b"first pipelined\r\n"
        # End of data and the next group in one write.
        c.send(b1 + b".\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<x@other.example>\r\n"
               b"RCPT TO:<c@example.com>\r\nDATA\r\n")
        q1 = c.queued()
        c.expect(h.R_MAIL_OK)
        c.expect(h.R_RELAY)
        c.expect(h.R_RCPT_OK)
        c.expect(h.R_DATA)
        b2 = HDR + b"second pipelined\r\n"
        c.send(b2 + b".\r\nRSET\r\nNOOP\r\nMAIL FROM:<bad syntax\r\nRCPT TO:<d@example.com>\r\n"
               b"DATA\r\n")
        q2 = c.queued()
        c.expect(h.R_OK)
        c.expect(h.R_OK)
        r = c.reply1()
        check(r.startswith("501 5."), "bad MAIL in a group: %r" % r)
        c.expect(h.R_NEED_MAIL)
        r = c.reply1()
        check(r.startswith("503 5.5.1"), "DATA without MAIL in a group: %r" % r)
        # A final group ending with QUIT.
        c.send(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<e@example.com>\r\nDATA\r\n")
        c.expect(h.R_MAIL_OK)
        c.expect(h.R_RCPT_OK)
        c.expect(h.R_DATA)
        b3 = HDR + b"third\r\n"
        c.send(b3 + b".\r\nQUIT\r\n")
        q3 = c.queued()
        c.expect(h.R_QUIT)
        c.expect_closed()
        for q, b in ((q1, b1), (q2, b2), (q3, b3)):
            h.check_body(srv.spool, q, b)
        ls = listed(srv)
        check_eq([ls[q]["rcpts"] for q in (q1, q2, q3)], [2, 1, 1], "rcpt counts")


@suite.case
def pipelined_many_messages_one_write():
    # 20 complete transactions in a single write, then QUIT.
    with h.Server() as srv:
        c = srv.client()
        c.ehlo()
        bodies = [HDR + b"pipelined message %d\r\n.starts with dot\r\n" % i for i in range(20)]
        # DATA must be the last command of a group: the client waits for 354.
        # So send each group, then the body with the next group appended.
        c.send(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
        ids = []
        for i, b in enumerate(bodies):
            c.expect(h.R_MAIL_OK)
            c.expect(h.R_RCPT_OK)
            c.expect(h.R_DATA)
            nxt = (b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n"
                   if i + 1 < len(bodies) else b"QUIT\r\n")
            c.send(h.dot_stuff(b) + b".\r\n" + nxt)
            ids.append(c.queued())
        c.expect(h.R_QUIT)
        c.expect_closed()
        for q, b in zip(ids, bodies):
            h.check_body(srv.spool, q, b)


@suite.case
def bdat_chunks():
    with h.Server() as srv:
        c = srv.client()
        ehlo = c.ehlo()
        check("250-CHUNKING" in ehlo, "CHUNKING not advertised: %r" % ehlo)
        c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        parts = [HDR + b"chunk one\r\n",
                 b".\r\n..dots are not stuffed in BDAT\r\n.\r\nQUIT\r\n",
                 b"x" * 70000 + b"\r\n",
                 b"no final CRLF"]
        # The first chunk: command and data split across several writes.
        c.send(b"BDAT %d\r\n" % len(parts[0]) + parts[0][:5])
        time.sleep(0.05)
        c.send_slowly(parts[0][5:30], piece=3)
        c.send(parts[0][30:])
        c.expect(h.r_chunk(len(parts[0])))
        # Command split inside its own line, data in one write.
        cmd = b"BDAT %d\r\n" % len(parts[1])
        c.send(cmd[:3])
        time.sleep(0.05)
        c.send(cmd[3:] + parts[1])
        c.expect(h.r_chunk(len(parts[1])))
        c.send(b"BDAT %d\r\n" % len(parts[2]) + parts[2])
        c.expect(h.r_chunk(len(parts[2])))
        c.send(b"BDAT %d\r\n" % len(parts[3]) + parts[3])
        c.expect(h.r_chunk(len(parts[3])))
        c.send(b"BDAT 0 LAST\r\n")
        q1 = c.queued()
        # Pipelined: several chunks and LAST in one write.
        c.send(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\n"
               b"BDAT 6\r\nhello BDAT 7 LAST\r\nworld\r\n")
        c.expect(h.R_MAIL_OK)
        c.expect(h.R_RCPT_OK)
        c.expect(h.r_chunk(6))
        q2 = c.queued()
        # A single LAST chunk.
        c.send(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\n"
               b"bdat 12 last\r\n" + b"single chunk")
        c.expect(h.R_MAIL_OK)
        c.expect(h.R_RCPT_OK)
        q3 = c.queued()
        # Session still speaks DATA afterwards.
        q4 = c.send_message(HDR + b"after BDAT\r\n")
        c.quit()
        h.check_body(srv.spool, q1, b"".join(parts), "BDAT message")
        h.check_body(srv.spool, q2, b"hello world\r\n", "pipelined BDAT")
        h.check_body(srv.spool, q3, b"single chunk", "BDAT LAST only")
        h.check_body(srv.spool, q4, HDR + b"after BDAT\r\n", "DATA after BDAT")
    check_eq(h.spool_verify(srv.spool), 4, "verify count")


@suite.case
def whole_session_byte_by_byte():
    # Every byte of a pipelined session in its own write: commands, DATA
    # content and BDAT headers and chunks are cut at every offset.
    with h.Server() as srv:
        c = srv.client()
        b1 = HDR + b"..one\r\n.\r\nbyte by byte\r\n"
        b2 = HDR + b"chunked\r\n"
        wire = (b"EHLO client.example.org\r\nMAIL FROM:<sender@example.com>\r\n"
                b"RCPT TO:<rcpt@example.com>\r\nDATA\r\n")
        c.send_slowly(wire, piece=1, pause=0.0005)
        r = c.reply()
        check_eq(r[-1], "250 ENHANCEDSTATUSCODES", "last EHLO line")
        c.expect(h.R_MAIL_OK)
        c.expect(h.R_RCPT_OK)
        c.expect(h.R_DATA)
        c.send_slowly(h.dot_stuff(b1) + b".\r\nMAIL FROM:<sender@example.com>\r\n"
                      b"RCPT TO:<rcpt@example.com>\r\nBDAT %d LAST\r\n" % len(b2) + b2
                      + b"QUIT\r\n", piece=1, pause=0.0005)
        q1 = c.queued()
        c.expect(h.R_MAIL_OK)
        c.expect(h.R_RCPT_OK)
        q2 = c.queued()
        c.expect(h.R_QUIT)
        c.expect_closed()
        h.check_body(srv.spool, q1, b1)
        h.check_body(srv.spool, q2, b2)


@suite.case
def bdat_large_chunk():
    # One 6 MiB LAST chunk and a 3 MiB + 1 byte pair: chunks far larger than
    # any receive buffer, lengths that end mid-buffer.
    # 8-bit lines without bare CR or LF (bare LF is normalized in content).
    line = bytes(b for b in range(256) if b not in (10, 13)) * 4 + b"\r\n"
    big = (line * (6 * 1024 * 1024 // len(line) + 1))[:6 * 1024 * 1024 - 2] + b"\r\n"
    with h.Server() as srv:
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.com> BODY=8BITMIME", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        c.send(b"BDAT %d LAST\r\n" % len(big) + big)
        q1 = c.queued(timeout=30)
        c.cmd("MAIL FROM:<sender@example.com> BODY=8BITMIME", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        half = big[:3 * 1024 * 1024 + 1]
        c.send(b"BDAT %d\r\n" % len(half) + half + b"BDAT 1 LAST\r\nZ")
        c.expect(h.r_chunk(len(half)), timeout=30)
        q2 = c.queued(timeout=30)
        c.quit()
        h.check_body(srv.spool, q1, big, "6 MiB BDAT body")
        h.check_body(srv.spool, q2, half + b"Z", "two-chunk BDAT body")


@suite.case
def zero_copy_counter():
    # Plain DATA (with dot-stuffed lines and an end of data split across
    # writes) and BDAT: the exit stats must show body bytes and no body byte
    # copied in user space.
    srv = h.Server()
    with srv:
        c = srv.client()
        c.ehlo()
        body = HDR + b"..stuffed\r\n.\r\n" + b"z" * 100000 + b"\r\n"
        c.send_message(body)
        c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        c.cmd("DATA", h.R_DATA)
        c.send_slowly(h.dot_stuff(body) + b".\r\n", piece=4096, pause=0.001)
        c.queued()
        c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        c.send(b"BDAT %d\r\n" % len(body) + body)
        c.expect(h.r_chunk(len(body)))
        c.send(b"BDAT 5 LAST\r\nfinal")
        c.queued()
        c.quit()
    st = srv.stats()
    check("body_copied" in st and "body_bytes" in st, "stats lack body_bytes/body_copied: %r"
          % st)
    check(int(st["body_bytes"]) >= 3 * len(body), "body_bytes=%s after 3 messages of %d bytes"
          % (st["body_bytes"], len(body)))
    check_eq(st["body_copied"], "0", "body bytes copied in user space (plaintext)")


def bare_lf_message(nlines):
    """A message with LF line ends only, as a Unix program hands it to smtplib:
    lines of 76 characters, some starting with one or two dots. Returns (what
    smtplib is given, what mxring must store: bare LFs as CRLF, the dots as
    given, since smtplib stuffs every line start after an LF)."""
    lines = [b"From: <sender@example.com>", b"Subject: bare LF", b""]
    for i in range(nlines):
        lead = b"." if i % 997 == 0 else b".." if i % 991 == 0 else b""
        lines.append(lead + (b"%06d " % i) + b"x" * (69 - len(lead)))
    sent = b"\n".join(lines)
    # smtplib ends the content with CRLF when it does not already.
    return sent, sent.replace(b"\n", b"\r\n") + b"\r\n"


def check_bare_lf_sends(srv, sendmail, nmsgs, sent, want):
    """Each message is queued (no 451), stored as normalized, in few parts,
    and the spool holds no part without its FINAL."""
    for i in range(nmsgs):
        try:
            sendmail(sent)
        except smtplib.SMTPResponseException as e:
            raise h.Fail("message %d of %d bytes with bare LFs refused: %d %r"
                         % (i, len(sent), e.smtp_code, e.smtp_error))
    qids = [e["qid"] for e in h.spool_list(srv.spool)]
    check_eq(len(qids), nmsgs, "messages in the spool")
    for qid in qids:
        h.check_body(srv.spool, qid, want)
    _, out, _ = h.spool_tool("verify", srv.spool)
    check(b"without a FINAL" not in out, "orphan parts in the spool:\n%s" % out.decode())


@suite.case
def large_bare_lf_message():
    # 92,000 lines of 76 characters with LF ends, about 7 MB: normalizing
    # each LF must not cost a part per few lines (it filled the writer ring
    # and drew 451 for ever); lines smtplib dot-stuffed after an LF lose the
    # stuffed dot, as Postfix removes it.
    sent, want = bare_lf_message(92000)
    with h.Server() as srv:
        c = smtp(srv)
        check_bare_lf_sends(srv, lambda m: c.sendmail("sender@example.com",
                                                      ["rcpt@example.com"], m),
                            3, sent, want)
        c.quit()
        srv.stop()
        st = srv.stats()
        # 256 KiB parts (body_flush_bytes): about 28 a message, not 2,900.
        parts = int(st["parts"])
        check(parts <= 3 * (len(want) // (256 << 10) + 2),
              "parts=%d for 3 messages of %d bytes" % (parts, len(want)))
        copied = int(st["body_copied"])
        check(0 < copied <= int(st["body_bytes"]),
              "body_copied=%d body_bytes=%s: the fragments are copied, and counted"
              % (copied, st["body_bytes"]))


@suite.case
def ipv6_listener():
    if not h.have_ipv6_loopback():
        raise h.Skip("no IPv6 loopback on this machine")
    with h.Server(ipv6=True) as srv:
        c6 = smtp(srv, ipv6=True)
        check_eq(c6.sendmail("sender@example.com", ["rcpt@example.com"],
                             HDR + b"over IPv6\r\n"), {}, "refused")
        c6.quit()
        check_last(srv, c6)
        c4 = smtp(srv)
        check_eq(c4.sendmail("sender@example.com", ["rcpt@example.com"],
                             HDR + b"over IPv4\r\n"), {}, "refused")
        c4.quit()
        check_last(srv, c4)
        # Raw: the address family reaches the engine's reply too.
        r = srv.client(ipv6=True)
        r.cmd("HELO client.example.org", h.R_HELO)
        r.quit()


if __name__ == "__main__":
    suite.main()
