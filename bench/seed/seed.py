#!/usr/bin/python3
"""The seed paper's experiments (docker-initless, /work/shared/seeds/000_*.txt, section 6 and Table 1), reproduced
with initless in one run: Table 1 (the Flask dict at 1.3, 2.5, 5 and 9.8 GB) and Figures 1-3 (the Flask dict, a
JVM web app, a CPU inference app, each split into Boot and Execution), with a warm and a cold page cache.

The documented command (build first: `ninja -C build initless example_spring_jetty`):

  nice -n 10 bench/seed/seed.py --deadline HH:MM        # full run, about 35 minutes on the 2-core VM (12:46-13:21 UTC on 2026-12-02)
  nice -n 10 bench/seed/seed.py --quick                 # dicts of 0.05 and 0.1 GB, 1 repeat, about a minute: does it work?

  options: [--build DIR] [--repeats N (7)] [--sizes 1.3,2.5,5,9.8] [--apps flask,spring,pytorch] [--tiers warm,cold]
           [--work-dir DIR] [--out-dir DIR] [--deadline HH:MM (UTC)]

Apps (function dirs made under --work-dir from examples/):
  flask    examples/python-bigdict, BIGDICT_N = size / 1.3 * 10M (the example's calibration; bench/restore's
           bigdict_dir); GET / reads one random key. Figure 1 uses the first of --sizes (1.3 GB).
  spring   build/examples/spring-jetty (Spring Framework + embedded Jetty from Debian's jars); GET /.
  pytorch  examples/pytorch-segment, MODEL_MB = 160 (16 with --quick): GET /segment?seed=3, one synthetic image
           in, one mask out; every weight is read by each inference.

Modes. Each CLI call is `initless run DIR --request P --json` (boot) or `initless restore IMG --strategy S
--instances 1 --request P --json --no-fallback` (restores); the restore's prepare_ms is stage 1 (sandbox,
restorer process, syscall plan: what a pool does before the request comes), restore_ms stage 2 (the request
path), exec_ms the first request. The seed's split: Boot = until the app in the container can take the
request; Execution = the request until its response. So, per mode:
  boot             plain boot.  Boot = prepare (sandbox); Execution = init (runtime start, app init until ready)
                   + first request (the seed counts the init of `docker run` in Execution: 1888 ms for Spring,
                   "1888 - 99 = 1789 ms" of it JVM and Spring init).
  eager            --strategy eager, no pre-start (the seed's "criu restore"). Boot = prepare + restore.
  lazy             --strategy lazy (userfaultfd page server), no pre-start. Boot = prepare + restore.
  lazy-prestarted  the same calls as lazy, with the sandbox pre-started: Boot = restore (prepare is done before the
                   request, so it is not counted). Not separate runs: stage 1 and 2 are timed apart in one call.
  lazy-tmpfs       --strategy lazy from a copy of the image in /dev/shm, pre-started. Boot = restore.
  cow, prefetch    --strategy cow / prefetch, pre-started (as a pool runs them). Boot = restore.
  Execution of every restore = exec_ms (the first request, page faults and all). cold = Boot + Execution.
Tiers: warm = the image in the page cache (`restore` reads it all to verify its MAC first, image_load_ms, not
counted); cold = `sync; echo 3 > /proc/sys/vm/drop_caches` before every call, restores with --no-verify (the
check would read the whole image back in); libraries, JVM jars and torch are dropped too, for boot as well. All
warm repeats of an app run before its cold ones (a drop would otherwise cool the next warm call); within a tier
the modes are interleaved in each repeat. pytorch restores send 3 requests: warm_ms = the median of requests 2-3
on the same instance (one warm inference).
Table 1 (flask at every size, warm): boot, eager, lazy, cow, prefetch. Big sizes get fewer repeats (at most 3 at
2.5 GB, 2 above, 1 for boot and eager at 9.8 GB). With --deadline, a call whose estimated wall (the last one of
its kind, scaled by size) would end after the deadline is skipped, with a row saying so.

Columns of <out-dir>/seed.csv (one row per CLI call; lazy-prestarted rows repeat their lazy call):
  section (table1 / figure), app, size_gb, tier, mode, repeat, status (ok / fail / skipped), reason,
  prepare_ms, sandbox_ms, restore_ms, init_ms, exec_ms, warm_ms, boot_ms (Boot as above), execution_ms
  (Execution as above), cold_ms (= boot_ms + execution_ms), image_load_ms, wall_ms (the whole CLI process),
  image_bytes, faults, pages_copied, bytes_read.
Writes <out-dir>/seed.csv, seed-figures.png, seed-table1.png and README.md (our medians beside the seed's
published numbers, the targets of issue 11, machine, commit, time), rewritten after every app.
"""
import argparse
import csv
import datetime
import importlib.util
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


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


restore_bench = _load("restore_bench", "bench/restore/restore.py")
lazy_bench = _load("lazy_bench", "bench/lazy/lazy.py")

GIB = 1 << 30
FIG_MODES = ["boot", "eager", "lazy", "lazy-prestarted", "lazy-tmpfs", "cow", "prefetch"]
TABLE_MODES = ["boot", "eager", "lazy", "cow", "prefetch"]
PRESTARTED = {"lazy-prestarted", "lazy-tmpfs", "cow", "prefetch"}
APP_TITLE = {"flask": "Flask dict (python-bigdict)", "spring": "JVM web app (spring-jetty)",
             "pytorch": "CPU inference (pytorch-segment)"}
FIELDS = ["section", "app", "size_gb", "tier", "mode", "repeat", "status", "reason", "prepare_ms", "sandbox_ms",
          "restore_ms", "init_ms", "exec_ms", "warm_ms", "boot_ms", "execution_ms", "cold_ms", "image_load_ms",
          "wall_ms", "image_bytes", "faults", "pages_copied", "bytes_read"]

# The seed's published numbers (docker-initless, 8-core Ryzen 3700X, 64 GB, SSD, WSL2 kernel 5.10, Docker 17.03).
SEED_TABLE1 = {  # GB: (container creation s, CRIU lazy-restore s, http request in the lazy-restore scenario s, CRIU restore s)
    1.3: (0.349, 0.356, 0.704, 1.402), 2.5: (0.348, 0.362, 0.715, 2.151),
    5.0: (0.350, 0.368, 0.723, 4.003), 9.8: (0.371, 0.400, 0.785, 7.135)}
SEED_TARGET_MS = 704.0

log = restore_bench.log


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def r3(x):
    return None if x is None else round(float(x), 3)


def copy_example(work, src, name, subs):
    """examples/<src> copied to work/<name>, with `key = value` lines of function.toml replaced."""
    d = os.path.join(work, name)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "examples", src), d)
    path = os.path.join(d, "function.toml")
    toml = open(path).read()
    for key, value in subs.items():
        toml, k = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", toml)
        if k != 1:
            sys.exit(f"examples/{src}/function.toml has no single `{key} =` line")
    open(path, "w").write(toml)
    return d


def app_dir(app, size_gb, work, build, quick):
    """(function dir, request path, CLI timeout s, requests per restore) of an app."""
    if app == "flask":
        d, _, timeout_s = restore_bench.bigdict_dir(work, size_gb)
        return d, "/", 4 * timeout_s + 300, 1
    if app == "spring":
        return os.path.join(build, "examples", "spring-jetty"), "/", 300, 1
    mb = "16" if quick else "160"
    d = copy_example(work, "pytorch-segment", "pytorch-segment",
                     {"MODEL_MB": f'"{mb}"', "memory_mb": "2048", "timeout_s": "180"})
    return d, "/segment?seed=3", 900, 3


MASKS = {}  # pytorch: the mask of GET /segment?seed=3 from the first answer; every later one must match it


def check(app, body):
    if app == "flask":
        return restore_bench.check_body("python-bigdict", body)
    if app == "pytorch":
        try:
            mask = json.loads(body or "")["mask_sha256"]
        except (ValueError, KeyError, TypeError):
            return f"unexpected body {(body or '')[:80]!r}"
        if MASKS.setdefault(app, mask) != mask:
            return f"mask {mask[:12]} differs from the first answer's {MASKS[app][:12]}"
    return None


def call_boot(binary, d, path, env, timeout, app, cold):
    if cold:
        lazy_bench.drop_caches()
    out, err, wall = restore_bench.invoke([binary, "run", d, "--request", path, "--json"], env, timeout)
    row = {"wall_ms": r3(wall)}
    if out is None:
        return {**row, "status": "fail", "reason": err}
    row.update(prepare_ms=r3(out["prepare_ms"]), init_ms=r3(out["init_ms"]), exec_ms=r3(out["exec_ms"]),
               boot_ms=r3(out["prepare_ms"]), execution_ms=r3(out["init_ms"] + out["exec_ms"]))
    bad = check(app, out.get("body"))
    if out["status"] != 200 or bad:
        return {**row, "status": "fail", "reason": bad or f"HTTP {out['status']}"}
    return {**row, "status": "ok"}


def call_restore(binary, image, strategy, path, requests, env, timeout, app, cold):
    cmd = [binary, "restore", image, "--strategy", strategy, "--instances", "1", "--request", path,
           "--requests", str(requests), "--json", "--no-fallback"]
    if cold:
        cmd.append("--no-verify")
        lazy_bench.drop_caches()
    out, err, wall = restore_bench.invoke(cmd, env, timeout)
    row = {"wall_ms": r3(wall)}
    if out is None:
        return {**row, "status": "fail", "reason": err}
    inst = out["instances"][0]
    row["image_load_ms"] = r3(out.get("image_load_ms"))
    if inst.get("mode") != "restore":
        return {**row, "status": "fail", "reason": f"mode {inst.get('mode')}: {inst.get('fallback_reason', '')}"[:300]}
    each = inst.get("exec_ms_each") or [inst["exec_ms"]]
    mem = inst.get("memory") or {}
    row.update(prepare_ms=r3(inst["prepare_ms"]), sandbox_ms=r3(inst.get("sandbox_ms")),
               restore_ms=r3(inst["restore_ms"]), exec_ms=r3(each[0]),
               warm_ms=r3(statistics.median(each[1:])) if len(each) > 1 else None,
               faults=mem.get("faults"), pages_copied=mem.get("pages_copied"), bytes_read=mem.get("bytes_read"))
    bad = check(app, inst.get("body"))
    if inst.get("status") != 200 or bad:
        return {**row, "status": "fail", "reason": bad or f"HTTP {inst.get('status')}"}
    return {**row, "status": "ok"}


def account(mode, row):
    """Boot / Execution / cold of a restore row under the mode's accounting (see the docstring)."""
    if row.get("status") != "ok" or mode == "boot":
        if row.get("status") == "ok":
            row["cold_ms"] = r3(row["boot_ms"] + row["execution_ms"])
        return row
    boot = row["restore_ms"] + (0 if mode in PRESTARTED else row["prepare_ms"])
    row.update(boot_ms=r3(boot), execution_ms=row["exec_ms"], cold_ms=r3(boot + row["exec_ms"]))
    return row


# ---------------------------------------------------------------------------------------------- report

def med(rows, key="cold_ms", **match):
    vals = [float(r[key]) for r in rows if r.get("status") == "ok" and r.get(key) not in (None, "")
            and all(r.get(k) == v for k, v in match.items())]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


def ms(x):
    return "-" if x is None else (f"{x:.1f}" if x < 100 else f"{x:.0f}")


def ratio(a, b):
    return "-" if a is None or not b else (f"{a / b:.2f}x" if a / b < 10 else f"{a / b:.0f}x")


def verdict(cond):
    return "not measured" if cond is None else ("**met**" if cond else "**NOT met**")


def targets(rows, fig_size):
    """[(target, our figure, verdict)] for the issue 11 targets this bench checks."""
    out = []
    lp, _ = med(rows, section="figure", app="flask", tier="warm", mode="lazy-prestarted")
    out.append((f"lazy + pre-started sandbox, Flask dict {fig_size:g} GB, restore + first request: "
                f"<= {SEED_TARGET_MS / 20:.1f} ms (the seed's {SEED_TARGET_MS:.0f} ms / 20)",
                "-" if lp is None else f"{ms(lp)} ms = seed / {SEED_TARGET_MS / lp:.0f}",
                verdict(None if lp is None else SEED_TARGET_MS / lp >= 20)))
    pw, _ = med(rows, section="figure", app="flask", tier="warm", mode="prefetch")
    pc, _ = med(rows, section="figure", app="flask", tier="cold", mode="prefetch")
    out.append((f"prefetch, Flask dict {fig_size:g} GB, page cache dropped: cold start <= 3x the warm-cache one",
                f"{ms(pc)} vs {ms(pw)} ms = {ratio(pc, pw)}",
                verdict(None if pc is None or pw is None else pc <= 3 * pw)))
    best = None
    cells = []
    for m in ("lazy-prestarted", "prefetch", "cow"):
        c, _ = med(rows, section="figure", app="pytorch", tier="warm", mode=m)
        w, _ = med(rows, "warm_ms", section="figure", app="pytorch", tier="warm", mode=m)
        if c is None or w is None:
            continue
        cells.append(f"{m} {ms(c)} / {ms(w)} = {c / w:.2f}x")
        best = c / w if best is None else min(best, c / w)
    out.append(("inference app: restore + first inference <= 1.3x one warm inference (requests 2-3 of the same "
                "instance), pre-started, warm cache",
                "; ".join(cells) or "-", verdict(None if best is None else best <= 1.3)))
    for m in ("lazy-prestarted", "prefetch"):
        c, _ = med(rows, section="figure", app="pytorch", tier="cold", mode=m)
        w, _ = med(rows, "warm_ms", section="figure", app="pytorch", tier="cold", mode=m)
        if c is not None and w is not None:
            out.append((f"(for information) the same with the page cache dropped, {m}",
                        f"{ms(c)} / {ms(w)} = {c / w:.2f}x", "-"))
    return out


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS})


def figure_table(rows, app, tier):
    out = ["| mode | Boot ms | Execution ms | total ms | of which prepare | restore | init | first request | "
           "boot total / total | n |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    bt, _ = med(rows, section="figure", app=app, tier=tier, mode="boot")
    for m in FIG_MODES:
        c, n = med(rows, section="figure", app=app, tier=tier, mode=m)
        if n == 0:
            continue
        g = lambda k: ms(med(rows, k, section="figure", app=app, tier=tier, mode=m)[0])
        prep = "(pre-started)" if m in PRESTARTED else g("prepare_ms")
        out.append(f"| {m} | {g('boot_ms')} | {g('execution_ms')} | {ms(c)} | {prep} | "
                   f"{g('restore_ms') if m != 'boot' else '-'} | {g('init_ms') if m == 'boot' else '-'} | "
                   f"{g('exec_ms')} | {ratio(bt, c)} | {n} |")
    return out


def seed_comparison(rows):
    """The seed's published figures beside ours (their Figures 1-3 give only a few numbers in the text)."""
    g = lambda app, m, k="cold_ms", tier="warm": med(rows, k, section="figure", app=app, tier=tier, mode=m)[0]
    fb, fe, fl, flp, ft = (g("flask", m) for m in ("boot", "eager", "lazy", "lazy-prestarted", "lazy-tmpfs"))
    lb, lpb = g("flask", "lazy", "boot_ms"), g("flask", "lazy-prestarted", "boot_ms")
    bex, lex = g("flask", "boot", "execution_ms"), g("flask", "lazy", "execution_ms")
    sb, se, slp, st = (g("spring", m) for m in ("boot", "eager", "lazy-prestarted", "lazy-tmpfs"))
    sbb, sbe = g("spring", "boot", "boot_ms"), g("spring", "boot", "execution_ms")
    seb, see = g("spring", "eager", "boot_ms"), g("spring", "eager", "execution_ms")
    slb, sle = g("spring", "lazy-prestarted", "boot_ms"), g("spring", "lazy-prestarted", "execution_ms")
    pb = g("pytorch", "boot")
    pbest = min([x for x in (g("pytorch", m) for m in FIG_MODES[1:]) if x is not None], default=None)
    pw = g("pytorch", "prefetch", "warm_ms")
    pct = lambda a, b: "-" if a is None or not b else f"{100 * (1 - a / b):.0f}%"
    return [
        "| figure | quantity | seed (published) | initless (this run, warm cache) |",
        "| --- | --- | ---: | ---: |",
        f"| 1 Flask | plain boot total / restore (no pre-start, not lazy) total | 3.11x | {ratio(fb, fe)} (eager) |",
        f"| 1 Flask | Boot removed by the pre-started sandbox (lazy) | 92% | {pct(lpb, lb)} ({ms(lb)} -> {ms(lpb)} ms) |",
        f"| 1 Flask | Execution: plain boot / lazy restore (our reading of the seed's \"17.82x in Execution\") | 17.82x | {ratio(bex, lex)} ({ms(bex)} vs {ms(lex)} ms) |",
        f"| 1 Flask | plain boot total / lazy + pre-start + tmpfs total | 64.06x | {ratio(fb, ft)} ({ms(fb)} vs {ms(ft)} ms) |",
        f"| 1 Flask | lazy + pre-start total (Table 1: 0.356 s restore + 0.704 s request in the seed) | 704 ms (request) | {ms(flp)} ms |",
        f"| 2 JVM | plain boot: Boot / Execution | 364 / 1888 ms | {ms(sbb)} / {ms(sbe)} ms |",
        f"| 2 JVM | restore, no pre-start, not lazy: Boot / Execution | 611 / 99 ms | {ms(seb)} / {ms(see)} ms (eager) |",
        f"| 2 JVM | lazy + pre-start: Boot / Execution | 53 / 257 ms | {ms(slb)} / {ms(sle)} ms |",
        f"| 2 JVM | plain boot total / restore total | 3.17x | {ratio(sb, se)} (eager) |",
        f"| 2 JVM | plain boot total / lazy + pre-start total | 7.26x | {ratio(sb, slp)} |",
        f"| 2 JVM | plain boot total / lazy + pre-start + tmpfs total | 7.93x | {ratio(sb, st)} |",
        f"| 3 inference | one warm request | ~2 s (Rembg) | {ms(pw)} ms (our model: 160 MB of random weights) |",
        f"| 3 inference | plain boot total / best restore total | up to 1.75x | {ratio(pb, pbest)} |",
        f"| 1 Flask | lazy, no pre-start: sandbox + restore + first request (Table 1: 0.349 + 0.356 + 0.704 s) | "
        f"1409 ms | {ms(fl)} ms |",
    ]


def table1(rows, sizes):
    out = ["| dict GB | image MB | sandbox prepare ms (seed: container creation) | lazy restore ms (seed: CRIU "
           "lazy-restore) | first request ms | lazy + pre-start: restore + request ms (seed: request in the "
           "lazy-restore scenario) | lazy, no pre-start: total ms | eager restore ms (seed: CRIU restore) | "
           "eager total ms | prefetch total ms | cow total ms | plain boot total ms | n (lazy/eager/boot) |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in sizes:
        g = lambda m, k="cold_ms": med(rows, k, app="flask", size_gb=s, tier="warm", mode=m)
        if g("lazy")[1] + g("boot")[1] + g("eager")[1] == 0:
            continue
        seed = SEED_TABLE1.get(s)
        sd = (lambda i: f" ({seed[i] * 1000:.0f})") if seed else (lambda i: "")
        img = [r["image_bytes"] for r in rows if r.get("app") == "flask" and r.get("size_gb") == s and r.get("image_bytes")]
        out.append(f"| {s:g} | {img[0] / 1e6:.0f} | " if img else f"| {s:g} | - | ")
        out[-1] += " | ".join([
            ms(g("lazy", "prepare_ms")[0]) + sd(0), ms(g("lazy", "restore_ms")[0]) + sd(1),
            ms(g("lazy", "exec_ms")[0]), ms(g("lazy-prestarted")[0]) + sd(2), ms(g("lazy")[0]),
            ms(g("eager", "restore_ms")[0]) + sd(3), ms(g("eager")[0]), ms(g("prefetch")[0]), ms(g("cow")[0]),
            ms(g("boot")[0]), f"{g('lazy')[1]}/{g('eager')[1]}/{g('boot')[1]}"]) + " |"
    return out


def plot(rows, out_dir, sizes, apps, tiers):
    if not restore_bench.ensure_matplotlib():
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(tiers), len(apps), figsize=(5.2 * len(apps), 4.4 * len(tiers)), squeeze=False)
    for i, tier in enumerate(tiers):
        for j, app in enumerate(apps):
            ax = axes[i][j]
            modes = [m for m in FIG_MODES if med(rows, section="figure", app=app, tier=tier, mode=m)[1]]
            x = range(len(modes))
            b = [med(rows, "boot_ms", section="figure", app=app, tier=tier, mode=m)[0] for m in modes]
            e = [med(rows, "execution_ms", section="figure", app=app, tier=tier, mode=m)[0] for m in modes]
            ax.bar([k - 0.2 for k in x], b, 0.4, label="Boot")
            ax.bar([k + 0.2 for k in x], e, 0.4, label="Execution")
            for k, m in enumerate(modes):
                tot = med(rows, section="figure", app=app, tier=tier, mode=m)[0]
                ax.annotate(ms(tot), (k, max(b[k], e[k])), ha="center", va="bottom", fontsize=7)
            ax.set_yscale("log")
            ax.set_xticks(list(x))
            ax.set_xticklabels(modes, rotation=35, ha="right", fontsize=8)
            ax.set_ylabel("ms (log); label = Boot + Execution")
            ax.set_title(f"{APP_TITLE[app]}, {tier} page cache", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "seed-figures.png"), dpi=100)
    plt.close(fig)
    pts = [s for s in sizes if med(rows, app="flask", size_gb=s, tier="warm", mode="lazy")[1]]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, style in (("lazy-prestarted", "o-"), ("lazy", "s-"), ("prefetch", "^-"), ("eager", "d-"), ("boot", "x-")):
        ys = [med(rows, app="flask", size_gb=s, tier="warm", mode=m)[0] for s in pts]
        ax.plot([s for s, y in zip(pts, ys) if y], [y for y in ys if y], style, label=f"initless {m}")
    seed_pts = sorted(SEED_TABLE1)
    ax.plot(seed_pts, [SEED_TABLE1[s][2] * 1000 for s in seed_pts], "o--", color="gray",
            label="seed: request, lazy-restore scenario")
    ax.plot(seed_pts, [SEED_TABLE1[s][3] * 1000 for s in seed_pts], "d--", color="black", label="seed: CRIU restore")
    ax.set_yscale("log")
    ax.set_xlabel("dict size, GB")
    ax.set_ylabel("restore (+ prepare if not pre-started) + first request, ms (log)")
    ax.set_title("Table 1: Flask dict by size (warm page cache)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "seed-table1.png"), dpi=100)
    plt.close(fig)


def write_md(path, rows, ctx, finished):
    sizes, apps, tiers = ctx["sizes"], ctx["apps"], ctx["tiers"]
    fails = [r for r in rows if r.get("status") == "fail"]
    skipped = [r for r in rows if r.get("status") == "skipped"]
    lines = [
        "# The seed paper's experiments, reproduced (bench/seed/seed.py)", "",
        "Generated by `bench/seed/seed.py` " + ("(complete run)" if finished else "(**partial: the run was still going or "
                                                  "was stopped; only what is below was measured**)")
        + ". Rows: [seed.csv](seed.csv); plots: [seed-figures.png](seed-figures.png), [seed-table1.png](seed-table1.png).", "",
        "Full run, again (about 35-45 minutes on the shared 2-core VM, ~10 GB of disk and ~16 GB of memory for the "
        "9.8 GB dict):", "",
        "    ninja -C build initless example_spring_jetty", "    nice -n 10 bench/seed/seed.py --deadline HH:MM", "",
        "The seed: docker-initless (/work/shared/seeds/000_10ba96c55794fbf4.txt), Table 1 and Figures 1-3, measured on "
        "an 8-core Ryzen 3700X, 64 GB, SSD, WSL2 kernel 5.10, Docker 17.03 + CRIU, averages of 1000 runs. Only Table 1 "
        "and the numbers quoted in the text of section 6 are published as numbers; the bars of Figures 1-3 are not.", "",
        "## Machine and run", "",
        f"- {ctx['date']} UTC, commit {ctx['commit']}, host {platform.node()}, {ctx['machine']}",
        f"- load at start: {ctx['uptime_start']}" + (f"; at end: {ctx['uptime_end']}" if ctx.get("uptime_end") else ""),
        f"- command: `{ctx['command']}`; elapsed {ctx['elapsed']}",
        f"- repeats: {ctx['repeats']} (medians), fewer at the big dicts: {ctx['size_rule']}; modes interleaved "
        "within each repeat; all warm repeats of an app before its cold ones",
        "- shared VM: other sessions built and tested while this ran; compare within this run.", "",
        "## How the seed's phases map to ours", "",
        "- **Boot** = until the app can take the request; **Execution** = the request until its response (the seed's "
        "definitions). Plain boot: Boot = sandbox prepare; Execution = runtime and app init + the first request (the "
        "seed counts `docker run`'s init in Execution too: 1888 ms for Spring). Restores: Boot = restore (stage 2), plus "
        "the sandbox prepare (stage 1: sandbox, restorer, syscall plan) when the sandbox is not pre-started; "
        "Execution = the first request, page faults included.",
        "- not pre-started: boot, eager (the seed's plain `criu restore`), lazy. Pre-started (a pool did stage 1 before "
        "the request): lazy-prestarted, lazy-tmpfs, cow, prefetch. lazy and lazy-prestarted are the same restores, "
        "accounted both ways.",
        "- **warm**: the image in the page cache; **cold**: `sync; echo 3 > /proc/sys/vm/drop_caches` before every "
        "call (boot too: its interpreter, JVM, jars and torch are dropped), restores with `--no-verify`. lazy-tmpfs "
        "reads a copy in /dev/shm, which a drop does not evict.", "",
        "## Targets (issue 11)", "",
        "| target | this run | verdict |", "| --- | --- | --- |",
        *[f"| {t} | {o} | {v} |" for t, o, v in targets(rows, sizes[0])], "",
        "## Beside the seed's published numbers", "",
        *seed_comparison(rows), "",
        "## Table 1: the Flask dict by size (warm page cache; medians, ms; the seed's in parentheses)", "",
        *table1(rows, sizes), "",
        "![Table 1](seed-table1.png)", "",
    ]
    for n, app in enumerate(apps, 1):
        for tier in tiers:
            lines += [f"## Figure {n}: {APP_TITLE[app]}, {tier} page cache (medians, ms)", "",
                      *figure_table(rows, app, tier), ""]
        if app == "pytorch":
            lines += ["warm inference (requests 2-3 on the restored instance), medians: " + ", ".join(
                f"{m} {tier} {ms(med(rows, 'warm_ms', section='figure', app=app, tier=tier, mode=m)[0])} ms"
                for tier in tiers for m in ("lazy", "lazy-tmpfs", "cow", "prefetch", "eager")
                if med(rows, 'warm_ms', section='figure', app=app, tier=tier, mode=m)[1]), ""]
    lines += ["![Figures 1-3: Boot and Execution per mode](seed-figures.png)", ""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {r['app']} {r.get('size_gb') or ''} {r['tier']} {r['mode']} #{r['repeat']}: "
                                       f"{r['reason']}" for r in skipped] + [""]
    if fails:
        lines += ["## Failures", ""] + [f"- {r['app']} {r.get('size_gb') or ''} {r['tier']} {r['mode']} #{r['repeat']}: "
                                       f"{r['reason']}" for r in fails] + [""]
    if ctx.get("notes"):
        lines += ["## Notes", "", open(ctx["notes"]).read().strip(), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------------------------------------- main

def repeats_at(size_gb, mode, repeats, fig_size):
    """Big dicts take minutes per boot or eager restore: fewer repeats there."""
    if size_gb is None or size_gb <= fig_size:
        return repeats
    if size_gb <= 2.5:
        return min(repeats, 3)
    if size_gb < 9 or mode not in ("boot", "eager"):
        return min(repeats, 2)
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", "-n", type=int, default=7)
    ap.add_argument("--sizes", default="1.3,2.5,5,9.8", help="Flask dict sizes, GB; the first is Figure 1's")
    ap.add_argument("--apps", default="flask,spring,pytorch")
    ap.add_argument("--tiers", default="warm,cold")
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "build"), help="function dirs and images (GBs)")
    ap.add_argument("--out-dir", default=None, help="default docs/bench (with --quick: WORK_DIR/seed-quick)")
    ap.add_argument("--deadline", default=None, metavar="HH:MM", help="UTC: skip calls that would end after it")
    ap.add_argument("--notes", default=None, help="a text file appended to README.md as 'Notes'")
    ap.add_argument("--quick", action="store_true", help="dicts of 0.05 and 0.1 GB, a 16 MB model, 1 repeat")
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.sizes = 1, "0.05,0.1"
    out_dir = a.out_dir or (os.path.join(a.work_dir, "seed-quick") if a.quick else os.path.join(ROOT, "docs", "bench"))
    binary = os.path.abspath(os.path.join(a.build, "initless"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} not found: ninja -C {a.build} initless example_spring_jetty")
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda n, f: sys.exit(f"stopped by signal {n}"))
    sizes = [float(s) for s in a.sizes.split(",") if s]
    apps = [x for x in a.apps.split(",") if x]
    tiers = [x for x in a.tiers.split(",") if x]
    os.makedirs(out_dir, exist_ok=True)
    deadline = None
    if a.deadline:
        hh, mm = (int(x) for x in a.deadline.split(":"))
        deadline = now_utc().replace(hour=hh, minute=mm, second=0, microsecond=0)
    m = restore_bench
    ctx = {"date": now_utc().strftime("%Y-%m-%d %H:%M"), "commit": m.git("rev-parse", "--short", "HEAD")
           + (" (uncommitted changes in src/include)" if m.git("status", "--porcelain", "--untracked-files=no",
                                                               "--", "src", "include") else ""),
           "machine": f"{os.cpu_count()} CPUs ({m.cpu_model()}), {m.meminfo('MemTotal') / GIB:.1f} GiB, kernel "
                      f"{platform.release()}",
           "uptime_start": m.uptime(), "command": " ".join(["bench/seed/seed.py"] + sys.argv[1:]),
           "repeats": a.repeats, "sizes": sizes, "apps": apps, "tiers": tiers, "notes": a.notes, "elapsed": "",
           "size_rule": "at most 3 at 2.5 GB, 2 at 5 GB, at 9.8 GB 2 for restores and 1 for boot and eager"}
    log(f"binary {binary}, commit {ctx['commit']}; {ctx['machine']}; out {out_dir}")
    work = tempfile.mkdtemp(prefix="initless-bench-seed-", dir=a.work_dir)
    env = dict(os.environ, INITLESS_STATE_DIR=os.path.join(work, "state"))
    shm = None
    rows = []
    t0 = time.monotonic()
    walls = {}  # (app, tier, mode) -> [(size, wall_ms)]

    def estimate_ms(app, size, tier, mode):
        seen = walls.get((app, tier, mode), [])
        if not seen:
            return 0.0
        s0, w0 = seen[-1]
        return w0 * (size / s0 if size and s0 else 1.0) * 1.2

    def flush(finished=False):
        ctx["elapsed"] = f"{(time.monotonic() - t0) / 60:.0f} min"
        if finished:
            ctx["uptime_end"] = m.uptime()
        write_csv(os.path.join(out_dir, "seed.csv"), rows)
        plot(rows, out_dir, sizes, apps, tiers)
        write_md(os.path.join(out_dir, "README.md"), rows, ctx, finished)

    def measure(section, app, size, tier, mode, rep, d, path, image, requests, timeout, image_bytes):
        base = {"section": section, "app": app, "size_gb": size, "tier": tier, "mode": mode, "repeat": rep,
                "image_bytes": image_bytes}
        if deadline:
            est = estimate_ms(app, size, tier, mode)
            end = now_utc() + datetime.timedelta(milliseconds=est)
            if end > deadline:
                rows.append({**base, "status": "skipped", "reason": f"estimated end {end:%H:%M:%S} after the "
                                                                     f"deadline {deadline:%H:%M} UTC"})
                log(f"{app} {size or ''} {tier} {mode} #{rep}: skipped (deadline)")
                return
        cold = tier == "cold"
        if mode == "boot":
            r = call_boot(binary, d, path, env, timeout, app, cold)
        else:
            strategy = "lazy" if mode.startswith("lazy") else mode
            where = shm if mode == "lazy-tmpfs" else image
            r = call_restore(binary, where, strategy, path, requests, env, timeout, app, cold)
        if r.get("wall_ms"):
            walls.setdefault((app, tier, mode), []).append((size, r["wall_ms"]))
        rows.append(account(mode, {**base, **r}))
        if mode == "lazy":  # the same call, sandbox pre-started
            rows.append(account("lazy-prestarted", {**base, **r, "mode": "lazy-prestarted"}))
        x = rows[-1]
        log(f"{app} {size or ''} {tier} {mode} #{rep}: " +
            (f"Boot {x['boot_ms']:.1f} Execution {x['execution_ms']:.1f} (prepare {x.get('prepare_ms') or 0:.1f}"
             + (f", warm {x['warm_ms']:.1f}" if x.get("warm_ms") else "") + ")" if x["status"] == "ok"
             else f"FAILED: {x.get('reason')}"))

    try:
        plan = [(app, sizes[0] if app == "flask" else None) for app in apps]
        if "flask" in apps:
            plan += [("flask", s) for s in sizes[1:]]
        for app, size in plan:
            figure = size is None or size == sizes[0]
            d, path, timeout, requests = app_dir(app, size, work, a.build, a.quick)
            image = os.path.join(work, f"image-{app}")
            if app == "flask":
                n = int(round(size * restore_bench.ENTRIES_PER_GB))
                need_mem, avail = n * 140 * 1.3 + GIB, m.meminfo("MemAvailable")
                if avail < need_mem:
                    why = f"needs ~{need_mem / GIB:.1f} GiB of memory, {avail / GIB:.1f} GiB available"
                    rows.append({"section": "table1", "app": app, "size_gb": size, "tier": "warm", "mode": "all",
                                 "status": "skipped", "reason": why})
                    log(f"flask {size:g} GB skipped: {why}")
                    continue
            if deadline and not figure and estimate_ms(app, size, "warm", "boot") * 2.5 > \
                    (deadline - now_utc()).total_seconds() * 1000:
                rows.append({"section": "table1", "app": app, "size_gb": size, "tier": "warm", "mode": "all",
                             "status": "skipped", "reason": "snapshot and boot would end after the deadline"})
                log(f"{app} {size} skipped: deadline")
                continue
            log(f"{app} {size or ''}: snapshot {d}")
            out, err, wall = m.invoke([binary, "snapshot", d, "--image", image, "--json"], env, timeout)
            if out is None:
                rows.append({"section": "snapshot", "app": app, "size_gb": size, "tier": "warm", "mode": "snapshot",
                             "status": "fail", "reason": err, "wall_ms": r3(wall)})
                log(f"  snapshot failed: {err}")
                flush()
                continue
            image_bytes = out["image_bytes"]
            rows.append({"section": "snapshot", "app": app, "size_gb": size, "tier": "warm", "mode": "snapshot",
                         "status": "ok", "init_ms": r3(out["boot_ms"]), "wall_ms": r3(wall), "image_bytes": image_bytes})
            log(f"  image {image_bytes / 1e6:.0f} MB, boot {out['boot_ms']:.0f} ms, wall {wall / 1000:.0f} s")
            if figure and "lazy-tmpfs" in FIG_MODES:
                shm = f"/dev/shm/initless-bench-seed-{app}"
                shutil.rmtree(shm, ignore_errors=True)
                # cp -a: the tree MAC covers owners, modes and xattrs, which shutil.copytree drops
                subprocess.run(["cp", "-a", image, shm], check=True)
            for tier in (tiers if figure else ["warm"]):
                modes = FIG_MODES if figure else TABLE_MODES
                for rep in range(1, a.repeats + 1):
                    for mode in modes:
                        if mode == "lazy-prestarted" or rep > repeats_at(size, mode, a.repeats, sizes[0]):
                            continue
                        measure("figure" if figure else "table1", app, size, tier, mode, rep, d, path, image,
                                requests, timeout, image_bytes)
                    flush()
            shutil.rmtree(image, ignore_errors=True)
            if shm:
                shutil.rmtree(shm, ignore_errors=True)
                shm = None
            if app != "spring":
                shutil.rmtree(d, ignore_errors=True)
            flush()
    finally:
        if shm:
            shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    flush(finished=True)
    print(open(os.path.join(out_dir, "README.md")).read())


if __name__ == "__main__":
    main()
