"""Stratified SOARS inference: CT -> anchor -> mid-level -> small & hard -> RTSTRUCT.

Pipeline (:func:`segment_volume`, :func:`segment_ct`)
-----------------------------------------------------
1. :func:`~soars_dose.segmentation.preprocess.prepare_ct`: crop to the body,
   resample to the model's network grid, HU window.
2. ``anchor``: sliding-window softmax over the whole cropped volume. Its
   OAR probability maps (channels 1-9) are kept in float16 as input
   channels of the next branches.
3. ``mid_level`` (only if mid-level OARs are requested): sliding window on
   CT + anchor maps; the arg-max label map is mapped back to the CT grid
   and the probabilities freed.
4. ``sh_detect`` (only if S&H OARs are requested): sliding window on CT +
   anchor maps; the peak of each heat map is the organ's centre (an organ
   whose peak stays below the model's ``detect_threshold`` is reported as
   not found and gets an empty ROI).
5. ``sh_seg``: for every requested S&H organ, the VOI (3 x the organ's
   maximum extent) around its detected centre is segmented; the organ's
   mask is its left/right-merged class inside the VOI, reduced to the
   connected component at the centre (the one nearest to the centre if the
   centre voxel is not in the mask).
6. Every mask is mapped back to the CT grid with
   :func:`~soars_dose.segmentation.preprocess.restore_probabilities` /
   :func:`~soars_dose.segmentation.preprocess.restore_labels` and written
   with :func:`~soars_dose.segmentation.export.write_segmentation_rtstruct`.

Sliding window
--------------
:mod:`~soars_dose.segmentation.sliding_window`: Gaussian-weighted windows
of the branch's training patch size, half overlapping, optionally
mirror-averaged (``tta``).

Memory
------
Only the body crop is processed; branch by branch; input windows are
assembled on the fly from the float32 CT and the float16 anchor maps (no
full multi-channel float32 input volume is ever built); accumulators are
float32, or float16 when a branch's accumulator would exceed
``accumulate_limit_bytes`` (default 1 GiB; the window's own sum is always
computed in float32); intermediate tensors are freed as soon as the next
stage has what it needs. Masks on the CT grid are kept as bounding-box
crops and expanded one at a time while the RTSTRUCT is written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from .. import oars as catalogue
from ..errors import InputError, warn
from ..grid import Grid
from . import branches as B
from .bundle import SoarsModels, default_model_path, load_models
from .preprocess import (
    AIR_HU,
    Prepared,
    labels_to_grid,
    normalize_intensity,
    prepare_ct,
    restore_probabilities,
)
from .sliding_window import (
    DEFAULT_ACCUMULATE_LIMIT,
    n_windows,
    predict_window,
    sliding_window,
)

__all__ = [
    "SegmentationResult",
    "keep_largest_components",
    "predict_heatmaps",
    "predict_probabilities",
    "segment_ct",
    "segment_voi",
    "segment_volume",
]


def _image_fill(prepared_settings) -> float:
    return float(normalize_intensity(np.array([AIR_HU], np.float32), prepared_settings)[0])


def predict_probabilities(branch, image: np.ndarray, anchor_maps: np.ndarray | None = None, *,
                          fill: float = 0.0, tta: bool = False,
                          accumulate_limit_bytes: int = DEFAULT_ACCUMULATE_LIMIT,
                          on_window=None) -> torch.Tensor:
    """Softmax probabilities ``(C, D, H, W)`` of an ``anchor`` or ``mid_level`` branch.

    ``branch`` is a :class:`~soars_dose.segmentation.bundle.BranchModel`;
    ``anchor_maps`` the anchor OAR probabilities ``(9, D, H, W)`` for the
    mid-level branch.
    """
    inputs = [(image, fill)]
    if B.needs_anchor(branch.role):
        if anchor_maps is None:
            raise InputError(f"the {branch.role} branch needs the anchor probability maps")
        inputs.append((anchor_maps, 0.0))
    perm_in = B.input_lr_permutation(branch.role, branch.meta.get("anchor_oars"))
    perm_out = catalogue.lr_permutation(branch.oar_names)
    return sliding_window(branch.net, inputs, branch.patch_size, len(branch.oar_names) + 1,
                          activation="softmax", tta=tta, perm_in=perm_in, perm_out=perm_out,
                          accumulate_limit_bytes=accumulate_limit_bytes, on_window=on_window)


def predict_heatmaps(branch, image: np.ndarray, anchor_maps: np.ndarray, *, fill: float = 0.0,
                     tta: bool = False, on_window=None) -> torch.Tensor:
    """Heat maps ``(15, D, H, W)`` of the S&H detector (channel 0 reserved)."""
    perm_in = B.input_lr_permutation(branch.role, branch.meta.get("anchor_oars"))
    perm_out = catalogue.lr_permutation(branch.oar_names)
    return sliding_window(branch.net, [(image, fill), (anchor_maps, 0.0)], branch.patch_size,
                          len(branch.oar_names) + 1, activation="none", tta=tta,
                          perm_in=perm_in, perm_out=perm_out, on_window=on_window)


@torch.no_grad()
def segment_voi(branch, image: np.ndarray, name: str, centre: Sequence[float],
                spacing_mm: Sequence[float], *, fill: float = 0.0, tta: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """Mask of one S&H organ in its VOI around ``centre`` (network grid).

    Returns
    -------
    start : ndarray (3,)
        Index of the mask's first voxel on the network grid (may be negative).
    mask : ndarray of bool
        The VOI (``voi_shapes(...)[0]``), cropped to the volume later by the caller.
    """
    voi, patch = B.voi_shapes(name, spacing_mm,
                              voi_factor=float(branch.meta.get("voi_factor", B.VOI_FACTOR)),
                              min_patch=branch.meta.get("sh_min_patch", B.SH_MIN_PATCH))
    start, _ = B.crop_box(centre, patch)
    x = B.extract(torch.from_numpy(np.asarray(image, np.float32))[None], start, patch, fill)[None]
    perm = catalogue.lr_permutation(branch.oar_names)
    probs = predict_window(branch.net, x, "softmax", tta, [0], perm)[None]
    groups = B.pair_groups(branch.oar_names)
    merged = B.merge_pairs(probs, groups)[0]
    lab = torch.argmax(merged, dim=0).numpy()
    g = B.group_of_channel(groups, len(branch.oar_names) + 1)[branch.oar_names.index(name) + 1]
    vstart = (np.asarray(patch) - np.asarray(voi)) // 2
    sl = tuple(slice(int(a), int(a + v)) for a, v in zip(vstart, voi))
    mask = lab[sl] == g
    local = np.round(np.asarray(centre) - start - vstart).astype(int)
    mask = _component(mask, local)
    return start + vstart, mask


def keep_largest_components(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Keep, for each label value, only its largest 26-connected component (in place).

    Every OAR of the anchor and mid-level branches is one connected organ
    (a left and a right organ are separate labels), so any other
    component is a false positive; removing them is the usual
    post-processing of organ segmentation. Works on each label's bounding
    box only.

    Parameters
    ----------
    labels : ndarray of int ``[k, j, i]``
    values : sequence of int
        Label values to clean (others untouched).

    Returns
    -------
    ndarray
        ``labels`` (modified).
    """
    st = np.ones((3, 3, 3), bool)
    for v in values:
        m = labels == v
        if not m.any():
            continue
        box = ndimage.find_objects(m.astype(np.uint8))[0]
        sub = m[box]
        lab, n = ndimage.label(sub, structure=st)
        if n <= 1:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        drop = sub & (lab != int(np.argmax(sizes)))
        view = labels[box]
        view[drop] = 0
    return labels


def _component(mask: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The connected component (26-connectivity) at ``centre``, else the one nearest to it.

    Not the largest: the mask is a left/right-merged class, and a VOI can
    hold both partners (the optic nerves lie closer together than their
    VOI's half-width), so the largest component may be the other side's
    organ while the centre voxel just missed this one (a thin or curved
    organ whose centroid lies outside it, or a detection a voxel off).
    """
    if not mask.any():
        return mask
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 1:
        return mask
    c = np.asarray([int(np.clip(v, 0, s - 1)) for v, s in zip(centre, mask.shape)])
    keep = lab[tuple(c)]
    if keep == 0:
        idx = np.argwhere(lab > 0)
        keep = lab[tuple(idx[int(np.argmin(((idx - c) ** 2).sum(axis=1)))])]
    return lab == keep


# --------------------------------------------------------------------------- results
@dataclass
class _BoxMask:
    start: tuple[int, int, int]
    mask: np.ndarray


class LazyMasks(Mapping):
    """``{oar: full boolean mask on the CT grid}``, each expanded only when accessed.

    Anchor and mid-level masks come from one label map per branch; S&H
    masks from bounding-box crops; so memory holds the label maps plus one
    full mask at a time.
    """

    def __init__(self, shape: tuple[int, int, int]):
        self.shape = shape
        self._labels: dict[str, tuple[np.ndarray, int]] = {}
        self._boxes: dict[str, _BoxMask | None] = {}
        self._order: list[str] = []

    def add_label(self, name: str, labels: np.ndarray, value: int) -> None:
        self._labels[name] = (labels, int(value))
        self._order.append(name)

    def add_box(self, name: str, box: _BoxMask | None) -> None:
        self._boxes[name] = box
        self._order.append(name)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._labels:
            lab, v = self._labels[name]
            return lab == v
        if name in self._boxes:
            out = np.zeros(self.shape, dtype=bool)
            bm = self._boxes[name]
            if bm is not None:
                sl = tuple(slice(a, a + s) for a, s in zip(bm.start, bm.mask.shape))
                out[sl] = bm.mask
            return out
        raise KeyError(name)

    def reorder(self, names: Sequence[str]) -> None:
        """Iterate in ``names`` order (the order the caller asked for)."""
        self._order = list(names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def voxel_count(self, name: str) -> int:
        """Voxels of one mask, without expanding it."""
        if name in self._labels:
            lab, v = self._labels[name]
            return int(np.count_nonzero(lab == v))
        bm = self._boxes[name]
        return 0 if bm is None else int(bm.mask.sum())


@dataclass
class SegmentationResult:
    """What :func:`segment_volume` found.

    Attributes
    ----------
    masks : Mapping of str -> ndarray of bool
        One mask per requested OAR on the CT grid (``[k, j, i]``),
        expanded lazily; possibly empty (see ``not_found``).
    grid : Grid
        The CT grid.
    network_grid : Grid
    centres_mm : dict of str -> ndarray (3,)
        Detected S&H centres, LPS mm.
    peaks : dict of str -> float
        Heat map peak of each S&H organ.
    not_found : list of str
        S&H organs whose heat map peak stayed below the threshold.
    timings_s : dict of str -> float
    """

    masks: LazyMasks
    grid: Grid
    network_grid: Grid
    centres_mm: dict[str, np.ndarray] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


def _resolve_organs(models: SoarsModels, organs: Sequence[str] | None) -> list[str]:
    available = models.available_oars()
    if organs is None:
        if not available:
            raise InputError("the model has no anchor branch, so it cannot segment anything")
        return available
    organs = list(dict.fromkeys(organs))
    for n in organs:
        catalogue.get(n)
    missing = [n for n in organs if n not in available]
    if missing:
        raise InputError(f"the model cannot segment {', '.join(missing)} (its branches: "
                         f"{', '.join(models.branches)}; it can segment {len(available)} OARs)")
    return organs


def _box_to_ct(mask: np.ndarray, start: np.ndarray, prepared: Prepared) -> _BoxMask | None:
    """Map a network-grid box mask onto the original CT grid (trilinear indicator, 0.5 level)."""
    shape = np.asarray(prepared.grid.shape)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + np.asarray(mask.shape), shape)
    if np.any(hi <= lo) or not mask.any():
        return None
    sub = mask[tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start))]
    if not sub.any():
        return None
    idx = np.argwhere(sub)
    lo2 = lo + idx.min(axis=0)
    hi2 = lo + idx.max(axis=0) + 1
    sub = sub[tuple(slice(int(a - l), int(b - l)) for a, b, l in zip(lo2, hi2, lo))]
    # one voxel of background around the box, so that interpolation does not extend the
    # mask's edge values beyond it
    sub = np.pad(sub, 1)
    g = prepared.grid
    src = Grid(sub.shape, g.spacing, tuple(g.index_to_world(lo2 - 1)), g.direction)
    # destination: the part of the crop grid around this box (+2 voxels)
    crop = prepared.crop_grid
    corners = np.array([[a, b, c] for a in (-1, sub.shape[0]) for b in (-1, sub.shape[1])
                        for c in (-1, sub.shape[2])], float)
    d = crop.world_to_index(src.index_to_world(corners))
    dlo = np.maximum(np.floor(d.min(axis=0)).astype(int) - 1, 0)
    dhi = np.minimum(np.ceil(d.max(axis=0)).astype(int) + 2, np.asarray(crop.shape))
    if np.any(dhi <= dlo):
        return None
    dst = crop.crop(dlo, dhi)
    out = labels_to_grid(sub.astype(np.uint8), src, dst, method="linear") > 0
    if not out.any():
        # smaller than a CT voxel after resampling: keep the nearest voxel of its centre
        c = np.round(dst.world_to_index(src.index_to_world(np.argwhere(sub).mean(axis=0))))
        c = np.clip(c.astype(int), 0, np.asarray(dst.shape) - 1)
        out[tuple(c)] = True
    return _BoxMask(tuple(int(v) for v in dlo + np.asarray(prepared.crop_start)), out)


def segment_volume(hu: np.ndarray, grid: Grid, models, organs: Sequence[str] | None = None, *,
                   tta: bool = False, progress: bool = True,
                   detect_threshold: float | None = None,
                   accumulate_limit_bytes: int = DEFAULT_ACCUMULATE_LIMIT,
                   device: "str | torch.device | None" = None,
                   largest_component: bool = True) -> SegmentationResult:
    """Segment a CT volume with the stratified SOARS pipeline.

    Parameters
    ----------
    hu : ndarray, shape ``grid.shape``
        CT numbers (HU), indexed ``[k, j, i]``.
    grid : Grid
        The CT grid (LPS mm).
    models : SoarsModels, path or list of paths
        See :func:`~soars_dose.segmentation.bundle.load_models`.
    organs : list of str, optional
        Catalogue names to segment (default: every OAR the model covers).
        The branches they depend on run in any case (the anchor branch
        always).
    tta : bool
        Left-right mirror test-time augmentation (about doubles the time).
    progress : bool
        tqdm progress bar on stderr.
    detect_threshold : float, optional
        Heat map peak below which an S&H organ counts as not found
        (default: the model's, 0.3 if it has none).
    accumulate_limit_bytes : int
        See :func:`~soars_dose.segmentation.sliding_window.sliding_window`.
    device : str or torch.device, optional
        Run the networks there (``"cuda"``: bfloat16 autocast); default:
        where the loaded networks are (CPU). Probabilities are accumulated
        on the CPU either way.
    largest_component : bool
        Keep only the largest connected component of each anchor and
        mid-level OAR (:func:`keep_largest_components`); S&H organs keep
        the component at their detected centre in any case.

    Returns
    -------
    SegmentationResult
    """
    from tqdm.auto import tqdm

    from .device import resolve_device

    t0 = time.perf_counter()
    models = load_models(models)
    if device is not None:
        models.to(resolve_device(device))
    organs = _resolve_organs(models, organs)
    anchor_names = models[B.ANCHOR].oar_names
    want_mid = [n for n in organs if catalogue.get(n).category == "mid_level"]
    want_sh = [n for n in organs if catalogue.get(n).category == "small_hard"]
    want_anchor = [n for n in organs if catalogue.get(n).category == "anchor"]
    timings: dict[str, float] = {}

    prepared = prepare_ct(hu, grid, models.preprocessing)
    image = prepared.image
    fill = _image_fill(models.preprocessing)
    timings["preprocess"] = time.perf_counter() - t0
    shape = prepared.grid.shape
    total = n_windows(shape, models[B.ANCHOR].patch_size)
    if want_mid:
        total += n_windows(shape, models[B.MID].patch_size)
    if want_sh:
        total += n_windows(shape, models[B.SH_DETECT].patch_size) + len(want_sh)
    bar = tqdm(total=total, desc="SOARS anchor", unit="win", disable=not progress, leave=False)
    result_masks = LazyMasks(grid.shape)
    out = SegmentationResult(result_masks, grid, prepared.grid)
    try:
        # ---- anchor
        t = time.perf_counter()
        probs = predict_probabilities(models[B.ANCHOR], image, fill=fill, tta=tta,
                                      accumulate_limit_bytes=accumulate_limit_bytes,
                                      on_window=bar.update)
        anchor_maps = probs[1:].to(torch.float16).numpy() if (want_mid or want_sh) else None
        if want_anchor:
            labels = restore_probabilities(probs.numpy(), prepared, as_labels=True)
            if largest_component:
                keep_largest_components(labels, [anchor_names.index(n) + 1 for n in want_anchor])
            for n in want_anchor:
                result_masks.add_label(n, labels, anchor_names.index(n) + 1)
        del probs
        timings["anchor"] = time.perf_counter() - t
        # ---- mid-level
        if want_mid:
            t = time.perf_counter()
            bar.set_description("SOARS mid-level")
            mid = models[B.MID]
            probs = predict_probabilities(mid, image, anchor_maps, fill=fill, tta=tta,
                                          accumulate_limit_bytes=accumulate_limit_bytes,
                                          on_window=bar.update)
            labels = restore_probabilities(probs.numpy(), prepared, as_labels=True)
            del probs
            if largest_component:
                keep_largest_components(labels, [mid.oar_names.index(n) + 1 for n in want_mid])
            for n in want_mid:
                result_masks.add_label(n, labels, mid.oar_names.index(n) + 1)
            timings["mid_level"] = time.perf_counter() - t
        # ---- small & hard
        if want_sh:
            t = time.perf_counter()
            bar.set_description("SOARS S&H detection")
            det, seg = models[B.SH_DETECT], models[B.SH_SEG]
            heat = predict_heatmaps(det, image, anchor_maps, fill=fill, tta=tta,
                                    on_window=bar.update)
            thr = detect_threshold if detect_threshold is not None else float(
                det.meta.get("detect_threshold", 0.3))
            idx = [det.oar_names.index(n) + 1 for n in want_sh]
            centres, peaks = B.detect_centres(heat[idx].float())
            del heat
            timings["sh_detect"] = time.perf_counter() - t
            t = time.perf_counter()
            bar.set_description("SOARS S&H segmentation")
            for n, c, pk in zip(want_sh, centres, peaks):
                out.peaks[n] = float(pk)
                out.centres_mm[n] = prepared.grid.index_to_world(c)
                if pk < thr:
                    out.not_found.append(n)
                    warn(f"{n} was not found (detection peak {pk:.2f} < {thr:.2f}); "
                         "its ROI is written empty")
                    result_masks.add_box(n, None)
                else:
                    start, mask = segment_voi(seg, image, n, c, prepared.grid.spacing, fill=fill,
                                              tta=tta)
                    result_masks.add_box(n, _box_to_ct(mask, start, prepared))
                bar.update(1)
            timings["sh_seg"] = time.perf_counter() - t
        del anchor_maps
    finally:
        bar.close()
    # requested order
    result_masks.reorder(organs)
    timings["total"] = time.perf_counter() - t0
    out.timings_s = timings
    return out


def segment_ct(ct_dir, models=None, out_rtstruct=None, organs: Sequence[str] | None = None,
               tta: bool = False, *, progress: bool = True, overwrite: bool = False,
               label: str = "SOARS", detect_threshold: float | None = None,
               device: "str | None" = None, ct_series: "str | None" = None
               ) -> SegmentationResult:
    """Segment a DICOM CT series and write the OARs as an RTSTRUCT.

    Parameters
    ----------
    ct_dir : path
        Folder of the CT series.
    models : path, list of paths or SoarsModels, optional
        A bundle file, branch model files, or a folder of them; default
        :func:`~soars_dose.segmentation.bundle.default_model_path` (raises
        :class:`~soars_dose.segmentation.bundle.NoModelError` when no model
        is installed).
    out_rtstruct : path
        RTSTRUCT to write (refused if it exists, unless ``overwrite``).
    organs : list of str, optional
        OARs to segment and write (default: all the model covers).
    tta : bool
        Left-right mirror test-time augmentation.
    ct_series : str, optional
        SeriesInstanceUID of the series to segment when ``ct_dir`` holds
        several (:func:`~soars_dose.dicom.ct.read_ct_series`).
    progress, overwrite, label, detect_threshold, device
        See :func:`segment_volume` and
        :func:`~soars_dose.segmentation.export.write_segmentation_rtstruct`.

    Returns
    -------
    SegmentationResult
        With ``timings_s['write']`` and the RTSTRUCT path in ``rtstruct``.
    """
    from ..dicom.ct import read_ct_series
    from ..outputs import check_writable_file
    from .export import write_segmentation_rtstruct

    if out_rtstruct is None:
        raise InputError("segment_ct needs out_rtstruct, the RTSTRUCT file to write")
    out_path = check_writable_file(out_rtstruct, overwrite, "the RTSTRUCT file to write")
    # the CT is read before the models: a folder of several series fails in a second
    ct = read_ct_series(ct_dir, ct_series)
    models = load_models(models if models is not None else default_model_path())
    hu = ct.load_hu()
    result = segment_volume(hu, ct.grid, models, organs, tta=tta, progress=progress,
                            detect_threshold=detect_threshold, device=device)
    del hu
    t = time.perf_counter()
    write_segmentation_rtstruct(result.masks, ct, out_path, label=label, overwrite=overwrite)
    result.timings_s["write"] = time.perf_counter() - t
    result.rtstruct = out_path  # type: ignore[attr-defined]
    return result
