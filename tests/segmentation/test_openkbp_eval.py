"""training/openkbp/evaluate.py: OpenKBP contour accuracy + the dosimetric experiment.

Fast (a cropped OpenKBP patient, tiny random models); skipped without torch or
without ``../shared/data/openkbp``. The end-to-end test replaces the network by
an oracle that returns the clinical masks with known changes, so that the
numbers the script reports can be checked exactly.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from soars_dose.datasets import openkbp as ok  # noqa: E402
from soars_dose.segmentation import inference  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training" / "openkbp" / "evaluate.py"
ANCHOR = ["Brainstem", "SpinalCord", "Bone_Mandible"]
MID = ["Parotid_L", "Parotid_R", "Esophagus", "Larynx_GSL"]
#: Crop of pt_201 in OpenKBP [i, j, k] order: brainstem (partly), cord, parotids, mandible.
CROP = (slice(36, 90), slice(40, 90), slice(26, 70))


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("openkbp_evaluate", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def split(shared_data, tmp_path_factory) -> Path:
    """A split folder: a cropped pt_201 and an unreadable pt_999."""
    src = shared_data / "openkbp" / "validation" / "pt_201.npz"
    if not src.is_file():
        pytest.skip(f"{src} absent")
    folder = tmp_path_factory.mktemp("split")
    with np.load(src) as z:
        arrays = {k: (z[k][CROP] if z[k].ndim == 3 else z[k]) for k in z.files}
    arrays = {k: v for k, v in arrays.items() if not k.startswith("mask_") or v.any()}
    np.savez_compressed(folder / "pt_201.npz", **arrays)
    (folder / "pt_999.npz").write_bytes(b"not an npz file")
    return folder


def _branch(path: Path, role: str, names: list[str], anchor: list[str], seed: int) -> Path:
    from soars_dose.segmentation import nas
    from soars_dose.segmentation.modelfile import save_model
    from soars_dose.segmentation.preprocess import Preprocessing

    torch.manual_seed(seed)
    arch = {"in_channels": 1 + len(anchor), "out_channels": len(names) + 1,
            "widths": [4, 8, 8, 8, 8], "ops": ["p3d_3"] * 9}
    pre = Preprocessing(target_spacing_mm=(6.0, 8.0, 8.0), window_hu=(-500.0, 1000.0))
    meta = {"branch": role, "patch_size": [16, 32, 32], "anchor_oars": anchor,
            "heatmap_sigma_mm": 8.0, "detect_threshold": 0.3, "voi_factor": 3.0,
            "sh_min_patch": [16, 24, 24]}
    return save_model(path, nas.build_network(arch), oar_names=names, preprocessing=pre,
                      provenance={"soars": meta})


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("models")
    return [_branch(d / "anchor.soars.pt", "anchor", ANCHOR, [], 0),
            _branch(d / "mid.soars.pt", "mid_level", MID, ANCHOR, 1)]


def test_accuracy_rows_and_summary(ev, split):
    pt = ok.read_patient(split / "pt_201.npz")
    pred = dict(pt.masks)
    pred["Parotid_L"] = np.zeros_like(pt.masks["Parotid_L"])
    rows = ev.accuracy_rows("pt_201", pt.masks, pred, pt.grid.spacing, ANCHOR + MID)
    acc = pd.DataFrame(rows).set_index("oar")
    # only OARs of the clinical plan (the crop leaves out the oesophagus)
    assert list(acc.index) == [o for o in ANCHOR + MID if o in pt.masks]
    assert "Esophagus" not in acc.index
    assert acc.loc["Brainstem", "dice"] == 1.0 and acc.loc["Brainstem", "hd95_mm"] == 0.0
    assert acc.loc["Bone_Mandible", "surface_dice_2mm"] == 1.0
    assert acc.loc["Parotid_L", "status"] == "missing_in_set"
    assert acc.loc["Parotid_L", "dice"] == 0.0 and np.isinf(acc.loc["Parotid_L", "hd95_mm"])

    s = ev.summarize_accuracy(pd.DataFrame(rows), ANCHOR + MID)
    allr = s[(s["oar"] == "ALL") & (s["metric"] == "dice")].iloc[0]
    n = len(rows)
    assert allr["n"] == n and allr["n_empty"] == 1
    assert allr["mean"] == pytest.approx((n - 1) / n)
    hd = s[(s["oar"] == "ALL") & (s["metric"] == "hd95_mm")].iloc[0]
    assert hd["n_inf"] == 1 and hd["mean"] == 0.0  # inf kept out of the mean, counted


def test_select_patients_and_refusals(ev, split, tmp_path):
    from soars_dose.errors import InputError, OutputExistsError

    assert [p.stem for p in ev.select_patients(split)] == ["pt_201", "pt_999"]
    assert [p.stem for p in ev.select_patients(split, ["pt_999", "pt_201"], 1)] == ["pt_999"]
    with pytest.raises(InputError, match="pt_5"):
        ev.select_patients(split, ["pt_5"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        ev.prepare_out(out, False, [split])
    with pytest.raises(InputError, match="delete the input"):
        ev.prepare_out(tmp_path, True, [out / "keep.txt"])
    ev.prepare_out(out, True, [split])
    assert out.is_dir() and not any(out.iterdir())


def test_real_segmentation_of_one_patient(ev, split, model_files, tmp_path):
    """The real segment_volume / write_masks_rtstruct calls, with random tiny models."""
    from soars_dose.segmentation.bundle import load_models

    models = load_models(model_files)
    args = argparse.Namespace(device=None, tta=False)
    rec, rows = ev.evaluate_patient(split / "pt_201.npz", models, tmp_path, args)
    assert rec["status"] == "ok", rec
    assert rec["seconds_segment"] > 0
    assert (tmp_path / "pt_201" / "RTSTRUCT_soars.dcm").is_file()
    assert (tmp_path / "pt_201" / "RTSTRUCT_reference.dcm").is_file()
    assert rec["model_oars_written"].split() == ANCHOR + MID
    assert [r["oar"] for r in rows] == rec["clinical_oars"].split()


def test_end_to_end_with_an_oracle(ev, split, model_files, tmp_path, monkeypatch):
    """Clinical masks as the 'prediction': Dice 1 and Diff 0 where unchanged."""
    seen = {}
    real_read = ok.read_patient

    def read(path):
        seen["pt"] = real_read(path)
        return seen["pt"]

    class Result:
        def __init__(self, masks):
            self.masks, self.timings_s = masks, {"total": 0.0}

    def oracle(hu, grid, models, **kw):
        pt = seen["pt"]
        masks = {n: pt.masks.get(n, np.zeros(grid.shape, bool)) for n in ANCHOR + MID}
        masks["Parotid_L"] = np.zeros(grid.shape, bool)           # missed by the "model"
        masks["SpinalCord"] = np.roll(pt.masks["SpinalCord"], 2, axis=2)  # 2 columns off
        return Result(masks)

    monkeypatch.setattr(ok, "read_patient", read)
    monkeypatch.setattr(inference, "segment_volume", oracle)
    out = tmp_path / "eval"
    argv = ["--model", *map(str, model_files), "--split", str(split), "--out", str(out)]
    assert ev.main(argv) == 0

    pts = pd.read_csv(out / "patients.csv").set_index("patient")
    assert pts.loc["pt_201", "status"] == "ok"
    assert pts.loc["pt_999", "status"] == "failed" and pts.loc["pt_999", "stage"] == "read"

    acc = pd.read_csv(out / "accuracy.csv").set_index("oar")
    assert acc.loc["Brainstem", "dice"] == 1.0
    assert 0 < acc.loc["SpinalCord", "dice"] < 1
    assert acc.loc["Parotid_L", "status"] == "missing_in_set"
    assert (out / "accuracy_summary.csv").is_file()

    # the dosimetric numbers come from the audit's report tables
    head = pd.read_csv(out / "dose_headline.csv").set_index("oar")
    assert head.loc["Brainstem", "abs_diff_mean_pct"] == pytest.approx(0.0, abs=1e-9)
    assert head.loc["Parotid_R", "abs_diff_max_pct"] == pytest.approx(0.0, abs=1e-9)
    assert head.loc["SpinalCord", "abs_diff_mean_pct"] > 0
    assert head.loc["Parotid_L", "n"] == 0 and head.loc["Parotid_L", "n_not_evaluable"] == 1
    report = out / "audit" / "report"
    summ = pd.read_csv(report / "summary_by_oar.csv")
    v = summ[(summ["set"] == "soars") & (summ["roi"] == "ALL")
             & (summ["metric"] == "abs_diff_mean_pct")]["mean"].iloc[0]
    assert head.loc["ALL", "abs_diff_mean_pct"] == pytest.approx(v)
    assert (report / "report.html").stat().st_size > 10_000

    md = (out / "summary.md").read_text()
    assert "python training/openkbp/evaluate.py --model" in md.splitlines()[3]
    assert "| Brainstem | 1 | 100.0 |" in md
    assert "3.7 %" in md and "2.9 %" in md and "| 81 |" in md
    assert "pt_999 at read" in md
    assert "| Parotid_L | 0 (1 empty) |" in md
    assert "differ by at most 0.0000" in md  # voxel-mask Dice == the audit's Dice

    # a non-empty --out is refused
    assert ev.main(argv) == 2
