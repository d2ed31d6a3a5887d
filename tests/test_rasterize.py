"""The geometry kernel: coverage, slabs, end caps, gaps, holes, occupancy, plane orientation."""

from __future__ import annotations

import numpy as np
import pytest

from soars_dose.dose.compute import compute_dvh
from soars_dose.dose.dosegrid import DoseGrid
from soars_dose.errors import StructureError
from soars_dose.grid import Grid
from soars_dose.rasterize import occupancy, polygon_coverage, sample_structure, slab_bounds
from soars_dose.structures import Structure

from .dose.closed_form import ExactDVH, planes


def _circle(cx, cy, r, z, n=256):
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[cx + r * np.cos(th), cy + r * np.sin(th), np.full(n, z)]


def _poly_area(p):
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


GRID = Grid((20, 20, 20), (3.0, 3.0, 3.0), (-28.5, -28.5, -28.5))


def test_coverage_of_axis_aligned_rectangle_is_exact():
    # edges on sub-row midpoints are exact whatever their position along the columns
    rect = np.array([[0.0, 0.3], [0.0, 4.7], [3.0, 4.7], [3.0, 0.3]])
    _, _, cov, _ = polygon_coverage([rect])
    assert cov.sum() == pytest.approx(3.0 * 4.4, abs=1e-9)


def test_even_odd_hole_and_overlapping_islands():
    outer = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)
    hole = np.array([[2, 2], [2, 6], [6, 6], [6, 2]], float)
    _, _, cov, _ = polygon_coverage([outer, hole])
    assert cov.sum() == pytest.approx(100 - 16, abs=1e-9)
    assert cov[4, 4] == pytest.approx(0.0)


def test_slab_bounds_half_way_end_caps_and_breaks():
    lo, hi = slab_bounds(np.array([0.0, 2.0, 4.0, 8.0]), nominal=2.0)
    np.testing.assert_allclose(lo, [-1, 1, 3, 7])
    np.testing.assert_allclose(hi, [1, 3, 5, 9])  # 4 -> 8 is a break: caps of 1 each


def test_skipped_slice_is_not_filled():
    dz, r = 2.0, 6.0
    zs = [z for z in np.arange(-8, 8.1, dz) if abs(z) > 1e-9]  # plane z=0 skipped
    s = Structure("cyl", 1, [_circle(0.2, 0.1, r, z) for z in zs])
    smp = sample_structure(s, GRID, nominal_spacing_mm=dz)
    area = _poly_area(s.contours[0])
    assert smp.volume_mm3 == pytest.approx(len(zs) * dz * area, rel=2e-3)
    assert any("treated as breaks" in n for n in smp.notes)


def test_single_plane_structure_gets_nominal_thickness():
    s = Structure("disc", 1, [_circle(1.0, -2.0, 5.0, 0.7)])
    smp = sample_structure(s, GRID, nominal_spacing_mm=2.5)
    assert smp.volume_mm3 == pytest.approx(2.5 * _poly_area(s.contours[0]), rel=2e-3)


def test_annulus_volume_and_occupancy_sum():
    dz = 2.0
    cs = []
    for z in np.arange(-6, 6.1, dz):
        cs += [_circle(0.4, 0.3, 10.0, z), _circle(0.4, 0.3, 5.0, z)]
    s = Structure("ring", 1, cs)
    smp = sample_structure(s, GRID, nominal_spacing_mm=dz)
    ring = _poly_area(cs[0]) - _poly_area(cs[1])
    assert smp.volume_mm3 == pytest.approx(7 * dz * ring, rel=2e-3)
    occ = occupancy(smp)
    assert occ.max() <= 1.0 + 1e-6 and occ.min() >= 0
    assert occ.sum(dtype=np.float64) * GRID.voxel_volume_mm3 == pytest.approx(smp.volume_mm3, rel=1e-6)
    # the voxel at the ring's centre is (almost) empty, one in the ring wall full
    centre = np.round(GRID.world_to_index([0.4, 0.3, 0.0])).astype(int)
    assert occ[tuple(centre)] < 0.01


def test_sagittal_contours_on_an_axial_dose_grid():
    """Contours stacked along x (sagittal planes) with a dose gradient along x."""
    dz = 1.5
    axial = planes("sphere", 6.0, (0.0, 0.0, 0.0), dz)
    # (x, y, z) -> (z', x', y'): plane normal becomes patient x
    centre = np.array([1.3, -0.8, 0.45])
    sag = [np.c_[c[:, 2], c[:, 0], c[:, 1]] + centre for c in axial]
    k, j, i = np.meshgrid(*[np.arange(n) for n in GRID.shape], indexing="ij")
    xyz = GRID.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    dose = DoseGrid(GRID, (60 + 1.5 * (xyz[:, 0] - centre[0])).reshape(GRID.shape))
    dvh = compute_dvh(Structure("sag", 1, sag), dose, nominal_spacing_mm=dz)
    exact = ExactDVH(axial, dz, 60.0, 1.5, "z")  # in the sphere's own frame: gradient along its normal
    assert dvh.structure_volume_cc * 1000 == pytest.approx(exact.volume, rel=0.01)
    assert dvh.mean_gy == pytest.approx(exact.mean, rel=0.005)
    for v in (0.1, 0.5, 0.9):
        d = exact.dose_at_volume(v * exact.volume)
        assert dvh.dose_at_volume_pct(100 * v) == pytest.approx(d, rel=0.01)


def test_empty_structure_is_refused():
    with pytest.raises(StructureError, match="no contour"):
        sample_structure(Structure("none", 1, []), GRID)
