"""Sliding window: pointwise reproduction, window cover, mirror TTA."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose import oars as catalogue  # noqa: E402
from soars_dose.segmentation import sliding_window  # noqa: E402


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("shape", [(20, 40, 37), (10, 12, 13)])
def test_sliding_window_reproduces_a_pointwise_network(shape):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape).astype(np.float32)
    b = rng.normal(size=(2,) + shape).astype(np.float16)
    out = sliding_window.sliding_window(Identity(), [(a, 0.0), (b, 0.0)], (16, 24, 24), 3,
                                   activation="none")
    assert out.shape == (3,) + shape and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), a, atol=1e-5)
    np.testing.assert_allclose(out[1:].numpy(), b.astype(np.float32), atol=1e-3)
    # float16 accumulation above the memory limit, same result to float16 precision
    out16 = sliding_window.sliding_window(Identity(), [(a, 0.0), (b, 0.0)], (16, 24, 24), 3,
                                     activation="none", accumulate_limit_bytes=0)
    assert out16.dtype == torch.float16
    np.testing.assert_allclose(out16[0].float().numpy(), a, atol=2e-2)


def test_windows_cover_the_volume_with_half_overlap():
    assert sliding_window.window_starts(10, 16) == [0]
    s = sliding_window.window_starts(100, 32)
    assert s[0] == 0 and s[-1] == 68 and all(0 < b - a <= 16 for a, b in zip(s, s[1:]))
    w = sliding_window.gaussian_importance((16, 24, 24))
    assert float(w.max()) == pytest.approx(1.0) and float(w.min()) >= 1e-3
    assert float(w[8, 12, 12]) > float(w[0, 12, 12])
    assert sliding_window.n_windows((20, 40, 37), (16, 24, 24)) == 2 * 3 * 3


class SideNet(torch.nn.Module):
    """Calls the right half of the image 'left organ' (patient's left = +i) from position only."""

    def forward(self, x):
        w = x.shape[-1]
        left = (torch.arange(w) >= w // 2).float().expand_as(x[:, :1])
        bg = torch.zeros_like(left)
        return 20.0 * torch.cat([bg, left, 1 - left], dim=1)  # channels: bg, Eye_L, Eye_R


def test_mirror_tta_swaps_left_and_right_back():
    vol = np.zeros((4, 8, 16), np.float32)
    perm = catalogue.lr_permutation(["Eye_L", "Eye_R"])
    plain = sliding_window.sliding_window(SideNet(), [(vol, 0.0)], (4, 8, 16), 3)
    tta = sliding_window.sliding_window(SideNet(), [(vol, 0.0)], (4, 8, 16), 3, tta=True,
                                   perm_in=[0], perm_out=perm)
    torch.testing.assert_close(tta, plain)  # consistent after swapping the labels back
    wrong = sliding_window.sliding_window(SideNet(), [(vol, 0.0)], (4, 8, 16), 3, tta=True,
                                     perm_in=[0], perm_out=None)
    assert float((wrong[1] - 0.5).abs().max()) < 1e-3  # without the swap: pure confusion
