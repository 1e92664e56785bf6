#!/usr/bin/python3
"""Markdown tables from docs/bench/policy-<trace>.csv: per budget and world, every policy's cold starts,
cold-start overhead, and memory kept idle, with overhead relative to ttl. For docs/bench/policy-faascache-
<trace>.csv (FaaSCache's model): cold starts, dropped requests, overhead and the execution-time increase,
each relative to ttl."""
import csv
import sys

ORDER = ["ttl", "lru", "greedy-dual", "greedy-dual-instance", "greedy-dual-shared", "hybrid-histogram", "icebreaker",
         "tiered"]


def ours(rows, worlds=("restore", "boot")):
    for world in worlds:
        budgets = sorted({float(r["memory_mb"]) for r in rows if r["world"] == world})
        if not budgets:
            continue
        print(f"\n{rows[0]['trace']}, cold starts are {world}s:\n")
        print("| budget | policy | cold starts (from memory) | pre-warmed starts | overhead (s) | vs ttl | idle+snapshot memory (TB-h) |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        for b in budgets:
            at = {r["policy"]: r for r in rows if r["world"] == world and float(r["memory_mb"]) == b}
            ttl = float(at["ttl"]["cold_start_overhead_s"])
            for p in ORDER:
                if p not in at:
                    continue
                r = at[p]
                o = float(r["cold_start_overhead_s"])
                mem = f" ({int(r['cold_from_memory']):,})" if int(r["cold_from_memory"]) else ""
                print(f"| {b / 1024:.0f} GB | {p} | {int(r['cold_starts']):,}{mem} | {int(r['pre_warmed_starts']):,} | "
                      f"{o:,.0f} | {ttl / o:.2f}x | {float(r['memory_wasted_gb_s']) / 1024 / 3600:.2f} |")


def faascache(rows):
    budgets = sorted({float(r["memory_mb"]) for r in rows})
    inv = int(rows[0]["invocations"])
    print(f"\n{rows[0]['trace']} ({inv:,} invocations), FaaSCache's model:\n")
    print("| node memory | policy | cold starts | dropped | overhead (s) | vs ttl | execution-time increase | vs ttl |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b in budgets:
        at = {r["policy"]: r for r in rows if float(r["memory_mb"]) == b}
        ttl_o = float(at["ttl"]["cold_start_overhead_s"])
        ttl_s = float(at["ttl"]["mean_slowdown"])
        for p in ORDER:
            if p not in at:
                continue
            r = at[p]
            o, s = float(r["cold_start_overhead_s"]), float(r["mean_slowdown"])
            d = int(r["dropped"])
            print(f"| {b / 1024 / 1024:g} TB | {p} | {int(r['cold_starts']):,} | {d:,} ({100 * d / inv:.1f}%) | {o:,.0f} | "
                  f"{ttl_o / o:.2f}x | {100 * s:.2f}% | {ttl_s / s:.2f}x |")


def main(path):
    rows = list(csv.DictReader(open(path)))
    if rows and rows[0].get("model") == "faascache":
        faascache(rows)
    else:
        ours(rows)


for p in sys.argv[1:]:
    main(p)
