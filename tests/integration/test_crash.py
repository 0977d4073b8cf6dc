#!/usr/bin/env python3
"""
test_crash.py - crash consistency: SIGKILL under sustained load, restart on
the same spool, and proof that every acknowledged message survived intact.

One case runs K kill points against one spool. Each round:
  1. several client threads drive load over raw sockets: DATA without
     PIPELINING (one command per write), DATA with PIPELINING (MAIL, RCPTs
     and DATA in one write), and BDAT chunks; bodies of 1 KB to ~600 KB, so
     with the small body_flush_bytes set here most are stored as several
     part records while more bytes arrive. Every message carries a unique id
     (also in MAIL FROM) and a SHA-256 of its payload; the client records
     the exact body digest and what it saw: `250 ... queued as QID` (acked),
     end of data sent but no reply (may or may not be stored), end of data
     never sent (abandoned: must not be stored), 4xx (must not be stored);
  2. at a random moment of a chosen phase the server gets SIGKILL by PID:
     start (0-80 ms after the load starts), burst (0.2-2.5 s in), large
     (0-100 ms after a body over 256 KiB began: parts in flight), ack (right
     after the Nth 250 of the round, N random: the next batch is being
     written), fsync (/proc/PID/task/*/syscall polled until a thread is
     inside fdatasync/fsync, then SIGKILL at once). The spool system call
     each thread was in at the kill is printed and tallied;
  3. a new server starts on the same spool (its recovery cuts torn tails;
     in round 2, and in 1 of 5 rounds of the long mode, a first restart is
     itself SIGKILLed a few ms after its start, inside that recovery), and
     then, with it idle:
       - `mxring-spool verify` exits 0 (orphan parts are information only);
       - `list` gives distinct qids, as many as verify counts;
       - `export --maildir` once; every exported message is indexed by its id:
         EVERY acked message is there under the qid the client saw with a
         byte-identical body, no id is stored twice, every stored body is
         one the clients sent (digest equal, self checksum right), nothing
         abandoned or refused is stored, and every qid any server life
         logged as `queued` is stored.
The load then goes on against the restarted server. At the end the last
server is stopped with SIGTERM (exit 0) and the spool checked once more.

CI runs three cases (segment spool with 5 kill points, maildir with 3,
writers = 2 with 3), 10-25 s in all here (under 60 s with sanitizers).
CRASH_SEED=N (or --seed N) repeats sizes, modes and phases; timing differs.
A long run outside CI:

    tests/integration/test_crash.py --kills 200 [--variant all|segment|maildir|writers2]
        [--minutes M] [--epoch E] [--seed S]

(bench/crash-kill.sh wraps it); the spool is checked after every kill and
started afresh every E kills so that it stays small. It prints the count of
kill points, the acknowledged/stored totals and the outcome, and exits 0/1.
"""

import argparse
import base64
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import harness as h
from harness import check, check_eq

# ---------------------------------------------------------------- settings

VARIANTS = {
    # Small receive buffers and flush threshold: bodies over 16 KiB go to the
    # writer as several PART records while the client is still sending, and
    # small segments rotate under load.
    "segment": {"recv_buffer_size": "4k", "body_flush_bytes": "16k", "segment_size": "2m",
                "shards": "2", "writers": "1"},
    "maildir": {"spool_format": "maildir", "recv_buffer_size": "4k",
                "body_flush_bytes": "16k", "shards": "2", "writers": "1"},
    "writers2": {"recv_buffer_size": "8k", "body_flush_bytes": "32k", "segment_size": "4m",
                 "shards": "2", "writers": "2"},
}

CLIENTS = 6              # load threads per round
REPLY_S = 20.0           # every socket wait
JOIN_S = 30.0            # load threads end after a kill (bounded)
LARGE = 256 * 1024       # "large body in flight" phase threshold
MAX_SIZE = 600 * 1024
PHASES = ("start", "burst", "large", "ack", "fsync")
MAIL_RE = re.compile(r"^crash-([0-9a-z]+-[0-9]+-[0-9]+-[0-9]+)@example\.com$")
QUEUED_LOG_RE = re.compile(r"\bqueued qid=([0-9A-Za-z]{16}) .*?\bfrom=<crash-([0-9a-z-]+)@")

# System calls a thread of the server can be in when it is killed (the ones
# that touch the spool), by machine; /proc/PID/task/TID/syscall names them.
SYSCALLS = {
    "x86_64": {74: "fsync", 75: "fdatasync", 18: "pwrite64", 20: "writev", 296: "pwritev",
               328: "pwritev2", 77: "ftruncate", 82: "rename", 264: "renameat",
               316: "renameat2", 257: "openat", 87: "unlink", 263: "unlinkat", 3: "close",
               1: "write", 17: "pread64", 83: "mkdir", 258: "mkdirat"},
    "aarch64": {82: "fsync", 83: "fdatasync", 68: "pwrite64", 66: "writev", 70: "pwritev",
                287: "pwritev2", 46: "ftruncate", 38: "renameat", 276: "renameat2",
                56: "openat", 35: "unlinkat", 57: "close", 64: "write", 67: "pread64",
                34: "mkdirat"},
}.get(os.uname().machine, {})
SYNC_CALLS = ("fsync", "fdatasync")


def server_syscalls(pid):
    """Names of the spool system calls the server's threads are inside right now."""
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tids:
        try:
            with open("/proc/%d/task/%s/syscall" % (pid, t)) as f:
                first = f.read().split(" ", 1)[0]
        except OSError:
            continue
        if first.isdigit() and int(first) in SYSCALLS:
            out.append(SYSCALLS[int(first)])
    return out


def kill_in_sync(pid, timeout):
    """
    Polls until a thread of pid is inside fsync/fdatasync and SIGKILLs pid
    at once; returns the call's name, or None (not caught within timeout,
    nothing sent).
    """
    try:
        paths = ["/proc/%d/task/%s/syscall" % (pid, t) for t in os.listdir("/proc/%d/task" % pid)]
    except OSError:
        return None
    want = {str(n): name for n, name in SYSCALLS.items() if name in SYNC_CALLS}
    if not want:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in paths:
            try:
                with open(p) as f:
                    name = want.get(f.read(12).split(" ", 1)[0])
            except OSError:
                continue
            if name:
                os.kill(pid, signal.SIGKILL)
                return name
    return None


# ---------------------------------------------------------------- bodies


class Pool:
    """
    A block of text lines the payloads are cut from: lines of 0 to 998
    octets (letters, digits, '+', '/'), some starting with '.' and some just
    '.', so that DATA needs dot-stuffing. A payload starts at a line start
    and ends at a line end (CRLF).
    """

    def __init__(self, rng, size=2 * 1024 * 1024):
        text = base64.b64encode(rng.randbytes(size)).replace(b"=", b"x")
        lines, pos = [], 0
        while pos < len(text):
            r = rng.random()
            n = 998 if r < 0.02 else 0 if r < 0.05 else rng.randint(1, 120)
            line = text[pos:pos + n]
            pos += max(n, 1)
            if rng.random() < 0.05:
                line = b"." + line[1:] if line else b"."
            lines.append(line)
        self.data = b"\r\n".join(lines) + b"\r\n"
        self.starts = [0]
        for l in lines[:-1]:
            self.starts.append(self.starts[-1] + len(l) + 2)

    def cut(self, rng, n):
        """(start, end) of a payload of at least n bytes (fewer when the pool ends)."""
        hi = len(self.data) - n
        i = rng.randrange(len(self.starts))
        while self.starts[i] > hi and i > 0:
            i //= 2
        start = self.starts[i]
        end = self.data.find(b"\r\n", start + max(0, n - 2))
        end = len(self.data) if end < 0 else end + 2
        return start, end


def pick_size(rng):
    r = rng.random()
    if r < 0.40:
        return rng.randint(1024, 8 * 1024)
    if r < 0.70:
        return rng.randint(8 * 1024, 64 * 1024)
    if r < 0.90:
        return rng.randint(64 * 1024, LARGE)
    return rng.randint(LARGE, MAX_SIZE)


class Msg:
    """What the client knows of one message; the body is rebuilt on demand."""

    __slots__ = ("uid", "head", "start", "end", "digest", "size", "nrcpt", "status", "qid",
                 "mode", "life")

    def body(self, pool):
        return self.head + pool.data[self.start:self.end]


def make_msg(pool, rng, uid):
    m = Msg()
    m.uid = uid
    size = pick_size(rng)
    m.start, m.end = pool.cut(rng, size)
    payload = pool.data[m.start:m.end]
    m.head = (b"X-Crash-Id: %s\r\nX-Crash-Sum: %s\r\nX-Crash-Len: %d\r\n"
              b"Subject: crash consistency %s\r\n\r\n"
              % (uid.encode(), hashlib.sha256(payload).hexdigest().encode(), len(payload),
                 uid.encode()))
    body = m.head + payload
    m.digest = hashlib.sha256(body).digest()
    m.size = len(body)
    m.nrcpt = rng.choice((1, 1, 1, 2, 3))
    m.status, m.qid, m.mode, m.life = "new", None, None, None
    return m, body


def self_sum_ok(body):
    """The X-Crash-Sum header equals the SHA-256 of the payload after the header block."""
    head, sep, payload = body.partition(b"\r\n\r\n")
    m = re.search(rb"^X-Crash-Sum: ([0-9a-f]{64})\r?$", head, re.M)
    return bool(sep and m and hashlib.sha256(payload).hexdigest().encode() == m.group(1))


# ---------------------------------------------------------------- client


class Dead(Exception):
    """The connection ended (expected once the server is killed)."""


class ProtoFail(Exception):
    """The server answered something it must not."""


class Conn:
    def __init__(self, port):
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_S)
        except OSError as e:
            raise Dead("connect: %s" % e)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.last = []       # the last few exchanges, for a failure report

    def note(self, s):
        self.last.append(s)
        del self.last[:-8]

    def send(self, data):
        self.note("C: %r" % data[:80])
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Dead("send: %s" % e)

    def line(self):
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise ProtoFail("no reply within %.0f s" % REPLY_S)
            except OSError as e:
                raise Dead("recv: %s" % e)
            if not chunk:
                raise Dead("closed (pending %r)" % self.buf)
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\n")
        self.note("S: %r" % raw)
        if not raw.endswith(b"\r"):
            raise ProtoFail("reply line not ended by CRLF: %r" % raw)
        return raw[:-1].decode("utf-8", "replace")

    def reply(self):
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        if lines[0].startswith("421 "):
            # The server is going away (a failure unless it was told to).
            raise Dead("%r" % lines)
        return lines

    def expect(self, want, what):
        r = self.reply()
        if r != [want]:
            raise ProtoFail("%s: want %r, got %r" % (what, want, r))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Ledger:
    """Every message the clients made, by id; shared by the load threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.msgs = {}
        self.acked = 0

    def add(self, m):
        with self.lock:
            self.msgs[m.uid] = m

    def count(self, status):
        with self.lock:
            return sum(1 for m in self.msgs.values() if m.status == status)


class Load:
    """
    CLIENTS threads sending messages until the server dies or stop is set.
    Errors seen before the kill are failures; connection errors after it
    are expected.
    """

    def __init__(self, port, ledger, pool, token, life, seed):
        self.port, self.ledger, self.pool = port, ledger, pool
        self.token, self.life, self.seed = token, life, seed
        self.stop = False
        self.kill_t = None
        self.errors = []         # (monotonic time, text, is_protocol)
        self.large = threading.Event()
        self.acked = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(CLIENTS)]

    def start(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def _run(self, k):
        rng = random.Random(self.seed * 1000 + k)
        n = 0
        c = None
        while not self.stop:
            try:
                c = Conn(self.port)
                c.expect(h.R_GREETING, "greeting")
                c.send(b"EHLO crash-client-%d.example.org\r\n" % k)
                r = c.reply()
                if r[0] != "250-" + h.HOSTNAME or "250-PIPELINING" not in r \
                        or "250-CHUNKING" not in r:
                    raise ProtoFail("EHLO reply %r" % r)
                for _ in range(rng.randint(1, 12)):
                    if self.stop:
                        break
                    uid = "%s-%d-%d-%d" % (self.token, self.life, k, n)
                    n += 1
                    if not self._one(c, rng, uid):
                        break
                else:
                    if rng.random() < 0.7:
                        c.send(b"QUIT\r\n")
                        c.expect(h.R_QUIT, "QUIT")
                c.close()
            except Dead as e:
                self._error(k, c, "connection: %s" % e, False)
                return
            except ProtoFail as e:
                self._error(k, c, str(e), True)
                return
            except Exception as e:  # noqa: BLE001 - reported as a failure
                self._error(k, c, "%s: %s" % (type(e).__name__, e), True)
                return
            finally:
                if c:
                    c.close()

    def _error(self, k, c, text, proto):
        with self.lock:
            self.errors.append((time.monotonic(), "client %d: %s; last: %s"
                                % (k, text, " | ".join(c.last if c else [])), proto))

    def _one(self, c, rng, uid):
        """One transaction. False: the session ends here (abandoned)."""
        m, body = make_msg(self.pool, rng, uid)
        m.life = self.life
        mode = rng.choice(("data", "pipelined", "pipelined", "bdat"))
        m.mode = mode
        self.ledger.add(m)
        env = [b"MAIL FROM:<crash-%s@example.com>\r\n" % uid.encode()]
        env += [b"RCPT TO:<rcpt%d@example.com>\r\n" % i for i in range(m.nrcpt)]
        want = [h.R_MAIL_OK] + [h.R_RCPT_OK] * m.nrcpt
        if mode != "bdat":
            env.append(b"DATA\r\n")
            want.append(h.R_DATA)
        if mode == "data":
            for cmd, w in zip(env, want):
                c.send(cmd)
                c.expect(w, cmd.split(b":")[0].decode())
        else:
            c.send(b"".join(env))
            for cmd, w in zip(env, want):
                c.expect(w, cmd.split(b":")[0].decode())
        if len(body) >= LARGE:
            self.large.set()
        abandon = rng.random() < 0.03
        if mode == "bdat":
            wire = body
            pos = 0
            while pos < len(wire):
                n = rng.choice((len(wire), rng.randint(1, 128 * 1024)))
                chunk = wire[pos:pos + n]
                last = pos + len(chunk) >= len(wire)
                if abandon and last:
                    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk[:len(chunk) // 2])
                    m.status = "abandoned"
                    return False
                if last:
                    m.status = "sent"
                c.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
                pos += len(chunk)
                if not last:
                    c.expect(h.r_chunk(len(chunk)), "BDAT chunk")
        else:
            wire = body.replace(b"\r\n.", b"\r\n..")
            if abandon:
                c.send(wire[:rng.randint(0, len(wire))])
                m.status = "abandoned"
                return False
            # The final '.' goes in its own write now and then, so it can meet
            # the server in a receive buffer of its own.
            split = rng.randint(0, len(wire)) if rng.random() < 0.8 else len(wire)
            c.send(wire[:split])
            m.status = "sent"
            c.send(wire[split:] + b".\r\n")
        r = c.reply()
        q = h.QUEUED_RE.match(r[0]) if len(r) == 1 else None
        if q:
            m.qid = q.group(1)
            m.status = "acked"
            with self.lock:
                self.acked += 1
            return True
        if len(r) == 1 and r[0][:1] == "4":
            m.status = "refused"
            return True
        raise ProtoFail("reply at end of data of %s: %r" % (uid, r))

    def wait_acked(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.acked < n and self.alive():
            time.sleep(0.002)

    def alive(self):
        return any(t.is_alive() for t in self.threads)

    def join(self):
        self.stop = True
        deadline = time.monotonic() + JOIN_S
        for t in self.threads:
            t.join(max(0, deadline - time.monotonic()))
        check(not self.alive(), "load threads still running %.0f s after the kill" % JOIN_S)

    def failures(self):
        """Errors that are failures: protocol ones, and connection ones before the kill."""
        return [t for (w, t, proto) in self.errors
                if proto or self.kill_t is None or w < self.kill_t]


# ---------------------------------------------------------------- checks


def parse_export(md):
    """{qid: body bytes} of a maildir written by `mxring-spool export --maildir`."""
    out = {}
    for sub in ("new", "cur"):
        d = os.path.join(md, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            m = re.search(r"Q([0-9A-Za-z]{16})N\d+", name)
            check(m is not None, "exported file name %r carries no qid" % name)
            qid = m.group(1)
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            # Return-Path line, the Received: trace of qid, then the client body.
            i = data.find(b"\r\nX-Crash-Id: ")
            check(data.startswith(b"Return-Path: <crash-") and i > 0,
                  "exported %s does not start with Return-Path and hold X-Crash-Id: %r"
                  % (qid, data[:300]))
            trace = data[data.find(b"\r\n") + 2:i + 2]
            check(trace.startswith(b"Received: from ") and b" id %s" % qid.encode() in trace,
                  "trace header of %s: %r" % (qid, trace))
            check(qid not in out, "qid %s exported twice" % qid)
            out[qid] = (data[i + 2:], len(data) - data.find(b"\r\n") - 2)
    return out


class Checker:
    def __init__(self, spool, ledger, pool):
        self.spool, self.ledger, self.pool = spool, ledger, pool
        self.logs = []          # every server life on this spool: (name, log path)
        self.last_verify = ""

    def check(self, what):
        """The whole spool against the ledger; returns a dict of counts."""
        rc, out, err = h.spool_tool("verify", self.spool, check_rc=False)
        text = out.decode("utf-8", "replace")
        self.last_verify = text
        mn = re.search(r"^(\d+) messages?$", text, re.M)
        if rc != 0 or mn is None:
            raise h.Fail("%s: `mxring-spool verify %s` exited %d (want 0: no corrupt record "
                         "after recovery):\n%s%s\n%s"
                         % (what, self.spool, rc, text[-3000:],
                            err.decode("utf-8", "replace")[-1000:], self.spool_files()))
        nver = int(mn.group(1))
        counters = dict(re.findall(r"\b([a-z_]+)=(\d+)", text.splitlines()[-1]))
        entries = h.spool_list(self.spool)
        qids = [e["qid"] for e in entries]
        check_eq(len(set(qids)), len(qids), "%s: distinct qids in `list`" % what)
        check_eq(len(qids), nver, "%s: `list` lines vs verify's count" % what)

        tmp = tempfile.mkdtemp(prefix="mxring-crash-export-",
                               dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
        try:
            md = os.path.join(tmp, "Maildir")
            h.spool_tool("export", self.spool, "--maildir", md, timeout=300)
            stored = parse_export(md)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        check_eq(sorted(stored), sorted(qids), "%s: exported qids vs `list`" % what)

        with self.ledger.lock:
            msgs = dict(self.ledger.msgs)
        by_uid = {}
        problems = []
        for e in entries:
            qid = e["qid"]
            body, msg_size = stored[qid]
            mu = MAIL_RE.match(e["from"])
            hid = re.match(rb"X-Crash-Id: (\S+)\r\n", body)
            if not mu or not hid or hid.group(1).decode() != mu.group(1):
                problems.append("%s: sender %r and body id %r do not match"
                                % (qid, e["from"], hid and hid.group(1)))
                continue
            uid = mu.group(1)
            if e["size"] != msg_size:
                problems.append("%s (%s): list size %d, exported %d" % (qid, uid, e["size"],
                                                                       msg_size))
            by_uid.setdefault(uid, []).append(qid)
            m = msgs.get(uid)
            if m is None:
                problems.append("%s: id %s was never sent by this test" % (qid, uid))
                continue
            if e["rcpts"] != m.nrcpt:
                problems.append("%s (%s): rcpts=%d, sent %d" % (qid, uid, e["rcpts"], m.nrcpt))
            if hashlib.sha256(body).digest() != m.digest or not self_sum_ok(body):
                problems.append(self._diff(qid, m, body))
            if m.status in ("abandoned", "refused", "new"):
                problems.append("%s (%s, %s): stored, but the client %s" % (
                    qid, uid, m.mode,
                    "got a 4xx at its end" if m.status == "refused"
                    else "never sent its end of data"))
        for uid, qs in by_uid.items():
            if len(qs) > 1:
                problems.append("id %s stored %d times: qids %s (sent once)"
                                % (uid, len(qs), " ".join(qs)))
        acked = [m for m in msgs.values() if m.status == "acked"]
        missing = [m for m in acked if m.qid not in stored]
        for m in missing:
            where = by_uid.get(m.uid)
            problems.append("ACKNOWLEDGED %s (%s, %d bytes, %s, life %d) missing from the spool%s"
                            "\n%s" % (m.qid, m.uid, m.size, m.mode, m.life,
                                      " (stored as %s)" % where if where else "",
                                      self.evidence(m.qid)))
        for m in acked:
            if m.qid in stored and by_uid.get(m.uid) != [m.qid]:
                problems.append("acknowledged %s (%s) stored under %s"
                                % (m.qid, m.uid, by_uid.get(m.uid)))
        # Every qid a server logged as queued (after its sync) is stored.
        logged = 0
        for name, path in self.logs:
            for l in _read_lines(path):
                q = QUEUED_LOG_RE.search(l)
                if q:
                    logged += 1
                    if q.group(1) not in stored:
                        problems.append("%s logged 'queued qid=%s' (%s) but it is not stored:"
                                        "\n  %s" % (name, q.group(1), q.group(2), l))
        if problems:
            raise h.Fail("%s: %d problem(s):\n%s\nverify:\n%s" % (
                what, len(problems), "\n".join(problems[:20]), text[-2000:]))
        sent = [m for m in msgs.values() if m.status == "sent"]
        return {"stored": len(stored), "acked": len(acked), "logged": logged,
                "unknown": len(sent), "unknown_stored": sum(1 for m in sent if m.uid in by_uid),
                "abandoned": sum(1 for m in msgs.values() if m.status == "abandoned"),
                "refused": sum(1 for m in msgs.values() if m.status == "refused"),
                "orphans": int(counters.get("orphan_parts", 0))}

    def _diff(self, qid, m, got):
        want = m.body(self.pool)
        i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                 min(len(got), len(want)))
        return ("CORRUPT %s (%s, %s, life %d, status %s): stored body differs at byte %d "
                "(got %d bytes, want %d):\n  want ...%r\n  got  ...%r\n%s"
                % (qid, m.uid, m.mode, m.life, m.status, i, len(got), len(want),
                   want[max(0, i - 40):i + 60], got[max(0, i - 40):i + 60], self.evidence(qid)))

    def evidence(self, qid):
        """Log lines naming qid, and the spool's files, for a failure report."""
        out = []
        for name, path in self.logs:
            for l in _read_lines(path):
                if qid in l or "action=recover" in l or "error" in l:
                    out.append("  %s | %s" % (name, l))
        return "\n".join(out[-40:]) + "\n" + self.spool_files()

    def spool_files(self):
        lines = ["  spool files under %s:" % self.spool]
        for root, _, files in os.walk(self.spool):
            for f in sorted(files):
                p = os.path.join(root, f)
                lines.append("    %s %d" % (os.path.relpath(p, self.spool), os.path.getsize(p)))
        return "\n".join(lines[:60])


def _read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    # A line the kill cut short has no newline: leave it out.
    return data.split("\n")[:-1]


# ---------------------------------------------------------------- the run


class Run:
    """K kill points on one spool."""

    def __init__(self, variant, seed, pool, quiet=False):
        self.variant, self.cfg = variant, dict(VARIANTS[variant])
        self.rng = random.Random(seed)
        self.seed, self.pool, self.quiet = seed, pool, quiet
        self.token = "%x" % (seed & 0xffffffff)
        self.spool = os.path.join(h.new_tmpdir("crash-" + variant), "spool")
        self.ledger = Ledger()
        self.checker = Checker(self.spool, self.ledger, pool)
        self.life = 0
        self.srv = None
        self.last = {}
        self.recovery_kills = 0
        self.at_kill = {}          # spool system call a thread was in at the kill: count

    def say(self, s):
        if not self.quiet:
            print("# " + s)
            sys.stdout.flush()

    def start_server(self):
        self.life += 1
        srv = h.Server(self.cfg, spool_dir=self.spool, tag="crash%d" % self.life)
        srv.start()
        self.checker.logs.append(("life %d" % self.life, srv.log_path))
        self.srv = srv
        return srv

    def kill_starting(self):
        """
        Starts a server on the spool and SIGKILLs it a few milliseconds later,
        usually before it logs 'ready': inside its start-up recovery (cutting
        a torn tail, moving segments into ready/, removing maildir tmp files).
        """
        self.life += 1
        srv = h.Server(self.cfg, spool_dir=self.spool, tag="crash%d" % self.life)
        srv.port = h.free_port()
        with open(srv.conf_path, "w") as f:
            f.write(srv.config_text())
        srv.log_offset = 0
        srv._logf = open(srv.log_path, "ab")
        srv.proc = subprocess.Popen([h.Paths.mxring, "-c", srv.conf_path],
                                    stdin=subprocess.DEVNULL, stdout=srv._logf,
                                    stderr=srv._logf, cwd=srv.tmp)
        time.sleep(self.rng.uniform(0, 0.015))
        srv.kill()
        srv._logf.close()
        srv._logf = None
        srv.check_log_clean()
        self.checker.logs.append(("life %d (killed at start-up)" % self.life, srv.log_path))
        self.recovery_kills += 1
        self.say("  a restart killed %s 'ready'" % ("after" if "ready" in srv.log() else "before"))

    def kill_round(self, i, k, phase, kill_restart=False):
        srv = self.srv
        load = Load(srv.port, self.ledger, self.pool, self.token, self.life,
                    self.seed + self.life).start()
        acked0 = self.ledger.count("acked")
        t0 = time.monotonic()
        if phase == "start":
            time.sleep(self.rng.uniform(0, 0.08))
        elif phase == "burst":
            time.sleep(self.rng.uniform(0.2, 2.5))
        elif phase == "large":
            load.large.wait(5)
            time.sleep(self.rng.uniform(0, 0.1))
        elif phase == "ack":
            load.wait_acked(self.rng.randint(1, 150), 5)
        check(srv.alive(), "mxring (pid %d) died by itself during load: exit %s; log:\n%s"
              % (srv.proc.pid, srv.proc.poll(), srv.log_tail()))
        pid = srv.proc.pid
        caught = None
        if phase == "fsync":
            # Some load first (so that batches are not all tiny), then SIGKILL
            # the first moment a thread is seen inside fdatasync/fsync.
            time.sleep(self.rng.uniform(0, 0.5))
            load.kill_t = time.monotonic()
            caught = kill_in_sync(pid, 5)
        if caught:
            calls = [caught]
        else:
            calls = server_syscalls(pid)
            load.kill_t = time.monotonic()
        srv.kill()              # SIGKILL to this pid (Popen.kill), then wait
        for c in calls or ["none"]:
            self.at_kill[c] = self.at_kill.get(c, 0) + 1
        dt = load.kill_t - t0
        load.join()
        srv.check_log_clean()
        fails = load.failures()
        if fails:
            raise h.Fail("kill %d/%d: client errors while the server was alive:\n%s"
                         % (i, k, "\n".join(fails[:10])))
        if kill_restart:
            self.kill_starting()
        self.start_server()
        st = self.checker.check("kill %d/%d (%s, %.3f s, pid %d)" % (i, k, phase, dt, pid))
        rec = [l.split("mxring: ")[-1] for l in _read_lines(self.srv.log_path)
               if "action=recover" in l and "cut_at" in l]
        self.say("kill %d/%d %s phase=%s at %.3f s (in: %s): +%d acked this round; acked %d "
                 "stored %d (logged queued %d) unknown %d (stored %d) abandoned %d refused %d "
                 "orphan_parts %d%s"
                 % (i, k, self.variant, phase, dt, ",".join(calls) or "-",
                    self.ledger.count("acked") - acked0,
                    st["acked"], st["stored"], st["logged"], st["unknown"],
                    st["unknown_stored"], st["abandoned"], st["refused"], st["orphans"],
                    ("; recovery: " + "; ".join(rec)) if rec else ""))
        self.last = st
        return st

    def run(self, kills, phases=None):
        self.start_server()
        order = list(PHASES)
        self.rng.shuffle(order)
        for i in range(1, kills + 1):
            phase = phases[i - 1] if phases else (order[i - 1] if i <= len(order)
                                                   else self.rng.choice(PHASES))
            # Round 2 also kills the restarted server inside its start-up.
            self.kill_round(i, kills, phase, kill_restart=(i == 2))
        # A last burst on the restarted server, then a clean stop.
        load = Load(self.srv.port, self.ledger, self.pool, self.token, self.life,
                    self.seed + self.life + 7).start()
        load.wait_acked(20, 10)
        load.kill_t = time.monotonic()  # connection errors from here on are the stop
        self.srv.stop()
        load.join()
        fails = load.failures()
        check(not fails, "client errors before the final stop:\n%s" % "\n".join(fails[:10]))
        st = self.checker.check("after the final SIGTERM")
        check(st["acked"] > kills * 5, "only %d messages acknowledged over %d kill points: "
              "the load did not run" % (st["acked"], kills))
        self.last = st
        return st


def seed_arg():
    return int(os.environ.get("CRASH_SEED", "0")) or random.SystemRandom().randrange(1, 1 << 31)


_POOL = []


def pool():
    if not _POOL:
        _POOL.append(Pool(random.Random(20240611)))
    return _POOL[0]


def ci_case(variant, kills):
    def case():
        seed = seed_arg()
        print("# seed %d (CRASH_SEED=%d reproduces sizes, modes and phases)" % (seed, seed))
        t0 = time.monotonic()
        r = Run(variant, seed, pool())
        st = r.run(kills)
        print("# %s: %d kill points, acknowledged %d, stored %d, %.1f s; a thread was inside: %s"
              % (variant, kills, st["acked"], st["stored"], time.monotonic() - t0,
                 ", ".join("%s %d" % kv for kv in sorted(r.at_kill.items()))))
    case.__name__ = "sigkill_%d_points_%s" % (kills, variant)
    return case


suite = h.Suite("crash")
suite.case(ci_case("segment", 5))
suite.case(ci_case("maildir", 3))
suite.case(ci_case("writers2", 3))


# ---------------------------------------------------------------- long mode


def long_run(kills, variant, minutes, epoch, seed):
    def case():
        variants = list(VARIANTS) if variant == "all" else [variant]
        deadline = time.monotonic() + minutes * 60 if minutes else None
        rng = random.Random(seed)
        tot = {"acked": 0, "stored": 0, "unknown": 0, "unknown_stored": 0, "abandoned": 0}
        done = epochs = recovery_kills = 0
        at_kill = {}
        per = {v: 0 for v in variants}
        phases = {p: 0 for p in PHASES}
        outcome = "FAILED"
        t0 = time.monotonic()
        print("# long run: up to %d kill points, variant %s, a fresh spool every %d, seed %d%s"
              % (kills, variant, epoch, seed, ", at most %g min" % minutes if minutes else ""))
        try:
            while done < kills and (deadline is None or time.monotonic() < deadline):
                v = variants[epochs % len(variants)]
                n = min(epoch, kills - done)
                r = Run(v, rng.randrange(1, 1 << 31), pool(), quiet=True)
                r.start_server()
                try:
                    for i in range(1, n + 1):
                        if deadline is not None and time.monotonic() >= deadline:
                            break
                        phase = rng.choice(PHASES)
                        st = r.kill_round(i, n, phase, kill_restart=rng.random() < 0.2)
                        done += 1
                        per[v] += 1
                        phases[phase] += 1
                        print("# kill %d: %s %s: spool %d: acked %d stored %d orphan_parts %d"
                              % (done, v, phase, epochs + 1, st["acked"], st["stored"],
                                 st["orphans"]))
                        sys.stdout.flush()
                    r.srv.stop()
                    st = r.checker.check("spool %d (%s) after the final SIGTERM"
                                         % (epochs + 1, v))
                finally:
                    if r.srv.alive():
                        r.srv.kill()
                epochs += 1
                recovery_kills += r.recovery_kills
                for c, cnt in r.at_kill.items():
                    at_kill[c] = at_kill.get(c, 0) + cnt
                for key in tot:
                    tot[key] += st[key]
                shutil.rmtree(os.path.dirname(r.spool), ignore_errors=True)
            outcome = "PASSED"
        finally:
            print("# kills landed with a server thread inside: %s" % (", ".join(
                "%s %d" % kv for kv in sorted(at_kill.items(), key=lambda kv: -kv[1])) or "-"))
            print("# RESULT %s: %d kill points (%s; phases %s; %d of them also killed a "
                  "restart in start-up) on %d spools in %.0f s: acknowledged %d, every one "
                  "checked present and byte-identical after each kill%s; stored %d "
                  "(end of data sent without a reply seen: %d, of them stored %d; abandoned "
                  "before the end of data: %d, stored 0)"
                  % (outcome, done, ", ".join("%s %d" % kv for kv in per.items()),
                     ", ".join("%s %d" % kv for kv in phases.items()), recovery_kills,
                     epochs, time.monotonic() - t0, tot["acked"],
                     "" if outcome == "PASSED" else " UNTIL THE FAILURE ABOVE (totals of "
                     "the spools completed)", tot["stored"], tot["unknown"],
                     tot["unknown_stored"], tot["abandoned"]))
    case.__name__ = "long_run_%s" % variant
    return case


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--kills", type=int, default=0)
    ap.add_argument("--variant", default="all", choices=["all"] + list(VARIANTS))
    ap.add_argument("--minutes", type=float, default=0)
    ap.add_argument("--epoch", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args, rest = ap.parse_known_args()
    if args.kills > 0:
        global suite
        seed = args.seed or seed_arg()
        suite = h.Suite("crash-long")
        suite.case(long_run(args.kills, args.variant, args.minutes, max(1, args.epoch), seed))
    elif args.seed:
        os.environ["CRASH_SEED"] = str(args.seed)
    suite.main(rest)


if __name__ == "__main__":
    main()
