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
inside each plane's bounding box. Pixels wholly inside a plane's region are
kept apart (:attr:`SampleBlock.full`) and sampled without sub-pixels; the
dose code treats them with a fast path.

Degenerate contours
-------------------
Coverage is the even-odd area (a bow-tie keeps both lobes). A polygon too
small or too thin for the sub-rows is added with its exact area
(:func:`polygon_coverage`). A contour repeating another on the same plane
is dropped with a warning (:func:`drop_duplicate_contours`) instead of
cancelling it. Each block also carries its polygons; the vertices of its
region cut into trilinear cells (:meth:`SampleBlock.extreme_vertices`,
computed on demand for the planes that can hold an extreme), give
:func:`soars_dose.dose.compute.dose_extremes` the exact dose extremes over
the object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import EmptyStructureError, GeometryError, StructureError, warn
from .grid import Grid
from .polygons import duplicate_contours
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
#: A plane with fewer whole pixels keeps them as sub-pixels (the fast path costs more).
MIN_WHOLE_PIXELS = 16
#: Pixels per group of planes whose coverage is computed together (bounds the memory).
COVERAGE_BATCH_CELLS = 250_000


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
    full_origin : tuple of int
        Pixel index (row, column) of ``full[0, 0]``.
    full : ndarray of bool (rows, columns)
        Pixels wholly inside the plane's region. They are not among the
        sub-pixels above: each is sampled as four quadrant boxes (half a
        pixel wide, so each lies in one trilinear cell) times the pieces
        ``full_pos, full_len`` of the slab, cut at voxel centres and faces.
    full_pos, full_len : ndarray (nzf,)
        Pieces of the slab used for the whole pixels (index units).
    slab : (float, float)
        The slab's limits along the normal (index units).
    levels : ndarray (nl,)
        Positions along the normal (index units) bounding the pieces of the
        slab inside one trilinear cell: slab ends, voxel centres and grid
        faces in between, clipped to the grid.
    seg_a, seg_b : ndarray (s, 2) or None
        Start and end (row, column) of the pieces of the polygon edges cut at
        the lines of voxel centres and at the grid faces, inside the grid:
        each lies in one trilinear cell. None until
        :meth:`extreme_vertices` computes them.
    nodes : ndarray (m, 2) or None
        Crossings of voxel-centre lines and grid faces inside the region.
        With the segment ends they are all the vertices of the region cut
        into trilinear cells (see :func:`extreme_geometry`).
    polygons : list of ndarray (n, 2), optional
        The plane's polygons (continuous row, column indices), from which
        :meth:`extreme_vertices` computes the three arrays above.
    shape2 : (int, int)
        In-plane shape of the grid.
    cells_origin : tuple of int
        Voxel index (row, column) of ``cells[0, 0]``.
    cells : ndarray of bool (rows, columns), optional
        In-plane voxels (clamped to the grid) from which the trilinear
        interpolant at any point of the region is interpolated (see
        :func:`region_voxels`): the dose over the region lies between their
        lowest and highest dose on the slab's levels.
    """

    axis_pos: np.ndarray
    axis_len: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    area_mm2: np.ndarray
    full_origin: tuple[int, int] = (0, 0)
    full: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    full_pos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    full_len: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slab: tuple[float, float] = (0.0, 0.0)
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seg_a: np.ndarray | None = None
    seg_b: np.ndarray | None = None
    nodes: np.ndarray | None = None
    polygons: list | None = None
    shape2: tuple[int, int] = (0, 0)
    cells_origin: tuple[int, int] = (0, 0)
    cells: np.ndarray | None = None

    def extreme_vertices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(seg_a, seg_b, nodes)``, from :func:`extreme_geometry` on first use.

        The geometry is needed only for the planes that can hold the dose
        extremes, so it is computed on demand (and kept) from
        :attr:`polygons`; a block made without polygons has none.
        """
        if self.seg_a is None or self.seg_b is None or self.nodes is None:
            if self.polygons:
                self.seg_a, self.seg_b, self.nodes = extreme_geometry(self.polygons, self.shape2)
            else:
                self.seg_a, self.seg_b, self.nodes = np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2))
        return self.seg_a, self.seg_b, self.nodes

    @staticmethod
    def fill_extreme_vertices(blocks: list["SampleBlock"]) -> None:
        """Compute the missing :meth:`extreme_vertices` of many blocks in one go."""
        todo = [b for b in blocks if (b.seg_a is None or b.seg_b is None or b.nodes is None) and b.polygons]
        by_shape: dict = {}
        for b in todo:
            by_shape.setdefault(tuple(b.shape2), []).append(b)
        for shape2, group in by_shape.items():
            for b, geo in zip(group, extreme_geometry_planes([b.polygons for b in group], shape2)):
                b.seg_a, b.seg_b, b.nodes = geo

    @property
    def n_full(self) -> int:
        """Number of whole pixels."""
        return int(np.count_nonzero(self.full))

    @property
    def size(self) -> int:
        return self.axis_pos.size * self.rows.size + 4 * self.full_pos.size * self.n_full


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
        parts = [(block.axis_pos, block.axis_len, block.rows, block.cols,
                  block.area_mm2, 1.0 / self.factor)]
        if block.n_full:
            fr, fc = np.nonzero(block.full)
            fr = fr + block.full_origin[0]
            fc = fc + block.full_origin[1]
            q = np.array([-0.25, 0.25])
            qr = (fr[:, None, None] + q[None, :, None] + 0 * q[None, None, :]).ravel()
            qc = (fc[:, None, None] + 0 * q[None, :, None] + q[None, None, :]).ravel()
            px = self.grid.spacing[b] * self.grid.spacing[c]
            parts.append((block.full_pos, block.full_len, qr, qc,
                          np.full(qr.size, px / 4.0), 0.5))
        idx_l, w_l, box_l = [], [], []
        for zp, zl, rr, cc, area, side in parts:
            n2, nz = rr.size, zp.size
            idx = np.empty((n2 * nz, 3))
            idx[:, a] = np.repeat(zp, n2)
            idx[:, b] = np.tile(rr, nz)
            idx[:, c] = np.tile(cc, nz)
            box = np.empty((n2 * nz, 3))
            box[:, a] = np.repeat(zl, n2)
            box[:, b] = side
            box[:, c] = side
            idx_l.append(idx)
            box_l.append(box)
            w_l.append(np.outer(zl * self.grid.spacing[a], area).ravel())
        idx = np.concatenate(idx_l)
        box = np.concatenate(box_l)
        w = np.concatenate(w_l)
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
        raise EmptyStructureError(f"{source}: ROI {structure.name!r} has no contour (empty structure)")
    p_axis = _contour_normal_axis(structure, source)
    if not grid.is_axis_aligned():
        grid.patient_axis(0)  # raises the oblique-grid error
    axis = int(np.argmax(np.abs(grid.direction[:, p_axis])))
    others = [a for a in range(3) if a != axis]
    tol = PLANE_TOL_MM / grid.spacing[axis]
    # one transform for all contours (the per-contour calls dominate small structures)
    cut = np.cumsum([len(c) for c in structure.contours])[:-1]
    items = [(float(np.mean(idx[:, axis])), idx[:, others])
             for idx in np.split(grid.world_to_index(np.concatenate(structure.contours)), cut)]
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


def slab_bounds(positions: np.ndarray, nominal: float,
                end_caps: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper slab limits for sorted plane positions (same units as input).

    Neighbouring planes closer than ``GAP_BREAK_FACTOR * nominal`` share a
    half-way boundary; otherwise each side ends ``nominal / 2`` from its
    plane (the half-slice end cap), or at the plane itself with
    ``end_caps=False`` (the convention of planning systems that stop the
    object at its first and last contour).
    """
    positions = np.asarray(positions, dtype=float)
    half = nominal / 2.0 if end_caps else 0.0
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
    return polygon_coverage_planes([polygons], sub_rows)[0]


def _poly_layout(polygons: list[np.ndarray]):
    """Vertices of many polygons in one array: ``(vertices, start, length, next)``.

    ``next[v]`` is the vertex after ``v`` in its polygon (the last one wraps
    to the first), so edge ``v`` runs from ``vertices[v]`` to ``vertices[next[v]]``.
    """
    length = np.fromiter((len(p) for p in polygons), np.int64, len(polygons))
    start = np.cumsum(length) - length
    nxt = np.arange(1, int(length.sum()) + 1)
    nxt[start + length - 1] = start
    return np.concatenate(polygons), start, length, nxt


def polygon_coverage_planes(planes: list[list[np.ndarray]], sub_rows: int = ROW_SUBSAMPLES,
                            max_cells: int = COVERAGE_BATCH_CELLS):
    """:func:`polygon_coverage` of many planes at once (one result per plane, same order).

    The planes' pixel rows are stacked one under the other, so the scan
    lines of many planes are cut, sorted and binned by a few numpy calls;
    groups of planes with at most about ``max_cells`` pixels bound the
    memory. Each plane's result is the same as computing it alone.
    """
    n_pl = len(planes)
    if n_pl == 0:
        return []
    polys = [p for pl in planes for p in pl]
    per_plane = np.fromiter((len(pl) for pl in planes), np.int64, n_pl)
    v, start, length, nxt = _poly_layout(polys)
    p_start = start[np.cumsum(per_plane) - per_plane]  # first vertex of each plane
    row0 = np.floor(np.minimum.reduceat(v[:, 0], p_start) + 0.5).astype(np.int64)
    row1 = np.floor(np.maximum.reduceat(v[:, 0], p_start) + 0.5).astype(np.int64)
    col0 = np.floor(np.minimum.reduceat(v[:, 1], p_start) + 0.5).astype(np.int64)
    col1 = np.floor(np.maximum.reduceat(v[:, 1], p_start) + 0.5).astype(np.int64)
    n_rows, n_cols = row1 - row0 + 1, col1 - col0 + 1
    # The scan lines measure a polygon's area by the midpoint rule along the rows, which
    # loses (or grossly misjudges) a polygon crossing no sub-row; such a polygon, or one
    # that fits in a single pixel, is measured exactly instead (_add_tiny_polygons).
    rmin, rmax = np.minimum.reduceat(v[:, 0], start), np.maximum.reduceat(v[:, 0], start)
    cmin, cmax = np.minimum.reduceat(v[:, 1], start), np.maximum.reduceat(v[:, 1], start)
    one_pixel = ((np.floor(rmin + 0.5) == np.floor(rmax + 0.5))
                 & (np.floor(cmin + 0.5) == np.floor(cmax + 0.5)))
    tiny = (np.ceil((rmax + 0.5) * sub_rows - 0.5) <= np.ceil((rmin + 0.5) * sub_rows - 0.5)) | one_pixel
    poly_plane = np.repeat(np.arange(n_pl), per_plane)
    big_v = np.repeat(~tiny, length)
    e_plane = np.repeat(poly_plane, length)[big_v]
    starts, ends = v[big_v], v[nxt[big_v]]

    out: list = [None] * n_pl
    lo = 0
    while lo < n_pl:
        # the largest group of consecutive planes within the cell budget (at least one plane)
        hi, rows, width = lo + 1, int(n_rows[lo]), int(n_cols[lo]) + 2
        while hi < n_pl:
            w = max(width, int(n_cols[hi]) + 2)
            if (rows + int(n_rows[hi])) * w > max_cells:
                break
            rows, width, hi = rows + int(n_rows[hi]), w, hi + 1
        ea, eb = np.searchsorted(e_plane, [lo, hi])
        _coverage_group(starts[ea:eb], ends[ea:eb], e_plane[ea:eb] - lo, row0[lo:hi], col0[lo:hi],
                        n_rows[lo:hi], n_cols[lo:hi], sub_rows, out, lo)
        lo = hi
    for u in np.nonzero(tiny)[0]:
        pl = int(poly_plane[u])
        r0, c0, cov, cen = out[pl]
        own = range(int(np.sum(per_plane[:pl])), int(np.sum(per_plane[:pl + 1])))
        big = [polys[k] for k in own if not tiny[k]]
        _add_tiny_polygons([polys[u]], big, r0, c0, cov, cen)
    return out


def _coverage_group(starts, ends, pe, row0, col0, n_rows, n_cols, sub_rows, out, first) -> None:
    """Coverage of a group of planes whose pixel rows are stacked; fills ``out[first:]``."""
    n_pl = row0.size
    row_off = np.cumsum(n_rows) - n_rows  # first stacked row of each plane
    nr_all = int(n_rows.sum())
    width = int(n_cols.max()) + 2
    ncl = int(n_cols.max())
    cov = np.zeros((nr_all, ncl))
    centroid = np.zeros((2, nr_all, ncl))
    r0, c0 = starts[:, 0] - row0[pe], starts[:, 1] - col0[pe]
    r1, c1 = ends[:, 0] - row0[pe], ends[:, 1] - col0[pe]
    ymin, ymax = np.minimum(r0, r1), np.maximum(r0, r1)
    # sub-row t sits at y_t = -0.5 + (t + 0.5) / sub_rows; an edge crosses
    # the sub-rows with ymin <= y_t < ymax (half-open: vertices count once).
    t_lo = np.ceil((ymin + 0.5) * sub_rows - 0.5).astype(np.int64)
    t_hi = np.ceil((ymax + 0.5) * sub_rows - 0.5).astype(np.int64)
    n_cross = np.clip(t_hi - t_lo, 0, None)
    total = int(n_cross.sum())
    if total:
        edge = np.repeat(np.arange(r0.size), n_cross)
        first_x = np.repeat(np.cumsum(n_cross) - n_cross, n_cross)
        t = t_lo[edge] + (np.arange(total) - first_x)
        y = -0.5 + (t + 0.5) / sub_rows
        dr = r1[edge] - r0[edge]
        x = c0[edge] + (y - r0[edge]) * (c1[edge] - c0[edge]) / dr
        # stacked sub-row: the planes' sub-rows one after the other
        ts = t + row_off[pe[edge]] * sub_rows
        order = np.lexsort((x, ts))
        t, ts, x, ep = t[order], ts[order], x[order], pe[edge][order]
        row_start = np.searchsorted(ts, ts, side="left")
        sign = np.where((np.arange(total) - row_start) % 2 == 0, 1.0, -1.0)
        # F(e) = sum_j sign_j * (e - x_j)_+ is the covered length left of e;
        # evaluate it at the column edges e_q = q - 0.5 (q = 0..n_cols).
        b = np.clip(np.floor(x + 0.5).astype(np.int64) + 1, 0, n_cols[ep] + 1)
        # Summing over the sub-rows of a pixel row commutes with the cumulative sums
        # along the columns, so the crossings are binned by pixel row directly (with
        # the sub-row height y_t as an extra weight for the row moment): the dense
        # arrays are n_rows x width instead of n_rows * sub_rows x width.
        flat = (ts // sub_rows) * width + b
        yt = -0.5 + (t + 0.5) / sub_rows
        size = nr_all * width
        sx = sign * x

        def binned(w):
            a = np.bincount(flat, weights=w, minlength=size).reshape(nr_all, width)
            return np.cumsum(a, axis=1)[:, : ncl + 1]

        s0, s1, s2 = binned(sign), binned(sx), binned(sx * x)
        y0, y1 = binned(sign * yt), binned(sx * yt)
        e = np.arange(ncl + 1) - 0.5
        # covered length left of each edge, its first moment along the columns and rows
        tot = np.diff(e * s0 - s1, axis=1)
        mx = np.diff(0.5 * (e * e * s0 - s2), axis=1)
        my = np.diff(e * y0 - y1, axis=1)
        cov = np.clip(tot / sub_rows, 0.0, 1.0)
        ok = tot > 1e-12
        rows_idx, cols_idx = np.nonzero(ok)
        rows_local = rows_idx - np.repeat(row_off, n_rows)[rows_idx]
        centroid[0][ok] = np.clip(my[ok] / tot[ok] - rows_local, -0.5, 0.5)
        centroid[1][ok] = np.clip(mx[ok] / tot[ok] - cols_idx, -0.5, 0.5)
    for k in range(n_pl):
        rs = slice(int(row_off[k]), int(row_off[k] + n_rows[k]))
        cs = slice(0, int(n_cols[k]))
        out[first + k] = (int(row0[k]), int(col0[k]), cov[rs, cs], centroid[:, rs, cs])


def _inside_even_odd(pts: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    """Even-odd inside test of points ``(m, 2)`` against polygons (same units)."""
    inside = np.zeros(len(pts), dtype=bool)
    y, x = pts[:, 0][:, None], pts[:, 1][:, None]
    for poly in polygons:
        r0, c0 = poly[:, 0][None, :], poly[:, 1][None, :]
        r1, c1 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
        crosses = (r0 <= y) != (r1 <= y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = c0 + (y - r0) * (c1 - c0) / (r1 - r0)
        inside ^= (np.count_nonzero(crosses & (xc > x), axis=1) % 2).astype(bool)
    return inside


def _add_tiny_polygons(tiny, big, row0, col0, cov, centroid) -> None:
    """Add tiny polygons (see :func:`polygon_coverage_planes`) to ``cov`` with their exact area.

    Each is added whole (or removed, when it lies in an odd number of the
    other polygons: a tiny hole) to the pixel holding its centroid, which
    also moves that pixel's sample point towards it. Its area is at most one
    pixel or one sub-row high, so splitting it between pixels would change
    nothing measurable.
    """
    for p in tiny:
        r, c = p[:, 0], p[:, 1]
        cross = r * np.roll(c, -1) - np.roll(r, -1) * c
        a2 = float(cross.sum())
        if abs(a2) > 1e-15:
            cr = float(np.sum((r + np.roll(r, -1)) * cross)) / (3.0 * a2)
            cc = float(np.sum((c + np.roll(c, -1)) * cross)) / (3.0 * a2)
        else:
            cr, cc = float(r.mean()), float(c.mean())
        area = abs(a2) / 2.0
        m = min(max(int(np.floor(cr + 0.5)) - row0, 0), cov.shape[0] - 1)
        q = min(max(int(np.floor(cc + 0.5)) - col0, 0), cov.shape[1] - 1)
        hole = bool(_inside_even_odd(np.array([[cr, cc]]), big)[0]) if big else False
        if hole:
            cov[m, q] = max(cov[m, q] - area, 0.0)
            continue
        old = cov[m, q]
        new = min(old + area, 1.0)
        if new > 0:
            off = np.array([cr - (m + row0), cc - (q + col0)])
            centroid[:, m, q] = np.clip((centroid[:, m, q] * old + off * (new - old)) / new, -0.5, 0.5)
        cov[m, q] = new


# ------------------------------------------------------------------ extremes
def extreme_geometry(polygons: list[np.ndarray], shape2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices of a plane's region cut into the trilinear cells of a grid.

    The trilinear interpolant of a dose is multilinear inside each cell
    between voxel centres (and constant along an axis between the outermost
    centre and the grid face), so over the region of one plane it reaches
    its extremes at the vertices of the region cut into cells, or, only
    where it is not linear in-plane, inside a cut edge piece (it is
    quadratic along a slanted segment within one cell).

    Parameters
    ----------
    polygons : list of ndarray (n, 2)
        The plane's polygons in continuous (row, column) indices, combined
        by the even-odd rule.
    shape2 : (int, int)
        In-plane shape of the grid.

    Returns
    -------
    seg_a, seg_b : ndarray (s, 2)
        Pieces of the polygon edges cut at integer lines (voxel centres) and
        at the grid faces ``-0.5`` and ``n - 0.5``; only pieces inside the
        grid. Their ends include every polygon vertex and every crossing of
        an edge with a cell line.
    nodes : ndarray (m, 2)
        Crossings of the cell lines inside the region and the grid.
    """
    return extreme_geometry_planes([polygons], shape2)[0]


def extreme_geometry_planes(planes: list[list[np.ndarray]], shape2) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`extreme_geometry` of many planes at once (one result per plane, same order).

    The edges of all planes are cut together and the lattice nodes of all
    planes are found by one even-odd count, so the cost per plane is that
    of the arithmetic rather than of the numpy calls.
    """
    lim = [(-0.5, float(n) - 0.5) for n in shape2]
    n_pl = len(planes)
    # all edges at once: edge u runs from p0[u] to p1[u] and belongs to plane pid[u]
    p0 = np.vstack([np.vstack(polys) for polys in planes])
    p1 = np.vstack([np.roll(p, -1, axis=0) for polys in planes for p in polys])
    pid = np.repeat(np.arange(n_pl), [sum(len(p) for p in polys) for polys in planes])
    d = p1 - p0
    ne = len(p0)
    e_l, t_l = [np.arange(ne), np.arange(ne)], [np.zeros(ne), np.ones(ne)]
    for ax in range(2):
        lo = np.minimum(p0[:, ax], p1[:, ax])
        hi = np.maximum(p0[:, ax], p1[:, ax])
        k0 = np.ceil(lo).astype(np.int64)
        n = np.clip(np.floor(hi).astype(np.int64) - k0 + 1, 0, None)
        e = np.repeat(np.arange(ne), n)
        first = np.repeat(np.cumsum(n) - n, n)
        line = (k0[e] + np.arange(e.size) - first).astype(float)
        for face in lim[ax]:
            hit = np.nonzero((lo < face) & (hi > face))[0]  # only edges crossing a grid face
            line = np.concatenate([line, np.full(hit.size, face)])
            e = np.concatenate([e, hit])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (line - p0[e, ax]) / d[e, ax]
        ok = np.isfinite(t) & (t > 0) & (t < 1)
        e_l.append(e[ok])
        t_l.append(t[ok])
    e_all, t_all = np.concatenate(e_l), np.concatenate(t_l)
    order = np.lexsort((t_all, e_all))
    e_all, t_all = e_all[order], t_all[order]
    same = e_all[1:] == e_all[:-1]
    e_s = e_all[:-1][same]
    ta, tb = t_all[:-1][same], t_all[1:][same]
    keep = tb - ta > 1e-12
    e_s, ta, tb = e_s[keep], ta[keep], tb[keep]
    seg_a = p0[e_s] + ta[:, None] * d[e_s]
    seg_b = p0[e_s] + tb[:, None] * d[e_s]
    mid = (seg_a + seg_b) / 2.0
    ins = ((mid[:, 0] >= lim[0][0]) & (mid[:, 0] <= lim[0][1])
           & (mid[:, 1] >= lim[1][0]) & (mid[:, 1] <= lim[1][1]))
    seg_a, seg_b, seg_p = seg_a[ins], seg_b[ins], pid[e_s][ins]
    nodes, node_p = _lattice_nodes_inside(p0, p1, pid, n_pl, lim)
    # e_s is sorted, so the segments (and the nodes, generated plane by plane) are grouped by plane
    cut_s = np.searchsorted(seg_p, np.arange(1, n_pl))
    cut_n = np.searchsorted(node_p, np.arange(1, n_pl))
    return list(zip(np.split(seg_a, cut_s), np.split(seg_b, cut_s), np.split(nodes, cut_n)))


def _cell_lines(lo: float, hi: float, lim: tuple[float, float]) -> np.ndarray:
    """Integer lines and grid faces in ``[lo, hi]`` that lie inside ``lim``."""
    v = np.arange(np.ceil(lo), np.floor(hi) + 1, dtype=float)
    v = np.concatenate([v, [lim[0], lim[1]]])
    v = v[(v >= max(lo, lim[0])) & (v <= min(hi, lim[1]))]
    return np.unique(v)


def _lattice_nodes_inside(p0: np.ndarray, p1: np.ndarray, pid: np.ndarray, n_pl: int, lim):
    """Crossings of the cell lines strictly inside each plane's polygons (even-odd).

    ``p0, p1`` are the edges of all planes, ``pid`` the plane of each edge.
    Returns the nodes ``(m, 2)`` and their planes ``(m,)``, grouped by plane.
    """
    none = (np.zeros((0, 2)), np.zeros(0, np.int64))
    rmin = np.full(n_pl, np.inf); rmax = np.full(n_pl, -np.inf)
    cmin = np.full(n_pl, np.inf); cmax = np.full(n_pl, -np.inf)
    np.minimum.at(rmin, pid, p0[:, 0]); np.maximum.at(rmax, pid, p0[:, 0])
    np.minimum.at(cmin, pid, p0[:, 1]); np.maximum.at(cmax, pid, p0[:, 1])
    rows = _cell_lines(float(rmin.min()), float(rmax.max()), lim[0])
    cols = _cell_lines(float(cmin.min()), float(cmax.max()), lim[1])
    if rows.size == 0 or cols.size == 0:
        return none
    nr = rows.size
    ymin = np.minimum(p0[:, 0], p1[:, 0])
    ymax = np.maximum(p0[:, 0], p1[:, 0])
    # rows crossed by each edge, half-open [ymin, ymax) so vertices count once
    a = np.searchsorted(rows, ymin, side="left")
    b = np.searchsorted(rows, ymax, side="left")
    n = np.clip(b - a, 0, None)
    total = int(n.sum())
    if total == 0:
        return none
    e = np.repeat(np.arange(len(p0)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    ri = a[e] + (np.arange(total) - first)
    y = rows[ri]
    x = p0[e, 1] + (y - p0[e, 0]) * (p1[e, 1] - p0[e, 1]) / (p1[e, 0] - p0[e, 0])
    # one group per (plane, row) that has crossings; groups are laid out along one key
    code = pid[e].astype(np.int64) * nr + ri
    groups, gid = np.unique(code, return_inverse=True)
    span = float(cols[-1] - cols[0]) + 10.0 + float(np.ptp(x))
    base = min(float(cols[0]), float(x.min())) - 1.0
    key = np.sort(gid * span + (x - base))
    # queries: each plane's lattice lines within its own box
    ra = np.searchsorted(rows, np.maximum(rmin, lim[0][0]), side="left")
    rb = np.searchsorted(rows, np.minimum(rmax, lim[0][1]), side="right")
    ca = np.searchsorted(cols, np.maximum(cmin, lim[1][0]), side="left")
    cb = np.searchsorted(cols, np.minimum(cmax, lim[1][1]), side="right")
    nrp, ncp = np.clip(rb - ra, 0, None), np.clip(cb - ca, 0, None)
    size = nrp * ncp
    tot_q = int(size.sum())
    if tot_q == 0:
        return none
    qp = np.repeat(np.arange(n_pl), size)
    k = np.arange(tot_q) - np.repeat(np.cumsum(size) - size, size)
    ncq = ncp[qp]
    qr = ra[qp] + k // ncq
    qc = ca[qp] + k % ncq
    qcode = qp.astype(np.int64) * nr + qr
    g = np.searchsorted(groups, qcode)
    present = (g < groups.size) & (groups[np.minimum(g, groups.size - 1)] == qcode)
    qk = g * span + (cols[qc] - base)
    below = np.searchsorted(key, qk, side="left")
    row_start = np.searchsorted(key, g * span, side="left")
    inside = present & ((below - row_start) % 2 == 1)
    return np.c_[rows[qr[inside]], cols[qc[inside]]], qp[inside]


def region_voxels(polygons: list[np.ndarray], sub_r: np.ndarray, sub_c: np.ndarray,
                  full_origin: tuple[int, int], full: np.ndarray, shape2) -> tuple[tuple[int, int], np.ndarray]:
    """In-plane voxels that the trilinear dose of any point of a plane's region depends on.

    A point ``p`` of the region is either within ``1 / 8`` pixel (half a
    sub-row gap for any factor ``f >= 1``) of a sub-row point of the region,
    whose sub-pixel then has a positive coverage, or that short segment
    crosses a polygon edge, which is sampled every half pixel (vertices
    included), so a sample lies within 3/8 pixel of ``p`` along each axis. Either way the voxels
    ``floor(p), floor(p) + 1`` that interpolate ``p`` (coordinates clamped to
    the grid) lie within one voxel of the pixel of that sub-pixel, whole
    pixel or edge sample: the union of those pixels, clamped to the grid and
    dilated by one, holds every voxel the region's dose is made of.

    Parameters
    ----------
    polygons : list of ndarray (n, 2)
        The plane's polygons in continuous (row, column) pixel indices.
    sub_r, sub_c : ndarray of int
        Pixel indices of the sub-pixels with positive coverage.
    full_origin, full
        Whole pixels (see :class:`SampleBlock`).
    shape2 : (int, int)
        In-plane shape of the grid.

    Returns
    -------
    origin : (int, int)
        Voxel index of ``mask[0, 0]``.
    mask : ndarray of bool
    """
    return region_voxels_planes([polygons], [sub_r], [sub_c], [full_origin], [full], shape2)[0]


def region_voxels_planes(planes, sub_r, sub_c, full_origin, full, shape2) -> list:
    """:func:`region_voxels` of many planes at once (lists of its arguments, one item per plane).

    The planes' masks are laid out one under the other, each with a spare
    row and column on every side, so that one dilation serves them all.
    """
    n_pl = len(planes)
    polys = [p for pl in planes for p in pl]
    v, start, length, nxt = _poly_layout(polys)
    vplane = np.repeat(np.repeat(np.arange(n_pl), [len(pl) for pl in planes]), length)
    d = v[nxt] - v
    n = np.ceil(np.abs(d).max(axis=1) / 0.5).astype(np.int64) + 1
    e = np.repeat(np.arange(len(v)), n)
    k = np.arange(e.size) - np.repeat(np.cumsum(n) - n, n)
    t = k / np.repeat(n - 1, n).clip(1)
    pts = v[e] + t[:, None] * d[e]
    r_l = [np.floor(pts[:, 0] + 0.5).astype(np.int64)]
    c_l = [np.floor(pts[:, 1] + 0.5).astype(np.int64)]
    p_l = [vplane[e]]
    for u in range(n_pl):
        r_l.append(np.asarray(sub_r[u], np.int64))
        c_l.append(np.asarray(sub_c[u], np.int64))
        p_l.append(np.full(r_l[-1].size, u))
        if full[u].size and full[u].any():
            fr, fc = np.nonzero(full[u])
            r_l.append(fr + full_origin[u][0])
            c_l.append(fc + full_origin[u][1])
            p_l.append(np.full(fr.size, u))
    r = np.clip(np.concatenate(r_l), 0, shape2[0] - 1)
    c = np.clip(np.concatenate(c_l), 0, shape2[1] - 1)
    pid = np.concatenate(p_l)
    rmin = np.full(n_pl, shape2[0]); rmax = np.full(n_pl, -1)
    cmin = np.full(n_pl, shape2[1]); cmax = np.full(n_pl, -1)
    np.minimum.at(rmin, pid, r); np.maximum.at(rmax, pid, r)
    np.minimum.at(cmin, pid, c); np.maximum.at(cmax, pid, c)
    r0, c0 = np.maximum(rmin - 1, 0), np.maximum(cmin - 1, 0)
    r1, c1 = np.minimum(rmax + 1, shape2[0] - 1), np.minimum(cmax + 1, shape2[1] - 1)
    h = r1 - r0 + 3  # one spare row/column each side
    off = np.cumsum(h) - h
    width = int((c1 - c0).max()) + 3
    mark = np.zeros((int(h.sum()), width), bool)
    mark[off[pid] + r - r0[pid] + 1, c - c0[pid] + 1] = True
    dil = mark.copy()
    dil[1:] |= mark[:-1]
    dil[:-1] |= mark[1:]
    m2 = dil.copy()
    m2[:, 1:] |= dil[:, :-1]
    m2[:, :-1] |= dil[:, 1:]
    return [((int(r0[u]), int(c0[u])),
             m2[off[u] + 1:off[u] + h[u] - 1, 1:int(c1[u] - c0[u]) + 2]) for u in range(n_pl)]


def slab_levels(lo: float, hi: float, n: int) -> np.ndarray:
    """Slab ends and the voxel centres and faces between them, clipped to ``[-0.5, n - 0.5]``."""
    a, b = max(lo, -0.5), min(hi, n - 0.5)
    if b < a:
        return np.zeros(0)
    cuts = np.arange(np.ceil(a * 2.0), np.floor(b * 2.0) + 1) / 2.0
    return np.unique(np.concatenate([[a, b], cuts]))


# ---------------------------------------------------------------- duplicates
def drop_duplicate_contours(structure: Structure, source: str = "",
                            tol_mm: float = PLANE_TOL_MM) -> tuple[Structure, list[str]]:
    """Remove contours that repeat another contour of the same plane.

    Under the even-odd rule a contour exported twice cancels itself (the
    region vanishes), so a repeat (the same polygon within ``tol_mm`` mm,
    whichever vertex it starts from and in either direction:
    :func:`soars_dose.polygons.duplicate_contours`) is dropped; a different
    contour inside another (a hole) is kept.

    Returns
    -------
    structure : Structure
        The same object when nothing was dropped, else a copy without the repeats.
    messages : list of str
        One per dropped contour, naming the ROI, the plane (LPS mm) and ``source``.
    """
    cs = structure.contours
    if len(cs) < 2:
        return structure, []
    axis = int(np.argmin(np.ptp(cs[0], axis=0)))
    pos = np.array([float(np.mean(c[:, axis])) for c in cs])
    # the one definition of a repeated contour (polygons.py), also behind the reader's warning
    drop = {repeat for _, repeat in duplicate_contours(cs, tol_mm)}
    if not drop:
        return structure, []
    name = "xyz"[axis]
    where = f"{source}: " if source else ""
    msgs = [f"{where}ROI {structure.name!r}: contour {j + 1} on plane {name} = {pos[j]:.2f} mm repeats "
            f"another contour of that plane (within {tol_mm} mm); the repeat is dropped, not "
            "cancelled by the even-odd rule" for j in sorted(drop)]
    kept = [c for k, c in enumerate(cs) if k not in drop]
    return replace(structure, contours=kept), msgs


# -------------------------------------------------------------------- samples
def _split_slab(lo: float, hi: float, max_len: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``[lo, hi]`` (index units) at voxel centres and faces and into pieces <= max_len."""
    return _split_slabs(np.array([lo]), np.array([hi]), max_len)[0]


def _split_slabs(lo: np.ndarray, hi: np.ndarray, max_len: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`_split_slab` of many slabs ``[lo[u], hi[u]]`` at once: ``(centres, lengths)`` per slab."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    n_sl = lo.size
    # cuts at half-integers: ceil(2 lo) / 2 .. floor(2 hi) / 2, kept strictly inside the slab
    k0 = np.ceil(lo * 2.0)
    n_c = np.clip(np.floor(hi * 2.0) - k0 + 1, 0, None).astype(np.int64)
    cs = np.repeat(np.arange(n_sl), n_c)
    cuts = (k0[cs] + (np.arange(cs.size) - np.repeat(np.cumsum(n_c) - n_c, n_c))) / 2.0
    inner = (cuts > lo[cs]) & (cuts < hi[cs])
    cuts, cs = cuts[inner], cs[inner]
    # points of each slab in order: lo, its inner cuts, hi (a zero-length slab has one point)
    n_in = np.bincount(cs, minlength=n_sl)
    n_pts = n_in + np.where(hi > lo, 2, 1)
    p_off = np.cumsum(n_pts) - n_pts
    pts = np.empty(int(n_pts.sum()))
    pts[p_off] = lo
    pts[p_off + n_pts - 1] = hi
    pts[np.repeat(p_off + 1, n_in) + (np.arange(cs.size) - np.repeat(np.cumsum(n_in) - n_in, n_in))] = cuts
    # spans between consecutive points of the same slab
    last = np.zeros(pts.size, bool)
    last[p_off + n_pts - 1] = True
    first_pt = np.nonzero(~last)[0]
    span = pts[first_pt + 1] - pts[first_pt]
    n = np.maximum(1, np.ceil(span / max_len - 1e-9).astype(np.int64))
    seg = np.repeat(np.arange(span.size), n)
    k = np.arange(seg.size) - np.repeat(np.cumsum(n) - n, n)
    length = (span / n)[seg]
    start = pts[first_pt][seg] + k * length
    centre = start + length / 2.0
    # pieces per slab: each slab has n_pts - 1 spans
    span_slab = np.repeat(np.arange(n_sl), n_pts - 1)
    cut = np.cumsum(np.bincount(np.repeat(span_slab, n), minlength=n_sl))[:-1]
    return list(zip(np.split(centre, cut), np.split(length, cut)))


def _sizing_areas(planes) -> np.ndarray:
    """Area (index units squared) of each plane's polygons for choosing the factor only.

    The sum of the polygons' shoelace areas, except for a self-intersecting
    polygon whose lobes cancel (a symmetric bow-tie has signed area 0): half its
    box. Not the coverage (that is :func:`polygon_coverage_planes`).
    """
    polys = [q for _, pl in planes for q in pl]
    v, start, _, nxt = _poly_layout(polys)
    x, y = v[:, 0], v[:, 1]
    a = 0.5 * np.abs(np.add.reduceat(x * y[nxt], start) - np.add.reduceat(y * x[nxt], start))
    box_area = ((np.maximum.reduceat(x, start) - np.minimum.reduceat(x, start))
                * (np.maximum.reduceat(y, start) - np.minimum.reduceat(y, start)))
    a = np.where(a >= 0.05 * box_area, a, 0.5 * box_area)
    per_plane = np.fromiter((len(pl) for _, pl in planes), np.int64, len(planes))
    return np.add.reduceat(a, np.cumsum(per_plane) - per_plane)


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


def _whole_pixels(cov: np.ndarray, r0: int, c0: int, f: int, shape2):
    """Split sub-pixel coverage into whole pixels and the rest.

    Returns ``(origin, full, rest)``: the pixel index of ``full[0, 0]``, the
    mask of pixels inside the grid whose ``f x f`` sub-pixels are all
    covered, and ``cov`` with those sub-pixels set to 0.
    """
    if f < 2:
        return (0, 0), np.zeros((0, 0), bool), cov
    pr0, pc0 = r0 // f, c0 // f
    off_r, off_c = r0 - pr0 * f, c0 - pc0 * f
    n_pr = -(-(off_r + cov.shape[0]) // f)
    n_pc = -(-(off_c + cov.shape[1]) // f)
    pad = np.zeros((n_pr * f, n_pc * f))
    pad[off_r:off_r + cov.shape[0], off_c:off_c + cov.shape[1]] = cov
    full = (pad.reshape(n_pr, f, n_pc, f) >= 1.0 - 1e-9).all(axis=(1, 3))
    pr = np.arange(pr0, pr0 + n_pr)[:, None]
    pc = np.arange(pc0, pc0 + n_pc)[None, :]
    full &= (pr >= 0) & (pr < shape2[0]) & (pc >= 0) & (pc < shape2[1])
    if np.count_nonzero(full) < MIN_WHOLE_PIXELS:
        return (0, 0), np.zeros((0, 0), bool), cov
    sub = np.repeat(np.repeat(full, f, axis=0), f, axis=1)
    sub = sub[off_r:off_r + cov.shape[0], off_c:off_c + cov.shape[1]]
    rest = np.where(sub, 0.0, cov)
    return (int(pr0), int(pc0)), full, rest


def sample_structure(
    structure: Structure,
    grid: Grid,
    *,
    factor: "int | str" = "auto",
    nominal_spacing_mm: float | None = None,
    source: str = "",
    allow_odd: bool = False,
    end_caps: bool = True,
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
    end_caps : bool
        Half-slice end caps at the first and last plane and beside breaks
        (default). False stops the object at those planes (see
        :func:`slab_bounds`); a plane with no joined neighbour then has no
        thickness and contributes nothing.

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
    structure, dup_msgs = drop_duplicate_contours(structure, source)
    for m in dup_msgs:
        warn(m)
    axis, planes = contour_planes(structure, grid, source)
    others = [a for a in range(3) if a != axis]
    sp = np.asarray(grid.spacing)
    pos = np.array([p for p, _ in planes])
    notes: list[str] = list(dup_msgs)
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
    lo, hi = slab_bounds(pos, nominal, end_caps)
    if pos.size > 1:
        n_breaks = int(np.sum(np.diff(pos) > GAP_BREAK_FACTOR * nominal))
        if n_breaks:
            notes.append(f"{n_breaks} gap(s) between contour planes wider than "
                         f"{GAP_BREAK_FACTOR} x {nominal_spacing_mm:.3g} mm treated as breaks")

    # plane areas in mm^2 (polygons in index units of the two in-plane axes)
    px_area = sp[others[0]] * sp[others[1]]
    areas = _sizing_areas(planes) * px_area
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
    shape2 = (grid.shape[others[0]], grid.shape[others[1]])
    # an isolated plane without end caps has no thickness
    kept = [(polys, a, b) for (_, polys), a, b in zip(planes, lo, hi) if b - a > 1e-12]
    coverage = polygon_coverage_planes([[(q + 0.5) * f - 0.5 for q in polys] for polys, _, _ in kept])
    # the per-plane steps run on all planes at once where they can: their numpy calls,
    # not their arithmetic, dominate small structures
    live = []
    for (polys, a, b), (r0, c0, cov, cen) in zip(kept, coverage):
        full_origin, full, cov = _whole_pixels(cov, r0, c0, f, shape2)
        rr, cc = np.nonzero(cov > 1e-12)
        if rr.size == 0 and not full.any():
            continue
        live.append((polys, a, b, r0, c0, cov, cen, full_origin, full, rr, cc))
    if live:
        cells_all = region_voxels_planes([x[0] for x in live], [(x[9] + x[3]) // f for x in live],
                                         [(x[10] + x[4]) // f for x in live], [x[7] for x in live],
                                         [x[8] for x in live], shape2)
        slab_lo = np.array([x[1] for x in live])
        slab_hi = np.array([x[2] for x in live])
        pieces = _split_slabs(slab_lo, slab_hi, max_len)
        full_pieces = _split_slabs(slab_lo, slab_hi, 0.5)
    for u, (polys, a, b, r0, c0, cov, cen, full_origin, full, rr, cc) in enumerate(live):
        (zc, zl), (fz, fl) = pieces[u], full_pieces[u]
        cells_origin, cells = cells_all[u]
        # sample each sub-pixel at the centroid of its covered part
        blk = SampleBlock(axis_pos=zc, axis_len=zl,
                          rows=(rr + r0 + cen[0][rr, cc] + 0.5) / f - 0.5,
                          cols=(cc + c0 + cen[1][rr, cc] + 0.5) / f - 0.5,
                          area_mm2=cov[rr, cc] * sub_area,
                          full_origin=full_origin, full=full, full_pos=fz, full_len=fl,
                          slab=(float(a), float(b)),
                          levels=slab_levels(a, b, grid.shape[axis]),
                          polygons=polys, shape2=shape2, cells_origin=cells_origin, cells=cells)
        area = float(blk.area_mm2.sum()) + blk.n_full * px_area
        volume += area * (b - a) * sp[axis]
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
