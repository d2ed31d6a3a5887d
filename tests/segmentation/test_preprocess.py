"""Preprocessing: resampling and its inverse, HU window, z-score, body crop."""

import json

import numpy as np
import pytest

from soars_dose.errors import InputError
from soars_dose.grid import Grid
from soars_dose.segmentation.preprocess import (
    Preprocessing,
    body_bbox,
    body_mask,
    labels_to_grid,
    normalize_intensity,
    prepare_ct,
    prepare_labels,
    resample_grid,
    resample_to_grid,
    resample_to_spacing,
    restore_labels,
    restore_probabilities,
    window_hu,
)

HFP = np.array([[0.0, 0, 1], [0, -1, 0], [-1, 0, 0]])  # head first prone: rows/cols flipped


def world(grid):
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    return grid.index_to_world(np.stack([k, j, i], -1))


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2 * np.sum(a & b) / (a.sum() + b.sum())


@pytest.fixture
def phantom():
    """Water ellipse cylinder in air, a separate 'couch' slab, a bone sphere; returns HU, grid, label."""
    grid = Grid((24, 64, 72), (2.5, 1.1, 0.9), (5.0, 30.0, -12.0), HFP)
    w = world(grid)
    c = grid.index_to_world([11.5, 30, 36])
    d = w - c
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    body = (d[..., 0] / 28) ** 2 + (d[..., 1] / 22) ** 2 < 1
    hu[body] = 20.0
    sphere = np.linalg.norm(d - [3.0, -2.0, 0.0], axis=-1) < 9.0
    hu[sphere] = 700.0
    j_couch = grid.world_to_index(c + [0, 30, 0])[1]
    hu[:, int(round(j_couch)):int(round(j_couch)) + 2, :] = 200.0  # couch, not touching
    labels = sphere.astype(np.uint8) * 3
    return hu, grid, labels, body


def test_resample_grid_keeps_the_box():
    g = Grid((10, 20, 30), (3.0, 1.0, 0.5), (1.0, 2.0, 3.0), HFP)
    r = resample_grid(g, (1.5, 2.0, 1.5))
    assert r.shape == (20, 10, 10)
    for a, b in zip(g.world_bounds(), r.world_bounds()):
        np.testing.assert_allclose(a, b, atol=1e-9)
    np.testing.assert_allclose(r.direction, g.direction)


def test_resample_to_grid_is_exact_on_linear_ramps():
    g = Grid((8, 9, 10), (2.0, 1.5, 1.0), (0.0, 0.0, 0.0), HFP)
    ramp = lambda w: 3.0 * w[..., 0] - 2.0 * w[..., 1] + 0.5 * w[..., 2]  # noqa: E731
    vol = ramp(world(g))
    dst = Grid((5, 6, 7), (1.7, 1.1, 0.7), tuple(g.index_to_world([2.2, 1.3, 2.9])), HFP)
    np.testing.assert_allclose(resample_to_grid(vol, g, dst, order=1), ramp(world(dst)),
                               atol=1e-4)


def test_label_round_trip_keeps_a_sphere():
    grid = Grid((30, 60, 50), (2.5, 0.9, 1.1), (-20.0, -30.0, 10.0), HFP)
    w = world(grid)
    sphere = (np.linalg.norm(w - grid.index_to_world([15, 30, 25]), axis=-1) < 15).astype(np.uint8)
    small, sgrid = resample_to_spacing(sphere, grid, (1.5, 1.5, 1.5), order=0)
    assert small.dtype == np.uint8 and sgrid.spacing == (1.5, 1.5, 1.5)
    assert abs(small.sum() * sgrid.voxel_volume_mm3 / (sphere.sum() * grid.voxel_volume_mm3) - 1) < 0.02
    for method in ("nearest", "linear"):
        back = labels_to_grid(small, sgrid, grid, method=method)
        assert back.shape == grid.shape
        assert dice(back, sphere) > 0.95, method


def test_window_values():
    v = window_hu(np.array([-2000.0, -500.0, 0.0, 250.0, 1000.0, 3000.0]))
    np.testing.assert_allclose(v, [0, 0, 1 / 3, 0.5, 1, 1], atol=1e-7)
    assert v.dtype == np.float32
    s = Preprocessing(window_hu=(-100, 100))
    np.testing.assert_allclose(normalize_intensity(np.array([0.0, 50.0]), s), [0.5, 0.75])
    with pytest.raises(InputError):
        window_hu(np.zeros(2), 10, 10)


def test_zscore_fixed_and_per_volume():
    hu = np.array([-1000.0, 0.0, 100.0, 2000.0])
    fixed = Preprocessing(intensity="zscore", zscore_mean_hu=50.0, zscore_std_hu=25.0)
    np.testing.assert_allclose(normalize_intensity(hu, fixed), [-22, -2, 2, 38])
    per = normalize_intensity(hu, Preprocessing(intensity="zscore"), body=np.array([0, 1, 1, 0], bool))
    np.testing.assert_allclose(per[1:3], [-1, 1], atol=1e-6)
    with pytest.raises(InputError, match="both"):
        Preprocessing(intensity="zscore", zscore_mean_hu=1.0)


def test_settings_json_round_trip():
    s = Preprocessing(target_spacing_mm=(2.0, 1.0, 1.0), intensity="zscore",
                      zscore_mean_hu=10.0, zscore_std_hu=300.0, crop_margin_mm=5.0)
    text = json.dumps(s.to_dict())
    assert Preprocessing.from_dict(json.loads(text)) == s
    assert Preprocessing.from_json(s.to_json()) == s
    assert Preprocessing.from_dict(Preprocessing(target_spacing_mm=None).to_dict()).target_spacing_mm is None
    with pytest.raises(InputError, match="unknown"):
        Preprocessing.from_dict({"spacing": [1, 1, 1]})
    with pytest.raises(InputError):
        Preprocessing(intensity="minmax")


def test_body_crop_keeps_the_body(phantom):
    hu, grid, _, body = phantom
    mask = body_mask(hu)
    assert np.array_equal(mask, body)  # couch dropped, bone sphere kept (filled)
    start, stop = body_bbox(mask, grid.spacing, margin_mm=5.0)
    inside = np.zeros_like(mask)
    inside[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    assert mask[~inside].sum() == 0
    assert np.prod(np.subtract(stop, start)) < 0.8 * mask.size
    idx = np.argwhere(mask)
    pad = np.ceil(5.0 / np.asarray(grid.spacing)).astype(int)
    np.testing.assert_array_equal(start, np.maximum(idx.min(0) - pad, 0))
    np.testing.assert_array_equal(stop, np.minimum(idx.max(0) + 1 + pad, grid.shape))


def test_prepare_and_restore(phantom):
    hu, grid, labels, body = phantom
    s = Preprocessing(target_spacing_mm=(2.0, 1.5, 1.5), crop_margin_mm=4.0)
    p = prepare_ct(hu, grid, s)
    assert p.image.shape == p.grid.shape and p.image.dtype == np.float32
    assert 0.0 <= p.image.min() and p.image.max() <= 1.0
    np.testing.assert_allclose(p.grid.spacing, (2.0, 1.5, 1.5))
    lo, hi = p.crop_grid.world_bounds()
    blo, bhi = p.grid.world_bounds()
    np.testing.assert_allclose(blo, lo, atol=1.0)
    np.testing.assert_allclose(bhi, hi, atol=1.0)

    net_labels = prepare_labels(labels, p)
    assert set(np.unique(net_labels)) == {0, 3}
    back = restore_labels(net_labels, p)
    assert back.shape == grid.shape and back.dtype == labels.dtype
    assert dice(back == 3, labels == 3) > 0.95

    probs = np.stack([net_labels == 0, net_labels == 1, net_labels == 3]).astype(np.float32)
    full = restore_probabilities(probs, p)
    assert full.shape == (3,) + grid.shape
    np.testing.assert_allclose(full.sum(axis=0), 1.0, atol=1e-5)
    outside = np.ones(grid.shape, bool)
    outside[tuple(slice(a, b) for a, b in zip(p.crop_start, p.crop_stop))] = False
    assert np.all(full[0][outside] == 1.0)
    lab = restore_probabilities(probs, p, as_labels=True)
    assert dice(lab == 2, labels == 3) > 0.95
