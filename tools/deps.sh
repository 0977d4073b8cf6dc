#!/usr/bin/env bash
# deps.sh - installs the Debian 12 packages mxring needs that are missing.
#
#   tools/deps.sh          what building and running needs
#   tools/deps.sh --test   that, plus the test tools and real clients
#   tools/deps.sh --bench  that, plus what bench/compare, bench/scale and
#                          bench/screening.py use (Postfix
#                          smtp-sink/smtpd/smtp-source as peers, gnuplot for
#                          the plot, unbound as the DNS list server). Haraka, the optional peer,
#                          is not a Debian package: bench/compare installs it
#                          with npm into ~/.cache/mxring/haraka when npm works.
#
# Uses apt-get (through sudo when not root). Postfix is preseeded with
# "No configuration" so that installing it (for smtp-source and smtp-sink)
# asks nothing and starts no daemon.
set -euo pipefail

pkgs=(gcc pkg-config meson ninja-build liburing-dev libjemalloc-dev libc-ares-dev openssl)
bench_pkgs=(python3 postfix gnuplot-nox unbound)
case "${1:-}" in
--test)
	# gnuplot-nox: the test of bench/compare --quick checks its plot too.
	# libfuse3-dev, fuse3: tests/tools/faultfs (disk faults under the spool).
	# python3-prometheus-client: its parser reads the metrics page;
	# prometheus: its promtool lints it.
	# libnet-ssleay-perl: swaks --tls (a Recommends of swaks, which
	# --no-install-recommends below skips).
	# systemd: systemd-analyze checks tools/mxring.service (nothing is started);
	# man-db: the manual pages are rendered with man --warnings.
	# dpkg-dev, debhelper, build-essential, lintian: the Debian package is
	# built (dpkg-buildpackage checks build-essential) and checked;
	# ssl-cert, adduser: what it depends on, for dpkg -i.
	# unbound: tests/integration/dnsserver.py runs a private one (its own
	# config, a free loopback port) as the DNS list server; its postinst may
	# start the system daemon on port 53 (where there is an init system; it
	# ignores a failure), which the tests neither use nor mind.
	# dovecot-core, dovecot-lmtpd: tests/integration/hubs.py runs a private
	# Dovecot (its own config, base_dir and Maildirs in the test's folder)
	# as the LMTP hub the relay delivers to; as with unbound, its postinst
	# may start the system daemon (LMTP on a unix socket under /run only,
	# with no imapd or pop3d installed), which the tests neither use nor mind.
	# haproxy: tests/integration/test_edge_pair.py runs a private one (its
	# own config in the test's folder, in the foreground) in front of two
	# nodes; its postinst may start the system daemon, which the tests
	# neither use nor mind.
	pkgs+=(libcmocka-dev python3 swaks libnet-ssleay-perl postfix testssl.sh gnuplot-nox
		libfuse3-dev fuse3 python3-prometheus-client prometheus systemd man-db
		dpkg-dev debhelper build-essential lintian ssl-cert adduser unbound
		dovecot-core dovecot-lmtpd haproxy)
	;;
--bench)
	pkgs+=("${bench_pkgs[@]}")
	;;
"") ;;
*)
	echo "usage: tools/deps.sh [--test | --bench]" >&2
	exit 2
	;;
esac

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
	echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
fi
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
