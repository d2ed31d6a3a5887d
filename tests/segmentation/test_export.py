"""Export: RTSTRUCT of predicted masks on a synthetic CT, and NIfTI label maps."""

import gzip
import struct

import numpy as np
import pydicom
import pytest

from soars_dose import oars as catalogue
from soars_dose.dicom.ct import read_ct_series
from soars_dose.dicom.rtstruct import read_rtstruct
from soars_dose.dicom.write import write_ct_series
from soars_dose.errors import (
    InputError,
    OutputExistsError,
    SoarsDoseWarning,
    UnknownOARError,
)
from soars_dose.grid import Grid
from soars_dose.rasterize import occupancy, sample_structure
from soars_dose.segmentation.export import (
    labels_to_masks,
    masks_to_labels,
    nifti_affine,
    write_nifti_labels,
    write_segmentation_rtstruct,
)

HFS = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])
HFP = np.array([[0.0, 0, 1], [0, -1, 0], [-1, 0, 0]])


def world(grid):
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    return grid.index_to_world(np.stack([k, j, i], -1))


def dice(a, b):
    return 2 * np.sum(a & b) / (a.sum() + b.sum())


def synthetic_masks(grid):
    w = world(grid)
    c = grid.index_to_world([5, 20, 22])
    d = w - c
    masks = {}
    masks["Brainstem"] = np.linalg.norm(d - [-8.0, 0, 0], axis=-1) < 7.0
    r = np.hypot(d[..., 0] - 9.0, d[..., 1])
    k = np.arange(grid.shape[0])[:, None, None]
    masks["Parotid_L"] = (r < 7.5) & (r > 3.5) & (k >= 2) & (k <= 7)  # ring with a hole
    small = np.zeros(grid.shape, bool)
    small[8, 31, 10:13] = True  # 3 voxels in a row
    masks["Lens_R"] = small
    return masks


@pytest.fixture(params=["HFS", "HFP"])
def ct_case(request, tmp_path):
    direction = HFS if request.param == "HFS" else HFP
    grid = Grid((12, 40, 44), (2.0, 1.0, 1.2), (-20.0, -15.0, 40.0), direction)
    hu = np.full(grid.shape, -1000.0)
    hu[:, 4:36, 4:40] = 30.0
    info = write_ct_series(hu, grid, tmp_path / "ct", patient_id="SEG01", patient_name="Seg^Test")
    ct = read_ct_series(tmp_path / "ct")
    assert ct.grid.same_as(grid)
    return ct, info, synthetic_masks(ct.grid), tmp_path


def test_rtstruct_round_trip(ct_case):
    ct, info, masks, tmp = ct_case
    path = tmp / "rs_soars.dcm"
    uid = write_segmentation_rtstruct(masks, ct, path)
    ss = read_rtstruct(path)
    assert ss.names() == list(masks)
    assert ss.frame_of_reference_uid == info.frame_of_reference_uid
    assert ss.referenced_series_uid == info.series_uid
    assert ss.study_instance_uid == info.study_uid and ss.sop_instance_uid == uid
    for s in ss:
        assert s.generation_algorithm == "AUTOMATIC"
        assert s.interpreted_type == "ORGAN"
        assert s.color == catalogue.get(s.name).color
        samples = sample_structure(s, ct.grid, nominal_spacing_mm=ct.slice_thickness_mm)
        got = occupancy(samples) >= 0.5
        assert dice(got, masks[s.name]) >= 0.99, s.name
    assert np.array_equal(occupancy(sample_structure(ss["Lens_R"], ct.grid,
                                                     nominal_spacing_mm=2.0)) >= 0.5,
                          masks["Lens_R"])
    # the ring keeps its hole: two contours per slice
    assert len(ss["Parotid_L"].contours) == 2 * 6

    ds = pydicom.dcmread(path)
    assert ds.PatientID == "SEG01" and str(ds.PatientName) == "Seg^Test"
    by_k = dict(zip(info.sop_instance_uids, range(ct.grid.shape[0])))
    for rc in ds.ROIContourSequence:
        for item in rc.ContourSequence:
            pts = np.asarray(item.ContourData, float).reshape(-1, 3)
            k = ct.grid.world_to_index(pts)[:, 0]
            ref = item.ContourImageSequence[0].ReferencedSOPInstanceUID
            assert np.allclose(k, by_k[ref], atol=1e-3)


def test_rtstruct_checks(ct_case):
    ct, _, masks, tmp = ct_case
    path = tmp / "rs.dcm"
    with pytest.raises(UnknownOARError, match="Parotid"):
        write_segmentation_rtstruct({"Parotid": masks["Parotid_L"]}, ct, path)
    with pytest.raises(InputError, match="shape"):
        write_segmentation_rtstruct({"Lens_L": masks["Lens_R"][1:]}, ct, path)
    with pytest.raises(InputError, match="boolean"):
        write_segmentation_rtstruct({"Lens_L": masks["Lens_R"] * 0.5}, ct, path)
    with pytest.warns(SoarsDoseWarning, match="Cochlea_L is empty"):
        write_segmentation_rtstruct({"Cochlea_L": np.zeros(ct.grid.shape, bool)}, ct, path)
    assert read_rtstruct(path)["Cochlea_L"].is_empty
    with pytest.raises(OutputExistsError):
        write_segmentation_rtstruct(masks, ct, path)


def test_labels_masks_round_trip():
    grid = Grid((12, 40, 44), (2.0, 1.0, 1.2), (0.0, 0.0, 0.0))
    masks = synthetic_masks(grid)
    lv = masks_to_labels(masks)
    assert lv.dtype == np.uint8 and lv.max() == 3
    back = labels_to_masks(lv, list(masks))
    for name in masks:
        assert np.array_equal(back[name], masks[name])


def read_nifti(path):
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    h = raw[:348]
    out = {
        "sizeof_hdr": struct.unpack_from("<i", h, 0)[0],
        "dim": struct.unpack_from("<8h", h, 40),
        "intent": struct.unpack_from("<h", h, 68)[0],
        "datatype": struct.unpack_from("<hh", h, 70),
        "pixdim": np.array(struct.unpack_from("<8f", h, 76)),
        "vox_offset": struct.unpack_from("<f", h, 108)[0],
        "codes": struct.unpack_from("<hh", h, 252),
        "quat": np.array(struct.unpack_from("<6f", h, 256)),
        "srow": np.array(struct.unpack_from("<12f", h, 280)).reshape(3, 4),
        "magic": h[344:348],
    }
    dt = {2: "<u1", 4: "<i2", 8: "<i4"}[out["datatype"][0]]
    n = out["dim"][1:4]
    off = int(out["vox_offset"])
    out["data"] = np.frombuffer(raw[off:], dtype=dt).reshape(n[2], n[1], n[0])
    return out


def qform_matrix(quat, pixdim):
    b, c, d = quat[:3]
    a = np.sqrt(max(0.0, 1 - b * b - c * c - d * d))
    r = np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ])
    r[:, 2] *= pixdim[0]  # qfac
    return r * pixdim[1:4][None, :]


def rotated():
    t = np.deg2rad(20.0)
    rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    return (rz @ np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]).T).T


@pytest.mark.parametrize("direction", [HFS, HFP, np.eye(3), rotated()],
                         ids=["HFS", "HFP", "identity", "oblique"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_header_and_affine(tmp_path, direction, suffix):
    grid = Grid((5, 6, 7), (3.0, 0.8, 1.1), (-12.5, 40.0, 7.25), direction)
    rng = np.random.default_rng(0)
    lv = rng.integers(0, 5, grid.shape).astype(np.int64)
    path = write_nifti_labels(lv, grid, tmp_path / f"labels{suffix}")
    h = read_nifti(path)
    assert h["sizeof_hdr"] == 348 and h["magic"] == b"n+1\0" and h["vox_offset"] == 352
    assert h["dim"][:4] == (3, 7, 6, 5)
    assert h["datatype"] == (2, 8) and h["intent"] == 1002 and h["codes"] == (1, 1)
    np.testing.assert_array_equal(h["data"], lv)
    aff = np.vstack([h["srow"], [0, 0, 0, 1]])
    np.testing.assert_allclose(aff, nifti_affine(grid), atol=1e-4)
    x, y, z = grid.origin
    np.testing.assert_allclose(aff @ [0, 0, 0, 1], [-x, -y, z, 1], atol=1e-4)
    lps = grid.index_to_world([3, 2, 1])  # array [k, j, i] = NIfTI (i, j, k) = (1, 2, 3)
    np.testing.assert_allclose(aff @ [1, 2, 3, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-4)
    np.testing.assert_allclose(qform_matrix(h["quat"], h["pixdim"]), aff[:3, :3], atol=1e-5)
    np.testing.assert_allclose(h["quat"][3:], aff[:3, 3], atol=1e-4)
    np.testing.assert_allclose(h["pixdim"][1:4], [1.1, 0.8, 3.0], atol=1e-6)


def test_nifti_checks(tmp_path):
    grid = Grid((2, 3, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    path = write_nifti_labels(np.full(grid.shape, 300), grid, tmp_path / "big.nii")
    assert read_nifti(path)["datatype"] == (4, 16)
    with pytest.raises(OutputExistsError):
        write_nifti_labels(np.zeros(grid.shape, int), grid, path)
    with pytest.raises(InputError, match=">= 0"):
        write_nifti_labels(-np.ones(grid.shape, int), grid, tmp_path / "neg.nii")
    with pytest.raises(InputError, match="shape"):
        write_nifti_labels(np.zeros((2, 3, 3), int), grid, tmp_path / "s.nii")
