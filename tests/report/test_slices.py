"""The slice viewer's data against closed-form geometry and analytic CT and dose (issue 13 part 3)."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from soars_dose.analysis.contours import mask as contour_mask
from soars_dose.case import Case
from soars_dose.errors import GeometryError
from soars_dose.grid import Grid
from soars_dose.report import slices as SL

from ..helpers import disc_stack
from .slice_case import (
    CENTRE_MM,
    CT_GRID,
    CX,
    CY,
    DOSE_GRID,
    Z0,
    Z1,
    R,
    dose_of,
    hu_of,
    make_case,
    make_stats,
    values_on,
)


def _full(data: SL.SliceData, key) -> np.ndarray:
    (k, j, i), m = data.masks[key]
    out = np.zeros(data.grid.shape, bool)
    out[k:k + m.shape[0], j:j + m.shape[1], i:i + m.shape[2]] = m
    return out


def test_ct_dose_and_mask_against_closed_form(tmp_path):
    case = make_case(tmp_path)
    data = SL.build_slice_data(case, make_stats())
    assert data is not None and data.stride == 1 and data.oars == ["Parotid_L"]
    assert data.sets == ["reference", "auto"]
    # CT numbers where the analytic CT puts them (LPS order: +z, +y, +x)
    assert np.array_equal(data.hu, values_on(data.grid, hu_of))
    assert np.allclose(data.grid.direction, np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]]))
    # dose: the linear field at every display voxel centre inside the dose grid, to 0.01 Gy
    truth = np.rint(values_on(data.grid, dose_of) * 100)
    didx = DOSE_GRID.world_to_index(data.grid.index_to_world(
        np.argwhere(np.ones(data.grid.shape, bool))))
    inside = case.dose.inside(didx).reshape(data.grid.shape)
    assert inside.any() and (~inside).any()
    # (between the outermost voxel centres and faces the RTDOSE is held constant, by design)
    core = np.all((didx >= 0) & (didx <= np.array(DOSE_GRID.shape) - 1), axis=1).reshape(
        data.grid.shape)
    assert core.sum() > 1000
    assert np.abs(data.dose_cgy[core].astype(float) - truth[core]).max() <= 1
    assert np.all(data.dose_cgy[~inside] == SL.DOSE_OUTSIDE)
    # the mask: cylinder volume pi r^2 h (h = 11 slabs of 2 mm), centroid at its centre
    m = _full(data, ("Parotid_L", "reference"))
    vol = m.sum() * np.prod(data.grid.spacing)
    assert vol == pytest.approx(np.pi * R**2 * 22.0, rel=0.04)
    # in-plane: the pixels the polygon covers by half or more (shapely's areas; the
    # rasteriser's coverage is exact to ~1 %, so pixels within 2 % of a half may go either way)
    poly = Polygon(disc_stack(CX, CY, R, 0, 0, 2.0, 96)[0][:, :2])
    x0, y0 = data.grid.origin[0], data.grid.origin[1]
    cover = {(j, i): poly.intersection(box(x0 + i - 0.5, y0 + j - 0.5, x0 + i + 0.5,
                                           y0 + j + 0.5)).area
             for j in range(data.grid.shape[1]) for i in range(data.grid.shape[2])}
    surely_in = {p for p, a in cover.items() if a > 0.52}
    maybe = {p for p, a in cover.items() if 0.48 <= a <= 0.52}
    planes = np.flatnonzero(m.any(axis=(1, 2)))
    assert len(planes) == 11 and len(surely_in) > 150
    for k in planes:
        drawn = {(int(j), int(i)) for j, i in np.argwhere(m[k])}
        assert surely_in <= drawn <= surely_in | maybe
    centre = data.grid.world_to_index(np.array(CENTRE_MM))
    assert np.allclose(centre, np.rint(centre)) and data.centroid["Parotid_L"] == list(
        np.rint(centre).astype(int))
    # the crop holds the OAR with its margin, and no more than that
    lo, hi = data.grid.world_bounds()
    assert lo[0] <= CX - R - SL.MARGIN_MM + 1 and hi[0] >= CX + R + SL.MARGIN_MM - 1
    assert hi[0] - lo[0] <= 2 * (R + SL.MARGIN_MM) + 3


def test_masks_are_the_contour_metrics_masks(tmp_path):
    """On the CT's own pixels the viewer draws exactly what the contour metrics measured."""
    case = make_case(tmp_path, sub_contours=disc_stack(CX + 2, CY, R - 1, Z0 + 2, Z1, 2.0, 96))
    data = SL.build_slice_data(case, make_stats())
    for s in ("reference", "auto"):
        st = case.sets[s]["Parotid_L"]
        assert np.array_equal(_full(data, ("Parotid_L", s)),
                              contour_mask(st, data.grid, case.nominal_spacing_mm(s)))


def test_largest_difference_is_where_the_sets_differ(tmp_path):
    # the substitute's contour on z = 5 mm has a radius of 11 mm instead of 8
    sub = disc_stack(CX, CY, R, Z0, Z1, 2.0, 96)
    k5 = [n for n, c in enumerate(sub) if c[0, 2] == 5.0][0]
    sub[k5] = disc_stack(CX, CY, 11.0, 5.0, 5.0, 2.0, 96)[0]
    data = SL.build_slice_data(make_case(tmp_path, sub_contours=sub), make_stats())
    k, j, i = data.largest_difference["Parotid_L"]
    k5, jc, ic = data.grid.world_to_index(np.array([CX, CY, 5.0]))
    assert k == k5
    # coronal and sagittal: a row through the ring between the two radii
    assert 7 <= abs(j - jc) <= 11 and 7 <= abs(i - ic) <= 11
    # identical sets: nowhere to go but the centroid
    same = SL.build_slice_data(make_case(tmp_path, name="ct2"), make_stats())
    assert same.largest_difference["Parotid_L"] == same.centroid["Parotid_L"]


@pytest.mark.parametrize("signs", [(1, -1, -1), (-1, 1, -1), (-1, -1, 1)])
def test_any_axis_aligned_ct_is_shown_in_lps_order(tmp_path, signs):
    """A CT whose array axes run backwards (prone, feet first) gives the same views."""
    sz, sy, sx = signs
    d = np.array([[0, 0, sz], [0, sy, 0], [sx, 0, 0]], float)
    lo = np.array([-29.5, -29.5, -29.0])
    hi = lo + (np.array(CT_GRID.shape[::-1]) - 1) * np.array(CT_GRID.spacing[::-1])
    origin = np.where(np.array([sx, sy, sz]) > 0, lo, hi)
    flipped = Grid(CT_GRID.shape, CT_GRID.spacing, tuple(origin), d)
    a = SL.build_slice_data(make_case(tmp_path, name="hfs"), make_stats())
    b = SL.build_slice_data(make_case(tmp_path, ct_grid=flipped, name="flip"), make_stats())
    assert b.grid.same_as(a.grid)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.dose_cgy, b.dose_cgy)
    assert np.array_equal(_full(a, ("Parotid_L", "reference")),
                          _full(b, ("Parotid_L", "reference")))


def test_a_large_crop_is_coarsened_to_the_budget(tmp_path):
    case = make_case(tmp_path)
    hu = case.ct.load_hu()
    # CT noise that does not compress: the budget forces a coarser grid
    hu = hu + np.random.default_rng(1).normal(0, 40, hu.shape).astype(np.float32)
    data = SL.build_slice_data(case, make_stats(), budget_bytes=30_000, hu=hu)
    assert data.stride >= 2 and data.notes
    assert data.grid.spacing[1] == data.stride * CT_GRID.spacing[1]
    size = len(gzip.compress(SL.hu_codes(data.hu).tobytes() + SL.dose_block(data.dose_cgy), 6))
    assert size <= 30_000 or min(data.grid.shape[1:]) // (data.stride + 1) < 8
    # the coarse CT is the block mean of the fine one; the mask still the cylinder
    m = _full(data, ("Parotid_L", "reference"))
    assert m.sum() * np.prod(data.grid.spacing) == pytest.approx(np.pi * R**2 * 22, rel=0.08)
    # coarse voxel (k, 0, 0) = mean of the fine 2x2 (or s x s) block at the crop's corner
    fine = SL.build_slice_data(case, make_stats(), hu=hu)
    s = data.stride
    block = fine.hu[:, :s, :s].astype(float).mean(axis=(1, 2))
    assert np.abs(data.hu[:, 0, 0] - block).max() <= 0.5 + 1e-9


def test_page_encoding_round_trips_within_its_stated_steps():
    hu = np.arange(-1024, 3072, dtype=float)
    back = SL.hu_from_codes(SL.hu_codes(hu))
    err = np.abs(back - hu)
    soft = (hu >= -200) & (hu <= 300)
    assert err[soft].max() <= 1.5 + 1e-9  # 3 HU per code
    assert err[hu < -200].max() <= 10.3 and err.max() <= 29.0
    assert np.all(np.diff(SL.hu_codes(hu).astype(int)) >= 0)
    # dose: decoded here independently (bytes -> int16 differences -> running sum)
    rng = np.random.default_rng(0)
    dose = rng.integers(0, 8000, 5000).astype(np.uint16)
    dose[rng.random(5000) < 0.1] = SL.DOSE_OUTSIDE
    raw = np.frombuffer(SL.dose_block(dose), np.uint8)
    n = dose.size
    delta = (raw[:n].astype(np.uint16) | (raw[n:].astype(np.uint16) << 8)).view(np.int16)
    values = np.cumsum(delta.astype(np.int64))
    expect = np.where(dose == SL.DOSE_OUTSIDE, -1, np.rint(dose / 10.0))
    assert np.array_equal(values, expect)


def test_npz_round_trip(tmp_path):
    data = SL.build_slice_data(make_case(tmp_path), make_stats())
    back = SL.from_npz(io.BytesIO(SL.to_npz(data)))
    assert back.grid.same_as(data.grid) and back.stride == data.stride
    assert np.array_equal(back.hu, data.hu) and np.array_equal(back.dose_cgy, data.dose_cgy)
    assert back.masks.keys() == data.masks.keys()
    for key, (off, m) in data.masks.items():
        assert tuple(back.masks[key][0]) == tuple(off)
        assert np.array_equal(back.masks[key][1], m)
    assert back.centroid == data.centroid and back.largest_difference == data.largest_difference
    with pytest.raises(ValueError, match="slices.npz"):
        SL.from_npz(io.BytesIO(b"not an npz"))
    with pytest.raises(ValueError, match="slices.npz"):
        SL.from_npz(io.BytesIO(SL.to_npz(data)[:-200]))


def test_no_ct_no_oar_and_oblique_ct_give_a_reason(tmp_path):
    case = make_case(tmp_path)
    stats = make_stats()
    no_ct = Case(dose=case.dose, sets=case.sets, ct=None)
    data, note = SL.slice_data_or_note(no_ct, stats)
    assert data is None and "--ct" in note
    data, note = SL.slice_data_or_note(case, stats.assign(status="missing"))
    assert data is None and "no OAR" in note
    th = np.radians(10)
    # rows and columns turned 10 degrees about z (a tilted, not axis-aligned, image plane)
    d = np.array([[0, 0, 1], [np.sin(th), np.cos(th), 0], [np.cos(th), -np.sin(th), 0]])
    oblique = Case(dose=case.dose, sets=case.sets, ct=case.ct)
    oblique.ct = type(case.ct)(**{**case.ct.__dict__,
                                  "grid": Grid(CT_GRID.shape, CT_GRID.spacing, CT_GRID.origin, d)})
    with pytest.raises(GeometryError, match="oblique"):
        SL.build_slice_data(oblique, stats)
    data, note = SL.slice_data_or_note(oblique, stats)
    assert data is None and "oblique" in note
