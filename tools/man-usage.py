#!/usr/bin/env python3
"""man-usage.py - a manual page from a program's own usage text.

mxring-spool and mxring-bench describe every command and option in their
--help output, which their tests keep true; the manual page is made from it
at build time (as help2man does), so the two cannot drift: NAME from the
arguments, SYNOPSIS from the usage line, the first paragraph as DESCRIPTION,
the rest verbatim (preformatted) as OPTIONS.

    tools/man-usage.py PROGRAM SECTION VERSION SUMMARY SEE_ALSO -- BINARY
        runs BINARY --help (its output and errors) and writes the page to stdout
"""
import subprocess
import sys


def esc(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return ("\\&" + text) if text[:1] in (".", "'") else text


def main():
    if len(sys.argv) != 8 or sys.argv[6] != "--":
        sys.exit("usage: man-usage.py PROGRAM SECTION VERSION SUMMARY SEE_ALSO -- BINARY")
    prog, section, version, summary, see = sys.argv[1:6]
    p = subprocess.run([sys.argv[7], "--help"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        sys.exit("man-usage.py: %s --help exited with %d" % (sys.argv[7], p.returncode))
    lines = (p.stdout + p.stderr).rstrip("\n").splitlines()
    if not lines or not lines[0].startswith("usage: "):
        sys.exit("man-usage.py: the text does not start with 'usage: '")
    synopsis = lines[0][len("usage: "):]
    rest = lines[1:]
    while rest and not rest[0].strip():
        rest.pop(0)
    desc = []
    if rest and not rest[0].startswith(" "):
        while rest and rest[0].strip():
            desc.append(rest.pop(0).strip())
        while rest and not rest[0].strip():
            rest.pop(0)
    out = ['.TH %s %s "" "mxring %s" "mxring"' % (prog.upper().replace("-", "\\-"), section,
                                                version),
           ".SH NAME", "%s \\- %s" % (prog.replace("-", "\\-"), esc(summary)),
           ".SH SYNOPSIS", esc(synopsis)]
    if desc:
        out += [".SH DESCRIPTION", esc(" ".join(desc))]
    out += [".SH OPTIONS", ".nf"]
    out += [esc(l) if l.strip() else "" for l in rest]
    out += [".fi", ".SH SEE ALSO"]
    refs = [r for r in see.split(",") if r]
    for i, r in enumerate(refs):
        name, _, sec = r.partition("(")
        out.append(".BR %s (%s%s" % (name.replace("-", "\\-"), sec, "," if i + 1 < len(refs) else ""))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
