"""Resident volumes: one gather for the batch gives the per-sample crops."""

import pytest

torch = pytest.importorskip("torch")

from soars_dose.segmentation import branches as B  # noqa: E402
from soars_dose.segmentation.training.resident import ResidentVolumes  # noqa: E402

from .fast_helpers import toy_samples  # noqa: E402


@pytest.mark.parametrize("patch", [(12, 16, 16), (16, 28, 34)])  # the second overhangs
def test_batch_crops_equal_the_per_sample_crops(patch):
    samples = toy_samples(3, extra=2)
    vol = ResidentVolumes(samples, "cpu", patch)
    g = torch.Generator().manual_seed(3)
    cases, starts = vol.draw(40, g)
    x, lab, ann = vol.crop(cases, starts)
    assert x.shape == (40, 3) + patch and lab.shape == (40,) + patch
    for b in range(40):
        s = samples[int(cases[b])]
        st = starts[b].tolist()
        for a in range(3):  # the start range of batches._patch_start
            n, p = s.image.shape[a], patch[a]
            assert min(0, n - p) <= st[a] <= max(0, n - p)
        torch.testing.assert_close(x[b, 0], B.extract(torch.from_numpy(s.image), st, patch,
                                                      s.fill))
        torch.testing.assert_close(x[b, 1:], B.extract(torch.from_numpy(s.extra), st, patch,
                                                       0.0).float())
        assert torch.equal(lab[b], B.extract(torch.from_numpy(s.labels), st, patch, 0).long())
        assert ann[b].tolist() == s.annotated.tolist()
    assert set(cases.tolist()) == {0, 1, 2}
    assert vol.nbytes() > 0
