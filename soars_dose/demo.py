"""The embedded default: a synthetic head-and-neck cohort, audited end to end.

``soars-dose demo --out DIR`` writes

    DIR/data/<patient>/...        CT series, reference + 3 substitute RTSTRUCTs, RTDOSE
    DIR/data/manifest.csv         the cohort manifest (with an ``institution`` column)
    DIR/data/revisions.csv        a synthetic revision log of the ``soars`` set
    DIR/audit/patients/<patient>/ per-patient tables (``soars-dose cohort``)
    DIR/audit/cohort/             the union tables, failures, provenance
    DIR/audit/report/report.html  the cohort report (``soars-dose report``), its tables and
                                  report/patients/<patient>.html, one page per patient

i.e. exactly what a physicist runs on a real cohort: ``soars-dose cohort
DIR/data/manifest.csv --out DIR/audit`` then ``soars-dose report DIR/audit
--revisions DIR/data/revisions.csv``.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from .cohort import run_cohort
from .console import option
from .errors import InputError
from .outputs import check_writable, write_csv_rows
from .report.cohort import build_report
from .synthetic.cohort import PhantomCase, make_cohort


def write_manifest(cases: list[PhantomCase], path: Path) -> Path:
    """A cohort manifest for phantom cases (paths relative to the manifest's folder)."""
    sets = list(cases[0].sets)
    rows = [["patient", "rtdose", "reference", *[f"set:{s}" for s in sets], "ct", "institution"]]
    for n, c in enumerate(cases):
        rel = lambda p: Path(p).relative_to(path.parent).as_posix()  # noqa: E731
        rows.append([c.patient_id, rel(c.rtdose), rel(c.reference),
                     *[rel(c.sets[s]) for s in sets], rel(c.ct_dir), "AB"[n % 2]])
    return write_csv_rows(path, rows)


def write_revisions(cases: list[PhantomCase], contour_metrics, path: Path, seed: int) -> Path:
    """A synthetic revision log of the ``soars`` set: the worse the Dice, the longer the edit.

    Only for the demo: real logs come from the clinic (see ``soars-dose report --revisions``).
    """
    rng = np.random.default_rng(seed)
    cm = contour_metrics[contour_metrics["set"] == "soars"]
    rows = [["patient", "roi", "category", "minutes"]]
    for _, r in cm.iterrows():
        d = r["dice"] if np.isfinite(r["dice"]) else 0.0
        d += rng.normal(0, 0.03)
        cat, minutes = ((">3 min", 3.1 + 4 * rng.random()) if d < 0.6 else
                        ("1-3 min", 1.0 + 1.9 * rng.random()) if d < 0.75 else
                        ("<1 min", 0.1 + 0.8 * rng.random()) if d < 0.88 else ("none", 0.0))
        rows.append([r["patient"], r["roi"], cat, f"{minutes:.1f}"])
    return write_csv_rows(path, rows)


def run_demo(out: "str | Path", n_patients: int = 5, seed: int = 0, *,
             overwrite: bool = False, progress: bool = True, jobs: int | None = None) -> dict:
    """Generate the synthetic cohort under ``out``, run the cohort audit and build the report.

    Returns a dict with the cohort result and the report path.
    """
    if isinstance(n_patients, bool) or not isinstance(n_patients, int) or n_patients < 1:
        raise InputError(f"{option('patients', 'N')} must be a whole number >= 1, "
                         f"got {n_patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"{option('seed', 'N')} must be a whole number >= 0, got {seed!r}")
    out = check_writable(out, overwrite)
    old = None
    if out.exists():
        # keep the old folder until the new run has finished
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    t0 = time.perf_counter()
    data = out / "data"
    data.mkdir(parents=True)
    cases = make_cohort(data, n_patients=n_patients, seed=seed, progress=False)
    manifest = write_manifest(cases, data / "manifest.csv")
    t1 = time.perf_counter()
    audit_dir = out / "audit"
    result = run_cohort(manifest, audit_dir, jobs=jobs, progress=progress,
                        command=f"soars-dose cohort {manifest} --out {audit_dir}")
    t2 = time.perf_counter()
    revisions = write_revisions(cases, result.contour_metrics, data / "revisions.csv", seed)
    report = build_report(audit_dir, revisions=revisions,
                          command=f"soars-dose report {audit_dir} --revisions {revisions}")
    t3 = time.perf_counter()
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if progress:
        print(f"demo: {result.n_ok} of {len(cases)} patients audited; data {t1 - t0:.1f} s, "
              f"cohort {t2 - t1:.1f} s, report {t3 - t2:.1f} s\nreport: {report}",
              file=sys.stderr)
    return {"cohort": result, "report": report,
            "seconds": {"data": t1 - t0, "cohort": t2 - t1, "report": t3 - t2}}
