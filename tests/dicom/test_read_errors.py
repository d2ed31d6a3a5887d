"""Bad DICOM input gets a specific error or warning naming the file."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from soars_dose import audit
from soars_dose.dicom.ct import read_ct_series
from soars_dose.dicom.rtdose import read_rtdose, read_rtdoses
from soars_dose.dicom.rtstruct import read_rtstruct
from soars_dose.errors import (
    DicomReadError,
    DoseUnitsError,
    FrameOfReferenceError,
    GeometryError,
    SoarsDoseWarning,
)

from ..helpers import oars, small_grid, write_case


def test_not_dicom(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not DICOM")
    with pytest.raises(DicomReadError, match="notes.dcm"):
        read_rtdose(p)


def test_missing_file(tmp_path):
    with pytest.raises(DicomReadError, match="no such file"):
        read_rtstruct(tmp_path / "absent.dcm")


def test_wrong_modality_is_named(tmp_path):
    paths = write_case(tmp_path, {"ref": oars()})
    with pytest.raises(DicomReadError, match="is a RTSTRUCT object, expected RTDOSE"):
        read_rtdose(paths["ref"])
    with pytest.raises(DicomReadError, match="expected RTSTRUCT"):
        read_rtstruct(paths["rtdose"])


def test_relative_dose_refused_without_prescription(tmp_path):
    grid = small_grid()
    rel = np.full(grid.shape, 0.5)
    paths = write_case(tmp_path, {}, dose=rel, dose_units="RELATIVE")
    with pytest.raises(DoseUnitsError, match="RELATIVE.*prescription"):
        read_rtdose(paths["rtdose"])
    d = read_rtdose(paths["rtdose"], prescription_gy=70.0)
    assert d.values.max() == pytest.approx(35.0, rel=1e-4)


def test_absolute_and_relative_frame_offsets_agree(tmp_path):
    grid = small_grid()
    a = write_case(tmp_path / "a", {}, grid=grid, offsets="relative")
    b = write_case(tmp_path / "b", {}, grid=grid, offsets="absolute")
    assert list(pydicom.dcmread(b["rtdose"]).GridFrameOffsetVector)[0] != 0
    da, db = read_rtdose(a["rtdose"]), read_rtdose(b["rtdose"])
    assert da.grid.same_as(db.grid) and da.grid.same_as(grid)
    np.testing.assert_allclose(da.values, db.values)


def test_ambiguous_frame_offsets(tmp_path):
    paths = write_case(tmp_path, {})
    ds = pydicom.dcmread(paths["rtdose"])
    ds.GridFrameOffsetVector = [v + 7.0 for v in ds.GridFrameOffsetVector]
    ds.save_as(paths["rtdose"])
    with pytest.raises(GeometryError, match="ambiguous"):
        read_rtdose(paths["rtdose"])


def test_decreasing_frame_offsets_are_reordered(tmp_path):
    grid = small_grid()
    paths = write_case(tmp_path, {}, grid=grid)
    ds = pydicom.dcmread(paths["rtdose"])
    n = len(ds.GridFrameOffsetVector)
    # the same volume stored top-down: first frame is the highest slice
    arr = ds.pixel_array[::-1].copy()
    ds.PixelData = arr.tobytes()
    ds.ImagePositionPatient = [float(v) for v in grid.index_to_world([n - 1, 0, 0])]
    ds.GridFrameOffsetVector = [-2.5 * k for k in range(n)]
    ds.save_as(paths["rtdose"])
    d = read_rtdose(paths["rtdose"])
    assert d.grid.same_as(grid)
    ref = read_rtdose(write_case(tmp_path / "r", {}, grid=grid)["rtdose"])
    np.testing.assert_allclose(d.values, ref.values)


def test_oblique_dose_refused(tmp_path):
    paths = write_case(tmp_path, {})
    ds = pydicom.dcmread(paths["rtdose"])
    c, s = np.cos(0.2), np.sin(0.2)
    ds.ImageOrientationPatient = [c, s, 0, -s, c, 0]
    ds.save_as(paths["rtdose"])
    with pytest.raises(GeometryError, match="oblique"):
        read_rtdose(paths["rtdose"])


def test_oblique_ct_refused(shared_data):
    with pytest.raises(GeometryError, match="oblique"):
        read_ct_series(shared_data / "rt_utils" / "oriented_data")


def test_several_doses_need_sum_request(tmp_path):
    a = write_case(tmp_path / "a", {}, summation_type="BEAM")
    b = write_case(tmp_path / "b", {}, summation_type="BEAM")
    with pytest.raises(DicomReadError, match="sum_doses=True"):  # the Python spelling here
        read_rtdoses([a["rtdose"], b["rtdose"]])
    from soars_dose.console import cli_interface

    with cli_interface(), pytest.raises(DicomReadError, match="--sum-doses"):
        read_rtdoses([a["rtdose"], b["rtdose"]])
    total = read_rtdoses([a["rtdose"], b["rtdose"]], sum_doses=True)
    single = read_rtdose(a["rtdose"])
    np.testing.assert_allclose(total.values, 2 * single.values, rtol=1e-5)
    assert "SUM of 2" in total.summation_type and "BEAM" in total.summation_type


def test_summing_doses_on_different_grids_refused(tmp_path):
    g2 = small_grid()
    from soars_dose.grid import Grid

    g2 = Grid(g2.shape, g2.spacing, (g2.origin[0] + 1.0, *g2.origin[1:]))
    a = write_case(tmp_path / "a", {})
    b = write_case(tmp_path / "b", {}, grid=g2)
    with pytest.raises(GeometryError, match="only doses on one grid"):
        read_rtdoses([a["rtdose"], b["rtdose"]], sum_doses=True)


def test_frame_of_reference_mismatch(tmp_path):
    paths = write_case(tmp_path, {"ref": oars()})
    other = write_case(tmp_path / "o", {"sub": oars()}, frame="1.2.3.4.5")
    with pytest.raises(FrameOfReferenceError, match="FrameOfReferenceUID"):
        audit.load_case(paths["rtdose"], {"reference": paths["ref"], "x": other["sub"]})
    case = audit.load_case(paths["rtdose"], {"reference": paths["ref"], "x": other["sub"]},
                           allow_frame_mismatch=True)
    assert any("ignored on request" in n for n in case.notes)


def test_point_and_open_contours_skipped_with_warning(tmp_path):
    paths = write_case(tmp_path, {"ref": oars()})
    ds = pydicom.dcmread(paths["ref"])
    item = ds.ROIContourSequence[0].ContourSequence[0]
    item.ContourGeometricType = "POINT"
    ds.ROIContourSequence[1].ContourSequence[0].ContourGeometricType = "OPEN_PLANAR"
    ds.save_as(paths["ref"])
    with pytest.warns(SoarsDoseWarning, match="skipped 1 POINT contour"):
        ss = read_rtstruct(paths["ref"])
    assert len(ss["Parotid_L"].contours) == len(oars()[0].contours) - 1


def test_degenerate_contours_skipped(tmp_path):
    paths = write_case(tmp_path, {"ref": oars()})
    ds = pydicom.dcmread(paths["ref"])
    c = ds.ROIContourSequence[0].ContourSequence[0]
    c.ContourData = [0, 0, -8, 1, 1, -8]
    c.NumberOfContourPoints = 2
    ds.save_as(paths["ref"])
    with pytest.warns(SoarsDoseWarning, match="2 point"):
        read_rtstruct(paths["ref"])


def test_uneven_ct_slices_detected(tmp_path):
    from soars_dose.dicom.write import write_ct_series
    from soars_dose.grid import Grid

    grid = Grid((6, 8, 8), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    info = write_ct_series(np.zeros(grid.shape, np.int16), grid, tmp_path / "ct", patient_id="P")
    (tmp_path / "ct" / info.paths[3].name).unlink()  # a dropped slice
    with pytest.warns(SoarsDoseWarning, match="1 slice"):
        ct = read_ct_series(tmp_path / "ct")
    assert ct.uneven and ct.missing_slices == 1


def test_rtstruct_drawn_on_another_series_is_reported(tmp_path):
    from soars_dose.dicom.write import write_ct_series

    grid = small_grid()
    info = write_ct_series(np.zeros(grid.shape, np.int16), grid, tmp_path / "ct",
                           patient_id="P", frame_of_reference_uid="1.2.826.0.1.3680043.8.498.77")
    other = write_ct_series(np.zeros(grid.shape, np.int16), grid, tmp_path / "ct2",
                            patient_id="P", frame_of_reference_uid="1.2.826.0.1.3680043.8.498.77")
    from soars_dose.dicom.write import write_rtstruct

    paths = write_case(tmp_path / "c", {})
    write_rtstruct(oars(), tmp_path / "rs.dcm", frame_of_reference_uid="1.2.826.0.1.3680043.8.498.77",
                   ct=other)
    with pytest.warns(SoarsDoseWarning, match="drawn on image series"):
        audit.load_case(paths["rtdose"], {"reference": tmp_path / "rs.dcm"}, ct=tmp_path / "ct")
    assert info.series_uid != other.series_uid
