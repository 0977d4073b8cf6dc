#!/usr/bin/env python3
"""idle-conns.py - memory per idle connection of an SMTP server.

Starts mxring on loopback (or measures a running server given --pid and
--port), opens N connections that each read the greeting and send EHLO (so
the server holds a session with its HELO name), and reports the growth of
the server's resident memory (VmRSS) divided by N. A warm-up of 200
connections is opened and closed first, so that one-time allocations
(thread caches, first pages of the tables) are not charged to the idle
connections.

    bench/idle-conns.py [--connections 10000] [--starttls] [--mxring build/core/mxring]

Loopback only; every socket is closed and the server stopped at the end.
"""
import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_reply(sock, deadline):
    buf = b""
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("server closed the connection")
        buf += chunk
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return buf


def open_idle(port, n, ehlo=True, tls=None):
    socks = []
    deadline = time.monotonic() + 600
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        read_reply(s, deadline)
        if ehlo or tls:
            s.sendall(b"EHLO idle-%d.example.org\r\n" % i)
            read_reply(s, deadline)
        if tls:
            s.sendall(b"STARTTLS\r\n")
            if not read_reply(s, deadline).startswith(b"220"):
                raise RuntimeError("STARTTLS refused")
            s = tls.wrap_socket(s)
            s.sendall(b"EHLO idle-%d.example.org\r\n" % i)
            read_reply(s, deadline)
        socks.append(s)
    return socks


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--mxring", default="build/core/mxring")
    ap.add_argument("--pid", type=int, help="measure a running server instead")
    ap.add_argument("--port", type=int)
    ap.add_argument("--no-ehlo", action="store_true")
    ap.add_argument("--starttls", action="store_true",
                    help="each connection does STARTTLS (TLS 1.3) and EHLO inside TLS")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    proc = None
    tmp = None
    tls = None
    if args.starttls:
        import ssl
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    if args.pid:
        pid, port = args.pid, args.port
    else:
        tmp = tempfile.TemporaryDirectory(prefix="mxring-idle-")
        port = free_port()
        extra = []
        if args.starttls:
            here = os.path.dirname(os.path.abspath(__file__))
            subprocess.run([os.path.join(here, "..", "tools", "mxring-cert.sh"),
                            os.path.join(tmp.name, "tls"), "mx.bench"], check=True,
                           stdout=subprocess.DEVNULL)
            extra = ["-o", "tls_security_level=may",
                     "-o", f"tls_cert_file={tmp.name}/tls/cert.pem",
                     "-o", f"tls_key_file={tmp.name}/tls/key.pem"]
        log = open(os.path.join(tmp.name, "log"), "w+")
        proc = subprocess.Popen([args.mxring, "-o", f"listen=127.0.0.1:{port}",
                                 "-o", f"spool_dir={tmp.name}/spool",
                                 "-o", "max_connections=%d" % (args.connections + 2000),
                                 "-o", "accept_domains=example.com", "-o", "myhostname=mx.bench"]
                                + extra
                                + (["-o", "allow_root=yes"] if os.geteuid() == 0 else []),
                                stderr=log)
        pid = proc.pid
        for _ in range(100):
            log.seek(0)
            if "ready" in log.read():
                break
            time.sleep(0.05)
        else:
            sys.exit("mxring did not start")
    try:
        warm = open_idle(port, 200, not args.no_ehlo, tls)
        for s in warm:
            s.close()
        time.sleep(0.5)
        before = rss_kib(pid)
        socks = open_idle(port, args.connections, not args.no_ehlo, tls)
        time.sleep(0.5)
        after = rss_kib(pid)
        per = (after - before) * 1024 / args.connections
        print(f"connections={args.connections} starttls={'yes' if tls else 'no'} rss_before_kib={before} rss_after_kib={after} "
              f"bytes_per_idle_connection={per:.0f}")
        for s in socks:
            s.close()
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    main()
