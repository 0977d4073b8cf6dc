#!/usr/bin/env bash
# clean-room.sh - the README's two commands on a fresh, minimal Debian 12.
#
# Builds a Debian 12 root with debootstrap --variant=minbase (the mirror of
# this machine's own apt sources), copies a clean clone of this checkout's
# HEAD into it, and there runs the README's two commands in order:
# tools/run.sh until the receiver answers (a message over STARTTLS with
# Python's smtplib must get its 250), then tools/test.sh, whose last line
# ("N passed, N failed, N skipped") it prints. Every package a machine got by
# hand is missing there, so a missing install step shows up here.
#
#   tools/clean-room.sh [--keep] [--dir DIR] [-- test.sh arguments]
#   MXRING_TEST_SANITIZE=0 tools/clean-room.sh   skips the sanitizer half
#
# Needs root (debootstrap, chroot, mounts) and installs debootstrap if it is
# missing. The mounts (/proc, /sys, /dev) live in a private mount namespace
# (unshare), so they go away with it whatever happens. The root is deleted at
# the end unless --keep; its logs are copied out first (run.log, test.log in
# DIR.logs/). Exit status: test.sh's, or 1 when an earlier step failed.
#
# Only committed work is tested: the clone is of HEAD. Network: the chroot
# shares this machine's network (loopback tests, apt); nothing else.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
keep=0
dir=""
while [ $# -gt 0 ]; do
	case "$1" in
	--keep) keep=1 ;;
	--dir) dir="${2:?--dir needs a folder}"; shift ;;
	--) shift; break ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "clean-room: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
log() { echo "clean-room: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap, chroot, mount)"; exit 1; }
if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
fi

# The system's Debian entries (one-line lists and deb822 .sources), as
# "URI SUITE" lines: the mirror for debootstrap, and the chroot's sources.
debian_entries() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk '$1 == "deb" { u = 2; if ($2 ~ /^\[/) { u = 3; while ($u !~ /\]$/ && u < NF) u++; u++ }
			print $u, $(u + 1), $(u + 2) }' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk 'BEGIN { RS = ""; FS = "\n" }
			{ t = ""; u = ""; s = ""; c = ""
			  for (i = 1; i <= NF; i++) {
				if ($i ~ /^Types:/) t = $i
				else if ($i ~ /^URIs:/) u = substr($i, 6)
				else if ($i ~ /^Suites:/) s = substr($i, 8)
				else if ($i ~ /^Components:/) c = substr($i, 12)
			  }
			  if (t !~ /deb( |$)/) next
			  n = split(u, us, " "); m = split(s, ss, " ")
			  for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) print us[a], ss[b], c }' "$f"
	done
}
entries=$(debian_entries | awk '$2 ~ /^bookworm/')
mirror=$(echo "$entries" | awk '$2 == "bookworm" { print $1; exit }')
mirror=${mirror:-http://deb.debian.org/debian}

if [ -z "$dir" ]; then
	dir=$(mktemp -d /var/tmp/mxring-clean-room.XXXXXX)
else
	mkdir -p "$dir"
fi
logs="$dir.logs"
mkdir -p "$logs"
cleanup() {
	cp -f "$dir/root/run.log" "$dir/root/test.log" "$logs/" 2>/dev/null || true
	if [ "$keep" -eq 0 ]; then
		rm -rf --one-file-system "$dir"
	else
		log "kept $dir"
	fi
	log "logs in $logs"
}
trap cleanup EXIT

log "debootstrap --variant=minbase bookworm $dir $mirror"
start=$(date +%s)
debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$logs/debootstrap.log" 2>&1 ||
	{ log "debootstrap failed (see $logs/debootstrap.log)"; exit 1; }
# mktemp -d made the root 0700; a Debian root is 0755, and the tests that
# drop to nobody (test_priv, test_package) must be able to walk it.
chmod 0755 "$dir"
log "root made in $(($(date +%s) - start)) s"
# The same suites as this machine (updates, security), nothing else.
echo "$entries" | awk '{ $3 = ($3 == "" ? "main" : $3); print "deb", $0 }' >"$dir/etc/apt/sources.list"
cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
git clone -q --no-local "$top" "$dir/root/mxring"
log "testing $(git -C "$top" log -1 --format='%h %s')"

cat >"$dir/root/clean-room-inner.sh" <<'INNER'
#!/bin/bash
set -u
export HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd /root/mxring
echo "== tools/run.sh (until the receiver answers)" >&2
tools/run.sh >/root/run.log 2>&1 &
pid=$!
for _ in $(seq 1 1800); do
	grep -q "mxring: ready " /root/run.log && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 1
done
if ! grep -q "mxring: ready " /root/run.log; then
	echo "clean-room: tools/run.sh did not start the receiver:" >&2
	tail -n 30 /root/run.log >&2
	kill "$pid" 2>/dev/null
	exit 1
fi
python3 - <<'PY' || { kill "$pid"; tail -n 20 /root/run.log >&2; exit 1; }
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", 2525, local_hostname="clean-room.example", timeout=30)
s.starttls(context=ctx)
s.sendmail("clean-room@example.com", ["postmaster@example.com"],
           b"Subject: clean room\r\n\r\nThe README's first command works.\r\n")
s.quit()
print("clean-room: the receiver of tools/run.sh accepted a message over STARTTLS")
PY
kill "$pid"
wait "$pid"
echo "== tools/test.sh" >&2
tools/test.sh "$@" 2>&1 | tee /root/test.log | grep -E "^(Ok|Fail|Skipped|Timeout):|^not ok|passed, .* failed"
exit "${PIPESTATUS[0]}"
INNER
chmod +x "$dir/root/clean-room-inner.sh"

set +e
unshare --mount --propagation private bash -c '
	set -e
	d=$1; shift
	mount -t proc proc "$d/proc"
	mount --rbind /sys "$d/sys"
	mount --rbind /dev "$d/dev"
	exec chroot "$d" /root/clean-room-inner.sh "$@"' clean-room "$dir" "$@"
rc=$?
set -e
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$dir/root/test.log" 2>/dev/null | tail -n 1)
log "test line: ${line:-none} (exit $rc, $(($(date +%s) - start)) s in all)"
exit "$rc"
