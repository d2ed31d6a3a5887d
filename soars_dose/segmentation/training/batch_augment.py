"""Augmentation vectorised over a whole batch (:func:`augment_batch`).

The same transformations as the per-sample :func:`~.augment.augment`
(left-right flip with the left/right channels and labels swapped, in-plane
rotation in mm, intensity scaling about the air value, Gaussian noise,
CT-number offsets), with their random parameters drawn for the whole batch
at once on the batch's device (:func:`draw_params`) and applied without a
Python loop over the samples: flip and rotation of every sample are one
``affine_grid`` and one ``grid_sample`` (images bilinear, labels nearest),
the intensity changes elementwise operations on the batch. Nothing is read
back to the host, so a training step stays free of synchronisation.

For the anchor and mid-level branches (patches of one shape, no organ
centres); the S&H branches keep the per-sample path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import AugmentationConfig

__all__ = ["BatchAugmentParams", "augment_batch", "draw_params", "rotation_theta"]


@dataclass
class BatchAugmentParams:
    """Random parameters of one batch (every tensor has the batch size ``N`` first).

    Attributes
    ----------
    flip : Tensor bool (N,)
        Left-right flip (applied before the rotation).
    angle_rad : Tensor float (N,)
        In-plane rotation in radians (0: none).
    scale : Tensor float (N,)
        Intensity factor about the air value (1: none).
    noise_sd : Tensor float (N,)
        Standard deviation of the added noise, in normalised intensity units (0: none).
    shift : Tensor float (N,)
        CT-number offset in normalised units (fraction of the HU window).
    shifted : Tensor bool (N,)
        Whether the offset (and the clip to [0, 1] that comes with it) applies.
    noise : Tensor float (N, D, H, W) or None
        Standard-normal field scaled by ``noise_sd``; None: no noise.
    """

    flip: torch.Tensor
    angle_rad: torch.Tensor
    scale: torch.Tensor
    noise_sd: torch.Tensor
    shift: torch.Tensor
    shifted: torch.Tensor
    noise: torch.Tensor | None = None


def draw_params(n: int, shape, a: AugmentationConfig, window_hu: tuple[float, float],
                generator: torch.Generator, device) -> BatchAugmentParams:
    """Random parameters of ``n`` samples of spatial ``shape``, drawn on ``device``.

    The probabilities and ranges are those of ``a`` (the per-sample
    augmentation's); with ``a.enabled`` False every sample is left as is.
    ``generator`` must live on ``device``.
    """
    dev = torch.device(device)

    def u(*size):
        return torch.rand(size, generator=generator, device=dev)

    on = 1.0 if a.enabled else 0.0
    flip = u(n) < a.flip_probability * on
    rot = u(n) < a.rotation_probability * on if a.rotation_deg > 0 else torch.zeros(
        n, dtype=torch.bool, device=dev)
    angle = torch.where(rot, (u(n) * 2 - 1) * math.radians(a.rotation_deg),
                        torch.zeros(n, device=dev))
    lo, hi = a.intensity_range
    scale = torch.where(u(n) < a.intensity_probability * on, lo + (hi - lo) * u(n),
                        torch.ones(n, device=dev))
    noisy = u(n) < a.noise_probability * on if a.noise_std > 0 else torch.zeros(
        n, dtype=torch.bool, device=dev)
    sd = torch.where(noisy, u(n) * a.noise_std, torch.zeros(n, device=dev))
    width = float(window_hu[1] - window_hu[0])
    shifted = u(n) < a.shift_probability * on if a.shift_hu > 0 else torch.zeros(
        n, dtype=torch.bool, device=dev)
    shift = torch.where(shifted, (u(n) * 2 - 1) * a.shift_hu / width, torch.zeros(n, device=dev))
    noise = None
    if a.enabled and a.noise_std > 0 and a.noise_probability > 0:
        noise = torch.randn((n,) + tuple(int(s) for s in shape), generator=generator, device=dev)
    return BatchAugmentParams(flip, angle, scale, sd, shift, shifted, noise)


def rotation_theta(angle_rad: torch.Tensor, flip: torch.Tensor, shape, spacing) -> torch.Tensor:
    """``affine_grid`` matrices ``(N, 3, 4)``: flip along x, then rotate in-plane (in mm).

    Output voxel ``p`` samples the input at ``F R p`` (normalised
    coordinates, ``align_corners=True``), where ``R`` is the rotation of
    :func:`~.augment._rotate` (scaled by the in-plane pixel pitch so that
    anisotropic pixels rotate correctly) and ``F`` negates x for the flipped
    samples: the result equals flipping the patch, then rotating it.
    """
    d, h, w = (int(s) for s in shape[-3:])
    sy, sx = float(spacing[1]), float(spacing[2])
    ax, ay = max((w - 1) / 2 * sx, 1e-6), max((h - 1) / 2 * sy, 1e-6)
    c, s = torch.cos(angle_rad.float()), torch.sin(angle_rad.float())
    z = torch.zeros_like(c)
    one = torch.ones_like(c)
    theta = torch.stack([torch.stack([c, s * ay / ax, z, z], -1),
                         torch.stack([-s * ax / ay, c, z, z], -1),
                         torch.stack([z, z, one, z], -1)], 1)
    sign = torch.where(flip, -one, one)
    theta[:, 0] = theta[:, 0] * sign[:, None]
    return theta


def augment_batch(x: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor,
                  params: BatchAugmentParams, spacing, perm_in: list[int], perm_out: list[int],
                  fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a batch of patches with one resampling for all of them.

    Parameters
    ----------
    x : Tensor float (N, C_in, D, H, W)
        Channel 0 the normalised CT, further channels anchor probability maps.
    labels : Tensor int (N, D, H, W)
        Label maps (0 background, 1..C_out-1 the branch's OARs).
    annotated : Tensor bool (N, C_out)
        Which output channels are annotated in each sample.
    params : BatchAugmentParams
        From :func:`draw_params` (or given, e.g. in tests).
    spacing : (3,) float
        Voxel pitch (mm, ``[z, y, x]``) of the patches' grid.
    perm_in, perm_out : list of int
        Left-right permutations of the input and output channels.
    fill : float
        Normalised value of air: channel 0 is padded with it where the
        rotation reaches outside the patch; probability maps with 0.

    Returns
    -------
    x, labels, annotated
        The augmented batch (same shapes, dtypes and device).
    """
    n, cin = x.shape[:2]
    dev = x.device
    # left/right channel swap of the flipped samples (the mirroring itself is in the grid)
    ar_in = torch.arange(cin, device=dev)
    pin = torch.as_tensor(perm_in, dtype=torch.long, device=dev)
    idx = torch.where(params.flip[:, None], pin[None, :], ar_in[None, :])
    x = torch.gather(x, 1, idx.view(n, cin, 1, 1, 1).expand_as(x))
    pout = torch.as_tensor(perm_out, dtype=torch.long, device=dev)
    inv = torch.argsort(pout)
    ar_out = torch.arange(len(perm_out), device=dev)
    annotated = torch.gather(annotated, 1, torch.where(params.flip[:, None], inv[None, :],
                                                       ar_out[None, :]))
    lab = torch.where(params.flip.view(n, 1, 1, 1), pout[labels.long()], labels.long())
    # one grid for flip + rotation of every sample
    theta = rotation_theta(params.angle_rad, params.flip, x.shape, spacing).to(dev)
    grid = F.affine_grid(theta, [n, 1] + list(x.shape[-3:]), align_corners=True)
    fills = torch.zeros(cin, dtype=x.dtype, device=dev)
    fills[0] = fill
    fills = fills.view(1, cin, 1, 1, 1)
    x = F.grid_sample((x - fills).float(), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=True).to(x.dtype) + fills
    lab = F.grid_sample(lab[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                        align_corners=True)[:, 0].to(labels.dtype)
    # intensity: scaling about air, noise, CT-number offset (channel 0 only)
    ct = (x[:, 0] - fill) * params.scale.view(n, 1, 1, 1) + fill
    if params.noise is not None:
        ct = ct + params.noise_sd.view(n, 1, 1, 1) * params.noise
    ct = torch.where(params.shifted.view(n, 1, 1, 1),
                     (ct + params.shift.view(n, 1, 1, 1)).clamp(0.0, 1.0), ct)
    x = torch.cat([ct[:, None], x[:, 1:]], 1)
    return x, lab, annotated
