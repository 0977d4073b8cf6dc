#!/usr/bin/env bash
# test.sh - installs what is missing, builds, and runs every test (unit and
# integration, against the real binaries with real clients). Ends with the
# line "N passed, N failed"; exits non-zero when a test failed.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
tools/deps.sh --test || exit 1
# The accelerated, trimmed wolfSSL (built once, cached outside the checkout).
tools/wolfssl-build.sh >/dev/null || exit 1
build=${MXRING_TEST_BUILD:-build}
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" -Dtests=enabled -Dwerror=true -Dwolfssl=accelerated >/dev/null || exit 1
fi
ninja -C "$build" || exit 1
meson test -C "$build" --print-errorlogs --num-processes 2 "$@" | tee "$build/test-output.txt"
rc=${PIPESTATUS[0]}
ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
fail=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
expfail=$(sed -n 's/^Unexpected Pass: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
timeout=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
skip=$(sed -n 's/^Skipped: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
failed=$(( ${fail:-0} + ${timeout:-0} + ${expfail:-0} ))
if [ -z "$ok" ] && [ "$rc" -ne 0 ]; then
	failed=$(( failed > 0 ? failed : 1 ))
fi
echo "${ok:-0} passed, ${failed} failed, ${skip:-0} skipped"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
