"""Issue 11, class 2: a dose that is zero everywhere, or zero inside every structure.

``compare`` refuses it (:class:`ZeroDoseError` naming the RTDOSE: every statistic would be
0 Gy); ``dvh`` warns and still writes its (0 Gy) tables. Decided from the dose values, so
an all-zero PixelData and DoseGridScaling 0 are caught alike, whatever the reader says.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pydicom
import pytest

from soars_dose import audit
from soars_dose.errors import SoarsDoseWarning, ZeroDoseError

from ..helpers import gradient_dose, oars, small_grid
from .case_helpers import cli, compare_args, load, write_case


def _world(grid):
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    return grid.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3)).reshape(grid.shape + (3,))


def _zeros(tmp_path):
    return write_case(tmp_path, {"reference": oars(), "auto": oars(1.0)},
                      dose=np.zeros(small_grid().shape))


def _scaling_zero(tmp_path):
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars(1.0)})
    ds = pydicom.dcmread(paths["rtdose"])
    ds.DoseGridScaling = "0"
    ds.save_as(paths["rtdose"])
    return paths


def _outside_only(tmp_path):
    """60 Gy only at x >= 30 mm; the structures end at x = 16 mm (trilinear reach 2.5 mm)."""
    g = small_grid()
    dose = np.where(_world(g)[..., 0] >= 30.0, 60.0, 0.0)
    return write_case(tmp_path, {"reference": oars(), "auto": oars(1.0)}, dose=dose)


def _outside_and_low_corner(tmp_path):
    """Dose only in one corner voxel block (x, y <= -30 mm)."""
    g = small_grid()
    w = _world(g)
    dose = np.where((w[..., 0] <= -30.0) & (w[..., 1] <= -30.0), 5.0, 0.0)
    return write_case(tmp_path, {"reference": oars(), "auto": oars(1.0)}, dose=dose)


VARIANTS = {"zeros": _zeros, "scaling_zero": _scaling_zero, "outside_only": _outside_only,
            "corner_only": _outside_and_low_corner}
EVERYWHERE = {"zeros", "scaling_zero"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compare_refuses_zero_dose(tmp_path, variant):
    paths = VARIANTS[variant](tmp_path)
    case = load(paths)
    if variant in EVERYWHERE:
        assert case.dose.max_gy == 0.0
    else:
        assert case.dose.max_gy > 0.0
    with pytest.raises(ZeroDoseError) as exc:
        audit.compare(case)
    msg = str(exc.value)
    assert str(paths["rtdose"]) in msg
    assert ("zero everywhere" if variant in EVERYWHERE else "zero inside every structure") in msg


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cli_compare_exit_2(tmp_path, capsys, variant):
    paths = VARIANTS[variant](tmp_path / "in")
    rc, err = cli(compare_args(paths, tmp_path / "out"), capsys)
    assert rc == 2
    assert str(paths["rtdose"]) in err and "0 Gy" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dvh_warns_and_reports_zero(tmp_path, variant):
    paths = VARIANTS[variant](tmp_path)
    case = load(paths, names=("reference",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SoarsDoseWarning)
        res = audit.dvh_all(case)
    texts = [str(w.message) for w in caught if issubclass(w.category, SoarsDoseWarning)]
    assert any(str(paths["rtdose"]) in t and "0 Gy" in t for t in texts)
    assert any("0 Gy" in m for m in res.messages)
    ok = res.stats[res.stats["status"] == "ok"]
    assert len(ok) == 2
    assert np.all(ok["max_gy"] <= 1e-6) and np.all(ok["mean_gy"] <= 1e-6)


def test_cli_dvh_exit_0_with_warning(tmp_path, capsys):
    paths = _zeros(tmp_path / "in")
    out = tmp_path / "out"
    rc, err = cli(["dvh", "--rtstruct", str(paths["reference"]), "--rtdose", str(paths["rtdose"]),
                   "--out", str(out)], capsys)
    assert rc == 0
    assert "warning:" in err and "zero everywhere" in err
    st = pd.read_csv(out / "stats.csv")
    assert (st["mean_gy"] == 0).all()


def test_dose_in_one_structure_is_accepted_and_right(tmp_path):
    """20 Gy over a box holding the cord (with a voxel of margin): cord mean 20 Gy, parotid 0."""
    g = small_grid()
    w = _world(g)
    box = (w[..., 0] >= 4) & (w[..., 0] <= 24) & (np.abs(w[..., 1] - 5) <= 12) & \
        (np.abs(w[..., 2]) <= 16)
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()},
                       dose=np.where(box, 20.0, 0.0))
    res = audit.compare(load(paths))
    st = res.stats.set_index(["set", "roi"])
    assert st.loc[("reference", "SpinalCord"), "mean_gy"] == pytest.approx(20.0, abs=1e-3)
    assert st.loc[("reference", "SpinalCord"), "min_gy"] == pytest.approx(20.0, abs=1e-3)
    assert st.loc[("reference", "Parotid_L"), "max_gy"] == pytest.approx(0.0, abs=1e-9)


def test_normal_dose_untouched(tmp_path):
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()}, dose=gradient_dose(small_grid()))
    res = audit.compare(load(paths))
    assert not any("0 Gy" in m for m in res.messages)
