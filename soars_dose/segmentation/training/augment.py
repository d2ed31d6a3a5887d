"""Augmentation drawn per sample (:func:`augment`).

Left-right flip (probability 0.5) with the left/right labels, input anchor
channels, heat maps and annotation flags swapped by
:func:`~soars_dose.oars.lr_permutation`; in-plane rotation
of up to +-``rotation_deg`` (10 degrees, in mm so that anisotropic pixels
rotate correctly; images bilinear, labels nearest, centres exactly;
probability 0.2); intensity scaling about the air value by a factor in
``intensity_range`` (0.75-1.25, probability 0.15); Gaussian noise of
standard deviation up to ``noise_std`` (probability 0.1); optionally
CT-number offsets (``shift_hu``). The probabilities are nnU-Net's defaults.
Random patch placement (:mod:`.batches`) adds translation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainConfig

__all__ = ["augment"]


def _flip(x, labels, annotated, centres, perm_in, perm_out):
    x = torch.flip(x, dims=(-1,))[perm_in]
    if labels is not None:
        lut = torch.tensor(perm_out, dtype=torch.long, device=labels.device)
        labels = lut[torch.flip(labels, dims=(-1,)).long()]
    new_ann = annotated.copy()
    for c, p in enumerate(perm_out):
        new_ann[p] = annotated[c]
    if centres is not None:
        w = x.shape[-1]
        new_c = np.full_like(centres, np.nan)
        for c in range(centres.shape[0]):
            k, j, i = centres[c]
            new_c[perm_out[c + 1] - 1] = (k, j, w - 1 - i)
        centres = new_c
    return x, labels, new_ann, centres


def _rotate(x, labels, centres, angle_rad, spacing, fill):
    d, h, w = x.shape[-3:]
    sy, sx = float(spacing[1]), float(spacing[2])
    ax, ay = max((w - 1) / 2 * sx, 1e-6), max((h - 1) / 2 * sy, 1e-6)
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    theta = torch.tensor([[[c, s * ay / ax, 0.0, 0.0],
                           [-s * ax / ay, c, 0.0, 0.0],
                           [0.0, 0.0, 1.0, 0.0]]], dtype=torch.float32, device=x.device)
    grid = F.affine_grid(theta, [1, 1, d, h, w], align_corners=True)
    x = F.grid_sample((x - fill)[None].float(), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=True)[0] + fill
    if labels is not None:
        labels = F.grid_sample(labels[None, None].float(), grid, mode="nearest",
                               padding_mode="zeros", align_corners=True)[0, 0].long()
    if centres is not None:
        centres = centres.copy()
        px = (centres[:, 2] - (w - 1) / 2) * sx
        py = (centres[:, 1] - (h - 1) / 2) * sy
        centres[:, 2] = (c * px - s * py) / sx + (w - 1) / 2
        centres[:, 1] = (s * px + c * py) / sy + (h - 1) / 2
    return x, labels, centres


def augment(x: torch.Tensor, labels: torch.Tensor | None, annotated: np.ndarray,
            centres: np.ndarray | None, rng: np.random.Generator, config: TrainConfig,
            spacing, perm_in: list[int], perm_out: list[int], fill: float = 0.0):
    """Randomly augment one sample (all modifications consistent with each other).

    Parameters
    ----------
    x : Tensor (C_in, D, H, W)
        Channel 0 the CT, further channels anchor probability maps.
    labels : Tensor (D, H, W) or None
    annotated : ndarray bool (C_out,)
    centres : ndarray (C_out - 1, 3) or None
        Organ centres ``(k, j, i)`` in the patch (NaN: absent).
    rng : numpy Generator
    config : TrainConfig
    spacing : (3,)
        Voxel pitch (mm) of the patch's grid.
    perm_in, perm_out : list of int
        Left-right channel permutations of the input and output channels.
    fill : float
        Value of air in channel 0.

    Returns
    -------
    x, labels, annotated, centres, info
        ``info`` says what was applied (``flip``, ``angle_deg``, ``scale``, ``noise``,
        ``shift`` in normalised units). All tensors stay on ``x``'s device.
    """
    a = config.augmentation
    info: dict[str, Any] = {"flip": False, "angle_deg": 0.0, "scale": 1.0, "noise": 0.0,
                            "shift": 0.0}
    if rng.random() < a.flip_probability:
        x, labels, annotated, centres = _flip(x, labels, annotated, centres, perm_in, perm_out)
        info["flip"] = True
    if a.rotation_deg > 0 and rng.random() < a.rotation_probability:
        ang = float(rng.uniform(-a.rotation_deg, a.rotation_deg))
        x, labels, centres = _rotate(x, labels, centres, math.radians(ang), spacing, fill)
        info["angle_deg"] = ang
    lo, hi = a.intensity_range
    x = x.clone()
    if rng.random() < a.intensity_probability:
        scale = float(rng.uniform(lo, hi))
        x[0] = (x[0] - fill) * scale + fill
        info["scale"] = scale
    if a.noise_std > 0 and rng.random() < a.noise_probability:
        sd = float(rng.uniform(0.0, a.noise_std))
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        x[0] += sd * torch.randn(x.shape[1:], generator=g).to(x.device)
        info["noise"] = sd
    if a.shift_hu > 0 and rng.random() < a.shift_probability:
        # a CT number offset (miscalibrated scanner, contrast): tissue moves, the window's
        # ends stay where they are, as they would after clipping a shifted scan
        lo_hu, hi_hu = config.preprocessing.window_hu
        shift = float(rng.uniform(-a.shift_hu, a.shift_hu)) / (hi_hu - lo_hu)
        x[0] = (x[0] + shift).clamp(0.0, 1.0)
        info["shift"] = shift
    return x, labels, annotated, centres, info
