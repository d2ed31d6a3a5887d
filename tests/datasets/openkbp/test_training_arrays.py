"""Compact training arrays: round trip on real data, overlaps, partial labels, the command line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from soars_dose.datasets import openkbp as ok
from soars_dose.errors import OutputExistsError

from .openkbp_helpers import npz, real

SCRIPT = Path(__file__).resolve().parents[3] / "training" / "openkbp" / "export_data.py"


def _script():
    spec = importlib.util.spec_from_file_location("openkbp_export_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_arrays_round_trip(shared_data, tmp_path):
    split = real(shared_data, "validation")
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
    npz(split / "pt_5.npz", shape=shape, ct_hu=ct, mask_SpinalCord=cord, mask_Brainstem=stem)
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
    assert _script().main(["export-training", str(split), str(tmp_path / "cli.npz")]) == 0
    (c,) = ok.read_training_arrays(tmp_path / "cli.npz")
    assert np.array_equal(c["ct"], d["ct"]) and np.array_equal(c["labels"]["anchor"],
                                                               d["labels"]["anchor"])
    assert _script().main(["to-dicom", str(tmp_path / "nothing.npz"), str(tmp_path / "x")]) == 2
