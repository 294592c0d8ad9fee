#!/usr/bin/env bash
# bench/fleet.sh: wxtoken's fleet benchmark (several instances on one Redis). Results are
# recorded in BENCHMARKS.md, section "Fleet (Redis)".
#
# 1. Fleet: the `fleet` binary (bench/src/fleet.rs) runs, per fleet, a redis-server of its
#    own, a WeChat emulator whose classic tokens live 20 s (a replaced one dies 2 s later)
#    and N in-process wxtoken servers on that Redis (N = 1, 4, 8), with 256 client loops
#    for FLEET_DURATION seconds: token from a random instance, an ordinary API call with
#    it, on 40001/42001 invalidate and retry once. Then the baseline, where each instance
#    caches alone (its own SQLite: a token per process), for N = 4 and 8. Targets for the
#    Redis fleets: upstream token calls <= ideal + 1 (one per 15 s refresh period) and no
#    failed client call.
# 2. Faults: three instances under 64 clients for FAULT_DURATION seconds meet a fault a
#    third of the way in: (a) `sigstop`: the instances are `wxtoken serve` processes, the
#    emulator takes 1 s per token call, and the instance that takes the refresh lease next
#    is stopped (SIGSTOP) for 3 s, past its 1 s lease, then resumed; (b) `cluster-failover`:
#    the store is a six-node Redis Cluster (3 masters, 3 replicas, made with redis-cli
#    --cluster create) and the master serving `{shop}` is killed. Same targets.
# 3. Serving with Redis: wrk against one `wxtoken serve` on SQLite and one on Redis (a
#    redis-server this script starts), interleaved, with run.sh's wrk settings. Target:
#    redis/sqlite req/s >= 0.9.
#
# Usage: bash bench/fleet.sh
# Env:   FLEET_DURATION=120 CLIENTS=256 INSTANCES=1,4,8 BASELINE=4,8 (BASELINE=none skips it)
#        DURATION=10s CONNECTIONS=64 THREADS=2 ROUNDS=2 WARMUP=2s   (wrk, as in run.sh)
#        QUIET_WAIT=180 OTHER_MAX=20 RETRIES=2                     (noise rules, as in run.sh)
#        FAULT_DURATION=45 SKIP_FAULTS=1
#        SKIP_FLEET=1, SKIP_FAULTS=1 or SKIP_WRK=1 skips that part
#        (a quick run: FLEET_DURATION=20 DURATION=3s ROUNDS=1 WARMUP=1s bash bench/fleet.sh)
# Output: the tables on stdout. The fleet's output and its servers' log (RUST_LOG=
#         wxtoken=info: leases, adoptions, fetches), raw wrk outputs, server logs and
#         summary.txt go to bench/results/<timestamp>-fleet/ (gitignored).
# Exit:  0 if every target is met, 1 if one is missed, 2 if the benchmark could not run.
set -euo pipefail

FLEET_DURATION=${FLEET_DURATION:-120}
CLIENTS=${CLIENTS:-256}
INSTANCES=${INSTANCES:-1,4,8}
BASELINE=${BASELINE:-4,8}
SKIP_FLEET=${SKIP_FLEET:-}
SKIP_FAULTS=${SKIP_FAULTS:-}
FAULT_DURATION=${FAULT_DURATION:-45}
SKIP_WRK=${SKIP_WRK:-}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-2s}
QUIET_WAIT=${QUIET_WAIT:-180}
OTHER_MAX=${OTHER_MAX:-20}
RETRIES=${RETRIES:-2}
MIN_RATIO=0.9

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS="$ROOT/bench/results/$STAMP-fleet"
mkdir -p "$RESULTS"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wxtoken-fleet.XXXXXX")
PIDS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v redis-server >/dev/null 2>&1 || die "redis-server is needed (apt-get install redis-server)"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli is needed (apt-get install redis-tools)"
if [ -z "$SKIP_WRK" ]; then need_tools; fi
build_release
# Up to 256 pooled connections per instance, both ends in one process.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

{
    echo "wxtoken fleet benchmark  $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "($(git status --porcelain 2>/dev/null | wc -l) changed files in the tree)"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
        "$(redis-server --version | awk '{ print $3 }' | tr -d 'v=')" "Redis"
} | tee "$RESULTS/summary.txt"

# ---- 1. fleet ------------------------------------------------------------------------
FLEET_OK=skipped
if [ -z "$SKIP_FLEET" ]; then
    FLEET_ARGS=(--instances "$INSTANCES" --duration "$FLEET_DURATION" --clients "$CLIENTS")
    if [ "$BASELINE" = none ]; then FLEET_ARGS+=(--no-baseline); else FLEET_ARGS+=(--baseline "$BASELINE"); fi
    echo
    echo "== fleet ${FLEET_ARGS[*]} (about $(($(tr ',' '\n' <<<"$INSTANCES,${BASELINE/none/}" | grep -c .) * (FLEET_DURATION + 2))) s)"
    wait_quiet
    FLEET_RC=0
    RUST_LOG=${RUST_LOG:-warn,wxtoken=info} NO_COLOR=1 \
        "$BIN/fleet" "${FLEET_ARGS[@]}" 2>"$RESULTS/fleet.log" | tee "$RESULTS/fleet.txt" ||
        FLEET_RC=$?
    case $FLEET_RC in
    0) FLEET_OK=PASS ;;
    1) FLEET_OK=FAIL ;;
    *)
        tail -n 20 "$RESULTS/fleet.log" >&2
        die "the fleet benchmark could not run (exit $FLEET_RC; see $RESULTS/fleet.log)"
        ;;
    esac
    {
        echo
        sed -n '/^fleet benchmark:/,$p' "$RESULTS/fleet.txt"
        echo "  wxtoken log: $(grep -c . "$RESULTS/fleet.log" || true) lines," \
            "$(grep -cE " WARN | ERROR " "$RESULTS/fleet.log" || true) WARN/ERROR" \
            "(of which $(grep -c "keeps nothing on disk" "$RESULTS/fleet.log" || true) are the" \
            "expected start-up warning that this Redis has no persistence)"
        echo "fleet: $FLEET_OK"
    } >>"$RESULTS/summary.txt"
fi

# ---- 2. faults -------------------------------------------------------------------------
FAULTS_OK=skipped
if [ -z "$SKIP_FAULTS" ]; then
    FAULTS_OK=PASS
    for fault in sigstop cluster-failover; do
        FAULT_ARGS=(--instances 3 --no-baseline --clients 64 --duration "$FAULT_DURATION"
            --lease-ttl-ms 1000 --fault "$fault")
        if [ "$fault" = sigstop ]; then
            FAULT_ARGS+=(--wxtoken-bin "$BIN/wxtoken" --latency-ms 1000 --pause-ms 3000)
        fi
        echo
        echo "== fleet ${FAULT_ARGS[*]}"
        wait_quiet
        RC=0
        RUST_LOG=${RUST_LOG:-warn,wxtoken=info} NO_COLOR=1 \
            "$BIN/fleet" "${FAULT_ARGS[@]}" 2>"$RESULTS/fault-$fault.log" |
            tee "$RESULTS/fault-$fault.txt" || RC=$?
        case $RC in
        0) ;;
        1) FAULTS_OK=FAIL ;;
        *)
            tail -n 20 "$RESULTS/fault-$fault.log" >&2
            die "the $fault scenario could not run (exit $RC)"
            ;;
        esac
        {
            echo
            grep -E "^   fault:|^   upstream calls at" "$RESULTS/fault-$fault.txt"
            sed -n '/^| store/,$p' "$RESULTS/fault-$fault.txt"
        } >>"$RESULTS/summary.txt"
    done
    echo "faults: $FAULTS_OK" >>"$RESULTS/summary.txt"
fi

# ---- 3. serving: redis vs sqlite -----------------------------------------------------------
RATIO_OK=skipped
if [ -z "$SKIP_WRK" ]; then
    read -r EMU_PORT REDIS_PORT SQL_PORT RED_PORT <<<"$(free_ports 4)"
    APPID=wxbe0c1a2b3c4d5e6f
    SECRET="bench-secret-$RANDOM$RANDOM"
    KEY="wxt_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    PATH_TOKEN=/v1/apps/shop/access_token
    AUTH="Authorization: Bearer $KEY"

    echo
    echo "== starting wechat-emulator :$EMU_PORT, redis-server :$REDIS_PORT," \
        "wxtoken on sqlite :$SQL_PORT, wxtoken on redis :$RED_PORT"
    "$BIN/wechat-emulator" --listen "127.0.0.1:$EMU_PORT" --app "$APPID:$SECRET" \
        >"$RESULTS/emulator.log" 2>&1 &
    PIDS+=($!)
    mkdir -p "$TMP/redis"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$TMP/redis" >"$RESULTS/redis.log" 2>&1 &
    PIDS+=($!)

    wxtoken_config "$SQL_PORT" "[store]
kind = \"sqlite\"
path = \"$TMP/wxtoken.db\"" >"$TMP/sqlite.toml"
    wxtoken_config "$RED_PORT" "[store]
kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\"" >"$TMP/redis.toml"

    wait_for "wechat-emulator" 10 "$RESULTS/emulator.log" \
        curl -fsS "http://127.0.0.1:$EMU_PORT/_emulator/stats"
    wait_for "redis-server" 10 "$RESULTS/redis.log" redis-cli -p "$REDIS_PORT" ping

    declare -A LOG_BEFORE=()
    for store in sqlite redis; do
        if [ $store = sqlite ]; then port=$SQL_PORT; else port=$RED_PORT; fi
        "$BIN/wxtoken" serve --config "$TMP/$store.toml" >"$RESULTS/wxtoken-$store.log" 2>&1 &
        TARGET_PID[$store]=$!
        PIDS+=($!)
        TARGET_URL[$store]="http://127.0.0.1:$port$PATH_TOKEN"
        wait_for "wxtoken on $store /readyz" 30 "$RESULTS/wxtoken-$store.log" \
            curl -fsS "http://127.0.0.1:$port/readyz"
        wait_for "wxtoken on $store: first token" 30 "$RESULTS/wxtoken-$store.log" \
            curl -fsS -H "$AUTH" "${TARGET_URL[$store]}"
        curl -sS -o "$RESULTS/$store.body" -H "$AUTH" "${TARGET_URL[$store]}"
    done
    echo "   answer bytes: sqlite $(wc -c <"$RESULTS/sqlite.body"), redis $(wc -c <"$RESULTS/redis.body")"
    for store in sqlite redis; do LOG_BEFORE[$store]=$(wc -l <"$RESULTS/wxtoken-$store.log"); done

    echo "== warm-up ($WARMUP each, not counted)"
    for store in sqlite redis; do
        run_wrk "$store" "${TARGET_PID[$store]}" "${TARGET_URL[$store]}" \
            "$RESULTS/wrk-warmup-$store.txt" "$WARMUP"
    done
    echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS round(s), on $NCPU cores"
    echo "   (CPU is % of one core, so $((NCPU * 100))% is the whole machine; wrk and the server share it)"
    wrk_rounds sqlite redis

    SQL_RPS=$(mean sqlite)
    RED_RPS=$(mean redis)
    RATIO=$(awk -v r="$RED_RPS" -v s="$SQL_RPS" 'BEGIN { printf "%.3f", r / s }')
    RATIO_OK=$(awk -v r="$RATIO" -v m="$MIN_RATIO" 'BEGIN { print (r >= m ? "PASS" : "FAIL") }')
    if [ -n "${BAD[sqlite]:-}${BAD[redis]:-}" ]; then RATIO_OK="FAIL (errors)"; fi
    {
        echo
        echo "serving, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS round(s) per target"
        printf '%s\n' "${PER_RUN[@]}"
        echo
        printf "  %-22s %12s %14s\n" "store" "mean req/s" "worst p99"
        printf "  %-22s %12s %11.3f ms\n" "sqlite" "$SQL_RPS" "${P99_WORST[sqlite]}"
        printf "  %-22s %12s %11.3f ms\n" "redis" "$RED_RPS" "${P99_WORST[redis]}"
        printf "  %-22s %12s   target >= %s   %s\n" "ratio redis/sqlite" "$RATIO" "$MIN_RATIO" "$RATIO_OK"
        for store in sqlite redis; do
            log="$RESULTS/wxtoken-$store.log"
            echo "  wxtoken on $store, log during the runs:" \
                "$(($(wc -l <"$log") - ${LOG_BEFORE[$store]})) lines," \
                "$(tail -n "+$((${LOG_BEFORE[$store]} + 1))" "$log" | grep -cE "WARN|ERROR" || true) WARN/ERROR"
        done
    } | tee -a "$RESULTS/summary.txt"
fi

echo
echo "raw outputs: ${RESULTS#"$ROOT"/}/ (summary.txt)"
if [[ $FLEET_OK != FAIL && $FAULTS_OK != FAIL && $RATIO_OK != FAIL* ]]; then
    echo "all targets met (fleet $FLEET_OK, faults $FAULTS_OK, serving ratio $RATIO_OK)"
    exit 0
fi
echo "targets missed: fleet $FLEET_OK, faults $FAULTS_OK, serving ratio $RATIO_OK"
exit 1
