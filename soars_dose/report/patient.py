"""The one-patient page: DVH overlays, the dose statistics (eq 6/7) and the contour metrics.

Written by ``soars-dose compare --out DIR`` as ``DIR/report.html``, by
``soars-dose dvh`` (one set: no differences) and by the cohort report for
every patient (``DIR/report/patients/<patient>.html``). Only what makes
sense for one patient is shown: values and differences, no box plots of
single values and no p-values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import constraints as C
from ..case import REFERENCE
from .figures import dvh_widget
from .page import Block, Section, escape, html_table, render_page, write_report
from .slice_viewer import slice_viewer
from .slices import SliceData

#: Columns of the dose table, in order (those present are shown).
DOSE_COLUMNS = ["roi", "set", "status", "volume_cc", "mean_gy", "max_gy", "d0_03cc_gy", "d2_gy",
                "d95_gy", "diff_mean_gy", "diff_mean_pct", "diff_max_gy", "diff_max_pct",
                "diff_flag"]
#: Columns of the contour-metric table, in order.
CONTOUR_COLUMNS = ["roi", "set", "status", "dice", "surface_dice", "tolerance_mm", "hd95_mm",
                   "asd_mm", "hd_mm", "volume_ref_cc", "volume_sub_cc", "volume_diff_pct"]


def _sorted(df: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    order = {s: i for i, s in enumerate(sets)}
    rois = {r: i for i, r in enumerate(dict.fromkeys(df["roi"]))}
    key = df["roi"].map(rois) * 1000 + df["set"].map(order).fillna(999)
    return df.assign(_k=key.to_numpy()).sort_values("_k", kind="stable").drop(columns="_k")


def headline(stats: pd.DataFrame, contour_metrics: "pd.DataFrame | None" = None) -> str:
    """Sentences with the patient's numbers, per substitute set (escaped HTML)."""
    sets = list(dict.fromkeys(stats["set"]))
    ok = stats[stats["status"].isin(["ok", "partial"])]
    lines = []
    ref = ok[ok["set"] == REFERENCE]
    if len(ref) == 0:
        n = len(ok)
        return (f"<p class='headline'>{n} structure(s) evaluated on the dose grid"
                f"{'' if n == len(stats) else f'; {len(stats) - n} not evaluated (see the table)'}"
                ".</p>")
    for s in [x for x in sets if x != REFERENCE]:
        g = ok[ok["set"] == s]
        parts = []
        for col, what in (("diff_max_pct", "max dose"), ("diff_mean_pct", "mean dose")):
            v = g[col].abs().dropna() if col in g else pd.Series(dtype=float)
            if len(v):
                worst = g.loc[v.idxmax()]
                parts.append(f"{int((v > 10).sum())} of {len(v)} OARs differ from the reference by "
                             f"more than 10 % in {what} (largest {float(v.max()):.1f} %, "
                             f"{escape(worst['roi'])})")
        if contour_metrics is not None and len(contour_metrics):
            d = contour_metrics.loc[contour_metrics["set"] == s, "dice"]
            if len(d):
                parts.append(f"median Dice {float(np.nanmedian(d.to_numpy(float))):.2f} over "
                             f"{len(d)} OARs")
        lines.append(f"<li><b>{escape(s)}</b>: {'; '.join(parts) or 'no OAR evaluated'}.</li>")
    missing = stats[~stats["status"].isin(["ok", "partial"])]
    tail = (f"<p class='note'>{len(missing)} structure instance(s) not evaluated (status in the "
            "table).</p>") if len(missing) else ""
    return f"<ul class='headline'>{''.join(lines)}</ul>{tail}"


def patient_blocks(stats: pd.DataFrame, dvh: pd.DataFrame,
                   contour_metrics: "pd.DataFrame | None" = None, *, patient: str,
                   constraints=None, prescription_gy: "float | None" = None,
                   uid: str = "dvh", slices: "SliceData | None" = None,
                   slice_note: str = "") -> list[Block]:
    """The sections of one patient's page (see the module docstring).

    ``slices`` (from :func:`soars_dose.report.slices.build_slice_data`)
    adds the slice viewer; ``slice_note`` says why there is none.
    """
    # no DVH at all (every structure refused) leaves an empty table without columns
    dvh_sets = dvh["set"] if "set" in dvh.columns else []
    sets = list(dict.fromkeys([*stats["set"], *dvh_sets]))
    blocks: list[Block] = [Section("Summary", headline(stats, contour_metrics))]
    if len(dvh):
        blocks += [Section("DVHs", "<p class='note'>Tick several OARs to overlay them; every "
                                   "set is drawn in its colour (reference solid and thicker). "
                                   "Red marks: the OAR's dose constraints.</p>"),
                   dvh_widget(dvh, stats, title=f"patient {patient}", uid=uid,
                              constraints=constraints, prescription_gy=prescription_gy)]
    if slices is not None and slices.oars:
        blocks += [Section("Slices: CT, dose and contours",
                           "<p class='note'>Choose an OAR: the views jump to its centroid; "
                           "every set's contour of it is drawn in the set's colour.</p>"),
                   slice_viewer(slices, stats, contour_metrics, uid=f"{uid}-slices",
                                prescription_gy=prescription_gy)]
    elif slice_note:
        blocks.append(Section("Slices: CT, dose and contours",
                              f"<p class='note'>{escape(slice_note)}</p>"))
    dose = _sorted(stats, sets).reindex(columns=[c for c in DOSE_COLUMNS if c in stats.columns])
    note = ("<p class='note'>Diff mean and Diff max: eq 6/7 of the SOARS study, the set's value "
            "minus the reference's, in Gy and in % of the reference's; the percentage is left "
            "empty where the reference dose is near zero.</p>") if REFERENCE in sets else ""
    blocks.append(Section("Dose statistics per OAR", note + html_table(dose)))
    if contour_metrics is not None and len(contour_metrics):
        cm = _sorted(contour_metrics, sets).reindex(
            columns=[c for c in CONTOUR_COLUMNS if c in contour_metrics.columns])
        blocks.append(Section("Contour metrics against the reference",
                              "<p class='note'>A missing OAR has Dice 0 and infinite "
                              "distances (∞).</p>" + html_table(cm)))
    if constraints:
        ev = C.evaluate_constraints(stats, constraints)
        flips = C.constraint_flips(ev) if REFERENCE in sets else pd.DataFrame()
        cols = ["set", "roi", "constraint", "reference_value", "value", "reference_passed",
                "passed", "direction", "source"]
        body = (html_table(flips.reindex(columns=cols)) if len(flips) else
                "<p>No set changes a constraint's verdict against the reference.</p>")
        ev_cols = ["roi", "set", "constraint", "value", "passed", "status", "source"]
        blocks.append(Section("Clinical constraints", body))
        blocks.append(Section("All constraint evaluations", html_table(ev.reindex(columns=ev_cols)),
                              collapsed=True))
    bad = stats[~stats["status"].isin(["ok", "partial"])]
    if len(bad):
        blocks.append(Section("Not evaluated", html_table(bad.reindex(
            columns=["roi", "set", "roi_original", "status", "message"])), collapsed=True))
    return blocks


def render_patient_page(stats: pd.DataFrame, dvh: pd.DataFrame,
                        contour_metrics: "pd.DataFrame | None" = None, *, patient: str,
                        title: str | None = None, intro: str = "", constraints=None,
                        prescription_gy: "float | None" = None,
                        slices: "SliceData | None" = None, slice_note: str = "") -> bytes:
    """The page's bytes (for writing inside an atomically renamed folder)."""
    blocks = patient_blocks(stats, dvh, contour_metrics, patient=patient,
                            constraints=constraints, prescription_gy=prescription_gy,
                            slices=slices, slice_note=slice_note)
    return render_page(title or f"soars-dose: patient {patient}", blocks, intro=intro)


def write_patient_page(path: "str | Path", stats: pd.DataFrame, dvh: pd.DataFrame,
                       contour_metrics: "pd.DataFrame | None" = None, *, patient: str,
                       title: str | None = None, intro: str = "", constraints=None,
                       prescription_gy: "float | None" = None, overwrite: bool = False,
                       slices: "SliceData | None" = None) -> Path:
    """Write one patient's page atomically (see :func:`patient_blocks`)."""
    blocks = patient_blocks(stats, dvh, contour_metrics, patient=patient,
                            constraints=constraints, prescription_gy=prescription_gy,
                            slices=slices)
    return write_report(path, title=title or f"soars-dose: patient {patient}", blocks=blocks,
                        intro=intro, overwrite=overwrite)
