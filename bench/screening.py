#!/usr/bin/env python3
"""
screening.py - what screening costs the accepted path, on loopback.

usage: bench/screening.py [--mxring PATH] [--bench PATH] [--entries N]
                          [--duration S] [--runs K] [--connections N]
                          [--latency-clients N] [--out FILE] [--work DIR]

Two configurations of the same build, started afresh for every run and
measured in alternating order (off, on, on, off, ...) so that drift on the
machine spreads over both:

  off  no screening;
  on   recipient_table with --entries keys (default 1,000,000, in the text
       format of Postfix's relay_recipient_maps sources, a value column
       included), recipient_delimiter = +, two DNS lists (bl.test*2 and
       wl.test=127.0.0.[2..11]*-1) served by a private unbound
       (tests/integration/dnsserver.py) that lists no client of the run,
       dns_servers pointing at it, and client_connection_rate_limit and
       client_message_rate_limit set far above the load, so that every
       check runs and none refuses.

Throughput: each run warms the server with one session (so the DNS cache
holds the client) and 1 s of the load, then measures mxring-bench
--duration S --size 1k --msgs-per-conn 100 over --connections connections,
each message to user<n>@example.com (n: the message number, every one a
key of the table), with the server's CPU seconds read from /proc around it
(bench/peers/benchutil.py). The figure is messages per server CPU-second;
the table gives the medians and on / off.

Greeting latency: on a fresh server of each configuration, connect to 220
of --latency-clients sessions, each from its own loopback address, p50 and
p90: one by one (a Python client, 127.0.1.1 and up; then QUIT), and all at
once (mxring-bench, 127.0.2.1 and up, one message each; its
connect_banner). With screening on, the first pass has a cold cache (one
DNS round trip per client to the local unbound, two queries each), the
second pass of the same addresses a warm one.

Output: a Markdown table on stdout and in --out (default
bench/results/screening-<UTC date-time>.md).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "peers"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import benchutil  # noqa: E402
import servers as S  # noqa: E402
import dnsserver  # noqa: E402


def log(msg):
    sys.stderr.write("screening: %s\n" % msg)
    sys.stderr.flush()


def write_table(path, entries):
    """user0@example.com .. user<entries-1>@example.com, with a value column."""
    with open(path, "w") as f:
        f.write("# recipients of example.com, as postmap reads them\n")
        for i in range(entries):
            f.write("user%d@example.com\tOK\n" % i)


def bench_cmd(a, port, json_path, extra):
    return [a.bench, "--server", "127.0.0.1:%d" % port, "--quiet", "--json", json_path,
            "--timeout", "30", "--size", "1k", "--to", "user%n@example.com"] + extra


def run_json(cmd, root, errfile, timeout):
    r = benchutil.measure_run(cmd, root, timeout, errfile)
    if r["rc"] != 0:
        raise SystemExit("screening: mxring-bench failed (%d): %s\n%s"
                         % (r["rc"], " ".join(cmd), S.tail(errfile)))
    return r


def greeting_one_by_one(port, first_addr, n):
    """connect -> 220 of n sessions, one after another, each from its own
    loopback address: (p50, p90) in ms. Each then sends QUIT."""
    times = []
    for i in range(n):
        k = first_addr + i
        src = "127.0.%d.%d" % (k >> 8, k & 255)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.bind((src, 0))
        t0 = time.perf_counter()
        s.connect(("127.0.0.1", port))
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(512)
            if not chunk:
                raise SystemExit("screening: %s: closed before the greeting" % src)
            buf += chunk
        times.append((time.perf_counter() - t0) * 1000.0)
        if not buf.startswith(b"220 "):
            raise SystemExit("screening: %s: greeting %r" % (src, buf[:80]))
        s.sendall(b"QUIT\r\n")
        s.recv(512)
        s.close()
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.9))]


def greeting(a, srv, work, tag, first_addr):
    """connect -> 220 of latency-clients sessions from their own addresses, all at once."""
    last = first_addr + a.latency_clients - 1
    src = "127.0.%d.%d-127.0.%d.%d" % (first_addr >> 8, first_addr & 255, last >> 8, last & 255)
    j = os.path.join(work, "lat-%s.json" % tag)
    cmd = bench_cmd(a, srv.port, j, ["--connections", str(a.latency_clients),
                                     "--messages", str(a.latency_clients),
                                     "--msgs-per-conn", "1", "--source", src])
    run_json(cmd, srv.root_pid, os.path.join(work, "lat-%s.err" % tag), 120)
    with open(j) as f:
        lat = json.load(f)["latency_ms"]["connect_banner"]
    return lat["p50"], lat["p90"]


def main():
    ap = argparse.ArgumentParser(description="what screening costs the accepted path")
    ap.add_argument("--mxring", default=os.path.join(REPO, "build", "core", "mxring"))
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "bench", "mxring-bench"))
    ap.add_argument("--entries", type=int, default=1000000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--latency-clients", type=int, default=200)
    ap.add_argument("--out")
    ap.add_argument("--work")
    a = ap.parse_args()
    for p in (a.mxring, a.bench):
        if not os.access(p, os.X_OK):
            raise SystemExit("screening: %s is not built" % p)
    if a.latency_clients < 1 or a.latency_clients > 250:
        raise SystemExit("screening: --latency-clients is 1..250")
    work = a.work or tempfile.mkdtemp(prefix="mxring-screening-")
    os.makedirs(work, exist_ok=True)
    table = os.path.join(work, "recipients")
    t0 = time.monotonic()
    write_table(table, a.entries)
    log("table of %d entries written in %.1f s" % (a.entries, time.monotonic() - t0))

    dns = dnsserver.DNSServer(zones=["bl.test", "wl.test"])
    dns.start()
    try:
        on_opts = ["recipient_table=" + table, "recipient_delimiter=+",
                   "dnsbl_sites=bl.test*2, wl.test=127.0.0.[2..11]*-1",
                   "dns_servers=127.0.0.1:%d" % dns.port,
                   "client_connection_rate_limit=65535", "client_message_rate_limit=65535"]
        configs = {"off": [], "on": on_opts}
        rows = {"off": [], "on": []}
        for rnd in range(a.runs):
            order = ["off", "on"] if rnd % 2 == 0 else ["on", "off"]
            for name in order:
                rundir = os.path.join(work, "r%d-%s" % (rnd, name))
                os.makedirs(rundir)
                srv = S.Mxring(rundir, a.mxring, opts=configs[name])
                srv.start()
                try:
                    # One session first: its client is then in the DNS cache.
                    warm = bench_cmd(a, srv.port, os.path.join(rundir, "warm.json"),
                                     ["--connections", str(a.connections), "--duration", "1"])
                    run_json(warm, srv.root_pid, os.path.join(rundir, "warm.err"), 60)
                    j = os.path.join(rundir, "run.json")
                    cmd = bench_cmd(a, srv.port, j, ["--connections", str(a.connections),
                                                    "--duration", str(a.duration),
                                                    "--msgs-per-conn", "100"])
                    r = run_json(cmd, srv.root_pid, os.path.join(rundir, "run.err"),
                                 a.duration + 60)
                    with open(j) as f:
                        rep = json.load(f)
                    n = rep["messages"]["accepted"]
                    per_cpu = n / r["server_cpu_s"] if r["server_cpu_s"] > 0 else 0.0
                    rows[name].append((rep["msgs_per_s"], r["server_cpu_s"], per_cpu))
                    log("round %d %s: %d msgs, %.0f msgs/s, %.2f server CPU-s, %.0f msgs "
                        "per server CPU-s" % (rnd + 1, name, n, rep["msgs_per_s"],
                                              r["server_cpu_s"], per_cpu))
                finally:
                    note = srv.stop()
                    if note:
                        raise SystemExit("screening: mxring %s: %s" % (name, note))
        lat = {}
        for name in ("off", "on"):
            rundir = os.path.join(work, "lat-%s" % name)
            os.makedirs(rundir)
            srv = S.Mxring(rundir, a.mxring, opts=configs[name])
            srv.start()
            try:
                lat[name + ", one by one, first pass"] = greeting_one_by_one(
                    srv.port, 257, a.latency_clients)
                lat[name + ", one by one, second pass"] = greeting_one_by_one(
                    srv.port, 257, a.latency_clients)
                lat[name + ", all at once, first pass"] = greeting(a, srv, rundir, "cold", 513)
                lat[name + ", all at once, second pass"] = greeting(a, srv, rundir, "warm", 513)
            finally:
                note = srv.stop()
                if note:
                    raise SystemExit("screening: mxring %s: %s" % (name, note))
        queries = dns.queries(dnsserver.qname("127.0.1.1", "bl.test"))
    finally:
        dns.stop()

    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in rows.items()}
    out = []
    out.append("# Screening on and off, same build, %d alternating rounds\n" % a.runs)
    out.append("mxring-bench --size 1k --msgs-per-conn 100 --connections %d --duration %g, "
               "recipient table of %d entries, two DNS lists (warm cache)\n"
               % (a.connections, a.duration, a.entries))
    out.append("| screening | msgs/s | server CPU-s | msgs per server CPU-s |")
    out.append("|---|---:|---:|---:|")
    for k in ("off", "on"):
        out.append("| %s | %.0f | %.2f | %.0f |" % (k, med[k][0], med[k][1], med[k][2]))
    ratio = med["on"][2] / med["off"][2] if med["off"][2] else 0.0
    out.append("\non / off, msgs per server CPU-second: %.3f\n" % ratio)
    out.append("Greeting latency, connect to 220, %d clients each from its own address "
               "(ms; first pass: cold cache, second: warm):\n" % a.latency_clients)
    out.append("| server | p50 | p90 |")
    out.append("|---|---:|---:|")
    for k, (p50, p90) in lat.items():
        out.append("| %s | %.3f | %.3f |" % (k, p50, p90))
    out.append("\nqueries the DNS server saw for 127.0.1.1 in bl.test over both passes: %d\n"
               % queries)
    out.append("runs (msgs/s, server CPU-s, msgs per server CPU-s):")
    for k, v in rows.items():
        out.append("  %s: %s" % (k, "; ".join("%.0f, %.2f, %.0f" % x for x in v)))
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    path = a.out or os.path.join(HERE, "results",
                                 "screening-%s.md" % time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    log("written %s" % path)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
