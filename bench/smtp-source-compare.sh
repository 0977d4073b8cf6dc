#!/usr/bin/env bash
# smtp-source-compare.sh - mxring beside Postfix, measured with Postfix's own
# client /usr/sbin/smtp-source, on loopback (127.0.0.1 only).
#
# Usage: bench/smtp-source-compare.sh [options]
#   --messages N       messages per measured run (default 20000)
#   --sessions S       parallel sessions, smtp-source -s (default 50)
#   --size LIST        message sizes in bytes, smtp-source -l; comma-separated,
#                      each optionally SIZE:N to give that size its own message
#                      count (default 1024,65536; e.g. 1024,65536:5000)
#   --runs K           repeats of every run; the table shows medians (default 3)
#   --only LIST        servers, comma-separated: mxring, smtp-sink, postfix
#                      (default all three)
#   --mode LIST        new (a new session per message), reused (smtp-source -d,
#                      N/S messages per session) (default new,reused)
#   --out DIR          results.md (table) and results.csv (raw numbers)
#                      (default bench/results)
#   --warmup W         messages sent before each measured run, not measured
#                      (default 500; 0 = none)
#   --work DIR         where the servers' temporary spools and queues go; must
#                      be the disk under test, not tmpfs (default $TMPDIR or
#                      /var/tmp)
#   --postfix-delivery hold|discard
#                      hold (default): smtpd accepts, cleanup writes and fsyncs
#                      the queue file, then it is put on hold, so only
#                      reception is measured, as for mxring (which delivers
#                      nothing); discard: the queue manager also "delivers" each
#                      message to the discard transport (delivery CPU counted)
#   --mxring BIN       default build/core/mxring (built with ninja if missing)
#   --mxring-opt K=V   extra -o for mxring (repeatable)
#   --run-timeout S    deadline of one smtp-source run (default 60 s + 1 s per
#                      50 messages; the warm-up gets at most 120 s).
#                      smtp-source itself has no deadline: a server that stops
#                      answering one session holds it up until this one
#   --keep             keep the temporary folders (spools, queues, logs)
#   -h, --help
#
# Every run: a fresh server on a free port, W warm-up messages, then the
# measured smtp-source run
#   smtp-source -s S -m N -l SIZE [-d] -f a@example.com -t b@example.com 127.0.0.1:PORT
# with the server's CPU seconds read from /proc before and after (its whole
# process tree: see bench/peers/benchutil.py), then the server is stopped
# (mxring: SIGTERM, must exit 0) and what it stored is counted:
# mxring-spool verify for mxring, the queue files for Postfix smtpd.
# Runs are interleaved (run 1 of every server and case, then run 2, ...) so
# that noise on the machine spreads over all servers.
#
# Exit status: 0 when every run succeeded and every count matched; 1 otherwise;
# 2 for a usage error.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/bench/peers"
HELPER="$PEERS/benchutil.py"
SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
FROM=a@example.com
TO=b@example.com

MESSAGES=20000
SESSIONS=50
SIZES=1024,65536
RUNS=3
ONLY=mxring,smtp-sink,postfix
MODES=new,reused
OUT="$ROOT/bench/results"
WARMUP=500
WORK_BASE=${TMPDIR:-/var/tmp}
PF_DELIVERY=hold
MXRING="$ROOT/build/core/mxring"
SPOOL_TOOL="$ROOT/build/tools/mxring-spool"
MX_OPTS=()
MXRING_ID=
RUN_TIMEOUT=
KEEP=0
ARGS_ORIG=("$@")

die() { echo "smtp-source-compare: $*" >&2; exit 1; }
usage_error() { echo "smtp-source-compare: $*" >&2; echo "try --help" >&2; exit 2; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
warn() { echo "[$(date +%H:%M:%S)] WARNING: $*" >&2; WARNINGS=$((WARNINGS + 1)); }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
        -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        --keep) KEEP=1; shift; continue ;;
    esac
    [ $# -ge 2 ] || usage_error "$opt needs a value"
    val=$2
    shift 2
    case $opt in
        --messages) { is_uint "$val" && [ "$val" -gt 0 ]; } || usage_error "--messages: a positive number"; MESSAGES=$val ;;
        --sessions) { is_uint "$val" && [ "$val" -gt 0 ]; } || usage_error "--sessions: a positive number"; SESSIONS=$val ;;
        --size) SIZES=$val ;;
        --runs) { is_uint "$val" && [ "$val" -gt 0 ]; } || usage_error "--runs: a positive number"; RUNS=$val ;;
        --only) ONLY=$val ;;
        --mode) MODES=$val ;;
        --out) OUT=$val ;;
        --warmup) is_uint "$val" || usage_error "--warmup: a number"; WARMUP=$val ;;
        --work) WORK_BASE=$val ;;
        --postfix-delivery) case $val in hold|discard) PF_DELIVERY=$val ;; *) usage_error "--postfix-delivery: hold or discard" ;; esac ;;
        --mxring) MXRING=$val ;;
        --mxring-opt) [[ $val == *=* ]] || usage_error "--mxring-opt: key=value"; MX_OPTS+=(-o "$val") ;;
        --run-timeout) { is_uint "$val" && [ "$val" -gt 0 ]; } || usage_error "--run-timeout: seconds"; RUN_TIMEOUT=$val ;;
        *) usage_error "unknown option $opt" ;;
    esac
done

# --- parse the lists -------------------------------------------------------
SERVERS=()
IFS=, read -ra _l <<<"$ONLY"
for s in "${_l[@]}"; do
    case $s in
        mxring) SERVERS+=(mxring) ;;
        smtp-sink|sink) SERVERS+=(smtp-sink) ;;
        postfix|smtpd|postfix-smtpd) SERVERS+=(postfix) ;;
        *) usage_error "--only: unknown server '$s' (mxring, smtp-sink, postfix)" ;;
    esac
done
[ ${#SERVERS[@]} -gt 0 ] || usage_error "--only: no server"
CASE_SIZE=(); CASE_N=()
IFS=, read -ra _l <<<"$SIZES"
for s in "${_l[@]}"; do
    if [[ $s =~ ^([0-9]+)(:([0-9]+))?$ ]] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
        CASE_SIZE+=("${BASH_REMATCH[1]}")
        CASE_N+=("${BASH_REMATCH[3]:-$MESSAGES}")
        [ "${CASE_N[-1]}" -gt 0 ] || usage_error "--size $s: message count must be positive"
    else
        usage_error "--size: '$s' is not BYTES or BYTES:MESSAGES"
    fi
done
[ ${#CASE_SIZE[@]} -gt 0 ] || usage_error "--size: no size"
MODE_LIST=()
IFS=, read -ra _l <<<"$MODES"
for m in "${_l[@]}"; do
    case $m in new|reused) MODE_LIST+=("$m") ;; *) usage_error "--mode: new or reused, not '$m'" ;; esac
done
[ ${#MODE_LIST[@]} -gt 0 ] || usage_error "--mode: no mode"

# --- preflight -------------------------------------------------------------
have_server() { local s; for s in "${SERVERS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
command -v python3 >/dev/null || die "python3 is needed (bench/peers/benchutil.py)"
[ -x "$SMTP_SOURCE" ] || die "$SMTP_SOURCE not found: apt-get install postfix (see FACTS: preseed 'No configuration')"
IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1
if have_server smtp-sink; then
    [ -x "$SMTP_SINK" ] || die "$SMTP_SINK not found (package postfix)"
fi
if have_server postfix; then
    { command -v postfix >/dev/null && command -v postconf >/dev/null; } || die "postfix/postconf not found (package postfix)"
    [ $IS_ROOT = 1 ] || die "the Postfix smtpd peer must be started as root (or leave it out: --only mxring,smtp-sink)"
    getent passwd postfix >/dev/null || die "user 'postfix' missing (package postfix creates it)"
    getent group postdrop >/dev/null || die "group 'postdrop' missing (package postfix creates it)"
    PF_MASTER_CF=
    for f in /usr/share/postfix/master.cf.dist /etc/postfix/master.cf.proto /etc/postfix/master.cf; do
        [ -f "$f" ] && { PF_MASTER_CF=$f; break; }
    done
    [ -n "$PF_MASTER_CF" ] || die "no Postfix master.cf template (/usr/share/postfix/master.cf.dist)"
    [ -f "$PEERS/postfix-main.cf" ] || die "missing $PEERS/postfix-main.cf"
fi
if have_server mxring; then
    if [ ! -x "$MXRING" ] && [ "$MXRING" = "$ROOT/build/core/mxring" ]; then
        log "mxring is not built: building it (meson setup build; ninja -C build)"
        if [ ! -f "$ROOT/build/build.ninja" ]; then
            (cd "$ROOT" && meson setup build) >&2 || die "meson setup build failed"
        fi
        ninja -C "$ROOT/build" >&2 || die "ninja -C build failed; leave mxring out with --only smtp-sink,postfix"
    fi
    [ -x "$MXRING" ] || die "mxring binary not found: $MXRING"
    [ -x "$SPOOL_TOOL" ] || die "mxring-spool not found: $SPOOL_TOOL"
fi
mkdir -p "$WORK_BASE" || die "cannot create --work $WORK_BASE"
fstype=$(stat -f -c %T "$WORK_BASE" 2>/dev/null || echo unknown)
case $fstype in
    tmpfs|ramfs) log "WARNING: --work $WORK_BASE is on $fstype: fsync costs nothing there; use a folder on the disk" ;;
esac
mkdir -p "$OUT" || die "cannot create --out $OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "$WORK_BASE/smtp-source-compare.XXXXXX") || die "mktemp in $WORK_BASE failed"
chmod 755 "$WORK"   # Postfix's unprivileged daemons must reach their queue below it
if have_server mxring; then
    # Run a private copy: a rebuild of build/ during the runs must not change
    # the binary under test half-way.
    { mkdir -p "$WORK/bin" && cp "$MXRING" "$WORK/bin/mxring" && cp "$SPOOL_TOOL" "$WORK/bin/mxring-spool"; } \
        || die "cannot copy the mxring binaries to $WORK/bin"
    MXRING_ID="$(git -C "$ROOT" log -1 --format=%h 2>/dev/null) (HEAD when the run began; binary built $(date -u -r "$MXRING" '+%H:%M:%S UTC'), sha256 $(sha256sum "$MXRING" | cut -c1-12))"
    MXRING="$WORK/bin/mxring" SPOOL_TOOL="$WORK/bin/mxring-spool"
fi

# --- state and cleanup -----------------------------------------------------
SRV_NAME='' SRV_PID='' SRV_PORT='' SRV_DIR='' SRV_CHILD=''
MEAS_PID=
WARNINGS=0
FAILURES=0

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$MEAS_PID" ]; then kill -TERM "$MEAS_PID" 2>/dev/null; wait "$MEAS_PID" 2>/dev/null; fi
    [ -n "$SRV_NAME" ] && stop_server >/dev/null 2>&1
    if [ "$KEEP" = 1 ]; then
        echo "smtp-source-compare: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# wait_gone PID SECONDS: 0 once PID no longer exists (a zombie counts as gone)
wait_gone() {
    local pid=$1 deadline=$(( $(date +%s) + $2 )) st
    while [ "$(date +%s)" -le $deadline ]; do
        st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 0
        [ -z "$st" ] || [ "$st" = Z ] && return 0
        sleep 0.1
    done
    return 1
}

# --- servers ---------------------------------------------------------------
# start_<server> DIR PORT: set SRV_PID (the root of the process tree whose CPU
# is counted) or return non-zero with the reason on stderr.

start_mxring() {
    local dir=$1 port=$2 deadline
    "$MXRING" -o listen=127.0.0.1:"$port" -o spool_dir="$dir/spool" -o accept_domains=example.com \
        -o myhostname=mx.bench $([ "$(id -u)" = 0 ] && echo -o allow_root=yes) "${MX_OPTS[@]}" </dev/null >"$dir/server.log" 2>&1 &
    SRV_PID=$! SRV_CHILD=$!
    deadline=$(( $(date +%s) + 20 ))
    while [ "$(date +%s)" -le $deadline ]; do
        if grep -q ready "$dir/server.log" 2>/dev/null; then return 0; fi
        if ! kill -0 "$SRV_PID" 2>/dev/null; then
            wait "$SRV_PID"; echo "mxring exited ($?) before logging 'ready':" >&2
            tail -n 20 "$dir/server.log" >&2; SRV_PID='' SRV_CHILD=''; return 1
        fi
        sleep 0.05
    done
    echo "mxring did not log 'ready' within 20 s:" >&2; tail -n 20 "$dir/server.log" >&2
    return 1
}

start_smtp_sink() {
    local dir=$1 port=$2 user=()
    [ $IS_ROOT = 1 ] && user=(-u nobody)
    # No -c (a counter on stdout per message) and no -v: nothing but the protocol.
    "$SMTP_SINK" "${user[@]}" 127.0.0.1:"$port" 1024 </dev/null >"$dir/server.log" 2>&1 &
    SRV_PID=$! SRV_CHILD=$!
    if ! python3 "$HELPER" waitport "$port" 15; then
        echo "smtp-sink does not answer on 127.0.0.1:$port:" >&2; tail -n 20 "$dir/server.log" >&2
        return 1
    fi
}

start_postfix() {
    local dir=$1 port=$2 etc=$1/etc line k v deadline pid
    mkdir -p "$etc" "$dir/queue" "$dir/data" || return 1
    chown postfix "$dir/data" || return 1
    chmod 755 "$dir"
    cp "$PF_MASTER_CF" "$etc/master.cf" && : >"$etc/main.cf" && : >"$dir/maillog" || return 1
    local settings=()
    while IFS= read -r line; do
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        k=${line%%=*}; v=${line#*=}
        k=${k//[[:space:]]/}; v=${v#"${v%%[![:space:]]*}"}
        settings+=("$k=${v//@WORK@/$dir}")
    done <"$PEERS/postfix-main.cf"
    if [ "$PF_DELIVERY" = hold ]; then
        # Every accepted message goes to the hold queue once cleanup has
        # written and fsynced it: the queue manager delivers nothing.
        settings+=("smtpd_recipient_restrictions=check_client_access static:HOLD, permit_mynetworks, reject_unauth_destination")
    fi
    postconf -c "$etc" -e "${settings[@]}" || return 1
    # A private queue folder: no chroot (it would need copies of /etc files).
    postconf -c "$etc" -F '*/*/chroot = n' || return 1
    postconf -c "$etc" -MX smtp/inet || return 1
    postconf -c "$etc" -M "127.0.0.1:$port/inet=127.0.0.1:$port inet n - n - - smtpd" || return 1
    postfix -c "$etc" check >"$dir/start.log" 2>&1 || { cat "$dir/start.log" >&2; return 1; }
    postfix -c "$etc" start >>"$dir/start.log" 2>&1 || {
        echo "postfix -c $etc start failed:" >&2; cat "$dir/start.log" "$dir/maillog" >&2; return 1; }
    deadline=$(( $(date +%s) + 15 ))
    while [ "$(date +%s)" -le $deadline ]; do
        pid=$(tr -dc 0-9 <"$dir/queue/pid/master.pid" 2>/dev/null)
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && break
        pid=; sleep 0.1
    done
    [ -n "$pid" ] || { echo "Postfix master did not write its pid:" >&2; tail -n 20 "$dir/maillog" >&2; return 1; }
    SRV_PID=$pid
    if ! python3 "$HELPER" waitport "$port" 15; then
        echo "Postfix smtpd does not answer on 127.0.0.1:$port:" >&2; tail -n 20 "$dir/maillog" >&2
        return 1
    fi
}

# Processes of the Postfix instance in DIR, found by the MAIL_CONFIG that
# master passes to every daemon.
postfix_pids() {
    python3 "$HELPER" pids-env "MAIL_CONFIG=$1" | tr '\n' ' '
}

# stop_server: stop what start_* started; sets SRV_STOP_NOTE; returns 1 when
# it had to force anything or the server did not exit 0.
SRV_STOP_NOTE=
stop_server() {
    local rc=0 st left
    SRV_STOP_NOTE=
    case $SRV_NAME in
        mxring|smtp-sink)
            if [ -n "$SRV_CHILD" ]; then
                kill -TERM "$SRV_CHILD" 2>/dev/null
                if ! wait_gone "$SRV_CHILD" 60; then
                    SRV_STOP_NOTE="no exit 60 s after SIGTERM: killed"; rc=1
                    kill -KILL "$SRV_CHILD" 2>/dev/null
                fi
                wait "$SRV_CHILD" 2>/dev/null; st=$?
                if [ "$SRV_NAME" = mxring ] && [ $st != 0 ] && [ $rc = 0 ]; then
                    SRV_STOP_NOTE="exit status $st after SIGTERM"; rc=1
                fi
            fi ;;
        postfix)
            local etc=$SRV_DIR/etc
            postfix -c "$etc" stop >>"$SRV_DIR/start.log" 2>&1
            if [ -n "$SRV_PID" ] && ! wait_gone "$SRV_PID" 30; then
                SRV_STOP_NOTE="master still running 30 s after 'postfix stop': abort"; rc=1
                postfix -c "$etc" abort >>"$SRV_DIR/start.log" 2>&1
                wait_gone "$SRV_PID" 10
            fi
            left=$(postfix_pids "$etc")
            if [ -n "$left" ]; then
                sleep 1; left=$(postfix_pids "$etc")
                if [ -n "$left" ]; then
                    SRV_STOP_NOTE="${SRV_STOP_NOTE:+$SRV_STOP_NOTE; }killed leftover Postfix processes $left"; rc=1
                    # shellcheck disable=SC2086
                    kill -KILL $left 2>/dev/null
                fi
            fi ;;
    esac
    SRV_NAME='' SRV_PID='' SRV_CHILD=''
    return $rc
}

start_server() {   # NAME RUNDIR: sets SRV_*; tries three free ports
    local name=$1 dir=$2 try
    for try in 1 2 3; do
        SRV_NAME=$name SRV_DIR=$dir SRV_PID='' SRV_CHILD=''
        SRV_PORT=$(python3 "$HELPER" port) || return 1
        case $name in
            mxring) start_mxring "$dir" "$SRV_PORT" ;;
            smtp-sink) start_smtp_sink "$dir" "$SRV_PORT" ;;
            postfix) start_postfix "$dir" "$SRV_PORT" ;;
        esac && return 0
        stop_server >/dev/null 2>&1
        rm -rf "$dir"; mkdir -p "$dir"
        log "$name did not start on port $SRV_PORT (try $try of 3)"
    done
    return 1
}

# stored_count NAME DIR: what the stopped server kept, or "-"
stored_count() {
    case $1 in
        mxring)
            local out n
            out=$("$SPOOL_TOOL" verify "$2/spool" 2>&1); local rc=$?
            n=$(grep -oE '^[0-9]+ messages' <<<"$out" | head -n1 | cut -d' ' -f1)
            [ $rc = 0 ] || echo "mxring-spool verify exit $rc: $(tail -n 5 <<<"$out" | tr '\n' ' ')" >&2
            echo "${n:-?}"
            [ $rc = 0 ] ;;
        postfix)
            local q sent
            q=$(find "$2/queue/incoming" "$2/queue/active" "$2/queue/hold" "$2/queue/deferred" -type f 2>/dev/null | wc -l)
            sent=$(grep -c ' status=sent ' "$2/maillog" 2>/dev/null)
            echo $((q + ${sent:-0})) ;;
        *) echo - ;;
    esac
}

# --- runs ------------------------------------------------------------------
CSV="$OUT/results.csv"
MD="$OUT/results.md"
LOGS="$OUT/logs"
echo "run_id,server,mode,size,messages,sessions,run,ok,rc,wall_s,msgs_per_s,server_cpu_s,msgs_per_cpu_s,client_cpu_s,machine_busy_s,other_cpu_s,stored,expected,note" >"$CSV"

source_args() {  # MODE SIZE COUNT PORT
    local d=()
    [ "$1" = reused ] && d=(-d)
    echo "$SMTP_SOURCE -s $SESSIONS -m $3 -l $2 ${d[*]} -f $FROM -t $TO 127.0.0.1:$4" | tr -s ' '
}

total=$(( RUNS * ${#CASE_SIZE[@]} * ${#MODE_LIST[@]} * ${#SERVERS[@]} ))
log "$total runs: servers ${SERVERS[*]}; modes ${MODE_LIST[*]}; sizes ${SIZES}; $SESSIONS sessions; K=$RUNS; warm-up $WARMUP; work $WORK"
idx=0
for ((k = 1; k <= RUNS; k++)); do
  for ci in "${!CASE_SIZE[@]}"; do
    size=${CASE_SIZE[$ci]} n=${CASE_N[$ci]}
    for mode in "${MODE_LIST[@]}"; do
      for srv in "${SERVERS[@]}"; do
        idx=$((idx + 1))
        id=$(printf '%03d-%s-%s-%s-r%d' $idx "$srv" "$mode" "$size" "$k")
        rundir="$WORK/$id"; mkdir -p "$rundir"
        note='' ok=0 rc='' wall='' cpu='' ccpu='' busy='' stored=- expected=$n
        run_timeout=${RUN_TIMEOUT:-$(( 60 + n / 50 ))}
        WARMUP_TIMEOUT=$(( 60 + WARMUP / 50 )); [ $WARMUP_TIMEOUT -le 120 ] || WARMUP_TIMEOUT=120
        if ! start_server "$srv" "$rundir"; then
            FAILURES=$((FAILURES + 1)); note="server did not start"
            log "[$idx/$total] $srv $mode ${size}B run $k: server did not start"
            echo "$id,$srv,$mode,$size,$n,$SESSIONS,$k,0,,,,,,,,,,$n,$note" >>"$CSV"
            continue
        fi
        warm_ok=1
        if [ "$WARMUP" -gt 0 ]; then
            # shellcheck disable=SC2046
            python3 "$HELPER" measure --root "$SRV_PID" --timeout "$WARMUP_TIMEOUT" --stderr "$rundir/warmup.err" \
                -- $(source_args "$mode" "$size" "$WARMUP" "$SRV_PORT") >"$rundir/warmup.res" &
            MEAS_PID=$!; wait $MEAS_PID; MEAS_PID=
            if ! grep -q '^rc=0 ' "$rundir/warmup.res"; then
                warm_ok=0
                if grep -q '^rc=124 ' "$rundir/warmup.res"; then
                    note="warm-up: smtp-source killed at the ${WARMUP_TIMEOUT}s deadline"
                else
                    note="warm-up failed: $(sed -n 's/ .*//p' "$rundir/warmup.res") $(tail -n 3 "$rundir/warmup.err" | tr '\n,' '  ')"
                fi
            else
                expected=$((n + WARMUP))
            fi
        fi
        if [ $warm_ok = 1 ]; then
            cmd=$(source_args "$mode" "$size" "$n" "$SRV_PORT")
            echo "$cmd" >"$rundir/command"
            # shellcheck disable=SC2086
            python3 "$HELPER" measure --root "$SRV_PID" --timeout "$run_timeout" --stderr "$rundir/client.err" \
                -- $cmd >"$rundir/measure.res" &
            MEAS_PID=$!; wait $MEAS_PID; MEAS_PID=
            res=$(cat "$rundir/measure.res")
            for kv in $res; do
                case $kv in
                    rc=*) rc=${kv#rc=} ;; wall_s=*) wall=${kv#*=} ;; server_cpu_s=*) cpu=${kv#*=} ;;
                    client_cpu_s=*) ccpu=${kv#*=} ;; machine_busy_s=*) busy=${kv#*=} ;;
                esac
            done
            if [ "$rc" = 0 ]; then
                ok=1
            else
                [ "$rc" = 124 ] && note="smtp-source killed at the ${run_timeout}s deadline" \
                    || note="smtp-source exit $rc: $(tail -n 3 "$rundir/client.err" | tr '\n,' '  ')"
            fi
        fi
        pidinfo="$srv pid $SRV_PID port $SRV_PORT"
        if [ "$srv" = mxring ] && grep -q 'stopping' "$rundir/server.log"; then
            warn "$id: mxring logged 'stopping' before this script sent SIGTERM (a signal from elsewhere)"
            note="${note:+$note; }stopped by a signal this script did not send"
        fi
        if [ $ok != 1 ] && command -v ss >/dev/null; then
            # the connections still open, for a stalled run
            ss -tnoi "( sport = :$SRV_PORT or dport = :$SRV_PORT )" >"$rundir/sockets.txt" 2>&1
        fi
        if ! stop_server; then
            note="${note:+$note; }stop: $SRV_STOP_NOTE"; warn "$id: $SRV_STOP_NOTE"
        fi
        if [ "$srv" != smtp-sink ]; then
            stored=$(stored_count "$srv" "$rundir" 2> "$rundir/stored.err"); src=$?
            if [ -s "$rundir/stored.err" ]; then note="${note:+$note; }$(tr '\n,' '  ' <"$rundir/stored.err")"; fi
            if [ $ok = 1 ] && { [ "$stored" != "$expected" ] || [ $src != 0 ]; }; then
                warn "$id: $srv stored $stored messages, the client saw $expected acknowledged (warm-up $WARMUP + $n)"
                note="${note:+$note; }stored $stored != $expected"
            fi
        fi
        if [ $ok = 1 ]; then
            read -r rate per other < <(python3 -c "
n,w,c,cc,b=$n,$wall,$cpu,$ccpu,$busy
print('%.1f' % (n/w), ('%.1f' % (n/c)) if c > 0 else 'inf', '%.2f' % max(0.0, b-c-cc))")
            log "[$idx/$total] $srv $mode ${size}B run $k: $n msgs in ${wall}s = $rate msgs/s; server CPU ${cpu}s = $per msgs/CPU-s; client CPU ${ccpu}s; stored $stored"
        else
            rate='' per='' other=''
            FAILURES=$((FAILURES + 1))
            log "[$idx/$total] $srv $mode ${size}B run $k: FAILED: $note"
        fi
        if [ $ok != 1 ] || [[ $note == *stored* ]] || [[ $note == *stop:* ]]; then
            mkdir -p "$LOGS/$id"
            { echo "$pidinfo"; cat "$rundir/command" 2>/dev/null; } >"$LOGS/$id/info"
            for f in client.err warmup.err stored.err start.log sockets.txt; do
                [ -s "$rundir/$f" ] && tail -n 200 "$rundir/$f" >"$LOGS/$id/$f"
            done
            [ -f "$rundir/server.log" ] && tail -n 300 "$rundir/server.log" >"$LOGS/$id/server.log"
            [ -f "$rundir/maillog" ] && tail -n 300 "$rundir/maillog" >"$LOGS/$id/maillog"
            log "    logs kept in $LOGS/$id"
            [ -s "$LOGS/$id/server.log" ] && sed 's/^/    server: /' "$LOGS/$id/server.log" | grep -iE 'error|fatal|warn|panic|abort|crit' | tail -n 10 >&2
        fi
        note=${note//,/;}
        echo "$id,$srv,$mode,$size,$n,$SESSIONS,$k,$ok,$rc,$wall,$rate,$cpu,$per,$ccpu,$busy,$other,$stored,$expected,${note//$'\n'/ }" >>"$CSV"
        [ $KEEP = 1 ] || rm -rf "$rundir"
      done
    done
  done
done

# --- report ------------------------------------------------------------------
{
    echo "# smtp-source comparison"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), kernel $(uname -r), Postfix $(postconf -d -h mail_version 2>/dev/null || echo ?)"
    if have_server mxring; then echo "mxring at commit $MXRING_ID, options: ${MX_OPTS[*]:-(defaults)}"; fi
    echo
    echo "Command: \`bench/smtp-source-compare.sh ${ARGS_ORIG[*]}\`"
    echo
    echo "Each run: \`smtp-source -s $SESSIONS -m N -l SIZE [-d] -f $FROM -t $TO 127.0.0.1:PORT\` against a fresh server,"
    echo "after $WARMUP warm-up messages; median of $RUNS runs. Server CPU-s: utime+stime of the server's process"
    echo "tree from /proc (for Postfix: master, its live children, and its reaped children's cutime+cstime)."
    echo "Postfix smtpd: private instance, default fsync, queue delivery mode '$PF_DELIVERY'."
    echo "Client and other CPU-s: smtp-source's own CPU, and what the rest of the machine used meanwhile."
    echo
} >"$MD.head"
python3 "$HELPER" report "$CSV" "$MD.table" >/dev/null || die "report failed"
cat "$MD.head" "$MD.table" >"$MD"; rm -f "$MD.head" "$MD.table"
echo
cat "$MD"
echo
echo "raw numbers: $CSV"
echo "table:       $MD"
if [ $FAILURES -gt 0 ] || [ $WARNINGS -gt 0 ]; then
    echo "smtp-source-compare: $FAILURES failed runs, $WARNINGS warnings (see above and $LOGS)" >&2
    exit 1
fi
exit 0
