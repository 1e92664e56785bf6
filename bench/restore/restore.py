#!/usr/bin/python3
"""Plain boot vs restore (eager, cow, prefetch): time to the first response, per workload, in one run.

  bench/restore/restore.py [--build DIR] [--repeats N] [--fast-repeats N] [--sizes 0.1,1.3,2.5,5,9.8] [--workloads ...]
                           [--work-dir DIR] [--out-dir DIR] [--source TEXT] [--notes FILE]
                           [--deadline HH:MM] [--late-skip python-bigdict:9.8:eager]
  bench/restore/restore.py --report docs/bench/restore.csv [--notes FILE]   # md and png again, no measuring

Build first (not in build/, which others use):
  cmake -S . -B build-bench -G Ninja && ninja -C build-bench initless example_java_hello

Workloads: java-hello, node-hello, and python-bigdict at each size (GB of dict; BIGDICT_N = size / 1.3 * 10M,
the example's own calibration). For each workload the function is snapshotted once (`initless snapshot`),
then each repeat runs, interleaved so that load from other users of the machine falls on every mode alike:
  boot   `initless run DIR --request / --json`                     cold_ms = prepare + init + exec
  eager  `initless restore IMG --strategy eager --instances 1 --request / --json --no-fallback`
  cow    the same with --strategy cow                              cold_ms = restore + exec
  prefetch the same with --strategy prefetch (cow + the snapshot's recorded working set installed in bulk)
For a restore, prepare_ms is the pre-started sandbox (and whatever of the restore the CLI does before the
request arrives); it is reported but not counted in cold_ms, since a pool does it before the request comes.
Large dicts take minutes to build, so every mode is repeated fewer times there (see size_repeats(): N up
to 1.3 GB and for the runtimes, at most 3 at 2.5 GB, at most 2 above). The snapshot's working_set_pages,
trial_restore_ms and warmup_ms are recorded in its row. With --deadline (UTC), a measurement named by
--late-skip (workload:size:mode, default python-bigdict:9.8:eager) is skipped, with a row saying so, when
the estimated rest of the run (walls of the largest size measured so far, scaled by size) would end after
the deadline. The image is deleted after its workload. Measured with a warm page cache: the image was just written and
`restore` reads it all once to verify its MAC (image_load_ms, not part of cold_ms).

A failure (a restore that fails, a boot that times out, a wrong answer) becomes a row with status "fail"
and its reason; the bench goes on. A size that does not fit the free disk or memory is skipped with a
printed reason (and a row). Writes <out-dir>/restore.csv (one row per measurement), restore.md (machine,
method, medians, ratios, targets) and restore.png, after every workload so partial results land early.
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
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = [0.1, 1.3, 2.5, 5.0, 9.8]
MODES = ["boot", "eager", "cow", "prefetch"]
RESTORE_MODES = ["eager", "cow", "prefetch"]
GIB = 1 << 30
# python-bigdict's own calibration: BIGDICT_N = 10 000 000 is about 1.3 GB.
ENTRIES_PER_GB = 10_000_000 / 1.3
MOD = (1 << 61) - 1
MULT = 0x9E3779B97F4A7C15

FIELDS = ["workload", "size_gb", "mode", "repeat", "prepare_ms", "restore_ms", "exec_ms", "cold_ms", "total_ms",
          "image_bytes", "status", "reason", "init_ms", "sandbox_ms", "image_load_ms", "spawn_ms", "plan_ms",
          "layout_ms", "threads_ms", "finish_ms", "ops", "checkpoint_ms", "wall_ms", "bigdict_n",
          "working_set_pages", "trial_restore_ms", "warmup_ms"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_matplotlib():
    """python3-matplotlib from Debian, installed only when missing."""
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    log("installing python3-matplotlib (apt)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-q", "python3-matplotlib"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "python3-matplotlib"]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode == 0 and cmd[1] == "install":
            break
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        log("python3-matplotlib is not available: no plot")
        return False


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def git(*args):
    p = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
    return p.stdout.strip()


def size_repeats(size_gb, repeats):
    """Plain boot and eager restore of a big dict take minutes: fewer repeats there, for every mode."""
    if size_gb is None or size_gb <= 1.3:
        return repeats
    return min(repeats, 3 if size_gb <= 2.5 else 2)


def bigdict_dir(work, size_gb):
    """A function dir for python-bigdict at size_gb: app.py copied, function.toml with BIGDICT_N, memory, timeout."""
    n = int(round(size_gb * ENTRIES_PER_GB))
    src = os.path.join(ROOT, "examples", "python-bigdict")
    d = os.path.join(work, f"python-bigdict-{size_gb:g}gb")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    shutil.copy2(os.path.join(src, "app.py"), d)
    with open(os.path.join(src, "function.toml")) as f:
        toml = f.read()
    # Room for the dict plus its resize peak (old and new tables) and the interpreter.
    memory_mb = int(size_gb * 1024 * 1.6) + 512
    timeout_s = max(30, int(60 * size_gb) + 60)  # 75M entries take minutes to build on a busy machine
    toml, k1 = re.subn(r'(?m)^BIGDICT_N = .*$', f'BIGDICT_N = "{n}"', toml)
    toml, k2 = re.subn(r'(?m)^memory_mb = .*$', f'memory_mb = {memory_mb}', toml)
    toml, k3 = re.subn(r'(?m)^timeout_s = .*$', f'timeout_s = {timeout_s}', toml)
    if (k1, k2, k3) != (1, 1, 1):
        sys.exit(f"examples/python-bigdict/function.toml changed shape; cannot set BIGDICT_N/memory_mb/timeout_s")
    with open(os.path.join(d, "function.toml"), "w") as f:
        f.write(f"# bench/restore variant of examples/python-bigdict: {size_gb:g} GB\n" + toml)
    return d, n, timeout_s


def check_body(workload, body):
    """python-bigdict answers `dict[k] = v`; v is a fixed function of k, so a wrong restore shows."""
    if workload != "python-bigdict":
        return None
    m = re.match(r"dict\[(\d+)\] = (\d+)", body or "")
    if not m:
        return f"unexpected body {body[:80]!r}"
    k, v = int(m.group(1)), int(m.group(2))
    return None if (k * MULT) % MOD == v else f"wrong value for key {k}: {v}"


def invoke(cmd, env, timeout):
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s", (time.monotonic() - t0) * 1000
    wall = (time.monotonic() - t0) * 1000
    if p.returncode != 0:
        lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
        return None, (lines[0] if lines else f"exit {p.returncode}")[:300], wall
    try:
        return json.loads(p.stdout), p.stderr.strip(), wall
    except json.JSONDecodeError:
        return None, f"no JSON on stdout: {p.stdout[:200]!r}", wall


def r2(x):
    return None if x is None else round(float(x), 3)


def run_boot(binary, d, env, timeout, workload):
    out, err, wall = invoke([binary, "run", d, "--request", "/", "--json"], env, timeout)
    row = {"mode": "boot", "wall_ms": r2(wall)}
    if out is None:
        return {**row, "status": "fail", "reason": err}
    row.update({k: r2(out[k]) for k in ("prepare_ms", "init_ms", "exec_ms", "total_ms")})
    row["cold_ms"] = r2(out["prepare_ms"] + out["init_ms"] + out["exec_ms"])
    row["status"] = out["status"]
    bad = check_body(workload, out.get("body"))
    if out["status"] != 200 or bad:
        row["reason"] = bad or f"HTTP {out['status']}"
    return row


def run_restore(binary, image, strategy, env, timeout, workload):
    cmd = [binary, "restore", image, "--strategy", strategy, "--instances", "1", "--request", "/", "--json",
           "--no-fallback"]
    out, err, wall = invoke(cmd, env, timeout)
    row = {"mode": strategy, "wall_ms": r2(wall)}
    if out is None:
        return {**row, "status": "fail", "reason": err}
    inst = out["instances"][0]
    row["image_load_ms"] = r2(out.get("image_load_ms"))
    if inst.get("mode") != "restore":
        return {**row, "status": "fail", "reason": f"mode {inst.get('mode')}: {inst.get('fallback_reason', '')}"[:300]}
    for k in ("prepare_ms", "sandbox_ms", "restore_ms", "exec_ms", "total_ms"):
        row[k] = r2(inst.get(k))
    for k, v in (inst.get("breakdown") or {}).items():
        if k in FIELDS:
            row[k] = v if k == "ops" else r2(v)
    row["cold_ms"] = r2(inst["restore_ms"] + inst["exec_ms"])
    row["status"] = inst.get("status")
    bad = check_body(workload, inst.get("body"))
    if inst.get("status") != 200 or bad:
        row["reason"] = bad or f"HTTP {inst.get('status')}"
    return row


def ok(r):
    return r.get("status") == 200 and not r.get("reason")


def median_of(rows, workload, size, mode, key="cold_ms"):
    vals = [r[key] for r in rows if r["workload"] == workload and r["size_gb"] == size and r["mode"] == mode
            and ok(r) and r.get(key) is not None]
    return (statistics.median(vals), len(vals), min(vals), max(vals)) if vals else (None, 0, None, None)


def workloads_done(rows):
    seen = []
    for r in rows:
        key = (r["workload"], r["size_gb"])
        if key not in seen:
            seen.append(key)
    return seen


def fmt_ms(x):
    return "-" if x is None else (f"{x:.1f}" if x < 100 else f"{x:.0f}")


def fmt_ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.1f}x"


def label(w, s):
    return f"{w} {s:g} GB" if s != "" and s is not None else w


def snapshot_row(rows, w, s):
    for r in rows:
        if r["workload"] == w and r["size_gb"] == s and r["mode"] == "snapshot":
            return r
    return {}


def summary_lines(rows):
    """Markdown tables of medians and the ratios, from this run's rows only."""
    out = ["| workload | image MB | working set pages | boot cold | eager cold | cow cold | prefetch cold "
           "| boot/eager | boot/cow | boot/prefetch | n (boot/eager/cow/prefetch) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for w, s in workloads_done(rows):
        b, e, c, p = (median_of(rows, w, s, m) for m in MODES)
        img = [r["image_bytes"] for r in rows if r["workload"] == w and r["size_gb"] == s and r.get("image_bytes")]
        ws = snapshot_row(rows, w, s).get("working_set_pages")
        out.append(f"| {label(w, s)} | " + (f"{img[0] / 1e6:.0f}" if img else "-") + " | "
                   + ("-" if ws is None else f"{int(ws)}") + " | "
                   + " | ".join([fmt_ms(b[0]), fmt_ms(e[0]), fmt_ms(c[0]), fmt_ms(p[0]),
                                 fmt_ratio(b[0], e[0]), fmt_ratio(b[0], c[0]), fmt_ratio(b[0], p[0]),
                                 f"{b[1]}/{e[1]}/{c[1]}/{p[1]}"]) + " |")
    out += ["", "Cold split into restore (the request-path part of the restore) + exec (the first request), "
            "medians in ms:", "",
            "| workload | eager restore | eager exec | cow restore | cow exec | prefetch restore | prefetch exec |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for w, s in workloads_done(rows):
        out.append(f"| {label(w, s)} | " + " | ".join(fmt_ms(median_of(rows, w, s, m, k)[0]) for m in RESTORE_MODES
                                                      for k in ("restore_ms", "exec_ms")) + " |")
    out += ["", "Size dependence, python-bigdict 9.8 GB vs 1.3 GB (medians, ms):", "",
            "| mode | cold 1.3 GB | cold 9.8 GB | cold 9.8/1.3 | restore 1.3 GB | restore 9.8 GB | restore 9.8/1.3 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in MODES:
        c13 = median_of(rows, "python-bigdict", 1.3, m)[0]
        c98 = median_of(rows, "python-bigdict", 9.8, m)[0]
        if m == "boot":
            r13 = r98 = None
        else:
            r13 = median_of(rows, "python-bigdict", 1.3, m, "restore_ms")[0]
            r98 = median_of(rows, "python-bigdict", 9.8, m, "restore_ms")[0]
        out.append(f"| {m} | {fmt_ms(c13)} | {fmt_ms(c98)} | {fmt_ratio(c98, c13)} | {fmt_ms(r13)} | {fmt_ms(r98)} | "
                   f"{fmt_ratio(r98, r13)} |")
    return out


def breakdown_lines(rows):
    keys = (["sandbox_ms"] if two_stage(rows) else []) + ["prepare_ms", "spawn_ms", "plan_ms", "layout_ms", "threads_ms", "finish_ms", "restore_ms",
            "exec_ms", "image_load_ms", "wall_ms"]
    out = ["| workload | mode | " + " | ".join(k.replace("_ms", "") for k in keys) + " |",
           "| --- | --- |" + " ---: |" * len(keys)]
    for w, s in workloads_done(rows):
        for m in RESTORE_MODES:
            if median_of(rows, w, s, m)[1] == 0:
                continue
            out.append(f"| {label(w, s)} | {m} | " + " | ".join(fmt_ms(median_of(rows, w, s, m, k)[0]) for k in keys)
                       + " |")
    return out


def targets_lines(rows):
    """The targets are stated for cow; prefetch (what `auto` picks) is judged by the same bar beside it."""
    def verdict(cond):
        return "not measured" if cond is None else ("met" if cond else "NOT met")

    b13 = median_of(rows, "python-bigdict", 1.3, "boot")[0]
    jb = median_of(rows, "java-hello", "", "boot")[0]
    cells = {}
    for m in ("cow", "prefetch"):
        x13 = median_of(rows, "python-bigdict", 1.3, m)[0]
        x98 = median_of(rows, "python-bigdict", 9.8, m)[0]
        jx = median_of(rows, "java-hello", "", m)[0]
        jrows = [r for r in rows if r["workload"] == "java-hello" and r["mode"] == m]
        jok = sum(ok(r) for r in jrows)
        cells[m] = [
            (f"{fmt_ms(x13)} ms", verdict(None if x13 is None else x13 <= 50)),
            (fmt_ratio(b13, x13), verdict(None if b13 is None or x13 is None else b13 / x13 >= 100)),
            (f"{fmt_ratio(x98, x13)} ({fmt_ms(x98)} vs {fmt_ms(x13)} ms)",
             verdict(None if x98 is None or x13 is None else x98 <= 1.2 * x13)),
            (f"{jok}/{len(jrows)} restores answered 200",
             verdict(None if not jrows else jok == len(jrows))),
            (fmt_ratio(jb, jx), verdict(None if jb is None or jx is None else jb / jx >= 10)),
        ]
    names = ["python-bigdict 1.3 GB: restore + first response <= 50 ms",
             "python-bigdict 1.3 GB: >= 100x faster than plain boot",
             "python-bigdict 9.8 GB: <= 1.2x its 1.3 GB time",
             "java-hello restores and answers",
             "java-hello: restore >= 10x faster than JVM boot"]
    out = ["| target | cow: measured | cow: verdict | prefetch: measured | prefetch: verdict |",
           "| --- | --- | --- | --- | --- |"]
    for i, n in enumerate(names):
        (cm, cv), (pm, pv) = cells["cow"][i], cells["prefetch"][i]
        out.append(f"| {n} | {cm} | {cv} | {pm} | {pv} |")
    e13 = median_of(rows, "python-bigdict", 1.3, "eager")[0]
    e98 = median_of(rows, "python-bigdict", 9.8, "eager")[0]
    je = median_of(rows, "java-hello", "", "eager")[0]
    jerows = [r for r in rows if r["workload"] == "java-hello" and r["mode"] == "eager"]
    out.append(f"| (for comparison) eager: 9.8 GB vs 1.3 GB; java-hello answered; java-hello boot/eager | "
               f"{fmt_ratio(e98, e13)}; {sum(ok(r) for r in jerows)}/{len(jerows)}; {fmt_ratio(jb, je)} | - | | |")
    return out


def write_csv(path, rows, header, ctx):
    with open(path, "w", newline="") as f:
        f.write(header)
        f.write("# ctx " + json.dumps({k: v for k, v in ctx.items() if k != "notes"}) + "\n")
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS})


def read_csv(path):
    """Rows and context back from a CSV this script wrote (for --report)."""
    ctx, body = None, []
    with open(path) as f:
        for line in f:
            if line.startswith("# ctx "):
                ctx = json.loads(line[len("# ctx "):])
            elif not line.startswith("#"):
                body.append(line)
    if ctx is None:
        sys.exit(f"{path} has no '# ctx' line: not written by this script")
    rows = []
    for raw in csv.DictReader(body):
        r = {}
        for k, v in raw.items():
            if v == "":
                r[k] = "" if k == "size_gb" else None
            elif k in ("workload", "mode", "reason"):
                r[k] = v
            elif k == "status":
                r[k] = int(v) if v.isdigit() else v
            elif k in ("repeat", "ops", "image_bytes", "bigdict_n", "working_set_pages"):
                r[k] = int(float(v))
            else:
                r[k] = float(v)
        rows.append(r)
    return rows, ctx


def plot(path, rows, machine):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    colors = {"boot": "tab:red", "eager": "tab:blue", "cow": "tab:green", "prefetch": "tab:purple"}
    # annotations of cow and prefetch (close together) on opposite sides of their points
    offsets = {"boot": (4, 4), "eager": (4, 4), "cow": (4, 4), "prefetch": (4, -10)}
    sizes = sorted({r["size_gb"] for r in rows if r["workload"] == "python-bigdict"})
    for m in MODES:
        pts = [(s, median_of(rows, "python-bigdict", s, m)) for s in sizes]
        pts = [(s, med) for s, med in pts if med[0] is not None]
        if not pts:
            continue
        xs = [s for s, _ in pts]
        ys = [med[0] for _, med in pts]
        lo = [med[0] - med[2] for _, med in pts]
        hi = [med[3] - med[0] for _, med in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=colors[m],
                    label={"boot": "plain boot (prepare+init+exec)", "eager": "restore eager (restore+exec)",
                           "cow": "restore cow (restore+exec)", "prefetch": "restore prefetch (restore+exec)"}[m])
        for x, y in zip(xs, ys):
            ax.annotate(fmt_ms(y), (x, y), textcoords="offset points", xytext=offsets[m], fontsize=7, color=colors[m])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s:g}" for s in sizes])
    ax.set_xlabel("python-bigdict dict size (GB)")
    ax.set_ylabel("cold start to first response, ms (median; bars min-max)")
    ax.set_title("python-bigdict")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)

    others = [w for w, _ in workloads_done(rows) if w != "python-bigdict"]
    width = 0.2
    for i, m in enumerate(MODES):
        vals = [median_of(rows, w, "", m)[0] for w in others]
        xs = [j + (i - 1.5) * width for j in range(len(others))]
        bars = bx.bar(xs, [v or 0 for v in vals], width, color=colors[m], label=m)
        for b, v in zip(bars, vals):
            if v:
                bx.annotate(fmt_ms(v), (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=6)
    bx.set_xticks(range(len(others)))
    bx.set_xticklabels(others)
    bx.set_yscale("log")
    bx.set_ylim(bottom=10)
    bx.set_ylabel("cold start, ms (median)")
    bx.set_title("runtimes")
    bx.grid(True, axis="y", which="both", alpha=0.3)
    if others:
        bx.legend(fontsize=8)
    fig.suptitle(f"initless: plain boot vs restore, first response; {machine['nproc']} cpus, {machine['kernel']}, "
                 f"shared machine", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def two_stage(rows):
    """The CLI splits restore in two (sandbox_ms reported): spawn + plan are in prepare_ms, off the request path."""
    return any(r.get("sandbox_ms") is not None for r in rows if r["mode"] in RESTORE_MODES)


def write_md(path, rows, ctx, skipped, finished):
    m = ctx["machine"]
    staged = two_stage(rows)
    if staged:
        cold_text = ("For a restore, cold = restore_ms + exec_ms. The CLI used restores in two stages: the sandbox, "
                     "the restorer's spawn and the syscall-table plan happen before the request (the design's "
                     "pre-started pool) and are reported as prepare_ms, in the CSV but not in cold.")
        prep_text = "sandbox = sandbox prepare; prepare = sandbox + restorer spawn + plan (off the request path); "
        rest_text = "restore = layout + threads + finish as the CLI times it (the request path); "
    else:
        cold_text = ("For a restore, cold = restore_ms + exec_ms. prepare_ms is the sandbox alone (pre-started in "
                     "the design's pool, so not in cold). The CLI used restores in one stage: restore_ms includes "
                     "the restorer's spawn and the syscall-table plan (columns spawn, plan below), which a two-stage "
                     "restore would do before the request; subtract them for that estimate.")
        prep_text = "prepare = sandbox prepare (off the request path); "
        rest_text = "restore = spawn + plan + layout + threads + finish as the CLI times it; "
    fails = [r for r in rows if r.get("status") == "fail" or (r["mode"] in MODES and not ok(r))]
    modes_run = [x for x in MODES if any(r["mode"] == x for r in rows)]
    if ctx.get("repeats_rule"):
        repeats_text = (f"- repeats: {ctx['repeats']} per mode for the runtimes and python-bigdict up to 1.3 GB, "
                        f"{min(ctx['repeats'], 3)} at 2.5 GB, {min(ctx['repeats'], 2)} at 5 and 9.8 GB (every mode)"
                        + (f", but cow and prefetch {ctx['fast_repeats']} at every size" if ctx.get("fast_repeats") else "")
                        + "; modes interleaved within each repeat")
    else:
        repeats_text = (f"- repeats: {ctx['repeats']} per mode (plain boot of the big dicts fewer: 3 at 2.5 GB, 2 at 5 "
                        "and 9.8 GB); modes interleaved within each repeat")
    reserve_text = ("off (INITLESS_NO_RESERVE=1)" if ctx.get("no_reserve") else
                    "on (the default; cow and prefetch restorers touch a warm page reserve in stage 1)")
    lines = [
        "# Restore benchmark: plain boot vs " + " vs ".join(x for x in modes_run if x != "boot"),
        "",
        f"Made by `bench/restore/restore.py` ({'complete run' if finished else 'PARTIAL: run in progress or interrupted'}); "
        f"rows in [restore.csv](restore.csv), plot [restore.png](restore.png). Again: "
        "`cmake -S . -B build-bench -G Ninja && ninja -C build-bench initless example_java_hello && "
        "bench/restore/restore.py` (about 15-20 minutes, ~10 GB of disk for the largest image).",
        "",
        "## Machine and run",
        f"- date: {ctx['date']} (UTC), {ctx['elapsed']}",
        f"- nproc {m['nproc']}, kernel {m['kernel']}, CPU {m['cpu']}, memory {m['mem_gib']:.1f} GiB, no swap" if not m['swap']
        else f"- nproc {m['nproc']}, kernel {m['kernel']}, CPU {m['cpu']}, memory {m['mem_gib']:.1f} GiB, swap {m['swap'] / GIB:.1f} GiB",
        f"- load at start: `{ctx['uptime_start']}`",
        f"- load at end: `{ctx.get('uptime_end', '(not finished)')}`",
        f"- binary: `{ctx['binary']}`, built from {ctx['source']}",
        repeats_text,
        *([f"- warm page reserve: {reserve_text}"] if "prefetch" in modes_run else []),
        "",
        "The machine is shared: other engineers compile on the same 2 cores during the run, so single timings are "
        "noisy (see min-max in the plot and every row in the CSV); medians are of this run only and every ratio "
        "below is computed from the same run.",
        "",
        "## Method",
        "- workloads: `java-hello`, `node-hello` (as built/checked in) and `python-bigdict` with `BIGDICT_N` = "
        "size / 1.3 GB x 10M entries (the example's calibration), in a temp function dir (app.py copied, "
        "function.toml with BIGDICT_N, memory_mb = 1.6 x size + 512 MB, a longer timeout_s).",
        "- each workload is snapshotted once (`initless snapshot DIR --image IMG`), then per repeat: "
        "`initless run DIR --request /`, `initless restore IMG --strategy eager --instances 1 --request / "
        "--no-fallback`, the same with `--strategy cow`"
        + (" and `--strategy prefetch` (what `auto` picks: cow, then the working set that `snapshot` recorded "
           "from a trial restore's first `GET /` installed in bulk with MADV_POPULATE_WRITE/READ; its size is "
           "the 'working set pages' column)" if "prefetch" in modes_run else "") + ". The image is deleted after "
        "the workload.",
        "- **cold** for plain boot = prepare + init + exec (sandbox, function start until ready, first request). "
        + cold_text + " total_ms in the CSV is the CLI's, about prepare + cold.",
        "- page cache is **warm**: the image was just written by the snapshot, and `restore` reads it all once to "
        "verify its MAC (image_load_ms) before restoring. Nothing is dropped from the cache.",
        "- python-bigdict answers are checked: `GET /` returns `dict[k] = v` and v must equal k x 0x9E3779B97F4A7C15 "
        "mod 2^61-1, so a wrong restore is a failed row, not a fast one.",
        "",
        "## Medians (ms) and ratios",
        "",
        *summary_lines(rows),
        "",
        "## Targets (issue 3 item 8)",
        "",
        *(["The targets are stated for cow; prefetch, the strategy `auto` picks, is judged against the same bar "
           "beside it.", ""] if "prefetch" in modes_run else []),
        *targets_lines(rows),
        "",
        "## Where restore time goes (medians, ms)",
        "",
        prep_text + "spawn = restorer process created and seized; plan = syscall tables built and written; "
        "layout = the main syscall table (memory, fds, signals, thread creation); threads = per-thread tables; "
        "finish = registers, unmap the stub, detach; " + rest_text + "image_load = reading the image and "
        "verifying every page's checksum (once per CLI call, before any instance); "
        "wall = the whole CLI process (also image verification and teardown).",
        "",
        *breakdown_lines(rows),
        "",
    ]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {s}" for s in skipped] + [""]
    if fails:
        lines += ["## Failures", ""] + [f"- {label(r['workload'], r['size_gb'])} {r['mode']} repeat {r['repeat']}: "
                                       f"{r.get('reason') or r.get('status')}" for r in fails] + [""]
    lines += ["![cold start vs size](restore.png)", ""]
    notes = ctx.get("notes")
    if notes:
        with open(notes) as f:
            lines += ["## Notes", "", f.read().strip(), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--repeats", "-n", type=int, default=5)
    ap.add_argument("--fast-repeats", type=int, default=None,
                    help="repeats of cow and prefetch at every size (default: as many as boot and eager get)")
    ap.add_argument("--sizes", default=",".join(f"{s:g}" for s in SIZES), help="python-bigdict sizes in GB")
    ap.add_argument("--workloads", nargs="*", default=["java-hello", "node-hello", "python-bigdict"])
    ap.add_argument("--work-dir", default="/var/tmp", help="where function dirs, images and state go (big)")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "bench"))
    ap.add_argument("--notes", default=None, help="a text file appended to restore.md as 'Notes'")
    ap.add_argument("--source", default=None, help="what the binary was built from (for restore.md)")
    ap.add_argument("--deadline", default=None, metavar="HH:MM",
                    help="UTC time the run must end by: skip the --late-skip measurements when running late")
    ap.add_argument("--late-skip", action="append", default=None, metavar="WORKLOAD:SIZE:MODE",
                    help="what to drop first when running late (default python-bigdict:9.8:eager)")
    ap.add_argument("--report", metavar="CSV", default=None,
                    help="measure nothing: rebuild restore.md and restore.png in --out-dir from a CSV of an earlier run")
    a = ap.parse_args()

    if a.report:
        os.makedirs(a.out_dir, exist_ok=True)
        rows, ctx = read_csv(a.report)
        ctx["notes"] = a.notes
        skipped = [f"{label(r['workload'], r['size_gb'])} skipped: {r['reason']}" for r in rows if r["mode"] == "skipped"]
        if ensure_matplotlib():
            plot(os.path.join(a.out_dir, "restore.png"), rows, ctx["machine"])
        write_md(os.path.join(a.out_dir, "restore.md"), rows, ctx, skipped, ctx.get("finished", True))
        print("\n".join(summary_lines(rows) + [""] + targets_lines(rows) + [""] + breakdown_lines(rows)))
        return

    binary = os.path.abspath(os.path.join(a.build, "initless"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} not found: cmake -S {ROOT} -B {a.build} -G Ninja && ninja -C {a.build} initless")
    # SIGTERM / SIGHUP: leave through `finally`, so that the images (GBs) are deleted.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, f: sys.exit(f"stopped by signal {n}"))
    have_plot = ensure_matplotlib()
    sizes = [float(s) for s in a.sizes.split(",") if s]
    os.makedirs(a.out_dir, exist_ok=True)
    csv_path, md_path, png_path = (os.path.join(a.out_dir, f"restore.{e}") for e in ("csv", "md", "png"))

    machine = {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu_model(),
               "mem_gib": meminfo("MemTotal") / GIB, "swap": meminfo("SwapTotal")}
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "include")
    source = a.source or (f"{git('rev-parse', '--short', 'HEAD')}" +
                          (f" plus uncommitted changes in {', '.join(l[3:] for l in dirty.splitlines())}" if dirty else ""))
    t_start = time.monotonic()
    ctx = {"machine": machine, "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
           "uptime_start": uptime(), "binary": os.path.relpath(binary, ROOT), "source": source,
           "repeats": a.repeats, "fast_repeats": a.fast_repeats, "repeats_rule": "size", "notes": a.notes, "elapsed": "",
           "no_reserve": bool(os.environ.get("INITLESS_NO_RESERVE"))}
    header = (f"# initless restore bench (bench/restore/restore.py), {ctx['date']} UTC; nproc={machine['nproc']} "
              f"kernel={machine['kernel']} cpu={machine['cpu']} mem={machine['mem_gib']:.1f}GiB; "
              f"load at start: {ctx['uptime_start']}; binary {ctx['binary']} from {source}\n")
    log(f"machine: {machine}; {ctx['uptime_start']}")
    log(f"binary {binary} ({source})")

    plan = []
    for w in a.workloads:
        if w == "python-bigdict":
            plan += [(w, s) for s in sizes]
        else:
            plan.append((w, ""))
    rows, skipped = [], []
    work = tempfile.mkdtemp(prefix="initless-bench-restore-", dir=a.work_dir)
    state = os.path.join(work, "state")
    os.makedirs(state)
    env = dict(os.environ, INITLESS_STATE_DIR=state)
    bytes_per_entry = 140.0  # refined from each python-bigdict snapshot

    deadline = None
    if a.deadline:
        hh, mm = (int(x) for x in a.deadline.split(":"))
        now = datetime.datetime.utcnow()
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if deadline < now - datetime.timedelta(hours=12):
            deadline += datetime.timedelta(days=1)
    late_skip = set()
    for spec in a.late_skip or ["python-bigdict:9.8:eager"]:
        w_, s_, m_ = spec.split(":")
        late_skip.add((w_, float(s_) if s_ else "", m_))
    dropped = set()

    def estimate_ms(w, s, m):
        """Wall of one measurement: median at this size if measured, else at the largest smaller size, scaled."""
        walls = {}
        for r in rows:
            if r["workload"] == w and r["mode"] == m and r.get("wall_ms"):
                walls.setdefault(r["size_gb"], []).append(r["wall_ms"])
        if s in walls:
            return statistics.median(walls[s]) * 1.2  # 20% margin
        smaller = [x for x in walls if x != "" and s != "" and x < s]
        if not smaller:
            return 0.0
        x = max(smaller)
        return statistics.median(walls[x]) * s / x * 1.2

    def running_late(todo_rest):
        """Would the rest of the run (the measurements listed, then nothing else) end after the deadline?"""
        if deadline is None:
            return False, ""
        need_ms = sum(estimate_ms(*t) for t in todo_rest)
        end = datetime.datetime.utcnow() + datetime.timedelta(milliseconds=need_ms)
        return end > deadline, f"estimated end {end:%H:%M:%S} UTC after the deadline {deadline:%H:%M} UTC"

    def flush(finished=False):
        ctx["elapsed"] = f"{(time.monotonic() - t_start) / 60:.0f} min"
        ctx["finished"] = finished
        if finished:
            ctx["uptime_end"] = uptime()
        write_csv(csv_path, rows, header, ctx)
        if have_plot and rows:
            plot(png_path, rows, machine)
        write_md(md_path, rows, ctx, skipped, finished)

    try:
        for w, s in plan:
            base = {"workload": w, "size_gb": s}
            image = os.path.join(work, f"image-{w}-{s}")
            if w == "python-bigdict":
                d, n, timeout_s = bigdict_dir(work, s)
                base["bigdict_n"] = n
                need_disk = n * bytes_per_entry * 1.15 + 2 * GIB
                free_disk = shutil.disk_usage(work).free
                need_mem = n * bytes_per_entry * 1.3 + 1 * GIB  # the dict and its resize peak
                avail = meminfo("MemAvailable")
                why = None
                if free_disk < need_disk:
                    why = f"needs ~{need_disk / GIB:.1f} GiB of disk for the image, {free_disk / GIB:.1f} GiB free"
                elif avail < need_mem:
                    why = f"needs ~{need_mem / GIB:.1f} GiB of memory to build the dict, {avail / GIB:.1f} GiB available"
                if why:
                    msg = f"python-bigdict {s:g} GB skipped: {why}"
                    log(msg)
                    skipped.append(msg)
                    rows.append({**base, "mode": "skipped", "status": "skipped", "reason": why})
                    flush()
                    continue
            else:
                d = os.path.join(a.build, "examples", w) if w in ("java-hello", "c-hello") else os.path.join(ROOT, "examples", w)
                timeout_s = 30
            # Generous: the CLI's own timeouts (timeout_s) fire first.
            timeout = 4 * timeout_s + 300
            log(f"{label(w, s)}: snapshot ({d})")
            out, err, wall = invoke([binary, "snapshot", d, "--image", image, "--json"], env, timeout)
            image_bytes = None
            if out is None:
                log(f"  snapshot failed: {err}")
                rows.append({**base, "mode": "snapshot", "repeat": 1, "status": "fail", "reason": err, "wall_ms": r2(wall)})
            else:
                image_bytes = out["image_bytes"]
                rows.append({**base, "mode": "snapshot", "repeat": 1, "status": "ok", "image_bytes": image_bytes,
                             "init_ms": r2(out["boot_ms"]), "checkpoint_ms": r2(out["checkpoint_ms"]),
                             "total_ms": r2(out["total_ms"]), "wall_ms": r2(wall),
                             "working_set_pages": out.get("working_set_pages"),
                             "trial_restore_ms": r2(out.get("trial_restore_ms")), "warmup_ms": r2(out.get("warmup_ms"))})
                log(f"  image {image_bytes / 1e6:.0f} MB; boot {out['boot_ms']:.0f} ms, checkpoint {out['checkpoint_ms']:.0f} ms "
                    f"(trial restore {out.get('trial_restore_ms') or 0:.0f} ms); working set {out.get('working_set_pages')} pages")
                if w == "python-bigdict":
                    if s >= 1:
                        bytes_per_entry = image_bytes / base["bigdict_n"]
            base["image_bytes"] = image_bytes
            nrep = size_repeats(s if s != "" else None, a.repeats)
            all_modes = ["boot"] + (RESTORE_MODES if out is not None else [])
            # cow and prefetch take milliseconds at any size: they get --fast-repeats rounds even where
            # boot and eager (minutes at large sizes) get fewer.
            for i in range(max(nrep, a.fast_repeats or 0)):
                modes = all_modes if i < nrep else [x for x in all_modes if x in ("cow", "prefetch")]
                for j, m in enumerate(modes):
                    if (w, s, m) in dropped:
                        continue
                    if (w, s, m) in late_skip:
                        # this and everything after it in the plan, this workload's rest first
                        rest = [(w, s, mm) for mm in modes[j:] if (w, s, mm) not in dropped]
                        rest += [(w, s, mm) for _ in range(i + 1, nrep) for mm in modes if (w, s, mm) not in dropped]
                        rest += [(w2, s2, mm) for w2, s2 in plan[plan.index((w, s)) + 1:] for mm in MODES
                                 for _ in range(size_repeats(s2 if s2 != "" else None, a.repeats))]
                        late, why = running_late(rest)
                        if late:
                            dropped.add((w, s, m))
                            msg = f"{label(w, s)} {m} skipped from repeat {i + 1} on: running late ({why})"
                            log(msg)
                            skipped.append(msg)
                            rows.append({**base, "mode": "skipped", "repeat": i + 1, "status": "skipped",
                                         "reason": f"{m} from repeat {i + 1} on: running late ({why})"})
                            continue
                    if m == "boot":
                        r = run_boot(binary, d, env, timeout, w)
                    else:
                        r = run_restore(binary, image, m, env, timeout, w)
                    r = {**base, **r, "repeat": i + 1}
                    rows.append(r)
                    log(f"  {m:5} #{i + 1}: " + (f"cold {r['cold_ms']:.1f} ms (prepare {r.get('prepare_ms') or 0:.1f}, "
                                                   f"{'init ' + format(r.get('init_ms') or 0, '.1f') if m == 'boot' else 'restore ' + format(r.get('restore_ms') or 0, '.1f')}, "
                                                   f"exec {r.get('exec_ms') or 0:.1f})" if ok(r) else f"FAILED: {r.get('reason')}"))
            if os.path.exists(image):
                shutil.rmtree(image)
            if w == "python-bigdict":
                shutil.rmtree(d, ignore_errors=True)
            flush()
    finally:
        for e in os.listdir(work):
            if e.startswith("image-"):
                shutil.rmtree(os.path.join(work, e), ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    flush(finished=True)
    print()
    print("\n".join(summary_lines(rows)))
    print()
    print("\n".join(targets_lines(rows)))
    print()
    print("\n".join(breakdown_lines(rows)))
    if skipped:
        print("\n".join(skipped))
    print(f"\nrows in {csv_path}; summary in {md_path}; plot in {png_path}")


if __name__ == "__main__":
    main()
