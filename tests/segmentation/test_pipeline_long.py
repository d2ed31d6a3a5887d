"""LONG TEST (about 12 minutes on 2 CPU cores): the whole stratified SOARS pipeline.

A tiny configuration of every branch is trained on the synthetic 42-OAR
phantom (48 x 64 x 64 voxels at 4 x 3 x 3 mm, partial annotations included):
anchor and mid-level with the SOARS recipe (SGD, Nesterov momentum 0.99,
polynomial learning rate), the S&H detector with Adam (the phantom
preset, see ``TrainConfig.tiny``), the S&H segmentation network with a
short architecture search, through the command line. Then, on phantom
cases that took no part in training, it is held to the issue's targets:

* every anchor OAR reaches a mean Dice >= 0.8 over the held-out cases;
* every S&H organ centre is detected within 2 voxels in every held-out case;
* ``segment_ct`` on a phantom CT written as DICOM produces an RTSTRUCT that
  ``read_rtstruct`` reads back with all 42 OARs, and ``soars-dose segment``
  does the same from the branch model files.

Mid-level and S&H segmentation quality is printed, not asserted.
``SOARS_PIPELINE_QUICK=1`` trains on a third of the budget (about 3
minutes) for development: the targets are then skipped, only the plumbing
tests run.
"""

import json
import os
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose import oars as catalogue  # noqa: E402
from soars_dose.cli.main import main  # noqa: E402
from soars_dose.dicom.ct import read_ct_series  # noqa: E402
from soars_dose.dicom.rtstruct import read_rtstruct  # noqa: E402
from soars_dose.dicom.write import write_ct_series  # noqa: E402
from soars_dose.rasterize import occupancy, sample_structure  # noqa: E402
from soars_dose.segmentation import bundle, inference  # noqa: E402
from soars_dose.segmentation.training import TrainConfig, train  # noqa: E402
from soars_dose.synthetic import oars42 as phantom42  # noqa: E402

N_CASES = 12
HELD_OUT_SEEDS = (9001, 9002, 9003)
P3D = ("p3d_3",) * 9
COMMON = dict(ops=P3D, iterations_per_epoch=12, validate_every=100)
SEG_COMMON = dict(iterations_per_epoch=12, validate_every=100, search_patch_size=(16, 24, 24),
                  validate_search=False)
#: optimiser steps (epochs x 12) per branch with SOARS_PIPELINE_QUICK=1 (plumbing only) ...
BUDGET = {"anchor": dict(epochs=15, **COMMON),  # SGD, Nesterov, poly LR from 0.02
          "mid_level": dict(epochs=2, **COMMON),
          "sh_detect": dict(epochs=8, **COMMON),  # the phantom preset: Adam 1e-3, poly
          "sh_seg": dict(epochs=4, **SEG_COMMON)}
#: ... and the budget of the default suite, which reaches the issue's targets
FULL = {"anchor": dict(epochs=40, **COMMON),
        "mid_level": dict(epochs=10, **COMMON),
        "sh_detect": dict(epochs=40, **COMMON),
        "sh_seg": dict(epochs=20, **SEG_COMMON)}
QUICK = os.environ.get("SOARS_PIPELINE_QUICK") == "1"

REPORT: dict = {}


def dice(a, b):
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _train_all(root, budget):
    ds = phantom42.write_dataset(root / "ds", N_CASES, seed=11)
    t = {}
    t0 = time.perf_counter()
    anchor = train(ds, root / "anchor", TrainConfig.tiny("anchor", **budget["anchor"]))
    t["anchor"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mid = train(ds, root / "mid", TrainConfig.tiny("mid_level", anchor_model=str(
        anchor.model_path), **budget["mid_level"]))
    t["mid_level"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    det = train(ds, root / "shd", TrainConfig.tiny("sh_detect", anchor_model=str(
        anchor.model_path), **budget["sh_detect"]))
    t["sh_detect"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = root / "seg.json"
    cfg.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v
                               for k, v in budget["sh_seg"].items()}))
    rc = main(["train", str(ds), "--branch", "sh-seg", "--out", str(root / "shs"), "--search",
               "--preset", "phantom", "--config", str(cfg), "--quiet"])
    assert rc == 0
    t["sh_seg"] = time.perf_counter() - t0
    files = [anchor.model_path, mid.model_path, det.model_path, root / "shs" / "model.soars.pt"]
    path = bundle.save_bundle(root / "soars_phantom.pt", files)
    models = bundle.load_models(path)
    held = []
    for seed in HELD_OUT_SEEDS:
        case = phantom42.make_case(seed, partial=False)
        res = inference.segment_volume(case.hu, case.grid, models, progress=False,
                                       detect_threshold=-np.inf)
        held.append((case, res))
    return {"root": root, "files": files, "bundle": path, "models": models, "held_out": held,
            "train_seconds": t}


def _measure(run, label):
    held = run["held_out"]
    anchor = {n: float(np.mean([dice(r.masks[n], c.mask(n)) for c, r in held]))
              for n in catalogue.names("anchor")}
    errors = {n: [float(np.linalg.norm(c.grid.world_to_index(r.centres_mm[n]) - c.centre(n)))
                  for c, r in held] for n in catalogue.names("small_hard")}
    other = {n: float(np.mean([dice(r.masks[n], c.mask(n)) for c, r in held]))
             for n in catalogue.names("mid_level") + catalogue.names("small_hard")}
    print(f"\n[{label}] training seconds:",
          json.dumps({k: round(v, 1) for k, v in run["train_seconds"].items()}))
    print(f"[{label}] anchor Dice (held-out mean):",
          json.dumps({k: round(v, 3) for k, v in anchor.items()}))
    print(f"[{label}] S&H centre error, worst held-out case (voxels):",
          json.dumps({k: round(max(v), 2) for k, v in errors.items()}))
    print(f"[{label}] mid-level and S&H Dice (held-out mean, not asserted):",
          json.dumps({k: round(v, 3) for k, v in other.items()}))
    return anchor, errors


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return _train_all(tmp_path_factory.mktemp("soars_pipeline"), BUDGET if QUICK else FULL)


def _targets(run):
    if QUICK:
        pytest.skip("SOARS_PIPELINE_QUICK=1: a third of the training budget, targets not checked")
    return _measure(run, "full")


# ------------------------------------------------------------------ the targets
def test_anchor_dice_at_least_0_8(pipeline):
    anchor, _ = _targets(pipeline)
    bad = {n: round(v, 3) for n, v in anchor.items() if v < 0.8}
    assert not bad, f"anchor OARs below Dice 0.8: {bad}"


def test_every_centre_within_2_voxels(pipeline):
    _, errors = _targets(pipeline)
    far = {n: round(max(v), 2) for n, v in errors.items() if max(v) > 2.0}
    assert not far, f"S&H centres detected more than 2 voxels off: {far}"


# ------------------------------------------------------------------ DICOM in, RTSTRUCT out
def test_long_segment_ct_writes_a_readable_rtstruct(pipeline, tmp_path):
    case = phantom42.make_case(HELD_OUT_SEEDS[0], partial=False)
    info = write_ct_series(case.hu, case.grid, tmp_path / "ct", patient_id="PHANTOM42")
    out = tmp_path / "RS_auto.dcm"
    res = inference.segment_ct(tmp_path / "ct", pipeline["bundle"], out, progress=False)
    ss = read_rtstruct(out)
    assert ss.names() == catalogue.names()
    assert ss.frame_of_reference_uid == info.frame_of_reference_uid
    ct = read_ct_series(tmp_path / "ct")
    for name in ("Brainstem", "Eye_L", "Bone_Mandible_R", "SpinalCord"):
        s = ss[name]
        assert not s.is_empty and s.generation_algorithm == "AUTOMATIC"
        back = occupancy(sample_structure(s, ct.grid, nominal_spacing_mm=ct.slice_thickness_mm))
        assert dice(back >= 0.5, res.masks[name]) > 0.9, name
        assert dice(res.masks[name], case.mask(name)) > 0.5, name


def test_long_cli_segment_from_branch_files(pipeline, tmp_path):
    case = phantom42.make_case(HELD_OUT_SEEDS[1], partial=False)
    write_ct_series(case.hu, case.grid, tmp_path / "ct", patient_id="PHANTOM42")
    out = tmp_path / "RS_anchor.dcm"
    rc = main(["segment", str(tmp_path / "ct"), "--out", str(out), "--model",
               *map(str, pipeline["files"]), "--organs", "anchor", "Lens_L", "--tta", "--quiet"])
    assert rc == 0
    ss = read_rtstruct(out)
    assert ss.names() == catalogue.names("anchor") + ["Lens_L"]
    assert not ss["Brainstem"].is_empty
