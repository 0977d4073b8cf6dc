#!/usr/bin/env python3
"""man-conf.py - writes mxring.conf(5) from docs/configuration.md.

The reference of the keys lives in one place, the Markdown page; the manual
page is made from it at build time: its file syntax, every key of the Keys
table with its default and (from the Value ranges table) its range, and the
checks between keys. tests/integration/test_install.py checks that the page
names the same keys as `mxring -n` prints.

    tools/man-conf.py docs/configuration.md VERSION > mxring.conf.5
"""
import re
import sys


def roff_text(md):
    """Inline Markdown (code, links, emphasis) to roff; roff's specials escaped."""
    md = md.replace("\\", "\\e")
    md = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", md)  # links: their text
    md = re.sub(r"`([^`]+)`", lambda m: "\\fB" + m.group(1) + "\\fR", md)
    md = re.sub(r"\*\*([^*]+)\*\*", lambda m: "\\fB" + m.group(1) + "\\fR", md)
    md = re.sub(r"\*([^*]+)\*", lambda m: "\\fI" + m.group(1) + "\\fR", md)
    md = md.replace("-", "\\-")
    return md


def line(text):
    """A roff text line: one starting with . or ' would be a request."""
    return ("\\&" + text) if text[:1] in (".", "'") else text


def sections(md):
    out, name = {}, None
    for l in md.splitlines():
        m = re.match(r"^## (.+)$", l)
        if m:
            name = m.group(1).strip()
            out[name] = []
        elif name:
            out[name].append(l)
    return out


def table(lines):
    rows = []
    for l in lines:
        if l.startswith("|") and not l.startswith("|---"):
            cells = [c.strip() for c in l.strip().strip("|").split("|")]
            rows.append(cells)
    return rows[1:]  # without the header


def key_names(cell):
    return re.findall(r"`([a-z_0-9]+)`", cell)


def paragraphs(lines):
    """Paragraphs and bullet items of a Markdown section, as roff."""
    out, cur, bullet = [], [], False

    def flush():
        if cur:
            out.append(".IP \\(bu 2" if bullet else ".PP")
            out.append(line(roff_text(" ".join(cur))))
    for l in lines:
        if l.startswith("|"):
            continue
        if not l.strip():
            flush()
            cur, bullet = [], False
        elif l.startswith("- "):
            flush()
            cur, bullet = [l[2:].strip()], True
        else:
            cur.append(l.strip())
    flush()
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: man-conf.py docs/configuration.md VERSION")
    with open(sys.argv[1]) as f:
        sec = sections(f.read())
    ranges = {}
    for cells in table(sec["Value ranges"]):
        for k in key_names(cells[0]):
            ranges[k] = cells[1]
    out = [
        '.TH MXRING.CONF 5 "" "mxring %s" "File Formats"' % sys.argv[2],
        ".SH NAME",
        "mxring.conf \\- configuration of the mxring SMTP receiver",
        ".SH SYNOPSIS",
        ".B /etc/mxring/mxring.conf",
        ".PP",
        ".B mxring \\-c /etc/mxring/mxring.conf",
        "[\\fB\\-o\\fR \\fIkey\\fB=\\fIvalue\\fR]... [\\fB\\-n\\fR | \\fB\\-\\-check\\fR]",
        ".SH DESCRIPTION",
        "The file follows the habit of Postfix's main.cf; \\fBmxring \\-n\\fR prints",
        "every key with its effective value.",
    ]
    out += paragraphs(sec["File syntax"])
    out.append(".SH KEYS")
    for cells in table(sec["Keys"]):
        names = key_names(cells[0])
        default = cells[1] if cells[1] else "none"
        out.append(".TP")
        out.append(line(", ".join("\\fB%s\\fR" % n.replace("_", "_") for n in names)
                        + " (default: " + roff_text(default) + ")"))
        out.append(line(roff_text(cells[2])))
        rs = [ranges[n] for n in names if n in ranges]
        if rs:
            out.append(".br")
            out.append(line("Range: " + roff_text(rs[0]) + "."))
    out.append(".SH CHECKS BETWEEN KEYS")
    out += paragraphs(sec["Checks between keys"])
    out += [".SH FILES",
            ".TP", ".I /etc/mxring/mxring.conf", "the configuration mxring.service starts with",
            ".SH SEE ALSO",
            ".BR mxring (8),",
            ".BR mxring\\-spool (1),",
            ".BR mxring\\-bench (1)"]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
