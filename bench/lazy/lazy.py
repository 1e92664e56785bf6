#!/usr/bin/python3
"""Memory-heavy requests after a restore, per memory strategy, against the same instance warm; and the
image store tiers (page-cache warm, tmpfs, disk with the page cache dropped). One run, medians of repeats.

  bench/lazy/lazy.py [--build DIR] [--repeats N] [--workloads bigdict,pytorch] [--strategies cow,prefetch,lazy]
                     [--tiers warm,tmpfs,cold] [--work-dir DIR] [--out-dir docs/bench]

Workloads (function dirs made under --work-dir from the examples):
  bigdict  examples/python-bigdict with BIGDICT_N = 10 000 000 (about 1.3 GB); heavy request GET /checksum
           (reads every entry: every page of the dict), light request GET /.
  pytorch  examples/pytorch-segment with MODEL_MB = 160; heavy request GET / (one inference: every weight).
Each is snapshotted once (`initless snapshot`, working set recorded). Then, per repeat, interleaved:
  heavy    `initless restore IMG --strategy S --request HEAVY --requests 3 --json --no-fallback`
           first_ms = the first request after the restore; warm_ms = the median of requests 2 and 3 on the
           same instance (every page is in by then: a warm instance); ratio = first_ms / warm_ms.
  light    `... --request / --requests 1` for bigdict: cold_ms = restore_ms + first_ms.
  tiers    light (bigdict) and heavy (pytorch) requests for prefetch and lazy with the image on disk after
           `echo 3 > /proc/sys/vm/drop_caches` (cold; `--no-verify`, since verifying reads the whole
           image), in /dev/shm (tmpfs), and on disk with a warm page cache (warm).
Writes <out-dir>/lazy.csv (one row per measurement), lazy.md (machine, medians, ratios) and lazy.png.
The machine is a shared 2-core VM: absolute numbers move with other users' load; compare within a run.
"""
import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIELDS = ["workload", "tier", "strategy", "request", "repeat", "restore_ms", "first_ms", "warm_ms", "ratio",
          "cold_ms", "faults", "pages_copied", "pages_zeroed", "pages_prefetched", "fill_complete_ms",
          "status", "reason"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def function_dir(work, name):
    if name == "bigdict":
        src, subs = "python-bigdict", {"BIGDICT_N": '"10000000"', "memory_mb": "2600", "timeout_s": "200"}
    else:
        src, subs = "pytorch-segment", {"MODEL_MB": '"160"', "memory_mb": "2048", "timeout_s": "120"}
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "examples", src), d)
    toml = open(os.path.join(d, "function.toml")).read()
    for key, value in subs.items():
        toml, k = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", toml)
        if k != 1:
            sys.exit(f"examples/{src}/function.toml has no single `{key} =` line")
    open(os.path.join(d, "function.toml"), "w").write(toml)
    return d


def run(cmd, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr[-600:]}")
    return p.stdout


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def restore(binary, image, strategy, path, requests, cold=False):
    cmd = [binary, "restore", image, "--strategy", strategy, "--request", path, "--requests", str(requests),
           "--json", "--no-fallback"]
    if cold:
        cmd.append("--no-verify")
        drop_caches()
    out = json.loads(run(cmd))
    inst = out["instances"][0]
    if inst.get("status") != 200:
        raise RuntimeError(f"status {inst.get('status')}: {inst.get('body', '')[:200]}")
    each = inst.get("exec_ms_each", [inst["exec_ms"]])
    m = inst.get("memory", {})
    row = {"restore_ms": inst["restore_ms"], "first_ms": each[0], "cold_ms": inst["restore_ms"] + each[0],
           "faults": m.get("faults", ""), "pages_copied": m.get("pages_copied", ""),
           "pages_zeroed": m.get("pages_zeroed", ""), "pages_prefetched": m.get("pages_prefetched", ""),
           "fill_complete_ms": m.get("complete_ms", "")}
    if len(each) > 1:
        row["warm_ms"] = statistics.median(each[1:])
        row["ratio"] = each[0] / row["warm_ms"]
    return row


def med(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key) not in ("", None)]
    return statistics.median(vals) if vals else float("nan")


def report(rows, out_dir, args, commit):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "lazy.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    ok = [r for r in rows if r["status"] == "ok"]
    groups = {}
    for r in ok:
        groups.setdefault((r["workload"], r["tier"], r["request"], r["strategy"]), []).append(r)
    lines = [f"# Memory-heavy requests and image tiers after a restore (bench/lazy/lazy.py)", "",
             f"- commit {commit}, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {platform.node()}, "
             f"{os.cpu_count()} CPUs, kernel {platform.release()}; shared VM: compare within this run",
             f"- repeats: {args.repeats}; medians. first = first request after the restore, warm = requests 2-3 on "
             f"the same instance, ratio = first / warm (target <= 1.2); cold = restore + first request",
             "", "| workload | tier | request | strategy | n | restore ms | first ms | warm ms | ratio | cold ms | faults | fill done ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (wl, tier, req, strat), rs in sorted(groups.items()):
        lines.append(f"| {wl} | {tier} | {req} | {strat} | {len(rs)} | {med(rs, 'restore_ms'):.1f} | "
                     f"{med(rs, 'first_ms'):.1f} | {med(rs, 'warm_ms'):.1f} | {med(rs, 'ratio'):.2f} | "
                     f"{med(rs, 'cold_ms'):.1f} | {med(rs, 'faults'):.0f} | {med(rs, 'fill_complete_ms'):.0f} |")
    # Issue 11, item 3, per strategy: every memory-heavy request (warm tier) within 1.2x of a warm one
    # while bigdict's GET / (restore + first response, warm tier) stays at or under 15 ms.
    verdict = []
    for strat in sorted({k[3] for k in groups}):
        heavy = {k[0]: med(v, "ratio") for k, v in groups.items()
                 if k[1] == "warm" and k[3] == strat and not math.isnan(med(v, "ratio"))}
        light = groups.get(("bigdict", "warm", "/", strat))
        if not heavy or not light:
            continue
        light_ms = med(light, "cold_ms")
        met = all(r <= 1.2 for r in heavy.values()) and light_ms <= 15
        verdict.append(f"- {strat}: " + ", ".join(f"{wl} heavy {r:.2f}x" for wl, r in sorted(heavy.items())) +
                       f"; bigdict GET / {light_ms:.1f} ms: {'met' if met else 'not met'}")
    if verdict:
        lines += ["", "Target (memory-heavy request <= 1.2x warm, while bigdict GET / <= 15 ms), warm tier:"] + verdict
    fails = [r for r in rows if r["status"] != "ok"]
    if fails:
        lines += ["", "Failures:"] + [f"- {r['workload']} {r['tier']} {r['strategy']} {r['request']}: {r['reason']}"
                                      for r in fails]
    open(os.path.join(out_dir, "lazy.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no matplotlib: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    heavy = [(k, v) for k, v in sorted(groups.items()) if k[1] == "warm" and "ratio" in v[0]]
    axes[0].bar([f"{k[0]}\n{k[3]}" for k, _ in heavy], [med(v, "ratio") for _, v in heavy])
    axes[0].axhline(1.2, color="red", linestyle="--", label="target 1.2")
    axes[0].set_ylabel("first request / warm request")
    axes[0].set_title("memory-heavy request after a restore")
    axes[0].legend()
    tiers = [(k, v) for k, v in sorted(groups.items()) if k[1] != "warm" or k[2] == "/"]
    axes[1].bar([f"{k[0]} {k[2]}\n{k[1]} {k[3]}" for k, _ in tiers], [med(v, "cold_ms") for _, v in tiers])
    axes[1].set_yscale("log")
    axes[1].set_ylabel("restore + first request, ms (log)")
    axes[1].set_title("image store tiers")
    axes[1].tick_params(axis="x", labelsize=7, rotation=60)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "lazy.png"), dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workloads", default="bigdict,pytorch")
    ap.add_argument("--strategies", default="cow,prefetch,lazy")
    ap.add_argument("--tiers", default="warm,tmpfs,cold")
    ap.add_argument("--work-dir", default="/var/tmp/initless-bench-lazy")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "bench"))
    args = ap.parse_args()
    binary = os.path.join(args.build, "initless")
    # The commit the measured binary was built from (its --version), not the checkout's HEAD.
    commit = (subprocess.run([os.path.join(ROOT, "build", "initless"), "--version"], capture_output=True,
                             text=True).stdout.partition("commit: ")[2].split() or ["unknown"])[0]
    os.makedirs(args.work_dir, exist_ok=True)
    os.environ.setdefault("INITLESS_STATE_DIR", os.path.join(args.work_dir, "state"))
    rows = []
    strategies = args.strategies.split(",")
    tiers = [t for t in args.tiers.split(",") if t != "warm"]
    for wl in args.workloads.split(","):
        d = function_dir(args.work_dir, wl)
        image = os.path.join(args.work_dir, f"{wl}-image")
        shutil.rmtree(image, ignore_errors=True)
        log(f"{wl}: snapshot")
        snap = json.loads(run([binary, "snapshot", d, "--image", image, "--json"], timeout=1200))
        log(f"{wl}: image {snap.get('image_bytes', 0) / 2**20:.0f} MiB, working set {snap.get('working_set_pages')} pages")
        heavy = "/checksum" if wl == "bigdict" else "/"
        shm = f"/dev/shm/initless-bench-lazy-{wl}"
        if "tmpfs" in tiers:
            shutil.rmtree(shm, ignore_errors=True)
            # cp -a, not shutil.copytree: the trees' owners (the sandbox's root) are part of their
            # authenticated digest, and copytree leaves them root's, so the copy would be refused.
            subprocess.run(["cp", "-a", image, shm], check=True)
        for rep in range(args.repeats):
            plan = [("warm", s, heavy, 3) for s in strategies]
            if wl == "bigdict":
                plan += [("warm", s, "/", 1) for s in strategies]
            light = "/" if wl == "bigdict" else heavy
            for tier in tiers:
                plan += [(tier, s, light, 1) for s in ("prefetch", "lazy") if s in strategies]
            for tier, strat, path, n in plan:
                row = {"workload": wl, "tier": tier, "strategy": strat, "request": path, "repeat": rep}
                try:
                    where = shm if tier == "tmpfs" else image
                    row.update(restore(binary, where, strat, path, n, cold=tier == "cold"))
                    row["status"] = "ok"
                except Exception as e:  # a failure is a row, the bench goes on
                    row.update(status="fail", reason=str(e)[:300])
                log(f"{wl} {tier} {strat} {path} #{rep}: " +
                    (f"restore {row['restore_ms']:.1f} first {row['first_ms']:.1f} warm {row.get('warm_ms', 0):.1f}"
                     if row["status"] == "ok" else row["reason"]))
                rows.append(row)
            report(rows, args.out_dir, args, commit)
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(image, ignore_errors=True)
    report(rows, args.out_dir, args, commit)
    # The function dirs and the state dir go too (gc first: nothing of a sandbox should be left in it).
    subprocess.run([binary, "gc"], capture_output=True)
    shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
