"""Learning-rate schedule for training to a wall-clock deadline, made for warm restarts.

:func:`warm_restart_lr` gives the learning rate at a fraction of the
training seconds: a short linear warm-up, then a cosine decay that ends at
the deadline. Every GPU run starts it again from the shipped weights (an
SGDR-style warm restart, Loshchilov & Hutter 2017); the warm-up keeps the
first steps of a large batch, whose momentum buffer starts empty, from
throwing the trained weights off.
"""

from __future__ import annotations

import math

__all__ = ["warm_restart_lr"]


def warm_restart_lr(frac: float, peak: float, *, warmup_fraction: float = 0.05,
                    warmup_start: float = 0.1, final_fraction: float = 0.01) -> float:
    """The learning rate at fraction ``frac`` (0..1) of the training time.

    Parameters
    ----------
    frac : float
        Elapsed training seconds / training seconds until the deadline
        (clipped to [0, 1]).
    peak : float
        Learning rate at the end of the warm-up
        (:meth:`~.config.DeadlineConfig.peak_lr`).
    warmup_fraction : float
        Share of the training time spent warming up (0: none).
    warmup_start : float
        Learning rate at ``frac = 0`` as a fraction of ``peak``.
    final_fraction : float
        Learning rate at the deadline as a fraction of ``peak``.

    Returns
    -------
    float
        ``peak * (warmup_start + (1 - warmup_start) * frac / warmup_fraction)``
        during the warm-up; afterwards
        ``final + (peak - final) * (1 + cos(pi * t)) / 2`` with
        ``t = (frac - warmup_fraction) / (1 - warmup_fraction)`` and
        ``final = final_fraction * peak``.
    """
    f = min(max(float(frac), 0.0), 1.0)
    w = float(warmup_fraction)
    if w > 0 and f < w:
        return peak * (warmup_start + (1.0 - warmup_start) * f / w)
    t = (f - w) / (1.0 - w) if w < 1 else 1.0
    final = final_fraction * peak
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * t))
