#!/usr/bin/python3
"""Two builds of initless side by side: the same functions booted and restored by each, interleaved.

  bench/restore/compare_builds.py --before DIR --after DIR [--repeats N] [--functions c-hello,python-hello]
                                  [--strategies cow,prefetch] [--out docs/bench/compare-builds.csv] [--label TEXT]

For a change that must not slow the request path (a restore's stage 2) or must say what it costs the
pre-started stage (stage 1, the sandbox), this bench answers "how much, in one run": each build makes its
own snapshot of each function (images of different formats cannot be shared), then every repeat runs
boot, and each strategy's restore, with the before build and the after build back to back, alternating
which goes first, so that load from other users of the machine falls on both alike.

Per measurement (from `--json`): boot: prepare_ms, init_ms, total_ms; restore: sandbox_ms (stage 1: the
pre-started sandbox), restore_ms (stage 2: the restore itself on the request path), exec_ms (first
response), cold_ms = restore_ms + exec_ms. Prints medians per build and the after - before difference,
and writes one CSV row per measurement. Each build's DIR holds `initless`; functions come from its examples/ or its source tree's.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile


def function_dir(build, fn):
    """build/examples/FN when the build made it (C and Java), else the source tree's examples/FN."""
    built = os.path.join(build, "examples", fn)
    if os.path.exists(os.path.join(built, "function.toml")):
        return built
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith("CMAKE_HOME_DIRECTORY:"):
                return os.path.join(line.split("=", 1)[1].strip(), "examples", fn)
    sys.exit(f"{build}: no CMakeCache.txt to find the source of {fn}")


def run_json(binary, args, env, timeout=120):
    r = subprocess.run([binary] + args + ["--json"], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--functions", default="c-hello,python-hello")
    ap.add_argument("--strategies", default="cow,prefetch")
    ap.add_argument("--out", default="docs/bench/compare-builds.csv")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    builds = {"before": os.path.abspath(a.before), "after": os.path.abspath(a.after)}
    functions = a.functions.split(",")
    strategies = a.strategies.split(",")
    work = tempfile.mkdtemp(prefix="initless-compare-")
    rows = []
    try:
        env = {}
        images = {}
        for name, build in builds.items():
            env[name] = dict(os.environ, INITLESS_STATE_DIR=os.path.join(work, name, "state"))
            os.makedirs(env[name]["INITLESS_STATE_DIR"])
            for fn in functions:
                image = os.path.join(work, name, "img-" + fn)
                r = subprocess.run([os.path.join(build, "initless"), "snapshot", function_dir(build, fn),
                                    "--image", image], env=env[name], capture_output=True, text=True, timeout=300)
                if r.returncode != 0:
                    sys.exit(f"{name}: snapshot of {fn} failed: {r.stderr.strip()[-400:]}")
                images[(name, fn)] = image
        for i in range(a.repeats):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            for fn in functions:
                for name in order:
                    binary = os.path.join(builds[name], "initless")
                    b = run_json(binary, ["run", function_dir(builds[name], fn), "--request", "/"],
                                 env[name])
                    rows.append({"build": name, "function": fn, "mode": "boot", "repeat": i,
                                 "stage1_ms": b["prepare_ms"], "stage2_ms": b["init_ms"], "exec_ms": b["exec_ms"],
                                 "cold_ms": b["total_ms"]})
                for s in strategies:
                    for name in order:
                        binary = os.path.join(builds[name], "initless")
                        r = run_json(binary, ["restore", images[(name, fn)], "--strategy", s, "--request", "/",
                                              "--no-fallback"], env[name])
                        inst = r["instances"][0]
                        rows.append({"build": name, "function": fn, "mode": s, "repeat": i,
                                     "stage1_ms": inst["sandbox_ms"], "stage2_ms": inst["restore_ms"],
                                     "exec_ms": inst["exec_ms"], "cold_ms": inst["restore_ms"] + inst["exec_ms"]})
            print(f"repeat {i + 1}/{a.repeats} done", file=sys.stderr)
    finally:
        subprocess.run(["rm", "-rf", work])

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print(f"# {a.label or 'before vs after'}: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()}, {os.cpu_count()} cores, {a.repeats} repeats, medians in ms")
    print("| function | mode | stage 1 before | stage 1 after | stage 2 before | stage 2 after | stage 2 delta | "
          "cold before | cold after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for fn in functions:
        for mode in ["boot"] + strategies:
            med = {}
            for name in builds:
                sel = [r for r in rows if r["build"] == name and r["function"] == fn and r["mode"] == mode]
                med[name] = {k: statistics.median(r[k] for r in sel) for k in ("stage1_ms", "stage2_ms", "cold_ms")}
            print(f"| {fn} | {mode} | {med['before']['stage1_ms']:.2f} | {med['after']['stage1_ms']:.2f} | "
                  f"{med['before']['stage2_ms']:.2f} | {med['after']['stage2_ms']:.2f} | "
                  f"{med['after']['stage2_ms'] - med['before']['stage2_ms']:+.2f} | "
                  f"{med['before']['cold_ms']:.2f} | {med['after']['cold_ms']:.2f} |")
    print(f"(rows: {a.out}; for boot, stage 1 is the sandbox's prepare and stage 2 the function's init)")


if __name__ == "__main__":
    main()
