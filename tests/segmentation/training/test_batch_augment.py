"""Batch augmentation: one resampling for the batch equals the per-sample transforms."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose.segmentation.training import AugmentationConfig  # noqa: E402
from soars_dose.segmentation.training.augment import _flip, _rotate  # noqa: E402
from soars_dose.segmentation.training.batch_augment import (  # noqa: E402
    BatchAugmentParams,
    augment_batch,
    draw_params,
)

SPACING = (2.5, 3.9, 3.0)  # anisotropic in-plane pixels


def _reference(x, labels, ann, p, perm_in, perm_out, fill):
    """Per sample: flip (label/channel swap), rotation, scaling, noise, offset."""
    xs, ls, as_ = [], [], []
    for i in range(x.shape[0]):
        xi, li, ai = x[i], labels[i], ann[i].numpy()
        if bool(p.flip[i]):
            xi, li, ai, _ = _flip(xi, li, ai, None, perm_in, perm_out)
        if float(p.angle_rad[i]) != 0.0:
            xi, li, _ = _rotate(xi, li, None, float(p.angle_rad[i]), SPACING, fill)
        xi = xi.clone()
        xi[0] = (xi[0] - fill) * float(p.scale[i]) + fill
        xi[0] += float(p.noise_sd[i]) * p.noise[i]
        if bool(p.shifted[i]):
            xi[0] = (xi[0] + float(p.shift[i])).clamp(0.0, 1.0)
        xs.append(xi)
        ls.append(li)
        as_.append(torch.from_numpy(np.asarray(ai)))
    return torch.stack(xs), torch.stack(ls), torch.stack(as_)


@pytest.mark.parametrize("cin, fill", [(3, 0.0), (1, 0.2)])
def test_batch_augmentation_equals_the_per_sample_reference(cin, fill):
    g = torch.Generator().manual_seed(0)
    n, shape = 5, (6, 14, 12)
    x = torch.rand((n, cin) + shape, generator=g)
    labels = torch.randint(0, 4, (n,) + shape, generator=g)
    ann = torch.tensor([[True, True, False, True]] * n)
    perm_in = [0, 2, 1] if cin == 3 else [0]
    perm_out = [0, 2, 1, 3]  # labels 1 and 2 are a left/right pair
    p = BatchAugmentParams(
        flip=torch.tensor([True, False, True, False, True]),
        angle_rad=torch.tensor([0.12, -0.16, 0.0, 0.05, 0.0]),
        scale=torch.tensor([1.0, 1.2, 0.8, 1.0, 1.1]),
        noise_sd=torch.tensor([0.0, 0.02, 0.0, 0.01, 0.0]),
        shift=torch.tensor([0.0, 0.0, 0.1, 0.0, -0.2]),
        shifted=torch.tensor([False, False, True, False, True]),
        noise=torch.randn((n,) + shape, generator=g))
    xb, lb, ab = augment_batch(x, labels, ann, p, SPACING, perm_in, perm_out, fill)
    xr, lr, ar = _reference(x, labels, ann, p, perm_in, perm_out, fill)
    torch.testing.assert_close(xb, xr, atol=2e-5, rtol=0)
    assert torch.equal(lb, lr.long())
    assert torch.equal(ab, ar)
    # the flipped samples' annotation flags swapped, the others untouched
    assert ab[0].tolist() == [True, False, True, True] and ab[1].tolist() == ann[1].tolist()
    assert xb.shape == x.shape and lb.dtype == labels.dtype


def test_drawn_parameters_follow_the_configuration():
    g = torch.Generator().manual_seed(1)
    a = AugmentationConfig(flip_probability=1.0, rotation_probability=1.0, rotation_deg=10.0,
                           intensity_probability=0.0, noise_probability=0.0, shift_hu=300.0,
                           shift_probability=1.0)
    p = draw_params(200, (4, 5, 6), a, (-500.0, 1000.0), g, "cpu")
    assert bool(p.flip.all()) and bool(p.shifted.all())
    assert float(p.angle_rad.abs().max()) <= math.radians(10.0) + 1e-7
    assert float(p.angle_rad.abs().max()) > math.radians(8.0)
    assert float(p.shift.abs().max()) <= 300.0 / 1500.0 + 1e-7
    assert bool((p.scale == 1).all()) and bool((p.noise_sd == 0).all())
    off = draw_params(50, (4, 5, 6), AugmentationConfig(enabled=False), (-500.0, 1000.0), g,
                      "cpu")
    assert not bool(off.flip.any()) and not bool(off.shifted.any()) and off.noise is None
    x = torch.rand(50, 1, 4, 5, 6)
    lab = torch.randint(0, 3, (50, 4, 5, 6))
    ann = torch.ones(50, 3, dtype=torch.bool)
    x2, lab2, _ = augment_batch(x, lab, ann, off, SPACING, [0], [0, 1, 2])
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=0)  # identity grid: unchanged
    assert torch.equal(lab2, lab)
