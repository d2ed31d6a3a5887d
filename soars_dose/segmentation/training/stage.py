"""Networks and optimisers of a training stage, and one optimiser step.

``warmup`` and ``search`` train the searchable network (RAdam on the
weights; in the search also Adam on the architecture logits ``alpha``);
``train`` trains the derived or fixed architecture from scratch with SGD
(Nesterov momentum, weight decay) or Adam (:class:`Stage`). :func:`step`
builds one batch of examples and takes one optimiser step.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ...errors import TrainingError
from .. import branches as B
from .. import nas
from ..device import autocast
from .batches import Sample, Task
from .config import TrainConfig

__all__ = [
    "Stage",
    "build_network",
    "fixed_architecture",
    "init_from_model",
    "search_architecture",
    "step",
    "unwrap",
]


def build_network(arch: dict[str, Any], seed: int, zero_head: bool = False) -> nn.Module:
    """A network of ``arch`` initialised from ``seed``; ``zero_head`` zeroes the output layer."""
    torch.manual_seed(seed)
    net = B.fast_norm(nas.build_network(arch))
    if zero_head:  # heat-map regression starts from an all-zero prediction
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.zero_()
    return net


def init_from_model(path: str, cin: int, cout: int) -> nn.Module:
    """The network of a model file, weights loaded, to continue training (fine-tuning)."""
    from ..modelfile import load_model

    mf = load_model(path)
    a = mf.architecture
    if int(a["in_channels"]) != cin or int(a["out_channels"]) != cout:
        raise TrainingError(f"{path}: the model has {a['in_channels']} input and "
                            f"{a['out_channels']} output channels, this branch {cin} and {cout}")
    return B.fast_norm(mf.build()).train()


def search_architecture(config: TrainConfig, cin: int, cout: int) -> dict[str, Any]:
    """The searchable architecture: every block a mixture of all candidate operations."""
    net = config.network
    return {"format": nas.ARCH_FORMAT, "version": nas.ARCH_VERSION, "in_channels": cin,
            "out_channels": cout, "widths": list(net.widths), "up": net.up,
            "negative_slope": 0.01, "blocks": list(nas.BLOCK_NAMES),
            "ops": [nas.MIXED] * len(nas.BLOCK_NAMES)}


def fixed_architecture(config: TrainConfig, cin: int, cout: int) -> dict[str, Any]:
    """The architecture without search: ``config.network.ops`` (default all ``3d_3``)."""
    a = search_architecture(config, cin, cout)
    ops = config.network.ops
    a["ops"] = list(ops) if ops else ["3d_3"] * len(nas.BLOCK_NAMES)
    return a


def unwrap(m: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or ``m`` itself)."""
    return m.module if hasattr(m, "module") else m


class Stage:
    """Network and optimisers of one stage."""

    def __init__(self, stage: str, net: nn.Module, config: TrainConfig, world: int):
        self.stage, self.config = stage, config
        o = config.optimiser
        self.net = net
        if stage == "train" and o.optimizer == "adam":
            self.opt_w = torch.optim.Adam(net.parameters(), lr=o.lr,
                                          weight_decay=o.weight_decay)
            self.opt_a = None
        elif stage == "train":
            self.opt_w = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum,
                                         nesterov=True, weight_decay=o.weight_decay)
            self.opt_a = None
        else:
            self.opt_w = torch.optim.RAdam(net.weight_parameters(), lr=o.search_lr)
            self.opt_a = torch.optim.Adam(net.arch_parameters(), lr=o.alpha_lr,
                                          betas=(0.5, 0.999),
                                          weight_decay=o.alpha_weight_decay)
            if stage == "warmup":
                for a in net.arch_parameters():
                    a.requires_grad_(True)  # gradients flow (DDP needs them); no optimiser step
        self.model = net
        if world > 1:
            self.model = nn.parallel.DistributedDataParallel(net)

    def state(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "opt_w": self.opt_w.state_dict(),
                "opt_a": self.opt_a.state_dict() if self.opt_a is not None else {}}

    def load(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.opt_w.load_state_dict(state["opt_w"])
        if self.opt_a is not None and state.get("opt_a"):
            self.opt_a.load_state_dict(state["opt_a"])


def step(so: Stage, opt, task: Task, samples: list[Sample], batch, patch, rng,
         config: TrainConfig, *, clip: float | None, step: bool, world: int) -> float:
    """One optimiser step on ``batch``.

    Examples of one shape (the anchor, mid-level and detection branches'
    patches) go through the network as one batch; the S&H segmentation
    branch's VOIs differ in size per organ and accumulate gradients example
    by example (their loss is the mean of the examples' losses; in one
    batch the soft-Dice term averages over all (example, organ) pairs).
    """
    so.opt_w.zero_grad(set_to_none=False)
    if so.opt_a is not None:
        so.opt_a.zero_grad(set_to_none=False)
    total = 0.0
    n = len(batch)
    dev = next(unwrap(so.net).parameters()).device
    if task.role != B.SH_SEG:
        made = [task.make(samples[i], c, patch, rng, config.augmentation.enabled) for i, c in batch]
        x, target, ann = (torch.stack([m[k] for m in made]).to(dev, non_blocking=True)
                          for k in range(3))
        with autocast(dev):
            out = so.model(x)
        loss = task.loss(out.float(), target, ann)
        loss.backward()
        total = float(loss.detach())
    else:
        for b, (i, c) in enumerate(batch):
            x, target, ann = task.make(samples[i], c, patch, rng, config.augmentation.enabled)
            x, target, ann = (t.to(dev, non_blocking=True) for t in (x, target, ann))
            ctx = (so.model.no_sync() if world > 1 and b < n - 1 else contextlib.nullcontext())
            with ctx:
                with autocast(dev):
                    out = so.model(x[None])
                loss = task.loss(out.float(), target[None], ann[None]) / n
                loss.backward()
            total += float(loss.detach())
    if clip:
        torch.nn.utils.clip_grad_norm_(list(unwrap(so.net).parameters()), clip)
    if step:
        opt.step()
    return total
