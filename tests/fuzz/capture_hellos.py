#!/usr/bin/env python3
"""capture_hellos.py - writes the seed corpus of fuzz_hello: real ClientHellos.

Usage: tests/fuzz/capture_hellos.py  (needs the openssl command; writes
tests/fuzz/corpus/hello/)

A one-shot TCP server on 127.0.0.1 takes what a client sends first (its
ClientHello, as records) and closes. The clients are `openssl s_client` with
options that change what the certificate choice reads (versions, signature
algorithms, cipher suites, groups) and Python's ssl with its defaults. Two
seeds are made from a captured one: the same handshake message re-cut into
7-byte records (RFC 8446 5.1 lets a ClientHello span records), and its first
100 bytes (an input that ends inside the ClientHello). tests/unit/tls/
test_hello.c knows what each captured seed offers.
"""
import os
import socket
import ssl
import subprocess
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'corpus', 'hello')

OPENSSL = {
    'openssl-default': [],
    'openssl-tls12': ['-tls1_2'],
    'openssl-tls13': ['-tls1_3'],
    'openssl-tls13-rsa-pss': ['-tls1_3', '-sigalgs', 'RSA-PSS+SHA256'],
    'openssl-rsa-sigalgs': ['-sigalgs', 'RSA-PSS+SHA256:RSA+SHA256'],
    'openssl-tls12-rsa-suites': ['-tls1_2', '-cipher',
                                 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305'],
    'openssl-tls12-rsa-sigalgs': ['-tls1_2', '-sigalgs', 'RSA+SHA256:RSA-PSS+SHA256'],
    'openssl-tls12-ecdsa-only': ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256'],
    'openssl-tls13-p384-only': ['-tls1_3', '-sigalgs', 'ECDSA+SHA384:RSA-PSS+SHA256'],
    'openssl-tls12-nogroups-p256': ['-tls1_2', '-groups', 'X25519:P-384'],
    'openssl-tls12-noticket': ['-tls1_2', '-no_ticket'],
}


def first_flight(start_client):
    """Listens, runs start_client(port), returns the first records received."""
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(1)
    client = start_client(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.settimeout(2.0)
    data = b''
    try:
        while True:
            d = conn.recv(65536)
            if not d:
                break
            data += d
            if len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[6:9], 'big'):
                break  # the whole handshake message (one record here)
    except socket.timeout:
        pass
    conn.close()
    srv.close()
    client()
    return data


def openssl_client(args):
    def start(port):
        p = subprocess.Popen(['openssl', 's_client', '-connect', f'127.0.0.1:{port}',
                              '-servername', 'mx.example'] + args,
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)

        def stop():
            p.kill()
            p.wait()
        return stop
    return start


def python_client(port):
    def run():
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)),
                            server_hostname='mx.example')
        except (OSError, ssl.SSLError):
            pass
    t = threading.Thread(target=run)
    t.start()
    return t.join


def records(msg, size):
    """The handshake message msg cut into handshake records of size bytes."""
    out = b''
    for i in range(0, len(msg), size):
        frag = msg[i:i + size]
        out += bytes([22, 3, 1]) + len(frag).to_bytes(2, 'big') + frag
    return out


def save(name, data):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(data)
    print(f'{name}: {len(data)} bytes')


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, args in OPENSSL.items():
        save(name, first_flight(openssl_client(args)))
    save('python-ssl-default', first_flight(python_client))
    with open(os.path.join(OUT, 'openssl-default'), 'rb') as f:
        whole = f.read()
    msg = whole[5:5 + int.from_bytes(whole[3:5], 'big')]
    save('r-openssl-default-7-byte-records', records(msg, 7))
    save('r-openssl-default-cut-100', whole[:100])


if __name__ == '__main__':
    main()
