"""Checks on planar contour polygons: exact duplicates and crossing edges.

Used by the RTSTRUCT reader to warn about contours that a planning system
drew twice or that cross themselves; the polygons themselves are kept (the
rasteriser decides what they mean). Inputs are ``(n, 3)`` LPS point arrays
in mm lying in one axis-aligned plane, as :class:`soars_dose.structures.Structure`
holds them (closing edge implicit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Two contours are duplicates when every point matches within this (mm).
DUPLICATE_TOL_MM = 0.01

_AXIS_NAME = "xyz"


@dataclass(frozen=True)
class ContourPlane:
    """The axis-aligned plane a contour lies in.

    Attributes
    ----------
    axis : int
        0, 1 or 2 for the LPS x, y or z axis normal to the plane.
    position_mm : float
        Coordinate of the plane along that axis (mm).
    """

    axis: int
    position_mm: float

    def __str__(self) -> str:
        return f"{_AXIS_NAME[self.axis]} = {self.position_mm:g} mm"


def contour_plane(points: np.ndarray) -> ContourPlane:
    """The plane of a planar contour: the LPS axis with the least spread."""
    pts = np.asarray(points, dtype=float)
    axis = int(np.argmin(np.ptp(pts, axis=0)))
    return ContourPlane(axis, float(np.mean(pts[:, axis])))


def _in_plane(points: np.ndarray, axis: int) -> np.ndarray:
    return np.asarray(points, dtype=float)[:, [a for a in range(3) if a != axis]]


def _same_polygon(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """True when ``b`` is ``a`` (points within ``tol``), up to start point and direction."""
    if a.shape != b.shape:
        return False
    starts = np.flatnonzero(np.max(np.abs(b - a[0]), axis=1) <= tol)
    for s in starts:
        fwd = np.roll(b, -s, axis=0)
        if np.max(np.abs(fwd - a)) <= tol:
            return True
        rev = np.roll(b[::-1], -(len(b) - 1 - s), axis=0)
        if np.max(np.abs(rev - a)) <= tol:
            return True
    return False


def duplicate_contours(contours: "list[np.ndarray]",
                       tol_mm: float = DUPLICATE_TOL_MM) -> list[tuple[int, int]]:
    """Pairs ``(first, repeat)`` of contour indices that are the same polygon.

    Two contours are duplicates when they lie in the same plane and have the
    same vertices within ``tol_mm`` (mm, per coordinate) in the same cyclic
    order, whichever vertex they start from and in either direction. Each
    repeat is reported once, against the first contour it copies.

    Parameters
    ----------
    contours : list of ndarray
        ``(n, 3)`` LPS points (mm), one axis-aligned plane each.
    tol_mm : float
        Coordinate tolerance (mm).

    Returns
    -------
    list of (int, int)
        Indices into ``contours``; ``first < repeat``.
    """
    by_plane: dict[tuple[int, int], list[int]] = {}
    planes = [contour_plane(c) for c in contours]
    for i, pl in enumerate(planes):
        # Bucket by plane; neighbours are checked too so a tolerance never
        # splits a pair across a rounding boundary.
        key = (pl.axis, int(np.floor(pl.position_mm / max(tol_mm, 1e-9))))
        by_plane.setdefault(key, []).append(i)
    pairs: list[tuple[int, int]] = []
    repeated: set[int] = set()
    for j, pl in enumerate(planes):
        key = int(np.floor(pl.position_mm / max(tol_mm, 1e-9)))
        candidates = sorted(i for k in (key - 1, key, key + 1)
                            for i in by_plane.get((pl.axis, k), []) if i < j)
        for i in candidates:
            if i in repeated or abs(planes[i].position_mm - pl.position_mm) > tol_mm:
                continue
            a = np.asarray(contours[i], dtype=float)
            b = np.asarray(contours[j], dtype=float)
            if _same_polygon(a, b, tol_mm):
                pairs.append((i, j))
                repeated.add(j)
                break
    return pairs


def self_intersection(points: np.ndarray, *, max_pairs: int = 1 << 20) -> "tuple[int, int] | None":
    """First pair of crossing edges of a closed planar polygon, or None.

    Edge ``e`` joins vertex ``e`` to vertex ``e + 1`` (the last edge closes
    the polygon), counted after dropping zero-length edges (a point written
    twice in a row, the closing point repeated). The polygon is not simple
    when two non-adjacent edges share any point: they cross, one touches
    the other (a figure-eight drawn through a vertex), or they overlap
    along a line.

    Only edge pairs whose bounding boxes overlap are tested (edges sorted
    by their lowest first coordinate), so a smooth contour of ``n`` points
    costs about ``O(n log n)`` rather than ``n**2`` tests.

    Parameters
    ----------
    points : ndarray
        ``(n, 3)`` LPS points (mm) in one axis-aligned plane, or ``(n, 2)``
        in-plane coordinates.
    max_pairs : int
        Candidate pairs tested at once (bounds memory).

    Returns
    -------
    (int, int) or None
        0-based indices of two crossing edges, the lower first.
    """
    pts = np.asarray(points, dtype=float)
    if pts.shape[1] == 3:
        pts = _in_plane(pts, contour_plane(pts).axis)
    # Zero-length edges (a point written twice in a row, or the closing point
    # repeated) would make their neighbours touch: drop them first.
    keep_pt = np.any(pts != np.roll(pts, -1, axis=0), axis=1)
    pts = pts[keep_pt]
    n = len(pts)
    if n < 4:
        return None
    p = pts
    q = np.roll(pts, -1, axis=0)
    lo, hi = np.minimum(p, q), np.maximum(p, q)
    order = np.argsort(lo[:, 0], kind="stable")
    lo_x = lo[order, 0]
    # Edge order[k] can only meet edges order[k+1 .. last[k]-1] among later ones.
    last = np.searchsorted(lo_x, hi[order, 0], side="right")
    counts = last - np.arange(1, n + 1)
    # Orientation values are products of mm lengths; a vertex within about
    # 1e-9 of the contour's size from another edge counts as touching it.
    scale = float(np.max(np.ptp(pts, axis=0))) or 1.0
    eps = 1e-9 * scale * scale
    csum = np.cumsum(counts)
    start = 0
    while start < n:
        # Take as many sorted edges as keep the candidate list under max_pairs.
        base = csum[start - 1] if start else 0
        stop = int(np.searchsorted(csum, base + max_pairs, side="right"))
        stop = max(stop, start + 1)
        k = np.arange(start, min(stop, n))
        c = counts[k]
        a_sorted = np.repeat(k, c)
        offs = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        b_sorted = a_sorted + 1 + offs
        start = int(k[-1]) + 1
        if a_sorted.size == 0:
            continue
        a, b = order[a_sorted], order[b_sorted]
        i, j = np.minimum(a, b), np.maximum(a, b)
        gap = j - i
        keep = (gap > 1) & (gap < n - 1)  # adjacent edges share a vertex
        keep &= (lo[i, 1] <= hi[j, 1]) & (lo[j, 1] <= hi[i, 1])
        i, j = i[keep], j[keep]
        if i.size == 0:
            continue
        di, dj = q[i] - p[i], q[j] - p[j]

        def cross(u, v):
            return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]

        o1, o2 = cross(di, p[j] - p[i]), cross(di, q[j] - p[i])
        o3, o4 = cross(dj, p[i] - p[j]), cross(dj, q[i] - p[j])
        # Closed segments meet (cross, touch, or overlap when collinear, the
        # bounding boxes already overlapping) when neither lies strictly on
        # one side of the other's line.
        hit = (o1 * o2 <= eps * eps) & (o3 * o4 <= eps * eps)
        if np.any(hit):
            sel = np.flatnonzero(hit)
            best = sel[np.lexsort((j[sel], i[sel]))[0]]
            return int(i[best]), int(j[best])
    return None

