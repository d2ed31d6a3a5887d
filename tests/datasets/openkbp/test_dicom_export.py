"""OpenKBP patients written as DICOM and audited back."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest

from soars_dose import audit
from soars_dose.datasets import openkbp as ok
from soars_dose.errors import OutputExistsError


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
