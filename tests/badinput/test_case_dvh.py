"""Issue 11, class 3: an RTSTRUCT with zero ROIs in ``dvh`` (before: a KeyError 'message').

Now :class:`EmptyStructureSetError` naming the file, exit 2. Related accepted inputs:
ROIs without contours give ``empty`` rows, and a *substitute* set with zero ROIs in
``compare`` gives ``missing`` rows (the reference is what must be usable).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from soars_dose import audit
from soars_dose.errors import EmptyStructureSetError, StructureError
from soars_dose.structures import Structure, StructureSet

from ..helpers import oars
from .case_helpers import cli, load, strip_rois, write_case


def test_dvh_zero_rois_is_a_named_error(tmp_path):
    paths = write_case(tmp_path, {"reference": oars()})
    strip_rois(paths["reference"])
    case = load(paths, names=("reference",))
    with pytest.raises(EmptyStructureSetError) as exc:
        audit.dvh_all(case)
    assert str(paths["reference"]) in str(exc.value)
    assert isinstance(exc.value, StructureError)


def test_dvh_zero_rois_in_memory_set_names_it(tmp_path):
    paths = write_case(tmp_path, {"reference": oars()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = audit.load_case(paths["rtdose"], {"mine": StructureSet([], source=None)})
    with pytest.raises(EmptyStructureSetError, match="mine"):
        audit.dvh_all(case)


@pytest.mark.parametrize("extra", [[], ["--vgy", "20"], ["--supersample", "4"]])
def test_cli_dvh_zero_rois_exit_2(tmp_path, capsys, extra):
    paths = write_case(tmp_path / "in", {"reference": oars()})
    strip_rois(paths["reference"])
    out = tmp_path / "out"
    rc, err = cli(["dvh", "--rtstruct", str(paths["reference"]), "--rtdose", str(paths["rtdose"]),
                   "--out", str(out), *extra], capsys)
    assert rc == 2
    assert str(paths["reference"]) in err and "no ROI" in err
    assert not out.exists()


def test_dvh_all_rois_empty_gives_empty_rows(tmp_path, capsys):
    sts = [Structure("Parotid_L", 1, []), Structure("Whatever", 2, [])]
    paths = write_case(tmp_path / "in", {"reference": sts})
    out = tmp_path / "out"
    rc, err = cli(["dvh", "--rtstruct", str(paths["reference"]), "--rtdose", str(paths["rtdose"]),
                   "--out", str(out)], capsys)
    assert rc == 0
    st = pd.read_csv(out / "stats.csv")
    assert list(st["status"]) == ["empty", "empty"]
    assert st["mean_gy"].isna().all()


def test_dvh_one_roi_right_numbers(tmp_path):
    """The accepted neighbour: one cylinder, mean = 30 + 0.5 * 12 Gy (dose linear in x)."""
    paths = write_case(tmp_path, {"reference": [oars()[1]]})
    res = audit.dvh_all(load(paths, names=("reference",)))
    assert res.stats.loc[0, "mean_gy"] == pytest.approx(36.0, abs=1e-3)


def test_compare_substitute_with_zero_rois_is_missing(tmp_path):
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()})
    strip_rois(paths["auto"])
    res = audit.compare(load(paths))
    auto = res.stats[res.stats["set"] == "auto"]
    assert list(auto["status"]) == ["missing", "missing"]
    ref = res.stats[res.stats["set"] == "reference"].set_index("roi")
    assert ref.loc["Parotid_L", "mean_gy"] == pytest.approx(25.0, abs=1e-3)
    assert np.isnan(auto["diff_mean_gy"]).all()
