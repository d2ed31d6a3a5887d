"""Report tables built from the cohort statistics: Table 5a/5b cells with their n, and the signed bias.

Every function returns a DataFrame that a page can show as it is.

The missing-contour rule (one rule for the whole row)
-----------------------------------------------------
A contour that a set lacks is an OAR instance with the worst value of
every contour metric (Dice 0, surface Dice 0, HD95 and ASD +inf). The
*mean ± SD* of every metric is taken over the contours the set has (so
Dice, HD95 and ASD of one cell row are means over the same instances), and
the cell says how many instances were missing; the *median [IQR]* beside
it is taken over every instance, the missing ones included at their worst
value (so a missing Eye_R pulls the Dice median down and the HD95 median
up alike). Dose differences of a missing contour do not exist; their cells
count it as missing. Percentages suppressed by the near-zero rule
(:mod:`soars_dose.dose.differences`) are counted as ``near zero``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..case import REFERENCE
from ..errors import InputError
from .statistics import ALL, describe, format_number, metric_values

#: Contour metrics of Table 5a and their column labels.
TABLE5A = {"dice": "Dice", "hd95_mm": "HD95 (mm)", "asd_mm": "ASD (mm)"}
#: Dose differences of Table 5b (absolute values, %) and their labels.
TABLE5B = {"abs_diff_mean_pct": "|Diff_mean| (%)", "abs_diff_max_pct": "|Diff_max| (%)",
           "abs_diff_d0_03cc_pct": "|Diff_D0.03cc| (%)"}
#: The set every other substitute set is tested against in Table 5 (a second human reader).
READER = "reader"
#: Metrics of :func:`table5_with_tests`, and the dose each |Diff| is tested on against the reference.
TABLE5_METRICS = ("dice", "hd95_mm", "asd_mm", "abs_diff_mean_pct", "abs_diff_max_pct")
_DOSE_VS_REFERENCE = {"abs_diff_mean_pct": "mean_gy", "abs_diff_max_pct": "max_gy"}
#: Signed differences of the bias table and their labels.
BIAS = {"diff_mean_pct": "Diff_mean (%)", "diff_max_pct": "Diff_max (%)",
        "diff_d0_03cc_pct": "Diff_D0.03cc (%)", "diff_mean_gy": "Diff_mean (Gy)",
        "diff_max_gy": "Diff_max (Gy)", "diff_d0_03cc_gy": "Diff_D0.03cc (Gy)"}


def _fmt(v: float, digits: int) -> str:
    return format_number(v, digits, nan="–")


def _note(n: int, n_missing: int, n_near_zero: int = 0) -> str:
    parts = [f"n {n}"]
    if n_missing:
        parts.append(f"{n_missing} missing")
    if n_near_zero:
        parts.append(f"{n_near_zero} near zero")
    return "(" + ", ".join(parts) + ")"


def cell_values(g: pd.DataFrame, near_zero: pd.Series | None = None) -> dict:
    """The numbers of one Table 5 cell from rows of :func:`metric_values`.

    Parameters
    ----------
    g : DataFrame
        Rows of one (set, roi, metric): ``value`` (NaN: no value, +inf
        allowed) and ``missing``.
    near_zero : Series of bool or None
        Per row, True where a percentage was suppressed by the near-zero
        rule (counted apart from missing contours).

    Returns
    -------
    dict
        ``n`` (instances in the mean: present, finite), ``n_missing``,
        ``n_near_zero``, ``mean``, ``sd`` (of those), ``n_all`` and
        ``median``, ``q1``, ``q3`` over every instance with a value, missing
        contours at their worst value included.
    """
    v = g["value"].to_numpy(float)
    miss = g["missing"].to_numpy(bool)
    nz = near_zero.to_numpy(bool) if near_zero is not None else np.zeros(len(g), bool)
    present = v[~miss]
    d_present = describe(present[np.isfinite(present) | np.isnan(present)])
    d_all = describe(v)
    return {"n": d_present["n"], "n_missing": int(miss.sum()), "n_near_zero": int(nz.sum()),
            "mean": d_present["mean"], "sd": d_present["sd"], "n_all": d_all["n"],
            "median": d_all["median"], "q1": d_all["q1"], "q3": d_all["q3"]}


def _cells(vals: pd.DataFrame, digits: int, near_zero: pd.Series | None) -> tuple[str, str, dict]:
    c = cell_values(vals, near_zero)
    mean = "–" if np.isnan(c["mean"]) else (
        _fmt(c["mean"], digits) + ("" if np.isnan(c["sd"]) else f" ± {_fmt(c['sd'], digits)}"))
    med = "–" if not c["n_all"] else (f"{_fmt(c['median'], digits)} [{_fmt(c['q1'], digits)}, "
                                      f"{_fmt(c['q3'], digits)}]")
    return f"{mean} {_note(c['n'], c['n_missing'], c['n_near_zero'])}", med, c


def _near_zero_flags(stats: pd.DataFrame | None, metric: str) -> pd.DataFrame | None:
    """``patient, set, roi, near_zero`` for a percentage metric (from ``diff_flag``)."""
    if stats is None or "diff_flag" not in stats.columns or "_pct" not in metric:
        return None
    word = metric.replace("abs_", "").replace("diff_", "").replace("_pct", "")
    flag = stats["diff_flag"].fillna("").astype(str)
    out = stats[["patient", "set", "roi"]].copy()
    out["near_zero"] = flag.str.contains(f"reference_{word}_near_zero", regex=False).to_numpy()
    return out


def _substitute_values(vals: pd.DataFrame, stats: pd.DataFrame | None,
                       metric: str) -> pd.DataFrame:
    """``vals`` of the substitute sets only, with ``near_zero`` for a percentage metric."""
    vals = vals[vals["set"] != REFERENCE]
    nz = _near_zero_flags(stats, metric)
    if nz is not None:
        vals = vals.merge(nz, on=["patient", "set", "roi"], how="left")
        vals["near_zero"] = vals["near_zero"].fillna(False).astype(bool)
    return vals


def table5(stats: pd.DataFrame | None, contour_metrics: pd.DataFrame | None,
           metrics: dict[str, str], *, digits: int = 2,
           sets: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 5a/5b: per OAR, for every substitute set and metric, mean ± SD (n) and median [IQR].

    Parameters
    ----------
    stats, contour_metrics : DataFrame or None
        Cohort tables (see :mod:`soars_dose.analysis.statistics`).
    metrics : dict
        Metric name -> column label, e.g. :data:`TABLE5A` or :data:`TABLE5B`.
        Metrics of a table that is None or lacks them are left out.
    digits : int
        Decimals shown.
    sets : sequence of str or None
        Substitute sets in column order (default: order of appearance).

    Returns
    -------
    DataFrame
        One row per OAR (order of appearance), then ``"ALL"``; the column
        ``OAR`` then, per set and metric, ``"<set>: <label> mean ± SD"``
        (e.g. ``"1.63 ± 0.70 (n 5, 1 missing)"``) and ``"<set>: <label>
        median [IQR]"``. The missing-contour rule is the module's.
    """
    blocks, rois = [], []
    for metric, label in metrics.items():
        try:
            vals = metric_values(stats, contour_metrics, metric)
        except InputError:  # a metric of a table not given: the column is left out
            continue
        vals = _substitute_values(vals, stats, metric)
        blocks.append((metric, label, vals))
        rois += vals["roi"].tolist()
    rois = list(dict.fromkeys(rois)) + [ALL]
    order = list(sets) if sets is not None else list(dict.fromkeys(
        s for _, _, v in blocks for s in v["set"]))
    order = [s for s in order if s != REFERENCE]
    out = pd.DataFrame({"OAR": rois})
    for set_name in order:
        for _metric, label, vals in blocks:
            mean_col, med_col = [], []
            sv = vals[vals["set"] == set_name]
            for roi in rois:
                g = sv if roi == ALL else sv[sv["roi"] == roi]
                if not len(g):
                    mean_col.append("")
                    med_col.append("")
                    continue
                m, q, _ = _cells(g, digits, g["near_zero"] if "near_zero" in g else None)
                mean_col.append(m)
                med_col.append(q)
            out[f"{set_name}: {label} mean ± SD"] = mean_col
            out[f"{set_name}: {label} median [IQR]"] = med_col
    return out


def table5_with_tests(stats: pd.DataFrame, contour_metrics: pd.DataFrame | None,
                      tests: pd.DataFrame, sets: Sequence[str], *, digits: int = 2) -> pd.DataFrame:
    """The study's Table 5 in long form: per substitute set and OAR, the cells and the p-values.

    The metric cells are those of :func:`table5` (one rule: mean ± SD (n,
    k missing, k near zero)). ``<metric>_p_vs_reader``: Wilcoxon
    matched-pairs, the set against :data:`READER` (per OAR, Holm-adjusted
    within the metric family); ``mean_gy_p_vs_reference`` /
    ``max_gy_p_vs_reference``: the set's mean / max dose against the
    reference's.
    """
    cells: dict[tuple[str, str, str], str] = {}
    keys: list[tuple[str, str]] = []
    for metric in TABLE5_METRICS:
        try:
            vals = metric_values(stats, contour_metrics, metric)
        except InputError:  # no contour metrics: those cells stay empty
            continue
        vals = _substitute_values(vals, stats, metric)
        for set_name, sv in vals.groupby("set", sort=False):
            for roi in list(dict.fromkeys(sv["roi"])) + [ALL]:
                g = sv if roi == ALL else sv[sv["roi"] == roi]
                keys.append((str(set_name), roi))
                cells[(str(set_name), roi, metric)] = _cells(
                    g, digits, g["near_zero"] if "near_zero" in g else None)[0]
    rows = []
    for set_name, roi in dict.fromkeys(keys):
        row = {"roi": roi, "set": set_name}
        for m in TABLE5_METRICS:
            row[m] = cells.get((set_name, roi, m), "")
            if set_name != READER and READER in sets and len(tests):
                t = tests[(tests["metric"] == m) & (tests["roi"] == roi) &
                          (((tests["set_a"] == set_name) & (tests["set_b"] == READER)) |
                           ((tests["set_a"] == READER) & (tests["set_b"] == set_name)))]
                row[f"{m}_p_vs_reader"] = t["p_holm"].iloc[0] if len(t) else np.nan
            if m in _DOSE_VS_REFERENCE and len(tests):
                dose = _DOSE_VS_REFERENCE[m]
                t = tests[(tests["metric"] == dose) & (tests["roi"] == roi) &
                          (tests["set_a"] == set_name) & (tests["set_b"] == REFERENCE)]
                row[f"{dose}_p_vs_reference"] = t["p_holm"].iloc[0] if len(t) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def dose_bias(stats: pd.DataFrame, *, digits: int = 2) -> pd.DataFrame:
    """Signed bias of every substitute set per OAR: mean and median of each signed difference.

    A set that is systematically cold on the parotids shows a negative mean
    and median Diff_mean there, which \\|Diff\\| hides.

    Parameters
    ----------
    stats : DataFrame
        Cohort ``stats`` table with the difference columns of
        :func:`soars_dose.dose.differences.add_differences`.
    digits : int
        Decimals of the ``text`` column.

    Returns
    -------
    DataFrame
        One row per (set, roi, metric), rois in order of appearance then
        ``"ALL"`` (every instance pooled, descriptive), metrics those of
        :data:`BIAS` present in ``stats``. Columns ``set, roi, metric,
        label, n, n_missing, n_near_zero, mean, sd, median, q1, q3, text``
        (``"mean ± SD; median [q1, q3] (n ...)"``); percentages suppressed
        by the near-zero rule count in ``n_near_zero``, not in ``n``; the Gy
        differences have none.
    """
    rows = []
    for metric, label in BIAS.items():
        if metric not in stats.columns:
            continue
        vals = metric_values(stats, None, metric)
        vals = _substitute_values(vals, stats, metric)
        for set_name in dict.fromkeys(vals["set"]):
            sv = vals[vals["set"] == set_name]
            for roi in list(dict.fromkeys(sv["roi"])) + [ALL]:
                g = sv if roi == ALL else sv[sv["roi"] == roi]
                c = cell_values(g, g["near_zero"] if "near_zero" in g else None)
                d = describe(g.loc[~g["missing"].to_numpy(bool), "value"].to_numpy(float))
                text = (f"{_fmt(d['mean'], digits)}"
                        + ("" if np.isnan(d["sd"]) else f" ± {_fmt(d['sd'], digits)}")
                        + f"; {_fmt(d['median'], digits)} [{_fmt(d['q1'], digits)}, "
                          f"{_fmt(d['q3'], digits)}] {_note(d['n'], c['n_missing'], c['n_near_zero'])}")
                rows.append({"set": set_name, "roi": roi, "metric": metric, "label": label,
                             "n": d["n"], "n_missing": c["n_missing"],
                             "n_near_zero": c["n_near_zero"], "mean": d["mean"], "sd": d["sd"],
                             "median": d["median"], "q1": d["q1"], "q3": d["q3"], "text": text})
    cols = ["set", "roi", "metric", "label", "n", "n_missing", "n_near_zero", "mean", "sd",
            "median", "q1", "q3", "text"]
    return pd.DataFrame(rows, columns=cols)


def dose_bias_display(bias: pd.DataFrame) -> pd.DataFrame:
    """:func:`dose_bias` as a wide table: one row per (set, OAR), one column per difference."""
    if not len(bias):
        return pd.DataFrame(columns=["set", "OAR"])
    wide = bias.pivot_table(index=["set", "roi"], columns="label", values="text",
                            aggfunc="first", sort=False)
    labels = [v for v in BIAS.values() if v in wide.columns]
    return wide[labels].reset_index().rename(columns={"roi": "OAR"})
