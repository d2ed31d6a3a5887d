"""Planar contours -> sub-voxel samples and fractional occupancy on any Grid.

This is the one geometry kernel of soars-dose: a structure is turned into
weighted sub-voxel *samples* (box-shaped pieces of the structure), from
which both its dose statistics (by trilinear interpolation of the dose at
each sample) and its fractional occupancy of a grid's voxels are derived.

The object a set of planar contours defines
-------------------------------------------
Contours are grouped into planes (one position along the plane normal).
Each plane's region (all its polygons combined by the even-odd rule, so
inner contours are holes) is extruded into a *slab*:

* between two neighbouring contour planes the boundary is half-way;
* at the first and last plane of the structure, and on either side of a
  gap wider than 1.5 x the nominal contour spacing (a skipped slice), the
  slab ends half a nominal spacing beyond the plane ("half-slice end
  caps");
* a structure with a single plane gets one nominal spacing of thickness.

The nominal spacing is the CT slice thickness when known, else the most
common gap between contour planes of the structure set, else the
structure's own median gap. This is the convention of the common
planning systems and of the closed-form tests.

Sampling
--------
In-plane, the grid's pixels are split into ``f x f`` sub-pixels (``f``
even, so sub-pixels never straddle a voxel centre where trilinear
interpolation has a kink). The area of each sub-pixel covered by the
polygons is computed exactly along the columns and by ``ROW_SUBSAMPLES``
midpoint sub-rows along the rows, so the in-plane area is accurate to far
below a sub-pixel. Along the normal each slab is cut at voxel centres and
voxel faces of the grid and into pieces no longer than two sub-pixels, so
every sample lies in one voxel and one trilinear cell. Work is done only
inside each plane's bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import GeometryError, StructureError
from .grid import Grid
from .structures import Structure

#: Midpoint sub-rows per sub-pixel row in the coverage computation.
ROW_SUBSAMPLES = 4
#: Contour planes closer than this (mm) along the normal are one plane.
PLANE_TOL_MM = 0.01
#: A gap wider than this many nominal spacings is a break (skipped slice).
GAP_BREAK_FACTOR = 1.5
#: Upper bound on the in-plane supersampling factor chosen automatically.
MAX_AUTO_FACTOR = 16
#: Soft cap on the number of samples per structure for the automatic factor.
MAX_AUTO_SAMPLES = 4_000_000


@dataclass
class SampleBlock:
    """Samples of one contour plane: covered sub-pixels x pieces of its slab.

    Attributes
    ----------
    axis_pos, axis_len : ndarray (nz,)
        Centre and length (index units along the normal axis) of each piece.
    rows, cols : ndarray (n,)
        Continuous indices of the sub-pixel centres along the two in-plane
        axes (in increasing axis order).
    area_mm2 : ndarray (n,)
        Covered area (mm^2) of each sub-pixel.
    """

    axis_pos: np.ndarray
    axis_len: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    area_mm2: np.ndarray

    @property
    def size(self) -> int:
        return self.axis_pos.size * self.rows.size


@dataclass
class StructureSamples:
    """Weighted sub-voxel samples of one structure on one grid.

    The samples are stored per contour plane (:class:`SampleBlock`) so that
    callers can stream them; :attr:`index`, :attr:`weight_mm3`,
    :attr:`box` and :attr:`inside` give them all at once.

    Attributes
    ----------
    grid : Grid
        The grid the indices refer to.
    blocks : list of SampleBlock
    volume_mm3 : float
        Volume of the object the contours define.
    factor : int
        In-plane supersampling factor used.
    normal_axis : int
        Grid axis along which the contour planes are stacked.
    n_planes : int
        Number of contour planes.
    notes : list of str
    """

    grid: Grid
    blocks: list[SampleBlock]
    volume_mm3: float
    factor: int
    normal_axis: int
    n_planes: int
    notes: list[str] = field(default_factory=list)

    @property
    def in_plane_axes(self) -> list[int]:
        return [a for a in range(3) if a != self.normal_axis]

    def block_arrays(self, block: SampleBlock):
        """``(index (n,3), weight_mm3 (n,), box (n,3), inside (n,))`` of one block."""
        a = self.normal_axis
        b, c = self.in_plane_axes
        n2, nz = block.rows.size, block.axis_pos.size
        idx = np.empty((n2 * nz, 3))
        idx[:, a] = np.repeat(block.axis_pos, n2)
        idx[:, b] = np.tile(block.rows, nz)
        idx[:, c] = np.tile(block.cols, nz)
        w = np.outer(block.axis_len * self.grid.spacing[a], block.area_mm2).ravel()
        box = np.empty((n2 * nz, 3))
        box[:, a] = np.repeat(block.axis_len, n2)
        box[:, b] = 1.0 / self.factor
        box[:, c] = 1.0 / self.factor
        hi = np.asarray(self.grid.shape) - 0.5
        inside = np.all((idx >= -0.5) & (idx <= hi), axis=1)
        return idx, w, box, inside

    def _all(self, k: int) -> np.ndarray:
        return np.concatenate([self.block_arrays(b)[k] for b in self.blocks])

    @property
    def index(self) -> np.ndarray:
        """Continuous ``(k, j, i)`` indices of all sample centres, (n, 3)."""
        return self._all(0)

    @property
    def weight_mm3(self) -> np.ndarray:
        """Volume (mm^3) each sample stands for, (n,)."""
        return self._all(1)

    @property
    def box(self) -> np.ndarray:
        """Sample box extent in index units along each axis, (n, 3)."""
        return self._all(2)

    @property
    def inside(self) -> np.ndarray:
        """Sample centre inside the grid's voxels, (n,)."""
        return self._all(3)

    @property
    def volume_cc(self) -> float:
        """Volume of the contour-defined object in cm^3."""
        return self.volume_mm3 / 1000.0

    @property
    def inside_fraction(self) -> float:
        """Fraction (0-1) of the structure's volume inside the grid."""
        if self.volume_mm3 <= 0:
            return 0.0
        w_in = sum(float(w[ins].sum()) for _, w, _, ins in map(self.block_arrays, self.blocks))
        return w_in / self.volume_mm3


# --------------------------------------------------------------------- planes
def _contour_normal_axis(structure: Structure, source: str) -> int:
    """Patient axis (0=x, 1=y, 2=z) perpendicular to every contour of the structure."""
    axes = {int(np.argmin(np.ptp(c, axis=0))) for c in structure.contours}
    if len(axes) != 1:
        raise GeometryError(
            f"{source}: ROI {structure.name!r} has contours in planes of different "
            "orientations; all contours of a structure must be parallel"
        )
    return axes.pop()


def contour_planes(structure: Structure, grid: Grid, source: str = "") -> tuple[int, list[tuple[float, list[np.ndarray]]]]:
    """Contours of ``structure`` in continuous index coordinates of ``grid``, by plane.

    Returns
    -------
    axis : int
        Grid axis (0, 1 or 2) normal to the contour planes.
    planes : list of (position, polygons)
        Sorted by ``position`` (continuous index along ``axis``); each
        polygon an ``(n, 2)`` array of the two other continuous indices in
        increasing axis order.
    """
    if structure.is_empty:
        raise StructureError(f"{source}: ROI {structure.name!r} has no contour (empty structure)")
    p_axis = _contour_normal_axis(structure, source)
    if not grid.is_axis_aligned():
        grid.patient_axis(0)  # raises the oblique-grid error
    axis = int(np.argmax(np.abs(grid.direction[:, p_axis])))
    others = [a for a in range(3) if a != axis]
    tol = PLANE_TOL_MM / grid.spacing[axis]
    items = []
    for c in structure.contours:
        idx = grid.world_to_index(c)
        items.append((float(np.mean(idx[:, axis])), idx[:, others]))
    items.sort(key=lambda t: t[0])
    planes: list[tuple[float, list[np.ndarray]]] = []
    for pos, poly in items:
        if planes and pos - planes[-1][0] <= tol:
            planes[-1][1].append(poly)
        else:
            planes.append((pos, [poly]))
    return axis, planes


def plane_gaps_mm(structure: Structure, grid: Grid) -> np.ndarray:
    """Gaps (mm) between consecutive contour planes of ``structure``."""
    axis, planes = contour_planes(structure, grid)
    pos = np.array([p for p, _ in planes])
    return np.diff(pos) * grid.spacing[axis]


def nominal_spacing_mm(structures, grid: Grid) -> float | None:
    """Most common gap (mm, to 0.01 mm) between contour planes over many structures."""
    gaps = []
    for s in structures:
        if s.is_empty:
            continue
        try:
            gaps.append(plane_gaps_mm(s, grid))
        except GeometryError:
            continue
    if not gaps:
        return None
    g = np.round(np.concatenate(gaps), 2)
    g = g[g > PLANE_TOL_MM]
    if g.size == 0:
        return None
    vals, counts = np.unique(g, return_counts=True)
    return float(vals[np.argmax(counts)])


def slab_bounds(positions: np.ndarray, nominal: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper slab limits for sorted plane positions (same units as input).

    Neighbouring planes closer than ``GAP_BREAK_FACTOR * nominal`` share a
    half-way boundary; otherwise each side ends ``nominal / 2`` from its
    plane.
    """
    positions = np.asarray(positions, dtype=float)
    half = nominal / 2.0
    lo = positions - half
    hi = positions + half
    if positions.size > 1:
        gaps = np.diff(positions)
        joined = gaps <= GAP_BREAK_FACTOR * nominal
        mid = positions[:-1] + gaps / 2.0
        hi[:-1] = np.where(joined, mid, hi[:-1])
        lo[1:] = np.where(joined, mid, lo[1:])
    return lo, hi


# ------------------------------------------------------------------- coverage
def polygon_coverage(polygons: list[np.ndarray], sub_rows: int = ROW_SUBSAMPLES):
    """Area coverage of unit pixels by polygons combined with the even-odd rule.

    Parameters
    ----------
    polygons : list of ndarray (n, 2)
        Vertices in pixel units ``(row, column)``; pixel ``(m, q)`` covers
        ``[m - 0.5, m + 0.5) x [q - 0.5, q + 0.5)``.
    sub_rows : int
        Midpoint sub-rows per pixel row.

    Returns
    -------
    row0, col0 : int
        Pixel indices of ``coverage[0, 0]``.
    coverage : ndarray (rows, columns)
        Covered fraction of each pixel's area, in [0, 1]. Exact along the
        columns; midpoint rule with ``sub_rows`` points along the rows.
    centroid : ndarray (2, rows, columns)
        Row and column offset (pixel units, in [-0.5, 0.5]) of the centroid
        of the covered part from the pixel centre (0 where nothing is
        covered), so that a partly covered pixel is sampled inside the
        polygon.
    """
    pts = np.vstack(polygons)
    row0 = int(np.floor(pts[:, 0].min() + 0.5))
    row1 = int(np.floor(pts[:, 0].max() + 0.5))
    col0 = int(np.floor(pts[:, 1].min() + 0.5))
    col1 = int(np.floor(pts[:, 1].max() + 0.5))
    n_rows, n_cols = row1 - row0 + 1, col1 - col0 + 1
    n_sub = n_rows * sub_rows

    starts = np.vstack(polygons)
    ends = np.vstack([np.roll(p, -1, axis=0) for p in polygons])
    r0, c0 = starts[:, 0] - row0, starts[:, 1] - col0
    r1, c1 = ends[:, 0] - row0, ends[:, 1] - col0
    ymin, ymax = np.minimum(r0, r1), np.maximum(r0, r1)
    # sub-row t sits at y_t = -0.5 + (t + 0.5) / sub_rows; an edge crosses
    # the sub-rows with ymin <= y_t < ymax (half-open: vertices count once).
    t_lo = np.ceil((ymin + 0.5) * sub_rows - 0.5).astype(np.int64)
    t_hi = np.ceil((ymax + 0.5) * sub_rows - 0.5).astype(np.int64)
    n_cross = np.clip(t_hi - t_lo, 0, None)
    total = int(n_cross.sum())
    if total == 0:
        return row0, col0, np.zeros((n_rows, n_cols)), np.zeros((2, n_rows, n_cols))
    edge = np.repeat(np.arange(r0.size), n_cross)
    first = np.repeat(np.cumsum(n_cross) - n_cross, n_cross)
    t = t_lo[edge] + (np.arange(total) - first)
    y = -0.5 + (t + 0.5) / sub_rows
    dr = r1[edge] - r0[edge]
    x = c0[edge] + (y - r0[edge]) * (c1[edge] - c0[edge]) / dr
    order = np.lexsort((x, t))
    t, x = t[order], x[order]
    row_start = np.searchsorted(t, t, side="left")
    sign = np.where((np.arange(total) - row_start) % 2 == 0, 1.0, -1.0)
    # F(e) = sum_j sign_j * (e - x_j)_+ is the covered length left of e;
    # evaluate it at the column edges e_q = q - 0.5 (q = 0..n_cols).
    b = np.clip(np.floor(x + 0.5).astype(np.int64) + 1, 0, n_cols + 1)
    width = n_cols + 2
    flat = t * width + b
    s0 = np.bincount(flat, weights=sign, minlength=n_sub * width).reshape(n_sub, width)
    s1 = np.bincount(flat, weights=sign * x, minlength=n_sub * width).reshape(n_sub, width)
    s2 = np.bincount(flat, weights=sign * x * x, minlength=n_sub * width).reshape(n_sub, width)
    s0 = np.cumsum(s0, axis=1)[:, : n_cols + 1]
    s1 = np.cumsum(s1, axis=1)[:, : n_cols + 1]
    s2 = np.cumsum(s2, axis=1)[:, : n_cols + 1]
    e = np.arange(n_cols + 1) - 0.5
    # covered length and its first moment left of each edge
    length = np.diff(e * s0 - s1, axis=1)
    moment = np.diff(0.5 * (e * e * s0 - s2), axis=1)
    y = (-0.5 + (np.arange(n_sub) + 0.5) / sub_rows)[:, None]
    shape3 = (n_rows, sub_rows, n_cols)
    tot = length.reshape(shape3).sum(axis=1)
    mx = moment.reshape(shape3).sum(axis=1)
    my = (length * y).reshape(shape3).sum(axis=1)
    cov = np.clip(tot / sub_rows, 0.0, 1.0)
    centroid = np.zeros((2, n_rows, n_cols))
    ok = tot > 1e-12
    rows_idx, cols_idx = np.nonzero(ok)
    centroid[0][ok] = np.clip(my[ok] / tot[ok] - rows_idx, -0.5, 0.5)
    centroid[1][ok] = np.clip(mx[ok] / tot[ok] - cols_idx, -0.5, 0.5)
    return row0, col0, cov, centroid


# -------------------------------------------------------------------- samples
def _split_slab(lo: float, hi: float, max_len: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``[lo, hi]`` (index units) at voxel centres and faces and into pieces <= max_len."""
    cuts = np.arange(np.ceil(lo * 2.0), np.floor(hi * 2.0) + 1) / 2.0
    pts = np.unique(np.concatenate([[lo, hi], cuts[(cuts > lo) & (cuts < hi)]]))
    centres, lengths = [], []
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(1, int(np.ceil((b - a) / max_len - 1e-9)))
        edges = np.linspace(a, b, n + 1)
        centres.append((edges[:-1] + edges[1:]) / 2.0)
        lengths.append(np.diff(edges))
    return np.concatenate(centres), np.concatenate(lengths)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def auto_factor(volume_mm3: float, inplane_spacing: float) -> int:
    """Even in-plane supersampling factor for a structure of ``volume_mm3``.

    Sub-pixels of about 1/8 of the structure's equivalent-sphere radius,
    never finer than 0.2 mm nor coarser than half a voxel, and capped so
    that the structure gets at most about ``MAX_AUTO_SAMPLES`` samples.
    """
    r_eq = (3.0 * max(volume_mm3, 1e-6) / (4.0 * np.pi)) ** (1.0 / 3.0)
    h = min(max(r_eq / 8.0, 0.2), inplane_spacing / 2.0)
    f = int(np.ceil(inplane_spacing / h))
    f = min(max(2, f + (f % 2)), MAX_AUTO_FACTOR)
    # samples ~ volume / (sub-pixel area x piece length ~ 2 sub-pixels)
    while f > 2 and volume_mm3 * (f / inplane_spacing) ** 3 / 2 > MAX_AUTO_SAMPLES:
        f -= 2
    return f


def sample_structure(
    structure: Structure,
    grid: Grid,
    *,
    factor: "int | str" = "auto",
    nominal_spacing_mm: float | None = None,
    source: str = "",
    allow_odd: bool = False,
) -> StructureSamples:
    """Turn a structure's contours into weighted sub-voxel samples on ``grid``.

    Parameters
    ----------
    structure : Structure
        Closed planar contours in LPS mm.
    grid : Grid
        Target grid (usually the RTDOSE grid), axis-aligned.
    factor : int or "auto"
        In-plane supersampling factor (rounded up to even); "auto" adapts it
        to the structure's size (see :func:`auto_factor`).
    nominal_spacing_mm : float, optional
        Nominal contour spacing (CT slice thickness) for end caps and gap
        detection; default: the structure's median plane gap, or one grid
        spacing along the normal for a single-plane structure.
    source : str
        File name used in error messages.
    allow_odd : bool
        Keep an odd ``factor`` (e.g. 1 for occupancy-only work); by default
        it is rounded up to even so no sample straddles a voxel centre.

    Returns
    -------
    StructureSamples

    Raises
    ------
    StructureError
        Empty or zero-volume structure.
    GeometryError
        Oblique grid or contours not parallel to a grid plane.
    """
    axis, planes = contour_planes(structure, grid, source)
    others = [a for a in range(3) if a != axis]
    sp = np.asarray(grid.spacing)
    pos = np.array([p for p, _ in planes])
    notes: list[str] = []
    if nominal_spacing_mm is None:
        if pos.size > 1:
            nominal_spacing_mm = float(np.median(np.diff(pos))) * sp[axis]
        else:
            nominal_spacing_mm = float(sp[axis])
            notes.append(
                f"single contour plane: thickness taken as one grid spacing "
                f"({nominal_spacing_mm:.3g} mm); give the CT slice thickness to change it"
            )
    nominal = nominal_spacing_mm / sp[axis]
    lo, hi = slab_bounds(pos, nominal)
    if pos.size > 1:
        n_breaks = int(np.sum(np.diff(pos) > GAP_BREAK_FACTOR * nominal))
        if n_breaks:
            notes.append(f"{n_breaks} gap(s) between contour planes wider than "
                         f"{GAP_BREAK_FACTOR} x {nominal_spacing_mm:.3g} mm treated as breaks")

    # plane areas in mm^2 (polygons in index units of the two in-plane axes)
    px_area = sp[others[0]] * sp[others[1]]
    areas = []
    for _, polys in planes:
        a = sum(_polygon_area(p) for p in polys)  # upper bound with holes; for sizing only
        areas.append(a * px_area)
    volume_est = float(np.sum(np.asarray(areas) * (hi - lo) * sp[axis]))
    inplane = float(min(sp[others[0]], sp[others[1]]))
    if factor == "auto":
        f = auto_factor(volume_est, inplane)
    else:
        f = int(factor)
        if f < 1:
            raise ValueError(f"supersampling factor must be >= 1, got {factor}")
        if not allow_odd:
            f += f % 2
    # pieces at most two sub-pixels long keep sample boxes near cubic for small
    # structures; for large ones the cuts at voxel centres and faces already bind
    max_len = 2.0 / f * inplane / sp[axis]

    blocks: list[SampleBlock] = []
    sub_area = px_area / (f * f)
    volume = 0.0
    for (p, polys), a, b in zip(planes, lo, hi):
        fine = [(q + 0.5) * f - 0.5 for q in polys]
        r0, c0, cov, cen = polygon_coverage(fine)
        rr, cc = np.nonzero(cov > 1e-12)
        if rr.size == 0:
            continue
        zc, zl = _split_slab(a, b, max_len)
        # sample each sub-pixel at the centroid of its covered part
        blk = SampleBlock(axis_pos=zc, axis_len=zl,
                          rows=(rr + r0 + cen[0][rr, cc] + 0.5) / f - 0.5,
                          cols=(cc + c0 + cen[1][rr, cc] + 0.5) / f - 0.5,
                          area_mm2=cov[rr, cc] * sub_area)
        volume += float(blk.area_mm2.sum() * zl.sum() * sp[axis])
        blocks.append(blk)
    if not blocks or volume <= 0:
        raise StructureError(f"{source}: ROI {structure.name!r} encloses no area (degenerate)")
    return StructureSamples(
        grid=grid,
        blocks=blocks,
        volume_mm3=volume,
        factor=f,
        normal_axis=axis,
        n_planes=len(planes),
        notes=notes,
    )


def occupancy(samples: StructureSamples) -> np.ndarray:
    """Fractional occupancy (0-1) of every voxel of ``samples.grid``.

    Returns
    -------
    ndarray of float32, shape ``grid.shape``, indexed ``[k, j, i]``
        Volume of the structure inside each voxel divided by the voxel
        volume. Samples never straddle voxel faces, so this is exact up to
        the in-plane coverage accuracy.
    """
    g = samples.grid
    out = np.zeros(int(np.prod(g.shape)), dtype=np.float64)
    top = np.asarray(g.shape) - 1
    for blk in samples.blocks:
        idx, w, _, inside = samples.block_arrays(blk)
        vox = np.clip(np.floor(idx[inside] + 0.5).astype(np.int64), 0, top)
        flat = np.ravel_multi_index(vox.T, g.shape)
        out += np.bincount(flat, weights=w[inside], minlength=out.size)
    return (out / g.voxel_volume_mm3).reshape(g.shape).astype(np.float32)
