#!/usr/bin/env bash
# run.sh - installs what is missing, builds, and runs mxring in the
# foreground on 127.0.0.1:2525 with its spool in ./spool (Ctrl-C stops it).
# Extra arguments go to mxring, e.g. tools/run.sh -o shards=1
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
tools/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
exec build/core/mxring -c tools/mxring.conf -o "spool_dir=$top/spool" "$@"
