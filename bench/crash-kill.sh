#!/usr/bin/env bash
# crash-kill.sh - the long crash-consistency run: SIGKILL mxring under load
# at many random moments, restart it on the same spool and check after every
# kill that each message a client saw acknowledged with 250 is in the spool,
# byte-identical, that `mxring-spool verify` passes, and that nothing is
# stored twice or stored without its end of data (tests/integration/test_crash.py
# --kills; the CI suite runs the same code with a few kill points).
#
# Usage: bench/crash-kill.sh [--kills N] [--minutes M] [--variant V] [--epoch E]
#                            [--seed S] [--keep]
#   --kills N      kill points (default 200)
#   --minutes M    stop after M minutes even if fewer kills are done (default: none)
#   --variant V    all (default: segment, maildir and writers2 spools in turn),
#                  segment, maildir or writers2
#   --epoch E      a fresh spool every E kill points (default 10), so the spool
#                  and the check after each kill stay small
#   --seed S       sizes, modes and kill phases (timing is not reproducible)
#   --keep         keep the temporary folders (they are kept anyway on a failure)
#
# Binaries: $MXRING and $MXRING_SPOOL, else build/core/mxring and
# build/tools/mxring-spool (built with ninja when missing). Loopback only;
# the spools go under $TMPDIR (default /tmp), which should be a real disk.
# The last line of the output is "# crash-long: ..."; the line before the
# TAP result starts "# RESULT PASSED" or "# RESULT FAILED". Exit 0 or 1.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mxring=${MXRING:-$top/build/core/mxring}
spool_tool=${MXRING_SPOOL:-$top/build/tools/mxring-spool}
if [ ! -x "$mxring" ] || [ ! -x "$spool_tool" ]; then
	ninja -C "$top/build" core/mxring tools/mxring-spool
fi
args=(--kills 200)
while [ $# -gt 0 ]; do
	case $1 in
	--kills | --minutes | --variant | --epoch | --seed)
		[ $# -ge 2 ] || { echo "crash-kill.sh: $1 needs a value" >&2; exit 2; }
		args+=("$1" "$2")
		shift 2
		;;
	--keep)
		args+=(--keep)
		shift
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "crash-kill.sh: unknown option $1" >&2
		exit 2
		;;
	esac
done
cd "$top/tests/integration"
exec env PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 python3 test_crash.py \
	--mxring "$mxring" --spool-tool "$spool_tool" "${args[@]}"
