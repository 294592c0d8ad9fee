#!/usr/bin/env bash
# bench/soak.sh: wxtoken's soak test. Results are recorded in BENCHMARKS.md, section "Soak".
#
# Two release `wxtoken serve` processes share one redis-server (append-only, every write
# fsynced) and one release `wechat-emulator` whose tokens and tickets live 60 s, so that
# each credential is refreshed about ten times in ten minutes. The apps: `shop`
# (official, stable mode), `news` (official, classic mode), `hr` (WeCom), `platform` (a
# third-party platform with three authorizers), and runtime apps put and deleted over
# the admin API. The `soak` binary (bench/src/soak.rs) writes the configs (`soak
# setup`), then drives the processes for DURATION (`soak run`): token, ticket, facade,
# gateway and proxy requests, stale and current token reports, verify ticket pushes (by
# the emulator, and encrypted here), admin changes; upstream failures switched on for
# two stretches; Redis killed (SIGKILL) mid-run and started again from its append-only
# file. It samples each instance's RSS every 30 s and ends with the durable-data checks.
# See bench/src/soak.rs for the schedule and what is judged.
#
# Usage: bash bench/soak.sh
# Env:   DURATION=10m   (600, 90s, 2m, 1h)
#        RATE=400       requests a second from the request loops, all together
#        BENCH_BIN=DIR  use the binaries in DIR instead of building
#        (a quick run: DURATION=2m bash bench/soak.sh)
# Output: the report on stdout; the processes' logs and summary.txt go to
#         bench/results/<timestamp>-soak/ (gitignored).
# Exit:  0 if every check passed, 1 if one failed, 2 if the soak could not run.
set -euo pipefail

DURATION=${DURATION:-10m}
RATE=${RATE:-400}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS="$ROOT/bench/results/$STAMP-soak"
mkdir -p "$RESULTS"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wxtoken-soak.XXXXXX")
PIDS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

soak_cleanup() {
    # Redis may have been restarted by the driver: its pid is in the pid file.
    if [ -s "$TMP/redis.pid" ]; then kill "$(cat "$TMP/redis.pid")" 2>/dev/null || true; fi
    cleanup
}
trap soak_cleanup EXIT
trap 'exit 130' INT TERM

command -v redis-server >/dev/null 2>&1 || die "redis-server is needed (apt-get install redis-server)"
command -v curl >/dev/null 2>&1 || die "curl is needed"
command -v python3 >/dev/null 2>&1 || die "python3 is needed (free ports)"
build_release

read -r EMU_PORT REDIS_PORT PORT1 PORT2 <<<"$(free_ports 4)"
"$BIN/soak" setup --dir "$TMP" --emulator-port "$EMU_PORT" --redis-port "$REDIS_PORT" \
    --ports "$PORT1,$PORT2"

echo "== starting redis-server :$REDIS_PORT (appendonly, fsync always), wechat-emulator :$EMU_PORT," \
    "wxtoken :$PORT1 and :$PORT2"
redis-server "$TMP/redis.conf" >"$RESULTS/redis.log" 2>&1 &
PIDS+=($!)
wait_for "redis-server" 10 "$RESULTS/redis.log" redis-cli -p "$REDIS_PORT" ping

mapfile -t EMU_ARGS <"$TMP/emulator.args"
RUST_LOG=warn "$BIN/wechat-emulator" "${EMU_ARGS[@]}" >"$RESULTS/emulator.log" 2>&1 &
PIDS+=($!)
wait_for "wechat-emulator" 10 "$RESULTS/emulator.log" \
    curl -fsS "http://127.0.0.1:$EMU_PORT/_emulator/stats"

WX_PIDS=()
for n in 1 2; do
    port_var=PORT$n
    NO_COLOR=1 "$BIN/wxtoken" serve --config "$TMP/wxtoken-$n.toml" >"$TMP/wxtoken-$n.log" 2>&1 &
    WX_PIDS+=($!)
    PIDS+=($!)
    wait_for "wxtoken $n /readyz" 30 "$TMP/wxtoken-$n.log" \
        curl -fsS "http://127.0.0.1:${!port_var}/readyz"
done

{
    echo "wxtoken soak  $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "($(git status --porcelain 2>/dev/null | wc -l) changed files in the tree)"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
        "load average at start $(cut -d' ' -f1-3 /proc/loadavg)," \
        "$(redis-server --version | awk '{ print $3 }' | tr -d 'v=') Redis"
    echo "DURATION=$DURATION RATE=$RATE"
} | tee "$RESULTS/summary.txt"

RC=0
"$BIN/soak" run --dir "$TMP" --emulator-port "$EMU_PORT" --redis-port "$REDIS_PORT" \
    --ports "$PORT1,$PORT2" --pids "${WX_PIDS[0]},${WX_PIDS[1]}" \
    --duration "$DURATION" --rate "$RATE" | tee "$RESULTS/soak.txt" || RC=$?

# The access log writes a line per request: keep the other lines and a sample.
for n in 1 2; do
    log="$TMP/wxtoken-$n.log"
    { grep -v " access " "$log" || true; grep -m 20 " access " "$log" || true; } \
        >"$RESULTS/wxtoken-$n.log"
done
cp "$TMP/redis-restarted.log" "$RESULTS/" 2>/dev/null || true
{
    sed -n '/^soak: /,$p' "$RESULTS/soak.txt"
    echo
    echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
    for n in 1 2; do
        echo "wxtoken $n log: $(grep -cE " WARN | ERROR " "$RESULTS/wxtoken-$n.log" || true) WARN/ERROR lines" \
            "($(grep -E " WARN | ERROR " "$RESULTS/wxtoken-$n.log" | sed -E 's/^.*(WARN|ERROR) //' |
                cut -c1-60 | sort | uniq -c | sort -rn | head -5 | awk '{$1=$1; print}' | paste -sd ';' -))"
    done
} >>"$RESULTS/summary.txt"
tail -n 3 "$RESULTS/summary.txt"
echo "raw outputs: ${RESULTS#"$ROOT"/}/ (summary.txt)"
case $RC in
0 | 1) exit "$RC" ;;
*) die "the soak could not run (exit $RC)" ;;
esac
