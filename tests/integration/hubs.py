#!/usr/bin/env python3
"""
hubs.py - mail hubs for the relay tests: the servers mxring hands accepted
mail on to, started privately on loopback. Python 3 standard library only.

  PostfixHub   a throw-away Postfix instance (root only): its smtpd on
               127.0.0.1:port accepts mail for any user of the listed
               domains and its virtual(8) agent stores each message (one
               file per recipient) in a Maildir under the work folder.
  DovecotLmtp  Debian's Dovecot with a private configuration: LMTP on
               127.0.0.1:port and/or a unix socket, a passwd-file of users
               with Maildirs under the work folder; an unknown user gets
               "550 5.1.1 ... User doesn't exist" at RCPT.
  ScriptedHub  an SMTP or LMTP server in Python threads for fault
               injection: replies chosen per recipient, a stall in DATA,
               down and up again on the same port; it records every
               connection and transaction.

Contract (all three):
  - A context manager: __enter__ starts it (and returns it) once it
    answers, __exit__ stops it; stop() is also callable directly and twice.
  - Everything listens on 127.0.0.1 (or ::1, or a unix socket under the
    test's folder). Postfix delivers to the Maildirs only: every other
    transport is "error", so nothing is sent anywhere.
  - Nothing outlives the test: stop() sends SIGTERM, then SIGKILLs what is
    left of the daemon's processes (its process group; for Postfix, every
    process carrying its MAIL_CONFIG); an atexit hook kills what is still
    running; PR_SET_PDEATHSIG sends SIGTERM to the daemon when the thread
    that started it dies (only set when started from the main thread, as
    the kernel ties it to the thread), so a test killed by a timeout
    leaves nothing either. Each is tracked as a server of the current
    harness case, so its log is printed when the case fails and one left
    running fails the case.
  - Every wait is bounded. A daemon that is not installed raises
    harness.Skip (install: tools/deps.sh --test); one that does not start
    raises harness.Fail with its log.

Accounts: Postfix runs as its package's postfix/postdrop, Dovecot as
dovecot/dovenull (created here with useradd/groupadd if missing); both store
mail as nobody:nogroup. Those users must reach the work folder: each hub
adds o+x (search, not read) to the work folder and to the folders above it
inside the temporary folder (mkdtemp makes them 0700); a folder elsewhere
without o+x is refused with a message.

Usage:
    with hubs.PostfixHub(os.path.join(tmp, "pf"), port) as pf:
        ...            # relay to 127.0.0.1:pf.port
        pf.wait_count(2, 10)
        for path, data in pf.messages(): ...
    with hubs.DovecotLmtp(os.path.join(tmp, "dc"), unix_path=sock) as dc:
        dc.wait_count("alice@example.com", 1, 10)
    with hubs.ScriptedHub(rcpt_replies={"bob@example.com": "450 4.2.0 later"}) as sh:
        ...
        txns = sh.wait_transactions(1, 10)

    python3 tests/integration/hubs.py --selftest [WORKDIR]
"""

import atexit
import ctypes
import grp
import os
import pwd
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import deque

import harness as h

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
START_TRIES = 3
HUB_HOSTNAME = "hub.test"

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"
POSTFIX_MASTER_CF = "/usr/share/postfix/master.cf.dist"
DOVECOT = "/usr/sbin/dovecot"
DOVECOT_LMTP = "/usr/lib/dovecot/lmtp"

# The owner of every stored message (base-passwd's nobody:nogroup).
MAIL_USER, MAIL_GROUP = "nobody", "nogroup"

# ScriptedHub's defaults.
DEFAULT_CAPS = ("PIPELINING", "8BITMIME", "SIZE 10485760", "SMTPUTF8", "ENHANCEDSTATUSCODES")
MAX_COMMAND_LINE = 65536


# ---------------------------------------------------------------- processes

_live = []  # started daemon hubs, for the atexit hook

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _stop_all():
    for hub in list(_live):
        hub.kill()


atexit.register(_stop_all)


def _term_on_parent_death():
    """In the child before exec: SIGTERM it when the thread that started it
    dies. SIGTERM, not SIGKILL: both masters pass it on to their children."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _group_members(pgid):
    """Live (not zombie) processes whose process group is pgid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp.
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(name))
    return out


def _environ_members(var):
    """Processes whose environment holds var ("MAIL_CONFIG=/dir"): Postfix
    daemons carry their instance's MAIL_CONFIG."""
    want = var.encode()
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open("/proc/%s/environ" % name, "rb") as f:
                    if want in f.read().split(b"\0"):
                        out.append(int(name))
            except OSError:
                pass
    return out


def _kill_leftovers(find, seconds=5.0):
    """SIGKILLs the processes find() lists until none is left (bounded).
    Returns the pids killed."""
    killed = []
    deadline = time.monotonic() + seconds
    while True:
        left = find()
        if not left or time.monotonic() > deadline:
            return killed
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
                killed.append(p)
            except OSError:
                pass
        time.sleep(0.05)


# ---------------------------------------------------------------- small helpers


def _free_port(host="127.0.0.1"):
    return h.free_port(host)


def _need_root(what):
    if os.geteuid() != 0:
        raise h.Skip("%s needs root (it runs daemons under their own users)" % what)


def _ensure_account(user, group, home="/nonexistent"):
    """The system group and user exist (created with groupadd/useradd when
    missing, as the Debian packages would)."""
    try:
        grp.getgrnam(group)
    except KeyError:
        subprocess.run(["groupadd", "--system", group], check=True, capture_output=True,
                       timeout=30)
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--gid", group, "--home-dir", home,
                        "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                       check=True, capture_output=True, timeout=30)


def _mail_ids():
    """uid and gid that own the stored messages."""
    _ensure_account(MAIL_USER, MAIL_GROUP)
    return pwd.getpwnam(MAIL_USER).pw_uid, grp.getgrnam(MAIL_GROUP).gr_gid


def _make_reachable(path):
    """
    Unprivileged daemons (postfix, dovecot, nobody) must reach path: adds
    o+x to it and to each folder above it inside the temporary folder that
    lacks it; a folder elsewhere that lacks it is an error.
    """
    tmp = os.path.realpath(tempfile.gettempdir())
    p = path
    while True:
        mode = os.stat(p).st_mode
        if not mode & stat.S_IXOTH:
            if p == path or p.startswith(tmp + os.sep):
                os.chmod(p, stat.S_IMODE(mode) | stat.S_IXOTH)
            else:
                raise h.Fail("%s is not searchable by other users (o+x), so the hub's "
                             "daemons cannot reach %s: use a work folder under %s"
                             % (p, path, tmp))
        if p == "/":
            return
        p = os.path.dirname(p)


def _read_maildir(folder):
    """(path, bytes) of every message in a Maildir's new/ and cur/, oldest first."""
    found = []
    for sub in ("new", "cur"):
        d = os.path.join(folder, sub)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for n in names:
            p = os.path.join(d, n)
            try:
                found.append((os.stat(p).st_mtime_ns, n, p))
            except FileNotFoundError:
                pass  # moved from new/ to cur/ meanwhile
    out = []
    for _, _, p in sorted(found):
        try:
            with open(p, "rb") as f:
                out.append((p, f.read()))
        except FileNotFoundError:
            pass
    return out


def _greeting(address, timeout):
    """The first reply line of an SMTP/LMTP server at address ((host, port)
    or a unix socket path), or None when nothing answers within timeout."""
    fam = socket.AF_UNIX if isinstance(address, str) else (
        socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(address)
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
            try:
                s.sendall(b"QUIT\r\n")
            except OSError:
                pass
            return buf.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    except OSError:
        return None


def delivered_to(message):
    """The address of the first Delivered-To header (lower case), or None."""
    head = message.split(b"\n\n", 1)[0]
    m = re.search(rb"^Delivered-To:[ \t]*<?([^>\r\n]*)>?\r?$", head, re.M | re.I)
    return m.group(1).decode("utf-8", "replace").strip().lower() if m else None


def _tail(text, n=40):
    return "\n".join("  | " + line for line in text.splitlines()[-n:])


# ---------------------------------------------------------------- daemon base


def read_acks(path):
    """{RUNID-N: QID} of an mxring-bench --ack-log file (its # lines are comments)."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            seq, qid, _size = line.split()
            out[seq] = qid
    return out


def crlf(data):
    """A Maildir file's lines (LF) as they went over SMTP (CRLF)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def bench_sums(data):
    """(seq, ok) of a message mxring-bench made, as a hub stored it: X-Bench-Sum
    checks what follows its own line, and X-Bench-Seq names the message."""
    data = crlf(data)
    m = re.search(rb"X-Bench-Sum: ([0-9a-f]{8})\r\n", data)
    if not m:
        return None, False
    rest = data[m.end():]
    seq = re.search(rb"X-Bench-Seq: (\S+)\r\n", rest)
    return (seq.group(1).decode() if seq else None,
            "%08x" % zlib.crc32(rest) == m.group(1).decode())


class _DaemonHub:
    """What PostfixHub and DovecotLmtp share: one foreground master process
    started as our child, stopped with SIGTERM, its leftovers killed."""

    name = "?"
    stop_grace_s = STOP_TIMEOUT_S

    def __init__(self, workdir, tag):
        self.workdir = os.path.realpath(os.path.abspath(workdir))
        self.tag = tag
        self.proc = None
        self.pgid = None
        self.log_path = None       # the daemon's own log (the harness prints it)
        self.out_path = os.path.join(self.workdir, tag + ".out")  # its stdout/stderr
        self._out = None
        self._tracked = False

    # Subclasses give _prepare(attempt) (the folders and configuration; a
    # new port on a retry), _argv(), _answering() (None until the greeting
    # comes, then its first line), _bind_lost() (the log shows a lost race
    # for the port); _env() and _extra_leftovers() (processes outside the
    # process group that are the instance's) when they need them.

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        _make_reachable(self.workdir)
        if not self._tracked:
            h._track("servers", self)
            self._tracked = True
        last = None
        for attempt in range(START_TRIES):
            self._prepare(attempt)
            try:
                self._spawn()
                return self
            except h.Fail as e:
                last = e
                if not self._bind_lost():
                    raise
        raise last

    def _spawn(self):
        if self._out:
            self._out.close()
        self._out = open(self.out_path, "ab")
        main = threading.current_thread() is threading.main_thread()
        # A session of its own: its process group is swept at the stop.
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._out, cwd=self.workdir, env=self._env(),
                                     start_new_session=True,
                                     preexec_fn=_term_on_parent_death if main else None)
        self.pgid = self.proc.pid
        _live.append(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.kill()
                raise h.Fail("%s exited with %d before answering; log:\n%s"
                             % (self.name, rc, self.log_tail()))
            line = self._answering()
            if line is not None:
                if not line.startswith("220"):
                    self.kill()
                    raise h.Fail("%s greeted with %r; log:\n%s" % (self.name, line,
                                                                   self.log_tail()))
                return
            time.sleep(0.05)
        self.kill()
        raise h.Fail("%s did not answer within %.0f s; log:\n%s"
                     % (self.name, START_TIMEOUT_S, self.log_tail()))

    def _env(self):
        return None

    def _extra_leftovers(self):
        return []

    def stop(self, timeout=None):
        """SIGTERM to the master, then SIGKILL to it (after timeout, by default
        stop_grace_s) and to whatever is left of its processes. Returns the
        exit status of the process started (Postfix: its wrapper shell, 143
        after the SIGTERM; -9 when it had to be killed)."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=self.stop_grace_s if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait(timeout=10)
        self._sweep()
        return rc

    def kill(self):
        """SIGKILL the master and everything of its own at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._sweep()

    def _sweep(self):
        if self.pgid is not None:
            pgid = self.pgid
            _kill_leftovers(lambda: _group_members(pgid) + self._extra_leftovers())
        self.proc = None
        self.pgid = None
        if self in _live:
            _live.remove(self)
        if self._out:
            self._out.close()
            self._out = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pids(self):
        """The processes of this instance now (master and children)."""
        if self.pgid is None:
            return []
        return sorted(set(_group_members(self.pgid) + self._extra_leftovers()))

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        self.stop()
        return False

    # -- logs (the harness's failure report reads these)

    def log(self, since_start=False):
        text = ""
        for p in (self.out_path, self.log_path):
            try:
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except (OSError, TypeError):
                pass
        return text

    def log_tail(self, n=40):
        return _tail(self.log(), n)

    def outside_signal_note(self):
        return None


# ---------------------------------------------------------------- Postfix


# sh -c WRAPPER NAME PROGRAM ARGS...: runs PROGRAM, passes SIGTERM on to it,
# exits with its status once it has exited.
_POSTFIX_WRAPPER = """
pid=
trap 'term=1; [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null' TERM
"$@" &
pid=$!
[ -z "$term" ] || kill -TERM "$pid" 2>/dev/null
while :; do
    wait "$pid"
    rc=$?
    kill -0 "$pid" 2>/dev/null || exit "$rc"
done
"""


class PostfixHub(_DaemonHub):
    """
    A private Postfix: config_directory WORKDIR/etc, queue_directory
    WORKDIR/queue, data_directory WORKDIR/data, log WORKDIR/maillog
    (maillog_file, through postlogd), mail in the Maildir
    WORKDIR/mail/Maildir/ (virtual(8), as nobody:nogroup; one file per
    recipient, its Delivered-To header naming it). Its smtpd
    listens on 127.0.0.1:port (a free one when port is None), accepts any
    user of maildir_domains and refuses other domains with "554 5.7.1
    Relay access denied"; PIPELINING, CHUNKING, 8BITMIME, SMTPUTF8 and
    SIZE as Postfix offers them by default; STARTTLS
    (smtpd_tls_security_level = may) when tls_cert and tls_key are given.
    main_cf: extra main.cf settings {name: value} (e.g. message_size_limit)
    applied last.

    The master runs in the foreground (master -c DIR -s, after `postfix -c
    DIR check` made the queue folders) under a shell of ours, so the
    system's /etc/postfix (which may not exist) is never read or touched.
    stop() is an immediate stop (SIGTERM to the master, which passes it on:
    `postfix abort`): wait_count() first for what must be delivered.
    Startup takes about 2 s, mostly `postfix check`.
    """

    name = "postfix"

    def __init__(self, workdir, port=None, tls_cert=None, tls_key=None,
                 maildir_domains=("example.com",), main_cf=None, hostname=HUB_HOSTNAME,
                 tag="postfix"):
        super().__init__(workdir, tag)
        if isinstance(maildir_domains, str):
            maildir_domains = (maildir_domains,)
        self.domains = [d.lower() for d in maildir_domains]
        self.fixed_port = port
        self.port = port
        self.tls_cert = tls_cert and os.path.abspath(tls_cert)
        self.tls_key = tls_key and os.path.abspath(tls_key)
        self.main_cf = dict(main_cf or {})
        self.hostname = hostname
        self.etc = os.path.join(self.workdir, "etc")
        self.queue = os.path.join(self.workdir, "queue")
        self.data = os.path.join(self.workdir, "data")
        self.mail = os.path.join(self.workdir, "mail")
        self.log_path = os.path.join(self.workdir, "maillog")

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def settings(self):
        """main.cf, in order."""
        w = self.workdir
        uid, gid = _mail_ids()
        s = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "maillog_file": self.log_path,
            # postlogd writes only under these prefixes (default /var).
            "maillog_file_prefixes": w,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": "test",
            "myorigin": "$myhostname",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "mydestination": "",
            "smtpd_peername_lookup": "no",  # no DNS at all
            "smtp_dns_support_level": "disabled",
            "alias_maps": "",
            "alias_database": "",
            # Every user of the listed domains, to one Maildir, WORKDIR/mail/Maildir/
            # (virtual(8) refuses $1 substitutions of regexp tables, so no
            # Maildir per user; the Delivered-To header names the recipient).
            "virtual_mailbox_domains": ", ".join(self.domains),
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": "static:Maildir/",
            "virtual_uid_maps": "static:%d" % uid,
            "virtual_gid_maps": "static:%d" % gid,
            "virtual_minimum_uid": "1",
            # Only the listed domains, whoever the client (5xx, not 4xx).
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            # Nothing leaves: bounces and everything not for the Maildirs fail here.
            "default_transport": "error:the test hub sends no mail out",
            "relay_transport": "error:the test hub sends no mail out",
            "local_transport": "error:the test hub has no local users",
            "notify_classes": "",
            "biff": "no",
        }
        if self.tls_cert or self.tls_key:
            if not (self.tls_cert and self.tls_key):
                raise h.Fail("PostfixHub: give both tls_cert and tls_key")
            s["smtpd_tls_security_level"] = "may"
            s["smtpd_tls_chain_files"] = "%s, %s" % (self.tls_key, self.tls_cert)
            s["smtpd_tls_loglevel"] = "1"
        s.update(self.main_cf)
        return s

    def _postconf(self, *args):
        p = subprocess.run([POSTCONF, "-c", self.etc] + list(args), capture_output=True,
                           text=True, timeout=30)
        if p.returncode != 0:
            raise h.Fail("postconf %s: %s" % (" ".join(args)[:200], p.stderr.strip()))

    def _prepare(self, attempt):
        for prog in (POSTFIX, POSTCONF, os.path.join(POSTFIX_DAEMONS, "master")):
            if not os.path.exists(prog):
                raise h.Skip("%s not installed (Debian package postfix; tools/deps.sh --test)"
                             % prog)
        _need_root("PostfixHub")
        try:
            pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            raise h.Skip("user postfix or group postdrop missing (the package postfix "
                         "creates them)")
        if self.fixed_port is None:
            self.port = _free_port()
        uid, gid = _mail_ids()
        for d in (self.etc, self.queue, self.data, self.mail):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.queue, 0o755)  # postfix check wants root-owned, not group writable
        shutil.chown(self.data, "postfix")
        os.chown(self.mail, uid, gid)
        os.chmod(self.mail, 0o755)
        open(self.log_path, "a").close()
        shutil.copy(POSTFIX_MASTER_CF, os.path.join(self.etc, "master.cf"))
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write("# written by tests/integration/hubs.py\n")
            for k, v in self.settings().items():
                f.write("%s = %s\n" % (k, v))
        # No chroot (it would need copies of /etc files in the queue folder).
        self._postconf("-F", "*/*/chroot = n")
        self._postconf("-MX", "smtp/inet")
        self._postconf("-M", "127.0.0.1:%d/inet=127.0.0.1:%d inet n - n - - smtpd"
                       % (self.port, self.port))
        # Creates the queue's folders with their owners and checks the rest.
        p = subprocess.run([POSTFIX, "-c", self.etc, "check"], capture_output=True,
                           text=True, timeout=60)
        if p.returncode != 0:
            raise h.Fail("postfix -c %s check failed:\n%s" % (self.etc,
                                                              (p.stdout + p.stderr).strip()))

    def _argv(self):
        # master -s: in the foreground, stdout kept (what `postfix start-fg`
        # runs), under a shell that passes a SIGTERM on to it: the master
        # changes its effective uid while it starts, which clears the
        # PR_SET_PDEATHSIG it inherited, so the shell keeps it instead.
        return ["/bin/sh", "-c", _POSTFIX_WRAPPER, "postfix-hub",
                os.path.join(POSTFIX_DAEMONS, "master"), "-c", self.etc, "-s"]

    def _env(self):
        # Every process of the instance carries it (the master passes it
        # on), which is how the stop finds them all: the master makes a
        # session of its own.
        return dict(os.environ, MAIL_CONFIG=self.etc)

    def _answering(self):
        return _greeting(("127.0.0.1", self.port), 1.0)

    def _bind_lost(self):
        return self.fixed_port is None and "address already in use" in self.log().lower()

    def _extra_leftovers(self):
        return _environ_members("MAIL_CONFIG=" + self.etc)

    # -- what it stored

    @property
    def maildir(self):
        """The one Maildir every message goes to."""
        return os.path.join(self.mail, "Maildir")

    def messages(self, rcpt=None):
        """(path, bytes) of each delivered message, oldest first: one file per
        recipient, as Postfix stores it (LF line ends; virtual(8) adds
        Return-Path and Delivered-To, smtpd a Received header); only those
        whose Delivered-To is rcpt (any case) when rcpt is given."""
        out = _read_maildir(self.maildir)
        if rcpt is not None:
            out = [(p, d) for p, d in out if delivered_to(d) == rcpt.lower()]
        return out

    def wait_count(self, n, timeout=10.0, rcpt=None):
        """Waits (bounded) until at least n messages are delivered; returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            c = len(self.messages(rcpt))
            if c >= n or time.monotonic() > deadline:
                return c
            time.sleep(0.05)

    def log_lines(self):
        """The lines of the instance's maillog."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []

    def queue_ids(self):
        """Queue files still in the instance's queues (not delivered yet)."""
        out = []
        for q in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _, _, files in os.walk(os.path.join(self.queue, q)):
                out += files
        return out


# ---------------------------------------------------------------- Dovecot


class DovecotLmtp(_DaemonHub):
    """
    Debian's Dovecot with a private dovecot.conf in WORKDIR (base_dir
    WORKDIR/run, state_dir WORKDIR/state, log WORKDIR/dovecot.log), LMTP
    only: on 127.0.0.1:port (host may be "::1") and/or the unix socket
    unix_path (mode 0666); a free port when neither is given. Users: a
    passwd-file (passdb and userdb) with each address of users, home
    WORKDIR/mail/ADDRESS, mail in ~/Maildir, owned by nobody:nogroup;
    user+detail@domain goes to user@domain (recipient_delimiter +). Any
    other recipient gets "550 5.1.1 <ADDRESS> User doesn't exist: ADDRESS"
    at RCPT. No STARTTLS (ssl = no). `dovecot -F -c CONF` runs as our
    child; it starts in well under a second.
    """

    name = "dovecot"
    # A clean stop takes Dovecot's master about 1 s; but an lmtp process
    # forked just before the SIGTERM (still reading its settings) holds it
    # 5 s more. Nothing is lost by killing it then: what was acknowledged
    # is on disk.
    stop_grace_s = 2.0

    def __init__(self, workdir, port=None, unix_path=None,
                 users=("alice@example.com", "bob@example.com"), host="127.0.0.1",
                 tag="dovecot"):
        super().__init__(workdir, tag)
        self.fixed_port = port
        self.port = port
        self.unix_path = unix_path and os.path.abspath(unix_path)
        self.host = host
        self.users = [u.lower() for u in users]
        self.conf_path = os.path.join(self.workdir, "dovecot.conf")
        self.passwd_path = os.path.join(self.workdir, "users")
        self.mail = os.path.join(self.workdir, "mail")
        self.log_path = os.path.join(self.workdir, "dovecot.log")

    @property
    def addr(self):
        """"127.0.0.1:PORT", or the unix socket's path when there is no port."""
        if self.port is None:
            return self.unix_path
        return "%s:%d" % (self.host if ":" not in self.host else "[%s]" % self.host, self.port)

    def config_text(self):
        w = self.workdir
        lines = [
            "# written by tests/integration/hubs.py",
            "base_dir = %s/run" % w,
            "state_dir = %s/state" % w,
            "instance_name = mxring-hub-%d-%d" % (os.getpid(), id(self)),
            "protocols = lmtp",
            "listen = %s" % self.host,
            "ssl = no",
            "log_path = " + self.log_path,
            "info_log_path = " + self.log_path,
            'log_timestamp = "%Y-%m-%d %H:%M:%S "',
            "default_internal_user = dovecot",
            "default_login_user = dovenull",
            "first_valid_uid = 1",
            # No stats: at a SIGTERM, an lmtp process would otherwise wait 5 s
            # for the (already stopped) stats process and delay the master's exit.
            "stats_writer_socket_path =",
            "mail_location = maildir:~/Maildir",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain",
            "passdb {",
            "  driver = passwd-file",
            "  args = scheme=PLAIN username_format=%%Lu %s" % self.passwd_path,
            "}",
            "userdb {",
            "  driver = passwd-file",
            "  args = username_format=%%Lu %s" % self.passwd_path,
            "}",
            "service lmtp {",
        ]
        if self.port is not None:
            lines += ["  inet_listener lmtp {",
                      "    address = %s" % self.host,
                      "    port = %d" % self.port,
                      "  }"]
        if self.unix_path:
            lines += ["  unix_listener %s {" % self.unix_path,
                      "    mode = 0666",
                      "  }"]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _passwd_line(self, user):
        uid, gid = _mail_ids()
        return "%s:{PLAIN}secret:%d:%d::%s::\n" % (user, uid, gid, self.home(user))

    def home(self, user):
        return os.path.join(self.mail, user.lower())

    def add_user(self, user):
        """Adds a user while running. Dovecot reads the passwd-file again
        when it changed, but checks at most once a second (ioloop_time): this
        returns once the next second has begun, so the next lookup sees it."""
        user = user.lower()
        if user in self.users:
            return
        self.users.append(user)
        self._make_home(user)
        with open(self.passwd_path, "a") as f:
            f.write(self._passwd_line(user))
        written = int(time.time())
        while int(time.time()) <= written:
            time.sleep(0.02)

    def _make_home(self, user):
        uid, gid = _mail_ids()
        d = self.home(user)
        os.makedirs(d, exist_ok=True)
        os.chown(d, uid, gid)
        os.chmod(d, 0o700)

    def _prepare(self, attempt):
        for prog in (DOVECOT, DOVECOT_LMTP):
            if not os.path.exists(prog):
                raise h.Skip("%s not installed (Debian packages dovecot-core, dovecot-lmtpd; "
                             "tools/deps.sh --test)" % prog)
        _need_root("DovecotLmtp")
        _ensure_account("dovecot", "dovecot", "/usr/lib/dovecot")
        _ensure_account("dovenull", "dovenull")
        if self.fixed_port is None and self.unix_path is None:
            self.port = _free_port(self.host)  # (again after a lost race)
        for d in ("run", "state"):
            os.makedirs(os.path.join(self.workdir, d), exist_ok=True)
        os.makedirs(self.mail, exist_ok=True)
        os.chmod(self.mail, 0o755)
        with open(self.passwd_path, "w") as f:
            for u in self.users:
                self._make_home(u)
                f.write(self._passwd_line(u))
        os.chmod(self.passwd_path, 0o644)
        if self.unix_path:
            os.makedirs(os.path.dirname(self.unix_path), exist_ok=True)
            _make_reachable(os.path.dirname(self.unix_path))
        with open(self.conf_path, "w") as f:
            f.write(self.config_text())
        open(self.log_path, "a").close()

    def _argv(self):
        return [DOVECOT, "-F", "-c", self.conf_path]

    def _answering(self):
        # Every listener must answer.
        line = None
        if self.port is not None:
            line = _greeting((self.host, self.port), 1.0)
            if line is None:
                return None
        if self.unix_path:
            line = _greeting(self.unix_path, 1.0)
        return line

    def _bind_lost(self):
        return self.fixed_port is None and "address already in use" in self.log().lower()

    def stop(self, timeout=None):
        rc = super().stop(timeout)
        if self.unix_path and os.path.exists(self.unix_path):
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass
        return rc

    # -- what it stored

    def maildir(self, user):
        return os.path.join(self.home(user), "Maildir")

    def messages(self, user):
        """The bytes of each message delivered to user, oldest first
        (Dovecot adds Return-Path, Delivered-To and Received)."""
        return [data for _, data in _read_maildir(self.maildir(user))]

    def wait_count(self, user, n, timeout=10.0):
        """Waits (bounded) until user has at least n messages; returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            c = len(self.messages(user))
            if c >= n or time.monotonic() > deadline:
                return c
            time.sleep(0.05)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


# ---------------------------------------------------------------- scripted hub


class Connection:
    """One client connection as a ScriptedHub saw it. t_* are time.monotonic(),
    wall_* time.time(). commands: (batch, line) of each command line (not
    message data), batch being the number of the read that completed it, so
    commands a client pipelined share a batch. end: why it ended: "quit",
    "client" (closed by the client), "stop" (hub stopped), "timeout",
    "421" (a scripted 421 reply), "greeting" (a non-2xx greeting),
    "stall" (the client closed during a stall), "line too long"."""

    def __init__(self, cid, peer):
        self.id = cid
        self.peer = peer
        self.t_open = time.monotonic()
        self.wall_open = time.time()
        self.t_close = None
        self.wall_close = None
        self.helo = None
        self.commands = []
        self.end = None

    def __repr__(self):
        return "<Connection %d from %s, %d commands, end %s>" % (
            self.id, self.peer, len(self.commands), self.end)


class Transaction:
    """
    One transaction (from an accepted MAIL on) as a ScriptedHub saw it.
      mail_from     the address between < > ("" for the null sender)
      params        MAIL parameters after the address ("SIZE=12 BODY=8BITMIME")
      rcpts         (address, reply) of each RCPT, in order
      body          the message after dot-unstuffing (DATA: line ends kept as
                    received) or the BDAT chunks joined; on a stall, what
                    was read before it; None before data
      via           "DATA" or "BDAT"; chunks: the BDAT chunk sizes
      bare_lf       a DATA line ended with LF without CR
      data_replies  (address, reply) after the end of data: one with address
                    None in SMTP, one per accepted recipient in LMTP
      state         "open", "done" (end of data answered), "reset" (RSET),
                    "aborted" (connection gone first), "stalled"
      t_mail, t_end, wall_end   times of MAIL and of the end-of-data reply
      t_stall       when the stall began; drained: bytes dropped after it
                    (stall_drain)
    """

    def __init__(self, conn, mail_from, params):
        self.conn = conn
        self.mail_from = mail_from
        self.params = params
        self.rcpts = []
        self.body = None
        self.via = None
        self.chunks = []
        self.bare_lf = False
        self.data_replies = []
        self.state = "open"
        self.t_mail = time.monotonic()
        self.t_end = None
        self.wall_end = None
        self.t_stall = None
        self.drained = 0

    @property
    def accepted(self):
        """Recipients whose RCPT got a 2xx reply."""
        return [a for a, r in self.rcpts if r.startswith("2")]

    @property
    def data_reply(self):
        """The (first) reply after the end of data, or None."""
        return self.data_replies[0][1] if self.data_replies else None

    def __repr__(self):
        return "<Transaction conn %d from <%s> rcpts %r %s %s bytes>" % (
            self.conn, self.mail_from, self.rcpts, self.state,
            None if self.body is None else len(self.body))


class _End(Exception):
    """The session is over; the argument says why (Connection.end)."""


def _reply_lines(reply):
    """A reply given as "250 ok", "250 a\\n250 b" or a list of lines, as the
    wire lines with the continuation hyphens set."""
    if isinstance(reply, (list, tuple)):
        lines = list(reply)
    else:
        lines = str(reply).splitlines() or ["250 ok"]
    out = []
    for i, line in enumerate(lines):
        code, text = line[:3], line[4:]
        out.append("%s%s%s" % (code, " " if i == len(lines) - 1 else "-", text))
    return out


def _lookup(table, addr, *more):
    """A reply from a dict (address, case-insensitive) or a callable; None when
    it has none."""
    if table is None:
        return None
    if callable(table):
        return table(addr, *more)
    for k, v in table.items():
        if k.lower() == addr.lower():
            return v
    return None


class ScriptedHub:
    """
    An SMTP (proto="smtp") or LMTP (proto="lmtp") server in Python threads,
    on host:port (127.0.0.1; a free port when port is None, kept across
    stop/start) or on a unix socket (unix_path). Its behaviour is read from
    these attributes at the moment it is used, so a test may change them
    between (or during) connections:
      rcpt_replies   {address: reply} (case-insensitive) or a callable
                     (address) -> reply or None; else "250 2.1.5 ok"
      mail_reply     reply to MAIL, or a callable (address, params) -> reply
      data_reply     reply at the end of data (SMTP; and per recipient in
                     LMTP), or a callable (transaction) -> reply
      lmtp_replies   {address: reply} or a callable (address, transaction)
                     -> reply or None: LMTP's per-recipient replies after
                     the data (else data_reply)
      data_cmd_reply the reply to DATA ("354 ..."); another one refuses it
      stall_in_data  True: after the 354 (or a BDAT command) stop reading and
                     never answer, until the client closes (or the hub
                     stops); a number N: stop after N bytes of the data.
                     A client that gives up while more data than the socket
                     buffers hold (some MB on loopback) is still unsent
                     cannot be seen closing: its FIN waits behind that data
                     (the connection then ends at the hub's stop)
      stall_drain    with stall_in_data: go on reading (and dropping) the
                     data, still never answering, so that any client's close
                     is seen; the bytes dropped are in Transaction.drained
      ehlo_caps      the EHLO/LHLO keywords (DEFAULT_CAPS); BDAT is
                     accepted when "CHUNKING" is among them
      greeting       the first reply (a non-2xx one is sent and the
                     connection closed)
      idle_timeout   seconds without a command before "421 ... timeout"
    A reply is "ddd text" or a list of such lines (multi-line); any reply
    with code 421 closes the connection after it is sent.

    Commands: EHLO/HELO (SMTP) or LHLO (LMTP; the other greeting gets a
    500), MAIL, RCPT (parameters after the address are ignored), DATA,
    BDAT, RSET, NOOP, VRFY (252), QUIT; STARTTLS gets 502 (no TLS here),
    anything else 500. DATA with no accepted recipient gets 554 (SMTP) or
    503 (LMTP). Replies are written when no further complete command is
    waiting, as a pipelining server does. Lines may end with LF alone. BDAT
    chunks are stored as received. log() is an in-memory transcript.

    Records (thread-safe snapshots): connections, transactions; waits:
    wait_connections(n, timeout), wait_transactions(n, timeout, state).
    stop() closes the listener and every connection (the hub is down:
    connections are refused); start() opens it again on the same port.
    """

    def __init__(self, port=None, proto="smtp", host="127.0.0.1", unix_path=None,
                 rcpt_replies=None, data_reply="250 2.0.0 ok", lmtp_replies=None,
                 mail_reply="250 2.1.0 ok", data_cmd_reply=None, stall_in_data=False,
                 stall_drain=False,
                 ehlo_caps=DEFAULT_CAPS, greeting=None, hostname=HUB_HOSTNAME,
                 idle_timeout=120.0, tag="scripted"):
        if proto not in ("smtp", "lmtp"):
            raise ValueError("proto must be smtp or lmtp")
        self.proto = proto
        self.host = host
        self.port = port
        self.unix_path = unix_path and os.path.abspath(unix_path)
        self.rcpt_replies = rcpt_replies
        self.data_reply = data_reply
        self.lmtp_replies = lmtp_replies
        self.mail_reply = mail_reply
        self.data_cmd_reply = data_cmd_reply or "354 End data with <CR><LF>.<CR><LF>"
        self.stall_in_data = stall_in_data
        self.stall_drain = stall_drain
        self.ehlo_caps = list(ehlo_caps)
        self.hostname = hostname
        self.greeting = greeting or "220 %s %s scripted hub" % (
            hostname, "LMTP" if proto == "lmtp" else "ESMTP")
        self.idle_timeout = idle_timeout
        self.tag = tag
        self.log_path = "(in memory: ScriptedHub %s)" % tag
        self._lock = threading.Lock()
        self._connections = []
        self._transactions = []
        self._log = deque(maxlen=3000)
        self._listener = None
        self._stopping = None
        self._acceptor = None
        self._sessions = {}  # socket -> thread
        self._tracked = False

    # -- state

    @property
    def lmtp(self):
        return self.proto == "lmtp"

    @property
    def addr(self):
        """"127.0.0.1:PORT" (or the unix socket path)."""
        if self.unix_path:
            return self.unix_path
        return "%s:%d" % (self.host if ":" not in self.host else "[%s]" % self.host, self.port)

    @property
    def up(self):
        return self._listener is not None

    @up.setter
    def up(self, value):
        if value:
            self.start()
        else:
            self.stop()

    @property
    def connections(self):
        with self._lock:
            return list(self._connections)

    @property
    def transactions(self):
        with self._lock:
            return list(self._transactions)

    def wait_connections(self, n, timeout=10.0):
        """Waits (bounded) until n connections were made; returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.connections
            if len(c) >= n or time.monotonic() > deadline:
                return c
            time.sleep(0.02)

    def wait_transactions(self, n, timeout=10.0, state="done"):
        """Waits (bounded) until n transactions are in state (any state when
        None); returns those."""
        deadline = time.monotonic() + timeout
        while True:
            t = [x for x in self.transactions if state is None or x.state == state]
            if len(t) >= n or time.monotonic() > deadline:
                return t
            time.sleep(0.02)

    def clear(self):
        """Forgets the connections and transactions recorded so far."""
        with self._lock:
            self._connections.clear()
            self._transactions.clear()

    def note(self, text):
        with self._lock:
            self._log.append("%.3f %s" % (time.monotonic(), text))

    # -- start / stop

    def start(self):
        if self._listener is not None:
            return self
        if not self._tracked:
            h._track("servers", self)
            self._tracked = True
        if self.unix_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
            s.bind(self.unix_path)
            os.chmod(self.unix_path, 0o666)
        else:
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, self.port or 0))
            self.port = s.getsockname()[1]
        s.listen(128)
        s.settimeout(0.1)
        self._listener = s
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, args=(s, self._stopping),
                                          name="hub-accept-%s" % self.tag, daemon=True)
        self._acceptor.start()
        self.note("up on %s" % self.addr)
        return self

    def stop(self):
        """Closes the listener and every open connection; waits (bounded) for
        the threads. The hub can start() again on the same port."""
        if self._listener is None:
            return
        self._stopping.set()
        self._acceptor.join(5)
        self._listener.close()
        self._listener = None
        with self._lock:
            sessions = dict(self._sessions)
        for s in sessions:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in sessions.values():
            t.join(5)
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)
        self.note("down")

    def kill(self):
        self.stop()

    def alive(self):
        return self.up

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        self.stop()
        return False

    def _accept_loop(self, lsock, stopping):
        while not stopping.is_set():
            try:
                sock, peer = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                conn = Connection(len(self._connections) + 1,
                                  peer if isinstance(peer, str) and peer else
                                  ("%s:%d" % peer[:2] if peer else "unix"))
                self._connections.append(conn)
            t = threading.Thread(target=self._run_session, args=(sock, conn, stopping),
                                 name="hub-conn-%d" % conn.id, daemon=True)
            with self._lock:
                self._sessions[sock] = t
            t.start()

    def _run_session(self, sock, conn, stopping):
        self.note("conn %d open from %s" % (conn.id, conn.peer))
        sess = _Session(self, sock, conn, stopping)
        try:
            sess.run()
        except _End as e:
            conn.end = e.args[0]
        except OSError:
            conn.end = "client"
        finally:
            if sess.txn is not None and sess.txn.state == "open":
                sess.txn.state = "aborted"
            conn.t_close = time.monotonic()
            conn.wall_close = time.time()
            try:
                sock.close()
            except OSError:
                pass
            with self._lock:
                self._sessions.pop(sock, None)
            self.note("conn %d closed (%s)" % (conn.id, conn.end))

    # -- logs (the harness's failure report reads these)

    def log(self, since_start=False):
        with self._lock:
            return "\n".join(self._log) + "\n"

    def log_tail(self, n=40):
        return _tail(self.log(), n)

    def outside_signal_note(self):
        return None


class _Session:
    """One connection of a ScriptedHub: reads command lines from a buffer,
    answers them, reads message data."""

    def __init__(self, hub, sock, conn, stopping):
        self.hub = hub
        self.sock = sock
        self.conn = conn
        self.stopping = stopping
        self.buf = bytearray()
        self.out = []
        self.reads = 0
        self.txn = None
        self.bdat = []
        sock.settimeout(0.25)

    # -- input and output

    def send(self, reply):
        lines = _reply_lines(reply)
        for line in lines:
            self.out.append(line.encode("utf-8", "surrogateescape") + b"\r\n")
            self.hub.note("conn %d S: %s" % (self.conn.id, line))
        return lines

    def flush(self):
        """Writes the pending replies (a slow reader is waited for; a stop ends it)."""
        if not self.out:
            return
        data = memoryview(b"".join(self.out))
        self.out = []
        while data:
            try:
                data = data[self.sock.send(data):]
            except socket.timeout:
                if self.stopping.is_set():
                    raise _End("stop")

    def recv(self):
        """Flushes the pending replies, then reads once more into buf."""
        self.flush()
        deadline = time.monotonic() + self.hub.idle_timeout
        while True:
            if self.stopping.is_set():
                raise _End("stop")
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                if time.monotonic() > deadline:
                    self.send("421 4.4.2 %s Error: timeout exceeded" % self.hub.hostname)
                    self.flush()
                    raise _End("timeout")
                continue
            except OSError:
                raise _End("stop" if self.stopping.is_set() else "client")
            if not chunk:
                raise _End("stop" if self.stopping.is_set() else "client")
            self.reads += 1
            self.buf += chunk
            return

    def command(self):
        """The next command line (str, line end removed); replies pending are
        written only when no complete line is waiting."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                raw = bytes(self.buf[:i])
                del self.buf[:i + 1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                line = raw.decode("utf-8", "surrogateescape")
                self.conn.commands.append((self.reads, line))
                self.hub.note("conn %d C: %s" % (self.conn.id, line))
                return line
            if len(self.buf) > MAX_COMMAND_LINE:
                self.send("500 5.5.2 Error: line too long")
                self.flush()
                raise _End("line too long")
            self.recv()

    def reply_and_maybe_close(self, reply):
        lines = self.send(reply)
        if lines[-1].startswith("421"):
            self.flush()
            raise _End("421")

    # -- the conversation

    def run(self):
        hub = self.hub
        self.send(hub.greeting)
        if not hub.greeting.startswith("2"):
            self.flush()
            raise _End("greeting")
        while True:
            line = self.command()
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            handler = getattr(self, "do_" + verb, None) if verb.isalpha() else None
            if handler is None:
                self.send("500 5.5.2 Error: command not recognized")
            else:
                handler(arg.strip())

    def do_EHLO(self, arg):
        self._hello("EHLO", arg)

    def do_HELO(self, arg):
        self._hello("HELO", arg)

    def do_LHLO(self, arg):
        self._hello("LHLO", arg)

    def _hello(self, verb, arg):
        if (verb == "LHLO") != self.hub.lmtp:
            self.send("500 5.5.1 Error: %s not accepted by this %s server"
                      % (verb, self.hub.proto.upper()))
            return
        if not arg:
            self.send("501 5.5.4 Syntax: %s hostname" % verb)
            return
        self.conn.helo = "%s %s" % (verb, arg)
        self._reset("reset")
        if verb == "HELO":
            self.send("250 %s" % self.hub.hostname)
        else:
            self.send(["250 %s" % self.hub.hostname] +
                      ["250 %s" % c for c in self.hub.ehlo_caps])

    def _reset(self, state):
        if self.txn is not None and self.txn.state == "open":
            self.txn.state = state
        self.txn = None
        self.bdat = []

    def do_RSET(self, arg):
        self._reset("reset")
        self.send("250 2.0.0 Ok")

    def do_NOOP(self, arg):
        self.send("250 2.0.0 Ok")

    def do_VRFY(self, arg):
        self.send("252 2.0.0 Cannot VRFY user")

    def do_STARTTLS(self, arg):
        self.send("502 5.5.1 Error: command not implemented")

    def do_QUIT(self, arg):
        self.send("221 2.0.0 Bye")
        self.flush()
        raise _End("quit")

    _PATH_RE = re.compile(r"^(?:FROM|TO):\s*<([^<>]*)>\s*(.*)$", re.I)

    def _path(self, arg, word):
        if not arg.upper().startswith(word + ":"):
            return None
        return self._PATH_RE.match(arg)

    def do_MAIL(self, arg):
        if self.conn.helo is None:
            self.send("503 5.5.1 Error: send %s first" % ("LHLO" if self.hub.lmtp else "EHLO"))
            return
        if self.txn is not None:
            self.send("503 5.5.1 Error: nested MAIL command")
            return
        m = self._path(arg, "FROM")
        if m is None:
            self.send("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        reply = self.hub.mail_reply
        if callable(reply):
            reply = reply(m.group(1), m.group(2)) or "250 2.1.0 ok"
        if _reply_lines(reply)[-1].startswith("2"):
            self.txn = Transaction(self.conn.id, m.group(1), m.group(2))
            with self.hub._lock:
                self.hub._transactions.append(self.txn)
        self.reply_and_maybe_close(reply)

    def do_RCPT(self, arg):
        if self.txn is None:
            self.send("503 5.5.1 Error: need MAIL command")
            return
        m = self._path(arg, "TO")
        if m is None:
            self.send("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        addr = m.group(1)
        reply = _lookup(self.hub.rcpt_replies, addr) or "250 2.1.5 ok"
        lines = _reply_lines(reply)
        self.txn.rcpts.append((addr, "\n".join(lines)))
        self.reply_and_maybe_close(lines)

    def _ready_for_data(self):
        """None when the transaction may take data, else the refusal."""
        if self.txn is None:
            return "503 5.5.1 Error: need MAIL command"
        if not self.txn.accepted:
            return ("503" if self.hub.lmtp else "554") + " 5.5.1 Error: no valid recipients"
        return None

    def _stall_limit(self):
        s = self.hub.stall_in_data
        if s is True:
            return 0
        if s is False or s is None:
            return None
        return int(s)

    def do_DATA(self, arg):
        refusal = self._ready_for_data()
        if refusal:
            self.send(refusal)
            return
        reply = self.hub.data_cmd_reply
        self.reply_and_maybe_close(reply)
        if not _reply_lines(reply)[-1].startswith("3"):
            return
        txn = self.txn
        txn.via = "DATA"
        limit = self._stall_limit()
        parts, n = [], 0
        while True:
            if limit is not None and n >= limit:
                txn.body = b"".join(parts)
                self._stall(txn)
            i = self.buf.find(b"\n")
            if i < 0:
                self.recv()
                continue
            line = bytes(self.buf[:i + 1])
            del self.buf[:i + 1]
            if line == b".\r\n" or line == b".\n":
                break
            n += len(line)
            if not line.endswith(b"\r\n"):
                txn.bare_lf = True
            parts.append(line[1:] if line.startswith(b".") else line)
        txn.body = b"".join(parts)
        self.hub.note("conn %d data: %d bytes" % (self.conn.id, len(txn.body)))
        self._end_of_data(txn)

    def do_BDAT(self, arg):
        if not any(c.upper() == "CHUNKING" for c in self.hub.ehlo_caps):
            self.send("502 5.5.1 Error: command not implemented")
            return
        m = re.match(r"^(\d+)(\s+LAST)?\s*$", arg, re.I)
        if m is None:
            self.send("501 5.5.4 Syntax: BDAT count [LAST]")
            return
        size, last = int(m.group(1)), bool(m.group(2))
        refusal = self._ready_for_data()
        txn = self.txn
        limit = None if refusal else self._stall_limit()
        got = sum(len(p) for p in self.bdat)
        need = size
        chunk = []
        while need > 0 or (limit is not None and got >= limit):
            if limit is not None and got >= limit:
                txn.via = "BDAT"
                txn.body = b"".join(self.bdat + chunk)
                self._stall(txn)
            if not self.buf:
                self.recv()
                continue
            take = min(need, len(self.buf))
            if limit is not None:
                take = min(take, max(1, limit - got))
            chunk.append(bytes(self.buf[:take]))
            del self.buf[:take]
            need -= take
            got += take
        if refusal:  # the chunk is read and dropped (RFC 3030)
            self.send(refusal)
            return
        txn.via = "BDAT"
        txn.chunks.append(size)
        self.bdat.append(b"".join(chunk))
        if not last:
            self.send("250 2.0.0 %d octets received" % size)
            return
        txn.body = b"".join(self.bdat)
        self.bdat = []
        self.hub.note("conn %d bdat: %d bytes" % (self.conn.id, len(txn.body)))
        self._end_of_data(txn)

    def _end_of_data(self, txn):
        hub = self.hub
        base = hub.data_reply(txn) if callable(hub.data_reply) else hub.data_reply
        if hub.lmtp:
            replies = [(a, _lookup(hub.lmtp_replies, a, txn) or base) for a in txn.accepted]
        else:
            replies = [(None, base)]
        replies = [(a, "\n".join(_reply_lines(r))) for a, r in replies]
        txn.t_end = time.monotonic()
        txn.wall_end = time.time()
        txn.data_replies = replies
        self.txn = None
        closing = False
        for _, r in replies:
            self.send(r)
            closing = closing or r.startswith("421")
        self.flush()
        txn.state = "done"
        if closing:
            raise _End("421")

    def _stall(self, txn):
        """Answers nothing more, for good: waits for the client to close (or
        the hub to stop), without reading (or, with stall_drain, reading and
        dropping what comes)."""
        self.flush()
        txn.state = "stalled"
        txn.t_stall = time.monotonic()
        self.hub.note("conn %d stalls in data after %d bytes" % (self.conn.id, len(txn.body)))
        if self.hub.stall_drain:
            txn.drained = len(self.buf)
            self.buf = bytearray()
            while not self.stopping.is_set():
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                txn.drained += len(chunk)
            raise _End("stop" if self.stopping.is_set() else "stall")
        # The peer's close (FIN or RST) shows as POLLRDHUP/POLLHUP/POLLERR even
        # with data left unread.
        p = select.poll()
        p.register(self.sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        while not self.stopping.is_set():
            if p.poll(250):
                raise _End("stall")
        raise _End("stop")


# ---------------------------------------------------------------- self-test


def _make_cert(folder):
    """A self-signed P-256 certificate and key for hub.test (openssl)."""
    os.makedirs(folder, exist_ok=True)
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                    "/CN=" + HUB_HOSTNAME, "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _raw(address, data, replies, timeout=5.0):
    """Connects, reads the greeting, sends data in one write and reads
    `replies` reply lines (the last lines of multi-line replies count once).
    Returns the reply lines read (all of them)."""
    fam = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        buf = b""
        lines = []

        def read_reply():
            nonlocal buf
            while True:
                while b"\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise h.Fail("closed; lines so far %r" % lines)
                    buf += chunk
                raw, _, buf = buf.partition(b"\n")
                line = raw.decode().rstrip("\r")
                lines.append(line)
                if line[3:4] != "-":
                    return

        read_reply()
        s.sendall(data)
        for _ in range(replies):
            read_reply()
        return lines


def self_test(workdir, prefix=""):
    import smtplib
    import ssl

    ok = []

    def step(what):
        ok.append(what)
        print("%sok %d - %s" % (prefix, len(ok), what))
        sys.stdout.flush()

    def gone(pids, what):
        time.sleep(0.1)
        left = [p for p in pids if os.path.exists("/proc/%d" % p) and
                open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()[0] != "Z"]
        h.check(not left, "%s: processes left after stop: %r" % (what, left))

    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.realpath(workdir)
    threads_before = threading.active_count()

    # -- ScriptedHub, SMTP
    replies = {"later@example.com": "450 4.2.0 try later",
               "nouser@example.com": "550 5.1.1 no such user"}
    with ScriptedHub(rcpt_replies=replies) as sh:
        port = sh.port
        c = smtplib.SMTP("127.0.0.1", port, timeout=5)
        c.ehlo("client.test")
        h.check("pipelining" in c.esmtp_features and "smtputf8" in c.esmtp_features,
                "EHLO features %r" % c.esmtp_features)
        body = b"Subject: t\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"
        refused = c.sendmail("s@example.org", ["a@example.com", "later@example.com",
                                               "nouser@example.com"], body)
        h.check_eq(refused, {"later@example.com": (450, b"4.2.0 try later"),
                             "nouser@example.com": (550, b"5.1.1 no such user")}, "refused")
        try:
            c.sendmail("s@example.org", ["nouser@example.com"], body)
            raise h.Fail("all recipients refused, yet sendmail went on")
        except smtplib.SMTPRecipientsRefused:
            pass
        c.quit()
        t = sh.wait_transactions(1, 5)
        h.check_eq(len(t), 1, "done transactions")
        t = t[0]
        h.check_eq(t.mail_from, "s@example.org", "mail_from")
        h.check_eq(t.rcpts, [("a@example.com", "250 2.1.5 ok"),
                             ("later@example.com", "450 4.2.0 try later"),
                             ("nouser@example.com", "550 5.1.1 no such user")], "rcpts")
        h.check_eq(t.body, body, "body after dot-unstuffing")
        h.check_eq(t.data_reply, "250 2.0.0 ok", "data reply")
        h.check(not t.bare_lf, "bare_lf on a CRLF message")
        states = [x.state for x in sh.transactions]
        h.check_eq(states, ["done", "reset"], "states (the refused one is reset by RSET)")
        step("ScriptedHub SMTP: 250/450/550 per recipient, dot-unstuffed body, "
             "second transaction with no valid recipient")

        # Pipelined in one write, bare LF lines, then BDAT refused (no CHUNKING).
        wire = (b"EHLO c.test\r\nMAIL FROM:<p@example.org> BODY=8BITMIME\r\n"
                b"RCPT TO:<x@example.com>\r\nRCPT TO:<later@example.com>\r\nDATA\r\n")
        data = b"Subject: lf\n\n..dot\nline\r\n.\n"
        lines = _raw(("127.0.0.1", port), wire, 5)
        h.check_eq(lines[-4:], ["250 2.1.0 ok", "250 2.1.5 ok", "450 4.2.0 try later",
                                "354 End data with <CR><LF>.<CR><LF>"], "pipelined replies")
        conn = sh.connections[-1]
        batches = {b for b, _ in conn.commands}
        h.check_eq(len(batches), 1, "one read for the pipelined commands %r" % conn.commands)
        # The data on a connection of its own (one write for everything).
        lines = _raw(("127.0.0.1", port), wire + data + b"BDAT 3 LAST\r\nabcQUIT\r\n", 8)
        h.check_eq(lines[-3:], ["250 2.0.0 ok", "502 5.5.1 Error: command not implemented",
                                "500 5.5.2 Error: command not recognized"],
                   "end of data, BDAT refused")
        t = sh.wait_transactions(2, 5)[-1]
        h.check_eq(t.body, b"Subject: lf\n\n.dot\nline\r\n", "bare-LF body")
        h.check(t.bare_lf, "bare_lf flag")
        h.check_eq(t.params, "BODY=8BITMIME", "MAIL parameters")
        step("ScriptedHub: pipelined commands in one read, answered in order; bare LF "
             "and '.\\n' accepted, line ends kept")

        sh.ehlo_caps = list(DEFAULT_CAPS) + ["CHUNKING"]
        lines = _raw(("127.0.0.1", port),
                     b"EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<x@example.com>\r\n"
                     b"BDAT 5\r\nab\r\n.BDAT 5 LAST\r\n\r\n.\r\nQUIT\r\n", 6)
        h.check_eq(lines[-3:], ["250 2.0.0 5 octets received", "250 2.0.0 ok", "221 2.0.0 Bye"],
                   "BDAT replies")
        t = sh.wait_transactions(3, 5)[-1]
        h.check_eq((t.mail_from, t.via, t.chunks, t.body),
                   ("", "BDAT", [5, 5], b"ab\r\n.\r\n.\r\n"), "BDAT transaction")
        step("ScriptedHub: CHUNKING/BDAT when listed, chunks kept as sent")

        # Down, then up again on the same port.
        sh.stop()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            raise h.Fail("connected to a stopped hub")
        except ConnectionRefusedError:
            pass
        sh.up = True
        h.check_eq(sh.port, port, "port after restart")
        c = smtplib.SMTP("127.0.0.1", port, timeout=5)
        c.sendmail("s@example.org", ["a@example.com"], b"Subject: again\r\n\r\nx\r\n")
        c.quit()
        h.check_eq(len(sh.wait_transactions(4, 5)), 4, "transaction after restart")
        step("ScriptedHub: stop() refuses connections, start() listens on the same port")

        # A stall in DATA: the client times out and closes.
        sh.stall_in_data = True
        c = smtplib.SMTP("127.0.0.1", port, timeout=1)
        t0 = time.monotonic()
        try:
            c.sendmail("s@example.org", ["a@example.com"], b"Subject: stall\r\n\r\nx\r\n")
            raise h.Fail("the stalled DATA was answered")
        except (socket.timeout, smtplib.SMTPServerDisconnected):
            pass
        took = time.monotonic() - t0
        c.close()
        t = sh.wait_transactions(1, 5, state="stalled")
        h.check_eq(len(t), 1, "stalled transactions")
        deadline = time.monotonic() + 5
        while sh.connections[-1].end is None and time.monotonic() < deadline:
            time.sleep(0.02)
        h.check_eq(sh.connections[-1].end, "stall", "the stalled connection's end")
        step("ScriptedHub: stall_in_data: no reply, client gave up after %.1f s, close seen"
             % took)
        sh.stall_drain = True
        data = b"Subject: x\r\n\r\n" + b"y" * 100000 + b"\r\n.\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n"
                      + data)
            t = sh.wait_transactions(2, 5, state="stalled")
            h.check_eq(len(t), 2, "stalled transactions")
            deadline = time.monotonic() + 5
            while t[-1].drained < len(data) and time.monotonic() < deadline:
                time.sleep(0.02)
        deadline = time.monotonic() + 5
        while sh.connections[-1].end is None and time.monotonic() < deadline:
            time.sleep(0.02)
        h.check_eq((t[-1].body, t[-1].drained, sh.connections[-1].end),
                   (b"", len(data), "stall"), "drained stall")
        step("ScriptedHub: stall_drain: data read and dropped, never answered")
        sh.stall_in_data = sh.stall_drain = False

        # 421 closes; a stop drops an open connection.
        sh.rcpt_replies = {"bye@example.com": "421 4.3.0 going away"}
        lines = _raw(("127.0.0.1", port),
                     b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bye@example.com>\r\n", 3)
        h.check_eq(lines[-1], "421 4.3.0 going away", "421 reply")
        deadline = time.monotonic() + 5
        while sh.connections[-1].end is None and time.monotonic() < deadline:
            time.sleep(0.02)
        h.check_eq(sh.connections[-1].end, "421", "connection end after 421")
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        h.check(idle.recv(100).startswith(b"220 "), "greeting")
    h.check_eq(idle.recv(100), b"", "read after stop (closed)")
    idle.close()
    step("ScriptedHub: a 421 reply closes the connection; stop() closes open ones")

    # -- ScriptedHub, LMTP on a unix socket
    sock_path = os.path.join(workdir, "scripted-lmtp.sock")
    with ScriptedHub(proto="lmtp", unix_path=sock_path,
                     rcpt_replies={"nouser@example.com": "550 5.1.1 no such user"},
                     lmtp_replies={"full@example.com": "452 4.2.2 mailbox full"}) as lh:
        c = smtplib.LMTP(sock_path, timeout=5)
        refused = c.sendmail("s@example.org", ["a@example.com", "nouser@example.com"],
                             b"Subject: lmtp\r\n\r\nx\r\n")
        h.check_eq(list(refused), ["nouser@example.com"], "LMTP refused")
        c.quit()
        lines = _raw(sock_path, b"LHLO c\r\nMAIL FROM:<s@x.y>\r\nRCPT TO:<a@example.com>\r\n"
                     b"RCPT TO:<full@example.com>\r\nRCPT TO:<nouser@example.com>\r\n"
                     b"DATA\r\nx\r\n.\r\nQUIT\r\n", 9)
        h.check_eq(lines[-3:], ["250 2.0.0 ok", "452 4.2.2 mailbox full", "221 2.0.0 Bye"],
                   "LMTP per-recipient replies")
        t = lh.wait_transactions(2, 5)[-1]
        h.check_eq(t.data_replies, [("a@example.com", "250 2.0.0 ok"),
                                    ("full@example.com", "452 4.2.2 mailbox full")],
                   "data_replies")
        lines = _raw(sock_path, b"EHLO c\r\n", 1)
        h.check(lines[-1].startswith("500 "), "EHLO refused by LMTP: %r" % lines)
    h.check(not os.path.exists(sock_path), "unix socket left behind")
    step("ScriptedHub LMTP (unix socket): one reply per accepted recipient after the data")
    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.02)
    h.check_eq(threading.active_count(), threads_before, "threads after the hubs stopped")
    step("ScriptedHub: no thread left")

    if os.geteuid() != 0:
        print("%s# PostfixHub and DovecotLmtp skipped: not root" % prefix)
        return len(ok)

    # -- PostfixHub
    cert, key = _make_cert(os.path.join(workdir, "tls"))
    pf = PostfixHub(os.path.join(workdir, "postfix"), tls_cert=cert, tls_key=key,
                    maildir_domains=("example.com", "example.net"))
    t0 = time.monotonic()
    with pf:
        step("PostfixHub started on %s in %.2f s" % (pf.addr, time.monotonic() - t0))
        pids = pf.pids()
        c = smtplib.SMTP("127.0.0.1", pf.port, timeout=10)
        c.ehlo("client.test")
        for f in ("pipelining", "chunking", "8bitmime", "smtputf8", "starttls", "size"):
            h.check(f in c.esmtp_features, "Postfix EHLO lacks %s: %r" % (f, c.esmtp_features))
        c.sendmail("s@example.org", ["alice@example.com", "Bob@Example.NET"],
                   b"Subject: one\r\n\r\n.dot\r\nhello\r\n")
        try:
            c.sendmail("s@example.org", ["x@elsewhere.test"], b"Subject: no\r\n\r\nx\r\n")
            raise h.Fail("Postfix accepted a recipient of another domain")
        except smtplib.SMTPRecipientsRefused as e:
            code = e.recipients["x@elsewhere.test"][0]
            h.check_eq(code, 554, "code for another domain")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.starttls(context=ctx)
        c.ehlo("client.test")
        c.sendmail("s@example.org", ["carol@example.com"], b"Subject: tls\r\n\r\nsecret\r\n")
        c.quit()
        h.check_eq(pf.wait_count(3, 20), 3, "Postfix deliveries")
        msgs = pf.messages()
        h.check(all(b"\r\n" not in d for _, d in msgs), "Maildir files have LF line ends")
        h.check(any(b"\n.dot\nhello\n" in d for _, d in msgs), "unstuffed body")
        h.check_eq(len(pf.messages("bob@example.net")), 1, "bob's Maildir")
        h.check(any("TLS connection established" in l for l in pf.log_lines()),
                "the maillog shows the TLS session")
        h.check(sum(" status=sent " in l for l in pf.log_lines()) >= 3,
                "status=sent lines:\n%s" % pf.log_tail())
        step("PostfixHub: 3 files in its Maildir (one over STARTTLS), found by Delivered-To; "
             "another domain refused with 554, maillog readable")
    h.check(not pf.alive(), "Postfix still running")
    gone(pids + _environ_members("MAIL_CONFIG=" + pf.etc), "Postfix")
    step("PostfixHub stopped, no process left (%d were running)" % len(pids))

    # -- DovecotLmtp: TCP and a unix socket
    sock_path = os.path.join(workdir, "dovecot-lmtp.sock")
    with DovecotLmtp(os.path.join(workdir, "dovecot-unix"), unix_path=sock_path) as dc:
        h.check(dc.port is None, "unix only")
        h.check(_greeting(sock_path, 5).startswith("220 "), "greeting on the unix socket")
    step("DovecotLmtp on a unix socket only")
    t0 = time.monotonic()
    with DovecotLmtp(os.path.join(workdir, "dovecot"), unix_path=sock_path,
                     port=_free_port()) as dc:
        step("DovecotLmtp started on %s and %s in %.2f s" % (dc.addr, sock_path,
                                                              time.monotonic() - t0))
        pids = dc.pids()
        c = smtplib.LMTP("127.0.0.1", dc.port, timeout=10)
        refused = c.sendmail("s@example.org", ["alice@example.com", "nobody@example.com"],
                             b"Subject: lmtp\r\n\r\n.dot\r\nhi\r\n")
        h.check_eq(list(refused), ["nobody@example.com"], "refused users")
        code, text = refused["nobody@example.com"]
        h.check(code == 550 and b"5.1.1" in text, "unknown user reply %r" % (refused,))
        c.quit()
        c = smtplib.LMTP(sock_path, timeout=10)
        c.sendmail("s@example.org", ["bob@example.com"], b"Subject: unix\r\n\r\nhi\r\n")
        c.quit()
        h.check_eq(dc.wait_count("alice@example.com", 1, 10), 1, "alice's messages")
        h.check_eq(dc.wait_count("bob@example.com", 1, 10), 1, "bob's messages")
        h.check(b"\n.dot\nhi\n" in dc.messages("alice@example.com")[0], "alice's body")
        dc.add_user("carol@example.com")
        c = smtplib.LMTP(sock_path, timeout=10)
        c.sendmail("s@example.org", ["carol@example.com"], b"Subject: new\r\n\r\nhi\r\n")
        c.quit()
        h.check_eq(dc.wait_count("carol@example.com", 1, 10), 1, "carol's messages")
        h.check("saved mail to INBOX" in dc.log_text(), "the log names the deliveries:\n%s"
                % dc.log_tail())
        step("DovecotLmtp: delivered over TCP and the unix socket, unknown user %d %s, "
             "a user added while running" % (code, text.decode()))
    h.check(not dc.alive(), "Dovecot still running")
    h.check(not os.path.exists(sock_path), "LMTP socket left behind")
    gone(pids, "Dovecot")
    step("DovecotLmtp stopped, no process left (%d were running)" % len(pids))
    return len(ok)


if __name__ == "__main__":
    if len(sys.argv) in (2, 3) and sys.argv[1] == "--selftest":
        tmp = sys.argv[2] if len(sys.argv) == 3 else tempfile.mkdtemp(prefix="mxring-hubs-")
        try:
            n = self_test(tmp)
        except h.Skip as e:
            print("1..0 # SKIP %s" % e)
            sys.exit(77)
        except h.Fail as e:
            print("Bail out! %s" % e)
            print("# work folder kept: %s" % tmp)
            sys.exit(1)
        print("# hubs self-test: %d passed" % n)
        if len(sys.argv) == 2:
            shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(0)
    print("usage: hubs.py --selftest [WORKDIR]", file=sys.stderr)
    sys.exit(2)
