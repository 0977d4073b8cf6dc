#!/usr/bin/env bash
# test.sh - installs what is missing, builds, and runs every test (unit,
# fuzz-corpus replays and integration tests against the real binaries with
# real clients), twice: in the normal build and in an AddressSanitizer +
# UndefinedBehaviorSanitizer build (libc malloc). Ends with the line
# "N passed, N failed"; exits non-zero when a test failed.
#
#   tools/test.sh [meson test arguments, e.g. --suite smtp]
#   MXRING_TEST_SANITIZE=0 tools/test.sh    skips the sanitizer build
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
tools/deps.sh --test || exit 1
# The accelerated, trimmed wolfSSL (built once, cached outside the checkout).
tools/wolfssl-build.sh >/dev/null || exit 1

passed=0
failed=0
skipped=0
status=0

# run_suite BUILD_DIR [meson setup options...]
run_suite() {
	local build=$1
	shift
	# Whatever the folder holds (tools/run.sh configures build/ without the
	# tests), it is (re)configured with them: reconfiguring keeps what
	# ninja built, so a second run costs nothing.
	local setup=(setup)
	[ -f "$build/build.ninja" ] && setup+=(--reconfigure)
	meson "${setup[@]}" "$build" -Dtests=enabled -Dwerror=true -Dwolfssl=accelerated "$@" \
		>/dev/null || return 1
	ninja -C "$build" || return 1
	meson test -C "$build" --print-errorlogs --num-processes 2 "${test_args[@]}" |
		tee "$build/test-output.txt"
	local rc=${PIPESTATUS[0]}
	local ok fail timeout upass skip
	ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
	fail=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
	timeout=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
	upass=$(sed -n 's/^Unexpected Pass: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
	skip=$(sed -n 's/^Skipped: *\([0-9]*\).*/\1/p' "$build/test-output.txt" | tail -n1)
	local f=$((${fail:-0} + ${timeout:-0} + ${upass:-0}))
	if [ -z "$ok" ] && [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	# A suite that ran nothing ("No tests defined.", or a filter that matched
	# nothing) has failed: it proves nothing.
	if [ "${ok:-0}" -eq 0 ] && [ "$f" -eq 0 ]; then
		echo "test: $build ran no test" >&2
		f=1
	fi
	passed=$((passed + ${ok:-0}))
	failed=$((failed + f))
	skipped=$((skipped + ${skip:-0}))
	[ "$rc" -eq 0 ] && [ "$f" -eq 0 ]
}

test_args=("$@")
run_suite "${MXRING_TEST_BUILD:-build}" || status=1
if [ "${MXRING_TEST_SANITIZE:-1}" != 0 ]; then
	echo "== the same tests under AddressSanitizer and UndefinedBehaviorSanitizer =="
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		run_suite "${MXRING_TEST_BUILD:-build}-asan" -Db_sanitize=address,undefined \
		-Db_lundef=false || status=1
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit $status
