#!/usr/bin/env python3
"""tls-handshakes.py - STARTTLS handshakes per server CPU-second.

Starts mxring on loopback with a self-signed ECDSA certificate, then runs
--sessions sessions from --procs client processes: connect, EHLO, STARTTLS,
the TLS handshake (full, or resumed with the ticket of the process's previous
session), EHLO inside TLS, QUIT. The figure is sessions divided by the
server's CPU seconds (utime+stime from /proc, all threads) over the run, so a
slow client does not lower it; the whole SMTP exchange is charged to it, not
only the handshake. --bulk-mb instead sends one message of that size per
process over TLS and reports MB per server CPU-second.

    bench/tls-handshakes.py [--sessions 4000] [--procs 2] [--tls 1.3|1.2]
                            [--resume none|tickets] [--bulk-mb 0] [--shards 1]

Loopback only; the server is stopped at the end.
"""
import argparse
import multiprocessing
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def reply(f):
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError("server closed the connection")
        if line[3:4] == b" ":
            return line


def client_ctx(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    return ctx


def worker(args):
    port, n, version, resume, bulk_mb = args
    ctx = client_ctx(version)
    sess = None
    resumed = 0
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        reply(f)
        s.sendall(b"EHLO bench.example.org\r\n")
        reply(f)
        s.sendall(b"STARTTLS\r\n")
        if not reply(f).startswith(b"220"):
            raise RuntimeError("STARTTLS refused")
        t = ctx.wrap_socket(s, session=sess if resume == "tickets" else None)
        tf = t.makefile("rb")
        t.sendall(b"EHLO bench.example.org\r\n")
        reply(tf)  # TLS 1.3 tickets arrive with this read
        resumed += t.session_reused
        if bulk_mb:
            # 8 MiB messages (under the default message_size_limit).
            body = (b"x" * 1022 + b"\r\n") * 8192
            for _ in range(bulk_mb // 8):
                t.sendall(b"MAIL FROM:<a@example.com>\r\n")
                reply(tf)
                t.sendall(b"RCPT TO:<b@example.com>\r\n")
                reply(tf)
                t.sendall(b"DATA\r\n")
                reply(tf)
                t.sendall(body + b".\r\n")
                if not reply(tf).startswith(b"250"):
                    raise RuntimeError("message refused")
        t.sendall(b"QUIT\r\n")
        reply(tf)
        sess = t.session
        t.close()
    return resumed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=4000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--tls", default="1.3", choices=["1.2", "1.3"])
    ap.add_argument("--resume", default="none", choices=["none", "tickets"])
    ap.add_argument("--bulk-mb", type=int, default=0)
    ap.add_argument("--shards", default="1")
    ap.add_argument("--mxring", default=os.path.join(HERE, "..", "build", "core", "mxring"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mxring-tlsb-") as tmp:
        subprocess.run([os.path.join(HERE, "..", "tools", "mxring-cert.sh"),
                        os.path.join(tmp, "tls"), "mx.bench"], check=True,
                       stdout=subprocess.DEVNULL)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        log = open(os.path.join(tmp, "log"), "w+")
        proc = subprocess.Popen(
            [args.mxring, "-o", f"listen=127.0.0.1:{port}", "-o", f"spool_dir={tmp}/spool",
             "-o", "accept_domains=example.com", "-o", "myhostname=mx.bench",
             "-o", f"shards={args.shards}", "-o", "tls_security_level=may",
             "-o", f"tls_cert_file={tmp}/tls/cert.pem", "-o", f"tls_key_file={tmp}/tls/key.pem",
             "-o", f"tls_ticket_key_file={tmp}/tls/ticket.keys"], stderr=log)
        try:
            for _ in range(200):
                log.seek(0)
                if "ready" in log.read():
                    break
                time.sleep(0.05)
            else:
                sys.exit("mxring did not start")
            per = args.sessions // args.procs
            if args.bulk_mb:
                per = 1
            hz = os.sysconf("SC_CLK_TCK")
            before = cpu_ticks(proc.pid)
            t0 = time.monotonic()
            with multiprocessing.Pool(args.procs) as pool:
                resumed = sum(pool.map(worker, [(port, per, args.tls, args.resume,
                                                 args.bulk_mb)] * args.procs))
            wall = time.monotonic() - t0
            cpu = (cpu_ticks(proc.pid) - before) / hz
            n = per * args.procs
            if args.bulk_mb:
                mb = args.bulk_mb // 8 * 8 * args.procs
                print(f"tls={args.tls} bulk_mb={mb} server_cpu_s={cpu:.2f} "
                      f"mb_per_server_cpu_s={mb / cpu:.0f} wall_s={wall:.2f}")
            else:
                print(f"tls={args.tls} resume={args.resume} sessions={n} resumed={resumed} "
                      f"server_cpu_s={cpu:.2f} sessions_per_server_cpu_s={n / cpu:.0f} "
                      f"sessions_per_s={n / wall:.0f} shards={args.shards}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
