"""OpenKBP reader, DICOM export and compact training arrays (soars_dose.openkbp).

Real data (``../shared/data/openkbp``) where it matters, skipped when absent;
small synthetic folders and files for the error paths.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import polygon

from soars_dose import audit
from soars_dose import openkbp as ok
from soars_dose.errors import InputError, OutputExistsError
from soars_dose.grid import Grid

N = 128 ** 3


def _real(shared_data: Path, rel: str) -> Path:
    p = shared_data / "openkbp" / rel
    if not p.exists():
        pytest.skip(f"{p} absent")
    return p


@pytest.fixture(scope="module")
def pt201(shared_data):
    return ok.read_patient(_real(shared_data, "validation/pt_201.npz"))


def _centroid(patient: ok.OpenKBPPatient, name: str) -> np.ndarray:
    return patient.grid.index_to_world(np.argwhere(patient.masks[name]).mean(axis=0))


# ------------------------------------------------------------------ reading
def test_raw_csv_folder_decodes_like_npz(shared_data, pt201):
    raw = ok.read_patient(_real(shared_data, "raw/pt_201"))
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


def test_axes_and_handedness_from_anatomy(pt201):
    p = pt201
    assert list(p.masks) == list(ok.STRUCTURE_MAP.values())  # pt_201 has all ten
    left, right = _centroid(p, "Parotid_L"), _centroid(p, "Parotid_R")
    assert left[0] > right[0] + 50  # patient left = +x (LPS), parotids ~10 cm apart
    assert _centroid(p, "Brainstem")[2] > _centroid(p, "Larynx_GSL")[2] + 80  # superior = +z
    assert _centroid(p, "Brainstem")[2] > _centroid(p, "Esophagus")[2]
    assert _centroid(p, "Bone_Mandible")[1] < _centroid(p, "SpinalCord")[1] - 50  # anterior = -y
    # placement convention: in-plane centre at x = y = 0, slices from z = 0 upwards
    lo, hi = p.grid.world_bounds()
    assert np.allclose((lo[:2] + hi[:2]) / 2, 0, atol=1e-9)
    assert p.grid.origin[2] == 0.0 and lo[2] == -0.5 * p.grid.spacing[0]
    assert np.array_equal(p.grid.direction, np.eye(3)[[2, 1, 0]])


def test_grid_spacing_and_axis_mapping(pt201):
    vd = (1.5, 2.0, 3.0)  # along OpenKBP i (A->P), j (R->L), k (S->I)
    g = ok.openkbp_grid(vd, shape=(4, 5, 6))
    assert g.shape == (6, 4, 5) and g.spacing == (3.0, 1.5, 2.0)
    a = np.zeros((4, 5, 6))
    a[1, 2, 3] = 1  # OpenKBP [i, j, k]
    ours = ok.to_lps_axes(a)
    assert ours.shape == (6, 4, 5) and ours[6 - 1 - 3, 1, 2] == 1
    assert np.array_equal(ok.from_lps_axes(ours), a)
    # one step along each OpenKBP axis moves the voxel centre by its size in +y, +x, -z

    def at(i, j, k):  # voxel centre of OpenKBP [i, j, k]
        return g.index_to_world([6 - 1 - k, i, j])

    assert np.allclose(at(2, 2, 3) - at(1, 2, 3), [0, 1.5, 0])
    assert np.allclose(at(1, 3, 3) - at(1, 2, 3), [2.0, 0, 0])
    assert np.allclose(at(1, 2, 4) - at(1, 2, 3), [0, 0, -3.0])
    vd = pt201.voxel_dimensions_mm
    assert pt201.grid.spacing == (vd[2], vd[0], vd[1])
    assert pt201.volume_cc("Brainstem") == pytest.approx(
        pt201.masks["Brainstem"].sum() * np.prod(vd) / 1000)


# ------------------------------------------------------------- error paths
def _write_csv(path: Path, rows: list[str], header: str = ",data") -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.fixture()
def raw_folder(tmp_path) -> Path:
    """A sparse OpenKBP patient: a few CT voxels, some dose, one structure."""
    f = tmp_path / "pt_7"
    f.mkdir()
    (f / "voxel_dimensions.csv").write_text("3.906\n3.906\n2.5\n")
    _write_csv(f / "ct.csv", ["0,1024.0", "5,2024.0", f"{N - 1},24.0"])
    _write_csv(f / "dose.csv", ["5,12.5", "6,70.0"])
    _write_csv(f / "possible_dose_mask.csv", ["5,", "6,"])
    _write_csv(f / "LeftParotid.csv", ["6,", "7,"])
    return f


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
    _write_csv(raw_folder / file, rows)
    with pytest.raises(InputError, match=message):
        ok.read_patient(raw_folder)


def test_bad_header_missing_files_and_voxel_dimensions(raw_folder, tmp_path):
    _write_csv(raw_folder / "ct.csv", ["0,1"], header="index,value")
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


def _npz(path: Path, shape=(12, 10, 8), vd=(2.0, 2.0, 3.0), **extra) -> Path:
    arrays = {"ct_hu": np.full(shape, -1024, np.int16), "dose_gy": np.zeros(shape, np.float32),
              "possible_dose_mask": np.zeros(shape, bool), "voxel_dimensions_mm": np.array(vd)}
    arrays.update(extra)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_errors(tmp_path):
    with pytest.raises(InputError, match=r"pt_1\.npz: every array must have the CT's shape"):
        ok.read_patient(_npz(tmp_path / "pt_1.npz", dose_gy=np.zeros((12, 10, 7), np.float32)))
    with pytest.raises(InputError, match=r"pt_2\.npz: no 'voxel_dimensions_mm'"):
        ok.read_patient(_npz(tmp_path / "pt_2.npz", voxel_dimensions_mm=None))
    with pytest.raises(InputError, match=r"pt_3\.npz: missing array\(s\) \['dose_gy'\]"):
        ok.read_patient(_npz(tmp_path / "pt_3.npz", dose_gy=None))
    (tmp_path / "pt_4.npz").write_text("not a zip")
    with pytest.raises(InputError, match=r"pt_4\.npz: not a readable \.npz"):
        ok.read_patient(tmp_path / "pt_4.npz")


def test_list_patients_natural_order(tmp_path):
    for n in (10, 2, 1):
        _npz(tmp_path / f"pt_{n}.npz")
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


# -------------------------------------------------------------------- DICOM
def test_voxel_edge_contours_are_the_exact_voxel_boundary():
    rng = np.random.default_rng(3)
    g = Grid((3, 14, 17), (2.5, 3.0, 4.0), (10.0, -20.0, 5.0))
    mask = rng.random(g.shape) < 0.45  # holes, diagonal contacts, isolated voxels
    back = np.zeros(g.shape, bool)
    for c in ok.voxel_edge_contours(mask, g):
        idx = g.world_to_index(c)
        assert np.allclose(idx[:, 1:] % 1, 0.5)  # every vertex on a voxel corner
        plane = np.zeros(g.shape[1:], bool)
        plane[polygon(idx[:, 1], idx[:, 2], shape=g.shape[1:])] = True
        back[round(idx[0, 0])] ^= plane  # even-odd rule
    assert np.array_equal(back, mask)


def test_write_dicom_round_trip(pt201, tmp_path):
    p = pt201
    out = ok.write_dicom(p, tmp_path / "pt_201")
    assert out.rtdose.name == "RTDOSE.dcm" and out.rtstruct.name == "RTSTRUCT_reference.dcm"
    assert len(list(out.ct_dir.glob("*.dcm"))) == 128
    with pytest.raises(OutputExistsError):
        ok.write_dicom(p, tmp_path / "pt_201")
    # a substitute set from OpenKBP-ordered masks, through the output folder
    oars = {n: ok.from_lps_axes(m) for n, m in p.masks.items() if n in ok.OAR_NAMES}
    sub = ok.write_masks_rtstruct(oars, tmp_path / "pt_201", tmp_path / "sub.dcm",
                                  label="soars", layout="openkbp")
    heads = [pydicom.dcmread(f, stop_before_pixels=True)
             for f in (out.ct.paths[0], out.rtdose, out.rtstruct, sub)]
    assert {h.PatientID for h in heads} == {"pt_201"}
    assert len({h.StudyInstanceUID for h in heads}) == 1
    frames = {heads[0].FrameOfReferenceUID, heads[1].FrameOfReferenceUID} | {
        h.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID for h in heads[2:]}
    assert len(frames) == 1
    rois = heads[2].StructureSetROISequence
    assert [r.ROIName for r in rois] == list(p.masks)
    assert {r.ROIGenerationAlgorithm for r in rois} == {"MANUAL"}
    assert {r.ROIGenerationAlgorithm for r in heads[3].StructureSetROISequence} == {"AUTOMATIC"}
    kinds = {o.RTROIInterpretedType for o in heads[2].RTROIObservationsSequence}
    assert kinds == {"ORGAN", "PTV"}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = audit.load_case(out.rtdose, {"reference": out.rtstruct, "soars": sub},
                               ct=out.ct_dir)
        stats = audit.dvh_all(case, audit.Settings(interpolation="nearest")).stats
    assert case.dose.grid.same_as(p.grid)
    ref = stats[stats["set"] == "reference"].set_index("roi")
    for name, mask in p.masks.items():
        cc = mask.sum() * p.grid.voxel_volume_mm3 / 1000
        assert ref.loc[name, "volume_cc"] == pytest.approx(cc, rel=0.01), name
        voxel_mean = float(p.dose_gy[mask].mean())
        assert ref.loc[name, "mean_gy"] == pytest.approx(voxel_mean, rel=0.01), name
    soars = stats[stats["set"] == "soars"].set_index("roi")
    assert list(soars.index) == list(oars)
    assert np.allclose(soars["volume_cc"], ref.loc[list(oars), "volume_cc"], rtol=1e-6)


# ---------------------------------------------------------- training arrays
def test_training_arrays_round_trip(shared_data, tmp_path):
    split = _real(shared_data, "validation")
    ids = ["pt_201", "pt_202"]
    out = tmp_path / "val.npz"
    summary = ok.write_training_arrays(split, out, patients=ids)
    assert summary.n_patients == 2 and summary.size_bytes == out.stat().st_size
    with pytest.raises(OutputExistsError):
        ok.write_training_arrays(split, out, patients=ids)
    back = ok.read_training_arrays(out)
    assert [d["patient_id"] for d in back] == ids
    names = [n for v in ok.TRAINING_BRANCHES.values() for n in v]
    for d in back:
        p = ok.read_patient(split / f"{d['patient_id']}.npz")
        start = np.array(d["crop_start"])
        box = tuple(slice(a, a + n) for a, n in zip(start, d["ct"].shape, strict=True))
        assert d["grid"].same_as(p.grid.crop(start, start + d["ct"].shape))
        assert d["spacing"] == p.grid.spacing
        # CT: the stored window decodes to the clipped HU within half a step
        hu = np.clip(p.ct_hu[box], -500, 1000)
        assert np.abs(ok.decode_ct(d["ct"]) - hu).max() <= ok.CT_STEP_HU / 2 + 1e-3
        assert np.array_equal(d["ct"], ok.encode_ct(p.ct_hu[box]))
        assert d["annotated"] == {n: n in p.masks for n in names}
        for branch, members in ok.TRAINING_BRANCHES.items():
            expected = np.zeros(d["ct"].shape, np.uint8)
            for value, n in enumerate(members, start=1):
                if n in p.masks:
                    assert p.masks[n][box].sum() == p.masks[n].sum(), f"{n} cut by the crop"
                    expected[p.masks[n][box]] = value
            assert np.array_equal(d["labels"][branch], expected), branch
        # in-plane: the body (HU > -500) on the kept slices is inside, with margin where possible
        body = p.ct_hu[box[0]] > -500
        assert body.sum() == (p.ct_hu[box[0]][:, box[1], box[2]] > -500).sum()


def test_training_arrays_overlaps_and_partial_labels(tmp_path):
    shape = (40, 30, 50)  # OpenKBP [i, j, k]
    ct = np.full(shape, -1024, np.int16)
    ct[10:20, 8:22, 5:45] = 40  # a box of "tissue"
    cord = np.zeros(shape, bool)
    cord[14:16, 14:16, 20:40] = True
    stem = np.zeros(shape, bool)
    stem[14:16, 14:16, 15:22] = True  # overlaps the cord on k = 20, 21: 8 voxels
    split = tmp_path / "split"
    split.mkdir()
    _npz(split / "pt_5.npz", shape=shape, ct_hu=ct, mask_SpinalCord=cord, mask_Brainstem=stem)
    summary = ok.write_training_arrays(split, tmp_path / "t.npz")
    assert summary.overlaps == {"Brainstem>SpinalCord": {"patients": 1, "voxels": 8}}
    (d,) = ok.read_training_arrays(tmp_path / "t.npz")
    assert d["annotated"] == {"Brainstem": True, "SpinalCord": True, "Bone_Mandible": False,
                              "Parotid_L": False, "Parotid_R": False, "Esophagus": False,
                              "Larynx_GSL": False}
    assert np.bincount(d["labels"]["anchor"].ravel()).tolist()[1:] == [stem.sum() - 8, cord.sum()]
    assert not d["labels"]["mid"].any()
    # z: OAR slices k = 15..39 widened by 12 and clipped to 0..49; in-plane: body + 4 voxels
    k_lo, k_hi = 50 - 1 - 39, 50 - 1 - 15  # OpenKBP k -> our slice
    assert d["crop_start"] == (max(0, k_lo - 12), 10 - 4, 8 - 4)
    assert d["ct"].shape == (min(50, k_hi + 13) - max(0, k_lo - 12), 18, 22)
    # the CLI writes the same content
    assert ok._main(["export-training", str(split), str(tmp_path / "cli.npz")]) == 0
    (c,) = ok.read_training_arrays(tmp_path / "cli.npz")
    assert np.array_equal(c["ct"], d["ct"]) and np.array_equal(c["labels"]["anchor"],
                                                               d["labels"]["anchor"])
    assert ok._main(["to-dicom", str(tmp_path / "nothing.npz"), str(tmp_path / "x")]) == 2


def test_definition_notes_cover_every_name():
    assert set(ok.DEFINITION_NOTES) == set(ok.STRUCTURE_MAP.values())
    assert ok.STRUCTURE_MAP["Mandible"] == "Bone_Mandible"
    assert ok.STRUCTURE_MAP["Larynx"] == "Larynx_GSL"
    assert "may" in ok.DEFINITION_NOTES["Larynx_GSL"]
