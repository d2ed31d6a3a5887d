"""Cohort statistics of contour accuracy and dose differences (tidy tables in, tidy tables out).

Inputs
------
``stats``
    The dose table of :func:`soars_dose.dose.compare.compare` over a cohort:
    one row per patient x set x roi with ``status``, the dose statistics
    (``mean_gy``, ``max_gy``, ``d95_gy``...) and the eq 6/7 differences
    (``diff_mean_pct``, ``diff_max_pct``, ``diff_flag``...; NaN on reference
    rows).
``contour_metrics``
    One row per patient x substitute set x roi, each compared with the
    reference: ``status``, ``dice``, ``surface_dice``, ``hd_mm``,
    ``hd95_mm``, ``asd_mm``...

Conventions (every function below follows them)
------------------------------------------------
Valid dose rows
    Only rows whose ``status`` is ``"ok"`` or ``"partial"`` carry dose
    values; the other statuses (``missing``, ``empty``, ``outside_grid``,
    ``duplicate``, ``error``...) count as *missing values*: they are never
    read, and each table says how many were left out.
Metric names
    A metric is a column of ``contour_metrics`` (``dice``, ``hd95_mm``...)
    or of ``stats`` (``mean_gy``, ``d95_gy``, ``diff_mean_pct``...);
    ``abs_<column>`` is the absolute value of a ``stats`` column, e.g.
    ``abs_diff_mean_pct`` = \\|Diff_mean\\| (eq 6). A name found in both tables
    is read from ``contour_metrics``.
Missing contours
    A contour absent from a substitute set (``status == "missing_in_set"``
    in ``contour_metrics``) keeps the worst-case values the metrics table
    gives it (Dice 0, surface Dice 0, distances +inf) and is *included*
    in the statistics; ``n_missing`` counts it. Metrics that are NaN
    (``no_reference``) are left out.
Infinite values
    +inf is a valid value (a distance to a contour that does not exist).
    It is kept out of the mean and the SD but counted (``n_inf``); for
    medians, quantiles and every rank-based test it is ordered above every
    finite value (ties with another +inf; -inf, symmetrically, below).
    Quantiles interpolate linearly (numpy's default ``"linear"`` method):
    interpolating between a finite value and +inf gives +inf, between -inf
    and +inf gives NaN (undefined).
Pooled ``"ALL"`` rows
    Besides one row per OAR, every table has a row with ``roi == "ALL"``.
    The OARs of one patient are not independent, so the pooled *tests*
    (:func:`paired_tests`, :func:`unpaired_tests`) keep the patient as the
    unit: each patient contributes the mean of the metric over its OARs
    (in a paired test, over the OARs present in both sets) and the test
    runs across patients (``n`` = patients; with one patient there is no
    pooled test, ``reason == "single_patient"``). This is the
    summary-measure approach to clustered data (Bland JM, Altman DG.
    Calculating correlation coefficients with repeated observations: Part 2
    - correlation between subjects. BMJ 1995;310:633; Altman DG, Bland JM.
    Units of analysis. BMJ 1997;314:1874). The descriptive pooled rows
    (:func:`summary_by_oar`, :func:`threshold_counts`,
    :func:`correlations`) pool every OAR instance; the pooled correlation
    ignores the clustering and is descriptive.
Ordering
    Sets and OARs appear in the order of their first appearance in the
    input tables.
"""

from __future__ import annotations

import itertools
import re
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from ..case import REFERENCE
from ..errors import InputError

#: Statuses of ``stats`` rows that carry dose values.
VALID_STATUS = ("ok", "partial")
#: Contour-accuracy metrics summarised and tested by default.
CONTOUR_METRICS = ("dice", "hd95_mm", "asd_mm", "surface_dice")
#: Absolute eq 6/7 differences (%).
DOSE_DIFF_METRICS = ("abs_diff_mean_pct", "abs_diff_max_pct")
#: Metrics of :func:`summary_by_oar`.
SUMMARY_METRICS = CONTOUR_METRICS + DOSE_DIFF_METRICS
#: Metrics of :func:`paired_tests` by default.
PAIRED_METRICS = CONTOUR_METRICS + DOSE_DIFF_METRICS + ("mean_gy", "max_gy")
#: Label of the pooled rows.
ALL = "ALL"
#: Below this many instances a Spearman p-value is exact (full permutation).
EXACT_SPEARMAN_BELOW = 10

_KEYS = ["patient", "set", "roi"]


# --------------------------------------------------------------------------
# descriptive statistics with +inf
# --------------------------------------------------------------------------

def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """``a + t (b - a)`` with the infinity rules of the module docstring."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if t == 0:
        return a.copy()
    with np.errstate(invalid="ignore"):
        out = a + t * (b - a)
    ainf, binf = np.isinf(a), np.isinf(b)
    out = np.where(ainf & ~binf, a, out)
    out = np.where(binf & ~ainf, b, out)
    out = np.where(ainf & binf, np.where(a == b, a, np.nan), out)
    return out


def _quantile_sorted(xs: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` along the last axis of an array sorted along that axis.

    Linear interpolation between order statistics at ``h = (n - 1) q``
    (numpy's ``"linear"`` method), infinities as in :func:`_lerp`. No NaN.
    """
    n = xs.shape[-1]
    h = (n - 1) * q
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    return _lerp(xs[..., lo], xs[..., hi], h - lo)


def _q(x: np.ndarray, q: float) -> float:
    """Quantile of a 1-D array without NaN (NaN if empty)."""
    if x.size == 0:
        return np.nan
    return float(_quantile_sorted(np.sort(x), q))


def describe(values: Iterable[float]) -> dict:
    """Mean, SD, median and quartiles of values that may contain NaN and +inf.

    Parameters
    ----------
    values : array_like of float
        NaN means "no value" and is dropped; +inf (-inf) is a value larger
        (smaller) than every finite one.

    Returns
    -------
    dict
        ``n``: values that are not NaN (infinite ones included);
        ``n_inf``: infinite values among them; ``n_nan``: NaN dropped;
        ``mean``, ``sd``: mean and sample SD (``ddof=1``) of the
        ``n - n_inf`` *finite* values (NaN without any, SD NaN with fewer
        than two);
        ``median``, ``q1``, ``q3``: 50th, 25th and 75th percentiles of all
        ``n`` values with infinities ordered beyond every finite value
        (linear interpolation; an interpolation that touches +inf is +inf,
        so the median of ``[1, 2, inf, inf]`` is +inf and of
        ``[1, 2, 3, inf]`` 2.5); NaN when ``n == 0``.

    Examples
    --------
    >>> d = describe([1.0, 2.0, 3.0, np.inf])
    >>> d["mean"], d["median"], d["n"], d["n_inf"]
    (2.0, 2.5, 4, 1)
    """
    x = np.asarray(list(values) if not hasattr(values, "__array__") else values,
                   dtype=float).ravel()
    nan = np.isnan(x)
    x = x[~nan]
    fin = x[np.isfinite(x)]
    xs = np.sort(x)
    return {
        "n": int(x.size),
        "n_inf": int(np.isinf(x).sum()),
        "n_nan": int(nan.sum()),
        "mean": float(fin.mean()) if fin.size else np.nan,
        "sd": float(fin.std(ddof=1)) if fin.size >= 2 else np.nan,
        "median": float(_quantile_sorted(xs, 0.5)) if xs.size else np.nan,
        "q1": float(_quantile_sorted(xs, 0.25)) if xs.size else np.nan,
        "q3": float(_quantile_sorted(xs, 0.75)) if xs.size else np.nan,
    }


def _finite_surrogate(x: np.ndarray) -> np.ndarray:
    """Replace +-inf by +-(2 max|finite| + 1): same ranks, so rank tests are exact."""
    x = np.array(x, dtype=float)
    fin = np.isfinite(x)
    big = 2.0 * (float(np.abs(x[fin]).max()) if fin.any() else 0.0) + 1.0
    x[x == np.inf] = big
    x[x == -np.inf] = -big
    return x


def _mean_sd(d: dict, digits: int) -> str:
    """``"mean ± SD"`` text of a :func:`describe` dict (the mean alone without an SD)."""
    if np.isnan(d["mean"]):
        return ""
    if np.isnan(d["sd"]):
        return format_number(d["mean"], digits)
    return f"{format_number(d['mean'], digits)} ± {format_number(d['sd'], digits)}"


def format_number(v: float, digits: int, nan: str = "") -> str:
    """``v`` with ``digits`` decimals; ``inf``/``-inf`` written out, ``nan`` for NaN."""
    if np.isnan(v):
        return nan
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


# --------------------------------------------------------------------------
# reading metric values out of the tables
# --------------------------------------------------------------------------

def _check_table(table: pd.DataFrame, name: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    lacking = [c for c in _KEYS + ["status"] if c not in table.columns]
    if lacking:
        raise InputError(f"{name} table lacks the column(s) {lacking}; it needs "
                         f"{_KEYS + ['status']} (one row per patient x set x roi)")
    dup = table.duplicated(_KEYS, keep=False)
    if dup.any():
        first = table.loc[dup, _KEYS].drop_duplicates().head(3).to_dict("records")
        raise InputError(f"{name} table has {int(dup.sum())} rows sharing a (patient, set, roi), "
                         f"e.g. {first}; keep one row per patient x set x roi")


def _is_stats(table: pd.DataFrame) -> bool:
    return "mean_gy" in table.columns or "diff_mean_pct" in table.columns


def _metric_column(table: pd.DataFrame, metric: str) -> tuple[str, bool] | None:
    """(column, take absolute value) of ``metric`` in ``table``, or None."""
    if metric in table.columns:
        return metric, False
    if metric.startswith("abs_") and metric[4:] in table.columns:
        return metric[4:], True
    return None


def _table_values(table: pd.DataFrame, metric: str, is_stats: bool) -> pd.DataFrame | None:
    """``patient, set, roi, metric, value, missing`` of ``metric`` from one table, or None."""
    found = _metric_column(table, metric)
    if found is None:
        return None
    col, absolute = found
    v = pd.to_numeric(table[col], errors="coerce").astype(float)
    if absolute:
        v = v.abs()
    out = table[_KEYS].copy()
    if is_stats:
        v = v.where(table["status"].isin(VALID_STATUS))
        if col.startswith("diff_"):
            v = v.where(table["set"] != REFERENCE)
        out["missing"] = (table["status"] == "missing").to_numpy()
    else:
        out["missing"] = (table["status"] == "missing_in_set").to_numpy()
    out.insert(3, "metric", metric)
    out.insert(4, "value", v.to_numpy())
    return out.reset_index(drop=True)


def metric_values(stats: pd.DataFrame | None, contour_metrics: pd.DataFrame | None,
                  metric: str) -> pd.DataFrame:
    """One metric as a long table ``patient, set, roi, metric, value, missing``.

    Parameters
    ----------
    stats, contour_metrics : DataFrame or None
        The cohort tables (see the module docstring); either may be None.
    metric : str
        A column of ``contour_metrics`` (looked up first) or of ``stats``,
        or ``abs_<stats column>``.

    Returns
    -------
    DataFrame
        ``value`` is NaN where a row carries no value (invalid dose status,
        difference on a reference row, ``no_reference`` contour metric);
        ``missing`` is True where the set lacks the contour (``missing`` in
        ``stats``, ``missing_in_set`` in ``contour_metrics``).

    Raises
    ------
    InputError
        When neither table has the metric, or a table lacks ``patient, set,
        roi, status`` or repeats a (patient, set, roi).
    """
    for table, name in ((contour_metrics, "contour_metrics"), (stats, "stats")):
        if table is None:
            continue
        _check_table(table, name)
        out = _table_values(table, metric, is_stats=(name == "stats"))
        if out is not None:
            return out
    have = sorted(set().union(*[t.columns for t in (stats, contour_metrics) if t is not None]))
    raise InputError(f"metric {metric!r} is not a column of the given tables "
                     f"(nor 'abs_' + one); columns: {have}")


def _outer(left: pd.DataFrame, right: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Outer join on unique ``keys`` that keeps the order of first appearance (left, then right)."""
    union = pd.concat([left[keys], right[keys]], ignore_index=True).drop_duplicates()
    return union.merge(left, on=keys, how="left").merge(right, on=keys, how="left")


#: Columns of a ``contour_metrics`` table.
_CONTOUR_COLUMNS = {"dice", "surface_dice", "tolerance_mm", "hd_mm", "hd95_mm", "asd_mm",
                    "apl_mm", "volume_diff_cc", "volume_diff_pct"}
#: Names of ``stats`` columns (and their ``abs_`` forms).
_STATS_RE = re.compile(r"^(abs_)?(volume_cc|volume_in_grid_cc|coverage|mean_gy|max_gy|min_gy|"
                       r"d\d+(_\d+)?(cc)?_gy|v\d+(_\d+)?gy_(pct|cc)|diff_(mean|max)_(pct|gy))$")


def _skip_metric(stats, contour_metrics, metric: str) -> bool:
    """True when ``metric`` belongs to a table that was not given (None): it is then skipped.

    A name found in neither given table and belonging to no known table is
    not skipped, so that :func:`metric_values` reports it.
    """
    tables = [t for t in (stats, contour_metrics) if t is not None]
    if any(_metric_column(t, metric) is not None for t in tables):
        return False
    return ((contour_metrics is None and metric in _CONTOUR_COLUMNS)
            or (stats is None and bool(_STATS_RE.match(metric))))


def _order(values: pd.Series) -> list:
    return list(dict.fromkeys(values.tolist()))


def _groups(vals: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(roi, rows) per OAR in order of appearance, then ("ALL", every row)."""
    out = [(roi, vals[vals["roi"] == roi]) for roi in _order(vals["roi"])]
    out.append((ALL, vals))
    return out


def _adjust(df: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm and BH adjusted p within each ``family`` (rows with NaN p are left out)."""
    df["p_holm"] = np.nan
    df["p_bh"] = np.nan
    for _, idx in df.groupby("family", sort=False).groups.items():
        p = df.loc[idx, "p"]
        ok = p.notna()
        if ok.any():
            vals = p[ok].to_numpy(dtype=float)
            df.loc[p[ok].index, "p_holm"] = multipletests(vals, alpha=alpha, method="holm")[1]
            df.loc[p[ok].index, "p_bh"] = multipletests(vals, alpha=alpha, method="fdr_bh")[1]
    for col, src in (("significant", "p"), ("significant_holm", "p_holm"),
                     ("significant_bh", "p_bh")):
        s = pd.array(df[src] < alpha, dtype="boolean")
        s[df[src].isna().to_numpy()] = pd.NA
        df[col] = s
    return df


# --------------------------------------------------------------------------
# summary per OAR
# --------------------------------------------------------------------------

def summary_by_oar(stats: pd.DataFrame | None, contour_metrics: pd.DataFrame | None,
                   metrics: Sequence[str] = SUMMARY_METRICS, digits: int = 2) -> pd.DataFrame:
    """Mean +- SD and median [IQR] of each metric per substitute set and OAR.

    Parameters
    ----------
    stats, contour_metrics : DataFrame or None
        Cohort tables (module docstring). Metrics whose table is None are
        skipped.
    metrics : sequence of str
        Default: Dice, HD95 (mm), ASD (mm), surface Dice, \\|Diff_mean\\| %
        and \\|Diff_max\\| % (``abs_diff_mean_pct``, ``abs_diff_max_pct``).
    digits : int
        Decimals of the text columns.

    Returns
    -------
    DataFrame
        One row per (set, roi, metric), rois in order of appearance then
        ``"ALL"`` (every instance of the set pooled). The reference set is
        left out. Columns:

        ``set, roi, metric``;
        ``n_instances``: rows of the set and OAR in the metric's table;
        ``n_missing``: instances whose contour the set lacks (included with
        their worst-case values for contour metrics, without a value for
        dose differences);
        ``n``, ``n_inf``, ``mean``, ``sd``, ``median``, ``q1``, ``q3``: as in
        :func:`describe` (``n_instances - n`` instances had no value);
        ``mean_sd``: ``"mean ± SD"`` text; ``median_iqr``: ``"median [q1, q3]"``
        text (``inf`` written out).
    """
    rows = []
    for metric in metrics:
        if _skip_metric(stats, contour_metrics, metric):
            continue
        vals = metric_values(stats, contour_metrics, metric)
        vals = vals[vals["set"] != REFERENCE]
        for set_name in _order(vals["set"]):
            for roi, g in _groups(vals[vals["set"] == set_name]):
                d = describe(g["value"].to_numpy())
                d.pop("n_nan")
                rows.append({
                    "set": set_name, "roi": roi, "metric": metric,
                    "n_instances": int(len(g)), "n_missing": int(g["missing"].sum()), **d,
                    "mean_sd": _mean_sd(d, digits),
                    "median_iqr": (f"{format_number(d['median'], digits)} [{format_number(d['q1'], digits)}, "
                                   f"{format_number(d['q3'], digits)}]" if d["n"] else ""),
                })
    cols = ["set", "roi", "metric", "n_instances", "n_missing", "n", "n_inf", "mean", "sd",
            "median", "q1", "q3", "mean_sd", "median_iqr"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------
# paired tests
# --------------------------------------------------------------------------

def _default_pairs(sets: list[str]) -> list[tuple[str, str]]:
    subs = [s for s in sets if s != REFERENCE]
    out = [(s, REFERENCE) for s in subs] if REFERENCE in sets else []
    return out + list(itertools.combinations(subs, 2))


def _paired_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` where two equal infinities give 0 (a tie) instead of NaN."""
    with np.errstate(invalid="ignore"):
        d = a - b
    return np.where(np.isinf(a) & (a == b), 0.0, d)


def _median_rows(samples: np.ndarray) -> np.ndarray:
    """Median of every row (infinity rules of the module docstring)."""
    return _quantile_sorted(np.sort(samples, axis=1), 0.5)


def bootstrap_median_ci(d: np.ndarray, n_boot: int = 2000, ci: float = 0.95,
                        seed: int | None = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the median of ``d``.

    Parameters
    ----------
    d : ndarray
        The sample (no NaN; +-inf allowed and ordered as in the module
        docstring).
    n_boot : int
        Bootstrap resamples ``B``, each ``len(d)`` draws with replacement.
    ci : float
        Coverage; the interval is the ``(1-ci)/2`` and ``(1+ci)/2``
        percentiles of the ``B`` medians (linear interpolation).
    seed : int or None
        Seed of a fresh ``numpy.random.default_rng``: the interval depends
        only on ``d``, ``n_boot``, ``ci`` and ``seed``.

    Returns
    -------
    (low, high) : tuple of float
        NaN for an empty sample, or when some resample median is undefined
        (both -inf and +inf at its middle).
    """
    d = np.asarray(d, dtype=float)
    n = d.size
    if n == 0:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, int(4_000_000 // n))
    meds = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        meds.append(_median_rows(d[idx]))
    m = np.concatenate(meds)
    if np.isnan(m).any():
        return np.nan, np.nan
    m.sort()
    return (float(_quantile_sorted(m, (1 - ci) / 2)),
            float(_quantile_sorted(m, (1 + ci) / 2)))


def _rank_biserial_paired(d: np.ndarray) -> float:
    """(R+ - R-) / (R+ + R-) over the non-zero differences, NaN without any."""
    nz = d[d != 0]
    if nz.size == 0:
        return np.nan
    r = sps.rankdata(np.abs(_finite_surrogate(nz)))
    rp, rm = r[nz > 0].sum(), r[nz < 0].sum()
    return float((rp - rm) / (rp + rm))


def _paired_row(a: np.ndarray, b: np.ndarray, *, zero_method: str, min_pairs: int,
                n_boot: int, ci: float, seed: int | None, method: str = "auto") -> dict:
    complete = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[complete], b[complete]
    d = _paired_difference(a, b)
    n, n_zero = int(d.size), int((d == 0).sum())
    row = {"n_pairs": n, "n_dropped": int((~complete).sum()), "n_zero": n_zero,
           "median_a": _q(a, 0.5), "median_b": _q(b, 0.5), "median_diff": _q(d, 0.5)}
    row["ci_low"], row["ci_high"] = bootstrap_median_ci(d, n_boot, ci, seed)
    row["statistic"], row["p"] = np.nan, np.nan
    row["rank_biserial"] = _rank_biserial_paired(d)
    if n == 0:
        reason = "no_pairs"
    elif n_zero == n:
        reason = "all_differences_zero"
    elif n < min_pairs:
        reason = "too_few_pairs"
    elif zero_method == "wilcox" and n - n_zero < min_pairs:
        reason = "too_few_nonzero_differences"
    else:
        reason = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.wilcoxon(_finite_surrogate(d), zero_method=zero_method,
                               alternative="two-sided", method=method)
        row["statistic"], row["p"] = float(res.statistic), float(res.pvalue)
    row["reason"] = reason
    return row


def _patient_mean(v: np.ndarray) -> float:
    """Mean of one patient's values, +inf when any is +inf (NaN with both infinities)."""
    v = v[~np.isnan(v)]
    if v.size == 0:
        return np.nan
    with np.errstate(invalid="ignore"):
        return float(v.mean())


def _patient_means_paired(g: pd.DataFrame) -> pd.DataFrame:
    """Per patient, the means of ``a`` and ``b`` over the OARs with a value in both sets."""
    both = g[g["a"].notna() & g["b"].notna()]
    rows = [{"patient": p, "a": _patient_mean(h["a"].to_numpy(float)),
             "b": _patient_mean(h["b"].to_numpy(float))}
            for p, h in both.groupby("patient", sort=False)]
    return pd.DataFrame(rows, columns=["patient", "a", "b"])


def paired_tests(stats: pd.DataFrame | None, contour_metrics: pd.DataFrame | None = None,
                 metrics: Sequence[str] = PAIRED_METRICS,
                 pairs: Sequence[tuple[str, str]] | None = None, *,
                 alpha: float = 0.05, zero_method: str = "wilcox", n_boot: int = 2000,
                 ci: float = 0.95, seed: int | None = 0, min_pairs: int = 6,
                 method: str = "auto") -> pd.DataFrame:
    """Wilcoxon matched-pairs signed-rank tests between contour sets, per OAR and pooled.

    Parameters
    ----------
    stats, contour_metrics : DataFrame or None
        Cohort tables (module docstring).
    metrics : sequence of str
        Metric names (module docstring). Default: Dice, HD95, ASD, surface
        Dice, \\|Diff_mean\\| %, \\|Diff_max\\| % (these exist for substitute
        sets only, so substitute sets are compared with one another, e.g.
        soars vs reader) and ``mean_gy``, ``max_gy`` (which the reference
        has too, so every set is also compared with the reference).
        Metrics of a table that was not given (None) are skipped.
    pairs : sequence of (set_a, set_b) or None
        Pairs to compare, for every metric both sets have values of (other
        metrics are skipped for that pair). Default, per metric among the
        sets with at least one value: ``(set, "reference")`` for every
        substitute set, then every pair of substitute sets in order of
        appearance.
    alpha : float
        Two-tailed significance level (0.05): ``significant`` is ``p < alpha``.
    zero_method : {"wilcox", "pratt", "zsplit"}
        Passed to :func:`scipy.stats.wilcoxon`. Default ``"wilcox"``: pairs
        with a zero difference (ties) are dropped from the test (they are
        still counted in ``n_pairs``/``n_zero`` and used for the median and
        its CI).
    n_boot, ci, seed : int, float, int
        Percentile bootstrap of the median difference (B = 2000 resamples of
        the pairs, 95 %); each test draws from a fresh generator seeded with
        ``seed``, so a row does not depend on the other rows.
    min_pairs : int
        Fewest pairs (and, with ``"wilcox"``, non-zero differences) tested;
        below it ``p`` is NaN and ``reason`` says why (6 is the smallest
        sample whose exact two-sided p can fall below 0.05).
    method : {"auto", "exact", "asymptotic"}
        Passed to :func:`scipy.stats.wilcoxon` (see ``p`` below). With
        ``"auto"`` a sample of at most 13 pairs with ties or zeros gets an
        exact permutation p, which costs about a second per test; pass
        ``"asymptotic"`` for speed on large tables.

    Returns
    -------
    DataFrame
        One row per (metric, set_a, set_b, roi), rois in order of appearance
        then ``"ALL"``. Columns:

        ``metric, set_a, set_b, roi``;
        ``n_pairs``: patients with a value in both sets, matched on
        (patient, roi); pooled (``"ALL"``): patients, each contributing the
        mean of its OARs present in both sets (module docstring);
        ``n_dropped``: instances present in only one set or with NaN on
        either side (never imputed; pooled: patients without such an OAR);
        ``n_zero``: zero differences;
        ``median_a``, ``median_b``: medians of each set over the pairs;
        ``median_diff``: median of ``a - b`` (positive: ``set_a`` higher);
        ``ci_low``, ``ci_high``: bootstrap CI of ``median_diff``;
        ``statistic``, ``p``: Wilcoxon statistic (scipy's, the smaller of the
        signed-rank sums for a two-sided test) and two-sided p. scipy's
        ``method="auto"``: the exact null distribution for up to 50 pairs
        without ties or zeros, otherwise an exact permutation distribution
        up to 13 pairs and the tie-corrected normal approximation (no
        continuity correction) above;
        ``rank_biserial``: matched-pairs rank-biserial correlation
        ``r = (R+ - R-) / (R+ + R-)``, ``R+``/``R-`` the rank sums of the
        positive/negative differences, ranking \\|a - b\\| over the non-zero
        differences (average ranks for ties), in [-1, 1], positive when
        ``set_a`` tends to be higher; NaN when every difference is zero;
        ``reason``: ``""`` when tested, else ``no_pairs``,
        ``all_differences_zero``, ``too_few_pairs``,
        ``too_few_nonzero_differences`` or, pooled, ``single_patient``
        (``p`` is then NaN);
        ``family``: the multiple-comparison family;
        ``p_holm``, ``p_bh``: Holm and Benjamini-Hochberg adjusted p
        (:func:`statsmodels.stats.multitest.multipletests`) within the
        family;
        ``significant``, ``significant_holm``, ``significant_bh``: p,
        p_holm, p_bh < ``alpha`` (nullable booleans; NA when untested).

    Notes
    -----
    *Family.* One metric is one family: all per-OAR rows of that metric,
    over every OAR and every pair of sets (``family == "<metric> per
    OAR"``). The pooled rows of a metric form a family of their own
    (``"<metric> ALL"``, over the pairs), as they test the pooled
    hypothesis on the same data. Untested rows (p NaN) are not counted.

    *Infinite values.* ``a - b`` with one side +inf is +-inf and ranks as
    the largest \\|difference\\|; two equal infinities are a zero difference.
    """
    rows = []
    for metric in metrics:
        if _skip_metric(stats, contour_metrics, metric):
            continue
        vals = metric_values(stats, contour_metrics, metric)
        has = vals[vals["value"].notna()]
        sets = _order(has["set"])
        metric_pairs = [tuple(p) for p in pairs] if pairs is not None else _default_pairs(sets)
        for set_a, set_b in metric_pairs:
            if set_a not in sets or set_b not in sets or set_a == set_b:
                continue
            va = vals.loc[vals["set"] == set_a, ["patient", "roi", "value"]]
            vb = vals.loc[vals["set"] == set_b, ["patient", "roi", "value"]]
            joined = _outer(va.rename(columns={"value": "a"}), vb.rename(columns={"value": "b"}),
                            ["patient", "roi"])
            for roi, g in _groups(joined):
                row = {"metric": metric, "set_a": set_a, "set_b": set_b, "roi": roi}
                if roi == ALL:
                    g = _patient_means_paired(g)
                row.update(_paired_row(g["a"].to_numpy(float), g["b"].to_numpy(float),
                                       zero_method=zero_method, min_pairs=min_pairs,
                                       n_boot=n_boot, ci=ci, seed=seed, method=method))
                if roi == ALL and row["n_pairs"] == 1:
                    row.update(statistic=np.nan, p=np.nan, reason="single_patient")
                row["family"] = f"{metric} {'ALL' if roi == ALL else 'per OAR'}"
                rows.append(row)
    cols = ["metric", "set_a", "set_b", "roi", "n_pairs", "n_dropped", "n_zero", "median_a",
            "median_b", "median_diff", "ci_low", "ci_high", "statistic", "p", "rank_biserial",
            "reason", "family"]
    out = pd.DataFrame(rows, columns=cols)
    return _adjust(out, alpha)


# --------------------------------------------------------------------------
# unpaired tests
# --------------------------------------------------------------------------

def unpaired_tests(table: pd.DataFrame, group_column: str, metric: str,
                   patients: pd.DataFrame | None = None, *, alpha: float = 0.05,
                   min_per_group: int = 3) -> pd.DataFrame:
    """Mann-Whitney U tests (two-sided) between groups of patients, per set and OAR.

    Parameters
    ----------
    table : DataFrame
        A ``stats`` or a ``contour_metrics`` table (told apart by the
        ``mean_gy``/``diff_mean_pct`` columns of ``stats``).
    group_column : str
        Column that defines the groups (e.g. ``"institution"``): a column of
        ``table`` or else of ``patients`` (joined on ``patient``). Rows
        without a group are left out.
    metric : str
        Metric name (module docstring), e.g. ``"dice"`` or
        ``"abs_diff_mean_pct"``.
    patients : DataFrame or None
        Patient metadata (``patient`` plus columns such as ``institution``).
    alpha : float
        Two-tailed significance level.
    min_per_group : int
        Fewest values per group tested (3; with 3 and 3 the smallest exact
        two-sided p is 0.1).

    Returns
    -------
    DataFrame
        One row per (set, roi, group pair): sets with at least one value of
        the metric, rois in order of appearance then ``"ALL"``, group pairs
        every two groups in sorted order. Columns:

        ``metric, set, roi, group_column, group_a, group_b``;
        ``n_a``, ``n_b``: values in each group (pooled: patients, each the
        mean over its OARs); ``n_dropped``: rows of both groups without a
        value;
        ``median_a``, ``median_b``;
        ``statistic``: U of group a (scipy's ``mannwhitneyu(x_a, x_b)``),
        ``p``: two-sided p (scipy ``method="auto"``: exact for small samples
        without ties, else the tie-corrected normal approximation with
        continuity correction);
        ``rank_biserial``: ``2 U_a / (n_a n_b) - 1``, in [-1, 1], positive
        when group a tends to be higher (= P(a > b) - P(a < b));
        ``reason``: ``""`` when tested, else ``too_few`` or
        ``all_values_equal`` (``p`` NaN);
        ``family``, ``p_holm``, ``p_bh``, ``significant``,
        ``significant_holm``, ``significant_bh``: as in
        :func:`paired_tests`; the family is this metric over every set, OAR
        and group pair (``"<metric> per OAR"``), the pooled rows apart
        (``"<metric> ALL"``).
    """
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    name = "stats" if _is_stats(table) else "contour_metrics"
    vals = metric_values(table if name == "stats" else None,
                         table if name == "contour_metrics" else None, metric)
    if group_column in table.columns:
        groups = table[group_column].to_numpy()
    elif patients is not None and group_column in patients.columns:
        if "patient" not in patients.columns:
            raise InputError("patients table lacks the column 'patient'")
        if patients["patient"].duplicated().any():
            dups = patients.loc[patients["patient"].duplicated(), "patient"].tolist()[:3]
            raise InputError(f"patients table lists patient(s) {dups} more than once")
        lookup = patients.set_index("patient")[group_column]
        groups = vals["patient"].map(lookup).to_numpy()
    else:
        raise InputError(f"group column {group_column!r} is neither in the table nor in the "
                         "patients table; pass patients= with that column")
    vals = vals.assign(group=groups)
    vals = vals[pd.notna(vals["group"])]
    labels = sorted(vals["group"].unique().tolist(), key=str)
    rows = []
    for set_name in _order(vals.loc[vals["value"].notna(), "set"]):
        for roi, g in _groups(vals[vals["set"] == set_name]):
            if roi == ALL:  # the patient is the unit (module docstring)
                g = pd.DataFrame([{"patient": p, "group": h["group"].iloc[0],
                                   "value": _patient_mean(h["value"].to_numpy(float))}
                                  for p, h in g.groupby("patient", sort=False)],
                                 columns=["patient", "group", "value"])
            for ga, gb in itertools.combinations(labels, 2):
                xa = g.loc[g["group"] == ga, "value"].to_numpy(float)
                xb = g.loc[g["group"] == gb, "value"].to_numpy(float)
                n_drop = int(np.isnan(xa).sum() + np.isnan(xb).sum())
                xa, xb = xa[~np.isnan(xa)], xb[~np.isnan(xb)]
                row = {"metric": metric, "set": set_name, "roi": roi,
                       "group_column": group_column, "group_a": ga, "group_b": gb,
                       "n_a": int(xa.size), "n_b": int(xb.size), "n_dropped": n_drop,
                       "median_a": _q(xa, 0.5), "median_b": _q(xb, 0.5),
                       "statistic": np.nan, "p": np.nan, "rank_biserial": np.nan}
                both = _finite_surrogate(np.concatenate([xa, xb]))
                sa, sb = both[:xa.size], both[xa.size:]
                if xa.size < min_per_group or xb.size < min_per_group:
                    row["reason"] = "too_few"
                elif np.unique(both).size == 1:
                    row["reason"] = "all_values_equal"
                    row["rank_biserial"] = 0.0
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        res = sps.mannwhitneyu(sa, sb, alternative="two-sided")
                    u = float(res.statistic)
                    row.update(statistic=u, p=float(res.pvalue),
                               rank_biserial=2.0 * u / (xa.size * xb.size) - 1.0, reason="")
                row["family"] = f"{metric} {'ALL' if roi == ALL else 'per OAR'}"
                rows.append(row)
    cols = ["metric", "set", "roi", "group_column", "group_a", "group_b", "n_a", "n_b",
            "n_dropped", "median_a", "median_b", "statistic", "p", "rank_biserial", "reason",
            "family"]
    return _adjust(pd.DataFrame(rows, columns=cols), alpha)


# --------------------------------------------------------------------------
# threshold counts
# --------------------------------------------------------------------------

def threshold_counts(stats: pd.DataFrame, thresholds: Sequence[float] = (10, 30)) -> pd.DataFrame:
    """How many OAR instances have \\|Diff_mean\\| or \\|Diff_max\\| above each threshold.

    Parameters
    ----------
    stats : DataFrame
        Cohort ``stats`` table.
    thresholds : sequence of float
        Thresholds in percent; an instance counts when \\|diff\\| is
        *strictly* greater than the threshold (10.0 % exactly is not over
        10 %).

    Returns
    -------
    DataFrame
        One row per (substitute set, roi, metric, threshold), rois in order
        of appearance then ``"ALL"``. Columns:

        ``set, roi, metric`` (``abs_diff_mean_pct`` or
        ``abs_diff_max_pct``), ``threshold_pct``;
        ``n_rows``: rows of the set and OAR;
        ``n_not_evaluable``: rows without a dose (status other than ok or
        partial, e.g. a missing contour) or without a reference OAR
        (``diff_flag == "no_reference"``);
        ``n_near_zero``: evaluable rows whose percentage is NaN because the
        reference dose is ~0 Gy (eq 6/7 undefined), excluded;
        ``n_evaluated`` = ``n_rows - n_not_evaluable - n_near_zero``;
        ``n_over``: evaluated instances with \\|diff\\| > threshold;
        ``pct_over``: ``100 n_over / n_evaluated`` (NaN when nothing was
        evaluated).
    """
    _check_table(stats, "stats")
    lacking = [c for c in ("diff_mean_pct", "diff_max_pct") if c not in stats.columns]
    if lacking:
        raise InputError(f"stats table lacks the column(s) {lacking}; compute it with "
                         "soars_dose.dose.compare.compare")
    sub = stats[stats["set"] != REFERENCE]
    absval = {c: pd.to_numeric(sub[c], errors="coerce").abs() for c in ("diff_mean_pct",
                                                                       "diff_max_pct")}
    flag = sub["diff_flag"].fillna("").astype(str) if "diff_flag" in sub else pd.Series(
        "", index=sub.index)
    evaluable = sub["status"].isin(VALID_STATUS) & (flag != "no_reference")
    rows = []
    for set_name in _order(sub["set"]):
        in_set = sub["set"] == set_name
        rois = [(r, in_set & (sub["roi"] == r)) for r in _order(sub.loc[in_set, "roi"])]
        for roi, mask in rois + [(ALL, in_set)]:
            for col in ("diff_mean_pct", "diff_max_pct"):
                v = absval[col]
                ev = mask & evaluable
                near = ev & v.isna()
                ok = ev & v.notna()
                n_ev = int(ok.sum())
                for t in thresholds:
                    n_over = int((ok & (v > t)).sum())
                    rows.append({
                        "set": set_name, "roi": roi, "metric": f"abs_{col}",
                        "threshold_pct": float(t), "n_rows": int(mask.sum()),
                        "n_not_evaluable": int((mask & ~evaluable).sum()),
                        "n_near_zero": int(near.sum()), "n_evaluated": n_ev,
                        "n_over": n_over,
                        "pct_over": 100.0 * n_over / n_ev if n_ev else np.nan,
                    })
    cols = ["set", "roi", "metric", "threshold_pct", "n_rows", "n_not_evaluable", "n_near_zero",
            "n_evaluated", "n_over", "pct_over"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------

def correlations(stats: pd.DataFrame, contour_metrics: pd.DataFrame,
                 contour: Sequence[str] = CONTOUR_METRICS,
                 dose: Sequence[str] = DOSE_DIFF_METRICS, min_n: int = 4, *,
                 alpha: float = 0.05, exact_below: int = EXACT_SPEARMAN_BELOW) -> pd.DataFrame:
    """Spearman rank correlation of contour accuracy with dose differences.

    Parameters
    ----------
    stats, contour_metrics : DataFrame
        Cohort tables (module docstring).
    contour : sequence of str
        Contour metrics (columns of ``contour_metrics``).
    dose : sequence of str
        Dose metrics, default \\|Diff_mean\\| % and \\|Diff_max\\| %.
    min_n : int
        Fewest complete instances for a coefficient (4).
    alpha : float
        Level of the ``significant*`` columns.
    exact_below : int
        Below this many instances (10) the p-value is exact: the share of
        all ``n!`` pairings of the y values with the x values whose \|rho\|
        is at least the observed one (the permutation test of
        :func:`scipy.stats.permutation_test` with ``permutation_type=
        "pairings"``, enumerated in full; ties kept as they are). From
        ``exact_below`` on, scipy's t approximation.

    Returns
    -------
    DataFrame
        One row per (substitute set, roi, contour metric, dose metric), rois
        in order of appearance then ``"ALL"``; instances matched on
        (patient, set, roi). Columns:

        ``set, roi, contour_metric, dose_metric``;
        ``n``: instances with both values; ``n_dropped``: instances with
        only one of them (e.g. a missing contour has a Dice of 0 but no
        dose);
        ``rho``: :func:`scipy.stats.spearmanr` (average ranks for ties;
        +inf ranked above every finite value); ``p``: two-sided;
        ``p_method``: ``"exact_permutation"`` (n < ``exact_below``) or
        ``"t_approximation"``;
        ``reason``: ``""``, ``too_few`` (n < ``min_n``) or
        ``constant_input`` (one variable takes a single value), with rho and
        p NaN;
        ``family``, ``p_holm``, ``p_bh``, ``significant``,
        ``significant_holm``, ``significant_bh``: as in
        :func:`paired_tests`; a family is one (contour metric, dose metric)
        pair over every set and OAR (``"<contour> ~ <dose> per OAR"``), the
        pooled rows apart (``"... ALL"``); Holm controls the family-wise
        error, BH the false discovery rate.
    """
    rows = []
    for cm in contour:
        cv = metric_values(None, contour_metrics, cm)
        for dm in dose:
            dv = metric_values(stats, None, dm)
            m = _outer(cv[_KEYS + ["value"]].rename(columns={"value": "value_c"}),
                       dv[_KEYS + ["value"]].rename(columns={"value": "value_d"}), _KEYS)
            m = m[m["set"] != REFERENCE]
            for set_name in _order(m["set"]):
                for roi, g in _groups(m[m["set"] == set_name]):
                    x = g["value_c"].to_numpy(float)
                    y = g["value_d"].to_numpy(float)
                    ok = ~np.isnan(x) & ~np.isnan(y)
                    x, y = _finite_surrogate(x[ok]), _finite_surrogate(y[ok])
                    row = {"set": set_name, "roi": roi, "contour_metric": cm, "dose_metric": dm,
                           "n": int(ok.sum()), "n_dropped": int((~ok).sum()),
                           "rho": np.nan, "p": np.nan}
                    if row["n"] < min_n:
                        row["reason"] = "too_few"
                    elif np.unique(x).size < 2 or np.unique(y).size < 2:
                        row["reason"] = "constant_input"
                    else:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            res = sps.spearmanr(x, y)
                        rho = float(res.statistic)
                        if row["n"] < exact_below:
                            row.update(rho=rho, p=spearman_exact_p(x, y),
                                       p_method="exact_permutation")
                        else:
                            row.update(rho=rho, p=float(res.pvalue), p_method="t_approximation")
                        row["reason"] = ""
                    row["family"] = f"{cm} ~ {dm} {'ALL' if roi == ALL else 'per OAR'}"
                    rows.append(row)
    cols = ["set", "roi", "contour_metric", "dose_metric", "n", "n_dropped", "rho", "p",
            "p_method", "reason", "family"]
    return _adjust(pd.DataFrame(rows, columns=cols), alpha)


_PERMUTATIONS: dict[int, np.ndarray] = {}


def spearman_exact_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Exact two-sided permutation p of Spearman's rho for a small sample.

    Parameters
    ----------
    x, y : sequence of float
        Paired values (no NaN; ties allowed), at most 10 pairs (10! pairings).

    Returns
    -------
    float
        The share of all ``n!`` pairings of ``y`` with ``x`` whose \|rho\|
        is at least the observed \|rho\| (a relative tolerance of 1e-12
        keeps equal values equal). Without ties and rho = +-1 this is
        ``2 / n!``, e.g. 0.0167 for n = 5.
    """
    rx = sps.rankdata(np.asarray(x, float))
    ry = sps.rankdata(np.asarray(y, float))
    n = rx.size
    if n > 10:
        raise InputError(f"spearman_exact_p enumerates n! pairings; n = {n} is too large (<= 10)")
    if n not in _PERMUTATIONS:
        _PERMUTATIONS[n] = np.array(list(itertools.permutations(range(n))), dtype=np.int8)
    perm = ry[_PERMUTATIONS[n]]
    # rho is the Pearson correlation of the ranks: only sum(rx * ry_perm) varies
    cx = rx - rx.mean()
    cy = perm - perm.mean(axis=1, keepdims=True)
    denom = np.sqrt((cx ** 2).sum() * (cy[0] ** 2).sum())
    rhos = cy @ cx / denom
    obs = abs(float((cx * (ry - ry.mean())).sum() / denom))
    return float(np.mean(np.abs(rhos) >= obs * (1 - 1e-12)))
