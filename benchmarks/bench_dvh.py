"""DVH accuracy and speed of soars-dose against dicompyler-core 0.5.6 ``dvhcalc``.

What is measured
----------------
(a) Closed-form cases. Spheres (r = 3, 5, 10, 20 mm), a cylinder and a
    cone, contoured every 1-2.5 mm, in linear dose fields
    ``dose = 60 Gy + slope * (coordinate - centre)`` along x, y and z, on a
    3 mm and a 2.5 mm dose grid whose voxel centres do not line up with the
    objects. Everything is written to DICOM (RTSTRUCT + RTDOSE) in a
    temporary folder. The truth is exact and independent of both tools
    (``soars_dose/synthetic/exact_dvh.py``: each contour extruded over +-dz/2,
    clipped against half-spaces with shapely). Per case and tool: volume
    error, mean-dose error, max |DVH difference| over 301 doses spanning
    the structure (% of the true volume), D2%, D98% and D0.03cc errors (% of
    the true dose there), and the time per structure (the DVH call alone,
    fastest of ``--repeat`` calls after a warm-up; reading the files is
    excluded for both tools). A case passes when it meets the closed-form
    tolerances of soars-dose: max |DVH diff| <= 1 % of volume, volume <= 1 %,
    mean <= 0.5 %, D0.03cc / D2% / D98% within 2 %.
(b) A full case: one synthetic head-and-neck patient
    (``soars_dose.synthetic.cohort.make_patient``: CT, 13 OARs + External + PTV70 in
    the reference set, up to 13 OARs in each of the ``soars``, ``revised``
    and ``reader`` sets, 2.5 mm dose grid). In a fresh subprocess: time of
    ``audit.load_case`` (dose, 4 RTSTRUCTs and the CT series) and of
    ``audit.compare(case, contour_metrics=False)`` (the doses: cold, then
    once more; then the whole recipe with contour metrics, timed on its
    own), peak memory as
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that subprocess (whole
    process: interpreter, imports and data; forked from ``/bin/sh`` so that
    it does not inherit this process's peak, which Linux carries over
    fork + exec; cross-checked with /proc VmHWM), and per-structure
    ``compute_dvh`` time. dicompyler-core computes the same OARs from the
    same files, per structure, and its mean dose / volume are compared with
    ours (there is no exact truth for the phantom).

(c) Speed per structure (issue 10): every ROI of the dicompyler example
    (``../shared/data/dicompyler_example``, 0.5 cc to a 14 900 cc BODY) on
    its RTDOSE (2.5 x 2.5 x 3 mm) and on that dose resampled to 3 mm:
    soars-dose ``compute_dvh`` and dicompyler-core's default ``get_dvh``,
    alternating structure by structure, best of ``--repeat`` calls; totals,
    ratio and the slowest structure relative to dicompyler-core.
    ``--skip-closed-form`` / ``--skip-speed`` / ``--skip-full-case`` select
    the sections.

dicompyler-core runs in its own venv (pydicom 2.4; its parser fails under
pydicom 3) through ``benchmarks/dicompyler_dvh.py``, in three modes: its
default, its interpolating mode ``interp`` (dose upsampled in-plane to
spacing/8 around the structure, 2 extra planes between contour planes) and
``interp-xy`` (the in-plane part alone). Its DVH is
cumulative, in cm^3, with 1 cGy bins; it is read between bin edges by
linear interpolation, and its D2% / D98% / D0.03cc are its own
``DVH.statistic`` values.

Run (about 1 minute on 2 cores)::

    bash benchmarks/setup_dicompyler_env.sh && .venv/bin/python benchmarks/bench_dvh.py

The report is printed and written to ``benchmarks/results/dvh_benchmark.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from soars_dose.dicom.rtdose import read_rtdose  # noqa: E402
from soars_dose.dicom.rtstruct import read_rtstruct  # noqa: E402
from soars_dose.dicom.write import write_rtdose, write_rtstruct  # noqa: E402
from soars_dose.dose.compute import compute_dvh  # noqa: E402
from soars_dose.grid import Grid  # noqa: E402
from soars_dose.machine import machine  # noqa: E402
from soars_dose.structures import Structure  # noqa: E402
from soars_dose.synthetic.exact_dvh import AXES, ExactDVH, planes  # noqa: E402

BENCH_PYTHON = ROOT / ".bench-venv" / "bin" / "python"
DICOMPYLER_SCRIPT = ROOT / "benchmarks" / "dicompyler_dvh.py"
RESULTS = ROOT / "benchmarks" / "results" / "dvh_benchmark.md"

FOR_UID = "1.2.826.0.1.3680043.8.498.1"
CENTRE = (1.3, -0.8, 0.45)  # on no grid point of either dose grid
SLOPE = {"x": 1.5, "y": -1.2, "z": 1.0}  # Gy/mm; negative on y to test the sign
BASE_GY = 60.0
#: (kind, radius mm, contour spacing mm); cylinder and cone are 2 r high along z.
SHAPES = [
    ("sphere", 3.0, 1.0), ("sphere", 5.0, 1.5), ("sphere", 10.0, 2.0), ("sphere", 20.0, 2.5),
    ("cylinder", 8.0, 2.5), ("cone", 10.0, 1.25),
]
#: Dose grids (axis-aligned HFS), both covering the largest object with a margin.
GRIDS = {
    "3 mm": Grid(shape=(24, 24, 24), spacing=(3.0,) * 3, origin=(-34.0, -35.0, -33.0)),
    "2.5 mm": Grid(shape=(30, 30, 30), spacing=(2.5,) * 3, origin=(-35.6, -36.3, -35.9)),
}
#: Closed-form tolerances (tests/dose/test_closed_form.py), in %.
TOL = {"volume": 1.0, "mean": 0.5, "dvh": 1.0, "dose": 2.0}
DMODES = {"default": "dicompyler default", "interp": "dicompyler interp",
          "interp-xy": "dicompyler interp-xy"}
TOOLS = ("soars-dose", *DMODES.values())
#: Full-case targets.
TARGET_S, TARGET_GB = 5.0, 1.5


# ------------------------------------------------------------------ environment
def versions() -> dict:
    out = {}
    for pkg in ("soars-dose", "numpy", "scipy", "pandas", "pydicom", "scikit-image", "shapely"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def run_dicompyler(rs: Path, rd: Path, rois: list[int], repeat: int, modes=tuple(DMODES)) -> dict:
    """Run benchmarks/dicompyler_dvh.py in the bench venv; its parsed JSON."""
    cmd = [str(BENCH_PYTHON), str(DICOMPYLER_SCRIPT), str(rs), str(rd),
           "--roi", *map(str, rois), "--modes", *modes, "--repeat", str(repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dicompyler-core failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


# -------------------------------------------------------------- DVH adapters
@dataclass
class Outcome:
    """One tool's answer for one structure, as numbers comparable with the truth."""

    volume_cc: float
    mean_gy: float
    v_at: Callable[[float], float]  # dose (Gy) -> cm^3 receiving >= dose
    d2: float
    d98: float
    d003: float
    seconds: float


def ours_outcome(dvh, seconds: float) -> Outcome:
    return Outcome(dvh.structure_volume_cc, dvh.mean_gy, dvh.volume_at_dose_cc,
                   dvh.dose_at_volume_pct(2), dvh.dose_at_volume_pct(98),
                   dvh.dose_at_volume_cc(0.03), seconds)


def dicompyler_outcome(r: dict) -> Outcome:
    bins = np.asarray(r["bins_gy"], float)
    cum = np.asarray(r["cumulative_cc"], float)
    lower = bins[: cum.size]  # cum[i] = cm^3 receiving >= bins[i]

    def v_at(d: float) -> float:
        return float(np.interp(d, lower, cum, left=cum[0] if cum.size else 0.0, right=0.0))

    nan = lambda v: np.nan if v is None else float(v)  # noqa: E731
    return Outcome(r["volume_cc"], nan(r["mean_gy"]), v_at, nan(r["d2_gy"]), nan(r["d98_gy"]),
                   nan(r["d0_03cc_gy"]), r["seconds"])


# ------------------------------------------------------------ closed-form part
@dataclass
class CaseRow:
    shape: str
    grid: str
    axis: str
    errors: dict = field(default_factory=dict)  # tool -> metrics dict


class Truth:
    """The exact answers one case is scored against (computed once per case)."""

    def __init__(self, exact: ExactDVH):
        self.volume_cc = exact.volume / 1000.0
        self.mean_gy = exact.mean
        self.doses = np.linspace(exact.dmin - 0.5, exact.dmax + 0.5, 301)
        self.curve_cc = np.array([exact.volume_at(d) for d in self.doses]) / 1000.0
        self.d = {}
        for key, v in (("d2", 0.02 * exact.volume), ("d98", 0.98 * exact.volume), ("d003", 30.0)):
            self.d[key] = exact.dose_at_volume(v) if v <= exact.volume else np.nan


def errors_vs_truth(o: Outcome, truth: Truth) -> dict:
    tool = np.array([o.v_at(d) for d in truth.doses])
    out = {
        "volume": 100 * (o.volume_cc / truth.volume_cc - 1),
        "mean": 100 * (o.mean_gy / truth.mean_gy - 1),
        "dvh": 100 * np.abs(tool - truth.curve_cc).max() / truth.volume_cc,
        "ms": 1000 * o.seconds,
    }
    for key, value in (("d2", o.d2), ("d98", o.d98), ("d003", o.d003)):
        true_d = truth.d[key]
        if np.isnan(true_d):  # undefined for an object this small
            out[key] = np.nan
        else:
            # dicompyler-core's statistic answers 0 Gy where it finds no value: kept as -100 %
            out[key] = 100 * (value / true_d - 1) if np.isfinite(value) else np.inf
            out[key + "_zero"] = bool(np.isfinite(value) and value == 0)
    out["pass"] = bool(
        abs(out["volume"]) <= TOL["volume"] and abs(out["mean"]) <= TOL["mean"]
        and out["dvh"] <= TOL["dvh"]
        and all(np.isnan(out[k]) or abs(out[k]) <= TOL["dose"] for k in ("d2", "d98", "d003"))
    )
    return out


def linear_dose(grid: Grid, axis: str) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    xyz = grid.index_to_world(np.stack([k, j, i], axis=-1).reshape(-1, 3))
    a = AXES[axis]
    return (BASE_GY + SLOPE[axis] * (xyz[:, a] - CENTRE[a])).reshape(grid.shape)


def shape_label(kind: str, r: float, dz: float) -> str:
    return f"{kind} r={r:g} dz={dz:g}"


def closed_form(tmp: Path, use_dicompyler: bool, repeat: int, log) -> list[CaseRow]:
    structures, truth_contours = [], {}
    for n, (kind, r, dz) in enumerate(SHAPES, start=1):
        contours = planes(kind, r, CENTRE, dz)
        truth_contours[n] = contours
        structures.append(Structure(name=f"{kind}_r{r:g}", number=n, contours=contours))
    rs = tmp / "rs_closed_form.dcm"
    write_rtstruct(structures, rs, frame_of_reference_uid=FOR_UID)
    sset = read_rtstruct(rs)
    by_number = {s.number: s for s in sset}

    rows = []
    warmed = False
    for grid_name, grid in GRIDS.items():
        for axis in ("x", "y", "z"):
            rd = tmp / f"rd_{grid_name.replace(' ', '')}_{axis}.dcm"
            write_rtdose(linear_dose(grid, axis), grid, rd, frame_of_reference_uid=FOR_UID)
            dose = read_rtdose(rd)
            if not warmed:  # first-call costs (imports, caches) out of the timings
                compute_dvh(by_number[1], dose, nominal_spacing_mm=SHAPES[0][2])
                warmed = True
            dres = {}
            if use_dicompyler:
                out = run_dicompyler(rs, rd, list(by_number), repeat)
                dres = {(r["mode"], r["roi"]): r for r in out["results"]}
            for n, (kind, r, dz) in enumerate(SHAPES, start=1):
                truth = Truth(ExactDVH(truth_contours[n], dz, BASE_GY, SLOPE[axis], axis,
                                       CENTRE[AXES[axis]]))
                seconds = np.inf
                for _ in range(repeat):  # fastest of `repeat` calls, as for dicompyler-core
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        dvh = compute_dvh(by_number[n], dose, nominal_spacing_mm=dz)
                    seconds = min(seconds, time.perf_counter() - t0)
                row = CaseRow(shape_label(kind, r, dz), grid_name, axis)
                row.errors["soars-dose"] = errors_vs_truth(ours_outcome(dvh, seconds), truth)
                for mode, tool in DMODES.items():
                    if (mode, n) in dres:
                        row.errors[tool] = errors_vs_truth(dicompyler_outcome(dres[(mode, n)]), truth)
                rows.append(row)
            log(f"  closed form: {grid_name} grid, gradient {axis} done")
    return rows


# ------------------------------------------------------------------ full case
def _vm_hwm_mb() -> float:
    """Peak resident set of this process image (Linux VmHWM), MB; NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def audit_worker(paths_json: str) -> None:
    """Runs in a fresh process: load + compare one phantom case, print JSON."""
    p = json.loads(paths_json)
    rss_start = _maxrss_mb()
    from soars_dose import audit

    sets = {"reference": p["reference"], **p["sets"]}
    rss_imports = _maxrss_mb()
    t0 = time.perf_counter()
    case = audit.load_case(p["rtdose"], sets, ct=p["ct_dir"])
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the doses (issue 10's target); the contour metrics are timed on their own below
        result = audit.compare(case, contour_metrics=False)
        t2 = time.perf_counter()
        rss_compare = _maxrss_mb()
        audit.compare(case, contour_metrics=False)
        t3 = time.perf_counter()
        audit.compare(case)  # what `soars-dose compare` computes: doses and contour metrics
        t_recipe = time.perf_counter() - t3
        # compute_dvh per OAR, as compare calls it, for a per-structure time next to dicompyler-core
        nominal = case.ct.slice_thickness_mm if case.ct is not None else None
        per = []
        for set_name, sset in case.sets.items():
            for st in sset:
                if st.name in p["skip_rois"] or st.is_empty:
                    continue
                s0 = time.perf_counter()
                compute_dvh(st, case.dose, nominal_spacing_mm=nominal)
                per.append({"set": set_name, "name": st.name, "seconds": time.perf_counter() - s0})
    stats = result.stats
    ok = stats[stats["status"] == "ok"]
    print(json.dumps({
        "load_s": t1 - t0, "compare_s": t2 - t1, "compare_again_s": t3 - t2,
        "recipe_s": t_recipe,
        "n_dvh": int(len(ok)), "n_rows": int(len(stats)),
        "status_counts": {str(k): int(v) for k, v in stats["status"].value_counts().items()},
        "rois": sorted(set(ok["roi"])),
        "maxrss_start_mb": rss_start, "maxrss_imports_mb": rss_imports,
        "maxrss_after_compare_mb": rss_compare, "maxrss_mb": _maxrss_mb(), "vmhwm_mb": _vm_hwm_mb(),
        "dose_grid": repr(case.dose.grid),
        "stats": ok[["set", "roi", "roi_original", "volume_cc", "mean_gy"]].to_dict("records"),
        "per_structure": per,
    }))


def full_case(tmp: Path, seed: int, use_dicompyler: bool, repeat: int, log) -> dict:
    from soars_dose.synthetic.cohort import EXTERNAL_NAME, PTV_NAME, make_patient

    t0 = time.perf_counter()
    pc = make_patient(tmp / "phantom", "BENCH01", seed)
    make_s = time.perf_counter() - t0
    log(f"  phantom written in {make_s:.1f} s")
    skip = [EXTERNAL_NAME, PTV_NAME]
    paths = {"rtdose": str(pc.rtdose), "reference": str(pc.reference), "ct_dir": str(pc.ct_dir),
             "sets": {k: str(v) for k, v in pc.sets.items()}, "skip_rois": skip}
    # Linux carries a process's peak RSS over fork + exec into ru_maxrss, so a child started
    # from this (large) process would report at least our size. /bin/sh forks the worker
    # from its own small image instead (`; exit` keeps it from exec'ing in place).
    cmd = ["/bin/sh", "-c", '"$0" "$1" --audit-worker "$2"; exit $?',
           sys.executable, str(Path(__file__).resolve()), json.dumps(paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"audit worker failed:\n{proc.stderr[-3000:]}")
    ours = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"  audit.compare: {ours['compare_s']:.2f} s")
    out = {"make_s": make_s, "ours": ours, "dicompyler": {}, "grid": ours["dose_grid"]}
    if use_dicompyler:
        for set_name, path in {"reference": pc.reference, **pc.sets}.items():
            rois = [s.number for s in read_rtstruct(path) if s.name not in skip and not s.is_empty]
            out["dicompyler"][set_name] = run_dicompyler(Path(path), pc.rtdose, rois, repeat)
            log(f"  dicompyler-core: {set_name} done")
    return out


# ------------------------------------------------------------ (c) speed per structure
EXAMPLE = ROOT.parent / "shared" / "data" / "dicompyler_example"


def _resampled_rtdose(rd: Path, out: Path, spacing_mm: float) -> Path:
    """The RTDOSE trilinearly resampled to an isotropic ``spacing_mm`` grid over the same box."""
    dose = read_rtdose(rd)
    g = dose.grid
    lo = np.asarray(g.origin)
    ext = (np.asarray(g.shape) - 1) * np.asarray(g.spacing)  # along array axes (k, j, i)
    shape = tuple(int(np.floor(e / spacing_mm)) + 1 for e in ext)
    new = Grid(shape, (spacing_mm,) * 3, tuple(lo), direction=g.direction)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    world = new.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    vals = dose.interpolate(g.world_to_index(world)).reshape(shape)
    write_rtdose(vals, new, out, frame_of_reference_uid=dose.frame_of_reference_uid or "1.2.3")
    return out


def speed_case(tmp: Path, use_dicompyler: bool, repeat: int, log) -> list[dict]:
    """Per-structure DVH time, ours and dicompyler-core default, on the dicompyler example.

    All ROIs of the example RTSTRUCT (0.3 cc to a 14900 cc BODY) on its own
    RTDOSE (2.5 x 2.5 x 3 mm) and on the same dose resampled to 3 mm. File
    reading is not timed; each time is the fastest of ``repeat`` calls after
    one untimed call, and the tools alternate structure by structure so that
    both see about the same load on a shared machine.
    """
    rs = EXAMPLE / "rtss.dcm"
    rows = []
    for label, rd in (("2.5 mm (native)", EXAMPLE / "rtdose.dcm"),
                      ("3 mm (resampled)", _resampled_rtdose(EXAMPLE / "rtdose.dcm", tmp / "rd3.dcm", 3.0))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ss = read_rtstruct(rs)
            dose = read_rtdose(rd)
            structs = [st for st in ss if not st.is_empty]
            for st in structs:
                compute_dvh(st, dose)  # untimed call
                best = float("inf")
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    dvh = compute_dvh(st, dose)
                    best = min(best, time.perf_counter() - t0)
                row = {"grid": label, "roi": st.number, "name": st.name,
                       "volume_cc": dvh.structure_volume_cc, "ours_s": best, "dicompyler_s": None}
                if use_dicompyler:
                    # right after ours, structure by structure, so that both tools see about the
                    # same load on a shared machine (its file reading is timed apart, not counted)
                    d = run_dicompyler(rs, rd, [st.number], repeat, modes=("default",))
                    row["dicompyler_s"] = d["results"][0]["seconds"]
                    row["dicompyler_cc"] = d["results"][0]["volume_cc"]
                rows.append(row)
        log(f"  speed: {label} done")
    return rows


def speed_tables(rows: list[dict], repeat: int) -> list[str]:
    out = ["Each time is the DVH call for one structure, the fastest of "
           f"{repeat} calls after one untimed call (the CPU is shared, so the best of several "
           "is the least disturbed); reading the files is not timed. The two tools run "
           "alternately, structure by structure, so that both see about the same load. "
           "dicompyler-core: "
           "`get_dvh(rs, rd, roi)` (its default). Ratio = dicompyler-core time / ours.", "",
           "| grid | ROI | volume cc (ours) | soars-dose ms | dicompyler-core ms | ratio |",
           "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["grid"], r["volume_cc"])):
        d = r["dicompyler_s"]
        ratio = "n/a" if d is None else f"{d / r['ours_s']:.2f}"
        out.append(f"| {r['grid']} | {r['name']} | {r['volume_cc']:.2f} | {1000 * r['ours_s']:.1f} | "
                   f"{'n/a' if d is None else f'{1000 * d:.1f}'} | {ratio} |")
    out.append("")
    paired = [r for r in rows if r["dicompyler_s"] is not None]
    if paired:
        to = sum(r["ours_s"] for r in paired)
        td = sum(r["dicompyler_s"] for r in paired)
        worst = min(paired, key=lambda r: r["dicompyler_s"] / r["ours_s"])
        out += ["| measure | value | target |", "|---|---|---|",
                f"| total over {len(paired)} structures: soars-dose / dicompyler-core | "
                f"{to:.2f} s / {td:.2f} s (x {td / to:.2f}) | >= 2x: {'met' if td >= 2 * to else '**missed**'} |",
                f"| slowest structure relative to dicompyler-core | {worst['name']} ({worst['grid']}): "
                f"x {worst['dicompyler_s'] / worst['ours_s']:.2f} | >= 1 for every structure: "
                f"{'met' if worst['dicompyler_s'] >= worst['ours_s'] else '**missed**'} |", ""]
    return out


# ------------------------------------------------------------------ reporting
DOSE_KEYS = ("d2", "d98", "d003")


def fmt(v: float, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    if np.isinf(v):
        return "none"
    return f"{v:+.{nd}f}"


def fmt_dose(e: dict, key: str) -> str:
    return "-100 (0 Gy)" if e.get(key + "_zero") else fmt(e[key])


def worst(errs: list[dict], key: str) -> str:
    """Largest |error| over the cases; dicompyler-core's 0 Gy answers counted apart."""
    vals = [abs(e[key]) for e in errs if not e.get(key + "_zero") and not np.isnan(e[key])]
    zeros = sum(bool(e.get(key + "_zero")) for e in errs)
    text = f"{max(vals):.2f}" if vals else "n/a"
    return text + (f" (+{zeros} x 0 Gy)" if zeros else "")


def closed_form_tables(rows: list[CaseRow]) -> list[str]:
    out = []
    tools = [t for t in TOOLS if any(t in r.errors for r in rows)]
    out += ["### Summary over all closed-form cases", "",
            f"Worst |error| per metric; a case passes when volume <= {TOL['volume']:g} %, mean <= "
            f"{TOL['mean']:g} %, max |DVH diff| <= {TOL['dvh']:g} % of volume and D2% / D98% / "
            f"D0.03cc within {TOL['dose']:g} % of the local dose. `+k x 0 Gy`: k more cases where "
            "dicompyler-core's own `DVH.statistic` returned 0 Gy (its nearest-bin search on the "
            "relative cumulative DVH lands on bin 0 when the curve drops past the volume asked "
            "for within one 1 cGy bin, as it does for few, equal-dose voxels).", "",
            "| tool | cases passing | volume % | mean % | max abs DVH diff % | D2% % | D98% % | "
            "D0.03cc % | ms / structure (median, max) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for t in tools:
        e = [r.errors[t] for r in rows if t in r.errors]
        ms = np.array([x["ms"] for x in e])
        out.append(f"| {t} | {sum(x['pass'] for x in e)} / {len(e)} | {worst(e, 'volume')} | "
                   f"{worst(e, 'mean')} | {worst(e, 'dvh')} | {worst(e, 'd2')} | "
                   f"{worst(e, 'd98')} | {worst(e, 'd003')} | {np.median(ms):.1f}, {ms.max():.1f} |")
    out.append("")
    for t in tools:
        out += [f"### {t}", "",
                "| object | grid | gradient | volume % | mean % | max abs DVH diff % | D2% % | "
                "D98% % | D0.03cc % | ms | pass |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            e = r.errors.get(t)
            if e is None:
                continue
            out.append(f"| {r.shape} | {r.grid} | {r.axis} | {fmt(e['volume'])} | {fmt(e['mean'])} | "
                       f"{e['dvh']:.2f} | {fmt_dose(e, 'd2')} | {fmt_dose(e, 'd98')} | "
                       f"{fmt_dose(e, 'd003')} | {e['ms']:.1f} | {'yes' if e['pass'] else '**no**'} |")
        out.append("")
    failing = [(r, r.errors["soars-dose"]) for r in rows if not r.errors["soars-dose"]["pass"]]
    if failing:
        out += ["**soars-dose cases outside the closed-form tolerances:**", ""]
        for r, e in failing:
            bad = []
            for k, lim in (("volume", TOL["volume"]), ("mean", TOL["mean"]), ("dvh", TOL["dvh"]),
                           ("d2", TOL["dose"]), ("d98", TOL["dose"]), ("d003", TOL["dose"])):
                if not np.isnan(e[k]) and abs(e[k]) > lim:
                    bad.append(f"{k} {e[k]:+.3f} % (limit {lim:g} %)")
            out.append(f"- {r.shape}, {r.grid} grid, gradient {r.axis}: " + "; ".join(bad))
        out.append("")
    else:
        out += ["soars-dose meets every closed-form tolerance on every case.", ""]
    return out


def full_case_tables(res: dict) -> list[str]:
    o = res["ours"]
    total = o["load_s"] + o["compare_s"]
    gb = o["maxrss_mb"] / 1024
    per = np.array([p["seconds"] for p in o["per_structure"]])
    status = ", ".join(f"{n} {k}" for k, n in o["status_counts"].items())
    out = ["### soars-dose, full comparison", "",
           f"Dose grid {res['grid']}. `compare` gave {o['n_rows']} rows ({status}): "
           f"{o['n_dvh']} DVHs of {len(o['rois'])} matched ROIs ({', '.join(o['rois'])}). "
           f"Phantom written in {res['make_s']:.1f} s (not counted). Peak memory is "
           "`resource.getrusage(RUSAGE_SELF).ru_maxrss` of a fresh process (the whole process: "
           "interpreter, imports, data), started so that it does not inherit the benchmark's own "
           "peak; Linux VmHWM of the same process agrees.", "",
           "| measure | value | target |", "|---|---|---|",
           f"| `audit.compare`, load excluded (cold, first call) | {o['compare_s']:.2f} s | "
           f"< {TARGET_S:g} s: {'met' if o['compare_s'] < TARGET_S else '**missed**'} |",
           f"| `audit.compare` again (same process) | {o['compare_again_s']:.2f} s | |",
           f"| `audit.compare` with contour metrics (all `soars-dose compare` computes) | "
           f"{o.get('recipe_s', float('nan')):.2f} s | |",
           f"| `audit.load_case` (RTDOSE, 4 RTSTRUCTs, CT series) | {o['load_s']:.2f} s | |",
           f"| load + compare | {total:.2f} s | < {TARGET_S:g} s: "
           f"{'met' if total < TARGET_S else '**missed**'} |",
           f"| peak memory (ru_maxrss; VmHWM) | {o['maxrss_mb']:.0f} MB; {o['vmhwm_mb']:.0f} MB "
           f"| < {TARGET_GB:g} GB: {'met' if gb < TARGET_GB else '**missed**'} |",
           f"| ru_maxrss at start / after imports / after first compare | {o['maxrss_start_mb']:.0f} / "
           f"{o['maxrss_imports_mb']:.0f} / {o['maxrss_after_compare_mb']:.0f} MB | |",
           f"| `compute_dvh` per OAR ({per.size} OAR structures, 4 sets): median / max / total | "
           f"{1000 * np.median(per):.0f} / {1000 * per.max():.0f} ms / {per.sum():.2f} s | |",
           ""]
    if not res["dicompyler"]:
        return out
    ours_by = {(r["set"], r["roi_original"]): r for r in o["stats"]}
    ours_t = {(p["set"], p["name"]): p["seconds"] for p in o["per_structure"]}
    out += ["### dicompyler-core on the same files (all OARs of the 4 sets)", "",
            "Agreement with soars-dose (no exact truth here): relative difference of dicompyler-core's "
            "value from ours, median and worst |.| over the OARs. Times are the DVH call per "
            "structure; reading the files is excluded (listed apart).", "",
            "| tool | structures | s / structure median | max | total s | file read s | "
            "mean dose diff median abs % | max abs % | volume diff median abs % | max abs % |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    out.append(f"| soars-dose `compute_dvh` | {per.size} | {np.median(per):.3f} | {per.max():.3f} | "
               f"{per.sum():.2f} | {o['load_s']:.2f} (case, incl. CT) | - | - | - | - |")
    for mode, tool in DMODES.items():
        secs, dmean, dvol, load = [], [], [], 0.0
        for set_name, d in res["dicompyler"].items():
            load += d["load_seconds"]
            for r in d["results"]:
                if r["mode"] != mode:
                    continue
                secs.append(r["seconds"])
                ref = ours_by.get((set_name, r["name"]))
                if ref is None or r["mean_gy"] is None:
                    continue
                dmean.append(abs(100 * (r["mean_gy"] / ref["mean_gy"] - 1)))
                dvol.append(abs(100 * (r["volume_cc"] / ref["volume_cc"] - 1)))
        secs = np.array(secs)
        out.append(f"| {tool} | {secs.size} | {np.median(secs):.3f} | {secs.max():.3f} | "
                   f"{secs.sum():.2f} | {load:.2f} (4 x RTSTRUCT + RTDOSE) | {np.median(dmean):.2f} | "
                   f"{max(dmean):.2f} | {np.median(dvol):.2f} | {max(dvol):.2f} |")
    out.append("")
    modes = list(DMODES)
    out += ["Per structure, reference set (volume cc, mean Gy, time ms; dicompyler-core modes "
            f"in the order {', '.join(modes)}):", "",
            "| ROI | ours cc | dicompyler cc | ours mean Gy | dicompyler mean Gy | ours ms | "
            "dicompyler ms |", "|---|---|---|---|---|---|---|"]
    d_ref = {(r["mode"], r["name"]): r for r in res["dicompyler"]["reference"]["results"]}
    for (set_name, name), ref in ours_by.items():
        if set_name != "reference" or ("default", name) not in d_ref:
            continue
        rs = [d_ref[(m, name)] for m in modes]
        cc = " / ".join(f"{r['volume_cc']:.3f}" for r in rs)
        mg = " / ".join("n/a" if r["mean_gy"] is None else f"{r['mean_gy']:.2f}" for r in rs)
        ms = " / ".join(f"{1000 * r['seconds']:.0f}" for r in rs)
        out.append(f"| {name} | {ref['volume_cc']:.3f} | {cc} | {ref['mean_gy']:.2f} | {mg} | "
                   f"{1000 * ours_t.get(('reference', name), np.nan):.0f} | {ms} |")
    out.append("")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="DVH benchmark: soars-dose vs dicompyler-core")
    ap.add_argument("--no-dicompyler", action="store_true",
                    help="skip dicompyler-core (no .bench-venv needed)")
    ap.add_argument("--skip-full-case", action="store_true", help="skip the full case (b)")
    ap.add_argument("--skip-closed-form", action="store_true", help="skip the closed-form cases (a)")
    ap.add_argument("--skip-speed", action="store_true", help="skip the per-structure speed table (c)")
    ap.add_argument("--seed", type=int, default=1, help="phantom seed")
    ap.add_argument("--repeat", type=int, default=3,
                    help="per-structure times are the fastest of this many calls")
    ap.add_argument("--out", type=Path, default=RESULTS, help="Markdown report path")
    ap.add_argument("--audit-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.audit_worker:
        audit_worker(args.audit_worker)
        return 0

    use_d = not args.no_dicompyler
    if use_d and not BENCH_PYTHON.exists():
        sys.exit(f"{BENCH_PYTHON} not found: run `bash benchmarks/setup_dicompyler_env.sh` first "
                 "(or pass --no-dicompyler)")
    m, v = machine(), versions()
    dver = {}
    if use_d:
        dver = json.loads(subprocess.run(
            [str(BENCH_PYTHON), "-c", "import json, dicompylercore, pydicom, numpy, matplotlib, skimage;"
             "print(json.dumps({'dicompyler-core': dicompylercore.__version__, 'pydicom': "
             "pydicom.__version__, 'numpy': numpy.__version__, 'matplotlib': matplotlib.__version__,"
             "'scikit-image': skimage.__version__}))"],
            capture_output=True, text=True, check=True).stdout)
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    header = [
        "# DVH benchmark: soars-dose vs dicompyler-core", "",
        f"- command: `{command}` (cwd `{os.getcwd()}`)",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {m['platform']}; CPU {m['cpu']}; nproc {m['nproc']}; RAM {m['ram']}",
        f"- main venv (Python {m['python']}): " + ", ".join(f"{k} {x}" for k, x in v.items()),
    ]
    if use_d:
        header.append("- bench venv (dicompyler-core): " + ", ".join(f"{k} {x}" for k, x in dver.items()))
        header.append("- dicompyler-core modes: `default` = `get_dvh(rs, rd, roi)`; `interp` = "
                      "`interpolation_resolution=pixel spacing / 8, "
                      "interpolation_segments_between_planes=2, use_structure_extents=True`; "
                      "`interp-xy` = the same with `interpolation_segments_between_planes=0`")
    header.append("")
    print("\n".join(header), flush=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    t_start = time.perf_counter()
    body = []
    with tempfile.TemporaryDirectory(prefix="soars-bench-") as td:
        tmp = Path(td)
        if not args.skip_closed_form:
            log("closed-form cases ...")
            rows = closed_form(tmp, use_d, args.repeat, log)
        body += [] if args.skip_closed_form else ["## (a) Closed-form objects in linear dose fields", "",
                 f"Objects centred at {CENTRE} mm; dose = {BASE_GY:g} Gy + slope x (coordinate - centre) "
                 f"with slope {SLOPE['x']} (x), {SLOPE['y']} (y), {SLOPE['z']} (z) Gy/mm. Errors are "
                 "signed (tool - truth) / truth in %, except max |DVH diff| (% of the true volume). "
                 "D0.03cc / D2% / D98%: `none` means the tool gave no value; time is the DVH call "
                 "for one structure, file reading excluded.", ""]
        if not args.skip_closed_form:
            body += closed_form_tables(rows)
        if not args.skip_speed:
            log("speed per structure ...")
            body += ["## (c) Speed per structure: the dicompyler example, 2.5 mm and 3 mm dose grids", ""]
            body += speed_tables(speed_case(tmp, use_d, args.repeat, log), args.repeat)
        if not args.skip_full_case:
            log("full case ...")
            full = full_case(tmp, args.seed, use_d, args.repeat, log)
            body += ["## (b) Full case: one synthetic head-and-neck patient", ""]
            body += full_case_tables(full)
    body.append(f"Benchmark wall time: {time.perf_counter() - t_start:.0f} s.")
    print("\n".join(body))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + body) + "\n")
    log(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
