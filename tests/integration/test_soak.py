#!/usr/bin/env python3
"""
test_soak.py - the live stats line (stats_interval) and a short bench/soak.

  - stats_interval = 1: 'stats live' lines come one interval apart or more
    (never early), their uptime_s only grows, and their gauges match what
    the test holds: three idle greeted connections -> conns_open=3 with no
    receive buffer, writer queue or send queued; after a message on one and
    two closes -> conns_open=1, msgs_queued=1; every buffer total matches
    the configuration; rss_kib is the process's own;
  - a STARTTLS session shows as tls_sessions=1 with plaintext buffers
    counted (skipped without wolfSSL);
  - stats_interval = 0 writes no live line, and the exit 'stats' line is
    still the one the harness reads;
  - bench/soak with 1,000 connections from four source addresses for 10 s
    at 500 msgs/s: exit 0, verdict PASS, no error, every acknowledged
    message verified in the spool (and `mxring-spool verify` clean), all
    1,000 connections open at once.

The paths of mxring-bench come as --bench PATH (meson passes it), else
$MXRING_BENCH, else build/bench/mxring-bench.
"""

import os
import re
import sys
import time

import harness as h
from harness import check, check_eq

suite = h.Suite("soak")

BENCH = None
SOAK = os.path.join(h.REPO, "bench", "soak")


def wait_live(srv, pred, what, timeout=10.0):
    """The first 'stats live' line for which pred holds, waiting (bounded) for it."""
    deadline = time.monotonic() + timeout
    while True:
        lines = srv.stats_live()
        for d in lines:
            if pred(d):
                return d
        if time.monotonic() > deadline:
            raise h.Fail("no 'stats live' line with %s within %.0f s; last: %r"
                         % (what, timeout, lines[-1] if lines else None))
        time.sleep(0.05)


def ival(d, k):
    check(k in d, "'stats live' line lacks %s: %r" % (k, d))
    return int(d[k])


@suite.case
def live_stats_line_gauges():
    with h.Server({"stats_interval": 1}) as srv:
        clients = [srv.client() for _ in range(3)]  # greeted: accepted and served
        for c in clients:
            c.ehlo()
        # A line written while a reply was still on its way may show it in
        # flight: wait (bounded) for the idle state, which must come.
        idle = ("tls_sessions", "recv_bufs_used", "plain_bufs_used", "plain_bufs_capacity",
                "msgs_at_writers", "writer_queue", "send_queued_bytes")
        d = wait_live(srv, lambda d: d.get("conns_open") == "3" and
                      all(d.get(k) == "0" for k in idle),
                      "conns_open=3 and %s all 0" % ", ".join(idle))
        # harness: shards 2, writers 1; defaults recv_buffers 1024, ring_size 1024.
        check_eq(ival(d, "recv_bufs_capacity"), 2 * 1024, "recv_bufs_capacity")
        check_eq(ival(d, "writer_queue_cap"), 2 * 1 * 1024, "writer_queue_cap")
        check(ival(d, "conns_accepted") >= 3, "conns_accepted in the live line: %r" % d)
        rss = ival(d, "rss_kib")
        with open("/proc/%d/status" % srv.proc.pid) as f:
            vm = int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))
        check(1024 < rss < 4 * vm + 65536 and vm < 4 * rss + 65536,
              "rss_kib %d against VmRSS %d kB" % (rss, vm))

        clients[0].send_message(b"Subject: live\r\n\r\nhello\r\n")
        clients[1].quit()
        clients[2].quit()
        wait_live(srv, lambda d: d.get("conns_open") == "1" and d.get("msgs_queued") == "1" and
                  all(d.get(k) == "0" for k in idle),
                  "conns_open=1 msgs_queued=1 and the idle gauges 0")
        clients[0].quit()
        wait_live(srv, lambda d: d.get("conns_open") == "0" and d.get("conns_closed") == "3",
                  "conns_open=0 conns_closed=3")

        # The schedule: one interval apart or more, never early; uptime only grows.
        n0 = len(srv.stats_live())
        deadline = time.monotonic() + 15
        while len(srv.stats_live()) < n0 + 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = srv.stats_live()
        check(len(lines) >= n0 + 3, "want 3 more live lines within 15 s at stats_interval 1, "
              "got %d" % (len(lines) - n0))
        for a, b in zip(lines, lines[1:]):
            gap = (b["t"] - a["t"]) % 86400
            check(gap >= 0.95, "live lines %.3f s apart (interval 1 s): %r, %r" % (gap, a, b))
            check(int(b["uptime_s"]) > int(a["uptime_s"]), "uptime_s went %s -> %s"
                  % (a["uptime_s"], b["uptime_s"]))
        check(int(lines[0]["uptime_s"]) >= 1, "first uptime_s %s" % lines[0]["uptime_s"])
    st = srv.stats()
    check("uptime_s" not in st and st.get("msgs_queued") == "1",
          "the exit stats line (not a live one): %r" % st)


@suite.case
def live_stats_counts_tls_sessions():
    import test_tls as tt
    with tt.start_tls_server(stats_interval=1) as srv:
        c = tt.tls_client(srv)
        d = wait_live(srv, lambda d: d.get("tls_sessions") == "1", "tls_sessions=1")
        check_eq(ival(d, "conns_open"), 1, "conns_open with one TLS session")
        check(ival(d, "plain_bufs_capacity") > 0, "plaintext buffers exist under TLS: %r" % d)
        check(ival(d, "plain_bufs_used") <= ival(d, "plain_bufs_capacity"), "plain_bufs: %r" % d)
        c.send_message(b"Subject: tls\r\n\r\nhello\r\n")
        c.quit()
        wait_live(srv, lambda d: d.get("tls_sessions") == "0" and d.get("conns_open") == "0"
                  and d.get("msgs_queued") == "1", "tls_sessions=0 after QUIT")


@suite.case
def live_stats_off():
    with h.Server({"stats_interval": 0}) as srv:
        c = srv.client()
        c.ehlo()
        time.sleep(1.5)
        c.quit()
    check_eq(srv.stats_live(), [], "live lines with stats_interval = 0")
    check("conns_accepted" in srv.stats(), "exit stats line")


@suite.case
def short_soak():
    if not os.path.exists(BENCH):
        raise h.Skip("mxring-bench not built (%s)" % BENCH)
    out = os.path.join(h.new_tmpdir("soak"), "results")
    p = h.run_cmd([sys.executable, SOAK, "--connections", "1000", "--duration", "10",
                   "--rate", "500", "--sources", "127.0.0.2-127.0.0.5", "--sample", "1",
                   "--stats-interval", "1", "--shards", "2", "--out", out,
                   "--mxring", h.Paths.mxring, "--bench", BENCH,
                   "--spool-tool", h.Paths.spool_tool], 90)
    text = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    check_eq(p.returncode, 0, "bench/soak exit status\nstdout:\n%s\nstderr:\n%s" % (text, err))
    check("verdict: PASS" in text, "verdict: %s" % text)
    m = re.search(r"messages acknowledged\s+(\d+)", text)
    check(m and 4900 <= int(m.group(1)) <= 5000, "acknowledged ~5,000 messages: %s" % text)
    n = int(m.group(1))
    check(re.search(r"verified\s+%d acknowledged, %d in the spool" % (n, n), text),
          "every acknowledged message verified: %s" % text)
    check(re.search(r"mxring-spool verify\s+%d messages \(exit 0\)" % n, text),
          "mxring-spool verify of the whole spool: %s" % text)
    for want in ("errors by reply code     none", "errors by kind           none",
                 "1000 at most open at once"):
        check(want in text, "%r in the output:\n%s" % (want, text))
    clients = set(re.findall(r"session end .*?client=(\S+)",
                             open(os.path.join(out, "mxring.log")).read()))
    check_eq(clients, {"127.0.0.%d" % i for i in (2, 3, 4, 5)}, "client addresses seen")
    for f in ("summary.txt", "summary.json", "samples.csv", "bench.json", "acks"):
        check(os.path.exists(os.path.join(out, f)), "results lack %s" % f)
    check(not os.path.exists(os.path.join(out, "spool")), "spool left behind")


if __name__ == "__main__":
    argv = sys.argv[1:]
    BENCH = h.take_bench_arg(argv)
    suite.main(argv)
