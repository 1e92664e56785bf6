#!/usr/bin/python3
"""Plots docs/bench/policy-faascache-<trace>.csv (`initless sim --model faascache --csv`, see sweep.sh):
policy-faascache-<trace>.png, four panels against the node's memory (running and idle instances):
cold-start overhead, FaaSCache's "increase in execution time" (mean over served invocations of delay / run
time), requests dropped for want of memory, and ttl's overhead divided by greedy-dual's, beside the
paper's reported ~3x (representative functions, 15-80 GB) and ~2x (rare functions, 40-50 GB)."""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "ttl": ("tab:gray", "o"),
    "lru": ("tab:brown", "v"),
    "greedy-dual": ("tab:blue", "s"),
    "greedy-dual-instance": ("tab:cyan", "D"),
    "greedy-dual-shared": ("tab:olive", "X"),
    "tiered": ("tab:red", "*"),
}


def plot(path):
    rows = [r for r in csv.DictReader(open(path)) if r.get("model", "") == "faascache"]
    trace = rows[0]["trace"]
    base = os.path.splitext(path)[0]
    policies = [p for p in STYLE if any(r["policy"] == p for r in rows)]

    def series(policy, col):
        pts = sorted((float(r["memory_mb"]) / 1024, r) for r in rows if r["policy"] == policy)
        return [x for x, _ in pts], [col(r) for _, r in pts]

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    panels = (
        ("cold-start overhead (hours per day)", lambda r: float(r["cold_start_overhead_s"]) / 3600, "log"),
        ("increase in execution time (%)", lambda r: 100 * float(r["mean_slowdown"]), "log"),
        ("requests dropped (% of invocations)", lambda r: 100 * int(r["dropped"]) / int(r["invocations"]), "linear"),
    )
    for ax, (label, col, yscale) in zip(axes, panels):
        for p in policies:
            xs, ys = series(p, col)
            color, marker = STYLE[p]
            ax.plot(xs, ys, marker=marker, color=color, label=p)
        ax.set_xscale("log")
        ax.set_yscale(yscale)
        ax.set_xlabel("node memory: running + idle instances (GB)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    ax = axes[3]
    by = {}
    for r in rows:
        by.setdefault(float(r["memory_mb"]) / 1024, {})[r["policy"]] = r
    xs = sorted(b for b in by if "ttl" in by[b] and "greedy-dual" in by[b])
    for metric, key, style in (("overhead", "cold_start_overhead_s", "s-"), ("execution-time increase", "mean_slowdown", "o--")):
        ys = [float(by[b]["ttl"][key]) / max(1e-12, float(by[b]["greedy-dual"][key])) for b in xs]
        ax.plot(xs, ys, style, color="tab:blue", label=f"ttl / greedy-dual, {metric}")
    ax.axhline(3, color="tab:green", ls=":", label="paper: ~3x (representative)")
    ax.axhline(2, color="tab:olive", ls=":", label="paper: ~2x (rare)")
    ax.axhline(1, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("node memory: running + idle instances (GB)")
    ax.set_ylabel("greedy-dual's improvement over ttl (x)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{trace}, FaaSCache's model (initless sim --model faascache)")
    fig.tight_layout()
    out = f"{base}.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print("wrote", out)


for p in sys.argv[1:]:
    plot(p)
