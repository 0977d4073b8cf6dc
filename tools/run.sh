#!/usr/bin/env bash
# run.sh - installs what is missing, builds, and runs mxring in the
# foreground on 127.0.0.1:2525 with its spool in ./spool and STARTTLS with a
# self-signed certificate in ./run/tls (Ctrl-C stops it).
# Extra arguments go to mxring, e.g. tools/run.sh -o shards=1
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
tools/deps.sh
tools/wolfssl-build.sh >/dev/null
# Reconfigured every time: a new wolfSSL build (another prefix) is picked up.
setup=(setup)
[ -f build/build.ninja ] && setup+=(--reconfigure)
meson "${setup[@]}" build -Dwolfssl=accelerated >/dev/null
ninja -C build >/dev/null
# A self-signed certificate and a ticket key for STARTTLS, made once.
tools/mxring-cert.sh "$top/run/tls" mx.localhost >/dev/null
# As root (a development box): allowed; a production set-up names user.
root_ok=()
[ "$(id -u)" = 0 ] && root_ok=(-o allow_root=yes)
exec build/core/mxring -c tools/mxring.conf -o "spool_dir=$top/spool" "${root_ok[@]}" \
	-o "tls_cert_file=$top/run/tls/cert.pem" -o "tls_key_file=$top/run/tls/key.pem" \
	-o "tls_ticket_key_file=$top/run/tls/ticket.keys" "$@"
