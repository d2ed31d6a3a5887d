"""Speed of soars-dose contour metrics against DeepMind ``surface-distance`` 0.1.

What is measured
----------------
All 21 OARs of one or more scans (default: 0522c0014, where 7 observer pairs
are identical, and 0522c0519, where none is) of DeepMind's two-observer
head-and-neck set
(``../shared/data/deepmind_two_observer/validation``): the oncologist's
mask is the reference, the radiographer's the substitute. Both tools get the
same inputs: bool arrays indexed [z, y, x] (the NRRD (x, y, z) arrays
transposed and made C-contiguous, 512 x 512 in-plane) and the spacing in
the same order. Per OAR, both compute the same metric set:

* surface-distance: ``compute_dice_coefficient``, ``compute_surface_distances``,
  ``compute_robust_hausdorff(., 100)`` (HD), ``compute_robust_hausdorff(., 95)``
  (HD95), ``compute_average_surface_distance`` (ASD, both directions),
  ``compute_surface_dice_at_tolerance``;
* soars-dose, "same metric set": ``dice``, ``surface_distances``,
  ``hausdorff``, ``hd95``, ``directed_average_surface_distances``,
  ``average_surface_distance``, ``surface_dice`` (separate public calls, so
  the masks are cropped twice);
* soars-dose ``contour_metrics`` (for information): everything above plus
  volumes and the added path length, from one crop.

Per OAR, each tool runs once untimed and then ``--repeat`` times (default 3),
interleaved with the others (the first tool rotates, so that background load
hits all alike); the per-OAR time is the best run, the total the sum of the
per-OAR bests. Reading the files is excluded. The results of the two tools
are compared as well (max relative difference per metric).

Run (about 2 minutes on 2 cores)::

    .venv/bin/python benchmarks/bench_metrics.py

The report is printed and written to
``benchmarks/results/metrics_benchmark.md``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import nrrd
import numpy as np
import surface_distance as sdm

from soars_dose.analysis import metrics as M
from soars_dose.machine import machine
from soars_dose.names import AliasTable

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT.parent / "shared" / "data" / "deepmind_two_observer" / "validation"


def versions() -> dict:
    out = {}
    for pkg in ("soars-dose", "numpy", "scipy", "scikit-image", "surface-distance", "pynrrd"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def load_scan(scan: str) -> list[tuple[str, str, np.ndarray, np.ndarray, tuple]]:
    """(file name, canonical OAR, reference [z,y,x], substitute [z,y,x], spacing [z,y,x])."""
    aliases = AliasTable.default()
    out = []
    seg = DATA / "oncologist" / scan / "segmentations"
    for path in sorted(seg.glob("*.nrrd")):
        ref, hdr = nrrd.read(str(path))
        sub, _ = nrrd.read(str(DATA / "radiographer" / scan / "segmentations" / path.name))
        spacing_xyz = np.linalg.norm(np.asarray(hdr["space directions"], float), axis=1)
        out.append((path.stem, aliases.match(path.stem).canonical,
                    np.ascontiguousarray(ref.T != 0), np.ascontiguousarray(sub.T != 0),
                    tuple(float(s) for s in spacing_xyz[::-1])))
    return out


def run_deepmind(ref, sub, spacing, tol) -> dict:
    sd = sdm.compute_surface_distances(ref, sub, spacing)
    asd_rs, asd_sr = sdm.compute_average_surface_distance(sd)
    return {"dice": sdm.compute_dice_coefficient(ref, sub),
            "hd": sdm.compute_robust_hausdorff(sd, 100),
            "hd95": sdm.compute_robust_hausdorff(sd, 95),
            "asd_rs": asd_rs, "asd_sr": asd_sr,
            "sdsc": sdm.compute_surface_dice_at_tolerance(sd, tol)}


def run_ours(ref, sub, spacing, tol) -> dict:
    sd = M.surface_distances(ref, sub, spacing)
    asd_rs, asd_sr = M.directed_average_surface_distances(sd)
    return {"dice": M.dice(ref, sub), "hd": M.hausdorff(sd), "hd95": M.hd95(sd),
            "asd_rs": asd_rs, "asd_sr": asd_sr, "asd": M.average_surface_distance(sd),
            "sdsc": M.surface_dice(sd, tol)}


def run_contour_metrics(ref, sub, spacing, tol) -> dict:
    return M.contour_metrics(ref, sub, spacing, tol)


def rel_diff(a: float, b: float) -> float:
    if a == b or (np.isnan(a) and np.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def bench_scan(scan: str, repeat: int) -> dict:
    """Time the three tools on the 21 OARs of one scan, interleaved per OAR."""
    cases = load_scan(scan)
    tolerances = M.load_tolerances()
    tools = {"surface-distance": run_deepmind, "soars-dose": run_ours,
             "soars-dose contour_metrics": run_contour_metrics}
    times = {t: {c[0]: [] for c in cases} for t in tools}
    results: dict = {t: {} for t in tools}
    order = list(tools)
    for name, oar, ref, sub, spacing in cases:
        tol = M.tolerance_for(oar, tolerances)
        for rep in range(repeat + 1):                   # rep 0 = warm-up, not timed
            for tool in order[rep % 3:] + order[:rep % 3]:   # rotate who runs first
                t = time.perf_counter()
                res = tools[tool](ref, sub, spacing, tol)
                dt = time.perf_counter() - t
                if rep:
                    times[tool][name].append(dt)
                results[tool][name] = res
    dm, ours = results["surface-distance"], results["soars-dose"]
    agree = {k: max(rel_diff(float(ours[n][k]), float(dm[n][k])) for n in dm)
             for k in ("dice", "hd", "hd95", "asd_rs", "asd_sr", "sdsc")}
    best = {t: {n: min(v) for n, v in times[t].items()} for t in tools}
    return {"cases": cases, "best": best, "agree": agree,
            "identical": sum(bool(np.array_equal(c[2], c[3])) for c in cases)}


def scan_section(scan: str, res: dict) -> list[str]:
    cases, best, agree = res["cases"], res["best"], res["agree"]
    dm, ours, cm = "surface-distance", "soars-dose", "soars-dose contour_metrics"
    lines = [
        f"## Scan `{scan}`",
        "",
        f"Masks 512 x 512 x {cases[0][2].shape[0]}, spacing (z, y, x) = "
        f"{tuple(round(s, 4) for s in cases[0][4])} mm; {res['identical']} of the 21 "
        "observer pairs are identical masks (for those our transform is skipped: every "
        "distance is 0).",
        "",
        "| OAR | canonical | ref voxels | surface-distance ms | soars-dose ms (same set) "
        "| speed-up | soars-dose contour_metrics ms | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, oar, ref, _, _ in cases:
        a, b, c = (best[t][name] * 1e3 for t in (dm, ours, cm))
        lines.append(f"| {name} | {oar} | {int(ref.sum())} | {a:.1f} | {b:.1f} | {a / b:.1f}x "
                     f"| {c:.1f} | {a / c:.1f}x |")
    a, b, c = (sum(best[t].values()) * 1e3 for t in (dm, ours, cm))
    lines += [
        f"| **total, 21 OARs** | | | **{a:.0f}** | **{b:.0f}** | **{a / b:.1f}x** "
        f"| **{c:.0f}** | **{a / c:.1f}x** |",
        "",
        "Agreement on these OARs, max relative difference soars-dose vs surface-distance: "
        + ", ".join(f"{k} {agree[k]:.1e}" for k in
                    ("dice", "hd", "hd95", "asd_rs", "asd_sr", "sdsc")) + ".",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scans", nargs="+", default=["0522c0014", "0522c0519"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "metrics_benchmark.md"))
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"data folder {DATA} is absent", file=sys.stderr)
        return 2
    given = sys.argv[1:] if argv is None else argv
    command = ".venv/bin/python benchmarks/bench_metrics.py" + (
        " " + shlex.join(given) if given else "")
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # surface-distance imports
    mach, vers = machine(), versions()
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    M._unit_triangle_normals.cache_clear()
    M._surfel_area_table_cached.cache_clear()
    M.surfel_area_table((2.5, 1.0, 1.0))
    table_ms = (time.perf_counter() - t0) * 1e3

    sections = {scan: bench_scan(scan, args.repeat) for scan in args.scans}
    load_after = os.getloadavg()
    lines = [
        "# Contour-metric benchmark: soars-dose vs DeepMind surface-distance",
        "",
        f"- command: `{command}` (cwd `{ROOT}`)",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        f"- machine: {mach['platform']}; CPU {mach['cpu']}; nproc {mach['nproc']}; "
        f"RAM {mach['ram']}; Python {mach['python']}; 1-min load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (other work shared the CPUs)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "- data: DeepMind two-observer validation set, all 21 OARs of each scan, "
        "oncologist = reference, radiographer = substitute",
        "- same inputs for both tools: C-contiguous bool arrays [z, y, x] (NRRD arrays "
        "transposed), spacing in the same order; file reading excluded",
        "- metric set of both tools: Dice, HD, HD95, ASD (both directions), surface Dice at "
        "the OAR's tolerance (`soars_dose/data/surface_tolerances.yaml`); soars-dose "
        "'same set' = separate public calls (`dice`, `surface_distances`, `hausdorff`, "
        "`hd95`, `directed_average_surface_distances`, `average_surface_distance`, "
        "`surface_dice`); `contour_metrics` also computes volumes and the added path "
        "length, from one crop",
        f"- timing: per OAR one warm-up run, then {args.repeat} timed runs of each tool, "
        "interleaved (the tool that runs first rotates); per OAR the best of the timed "
        "runs; total = sum of the per-OAR bests",
        f"- one-time cost of building our surfel-area table (first call in a process: "
        f"scikit-image marching cubes on the 254 cell configurations): {table_ms:.0f} ms",
        "- where the time goes: for the large OARs (Brain, Lungs, Mandible, Spinal-Canal) "
        "both tools spend most of it in the same scipy Euclidean feature transform over "
        "the cropped volume (surface-distance also builds dense distance maps, sorts in "
        "Python and scans the full volume); for small OARs surface-distance's full-volume "
        "passes dominate",
        "",
    ]
    for scan, res in sections.items():
        lines += scan_section(scan, res)
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
