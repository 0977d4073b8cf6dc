#!/usr/bin/env python3
"""
test_tls.py - STARTTLS (RFC 3207) against the real mxring with clients no
one here wrote: `openssl s_client -starttls smtp` (TLS 1.2 and 1.3, session
resumption with -sess_out/-sess_in), Python smtplib.starttls and ssl
(session_reused), `swaks --tls`, and testssl.sh (`-t smtp --jsonfile`).

What is asserted, exactly:
  - the replies: 220 to STARTTLS, 502 when TLS is not offered, 503 to a
    second STARTTLS, 503 to MAIL before EHLO inside TLS; EHLO inside TLS is
    the plaintext EHLO less the STARTTLS line;
  - the negotiated version and cipher (server order: AES-128-GCM first),
    in the client's output, the session-end log line, the Received header
    and the maildir envelope; resumption in the client's output
    ("Reused"/session_reused), the log (tls_resumed=yes) and the exit stats;
  - message content over TLS byte for byte (`mxring-spool cat --body`),
    1 MiB DATA, BDAT, a session sent one TLS record per byte;
  - STARTTLS safety: bytes after the STARTTLS line are dropped and logged
    (CVE-2011-0411), garbage instead of a ClientHello closes that
    connection only, a handshake that does not finish within
    tls_handshake_timeout is closed;
  - close_notify after the last reply (RFC 8446 6.1);
  - tickets: minted by one process, resumed by a second one with the same
    tls_ticket_key_file, not by one with another key; a rotated key file
    (new key first, old key second) still resumes the old ticket, and the
    session gets a ticket sealed with the new key; TLS 1.2 session-ID
    resumption on both shards and for 100 clients;
  - SIGHUP: a new certificate for new sessions while an established session
    keeps working; a broken file keeps the old certificate (reload: failed);
  - tls_security_level = may without a certificate: exit 1, clear message.

Certificates come from tools/mxring-cert.sh (self-signed ECDSA P-256).
A case whose client (openssl, swaks, testssl) is missing is skipped, and so
is every TLS case when mxring was built without wolfSSL (exit 77 when all
are). The testssl case
takes over a minute: meson runs it alone (-k testssl); the other entry
leaves it out (-x testssl).
"""

import json
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import harness as h
from harness import check, check_eq

suite = h.Suite("tls")

R_STARTTLS = "220 2.0.0 Ready to start TLS"
R_TLS_ACTIVE = "503 5.5.1 Error: TLS already active"
HDR = b"From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: tls\r\n\r\n"

# The server's cipher order puts AES-128-GCM first (tls/tls.c DEFAULT_CIPHERS).
# Names: OpenSSL's (clients) and wolfSSL's (server log, envelope, Received).
CIPHER = {"1.3": ("TLS_AES_128_GCM_SHA256", "TLS13-AES128-GCM-SHA256"),
          "1.2": ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256")}
PYVER = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
CERT_TOOL = os.path.join(h.REPO, "tools", "mxring-cert.sh")
HANDSHAKE_TIMEOUT_S = 2
TESTSSL_TIMEOUT_S = 300
# What any self-signed test certificate draws from testssl (issue 3).
TESTSSL_ALLOWED = ("cert_chain_of_trust", "cert_revocation")


# ---------------------------------------------------------------- set-up


def make_certs(host=h.HOSTNAME, tag="cert"):
    """A folder with cert.pem, key.pem, ticket.keys made by tools/mxring-cert.sh."""
    h.require_program("openssl")
    d = h.new_tmpdir(tag)
    p = h.run_cmd(["bash", CERT_TOOL, d, host], 60)
    check_eq(p.returncode, 0, "mxring-cert.sh exit status (stderr %r)" % p.stderr)
    for f in ("cert.pem", "key.pem", "ticket.keys"):
        check(os.path.getsize(os.path.join(d, f)) > 0, "mxring-cert.sh made no %s" % f)
    return d


def new_ticket_key_file(path, *keys):
    """Writes a ticket key file: the given 96-hex-digit keys, the sealing one first."""
    with open(path, "w") as f:
        f.write("# written by test_tls.py\n")
        for k in keys:
            f.write(k + "\n")
    return path


def in_place_count(srv, *versions):
    """The tls_in_place count expected for sessions of these versions."""
    return str(sum(1 for v in versions if srv.in_place(v)))


def random_key():
    return os.urandom(48).hex()


def tls_cfg(certs, **extra):
    cfg = {
        "tls_security_level": "may",
        "tls_cert_file": os.path.join(certs, "cert.pem"),
        "tls_key_file": os.path.join(certs, "key.pem"),
        "tls_ticket_key_file": os.path.join(certs, "ticket.keys"),
    }
    cfg.update(extra)
    return cfg


TLSServer = h.TLSServer


def start_tls_server(certs=None, **extra):
    """A TLS-offering server (not started: use `with`); srv.certs is its cert folder."""
    certs = certs or make_certs()
    srv = TLSServer(tls_cfg(certs, **extra))
    srv.certs = certs
    return srv


def client_ctx(version=None):
    """A client context that accepts the self-signed test certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version:
        ctx.minimum_version = ctx.maximum_version = PYVER[version]
    # mxring closes after 221 without a close_notify: an EOF, not an attack.
    ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    return ctx


def starttls(c, ctx=None, session=None):
    """STARTTLS on a harness Client, then the handshake; c talks TLS afterwards."""
    c.cmd("STARTTLS", R_STARTTLS)
    check_eq(c.buf, b"", "bytes after the 220 to STARTTLS, before the handshake")
    c.sock.settimeout(c.timeout)
    try:
        c.sock = (ctx or client_ctx()).wrap_socket(c.sock, server_hostname=h.HOSTNAME,
                                                   session=session)
    except (ssl.SSLError, OSError) as e:
        raise h.Fail("TLS handshake failed: %r" % e)
    c._note("T", ("handshake done: %s %s reused=%s" % (c.sock.version(), c.sock.cipher()[0],
                                                       c.sock.session_reused)).encode())
    return c.sock


def plain_ehlo(srv):
    """The EHLO reply before TLS (must list STARTTLS)."""
    c = srv.client()
    r = c.ehlo()
    c.quit()
    check("250-STARTTLS" in r, "STARTTLS not advertised before TLS: %r" % r)
    return r


def ehlo_in_tls(plain):
    """The EHLO reply inside TLS: the plaintext one without STARTTLS."""
    return [l for l in plain if l != "250-STARTTLS"]


def tls_client(srv, version=None, session=None, ctx=None):
    """A harness Client that did EHLO, STARTTLS, the handshake and EHLO again."""
    c = srv.client()
    r = c.ehlo()
    check("250-STARTTLS" in r, "STARTTLS not advertised: %r" % r)
    starttls(c, ctx or client_ctx(version), session)
    check_eq(c.ehlo(), ehlo_in_tls(r), "EHLO reply inside TLS")
    return c


# ---------------------------------------------------------------- logs


FIELD_RE = re.compile(r'\b([a-z_0-9]+)=("([^"]*)"|\S*)')


def unescape_log(text):
    """Log text with its \\xNN escapes decoded (the log escapes spaces in values)."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def fields(line):
    return {m.group(1): m.group(3) if m.group(3) is not None else m.group(2)
            for m in FIELD_RE.finditer(line)}


def wait_log(srv, pattern, count=1, timeout=5.0):
    return srv.wait_log(pattern, count, timeout)


def session_ends(srv, count=1):
    """Fields of the 'session end' lines (waits for count of them)."""
    return [fields(l) for l in wait_log(srv, r"\bsession end\b", count)]


def check_session_tls(srv, version, resumed, count=None, index=-1):
    ends = session_ends(srv, count or 1)
    e = ends[index]
    check_eq(e.get("tls"), "TLSv%s %s" % (version, CIPHER[version][1]), "tls= of session end")
    check_eq(e.get("tls_resumed"), "yes" if resumed else None, "tls_resumed= of session end")
    return e


# ---------------------------------------------------------------- openssl s_client


SCLIENT_NEW_RE = re.compile(r"^(New|Reused), (TLSv1\.[0-3]), Cipher is (\S+)$", re.M)


class SClient:
    """One run of `openssl s_client -starttls smtp`; the parsed output."""

    def __init__(self, port, args=(), lines=("EHLO client.example.org", "QUIT"), timeout=30):
        exe = h.require_program("openssl")
        self.argv = [exe, "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % port,
                     "-servername", h.HOSTNAME, "-crlf", "-ign_eof"] + list(args)
        data = "".join(l + "\n" for l in lines).encode()
        p = h.run_cmd(self.argv, timeout, input=data)
        self.rc = p.returncode
        self.out = p.stdout.decode("utf-8", "replace")
        self.err = p.stderr.decode("utf-8", "replace")
        m = SCLIENT_NEW_RE.search(self.out)
        self.kind, self.version, self.cipher = m.groups() if m else (None, None, None)
        s = re.search(r"^subject=(.*)$", self.out, re.M)
        self.subject = s.group(1).strip() if s else None
        self.replies = [l for l in self.out.splitlines() if h.REPLY_LINE_RE.match(l)]

    def show(self):
        return "$ %s\n--- stdout:\n%s\n--- stderr:\n%s" % (" ".join(self.argv), self.out,
                                                           self.err)

    def check_tls(self, version, kind="New"):
        check_eq((self.kind, self.version, self.cipher),
                 (kind, "TLSv" + version, CIPHER[version][0]),
                 "s_client's '%s, TLSv..., Cipher is ...' line\n%s" % (kind, self.show()))

    def check_session(self, ehlo):
        """The replies inside TLS: the EHLO reply, then 221 (the tail of stdout)."""
        want = list(ehlo) + [h.R_QUIT]
        check_eq(self.replies[-len(want):], want, "replies inside TLS\n%s" % self.show())
        check("250-STARTTLS" not in self.replies[-len(want):],
              "STARTTLS listed inside TLS\n%s" % self.show())


def sclient_version_args(version):
    return ["-tls1_3"] if version == "1.3" else ["-tls1_2"]


# ---------------------------------------------------------------- cases: clients


def case_sclient(version):
    with start_tls_server() as srv:
        plain = plain_ehlo(srv)
        s = SClient(srv.port, sclient_version_args(version))
        s.check_tls(version)
        s.check_session(ehlo_in_tls(plain))
        check_eq(s.subject, "CN = %s" % h.HOSTNAME, "certificate subject\n%s" % s.show())
        check(re.search(r"^Server Temp Key: X25519, 253 bits$", s.out, re.M),
              "key exchange is not X25519\n%s" % s.show())
        check(re.search(r"^Peer signature type: ECDSA$", s.out, re.M),
              "not an ECDSA signature\n%s" % s.show())
        e = check_session_tls(srv, version, False, count=2)
        check_eq((e.get("helo"), e.get("reason")), ("client.example.org", "quit"),
                 "helo and reason of the TLS session end")
    st = srv.stats()
    check_eq((st.get("tls_handshakes"), st.get("tls_resumed"), st.get("tls_failed")),
             ("1", "0", "0"), "tls_handshakes, tls_resumed, tls_failed in the exit stats")


@suite.case
def sclient_tls13():
    case_sclient("1.3")


@suite.case
def sclient_tls12():
    case_sclient("1.2")


def case_sclient_resume(version, extra=()):
    with start_tls_server() as srv:
        plain = plain_ehlo(srv)
        sess = os.path.join(srv.tmp, "session.pem")
        a = SClient(srv.port, sclient_version_args(version) + list(extra) + ["-sess_out", sess])
        a.check_tls(version, "New")
        a.check_session(ehlo_in_tls(plain))
        check(os.path.exists(sess) and os.path.getsize(sess) > 0,
              "s_client wrote no session to -sess_out\n%s" % a.show())
        b = SClient(srv.port, sclient_version_args(version) + list(extra) + ["-sess_in", sess])
        b.check_tls(version, "Reused")
        b.check_session(ehlo_in_tls(plain))
        check_session_tls(srv, version, True, count=3)
    st = srv.stats()
    check_eq((st.get("tls_handshakes"), st.get("tls_resumed")), ("2", "1"),
             "tls_handshakes, tls_resumed in the exit stats")


@suite.case
def sclient_resume_tls13():
    case_sclient_resume("1.3")


@suite.case
def sclient_resume_tls12_ticket():
    case_sclient_resume("1.2")


@suite.case
def sclient_resume_tls12_session_id():
    # A TLS 1.2 client without tickets resumes by session ID (the server's cache).
    case_sclient_resume("1.2", ["-no_ticket"])


def no_ticket_ctx():
    ctx = client_ctx("1.2")
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def new_id_sessions(srv, ctx, n):
    out = []
    for i in range(n):
        reused, sess = py_session(srv, ctx, need_ticket=False)
        check(not reused and not sess.has_ticket, "session %d: reused=%s has_ticket=%s"
              % (i, reused, sess.has_ticket))
        out.append(sess)
    return out


@suite.case
def session_id_resumption_across_shards_tls12():
    # A TLS 1.2 client without tickets resumes by session ID on whichever
    # shard SO_REUSEPORT gives it: 3 sessions (few enough for any cache),
    # each resumed 10 times.
    ctx = no_ticket_ctx()
    with start_tls_server() as srv:
        sessions = new_id_sessions(srv, ctx, 3)
        missed = [i for _ in range(10) for i, sess in enumerate(sessions)
                  if not py_session(srv, ctx, sess, need_ticket=False)[0]]
        check(not missed, "TLS 1.2 sessions not resumed by session ID: %s" % missed)
        ends = session_ends(srv, 33)
        shards = {e.get("shard") for e in ends if e.get("tls_resumed") == "yes"}
        check_eq(shards, {"0", "1"}, "shards that resumed sessions")
    check_eq(srv.stats().get("tls_resumed"), "30", "tls_resumed in the exit stats")


@suite.case
def session_id_cache_100_clients_tls12():
    # Issue 3: a bounded session-ID cache shared by the shards, not wolfSSL's
    # built-in 33 entries: 100 clients without tickets, then each resumes.
    n = 100
    ctx = no_ticket_ctx()
    with start_tls_server() as srv:
        sessions = new_id_sessions(srv, ctx, n)
        missed = [i for i, sess in enumerate(sessions)
                  if not py_session(srv, ctx, sess, need_ticket=False)[0]]
        check(not missed, "%d of %d TLS 1.2 sessions not resumed by session ID (first: %s)"
              % (len(missed), n, missed[:10]))
    check_eq(srv.stats().get("tls_resumed"), str(n), "tls_resumed in the exit stats")


def case_smtplib_resume(version):
    ctx = client_ctx(version)

    class Reuse:
        """What smtplib.starttls calls: wrap_socket, here with the saved session."""

        def __init__(self, session):
            self.session = session

        def wrap_socket(self, sock, server_hostname=None):
            return ctx.wrap_socket(sock, server_hostname=server_hostname, session=self.session)

    with start_tls_server() as srv:
        bodies = [HDR + b"smtplib over TLS %s, session %d\r\n" % (version.encode(), i)
                  for i in range(2)]
        session = None
        for i, body in enumerate(bodies):
            s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
            try:
                s.ehlo("client.example.org")
                check(s.has_extn("starttls"), "STARTTLS not advertised to smtplib")
                code, msg = s.starttls(context=Reuse(session) if session else ctx)
                check_eq("%d %s" % (code, msg.decode()), R_STARTTLS, "reply to STARTTLS")
                check_eq(s.sock.version(), "TLSv" + version, "negotiated version")
                check_eq(s.sock.cipher()[0], CIPHER[version][0], "negotiated cipher")
                check_eq(s.sock.session_reused, i == 1, "session_reused of session %d" % i)
                s.ehlo("client.example.org")
                check(not s.has_extn("starttls"), "STARTTLS advertised inside TLS")
                check_eq(s.sendmail("sender@example.com", ["rcpt@example.com"], body), {},
                         "refused")
                # TLS 1.3 tickets come after the handshake: read replies first.
                session = s.sock.session
                check(session is not None and session.has_ticket,
                      "no session ticket from the server (%r)" % session)
                s.quit()
            finally:
                s.close()
        ends = session_ends(srv, 2)
        for i, e in enumerate(ends[-2:]):
            check_eq(e.get("tls"), "TLSv%s %s" % (version, CIPHER[version][1]),
                     "tls= of session %d" % i)
            check_eq(e.get("tls_resumed"), "yes" if i else None, "tls_resumed of session %d" % i)
            check_eq(e.get("msgs"), "1", "msgs= of session %d" % i)
        ls = h.spool_list(srv.spool)
        check_eq(len(ls), 2, "stored messages")
        for entry, body in zip(ls, bodies):
            h.check_body(srv.spool, entry["qid"], body)
    st = srv.stats()
    check_eq((st.get("tls_handshakes"), st.get("tls_resumed")), ("2", "1"),
             "tls_handshakes, tls_resumed in the exit stats")


@suite.case
def smtplib_resume_tls13():
    case_smtplib_resume("1.3")


@suite.case
def smtplib_resume_tls12():
    case_smtplib_resume("1.2")


SWAKS_QUEUED = re.compile(r"^<~  250 2\.0\.0 Ok: queued as ([0-9A-Za-z]{16})\s*$", re.M)
MASK = (b"Date:", b"Message-Id:", b"Message-ID:", b"Subject:")


def case_swaks(extra):
    exe = h.require_program("swaks")
    with start_tls_server() as srv:
        argv = [exe, "--server", srv.hostport(), "--helo", "client.example.org",
                "--timeout", "10", "--tls", "--from", "sender@example.com",
                "--to", "rcpt@example.com"] + extra
        p = h.run_cmd(argv, 30)
        out = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
        check_eq(p.returncode, 0, "swaks exit status; transcript:\n%s" % out)
        check(" -> STARTTLS\n<-  %s\n" % R_STARTTLS in out,
              "no STARTTLS/220 in the swaks transcript:\n%s" % out)
        check("=== TLS started with cipher TLSv1.3:%s:128" % CIPHER["1.3"][0] in out,
              "swaks did not negotiate TLS 1.3 with %s:\n%s" % (CIPHER["1.3"][0], out))
        check('=== TLS peer DN="/CN=%s"' % h.HOSTNAME in out, "peer DN:\n%s" % out)
        check("<~  250-STARTTLS" not in out, "STARTTLS advertised inside TLS:\n%s" % out)
        ids = SWAKS_QUEUED.findall(out)
        check_eq(len(ids), 1, "queued replies inside TLS in the swaks transcript:\n%s" % out)
        if "--pipeline" in extra:
            i_rcpt = out.find(" ~> RCPT TO:<rcpt@example.com>")
            i_mail_reply = out.find("<~  " + h.R_MAIL_OK)
            check(0 <= i_rcpt < i_mail_reply, "swaks did not pipeline inside TLS:\n%s" % out)
        # What swaks sends, learned from a capture peer (it sends the same
        # message in plaintext when it cannot start TLS... so run it plain).
        with h.CaptureServer() as cap:
            pa = [a for a in argv if a != "--tls"]
            pa[pa.index("--server") + 1] = "127.0.0.1:%d" % cap.port
            pc = h.run_cmd(pa, 30)
            check_eq(pc.returncode, 0, "swaks against the capture peer: %r" % pc.stdout)
            want = h.dot_unstuff(cap.messages[0]["wire"])
        got = h.spool_body(srv.spool, ids[0])
        check_eq(h.mask_lines(got, MASK), h.mask_lines(want, MASK),
                 "stored body vs what swaks sent (time headers blanked)")
        check_session_tls(srv, "1.3", False)


@suite.case
def nagle_client_not_stalled_after_the_handshake():
    # Python's smtplib, like Postfix's smtp client, leaves Nagle's algorithm
    # on. Its EHLO after a TLS 1.3 handshake waited for the ACK of its
    # Finished (about 40 ms, the delayed ACK) while the server's ticket went
    # out before that Finished. The reply to that EHLO must come at loopback
    # speed: the median of 7 sessions under 10 ms.
    with start_tls_server() as srv:
        times = []
        for i in range(7):
            s = smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.example.org",
                             timeout=10)
            check_eq(s.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0,
                     "smtplib's TCP_NODELAY")
            s.ehlo()
            s.starttls(context=client_ctx("1.3"))
            check_eq(s.sock.version(), "TLSv1.3", "version")
            t0 = time.monotonic()
            code, _ = s.ehlo()
            times.append(time.monotonic() - t0)
            check_eq(code, 250, "EHLO inside TLS")
            s.quit()
        check_median_under(times, 0.010, "TLS 1.3, smtplib")
        # A TLS 1.2 resumption ends with the client's Finished too.
        ctx = client_ctx("1.2")
        session, times = None, []
        for i in range(8):
            c = h.Client("127.0.0.1", srv.port)
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            c.expect(h.R_GREETING)
            c.ehlo()
            starttls(c, ctx, session)
            if session is not None:
                check(c.sock.session_reused, "TLS 1.2 session %d not resumed" % i)
            t0 = time.monotonic()
            c.ehlo()
            if session is not None:
                times.append(time.monotonic() - t0)
            session = c.sock.session
            c.quit()
        check_median_under(times, 0.010, "TLS 1.2 resumed")


def check_median_under(times, limit_s, what):
    times = sorted(times)
    print("# %s, first reply after the handshake: %s ms"
          % (what, ", ".join("%.1f" % (t * 1000) for t in times)))
    check(times[len(times) // 2] < limit_s, "%s: median %.1f ms from EHLO to its reply"
          % (what, times[len(times) // 2] * 1000))


@suite.case
def swaks_tls():
    case_swaks([])


@suite.case
def swaks_tls_pipeline():
    case_swaks(["--pipeline"])


# ---------------------------------------------------------------- cases: content


@suite.case
def message_content_over_tls():
    # Dot-stuffed lines, 8-bit bytes, a 1 MiB message (many TLS records,
    # records split across receive buffers), BDAT with a 1 MiB chunk and
    # pipelined chunks, over TLS 1.3 and 1.2.
    line = bytes(b for b in range(256) if b not in (10, 13)) * 3 + b"\r\n"
    big = HDR + (b".leading dot\r\n" + line) * (1024 * 1024 // (len(line) + 14) + 1)
    small = HDR + b".\r\n..\r\n. x\r\nend\r\n"
    with start_tls_server() as srv:
        for version in ("1.3", "1.2"):
            c = tls_client(srv, version)
            q1 = c.send_message(small, mail_params=" BODY=8BITMIME")
            q2 = c.send_message(big, mail_params=" BODY=8BITMIME")
            c.cmd("MAIL FROM:<sender@example.com> BODY=8BITMIME", h.R_MAIL_OK)
            c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
            c.send(b"BDAT %d\r\n" % len(big) + big)
            c.expect(h.r_chunk(len(big)), timeout=30)
            c.send(b"BDAT 5\r\nhelloBDAT 6 LAST\r\n world")
            c.expect(h.r_chunk(5))
            q3 = c.queued(timeout=30)
            c.send(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\n"
                   b"BDAT 12 LAST\r\nsingle chunk")
            c.expect(h.R_MAIL_OK)
            c.expect(h.R_RCPT_OK)
            q4 = c.queued()
            c.quit()
            h.check_body(srv.spool, q1, small, "small DATA body over TLS %s" % version)
            h.check_body(srv.spool, q2, big, "1 MiB DATA body over TLS %s" % version)
            h.check_body(srv.spool, q3, big + b"hello world", "BDAT body over TLS %s" % version)
            h.check_body(srv.spool, q4, b"single chunk", "BDAT LAST over TLS %s" % version)
            e = check_session_tls(srv, version, False)
            check_eq(e.get("msgs"), "4", "msgs= of the TLS session")
    check_eq(h.spool_verify(srv.spool), 8, "verify count")
    # Both sessions' records were opened in place (tls/record.c), not by
    # wolfSSL_read, where the build can.
    st = srv.stats()
    check_eq(st.get("tls_in_place"), in_place_count(srv, "1.3", "1.2"), "tls_in_place")
    check(int(st["tls_plain_bytes"]) > 4 * len(big), "tls_plain_bytes %s" % st["tls_plain_bytes"])


@suite.case
def concurrent_large_messages_over_tls():
    # Two clients stream 8 MiB messages at once: more ciphertext arrives than
    # the shard decrypts per pass, so receives are paused and resumed, and the
    # shard must come back for the rest (this stalled both clients once).
    body = HDR + (b"y" * 1022 + b"\r\n") * 8192
    with start_tls_server(shards=1) as srv:
        def one(i):
            c = tls_client(srv, "1.3")
            qids = [c.send_message(body) for _ in range(3)]
            c.quit()
            return qids
        results = h.parallel([lambda i=i: one(i) for i in range(2)], timeout=120)
    qids = [q for r in results for q in r]
    check_eq(len(set(qids)), 6, "distinct queue ids")
    check_eq(h.spool_verify(srv.spool), 6, "verify count")
    h.check_body(srv.spool, qids[0], body, "8 MiB body over TLS")
    st = srv.stats()
    check_eq(st.get("tls_in_place"), in_place_count(srv, "1.3", "1.3"), "tls_in_place")
    # Records are opened from the receive buffers; only a record spread over
    # more than two of them is moved out first.
    held, plain = int(st["tls_held_bytes"]), int(st["tls_plain_bytes"])
    print("held %d of %d plaintext bytes (%.3f copies per byte)" % (held, plain, held / plain))


CLIENTS_DRY = 24  # more than the ring has buffers


@suite.case
def receive_buffers_run_dry_under_tls():
    # A ring of 16 receive buffers and 24 TLS clients (TLS 1.3 and 1.2)
    # streaming 200 KB messages in 16 KiB records at once: the ring runs dry
    # over and over, records straddle buffers and wait in place for their
    # tails, and every message must still arrive whole.
    cfg = {"recv_buffer_size": "16k", "recv_buffers": 16, "body_flush_bytes": "16k",
           "shards": 1}
    with start_tls_server(**cfg) as srv:
        def one(i):
            c = tls_client(srv, "1.3" if i % 3 else "1.2")
            c.timeout = 60
            sent = {}
            for k in range(3):
                line = b"dry %d line of message %d\r\n" % (i, k)
                body = HDR + line * (200000 // len(line))
                c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
                c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
                c.cmd("DATA", h.R_DATA)
                wire = body + b".\r\n"
                for j in range(0, len(wire), 65536):
                    c.send(wire[j:j + 65536])
                sent[c.queued(timeout=60)] = body
            c.quit()
            return sent
        results = h.parallel([lambda i=i: one(i) for i in range(CLIENTS_DRY)], timeout=180)
    sent = {}
    for r in results:
        sent.update(r)
    check_eq(len(sent), 3 * CLIENTS_DRY, "distinct queue ids")
    check_eq(h.spool_verify(srv.spool), 3 * CLIENTS_DRY, "verify count")
    for q in sorted(sent)[::6]:
        h.check_body(srv.spool, q, sent[q])
    st = srv.stats()
    versions = ["1.3" if i % 3 else "1.2" for i in range(CLIENTS_DRY)]
    check_eq((st.get("tls_in_place"), st.get("tls_failed")),
             (in_place_count(srv, *versions), "0"), "tls_in_place, tls_failed")
    check(int(st["enobufs"]) > 0, "the ring never ran dry: the case tests nothing")
    print("enobufs=%s tls_held_bytes=%s of tls_plain_bytes=%s" % (
        st.get("enobufs"), st.get("tls_held_bytes"), st.get("tls_plain_bytes")))


@suite.case
def tls_records_of_one_byte():
    # Every byte of a pipelined session in its own TLS record: commands,
    # DATA content and BDAT cut at every offset inside TLS.
    with start_tls_server() as srv:
        c = tls_client(srv, "1.3")
        b1 = HDR + b"..one\r\n.\r\nbyte by byte\r\n"
        b2 = HDR + b"chunked\r\n"
        wire = (b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
        c.send_slowly(wire, piece=1, pause=0.0005)
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
def received_header_and_envelope():
    # The Received header names the version and cipher (segment spool),
    # the maildir envelope stores them; a plaintext message has neither.
    for fmt in ("segment", "maildir"):
        with start_tls_server(spool_format=fmt) as srv:
            qids = {}
            for version in ("1.3", "1.2"):
                c = tls_client(srv, version)
                qids[version] = c.send_message(HDR + b"over TLS %s\r\n" % version.encode())
                c.quit()
            c = srv.client()
            c.ehlo()
            qids["plain"] = c.send_message(HDR + b"plaintext\r\n")
            c.quit()
            for k, q in qids.items():
                raw = h.spool_raw(srv.spool, q)
                head = raw.split(b"\r\n", 3)
                rec = b"\r\n".join(head[:3]).decode("utf-8", "replace")
                if k == "plain":
                    check(rec.startswith("Received: from client.example.org ([127.0.0.1]:")
                          and "by mx.test (mxring) with ESMTP id %s;" % q in rec
                          and "using" not in rec.split(";")[0],
                          "Received header of the plaintext message:\n%s" % rec)
                    continue
                want = ("by mx.test (mxring) with ESMTPS id %s\r\n\t(using TLSv%s with cipher "
                        "%s);" % (q, k, CIPHER[k][1]))
                check(rec.startswith("Received: from client.example.org ([127.0.0.1]:")
                      and want in rec,
                      "Received header over TLS %s:\n  want ...%r...\n  got  %r"
                      % (k, want, rec))
            # `list` prints qid, time, client, helo, from, rcpts, size.
            ls = {e["qid"]: e for e in h.spool_list(srv.spool)}
            check_eq(sorted(ls), sorted(qids.values()), "listed queue ids")
            if fmt == "maildir":
                check_maildir_envelopes(srv, qids)
    check_eq(h.spool_verify(srv.spool), 3, "verify count")


def check_maildir_envelopes(srv, qids):
    found = {}
    for root, _, files in os.walk(srv.spool):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                head = fh.read(4096)
            m = re.search(rb"^X-Mxring-Envelope: (.*)\r$", head, re.M)
            if m:
                env = fields(m.group(1).decode("utf-8", "replace"))
                found[env.get("qid")] = unescape_log(env.get("tls", "(no tls=)"))
    for k, q in qids.items():
        want = "" if k == "plain" else "TLSv%s %s" % (k, CIPHER[k][1])
        check_eq(found.get(q), want, "tls= in the maildir envelope of the %s message" % k)


# ---------------------------------------------------------------- cases: STARTTLS safety


@suite.case
def injection_after_starttls_dropped():
    # CVE-2011-0411: a command sent with STARTTLS in one write, before the
    # 220, must never be answered inside TLS.
    with start_tls_server() as srv:
        c = srv.client()
        plain = c.ehlo()
        c.send(b"STARTTLS\r\nNOOP\r\n")
        c.expect(R_STARTTLS)
        check_eq(c.buf, b"", "bytes after the 220 to STARTTLS")
        c.sock.settimeout(c.timeout)
        c.sock = client_ctx("1.3").wrap_socket(c.sock, server_hostname=h.HOSTNAME)
        c.expect_no_reply(1.0)   # the NOOP's 250 would come here
        check_eq(c.ehlo(), ehlo_in_tls(plain), "EHLO reply inside TLS")
        c.quit()
        lines = wait_log(srv, r"\bstarttls dropped_bytes=")
        check_eq(fields(lines[0]).get("dropped_bytes"), "6", "dropped_bytes (NOOP\\r\\n)\n%s"
                 % lines[0])
        # A whole injected transaction: none of it survives.
        c = srv.client()
        c.ehlo()
        inj = (b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<rcpt@example.com>\r\n"
               b"DATA\r\n")
        c.send(inj)
        c.expect(R_STARTTLS)
        starttls_handshake_only(c, "1.2")
        c.expect_no_reply(1.0)
        c.ehlo()
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_NEED_MAIL)
        c.quit()
        lines = wait_log(srv, r"\bstarttls dropped_bytes=", count=2)
        check_eq(fields(lines[1]).get("dropped_bytes"), str(len(inj) - len(b"STARTTLS\r\n")),
                 "dropped_bytes of the injected transaction\n%s" % lines[1])
        check_eq(h.spool_list(srv.spool), [], "stored messages")


def starttls_handshake_only(c, version):
    check_eq(c.buf, b"", "bytes after the 220 to STARTTLS")
    c.sock.settimeout(c.timeout)
    c.sock = client_ctx(version).wrap_socket(c.sock, server_hostname=h.HOSTNAME)


@suite.case
def commands_before_starttls_in_one_write():
    # EHLO and STARTTLS pipelined (allowed: STARTTLS is the last of the group).
    with start_tls_server() as srv:
        c = srv.client()
        c.send(b"EHLO client.example.org\r\nSTARTTLS\r\n")
        plain = c.reply()
        check("250-STARTTLS" in plain, "STARTTLS not advertised: %r" % plain)
        c.expect(R_STARTTLS)
        starttls_handshake_only(c, "1.3")
        check_eq(c.ehlo(), ehlo_in_tls(plain), "EHLO reply inside TLS")
        c.quit()
        check(not re.search(r"\bstarttls dropped_bytes=", srv.log()),
              "bytes dropped although none followed STARTTLS:\n%s" % srv.log_tail())


@suite.case
def close_notify_after_quit():
    # RFC 8446 6.1: a party MUST send close_notify before closing its write
    # side. After 221 inside TLS the client must read a clean TLS EOF, not
    # a bare TCP close (which OpenSSL reports as "unexpected eof").
    with start_tls_server() as srv:
        for version in ("1.3", "1.2"):
            ctx = client_ctx(version)
            ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
            c = srv.client()
            c.ehlo()
            c.cmd("STARTTLS", R_STARTTLS)
            c.sock.settimeout(c.timeout)
            c.sock = ctx.wrap_socket(c.sock, server_hostname=h.HOSTNAME,
                                     suppress_ragged_eofs=False)
            c.ehlo()
            c.cmd("QUIT", h.R_QUIT)
            try:
                c.expect_closed()
            except ssl.SSLEOFError as e:
                raise h.Fail("TLS %s: the connection ended without close_notify after 221 "
                             "(%s)" % (version, e))
            c.close()


@suite.case
def starttls_twice_refused():
    with start_tls_server() as srv:
        for version in ("1.3", "1.2"):
            c = tls_client(srv, version)
            c.cmd("STARTTLS", R_TLS_ACTIVE)
            # Still in a working TLS session afterwards.
            c.cmd("NOOP", h.R_OK)
            q = c.send_message(HDR + b"after a refused STARTTLS\r\n")
            c.quit()
            h.check_body(srv.spool, q, HDR + b"after a refused STARTTLS\r\n")
        # Also before the EHLO inside TLS.
        c = srv.client()
        c.ehlo()
        starttls(c, client_ctx("1.3"))
        c.cmd("STARTTLS", R_TLS_ACTIVE)
        c.quit()


@suite.case
def session_reset_by_tls():
    # RFC 3207 4.2: after the handshake the client must EHLO again.
    with start_tls_server() as srv:
        c = srv.client()
        c.ehlo()
        starttls(c, client_ctx("1.3"))
        c.cmd("MAIL FROM:<sender@example.com>", h.R_NEED_HELO)
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_NEED_MAIL)
        c.ehlo()
        q = c.send_message(HDR + b"after EHLO inside TLS\r\n")
        c.quit()
        h.check_body(srv.spool, q, HDR + b"after EHLO inside TLS\r\n")
        e = session_ends(srv)[-1]
        check_eq(e.get("helo"), "client.example.org", "helo of the session end")


@suite.case
def starttls_not_offered():
    # tls_security_level = none (the default): no STARTTLS, and 502 to it.
    with h.Server() as srv:
        c = srv.client()
        r = c.ehlo()
        check("250-STARTTLS" not in r and "250 STARTTLS" not in r,
              "STARTTLS advertised without TLS: %r" % r)
        c.cmd("STARTTLS", h.R_NOT_IMPL)
        c.cmd("NOOP", h.R_OK)
        c.quit()


@suite.case
def garbage_instead_of_client_hello():
    with start_tls_server() as srv:
        other = tls_client(srv, "1.3")          # an established TLS session
        waiting = srv.client()                  # a plaintext one
        waiting.ehlo()
        bad = srv.client()
        bad.ehlo()
        bad.cmd("STARTTLS", R_STARTTLS)
        bad.send(b"GET / HTTP/1.0\r\nHost: mx.test\r\n\r\n" + b"\x00" * 200)
        t0 = time.monotonic()
        rest = read_to_eof(bad, 10)
        check(rest == b"" or rest[:1] == b"\x15",
              "the server sent something other than a TLS alert before closing: %r" % rest)
        check(time.monotonic() - t0 < 5, "closing took %.1f s" % (time.monotonic() - t0))
        lines = wait_log(srv, r"\btls error\b.*\bstage=handshake\b")
        check_eq(fields(lines[0]).get("port"), str(bad.sock.getsockname()[1]),
                 "port of the tls error line\n%s" % lines[0])
        # Everyone else goes on.
        q = other.send_message(HDR + b"TLS session after another one's garbage\r\n")
        other.quit()
        waiting.cmd("NOOP", h.R_OK)
        waiting.quit()
        c = tls_client(srv, "1.2")
        q2 = c.send_message(HDR + b"new TLS session\r\n")
        c.quit()
        h.check_body(srv.spool, q, HDR + b"TLS session after another one's garbage\r\n")
        h.check_body(srv.spool, q2, HDR + b"new TLS session\r\n")
        ends = [e for e in session_ends(srv, 4) if e.get("reason") == "tls-handshake-failed"]
        check_eq(len(ends), 1, "session ends with reason=tls-handshake-failed")
    st = srv.stats()
    check_eq((st.get("tls_failed"), st.get("tls_handshakes")), ("1", "2"),
             "tls_failed, tls_handshakes in the exit stats")


def read_to_eof(c, timeout):
    """All bytes until the server closes (raw socket); Fail after timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise h.Fail("server did not close within %.0f s (got %r)" % (timeout, data))
        c.sock.settimeout(left)
        try:
            chunk = c.sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data
        data += chunk


@suite.case
def handshake_timeout():
    # tls_handshake_timeout = 2 with a long command timeout: a client that
    # stops after STARTTLS (or in the middle of its ClientHello) is closed
    # after ~2 s; a finished handshake goes back to the command timeout.
    with start_tls_server(tls_handshake_timeout=str(HANDSHAKE_TIMEOUT_S),
                          command_timeout="60") as srv:
        silent = srv.client()
        silent.ehlo()
        silent.cmd("STARTTLS", R_STARTTLS)
        t0 = time.monotonic()
        half = srv.client()
        half.ehlo()
        half.cmd("STARTTLS", R_STARTTLS)
        half.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello begun
        t1 = time.monotonic()
        done = tls_client(srv, "1.3")
        for c, t, what in ((silent, t0, "silent"), (half, t1, "half a ClientHello")):
            rest = read_to_eof(c, HANDSHAKE_TIMEOUT_S + 5)
            dt = time.monotonic() - t
            check(rest == b"", "%s: data before close: %r" % (what, rest))
            # Deadlines are whole seconds on a 1 s timer wheel: up to 1 s
            # late by design, plus the scheduling of a loaded machine.
            check(HANDSHAKE_TIMEOUT_S - 1.05 <= dt <= HANDSHAKE_TIMEOUT_S + 1.5,
                  "%s: closed after %.2f s (tls_handshake_timeout = %d)"
                  % (what, dt, HANDSHAKE_TIMEOUT_S))
        ends = [e for e in session_ends(srv, 2) if e.get("reason") == "tls-handshake-timeout"]
        check_eq(len(ends), 2, "session ends with reason=tls-handshake-timeout")
        # The established session outlives the handshake timeout.
        time.sleep(max(0.0, t0 + HANDSHAKE_TIMEOUT_S + 1.5 - time.monotonic()))
        done.cmd("NOOP", h.R_OK)
        done.quit()


# ---------------------------------------------------------------- cases: tickets


def sclient_session(srv, version, sess_out=None, sess_in=None):
    args = sclient_version_args(version)
    if sess_out:
        args += ["-sess_out", sess_out]
    if sess_in:
        args += ["-sess_in", sess_in]
    s = SClient(srv.port, args)
    check_eq(s.replies[-1:], [h.R_QUIT], "last reply through s_client\n%s" % s.show())
    return s


def case_tickets_across_processes(version):
    certs = make_certs()
    keys = os.path.join(certs, "ticket.keys")
    other = new_ticket_key_file(os.path.join(certs, "other.keys"), random_key())
    sess = os.path.join(certs, "session.pem")
    with start_tls_server(certs) as a:
        sclient_session(a, version, sess_out=sess).check_tls(version, "New")
    with start_tls_server(certs) as b:     # a second process, the same key file
        s = sclient_session(b, version, sess_in=sess)
        s.check_tls(version, "Reused")
        check_session_tls(b, version, True)
    check_eq(b.stats().get("tls_resumed"), "1", "tls_resumed of the second process")
    with start_tls_server(certs, tls_ticket_key_file=other) as c:   # another key
        s = sclient_session(c, version, sess_in=sess)
        s.check_tls(version, "New")
        check_session_tls(c, version, False)
    check_eq(c.stats().get("tls_resumed"), "0", "tls_resumed of the process with another key")
    check(os.path.exists(keys), "key file gone")


@suite.case
def tickets_across_processes_tls13():
    case_tickets_across_processes("1.3")


@suite.case
def tickets_across_processes_tls12():
    case_tickets_across_processes("1.2")


def py_session(srv, ctx, session=None, need_ticket=True):
    """A TLS session with Python's ssl: (session_reused, the session to resume next)."""
    c = tls_client(srv, session=session, ctx=ctx)
    reused = c.sock.session_reused
    c.cmd("NOOP", h.R_OK)     # TLS 1.3 tickets come after the handshake: read them
    nxt = c.sock.session
    c.quit()
    c.transcript = []         # cases run hundreds of these: report only failing ones
    if need_ticket:
        check(nxt is not None and nxt.has_ticket,
              "no session ticket from the server (%r, reused=%s)" % (nxt, reused))
    return reused, nxt


def rotation_key_files(certs):
    """old.keys = [K1], rotated.keys = [K2, K1], new.keys = [K2]."""
    k1, k2 = random_key(), random_key()
    return (new_ticket_key_file(os.path.join(certs, "old.keys"), k1),
            new_ticket_key_file(os.path.join(certs, "rotated.keys"), k2, k1),
            new_ticket_key_file(os.path.join(certs, "new.keys"), k2))


def case_key_rotation(version):
    # A ticket sealed with K1 resumes under [K2, K1] (a second process
    # with the rotated file); under [K2] alone it does not.
    certs = make_certs()
    old, rotated, new = rotation_key_files(certs)
    s1 = os.path.join(certs, "s1.pem")
    with start_tls_server(certs, tls_ticket_key_file=old) as a:
        sclient_session(a, version, sess_out=s1).check_tls(version, "New")
    with start_tls_server(certs, tls_ticket_key_file=rotated) as b:
        sclient_session(b, version, sess_in=s1).check_tls(version, "Reused")
        sclient_session(b, version, sess_in=s1).check_tls(version, "Reused")
        check_session_tls(b, version, True, count=2)
    check_eq(b.stats().get("tls_resumed"), "2", "tls_resumed under [K2, K1]")
    with start_tls_server(certs, tls_ticket_key_file=new) as c:
        sclient_session(c, version, sess_in=s1).check_tls(version, "New")
        check_session_tls(c, version, False)
    check_eq(c.stats().get("tls_resumed"), "0", "tls_resumed of a K1 ticket under [K2]")


def case_ticket_renewal(version):
    # tls/tls.c: "A ticket opened with an older key is answered with a new
    # one": the session resumed under [K2, K1] with a K1 ticket leaves the
    # client a ticket sealed with K2, which a process with [K2] resumes.
    certs = make_certs()
    old, rotated, new = rotation_key_files(certs)
    ctx = client_ctx(version)    # a Python session resumes only with its own context
    with start_tls_server(certs, tls_ticket_key_file=old) as a:
        reused, py_k1 = py_session(a, ctx)
        check_eq(reused, False, "session_reused of the first session")
    with start_tls_server(certs, tls_ticket_key_file=rotated) as b:
        reused, py_k2 = py_session(b, ctx, py_k1)
        check_eq(reused, True, "resuming a K1 ticket under [K2, K1]")
    with start_tls_server(certs, tls_ticket_key_file=new) as c:
        check_eq(py_session(c, ctx, py_k1, need_ticket=False)[0], False,
                 "resuming a K1 ticket under [K2]")
        if version == "1.2":
            # wolfSSL 5.5.4 sends no NewSessionTicket in an abbreviated TLS 1.2
            # handshake, even when the ticket callback asks for a new one
            # (WOLFSSL_TICKET_RET_CREATE): the client keeps its K1 ticket, which
            # resumes while K1 is listed and gives one full handshake after.
            return
        check_eq(py_session(c, ctx, py_k2, need_ticket=False)[0], True,
                 "resuming, under [K2], the session that was resumed under [K2, K1] (its "
                 "ticket should have been re-issued sealed with K2)")


@suite.case
def ticket_chain_restarts_after_200_resumptions():
    # tls/tls.c TICKET_GEN_MAX: a client that always resumes with its newest
    # ticket makes a chain; wolfSSL numbers a chain's tickets with one byte
    # and from 5.9 on fails the handshake past 255. The 201st resumption of a
    # chain is a full handshake instead, and starts a new chain.
    certs = make_certs()
    ctx = client_ctx("1.3")
    with start_tls_server(certs) as srv:
        reused, sess = py_session(srv, ctx)
        pattern = [reused]
        for _ in range(202):
            reused, sess = py_session(srv, ctx, sess)
            pattern.append(reused)
        want = [False] + [True] * 200 + [False, True]
        firsts = [i for i, (a, b) in enumerate(zip(pattern, want)) if a != b]
        check(not firsts, "session_reused differs from the want at sessions %r (of %d)"
              % (firsts[:10], len(want)))
        srv.stop()
        check_eq(srv.stats().get("tls_failed"), "0", "tls_failed")


@suite.case
def ticket_renewal_tls13():
    case_ticket_renewal("1.3")


@suite.case
def ticket_old_key_resumes_tls12():
    case_ticket_renewal("1.2")


@suite.case
def ticket_key_rotation_tls13():
    case_key_rotation("1.3")


@suite.case
def ticket_key_rotation_tls12():
    case_key_rotation("1.2")


# ---------------------------------------------------------------- cases: SIGHUP


def replace_file(path, data):
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read(path):
    with open(path, "rb") as f:
        return f.read()


@suite.case
def sighup_reloads_certificate():
    certs = make_certs(h.HOSTNAME)
    fresh = make_certs("mx2.test", tag="cert2")
    with start_tls_server(certs) as srv:
        old = tls_client(srv, "1.3")
        old_der = old.sock.getpeercert(binary_form=True)
        check_eq(SClient(srv.port, ["-tls1_3"]).subject, "CN = mx.test", "subject before reload")
        replace_file(os.path.join(certs, "key.pem"), read(os.path.join(fresh, "key.pem")))
        replace_file(os.path.join(certs, "cert.pem"), read(os.path.join(fresh, "cert.pem")))
        srv.signal(signal.SIGHUP)
        wait_log(srv, r"\breload: tls certificate and keys loaded\b")
        for version in ("1.3", "1.2"):
            s = SClient(srv.port, sclient_version_args(version))
            s.check_tls(version)
            check_eq(s.subject, "CN = mx2.test", "subject after reload\n%s" % s.show())
        # The session that started before the reload keeps working.
        q = old.send_message(HDR + b"across a certificate reload\r\n")
        check_eq(old.sock.getpeercert(binary_form=True), old_der, "old session's certificate")
        new = tls_client(srv, "1.3")
        check(new.sock.getpeercert(binary_form=True) != old_der,
              "a new session still got the old certificate")
        new.quit()
        # A broken certificate file: the reload fails, the last good one stays.
        replace_file(os.path.join(certs, "cert.pem"), b"-----BEGIN CERTIFICATE-----\nnot base64"
                     b"\n-----END CERTIFICATE-----\n")
        srv.signal(signal.SIGHUP)
        fail = wait_log(srv, r"\breload: failed\b")
        check("tls_cert_file" in unescape_log(fail[0]),
              "the reload failure does not say why:\n%s" % fail[0])
        s = SClient(srv.port, ["-tls1_3"])
        s.check_tls("1.3")
        check_eq(s.subject, "CN = mx2.test", "subject after a failed reload\n%s" % s.show())
        # A key that does not match the certificate: refused too.
        replace_file(os.path.join(certs, "cert.pem"), read(os.path.join(fresh, "cert.pem")))
        replace_file(os.path.join(certs, "key.pem"), read(os.path.join(make_certs(
            "mx3.test", tag="cert3"), "key.pem")))
        srv.signal(signal.SIGHUP)
        fail = wait_log(srv, r"\breload: failed\b", count=2)
        check("does not match" in unescape_log(fail[1]), "the mismatch is not named:\n%s" % fail[1])
        check_eq(SClient(srv.port, ["-tls1_2"]).subject, "CN = mx2.test",
                 "subject after a second failed reload")
        q2 = old.send_message(HDR + b"after two failed reloads\r\n")
        old.quit()
        h.check_body(srv.spool, q, HDR + b"across a certificate reload\r\n")
        h.check_body(srv.spool, q2, HDR + b"after two failed reloads\r\n")
        check_eq(len(wait_log(srv, r"\breload: tls certificate and keys loaded\b")), 1,
                 "successful reloads")


@suite.case
def sighup_reloads_ticket_keys():
    # The ticket key file is read again on SIGHUP: after [K2, K1] the old
    # ticket resumes, after [K2] alone it does not.
    certs = make_certs()
    k1, k2 = random_key(), random_key()
    keys = new_ticket_key_file(os.path.join(certs, "ticket.keys"), k1)
    s1 = os.path.join(certs, "s1.pem")
    with start_tls_server(certs) as srv:
        sclient_session(srv, "1.3", sess_out=s1).check_tls("1.3", "New")
        new_ticket_key_file(keys, k2, k1)
        srv.signal(signal.SIGHUP)
        wait_log(srv, r"\breload: tls certificate and keys loaded\b")
        sclient_session(srv, "1.3", sess_in=s1).check_tls("1.3", "Reused")
        new_ticket_key_file(keys, k2)
        srv.signal(signal.SIGHUP)
        wait_log(srv, r"\breload: tls certificate and keys loaded\b", count=2)
        sclient_session(srv, "1.3", sess_in=s1).check_tls("1.3", "New")


# ---------------------------------------------------------------- cases: load, config


@suite.case
def concurrent_tls_sessions():
    # 24 clients at once over both shards, TLS 1.2 and 1.3, 3 messages each.
    with start_tls_server() as srv:
        def one(i):
            version = "1.3" if i % 2 else "1.2"
            c = tls_client(srv, version)
            got = []
            for k in range(3):
                b = HDR + b"client %d message %d\r\n" % (i, k) + b"x" * (i * 997) + b"\r\n"
                got.append((c.send_message(b), b))
            c.quit()
            return got
        results = h.parallel([lambda i=i: one(i) for i in range(24)], 60)
        for got in results:
            for q, b in got:
                h.check_body(srv.spool, q, b)
    st = srv.stats()
    check_eq((st.get("tls_handshakes"), st.get("tls_failed")), ("24", "0"),
             "tls_handshakes, tls_failed in the exit stats")
    check_eq(h.spool_verify(srv.spool), 72, "verify count")


def run_mxring_config(cfg_text, tag):
    d = h.new_tmpdir(tag)
    conf = os.path.join(d, "mxring.conf")
    with open(conf, "w") as f:
        f.write(cfg_text % {"dir": d, "port": h.free_port()})
    try:
        p = subprocess.run([h.Paths.mxring, "-c", conf] + h.ROOT_OK, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=10, cwd=d)
    except subprocess.TimeoutExpired:
        raise h.Fail("mxring did not exit within 10 s for a bad TLS configuration")
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


BASE = ("listen = 127.0.0.1:%(port)d\nmyhostname = mx.test\naccept_domains = example.com\n"
        "spool_dir = %(dir)s/spool\nshards = 1\nwriters = 1\n")


@suite.case
def bad_tls_configuration():
    certs = make_certs()
    other = make_certs("mx2.test", tag="cert2")
    cert, key = os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem")
    cases = [
        ("may without a certificate", "tls_security_level = may\n",
         "mxring: key 'tls_security_level': 'may' needs tls_cert_file and tls_key_file"),
        ("may without a key", "tls_security_level = may\ntls_cert_file = %s\n" % cert,
         "mxring: key 'tls_security_level': 'may' needs tls_cert_file and tls_key_file"),
        ("a certificate file that does not exist",
         "tls_security_level = may\ntls_cert_file = %s.missing\ntls_key_file = %s\n"
         % (cert, key), "tls_cert_file %s.missing" % cert),
        ("a key that does not match",
         "tls_security_level = may\ntls_cert_file = %s\ntls_key_file = %s\n"
         % (cert, os.path.join(other, "key.pem")), "does not match"),
        ("a bad ticket key file",
         "tls_security_level = may\ntls_cert_file = %s\ntls_key_file = %s\n"
         "tls_ticket_key_file = %s\n" % (cert, key, cert), "a ticket key is 96 hex digits"),
        ("no cipher it knows",
         "tls_security_level = may\ntls_cert_file = %s\ntls_key_file = %s\n"
         "tls_ciphers = NO-SUCH-CIPHER\n" % (cert, key), "tls_ciphers"),
    ]
    for what, extra, want in cases:
        rc, out = run_mxring_config(BASE + extra, "badcfg")
        if "built without wolfSSL" in out and "needs tls_cert_file" not in want:
            continue
        check_eq(rc, 1, "exit status for %s (output %r)" % (what, out))
        check(want in out, "%s: the message does not say %r:\n%s" % (what, want, out))
        check("ready" not in out, "%s: mxring said ready:\n%s" % (what, out))


# ---------------------------------------------------------------- testssl.sh


# ---------------------------------------------------------------- cases: records opened in place


class BioClient:
    """A TLS client over ssl.MemoryBIO after STARTTLS: the test sees every
    ciphertext byte and chooses how (and whether intact) it is sent."""

    def __init__(self, srv, version="1.3"):
        self.c = srv.client()
        self.c.ehlo()
        self.c.cmd("STARTTLS", R_STARTTLS)
        self.sock = self.c.sock
        self.sock.settimeout(self.c.timeout)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client_ctx(version).wrap_bio(self.inc, self.out,
                                                server_hostname=h.HOSTNAME)
        self.plain = b""
        for _ in range(50):
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self._recv()
        self.flush()

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise h.Fail("the server closed the connection")
        self.inc.write(data)

    def flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def seal(self, data):
        """The ciphertext of data (not sent)."""
        self.tls.write(data)
        return self.out.read()

    def reply(self, final_re=r"^\d{3} "):
        """Reads decrypted lines up to one matching final_re; returns them."""
        lines = []
        for _ in range(1000):
            while b"\r\n" in self.plain:
                line, self.plain = self.plain.split(b"\r\n", 1)
                lines.append(line.decode())
                if re.match(final_re, lines[-1]):
                    return lines
            try:
                self.plain += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._recv()
        raise h.Fail("no reply: %r" % lines)

    def cmd(self, line, want=None):
        """Sends one command; checks the last line of its reply (any 250 when want is None)."""
        self.sock.sendall(self.seal(line.encode() + b"\r\n"))
        r = self.reply()
        if want is None:
            check(r[-1].startswith("250 "), "reply to %s: %r" % (line, r))
        else:
            check_eq(r[-1], want, "reply to %s" % line)
        return r

    def alert(self):
        """Reads until the TLS layer fails; returns the error (the server's alert)."""
        for _ in range(1000):
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._recv()
                continue
            except ssl.SSLError as e:
                return str(e)
            if not data:
                return "eof"
        raise h.Fail("no alert")

    def closed(self, timeout=5.0):
        """Whether the server closes the connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            for _ in range(100):
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False


@suite.case
def tampered_record_ends_session():
    # A record whose tag fails (one ciphertext bit flipped on the way) ends
    # the session before any of it reaches the SMTP engine, with the alert
    # RFC 8446 5.2 and RFC 5246 7.2.2 ask for, over TLS 1.3 and 1.2.
    with start_tls_server() as srv:
        for i, version in enumerate(("1.3", "1.2")):
            b = BioClient(srv, version)
            b.cmd("EHLO client.example.org")
            wire = bytearray(b.seal(b"NOOP\r\n"))
            wire[-3] ^= 0x01  # in the tag
            b.sock.sendall(bytes(wire))
            err = b.alert()
            check("bad record mac" in err.lower() or "bad_record_mac" in err.lower(),
                  "TLS %s: the client read %r, not a bad_record_mac alert" % (version, err))
            check(b.closed(), "the session went on after a forged record")
            lines = wait_log(srv, r"\btls error .*stage=read", count=i + 1)
            check("bad_record_mac" in lines[i] or not srv.in_place(version),
                  "tls error line: %s" % lines[i])
    st = srv.stats()
    check_eq((st.get("tls_in_place"), st.get("tls_failed")),
             (in_place_count(srv, "1.3", "1.2"), "2"), "tls_in_place, tls_failed")


@suite.case
def record_dribbled_across_receive_buffers():
    # One 15 KB record sent in 200-byte pieces: its bytes arrive in many
    # receive buffers, more than a record may pin, so they move into the
    # session (tls_held_bytes) and the record opens whole.
    body = HDR + b"".join(b"line %05d of a record sent in pieces\r\n" % i for i in range(380))
    with start_tls_server() as srv:
        b = BioClient(srv, "1.3")
        b.cmd("EHLO client.example.org")
        b.sock.sendall(b.seal(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt@example.com>\r\n"
                              b"DATA\r\n"))
        check_eq(b.reply(r"^354 ")[-3:], [h.R_MAIL_OK, h.R_RCPT_OK, h.R_DATA], "replies")
        wire = b.seal(body + b".\r\n")
        check(14000 < len(wire) < 16384 + 256, "one record: %d bytes" % len(wire))
        for i in range(0, len(wire), 200):
            b.sock.sendall(wire[i:i + 200])
            time.sleep(0.002)
        m = h.QUEUED_RE.match(b.reply()[-1])
        check(m, "no queued reply")
        b.cmd("QUIT", h.R_QUIT)
        h.check_body(srv.spool, m.group(1), body, "body of the dribbled record")
    st = srv.stats()
    check(int(st["tls_held_bytes"]) > 0 or not srv.in_place("1.3"),
          "tls_held_bytes %s" % st["tls_held_bytes"])
    check_eq(st.get("tls_failed"), "0", "tls_failed")


@suite.case
def partial_records_do_not_pin_the_ring():
    # 24 clients each send the first 12 KB of a 15 KB record and wait: each
    # partial record sits in a receive buffer, and there are only 16. When
    # the ring runs low the shard moves such records into their sessions
    # (tls_held_bytes), so buffers come back and every client, those that
    # found the ring empty included, gets its message through.
    n_clients = 24
    cfg = {"recv_buffer_size": "16k", "recv_buffers": 16, "body_flush_bytes": "16k",
           "shards": 1}
    with start_tls_server(**cfg) as srv:
        clients, wires = [], []
        for i in range(n_clients):
            b = BioClient(srv, "1.3" if i % 2 else "1.2")
            b.cmd("EHLO client.example.org")
            b.sock.sendall(b.seal(b"MAIL FROM:<sender@example.com>\r\n"
                                  b"RCPT TO:<rcpt@example.com>\r\nDATA\r\n"))
            check_eq(b.reply(r"^354 ")[-1], h.R_DATA, "reply to DATA")
            body = HDR + b"".join(b"client %02d line %04d of a partial record\r\n" % (i, k)
                                  for k in range(340))
            wire = b.seal(body + b".\r\n")
            b.sock.sendall(wire[:12000])
            clients.append((b, body))
            wires.append(wire)
        time.sleep(0.5)

        def finish(i):
            b, body = clients[i]
            b.sock.sendall(wires[i][12000:])
            m = h.QUEUED_RE.match(b.reply()[-1])
            check(m, "client %d: no queued reply" % i)
            b.cmd("QUIT", h.R_QUIT)
            return m.group(1), body
        results = h.parallel([lambda i=i: finish(i) for i in range(n_clients)], timeout=60)
    for qid, body in results[::4]:
        h.check_body(srv.spool, qid, body)
    check_eq(h.spool_verify(srv.spool), n_clients, "verify count")
    st = srv.stats()
    check(int(st["tls_held_bytes"]) >= 12000 or not srv.in_place("1.3"),
          "tls_held_bytes %s" % st["tls_held_bytes"])


@suite.case
def close_notify_from_client():
    # The client ends TLS (close_notify) without QUIT: a clean end, no error.
    with start_tls_server() as srv:
        b = BioClient(srv, "1.3")
        b.cmd("EHLO client.example.org")
        try:
            b.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        b.flush()
        check(b.closed(), "the server kept the connection after close_notify")
        session_ends(srv, 1)
    check_eq(srv.stats().get("tls_failed"), "0", "tls_failed")


@suite.case
def key_update_from_openssl_client():
    # RFC 8446 4.6.3: s_client's "K" sends a KeyUpdate that asks for ours,
    # "k" one that does not. The session goes on under the new keys both
    # ways: a message sent after them is stored, and every reply decrypts.
    exe = h.require_program("openssl")
    with start_tls_server() as srv:
        argv = [exe, "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % srv.port,
                "-servername", h.HOSTNAME, "-crlf", "-tls1_3"]
        # Lower-case commands: s_client takes a line starting with K, k, Q or
        # R as its own command.
        lines = ["ehlo client.example.org", "K", "mail from:<sender@example.com>",
                 "rcpt to:<rcpt@example.com>", "data", "Subject: key update", "",
                 "sent after a key update", ".", "k", "noop", "quit"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            for l in lines:
                p.stdin.write(l.encode() + b"\n")
                p.stdin.flush()
                time.sleep(0.2)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        out = out.decode("utf-8", "replace")
        show = "--- stdout:\n%s\n--- stderr:\n%s" % (out, err.decode("utf-8", "replace"))
        check_eq(show.count("KEYUPDATE"), 2, "KeyUpdates s_client sent\n" + show)
        replies = [l for l in out.splitlines() if h.REPLY_LINE_RE.match(l)]
        qid = [h.QUEUED_RE.match(r).group(1) for r in replies if h.QUEUED_RE.match(r)]
        check_eq(len(qid), 1, "queued replies\n" + show)
        check_eq(replies[-2:], [h.R_OK, h.R_QUIT], "the last replies\n" + show)
        h.check_body(srv.spool, qid[0], b"Subject: key update\r\n\r\nsent after a key update\r\n",
                     "message sent after the key update")
    st = srv.stats()
    check_eq((st.get("tls_in_place"), st.get("tls_failed")), (in_place_count(srv, "1.3"), "0"),
             "tls_in_place, tls_failed")


@suite.case
def testssl():
    exe = h.require_program("testssl")
    # A certificate for the name testssl is given (127.0.0.1), so that only
    # the two findings of self-signed certificates remain (not cert_trust).
    with start_tls_server(make_certs("127.0.0.1")) as srv:
        jf = os.path.join(srv.tmp, "testssl.json")
        # testssl itself now and then ends without its JSON on a loaded
        # machine (seen once: exit 8, output complete): one more run then.
        for attempt in range(2):
            p = h.run_cmd([exe, "--quiet", "--warnings", "off", "--jsonfile", jf, "-t",
                           "smtp", srv.hostport()], TESTSSL_TIMEOUT_S, cwd=srv.tmp)
            out = p.stdout.decode("utf-8", "replace")
            if os.path.exists(jf):
                break
            print("# testssl wrote no JSON (exit %d); running it again" % p.returncode)
        check(os.path.exists(jf), "testssl wrote no JSON file (exit %d):\n%s"
              % (p.returncode, out[-4000:]))
        with open(jf) as f:
            findings = json.load(f)
        check(isinstance(findings, list) and len(findings) > 20,
              "testssl JSON has %r findings" % (len(findings) if isinstance(findings, list)
                                                else findings))
        bad, excused = [], []
        for f in findings:
            if f.get("severity") in ("HIGH", "CRITICAL"):
                (excused if f.get("id") in TESTSSL_ALLOWED else bad).append(f)
        for f in excused:
            print("# testssl finding excused (self-signed test certificate): %s %s: %s"
                  % (f.get("severity"), f.get("id"), f.get("finding")))
        for f in findings:
            if f.get("severity") in ("MEDIUM", "LOW", "WARN"):
                print("# testssl finding (not failing): %s %s: %s"
                      % (f.get("severity"), f.get("id"), f.get("finding")))
        check(not bad, "testssl findings of severity HIGH or CRITICAL:\n%s\n--- stdout tail:\n%s"
              % ("\n".join("  %s %s: %s" % (f.get("severity"), f.get("id"), f.get("finding"))
                           for f in bad), out[-3000:]))
        by_id = {f.get("id"): f for f in findings}
        for k in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            check(by_id.get(k, {}).get("finding", "").startswith("not offered"),
                  "%s: %r" % (k, by_id.get(k)))
        # What Postfix 3.7 as configured here drew (issue 3), by name.
        check_eq((by_id.get("cipherlist_aNULL", {}).get("severity"),
                  by_id.get("cipher_order", {}).get("severity")), ("OK", "OK"),
                 "severity of cipherlist_aNULL and cipher_order")
        check(srv.alive(), "mxring died under testssl")


if __name__ == "__main__":
    suite.main()
