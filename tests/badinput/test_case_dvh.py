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
from soars_dose.errors import DicomReadError, EmptyStructureSetError
from soars_dose.structures import Structure, StructureSet

from ..helpers import oars
from .case_helpers import cli, load, strip_rois, write_case


def test_dvh_zero_rois_is_a_named_error(tmp_path):
    paths = write_case(tmp_path, {"reference": oars()})
    strip_rois(paths["reference"])
    # the RTSTRUCT reader refuses a file with an empty StructureSetROISequence
    # (PS3.3 requires one item or more); dvh_all's own check covers sets made
    # in memory (next test)
    with pytest.raises(DicomReadError) as exc:
        load(paths, names=("reference",))
    assert str(paths["reference"]) in str(exc.value)
    assert "no ROI" in str(exc.value)


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
    # a substitute set with no ROI at all (an RTSTRUCT file like that is refused
    # by the reader, test_dvh_zero_rois_is_a_named_error; a set made in memory
    # can still be empty)
    paths = write_case(tmp_path, {"reference": oars()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = audit.load_case(paths["rtdose"], {"reference": paths["reference"],
                                                 "auto": StructureSet([], source=None)})
    res = audit.compare(case)
    auto = res.stats[res.stats["set"] == "auto"]
    assert list(auto["status"]) == ["missing", "missing"]
    ref = res.stats[res.stats["set"] == "reference"].set_index("roi")
    assert ref.loc["Parotid_L", "mean_gy"] == pytest.approx(25.0, abs=1e-3)
    assert np.isnan(auto["diff_mean_gy"]).all()
