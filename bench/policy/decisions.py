#!/usr/bin/python3
"""Which functions make one policy lose to another: reads the per-function CSV of `initless sim
--per-function FILE` and, for each budget, splits the difference in cold-start overhead between policy A and
policy B by function, then by groups of functions (by invocation count and memory), largest first.

Usage: bench/policy/decisions.py PER_FUNCTION.csv [--a greedy-dual] [--b lru] [--top 10]
"""
import argparse
import csv
from collections import defaultdict


def tbh(r):
    return float(r.get("idle_gb_s") or 0) / 1024 / 3600


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--a", default="greedy-dual")
    ap.add_argument("--b", default="lru")
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args()
    runs = defaultdict(dict)  # (model, world, budget) -> policy -> [rows]
    for r in csv.DictReader(open(a.csv)):
        runs[(r["model"], r["world"], float(r["memory_mb"]))].setdefault(r["policy"], []).append(r)
    for (model, world, budget), pols in sorted(runs.items()):
        if a.a not in pols or a.b not in pols:
            continue
        A = {r["function"]: r for r in pols[a.a]}
        B = {r["function"]: r for r in pols[a.b]}
        tot_a = sum(float(r["cold_start_overhead_s"]) for r in A.values())
        tot_b = sum(float(r["cold_start_overhead_s"]) for r in B.values())
        drop_a = sum(int(r["dropped"]) for r in A.values())
        drop_b = sum(int(r["dropped"]) for r in B.values())
        print(f"\n## {model} model, {world}, budget {budget / 1024:.0f} GB: {a.a} {tot_a:,.0f} s, {a.b} {tot_b:,.0f} s "
              f"(ratio {tot_a / tot_b if tot_b else float('inf'):.2f}); dropped {drop_a:,} vs {drop_b:,}")
        diff = []
        for f, ra in A.items():
            rb = B[f]
            d = float(ra["cold_start_overhead_s"]) - float(rb["cold_start_overhead_s"])
            diff.append((d, f, ra, rb))
        diff.sort(key=lambda x: -abs(x[0]))
        worse = sum(d for d, *_ in diff if d > 0)
        better = -sum(d for d, *_ in diff if d < 0)
        print(f"{a.a} loses {worse:,.0f} s on {sum(1 for d, *_ in diff if d > 0)} functions and gains {better:,.0f} s "
              f"on {sum(1 for d, *_ in diff if d < 0)}")
        print(f"| function | MB | cold start ms | invocations | cold {a.a} | cold {a.b} | overhead {a.a} (s) | "
              f"overhead {a.b} (s) | difference (s) | idle TB-h {a.a} | idle TB-h {a.b} |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for d, f, ra, rb in diff[: a.top]:
            print(f"| {f} ({ra['hash'][:6]}) | {float(ra['function_memory_mb']):,.0f} | {float(ra['init_ms']):,.0f} | "
                  f"{int(ra['invocations']):,} | {int(ra['cold_starts']):,} | {int(rb['cold_starts']):,} | "
                  f"{float(ra['cold_start_overhead_s']):,.0f} | {float(rb['cold_start_overhead_s']):,.0f} | {d:+,.0f} | "
                  f"{tbh(ra):.2f} | {tbh(rb):.2f} |")
        # Groups by invocations per day.
        groups = defaultdict(lambda: [0, 0.0, 0.0, 0, 0, 0.0, 0.0])
        for d, f, ra, rb in diff:
            n = int(ra["invocations"])
            g = "<= 100" if n <= 100 else "101-1,440" if n <= 1440 else "1,441-14,400" if n <= 14400 else "> 14,400"
            x = groups[g]
            x[0] += 1
            x[1] += float(ra["cold_start_overhead_s"])
            x[2] += float(rb["cold_start_overhead_s"])
            x[3] += int(ra["cold_starts"])
            x[4] += int(rb["cold_starts"])
            x[5] += tbh(ra)
            x[6] += tbh(rb)
        ia = sum(tbh(r) for r in A.values()) or 1
        ib = sum(tbh(r) for r in B.values()) or 1
        print(f"\n| invocations/day | functions | cold {a.a} | cold {a.b} | overhead {a.a} (s) | overhead {a.b} (s) | "
              f"share of idle memory-time, {a.a} | {a.b} |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for g in ["<= 100", "101-1,440", "1,441-14,400", "> 14,400"]:
            if g in groups:
                n, oa, ob, ca, cb, xa, xb = groups[g]
                print(f"| {g} | {n} | {ca:,} | {cb:,} | {oa:,.0f} | {ob:,.0f} | {100 * xa / ia:.0f}% | {100 * xb / ib:.0f}% |")


if __name__ == "__main__":
    main()
