#!/usr/bin/python3
"""Derives the simulator's cold-start cost model (bench/costs.csv) from the restore bench
(docs/bench/restore.csv, made by bench/restore/restore.py).

Per python-bigdict size (one workload whose memory grows with a parameter, so the rows interpolate):
  memory_mb       = the nominal size (size_gb x 1024)
  boot_ms         = median cold_ms of mode boot (plain boot: sandbox + init + first request)
  restore_ms      = median cold_ms of mode prefetch (what `auto` picks: restore + first request, image
                    in page cache); the cow median is written beside it as a comment
  image_mb        = image_bytes / 2^20
  restore_disk_measured_ms = median cold_ms of a cold-cache prefetch restore, when the bench has one (a
                    mode named prefetch-cold, prefetch-cold-cache or prefetch-disk: the image's pages
                    dropped from page cache before each restore); empty otherwise. `initless sim` uses it
                    instead of restore_disk_ms where it is given (sim::ColdStartCostModel).
  restore_disk_ms = ESTIMATE, kept even where measured (for comparison):
                    restore_ms + min(working set read at the cold-cache random 4 KiB rate,
                                     whole image read at the cold-cache sequential rate)
                    (a restorer with the image on disk reads either the pages the first request touches,
                    or the image front to back, whichever is cheaper; the CLI today does the latter).
The two disk rates are measured separately on the same machine (see --rand-us-per-page, --seq-mb-s).
java-hello and node-hello medians are written as comments, not rows: their boot does not grow with
memory, and rows from different workloads sorted by memory would make the interpolation zigzag.

With --cold CSV (made by bench/policy/cold_restores.py: prefetch restores of the same workload at each size,
with the page cache dropped before each and without, interleaved), both restore columns come from that one
run: restore_disk_measured_ms = its prefetch-cold median, restore_ms = its page-cache-warm prefetch median (so
that the two tiers are compared within a run; the restore bench's prefetch median is then a comment).

Usage: bench/policy/costs_from_bench.py [docs/bench/restore.csv] [--cold docs/bench/restore-cold.csv] > bench/costs.csv
"""
import argparse
import csv
import re
import statistics
import subprocess
import sys
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", nargs="?", default="docs/bench/restore.csv")
    # Measured 2026-11-23 ~09:15 UTC on the bench machine (2 shared cores, virtio disk vda), Python
    # pread() of 4 KiB pages after `echo 3 > /proc/sys/vm/drop_caches`: 6283 random pages of a 1 GiB
    # file 1.02-2.18 s (4 runs, median ~1.29 s = 205 us/page; sorted by offset no better); the whole file
    # sequentially in 1 MiB reads 2.48 s (434 MB/s; warm: 3.9 GB/s).
    ap.add_argument("--rand-us-per-page", type=float, default=205.0)
    ap.add_argument("--seq-mb-s", type=float, default=434.0)
    ap.add_argument("--disk-note", default="")
    ap.add_argument("--cold", default=None, help="cold-cache restores (bench/policy/cold_restores.py)")
    a = ap.parse_args()

    head = []
    rows = []
    with open(a.bench) as f:
        for line in f:
            if line.startswith("#"):
                head.append(line[1:].strip())
            else:
                rows.append(line)
    data = list(csv.DictReader(rows))
    first = head[0] if head else ""
    commit = re.search(r"(?:export \(git archive HEAD\)|a clean clone) of ([0-9a-f]{7,40})", first)
    date = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d) UTC", first)
    commit = commit.group(1) if commit else "?"
    date = date.group(1) if date else "?"
    try:
        landed = subprocess.run(["git", "log", "-1", "--format=%h %ad", "--date=format:%Y-%m-%d %H:%M", "--", a.bench],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        landed = ""

    COLD_CACHE_MODES = ("prefetch-cold", "prefetch-cold-cache", "prefetch-disk")
    cold = defaultdict(list)  # (workload, size) -> mode -> [cold_ms]
    info = {}
    for r in data:
        key = (r["workload"], r["size_gb"])
        if r["mode"] == "snapshot":
            info[key] = (int(r["image_bytes"]), int(r["working_set_pages"] or 0))
            continue
        if r["status"] != "200" or not r["cold_ms"]:
            continue
        cold[key, r["mode"]].append(float(r["cold_ms"]))

    cold_head = ""
    if a.cold:
        with open(a.cold) as f:
            lines_in = f.read().splitlines()
        cold_head = next((l[1:].strip() for l in lines_in if l.startswith("#")), "")
        for r in csv.DictReader(l for l in lines_in if not l.startswith("#")):
            if r["mode"] not in COLD_CACHE_MODES + ("prefetch",) or r["status"] != "200" or not r["cold_ms"]:
                continue
            # The cold run's warm prefetch is kept apart: restore_ms stays the main bench's.
            mode = r["mode"] if r["mode"] != "prefetch" else "prefetch-same-run"
            cold[(r["workload"], r["size_gb"]), mode].append(float(r["cold_ms"]))

    def med(key, mode):
        v = cold.get((key, mode))
        return (statistics.median(v), len(v)) if v else (None, 0)

    def disk_read_ms(image_mb, ws_pages):
        rand = ws_pages * a.rand_us_per_page / 1000
        seq = image_mb * 1.048576 / a.seq_mb_s * 1000
        return min(rand, seq)

    out = sys.stdout
    p = lambda s="": print(f"# {s}".rstrip(), file=out)
    p(f"Cold-start cost model for `initless sim`, MEASURED except restore_disk_ms (an estimate, see below).")
    p(f"Made by bench/policy/costs_from_bench.py from {a.bench}: the restore bench run of {date} UTC,")
    p(f"binary built from {commit} (2 shared cores, Firecracker VM, page cache warm; docs/bench/restore.md)"
      + (f", CSV committed in {landed} UTC." if landed else "."))
    p("Rows: python-bigdict at each bench size, medians over the repeats (5 up to 1.3 GB, 3 at 2.5, 2 at 5 and 9.8).")
    p(" memory_mb: the nominal size (size_gb x 1024; the example's calibration, 10M entries = 1.3 GB).")
    p(" boot_ms: median cold_ms of `boot` (sandbox + runtime start + dict build + first request). MEASURED.")
    p("   Fresh memory costs ~30 us/page on this VM (balloon free page reporting), so boots of big functions")
    p("   are slower here than on bare metal (restore.md, Notes).")
    p(" restore_ms: median cold_ms of `prefetch` (the default strategy: restore + first request, image in page")
    p("   cache; stage 1 -- sandbox, restorer spawn, plan -- is off the request path, a pre-started pool). MEASURED.")
    if a.cold:
        p(f"   With --cold (as here): the page-cache-warm prefetch median of {a.cold}, the run that measured the")
        p("   disk restores, so that both tiers come from one run (the restore bench's median is a per-row comment).")
    p(" image_mb: image_bytes of the snapshot / 2^20. MEASURED.")
    p(" restore_disk_ms: ESTIMATE. The bench never restored with the image out of page cache. Estimated as")
    p("   restore_ms + min(working_set_pages x 4 KiB read at random, image read sequentially), with cold-cache")
    measured = (a.rand_us_per_page, a.seq_mb_s) == (ap.get_default("rand_us_per_page"), ap.get_default("seq_mb_s"))
    p(f"   rates {'measured once on the same machine' if measured else 'ASSUMED (given on the command line, not measured)'}: "
      f"{a.rand_us_per_page:.0f} us per random 4 KiB page, {a.seq_mb_s:.0f} MB/s sequential")
    p("   (Python pread after drop_caches, 2026-11-23 ~09:15 UTC; random pages sorted by offset were no faster).")
    p("   End to end, `initless restore --request /` of examples/python-bigdict (30 MiB image) after drop_caches")
    p("   was +62 ms (median of 3 total_ms, 231 vs 169 ms warm) -- within the noise, and about the 30 MiB")
    p("   sequential read the CLI's image check does first. Working set: 6243-6494 pages at every size.")
    if a.disk_note:
        p(" " + a.disk_note)
    p("sim::ColdStartCostModel interpolates between rows: 128-512 MB functions fall between the 0.1 and 1.3 GB")
    p("rows; below 102 MB (a few of the trace's 80-4153 MB functions) the first segment is extended.")
    p("Not rows (boot does not grow with memory; mixing workloads would zigzag), medians for reference:")
    for w in ("java-hello", "node-hello"):
        key = (w, "")
        if key not in info:
            continue
        b, nb = med(key, "boot")
        pf, _ = med(key, "prefetch")
        cw, _ = med(key, "cow")
        img, ws = info[key]
        p(f"  {w}: boot {b:.0f} ms, prefetch {pf:.1f} ms, cow {cw:.1f} ms, image {img / 2**20:.1f} MB, "
          f"working set {ws} pages, est. disk restore {pf + disk_read_ms(img / 2**20, ws):.0f} ms (n={nb})")
    p("restore_disk_measured_ms: median cold_ms of a cold-cache prefetch restore (modes "
      + ", ".join(COLD_CACHE_MODES) + ")")
    p("  where the bench has one, MEASURED; empty: not measured, the simulator uses the estimate.")
    if cold_head:
        p(f"  From {a.cold}: {cold_head}.")
        p("  A disk restore there is the sandbox, stage 1 and the restore with the first request, all on the request")
        p("  path (a sandbox prepared ahead would hold the restore set in memory: stage 1 reads it and waits, DESIGN.md")
        p("  'Cold page cache'); the estimate above instead read the working set page by page during the restore.")
    p("Per row (comment): cow cold median, working set pages, n.")
    print("memory_mb,boot_ms,restore_ms,restore_disk_ms,image_mb,restore_disk_measured_ms", file=out)
    sizes = sorted({float(s) for (w, s) in info if w == "python-bigdict"})
    lines = []
    for s in sizes:
        key = ("python-bigdict", next(k for (w, k) in info if w == "python-bigdict" and float(k) == s))
        b, nb = med(key, "boot")
        pf, npf = med(key, "prefetch")
        cw, ncw = med(key, "cow")
        same, nsame = med(key, "prefetch-same-run")
        bench_pf = pf
        if same is not None:
            pf, npf = same, nsame
        img, ws = info[key]
        img_mb = img / 2**20
        disk = pf + disk_read_ms(img_mb, ws)
        measured, nm = None, 0
        for m in COLD_CACHE_MODES:
            measured, nm = med(key, m)
            if measured is not None:
                break
        lines.append(f"# python-bigdict {key[1]} GB: cow cold {cw:.1f} ms, working set {ws} pages, n boot/prefetch/cow {nb}/{npf}/{ncw}"
                     + (f", cold-cache prefetch n {nm}" if nm else "")
                     + (f"; restore_ms from the cold-cache run, the restore bench's prefetch median was {bench_pf:.1f} ms"
                        if same is not None else ""))
        lines.append(f"{round(s * 1024)},{b:.0f},{pf:.1f},{disk:.1f},{img_mb:.0f},"
                     + (f"{measured:.1f}" if measured is not None else ""))
    print("\n".join(lines), file=out)


if __name__ == "__main__":
    main()
