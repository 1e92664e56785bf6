#!/bin/sh
# One command for every number of docs/policies.md:
#  1. the cost model, bench/costs.csv, from the restore bench (docs/bench/restore.csv) and the cold-cache
#     restores of bench/policy/cold_restores.py (docs/bench/restore-cold.csv: measured disk restores, used
#     where present, the estimate elsewhere: bench/policy/costs_from_bench.py);
#  2. our model: every policy, cold starts as restores (all budgets) and as boots (fewer budgets on
#     sampled-1000, to keep the sweep short): docs/bench/policy-<trace>.csv and plots (plot.py);
#  3. FaaSCache's model (--model faascache): ttl, lru and the greedy-dual variants across node memory sizes:
#     docs/bench/policy-faascache-<trace>.csv and .png (plot_faascache.py);
#  4. which functions make greedy-dual lose to lru in our model, at 256 GB:
#     docs/bench/policy-functions-<trace>.csv (per function) and docs/bench/policy-decisions-<trace>.md
#     (decisions.py);
#  5. sensitivity to the disk restore: ttl, greedy-dual and tiered with a disk 10x faster at random reads
#     (bench/policy/costs-fast-disk.csv): docs/bench/policy-sensitivity-fast-disk.csv.
# Usage: bench/policy/sweep.sh [build-dir]   (from the repository root; default build dir: build)
#   COSTS=file: use this cost model instead of rebuilding bench/costs.csv;
#   ONLY=ours|faascache|decisions|sensitivity: one step only
set -eu
BUILD=${1:-build}
SEED=${SEED:-1}
JOBS=${JOBS:-2}
ONLY=${ONLY:-}
mkdir -p docs/bench
# Measured cold-cache restores (bench/policy/cold_restores.py), when there are some.
COLD=""
[ -f docs/bench/restore-cold.csv ] && COLD="--cold docs/bench/restore-cold.csv"
if [ -z "${COSTS:-}" ]; then
    /usr/bin/python3 bench/policy/costs_from_bench.py docs/bench/restore.csv $COLD >bench/costs.csv.tmp
    mv bench/costs.csv.tmp bench/costs.csv
    COSTS=bench/costs.csv
fi
sim() {  # trace world budgets [more args]
    t=$1 w=$2 b=$3
    shift 3
    "$BUILD/initless" sim --trace "data/azure-functions-2019/$t" --cold-start "$w" --memory-mb "$b" \
        --seed "$SEED" --jobs "$JOBS" --costs "${SIM_COSTS:-$COSTS}" --csv "$@"
}
ours() {  # trace restore-budgets boot-budgets
    out=docs/bench/policy-$1.csv
    start=$(date +%s)
    sim "$1" restore "$2" --policy all >"$out.tmp"
    sim "$1" boot "$3" --policy all | tail -n +2 >>"$out.tmp"
    mv "$out.tmp" "$out"
    echo "sweep: $1 (our model) took $(($(date +%s) - start)) s" >&2
}
faascache() {  # trace budgets
    out=docs/bench/policy-faascache-$1.csv
    start=$(date +%s)
    sim "$1" boot "$2" --model faascache --policy ttl,lru,greedy-dual,greedy-dual-instance,greedy-dual-shared \
        >"$out.tmp"
    mv "$out.tmp" "$out"
    echo "sweep: $1 (FaaSCache's model) took $(($(date +%s) - start)) s" >&2
}
decisions() {  # trace
    sim "$1" restore 262144 --policy lru,greedy-dual,greedy-dual-instance,tiered \
        --per-function "docs/bench/policy-functions-$1.csv" >/dev/null
    /usr/bin/python3 bench/policy/decisions.py "docs/bench/policy-functions-$1.csv" --a greedy-dual --b lru \
        >"docs/bench/policy-decisions-$1.md"
    /usr/bin/python3 bench/policy/decisions.py "docs/bench/policy-functions-$1.csv" --a tiered --b lru \
        >>"docs/bench/policy-decisions-$1.md"
}
if [ -z "$ONLY" ] || [ "$ONLY" = ours ]; then
    ours sampled-200 16384,65536,262144,1048576 16384,65536,262144,1048576
    ours sampled-1000 65536,262144,1048576,4194304 262144,1048576
    /usr/bin/python3 bench/policy/plot.py docs/bench/policy-sampled-200.csv docs/bench/policy-sampled-1000.csv
fi
if [ -z "$ONLY" ] || [ "$ONLY" = faascache ]; then
    faascache sampled-200 262144,1048576,2097152,4194304,8388608,16777216
    faascache sampled-1000 8388608,16777216,33554432,67108864
    /usr/bin/python3 bench/policy/plot_faascache.py docs/bench/policy-faascache-sampled-200.csv \
        docs/bench/policy-faascache-sampled-1000.csv
fi
if [ -z "$ONLY" ] || [ "$ONLY" = decisions ]; then
    decisions sampled-200
    decisions sampled-1000
fi
if [ -z "$ONLY" ] || [ "$ONLY" = sensitivity ]; then
    /usr/bin/python3 bench/policy/costs_from_bench.py docs/bench/restore.csv --rand-us-per-page 20 --seq-mb-s 2000 \
        --disk-note "SENSITIVITY VARIANT, not the default model: restore_disk_ms for a disk 10x faster at random \
reads (20 us/page, NVMe-like) and 2 GB/s in order (--rand-us-per-page 20 --seq-mb-s 2000). The (Python pread \
...) lines describe the default's measurement." >bench/policy/costs-fast-disk.csv
    out=docs/bench/policy-sensitivity-fast-disk.csv
    SIM_COSTS=bench/policy/costs-fast-disk.csv
    sim sampled-200 restore 16384,65536,262144,1048576 --policy ttl,greedy-dual,tiered >"$out.tmp"
    sim sampled-1000 restore 262144,1048576 --policy ttl,greedy-dual,tiered | tail -n +2 >>"$out.tmp"
    SIM_COSTS=
    mv "$out.tmp" "$out"
fi
