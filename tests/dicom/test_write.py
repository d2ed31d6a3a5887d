"""DICOM writers: read back with plain pydicom and check geometry, values and contours."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from shapely.geometry import Point, Polygon

from soars_dose.dicom.write import (
    UnwritableGeometryError,
    masks_to_contours,
    patient_position_from_direction,
    write_ct_series,
    write_rtdose,
    write_rtstruct,
)
from soars_dose.errors import FrameOfReferenceError, OutputExistsError
from soars_dose.grid import Grid
from soars_dose.structures import Structure, StructureSet

HFS = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])
HFP = np.array([[0.0, 0, 1], [0, -1, 0], [-1, 0, 0]])  # IOP [-1,0,0, 0,-1,0], normal +z
FFS = np.array([[0.0, 0, -1], [0, 1, 0], [-1, 0, 0]])  # IOP [-1,0,0, 0,1,0], normal -z
HFDL = np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]])  # IOP [0,-1,0, 1,0,0], normal +z


def _grid(direction=HFS, shape=(4, 6, 5), spacing=(2.5, 1.2, 0.8), origin=(-3.1, 10.4, -50.0)):
    return Grid(shape, spacing, origin, direction)


def _read_series(paths):
    return [pydicom.dcmread(p) for p in paths]


def _grid_from_slices(slices) -> Grid:
    """Rebuild the grid the way a reader would: from IOP/IPP/PixelSpacing alone."""
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.array([s.ImagePositionPatient for s in slices], dtype=float)
    offsets = (ipp - ipp[0]) @ normal
    return Grid.from_dicom(iop, ipp[0], slices[0].PixelSpacing, offsets, slices[0].Rows, slices[0].Columns)


# --------------------------------------------------------------------- CT
@pytest.mark.parametrize(
    "direction, position",
    [(HFS, "HFS"), (HFP, "HFP"), (FFS, "FFS"), (HFDL, "HFDL")],
    ids=["HFS", "HFP", "FFS", "HFDL"],
)
def test_ct_series_geometry_and_values(tmp_path, direction, position):
    grid = _grid(direction)
    hu = np.random.default_rng(0).integers(-1000, 2000, grid.shape).astype(np.int16)
    info = write_ct_series(hu, grid, tmp_path / "ct", patient_id="P1", patient_name="Doe^J")

    slices = _read_series(info.paths)
    assert [s.SOPInstanceUID for s in slices] == info.sop_instance_uids
    assert len(set(info.sop_instance_uids)) == grid.shape[0]
    for k, s in enumerate(slices):
        assert s.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert s.SOPClassUID == pydicom.uid.CTImageStorage
        assert s.Modality == "CT"
        assert s.PatientID == "P1"
        assert s.InstanceNumber == k + 1
        assert s.PatientPosition == position
        assert s.SeriesInstanceUID == info.series_uid
        assert s.StudyInstanceUID == info.study_uid
        assert s.FrameOfReferenceUID == info.frame_of_reference_uid
        np.testing.assert_allclose(s.ImagePositionPatient, grid.index_to_world([k, 0, 0]), atol=1e-6)
        np.testing.assert_allclose(
            s.ImageOrientationPatient, np.concatenate([direction[2], direction[1]]), atol=1e-9
        )
        np.testing.assert_allclose(s.PixelSpacing, [grid.spacing[1], grid.spacing[2]])
        assert float(s.SliceThickness) == pytest.approx(grid.spacing[0])
        assert (s.Rows, s.Columns) == grid.shape[1:]
        values = s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept)
        np.testing.assert_array_equal(values, hu[k])
    assert _grid_from_slices(slices).same_as(grid)


def test_ct_series_hfp_orientation_in_file(tmp_path):
    info = write_ct_series(np.zeros((2, 3, 3)), _grid(HFP, shape=(2, 3, 3)), tmp_path, patient_id="P")
    s = pydicom.dcmread(info.paths[0])
    assert [float(v) for v in s.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert s.PatientPosition == "HFP"


def test_ct_series_values_below_air_use_signed_pixels(tmp_path):
    grid = _grid(shape=(1, 2, 2))
    hu = np.array([[[-2048, -1000], [0, 3000]]])
    info = write_ct_series(hu, grid, tmp_path, patient_id="P")
    s = pydicom.dcmread(info.paths[0])
    assert s.PixelRepresentation == 1
    np.testing.assert_array_equal(s.pixel_array + float(s.RescaleIntercept), hu[0])


def test_ct_series_refuses_to_overwrite(tmp_path):
    grid = _grid(shape=(2, 3, 3))
    write_ct_series(np.zeros(grid.shape), grid, tmp_path, patient_id="P")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_ct_series(np.zeros(grid.shape), grid, tmp_path, patient_id="P")
    write_ct_series(np.ones(grid.shape), grid, tmp_path, patient_id="P", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CT.0001.dcm", "CT.0002.dcm"]  # no temp files


def test_ct_series_rejects_shape_mismatch(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_ct_series(np.zeros((1, 2, 3)), _grid(), tmp_path, patient_id="P")


def test_patient_position_defaults_for_oblique():
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = np.array([[0, -s, c], [0, c, s], [1, 0, 0]])
    assert patient_position_from_direction(oblique) == "HFS"
    assert patient_position_from_direction(HFS) == "HFS"


# ------------------------------------------------------------------ RT Dose
def _smooth_dose(shape, seed=1):
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    rng = np.random.default_rng(seed)
    return 70.0 * np.exp(-((k - 2) ** 2 + (j - 3) ** 2 + (i - 2) ** 2) / 8.0) + rng.uniform(0, 0.5, shape)


@pytest.mark.parametrize("bits", [32, 16])
@pytest.mark.parametrize("direction", [HFS, HFP, FFS, HFDL], ids=["HFS", "HFP", "FFS", "HFDL"])
def test_rtdose_round_trip(tmp_path, bits, direction):
    grid = _grid(direction, shape=(5, 6, 7), spacing=(3.0, 2.5, 2.0))
    dose = _smooth_dose(grid.shape)
    uid = write_rtdose(dose, grid, tmp_path / "dose.dcm", frame_of_reference_uid="1.2.3",
                       patient_id="P1", bits=bits, referenced_plan_uid="1.2.3.4")

    ds = pydicom.dcmread(tmp_path / "dose.dcm")
    assert ds.SOPInstanceUID == uid
    assert ds.SOPClassUID == pydicom.uid.RTDoseStorage
    assert (ds.Modality, ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("RTDOSE", "GY", "PHYSICAL", "PLAN")
    assert ds.FrameOfReferenceUID == "1.2.3"
    assert ds.FrameIncrementPointer == pydicom.tag.Tag(0x3004, 0x000C)
    assert (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == grid.shape
    assert ds.BitsAllocated == bits and ds.PixelRepresentation == 0
    assert len(str(ds["DoseGridScaling"].value)) <= 16
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    np.testing.assert_allclose(ds.ImagePositionPatient, grid.origin, atol=1e-6)
    np.testing.assert_allclose(ds.GridFrameOffsetVector, 3.0 * np.arange(5), atol=1e-9)

    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    read_grid = Grid.from_dicom(iop, ds.ImagePositionPatient, ds.PixelSpacing,
                                ds.GridFrameOffsetVector, ds.Rows, ds.Columns)
    assert read_grid.same_as(grid)
    read = ds.pixel_array * float(ds.DoseGridScaling)
    assert np.max(np.abs(read - dose)) <= 1e-4 * dose.max()


def test_rtdose_absolute_offsets_are_patient_z(tmp_path):
    grid = _grid(HFS, shape=(4, 3, 3), spacing=(2.5, 2, 2), origin=(0.0, 0.0, -41.25))
    write_rtdose(np.ones(grid.shape), grid, tmp_path / "d.dcm", frame_of_reference_uid="1.2", offsets="absolute")
    ds = pydicom.dcmread(tmp_path / "d.dcm")
    np.testing.assert_allclose(ds.GridFrameOffsetVector, -41.25 + 2.5 * np.arange(4))
    assert float(ds.GridFrameOffsetVector[0]) == pytest.approx(float(ds.ImagePositionPatient[2]))


def test_rtdose_rejects_axis0_against_normal(tmp_path):
    flipped = np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # HFS in-plane, slices running -z
    with pytest.raises(UnwritableGeometryError, match="flip"):
        write_rtdose(np.ones((2, 2, 2)), _grid(flipped, shape=(2, 2, 2)), tmp_path / "d.dcm",
                     frame_of_reference_uid="1.2")
    with pytest.raises(ValueError, match="relative"):  # absolute needs +z frames; FFS runs -z
        write_rtdose(np.ones((2, 2, 2)), _grid(FFS, shape=(2, 2, 2)), tmp_path / "d.dcm",
                     frame_of_reference_uid="1.2", offsets="absolute")
    assert not (tmp_path / "d.dcm").exists()


def test_rtdose_rejects_bad_dose(tmp_path):
    grid = _grid(shape=(2, 2, 2))
    with pytest.raises(ValueError, match="non-negative"):
        write_rtdose(-np.ones(grid.shape), grid, tmp_path / "d.dcm", frame_of_reference_uid="1.2")
    with pytest.raises(ValueError, match="NaN"):
        write_rtdose(np.full(grid.shape, np.nan), grid, tmp_path / "d.dcm", frame_of_reference_uid="1.2")


def test_rtdose_all_zero(tmp_path):
    grid = _grid(shape=(2, 2, 2))
    write_rtdose(np.zeros(grid.shape), grid, tmp_path / "d.dcm", frame_of_reference_uid="1.2")
    ds = pydicom.dcmread(tmp_path / "d.dcm")
    assert not ds.pixel_array.any()


# ------------------------------------------------------------ masks -> contours
def _disc_grid(spacing=(2.0, 0.8, 1.2)):
    return Grid((3, 80, 60), spacing, (-30.0, -40.0, 12.0))


def _disc(grid, radius_mm=20.0, k=1):
    j, i = np.mgrid[: grid.shape[1], : grid.shape[2]]
    y = (j - 40) * grid.spacing[1]
    x = (i - 30) * grid.spacing[2]
    mask = np.zeros(grid.shape, bool)
    mask[k] = x**2 + y**2 <= radius_mm**2
    return mask


def test_disc_contour_area_matches_mask(tmp_path):
    grid = _disc_grid()
    mask = _disc(grid)
    contours = masks_to_contours(mask, grid)
    assert len(contours) == 1
    c = contours[0]
    assert c.shape[1] == 3
    # On the plane of slice 1 (HFS: z = origin z + 1 * 2 mm).
    np.testing.assert_allclose(c[:, 2], grid.index_to_world([1, 0, 0])[2])
    area = Polygon(c[:, :2]).area
    pixel_area = mask.sum() * grid.spacing[1] * grid.spacing[2]
    assert area == pytest.approx(pixel_area, rel=0.03)
    assert area == pytest.approx(np.pi * 20.0**2, rel=0.03)
    assert not np.allclose(c[0], c[-1])  # closing point not repeated


def test_contours_separate_inside_from_outside_voxel_centres():
    grid = _disc_grid()
    mask = _disc(grid, radius_mm=9.0)
    poly = Polygon(masks_to_contours(mask, grid)[0][:, :2])
    for kji in np.argwhere(mask[1:2] | ~mask[1:2]):
        x, y, _ = grid.index_to_world([1, kji[1], kji[2]])
        assert poly.contains(Point(x, y)) == bool(mask[1, kji[1], kji[2]])


def test_hole_gives_two_contours_with_even_odd_area():
    grid = _disc_grid()
    mask = _disc(grid, 20.0) & ~_disc(grid, 8.0)
    contours = masks_to_contours(mask, grid)
    assert len(contours) == 2
    areas = sorted(Polygon(c[:, :2]).area for c in contours)
    pixel_area = mask.sum() * grid.spacing[1] * grid.spacing[2]
    assert areas[1] - areas[0] == pytest.approx(pixel_area, rel=0.03)


def test_mask_touching_grid_edge_is_closed_and_small_bits_dropped():
    grid = Grid((2, 5, 5), (1, 1, 1), (0, 0, 0))
    mask = np.zeros(grid.shape, bool)
    mask[0] = True  # the whole slice
    contours = masks_to_contours(mask, grid)
    assert len(contours) == 1
    assert Polygon(contours[0][:, :2]).area == pytest.approx(25 - 4 * 0.125)  # 4 cut corners
    assert len(contours[0]) == 8  # straight runs collapsed: 4 edges + 4 corner cuts


def test_masks_to_contours_hfp_geometry():
    grid = Grid((1, 20, 20), (2, 1, 1), (10.0, 10.0, 0.0), HFP)
    mask = np.zeros(grid.shape, bool)
    mask[0, 2:6, 3:8] = True  # rows 2..5 (y = 10 - j), cols 3..7 (x = 10 - i)
    (c,) = masks_to_contours(mask, grid)
    assert c[:, 0].min() == pytest.approx(10 - 7.5) and c[:, 0].max() == pytest.approx(10 - 2.5)
    assert c[:, 1].min() == pytest.approx(10 - 5.5) and c[:, 1].max() == pytest.approx(10 - 1.5)


# ------------------------------------------------------------------ RT Struct
def _ct_and_structures(tmp_path):
    grid = _disc_grid()
    info = write_ct_series(np.zeros(grid.shape), grid, tmp_path / "ct", patient_id="P1")
    disc = Structure("Parotid_L", 7, masks_to_contours(_disc(grid), grid), color=(1, 2, 3))
    ring = Structure("Body", 2, masks_to_contours(_disc(grid, 25.0) & ~_disc(grid, 5.0), grid),
                     interpreted_type="EXTERNAL")
    ptv = Structure("PTV70", 3, masks_to_contours(_disc(grid, 4.0, k=2), grid), interpreted_type="PTV")
    off_plane = Structure("Marker", 9, [np.array([[0.0, 0.0, -29.0]])], interpreted_type="MARKER")
    empty = Structure("Empty", 11)
    return grid, info, StructureSet([disc, ring, ptv, off_plane, empty])


def test_rtstruct_round_trip(tmp_path):
    grid, info, sset = _ct_and_structures(tmp_path)
    uid = write_rtstruct(sset, tmp_path / "rs.dcm", frame_of_reference_uid=info.frame_of_reference_uid,
                         ct=info, patient_id="P1", label="reference")
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert ds.SOPInstanceUID == uid
    assert ds.SOPClassUID == pydicom.uid.RTStructureSetStorage
    assert ds.Modality == "RTSTRUCT"
    assert ds.StudyInstanceUID == info.study_uid
    assert ds.StructureSetLabel == "reference"

    rois = ds.StructureSetROISequence
    assert [r.ROIName for r in rois] == ["Parotid_L", "Body", "PTV70", "Marker", "Empty"]
    assert [r.ROINumber for r in rois] == [7, 2, 3, 9, 11]
    assert all(r.ReferencedFrameOfReferenceUID == info.frame_of_reference_uid for r in rois)
    assert all(r.ROIGenerationAlgorithm == "MANUAL" for r in rois)
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert types == {7: "ORGAN", 2: "EXTERNAL", 3: "PTV", 9: "MARKER", 11: "ORGAN"}

    by_number = {rc.ReferencedROINumber: rc for rc in ds.ROIContourSequence}
    assert list(by_number[7].ROIDisplayColor) == [1, 2, 3]
    assert "ContourSequence" not in by_number[11]
    assert len(by_number[2].ContourSequence) == 2  # outer ring and hole
    (item,) = by_number[7].ContourSequence
    assert item.ContourGeometricType == "CLOSED_PLANAR"
    points = np.array(item.ContourData, dtype=float).reshape(-1, 3)
    assert item.NumberOfContourPoints == len(points)
    np.testing.assert_allclose(points, sset["Parotid_L"].contours[0], atol=6e-4)
    assert all(len(str(v)) <= 16 for v in item["ContourData"].value)
    # Each contour references the CT slice it lies on; the off-plane marker none.
    assert item.ContourImageSequence[0].ReferencedSOPInstanceUID == info.sop_instance_uids[1]
    assert by_number[3].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID == \
        info.sop_instance_uids[2]
    marker = by_number[9].ContourSequence[0]
    assert marker.ContourGeometricType == "POINT" and "ContourImageSequence" not in marker

    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == info.frame_of_reference_uid
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == info.study_uid
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == info.series_uid
    assert [c.ReferencedSOPInstanceUID for c in series.ContourImageSequence] == info.sop_instance_uids


def test_rtstruct_without_ct_and_from_list(tmp_path):
    grid = _disc_grid()
    s = Structure("Lens_L", 1, masks_to_contours(_disc(grid, 3.0), grid), generation_algorithm="AUTOMATIC")
    write_rtstruct([s], tmp_path / "rs.dcm", frame_of_reference_uid="1.2.3", study_uid="1.2.3.4")
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert ds.StudyInstanceUID == "1.2.3.4"
    assert ds.StructureSetROISequence[0].ROIGenerationAlgorithm == "AUTOMATIC"
    assert "RTReferencedStudySequence" not in ds.ReferencedFrameOfReferenceSequence[0]
    assert "ContourImageSequence" not in ds.ROIContourSequence[0].ContourSequence[0]


def test_rtstruct_checks(tmp_path):
    grid, info, sset = _ct_and_structures(tmp_path)
    with pytest.raises(FrameOfReferenceError):
        write_rtstruct(sset, tmp_path / "rs.dcm", frame_of_reference_uid="9.9", ct=info)
    dup = [Structure("A", 1), Structure("B", 1)]
    with pytest.raises(ValueError, match="unique"):
        write_rtstruct(dup, tmp_path / "rs.dcm", frame_of_reference_uid="9.9")
    write_rtstruct(sset, tmp_path / "rs.dcm", frame_of_reference_uid=info.frame_of_reference_uid)
    with pytest.raises(OutputExistsError):
        write_rtstruct(sset, tmp_path / "rs.dcm", frame_of_reference_uid=info.frame_of_reference_uid)


def test_rtstruct_huge_contour_falls_back_to_implicit_vr(tmp_path):
    t = np.linspace(0, 2 * np.pi, 6000, endpoint=False)
    big = np.column_stack([123.456789 * np.cos(t), 123.456789 * np.sin(t), np.full_like(t, -12.5)])
    write_rtstruct([Structure("Body", 1, [big])], tmp_path / "rs.dcm", frame_of_reference_uid="1.2")
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    points = np.array(ds.ROIContourSequence[0].ContourSequence[0].ContourData, float).reshape(-1, 3)
    np.testing.assert_allclose(points, big, atol=6e-4)
