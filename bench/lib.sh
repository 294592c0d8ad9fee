#!/usr/bin/env bash
# bench/lib.sh: shell helpers shared by bench/run.sh and bench/fleet.sh. Sourced, not run.
#
# The caller sets ROOT, RESULTS, TMP and PIDS (an array of the processes it started, which
# `cleanup` kills), and, for the wrk helpers, THREADS, CONNECTIONS, AUTH, ROUNDS, DURATION,
# QUIET_WAIT, OTHER_MAX and RETRIES. `wrk_rounds` reads the targets from the associative
# arrays TARGET_PID and TARGET_URL and adds to RPS_SUM, P99_WORST, RUNS, BAD and PER_RUN.
#
# Variables set here for the caller (BIN, BAD, ...) look unused to shellcheck, and the
# caller's DURATION looks unassigned:
# shellcheck disable=SC2034,SC2153

CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
declare -A RPS_SUM=() P99_WORST=() RUNS=() BAD=() TARGET_PID=() TARGET_URL=()
PER_RUN=()

die() {
    echo "error: $*" >&2
    exit 2
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}

# Scripts that pin processes to cores set PIN_LOAD (a command prefix for wrk); others
# run wrk unpinned.
if ! declare -p PIN_LOAD >/dev/null 2>&1; then
    PIN_LOAD=()
fi

wxtoken_config() { # PORT STORE-TABLE: the benchmarked server's TOML (one stable-mode app
    # `shop` on the emulator at EMU_PORT, one read key KEY) on the given store
    cat <<EOF
[server]
listen = "127.0.0.1:$1"

$2

[upstream]
api_base = "http://127.0.0.1:$EMU_PORT"

[[apps]]
id = "shop"
kind = "official"
appid = "$APPID"
secret = "$SECRET"
mode = "stable"

[[clients]]
name = "bench"
key = "$KEY"
apps = ["shop"]
scopes = ["read"]
EOF
}

need_tools() { # installs wrk if it can; checks curl and python3
    if ! command -v wrk >/dev/null 2>&1; then
        echo "== installing wrk"
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null ||
            die "wrk is missing and could not be installed (apt-get install wrk)"
    fi
    command -v curl >/dev/null 2>&1 || die "curl is needed"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed (free ports)"
}

build_release() { # builds the release binaries; sets BIN to their directory
    if [ -n "${BENCH_BIN:-}" ]; then # prebuilt binaries (e.g. an older commit's) instead
        BIN=$BENCH_BIN
        echo "== using the binaries in $BIN"
        return
    fi
    echo "== building (release)"
    cargo build --release -p wxtoken -p wechat-emulator -p wxtoken-bench
    BIN="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
}

free_ports() { # N: prints N distinct free local TCP ports
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_for() { # WHAT SECONDS LOG COMMAND...: polls COMMAND every 0.1 s
    local what=$1 tries=$(($2 * 10)) log=$3 i
    shift 3
    for ((i = 0; i < tries; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "error: $what not ready after $((tries / 10)) s; last lines of $log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 2
}

cpu_ticks() { # PID: user+system clock ticks used so far
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

cpu_stat() { # "busy total softirq" clock ticks of all cores so far, from /proc/stat
    awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6, $8 }' /proc/stat
}

machine_busy() { # SECONDS: % of all cores busy over that time
    local b0 t0 b1 t1 _
    read -r b0 t0 _ <<<"$(cpu_stat)"
    sleep "$1"
    read -r b1 t1 _ <<<"$(cpu_stat)"
    awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }'
}

to_ms() { # 850.00us | 1.23ms | 1.02s | 1.00m -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/)      { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/)  { sub(/m$/, "", v);  printf "%.3f", v * 60000 }
        else if (v ~ /s$/)  { sub(/s$/, "", v);  printf "%.3f", v * 1000 }
        else                { printf "nan" }
    }'
}

wait_quiet() { # anything else running (a build, tests) steals cores from the targets unevenly
    local busy waited=0
    busy=$(machine_busy 1)
    while [ "$busy" -gt 10 ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
        echo "   machine ${busy}% busy; waiting for it to settle ($waited/$QUIET_WAIT s)"
        sleep 4
        waited=$((waited + 5))
        busy=$(machine_busy 1)
    done
    if [ "$busy" -gt 10 ]; then echo "   machine still ${busy}% busy; measuring anyway"; fi
}

run_wrk() { # TARGET PID URL OUTFILE DURATION: one wrk run; sets LAST_RPS, LAST_P99,
    # LAST_CPU (the breakdown) and LAST_OTHER (% of a core used by other processes)
    local target=$1 pid=$2 url=$3 out=$4 duration=$5 before after real user sys
    local b0 t0 q0 b1 t1 q1
    before=$(cpu_ticks "$pid")
    read -r b0 t0 q0 <<<"$(cpu_stat)"
    TIMEFORMAT='%R %U %S'
    { time "${PIN_LOAD[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency -H "$AUTH" "$url" \
        >"$out" 2>&1; } 2>"$out.time" || die "wrk failed against $target (see $out)"
    after=$(cpu_ticks "$pid")
    read -r b1 t1 q1 <<<"$(cpu_stat)"
    read -r real user sys <"$out.time"
    LAST_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    LAST_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    # Percent of one core over the run: the server, wrk, and everything else on the
    # machine. softirq (the kernel's loopback networking) is shown for information: tick
    # accounting mostly charges it to the task it interrupted, so it is inside the others.
    read -r LAST_CPU LAST_OTHER < <(awk -v t="$((after - before))" -v hz="$CLK_TCK" -v r="$real" \
        -v u="$user" -v s="$sys" -v mb="$((b1 - b0))" -v mt="$((t1 - t0))" -v mq="$((q1 - q0))" \
        -v n="$NCPU" 'BEGIN {
            server = 100 * t / hz / r; client = 100 * (u + s) / r
            all = 100 * n * mb / mt; softirq = 100 * n * mq / mt
            other = all - server - client; if (other < 0) other = 0
            printf "CPU:server=%.0f%%,wrk=%.0f%%,other=%.0f%%,(softirq=%.0f%%) %.0f\n",
                server, client, other, softirq, other }')
    LAST_BAD=$(grep -E "Non-2xx|Socket errors" "$out" | tr -s ' ' | paste -sd ';' - || true)
    [ -n "$LAST_RPS" ] && [ "$LAST_P99" != "nan" ] || die "could not parse $out"
}

wrk_rounds() { # FIRST SECOND: ROUNDS rounds of DURATION each, the order alternating
    # (FIRST SECOND, SECOND FIRST, ...) so that drift hits both; a run during which other
    # processes used more than OTHER_MAX % of a core is repeated, at most RETRIES times
    local first=$1 second=$2 round order target pid url attempt out line
    for ((round = 1; round <= ROUNDS; round++)); do
        if ((round % 2 == 1)); then order="$first $second"; else order="$second $first"; fi
        for target in $order; do
            pid=${TARGET_PID[$target]} url=${TARGET_URL[$target]}
            for ((attempt = 0; attempt <= RETRIES; attempt++)); do
                wait_quiet
                out="$RESULTS/wrk-$round-$target.txt"
                if ((attempt > 0)); then out="$RESULTS/wrk-$round-$target-retry$attempt.txt"; fi
                run_wrk "$target" "$pid" "$url" "$out" "$DURATION"
                line=$(printf "   round %d  %-8s  %10.0f req/s  p99 %7.3f ms  %s" \
                    "$round" "$target" "$LAST_RPS" "$LAST_P99" "${LAST_CPU//,/ }")
                if [ "$LAST_OTHER" -le "$OTHER_MAX" ]; then break; fi
                if ((attempt < RETRIES)); then
                    echo "$line  (other load: repeating)"
                else
                    line="$line  (NOISY: other load throughout)"
                fi
            done
            if [ -n "$LAST_BAD" ]; then
                line="$line  !! $LAST_BAD"
                BAD[$target]=1
            fi
            echo "$line"
            PER_RUN+=("$line")
            RPS_SUM[$target]=$(awk -v a="${RPS_SUM[$target]:-0}" -v b="$LAST_RPS" 'BEGIN { print a + b }')
            P99_WORST[$target]=$(awk -v a="${P99_WORST[$target]:-0}" -v b="$LAST_P99" 'BEGIN { print (b > a ? b : a) }')
            RUNS[$target]=$((${RUNS[$target]:-0} + 1))
        done
    done
}

mean() { awk -v s="${RPS_SUM[$1]}" -v n="${RUNS[$1]}" 'BEGIN { printf "%.0f", s / n }'; }
