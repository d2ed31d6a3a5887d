"""Training the SOARS branches: partial-label losses, architecture search, fixed training.

One entry function, :func:`train`, trains one branch (``anchor``,
``mid_level``, ``sh_detect`` or ``sh_seg``, see
:mod:`~soars_dose.segmentation.branches`) on a data set folder
(:func:`~soars_dose.segmentation.phantom42.load_dataset`) into a run folder.
It runs in one process, or as one rank of ``torch.distributed`` (DDP,
gloo on the CPU) when launched by ``torchrun`` (``WORLD_SIZE``/``RANK``
in the environment) or by :func:`torch.multiprocessing.spawn` (pass
``rank`` and ``world_size``).

Stages
------
``warmup`` (search only, ``warmup_epochs``)
    The searchable network (every block a softmax mixture of the six
    candidate convolutions) trains its weights with RAdam; the
    architecture logits ``alpha`` stay fixed (uniform mixture).
``search`` (search only, ``search_epochs``)
    Alternating first-order DARTS: each iteration takes one RAdam step on
    the weights with a batch of the *training* split, then one Adam step on
    ``alpha`` with a batch of the *held-out* split. The cases are split
    2:1 (``holdout_fraction`` = 1/3) once, by the seed.
``train`` (``epochs``)
    The derived architecture (most-weighted operation per block; without
    ``search`` the fixed ``ops`` of the configuration) is built *from
    scratch* and trained with SGD (Nesterov momentum 0.99, weight decay
    3e-5, gradient norm clipped at 12) and the polynomial learning rate
    ``lr * (1 - epoch / epochs) ** 0.9``. ``optimizer="adam"`` swaps SGD
    for Adam (same schedule); the phantom preset uses it for the S&H
    detector and the S&H segmentation network, which SGD trains too slowly
    for a CPU budget.

Losses
------
* anchor, mid-level: Dice + cross-entropy that counts only the OARs
  annotated in each case (:func:`partial_dice_ce`): the logits of
  unannotated OARs are excluded from the softmax (their gradient is
  exactly zero) and their Dice terms are dropped; voxels of unannotated
  organs are background in the labels, as in real partially contoured
  data. The cross-entropy is class-balanced at the start of each stage
  (every class's voxels weigh as much as the background's, exponent
  ``ce_balance`` = 1) and turns linearly into the plain voxel mean by its
  end (``ce_balance_final`` = 0): small organs are learnt early instead
  of being drowned by the background, and the final bias towards
  over-segmentation is removed.
* sh_detect: L2 between predicted and target heat maps (Gaussian,
  ``heatmap_sigma_mm``, at each annotated S&H organ's centroid), over the
  annotated organs only (:func:`heatmap_loss`); ``heatmap_fg_weight``
  weights voxels by ``1 + w * target`` (0 = plain L2).
* sh_seg: the partial Dice + cross-entropy on left/right-merged classes
  (:func:`~soars_dose.segmentation.branches.pair_groups`), on VOI crops
  centred on each annotated organ's centroid plus a random shift of up to
  ``voi_jitter_vox`` voxels (the detector's error).

Augmentation (:func:`augment`), drawn per sample
------------------------------------------------
left-right flip (probability 0.5) with the left/right labels, input anchor
channels, heat maps and annotation flags swapped by
:func:`~soars_dose.segmentation.catalogue.lr_permutation`; in-plane rotation
of up to +-``rotation_deg`` (10 degrees, in mm so that anisotropic pixels
rotate correctly; images bilinear, labels nearest, centres exactly;
probability 0.2); intensity scaling about the air value by a factor in
``intensity_range`` (0.75-1.25, probability 0.15); Gaussian noise of
standard deviation up to ``noise_std`` (probability 0.1). The
probabilities are nnU-Net's defaults. Random patch placement
(with padding where the volume is smaller than the patch) adds translation.

Run folder
----------
``config.json`` (the :class:`TrainConfig`, a resumed run must match it),
``split.json`` (training / held-out case ids), ``log.jsonl`` (one JSON
line per epoch: stage, loss, learning rate, validation Dice per OAR or
detection error per OAR, mixture weights during the search, seconds),
``checkpoint.pt`` (written atomically after every epoch: network, optimiser
states, next epoch, RNG states, derived architecture; loadable with
``weights_only=True``), ``architecture.json`` and, at the end,
``model.soars.pt`` (:func:`~soars_dose.segmentation.modelfile.save_model`,
with the branch description in ``provenance['soars']``).

Determinism: every epoch's random numbers derive from ``(seed, epoch,
rank)``, the network initialisation from ``seed``; a run resumed from its
checkpoint continues with the same losses as an uninterrupted one (on the
same machine and thread count).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, OutputExistsError, SoarsDoseError
from ..outputs import atomic_write_file
from . import branches as B
from . import catalogue, nas
from .device import autocast, resolve_device
from .modelfile import save_model
from .phantom42 import DatasetCase, load_dataset
from .preprocess import AIR_HU, Preprocessing, normalize_intensity, prepare_ct, prepare_labels

__all__ = [
    "CHECKPOINT_FORMAT",
    "Sample",
    "TrainConfig",
    "TrainResult",
    "augment",
    "heatmap_loss",
    "partial_dice_ce",
    "prepare_samples",
    "train",
]

CHECKPOINT_FORMAT = "soars-dose-checkpoint"
CHECKPOINT_VERSION = 1
STAGES = ("warmup", "search", "train")
MASKED_LOGIT = -1.0e4


# =========================================================================== configuration
@dataclass
class TrainConfig:
    """Everything that defines a training run (stored as ``config.json``).

    The defaults describe a full-size SOARS branch; :meth:`tiny` gives the
    CPU-sized configuration used for the synthetic phantom.
    """

    branch: str = B.ANCHOR
    # network
    widths: tuple[int, ...] = (16, 32, 64, 80, 96)  # the packaged model's size
    ops: tuple[str, ...] | None = None  # fixed ops without search (default: all "3d_3")
    up: str = "trilinear"
    # schedule
    search: bool = False
    warmup_epochs: int = 10
    search_epochs: int = 40
    epochs: int = 100
    iterations_per_epoch: int | None = None  # None: one pass over this rank's training items
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (48, 96, 96)
    search_patch_size: tuple[int, int, int] | None = None  # default: patch_size
    # optimisers
    optimizer: str = "sgd"  # final training: "sgd" (SOARS: Nesterov) or "adam" (CPU budgets)
    lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_power: float = 0.9
    grad_clip: float = 12.0
    search_lr: float = 1e-3
    alpha_lr: float = 3e-3
    alpha_weight_decay: float = 1e-3
    # data
    holdout_fraction: float = 1.0 / 3.0
    seed: int = 0
    target_spacing_mm: tuple[float, float, float] | None = None  # default: the data set's
    window_hu: tuple[float, float] = (-500.0, 1000.0)
    anchor_model: str | None = None
    # augmentation
    augment: bool = True
    flip_probability: float = 0.5
    rotation_deg: float = 10.0
    rotation_probability: float = 0.2
    intensity_range: tuple[float, float] = (0.75, 1.25)
    intensity_probability: float = 0.15
    shift_hu: float = 0.0  # CT-number offsets up to +-shift_hu (window intensities only)
    shift_probability: float = 0.0
    noise_std: float = 0.03
    noise_probability: float = 0.1
    # branch specifics
    heatmap_sigma_mm: float = B.HEATMAP_SIGMA_MM
    heatmap_fg_weight: float = 0.0
    ce_balance: float = 1.0  # class-balancing exponent at the start of a stage ...
    ce_balance_final: float = 0.0  # ... and at its end (linear in between)
    detect_threshold: float = 0.3
    voi_factor: float = B.VOI_FACTOR
    voi_jitter_vox: float = 2.0
    sh_min_patch: tuple[int, int, int] = B.SH_MIN_PATCH
    # bookkeeping
    validate_every: int = 1
    validate_search: bool = True  # also validate during the warm-up and search stages
    final_on_all: bool = False  # final training also on the held-out cases (kept for the search)
    init_model: str | None = None  # model file whose network and weights start the final training
    batches_on_device: bool = True  # crop and augment on the training device (GPU: much faster)

    def __post_init__(self) -> None:
        self.branch = B.role_from_cli(self.branch)
        for name in ("widths", "ops", "patch_size", "search_patch_size", "target_spacing_mm",
                     "intensity_range", "sh_min_patch", "window_hu"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, tuple(v))
        if len(self.widths) != 5:
            raise InputError(f"widths must list 5 channel counts, got {self.widths}")
        if self.ops is not None and len(self.ops) != len(nas.BLOCK_NAMES):
            raise InputError(f"ops must name {len(nas.BLOCK_NAMES)} blocks, got {len(self.ops)}")
        if self.ops is not None and any(o not in nas.OPS for o in self.ops):
            raise InputError(f"ops must be chosen from {', '.join(nas.OPS)}, got {self.ops}")
        if not 0 < self.holdout_fraction < 1:
            raise InputError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1")
        if self.search and (self.warmup_epochs < 0 or self.search_epochs < 1):
            raise InputError("a search needs warmup_epochs >= 0 and search_epochs >= 1")
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.branch in (B.MID, B.SH_DETECT) and not self.anchor_model:
            raise InputError(f"the {self.branch} branch takes the anchor network's probability "
                             "maps as input: give anchor_model (--anchor-model), the anchor "
                             "branch's model.soars.pt")

    @classmethod
    def tiny(cls, branch: str, **overrides) -> "TrainConfig":
        """A small configuration for the 48 x 64 x 64 phantom on a CPU.

        Narrow networks (8-16-32-32-32), whole-volume patches, batch 1,
        HU window (-200, 500) (soft-tissue contrast, yet the temporo-mandibular
        joints, 350 HU in the phantom, stay apart from saturated bone). The S&H detector is wider
        (16 channels at full resolution for 14 heat maps) and trains with
        Adam (learning rate 1e-3, polynomial decay): on this budget SGD
        leaves some heat maps unlearnt (see the issue note). The S&H
        segmentation network gets the same width and Adam (learning rate
        2e-3) with two VOI crops per step: with the narrow SGD recipe it
        learnt none of the 14 organs in its ~240 steps.
        """
        kw: dict[str, Any] = dict(
            branch=branch, widths=(8, 16, 32, 32, 32), patch_size=(48, 64, 64),
            search_patch_size=(32, 48, 48), batch_size=1, epochs=20, iterations_per_epoch=12,
            warmup_epochs=1, search_epochs=2, lr=0.02, momentum=0.99,
            window_hu=(-200.0, 500.0))
        if B.role_from_cli(branch) == B.SH_DETECT:
            kw.update(widths=(16, 32, 32, 32, 32), optimizer="adam", lr=1e-3)
        if B.role_from_cli(branch) == B.SH_SEG:
            # 8 channels at full resolution for 15 classes and SGD do not learn the S&H
            # organs in a few hundred steps (held-out VOI Dice ~0, the loss stalls at the
            # "predict background" value); two VOI crops per step add about 0.1 Dice
            kw.update(widths=(16, 32, 32, 32, 32), optimizer="adam", lr=2e-3, batch_size=2)
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training setting(s) {unknown}")
        return cls(**data)

    def stages(self) -> list[tuple[str, int]]:
        """``[(stage, epochs), ...]`` in order."""
        out = []
        if self.search:
            out += [("warmup", int(self.warmup_epochs)), ("search", int(self.search_epochs))]
        out.append(("train", int(self.epochs)))
        return [(s, n) for s, n in out if n > 0]

    def total_epochs(self) -> int:
        return sum(n for _, n in self.stages())

    def stage_of(self, epoch: int) -> tuple[str, int, int]:
        """``(stage, epoch within stage, epochs of stage)`` of a global epoch index."""
        e = epoch
        for s, n in self.stages():
            if e < n:
                return s, e, n
            e -= n
        raise IndexError(epoch)


# =========================================================================== losses
def partial_dice_ce(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, *,
                    groups: list[list[int]] | None = None, smooth: float = 1.0,
                    balance: float = 0.0) -> torch.Tensor:
    """Dice + cross-entropy over the OARs annotated in each sample.

    Parameters
    ----------
    logits : Tensor (N, C, D, H, W)
        Channel 0 background.
    target : Tensor (N, D, H, W) of int
        Labels 0..C-1; unannotated OARs must already be background (any
        voxel labelled with an unannotated class is treated as background).
    annotated : Tensor (N, C) of bool
        Which channels are annotated per sample (channel 0 is always taken
        as annotated).
    groups : list of list of int, optional
        Merge channels into output classes before the loss (S&H left/right
        pairs, :func:`~soars_dose.segmentation.branches.pair_groups`); a
        group is annotated when any member is.
    smooth : float
        Soft Dice smoothing.

    Returns
    -------
    Tensor
        Scalar: mean cross-entropy + (1 - mean soft Dice over the annotated
        foreground classes present in each sample). Classes absent from a
        sample's labels are left to the cross-entropy: their soft Dice
        would be (almost) 1 for an all-background prediction and reward
        predicting nothing in crops that hold one organ of many.

    Notes
    -----
    Unannotated channels are replaced by a large negative constant before
    the softmax (``torch.where``), so their logits receive exactly zero
    gradient: the loss neither rewards nor punishes what the network says
    about an organ nobody contoured in that case.
    """
    annotated = annotated.clone().bool()
    annotated[:, 0] = True
    n, c = logits.shape[:2]
    ann = annotated.view(n, c, 1, 1, 1).expand_as(logits)
    masked = torch.where(ann, logits, torch.full_like(logits, MASKED_LOGIT))
    logp = torch.log_softmax(masked, dim=1)
    target = target.long()
    target = torch.where(torch.gather(annotated, 1, target.view(n, -1)).view_as(target),
                         target, torch.zeros_like(target))
    if groups is not None:
        logq = torch.stack([torch.logsumexp(logp[:, g], dim=1) for g in groups], dim=1)
        lut = torch.tensor(B.group_of_channel(groups, c), dtype=torch.long, device=target.device)
        target = lut[target]
        ann_g = torch.stack([annotated[:, g].any(dim=1) for g in groups], dim=1)
    else:
        logq, ann_g = logp, annotated
    if balance:
        nll = -torch.gather(logq, 1, target[:, None])[:, 0]
        cnt = torch.zeros(n, logq.shape[1], dtype=nll.dtype, device=nll.device).scatter_add_(
            1, target.view(n, -1), torch.ones_like(nll).view(n, -1))
        tot = torch.zeros_like(cnt).scatter_add_(1, target.view(n, -1), nll.view(n, -1))
        w = torch.where(cnt > 0, cnt.clamp(min=1) ** -float(balance), torch.zeros_like(cnt))
        ce = ((w * tot).sum(1) / (w * cnt).sum(1)).mean()
    else:
        ce = F.nll_loss(logq, target)
    q = logq.exp()
    onehot = F.one_hot(target, logq.shape[1]).permute(0, 4, 1, 2, 3).to(q.dtype)
    dims = (2, 3, 4)
    inter = (q * onehot).sum(dims)
    denom = q.sum(dims) + onehot.sum(dims)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    valid = ann_g & (onehot.sum(dims) > 0)  # annotated classes present in the sample
    valid[:, 0] = False
    dice_loss = (1.0 - dice[valid]).mean() if bool(valid.any()) else q.sum() * 0.0
    return ce + dice_loss


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, *,
                 fg_weight: float = 0.0, normalize: bool = True) -> torch.Tensor:
    """L2 loss of S&H heat maps over the annotated organs only.

    Parameters
    ----------
    pred, target : Tensor (N, C, D, H, W)
        Channel 0 is reserved and ignored.
    annotated : Tensor (N, C) of bool
    fg_weight : float
        Voxel weight ``1 + fg_weight * target`` (0: unweighted).
    normalize : bool
        Divide each channel's sum of squared errors by the sum of its
        squared target (the loss of an all-zero prediction is then 1
        whatever the patch size); otherwise the mean squared error. A
        target that is zero in the patch (organ outside it) is normalised
        by the Gaussian's nominal mass instead.

    Returns
    -------
    Tensor
        Scalar, mean over the annotated (sample, organ) pairs.
    """
    valid = annotated.clone().bool()
    valid[:, 0] = False
    se = (pred - target) ** 2
    if fg_weight:
        se = se * (1.0 + fg_weight * target)
    if normalize:
        mass = (target ** 2).sum(dim=(2, 3, 4))
        nominal = mass[valid & (mass > 0)]
        floor = (nominal.mean().detach() if nominal.numel()
                 else torch.tensor(1.0, device=pred.device))
        per = se.sum(dim=(2, 3, 4)) / torch.where(mass > 0, mass, floor)
    else:
        per = se.mean(dim=(2, 3, 4))
    return per[valid].mean() if bool(valid.any()) else pred.sum() * 0.0


# =========================================================================== data
@dataclass
class Sample:
    """One case prepared for one branch, on the network grid.

    Attributes
    ----------
    case_id : str
    image : ndarray float32 (D, H, W)
        Normalised CT.
    labels : ndarray uint8 (D, H, W)
        Labels of the branch's category (annotated OARs only).
    annotated : ndarray bool (C,)
        Per output channel (channel 0 True).
    extra : ndarray float16 (n_anchor, D, H, W) or None
        Anchor OAR probability maps (mid-level and detection branches).
    centres : ndarray (n_oar, 3)
        Centroids ``(k, j, i)`` of the branch's OARs, NaN when absent or unannotated.
    spacing : tuple
    fill : float
        Normalised value of air (padding).
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray
    annotated: np.ndarray
    extra: np.ndarray | None
    centres: np.ndarray
    spacing: tuple[float, float, float]
    fill: float


def _centres(labels: np.ndarray, n: int, annotated: np.ndarray) -> np.ndarray:
    out = np.full((n, 3), np.nan)
    from scipy import ndimage

    present = [c for c in range(1, n + 1) if annotated[c]]
    if present:
        com = ndimage.center_of_mass(np.ones_like(labels, dtype=np.float32), labels, present)
        for c, ctr in zip(present, com):
            if np.all(np.isfinite(ctr)):
                out[c - 1] = ctr
    return out


def prepare_samples(cases: list[DatasetCase], role: str, preprocessing: Preprocessing,
                    anchor=None) -> list[Sample]:
    """Preprocess data set cases for one branch (and run the anchor network where needed).

    Parameters
    ----------
    cases : list of DatasetCase
    role : str
    preprocessing : Preprocessing
    anchor : BranchModel, optional
        The trained anchor branch (:func:`~soars_dose.segmentation.bundle.load_models`),
        required for ``mid_level`` and ``sh_detect``.
    """
    from .inference import predict_probabilities

    cat = B.label_category(role)
    names = cases[0].oar_names[cat] if cases else B.branch_oars(role)
    fill = float(normalize_intensity(np.array([AIR_HU], np.float32), preprocessing)[0])
    out = []
    for case in cases:
        prep = prepare_ct(case.hu, case.grid, preprocessing)
        labels = prepare_labels(case.labels[cat], prep).astype(np.uint8)
        all_names = case.all_names()
        annotated = np.array([True] + [bool(case.annotated[all_names.index(n)]) for n in names])
        extra = None
        if B.needs_anchor(role):
            if anchor is None:
                raise InputError(f"the {role} branch needs the anchor model")
            probs = predict_probabilities(anchor, prep.image, fill=fill)
            extra = probs[1:].to(torch.float16).numpy()
        out.append(Sample(case.case_id, prep.image, labels, annotated, extra,
                          _centres(labels, len(names), annotated), prep.grid.spacing, fill))
    return out


# =========================================================================== augmentation
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
    info: dict[str, Any] = {"flip": False, "angle_deg": 0.0, "scale": 1.0, "noise": 0.0,
                            "shift": 0.0}
    if rng.random() < config.flip_probability:
        x, labels, annotated, centres = _flip(x, labels, annotated, centres, perm_in, perm_out)
        info["flip"] = True
    if config.rotation_deg > 0 and rng.random() < config.rotation_probability:
        ang = float(rng.uniform(-config.rotation_deg, config.rotation_deg))
        x, labels, centres = _rotate(x, labels, centres, math.radians(ang), spacing, fill)
        info["angle_deg"] = ang
    lo, hi = config.intensity_range
    x = x.clone()
    if rng.random() < config.intensity_probability:
        scale = float(rng.uniform(lo, hi))
        x[0] = (x[0] - fill) * scale + fill
        info["scale"] = scale
    if config.noise_std > 0 and rng.random() < config.noise_probability:
        sd = float(rng.uniform(0.0, config.noise_std))
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        x[0] += sd * torch.randn(x.shape[1:], generator=g).to(x.device)
        info["noise"] = sd
    if config.shift_hu > 0 and rng.random() < config.shift_probability:
        # a CT number offset (miscalibrated scanner, contrast): tissue moves, the window's
        # ends stay where they are, as they would after clipping a shifted scan
        lo_hu, hi_hu = config.window_hu
        shift = float(rng.uniform(-config.shift_hu, config.shift_hu)) / (hi_hu - lo_hu)
        x[0] = (x[0] + shift).clamp(0.0, 1.0)
        info["shift"] = shift
    return x, labels, annotated, centres, info


# =========================================================================== batches
def _patch_start(shape, patch, rng) -> np.ndarray:
    out = []
    for n, p in zip(shape, patch):
        lo, hi = min(0, n - p), max(0, n - p)
        out.append(int(rng.integers(lo, hi + 1)))
    return np.asarray(out)


class _Task:
    """Branch-specific item lists, batch assembly, loss and validation."""

    def __init__(self, role: str, config: TrainConfig, anchor_names: list[str] | None,
                 names: list[str] | None = None):
        self.role, self.config = role, config
        self.names = list(names) if names is not None else B.branch_oars(role)
        self.perm_out = catalogue.lr_permutation(self.names)
        self.perm_in = B.input_lr_permutation(role, anchor_names)
        self.groups = B.pair_groups(self.names) if role == B.SH_SEG else None
        self.balance = config.ce_balance
        self.device = torch.device("cpu")
        self._cache: dict[int, tuple] = {}

    def to(self, device) -> "_Task":
        """Build examples on ``device``: each sample's volumes are copied there once.

        On a GPU this keeps cropping and augmentation off the CPU, which
        otherwise limits the training speed.
        """
        self.device = torch.device(device)
        self._cache.clear()
        return self

    def _volumes(self, sample: Sample):
        hit = self._cache.get(id(sample))
        if hit is not None and hit[0] is sample:
            return hit[1:]
        dev = self.device
        img = torch.from_numpy(sample.image).to(dev)[None]
        lab = torch.from_numpy(sample.labels).to(dev)
        ext = None if sample.extra is None else torch.from_numpy(sample.extra).to(dev)
        self._cache[id(sample)] = (sample, img, lab, ext)  # CPU: views of the arrays
        return img, lab, ext

    # ---- items: sample index (and organ channel for sh_seg)
    def items(self, samples: list[Sample]) -> list[tuple[int, int]]:
        if self.role != B.SH_SEG:
            return [(i, 0) for i in range(len(samples))]
        return [(i, c) for i, s in enumerate(samples) for c in range(1, len(self.names) + 1)
                if s.annotated[c] and np.all(np.isfinite(s.centres[c - 1]))]

    def make(self, sample: Sample, channel: int, patch, rng, augment_on: bool):
        """``(x, target, annotated)`` tensors of one training example (no batch dim)."""
        if self.role == B.SH_SEG:
            name = self.names[channel - 1]
            _, patch = B.voi_shapes(name, sample.spacing, voi_factor=self.config.voi_factor,
                                    min_patch=self.config.sh_min_patch)
            j = self.config.voi_jitter_vox
            centre = sample.centres[channel - 1] + rng.uniform(-j, j, 3)
            start, _ = B.crop_box(centre, patch)
        else:
            start = _patch_start(sample.image.shape, patch, rng)
        img, lab, ext = self._volumes(sample)
        x = B.extract(img, start, patch, sample.fill)
        if ext is not None:
            x = torch.cat([x, B.extract(ext, start, patch, 0.0).float()])
        labels = B.extract(lab, start, patch, 0).long()
        centres = sample.centres - start[None, :]
        annotated = sample.annotated.copy()
        if augment_on:
            x, labels, annotated, centres, _ = augment(
                x, labels, annotated, centres, rng, self.config, sample.spacing, self.perm_in,
                self.perm_out, sample.fill)
        if self.role == B.SH_DETECT:
            heat = B.gaussian_heatmaps(patch, centres, sample.spacing, self.config.heatmap_sigma_mm)
            target = torch.cat([torch.zeros((1,) + tuple(patch)), heat]).to(x.device)
            return x, target, torch.from_numpy(annotated)
        return x, labels, torch.from_numpy(annotated)

    def loss(self, out, target, annotated):
        if self.role == B.SH_DETECT:
            return heatmap_loss(out, target, annotated, fg_weight=self.config.heatmap_fg_weight)
        return partial_dice_ce(out, target, annotated, groups=self.groups,
                               balance=self.balance)

    # ---- validation
    def validate(self, net: nn.Module, samples: list[Sample]) -> dict[str, Any]:
        from .inference import segment_voi
        from .sliding_window import sliding_window

        net.eval()
        per: dict[str, list[float]] = {n: [] for n in self.names}
        if self.role == B.SH_SEG:
            view = _BranchView(self.role, net, self.names, self.config)
            for s in samples:
                for c in range(1, len(self.names) + 1):
                    if not (s.annotated[c] and np.all(np.isfinite(s.centres[c - 1]))):
                        continue
                    name = self.names[c - 1]
                    start, mask = segment_voi(view, s.image, name, s.centres[c - 1], s.spacing,
                                              fill=s.fill)
                    full = np.zeros(s.image.shape, bool)
                    lo = np.maximum(start, 0)
                    hi = np.minimum(start + np.asarray(mask.shape), s.image.shape)
                    if np.all(hi > lo):
                        full[tuple(slice(a, b) for a, b in zip(lo, hi))] = mask[
                            tuple(slice(a - st, b - st) for a, b, st in zip(lo, hi, start))]
                    per[name].append(_dice(full, s.labels == c))
            net.train()
            return {"val_dice": _mean(per)}
        for s in samples:
            inputs = [(s.image, s.fill)] + ([(s.extra, 0.0)] if s.extra is not None else [])
            act = "none" if self.role == B.SH_DETECT else "softmax"
            out = sliding_window(net, inputs, self.config.patch_size, len(self.names) + 1,
                                 activation=act)
            if self.role == B.SH_DETECT:
                centres, _ = B.detect_centres(out[1:])
                for c, n in enumerate(self.names):
                    if s.annotated[c + 1] and np.all(np.isfinite(s.centres[c])):
                        per[n].append(float(np.linalg.norm(centres[c] - s.centres[c])))
            else:
                lab = torch.argmax(out, dim=0).numpy()
                for c, n in enumerate(self.names, start=1):
                    gt = s.labels == c
                    if s.annotated[c] and gt.any():
                        per[n].append(_dice(lab == c, gt))
        net.train()
        if self.role == B.SH_DETECT:
            errs = _mean(per)
            allv = [v for vs in per.values() for v in vs]
            return {"val_centre_error_vox": errs,
                    "val_within_2vox": float(np.mean([v <= 2.0 for v in allv])) if allv else None}
        return {"val_dice": _mean(per)}


@dataclass
class _BranchView:
    """The attributes of a BranchModel that inference helpers read, for a network in training."""

    role: str
    net: nn.Module
    oar_names: list[str]
    config: TrainConfig

    @property
    def meta(self) -> dict[str, Any]:
        return {"voi_factor": self.config.voi_factor, "sh_min_patch": list(self.config.sh_min_patch)}

    @property
    def patch_size(self):
        return self.config.patch_size


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def _mean(per: dict[str, list[float]]) -> dict[str, float | None]:
    return {k: (float(np.mean(v)) if v else None) for k, v in per.items()}


# =========================================================================== run folder
def _atomic_write(path: Path, write) -> None:
    atomic_write_file(path, write)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


class TrainingError(SoarsDoseError):
    """A training run cannot start or continue."""


def _prepare_run_dir(run_dir: Path, config: TrainConfig, dataset: Path, resume: bool,
                     overwrite: bool) -> None:
    cfg_path = run_dir / "config.json"
    wanted = {"config": config.to_dict(), "dataset": str(dataset)}
    if resume:
        if not cfg_path.is_file():
            raise TrainingError(f"{run_dir}: nothing to resume (no config.json); start a new run "
                                "without --resume")
        old = json.loads(cfg_path.read_text())
        if old.get("config") != wanted["config"]:
            diff = sorted(k for k in set(old.get("config", {})) | set(wanted["config"])
                          if old.get("config", {}).get(k) != wanted["config"].get(k))
            raise TrainingError(f"{run_dir}: was started with other settings ({', '.join(diff)} "
                                "differ); resume with the same settings or use a new folder")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{run_dir} already exists and is not empty; use --resume to "
                                    "continue its run or --overwrite to start again")
        for f in ("checkpoint.pt", "log.jsonl", "model.soars.pt", "architecture.json",
                  "split.json", "config.json", "search.json"):
            with contextlib.suppress(FileNotFoundError):
                (run_dir / f).unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(cfg_path, wanted)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    _atomic_write(path, lambda f: torch.save(state, f))


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a soars-dose training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path}: checkpoint version {state.get('version')} is not "
                            f"{CHECKPOINT_VERSION}")
    return state


# =========================================================================== networks
def _build(arch: dict[str, Any], seed: int, zero_head: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    net = B.fast_norm(nas.build_network(arch))
    if zero_head:  # heat-map regression starts from an all-zero prediction
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.zero_()
    return net


def _init_from(path: str, cin: int, cout: int) -> nn.Module:
    """The network of a model file, weights loaded, to continue training (fine-tuning)."""
    from .modelfile import load_model

    mf = load_model(path)
    a = mf.architecture
    if int(a["in_channels"]) != cin or int(a["out_channels"]) != cout:
        raise TrainingError(f"{path}: the model has {a['in_channels']} input and "
                            f"{a['out_channels']} output channels, this branch {cin} and {cout}")
    return B.fast_norm(mf.build()).train()


def _search_arch(config: TrainConfig, cin: int, cout: int) -> dict[str, Any]:
    return {"format": nas.ARCH_FORMAT, "version": nas.ARCH_VERSION, "in_channels": cin,
            "out_channels": cout, "widths": list(config.widths), "up": config.up,
            "negative_slope": 0.01, "blocks": list(nas.BLOCK_NAMES),
            "ops": [nas.MIXED] * len(nas.BLOCK_NAMES)}


def _fixed_arch(config: TrainConfig, cin: int, cout: int) -> dict[str, Any]:
    a = _search_arch(config, cin, cout)
    a["ops"] = list(config.ops) if config.ops else ["3d_3"] * len(nas.BLOCK_NAMES)
    return a


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if hasattr(m, "module") else m


class _Stage:
    """Network and optimisers of one stage."""

    def __init__(self, stage: str, net: nn.Module, config: TrainConfig, world: int):
        self.stage, self.config = stage, config
        self.net = net
        if stage == "train" and config.optimizer == "adam":
            self.opt_w = torch.optim.Adam(net.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
            self.opt_a = None
        elif stage == "train":
            self.opt_w = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                         nesterov=True, weight_decay=config.weight_decay)
            self.opt_a = None
        else:
            self.opt_w = torch.optim.RAdam(net.weight_parameters(), lr=config.search_lr)
            self.opt_a = torch.optim.Adam(net.arch_parameters(), lr=config.alpha_lr,
                                          betas=(0.5, 0.999),
                                          weight_decay=config.alpha_weight_decay)
            if stage == "warmup":
                for a in net.arch_parameters():
                    a.requires_grad_(True)  # gradients flow (DDP needs them); no optimiser step
        self.model = net
        if world > 1:
            self.model = nn.parallel.DistributedDataParallel(net)

    def state(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "opt_w": self.opt_w.state_dict(),
                "opt_a": self.opt_a.state_dict() if self.opt_a is not None else {}}

    def load(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.opt_w.load_state_dict(state["opt_w"])
        if self.opt_a is not None and state.get("opt_a"):
            self.opt_a.load_state_dict(state["opt_a"])


# =========================================================================== the entry
@dataclass
class TrainResult:
    """What :func:`train` produced (on every rank; files only from rank 0).

    Attributes
    ----------
    net : nn.Module
        The final fixed network (unwrapped from DDP), in eval mode.
    architecture : dict
    log : list of dict
        The per-epoch log entries (rank 0: also in ``log.jsonl``).
    run_dir : Path
    model_path : Path or None
        ``model.soars.pt`` (rank 0).
    rank, world_size : int
    """

    net: nn.Module
    architecture: dict[str, Any]
    log: list[dict[str, Any]]
    run_dir: Path
    model_path: Path | None
    rank: int = 0
    world_size: int = 1
    search_history: list[dict[str, Any]] = field(default_factory=list)


def _split(ids: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    n = len(ids)
    if n < 2:
        raise InputError("training needs at least 2 cases (one for training, one held out)")
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_hold = min(max(1, int(round(n * fraction))), n - 1)
    return sorted(order[n_hold:].tolist()), sorted(order[:n_hold].tolist())


def train(dataset: "str | os.PathLike", run_dir: "str | os.PathLike", config: TrainConfig, *,
          resume: bool = False, overwrite: bool = False, progress: bool = False,
          rank: int | None = None, world_size: int | None = None,
          init_method: str | None = None, stop_after_epoch: int | None = None,
          samples: "tuple[list[Sample], list[Sample]] | None" = None,
          device: "str | torch.device | None" = None,
          oar_names: "list[str] | None" = None,
          preprocessing: "Preprocessing | None" = None) -> TrainResult:
    """Train one SOARS branch (single process, or one rank of a DDP job).

    Parameters
    ----------
    dataset : path
        Data set folder (``dataset.json`` + cases).
    run_dir : path
        Run folder (created; see the module notes for its files).
    config : TrainConfig
    resume : bool
        Continue from ``run_dir/checkpoint.pt`` (the settings must match).
    overwrite : bool
        Start afresh in a non-empty run folder.
    progress : bool
        tqdm bar per epoch (rank 0).
    rank, world_size : int, optional
        For :func:`torch.multiprocessing.spawn`; by default taken from
        ``RANK`` / ``WORLD_SIZE`` (torchrun), else a single process.
    init_method : str, optional
        Process-group rendezvous (default ``env://``, what torchrun sets).
    stop_after_epoch : int, optional
        Stop (as if interrupted) after this many epochs in total, keeping
        the checkpoint; for tests of resumption.
    samples : (train, held_out), optional
        Already prepared samples (skips loading and preprocessing; tests).
    device : str or torch.device, optional
        Where the networks train (``"cpu"``, ``"cuda"``, ``"cuda:1"``...;
        default: CPU, or under torchrun with CUDA the GPU ``LOCAL_RANK``).
        On CUDA the forward passes run under bfloat16 autocast; the losses,
        weights and saved model stay float32. Not part of the stored
        configuration: a run may resume on another device.
    oar_names : list of str, optional
        With ``samples``: the output OARs (default: the branch's catalogue
        OARs), e.g. all OARs of a data set for a one-network baseline.
    preprocessing : Preprocessing, optional
        With ``samples``: the settings they were prepared with, stored in
        the model (default: their grid's spacing and ``config.window_hu``).

    Returns
    -------
    TrainResult
    """
    world = int(world_size if world_size is not None else os.environ.get("WORLD_SIZE", 1))
    rank = int(rank if rank is not None else os.environ.get("RANK", 0))
    own_group = False
    dev = resolve_device(device, world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method=init_method or "env://", rank=rank,
                                world_size=world)
        own_group = True
    try:
        return _train(Path(dataset), Path(run_dir), config, resume, overwrite, progress, rank,
                      world, stop_after_epoch, samples, dev, oar_names, preprocessing)
    finally:
        if own_group:
            dist.destroy_process_group()


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _train(dataset: Path, run_dir: Path, config: TrainConfig, resume: bool, overwrite: bool,
           progress: bool, rank: int, world: int, stop_after_epoch: int | None,
           samples, dev: torch.device, oar_names=None, pre_given=None) -> TrainResult:
    from tqdm.auto import tqdm

    main = rank == 0
    if main:
        _prepare_run_dir(run_dir, config, dataset, resume, overwrite)
    _barrier(world)
    role = config.branch
    names = B.branch_oars(role)
    t_start = time.perf_counter()

    # ---- data
    anchor = None
    anchor_names = catalogue.names("anchor") if B.needs_anchor(role) else None
    if samples is None:
        meta, cases = load_dataset(dataset)
        spacing = config.target_spacing_mm or tuple(meta.get("spacing_mm") or ()) or None
        preprocessing = Preprocessing(target_spacing_mm=spacing, window_hu=config.window_hu)
        if B.needs_anchor(role):
            from .bundle import load_models

            models = load_models(config.anchor_model)
            anchor = models[B.ANCHOR]
            anchor_names = anchor.oar_names
            if anchor.model.preprocessing.to_dict() != preprocessing.to_dict():
                raise TrainingError(
                    f"{config.anchor_model}: the anchor model was trained with preprocessing "
                    f"{anchor.model.preprocessing.to_dict()}, this run uses "
                    f"{preprocessing.to_dict()}; the branches must share one network grid")
        names = cases[0].oar_names[B.label_category(role)]
        if not names:
            raise TrainingError(f"{dataset}: the data set has no {B.label_category(role)} OARs "
                                f"to train the {role} branch on")
        tr_idx, ho_idx = _split([c.case_id for c in cases], config.holdout_fraction, config.seed)
        if anchor is not None:
            anchor.net.to(dev)
        train_s = prepare_samples([cases[i] for i in tr_idx], role, preprocessing, anchor)
        hold_s = prepare_samples([cases[i] for i in ho_idx], role, preprocessing, anchor)
        if anchor is not None:
            anchor.net.cpu()
        split = {"train": [cases[i].case_id for i in tr_idx],
                 "held_out": [cases[i].case_id for i in ho_idx]}
        n_cases = len(cases)
    else:
        train_s, hold_s = samples
        if oar_names is not None:
            names = list(oar_names)
        if B.needs_anchor(role) and config.anchor_model:
            from .bundle import load_models

            anchor_names = load_models(config.anchor_model)[B.ANCHOR].oar_names
        preprocessing = pre_given or Preprocessing(target_spacing_mm=tuple(train_s[0].spacing),
                                                   window_hu=config.window_hu)
        split = {"train": [s.case_id for s in train_s], "held_out": [s.case_id for s in hold_s]}
        n_cases = len(train_s) + len(hold_s)
    if config.shift_hu > 0 and preprocessing.intensity != "window":
        raise TrainingError(f"shift_hu moves CT numbers within the HU window; this run's "
                            f"intensities are {preprocessing.intensity!r}: set shift_hu=0")
    if main:
        _write_json(run_dir / "split.json", split)
    task = _Task(role, config, anchor_names, names).to(
        dev if config.batches_on_device else "cpu")
    cin = B.in_channels(role, None if anchor_names is None else len(anchor_names))
    cout = len(names) + 1
    train_items = task.items(train_s)
    hold_items = task.items(hold_s)
    all_s = train_s + hold_s
    all_items = task.items(all_s)
    if not train_items:
        raise TrainingError(f"no training examples for the {role} branch (no annotated OARs)")

    # ---- state
    log_path = run_dir / "log.jsonl"
    ckpt_path = run_dir / "checkpoint.pt"
    start_epoch = 0
    derived: dict[str, Any] | None = None
    ckpt = None
    if resume:
        if not ckpt_path.is_file():
            raise TrainingError(f"{run_dir}: no checkpoint.pt to resume from")
        ckpt = _load_checkpoint(ckpt_path)
        start_epoch = int(ckpt["epoch"])
        derived = json.loads(ckpt["derived"]) if ckpt.get("derived") else None
        torch.set_rng_state(ckpt["torch_rng"])
    log = [e for e in (_read_log(log_path) if main else []) if e.get("epoch", -1) < start_epoch]
    if main:
        _atomic_write(log_path, lambda f: f.write("".join(json.dumps(e) + "\n" for e in log)
                                                  .encode()))
    search_history = [e.get("alpha") for e in log if e.get("alpha")]
    stage_obj: _Stage | None = None
    if ckpt is not None:  # the stage the checkpoint was written in, restored
        net = _build(json.loads(ckpt["architecture"]), config.seed).to(dev)
        stage_obj = _Stage(ckpt["stage"], net, config, world)
        stage_obj.load(ckpt["state"])
    total = config.total_epochs()
    end = total if stop_after_epoch is None else min(total, int(stop_after_epoch))

    for epoch in range(start_epoch, end):
        stage, e_in, n_in = config.stage_of(epoch)
        t_ep = time.perf_counter()
        if stage_obj is None or stage_obj.stage != stage:
            prev = stage_obj
            if stage == "train":
                if config.search:
                    if derived is None and prev is not None:
                        derived = _unwrap(prev.net).derive()
                    if derived is None:
                        raise TrainingError("internal: the search left no architecture")
                    arch = dict(derived)
                    if main:
                        _write_json(run_dir / "architecture.json", arch)
                else:
                    arch = _fixed_arch(config, cin, cout)
                if config.init_model:
                    net = _init_from(config.init_model, cin, cout)
                    arch = net.architecture()
                else:
                    net = _build(arch, config.seed + 1, role == B.SH_DETECT)
                stage_obj = _Stage(stage, net.to(dev), config, world)
            else:
                net = _build(_search_arch(config, cin, cout), config.seed,
                             role == B.SH_DETECT).to(dev)
                stage_obj = _Stage(stage, net, config, world)
                if prev is not None:  # warm-up -> search: weights and their optimiser carry on
                    net.load_state_dict(_unwrap(prev.net).state_dict())
                    stage_obj.opt_w.load_state_dict(prev.opt_w.state_dict())
            del prev
        so = stage_obj
        so.net.train()
        frac = e_in / max(n_in - 1, 1)
        task.balance = config.ce_balance + (config.ce_balance_final - config.ce_balance) * frac
        rng = np.random.default_rng([config.seed, epoch, rank])
        if stage == "train":
            lr = config.lr * (1.0 - e_in / n_in) ** config.poly_power
            for g in so.opt_w.param_groups:
                g["lr"] = lr
        else:
            lr = config.search_lr
        patch = config.patch_size if stage == "train" else (config.search_patch_size
                                                            or config.patch_size)
        on_all = stage == "train" and config.final_on_all
        ep_samples, ep_items = (all_s, all_items) if on_all else (train_s, train_items)
        order = np.random.default_rng([config.seed, epoch, 991]).permutation(len(ep_items))
        mine = [ep_items[i] for i in order[rank::world]] or [ep_items[order[0]]]
        per_rank = int(math.ceil(len(ep_items) / (config.batch_size * world)))
        iters = int(config.iterations_per_epoch or max(1, per_rank))
        hold_order = rng.permutation(len(hold_items)) if hold_items else []
        losses, a_losses = [], []
        bar = tqdm(total=iters, desc=f"{role} {stage} {e_in + 1}/{n_in}", leave=False,
                   disable=not (progress and main))
        for it in range(iters):
            batch = [mine[(it * config.batch_size + b) % len(mine)]
                     for b in range(config.batch_size)]
            losses.append(_step(so, so.opt_w, task, ep_samples, batch, patch, rng, config,
                                clip=config.grad_clip if stage == "train" else None,
                                step=True, world=world))
            if stage == "search":
                if not hold_items:
                    raise TrainingError("the search needs held-out examples; the held-out split "
                                        f"has none for the {role} branch")
                hb = [hold_items[hold_order[(it * config.batch_size + b) % len(hold_items)]]
                      for b in range(config.batch_size)]
                a_losses.append(_step(so, so.opt_a, task, hold_s, hb, patch, rng, config,
                                      clip=None, step=True, world=world))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.close()
        loss = float(np.mean(losses))
        if world > 1:
            t = torch.tensor([loss], device=dev)
            dist.all_reduce(t)
            loss = float(t) / world
        entry: dict[str, Any] = {"epoch": epoch, "stage": stage, "stage_epoch": e_in,
                                 "loss": loss, "lr": lr, "iterations": iters}
        if a_losses:
            entry["alpha_loss"] = float(np.mean(a_losses))
        if stage != "train":
            entry["alpha"] = _unwrap(so.net).op_weights()
            search_history.append(entry["alpha"])
        if main and hold_s and (stage == "train" or config.validate_search) and (
                (epoch + 1) % max(1, config.validate_every) == 0 or epoch == total - 1):
            entry.update(task.validate(_unwrap(so.net), hold_s))
        entry["time_s"] = time.perf_counter() - t_ep
        if main:
            log.append(entry)
            with open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                     "epoch": epoch + 1, "stage": stage, "state": so.state(),
                     "architecture": json.dumps(_unwrap(so.net).architecture()),
                     "derived": json.dumps(derived) if derived else "",
                     "torch_rng": torch.get_rng_state(), "config": json.dumps(config.to_dict()),
                     "world_size": world}
            _save_checkpoint(ckpt_path, state)
        else:
            log.append(entry)
        _barrier(world)

    if stage_obj is None:
        raise TrainingError(f"{run_dir}: nothing to train (0 epochs)")
    final = _unwrap(stage_obj.net).cpu()
    final.eval()
    model_path = None
    finished = end >= total
    if finished and main:
        arch = final.architecture()
        _write_json(run_dir / "architecture.json", arch)
        last_val = next((e for e in reversed(log) if "val_dice" in e or
                         "val_centre_error_vox" in e), {})
        soars_meta = {"branch": role, "patch_size": list(config.patch_size),
                "anchor_oars": list(anchor_names) if anchor_names else [],
                "heatmap_sigma_mm": config.heatmap_sigma_mm,
                "detect_threshold": config.detect_threshold, "voi_factor": config.voi_factor,
                "sh_min_patch": list(config.sh_min_patch), "pair_merged_readout": role == B.SH_SEG}
        provenance = {
            "soars": soars_meta,
            "training": {"config": config.to_dict(), "dataset": str(dataset), "cases": n_cases,
                         "split": split, "epochs": total, "world_size": world,
                         "seconds": time.perf_counter() - t_start,
                         "final_validation": {k: v for k, v in last_val.items()
                                              if k.startswith("val")},
                         "searched": bool(config.search),
                         "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "torch": torch.__version__, "python": platform.python_version()},
        }
        model_path = save_model(run_dir / "model.soars.pt", final, oar_names=names,
                                preprocessing=preprocessing, provenance=provenance,
                                overwrite=True)
        if search_history:
            _write_json(run_dir / "search.json", search_history)
    _barrier(world)
    return TrainResult(final, final.architecture(), log, run_dir, model_path, rank, world,
                       search_history)


def _step(so: _Stage, opt, task: _Task, samples: list[Sample], batch, patch, rng,
          config: TrainConfig, *, clip: float | None, step: bool, world: int) -> float:
    """One optimiser step on ``batch``.

    Examples of one shape (the anchor, mid-level and detection branches'
    patches) go through the network as one batch; the S&H segmentation
    branch's VOIs differ in size per organ and accumulate gradients example
    by example (their loss is the mean of the examples' losses; in one
    batch the soft-Dice term averages over all (example, organ) pairs).
    """
    so.opt_w.zero_grad(set_to_none=False)
    if so.opt_a is not None:
        so.opt_a.zero_grad(set_to_none=False)
    total = 0.0
    n = len(batch)
    dev = next(_unwrap(so.net).parameters()).device
    if task.role != B.SH_SEG:
        made = [task.make(samples[i], c, patch, rng, config.augment) for i, c in batch]
        x, target, ann = (torch.stack([m[k] for m in made]).to(dev, non_blocking=True)
                          for k in range(3))
        with autocast(dev):
            out = so.model(x)
        loss = task.loss(out.float(), target, ann)
        loss.backward()
        total = float(loss.detach())
    else:
        for b, (i, c) in enumerate(batch):
            x, target, ann = task.make(samples[i], c, patch, rng, config.augment)
            x, target, ann = (t.to(dev, non_blocking=True) for t in (x, target, ann))
            ctx = (so.model.no_sync() if world > 1 and b < n - 1 else contextlib.nullcontext())
            with ctx:
                with autocast(dev):
                    out = so.model(x[None])
                loss = task.loss(out.float(), target[None], ann[None]) / n
                loss.backward()
            total += float(loss.detach())
    if clip:
        torch.nn.utils.clip_grad_norm_(list(_unwrap(so.net).parameters()), clip)
    if step:
        opt.step()
    return total
