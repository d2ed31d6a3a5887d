"""The comparison of contour sets: eq 6/7, name matching, missing/outside/duplicate ROIs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from soars_dose import audit
from soars_dose.errors import OutputExistsError
from soars_dose.structures import Structure

from ..helpers import disc_stack, oars, write_case


def _case(tmp_path, sets):
    paths = write_case(tmp_path, sets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit.load_case(paths["rtdose"], {k: paths[k] for k in sets})


def test_eq6_eq7_against_hand_computed_values(tmp_path):
    """A cylinder shifted by +2 mm in a 0.5 Gy/mm field: mean +1 Gy, max +1 Gy exactly."""
    case = _case(tmp_path, {"reference": oars(), "shifted": oars(2.0)})
    res = audit.compare(case)
    st = res.stats.set_index(["set", "roi"])
    for roi in ("Parotid_L", "SpinalCord"):
        ref = st.loc[("reference", roi)]
        sub = st.loc[("shifted", roi)]
        assert sub["diff_mean_gy"] == pytest.approx(1.0, abs=1e-3)
        assert sub["diff_mean_pct"] == pytest.approx(100 * 1.0 / ref["mean_gy"], rel=1e-3)
        assert sub["diff_max_gy"] == pytest.approx(1.0, abs=0.05)
        assert sub["diff_max_pct"] == pytest.approx(
            100 * (sub["max_gy"] - ref["max_gy"]) / ref["max_gy"], rel=1e-9)
        # mean of a cylinder centred at x in dose 30 + 0.5 x
        cx = -10 if roi == "Parotid_L" else 12
        assert ref["mean_gy"] == pytest.approx(30 + 0.5 * cx, abs=1e-3)
    assert np.isnan(st.loc[("reference", "Parotid_L"), "diff_mean_pct"])


def test_aliases_missing_and_duplicates(tmp_path):
    sub = [Structure("L Parotid", 1, oars()[0].contours)]  # cord missing
    dup = [Structure("Parotid Lt", 1, oars()[0].contours),
           Structure("LeftParotid", 2, oars()[0].contours),
           Structure("Cord", 3, oars()[1].contours),
           Structure("PTV70", 4, oars()[1].contours),
           Structure("Mystery", 5, oars()[1].contours)]
    case = _case(tmp_path, {"reference": oars(), "auto": sub, "reader": dup})
    res = audit.compare(case)
    st = res.stats.set_index(["set", "roi"])
    assert st.loc[("auto", "Parotid_L"), "status"] == "ok"
    assert st.loc[("auto", "Parotid_L"), "roi_original"] == "L Parotid"
    assert st.loc[("auto", "SpinalCord"), "status"] == "missing"
    assert st.loc[("reader", "Parotid_L"), "status"] == "duplicate"
    assert st.loc[("reader", "SpinalCord"), "status"] == "ok"
    names = res.names.set_index(["set", "original"])
    assert names.loc[("reader", "Mystery"), "status"] == "unmatched"
    assert names.loc[("reader", "PTV70"), "status"] == "target"
    assert any("Mystery" in m for m in res.messages)


def test_outside_grid_and_partial(tmp_path):
    far = Structure("Brainstem", 9, disc_stack(300, 0, 5, -4, 4))
    edge = Structure("Eye_L", 10, disc_stack(-36.0, 0, 6, -4, 4))  # half beyond x = -37.5
    case = _case(tmp_path, {"reference": oars() + [far, edge], "auto": oars()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit.compare(case)
    st = res.stats.set_index(["set", "roi"])
    assert st.loc[("reference", "Brainstem"), "status"] == "outside_grid"
    assert st.loc[("reference", "Eye_L"), "status"] == "partial"
    assert 0.2 < st.loc[("reference", "Eye_L"), "coverage"] < 0.8
    assert any("inside the dose grid" in m for m in res.messages)


def test_near_zero_reference_is_flagged(tmp_path):
    from ..helpers import small_grid

    grid = small_grid()
    dose = np.zeros(grid.shape)
    dose[:, :, 20:] = 10.0  # zero on the left half
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars(1.0)}, dose=dose)
    case = audit.load_case(paths["rtdose"], {"reference": paths["reference"], "auto": paths["auto"]})
    res = audit.compare(case)
    row = res.stats.set_index(["set", "roi"]).loc[("auto", "Parotid_L")]
    assert np.isnan(row["diff_mean_pct"]) and "reference_mean_near_zero" in row["diff_flag"]
    assert row["diff_mean_gy"] == pytest.approx(0.0, abs=1e-9)


def test_outputs_atomic_and_not_overwritten(tmp_path):
    case = _case(tmp_path / "in", {"reference": oars(), "auto": oars(1.0)})
    s = audit.Settings()
    res = audit.compare(case, s)
    out = audit.write_result(res, case, tmp_path / "out")
    files = sorted(p.name for p in out.iterdir())
    # everything `soars-dose compare` writes (issue 12: audit.compare returns the contour metrics)
    assert files == ["contour_metrics.csv", "contour_metrics.parquet", "dvh.csv", "dvh.parquet",
                     "names.csv", "names.parquet", "provenance.json", "stats.csv", "stats.parquet"]
    import json

    import pandas as pd

    prov = json.loads((out / "provenance.json").read_text())
    assert {i["role"] for i in prov["inputs"]} == {"rtdose", "rtstruct:reference", "rtstruct:auto"}
    assert all(len(i["sha256"]) == 64 for i in prov["inputs"])
    stats = pd.read_parquet(out / "stats.parquet")
    for col in ["set", "roi", "volume_cc", "mean_gy", "max_gy", "min_gy", "d0_03cc_gy", "d2_gy",
                "d98_gy", "coverage", "diff_mean_pct", "diff_max_pct"]:
        assert col in stats.columns
    dvh = pd.read_csv(out / "dvh.csv")
    assert list(dvh.columns[:6]) == ["patient", "set", "roi", "dose_gy", "volume_cc", "volume_pct"]
    first = dvh.groupby(["set", "roi"]).first()
    np.testing.assert_allclose(first["volume_pct"], 100.0)
    before = (out / "stats.csv").read_bytes()
    # from Python the message names the Python argument (issue 11; the CLI says --overwrite)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        audit.write_result(res, case, out)
    assert (out / "stats.csv").read_bytes() == before
    audit.write_result(res, case, out, overwrite=True)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out")]
