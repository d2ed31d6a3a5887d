"""Cheap checks of a structure against a grid *before* it is rasterised.

Rasterising (:func:`soars_dose.rasterize.sample_structure`) works over
each contour plane's whole bounding box in sub-pixels, whether or not
that box lies on the grid. A contour at 1e9 mm, a structure spanning
kilometres, an absurd supersampling factor or a grid with absurdly fine
spacing would therefore allocate without bound. The functions here look
only at the contour points (O(points)) and answer two questions first:

* does the structure's bounding box meet the grid at all
  (:func:`outside_grid`)? If not it is ``outside_grid`` without any
  rasterisation;
* how many bytes would rasterising it need at most
  (:func:`estimate_sampling_bytes`)? Above a limit it is refused
  (:func:`check_sampling_size`, :class:`~soars_dose.errors.MemoryLimitError`)
  with the size it would need and what to do.

Coordinates: contours in DICOM LPS mm; grids as :class:`~soars_dose.grid.Grid`.
"""

from __future__ import annotations

import numpy as np

from ..errors import MemoryLimitError
from ..grid import Grid
from ..rasterize import PLANE_TOL_MM, ROW_SUBSAMPLES, auto_factor
from ..structures import Structure
from .compute import BATCH_SAMPLES

#: Default limit (GB = 1e9 bytes) on the memory one structure may take to rasterise.
DEFAULT_MAX_MEMORY_GB = 2.0
#: Bytes per sub-pixel of a plane's bounding box while its coverage is computed: per
#: sub-row (ROW_SUBSAMPLES of them) the three moment sums, their cumulative sums and the
#: covered length and moment (float64, about 10 arrays), then coverage and centroids.
BYTES_PER_BOX_SUBPIXEL = ROW_SUBSAMPLES * 8 * 10 + 3 * 8
#: Bytes per sub-pixel kept for a plane's samples (row, column, area; float64).
BYTES_PER_KEPT_SUBPIXEL = 3 * 8
#: Bytes per sample while one plane's samples are expanded and their dose interpolated
#: (index, box, gradient and their masked copies: about 28 float64 per sample, rounded up).
BYTES_PER_SAMPLE = 256
#: Fixed overhead (bytes) of one structure: DVH accumulators, per-plane bookkeeping.
BASE_BYTES = 4e6


def _normal_patient_axis(structure: Structure) -> int | None:
    """Patient axis (0=x, 1=y, 2=z) normal to every contour, or None when they disagree."""
    axes = {int(np.argmin(np.ptp(c, axis=0))) for c in structure.contours if len(c)}
    return axes.pop() if len(axes) == 1 else None


def outside_grid(structure: Structure, grid: Grid, nominal_spacing_mm: float | None = None) -> bool:
    """True when the structure's bounding box cannot meet the grid's voxels.

    Parameters
    ----------
    structure : Structure
        Contours in LPS mm (non-empty).
    grid : Grid
        Axis-aligned grid; for an oblique grid the answer is False (the
        rasteriser raises its own error).
    nominal_spacing_mm : float, optional
        Contour spacing: the slabs reach half of it beyond the outer
        planes (default: one grid spacing along the normal, generous).

    Notes
    -----
    Conservative: a False answer does not promise that any sample falls
    inside; the rasteriser decides that. A True answer is exact: no part
    of the object the contours define can lie on the grid.
    """
    if structure.is_empty or not grid.is_axis_aligned():
        return False
    lo, hi = structure.bounds()
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return False  # non-finite points are the reader's to refuse
    g_lo, g_hi = grid.world_bounds()
    p = _normal_patient_axis(structure)
    pad = np.zeros(3)
    if p is not None:
        pad[p] = (nominal_spacing_mm if nominal_spacing_mm else max(grid.spacing)) / 2.0
    pad += PLANE_TOL_MM
    return bool(np.any(hi + pad < g_lo) or np.any(lo - pad > g_hi))


def _planes(structure: Structure, p_axis: int) -> list[list[np.ndarray]]:
    items = sorted(structure.contours, key=lambda c: float(np.mean(c[:, p_axis])))
    planes: list[list[np.ndarray]] = []
    last = None
    for c in items:
        pos = float(np.mean(c[:, p_axis]))
        if last is not None and pos - last <= PLANE_TOL_MM:
            planes[-1].append(c)
        else:
            planes.append([c])
        last = pos
    return planes


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def estimate_sampling_bytes(
    structure: Structure,
    grid: Grid,
    factor: "int | str" = "auto",
    nominal_spacing_mm: float | None = None,
) -> tuple[float, int]:
    """Upper estimate of the peak memory (bytes) of rasterising a structure on a grid.

    Follows what :func:`soars_dose.rasterize.sample_structure` allocates:
    per contour plane, the coverage of the plane's whole bounding box in
    sub-pixels, then the plane's samples (covered sub-pixels x slab
    pieces) while their dose is interpolated, in batches of up to
    ``BATCH_SAMPLES`` samples gathered from many planes; the kept sub-pixels
    of all planes stay in memory together.

    Parameters
    ----------
    structure : Structure
        Non-empty, planar contours (LPS mm).
    grid : Grid
        Axis-aligned target grid.
    factor : int or "auto"
        In-plane supersampling factor (as given to the rasteriser).
    nominal_spacing_mm : float, optional
        Contour spacing (mm); default the median gap between planes, or one
        grid spacing for a single plane.

    Returns
    -------
    bytes : float
        Estimated peak memory; ``0.0`` when the structure cannot be
        rasterised anyway (non-parallel contours, oblique grid, non-finite
        points: the rasteriser or reader raises a named error).
    factor : int
        The supersampling factor the estimate assumes.
    """
    p = _normal_patient_axis(structure)
    if structure.is_empty or p is None or not grid.is_axis_aligned():
        return 0.0, 0
    if not all(np.all(np.isfinite(c)) for c in structure.contours):
        return 0.0, 0
    axis = int(np.argmax(np.abs(grid.direction[:, p])))
    b, c = [a for a in range(3) if a != axis]
    sp = np.asarray(grid.spacing)
    inplane = float(min(sp[b], sp[c]))
    planes = _planes(structure, p)
    pos = np.array([float(np.mean(pl[0][:, p])) for pl in planes])
    if nominal_spacing_mm is None or not nominal_spacing_mm > 0:
        nominal_spacing_mm = float(np.median(np.diff(pos))) if pos.size > 1 else float(sp[axis])
    nominal_spacing_mm = max(float(nominal_spacing_mm), PLANE_TOL_MM)
    others = [a for a in range(3) if a != p]
    area_mm2 = [sum(_area(q[:, others]) for q in pl) for pl in planes]
    if factor == "auto":
        f = auto_factor(float(np.sum(area_mm2)) * nominal_spacing_mm, inplane)
    else:
        f = max(int(factor), 1)
        f += f % 2
    # a slab reaches at most 0.75 nominal spacings to either side of its plane
    thick = 1.5 * nominal_spacing_mm / sp[axis]
    max_len = 2.0 / f * inplane / sp[axis]
    pieces = np.ceil(thick / max_len) + 2 * np.ceil(thick) + 2
    peak, kept, total, largest = 0.0, 0.0, 0.0, 0.0
    for pl, a_mm2 in zip(planes, area_mm2):
        idx = grid.world_to_index(np.vstack(pl))
        ext_r, ext_c = np.ptp(idx[:, b]) * f + 2, np.ptp(idx[:, c]) * f + 2
        box = ext_r * ext_c
        perim = 0.0
        for q in pl:
            ring = grid.world_to_index(np.vstack([q, q[:1]]))[:, [b, c]]
            perim += float(np.sum(np.hypot(*np.diff(ring, axis=0).T))) * f
        covered = min(box, a_mm2 / (sp[b] * sp[c]) * f * f + 2 * perim + 4 * sum(len(q) for q in pl))
        crossings = ext_r * ROW_SUBSAMPLES * 2 * 8 * 6  # sub-row crossings, a few arrays
        peak = max(peak, box * BYTES_PER_BOX_SUBPIXEL + crossings)
        kept += covered * BYTES_PER_KEPT_SUBPIXEL
        total += covered * pieces
        largest = max(largest, covered * pieces)
    # the dose of many planes' samples is interpolated in batches of up to
    # BATCH_SAMPLES (plus the plane that overflows the batch); a batch never
    # holds fewer samples than the largest plane
    batch = min(total, BATCH_SAMPLES + largest)
    return float(BASE_BYTES + peak + kept + batch * BYTES_PER_SAMPLE), int(f)


def check_sampling_size(
    structure: Structure,
    grid: Grid,
    factor: "int | str" = "auto",
    nominal_spacing_mm: float | None = None,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
    source: str = "",
    grid_name: str = "dose grid",
) -> float:
    """Refuse a structure whose rasterisation would need more than ``max_memory_gb``.

    Returns the estimate (bytes) when it fits.

    Raises
    ------
    MemoryLimitError
        Naming the file, the ROI, the size it would need, and what to do.
    """
    need, f = estimate_sampling_bytes(structure, grid, factor, nominal_spacing_mm)
    if need > max_memory_gb * 1e9:
        lo, hi = structure.bounds()
        ext = np.round(hi - lo, 1).tolist()
        raise MemoryLimitError(
            f"{source}: ROI {structure.name!r}: rasterising it on the {grid_name} "
            f"(spacing {tuple(round(s, 4) for s in grid.spacing)} mm) at supersampling factor "
            f"{f} would need about {need / 1e9:.3g} GB, over the limit of {max_memory_gb:g} GB. "
            f"Its contours span {ext} mm (x, y, z) from {np.round(lo, 1).tolist()} mm: check "
            "the coordinates in the file and the grid spacing; if they are right, lower "
            "--supersample or raise the limit (--max-memory-gb, Settings.max_memory_gb)"
        )
    return need


#: Bytes per voxel of a grid on which two structures' occupancies and masks are built
#: (float64 accumulator, float32 occupancy, boolean masks and distance work arrays).
BYTES_PER_PAIR_VOXEL = 64


def check_grid_size(grid: Grid, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB, *,
                    what: str = "", source: str = "") -> float:
    """Refuse a working grid whose voxel arrays would need more than ``max_memory_gb``.

    Returns the estimate (bytes) when it fits.

    Raises
    ------
    MemoryLimitError
    """
    n = float(np.prod(np.asarray(grid.shape, dtype=float)))
    need = n * BYTES_PER_PAIR_VOXEL
    if need > max_memory_gb * 1e9:
        raise MemoryLimitError(
            f"{source}: {what}: the working grid of shape {grid.shape} at "
            f"{tuple(round(v, 4) for v in grid.spacing)} mm would need about {need / 1e9:.3g} GB, "
            f"over the limit of {max_memory_gb:g} GB: check the contour coordinates in the file "
            "(a contour far from the patient?)")
    return need
