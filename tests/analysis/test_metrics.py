"""Contour metrics: hand-computed cases, empty-mask policy, tolerances, and
agreement with DeepMind's ``surface-distance`` on its two-observer data.

Surfel areas used in the hand-computed cases (spacing s = (s0, s1, s2), a box
of voxels; DeepMind's marching-cubes surface):

* T: a box vertex (one inside voxel in the 2x2x2 cell) is one triangle
  with index-space area vector (1/8, 1/8, 1/8):
  ``T = sqrt((s1 s2)^2 + (s0 s2)^2 + (s0 s1)^2) / 8``;
* E_a: a corner on an edge running along axis a (two inside voxels) is a
  rectangle of length s_a and width half the cell diagonal across it:
  ``E_a = s_a sqrt(s_b^2 + s_c^2) / 2``;
* F_a: a corner inside a face perpendicular to axis a (four inside voxels)
  is a full cell cross-section: ``F_a = s_b s_c``.
"""

from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from soars_dose.analysis import metrics as M
from soars_dose.errors import InputError

SP = (2.5, 1.0, 0.8)


def box(shape, lo, size) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, a + n) for a, n in zip(lo, size))] = True
    return m


def areas(s):
    s0, s1, s2 = s
    T = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8
    E = (s0 * math.hypot(s1, s2) / 2, s1 * math.hypot(s0, s2) / 2, s2 * math.hypot(s0, s1) / 2)
    F = (s1 * s2, s0 * s2, s0 * s1)
    return T, E, F


def box_area(n, s):
    """Total surfel area of a box of n = (n0, n1, n2) voxels."""
    T, E, F = areas(s)
    return (8 * T + 4 * sum((n[a] - 1) * E[a] for a in range(3))
            + 2 * sum((n[(a + 1) % 3] - 1) * (n[(a + 2) % 3] - 1) * F[a] for a in range(3)))


# --------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------

def test_surfel_areas_of_a_box_match_the_hand_formulas():
    for n in [(1, 1, 1), (3, 2, 4), (10, 2, 2)]:
        m = box((14, 8, 9), (2, 3, 1), n)
        sd = M.surface_distances(m, m, SP)
        assert sd.areas_ref.sum() == pytest.approx(box_area(n, SP), rel=1e-12)
        assert np.all(sd.distances_ref_to_sub == 0)
    # a single voxel: the marching-cubes octahedron, sqrt(3) at unit spacing
    one = box((3, 3, 3), (1, 1, 1), (1, 1, 1))
    assert M.surface_distances(one, one, (1, 1, 1)).areas_ref.sum() == pytest.approx(math.sqrt(3))


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_shifted_cubes_dice_and_hausdorff(axis, k):
    n = 5
    shape = (20, 20, 20)
    lo = [2, 2, 2]
    ref = box(shape, lo, (n, n, n))
    lo[axis] += k
    sub = box(shape, lo, (n, n, n))
    assert M.dice(ref, sub) == max(n - k, 0) / n          # exact: 2 n^2 (n-k) / 2 n^3
    sd = M.surface_distances(ref, sub, SP)
    assert M.hausdorff(sd) == pytest.approx(k * SP[axis], rel=1e-12)
    assert M.hausdorff(M.surface_distances(sub, ref, SP)) == pytest.approx(k * SP[axis], rel=1e-12)
    cm = M.contour_metrics(ref, sub, SP, 2.0)
    assert cm["status"] == "ok"
    assert cm["dice"] == max(n - k, 0) / n
    assert cm["hd_mm"] == pytest.approx(k * SP[axis], rel=1e-12)
    assert cm["volume_ref_cc"] == pytest.approx(n ** 3 * 2.5 * 1.0 * 0.8 / 1000)
    assert cm["volume_diff_cc"] == 0 and cm["volume_diff_pct"] == 0


def test_elongated_box_shifted_one_slice_hd95_asd_surface_dice_apl():
    """Box of 10 x 2 x 2 voxels, substitute one slice further along axis 0.

    Reference surfels: the low face (and its edges and vertices), area
    L = 4T + 2E_1 + 2E_2 + F_0, lies s0 = 2.5 mm from the substitute (the
    substitute's low face right above); the centre of the high face, area
    F_0, lies min(s0, s1, s2) = 0.8 mm from the substitute's side faces; all
    other surfels lie on the substitute surface (0). The substitute is the
    mirror image, so both directions are alike.
    """
    T, E, F = areas(SP)
    L = 4 * T + 2 * E[1] + 2 * E[2] + F[0]
    total = box_area((10, 2, 2), SP)
    assert L / total < 0.05 <= (L + F[0]) / total          # the 95 % cut falls in the 0.8 group
    ref = box((14, 5, 5), (1, 1, 1), (10, 2, 2))
    sub = box((14, 5, 5), (2, 1, 1), (10, 2, 2))
    sd = M.surface_distances(ref, sub, SP)
    for d, a in ((sd.distances_ref_to_sub, sd.areas_ref), (sd.distances_sub_to_ref, sd.areas_sub)):
        assert a.sum() == pytest.approx(total, rel=1e-12)
        assert a[np.isclose(d, 2.5)].sum() == pytest.approx(L, rel=1e-12)
        assert a[np.isclose(d, 0.8)].sum() == pytest.approx(F[0], rel=1e-12)
        assert a[d == 0].sum() == pytest.approx(total - L - F[0], rel=1e-12)
    asd = (2.5 * L + 0.8 * F[0]) / total
    assert M.hausdorff(sd) == 2.5
    assert M.hd95(sd) == 0.8
    assert M.hd95(sd, percent=100) == 2.5
    assert M.hd95(sd, percent=50) == 0.0
    assert M.directed_average_surface_distances(sd) == pytest.approx((asd, asd), rel=1e-12)
    assert M.average_surface_distance(sd) == pytest.approx(asd, rel=1e-12)
    assert M.surface_dice(sd, 1.0) == pytest.approx(1 - L / total, rel=1e-12)
    assert M.surface_dice(sd, 0.8) == pytest.approx(1 - L / total, rel=1e-12)   # <= counts
    assert M.surface_dice(sd, 0.5) == pytest.approx(1 - (L + F[0]) / total, rel=1e-12)
    assert M.surface_dice(sd, 2.5) == 1.0
    assert M.dice(ref, sub) == 0.9
    # APL: only the first reference slice (a 2 x 2 square: 4 boundary pixels)
    # has no substitute contour; pixel size sqrt(1.0 * 0.8) mm
    assert M.added_path_length(ref, sub, SP) == pytest.approx(4 * math.sqrt(0.8))
    cm = M.contour_metrics(ref, sub, SP, 1.0)
    assert cm["hd95_mm"] == 0.8 and cm["hd_mm"] == 2.5
    assert cm["asd_mm"] == pytest.approx(asd) and cm["surface_dice"] == pytest.approx(1 - L / total)
    assert cm["apl_mm"] == pytest.approx(4 * math.sqrt(0.8))


def test_small_bump_hd95_below_hausdorff():
    """A 6^3 cube; the substitute adds one voxel on top of the face k = high.

    Every reference surfel stays a substitute surfel (distance 0); the only
    substitute surfels off the reference surface are the 4 top corners of
    the bump (one-voxel cells, area T each) at s0 above the cube.
    """
    T, _, _ = areas(SP)
    ref = box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    sub = ref.copy()
    sub[8, 4, 4] = True
    sd = M.surface_distances(ref, sub, SP)
    assert np.all(sd.distances_ref_to_sub == 0)
    far = sd.distances_sub_to_ref > 0
    assert np.count_nonzero(far) == 4
    assert np.allclose(sd.distances_sub_to_ref[far], 2.5) and np.allclose(sd.areas_sub[far], T)
    assert M.hausdorff(sd) == 2.5
    assert M.hd95(sd) == 0.0                       # 4 T is far below 5 % of the area
    rs, sr = M.directed_average_surface_distances(sd)
    assert rs == 0.0
    assert sr == pytest.approx(2.5 * 4 * T / sd.areas_sub.sum(), rel=1e-12)
    assert M.average_surface_distance(sd) == pytest.approx(
        2.5 * 4 * T / (sd.areas_ref.sum() + sd.areas_sub.sum()), rel=1e-12)


def test_mask_against_itself():
    rng = np.random.default_rng(1)
    m = rng.random((12, 15, 17)) > 0.6
    cm = M.contour_metrics(m, m, SP, 0.0)
    assert cm["status"] == "ok"
    assert cm["dice"] == 1.0 and cm["surface_dice"] == 1.0
    assert cm["hd_mm"] == 0 and cm["hd95_mm"] == 0 and cm["asd_mm"] == 0
    assert cm["asd_ref_to_sub_mm"] == 0 and cm["asd_sub_to_ref_mm"] == 0
    assert cm["apl_mm"] == 0 and cm["volume_diff_cc"] == 0


def test_added_path_length_in_plane_shift_and_tolerance():
    """5 x 5 squares on 3 slices, substitute one column to the right.

    Per slice the reference contour pixels off the substitute contour are the
    left column (5) and the inner 3 pixels of the right column (inside the
    substitute): 8 pixels. Each lies one column (0.8 mm) from a substitute
    contour pixel.
    """
    sp = (2.5, 1.0, 0.8)
    ref = box((5, 9, 9), (1, 2, 2), (3, 5, 5))
    sub = box((5, 9, 9), (1, 2, 3), (3, 5, 5))
    px = math.sqrt(1.0 * 0.8)
    assert M.added_path_length(ref, sub, sp) == pytest.approx(3 * 8 * px)
    assert M.added_path_length(ref, sub, sp, tolerance_mm=0.5) == pytest.approx(3 * 8 * px)
    assert M.added_path_length(ref, sub, sp, tolerance_mm=0.8) == 0.0
    # empty substitute: the whole contour, 16 boundary pixels per 5 x 5 slice
    empty = np.zeros_like(ref)
    assert M.added_path_length(ref, empty, sp) == pytest.approx(3 * 16 * px)
    assert M.added_path_length(empty, sub, sp) == 0.0
    # a mask touching the array edge still has its edge pixels as contour
    edge = box((1, 3, 3), (0, 0, 0), (1, 3, 3))
    assert M.added_path_length(edge, np.zeros_like(edge), (1, 1, 1)) == 8.0


def test_volume_cc_and_input_kinds():
    m = box((6, 7, 8), (1, 1, 1), (2, 3, 4))
    assert M.volume_cc(m, SP) == pytest.approx(24 * 2.0 / 1000)
    sub = box((6, 7, 8), (1, 2, 1), (2, 3, 4))
    ref_cm = M.contour_metrics(m, sub, SP, 1.0)
    # uint8, float, Fortran-ordered and non-contiguous inputs give the same numbers
    for conv in (lambda a: a.astype(np.uint8), lambda a: a.astype(np.float32) * 0.5,
                 lambda a: a.astype(np.int16) * 7, np.asfortranarray):
        assert M.contour_metrics(conv(m), conv(sub), SP, 1.0) == ref_cm
    wide = np.zeros((6, 7, 16), bool)
    wide[:, :, ::2] = m
    strided = wide[:, :, ::2]
    assert not strided.flags.c_contiguous and not strided.flags.f_contiguous
    assert M.contour_metrics(strided, sub, SP, 1.0) == ref_cm


# --------------------------------------------------------------------------
# empty masks and errors
# --------------------------------------------------------------------------

def test_substitute_empty_is_missing_in_set():
    ref = box((6, 8, 8), (1, 2, 2), (3, 3, 3))
    sub = np.zeros_like(ref)
    cm = M.contour_metrics(ref, sub, SP, 2.0)
    assert list(cm) == list(M.METRIC_KEYS)
    assert cm["status"] == "missing_in_set"
    assert cm["dice"] == 0.0 and cm["surface_dice"] == 0.0
    assert cm["hd_mm"] == math.inf and cm["hd95_mm"] == math.inf and cm["asd_mm"] == math.inf
    assert cm["asd_ref_to_sub_mm"] == math.inf and math.isnan(cm["asd_sub_to_ref_mm"])
    # APL = the whole reference contour: 8 boundary pixels on each of 3 slices
    assert cm["apl_mm"] == pytest.approx(3 * 8 * math.sqrt(0.8))
    assert cm["volume_ref_cc"] == pytest.approx(27 * 2.0 / 1000) and cm["volume_sub_cc"] == 0
    assert cm["volume_diff_pct"] == -100.0 and cm["tolerance_mm"] == 2.0
    sd = M.surface_distances(ref, sub, SP)
    assert sd.distances_sub_to_ref.size == 0 and np.all(np.isinf(sd.distances_ref_to_sub))


@pytest.mark.parametrize("sub_voxels", [0, 5])
def test_reference_empty_is_no_reference(sub_voxels):
    ref = np.zeros((6, 8, 8), bool)
    sub = np.zeros_like(ref)
    sub.flat[:sub_voxels] = True
    cm = M.contour_metrics(ref, sub, SP, 2.0)
    assert cm["status"] == "no_reference"
    for key in ("dice", "surface_dice", "hd_mm", "hd95_mm", "asd_mm", "asd_ref_to_sub_mm",
                "asd_sub_to_ref_mm", "apl_mm", "volume_diff_cc", "volume_diff_pct"):
        assert math.isnan(cm[key]), key
    assert cm["volume_ref_cc"] == 0 and cm["volume_sub_cc"] == pytest.approx(sub_voxels * 0.002)


def test_single_metrics_of_two_empty_masks_are_nan():
    e = np.zeros((4, 4, 4), bool)
    sd = M.surface_distances(e, e, SP)
    assert all(a.size == 0 for a in (sd.distances_ref_to_sub, sd.areas_ref,
                                     sd.distances_sub_to_ref, sd.areas_sub))
    for value in (M.dice(e, e), M.hausdorff(sd), M.hd95(sd), M.average_surface_distance(sd),
                  M.surface_dice(sd, 1.0), *M.directed_average_surface_distances(sd)):
        assert math.isnan(value)


def test_bad_inputs():
    a = np.zeros((4, 5, 6), bool)
    b = np.zeros((4, 5, 7), bool)
    with pytest.raises(ValueError, match=r"mask_ref \(4, 5, 6\) and mask_sub \(4, 5, 7\)"):
        M.contour_metrics(a, b, SP, 1.0)
    for fn in (lambda: M.dice(a, b), lambda: M.surface_distances(a, b, SP),
               lambda: M.added_path_length(a, b, SP)):
        with pytest.raises(ValueError, match="same shape"):
            fn()
    with pytest.raises(ValueError, match="3-D"):
        M.dice(a[0], a[0])
    with pytest.raises(ValueError, match="spacing_mm"):
        M.surface_distances(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing_mm"):
        M.surface_distances(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="tolerance_mm"):
        M.contour_metrics(a, a, SP, -1.0)
    with pytest.raises(ValueError, match="percent"):
        M.hd95(M.surface_distances(a, a, SP), percent=101)


# --------------------------------------------------------------------------
# agreement with DeepMind surface-distance on synthetic masks
# --------------------------------------------------------------------------

def _sdm():
    return pytest.importorskip("surface_distance")


@pytest.mark.parametrize("spacing", [(2.5, 1.0, 0.8), (1.0, 1.0, 1.0), (0.37, 2.9, 1.3)])
def test_surfel_area_table_equals_deepmind(spacing):
    lookup_tables = pytest.importorskip("surface_distance.lookup_tables")
    ours = M.surfel_area_table(spacing)
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=0)


def _deepmind(ref, sub, spacing, tol):
    sdm = _sdm()
    with warnings.catch_warnings():     # its scipy.ndimage.filters / .morphology imports
        warnings.simplefilter("ignore", DeprecationWarning)
        r = sdm.compute_surface_distances(ref != 0, sub != 0, spacing)
    return r, {
        "dice": sdm.compute_dice_coefficient(ref != 0, sub != 0),
        "hd95": sdm.compute_robust_hausdorff(r, 95),
        "asd": sdm.compute_average_surface_distance(r),
        "sdsc": sdm.compute_surface_dice_at_tolerance(r, tol),
    }


def _assert_same_surfaces(sd, r):
    """Same surfels, same distances (both sorted the same way)."""
    np.testing.assert_array_equal(sd.distances_ref_to_sub, r["distances_gt_to_pred"])
    np.testing.assert_array_equal(sd.distances_sub_to_ref, r["distances_pred_to_gt"])
    np.testing.assert_allclose(sd.areas_ref, r["surfel_areas_gt"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(sd.areas_sub, r["surfel_areas_pred"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_agree_with_deepmind(seed):
    """Smoothed random blobs, some touching the array edges, anisotropic spacing."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    shape = (14, 22, 19)
    spacing = tuple(rng.uniform(0.5, 3.0, 3))
    f = ndimage.gaussian_filter(rng.random(shape), 1.5)
    ref = f > np.quantile(f, 0.6)
    sub = ndimage.gaussian_filter(f + 0.02 * rng.standard_normal(shape), 0.7) > np.quantile(f, 0.62)
    if seed % 2:
        ref[0, :, :] |= ref[1]          # touch the array faces
        sub[:, -1, :] |= sub[:, -2]
    r, dm = _deepmind(ref, sub, spacing, 1.5)
    sd = M.surface_distances(ref, sub, spacing)
    _assert_same_surfaces(sd, r)
    assert M.dice(ref, sub) == dm["dice"]
    assert M.hd95(sd) == dm["hd95"]
    assert M.directed_average_surface_distances(sd) == pytest.approx(dm["asd"], rel=1e-12)
    assert M.surface_dice(sd, 1.5) == pytest.approx(dm["sdsc"], rel=1e-12)
    assert M.hausdorff(sd) == max(r["distances_gt_to_pred"].max(), r["distances_pred_to_gt"].max())


# --------------------------------------------------------------------------
# agreement with DeepMind surface-distance on its two-observer data
# --------------------------------------------------------------------------

TWO_OBSERVER = Path("deepmind_two_observer") / "validation"
SCANS = ("0522c0014", "0522c0519", "0522c0576", "0522c0727a", "0522c0727b",
         "TCGA-CV-5977", "TCGA-CV-5978")
OARS = ("Brain", "Brainstem", "Cochlea-Lt", "Cochlea-Rt", "Lacrimal-Lt", "Lacrimal-Rt",
        "Lens-Lt", "Lens-Rt", "Lung-Lt", "Lung-Rt", "Mandible", "Optic-Nerve-Lt",
        "Optic-Nerve-Rt", "Orbit-Lt", "Orbit-Rt", "Parotid-Lt", "Parotid-Rt",
        "Spinal-Canal", "Spinal-Cord", "Submandibular-Lt", "Submandibular-Rt")
#: CI subset: all OARs of two scans without identical observer pairs, plus
#: two OARs of each other scan (one of them a pair where both observers left
#: the OAR empty). SOARS_DOSE_FULL_AGREEMENT=1 runs all 147.
_FULL = os.environ.get("SOARS_DOSE_FULL_AGREEMENT") == "1"
_SAMPLE = {"0522c0014": ("Parotid-Rt", "Spinal-Cord"), "0522c0576": ("Orbit-Lt", "Mandible"),
           "0522c0727a": ("Lens-Rt", "Submandibular-Lt"),
           "0522c0727b": ("Optic-Nerve-Lt", "Brainstem"),
           "TCGA-CV-5977": ("Cochlea-Lt", "Submandibular-Lt")}   # both observers empty
CASES = [(s, o) for s in SCANS for o in OARS
         if _FULL or s in ("0522c0519", "TCGA-CV-5978") or o in _SAMPLE.get(s, ())]


@lru_cache(maxsize=64)
def _read(path: str):
    import nrrd
    data, header = nrrd.read(path)
    spacing_xyz = np.linalg.norm(np.asarray(header["space directions"], float), axis=1)
    # NRRD axes are (x, y, z): [z, y, x] is the transpose, spacing reversed
    return data.T, tuple(float(s) for s in spacing_xyz[::-1])


def compare_case(root: Path, scan: str, oar: str) -> dict:
    """Relative differences ours vs DeepMind for one scan x OAR (used by the test
    and by the full 147-case run)."""
    pytest.importorskip("nrrd")
    ref, spacing = _read(str(root / "oncologist" / scan / "segmentations" / f"{oar}.nrrd"))
    sub, spacing_sub = _read(str(root / "radiographer" / scan / "segmentations" / f"{oar}.nrrd"))
    assert spacing == spacing_sub
    table = M.load_tolerances()
    from soars_dose.names import AliasTable
    canonical = AliasTable.default().match(oar).canonical
    assert canonical in table, f"{oar} -> {canonical} has no tolerance entry"
    tol = M.tolerance_for(canonical, table)
    sdm = _sdm()

    ours = M.contour_metrics(ref, sub, spacing, tol)
    sd = M.surface_distances(ref, sub, spacing)
    both = (ref != 0) | (sub != 0)
    if not both.any():
        # both observers left this OAR empty (TCGA-CV-5977 submandibular glands):
        # DeepMind gives no surfels (its Dice and robust Hausdorff of empty masks
        # fail under NumPy 2: np.NaN / np.Inf); we report 'no_reference', NaN metrics
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            r = sdm.compute_surface_distances(ref != 0, sub != 0, spacing)
        assert all(len(v) == 0 for v in r.values())
        assert all(a.size == 0 for a in (sd.distances_ref_to_sub, sd.distances_sub_to_ref))
        assert ours["status"] == "no_reference"
        assert all(math.isnan(ours[k]) for k in ("dice", "surface_dice", "hd95_mm", "asd_mm"))
        return {"both_empty": True}
    # DeepMind on the union bounding box + 2 voxels: its own crop gives the
    # same sub-volume, so its results are unchanged and the test is faster
    idx = [np.flatnonzero(both.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    crop = tuple(slice(max(i[0] - 2, 0), i[-1] + 3) for i in idx)
    r, dm = _deepmind(np.ascontiguousarray(ref[crop]), np.ascontiguousarray(sub[crop]),
                      spacing, tol)
    _assert_same_surfaces(sd, r)

    def rel(a, b):
        a, b = float(a), float(b)
        return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))

    extra = {f"sdsc@{t}": rel(M.surface_dice(sd, t), sdm.compute_surface_dice_at_tolerance(r, t))
             for t in (1.0, 3.0)}
    return {
        "dice": rel(ours["dice"], dm["dice"]),
        "hd95": rel(ours["hd95_mm"], dm["hd95"]),
        "asd_ref_to_sub": rel(ours["asd_ref_to_sub_mm"], dm["asd"][0]),
        "asd_sub_to_ref": rel(ours["asd_sub_to_ref_mm"], dm["asd"][1]),
        "surface_dice": rel(ours["surface_dice"], dm["sdsc"]),
        "hd": rel(ours["hd_mm"], max(r["distances_gt_to_pred"].max(),
                                     r["distances_pred_to_gt"].max())),
        "hd_robust100": rel(ours["hd_mm"], sdm.compute_robust_hausdorff(r, 100)),
        **extra,
    }


@pytest.mark.parametrize(("scan", "oar"), CASES, ids=[f"{s}-{o}" for s, o in CASES])
def test_two_observer_agrees_with_deepmind(shared_data, scan, oar):
    root = shared_data / TWO_OBSERVER
    if not (root / "oncologist" / scan / "segmentations" / f"{oar}.nrrd").is_file():
        pytest.skip(f"{scan}/{oar} is absent from {root}")
    diffs = compare_case(root, scan, oar)
    if diffs.pop("both_empty", False):
        return
    del diffs["hd_robust100"]           # DeepMind's 100th percentile is not always the max
    bad = {k: v for k, v in diffs.items() if v > 1e-6}
    assert not bad, f"{scan}/{oar}: relative differences {bad}"


# --------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------

DEEPMIND_CANONICAL = (
    "Brain", "Brainstem", "Cochlea_L", "Cochlea_R", "Glnd_Lacrimal_L", "Glnd_Lacrimal_R",
    "Lens_L", "Lens_R", "Lung_L", "Lung_R", "Bone_Mandible", "OpticNrv_L", "OpticNrv_R",
    "Orbit_L", "Orbit_R", "Parotid_L", "Parotid_R", "SpinalCanal", "SpinalCord",
    "Glnd_Submand_L", "Glnd_Submand_R")


def test_packaged_tolerances():
    table = M.load_tolerances()
    assert set(DEEPMIND_CANONICAL) <= set(table)
    assert table["default"] == 2.0
    assert all(isinstance(v, float) and 0 < v < 10 for v in table.values())
    from soars_dose.names import AliasTable
    aliases = AliasTable.default()
    for name in table:
        if name != "default":
            assert aliases.match(name).canonical == name, f"{name} is not a canonical OAR name"
    assert M.tolerance_for("Parotid_L", table) == table["Parotid_L"]
    assert M.tolerance_for("Musc_Constrict_S", table) == table["default"]


#: Values of the packaged table read from the cited stored sources (see the
#: comments of soars_dose/data/surface_tolerances.yaml).
CITED_TOLERANCES = {
    "Brain": 1.01, "Brainstem": 2.5, "Cochlea_L": 1.25, "Lens_R": 0.98,
    "Bone_Mandible": 1.01, "Bone_Mandible_L": 1.01, "OpticNrv_L": 2.5, "Parotid_R": 2.85,
    "SpinalCord": 2.93, "Glnd_Submand_L": 2.02,
}
#: Paper OARs whose value no stored source gave: placeholders at the default.
UNVERIFIED = {"Glnd_Lacrimal_L", "Glnd_Lacrimal_R", "Lung_L", "Lung_R", "Orbit_L",
              "Orbit_R", "SpinalCanal"}


def test_packaged_tolerances_have_the_cited_values():
    table = M.load_tolerances()
    for oar, mm in CITED_TOLERANCES.items():
        assert table[oar] == mm, oar
        assert M.tolerance_for(oar, table) == mm
    assert M.tolerance_for("Parotid Lt", table) == 2.85      # via the alias table
    # left and right agree wherever the paper gives one value per organ pair
    for name in table:
        if name.endswith("_L"):
            assert table[name] == table[name[:-2] + "_R"], name


def test_loader_marks_the_unverified_tolerances():
    table = M.load_tolerances()
    assert isinstance(table, M.ToleranceTable) and isinstance(table, dict)
    assert table.unverified == UNVERIFIED
    assert "unverified" not in table                         # reserved key, not an OAR
    assert all(table[oar] == table["default"] for oar in UNVERIFIED)
    assert not table.unverified & set(CITED_TOLERANCES)
    # each of the paper's 21 OARs has a cited value (none is the 2.0 mm
    # default) or is marked unverified
    assert UNVERIFIED <= set(DEEPMIND_CANONICAL)
    for oar in DEEPMIND_CANONICAL:
        assert oar in table.unverified or table[oar] != table["default"], oar


def test_user_file_settles_or_adds_unverified_tolerances(tmp_path):
    f = tmp_path / "tol.yaml"
    f.write_text("Lung_L: 3.1\nEye_L: 1.5\nunverified: [Eye_L, Brainstem]\n")
    table = M.load_tolerances(f)
    assert table["Lung_L"] == 3.1
    assert table.unverified == (UNVERIFIED - {"Lung_L"}) | {"Eye_L", "Brainstem"}
    assert table["Brainstem"] == 2.5                         # packaged value kept
    assert M.load_tolerances().unverified == UNVERIFIED      # packaged table unchanged


def test_user_tolerances_override_and_aliases(tmp_path):
    f = tmp_path / "tol.yaml"
    f.write_text("Parotid_L: 3.5\nMusc_Constrict_S: 1\ndefault: 2.5\n")
    table = M.load_tolerances(f)
    assert table["Parotid_L"] == 3.5 and table["Musc_Constrict_S"] == 1.0
    assert table["Brainstem"] == M.load_tolerances()["Brainstem"]
    assert M.tolerance_for("Parotid Lt", table) == 3.5        # via the alias table
    assert M.tolerance_for("Larynx", table) == 2.5
    with pytest.raises(InputError, match="default"):
        M.tolerance_for("Larynx", {"Parotid_L": 1.0})


@pytest.mark.parametrize("text, problem", [
    ("Parotid_L: [1, 2\n", "not valid YAML"),
    ("- Parotid_L\n- 2.0\n", "mapping"),
    ("Parotid_L: -1\n", "Parotid_L"),
    ("Parotid_L: two\n", "Parotid_L"),
    ("Parotid_L: true\n", "Parotid_L"),
    ("Parotid_L: .nan\n", "Parotid_L"),
    ("unverified: Lung_L\n", "list of OAR names"),
    ("unverified: [1, 2]\n", "list of OAR names"),
    ("unverified: [No_Such_OAR]\n", "No_Such_OAR"),
])
def test_malformed_tolerance_file_names_the_file(tmp_path, text, problem):
    f = tmp_path / "bad_tolerances.yaml"
    f.write_text(text)
    with pytest.raises(InputError, match=problem) as exc:
        M.load_tolerances(f)
    assert str(f) in str(exc.value)


def test_missing_tolerance_file(tmp_path):
    with pytest.raises(InputError, match="not found") as exc:
        M.load_tolerances(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(exc.value)
