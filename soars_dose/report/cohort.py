"""The cohort report: the study's tables and figures from a cohort output folder.

``soars-dose report DIR`` reads ``DIR/cohort/*.parquet`` (written by
``soars-dose cohort``), computes the statistics and writes

    DIR/report/report.html      one self-contained page (plotly.js inlined)
    DIR/report/<table>.csv|.parquet  every table the page shows
    DIR/report/provenance.json

The page holds: the study's Table 5 for this cohort (contour and dosimetric
accuracy per OAR and set, with Wilcoxon p-values against the reader set
and against the reference), the share of OAR instances with |Diff| above
10 % and 30 %, box plots per OAR, scatter plots of contour accuracy against
dose difference (the study's Supplementary Figs 2-3), per-patient DVH
overlays with an OAR drop-down, clinical constraint flips, the revision
effort summary when a revision file is given, failures and provenance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import constraints as C
from ..analysis import revisions as R
from ..analysis import statistics as S
from ..analysis import tables as T
from ..case import REFERENCE
from ..console import option
from ..dose.differences import NEAR_ZERO_GY, add_differences
from ..errors import InputError
from ..outputs import check_writable, provenance, read_table, write_output_dir
from .figures import box_figure, dvh_patient_figure, scatter_figure
from .page import (
    escape,
    html_table,
    write_report,
)

#: Tables a cohort folder must hold.
REQUIRED = ("stats", "dvh", "contour_metrics")
#: Set the study tested the others against.
READER = "reader"
#: Patients whose DVH overlays are drawn (all when fewer).
MAX_DVH_PATIENTS = 30


def load_tables(cohort_dir: Path) -> dict[str, pd.DataFrame]:
    """Read the union tables of a cohort run (``DIR/cohort``).

    A damaged Parquet file (truncated, empty, random bytes, a CSV file
    renamed) is refused by name; the CSV twin is *not* used instead, since
    it holds spreadsheet-safe text (``'=...``) and loses the column types.
    The cohort tables are rebuilt from the patient folders by rerunning the
    cohort with ``--resume``.

    Raises
    ------
    InputError
        A required table is missing, or any table cannot be read.
    """
    folder = cohort_dir / "cohort"
    advice = (f"The cohort tables are rebuilt from the patient folders: rerun the cohort into "
              f"{cohort_dir} with {option('resume')} (and the same options); if it names a "
              f"damaged file in a patient folder, delete that folder first")
    tables = {}
    for name in ("stats", "dvh", "contour_metrics", "names", "patients", "failures"):
        p = folder / f"{name}.parquet"
        if p.exists():
            tables[name] = read_table(p, advice=advice)
        elif name in REQUIRED:
            raise InputError(f"{folder}: no {name}.parquet; run soars-dose cohort into "
                             f"{cohort_dir} first")
    for name in ("patients", "failures", "names"):
        tables.setdefault(name, pd.DataFrame())
    return tables


def table5(summary: pd.DataFrame, tests: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    """The study's Table 5: per OAR, per set and metric, mean ± SD with p-values.

    ``p_vs_reader``: Wilcoxon matched-pairs, the set against the reader set
    (per OAR, Holm-adjusted within the metric family); ``p_vs_reference``:
    the set's mean / max dose against the reference's.
    """
    metrics = ["dice", "hd95_mm", "asd_mm", "abs_diff_mean_pct", "abs_diff_max_pct"]
    dose_vs_ref = {"abs_diff_mean_pct": "mean_gy", "abs_diff_max_pct": "max_gy"}
    rows = []
    sub_sets = [s for s in sets if s != REFERENCE]
    for (set_name, roi), g in summary[summary["set"].isin(sub_sets)].groupby(["set", "roi"], sort=False):
        row = {"roi": roi, "set": set_name}
        for m in metrics:
            v = g[g["metric"] == m]
            row[m] = v["mean_sd"].iloc[0] if len(v) else ""
            if set_name != READER and READER in sets and len(tests):
                t = tests[(tests["metric"] == m) & (tests["roi"] == roi) &
                          (((tests["set_a"] == set_name) & (tests["set_b"] == READER)) |
                           ((tests["set_a"] == READER) & (tests["set_b"] == set_name)))]
                row[f"{m}_p_vs_reader"] = t["p_holm"].iloc[0] if len(t) else np.nan
            if m in dose_vs_ref and len(tests):
                t = tests[(tests["metric"] == dose_vs_ref[m]) & (tests["roi"] == roi) &
                          (tests["set_a"] == set_name) & (tests["set_b"] == REFERENCE)]
                row[f"{dose_vs_ref[m]}_p_vs_reference"] = t["p_holm"].iloc[0] if len(t) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def table5_display(tab5: pd.DataFrame, sets: list[str], metrics: list[str],
                   labels: dict[str, str]) -> pd.DataFrame:
    """Table 5 as the study prints it: one row per OAR, one column per (set, metric).

    Cells are ``mean ± SD``; ``*`` marks p < 0.05 (Holm) against the reader
    set, ``†`` a mean / max dose that differs from the reference's
    (p < 0.05, Holm).
    """
    dose_vs_ref = {"abs_diff_mean_pct": "mean_gy_p_vs_reference",
                   "abs_diff_max_pct": "max_gy_p_vs_reference"}
    out = pd.DataFrame({"OAR": list(dict.fromkeys(tab5["roi"]))}).set_index("OAR")
    for set_name in [x for x in sets if x != REFERENCE]:
        g = tab5[tab5["set"] == set_name].set_index("roi")
        for m in metrics:
            col = f"{set_name}: {labels[m]}"
            vals = []
            for roi in out.index:
                if roi not in g.index:
                    vals.append("")
                    continue
                r = g.loc[roi]
                cell = str(r.get(m, ""))
                p = r.get(f"{m}_p_vs_reader", np.nan)
                if pd.notna(p) and p < 0.05:
                    cell += " *"
                q = r.get(dose_vs_ref.get(m, ""), np.nan)
                if pd.notna(q) and q < 0.05:
                    cell += " †"
                vals.append(cell)
            out[col] = vals
    return out.reset_index()


def _p_fmt(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if (c.startswith("p") or "_p_" in c) and pd.api.types.is_numeric_dtype(out[c]):
            out[c] = out[c].map(lambda v: "" if pd.isna(v) else ("<0.001" if v < 0.001 else f"{v:.3f}"))
    return out


def build_report(cohort_dir: "str | Path", *, revisions: "str | Path | None" = None,
                 constraints: "str | Path | None" = None, overwrite: bool = False,
                 point_max: bool = False,
                 from_scratch_min: float = R.DEFAULT_FROM_SCRATCH_MIN,
                 command: str = "") -> Path:
    """Compute the cohort statistics and write ``DIR/report`` (tables + report.html).

    Returns the path of ``report.html``.
    """
    cohort_dir = Path(cohort_dir)
    out = check_writable(cohort_dir / "report", overwrite)
    t = load_tables(cohort_dir)
    stats, cm, dvh = t["stats"], t["contour_metrics"], t["dvh"]
    if "diff_d0_03cc_pct" not in stats.columns:  # a cohort run before the one near-zero rule
        thr = (stats.groupby("patient")["near_zero_threshold_gy"].max().dropna().to_dict()
               if "near_zero_threshold_gy" in stats.columns else NEAR_ZERO_GY)
        stats = add_differences(stats, thr)
    sets = list(dict.fromkeys(stats["set"]))
    summary = S.summary_by_oar(stats, cm)
    tests = S.paired_tests(stats, cm, method="asymptotic")
    thresholds = S.threshold_counts(stats)
    corr = S.correlations(stats, cm)
    cons = C.load_constraints(constraints, point_max=point_max)
    evaluated = C.evaluate_constraints(stats, cons)
    flips = C.constraint_flips(evaluated)
    tab5 = table5(summary, tests, sets)
    tab5a = T.table5(stats, cm, T.TABLE5A, sets=sets)
    tab5b = T.table5(stats, cm, T.TABLE5B, sets=sets)
    bias = T.dose_bias(stats)
    tables = {"table5": tab5, "table5a": tab5a, "table5b": tab5b, "dose_bias": bias,
              "summary_by_oar": summary, "paired_tests": tests,
              "threshold_counts": thresholds, "correlations": corr,
              "constraints": evaluated, "constraint_flips": flips}
    unpaired = pd.DataFrame()
    patients = t["patients"]
    if len(patients) and "institution" in patients.columns and patients["institution"].nunique() > 1:
        unpaired = pd.concat([S.unpaired_tests(stats, "institution", "abs_diff_mean_pct",
                                               patients=patients),
                              S.unpaired_tests(cm, "institution", "dice", patients=patients)],
                             ignore_index=True)
        tables["unpaired_tests"] = unpaired
    rev_summary = saved = pd.DataFrame()
    if revisions is not None:
        rev = R.read_revisions(revisions)
        rev_summary = R.revision_summary(rev)
        saved = R.time_saved(rev, from_scratch_min)
        tables["revision_summary"] = rev_summary
        tables["time_saved"] = saved

    prov_in = {}
    p = cohort_dir / "cohort" / "provenance.json"
    if p.exists():
        try:
            prov_in = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: unreadable ({exc}); rerun the cohort into {cohort_dir} "
                             f"with {option('resume')} to rebuild it") from None
    record = provenance({"revisions": str(revisions) if revisions else None,
                         "constraints": str(constraints) if constraints else "packaged default",
                         "constraints_serial_organs": "point maximum" if point_max
                                                      else "near-maximum D0.03cc",
                         "from_scratch_min": from_scratch_min,
                         "paired_tests": "Wilcoxon signed-rank, two-sided, zero_method=wilcox, "
                                         "asymptotic p; Holm and BH within each metric family; "
                                         "pooled rows across per-patient means",
                         "correlations": "Spearman; exact permutation p below n = 10; Holm "
                                         "and BH within each metric-pair family"},
                        [{"role": "cohort", "path": str(cohort_dir / "cohort"),
                          "created_utc": prov_in.get("created_utc")}], [], command=command)

    # ---------------------------------------------------------------- figures
    sub_sets = [s for s in sets if s != REFERENCE]
    dose = stats[stats["set"].isin(sub_sets) & stats["status"].isin(["ok", "partial"])].copy()
    dose["abs_diff_mean_pct"] = dose["diff_mean_pct"].abs()
    dose["abs_diff_max_pct"] = dose["diff_max_pct"].abs()
    merged = cm.merge(dose[["patient", "set", "roi", "abs_diff_mean_pct", "abs_diff_max_pct"]],
                      on=["patient", "set", "roi"], how="inner") if len(cm) else dose
    headline = thresholds[thresholds["roi"] == S.ALL] if len(thresholds) else thresholds
    blocks: list = [
        ("About", _about(t, stats, sets, prov_in)),
        ("Headline: OAR instances with large dose differences", html_table(headline)),
        ("Table 5a: contour accuracy per OAR (mean ± SD (n), median [IQR])",
         html_table(tab5a) + "<p class='note'>" + escape(_MISSING_RULE) + "</p>"),
        ("Table 5b: dosimetric accuracy per OAR (|Diff| in %, mean ± SD (n), median [IQR])",
         html_table(tab5b)
         + "<p class='note'>" + escape(_NEAR_ZERO_NOTE) + " Paired tests (Wilcoxon "
           "matched-pairs, two-sided, Holm-adjusted within each metric; per-OAR tests need at "
           "least 6 patients): table5.csv and 'All paired tests' below. " + escape(_POOLED_NOTE)
         + "</p>"),
        ("Signed bias per OAR (mean ± SD; median [IQR] of Diff in % and Gy)",
         html_table(T.dose_bias_display(bias))
         + "<p class='note'>Negative: the set gives a lower dose than the reference contours "
           "(a set cold on an OAR). Gy differences are always given.</p>"),
        box_figure(dose, "abs_diff_mean_pct", "|Diff_mean| (%) per OAR", sets),
        box_figure(dose, "abs_diff_max_pct", "|Diff_max| (%) per OAR", sets),
    ]
    if len(cm):
        blocks += [box_figure(cm, "dice", "Dice per OAR", sets),
                   scatter_figure(merged, "dice", "abs_diff_mean_pct",
                                  "Dice vs |Diff_mean| (%)", sets),
                   scatter_figure(merged, "hd95_mm", "abs_diff_max_pct",
                                  "HD95 (mm) vs |Diff_max| (%)", sets)]
    blocks += [("Spearman correlation of contour accuracy and dose difference",
                html_table(_p_fmt(corr))
                + "<p class='note'>p exact (all n! pairings) below n = 10, else the t "
                  "approximation (column p_method); p_holm (Holm, family-wise) and p_bh "
                  "(Benjamini-Hochberg) adjust within each contour-metric / dose-metric "
                  "family. The pooled rows ignore that OARs of one patient are related: "
                  "descriptive.</p>")]
    blocks += [("Clinical constraints: flips between pass and fail relative to the reference",
                html_table(flips) if len(flips) else "<p>No substitute set flips a constraint.</p>")]
    if len(unpaired):
        blocks.append(("Between institutions (Mann-Whitney U)", html_table(_p_fmt(unpaired))))
    if len(rev_summary):
        blocks += [("Revision effort", html_table(rev_summary)), ("Editing time saved", html_table(saved))]
    blocks.append(("DVH overlays (pick the OAR in each plot's menu)", ""))
    for patient in list(dict.fromkeys(dvh["patient"]))[:MAX_DVH_PATIENTS]:
        blocks.append(dvh_patient_figure(dvh[dvh["patient"] == patient],
                                         stats[stats["patient"] == patient], str(patient)))
    blocks += [
        ("All paired tests", html_table(_p_fmt(tests))),
        ("Failures", html_table(t["failures"]) if len(t["failures"]) else "<p>none</p>"),
        ("Provenance", f"<pre>{escape(json.dumps(record, indent=1, default=str))}</pre>"),
    ]
    folder = write_output_dir(out, tables, record, overwrite=overwrite)
    return write_report(folder / "report.html", title="soars-dose cohort report", blocks=blocks)


_MISSING_RULE = ("A contour a set lacks counts at its worst value (Dice 0, distances "
                 "infinite): the mean ± SD of every metric is over the contours the set has "
                 "(n), the cell says how many were missing, and the median [IQR] includes the "
                 "missing ones at their worst value.")
_NEAR_ZERO_NOTE = ("A percentage is not reported (counted as 'near zero') when its reference "
                   "dose is below the near-zero threshold: 2 % of the prescription when known, "
                   "else 1 Gy (--near-zero-gy, --near-zero-rx-pct), for Diff_mean, Diff_max "
                   "and Diff_D0.03cc alike; n counts the instances in the cell.")
_POOLED_NOTE = ("Pooled ('ALL') tests use the patient as the unit: the per-patient mean of "
                "the metric over its OARs, tested across patients (n = patients; no pooled "
                "test with one patient).")


def _about(t, stats, sets, prov_in) -> str:
    n_pat = stats["patient"].nunique()
    n_fail = len(t["failures"])
    sub = [s for s in sets if s != REFERENCE]
    return (f"<p class='note'>{n_pat} patients ({n_fail} failed), sets: "
            f"{escape(', '.join(sets))}. Each substitute set ({escape(', '.join(sub))}) is compared "
            "with the reference on the reference plan's fixed dose grid: Diff_mean and Diff_max "
            "are eq 6/7 of the SOARS study; contour metrics (Dice, HD95, ASD, surface Dice) are "
            "computed on a common grid against the reference. Missing OARs count as Dice 0 and "
            "infinite distances and are never dropped. " + escape(_POOLED_NOTE) + "</p>")
