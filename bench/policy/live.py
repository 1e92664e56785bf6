#!/usr/bin/env python3
"""Keep-alive policies live: a slice of the Azure Functions 2019 trace replayed against `initless serve`,
and the same slice through `initless sim`, cold and warm starts compared (issue 13, item 4).

  bench/policy/live.py                       # about 9 minutes; writes docs/bench/policy-live*.csv
  bench/policy/live.py --sim-only            # only the slice and the simulation (seconds)

What it does:
  1. The slice: --minutes minutes of --trace from --start-minute, the first --functions functions (in the
     trace's row order) that are invoked in it at most --max-invocations times (the busiest are left out to
     bound the request rate on this 2-core machine). Written as a trace directory of its own (invitro
     layout) that `initless sim` reads: durations capped at --max-duration-ms, each function its own app
     whose memory is its app's median allocated memory, rounded to whole MB (+1 MB until no two functions
     share a size, so that the sim's cost model, keyed by memory, can carry each function's own costs).
  2. The schedule: the invocations `initless sim --seed S` replays, computed here by the simulator's own
     draw (mt19937_64, each minute's arrivals uniform in the minute, durations from the percentiles; see
     src/sim/trace_replay.cpp). That it is the same schedule is checked: the simulator, with zero-cost cold
     starts and no eviction, must report the busy memory-time this schedule implies.
  3. Live: a daemon of its own (own --state and INITLESS_STATE_DIR, a free loopback port); every function
     of the slice deployed as a copy of tests/e2e/functions/counter with the trace's memory_mb,
     concurrency 1 (the simulator's default); then, per policy, the daemon restarted with --policy P
     --memory-mb M (no instance left from before), pools left to fill, and the schedule replayed in real
     time: each invocation is GET /function/<f>/slow?ms=<its duration> at its time, on a connection of its
     own; X-Initless-Start counts warm and cold (cold or boot) starts.
  4. Simulated: `initless sim` on the slice with the same policy, budget, seed and concurrency, and a
     cost model made of the daemon's own numbers: each function's profile as the daemon gives it to the
     policy (trial-restore time measured at its deploy, x2 for cold_from_disk_ms; boot; image size).
     The simulator also charges that cost as the cold start's delay (the instance is busy meanwhile);
     live, a restore from the pool takes tens of ms. So it runs twice: `sim` with the profile as is,
     and `sim-live-delay` with every cost multiplied by one factor that makes the mean equal the live
     run's median cold-start delay (client latency minus the duration asked for). One factor for all
     changes no LRU or greedy-dual decision (greedy-dual's priorities all scale alike), only the delay.

Writes docs/bench/policy-live.csv (one row per policy and source: live, sim, sim-live-delay) and
docs/bench/policy-live-functions.csv (per function and policy: live cold starts and evictions, and the
simulator's when it has --per-function). The whole run takes about 9 minutes (2 x 4 minutes of replay).
Needs root and build/initless.
"""
import argparse
import asyncio
import csv
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INITLESS = os.path.join(ROOT, "build", "initless")
COUNTER = os.path.join(ROOT, "tests", "e2e", "functions", "counter")
DOCS = os.path.join(ROOT, "docs", "bench")
PERCENTILES = ["percentile_Average_0", "percentile_Average_1", "percentile_Average_25",
               "percentile_Average_50", "percentile_Average_75", "percentile_Average_99",
               "percentile_Average_100"]
QUANTILES = [0.0, 0.01, 0.25, 0.50, 0.75, 0.99, 1.0]  # DurationPercentiles::kQuantiles
MINUTE_MS = 60000


# ---- the slice ----

def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def minute_columns(header):
    return [h for h in header if re.fullmatch(r"(minute_)?\d+", h)]


def make_slice(args, out_dir):
    """Chooses the functions and writes the slice as an invitro-layout trace dir; returns its functions."""
    src = os.path.join(ROOT, args.trace) if not os.path.isabs(args.trace) else args.trace
    inv = read_csv(os.path.join(src, "inv.csv"))
    run = {(r["HashOwner"], r["HashApp"], r["HashFunction"]): r for r in read_csv(os.path.join(src, "run.csv"))}
    mem = {(r["HashOwner"], r["HashApp"]): r for r in read_csv(os.path.join(src, "mem.csv"))}
    cols = minute_columns(inv[0].keys())[args.start_minute:args.start_minute + args.minutes]
    if len(cols) != args.minutes:
        raise SystemExit(f"{args.trace} has no minutes {args.start_minute}..{args.start_minute + args.minutes - 1}")
    chosen, busier, used_mb = [], 0, set()
    for r in inv:
        counts = [int(r[c]) for c in cols]
        n = sum(counts)
        if n == 0:
            continue
        if n > args.max_invocations:
            busier += 1
            continue
        if len(chosen) == args.functions:
            continue
        key = (r["HashOwner"], r["HashApp"], r["HashFunction"])
        mb = max(64, round(float(mem[key[:2]]["AverageAllocatedMb_pct50"])))
        while mb in used_mb:
            mb += 1
        used_mb.add(mb)
        pct = [min(float(run[key][p]), args.max_duration_ms) for p in PERCENTILES]
        chosen.append({"index": len(chosen), "owner": key[0], "trace_app": key[1], "hash": key[2],
                       "counts": counts, "invocations": n, "memory_mb": mb, "percentiles": pct,
                       "name": f"live-{len(chosen):02d}"})
    if len(chosen) < 2:
        raise SystemExit("fewer than 2 functions in the slice")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "inv.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["HashFunction", "HashApp", "HashOwner"] + [f"minute_{i + 1}" for i in range(args.minutes)])
        for fn in chosen:  # each function its own app: memory is per app in the trace
            w.writerow([fn["hash"], fn["hash"], fn["owner"]] + fn["counts"])
    with open(os.path.join(out_dir, "run.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["HashFunction", "HashApp", "HashOwner", "Count", "Average", "Minimum", "Maximum"] + PERCENTILES)
        for fn in chosen:
            p = fn["percentiles"]
            w.writerow([fn["hash"], fn["hash"], fn["owner"], fn["invocations"], repr(p[3]), repr(p[0]),
                        repr(p[6])] + [repr(x) for x in p])
    with open(os.path.join(out_dir, "mem.csv"), "w", newline="") as f:
        w = csv.writer(f)
        cols_mem = ["AverageAllocatedMb"] + [f"AverageAllocatedMb_pct{q}" for q in (1, 5, 25, 50, 75, 95, 99, 100)]
        w.writerow(["HashApp", "HashOwner", "SampleCount"] + cols_mem)
        for fn in chosen:
            w.writerow([fn["hash"], fn["owner"], 1] + [fn["memory_mb"]] * len(cols_mem))
    print(f"slice: {args.trace} minutes {args.start_minute}..{args.start_minute + args.minutes - 1}, "
          f"{len(chosen)} functions ({busier} busier ones left out), "
          f"{sum(f['invocations'] for f in chosen)} invocations, "
          f"{sum(f['memory_mb'] for f in chosen)} MB if every function kept one instance", flush=True)
    return chosen


# ---- the simulator's schedule ----

class Mt19937_64:
    """std::mt19937_64, as the simulator seeds it (std::mt19937_64 rng(seed))."""
    N, M = 312, 156
    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.mt = [seed & self.MASK]
        for i in range(1, self.N):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK)
        self.i = self.N

    def __call__(self):
        if self.i >= self.N:
            mt = self.mt
            for k in range(self.N):
                x = (mt[k] & 0xFFFFFFFF80000000) | (mt[(k + 1) % self.N] & 0x7FFFFFFF)
                xa = x >> 1
                if x & 1:
                    xa ^= 0xB5026F5AA96619E9
                mt[k] = mt[(k + self.M) % self.N] ^ xa
            self.i = 0
        y = self.mt[self.i]
        self.i += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & self.MASK


def unit(rng):
    return (rng() >> 11) * 2.0 ** -53


def duration_at(ms, u):
    """DurationPercentiles::at."""
    u = min(max(u, 0.0), 1.0)
    i = 1
    while i + 1 < len(QUANTILES) and u > QUANTILES[i]:
        i += 1
    q0, q1 = QUANTILES[i - 1], QUANTILES[i]
    f = (u - q0) / (q1 - q0) if q1 > q0 else 0
    return max(1.0, ms[i - 1] + f * (ms[i] - ms[i - 1]))


def schedule(functions, minutes, seed):
    """(at_ms, function index, duration_ms) in arrival order, as TraceReplay::run draws them."""
    rng, out = Mt19937_64(seed), []
    for minute in range(minutes):
        arrivals = []
        for fn in functions:
            for _ in range(fn["counts"][minute]):
                at = minute * MINUTE_MS + int(unit(rng) * MINUTE_MS)
                arrivals.append((at, fn["index"], duration_at(fn["percentiles"], unit(rng))))
        arrivals.sort(key=lambda a: a[0])  # stable, as std::stable_sort
        out += arrivals
    return out


def sim(args, slice_dir, costs, policies, budget_mb, extra=()):
    cmd = [INITLESS, "sim", "--trace", slice_dir, "--policy", ",".join(policies), "--memory-mb", str(budget_mb),
           "--costs", costs, "--seed", str(args.seed), "--concurrency", "1", "--jobs", "1", "--json", *extra]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def check_schedule(args, slice_dir, functions, sched, scratch):
    """The simulator replays `sched`: with zero-cost cold starts and no eviction, an invocation holds its
    instance's memory from its arrival to arrival + int(duration) (cut at the end of the slice), so the
    busy memory-time it reports is a checksum of every arrival time and duration."""
    zero = os.path.join(scratch, "zero-costs.csv")
    with open(zero, "w") as f:
        f.write("memory_mb,boot_ms,restore_ms\n1,0,0\n2,0,0\n")
    out = sim(args, slice_dir, zero, ["lru"], 1e9)
    end = args.minutes * MINUTE_MS
    busy_mb_ms = sum(functions[f]["memory_mb"] * (min(end, at + int(d)) - at) for at, f, d in sched)
    got = out["runs"][0]["busy_gb_s"] * 1024 * 1000
    ok = out["runs"][0]["invocations"] == len(sched) and math.isclose(got, busy_mb_ms, rel_tol=1e-9)
    print(f"schedule: {len(sched)} invocations; the simulator's busy memory-time "
          f"{'matches' if ok else 'DIFFERS: ' + str(got) + ' MB-ms against ' + str(busy_mb_ms)}", flush=True)
    if not ok:
        raise SystemExit("the schedule computed here is not the one `initless sim` replays; "
                         "src/sim's arrival draw changed: update schedule() here")


# ---- the live daemon ----

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    def __init__(self, scratch, tag, extra=()):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ, INITLESS_STATE_DIR=os.path.join(scratch, "run"))
        self.log_path = os.path.join(scratch, f"daemon-{tag}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [INITLESS, "serve", "--listen", self.address, "--state", os.path.join(scratch, "state"), *extra],
            env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the daemon did not come up; see " + self.log_path)

    def request(self, method, path, body=None, timeout=300):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def functions(self):
        return json.loads(self.request("GET", "/system/functions")[1])

    def starts(self):
        """initless_starts_total by kind, summed over functions."""
        out = {}
        for line in self.request("GET", "/metrics")[1].decode().splitlines():
            m = re.match(r'initless_starts_total\{.*kind="(\w+)".*\}\s+([\d.e+]+)', line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=180)
        self.log.close()
        if rc != 0:
            raise SystemExit(f"the daemon exited {rc}; see {self.log_path}")


def variant(scratch, name, keys):
    """A copy of the counter with function.toml keys replaced (values are TOML)."""
    dst = os.path.join(scratch, "functions", name)
    shutil.copytree(COUNTER, dst)
    lines, replaced, top = [], set(), True
    with open(os.path.join(COUNTER, "function.toml")) as f:
        for line in f:
            m = re.match(r"^(\w+)\s*=", line)
            if line.startswith("[") and top:
                lines += [f"{k} = {v}\n" for k, v in keys.items() if k not in replaced]
                top = False
            if top and m and m.group(1) in keys:
                lines.append(f"{m.group(1)} = {keys[m.group(1)]}\n")
                replaced.add(m.group(1))
            else:
                lines.append(line)
    if top:
        lines += [f"{k} = {v}\n" for k, v in keys.items() if k not in replaced]
    with open(os.path.join(dst, "function.toml"), "w") as f:
        f.writelines(lines)
    return dst


def deploy_all(args, scratch, functions):
    d = Daemon(scratch, "deploy", ["--memory-mb", "1000000"])
    t0 = time.time()
    try:
        for fn in functions:
            directory = variant(scratch, fn["name"], {
                "name": json.dumps(fn["name"]), "memory_mb": fn["memory_mb"], "concurrency": 1,
                "max_instances": 64, "prestart": 1, "timeout_s": math.ceil(args.max_duration_ms / 1000) + 20,
                "queue_max": 1000, "queue_timeout_ms": 120000})
            r = subprocess.run([INITLESS, "deploy", directory, "--server", d.address], env=d.env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"deploy of {fn['name']} failed: {r.stdout}{r.stderr}")
        print(f"deployed {len(functions)} functions in {time.time() - t0:.0f} s", flush=True)
    finally:
        d.stop()
    # What the daemon gives each function's policy profile (Controller register_with_policy).
    for fn in functions:
        with open(os.path.join(scratch, "state", "functions", fn["name"], "current.json")) as f:
            entry = json.load(f)
        fn["boot_ms"] = max(1.0, entry["boot_ms"])
        fn["restore_ms"] = max(1.0, entry["restore_ms"])
        fn["restore_disk_ms"] = max(fn["restore_ms"], entry["restore_ms"] * 2)
        fn["image_mb"] = entry["image_mb"]


def write_costs(path, functions, scale=1.0):
    """The sim's cost model: one row per function (sizes are distinct), the daemon's profile x `scale`."""
    with open(path, "w") as f:
        f.write("memory_mb,boot_ms,restore_ms,restore_disk_ms,image_mb\n")
        for fn in sorted(functions, key=lambda x: x["memory_mb"]):
            f.write(f"{fn['memory_mb']},{fn['boot_ms'] * scale!r},{fn['restore_ms'] * scale!r},"
                    f"{fn['restore_disk_ms'] * scale!r},{fn['image_mb']!r}\n")


async def invoke(port, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        headers = {}
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers
    finally:
        writer.close()


async def replay(port, functions, sched):
    """Sends every invocation at its time; one result per invocation, in schedule order."""
    loop = asyncio.get_running_loop()
    results = [None] * len(sched)

    async def one(i, at, f, d):
        sent = loop.time()
        try:
            status, headers = await invoke(port, f"/function/{functions[f]['name']}/slow?ms={round(d)}")
            start = headers.get("x-initless-start", "-")
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            status, start = 0, type(e).__name__
        results[i] = {"late_ms": (sent - t0) * 1000 - at, "status": status, "start": start,
                      "ms": (loop.time() - sent) * 1000}

    t0 = loop.time() + 0.5
    tasks = []
    for i, (at, f, d) in enumerate(sched):
        delay = t0 + at / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, at, f, d)))
    await asyncio.gather(*tasks)
    return results


def live_run(args, scratch, functions, sched, policy):
    d = Daemon(scratch, policy, ["--policy", policy, "--memory-mb", str(args.memory_mb)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # every pool full: no cold start prepares its sandbox on the request path
            if all(f["pool"] >= f["prestart"] for f in d.functions()):
                break
            time.sleep(0.2)
        before = d.starts()
        t = time.time()
        results = asyncio.run(replay(d.port, functions, sched))
        wall = time.time() - t
        after = d.starts()
    finally:
        d.stop()
    evictions = {}
    with open(d.log_path) as f:
        for line in f:
            m = re.search(r"event=evicted function=(\S+)", line)
            if m:
                evictions[m.group(1)] = evictions.get(m.group(1), 0) + 1
    metric = {k: after.get(k, 0) - before.get(k, 0) for k in ("warm", "cold", "boot")}
    return results, wall, metric, evictions


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else float("nan")


def simulate(args, scratch, slice_dir, functions, policy, scale, tag):
    """`initless sim` for one policy, every function's costs multiplied by `scale` (which changes no
    greedy-dual or LRU decision: all priorities scale alike); with its per-function counts if this sim
    has --per-function."""
    costs = os.path.join(scratch, f"costs-{policy}-{tag}.csv")
    write_costs(costs, functions, scale)
    per_function = os.path.join(scratch, f"sim-{policy}-{tag}.csv")
    has = "--per-function" in subprocess.run([INITLESS, "sim", "--help"], capture_output=True, text=True).stdout
    run = sim(args, slice_dir, costs, [policy], args.memory_mb, ["--per-function", per_function] if has else [])
    by_fn = {int(r["function"]): r for r in read_csv(per_function)} if has else {}
    return run["runs"][0], by_fn


def run_all(args, scratch, policies, started):
    slice_dir = os.path.join(scratch, "slice")
    functions = make_slice(args, slice_dir)
    sched = schedule(functions, args.minutes, args.seed)
    check_schedule(args, slice_dir, functions, sched, scratch)

    if args.sim_only:
        for fn in functions:
            fn.update(boot_ms=1000.0, restore_ms=20.0, restore_disk_ms=40.0, image_mb=10.0)
        for policy in policies:
            r, _ = simulate(args, scratch, slice_dir, functions, policy, 1.0, "fixed")
            print(f"sim {policy:<12} budget {args.memory_mb} MB: cold {r['cold_starts']}, warm "
                  f"{r['warm_starts']}, evictions {r['evictions']}")
        return

    if os.geteuid() != 0:
        raise SystemExit("live.py needs root (initless serve)")
    deploy_all(args, scratch, functions)
    machine = f"{platform.node()} {os.cpu_count()} cpus {platform.release()}"
    # The commit the measured binary was built from (its --version), not the checkout's HEAD.
    commit = (subprocess.run([os.path.join(ROOT, "build", "initless"), "--version"], capture_output=True,
                             text=True).stdout.partition("commit: ")[2].split() or ["unknown"])[0]
    rows, fn_rows = [], []
    for policy in policies:
        load = os.getloadavg()[0]
        results, wall, metric, evictions = live_run(args, scratch, functions, sched, policy)
        load = max(load, os.getloadavg()[0])
        ok = [r for r in results if r["status"] == 200]
        cold = [i for i, r in enumerate(results) if r["status"] == 200 and r["start"] in ("cold", "boot")]
        live_cold = len(cold)
        # What a cold start added here: the client's latency minus the duration asked for, median.
        cold_delay = pct([results[i]["ms"] - round(sched[i][2]) for i in cold], 50) if cold else 0.0
        # The simulator charges each cold start the cost the policy ranks by (the daemon's profile:
        # 2 x the trial restore at deploy, a few hundred ms), which the instance spends busy; live, a
        # restore from the pool takes tens of ms. The second run scales every cost to the live delay.
        mean_cost = statistics.mean(fn["restore_disk_ms"] for fn in functions)
        sims = [("sim", 1.0), ("sim-live-delay", max(1.0, cold_delay) / mean_cost)]
        common = {"policy": policy, "memory_mb": args.memory_mb, "trace": os.path.basename(args.trace),
                  "start_minute": args.start_minute, "minutes": args.minutes, "functions": len(functions),
                  "seed": args.seed, "commit": commit, "machine": machine}
        lat = [r["late_ms"] for r in results]
        rows.append({**common, "source": "live", "cold_delay_ms": round(cold_delay, 1),
                     "invocations": len(results), "cold_starts": live_cold,
                     "warm_starts": sum(r["start"] == "warm" for r in ok), "errors": len(results) - len(ok),
                     "boots": sum(r["start"] == "boot" for r in ok), "evictions": sum(evictions.values()),
                     "live_cold_vs_this_pct": "", "metrics_cold": metric["cold"] + metric["boot"],
                     "metrics_warm": metric["warm"], "late_p50_ms": round(pct(lat, 50), 1),
                     "late_p99_ms": round(pct(lat, 99), 1), "late_max_ms": round(max(lat), 1),
                     "wall_s": round(wall, 1), "load_avg_1m": round(load, 1)})
        by_fn = {}
        line = f"{policy:<12} budget {args.memory_mb} MB: live cold {live_cold} (cold delay {cold_delay:.0f} ms)"
        for tag, scale in sims:
            r, by_fn[tag] = simulate(args, scratch, os.path.join(scratch, "slice"), functions, policy, scale, tag)
            diff = (live_cold - r["cold_starts"]) / r["cold_starts"] * 100 if r["cold_starts"] else float("nan")
            rows.append({**common, "source": tag, "cold_delay_ms": round(scale * mean_cost, 1),
                         "invocations": r["invocations"], "cold_starts": r["cold_starts"],
                         "warm_starts": r["warm_starts"], "errors": 0, "boots": 0, "evictions": r["evictions"],
                         "live_cold_vs_this_pct": round(diff, 1), "metrics_cold": "", "metrics_warm": "",
                         "late_p50_ms": "", "late_p99_ms": "", "late_max_ms": "", "wall_s": "", "load_avg_1m": ""})
            line += f" | {tag} {r['cold_starts']} (live {diff:+.1f}%)"
        print(line + f" | evictions live {sum(evictions.values())}; lateness p99 {pct(lat, 99):.0f} ms, "
              f"load {load:.1f}", flush=True)
        for fn in functions:
            mine = [i for i, a in enumerate(sched) if a[1] == fn["index"]]
            fn_rows.append({"policy": policy, "function": fn["index"], "name": fn["name"], "hash": fn["hash"][:12],
                            "memory_mb": fn["memory_mb"], "profile_cost_ms": round(fn["restore_disk_ms"], 1),
                            "invocations": len(mine), "live_cold": sum(i in cold for i in mine),
                            "sim_cold": by_fn["sim"].get(fn["index"], {}).get("cold_starts", ""),
                            "sim_live_delay_cold": by_fn["sim-live-delay"].get(fn["index"], {}).get("cold_starts", ""),
                            "live_evictions": evictions.get(fn["name"], 0),
                            "sim_evictions": by_fn["sim"].get(fn["index"], {}).get("evictions", "")})

    os.makedirs(DOCS, exist_ok=True)
    for name, table in ((f"{args.out}.csv", rows), (f"{args.out}-functions.csv", fn_rows)):
        with open(os.path.join(DOCS, name), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0].keys()))
            w.writeheader()
            w.writerows(table)
    print(f"wrote docs/bench/{args.out}.csv and {args.out}-functions.csv; {time.time() - started:.0f} s in all")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default="data/azure-functions-2019/sampled-200")
    ap.add_argument("--start-minute", type=int, default=600, help="first minute of the slice (0-based)")
    ap.add_argument("--minutes", type=int, default=4)
    ap.add_argument("--functions", type=int, default=40)
    ap.add_argument("--max-invocations", type=int, default=60, help="per function in the slice")
    ap.add_argument("--max-duration-ms", type=float, default=10000)
    ap.add_argument("--policies", default="lru,greedy-dual")
    ap.add_argument("--memory-mb", type=int, default=16384, help="idle-memory budget, live and simulated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sim-only", action="store_true", help="slice and simulation only (costs: 20/40 ms)")
    ap.add_argument("--out", default="policy-live", help="docs/bench/OUT.csv and OUT-functions.csv")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (daemon logs, slice, costs)")
    args = ap.parse_args()
    started = time.time()
    scratch = tempfile.mkdtemp(prefix="initless-live-")
    try:
        run_all(args, scratch, args.policies.split(","), started)
    finally:
        if args.keep:
            print("scratch:", scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
