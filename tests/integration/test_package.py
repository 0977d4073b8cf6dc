#!/usr/bin/env python3
"""
test_package.py - the Debian package, built, installed, run and purged on
this machine (as the issue of the package asks; the tests run as root).

Checked:
  - `dpkg-buildpackage -us -uc -b` of a copy of the checkout builds
    mxring_VERSION_amd64.deb (wolfSSL built inside the package build; the
    test points MXRING_WOLFSSL_CACHE at the cache that holds it already),
    and lintian reports no error on it;
  - `dpkg -i`: the system user mxring (in the group ssl-cert), the spool
    /var/spool/mxring (mxring:mxring, 0750), /etc/mxring/mxring.conf as a
    conffile, the unit enabled (its multi-user.target.wants link);
  - /usr/sbin/mxring started as root on the installed configuration (a
    loopback port, a certificate of the test's, NOTIFY_SOCKET of the test's)
    sends READY=1, runs as mxring with no capability and NoNewPrivs 1, takes
    mail from swaks over STARTTLS and from Python smtplib, reloads a new
    certificate on SIGHUP (served afterwards), sends STOPPING=1 and exits 0
    on SIGTERM; mxring-spool verify finds both messages;
  - `dpkg -r` keeps the configuration and the spool; `dpkg -P` removes both
    and the unit's link.

Skipped when not root, in a sanitizer build (the package is the same), when
the packaging tools are missing, or when a package mxring is installed
already (this test would remove it).
"""

import json
import os
import pwd
import grp
import re
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import time

import harness as h

suite = h.Suite("package")
check, check_eq = h.check, h.check_eq

CERT_TOOL = os.path.join(h.REPO, "tools", "mxring-cert.sh")
TLS_DIR = "/etc/mxring-test-tls"
WANTS = "/etc/systemd/system/multi-user.target.wants/mxring.service"


def build_dir():
    return os.path.dirname(os.path.dirname(h.Paths.mxring))


def sanitized():
    info = os.path.join(build_dir(), "meson-info", "intro-buildoptions.json")
    try:
        with open(info) as f:
            opts = {o["name"]: o["value"] for o in json.load(f)}
    except (OSError, ValueError):
        return False
    return opts.get("b_sanitize", "none") != "none"


def installed():
    p = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", "mxring"], capture_output=True)
    return p.returncode == 0 and b"installed" in p.stdout


def run(argv, timeout=120, what=None, env=None, cwd=None):
    p = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, cwd=cwd)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    check_eq(p.returncode, 0, "%s exit status; output:\n%s" % (what or argv[0], out[-3000:]))
    return out


def source_files():
    """The checkout's files: what git tracks or would (not what it ignores);
    without git (a bare Debian root), every file but build folders and .git."""
    try:
        p = subprocess.run(["git", "-C", h.REPO, "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, timeout=60)
        if p.returncode == 0:
            return [f.decode() for f in p.stdout.split(b"\0") if f]
    except FileNotFoundError:
        pass
    out = []
    for root, dirs, files in os.walk(h.REPO):
        rel_root = os.path.relpath(root, h.REPO)
        if rel_root == ".":
            dirs[:] = [d for d in dirs if not (d.startswith("build") or d.startswith("obj-")
                                               or d in (".git", "spool", "run"))]
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            out.append(os.path.normpath(os.path.join(rel_root, f)))
    return out


def build_package():
    """A copy of the checkout (tracked and untracked files git does not ignore)
    built with dpkg-buildpackage; returns (the .deb, the .changes)."""
    top = h.new_tmpdir("pkg")
    src = os.path.join(top, "mxring")
    for rel in source_files():
        s = os.path.join(h.REPO, rel)
        if not os.path.lexists(s) or os.path.isdir(s) and not os.path.islink(s):
            continue  # removed in the work tree, or a submodule
        d = os.path.join(src, rel)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        shutil.copy2(s, d, follow_symlinks=False)
    cache = os.environ.get("MXRING_WOLFSSL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mxring")
    env = dict(os.environ, MXRING_WOLFSSL_CACHE=cache)
    run(["dpkg-buildpackage", "-us", "-uc", "-b"], timeout=1200, what="dpkg-buildpackage",
        env=env, cwd=src)
    debs = [f for f in os.listdir(top) if re.match(r"mxring_[^_]+_amd64\.deb$", f)]
    changes = [f for f in os.listdir(top) if f.endswith("_amd64.changes")]
    check_eq(len(debs), 1, "packages built: %r" % os.listdir(top))
    return os.path.join(top, debs[0]), os.path.join(top, changes[0])


def notify_socket():
    d = h.new_tmpdir("notify")
    os.chmod(d, 0o755)
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(20)
    return s, path


def make_pair(tag):
    d = h.new_tmpdir(tag)
    run(["bash", CERT_TOOL, d, "mx.test"], what="mxring-cert.sh")
    return d


def install_pair(src):
    """Puts src's cert.pem and key.pem into TLS_DIR, the key 0640 root:mxring."""
    gid = grp.getgrnam("mxring").gr_gid
    os.makedirs(TLS_DIR, exist_ok=True)
    for name, mode in (("cert.pem", 0o644), ("key.pem", 0o640)):
        tmp = os.path.join(TLS_DIR, name + ".new")
        shutil.copyfile(os.path.join(src, name), tmp)
        os.chown(tmp, 0, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, os.path.join(TLS_DIR, name))


def peer_cert(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.ehlo("client.example.org")
        s.starttls(context=ctx)
        return s.sock.getpeercert(binary_form=True)


def run_installed(spool_before):
    port = h.free_port()
    sock, path = notify_socket()
    first, second = make_pair("pair1"), make_pair("pair2")
    install_pair(first)
    log_path = os.path.join(h.new_tmpdir("pkglog"), "mxring.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        ["/usr/sbin/mxring", "-c", "/etc/mxring/mxring.conf",
         "-o", "listen=127.0.0.1:%d" % port, "-o", "accept_domains=example.com",
         "-o", "tls_cert_file=%s/cert.pem" % TLS_DIR, "-o", "tls_key_file=%s/key.pem" % TLS_DIR],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        env=dict(os.environ, NOTIFY_SOCKET=path))

    def text():
        with open(log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    try:
        try:
            msg = sock.recv(4096)
        except socket.timeout:
            raise h.Fail("no READY=1 within 20 s; log:\n%s" % text())
        check(msg.startswith(b"READY=1"), "first notification %r; log:\n%s" % (msg, text()))
        with open("/proc/%d/status" % proc.pid) as f:
            st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        uid = pwd.getpwnam("mxring").pw_uid
        check_eq(st["Uid"].split(), [str(uid)] * 4, "Uid")
        check_eq(int(st["CapEff"], 16) | int(st["CapPrm"], 16) | int(st["CapBnd"], 16), 0,
                 "capabilities")
        check_eq(st["NoNewPrivs"].strip(), "1", "NoNewPrivs")
        h.require_program("/usr/bin/swaks")
        out = run(["swaks", "--server", "127.0.0.1:%d" % port, "--to", "rcpt@example.com",
                   "--from", "sender@example.org", "--tls", "--silent", "2"], what="swaks --tls")
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
            s.sendmail("sender@example.org", ["rcpt@example.com"],
                       b"Subject: package\r\n\r\nover smtplib\r\n")
        before = peer_cert(port)
        install_pair(second)
        proc.send_signal(signal.SIGHUP)
        for _ in range(200):
            if "reload: tls certificate and keys loaded" in text():
                break
            time.sleep(0.05)
        check("reload: tls certificate and keys loaded" in text(), "reload; log:\n%s" % text())
        check(peer_cert(port) != before, "the certificate did not change with the reload")
        proc.send_signal(signal.SIGTERM)
        check_eq(proc.wait(timeout=60), 0, "exit status; log:\n%s" % text())
        msgs = []
        for _ in range(4):
            m = sock.recv(4096)
            msgs.append(m)
            if m.startswith(b"STOPPING=1"):
                break
        check(any(m.startswith(b"STOPPING=1") for m in msgs), "notifications %r" % msgs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        log.close()
    out = run([os.path.join(build_dir(), "tools", "mxring-spool"), "verify", "/var/spool/mxring"],
              what="mxring-spool verify")
    m = re.search(r"(\d+) messages?", out)
    check(m and int(m.group(1)) == spool_before + 2, "verify: %s" % out)


@suite.case
def package_builds_installs_runs_and_purges():
    if os.geteuid() != 0:
        raise h.Skip("needs root (dpkg -i)")
    if sanitized():
        raise h.Skip("sanitizer build: the package is the normal build's")
    for prog in ("/usr/bin/dpkg-buildpackage", "/usr/bin/dh", "/usr/bin/lintian"):
        h.require_program(prog)
    if installed():
        raise h.Skip("a package mxring is installed on this machine; not removing it")
    deb, changes = build_package()
    out = subprocess.run(["lintian", changes], capture_output=True, timeout=600)
    errors = [l for l in out.stdout.decode().splitlines() if l.startswith("E:")]
    check_eq(errors, [], "lintian errors")
    try:
        run(["dpkg", "-i", deb], what="dpkg -i")
        pw = pwd.getpwnam("mxring")
        check(pw.pw_uid < 1000 and pw.pw_dir == "/var/spool/mxring", "user mxring: %r" % (pw,))
        check("mxring" in grp.getgrnam("ssl-cert").gr_mem, "mxring is not in the group ssl-cert")
        st = os.stat("/var/spool/mxring")
        check_eq((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                 (pw.pw_uid, pw.pw_gid, 0o750), "owner and mode of /var/spool/mxring")
        conffiles = run(["dpkg-query", "-W", "-f", "${Conffiles}", "mxring"], what="dpkg-query")
        check("/etc/mxring/mxring.conf" in conffiles, "conffiles: %r" % conffiles)
        check(os.path.islink(WANTS), "the unit is not enabled (%s)" % WANTS)
        check_eq(subprocess.run(["/usr/sbin/mxring", "-c", "/etc/mxring/mxring.conf", "-n"],
                                capture_output=True).returncode, 0, "mxring -n of the conffile")
        run_installed(0)
        run(["dpkg", "-r", "mxring"], what="dpkg -r")
        check(not os.path.exists("/usr/sbin/mxring"), "dpkg -r left /usr/sbin/mxring")
        check(os.path.exists("/etc/mxring/mxring.conf"), "dpkg -r removed the configuration")
        check(os.path.isdir("/var/spool/mxring"), "dpkg -r removed the spool")
        run(["dpkg", "-P", "mxring"], what="dpkg -P")
        check(not os.path.exists("/etc/mxring/mxring.conf"), "dpkg -P left the configuration")
        check(not os.path.exists("/var/spool/mxring"), "dpkg -P left the spool")
        check(not os.path.lexists(WANTS), "dpkg -P left %s" % WANTS)
    finally:
        shutil.rmtree(TLS_DIR, ignore_errors=True)
        if installed() or os.path.exists("/var/lib/dpkg/info/mxring.list"):
            subprocess.run(["dpkg", "-P", "mxring"], capture_output=True, timeout=120)
        shutil.rmtree("/etc/mxring", ignore_errors=True)


if __name__ == "__main__":
    suite.main()
