#!/bin/sh
# Replays the Azure samples through every policy at several keep-alive memory budgets, with cold starts
# as restores (all budgets) and as boots (fewer budgets on sampled-1000, to keep the sweep short), and
# writes docs/bench/policy-<trace>.csv and the plots (plot.py).
# Usage: bench/policy/sweep.sh [build-dir]   (from the repository root; default build dir: build-sim)
set -eu
BUILD=${1:-build-sim}
SEED=${SEED:-1}
JOBS=${JOBS:-2}
mkdir -p docs/bench
sim() {  # trace world budgets
    "$BUILD/initless" sim --trace "data/azure-functions-2019/$1" --policy all --cold-start "$2" --memory-mb "$3" \
        --seed "$SEED" --jobs "$JOBS" --costs bench/costs.csv --csv
}
run() {  # trace restore-budgets boot-budgets
    out=docs/bench/policy-$1.csv
    start=$(date +%s)
    sim "$1" restore "$2" >"$out.tmp"
    sim "$1" boot "$3" | tail -n +2 >>"$out.tmp"
    mv "$out.tmp" "$out"
    echo "sweep: $1 took $(( $(date +%s) - start )) s" >&2
}
run sampled-200 16384,65536,262144,1048576 16384,65536,262144,1048576
run sampled-1000 65536,262144,1048576,4194304 262144,1048576
/usr/bin/python3 bench/policy/plot.py docs/bench/policy-sampled-200.csv docs/bench/policy-sampled-1000.csv
