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
        if blk.nodes.shape[0]:
            nd = _node_doses(samples, dose, blk)
            lo, hi = min(lo, float(nd.min())), max(hi, float(nd.max()))
        ns = blk.seg_a.shape[0]
        if ns == 0:
            continue
        mid = (blk.seg_a + blk.seg_b) / 2.0
        pts = np.concatenate([blk.seg_a, mid, blk.seg_b])
        d = dose.interpolate(_to_index(samples, blk.levels, pts), method=interpolation)
        lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
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


def _node_doses(samples: StructureSamples, dose: DoseGrid, blk) -> np.ndarray:
    """Interpolated dose at a block's cell-line crossings on each of its levels.

    The crossings lie on voxel-centre lines or grid faces, where the dose is
    that of the nearest voxel centre in-plane (constant out to the face), so
    only the interpolation along the normal remains: two gathers per level.
    """
    g = samples.grid
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    vals = np.moveaxis(dose.values, a, 0)
    j = np.clip(np.rint(blk.nodes[:, 0]).astype(np.int64), 0, g.shape[b] - 1)
    i = np.clip(np.rint(blk.nodes[:, 1]).astype(np.int64), 0, g.shape[c] - 1)
    n = g.shape[a]
    out = []
    for z in blk.levels:
        zc = min(max(float(z), 0.0), n - 1.0)
        k0 = min(int(zc), max(n - 2, 0))
        w = zc - k0 if n > 1 else 0.0
        d0 = vals[k0][j, i].astype(np.float64)
        out.append(d0 if w == 0.0 else d0 + w * (vals[k0 + 1][j, i] - d0))
    return np.concatenate(out)


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
    """Dose, spread and volume of the samples of a block's whole pixels.

    Whole pixels are centred on voxel centres. Where four of them meet, the
    trilinear cell between their centres lies wholly inside the region and
    is one sample per piece of the slab (the interpolant is trilinear there,
    so its mean is the dose at the cell centre, and for a gradient along one
    axis its dose distribution is exactly uniform). The quadrants of whole
    pixels on the rim, which no such cell covers, are samples of their own.
    Doses and gradients are fixed combinations of the voxel doses of the
    plane interpolated along the normal (edge voxels repeated: constant dose
    out to the grid face), much cheaper than interpolating point by point.
    """
    g = samples.grid
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    pr0, pc0 = blk.full_origin
    nr, nc = blk.full.shape
    rows = np.clip(np.arange(pr0 - 1, pr0 + nr + 1), 0, g.shape[b] - 1)
    cols = np.clip(np.arange(pc0 - 1, pc0 + nc + 1), 0, g.shape[c] - 1)
    mask = blk.full
    # cellc[r + 1, q + 1]: the cell between pixels r, r + 1 and q, q + 1 is wholly covered
    cellc = np.zeros((nr + 1, nc + 1), bool)
    cellc[1:-1, 1:-1] = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    cells = cellc[1:-1, 1:-1]
    quad = {(sr, sc): mask & ~cellc[(1 if sr > 0 else 0):(nr + 1 if sr > 0 else nr),
                                    (1 if sc > 0 else 0):(nc + 1 if sc > 0 else nc)]
            for sr in (-1, 1) for sc in (-1, 1)}
    px_mm2 = g.spacing[b] * g.spacing[c]
    n_ax = g.shape[a]
    # pieces cut at voxel centres (where the interpolant has its kinks) and at the grid
    # faces only: the voxel faces that the occupancy needs do not matter for the dose
    cuts = np.arange(np.ceil(blk.slab[0]), np.floor(blk.slab[1]) + 1.0)
    cuts = np.concatenate([cuts, [-0.5, n_ax - 0.5]])
    bounds = np.unique(np.concatenate([[blk.slab[0], blk.slab[1]],
                                       cuts[(cuts > blk.slab[0]) & (cuts < blk.slab[1])]]))
    out_d, out_s, out_w = [], [], []
    for zp, zl in zip((bounds[:-1] + bounds[1:]) / 2.0, np.diff(bounds)):
        if zp < -0.5 or zp > n_ax - 0.5:
            continue
        plane, step = cache.at(float(zp), rows, cols)
        w_mm = zl * g.spacing[a]
        if cells.any():
            p00, p10 = plane[1:nr, 1:nc], plane[2:nr + 1, 1:nc]
            p01, p11 = plane[1:nr, 2:nc + 1], plane[2:nr + 1, 2:nc + 1]
            gz = (step[1:nr, 1:nc] + step[2:nr + 1, 1:nc] + step[1:nr, 2:nc + 1]
                  + step[2:nr + 1, 2:nc + 1])[cells] / 4.0
            gr = (p10 - p00 + p11 - p01)[cells] / 2.0
            gc = (p01 - p00 + p11 - p10)[cells] / 2.0
            d = (p00 + p10 + p01 + p11)[cells] / 4.0
            out_d.append(d)
            out_s.append(np.sqrt((gz * zl) ** 2 + gr * gr + gc * gc))
            out_w.append(np.full(d.size, w_mm * px_mm2))
        c0 = plane[1:-1, 1:-1]
        cz = step[1:-1, 1:-1]
        for (sr, sc), m in quad.items():
            if not m.any():
                continue
            r_ = plane[1 + sr:1 + sr + nr, 1:-1][m]
            c_ = plane[1:-1, 1 + sc:1 + sc + nc][m]
            rc = plane[1 + sr:1 + sr + nr, 1 + sc:1 + sc + nc][m]
            p0 = c0[m]
            gr = 0.75 * (r_ - p0) + 0.25 * (rc - c_)
            gc = 0.75 * (c_ - p0) + 0.25 * (rc - r_)
            gz = (9.0 * cz[m] + 3.0 * step[1 + sr:1 + sr + nr, 1:-1][m]
                  + 3.0 * step[1:-1, 1 + sc:1 + sc + nc][m]
                  + step[1 + sr:1 + sr + nr, 1 + sc:1 + sc + nc][m]) / 16.0
            d = (9.0 * p0 + 3.0 * r_ + 3.0 * c_ + rc) / 16.0
            out_d.append(d)
            out_s.append(np.sqrt((gz * zl) ** 2 + 0.25 * (gr * gr + gc * gc)))
            out_w.append(np.full(d.size, w_mm * px_mm2 / 4.0))
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
