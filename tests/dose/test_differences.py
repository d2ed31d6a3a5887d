"""The one near-zero rule of eq 6/7 (issue 13): hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from soars_dose.dose.differences import add_differences, near_zero_threshold_gy


def _stats(rows):
    cols = ["patient", "set", "roi", "status", "mean_gy", "max_gy", "d0_03cc_gy"]
    return pd.DataFrame(rows, columns=cols)


def test_threshold_default_and_prescription():
    assert near_zero_threshold_gy() == 1.0
    assert near_zero_threshold_gy(prescription_gy=70.0) == pytest.approx(1.4)
    assert near_zero_threshold_gy(0.5, prescription_gy=60.0, near_zero_rx_pct=5) == pytest.approx(3.0)
    assert near_zero_threshold_gy(0.5, prescription_gy=60.0, near_zero_rx_pct=0) == 0.5


def test_out_of_field_brainstem_loses_both_percentages_keeps_gy():
    # the case of the issue: reference max 0.23 Gy, substitute max 8.28 Gy (+3500 %)
    s = _stats([["p1", "reference", "Brainstem", "ok", 0.10, 0.23, 0.20],
                ["p1", "soars", "Brainstem", "ok", 0.30, 8.28, 7.00],
                ["p1", "reference", "Parotid_L", "ok", 25.0, 60.0, 58.0],
                ["p1", "soars", "Parotid_L", "ok", 22.5, 63.0, 58.0]])
    out = add_differences(s, 1.0).set_index(["set", "roi"])
    b = out.loc[("soars", "Brainstem")]
    assert np.isnan(b["diff_mean_pct"]) and np.isnan(b["diff_max_pct"])
    assert np.isnan(b["diff_d0_03cc_pct"])
    assert b["diff_max_gy"] == pytest.approx(8.05) and b["diff_mean_gy"] == pytest.approx(0.20)
    assert set(b["diff_flag"].split(";")) == {"reference_mean_near_zero", "reference_max_near_zero",
                                               "reference_d0_03cc_near_zero"}
    p = out.loc[("soars", "Parotid_L")]
    assert p["diff_mean_pct"] == pytest.approx(-10.0)
    assert p["diff_max_pct"] == pytest.approx(5.0)
    assert p["diff_d0_03cc_pct"] == pytest.approx(0.0)
    assert p["diff_flag"] == ""
    assert np.isnan(out.loc[("reference", "Parotid_L"), "diff_mean_pct"])


def test_each_percentage_follows_its_own_reference_and_patient_thresholds():
    # mean 0.8 Gy < 1.4 Gy (2 % of 70) but max 3 Gy above it: only Diff_mean goes
    s = _stats([["a", "reference", "Lens_L", "ok", 0.8, 3.0, 2.9],
                ["a", "reader", "Lens_L", "ok", 1.0, 3.3, 2.9],
                ["b", "reference", "Lens_L", "ok", 0.8, 3.0, 2.9],
                ["b", "reader", "Lens_L", "missing", np.nan, np.nan, np.nan]])
    out = add_differences(s, {"a": 1.4, "b": 0.5})
    a = out[(out["patient"] == "a") & (out["set"] == "reader")].iloc[0]
    assert np.isnan(a["diff_mean_pct"]) and a["diff_flag"] == "reference_mean_near_zero"
    assert a["diff_max_pct"] == pytest.approx(10.0)
    assert a["near_zero_threshold_gy"] == pytest.approx(1.4)
    b = out[(out["patient"] == "b") & (out["set"] == "reader")].iloc[0]
    assert np.isnan(b["diff_mean_gy"]) and b["diff_flag"] == ""


def test_no_reference_is_flagged():
    s = _stats([["a", "reader", "Lens_L", "ok", 1.0, 3.3, 2.9]])
    assert add_differences(s, 1.0)["diff_flag"].iloc[0] == "no_reference"
