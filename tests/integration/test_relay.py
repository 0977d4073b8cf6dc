#!/usr/bin/env python3
"""
test_relay.py - the relay to the hub (relay_host): what mxring accepted goes
on to a real Postfix over SMTP, to Dovecot over LMTP, and to a scripted hub
for the faults (hubs.py starts all three on loopback).

Checked, each case on its own mxring and hub:
  - STARTTLS to a Postfix hub with relay_tls = verify against a CA made by
    the test, resumed by ticket; refused (deferred 4.7.5) for a wrong name
    or another CA; encrypt with no STARTTLS on offer defers 4.7.4;
  - Postfix as the hub: messages from mxring-bench (--ack-log) reach its
    Maildir, each exactly once and byte for byte (X-Bench-Sum over the
    message as the client sent it), with the edge's Received: header naming
    the client; the log has one "relayed ... status=sent" line per
    recipient; the journal and the segments are cleaned up once the
    segment rotates (segment_max_age), and a restart sends nothing again;
  - Dovecot LMTP (TCP and a unix socket, the latter under the sandbox): a
    message to three recipients, one unknown, delivers to two and bounces
    the third; the DSN reaches the sender's mailbox and Python's email
    package reads it as a delivery-status report naming the recipient and
    the 5.1.1 reply;
  - a hub answering 250, 450 and 550 per recipient: the 250 one is sent
    once, the 450 one again after the first retry (relay_retry_schedule),
    the 550 one bounced (a DSN from <> to the sender, at the hub); a message
    from <> that fails is dropped, not bounced;
  - the hub down at start, then up: deferrals logged, tries spaced as the
    schedule says, everything delivered at once when a try finds it up;
    SIGUSR1 retries a deferred message now;
  - a hub that stalls in DATA: relay_command_timeout defers the message,
    which goes through once the hub behaves;
  - maximal_queue_lifetime: a recipient deferred past it is bounced (4.4.7);
  - SIGKILL of mxring at a random moment while it receives and relays, 5
    rounds: every message the client had acknowledged reaches the hub
    (duplicates counted, reported);
  - the Prometheus counters and `mxring-spool queue` show the queue.
"""

import email
import email.policy
import os
import random
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import harness as h
import hubs

suite = h.Suite("relay")
check, check_eq = h.check, h.check_eq

SENDER = "sender@example.com"
BENCH = None


def relay_server(hub_spec, spool_dir=None, **cfg):
    """An mxring relaying to hub_spec, with short timers for tests."""
    keys = {
        "relay_host": hub_spec,
        "relay_retry_schedule": "1s, 2s",
        "relay_command_timeout": "3s",
        "relay_connect_timeout": "2s",
        "stats_interval": "0",
    }
    keys.update(cfg)
    return h.Server(keys, spool_dir=spool_dir)


def send(srv, rcpts, body, mail_from=SENDER):
    c = srv.client()
    c.ehlo()
    if isinstance(body, str):
        body = body.encode()
    qid = c.send_message(body, mail_from="<%s>" % mail_from,
                         rcpts=["<%s>" % r for r in rcpts])
    c.quit()
    return qid


def relayed_lines(srv, status=None):
    out = []
    for line in srv.log().splitlines():
        m = re.search(r"\brelayed qid=(\S+) to=<([^>]*)> relay=(\S+) delay=(\S+) "
                      r"attempts=(\d+) dsn=(\S+) status=(\S+) \((.*)\)$", line)
        if m and (status is None or m.group(7) == status):
            out.append(m.groups())
    return out


def wait_relayed(srv, n, status="sent", timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = relayed_lines(srv, status)
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise h.Fail("%d 'relayed ... status=%s' lines, want %d" %
                 (len(relayed_lines(srv, status)), status, n))


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


@suite.case
def postfix_hub_every_message_once():
    tmp = h.new_tmpdir("pf")
    with hubs.PostfixHub(os.path.join(tmp, "hub")) as hub:
        srv = relay_server("smtp:[127.0.0.1]:%d" % hub.port, segment_max_age="2",
                           metrics_listen="127.0.0.1:%d" % h.free_port())
        with srv:
            ack = os.path.join(tmp, "ack.log")
            # 1,000 in CI; MXRING_RELAY_MESSAGES=10000 for the full count.
            n = int(os.environ.get("MXRING_RELAY_MESSAGES", "1000"))
            r = subprocess.run([BENCH, "--server", srv.hostport(), "--connections", "8",
                                "--messages", str(n), "--msgs-per-conn", "20",
                                "--size-dist", "mix", "--ack-log", ack, "--quiet"],
                               capture_output=True, text=True, timeout=120 + n // 50)
            check(r.returncode == 0, "mxring-bench: %s" % r.stderr[-2000:])
            acked = hubs.read_acks(ack)
            check_eq(len(acked), n, "messages acknowledged")
            got = hub.wait_count(n, timeout=120 + n // 50)
            check(got >= n, "%d of %d messages at the hub" % (got, n))
            seen = {}
            for path, data in hub.messages():
                seq, ok = hubs.bench_sums(data)
                check(ok, "%s: X-Bench-Sum does not match the body" % path)
                seen[seq] = seen.get(seq, 0) + 1
                check(re.search(rb"\nReceived: from \S+ \(\[127\.0\.0\.1\]:\d+\)\n\tby mx\.test "
                                rb"\(mxring\) with E?SMTP id ", data),
                      "%s: no Received: header of the edge" % path)
            missing = [s for s in acked if s not in seen]
            dups = [s for s, k in seen.items() if k > 1]
            check(not missing, "%d acknowledged messages never arrived: %s" %
                  (len(missing), missing[:5]))
            check(not dups, "%d messages arrived more than once: %s" % (len(dups), dups[:5]))
            sent = wait_relayed(srv, n, "sent")  # logged once the hub's reply is read
            check_eq(len(sent), n, "relayed status=sent lines")
            check_eq({q for q, *_ in sent}, set(acked.values()), "queue ids relayed")
            # The segment rotates after segment_max_age; once every message of
            # it is delivered it is deleted, and the queue is empty.
            mport = int(srv.extra["metrics_listen"].rsplit(":", 1)[1])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                m = scrape(mport)
                ready = os.listdir(os.path.join(srv.spool, "ready"))
                if (m.get("mxring_relay_segments_deleted_total", 0) >= 1 and not ready and
                        m.get("mxring_relay_queue_messages") == 0):
                    break
                time.sleep(0.2)
            check(not ready, "segments left in ready/ after delivery: %s" % ready)
            check(m.get("mxring_relay_segments_deleted_total", 0) >= 1, "a segment deleted")
            check_eq(m.get("mxring_relay_sent_total"), float(n), "mxring_relay_sent_total")
            check_eq(m.get("mxring_relay_queue_messages"), 0.0, "queue gauge")
            srv.stop()
            before = len(hub.messages())
            srv.start()
            time.sleep(2)
            check_eq(len(hub.messages()), before, "messages at the hub after a restart")
            check_eq(len(relayed_lines(srv)), n, "relayed lines after a restart")


def dovecot_case(tag, unix):
    tmp = h.new_tmpdir(tag)
    users = ("alice@example.com", "bob@example.com", SENDER)
    sock = os.path.join(tmp, "lmtp.sock") if unix else None
    with hubs.DovecotLmtp(os.path.join(tmp, "hub"), unix_path=sock, users=users) as hub:
        spec = "lmtp:unix:%s" % sock if unix else "lmtp:[127.0.0.1]:%d" % hub.port
        with relay_server(spec) as srv:
            body = "Subject: three\r\nMessage-ID: <three@example.com>\r\n\r\nHello.\r\n"
            qid = send(srv, ["alice@example.com", "bob@example.com", "carol@example.com"],
                       body)
            hub.wait_count("alice@example.com", 1, 15)
            hub.wait_count("bob@example.com", 1, 15)
            wait_relayed(srv, 1, "bounced")
            # Dovecot stores before it answers: mxring's lines come a moment later.
            sent = wait_relayed(srv, 2, "sent")
            check_eq(sorted(r[1] for r in sent if r[0] == qid),
                     ["alice@example.com", "bob@example.com"], "delivered")
            bounced = relayed_lines(srv, "bounced")
            check_eq([(r[0], r[1], r[5]) for r in bounced],
                     [(qid, "carol@example.com", "5.1.1")], "bounced")
            srv.wait_log(r"\bbounce qid=%s to=<%s> .*status=sent" % (qid, SENDER), 1, 15)
            hub.wait_count(SENDER, 1, 15)
            raw = hub.messages(SENDER)[0]
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            check_eq(msg.get_content_type(), "multipart/report", "DSN content type")
            check_eq(msg.get_param("report-type"), "delivery-status", "report-type")
            parts = list(msg.iter_parts())
            check_eq(parts[1].get_content_type(), "message/delivery-status", "part 2")
            ds = parts[1].as_string()
            check(re.search(r"Final-Recipient: rfc822;\s*carol@example\.com", ds, re.I),
                  "Final-Recipient names carol: %s" % ds)
            check(re.search(r"Status: 5\.1\.1", ds), "Status 5.1.1: %s" % ds)
            check(re.search(r"Diagnostic-Code:\s*smtp;\s*550 5\.1\.1", ds),
                  "Diagnostic-Code with the 550: %s" % ds)
            check(re.search(r"Action: failed", ds), "Action: failed")
            if not unix:  # the hub reached by address is named; a socket is not
                check(re.search(r"Remote-MTA: dns;\s*127\.0\.0\.1", ds),
                      "Remote-MTA names the hub: %s" % ds)
            check(b"Return-Path: <>" in raw, "the DSN comes from <>")
            check(b"Message-ID: <three@example.com>" in parts[2].as_bytes(),
                  "the original headers are in part 3")


def make_ca(d, name="hub.test"):
    """A CA, and a certificate for name (and 127.0.0.1) that it signed: paths."""
    def run(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=d, capture_output=True, text=True,
                           timeout=60)
        check(r.returncode == 0, "openssl %s: %s" % (args[0], r.stderr[-500:]))
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test hub CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "hub.key", "-out", "hub.csr", "-subj", "/CN=%s" % name)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:%s,IP:127.0.0.1\n" % name)
    run("x509", "-req", "-in", "hub.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "hub.pem", "-days", "2", "-extfile", "ext.cnf")
    return [os.path.join(d, f) for f in ("ca.pem", "hub.pem", "hub.key")]


@suite.case
def postfix_hub_starttls_verify():
    if not shutil.which("openssl"):
        raise h.Skip("openssl is not installed")
    tmp = h.new_tmpdir("pf-tls")
    ca, cert, key = make_ca(tmp)
    with hubs.PostfixHub(os.path.join(tmp, "hub"), tls_cert=cert, tls_key=key) as hub:
        spec = "smtp:[127.0.0.1]:%d" % hub.port
        with relay_server(spec, relay_tls="verify", relay_tls_ca_file=ca,
                          relay_tls_server_name="hub.test", relay_msgs_per_session="1") as srv:
            for i in range(3):  # one after the other: each session may resume the last
                send(srv, ["tls%d@example.com" % i], "Subject: tls %d\r\n\r\nx\r\n" % i)
                wait_relayed(srv, i + 1, "sent", 20)
            hub.wait_count(3, 20)
            for path, data in hub.messages():
                check(re.search(rb"by hub\.test \(Postfix\) with ESMTPS", data),
                      "%s: not received over TLS" % path)
            log = srv.log()
            check(re.search(r"relay: tls to=\S+ TLSv1\.[23] \S+ resumed=no verified=yes", log),
                  "a verified full handshake is logged")
            check(re.search(r"relay: tls to=\S+ TLSv1\.[23] \S+ resumed=yes verified=yes", log),
                  "a later session resumed by ticket")
        # The wrong name: no message goes, it is deferred, and the log says why.
        with relay_server(spec, relay_tls="verify", relay_tls_ca_file=ca,
                          relay_tls_server_name="other.test") as srv:
            n = len(hub.messages())
            qid = send(srv, ["wrong@example.com"], "Subject: wrong name\r\n\r\nx\r\n")
            d = wait_relayed(srv, 1, "deferred", 10)
            check_eq((d[0][0], d[0][5]), (qid, "4.7.5"), "deferred for TLS")
            srv.wait_log(r"relay: tls to=\S+ failed: certificate name mismatch", 1, 5)
            time.sleep(0.5)
            check_eq(len(hub.messages()), n, "nothing delivered to a hub that failed the check")
        # Another CA: refused the same way.
        other = h.new_tmpdir("ca2")
        ca2 = make_ca(other)[0]
        with relay_server(spec, relay_tls="verify", relay_tls_ca_file=ca2,
                          relay_tls_server_name="hub.test") as srv:
            send(srv, ["ca@example.com"], "Subject: other CA\r\n\r\nx\r\n")
            wait_relayed(srv, 1, "deferred", 10)
            srv.wait_log(r"relay: tls to=\S+ failed: certificate verify failed", 1, 5)


@suite.case
def tls_may_and_encrypt_without_starttls():
    with hubs.ScriptedHub() as hub:
        spec = "smtp:[127.0.0.1]:%d" % hub.port
        with relay_server(spec, relay_tls="may") as srv:
            send(srv, ["plain@example.com"], "Subject: may\r\n\r\nx\r\n")
            wait_relayed(srv, 1, "sent", 10)
        with relay_server(spec, relay_tls="encrypt") as srv:
            qid = send(srv, ["enc@example.com"], "Subject: encrypt\r\n\r\nx\r\n")
            d = wait_relayed(srv, 1, "deferred", 10)
            check_eq((d[0][0], d[0][5]), (qid, "4.7.4"), "deferred: no STARTTLS offered")
            check_eq(len(hub.transactions), 1, "nothing sent in plain text")


@suite.case
def dovecot_lmtp_tcp_bounce():
    dovecot_case("dc-tcp", False)


@suite.case
def dovecot_lmtp_unix_bounce():
    dovecot_case("dc-unix", True)


@suite.case
def scripted_replies_per_recipient():
    tries = {"n": 0}

    def rcpt(addr):
        if addr.lower() == "later@example.com":
            tries["n"] += 1
            return "450 4.2.0 try later" if tries["n"] == 1 else None
        if addr.lower() == "nobody@example.com":
            return "550 5.1.1 no such user"
        return None

    with hubs.ScriptedHub(rcpt_replies=rcpt) as hub:
        with relay_server("smtp:[127.0.0.1]:%d" % hub.port) as srv:
            qid = send(srv, ["ok@example.com", "later@example.com", "nobody@example.com"],
                       "Subject: mixed\r\n\r\nbody\r\n")
            txns = hub.wait_transactions(3, 15)
            first = txns[0]
            check_eq([a for a, _ in first.rcpts],
                     ["ok@example.com", "later@example.com", "nobody@example.com"],
                     "first attempt's recipients")
            retry = [t for t in txns if t.mail_from == SENDER][1]
            check_eq([a for a, _ in retry.rcpts], ["later@example.com"], "the retry")
            check(1.0 <= retry.t_mail - first.t_mail < 4.0,
                  "retry after %.2fs (schedule 1s)" % (retry.t_mail - first.t_mail))
            dsn = [t for t in txns if t.mail_from == ""]
            check_eq(len(dsn), 1, "one DSN")
            check_eq(dsn[0].accepted, [SENDER], "the DSN goes to the sender")
            check(b"nobody@example.com" in dsn[0].body and b"550 5.1.1" in dsn[0].body,
                  "the DSN names the recipient and the reply")
            check(b"later@example.com" not in dsn[0].body.split(b"\r\n\r\n", 1)[1]
                  .split(b"text/rfc822-headers")[0], "the deferred recipient is not bounced")
            sent = wait_relayed(srv, 2, "sent")
            check_eq(sorted(r[1] for r in sent if r[0] == qid),
                     ["later@example.com", "ok@example.com"], "delivered")
            later = [r for r in sent if r[1] == "later@example.com"][0]
            check_eq(later[4], "2", "attempts of the retried recipient")
            check_eq(len(relayed_lines(srv, "deferred")), 1, "deferred lines")
            # A message from the null sender that fails is not bounced.
            n = len(hub.transactions)
            send(srv, ["nobody@example.com"], "Subject: from <>\r\n\r\nx\r\n", mail_from="")
            srv.wait_log(r"relayed .* to=<nobody@example\.com> .*status=bounced", 2, 10)
            time.sleep(1.5)
            check_eq(len(hub.transactions), n + 1, "no DSN for a message from <>")


@suite.case
def pipelined_messages_keep_their_bodies():
    """Without CHUNKING, each next message's MAIL, RCPT and DATA go behind the
    end of data of the one before: every body must still reach its own
    envelope."""
    with hubs.ScriptedHub() as hub:
        with relay_server("smtp:[127.0.0.1]:%d" % hub.port, relay_connections="2") as srv:
            tmp = h.new_tmpdir("pipe")
            ack = os.path.join(tmp, "ack.log")
            r = subprocess.run([BENCH, "--server", srv.hostport(), "--connections", "4",
                                "--messages", "400", "--msgs-per-conn", "50", "--size-dist",
                                "mix", "--to", "rcpt%n@example.com", "--ack-log", ack,
                                "--quiet"], capture_output=True, text=True, timeout=120)
            check(r.returncode == 0, "mxring-bench: %s" % r.stderr[-2000:])
            wait_relayed(srv, 400, "sent", 60)
            done = hub.wait_transactions(400, 30)
            for t in done:
                seq, ok = hubs.bench_sums(t.body)
                check(ok, "a body does not match its X-Bench-Sum")
                to = re.search(rb"\r\nTo: <([^>]+)>", t.body)
                check(to and [a for a, _ in t.rcpts] == [to.group(1).decode()],
                      "the body of <%s> went with envelope %s" %
                      (to and to.group(1).decode(), t.rcpts))
            check_eq(len({hubs.bench_sums(t.body)[0] for t in done}), 400, "distinct messages")
            # Behind an end of data: a MAIL read in the same batch as the data's end.
            piped = sum(1 for c in hub.connections for (b, line) in c.commands
                        if line.startswith("MAIL") and
                        any(b2 == b and l2.startswith("DATA") for b2, l2 in c.commands))
            check(piped > 0, "no MAIL was pipelined with a DATA")


@suite.case
def hub_down_then_up():
    hub = hubs.ScriptedHub()
    hub.start()
    port = hub.port
    hub.stop()
    try:
        with relay_server("smtp:[127.0.0.1]:%d" % port,
                          relay_retry_schedule="1s, 4s") as srv:
            qids = [send(srv, ["r%d@example.com" % i], "Subject: %d\r\n\r\nx\r\n" % i)
                    for i in range(5)]
            srv.wait_log(r"hub unreachable .*next try in 1s", 1, 5)
            srv.wait_log(r"hub unreachable .*next try in 2s", 1, 5)
            srv.wait_log(r"hub unreachable .*next try in 4s", 1, 8)
            times = [int(mm) * 60 + float(ss) for mm, ss in re.findall(
                r"T\d\d:(\d\d):(\d\d\.\d+)Z mxring: relay: worker=0 hub unreachable",
                srv.log())]
            gaps = [b - a for a, b in zip(times, times[1:])]
            check(len(gaps) >= 2 and 0.8 <= gaps[0] <= 2.5 and 1.8 <= gaps[1] <= 3.5,
                  "tries spaced %s (schedule 1s, 2s, 4s)" % gaps)
            check(len(relayed_lines(srv, "deferred")) >= 5, "deferrals logged")
            hub.start()
            # The next try of the hub finds it: everything waiting goes at once.
            srv.wait_log(r"the hub answers again: retrying every waiting message", 1, 8)
            sent = wait_relayed(srv, 5, "sent", 10)
            check_eq(sorted(r[0] for r in sent), sorted(qids), "all delivered")
            check_eq(len(hub.transactions), 5, "each once")
    finally:
        hub.stop()


@suite.case
def spool_max_bytes_hub_down():
    hub = hubs.ScriptedHub()
    hub.start()
    port = hub.port
    hub.stop()
    try:
        with relay_server("smtp:[127.0.0.1]:%d" % port, spool_max_bytes="64k",
                          segment_max_age="1", relay_retry_schedule="30s, 30s") as srv:
            body = "Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 300
            for i in range(4):
                send(srv, ["r%d@example.com" % i], body)
            srv.wait_log(r"relay: spool reached spool_max_bytes", 1, 5)
            c = srv.client()
            c.ehlo()
            c.cmd("MAIL FROM:<%s>" % SENDER, "452 4.3.1 Insufficient system storage")
            c.quit()
            hub.start()
            srv.signal(signal.SIGUSR1)
            wait_relayed(srv, 4, "sent", 10)
            srv.wait_log(r"relay: spool below spool_max_bytes", 1, 10)
            send(srv, ["again@example.com"], "Subject: ok\r\n\r\nx\r\n")
            wait_relayed(srv, 5, "sent", 10)
    finally:
        hub.stop()


@suite.case
def host_names_resolved_again_on_sighup():
    """relay_host by name: resolved at start, and again on SIGHUP inside the
    sandbox (the resolver's files are readable, nothing else)."""
    with hubs.ScriptedHub() as hub:
        with relay_server("smtp:[localhost]:%d" % hub.port) as srv:
            check("sandbox=landlock" in srv.log() or "sandbox=unavailable" in srv.log() or
                  "sandbox=off" in srv.log(), "the ready line names the sandbox")
            srv.signal(signal.SIGHUP)
            # localhost may come as ::1 first (the hub listens on 127.0.0.1
            # only: the relay then fails over to the next address).
            srv.wait_log(r"reload: relay_host smtp:\[localhost\]:%d addresses=\S*127\.0\.0\.1"
                         % hub.port, 1, 5)
            send(srv, ["named@example.com"], "Subject: by name\r\n\r\nx\r\n")
            sent = wait_relayed(srv, 1, "sent", 10)
            check(sent[0][2].startswith("localhost[127.0.0.1]:"), "relay= %s" % sent[0][2])


@suite.case
def hub_stalls_in_data():
    with hubs.ScriptedHub(stall_in_data=True) as hub:
        with relay_server("smtp:[127.0.0.1]:%d" % hub.port, relay_command_timeout="2s") as srv:
            qid = send(srv, ["x@example.com"], "Subject: stall\r\n\r\n" + "line\r\n" * 100)
            d = wait_relayed(srv, 1, "deferred", 10)
            check_eq(d[0][0], qid, "deferred message")
            check(d[0][5].startswith("4."), "a 4.x.x status: %s" % d[0][5])
            hub.stall_in_data = False
            sent = wait_relayed(srv, 1, "sent", 10)
            check_eq(sent[0][0], qid, "delivered after the stall")
            done = [t for t in hub.transactions if t.state == "done"]
            check_eq(len(done), 1, "one complete transaction")
            check(done[0].body.endswith(b"line\r\n" * 100), "body complete")


@suite.case
def expired_after_queue_lifetime():
    with hubs.ScriptedHub(rcpt_replies={"slow@example.com": "451 4.3.0 not now"}) as hub:
        with relay_server("smtp:[127.0.0.1]:%d" % hub.port,
                          maximal_queue_lifetime="3s") as srv:
            qid = send(srv, ["slow@example.com"], "Subject: old\r\n\r\nx\r\n")
            e = wait_relayed(srv, 1, "expired", 15)
            check_eq((e[0][0], e[0][5]), (qid, "4.4.7"), "expired with 4.4.7")
            srv.wait_log(r"\bbounce qid=%s .*status=sent" % qid, 1, 10)
            dsn = [t for t in hub.transactions if t.mail_from == ""]
            check_eq(len(dsn), 1, "a DSN")
            check(b"Status: 4.4.7" in dsn[0].body, "the DSN says 4.4.7")


@suite.case
def queue_view_and_metrics():
    with hubs.ScriptedHub(rcpt_replies={"wait@example.com": "452 4.2.2 mailbox full"}) as hub:
        mport = h.free_port()
        with relay_server("smtp:[127.0.0.1]:%d" % hub.port, relay_retry_schedule="60s, 60s",
                          metrics_listen="127.0.0.1:%d" % mport) as srv:
            qid = send(srv, ["wait@example.com"], "Subject: q\r\n\r\nx\r\n")
            wait_relayed(srv, 1, "deferred", 10)
            time.sleep(1.2)
            m = scrape(mport)
            check_eq(m.get("mxring_relay_queue_messages"), 1.0, "queue gauge")
            check_eq(m.get("mxring_relay_deferred_total"), 1.0, "deferred counter")
            check(m.get("mxring_relay_queue_bytes", 0) > 0, "bytes waiting")
            out = subprocess.run([h.Paths.spool_tool, "queue", srv.spool], capture_output=True,
                                 text=True, timeout=30)
            check(qid in out.stdout and "wait@example.com" in out.stdout and
                  "452 4.2.2 mailbox full" in out.stdout,
                  "mxring-spool queue shows the message: %s" % out.stdout)
            # SIGUSR1: tried again now, not in 60 s.
            n = len(hub.transactions)
            srv.signal(signal.SIGUSR1)
            srv.wait_log(r"retrying every waiting message now", 1, 5)
            deadline = time.monotonic() + 5
            while len(hub.transactions) == n and time.monotonic() < deadline:
                time.sleep(0.05)
            check(len(hub.transactions) > n, "SIGUSR1 tried the message again")


@suite.case
def crash_while_relaying():
    tmp = h.new_tmpdir("crash")
    with hubs.ScriptedHub() as hub:
        spool = os.path.join(tmp, "spool")
        acked = {}
        rng = random.Random()
        seed = rng.randrange(1 << 30)
        rng.seed(seed)
        print("# crash: seed %d" % seed)
        for rnd in range(5):
            srv = relay_server("smtp:[127.0.0.1]:%d" % hub.port, spool_dir=spool,
                               segment_size="1m")
            srv.start()
            ack = os.path.join(tmp, "ack%d.log" % rnd)
            p = subprocess.Popen([BENCH, "--server", srv.hostport(), "--connections",
                                  "4", "--messages", "3000", "--msgs-per-conn", "10",
                                  "--ack-log", ack, "--quiet", "--max-errors", "0",
                                  "--timeout", "5"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 2.0))  # a random moment of receiving and relaying
            srv.kill()
            p.wait(timeout=60)
            acked.update(hubs.read_acks(ack))
        with relay_server("smtp:[127.0.0.1]:%d" % hub.port, spool_dir=spool):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seen = {}
                for t in hub.transactions:
                    if t.state == "done" and t.body:
                        seq, ok = hubs.bench_sums(t.body)
                        check(ok, "a body arrived damaged")
                        seen[seq] = seen.get(seq, 0) + 1
                if all(s in seen for s in acked):
                    break
                time.sleep(0.5)
            missing = [s for s in acked if s not in seen]
            check(not missing, "%d of %d acknowledged messages lost: %s" %
                  (len(missing), len(acked), missing[:5]))
            dups = sum(k - 1 for k in seen.values() if k > 1)
            print("# crash: %d messages acknowledged in 5 rounds, %d arrived, %d duplicates" %
                  (len(acked), len(seen), dups))


if __name__ == "__main__":
    import sys
    BENCH = h.take_bench_arg(sys.argv)
    suite.main()
