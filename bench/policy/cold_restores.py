#!/usr/bin/python3
"""Cold-cache restores for the simulator's cost model: python-bigdict at each size, a prefetch restore and its
first GET / with the page cache dropped before each call (mode prefetch-cold), interleaved with the same with
the image in the page cache (mode prefetch), in one run.

  bench/policy/cold_restores.py [--build DIR] [--sizes 0.1,1.3,2.5,5,9.8] [--repeats N] [--work-dir DIR]
                                [--out docs/bench/restore-cold.csv]
  bench/policy/costs_from_bench.py docs/bench/restore.csv --cold docs/bench/restore-cold.csv > bench/costs.csv

Per size: the function dir is examples/python-bigdict with BIGDICT_N = size / 1.3 x 10M (the example's own
calibration), memory_mb = 1.6 x size + 512 MB (as bench/restore does); it is snapshotted once
(`initless snapshot`, working set recorded), then each repeat runs
  prefetch       `initless restore IMG --strategy prefetch --request / --json --no-fallback`
  prefetch-cold  `sync; echo 3 > /proc/sys/vm/drop_caches`, then the same with --no-verify (verifying would
                 read the whole image first)
cold_ms is what the request waits for, as the simulator's cost model means it:
  prefetch       restore_ms + exec_ms: a pool's pre-started sandbox (stage 1 done) with the image in the page
                 cache, what docs/bench/restore.csv's prefetch rows are (the memory tier)
  prefetch-cold  prepare_ms + restore_ms + exec_ms: the image on disk and no sandbox prepared for it (a
                 prepared one would hold the restore set in memory: stage 1 reads it and waits), so the
                 sandbox, stage 1's reads and the restore are all on the request path (the disk tier)
The image is deleted after its size. Writes one CSV row per call in the column names
docs/bench/restore.csv uses (workload, size_gb, mode, repeat, prepare_ms, restore_ms, exec_ms, cold_ms, status).
The machine is a shared 2-core VM: compare within a run.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIELDS = ["workload", "size_gb", "mode", "repeat", "prepare_ms", "restore_ms", "exec_ms", "cold_ms", "status",
          "reason", "image_bytes", "working_set_pages"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def function_dir(work, size_gb):
    d = os.path.join(work, f"python-bigdict-{size_gb:g}gb")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "examples", "python-bigdict"), d)
    path = os.path.join(d, "function.toml")
    toml = open(path).read()
    subs = {"BIGDICT_N": f'"{int(size_gb / 1.3 * 10_000_000)}"', "memory_mb": str(int(size_gb * 1024 * 1.6) + 512),
            "timeout_s": str(max(30, int(60 * size_gb) + 60))}
    for key, value in subs.items():
        toml, k = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", toml)
        if k < 1:
            sys.exit(f"examples/python-bigdict/function.toml has no `{key} =` line")
    open(path, "w").write(toml)
    return d


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="0.1,1.3,2.5,5,9.8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work-dir", default="/var/tmp/initless-bench-cold")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench", "restore-cold.csv"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (sandboxes, drop_caches)")
    binary = os.path.join(a.build, "initless")
    # The commit the measured binary was built from (its --version), not the checkout's HEAD.
    commit = (subprocess.run([os.path.join(ROOT, "build", "initless"), "--version"], capture_output=True,
                             text=True).stdout.partition("commit: ")[2].split() or ["unknown"])[0]
    shutil.rmtree(a.work_dir, ignore_errors=True)
    os.makedirs(a.work_dir)
    env = dict(os.environ, INITLESS_STATE_DIR=os.path.join(a.work_dir, "state"))
    rows = []
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        for size in [float(s) for s in a.sizes.split(",")]:
            fdir = function_dir(a.work_dir, size)
            image = os.path.join(a.work_dir, "image")
            shutil.rmtree(image, ignore_errors=True)
            log(f"{size:g} GB: snapshot")
            p = subprocess.run([binary, "snapshot", fdir, "--image", image, "--json"], capture_output=True,
                               text=True, env=env, timeout=3600)
            base = {"workload": "python-bigdict", "size_gb": f"{size:.1f}"}
            if p.returncode != 0:
                rows.append(dict(base, mode="snapshot", status="fail", reason=p.stderr.strip()[-300:]))
                log(f"  snapshot failed: {p.stderr.strip()[-300:]}")
                continue
            snap = json.loads(p.stdout)
            rows.append(dict(base, mode="snapshot", status="ok", image_bytes=snap.get("image_bytes", ""),
                             working_set_pages=snap.get("working_set_pages", "")))
            for rep in range(1, a.repeats + 1):
                for mode in ("prefetch", "prefetch-cold"):
                    cmd = [binary, "restore", image, "--strategy", "prefetch", "--request", "/", "--json",
                           "--no-fallback"]
                    if mode == "prefetch-cold":
                        drop_caches()
                        cmd.append("--no-verify")
                    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
                    row = dict(base, mode=mode, repeat=rep)
                    try:
                        inst = json.loads(p.stdout)["instances"][0]
                        row.update(prepare_ms=round(inst["prepare_ms"], 2), restore_ms=round(inst["restore_ms"], 2),
                                   exec_ms=round(inst["exec_ms"], 2),
                                   cold_ms=round(inst["restore_ms"] + inst["exec_ms"] +
                                                 (inst["prepare_ms"] if mode == "prefetch-cold" else 0), 2),
                                   status=str(inst.get("status", "")))
                    except (ValueError, KeyError, IndexError):
                        row.update(status="fail", reason=(p.stderr.strip() or p.stdout.strip())[-300:])
                    rows.append(row)
                    log(f"  {mode} #{rep}: prepare {row.get('prepare_ms')} restore {row.get('restore_ms')} "
                        f"first {row.get('exec_ms')} cold {row.get('cold_ms')} ({row['status']})")
            shutil.rmtree(image, ignore_errors=True)
            shutil.rmtree(fdir, ignore_errors=True)
    finally:
        subprocess.run([binary, "gc"], env=env, capture_output=True)
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w", newline="") as f:
            f.write(f"# bench/policy/cold_restores.py run of {started:%Y-%m-%d %H:%M} UTC, binary {binary} at "
                    f"{commit}; {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
                    f"{a.repeats} repeats per size and mode, interleaved\n")
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in FIELDS})
        shutil.rmtree(a.work_dir, ignore_errors=True)
        log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
