"""Issue 11, class 4: absurd geometry with bounded memory, and Settings range checks.

* a structure whose bounding box misses the dose grid is ``outside_grid`` WITHOUT being
  rasterised (contours at 1e9 mm and other far places);
* a structure that would need more than ``Settings.max_memory_gb`` to rasterise (kilometre
  extents, an absurdly fine dose grid, a large factor on a large structure) is ``too_large``
  with the size it would need and what to do, checked before allocating;
* out-of-range Settings values are a :class:`SettingsError` naming the field and its option.

Memory is measured with tracemalloc (numpy reports its buffers to it), never timed.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
import warnings

import numpy as np
import pytest

from soars_dose import audit
from soars_dose.dose import compute as compute_mod
from soars_dose.dose.compare import Settings
from soars_dose.dose.precheck import estimate_sampling_bytes, outside_grid
from soars_dose.dosegrid import DoseGrid
from soars_dose.errors import InputError, SettingsError
from soars_dose.grid import Grid
from soars_dose.structures import Structure

from ..helpers import disc_stack, gradient_dose, oars, small_grid
from .case_helpers import cli, compare_args, load, write_case


def _square(x0, x1, y0, y1, zs):
    return [np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float) for z in zs]


FAR = {
    "x_1e9": lambda: disc_stack(1e9, 0, 6, -4, 4),
    "minus_z_1e9": lambda: disc_stack(0, 0, 6, -1e9 - 4, -1e9 + 4),
    "y_1e6": lambda: disc_stack(0, 1e6, 10, -4, 4),
    "just_beyond_x": lambda: disc_stack(37.5 + 6 + 0.5, 0, 6, -4, 4),  # 0.5 mm past the face
    "big_but_far": lambda: _square(5e5, 6e5, 5e5, 6e5, np.arange(-10, 10.1, 2.5)),
}


def _with_structures(paths: dict, reference: list) -> audit.Case:
    """The case of ``paths`` with the reference set's structures replaced in memory.

    The RTSTRUCT reader already skips contours with coordinates beyond
    ``ABSURD_COORDINATE_MM`` (1e4 mm); a set built in Python is not read
    through it, so the compare-level pre-check is what bounds memory there.
    The set keeps its file as ``source``, so messages still name it.
    """
    case = load(paths)
    case.sets["reference"] = dataclasses.replace(case.sets["reference"], structures=reference)
    return case


class _Spy:
    def __init__(self, monkeypatch):
        self.names = []
        real = compute_mod.sample_structure

        def spy(structure, *a, **kw):
            self.names.append(structure.name)
            return real(structure, *a, **kw)
        monkeypatch.setattr(compute_mod, "sample_structure", spy)


@pytest.mark.parametrize("variant", sorted(FAR))
def test_far_structure_is_outside_grid_without_rasterising(tmp_path, monkeypatch, variant):
    far = Structure("Brainstem", 9, FAR[variant]())
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()})
    case = _with_structures(paths, oars() + [far])
    spy = _Spy(monkeypatch)
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit.compare(case)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    st = res.stats.set_index(["set", "roi"])
    assert st.loc[("reference", "Brainstem"), "status"] == "outside_grid"
    msg = st.loc[("reference", "Brainstem"), "message"]
    assert str(paths["reference"]) in msg and "outside the dose grid" in msg
    assert "Brainstem" not in spy.names  # never rasterised
    assert set(spy.names) == {"Parotid_L", "SpinalCord"}
    # the other ROIs are right: mean of a cylinder at x in 30 + 0.5 x Gy
    assert st.loc[("reference", "SpinalCord"), "mean_gy"] == pytest.approx(36.0, abs=1e-3)
    assert peak < 200e6


def test_outside_grid_precheck_is_exact_at_the_face():
    """0.5 mm beyond the grid's x face: outside; 0.5 mm inside: not (the kernel decides)."""
    g = small_grid()  # x voxel faces at -37.5 .. 37.5 mm
    assert outside_grid(Structure("a", 1, disc_stack(37.5 + 6.5, 0, 6, -4, 4)), g, 2.0)
    assert not outside_grid(Structure("b", 1, disc_stack(37.5 + 5.5, 0, 6, -4, 4)), g, 2.0)
    # along the normal the slab reaches half a nominal spacing past the last plane
    top = 25.0  # z face of the grid (last centre 23.75 + 1.25)
    assert not outside_grid(Structure("c", 1, disc_stack(0, 0, 6, top + 0.9, top + 0.9)), g, 2.0)
    assert outside_grid(Structure("d", 1, disc_stack(0, 0, 6, top + 1.1, top + 1.1)), g, 2.0)


def test_precheck_agrees_with_kernel_on_partial(tmp_path):
    """A cylinder half beyond the x face is computed (partial), with the exact in-grid share."""
    edge = Structure("Eye_L", 10, disc_stack(-37.5, 0, 6, -4, 4))
    paths = write_case(tmp_path, {"reference": oars() + [edge], "auto": oars()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit.compare(load(paths))
    row = res.stats.set_index(["set", "roi"]).loc[("reference", "Eye_L")]
    assert row["status"] == "partial"
    assert row["coverage"] == pytest.approx(0.5, abs=0.01)  # half the disc, by symmetry


KM = {
    "km_square_through_grid": lambda: _square(-1e6, 1e6, -1e6, 1e6, [0.0, 2.5]),
    "km_long_strip": lambda: _square(-5e6, 5e6, -2, 2, np.arange(-4, 4.1, 2.5)),
    "one_point_at_1e9": lambda: [np.array([[0, 0, 0], [10, 0, 0], [1e9, 1e9, 0]], float)],
}


@pytest.mark.parametrize("variant", sorted(KM))
def test_kilometre_structure_is_refused_before_allocating(tmp_path, monkeypatch, variant):
    big = Structure("SpinalCord", 2, KM[variant]())
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()})
    case = _with_structures(paths, [oars()[0], big])
    spy = _Spy(monkeypatch)
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit.compare(case)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row = res.stats.set_index(["set", "roi"]).loc[("reference", "SpinalCord")]
    assert row["status"] == "too_large"
    assert str(paths["reference"]) in row["message"]
    assert "GB" in row["message"] and "--supersample" in row["message"]
    assert spy.names.count("SpinalCord") == 1  # only the substitute's cord was rasterised
    assert peak < 200e6
    assert any("too_large" == s for s in res.stats["status"])


def test_too_large_reports_the_size_it_would_need(tmp_path):
    big = Structure("SpinalCord", 2, _square(-1e6, 1e6, -1e6, 1e6, [0.0]))
    need, f = estimate_sampling_bytes(big, small_grid(), "auto", 2.5)
    # box of 2e6 mm / 2.5 mm x f sub-pixels per side, ROW_SUBSAMPLES * 80 + 24 bytes each
    side = 2e6 / 2.5 * f + 2
    assert need >= side * side * (4 * 80 + 24)
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit.compare(_with_structures(paths, [oars()[0], big]))
    msg = res.stats.set_index(["set", "roi"]).loc[("reference", "SpinalCord"), "message"]
    assert f"{need / 1e9:.3g} GB" in msg


def test_absurdly_fine_dose_grid_is_refused(tmp_path):
    """A dose grid at 1e-4 mm spacing: a 12 mm parotid is 1.2e5 pixels across."""
    fine = Grid(shape=(4, 30, 30), spacing=(1e-4, 1e-4, 1e-4), origin=(-10, 0, 0))
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()}, grid=fine,
                       dose=np.full(fine.shape, 10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit.compare(load(paths))
    row = res.stats.set_index(["set", "roi"]).loc[("reference", "Parotid_L")]
    assert row["status"] == "too_large"
    assert "1e-04" in row["message"] or "0.0001" in row["message"]


def test_large_factor_on_large_structure_refused(tmp_path):
    big = Structure("Cavity_Oral", 3, disc_stack(0, 0, 35, -10, 10))
    paths = write_case(tmp_path, {"reference": [big], "auto": [big]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit.compare(load(paths), Settings(factor=64))
    assert list(res.stats["status"]) == ["too_large", "too_large"]
    assert "factor 64" in res.stats["message"].iloc[0]


def test_user_memory_limit_binds_and_the_rest_is_computed(tmp_path):
    big = Structure("Cavity_Oral", 3, disc_stack(0, 0, 35, -10, 10))
    paths = write_case(tmp_path, {"reference": oars() + [big], "auto": oars()})
    case = load(paths)
    need, _ = estimate_sampling_bytes(big, case.dose.grid, "auto", 2.0)
    cord, _ = estimate_sampling_bytes(oars()[1], case.dose.grid, "auto", 2.0)
    assert cord < need / 2
    limit = round(need / 2 / 1e9, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit.compare(case, Settings(max_memory_gb=limit))
    st = res.stats.set_index(["set", "roi"])
    assert st.loc[("reference", "Cavity_Oral"), "status"] == "too_large"
    assert f"{limit:g} GB" in st.loc[("reference", "Cavity_Oral"), "message"]
    assert st.loc[("reference", "SpinalCord"), "status"] == "ok"
    assert st.loc[("reference", "SpinalCord"), "mean_gy"] == pytest.approx(36.0, abs=1e-3)


@pytest.mark.parametrize("name,points", [
    ("disc6", disc_stack(-10, 0, 6, -8, 8)),
    ("disc30", disc_stack(0, 0, 30, -10, 10)),
    ("diagonal_strip", [np.array([[-30, -30, z], [-29, -31, z], [31, 29, z], [30, 30, z]], float)
                        for z in np.arange(-6, 6.1, 2)]),
    ("single_plane", disc_stack(0, 0, 15, 0, 0)),
])
@pytest.mark.parametrize("factor", ["auto", 2, 8])
def test_estimate_bounds_the_measured_peak(name, points, factor):
    """The pre-check's estimate is at least the peak tracemalloc measures while rasterising."""
    g = Grid(shape=(20, 40, 40), spacing=(2.5, 2.5, 2.5), origin=(-48.75, -48.75, -23.75))
    dose = DoseGrid(g, gradient_dose(g))
    st = Structure(name, 1, points)
    est, _ = estimate_sampling_bytes(st, g, factor, 2.0)
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_mod.compute_dvh(st, dose, factor=factor, nominal_spacing_mm=2.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= est <= 30 * peak


BAD_SETTINGS = [
    ({"factor": 10000}, "factor", "--supersample"),
    ({"factor": 0}, "factor", "--supersample"),
    ({"factor": -2}, "factor", "--supersample"),
    ({"factor": 3}, "factor", "even"),
    ({"factor": 2.5}, "factor", "--supersample"),
    ({"factor": "fine"}, "factor", "--supersample"),
    ({"bin_width_gy": 0.0}, "bin_width_gy", "--bin-width"),
    ({"bin_width_gy": -0.01}, "bin_width_gy", "--bin-width"),
    ({"bin_width_gy": float("nan")}, "bin_width_gy", "--bin-width"),
    ({"bin_width_gy": 50.0}, "bin_width_gy", "--bin-width"),
    ({"near_zero_gy": -1.0}, "near_zero_gy", "--near-zero-gy"),
    ({"near_zero_gy": float("inf")}, "near_zero_gy", "--near-zero-gy"),
    ({"dvh_step_gy": 0.0}, "dvh_step_gy", "--dvh-step"),
    ({"d_pct": (5.0, 150.0)}, "d_pct", "--dx"),
    ({"d_cc": (-0.1,)}, "d_cc", "--dcc"),
    ({"v_gy": (float("nan"),)}, "v_gy", "--vgy"),
    ({"interpolation": "cubic"}, "interpolation", "--interpolation"),
    ({"max_memory_gb": 0.0}, "max_memory_gb", "--max-memory-gb"),
    ({"plausibility_max_share": 1.5}, "plausibility_max_share", "--plausibility-max-share"),
    ({"plausibility_air_hu": 400.0}, "plausibility_air_hu", "plausibility_bone_hu"),
]


@pytest.mark.parametrize("kw,field,option", BAD_SETTINGS)
def test_settings_out_of_range(kw, field, option):
    with pytest.raises(SettingsError) as exc:
        Settings(**kw)
    msg = str(exc.value)
    assert f"Settings.{field}" in msg and option in msg
    assert isinstance(exc.value, InputError)


@pytest.mark.parametrize("kw", [{}, {"factor": 1}, {"factor": 2}, {"factor": 64},
                                {"factor": np.int64(8)}, {"bin_width_gy": 1.0},
                                {"near_zero_gy": 0.0}, {"dvh_step_gy": 0.5},
                                {"d_pct": (0.0, 100.0)}, {"max_memory_gb": 0.5}])
def test_settings_in_range_accepted(kw):
    s = Settings(**kw)
    for k, v in kw.items():
        assert getattr(s, k) == v


@pytest.mark.parametrize("value", ["10000", "66", "3"])
def test_cli_absurd_supersample_exit_2(tmp_path, capsys, value):
    paths = write_case(tmp_path / "in", {"reference": oars(), "auto": oars()})
    rc, err = cli(compare_args(paths, tmp_path / "out", "--supersample", value), capsys)
    assert rc == 2
    assert "--supersample" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where_mm", [9e3, -5e3])
def test_cli_compare_with_a_far_structure_exit_0(tmp_path, capsys, where_mm):
    far = Structure("Brainstem", 9, disc_stack(where_mm, where_mm, 6, -4, 4))
    paths = write_case(tmp_path / "in", {"reference": oars() + [far], "auto": oars()})
    rc, err = cli(compare_args(paths, tmp_path / "out"), capsys)
    assert rc == 0
    assert "Brainstem: outside_grid" in err


def test_cli_compare_with_contours_at_1e9_mm(tmp_path, capsys):
    """Beyond 1e4 mm the reader skips the contour (warning naming file and ROI): an empty ROI."""
    far = Structure("Brainstem", 9, disc_stack(1e9, 1e9, 6, -4, 4))
    paths = write_case(tmp_path / "in", {"reference": oars() + [far], "auto": oars()})
    rc, err = cli(compare_args(paths, tmp_path / "out"), capsys)
    assert rc == 0
    assert str(paths["reference"]) in err and "Brainstem" in err and "1e+09 mm" in err
    assert "Brainstem: empty" in err


@pytest.mark.parametrize("extent_mm", [3e3, 9.5e3])
def test_cli_compare_kilometre_structure_in_both_sets_bounded(tmp_path, capsys, extent_mm):
    """Contour metrics build their own fine grid: it is size-checked too (status too_large)."""
    import pandas as pd

    big = Structure("SpinalCord", 2, _square(-extent_mm, extent_mm, -2, 2, np.arange(-4, 4.1, 2.5)))
    paths = write_case(tmp_path / "in", {"reference": [oars()[0], big], "auto": [oars()[0], big]})
    out = tmp_path / "out"
    tracemalloc.start()
    rc, err = cli(compare_args(paths, out), capsys)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rc == 0
    assert peak < 300e6
    st = pd.read_csv(out / "stats.csv").set_index(["set", "roi"])
    row = st.loc[("reference", "SpinalCord")]
    cm = pd.read_csv(out / "contour_metrics.csv").set_index(["set", "roi"])
    # a strip metres long: computable; the grid holds 75 mm of its 2 x extent_mm length
    assert row["status"] == "partial"
    assert row["coverage"] == pytest.approx(75.0 / (2 * extent_mm), rel=0.01)
    assert st.loc[("reference", "Parotid_L"), "mean_gy"] == pytest.approx(25.0, abs=1e-3)
    assert cm.loc[("auto", "Parotid_L"), "dice"] == pytest.approx(1.0)


def test_contour_metrics_of_a_kilometre_pair_are_too_large(tmp_path):
    """The contour metrics' own fine grid is size-checked too (sets built in memory)."""
    from soars_dose.analysis.contours import contour_metrics_for_case

    big = Structure("SpinalCord", 2, _square(-1e6, 1e6, -2, 2, np.arange(-4, 4.1, 2.5)))
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()})
    case = _with_structures(paths, [oars()[0], big])
    case.sets["auto"] = dataclasses.replace(case.sets["auto"], structures=[oars()[0], big])
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = contour_metrics_for_case(case).set_index(["set", "roi"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 300e6
    assert cm.loc[("auto", "SpinalCord"), "status"] == "too_large"
    assert str(paths["reference"]) in cm.loc[("auto", "SpinalCord"), "message"]
    assert cm.loc[("auto", "Parotid_L"), "dice"] == pytest.approx(1.0)
