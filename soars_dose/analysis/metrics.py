"""Contour-accuracy metrics on binary masks with anisotropic voxel spacing.

Every function that takes arrays takes 3-D masks indexed ``[k, j, i]`` =
``[slice, row, column]`` (``[z, y, x]``) and a ``spacing_mm`` of three
positive numbers *in the same axis order* (slice thickness first). A mask
is any bool, integer or float array; non-zero means inside. Distances are in
mm, areas in mm^2, volumes in cm^3 (cc).

Surfaces (shared by HD, HD95, ASD and surface Dice)
---------------------------------------------------
The surface of a mask is the DeepMind ``surface-distance`` surface (Nikolov
et al. 2018, arXiv:1809.04430, and their ``compute_surface_distances``):

* the points of the surface are the *corners* of the voxel grid (the centres
  of 2x2x2 voxel neighbourhoods). Each corner gets an 8-bit code from its
  eight neighbouring voxels: the voxel at offset ``(a, b, c)`` (0 = lower,
  1 = upper index along k, j, i) sets bit ``7 - (4a + 2b + c)``;
* a corner whose code is neither 0 (all outside) nor 255 (all inside) is a
  *surface element* (surfel);
* its area (mm^2) is the area of the marching-cubes triangles of that 2x2x2
  cell, scaled by the true anisotropic spacing. The triangles are those of
  the classic Lorensen & Cline (1987) table, with the complementary symmetry
  of the original algorithm: a cell with more than four inside corners takes
  the triangles of its complement. A triangle with area vector
  ``n = (n_k, n_j, n_i)`` in index units has area
  ``|(n_k s_j s_i, n_j s_k s_i, n_i s_k s_j)|`` mm^2. We build this table from
  scikit-image's Lorensen marching cubes run on each of the 254 one-cell
  configurations (:func:`surfel_area_table`); it equals DeepMind's table
  (tested for several spacings);
* the distance of a surfel to the other mask's surface is the Euclidean
  distance (mm, true spacing) from its corner to the nearest surfel corner of
  the other mask (an exact Euclidean distance transform,
  :func:`scipy.ndimage.distance_transform_edt` with ``sampling=spacing_mm``).

Implementation: both masks are cropped to the bounding box of their union
plus a 1-voxel zero margin before anything else (the margin makes every
surfel, also of a mask touching the array edge, fall inside the crop and
treats everything outside the array as background); the neighbourhood code
is built with three vectorised shift-and-or passes; the distance transform
runs once per mask on the cropped corner grid and its feature transform is
read only at the other mask's surfels (skipped when every surfel of the other
mask is also a surfel of this one: all those distances are 0).

Empty masks
-----------
:func:`contour_metrics` states the policy used in tables
(``missing_in_set`` / ``no_reference`` / ``ok``). The single-metric
functions follow the DeepMind conventions: distances from a surface to an
empty mask are ``inf``; a mean over no surfels is ``nan``; a metric of two
empty masks is ``nan``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from soars_dose.config_files import load_yaml, packaged_text, user_text
from soars_dose.errors import InputError

__all__ = [
    "SurfaceDistances",
    "surface_distances",
    "surfel_area_table",
    "dice",
    "hausdorff",
    "hd95",
    "average_surface_distance",
    "directed_average_surface_distances",
    "surface_dice",
    "added_path_length",
    "volume_cc",
    "contour_metrics",
    "ToleranceTable",
    "load_tolerances",
    "tolerance_for",
    "METRIC_KEYS",
]

#: Keys of the dictionary returned by :func:`contour_metrics`, in order.
METRIC_KEYS = (
    "dice", "surface_dice", "tolerance_mm", "hd_mm", "hd95_mm", "asd_mm",
    "asd_ref_to_sub_mm", "asd_sub_to_ref_mm", "apl_mm", "volume_ref_cc",
    "volume_sub_cc", "volume_diff_cc", "volume_diff_pct", "status",
)

_NAN = float("nan")
_INF = float("inf")


# --------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------

def _check_mask(name: str, mask) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3-D array indexed [slice, row, column]; "
                         f"got {arr.ndim}-D with shape {arr.shape}.")
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)
            or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be a bool, integer or float array "
                         f"(non-zero = inside); got dtype {arr.dtype}.")
    return arr


def _check_pair(mask_ref, mask_sub) -> tuple[np.ndarray, np.ndarray]:
    ref = _check_mask("mask_ref", mask_ref)
    sub = _check_mask("mask_sub", mask_sub)
    if ref.shape != sub.shape:
        raise ValueError(f"mask_ref and mask_sub must have the same shape; got "
                         f"mask_ref {ref.shape} and mask_sub {sub.shape}. Resample both "
                         "onto one grid first.")
    return ref, sub


def _check_spacing(spacing_mm) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_mm must be three numbers (mm) in [slice, row, column] "
                         f"order; got {spacing_mm!r}.") from None
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing_mm must be three positive finite numbers (mm) in "
                         f"[slice, row, column] order; got {spacing_mm!r}.")
    return sp


def _check_tolerance(tolerance_mm, name: str = "tolerance_mm") -> float:
    try:
        tol = float(tolerance_mm)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (mm); got {tolerance_mm!r}.") from None
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{name} must be finite and >= 0 mm; got {tolerance_mm!r}.")
    return tol


# --------------------------------------------------------------------------
# bounding box and crop
# --------------------------------------------------------------------------

def _bbox_c(a: np.ndarray) -> np.ndarray | None:
    """Inclusive bounding box ``[[lo, hi]] * 3`` of a C-contiguous 1-byte mask."""
    if a.size == 0:
        return None
    rows = a.reshape(a.shape[0], -1).view(np.uint8)
    wide = rows.shape[1] % 8 == 0                # OR 8 bytes at a time
    if wide:
        rows = rows.view(np.uint64)
    ks = np.flatnonzero(rows.max(axis=1))
    if ks.size == 0:
        return None
    k0, k1 = int(ks[0]), int(ks[-1])
    if wide:                                     # (rows, columns): OR over the slab
        proj = np.bitwise_or.reduce(rows[k0:k1 + 1], axis=0).view(np.uint8)
        proj = proj.reshape(a.shape[1:]) != 0
    else:
        proj = a[k0:k1 + 1].any(axis=0)
    js = np.flatnonzero(proj.any(axis=1))
    is_ = np.flatnonzero(proj.any(axis=0))
    return np.array([[k0, k1], [js[0], js[-1]], [is_[0], is_[-1]]], dtype=np.int64)


def _bounding_box(mask: np.ndarray) -> np.ndarray | None:
    """Inclusive bounding box of the non-zero voxels, or None when empty.

    One pass over the whole array (a per-slice ``any``), then one over the
    slab of occupied slices.
    """
    a = mask
    if a.dtype.itemsize != 1:
        a = a != 0
    if a.flags.c_contiguous:
        return _bbox_c(a)
    if a.flags.f_contiguous:                     # e.g. an (x, y, z) NRRD array, transposed
        bb = _bbox_c(a.T)
        return None if bb is None else bb[::-1].copy()
    return _bbox_c(np.ascontiguousarray(a))


def _padded_crop(mask: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """``mask[bbox]`` as bool, with a 1-voxel False margin on every side."""
    lo, hi = bbox[:, 0], bbox[:, 1]
    out = np.zeros(tuple(hi - lo + 3), dtype=bool)
    src = mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    if src.dtype == bool:
        out[1:-1, 1:-1, 1:-1] = src
    else:
        np.not_equal(src, 0, out=out[1:-1, 1:-1, 1:-1])
    return out


@dataclass
class _CropPair:
    """Both masks cropped to their union bounding box + 1-voxel margin."""

    ref: np.ndarray | None     # padded bool crops; None when both masks are empty
    sub: np.ndarray | None
    ref_empty: bool
    sub_empty: bool


def _crop_pair(ref: np.ndarray, sub: np.ndarray) -> _CropPair:
    bb_ref = _bounding_box(ref)
    bb_sub = _bounding_box(sub)
    if bb_ref is None and bb_sub is None:
        return _CropPair(None, None, True, True)
    boxes = [b for b in (bb_ref, bb_sub) if b is not None]
    bb = np.stack([np.minimum.reduce([b[:, 0] for b in boxes]),
                   np.maximum.reduce([b[:, 1] for b in boxes])], axis=1)
    return _CropPair(_padded_crop(ref, bb), _padded_crop(sub, bb),
                     bb_ref is None, bb_sub is None)


# --------------------------------------------------------------------------
# surfel areas
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _unit_triangle_normals() -> np.ndarray:
    """Area vectors (index units) of the marching-cubes triangles of every code.

    Returns an array ``(256, T, 3)``, zero-padded over triangles. Code bit
    ``7 - (4a + 2b + c)`` is the voxel at offset ``(a, b, c)`` of the 2x2x2
    cell. The triangles come from scikit-image's Lorensen marching cubes on
    the one-cell volume; configurations with more than four inside corners
    use the triangles of their complement (the complementary symmetry of the
    original Lorensen & Cline table, which DeepMind's table follows).
    """
    from skimage import measure  # local: only needed once per process

    per_code: list[np.ndarray] = [np.zeros((0, 3))] * 256
    for code in range(1, 255):
        cfg = code if bin(code).count("1") <= 4 else 255 - code
        cell = np.array([(cfg >> (7 - n)) & 1 for n in range(8)], dtype=np.float64)
        verts, faces, _, _ = measure.marching_cubes(
            cell.reshape(2, 2, 2), level=0.5, method="lorensen")
        tri = verts[faces]                                   # (T, 3 vertices, 3)
        per_code[code] = 0.5 * np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    t_max = max(len(n) for n in per_code)
    out = np.zeros((256, t_max, 3))
    for code, normals in enumerate(per_code):
        out[code, :len(normals)] = normals
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=64)
def _surfel_area_table_cached(spacing: tuple[float, float, float]) -> np.ndarray:
    s0, s1, s2 = spacing
    n = _unit_triangle_normals()
    scaled = np.stack([n[..., 0] * s1 * s2, n[..., 1] * s0 * s2, n[..., 2] * s0 * s1],
                      axis=-1)
    table = np.sqrt((scaled * scaled).sum(axis=-1)).sum(axis=-1)
    table.setflags(write=False)
    return table


def surfel_area_table(spacing_mm) -> np.ndarray:
    """Surface area (mm^2) of each of the 256 2x2x2 neighbourhood codes.

    Parameters
    ----------
    spacing_mm : sequence of 3 float
        Voxel spacing in [slice, row, column] order (mm).

    Returns
    -------
    ndarray, shape (256,)
        ``table[code]``: the summed area of the marching-cubes triangles of
        that cell in mm^2 (0 for codes 0 and 255). See the module
        documentation for the code and the triangles. Read-only.
    """
    return _surfel_area_table_cached(_check_spacing(spacing_mm))


# --------------------------------------------------------------------------
# surface distances
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class SurfaceDistances:
    """Surfel distances and areas of two masks (see :func:`surface_distances`).

    Attributes
    ----------
    distances_ref_to_sub : ndarray of float
        For every reference surfel, the distance (mm) from its corner to the
        nearest substitute surfel corner; ``inf`` when the substitute is
        empty. Sorted ascending (ties by area), as DeepMind sorts them.
    areas_ref : ndarray of float
        Area (mm^2) of each reference surfel, in the same order.
    distances_sub_to_ref : ndarray of float
        The same from every substitute surfel to the reference surface.
    areas_sub : ndarray of float
        Area (mm^2) of each substitute surfel, in the same order.
    """

    distances_ref_to_sub: np.ndarray
    areas_ref: np.ndarray
    distances_sub_to_ref: np.ndarray
    areas_sub: np.ndarray


def _neighbour_codes(padded: np.ndarray) -> np.ndarray:
    """8-bit 2x2x2 neighbourhood code at every corner of a padded bool mask.

    Corner ``q`` lies between voxels ``q`` and ``q + 1`` of ``padded`` along
    every axis; the voxel at offset ``(a, b, c)`` sets bit ``7 - (4a+2b+c)``.
    Built axis by axis: 1 bit along i, then 2 along j, then 4 along k.
    """
    u = padded.view(np.uint8)
    t = (u[:, :, :-1] << 1) | u[:, :, 1:]
    t = (t[:, :-1, :] << 2) | t[:, 1:, :]
    return (t[:-1] << 4) | t[1:]


def _surfels(codes: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Border mask, flat indices and areas of the surfels of a code map."""
    border = (codes - np.uint8(1)) < 254           # 1 <= code <= 254 (0 wraps to 255)
    flat = np.flatnonzero(border)
    areas = table[codes.ravel()[flat]]
    return border, flat, areas


def _distances_to(border_other: np.ndarray, query_flat: np.ndarray,
                  spacing: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) from corners ``query_flat`` to the nearest True of ``border_other``.

    The feature transform of :func:`scipy.ndimage.distance_transform_edt`
    (exact Euclidean, ``sampling=spacing``) read only at the query corners;
    the distance is evaluated with the same arithmetic as scipy's own.
    """
    if query_flat.size == 0:
        return np.zeros(0)
    if border_other.ravel()[query_flat].all():   # every query is a surfel of the other
        return np.zeros(query_flat.size)        # mask (identical surfaces): no transform
    ft = ndimage.distance_transform_edt(~border_other, sampling=spacing,
                                        return_distances=False, return_indices=True)
    nearest = ft.reshape(3, -1)[:, query_flat]
    coords = np.unravel_index(query_flat, border_other.shape)
    total = None
    for ax in range(3):
        d = (nearest[ax] - coords[ax].astype(np.int32)).astype(np.float64)
        d *= spacing[ax]
        d *= d
        total = d if total is None else np.add(total, d, out=total)
    return np.sqrt(total, out=total)


def _sorted(distances: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((areas, distances))
    return distances[order], areas[order]


def _surface_distances_crops(crops: _CropPair, spacing: tuple[float, float, float]
                             ) -> SurfaceDistances:
    empty = np.zeros(0)
    if crops.ref is None:
        return SurfaceDistances(empty, empty, empty.copy(), empty.copy())
    table = _surfel_area_table_cached(spacing)
    border_r, flat_r, area_r = _surfels(_neighbour_codes(crops.ref), table)
    border_s, flat_s, area_s = _surfels(_neighbour_codes(crops.sub), table)
    if crops.sub_empty:
        d_rs = np.full(flat_r.size, np.inf)
    else:
        d_rs = _distances_to(border_s, flat_r, spacing)
    if crops.ref_empty:
        d_sr = np.full(flat_s.size, np.inf)
    else:
        d_sr = _distances_to(border_r, flat_s, spacing)
    d_rs, area_r = _sorted(d_rs, area_r)
    d_sr, area_s = _sorted(d_sr, area_s)
    return SurfaceDistances(d_rs, area_r, d_sr, area_s)


def surface_distances(mask_ref, mask_sub, spacing_mm) -> SurfaceDistances:
    """Distances between the surfaces of two masks, surfel by surfel.

    Definition: the DeepMind ``compute_surface_distances`` (module
    documentation): surfels are the corners of the voxel grid whose 2x2x2
    neighbourhood is neither all inside nor all outside; each carries its
    marching-cubes area (mm^2) at the true spacing and its Euclidean
    distance (mm) to the nearest surfel corner of the other mask.

    Parameters
    ----------
    mask_ref, mask_sub : ndarray, 3-D
        Reference and substitute masks indexed [slice, row, column];
        non-zero = inside. Same shape.
    spacing_mm : sequence of 3 float
        Voxel spacing in [slice, row, column] order (mm).

    Returns
    -------
    SurfaceDistances
        Both directions, sorted by distance. When one mask is empty its
        arrays are empty and the other's distances are ``inf``; when both
        are empty every array is empty.

    Raises
    ------
    ValueError
        Masks of different shapes or not 3-D; a bad spacing.
    """
    ref, sub = _check_pair(mask_ref, mask_sub)
    spacing = _check_spacing(spacing_mm)
    return _surface_distances_crops(_crop_pair(ref, sub), spacing)


# --------------------------------------------------------------------------
# metrics on SurfaceDistances
# --------------------------------------------------------------------------

def hausdorff(sd: SurfaceDistances) -> float:
    """Hausdorff distance (mm): the largest surfel distance in either direction.

    ``HD = max(max_r d(r, S), max_s d(s, R))`` over the surfels ``r`` of the
    reference and ``s`` of the substitute (see :func:`surface_distances`).

    Returns
    -------
    float
        mm; ``inf`` when exactly one mask is empty; ``nan`` when both are.
    """
    parts = [d.max() for d in (sd.distances_ref_to_sub, sd.distances_sub_to_ref) if d.size]
    return float(max(parts)) if parts else _NAN


def _directed_percentile(d: np.ndarray, a: np.ndarray, percent: float) -> float:
    if d.size == 0:
        return _INF
    cum = np.cumsum(a) / np.sum(a)
    idx = int(np.searchsorted(cum, percent / 100.0))
    return float(d[min(idx, d.size - 1)])


def hd95(sd: SurfaceDistances, percent: float = 95) -> float:
    """Robust (percentile) Hausdorff distance (mm), area-weighted.

    The DeepMind ``compute_robust_hausdorff``: in each direction, with the
    surfels sorted by distance ``d_1 <= d_2 <= ...`` and areas ``a_i``, the
    directed value is ``d_m`` for the first ``m`` with
    ``sum_{i<=m} a_i / sum_i a_i >= percent / 100`` (the last surfel if
    rounding leaves none); HD95 is the larger of the two directed values.

    Parameters
    ----------
    sd : SurfaceDistances
    percent : float, default 95
        Percentile in [0, 100].

    Returns
    -------
    float
        mm; ``inf`` when exactly one mask is empty; ``nan`` when both are.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must lie in [0, 100]; got {percent!r}.")
    if sd.distances_ref_to_sub.size == 0 and sd.distances_sub_to_ref.size == 0:
        return _NAN
    return max(_directed_percentile(sd.distances_ref_to_sub, sd.areas_ref, percent),
               _directed_percentile(sd.distances_sub_to_ref, sd.areas_sub, percent))


def _weighted_mean(d: np.ndarray, a: np.ndarray) -> float:
    if d.size == 0:
        return _NAN
    return float(np.sum(d * a) / np.sum(a))


def directed_average_surface_distances(sd: SurfaceDistances) -> tuple[float, float]:
    """Area-weighted mean surfel distance in each direction (mm).

    ``ASD(R->S) = sum_r d(r, S) a_r / sum_r a_r`` and
    ``ASD(S->R) = sum_s d(s, R) a_s / sum_s a_s``: the tuple DeepMind's
    ``compute_average_surface_distance`` returns.

    Returns
    -------
    (float, float)
        (reference -> substitute, substitute -> reference) in mm. A
        direction without surfels (its mask empty) is ``nan``; distances to
        an empty mask are ``inf``.
    """
    return (_weighted_mean(sd.distances_ref_to_sub, sd.areas_ref),
            _weighted_mean(sd.distances_sub_to_ref, sd.areas_sub))


def average_surface_distance(sd: SurfaceDistances) -> float:
    """Symmetric average surface distance (mm), area-weighted.

    The mean of all surface-to-surface distances from both sides::

        ASD = (sum_r d(r, S) a_r + sum_s d(s, R) a_s) / (sum_r a_r + sum_s a_s)

    (DeepMind's ``compute_average_surface_distance`` returns the two directed
    means instead: :func:`directed_average_surface_distances`).

    Returns
    -------
    float
        mm; ``inf`` when exactly one mask is empty; ``nan`` when both are.
    """
    n = sd.distances_ref_to_sub.size + sd.distances_sub_to_ref.size
    if n == 0:
        return _NAN
    num = np.sum(sd.distances_ref_to_sub * sd.areas_ref) + np.sum(
        sd.distances_sub_to_ref * sd.areas_sub)
    return float(num / (np.sum(sd.areas_ref) + np.sum(sd.areas_sub)))


def surface_dice(sd: SurfaceDistances, tolerance_mm: float) -> float:
    """Surface Dice at a tolerance (Nikolov et al. 2018), area-weighted.

    The DeepMind ``compute_surface_dice_at_tolerance``: the fraction of both
    surfaces (by area) lying within ``tolerance_mm`` of the other::

        SDSC = (sum_{r: d(r,S) <= tau} a_r + sum_{s: d(s,R) <= tau} a_s)
               / (sum_r a_r + sum_s a_s)

    Parameters
    ----------
    sd : SurfaceDistances
    tolerance_mm : float
        Tolerance tau in mm (>= 0); a surfel at exactly tau counts.

    Returns
    -------
    float
        In [0, 1]; 0 when exactly one mask is empty; ``nan`` when both are.
    """
    tol = _check_tolerance(tolerance_mm)
    if sd.distances_ref_to_sub.size + sd.distances_sub_to_ref.size == 0:
        return _NAN
    overlap = (np.sum(sd.areas_ref[sd.distances_ref_to_sub <= tol])
               + np.sum(sd.areas_sub[sd.distances_sub_to_ref <= tol]))
    return float(overlap / (np.sum(sd.areas_ref) + np.sum(sd.areas_sub)))


# --------------------------------------------------------------------------
# volume metrics
# --------------------------------------------------------------------------

def _dice_from_counts(n_ref: int, n_sub: int, n_both: int) -> float:
    if n_ref + n_sub == 0:
        return _NAN
    return 2.0 * n_both / (n_ref + n_sub)


def dice(mask_ref, mask_sub) -> float:
    """Volumetric Dice similarity coefficient.

    ``DSC = 2 |R & S| / (|R| + |S|)`` with ``|.|`` the number of voxels
    (spacing cancels).

    Parameters
    ----------
    mask_ref, mask_sub : ndarray, 3-D
        Same shape, indexed [slice, row, column]; non-zero = inside.

    Returns
    -------
    float
        In [0, 1]; ``nan`` when both masks are empty.
    """
    ref, sub = _check_pair(mask_ref, mask_sub)
    crops = _crop_pair(ref, sub)
    if crops.ref is None:
        return _NAN
    n_ref = int(np.count_nonzero(crops.ref))
    n_sub = int(np.count_nonzero(crops.sub))
    n_both = int(np.count_nonzero(crops.ref & crops.sub))
    return _dice_from_counts(n_ref, n_sub, n_both)


def volume_cc(mask, spacing_mm) -> float:
    """Volume of a mask in cm^3: the number of voxels x voxel volume (mm^3) / 1000.

    Parameters
    ----------
    mask : ndarray, 3-D
        Indexed [slice, row, column]; non-zero = inside.
    spacing_mm : sequence of 3 float
        Voxel spacing in the same axis order (mm).
    """
    arr = _check_mask("mask", mask)
    sp = _check_spacing(spacing_mm)
    return int(np.count_nonzero(arr)) * (sp[0] * sp[1] * sp[2]) / 1000.0


# --------------------------------------------------------------------------
# added path length
# --------------------------------------------------------------------------

def _inner_boundary_2d(padded: np.ndarray) -> np.ndarray:
    """Per slice: inside pixels with at least one 4-neighbour outside.

    ``padded`` carries a False margin of one pixel along rows and columns,
    so pixels at the edge of the original array count as boundary.
    """
    p = padded
    interior = (p[:, 1:-1, 1:-1] & p[:, :-2, 1:-1] & p[:, 2:, 1:-1]
                & p[:, 1:-1, :-2] & p[:, 1:-1, 2:])
    boundary = p.copy()
    boundary[:, 1:-1, 1:-1] &= ~interior
    return boundary


def _inplane_disc(row_mm: float, col_mm: float, tolerance_mm: float) -> np.ndarray:
    """Footprint (1, 2r+1, 2c+1) of the pixel offsets within tolerance (mm)."""
    rj = int(math.floor(tolerance_mm / row_mm))
    ri = int(math.floor(tolerance_mm / col_mm))
    dj = np.arange(-rj, rj + 1)[:, None] * row_mm
    di = np.arange(-ri, ri + 1)[None, :] * col_mm
    return (np.sqrt(dj * dj + di * di) <= tolerance_mm)[None]


def _apl_crops(crops: _CropPair, spacing: tuple[float, float, float],
               tolerance_mm: float) -> float:
    if crops.ref is None or crops.ref_empty:
        return 0.0
    b_ref = _inner_boundary_2d(crops.ref)
    if crops.sub_empty:
        missing = int(np.count_nonzero(b_ref))
    else:
        b_sub = _inner_boundary_2d(crops.sub)
        if tolerance_mm > 0:
            b_sub = ndimage.binary_dilation(
                b_sub, structure=_inplane_disc(spacing[1], spacing[2], tolerance_mm))
        missing = int(np.count_nonzero(b_ref & ~b_sub))
    return missing * math.sqrt(spacing[1] * spacing[2])


def added_path_length(mask_ref, mask_sub, spacing_mm, tolerance_mm: float = 0.0) -> float:
    """Added path length (mm): reference contour a physician would redraw.

    After Vaassen et al. (2020), "Evaluation of measures for assessing
    time-saving of automatic organ-at-risk segmentation in radiotherapy",
    Phys. Imaging Radiat. Oncol. 13:1-6. Discretisation, slice by slice
    (axis 0), in pixels:

    * the contour of a slice is its *inner 4-connected boundary*: the inside
      pixels with at least one of their 4 in-plane neighbours (row +-1,
      column +-1) outside the mask or outside the array;
    * a reference contour pixel is *kept* when some substitute contour pixel
      of the same slice has its centre within ``tolerance_mm`` of its centre,
      ``sqrt((dj * s_row)^2 + (di * s_col)^2) <= tolerance_mm`` (with the
      default 0: the same pixel is on both contours);
    * ``APL = (number of reference contour pixels not kept) x pixel size``,
      where the pixel size is ``sqrt(s_row * s_col)`` (the pixel spacing for
      the square pixels of CT; the side of a square of the same area
      otherwise). Counting pixels follows Vaassen et al.; it measures a
      contour running diagonally through the pixel grid as one pixel size per
      pixel.

    Parameters
    ----------
    mask_ref, mask_sub : ndarray, 3-D
        Same shape, indexed [slice, row, column]; non-zero = inside.
    spacing_mm : sequence of 3 float
        Voxel spacing in the same order (mm); only rows and columns are used.
    tolerance_mm : float, default 0
        In-plane tolerance (mm).

    Returns
    -------
    float
        mm. An empty substitute gives the whole reference contour length; an
        empty reference gives 0.
    """
    ref, sub = _check_pair(mask_ref, mask_sub)
    spacing = _check_spacing(spacing_mm)
    tol = _check_tolerance(tolerance_mm)
    return _apl_crops(_crop_pair(ref, sub), spacing, tol)


# --------------------------------------------------------------------------
# all metrics of one (reference, substitute) pair
# --------------------------------------------------------------------------

def contour_metrics(mask_ref, mask_sub, spacing_mm, tolerance_mm: float, *,
                    apl_tolerance_mm: float = 0.0) -> dict:
    """Every contour-accuracy metric of a substitute mask against a reference.

    Both masks are cropped once to their union bounding box (+1 voxel) and
    every metric is computed on the crops.

    Parameters
    ----------
    mask_ref, mask_sub : ndarray, 3-D
        Reference and substitute masks of one OAR on one grid, indexed
        [slice, row, column]; non-zero = inside.
    spacing_mm : sequence of 3 float
        Voxel spacing in [slice, row, column] order (mm).
    tolerance_mm : float
        Surface-Dice tolerance (mm), e.g. ``tolerance_for(oar, load_tolerances())``.
    apl_tolerance_mm : float, default 0
        In-plane tolerance of the added path length (mm); 0 is the
        definition of Vaassen et al.

    Returns
    -------
    dict
        Keys (:data:`METRIC_KEYS`):

        ``dice``            volumetric Dice (:func:`dice`)
        ``surface_dice``    surface Dice at ``tolerance_mm`` (:func:`surface_dice`)
        ``tolerance_mm``    the tolerance used
        ``hd_mm``           Hausdorff distance, mm (:func:`hausdorff`)
        ``hd95_mm``         95th-percentile Hausdorff distance, mm (:func:`hd95`)
        ``asd_mm``          symmetric average surface distance, mm
                            (:func:`average_surface_distance`)
        ``asd_ref_to_sub_mm``, ``asd_sub_to_ref_mm``
                            directed average surface distances, mm
                            (:func:`directed_average_surface_distances`)
        ``apl_mm``          added path length, mm (:func:`added_path_length`)
        ``volume_ref_cc``, ``volume_sub_cc``
                            volumes, cm^3 (:func:`volume_cc`)
        ``volume_diff_cc``  ``volume_sub_cc - volume_ref_cc``
        ``volume_diff_pct`` ``100 x volume_diff_cc / volume_ref_cc``
        ``status``          see below

    Notes
    -----
    Empty-mask policy:

    * ``status = 'ok'``: both masks non-empty; every metric as defined.
    * ``status = 'missing_in_set'``: the substitute is empty (the OAR is
      missing from, or empty in, the substitute set) and the reference is
      not. ``dice = 0``, ``surface_dice = 0``, ``hd_mm = hd95_mm = asd_mm =
      asd_ref_to_sub_mm = inf`` (no substitute surface to reach),
      ``asd_sub_to_ref_mm = nan`` (a mean over no substitute surfels, as in
      DeepMind's code), ``apl_mm`` = the whole reference contour length,
      volumes as measured (``volume_sub_cc = 0``, ``volume_diff_pct = -100``).
    * ``status = 'no_reference'``: the reference is empty (whatever the
      substitute): nothing can be evaluated; ``dice``, ``surface_dice``,
      every distance, ``apl_mm``, ``volume_diff_cc`` and ``volume_diff_pct``
      are ``nan``. ``volume_ref_cc`` (0) and ``volume_sub_cc`` keep the
      measured volumes, as facts about each mask rather than comparisons.

    Raises
    ------
    ValueError
        Masks of different shapes (the message gives both) or not 3-D; a bad
        spacing or tolerance.
    """
    ref, sub = _check_pair(mask_ref, mask_sub)
    spacing = _check_spacing(spacing_mm)
    tol = _check_tolerance(tolerance_mm)
    apl_tol = _check_tolerance(apl_tolerance_mm, "apl_tolerance_mm")
    voxel_cc = spacing[0] * spacing[1] * spacing[2] / 1000.0

    crops = _crop_pair(ref, sub)
    n_ref = 0 if crops.ref_empty else int(np.count_nonzero(crops.ref))
    n_sub = 0 if crops.sub_empty else int(np.count_nonzero(crops.sub))
    out: dict = dict.fromkeys(METRIC_KEYS, _NAN)
    out["tolerance_mm"] = tol
    out["volume_ref_cc"] = n_ref * voxel_cc
    out["volume_sub_cc"] = n_sub * voxel_cc
    if crops.ref_empty:
        out["status"] = "no_reference"
        return out

    n_both = 0 if crops.sub_empty else int(np.count_nonzero(crops.ref & crops.sub))
    sd = _surface_distances_crops(crops, spacing)
    asd_rs, asd_sr = directed_average_surface_distances(sd)
    out.update(
        dice=_dice_from_counts(n_ref, n_sub, n_both),
        surface_dice=surface_dice(sd, tol),
        hd_mm=hausdorff(sd),
        hd95_mm=hd95(sd),
        asd_mm=average_surface_distance(sd),
        asd_ref_to_sub_mm=asd_rs,
        asd_sub_to_ref_mm=asd_sr,
        apl_mm=_apl_crops(crops, spacing, apl_tol),
        volume_diff_cc=(n_sub - n_ref) * voxel_cc,
        volume_diff_pct=100.0 * (n_sub - n_ref) / n_ref,
        status="missing_in_set" if crops.sub_empty else "ok",
    )
    return out


# --------------------------------------------------------------------------
# surface-Dice tolerances per OAR
# --------------------------------------------------------------------------

#: Reserved key of a tolerance file: the OARs whose entry is a placeholder.
_UNVERIFIED_KEY = "unverified"


class ToleranceTable(dict):
    """Surface-Dice tolerances (mm) per OAR name, as :func:`load_tolerances` returns them.

    A plain ``dict`` of ``OAR_name -> mm`` (with ``default``), plus
    ``unverified``: the OARs whose entry is a placeholder rather than a value
    read from the source cited in the packaged file (for them the packaged
    file keeps the default).
    """

    def __init__(self, values=(), unverified=frozenset()):
        super().__init__(values)
        self.unverified: frozenset[str] = frozenset(unverified)


def _parse_unverified(value, source: str) -> set[str]:
    if (not isinstance(value, list)
            or not all(isinstance(v, str) and v.strip() for v in value)):
        raise InputError(f"{source}: '{_UNVERIFIED_KEY}' must be a list of OAR names "
                         f"('{_UNVERIFIED_KEY}: [Lung_L, Lung_R]'); got {value!r}.")
    return {v.strip() for v in value}


def _parse_tolerances(text: str, source: str) -> tuple[dict[str, float], set[str]]:
    data = load_yaml(text, source, "Fix the syntax: one 'OAR_name: tolerance_mm' per line.")
    if data is None:
        return {}, set()
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: a surface-tolerance file must be a mapping of OAR names "
                         f"to tolerances in mm ('Parotid_L: 2.85'); found a "
                         f"{type(data).__name__}.")
    out: dict[str, float] = {}
    unverified: set[str] = set()
    for key, value in data.items():
        if not isinstance(key, str) or not key.strip():
            raise InputError(f"{source}: OAR name {key!r} is not a text; write OAR names "
                             "as text (quote names such as 'ON' or '1').")
        if key.strip() == _UNVERIFIED_KEY:
            unverified = _parse_unverified(value, source)
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            raise InputError(f"{source}: tolerance of {key!r} must be a number of mm >= 0; "
                             f"got {value!r}.")
        out[key.strip()] = float(value)
    return out, unverified


def _check_unverified_listed(table: Mapping[str, float], unverified: set[str],
                             source: str) -> None:
    missing = sorted(unverified - set(table))
    if missing:
        raise InputError(f"{source}: '{_UNVERIFIED_KEY}' names OARs without a tolerance "
                         f"entry: {', '.join(missing)}; give each a value.")


def load_tolerances(user_file: str | Path | None = None) -> ToleranceTable:
    """Surface-Dice tolerances (mm) per canonical OAR name.

    The packaged table ``soars_dose/data/surface_tolerances.yaml`` (see the
    sources in its comments), extended or overridden entry by entry by a
    user file of the same format: a YAML mapping ``OAR_name: tolerance_mm``
    with an optional ``default`` entry for OARs not listed, and an optional
    ``unverified`` list of OAR names whose entry is a placeholder.

    Parameters
    ----------
    user_file : str or Path, optional

    Returns
    -------
    ToleranceTable
        A dict of str to float; its ``unverified`` attribute holds the OARs
        whose tolerance is a placeholder (packaged ones the user file does
        not set, plus those the user file lists as unverified).

    Raises
    ------
    InputError
        The user file is missing, unreadable, not YAML, not a mapping, or has
        a tolerance that is not a number >= 0 or a malformed ``unverified``
        list; the message names the file.
    """
    text, source = packaged_text("surface_tolerances.yaml")
    table, unverified = _parse_tolerances(text, source)
    _check_unverified_listed(table, unverified, source)
    if user_file is not None:
        text, source = user_text(user_file, "surface-tolerance file")
        user, user_unverified = _parse_tolerances(text, source)
        table.update(user)
        _check_unverified_listed(table, user_unverified, source)
        unverified = (unverified - set(user)) | user_unverified
    return ToleranceTable(table, unverified)


def tolerance_for(oar: str, table: Mapping[str, float]) -> float:
    """Tolerance (mm) of an OAR: its entry, else its canonical name's, else ``default``.

    A name not in the table is mapped onto its canonical OAR name with the
    packaged alias table (so ``"Parotid Lt"`` finds ``Parotid_L``) before
    falling back to ``table['default']``.

    Raises
    ------
    InputError
        Neither the OAR nor a ``default`` entry is in the table.
    """
    if oar in table:
        return float(table[oar])
    from soars_dose.names import AliasTable  # local: names imports are heavier

    match = AliasTable.default().match(oar)
    if match.canonical is not None and match.canonical in table:
        return float(table[match.canonical])
    if "default" in table:
        return float(table["default"])
    raise InputError(f"no surface-Dice tolerance for OAR {oar!r} and no 'default' entry "
                     "in the tolerance table; add one of them.")
