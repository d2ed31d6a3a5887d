"""Shared helpers for the segmentation tests: random-weight SOARS branch models."""

from pathlib import Path

import torch

from soars_dose import oars as catalogue
from soars_dose.segmentation import branches as B
from soars_dose.segmentation import nas
from soars_dose.segmentation.modelfile import save_model
from soars_dose.segmentation.preprocess import Preprocessing


def branch_meta(role, patch=(48, 64, 64), **extra):
    meta = {"branch": role, "patch_size": list(patch),
            "anchor_oars": catalogue.names("anchor") if B.needs_anchor(role) else [],
            "heatmap_sigma_mm": 8.0, "detect_threshold": 0.3, "voi_factor": 3.0,
            "sh_min_patch": [16, 24, 24]}
    meta.update(extra)
    return meta


def random_branch(path, role, *, widths=(4, 8, 8, 8, 8), ops=("p3d_3",) * 9,
                  patch=(48, 64, 64), preprocessing=None, seed=0, **meta):
    torch.manual_seed(seed)
    names = B.branch_oars(role)
    arch = {"in_channels": B.in_channels(role), "out_channels": len(names) + 1,
            "widths": list(widths), "ops": list(ops)}
    net = nas.build_network(arch)
    pre = preprocessing or Preprocessing(target_spacing_mm=(4.0, 3.0, 3.0),
                                         window_hu=(-200.0, 300.0))
    return save_model(Path(path), net, oar_names=names, preprocessing=pre,
                      provenance={"soars": branch_meta(role, patch, **meta)})


def random_models(folder, **kw):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [random_branch(folder / f"{r}.soars.pt", r, seed=i, **kw)
            for i, r in enumerate(B.ROLES)]
