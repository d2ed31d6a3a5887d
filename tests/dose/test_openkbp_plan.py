"""A real plan: an OpenKBP patient written to DICOM (CT, RTSTRUCT from its masks,
RTDOSE from its dose) and read back through the whole pipeline.

Two truths, both computed here directly from the arrays:

* the *voxel* mean, ``dose[mask].mean()`` (dose constant per voxel): our
  pipeline with ``interpolation="nearest"`` must match it within 1 %;
* the *trilinear* mean, the dose interpolated trilinearly (scipy's
  ``map_coordinates``, an independent implementation) and averaged over
  4 x 4 x 4 points per mask voxel: our default pipeline must match it
  within 1 %.

The two truths differ from each other by up to 3 % on these 3.9 mm voxels
(e.g. a spinal cord 3 voxels wide in a steep fall-off: averaging a convex
dose profile over a voxel exceeds its centre value); that is a property of
the interpolation model, not of the contours, and is why both are checked.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from soars_dose import audit
from soars_dose.datasets.openkbp import voxel_edge_contours
from soars_dose.dicom.write import write_ct_series, write_rtdose, write_rtstruct
from soars_dose.grid import Grid
from soars_dose.structures import Structure

OARS = {"Brainstem": "Brainstem", "SpinalCord": "SpinalCord", "LeftParotid": "Parotid_L",
        "RightParotid": "Parotid_R", "Esophagus": "Esophagus", "Larynx": "Larynx",
        "Mandible": "Bone_Mandible"}


def to_dicom_axes(a: np.ndarray) -> np.ndarray:
    """OpenKBP ``[i (A->P), j (R->L), k (S->I)]`` to our ``[slice (I->S), row (+y), col (+x)]``."""
    return np.ascontiguousarray(np.transpose(a, (2, 0, 1))[::-1])


def trilinear_mean(dose: np.ndarray, mask: np.ndarray, up: int = 4) -> float:
    """Mean over the mask voxels of the trilinear dose, ``up^3`` points per voxel."""
    k, j, i = np.nonzero(mask)
    off = (np.arange(up) + 0.5) / up - 0.5
    ok, oj, oi = (a.ravel() for a in np.meshgrid(off, off, off, indexing="ij"))
    pts = np.stack([(k[:, None] + ok).ravel(), (j[:, None] + oj).ravel(),
                    (i[:, None] + oi).ravel()])
    # held constant between the outermost centre and the face, as in soars-dose
    pts = np.clip(pts, 0, np.asarray(dose.shape)[:, None] - 1)
    return float(map_coordinates(dose, pts, order=1).mean())


@pytest.mark.parametrize("patient", ["validation/pt_201", "train/pt_1"])
def test_openkbp_mean_dose_matches_arrays(shared_data, tmp_path, patient):
    f = shared_data / "openkbp" / f"{patient}.npz"
    if not f.exists():
        pytest.skip(f"{f} absent")
    z = np.load(f)
    vd = np.asarray(z["voxel_dimensions_mm"], float)
    ct = to_dicom_axes(z["ct_hu"])
    dose = to_dicom_axes(z["dose_gy"].astype(np.float64))
    grid = Grid(shape=ct.shape, spacing=(vd[2], vd[0], vd[1]),
                origin=(-0.5 * vd[1] * ct.shape[2], -0.5 * vd[0] * ct.shape[1], 0.0))
    frame = "1.2.826.0.1.3680043.8.498.4242"
    info = write_ct_series(ct.astype(np.int16), grid, tmp_path / "ct", patient_id="KBP",
                           frame_of_reference_uid=frame)
    structures, truth = [], {}
    for n, (key, name) in enumerate(OARS.items(), start=1):
        if f"mask_{key}" not in z:
            continue
        mask = to_dicom_axes(z[f"mask_{key}"])
        if mask.sum() < 10:
            continue
        structures.append(Structure(name, n, voxel_edge_contours(mask, grid)))
        truth[name] = (float(dose[mask].mean()), trilinear_mean(dose, mask), int(mask.sum()))
    write_rtstruct(structures, tmp_path / "rs.dcm", frame_of_reference_uid=frame, ct=info)
    write_rtdose(dose, grid, tmp_path / "rd.dcm", frame_of_reference_uid=frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = audit.load_case(tmp_path / "rd.dcm", {"rtstruct": tmp_path / "rs.dcm"},
                               ct=tmp_path / "ct")
        linear = audit.dvh_all(case).stats.set_index("roi")
        nearest = audit.dvh_all(case, audit.Settings(interpolation="nearest")).stats.set_index("roi")
    assert len(truth) >= 4
    for name, (voxel, tri, n_vox) in truth.items():
        ours = nearest.loc[name, "mean_gy"]
        assert abs(ours / voxel - 1) <= 0.01, f"{patient} {name} nearest: {ours:.3f} vs {voxel:.3f} Gy"
        ours = linear.loc[name, "mean_gy"]
        assert abs(ours / tri - 1) <= 0.01, f"{patient} {name} linear: {ours:.3f} vs {tri:.3f} Gy"
        # the contours follow the voxel faces exactly (voxel_edge_contours snaps corners)
        mask_cc = n_vox * case.dose.grid.voxel_volume_mm3 / 1000
        assert abs(linear.loc[name, "volume_cc"] / mask_cc - 1) < 0.01, f"{patient} {name} volume"
