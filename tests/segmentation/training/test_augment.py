"""Augmentation: flips swap left and right, rotation, intensity, noise, HU shifts."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose import oars as catalogue  # noqa: E402
from soars_dose.segmentation import branches as B  # noqa: E402
from soars_dose.segmentation import training  # noqa: E402
from soars_dose.segmentation.training import TrainConfig  # noqa: E402
from soars_dose.synthetic import oars42 as phantom42  # noqa: E402


def test_flip_swaps_left_and_right_labels():
    case = phantom42.make_case(0, partial=True, drop_fraction=0.3)
    names = catalogue.names("anchor")
    labels = torch.from_numpy(case.annotated_labels("anchor").astype(np.int64))
    image = torch.from_numpy(case.hu)[None]
    # a fake anchor-probability input: channel of Eye_L = its mask
    extra = torch.zeros((len(names),) + case.hu.shape)
    for c, n in enumerate(names):
        extra[c] = torch.from_numpy(case.mask(n).astype(np.float32))
    x = torch.cat([image, extra])
    ann = np.array([True] + [bool(case.annotated[catalogue.names().index(n)]) for n in names])
    ann[names.index("Eye_L") + 1] = False  # Eye_L unannotated, Eye_R annotated
    ann[names.index("Eye_R") + 1] = True
    centres = np.array([case.centre(n) for n in names])
    cfg = TrainConfig.tiny("anchor", flip_probability=1.0, rotation_probability=0.0,
                           intensity_range=(1.0, 1.0), noise_std=0.0)
    perm = catalogue.lr_permutation(names)
    x2, lab2, ann2, c2, info = training.augment(
        x, labels, ann, centres, np.random.default_rng(0), cfg, (4.0, 3.0, 3.0),
        B.input_lr_permutation("mid_level"), perm)
    assert info["flip"]
    w = case.hu.shape[2]
    for n in ("Eye_L", "Parotid_L", "Joint_TM_L", "Bone_Mandible_R"):
        if catalogue.get(n).category != "anchor":
            continue
        a, b = names.index(n) + 1, names.index(catalogue.swap_lr(n)) + 1
        if ann[a]:
            # voxels of n, mirrored, carry the partner's label
            np.testing.assert_array_equal((lab2 == b).numpy(),
                                          np.flip((labels == a).numpy(), axis=2))
        # the anchor input channel of n now holds the mirrored mask of n under the partner's name
        torch.testing.assert_close(x2[b], torch.flip(x[a], dims=(-1,)))
        assert ann2[b] == ann[a]
        np.testing.assert_allclose(c2[b - 1], [centres[a - 1][0], centres[a - 1][1],
                                               w - 1 - centres[a - 1][2]])
    mid = names.index("Brainstem") + 1  # midline organs keep their label
    np.testing.assert_array_equal((lab2 == mid).numpy(), np.flip((labels == mid).numpy(), 2))
    torch.testing.assert_close(x2[0], torch.flip(x[0], dims=(-1,)))
    assert not ann2[names.index("Eye_R") + 1] and ann2[names.index("Eye_L") + 1]


def test_rotation_intensity_and_noise():
    case = phantom42.make_case(1, partial=False)
    names = catalogue.names("anchor")
    labels = torch.from_numpy(case.labels["anchor"].astype(np.int64))
    x = torch.from_numpy(case.hu)[None] / 1000.0
    centres = np.array([case.centre(n) for n in names])
    cfg = TrainConfig.tiny("anchor", flip_probability=0.0, rotation_probability=1.0,
                           rotation_deg=10.0, intensity_range=(0.75, 1.25), noise_std=0.0,
                           intensity_probability=1.0)
    perm = catalogue.lr_permutation(names)
    x2, lab2, _, c2, info = training.augment(x, labels, np.ones(10, bool), centres,
                                             np.random.default_rng(3), cfg, (4.0, 3.0, 3.0),
                                             [0], perm, fill=-1.0)
    assert 0 < abs(info["angle_deg"]) <= 10 and 0.75 <= info["scale"] <= 1.25
    # the centres move with the labels (label centroid after rotation)
    for c, n in enumerate(names):
        m = (lab2 == c + 1).numpy()
        if m.sum() > 50:
            assert np.linalg.norm(np.argwhere(m).mean(0) - c2[c]) < 0.6, n
    # air (the fill value) stays air under scaling about the fill value, and rotation pads with it
    assert float(x2[0, 0, 0, 0]) == pytest.approx(-1.0, abs=1e-5)
    cfg = TrainConfig.tiny("anchor", flip_probability=0.0, rotation_probability=0.0,
                           intensity_range=(1.0, 1.0), noise_std=0.05,
                           noise_probability=1.0)
    x3, *_ , info = training.augment(x, labels, np.ones(10, bool), centres,
                                     np.random.default_rng(4), cfg, (4.0, 3.0, 3.0), [0], perm)
    d = (x3 - x).numpy()
    assert abs(d.std() - info["noise"]) < 0.01 * max(info["noise"], 1e-3) + 1e-3


def test_hu_shift_moves_tissue_by_the_offset_and_keeps_the_window():
    window = (-500.0, 1000.0)
    hu = np.array([-1000.0, -400.0, 0.0, 40.0, 300.0, 990.0], np.float32)
    x = torch.from_numpy((np.clip(hu, *window) - window[0]) / (window[1] - window[0]))
    x = x.view(1, 1, 1, -1)
    cfg = TrainConfig.tiny("anchor", flip_probability=0.0, rotation_probability=0.0,
                           intensity_probability=0.0, noise_probability=0.0, window_hu=window,
                           shift_hu=300.0, shift_probability=1.0)
    x2, *_, info = training.augment(x, None, np.ones(2, bool), None, np.random.default_rng(5),
                                    cfg, (1.0, 1.0, 1.0), [0], [0, 1])
    shift_hu = info["shift"] * (window[1] - window[0])
    assert 0 < abs(shift_hu) <= 300.0
    expect = (np.clip(np.clip(hu, *window) + shift_hu, *window) - window[0]) / 1500.0
    np.testing.assert_allclose(x2.numpy().ravel(), expect, atol=1e-6)
    # off by default: the random stream and the image are those of a run without it
    cfg0 = TrainConfig.tiny("anchor", flip_probability=0.0, rotation_probability=0.0,
                            intensity_probability=0.0, noise_probability=0.0)
    x3, *_, info0 = training.augment(x, None, np.ones(2, bool), None, np.random.default_rng(5),
                                     cfg0, (1.0, 1.0, 1.0), [0], [0, 1])
    assert info0["shift"] == 0.0 and torch.equal(x3, x)
