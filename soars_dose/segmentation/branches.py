"""The four SOARS networks ("branches") and what flows between them.

SOARS segments its 42 OARs in a stratified order; every network is a
:class:`~soars_dose.segmentation.nas.UNet` (searched or fixed):

``anchor``
    CT (1 channel) -> background + the 9 anchor OARs, softmax.
``mid_level``
    CT + the anchor network's 9 OAR probability maps (10 channels) ->
    background + the 19 mid-level OARs, softmax.
``sh_detect``
    CT + the 9 anchor probability maps (10 channels) -> one heat map per
    small & hard (S&H) OAR: a 3-D Gaussian of standard deviation
    ``heatmap_sigma_mm`` (8 mm) centred on the organ's centroid, peak 1,
    trained with an L2 loss. The organ's centre is the heat map's peak
    (refined to sub-voxel by the centroid of the 3 x 3 x 3 neighbourhood).
    Output channel 0 is *reserved* and ignored (it keeps the model-file
    convention "channel ``l`` is ``oar_names[l - 1]``"), channels 1-14 are
    the S&H OARs.
``sh_seg``
    **One multi-class network** for all 14 S&H OARs (chosen over 14
    binary networks: one model to train, search and ship). Its input is a
    CT crop around one detected centre: the organ's *VOI*, 3 x the
    organ's catalogue maximum extent along every axis (``voi_factor``),
    placed in a patch of at least ``sh_min_patch`` voxels (rounded up to
    multiples of 8) so that the UNet's five levels fit; predictions
    outside the VOI are discarded. It outputs background + 14 classes.
    A small crop often cannot tell a left organ from its right partner
    (both lenses look alike), while the detector, which sees the whole
    head, can; so the segmentation loss and the read-out merge each
    left/right pair (the pair's probabilities are summed,
    :func:`pair_groups`), and the side comes from the detection.

Overlaps between OARs of different branches are allowed (a lens inside an
eye); within a softmax branch labels are exclusive; S&H organs are
segmented one VOI at a time, so they may overlap each other too. The
pipeline outputs one mask per OAR.

Tensor layout: ``(N, C, D, H, W)``, ``D`` = slice axis ``k``, ``H`` = rows
``j``, ``W`` = columns ``i`` of the network grid; for an HFS grid ``W``
runs to the patient's left, so a flip of ``W`` is a left-right mirror.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .. import oars as catalogue
from ..errors import InputError

__all__ = [
    "ANCHOR",
    "CLI_NAMES",
    "MID",
    "ROLES",
    "SH_DETECT",
    "SH_SEG",
    "branch_oars",
    "crop_box",
    "detect_centres",
    "fast_norm",
    "gaussian_heatmaps",
    "in_channels",
    "input_lr_permutation",
    "merge_pairs",
    "pair_groups",
    "role_from_cli",
    "voi_shapes",
]

ANCHOR, MID, SH_DETECT, SH_SEG = "anchor", "mid_level", "sh_detect", "sh_seg"
#: The branches, in the order inference runs them.
ROLES: tuple[str, ...] = (ANCHOR, MID, SH_DETECT, SH_SEG)
#: Command-line spellings of the branches.
CLI_NAMES: dict[str, str] = {"anchor": ANCHOR, "mid": MID, "sh-detect": SH_DETECT,
                             "sh-seg": SH_SEG}
#: Heat map standard deviation (mm) of the S&H detector.
HEATMAP_SIGMA_MM = 8.0
#: VOI edge = VOI_FACTOR x the organ's catalogue maximum extent.
VOI_FACTOR = 3.0
#: Smallest S&H segmentation patch (voxels, D, H, W).
SH_MIN_PATCH = (16, 24, 24)


def role_from_cli(name: str) -> str:
    """Internal branch name of a command-line spelling (``mid`` -> ``mid_level``)."""
    if name in ROLES:
        return name
    try:
        return CLI_NAMES[name]
    except KeyError:
        raise InputError(f"unknown branch {name!r}; choose one of {', '.join(CLI_NAMES)}") from None


def branch_oars(role: str) -> list[str]:
    """Catalogue names of a branch's output channels 1, 2, ... (channel 0: background/reserved)."""
    if role == ANCHOR:
        return catalogue.names("anchor")
    if role == MID:
        return catalogue.names("mid_level")
    if role in (SH_DETECT, SH_SEG):
        return catalogue.names("small_hard")
    raise InputError(f"unknown branch {role!r}; choose one of {', '.join(ROLES)}")


def label_category(role: str) -> str:
    """The catalogue category whose label map trains a branch."""
    return {ANCHOR: "anchor", MID: "mid_level", SH_DETECT: "small_hard",
            SH_SEG: "small_hard"}[role]


def needs_anchor(role: str) -> bool:
    """True for the branches that take the anchor probability maps as input."""
    return role in (MID, SH_DETECT)


def in_channels(role: str, n_anchor: int | None = None) -> int:
    """Input channels: 1 (CT), plus the anchor OAR probability maps for mid-level and detection."""
    if needs_anchor(role):
        return 1 + (len(catalogue.names("anchor")) if n_anchor is None else int(n_anchor))
    return 1


def input_lr_permutation(role: str, anchor_names: Sequence[str] | None = None) -> list[int]:
    """Input-channel permutation that goes with a left-right flip of the image.

    Channel 0 (CT) stays; anchor probability channel ``a`` (``1 + index``
    of ``anchor_names``) becomes the channel of its partner.
    """
    if not needs_anchor(role):
        return [0]
    names = list(anchor_names) if anchor_names is not None else catalogue.names("anchor")
    return catalogue.lr_permutation(names)


# --------------------------------------------------------------------------- speed
def fast_norm(net: nn.Module) -> nn.Module:
    """Replace every ``InstanceNorm3d(affine=True)`` by the equivalent ``GroupNorm(C, C)``, in place.

    ``GroupNorm`` with one group per channel computes exactly instance
    normalisation (biased variance, same ``eps``, per-channel affine) and
    has the same parameter names (``weight``, ``bias``), so state dicts
    stay interchangeable; on the CPU it is many times faster than
    ``InstanceNorm3d``. Instance norms with running statistics are left alone.
    """
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if (isinstance(child, nn.InstanceNorm3d) and child.affine
                    and not child.track_running_stats):
                g = nn.GroupNorm(child.num_features, child.num_features, eps=child.eps, affine=True)
                with torch.no_grad():
                    g.weight.copy_(child.weight)
                    g.bias.copy_(child.bias)
                g.train(child.training)
                setattr(module, name, g)
    return net


# --------------------------------------------------------------------------- heat maps
def gaussian_heatmaps(shape: Sequence[int], centres: np.ndarray, spacing_mm: Sequence[float],
                      sigma_mm: float = HEATMAP_SIGMA_MM) -> torch.Tensor:
    """Heat maps ``(n, D, H, W)``: a unit-peak Gaussian at each centre (zeros for NaN centres).

    Parameters
    ----------
    shape : (D, H, W)
    centres : ndarray, shape (n, 3)
        Continuous voxel indices ``(k, j, i)``; rows with NaN give an
        all-zero map.
    spacing_mm : (3,)
        Voxel pitch along ``(k, j, i)``, so that the Gaussian is isotropic in mm.
    sigma_mm : float
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    out = torch.zeros((centres.shape[0],) + tuple(int(s) for s in shape), dtype=torch.float32)
    axes = [torch.arange(int(n), dtype=torch.float64) for n in shape]
    for c, ctr in enumerate(centres):
        if not np.all(np.isfinite(ctr)):
            continue
        g = [torch.exp(-0.5 * ((ax - float(p)) * float(s) / sigma_mm) ** 2).float()
             for ax, p, s in zip(axes, ctr, spacing_mm)]
        out[c] = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return out


def detect_centres(heatmaps: "torch.Tensor | np.ndarray") -> tuple[np.ndarray, np.ndarray]:
    """Peak of each heat map, refined to sub-voxel precision.

    Parameters
    ----------
    heatmaps : (n, D, H, W)

    Returns
    -------
    centres : ndarray (n, 3)
        ``(k, j, i)`` of the arg-max, refined along each axis by the vertex
        of the parabola through the logarithms of the peak and its two
        neighbours (exact for a Gaussian); an axis whose neighbours are not
        positive (or at the border) keeps the integer position, moved by at
        most half a voxel.
    peaks : ndarray (n,)
        Heat map value at the arg-max (about 1 for a confident detection).
    """
    h = torch.as_tensor(heatmaps).float()
    n = h.shape[0]
    shape = tuple(int(s) for s in h.shape[1:])
    centres = np.zeros((n, 3))
    peaks = np.zeros(n)
    for c in range(n):
        flat = int(torch.argmax(h[c]))
        idx = np.unravel_index(flat, shape)
        peak = float(h[c].reshape(-1)[flat])
        peaks[c] = peak
        pos = np.asarray(idx, dtype=float)
        for a in range(3):
            if not 0 < idx[a] < shape[a] - 1 or peak <= 0:
                continue
            lo = list(idx)
            hi = list(idx)
            lo[a] -= 1
            hi[a] += 1
            vl, vh = float(h[c][tuple(lo)]), float(h[c][tuple(hi)])
            if vl <= 0 or vh <= 0:
                continue
            ll, l0, lh = np.log(vl), np.log(peak), np.log(vh)
            den = ll - 2.0 * l0 + lh
            if den < 0:
                pos[a] += float(np.clip(0.5 * (ll - lh) / den, -0.5, 0.5))
        centres[c] = pos
    return centres, peaks


# --------------------------------------------------------------------------- VOIs
def voi_shapes(name: str, spacing_mm: Sequence[float], *, voi_factor: float = VOI_FACTOR,
               min_patch: Sequence[int] = SH_MIN_PATCH, multiple: int = 8
               ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """VOI and network patch size (voxels, ``(D, H, W)``) of one S&H organ.

    The VOI edge is ``voi_factor`` x the organ's catalogue maximum extent
    (mm) along every axis, in voxels of ``spacing_mm`` (rounded up, made
    odd so that the centre voxel sits in the middle). The patch is the VOI
    rounded up to a multiple of ``multiple`` and at least ``min_patch``.
    """
    extent = catalogue.get(name).max_extent_mm * float(voi_factor)
    voi = []
    patch = []
    for s, m in zip(spacing_mm, min_patch):
        v = int(math.ceil(extent / float(s)))
        v += 1 - v % 2
        voi.append(v)
        patch.append(max(int(m), int(math.ceil(v / multiple) * multiple)))
    return tuple(voi), tuple(patch)  # type: ignore[return-value]


def crop_box(centre: Sequence[float], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (voxels, may lie outside the volume) of a box of ``size`` centred on ``centre``."""
    c = np.round(np.asarray(centre, dtype=float)).astype(int)
    size = np.asarray(size, dtype=int)
    start = c - size // 2
    return start, start + size


def extract(volume: "torch.Tensor | np.ndarray", start: Sequence[int], size: Sequence[int],
            fill: float = 0.0) -> torch.Tensor:
    """Crop ``volume[..., D, H, W]`` at ``start`` (may be negative or run past the end), padding with ``fill``."""
    v = torch.as_tensor(volume)
    lead = tuple(v.shape[:-3])
    out = torch.full(lead + tuple(int(s) for s in size), float(fill), dtype=v.dtype,
                     device=v.device)
    src, dst = [], []
    for a, n, s in zip(start, v.shape[-3:], size):
        a = int(a)
        lo, hi = max(a, 0), min(a + int(s), int(n))
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    out[(Ellipsis,) + tuple(dst)] = v[(Ellipsis,) + tuple(src)]
    return out


# --------------------------------------------------------------------------- pair merging
def pair_groups(oar_names: Sequence[str]) -> list[list[int]]:
    """Output classes of the S&H segmentation read-out: left/right partners merged.

    Returns a list of channel-index groups; group 0 is ``[0]`` (background),
    then one group per organ type in order of first appearance, e.g.
    ``[[0], [1, 2], [3], ...]`` for ``Cochlea_L, Cochlea_R, Hypothalamus, ...``.
    """
    names = list(oar_names)
    index = {n: i + 1 for i, n in enumerate(names)}
    groups: list[list[int]] = [[0]]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            continue
        partner = catalogue.swap_lr(n)
        members = [n] if partner == n or partner not in index else sorted({n, partner},
                                                                           key=names.index)
        seen.update(members)
        groups.append([index[m] for m in members])
    return groups


def group_of_channel(groups: list[list[int]], n_channels: int) -> list[int]:
    """Group index of every channel."""
    out = [0] * n_channels
    for g, members in enumerate(groups):
        for c in members:
            out[c] = g
    return out


def merge_pairs(probs: torch.Tensor, groups: list[list[int]], dim: int = 1) -> torch.Tensor:
    """Sum the probabilities of each group's channels (``(N, C, ...)`` -> ``(N, G, ...)``)."""
    return torch.stack([probs.index_select(dim, torch.tensor(g, device=probs.device)).sum(dim)
                        for g in groups], dim=dim)
