"""Table 5a/5b cells and the signed bias against hand-computed values (issue 13)."""

import statistics as pystats

import numpy as np
import pandas as pd
import pytest

from soars_dose.analysis.tables import TABLE5A, TABLE5B, cell_values, dose_bias, table5
from soars_dose.dose.differences import add_differences


def _contours():
    rows = []
    hd = [1.0, 2.0, 3.0, 2.5, np.inf]
    dice = [0.9, 0.8, 0.7, 0.85, 0.0]
    for i, (h, d) in enumerate(zip(hd, dice)):
        missing = i == 4
        rows.append({"patient": f"P{i}", "set": "soars", "roi": "Eye_R",
                     "status": "missing_in_set" if missing else "ok", "dice": d,
                     "hd95_mm": h, "asd_mm": np.inf if missing else h / 2})
    return pd.DataFrame(rows)


def test_table5a_states_n_and_missing_and_same_rule_for_the_row():
    t = table5(None, _contours(), TABLE5A).set_index("OAR")
    # the missing Eye_R is out of every mean (4 present contours) and in every median
    assert t.at["Eye_R", "soars: HD95 (mm) mean ± SD"] == (
        f"{pystats.mean([1, 2, 3, 2.5]):.2f} ± {pystats.stdev([1, 2, 3, 2.5]):.2f} (n 4, 1 missing)")
    assert t.at["Eye_R", "soars: Dice mean ± SD"] == (
        f"{pystats.mean([0.9, 0.8, 0.7, 0.85]):.2f} ± "
        f"{pystats.stdev([0.9, 0.8, 0.7, 0.85]):.2f} (n 4, 1 missing)")
    # medians over all 5 with the missing one at its worst: HD95 [1, 2, 2.5, 3, inf], Dice [0, .7, ...]
    assert t.at["Eye_R", "soars: HD95 (mm) median [IQR]"] == "2.50 [2.00, 3.00]"
    assert t.at["Eye_R", "soars: Dice median [IQR]"] == "0.80 [0.70, 0.85]"
    assert "ALL" in t.index


def test_table5b_counts_near_zero_apart_from_missing():
    s = pd.DataFrame([
        ["P1", "reference", "Brainstem", "ok", 0.1, 0.23, 0.2],
        ["P1", "soars", "Brainstem", "ok", 0.3, 8.28, 7.0],
        ["P2", "reference", "Brainstem", "ok", 20.0, 50.0, 49.0],
        ["P2", "soars", "Brainstem", "ok", 21.0, 55.0, 49.0],
        ["P3", "reference", "Brainstem", "ok", 20.0, 50.0, 49.0],
        ["P3", "soars", "Brainstem", "missing", np.nan, np.nan, np.nan],
    ], columns=["patient", "set", "roi", "status", "mean_gy", "max_gy", "d0_03cc_gy"])
    s = add_differences(s, 1.0)
    t = table5(s, None, TABLE5B).set_index("OAR")
    assert t.at["Brainstem", "soars: |Diff_max| (%) mean ± SD"] == "10.00 (n 1, 1 missing, 1 near zero)"
    assert t.at["Brainstem", "soars: |Diff_mean| (%) mean ± SD"] == "5.00 (n 1, 1 missing, 1 near zero)"


def test_cell_values_hand_computed():
    g = pd.DataFrame({"value": [1.0, 3.0, np.inf, np.nan], "missing": [False, False, True, False]})
    c = cell_values(g)
    assert (c["n"], c["n_missing"], c["n_all"]) == (2, 1, 3)
    assert c["mean"] == 2.0 and c["median"] == 3.0


def test_signed_bias_shows_a_cold_set():
    rows = []
    for i, m in enumerate([18.0, 19.0, 17.0, 21.0]):     # -10, -5, -15, +5 %
        rows += [[f"P{i}", "reference", "Parotid_L", "ok", 20.0, 60.0, 58.0],
                 [f"P{i}", "soars", "Parotid_L", "ok", m, 60.0, 58.0]]
    s = add_differences(pd.DataFrame(rows, columns=["patient", "set", "roi", "status", "mean_gy",
                                                    "max_gy", "d0_03cc_gy"]), 1.0)
    b = dose_bias(s)
    r = b[(b["roi"] == "Parotid_L") & (b["metric"] == "diff_mean_pct")].iloc[0]
    assert r["mean"] == pytest.approx(pystats.mean([-10, -5, -15, 5]))
    assert r["median"] == pytest.approx(pystats.median([-10, -5, -15, 5]))
    assert r["n"] == 4
    g = b[(b["roi"] == "Parotid_L") & (b["metric"] == "diff_mean_gy")].iloc[0]
    assert g["mean"] == pytest.approx(-1.25)


def test_table5_with_tests_uses_the_one_cell_rule_and_reads_the_tests():
    from soars_dose.analysis.tables import table5_with_tests

    cm = _contours()
    tests = pd.DataFrame([{"metric": "dice", "roi": "Eye_R", "set_a": "soars", "set_b": "reader",
                           "p_holm": 0.042}])
    t = table5_with_tests(None, cm, tests, ["reference", "soars", "reader"]).set_index(["set", "roi"])
    # the missing contour is counted and left out of the mean, as in Table 5a
    assert t.at[("soars", "Eye_R"), "dice"] == (
        f"{pystats.mean([0.9, 0.8, 0.7, 0.85]):.2f} ± "
        f"{pystats.stdev([0.9, 0.8, 0.7, 0.85]):.2f} (n 4, 1 missing)")
    assert t.at[("soars", "Eye_R"), "dice_p_vs_reader"] == 0.042
    assert np.isnan(t.at[("soars", "Eye_R"), "hd95_mm_p_vs_reader"])
    assert ("soars", "ALL") in t.index
