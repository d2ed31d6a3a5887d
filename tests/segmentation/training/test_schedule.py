"""The warm-restart schedule and the batch scaling of the learning rate."""

import math

import pytest

pytest.importorskip("torch")

from soars_dose.errors import InputError  # noqa: E402
from soars_dose.segmentation.training import DeadlineConfig  # noqa: E402
from soars_dose.segmentation.training.schedule import warm_restart_lr  # noqa: E402


def test_warmup_then_cosine_to_the_deadline():
    kw = dict(warmup_fraction=0.1, warmup_start=0.1, final_fraction=0.01)
    assert warm_restart_lr(0.0, 1.0, **kw) == pytest.approx(0.1)
    assert warm_restart_lr(0.05, 1.0, **kw) == pytest.approx(0.55)  # half-way up
    assert warm_restart_lr(0.1, 1.0, **kw) == pytest.approx(1.0)  # the peak
    assert warm_restart_lr(0.55, 1.0, **kw) == pytest.approx(0.505)  # cosine mid-point
    assert warm_restart_lr(0.1 + 0.9 / 4, 1.0, **kw) == pytest.approx(
        0.01 + 0.99 * (1 + math.cos(math.pi / 4)) / 2)
    assert warm_restart_lr(1.0, 1.0, **kw) == pytest.approx(0.01)
    assert warm_restart_lr(7.0, 2.0, **kw) == pytest.approx(0.02)  # clipped past the deadline
    lrs = [warm_restart_lr(f / 100, 1.0, **kw) for f in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # decays monotonically
    assert warm_restart_lr(0.0, 1.0, warmup_fraction=0.0, final_fraction=0.0) == 1.0


def test_learning_rate_scales_with_the_batch():
    assert DeadlineConfig(batch_size=16, base_lr=0.01, reference_batch=4).peak_lr() == \
        pytest.approx(0.02)  # square root of 4
    assert DeadlineConfig(batch_size=32).peak_lr() == pytest.approx(0.01 * math.sqrt(8))
    assert DeadlineConfig(batch_size=16, lr_scaling="linear").peak_lr() == pytest.approx(0.04)
    assert DeadlineConfig(batch_size=16, lr_scaling="none").peak_lr() == pytest.approx(0.01)
    assert DeadlineConfig(batch_size=4).peak_lr() == pytest.approx(0.01)
    with pytest.raises(InputError, match="lr_scaling"):
        DeadlineConfig(lr_scaling="cube")
    with pytest.raises(InputError, match="batch_size"):
        DeadlineConfig(batch_size=0)
    d = DeadlineConfig(augmentation={"shift_hu": 300.0}).to_dict()
    assert d["augmentation"]["shift_hu"] == 300.0 and d["patch_size"] == [48, 96, 96]
