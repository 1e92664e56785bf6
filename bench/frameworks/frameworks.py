#!/usr/bin/python3
"""Boot vs restore (eager, cow, prefetch) of the framework examples (examples/README.md, "Frameworks").

  bench/frameworks/frameworks.py [--build DIR] [--repeats N] [--examples a,b,...] [--out FILE.csv]

Build first: ninja -C build initless example_spring_jetty example_netty_hello
Each example is snapshotted once (`initless snapshot DIR --image IMG --json`); then each repeat runs, interleaved
so that load from other users of the machine falls on every mode alike:
  boot      `initless run DIR --request PATH --json`                       cold = prepare + init + exec
  eager     `initless restore IMG --strategy eager --instances 1 --request PATH --json --no-fallback`
  cow, prefetch the same with their --strategy                             cold = restore + exec
(prepare_ms of a restore, the pre-started sandbox and restorer, is not in cold, as in bench/restore.)
Prints one markdown table of medians (ms) and writes every measurement to the CSV.
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# example -> (directory relative to the source or build dir, request path)
EXAMPLES = {
    "gunicorn-flask": ("examples/gunicorn-flask", "/"),
    "uvicorn-fastapi": ("examples/uvicorn-fastapi", "/"),
    "django-hello": ("examples/django-hello", "/"),
    "express-hello": ("examples/express-hello", "/"),
    "spring-jetty": ("BUILD/examples/spring-jetty", "/"),
    "netty-hello": ("BUILD/examples/netty-hello", "/"),
    "pytorch-segment": ("examples/pytorch-segment", "/segment?seed=3"),
}
MODES = ["boot", "eager", "cow", "prefetch"]


def cli(binary, args, env):
    p = subprocess.run([binary] + args, env=env, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def measure(binary, mode, d, image, path, env):
    if mode == "boot":
        j = cli(binary, ["run", d, "--request", path, "--json"], env)
        if j["status"] != 200:
            raise RuntimeError(f"boot answered {j['status']}")
        return {"cold_ms": j["prepare_ms"] + j["init_ms"] + j["exec_ms"], "prepare_ms": j["prepare_ms"],
                "init_ms": j["init_ms"], "restore_ms": "", "exec_ms": j["exec_ms"]}
    j = cli(binary, ["restore", image, "--strategy", mode, "--instances", "1", "--request", path, "--json",
                     "--no-fallback"], env)
    inst = j["instances"][0]
    if inst["mode"] != "restore" or inst["status"] != 200:
        raise RuntimeError(f"{mode}: {inst}")
    return {"cold_ms": inst["restore_ms"] + inst["exec_ms"], "prepare_ms": inst["prepare_ms"], "init_ms": "",
            "restore_ms": inst["restore_ms"], "exec_ms": inst["exec_ms"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--examples", default=",".join(EXAMPLES))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench", "frameworks.csv"))
    a = ap.parse_args()
    binary = os.path.join(a.build, "initless")
    work = tempfile.mkdtemp(prefix="initless-frameworks-")
    env = dict(os.environ, INITLESS_STATE_DIR=os.path.join(work, "state"))
    # The commit the measured binary was built from (its --version), not the checkout's HEAD.
    commit = (subprocess.run([os.path.join(ROOT, "build", "initless"), "--version"], capture_output=True,
                             text=True).stdout.partition("commit: ")[2].split() or ["unknown"])[0]
    print(f"# {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}, {platform.node()}, "
          f"nproc {os.cpu_count()}, kernel {platform.release()}, load {os.getloadavg()[0]:.2f}", flush=True)
    rows, snaps = [], {}
    for name in a.examples.split(","):
        rel, path = EXAMPLES[name]
        d = rel.replace("BUILD", a.build) if rel.startswith("BUILD") else os.path.join(ROOT, rel)
        image = os.path.join(work, name)
        snaps[name] = cli(binary, ["snapshot", d, "--image", image, "--json"], env)
        for r in range(a.repeats):
            for mode in MODES:
                try:
                    m = measure(binary, mode, d, image, path, env)
                    m.update(status="ok", reason="")
                except Exception as e:  # a failure is a row, and the bench goes on
                    m = {"status": "fail", "reason": str(e)[:300]}
                rows.append(dict(example=name, mode=mode, repeat=r, **m))
        subprocess.run(["rm", "-rf", image])
        print(f"{name}: done", file=sys.stderr, flush=True)
    fields = ["example", "mode", "repeat", "status", "cold_ms", "prepare_ms", "init_ms", "restore_ms", "exec_ms",
              "reason"]
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    def med(name, mode, key="cold_ms"):
        v = [r[key] for r in rows if r["example"] == name and r["mode"] == mode and r["status"] == "ok"]
        return (statistics.median(v), len(v)) if v else (None, 0)

    print("| function | image MB | processes / threads | boot cold | eager cold | cow cold | prefetch cold | "
          "boot/cow | boot/prefetch | ok runs (boot/eager/cow/prefetch) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name in a.examples.split(","):
        s = snaps[name]
        m = {mode: med(name, mode) for mode in MODES}
        cell = lambda x: "fail" if x is None else f"{x:.0f}" if x >= 100 else f"{x:.1f}"
        ratio = lambda x, y: "" if x is None or y is None else f"{x / y:.0f}x"
        print(f"| {name} | {s['image_bytes'] / 2**20:.0f} | {s['processes']} / {s['threads']} | "
              + " | ".join(cell(m[mode][0]) for mode in MODES)
              + f" | {ratio(m['boot'][0], m['cow'][0])} | {ratio(m['boot'][0], m['prefetch'][0])} | "
              + "/".join(str(m[mode][1]) for mode in MODES) + " |")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
