#!/usr/bin/env python3
"""tls-handshakes.py - what a TLS handshake and TLS bytes cost mxring's shards.

Starts mxring on loopback (a self-signed ECDSA P-256 certificate, --shards
shards) and drives it with build/bench/mxring-bench, one message per session
(--msgs-per-conn 1), twice per run: plaintext sessions, then the same sessions
with STARTTLS (a full handshake, or a resumed one with --resume). CPU is read
from /proc for the whole process and for its shard threads alone (named
shardN): the shards do all network, SMTP and TLS work, the writer threads only
store messages. The difference of shard CPU per session between the two
passes is the handshake's own cost in the server, with the TCP and SMTP work
of a session taken out.

The same wolfSSL build doing the same handshakes in memory (build/bench/
tls-limits: no sockets, only the server's calls timed) gives the crypto
limit; the ratio printed is handshakes per shard CPU-second of that
difference against it. Runs are repeated (--runs) and medians printed. The
difference is also split into user and kernel time (utime and stime of the
shard threads): user_ratio compares the user-space part alone (wolfSSL,
tls/record.c, the second EHLO) with the limit; the kernel part is the socket
work of the round trips STARTTLS adds.

--bulk-mb instead sends 8 MiB messages (--bulk-mb in all per run) plaintext and
then over STARTTLS on --connections sessions, and prints MB per shard
CPU-second for both and the TLS difference beside the in-memory decryption
rate.

    bench/tls-handshakes.py [--sessions 20000] [--connections 64] [--tls 1.3|1.2]
                            [--resume none|tickets|ids] [--bulk-mb 0] [--shards 1]
                            [--runs 3] [--client-cpus LIST] [--server-cpus LIST]
                            [--no-limits] [--spool-dir DIR]

The setup of the TLS-cost figures is one shard pinned to CPU 0 and the load
tool on CPU 1: --server-cpus 0 --client-cpus 1 --connections 50.

Loopback only; the server is stopped at the end. Exit status 1 when a run had
errors (every message must be accepted).
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, "..", "build")


def thread_ticks(pid, prefix):
    """(utime, stime) of the threads of pid whose name starts with prefix."""
    user, system, found = 0, 0, 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith(prefix):
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user += int(fields[11])
        system += int(fields[12])
        found += 1
    if not found:
        sys.exit(f"tls-handshakes: no thread named {prefix}* in process {pid}")
    return user, system


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    su, ss = thread_ticks(pid, "shard")
    return {"all": (int(fields[11]) + int(fields[12])) / hz,
            "shard": (su + ss) / hz, "shard_user": su / hz, "shard_kernel": ss / hz,
            "writer": sum(thread_ticks(pid, "writer")) / hz}


def bench(args, port, tmp, tls, messages, msgs_per_conn, size, connections):
    out = os.path.join(tmp, "bench.json")
    cmd = [args.bench, "--server", f"127.0.0.1:{port}", "--quiet", "--json", out,
           "--connections", str(connections), "--messages", str(messages),
           "--msgs-per-conn", str(msgs_per_conn), "--size", str(size),
           "--threads", str(args.threads), "--max-errors", "1"]
    if args.client_cpus:
        cmd += ["--cpus", args.client_cpus]
    if tls:
        cmd += ["--starttls", "--tls-version", args.tls, "--resume", args.resume]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit("tls-handshakes: mxring-bench failed (%d):\n%s%s"
                 % (p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    with open(out) as f:
        r = json.load(f)
    if r["messages"]["accepted"] != messages:
        sys.exit("tls-handshakes: %d of %d messages accepted" % (r["messages"]["accepted"],
                                                                 messages))
    return r


def measured(args, proc, port, tmp, tls, messages, msgs_per_conn, size, connections):
    before = cpu(proc.pid)
    r = bench(args, port, tmp, tls, messages, msgs_per_conn, size, connections)
    after = cpu(proc.pid)
    # Stored segments are done with: drop them, so that a long run fits a
    # spool on tmpfs (--spool-dir /dev/shm/...).
    ready = os.path.join(args.spool, "ready")
    for name in os.listdir(ready) if os.path.isdir(ready) else ():
        os.unlink(os.path.join(ready, name))
    return r, {k: after[k] - before[k] for k in after}


def tls_limits(args, tmp):
    cmd = [args.limits, f"{tmp}/tls/cert.pem", f"{tmp}/tls/key.pem", "--tls", args.tls]
    if args.bulk_mb:
        cmd += ["--bulk-mb", "400"]
    else:
        cmd += ["--handshakes", "3000", "--resume", "none" if args.resume == "none"
                else "tickets"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split())


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="mxring-bench threads")
    ap.add_argument("--client-cpus", default="", help="mxring-bench --cpus")
    ap.add_argument("--server-cpus", default="", help="run mxring under taskset -c LIST")
    ap.add_argument("--tls", default="1.3", choices=["1.2", "1.3"])
    ap.add_argument("--resume", default="none", choices=["none", "tickets", "ids"])
    ap.add_argument("--bulk-mb", type=int, default=0)
    ap.add_argument("--shards", default="1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-limits", action="store_true")
    ap.add_argument("--spool-dir", default="",
                    help="spool here (emptied as it fills) instead of in a temporary folder")
    ap.add_argument("--mxring", default=os.path.join(BUILD, "core", "mxring"))
    ap.add_argument("--bench", default=os.path.join(BUILD, "bench", "mxring-bench"))
    ap.add_argument("--limits", default=os.path.join(BUILD, "bench", "tls-limits"))
    args = ap.parse_args()
    if args.sessions < args.connections or args.connections < 1 or args.runs < 1:
        sys.exit("tls-handshakes: need --sessions >= --connections >= 1 and --runs >= 1")
    if args.bulk_mb and args.bulk_mb < 8:
        sys.exit("tls-handshakes: --bulk-mb: at least 8 (messages are 8 MiB)")
    if args.resume == "ids" and args.tls != "1.2":
        sys.exit("tls-handshakes: --resume ids needs --tls 1.2")

    with tempfile.TemporaryDirectory(prefix="mxring-tlsb-") as tmp:
        if args.spool_dir:
            if os.path.exists(args.spool_dir) and os.listdir(args.spool_dir):
                sys.exit(f"tls-handshakes: --spool-dir {args.spool_dir} is not empty")
            args.spool = args.spool_dir
        else:
            args.spool = os.path.join(tmp, "spool")
        subprocess.run([os.path.join(HERE, "..", "tools", "mxring-cert.sh"),
                        os.path.join(tmp, "tls"), "mx.bench"], check=True,
                       stdout=subprocess.DEVNULL)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        log = open(os.path.join(tmp, "log"), "w+")
        pin = ["taskset", "-c", args.server_cpus] if args.server_cpus else []
        proc = subprocess.Popen(
            pin + [args.mxring, "-o", f"listen=127.0.0.1:{port}", "-o", f"spool_dir={args.spool}",
             "-o", "accept_domains=example.com", "-o", "myhostname=mx.bench",
             "-o", f"shards={args.shards}", "-o", "tls_security_level=may",
             "-o", "max_connections=%d" % (args.connections + 64),
             "-o", f"tls_cert_file={tmp}/tls/cert.pem", "-o", f"tls_key_file={tmp}/tls/key.pem",
             "-o", f"tls_ticket_key_file={tmp}/tls/ticket.keys"]
            + (["-o", "allow_root=yes"] if os.geteuid() == 0 else []), stderr=log)
        try:
            for _ in range(200):
                log.seek(0)
                if "ready" in log.read():
                    break
                time.sleep(0.05)
            else:
                sys.exit("tls-handshakes: mxring did not start:\n" + open(log.name).read())
            limit = None
            if not args.no_limits and os.path.exists(args.limits):
                limit = tls_limits(args, tmp)
            if args.bulk_mb:
                bulk(args, proc, port, tmp, limit)
            else:
                handshakes(args, proc, port, tmp, limit)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def handshakes(args, proc, port, tmp, limit):
    n = args.sessions
    plain_us, tls_us, all_us, rates, resumed = [], [], [], [], []
    user_inc, kernel_inc = [], []
    for _ in range(args.runs):
        _, p = measured(args, proc, port, tmp, False, n, 1, 1024, args.connections)
        plain_us.append(p["shard"] / n * 1e6)
        r, c = measured(args, proc, port, tmp, True, n, 1, 1024, args.connections)
        tls_us.append(c["shard"] / n * 1e6)
        user_inc.append((c["shard_user"] - p["shard_user"]) / n * 1e6)
        kernel_inc.append((c["shard_kernel"] - p["shard_kernel"]) / n * 1e6)
        all_us.append(c["all"] / n * 1e6)
        rates.append(r["connections_opened"] / r["elapsed_s"])
        resumed.append(r["handshakes"]["resumed"])
        negotiated = r["handshakes"]["negotiated"]
    inc = [t - p for t, p in zip(tls_us, plain_us)]
    print(f"runs={args.runs} sessions={n} connections={args.connections} "
          f"shards={args.shards} tls={args.tls} resume={args.resume} "
          f"negotiated=\"{negotiated}\" resumed_median={med(resumed):.0f}")
    print(f"plain_shard_us_per_session={med(plain_us):.1f} "
          f"tls_shard_us_per_session={med(tls_us):.1f} "
          f"tls_process_us_per_session={med(all_us):.1f} "
          f"tls_sessions_per_s={med(rates):.0f}")
    line = (f"handshake_shard_us={med(inc):.1f} "
            f"handshakes_per_shard_cpu_s={1e6 / med(inc):.0f} "
            f"tls_sessions_per_shard_cpu_s={1e6 / med(tls_us):.0f}")
    if limit:
        mem = float(limit["with_new_free_handshakes_per_cpu_s"])
        line += (f" in_memory_handshakes_per_cpu_s={mem:.0f}"
                 f" ratio={1e6 / med(inc) / mem:.2f}"
                 f" whole_session_ratio={1e6 / med(tls_us) / mem:.2f}")
    print(line)
    # Where the difference goes: user space (wolfSSL, record.c, the SMTP
    # session again) and the kernel (the round trips STARTTLS adds: the 220,
    # the server's flight, the second EHLO; with their receives and wake-ups).
    line = (f"handshake_user_us={med(user_inc):.1f} "
            f"handshake_kernel_us={med(kernel_inc):.1f}")
    if limit:
        line += f" user_ratio={1e6 / med(user_inc) / mem:.2f}"
    print(line)
    print("each run: " + " ".join(f"{p:.0f}/{t:.0f}" for p, t in zip(plain_us, tls_us))
          + " (plain/tls shard us per session)")


def bulk(args, proc, port, tmp, limit):
    size = 8 << 20
    per_run = max(1, args.bulk_mb // 8)
    conns = min(args.connections, per_run)
    mb = per_run * size / 1e6
    plain, tls, writer, user_inc = [], [], [], []
    for _ in range(args.runs):
        _, p = measured(args, proc, port, tmp, False, per_run, 1000, size, conns)
        plain.append(p["shard"])
        _, c = measured(args, proc, port, tmp, True, per_run, 1000, size, conns)
        tls.append(c["shard"])
        writer.append(c["writer"])
        user_inc.append(c["shard_user"] - p["shard_user"])
    inc = [t - p for t, p in zip(tls, plain)]
    print(f"runs={args.runs} bulk_mb={mb:.0f} connections={conns} tls={args.tls}")
    line = (f"plain_mb_per_shard_cpu_s={mb / med(plain):.0f} "
            f"tls_mb_per_shard_cpu_s={mb / med(tls):.0f} "
            f"tls_extra_mb_per_shard_cpu_s={mb / med(inc):.0f} "
            f"writer_mb_per_cpu_s={mb / med(writer):.0f}")
    if limit:
        dec = float(limit["server_decrypt_mb_per_s"])
        line += (f" in_memory_decrypt_mb_per_s={dec:.0f} cipher={limit['cipher']}"
                 f" ratio={mb / med(inc) / dec:.2f} whole_ratio={mb / med(tls) / dec:.2f}"
                 f" user_ratio={mb / med(user_inc) / dec:.2f}")
    print(line)
    print("each run: " + " ".join(f"{mb / p:.0f}/{mb / t:.0f}" for p, t in zip(plain, tls))
          + " (plain/tls MB per shard CPU-s)")


if __name__ == "__main__":
    main()
