"""Synthetic head-and-neck cases: real DICOM-RT files with plausible anatomy and dose."""

from __future__ import annotations

from collections import defaultdict
from functools import reduce

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from shapely.geometry import Polygon

from soars_dose.grid import Grid
from soars_dose.synthetic.cohort import (
    NAME_VARIANTS,
    OAR_NAMES,
    SUBSTITUTE_SETS,
    make_cohort,
    make_patient,
)

SLICE_MM = 2.5


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return make_patient(tmp_path_factory.mktemp("phantom"), "PH_TEST", seed=7)


@pytest.fixture(scope="module")
def rois(case):
    """Set name -> {TG-263 name -> list of (n, 3) contours}, read back with pydicom."""
    out = {}
    for set_name, path in {"reference": case.reference, **case.sets}.items():
        ds = pydicom.dcmread(path)
        names = {r.ROINumber: r.ROIName for r in ds.StructureSetROISequence}
        written = {v: k for k, v in case.truth["roi_names"].get(set_name, {}).items()}
        out[set_name] = {
            written.get(names[rc.ReferencedROINumber], names[rc.ReferencedROINumber]): [
                np.array(c.ContourData, dtype=float).reshape(-1, 3) for c in rc.ContourSequence
            ]
            for rc in ds.ROIContourSequence
        }
    return out


def _slices(contours):
    """z (rounded to 0.01 mm) -> even-odd region of that slice's polygons."""
    by_z = defaultdict(list)
    for c in contours:
        by_z[round(float(c[0, 2]), 2)].append(Polygon(c[:, :2]))
    return {z: reduce(lambda a, b: a.symmetric_difference(b), polys) for z, polys in by_z.items()}


def _volume_cc(contours):
    return sum(r.area for r in _slices(contours).values()) * SLICE_MM / 1000.0


def _dice(a, b):
    sa, sb = _slices(a), _slices(b)
    inter = sum(sa[z].intersection(sb[z]).area for z in sa.keys() & sb.keys())
    total = sum(r.area for r in sa.values()) + sum(r.area for r in sb.values())
    return 2.0 * inter / total


def _dose(case):
    ds = pydicom.dcmread(case.rtdose)
    grid = Grid.from_dicom(ds.ImageOrientationPatient, ds.ImagePositionPatient, ds.PixelSpacing,
                           ds.GridFrameOffsetVector, ds.Rows, ds.Columns)
    return ds, grid, ds.pixel_array * float(ds.DoseGridScaling)


def _dose_at(case, points):
    _, grid, dose = _dose(case)
    return ndimage.map_coordinates(dose, grid.world_to_index(points).T, order=1, mode="nearest")


# ------------------------------------------------------------------- files
def test_files_exist_and_share_study_and_frame(case):
    ct_files = sorted(case.ct_dir.glob("*.dcm"))
    assert len(ct_files) == 60  # 150 mm at 2.5 mm
    ct = [pydicom.dcmread(p, stop_before_pixels=True) for p in ct_files]
    assert {s.Modality for s in ct} == {"CT"}
    assert {s.StudyInstanceUID for s in ct} == {case.study_uid}
    assert {s.FrameOfReferenceUID for s in ct} == {case.frame_of_reference_uid}
    assert {s.PatientPosition for s in ct} == {"HFS"}
    ct_series = ct[0].SeriesInstanceUID
    ct_uids = {s.SOPInstanceUID for s in ct}

    dose = pydicom.dcmread(case.rtdose)
    assert (dose.Modality, dose.DoseSummationType, dose.DoseUnits) == ("RTDOSE", "PLAN", "GY")
    assert dose.StudyInstanceUID == case.study_uid
    assert dose.FrameOfReferenceUID == case.frame_of_reference_uid
    assert not np.allclose(dose.ImagePositionPatient, ct[0].ImagePositionPatient)

    assert set(case.sets) == set(SUBSTITUTE_SETS)
    for path in [case.reference, *case.sets.values()]:
        rs = pydicom.dcmread(path)
        assert rs.Modality == "RTSTRUCT"
        assert rs.StudyInstanceUID == case.study_uid
        assert rs.PatientID == "PH_TEST"
        (frame,) = rs.ReferencedFrameOfReferenceSequence
        assert frame.FrameOfReferenceUID == case.frame_of_reference_uid
        series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
        assert series.SeriesInstanceUID == ct_series
        assert {c.ReferencedSOPInstanceUID for c in series.ContourImageSequence} == ct_uids


def test_ct_numbers_are_head_and_neck_like(case):
    ct = sorted(case.ct_dir.glob("*.dcm"))
    hu = np.stack([pydicom.dcmread(p).pixel_array.astype(float) - 1024 for p in ct])
    assert np.median(hu[:, :3, :3]) == pytest.approx(-1000, abs=40)  # air in the corner
    assert np.mean(hu > 600) > 0.002                                # bone: skull, mandible, spine
    soft = hu[(hu > -50) & (hu < 100)]
    assert np.median(soft) == pytest.approx(35, abs=15)
    assert np.mean(hu < -900) > 0.3                                  # air around and inside


# --------------------------------------------------------------- reference
def test_reference_has_13_oars_external_and_ptv(case):
    rs = pydicom.dcmread(case.reference)
    names = [r.ROIName for r in rs.StructureSetROISequence]
    assert set(OAR_NAMES) <= set(names)
    assert len(OAR_NAMES) == 13
    types = {r.ROINumber: o.RTROIInterpretedType
             for r, o in zip(rs.StructureSetROISequence, rs.RTROIObservationsSequence)}
    by_name = {r.ROIName: types[r.ROINumber] for r in rs.StructureSetROISequence}
    assert by_name["External"] == "EXTERNAL"
    assert by_name["PTV70"] == "PTV"
    assert all(by_name[n] == "ORGAN" for n in OAR_NAMES)


PLAUSIBLE_CC = {
    "Brainstem": (15, 35), "Eye_L": (5, 9.5), "Eye_R": (5, 9.5), "Lens_L": (0.1, 0.45),
    "Lens_R": (0.1, 0.45), "OpticChiasm": (0.15, 0.8), "OpticNrv_L": (0.3, 1.1),
    "OpticNrv_R": (0.3, 1.1), "Parotid_L": (12, 35), "Parotid_R": (12, 35),
    "SpinalCord": (1.5, 8), "Joint_TM_L": (0.5, 2), "Joint_TM_R": (0.5, 2),
    "PTV70": (25, 150), "External": (1500, 4500),
}


@pytest.mark.parametrize("name", list(PLAUSIBLE_CC))
def test_reference_volumes_plausible(rois, name):
    lo, hi = PLAUSIBLE_CC[name]
    assert lo <= _volume_cc(rois["reference"][name]) <= hi


def test_reference_anatomy_sides_and_cord_calibre(rois):
    ref = rois["reference"]
    centre_x = lambda n: np.mean(np.vstack(ref[n])[:, 0])  # noqa: E731
    for organ in ("Eye", "Lens", "OpticNrv", "Parotid", "Joint_TM"):
        assert centre_x(f"{organ}_L") > 10 > -10 > centre_x(f"{organ}_R")  # _L = patient left = +x
    cord_areas = [r.area for r in _slices(ref["SpinalCord"]).values()]
    assert 40 < np.median(cord_areas) < 120  # ~1 cm diameter tube
    eye_z = np.mean(np.vstack(ref["Eye_L"])[:, 2])
    assert np.mean(np.vstack(ref["Parotid_L"])[:, 2]) < eye_z < np.mean(np.vstack(ref["OpticChiasm"])[:, 2])


# --------------------------------------------------------- substitute sets
def test_substitute_names_are_tg263_or_known_variants(case):
    for set_name in SUBSTITUTE_SETS:
        rs = pydicom.dcmread(case.sets[set_name])
        written = [r.ROIName for r in rs.StructureSetROISequence]
        expected = case.truth["roi_names"][set_name]
        assert sorted(written) == sorted(expected[n] for n in OAR_NAMES
                                         if n not in case.truth["missing"][set_name])
        for canonical, name in expected.items():
            assert name == canonical or name in NAME_VARIANTS[canonical]
    assert any(v != k for k, v in case.truth["roi_names"]["reader"].items())


def test_substitute_sets_differ_but_not_wildly(rois):
    ref = rois["reference"]
    mean_dice = {}
    for set_name in SUBSTITUTE_SETS:
        dices = []
        for name in OAR_NAMES:
            if name not in rois[set_name]:
                continue
            sub = rois[set_name][name]
            dices.append(_dice(ref[name], sub))
            ratio = _volume_cc(sub) / _volume_cc(ref[name])
            assert 0.25 < ratio < 4.0, (set_name, name, ratio)
            if name in ("Brainstem", "Eye_L", "Eye_R", "Parotid_L", "Parotid_R"):
                assert 0.6 < ratio < 1.6, (set_name, name, ratio)
                assert dices[-1] > 0.6, (set_name, name, dices[-1])
        mean_dice[set_name] = np.mean(dices)
        assert 0.5 < mean_dice[set_name] < 0.97, (set_name, mean_dice[set_name])
    assert mean_dice["revised"] > mean_dice["soars"]
    assert mean_dice["revised"] > mean_dice["reader"]


# -------------------------------------------------------------------- dose
def test_dose_levels(case, rois):
    ds, grid, dose = _dose(case)
    assert 68 < dose.max() < 80
    ref = rois["reference"]
    ptv_points = np.vstack(ref["PTV70"])
    assert np.median(_dose_at(case, ptv_points)) > 60  # PTV surface near the prescription
    for lens in ("Lens_L", "Lens_R"):
        assert _dose_at(case, np.vstack(ref[lens])).max() < 15
    parotid = np.concatenate([_dose_at(case, np.vstack(ref[n])) for n in ("Parotid_L", "Parotid_R")])
    assert parotid.max() - parotid.min() > 10  # in the gradient
    assert 20 < parotid.max() < 70
    assert _dose_at(case, np.vstack(ref["SpinalCord"])).max() < 50
    # The dose grid covers the body.
    lo, hi = grid.world_bounds()
    body = np.vstack(ref["External"])
    assert np.all(body.min(axis=0) >= lo - 1e-6) and np.all(body.max(axis=0) <= hi + 1e-6)


# ------------------------------------------------------------- determinism
def test_same_seed_same_files(tmp_path):
    a = make_patient(tmp_path / "a", "P", seed=3, ct_spacing=(2.5, 2.0, 2.0))
    b = make_patient(tmp_path / "b", "P", seed=3, ct_spacing=(2.5, 2.0, 2.0))
    c = make_patient(tmp_path / "c", "P", seed=4, ct_spacing=(2.5, 2.0, 2.0))
    for pa, pb, pc in [(a.rtdose, b.rtdose, c.rtdose), (a.sets["reader"], b.sets["reader"], c.sets["reader"])]:
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
    assert a.study_uid == b.study_uid != c.study_uid


def test_make_cohort_small(tmp_path):
    cases = make_cohort(tmp_path, n_patients=2, seed=1, progress=False, ct_spacing=(2.5, 2.0, 2.0))
    assert [c.patient_id for c in cases] == ["PHANTOM_001", "PHANTOM_002"]
    assert cases[0].study_uid != cases[1].study_uid
    assert all(c.rtdose.exists() and c.reference.exists() for c in cases)
