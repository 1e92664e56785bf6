#!/usr/bin/python3
"""Restore + first response from a remote page server against a local lazy restore. One run, medians of repeats.

  bench/remote/remote.py [--build DIR] [--repeats N] [--work-dir DIR] [--out-dir docs/bench]

Two network namespaces joined by a veth pair stand in for two hosts (no rate limit: the veth is memory
speed, so this measures the protocol's and verification's cost, not a network's). Per workload, snapshotted
once (working set recorded with GET /): the image is served by `initless page-server` in the "server"
namespace, and a copy without pages.img (the manifest dir) is restored in the "client" namespace with
`initless restore MANIFEST --pages-from ADDR --request R --json --no-fallback`; the local baseline is
`initless restore IMAGE --strategy lazy --request R --json --no-fallback` in the same namespace. Interleaved
per repeat. Per run: fetch_ms (the working set and the pages the restore reads itself, fetched before any
sandbox is touched: on a request path it is part of the cold start unless done when the pool is filled),
restore_ms, exec_ms (the request), cold_ms = restore_ms + exec_ms, and the remote counters (read at the end of the
request: the read-ahead may still be fetching; blocks read ahead by the source's read-ahead thread, fetched on
demand by the page server's reads, and reads that waited for a block in flight).
Requests: GET / (both), and GET /checksum for bigdict (reads every entry: every page, most
faulted in or filled from the server while it runs). Workloads: python-hello (examples/), bigdict (examples/python-bigdict with BIGDICT_N = 1 000 000, ~130 MB).
Writes <out-dir>/remote.csv (one row per run) and remote.md (machine, medians). The machine is a shared
2-core VM: other engineers' builds and tests run beside it; compare within a run.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIELDS = ["workload", "request", "mode", "repeat", "fetch_ms", "restore_ms", "exec_ms", "cold_ms", "bytes_fetched",
          "requests", "blocks_read_ahead", "blocks_on_demand", "reads_waited", "faults", "pages_prefetched", "status"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def function_dir(work, name):
    if name == "python-hello":
        return os.path.join(ROOT, "examples", "python-hello")
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "examples", "python-bigdict"), d)
    path = os.path.join(d, "function.toml")
    toml = re.sub(r'(?m)^BIGDICT_N = .*$', 'BIGDICT_N = "1000000"', open(path).read())
    toml = re.sub(r"(?m)^memory_mb = .*$", "memory_mb = 1024", toml)
    open(path, "w").write(toml)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work-dir", default="/tmp/initless-bench-remote")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "bench"))
    ap.add_argument("--workloads", default="python-hello,bigdict")
    a = ap.parse_args()
    binary = os.path.join(a.build, "initless")
    shutil.rmtree(a.work_dir, ignore_errors=True)
    state = os.path.join(a.work_dir, "state")
    os.makedirs(state)
    env = dict(os.environ, INITLESS_STATE_DIR=state)
    pid = os.getpid()
    sns, cns = f"ilbench-s-{pid}", f"ilbench-c-{pid}"
    sip, cip = "10.232.0.1", "10.232.0.2"
    rows = []
    server = None
    try:
        sh(f"ip netns add {sns}; ip netns add {cns}")
        sh(f"ip link add ilbs{pid} netns {sns} type veth peer name ilbc{pid} netns {cns}")
        sh(f"ip -n {sns} addr add {sip}/30 dev ilbs{pid}; ip -n {cns} addr add {cip}/30 dev ilbc{pid}")
        sh(f"ip -n {sns} link set ilbs{pid} up; ip -n {cns} link set ilbc{pid} up")
        for name in a.workloads.split(","):
            d = function_dir(a.work_dir, name)
            image = os.path.join(a.work_dir, name + ".img")
            manifest = os.path.join(a.work_dir, name + ".manifest")
            log(f"{name}: snapshot")
            subprocess.run([binary, "snapshot", d, "--image", image], env=env, check=True, stdout=subprocess.DEVNULL)
            sh(f"cp -a {image} {manifest}")
            os.remove(os.path.join(manifest, "pages.img"))
            server = subprocess.Popen(["nsenter", f"--net=/run/netns/{sns}", binary, "page-server", "--image", image,
                                       "--listen", f"{sip}:0", "--log-level", "warn"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            addr = re.search(r"listening on (\S+)", server.stdout.readline()).group(1)
            requests = ["/", "/checksum"] if name == "bigdict" else ["/"]
            for rep, request, mode in [(r, q, m) for r in range(a.repeats) for q in requests
                                       for m in ("local-lazy", "remote")]:
                if True:
                    args = ([binary, "restore", image, "--strategy", "lazy"] if mode == "local-lazy" else
                            [binary, "restore", manifest, "--pages-from", addr])
                    p = subprocess.run(["nsenter", f"--net=/run/netns/{cns}"] + args +
                                       ["--request", request, "--json", "--no-fallback"],
                                       env=env, capture_output=True, text=True)
                    if p.returncode != 0:
                        log(f"{name} {mode}: failed: {p.stderr.strip()}")
                        rows.append({"workload": name, "request": request, "mode": mode, "repeat": rep,
                                     "status": "error"})
                        continue
                    j = json.loads(p.stdout)
                    inst = j["instances"][0]
                    mem = inst.get("memory", {})
                    remote = j.get("remote", {})
                    rows.append({"workload": name, "request": request, "mode": mode, "repeat": rep,
                                 "fetch_ms": round(remote.get("fetch_ms", 0.0), 3),
                                 "restore_ms": round(inst["restore_ms"], 3), "exec_ms": round(inst["exec_ms"], 3),
                                 "cold_ms": round(inst["restore_ms"] + inst["exec_ms"], 3),
                                 "bytes_fetched": remote.get("bytes_fetched", 0), "requests": remote.get("requests", 0),
                                 "blocks_read_ahead": remote.get("blocks_read_ahead", 0),
                                 "blocks_on_demand": remote.get("blocks_on_demand", 0),
                                 "reads_waited": remote.get("reads_waited", 0),
                                 "faults": mem.get("faults", 0), "pages_prefetched": mem.get("pages_prefetched", 0),
                                 "status": inst.get("status", 0)})
                    log(f"{name} {request} {mode} #{rep}: " + ", ".join(f"{k} {rows[-1][k]}" for k in
                                                               ("fetch_ms", "restore_ms", "exec_ms", "bytes_fetched")))
            server.terminate()
            server.wait(10)
            server = None
    finally:
        if server:
            server.kill()
        subprocess.run(f"ip netns del {sns}; ip netns del {cns}", shell=True, stderr=subprocess.DEVNULL)
    os.makedirs(a.out_dir, exist_ok=True)
    # The commit the measured binary was built from (its --version), not the checkout's HEAD.
    commit = (subprocess.run([os.path.join(ROOT, "build", "initless"), "--version"], capture_output=True,
                             text=True).stdout.partition("commit: ")[2].split() or ["unknown"])[0]
    with open(os.path.join(a.out_dir, "remote.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    load = open("/proc/loadavg").read().split()[:3]
    lines = [f"# Remote pages: restore + first response, local lazy vs remote over a veth ({commit})", "",
             f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} vCPUs, kernel {platform.release()}, "
             f"load average {' '.join(load)} at the end (a shared VM: other engineers' builds and tests ran beside "
             f"it). `bench/remote/remote.py --repeats {a.repeats}`; medians of {a.repeats} interleaved repeats, ms.",
             "", "| workload | request | mode | fetch before restore | restore | first response | restore + first | "
             "fetch + restore + first | MB fetched | requests | 64 KiB blocks read ahead / on demand |",
             "| --- | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: |"]
    for name, request, mode in sorted({(r["workload"], r["request"], r["mode"]) for r in rows},
                                      key=lambda k: (a.workloads.split(",").index(k[0]), k[1], k[2])):
        if True:
            ok = [r for r in rows if r["workload"] == name and r["request"] == request and r["mode"] == mode
                  and r["status"] == 200]
            if not ok:
                lines.append(f"| {name} | {request} | {mode} | failed | | | | | | | |")
                continue
            med = lambda k: statistics.median(r[k] for r in ok)
            lines.append(f"| {name} | `GET {request}` | {mode} | {med('fetch_ms'):.1f} | {med('restore_ms'):.1f} | {med('exec_ms'):.1f} | "
                         f"{med('cold_ms'):.1f} | {med('fetch_ms') + med('cold_ms'):.1f} | "
                         f"{med('bytes_fetched') / 1e6:.1f} | {med('requests'):.0f} | "
                         f"{med('blocks_read_ahead'):.0f} / {med('blocks_on_demand'):.0f} |")
    open(os.path.join(a.out_dir, "remote.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
