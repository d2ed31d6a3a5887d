"""The training loop: data, resumable state, epochs of stages, the final model file.

:func:`train` runs one branch in one process or as one rank of a
``torch.distributed`` job. :func:`_train` is a short sequence of steps:
load the data (:func:`_load_data`), restore or start the state
(:func:`_restore`), run every remaining epoch (:func:`_enter_stage`,
:func:`_run_epoch`, :func:`_record_epoch`) and write the model
(:func:`_save_final`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ... import oars as catalogue
from ...errors import TrainingError
from ...outputs import atomic_write_file
from .. import branches as B
from ..dataset import load_dataset
from ..device import resolve_device
from ..modelfile import save_model
from ..preprocess import Preprocessing
from .batches import Sample, Task, prepare_samples, split_cases
from .config import TrainConfig
from .run_dir import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    prepare_run_dir,
    read_log,
    save_checkpoint,
    write_json,
)
from .stage import (
    Stage,
    build_network,
    fixed_architecture,
    init_from_model,
    search_architecture,
    step,
    unwrap,
)

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    """What :func:`train` produced (on every rank; files only from rank 0).

    Attributes
    ----------
    net : nn.Module
        The final fixed network (unwrapped from DDP), in eval mode.
    architecture : dict
    log : list of dict
        The per-epoch log entries (rank 0: also in ``log.jsonl``).
    run_dir : Path
    model_path : Path or None
        ``model.soars.pt`` (rank 0).
    rank, world_size : int
    """

    net: nn.Module
    architecture: dict[str, Any]
    log: list[dict[str, Any]]
    run_dir: Path
    model_path: Path | None
    rank: int = 0
    world_size: int = 1
    search_history: list[dict[str, Any]] = field(default_factory=list)


def train(dataset: "str | os.PathLike", run_dir: "str | os.PathLike", config: TrainConfig, *,
          resume: bool = False, overwrite: bool = False, progress: bool = False,
          rank: int | None = None, world_size: int | None = None,
          init_method: str | None = None, stop_after_epoch: int | None = None,
          samples: "tuple[list[Sample], list[Sample]] | None" = None,
          device: "str | torch.device | None" = None,
          oar_names: "list[str] | None" = None,
          preprocessing: "Preprocessing | None" = None) -> TrainResult:
    """Train one SOARS branch (single process, or one rank of a DDP job).

    Parameters
    ----------
    dataset : path
        Data set folder (``dataset.json`` + cases).
    run_dir : path
        Run folder (created; see the package notes for its files).
    config : TrainConfig
    resume : bool
        Continue from ``run_dir/checkpoint.pt`` (the settings must match).
    overwrite : bool
        Start afresh in a non-empty run folder.
    progress : bool
        tqdm bar per epoch (rank 0).
    rank, world_size : int, optional
        For :func:`torch.multiprocessing.spawn`; by default taken from
        ``RANK`` / ``WORLD_SIZE`` (torchrun), else a single process.
    init_method : str, optional
        Process-group rendezvous (default ``env://``, what torchrun sets).
    stop_after_epoch : int, optional
        Stop (as if interrupted) after this many epochs in total, keeping
        the checkpoint; for tests of resumption.
    samples : (train, held_out), optional
        Already prepared samples (skips loading and preprocessing; tests).
    device : str or torch.device, optional
        Where the networks train (``"cpu"``, ``"cuda"``, ``"cuda:1"``...;
        default: CPU, or under torchrun with CUDA the GPU ``LOCAL_RANK``).
        On CUDA the forward passes run under bfloat16 autocast; the losses,
        weights and saved model stay float32. Not part of the stored
        configuration: a run may resume on another device.
    oar_names : list of str, optional
        With ``samples``: the output OARs (default: the branch's catalogue
        OARs), e.g. all OARs of a data set for a one-network baseline.
    preprocessing : Preprocessing, optional
        With ``samples``: the settings they were prepared with, stored in
        the model (default: their grid's spacing and ``config.preprocessing``'s window).

    Returns
    -------
    TrainResult
    """
    world = int(world_size if world_size is not None else os.environ.get("WORLD_SIZE", 1))
    rank = int(rank if rank is not None else os.environ.get("RANK", 0))
    own_group = False
    dev = resolve_device(device, world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                init_method=init_method or "env://", rank=rank, world_size=world)
        own_group = True
    try:
        job = _Job(Path(dataset), Path(run_dir), config, rank, world, dev, progress)
        return _train(job, resume=resume, overwrite=overwrite, stop_after_epoch=stop_after_epoch,
                      samples=samples, oar_names=oar_names, preprocessing=preprocessing)
    finally:
        if own_group:
            dist.destroy_process_group()


@dataclass
class _Job:
    """Where and how this process trains: paths, configuration, rank, device."""

    dataset: Path
    run_dir: Path
    config: TrainConfig
    rank: int
    world: int
    dev: torch.device
    progress: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


@dataclass
class _Data:
    """The prepared samples of both splits and what the model file records about them."""

    train: list[Sample]
    held_out: list[Sample]
    names: list[str]
    anchor_names: list[str] | None
    preprocessing: Preprocessing
    split: dict[str, list[str]]
    n_cases: int


@dataclass
class _State:
    """What an epoch changes: the stage's network and optimisers, the log, the search."""

    start_epoch: int = 0
    stage: Stage | None = None
    derived: dict[str, Any] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    search_history: list[dict[str, Any]] = field(default_factory=list)


def _load_anchor(config: TrainConfig):
    from ..bundle import load_models

    return load_models(config.anchor_model)[B.ANCHOR]


def _load_data(job: _Job, samples, oar_names, pre_given) -> _Data:
    """Samples from the data set folder (anchor maps computed), or the samples given."""
    config, role = job.config, job.config.branch
    if samples is not None:
        train_s, hold_s = samples
        names = list(oar_names) if oar_names is not None else B.branch_oars(role)
        anchor_names = catalogue.names("anchor") if B.needs_anchor(role) else None
        if B.needs_anchor(role) and config.anchor_model:
            anchor_names = _load_anchor(config).oar_names
        pre = pre_given or Preprocessing(
            **{**config.preprocessing.to_dict(), "target_spacing_mm": tuple(train_s[0].spacing)})
        split = {"train": [s.case_id for s in train_s], "held_out": [s.case_id for s in hold_s]}
        return _Data(train_s, hold_s, names, anchor_names, pre, split, len(train_s) + len(hold_s))
    meta, cases = load_dataset(job.dataset)
    pre = config.preprocessing
    if pre.target_spacing_mm is None and meta.get("spacing_mm"):
        pre = Preprocessing(**{**pre.to_dict(), "target_spacing_mm": tuple(meta["spacing_mm"])})
    anchor = None
    anchor_names = catalogue.names("anchor") if B.needs_anchor(role) else None
    if B.needs_anchor(role):
        anchor = _load_anchor(config)
        anchor_names = anchor.oar_names
        if anchor.model.preprocessing.to_dict() != pre.to_dict():
            raise TrainingError(
                f"{config.anchor_model}: the anchor model was trained with preprocessing "
                f"{anchor.model.preprocessing.to_dict()}, this run uses "
                f"{pre.to_dict()}; the branches must share one network grid")
    names = cases[0].oar_names[B.label_category(role)]
    if not names:
        raise TrainingError(f"{job.dataset}: the data set has no {B.label_category(role)} OARs "
                            f"to train the {role} branch on")
    tr_idx, ho_idx = split_cases([c.case_id for c in cases], config.holdout_fraction,
                                 config.seed)
    if anchor is not None:
        anchor.net.to(job.dev)
    train_s = prepare_samples([cases[i] for i in tr_idx], role, pre, anchor)
    hold_s = prepare_samples([cases[i] for i in ho_idx], role, pre, anchor)
    if anchor is not None:
        anchor.net.cpu()
    split = {"train": [cases[i].case_id for i in tr_idx],
             "held_out": [cases[i].case_id for i in ho_idx]}
    return _Data(train_s, hold_s, names, anchor_names, pre, split, len(cases))


def _restore(job: _Job, resume: bool) -> _State:
    """A fresh state, or the one ``checkpoint.pt`` holds (its stage rebuilt)."""
    state = _State()
    ckpt = None
    ckpt_path = job.run_dir / "checkpoint.pt"
    if resume:
        if not ckpt_path.is_file():
            raise TrainingError(f"{job.run_dir}: no checkpoint.pt to resume from")
        ckpt = load_checkpoint(ckpt_path)
        state.start_epoch = int(ckpt["epoch"])
        state.derived = json.loads(ckpt["derived"]) if ckpt.get("derived") else None
        torch.set_rng_state(ckpt["torch_rng"])
    log_path = job.run_dir / "log.jsonl"
    state.log = [e for e in (read_log(log_path) if job.main else [])
                 if e.get("epoch", -1) < state.start_epoch]
    if job.main:  # the log is cut back to the checkpoint's epoch
        text = "".join(json.dumps(e) + "\n" for e in state.log).encode()
        atomic_write_file(log_path, lambda f: f.write(text))
    state.search_history = [e.get("alpha") for e in state.log if e.get("alpha")]
    if ckpt is not None:  # the stage the checkpoint was written in, restored
        net = build_network(json.loads(ckpt["architecture"]), job.config.seed).to(job.dev)
        state.stage = Stage(ckpt["stage"], net, job.config, job.world)
        state.stage.load(ckpt["state"])
    return state


def _enter_stage(job: _Job, state: _State, stage: str, cin: int, cout: int) -> None:
    """Build the stage's network and optimisers when the epoch starts a new stage."""
    config, role = job.config, job.config.branch
    prev = state.stage
    if prev is not None and prev.stage == stage:
        return
    if stage == "train":
        if config.schedule.search:
            if state.derived is None and prev is not None:
                state.derived = unwrap(prev.net).derive()
            if state.derived is None:
                raise TrainingError("internal: the search left no architecture")
            arch = dict(state.derived)
            if job.main:
                write_json(job.run_dir / "architecture.json", arch)
        else:
            arch = fixed_architecture(config, cin, cout)
        if config.execution.init_model:
            net = init_from_model(config.execution.init_model, cin, cout)
        else:
            net = build_network(arch, config.seed + 1, role == B.SH_DETECT)
        state.stage = Stage(stage, net.to(job.dev), config, job.world)
        return
    net = build_network(search_architecture(config, cin, cout), config.seed,
                        role == B.SH_DETECT).to(job.dev)
    state.stage = Stage(stage, net, config, job.world)
    if prev is not None:  # warm-up -> search: weights and their optimiser carry on
        net.load_state_dict(unwrap(prev.net).state_dict())
        state.stage.opt_w.load_state_dict(prev.opt_w.state_dict())


def _run_epoch(job: _Job, state: _State, task: Task, data: _Data, items, epoch: int
               ) -> dict[str, Any]:
    """The optimiser steps of one epoch; returns its log entry (before validation)."""
    from tqdm.auto import tqdm

    config, role, world = job.config, job.config.branch, job.world
    stage, e_in, n_in = config.schedule.stage_of(epoch)
    so = state.stage
    so.net.train()
    task.balance = config.optimiser.balance(e_in / max(n_in - 1, 1))
    rng = np.random.default_rng([config.seed, epoch, job.rank])
    if stage == "train":
        lr = config.optimiser.lr * (1.0 - e_in / n_in) ** config.optimiser.poly_power
        for g in so.opt_w.param_groups:
            g["lr"] = lr
    else:
        lr = config.optimiser.search_lr
    patch = config.schedule.patch(stage)
    on_all = stage == "train" and config.execution.final_on_all
    ep_samples, ep_items = ((data.train + data.held_out, items["all"]) if on_all
                            else (data.train, items["train"]))
    hold_items = items["held_out"]
    bs = config.schedule.batch_size
    order = np.random.default_rng([config.seed, epoch, 991]).permutation(len(ep_items))
    mine = [ep_items[i] for i in order[job.rank::world]] or [ep_items[order[0]]]
    per_rank = int(math.ceil(len(ep_items) / (bs * world)))
    iters = int(config.schedule.iterations_per_epoch or max(1, per_rank))
    hold_order = rng.permutation(len(hold_items)) if hold_items else []
    clip = config.optimiser.grad_clip if stage == "train" else None
    losses, a_losses = [], []
    bar = tqdm(total=iters, desc=f"{role} {stage} {e_in + 1}/{n_in}", leave=False,
               disable=not (job.progress and job.main))
    for it in range(iters):
        batch = [mine[(it * bs + b) % len(mine)] for b in range(bs)]
        losses.append(step(so, so.opt_w, task, ep_samples, batch, patch, rng, config,
                           clip=clip, step=True, world=world))
        if stage == "search":
            if not hold_items:
                raise TrainingError("the search needs held-out examples; the held-out split "
                                    f"has none for the {role} branch")
            hb = [hold_items[hold_order[(it * bs + b) % len(hold_items)]] for b in range(bs)]
            a_losses.append(step(so, so.opt_a, task, data.held_out, hb, patch, rng, config,
                                 clip=None, step=True, world=world))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    loss = float(np.mean(losses))
    if world > 1:
        t = torch.tensor([loss], device=job.dev)
        dist.all_reduce(t)
        loss = float(t) / world
    entry: dict[str, Any] = {"epoch": epoch, "stage": stage, "stage_epoch": e_in,
                             "loss": loss, "lr": lr, "iterations": iters}
    if a_losses:
        entry["alpha_loss"] = float(np.mean(a_losses))
    if stage != "train":
        entry["alpha"] = unwrap(so.net).op_weights()
        state.search_history.append(entry["alpha"])
    return entry


def _record_epoch(job: _Job, state: _State, entry: dict[str, Any]) -> None:
    """Append the entry to the log; on rank 0 also to ``log.jsonl``, and write the checkpoint."""
    state.log.append(entry)
    if not job.main:
        return
    with open(job.run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    so = state.stage
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "epoch": entry["epoch"] + 1, "stage": entry["stage"], "state": so.state(),
            "architecture": json.dumps(unwrap(so.net).architecture()),
            "derived": json.dumps(state.derived) if state.derived else "",
            "torch_rng": torch.get_rng_state(), "config": json.dumps(job.config.to_dict()),
            "world_size": job.world}
    save_checkpoint(job.run_dir / "checkpoint.pt", ckpt)


def _save_final(job: _Job, state: _State, data: _Data, final: nn.Module, seconds: float
                ) -> Path:
    """``architecture.json``, ``model.soars.pt`` (with provenance) and ``search.json``."""
    config, role = job.config, job.config.branch
    write_json(job.run_dir / "architecture.json", final.architecture())
    last_val = next((e for e in reversed(state.log) if "val_dice" in e or
                     "val_centre_error_vox" in e), {})
    r = config.readout
    soars_meta = {"branch": role, "patch_size": list(config.schedule.patch_size),
                  "anchor_oars": list(data.anchor_names) if data.anchor_names else [],
                  "heatmap_sigma_mm": r.heatmap_sigma_mm,
                  "detect_threshold": r.detect_threshold, "voi_factor": r.voi_factor,
                  "sh_min_patch": list(r.sh_min_patch), "pair_merged_readout": role == B.SH_SEG}
    provenance = {
        "soars": soars_meta,
        "training": {"config": config.to_dict(), "dataset": str(job.dataset),
                     "cases": data.n_cases, "split": data.split,
                     "epochs": config.schedule.total_epochs(), "world_size": job.world,
                     "seconds": seconds,
                     "final_validation": {k: v for k, v in last_val.items()
                                          if k.startswith("val")},
                     "searched": bool(config.schedule.search),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "torch": torch.__version__, "python": platform.python_version()},
    }
    path = save_model(job.run_dir / "model.soars.pt", final, oar_names=data.names,
                      preprocessing=data.preprocessing, provenance=provenance, overwrite=True)
    if state.search_history:
        write_json(job.run_dir / "search.json", state.search_history)
    return path


def _train(job: _Job, *, resume: bool, overwrite: bool, stop_after_epoch: int | None,
           samples, oar_names, preprocessing) -> TrainResult:
    config, role = job.config, job.config.branch
    t_start = time.perf_counter()
    if job.main:
        prepare_run_dir(job.run_dir, config, job.dataset, resume, overwrite)
    job.barrier()
    data = _load_data(job, samples, oar_names, preprocessing)
    if config.augmentation.shift_hu > 0 and data.preprocessing.intensity != "window":
        raise TrainingError(f"shift_hu moves CT numbers within the HU window; this run's "
                            f"intensities are {data.preprocessing.intensity!r}: set shift_hu=0")
    if job.main:
        write_json(job.run_dir / "split.json", data.split)
    task = Task(role, config, data.anchor_names, data.names).to(
        job.dev if config.execution.batches_on_device else "cpu")
    cin = B.in_channels(role, None if data.anchor_names is None else len(data.anchor_names))
    cout = len(data.names) + 1
    items = {"train": task.items(data.train), "held_out": task.items(data.held_out),
             "all": task.items(data.train + data.held_out)}
    if not items["train"]:
        raise TrainingError(f"no training examples for the {role} branch (no annotated OARs)")
    state = _restore(job, resume)
    total = config.schedule.total_epochs()
    end = total if stop_after_epoch is None else min(total, int(stop_after_epoch))
    for epoch in range(state.start_epoch, end):
        t_ep = time.perf_counter()
        stage = config.schedule.stage_of(epoch)[0]
        _enter_stage(job, state, stage, cin, cout)
        entry = _run_epoch(job, state, task, data, items, epoch)
        ex = config.execution
        if job.main and data.held_out and (stage == "train" or ex.validate_search) and (
                (epoch + 1) % max(1, ex.validate_every) == 0 or epoch == total - 1):
            entry.update(task.validate(unwrap(state.stage.net), data.held_out))
        entry["time_s"] = time.perf_counter() - t_ep
        _record_epoch(job, state, entry)
        job.barrier()
    if state.stage is None:
        raise TrainingError(f"{job.run_dir}: nothing to train (0 epochs)")
    final = unwrap(state.stage.net).cpu()
    final.eval()
    model_path = None
    if end >= total and job.main:
        model_path = _save_final(job, state, data, final, time.perf_counter() - t_start)
    job.barrier()
    return TrainResult(final, final.architecture(), state.log, job.run_dir, model_path,
                       job.rank, job.world, state.search_history)
