"""Architecture search to a wall-clock deadline, with the throughput levers (issue 14, part 4).

:class:`FastSearcher` runs the search stages of :mod:`~soars_dose.segmentation.training`
(see its package docstring) on a
:class:`~soars_dose.segmentation.nas.SearchableUNet` with the batches of
:class:`~.deadline.BatchSource` (volumes resident on the device,
augmentation vectorised over the batch, bf16 autocast, channels-last, the
loss read back every ``sync_every`` steps):

``warmup``
    RAdam steps on the weights (``search_lr``), the mixture weights fixed
    at their uniform start.
``search``
    Alternating first-order DARTS: one RAdam step on the weights with a
    batch of the training split, then one Adam step on the architecture
    logits ``alpha`` (``alpha_lr``, betas (0.5, 0.999), weight decay
    ``alpha_weight_decay``) with a batch of the held-out split.

Each stage runs until its seconds are used up (or ``max_steps``); the
derived architecture (the most-weighted operation of every block) is then
built from scratch and trained like the plain network, with
:class:`~.deadline.FastTrainer`: the search costs part of an equal budget,
which is what makes a comparison with the plain network fair.

A mixed block evaluates all six candidate convolutions, so a searchable
network takes several times the memory of a plain one: a CUDA
out-of-memory error during a step halves both sources' batch (down to 1),
is logged, and the step is taken again.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ...errors import TrainingError
from .. import branches as B
from ..device import free_device_memory, resolve_device, synchronize
from ..nas import SearchableUNet
from ..preprocess import Preprocessing
from .batches import Sample
from .config import DeadlineConfig
from .deadline import BatchSource, LineLog, StepPacer, forward_backward

__all__ = ["FastSearcher", "split_samples"]


def split_samples(samples: list[Sample], held_fraction: float, seed: int
                  ) -> tuple[list[Sample], list[Sample]]:
    """Training and held-out samples of a search, a fixed share drawn once by the seed.

    Parameters
    ----------
    samples : list of Sample
    held_fraction : float
        Share of the samples held out for the architecture steps (0 < f < 1);
        at least one sample goes to each side.
    seed : int

    Returns
    -------
    train, held : list of Sample
    """
    if len(samples) < 2:
        raise TrainingError(f"the search needs at least 2 samples (one held out), got "
                            f"{len(samples)}")
    if not 0 < held_fraction < 1:
        raise TrainingError(f"held_fraction must lie in (0, 1), got {held_fraction}")
    order = np.random.default_rng([int(seed), 29]).permutation(len(samples))
    n_held = min(len(samples) - 1, max(1, int(round(held_fraction * len(samples)))))
    held = sorted(order[:n_held].tolist())
    held_set = set(held)
    return ([s for i, s in enumerate(samples) if i not in held_set],
            [samples[i] for i in held])


class FastSearcher:
    """The warm-up and search stages of one branch, stepped to a deadline.

    Parameters
    ----------
    net : SearchableUNet
        Trained in place (weights and ``alpha``), moved to ``device``.
    train_samples, held_samples : list of Sample
        Weight steps draw from the first, architecture steps from the second
        (:func:`split_samples`).
    config : DeadlineConfig
        Batch, patch, levers and loss schedule (``ce_balance`` as in
        :class:`~.deadline.FastTrainer`); ``batch_size`` is the search batch.
    role, names, preprocessing, anchor_names, device, log
        As for :class:`~.deadline.FastTrainer`.
    search_lr, alpha_lr, alpha_weight_decay : float
        The search optimisers' settings (the defaults of
        :class:`~.config.TrainConfig`'s optimiser part).
    """

    def __init__(self, net: SearchableUNet, train_samples: list[Sample],
                 held_samples: list[Sample], config: DeadlineConfig, *, role: str,
                 names: list[str], preprocessing: Preprocessing,
                 anchor_names: "list[str] | None" = None, device="cpu",
                 log: "LineLog | None" = None, search_lr: float = 1e-3,
                 alpha_lr: float = 3e-3, alpha_weight_decay: float = 1e-3):
        if role not in (B.ANCHOR, B.MID):
            raise TrainingError(f"the deadline search covers the anchor and mid-level "
                                f"branches, not {role}")
        if not isinstance(net, SearchableUNet) or not net.arch_parameters():
            raise TrainingError("the search needs a SearchableUNet with mixed blocks")
        self.cfg, self.role = config, role
        self.dev = resolve_device(device)
        self.log = log or LineLog()
        kw = dict(role=role, names=names, preprocessing=preprocessing,
                  anchor_names=anchor_names, device=self.dev)
        self.train_source = BatchSource(train_samples, config, seed=config.seed, **kw)
        self.held_source = BatchSource(held_samples, config, seed=config.seed + 1, **kw)
        self.net = net.to(self.dev).train()
        if config.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        self.opt_w = torch.optim.RAdam(self.net.weight_parameters(), lr=search_lr)
        self.opt_a = torch.optim.Adam(self.net.arch_parameters(), lr=alpha_lr,
                                      betas=(0.5, 0.999), weight_decay=alpha_weight_decay)
        self.batch_size = int(config.batch_size)

    def _halve_batch(self, reason: str) -> None:
        if self.batch_size <= 1:
            raise TrainingError(f"the searchable {self.role} network does not fit on "
                                f"{self.dev} even at batch 1 ({reason})")
        self.batch_size //= 2
        for s in (self.train_source, self.held_source):
            s.batch_size = self.batch_size
        self.log.write({"event": "search_batch_halved", "role": self.role,
                        "batch_size": self.batch_size, "reason": reason})
        free_device_memory(self.dev)

    def _try_step(self, opt: torch.optim.Optimizer, source: BatchSource,
                  balance: float) -> torch.Tensor:
        x, lab, ann = source.next()
        self.opt_w.zero_grad(set_to_none=True)
        self.opt_a.zero_grad(set_to_none=True)
        loss = forward_backward(self.net, x, lab, ann, self.cfg, self.dev, balance)
        opt.step()
        return loss

    def _step(self, opt: torch.optim.Optimizer, source: BatchSource,
              balance: float) -> torch.Tensor:
        """One step of ``opt`` on a batch of ``source`` (the other optimiser's grads dropped).

        The batch, its graph and the error's traceback live only inside
        :meth:`_try_step` and the ``except`` clause, so they are gone when
        the batch is halved and the device's cached memory released.
        """
        while True:
            reason = None
            try:
                return self._try_step(opt, source, balance)
            except torch.cuda.OutOfMemoryError as exc:
                reason = f"CUDA out of memory: {str(exc)[:120]}"
            self.opt_w.zero_grad(set_to_none=True)  # gradients of a partial backward
            self.opt_a.zero_grad(set_to_none=True)
            self._halve_batch(reason)

    def run(self, warmup_s: float, search_s: float, *,
            max_steps: "int | None" = None) -> dict[str, Any]:
        """The warm-up for ``warmup_s`` seconds, then the search for ``search_s`` seconds.

        Parameters
        ----------
        warmup_s, search_s : float
            Seconds of each stage (each stops before its end: the host may
            run ahead of the device by the steps since the last
            synchronisation, so a stage stops when one more step would pass
            its end).
        max_steps : int, optional
            At most this many iterations per stage (tests, dry runs).

        Returns
        -------
        dict
            ``warmup_steps``, ``search_steps``, ``patches`` (weight-step
            patches, both stages), ``alpha_patches``, ``seconds``,
            ``batch_size`` (after any halving), ``architecture`` (the
            derived one, :meth:`~soars_dose.segmentation.nas.SearchableUNet.derive`)
            and ``op_weights`` (the final mixture weights per block).
        """
        t0 = time.perf_counter()
        counts = {"warmup": 0, "search": 0}
        patches = alpha_patches = 0
        cfg = self.cfg
        for stage, secs in (("warmup", warmup_s), ("search", search_s)):
            pace = StepPacer(self.dev, cfg.sync_every)
            acc = torch.zeros((), device=self.dev)
            while (max_steps is None or pace.steps < max_steps) and not pace.must_stop(secs):
                balance = cfg.ce_balance + (cfg.ce_balance_final - cfg.ce_balance) * (
                    pace.elapsed() / max(secs, 1e-9))
                acc = acc + self._step(self.opt_w, self.train_source, balance)
                patches += self.batch_size
                if stage == "search":
                    self._step(self.opt_a, self.held_source, balance)
                    alpha_patches += self.batch_size
                if pace.stepped():
                    loss = float(acc) / pace.pending  # the one host synchronisation of the window
                    now = pace.window_done()
                    entry = {"role": self.role, "stage": stage, "step": pace.steps,
                             "elapsed_s": round(now - t0, 3), "loss": loss,
                             "s_per_step": round(pace.step_s, 5), "batch_size": self.batch_size}
                    if stage == "search":
                        entry["op_weights"] = self.net.op_weights()
                    self.log.write(entry)
                    acc = torch.zeros((), device=self.dev)
            counts[stage] = pace.steps
        synchronize(self.dev)
        arch = self.net.derive()
        out = {"role": self.role, "event": "search_done", "warmup_steps": counts["warmup"],
               "search_steps": counts["search"], "patches": patches,
               "alpha_patches": alpha_patches, "seconds": round(time.perf_counter() - t0, 3),
               "batch_size": self.batch_size, "architecture": arch,
               "op_weights": self.net.op_weights()}
        self.log.write({k: v for k, v in out.items() if k != "architecture"}
                       | {"ops": arch["ops"]})
        return out
