#!/usr/bin/env python3
"""
test_priv.py - running as an unprivileged user (user, group, allow_root).

Checked, on the running process (/proc/PID/task/*/status, every thread):
  - started as root with user = nobody, group = nogroup: every thread has
    uid and gid 65534, the one supplementary group 65534, no capability in
    any set (effective, permitted, inheritable, ambient, bounding) and
    NoNewPrivs 1; the ready line names the user; plaintext and STARTTLS
    (Python smtplib) messages are stored, in a spool that an earlier run as
    root had made: its folders, lock file and segments are the user's now
    and mxring-spool verify counts every message; SIGHUP reloads a new
    certificate as that user, and an unreadable new key is refused by the
    reload (the old certificate stays);
  - started as root without user: exit 2 and a message, before anything is
    made (no spool folder); an unknown user or group, and user = root:
    exit 1 and a message;
  - a key the user cannot read: exit 1 at start, naming the file, instead
    of a process whose every reload would fail;
  - started as nobody: no capability, NoNewPrivs 1; user = another account:
    exit 1 (becoming someone else needs root);
  - the sandbox (Landlock, io_uring restrictions): the ready line says so;
    each shard's ring refuses an openat (a test-only probe,
    MXRING_TEST_URING_PROBE) with EACCES, and allows it with sandbox = no; a
    SIGHUP whose certificate and key now link to another folder fails with
    "Permission denied", and loads with sandbox = no;
  - mxring --check: 0 for a good set-up, 0 with a warning for a key others
    may read, 1 naming the problem for a key the user cannot read, a key of
    another certificate, a spool the user cannot write, root without user;
    2 for a bad configuration.

Every case but the refusal of an unknown user needs root (the tests run as
root on CI) and the account nobody; without them they are skipped.
"""

import grp
import os
import pwd
import shutil
import signal
import smtplib
import ssl
import stat

import harness as h

suite = h.Suite("priv")
check, check_eq = h.check, h.check_eq

CERT_TOOL = os.path.join(h.REPO, "tools", "mxring-cert.sh")
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def need_root_and_nobody():
    if os.geteuid() != 0:
        raise h.Skip("needs root")
    try:
        pw = pwd.getpwnam("nobody")
        gr = grp.getgrnam("nogroup")
    except KeyError:
        raise h.Skip("no account nobody or group nogroup")
    return pw.pw_uid, gr.gr_gid


def statuses(pid):
    """{tid: {key: value}} from /proc/pid/task/*/status."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        fields = {}
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    fields[k] = v.strip()
        except FileNotFoundError:
            continue
        out[tid] = fields
    check(len(out) >= 3, "threads of %d: %r" % (pid, sorted(out)))
    return out


def check_no_capabilities(pid, bounding=True):
    for tid, st in statuses(pid).items():
        for k in CAP_SETS:
            if k == "CapBnd" and not bounding:
                continue
            check_eq(int(st[k], 16), 0, "%s of thread %s (%s)" % (k, tid, st.get("Name")))
        check_eq(st["NoNewPrivs"], "1", "NoNewPrivs of thread %s" % tid)


def open_dir(path):
    """A temporary folder the user may pass through (mkdtemp makes 0700)."""
    os.chmod(path, 0o755)
    return path


def make_certs(tag, gid):
    """cert.pem (0644), key.pem and ticket.keys (0640, group gid): the user reads them."""
    d = open_dir(h.new_tmpdir(tag))
    h.require_program("openssl")
    p = h.run_cmd(["bash", CERT_TOOL, d, h.HOSTNAME], 60)
    check_eq(p.returncode, 0, "mxring-cert.sh exit status (stderr %r)" % p.stderr)
    os.chmod(os.path.join(d, "cert.pem"), 0o644)
    for name in ("key.pem", "ticket.keys"):
        path = os.path.join(d, name)
        os.chown(path, 0, gid)
        os.chmod(path, 0o640)
    return d


def tls_cfg(certs):
    return {"tls_security_level": "may",
            "tls_cert_file": os.path.join(certs, "cert.pem"),
            "tls_key_file": os.path.join(certs, "key.pem"),
            "tls_ticket_key_file": os.path.join(certs, "ticket.keys")}


def send(srv, starttls, n=1):
    for i in range(n):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=20) as s:
            s.ehlo("client.example.org")
            if starttls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s.starttls(context=ctx)
                s.ehlo("client.example.org")
            s.sendmail("sender@example.com", ["rcpt@%s" % h.DOMAIN],
                       b"Subject: priv %d\r\n\r\nbody\r\n" % i)


def tls_subject(srv):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=20) as s:
        s.ehlo("client.example.org")
        s.starttls(context=ctx)
        return s.sock.getpeercert(binary_form=True)


def owned_by(path, uid, gid, what):
    st = os.lstat(path)
    check_eq((st.st_uid, st.st_gid), (uid, gid), "owner of %s (%s)" % (what, path))


@suite.case
def runs_as_user_with_no_capabilities():
    uid, gid = need_root_and_nobody()
    certs = make_certs("certs", gid)
    # An earlier run as root made the spool and stored a message.
    first = h.Server(tls_cfg(certs), tag="asroot")
    open_dir(first.tmp)
    with first as srv:
        send(srv, starttls=False)
        srv.stop()
    spool = first.spool
    cfg = dict(tls_cfg(certs), user="nobody", group="nogroup", allow_root=None)
    with h.Server(cfg, spool_dir=spool, tag="nobody") as srv:
        ready = srv.wait_log(r"\bready\b.*\buser=nobody\b")
        check(ready, "ready line without user=nobody:\n%s" % srv.log_tail())
        for tid, st in statuses(srv.proc.pid).items():
            check_eq(st["Uid"].split(), [str(uid)] * 4, "Uid of thread %s" % tid)
            check_eq(st["Gid"].split(), [str(gid)] * 4, "Gid of thread %s" % tid)
            check_eq(st["Groups"].split(), [str(gid)], "Groups of thread %s" % tid)
        check_no_capabilities(srv.proc.pid)
        send(srv, starttls=False)
        send(srv, starttls=True, n=2)
        # The spool is the user's, also what the run as root had made.
        owned_by(spool, uid, gid, "spool_dir")
        for name in os.listdir(spool):
            owned_by(os.path.join(spool, name), uid, gid, name)
        active = os.path.join(spool, "active")
        for name in os.listdir(active):
            owned_by(os.path.join(active, name), uid, gid, "active/" + name)
        # SIGHUP as the user: a new certificate loads.
        before = tls_subject(srv)
        fresh = make_certs("fresh", gid)
        for name in ("cert.pem", "key.pem"):
            shutil.copy2(os.path.join(fresh, name), os.path.join(certs, name) + ".new")
            os.chown(os.path.join(certs, name) + ".new", 0, gid)
            os.replace(os.path.join(certs, name) + ".new", os.path.join(certs, name))
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"\breload: tls certificate and keys loaded\b")
        after = tls_subject(srv)
        check(after != before, "the certificate did not change with the reload")
        # A key only root may read: the reload fails, the old pair stays.
        key = os.path.join(certs, "key.pem")
        os.chmod(key, 0o600)
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"\breload: failed, keeping the old tls context\b")
        check_eq(tls_subject(srv), after, "certificate after a failed reload")
        srv.stop()
        check_eq(srv.exit_code, 0, "exit status")
    check_eq(h.spool_verify(spool), 4, "messages in the spool (mxring-spool verify)")


@suite.case
def root_without_user_is_refused():
    if os.geteuid() != 0:
        raise h.Skip("needs root")
    d = h.new_tmpdir("refused")
    spool = os.path.join(d, "spool")
    p = h.run_cmd([h.Paths.mxring, "-o", "listen=127.0.0.1:%d" % h.free_port(),
                   "-o", "spool_dir=" + spool], 15)
    err = p.stderr.decode("utf-8", "replace")
    check_eq(p.returncode, 2, "exit status as root without user (stderr %r)" % err)
    check("refusing to run as root" in err and "allow_root" in err, "message: %r" % err)
    check(not os.path.exists(spool), "the refused run made the spool folder")


@suite.case
def unknown_user_group_or_root_is_refused():
    d = h.new_tmpdir("unknown")
    base = [h.Paths.mxring, "-o", "listen=127.0.0.1:%d" % h.free_port(),
            "-o", "spool_dir=" + os.path.join(d, "spool")]
    for extra, want in ((["user=mxring-no-such-user"], "user mxring-no-such-user: no such user"),
                        (["user=nobody", "group=mxring-no-such-group"],
                         "group mxring-no-such-group: no such group"),
                        (["user=root"], "user root is root")):
        argv = list(base)
        for o in extra:
            argv += ["-o", o]
        p = h.run_cmd(argv, 15)
        err = p.stderr.decode("utf-8", "replace")
        check_eq(p.returncode, 1, "exit status for %r (stderr %r)" % (extra, err))
        check(want in err, "message for %r: %r lacks %r" % (extra, err, want))


@suite.case
def unreadable_key_is_refused_at_start():
    uid, gid = need_root_and_nobody()
    certs = make_certs("certs", gid)
    os.chmod(os.path.join(certs, "key.pem"), 0o600)  # root's alone
    srv = h.Server(dict(tls_cfg(certs), user="nobody", allow_root=None), tag="nokey")
    open_dir(srv.tmp)
    refused_at_start(srv, "a key its user cannot read")
    log = srv.log()
    want = "tls_key_file %s: user nobody cannot read it" % os.path.join(certs, "key.pem")
    check(want in log, "log lacks %r:\n%s" % (want, log[-2000:]))
    check("tls_cert_file" not in log, "the readable certificate was named too:\n%s" % log)


def refused_at_start(srv, why):
    """srv must exit 1 before its ready line."""
    try:
        srv.start()
    except h.Fail:
        check_eq(srv.exit_code, 1, "exit status (%s); log:\n%s" % (why, srv.log()))
        return
    srv.stop()
    raise h.Fail("mxring started with %s" % why)


def as_nobody(uid, gid):
    def become():
        os.setgroups([gid])
        os.setgid(gid)
        os.setuid(uid)
    return become


def binary_for_nobody():
    """A copy of mxring that nobody may run: the checkout may lie in a folder
    only root can enter (a clean Debian root clones it into /root)."""
    d = open_dir(h.new_tmpdir("bin"))
    path = os.path.join(d, "mxring")
    shutil.copy2(h.Paths.mxring, path)
    os.chmod(path, 0o755)
    return path


@suite.case
def started_unprivileged():
    uid, gid = need_root_and_nobody()
    binary = binary_for_nobody()
    srv = h.Server({"allow_root": None}, tag="unpriv", preexec_fn=as_nobody(uid, gid),
                   mxring=binary)
    os.chown(srv.tmp, uid, gid)
    with srv:
        srv.wait_log(r"\bready\b.*\buser=nobody\b")
        # Not root: the bounding set is the parent's to narrow (systemd's
        # CapabilityBoundingSet=); every other set is empty.
        check_no_capabilities(srv.proc.pid, bounding=False)
        send(srv, starttls=False)
        srv.stop()
        check_eq(srv.exit_code, 0, "exit status")
    other = h.Server({"allow_root": None, "user": "daemon"}, tag="other",
                     preexec_fn=as_nobody(uid, gid), mxring=binary)
    os.chown(other.tmp, uid, gid)
    refused_at_start(other, "user = daemon, started as nobody")
    check("becoming another user needs root" in other.log(), "log:\n%s" % other.log())


def sandbox_run(certs, outside, sandbox):
    """Starts a TLS server on certs (sandbox yes or no), points cert.pem and
    key.pem at the pair in outside (links to another folder), reloads; returns
    the server's log from then on."""
    cfg = dict(tls_cfg(certs), sandbox=sandbox)
    with h.Server(cfg, env={"MXRING_TEST_URING_PROBE": "1"}, tag="sandbox") as srv:
        ready = srv.wait_log(r"\bready\b")[0]
        if sandbox == "yes":
            if "sandbox=unavailable" in ready:
                raise h.Skip("no Landlock in this kernel: %s" % ready)
            check("sandbox=landlock-abi" in ready, "ready line: %s" % ready)
            check("uring_restricted=yes" in ready, "ready line: %s" % ready)
            # Each shard's ring refuses what a shard never submits.
            probes = srv.wait_log(r"\buring probe shard=\d+ op=openat\b", count=2)
            for line in probes:
                check("res=-13 (Permission denied)" in line, "probe: %s" % line)
        else:
            check("sandbox=off uring_restricted=no" in ready, "ready line: %s" % ready)
            probes = srv.wait_log(r"\buring probe shard=\d+ op=openat\b", count=2)
            for line in probes:
                check("(allowed)" in line, "probe without the sandbox: %s" % line)
        send(srv, starttls=True)
        mark = len(srv.log())
        for name in ("cert.pem", "key.pem"):
            path = os.path.join(certs, name)
            os.unlink(path)
            os.symlink(os.path.join(outside, name), path)
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"\breload: (failed|tls certificate and keys loaded)\b")
        after = srv.log()[mark:]
        send(srv, starttls=True)  # served either way
        srv.stop()
        return after


@suite.case
def sandbox_confines_reload_and_rings():
    certs = open_dir(h.new_tmpdir("certs"))
    outside = open_dir(h.new_tmpdir("outside"))
    for d in (certs, outside):
        p = h.run_cmd(["bash", CERT_TOOL, d, h.HOSTNAME], 60)
        check_eq(p.returncode, 0, "mxring-cert.sh (stderr %r)" % p.stderr)
    # Sandboxed: the reload may read files only in the folders of the
    # configured files (and where they resolved to at start): not outside.
    after = sandbox_run(certs, outside, "yes")
    check("reload: failed, keeping the old tls context" in after and
          "Permission\\x20denied" in after,  # the log escapes the quoted text's blanks
          "the reload read a file outside the sandbox:\n%s" % after)
    # The same reload with sandbox = no loads it: the refusal was the sandbox's.
    for name in ("cert.pem", "key.pem"):
        os.unlink(os.path.join(certs, name))
        shutil.copy2(os.path.join(outside, name), os.path.join(certs, name))
    after = sandbox_run(certs, outside, "no")
    check("reload: tls certificate and keys loaded" in after, "without the sandbox:\n%s" % after)


def run_check(*opts):
    argv = [h.Paths.mxring, "--check"]
    for o in opts:
        argv += ["-o", o]
    p = h.run_cmd(argv, 30)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


@suite.case
def check_good_and_broken_setups():
    uid, gid = need_root_and_nobody()
    certs = make_certs("certs", gid)
    other = make_certs("other", gid)
    d = open_dir(h.new_tmpdir("check"))
    spool = os.path.join(d, "spool")
    base = ["user=nobody", "spool_dir=" + spool] + ["%s=%s" % kv for kv in tls_cfg(certs).items()]
    rc, out = run_check(*base)
    check_eq(rc, 0, "--check of a good set-up:\n%s" % out)
    check("0 problems, 0 warnings" in out and "does not exist; it is made at start" in out,
          "output:\n%s" % out)
    # A key others may read: a warning, still ready.
    key = os.path.join(certs, "key.pem")
    os.chmod(key, 0o644)
    rc, out = run_check(*base)
    check_eq(rc, 0, "--check with a world-readable key:\n%s" % out)
    check("warning: tls_key_file %s has mode 0644" % key in out and "1 warning" in out,
          "output:\n%s" % out)
    # A key the user cannot read.
    os.chmod(key, 0o600)
    rc, out = run_check(*base)
    check_eq(rc, 1, "--check with a key only root reads:\n%s" % out)
    check("tls_key_file %s: user nobody cannot read it" % key in out, "output:\n%s" % out)
    os.chmod(key, 0o640)
    # The key of another certificate.
    rc, out = run_check(*(base + ["tls_key_file=" + os.path.join(other, "key.pem")]))
    check_eq(rc, 1, "--check with a foreign key:\n%s" % out)
    check("does not match tls_cert_file" in out, "output:\n%s" % out)
    # A spool the user owns but may not write.
    os.mkdir(spool, 0o500)
    os.chown(spool, uid, gid)
    rc, out = run_check(*base)
    check_eq(rc, 1, "--check with a spool the user cannot write:\n%s" % out)
    check("spool_dir %s: user nobody cannot use it" % spool in out, "output:\n%s" % out)
    # Root without user; a bad configuration.
    rc, out = run_check("spool_dir=" + spool)
    check_eq(rc, 1, "--check as root without user:\n%s" % out)
    check("refusing to run as root" in out, "output:\n%s" % out)
    rc, out = run_check(*(base + ["message_size_limit=abc"]))
    check_eq(rc, 2, "--check of a bad configuration:\n%s" % out)


if __name__ == "__main__":
    suite.main()
