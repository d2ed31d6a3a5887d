"""CT preprocessing for the SOARS networks, and its inverse for predictions.

The forward path turns a CT volume on its own :class:`~soars_dose.grid.Grid`
into the network input::

    HU on the CT grid ──► body crop (threshold + largest component + margin)
                      ──► resample to the target spacing (trilinear)
                      ──► intensity: HU window -> [0, 1], or z-score

and remembers every step in a :class:`Prepared` record, so that predictions
(label maps or class probabilities) made on the network grid can be mapped
back onto the original CT grid (:func:`restore_labels`,
:func:`restore_probabilities`).

Conventions
-----------
* Arrays are indexed ``[k, j, i]`` (slice, row, column) on their grid, as
  everywhere in soars-dose; spacings are given in that axis order, in mm.
* Resampling keeps the grid's direction cosines: it only changes the
  voxel pitch along each array axis, so it works for any patient
  orientation. The resampled grid covers the same physical box as the
  input (voxel centres are placed symmetrically inside it).
* Mapping back (:func:`resample_to_grid`) goes through world coordinates
  (LPS mm) and works between any two grids.
* Probabilities are ``[c, k, j, i]`` with channel 0 = background.

Only numpy and scipy are used; this module does not import torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..grid import Grid

__all__ = [
    "Prepared",
    "Preprocessing",
    "body_bbox",
    "body_mask",
    "labels_to_grid",
    "normalize_intensity",
    "prepare_ct",
    "prepare_labels",
    "resample_grid",
    "resample_to_grid",
    "resample_to_spacing",
    "restore_labels",
    "restore_probabilities",
    "window_hu",
]

#: HU assumed outside the scanned volume when CT is resampled beyond it (air).
AIR_HU = -1024.0


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing settings, stored with every model (JSON-serialisable).

    Attributes
    ----------
    target_spacing_mm : tuple of 3 float or None
        Voxel pitch (mm) of the network grid along array axes ``[k, j, i]``
        (slice, row, column); None keeps the CT spacing.
    intensity : {'window', 'zscore'}
        ``window``: clip to ``window_hu`` and scale linearly to [0, 1].
        ``zscore``: clip to ``window_hu``, subtract ``zscore_mean_hu`` and
        divide by ``zscore_std_hu``.
    window_hu : tuple of 2 float
        Lower and upper HU of the window (default ``(-500, 1000)``).
    zscore_mean_hu, zscore_std_hu : float or None
        Dataset statistics (HU) for ``zscore``; when None they are computed
        per volume over the body voxels (after clipping).
    crop_to_body : bool
        Crop the volume to the body's bounding box before resampling.
    body_threshold_hu : float
        Voxels above this HU are candidate body voxels (default -400).
    crop_margin_mm : float
        Margin (mm) added around the body's bounding box on every side.
    """

    target_spacing_mm: tuple[float, float, float] | None = (3.0, 1.0, 1.0)
    intensity: str = "window"
    window_hu: tuple[float, float] = (-500.0, 1000.0)
    zscore_mean_hu: float | None = None
    zscore_std_hu: float | None = None
    crop_to_body: bool = True
    body_threshold_hu: float = -400.0
    crop_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        if self.target_spacing_mm is not None:
            sp = tuple(float(s) for s in self.target_spacing_mm)
            if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
                raise InputError(f"target_spacing_mm must be three positive mm values "
                                 f"[slice, row, column], got {self.target_spacing_mm!r}")
            object.__setattr__(self, "target_spacing_mm", sp)
        if self.intensity not in ("window", "zscore"):
            raise InputError(f"intensity must be 'window' or 'zscore', got {self.intensity!r}")
        w = tuple(float(v) for v in self.window_hu)
        if len(w) != 2 or not w[0] < w[1]:
            raise InputError(f"window_hu must be (low, high) with low < high, got {self.window_hu!r}")
        object.__setattr__(self, "window_hu", w)
        if self.zscore_std_hu is not None and not float(self.zscore_std_hu) > 0:
            raise InputError(f"zscore_std_hu must be positive, got {self.zscore_std_hu!r}")
        if (self.zscore_mean_hu is None) != (self.zscore_std_hu is None):
            raise InputError("give both zscore_mean_hu and zscore_std_hu, or neither "
                             "(per-volume statistics)")
        if not float(self.crop_margin_mm) >= 0:
            raise InputError(f"crop_margin_mm must be >= 0, got {self.crop_margin_mm!r}")

    # ---- JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain-type dictionary (lists instead of tuples), suitable for JSON."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        InputError
            For unknown keys or invalid values.
        """
        if not isinstance(data, dict):
            raise InputError(f"preprocessing settings must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown preprocessing setting(s) {unknown}; known: {sorted(known)}")
        kw = dict(data)
        for k in ("target_spacing_mm", "window_hu"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"preprocessing settings are not valid JSON: {exc}") from None
        return cls.from_dict(data)


# --------------------------------------------------------------------------- intensity
def window_hu(hu: np.ndarray, low: float = -500.0, high: float = 1000.0) -> np.ndarray:
    """Clip HU to ``[low, high]`` and scale linearly to [0, 1] (float32).

    ``low`` maps to 0, ``high`` to 1; e.g. with the default window
    (-500, 1000) HU, water (0 HU) becomes 1/3.
    """
    if not low < high:
        raise InputError(f"HU window must have low < high, got ({low}, {high})")
    hu = np.asarray(hu, dtype=np.float32)
    return ((np.clip(hu, low, high) - np.float32(low)) / np.float32(high - low)).astype(np.float32)


def normalize_intensity(hu: np.ndarray, settings: Preprocessing,
                        body: np.ndarray | None = None) -> np.ndarray:
    """Network input intensities from HU according to ``settings`` (float32).

    Parameters
    ----------
    hu : ndarray
        CT numbers in HU (any shape).
    settings : Preprocessing
    body : ndarray of bool, optional
        Same shape as ``hu``; voxels used for per-volume z-score statistics
        (all voxels when None).
    """
    lo, hi = settings.window_hu
    if settings.intensity == "window":
        return window_hu(hu, lo, hi)
    clipped = np.clip(np.asarray(hu, dtype=np.float32), lo, hi)
    if settings.zscore_mean_hu is not None:
        mean, std = float(settings.zscore_mean_hu), float(settings.zscore_std_hu)
    else:
        sample = clipped[body] if body is not None and np.any(body) else clipped
        mean, std = float(sample.mean()), float(sample.std())
        std = std if std > 1e-6 else 1.0
    return ((clipped - np.float32(mean)) / np.float32(std)).astype(np.float32)


# --------------------------------------------------------------------------- body
def body_mask(hu: np.ndarray, threshold_hu: float = -400.0) -> np.ndarray:
    """The patient's body: largest connected component of ``hu > threshold_hu``.

    Parameters
    ----------
    hu : ndarray, shape (n_k, n_j, n_i)
        CT numbers in HU, indexed ``[k, j, i]``.
    threshold_hu : float
        Voxels above it are candidates (couch and mask parts that touch
        the body are kept; separate ones are dropped).

    Returns
    -------
    ndarray of bool, same shape
        Empty when no voxel exceeds the threshold. Internal cavities (air
        ways, sinuses) are filled slice by slice.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise InputError(f"body_mask expects a 3-D volume [k, j, i], got shape {hu.shape}")
    cand = hu > threshold_hu
    lab, n = ndimage.label(cand)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == int(np.argmax(sizes))
    for k in range(body.shape[0]):
        if body[k].any():
            body[k] = ndimage.binary_fill_holes(body[k])
    return body


def body_bbox(mask: np.ndarray, spacing_mm, margin_mm: float = 10.0
              ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Bounding box of a mask, grown by ``margin_mm`` and clipped to the array.

    Parameters
    ----------
    mask : ndarray of bool, shape (n_k, n_j, n_i)
    spacing_mm : sequence of 3 float
        Voxel pitch along ``[k, j, i]``, mm.
    margin_mm : float
        Margin on every side, mm (rounded up to whole voxels).

    Returns
    -------
    start, stop : tuple of int
        Voxels ``start <= index < stop`` per axis; the whole array when the
        mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    shape = np.asarray(mask.shape)
    if not mask.any():
        return (0, 0, 0), tuple(int(n) for n in shape)  # type: ignore[return-value]
    pad = np.ceil(float(margin_mm) / np.asarray(spacing_mm, dtype=float) - 1e-9).astype(int)
    lo, hi = [], []
    for a in range(3):
        other = tuple(b for b in range(3) if b != a)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(idx[0])
        hi.append(idx[-1] + 1)
    start = np.maximum(np.asarray(lo) - pad, 0)
    stop = np.minimum(np.asarray(hi) + pad, shape)
    return tuple(int(v) for v in start), tuple(int(v) for v in stop)  # type: ignore[return-value]


# --------------------------------------------------------------------------- resampling
def resample_grid(grid: Grid, spacing_mm) -> Grid:
    """Grid with pitch ``spacing_mm`` covering the same box as ``grid`` (same direction).

    Along each axis the new size is ``max(1, round(n * s / s_new))`` and the
    new voxel centres sit symmetrically about the centre of the old box.

    Parameters
    ----------
    grid : Grid
    spacing_mm : sequence of 3 float
        New pitch along array axes ``[k, j, i]``, mm.
    """
    old = np.asarray(grid.spacing, dtype=float)
    new = np.asarray(spacing_mm, dtype=float)
    if new.shape != (3,) or np.any(new <= 0) or not np.all(np.isfinite(new)):
        raise InputError(f"spacing must be three positive mm values, got {spacing_mm!r}")
    n_old = np.asarray(grid.shape, dtype=float)
    n_new = np.maximum(1, np.round(n_old * old / new)).astype(int)
    # offset (mm, along each axis) of the new first centre from the old first centre
    offset = (n_old - 1) / 2 * old - (n_new - 1) / 2 * new
    origin = np.asarray(grid.origin) + offset @ grid.direction
    return Grid(tuple(n_new), tuple(new), tuple(origin), grid.direction)


def _index_map(src: Grid, dst: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset taking ``dst`` indices (column vector) to ``src`` indices."""
    m_dst = dst.direction * np.asarray(dst.spacing)[:, None]  # rows: mm step per dst index
    a = (m_dst @ src.direction.T) / np.asarray(src.spacing)[None, :]
    b = ((np.asarray(dst.origin) - np.asarray(src.origin)) @ src.direction.T) / np.asarray(src.spacing)
    return a.T, b


def resample_to_grid(volume: np.ndarray, src: Grid, dst: Grid, *, order: int = 1,
                     cval: float = 0.0, dtype=None) -> np.ndarray:
    """Sample a volume given on ``src`` at the voxel centres of ``dst``.

    Parameters
    ----------
    volume : ndarray, shape ``src.shape``
        Indexed ``[k, j, i]``; boolean volumes are treated as 0/1.
    src, dst : Grid
        Any two grids in the same patient frame (LPS mm), any directions.
    order : int
        Spline order: 1 = trilinear (images, probabilities), 0 = nearest
        (label maps).
    cval : float
        Value for ``dst`` centres more than one ``src`` voxel beyond the
        outermost ``src`` centres; closer than that the edge value is
        repeated (so the half-voxel rim of the ``src`` box is covered).
    dtype : numpy dtype, optional
        Output type. Default: the input's for ``order=0``, float32 (float64
        for float64 input) for ``order >= 1``.

    Returns
    -------
    ndarray, shape ``dst.shape``
    """
    volume = np.asarray(volume)
    if volume.shape != src.shape:
        raise InputError(f"volume has shape {volume.shape} but its grid is {src.shape}")
    if order == 0:
        work = volume.astype(np.uint8) if volume.dtype == bool else volume
        default = volume.dtype
    else:
        default = np.float64 if volume.dtype == np.float64 else np.float32
        work = volume.astype(default, copy=False)
    matrix, offset = _index_map(src, dst)
    padded = np.pad(work, 1, mode="edge")
    out = ndimage.affine_transform(
        padded, matrix, offset=offset + 1.0, output_shape=dst.shape, order=order,
        mode="constant", cval=cval, prefilter=False,
    )
    return out.astype(default if dtype is None else dtype, copy=False)


def resample_to_spacing(volume: np.ndarray, grid: Grid, spacing_mm, *, order: int = 1
                        ) -> tuple[np.ndarray, Grid]:
    """Resample a volume to a new voxel pitch over the same box (see :func:`resample_grid`).

    Parameters
    ----------
    volume : ndarray, shape ``grid.shape``, indexed ``[k, j, i]``
    grid : Grid
    spacing_mm : sequence of 3 float
        New pitch along ``[k, j, i]``, mm.
    order : int
        1 = trilinear (CT), 0 = nearest (labels).

    Returns
    -------
    volume : ndarray
        On the new grid; same dtype for ``order=0``, float for ``order=1``.
    grid : Grid
    """
    new_grid = resample_grid(grid, spacing_mm)
    return resample_to_grid(volume, grid, new_grid, order=order), new_grid


# --------------------------------------------------------------------------- pipeline
@dataclass
class Prepared:
    """A CT volume ready for the network, with everything needed to map results back.

    Attributes
    ----------
    image : ndarray of float32, shape ``grid.shape``
        Normalised intensities on :attr:`grid`, indexed ``[k, j, i]``.
    grid : Grid
        The network grid (cropped and resampled).
    original_grid : Grid
        The CT grid the volume came from.
    crop_start, crop_stop : tuple of int
        Body crop on the original grid (voxels ``start <= index < stop``).
    settings : Preprocessing
    """

    image: np.ndarray
    grid: Grid
    original_grid: Grid
    crop_start: tuple[int, int, int]
    crop_stop: tuple[int, int, int]
    settings: Preprocessing = field(default_factory=Preprocessing)

    @property
    def crop_grid(self) -> Grid:
        """The cropped original grid (before resampling)."""
        return self.original_grid.crop(self.crop_start, self.crop_stop)


def prepare_ct(hu: np.ndarray, grid: Grid, settings: Preprocessing | None = None) -> Prepared:
    """Crop, resample and normalise a CT volume for the network.

    Parameters
    ----------
    hu : ndarray, shape ``grid.shape``
        CT numbers in HU, indexed ``[k, j, i]``.
    grid : Grid
        Geometry of ``hu`` (LPS mm).
    settings : Preprocessing, optional

    Returns
    -------
    Prepared
    """
    settings = settings or Preprocessing()
    hu = np.asarray(hu, dtype=np.float32)
    if hu.shape != grid.shape:
        raise InputError(f"CT volume has shape {hu.shape} but its grid is {grid.shape}")
    body = body_mask(hu, settings.body_threshold_hu)
    if settings.crop_to_body:
        start, stop = body_bbox(body, grid.spacing, settings.crop_margin_mm)
    else:
        start, stop = (0, 0, 0), grid.shape
    sl = tuple(slice(a, b) for a, b in zip(start, stop))
    crop_grid = grid.crop(start, stop)
    hu_c, body_c = hu[sl], body[sl]
    if settings.target_spacing_mm is not None:
        net_grid = resample_grid(crop_grid, settings.target_spacing_mm)
        hu_r = resample_to_grid(hu_c, crop_grid, net_grid, order=1, cval=AIR_HU)
        body_r = resample_to_grid(body_c.astype(np.uint8), crop_grid, net_grid, order=0) > 0
    else:
        net_grid, hu_r, body_r = crop_grid, hu_c, body_c
    image = normalize_intensity(hu_r, settings, body_r)
    return Prepared(image=image, grid=net_grid, original_grid=grid, crop_start=tuple(start),
                    crop_stop=tuple(stop), settings=settings)


def prepare_labels(labels: np.ndarray, prepared: Prepared) -> np.ndarray:
    """Map a label map on the original CT grid onto the network grid (nearest neighbour).

    Parameters
    ----------
    labels : ndarray of int, shape ``prepared.original_grid.shape``
        Indexed ``[k, j, i]``; 0 = background.
    prepared : Prepared
        The record returned by :func:`prepare_ct` for the same CT.
    """
    labels = np.asarray(labels)
    if labels.shape != prepared.original_grid.shape:
        raise InputError(f"labels have shape {labels.shape} but the CT grid is "
                         f"{prepared.original_grid.shape}")
    return resample_to_grid(labels, prepared.original_grid, prepared.grid, order=0, cval=0)


def _sub_box(mask: np.ndarray, src: Grid, dst: Grid, pad: int = 2
             ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Index box of ``dst`` covering the ``src`` voxels of ``mask`` (plus ``pad``), or None."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0) - 1, idx.max(axis=0) + 1
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])], dtype=float)
    d = dst.world_to_index(src.index_to_world(corners))
    start = np.maximum(np.floor(d.min(axis=0)).astype(int) - pad, 0)
    stop = np.minimum(np.ceil(d.max(axis=0)).astype(int) + pad + 1, np.asarray(dst.shape))
    if np.any(stop <= start):
        return None
    return tuple(int(v) for v in start), tuple(int(v) for v in stop)


def labels_to_grid(labels: np.ndarray, src: Grid, dst: Grid, *, method: str = "linear"
                   ) -> np.ndarray:
    """Map a label map from one grid to another.

    Parameters
    ----------
    labels : ndarray of int, shape ``src.shape``
        Indexed ``[k, j, i]``; 0 = background. Voxels of ``dst`` outside
        ``src`` become 0.
    src, dst : Grid
    method : {'linear', 'nearest'}
        ``nearest``: nearest-neighbour lookup. ``linear``: each label's
        indicator is interpolated trilinearly and every ``dst`` voxel gets
        the label with the largest value, if that beats the background
        (``1 - sum``); smoother than nearest when ``dst`` is finer. Work is
        done per label inside its bounding box, so memory stays that of
        one volume.

    Returns
    -------
    ndarray, shape ``dst.shape``, dtype of ``labels``
    """
    labels = np.asarray(labels)
    if labels.shape != src.shape:
        raise InputError(f"labels have shape {labels.shape} but their grid is {src.shape}")
    if method == "nearest":
        return resample_to_grid(labels, src, dst, order=0, cval=0)
    if method != "linear":
        raise InputError(f"method must be 'linear' or 'nearest', got {method!r}")
    out = np.zeros(dst.shape, dtype=labels.dtype)
    best = np.zeros(dst.shape, dtype=np.float32)
    total = np.zeros(dst.shape, dtype=np.float32)
    for lab in np.unique(labels):
        if lab == 0:
            continue
        ind = labels == lab
        box = _sub_box(ind, src, dst)
        if box is None:
            continue
        start, stop = box
        sub = dst.crop(start, stop)
        sl = tuple(slice(a, b) for a, b in zip(start, stop))
        f = resample_to_grid(ind.astype(np.float32), src, sub, order=1, cval=0.0)
        total[sl] += f
        better = f > best[sl]
        best[sl] = np.where(better, f, best[sl])
        out[sl] = np.where(better, lab, out[sl])
    out[best <= 1.0 - total] = 0
    return out


def _paste(part: np.ndarray, prepared: Prepared, fill) -> np.ndarray:
    """Place an array on the crop grid into a full original-grid array filled with ``fill``."""
    lead = part.shape[:-3]
    out = np.empty(lead + prepared.original_grid.shape, dtype=part.dtype)
    out[...] = np.asarray(fill, dtype=part.dtype).reshape(lead + (1, 1, 1)) if lead else fill
    sl = tuple(slice(a, b) for a, b in zip(prepared.crop_start, prepared.crop_stop))
    out[(Ellipsis,) + sl] = part
    return out


def restore_labels(labels: np.ndarray, prepared: Prepared, *, method: str = "linear"
                   ) -> np.ndarray:
    """Map a label map predicted on the network grid back onto the original CT grid.

    Parameters
    ----------
    labels : ndarray of int, shape ``prepared.grid.shape``
        Indexed ``[k, j, i]``; 0 = background.
    prepared : Prepared
    method : {'linear', 'nearest'}
        See :func:`labels_to_grid`.

    Returns
    -------
    ndarray, shape ``prepared.original_grid.shape``
        Same dtype as ``labels``; background (0) outside the body crop.
    """
    labels = np.asarray(labels)
    if labels.shape != prepared.grid.shape:
        raise InputError(f"labels have shape {labels.shape} but the network grid is "
                         f"{prepared.grid.shape}")
    part = labels_to_grid(labels, prepared.grid, prepared.crop_grid, method=method)
    return _paste(part, prepared, 0)


def restore_probabilities(probs: np.ndarray, prepared: Prepared, *, as_labels: bool = False
                          ) -> np.ndarray:
    """Map class probabilities from the network grid back onto the original CT grid.

    Parameters
    ----------
    probs : ndarray of float, shape ``(n_classes,) + prepared.grid.shape``
        Indexed ``[c, k, j, i]``; channel 0 is background.
    prepared : Prepared
    as_labels : bool
        Return the arg-max label map (computed channel by channel, so only
        a few volumes are held in memory) instead of the probabilities.

    Returns
    -------
    ndarray
        ``float32 [c, k, j, i]`` probabilities (trilinear; background 1 and
        the others 0 outside the body crop), or ``int16 [k, j, i]`` labels.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[1:] != prepared.grid.shape:
        raise InputError(f"probabilities must be [c, k, j, i] with spatial shape "
                         f"{prepared.grid.shape}, got {probs.shape}")
    src, dst = prepared.grid, prepared.crop_grid
    n = probs.shape[0]
    if not as_labels:
        part = np.stack([resample_to_grid(probs[c], src, dst, order=1, dtype=np.float32)
                         for c in range(n)])
        fill = np.zeros(n, dtype=np.float32)
        fill[0] = 1.0
        return _paste(part, prepared, fill)
    best = resample_to_grid(probs[0], src, dst, order=1, dtype=np.float32)
    part = np.zeros(dst.shape, dtype=np.int16)
    for c in range(1, n):
        p = resample_to_grid(probs[c], src, dst, order=1, dtype=np.float32)
        better = p > best
        best = np.where(better, p, best)
        part[better] = c
    return _paste(part, prepared, 0)
