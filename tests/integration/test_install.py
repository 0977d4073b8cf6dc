#!/usr/bin/env python3
"""
test_install.py - what `meson install` puts where, and the manual pages.

Checked: `meson install --destdir` of the build folder (the one --mxring
lies in) installs mxring in sbin, mxring-spool and mxring-bench in bin, the
configuration as etc/mxring/mxring.conf, mxring.service in lib/systemd/system
and the four manual pages; each page renders with `man --warnings` without a
warning; mxring.conf(5) describes exactly the keys `mxring -n` prints; the
installed configuration reads (`mxring -n`) with user = mxring, the spool in
/var/spool/mxring and port 25.
"""

import os
import re
import subprocess

import harness as h

suite = h.Suite("install")
check, check_eq = h.check, h.check_eq

WANT = {
    "sbin/mxring": "mxring",
    "bin/mxring-spool": "mxring-spool",
    "bin/mxring-bench": "mxring-bench",
    "etc/mxring/mxring.conf": "configuration",
    "lib/systemd/system/mxring.service": "unit",
    "share/man/man8/mxring.8": "mxring(8)",
    "share/man/man5/mxring.conf.5": "mxring.conf(5)",
    "share/man/man1/mxring-spool.1": "mxring-spool(1)",
    "share/man/man1/mxring-bench.1": "mxring-bench(1)",
}


def install():
    build = os.path.dirname(os.path.dirname(h.Paths.mxring))
    check(os.path.exists(os.path.join(build, "build.ninja")),
          "%s is not a meson build folder" % build)
    dest = h.new_tmpdir("destdir")
    p = h.run_cmd(["meson", "install", "-C", build, "--destdir", dest, "--no-rebuild",
                   "--quiet"], 300)
    check_eq(p.returncode, 0, "meson install (stderr %r)" % p.stderr[-2000:])
    found = {}
    for root, _, files in os.walk(dest):
        for f in files:
            path = os.path.join(root, f)
            for suffix in WANT:
                if path.endswith("/" + suffix):
                    found[suffix] = path
    missing = [WANT[s] + " (" + s + ")" for s in WANT if s not in found]
    check(not missing, "not installed: %s" % ", ".join(missing))
    return found


def man_keys(page):
    """The keys mxring.conf(5) describes: the .TP entries of its KEYS section."""
    with open(page) as f:
        text = f.read()
    keys_section = text.split(".SH KEYS", 1)[1].split(".SH ", 1)[0]
    keys = set()
    for entry in keys_section.split(".TP\n")[1:]:
        first = entry.splitlines()[0]
        keys.update(re.findall(r"\\fB([a-z_0-9]+)\\fR", first.split(" (default:")[0]))
    return keys


@suite.case
def installs_binaries_configuration_unit_and_pages():
    found = install()
    h.require_program("/usr/bin/man")
    for suffix in WANT:
        if "/man/" not in suffix:
            continue
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
        p = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", found[suffix]],
                           capture_output=True, env=env, timeout=60)
        check_eq(p.returncode, 0, "man -l %s (stderr %r)" % (suffix, p.stderr))
        check_eq(p.stderr.decode(), "", "warnings rendering %s" % suffix)
        check(len(p.stdout) > 500, "%s renders to %d bytes" % (suffix, len(p.stdout)))
    # mxring.conf(5) and mxring -n: the same keys.
    p = h.run_cmd([h.Paths.mxring, "-n"], 20)
    printed = set(re.findall(r"(?m)^([a-z_0-9]+) =", p.stdout.decode()))
    check(len(printed) > 30, "mxring -n printed %d keys" % len(printed))
    paged = man_keys(found["share/man/man5/mxring.conf.5"])
    check_eq(sorted(paged - printed), [], "keys in mxring.conf(5) that mxring -n does not print")
    check_eq(sorted(printed - paged), [], "keys mxring -n prints that mxring.conf(5) lacks")
    # The installed configuration is valid and says what a service needs.
    p = h.run_cmd([found["sbin/mxring"], "-c", found["etc/mxring/mxring.conf"], "-n"], 20)
    check_eq(p.returncode, 0, "mxring -n of the installed configuration (stderr %r)" % p.stderr)
    eff = dict(re.findall(r"(?m)^([a-z_0-9]+) = ?(.*)$", p.stdout.decode()))
    check_eq(eff.get("user"), "mxring", "user")
    check_eq(eff.get("spool_dir"), "/var/spool/mxring", "spool_dir")
    check("0.0.0.0:25" in eff.get("listen", ""), "listen = %r" % eff.get("listen"))
    with open(found["lib/systemd/system/mxring.service"]) as f:
        unit = f.read()
    check("ExecStart=/usr/sbin/mxring -c /etc/mxring/mxring.conf" in unit, "ExecStart")


if __name__ == "__main__":
    suite.main()
