"""What a structure is between its contour planes: the stack or a shape-based interpolation.

Two modes (``Settings.between_planes``, ``--between-planes``):

``"stack"`` (default)
    The planning-system convention of :mod:`soars_dose.rasterize`: each
    plane's region is extruded half-way to its neighbours and half a nominal
    spacing beyond the last plane. The structure is returned unchanged.

``"interpolate"``
    The anatomy the contours sample: :func:`reconstruct` builds a denser
    contour stack whose intermediate planes come from shape-based
    interpolation of the planar regions, with end caps that continue the
    same field, and hands it to the unchanged kernel with the dense spacing
    as nominal spacing, so that the kernel's half-slice end caps are half a
    *dense* spacing and no volume is counted twice.

The reconstruction
------------------
Coordinates are DICOM patient coordinates (LPS, mm). The contour normal is
the patient axis along which every contour is flat; ``(u, v)`` are the two
other patient axes in increasing order. Runs of planes closer than
``GAP_BREAK_FACTOR`` nominal spacings (the kernel's rule) are reconstructed
independently, so a skipped slice stays a break.

*Signed distance fields.* Each plane's region (even-odd rule, holes kept) is
rasterised by its exact pixel coverage on a fine square raster (pixel
``h <= 0.25 mm``, finer for small structures, coarser only when the raster
would exceed ``MAX_RASTER_SIDE`` pixels) and turned into a signed distance
field ``phi`` (mm, negative inside) with the Euclidean distance transform,
the half-pixel offset between pixel centres and the boundary removed. This
is the shape-based interpolation of Raya & Udupa (1990) and Herman et al.
(1992), with Euclidean rather than chamfer distances.

*Between planes* the field is interpolated per pixel along the normal by a
cubic Hermite curve whose slopes are the non-uniform three-point
derivatives of the neighbouring planes (Catmull-Rom; at the ends of a run
the slope of the end-cap profile below). Linear interpolation of the field
(the original method) joins concentric circles by straight cones, which
undercuts a convex profile by the sag of its chord, about ``g^2 / (8 R)``
(0.11 mm for a 10 mm radius at a 3 mm gap, i.e. about 1-2 % of the area
near the equator); the cubic follows the curvature of the profile.
The region on an intermediate plane is the zero level set of the field,
traced by marching squares (scikit-image ``find_contours``). The original
contours are kept as they are on their own planes.

*End caps.* Beyond the last plane of a run nothing is drawn, but the
object ends before the next plane (else it would have been contoured
there). The cap continues the field of the last plane. Its *inradius
profile* ``r(t)`` (``t`` mm beyond the last plane) is known on the last
planes: ``r = rho`` (depth of the last region, its largest inside
distance) on the last plane, and ``rho`` plus how far each previous
plane's boundary lies outside the last boundary where that boundary
touches the deepest point. ``r^2`` is fitted by a quadratic in ``t``
through the last three planes (a line through two). This is exact for the
ends of a sphere (``r^2 = R^2 - z^2``), of a cone along the normal (``r``
linear) and of a cylinder lying in the plane (half chord
``w^2 = R^2 - z^2``), and it is how a smooth closed surface behaves near
its pole. Where the fitted ``r^2`` falls to zero within one nominal
spacing, the object closes there (pole, apex, edge); where it would only
close beyond two spacings, the object was cut off somewhere within the
next spacing (a flat end) and the cap reaches half a nominal spacing, the
planning-system convention; in between, the cap length is blended
linearly so that it is continuous in the fit. Within the cap the field is
``phi_n + tau(t) * (ds + s(x)) / 2``, with ``tau`` the profile's radius
loss over its secant rate ``ds`` (mm per mm, from the last gap) and
``s(x)`` the per-pixel secant of the field over the last gap: ``ds`` alone
erodes the whole boundary with the profile, ``s(x)`` alone keeps faces
that did not move between the last planes (the flat ends of a strip) but
also the corners the receding faces should sweep away. Both agree for
spheres and cones; the mean halves the error of either on mixed
boundaries. Growth (a widening flat end, as a cone's base) is bounded by
1.5 times the last gap's. The profile's slope at the last plane also
gives the Hermite slope there, so the last gap bends into the cap.

*Dense stack.* Each gap is cut into ``ceil(gap / DENSE_TARGET_MM)`` equal
parts (at least two); each cap is covered by planes no further apart than
the dense spacing ``delta``, the last one ``delta / 2`` before the cap's
end, so the kernel's half-dense-spacing end cap lands on it. A cap shorter
than ``delta / 2`` gets no plane and is counted as ``delta / 2`` (a volume
error below ``delta / 2`` times that tiny end area).

Memory stays bounded: only the fields of the (at most four) planes around
the current gap are held, each ``MAX_RASTER_SIDE ** 2`` floats at most.

References
----------
.. [1] S. P. Raya and J. K. Udupa, "Shape-based interpolation of
   multidimensional objects", IEEE Trans. Med. Imaging 9 (1990) 32-42.
.. [2] G. T. Herman, J. Zheng and C. A. Bucholtz, "Shape-based
   interpolation", IEEE Comput. Graph. Appl. 12 (1992) 69-79.
.. [3] E. Catmull and R. Rom, "A class of local interpolating splines", in
   Computer Aided Geometric Design, Academic Press (1974) 317-326.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage import measure

from .errors import (
    EmptyStructureError,
    GeometryError,
    InputError,
    SoarsDoseError,
)
from .rasterize import GAP_BREAK_FACTOR, PLANE_TOL_MM
from .structures import Structure

#: The modes of ``--between-planes``.
MODES = ("stack", "interpolate")
#: Largest fine-raster pixel (mm) when memory allows.
PIXEL_MM = 0.25
#: Fine-raster pixels per equivalent-circle radius of the largest plane region.
PIXELS_PER_RADIUS = 40
#: Finest raster pixel (mm).
MIN_PIXEL_MM = 0.05
#: Longest side (pixels) of the fine raster (memory and time bound).
MAX_RASTER_SIDE = 1024
#: Pixels either side of a boundary where the distance is to the polygons themselves.
BAND_PX = 4
#: Target distance (mm) between planes of the dense stack.
DENSE_TARGET_MM = 0.5
#: Upper bound on the parts one gap is cut into.
MAX_PARTS = 8


@dataclass
class Reconstruction:
    """A structure as the kernel should see it in one between-planes mode.

    Attributes
    ----------
    structure : Structure
        The contours to rasterise (the input itself in ``stack`` mode).
    nominal_spacing_mm : float or None
        Nominal spacing (mm) to give :func:`soars_dose.rasterize.sample_structure`.
    mode : str
    notes : list of str
    """

    structure: Structure
    nominal_spacing_mm: float | None
    mode: str
    notes: list[str] = field(default_factory=list)


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise :class:`InputError`."""
    if mode not in MODES:
        raise InputError(f"between-planes mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def prepare(structure: Structure, mode: str = "stack", *, nominal_spacing_mm: float | None = None,
            source: str = "") -> Reconstruction:
    """The structure and nominal spacing to rasterise in between-planes ``mode``.

    Parameters
    ----------
    structure : Structure
        Planar contours, LPS mm.
    mode : {"stack", "interpolate"}
    nominal_spacing_mm : float, optional
        Nominal contour spacing (CT slice thickness), mm; default the
        structure's median plane gap.
    source : str
        File name for messages.
    """
    check_mode(mode)
    if mode == "stack":
        return Reconstruction(structure, nominal_spacing_mm, mode)
    try:
        return reconstruct(structure, nominal_spacing_mm=nominal_spacing_mm, source=source)
    except SoarsDoseError:
        raise
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        # a shape the reconstruction cannot handle must not end the run without naming it
        raise GeometryError(
            f"{source}: ROI {structure.name!r}: between-planes interpolation failed ({exc}); "
            "use --between-planes stack for this structure set") from exc


# ---------------------------------------------------------------- planes
def _planes_mm(structure: Structure, source: str):
    """``(normal axis, in-plane axes, [(position mm, [polygons (n,2) mm]), ...])``."""
    if structure.is_empty:
        raise EmptyStructureError(f"{source}: ROI {structure.name!r} has no contour (empty structure)")
    axes = {int(np.argmin(np.ptp(c, axis=0))) for c in structure.contours}
    if len(axes) != 1:
        raise GeometryError(
            f"{source}: ROI {structure.name!r} has contours in planes of different "
            "orientations; all contours of a structure must be parallel")
    n_ax = axes.pop()
    uv = [a for a in range(3) if a != n_ax]
    items = sorted(((float(np.mean(c[:, n_ax])), np.asarray(c, float)[:, uv])
                    for c in structure.contours if len(c) >= 3), key=lambda t: t[0])
    planes: list[tuple[float, list[np.ndarray]]] = []
    for pos, poly in items:
        if planes and pos - planes[-1][0] <= PLANE_TOL_MM:
            planes[-1][1].append(poly)
        else:
            planes.append((pos, [poly]))
    return n_ax, uv, planes


def _runs(pos: np.ndarray, nominal: float) -> list[slice]:
    """Slices of consecutive planes joined by gaps of at most ``GAP_BREAK_FACTOR * nominal``."""
    cuts = np.nonzero(np.diff(pos) > GAP_BREAK_FACTOR * nominal)[0] + 1
    edges = np.r_[0, cuts, pos.size]
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class _Raster:
    """Square fine raster over the ``(u, v)`` plane; pixel ``(row, col)`` centre at ``(v, u)``."""

    def __init__(self, polys: list[np.ndarray], margin_mm: float):
        pts = np.vstack(polys)
        lo, hi = pts.min(axis=0) - margin_mm, pts.max(axis=0) + margin_mm
        areas = [abs(_area(p)) for p in polys]
        r_eq = np.sqrt(max(max(areas), 1e-6) / np.pi)
        h = min(PIXEL_MM, max(MIN_PIXEL_MM, r_eq / PIXELS_PER_RADIUS))
        h = max(h, float(np.max(hi - lo)) / (MAX_RASTER_SIDE - 2))
        self.h = h
        self.origin = lo  # (u, v) of pixel (0, 0)'s centre
        n = np.ceil((hi - lo) / h).astype(int) + 1
        self.shape = (int(n[1]), int(n[0]))  # rows along v, columns along u
        self.trees: dict[int, cKDTree] = {}  # boundary points of each field made here

    def to_pixels(self, poly: np.ndarray) -> np.ndarray:
        """(n, 2) ``(u, v)`` mm -> ``(row, col)`` pixel units."""
        return np.c_[(poly[:, 1] - self.origin[1]) / self.h, (poly[:, 0] - self.origin[0]) / self.h]

    def to_mm(self, rc: np.ndarray) -> np.ndarray:
        """(n, 2) ``(row, col)`` pixel units -> ``(u, v)`` mm."""
        return np.c_[self.origin[0] + rc[:, 1] * self.h, self.origin[1] + rc[:, 0] * self.h]

    def centres_inside(self, rcs: list[np.ndarray]) -> np.ndarray:
        """Pixels whose centre is inside the polygons (pixel units) by the even-odd rule.

        A scan line through each row of centres: edges cross it at ``x``;
        centres between the ``2k``-th and ``2k+1``-th crossing are inside.
        Half-open in ``y`` so that a vertex on a scan line counts once.
        """
        a = np.vstack(rcs)
        b = np.vstack([np.roll(rc, -1, axis=0) for rc in rcs])
        ymin, ymax = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
        t_lo = np.clip(np.ceil(ymin), 0, self.shape[0]).astype(np.int64)
        t_hi = np.clip(np.ceil(ymax), 0, self.shape[0]).astype(np.int64)
        n = np.clip(t_hi - t_lo, 0, None)
        out = np.zeros(self.shape, bool)
        if n.sum() == 0:
            return out
        e = np.repeat(np.arange(a.shape[0]), n)
        row = t_lo[e] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        x = a[e, 1] + (row - a[e, 0]) * (b[e, 1] - a[e, 1]) / (b[e, 0] - a[e, 0])
        order = np.lexsort((x, row))
        row, x = row[order], x[order]
        # toggles at the first centre at or right of each crossing; cumulative parity fills
        col = np.clip(np.ceil(x), 0, self.shape[1]).astype(np.int64)
        tog = np.zeros((self.shape[0], self.shape[1] + 1), np.int64)
        np.add.at(tog, (row, col), 1)
        return (np.cumsum(tog, axis=1)[:, :-1] % 2).astype(bool)

    def sdf(self, polys: list[np.ndarray]) -> np.ndarray:
        """Signed distance (mm, negative inside) to the even-odd region of ``polys``.

        Inside means the pixel centre is inside (even-odd over all polygons).
        Within ``BAND_PX`` pixels of the boundary the distance is to the
        polygons themselves (nearest of points every ``h / 4`` along the
        edges); further out it is the Euclidean distance transform of the
        mask, with the half pixel between centre and boundary removed.
        """
        rcs = [self.to_pixels(p) for p in polys]
        inside = self.centres_inside(rcs)
        d_out = ndimage.distance_transform_edt(~inside) - 0.5
        d_in = ndimage.distance_transform_edt(inside) - 0.5
        phi = np.where(inside, -d_in, d_out)
        band = np.nonzero(np.abs(phi) < BAND_PX)
        pts = []
        for rc in rcs:
            a, b = rc, np.roll(rc, -1, axis=0)
            n = np.maximum(1, np.ceil(4 * np.linalg.norm(b - a, axis=1)).astype(int))
            s = np.concatenate([np.arange(k) / k for k in n])
            pts.append(np.repeat(a, n, axis=0) + s[:, None] * np.repeat(b - a, n, axis=0))
        tree = cKDTree(np.vstack(pts))
        dist, _ = tree.query(np.c_[band[0], band[1]])
        phi[band] = np.where(inside[band], -dist, dist)
        phi = (phi * self.h).astype(np.float32)
        self.trees[id(phi)] = tree
        return phi

    def depth(self, phi: np.ndarray) -> tuple[float, np.ndarray]:
        """Largest distance (mm) from inside the region to its boundary, to about h / 16.

        Returns the distance and the deepest point (row, col pixel units).
        The sampled maximum of a ridge misses it by up to half a pixel, so
        the deepest pixel's neighbourhood is searched on finer and finer
        sub-grids with distances to the polygons themselves.
        """
        tree = self.trees.get(id(phi))
        k = int(np.argmin(phi))
        best = np.array(np.unravel_index(k, phi.shape), float)
        if tree is None:
            return float(-phi.flat[k]), best
        depth = float(tree.query(best[None])[0][0])
        for half in (1.0, 0.25, 0.0625):
            off = np.linspace(-half, half, 9)
            cand = best + np.stack(np.meshgrid(off, off, indexing="ij"), -1).reshape(-1, 2)
            d = tree.query(cand)[0]
            j = int(np.argmax(d))
            if d[j] > depth:
                depth, best = float(d[j]), cand[j]
        return depth * self.h, best

    def contours(self, phi: np.ndarray, corner=(0, 0)) -> list[np.ndarray]:
        """Closed ``(u, v)`` mm polygons of the zero level set of ``phi`` (even-odd nesting).

        ``phi`` may be a crop of the raster whose pixel (0, 0) is ``corner``.
        """
        # a positive frame keeps every level set closed
        rows, cols = np.nonzero(np.any(phi <= 0, axis=1))[0], np.nonzero(np.any(phi <= 0, axis=0))[0]
        if rows.size == 0:
            return []
        r0, r1 = max(rows[0] - 2, 0), min(rows[-1] + 3, phi.shape[0])
        c0, c1 = max(cols[0] - 2, 0), min(cols[-1] + 3, phi.shape[1])
        padded = np.pad(phi[r0:r1, c0:c1], 1, constant_values=self.h)
        out = []
        for c in measure.find_contours(padded, 0.0):
            if len(c) < 4:
                continue
            poly = self.to_mm(c[:-1] - 1.0 + np.array([r0 + corner[0], c0 + corner[1]]))
            if abs(_area(poly)) > 1e-9:
                out.append(poly)
        return out


def _bbox(mask: np.ndarray, margin: int):
    """Slices of the bounding box of ``mask`` grown by ``margin`` pixels (None if empty)."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return None
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, mask.shape[0])),
            slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, mask.shape[1])))


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _slopes(pos: np.ndarray, k: int, phis: dict) -> np.ndarray:
    """Non-uniform three-point derivative of the field at plane ``k`` (one-sided at run ends)."""
    n = pos.size
    if n == 1:
        return np.zeros_like(phis[k])
    if k == 0:
        return (phis[1] - phis[0]) / (pos[1] - pos[0])
    if k == n - 1:
        return (phis[k] - phis[k - 1]) / (pos[k] - pos[k - 1])
    g0, g1 = pos[k] - pos[k - 1], pos[k + 1] - pos[k]
    s0 = (phis[k] - phis[k - 1]) / g0
    s1 = (phis[k + 1] - phis[k]) / g1
    return (s0 * g1 + s1 * g0) / (g0 + g1)


def _profile(pos: np.ndarray, phis: dict, raster: _Raster, end: int, step: int):
    """Inradius profile near plane ``end``: ``(rho, coefficients of r^2(t) or None, growth)``.

    ``rho`` (mm) is the depth of the region on plane ``end``; on the
    previous planes the profile is ``rho`` plus how far their boundaries
    lie outside the points of plane ``end``'s boundary that touch its
    deepest point (so ``r`` follows the inradius, the quantity that decides
    where erosion closes the region). ``r^2`` is a polynomial in ``t``, the
    distance (mm) beyond plane ``end``. ``step`` is -1 at the top end of a
    run (previous planes have lower indices) and +1 at the bottom end.
    """
    phi_n = phis[end]
    rho, deepest = raster.depth(phi_n)
    rho = float(max(rho, raster.h / 2))
    boundary = raster.contours(phi_n)
    if not boundary:
        return rho, None, 0.0
    rc = raster.to_pixels(np.vstack(boundary))
    near = np.abs(np.linalg.norm(rc - deepest, axis=1) - rho / raster.h) <= 2.0
    if np.count_nonzero(near) >= 2:
        rc = rc[near]
    ts, rs = [0.0], [rho]
    for j in (1, 2):
        k = end + step * j
        if k < 0 or k >= pos.size:
            break
        sign = np.sign(ndimage.map_coordinates(phis[k], rc.T, order=1, mode="nearest"))
        tree = raster.trees.get(id(phis[k]))
        dist = tree.query(rc)[0] * raster.h if tree is not None else 0.0
        ts.append(-abs(pos[k] - pos[end]))
        rs.append(rho + float(np.median(-sign * dist)))
    if len(ts) == 1:
        return rho, None, 0.0
    ts, r2 = np.asarray(ts), np.maximum(np.asarray(rs), 0.0) ** 2
    coef = np.polyfit(ts, r2, len(ts) - 1)
    growth = max(0.0, rs[0] - rs[1]) / abs(ts[1])  # radius gained per mm toward the end
    return rho, coef, growth


def _cap(pos, phis, raster, end, step, nominal):
    """End cap beyond plane ``end``.

    Returns ``(length mm, field_at(t), closed, d_phi/dt on the end plane or None)``.
    """
    rho, coef, growth = _profile(pos, phis, raster, end, step)
    phi_n = phis[end]
    if coef is None:  # a single plane in this run: the stack's half spacing, unchanged shape
        return nominal / 2.0, (lambda t: phi_n), False, None
    ts = np.linspace(0.0, 2.0 * nominal, 481)
    r2 = np.polyval(coef, ts)
    closing = np.nonzero(r2 <= 0.0)[0]
    root = np.inf
    if closing.size:
        i = int(closing[0])
        t0, t1, y0, y1 = ts[max(i - 1, 0)], ts[i], r2[max(i - 1, 0)], r2[i]
        root = float(t0 + (t1 - t0) * y0 / (y0 - y1)) if y0 != y1 else float(t1)
    # closes within a spacing: follow it to its end; beyond two spacings: a flat end half a
    # spacing on; in between (a pole just past the next plane, or a fitting error of a
    # pole on it) blend linearly so that the cap length is continuous in the fit
    if root <= nominal:
        length, closed = root, True
    elif root < 2.0 * nominal:
        length, closed = nominal - (root - nominal) / 2.0, True
    else:
        length, closed = nominal / 2.0, False
    # per-pixel secant of the field beyond the plane, and the profile's radius drop
    g = abs(pos[end] - pos[end + step])
    sec = (phi_n - phis[end + step]) / np.float32(g)
    r_of = lambda t: float(np.sqrt(max(np.polyval(coef, t), 0.0)))
    r_max = rho + 1.5 * growth * length
    ds = (r_of(-g) - rho) / g  # radius lost per mm beyond the plane, by the secant
    r0 = float(np.sqrt(max(coef[-1], 1e-12)))
    drdt = float(np.polyval(np.polyder(coef), 0.0)) / (2.0 * r0)
    if abs(ds) > 0.02:
        ratio = float(np.clip(-drdt / ds, 0.25, 4.0))
        time_of = lambda t: (rho - min(r_of(t), r_max)) / ds
    else:  # (nearly) constant sections: the secant itself
        ratio, time_of = 1.0, (lambda t: t)

    def field_at(t: float) -> np.ndarray:
        tau = np.float32(time_of(t))
        # erosion (every boundary point recedes with the profile) and the per-pixel secant
        # (faces that did not move stay) agree for spheres and cones; where a boundary has
        # both, e.g. the flat ends of a strip, the receding faces sweep the corners the
        # secant keeps, and the truth lies between the two: take their mean
        return phi_n + np.float32(0.5) * tau * (sec + np.float32(ds))

    return length, field_at, closed, sec * np.float32(ratio)


def _cap_planes(length: float, delta: float) -> np.ndarray:
    """Distances (mm) of cap planes beyond the last plane for a cap ``length`` mm long.

    No two planes further apart than ``delta`` and the last ``delta / 2``
    before the cap's end, where the kernel's half-dense-spacing end cap ends.
    """
    last = length - delta / 2.0
    if last <= 1e-9:
        return np.zeros(0)
    k = int(np.ceil(last / delta - 1e-9))
    return np.linspace(last / k, last, k)


def reconstruct(structure: Structure, *, nominal_spacing_mm: float | None = None,
                source: str = "") -> Reconstruction:
    """Shape-based interpolation of a structure between and beyond its contour planes.

    Parameters
    ----------
    structure : Structure
        Planar contours (LPS mm), all parallel.
    nominal_spacing_mm : float, optional
        Nominal contour spacing (mm): the gap above which planes are a
        break, and the reach of end caps. Default: the median plane gap.
    source : str
        File name for messages.

    Returns
    -------
    Reconstruction
        A denser contour stack (original contours kept on their planes) and
        the dense spacing (mm) to pass as the kernel's nominal spacing. A
        structure on a single plane is returned unchanged (nothing to
        interpolate), with a note.

    Raises
    ------
    StructureError
        Empty structure.
    GeometryError
        Contours in planes of different orientations.
    """
    n_ax, _, planes = _planes_mm(structure, source)
    pos = np.array([p for p, _ in planes])
    notes: list[str] = []
    if pos.size < 2:
        notes.append(f"{source}: ROI {structure.name!r} lies on a single contour plane; "
                     "between-planes interpolation leaves it as drawn")
        return Reconstruction(structure, nominal_spacing_mm, "interpolate", notes)
    nominal = float(nominal_spacing_mm) if nominal_spacing_mm else float(np.median(np.diff(pos)))
    parts = int(np.clip(np.ceil(nominal / DENSE_TARGET_MM - 1e-9), 2, MAX_PARTS))
    delta = nominal / parts

    def plane3d(poly2: np.ndarray, z: float) -> np.ndarray:
        out = np.empty((len(poly2), 3))
        out[:, [a for a in range(3) if a != n_ax]] = poly2
        out[:, n_ax] = z
        return out

    dense: list[np.ndarray] = list(structure.contours)  # the drawn contours, as drawn
    n_closed = n_flat = 0
    for run in _runs(pos, nominal):
        rpos = pos[run]
        rpolys = [planes[k][1] for k in range(run.start, run.stop)]
        if rpos.size == 1:
            notes.append(f"{source}: ROI {structure.name!r}: a run of a single contour plane at "
                         f"{rpos[0]:.2f} mm keeps the stack's half-spacing end caps")
            # the kernel gives it +-delta/2; add planes so that it spans +-nominal/2
            for t in _cap_planes(nominal / 2.0, delta):
                for z in (rpos[0] - t, rpos[0] + t):
                    dense.extend(plane3d(p, z) for ps in rpolys for p in ps)
            continue
        raster = _Raster([p for ps in rpolys for p in ps], margin_mm=2.0 * nominal + 1.0)
        phis: dict[int, np.ndarray] = {}

        def get(k: int, phis=phis, raster=raster, rpolys=rpolys) -> np.ndarray:
            if k not in phis:
                phis[k] = raster.sdf(rpolys[k])
            return phis[k]

        n = rpos.size
        # caps first: their profiles also give the field's slope on the end planes
        caps, end_slope = [], {}
        for end, step, sign in ((0, +1, -1.0), (n - 1, -1, +1.0)):
            local = {k: get(k) for k in (end, end + step, end + 2 * step) if 0 <= k < n}
            length, field_at, closed, slope = _cap(rpos, local, raster, end, step, nominal)
            n_closed += closed
            n_flat += not closed
            if slope is not None:  # d(phi)/dt beyond the plane; t runs along sign * z
                end_slope[end] = np.float32(sign) * slope
            caps.append([(rpos[end] + sign * t, raster.contours(field_at(t)))
                         for t in _cap_planes(length, delta)])
            phis.clear()
        for i in range(n - 1):
            for k in list(phis):  # keep only the planes the cubic needs
                if k < i - 1:
                    del phis[k]
            ks = [k for k in (i - 1, i, i + 1, i + 2) if 0 <= k < n]
            local = {k: get(k) for k in ks}
            m0 = end_slope[0] if i == 0 and 0 in end_slope else _slopes(rpos, i, local)
            m1 = (end_slope[n - 1] if i + 1 == n - 1 and n - 1 in end_slope
                  else _slopes(rpos, i + 1, local))
            g = rpos[i + 1] - rpos[i]
            m = int(np.ceil(g / delta - 1e-9))
            # work only around the two regions: the zero level between them moves
            # at most about a gap's length beyond their union
            box = _bbox((local[i] <= 0) | (local[i + 1] <= 0), int(np.ceil(g / raster.h)) + 4)
            if box is None:
                continue
            f0, f1 = local[i][box], local[i + 1][box]
            s0 = m0[box] if np.ndim(m0) else m0
            s1 = m1[box] if np.ndim(m1) else m1
            corner = (box[0].start, box[1].start)
            for j in range(1, m):
                s = j / m
                h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
                h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
                phi = h00 * f0 + h01 * f1 + g * (h10 * s0 + h11 * s1)
                z = rpos[i] + s * g
                dense.extend(plane3d(p, z) for p in raster.contours(phi, corner))
        for cap in caps:
            for z, polys in cap:
                dense.extend(plane3d(p, z) for p in polys)
    notes.append(f"between planes interpolated (shape-based, {parts} parts per "
                 f"{nominal:.3g} mm); {n_closed} end(s) closed by the profile, {n_flat} flat")
    out = Structure(name=structure.name, number=structure.number, contours=dense,
                    color=structure.color, interpreted_type=structure.interpreted_type,
                    generation_algorithm=structure.generation_algorithm)
    return Reconstruction(out, delta, "interpolate", notes)
