#!/usr/bin/env bash
# mxring-cert.sh - makes a self-signed ECDSA P-256 certificate for testing
# and for tools/run.sh: DIR/cert.pem and DIR/key.pem (key mode 0600), and a
# ticket key file DIR/ticket.keys. Existing files are kept unless --force.
#
#   tools/mxring-cert.sh DIR [HOSTNAME] [--force]
set -euo pipefail
force=0
args=()
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	*) args+=("$a") ;;
	esac
done
dir=${args[0]:?usage: mxring-cert.sh DIR [HOSTNAME] [--force]}
host=${args[1]:-mx.localhost}
mkdir -p "$dir"
if [ "$force" -eq 0 ] && [ -s "$dir/cert.pem" ] && [ -s "$dir/key.pem" ] && [ -s "$dir/ticket.keys" ]; then
	exit 0
fi
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
	-subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
	-keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
# One ticket key: 16 bytes of name and 32 of key, in hex. To rotate, put a
# new line first and keep the old ones after it until their tickets expire.
openssl rand -hex 48 > "$dir/ticket.keys"
echo "$dir/cert.pem $dir/key.pem $dir/ticket.keys"
