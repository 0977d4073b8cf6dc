#!/usr/bin/env python3
"""
test_service.py - running under a service manager: systemd's Type=notify
protocol (sd_notify(3)), checked with the test's own datagram socket named
by NOTIFY_SOCKET, as systemd would pass it.

Checked: tools/mxring.service passes `systemd-analyze verify` (on a copy
whose ExecStart names the built binary, the one thing a checkout lacks) and
`systemd-analyze security --offline=true` rates it below 2.0 ("OK");
READY=1 arrives once the ready line is logged and the listener
answers (not before: a connection made at READY=1 gets the greeting);
SIGHUP gives RELOADING=1 with MONOTONIC_USEC, then READY=1; SIGTERM gives
STOPPING=1 before the process exits; NOTIFY_SOCKET in the abstract namespace
("@name") works too; a NOTIFY_SOCKET that names nothing is reported and the
receiver runs anyway.
"""

import os
import re
import signal
import socket
import time

import harness as h

suite = h.Suite("service")
check, check_eq = h.check, h.check_eq


class Manager:
    """The service manager's end: a datagram socket mxring notifies."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.name = "@mxring-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + self.name[1:])
        else:
            self.dir = h.new_tmpdir("notify")
            self.name = os.path.join(self.dir, "notify")
            self.sock.bind(self.name)

    def next(self, timeout=10.0):
        """The next message as {key: value}, or None after timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        out = {}
        for line in data.decode().splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def close(self):
        self.sock.close()


def check_cycle(abstract):
    m = Manager(abstract)
    try:
        srv = h.Server({}, env={"NOTIFY_SOCKET": m.name})
        with srv:
            msg = m.next()
            check(msg is not None, "no notification within 10 s; log:\n%s" % srv.log_tail())
            check_eq(msg.get("READY"), "1", "first notification %r" % msg)
            check("ready" in srv.log(), "READY=1 before the ready line")
            c = srv.client()  # greets: the listener is up at READY=1
            c.quit()
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            srv.signal(signal.SIGHUP)
            msg = m.next()
            check(msg is not None and msg.get("RELOADING") == "1",
                  "after SIGHUP: %r (want RELOADING=1)" % msg)
            usec = int(msg.get("MONOTONIC_USEC", "0"))
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            check(before <= usec <= after, "MONOTONIC_USEC %d not in [%d, %d]"
                  % (usec, before, after))
            msg = m.next()
            check_eq(msg, {"READY": "1"}, "after the reload")
            srv.signal(signal.SIGTERM)
            msg = m.next()
            check_eq(msg, {"STOPPING": "1"}, "after SIGTERM")
            check_eq(srv.wait_exit(), 0, "exit status")
            srv.proc = None
        check_eq(m.next(timeout=0.2), None, "a notification after STOPPING=1")
    finally:
        m.close()


UNIT = os.path.join(h.REPO, "tools", "mxring.service")
ANALYZE = "/usr/bin/systemd-analyze"


@suite.case
def unit_verifies_and_is_confined():
    h.require_program(ANALYZE)
    d = h.new_tmpdir("unit")
    with open(UNIT) as f:
        text = f.read()
    check("ExecStart=/usr/sbin/mxring " in text, "ExecStart is not /usr/sbin/mxring")
    check(re.search(r"(?m)^Type=notify$", text), "Type is not notify")
    check(re.search(r"(?m)^ExecReload=/bin/kill -HUP \$MAINPID$", text), "no ExecReload")
    check(re.search(r"(?m)^LimitNOFILE=1048576$", text), "LimitNOFILE")
    copy = os.path.join(d, "mxring.service")
    with open(copy, "w") as f:
        f.write(text.replace("ExecStart=/usr/sbin/mxring ", "ExecStart=%s " % h.Paths.mxring))
    p = h.run_cmd([ANALYZE, "verify", copy], 60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    # Documentation= names man pages that only an installed package has.
    rest = [l for l in out.splitlines() if l.strip() and "Command 'man " not in l]
    check_eq(rest, [], "systemd-analyze verify")
    p = h.run_cmd([ANALYZE, "security", "--offline=true", copy], 60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    m = re.search(r"Overall exposure level for mxring.service: ([0-9.]+)", out)
    check(m, "no exposure level in:\n%s" % out[-2000:])
    check(float(m.group(1)) < 2.0, "exposure %s, want below 2.0:\n%s" % (m.group(1), out))


@suite.case
def notify_ready_reloading_stopping():
    check_cycle(abstract=False)


@suite.case
def notify_abstract_socket():
    check_cycle(abstract=True)


@suite.case
def notify_socket_missing_is_reported():
    d = h.new_tmpdir("nosock")
    with h.Server({}, env={"NOTIFY_SOCKET": os.path.join(d, "absent")}) as srv:
        check("NOTIFY_SOCKET %s" % os.path.join(d, "absent") in srv.log(),
              "no message about the socket:\n%s" % srv.log_tail())
        c = srv.client()
        c.quit()
        srv.stop()


if __name__ == "__main__":
    suite.main()
