"""Cohort statistics on hand-made tables whose answers are known."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from soars_dose.analysis.statistics import (
    bootstrap_median_ci,
    correlations,
    describe,
    metric_values,
    paired_tests,
    spearman_exact_p,
    summary_by_oar,
    threshold_counts,
    unpaired_tests,
)
from soars_dose.errors import InputError

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def stats_row(patient, set_name, roi, mean_gy, max_gy=None, status="ok", ref=None, **extra):
    """One ``stats`` row; with ``ref=(mean, max)`` the eq 6/7 differences are filled in."""
    max_gy = mean_gy * 1.5 if max_gy is None and mean_gy is not None else max_gy
    row = {"patient": patient, "set": set_name, "roi": roi, "status": status,
           "mean_gy": mean_gy if status in ("ok", "partial") else np.nan,
           "max_gy": max_gy if status in ("ok", "partial") else np.nan,
           "diff_mean_pct": np.nan, "diff_max_pct": np.nan, "diff_flag": ""}
    if ref is not None and status in ("ok", "partial"):
        rm, rx = ref
        row["diff_mean_pct"] = 100 * (mean_gy - rm) / rm if rm >= 0.05 else np.nan
        row["diff_max_pct"] = 100 * (max_gy - rx) / rx if rx >= 0.05 else np.nan
    row.update(extra)
    return row


def paired_cohort(diffs_by_roi, n_extra_missing=0):
    """reference mean_gy 20 Gy; soars = 20 + d exactly (one patient per difference)."""
    rows = []
    for roi, diffs in diffs_by_roi.items():
        for i, d in enumerate(diffs):
            p = f"P{i:02d}"
            rows.append(stats_row(p, "reference", roi, 20.0, 30.0))
            rows.append(stats_row(p, "soars", roi, 20.0 + d, 30.0, ref=(20.0, 30.0)))
        for j in range(n_extra_missing):
            p = f"M{j:02d}"
            rows.append(stats_row(p, "reference", roi, 20.0, 30.0))
            rows.append(stats_row(p, "soars", roi, None, status="missing"))
    return pd.DataFrame(rows)


def row_of(df, **where):
    m = np.ones(len(df), bool)
    for k, v in where.items():
        m &= (df[k] == v).to_numpy()
    assert m.sum() == 1, (where, int(m.sum()))
    return df[m].iloc[0]


# --------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------

def test_describe_finite_matches_numpy():
    x = np.array([4.0, 1.0, 3.0, 2.0])
    d = describe(x)
    assert d["n"] == 4 and d["n_inf"] == 0 and d["n_nan"] == 0
    assert d["mean"] == pytest.approx(2.5)
    assert d["sd"] == pytest.approx(np.sqrt(5 / 3))          # sample SD, ddof=1
    assert (d["q1"], d["median"], d["q3"]) == pytest.approx((1.75, 2.5, 3.25))
    rng = np.random.default_rng(3)
    y = rng.normal(size=37)
    d = describe(y)
    assert [d["q1"], d["median"], d["q3"]] == pytest.approx(np.percentile(y, [25, 50, 75]),
                                                            abs=1e-12)


def test_describe_inf_kept_out_of_mean_but_ordered_last():
    d = describe([1.0, 2.0, 3.0, np.inf, np.nan])
    assert (d["n"], d["n_inf"], d["n_nan"]) == (4, 1, 1)
    assert d["mean"] == pytest.approx(2.0) and d["sd"] == pytest.approx(1.0)
    assert d["median"] == pytest.approx(2.5)     # between 2 and 3: the inf is the largest
    assert d["q1"] == pytest.approx(1.75)
    assert d["q3"] == np.inf                     # interpolating towards inf gives inf
    assert describe([1.0, np.inf, np.inf, 2.0])["median"] == np.inf
    e = describe([np.inf, np.inf])
    assert np.isnan(e["mean"]) and e["median"] == np.inf and e["n_inf"] == 2


def test_describe_empty():
    d = describe([np.nan])
    assert d["n"] == 0 and d["n_nan"] == 1
    assert all(np.isnan(d[k]) for k in ("mean", "sd", "median", "q1", "q3"))


# --------------------------------------------------------------------------
# paired tests
# --------------------------------------------------------------------------

def test_wilcoxon_hand_checked_p_and_scipy():
    # A: differences 1..5 and -6. T- = 6; of the 2^6 = 64 sign patterns, 14 give
    # a negative-rank sum <= 6 ({}, {1}, {2}, {3}, {1,2}, {4}, {1,3}, {5}, {1,4},
    # {2,3}, {6}, {1,5}, {2,4}, {1,2,3}): two-sided exact p = 2 * 14 / 64.
    # B: all six positive: p = 2 / 64.
    da, db = [1, 2, 3, 4, 5, -6], [1, 2, 3, 4, 5, 6]
    out = paired_tests(paired_cohort({"A": da, "B": db}), metrics=("mean_gy",))
    a = row_of(out, roi="A", set_a="soars", set_b="reference")
    assert a["p"] == pytest.approx(28 / 64, abs=1e-12)
    assert a["p"] == pytest.approx(sps.wilcoxon(da).pvalue, abs=1e-12)
    assert a["statistic"] == 6.0
    assert a["n_pairs"] == 6 and a["n_dropped"] == 0 and a["reason"] == ""
    assert a["median_diff"] == pytest.approx(2.5)
    assert a["rank_biserial"] == pytest.approx((15 - 6) / 21)   # (R+ - R-) / (R+ + R-)
    b = row_of(out, roi="B", set_a="soars", set_b="reference")
    assert b["p"] == pytest.approx(2 / 64, abs=1e-12)
    assert b["rank_biserial"] == pytest.approx(1.0)
    assert bool(b["significant"]) and not bool(a["significant"])
    pooled = row_of(out, roi="ALL", set_a="soars", set_b="reference")
    # the patient is the unit: per-patient mean differences (da + db) / 2 = 1, 2, 3, 4, 5, 0;
    # the zero is dropped (wilcox), 5 non-zero differences are too few to test
    assert pooled["n_pairs"] == 6 and pooled["n_zero"] == 1
    assert pooled["reason"] == "too_few_nonzero_differences" and np.isnan(pooled["p"])


def test_pooled_test_uses_per_patient_means():
    # 7 patients x 3 OARs; the pooled test must equal scipy's Wilcoxon on the hand-made
    # per-patient means, not on the 21 instances
    rng = np.random.default_rng(4)
    d = rng.normal(0.8, 1.0, size=(7, 3)).round(3)
    out = paired_tests(paired_cohort({r: list(d[:, k]) for k, r in enumerate("ABC")}),
                       metrics=("mean_gy",))
    pooled = row_of(out, roi="ALL", set_a="soars", set_b="reference")
    per_patient = d.mean(axis=1)              # soars mean - reference mean, per patient
    assert pooled["n_pairs"] == 7
    assert pooled["p"] == pytest.approx(sps.wilcoxon(per_patient).pvalue, abs=1e-12)
    assert pooled["p"] != pytest.approx(sps.wilcoxon(d.ravel()).pvalue, abs=1e-6)
    assert pooled["median_diff"] == pytest.approx(np.median(per_patient))


def test_pooled_test_needs_more_than_one_patient():
    out = paired_tests(paired_cohort({r: [v] for r, v in zip("ABCDEFG", range(1, 8))}),
                       metrics=("mean_gy",), min_pairs=1)
    pooled = row_of(out, roi="ALL", set_a="soars", set_b="reference")
    assert pooled["n_pairs"] == 1 and pooled["reason"] == "single_patient"
    assert np.isnan(pooled["p"])


def test_missing_pairs_dropped_and_counted():
    out = paired_tests(paired_cohort({"A": [1, 2, 3, 4, 5, -6]}, n_extra_missing=2),
                       metrics=("mean_gy",))
    a = row_of(out, roi="A")
    assert a["n_pairs"] == 6 and a["n_dropped"] == 2
    assert a["p"] == pytest.approx(28 / 64, abs=1e-12)


def test_small_and_all_zero_samples_give_nan_with_reason():
    out = paired_tests(paired_cohort({"few": [1, 2, 3], "zero": [0] * 8,
                                      "fewnz": [0, 0, 0, 1, 2, 3, 4, 5]}),
                       metrics=("mean_gy",))
    few, zero = row_of(out, roi="few"), row_of(out, roi="zero")
    fewnz = row_of(out, roi="fewnz")
    assert np.isnan(few["p"]) and few["reason"] == "too_few_pairs"
    assert np.isnan(zero["p"]) and zero["reason"] == "all_differences_zero"
    assert zero["median_diff"] == 0 and zero["n_zero"] == 8
    assert np.isnan(fewnz["p"]) and fewnz["reason"] == "too_few_nonzero_differences"
    assert fewnz["median_diff"] == pytest.approx(1.5)   # zeros stay in the median
    assert pd.isna(few["significant"]) and pd.isna(few["p_holm"])
    # with Pratt's method the zeros are ranked, and 8 pairs are enough
    pratt = paired_tests(paired_cohort({"fewnz": [0, 0, 0, 1, 2, 3, 4, 5]}),
                         metrics=("mean_gy",), zero_method="pratt")
    r = row_of(pratt, roi="fewnz")
    assert r["reason"] == ""
    assert r["p"] == pytest.approx(sps.wilcoxon([0, 0, 0, 1, 2, 3, 4, 5],
                                                zero_method="pratt").pvalue)


def test_holm_and_bh_within_one_family():
    rng = np.random.default_rng(7)
    diffs = {f"R{k}": list(np.round(rng.normal(loc=k * 0.4, size=9), 3)) for k in range(5)}
    out = paired_tests(paired_cohort(diffs), metrics=("mean_gy", "max_gy"))
    fam = out[(out["metric"] == "mean_gy") & (out["roi"] != "ALL")]
    assert set(fam["family"]) == {"mean_gy per OAR"}
    p = fam["p"].to_numpy()
    assert np.allclose(fam["p_holm"], multipletests(p, method="holm")[1])
    assert np.allclose(fam["p_bh"], multipletests(p, method="fdr_bh")[1])
    # Holm by hand: sorted p_(i) * (m - i), running maximum, capped at 1
    order = np.argsort(p)
    m = len(p)
    holm = np.minimum(1, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    back = np.empty(m)
    back[order] = holm
    assert np.allclose(fam["p_holm"], back)
    # BH by hand: p_(i) * m / i, running minimum from the top
    bh = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    back[order] = np.minimum(bh, 1)
    assert np.allclose(fam["p_bh"], back)
    # the pooled rows and the other metric are separate families
    assert row_of(out, metric="mean_gy", roi="ALL")["p_holm"] == pytest.approx(
        row_of(out, metric="mean_gy", roi="ALL")["p"])


def test_holm_bh_known_values():
    # statsmodels on a hand-checked vector (0.01, 0.04, 0.03)
    assert np.allclose(multipletests([0.01, 0.04, 0.03], method="holm")[1], [0.03, 0.06, 0.06])
    assert np.allclose(multipletests([0.01, 0.04, 0.03], method="fdr_bh")[1], [0.03, 0.04, 0.04])


def test_bootstrap_ci_deterministic_vectorised_and_covers_truth():
    rng = np.random.default_rng(11)
    d = rng.normal(loc=2.0, scale=1.0, size=80)        # true median difference 2
    lo, hi = bootstrap_median_ci(d, n_boot=2000, seed=5)
    assert lo < 2.0 < hi and hi - lo < 1.0
    assert (lo, hi) == bootstrap_median_ci(d, n_boot=2000, seed=5)
    assert (lo, hi) != bootstrap_median_ci(d, n_boot=2000, seed=6)
    # same resamples done one at a time give the same interval
    g = np.random.default_rng(5)
    idx = g.integers(0, d.size, size=(2000, d.size))
    meds = np.array([np.median(d[i]) for i in idx])
    assert (lo, hi) == pytest.approx(tuple(np.percentile(meds, [2.5, 97.5])), abs=1e-12)


def test_paired_ci_in_table_contains_median_and_is_seeded():
    diffs = {"A": list(np.linspace(-1, 5, 15))}
    t1 = paired_tests(paired_cohort(diffs), metrics=("mean_gy",), seed=1)
    t2 = paired_tests(paired_cohort(diffs), metrics=("mean_gy",), seed=1)
    a = row_of(t1, roi="A")
    assert a["ci_low"] <= a["median_diff"] <= a["ci_high"]
    assert a["median_diff"] == pytest.approx(2.0)
    pd.testing.assert_frame_equal(t1, t2)


def _contours(values_by_set, roi="Parotid_L", status=None):
    rows = []
    for s, vals in values_by_set.items():
        for i, v in enumerate(vals):
            st = (status or {}).get((s, i), "ok")
            rows.append({"patient": f"P{i:02d}", "set": s, "roi": roi, "status": st,
                         "dice": v, "hd95_mm": v, "asd_mm": v, "surface_dice": v})
    return pd.DataFrame(rows)


def test_default_pairs_and_inf_ranked_largest():
    # hd95 of soars is inf (missing contour) for one patient: difference +inf
    # ranks as the largest, so the test equals the one on 1..6 (all positive).
    soars = [2.0, 3.0, 4.0, 5.0, 6.0, np.inf]
    reader = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    cm = _contours({"soars": soars, "reader": reader},
                   status={("soars", 5): "missing_in_set"})
    out = paired_tests(None, cm, metrics=("hd95_mm",))
    assert list(zip(out["set_a"], out["set_b"])) == [("soars", "reader")] * 2
    r = row_of(out, roi="Parotid_L")
    assert r["p"] == pytest.approx(2 / 64, abs=1e-12)
    assert r["median_diff"] == pytest.approx(3.5)
    assert r["median_a"] == pytest.approx(4.5) and r["rank_biserial"] == pytest.approx(1.0)
    # two equal infinities are a tie (zero difference)
    cm2 = _contours({"soars": soars, "reader": reader[:5] + [np.inf]})
    r2 = row_of(paired_tests(None, cm2, metrics=("hd95_mm",)), roi="Parotid_L")
    assert r2["n_zero"] == 1 and r2["reason"] == "too_few_nonzero_differences"


def test_dose_pairs_include_reference():
    rows = []
    for i in range(6):
        p = f"P{i}"
        rows += [stats_row(p, "reference", "Brainstem", 30.0),
                 stats_row(p, "soars", "Brainstem", 31.0 + i, ref=(30.0, 45.0)),
                 stats_row(p, "reader", "Brainstem", 29.0 - i, ref=(30.0, 45.0))]
    out = paired_tests(pd.DataFrame(rows), metrics=("mean_gy", "abs_diff_mean_pct"))
    mg = out[out["metric"] == "mean_gy"]
    assert list(dict.fromkeys(zip(mg["set_a"], mg["set_b"]))) == [
        ("soars", "reference"), ("reader", "reference"), ("soars", "reader")]
    dm = out[out["metric"] == "abs_diff_mean_pct"]
    assert list(dict.fromkeys(zip(dm["set_a"], dm["set_b"]))) == [("soars", "reader")]
    custom = paired_tests(pd.DataFrame(rows), metrics=("mean_gy",), pairs=[("reader", "soars")])
    assert set(custom["set_a"]) == {"reader"} and len(custom) == 2


def test_bad_inputs_raise_input_error():
    st = paired_cohort({"A": [1, 2, 3, 4, 5, 6]})
    with pytest.raises(InputError, match="not a column"):
        paired_tests(st, metrics=("nonsense",))
    with pytest.raises(InputError, match="lacks the column"):
        metric_values(st.drop(columns="status"), None, "mean_gy")
    with pytest.raises(InputError, match="sharing a"):
        metric_values(pd.concat([st, st.iloc[:1]]), None, "mean_gy")


# --------------------------------------------------------------------------
# unpaired tests
# --------------------------------------------------------------------------

def test_mann_whitney_between_institutions():
    cm = _contours({"soars": [0.70, 0.71, 0.72, 0.80, 0.81, 0.82]})
    patients = pd.DataFrame({"patient": [f"P{i:02d}" for i in range(6)],
                             "institution": ["A", "A", "A", "B", "B", "B"]})
    out = unpaired_tests(cm, "institution", "dice", patients=patients)
    r = row_of(out, roi="Parotid_L")
    # every A below every B: U_A = 0, exact two-sided p = 2 / C(6,3) = 0.1
    assert r["statistic"] == 0 and r["p"] == pytest.approx(0.1)
    assert r["rank_biserial"] == pytest.approx(-1.0)
    assert (r["group_a"], r["group_b"], r["n_a"], r["n_b"]) == ("A", "B", 3, 3)
    ref = sps.mannwhitneyu([0.70, 0.71, 0.72], [0.80, 0.81, 0.82], alternative="two-sided")
    assert r["p"] == pytest.approx(ref.pvalue)
    # a group column in the table itself; too few per group
    cm2 = cm.assign(institution=patients["institution"].to_numpy())
    r2 = row_of(unpaired_tests(cm2, "institution", "dice", min_per_group=4), roi="Parotid_L")
    assert r2["reason"] == "too_few" and np.isnan(r2["p"])
    with pytest.raises(InputError, match="group column"):
        unpaired_tests(cm, "institution", "dice")


def test_mann_whitney_on_stats_excludes_reference_for_differences():
    rows = []
    for i in range(8):
        p = f"P{i}"
        rows += [stats_row(p, "reference", "Brainstem", 30.0),
                 stats_row(p, "soars", "Brainstem", 30.0 + i, ref=(30.0, 45.0),
                           institution="X" if i < 4 else "Y")]
    st = pd.DataFrame(rows)
    st.loc[st["set"] == "reference", "institution"] = ["X"] * 4 + ["Y"] * 4
    out = unpaired_tests(st, "institution", "abs_diff_mean_pct")
    assert set(out["set"]) == {"soars"}
    r = row_of(out, roi="Brainstem")
    exp = sps.mannwhitneyu(np.arange(4) / 30 * 100, np.arange(4, 8) / 30 * 100)
    assert r["p"] == pytest.approx(exp.pvalue)
    assert r["p_holm"] == pytest.approx(r["p"])   # family of one


# --------------------------------------------------------------------------
# threshold counts
# --------------------------------------------------------------------------

def test_threshold_counts_by_hand():
    rows = [stats_row("P0", "reference", "Parotid_L", 20.0, 40.0)]
    # diffs of mean: +5 %, +12 %, +35 %, -15 %, exactly 10 % (not over)
    for i, m in enumerate([21.0, 22.4, 27.0, 17.0, 22.0]):
        rows.append(stats_row(f"P{i}", "soars", "Parotid_L", m, 40.0, ref=(20.0, 40.0)))
    rows.append(stats_row("P5", "soars", "Parotid_L", 0.5, 1.0, ref=(0.01, 0.02),
                          diff_flag="reference_mean_near_zero;reference_max_near_zero"))
    rows.append(stats_row("P6", "soars", "Parotid_L", None, status="missing"))
    rows.append(stats_row("P7", "soars", "Lens_L", 2.0, 3.0, diff_flag="no_reference"))
    t = threshold_counts(pd.DataFrame(rows), thresholds=(10, 30))
    r10 = row_of(t, roi="Parotid_L", metric="abs_diff_mean_pct", threshold_pct=10.0)
    assert (r10["n_rows"], r10["n_not_evaluable"], r10["n_near_zero"], r10["n_evaluated"]) == (
        7, 1, 1, 5)
    assert r10["n_over"] == 3 and r10["pct_over"] == pytest.approx(60.0)
    r30 = row_of(t, roi="Parotid_L", metric="abs_diff_mean_pct", threshold_pct=30.0)
    assert r30["n_over"] == 1 and r30["pct_over"] == pytest.approx(20.0)
    mx = row_of(t, roi="Parotid_L", metric="abs_diff_max_pct", threshold_pct=10.0)
    assert mx["n_over"] == 0 and mx["n_evaluated"] == 5
    lens = row_of(t, roi="Lens_L", metric="abs_diff_mean_pct", threshold_pct=10.0)
    assert lens["n_not_evaluable"] == 1 and lens["n_evaluated"] == 0 and np.isnan(lens["pct_over"])
    pooled = row_of(t, roi="ALL", metric="abs_diff_mean_pct", threshold_pct=10.0)
    assert (pooled["n_rows"], pooled["n_not_evaluable"], pooled["n_evaluated"]) == (8, 2, 5)
    assert "reference" not in set(t["set"])


# --------------------------------------------------------------------------
# summary and correlations
# --------------------------------------------------------------------------

def test_summary_by_oar_by_hand():
    dice = [0.8, 0.9, 0.7, 0.0]
    cm = _contours({"soars": dice}, status={("soars", 3): "missing_in_set"})
    cm.loc[3, ["hd95_mm", "asd_mm"]] = np.inf
    rows = []
    for i, m in enumerate([22.0, 18.0, 21.0]):
        rows += [stats_row(f"P{i:02d}", "reference", "Parotid_L", 20.0),
                 stats_row(f"P{i:02d}", "soars", "Parotid_L", m, ref=(20.0, 30.0))]
    rows += [stats_row("P03", "reference", "Parotid_L", 20.0),
             stats_row("P03", "soars", "Parotid_L", None, status="missing")]
    s = summary_by_oar(pd.DataFrame(rows), cm)
    d = row_of(s, roi="Parotid_L", metric="dice")
    assert (d["n_instances"], d["n_missing"], d["n"], d["n_inf"]) == (4, 1, 4, 0)
    assert d["mean"] == pytest.approx(0.6) and d["median"] == pytest.approx(0.75)
    assert d["mean_sd"] == f"0.60 ± {np.std(dice, ddof=1):.2f}"
    h = row_of(s, roi="Parotid_L", metric="hd95_mm")
    assert h["n_inf"] == 1 and h["mean"] == pytest.approx(0.8) and h["q3"] == np.inf
    assert h["median"] == pytest.approx(0.85) and h["q1"] == pytest.approx(0.775)
    assert h["median_iqr"].startswith("0.85 [") and h["median_iqr"].endswith(", inf]")
    a = row_of(s, roi="Parotid_L", metric="abs_diff_mean_pct")
    assert (a["n_instances"], a["n_missing"], a["n"]) == (4, 1, 3)
    assert a["mean"] == pytest.approx((10 + 10 + 5) / 3) and a["median"] == pytest.approx(10)
    assert set(s["roi"]) == {"Parotid_L", "ALL"} and set(s["set"]) == {"soars"}


def test_correlations_spearman():
    dice = [0.9, 0.8, 0.7, 0.6, 0.5]
    cm = _contours({"soars": dice})
    rows = []
    for i, m in enumerate([20.2, 20.6, 21.0, 19.0, 23.0]):   # |diff| 1, 3, 5, 5 (tie), 15 %
        rows += [stats_row(f"P{i:02d}", "reference", "Parotid_L", 20.0),
                 stats_row(f"P{i:02d}", "soars", "Parotid_L", m, ref=(20.0, 30.0))]
    c = correlations(pd.DataFrame(rows), cm, contour=("dice",), dose=("abs_diff_mean_pct",))
    r = row_of(c, roi="Parotid_L")
    exp = sps.spearmanr(dice, [1, 3, 5, 5, 15])
    assert r["n"] == 5 and r["rho"] == pytest.approx(exp.statistic)
    # n = 5 < 10: the exact permutation p, here from scipy's permutation test enumerating
    # all 5! pairings (independent of the package's enumeration), not the t approximation
    perm = sps.permutation_test(
        (dice,), lambda x: sps.spearmanr(x, [1, 3, 5, 5, 15]).statistic,
        permutation_type="pairings", n_resamples=np.inf, alternative="two-sided")
    assert r["p"] == pytest.approx(perm.pvalue, abs=1e-12) and r["rho"] < -0.9
    assert r["p"] != pytest.approx(exp.pvalue, abs=1e-3)
    assert r["p_method"] == "exact_permutation"
    few = correlations(pd.DataFrame(rows), cm.iloc[:3], contour=("dice",),
                       dose=("abs_diff_mean_pct",))
    assert row_of(few, roi="Parotid_L")["reason"] == "too_few"
    assert row_of(few, roi="Parotid_L")["n_dropped"] == 2
    const = correlations(pd.DataFrame(rows), cm.assign(dice=0.8), contour=("dice",),
                         dose=("abs_diff_mean_pct",))
    k = row_of(const, roi="Parotid_L")
    assert k["reason"] == "constant_input" and np.isnan(k["rho"])


def test_tables_not_given_are_skipped_and_empty_results_have_columns():
    cm = _contours({"soars": [0.8, 0.7, 0.9, 0.6, 0.85, 0.75],
                    "reader": [0.7, 0.6, 0.8, 0.65, 0.7, 0.7]})
    out = paired_tests(None, cm)
    assert set(out["metric"]) == {"dice", "hd95_mm", "asd_mm", "surface_dice"}
    fast = paired_tests(None, cm, metrics=("dice",), method="asymptotic")
    r = row_of(fast, roi="Parotid_L")
    assert r["p"] == pytest.approx(sps.wilcoxon(cm["dice"][:6].to_numpy() - cm["dice"][6:]
                                                .to_numpy(), method="asymptotic").pvalue)
    s = summary_by_oar(None, cm)
    assert set(s["metric"]) == {"dice", "hd95_mm", "asd_mm", "surface_dice"}
    empty = paired_tests(None, cm[cm["set"] == "soars"], metrics=("dice",))
    assert empty.empty and {"p", "p_holm", "p_bh", "significant"} <= set(empty.columns)
    with pytest.raises(InputError, match="diff_mean_pct"):
        threshold_counts(cm)


def test_spearman_exact_p_closed_form():
    # rho = -1 with n = 5: only the reversed and the identical pairing reach |rho| = 1,
    # so the two-sided exact p is 2 / 5! = 0.0167 (the t approximation says < 0.001)
    assert spearman_exact_p([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(2 / 120)
    assert sps.spearmanr([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]).pvalue < 0.001
    # n = 4 without ties: |rho| >= 0.8 for 2 x (identity + 3 pairings one swap away) of 24
    x, y = [1, 2, 3, 4], [2, 1, 3, 4]     # rho = 0.8
    exact = sum(abs(sps.spearmanr(x, list(p)).statistic) >= 0.8 - 1e-12
                for p in __import__("itertools").permutations(y)) / 24
    assert spearman_exact_p(x, y) == pytest.approx(exact)


def test_correlations_corrected_for_multiplicity():
    rng = np.random.default_rng(7)
    rows, cm_rows = [], []
    for i in range(12):
        for roi in ("Parotid_L", "Parotid_R", "Brainstem"):
            dice = float(rng.uniform(0.5, 0.95))
            mean = 20.0 * (1 + float(rng.normal(0, 0.1)))
            rows += [stats_row(f"P{i:02d}", "reference", roi, 20.0),
                     stats_row(f"P{i:02d}", "soars", roi, mean, ref=(20.0, 30.0))]
            cm_rows.append({"patient": f"P{i:02d}", "set": "soars", "roi": roi, "status": "ok",
                            "dice": dice})
    c = correlations(pd.DataFrame(rows), pd.DataFrame(cm_rows), contour=("dice",),
                     dose=("abs_diff_mean_pct",))
    per = c[c["roi"] != "ALL"]
    assert (per["p_method"] == "t_approximation").all()    # n = 12 >= 10
    assert per["family"].nunique() == 1
    expected = multipletests(per["p"].to_numpy(), method="holm")[1]
    np.testing.assert_allclose(per["p_holm"].to_numpy(), expected, rtol=1e-12)
    expected_bh = multipletests(per["p"].to_numpy(), method="fdr_bh")[1]
    np.testing.assert_allclose(per["p_bh"].to_numpy(), expected_bh, rtol=1e-12)
