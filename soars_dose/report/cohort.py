"""The cohort report: the study's tables and figures from a cohort output folder.

``soars-dose report DIR`` reads ``DIR/cohort/*.parquet`` (written by
``soars-dose cohort``), computes the statistics and writes

    DIR/report/report.html             the cohort page (plotly.js inlined once)
    DIR/report/patients/<patient>.html one page per patient, linked from it
    DIR/report/<table>.csv|.parquet    every table the pages show
    DIR/report/provenance.json

all renamed into place together (a crash leaves no half page). The cohort
page holds a table of contents; the headline in sentences (how many OAR
instances per set differ by more than 10 % in max and mean dose, median
Dice, constraint flips); the study's Table 5 for this cohort (contour and
dosimetric accuracy per OAR and set, with Wilcoxon p-values against the
reader set and against the reference); box plots per OAR; scatter plots of
contour accuracy against dose difference (the study's Supplementary
Figs 2-3); DVH bands across the cohort (median, 25-75 % and 5-95 % per OAR
and set); the patient list with links; clinical constraint flips; the
revision effort when a revision file is given; and, folded, the long raw
tables (per-OAR threshold counts, correlations, all paired tests),
failures and provenance. Each patient page (:mod:`.patient`) holds that
patient's DVHs (any OARs at once, % or cc, Gy or % of prescription,
constraints marked), dose statistics and contour metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from ..analysis import constraints as C
from ..analysis import revisions as R
from ..analysis import statistics as S
from ..analysis import tables as T
from ..case import REFERENCE
from ..cohort.manifest import patient_dir
from ..console import option
from ..dose.differences import NEAR_ZERO_GY, add_differences
from ..errors import InputError
from ..outputs import check_writable, provenance, read_table, write_output_dir
from .figures import box_figure, dvh_band_figure, scatter_figure
from .page import Section, escape, html_table, render_page
from .patient import render_patient_page
from .slices import SliceData, from_npz

#: Tables a cohort folder must hold.
REQUIRED = ("stats", "dvh", "contour_metrics")


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
    tab5 = T.table5_with_tests(stats, cm, tests, sets)
    tab5a = T.table5(stats, cm, T.TABLE5A, sets=sets)
    tab5b = T.table5(stats, cm, T.TABLE5B, sets=sets)
    bias = T.dose_bias(stats)
    pages = _patient_pages(stats, dvh, cm, t["patients"], cons, cohort_dir)
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
    csv = lambda name: f"<a href='{name}.csv'>{name}.csv</a>"  # noqa: E731
    blocks: list = [
        Section("Headline", headline_text(thresholds, cm, flips, sub_sets)),
        Section("About this cohort", _about(t, stats, sets, prov_in)),
        Section("Table 5a: contour accuracy per OAR",
                "<p class='note'>Mean ± SD (n), median [IQR], per set against the reference. "
                + escape(_MISSING_RULE)
                + f" Full tables: {csv('table5a')}, {csv('table5')}, {csv('summary_by_oar')}.</p>"
                + html_table(tab5a)),
        Section("Table 5b: dosimetric accuracy per OAR",
                "<p class='note'>|Diff| in % (eq 6/7): mean ± SD (n), median [IQR]. "
                + escape(_NEAR_ZERO_NOTE) + " Paired tests (Wilcoxon matched-pairs, two-sided, "
                "Holm-adjusted within each metric; per-OAR tests need at least 6 patients): "
                f"{csv('table5')} and 'All paired tests' below. " + escape(_POOLED_NOTE) + "</p>"
                + html_table(tab5b)),
        Section("Signed bias per OAR",
                "<p class='note'>Mean ± SD and median [IQR] of the signed Diff in % and Gy. "
                "Negative: the set gives a lower dose than the reference contours (a set cold "
                f"on an OAR). Gy differences are always given. {csv('dose_bias')}.</p>"
                + html_table(T.dose_bias_display(bias))),
        Section("Dose differences per OAR"),
        box_figure(dose, "abs_diff_mean_pct", "|Diff mean| (%) per OAR", sets),
        box_figure(dose, "abs_diff_max_pct", "|Diff max| (%) per OAR", sets),
    ]
    if len(cm):
        blocks += [Section("Contour accuracy and its dose effect"),
                   box_figure(cm, "dice", "Dice per OAR", sets),
                   scatter_figure(merged, "dice", "abs_diff_mean_pct",
                                  "Dice vs |Diff mean| (%)", sets),
                   scatter_figure(merged, "hd95_mm", "abs_diff_max_pct",
                                  "HD95 (mm) vs |Diff max| (%)", sets)]
    if len(dvh):
        blocks += [Section("DVH bands across the cohort",
                           "<p class='note'>Per OAR (menu) and set: the median cumulative DVH "
                           "(line), its 25-75 % (darker) and 5-95 % (lighter) bands over "
                           "patients, on a common 0.5 Gy dose axis. Each patient's own DVHs "
                           "are on the patient pages.</p>"),
                   dvh_band_figure(dvh, sets)]
    blocks.append(Section("Patients", _patient_links(stats)))
    blocks.append(Section("Clinical constraints: verdicts that flip against the reference",
                          (html_table(flips.reindex(columns=[
                              "patient", "set", "roi", "constraint", "reference_value", "value",
                              "direction", "source"])) if len(flips) else
                           "<p>No substitute set flips a constraint.</p>")
                          + f"<p class='note'>Every evaluation: {csv('constraints')}.</p>"))
    if len(unpaired):
        blocks.append(Section("Between institutions (Mann-Whitney U)",
                              html_table(unpaired) + f"<p class='note'>{csv('unpaired_tests')}</p>",
                              collapsed=True))
    if len(rev_summary):
        blocks += [Section("Revision effort", html_table(rev_summary)),
                   Section("Editing time saved", html_table(saved))]
    blocks += [
        Section("Raw tables", "<p class='note'>Long tables, folded; every one is also a CSV "
                              "file beside this page (full precision in the Parquet twins).</p>"),
        Section("Share of OAR instances over 10 % and 30 %, per OAR",
                html_table(thresholds) + f"<p class='note'>{csv('threshold_counts')}</p>",
                collapsed=True, level=3),
        Section("Spearman correlations of contour accuracy and dose difference",
                html_table(corr)
                + "<p class='note'>p exact (all n! pairings) below n = 10, else the t "
                  "approximation (column p_method); p_holm (Holm, family-wise) and p_bh "
                  "(Benjamini-Hochberg) adjust within each contour-metric / dose-metric "
                  "family. The pooled rows ignore that OARs of one patient are related: "
                  f"descriptive. {csv('correlations')}</p>",
                collapsed=True, level=3),
        Section("All paired tests", html_table(tests) + f"<p class='note'>{csv('paired_tests')}</p>",
                collapsed=True, level=3),
        Section("Failures", html_table(t["failures"]) if len(t["failures"]) else "<p>none</p>",
                collapsed=not len(t["failures"]), level=3),
        Section("Provenance", f"<pre>{escape(json.dumps(record, indent=1, default=str))}</pre>",
                collapsed=True, level=3),
    ]
    files = {"report.html": lambda: render_page("soars-dose cohort report", blocks), **pages}
    folder = write_output_dir(out, tables, record, overwrite=overwrite, files=files)
    return folder / "report.html"


def _slices_of(cohort_dir: Path, patient: str) -> "tuple[SliceData | None, str]":
    """The patient's ``slices.npz`` (written by the cohort run), or why there is none."""
    folder = patient_dir(cohort_dir, patient)
    path = folder / "slices.npz"
    if not path.exists():
        why = ""
        try:
            why = json.loads((folder / "provenance.json").read_text(encoding="utf-8")).get(
                "slice_viewer", "")
        except (OSError, ValueError):
            pass
        if why == "slices.npz":  # written by the run, gone since
            why = (f"{path}: missing (the cohort run wrote it); rerun the cohort with "
                   f"{option('resume')} after deleting that patient's folder")
        return None, why or (f"{path}: no slice viewer data (a cohort run before the viewer, "
                             "or no CT in the manifest)")
    try:
        return from_npz(path), ""
    except ValueError as exc:  # a damaged file costs the page its viewer, not the report
        return None, (f"{path}: cannot be read ({exc}); rerun the cohort "
                      f"with {option('resume')} after deleting that patient's folder")


def _patient_pages(stats, dvh, cm, patients, cons, cohort_dir: Path) -> dict:
    """``patients/<id>.html`` -> a function rendering that patient's page."""
    rx = {}
    if len(patients) and "prescription_gy" in patients.columns:
        rx = {p: pd.to_numeric(v, errors="coerce") for p, v in
              zip(patients["patient"], patients["prescription_gy"])}
    pages = {}
    for patient in dict.fromkeys(stats["patient"]):
        def render(patient=patient):
            sel = (lambda df: df[df["patient"] == patient] if len(df) else df)
            intro = ("<p><a href='../report.html'>&larr; cohort report</a></p>")
            v = rx.get(patient)
            slices, note = _slices_of(cohort_dir, str(patient))
            return render_patient_page(sel(stats), sel(dvh), sel(cm), patient=str(patient),
                                       intro=intro, constraints=cons,
                                       prescription_gy=float(v) if v is not None and pd.notna(v)
                                       else None, slices=slices, slice_note=note)
        pages[f"patients/{patient_file(patient)}"] = render
    return pages


def patient_file(patient) -> str:
    """The page's file name of a patient (ids are checked by the cohort runner; quoted anyway)."""
    return quote(str(patient), safe="") + ".html"


def _patient_links(stats: pd.DataFrame) -> str:
    ok = stats[stats["status"].isin(["ok", "partial"])]
    rows = []
    for patient in dict.fromkeys(stats["patient"]):
        g = ok[ok["patient"] == patient]
        worst = g["diff_max_pct"].abs().max() if "diff_max_pct" in g else np.nan
        href = "patients/" + quote(patient_file(patient), safe="")
        cell = f"<a href='{escape(href)}'>{escape(patient)}</a>"
        rows.append(f"<tr><td>{cell}</td><td>{g['roi'].nunique()}</td>"
                    f"<td>{'' if pd.isna(worst) else f'{worst:.1f}'}</td></tr>")
    return ("<p class='note'>One page per patient: DVHs of every set with units and "
            "constraints, the dose statistics and contour metrics.</p><div class='scroll'><table>"
            "<thead><tr><th>Patient</th><th>OARs evaluated</th><th>Largest |Diff max| (%)</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def headline_text(thresholds: pd.DataFrame, cm: pd.DataFrame, flips: pd.DataFrame,
                  sub_sets: list[str]) -> str:
    """The headline in sentences with numbers, from the threshold, contour and constraint tables."""
    items = []
    if len(thresholds):
        a = thresholds[thresholds["roi"] == S.ALL]
        for metric, what in (("abs_diff_max_pct", "max dose"), ("abs_diff_mean_pct", "mean dose")):
            parts = []
            for s in sub_sets:
                r10 = a[(a["set"] == s) & (a["metric"] == metric) & (a["threshold_pct"] == 10)]
                r30 = a[(a["set"] == s) & (a["metric"] == metric) & (a["threshold_pct"] == 30)]
                if not len(r10):
                    continue
                r = r10.iloc[0]
                n30 = int(r30["n_over"].iloc[0]) if len(r30) else 0
                parts.append(f"{escape(s)} {int(r['n_over'])} of {int(r['n_evaluated'])}"
                             + (f" ({n30} by more than 30 %)" if n30 else ""))
            if parts:
                items.append(f"<li>{what.capitalize()}: OAR instances differing from the "
                             f"reference by more than 10 %: {'; '.join(parts)}.</li>")
    if len(cm):
        med = [f"{escape(s)} {float(np.nanmedian(cm.loc[cm['set'] == s, 'dice'].to_numpy(float))):.2f}"
               for s in sub_sets if (cm["set"] == s).any()]
        items.append(f"<li>Median Dice against the reference: {', '.join(med)}.</li>")
    n = {s: int((flips["set"] == s).sum()) for s in sub_sets} if len(flips) else {}
    items.append("<li>Clinical constraint verdicts that flip against the reference: "
                 + (", ".join(f"{escape(s)} {k}" for s, k in n.items()) if n else "none") + ".</li>")
    return (f"<ul class='headline'>{''.join(items)}</ul><p class='note'>Instances whose "
            "reference dose is near zero are not counted in the percentages (see the per-OAR "
            "table under 'Raw tables').</p>")


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
