"""Structures on a fixed dose grid -> DVHs (the core of the dose audit)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..dosegrid import DoseGrid
from ..errors import OutsideGridError, warn
from ..rasterize import StructureSamples, sample_structure
from ..structures import Structure
from .dvh import BIN_WIDTH_GY, DVH, DVHBuilder

#: Below this fraction of its volume inside the dose grid a structure is warned about.
FULL_COVERAGE = 0.9999
#: Samples gathered from several planes before they are interpolated and accumulated.
BATCH_SAMPLES = 1_000_000
#: Planes with the most extreme dose bounds whose exact extremes are computed first.
EXTREME_FIRST_PLANES = 2


def _level_points(levels: list[np.ndarray], points: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every in-plane point of each block at each of its levels, for many blocks at once.

    Block ``u`` contributes ``levels[u].shape[0] * points[u].shape[0]`` rows, level
    by level (the points of one level together); returns the level and the point of
    each row. Levels are positions along the normal (index units), ``(nl,)``, or
    rows carrying more columns, ``(nl, k)``; points are rows ``(ns, k)`` likewise.
    """
    nl = np.fromiter((x.shape[0] for x in levels), np.int64, len(levels))
    ns = np.fromiter((x.shape[0] for x in points), np.int64, len(points))
    cnt = nl * ns
    blk = np.repeat(np.arange(cnt.size), cnt)
    k = np.arange(blk.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    per = ns[blk]
    li = (np.cumsum(nl) - nl)[blk] + k // per
    si = (np.cumsum(ns) - ns)[blk] + k % per
    lev = np.concatenate(levels) if levels else np.zeros(0)
    pts = np.concatenate(points) if points else np.zeros((0, 2))
    return lev[li], pts[si]


def _to_index(samples: StructureSamples, pos: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """``(n, 3)`` continuous (k, j, i) indices of in-plane points ``rc (n, 2)`` at positions ``pos (n,)``."""
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    idx = np.empty((pos.size, 3))
    idx[:, a] = pos
    idx[:, b] = rc[:, 0]
    idx[:, c] = rc[:, 1]
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

    Only planes that can hold an extreme are evaluated: the dose over a
    plane's region lies between the lowest and highest voxel dose of the
    cells it touches (:attr:`~soars_dose.rasterize.SampleBlock.cells`), so a
    plane whose bounds do not pass the extremes already found is skipped,
    geometry included. The result is the same as evaluating every plane.

    ``"nearest"``: the dose is constant per voxel, so the extremes are the
    lowest and highest dose of the voxels the object overlaps with a
    positive volume (every sample lies in one voxel).

    Returns
    -------
    (min_gy, max_gy) : tuple of float
        NaN, NaN when no part of the object lies inside the grid.
    """
    lo, hi = np.inf, -np.inf
    if interpolation == "nearest":
        for blk in samples.blocks:
            idx, _, _, inside = samples.block_arrays(blk)
            if not np.any(inside):
                continue
            d = dose.interpolate(idx[inside], method="nearest")
            lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
        if not np.isfinite(lo):
            return float("nan"), float("nan")
        return lo, hi
    blocks = [blk for blk in samples.blocks if blk.levels.size]
    if not blocks:
        return float("nan"), float("nan")
    # A plane's dose lies between the lowest and highest voxel dose of the trilinear cells
    # its bounding box touches (the interpolant is a convex combination of its cell's
    # corners). Planes whose bounds cannot beat the extremes already found are skipped,
    # with their geometry: first the planes with the most extreme bounds, then the others
    # that can still hold a lower minimum or a higher maximum.
    lb, ub = _plane_bounds(samples, dose, blocks)
    k = EXTREME_FIRST_PLANES
    first = np.union1d(np.argsort(-ub, kind="stable")[:k], np.argsort(lb, kind="stable")[:k])
    lo, hi = _exact_extremes(samples, dose, [blocks[i] for i in first], lo, hi)
    rest = np.setdiff1d(np.nonzero((ub > hi) | (lb < lo))[0], first)
    lo, hi = _exact_extremes(samples, dose, [blocks[i] for i in rest], lo, hi)
    if not np.isfinite(lo):
        return float("nan"), float("nan")
    return lo, hi


def _plane_bounds(samples: StructureSamples, dose: DoseGrid, blocks) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest voxel dose (Gy) of the cells that each block's region can touch.

    In-plane these are the block's :attr:`~soars_dose.rasterize.SampleBlock.cells`
    when it has them. Otherwise the block's region lies in the box of its polygons
    (or of its edge pieces and nodes) and its levels; a point there is interpolated from the voxels of the index
    range ``floor(clamp(lo)) .. floor(clamp(hi)) + 1`` along each axis (clamped to the
    grid: constant dose out to the faces).
    """
    g = samples.grid
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    vals = np.moveaxis(dose.values, a, 0)
    n = (g.shape[a], g.shape[b], g.shape[c])

    def rng(x0: float, x1: float, m: int) -> slice:
        i0 = int(np.floor(min(max(x0, 0.0), m - 1.0)))
        i1 = min(int(np.floor(min(max(x1, 0.0), m - 1.0))) + 1, m - 1)
        return slice(i0, i1 + 1)

    lb = np.full(len(blocks), np.inf)
    ub = np.full(len(blocks), -np.inf)
    for u, blk in enumerate(blocks):
        ks = rng(float(blk.levels.min()), float(blk.levels.max()), n[0])
        if blk.cells is not None and blk.cells.size:
            (r0, c0), m = blk.cells_origin, blk.cells
            box = vals[ks, r0:r0 + m.shape[0], c0:c0 + m.shape[1]]
            if box.size and m.any():
                lb[u] = float(np.where(m, box, np.inf).min())
                ub[u] = float(np.where(m, box, -np.inf).max())
            continue
        if blk.polygons:
            pts = np.vstack(blk.polygons)
        else:
            sa, sb, nd = blk.extreme_vertices()
            pts = np.concatenate([sa, sb, nd])
        if pts.shape[0] == 0:
            continue
        box = vals[ks,
                   rng(float(pts[:, 0].min()), float(pts[:, 0].max()), n[1]),
                   rng(float(pts[:, 1].min()), float(pts[:, 1].max()), n[2])]
        if box.size:
            lb[u], ub[u] = float(box.min()), float(box.max())
    return lb, ub


def _exact_extremes(samples: StructureSamples, dose: DoseGrid, blocks, lo: float, hi: float):
    """``(lo, hi)`` widened by the exact trilinear extremes over ``blocks`` (see :func:`dose_extremes`)."""
    # the nodes and edge pieces of all planes go through one gather / interpolation call:
    # the per-plane calls cost more than the arithmetic on small planes
    if not blocks:
        return lo, hi
    type(blocks[0]).fill_extreme_vertices(blocks)
    geo = [blk.extreme_vertices() for blk in blocks]
    levels = [blk.levels for blk in blocks]
    lv, nodes = _level_points(levels, [g[2] for g in geo])
    if lv.size:
        nd = _node_doses(samples, dose, lv, nodes)
        lo, hi = min(lo, float(nd.min())), max(hi, float(nd.max()))
    lv, seg_a = _level_points(levels, [g[0] for g in geo])
    ends_a = []
    if lv.size:
        _, seg_b = _level_points(levels, [g[1] for g in geo])
        ends_a = [_to_index(samples, lv, seg_a)]
        mids = [_to_index(samples, lv, (seg_a + seg_b) / 2.0)]
        ends_b = [_to_index(samples, lv, seg_b)]
    if ends_a:
        ns = sum(x.shape[0] for x in ends_a)
        d = dose.interpolate(np.concatenate(ends_a + mids + ends_b), method="linear")
        lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
        f0, fm, f1 = d[:ns], d[ns:2 * ns], d[2 * ns:3 * ns]
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
    return lo, hi


def _node_doses(samples: StructureSamples, dose: DoseGrid, levels: np.ndarray,
                nodes: np.ndarray) -> np.ndarray:
    """Interpolated dose at cell-line crossings ``nodes (n, 2)``, each at its level ``levels (n,)``.

    The crossings lie on voxel-centre lines or grid faces, where the dose is
    that of the nearest voxel centre in-plane (constant out to the face), so
    only the interpolation along the normal remains: two gathers.
    """
    g = samples.grid
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    vals = np.moveaxis(dose.values, a, 0)
    j = np.clip(np.rint(nodes[:, 0]).astype(np.int64), 0, g.shape[b] - 1)
    i = np.clip(np.rint(nodes[:, 1]).astype(np.int64), 0, g.shape[c] - 1)
    n = g.shape[a]
    zc = np.minimum(np.maximum(np.asarray(levels, float), 0.0), n - 1.0)
    k0 = np.minimum(zc.astype(np.int64), max(n - 2, 0))
    d0 = vals[k0, j, i].astype(np.float64)
    if n == 1:
        return d0
    return d0 + (zc - k0) * (vals[k0 + 1, j, i] - d0)


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

    def at_many(self, pos: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        """:meth:`at` for many positions at once: ``(plane, step)`` arrays ``[pos, row, column]``."""
        n = self.n
        if n == 1:
            p = np.broadcast_to(self.values[0][np.ix_(rows, cols)].astype(np.float64),
                                (pos.size, rows.size, cols.size))
            return p, np.zeros_like(p)
        c = np.minimum(np.maximum(pos, 0.0), n - 1.0)
        k0 = np.minimum(c.astype(np.int64), n - 2)
        w = (c - k0)[:, None, None]
        rr, cc = rows[None, :, None], cols[None, None, :]
        a = self.values[k0[:, None, None], rr, cc].astype(np.float64)
        step = self.values[k0[:, None, None] + 1, rr, cc] - a
        plane = a + w * step
        outside = (pos < 0.0) | (pos > n - 1.0)
        if np.any(outside):
            step[outside] = 0.0  # constant dose out to the grid face
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
    zp = (bounds[:-1] + bounds[1:]) / 2.0
    zl = np.diff(bounds)
    keep = (zp >= -0.5) & (zp <= n_ax - 0.5)
    zp, zl = zp[keep], zl[keep]
    if zp.size == 0:
        return None
    # all pieces of the slab at once: arrays [piece, row, column]
    plane, step = cache.at_many(zp, rows, cols)
    w_mm = (zl * g.spacing[a])[:, None]
    zl_ = zl[:, None]
    out_d, out_s, out_w = [], [], []
    if cells.any():
        sel = (slice(None),) + np.nonzero(cells)
        p00, p10 = plane[:, 1:nr, 1:nc], plane[:, 2:nr + 1, 1:nc]
        p01, p11 = plane[:, 1:nr, 2:nc + 1], plane[:, 2:nr + 1, 2:nc + 1]
        p00, p10, p01, p11 = p00[sel], p10[sel], p01[sel], p11[sel]
        gz = (step[:, 1:nr, 1:nc][sel] + step[:, 2:nr + 1, 1:nc][sel] + step[:, 1:nr, 2:nc + 1][sel]
              + step[:, 2:nr + 1, 2:nc + 1][sel]) / 4.0
        gr = (p10 - p00 + p11 - p01) / 2.0
        gc = (p01 - p00 + p11 - p10) / 2.0
        d = (p00 + p10 + p01 + p11) / 4.0
        out_d.append(d.ravel())
        out_s.append(np.sqrt((gz * zl_) ** 2 + gr * gr + gc * gc).ravel())
        out_w.append(np.broadcast_to(w_mm * px_mm2, d.shape).ravel())
    for (sr, sc), m in quad.items():
        if not m.any():
            continue
        sel = (slice(None),) + np.nonzero(m)
        p0 = plane[:, 1:-1, 1:-1][sel]
        r_ = plane[:, 1 + sr:1 + sr + nr, 1:-1][sel]
        c_ = plane[:, 1:-1, 1 + sc:1 + sc + nc][sel]
        rc = plane[:, 1 + sr:1 + sr + nr, 1 + sc:1 + sc + nc][sel]
        gr = 0.75 * (r_ - p0) + 0.25 * (rc - c_)
        gc = 0.75 * (c_ - p0) + 0.25 * (rc - r_)
        gz = (9.0 * step[:, 1:-1, 1:-1][sel] + 3.0 * step[:, 1 + sr:1 + sr + nr, 1:-1][sel]
              + 3.0 * step[:, 1:-1, 1 + sc:1 + sc + nc][sel]
              + step[:, 1 + sr:1 + sr + nr, 1 + sc:1 + sc + nc][sel]) / 16.0
        d = (9.0 * p0 + 3.0 * r_ + 3.0 * c_ + rc) / 16.0
        out_d.append(d.ravel())
        out_s.append(np.sqrt((gz * zl_) ** 2 + 0.25 * (gr * gr + gc * gc)).ravel())
        out_w.append(np.broadcast_to(w_mm * px_mm2 / 4.0, d.shape).ravel())
    if not out_d:
        return None
    return np.concatenate(out_d), np.concatenate(out_s), np.concatenate(out_w)


def _partial_samples(samples: StructureSamples, blocks):
    """``(index, weight_mm3, box)`` of the sub-pixel samples of ``blocks`` inside the grid."""
    blocks = [blk for blk in blocks if blk.rows.size]
    if not blocks:
        return None
    a = samples.normal_axis
    b, c = samples.in_plane_axes
    # a sub-pixel's row, column and area travel together through the level product
    # (and a piece's centre and length) travel together through the level product
    zz, rca = _level_points([np.c_[blk.axis_pos, blk.axis_len] for blk in blocks],
                            [np.c_[blk.rows, blk.cols, blk.area_mm2] for blk in blocks])
    zl = zz[:, 1]
    idx = _to_index(samples, zz[:, 0], rca[:, :2])
    w = (zl * samples.grid.spacing[a]) * rca[:, 2]
    box = np.empty_like(idx)
    box[:, a] = zl
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
    # samples of many planes are gathered into one call of the interpolation and of the
    # accumulator: per-call overhead, not arithmetic, dominates small planes
    pend_full: list = []
    n_full = 0

    def add_partial(group):
        part = _partial_samples(samples, group)
        group.clear()
        if part is None:
            return
        idx, w, box = part
        d, g = dose.interpolate(idx, gradient=True, method=interpolation)
        gb = g * box
        builder.add(d, np.sqrt(np.einsum("ij,ij->i", gb, gb)), w)

    def flush_full():
        nonlocal n_full
        if not pend_full:
            return
        builder.add(*(np.concatenate(x) for x in zip(*pend_full)))
        pend_full.clear()
        n_full = 0

    group, n_part = [], 0
    for blk in samples.blocks:
        if blk.rows.size:
            group.append(blk)
            n_part += blk.rows.size * blk.axis_pos.size
            if n_part >= BATCH_SAMPLES:
                add_partial(group)
                n_part = 0
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
            pend_full.append(full)
            n_full += full[0].size
            if n_full >= BATCH_SAMPLES:
                flush_full()
    add_partial(group)
    flush_full()
    if builder.volume <= 0:
        raise OutsideGridError(
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
