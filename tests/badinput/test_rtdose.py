"""RTDOSE reader: accepted files give the values put in; surprising ones are warned about."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pydicom.uid import RLELossless

from soars_dose.dicom.rtdose import read_rtdose, read_rtdoses
from soars_dose.errors import SoarsDoseWarning

from . import builders as b


def _read(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = read_rtdose(path, **kw) if not isinstance(path, list) else read_rtdoses(path, **kw)
    return d, [str(w.message) for w in caught if issubclass(w.category, SoarsDoseWarning)]


def _check_truth(d, truth, spacing=(3.0, 2.0, 2.5), origin=(-10.0, -20.0, 5.0)):
    np.testing.assert_allclose(d.values, truth, atol=1e-6)
    assert d.grid.shape == truth.shape
    np.testing.assert_allclose(d.grid.spacing, spacing)
    np.testing.assert_allclose(d.grid.origin, origin)
    # voxel [k, j, i] sits at origin + (i dx, j dy, k dz) in LPS
    np.testing.assert_allclose(d.grid.index_to_world(np.array([[3, 4, 5]]))[0],
                               [origin[0] + 5 * spacing[2], origin[1] + 4 * spacing[1],
                                origin[2] + 3 * spacing[0]])


@pytest.mark.parametrize("bits,scaling", [(32, 1e-4), (16, 1e-3), (32, 2.5e-5)])
@pytest.mark.parametrize("implicit", [False, True])
def test_well_formed_dose_read_exactly(tmp_path, bits, scaling, implicit):
    truth = b.dose_truth()
    p = b.write(b.rtdose(truth, bits=bits, scaling=scaling), tmp_path / "rd.dcm",
                implicit=implicit)
    d, warns = _read(p)
    assert warns == []
    _check_truth(d, truth)


def test_rle_compressed_dose_decoded_and_checked(tmp_path):
    truth = b.dose_truth()
    ds = b.rtdose(truth, bits=16, scaling=1e-3)
    ds.compress(RLELossless)
    p = b.write(ds, tmp_path / "rd.dcm")
    d, warns = _read(p)
    assert warns == []
    _check_truth(d, truth)


@pytest.mark.parametrize("kind", ["zero_pixels", "zero_scaling"])
def test_zero_dose_is_warned(tmp_path, kind):
    truth = b.dose_truth()
    ds = b.rtdose(np.zeros_like(truth) if kind == "zero_pixels" else truth)
    if kind == "zero_scaling":
        ds.DoseGridScaling = 0
    d, warns = _read(b.write(ds, tmp_path / "rd.dcm"))
    assert np.all(d.values == 0)
    w = [w for w in warns if "0 Gy" in w]
    assert len(w) == 1 and "rd.dcm" in w[0] and "every dose statistic would be 0 Gy" in w[0]
    if kind == "zero_scaling":
        assert "DoseGridScaling is 0" in w[0]


def test_one_non_zero_voxel_is_not_a_zero_dose(tmp_path):
    v = np.zeros((4, 5, 6))
    v[3, 4, 5] = 0.01
    d, warns = _read(b.write(b.rtdose(v), tmp_path / "rd.dcm"))
    assert not [w for w in warns if "0 Gy" in w]
    assert d.values[3, 4, 5] == pytest.approx(0.01, abs=1e-6)


@pytest.mark.parametrize("summation", ["BEAM", "FRACTION", "BRACHY", "CONTROL_POINT", "RECORD",
                                       None])
def test_non_plan_summation_is_warned(tmp_path, summation):
    ds = b.rtdose(b.dose_truth(), summation=summation or "PLAN")
    if summation is None:
        del ds.DoseSummationType
    d, warns = _read(b.write(ds, tmp_path / "rd.dcm"))
    w = [w for w in warns if "audited as if it were the plan dose" in w]
    assert len(w) == 1 and "rd.dcm" in w[0]
    assert (summation or "no DoseSummationType") in w[0]
    _check_truth(d, b.dose_truth())


@pytest.mark.parametrize("summation", ["PLAN", "MULTI_PLAN", "plan"])
def test_plan_summation_is_quiet(tmp_path, summation):
    _, warns = _read(b.write(b.rtdose(b.dose_truth(), summation=summation), tmp_path / "rd.dcm"))
    assert warns == []


def test_summed_beams_warn_once_about_the_sum(tmp_path):
    truth = b.dose_truth()
    paths = [b.write(b.rtdose(truth / 2, summation="BEAM"), tmp_path / f"beam{k}.dcm")
             for k in (1, 2)]
    d, warns = _read(paths, sum_doses=True)
    np.testing.assert_allclose(d.values, truth, atol=1e-5)
    assert len(warns) == 1 and "summed 2 RTDOSE files" in warns[0]
    assert "beam1.dcm" in warns[0] and "BEAM" in warns[0]


def test_missing_frame_of_reference_is_warned(tmp_path):
    ds = b.rtdose(b.dose_truth())
    del ds.FrameOfReferenceUID
    d, warns = _read(b.write(ds, tmp_path / "rd.dcm"))
    assert d.frame_of_reference_uid is None
    w = [w for w in warns if "FrameOfReferenceUID" in w]
    assert len(w) == 1 and "rd.dcm" in w[0] and "is skipped" in w[0]
    assert any("FrameOfReferenceUID" in n for n in d.notes)
    _check_truth(d, b.dose_truth())


@pytest.mark.parametrize("value", ["0.99995\\0\\0\\0\\1\\0", "1\\0\\0\\0\\1.00004\\0"])
def test_orientation_round_off_is_accepted(tmp_path, value):
    ds = b.set_raw(b.rtdose(b.dose_truth()), "ImageOrientationPatient", value)
    d, _ = _read(b.write(ds, tmp_path / "rd.dcm"))
    np.testing.assert_allclose(d.values, b.dose_truth(), atol=1e-6)


def test_decreasing_offsets_still_reordered(tmp_path):
    """Negative GridFrameOffsetVector steps are a valid top-down order, not an error."""
    truth = b.dose_truth()
    ds = b.rtdose(truth[::-1].copy(), origin=(-10.0, -20.0, 14.0))
    ds.GridFrameOffsetVector = [0, -3, -6, -9]
    d, _ = _read(b.write(ds, tmp_path / "rd.dcm"))
    _check_truth(d, truth)
