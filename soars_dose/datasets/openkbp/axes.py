"""OpenKBP array axes onto soars-dose grids, and masks as exact voxel-face contours.

Axes and coordinates
--------------------
OpenKBP arrays are indexed ``[i, j, k]`` with (read off the anatomy and
checked on all 202 patients of ``shared/data/openkbp``):

* ``i`` running anterior -> posterior (DICOM +y),
* ``j`` running patient right -> left (DICOM +x),
* ``k`` running superior -> inferior (DICOM -z),

and voxel size ``voxel_dimensions_mm[0], [1], [2]`` along ``i, j, k``.
soars-dose arrays are indexed ``[k, j, i]`` = ``[slice, row, column]``;
:func:`to_lps_axes` maps an OpenKBP array onto them as

    ``ours[s, r, c] = openkbp[r, c, n_k - 1 - s]``

so slices run inferior -> superior (+z), rows anterior -> posterior (+y) and
columns right -> left (+x): a head-first-supine (HFS) grid with the
identity direction of :class:`~soars_dose.grid.Grid`. OpenKBP stores no
patient position, so :func:`openkbp_grid` places the grid by convention:
the volume is centred on ``x = y = 0`` in-plane and the most inferior slice
(OpenKBP ``k = n_k - 1``) lies at ``z = 0``; all slices are at ``z >= 0``.

Units: CT in HU (int16), dose in Gy (float32), lengths in mm, volumes in cc.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...dicom.write import masks_to_contours
from ...errors import InputError
from ...grid import Grid

__all__ = [
    "OPENKBP_SHAPE",
    "check_voxel_dimensions",
    "from_lps_axes",
    "openkbp_grid",
    "to_lps_axes",
    "voxel_edge_contours",
]

#: Array shape of every OpenKBP volume, ``(n_i, n_j, n_k)`` in OpenKBP order.
OPENKBP_SHAPE: tuple[int, int, int] = (128, 128, 128)


def check_voxel_dimensions(values, where: str) -> tuple[float, float, float]:
    """Three positive finite voxel sizes (mm, OpenKBP ``i, j, k``), else InputError naming ``where``."""
    try:
        vd = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: voxel dimensions are not numbers ({e})") from None
    if vd.size != 3 or not np.all(np.isfinite(vd)) or np.any(vd <= 0):
        raise InputError(
            f"{where}: voxel dimensions must be three positive sizes in mm (along OpenKBP "
            f"i, j, k), got {vd.tolist()}"
        )
    return float(vd[0]), float(vd[1]), float(vd[2])


def to_lps_axes(a: np.ndarray) -> np.ndarray:
    """Reorder an OpenKBP array onto soars-dose axes.

    Parameters
    ----------
    a : ndarray, shape (n_i, n_j, n_k)
        Indexed OpenKBP ``[i (anterior->posterior), j (right->left),
        k (superior->inferior)]``.

    Returns
    -------
    ndarray, shape (n_k, n_i, n_j)
        Contiguous copy indexed ``[slice (inferior->superior, +z),
        row (+y), column (+x)]``: ``out[s, r, c] = a[r, c, n_k - 1 - s]``.
    """
    a = np.asarray(a)
    if a.ndim != 3:
        raise InputError(f"an OpenKBP volume has 3 axes, got shape {a.shape}")
    return np.ascontiguousarray(np.transpose(a, (2, 0, 1))[::-1])


def from_lps_axes(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_lps_axes`: soars-dose ``[k, j, i]`` back to OpenKBP ``[i, j, k]``.

    Parameters
    ----------
    a : ndarray, shape (n_k, n_i, n_j)
        Indexed ``[slice (+z), row (+y), column (+x)]`` on an
        :func:`openkbp_grid`.

    Returns
    -------
    ndarray, shape (n_i, n_j, n_k)
        Contiguous copy in OpenKBP order (e.g. to write a prediction back in
        OpenKBP's own format).
    """
    a = np.asarray(a)
    if a.ndim != 3:
        raise InputError(f"a volume has 3 axes, got shape {a.shape}")
    return np.ascontiguousarray(np.transpose(a[::-1], (1, 2, 0)))


def openkbp_grid(voxel_dimensions_mm: Sequence[float],
                 shape: Sequence[int] = OPENKBP_SHAPE) -> Grid:
    """The soars-dose grid of an OpenKBP volume.

    Parameters
    ----------
    voxel_dimensions_mm : sequence of 3 float
        OpenKBP ``voxel_dimensions`` (mm) along OpenKBP axes ``i`` (A->P),
        ``j`` (R->L), ``k`` (S->I).
    shape : sequence of 3 int
        OpenKBP array shape ``(n_i, n_j, n_k)``.

    Returns
    -------
    Grid
        Shape ``(n_k, n_i, n_j)``, spacing ``(vd[2], vd[0], vd[1])`` mm,
        identity direction (slices +z, rows +y, columns +x; HFS). By
        convention the in-plane centre of the volume is at ``x = y = 0`` and
        the centre of slice 0 (the most inferior, OpenKBP ``k = n_k - 1``)
        at ``z = 0``.
    """
    vd = check_voxel_dimensions(voxel_dimensions_mm, "voxel_dimensions_mm")
    ni, nj, nk = (int(n) for n in shape)
    return Grid(
        shape=(nk, ni, nj),
        spacing=(vd[2], vd[0], vd[1]),
        origin=(-0.5 * (nj - 1) * vd[1], -0.5 * (ni - 1) * vd[0], 0.0),
    )


def _snap_to_corners(index: np.ndarray) -> np.ndarray | None:
    """Move corner-cut vertices (continuous ``[k, j, i]``) onto the voxel corner they cut.

    Every vertex of a contour traced on an upsampled mask lies on a voxel
    face (one in-plane coordinate a half-integer) within ``0.5 / up`` voxel
    of a corner; rounding both in-plane coordinates to half-integers puts
    it on that corner, the two ends of a cut meet there and collapse into
    one vertex. Returns None when fewer than three vertices remain.
    """
    out = np.empty_like(index)
    out[:, 0] = np.round(index[:, 0])
    out[:, 1:] = np.round(index[:, 1:] - 0.5) + 0.5
    keep = np.any(out[:, 1:] != np.roll(out[:, 1:], 1, axis=0), axis=1)
    out = out[keep]
    if len(out) >= 3:  # drop vertices on straight runs (axis-parallel in index space)
        prev, nxt = np.roll(out, 1, axis=0), np.roll(out, -1, axis=0)
        straight = ((prev[:, 1] == out[:, 1]) & (out[:, 1] == nxt[:, 1])) | (
            (prev[:, 2] == out[:, 2]) & (out[:, 2] == nxt[:, 2]))
        out = out[~straight]
    return out if len(out) >= 3 else None


def voxel_edge_contours(mask: np.ndarray, grid: Grid, up: int = 4, *,
                        snap: bool = True) -> list[np.ndarray]:
    """Planar contours that follow a voxel mask's faces.

    Marching squares on the in-plane ``up``-fold nearest-neighbour upsampled
    mask puts every straight edge exactly on a voxel face and cuts each
    corner by a triangle of ``1 / (8 up^2)`` voxel (3 % of an isolated
    voxel at ``up = 4``). With ``snap`` (default) the two ends of every cut
    are moved onto the voxel corner, so each polygon is the exact boundary
    of the mask's voxels on that slice: the contoured area equals the voxel
    count x pixel area. Voxels that touch only at a corner give a polygon
    that touches itself at that corner (or two polygons sharing the point).

    Parameters
    ----------
    mask : ndarray of bool, shape ``grid.shape``
        Indexed ``[k, j, i]`` = ``[slice, row, column]``.
    grid : Grid
        Geometry of ``mask`` (LPS mm, axis-aligned).
    up : int
        In-plane upsampling factor (>= 2 with ``snap``, else >= 1).
    snap : bool
        Put the vertices on the voxel corners (exact voxel boundary).

    Returns
    -------
    list of ndarray
        ``(n, 3)`` LPS points (mm) of closed planar polygons, one or more
        per occupied slice, on the slice centre planes; holes are separate
        polygons (even-odd rule).
    """
    mask = np.asarray(mask)
    if mask.shape != grid.shape:
        raise InputError(f"mask has shape {mask.shape} but the grid is {grid.shape}")
    if int(up) < (2 if snap else 1):
        raise InputError(f"up must be an integer >= {2 if snap else 1}, got {up!r}")
    up = int(up)
    fine = np.repeat(np.repeat(mask.astype(bool, copy=False), up, axis=1), up, axis=2)
    sp = grid.spacing
    shift = (0.5 - 0.5 / up) * (sp[1] * grid.direction[1] + sp[2] * grid.direction[2])
    fine_grid = Grid(fine.shape, (sp[0], sp[1] / up, sp[2] / up),
                     tuple(np.asarray(grid.origin) - shift), grid.direction)
    contours = masks_to_contours(fine, fine_grid)
    if not snap:
        return contours
    snapped = []
    for c in contours:
        index = _snap_to_corners(grid.world_to_index(c))
        if index is not None:
            snapped.append(grid.index_to_world(index))
    return snapped
