"""Structures on a fixed dose grid -> DVHs (the core of the dose audit)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import StructureError, warn
from ..rasterize import StructureSamples, sample_structure
from ..structures import Structure
from .dosegrid import DoseGrid
from .dvh import BIN_WIDTH_GY, DVH, DVHBuilder

#: Below this fraction of its volume inside the dose grid a structure is warned about.
FULL_COVERAGE = 0.9999


def _to_index(samples: StructureSamples, axis_pos: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """``(len(axis_pos) * len(rc), 3)`` continuous (k, j, i) indices of in-plane points at each level."""
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    n2, nz = rc.shape[0], axis_pos.size
    idx = np.empty((n2 * nz, 3))
    idx[:, a] = np.repeat(axis_pos, n2)
    idx[:, b] = np.tile(rc[:, 0], nz)
    idx[:, c] = np.tile(rc[:, 1], nz)
    return idx


def dose_extremes(samples: StructureSamples, dose: DoseGrid,
                  interpolation: str = "linear") -> tuple[float, float]:
    """Lowest and highest dose (Gy) over the part of the object inside the dose grid.

    ``"linear"``: the trilinear interpolant is multilinear inside each cell
    between voxel centres. Along the plane normal each slab is cut at voxel
    centres, so over each piece the dose is linear along the normal and
    its extremes lie on the piece's end planes (:attr:`SampleBlock.levels`).
    In-plane the dose of a cell is bilinear, so its extremes over the
    region cut into cells lie on the boundary of the cut region: at its
    vertices (polygon vertices, crossings of edges with cell lines, cell
    corners inside the region) or inside a slanted edge piece, along which
    the bilinear term makes the dose quadratic. Both are evaluated: the
    dose at the two ends and the middle of each edge piece fixes the
    quadratic, whose stationary point is added when it falls inside the
    piece. The result is the exact extreme of the trilinear interpolant
    over the object (up to rounding, about 1e-12 Gy); without the
    stationary points the residual would be at most ``|m| / 4`` for a cell
    with mixed difference ``m = d00 - d10 - d01 + d11`` of its in-plane
    corner doses (0 for a dose linear within the cell).

    ``"nearest"``: the dose is constant per voxel, so the extremes are the
    lowest and highest dose of the voxels the object overlaps with a
    positive volume (every sample lies in one voxel).

    Returns
    -------
    (min_gy, max_gy) : tuple of float
        NaN, NaN when no part of the object lies inside the grid.
    """
    lo, hi = np.inf, -np.inf
    for blk in samples.blocks:
        if interpolation == "nearest":
            idx, _, _, inside = samples.block_arrays(blk)
            if not np.any(inside):
                continue
            d = dose.interpolate(idx[inside], method="nearest")
            lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
            continue
        if blk.levels.size == 0:
            continue
        mid = (blk.seg_a + blk.seg_b) / 2.0
        pts = np.concatenate([blk.seg_a, mid, blk.seg_b, blk.nodes])
        if pts.shape[0] == 0:
            continue
        d = dose.interpolate(_to_index(samples, blk.levels, pts), method=interpolation)
        lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
        ns = blk.seg_a.shape[0]
        if ns == 0:
            continue
        d = d.reshape(blk.levels.size, -1)
        f0, fm, f1 = d[:, :ns], d[:, ns:2 * ns], d[:, 2 * ns:3 * ns]
        # f(t) = f0 + B t + A t^2 through f(0) = f0, f(1/2) = fm, f(1) = f1
        qa = 2.0 * f0 - 4.0 * fm + 2.0 * f1
        qb = -3.0 * f0 + 4.0 * fm - f1
        curved = np.abs(qa) > 1e-12 * (np.abs(f0) + np.abs(f1) + 1.0)
        if np.any(curved):
            ts = -qb[curved] / (2.0 * qa[curved])
            ok = (ts > 0.0) & (ts < 1.0)
            if np.any(ok):
                fs = f0[curved][ok] + qb[curved][ok] * ts[ok] + qa[curved][ok] * ts[ok] ** 2
                lo, hi = min(lo, float(fs.min())), max(hi, float(fs.max()))
    if not np.isfinite(lo):
        return float("nan"), float("nan")
    return lo, hi


class _PlaneCache:
    """Dose (and its step along the normal) interpolated to one position along the normal."""

    def __init__(self, dose: DoseGrid, axis: int):
        self.values = np.moveaxis(dose.values, axis, 0)
        self.n = self.values.shape[0]

    def at(self, pos: float, rows: np.ndarray, cols: np.ndarray):
        """``(plane, step)`` on the rows x cols index arrays at ``pos`` (index units)."""
        n = self.n
        if n == 1:
            p = self.values[0][np.ix_(rows, cols)].astype(np.float64)
            return p, np.zeros_like(p)
        c = min(max(pos, 0.0), n - 1.0)
        k0 = min(int(c), n - 2)
        w = c - k0
        a = self.values[k0][np.ix_(rows, cols)].astype(np.float64)
        b = self.values[k0 + 1][np.ix_(rows, cols)].astype(np.float64)
        step = b - a
        plane = a + w * step
        if pos < 0.0 or pos > n - 1.0:
            step = np.zeros_like(step)  # constant dose out to the grid face
        return plane, step


def _whole_pixel_samples(samples: StructureSamples, blk, cache: _PlaneCache):
    """Dose, spread and volume of the quadrant samples of a block's whole pixels.

    A whole pixel is centred on a voxel centre, so its four quadrants lie in
    four trilinear cells; the dose and gradient at each quadrant centre are
    fixed combinations of the neighbouring voxel doses of the plane
    interpolated along the normal (edge voxels repeated: constant dose out
    to the grid face), which is much cheaper than interpolating each point.
    """
    g = samples.grid
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    pr0, pc0 = blk.full_origin
    nr, nc = blk.full.shape
    rows = np.clip(np.arange(pr0 - 1, pr0 + nr + 1), 0, g.shape[b] - 1)
    cols = np.clip(np.arange(pc0 - 1, pc0 + nc + 1), 0, g.shape[c] - 1)
    mask = blk.full
    quarter_mm2 = g.spacing[b] * g.spacing[c] / 4.0
    out_d, out_s, out_w = [], [], []
    n_ax = g.shape[a]
    for zp, zl in zip(blk.full_pos, blk.full_len):
        if zp < -0.5 or zp > n_ax - 0.5:
            continue
        plane, step = cache.at(float(zp), rows, cols)
        c = plane[1:-1, 1:-1]
        cz = step[1:-1, 1:-1]
        quads_d, quads_s = [], []
        for sr in (-1, 1):
            r_ = plane[1 + sr:1 + sr + nr, 1:-1]
            rz = step[1 + sr:1 + sr + nr, 1:-1]
            for sc in (-1, 1):
                c_ = plane[1:-1, 1 + sc:1 + sc + nc]
                rc = plane[1 + sr:1 + sr + nr, 1 + sc:1 + sc + nc]
                gr = 0.75 * (r_ - c) + 0.25 * (rc - c_)
                gc = 0.75 * (c_ - c) + 0.25 * (rc - r_)
                gz = (9.0 * cz + 3.0 * rz + 3.0 * step[1:-1, 1 + sc:1 + sc + nc]
                      + step[1 + sr:1 + sr + nr, 1 + sc:1 + sc + nc]) / 16.0
                quads_d.append(((9.0 * c + 3.0 * r_ + 3.0 * c_ + rc) / 16.0)[mask])
                quads_s.append(np.sqrt(((gz * zl) ** 2 + 0.25 * (gr * gr + gc * gc))[mask]))
        d = np.concatenate(quads_d)
        out_d.append(d)
        out_s.append(np.concatenate(quads_s))
        out_w.append(np.full(d.size, zl * g.spacing[a] * quarter_mm2))
    if not out_d:
        return None
    return np.concatenate(out_d), np.concatenate(out_s), np.concatenate(out_w)


def _partial_samples(samples: StructureSamples, blk):
    """``(index, weight_mm3, box)`` of a block's sub-pixel samples inside the grid."""
    if blk.rows.size == 0:
        return None
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    idx = _to_index(samples, blk.axis_pos, np.c_[blk.rows, blk.cols])
    w = np.outer(blk.axis_len * samples.grid.spacing[a], blk.area_mm2).ravel()
    box = np.empty_like(idx)
    box[:, a] = np.repeat(blk.axis_len, blk.rows.size)
    box[:, b] = 1.0 / samples.factor
    box[:, c] = 1.0 / samples.factor
    hi = np.asarray(samples.grid.shape) - 0.5
    inside = np.all((idx >= -0.5) & (idx <= hi), axis=1)
    if not np.any(inside):
        return None
    return idx[inside], w[inside], box[inside]


def dvh_of_samples(samples: StructureSamples, dose: DoseGrid, name: str,
                   bin_width: float = BIN_WIDTH_GY, interpolation: str = "linear") -> DVH:
    """DVH of already computed samples (reuse the geometry for many doses).

    The extremes of the dose over the object come first
    (:func:`dose_extremes`): they are the DVH's ``min_gy, max_gy`` and
    bound every sample's dose interval, so no statistic contradicts the
    curve. Samples are then streamed plane by plane, so memory stays
    proportional to one plane's samples; whole pixels take the fast
    quadrant path (:func:`_whole_pixel_samples`).
    """
    if dose.grid.shape != samples.grid.shape:
        raise ValueError("samples and dose must be on the same grid")
    d_range = dose_extremes(samples, dose, interpolation)
    builder = DVHBuilder(name, bin_width, dose_range=None if np.isnan(d_range[0]) else d_range)
    cache = _PlaneCache(dose, samples.normal_axis) if interpolation == "linear" else None
    for blk in samples.blocks:
        part = _partial_samples(samples, blk)
        if part is not None:
            idx, w, box = part
            d, g = dose.interpolate(idx, gradient=True, method=interpolation)
            gb = g * box
            builder.add(d, np.sqrt(np.einsum("ij,ij->i", gb, gb)), w)
        if blk.n_full == 0:
            continue
        if cache is None:
            idx, w, box, inside = samples.block_arrays(
                dataclasses.replace(blk, rows=blk.rows[:0], cols=blk.cols[:0], area_mm2=blk.area_mm2[:0]))
            if np.any(inside):
                builder.add(dose.interpolate(idx[inside], method=interpolation),
                            np.zeros(int(inside.sum())), w[inside])
            continue
        full = _whole_pixel_samples(samples, blk, cache)
        if full is not None:
            builder.add(*full)
    if builder.volume <= 0:
        raise StructureError(
            f"ROI {name!r} lies entirely outside the dose grid {dose.grid}; check that the "
            "dose and the structures belong to the same patient and plan"
        )
    dvh = builder.build(samples.volume_mm3)
    dvh.notes.extend(samples.notes)
    return dvh


def compute_dvh(
    structure: Structure,
    dose: DoseGrid,
    *,
    factor: "int | str" = "auto",
    nominal_spacing_mm: float | None = None,
    bin_width: float = BIN_WIDTH_GY,
    interpolation: str = "linear",
    source: str = "",
) -> DVH:
    """DVH and statistics of one structure on a dose grid.

    Parameters
    ----------
    structure : Structure
        Closed planar contours (LPS mm).
    dose : DoseGrid
        Dose in Gy.
    factor : int or "auto"
        In-plane supersampling factor (see :func:`soars_dose.rasterize.sample_structure`).
    nominal_spacing_mm : float, optional
        Nominal contour spacing (CT slice thickness) for end caps.
    bin_width : float
        DVH bin width in Gy (default 0.01 Gy).
    interpolation : {"linear", "nearest"}
        Dose between voxel centres: trilinear (default) or constant per voxel.
    source : str
        File name for messages.

    Warns
    -----
    SoarsDoseWarning
        When less than 100 % of the structure lies inside the dose grid.
    """
    samples = sample_structure(structure, dose.grid, factor=factor,
                               nominal_spacing_mm=nominal_spacing_mm, source=source)
    dvh = dvh_of_samples(samples, dose, structure.name, bin_width, interpolation)
    if dvh.coverage < FULL_COVERAGE:
        msg = (f"{source}: ROI {structure.name!r}: only {100 * dvh.coverage:.1f} % of its "
               f"volume lies inside the dose grid; its statistics cover that part only")
        dvh.notes.append(msg)
        warn(msg)
    return dvh
