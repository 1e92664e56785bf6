#!/usr/bin/python3
"""Plots docs/bench/policy-<trace>.csv (written by `initless sim --csv`, see sweep.sh):
policy-<trace>-overhead.png: cold-start overhead against the keep-alive memory budget, restores and boots;
policy-<trace>-wasted.png: cold-start overhead against the memory-time actually kept idle."""
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
    "hybrid-histogram": ("tab:green", "^"),
    "icebreaker": ("tab:purple", "P"),
    "tiered": ("tab:red", "*"),
}


def load(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def series(rows, world, policy, x, y):
    pts = sorted((float(r[x]), float(r[y])) for r in rows if r["world"] == world and r["policy"] == policy)
    return [p[0] for p in pts], [p[1] for p in pts]


def plot(path):
    rows = load(path)
    trace = rows[0]["trace"]
    base = os.path.splitext(path)[0]
    policies = [p for p in STYLE if any(r["policy"] == p for r in rows)]
    for kind, xcol, xlabel, scale in (
        ("overhead", "memory_mb", "keep-alive memory budget (GB)", 1 / 1024),
        ("wasted", "memory_wasted_gb_s", "memory kept idle (TB-hours)", 1 / 1024 / 3600),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
        for ax, world in zip(axes, ("restore", "boot")):
            for p in policies:
                xs, ys = series(rows, world, p, xcol, "cold_start_overhead_s")
                if not xs:
                    continue
                color, marker = STYLE[p]
                ax.plot([x * scale for x in xs], [y / 3600 for y in ys], marker=marker, color=color, label=p)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("cold-start overhead (hours per day)")
            ax.set_title(f"{trace}: cold starts are {'restores' if world == 'restore' else 'boots'}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        out = f"{base}-{kind}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        print("wrote", out)


for p in sys.argv[1:]:
    plot(p)
