"""DVH bands across a cohort against a hand computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from soars_dose.analysis.dvh_bands import common_dose_axis, dvh_bands, interpolate_curve


def _curve(patient, dose, vol, roi="Parotid_L", set_name="soars"):
    return pd.DataFrame({"patient": patient, "set": set_name, "roi": roi,
                         "dose_gy": dose, "volume_pct": vol})


def test_interpolation_is_linear_and_zero_above_the_last_dose():
    axis = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    got = interpolate_curve(np.array([0.0, 1.0, 2.0]), np.array([100.0, 60.0, 10.0]), axis)
    assert got == pytest.approx([100, 80, 60, 35, 10, 0])


def test_bands_match_a_hand_computed_case():
    # three patients, straight falls to 0 at 2, 4 and 6 Gy; on a 1 Gy axis 0..6 the volumes are
    # A: 100 50 0 0 0 0 0 / B: 100 75 50 25 0 0 0 / C: 100 83.33 66.67 50 33.33 16.67 0
    dvh = pd.concat([_curve("A", [0, 2], [100, 0]), _curve("B", [0, 4], [100, 0]),
                     _curve("C", [0, 6], [100, 0])], ignore_index=True)
    b = dvh_bands(dvh, step_gy=1.0)
    assert list(b["dose_gy"]) == [0, 1, 2, 3, 4, 5, 6] and set(b["n"]) == {3}
    a = np.array([100, 50, 0, 0, 0, 0, 0.0])
    bb = np.array([100, 75, 50, 25, 0, 0, 0.0])
    c = np.array([100, 500 / 6, 400 / 6, 50, 200 / 6, 100 / 6, 0])
    # numpy's linear percentile of three sorted values x0 <= x1 <= x2 at q: position 2q/100
    srt = np.sort(np.vstack([a, bb, c]), axis=0)
    for q in (5, 25, 50, 75, 95):
        pos = 2 * q / 100
        lo = int(np.floor(pos))
        want = srt[lo] + (pos - lo) * (srt[min(lo + 1, 2)] - srt[lo])
        assert b[f"p{q}"].to_numpy() == pytest.approx(want), q
    assert b["p50"].to_numpy() == pytest.approx(bb)
    # 25th percentile at 1 Gy: halfway between 50 and 75
    assert b.loc[b["dose_gy"] == 1, "p25"].item() == pytest.approx(62.5)


def test_bands_are_per_oar_and_set_on_one_axis():
    dvh = pd.concat([_curve("A", [0, 3], [100, 0]),
                     _curve("A", [0, 1], [100, 0], roi="Lens_L", set_name="reader")])
    b = dvh_bands(dvh, step_gy=0.5)
    assert set(zip(b["roi"], b["set"])) == {("Parotid_L", "soars"), ("Lens_L", "reader")}
    assert list(common_dose_axis(dvh, 0.5)) == [0, 0.5, 1, 1.5, 2, 2.5, 3]
    assert (b.groupby(["roi", "set"]).size() == 7).all()
