#!/usr/bin/env python3
"""check_dsn.py - the delivery status notifications of core/dsn.c, as an
independent parser reads them: Python's email package.

    check_dsn.py DSN_SAMPLE

Runs DSN_SAMPLE (tests/unit/spool/dsn_sample.c) once per scenario and
parses what it prints: a multipart/report with report-type delivery-status
and three parts; the delivery-status part's per-message and per-recipient
fields (email's message/delivery-status support gives them as a list of
header blocks; message/global-delivery-status, which it does not know, is
split by hand); the original headers with their Subject. Also checks the
framing a relay needs: CRLF line ends only, lines of at most 998 octets,
ASCII unless the message says 8bit. Exits 0, or 1 with the failures.
"""
import email
import email.policy
import email.utils
import subprocess
import sys
from email.parser import BytesHeaderParser

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
    return cond


def framing(name, raw):
    """CRLF only, lines <= 998 octets, no NUL or control bytes but HTAB."""
    check(raw.endswith(b"\r\n"), f"{name}: does not end in CRLF")
    lines = raw.split(b"\r\n")[:-1]
    for i, line in enumerate(lines):
        check(b"\r" not in line and b"\n" not in line, f"{name}: bare CR or LF in line {i + 1}")
        check(len(line) <= 998, f"{name}: line {i + 1} has {len(line)} octets")
        bad = [c for c in line if (c < 0x20 and c != 0x09) or c == 0x7F]
        check(not bad, f"{name}: control bytes {bad[:4]} in line {i + 1}")
    return lines


def run(sample, scenario):
    out = subprocess.run([sample, scenario], stdout=subprocess.PIPE, check=True, timeout=30)
    raw = out.stdout
    framing(scenario, raw)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for part in msg.walk():
        check(not part.defects, f"{scenario}: parser defects {part.defects} in {part.get_content_type()}")
    check(msg.get_content_type() == "multipart/report", f"{scenario}: top type {msg.get_content_type()}")
    check(msg.get_param("report-type") == "delivery-status",
          f"{scenario}: report-type {msg.get_param('report-type')}")
    check(msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.example.com",
          f"{scenario}: From {msg['From']}")
    check(msg["Auto-Submitted"] == "auto-replied", f"{scenario}: Auto-Submitted")
    check(str(msg["MIME-Version"]) == "1.0", f"{scenario}: MIME-Version")
    check(email.utils.parsedate_to_datetime(str(msg["Date"])).timestamp() == 1700000101,
          f"{scenario}: Date {msg['Date']}")
    mid = str(msg["Message-ID"])
    check(mid.startswith("<") and mid.endswith("@mx.example.com>"), f"{scenario}: Message-ID {mid}")
    parts = msg.get_payload()
    check(isinstance(parts, list) and len(parts) == 3, f"{scenario}: {len(parts)} parts")
    return raw, msg, parts


def status_blocks(scenario, part):
    """The delivery-status part as a list of field blocks (mappings)."""
    ctype = part.get_content_type()
    if ctype == "message/delivery-status":
        blocks = part.get_payload()
        check(isinstance(blocks, list), f"{scenario}: delivery-status not parsed into blocks")
        return blocks
    check(ctype == "message/global-delivery-status", f"{scenario}: second part {ctype}")
    # Not known to email: the payload is one message (the per-message
    # fields as its header, the recipients' blocks as its body).
    sub = part.get_payload()[0] if part.is_multipart() else None
    if sub is not None:
        text = sub.as_bytes(policy=email.policy.SMTPUTF8)
    else:
        text = part.get_payload(decode=True)
    text = text.replace(b"\r\n", b"\n")
    blocks = []
    for chunk in text.split(b"\n\n"):
        if chunk.strip():
            blocks.append(BytesHeaderParser(policy=email.policy.SMTPUTF8).parsebytes(chunk + b"\n"))
    return blocks


def original_headers(scenario, part, want_type):
    check(part.get_content_type() == want_type, f"{scenario}: third part {part.get_content_type()}")
    if part.is_multipart():  # message/global-headers may be read as a message
        raw = part.get_payload()[0].as_bytes(policy=email.policy.SMTPUTF8)
    else:
        raw = part.get_payload(decode=True)
    return BytesHeaderParser(policy=email.policy.SMTPUTF8).parsebytes(raw), raw


def rcpt_fields(scenario, blocks, n):
    check(len(blocks) == 1 + n, f"{scenario}: {len(blocks)} blocks, want 1 + {n}")
    permsg = blocks[0]
    check(permsg["Reporting-MTA"] == "dns; mx.example.com", f"{scenario}: Reporting-MTA {permsg['Reporting-MTA']}")
    check(permsg["X-Mxring-Queue-ID"] == "0123456789ABCDEF", f"{scenario}: queue id")
    check(email.utils.parsedate_to_datetime(str(permsg["Arrival-Date"])).timestamp() == 1700000000,
          f"{scenario}: Arrival-Date {permsg['Arrival-Date']}")
    return blocks[1:]


def one(sample):
    raw, msg, parts = run(sample, "one")
    check(msg["To"].addresses[0].addr_spec == "alice@example.org", f"one: To {msg['To']}")
    check(msg["Subject"] == "Undelivered Mail Returned to Sender", "one: Subject")
    text = parts[0].get_content()
    check(parts[0].get_content_type() == "text/plain", "one: first part type")
    check("<bob@example.net>: host hub.example.net said: 550 5.1.1" in text, "one: text names the recipient")
    check("<bob@example.net>:\n    Recipient address rejected" in text.replace("\r\n", "\n"),
          "one: text wrapped")
    (r,) = rcpt_fields("one", status_blocks("one", parts[1]), 1)
    check(r["Final-Recipient"] == "rfc822; bob@example.net", f"one: Final-Recipient {r['Final-Recipient']}")
    check(r["Action"] == "failed", "one: Action")
    check(r["Status"] == "5.1.1", "one: Status")
    check(r["Remote-MTA"] == "dns; hub.example.net", "one: Remote-MTA")
    check(r["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: "
          "User unknown in local recipient table", f"one: Diagnostic-Code {r['Diagnostic-Code']}")
    check(email.utils.parsedate_to_datetime(str(r["Last-Attempt-Date"])).timestamp() == 1700000100,
          "one: Last-Attempt-Date")
    check(r["Original-Recipient"] is None and r["Will-Retry-Until"] is None, "one: extra fields")
    hdrs, _ = original_headers("one", parts[2], "text/rfc822-headers")
    check(hdrs["Subject"] == "Quarterly report", f"one: original Subject {hdrs['Subject']}")
    check(hdrs["Message-ID"] == "<1234@client.example.org>", "one: original Message-ID")
    check(b"The body is not carried" not in raw, "one: the body was carried")


def three(sample):
    _, _, parts = run(sample, "three")
    rs = rcpt_fields("three", status_blocks("three", parts[1]), 3)
    want = [("bob@example.net", "5.1.1", "smtp; 550 5.1.1"),
            ("carol@example.net", "5.2.2", "smtp; 552 5.2.2 <carol@example.net> Mailbox is full"),
            ("dave@example.net", "5.3.4", "X-mxring; message size 20000000")]
    for r, (addr, status, diag) in zip(rs, want):
        check(r["Final-Recipient"] == "rfc822; " + addr, f"three: {r['Final-Recipient']}")
        check(r["Status"] == status, f"three: {addr} Status {r['Status']}")
        check(str(r["Diagnostic-Code"]).startswith(diag), f"three: {addr} {r['Diagnostic-Code']}")
    check(rs[1]["Original-Recipient"] == "rfc822; Carol@Example.NET", "three: Original-Recipient")
    check(rs[2]["Remote-MTA"] is None, "three: a local failure has no Remote-MTA")
    text = parts[0].get_content()
    for addr in ("<bob@example.net>", "<carol@example.net>", "<dave@example.net>"):
        check(addr in text, f"three: {addr} not in the text")


def inject(sample):
    raw, msg, parts = run(sample, "inject")
    (r,) = rcpt_fields("inject", status_blocks("inject", parts[1]), 1)
    for blk in status_blocks("inject", parts[1]):
        for k in blk.keys():
            check(not k.lower().startswith("x-injected"), f"inject: field {k} was injected")
    for k in msg.keys():
        check(not k.lower().startswith("x-injected"), f"inject: header {k} was injected")
    check(str(r["Diagnostic-Code"]).startswith("smtp; 550 5.1.1 no such user  X-Injected: yes"),
          f"inject: Diagnostic-Code {r['Diagnostic-Code']}")
    check(r["Status"] == "5.1.1" and r["Action"] == "failed", "inject: Status/Action")
    check(len(parts) == 3, "inject: parts")


def long_headers(sample):
    raw, _, parts = run(sample, "long-headers")
    hdrs, hraw = original_headers("long-headers", parts[2], "text/rfc822-headers")
    check(hdrs["Subject"] == "Quarterly report", "long-headers: original Subject")
    check(len(hraw) <= 66 * 1024, f"long-headers: {len(hraw)} octets of headers")
    check(hraw.endswith(b"\r\n") and hraw.rstrip(b"\r\n").split(b"\r\n")[-1].startswith(b"X-Filler-"),
          "long-headers: cut inside a field")
    long = str(hdrs["X-Long"]).replace(" ", "").replace("\t", "")
    check(len(long) == 1500, f"long-headers: the long field has {len(long)} letters")
    check(b"body\r\n" not in raw, "long-headers: the body was carried")
    text = parts[0].get_content().replace("\r\n", "\n").replace("\n    ", " ")
    check("longer than 65536 octets" in text, "long-headers: the cut is not said")


def utf8(sample):
    raw, msg, parts = run(sample, "utf8")
    check(msg["Content-Transfer-Encoding"] == "8bit", "utf8: top CTE")
    # (Its Address objects keep 8-bit octets as surrogate escapes: the string, not them.)
    to = str(msg["To"])
    check(to == "<jörg@example.org>" or to == "jörg@example.org", f"utf8: To {to}")
    check("<müller@example.net>" in parts[0].get_content(), "utf8: text")
    (r,) = rcpt_fields("utf8", status_blocks("utf8", parts[1]), 1)
    check(r["Final-Recipient"] == "utf-8; müller@example.net", f"utf8: Final-Recipient {r['Final-Recipient']}")
    check(r["Status"] == "5.1.1", "utf8: Status")
    hdrs, _ = original_headers("utf8", parts[2], "message/global-headers")
    check(hdrs["Subject"] == "Grüße", f"utf8: original Subject {hdrs['Subject']}")


def delayed(sample):
    _, msg, parts = run(sample, "delayed")
    check(msg["Subject"] == "Delayed Mail (still being retried)", f"delayed: Subject {msg['Subject']}")
    (r,) = rcpt_fields("delayed", status_blocks("delayed", parts[1]), 1)
    check(r["Action"] == "delayed" and r["Status"] == "4.2.0", "delayed: Action/Status")
    check(email.utils.parsedate_to_datetime(str(r["Will-Retry-Until"])).timestamp() == 1700432000,
          f"delayed: Will-Retry-Until {r['Will-Retry-Until']}")
    check("warning only" in parts[0].get_content(), "delayed: text")


def main():
    if len(sys.argv) != 2:
        print("usage: check_dsn.py DSN_SAMPLE", file=sys.stderr)
        return 2
    for t in (one, three, inject, long_headers, utf8, delayed):
        before = len(FAILURES)
        t(sys.argv[1])
        print(f"{t.__name__}: {'ok' if len(FAILURES) == before else 'FAILED'}")
    for f in FAILURES:
        print("FAIL:", f)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
