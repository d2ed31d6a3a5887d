"""Statistics never contradict the curve, and min/max are the object's exact extremes.

Issue 10 part 1. Property test: seeded random shapes (star-shaped polygons
with holes and islands, 1-9 planes, random spacing), random grids
(anisotropic, off-centre) and random doses (linear gradients in any
direction plus random voxel noise, so the interpolant is genuinely
trilinear). For every case: min_gy <= Dx <= max_gy, the cumulative DVH is
100 % up to min_gy and 0 one bin above max_gy, D0.03cc <= max_gy.

Exactness: the extremes are checked against an independent reference, the
trilinear interpolant of scipy's ``RegularGridInterpolator`` evaluated on a
dense set of points of the object (its boundary at 0.02 mm and its
interior, on the slab ends), with even-odd inside tests from shapely. A
dense set gives a lower bound of the max (upper bound of the min); the
interpolant is Lipschitz, so the true extreme is within L * h of it.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator
from shapely import contains_xy
from shapely.geometry import Polygon

from soars_dose.dose.compute import compute_dvh
from soars_dose.dosegrid import DoseGrid
from soars_dose.grid import Grid
from soars_dose.structures import Structure

N_CASES = 200


def _star(rng, cx, cy, r, n=None):
    n = n or int(rng.integers(5, 40))
    th = np.sort(rng.uniform(0, 2 * np.pi, n))
    rr = r * rng.uniform(0.4, 1.0, n)
    return np.c_[cx + rr * np.cos(th), cy + rr * np.sin(th)]


def _random_case(rng):
    sp = rng.uniform(1.5, 4.0, 3)
    shape = (14, 14, 14)
    origin = -0.5 * (np.array(shape[::-1]) - 1) * sp + rng.uniform(-1, 1, 3)
    grid = Grid(shape, tuple(sp[::-1]), tuple(origin))  # sp is (x, y, z); Grid wants (k, j, i)
    dz = float(rng.uniform(0.5, 4.0))
    n_planes = int(rng.integers(1, 10))
    z0 = rng.uniform(-3, 3) - n_planes * dz / 2
    r = float(rng.uniform(0.3, 12.0))
    cx, cy = rng.uniform(-3, 3, 2)
    contours = []
    for k in range(n_planes):
        z = z0 + k * dz
        outer = _star(rng, cx, cy, r)
        contours.append(np.c_[outer, np.full(len(outer), z)])
        if r > 4 and rng.random() < 0.3:  # a hole well inside the outer polygon
            hole = _star(rng, cx, cy, 0.25 * r, 12)
            contours.append(np.c_[hole, np.full(len(hole), z)])
        if rng.random() < 0.2:  # an island
            isl = _star(rng, cx + 1.8 * r, cy, 0.3 * r + 0.05, 8)
            contours.append(np.c_[isl, np.full(len(isl), z)])
    # dose: linear in a random direction (up to 3 Gy/mm) plus voxel noise
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    xyz = grid.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    g = rng.normal(size=3)
    g *= rng.uniform(0, 3.0) / np.linalg.norm(g)
    values = 50 + xyz @ g + rng.uniform(0, 4.0) * rng.random(xyz.shape[0])
    dose = DoseGrid(grid, np.clip(values, 0, None).reshape(grid.shape))
    return Structure("roi", 1, contours), dose, dz


@pytest.mark.filterwarnings("ignore:.*lies inside the dose grid")
def test_statistics_agree_with_the_curve_on_random_cases():
    rng = np.random.default_rng(20261201)
    checked = 0
    for case in range(N_CASES):
        s, dose, dz = _random_case(rng)
        interp = "nearest" if case % 10 == 0 else "linear"
        dvh = compute_dvh(s, dose, nominal_spacing_mm=dz, interpolation=interp)
        lo, hi, bw = dvh.min_gy, dvh.max_gy, dvh.bin_width_gy
        label = f"case {case} ({interp})"
        assert lo <= hi
        assert lo - 1e-9 <= dvh.mean_gy <= hi + 1e-9, label
        for x in (0.1, 1, 2, 5, 50, 95, 98, 99, 99.9, 100):
            d = dvh.dose_at_volume_pct(x)
            assert lo - 1e-9 <= d <= hi + 1e-9, f"{label}: D{x}% {d} outside [{lo}, {hi}]"
        d003 = dvh.dose_at_volume_cc(0.03)
        assert np.isnan(d003) or d003 <= hi + 1e-9, label
        # 100 % at every edge up to min_gy, 0 from one bin above max_gy
        below = dvh.edges_gy <= lo
        np.testing.assert_allclose(dvh.cumulative_cc[below], dvh.volume_cc, rtol=1e-9, err_msg=label)
        assert dvh.volume_at_dose_pct(lo) == pytest.approx(100.0, abs=1e-7), label
        assert dvh.volume_at_dose_cc(hi + bw) == 0.0, label
        assert np.all(dvh.cumulative_cc[dvh.edges_gy >= hi + 1e-9] <= 1e-12), label
        checked += 1
    assert checked == N_CASES


def _dense_object_points(s: Structure, dz: float, grid: Grid, h: float = 0.02, h_in: float = 0.25):
    """Points (x, y, z) of the object where the extremes of a trilinear dose can be.

    In-plane: the boundary every ``h`` mm, the voxel-centre nodes inside and
    an interior lattice every ``h_in`` mm; along z: the slab ends and the
    voxel-centre planes between them (the dose is linear along z between
    those). Grid axes are x, y, z (identity direction).
    """
    ax = [grid.origin[a] + grid.spacing[2 - a] * np.arange(grid.shape[2 - a]) for a in range(3)]
    zs = sorted({float(c[0, 2]) for c in s.contours})
    pts = []
    for z in zs:
        polys = [c[:, :2] for c in s.contours if abs(c[0, 2] - z) < 1e-6]
        ring = []
        for p in polys:
            q = np.vstack([p, p[:1]])
            for a, b in zip(q[:-1], q[1:]):
                n = max(2, int(np.ceil(np.linalg.norm(b - a) / h)) + 1)
                t = np.linspace(0, 1, n)[:, None]
                ring.append(a + t * (b - a))
        ring = np.vstack(ring)
        allp = np.vstack(polys)
        xs = np.r_[np.arange(allp[:, 0].min(), allp[:, 0].max(), h_in), ax[0]]
        ys = np.r_[np.arange(allp[:, 1].min(), allp[:, 1].max(), h_in), ax[1]]
        X, Y = np.meshgrid(xs, ys)
        X, Y = X.ravel(), Y.ravel()
        inside = np.zeros(X.size, bool)
        for p in polys:
            inside ^= contains_xy(Polygon(p), X, Y)
        plane = np.vstack([ring, np.c_[X[inside], Y[inside]]])
        lo, hi = z - dz / 2, z + dz / 2
        levels = np.r_[lo, hi, ax[2][(ax[2] > lo) & (ax[2] < hi)]]
        for zz in levels:
            pts.append(np.c_[plane, np.full(len(plane), zz)])
    return np.vstack(pts)


@pytest.mark.parametrize("seed", range(12))
def test_extremes_match_a_dense_reference_of_the_trilinear_dose(seed):
    rng = np.random.default_rng(seed)
    grid = Grid((12, 12, 12), (3.0, 2.5, 2.0), (-11.3, -13.1, -16.7))
    # smooth random dose: the interpolant has strong mixed (bilinear) terms
    values = 40 + 10 * rng.random(grid.shape)
    dose = DoseGrid(grid, values)
    dz = float(rng.choice([1.0, 2.0, 3.0]))
    contours = []
    for k in range(int(rng.integers(1, 5))):
        p = _star(rng, rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(1.0, 6.0), 17)
        contours.append(np.c_[p, np.full(len(p), -3.0 + k * dz)])
    s = Structure("roi", 1, contours)
    dvh = compute_dvh(s, dose, nominal_spacing_mm=dz)
    # independent trilinear interpolant on patient coordinates (grid axes x, y, z)
    ax = [grid.origin[a] + grid.spacing[2 - a] * np.arange(grid.shape[2 - a]) for a in range(3)]
    ref = RegularGridInterpolator(ax, np.transpose(dose.values, (2, 1, 0)).astype(float))
    pts = _dense_object_points(s, dz, grid)
    d = ref(pts)
    # every candidate place of an extreme is in the reference set, the boundary at
    # 0.02 mm: the true extreme is within (largest gradient) x 0.01 mm of the dense one
    lip = max(float(np.abs(np.diff(values, axis=a)).max()) / grid.spacing[a] for a in range(3))
    slack = lip * 0.02 * np.sqrt(2) / 2 + 1e-6
    assert d.max() - 1e-6 <= dvh.max_gy <= d.max() + slack
    assert d.min() - slack <= dvh.min_gy <= d.min() + 1e-6


def test_cone_apex_in_a_superior_inferior_gradient():
    """The issue's case: a 30 mm cone in 1 Gy/mm SI on a 3 mm grid; the truth by formula."""
    grid = Grid((24, 24, 24), (3.0, 3.0, 3.0), (-34.0, -35.0, -33.0))
    dz, h, r = 3.0, 30.0, 10.0
    n = int(h / dz)
    cz = 0.45
    contours = []
    for k in range(n):
        z = cz - h / 2 + (k + 0.5) * dz
        rr = r * (1 - (k + 0.5) / n)
        th = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        contours.append(np.c_[1.3 + rr * np.cos(th), -0.8 + rr * np.sin(th), np.full(64, z)])
    k, j, i = np.meshgrid(*[np.arange(m) for m in grid.shape], indexing="ij")
    xyz = grid.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    dose = DoseGrid(grid, (xyz[:, 2] - (cz - h / 2)).reshape(grid.shape))  # 0 Gy at the base
    dvh = compute_dvh(Structure("cone", 1, contours), dose, nominal_spacing_mm=dz)
    # the stack spans [cz - h/2, cz + h/2] (half-slice end caps): 0 Gy to 30 Gy
    assert dvh.min_gy == pytest.approx(0.0, abs=1e-5)
    assert dvh.max_gy == pytest.approx(h, abs=1e-5)
    for key in ("d0_03cc_gy", "d2_gy", "d50_gy", "d95_gy", "d98_gy"):
        assert dvh.min_gy <= dvh.statistics()[key] <= dvh.max_gy


@pytest.mark.parametrize("axis", [0, 1])
def test_in_plane_extremes_of_a_sphere_stack_by_formula(axis):
    """Linear in-plane gradient: the extreme is at the widest contour's extreme vertex."""
    grid = Grid((20, 20, 20), (3.0, 3.0, 3.0), (-28.7, -28.2, -28.9))
    r, dz, slope = 9.0, 2.0, 1.7
    contours = []
    th = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    for k in range(-4, 5):
        rr = np.sqrt(r * r - (k * dz) ** 2)
        contours.append(np.c_[0.4 + rr * np.cos(th), -0.3 + rr * np.sin(th), np.full(96, 0.1 + k * dz)])
    k, j, i = np.meshgrid(*[np.arange(m) for m in grid.shape], indexing="ij")
    xyz = grid.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    dose = DoseGrid(grid, (60 + slope * xyz[:, axis]).reshape(grid.shape))
    dvh = compute_dvh(Structure("sph", 1, contours), dose, nominal_spacing_mm=dz)
    c = (0.4, -0.3)[axis]
    # widest plane k = 0 has radius r; vertices at theta = 0 / pi (x) or pi/2 / 3pi/2 (y)
    ext = r * (1.0 if axis == 0 else np.sin(th).max())
    assert dvh.max_gy == pytest.approx(60 + slope * (c + ext), abs=2e-5)
    assert dvh.min_gy == pytest.approx(60 + slope * (c - ext), abs=2e-5)


def test_nearest_extremes_are_the_voxels_the_object_overlaps():
    grid = Grid((10, 10, 10), (3.0, 3.0, 3.0), (-13.5, -13.5, -13.5))
    values = np.arange(1000, dtype=float).reshape(grid.shape)
    dose = DoseGrid(grid, values)
    # voxel 4 spans [-3, 0) mm and voxel 5 [0, 3) mm on every axis; a 2 x 2 mm square at
    # x, y in [-0.8, 1.2] on z = 0.3 (+-0.5 mm, so z in [-0.2, 0.8]) overlaps voxels 4 and 5
    # on each axis, and no other
    sq = np.array([[-0.8, -0.8, 0.3], [1.2, -0.8, 0.3], [1.2, 1.2, 0.3], [-0.8, 1.2, 0.3]])
    dvh = compute_dvh(Structure("sq", 1, [sq]), dose, nominal_spacing_mm=1.0, interpolation="nearest")
    vox = values[4:6, 4:6, 4:6]
    assert dvh.min_gy == vox.min() and dvh.max_gy == vox.max()
    assert dvh.dose_at_volume_pct(100) == vox.min() and dvh.dose_at_volume_cc(0) == vox.max()


def test_bilinear_maximum_inside_a_slanted_edge():
    """dose = S x y in one cell; the triangle (0,0), (1,0), (0,1) has its maximum S/4 at the
    middle of its hypotenuse, where no vertex lies (vertices alone give 0, the residual
    |m| / 4 of the docstring with mixed difference m = S); its mean is S / 12."""
    S = 8.0
    grid = Grid((2, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    values = np.zeros(grid.shape)
    values[:, 1, 1] = S
    dose = DoseGrid(grid, values)
    tri = np.array([[0.0, 0.0, 0.5], [1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    dvh = compute_dvh(Structure("tri", 1, [tri]), dose, nominal_spacing_mm=1.0, factor=16)
    assert dvh.max_gy == pytest.approx(S / 4, abs=1e-9)
    assert dvh.min_gy == pytest.approx(0.0, abs=1e-9)
    assert dvh.mean_gy == pytest.approx(S / 12, rel=2e-3)
    assert dvh.structure_volume_cc * 1000 == pytest.approx(0.5, rel=1e-3)
