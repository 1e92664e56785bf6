#!/usr/bin/python3
"""The seed's experiment as the seed ran it: from `docker run` to the first HTTP response, runc against
initless, in one run, through a containerd and dockerd of our own.

  bench/docker/docker.py [--build DIR] [--repeats N] [--apps hello,bigdict,spring] [--bigdict-n N]
                         [--network bridge|host] [--modes runc,boot,restore,start] [--out-dir DIR]

Apps (one image, assembled from the host's Debian packages with `dpkg -L` and `docker import`, since no
registry is reachable): `hello`, a Flask hello; `bigdict`, examples/python-bigdict with BIGDICT_N entries
(10 000 000: about 1.3 GB, the seed's Table 1 size); `spring`, examples/spring-jetty (Spring Web MVC on
embedded Jetty, the seed's JVM web app as close as Debian's packages allow). Each prints its ready phrase.

Modes, interleaved within each repeat so that load from other users of the machine falls on all alike:
  runc     docker run --runtime runc                        (the baseline: a boot)
  boot     docker run --runtime initless, no CHECKPOINT_MSG (a plain container under initless: a boot)
  restore  docker run --runtime initless -e CHECKPOINT_MSG   (restored from the snapshot the first
                                                             such container made: create = stage 1,
                                                             start = stage 2)
  start    docker create ... ahead (not timed), then docker start. Docker 20.10 calls neither of the
           runtime's verbs at `docker create` (it only records the container): `docker start` makes the
           containerd task, which runs the runtime's create and then its start. So a pre-created
           container holds no pre-started sandbox unless the runtime keeps one ready by itself.
Each measurement is split, from the runtime's own verbs (a wrapper around each runtime binary logs when
create and start begin and end, bash's $EPOCHREALTIME, no fork), into:
  cli_ms       the docker CLI, dockerd, containerd and the shim: from the command to `create` beginning,
               plus from `create` ending to `start` beginning
  create_ms    the runtime's create verb
  start_ms     the runtime's start verb
  respond_ms   from `start` ending to the first HTTP 200 on the published port (the app's own start for a
               boot; for a restore, the restored process answering)
  total_ms     from the command to the first HTTP 200
The wrapper costs one bash exec per verb on both runtimes alike. Writes <out-dir>/docker.csv (one row per
measurement), docker.md (machine, medians, ratios, targets) and docker.png; with --network host,
docker-host.{csv,md,png}. The initless runtime runs with --debug, whose log names each verb's steps with
their times: hooks_ms is its "hooks" steps (Docker's prestart hook, libnetwork-setkey, which runs in
create under the bridge network and is not there with --network host), own_ms = create + start - hooks.

Needs root, docker.io, containerd, runc (scripts/setup.sh installs them) and the build (build/initless,
build/examples/spring-jetty). Uses only its own daemons, roots and sockets, and removes what they left.
"""
import argparse
import csv
import datetime
import fcntl
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST_IPTABLES = os.path.join(ROOT, "scripts", "host-iptables.sh")
MODES = ["runc", "boot", "restore", "start"]
FIELDS = ["app", "mode", "repeat", "total_ms", "cli_ms", "create_ms", "start_ms", "respond_ms", "hooks_ms", "own_ms",
          "started", "status", "detail", "steps"]
PORT = 8080

HELLO = '''import os
from flask import Flask
from werkzeug.serving import make_server
app = Flask("hello")
@app.route("/")
def hello():
    return "hello from pid %d\\n" % os.getpid()
# Listening before the phrase: an init-less snapshot is taken when the phrase appears.
server = make_server("0.0.0.0", int(os.environ.get("PORT", "8080")), app, threaded=False)
print("flask-hello: ready", flush=True)
server.serve_forever()
'''

JARS = ["spring3-core", "spring3-beans", "spring3-context", "spring3-aop", "spring3-expression", "spring3-web",
        "spring3-web.servlet", "commons-logging", "servlet-api", "jetty9-server", "jetty9-servlet", "jetty9-security",
        "jetty9-http", "jetty9-io", "jetty9-util"]


def log(msg):
    print(f"[{datetime.datetime.utcnow():%H:%M:%S}] {msg}", flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


class Daemons:
    """containerd and dockerd of our own under T, with two runtimes, each behind a timing wrapper."""

    def __init__(self, t, initless, network):
        self.t = t
        self.timing = os.path.join(t, "verbs.log")
        self.store = os.path.join(t, "store")
        os.makedirs(self.store)
        self.procs = {}
        wrappers = {"runc-timed": (shutil.which("runc"), ""),
                    "initless-timed": (initless, f"--debug --snapshot-store {self.store}")}
        runtimes = {}
        for name, (binary, extra) in wrappers.items():
            path = os.path.join(t, name)
            with open(path, "w") as f:
                f.write(f'''#!/bin/bash
# Logs when each verb begins and ends, then runs {binary}. Global flags come before the verb.
verb=""; skip=0
for a in "$@"; do
  if ((skip)); then skip=0; continue; fi
  case $a in --root|--log|--log-format|--criu|--snapshot-store) skip=1 ;; -*) ;; *) verb=$a; break ;; esac
done
id=${{@: -1}}
echo "$EPOCHREALTIME begin $verb $id" >> {self.timing}
{binary} {extra} "$@"
rc=$?
echo "$EPOCHREALTIME end $verb $id $rc" >> {self.timing}
exit $rc
''')
            os.chmod(path, 0o755)
            runtimes[name] = {"path": path}
        with open(os.path.join(t, "containerd.toml"), "w") as f:
            f.write(f'''version = 2
root = "{t}/containerd/root"
state = "{t}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{t}/containerd.sock"
[ttrpc]
  address = "{t}/containerd.sock.ttrpc"
[debug]
  address = ""
''')
        with open(os.path.join(t, "daemon.json"), "w") as f:
            json.dump({"runtimes": runtimes}, f)
        self.had_docker0 = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
        self.mounts_before = self.host_mounts()
        self.cgroups_before = self.host_cgroups()
        # dockerd's firewall rules for docker0, which it never removes: stop() puts the tables back. One
        # dockerd of ours at a time (this bench, tests/docker): the restore undoes whatever changed meanwhile.
        self.lock = open("/run/lock/initless-dockerd.lock", "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.iptables_before = os.path.join(t, "iptables.before")
        subprocess.run([HOST_IPTABLES, "save", self.iptables_before], check=True)
        try:
            self.start_daemons(t, network)
        except BaseException:
            self.stop()  # what started, and the tables
            raise

    def start_daemons(self, t, network):
        self.start("containerd", ["containerd", "--config", f"{t}/containerd.toml"], f"{t}/containerd.sock")
        extra = ["--bridge", "none", "--iptables=false"] if network == "host" else []
        self.start("dockerd", ["dockerd", "--config-file", f"{t}/daemon.json", "--containerd", f"{t}/containerd.sock",
                               "--data-root", f"{t}/docker", "--exec-root", f"{t}/dx", "--pidfile",
                               f"{t}/docker.pid", "-H", f"unix://{t}/docker.sock"] + extra, f"{t}/docker.sock")
        for _ in range(300):
            if subprocess.run(self.docker_cmd("version"), capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit("dockerd did not answer: " + open(f"{t}/dockerd.log").read()[-2000:])

    def start(self, name, cmd, sock):
        out = open(os.path.join(self.t, name + ".log"), "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        for _ in range(100):
            if os.path.exists(sock):
                return
            time.sleep(0.1)
        raise SystemExit(f"{name} did not start: " + open(os.path.join(self.t, name + ".log")).read()[-2000:])

    def docker_cmd(self, *args):
        return ["docker", "-H", f"unix://{self.t}/docker.sock", *args]

    def docker(self, *args, check=True):
        r = subprocess.run(self.docker_cmd(*args), capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])}: {r.stderr.strip()[-500:]}")
        return r.stdout.strip()

    @staticmethod
    def host_mounts():
        with open("/proc/self/mounts") as f:
            return {line.split()[1] for line in f if line.split()[1].startswith(("/run/docker/", "/var/run/docker/"))}

    @staticmethod
    def host_cgroups():
        out = set()
        for ctl in os.listdir("/sys/fs/cgroup"):
            d = os.path.join("/sys/fs/cgroup", ctl, "docker")
            if os.path.isdir(d):
                for dirpath, _, _ in os.walk(d):
                    out.add(dirpath)
        return out

    def stop(self):
        ids = self.docker("ps", "-aq", check=False).split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)
        for name in ("dockerd", "containerd"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # Shims and containers whose command lines name T, then mounts and cgroups the daemons left.
        for pid in subprocess.run(["pgrep", "-f", "--", self.t + "/"], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        with open("/proc/self/mounts") as f:
            ours = [line.split()[1] for line in f if line.split()[1].startswith(self.t)]
        for m in sorted(ours, reverse=True) + sorted(self.host_mounts() - self.mounts_before, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        for d in sorted(self.host_cgroups() - self.cgroups_before, key=len, reverse=True):
            for _ in range(20):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        if not self.had_docker0:
            subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)
        if os.path.exists(self.iptables_before):
            r = subprocess.run([HOST_IPTABLES, "restore", self.iptables_before], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"the host's iptables were not put back as they were: {r.stderr.strip()}", file=sys.stderr)
        self.lock.close()

    def runtime_log(self, container_id):
        """The runtime's log.json lines (msg) for one container, while containerd still has its state."""
        path = os.path.join(self.t, "containerd", "state", "io.containerd.runtime.v2.task", "moby", container_id,
                            "log.json")
        out = []
        try:
            with open(path) as f:
                for line in f:
                    try:
                        out.append(json.loads(line).get("msg", ""))
                    except ValueError:
                        out.append(line.strip())
        except OSError:
            pass
        return out

    def verbs(self, container_id):
        """{(verb, 'begin'|'end'): time} of the runtime's verbs for one container."""
        out = {}
        with open(self.timing) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[3] == container_id:
                    out.setdefault((parts[2], parts[1]), float(parts[0].replace(",", ".")))
        return out


def build_image(d, t, build):
    """One rootfs for every app: the Debian packages' files (dpkg -L) and /app."""
    java = os.path.realpath(shutil.which("java") or "/usr/bin/java")
    # The packages of python3, Flask, the JVM and every jar the Spring app's class path names.
    owners = subprocess.run(["dpkg", "-S", java] + [os.path.realpath(f"/usr/share/java/{j}.jar") for j in JARS],
                            capture_output=True, text=True).stdout
    want = ["python3-flask", "dash", "coreutils"] + sorted({line.split(":")[0] for line in owners.splitlines()})
    deps = sh(["apt-cache", "depends", "--recurse", "--installed", "--no-recommends", "--no-suggests", "--no-conflicts",
               "--no-breaks", "--no-replaces", "--no-enhances", *want])
    pkgs = sorted({line for line in deps.splitlines() if line and line[0].isalnum()})
    files = set()
    listing = subprocess.run(["dpkg", "-L", *pkgs], capture_output=True, text=True).stdout.splitlines()
    for f in listing:
        if not f.startswith("/") or not os.path.lexists(f):
            continue
        if os.path.isdir(f) and not os.path.islink(f):
            p = os.path.realpath(f)
        else:
            p = os.path.join(os.path.realpath(os.path.dirname(f)), os.path.basename(f))
        p = p.lstrip("/")
        if p not in ("", ".", "bin", "lib", "lib64", "sbin", "usr"):
            files.add(p)
    # The JDK's alternatives links are not in dpkg -L; the image runs java by its real path.
    with open(os.path.join(t, "files"), "w") as f:
        f.write("\n".join(sorted(files)) + "\n")
    extra = os.path.join(t, "extra")
    os.makedirs(os.path.join(extra, "app", "hello"))
    os.makedirs(os.path.join(extra, "tmp"))
    os.makedirs(os.path.join(extra, "etc"))
    os.chmod(os.path.join(extra, "tmp"), 0o1777)
    with open(os.path.join(extra, "app", "hello", "app.py"), "w") as f:
        f.write(HELLO)
    shutil.copytree(os.path.join(ROOT, "examples", "python-bigdict"), os.path.join(extra, "app", "bigdict"))
    classes = os.path.join(build, "examples", "spring-jetty", "classes")
    if os.path.isdir(classes):
        shutil.copytree(classes, os.path.join(extra, "app", "spring", "classes"))
    with open(os.path.join(extra, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    tar = os.path.join(t, "rootfs.tar")
    subprocess.run(["tar", "-C", "/", "-cf", tar, "--no-recursion", "usr", "bin", "lib", "lib64", "sbin", "-T",
                    os.path.join(t, "files")], capture_output=True)
    subprocess.run(["tar", "-C", extra, "-rf", tar, "app", "tmp", "etc/passwd"], check=True)
    d.docker("import", tar, "initless-bench:apps")
    os.unlink(tar)
    return java


def apps(java, bigdict_n):
    cp = ":".join(["/app/spring/classes"] + [f"/usr/share/java/{j}.jar" for j in JARS])
    return {
        "hello": {"cmd": ["python3", "/app/hello/app.py"], "phrase": "flask-hello: ready", "env": {}},
        "bigdict": {"cmd": ["python3", "/app/bigdict/app.py"], "phrase": "python-bigdict: ready",
                    "env": {"BIGDICT_N": str(bigdict_n), "PYTHONDONTWRITEBYTECODE": "1"}},
        "spring": {"cmd": [java, "-XX:-UsePerfData", "-Xshare:auto", "-Xms96m", "-Xmx96m", "-XX:+UseSerialGC",
                           "-XX:TieredStopAtLevel=1", "-cp", cp, "SpringJettyApp"],
                   "phrase": "spring-jetty: ready", "env": {}},
    }


def first_response(port, deadline_s):
    """Seconds (monotonic) at the first HTTP 200 on 127.0.0.1:port, or None."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.002)
    return None


class Runner:
    def __init__(self, d, network, timeout_s):
        self.d = d
        self.network = network
        self.timeout_s = timeout_s
        self.port = 18000

    def args(self, app, mode, name):
        runtime = "runc-timed" if mode == "runc" else "initless-timed"
        a = ["--runtime", runtime, "--name", name, "-e", f"PORT={PORT}"]
        for k, v in app["env"].items():
            a += ["-e", f"{k}={v}"]
        if mode in ("restore", "start"):
            a += ["-e", f"CHECKPOINT_MSG={app['phrase']}"]
        self.port += 1
        if self.network == "host":
            a += ["--network", "host"]
            port = PORT
        else:
            a += ["-p", f"127.0.0.1:{self.port}:{PORT}"]
            port = self.port
        return a + ["initless-bench:apps", *app["cmd"]], port

    def prime(self, app_name, app):
        """The first init-less container of the key: boots and snapshots at its phrase."""
        before = set(os.listdir(self.d.store))
        args, port = self.args(app, "restore", f"prime-{app_name}")
        self.d.docker("run", "-d", *args)
        ok = first_response(port, self.timeout_s) is not None
        end = time.monotonic() + self.timeout_s
        made = False
        while time.monotonic() < end and not made:
            # A finished snapshot is a directory named by its key (64 hex digits); one being written
            # has a suffix until it is renamed.
            made = any(re.fullmatch(r"[0-9a-f]{64}", n) and os.path.isdir(os.path.join(self.d.store, n))
                       for n in set(os.listdir(self.d.store)) - before)
            time.sleep(0.1)
        logs = self.d.docker("logs", f"prime-{app_name}", check=False)
        self.d.docker("rm", "-f", f"prime-{app_name}", check=False)
        if not (ok and made):
            raise RuntimeError(f"{app_name}: the first init-less container made no snapshot "
                               f"(answered: {ok}); its log: {logs[-500:]}")

    def measure(self, app_name, app, mode, repeat):
        name = f"{app_name}-{mode}-{repeat}"
        args, port = self.args(app, mode, name)
        row = {"app": app_name, "mode": mode, "repeat": repeat, "status": "ok", "detail": ""}
        try:
            if mode == "start":
                cid = self.d.docker("create", *args)
                time.sleep(1.0)  # a pre-started container waits for its request
                t0 = time.monotonic()
                w0 = time.time()
                self.d.docker("start", name)
            else:
                t0 = time.monotonic()
                w0 = time.time()
                cid = self.d.docker("run", "-d", *args)
            t1 = first_response(port, self.timeout_s)
            if t1 is None:
                raise RuntimeError("no HTTP 200 within the deadline; log: "
                                   + self.d.docker("logs", name, check=False)[-300:])
            w1 = w0 + (t1 - t0)
            v = self.d.verbs(cid)
            row["total_ms"] = (t1 - t0) * 1000
            cb, ce = v.get(("create", "begin")), v.get(("create", "end"))
            sb, se = v.get(("start", "begin")), v.get(("start", "end"))
            if None not in (cb, ce, sb, se):
                row["create_ms"] = (ce - cb) * 1000
                row["start_ms"] = (se - sb) * 1000
                row["respond_ms"] = (w1 - se) * 1000
                row["cli_ms"] = row["total_ms"] - row["create_ms"] - row["start_ms"] - row["respond_ms"]
            # How it started, from the runtime's log: a restore names its snapshot; a failed one says
            # "booting instead"; a boot under initless or runc says nothing.
            msgs = self.d.runtime_log(cid)
            # initless --debug: "create ID: config 0.2 ms, ..., hooks 180.3 ms, ..." (the hooks step is
            # Docker's prestart hook and the record written before it).
            hooks = [float(m) for line in msgs if line.startswith(("create ", "start "))
                     for m in re.findall(r"(?:: |, )hooks(?: \([^)]*\))? ([0-9.]+) ms", line)]
            row["steps"] = " | ".join(line for line in msgs if line.startswith(("create ", "start ")))
            if hooks and "create_ms" in row:
                row["hooks_ms"] = sum(hooks)
                row["own_ms"] = row["create_ms"] + row["start_ms"] - row["hooks_ms"]
            failed = [m for m in msgs if "booting instead" in m or "not usable" in m]
            restored = any("init-less, snapshot" in m for m in msgs) and not failed
            row["started"] = "restore" if restored else "boot"
            if mode in ("restore", "start") and not restored:
                row["status"] = "fallback"
                row["detail"] = (failed[0] if failed else "booted: no snapshot of its key (log.json: "
                                 + " | ".join(msgs)[-300:] + ")")
        except Exception as e:  # a failed measurement is a row, and the bench goes on
            row["status"] = "fail"
            row["detail"] = str(e)[:400]
        self.d.docker("rm", "-f", name, check=False)
        return row


def median(rows, app, mode, key):
    vals = [r[key] for r in rows if r["app"] == app and r["mode"] == mode and r["status"] == "ok"
            and r.get(key) not in (None, "")]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


def report(rows, out_dir, machine, commit, args):
    stem = "docker" if args.network == "bridge" else f"docker-{args.network}"
    with open(os.path.join(out_dir, stem + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.1f}" if isinstance(r.get(k), float) else r.get(k, "")) for k in FIELDS})
    lines = ["# Docker bench: `docker run` to the first HTTP response, runc vs initless",
             f"Machine: {machine}; commit {commit}; {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; "
             f"network {args.network}; medians of {args.repeats} interleaved repeats. Made by bench/docker/docker.py.",
             "", "| app | mode | total ms | CLI + daemons | create | start | first response | n |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    app_names = sorted({r["app"] for r in rows}, key=["hello", "bigdict", "spring"].index)
    for a in app_names:
        for m in MODES:
            tot, n = median(rows, a, m, "total_ms")
            if tot is None:
                fails = [r["detail"] for r in rows if r["app"] == a and r["mode"] == m and r["status"] != "ok"]
                if fails:
                    lines.append(f"| {a} | {m} | failed: {fails[0][:120]} | | | | | 0 |")
                continue
            cells = [median(rows, a, m, k)[0] for k in ("cli_ms", "create_ms", "start_ms", "respond_ms")]
            lines.append(f"| {a} | {m} | {tot:.0f} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells)
                         + f" | {n} |")
    lines += ["", "`started` in docker.csv says whether the container was restored (the runtime's log names its snapshot) or "
              "booted; a restore-mode row that booted is marked `fallback` and left out of the medians.",
              "", "Targets (issue 12):"]
    for a in app_names:
        runc, _ = median(rows, a, "runc", "total_ms")
        start, _ = median(rows, a, "start", "total_ms")
        if runc and start:
            lines.append(f"- {a}: `docker start` of a pre-created init-less container is {runc / start:.1f}x faster "
                         f"than `docker run` with runc ({start:.0f} vs {runc:.0f} ms; target for bigdict: >= 20x)")
        c, _ = median(rows, a, "restore", "create_ms")
        s, _ = median(rows, a, "restore", "start_ms")
        if c is not None and s is not None:
            rc, _ = median(rows, a, "runc", "create_ms")
            rs, _ = median(rows, a, "runc", "start_ms")
            own, _ = median(rows, a, "restore", "own_ms")
            hooks, _ = median(rows, a, "restore", "hooks_ms")
            lines.append(f"- {a}: the runtime's own share of a restored container (create + start): {c + s:.1f} ms "
                         f"with Docker's hooks, " + (f"{own:.1f} ms without them (hooks {hooks:.1f} ms)"
                                                     if own is not None else "hooks not measured")
                         + "; target < 20 ms; runc's create + start here, Docker's hooks included: "
                         + (f"{rc + rs:.1f} ms" if rc is not None and rs is not None else "-"))
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    labels, parts = [], {k: [] for k in ("cli_ms", "create_ms", "start_ms", "respond_ms")}
    for a in app_names:
        for m in MODES:
            if median(rows, a, m, "total_ms")[0] is None:
                continue
            labels.append(f"{a} {m}")
            for k in parts:
                parts[k].append(median(rows, a, m, k)[0] or 0.0)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5))
    left = [0.0] * len(labels)
    names = {"cli_ms": "CLI + daemons", "create_ms": "create", "start_ms": "start", "respond_ms": "first response"}
    for k, vals in parts.items():
        ax.barh(labels, vals, left=left, label=names[k])
        left = [l + v for l, v in zip(left, vals)]
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("ms (median), docker run / start to the first HTTP 200")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title(f"runc vs initless under Docker ({machine})", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, stem + ".png"), dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--apps", default="hello,bigdict,spring")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--bigdict-n", type=int, default=10_000_000)
    ap.add_argument("--network", choices=["bridge", "host"], default="bridge")
    ap.add_argument("--timeout", type=float, default=180, help="seconds to wait for a first response")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "bench"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (daemons, namespaces)")
    for tool in ("dockerd", "containerd", "runc", "docker", "apt-cache"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (scripts/setup.sh installs docker.io, containerd, runc)")
    initless = os.path.join(args.build, "initless")
    if not os.access(initless, os.X_OK):
        raise SystemExit(f"{initless} is not built")
    machine = f"{platform.node()} {os.cpu_count()} cpus {platform.release()}"
    # The commit the measured binary was built from (its --version), not the checkout's HEAD.
    commit = (subprocess.run([os.path.join(ROOT, "build", "initless"), "--version"], capture_output=True,
                             text=True).stdout.partition("commit: ")[2].split() or ["unknown"])[0]
    # SIGTERM (a kill, a CI timeout) unwinds like Ctrl-C, so the finally below stops the daemons and
    # removes their containers, mounts, cgroups and bridge instead of leaving them running.
    # Once the cleanup runs, a signal no longer interrupts it.
    cleaning = []

    def interrupted(signum, _frame):
        if not cleaning:
            raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    t = tempfile.mkdtemp(prefix="initless-bench-docker-", dir="/var/tmp")
    rows = []
    d = None
    try:
        d = Daemons(t, initless, args.network)
        log("image: the apps' rootfs from Debian packages")
        java = build_image(d, t, args.build)
        all_apps = apps(java, args.bigdict_n)
        runner = Runner(d, args.network, args.timeout)
        modes = args.modes.split(",")
        for name in args.apps.split(","):
            app = all_apps[name]
            if name == "spring" and not os.path.isdir(os.path.join(args.build, "examples", "spring-jetty", "classes")):
                log("spring: build/examples/spring-jetty is not built; skipped")
                continue
            if "restore" in modes or "start" in modes:
                log(f"{name}: the first init-less container (snapshot)")
                try:
                    runner.prime(name, app)
                except Exception as e:
                    log(f"{name}: {e}")
                    rows.append({"app": name, "mode": "restore", "repeat": 0, "status": "fail", "detail": str(e)})
                    modes_here = [m for m in modes if m not in ("restore", "start")]
                else:
                    modes_here = modes
            else:
                modes_here = modes
            for r in range(args.repeats):
                for m in modes_here:
                    row = runner.measure(name, app, m, r)
                    rows.append(row)
                    log(f"{name} {m} #{r}: " + (f"{row['total_ms']:.0f} ms" if row["status"] == "ok" else
                                                 f"{row['status']}: {row['detail'][:200]}"))
            report(rows, args.out_dir, machine, commit, args)
    finally:
        cleaning.append(True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if d:
            d.stop()
        shutil.rmtree(t, ignore_errors=True)
    if rows:
        report(rows, args.out_dir, machine, commit, args)


if __name__ == "__main__":
    main()
