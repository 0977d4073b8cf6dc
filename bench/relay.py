#!/usr/bin/env python3
"""
relay.py - what the relay to the hub costs and how fast it goes, on loopback.

usage: bench/relay.py [--mxring PATH] [--bench PATH] [--duration S] [--runs K]
                      [--connections N] [--queued N] [--relay KEY=VALUE]...
                      [--out FILE] [--work DIR]

The hub is Postfix's smtp-sink (it answers and stores nothing, and offers
no CHUNKING: the relay sends DATA, two round trips a message), or with
--hub postfix a private Postfix smtpd that queues each message with an
fsync (it offers CHUNKING: BDAT, one round trip). What is measured is
mxring: its shards and writers taking 1 KiB messages in
(mxring-bench, plaintext, 100 per session), and its relay handing each one
on (relay_host = smtp:[127.0.0.1]:SINK).

  capacity  closed loop for --duration S (default 30), --runs times (each
            on a fresh server): intake msgs/s (mxring-bench), relay msgs/s
            (mxring_relay_sent_total over the same seconds), the undelivered
            queue at the end of the load (mxring_relay_queue_messages), and
            CPU per message of the receive path (threads shardN and
            writerN) and of the relay (threads relayN), from
            /proc/PID/task/TID/stat around the load;
  latency   open loop at half the median intake of the capacity runs
            (mxring-bench --rate), --duration S: the delay from the client's
            250 (the "queued" log line) to the hub's 250 (the "relayed" log
            line), p50, p99 and max, over every message;
  queued    --queued N messages (default 1,000,000) into a server whose hub
            is down (relay_host points at a closed port): the process's
            resident memory once they are stored (VmRSS), the relay's
            window and the bytes waiting; then a restart on that spool
            (journal replay) and its resident memory.

Output: a Markdown table on stdout and in --out (default
bench/results/relay-<UTC date-time>.md).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "peers"))

import benchutil  # noqa: E402
import servers as S  # noqa: E402

TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    sys.stderr.write("relay: %s\n" % msg)
    sys.stderr.flush()


def thread_cpu(pid):
    """{thread name: CPU seconds} of pid's threads (user + system)."""
    out = {}
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open("%s/%s/stat" % (base, tid)) as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / TCK
    return out


def group(cpu):
    """(receive, relay) CPU seconds: shardN and writerN threads, relayN threads."""
    recv = sum(v for k, v in cpu.items() if re.match(r"(shard|writer)\d+$", k))
    rel = sum(v for k, v in cpu.items() if re.match(r"relay\d+$", k))
    return recv, rel


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_for(pred, seconds, step=0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def server(work, tag, a, hub_port, extra=()):
    rundir = os.path.join(work, tag)
    os.makedirs(rundir)
    mport = benchutil.free_port()
    opts = ["relay_host=smtp:[127.0.0.1]:%d" % hub_port, "metrics_listen=127.0.0.1:%d" % mport,
            "stats_interval=0"] + ["relay_" + o for o in a.relay] + list(extra)
    srv = S.Mxring(rundir, a.mxring, opts=opts)
    srv.start()
    return srv, mport, rundir


def bench(a, srv, rundir, tag, extra, timeout):
    j = os.path.join(rundir, tag + ".json")
    cmd = [a.bench, "--server", "127.0.0.1:%d" % srv.port, "--quiet", "--json", j,
           "--timeout", "30", "--size", "1k", "--msgs-per-conn", "100"] + extra
    with open(os.path.join(rundir, tag + ".err"), "w") as err:
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit("relay: mxring-bench %s failed (%d), see %s" % (tag, r.returncode,
                                                                         rundir))
    with open(j) as f:
        return json.load(f)


def capacity(a, work, sink, rnd):
    sink_port = sink.port
    srv, mport, rundir = server(work, "cap%d" % rnd, a, sink_port)
    try:
        bench(a, srv, rundir, "warm", ["--connections", str(a.connections), "--duration", "1"],
              60)
        wait_for(lambda: scrape(mport).get("mxring_relay_queue_messages", 1) == 0, 30)
        h0 = benchutil.tree_cpu(sink.root_pid)
        m0, c0, t0 = scrape(mport), thread_cpu(srv.root_pid), time.monotonic()
        rep = bench(a, srv, rundir, "run", ["--connections", str(a.connections),
                                            "--duration", str(a.duration)], a.duration + 60)
        t1, c1, m1 = time.monotonic(), thread_cpu(srv.root_pid), scrape(mport)
        h1 = benchutil.tree_cpu(sink.root_pid)
        n = rep["messages"]["accepted"]
        sent = m1["mxring_relay_sent_total"] - m0["mxring_relay_sent_total"]
        backlog = m1["mxring_relay_queue_messages"]
        r0, l0 = group(c0)
        r1, l1 = group(c1)
        # The relay's CPU per message counts what it sent in the window.
        row = {"intake": rep["msgs_per_s"], "relay": sent / (t1 - t0), "backlog": backlog,
               "recv_us": (r1 - r0) / n * 1e6 if n else 0.0,
               "relay_us": (l1 - l0) / sent * 1e6 if sent else 0.0,
               "relay_busy": (l1 - l0) / (t1 - t0), "hub_busy": (h1 - h0) / (t1 - t0)}
        log("capacity %d: intake %.0f msgs/s, relay %.0f msgs/s, %d waiting at the end, "
            "receive %.1f us/msg, relay %.1f us/msg; relay thread %.0f%% busy, hub %.0f%%"
            % (rnd + 1, row["intake"], row["relay"], backlog, row["recv_us"], row["relay_us"],
               100 * row["relay_busy"], 100 * row["hub_busy"]))
        return row
    finally:
        note = srv.stop()
        if note:
            raise SystemExit("relay: mxring: %s" % note)


TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d):(\d\d):(\d\d\.\d+)Z mxring: (queued|relayed) qid=(\S+)")


def latency(a, work, sink_port, rate):
    srv, mport, rundir = server(work, "lat", a, sink_port)
    try:
        bench(a, srv, rundir, "run", ["--connections", str(a.connections), "--duration",
                                      str(a.duration), "--rate", "%d" % rate],
              a.duration + 60)
        wait_for(lambda: scrape(mport).get("mxring_relay_queue_messages", 1) == 0, 30)
    finally:
        note = srv.stop()
        if note:
            raise SystemExit("relay: mxring: %s" % note)
    queued, delays = {}, []
    with open(os.path.join(rundir, "mxring.log")) as f:
        for line in f:
            m = TS.match(line)
            if not m:
                continue
            t = (m.group(1), int(m.group(2)) * 60 + float(m.group(3)))
            if m.group(4) == "queued":
                queued[m.group(5)] = t
            elif m.group(5) in queued and "status=sent" in line:
                q = queued[m.group(5)]
                d = t[1] - q[1] if t[0] == q[0] else t[1] + 3600 - q[1]
                delays.append(d * 1000)
    delays.sort()
    if not delays:
        raise SystemExit("relay: no delays measured")
    pct = lambda p: delays[min(len(delays) - 1, int(p / 100 * len(delays)))]  # noqa: E731
    out = {"n": len(delays), "p50": pct(50), "p99": pct(99), "max": delays[-1]}
    log("latency at %d msgs/s: %d messages, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
        % (rate, out["n"], out["p50"], out["p99"], out["max"]))
    return out


def queued(a, work):
    dead = benchutil.free_port()  # nothing listens there
    srv, mport, rundir = server(work, "queued", a, dead,
                                ["relay_retry_schedule=1h, 1h", "spool_max_bytes=0"])
    try:
        rss0 = rss_kib(srv.root_pid)
        t0 = time.monotonic()
        bench(a, srv, rundir, "fill", ["--connections", str(a.connections), "--messages",
                                       str(a.queued)], 3600)
        fill_s = time.monotonic() - t0
        time.sleep(2)
        m = scrape(mport)
        rss1 = rss_kib(srv.root_pid)
        log("queued: %d messages in %.0f s; RSS %d -> %d KiB; window %d; %d bytes waiting"
            % (a.queued, fill_s, rss0, rss1, m["mxring_relay_queue_messages"],
               m["mxring_relay_queue_bytes"]))
    finally:
        note = srv.stop()
        if note:
            raise SystemExit("relay: mxring: %s" % note)
    # A restart on that spool: the journal is replayed, the window refilled.
    t0 = time.monotonic()
    srv.start()
    try:
        ready_s = time.monotonic() - t0  # process start to its ready line
        time.sleep(3)
        rss2 = rss_kib(srv.root_pid)
        m2 = scrape(mport_of(srv))
        log("restart: ready in %.1f s, RSS %d KiB, window %d" % (ready_s, rss2,
                                                                 m2["mxring_relay_queue_messages"]))
    finally:
        srv.stop()
    return {"n": a.queued, "fill_s": fill_s, "rss0": rss0, "rss1": rss1,
            "window": m["mxring_relay_queue_messages"], "bytes": m["mxring_relay_queue_bytes"],
            "restart_s": ready_s, "rss2": rss2, "window2": m2["mxring_relay_queue_messages"]}


def mport_of(srv):
    for o in srv.opts:
        if o.startswith("metrics_listen="):
            return int(o.rsplit(":", 1)[1])
    raise SystemExit("relay: no metrics_listen")


def main():
    ap = argparse.ArgumentParser(description="the relay's speed and cost")
    ap.add_argument("--mxring", default=os.path.join(REPO, "build", "core", "mxring"))
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "bench", "mxring-bench"))
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--queued", type=int, default=1000000)
    ap.add_argument("--hub", choices=("smtp-sink", "postfix"), default="smtp-sink",
                    help="smtp-sink (stores nothing; no CHUNKING: DATA) or a private "
                         "Postfix smtpd (queues with fsync; CHUNKING: BDAT)")
    ap.add_argument("--relay", action="append", default=[], metavar="KEY=VALUE",
                    help="a relay_KEY setting of mxring (e.g. connections=100)")
    ap.add_argument("--out")
    ap.add_argument("--work")
    a = ap.parse_args()
    for p in (a.mxring, a.bench, S.SMTP_SINK):
        if not os.access(p, os.X_OK):
            raise SystemExit("relay: %s is not there (build, or tools/deps.sh --bench)" % p)
    work = a.work or tempfile.mkdtemp(prefix="mxring-relay-")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o711)  # Postfix's own users must reach its queue under it
    if a.hub == "postfix":
        sink = S.PostfixSmtpd(os.path.join(work, "hub"))
    else:
        sink = S.SmtpSink(os.path.join(work, "sink"))
    os.makedirs(sink.workdir)
    sink.start()
    try:
        rows = [capacity(a, work, sink, r) for r in range(a.runs)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        lat = latency(a, work, sink.port, max(1, int(med["intake"] / 2)))
    finally:
        sink.stop()
    q = queued(a, work) if a.queued else None

    out = ["# The relay to the hub (%s), 1 KiB messages\n" % sink.label,
           "mxring-bench --size 1k --msgs-per-conn 100 --connections %d, %g s, "
           "%d runs (medians)\n" % (a.connections, a.duration, a.runs),
           "| intake msgs/s | relay msgs/s | waiting at the end | receive CPU us/msg | "
           "relay CPU us/msg | relay thread busy | hub busy |",
           "|---:|---:|---:|---:|---:|---:|---:|",
           "| %.0f | %.0f | %.0f | %.1f | %.1f | %.0f%% | %.0f%% |"
           % (med["intake"], med["relay"], med["backlog"], med["recv_us"], med["relay_us"],
              100 * med["relay_busy"], 100 * med["hub_busy"]),
           "\nrelay / intake: %.3f; relay CPU / receive CPU per message: %.2f\n"
           % (med["relay"] / med["intake"] if med["intake"] else 0,
              med["relay_us"] / med["recv_us"] if med["recv_us"] else 0),
           "Client's 250 to the hub's 250 at %d msgs/s (half the intake), %d messages: "
           "p50 %.1f ms, p99 %.1f ms, max %.1f ms (log timestamps, 1 ms resolution)\n"
           % (int(med["intake"] / 2), lat["n"], lat["p50"], lat["p99"], lat["max"])]
    if q:
        out.append("%d messages queued for a hub that is down: stored in %.0f s; resident "
                   "memory %d KiB before, %d KiB after (%d in the relay's window, %.0f MB "
                   "waiting on disk); after a restart on that spool: ready in %.1f s, %d KiB, "
                   "window %d\n" % (q["n"], q["fill_s"], q["rss0"], q["rss1"], q["window"],
                                    q["bytes"] / 1e6, q["restart_s"], q["rss2"], q["window2"]))
    text = "\n".join(out)
    print(text)
    path = a.out or os.path.join(HERE, "results",
                                 "relay-%s.md" % time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
