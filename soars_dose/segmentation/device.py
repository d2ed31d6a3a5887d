"""Where the SOARS networks run: device choice and the mixed-precision context.

Training (:func:`~soars_dose.segmentation.training.train`) and inference
(:func:`~soars_dose.segmentation.inference.segment_volume`) both take a
``device`` argument; this module turns it into a :class:`torch.device`
with one clear error when CUDA is asked for but absent, and gives the one
autocast rule both follow (bfloat16 on CUDA, full precision on the CPU).
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..errors import InputError

__all__ = ["autocast", "resolve_device"]


def resolve_device(device: "str | torch.device | None", world: int = 1) -> torch.device:
    """The torch device a run uses; clear error if CUDA is absent.

    Parameters
    ----------
    device : str, torch.device or None
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None: the CPU, or under
        torchrun with CUDA (``world > 1`` and ``LOCAL_RANK`` set) the GPU
        ``LOCAL_RANK``.
    world : int
        Processes in the job.

    Returns
    -------
    torch.device
    """
    if device is None:
        if world > 1 and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but this PyTorch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use --device cpu")
    return dev


def autocast(dev: torch.device):
    """bfloat16 autocast on CUDA, a no-op context elsewhere (CPU autocast is slower)."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
