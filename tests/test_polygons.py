"""Duplicate and self-intersection checks against brute force and hand-made shapes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from soars_dose.polygons import contour_plane, duplicate_contours, self_intersection


def _brute_simple(pts2):
    """True when no two non-adjacent closed edges share a point (exact rationals)."""
    P = [(Fraction(x), Fraction(y)) for x, y in pts2]
    n = len(P)
    E = [(P[i], P[(i + 1) % n]) for i in range(n)]

    def orient(a, b, c):
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return (v > 0) - (v < 0)

    def on_seg(a, b, c):
        return (min(a[0], b[0]) <= c[0] <= max(a[0], b[0])
                and min(a[1], b[1]) <= c[1] <= max(a[1], b[1]))

    def meet(s, t):
        (a, b), (c, d) = s, t
        o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
        if o1 * o2 < 0 and o3 * o4 < 0:
            return True
        return ((o1 == 0 and on_seg(a, b, c)) or (o2 == 0 and on_seg(a, b, d))
                or (o3 == 0 and on_seg(c, d, a)) or (o4 == 0 and on_seg(c, d, b)))

    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            if meet(E[i], E[j]):
                return False
    return True


@pytest.mark.parametrize("seed", range(6))
def test_self_intersection_agrees_with_exact_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n = int(rng.integers(4, 25))
        if rng.random() < 0.5:  # star-shaped around the origin: mostly simple
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            r = rng.uniform(1, 10, n)
            pts = np.c_[r * np.cos(ang), r * np.sin(ang)]
        else:  # integer points: many touching and collinear cases, exact in floats
            pts = rng.integers(0, 6, (n, 2)).astype(float)
            pts = pts[np.any(pts != np.roll(pts, -1, axis=0), axis=1)]
            if len(pts) < 4:
                continue
        got = self_intersection(pts, max_pairs=int(rng.integers(1, 40)))
        assert (got is None) == _brute_simple(pts), pts.tolist()


def test_known_shapes():
    sq = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
    assert self_intersection(sq) is None
    assert self_intersection(np.vstack([sq, sq[:1]])) is None  # closing point repeated
    assert self_intersection(sq[[0, 1, 1, 2, 3]]) is None  # a point written twice
    assert self_intersection(sq[[0, 2, 1, 3]]) == (0, 2)  # bow tie: its edges 0 and 2 cross
    t = np.arange(5) * 4 * np.pi / 5
    assert self_intersection(np.c_[np.cos(t), np.sin(t)]) is not None  # pentagram
    # a square whose right side is touched by a spike from the left: not simple
    touch = np.array([[0, 0], [4, 0], [4, 4], [0, 4], [0, 3], [4, 2], [0, 1]], float)
    assert self_intersection(touch) is not None
    th = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    assert self_intersection(np.c_[np.cos(th), np.sin(th)] * 50) is None


def test_duplicates_by_cyclic_order_and_tolerance():
    sq = np.array([[0, 0, 2], [4, 0, 2], [4, 4, 2], [0, 4, 2]], float)
    other_order = sq[[0, 2, 1, 3]]  # same vertices, another polygon (a bow tie)
    cs = [sq, sq[::-1], np.roll(sq, 1, 0), sq + [0, 0, 0.004], sq + [0, 0, 2.0],
          sq + [0.02, 0, 0], other_order]
    assert duplicate_contours(cs) == [(0, 1), (0, 2), (0, 3)]
    assert duplicate_contours(cs, tol_mm=0.05) == [(0, 1), (0, 2), (0, 3), (0, 5)]


def test_contour_plane_names_axis_and_position():
    sag = np.array([[7.5, 0, 0], [7.5, 4, 0], [7.5, 4, 4], [7.5, 0, 4]])
    assert str(contour_plane(sag)) == "x = 7.5 mm"
    assert contour_plane(sag[:, [1, 2, 0]]).axis == 2
