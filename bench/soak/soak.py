#!/usr/bin/env python3
"""A soak of `initless serve`: minutes of churn against one daemon, its resources sampled meanwhile.

Churn, all at once: warm and cold requests from several clients, crashes (/crash: 502), hangs past timeout_s
(/hang: 504), clients that leave mid-request and mid-upload, garbage bytes, 2 MiB uploads, deploy and `rm` of
a new function name every ~2 s (each invoked cold and warm), pooled sandboxes recycled every 3 s, and an
idle-memory budget that evicts. Every 10 s the daemon's open fds, RSS, threads, child processes, the host's
initless mounts and cgroups are sampled. At the end the functions are removed and the daemon stopped with
SIGTERM.

What it reports (stdout, docs/bench/soak.csv with the samples, docs/bench/soak.md): the requests by path and
status, the failures that are not the function's own doing (a plain GET that is not a 200, a crash or hang
answered otherwise than 502/504), the resources at the start, at their peak and after the `rm`, and what is
left on the machine after the stop. Exit status 1 if a request failed that should not have, or anything is
left.

Usage: bench/soak/soak.py [--minutes 5] [--bin build/initless] [--out docs/bench]
"""
import argparse
import collections
import csv
import http.client
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "initless"))
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--port", type=int, default=18600)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"))
    ap.add_argument("--sample-s", type=float, default=10)
    ap.add_argument("--restore", default="", help="the counter's restore strategy (function.toml `restore`)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="initless-soak-")
    state = os.path.join(work, "state")
    server = f"127.0.0.1:{args.port}"
    env = dict(os.environ, INITLESS_SERVER=server)

    def function_dir(name, src, keys):
        """A copy of `src` named `name`, with `keys` (top-level function.toml lines) set."""
        d = os.path.join(work, "fn-" + name)
        shutil.copytree(src, d)
        lines = open(os.path.join(d, "function.toml")).read().splitlines()
        first_table = next((i for i, l in enumerate(lines) if l.startswith("[")), len(lines))
        replaced = {k.split("=")[0].strip() for k in keys} | {"name"}
        top = [l for l in lines[:first_table] if l.split("=")[0].strip() not in replaced]
        lines = top + [f'name = "{name}"'] + keys + lines[first_table:]
        open(os.path.join(d, "function.toml"), "w").write("\n".join(lines) + "\n")
        return d

    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen([args.bin, "serve", "--listen", server, "--state", state, "--memory-mb", "300"],
                              stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", args.port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)

    def cli(*a):
        return subprocess.run([args.bin, *a], env=env, capture_output=True, text=True, timeout=120)

    counter = function_dir("soak-counter", os.path.join(ROOT, "tests", "e2e", "functions", "counter"),
                           ["timeout_s = 2", "prestart = 2", "prestart_max_age_s = 3", "max_instances = 4",
                            "queue_timeout_ms = 5000"] + ([f'restore = "{args.restore}"'] if args.restore else []))
    d = cli("deploy", counter)
    if d.returncode != 0:
        sys.exit(f"deploy failed: {d.stderr}")

    def sample():
        pid = daemon.pid
        status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return {
            "t_s": round(time.time() - t0, 1),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "rss_mb": int(status["VmRSS"].split()[0]) // 1024,
            "threads": int(status["Threads"]),
            "children": len(children),
            "mounts": sum(1 for l in open("/proc/self/mountinfo") if work in l or "/run/initless" in l),
            "cgroups": len(os.listdir("/sys/fs/cgroup/pids/initless"))
            if os.path.isdir("/sys/fs/cgroup/pids/initless") else 0,
        }

    counts = collections.Counter()
    unexpected = collections.Counter()
    lock = threading.Lock()
    expected = {"/": {200}, "/slow": {200}, "/echo": {200}, "/crash": {502}, "/hang": {504}}

    def count(key, path=None, status=None):
        with lock:
            counts[key] += 1
            if path in expected and status not in expected[path]:
                unexpected[key] += 1

    t0 = time.time()
    stop = t0 + args.minutes * 60

    def request(method, path, body=None, function="soak-counter"):
        c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=15)
        base = path.split("?")[0]
        try:
            c.request(method, f"/function/{function}{path}", body=body)
            r = c.getresponse()
            r.read()
            count(f"{method} {base} {r.status}", base, r.status)
        except Exception as e:  # a failed exchange is a failure of the daemon: counted as unexpected
            count(f"{method} {base} {type(e).__name__}", base, None)
        finally:
            c.close()

    def leave_mid_request():
        s = socket.create_connection(("127.0.0.1", args.port))
        s.sendall(b"GET /function/soak-counter/slow?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(random.uniform(0.01, 0.5))
        s.close()
        count("client left mid-request")

    def leave_mid_upload():
        s = socket.create_connection(("127.0.0.1", args.port))
        s.sendall(b"POST /function/soak-counter/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" +
                  b"a" * 100000)
        time.sleep(0.05)
        s.close()
        count("client left mid-upload")

    def garbage():
        s = socket.create_connection(("127.0.0.1", args.port))
        s.sendall(os.urandom(random.randint(1, 3000)))
        try:
            s.settimeout(2)
            s.recv(100)
        except OSError:
            pass
        s.close()
        count("garbage sent")

    deploys = [0]

    def deploy_and_remove():
        deploys[0] += 1
        name = f"soak-hello-{deploys[0]}"
        d = function_dir(name, os.path.join(ROOT, "examples", "python-hello"), ["prestart = 1"])
        r = cli("deploy", d)
        if r.returncode == 0:
            request("GET", "/", function=name)
            request("GET", "/", function=name)
            r = cli("rm", name)
        count("deploy+rm ok" if r.returncode == 0 else "deploy+rm FAILED")
        if r.returncode != 0:
            with lock:
                unexpected["deploy+rm FAILED"] += 1
        shutil.rmtree(d)

    def every(period, fn):
        def run():
            while time.time() < stop:
                fn()
                time.sleep(period * random.uniform(0.5, 1.5))
        t = threading.Thread(target=run)
        t.start()
        return t

    threads = [every(0.01, lambda: request("GET", "/")) for _ in range(6)]
    threads += [every(0.7, lambda: request("GET", "/crash")), every(1.5, lambda: request("GET", "/hang")),
                every(0.3, leave_mid_request), every(1.0, leave_mid_upload), every(0.2, garbage),
                every(0.3, lambda: request("POST", "/echo", body=os.urandom(2 << 20))),
                every(0.05, lambda: request("GET", "/slow?ms=50")), every(2.0, deploy_and_remove)]

    samples = [dict(sample(), phase="start")]
    print("start", samples[-1], flush=True)
    while time.time() < stop:
        time.sleep(min(args.sample_s, max(0.1, stop - time.time())))
        samples.append(dict(sample(), phase="load"))
        print(samples[-1], flush=True)
    for t in threads:
        t.join()
    time.sleep(3)
    samples.append(dict(sample(), phase="after load"))
    cli("rm", "soak-counter")
    time.sleep(5)
    samples.append(dict(sample(), phase="after rm"))
    print("after rm", samples[-1], flush=True)
    daemon.terminate()
    exit_code = daemon.wait(90)
    left = {
        "mounts": [l.split()[4] for l in open("/proc/self/mountinfo") if work in l],
        "instance dirs": [d for d in (os.listdir("/run/initless/instances")
                                      if os.path.isdir("/run/initless/instances") else []) if d.startswith("soak-")],
        "cgroups": [c for c in (os.listdir("/sys/fs/cgroup/pids/initless")
                                if os.path.isdir("/sys/fs/cgroup/pids/initless") else [])
                    if c.startswith("soak-")],
        "processes": subprocess.run(["pgrep", "-f", "initless __init"], capture_output=True, text=True).stdout.split(),
    }
    left = {k: v for k, v in left.items() if v}

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "soak.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[0].keys()))
        w.writeheader()
        w.writerows(samples)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    peak = {k: max(s[k] for s in samples) for k in ("fds", "rss_mb", "threads", "children", "mounts", "cgroups")}
    lines = [
        "# Soak of `initless serve`",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, commit {commit}, {os.cpu_count()} CPUs, "
        f"{args.minutes:g} minutes of churn (bench/soak/soak.py; samples in soak.csv)"
        + (f", the counter restored `{args.restore}`." if args.restore else "."),
        "",
        "| requests and events | count |", "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in sorted(counts.items())],
        "",
        f"Failures that are not the function's doing: {sum(unexpected.values())}"
        + (f" ({dict(unexpected)})" if unexpected else ""),
        "",
        "| daemon | start | peak | after the rm |", "| --- | --- | --- | --- |",
        *[f"| {k} | {samples[0][k]} | {peak[k]} | {samples[-1][k]} |" for k in peak],
        "",
        f"Daemon exit status after SIGTERM: {exit_code}. Left on the machine: {left or 'nothing'}.",
    ]
    md = os.path.join(args.out, "soak.md")
    marker = "<!-- notes: kept by bench/soak/soak.py -->"
    notes = ""
    if os.path.exists(md) and marker in open(md).read():
        notes = open(md).read().split(marker, 1)[1]
    open(md, "w").write("\n".join(lines) + "\n\n" + marker + (notes or "\n# Notes on the runs, newest first\n"))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if unexpected or left or exit_code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
