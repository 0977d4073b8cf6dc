#!/usr/bin/env python3
"""
test_disk.py - disk faults under the spool: write errors (EIO), failed
fsyncs (segment and maildir spools, once or until cleared), a full disk
(ENOSPC, and a small tmpfs grown by remount), a slow disk (a sync slower
than data_timeout; many clients on a small writer ring), a failed cut back
retried once per batch, and SIGTERM or SIGKILL while the disk fails.

The faults come from tests/tools/faultfs, a FUSE pass-through file system
that each case mounts over a folder of its own and always unmounts (see
FaultFS below); the full tmpfs case mounts a small tmpfs. Nothing outside the
case's temporary folders is touched, and every server is on loopback.

What every case holds the receiver to:
  - a message the disk could not store gets exactly the reply the code gives
    for it (451 4.3.0 for a write or sync error, 452 4.3.1 for a full disk,
    451 4.3.0 "queue busy" for a full writer ring), never 250;
  - the session goes on after such a reply, and once the fault is cleared
    new messages get 250 without a restart;
  - every message acknowledged before, during and after the fault is in the
    spool with its body intact, `mxring-spool verify` exits 0, and nothing
    that was refused is stored.

faultfs loses what was written since the last good sync when it fails a
sync (Linux marks such pages clean), so a receiver that acknowledged after
retrying a failed fdatasync would be caught by the body checks.

Skipped when faultfs was not built (no libfuse3), /dev/fuse is missing or
the mount is refused; the tmpfs case needs mount(2) (root).
"""

import os
import shutil
import subprocess
import sys
import threading
import time

import harness as h
from harness import check, check_eq

suite = h.Suite("disk")

FAULTFS = None
FAULTFS_EXPLICIT = False

# The replies the receiver gives when the spool fails (core/smtp.c).
R_TEMPFAIL = "451 4.3.0 Error: queue file write error"
R_NOSPACE = "452 4.3.1 Insufficient system storage"
R_BUSY = "451 4.3.0 Error: queue busy, try again later"

MOUNT_TIMEOUT_S = 10.0
UNMOUNT_TIMEOUT_S = 10.0


def take_faultfs_arg(argv):
    """Removes --faultfs PATH from argv (harness parses the rest); returns (path, explicit)."""
    path = os.environ.get("MXRING_FAULTFS")
    explicit = bool(path)
    if "--faultfs" in argv:
        i = argv.index("--faultfs")
        path = argv[i + 1]
        explicit = True
        del argv[i:i + 2]
    path = path or os.path.join(h.REPO, "build/tests/tools/faultfs")
    return os.path.abspath(path), explicit


# ---------------------------------------------------------------- faultfs


def is_mounted(path):
    try:
        with open("/proc/self/mountinfo") as f:
            return any(l.split()[4] == path for l in f if len(l.split()) > 4)
    except OSError:
        return False


class FaultFS:
    """
    faultfs mounted at <tmp>/mnt over <tmp>/back, driven by <tmp>/control.
    set(write=..., fsync=..., count=..., write_delay_ms=..., fsync_delay_ms=...)
    replaces the control file at once; the next file system operation sees
    it. stop() (also on leaving a with block, whatever happened) unmounts and
    waits for the process, killing it by PID only if it does not end.
    """

    def __init__(self, tag="faultfs"):
        base = h.new_tmpdir(tag)
        self.back = os.path.join(base, "back")
        self.mnt = os.path.join(base, "mnt")
        self.control = os.path.join(base, "control")
        self.log_path = os.path.join(base, "faultfs.log")
        os.mkdir(self.back)
        os.mkdir(self.mnt)
        self.proc = None

    def start(self):
        if not os.path.exists(FAULTFS):
            if FAULTFS_EXPLICIT:
                raise h.Fail("faultfs not found at %s" % FAULTFS)
            raise h.Skip("faultfs not built (libfuse3 missing?): %s" % FAULTFS)
        if not os.path.exists("/dev/fuse"):
            raise h.Skip("no /dev/fuse")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([FAULTFS, self.back, self.mnt, self.control],
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not is_mounted(self.mnt):
            rc = self.proc.poll()
            if rc == 77:
                self.proc = None
                raise h.Skip("FUSE mount refused: %s" % self.log().strip())
            if rc is not None:
                self.proc = None
                raise h.Fail("faultfs exited with %d before mounting:\n%s" % (rc, self.log()))
            if time.monotonic() > deadline:
                self.stop()
                raise h.Fail("faultfs did not mount within %.0f s:\n%s"
                             % (MOUNT_TIMEOUT_S, self.log()))
            time.sleep(0.02)
        os.stat(self.mnt)  # answered by faultfs: it is serving
        return self

    def set(self, **faults):
        tmp = self.control + ".new"
        with open(tmp, "w") as f:
            for k, v in faults.items():
                f.write("%s=%s\n" % (k, v))
        os.replace(tmp, self.control)

    def clear(self):
        self.set()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def injected(self, op=None):
        """How many errors faultfs injected (into op: write, fdatasync, ...)."""
        return sum(1 for l in self.log().splitlines()
                   if l.startswith("faultfs: inject ") and (op is None or " op=%s " % op in l))

    def wait_injected(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.injected() < n:
            check(time.monotonic() < deadline, "faultfs injected %d errors in %.0f s, want %d:\n%s"
                  % (self.injected(), timeout, n, self.log()[-3000:]))
            time.sleep(0.02)

    def stop(self):
        if is_mounted(self.mnt):
            p = h.run_cmd(["fusermount3", "-u", self.mnt], UNMOUNT_TIMEOUT_S) \
                if shutil.which("fusermount3") else None
            if p is None or p.returncode != 0:
                p = h.run_cmd(["umount", self.mnt], UNMOUNT_TIMEOUT_S)
            if p.returncode != 0:
                sys.stdout.write("# unmount of %s failed (%s); detaching it lazily\n"
                                 % (self.mnt, p.stderr.decode().strip()))
                h.run_cmd(["umount", "-l", self.mnt], UNMOUNT_TIMEOUT_S)
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=UNMOUNT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=UNMOUNT_TIMEOUT_S)
                self.proc = None
                raise h.Fail("faultfs did not exit after the unmount (killed):\n%s"
                             % self.log()[-3000:])
            self.proc = None
            check(rc == 0, "faultfs exited with %d:\n%s" % (rc, self.log()[-3000:]))

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        try:
            self.stop()
        except h.Fail:
            if et is None:
                raise
        return False


# ---------------------------------------------------------------- messages


def body_for(tag, n, size=600):
    head = b"Subject: %s %d\r\nX-Tag: %s-%d\r\n\r\n" % (tag.encode(), n, tag.encode(), n)
    line = b"%s line of message %d\r\n" % (tag.encode(), n)
    return head + line * max(1, size // len(line))


def try_message(c, body, timeout=30):
    """One transaction; returns (qid or None, the reply to the end of data)."""
    c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
    c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
    c.cmd("DATA", h.R_DATA)
    c.send(h.dot_stuff(body) + b".\r\n")
    r = c.reply1(timeout)
    m = h.QUEUED_RE.match(r)
    return (m.group(1) if m else None), r


def send_ok(c, tag, count, size=600, acked=None):
    """count messages that must each get 250; adds them to acked ({qid: body})."""
    acked = {} if acked is None else acked
    for k in range(count):
        b = body_for(tag, k, size)
        q, r = try_message(c, b)
        check(q is not None, "%s message %d: want 250 queued, got %r" % (tag, k, r))
        acked[q] = b
    return acked


def send_refused(c, tag, count, want, size=600):
    """count messages that must each get exactly the reply want."""
    for k in range(count):
        q, r = try_message(c, body_for(tag, k, size))
        check(q is None, "%s message %d acknowledged (%s) while the disk failed" % (tag, k, q))
        check_eq(r, want, "%s message %d: reply while the disk fails" % (tag, k))


def check_spool(spool, acked, exact=True):
    """verify exits 0; every acked message is there with its body; with exact, nothing else."""
    n = h.spool_verify(spool)
    ids = [e["qid"] for e in h.spool_list(spool)]
    check_eq(len(ids), len(set(ids)), "queue ids in the spool are distinct")
    missing = sorted(set(acked) - set(ids))
    check(not missing, "%d acknowledged messages missing from the spool, e.g. %r"
          % (len(missing), missing[:5]))
    if exact:
        check_eq(n, len(acked), "messages in the spool (only the acknowledged ones)")
    for q in sorted(acked):
        h.check_body(spool, q, acked[q])
    corrupt = os.path.join(spool, "corrupt")
    if os.path.exists(corrupt):
        raise h.Fail("recovery set bytes aside in corrupt/: %r" % os.listdir(corrupt))
    return ids


def spool_on(fs):
    return os.path.join(fs.mnt, "spool")


# ---------------------------------------------------------------- write and sync errors


def error_then_recovery(fault, want, op, log_error, repaired, cfg=None):
    """
    The common course of the error cases: messages acked, then fault set:
    small and multi-part messages get exactly want on one session, other
    sessions too; fault cleared: the same session and a new one get 250.
    The segment spool logs the operation that failed (op) and, when the cut
    back failed too (repaired), the line saying that it stores again.
    """
    with FaultFS() as fs:
        spool = spool_on(fs)
        with h.Server(cfg, spool_dir=spool) as srv:
            c = srv.client(timeout=30)
            c.ehlo()
            acked = send_ok(c, "before", 3)
            fs.set(**fault)
            send_refused(c, "during", 3, want)
            # Over body_flush_bytes (256 KiB): parts go to the writer while DATA goes on.
            send_refused(c, "during-big", 1, want, size=700000)
            c.cmd("NOOP", h.R_OK)
            c2 = srv.client(timeout=30)
            c2.ehlo()
            send_refused(c2, "during-other", 2, want)
            check(fs.injected() >= 1, "faultfs injected nothing:\n%s" % fs.log())
            fs.clear()
            send_ok(c, "after", 3, acked=acked)
            send_ok(c2, "after-other", 1, size=700000, acked=acked)
            c.quit()
            c2.quit()
            srv.wait_log(r"store-failed qid=\S+ .*error=%s" % log_error, count=6)
            if cfg and cfg.get("spool_format") == "maildir":
                srv.wait_log(r"spool=.* qid=\S+ op=%s file=tmp/\S+ error=\"%s\""
                             % (op, log_error), count=6)
                return fs.log()
            srv.wait_log(r"spool=.* op=%s error=\"%s\" cut_to=\d+ cut=%s"
                         % (op, log_error, "failed" if repaired else "done"))
            if repaired:
                srv.wait_log(r"spool=.* action=cut cut_to=\d+ result=ok batches_failed=\d+")
        check_spool(spool, acked)
        return fs.log()


@suite.case
def write_eio_tempfails_then_recovers():
    log = error_then_recovery({"write": "eio"}, R_TEMPFAIL, "write", "Input/output error", False)
    check(" op=write " in log, "no write failed:\n%s" % log)


@suite.case
def fsync_eio_tempfails_then_recovers():
    # The important one: after a failed fdatasync nothing written since the
    # last good one may be acknowledged, and faultfs has thrown those bytes
    # away; the receiver cuts the segment back and goes on once syncs work.
    log = error_then_recovery({"fsync": "eio"}, R_TEMPFAIL, "fdatasync", "Input/output error",
                              True)
    check(" op=fdatasync " in log, "no fdatasync failed:\n%s" % log)
    check("faultfs: lost bytes=" in log, "no written bytes were lost:\n%s" % log)


@suite.case
def maildir_fsync_eio_tempfails_then_recovers():
    # The same with spool_format = maildir: a file whose fdatasync, or a
    # new/ whose fsync, fails is never acknowledged, and is taken away.
    log = error_then_recovery({"fsync": "eio"}, R_TEMPFAIL, "fdatasync", "Input/output error",
                              False, cfg={"spool_format": "maildir"})
    check(" op=fdatasync " in log, "no fdatasync failed:\n%s" % log)


@suite.case
def fsync_fails_once_batch_not_acked():
    # One failed fdatasync, then every sync succeeds again (as on Linux,
    # where the retry succeeds though the pages were never written): the
    # messages of that batch get 451 all the same, the next ones 250 with no
    # fault left to clear, and only the acknowledged ones are stored.
    with FaultFS() as fs:
        spool = spool_on(fs)
        with h.Server(spool_dir=spool) as srv:
            c = srv.client(timeout=30)
            c.ehlo()
            acked = send_ok(c, "before", 2)
            # A multi-part message: its early parts went out in batches that
            # were not synced, and are cut back with the failed one.
            fs.set(fsync="eio", count=1)
            send_refused(c, "failed-batch", 1, R_TEMPFAIL, size=700000)
            check_eq(fs.injected("fdatasync"), 1, "fdatasyncs failed by faultfs")
            send_ok(c, "after", 2, acked=acked)
            send_ok(c, "after-big", 1, size=700000, acked=acked)
            c.quit()
        check_spool(spool, acked)


@suite.case
def failing_cut_tried_once_per_batch():
    # Syncs fail, each after 1 s. After the first failure the segment cut
    # back cannot be made durable either; the writer retries that cut once
    # per batch, not once per message: 8 messages that arrive together
    # while a try is running fail together with the next try, instead of
    # queueing one slow failing sync each.
    with FaultFS() as fs:
        spool = spool_on(fs)
        with h.Server(spool_dir=spool) as srv:
            c = srv.client(timeout=60)
            c.ehlo()
            acked = send_ok(c, "before", 1)
            fs.set(fsync="eio", fsync_delay_ms=1000)
            send_refused(c, "first", 1, R_TEMPFAIL)  # its sync fails, then the cut's
            check_eq(fs.injected(), 2, "failed syncs for the first message")

            def one(i):
                c = srv.client(timeout=60)
                c.ehlo()
                t0 = time.monotonic()
                q, r = try_message(c, body_for("batch%d" % i, 0), timeout=60)
                c.quit()
                return q, r, time.monotonic() - t0

            results = h.parallel([lambda i=i: one(i) for i in range(8)], timeout=120)
            for q, r, _ in results:
                check(q is None, "message acknowledged (%s) while every sync failed" % q)
                check_eq(r, R_TEMPFAIL, "reply while the cut back cannot be synced")
            tries = fs.injected() - 2
            check(1 <= tries < 8, "%d tries of the cut for 8 messages sent together" % tries)
            print("# 8 messages: %d tries of the cut, answered in %.1f-%.1f s"
                  % (tries, min(r[2] for r in results), max(r[2] for r in results)))
            fs.clear()
            send_ok(c, "after", 2, acked=acked)
            c.quit()
            srv.wait_log(r"spool=.* action=cut cut_to=\d+ result=ok batches_failed=%d\b"
                         % tries)
        check_spool(spool, acked)


@suite.case
def enospc_452_then_recovers():
    error_then_recovery({"write": "enospc"}, R_NOSPACE, "write", "No space left on device", False)


@suite.case
def tmpfs_full_then_grown_recovers():
    # The spool on a 2 MiB tmpfs: once it is full every message gets 452
    # 4.3.1; after the tmpfs grows (remount, as an operator freeing space
    # would) the same session is served again without a restart.
    d = h.new_tmpdir("tmpfs")
    mnt = os.path.join(d, "spool")
    os.mkdir(mnt)
    p = h.run_cmd(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], 10)
    if p.returncode != 0:
        raise h.Skip("cannot mount a small tmpfs: %s" % p.stderr.decode().strip())
    try:
        acked, refused = {}, []
        with h.Server({"segment_size": "256k"}, spool_dir=mnt) as srv:
            c = srv.client(timeout=30)
            c.ehlo()
            for k in range(40):
                b = body_for("fill", k, 100000)
                q, r = try_message(c, b)
                if q:
                    check(not refused, "250 after a 452 on a disk that is still full")
                    acked[q] = b
                else:
                    check_eq(r, R_NOSPACE, "reply on a full disk")
                    refused.append(r)
                    if len(refused) >= 3:
                        break
            check(refused, "40 messages of 100 KB all acknowledged on a 2 MiB spool")
            check(acked, "nothing acknowledged before the disk filled")
            p = h.run_cmd(["mount", "-o", "remount,size=16m", mnt], 10)
            check(p.returncode == 0, "remount: %s" % p.stderr.decode())
            n_before = len(acked)
            for k in range(5):
                b = body_for("grown", k, 100000)
                q, r = try_message(c, b)
                check(q is not None, "message %d after the disk grew: %r" % (k, r))
                acked[q] = b
            c.quit()
            srv.wait_log(r"store-failed .*error=No space left on device", count=len(refused))
            print("# acknowledged %d before the disk filled, %d after it grew"
                  % (n_before, len(acked) - n_before))
        check_spool(mnt, acked)
    finally:
        h.run_cmd(["umount", "-l", mnt], 10)


# ---------------------------------------------------------------- slow disk


@suite.case
def slow_fsync_longer_than_data_timeout():
    # The writer's wait is not the client's: a sync slower than data_timeout
    # still ends in 250 (not 421 timeout). DATA and the content go in one
    # write, so the client itself never idles while the timer runs.
    with FaultFS() as fs:
        spool = spool_on(fs)
        with h.Server({"data_timeout": "1", "min_data_rate": "0"}, spool_dir=spool) as srv:
            c = srv.client(timeout=30)
            c.ehlo()
            acked = send_ok(c, "before", 1)
            fs.set(fsync_delay_ms=2500)
            b = body_for("slow", 0)
            c.cmd("MAIL FROM:<sender@example.com>", h.R_MAIL_OK)
            c.cmd("RCPT TO:<rcpt@example.com>", h.R_RCPT_OK)
            t0 = time.monotonic()
            c.send(b"DATA\r\n" + h.dot_stuff(b) + b".\r\n")
            c.expect(h.R_DATA)
            acked[c.queued(30)] = b
            took = time.monotonic() - t0
            check(took >= 2.4, "250 after %.2f s, before the 2.5 s sync could end" % took)
            fs.clear()
            send_ok(c, "after", 1, acked=acked)
            c.quit()
        check_spool(spool, acked)


@suite.case
def slow_fsync_many_clients_bounded():
    # A 1.5 s sync and 8 clients on a ring of 2 per shard: replies are late
    # but each is 250 or exactly "queue busy" (the ring bounds the queue);
    # once the delay goes, 20 messages take well under what 20 slow syncs
    # would. Nothing acknowledged is lost, nothing refused is stored.
    delay_s = 1.5
    with FaultFS() as fs:
        spool = spool_on(fs)
        with h.Server({"ring_size": "2"}, spool_dir=spool) as srv:
            fs.set(fsync_delay_ms=int(delay_s * 1000))

            def one(i):
                c = srv.client(timeout=60)
                c.ehlo()
                acked, busy, waits = {}, 0, []
                for k in range(3):
                    b = body_for("slow%d" % i, k, 3000)
                    t0 = time.monotonic()
                    q, r = try_message(c, b, timeout=60)
                    if q:
                        acked[q] = b
                        waits.append(time.monotonic() - t0)
                    else:
                        check_eq(r, R_BUSY, "reply while the disk is slow")
                        busy += 1
                c.quit()
                return acked, busy, waits

            results = h.parallel([lambda i=i: one(i) for i in range(8)], timeout=120)
            acked = {}
            for a, _, _ in results:
                acked.update(a)
            busy = sum(r[1] for r in results)
            waits = [w for r in results for w in r[2]]
            check(acked, "nothing acknowledged on a slow disk")
            check(min(waits) >= delay_s - 0.05,
                  "a 250 came %.2f s after the end of data, before the %.1f s sync ended"
                  % (min(waits), delay_s))
            check(busy >= 1, "8 clients on a ring of 2 and a %.1f s sync: no 'queue busy'"
                  % delay_s)
            fs.clear()
            c = srv.client(timeout=30)
            c.ehlo()
            t0 = time.monotonic()
            send_ok(c, "fast", 20, acked=acked)
            took = time.monotonic() - t0
            c.quit()
            check(took < 20 * delay_s / 2, "20 messages took %.1f s after the delay was removed"
                  % took)
            print("# slow: acknowledged %d, busy %d, waits %.2f-%.2f s; 20 after: %.2f s"
                  % (len(acked) - 20, busy, min(waits), max(waits), took))
        check(int(srv.stats().get("ring_full", "0")) == busy,
              "ring_full counter %s, clients saw %d" % (srv.stats().get("ring_full"), busy))
        check_spool(spool, acked)


# ---------------------------------------------------------------- stop and crash while failing


@suite.case
def sigterm_while_syncs_fail():
    # SIGTERM while syncs fail: the receiver still exits 0, says what it
    # could not finish, and the next start (disk fixed) recovers the segment.
    # First with a cut back pending (left in active/), then with only the
    # directory syncs of the final move into ready/ failing.
    with FaultFS() as fs:
        spool = spool_on(fs)
        with h.Server(spool_dir=spool) as srv:
            c = srv.client(timeout=30)
            c.ehlo()
            acked = send_ok(c, "before", 3)
            fs.set(fsync="eio")
            send_refused(c, "during", 1, R_TEMPFAIL)
            c.quit()
        srv.wait_log(r"spool=.* action=close cut=pending result=left_in_active")
        check(os.listdir(os.path.join(spool, "active")), "active/ is empty after the stop")
        fs.clear()
        with h.Server(spool_dir=spool) as srv:
            c = srv.client(timeout=30)
            c.ehlo()
            send_ok(c, "restarted", 2, acked=acked)
            c.quit()
            fs.set(fsync="eio")
        srv.wait_log(r"spool=.* action=recover segments=1")
        srv.wait_log(r"spool .* writer 0: close: Input/output error")
        fs.clear()
        check_spool(spool, acked)



@suite.case
def sigkill_while_disk_fails_then_restart():
    # Syncs fail (after 0.5 s each) while three clients keep sending; the
    # receiver is SIGKILLed in the middle, the fault cleared, and a new
    # receiver on the same spool recovers it: every acked message intact,
    # no corrupt record, new messages served.
    with FaultFS() as fs:
        spool = spool_on(fs)
        srv = h.Server(spool_dir=spool).start()
        c = srv.client(timeout=30)
        c.ehlo()
        acked = send_ok(c, "before", 5)
        c.quit()
        fs.set(fsync="eio", fsync_delay_ms=500)
        stop = threading.Event()
        replies, lock = [], threading.Lock()

        def sender(i):
            try:
                c = srv.client(timeout=30)
                c.ehlo()
                for k in range(200):
                    if stop.is_set():
                        break
                    q, r = try_message(c, body_for("failing%d" % i, k, 5000))
                    with lock:
                        replies.append((q, r))
            except (h.Fail, OSError):
                pass  # the kill cuts the session

        threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(3)]
        for t in threads:
            t.start()
        try:
            # Kill once several messages were refused, most likely inside a sync.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with lock:
                    if len(replies) >= 3:
                        break
                time.sleep(0.02)
            fs.wait_injected(3, timeout=10)
            srv.kill()
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        check(not any(t.is_alive() for t in threads), "client threads still running")
        with lock:
            seen = list(replies)
        check(seen, "no message was answered while syncs failed")
        for q, r in seen:
            check(q is None, "message acknowledged (%s) while every sync failed" % q)
            check_eq(r, R_TEMPFAIL, "reply while syncs fail")
        fs.clear()
        with h.Server(spool_dir=spool) as srv2:
            c = srv2.client(timeout=30)
            c.ehlo()
            send_ok(c, "restarted", 3, acked=acked)
            c.quit()
        ids = check_spool(spool, acked, exact=False)
        print("# %d refused while failing; %d stored, %d acknowledged"
              % (len(seen), len(ids), len(acked)))


if __name__ == "__main__":
    argv = sys.argv[1:]
    FAULTFS, FAULTFS_EXPLICIT = take_faultfs_arg(argv)
    suite.main(argv)
