#!/usr/bin/env python3
"""
test_powercut.py - power loss under load: the promise of a 250 is that the
message survives a power cut at any moment, not only a SIGKILL.

After a SIGKILL the kernel's page cache still holds every write, so a
receiver that answered 250 before its fdatasync, or forgot to fsync a
directory after creating a segment, rotating one into ready/ or renaming a
maildir file into new/, passes test_crash.py. Here the spool lives on
tests/tools/faultfs, which keeps what a power loss would leave of every
write and directory change not yet synced (see POWER CUT in faultfs.c:
strict puts every file and directory back as its last sync left it, torn
lets a random part of the unsynced pages and directory changes survive).
After a cut faultfs fails every change with EIO and is unmounted; a fresh
faultfs over the same backing folder is the rebooted disk.

Cases:
  - powercut_before_each_step_{segment,maildir}: on a fresh spool, faultfs
    cuts just before the Nth operation of one kind (powercut_at), chosen to
    fall in each window of a segment rotation (before the link into
    ready/, its fsync, the unlink from active/, its fsync, the new
    segment's create and its directory sync, a batch's fdatasync) and of a
    maildir delivery (before the create, the fdatasync, the rename into
    new/, the fsync of new/). One client sends one message at a time; after
    the restart the spool holds exactly the acknowledged messages, byte-
    identical, nothing set aside in corrupt/, and new messages are stored.
  - powercut_K_points_{segment,maildir,torn,writers2}: K cut points on one
    spool. Each round: the load of test_crash.py from several client
    threads (DATA with and without PIPELINING and BDAT, bodies of 1 KB to
    ~600 KB with a small body_flush_bytes, so most are stored as several
    PART records while bytes still arrive; segment spools use a small
    segment_size, so segments go into ready/ all along); the cut comes at
    a random moment of a chosen phase - start (0-80 ms into the load), burst
    (0.2-1 s in), large (a body over 256 KiB is on its way), ack (right
    after the Nth 250 of the round), or at-OP (faultfs itself cuts just
    before the Nth write, file sync, directory sync, link, unlink, rename
    or create, N random) - and the server gets SIGKILL right after. In round 2 the
    restarted server's own start-up (its recovery) is cut too, a few
    milliseconds after it starts. Then faultfs is mounted again, a server
    started on it, and the spool checked by test_crash.Checker (with the
    server idle, reading the backing folder, which holds the same bytes):
    `mxring-spool verify` exits 0; `list` gives distinct qids; after
    `export --maildir`, EVERY message that got a 250 (at any time: from the
    cut on every sync fails, so no later 250 is possible) is there under
    its qid, byte-identical; every stored body is one a client sent whole
    (digest and self checksum); nothing abandoned or refused is stored;
    every qid a server logged as queued is stored. After strict cuts
    nothing may be set aside in corrupt/ (the cut leaves each file as its
    last sync did: no torn record); a torn cut may leave a torn tail, which
    recovery cuts or sets aside, and may keep a batch whose sync it failed,
    so a message refused in that round counts as "outcome unknown" there
    (stored or not, but whole if stored: the client retries it). Every run has a cut just before a file
    sync, and fails if its cuts, all together, found nothing unsynced.
Every cut must log untracked=0: a bound of faultfs's tables hit, or an
operation it cannot roll back, fails the case rather than pass unchecked.

CI: about 10-20 s here (longer with sanitizers). POWERCUT_SEED=N (or
--seed N) repeats sizes, modes and phases; timing differs. A longer run by
hand:

    tests/integration/test_powercut.py --cuts 200 [--variant all|segment|maildir|torn|writers2]
        [--minutes M] [--epoch E] [--seed S]

starts a fresh spool every E cuts (default 10) and prints the number of
cut points run and the totals. Skipped when faultfs is not built (no
libfuse3) or FUSE is missing.
"""

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import harness as h
from harness import check
import test_crash as tc
import test_disk as td

# ---------------------------------------------------------------- settings

VARIANTS = {
    # Small buffers and flush threshold: bodies over 16 KiB go to the writer
    # as several PART records while the client still sends; a 512 KiB
    # segment_size moves a segment into ready/ every few messages.
    "segment": ({"recv_buffer_size": "4k", "body_flush_bytes": "16k", "segment_size": "512k",
                 "shards": "2", "writers": "1"}, "strict"),
    "maildir": ({"spool_format": "maildir", "recv_buffer_size": "4k",
                 "body_flush_bytes": "16k", "shards": "2", "writers": "1"}, "strict"),
    "torn": ({"recv_buffer_size": "4k", "body_flush_bytes": "16k", "segment_size": "512k",
              "shards": "2", "writers": "1"}, "torn"),
    # Two writers share active/ and ready/: one's rotation meets the other's
    # directory syncs, so segments rotate often here, by size and, when a
    # writer idles for a second, by age.
    "writers2": ({"recv_buffer_size": "8k", "body_flush_bytes": "32k", "segment_size": "128k",
                  "segment_max_age": "1", "shards": "2", "writers": "2"}, "strict"),
}

PHASES = ("start", "burst", "large", "ack", "at-write", "at-fsync", "at-fsyncdir", "at-move",
          "at-create")
CUT_DONE_S = 20.0        # faultfs ends its cut (bounded)
AT_WAIT_S = 5.0          # the Nth operation of powercut_at comes (else: cut at once)
# powercut_at=OP:N: N is drawn from 1..max, by spool format. A segment spool
# links into ready/, unlinks from active/, creates and syncs directories
# once per rotation (every 512 KiB); a maildir one per message or batch.
# at-move is a link or an unlink (segment), a rename (maildir).
AT_MAX = {
    "segment": {"write": 300, "fsync": 40, "fsyncdir": 4, "link": 3, "unlink": 3, "create": 3},
    "maildir": {"write": 300, "fsync": 40, "fsyncdir": 30, "rename": 40, "create": 40},
}
CUT_RE = re.compile(r"^faultfs: powercut done mode=(\w+) seed=(\d+) at_ns=(\d+) files=(\d+) "
                    r"cut_bytes=(\d+) restored_bytes=(\d+) zeroed_bytes=(\d+) kept_bytes=(\d+) "
                    r"dirs=(\d+) dirs_kept=(\d+) dirs_gone=(\d+) removed=(\d+) restored=(\d+) "
                    r"untracked=(\d+)$", re.M)


# ---------------------------------------------------------------- faultfs


class PowerFS(td.FaultFS):
    """
    faultfs at BASE/mnt over BASE/back, one mount per server life: after a
    cut it is unmounted, and the next PowerFS over the same BASE sees what
    the cut left (the "reboot").
    """

    def __init__(self, base, life):
        self.back = os.path.join(base, "back")
        self.mnt = os.path.join(base, "mnt")
        self.control = os.path.join(base, "control")
        self.log_path = os.path.join(base, "faultfs-%d.log" % life)
        for d in (self.back, self.mnt):
            os.makedirs(d, exist_ok=True)
        self.proc = None
        self.clear()  # no cut asked for by the last mount's control file

    def cut(self, mode):
        """Asks for the cut now; returns at once (the cut runs in faultfs)."""
        check(self.proc is not None and self.proc.poll() is None,
              "faultfs is not running:\n%s" % self.log()[-3000:])
        os.kill(self.proc.pid, signal.SIGUSR1 if mode == "strict" else signal.SIGUSR2)

    def wait_cut(self):
        """The numbers of the cut's log line, once it is there (bounded wait)."""
        deadline = time.monotonic() + CUT_DONE_S
        while True:
            m = CUT_RE.search(self.log())
            if m:
                break
            check(time.monotonic() < deadline, "faultfs logged no finished power cut "
                  "within %.0f s:\n%s" % (CUT_DONE_S, self.log()[-3000:]))
            time.sleep(0.01)
        keys = ("mode", "seed", "at_ns", "files", "cut_bytes", "restored_bytes", "zeroed_bytes",
                "kept_bytes", "dirs", "dirs_kept", "dirs_gone", "removed", "restored",
                "untracked")
        st = dict(zip(keys, m.groups()))
        for k in keys[1:]:
            st[k] = int(st[k])
        untracked = [l for l in self.log().splitlines() if l.startswith("faultfs: untracked")]
        check(st["untracked"] == 0 and not untracked,
              "faultfs could not model everything, so its cut was not exact (a bound was "
              "hit or an operation cannot be rolled back):\n%s" % "\n".join(untracked[:20]))
        return st


def load_failures(load):
    """
    Client errors that are failures: any before the cut; after it only what
    a receiver with a dead disk may not do (a 4xx where a BDAT chunk was
    acknowledged before is what it should do, and a lost connection is the kill).
    """
    out = []
    for w, text, proto in load.errors:
        late = load.kill_t is not None and w >= load.kill_t
        if late and (not proto or re.search(r"got \['4\d\d ", text)):
            continue
        out.append(text)
    return out


# ---------------------------------------------------------------- the run


class Run:
    """K cut points on one spool (one backing folder, remounted after each cut)."""

    def __init__(self, variant, seed, pool, quiet=False):
        self.variant = variant
        self.cfg, self.mode = dict(VARIANTS[variant][0]), VARIANTS[variant][1]
        self.rng = random.Random(seed)
        self.seed, self.pool, self.quiet = seed, pool, quiet
        self.token = "%x" % (seed & 0xffffffff)
        self.base = h.new_tmpdir("powercut-" + variant)
        self.spool = os.path.join(self.base, "mnt", "spool")
        # The checks read the backing folder itself: the same bytes (faultfs
        # keeps no cache), without FUSE's cost on every read.
        self.back_spool = os.path.join(self.base, "back", "spool")
        self.ledger = tc.Ledger()
        self.checker = tc.Checker(self.back_spool, self.ledger, pool)
        self.life = 0
        self.mounts = 0
        self.fs = None
        self.srv = None
        self.at_cut = {}            # spool system call a thread was in at the cut: count
        self.at_ops = {}            # powercut_at kinds: [asked, reached]
        self.tally = {"cut_bytes": 0, "restored_bytes": 0, "zeroed_bytes": 0, "removed": 0,
                      "restored": 0, "files": 0, "dirs": 0, "startup_cuts": 0,
                      "refused_unknown": 0}

    def say(self, s):
        if not self.quiet:
            print("# " + s)
            sys.stdout.flush()

    def mount(self):
        self.mounts += 1
        self.fs = PowerFS(self.base, self.mounts).start()
        return self.fs

    def unmount(self):
        fs, self.fs = self.fs, None
        if fs is not None:
            fs.stop()

    def start_server(self):
        self.life += 1
        srv = h.Server(self.cfg, spool_dir=self.spool, tag="pc%d" % self.life)
        self.checker.logs.append(("life %d" % self.life, srv.log_path))
        self.srv = srv
        srv.start()
        return srv

    def add(self, st):
        for k in ("cut_bytes", "restored_bytes", "zeroed_bytes", "removed", "restored", "files",
                  "dirs"):
            self.tally[k] += st[k]

    def cut_startup(self):
        """
        Starts a server on the spool and cuts the power a few milliseconds
        later, usually inside its start-up recovery (a torn tail cut, segments
        moved into ready/, maildir tmp files removed), then SIGKILLs it.
        """
        self.life += 1
        srv = h.Server(self.cfg, spool_dir=self.spool, tag="pc%d" % self.life)
        srv.port = h.free_port()
        with open(srv.conf_path, "w") as f:
            f.write(srv.config_text())
        srv.log_offset = 0
        srv._logf = open(srv.log_path, "ab")
        srv.proc = subprocess.Popen([h.Paths.mxring, "-c", srv.conf_path],
                                    stdin=subprocess.DEVNULL, stdout=srv._logf,
                                    stderr=srv._logf, cwd=srv.tmp)
        time.sleep(self.rng.uniform(0, 0.015))
        self.fs.cut(self.mode)
        srv.kill()
        srv._logf.close()
        srv._logf = None
        srv.check_log_clean()
        self.checker.logs.append(("life %d (cut in start-up)" % self.life, srv.log_path))
        st = self.fs.wait_cut()
        self.add(st)
        self.unmount()
        self.mount()
        self.tally["startup_cuts"] += 1
        self.say("  a restart was cut %s 'ready' (%s)"
                 % ("after" if "ready" in srv.log() else "before", self.cut_text(st)))

    @staticmethod
    def cut_text(st):
        return ("%s cut: %d files, %d bytes cut, %d zeroed, %d restored; %d dirs, %d names "
                "removed, %d brought back" % (st["mode"], st["files"], st["cut_bytes"],
                                              st["zeroed_bytes"], st["restored_bytes"],
                                              st["dirs"], st["removed"], st["restored"]))

    def arm(self, phase):
        """For an at-OP phase: asks faultfs to cut just before the Nth OP; returns 'OP:N'."""
        if not phase.startswith("at-"):
            return None
        op = phase[3:]
        fmt = "maildir" if self.cfg.get("spool_format") == "maildir" else "segment"
        if op == "move":
            op = "rename" if fmt == "maildir" else self.rng.choice(("link", "unlink"))
        at = "%s:%d" % (op, self.rng.randint(1, AT_MAX[fmt][op]))
        self.fs.set(powercut=self.mode, powercut_at=at,
                    powercut_seed=self.rng.randrange(1, 1 << 62))
        return at

    def wait_phase(self, phase, load):
        """Sleeps into the chosen moment; for at-OP phases waits for faultfs's own cut."""
        if phase == "start":
            time.sleep(self.rng.uniform(0, 0.08))
        elif phase == "burst":
            time.sleep(self.rng.uniform(0.2, 1.0))
        elif phase == "large":
            load.large.wait(5)
            time.sleep(self.rng.uniform(0, 0.1))
        elif phase == "ack":
            load.wait_acked(self.rng.randint(1, 100), 5)
        else:
            deadline = time.monotonic() + AT_WAIT_S
            while time.monotonic() < deadline and "faultfs: powercut done" not in self.fs.log():
                time.sleep(0.002)
            return "faultfs: powercut done" in self.fs.log()
        return False

    def refused_unknown(self, cut_t):
        """
        After a torn cut, a message refused with a 4xx in that round (the
        cut is what fails a batch here) may be stored all the same: its batch reached the disk though the sync
        failed (the dead disk then refused the receiver's cut back too), as
        real disks do. The client retries it: a duplicate, never a loss.
        Such messages count as "sent, outcome unknown" (stored or not, but
        whole if stored). A strict cut keeps no unsynced byte, so there a
        refused message must not be stored.
        """
        with self.ledger.lock:
            for m in self.ledger.msgs.values():
                if m.status == "refused" and m.life == self.life:
                    m.status = "sent"
                    self.tally["refused_unknown"] += 1

    def check_spool(self, what):
        st = self.checker.check(what)
        corrupt = os.path.join(self.back_spool, "corrupt")
        st["corrupt"] = len(os.listdir(corrupt)) if os.path.isdir(corrupt) else 0
        if self.mode == "strict" and st["corrupt"]:
            raise h.Fail("%s: recovery set bytes aside in corrupt/ after strict power cuts, "
                         "which leave no torn record: %r\n%s"
                         % (what, os.listdir(corrupt), self.checker.spool_files()))
        return st

    def cut_round(self, i, k, phase, cut_restart=False):
        srv = self.srv
        at = self.arm(phase)
        load = tc.Load(srv.port, self.ledger, self.pool, self.token, self.life,
                       self.seed + self.life).start()
        acked0 = self.ledger.count("acked")
        t0 = time.monotonic()
        pid = srv.proc.pid
        reached = self.wait_phase(phase, load)
        check(srv.alive(), "mxring (pid %d) died by itself during load: exit %s; log:\n%s"
              % (pid, srv.proc.poll(), srv.log_tail()))
        calls = tc.server_syscalls(pid)
        # The power goes (faultfs did it already when its Nth operation
        # came), then the machine stops: no 250 can follow (every sync fails
        # from the cut on), and the receiver cannot write more.
        t_cut = time.monotonic()
        if not reached:
            self.fs.cut(self.mode)
        srv.kill()
        st_cut = self.fs.wait_cut()
        self.add(st_cut)
        # Client errors from the moment faultfs froze are the cut's doing.
        load.kill_t = min(t_cut, st_cut["at_ns"] / 1e9)
        dt = load.kill_t - t0
        before = re.search(r"^faultfs: powercut before (op=\S+ path=\S+)$", self.fs.log(), re.M)
        if before:
            at += " " + before.group(1)
        if at:
            a = self.at_ops.setdefault(at.split(":")[0], [0, 0])
            a[0] += 1
            a[1] += 1 if reached else 0
        for c in calls or ["none"]:
            self.at_cut[c] = self.at_cut.get(c, 0) + 1
        load.join()
        srv.check_log_clean()
        fails = load_failures(load)
        if fails:
            raise h.Fail("cut %d/%d: client errors while the server was alive:\n%s"
                         % (i, k, "\n".join(fails[:10])))
        if self.mode == "torn":
            self.refused_unknown(load.kill_t)
        self.unmount()
        self.mount()
        if cut_restart:
            self.cut_startup()
        self.start_server()
        st = self.check_spool("cut %d/%d (%s, %.3f s, pid %d, %s)"
                              % (i, k, phase, dt, pid, self.cut_text(st_cut)))
        rec = [l.split("mxring: ")[-1] for l in tc._read_lines(self.srv.log_path)
               if "action=recover" in l and ("cut_at" in l or "saved=" in l)]
        self.say("cut %d/%d %s phase=%s%s at %.3f s (in: %s): %s; +%d acked this round; "
                 "acked %d stored %d (logged queued %d) unknown %d (stored %d) abandoned %d "
                 "refused %d corrupt %d%s"
                 % (i, k, self.variant, phase, "" if not at else " %s%s" % (
                     at, "" if reached else " (not reached: cut at once)"),
                    dt, ",".join(calls) or "-", self.cut_text(st_cut),
                    self.ledger.count("acked") - acked0, st["acked"], st["stored"],
                    st["logged"], st["unknown"], st["unknown_stored"], st["abandoned"],
                    st["refused"], st["corrupt"],
                    ("; recovery: " + "; ".join(rec)) if rec else ""))
        return st

    def run(self, cuts, phases=None):
        self.mount()
        try:
            self.start_server()
            order = list(PHASES)
            self.rng.shuffle(order)
            # A cut just before a file sync always finds that batch unsynced:
            # one such round at least, so that the run cannot be vacuous.
            if cuts < len(order) and "at-fsync" not in order[:cuts]:
                i = order.index("at-fsync")
                j = self.rng.randrange(cuts)
                order[i], order[j] = order[j], order[i]
            st = None
            for i in range(1, cuts + 1):
                phase = phases[i - 1] if phases else (order[i - 1] if i <= len(order)
                                                       else self.rng.choice(PHASES))
                st = self.cut_round(i, cuts, phase, cut_restart=(i == 2))
            # A last burst on the restarted server, then a clean stop.
            load = tc.Load(self.srv.port, self.ledger, self.pool, self.token, self.life,
                           self.seed + self.life + 7).start()
            load.wait_acked(20, 10)
            load.kill_t = time.monotonic()  # connection errors from here on are the stop
            self.srv.stop()
            load.join()
            fails = load.failures()
            check(not fails, "client errors before the final stop:\n%s" % "\n".join(fails[:10]))
            st = self.check_spool("after the final SIGTERM")
            check(st["acked"] > cuts * 5, "only %d messages acknowledged over %d cut points: "
                  "the load did not run" % (st["acked"], cuts))
            # The cuts must have found something unsynced (a torn cut may
            # then keep it), or the run proved nothing.
            check(self.tally["files"] + self.tally["dirs"] > 0,
                  "%d power cuts under load found nothing unsynced" % cuts)
            return st
        finally:
            if self.srv is not None and self.srv.alive():
                self.srv.kill()
            self.unmount()


# ---------------------------------------------------------------- each step


def step_cut(variant, at, size):
    """
    One fresh spool: two messages acknowledged, then faultfs told to cut
    just before the Nth operation at ('OP:N') while one client sends
    messages of size bytes one by one; the server is SIGKILLed, the spool
    remounted and a new server started on it: it must start, keep every
    acknowledged message byte-identical and nothing else, set nothing
    aside, and store new messages. Returns the cut's numbers, the
    acknowledged count and the operation the cut came before.
    """
    cfg, mode = dict(VARIANTS[variant][0]), VARIANTS[variant][1]
    base = h.new_tmpdir("powercut-step")
    spool = os.path.join(base, "mnt", "spool")
    fs = PowerFS(base, 1).start()
    srv = None
    try:
        srv = h.Server(cfg, spool_dir=spool, tag="pcstep").start()
        c = srv.client(timeout=30)
        c.ehlo()
        acked = td.send_ok(c, "before", 2, size=size)
        fs.set(powercut=mode, powercut_at=at)
        deadline = time.monotonic() + AT_WAIT_S
        k = 0
        while "faultfs: powercut done" not in fs.log():
            check(time.monotonic() < deadline, "faultfs met no %s within %.0f s of load:\n%s"
                  % (at, AT_WAIT_S, fs.log()[-2000:]))
            b = td.body_for("during", k, size)
            k += 1
            q, r = td.try_message(c, b)
            if q is None:
                check(r == td.R_TEMPFAIL, "reply %r (want 250 or %r)" % (r, td.R_TEMPFAIL))
                break
            acked[q] = b
        srv.kill()
        st = fs.wait_cut()
        before = re.search(r"^faultfs: powercut before (op=\S+ path=\S+)$", fs.log(), re.M)
        fs.stop()
        fs = PowerFS(base, 2).start()
        with h.Server(cfg, spool_dir=spool, tag="pcstep2") as srv2:
            c = srv2.client(timeout=30)
            c.ehlo()
            td.send_ok(c, "after", 2, size=size, acked=acked)
            c.quit()
        # One client saw every reply: exactly the acknowledged messages are stored.
        td.check_spool(os.path.join(base, "back", "spool"), acked, exact=True)
        return st, len(acked), before.group(1) if before else "?"
    finally:
        if srv is not None and srv.alive():
            srv.kill()
        fs.stop()


def steps_case(variant, steps, size):
    def case():
        for at in steps:
            st, n, where = step_cut(variant, at, size)
            print("# %s before %s (%s): %s; %d acknowledged, all kept"
                  % (variant, at, where, Run.cut_text(st), n))
    case.__name__ = "powercut_before_each_step_%s" % variant
    return case


def seed_arg():
    return int(os.environ.get("POWERCUT_SEED", "0")) or random.SystemRandom().randrange(1, 1 << 31)


def ci_case(variant, cuts):
    def case():
        seed = seed_arg()
        print("# seed %d (POWERCUT_SEED=%d reproduces sizes, modes and phases)" % (seed, seed))
        t0 = time.monotonic()
        r = Run(variant, seed, tc.pool())
        st = r.run(cuts)
        print("# %s: %d cut points (+%d in start-up), acknowledged %d, stored %d, %.1f s; "
              "taken away by the cuts: %d bytes cut, %d zeroed, %d names; cut before the "
              "Nth op (asked/reached): %s; a thread was inside: %s"
              % (variant, cuts, r.tally["startup_cuts"], st["acked"], st["stored"],
                 time.monotonic() - t0, r.tally["cut_bytes"], r.tally["zeroed_bytes"],
                 r.tally["removed"],
                 ", ".join("%s %d/%d" % (k, v[0], v[1]) for k, v in sorted(r.at_ops.items()))
                 or "-", ", ".join("%s %d" % kv for kv in sorted(r.at_cut.items()))))
    case.__name__ = "powercut_%d_points_%s" % (cuts, variant)
    return case


suite = h.Suite("powercut")
# A rotation: link into ready/, fsync ready/, unlink from active/, fsync
# active/, create the next segment, write and sync its header, fsync
# active/ again; then the next batch's fdatasync.
suite.case(steps_case("segment", ["link:1", "fsyncdir:1", "unlink:1", "fsyncdir:2", "create:1",
                                  "fsyncdir:3", "fsync:3"], 200000))
# A delivery: create in tmp/, write, fdatasync, rename into new/, fsync new/.
suite.case(steps_case("maildir", ["create:2", "fsync:2", "rename:2", "fsyncdir:1",
                                  "fsyncdir:3"], 30000))
suite.case(ci_case("segment", 8))
suite.case(ci_case("maildir", 6))
suite.case(ci_case("torn", 5))
suite.case(ci_case("writers2", 4))


# ---------------------------------------------------------------- long mode


def long_run(cuts, variant, minutes, epoch, seed):
    def case():
        variants = list(VARIANTS) if variant == "all" else [variant]
        deadline = time.monotonic() + minutes * 60 if minutes else None
        rng = random.Random(seed)
        tot = {"acked": 0, "stored": 0, "unknown": 0, "unknown_stored": 0, "abandoned": 0}
        done = epochs = startup_cuts = 0
        taken = {"cut_bytes": 0, "zeroed_bytes": 0, "removed": 0}
        per = {v: 0 for v in variants}
        phases = {p: 0 for p in PHASES}
        outcome = "FAILED"
        t0 = time.monotonic()
        print("# long run: up to %d cut points, variant %s, a fresh spool every %d, seed %d%s"
              % (cuts, variant, epoch, seed, ", at most %g min" % minutes if minutes else ""))
        try:
            while done < cuts and (deadline is None or time.monotonic() < deadline):
                v = variants[epochs % len(variants)]
                n = min(epoch, cuts - done)
                r = Run(v, rng.randrange(1, 1 << 31), tc.pool(), quiet=True)
                r.mount()
                try:
                    r.start_server()
                    for i in range(1, n + 1):
                        if deadline is not None and time.monotonic() >= deadline:
                            break
                        phase = rng.choice(PHASES)
                        st = r.cut_round(i, n, phase, cut_restart=rng.random() < 0.2)
                        done += 1
                        per[v] += 1
                        phases[phase] += 1
                        print("# cut %d: %s %s: spool %d: acked %d stored %d corrupt %d"
                              % (done, v, phase, epochs + 1, st["acked"], st["stored"],
                                 st["corrupt"]))
                        sys.stdout.flush()
                    r.srv.stop()
                    st = r.check_spool("spool %d (%s) after the final SIGTERM" % (epochs + 1, v))
                finally:
                    if r.srv is not None and r.srv.alive():
                        r.srv.kill()
                    r.unmount()
                epochs += 1
                startup_cuts += r.tally["startup_cuts"]
                for key in tot:
                    tot[key] += st[key]
                for key in taken:
                    taken[key] += r.tally[key]
                shutil.rmtree(r.base, ignore_errors=True)
            outcome = "PASSED"
        finally:
            print("# RESULT %s: %d cut points (%s; phases %s; +%d cuts inside a restart's "
                  "start-up) on %d spools in %.0f s: acknowledged %d, every one checked "
                  "present and byte-identical after each cut%s; stored %d (end of data sent "
                  "without a reply seen: %d, of them stored %d; abandoned: %d, stored 0); "
                  "the cuts took away %d bytes, zeroed %d, removed %d names"
                  % (outcome, done, ", ".join("%s %d" % kv for kv in per.items()),
                     ", ".join("%s %d" % kv for kv in phases.items()), startup_cuts, epochs,
                     time.monotonic() - t0, tot["acked"],
                     "" if outcome == "PASSED" else " UNTIL THE FAILURE ABOVE (totals of "
                     "the spools completed)", tot["stored"], tot["unknown"],
                     tot["unknown_stored"], tot["abandoned"], taken["cut_bytes"],
                     taken["zeroed_bytes"], taken["removed"]))
    case.__name__ = "long_run_%s" % variant
    return case


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--cuts", type=int, default=0)
    ap.add_argument("--variant", default="all", choices=["all"] + list(VARIANTS))
    ap.add_argument("--minutes", type=float, default=0)
    ap.add_argument("--epoch", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args, rest = ap.parse_known_args()
    td.FAULTFS, td.FAULTFS_EXPLICIT = td.take_faultfs_arg(rest)
    if args.cuts > 0:
        global suite
        seed = args.seed or seed_arg()
        suite = h.Suite("powercut-long")
        suite.case(long_run(args.cuts, args.variant, args.minutes, max(1, args.epoch), seed))
    elif args.seed:
        os.environ["POWERCUT_SEED"] = str(args.seed)
    suite.main(rest)


if __name__ == "__main__":
    main()
