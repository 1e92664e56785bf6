#!/usr/bin/python3
"""Plain-boot timings per example: runs `initless run <example> --json` N times each and writes
docs/bench/boot.csv (one row per run) and prints the medians.

  bench/boot/boot.py [--repeats N] [--build DIR] [--out CSV] [--plot PNG] [example ...]

prepare_ms is the sandbox's prepare (namespaces, cgroup, overlay root, pid-1 init), init_ms is the
function's start until its ready phrase, exec_ms the one request, total_ms their sum as the CLI sees it,
and wall_ms the whole `initless run` process (also exec of the CLI, garbage check and teardown), so
wall_ms - total_ms is about the teardown cost.
"""
import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = ["c-hello", "python-hello", "python-bigdict", "node-hello", "java-hello"]
BUILT = {"c-hello", "java-hello"}  # deployed from build/examples/<name>
PHASES = ["prepare_ms", "init_ms", "exec_ms", "total_ms", "wall_ms"]


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def example_dir(build, name):
    return os.path.join(build, "examples", name) if name in BUILT else os.path.join(ROOT, "examples", name)


def run_once(binary, directory, env):
    t0 = time.monotonic()
    p = subprocess.run([binary, "run", directory, "--json"], capture_output=True, text=True, env=env)
    wall = (time.monotonic() - t0) * 1000
    if p.returncode != 0:
        sys.exit(f"initless run {directory} failed ({p.returncode}):\n{p.stderr}")
    r = json.loads(p.stdout)
    if r["status"] != 200:
        sys.exit(f"initless run {directory}: status {r['status']}: {r['body']}")
    r["wall_ms"] = wall
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", "-n", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench", "boot.csv"))
    ap.add_argument("--plot", default=None, help="also write a bar chart of the medians (needs python3-matplotlib from apt)")
    ap.add_argument("examples", nargs="*", default=EXAMPLES)
    a = ap.parse_args()

    binary = os.path.join(a.build, "initless")
    machine = {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu_model()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="initless-bench-") as state:
        env = dict(os.environ, INITLESS_STATE_DIR=state)
        for name in a.examples:
            d = example_dir(a.build, name)
            run_once(binary, d, env)  # warm the page cache; not recorded
            for i in range(a.repeats):
                r = run_once(binary, d, env)
                rows.append({"example": name, "repeat": i + 1, **{k: round(r[k], 2) for k in PHASES}, **machine})

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", newline="") as f:
        f.write(f"# initless plain boot, `initless run EXAMPLE --json`, {a.repeats} repeats after one warm-up run; "
                f"nproc={machine['nproc']} kernel={machine['kernel']} cpu={machine['cpu']}\n")
        w = csv.DictWriter(f, fieldnames=["example", "repeat", *PHASES, "nproc", "kernel", "cpu"])
        w.writeheader()
        w.writerows(rows)

    print(f"medians of {a.repeats} runs (ms); rows in {a.out}")
    print(f"{'example':16}" + "".join(f"{p:>12}" for p in PHASES))
    medians = {}
    for name in a.examples:
        m = {p: statistics.median(r[p] for r in rows if r["example"] == name) for p in PHASES}
        medians[name] = m
        print(f"{name:16}" + "".join(f"{m[p]:12.1f}" for p in PHASES))
    prep = statistics.median(r["prepare_ms"] for r in rows)
    down = statistics.median(r["wall_ms"] - r["total_ms"] for r in rows)
    print(f"sandbox alone: prepare {prep:.1f} ms; CLI exec + gc check + teardown {down:.1f} ms (medians over all runs)")

    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        bottom = [0.0] * len(a.examples)
        for p in ["prepare_ms", "init_ms", "exec_ms"]:
            vals = [medians[n][p] for n in a.examples]
            ax.bar(a.examples, vals, bottom=bottom, label=p.replace("_ms", ""))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("ms (median)")
        ax.set_title(f"plain boot, {a.repeats} repeats; {machine['nproc']} cpus, {machine['kernel']}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=100)
        print(f"plot in {a.plot}")


if __name__ == "__main__":
    main()
