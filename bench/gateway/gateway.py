#!/usr/bin/python3
"""Benchmarks of `initless serve` (issue 8's targets), in one run, against a daemon of its own.

  1. overhead:  a warm function (bench/gateway/functions/node-keepalive) called directly (wrk run
                inside the instance's network namespace) and through the gateway: latency p50/p99 on
                one connection, throughput on 50; alternated, medians of --repeats; beside them the
                same through socat (bytes forwarded, no HTTP), through nginx and haproxy (HTTP reverse
                proxies with kept-alive upstream connections, as many workers as the gateway has I/O
                threads), and through a second daemon that never polls (--spin-us 0). On one connection, each also with a busy loop holding one CPU
                ("awake"): on this VM a halted vCPU's wake-up costs more than a proxy's work, and a
                vCPU kept busy never halts, which shows what the gateway itself adds. The daemons'
                CPU time per request on one connection too.
  2. conns:     wrk -c 1000 through the gateway against the same warm function: errors
  2b. bodies:   a 1 GiB download and a 60 MiB upload (curl) of the same function, directly and through
                the gateway, alternated: MiB/s, and the daemon's CPU time per GiB passed on
  3. burst:     50 (and 100) concurrent requests with no instance running, pool empty and pool full
                (examples/python-hello): latency distribution of the cold starts, errors
  4. bigdict:   the seed's Flask dict (--bigdict-n, 10M keys ~ 1.3 GB): GET / cold through the gateway
                with the pool full (scale to zero between repeats), client-side and Server-Timing
  5. density:   --density instances of that function restored from one image, each served a request:
                total PSS (smaps_rollup of every process) against 1.3 GB + N x working set

Writes docs/bench/gateway.csv (one row per measurement) and docs/bench/gateway.md, and plots
docs/bench/gateway-burst.png. Needs root, build/initless, wrk, socat, nginx, haproxy, nsenter (scripts/setup.sh installs them);
runs with Debian's /usr/bin/python3 (matplotlib).
  bench/gateway/gateway.py [--repeats 3] [--bigdict-n 10000000] [--density 50] [--skip bigdict,density]
"""
import argparse
import concurrent.futures
import csv
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INITLESS = os.path.join(ROOT, "build", "initless")
DOCS = os.path.join(ROOT, "docs", "bench")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    def __init__(self, scratch, extra=()):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ, INITLESS_STATE_DIR=os.path.join(scratch, "run"))
        self.log = open(os.path.join(scratch, "daemon.log"), "w")
        self.proc = subprocess.Popen(
            [INITLESS, "serve", "--listen", self.address, "--state", os.path.join(scratch, "state"),
             # An idle-memory budget no part reaches: density's 50 instances of memory_mb 4096 are
             # 200 GiB, and a budget under that made the policy evict two of them before the count.
             "--memory-mb", "1000000", *extra], env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the daemon did not come up; see " + self.log.name)

    def request(self, method, path, body=None, headers=None, timeout=300):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data, dict(r.getheaders())

    def get(self, path):
        return self.request("GET", path)

    def cli(self, *args):
        return subprocess.run([INITLESS, *args, "--server", self.address], env=self.env, check=True,
                              capture_output=True, text=True).stdout

    def deploy(self, directory):
        t = time.time()
        out = self.cli("deploy", directory)
        print(f"  deployed {directory} in {time.time() - t:.1f} s", flush=True)
        return out

    def function(self, name):
        return json.loads(self.get(f"/system/function/{name}")[1])

    def scale(self, name, replicas):
        return self.request("POST", f"/system/scale-function/{name}", json.dumps({"replicas": replicas}))

    def wait(self, name, pred, what, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            f = self.function(name)
            if pred(f):
                return f
            time.sleep(0.1)
        raise SystemExit(f"{name}: {what} not reached in {timeout} s: {f}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=180)
        if rc != 0:
            raise SystemExit(f"the daemon exited {rc}; see {self.log.name}")


def variant(scratch, source, name, keys, env=None):
    """A copy of a function directory with function.toml keys (and [env] entries) replaced."""
    dst = os.path.join(scratch, name)
    shutil.copytree(source, dst, dirs_exist_ok=True)
    lines, section, done = [], "", set()
    with open(os.path.join(source, "function.toml")) as f:
        for line in f:
            m = re.match(r"^(\w+)\s*=", line)
            if line.startswith("["):
                if section == "" :
                    lines += [f"{k} = {v}\n" for k, v in keys.items() if k not in done]
                    done |= set(keys)
                section = line.strip()
            if m and section == "" and m.group(1) in keys:
                lines.append(f"{m.group(1)} = {keys[m.group(1)]}\n")
                done.add(m.group(1))
            elif m and section == "[env]" and env and m.group(1) in env:
                lines.append(f"{m.group(1)} = {json.dumps(env[m.group(1)])}\n")
            else:
                lines.append(line)
    if section == "":
        lines += [f"{k} = {v}\n" for k, v in keys.items() if k not in done]
    with open(os.path.join(dst, "function.toml"), "w") as f:
        f.writelines(lines)
    return dst


def parse_wrk(out):
    def ms(v):
        num, unit = re.match(r"([\d.]+)(\w+)", v).groups()
        return float(num) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
    lat = {p: ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "rps": rps, "errors": errors, "requests": total}


def wrk(url, connections, seconds, threads=1, netns_pid=None):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "30s", url]
    if netns_pid:
        cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net"] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return parse_wrk(out)


def cpu_times():
    """The machine's CPU time so far (/proc/stat): (steal, total), in ticks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[7], sum(fields[:8])


def curl_transfer(url, netns_pid=None, upload=None):
    """(seconds, bytes downloaded) of one curl transfer: a GET, or a POST of the file `upload` (no
    Expect: 100-continue, which the function would answer itself directly and the gateway for it)."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}", url]
    if upload:
        cmd += ["--data-binary", "@" + upload, "-H", "Expect:"]
    if netns_pid:
        cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    assert out[2] == "200", (url, out)
    return float(out[0]), int(out[1])


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reference_proxies(scratch, netns_pid, workers):
    """nginx on 127.0.0.1:9002 and haproxy on :9003 in the function's network namespace, each an HTTP/1.1
    reverse proxy to it with kept-alive upstream connections and as many workers (threads) as the gateway
    has I/O threads: what established proxies get on this machine in the same run, beside the gateway."""
    with open(os.path.join(scratch, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes {workers}; daemon off; pid {scratch}/nginx.pid; error_log {scratch}/nginx.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream function {{ server 127.0.0.1:9000; keepalive 256; }}
  server {{
    listen 127.0.0.1:9002;
    location / {{ proxy_pass http://function; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    with open(os.path.join(scratch, "haproxy.cfg"), "w") as f:
        f.write(f"""global
  nbthread {workers}
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend gateway
  bind 127.0.0.1:9003
  default_backend function
backend function
  server function 127.0.0.1:9000
""")
    ns = ["nsenter", f"--net=/proc/{netns_pid}/ns/net"]
    logs = [open(os.path.join(scratch, name + ".out"), "w") for name in ("nginx", "haproxy")]
    procs = [subprocess.Popen(ns + ["nginx", "-p", scratch, "-c", os.path.join(scratch, "nginx.conf")],
                              stdout=logs[0], stderr=subprocess.STDOUT),
             subprocess.Popen(ns + ["haproxy", "-f", os.path.join(scratch, "haproxy.cfg")],
                              stdout=logs[1], stderr=subprocess.STDOUT)]
    # Each must answer through to the function before it is measured: a proxy that did not start would
    # otherwise show up as wrk errors and a meaningless figure.
    for name, port, p in (("nginx", 9002, procs[0]), ("haproxy", 9003, procs[1])):
        answered = False
        for _ in range(50):
            answered = subprocess.run(ns + ["curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                                      capture_output=True).returncode == 0
            if answered or p.poll() is not None:
                break
            time.sleep(0.1)
        if not answered:
            for q in procs:
                if q.poll() is None:
                    q.terminate()
                    q.wait()
            with open(os.path.join(scratch, name + ".out")) as f:
                raise SystemExit(f"{name} did not answer on 127.0.0.1:{port}: {f.read()[-1000:]}")
    return procs


def instance_init_pid(daemon, instance_id):
    with open(os.path.join(daemon.env["INITLESS_STATE_DIR"], "instances", instance_id, "init")) as f:
        return json.load(f)["pid"]


def server_timing(headers):
    out = {}
    for part in headers.get("Server-Timing", "").split(","):
        m = re.match(r"\s*(\w+);dur=([\d.]+)", part)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def burst(daemon, name, n, path="/"):
    """n requests at once; (latency ms, status, start kind, server timing) each."""
    def one(_):
        t = time.perf_counter()
        try:
            status, _, headers = daemon.request("GET", f"/function/{name}{path}", timeout=120)
        except OSError as e:
            return ((time.perf_counter() - t) * 1000, 0, str(e), {})
        return ((time.perf_counter() - t) * 1000, status, headers.get("X-Initless-Start", "-"), server_timing(headers))
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, range(n)))


def pss_of_cgroup(instance_id):
    total = 0
    with open(f"/sys/fs/cgroup/memory/initless/{instance_id}/cgroup.procs") as f:
        pids = [int(x) for x in f.read().split()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                m = re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M)
                total += int(m.group(1)) * 1024 if m else 0
        except OSError:
            pass
    return total


def cgroup_usage(instance_id):
    """What the instance's memory cgroup is charged: its private memory plus the page cache it was
    the first to touch (shared pages are charged once, to one cgroup)."""
    with open(f"/sys/fs/cgroup/memory/initless/{instance_id}/memory.usage_in_bytes") as f:
        return int(f.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    ap.add_argument("--bigdict-n", type=int, default=10_000_000)
    ap.add_argument("--density", type=int, default=50)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: overhead,conns,bodies,burst,bigdict,density")
    ap.add_argument("--io-threads", type=int, default=2, help="the daemon's gateway threads")
    ap.add_argument("--out", default=DOCS)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    for tool in ("wrk", "socat", "nsenter", "nginx", "haproxy"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (scripts/setup.sh installs it)")
    scratch = tempfile.mkdtemp(prefix="initless-bench-gateway-")
    rows = []
    machine = f"{platform.node()} {os.cpu_count()} cpus {platform.release()}"
    # The commit the measured binary was built from (its --version), not the checkout's HEAD.
    commit = (subprocess.run([os.path.join(ROOT, "build", "initless"), "--version"], capture_output=True,
                             text=True).stdout.partition("commit: ")[2].split() or ["unknown"])[0]

    def row(part, case, metric, value, repeat=0):
        rows.append({"part": part, "case": case, "metric": metric, "value": value, "repeat": repeat})

    daemon = Daemon(scratch, ["--io-threads", str(args.io_threads)])
    still = None  # the daemon that never polls (--spin-us 0), for the overhead part
    helpers = []  # socat, nginx, haproxy: stopped however the run ends
    summary = {}
    try:
        if not {"overhead", "conns", "bodies"} <= skip:
            print("overhead: warm node-keepalive, direct vs through the gateway", flush=True)
            daemon.deploy(os.path.join(ROOT, "bench", "gateway", "functions", "node-keepalive"))
            status, _, headers = daemon.get("/function/node-keepalive/")
            assert status == 200
            init = instance_init_pid(daemon, headers["X-Initless-Instance"])
            direct_url = "http://127.0.0.1:9000/"
            gw_url = f"http://{daemon.address}/function/node-keepalive/"
        if "overhead" not in skip:
            still_scratch = os.path.join(scratch, "spin0")
            os.makedirs(still_scratch)
            still = Daemon(still_scratch, ["--io-threads", str(args.io_threads), "--spin-us", "0"])
            still.deploy(os.path.join(ROOT, "bench", "gateway", "functions", "node-keepalive"))
            assert still.get("/function/node-keepalive/")[0] == 200
            still_url = f"http://{still.address}/function/node-keepalive/"
            # The floor of any proxy on this machine, in the same run: socat forwarding bytes (no HTTP)
            # from 127.0.0.1:9001 to the function, in the function's network namespace, wrk there too.
            floor = subprocess.Popen(["nsenter", f"--net=/proc/{init}/ns/net", "socat",
                                      "TCP-LISTEN:9001,bind=127.0.0.1,reuseaddr,fork", "TCP:127.0.0.1:9000"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            helpers.append(floor)
            references = reference_proxies(scratch, init, args.io_threads)
            helpers += references
            time.sleep(0.3)
            steal0, total0 = cpu_times()
            cases = (("direct", direct_url, init, None), ("socat", "http://127.0.0.1:9001/", init, None),
                     ("nginx", "http://127.0.0.1:9002/", init, None), ("haproxy", "http://127.0.0.1:9003/", init, None),
                     ("gateway", gw_url, None, daemon), ("gateway-spin0", still_url, None, still))
            for r in range(args.repeats):
                for case, url, ns, owner in cases:
                    cpu0 = cpu_seconds(owner.proc.pid) if owner else 0
                    one = wrk(url, 1, args.seconds, netns_pid=ns)
                    if owner:
                        row("overhead", case, "daemon_cpu_us_per_request_c1",
                            (cpu_seconds(owner.proc.pid) - cpu0) * 1e6 / max(one["requests"], 1), r)
                    many = wrk(url, 50, args.seconds, threads=1, netns_pid=ns)
                    row("overhead", case, "p50_ms_c1", one["p50_ms"], r)
                    row("overhead", case, "p99_ms_c1", one["p99_ms"], r)
                    row("overhead", case, "rps_c1", one["rps"], r)
                    row("overhead", case, "rps_c50", many["rps"], r)
                    row("overhead", case, "p50_ms_c50", many["p50_ms"], r)
                    row("overhead", case, "errors", one["errors"] + many["errors"], r)
                    print(f"  {case} #{r}: c1 p50 {one['p50_ms']:.3f} ms p99 {one['p99_ms']:.3f} ms {one['rps']:.0f} rps; "
                          f"c50 {many['rps']:.0f} rps", flush=True)
                # One connection again with a busy loop on one CPU: no vCPU halts between the hops.
                for case, url, ns, _ in cases:
                    if case in ("socat", "nginx", "haproxy"):
                        continue
                    spinner = subprocess.Popen(["/usr/bin/python3", "-c", "while True: pass"])
                    time.sleep(0.2)
                    try:
                        one = wrk(url, 1, args.seconds, netns_pid=ns)
                    finally:
                        spinner.kill()
                        spinner.wait()
                    row("overhead", case + "-awake", "p50_ms_c1", one["p50_ms"], r)
                    row("overhead", case + "-awake", "p99_ms_c1", one["p99_ms"], r)
                    row("overhead", case + "-awake", "rps_c1", one["rps"], r)
                    row("overhead", case + "-awake", "errors", one["errors"], r)
                    print(f"  {case}, one CPU kept busy #{r}: c1 p50 {one['p50_ms']:.3f} ms {one['rps']:.0f} rps", flush=True)
            steal1, total1 = cpu_times()
            # Time the host gave this VM's vCPUs to others: the noise on every figure of this part.
            row("overhead", "machine", "steal_pct", (steal1 - steal0) * 100 / max(total1 - total0, 1))
            for p in [floor] + references:
                p.terminate()
                p.wait()
            still.stop()
            still = None
        if "conns" not in skip:
            print("conns: wrk -c 1000 through the gateway", flush=True)
            res = wrk(gw_url, 1000, args.seconds * 2, threads=2)
            row("conns", "gateway-c1000", "requests", res["requests"])
            row("conns", "gateway-c1000", "errors", res["errors"])
            row("conns", "gateway-c1000", "rps", res["rps"])
            row("conns", "gateway-c1000", "p99_ms", res["p99_ms"])
            print(f"  {res['requests']} requests, {res['errors']} errors, {res['rps']:.0f} rps, p99 {res['p99_ms']} ms", flush=True)

        if "bodies" not in skip:
            print("bodies: a 1 GiB download and a 60 MiB upload, directly and through the gateway", flush=True)
            upload = os.path.join(scratch, "upload.bin")
            with open(upload, "wb") as f:
                f.write(os.urandom(60 << 20))
            base_of = {"direct": ("http://127.0.0.1:9000", init), "gateway": (gw_url.rstrip("/"), None)}
            for r in range(args.repeats):
                for case, (base, ns) in base_of.items():
                    cpu0 = cpu_seconds(daemon.proc.pid)
                    secs, size = curl_transfer(base + "/download?mb=1024", ns)
                    cpu1 = cpu_seconds(daemon.proc.pid)
                    assert size == 1 << 30, (case, size)
                    down = 1024 / secs
                    row("bodies", case, "download_mib_per_s", down, r)
                    if case == "gateway":
                        row("bodies", case, "daemon_cpu_s_per_gib", cpu1 - cpu0, r)
                    secs, _ = curl_transfer(base + "/upload", ns, upload)
                    row("bodies", case, "upload_mib_per_s", 60 / secs, r)
                    print(f"  {case} #{r}: download {down:.0f} MiB/s, upload {60 / secs:.0f} MiB/s", flush=True)

        if "burst" not in skip:
            print("burst: concurrent cold starts of python-hello", flush=True)
            for n in (50, 100):
                for pool in ("empty", "full"):
                    name = f"burst-{n}-{pool}"
                    d = variant(scratch, os.path.join(ROOT, "examples", "python-hello"), name,
                                {"name": f'"{name}"', "max_instances": str(n), "concurrency": "1",
                                 "prestart": str(n if pool == "full" else 0), "timeout_s": "60"})
                    daemon.deploy(d)
                    if pool == "full":
                        daemon.wait(name, lambda f: f["pool"] >= n, f"pool of {n}")
                    results = burst(daemon, name, n)
                    errors = sum(1 for r in results if r[1] != 200)
                    lat = sorted(r[0] for r in results)
                    for i, r in enumerate(results):
                        row("burst", f"{n}-pool-{pool}", "latency_ms", r[0], i)
                        row("burst", f"{n}-pool-{pool}", "restore_ms", r[3].get("restore", 0), i)
                        row("burst", f"{n}-pool-{pool}", "sandbox_ms", r[3].get("sandbox", 0), i)
                        row("burst", f"{n}-pool-{pool}", "queue_ms", r[3].get("queue", 0), i)
                    row("burst", f"{n}-pool-{pool}", "errors", errors)
                    kinds = {}
                    for r in results:
                        kinds[r[2]] = kinds.get(r[2], 0) + 1
                    summary[f"burst {n} pool {pool}"] = (f"p50 {statistics.median(lat):.0f} ms, p99 {lat[int(len(lat) * 0.99) - 1]:.0f} ms, "
                                                         f"max {lat[-1]:.0f} ms, errors {errors}, starts {kinds}")
                    print(f"  {n} at once, pool {pool}: {summary[f'burst {n} pool {pool}']}", flush=True)
                    daemon.cli("rm", name)

        if not {"bigdict", "density"} <= skip:
            print(f"bigdict: python-bigdict with {args.bigdict_n} keys", flush=True)
            name = "bigdict"
            d = variant(scratch, os.path.join(ROOT, "examples", "python-bigdict"), name,
                        {"name": '"bigdict"', "memory_mb": "4096", "prestart": "1", "max_instances": str(max(args.density, 1)),
                         "timeout_s": "300", "concurrency": "1"},
                        env={"BIGDICT_N": str(args.bigdict_n)})
            daemon.deploy(d)
            info = daemon.function(name)
            ws_pages = info["deploy"].get("working_set_pages", 0)
            image_bytes = info["deploy"].get("image_bytes", 0)
            row("bigdict", "image", "image_bytes", image_bytes)
            row("bigdict", "image", "working_set_bytes", ws_pages * 4096)
        if "bigdict" not in skip:
            cold = []
            for r in range(max(args.repeats, 5)):
                daemon.scale(name, 0)
                daemon.wait(name, lambda f: f["pool"] >= 1 and not f["instances"] and f["starting"] == 0, "pool full, no instance")
                time.sleep(0.2)
                t = time.perf_counter()
                status, body, headers = daemon.get(f"/function/{name}/")
                ms = (time.perf_counter() - t) * 1000
                st = server_timing(headers)
                assert status == 200 and headers.get("X-Initless-Start") == "cold", (status, headers)
                cold.append(ms)
                row("bigdict", "cold-pool-full", "client_ms", ms, r)
                for k, v in st.items():
                    row("bigdict", "cold-pool-full", f"{k}_ms", v, r)
                print(f"  cold #{r}: {ms:.2f} ms ({headers.get('Server-Timing')})", flush=True)
            summary["bigdict cold GET / (pool full)"] = f"median {statistics.median(cold):.2f} ms over {len(cold)}"
        if "density" not in skip:
            n = args.density
            print(f"density: {n} instances of the bigdict", flush=True)
            daemon.scale(name, n)
            daemon.wait(name, lambda f: len(f["instances"]) >= n and f["starting"] == 0, f"{n} instances", timeout=900)
            results = burst(daemon, name, n)
            errors = sum(1 for r in results if r[1] != 200)
            time.sleep(1)
            ids = [i["id"] for i in daemon.function(name)["instances"]]
            pss = sum(pss_of_cgroup(i) for i in ids)
            charged = sum(cgroup_usage(i) for i in ids)
            row("density", f"{len(ids)}-instances", "cgroup_usage_bytes", charged)
            budget = image_bytes + len(ids) * ws_pages * 4096
            row("density", f"{len(ids)}-instances", "pss_bytes", pss)
            row("density", f"{len(ids)}-instances", "image_plus_n_ws_bytes", budget)
            row("density", f"{len(ids)}-instances", "errors", errors)
            summary["density"] = (f"{len(ids)} instances: PSS {pss / 2**30:.2f} GiB, memory cgroups charged {charged / 2**30:.2f} GiB "
                                  f"(the image, {image_bytes / 2**30:.2f} GiB, is page cache shared by all) vs image + N x working set "
                                  f"{budget / 2**30:.2f} GiB (ratio {max(pss, charged) / budget:.2f}; target <= 1.10), errors {errors}")
            print("  " + summary["density"], flush=True)
    finally:
        for p in helpers:
            if p.poll() is None:
                p.terminate()
                p.wait()
        if still:
            still.stop()
        daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gateway.csv"), "w", newline="") as f:
        f.write(f"# bench/gateway/gateway.py on {machine}, commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
        w = csv.DictWriter(f, fieldnames=["part", "case", "metric", "value", "repeat"])
        w.writeheader()
        w.writerows(rows)

    def each(part, case, metric):  # by repeat
        return [r["value"] for r in sorted(rows, key=lambda r: r["repeat"])
                if r["part"] == part and r["case"] == case and r["metric"] == metric]

    def med(part, case, metric):
        v = [x for x in each(part, case, metric) if x is not None]
        return statistics.median(v) if v else None

    lines = [f"# Gateway bench\n", f"Machine: {machine}; commit {commit}; {time.strftime('%Y-%m-%d', time.gmtime())}; "
             f"daemon with {args.io_threads} I/O threads. "
             f"Medians of {args.repeats} alternated repeats where repeated.\n"]
    if "overhead" not in skip:
        d50, g50 = med("overhead", "direct", "p50_ms_c1"), med("overhead", "gateway", "p50_ms_c1")
        d99, g99 = med("overhead", "direct", "p99_ms_c1"), med("overhead", "gateway", "p99_ms_c1")
        drps, grps = med("overhead", "direct", "rps_c50"), med("overhead", "gateway", "rps_c50")
        summary["added latency p50 (1 connection)"] = f"{(g50 - d50) * 1000:.0f} us (direct {d50 * 1000:.0f} us, gateway {g50 * 1000:.0f} us; target <= 50 us)"
        summary["added latency p99 (1 connection)"] = f"{(g99 - d99) * 1000:.0f} us"
        n50 = med("overhead", "gateway-spin0", "p50_ms_c1")
        summary["added latency p50, a gateway that never polls (--spin-us 0)"] = (
            f"{(n50 - d50) * 1000:.0f} us (gateway {n50 * 1000:.0f} us)")
        da, ga, na = (med("overhead", c + "-awake", "p50_ms_c1") for c in ("direct", "gateway", "gateway-spin0"))
        summary["added latency p50 with one CPU kept busy (no vCPU halts), 1 connection"] = (
            f"{(ga - da) * 1000:.0f} us (direct {da * 1000:.0f} us, gateway {ga * 1000:.0f} us); "
            f"--spin-us 0: {(na - da) * 1000:.0f} us")
        gc, nc = med("overhead", "gateway", "daemon_cpu_us_per_request_c1"), med("overhead", "gateway-spin0", "daemon_cpu_us_per_request_c1")
        summary["daemon CPU per request, 1 connection"] = f"{gc:.0f} us (polling), {nc:.0f} us (--spin-us 0)"
        summary["CPU steal during this part (the host's other guests)"] = f"{med('overhead', 'machine', 'steal_pct'):.1f}%"
        def per_repeat(case):  # its throughput on 50 connections against direct's in the same repeat, lowest first
            ratios = sorted(c / d for c, d in zip(each("overhead", case, "rps_c50"), each("overhead", "direct", "rps_c50")))
            return ", ".join(f"{x * 100:.0f}%" for x in ratios)

        nrps = med("overhead", "gateway-spin0", "rps_c50")
        summary["throughput, 50 connections"] = (
            f"gateway {grps:.0f} rps = {grps / drps * 100:.0f}% of direct {drps:.0f} rps (target >= 80%); "
            f"per repeat {per_repeat('gateway')}; --spin-us 0: {nrps / drps * 100:.0f}%")
        s50, srps = med("overhead", "socat", "p50_ms_c1"), med("overhead", "socat", "rps_c50")
        summary["a byte-forwarding proxy, same run (socat, no HTTP)"] = (
            f"adds {(s50 - d50) * 1000:.0f} us p50 on 1 connection; {srps / drps * 100:.0f}% of direct throughput on 50")
        refs = []
        for proxy in ("nginx", "haproxy"):
            p50, rps = med("overhead", proxy, "p50_ms_c1"), med("overhead", proxy, "rps_c50")
            refs.append(f"{proxy} adds {(p50 - d50) * 1000:.0f} us p50 on 1 connection, {rps / drps * 100:.0f}% of direct "
                        f"throughput on 50 (per repeat {per_repeat(proxy)})")
        summary[f"HTTP reverse proxies, same run ({args.io_threads} workers each, kept-alive upstream)"] = "; ".join(refs)
    if "bodies" not in skip:
        for what, metric in (("a 1 GiB download", "download_mib_per_s"), ("a 60 MiB upload", "upload_mib_per_s")):
            d, g = med("bodies", "direct", metric), med("bodies", "gateway", metric)
            summary[f"{what} (node-keepalive, curl)"] = (
                f"gateway {g:.0f} MiB/s, direct {d:.0f} MiB/s ({g / d * 100:.0f}%)")
        summary["the daemon's CPU per GiB passed on"] = f"{med('bodies', 'gateway', 'daemon_cpu_s_per_gib'):.2f} s"
    if "conns" not in skip:
        summary["1000 keep-alive connections"] = f"{med('conns', 'gateway-c1000', 'requests'):.0f} requests, {med('conns', 'gateway-c1000', 'errors'):.0f} errors"
    lines.append("| measurement | result |\n| --- | --- |\n")
    lines += [f"| {k} | {v} |\n" for k, v in summary.items()]
    # What follows the marker in gateway.md (the notes on each run, written by people) is kept.
    md = os.path.join(args.out, "gateway.md")
    marker = "<!-- notes: kept by bench/gateway/gateway.py -->\n"
    notes = ""
    if os.path.exists(md):
        with open(md) as f:
            old = f.read()
        if marker in old:
            notes = old[old.index(marker):]
    with open(md, "w") as f:
        f.writelines(lines)
        f.write("\n" + (notes or marker))
    print("".join(lines))

    if "burst" not in skip:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for case in ("50-pool-empty", "50-pool-full", "100-pool-empty", "100-pool-full"):
                v = sorted(r["value"] for r in rows if r["part"] == "burst" and r["case"] == case and r["metric"] == "latency_ms")
                if v:
                    ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=case)
            ax.set_xlabel("latency of a cold request through the gateway (ms)")
            ax.set_ylabel("fraction of requests")
            ax.set_title(f"python-hello, N concurrent requests with no instance running ({machine})", fontsize=9)
            ax.legend()
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(os.path.join(args.out, "gateway-burst.png"), dpi=110)
        except ImportError:
            print("matplotlib missing: no plot", file=sys.stderr)


if __name__ == "__main__":
    main()
