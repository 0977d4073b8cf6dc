#!/usr/bin/env python3
"""
test_protocol.py - every exact reply of the interface, one case each, over
raw sockets; after each bad input the same session must still complete a
normal transaction. Also: oversize lines, recipient limit, oversize messages
(DATA and BDAT, not stored), relay attempts, error limit, timeouts, and
configuration errors of the binary (file:line:key messages, -n).

Most cases share one server (default limits) and use a fresh connection each,
so errors of one case never count towards another's error limit.
"""

import os
import re
import socket
import subprocess
import time

import harness as h
from harness import check, check_eq

suite = h.Suite("protocol")

_srv = {}


def shared():
    """The server the table cases share (default limits)."""
    s = _srv.get("srv")
    if s is None or not s.alive():
        check(s is None, "the shared server died earlier; log:\n" + (s.log_tail() if s else ""))
        s = h.Server(shared=True, tag="protocol")
        s.start()
        _srv["srv"] = s
    return s


def usable(c, ehlo=False):
    """The session still completes a normal transaction after a bad input."""
    if ehlo:
        c.ehlo()
    else:
        c.cmd("RSET", h.R_OK)
    c.cmd("NOOP", h.R_OK)
    return c.send_message(b"Subject: still usable\r\n\r\nok\r\n")


def session(ehlo=True):
    c = shared().client()
    if ehlo:
        c.ehlo()
    return c


# ---------------------------------------------------------------- one reply each

EHLO_LINES = ["250-" + h.HOSTNAME, "250-PIPELINING", "250-SIZE 10240000", "250-8BITMIME",
              "250-SMTPUTF8", "250-CHUNKING", "250 ENHANCEDSTATUSCODES"]

# name, commands before (each must get the reply given), bad input, exact reply,
# whether the usability check needs a new EHLO first.
TABLE = [
    ("vrfy", [], b"VRFY x\r\n", h.R_VRFY, False),
    ("vrfy_address", [], b"VRFY <rcpt@example.com>\r\n", h.R_VRFY, False),
    ("unknown_command", [], b"XYZZY\r\n", h.R_UNKNOWN, False),
    ("unknown_command_lower", [], b"frobnicate now\r\n", h.R_UNKNOWN, False),
    ("empty_line", [], b"\r\n", h.R_UNKNOWN, False),
    ("nul_in_command", [], b"NOOP\x00\r\n", h.R_BAD_CHAR, False),
    ("nul_in_mail", [], b"MAIL FROM:<a\x00b@example.com>\r\n", h.R_BAD_CHAR, False),
    ("control_in_command", [], b"NO\x01OP\r\n", h.R_BAD_CHAR, False),
    ("escape_in_helo", [], b"HELO a\x1bb\r\n", h.R_BAD_CHAR, True),
    ("starttls_without_tls", [], b"STARTTLS\r\n", h.R_NOT_IMPL, False),
    ("nested_mail", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"MAIL FROM:<b@example.com>\r\n", h.R_NESTED, False),
    ("rcpt_before_mail", [], b"RCPT TO:<rcpt@example.com>\r\n", h.R_NEED_MAIL, False),
    ("data_before_rcpt", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)], b"DATA\r\n",
     h.R_NEED_RCPT, False),
    ("data_no_valid_rcpt", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK),
                            ("RCPT TO:<x@other.example>", h.R_RELAY)],
     b"DATA\r\n", h.R_NO_VALID_RCPT, False),
    ("mail_no_arg", [], b"MAIL\r\n", h.R_MAIL_SYNTAX, False),
    ("mail_to", [], b"MAIL TO:<a@example.com>\r\n", h.R_MAIL_SYNTAX, False),
    ("rcpt_no_arg", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)], b"RCPT\r\n",
     h.R_RCPT_SYNTAX, False),
    ("rcpt_from", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"RCPT FROM:<rcpt@example.com>\r\n", h.R_RCPT_SYNTAX, False),
    ("bad_sender", [], b"MAIL FROM:<a@@example.com>\r\n", h.R_BAD_SENDER, False),
    ("bad_recipient", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"RCPT TO:<b@@example.com>\r\n", h.R_BAD_RCPT, False),
    ("bad_recipient_trailing_dot", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"RCPT TO:<u@example.com.>\r\n", h.R_BAD_RCPT, False),
    ("unknown_mail_param", [], b"MAIL FROM:<a@example.com> FOO=bar\r\n",
     h.r_unsupported("FOO"), False),
    ("unknown_rcpt_param", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"RCPT TO:<b@example.com> XYZ=1\r\n", h.r_unsupported("XYZ"), False),
    ("size_over_limit", [], b"MAIL FROM:<a@example.com> SIZE=10240001\r\n",
     h.R_SIZE_DECLARED, False),
    ("relay_other_domain", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"RCPT TO:<user@other.example>\r\n", h.R_RELAY, False),
    # 8-bit bytes: UTF-8 addresses need SMTPUTF8 on MAIL (RFC 6531); bytes
    # that are not UTF-8 (Latin-1) are bad syntax with or without it; an
    # 8-bit verb is no command.
    ("utf8_mail_without_smtputf8", [], b"MAIL FROM:<j\xc3\xb6rg@example.com>\r\n",
     h.R_NEED_UTF8, False),
    ("utf8_rcpt_without_smtputf8", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"RCPT TO:<j\xc3\xb6rg@example.com>\r\n", h.R_NEED_UTF8, False),
    ("latin1_mail", [], b"MAIL FROM:<j\xf6rg@example.com>\r\n", h.R_BAD_SENDER, False),
    ("latin1_mail_smtputf8", [], b"MAIL FROM:<j\xf6rg@example.com> SMTPUTF8\r\n",
     h.R_BAD_SENDER, False),
    ("latin1_rcpt_smtputf8", [("MAIL FROM:<a@example.com> SMTPUTF8", h.R_MAIL_OK)],
     b"RCPT TO:<j\xf6rg@example.com>\r\n", h.R_BAD_RCPT, False),
    ("utf8_in_verb", [], b"NO\xc3\x8fOP\r\n", h.R_UNKNOWN, False),
    ("latin1_in_verb", [], b"N\xd6OP\r\n", h.R_UNKNOWN, False),
    ("eight_bit_line", [], b"\xff\xfe\x80\r\n", h.R_UNKNOWN, False),
    ("utf8_in_mail_param", [], b"MAIL FROM:<a@example.com> B\xc3\xb6DY=8BITMIME\r\n",
     h.r_unsupported("B??DY"), False),
]

# Inputs the receiver accepts (same shape: commands before, input, reply).
ACCEPT = [
    ("helo", [], b"HELO client.example.org\r\n", h.R_HELO),
    ("noop", [], b"NOOP\r\n", h.R_OK),
    ("rset", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)], b"RSET\r\n", h.R_OK),
    ("lower_case_commands", [], b"mail from:<a@example.com>\r\n", h.R_MAIL_OK),
    ("null_sender", [], b"MAIL FROM:<>\r\n", h.R_MAIL_OK),
    ("size_at_limit", [], b"MAIL FROM:<a@example.com> SIZE=10240000\r\n", h.R_MAIL_OK),
    ("body_8bitmime", [], b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\n", h.R_MAIL_OK),
    ("body_7bit", [], b"MAIL FROM:<a@example.com> BODY=7BIT\r\n", h.R_MAIL_OK),
    ("smtputf8_param", [], b"MAIL FROM:<a@example.com> SMTPUTF8\r\n", h.R_MAIL_OK),
    ("quoted_local_part", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b'RCPT TO:<"john doe"@example.com>\r\n', h.R_RCPT_OK),
    ("domain_case", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"RCPT TO:<User@EXAMPLE.COM>\r\n", h.R_RCPT_OK),
    ("source_route_to_local", [("MAIL FROM:<a@example.com>", h.R_MAIL_OK)],
     b"RCPT TO:<@other.example:user@example.com>\r\n", h.R_RCPT_OK),
    ("utf8_mail_smtputf8", [], b"MAIL FROM:<j\xc3\xb6rg@example.com> SMTPUTF8\r\n",
     h.R_MAIL_OK),
    ("utf8_rcpt_smtputf8", [("MAIL FROM:<a@example.com> SMTPUTF8", h.R_MAIL_OK)],
     b"RCPT TO:<j\xc3\xb6rg@example.com>\r\n", h.R_RCPT_OK),
    ("utf8_ehlo", [], b"EHLO caf\xc3\xa9.example\r\n", EHLO_LINES),
    ("latin1_helo", [], b"HELO \xe9t\xe9.example\r\n", h.R_HELO),
    ("eight_bit_noop_argument", [], b"NOOP \xe9\xff\r\n", h.R_OK),
]


def _table_case(name, pre, bad, want, ehlo_again):
    def fn():
        c = session()
        for line, reply in pre:
            c.cmd(line, reply)
        c.send(bad)
        c.expect(want)
        usable(c, ehlo=ehlo_again)
        c.quit()
    fn.__name__ = "reply_" + name
    return fn


def _accept_case(name, pre, line, want):
    def fn():
        c = session()
        for l, reply in pre:
            c.cmd(l, reply)
        c.send(line)
        c.expect(want)
        if line.upper().startswith(b"MAIL") or line.upper().startswith(b"RCPT"):
            if line.upper().startswith(b"MAIL"):
                c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
            c.cmd("DATA", h.R_DATA)
            c.send(b"Subject: accepted\r\n\r\nok\r\n.\r\n")
            c.queued()
        usable(c)
        c.quit()
    fn.__name__ = "accept_" + name
    return fn


@suite.case
def reply_greeting_and_ehlo():
    c = shared().client()   # checks the greeting exactly
    c.cmd("EHLO client.example.org", EHLO_LINES)
    c.cmd("EHLO again.example.org", EHLO_LINES)
    usable(c)
    c.quit()


for _t in TABLE:
    suite.case(_table_case(*_t))
for _t in ACCEPT:
    suite.case(_accept_case(*_t))


@suite.case
def reply_mail_before_helo():
    c = session(ehlo=False)
    c.cmd("MAIL FROM:<a@example.com>", h.R_NEED_HELO)
    c.cmd("RCPT TO:<rcpt@example.com>")     # whatever it says, then still usable
    usable(c, ehlo=True)
    c.quit()


@suite.case
def reply_quit_closes():
    c = session()
    c.cmd("QUIT", h.R_QUIT)
    c.expect_closed()


@suite.case
def reply_quit_before_helo():
    c = session(ehlo=False)
    c.cmd("QUIT", h.R_QUIT)
    c.expect_closed()


@suite.case
def bdat_before_mail_consumes_chunk():
    # The chunk holds command lines: they must be swallowed as data, not run.
    c = session()
    chunk = b"NOOP\r\nRSET\r\nQUIT\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    r = c.reply1()
    check(r.startswith("503 5.5.1"), "BDAT before MAIL: %r" % r)
    c.cmd("NOOP", h.R_OK)
    usable(c)
    c.quit()


# ---------------------------------------------------------------- relay


RELAY = [
    b"<user%other.example@example.com>",
    b'<"user@other.example"@example.com>',
    b"<user!other@example.com>",
    b"<@example.com:user@other.example>",
    b"<user@other.example>",
    b"<user@[127.0.0.1]>",
    b"<user@sub.example.com>",
    b"<user@notexample.com>",
    b"<user@example.com.other.example>",
]


def _relay_case(i, addr, want):
    def fn():
        c = session()
        c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
        c.send(b"RCPT TO:" + addr + b"\r\n")
        c.expect(want)
        # Same transaction: a good recipient, and only it gets the message.
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        c.cmd("DATA", h.R_DATA)
        c.send(b"Subject: relay\r\n\r\nx\r\n.\r\n")
        qid = c.queued()
        c.quit()
        e = {x["qid"]: x for x in h.spool_list(shared().spool)}[qid]
        check_eq(e["rcpts"], 1, "stored recipient count")
    fn.__name__ = "relay_refused_%d_" % i + re.sub(r"[^a-z0-9]+", "_", addr.decode().lower()).strip("_")
    return fn


for _i, _a in enumerate(RELAY):
    suite.case(_relay_case(_i, _a, h.R_RELAY))
suite.case(_relay_case(len(RELAY), b"<user@example.com.>", h.R_BAD_RCPT))


# ---------------------------------------------------------------- lines


@suite.case
def line_limit_boundary():
    c = session()
    ok = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    check_eq(len(ok), 512, "test line length")
    c.send(ok)
    c.expect(h.R_OK)
    c.send(b"NOOP " + b"x" * (513 - 7) + b"\r\n")
    c.expect(h.R_TOO_LONG)
    usable(c)
    c.quit()


@suite.case
def line_too_long_600():
    c = session()
    line = b"NOOP " + b"x" * (600 - 7) + b"\r\n"
    c.send(line)
    c.expect(h.R_TOO_LONG)
    c.cmd("NOOP", h.R_OK)
    usable(c)
    c.quit()


@suite.case
def line_too_long_600_in_mail():
    c = session()
    c.send(b"MAIL FROM:<" + b"a" * 590 + b"@example.com>\r\n")
    c.expect(h.R_TOO_LONG)
    # The tail of the long line must not be read as a command.
    c.cmd("NOOP", h.R_OK)
    usable(c)
    c.quit()


@suite.case
def line_too_long_1mib_no_newline():
    c = session()
    blob = b"x" * (1024 * 1024)
    for i in range(0, len(blob), 65536):
        c.send(blob[i:i + 65536])
    c.send(b"\r\nNOOP\r\n")
    c.expect(h.R_TOO_LONG, timeout=20)
    c.expect(h.R_OK)
    usable(c)
    c.quit()


@suite.case
def line_too_long_with_commands_inside():
    # A long line whose tail looks like commands: none of them may run.
    c = session()
    c.send(b"NOOP " + b"y" * 700 + b" RSET QUIT DATA\r\n")
    c.expect(h.R_TOO_LONG)
    c.cmd("NOOP", h.R_OK)
    c.expect_no_reply()
    usable(c)
    c.quit()


# ---------------------------------------------------------------- recipients


@suite.case
def recipient_limit():
    srv = shared()
    c = session()
    c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
    c.send(b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(101)))
    for i in range(100):
        c.expect(h.R_RCPT_OK)
    c.expect(h.R_TOO_MANY_RCPTS)
    c.cmd("RCPT TO:<r101@example.com>", h.R_TOO_MANY_RCPTS)
    c.cmd("DATA", h.R_DATA)
    c.send(b"Subject: 100 recipients\r\n\r\nx\r\n.\r\n")
    qid = c.queued()
    # The limit is per transaction.
    c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
    for i in range(3):
        c.cmd("RCPT TO:<s%d@example.com>" % i, h.R_RCPT_OK)
    c.cmd("RSET", h.R_OK)
    usable(c)
    c.quit()
    e = {x["qid"]: x for x in h.spool_list(srv.spool)}[qid]
    check_eq(e["rcpts"], 100, "stored recipients")


@suite.case
def shared_server_stops_cleanly():
    s = _srv.pop("srv", None)
    if s is None:
        raise h.Skip("shared server never started")
    n_list = len(h.spool_list(s.spool))
    s.stop()
    check_eq(h.spool_verify(s.spool), n_list, "verify count vs list")


# ---------------------------------------------------------------- size limit

LIMIT = 20000


def _noop_lines(n):
    """n bytes of 'NOOP<CR><LF>' lines: a desync would make them commands."""
    return b"NOOP\r\n" * (n // 6)


@suite.case
def size_limit():
    with h.Server({"message_size_limit": LIMIT}) as srv:
        stored = []
        c = srv.client()
        r = c.ehlo()
        check("250-SIZE %d" % LIMIT in r, "EHLO does not advertise SIZE %d: %r" % (LIMIT, r))
        c.cmd("MAIL FROM:<a@example.com> SIZE=%d" % (LIMIT + 1), h.R_SIZE_DECLARED)
        c.cmd("MAIL FROM:<a@example.com> SIZE=%d" % LIMIT, h.R_MAIL_OK)
        c.cmd("RSET", h.R_OK)
        # DATA over the limit: the whole body is read, one reply at the end.
        c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        c.cmd("DATA", h.R_DATA)
        c.send(b"Subject: too big\r\n\r\n" + _noop_lines(3 * LIMIT) + b".\r\n")
        c.expect(h.R_TOO_BIG)
        c.cmd("NOOP", h.R_OK)
        c.expect_no_reply()
        # Far over the limit (1 MiB): still one reply.
        c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        c.cmd("DATA", h.R_DATA)
        big = _noop_lines(1024 * 1024)
        for i in range(0, len(big), 65536):
            c.send(big[i:i + 65536])
        c.send(b".\r\n")
        c.expect(h.R_TOO_BIG, timeout=20)
        c.cmd("NOOP", h.R_OK)
        stored.append(usable(c))
        # A message under the limit passes.
        stored.append(c.send_message(b"Subject: small\r\n\r\n" + b"z" * (LIMIT // 2) + b"\r\n"))
        c.quit()

        # BDAT: one LAST chunk over the limit.
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        chunk = _noop_lines(LIMIT + 600)
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        c.expect(h.R_TOO_BIG)
        c.cmd("NOOP", h.R_OK)
        c.expect_no_reply()
        c.cmd("RSET", h.R_OK)
        # BDAT: the chunk that crosses the limit is refused, earlier ones were fine.
        c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        half = _noop_lines(LIMIT * 3 // 4)
        c.send(b"BDAT %d\r\n" % len(half) + half)
        c.expect(h.r_chunk(len(half)))
        c.send(b"BDAT %d\r\n" % len(half) + half)
        c.expect(h.R_TOO_BIG)
        c.cmd("RSET", h.R_OK)
        # Pipelined: chunk, chunk over the limit, LAST: the LAST is refused too.
        c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        c.send(b"BDAT %d\r\n" % len(half) + half + b"BDAT %d\r\n" % len(half) + half
               + b"BDAT 0 LAST\r\n")
        c.expect(h.r_chunk(len(half)))
        c.expect(h.R_TOO_BIG)
        r = c.reply1()
        check(r[0] in "45", "BDAT LAST after a refused chunk: %r" % r)
        c.cmd("NOOP", h.R_OK)
        c.expect_no_reply()
        stored.append(usable(c))
        c.quit()
        n_list = [e["qid"] for e in h.spool_list(srv.spool)]
        check_eq(sorted(n_list), sorted(stored), "stored queue ids")
    check_eq(h.spool_verify(srv.spool), len(stored), "verify count (oversize not stored)")


# ---------------------------------------------------------------- error limit


@suite.case
def error_limit():
    limit = 5
    with h.Server({"error_limit": limit}) as srv:
        c = srv.client()
        c.ehlo()
        n500 = 0
        for i in range(limit + 2):
            c.send(b"XYZZY\r\n")
            r = c.reply1()
            if r == h.R_TOO_MANY_ERRORS:
                break
            check_eq(r, h.R_UNKNOWN, "reply %d" % i)
            n500 += 1
        else:
            raise h.Fail("no '%s' after %d errors" % (h.R_TOO_MANY_ERRORS, limit + 2))
        check(limit - 1 <= n500 <= limit,
              "%d errors answered before the 421 (error_limit %d)" % (n500, limit))
        c.expect_closed()

        # Pipelined errors: the 421 is the last thing sent, then the close.
        c = srv.client()
        c.send(b"EHLO x\r\n" + b"BOGUS\r\n" * (limit * 3) + b"NOOP\r\n" * 5)
        c.reply()
        n = 0
        while True:
            r = c.reply1()
            if r == h.R_TOO_MANY_ERRORS:
                break
            check_eq(r, h.R_UNKNOWN, "pipelined error reply")
            n += 1
            check(n <= limit, "more than %d errors answered" % limit)
        c.expect_closed()

        # Below the limit the session lives on.
        c = srv.client()
        c.ehlo()
        for i in range(limit - 2):
            c.cmd("XYZZY", h.R_UNKNOWN)
        usable(c)
        c.quit()


# ---------------------------------------------------------------- timeouts


@suite.case
def timeouts():
    with h.Server({"command_timeout": 2, "data_timeout": 2}) as srv:
        c = srv.client()
        t0 = time.monotonic()
        c.expect(h.R_TIMEOUT, timeout=15)
        dt = time.monotonic() - t0
        c.expect_closed()
        check(dt >= 1.5, "idle timeout after %.2f s, configured 2 s" % dt)

        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
        time.sleep(1.0)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)   # activity restarts the timer
        c.cmd("DATA", h.R_DATA)
        c.send(b"Subject: never finished\r\n\r\npartial")
        t0 = time.monotonic()
        c.expect(h.R_TIMEOUT, timeout=15)
        dt = time.monotonic() - t0
        c.expect_closed()
        check(dt >= 1.5, "data timeout after %.2f s, configured 2 s" % dt)

        # A session that keeps talking is not cut.
        c = srv.client()
        c.ehlo()
        for i in range(4):
            time.sleep(1.0)
            c.cmd("NOOP", h.R_OK)
        usable(c)
        c.quit()
    check_eq(h.spool_verify(srv.spool), 1, "only the finished message is stored")


# ---------------------------------------------------------------- configuration


def run_mxring(args, timeout=10):
    p = h.run_cmd([h.Paths.mxring] + args, timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def conf_file(text):
    d = h.new_tmpdir("conf")
    path = os.path.join(d, "x.conf")
    with open(path, "w") as f:
        f.write(text)
    return d, path


BAD_VALUES = [
    # key, value, what the message must contain besides file:line: key 'K':
    ("message_size_limit", "abc", "bad size 'abc'"),
    ("recipient_limit", "-1", None),
    ("recipient_limit", "lots", None),
    ("shards", "zero", None),
    ("spool_format", "mbox", None),
    ("bare_newline", "ignore", None),
    ("listen", "127.0.0.1:99999", None),
    ("listen", "nohost", None),
    ("command_timeout", "forever", None),
    ("command_line_limit", "100", None),
    ("writers", "0", None),
]


@suite.case
def config_bad_value_exact_message():
    d, path = conf_file("# test\nmyhostname = mx.test\nmessage_size_limit = abc\n")
    rc, out, err = run_mxring(["-c", path])
    check_eq(rc, 1, "exit status for a bad value (stderr %r)" % err)
    want = "mxring: %s:3: key 'message_size_limit': bad size 'abc'" % path
    check(want in err.splitlines(), "stderr %r lacks the line %r" % (err, want))


@suite.case
def config_bad_values():
    for key, value, what in BAD_VALUES:
        d, path = conf_file("# line 1\n\nmyhostname = mx.test\n%s = %s\n" % (key, value))
        rc, out, err = run_mxring(["-c", path])
        check_eq(rc, 1, "exit status for %s = %s (stderr %r)" % (key, value, err))
        want = "%s:4: key '%s'" % (path, key)
        check(want in err, "message for %s = %s: %r lacks %r" % (key, value, err, want))
        if what:
            check(what in err, "message %r lacks %r" % (err, what))


@suite.case
def config_unknown_key():
    d, path = conf_file("myhostname = mx.test\nfoo = bar\n")
    rc, out, err = run_mxring(["-c", path])
    check_eq(rc, 1, "exit status (stderr %r)" % err)
    check("%s:2:" % path in err and "unknown key 'foo'" in err,
          "stderr %r does not name %s:2: and unknown key 'foo'" % (err, path))


@suite.case
def config_override_errors():
    d, path = conf_file("myhostname = mx.test\n")
    rc, out, err = run_mxring(["-c", path, "-o", "foo=bar"])
    check_eq(rc, 1, "exit status for -o foo=bar (stderr %r)" % err)
    check("unknown key 'foo'" in err, "stderr %r" % err)
    rc, out, err = run_mxring(["-c", path, "-o", "message_size_limit=abc"])
    check_eq(rc, 1, "exit status for -o message_size_limit=abc (stderr %r)" % err)
    check("key 'message_size_limit'" in err and "bad size 'abc'" in err, "stderr %r" % err)


@suite.case
def config_missing_file():
    rc, out, err = run_mxring(["-c", "/nonexistent/mxring.conf"])
    check_eq(rc, 1, "exit status (stderr %r)" % err)
    check("/nonexistent/mxring.conf" in err, "stderr %r does not name the file" % err)


@suite.case
def usage_errors():
    for args in (["-Z"], ["-c"], ["-o"]):
        rc, out, err = run_mxring(args)
        check_eq(rc, 2, "exit status for %r (stderr %r)" % (args, err))


KEYS = ["listen", "myhostname", "accept_domains", "spool_dir", "spool_format", "segment_size",
        "shards", "writers", "message_size_limit", "recipient_limit", "command_line_limit",
        "error_limit", "max_connections", "command_timeout", "data_timeout", "bare_newline",
        "recv_buffer_size", "recv_buffers", "ring_size", "body_flush_bytes", "pin_shards",
        "recipient_overshoot_limit", "connection_limit_exceptions", "junk_command_limit",
        "metrics_listen", "segment_max_age"]


def _keys_of(text):
    keys = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([a-z_0-9]+)\s*=\s*(.*?)\s*$", line)
        if m:
            keys[m.group(1)] = m.group(2)
    return keys


@suite.case
def config_print_effective():
    d, path = conf_file("# comment\nmyhostname = mx.test\n\naccept_domains = example.com,\n"
                        "    .example.org\nrecipient_limit = 50\n"
                        "connection_limit_exceptions = 192.0.2.0/24 [2001:db8::]/32\n")
    rc, out, err = run_mxring(["-c", path, "-o", "recipient_limit=7", "-n"])
    check_eq(rc, 0, "exit status of -n (stderr %r)" % err)
    keys = _keys_of(out)
    missing = [k for k in KEYS if k not in keys]
    check(not missing, "-n output lacks keys %r:\n%s" % (missing, out))
    check_eq(keys["recipient_limit"], "7", "-o overrides the file")
    check_eq(keys["myhostname"], "mx.test", "myhostname")
    check_eq(keys["connection_limit_exceptions"], "192.0.2.0/24, 2001:db8::/32",
             "connection_limit_exceptions as printed")
    check("example.org" in keys["accept_domains"] and "example.com" in keys["accept_domains"],
          "continuation line lost: accept_domains = %r" % keys["accept_domains"])
    check("ready" not in err, "-n started listening: %r" % err)
    # The printed configuration reads back to the same configuration.
    p2 = os.path.join(d, "printed.conf")
    with open(p2, "w") as f:
        f.write(out)
    rc, out2, err = run_mxring(["-c", p2, "-n"])
    check_eq(rc, 0, "exit status reading the printed config (stderr %r)" % err)
    check_eq(_keys_of(out2), keys, "printed config round trip")


@suite.case
def accept_subdomains():
    with h.Server({"accept_domains": "example.com, .sub.example.org"}) as srv:
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<u@a.sub.example.org>", h.R_RCPT_OK)
        c.cmd("RCPT TO:<u@deep.a.sub.example.org>", h.R_RCPT_OK)
        c.cmd("RCPT TO:<u@example.org>", h.R_RELAY)
        c.cmd("RCPT TO:<u@xsub.example.org>", h.R_RELAY)
        c.cmd("RCPT TO:<u@a.example.com>", h.R_RELAY)
        c.cmd("RCPT TO:<u@example.com>", h.R_RCPT_OK)
        c.cmd("RSET", h.R_OK)
        c.quit()



@suite.case
def pregreet_talker_refused():
    # pregreet_wait = 1: a client that talks before the greeting gets 554 and
    # is closed, its command unanswered; a client that waits is greeted after
    # at least a second and served.
    with h.Server({"pregreet_wait": 1}) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"EHLO early.example\r\nMAIL FROM:<a@example.com>\r\n")
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()
        check_eq(got, b"554 5.5.1 %s Error: talking before the greeting\r\n" % h.HOSTNAME.encode(),
                 "all a pre-greeting talker gets")
        t0 = time.monotonic()
        c = srv.client()
        waited = time.monotonic() - t0
        check(waited >= 0.9, "greeted after %.2f s, before pregreet_wait" % waited)
        c.ehlo()
        c.cmd("NOOP", h.R_OK)
        c.quit()


@suite.case
def slow_data_trickle_cut_by_min_data_rate():
    # data_timeout = 2 s, min_data_rate = 100 bytes/s: a client trickling
    # a byte every 0.3 s (under the rate) gets 421 once 2 s plus its bytes
    # / 100 have passed, though it is never silent for 2 s; a fast 1 MiB
    # message on another connection is not cut.
    with h.Server({"data_timeout": 2, "min_data_rate": 100}) as srv:
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
        c.cmd("DATA", h.R_DATA)
        t0 = time.monotonic()
        got, cut = b"", False
        c.sock.settimeout(0.3)
        while time.monotonic() - t0 < 10 and not cut:
            try:
                c.sock.sendall(b"x")
                chunk = c.sock.recv(4096)
                got += chunk
                cut = not chunk
            except socket.timeout:
                pass
            except OSError as e:
                # The lingering close reads the trickle after the 421: no
                # send may fail, no reset may come before the client read it.
                raise h.Fail("the trickling client's socket failed (%r) after reading %r"
                             % (e, got))
        elapsed = time.monotonic() - t0
        check(cut, "the trickling client was not cut within 10 s (got %r)" % got)
        check(elapsed < 6, "cut only after %.1f s" % elapsed)
        check_eq(got, (h.R_TIMEOUT + "\r\n").encode(), "all the trickling client reads")
        srv.wait_log(r"\bsession end\b.*\breason=timeout\b")
        d = srv.client()
        d.ehlo()
        big = b"Subject: fast\r\n\r\n" + (b"z" * 998 + b"\r\n") * 1100
        q = d.send_message(big)
        d.quit()
        h.check_body(srv.spool, q, big, "fast 1 MiB message under min_data_rate")

if __name__ == "__main__":
    suite.main()
