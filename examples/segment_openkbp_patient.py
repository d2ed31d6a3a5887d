"""Segment a real head-and-neck CT with the packaged model and audit the dose of its contours.

An OpenKBP patient (a ``pt_N.npz`` file or an original sparse-CSV folder) is
written out as DICOM (CT series, the clinical RTDOSE, the clinical contours
as the reference RTSTRUCT), its CT is segmented by ``soars-dose segment``'s
default model (7 OARs), and the automatic contours are compared with the
clinical ones on the clinical dose: DVHs, Diff_mean / Diff_max, Dice, HD95.
Finally the report opens in the browser.

Run from the repository root (needs the segmentation extra, torch)::

    .venv/bin/python examples/segment_openkbp_patient.py ../shared/data/openkbp/validation/pt_201.npz out_pt201

It writes ``out_pt201/data/pt_201/`` (DICOM), ``out_pt201/audit/`` (the
cohort tables) and ``out_pt201/audit/report/report.html``.
"""

from __future__ import annotations

import argparse
import csv
import webbrowser
from pathlib import Path

from soars_dose.cohort import run_cohort
from soars_dose.datasets import openkbp
from soars_dose.report.cohort import build_report
from soars_dose.segmentation.inference import segment_ct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("patient", type=Path, help="OpenKBP pt_N.npz or raw pt_N/ folder")
    ap.add_argument("out", type=Path, help="output folder (must not exist)")
    ap.add_argument("--no-open", action="store_true", help="do not open the report")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")

    pt = openkbp.read_patient(args.patient)
    pdir = args.out / "data" / pt.patient_id
    export = openkbp.write_dicom(pt, pdir)  # CT/, RTDOSE.dcm, RTSTRUCT_reference.dcm
    print(f"{pt.patient_id}: DICOM written to {pdir}")

    # the packaged default model; the RTSTRUCT references the CT series just written
    result = segment_ct(pdir / "CT", out_rtstruct=pdir / "RTSTRUCT_soars.dcm", progress=True)
    print(f"segmented {len(result.masks)} OARs in {result.timings_s['total']:.1f} s")

    manifest = args.out / "data" / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient", "rtdose", "reference", "set:soars", "ct"])
        p = pt.patient_id
        w.writerow([p, f"{p}/RTDOSE.dcm", f"{p}/RTSTRUCT_reference.dcm",
                    f"{p}/RTSTRUCT_soars.dcm", f"{p}/CT"])
    res = run_cohort(manifest, args.out / "audit", jobs=1, progress=False)
    stats = res.stats
    cols = ["roi", "status", "mean_gy", "diff_mean_pct", "diff_max_pct"]
    print(stats.loc[stats["set"] == "soars", cols].to_string(index=False))
    report = build_report(args.out / "audit")
    print(f"report: {report}")
    del export
    if not args.no_open:
        webbrowser.open(report.resolve().as_uri())


if __name__ == "__main__":
    main()
