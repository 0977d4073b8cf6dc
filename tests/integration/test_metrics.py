#!/usr/bin/env python3
"""
test_metrics.py - metrics_listen: the Prometheus text endpoint.

Checked: the page parses with the Prometheus project's Python parser
(python3-prometheus-client, run by Debian's /usr/bin/python3) and passes its
linter (promtool check metrics), names
every number of the 'stats live' line with the right type, and its numbers
move with the traffic (a connection open, a message queued); other paths,
methods and malformed or oversized requests get their HTTP status; a
client that connects and sends nothing is cut at the 2 s deadline and does
not stop the next scrape or the shutdown; an address in use or shared with
an SMTP listener is refused at start with a message.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time

import harness as h

suite = h.Suite("metrics")
check, check_eq = h.check, h.check_eq

SYSTEM_PYTHON = "/usr/bin/python3"
PROMTOOL = "/usr/bin/promtool"

# Reads a page on stdin; prints {name: [type, {labels-less sample name: value}]}.
PARSE = r"""
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = [fam.type, {s.name: s.value for s in fam.samples}]
print(json.dumps(out))
"""


def parser_missing():
    if not os.path.exists(SYSTEM_PYTHON):
        return "no %s" % SYSTEM_PYTHON
    if not os.path.exists(PROMTOOL):
        return "no %s (Debian package prometheus)" % PROMTOOL
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import prometheus_client.parser"],
                       capture_output=True, timeout=30)
    return None if p.returncode == 0 else "python3-prometheus-client is not installed"


def http(port, request, timeout=10.0):
    """Sends request bytes, returns (status line, headers dict, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        got = b""
        deadline = time.monotonic() + timeout
        while True:
            check(time.monotonic() < deadline, "no end of response within %.0f s" % timeout)
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    head, sep, body = got.partition(b"\r\n\r\n")
    check(sep, "no end of the response head: %r" % got[:200])
    lines = head.decode("ascii").split("\r\n")
    headers = dict(l.split(": ", 1) for l in lines[1:])
    if "Content-Length" in headers:
        check_eq(int(headers["Content-Length"]), len(body), "Content-Length")
    return lines[0], headers, body


def scrape(port):
    status, headers, body = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(status, "HTTP/1.1 200 OK", "status")
    check(headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
          "Content-Type %r" % headers.get("Content-Type"))
    p = subprocess.run([SYSTEM_PYTHON, "-c", PARSE], input=body, capture_output=True,
                       timeout=30)
    check(p.returncode == 0, "the Prometheus parser refused the page: %s\n%s"
          % (p.stderr.decode()[-500:], body.decode()[:500]))
    lint(body)
    return json.loads(p.stdout)


def lint(body):
    """Prometheus's own linter (promtool, Debian package prometheus) passes the page:
    names, suffixes (_total only on counters), HELP and TYPE lines."""
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                       timeout=30)
    check(p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(),
          "promtool check metrics: rc=%d %s%s" % (p.returncode, p.stdout.decode()[-800:],
                                                  p.stderr.decode()[-800:]))


def value(page, name):
    """The sample of a counter (name_total) or gauge (name)."""
    if name in page and page[name][0] == "gauge":
        return page[name][1][name]
    check(name in page and page[name][0] == "counter", "no counter or gauge %s" % name)
    return page[name][1][name + "_total"]


def metrics_server(extra=None):
    mport = h.free_port("127.0.0.1")
    cfg = {"metrics_listen": "127.0.0.1:%d" % mport, "stats_interval": 1}
    cfg.update(extra or {})
    return h.Server(cfg), mport


@suite.case
def page_parses_and_follows_the_traffic():
    missing = parser_missing()
    if missing:
        raise h.Skip(missing)
    srv, mport = metrics_server()
    with srv:
        page = scrape(mport)
        check(re.search(r"\bmetrics=127\.0\.0\.1:%d\b" % mport, srv.log()),
              "the ready line names the metrics address")
        # Every number of the live line is on the page: uptime, rss, gauges, counters.
        srv.wait_log(r"\bstats live\b", timeout=10)
        live = srv.stats_live()[-1]
        for key in live:
            if key in ("t", "uptime_s", "rss_kib"):
                continue
            name = "mxring_" + key
            check(name in page, "%s (in the live line) is not on the page" % name)
        check(value(page, "mxring_uptime_seconds") >= 0, "uptime")
        check(value(page, "mxring_resident_memory_bytes") > 1 << 20, "resident memory")
        check_eq(value(page, "mxring_recv_bufs_capacity"), float(live["recv_bufs_capacity"]),
                 "recv_bufs_capacity")
        check_eq(value(page, "mxring_msgs_queued"), 0.0, "msgs_queued before any mail")
        # One connection held open, one message queued.
        c = srv.client()
        c.ehlo()
        q = c.send_message(b"Subject: counted\r\n\r\nfor the page\r\n")
        page = scrape(mport)
        check_eq(value(page, "mxring_msgs_queued"), 1.0, "msgs_queued after one message")
        check(value(page, "mxring_conns_open") >= 1, "conns_open with a session open")
        check(value(page, "mxring_conns_accepted") >= 1, "conns_accepted")
        check(value(page, "mxring_body_bytes") > 0, "body_bytes")
        c.quit()
        h.check_body(srv.spool, q, b"Subject: counted\r\n\r\nfor the page\r\n", "the message")


@suite.case
def bad_requests_get_their_status():
    srv, mport = metrics_server()
    with srv:
        for req, want in (
                (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
                (b"GET /metricsx HTTP/1.0\r\n\r\n", "HTTP/1.1 404 Not Found"),
                (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                 "HTTP/1.1 405 Method Not Allowed"),
                (b"HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
                (b"hello\r\n\r\n", "HTTP/1.1 400 Bad Request"),
                (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
                (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n",
                 "HTTP/1.1 431 Request Header Fields Too Large")):
            status, headers, _ = http(mport, req)
            check_eq(status, want, "status for %r" % req[:40])
        status, _, body = http(mport, b"GET /metrics?x=1 HTTP/1.0\n\n")
        check_eq(status, "HTTP/1.1 200 OK", "a query string and bare LFs")
        check(b"mxring_conns_accepted_total" in body, "the page after a query string")
        # SMTP goes on.
        c = srv.client()
        c.ehlo()
        c.quit()


@suite.case
def a_silent_client_is_cut_and_holds_nothing_up():
    srv, mport = metrics_server()
    with srv:
        silent = socket.create_connection(("127.0.0.1", mport), timeout=10)
        t0 = time.monotonic()
        # A scrape queued behind the silent client is served once it is cut.
        status, _, _ = http(mport, b"GET /metrics HTTP/1.1\r\n\r\n", timeout=15)
        check_eq(status, "HTTP/1.1 200 OK", "the scrape behind a silent client")
        silent.settimeout(10)
        try:
            rest = silent.recv(100)
        except ConnectionResetError:
            rest = b""
        dt = time.monotonic() - t0
        check_eq(rest, b"", "what the silent client got")
        check(1.5 <= dt <= 10, "the silent client was cut after %.1f s (deadline 2 s)" % dt)
        silent.close()
        # A silent client does not hold up the shutdown either.
        stalled = socket.create_connection(("127.0.0.1", mport), timeout=10)
        time.sleep(0.2)  # let the endpoint take it
        t0 = time.monotonic()
        srv.stop()
        check(time.monotonic() - t0 < 10, "shutdown took %.1f s" % (time.monotonic() - t0))
        stalled.close()


@suite.case
def unusable_addresses_are_refused_at_start():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    spool = h.new_tmpdir("spool")
    try:
        p = h.run_cmd([h.Paths.mxring] + h.ROOT_OK + ["-o", "listen=127.0.0.1:%d" % h.free_port(),
                       "-o", "spool_dir=%s" % spool,
                       "-o", "metrics_listen=127.0.0.1:%d" % port], 20)
        err = p.stderr.decode()
        check_eq(p.returncode, 1, "exit status with the metrics port in use (%r)" % err)
        check("metrics_listen 127.0.0.1:%d: Address already in use" % port in err,
              "message: %r" % err)
    finally:
        busy.close()
    smtp = h.free_port()
    p = h.run_cmd([h.Paths.mxring, "-o", "listen=127.0.0.1:%d" % smtp,
                   "-o", "metrics_listen=127.0.0.1:%d" % smtp, "-n"], 20)
    err = p.stderr.decode()
    check_eq(p.returncode, 1, "exit status with metrics_listen on the SMTP address")
    check("metrics_listen" in err and "SMTP address too" in err, "message: %r" % err)
    for bad in ("127.0.0.1", "localhost:9100", "127.0.0.1:1 127.0.0.1:2", "[::1:9100"):
        p = h.run_cmd([h.Paths.mxring, "-o", "metrics_listen=%s" % bad, "-n"], 20)
        check_eq(p.returncode, 1, "exit status for metrics_listen=%s" % bad)
        check("metrics_listen" in p.stderr.decode(), "message for %s: %r"
              % (bad, p.stderr.decode()))
    p = h.run_cmd([h.Paths.mxring, "-o", "metrics_listen=[::1]:9100", "-n"], 20)
    check("metrics_listen = [::1]:9100" in p.stdout.decode(), "printed: %r" % p.stdout.decode())


if __name__ == "__main__":
    suite.main()
