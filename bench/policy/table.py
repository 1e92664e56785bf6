#!/usr/bin/python3
"""Markdown tables from docs/bench/policy-<trace>.csv: per budget and world, every policy's cold starts,
cold-start overhead, and memory kept idle, with overhead relative to ttl."""
import csv
import sys

ORDER = ["ttl", "lru", "greedy-dual", "greedy-dual-instance", "hybrid-histogram", "icebreaker", "tiered"]


def main(path, worlds=("restore", "boot")):
    rows = list(csv.DictReader(open(path)))
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


for p in sys.argv[1:]:
    main(p)
