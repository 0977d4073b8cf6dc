#!/usr/bin/env python3
"""
verify-acks.py - proves that every message mxring-bench saw acknowledged is
stored intact in an mxring spool.

  bench/verify-acks.py ACKLOG SPOOLDIR [--spool-tool PATH] [--method export|cat]
                       [--jobs N] [--sample N] [--exact] [--workdir DIR]

ACKLOG is what `mxring-bench --ack-log FILE` wrote: a '# mxring-bench
ack-log run=RUNID ...' line, then one line per accepted message,
"RUNID-N QUEUEID SIZE". For each line this checks, through mxring-spool:

  - the queue id is in the spool, and only one acknowledgement names it;
  - the stored body is SIZE bytes and begins with
      X-Bench-Sum: <8 hex digits>
      X-Bench-Seq: RUNID-N
    where RUNID-N is the one acknowledged for that queue id;
  - the CRC-32 (zlib's) of everything after the X-Bench-Sum line equals it.

--exact also requires the spool to hold no other message of the same run
(an unacknowledged message of the run that was stored anyway is reported;
a server may legitimately store a message whose 250 was lost, so this is
off by default). --sample N checks the bodies of N random acknowledged
messages instead of all (presence is always checked for all).

How the bodies are read (--method):
  export (default)  `mxring-spool export DIR --maildir TMP` once, then each
                    file: its Return-Path line and the Received trace field
                    (with its continuation lines) are skipped, the rest is
                    the body as the client sent it. One pass over the spool.
                    The export goes to --workdir, by default /dev/shm when
                    the spool fits there twice over (the export syncs every
                    file, which costs nothing on tmpfs), else $TMPDIR.
  cat               `mxring-spool cat DIR QID --body` per message: the
                    documented interface, but each call reads the spool up
                    to the message, so N messages cost N passes: for small
                    spools and for cross-checking the export.

`mxring-spool verify DIR --against ACKLOG` (tools/) is the checker to use:
one pass in C over the spool. This script stays as an independent second
implementation (Python's zlib CRC, bodies read through the maildir export
or `cat --body`) that the tests compare it with.

Exit status: 0 every acknowledged message present and intact; 1 a problem
(each is printed, the first 20 in full); 2 usage error.
"""

import argparse
import concurrent.futures
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import zlib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
HEAD_RE = re.compile(r"^# mxring-bench ack-log run=([0-9a-f]{16})\b")
LINE_RE = re.compile(r"^([0-9a-f]{16})-(\d+) (\S+) (\d+)$")
SUM_RE = re.compile(rb"^X-Bench-Sum: ([0-9a-f]{8})\r\n")
SEQ_RE = re.compile(rb"^X-Bench-Seq: ([0-9a-f]{16}-\d+)\r\n")
QID_RE = re.compile(r"\bqid=(\S+)")
MD_NAME_RE = re.compile(r"Q([0-9A-Za-z]+)N\d+\.")
PROBLEMS_SHOWN = 20


def usage_error(msg):
    sys.stderr.write("verify-acks: %s\nTry 'verify-acks.py --help'.\n" % msg)
    sys.exit(2)


def read_acks(path):
    """(run id, list of (seq, qid, size)) from an ack log."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        usage_error("ACKLOG %s: %s" % (path, e.strerror))
    if not lines or not HEAD_RE.match(lines[0]):
        usage_error("ACKLOG %s: no '# mxring-bench ack-log run=...' first line" % path)
    run = HEAD_RE.match(lines[0]).group(1)
    acks = []
    for n, line in enumerate(lines[1:], 2):
        m = LINE_RE.match(line)
        if not m or m.group(1) != run:
            usage_error("ACKLOG %s:%d: unexpected line %r" % (path, n, line[:120]))
        acks.append(("%s-%s" % (run, m.group(2)), m.group(3), int(m.group(4))))
    return run, acks


def spool(tool, *args):
    p = subprocess.run([tool] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=300)
    return p.returncode, p.stdout, p.stderr


def body_of_export(data):
    """The client's body in an exported maildir file (Return-Path, Received trace, body)."""
    if not data.startswith(b"Return-Path:"):
        return None
    i = data.find(b"\r\n") + 2
    if data.startswith(b"Received:", i):
        i = data.find(b"\r\n", i) + 2
        while 1 < i < len(data) and data[i:i + 1] in (b"\t", b" "):
            i = data.find(b"\r\n", i) + 2
    return data[i:] if i > 1 else None


def check_stored(body, seq, qid, size):
    """None if body is the message acknowledged as seq, else what is wrong."""
    m = SUM_RE.match(body)
    if not m:
        return "%s (%s): the body does not begin with X-Bench-Sum: %r" % (qid, seq, body[:60])
    rest = body[m.end():]
    s = SEQ_RE.match(rest)
    if not s or s.group(1).decode() != seq:
        return "%s: acknowledged as %s but stores %s" % (
            qid, seq, s.group(1).decode() if s else "no X-Bench-Seq line")
    if len(body) != size:
        return "%s (%s): %d bytes stored, %d sent" % (qid, seq, len(body), size)
    want = int(m.group(1), 16)
    got = zlib.crc32(rest) & 0xffffffff
    if got != want:
        return "%s (%s): checksum %08x, X-Bench-Sum says %08x" % (qid, seq, got, want)
    return None


class CatReader:
    """Bodies by `mxring-spool cat DIR QID --body`."""

    def __init__(self, tool, spooldir):
        self.tool, self.spooldir = tool, spooldir

    def body(self, qid):
        rc, body, err = spool(self.tool, "cat", self.spooldir, qid, "--body")
        if rc != 0:
            return None, "mxring-spool cat failed: %s" % err.decode(errors="replace").strip()[:200]
        return body, None

    def close(self):
        pass


def default_workdir(spooldir):
    """/dev/shm when the spool fits there twice over, else None (tempfile's default)."""
    size = 0
    for root, _, files in os.walk(spooldir):
        for f in files:
            try:
                size += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    try:
        st = os.statvfs("/dev/shm")
        if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize > 2 * size:
            return "/dev/shm"
    except OSError:
        pass
    return None


class ExportReader:
    """Bodies from one `mxring-spool export DIR --maildir TMP`."""

    def __init__(self, tool, spooldir, workdir):
        self.tmp = tempfile.mkdtemp(prefix="verify-acks-",
                                    dir=workdir or default_workdir(spooldir))
        out = os.path.join(self.tmp, "md")
        rc, _, err = spool(tool, "export", spooldir, "--maildir", out)
        if rc != 0:
            self.close()
            raise RuntimeError("mxring-spool export failed: %s"
                               % err.decode(errors="replace").strip()[:300])
        self.files = {}
        for name in os.listdir(os.path.join(out, "new")):
            m = MD_NAME_RE.search(name)
            if m:
                self.files[m.group(1)] = os.path.join(out, "new", name)

    def body(self, qid):
        path = self.files.get(qid)
        if not path:
            return None, "not in the maildir export"
        with open(path, "rb") as f:
            body = body_of_export(f.read())
        if body is None:
            return None, "exported file %s does not begin with Return-Path" % path
        return body, None

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def check_one(reader, seq, qid, size):
    body, why = reader.body(qid)
    if body is None:
        return "%s (%s): %s" % (qid, seq, why)
    return check_stored(body, seq, qid, size)


def run_ids_in_spool(reader, run, qids):
    """Sequence ids of this run stored under queue ids not in qids (for --exact)."""
    extra = []
    for qid in sorted(qids):
        body, _ = reader.body(qid)
        m = SUM_RE.match(body) if body else None
        s = SEQ_RE.match(body[m.end():]) if m else None
        if s and s.group(1).decode().startswith(run + "-"):
            extra.append("%s stores %s, which was never acknowledged" % (qid, s.group(1).decode()))
    return extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("acklog")
    ap.add_argument("spooldir")
    ap.add_argument("--spool-tool", default=os.path.join(REPO, "build/tools/mxring-spool"))
    ap.add_argument("--jobs", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--exact", action="store_true")
    ap.add_argument("--method", choices=("export", "cat"), default="export")
    ap.add_argument("--workdir", default=None, help="where the export goes (default $TMPDIR)")
    a = ap.parse_args()
    if not os.access(a.spool_tool, os.X_OK):
        usage_error("--spool-tool %s: not an executable (build it with ninja -C build)"
                    % a.spool_tool)
    if not os.path.isdir(a.spooldir):
        usage_error("SPOOLDIR %s: not a directory" % a.spooldir)
    if a.jobs < 1 or a.sample < 0:
        usage_error("--jobs must be 1 or more and --sample 0 or more")

    run, acks = read_acks(a.acklog)
    rc, out, err = spool(a.spool_tool, "list", a.spooldir)
    if rc != 0:
        print("verify-acks: mxring-spool list %s failed: %s"
              % (a.spooldir, err.decode(errors="replace").strip()))
        return 1
    stored = set(m.group(1) for m in QID_RE.finditer(out.decode(errors="replace")))

    problems = []
    seen_qid, seen_seq = {}, {}
    for seq, qid, size in acks:
        if qid in seen_qid:
            problems.append("%s acknowledged twice (%s and %s)" % (qid, seen_qid[qid], seq))
        if seq in seen_seq:
            problems.append("%s acknowledged twice (%s and %s)" % (seq, seen_seq[seq], qid))
        seen_qid[qid], seen_seq[seq] = seq, qid
        if qid not in stored:
            problems.append("%s (%s): acknowledged but not in the spool" % (qid, seq))
    present = [x for x in acks if x[1] in stored]
    todo = present
    if a.sample and a.sample < len(present):
        todo = random.Random(run).sample(present, a.sample)
    try:
        if a.method == "cat":
            reader = CatReader(a.spool_tool, a.spooldir)
        else:
            reader = ExportReader(a.spool_tool, a.spooldir, a.workdir)
    except RuntimeError as e:
        print("verify-acks: %s" % e)
        return 1
    try:
        with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
            for r in pool.map(lambda x: check_one(reader, *x), todo):
                if r:
                    problems.append(r)
        if a.exact:
            problems += run_ids_in_spool(reader, run, stored - set(seen_qid))
    finally:
        reader.close()

    for p in problems[:PROBLEMS_SHOWN]:
        print("error: " + p)
    if len(problems) > PROBLEMS_SHOWN:
        print("error: ... and %d more" % (len(problems) - PROBLEMS_SHOWN))
    print("run %s: %d acknowledged, %d in the spool (%d stored in all), %d bodies checked, "
          "%d problems" % (run, len(acks), len(present), len(stored), len(todo), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
