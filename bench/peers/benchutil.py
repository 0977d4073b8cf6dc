#!/usr/bin/env python3
"""
benchutil.py - helpers for bench/smtp-source-compare.sh (loopback only);
bench/compare and bench/scale import it (through bench/peers/servers.py).

  port                      print a free TCP port on 127.0.0.1
  waitport PORT SECONDS     wait until 127.0.0.1:PORT answers with an SMTP
                            greeting (then send QUIT); exit 1 at the deadline
  cpu PID                   print the CPU seconds of PID's process tree (below)
  measure --root PID --timeout S --stderr FILE -- CMD...
                            run CMD (the client) with the server tree's CPU
                            read just before and just after; print one line
                            of key=value: rc wall_s server_cpu_s client_cpu_s
                            machine_busy_s
  pids-env NAME=VALUE       print the pids of processes whose environment
                            holds NAME=VALUE (leftovers of a Postfix instance)
  report CSV MD             median table (Markdown) from the raw CSV; printed
                            and written to MD

Server CPU seconds, the method: for the root process (mxring, smtp-sink, or
the Postfix master) and every live descendant (found by walking the
PPid links of /proc/*/stat) we add utime+stime+cutime+cstime from
/proc/PID/stat. utime/stime of a process cover all its threads (io-wq
workers of io_uring included); cutime/cstime of the root hold the CPU of
every child it has already reaped, so a Postfix smtpd or cleanup that exits
during the run is counted through the master once it is reaped, and one
that is still alive is counted directly. The value is read before and after
the client run; the difference is the server's CPU for the run. A child that
exits in the instant between the two reads of one snapshot can be counted
twice or missed: at most one process's CPU, a few milliseconds. Kernel work
done outside the server's processes (jbd2 journal commits, block I/O
completion, softirq work charged to the client) is not counted, for any
server alike. Resolution: 1/CLK_TCK (10 ms).
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import csv
from collections import defaultdict

TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(max(0.5, min(5.0, deadline - time.monotonic())))
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"220"):
                    try:
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                    except OSError:
                        pass
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def read_stat(pid):
    """(ppid, ticks) of one process, or None when it is gone."""
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime is field 14 -> rest[11]
    ppid = int(rest[1])
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return ppid, ticks


def tree_cpu(root):
    """CPU seconds of root and all its live descendants (see the header)."""
    children = defaultdict(list)
    ticks = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = read_stat(name)
        if st is None:
            continue
        children[st[0]].append(int(name))
        ticks[int(name)] = st[1]
    root = int(root)
    if root not in ticks:
        st = read_stat(root)
        if st is None:
            raise SystemExit("benchutil: process %d is gone" % root)
        ticks[root] = st[1]
    total, todo, seen = 0, [root], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += ticks.get(p, 0)
        todo.extend(children.get(p, ()))
    return total / TCK


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    # guest time is already inside user/nice: count the first 8 fields only
    return (sum(v[:8]) - idle) / TCK


def measure_run(cmd, root, timeout, errfile, env=None, preexec_fn=None):
    """
    Runs cmd (the client) with its stdout and stderr in errfile and the CPU
    of root's process tree read just before and just after. Returns a dict:
    rc (124 when killed at the timeout), wall_s, server_cpu_s, client_cpu_s,
    machine_busy_s. SIGTERM, SIGINT or SIGHUP meanwhile kill the client and
    exit (128 + the signal).
    """
    with open(errfile, "wb") as err:
        c0, m0, t0 = tree_cpu(root), machine_busy(), time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                             start_new_session=True, env=env, preexec_fn=preexec_fn)
        killed = []

        def kill():
            killed.append(1)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass

        def on_signal(signum, frame):
            kill()
            raise SystemExit(128 + signum)

        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            old[sig] = signal.signal(sig, on_signal)
        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
            for sig, h in old.items():
                signal.signal(sig, h)
        p.returncode = os.waitstatus_to_exitcode(status)
        t1 = time.perf_counter()
        m1 = machine_busy()
        c1 = tree_cpu(root)
    return {"rc": 124 if killed else p.returncode, "wall_s": t1 - t0,
            "server_cpu_s": c1 - c0, "client_cpu_s": ru.ru_utime + ru.ru_stime,
            "machine_busy_s": m1 - m0}


def measure(argv):
    root, timeout, errfile = None, 600.0, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--root":
            root = int(argv[i + 1]); i += 2
        elif a == "--timeout":
            timeout = float(argv[i + 1]); i += 2
        elif a == "--stderr":
            errfile = argv[i + 1]; i += 2
        elif a == "--":
            i += 1
            break
        else:
            raise SystemExit("benchutil measure: unknown argument %r" % a)
    cmd = argv[i:]
    if root is None or not cmd or errfile is None:
        raise SystemExit("benchutil measure: need --root PID --stderr FILE -- CMD...")
    r = measure_run(cmd, root, timeout, errfile)
    print("rc=%d wall_s=%.3f server_cpu_s=%.2f client_cpu_s=%.2f machine_busy_s=%.2f"
          % (r["rc"], r["wall_s"], r["server_cpu_s"], r["client_cpu_s"], r["machine_busy_s"]))


SERVER_ORDER = {"mxring": 0, "smtp-sink": 1, "postfix": 2}
SERVER_LABEL = {"mxring": "mxring", "smtp-sink": "Postfix smtp-sink (stores nothing)",
                "postfix": "Postfix smtpd (queue, fsync)"}
MODE_LABEL = {"new": "new session per message", "reused": "sessions reused (-d)"}


def fmt(x, nd=0):
    if x is None:
        return "—"
    if nd == 0:
        return "{:,.0f}".format(x)
    return "{:,.{}f}".format(x, nd)


def report(csv_path, md_path):
    rows = list(csv.DictReader(open(csv_path)))
    groups = defaultdict(list)
    fails = defaultdict(int)
    meta = {}
    for r in rows:
        key = (r["server"], r["mode"], int(r["size"]))
        meta[key] = (int(r["messages"]), int(r["sessions"]))
        if r["ok"] != "1":
            fails[key] += 1
            continue
        groups[key].append(r)
    keys = sorted(meta, key=lambda k: (k[2], k[1] != "new", SERVER_ORDER.get(k[0], 9), k[0]))
    med = {}
    out = []
    out.append("| server | mode | size | messages × runs | msgs/s (median) | server CPU-s (median) "
               "| msgs per server CPU-s | client CPU-s | other CPU-s on the box |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in keys:
        g = groups.get(k, [])
        n, s = meta[k]
        if g:
            rate = statistics.median(float(r["msgs_per_s"]) for r in g)
            cpu = statistics.median(float(r["server_cpu_s"]) for r in g)
            per = statistics.median(float(r["msgs_per_cpu_s"]) if r["msgs_per_cpu_s"] else float("inf")
                                    for r in g)
            ccpu = statistics.median(float(r["client_cpu_s"]) for r in g)
            other = statistics.median(float(r["other_cpu_s"]) for r in g)
            med[k] = (rate, cpu, per)
        else:
            rate = cpu = per = ccpu = other = None
        runs = "%d × %d" % (n, len(g))
        if fails.get(k):
            runs += " (%d failed)" % fails[k]
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            SERVER_LABEL.get(k[0], k[0]), MODE_LABEL.get(k[1], k[1]), fmt_size(k[2]), runs,
            fmt(rate), fmt(cpu, 2), fmt(per), fmt(ccpu, 2), fmt(other, 2)))
    ratio = []
    cases = sorted({(k[1], k[2]) for k in med}, key=lambda c: (c[1], c[0] != "new"))
    if any(("mxring",) + c in med for c in cases):
        ratio.append("")
        ratio.append("| mode | size | mxring msgs per CPU-s | ÷ smtp-sink | ÷ Postfix smtpd "
                     "| mxring msgs/s | ÷ smtp-sink | ÷ Postfix smtpd |")
        ratio.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for mode, size in cases:
            mx = med.get(("mxring", mode, size))
            if not mx:
                continue
            cells = []
            for idx in (2, 0):
                cells.append(fmt(mx[idx]))
                for peer in ("smtp-sink", "postfix"):
                    p = med.get((peer, mode, size))
                    cells.append("%.2f×" % (mx[idx] / p[idx]) if p and p[idx] and p[idx] != float("inf")
                                 and mx[idx] != float("inf") else "—")
            ratio.append("| %s | %s | %s |" % (MODE_LABEL.get(mode, mode), fmt_size(size),
                                               " | ".join(cells)))
    text = "\n".join(out + ratio) + "\n"
    sys.stdout.write(text)
    with open(md_path, "w") as f:
        f.write(text)


def fmt_size(n):
    if n % 1024 == 0:
        return "%d KiB" % (n // 1024)
    return "%d B" % n


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "port":
        print(free_port())
    elif cmd == "waitport":
        sys.exit(0 if wait_port(int(args[0]), float(args[1])) else 1)
    elif cmd == "cpu":
        print("%.2f" % tree_cpu(int(args[0])))
    elif cmd == "measure":
        measure(args)
    elif cmd == "pids-env":
        want = args[0].encode()
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != os.getpid():
                try:
                    with open("/proc/%s/environ" % name, "rb") as f:
                        env = f.read().split(b"\0")
                except OSError:
                    continue
                if want in env:
                    print(name)
    elif cmd == "report":
        report(args[0], args[1])
    else:
        raise SystemExit("benchutil: unknown command %r" % cmd)


if __name__ == "__main__":
    main()
