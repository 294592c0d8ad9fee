#!/usr/bin/env bash
# bench/instructions.sh: instructions per served token, wxtoken against the baseline.
#
# Each server runs under `valgrind --tool=callgrind` with instrumentation off; after a
# warm-up, instrumentation is switched on for DURATION of `wrk -t1 -c8` against
# GET /v1/apps/{app}/access_token, and the instructions counted are divided by the
# requests wrk answered. Instructions, not seconds: the same binaries give the same
# figure (within a fraction of a percent) however busy the machine is, so this is the
# measure for comparing two builds of the hot path. It does not see cache misses or
# system calls (bench/run.sh's ratio does), and under valgrind the CPU's SHA extensions
# are hidden, so the key digest counts about 3,400 instructions that the real machine
# spends a fraction of a microsecond on.
#
# Usage: bash bench/instructions.sh
# Env:   DURATION=4s
#        BENCH_BIN=DIR    use the binaries in DIR instead of building (e.g. an older commit's)
#        WXTOKEN_LOG=...  RUST_LOG for wxtoken (default info; `info,wxtoken::access=off`
#                         measures without the access log)
# Output: a table on stdout; callgrind's files in bench/results/<timestamp>-instructions/
#         (read them with callgrind_annotate --inclusive=yes FILE).
# Exit:  0, or 2 if the measurement could not run.
set -euo pipefail

DURATION=${DURATION:-4s}
WXTOKEN_LOG=${WXTOKEN_LOG:-info}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS="$ROOT/bench/results/$STAMP-instructions"
mkdir -p "$RESULTS"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wxtoken-instructions.XXXXXX")
PIDS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

trap cleanup EXIT
trap 'exit 130' INT TERM

need_tools
command -v valgrind >/dev/null 2>&1 || die "valgrind is needed (apt-get install valgrind)"
build_release

read -r EMU_PORT WX_PORT BASE_PORT <<<"$(free_ports 3)"
APPID=wxbe0c1a2b3c4d5e6f
SECRET="bench-secret-$RANDOM$RANDOM"
KEY="wxt_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
PATH_TOKEN=/v1/apps/shop/access_token
AUTH="Authorization: Bearer $KEY"

"$BIN/wechat-emulator" --listen "127.0.0.1:$EMU_PORT" --app "$APPID:$SECRET" \
    >"$RESULTS/emulator.log" 2>&1 &
PIDS+=($!)
wxtoken_config "$WX_PORT" "[store]
kind = \"sqlite\"
path = \"$TMP/wxtoken.db\"" >"$TMP/wxtoken.toml"
wait_for "wechat-emulator" 10 "$RESULTS/emulator.log" \
    curl -fsS "http://127.0.0.1:$EMU_PORT/_emulator/stats"

callgrind() { # NAME PORT COMMAND...: starts COMMAND under callgrind, instrumentation off
    local name=$1 port=$2
    shift 2
    RUST_LOG=$WXTOKEN_LOG NO_COLOR=1 valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$RESULTS/callgrind.$name" "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
    # Under valgrind a start takes seconds.
    wait_for "$name" 60 "$TMP/$name.log" \
        curl -fsS -H "$AUTH" "http://127.0.0.1:$port$PATH_TOKEN"
}

measure() { # NAME PID PORT: prints "requests instructions"
    local name=$1 pid=$2 url="http://127.0.0.1:$3$PATH_TOKEN" requests total
    wrk -t1 -c8 -d2s -H "$AUTH" "$url" >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    wrk -t1 -c8 -d"$DURATION" -H "$AUTH" "$url" >"$RESULTS/wrk-$name.txt"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    grep -q "Non-2xx" "$RESULTS/wrk-$name.txt" && die "$name answered errors; see $RESULTS/wrk-$name.txt"
    requests=$(awk '/requests in/ { print $1 }' "$RESULTS/wrk-$name.txt")
    # The dump is written as callgrind.NAME.1 (part 1: the instrumented stretch).
    for _ in $(seq 50); do [ -s "$RESULTS/callgrind.$name.1" ] && break; sleep 0.1; done
    total=$(callgrind_annotate "$RESULTS/callgrind.$name.1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    [ -n "$total" ] || die "no callgrind totals for $name"
    echo "$requests $total"
}

echo "== baseline under callgrind"
callgrind baseline "$BASE_PORT" "$BIN/baseline" --listen "127.0.0.1:$BASE_PORT"
read -r BASE_REQ BASE_IR <<<"$(measure baseline "$LAST_PID" "$BASE_PORT")"
echo "== wxtoken under callgrind (RUST_LOG=$WXTOKEN_LOG)"
callgrind wxtoken "$WX_PORT" "$BIN/wxtoken" serve --config "$TMP/wxtoken.toml"
read -r WX_REQ WX_IR <<<"$(measure wxtoken "$LAST_PID" "$WX_PORT")"

{
    echo
    echo "instructions per served token  $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "($(git status --porcelain 2>/dev/null | wc -l) changed files in the tree)," \
        "wrk -t1 -c8 -d$DURATION, wxtoken RUST_LOG=$WXTOKEN_LOG"
    echo "binaries: $BIN"
    printf "  %-10s %10s %16s %14s\n" target requests instructions "per request"
    printf "  %-10s %10s %16s %14s\n" baseline "$BASE_REQ" "$BASE_IR" "$((BASE_IR / BASE_REQ))"
    printf "  %-10s %10s %16s %14s\n" wxtoken "$WX_REQ" "$WX_IR" "$((WX_IR / WX_REQ))"
    echo "  wxtoken - baseline: $((WX_IR / WX_REQ - BASE_IR / BASE_REQ)) instructions a request" \
        "(of which about 3,400 are the key digest without SHA extensions)"
} | tee "$RESULTS/summary.txt"
echo "raw outputs: ${RESULTS#"$ROOT"/}/"
