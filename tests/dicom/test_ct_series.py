"""A CT folder holding several series: the choice, and the messages that ask for it."""

from __future__ import annotations

import pytest

from soars_dose import audit
from soars_dose.dicom.ct import read_ct_series
from soars_dose.errors import CTSeriesChoiceError, DicomReadError, InputError

from ..helpers import oars, write_case, write_ct_folder

SERIES = [
    {"description": "Planning CT", "acquisition_date": "20240131", "series_date": "20240130",
     "thickness": 2.5},
    {"description": "CT contrast", "series_date": "20240202", "thickness": 1.25},
    {"thickness": 5.0},
]


@pytest.fixture()
def ct_folder(tmp_path):
    uids = write_ct_folder(tmp_path / "ct", SERIES)
    return tmp_path / "ct", uids


def test_several_series_without_a_choice_list_each_series(ct_folder):
    folder, uids = ct_folder
    with pytest.raises(CTSeriesChoiceError) as info:
        read_ct_series(folder)
    msg = str(info.value)
    assert "holds 3 CT series" in msg and "series_uid='UID'" in msg
    lines = {u: next(line for line in msg.splitlines() if u in line) for u in uids}
    assert "'Planning CT'" in lines[uids[0]] and "20 slices" in lines[uids[0]]
    assert "2.5 mm slices" in lines[uids[0]]
    assert "acquired 2024-01-31" in lines[uids[0]]  # AcquisitionDate wins over SeriesDate
    assert "'CT contrast'" in lines[uids[1]] and "40 slices" in lines[uids[1]]
    assert "1.25 mm slices" in lines[uids[1]]
    assert "acquired 2024-02-02" in lines[uids[1]]  # no AcquisitionDate: SeriesDate
    assert "no description" in lines[uids[2]] and "10 slices" in lines[uids[2]]
    assert "unknown date" in lines[uids[2]]
    assert isinstance(info.value, DicomReadError)  # callers catching the family still do


def test_the_chosen_series_is_read(ct_folder):
    folder, uids = ct_folder
    for uid, n in zip(uids, (20, 40, 10)):
        ct = read_ct_series(folder, uid)
        assert ct.series_uid == uid and len(ct.paths) == n


def test_a_uid_not_in_the_folder_lists_those_that_are(ct_folder):
    folder, uids = ct_folder
    with pytest.raises(CTSeriesChoiceError, match="no CT series with SeriesInstanceUID 1.2.3") as info:
        read_ct_series(folder, "1.2.3")
    assert all(u in str(info.value) for u in uids)


def test_one_series_needs_no_choice(tmp_path):
    (uid,) = write_ct_folder(tmp_path / "ct", SERIES[:1])
    assert read_ct_series(tmp_path / "ct").series_uid == uid


def test_load_case_passes_the_choice_and_names_its_own_option(tmp_path, ct_folder):
    folder, uids = ct_folder
    paths = write_case(tmp_path / "case", {"ref": oars()})
    with pytest.raises(CTSeriesChoiceError, match=r"ct_series='UID'"):
        audit.load_case(paths["rtdose"], {"reference": paths["ref"]}, ct=folder)
    case = audit.load_case(paths["rtdose"], {"reference": paths["ref"]}, ct=folder,
                           ct_series=f" {uids[1]} ")
    assert case.ct.series_uid == uids[1]
    with pytest.raises(InputError, match="no CT folder"):
        audit.load_case(paths["rtdose"], {"reference": paths["ref"]}, ct_series=uids[1])


def test_with_choice_names_another_way(ct_folder):
    folder, _ = ct_folder
    with pytest.raises(CTSeriesChoiceError) as info:
        read_ct_series(folder)
    other = info.value.with_choice("the ct_series column")
    assert "choose one with the ct_series column" in str(other)
    assert other.series == info.value.series


def test_load_hu_reads_the_slices_asked_for(tmp_path):
    import numpy as np

    from soars_dose.dicom.write import write_ct_series
    from soars_dose.grid import Grid

    grid = Grid((7, 5, 6), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    hu = (np.arange(np.prod(grid.shape)).reshape(grid.shape) % 2000 - 1000).astype(np.int16)
    ct = write_ct_series(hu, grid, tmp_path / "ct", patient_id="P")
    series = read_ct_series(tmp_path / "ct")
    assert np.array_equal(series.load_hu(), hu)
    assert np.array_equal(series.load_hu(slice(2, 5)), hu[2:5])
    assert series.load_hu(slice(6, 7)).shape == (1, 5, 6)
    assert ct.series_uid == series.series_uid
