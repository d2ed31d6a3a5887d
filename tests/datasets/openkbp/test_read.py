"""OpenKBP reading: raw CSV folders and .npz files, their refusals, split listing, notes."""

from __future__ import annotations

import numpy as np
import pytest

from soars_dose.datasets import openkbp as ok
from soars_dose.errors import InputError

from .openkbp_helpers import N, npz, real, write_csv


def test_raw_csv_folder_decodes_like_npz(shared_data, pt201):
    raw = ok.read_patient(real(shared_data, "raw/pt_201"))
    assert raw.patient_id == pt201.patient_id == "pt_201"
    assert raw.grid.same_as(pt201.grid, tol_mm=1e-9)
    assert raw.voxel_dimensions_mm == pt201.voxel_dimensions_mm
    for attr in ("ct_hu", "dose_gy", "possible_dose_mask"):
        a, b = getattr(raw, attr), getattr(pt201, attr)
        assert a.dtype == b.dtype and np.array_equal(a, b), attr
    assert list(raw.masks) == list(pt201.masks)
    for name in raw.masks:
        assert np.array_equal(raw.masks[name], pt201.masks[name]), name
    assert pt201.ct_hu.dtype == np.int16 and pt201.dose_gy.dtype == np.float32
    assert pt201.ct_hu.min() == -1024  # voxels absent from ct.csv


def test_synthetic_raw_folder(raw_folder):
    p = ok.read_patient(raw_folder)
    assert p.patient_id == "pt_7" and p.grid.spacing == (2.5, 3.906, 3.906)

    def kbp(a):  # back to OpenKBP flat (C-order [i, j, k]) indices
        return ok.from_lps_axes(a).ravel()

    ct = kbp(p.ct_hu)
    assert ct[0] == 0 and ct[5] == 1000 and ct[N - 1] == -1000 and ct[1] == -1024
    assert (ct == -1024).sum() == N - 3
    assert kbp(p.dose_gy)[6] == np.float32(70.0) and p.dose_gy.sum() == np.float32(82.5)
    assert np.flatnonzero(kbp(p.possible_dose_mask)).tolist() == [5, 6]
    assert list(p.masks) == ["Parotid_L"]
    assert np.flatnonzero(kbp(p.masks["Parotid_L"])).tolist() == [6, 7]


@pytest.mark.parametrize("file, rows, message", [
    ("ct.csv", ["0,1024.0", "5;2024.0"], r"ct\.csv: line 3 .*two comma-separated"),
    ("ct.csv", ["0,1024.0", "abc,1.0"], r"ct\.csv: line 3: flat index 'abc' is not an integer"),
    ("dose.csv", ["5,12.5", "6,"], r"dose\.csv: line 3: value '' is not a number"),
    ("dose.csv", ["5,nan"], r"dose\.csv: line 2: value 'nan' is not finite"),
    ("dose.csv", ["5,1", f"{N},2"], rf"dose\.csv: line 3: flat index {N} is outside 0\.\.{N - 1}"),
    ("LeftParotid.csv", ["-1,"], r"LeftParotid\.csv: line 2: flat index -1 is outside"),
    ("possible_dose_mask.csv", ["5,", "5,"], r"possible_dose_mask\.csv: flat index 5 appears 2"),
])
def test_malformed_csv_names_file_and_line(raw_folder, file, rows, message):
    write_csv(raw_folder / file, rows)
    with pytest.raises(InputError, match=message):
        ok.read_patient(raw_folder)


def test_bad_header_missing_files_and_voxel_dimensions(raw_folder, tmp_path):
    write_csv(raw_folder / "ct.csv", ["0,1"], header="index,value")
    with pytest.raises(InputError, match=r"ct\.csv: line 1 .*header ',data'"):
        ok.read_patient(raw_folder)
    (raw_folder / "ct.csv").unlink()
    with pytest.raises(InputError, match=r"ct\.csv: file not found"):
        ok.read_patient(raw_folder)
    (raw_folder / "voxel_dimensions.csv").write_text("3.9\n3.9\n")
    with pytest.raises(InputError, match=r"voxel_dimensions\.csv: voxel dimensions must be three"):
        ok.read_patient(raw_folder)
    (raw_folder / "voxel_dimensions.csv").unlink()
    with pytest.raises(InputError, match=r"voxel_dimensions\.csv: file not found"):
        ok.read_patient(raw_folder)
    with pytest.raises(InputError, match=r"pt_404: no such file or folder"):
        ok.read_patient(tmp_path / "pt_404")


def test_npz_errors(tmp_path):
    with pytest.raises(InputError, match=r"pt_1\.npz: every array must have the CT's shape"):
        ok.read_patient(npz(tmp_path / "pt_1.npz", dose_gy=np.zeros((12, 10, 7), np.float32)))
    with pytest.raises(InputError, match=r"pt_2\.npz: no 'voxel_dimensions_mm'"):
        ok.read_patient(npz(tmp_path / "pt_2.npz", voxel_dimensions_mm=None))
    with pytest.raises(InputError, match=r"pt_3\.npz: missing array\(s\) \['dose_gy'\]"):
        ok.read_patient(npz(tmp_path / "pt_3.npz", dose_gy=None))
    (tmp_path / "pt_4.npz").write_text("not a zip")
    with pytest.raises(InputError, match=r"pt_4\.npz: not a readable \.npz"):
        ok.read_patient(tmp_path / "pt_4.npz")


def test_list_patients_natural_order(tmp_path):
    for n in (10, 2, 1):
        npz(tmp_path / f"pt_{n}.npz")
    (tmp_path / "pt_3").mkdir()
    (tmp_path / "pt_3" / "ct.csv").write_text(",data\n")
    (tmp_path / "index.json").write_text("{}")
    assert [p.name for p in ok.list_patients(tmp_path)] == ["pt_1.npz", "pt_2.npz", "pt_3",
                                                            "pt_10.npz"]
    with pytest.raises(InputError, match="no OpenKBP patient"):
        ok.list_patients(tmp_path / "pt_3")
    # the raw pt_3 lacks its other files: skipped with a warning on request
    with pytest.warns(UserWarning, match=r"skipped .*pt_3"):
        ids = [p.patient_id for p in ok.iter_split(tmp_path, skip_errors=True)]
    assert ids == ["pt_1", "pt_2", "pt_10"]


def test_definition_notes_cover_every_name():
    assert set(ok.DEFINITION_NOTES) == set(ok.STRUCTURE_MAP.values())
    assert ok.STRUCTURE_MAP["Mandible"] == "Bone_Mandible"
    assert ok.STRUCTURE_MAP["Larynx"] == "Larynx_GSL"
    assert "may" in ok.DEFINITION_NOTES["Larynx_GSL"]
