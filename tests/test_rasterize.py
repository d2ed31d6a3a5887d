"""The geometry kernel: coverage, slabs, end caps, gaps, holes, occupancy, plane orientation."""

from __future__ import annotations

import numpy as np
import pytest

from soars_dose.dose.compute import compute_dvh
from soars_dose.dosegrid import DoseGrid
from soars_dose.errors import StructureError
from soars_dose.grid import Grid
from soars_dose.rasterize import (
    occupancy,
    polygon_coverage,
    sample_structure,
    slab_bounds,
)
from soars_dose.structures import Structure
from soars_dose.synthetic.exact_dvh import ExactDVH, planes


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


# ------------------------------------------------ degenerate contours (issue 10 part 2)
def _plane(poly2, z):
    return np.c_[poly2, np.full(len(poly2), z)]


@pytest.mark.parametrize("poly2", [
    np.array([[0.3, 0.4], [0.32, 0.4], [0.32, 0.42], [0.3, 0.42]]),        # 4e-4 mm^2 square
    np.array([[1.5, 1.5], [1.53, 1.5], [1.5, 1.51]]),                      # on a voxel face
    np.array([[0.0, 0.0], [0.05, 0.0], [0.05, 0.004], [0.0, 0.004]]),      # on a voxel centre
    # a triangle filling most of one 3/16 mm sub-pixel (x in [-4.3125, -4.125), y in
    # [6.9375, 7.125) with the automatic factor 16), crossing several sub-rows
    np.array([[-4.30, 6.95], [-4.14, 6.95], [-4.14, 7.10]]),
])
def test_a_contour_smaller_than_a_sub_pixel_keeps_its_area(poly2):
    s = Structure("tiny", 1, [_plane(poly2, 0.7)])
    smp = sample_structure(s, GRID, nominal_spacing_mm=2.0)
    assert smp.factor == 16
    assert smp.volume_mm3 == pytest.approx(2.0 * _poly_area(poly2), rel=1e-9)


def test_tiny_island_adds_and_tiny_hole_removes_its_area():
    big = _circle(0.4, 0.3, 8.0, 0.0)
    hole = np.array([[0.31, 0.3], [0.33, 0.3], [0.33, 0.32], [0.31, 0.32]])  # inside big
    island = np.array([[12.0, 12.0], [12.02, 12.0], [12.02, 12.02]])          # outside big
    a_big = _poly_area(big[:, :2])
    base = sample_structure(Structure("b", 1, [big]), GRID, nominal_spacing_mm=2.0, factor=8).volume_mm3
    with_hole = sample_structure(Structure("h", 1, [big, _plane(hole, 0.0)]), GRID,
                                 nominal_spacing_mm=2.0, factor=8).volume_mm3
    with_isl = sample_structure(Structure("i", 1, [big, _plane(island, 0.0)]), GRID,
                                nominal_spacing_mm=2.0, factor=8).volume_mm3
    assert base == pytest.approx(2.0 * a_big, rel=1e-4)
    assert with_hole - base == pytest.approx(-2.0 * _poly_area(hole), rel=1e-6)
    assert with_isl - base == pytest.approx(2.0 * _poly_area(island), rel=1e-6)


def test_cone_tip_contributes_its_volume_and_its_extreme_dose():
    """A cone whose last contour is 4e-4 mm^2: its slab still counts, and in a SI
    gradient the maximum is at the end cap beyond that contour."""
    dz, r, n = 3.0, 10.0, 8
    cs = [_circle(0.2, 0.1, r * (1 - k / n), -12.0 + k * dz) for k in range(n)]
    tip_r = np.sqrt(4e-4 / np.pi)
    cs.append(_circle(0.2, 0.1, tip_r, -12.0 + n * dz, n=64))
    s = Structure("cone", 1, cs)
    k, j, i = np.meshgrid(*[np.arange(m) for m in GRID.shape], indexing="ij")
    xyz = GRID.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    dose = DoseGrid(GRID, (40 + xyz[:, 2]).reshape(GRID.shape))
    smp = sample_structure(s, GRID, nominal_spacing_mm=dz)
    truth = dz * sum(_poly_area(c[:, :2]) for c in cs)
    assert smp.volume_mm3 == pytest.approx(truth, rel=2e-3)
    tip_slab = sum(b.area_mm2.sum() for b in smp.blocks if b.axis_pos.min() > GRID.world_to_index(
        [0, 0, -12.0 + n * dz - dz])[0])
    assert tip_slab == pytest.approx(_poly_area(cs[-1][:, :2]), rel=1e-6)
    dvh = compute_dvh(s, dose, nominal_spacing_mm=dz)
    assert dvh.max_gy == pytest.approx(40 + (-12.0 + n * dz + dz / 2), abs=1e-4)
    assert dvh.min_gy == pytest.approx(40 + (-12.0 - dz / 2), abs=1e-4)


BOWTIE = np.array([[-10.0, -10.0], [10.0, 10.0], [10.0, -10.0], [-10.0, 10.0]])  # lobes 2 x 100 mm^2


@pytest.mark.parametrize("poly2,area", [
    (BOWTIE, 200.0),                                                      # signed area 0
    (np.array([[-10.0, -10.0], [5.0, 5.0], [5.0, -5.0], [-10.0, 10.0]]), 100.0 + 25.0),  # lobes 100 + 25
    # figure-eight: two circles of radius 5 traced in opposite senses (signed area 0)
    (np.r_[np.c_[-5 + 5 * np.cos(np.linspace(0, 2 * np.pi, 200, endpoint=False)),
                 5 * np.sin(np.linspace(0, 2 * np.pi, 200, endpoint=False))],
           np.c_[5 - 5 * np.cos(np.linspace(0, 2 * np.pi, 200, endpoint=False)),
                 5 * np.sin(np.linspace(0, 2 * np.pi, 200, endpoint=False))]], None),
])
def test_self_intersecting_contour_keeps_its_even_odd_area(poly2, area):
    if area is None:  # the two 200-gons, each of area 100 sin(2 pi / 200) 200 / 2
        area = 2 * 0.5 * 200 * 25 * np.sin(2 * np.pi / 200)
    cs = [_plane(poly2 + [0.3, -0.2], z) for z in (-4.0, -2.0, 0.0, 2.0, 4.0)]
    smp = sample_structure(Structure("bow", 1, cs), GRID, nominal_spacing_mm=2.0)
    assert smp.volume_mm3 == pytest.approx(5 * 2.0 * area, rel=2e-3)


def _duplicate_variants(c):
    rng = np.random.default_rng(3)
    return {
        "exact": c.copy(),
        "shifted start": np.roll(c, 37, axis=0),
        "reversed": c[::-1].copy(),
        "jitter 0.005 mm": c + rng.uniform(-0.003, 0.003, c.shape) * [1, 1, 0],
    }


@pytest.mark.parametrize("variant", ["exact", "shifted start", "reversed", "jitter 0.005 mm"])
def test_duplicate_contour_is_dropped_with_a_warning(variant):
    from soars_dose.errors import SoarsDoseWarning

    dz = 2.0
    cs = [_circle(0.4, 0.3, 7.0, z) for z in np.arange(-4, 4.1, dz)]
    dup = _duplicate_variants(cs[2])[variant]
    s = Structure("Brainstem", 1, cs[:3] + [dup] + cs[3:])
    with pytest.warns(SoarsDoseWarning, match=r"rs\.dcm: ROI 'Brainstem': contour 4 on plane z = 0\.00 mm"):
        smp = sample_structure(s, GRID, nominal_spacing_mm=dz, source="rs.dcm")
    assert smp.volume_mm3 == pytest.approx(len(cs) * dz * _poly_area(cs[0][:, :2]), rel=2e-3)
    assert any("repeats" in n for n in smp.notes)


def test_near_but_not_duplicate_contour_and_real_hole_are_kept():
    import warnings

    from shapely.geometry import Polygon

    dz = 2.0
    a = _circle(0.4, 0.3, 7.0, 0.0)
    b = _circle(0.9, 0.3, 7.0, 0.0)  # 0.5 mm off: a real (odd) contour, not a repeat
    hole = _circle(0.4, 0.3, 3.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v_ab = sample_structure(Structure("ab", 1, [a, b]), GRID, nominal_spacing_mm=dz).volume_mm3
        v_ring = sample_structure(Structure("ring", 1, [a, hole]), GRID, nominal_spacing_mm=dz).volume_mm3
    pa, pb = Polygon(a[:, :2]), Polygon(b[:, :2])
    assert v_ab == pytest.approx(dz * pa.symmetric_difference(pb).area, rel=1e-2)
    assert v_ring == pytest.approx(dz * (pa.area - Polygon(hole[:, :2]).area), rel=2e-3)
    # the outer contour exported twice around a hole: the repeat goes, the hole stays
    with pytest.warns(Warning, match="repeats"):
        v = sample_structure(Structure("ring2", 1, [a, hole, a.copy()]), GRID,
                             nominal_spacing_mm=dz).volume_mm3
    assert v == pytest.approx(v_ring, rel=1e-9)


def _square_planes(zs, half=10.0):
    return [np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], float)
            for z in zs]


@pytest.mark.parametrize("zs, with_caps, without", [
    ([0.0, 3.0, 6.0, 9.0], 400.0 * 12, 400.0 * 9),          # caps add half a slice at each end
    ([0.0, 3.0, 12.0, 15.0], 400.0 * 12, 400.0 * 6),        # a break: caps on both sides of it
    ([0.0, 3.0, 6.0, 15.0], 400.0 * 12, 400.0 * 6),         # an isolated last plane: 0 without caps
])
def test_end_caps_off_stops_the_object_at_its_end_planes(zs, with_caps, without):
    """Square 20 x 20 mm on 3 mm planes: volume = area x slab lengths, by hand."""
    grid = Grid(shape=(12, 16, 16), spacing=(2.0, 2.0, 2.0), origin=(-15.0, -15.0, -4.0))
    st = Structure("box", 1, _square_planes(zs))
    capped = sample_structure(st, grid, nominal_spacing_mm=3.0)
    bare = sample_structure(st, grid, nominal_spacing_mm=3.0, end_caps=False)
    assert capped.volume_mm3 == pytest.approx(with_caps, rel=1e-9)
    assert bare.volume_mm3 == pytest.approx(without, rel=1e-9)
    assert occupancy(bare).sum() * 8.0 == pytest.approx(without, rel=1e-9)


def test_end_caps_off_single_plane_is_degenerate():
    grid = Grid(shape=(4, 16, 16), spacing=(2.0, 2.0, 2.0), origin=(-15.0, -15.0, -4.0))
    with pytest.raises(StructureError):
        sample_structure(Structure("one", 1, _square_planes([0.0])), grid, nominal_spacing_mm=3.0,
                         end_caps=False)


def _star(cx, cy, r_in, r_out, n_tips, z, phase=0.0):
    th = np.linspace(0, 2 * np.pi, 2 * n_tips, endpoint=False) + phase
    r = np.where(np.arange(th.size) % 2 == 0, r_out, r_in)
    return np.c_[cx + r * np.cos(th), cy + r * np.sin(th), np.full(th.size, z)]


@pytest.mark.parametrize("seed", range(6))
def test_region_voxels_hold_every_voxel_the_region_is_interpolated_from(seed):
    """Every point of a plane's region (shapely, independent of the kernel) is
    interpolated from voxels of the block's ``cells``: stars with thin spikes,
    tiny islands, holes and contours reaching outside the grid."""
    import shapely
    from shapely.geometry import Polygon

    rng = np.random.default_rng(seed)
    grid = Grid((6, 14, 16), (2.5, 2.5, 3.0), (-20.0, -17.0, -7.5))
    contours = []
    for z in (-6.0, -3.0, 0.0, 3.0):
        cx, cy = rng.uniform(-15, 15), rng.uniform(-12, 12)
        contours.append(_star(cx, cy, rng.uniform(0.2, 3.0), rng.uniform(4.0, 16.0),
                              int(rng.integers(3, 9)), z, rng.uniform(0, 6.3)))
        if rng.uniform() < 0.5:  # a hole, or a tiny island of a fraction of a sub-pixel
            r = rng.choice([0.05, 1.0])
            contours.append(_circle(cx, cy, r, z, n=12))
    st = Structure(name="s", number=1, contours=contours)
    for factor in (1, 2, 6):
        s = sample_structure(st, grid, factor=factor, allow_odd=True)
        shape2 = (grid.shape[1], grid.shape[2])
        for blk in s.blocks:
            region = None
            for p in blk.polygons:
                q = Polygon(p)
                region = q if region is None else region.symmetric_difference(q)
            x0, y0, x1, y1 = region.bounds
            pts = np.c_[rng.uniform(x0, x1, 20000), rng.uniform(y0, y1, 20000)]
            pts = pts[shapely.contains_xy(region, pts[:, 0], pts[:, 1])]
            # the region is closed: its boundary counts too
            edge = np.vstack([p + t * (np.roll(p, -1, axis=0) - p)
                              for p in blk.polygons for t in np.linspace(0, 1, 9)])
            pts = np.vstack([pts, edge])
            (r0, c0), m = blk.cells_origin, blk.cells
            # trilinear weights in-plane, coordinates clamped to the grid (constant to the faces)
            cr = np.clip(pts[:, 0], 0, shape2[0] - 1.0)
            cc = np.clip(pts[:, 1], 0, shape2[1] - 1.0)
            i0r = np.minimum(np.floor(cr).astype(int), shape2[0] - 2)
            i0c = np.minimum(np.floor(cc).astype(int), shape2[1] - 2)
            fr, fc = cr - i0r, cc - i0c
            for vr, vc, w in ((i0r, i0c, (1 - fr) * (1 - fc)), (i0r + 1, i0c, fr * (1 - fc)),
                              (i0r, i0c + 1, (1 - fr) * fc), (i0r + 1, i0c + 1, fr * fc)):
                used = w > 0  # a voxel of weight 0 does not matter
                vr, vc = vr[used] - r0, vc[used] - c0
                assert np.all((vr >= 0) & (vr < m.shape[0]) & (vc >= 0) & (vc < m.shape[1]))
                assert np.all(m[vr, vc])


def test_extreme_geometry_of_many_planes_is_that_of_each_plane():
    """Batching planes changes nothing: each plane's cut edges and lattice nodes are its own."""
    from soars_dose.rasterize import extreme_geometry, extreme_geometry_planes

    rng = np.random.default_rng(3)
    shape2 = (14, 16)
    planes = []
    for _ in range(7):
        cx, cy = rng.uniform(0, 14), rng.uniform(0, 16)
        star = _star(cx, cy, rng.uniform(0.3, 2.0), rng.uniform(2.0, 9.0), 5, 0.0)[:, :2]
        planes.append([star, _circle(cx, cy, 0.4, 0.0, n=9)[:, :2]] if rng.uniform() < 0.5 else [star])
    many = extreme_geometry_planes(planes, shape2)
    for polys, got in zip(planes, many):
        want = extreme_geometry(polys, shape2)
        # extreme_geometry is itself the one-plane case: compare with a by-hand lattice count
        for g, w in zip(got, want):
            assert np.array_equal(np.unique(g, axis=0), np.unique(w, axis=0))
    # lattice nodes against an independent even-odd test (matplotlib-free ray casting)
    for polys, (_, _, nodes) in zip(planes, many):
        rr, cc = np.meshgrid(np.arange(14.0), np.arange(16.0), indexing="ij")
        q = np.c_[rr.ravel(), cc.ravel()]
        inside = np.zeros(len(q), bool)
        for p in polys:
            r0, c0 = p[:, 0][None], p[:, 1][None]
            r1, c1 = np.roll(p[:, 0], -1)[None], np.roll(p[:, 1], -1)[None]
            cross = (r0 <= q[:, :1]) != (r1 <= q[:, :1])
            with np.errstate(divide="ignore", invalid="ignore"):
                xc = c0 + (q[:, :1] - r0) * (c1 - c0) / (r1 - r0)
            inside ^= np.count_nonzero(cross & (xc > q[:, 1:]), axis=1) % 2 == 1
        integer = nodes[np.all(nodes == np.round(nodes), axis=1)]
        assert {tuple(x) for x in integer} == {tuple(x) for x in q[inside]}
