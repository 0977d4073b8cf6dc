#!/usr/bin/env python3
"""
test_edge_pair.py - two edge nodes behind a real HAProxy, relaying to one
Postfix hub (the relay issue's deployment, end to end on loopback).

Set-up, all private and on loopback:
  - a Postfix hub (hubs.PostfixHub, STARTTLS offered);
  - two mxring nodes, n1 and n2 (myhostname n1.mx.test, n2.mx.test), each
    with its own spool, proxy_protocol = haproxy, STARTTLS with one
    certificate and one shared tls_ticket_key_file, relay_host the hub
    (relay_tls may, relay_retry_schedule 1s, 2s);
  - Debian's haproxy in the foreground as our child: mode tcp, balance
    roundrobin, `server nX 127.0.0.1:PORT send-proxy-v2 check
    check-send-proxy inter 200ms fall 2 rise 1`, with tcp-check rules that
    read the 220 greeting, send QUIT and read the 221 (the checks carry a
    PROXY v2 LOCAL header, so the nodes take them as clean sessions from
    HAProxy's own address; no 'proxy error' line);
  - mxring-bench through HAProxy from 127.0.0.2 (--source), so that the
    real client's address differs from HAProxy's (127.0.0.1): STARTTLS,
    --resume tickets, recipient c<slot>@example.com (--to c%c@...), so each
    message at the hub names the connection slot that sent it.

Mid-run, n1 is SIGKILLed, HAProxy's checks mark it DOWN, and it is started
again on the same spool and port (HAProxy's configuration names the port)
and marked UP. mxring-bench sees errors at the kill (it runs with
--max-errors 0 and may exit 1): only its ack log counts.

Checked:
  - every message in the ack log reaches the hub's Maildir (duplicates are
    counted and printed, not failed: a message in flight to the hub at the
    kill may go again), with its body intact (X-Bench-Sum) and, in one of
    its copies, the queue id the client was given;
  - the edge's Received: header of every delivered message names the real
    client, [127.0.0.2], and a STARTTLS session (ESMTPS);
  - both nodes delivered messages and both logged resumed TLS sessions;
    n1 took client sessions again after its restart;
  - sessions resume across the nodes: for each connection slot, the session
    mxring-bench offers is the one of the slot's last full handshake
    (tls/tlsclient.h). Each node's log gives its sessions (queued lines up
    to the session end line of the same shard and client port, with
    tls_resumed=yes or not); the hub's messages give each queue id's slot
    and message number. Ordered by message number, a slot's sessions show
    sessions resumed on n2 with a ticket n1 issued, and the other way round;
  - HAProxy logged n1 DOWN and UP again, and the nodes logged no 'proxy
    error' (the health checks carry their header).

Skipped when haproxy (Debian package haproxy; tools/deps.sh --test),
Postfix, openssl, mxring-bench or wolfSSL is missing, or when not root
(the Postfix hub needs root).

Run: cd build && python3 ../tests/integration/test_edge_pair.py
       --mxring core/mxring --spool-tool tools/mxring-spool --bench bench/mxring-bench
"""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import harness as h
import hubs

suite = h.Suite("edge-pair")
check, check_eq = h.check, h.check_eq

BENCH = None
CERT_TOOL = os.path.join(h.REPO, "tools", "mxring-cert.sh")

CLIENT_ADDR = "127.0.0.2"      # mxring-bench's source: the real client
# Open loop (--rate), so that the load goes on well past n1's restart:
# about 10 s of it; n1 is killed after KILL_AT_S and stays down DOWN_PAUSE_S.
MESSAGES = 4000
RATE = 400
CONNECTIONS = 8
MSGS_PER_CONN = 5
KILL_AT_S = 2.5
KILL_MIN_QUEUED = 100
DOWN_PAUSE_S = 1.5
BENCH_TIMEOUT_S = 60
HUB_TIMEOUT_S = 60


# -- as in test_relay.py

def count_queued(srv):
    """Messages srv logged as queued (acknowledged) so far."""
    return len(re.findall(r"\bqueued qid=", srv.log()))


# -- HAProxy

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _term_on_parent_death():
    if _prctl is not None:
        _prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class HAProxy:
    """
    Debian's haproxy in the foreground (-db) as our child, with a
    configuration written into workdir: frontend 127.0.0.1:port (a free
    one), backend `nodes` with one server per (name, port). Its log (one
    tcplog line per connection, server state changes) goes to its stdout,
    workdir/haproxy.log. Tracked as a server of the case: its log is
    printed when the case fails, and one left running fails the case.
    """

    def __init__(self, workdir, nodes):
        self.workdir = workdir
        self.nodes = list(nodes)
        self.conf_path = os.path.join(workdir, "haproxy.cfg")
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.proc = None
        self.port = None
        self._logf = None
        h._track("servers", self)

    def config_text(self):
        lines = [
            "# written by tests/integration/test_edge_pair.py",
            "global",
            "    log stdout format raw local0 info",
            "    maxconn 1024",
            "    nbthread 1",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    option dontlognull",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    timeout check 2s",
            # A connection refused by a node that is down but not yet marked
            # so goes to the other node.
            "    retries 3",
            "    option redispatch 1",
            "frontend smtp",
            "    bind 127.0.0.1:%d" % self.port,
            "    default_backend nodes",
            "backend nodes",
            "    balance roundrobin",
            # The check is an SMTP session: greeting, QUIT, 221. It carries a
            # PROXY v2 LOCAL header (check-send-proxy), which mxring takes as
            # a balancer's own connection.
            "    option tcp-check",
            "    tcp-check expect rstring ^220",
            "    tcp-check send QUIT\\r\\n",
            "    tcp-check expect rstring ^221",
        ]
        for name, port in self.nodes:
            lines.append("    server %s 127.0.0.1:%d send-proxy-v2 check check-send-proxy "
                         "inter 200ms fall 2 rise 1" % (name, port))
        return "\n".join(lines) + "\n"

    def start(self):
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        last = None
        for _ in range(3):
            self.port = h.free_port()
            with open(self.conf_path, "w") as f:
                f.write(self.config_text())
            r = h.run_cmd([exe, "-c", "-f", self.conf_path], 30)
            check(r.returncode == 0, "haproxy -c refused the configuration:\n%s%s\n%s"
                  % (r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"),
                     self.config_text()))
            self._logf = open(self.log_path, "ab")
            main = threading.current_thread() is threading.main_thread()
            self.proc = subprocess.Popen([exe, "-f", self.conf_path, "-db"],
                                         stdin=subprocess.DEVNULL, stdout=self._logf,
                                         stderr=self._logf, cwd=self.workdir,
                                         start_new_session=True,
                                         preexec_fn=_term_on_parent_death if main else None)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            rc = self.proc.poll()
            self.kill()
            last = h.Fail("haproxy did not listen on 127.0.0.1:%d within 10 s (exit %s); "
                          "log:\n%s" % (self.port, rc, self.log_tail()))
            if "cannot bind" not in self.log().lower():
                raise last
        raise last

    def stop(self, timeout=10):
        """SIGTERM (a hard stop: HAProxy closes everything at once)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise h.Fail("haproxy did not exit within %d s of SIGTERM" % timeout)
            self.proc = None
        if self._logf:
            self._logf.close()
            self._logf = None

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if self._logf:
            self._logf.close()
            self._logf = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()
        return False

    def log(self, since_start=False):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        return "\n".join("  | " + l for l in self.log().splitlines()[-n:])

    def outside_signal_note(self):
        return None

    def wait_log(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            if any(rx.search(l) for l in self.log().splitlines()):
                return
            time.sleep(0.05)
        raise h.Fail("haproxy logged nothing matching %r within %.0f s; log:\n%s"
                     % (pattern, timeout, self.log_tail()))

    def served_by(self):
        """{server name: connections} of the tcplog lines."""
        out = {}
        for m in re.finditer(r" smtp nodes/(\w+) ", self.log()):
            out[m.group(1)] = out.get(m.group(1), 0) + 1
        return out


def greeting_through(port, timeout=5.0):
    """The greeting line through the balancer (and QUIT), or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            f = s.makefile("rb")
            line = f.readline().decode("utf-8", "replace").rstrip("\r\n")
            s.sendall(b"QUIT\r\n")
            f.readline()
            return line
    except OSError:
        return None


# -- the nodes

def node_server(name, certs, hub_port):
    cfg = {
        "myhostname": "%s.mx.test" % name,
        "proxy_protocol": "haproxy",
        "proxy_timeout": "2",
        "tls_security_level": "may",
        "tls_cert_file": os.path.join(certs, "cert.pem"),
        "tls_key_file": os.path.join(certs, "key.pem"),
        "tls_ticket_key_file": os.path.join(certs, "ticket.keys"),
        "relay_host": "smtp:[127.0.0.1]:%d" % hub_port,
        "relay_tls": "may",
        "relay_retry_schedule": "1s, 2s",
        "relay_command_timeout": "3s",
        "relay_connect_timeout": "2s",
        "stats_interval": "0",
    }
    return h.TLSServer(cfg, tag=name)


def respawn(srv):
    """Starts a killed Server again with the same configuration: same port
    (HAProxy's configuration names it) and spool. A bind that fails (the
    port briefly held) is tried again."""
    last = None
    for _ in range(20):
        try:
            srv._spawn()
            return
        except h.Fail as e:
            last = e
            if "in use" not in srv.log(since_start=True).lower():
                raise
            srv.kill()
            time.sleep(0.25)
    raise last


QUEUED_RE = re.compile(r"\bqueued qid=([0-9A-Za-z]{16}) shard=(\d+) writer=\d+ client=(\S+) "
                       r"port=(\d+) ")
SESSION_END_RE = re.compile(r"\bsession end shard=(\d+) client=(\S+) port=(\d+) "
                            r".*\btls=\"([^\"]*)\"(?: (tls_resumed=yes))?")


def client_sessions(srv, client):
    """
    The TLS sessions of client in srv's log, as (resumed, [queue ids]), and
    the number of sessions of other clients (HAProxy's checks). A shard logs
    a session's queued lines before its session end line, in order; the
    client's port alone does not name a session (with --source the kernel
    may hand the same port out again soon), the shard and port up to the
    session end do. A new run (its ready line) drops what was open: the
    sessions a SIGKILL cut off logged no end and are left out.
    """
    out, others, open_ = [], 0, {}
    for line in srv.log().splitlines():
        if " mxring: ready " in line:
            open_ = {}
            continue
        m = QUEUED_RE.search(line)
        if m:
            if m.group(3) == client and "client_gone=yes" not in line:
                open_.setdefault((m.group(2), m.group(4)), []).append(m.group(1))
            continue
        m = SESSION_END_RE.search(line)
        if m:
            if m.group(2) != client:
                others += 1
                continue
            qids = open_.pop((m.group(1), m.group(3)), [])
            if m.group(4) != "none":
                out.append((bool(m.group(5)), qids))
    return out, others


# The edge's Received: header (core/trace.c), as Postfix stored it (LF).
EDGE_RECEIVED_RE = re.compile(rb"\nReceived: from \S+ \(\[([^\]]+)\]:(\d+)\)\n"
                              rb"\tby (n[12])\.mx\.test \(mxring\) with (\S+) "
                              rb"id ([0-9A-Za-z]{16})\b")


@suite.case
def edge_pair_behind_haproxy():
    h.require_program("haproxy")
    h.require_program("openssl")
    if not os.path.exists(BENCH):
        raise h.Skip("mxring-bench not built (%s)" % BENCH)
    tmp = h.new_tmpdir("edge")
    certs = os.path.join(tmp, "tls")
    p = h.run_cmd(["bash", CERT_TOOL, certs, "mx.test"], 60)
    check_eq(p.returncode, 0, "mxring-cert.sh exit status (stderr %r)" % p.stderr)
    # The shared ticket key: one line of 96 hex digits (openssl rand -hex 48).
    with open(os.path.join(certs, "ticket.keys")) as f:
        check(re.fullmatch(r"[0-9a-f]{96}\n", f.read()), "ticket.keys is one 96-digit key")

    with hubs.PostfixHub(os.path.join(tmp, "hub"), tls_cert=os.path.join(certs, "cert.pem"),
                         tls_key=os.path.join(certs, "key.pem")) as hub:
        n1 = node_server("n1", certs, hub.port)
        n2 = node_server("n2", certs, hub.port)
        with n1, n2:
            n1_port = n1.port
            with HAProxy(tmp, [("n1", n1.port), ("n2", n2.port)]) as lb:
                # Both nodes answer through the balancer (roundrobin), and
                # each has ended sessions from HAProxy's own address (its
                # checks, with a LOCAL header, and these greetings).
                seen = set()
                deadline = time.monotonic() + 10
                while len(seen) < 2 and time.monotonic() < deadline:
                    g = greeting_through(lb.port)
                    m = re.match(r"^220 (n[12])\.mx\.test ESMTP", g or "")
                    if m:
                        seen.add(m.group(1))
                    else:
                        time.sleep(0.1)
                check_eq(sorted(seen), ["n1", "n2"], "nodes greeting through HAProxy")
                for srv in (n1, n2):
                    srv.wait_log(r"\bsession end\b.*\bclient=127\.0\.0\.1 .*reason=quit", 2, 5)

                ack = os.path.join(tmp, "ack.log")
                report = os.path.join(tmp, "bench.json")
                argv = [BENCH, "--server", "127.0.0.1:%d" % lb.port, "--starttls",
                        "--resume", "tickets", "--connections", str(CONNECTIONS),
                        "--messages", str(MESSAGES), "--rate", str(RATE),
                        "--msgs-per-conn", str(MSGS_PER_CONN),
                        "--source", CLIENT_ADDR, "--to", "c%c@example.com",
                        "--ack-log", ack, "--json", report, "--max-errors", "0",
                        "--timeout", "10", "--quiet"]
                bench_out = open(os.path.join(tmp, "bench.out"), "wb")
                bench = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=bench_out,
                                         stderr=subprocess.STDOUT)
                t0 = time.monotonic()
                try:
                    # SIGKILL n1 mid-run: after KILL_AT_S, once both nodes have
                    # queued messages (their logs; mxring-bench writes its ack
                    # log in blocks of about 64 KiB).
                    deadline = t0 + 30
                    while ((time.monotonic() < t0 + KILL_AT_S or
                            min(count_queued(n1), count_queued(n2)) < KILL_MIN_QUEUED)
                           and bench.poll() is None and time.monotonic() < deadline):
                        time.sleep(0.1)
                    queued_at_kill = (count_queued(n1), count_queued(n2))
                    check(bench.poll() is None and min(queued_at_kill) >= KILL_MIN_QUEUED,
                          "before the kill: messages queued by n1, n2 %s (want %d each), "
                          "mxring-bench still running: %s"
                          % (queued_at_kill, KILL_MIN_QUEUED, bench.poll() is None))
                    n1.kill()
                    t_kill = time.monotonic() - t0
                    lb.wait_log(r"Server nodes/n1 is DOWN", 5)
                    time.sleep(DOWN_PAUSE_S)
                    respawn(n1)
                    check_eq(n1.port, n1_port, "n1's port after the restart")
                    lb.wait_log(r"Server nodes/n1 is UP", 5)
                    t_up = time.monotonic() - t0
                    check(bench.poll() is None, "mxring-bench ended before n1 was back (%.1f s)"
                          % t_up)
                    try:
                        rc = bench.wait(timeout=BENCH_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        raise h.Fail("mxring-bench did not finish within %d s" % BENCH_TIMEOUT_S)
                finally:
                    if bench.poll() is None:
                        bench.kill()
                        bench.wait(10)
                    bench_out.close()
                with open(os.path.join(tmp, "bench.out"), "rb") as f:
                    bench_text = f.read().decode("utf-8", "replace")
                served = lb.served_by()

            acked = hubs.read_acks(ack)
            check(len(acked) >= MESSAGES // 2, "only %d of %d messages acknowledged; "
                  "mxring-bench exit %d:\n%s" % (len(acked), MESSAGES, rc, bench_text[-3000:]))
            with open(report) as f:
                js = json.load(f)
            hs = js.get("handshakes", {})

            # Every acknowledged message at the hub.
            parsed = {}
            deadline = time.monotonic() + HUB_TIMEOUT_S
            while True:
                for path, data in hub.messages():
                    if os.path.basename(path) in parsed:
                        continue
                    seq, ok = hubs.bench_sums(data)
                    check(ok, "%s: X-Bench-Sum does not match the body" % path)
                    m = EDGE_RECEIVED_RE.search(data)
                    check(m, "%s: no Received: header of an edge node:\n%s"
                          % (path, data[:600].decode("utf-8", "replace")))
                    parsed[os.path.basename(path)] = {
                        "seq": seq, "addr": m.group(1).decode(), "port": int(m.group(2)),
                        "node": m.group(3).decode(), "proto": m.group(4).decode(),
                        "qid": m.group(5).decode(),
                        "slot": (hubs.delivered_to(data) or "?").split("@")[0]}
                seqs = {}
                for d in parsed.values():
                    seqs.setdefault(d["seq"], []).append(d)
                missing = [s for s in acked if s not in seqs]
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            check(not missing, "%d of %d acknowledged messages never reached the hub "
                  "(in %d s): %s" % (len(missing), len(acked), HUB_TIMEOUT_S, missing[:5]))

            wrong_qid = [s for s, q in acked.items() if q not in {d["qid"] for d in seqs[s]}]
            check(not wrong_qid, "%d messages arrived under another queue id than the one "
                  "acknowledged: %s" % (len(wrong_qid), wrong_qid[:5]))
            bad_addr = [d for d in parsed.values() if d["addr"] != CLIENT_ADDR]
            check(not bad_addr, "%d messages whose edge Received: header names another "
                  "client than [%s]: %s" % (len(bad_addr), CLIENT_ADDR, bad_addr[:3]))
            plain = [d for d in parsed.values() if d["proto"] != "ESMTPS"]
            check(not plain, "%d messages not received over STARTTLS: %s"
                  % (len(plain), plain[:3]))
            dups = {s: len(v) for s, v in seqs.items() if len(v) > 1}
            extra = [s for s in seqs if s not in acked]
            per_node = {"n1": 0, "n2": 0}
            for d in parsed.values():
                per_node[d["node"]] += 1
            check(per_node["n1"] > 0 and per_node["n2"] > 0,
                  "messages relayed per node %s: want both" % per_node)

        # Both stopped (exit 0, clean logs): the stats lines are written;
        # n1's is of its second run only.
        stats = {"n1": n1.stats(), "n2": n2.stats()}
        check(int(stats["n1"].get("tls_handshakes", 0)) > 0 and
              int(stats["n1"].get("msgs_queued", 0)) > 0,
              "n1 took no client session after its restart: %s" % stats["n1"])

    # Resumption, per node, from the session end lines of the client's
    # sessions (n1's killed run may have lost its last ones).
    conns = {}
    for name, srv in (("n1", n1), ("n2", n2)):
        s, checks = client_sessions(srv, CLIENT_ADDR)
        conns[name] = s
        check(checks > 0, "%s logged no session of HAProxy's checks" % name)
        check("proxy error" not in srv.log(), "%s logged a proxy error:\n%s"
              % (name, "\n".join(l for l in srv.log().splitlines() if "proxy error" in l)[:2000]))
    resumed = {n: sum(1 for r, _ in conns[n] if r) for n in conns}
    full = {n: sum(1 for r, _ in conns[n] if not r) for n in conns}
    check(resumed["n1"] > 0 and resumed["n2"] > 0,
          "resumed sessions per node %s (full %s): want both" % (resumed, full))
    check(hs.get("resumed", 0) > 0, "mxring-bench resumed no session: %s" % hs)

    # Across the nodes. A slot offers the session of its last full
    # handshake (tls/tlsclient.h): its sessions in the order of their
    # messages' numbers give, for each resumed one, the node that issued
    # the ticket and the node that took it.
    by_qid = {d["qid"]: d for d in parsed.values()}
    by_slot = {}
    mixed = 0
    for node in conns:
        for r, qids in conns[node]:
            ds = [by_qid[q] for q in qids if q in by_qid]
            if not ds:
                continue      # no message of it reached the hub (or none was sent)
            if len({d["slot"] for d in ds}) != 1:
                mixed += 1
                continue
            first = min(int(d["seq"].rsplit("-", 1)[1]) for d in ds)
            by_slot.setdefault(ds[0]["slot"], []).append((first, node, r))
    check(not mixed, "%d sessions in the nodes' logs whose messages name several slots "
          "(the join of logs and messages is wrong)" % mixed)
    cross = {"n1->n2": 0, "n2->n1": 0}
    same = 0
    for slot, cs in by_slot.items():
        origin = None
        for _, node, r in sorted(cs):
            if not r:
                origin = node
            elif origin is not None:
                if origin != node:
                    cross["%s->%s" % (origin, node)] += 1
                else:
                    same += 1
    print("# edge pair: n1 killed at %.1f s (n1 had queued %d messages, n2 %d), back UP "
          "at %.1f s; after its restart n1 accepted %s messages and relayed %d"
          % (t_kill, queued_at_kill[0], queued_at_kill[1], t_up,
             stats["n1"].get("msgs_queued"),
             len(re.findall(r"\brelayed .*status=sent", n1.log(since_start=True)))))
    dup_nodes = {}
    for s in dups:
        for d in seqs[s][1:]:
            dup_nodes[d["node"]] = dup_nodes.get(d["node"], 0) + 1
    print("# edge pair: %d messages acknowledged, %d delivered at the hub (n1 %d, n2 %d), "
          "%d duplicates %s%s, %d delivered but not acknowledged"
          % (len(acked), len(parsed), per_node["n1"], per_node["n2"],
             sum(k - 1 for k in dups.values()), json.dumps(dup_nodes, sort_keys=True),
             (" (" + ", ".join("%s x%d" % kv for kv in sorted(dups.items())[:10]) +
              (", ..." if len(dups) > 10 else "") + ")") if dups else "", len(extra)))
    print("# edge pair: mxring-bench exit %d, handshakes full %s resumed %s, errors %s"
          % (rc, hs.get("full"), hs.get("resumed"),
             json.dumps(js.get("errors"), sort_keys=True)))
    print("# edge pair: HAProxy connections per node %s" % json.dumps(served, sort_keys=True))
    print("# edge pair: client TLS sessions logged: n1 %d full %d resumed (stats line after "
          "the restart: tls_handshakes=%s tls_resumed=%s), n2 %d full %d resumed (stats "
          "tls_handshakes=%s tls_resumed=%s)"
          % (full["n1"], resumed["n1"], stats["n1"].get("tls_handshakes"),
             stats["n1"].get("tls_resumed"), full["n2"], resumed["n2"],
             stats["n2"].get("tls_handshakes"), stats["n2"].get("tls_resumed")))
    print("# edge pair: resumed with the ticket of the other node: n1->n2 %d, n2->n1 %d; "
          "of the same node %d" % (cross["n1->n2"], cross["n2->n1"], same))
    check(cross["n1->n2"] > 0 and cross["n2->n1"] > 0,
          "sessions resumed across the nodes %s (same node %d): want both ways" % (cross, same))


if __name__ == "__main__":
    BENCH = h.take_bench_arg(sys.argv)
    suite.main()
