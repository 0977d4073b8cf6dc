#!/usr/bin/env python3
"""
servers.py - the servers bench/compare and bench/scale drive, each started
on a free port on 127.0.0.1 and stopped again, and the mxring-bench runs
they are driven with.

  Mxring        build/core/mxring, spool on disk, STARTTLS offered
  SmtpSink      Postfix smtp-sink: answers SMTP, stores nothing, no STARTTLS
  PostfixSmtpd  a throw-away Postfix instance (its own config_directory,
                queue and log under the work folder; root only): smtpd
                hands each message to cleanup, which writes and fsyncs
                the queue file before the 250 (Postfix's default); the
                message is then put on hold, so the queue manager delivers
                nothing and only reception is measured, as for mxring.
                STARTTLS with the same certificate, session tickets on
                (Postfix's default, keys from its tlsmgr)
  Haraka        Haraka from npm (cached in ~/.cache/mxring/haraka), with
                the queue/discard plugin (stores nothing), STARTTLS through
                its tls plugin, one worker per CPU (nodes=cpus)

Every server has start() (raises StartError with the reason), root_pid (the
process whose tree's CPU is counted: benchutil.tree_cpu), port, stop()
(returns a note, empty when the stop was clean) and stored() (what it kept,
for a count check, or None).

run_bench() runs mxring-bench once under benchutil.measure_run and reads
its JSON report.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEERS = os.path.join(ROOT, "bench", "peers")
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
HARAKA_HOME = os.path.expanduser("~/.cache/mxring/haraka")
HARAKA_BIN = os.path.join(HARAKA_HOME, "node_modules", ".bin", "haraka")
DOMAIN = "example.com"
MYHOSTNAME = "mx.bench"
START_TRIES = 3


class StartError(Exception):
    pass


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def alive(pid):
    """False once pid is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def descendants(root):
    """Live descendants of root (walking PPid links of /proc/*/stat)."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = benchutil.read_stat(name)
            if st:
                children.setdefault(st[0], []).append(int(name))
    out, todo = [], list(children.get(root, ()))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


class Server:
    name = "?"
    label = "?"
    starttls = False

    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = None
        self.root_pid = None
        self.port = None

    def start(self):
        last = None
        for attempt in range(START_TRIES):
            self.port = benchutil.free_port()
            try:
                self._start()
                return
            except BaseException as e:
                # Interrupted half-way or failed: nothing may be left running.
                self.stop()
                if not isinstance(e, StartError):
                    raise
                last = e
                log("%s did not start on port %d (try %d of %d): %s"
                    % (self.name, self.port, attempt + 1, START_TRIES, str(e).strip()[:300]))
        raise last

    def _spawn(self, argv, logname, env=None, preexec_fn=None, new_session=False):
        self.log_path = os.path.join(self.workdir, logname)
        with open(self.log_path, "ab") as f:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                         env=env, preexec_fn=preexec_fn,
                                         start_new_session=new_session)
        self.root_pid = self.proc.pid

    def _wait_greeting(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise StartError("exited (%d) before answering:\n%s"
                                 % (self.proc.returncode, tail(self.log_path)))
            if benchutil.wait_port(self.port, min(1.0, deadline - time.monotonic())):
                return
        raise StartError("no SMTP greeting on 127.0.0.1:%d within %d s:\n%s"
                         % (self.port, seconds, tail(self.log_path)))

    def _stop_child(self, seconds, want_zero):
        """SIGTERM to the child, SIGKILL after seconds; a note unless clean."""
        if not self.proc:
            return ""
        note = ""
        if self.proc.poll() is not None:
            note = "exited (%d) before it was stopped" % self.proc.returncode
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                note = "no exit %d s after SIGTERM: killed" % seconds
                self.proc.kill()
                self.proc.wait()
        if not note and want_zero and self.proc.returncode != 0:
            note = "exit status %d after SIGTERM" % self.proc.returncode
        self.proc = None
        return note

    def stored(self):
        return None


class Mxring(Server):
    name = "mxring"
    label = "mxring"
    starttls = True

    def __init__(self, workdir, binary, certs=None, opts=(), cpus=None):
        super().__init__(workdir)
        self.binary = binary
        self.certs = certs
        self.opts = list(opts)
        self.cpus = cpus
        self.spool = os.path.join(workdir, "spool")

    def argv(self):
        a = [self.binary, "-o", "listen=127.0.0.1:%d" % self.port, "-o",
             "spool_dir=" + self.spool, "-o", "accept_domains=" + DOMAIN, "-o",
             "myhostname=" + MYHOSTNAME]
        if self.certs:
            a += ["-o", "tls_security_level=may",
                  "-o", "tls_cert_file=" + os.path.join(self.certs, "cert.pem"),
                  "-o", "tls_key_file=" + os.path.join(self.certs, "key.pem"),
                  "-o", "tls_ticket_key_file=" + os.path.join(self.certs, "ticket.keys")]
        if os.geteuid() == 0:
            a += ["-o", "allow_root=yes"]  # a benchmark box; production sets user
        for o in self.opts:
            a += ["-o", o]
        return a

    def _start(self):
        cpus = self.cpus
        log_path = os.path.join(self.workdir, "mxring.log")
        start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        self._spawn(self.argv(), "mxring.log",
                    preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # From this start on, not the last lines: a relay with a queue may
            # log thousands of lines right after its ready line.
            with open(log_path, "rb") as f:
                f.seek(start)
                if re.search(rb"^\S+ mxring: ready\b", f.read(), re.M):
                    return
            if self.proc.poll() is not None:
                raise StartError("mxring exited (%d) before logging 'ready':\n%s"
                                 % (self.proc.returncode, tail(self.log_path)))
            time.sleep(0.05)
        raise StartError("mxring did not log 'ready' within 20 s:\n%s" % tail(self.log_path))

    def stop(self):
        return self._stop_child(60, want_zero=True)


class SmtpSink(Server):
    name = "smtp-sink"
    label = "Postfix smtp-sink (stores nothing)"

    def _start(self):
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        # No -c (a counter per message) and no -v: nothing but the protocol.
        self._spawn([SMTP_SINK] + user + ["127.0.0.1:%d" % self.port, "1024"], "smtp-sink.log")
        self._wait_greeting(15)

    def stop(self):
        return self._stop_child(30, want_zero=False)


def postfix_usable():
    """None when a throw-away Postfix instance can run here, else why not."""
    for prog in ("postfix", "postconf"):
        if not shutil.which(prog):
            return "%s not found (package postfix)" % prog
    if os.geteuid() != 0:
        return "a Postfix instance must be started as root"
    import grp
    import pwd
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "user postfix or group postdrop missing (package postfix creates them)"
    if not postfix_master_cf():
        return "no Postfix master.cf template (/usr/share/postfix/master.cf.dist)"
    return None


def postfix_master_cf():
    for f in ("/usr/share/postfix/master.cf.dist", "/etc/postfix/master.cf.proto",
              "/etc/postfix/master.cf"):
        if os.path.isfile(f):
            return f
    return None


def postfix_version():
    try:
        return subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


class PostfixSmtpd(Server):
    name = "postfix"
    label = "Postfix smtpd (queue, fsync)"
    starttls = True

    def __init__(self, workdir, certs=None):
        super().__init__(workdir)
        self.certs = certs
        self.etc = os.path.join(workdir, "etc")

    def settings(self):
        out = []
        with open(os.path.join(PEERS, "postfix-main.cf")) as f:
            for line in f:
                if re.match(r"^\s*(#|$)", line):
                    continue
                k, v = line.split("=", 1)
                out.append("%s=%s" % (k.strip(), v.strip().replace("@WORK@", self.workdir)))
        # Every accepted message goes to the hold queue once cleanup has
        # written and fsynced it: the queue manager delivers nothing.
        out.append("smtpd_recipient_restrictions=check_client_access static:HOLD, "
                   "permit_mynetworks, reject_unauth_destination")
        if self.certs:
            # STARTTLS offered; session tickets are on by default (tlsmgr keys).
            out += ["smtpd_tls_security_level=may",
                    "smtpd_tls_chain_files=%s, %s" % (os.path.join(self.certs, "key.pem"),
                                                      os.path.join(self.certs, "cert.pem"))]
        return out

    def _postconf(self, *args):
        p = subprocess.run(["postconf", "-c", self.etc] + list(args), capture_output=True,
                           text=True, timeout=30)
        if p.returncode != 0:
            raise StartError("postconf %s: %s" % (" ".join(args)[:200], p.stderr.strip()))

    def _postfix(self, cmd, timeout=60):
        with open(os.path.join(self.workdir, "start.log"), "a") as f:
            try:
                return subprocess.run(["postfix", "-c", self.etc, cmd], stdout=f, stderr=f,
                                      stdin=subprocess.DEVNULL, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                return 124

    def _start(self):
        for d in (self.etc, os.path.join(self.workdir, "queue"),
                  os.path.join(self.workdir, "data")):
            os.makedirs(d, exist_ok=True)
        shutil.chown(os.path.join(self.workdir, "data"), "postfix")
        os.chmod(self.workdir, 0o755)
        shutil.copy(postfix_master_cf(), os.path.join(self.etc, "master.cf"))
        open(os.path.join(self.etc, "main.cf"), "w").close()
        self.log_path = os.path.join(self.workdir, "maillog")
        open(self.log_path, "a").close()
        self._postconf("-e", *self.settings())
        # A private queue folder: no chroot (it would need copies of /etc files).
        self._postconf("-F", "*/*/chroot = n")
        self._postconf("-MX", "smtp/inet")
        self._postconf("-M", "127.0.0.1:%d/inet=127.0.0.1:%d inet n - n - - smtpd"
                       % (self.port, self.port))
        if self._postfix("check") != 0 or self._postfix("start") != 0:
            raise StartError("postfix -c %s check/start failed:\n%s%s" % (
                self.etc, tail(os.path.join(self.workdir, "start.log")), tail(self.log_path)))
        pidfile = os.path.join(self.workdir, "queue", "pid", "master.pid")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not self.root_pid:
            try:
                pid = int(open(pidfile).read().strip())
                if alive(pid):
                    self.root_pid = pid
            except (OSError, ValueError):
                time.sleep(0.1)
        if not self.root_pid:
            raise StartError("Postfix master did not write its pid:\n%s" % tail(self.log_path))
        self._wait_greeting(15)

    def pids(self):
        """Processes of this instance, found by the MAIL_CONFIG master passes on."""
        want = ("MAIL_CONFIG=" + self.etc).encode()
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

    def stop(self):
        if not os.path.isfile(os.path.join(self.etc, "main.cf")):
            return ""
        note = []
        self._postfix("stop")
        if self.root_pid and not wait_gone(self.root_pid, 30):
            note.append("master still running 30 s after 'postfix stop': abort")
            self._postfix("abort")
            wait_gone(self.root_pid, 10)
        left = self.pids()
        if left:
            time.sleep(1)
            left = [p for p in self.pids() if alive(p)]
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            if left:
                note.append("killed leftover Postfix processes %s" % left)
        self.root_pid = None
        return "; ".join(note)

    def stored(self):
        n = 0
        for q in ("incoming", "active", "hold", "deferred"):
            for _, _, files in os.walk(os.path.join(self.workdir, "queue", q)):
                n += len(files)
        try:
            n += sum(1 for line in open(self.log_path, errors="replace")
                     if " status=sent " in line)
        except OSError:
            pass
        return n


def haraka_version():
    try:
        with open(os.path.join(HARAKA_HOME, "node_modules", "Haraka", "package.json")) as f:
            return json.load(f).get("version", "?")
    except (OSError, ValueError):
        return None


def haraka_install(spec, timeout_s=600):
    """
    Makes Haraka available in HARAKA_HOME (npm install, outside the
    checkout). Returns None when it is there, else why not.
    """
    if os.access(HARAKA_BIN, os.X_OK) and haraka_version():
        return None
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        return "npm/node not found: Haraka skipped (apt-get install npm to include it)"
    os.makedirs(HARAKA_HOME, exist_ok=True)
    log("installing %s with npm into %s (once)" % (spec, HARAKA_HOME))
    try:
        p = subprocess.run([npm, "install", "--prefix", HARAKA_HOME, "--no-audit", "--no-fund",
                            spec], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "npm install %s did not finish within %d s: Haraka skipped" % (spec, timeout_s)
    if p.returncode != 0 or not os.access(HARAKA_BIN, os.X_OK):
        return "npm install %s failed (exit %d): %s: Haraka skipped" % (
            spec, p.returncode, (p.stderr or p.stdout).strip()[-300:])
    return None


class Haraka(Server):
    name = "haraka"
    label = "Haraka (discard queue, stores nothing)"
    starttls = True

    def __init__(self, workdir, certs=None, nodes="cpus"):
        super().__init__(workdir)
        self.certs = certs
        self.nodes = nodes
        self.home = os.path.join(workdir, "haraka")

    def _configure(self):
        if not os.path.isdir(self.home):
            p = subprocess.run([HARAKA_BIN, "-i", self.home], capture_output=True, text=True,
                               timeout=60)
            if p.returncode != 0:
                raise StartError("haraka -i %s: %s" % (self.home, p.stderr.strip()[-300:]))
        cfg = os.path.join(self.home, "config")
        files = {
            "plugins": "tls\nrcpt_to.in_host_list\nqueue/discard\n" if self.certs
            else "rcpt_to.in_host_list\nqueue/discard\n",
            "host_list": DOMAIN + "\n",
            "me": MYHOSTNAME + "\n",
            "smtp.ini": "listen=127.0.0.1:%d\nnodes=%s\n" % (self.port, self.nodes),
            # notice: about one line per session, as mxring and Postfix log.
            "log.ini": "[main]\nlevel=notice\ntimestamps=false\nformat=default\n",
            # Haraka asks clients for a certificate unless told not to.
            "tls.ini": "[main]\nrequestCert=false\n",
        }
        for name, text in files.items():
            with open(os.path.join(cfg, name), "w") as f:
                f.write(text)
        if self.certs:
            shutil.copy(os.path.join(self.certs, "key.pem"), os.path.join(cfg, "tls_key.pem"))
            shutil.copy(os.path.join(self.certs, "cert.pem"), os.path.join(cfg, "tls_cert.pem"))

    def _start(self):
        self._configure()
        env = dict(os.environ, YES_REALLY_DO_DISCARD="1")
        self._spawn([HARAKA_BIN, "-c", self.home], "haraka.log", env=env, new_session=True)
        self._wait_greeting(60)

    def stop(self):
        """SIGTERM to the master and its workers at once (as a service manager stops it)."""
        if not self.proc:
            return ""
        procs = [self.proc.pid] + descendants(self.proc.pid)
        note = ""
        if self.proc.poll() is not None:
            note = "exited (%d) before it was stopped" % self.proc.returncode
        for p in procs:
            try:
                os.kill(p, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            if not wait_gone(p, 30):
                os.kill(p, signal.SIGKILL)
                note = (note + "; " if note else "") + "pid %d killed 30 s after SIGTERM" % p
        self.proc.wait()
        self.proc = None
        return note


def run_bench(bench, server, args, duration_s, outdir, tag, connections, ack=False,
              extra_timeout_s=60, cpus=None, threads=1):
    """
    One mxring-bench run against server for duration_s; returns a dict of
    measure_run's figures plus accepted, msgs_per_s, the JSON report (rep),
    the ack log path (ack, when asked: in the server's work folder, as big as
    its spool's index, not in outdir) and the command.
    """
    json_path = os.path.join(outdir, tag + ".json")
    cmd = [bench, "--server", "127.0.0.1:%d" % server.port, "--connections", str(connections),
           "--duration", "%g" % duration_s, "--threads", str(threads), "--quiet",
           "--json", json_path] + list(args)
    if cpus:
        cmd += ["--cpus", ",".join(str(c) for c in cpus)]
    ack_path = os.path.join(server.workdir, tag + ".acks") if ack else None
    if ack_path:
        cmd += ["--ack-log", ack_path]
    res = benchutil.measure_run(cmd, server.root_pid, duration_s + extra_timeout_s,
                                os.path.join(outdir, tag + ".out"))
    res.update(cmd=cmd, ack=ack_path, rep=None, accepted=0, msgs_per_s=None)
    try:
        with open(json_path) as f:
            res["rep"] = json.load(f)
        res["accepted"] = res["rep"]["messages"]["accepted"]
        res["msgs_per_s"] = res["rep"]["msgs_per_s"]
    except (OSError, ValueError, KeyError):
        pass
    return res


def verify_acks(spool_tool, spool, acks):
    """
    `mxring-spool verify SPOOL --exact --against ACK...` in one pass: every
    acknowledged message stored intact and nothing else of those runs;
    returns (problems, N stored in all). An empty list of acks only counts.
    """
    argv = [spool_tool, "verify", spool]
    if acks:
        argv += ["--exact"] + [x for a in acks for x in ("--against", a)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    m = re.search(r"^(\d+) messages$", p.stdout, re.M)
    problems = []
    if p.returncode != 0:
        problems.append("mxring-spool verify%s: exit %d: %s" % (
            " --against (%d ack logs)" % len(acks) if acks else "", p.returncode,
            " | ".join((p.stdout + p.stderr).strip().splitlines()[-6:])))
    return problems, (int(m.group(1)) if m else None)


def make_certs(dest):
    """A self-signed ECDSA certificate, key and ticket keys (tools/mxring-cert.sh)."""
    p = subprocess.run(["bash", os.path.join(ROOT, "tools", "mxring-cert.sh"), dest, MYHOSTNAME],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise SystemExit("tools/mxring-cert.sh failed: %s" % p.stderr.strip())
    return dest
