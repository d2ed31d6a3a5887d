"""Contour metrics of whole cases: common grids, empty-mask policy, closed-form Dice."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from soars_dose import audit
from soars_dose.analysis.contours import contour_metrics_for_case
from soars_dose.dicom.write import write_ct_series
from soars_dose.structures import Structure

from ..helpers import FOR, disc_stack, write_case


def _lens_dice(r: float, d: float) -> float:
    """Dice of two discs of radius r whose centres are d apart (closed form)."""
    overlap = 2 * r * r * np.arccos(d / (2 * r)) - 0.5 * d * np.sqrt(4 * r * r - d * d)
    return overlap / (np.pi * r * r)


def _sets(shift=2.0):
    ref = [Structure("Parotid_L", 1, disc_stack(-8, 0, 8, -10, 10, n=180)),
           Structure("SpinalCord", 2, disc_stack(12, 5, 4, -10, 10, n=180))]
    sub = [Structure("Parotid Lt", 1, disc_stack(-8 + shift, 0, 8, -10, 10, n=180)),
           Structure("Brainstem", 3, disc_stack(0, -20, 5, -4, 4))]  # cord missing, extra OAR
    return {"reference": ref, "auto": sub}


@pytest.mark.parametrize("with_ct", [False, True])
def test_shifted_cylinder_and_empty_mask_policy(tmp_path, with_ct):
    paths = write_case(tmp_path, _sets())
    ct = None
    if with_ct:
        from soars_dose.grid import Grid

        # a 1 mm CT whose slices are the contour planes (z = -10, -8, ..., 10)
        ct_grid = Grid((13, 80, 80), (2.0, 1.0, 1.0), (-39.5, -39.5, -12.0))
        write_ct_series(np.zeros(ct_grid.shape, np.int16), ct_grid, tmp_path / "ct",
                        patient_id="P", frame_of_reference_uid=FOR)
        ct = tmp_path / "ct"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = audit.load_case(paths["rtdose"], {"reference": paths["reference"],
                                                 "auto": paths["auto"]}, ct=ct)
    df = contour_metrics_for_case(case).set_index("roi")
    row = df.loc["Parotid_L"]
    assert row["status"] == "ok"
    assert row["grid"] == ("ct" if with_ct else "supersampled")
    tol = 0.02 if with_ct else 0.01  # 1 mm CT pixels vs 0.5 mm supersampled pixels
    assert row["dice"] == pytest.approx(_lens_dice(8.0, 2.0), abs=tol)
    # a 2 mm shift: the farthest surface point is 2 mm away
    assert row["hd_mm"] == pytest.approx(2.0, abs=0.6)
    assert row["volume_diff_pct"] == pytest.approx(0.0, abs=2.0)
    cord = df.loc["SpinalCord"]
    assert cord["status"] == "missing_in_set"
    assert cord["dice"] == 0 and cord["surface_dice"] == 0 and np.isinf(cord["hd95_mm"])
    assert df.loc["Brainstem", "status"] == "no_reference" and np.isnan(df.loc["Brainstem", "dice"])
