"""All training volumes resident on the device, cropped for a whole batch at once.

:class:`ResidentVolumes` stacks every sample's image, labels and anchor
maps into padded tensors on the training device once (the OpenKBP training
split: a few hundred MB on a GPU), and :meth:`ResidentVolumes.batch` draws
the batch's cases and random patch positions on the device and gathers all
patches with one indexing operation: no per-sample Python loop, no copy
from the host, no host synchronisation.

Patch placement follows :func:`~.batches._patch_start`: each start is
uniform over ``[min(0, n - p), max(0, n - p)]`` per axis, so a volume
smaller than the patch is placed anywhere inside it and padded (image with
the air value, labels with background, anchor maps with 0).
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from .batches import Sample

__all__ = ["ResidentVolumes"]


class ResidentVolumes:
    """Padded stacks of the samples' volumes on one device.

    Parameters
    ----------
    samples : list of Sample
        Prepared samples of one branch (one network grid, one air value).
    device : str or torch.device
    patch : (3,) int
        Patch size ``(D, H, W)`` in voxels.

    Attributes
    ----------
    image : Tensor float32 (S, D, H, W)
    labels : Tensor uint8 (S, D, H, W)
    extra : Tensor float16 (S, K, D, H, W) or None
    annotated : Tensor bool (S, C_out)
    shape : Tensor long (S, 3)
        Each sample's own size (the rest of the stack is padding).
    """

    def __init__(self, samples: list[Sample], device, patch):
        if not samples:
            raise InputError("no samples to put on the device")
        self.device = torch.device(device)
        self.patch = tuple(int(p) for p in patch)
        self.fill = float(samples[0].fill)
        self.spacing = tuple(samples[0].spacing)
        shapes = np.array([s.image.shape for s in samples], dtype=np.int64)
        top = shapes.max(0)
        n = len(samples)
        img = np.full((n,) + tuple(top), self.fill, np.float32)
        lab = np.zeros((n,) + tuple(top), np.uint8)
        has_extra = samples[0].extra is not None
        ext = (np.zeros((n, samples[0].extra.shape[0]) + tuple(top), np.float16)  # type: ignore
               if has_extra else None)
        for i, s in enumerate(samples):
            d, h, w = s.image.shape
            img[i, :d, :h, :w] = s.image
            lab[i, :d, :h, :w] = s.labels
            if ext is not None:
                ext[i, :, :d, :h, :w] = s.extra
        dev = self.device
        self.image = torch.from_numpy(img).to(dev)
        self.labels = torch.from_numpy(lab).to(dev)
        self.extra = None if ext is None else torch.from_numpy(ext).to(dev)
        self.annotated = torch.from_numpy(np.stack([s.annotated for s in samples])).to(dev)
        self.shape = torch.from_numpy(shapes).to(dev)
        p = torch.tensor(self.patch, dtype=torch.long, device=dev)
        self._lo = torch.minimum(torch.zeros_like(self.shape), self.shape - p)
        self._span = torch.maximum(torch.zeros_like(self.shape), self.shape - p) - self._lo + 1
        self._ar = [torch.arange(q, device=dev) for q in self.patch]

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def nbytes(self) -> int:
        """Bytes the stacks take on the device."""
        t = [self.image, self.labels, self.annotated] + ([self.extra] if self.extra is not None
                                                         else [])
        return int(sum(v.numel() * v.element_size() for v in t))

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random cases ``(n,)`` and patch starts ``(n, 3)`` (long tensors on the device)."""
        cases = torch.randint(0, len(self), (n,), generator=generator, device=self.device)
        u = torch.rand((n, 3), generator=generator, device=self.device)
        starts = self._lo[cases] + (u * self._span[cases]).long().clamp(
            max=self._span[cases] - 1)
        return cases, starts

    def crop(self, cases: torch.Tensor, starts: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patches of ``cases`` at ``starts``: ``x`` (N, C_in, D, H, W), labels, annotated."""
        idx = [starts[:, a, None] + self._ar[a][None, :] for a in range(3)]  # (N, p_a)
        sh = self.shape[cases]
        ok = [(idx[a] >= 0) & (idx[a] < sh[:, a, None]) for a in range(3)]
        top = self.image.shape[1:]
        cl = [idx[a].clamp(0, int(top[a]) - 1) for a in range(3)]
        zi, yi, xi = cl[0][:, :, None, None], cl[1][:, None, :, None], cl[2][:, None, None, :]
        inside = ok[0][:, :, None, None] & ok[1][:, None, :, None] & ok[2][:, None, None, :]
        c = cases[:, None, None, None]
        img = torch.where(inside, self.image[c, zi, yi, xi],
                          torch.full((), self.fill, device=self.device))
        lab = torch.where(inside, self.labels[c, zi, yi, xi].long(),
                          torch.zeros((), dtype=torch.long, device=self.device))
        parts = [img[:, None]]
        if self.extra is not None:
            k = torch.arange(self.extra.shape[1], device=self.device)[None, :, None, None, None]
            ext = self.extra[c[:, None], k, zi[:, None], yi[:, None], xi[:, None]].float()
            parts.append(torch.where(inside[:, None], ext, torch.zeros((), device=self.device)))
        return torch.cat(parts, 1), lab, self.annotated[cases]

    def batch(self, n: int, generator: torch.Generator):
        """``(x, labels, annotated)`` of ``n`` random patches (:meth:`draw` then :meth:`crop`)."""
        return self.crop(*self.draw(n, generator))
