"""Training examples: batched steps, cached volumes."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose import oars as catalogue  # noqa: E402
from soars_dose.segmentation import nas, training  # noqa: E402

from .training_helpers import small_config  # noqa: E402


def test_one_batch_step_gives_the_cross_entropy_of_the_examples(small_samples):
    """A batch of equal patches goes through the network at once: same CE as one by one."""
    train_s, _ = small_samples
    cfg = small_config(batch_size=2, augment=False)
    names = catalogue.names("anchor")
    task = training.Task("anchor", cfg, None, names)
    net = nas.build_fixed(training.fixed_architecture(cfg, 1, len(names) + 1)).eval()
    rng = np.random.default_rng(0)
    made = [task.make(s, 0, cfg.schedule.patch_size, rng, False) for s in train_s]
    x = torch.stack([m[0] for m in made])
    with torch.no_grad():
        out = net(x)
    ce_batch = torch.nn.functional.cross_entropy(out, torch.stack([m[1] for m in made]))
    with torch.no_grad():
        ce_each = [torch.nn.functional.cross_entropy(net(m[0][None]), m[1][None]) for m in made]
    assert float(ce_batch) == pytest.approx(float(sum(ce_each) / 2), rel=1e-5)
    # the batched step runs and returns the batch loss (a finite positive number)
    so = training.Stage("train", nas.build_fixed(training.fixed_architecture(cfg, 1, len(names) + 1)),
                         cfg, 1)
    loss = training.step(so, so.opt_w, task, train_s, [(0, 0), (1, 0)], cfg.schedule.patch_size,
                          np.random.default_rng(1), cfg, clip=None, step=True, world=1)
    assert math.isfinite(loss) and loss > 0


def test_examples_are_built_from_cached_volumes_without_copies(small_samples):
    train_s, _ = small_samples
    cfg = small_config()
    task = training.Task("anchor", cfg, None, catalogue.names("anchor")).to("cpu")
    a = task.make(train_s[0], 0, cfg.schedule.patch_size, np.random.default_rng(2), True)
    b = task.make(train_s[0], 0, cfg.schedule.patch_size, np.random.default_rng(2), True)
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # same draws, same example
    img, lab, _ = task._volumes(train_s[0])
    assert img.data_ptr() == torch.from_numpy(train_s[0].image).data_ptr()  # a view on the CPU
    assert lab.dtype == torch.uint8 and a[1].dtype == torch.int64
