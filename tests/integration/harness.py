"""
harness.py - start/stop the real mxring binary and talk SMTP to it.

Used by every tests/integration/test_*.py. Python 3 standard library only.

Contract:
  - Server(...) writes a temporary config (spool in a temporary folder,
    myhostname = mx.test, accept_domains = example.com, shards 2, writers 1),
    picks a free loopback port, starts build/core/mxring in the foreground,
    waits up to 10 s for a log line containing "ready", and on stop() sends
    SIGTERM and requires exit status 0 within a deadline (then SIGKILL and
    a failure).
  - Client is a raw socket client: it sends bytes as given and reads reply
    lines with a deadline on every wait. Every line it sends and receives is
    kept in a transcript that is printed when a case fails.
  - Suite runs cases, prints TAP-like lines and exits 0 (all passed or
    skipped), 1 (a failure) or 77 (everything skipped: a client is missing).
  - Everything listens and connects on 127.0.0.1 / ::1 only, and every wait
    is bounded, so a test always ends by itself.

Paths of the binaries: --mxring PATH and --spool-tool PATH on the command
line (meson passes them), else $MXRING and $MXRING_SPOOL, else build/ in the
repository. A path given explicitly that does not exist is a failure; a
default that does not exist means "not built yet" and the suite is skipped.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HOSTNAME = "mx.test"
DOMAIN = "example.com"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 20.0
REPLY_TIMEOUT_S = 10.0

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Exact replies of the interface (%h = myhostname), asserted by the tests.
R_GREETING = "220 %s ESMTP mxring" % HOSTNAME
R_HELO = "250 %s" % HOSTNAME
R_MAIL_OK = "250 2.1.0 Ok"
R_RCPT_OK = "250 2.1.5 Ok"
R_DATA = "354 End data with <CR><LF>.<CR><LF>"
R_OK = "250 2.0.0 Ok"
R_QUIT = "221 2.0.0 Bye"
R_VRFY = "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
R_UNKNOWN = "500 5.5.2 Error: command not recognized"
R_TOO_LONG = "500 5.5.2 Error: line too long"
R_BAD_CHAR = "500 5.5.2 Error: invalid character in command"
R_NEED_HELO = "503 5.5.1 Error: send HELO/EHLO first"
R_NESTED = "503 5.5.1 Error: nested MAIL command"
R_NEED_MAIL = "503 5.5.1 Error: need MAIL command"
R_NEED_RCPT = "503 5.5.1 Error: need RCPT command"
R_NO_VALID_RCPT = "554 5.5.1 Error: no valid recipients"
R_MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address>"
R_RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
R_BAD_SENDER = "501 5.1.7 Bad sender address syntax"
R_BAD_RCPT = "501 5.1.3 Bad recipient address syntax"
R_SIZE_DECLARED = "552 5.3.4 Message size exceeds fixed limit"
R_RELAY = "550 5.7.1 Relay access denied"
R_TOO_MANY_RCPTS = "452 4.5.3 Error: too many recipients"
R_TOO_BIG = "552 5.3.4 Error: message file too big"
R_BARE_LF = "550 5.5.2 Error: bare <LF> received"
R_TOO_MANY_ERRORS = "421 4.7.0 %s Error: too many errors" % HOSTNAME
R_TIMEOUT = "421 4.4.2 %s Error: timeout exceeded" % HOSTNAME
R_SHUTDOWN = "421 4.3.2 %s Service shutting down" % HOSTNAME
R_NOT_IMPL = "502 5.5.1 Error: command not implemented"
R_NEED_UTF8 = "553 5.6.7 Error: non-ASCII address requires SMTPUTF8"

QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]{16})$")
CHUNK_RE = re.compile(r"^250 2\.0\.0 Ok: (\d+) octets received$")
REPLY_LINE_RE = re.compile(r"^[2-5][0-9][0-9][ -]")


def r_unsupported(name):
    return "555 5.5.4 Unsupported option: %s" % name


def r_chunk(n):
    return "250 2.0.0 Ok: %d octets received" % n


# ---------------------------------------------------------------- failures


class Fail(Exception):
    """A test assertion failed; the message says what and why."""


class Skip(Exception):
    """A case cannot run here (a client program is missing)."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def check_eq(got, want, what):
    if got != want:
        raise Fail("%s:\n  want %s\n  got  %s" % (what, _show(want), _show(got)))


def _show(v, limit=400):
    s = repr(v)
    if len(s) > limit:
        s = s[:limit] + "... (%d chars)" % len(s)
    return s


def require_program(path):
    """Skip the current case when an outside client program is not installed."""
    if shutil.which(path) is None:
        raise Skip("%s not installed" % path)
    return shutil.which(path)


# ---------------------------------------------------------------- paths


# -o allow_root=yes for a mxring started straight from a test (not by Server)
# while the tests run as root.
ROOT_OK = ["-o", "allow_root=yes"] if os.geteuid() == 0 else []


class Paths:
    mxring = None
    spool_tool = None
    explicit = False


def take_bench_arg(argv):
    """Removes --bench PATH from argv (parse_args reads the rest); returns the
    path of mxring-bench: that, else $MXRING_BENCH, else build/ in the repository."""
    path = os.environ.get("MXRING_BENCH") or os.path.join(REPO, "build/bench/mxring-bench")
    if "--bench" in argv:
        i = argv.index("--bench")
        path = argv[i + 1]
        del argv[i:i + 2]
    return os.path.abspath(path)


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--mxring", default=os.environ.get("MXRING"))
    ap.add_argument("--spool-tool", default=os.environ.get("MXRING_SPOOL"))
    ap.add_argument("-k", dest="only", action="append", default=[],
                    help="run only cases whose name contains this (repeatable)")
    ap.add_argument("-x", dest="exclude", action="append", default=[],
                    help="leave out cases whose name contains this (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep temporary folders")
    ap.add_argument("-v", dest="verbose", action="store_true",
                    help="print transcripts and server logs of passing cases too")
    args = ap.parse_args(argv)
    Paths.explicit = bool(args.mxring)
    Paths.mxring = os.path.abspath(args.mxring or os.path.join(REPO, "build/core/mxring"))
    Paths.spool_tool = os.path.abspath(
        args.spool_tool or os.path.join(REPO, "build/tools/mxring-spool"))
    return args


# ---------------------------------------------------------------- bookkeeping
# Clients and servers made during the current case, for the failure report.

_current = {"clients": [], "servers": [], "tmpdirs": []}
_shared = []
KEEP_TMP = False


def _track(kind, obj):
    _current[kind].append(obj)


def new_tmpdir(tag="case"):
    d = tempfile.mkdtemp(prefix="mxring-it-%s-" % tag)
    _track("tmpdirs", d)
    return d


# ---------------------------------------------------------------- ports


def free_port(host="127.0.0.1"):
    """A port nothing listens on right now (the server may race; start retries)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- server


class Server:
    """
    One mxring process. cfg: extra/overriding config keys (value None drops
    a default key). spool_dir: reuse a spool (restart tests). ipv6: also
    listen on [::1]:port6.
    """

    def __init__(self, cfg=None, spool_dir=None, ipv6=False, overrides=None, tag="srv",
                 shared=False, env=None, preexec_fn=None, mxring=None):
        # A shared server outlives one case: it is not killed or cleaned up at
        # the end of the case that started it (stop it in a last case).
        self.shared = shared
        if shared:
            self.tmp = tempfile.mkdtemp(prefix="mxring-it-%s-" % tag)
            _shared.append(self)
        else:
            self.tmp = new_tmpdir(tag)
        self.spool = spool_dir or os.path.join(self.tmp, "spool")
        self.conf_path = os.path.join(self.tmp, "mxring.conf")
        self.log_path = os.path.join(self.tmp, "mxring.log")
        self.extra = dict(cfg or {})
        self.overrides = list(overrides or [])
        self.ipv6 = ipv6
        # env: variables added to mxring's environment; preexec_fn: run in
        # the child before mxring starts (e.g. to lower a resource limit).
        self.env = dict(os.environ, **env) if env else None
        self.preexec_fn = preexec_fn
        self.mxring = mxring  # another binary than Paths.mxring (a copy)
        self.proc = None
        self.port = None
        self.port6 = None
        self.exit_code = None
        self._logf = None
        self.terms_sent = 0     # SIGTERMs this harness sent (to spot outside ones)
        if not shared:
            _track("servers", self)

    # -- config

    def config_text(self):
        listen = ["127.0.0.1:%d" % self.port]
        if self.ipv6:
            listen.append("[::1]:%d" % self.port6)
        keys = {
            "listen": ", ".join(listen),
            "myhostname": HOSTNAME,
            "accept_domains": DOMAIN,
            "spool_dir": self.spool,
            "shards": "2",
            "writers": "1",
            "shutdown_timeout": "5",
            # The tests run as root on CI: allowed there, as on any test
            # machine. The privilege tests set user (and this to None).
            "allow_root": "yes" if os.geteuid() == 0 else None,
        }
        keys.update(self.extra)
        lines = ["# written by tests/integration/harness.py"]
        for k, v in keys.items():
            if v is not None:
                lines.append("%s = %s" % (k, v))
        return "\n".join(lines) + "\n"

    # -- start / stop

    def start(self):
        binary = self.mxring or Paths.mxring
        if not os.path.exists(binary):
            raise Fail("mxring binary not found at %s" % binary)
        last = None
        for attempt in range(3):
            self.port = free_port("127.0.0.1")
            if self.ipv6:
                self.port6 = free_port("::1")
            with open(self.conf_path, "w") as f:
                f.write(self.config_text())
            try:
                self._spawn()
                return self
            except Fail as e:
                last = e
                # Only a lost race for the port is worth another try.
                if "in use" not in self.log().lower():
                    raise
        raise last

    def _spawn(self):
        if self._logf:
            self._logf.close()
        self._logf = open(self.log_path, "ab")
        argv = [self.mxring or Paths.mxring, "-c", self.conf_path]
        for o in self.overrides:
            argv += ["-o", o]
        self.log_offset = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=self._logf, cwd=self.tmp, env=self.env,
                                     preexec_fn=self.preexec_fn)
        self.exit_code = None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if "ready" in self.log(since_start=True):
                return
            rc = self.proc.poll()
            if rc is not None:
                self.exit_code = rc
                raise Fail("mxring exited with %d before logging 'ready'; log:\n%s"
                           % (rc, self.log_tail()))
            time.sleep(0.02)
        self.kill()
        raise Fail("mxring did not log 'ready' within %.0f s; log:\n%s"
                   % (READY_TIMEOUT_S, self.log_tail()))

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            if sig == signal.SIGTERM:
                self.terms_sent += 1
            self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_TIMEOUT_S):
        """Waits for exit; returns the exit status, or None after the deadline."""
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.exit_code

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM; requires exit 0 within timeout (else SIGKILL and Fail)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.terms_sent += 1
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill()
            raise Fail("mxring did not exit within %.0f s of SIGTERM (killed); log:\n%s"
                       % (timeout, self.log_tail()))
        self.proc = None
        self.check_log_clean()
        if rc != 0:
            raise Fail("mxring exited with status %d after SIGTERM (want 0); log:\n%s"
                       % (rc, self.log_tail()))

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.exit_code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None

    def restart(self):
        """Stops (asserting exit 0) and starts again on the same port and spool."""
        self.stop()
        self._spawn()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        if et is None:
            self.stop()
        else:
            try:
                self.stop()
            except Fail as e:
                sys.stdout.write("# (while unwinding) %s\n" % str(e).splitlines()[0])
        if self._logf:
            self._logf.close()
            self._logf = None
        return False

    # -- logs

    def log(self, since_start=False):
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        lines = self.log().splitlines()
        return "\n".join("  | " + l for l in lines[-n:])

    def wait_log(self, pattern, count=1, timeout=5.0):
        """Lines of the log matching pattern; waits (bounded) until there are count.

        Shards write their log lines in batches, so a line about a connection
        can reach the file a little after the client has seen it close."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [l for l in self.log().splitlines() if rx.search(l)]
            if len(lines) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        check(len(lines) >= count, "want %d log line(s) matching %r within %.0f s, found %d; log:\n%s"
              % (count, pattern, timeout, len(lines), self.log_tail()))
        return lines

    def stats(self):
        """key=value pairs of the last 'stats' log line (written at exit; the
        periodic 'stats live' lines are left out)."""
        lines = [l for l in self.log().splitlines()
                 if re.search(r"\bstats\b", l) and not re.search(r"\bstats live\b", l)]
        check(lines, "no 'stats' line in the log:\n%s" % self.log_tail())
        return dict(re.findall(r"\b([a-z_0-9]+)=(\S+)", lines[-1]))

    def stats_live(self):
        """The periodic 'stats live' lines (stats_interval): a list of dicts of
        their key=value pairs, each with 't', the line's time in seconds."""
        out = []
        for l in self.log().splitlines():
            m = re.match(r"^\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d\.\d+)Z mxring: stats live ", l)
            if m:
                d = dict(re.findall(r"\b([a-z_0-9]+)=(\S+)", l))
                d["t"] = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
                out.append(d)
        return out

    def outside_signal_note(self):
        """A note when the log shows more shutdowns than SIGTERMs this harness sent."""
        stops = len(re.findall(r"mxring: stopping\b", self.log()))
        if stops > self.terms_sent:
            return ("NOTE: mxring logged 'stopping' %d time(s) but the harness sent %d SIGTERM: "
                    "another process signalled it (e.g. pkill/killall by name). A failure "
                    "here is likely not a server bug." % (stops, self.terms_sent))
        return None

    def check_log_clean(self):
        bad = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Assertion",
               "assertion", "Segmentation", "ASSERT")
        for line in self.log().splitlines():
            if any(b in line for b in bad):
                raise Fail("mxring log shows a crash/sanitizer report:\n%s" % self.log_tail())

    def queue_ids_logged(self, known):
        """
        Distinct queue ids in the per-message log lines. The key is learned
        from the line naming the known id (e.g. qid=ID); empty set when the
        log names it under no key.
        """
        lines = self.log().splitlines()
        pat = re.compile(r"\b([A-Za-z_]+)=<?%s\b" % re.escape(known))
        first = next((l for l in lines if pat.search(l)), None)
        if first is None:
            return set()
        key = pat.search(first).group(1)
        # Only lines of the same kind (same words before the key: "queued").
        kind = first[:pat.search(first).start()].split("mxring:")[-1].strip()
        ids = set()
        for l in lines:
            m = re.search(r"\b%s=<?([0-9A-Za-z]{16})\b" % key, l)
            if m and l[:m.start()].split("mxring:")[-1].strip() == kind:
                ids.add(m.group(1))
        return ids

    # -- clients

    def client(self, ipv6=False, timeout=REPLY_TIMEOUT_S, greet=True, source=None):
        c = Client("::1" if ipv6 else "127.0.0.1", self.port6 if ipv6 else self.port,
                   timeout=timeout, source=source)
        if greet:
            c.expect(R_GREETING)
        return c

    def hostport(self):
        return "127.0.0.1:%d" % self.port


class TLSServer(Server):
    """A Server with TLS settings; skips the case when mxring was built without wolfSSL."""

    def start(self):
        try:
            return super().start()
        except Fail:
            if "built without wolfSSL" in self.log():
                raise Skip("mxring was built without wolfSSL")
            raise

    def in_place(self, version):
        """Whether this build opens TLS `version` ("1.3"/"1.2") records itself
        (tls/record.c) rather than through wolfSSL_read: the ready line's
        tls_records= (in-place, in-place-tls13, wolfssl)."""
        m = re.search(r"\bready .*\btls_records=(\S+)", self.log(since_start=True))
        mode = m.group(1) if m else "wolfssl"
        return mode == "in-place" or (mode == "in-place-tls13" and version == "1.3")


# ---------------------------------------------------------------- client


class Closed(Fail):
    pass


class Client:
    """Raw SMTP client: bytes out as given, reply lines in, every wait bounded.
    source: a local address to connect from (e.g. 127.0.0.2; any of
    127.0.0.0/8 works on Linux), else the kernel picks (127.0.0.1)."""

    def __init__(self, host, port, timeout=REPLY_TIMEOUT_S, source=None):
        self.timeout = timeout
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.transcript = []
        self.name = "%s:%d" % (host, port)
        if source:
            self.name += " from %s" % source
        _track("clients", self)

    def _note(self, who, data):
        if len(self.transcript) > 4000:
            return
        text = data.decode("latin-1")
        if len(text) > 300:
            text = text[:300] + "...(%d bytes)" % len(data)
        self.transcript.append("%s: %s" % (who, text.encode("unicode_escape").decode()))

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self._note("C", data)
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Closed("send failed (%s) after %d bytes" % (e, len(data)))

    def send_slowly(self, data, piece=1, pause=0.002):
        """Sends data in small writes, so it crosses many receive buffers."""
        for i in range(0, len(data), piece):
            self.send(data[i:i + piece])
            time.sleep(pause)

    def line(self, timeout=None):
        """One reply line as str, without CRLF. Requires CRLF line ends."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            if self.eof:
                raise Closed("connection closed by server (pending %r)" % self.buf)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("no reply line within %.1f s (pending %r)"
                           % (timeout or self.timeout, self.buf))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\n")
        self._note("S", raw + b"\n")
        check(raw.endswith(b"\r"), "reply line not ended by CRLF: %r" % raw)
        return raw[:-1].decode("utf-8", "replace")

    def reply(self, timeout=None):
        """A whole reply: list of lines (multi-line replies use 'ddd-')."""
        lines = []
        while True:
            l = self.line(timeout)
            check(REPLY_LINE_RE.match(l) is not None, "malformed reply line %r" % l)
            if lines:
                check(l[:3] == lines[0][:3], "reply code changed inside a multi-line "
                      "reply: %r after %r" % (l, lines))
            lines.append(l)
            if l[3] == " ":
                return lines

    def reply1(self, timeout=None):
        """A one-line reply as str (fails on a multi-line one)."""
        r = self.reply(timeout)
        check(len(r) == 1, "expected a one-line reply, got %r" % r)
        return r[0]

    def expect(self, want, timeout=None):
        """Reads one reply and requires it to equal want (str, or list of lines)."""
        r = self.reply(timeout)
        if isinstance(want, str):
            check_eq(r, [want], "reply")
            return r[0]
        check_eq(r, list(want), "reply")
        return r

    def expect_re(self, pattern, timeout=None):
        r = self.reply1(timeout)
        m = re.match(pattern, r)
        check(m is not None, "reply %r does not match %r" % (r, pattern))
        return m

    def cmd(self, line, want=None, timeout=None):
        """Sends line + CRLF; returns the reply (checked against want when given)."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        if want is None:
            return self.reply(timeout)
        return self.expect(want, timeout)

    def queued(self, timeout=None):
        """Reads a '250 2.0.0 Ok: queued as QID' reply; returns QID."""
        r = self.reply1(timeout)
        m = QUEUED_RE.match(r)
        check(m is not None, "want '250 2.0.0 Ok: queued as <QID>', got %r" % r)
        return m.group(1)

    def ehlo(self, name="client.example.org"):
        r = self.cmd("EHLO " + name)
        check(r[0] == "250-" + HOSTNAME or r == ["250 " + HOSTNAME],
              "EHLO reply starts %r" % r[0])
        check(r[-1] == "250 ENHANCEDSTATUSCODES", "EHLO reply ends %r" % r[-1])
        return r

    def send_message(self, body, mail_from="<sender@example.com>",
                     rcpts=("<rcpt@example.com>",), stuffed=False, mail_params=""):
        """
        MAIL, RCPT..., DATA, body, '.' one command at a time. body is the raw
        message; it is dot-stuffed here unless stuffed=True. Returns the QID.
        """
        self.cmd("MAIL FROM:%s%s" % (mail_from, mail_params), R_MAIL_OK)
        for r in rcpts:
            self.cmd("RCPT TO:%s" % r, R_RCPT_OK)
        self.cmd("DATA", R_DATA)
        wire = body if stuffed else dot_stuff(body)
        if not wire.endswith(b"\r\n"):
            wire += b"\r\n"
        self.send(wire + b".\r\n")
        return self.queued()

    def expect_no_reply(self, wait=0.3):
        """Nothing more arrives within wait seconds (connection may stay open)."""
        if self.buf:
            raise Fail("unexpected extra data from server: %r" % self.buf)
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        except ConnectionResetError:
            chunk = b""
        if chunk:
            self._note("S", chunk)
            raise Fail("unexpected extra data from server: %r" % chunk)
        self.eof = True

    def expect_closed(self, timeout=None):
        """The server closes the connection (without sending anything more)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        if self.buf:
            raise Fail("data before close: %r" % self.buf)
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("server did not close the connection within %.1f s"
                           % (timeout or self.timeout))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                self._note("S", chunk)
                raise Fail("data before close: %r" % chunk)
            self.eof = True

    def quit(self):
        self.cmd("QUIT", R_QUIT)
        self.expect_closed()
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- message bytes


def dot_stuff(body):
    """What a client puts on the wire: a '.' added before each line starting with '.'."""
    out = []
    for line in body.split(b"\r\n"):
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out)


def dot_unstuff(wire):
    """
    The message a server must store for wire (DATA content up to, not
    including, the final '.<CR><LF>'): lines are CRLF-delimited; a leading
    '.' is removed from each line that has one.
    """
    out = []
    for line in wire.split(b"\r\n"):
        out.append(line[1:] if line.startswith(b".") else line)
    return b"\r\n".join(out)


# ---------------------------------------------------------------- spool tool


def spool_tool(*args, timeout=120, check_rc=True):
    """Runs mxring-spool ARGS; returns (rc, stdout bytes, stderr bytes)."""
    if not os.path.exists(Paths.spool_tool):
        raise Fail("mxring-spool not found at %s" % Paths.spool_tool)
    try:
        p = subprocess.run([Paths.spool_tool] + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Fail("mxring-spool %s did not finish within %d s" % (" ".join(args), timeout))
    if check_rc and p.returncode != 0:
        why = ""
        if p.returncode < 0:
            why = (" (killed by signal %d, which this harness never sends to mxring-spool: "
                   "another process signalled it, e.g. pkill by name)" % -p.returncode)
        raise Fail("mxring-spool %s exited %d%s\nstdout: %s\nstderr: %s"
                   % (" ".join(args), p.returncode, why, _show(p.stdout, 2000),
                      _show(p.stderr, 2000)))
    return p.returncode, p.stdout, p.stderr


def spool_verify(spool, expect_ok=True):
    """`mxring-spool verify`; returns the N of its 'N messages' line."""
    rc, out, err = spool_tool("verify", spool, check_rc=expect_ok)
    text = out.decode("utf-8", "replace")
    m = re.search(r"^(\d+) messages?$", text, re.M)
    check(m is not None, "verify printed no 'N messages' line:\n%s%s"
          % (text, err.decode("utf-8", "replace")))
    return int(m.group(1))


def _list_entry(line):
    """qid, from, rcpts, size out of one `list` line (other keys may sit between)."""
    q = re.search(r"\bqid=([0-9A-Za-z]{16})\b", line)
    f = re.search(r"\bfrom=<(.*)> ", line + " ")
    r = re.search(r"\brcpts=(\d+)\b", line)
    z = re.search(r"\bsize=(\d+)\b", line)
    check(q and f and r and z, "unexpected `mxring-spool list` line %r" % line)
    return {"qid": q.group(1), "from": f.group(1).split("> ")[0], "rcpts": int(r.group(1)),
            "size": int(z.group(1)), "line": line}


def spool_list(spool):
    """`mxring-spool list`: list of dicts qid, from, rcpts, size (in spool order)."""
    _, out, _ = spool_tool("list", spool)
    return [_list_entry(l) for l in out.decode("utf-8", "replace").splitlines() if l.strip()]


def spool_body(spool, qid):
    """`mxring-spool cat DIR QID --body`: the body bytes as the client sent them."""
    _, out, _ = spool_tool("cat", spool, qid, "--body")
    return out


def spool_raw(spool, qid):
    _, out, _ = spool_tool("cat", spool, qid)
    return out


def check_body(spool, qid, want, what="stored body"):
    got = spool_body(spool, qid)
    if got != want:
        i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                 min(len(got), len(want)))
        raise Fail("%s of %s differs at byte %d (got %d bytes, want %d):\n  want ...%r\n"
                   "  got  ...%r" % (what, qid, i, len(got), len(want),
                                     want[max(0, i - 40):i + 60], got[max(0, i - 40):i + 60]))


# ---------------------------------------------------------------- running


def run_cmd(argv, timeout, input=None, cwd=None):
    """Runs an outside program with a deadline; returns CompletedProcess."""
    try:
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                              cwd=cwd, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise Fail("%s did not finish within %d s\nstdout: %s\nstderr: %s"
                   % (" ".join(argv), timeout, _show(e.stdout, 2000), _show(e.stderr, 2000)))


class Suite:
    """Cases run in order; TAP-like output; exit 0 / 1 / 77."""

    def __init__(self, name):
        self.name = name
        self.cases = []

    def case(self, fn):
        self.cases.append(fn)
        return fn

    def main(self, argv=None):
        global KEEP_TMP
        args = parse_args(argv)
        KEEP_TMP = args.keep
        if not os.path.exists(Paths.mxring):
            if Paths.explicit:
                print("Bail out! mxring not found at %s" % Paths.mxring)
                sys.exit(1)
            print("1..0 # SKIP mxring not built (%s)" % Paths.mxring)
            sys.exit(77)
        cases = [c for c in self.cases
                 if (not args.only or any(o in c.__name__ for o in args.only))
                 and not any(x in c.__name__ for x in args.exclude)]
        print("1..%d" % len(cases))
        failed = skipped = 0
        for n, fn in enumerate(cases, 1):
            _current["clients"], _current["servers"], _current["tmpdirs"] = [], [], []
            t0 = time.monotonic()
            status, detail = "ok", ""
            try:
                fn()
            except Skip as e:
                status, detail = "skip", str(e)
            except Fail as e:
                status, detail = "fail", str(e)
            except Exception:
                status, detail = "fail", traceback.format_exc()
            finally:
                for c in _current["clients"]:
                    c.close()
                for s in _current["servers"]:
                    if s.alive():
                        s.kill()
                        if status == "ok":
                            status, detail = "fail", "server left running by the case"
            dt = time.monotonic() - t0
            name = fn.__name__
            if status == "ok":
                print("ok %d - %s (%.2f s)" % (n, name, dt))
            elif status == "skip":
                skipped += 1
                print("ok %d - %s # SKIP %s" % (n, name, detail))
            else:
                failed += 1
                print("not ok %d - %s (%.2f s)" % (n, name, dt))
            if status == "fail" or args.verbose:
                self._report(detail)
            if status != "fail" and not KEEP_TMP:
                for d in _current["tmpdirs"]:
                    shutil.rmtree(d, ignore_errors=True)
            elif _current["tmpdirs"]:
                print("# kept: %s" % " ".join(_current["tmpdirs"]))
            sys.stdout.flush()
        for s in _shared:
            if s.alive():
                s.kill()
                failed += 1
                print("not ok - shared server %s was left running (killed)" % s.tmp)
            if failed or KEEP_TMP:
                print("# kept: %s" % s.tmp)
            else:
                shutil.rmtree(s.tmp, ignore_errors=True)
        print("# %s: %d passed, %d failed, %d skipped"
              % (self.name, len(cases) - failed - skipped, failed, skipped))
        if failed:
            sys.exit(1)
        if cases and skipped == len(cases):
            sys.exit(77)
        sys.exit(0)

    @staticmethod
    def _report(detail):
        for l in detail.splitlines():
            print("#   " + l)
        for c in _current["clients"]:
            if c.transcript:
                print("#   transcript %s:" % c.name)
                for l in c.transcript[-60:]:
                    print("#     " + l)
        for s in _current["servers"] + _shared:
            note = s.outside_signal_note()
            if note:
                print("#   " + note)
            print("#   server log %s:" % s.log_path)
            for l in s.log().splitlines()[-30:]:
                print("#     | " + l)


def parallel(fns, timeout):
    """Runs callables in threads; returns their results; re-raises the first error."""
    results = [None] * len(fns)
    errors = []

    def wrap(i, f):
        try:
            results[i] = f()
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(i, f), daemon=True) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0, deadline - time.monotonic()))
    if any(t.is_alive() for t in ts):
        raise Fail("threads still running after %d s" % timeout)
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------- capture peer


class CaptureServer:
    """
    A tiny SMTP server on 127.0.0.1 that records the raw DATA bytes of each
    message (as sent on the wire, dot-stuffed, without the final
    '.<CR><LF>'). Used to learn exactly what an outside client sends, so the
    spool can be compared with it. Every wait is bounded; stop() ends it.
    """

    def __init__(self):
        self.messages = []      # list of dicts: helo, mail, rcpts, wire
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._session, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _session(self, conn):
        conn.settimeout(30)
        buf = b""
        env = {"helo": None, "mail": None, "rcpts": []}

        def out(s):
            conn.sendall(s.encode() + b"\r\n")

        try:
            out("220 capture ESMTP")
            while self.running:
                while b"\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                line, _, buf = buf.partition(b"\r\n")
                verb = line[:4].upper()
                if verb == b"EHLO":
                    env["helo"] = line[5:]
                    conn.sendall(b"250-capture\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 b"250-SIZE 1000000000\r\n250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"HELO":
                    env["helo"] = line[5:]
                    out("250 capture")
                elif verb == b"MAIL":
                    env["mail"], env["rcpts"] = line, []
                    out("250 2.1.0 Ok")
                elif verb == b"RCPT":
                    env["rcpts"].append(line)
                    out("250 2.1.5 Ok")
                elif verb == b"DATA":
                    out("354 End data with <CR><LF>.<CR><LF>")
                    data = b"\r\n" + buf
                    while b"\r\n.\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    wire, _, buf = data.partition(b"\r\n.\r\n")
                    wire = wire[2:] + b"\r\n" if wire != b"" else b""
                    with self.lock:
                        self.messages.append(dict(env, wire=wire))
                    out("250 2.0.0 Ok: queued as CAPTURE%09d" % len(self.messages))
                elif verb == b"QUIT":
                    out("221 2.0.0 Bye")
                    return
                else:
                    out("250 2.0.0 Ok")
        except OSError:
            return
        finally:
            conn.close()

    def stop(self):
        self.running = False
        self.sock.close()
        for t in self.threads:
            t.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()
        return False


def mask_lines(body, prefixes=(b"Date:", b"Message-Id:", b"Message-ID:")):
    """body with the value of each header line starting with a prefix blanked."""
    out = []
    for line in body.split(b"\r\n"):
        for p in prefixes:
            if line.startswith(p):
                line = p + b" *"
        out.append(line)
    return b"\r\n".join(out)
