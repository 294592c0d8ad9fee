#!/usr/bin/env bash
# bench/gateway.sh: the drop-in routes under load. Results are recorded in BENCHMARKS.md.
#
# 1. Gateway: wrk against GET /cgi-bin/get_api_domain_ip?access_token=T through wxtoken,
#    and the same request straight to the emulator, in the same run (rounds alternate).
#    The emulator answers ordinary APIs after API_LATENCY_MS, standing in for WeChat's
#    round trip (real WeChat is tens of milliseconds away, never on loopback); set
#    API_LATENCY_MS=0 to see the proxy's raw cost on a shared core instead.
#    Targets: gateway/direct req/s >= 0.85, gateway p99 - direct p99 < 1 ms.
# 2. Facade: wrk against GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=KEY
#    and GET /v1/apps/shop/access_token (Bearer KEY) on the same server.
#    Target: facade/v1 req/s >= 0.9.
#
# Usage: bash bench/gateway.sh
# Env:   DURATION=10s CONNECTIONS=64 ROUNDS=4 WARMUP=2s API_LATENCY_MS=20
#        PIN=1 (wxtoken on core 1; wrk and the emulator on core 0), QUIET_WAIT, OTHER_MAX,
#        RETRIES as in run.sh
#        (a quick run: DURATION=3s ROUNDS=1 WARMUP=1s bash bench/gateway.sh)
# Output: a table on stdout; raw outputs in bench/results/<timestamp>-gateway/.
# Exit:  0 if every target is met, 1 if one is missed, 2 if the benchmark could not run.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
if [ "$(nproc)" -ge 2 ]; then PIN=${PIN:-1}; else PIN=0; fi
if [ "$PIN" = 1 ]; then
    THREADS=${THREADS:-1}
    PIN_SERVER=(taskset -c 1)
    # The emulator stands in for WeChat, which is on another machine: keep it off
    # wxtoken's core (it shares wrk's, in both the direct and the gateway runs).
    PIN_UPSTREAM=(taskset -c 0)
    PIN_LOAD=(taskset -c 0)
else
    THREADS=${THREADS:-2}
    PIN_SERVER=()
    PIN_UPSTREAM=()
    PIN_LOAD=()
fi
ROUNDS=${ROUNDS:-4}
WARMUP=${WARMUP:-2s}
API_LATENCY_MS=${API_LATENCY_MS:-20}
QUIET_WAIT=${QUIET_WAIT:-180}
OTHER_MAX=${OTHER_MAX:-20}
RETRIES=${RETRIES:-2}
MIN_GATEWAY_RATIO=0.85
MAX_ADDED_P99_MS=1
MIN_FACADE_RATIO=0.9

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS="$ROOT/bench/results/$STAMP-gateway"
mkdir -p "$RESULTS"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wxtoken-bench.XXXXXX")
PIDS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

trap cleanup EXIT
trap 'exit 130' INT TERM

need_tools
build_release
wait_quiet

read -r EMU_PORT WX_PORT <<<"$(free_ports 2)"
APPID=wxbe0c1a2b3c4d5e6f
SECRET="bench-secret-$RANDOM$RANDOM"
KEY="wxt_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
AUTH="Authorization: Bearer $KEY"
WX="http://127.0.0.1:$WX_PORT"
EMU="http://127.0.0.1:$EMU_PORT"

echo "== starting wechat-emulator :$EMU_PORT (ordinary APIs answer after ${API_LATENCY_MS} ms), wxtoken :$WX_PORT"
"${PIN_UPSTREAM[@]}" "$BIN/wechat-emulator" --listen "127.0.0.1:$EMU_PORT" --app "$APPID:$SECRET" \
    --api-latency-ms "$API_LATENCY_MS" >"$RESULTS/emulator.log" 2>&1 &
EMU_PID=$!
PIDS+=("$EMU_PID")
wxtoken_config "$WX_PORT" "[store]
kind = \"sqlite\"
path = \"$TMP/wxtoken.db\"" >"$TMP/wxtoken.toml"
wait_for "wechat-emulator" 10 "$RESULTS/emulator.log" curl -fsS "$EMU/_emulator/stats"
# Pinned to one core, wxtoken runs one worker thread (as under a one-CPU limit); two
# workers taking turns on one core only add scheduling delay to the tail.
if [ "$PIN" = 1 ]; then export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}; fi
"${PIN_SERVER[@]}" "$BIN/wxtoken" serve --config "$TMP/wxtoken.toml" >"$RESULTS/wxtoken.log" 2>&1 &
unset TOKIO_WORKER_THREADS
WX_PID=$!
PIDS+=("$WX_PID")
wait_for "wxtoken /readyz" 30 "$RESULTS/wxtoken.log" curl -fsS "$WX/readyz"
wait_for "wxtoken's first token" 30 "$RESULTS/wxtoken.log" curl -fsS -H "$AUTH" "$WX/v1/apps/shop/access_token"
TOKEN=$(curl -fsS -H "$AUTH" "$WX/v1/apps/shop/access_token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

API_PATH="/cgi-bin/get_api_domain_ip?access_token=$TOKEN"
FACADE_PATH="/cgi-bin/token?grant_type=client_credential&appid=$APPID&secret=$KEY"
# Both must answer the same bytes for the comparison to be fair.
curl -fsS "$EMU$API_PATH" >"$RESULTS/direct.body"
curl -fsS "$WX$API_PATH" >"$RESULTS/gateway.body"
cmp -s "$RESULTS/direct.body" "$RESULTS/gateway.body" || die "the gateway's answer differs from the emulator's"
grep -q access_token < <(curl -fsS "$WX$FACADE_PATH") || die "the facade gave no token"

# wrk's -H "$AUTH" goes to every target: WeChat paths ignore it (and the gateway never
# forwards it), so every target gets the same request shape.
TARGET_PID=([direct]=$EMU_PID [gateway]=$WX_PID [v1]=$WX_PID [facade]=$WX_PID)
TARGET_URL=([direct]="$EMU$API_PATH" [gateway]="$WX$API_PATH" [v1]="$WX/v1/apps/shop/access_token" [facade]="$WX$FACADE_PATH")

echo "== warm-up ($WARMUP each, not counted)"
for target in direct gateway v1 facade; do
    run_wrk "$target" "${TARGET_PID[$target]}" "${TARGET_URL[$target]}" "$RESULTS/wrk-warmup-$target.txt" "$WARMUP"
done

echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS round(s), PIN=$PIN"
wrk_rounds direct gateway
wrk_rounds v1 facade

DIRECT=$(mean direct)
GATEWAY=$(mean gateway)
V1=$(mean v1)
FACADE=$(mean facade)
G_RATIO=$(awk -v a="$GATEWAY" -v b="$DIRECT" 'BEGIN { printf "%.3f", a / b }')
ADDED_P99=$(awk -v a="${P99_WORST[gateway]}" -v b="${P99_WORST[direct]}" 'BEGIN { printf "%.3f", a - b }')
F_RATIO=$(awk -v a="$FACADE" -v b="$V1" 'BEGIN { printf "%.3f", a / b }')
verdict() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN { ok = (dir == "min" ? v >= t : v < t); print (ok ? "PASS" : "FAIL") }'; }
G_OK=$(verdict "$G_RATIO" "$MIN_GATEWAY_RATIO" min)
P_OK=$(verdict "$ADDED_P99" "$MAX_ADDED_P99_MS" max)
F_OK=$(verdict "$F_RATIO" "$MIN_FACADE_RATIO" min)
for target in direct gateway v1 facade; do
    if [ -n "${BAD[$target]:-}" ]; then
        case $target in direct | gateway) G_OK="FAIL (errors)" ;; *) F_OK="FAIL (errors)" ;; esac
    fi
done
STATS=$(curl -fsS "$EMU/_emulator/stats")

{
    echo
    echo "wxtoken drop-in benchmark  $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "($(git status --porcelain 2>/dev/null | wc -l) changed files in the tree)"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS round(s) per target, PIN=$PIN, emulator API latency ${API_LATENCY_MS} ms"
    printf '%s\n' "${PER_RUN[@]}"
    echo
    printf "  %-26s %12s %14s\n" "target" "mean req/s" "worst p99"
    for target in direct gateway v1 facade; do
        printf "  %-26s %12s %11.3f ms\n" "$target" "$(mean "$target")" "${P99_WORST[$target]}"
    done
    printf "  %-26s %12s   target >= %s   %s\n" "gateway/direct" "$G_RATIO" "$MIN_GATEWAY_RATIO" "$G_OK"
    printf "  %-26s %9s ms   target < %s ms   %s\n" "gateway p99 - direct p99" "$ADDED_P99" "$MAX_ADDED_P99_MS" "$P_OK"
    printf "  %-26s %12s   target >= %s   %s\n" "facade/v1" "$F_RATIO" "$MIN_FACADE_RATIO" "$F_OK"
    echo "  emulator token calls during the run: $(echo "$STATS" | python3 -c "import json,sys; a=json.load(sys.stdin)['apps']['$APPID']; print(a.get('stable_token_calls', 0) + a.get('token_calls', 0))")"
} | tee "$RESULTS/summary.txt"

echo
echo "raw outputs: ${RESULTS#"$ROOT"/}/"
if [ "$G_OK" = PASS ] && [ "$P_OK" = PASS ] && [ "$F_OK" = PASS ]; then
    echo "all targets met"
    exit 0
fi
echo "targets missed: gateway $G_OK, added p99 $P_OK, facade $F_OK"
exit 1
