#!/usr/bin/env bash
# bench/authorizers.sh: one third-party platform with 100,000 authorizers. Results are
# recorded in BENCHMARKS.md, section "Authorizers".
#
# The `authorizers` binary (bench/src/authorizers.rs) runs the release wechat-emulator
# (authorizer tokens of EXPIRES_IN seconds, a component that pushes its verify ticket to
# the server) and the release `wxtoken serve` on a fresh SQLite file, as separate
# processes, and measures: the server's RSS and start-up with no authorizer (the
# baseline); onboarding AUTHORIZERS authorizations through POST .../authorizers; RSS with
# them; start-up from the store (a restart); then RUN_SECS of CLIENTS loops reading random
# authorizers' tokens while the first refresh wave passes: api_authorizer_token calls per
# second against the cap (keeper.authorizer_refresh_per_sec = CAP), and how many tokens
# were served with less than MIN_TTL seconds left.
#
# Targets: peak RSS < 300 MB, start-up < 3 s, calls per second <= CAP, 0 tokens below
# MIN_TTL, no failed request.
#
# Usage: bash bench/authorizers.sh
# Env:   AUTHORIZERS=100000 EXPIRES_IN=600 REFRESH_AHEAD=300 CAP=1000 RUN_SECS=420
#        CLIENTS=32 MIN_TTL=60
#        (a quick run: AUTHORIZERS=10000 EXPIRES_IN=120 REFRESH_AHEAD=60 CAP=200 RUN_SECS=100)
# Output: the figures on stdout; logs, config, database and per-second.txt (calls each
#         second) in bench/results/<timestamp>-authorizers/ (gitignored).
# Exit:  0 if every target is met, 1 if one is missed, 2 if the benchmark could not run.
set -euo pipefail

AUTHORIZERS=${AUTHORIZERS:-100000}
EXPIRES_IN=${EXPIRES_IN:-600}
REFRESH_AHEAD=${REFRESH_AHEAD:-300}
CAP=${CAP:-1000}
RUN_SECS=${RUN_SECS:-420}
CLIENTS=${CLIENTS:-32}
MIN_TTL=${MIN_TTL:-60}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS="$ROOT/bench/results/$STAMP-authorizers"
mkdir -p "$RESULTS"

echo "== building (release)"
cargo build --release -p wxtoken -p wechat-emulator -p wxtoken-bench
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

{
    echo "wxtoken authorizers benchmark  $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "($(git status --porcelain 2>/dev/null | wc -l) changed files in the tree)"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "AUTHORIZERS=$AUTHORIZERS EXPIRES_IN=$EXPIRES_IN REFRESH_AHEAD=$REFRESH_AHEAD CAP=$CAP" \
        "RUN_SECS=$RUN_SECS CLIENTS=$CLIENTS MIN_TTL=$MIN_TTL"
} | tee "$RESULTS/summary.txt"

set +e
"$BIN/authorizers" --wxtoken "$BIN/wxtoken" --emulator "$BIN/wechat-emulator" \
    --dir "$RESULTS" --authorizers "$AUTHORIZERS" --expires-in "$EXPIRES_IN" \
    --refresh-ahead "$REFRESH_AHEAD" --cap "$CAP" --run-secs "$RUN_SECS" \
    --clients "$CLIENTS" --min-ttl "$MIN_TTL" | tee -a "$RESULTS/summary.txt"
status=${PIPESTATUS[0]}
set -e
rm -f "$RESULTS/wxtoken.db" "$RESULTS/wxtoken.db-wal" "$RESULTS/wxtoken.db-shm"
echo "results in $RESULTS"
exit "$status"
