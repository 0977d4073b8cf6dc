#!/usr/bin/env python3
"""
dnsserver.py - a private Debian unbound (/usr/sbin/unbound) serving test
zones on loopback, for the DNS list tests. Python 3 standard library only.

Contract:
  - DNSServer(zones=..., records=..., never=..., servfail=...) writes an
    unbound.conf into a temporary folder (the case's, through harness),
    picks a free UDP port and starts `unbound -d -c CONF` in the foreground
    on 127.0.0.1 (and ::1 when the IPv6 loopback works), as the current
    user: no chroot, no user switch, pidfile, log and working folder in the
    temporary folder, no trust anchor, the iterator module only.
  - start() returns once a query for ready.dnsserver.test. is answered
    (raw UDP, bounded wait); a lost race for the port is retried.
    stop() sends SIGTERM and waits (then SIGKILL); the context manager,
    an atexit hook, the harness's end-of-case clean-up (it is tracked as a
    server) and, when started from the main thread, PR_SET_PDEATHSIG all
    make sure no unbound outlives the test.
  - Every query that reaches it is logged (log-queries); queries(name)
    counts the log lines for one name, case-insensitively. A query is
    logged on arrival, before it is answered or dropped, so once a client
    has its answer (or its timeout) the line is in the file.

What each kind of zone answers (checked by --self-test):
  zones     local-zone static with an SOA whose minimum is neg_ttl: the
            records given, NXDOMAIN for any other name with the SOA in the
            authority section at TTL min(soa_ttl, neg_ttl) (RFC 2308; unbound
            writes the negative TTL itself).
  never     local-zone deny: the query is logged and dropped, nothing comes
            back (a client waits its whole timeout).
  servfail  local-zone transparent (so the default "test." zone does not
            answer NXDOMAIN for it) and a forward-zone to 192.0.2.1, an
            address unbound may not query (do-not-query-address): it finds
            no usable server and answers SERVFAIL at once (under 10 ms),
            with no packet sent anywhere. (A forwarder on a closed loopback
            port is no good: unbound 1.17 retries it with backoff and
            leaves the first queries unanswered for more than 10 s.)
  anything else: names under .test get NXDOMAIN from unbound's built-in
            "test." zone (RFC 6761); other names SERVFAIL at once, since
            do-not-query-address 0.0.0.0/0 and ::/0 forbid every upstream
            query: nothing ever leaves the loopback.

Usage:
    with DNSServer(zones=["bl.test"],
                   records=[(qname("127.0.0.2", "bl.test"), "127.0.0.2")]) as dns:
        cfg = {"dns_servers": dns.addr, ...}
        ...
        check_eq(dns.queries(qname("127.0.0.2", "bl.test")), 1, "queries")

    python3 tests/integration/dnsserver.py --self-test
"""

import atexit
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import harness as h

UNBOUND = "/usr/sbin/unbound"
READY_NAME = "ready.dnsserver.test"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
QUERY_TIMEOUT_S = 2.0
NO_QUERY_ADDR = "192.0.2.1"  # TEST-NET-1: the servfail zones' forwarder, never queried

NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED"}
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28}

# One query line of unbound 1.17 with log-queries (log-time-ascii: no):
#   [1700000000] unbound[1234:0] info: 127.0.0.1 2.0.0.127.bl.test. A IN
QUERY_LINE_RE = re.compile(r"^\[\d+\] unbound\[\d+:\d+\] info: (\S+) (\S+\.) (\S+) (\S+)$")

_live = []  # started servers, for the atexit hook


def _kill_all():
    for s in list(_live):
        s.kill()


atexit.register(_kill_all)


def fqdn(name):
    """name lower-cased with one trailing dot."""
    return name.rstrip(".").lower() + "."


def qname(addr, zone):
    """
    The DNS list query name of a client address in zone (RFC 5782), without
    a trailing dot: "2.0.0.127.bl.test" for 127.0.0.2; for ::1, 32 reversed
    nibbles, "1.0.0.0...0.bl.test" (31 zeros after the 1).
    """
    ip = ipaddress.ip_address(addr)
    rev = ip.reverse_pointer  # "2.0.0.127.in-addr.arpa", "1.0.....ip6.arpa"
    suffix = ".in-addr.arpa" if ip.version == 4 else ".ip6.arpa"
    assert rev.endswith(suffix)
    return rev[:-len(suffix)] + "." + zone.rstrip(".")


# ---------------------------------------------------------------- raw DNS


class DNSTimeout(h.Fail):
    """No answer to a query within its timeout."""


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        if not 0 < len(b) < 64:
            raise ValueError("bad label in %r" % name)
        out += bytes([len(b)]) + b
    return out + b"\x00"


def _read_name(msg, off):
    """(name, offset after it in place) of a possibly compressed name."""
    labels, jumps, end = [], 0, None
    while True:
        if off >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or jumps > 32:
                raise ValueError("bad compression pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            continue
        if n == 0:
            return ".".join(labels) + ".", (end if end is not None else off + 1)
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


def build_query(name, qtype="A", qid=None):
    qid = random.randrange(65536) if qid is None else qid
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD
    return qid, header + _encode_name(name) + struct.pack("!HH", QTYPES[qtype], 1)


def parse_response(msg, qid=None):
    """
    (rcode, [addresses of A/AAAA answers], ttl): ttl is the lowest TTL of the
    answer records, or for an answer without records min(SOA TTL, SOA
    minimum) of the authority section's SOA, or None when there is neither.
    """
    if len(msg) < 12:
        raise ValueError("short DNS message (%d bytes)" % len(msg))
    rid, flags, qd, an, ns, _ = struct.unpack("!HHHHHH", msg[:12])
    if qid is not None and rid != qid:
        raise ValueError("answer id %d, query id %d" % (rid, qid))
    if not flags & 0x8000:
        raise ValueError("not a response")
    rcode = flags & 0x000F
    off = 12
    for _ in range(qd):
        _, off = _read_name(msg, off)
        off += 4
    addrs, ttls, neg = [], [], None
    for i in range(an + ns):
        _, off = _read_name(msg, off)
        rtype, _, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if len(rdata) != rdlen:
            raise ValueError("record runs past the message")
        if i < an:
            if rtype == 1 and rdlen == 4:
                addrs.append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == 28 and rdlen == 16:
                addrs.append(socket.inet_ntop(socket.AF_INET6, rdata))
            ttls.append(ttl)
        elif rtype == 6:
            _, o = _read_name(msg, off)
            _, o = _read_name(msg, o)
            minimum = struct.unpack("!I", msg[o + 16:o + 20])[0]
            neg = min(ttl, minimum)
        off += rdlen
    return rcode, addrs, (min(ttls) if ttls else neg)


def query(name, qtype="A", port=53, host="127.0.0.1", timeout=QUERY_TIMEOUT_S):
    """
    One query over UDP; (rcode, [addresses], ttl) as parse_response.
    Raises DNSTimeout when nothing answers within timeout.
    """
    qid, pkt = build_query(name, qtype)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        s.send(pkt)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DNSTimeout("no answer to %s %s from %s port %d within %.1f s"
                                 % (name, qtype, host, port, timeout))
            s.settimeout(left)
            try:
                msg = s.recv(65535)
            except socket.timeout:
                continue
            except ConnectionRefusedError:
                raise h.Fail("%s port %d refused a DNS query (nothing listens)" % (host, port))
            try:
                return parse_response(msg, qid)
            except ValueError:
                continue  # a stray datagram: keep waiting


# ---------------------------------------------------------------- server


try:
    import ctypes
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after fork
except (ImportError, OSError, AttributeError):
    _prctl = None


def _pdeathsig():
    """In the child: SIGKILL it when the thread that started it dies."""
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class DNSServer:
    """
    One unbound process. zones: names served with the records given and
    NXDOMAIN (with an SOA, negative TTL neg_ttl) for others. records:
    (name, value) or (name, value, ttl); value an IPv4 address (A), an
    IPv6 address (AAAA) or "TYPE RDATA" (e.g. 'TXT "listed"'); a name may
    repeat (several records). Each record must lie in one of zones. never:
    zones whose queries are dropped. servfail: zones answered SERVFAIL.
    ipv6: also listen on ::1 (default: when the IPv6 loopback works).
    """

    def __init__(self, zones=(), records=(), never=(), servfail=(), neg_ttl=60, ttl=300,
                 ipv6=None, tag="dns"):
        self.zones = [fqdn(z) for z in zones]
        self.never = [fqdn(z) for z in never]
        self.servfail = [fqdn(z) for z in servfail]
        self.records = []
        for r in records:
            name, value = fqdn(r[0]), r[1]
            rttl = r[2] if len(r) > 2 else ttl
            if not any(name == z or name.endswith("." + z) for z in self.zones):
                raise ValueError("record %s is in none of the zones %s" % (name, self.zones))
            self.records.append((name, value, rttl))
        self.neg_ttl = neg_ttl
        self.ttl = ttl
        self.ipv6 = h.have_ipv6_loopback() if ipv6 is None else ipv6
        self.tag = tag
        self.tmp = None
        self.conf_path = self.log_path = self.out_path = None
        self.proc = None
        self.port = None
        self._out = None
        self._tracked = False

    @property
    def addr(self):
        """The dns_servers value for mxring: "127.0.0.1:PORT"."""
        return "127.0.0.1:%d" % self.port

    @property
    def addr6(self):
        return "[::1]:%d" % self.port

    # -- config

    def config_text(self):
        q = '"%s"'
        lines = [
            "# written by tests/integration/dnsserver.py",
            "server:",
            "  verbosity: 1",
            "  port: %d" % self.port,
            "  interface: 127.0.0.1@%d" % self.port,
        ]
        if self.ipv6:
            lines.append("  interface: ::1@%d" % self.port)
        lines += [
            "  interface-automatic: no",
            "  do-ip4: yes",
            "  do-ip6: %s" % ("yes" if self.ipv6 else "no"),
            "  do-udp: yes",
            "  do-tcp: yes",
            # Another unbound of a parallel test must not share the port.
            "  so-reuseport: no",
            "  num-threads: 1",
            "  outgoing-range: 64",
            "  num-queries-per-thread: 64",
            '  username: ""',
            '  chroot: ""',
            "  directory: " + q % self.tmp,
            "  pidfile: " + q % os.path.join(self.tmp, "unbound.pid"),
            "  logfile: " + q % self.log_path,
            "  use-syslog: no",
            "  log-time-ascii: no",
            "  log-queries: yes",
            "  module-config: " + q % "iterator",
            "  access-control: 127.0.0.0/8 allow",
            "  access-control: ::1/128 allow",
            # Nothing may leave the machine: every upstream address is
            # forbidden, so what no zone here answers is SERVFAIL at once.
            "  do-not-query-localhost: yes",
            "  do-not-query-address: 0.0.0.0/0",
            "  do-not-query-address: ::/0",
            "  local-zone: %s static" % (q % fqdn(READY_NAME)),
            "  local-data: %s" % (q % ("%s 0 IN A 127.0.0.1" % fqdn(READY_NAME))),
        ]
        for z in self.zones:
            lines.append("  local-zone: %s static" % (q % z))
            lines.append("  local-data: %s" % (q % ("%s %d IN SOA ns.%s hostmaster.%s 1 3600 600 "
                                                    "86400 %d" % (z, self.ttl, z, z,
                                                                  self.neg_ttl))))
        for name, value, rttl in self.records:
            if " " in value:
                rr = value
            else:
                rr = ("AAAA " if ":" in value else "A ") + value
            # unbound takes '...' around a record holding '"' (TXT "text").
            data = "%s %d IN %s" % (name, rttl, rr)
            lines.append("  local-data: %s" % (("'%s'" if '"' in data else q) % data))
        for z in self.never:
            lines.append("  local-zone: %s deny" % (q % z))
        for z in self.servfail:
            lines.append("  local-zone: %s transparent" % (q % z))
        lines.append("remote-control:")
        lines.append("  control-enable: no")
        for z in self.servfail:
            lines += ["forward-zone:", "  name: %s" % (q % z),
                      "  forward-addr: %s@53" % NO_QUERY_ADDR]
        return "\n".join(lines) + "\n"

    # -- start / stop

    def start(self):
        if not os.path.exists(UNBOUND):
            raise h.Skip("%s not installed (Debian package unbound; tools/deps.sh --test)"
                         % UNBOUND)
        if self.tmp is None:
            self.tmp = h.new_tmpdir(self.tag)
        self.conf_path = os.path.join(self.tmp, "unbound.conf")
        self.log_path = os.path.join(self.tmp, "unbound.log")
        self.out_path = os.path.join(self.tmp, "unbound.out")
        if not self._tracked:
            h._track("servers", self)
            self._tracked = True
        last = None
        for _ in range(5):
            self.port = self._free_udp_port()
            with open(self.conf_path, "w") as f:
                f.write(self.config_text())
            try:
                self._spawn()
                return self
            except h.Fail as e:
                last = e
                if "address already in use" not in self.log().lower():
                    raise
        raise last

    @staticmethod
    def _free_udp_port():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _spawn(self):
        if self._out:
            self._out.close()
        self._out = open(self.out_path, "ab")
        with open(self.log_path, "ab"):
            pass
        self.log_offset = os.path.getsize(self.log_path)
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", self.conf_path],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._out, cwd=self.tmp,
                                     preexec_fn=_pdeathsig if main else None)
        _live.append(self)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                _live.remove(self)
                raise h.Fail("unbound exited with %d before answering; output:\n%s"
                             % (rc, self.log_tail()))
            try:
                rcode, addrs, _ = query(READY_NAME, port=self.port, timeout=0.2)
            except (DNSTimeout, h.Fail):
                time.sleep(0.05)
                continue
            if rcode == NOERROR and addrs == ["127.0.0.1"]:
                return
            self.kill()
            raise h.Fail("unbound answered the readiness query with %s %r"
                         % (RCODE_NAMES.get(rcode, rcode), addrs))
        self.kill()
        raise h.Fail("unbound did not answer within %.0f s; output:\n%s"
                     % (READY_TIMEOUT_S, self.log_tail()))

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status (or None)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        self.proc = None
        if self in _live:
            _live.remove(self)
        if self._out:
            self._out.close()
            self._out = None
        return rc

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if self in _live:
            _live.remove(self)
        if self._out:
            self._out.close()
            self._out = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        self.stop()
        return False

    # -- logs (the harness's failure report reads these too)

    def log(self, since_start=False):
        text = ""
        for p in (self.out_path, self.log_path):
            try:
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except (FileNotFoundError, TypeError):
                pass
        return text

    def log_tail(self, n=40):
        return "\n".join("  | " + l for l in self.log().splitlines()[-n:])

    def outside_signal_note(self):
        return None

    def query_lines(self):
        """(client, name, type, class) of every query logged, in order."""
        out = []
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return out
        for l in text.splitlines():
            m = QUERY_LINE_RE.match(l)
            if m:
                out.append((m.group(1), m.group(2).lower(), m.group(3), m.group(4)))
        return out

    def queries(self, name, qtype=None):
        """How many queries for name (any case; of qtype when given) arrived."""
        want = fqdn(name)
        return sum(1 for _, n, t, _ in self.query_lines()
                   if n == want and (qtype is None or t == qtype))

    def wait_queries(self, name, count, timeout=5.0, qtype=None):
        """Waits (bounded) until at least count queries for name arrived; returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.queries(name, qtype)
            if n >= count or time.monotonic() > deadline:
                return n
            time.sleep(0.02)

    def query(self, name, qtype="A", timeout=QUERY_TIMEOUT_S, ipv6=False):
        return query(name, qtype, port=self.port, host="::1" if ipv6 else "127.0.0.1",
                     timeout=timeout)


# ---------------------------------------------------------------- self-test


def self_test(prefix=""):
    """Starts unbound with every kind of zone and checks what each answers.
    Prints one line per step, each after prefix (test_screening.py: "# ")."""
    if not os.path.exists(UNBOUND):
        raise h.Skip("%s not installed" % UNBOUND)
    ok = []

    def step(what):
        ok.append(what)
        print("%sok %d - %s" % (prefix, len(ok), what))
        sys.stdout.flush()

    tmp = tempfile.mkdtemp(prefix="mxring-dns-selftest-")
    v6 = qname("::1", "bl.test")
    dns = DNSServer(zones=["bl.test", "filt.test"],
                    records=[(qname("127.0.0.2", "bl.test"), "127.0.0.2"),
                             (qname("127.0.0.4", "bl.test"), "127.0.0.2", 30),
                             (qname("127.0.0.4", "bl.test"), "127.0.0.4", 20),
                             (v6, "127.0.0.3"),
                             (qname("127.0.0.1", "filt.test"), "127.0.0.12")],
                    never=["never.test"], servfail=["fail.test"], neg_ttl=45)
    dns.tmp = tmp
    try:
        t0 = time.monotonic()
        with dns:
            step("unbound started on 127.0.0.1%s port %d in %.2f s"
                 % (" and ::1" if dns.ipv6 else "", dns.port, time.monotonic() - t0))
            name = qname("127.0.0.2", "bl.test")
            h.check_eq(name, "2.0.0.127.bl.test", "IPv4 query name")
            h.check_eq(dns.query(name), (NOERROR, ["127.0.0.2"], 300), "A of " + name)
            step("A %s -> 127.0.0.2 ttl 300" % name)
            r = dns.query(qname("127.0.0.4", "bl.test"))
            h.check_eq((r[0], sorted(r[1]), r[2]), (NOERROR, ["127.0.0.2", "127.0.0.4"], 20),
                       "two A records")
            step("two A records, lowest ttl 20")
            h.check_eq(dns.query("3.0.0.127.bl.test"), (NXDOMAIN, [], 45), "unlisted name")
            step("NXDOMAIN for an unlisted name, SOA negative ttl 45")
            h.check_eq(dns.query("bl.test", "AAAA"), (NOERROR, [], 45), "NODATA at the apex")
            step("NODATA (NOERROR, no records) with the SOA's negative ttl")
            h.check_eq(v6, "1." + "0." * 31 + "bl.test", "IPv6 query name")
            h.check_eq(dns.query(v6), (NOERROR, ["127.0.0.3"], 300), "A of the ::1 name")
            step("IPv6 nibble name %s... -> 127.0.0.3" % v6[:12])
            if dns.ipv6:
                h.check_eq(dns.query(name, ipv6=True), (NOERROR, ["127.0.0.2"], 300),
                           "A over ::1")
                step("answers on ::1 too")
            h.check_eq(dns.query(qname("127.0.0.1", "filt.test")),
                       (NOERROR, ["127.0.0.12"], 300), "filt.test")
            step("a second zone")
            t0 = time.monotonic()
            r = dns.query("1.0.0.127.fail.test", timeout=5)
            took = time.monotonic() - t0
            h.check_eq(r[0], SERVFAIL, "rcode of the servfail zone")
            h.check(took < 0.5, "SERVFAIL took %.3f s" % took)
            t0 = time.monotonic()
            h.check_eq(dns.query("2.0.0.127.fail.test", timeout=5)[0], SERVFAIL, "again")
            step("SERVFAIL in %.3f s, then %.3f s" % (took, time.monotonic() - t0))
            t0 = time.monotonic()
            try:
                r = dns.query("2.0.0.127.never.test", timeout=1.5)
                raise h.Fail("the never zone answered %r" % (r,))
            except DNSTimeout:
                pass
            step("never.test: no answer within 1.5 s (%.2f s waited)" % (time.monotonic() - t0))
            h.check_eq(dns.query("nothing.test")[0], NXDOMAIN, "a name in no zone under .test")
            t0 = time.monotonic()
            h.check_eq(dns.query("www.example.org", timeout=5)[0], SERVFAIL, "outside names")
            step("outside names SERVFAIL at once (%.3f s): nothing leaves the machine"
                 % (time.monotonic() - t0))
            h.check_eq(dns.queries(name), 2 if dns.ipv6 else 1, "queries logged for " + name)
            for _ in range(3):
                dns.query(name.upper())
            h.check_eq(dns.wait_queries(name, 5 if dns.ipv6 else 4, 2),
                       5 if dns.ipv6 else 4, "after three more")
            h.check_eq(dns.queries("2.0.0.127.never.test"), 1, "the dropped query is logged")
            h.check_eq(dns.queries("1.0.0.127.fail.test"), 1, "the servfail query is logged")
            h.check_eq(dns.queries("9.9.9.9.bl.test"), 0, "a name never asked")
            step("query counting: %d for %s, any case" % (dns.queries(name), name))
            pid = dns.proc.pid
        h.check(not dns.alive(), "unbound still running after stop")
        try:
            os.kill(pid, 0)
            raise h.Fail("unbound pid %d still exists" % pid)
        except ProcessLookupError:
            pass
        step("stopped")
    except BaseException:
        print("%snot ok - self-test failed; unbound config %s, log:\n%s"
              % (prefix, dns.conf_path, dns.log_tail()))
        dns.kill()
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    print("%s# dnsserver self-test: %d passed" % (prefix, len(ok)))


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        try:
            self_test()
        except h.Skip as e:
            print("1..0 # SKIP %s" % e)
            sys.exit(77)
        except h.Fail as e:
            print("Bail out! %s" % e)
            sys.exit(1)
        sys.exit(0)
    print("usage: dnsserver.py --self-test", file=sys.stderr)
    sys.exit(2)
