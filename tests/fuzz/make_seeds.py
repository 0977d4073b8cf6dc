#!/usr/bin/env python3
"""make_seeds.py - writes the hand-made seed corpora of the fuzz targets.

Usage: tests/fuzz/make_seeds.py  (from anywhere; writes tests/fuzz/corpus/)

corpus/session/  every golden transcript of tests/unit/smtp/transcripts as one
                 client byte stream (with the FH_* flags its #conf lines ask
                 for), a few under byte-sized feeds, plus sessions written here
corpus/command/  command-line streams for fuzz_command
corpus/body/     DATA/BDAT content for fuzz_body
corpus/addr/     paths for fuzz_addr
corpus/config/   configuration files for fuzz_config
The spool seeds (corpus/spool/) come from gen_spool_seeds (the real writer).
Files this script writes are named t-* / s-*; reproducers of bugs found by
fuzzing (crash-*, named by the bug) are kept as they are.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, 'corpus')
TRANSCRIPTS = os.path.join(HERE, '..', 'unit', 'smtp', 'transcripts')

# host.h FH_* flags
STARTTLS, BARE_LF, SMALL_MSG, FEW_RCPT, FEW_ERRORS, SMALL_OUT, LONG_LINES, BODY_FAIL = (
    1, 2, 4, 8, 16, 32, 64, 128)


def unescape(s):
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == '\\':
            n = s[i + 1]
            if n == 'x':
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            out += {'r': b'\r', 'n': b'\n', 't': b'\t', '\\': b'\\'}[n]
            i += 2
            continue
        out += c.encode('utf-8')
        i += 1
    return bytes(out)


def clean(d):
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith(('t-', 's-')):
            os.unlink(os.path.join(d, f))


def write(d, name, data):
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def session_hdr(flags=0, feeds=(0, 0, 0), verdicts=0, fail_bytes=0, end=0):
    return bytes([flags, feeds[0], feeds[1], feeds[2], verdicts & 0xff, verdicts >> 8,
                  fail_bytes, end])


def crlf(*lines):
    return b''.join(l.encode('utf-8') if isinstance(l, str) else l for l in
                    [x + ('\r\n' if isinstance(x, str) else b'\r\n') for x in lines])


def transcripts():
    """(name, flags, phases) of every golden transcript."""
    for fn in sorted(os.listdir(TRANSCRIPTS)):
        if not fn.endswith('.txt'):
            continue
        flags = 0
        phases = [b'']
        for line in open(os.path.join(TRANSCRIPTS, fn), encoding='utf-8'):
            line = line.rstrip('\n').rstrip('\r')
            if line == '#starttls':
                flags |= STARTTLS
            elif line.startswith('#conf bare_newline=reject'):
                flags |= BARE_LF
            elif line.startswith('#conf message_size_limit=100'):
                flags |= SMALL_MSG
            elif line.startswith('#conf recipient_limit'):
                flags |= FEW_RCPT
            elif line.startswith('#conf error_limit'):
                flags |= FEW_ERRORS
            elif line.startswith('#body_fail_after'):
                flags |= BODY_FAIL
            elif line == 'T:':
                phases.append(b'')
            elif line.startswith('C: ') or line == 'C:':
                phases[-1] += unescape(line[3:]) + b'\r\n'
            elif line.startswith('R: '):
                phases[-1] += unescape(line[3:])
        yield fn[:-4], flags, phases


def sessions(d):
    clean(d)
    for name, flags, phases in transcripts():
        first = len(phases[0]) if len(phases) > 1 else 0
        if first > 255:
            first = 0
        data = b''.join(phases)
        write(d, 't-' + name, session_hdr(flags, (first, 0, 0), fail_bytes=1) + data)
        if name in ('happy', 'pipelining', 'bdat', 'dotstuff', 'smuggle_lf_dot_lf',
                    'smuggle_crlf_dot_lf'):
            write(d, 't-' + name + '-bytes', session_hdr(flags, (1, 1, 1)) + data)
            write(d, 't-' + name + '-odd', session_hdr(flags, (7, 3, 13)) + data)
    ehlo = 'EHLO client.example'
    txn = ['MAIL FROM:<s@example.net>', 'RCPT TO:<r@example.com>']
    # Pipelined, two messages, the second by BDAT, and a message held by the host
    # while the client keeps talking.
    s = crlf(ehlo, *txn, 'DATA', 'Subject: a', '', '..dot', '.', *txn) + \
        b'BDAT 5\r\nhelloBDAT 2 LAST\r\n\r\n' + crlf('QUIT')
    write(d, 's-pipeline-hold', session_hdr(0, (0, 0, 0), end=4) + s)
    write(d, 's-pipeline-hold-split', session_hdr(0, (40, 9, 0), end=4 | 8) + s)
    # Small output buffer: many pipelined NOOPs block on a full output.
    write(d, 's-small-out', session_hdr(SMALL_OUT) + crlf(*(['NOOP'] * 120), 'QUIT'))
    write(d, 's-small-out-ehlo', session_hdr(SMALL_OUT | STARTTLS) +
          crlf(*([ehlo] * 12), 'HELP', 'QUIT'))
    # STARTTLS alone in a feed, a command pipelined behind it (dropped), then TLS.
    pre = crlf(ehlo, 'STARTTLS', 'NOOP')
    write(d, 's-starttls', session_hdr(STARTTLS, (len(pre), 0, 0)) + pre +
          crlf(ehlo, 'STARTTLS', *txn, 'DATA', 'tls body', '.', 'QUIT'))
    # Failing verdicts everywhere, and a resume that fails.
    write(d, 's-verdicts', session_hdr(0, verdicts=0xb7e3) +
          crlf(ehlo, ehlo, *txn, *txn, 'DATA', 'x', '.', *txn, 'DATA', 'y', '.', 'QUIT'))
    # Body hook failing in DATA and BDAT; size limit in both.
    body = 'x' * 70
    write(d, 's-body-fail', session_hdr(BODY_FAIL, fail_bytes=4) +
          crlf(ehlo, *txn, 'DATA', body, body, '.', *txn) + b'BDAT 100 LAST\r\n' +
          b'y' * 100 + crlf('QUIT'))
    write(d, 's-oversize', session_hdr(SMALL_MSG) +
          crlf(ehlo, *txn, 'DATA', *([body] * 5), '.', *txn) + b'BDAT 300\r\n' +
          b'z' * 300 + b'BDAT 1 LAST\r\nz' + crlf('QUIT'))
    # Timeout and shutdown endings inside DATA and while a message is deferred.
    write(d, 's-timeout-data', session_hdr(0, end=1) + crlf(ehlo, *txn, 'DATA', 'partial'))
    write(d, 's-shutdown-wait', session_hdr(0, end=2 | 4 | 8) +
          crlf(ehlo, *txn, 'DATA', 'done', '.'))
    # Long lines: past the limit, and accepted with command_line_limit 1000.
    long_rcpt = 'RCPT TO:<' + 'a' * 60 + '@' + '.'.join(['b' * 60] * 4) + '.example.com>'
    write(d, 's-long-lines', session_hdr(LONG_LINES) +
          crlf(ehlo, 'NOOP ' + 'n' * 900, 'NOOP ' + 'm' * 1200, txn[0], long_rcpt, 'QUIT'))
    # NUL, 8-bit and bare CR in commands; SMTPUTF8 addresses.
    write(d, 's-bytes', session_hdr(0) +
          b'EHLO a\x00b\r\nEHLO \xc3\xa9\r\nNOOP\rx\r\nMAIL FROM:<\xc3\xa9@example.net> SMTPUTF8'
          b' BODY=8BITMIME SIZE=100\r\nRCPT TO:<\xc3\xa9@example.com>\r\nRSET\r\nQUIT\r\n')


def commands(d):
    clean(d)
    pick = ('happy', 'mail_syntax', 'params', 'relay', 'null_sender', 'utf8', 'size_param',
            'sequence', 'misc', 'bad_char', 'starttls', 'bdat_errors', 'rcpt_limit',
            'helo_long', 'line_too_long', 'ehlo_mid_txn', 'rset')
    for name, flags, phases in transcripts():
        if name in pick:
            f = (1 if flags & STARTTLS else 0) | (16 if flags & (FEW_RCPT | FEW_ERRORS) else 0)
            write(d, 't-' + name, bytes([f]) + b''.join(phases))
    write(d, 's-in-txn', bytes([8]) + crlf('RCPT TO:<@a.example,@b.example:c@example.com>',
                                            'RCPT TO:<"q u"@example.com>',
                                            'RCPT TO:<x@[192.0.2.1]>', 'DATA', 'BDAT 3',
                                            'BDAT x', 'BDAT 99999999999999999999 LAST'))
    write(d, 's-data-ok', bytes([8 | 32]) + crlf('DATA', 'body', '.', 'QUIT'))
    write(d, 's-params', bytes([2]) + crlf(
        'MAIL FROM:<a@example.net> SIZE=18446744073709551615',
        'MAIL FROM:<a@example.net> BODY=7BIT SMTPUTF8 FOO=bar', 'MAIL FROM:a@example.net',
        'MAIL FROM: <a@example.net>', 'MAIL FROM:<a@example.net>x', 'VRFY', 'VRFY x',
        'HELP me', 'STARTTLS', 'QUIT now'))


def bodies(d):
    clean(d)
    data = [
        ('plain', 0, b'Subject: x\r\n\r\nhello\r\n.\r\n'),
        ('dotstuff', 0, b'..a\r\n.\r\n..\r\n...\r\n.b\r\n.\r\nafter'),
        ('bare-lf', 0, b'a\nb\n.\nc\r\n.\n.\r\n'),
        ('smuggle', 0, b'x\r\n.\nMAIL FROM:<a@b>\r\n\n.\r\nRCPT\r\n.\r\n'),
        ('cr', 0, b'\r.\r\r\n.\r\rx\r\n.\rx\r\n.\r\n'),
        ('held-dot', 0, b'a\r\n.'),
        ('held-dot-cr', 0, b'a\r\n.\r'),
        ('empty', 0, b'.\r\n'),
        ('fail', 2, b'one\r\n..two\r\nthree\nfour\r\n.\r\n'),
        ('bdat', 1, b'a\nb\r\n.\r\n\r\r\n\n'),
        ('bdat-fail', 3, b'x\ny\nz\n'),
        ('binary', 0, bytes(range(256)) + b'\r\n.\r\n'),
    ]
    for i, (name, mode, content) in enumerate(data):
        write(d, 's-' + name, bytes([mode, 17 * i + 3, 2]) + content)


def addrs(d):
    clean(d)
    data = [
        ('plain', 0, b'<user@example.com>'),
        ('null', 1, b'<>'),
        ('null-refused', 0, b'<>'),
        ('bare', 0, b'user@example.com SIZE=10'),
        ('spaces', 0, b'  <a.b.c@sub.example.org> BODY=8BITMIME'),
        ('route', 0, b'<@a.example,@b.example:u@example.com>'),
        ('quoted', 0, b'<"a b\\"c@d"@example.com>'),
        ('literal4', 0, b'<u@[192.0.2.1]>'),
        ('literal6', 0, b'<u@[IPv6:2001:db8::1]>'),
        ('literal-tag', 0, b'<u@[x-tag:content]>'),
        ('routing', 0, b'<a%b!c@example.com>'),
        ('utf8', 2, '<\u00e9t\u00e9@\u00e9xample.com>'.encode('utf-8')),
        ('utf8-refused', 0, '<\u00e9@example.com>'.encode('utf-8')),
        ('long-local', 0, b'<' + b'a' * 65 + b'@example.com>'),
        ('long-label', 0, b'<a@' + b'b' * 64 + b'.com>'),
        ('long-path', 0, b'<' + b'a' * 64 + b'@' + b'.'.join([b'c' * 63] * 4) + b'>'),
        ('subdomain', 0, b'<x@A.Example.ORG>'),
        ('exact', 0, b'<x@EXAMPLE.com>'),
        ('bad', 0, b'<a..b@example.com>'),
    ]
    for name, flags, path in data:
        write(d, 's-' + name, bytes([flags]) + path)


def configs(d):
    clean(d)
    with open(os.path.join(HERE, '..', '..', 'tools', 'mxring.conf'), 'rb') as f:
        write(d, 's-mxring.conf', f.read())
    write(d, 's-all-keys', b'''# every key
listen = 127.0.0.1:25, [::1]:25
listen = 0.0.0.0:2525
myhostname = mx.example.com
accept_domains = example.com,
  .example.org example.net
spool_dir = /var/spool/mxring
spool_format = maildir
segment_size = 64m
segment_max_age = 10m
shards = 4
writers = 2
message_size_limit = 10m
recipient_limit = 1000
command_line_limit = 1k
error_limit = 20
max_connections = 20000
command_timeout = 5m
data_timeout = 1h
shutdown_timeout = 0
bare_newline = reject
recv_buffer_size = 16k
recv_buffers = 1024
ring_size = 1024
body_flush_bytes = 256k
pin_shards = no
recipient_overshoot_limit = 500
junk_command_limit = 50
metrics_listen = [::1]:9125
connection_limit_exceptions = 10.0.0.0/8, [2001:db8::]/32 ::1
''')
    write(d, 's-errors', b'''listen = 127.0.0.1
listen = [::1:25
myhostname = -bad-
accept_domains = a..b
shards = lots
recv_buffers = 3
unknown = 1
 continuation
novalue
segment_size = 99999999999999999999999g
spool_dir = a\x01b
''')
    write(d, 's-check', b'recv_buffer_size = 1024\ncommand_line_limit = 4096\n'
          b'shards = 8\nmax_connections = 4\nbody_flush_bytes = 1024\n')
    write(d, 's-continuation', b'accept_domains =\n# comment inside\n\texample.com\n'
          b'\n  example.net\r\nlisten = 127.0.0.1:1\nlisten = 127.0.0.1:1\n')
    write(d, 's-empty-domains', b'accept_domains =\nshards = AUTO\nspool_format = SEGMENT\n')


def main():
    sessions(os.path.join(CORPUS, 'session'))
    commands(os.path.join(CORPUS, 'command'))
    bodies(os.path.join(CORPUS, 'body'))
    addrs(os.path.join(CORPUS, 'addr'))
    configs(os.path.join(CORPUS, 'config'))


if __name__ == '__main__':
    sys.exit(main())
