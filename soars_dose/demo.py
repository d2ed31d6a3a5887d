"""The embedded default: a synthetic head-and-neck cohort, audited end to end.

``soars-dose demo --out DIR`` writes

    DIR/data/<patient>/...        CT series, reference + 3 substitute RTSTRUCTs, RTDOSE
    DIR/results/<patient>/        stats, dvh, names (CSV + Parquet), provenance.json
    DIR/cohort/                   stats and dvh of all patients, per-set and per-OAR
                                  summaries, failures, provenance.json
    DIR/report.html               offline HTML report

Each patient's results are written atomically as it finishes; a patient
that fails is recorded in ``cohort/failures`` and the run continues.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
import uuid
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import audit
from .analysis.report import _table, dvh_figure, write_report
from .analysis.summary import per_oar_summary, per_set_summary
from .errors import OutputExistsError, SoarsDoseError
from .outputs import provenance, write_output_dir
from .phantom import make_cohort


def run_demo(out: "str | Path", n_patients: int = 5, seed: int = 0, *,
             overwrite: bool = False, progress: bool = True) -> dict:
    """Generate the synthetic cohort under ``out`` and compare every set with the reference.

    Returns a dict with the combined ``stats``, ``per_set`` and ``failures``
    tables and the report path.
    """
    out = Path(out)
    old = None
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out}: already exists; choose another --out or pass --overwrite")
        # keep the old folder until the new run has finished
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    t0 = time.perf_counter()
    out.mkdir(parents=True)
    cases = make_cohort(out / "data", n_patients=n_patients, seed=seed, progress=False)
    settings = audit.Settings()
    stats, dvhs, failures = [], [], []
    bar = tqdm(cases, desc="patients", unit="patient", disable=not progress, file=sys.stderr)
    for pc in bar:
        bar.set_postfix_str(pc.patient_id)
        try:
            case = audit.load_case(pc.rtdose, {"reference": pc.reference, **pc.sets},
                                   ct=pc.ct_dir, patient=pc.patient_id)
            res = audit.compare(case, settings)
            audit.write_result(res, case, out / "results" / pc.patient_id, settings=settings,
                               command=f"soars-dose demo (patient {pc.patient_id})")
            stats.append(res.stats)
            dvhs.append(res.dvh)
        except SoarsDoseError as exc:  # one bad patient never stops the cohort
            failures.append({"patient": pc.patient_id, "error": type(exc).__name__,
                             "message": str(exc)})
        except Exception as exc:
            failures.append({"patient": pc.patient_id, "error": type(exc).__name__,
                             "message": "".join(traceback.format_exception_only(exc)).strip()})
    all_stats = pd.concat(stats, ignore_index=True) if stats else pd.DataFrame()
    all_dvh = pd.concat(dvhs, ignore_index=True) if dvhs else pd.DataFrame()
    fail = pd.DataFrame(failures, columns=["patient", "error", "message"])
    per_set = per_set_summary(all_stats) if len(all_stats) else pd.DataFrame()
    per_oar = per_oar_summary(all_stats) if len(all_stats) else pd.DataFrame()
    elapsed = time.perf_counter() - t0
    write_output_dir(
        out / "cohort",
        {"stats": all_stats, "dvh": all_dvh, "per_set": per_set, "per_oar": per_oar,
         "failures": fail},
        provenance(settings.as_dict(), [{"role": "phantom", "seed": seed,
                                         "n_patients": n_patients}],
                   [], command="soars-dose demo", seconds=round(elapsed, 2)),
    )
    report = _demo_report(out / "report.html", all_stats, all_dvh, per_set, per_oar, fail,
                          n_patients, seed, elapsed)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if progress:
        print(f"demo: {len(stats)} of {len(cases)} patients audited in {elapsed:.1f} s; "
              f"report {report}", file=sys.stderr)
        if len(per_set):
            print(per_set[["set", "n_instances", "n_missing", "mean_abs_diff_mean_pct",
                           "mean_abs_diff_max_pct", "pct_diff_mean_over_10"]]
                  .to_string(index=False, float_format=lambda v: f"{v:.2f}"), file=sys.stderr)
    return {"stats": all_stats, "per_set": per_set, "failures": fail, "report": report}


def _demo_report(path, stats, dvh, per_set, per_oar, fail, n, seed, elapsed):
    figures = []
    if len(dvh):
        for patient in list(dict.fromkeys(dvh["patient"]))[:3]:
            figures.append(dvh_figure(dvh[dvh["patient"] == patient],
                                      stats[stats["patient"] == patient], patient))
    cols = ["patient", "set", "roi", "roi_original", "status", "volume_cc", "mean_gy",
            "max_gy", "d0_03cc_gy", "diff_mean_pct", "diff_max_pct", "diff_flag"]
    blocks = [
        ("About", f"<p class='note'>Synthetic head-and-neck cohort: {n} patients, seed {seed}, "
                  f"audited in {elapsed:.1f} s. Reference = clinical-style contours; "
                  "substitute sets soars / revised / reader perturbed as real readers differ. "
                  "Diff_mean and Diff_max are eq 6/7 of the SOARS study.</p>"),
        ("Dose differences per set (all OAR instances)", _table(per_set)),
        ("DVHs (first patients; click legend entries to hide or show)", ""),
        *figures,
        ("Dose differences per set and OAR", _table(per_oar)),
        ("Failures", _table(fail) if len(fail) else "<p>none</p>"),
        ("All statistics", _table(stats[[c for c in cols if c in stats.columns]])),
    ]
    return write_report(path, title="soars-dose demo: dose audit of OAR contour sets",
                        blocks=blocks)
