"""Training examples: prepared samples, the train / held-out split, branch tasks.

A :class:`Sample` is one case prepared for one branch on the network grid;
:class:`Task` turns samples into the branch's training examples (random
patches, or for ``sh_seg`` VOI crops centred on each annotated organ's
centroid plus a random shift of up to ``voi_jitter_vox`` voxels, the
detector's error), computes the branch's loss and validates a network on
held-out samples (Dice per OAR, or detection error per OAR).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ... import oars as catalogue
from ...errors import InputError
from .. import branches as B
from ..dataset import DatasetCase
from ..preprocess import (
    AIR_HU,
    Preprocessing,
    normalize_intensity,
    prepare_ct,
    prepare_labels,
)
from .augment import augment
from .config import TrainConfig
from .losses import heatmap_loss, partial_dice_ce

__all__ = ["Sample", "Task", "organ_centres", "prepare_branches", "prepare_samples",
           "split_cases"]


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


def organ_centres(labels: np.ndarray, n: int, annotated: np.ndarray) -> np.ndarray:
    """Centroids ``(n, 3)`` (``[k, j, i]``) of labels 1..n; NaN where unannotated or absent."""
    out = np.full((n, 3), np.nan)

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
    cat = B.label_category(role)
    names = cases[0].oar_names[cat] if cases else B.branch_oars(role)
    fill = _air_fill(preprocessing)
    return [_sample(case, prepare_ct(case.hu, case.grid, preprocessing), role, names, fill,
                    anchor) for case in cases]


def prepare_branches(cases: list[DatasetCase], preprocessing: Preprocessing, anchor=None, *,
                     workers: int = 1, timings: "dict[str, float] | None" = None
                     ) -> dict[str, list[Sample]]:
    """Anchor and mid-level samples of the same cases, each CT resampled only once.

    The resampling, labels and centroids (CPU) run in ``workers`` threads
    (the resampling releases the GIL) while the calling thread runs the
    anchor network over the cases already prepared (on the anchor's device),
    in case order.

    Parameters
    ----------
    cases : list of DatasetCase
    preprocessing : Preprocessing
    anchor : BranchModel, optional
        The anchor branch whose probability maps are the mid-level inputs;
        without it only the anchor samples are made.
    workers : int
        Threads for the CPU part (1: all in the calling thread).
    timings : dict, optional
        Filled with ``preprocess_s`` (resampling, labels and centroids,
        summed over the cases: seconds of work, which overlap when
        ``workers`` > 1) and ``anchor_inference_s`` (wall-clock seconds of
        the anchor network over every case, in the calling thread).

    Returns
    -------
    dict
        ``{"anchor": [...], "mid_level": [...]}`` (``mid_level`` only with ``anchor``).
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    fill = _air_fill(preprocessing)
    out: dict[str, list[Sample]] = {B.ANCHOR: []}
    if anchor is not None:
        out[B.MID] = []
    spent: list[float] = []

    def first(case: DatasetCase):
        t = time.perf_counter()
        prep = prepare_ct(case.hu, case.grid, preprocessing)
        s = _sample(case, prep, B.ANCHOR, case.oar_names[B.label_category(B.ANCHOR)], fill)
        spent.append(time.perf_counter() - t)
        return prep, s

    t_inf = 0.0
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        for case, (prep, s) in zip(cases, pool.map(first, cases)):
            out[B.ANCHOR].append(s)
            if anchor is None:
                continue
            t1 = time.perf_counter()
            maps = _anchor_maps(anchor, prep.image, fill)
            t_inf += time.perf_counter() - t1
            t2 = time.perf_counter()
            out[B.MID].append(_sample(case, prep, B.MID,
                                      case.oar_names[B.label_category(B.MID)], fill, maps=maps))
            spent.append(time.perf_counter() - t2)
    if timings is not None:
        timings["preprocess_s"] = float(sum(spent))
        timings["anchor_inference_s"] = t_inf
    return out


def _air_fill(preprocessing: Preprocessing) -> float:
    return float(normalize_intensity(np.array([AIR_HU], np.float32), preprocessing)[0])


def _anchor_maps(anchor, image: np.ndarray, fill: float) -> np.ndarray:
    """The anchor OAR probabilities (float16, background dropped) of one prepared image."""
    from ..inference import predict_probabilities

    probs = predict_probabilities(anchor, image, fill=fill)
    return probs[1:].to(torch.float16).numpy()


def _sample(case: DatasetCase, prep, role: str, names: list[str], fill: float, anchor=None,
            maps: "np.ndarray | None" = None) -> Sample:
    """One case's :class:`Sample` for ``role`` from its prepared CT ``prep``."""
    labels = prepare_labels(case.labels[B.label_category(role)], prep).astype(np.uint8)
    all_names = case.all_names()
    annotated = np.array([True] + [bool(case.annotated[all_names.index(n)]) for n in names])
    extra = None
    if B.needs_anchor(role):
        if maps is None:
            if anchor is None:
                raise InputError(f"the {role} branch needs the anchor model")
            maps = _anchor_maps(anchor, prep.image, fill)
        extra = maps
    return Sample(case.case_id, prep.image, labels, annotated, extra,
                  organ_centres(labels, len(names), annotated), prep.grid.spacing, fill)


def _patch_start(shape, patch, rng) -> np.ndarray:
    out = []
    for n, p in zip(shape, patch):
        lo, hi = min(0, n - p), max(0, n - p)
        out.append(int(rng.integers(lo, hi + 1)))
    return np.asarray(out)


class Task:
    """Branch-specific item lists, batch assembly, loss and validation."""

    def __init__(self, role: str, config: TrainConfig, anchor_names: list[str] | None,
                 names: list[str] | None = None):
        self.role, self.config = role, config
        self.names = list(names) if names is not None else B.branch_oars(role)
        self.perm_out = catalogue.lr_permutation(self.names)
        self.perm_in = B.input_lr_permutation(role, anchor_names)
        self.groups = B.pair_groups(self.names) if role == B.SH_SEG else None
        self.balance = config.optimiser.ce_balance
        self.device = torch.device("cpu")
        self._cache: dict[int, tuple] = {}

    def to(self, device) -> "Task":
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
            readout = self.config.readout
            _, patch = B.voi_shapes(name, sample.spacing, voi_factor=readout.voi_factor,
                                    min_patch=readout.sh_min_patch)
            j = self.config.readout.voi_jitter_vox
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
            heat = B.gaussian_heatmaps(patch, centres, sample.spacing,
                                       self.config.readout.heatmap_sigma_mm)
            target = torch.cat([torch.zeros((1,) + tuple(patch)), heat]).to(x.device)
            return x, target, torch.from_numpy(annotated)
        return x, labels, torch.from_numpy(annotated)

    def loss(self, out, target, annotated):
        if self.role == B.SH_DETECT:
            return heatmap_loss(out, target, annotated,
                                fg_weight=self.config.readout.heatmap_fg_weight)
        return partial_dice_ce(out, target, annotated, groups=self.groups,
                               balance=self.balance)

    # ---- validation
    def validate(self, net: nn.Module, samples: list[Sample]) -> dict[str, Any]:
        from ..inference import segment_voi
        from ..sliding_window import sliding_window

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
            out = sliding_window(net, inputs, self.config.schedule.patch_size, len(self.names) + 1,
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
        r = self.config.readout
        return {"voi_factor": r.voi_factor, "sh_min_patch": list(r.sh_min_patch)}

    @property
    def patch_size(self):
        return self.config.schedule.patch_size


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def _mean(per: dict[str, list[float]]) -> dict[str, float | None]:
    return {k: (float(np.mean(v)) if v else None) for k, v in per.items()}


def split_cases(ids: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(training, held out)`` of ``ids``; ``fraction`` held out (one at least)."""
    n = len(ids)
    if n < 2:
        raise InputError("training needs at least 2 cases (one for training, one held out)")
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_hold = min(max(1, int(round(n * fraction))), n - 1)
    return sorted(order[n_hold:].tolist()), sorted(order[:n_hold].tolist())
