"""Gaussian-weighted sliding-window prediction over a whole volume.

Windows of the branch's training patch size overlap by half; each window's
prediction is weighted by a Gaussian (standard deviation 1/8 of the patch
edge along each axis, nnU-Net style) so that window borders count little,
and the weighted sum is divided by the summed weights. With ``tta`` every
window is also predicted mirrored left-right (input anchor channels and
output channels swapped to their partners, flipped back) and the two
averaged. Accumulators are float32, or float16 when a branch's accumulator
would exceed ``accumulate_limit_bytes`` (default 1 GiB; the window's own
sum is always computed in float32).

Used by inference (:mod:`~soars_dose.segmentation.inference`) and by
training's validation (:mod:`~soars_dose.segmentation.training`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import branches as B
from .device import autocast

__all__ = [
    "DEFAULT_ACCUMULATE_LIMIT",
    "gaussian_importance",
    "n_windows",
    "predict_window",
    "sliding_window",
    "window_starts",
]

DEFAULT_ACCUMULATE_LIMIT = 1 << 30


def window_starts(n: int, p: int, step: float = 0.5) -> list[int]:
    """Start indices of windows of size ``p`` covering ``n`` voxels with overlap ``1 - step``."""
    if n <= p:
        return [0]
    count = int(math.ceil((n - p) / (p * step))) + 1
    return sorted({int(round(v)) for v in np.linspace(0, n - p, count)})


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """Gaussian weight map of a window (peak 1 at the centre, floor 1e-3), float32."""
    g = []
    for p in patch:
        x = torch.arange(int(p), dtype=torch.float64) - (int(p) - 1) / 2.0
        s = max(float(p) * sigma_scale, 1e-6)
        g.append(torch.exp(-0.5 * (x / s) ** 2))
    w = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    w = w / w.max()
    return w.clamp(min=1e-3).float()


def _window_input(inputs: Sequence[tuple[np.ndarray, float]], start, size) -> torch.Tensor:
    parts = []
    for arr, fill in inputs:
        a = torch.from_numpy(np.asarray(arr))
        if a.ndim == 3:
            a = a[None]
        parts.append(B.extract(a, start, size, fill).float())
    return torch.cat(parts, dim=0)[None]


@torch.no_grad()
def predict_window(net, x: torch.Tensor, activation: str, tta: bool,
                   perm_in: list[int] | None, perm_out: list[int] | None) -> torch.Tensor:
    """One window's prediction ``(C, *patch)`` on the CPU, optionally mirror-averaged.

    Parameters
    ----------
    net : nn.Module
    x : Tensor ``(1, C_in, *patch)``
        Moved to ``net``'s device.
    activation : {'softmax', 'none'}
    tta : bool
        Also predict the left-right mirrored window and average.
    perm_in, perm_out : list of int or None
        Channel ``c`` becomes ``perm[c]`` when mirrored (None: unchanged).
    """
    p = next(net.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    x = x.to(dev, non_blocking=True)

    def run(t):
        with autocast(dev):
            y = net(t)
        y = y.float()
        return torch.softmax(y, dim=1) if activation == "softmax" else y

    y = run(x)
    if tta:
        xf = torch.flip(x, dims=(-1,))
        if perm_in is not None:
            xf = xf[:, _inverse(perm_in)]
        yf = torch.flip(run(xf), dims=(-1,))
        if perm_out is not None:
            yf = yf[:, _inverse(perm_out)]
        y = 0.5 * (y + yf)
    return y[0].cpu()


def _inverse(perm: Sequence[int]) -> list[int]:
    """Index list ``idx`` with ``new[perm[c]] = old[c]``, i.e. ``new = old[idx]``."""
    inv = [0] * len(perm)
    for c, p in enumerate(perm):
        inv[p] = c
    return inv


def sliding_window(net, inputs: Sequence[tuple[np.ndarray, float]], patch: Sequence[int],
                   out_channels: int, *, activation: str = "softmax", step: float = 0.5,
                   tta: bool = False, perm_in: list[int] | None = None,
                   perm_out: list[int] | None = None,
                   accumulate_limit_bytes: int = DEFAULT_ACCUMULATE_LIMIT,
                   on_window: Callable[[], None] | None = None) -> torch.Tensor:
    """Gaussian-weighted sliding-window prediction over a whole volume.

    Parameters
    ----------
    net : nn.Module
        Takes ``(1, C_in, *patch)``, returns ``(1, out_channels, *patch)``.
    inputs : list of (array, fill)
        Input channels: arrays ``(D, H, W)`` or ``(c, D, H, W)`` on one
        grid (any float dtype), concatenated in order; ``fill`` pads
        windows that reach beyond the volume.
    patch : (3,)
        Window size (voxels).
    out_channels : int
    activation : {'softmax', 'none'}
        Applied per window before averaging.
    step : float
        Window stride as a fraction of the patch (0.5: half overlap).
    tta : bool
        Also predict the left-right mirrored window (``W`` flipped), with
        input channels permuted by ``perm_in`` and output channels by
        ``perm_out`` (both: channel ``c`` becomes ``perm[c]`` when
        mirrored; None = unchanged), and average.
    accumulate_limit_bytes : int
        Above this accumulator size, accumulate in float16.
    on_window : callable, optional
        Called after every window (progress bars).

    Returns
    -------
    Tensor ``(out_channels, D, H, W)``, float32 or float16
    """
    shape = tuple(int(s) for s in np.asarray(inputs[0][0]).shape[-3:])
    patch = tuple(int(p) for p in patch)
    n_vox = int(np.prod(shape))
    dtype = torch.float32 if out_channels * n_vox * 4 <= accumulate_limit_bytes else torch.float16
    acc = torch.zeros((out_channels,) + shape, dtype=dtype)
    wsum = torch.zeros(shape, dtype=torch.float32)
    weight = gaussian_importance(patch)
    starts = [window_starts(n, p, step) for n, p in zip(shape, patch)]
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                start = (a, b, c)
                x = _window_input(inputs, start, patch)
                y = predict_window(net, x, activation, tta, perm_in, perm_out)
                sl = tuple(slice(s, min(s + p, n)) for s, p, n in zip(start, patch, shape))
                crop = tuple(slice(0, q.stop - q.start) for q in sl)
                w = weight[crop]
                acc[(slice(None),) + sl] = (acc[(slice(None),) + sl].float()
                                            + y[(slice(None),) + crop] * w).to(dtype)
                wsum[sl] += w
                del x, y
                if on_window is not None:
                    on_window()
    acc /= wsum.to(dtype)
    return acc


def n_windows(shape: Sequence[int], patch: Sequence[int], step: float = 0.5) -> int:
    """How many windows :func:`sliding_window` runs."""
    return int(np.prod([len(window_starts(int(n), int(p), step)) for n, p in zip(shape, patch)]))
