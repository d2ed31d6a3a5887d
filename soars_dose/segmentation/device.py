"""Where the SOARS networks run: device choice and the mixed-precision context.

Training (:func:`~soars_dose.segmentation.training.train`) and inference
(:func:`~soars_dose.segmentation.inference.segment_volume`) both take a
``device`` argument; this module turns it into a :class:`torch.device`
with one clear error when CUDA is asked for but absent, and gives the one
autocast rule both follow (bfloat16 on CUDA, full precision on the CPU),
the wait for a device's queued work, and the release of its memory.
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..errors import InputError

__all__ = ["autocast", "free_device_memory", "resolve_device", "synchronize"]


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


def synchronize(device: "str | torch.device") -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def free_device_memory(device: "str | torch.device") -> None:
    """Collect unreachable objects, then return the device's cached blocks (CUDA).

    The garbage collection comes first: a trainer or a failed batch caught
    in a reference cycle (the first optimiser of a process is, through
    torch's lazy imports) holds its tensors until collected, and
    ``empty_cache`` can release only blocks no tensor uses.
    """
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
