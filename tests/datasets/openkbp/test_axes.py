"""OpenKBP axes: handedness from the anatomy, grid spacing, voxel-face contours."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import polygon

from soars_dose.datasets import openkbp as ok
from soars_dose.grid import Grid

from .openkbp_helpers import centroid


def test_axes_and_handedness_from_anatomy(pt201):
    p = pt201
    assert list(p.masks) == list(ok.STRUCTURE_MAP.values())  # pt_201 has all ten
    left, right = centroid(p, "Parotid_L"), centroid(p, "Parotid_R")
    assert left[0] > right[0] + 50  # patient left = +x (LPS), parotids ~10 cm apart
    assert centroid(p, "Brainstem")[2] > centroid(p, "Larynx_GSL")[2] + 80  # superior = +z
    assert centroid(p, "Brainstem")[2] > centroid(p, "Esophagus")[2]
    assert centroid(p, "Bone_Mandible")[1] < centroid(p, "SpinalCord")[1] - 50  # anterior = -y
    # placement convention: in-plane centre at x = y = 0, slices from z = 0 upwards
    lo, hi = p.grid.world_bounds()
    assert np.allclose((lo[:2] + hi[:2]) / 2, 0, atol=1e-9)
    assert p.grid.origin[2] == 0.0 and lo[2] == -0.5 * p.grid.spacing[0]
    assert np.array_equal(p.grid.direction, np.eye(3)[[2, 1, 0]])


def test_grid_spacing_and_axis_mapping(pt201):
    vd = (1.5, 2.0, 3.0)  # along OpenKBP i (A->P), j (R->L), k (S->I)
    g = ok.openkbp_grid(vd, shape=(4, 5, 6))
    assert g.shape == (6, 4, 5) and g.spacing == (3.0, 1.5, 2.0)
    a = np.zeros((4, 5, 6))
    a[1, 2, 3] = 1  # OpenKBP [i, j, k]
    ours = ok.to_lps_axes(a)
    assert ours.shape == (6, 4, 5) and ours[6 - 1 - 3, 1, 2] == 1
    assert np.array_equal(ok.from_lps_axes(ours), a)
    # one step along each OpenKBP axis moves the voxel centre by its size in +y, +x, -z

    def at(i, j, k):  # voxel centre of OpenKBP [i, j, k]
        return g.index_to_world([6 - 1 - k, i, j])

    assert np.allclose(at(2, 2, 3) - at(1, 2, 3), [0, 1.5, 0])
    assert np.allclose(at(1, 3, 3) - at(1, 2, 3), [2.0, 0, 0])
    assert np.allclose(at(1, 2, 4) - at(1, 2, 3), [0, 0, -3.0])
    vd = pt201.voxel_dimensions_mm
    assert pt201.grid.spacing == (vd[2], vd[0], vd[1])
    assert pt201.volume_cc("Brainstem") == pytest.approx(
        pt201.masks["Brainstem"].sum() * np.prod(vd) / 1000)


def test_voxel_edge_contours_are_the_exact_voxel_boundary():
    rng = np.random.default_rng(3)
    g = Grid((3, 14, 17), (2.5, 3.0, 4.0), (10.0, -20.0, 5.0))
    mask = rng.random(g.shape) < 0.45  # holes, diagonal contacts, isolated voxels
    back = np.zeros(g.shape, bool)
    for c in ok.voxel_edge_contours(mask, g):
        idx = g.world_to_index(c)
        assert np.allclose(idx[:, 1:] % 1, 0.5)  # every vertex on a voxel corner
        plane = np.zeros(g.shape[1:], bool)
        plane[polygon(idx[:, 1], idx[:, 2], shape=g.shape[1:])] = True
        back[round(idx[0, 0])] ^= plane  # even-odd rule
    assert np.array_equal(back, mask)
