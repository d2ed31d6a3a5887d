"""A synthetic OpenKBP split and a tiny start bundle for the GPU-run scripts' tests.

3 small patients (28 x 28 x 24 voxels) with all seven OARs as boxes, packed
with the real export code; the start model is a tiny anchor + mid-level int8
bundle; RUNS.md an empty runs table.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from soars_dose.datasets.openkbp import write_training_arrays
from soars_dose.segmentation.bundle import save_bundle
from soars_dose.segmentation.preprocess import Preprocessing
from soars_dose.segmentation.training import TrainConfig, build_network
from soars_dose.segmentation.training.accumulate import save_branch
from soars_dose.segmentation.training.stage import fixed_architecture

SCRIPTS = Path(__file__).resolve().parents[3] / "training" / "openkbp"

ANCHOR = ["Brainstem", "SpinalCord", "Bone_Mandible"]
MID = ["Parotid_L", "Parotid_R", "Esophagus", "Larynx_GSL"]
OARS = ANCHOR + MID
#: OpenKBP structure -> box [i0:i1, j0:j1, k0:k1] in a (28, 28, 24) volume.
BOXES = {"Brainstem": (12, 16, 12, 16, 14, 20), "SpinalCord": (12, 15, 13, 15, 4, 14),
         "Mandible": (6, 10, 8, 20, 8, 12), "LeftParotid": (10, 14, 5, 8, 10, 15),
         "RightParotid": (10, 14, 20, 23, 10, 15), "Esophagus": (16, 18, 13, 15, 3, 9),
         "Larynx": (8, 11, 12, 16, 4, 8)}


def load_script(name: str):
    """The module of ``training/openkbp/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"openkbp_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _patient(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (28, 28, 24)
    ct = np.full(shape, -1024, np.int16)
    ct[3:25, 3:25, 1:23] = 40
    arrays = {"voxel_dimensions_mm": np.array([4.0, 4.0, 5.0]),
              "dose_gy": np.zeros(shape, np.float32),
              "possible_dose_mask": np.zeros(shape, bool)}
    for k, (i0, i1, j0, j1, k0, k1) in enumerate(BOXES.values()):
        name = list(BOXES)[k]
        m = np.zeros(shape, bool)
        s = int(rng.integers(0, 2))
        m[i0 + s:i1 + s, j0:j1, k0:k1] = True
        ct[m] = 100 + 60 * k
        arrays[f"mask_{name}"] = m
    arrays["ct_hu"] = ct
    np.savez_compressed(path, **arrays)


def make_inputs(root: Path) -> tuple[Path, Path, Path]:
    """``(root, start bundle, RUNS.md)`` with ``train.npz`` and ``validation.npz`` in ``root``."""
    for split, ids in (("train", (1, 2)), ("validation", (201,))):
        folder = root / split
        folder.mkdir()
        for i in ids:
            _patient(folder / f"pt_{i}.npz", i)
        write_training_arrays(folder, root / f"{split}.npz")
    pre = Preprocessing(target_spacing_mm=(5.0, 8.0, 8.0), window_hu=(-500.0, 1000.0))
    files = []
    for role, cin, names in (("anchor", 1, ANCHOR), ("mid_level", 1 + len(ANCHOR), MID)):
        cfg = TrainConfig.from_dict({"branch": "anchor", "widths": [4, 8, 8, 8, 8]})
        net = build_network(fixed_architecture(cfg, cin, len(names) + 1), 0)
        files.append(save_branch(root / f"{role}.soars.pt", net, role=role, names=names,
                                 preprocessing=pre, patch_size=(16, 32, 32),
                                 anchor_names=ANCHOR if role == "mid_level" else None,
                                 training={"patches_cumulative": 100}))
    start = save_bundle(root / "start_int8.pt", files, weights="int8")
    runs = root / "RUNS.md"
    runs.write_text("# runs\n\n| date | device | training s | patches | cumulative | "
                    + " | ".join(OARS) + " | mean | shipped | note |\n|"
                    + "---|" * (len(OARS) + 8) + "\n")
    return root, start, runs
