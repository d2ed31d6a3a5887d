"""Run a cohort audit on the synthetic demo data and build the report.

    .venv/bin/python examples/cohort_report.py OUT_DIR [N_PATIENTS]

The same two steps a physicist runs on real data:

    soars-dose cohort OUT_DIR/data/manifest.csv --out OUT_DIR/audit --jobs 2
    soars-dose report OUT_DIR/audit --revisions OUT_DIR/data/revisions.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

from soars_dose.cohort import run_cohort
from soars_dose.demo import write_manifest, write_revisions
from soars_dose.report.cohort import build_report
from soars_dose.synthetic.cohort import make_cohort


def main(out: Path, n: int) -> None:
    cases = make_cohort(out / "data", n_patients=n, seed=42, progress=False)
    manifest = write_manifest(cases, out / "data" / "manifest.csv")
    result = run_cohort(manifest, out / "audit", jobs=2)
    print(f"{result.n_ok} patients ok, {result.n_failed} failed")
    revisions = write_revisions(cases, result.contour_metrics, out / "data" / "revisions.csv", 0)
    report = build_report(out / "audit", revisions=revisions)
    print(f"open {report} in a browser")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 6)
