"""Time of ``--between-planes interpolate`` against ``stack`` on real structures (run by hand).

For every ROI of the dicompyler-core example plan (``../shared/data/
dicompyler_example``: a breast plan, RTDOSE 194x129x98 at 2.5 mm, 10 ROIs
including the body) and of one synthetic head-and-neck phantom patient
(13 OARs, External, PTV70): the reconstruction time (``between_planes.
reconstruct``), the DVH time on the dose grid of each mode (``compute_dvh``,
samples + histogram) and the volumes of both modes. Files are read once;
each timing is one call (the reconstruction is deterministic and has no
cache to warm). Peak memory of the process (``ru_maxrss``) is printed at
the end.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_between_planes.py [--out results/between_planes.csv]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from soars_dose.between_planes import reconstruct
from soars_dose.dicom.rtdose import read_rtdose
from soars_dose.dicom.rtstruct import read_rtstruct
from soars_dose.dose.compute import compute_dvh
from soars_dose.rasterize import nominal_spacing_mm

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / ".." / "shared" / "data" / "dicompyler_example"


def _cases(tmp: Path):
    if EXAMPLE.is_dir():
        yield "dicompyler_example", read_rtdose(EXAMPLE / "rtdose.dcm"), read_rtstruct(EXAMPLE / "rtss.dcm")
    from soars_dose.synthetic.cohort import make_patient

    pc = make_patient(tmp, "PHANTOM_001", seed=0)
    yield "phantom", read_rtdose(pc.rtdose), read_rtstruct(pc.reference)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="CSV of the per-structure figures")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case, dose, sset in _cases(Path(tmp)):
            nominal = nominal_spacing_mm(sset.structures, dose.grid)
            for st in sset:
                if st.is_empty:
                    continue
                try:
                    t0 = time.perf_counter()
                    d_stack = compute_dvh(st, dose, nominal_spacing_mm=nominal)
                    t1 = time.perf_counter()
                    rec = reconstruct(st, nominal_spacing_mm=nominal)
                    t2 = time.perf_counter()
                    d_int = compute_dvh(rec.structure, dose, nominal_spacing_mm=rec.nominal_spacing_mm)
                    t3 = time.perf_counter()
                except Exception as exc:  # report and go on: a benchmark, not a test
                    print(f"{case}/{st.name}: {exc}", file=sys.stderr)
                    continue
                rows.append({
                    "case": case, "roi": st.name, "planes": len({round(float(c[0, 2]), 2) for c in st.contours}),
                    "stack_cc": d_stack.structure_volume_cc, "interp_cc": d_int.structure_volume_cc,
                    "stack_mean_gy": d_stack.mean_gy, "interp_mean_gy": d_int.mean_gy,
                    "stack_dvh_s": t1 - t0, "reconstruct_s": t2 - t1, "interp_dvh_s": t3 - t2,
                })
                print(f"{case:18s} {st.name:14s} {rows[-1]['stack_cc']:9.2f} cc -> "
                      f"{rows[-1]['interp_cc']:9.2f} cc  stack {t1 - t0:6.2f} s  reconstruct "
                      f"{t2 - t1:6.2f} s  interp DVH {t3 - t2:6.2f} s", flush=True)
    df = pd.DataFrame(rows)
    tot = df[["stack_dvh_s", "reconstruct_s", "interp_dvh_s"]].sum()
    print(f"total: stack {tot['stack_dvh_s']:.1f} s, reconstruct {tot['reconstruct_s']:.1f} s, "
          f"interpolated DVH {tot['interp_dvh_s']:.1f} s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
