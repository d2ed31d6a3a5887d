"""Training a fixed network until a wall-clock deadline, with the throughput levers.

:class:`FastTrainer` trains one anchor or mid-level network (fixed
architecture, e.g. the shipped model's, :func:`~.accumulate.start_network`)
on prepared samples with SGD (Nesterov momentum) and the warm-restart
schedule of :func:`~.schedule.warm_restart_lr`, each lever of
:class:`~.config.DeadlineConfig` switchable alone. :meth:`FastTrainer.run`
steps until the training seconds are used up and stops *before* the
deadline: the host may run ahead of the GPU by the steps queued since the
last synchronisation, so it stops when the time of those steps plus one
more would pass the deadline. Every ``sync_every`` steps the mean loss is
read back and one JSON line is written to the log and flushed
(:class:`LineLog`), so a run killed at its limit still leaves its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...errors import TrainingError
from .. import branches as B
from ..device import autocast, resolve_device, synchronize
from ..preprocess import Preprocessing
from .augment import augment
from .batch_augment import augment_batch, draw_params
from .batches import Sample, Task
from .config import DeadlineConfig, TrainConfig
from .losses import partial_dice_ce
from .resident import ResidentVolumes
from .schedule import warm_restart_lr

__all__ = ["BatchSource", "FastTrainer", "LineLog", "StepPacer", "autocast_for",
           "forward_backward"]


class LineLog:
    """A JSON-lines log whose every line is on disk (flushed) once written.

    Parameters
    ----------
    path : path or None
        File appended to (parent created); None: entries are kept only in
        :attr:`entries`.
    echo : callable, optional
        Also called with each line's text (e.g. ``print``).
    """

    def __init__(self, path: "str | os.PathLike | None" = None,
                 echo: "Callable[[str], Any] | None" = None):
        self.path = None if path is None else Path(path)
        self.entries: list[dict[str, Any]] = []
        self.echo = echo
        self._f = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def write(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` as one JSON line and flush it to the operating system."""
        self.entries.append(entry)
        line = json.dumps(entry, sort_keys=True)
        if self._f is not None:
            self._f.write(line + "\n")
            self._f.flush()
        if self.echo is not None:
            self.echo(line)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _train_config(role: str, cfg: DeadlineConfig, pre: Preprocessing) -> TrainConfig:
    """The TrainConfig whose augmentation the per-sample paths (Task, augment) read."""
    aug = cfg.to_dict()["augmentation"]
    return TrainConfig.from_dict({
        "branch": role, "augmentation": aug, "patch_size": list(cfg.patch_size),
        "window_hu": list(pre.window_hu), "batch_size": cfg.batch_size,
        "anchor_model": "(given)" if B.needs_anchor(role) else None})


class BatchSource:
    """Random augmented training batches of one branch, built with the throughput levers.

    Parameters
    ----------
    samples : list of Sample
        Training samples of the branch (one network grid).
    config : DeadlineConfig
        Its ``batch_size``, ``patch_size``, ``resident``,
        ``vectorised_augment``, ``augmentation`` and ``seed`` are used.
    role : str
        ``anchor`` or ``mid_level``.
    names : list of str
        The network's output OARs (channels 1..).
    preprocessing : Preprocessing
        The samples' preprocessing (HU window of the CT-number offsets).
    anchor_names : list of str, optional
        Input anchor OARs (mid-level: their left/right permutation).
    device : torch.device
    seed : int, optional
        Seed of the patch positions and augmentation (default
        ``config.seed``); two sources of one run (a search's training and
        held-out splits) take different seeds.
    """

    def __init__(self, samples: list[Sample], config: DeadlineConfig, *, role: str,
                 names: list[str], preprocessing: Preprocessing,
                 anchor_names: "list[str] | None", device: torch.device,
                 seed: "int | None" = None):
        if not samples:
            raise TrainingError(f"no training samples for the {role} branch")
        self.cfg, self.samples, self.dev, self.pre = config, samples, device, preprocessing
        self.batch_size = int(config.batch_size)
        self.tcfg = _train_config(role, config, preprocessing)
        self.task = Task(role, self.tcfg, anchor_names, names).to(device)
        self.fill = float(samples[0].fill)
        self.spacing = tuple(samples[0].spacing)
        self.patch = tuple(config.patch_size)
        seed = int(config.seed if seed is None else seed)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.rng = np.random.default_rng([seed, 17])
        self.volumes = (ResidentVolumes(samples, device, self.patch) if config.resident
                        else None)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch ``(x, labels, annotated)`` of :attr:`batch_size` patches on the device."""
        cfg, n, a = self.cfg, self.batch_size, self.cfg.augmentation
        if self.volumes is not None:
            x, lab, ann = self.volumes.batch(n, self.gen)
            if not a.enabled:
                return x, lab, ann
            if not cfg.vectorised_augment:
                return self._augment_each(x, lab, ann)
        else:
            idx = self.rng.integers(len(self.samples), size=n)
            made = [self.task.make(self.samples[i], 0, self.patch, self.rng,
                                   a.enabled and not cfg.vectorised_augment) for i in idx]
            x, lab, ann = (torch.stack([m[k] for m in made]).to(self.dev, non_blocking=True)
                           for k in range(3))
            if not (a.enabled and cfg.vectorised_augment):
                return x, lab, ann
        params = draw_params(n, x.shape[-3:], a, self.pre.window_hu, self.gen, self.dev)
        return augment_batch(x, lab, ann, params, self.spacing, self.task.perm_in,
                             self.task.perm_out, self.fill)

    def _augment_each(self, x, lab, ann):
        """The per-sample augmentation loop (the lever switched off)."""
        ann_np = ann.cpu().numpy()
        xs, ls, as_ = [], [], []
        for i in range(x.shape[0]):
            xi, li, ai, _, _ = augment(x[i], lab[i], ann_np[i], None, self.rng, self.tcfg,
                                       self.spacing, self.task.perm_in, self.task.perm_out,
                                       self.fill)
            xs.append(xi)
            ls.append(li)
            as_.append(torch.from_numpy(np.asarray(ai)))
        return torch.stack(xs), torch.stack(ls), torch.stack(as_).to(self.dev)


def autocast_for(config: DeadlineConfig, device: torch.device):
    """The bf16 autocast of :func:`~soars_dose.segmentation.device.autocast` when ``config.bf16``."""
    return autocast(device) if config.bf16 else contextlib.nullcontext()


def forward_backward(model: Any, x: torch.Tensor, lab: torch.Tensor, ann: torch.Tensor,
                     config: DeadlineConfig, device: torch.device,
                     balance: float) -> torch.Tensor:
    """The partial-label loss of one batch, back-propagated; returns it (on the device).

    The levers of a step: channels-last input when ``config.channels_last``,
    the forward pass under :func:`autocast_for`, the loss in float32.
    """
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with autocast_for(config, device):
        out = model(x)
    loss = partial_dice_ce(out.float(), lab, ann, balance=balance)
    loss.backward()
    return loss.detach()


class StepPacer:
    """When to stop before a deadline, and when to read the loss back to the host.

    The host may run ahead of the device by the steps queued since the last
    synchronisation, so :meth:`must_stop` stops when the time of those
    steps plus one more would pass the deadline. The time of a step is that
    of the second step (timed alone: the first carries start-up and
    autotuning), then the mean of the last log window.

    Parameters
    ----------
    device : torch.device
    sync_every : int
        Steps per log window (one host synchronisation each).
    """

    def __init__(self, device: torch.device, sync_every: int):
        self.dev, self.every = device, int(sync_every)
        self.t0 = self.t_sync = self.t_first = time.perf_counter()
        self.steps = self.pending = 0
        self.step_s = 0.0

    def elapsed(self) -> float:
        """Seconds since the pacer started."""
        return time.perf_counter() - self.t0

    def must_stop(self, seconds: float) -> bool:
        """Whether one more step could end after ``seconds`` from the start."""
        return self.elapsed() + self.step_s * (self.pending + 1) >= seconds

    def stepped(self) -> bool:
        """Count a step queued; True when its window is full (read the loss, then :meth:`window_done`)."""
        self.steps += 1
        self.pending += 1
        if self.steps <= 2:
            synchronize(self.dev)
            now = time.perf_counter()
            if self.steps == 2:
                self.step_s = now - self.t_first
            self.t_first = now
        return self.pending >= self.every

    def window_done(self) -> float:
        """Close the window after its loss was read back (the device is idle); the time."""
        now = time.perf_counter()
        if self.steps > self.pending:  # a window without the first step
            self.step_s = (now - self.t_sync) / self.pending
        self.t_sync, self.pending = now, 0
        return now


class FastTrainer:
    """One network, its optimiser and its batches, stepped as fast as the levers allow.

    Parameters
    ----------
    net : nn.Module
        The network to train (moved to ``device``; trained in place).
    samples, config, role, names, preprocessing, anchor_names
        As for :class:`BatchSource`, which makes the batches.
    device : str or torch.device
    log : LineLog, optional
    """

    def __init__(self, net: nn.Module, samples: list[Sample], config: DeadlineConfig, *,
                 role: str, names: list[str], preprocessing: Preprocessing,
                 anchor_names: "list[str] | None" = None, device="cpu",
                 log: "LineLog | None" = None):
        if role not in (B.ANCHOR, B.MID):
            raise TrainingError(f"deadline training covers the anchor and mid-level branches, "
                                f"not {role}")
        if not samples:
            raise TrainingError("no training samples")
        self.cfg, self.role, self.samples = config, role, samples
        self.dev = resolve_device(device)
        self.log = log or LineLog()
        self.source = BatchSource(samples, config, role=role, names=names,
                                  preprocessing=preprocessing, anchor_names=anchor_names,
                                  device=self.dev)
        self.volumes = self.source.volumes
        self.net = net.to(self.dev).train()
        if config.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        for p in self.net.parameters():
            p.requires_grad_(True)
        self.params = [p for p in self.net.parameters()]
        self.opt = torch.optim.SGD(self.params, lr=config.peak_lr(), momentum=config.momentum,
                                   nesterov=True, weight_decay=config.weight_decay)
        self.model: Any = self.net
        self.compiled = False
        if config.compile:
            try:
                self.model = torch.compile(self.net)
                self.compiled = True
            except Exception as exc:  # noqa: BLE001 - optional lever: report, go on eagerly
                self.log.write({"event": "compile_skipped", "reason": repr(exc)[:200]})
        self.steps = 0

    # ---- one step
    def step(self, lr: float, balance: float) -> torch.Tensor:
        """One optimiser step at learning rate ``lr``; returns the loss (on the device)."""
        x, lab, ann = self.source.next()
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        try:
            loss = forward_backward(self.model, x, lab, ann, self.cfg, self.dev, balance)
        except Exception as exc:  # noqa: BLE001 - torch.compile fails at its first call
            if not self.compiled:
                raise
            self.log.write({"event": "compile_skipped", "reason": repr(exc)[:200]})
            self.model, self.compiled = self.net, False
            self.opt.zero_grad(set_to_none=True)
            loss = forward_backward(self.model, x, lab, ann, self.cfg, self.dev, balance)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.steps += 1
        return loss

    # ---- until the deadline
    def run(self, train_s: float, *, max_steps: "int | None" = None,
            schedule_steps: "int | None" = None,
            on_log: "Callable[[dict[str, Any]], Any] | None" = None) -> dict[str, Any]:
        """Train for ``train_s`` seconds (or ``max_steps`` steps), stopping before the deadline.

        Parameters
        ----------
        train_s : float
            Training seconds from the call (the schedule spans them, unless
            ``schedule_steps`` is given).
        max_steps : int, optional
            Stop after this many steps (benchmarks, tests).
        schedule_steps : int, optional
            Run the learning-rate and loss schedule over this many steps
            instead of ``train_s`` seconds, counted over all calls of this
            trainer (:attr:`steps`): an experiment at an equal number of
            patches stops and goes on between calls without restarting it.
        on_log : callable, optional
            Called with each log entry after its line is written.

        Returns
        -------
        dict
            ``steps``, ``patches``, ``seconds`` (until the last step had
            finished on the device), ``patches_per_s``, ``final_loss``.
        """
        cfg = self.cfg
        peak = cfg.peak_lr()
        pace = StepPacer(self.dev, cfg.sync_every)
        acc = torch.zeros((), device=self.dev)
        last: dict[str, Any] = {}
        steps = 0
        while (max_steps is None or steps < max_steps) and not pace.must_stop(train_s):
            frac = (self.steps / schedule_steps if schedule_steps
                    else pace.elapsed() / train_s)
            lr = warm_restart_lr(frac, peak, warmup_fraction=cfg.warmup_fraction,
                                 warmup_start=cfg.warmup_start, final_fraction=cfg.final_fraction)
            balance = cfg.ce_balance + (cfg.ce_balance_final - cfg.ce_balance) * frac
            acc = acc + self.step(lr, balance)
            steps += 1
            if pace.stepped():
                loss = float(acc) / pace.pending  # the one host synchronisation of the window
                now = pace.window_done()
                last = {"role": self.role, "step": steps, "patches": steps * cfg.batch_size,
                        "elapsed_s": round(now - pace.t0, 3), "lr": lr, "loss": loss,
                        "s_per_step": round(pace.step_s, 5), "total_steps": self.steps}
                self.log.write(last)
                if on_log is not None:
                    on_log(last)
                acc = torch.zeros((), device=self.dev)
        final_loss = float(acc) / pace.pending if pace.pending else last.get("loss")
        synchronize(self.dev)
        secs = pace.elapsed()
        out = {"role": self.role, "event": "done", "steps": steps,
               "patches": steps * cfg.batch_size, "seconds": round(secs, 3),
               "patches_per_s": steps * cfg.batch_size / secs if secs > 0 else None,
               "final_loss": final_loss, "compiled": self.compiled}
        self.log.write(out)
        if on_log is not None:
            on_log(out)
        return out

    def trained_network(self) -> nn.Module:
        """The network on the CPU, contiguous memory, eval mode (ready to save)."""
        net = self.net.to("cpu").to(memory_format=torch.contiguous_format).eval()
        return net
