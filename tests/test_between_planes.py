"""``between_planes``: the stack stays the default; ``interpolate`` recovers the true solid.

Truth is the solid itself (``soars_dose/synthetic/solids.py``): volumes by formula and
DVHs in linear dose fields by integrating the analytic cross-section, never
our kernel. Issue 10 part 3: at 3 mm contour spacing the interpolated
volume is within 1 % of the solid for radii >= 10 mm, and Dmean, D95, D5,
Dmin and Dmax are within 1 % of the solid's in linear gradients along x, y
and z. The cone's base is a flat end: where a flat end lies within a
spacing cannot be known from the contours, so the cone's base is put where
the planning-system convention puts it (half a spacing beyond the last
plane) and only its apex is offset from the planes (by its height).
"""

from __future__ import annotations

import numpy as np
import pytest

from soars_dose.between_planes import MODES, prepare, reconstruct
from soars_dose.dose.compare import Settings
from soars_dose.dose.compute import compute_dvh
from soars_dose.errors import InputError
from soars_dose.grid import Grid
from soars_dose.rasterize import sample_structure
from soars_dose.structures import Structure
from soars_dose.synthetic.solids import (
    CENTRE,
    DOSE_AT_CENTRE,
    SLOPE,
    Solid,
    grid_around,
    linear_dose,
    placed_solid,
)


def _structure(solid: Solid, dz: float, z0: float) -> Structure:
    return Structure(name="solid", number=1, contours=solid.contours(dz, z0))


def _volume_mm3(structure: Structure, grid: Grid, dz: float, mode: str) -> float:
    rec = prepare(structure, mode, nominal_spacing_mm=dz)
    return sample_structure(rec.structure, grid, nominal_spacing_mm=rec.nominal_spacing_mm).volume_mm3


# ------------------------------------------------------------------ volume
VOLUME_CASES = (
    [(k, r, 3.0, off) for k in ("sphere", "cylinder", "cone") for r in (10.0, 15.0, 20.0)
     for off in (0.0, 1.37)]
    + [(k, 10.0, dz, off) for k in ("sphere", "cylinder", "cone") for dz, off in ((1.0, 0.31), (2.0, 0.0))]
)


@pytest.mark.parametrize("kind,r,dz,offset", VOLUME_CASES)
def test_interpolated_volume_is_the_solid_within_1pct(kind, r, dz, offset):
    solid, z0 = placed_solid(kind, r, dz, offset)
    v = _volume_mm3(_structure(solid, dz, z0), grid_around(solid), dz, "interpolate")
    assert v / solid.volume - 1 == pytest.approx(0, abs=0.01), f"{kind} r={r} dz={dz} off={offset}"


@pytest.mark.parametrize("r,offset", [(15.0, 0.0), (10.0, 1.5), (10.0, 0.0)])
def test_interpolate_removes_the_stack_error_of_a_cylinder_lying_in_the_plane(r, offset):
    """The stack's chord-ended slabs miss or add 2.6-3.5 % here; interpolation cuts that >= 3x."""
    solid, z0 = placed_solid("cylinder", r, 3.0, offset)
    st, grid = _structure(solid, 3.0, z0), grid_around(solid)
    err_stack = _volume_mm3(st, grid, 3.0, "stack") / solid.volume - 1
    err_interp = _volume_mm3(st, grid, 3.0, "interpolate") / solid.volume - 1
    assert abs(err_stack) > 0.02  # the known stack error (a property of the stack, not a bug)
    assert abs(err_interp) < abs(err_stack) / 3


# ------------------------------------------------------------------ DVH
def _dvh_pair(kind, r, dz, offset, axis):
    solid, z0 = placed_solid(kind, r, dz, offset)
    st = _structure(solid, dz, z0)
    rec = reconstruct(st, nominal_spacing_mm=dz)
    dose = linear_dose(grid_around(solid), axis)
    dvh = compute_dvh(rec.structure, dose, nominal_spacing_mm=rec.nominal_spacing_mm)
    return dvh, solid.dvh(axis, DOSE_AT_CENTRE, SLOPE[axis])


DVH_CASES = ([(k, 10.0, 3.0, 1.37, ax) for k in ("sphere", "cylinder", "cone") for ax in "xyz"]
             + [("sphere", 20.0, 3.0, 0.0, "z"), ("cylinder", 15.0, 3.0, 0.0, "z"),
                ("cone", 15.0, 3.0, 0.6, "z")])


@pytest.mark.parametrize("kind,r,dz,offset,axis", DVH_CASES)
def test_interpolated_dmean_d95_d5_within_1pct_of_the_solid(kind, r, dz, offset, axis):
    dvh, truth = _dvh_pair(kind, r, dz, offset, axis)
    label = f"{kind} r={r} dz={dz} {axis}"
    assert dvh.mean_gy == pytest.approx(truth.mean, rel=0.01), label
    assert dvh.dose_at_volume_pct(95) == pytest.approx(truth.dose_at_pct(95), rel=0.01), label
    assert dvh.dose_at_volume_pct(5) == pytest.approx(truth.dose_at_pct(5), rel=0.01), label


@pytest.mark.parametrize("kind,r,dz,offset,axis", DVH_CASES)
def test_interpolated_dmin_dmax_within_1pct_of_the_solid(kind, r, dz, offset, axis):
    dvh, truth = _dvh_pair(kind, r, dz, offset, axis)
    assert dvh.min_gy == pytest.approx(truth.dmin, rel=0.01)
    assert dvh.max_gy == pytest.approx(truth.dmax, rel=0.01)


def test_true_solid_dvh_helper_against_closed_forms():
    """The truth helper itself: sphere cap volume and a cylinder's mean, by formula."""
    s = Solid("sphere", 10.0, CENTRE)
    t = s.dvh("z", 60.0, 1.0)
    h = 4.0  # cap above z = centre + 6
    assert t.volume_at(66.0) == pytest.approx(np.pi * h * h * (3 * 10 - h) / 3, rel=1e-9)
    assert t.mean == pytest.approx(60.0, abs=1e-9)
    c = Solid("cone", 10.0, CENTRE, length=20.0).dvh("z", 0.0, 1.0)
    # centroid of a cone is a quarter of its height above the base
    assert c.mean == pytest.approx(-10.0 + 5.0, abs=1e-6)
    assert c.volume == pytest.approx(np.pi * 100 * 20 / 3, rel=1e-9)


# ------------------------------------------------------------------ modes
def test_stack_is_the_default_and_returns_the_structure_untouched():
    assert Settings().between_planes == "stack"
    assert MODES == ("stack", "interpolate")
    solid, z0 = placed_solid("sphere", 10.0, 3.0, 0.4)
    st = _structure(solid, 3.0, z0)
    rec = prepare(st, nominal_spacing_mm=3.0)
    assert rec.structure is st and rec.nominal_spacing_mm == 3.0 and rec.mode == "stack"
    grid = grid_around(solid)
    assert _volume_mm3(st, grid, 3.0, "stack") == sample_structure(
        st, grid, nominal_spacing_mm=3.0).volume_mm3


def test_interpolate_keeps_the_drawn_contours_and_adds_planes_between():
    solid, z0 = placed_solid("sphere", 10.0, 3.0, 0.4)
    st = _structure(solid, 3.0, z0)
    rec = reconstruct(st, nominal_spacing_mm=3.0)
    assert rec.nominal_spacing_mm == pytest.approx(0.5)
    drawn = {round(float(c[0, 2]), 6) for c in st.contours}
    new = {round(float(c[0, 2]), 6) for c in rec.structure.contours}
    assert drawn < new
    gaps = np.diff(sorted(new))
    assert gaps.max() <= 0.5 + 1e-9  # no gap the kernel would read as a break
    for c in st.contours:  # the drawn contours themselves, unchanged
        assert any(np.array_equal(c, d) for d in rec.structure.contours)


def test_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(InputError, match="stack, interpolate"):
        Settings(between_planes="spline")
    st = Structure("s", 1, Solid("sphere", 5.0, CENTRE).contours(2.0, 0.0))
    with pytest.raises(InputError, match="stack, interpolate"):
        prepare(st, "spline")


def test_a_skipped_slice_stays_a_break():
    """Two z-cylinders 12 mm apart on 2 mm planes: no bridge is interpolated across the gap."""
    th = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    disc = lambda z: np.c_[8 * np.cos(th), 8 * np.sin(th), np.full(th.size, z)]
    contours = [disc(z) for z in (-15.0, -13.0, -11.0, -9.0, -7.0, 7.0, 9.0, 11.0, 13.0, 15.0)]
    st = Structure("two", 1, contours)
    grid = Grid(shape=(24, 12, 12), spacing=(2.0, 2.0, 2.0), origin=(-11.0, -11.0, -23.0))
    v_stack = _volume_mm3(st, grid, 2.0, "stack")
    v_interp = _volume_mm3(st, grid, 2.0, "interpolate")
    # 2 x 5 planes of 2 mm each; flat ends keep their half spacing
    assert v_interp == pytest.approx(v_stack, rel=0.01)
    rec = reconstruct(st, nominal_spacing_mm=2.0)
    zs = sorted({round(float(c[0, 2]), 6) for c in rec.structure.contours})
    assert not any(-5 < z < 5 for z in zs)


def test_single_plane_structure_is_left_as_drawn_with_a_note():
    st = Structure("flat", 1, [Solid("sphere", 5.0, CENTRE).contours(20.0, CENTRE[2])[0]])
    rec = reconstruct(st, nominal_spacing_mm=3.0)
    assert rec.structure is st
    assert any("single contour plane" in n for n in rec.notes)
