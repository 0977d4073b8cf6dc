#!/usr/bin/env python3
"""
test_screening.py - screening before and during the session: recipient
tables (recipient_table), DNS list scoring before the greeting
(dnsbl_sites) against a private unbound (dnsserver.py), and per-client
connection and message rates.

Checked, each case on its own mxring (and unbound) on loopback:
  - recipient tables: Postfix relay_recipient_maps text (comments, the value
    column ignored, a continuation line, a catch-all "@domain", several
    files), case-insensitive, recipient_delimiter; an unknown recipient of an
    accepted domain gets exactly 550 5.1.1 naming the address as written,
    counts toward error_limit (a dictionary attack ends in 421), and does not
    stop a known one from being queued; SIGHUP loads a changed table and
    keeps the old one when the new file is broken (the log names FILE:LINE);
    a broken or missing table at start is exit status 1 with FILE:LINE;
  - DNS lists: a client whose summed weight reaches dnsbl_threshold is
    greeted, then gets exactly 554 5.7.1 naming the heaviest site at its
    first command (QUIT still 221) and is closed, with a "dnsbl listed" log
    line; below the threshold, allowlisted, filtered out (=127.0.0.[2..11]),
    not listed, in dnsbl_exceptions (not even asked): served; dnsbl_action =
    ignore logs and serves; a site that never answers delays the greeting by
    dnsbl_timeout (2s and 800ms syntax) and counts as not listing; SERVFAIL
    counts as not listing without waiting; verdicts are cached across
    connections and shards (the DNS server's query log counts one query) for
    the answer's TTL clamped to [dnsbl_min_ttl, dnsbl_max_ttl]; an IPv6
    client is looked up by its 32 nibbles; the Prometheus counters move;
  - rates: past client_connection_rate_limit connections a minute one
    address gets 421 and is closed, past client_message_rate_limit MAILs
    (across connections and shards) 450, other addresses are unaffected,
    connection_limit_exceptions exempts, and a "rate limit" line is logged.

Clients connect from other loopback addresses (127.0.0.2 ...) with
harness.Client(source=...). The DNS fixture answers, per client address
(site weights as in SITES, dnsbl_threshold 2):
  127.0.0.1  listed nowhere (the harness's default client)       served
  127.0.0.2  bl.test                              score 2        blocked, bl.test
  127.0.0.3  zen.test                             score 1        served
  127.0.0.4  bl.test and zen.test                 score 3        blocked, bl.test
  127.0.0.5  bl.test, wl.test 127.0.0.2 (allow)   score 0        served
  127.0.0.6  bl.test, wl.test 127.0.0.4 (filtered out) score 2   blocked, bl.test
  127.0.0.9  bl.test, but in dnsbl_exceptions                    served, not asked
"""

import os
import re
import signal
import socket
import time

import dnsserver
import harness as h

suite = h.Suite("screening")
check, check_eq = h.check, h.check_eq
qname = dnsserver.qname

DOMAINS = "example.com, example.org, example.net"
# Listed first with the lower weight, so "blocked using" must pick the heaviest
# matched site, not the first one.
SITES = "zen.test, bl.test*2, wl.test=127.0.[0..255].[1..3]*-2"
ZONES = ["bl.test", "zen.test", "wl.test", "filt.test"]
LISTED = "127.0.0.2"
TEXT = b"Subject: screening\r\n\r\nscreened and served\r\n"


def r_unknown(addr):
    return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % addr


def r_blocked(addr, zone):
    return "554 5.7.1 Service unavailable; client [%s] blocked using %s" % (addr, zone)


def r_conn_rate(addr):
    return "421 4.7.0 %s Error: too many connections from %s" % (h.HOSTNAME, addr)


def r_msg_rate(addr):
    return "450 4.7.1 Error: too much mail from %s" % addr


def fixture_records():
    """The A records of the table in the header."""
    a = "127.0.0.2"
    return [(qname("127.0.0.2", "bl.test"), a),
            (qname("127.0.0.3", "zen.test"), a),
            (qname("127.0.0.4", "bl.test"), a),
            (qname("127.0.0.4", "zen.test"), a),
            (qname("127.0.0.5", "bl.test"), a),
            (qname("127.0.0.5", "wl.test"), "127.0.0.2"),
            (qname("127.0.0.6", "bl.test"), a),
            (qname("127.0.0.6", "wl.test"), "127.0.0.4"),
            (qname("127.0.0.9", "bl.test"), a),
            (qname("::1", "bl.test"), a)]


def dns_fixture(**kw):
    args = dict(zones=ZONES, records=fixture_records(), never=["never.test"],
                servfail=["fail.test"])
    args.update(kw)
    return dnsserver.DNSServer(**args)


def dnsbl_server(dns, ipv6=False, **cfg):
    """A mxring asking dns, with a metrics listener; returns (server, metrics port)."""
    mport = h.free_port()
    keys = {"dns_servers": dns.addr, "dnsbl_sites": SITES, "dnsbl_threshold": "2",
            "metrics_listen": "127.0.0.1:%d" % mport}
    keys.update(cfg)
    return h.Server(keys, ipv6=ipv6, tag="dnsbl"), mport


# ---------------------------------------------------------------- sessions


def greet(srv, source=None, ipv6=False, timeout=10.0):
    """A client from source, greeted; returns (client, seconds to the greeting)."""
    t0 = time.monotonic()
    c = srv.client(source=source, ipv6=ipv6, timeout=timeout, greet=False)
    c.expect(h.R_GREETING)
    return c, time.monotonic() - t0


def served(srv, source=None, ipv6=False, rcpt="<rcpt@example.com>"):
    """A whole session from source: greeting, EHLO, one message queued, QUIT.
    Returns the seconds to the greeting."""
    c, took = greet(srv, source, ipv6)
    c.ehlo()
    q = c.send_message(TEXT, rcpts=(rcpt,))
    c.quit()
    h.check_body(srv.spool, q, TEXT, "message from %s" % (source or "the default client"))
    return took


def blocked(srv, source, zone, first="EHLO client.example.org", ipv6=False):
    """source is greeted, gets the 554 at its first command and is closed.
    Returns the seconds to the greeting."""
    c, took = greet(srv, source, ipv6)
    addr = "::1" if ipv6 else source
    c.cmd(first, r_blocked(addr, zone))
    c.expect_closed()
    c.close()
    return took


def not_logged(srv, pattern, what):
    lines = [l for l in srv.log().splitlines() if re.search(pattern, l)]
    check(not lines, "%s: want no log line matching %r, found %r" % (what, pattern, lines))


def listed_line(srv, addr, score):
    return srv.wait_log(r"\bdnsbl listed client=%s score=%d sites=" % (re.escape(addr), score))


# ---------------------------------------------------------------- metrics


def scrape(port, timeout=10.0):
    """The metrics page as {sample name: value} (labels left out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        deadline = time.monotonic() + timeout
        while True:
            check(time.monotonic() < deadline, "no end of the metrics page within %.0f s"
                  % timeout)
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200 "), "metrics status: %r" % head[:80])
    out = {}
    for line in body.decode("ascii", "replace").splitlines():
        m = re.match(r"^([a-z_:][a-z0-9_:]*)(?:\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def metric(page, name):
    check(name in page, "no %s on the metrics page (names: %s)"
          % (name, " ".join(sorted(k for k in page if "dnsbl" in k or "rate" in k
                                   or "rcpt" in k))))
    return page[name]


def wait_metrics(port, want, base=None, timeout=5.0):
    """Waits (bounded) until every counter in want equals base + its delta;
    then requires it (a counter past its value fails at once)."""
    base = base or {}
    deadline = time.monotonic() + timeout
    while True:
        page = scrape(port)
        got = {n: metric(page, n) - base.get(n, 0.0) for n in want}
        if got == want:
            return page
        over = {n: v for n, v in got.items() if v > want[n]}
        if over or time.monotonic() > deadline:
            check_eq(got, want, "counter deltas")
        time.sleep(0.05)


# ---------------------------------------------------------------- the fixtures themselves


@suite.case
def dns_fixture_answers_as_documented():
    # dnsserver.py's own checks (A, NXDOMAIN with the SOA's negative TTL,
    # a zone that never answers, SERVFAIL, an IPv6 nibble name, the query
    # log), so that a failure below is not the fixture's.
    dnsserver.self_test(prefix="# ")


@suite.case
def harness_client_connects_from_a_source_address():
    with h.Server({}) as srv:
        for source in ("127.0.0.2", "127.0.0.3"):
            served(srv, source)
            srv.wait_log(r"\bsession end\b.*\bclient=%s port=\d+" % re.escape(source))
        served(srv)
        srv.wait_log(r"\bsession end\b.*\bclient=127\.0\.0\.1 port=\d+")


# ---------------------------------------------------------------- recipient tables


TABLE = """\
# relay_recipient_maps for example.com: the value column is ignored
alice@example.com   OK
  ghost@example.com this line continues the one above: not a key
Bob@Example.COM\tREJECT

@example.org OK
"""


def write(path, text):
    """Replaces path whole (a new file renamed over it, as an editor or
    postmap would), so a reload never reads it half written."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def table_server(tables, **cfg):
    keys = {"accept_domains": DOMAINS, "recipient_table": ", ".join(tables)}
    keys.update(cfg)
    return h.Server(keys, tag="rcpt")


@suite.case
def recipient_table_accepts_listed_and_refuses_unknown():
    d = h.new_tmpdir("tables")
    t1, t2 = os.path.join(d, "recipients"), os.path.join(d, "more recipients")
    write(t1, TABLE)
    write(t2, "# a second file\ncarol@example.net OK\n")
    mport = h.free_port()
    with table_server([t1, t2], recipient_delimiter="+", metrics_listen="127.0.0.1:%d"
                      % mport) as srv:
        base = scrape(mport)
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.org>", h.R_MAIL_OK)
        known = ["<alice@example.com>", "<ALICE@EXAMPLE.COM>", "<bob@example.com>",
                 "<BOB@example.com>", "<alice+news@example.com>", "<Bob+x+y@Example.Com>",
                 "<anyone@example.org>", "<Someone.Else@EXAMPLE.ORG>", "<carol@example.net>",
                 "<carol+tag@example.net>"]
        unknown = ["<ghost@example.com>", "<nosuch@example.com>", "<NoSuch@Example.COM>",
                   "<alice-news@example.com>", "<alicex@example.com>", "<dave@example.net>",
                   "<carol@example.com>", "<OK@example.com>", "<REJECT@example.com>"]
        for r in known:
            c.cmd("RCPT TO:" + r, h.R_RCPT_OK)
        for r in unknown:
            c.cmd("RCPT TO:" + r, r_unknown(r[1:-1]))
        # Not an accepted domain: still the relay refusal, not "User unknown".
        c.cmd("RCPT TO:<alice@example.edu>", h.R_RELAY)
        c.cmd("DATA", h.R_DATA)
        c.send(TEXT + b".\r\n")
        q = c.queued()
        c.quit()
        entry = [e for e in h.spool_list(srv.spool) if e["qid"] == q]
        check(entry, "message %s not in the spool" % q)
        check_eq(entry[0]["rcpts"], len(known), "recipients stored (only the known ones)")
        wait_metrics(mport, {"mxring_rcpt_unknown_total": float(len(unknown))}, base)
    # Without a delimiter the extension is part of the local part.
    with table_server([t1]) as srv:
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<alice+news@example.com>", r_unknown("alice+news@example.com"))
        c.cmd("RCPT TO:<alice@example.com>", h.R_RCPT_OK)
        # example.net is accepted but has no key in this table at all.
        c.cmd("RCPT TO:<carol@example.net>", r_unknown("carol@example.net"))
        c.quit()


@suite.case
def unknown_recipients_count_toward_error_limit():
    # A dictionary attack: the default error_limit (20) unknown recipients,
    # each answered, the last followed by 421 and the end of the session.
    d = h.new_tmpdir("tables")
    t = os.path.join(d, "recipients")
    write(t, TABLE)
    with table_server([t]) as srv:
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<spammer@example.org>", h.R_MAIL_OK)
        c.cmd("RCPT TO:<alice@example.com>", h.R_RCPT_OK)
        for i in range(19):
            c.cmd("RCPT TO:<guess%d@example.com>" % i, r_unknown("guess%d@example.com" % i))
        c.cmd("RCPT TO:<guess19@example.com>", r_unknown("guess19@example.com"))
        c.expect(h.R_TOO_MANY_ERRORS)
        c.expect_closed()
        srv.wait_log(r"\bsession end\b.*\berrors=20\b.*\breason=too-many-errors\b")
    # error_limit = 3: a pipelined burst gets three 550s and the 421, nothing more.
    with table_server([t], error_limit="3") as srv:
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<spammer@example.org>", h.R_MAIL_OK)
        c.send("".join("RCPT TO:<x%d@example.com>\r\n" % i for i in range(6)))
        for i in range(3):
            c.expect(r_unknown("x%d@example.com" % i))
        c.expect(h.R_TOO_MANY_ERRORS)
        c.expect_closed()
        served(srv, rcpt="<alice@example.com>")


@suite.case
def sighup_reloads_the_table_and_keeps_it_when_broken():
    d = h.new_tmpdir("tables")
    t = os.path.join(d, "recipients")
    write(t, "alice@example.com OK\nbob@example.com OK\nold@example.com OK\n")

    def check_rcpts(want):
        c = srv.client()
        c.ehlo()
        c.cmd("MAIL FROM:<>", h.R_MAIL_OK)
        for r, ok in want:
            c.cmd("RCPT TO:<%s>" % r, h.R_RCPT_OK if ok else r_unknown(r))
        c.quit()

    with table_server([t]) as srv:
        check_rcpts([("alice@example.com", True), ("old@example.com", True),
                     ("new@example.com", False)])
        # A held session: it must survive the reloads below.
        held = srv.client()
        held.ehlo()
        # Changed: one entry removed, one added (a duplicate counts once).
        write(t, "# v2\nalice@example.com OK\nbob@example.com OK\nnew@example.com OK\n"
                 "new@example.com OK\nzed@example.com OK\n")
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"\breload: recipient table loaded entries=4\b")
        # The line is written once the new table is in use: no wait here.
        check_rcpts([("alice@example.com", True), ("new@example.com", True),
                     ("zed@example.com", True), ("old@example.com", False)])
        # Broken at line 3 (a key without '@'): the old table stays.
        write(t, "alice@example.com OK\nbroken@example.com OK\nno-at-sign OK\n"
                 "old@example.com OK\n")
        srv.signal(signal.SIGHUP)
        line = srv.wait_log(r"\breload: failed, keeping the old recipient table\b")[-1]
        check(t + ":3" in line, "the failed reload's line names %s:3: %r" % (t, line))
        check_rcpts([("new@example.com", True), ("zed@example.com", True),
                     ("old@example.com", False), ("broken@example.com", False)])
        # Missing altogether: also kept.
        os.rename(t, t + ".gone")
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"\breload: failed, keeping the old recipient table\b", count=2)
        check_rcpts([("new@example.com", True), ("old@example.com", False)])
        # Fixed: loaded again.
        write(t, "old@example.com OK\n")
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"\breload: recipient table loaded entries=1\b")
        check_rcpts([("old@example.com", True), ("new@example.com", False)])
        held.cmd("MAIL FROM:<>", h.R_MAIL_OK)
        held.cmd("RCPT TO:<old@example.com>", h.R_RCPT_OK)
        held.quit()
        check(srv.alive(), "mxring died during the reloads")


@suite.case
def broken_table_at_start_is_exit_1_naming_file_and_line():
    d = h.new_tmpdir("tables")
    good, bad = os.path.join(d, "good"), os.path.join(d, "bad")
    write(good, "alice@example.com OK\n")
    write(bad, "# comment\nbob@example.com OK\n\nnobody OK\n")
    missing = os.path.join(d, "missing")
    cases = [(good + ", " + bad, bad + ":4", "a key without '@' on line 4"),
             (missing, missing + ": No such file or directory", "a missing file")]
    for tables, want, what in cases:
        p = h.run_cmd([h.Paths.mxring] + h.ROOT_OK
                      + ["-o", "listen=127.0.0.1:%d" % h.free_port(),
                         "-o", "spool_dir=%s" % os.path.join(d, "spool"),
                         "-o", "myhostname=" + h.HOSTNAME,
                         "-o", "accept_domains=" + DOMAINS,
                         "-o", "recipient_table=" + tables], 20)
        err = p.stderr.decode("utf-8", "replace")
        check_eq(p.returncode, 1, "exit status with %s (stderr %r)" % (what, err[-500:]))
        check(want in err and "mxring:" in err, "stderr for %s names %s: %r" % (what, want, err))
        check("ready" not in err + p.stdout.decode("utf-8", "replace"),
              "it logged 'ready' with %s" % what)


# ---------------------------------------------------------------- DNS lists


@suite.case
def dnsbl_listed_clients_get_554_at_their_first_command():
    with dns_fixture() as dns:
        srv, mport = dnsbl_server(dns)
        with srv:
            base = scrape(mport)
            took = blocked(srv, "127.0.0.2", "bl.test")
            check(took < 1.5, "greeting of a listed client took %.2f s" % took)
            line = listed_line(srv, "127.0.0.2", 2)[-1]
            check(re.search(r"\bsites=\S*bl\.test", line), "sites in %r" % line)
            check("zen.test" not in line, "zen.test did not list 127.0.0.2: %r" % line)
            wait_metrics(mport, {"mxring_dnsbl_queries_total": 3.0,
                                 "mxring_dnsbl_answers_total": 3.0,
                                 "mxring_dnsbl_listed_total": 1.0,
                                 "mxring_dnsbl_allowlisted_total": 0.0,
                                 "mxring_dnsbl_timeouts_total": 0.0,
                                 "mxring_dnsbl_failures_total": 0.0,
                                 "mxring_dnsbl_cache_hits_total": 0.0}, base)
            # Listed by both: score 3, named after the heavier bl.test
            # although zen.test comes first in dnsbl_sites.
            blocked(srv, "127.0.0.4", "bl.test")
            line = listed_line(srv, "127.0.0.4", 3)[-1]
            check(re.search(r"\bsites=\S*bl\.test", line) and "zen.test" in line,
                  "both sites in %r" % line)
            # Any first command but QUIT: HELO, NOOP, MAIL (answered from the cache).
            for first in ("HELO client.example.org", "NOOP", "MAIL FROM:<a@example.org>",
                          "ehlo lower.example.org"):
                blocked(srv, "127.0.0.2", "bl.test", first)
            # QUIT is answered as ever.
            c, _ = greet(srv, "127.0.0.2")
            c.quit()
            # Pipelined commands after the first: one 554, then the close.
            c, _ = greet(srv, "127.0.0.2")
            c.send(b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<rcpt@example.com>\r\nDATA\r\n")
            c.expect(r_blocked("127.0.0.2", "bl.test"))
            c.expect_closed()
            # Served: below the threshold, allowlisted, not listed.
            served(srv, "127.0.0.3")
            served(srv, "127.0.0.5")
            served(srv)
            for addr in ("127.0.0.3", "127.0.0.5", "127.0.0.1"):
                not_logged(srv, r"\bdnsbl listed client=%s\b" % re.escape(addr), addr)
            # An allowlist answer outside its filter (127.0.0.4) does not allow.
            blocked(srv, "127.0.0.6", "bl.test")
            listed_line(srv, "127.0.0.6", 2)
            page = scrape(mport)
            check(metric(page, "mxring_dnsbl_allowlisted_total")
                  - base["mxring_dnsbl_allowlisted_total"] == 1.0,
                  "allowlisted: only 127.0.0.5")
            check(metric(page, "mxring_dnsbl_listed_total")
                  - base["mxring_dnsbl_listed_total"] >= 3.0, "listed: 2, 4 and 6")


@suite.case
def dnsbl_filter_and_default_threshold():
    # filt.test=127.0.0.[2..11] (weight 1, the default threshold 1): only
    # answers in the range list the client.
    f = "filt.test"
    records = [(qname("127.0.0.7", f), "127.0.0.1"),
               (qname("127.0.0.8", f), "127.0.0.12"),
               (qname("127.0.0.10", f), "127.0.0.11"),
               (qname("127.0.0.11", f), "127.0.0.1"),
               (qname("127.0.0.11", f), "127.0.0.5"),
               (qname("127.0.0.12", f), "127.0.0.2"),
               (qname("127.0.0.13", f), "127.0.1.2")]
    with dns_fixture(records=records) as dns:
        srv, _ = dnsbl_server(dns, dnsbl_sites="filt.test=127.0.0.[2..11]",
                              dnsbl_threshold=None)
        with srv:
            for addr in ("127.0.0.7", "127.0.0.8", "127.0.0.13", "127.0.0.1"):
                served(srv, addr)
            for addr in ("127.0.0.10", "127.0.0.11", "127.0.0.12"):
                blocked(srv, addr, "filt.test")
                listed_line(srv, addr, 1)
            for addr in ("127.0.0.7", "127.0.0.8", "127.0.0.13"):
                check_eq(dns.queries(qname(addr, f)), 1, "queries for %s" % addr)
                not_logged(srv, r"\bdnsbl listed client=%s\b" % re.escape(addr), addr)


@suite.case
def dnsbl_action_ignore_logs_and_serves():
    with dns_fixture() as dns:
        srv, _ = dnsbl_server(dns, dnsbl_action="ignore")
        with srv:
            served(srv, "127.0.0.2")
            served(srv, "127.0.0.4")
            line = listed_line(srv, "127.0.0.2", 2)[-1]
            check(re.search(r"\baction=ignore\b", line), "action=ignore in %r" % line)
            line = listed_line(srv, "127.0.0.4", 3)[-1]
            check(re.search(r"\baction=ignore\b", line), "action=ignore in %r" % line)
            check_eq(dns.queries(qname("127.0.0.2", "bl.test")), 1, "queries for 127.0.0.2")


@suite.case
def dnsbl_exceptions_are_not_checked():
    with dns_fixture() as dns:
        srv, _ = dnsbl_server(dns, dnsbl_exceptions="127.0.0.9/32")
        with srv:
            took = served(srv, "127.0.0.9")
            check(took < 1.5, "greeting of an exception took %.2f s" % took)
            blocked(srv, "127.0.0.2", "bl.test")  # the list works here
            for z in ("bl.test", "zen.test", "wl.test"):
                check_eq(dns.queries(qname("127.0.0.9", z)), 0,
                         "queries for 127.0.0.9 in %s" % z)
            not_logged(srv, r"\bdnsbl listed client=127\.0\.0\.9\b", "127.0.0.9")


@suite.case
def dnsbl_site_that_never_answers_delays_the_greeting():
    with dns_fixture() as dns:
        srv, mport = dnsbl_server(dns, dnsbl_sites="never.test", dnsbl_threshold=None,
                                  dnsbl_timeout="800ms")
        with srv:
            base = scrape(mport)
            took = served(srv, "127.0.0.2")
            check(0.6 <= took < 2.3, "greeting after %.2f s with dnsbl_timeout = 800ms" % took)
            check(dns.queries(qname("127.0.0.2", "never.test")) >= 1, "the query was sent")
            wait_metrics(mport, {"mxring_dnsbl_queries_total": 1.0,
                                 "mxring_dnsbl_timeouts_total": 1.0,
                                 "mxring_dnsbl_answers_total": 0.0,
                                 "mxring_dnsbl_listed_total": 0.0}, base)
            not_logged(srv, r"\bdnsbl listed\b", "never listed")
    # With a listing site beside it: the greeting waits the whole timeout
    # (2s syntax), the listing still counts, and since a site did not
    # answer the verdict is not cached (dnsbl.h): the next connection asks
    # again.
    with dns_fixture() as dns:
        srv, mport = dnsbl_server(dns, dnsbl_sites="bl.test*2, never.test",
                                  dnsbl_timeout="2s")
        with srv:
            base = scrape(mport)
            took = blocked(srv, "127.0.0.2", "bl.test")
            check(1.8 <= took < 3.5, "greeting after %.2f s with dnsbl_timeout = 2s" % took)
            listed_line(srv, "127.0.0.2", 2)
            blocked(srv, "127.0.0.2", "bl.test")
            check_eq(dns.queries(qname("127.0.0.2", "bl.test")), 2,
                     "queries for 127.0.0.2 in bl.test (a timed-out verdict is not cached)")
            wait_metrics(mport, {"mxring_dnsbl_timeouts_total": 2.0,
                                 "mxring_dnsbl_cache_hits_total": 0.0}, base)


@suite.case
def stopping_answers_clients_still_waiting_for_the_lists():
    # SIGTERM while greetings wait for a list that never answers: each
    # waiting client gets 421 at once (no greeting), and the stop does not
    # wait out dnsbl_timeout.
    with dns_fixture() as dns:
        srv, _ = dnsbl_server(dns, dnsbl_sites="never.test", dnsbl_threshold=None,
                              dnsbl_timeout="30s")
        with srv:
            clients = [h.Client("127.0.0.1", srv.port, source="127.0.0.%d" % (20 + i))
                       for i in range(4)]
            dns.wait_queries(qname("127.0.0.23", "never.test"), 1)
            t0 = time.monotonic()
            srv.stop()
            took = time.monotonic() - t0
            check(took < 10.0, "stopped in %.1f s with dnsbl_timeout = 30s" % took)
            for c in clients:
                c.expect("421 4.3.2 %s Service shutting down" % h.HOSTNAME)
                c.expect_closed()


@suite.case
def dnsbl_servfail_is_served_without_waiting():
    with dns_fixture() as dns:
        srv, mport = dnsbl_server(dns, dnsbl_sites="fail.test, bl.test*2",
                                  dnsbl_timeout="3s")
        with srv:
            base = scrape(mport)
            took = served(srv, "127.0.0.3")
            check(took < 2.0, "greeting after %.2f s: SERVFAIL is an answer, not a timeout"
                  % took)
            check(dns.queries(qname("127.0.0.3", "fail.test")) >= 1, "fail.test was asked")
            # A listing beside a failing site still counts.
            took = blocked(srv, "127.0.0.2", "bl.test")
            check(took < 2.0, "greeting of a listed client after %.2f s" % took)
            page = wait_metrics(mport, {"mxring_dnsbl_failures_total": 2.0,
                                        "mxring_dnsbl_timeouts_total": 0.0}, base)
            check_eq(metric(page, "mxring_dnsbl_answers_total")
                     - base["mxring_dnsbl_answers_total"], 2.0, "answers (bl.test twice)")


@suite.case
def dnsbl_verdicts_are_cached_across_connections_and_shards():
    with dns_fixture() as dns:
        srv, mport = dnsbl_server(dns)
        with srv:
            base = scrape(mport)
            for _ in range(6):
                blocked(srv, "127.0.0.2", "bl.test")
            for _ in range(6):
                served(srv, "127.0.0.3")
            for addr in ("127.0.0.2", "127.0.0.3"):
                for z in ("bl.test", "zen.test", "wl.test"):
                    check_eq(dns.queries(qname(addr, z)), 1, "queries for %s in %s" % (addr, z))
            wait_metrics(mport, {"mxring_dnsbl_queries_total": 6.0,
                                 "mxring_dnsbl_cache_hits_total": 10.0}, base)
            shards = set(re.findall(r"\bsession end shard=(\d+) client=127\.0\.0\.[23]\b",
                                    srv.log()))
            if len(shards) < 2:
                print("# all 12 sessions on shard %s: the cache was not crossed" % shards)


@suite.case
def dnsbl_cache_ttl_is_clamped():
    # dnsbl_min_ttl = dnsbl_max_ttl = 3: the TTL 300 of 127.0.0.2's answers is
    # cut to 3 s; the TTL 1 of 127.0.0.3's raised to 3 s. Asked again after
    # 1.5 s: both cached; after 4.5 s: both asked again.
    zones = ["bl.test"]
    records = [(qname("127.0.0.2", "bl.test"), "127.0.0.2", 300),
               (qname("127.0.0.3", "bl.test"), "127.0.0.2", 1)]
    with dns_fixture(zones=zones, records=records) as dns:
        srv, _ = dnsbl_server(dns, dnsbl_sites="bl.test", dnsbl_threshold=None,
                              dnsbl_min_ttl="3", dnsbl_max_ttl="3")
        with srv:
            names = [qname(a, "bl.test") for a in ("127.0.0.2", "127.0.0.3")]
            t0 = time.monotonic()
            for a in ("127.0.0.2", "127.0.0.3"):
                blocked(srv, a, "bl.test")
            time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
            for a in ("127.0.0.2", "127.0.0.3"):
                blocked(srv, a, "bl.test")
            check(time.monotonic() - t0 < 2.0, "too slow for the 3 s TTL")
            check_eq([dns.queries(n) for n in names], [1, 1], "queries after 1.5 s")
            time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
            for a in ("127.0.0.2", "127.0.0.3"):
                blocked(srv, a, "bl.test")
            check_eq([dns.queries(n) for n in names], [2, 2], "queries after 4.5 s")


@suite.case
def dnsbl_ipv6_client_by_nibbles():
    if not h.have_ipv6_loopback():
        raise h.Skip("no IPv6 loopback")
    with dns_fixture() as dns:
        srv, _ = dnsbl_server(dns, ipv6=True)
        with srv:
            name = qname("::1", "bl.test")
            check_eq(name, "1." + "0." * 31 + "bl.test", "the ::1 query name")
            blocked(srv, None, "bl.test", ipv6=True)
            listed_line(srv, "::1", 2)
            check_eq(dns.queries(name), 1, "queries for ::1 in bl.test")
            check_eq(dns.queries(qname("::1", "zen.test")), 1, "queries for ::1 in zen.test")
            served(srv)  # 127.0.0.1 on the same server is not listed


# ---------------------------------------------------------------- rates


def rate_server(ipv6=False, **cfg):
    mport = h.free_port()
    keys = {"metrics_listen": "127.0.0.1:%d" % mport}
    keys.update(cfg)
    return h.Server(keys, ipv6=ipv6, tag="rate"), mport


def away_from_a_minute_boundary(need_s=10):
    """Waits, when need_s would cross a wall-clock minute, for the next one, so
    a limiter with minute buckets and one with a window agree."""
    left = 60 - time.time() % 60
    if left < need_s:
        time.sleep(left + 0.2)


def rate_line(srv, addr):
    return srv.wait_log(r"(?=.*\brate limit)(?=.*\b%s\b)" % re.escape(addr))


@suite.case
def connection_rate_limit_per_address():
    n = 10
    ipv6 = h.have_ipv6_loopback()
    srv, mport = rate_server(ipv6=ipv6, client_connection_rate_limit=str(n))
    with srv:
        away_from_a_minute_boundary()
        base = scrape(mport)
        for i in range(n):
            c, _ = greet(srv)
            c.quit()
        for i in range(2):
            c = srv.client(greet=False)
            c.expect(r_conn_rate("127.0.0.1"))
            c.expect_closed()
            c.close()
        rate_line(srv, "127.0.0.1")
        # Another address has its own count, and so has ::1 (its /64).
        for i in range(3):
            served(srv, "127.0.0.3")
        if ipv6:
            served(srv, ipv6=True)
        wait_metrics(mport, {"mxring_rate_limited_connections_total": 2.0}, base)
        shards = set(re.findall(r"\bsession end shard=(\d+) client=127\.0\.0\.1\b", srv.log()))
        if len(shards) < 2:
            print("# all %d sessions on shard %s: not counted across shards" % (n, shards))


def proxied(srv, src, greeting=True):
    """A client behind the balancer: a PROXY v1 header naming src first."""
    c = srv.client(greet=False)
    fam = "TCP6" if ":" in src else "TCP4"
    dst = "::1" if ":" in src else "127.0.0.1"
    c.send(("PROXY %s %s %s 40000 25\r\n" % (fam, src, dst)).encode())
    if greeting:
        c.expect(h.R_GREETING)
    return c


@suite.case
def rates_count_an_ipv6_slash_64_as_one_client():
    # Loopback has one IPv6 address; behind a balancer the PROXY header names
    # any. Three addresses of one /64 share a count; the next /64 has its own.
    n = 3
    srv, _ = rate_server(proxy_protocol="haproxy", client_connection_rate_limit=str(n))
    with srv:
        away_from_a_minute_boundary()
        for a in ("2001:db8:1:2::5", "2001:db8:1:2::6", "2001:db8:1:2:ffff::1"):
            proxied(srv, a).quit()
        c = proxied(srv, "2001:db8:1:2::7", greeting=False)
        c.expect(r_conn_rate("2001:db8:1:2::7"))
        c.expect_closed()
        c.close()
        rate_line(srv, "2001:db8:1:2::7")
        proxied(srv, "2001:db8:1:3::5").quit()
        # IPv4 addresses are each their own client.
        for i in range(n + 1):
            proxied(srv, "192.0.2.%d" % (10 + i)).quit()


@suite.case
def dnsbl_asks_about_the_client_the_balancer_names():
    # Behind a balancer the DNS lists are asked about the address of the
    # PROXY header, not the balancer's.
    recs = fixture_records() + [(qname("192.0.2.7", "bl.test"), "127.0.0.2")]
    with dns_fixture(records=recs) as dns:
        srv, _ = dnsbl_server(dns, proxy_protocol="haproxy")
        with srv:
            c = proxied(srv, "192.0.2.7")
            c.cmd("EHLO client.example.org", r_blocked("192.0.2.7", "bl.test"))
            c.expect_closed()
            c.close()
            listed_line(srv, "192.0.2.7", 2)
            check_eq(dns.queries(qname("127.0.0.1", "bl.test")), 0,
                     "queries about the balancer's own address")
            c = proxied(srv, "192.0.2.8")
            c.ehlo()
            c.quit()


@suite.case
def message_rate_limit_across_connections():
    n = 6
    srv, mport = rate_server(client_message_rate_limit=str(n))
    with srv:
        away_from_a_minute_boundary()
        base = scrape(mport)
        # n messages over n/2 connections of two each.
        for i in range(n // 2):
            c, _ = greet(srv)
            c.ehlo()
            c.send_message(TEXT)
            c.send_message(TEXT)
            c.quit()
        c, _ = greet(srv)
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.org>", r_msg_rate("127.0.0.1"))
        c.cmd("RCPT TO:<rcpt@example.com>", h.R_NEED_MAIL)
        c.cmd("MAIL FROM:<sender@example.org>", r_msg_rate("127.0.0.1"))
        c.quit()
        rate_line(srv, "127.0.0.1")
        served(srv, "127.0.0.3")
        check_eq(len(h.spool_list(srv.spool)), n + 1, "messages stored")
        wait_metrics(mport, {"mxring_rate_limited_messages_total": 2.0,
                             "mxring_rate_limited_connections_total": 0.0}, base)


@suite.case
def rate_limits_spare_connection_limit_exceptions():
    srv, mport = rate_server(client_connection_rate_limit="2", client_message_rate_limit="2",
                             connection_limit_exceptions="127.0.0.1/32")
    with srv:
        away_from_a_minute_boundary()
        base = scrape(mport)
        for i in range(5):
            served(srv)
        for i in range(2):
            served(srv, "127.0.0.3")
        c = srv.client(source="127.0.0.3", greet=False)
        c.expect(r_conn_rate("127.0.0.3"))
        c.expect_closed()
        rate_line(srv, "127.0.0.3")
        not_logged(srv, r"(?=.*\brate limit)(?=.*\b127\.0\.0\.1\b)", "an exception")
        wait_metrics(mport, {"mxring_rate_limited_connections_total": 1.0,
                             "mxring_rate_limited_messages_total": 0.0}, base)


if __name__ == "__main__":
    suite.main()
