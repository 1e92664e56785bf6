#!/bin/sh
# Replays the Azure samples through every policy at several keep-alive memory budgets, with cold starts
# as restores and as boots, and writes docs/bench/policy-<trace>.csv and the plots (plot.py).
# Usage: bench/policy/sweep.sh [build-dir]   (from the repository root; default build dir: build-sim)
set -eu
BUILD=${1:-build-sim}
SEED=${SEED:-1}
JOBS=${JOBS:-2}
mkdir -p docs/bench
run() {  # trace budgets...
    trace=$1
    budgets=$2
    out=docs/bench/policy-$trace.csv
    echo "sweep: $trace at $budgets MB" >&2
    start=$(date +%s)
    "$BUILD/initless" sim --trace "data/azure-functions-2019/$trace" --policy all --memory-mb "$budgets" \
        --cold-start both --seed "$SEED" --jobs "$JOBS" --costs bench/costs.csv --csv >"$out.tmp"
    mv "$out.tmp" "$out"
    echo "sweep: $trace took $(( $(date +%s) - start )) s" >&2
}
run sampled-200 16384,65536,262144,1048576
run sampled-1000 65536,262144,1048576,4194304
/usr/bin/python3 bench/policy/plot.py docs/bench/policy-sampled-200.csv docs/bench/policy-sampled-1000.csv
