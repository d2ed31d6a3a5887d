"""The synthetic 42-OAR phantom: determinism, anatomy, partial labels."""

import numpy as np
import pytest

from soars_dose import oars as catalogue
from soars_dose.synthetic import oars42 as phantom42


@pytest.fixture(scope="module")
def case():
    return phantom42.make_case(3, partial=False)


def test_deterministic_and_varied():
    a, b = phantom42.make_case(5), phantom42.make_case(5)
    np.testing.assert_array_equal(a.hu, b.hu)
    for branch in catalogue.CATEGORIES:
        np.testing.assert_array_equal(a.labels[branch], b.labels[branch])
    np.testing.assert_array_equal(a.annotated, b.annotated)
    c = phantom42.make_case(6)
    assert not np.array_equal(a.labels["anchor"], c.labels["anchor"])
    assert np.linalg.norm(a.centre("Brainstem") - c.centre("Brainstem")) > 0.1


def test_grid_and_intensities(case):
    assert case.hu.shape == phantom42.DEFAULT_SHAPE == case.grid.shape
    assert case.grid.spacing == phantom42.DEFAULT_SPACING
    assert case.hu.dtype == np.float32
    assert case.hu.min() < -900 and case.hu.max() > 1000  # air and bone
    for branch, lab in case.labels.items():
        assert lab.dtype == np.uint8 and lab.max() == len(catalogue.names(branch))
    # each OAR at its own HU (noise and blur aside)
    for name in ("Brainstem", "Bone_Mandible_L", "Eye_R", "Pineal"):
        inner = case.mask(name)
        assert abs(np.median(case.hu[inner]) - phantom42.OAR_HU[name]) < 0.25 * abs(
            phantom42.OAR_HU[name]) + 25, name


def test_all_42_oars_with_plausible_sizes_and_sides(case):
    vox = {n: int(case.mask(n).sum()) for n in catalogue.names()}
    assert all(v > 0 for v in vox.values()), [n for n, v in vox.items() if not v]
    for n in ("Lens_L", "Lens_R", "Cochlea_L", "Cochlea_R", "Pineal"):
        assert 2 <= vox[n] <= 20, (n, vox[n])  # a few voxels
    assert vox["Cerebellum"] > vox["Brainstem"] > vox["Eye_L"] > vox["Lens_L"]
    assert vox["Parotid_L"] > vox["Glnd_Submand_L"] > vox["Glnd_Lacrimal_L"]
    # HFS grid: +x (column index i) is the patient's left
    for oar in catalogue.CATALOGUE:
        if oar.side == "L":
            assert case.centre(oar.name)[2] > case.centre(oar.partner)[2] + 3, oar.name
    # relative positions: lens in front of (smaller row index than) the eye centre, inside it
    assert case.centre("Lens_L")[1] < case.centre("Eye_L")[1]
    assert case.centre("Glnd_Thyroid_L")[0] < case.centre("Larynx_GSL")[0]  # below
    assert case.centre("Brainstem")[0] > case.centre("SpinalCord")[0]  # above
    # overlap across branches is allowed (lens inside the eye's region), not within
    eye_region = case.mask("Eye_L") | case.mask("Lens_L")
    assert np.all(eye_region[case.mask("Lens_L")])


def test_partial_labels():
    full = phantom42.make_case(1, partial=False)
    assert full.annotated.all() and full.annotated.shape == (42,)
    part = phantom42.make_case(1, partial=True, drop_fraction=0.3)
    missing = [n for n, a in zip(catalogue.names(), part.annotated) if not a]
    assert missing
    for n in missing:
        oar = catalogue.get(n)
        value = catalogue.names(oar.category).index(n) + 1
        assert (part.labels[oar.category] == value).any()  # in the truth
        assert not (part.annotated_labels(oar.category) == value).any()  # not in training labels
    kept = part.annotated_names()[0]
    oar = catalogue.get(kept)
    value = catalogue.names(oar.category).index(kept) + 1
    np.testing.assert_array_equal(part.annotated_labels(oar.category) == value,
                                  part.labels[oar.category] == value)
    flags = [phantom42.make_case(s).annotated.all() for s in range(40)]
    assert 0.4 < np.mean(flags) < 0.9  # about a third of the cases are partial
