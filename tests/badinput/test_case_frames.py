"""Issue 11, class 6: an RTDOSE without FrameOfReferenceUID: the frame check is skipped, said once.

``check_frames`` warns on the console naming the dose file (and keeps a note); when the
reader already warned (its note names FrameOfReferenceUID) no second line is printed.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pydicom
import pytest

from soars_dose import audit
from soars_dose.errors import SoarsDoseWarning
from soars_dose.load import check_frames

from ..helpers import oars
from .case_helpers import cli, compare_args, write_case


def _no_frame(tmp_path):
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars(1.0)})
    ds = pydicom.dcmread(paths["rtdose"])
    del ds.FrameOfReferenceUID
    ds.save_as(paths["rtdose"])
    return paths


def _load(paths, names=("reference", "auto")):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SoarsDoseWarning)
        case = audit.load_case(paths["rtdose"], {k: paths[k] for k in names})
    return case, [str(w.message) for w in caught if issubclass(w.category, SoarsDoseWarning)]


@pytest.mark.parametrize("names", [("reference",), ("reference", "auto")])
def test_missing_dose_frame_warns_once_naming_the_file(tmp_path, names):
    paths = _no_frame(tmp_path)
    case, warns = _load(paths, names)
    assert case.dose.frame_of_reference_uid is None
    # one console line, from the reader or from check_frames, never both
    ours = [w for w in warns if "FrameOfReferenceUID" in w and str(paths["rtdose"]) in w]
    assert len(ours) == 1, ours
    assert "check" in ours[0] and "skipped" in ours[0]
    assert any("FrameOfReferenceUID" in n for n in case.notes)


def test_reader_warning_is_not_repeated(tmp_path):
    paths = _no_frame(tmp_path)
    case, _ = _load(paths)
    case.dose.notes.append(f"{paths['rtdose']}: no FrameOfReferenceUID (reader)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SoarsDoseWarning)
        notes = check_frames(case)
    assert not [w for w in caught if "frame-of-reference check" in str(w.message)]
    assert any("frame-of-reference check" in n for n in notes)  # still recorded


def test_dose_with_frame_gives_no_warning(tmp_path):
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars(1.0)})
    case, warns = _load(paths)
    assert not [w for w in warns if "FrameOfReferenceUID" in w]


def test_cli_compare_warns_and_numbers_are_right(tmp_path, capsys):
    paths = _no_frame(tmp_path / "in")
    out = tmp_path / "out"
    rc, err = cli(compare_args(paths, out), capsys)
    assert rc == 0
    lines = [ln for ln in err.splitlines() if "frame-of-reference check" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning:") and str(paths["rtdose"]) in lines[0]
    st = pd.read_parquet(out / "stats.parquet").set_index(["set", "roi"])
    assert st.loc[("auto", "SpinalCord"), "diff_mean_gy"] == pytest.approx(0.5, abs=1e-3)
