"""What defines a training run: :class:`TrainConfig`, in parts.

In memory a configuration is nested: the branch, the split (``seed``,
``holdout_fraction``), the anchor model and the :class:`Preprocessing`
(network grid spacing and HU window, the same object the model file
stores) at the top, and one part each for the network, the stage schedule,
the optimisers (with the loss weighting), the augmentation, the S&H
read-out and the execution. On disk (``config.json``, checkpoints, model
provenance, ``soars-dose train --config``) it is the flat dictionary of
earlier releases (:meth:`TrainConfig.to_dict`); :meth:`TrainConfig.from_dict`
reads that flat form, and also accepts parts given as nested dictionaries.

A preprocessing whose ``target_spacing_mm`` is None means "the data set's
spacing" (``dataset.json``'s ``spacing_mm``; the native grid if it has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ...errors import InputError
from .. import branches as B
from .. import nas
from ..preprocess import Preprocessing

__all__ = [
    "AugmentationConfig",
    "DeadlineConfig",
    "ExecutionConfig",
    "NetworkConfig",
    "OptimiserConfig",
    "ReadoutConfig",
    "ScheduleConfig",
    "TrainConfig",
]


def _tuples(obj, names) -> None:
    for name in names:
        v = getattr(obj, name)
        if v is not None:
            setattr(obj, name, tuple(v))


@dataclass
class NetworkConfig:
    """The UNet: channel widths, fixed operations (without search), upsampling."""

    widths: tuple[int, ...] = (16, 32, 64, 80, 96)  # the packaged model's size
    ops: tuple[str, ...] | None = None  # fixed ops without search (default: all "3d_3")
    up: str = "trilinear"

    def __post_init__(self) -> None:
        _tuples(self, ("widths", "ops"))
        if len(self.widths) != 5:
            raise InputError(f"widths must list 5 channel counts, got {self.widths}")
        if self.ops is not None and len(self.ops) != len(nas.BLOCK_NAMES):
            raise InputError(f"ops must name {len(nas.BLOCK_NAMES)} blocks, got {len(self.ops)}")
        if self.ops is not None and any(o not in nas.OPS for o in self.ops):
            raise InputError(f"ops must be chosen from {', '.join(nas.OPS)}, got {self.ops}")


@dataclass
class ScheduleConfig:
    """Stages, epochs, iterations and patches."""

    search: bool = False
    warmup_epochs: int = 10
    search_epochs: int = 40
    epochs: int = 100
    iterations_per_epoch: int | None = None  # None: one pass over this rank's training items
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (48, 96, 96)
    search_patch_size: tuple[int, int, int] | None = None  # default: patch_size

    def __post_init__(self) -> None:
        _tuples(self, ("patch_size", "search_patch_size"))
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1")
        if self.search and (self.warmup_epochs < 0 or self.search_epochs < 1):
            raise InputError("a search needs warmup_epochs >= 0 and search_epochs >= 1")

    def stages(self) -> list[tuple[str, int]]:
        """``[(stage, epochs), ...]`` in order."""
        out = []
        if self.search:
            out += [("warmup", int(self.warmup_epochs)), ("search", int(self.search_epochs))]
        out.append(("train", int(self.epochs)))
        return [(s, n) for s, n in out if n > 0]

    def total_epochs(self) -> int:
        return sum(n for _, n in self.stages())

    def stage_of(self, epoch: int) -> tuple[str, int, int]:
        """``(stage, epoch within stage, epochs of stage)`` of a global epoch index."""
        e = epoch
        for s, n in self.stages():
            if e < n:
                return s, e, n
            e -= n
        raise IndexError(epoch)

    def patch(self, stage: str) -> tuple[int, int, int]:
        """The patch size of ``stage``."""
        return self.patch_size if stage == "train" else (self.search_patch_size
                                                         or self.patch_size)


@dataclass
class OptimiserConfig:
    """Optimisers of the final training and of the search, and the loss's class balance."""

    optimizer: str = "sgd"  # final training: "sgd" (SOARS: Nesterov) or "adam" (CPU budgets)
    lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_power: float = 0.9
    grad_clip: float = 12.0
    search_lr: float = 1e-3
    alpha_lr: float = 3e-3
    alpha_weight_decay: float = 1e-3
    ce_balance: float = 1.0  # class-balancing exponent at the start of a stage ...
    ce_balance_final: float = 0.0  # ... and at its end (linear in between)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")

    def balance(self, frac: float) -> float:
        """The class-balancing exponent at fraction ``frac`` (0..1) of a stage."""
        return self.ce_balance + (self.ce_balance_final - self.ce_balance) * frac


@dataclass
class AugmentationConfig:
    """Random flips, rotations, intensity changes and noise (flat key ``augment`` = enabled)."""

    enabled: bool = True
    flip_probability: float = 0.5
    rotation_deg: float = 10.0
    rotation_probability: float = 0.2
    intensity_range: tuple[float, float] = (0.75, 1.25)
    intensity_probability: float = 0.15
    shift_hu: float = 0.0  # CT-number offsets up to +-shift_hu (window intensities only)
    shift_probability: float = 0.0
    noise_std: float = 0.03
    noise_probability: float = 0.1

    def __post_init__(self) -> None:
        _tuples(self, ("intensity_range",))


@dataclass
class ReadoutConfig:
    """S&H heat maps and VOIs: how the detector is trained and its output read."""

    heatmap_sigma_mm: float = B.HEATMAP_SIGMA_MM
    heatmap_fg_weight: float = 0.0
    detect_threshold: float = 0.3
    voi_factor: float = B.VOI_FACTOR
    voi_jitter_vox: float = 2.0
    sh_min_patch: tuple[int, int, int] = B.SH_MIN_PATCH

    def __post_init__(self) -> None:
        _tuples(self, ("sh_min_patch",))


@dataclass
class ExecutionConfig:
    """Validation, what the final training sees, where it starts and where batches are built."""

    validate_every: int = 1
    validate_search: bool = True  # also validate during the warm-up and search stages
    final_on_all: bool = False  # final training also on the held-out cases (kept for the search)
    init_model: str | None = None  # model file whose network and weights start the final training
    batches_on_device: bool = True  # crop and augment on the training device (GPU: much faster)


#: Part attribute -> its class.
PARTS: dict[str, type] = {"network": NetworkConfig, "schedule": ScheduleConfig,
                          "optimiser": OptimiserConfig, "augmentation": AugmentationConfig,
                          "readout": ReadoutConfig, "execution": ExecutionConfig}
#: Flat keys whose part field is named differently.
_RENAMED = {("augmentation", "enabled"): "augment"}
#: Flat key -> (part, field).
_FLAT: dict[str, tuple[str, str]] = {
    _RENAMED.get((p, f.name), f.name): (p, f.name) for p, cls in PARTS.items()
    for f in fields(cls)}
_TOP = ("branch", "holdout_fraction", "seed", "anchor_model")
#: Preprocessing fields in the flat form (the others appear under "preprocessing" if changed).
_PRE_FLAT = ("target_spacing_mm", "window_hu")
#: The flat form's key order (that of the single flat dataclass of earlier releases).
_FLAT_ORDER = (
    "branch", "widths", "ops", "up", "search", "warmup_epochs", "search_epochs", "epochs",
    "iterations_per_epoch", "batch_size", "patch_size", "search_patch_size", "optimizer", "lr",
    "momentum", "weight_decay", "poly_power", "grad_clip", "search_lr", "alpha_lr",
    "alpha_weight_decay", "holdout_fraction", "seed", "target_spacing_mm", "window_hu",
    "anchor_model", "augment", "flip_probability", "rotation_deg", "rotation_probability",
    "intensity_range", "intensity_probability", "shift_hu", "shift_probability", "noise_std",
    "noise_probability", "heatmap_sigma_mm", "heatmap_fg_weight", "ce_balance",
    "ce_balance_final", "detect_threshold", "voi_factor", "voi_jitter_vox", "sh_min_patch",
    "validate_every", "validate_search", "final_on_all", "init_model", "batches_on_device")


def _default_preprocessing() -> Preprocessing:
    return Preprocessing(target_spacing_mm=None)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored flat as ``config.json``).

    The defaults describe a full-size SOARS branch; :meth:`tiny` gives the
    CPU-sized configuration used for the synthetic phantom. Build one from
    flat settings with :meth:`from_dict`; change settings with :meth:`with_`.
    """

    branch: str = B.ANCHOR
    preprocessing: Preprocessing = field(default_factory=_default_preprocessing)
    holdout_fraction: float = 1.0 / 3.0
    seed: int = 0
    anchor_model: str | None = None
    network: NetworkConfig = field(default_factory=NetworkConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def __post_init__(self) -> None:
        self.branch = B.role_from_cli(self.branch)
        if not 0 < self.holdout_fraction < 1:
            raise InputError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction}")
        if self.branch in (B.MID, B.SH_DETECT) and not self.anchor_model:
            raise InputError(f"the {self.branch} branch takes the anchor network's probability "
                             "maps as input: give anchor_model (--anchor-model), the anchor "
                             "branch's model.soars.pt")

    @classmethod
    def tiny(cls, branch: str, **overrides) -> "TrainConfig":
        """A small configuration for the 48 x 64 x 64 phantom on a CPU (flat ``overrides``).

        Narrow networks (8-16-32-32-32), whole-volume patches, batch 1,
        HU window (-200, 500) (soft-tissue contrast, yet the temporo-mandibular
        joints, 350 HU in the phantom, stay apart from saturated bone). The S&H detector is wider
        (16 channels at full resolution for 14 heat maps) and trains with
        Adam (learning rate 1e-3, polynomial decay): on this budget SGD
        leaves some heat maps unlearnt (see the issue note). The S&H
        segmentation network gets the same width and Adam (learning rate
        2e-3) with two VOI crops per step: with the narrow SGD recipe it
        learnt none of the 14 organs in its ~240 steps.
        """
        kw: dict[str, Any] = dict(
            branch=branch, widths=(8, 16, 32, 32, 32), patch_size=(48, 64, 64),
            search_patch_size=(32, 48, 48), batch_size=1, epochs=20, iterations_per_epoch=12,
            warmup_epochs=1, search_epochs=2, lr=0.02, momentum=0.99,
            window_hu=(-200.0, 500.0))
        if B.role_from_cli(branch) == B.SH_DETECT:
            kw.update(widths=(16, 32, 32, 32, 32), optimizer="adam", lr=1e-3)
        if B.role_from_cli(branch) == B.SH_SEG:
            # 8 channels at full resolution for 15 classes and SGD do not learn the S&H
            # organs in a few hundred steps (held-out VOI Dice ~0, the loss stalls at the
            # "predict background" value); two VOI crops per step add about 0.1 Dice
            kw.update(widths=(16, 32, 32, 32, 32), optimizer="adam", lr=2e-3, batch_size=2)
        kw.update(overrides)
        return cls.from_dict(kw)

    # ---- the flat on-disk form
    def to_dict(self) -> dict[str, Any]:
        """The flat dictionary of settings (JSON types), the form stored on disk."""
        flat: dict[str, Any] = {k: getattr(self, k) for k in _TOP}
        for key, (part, name) in _FLAT.items():
            flat[key] = getattr(getattr(self, part), name)
        pre = self.preprocessing.to_dict()
        for k in _PRE_FLAT:
            flat[k] = pre[k]
        default = _default_preprocessing().to_dict()
        changed = {k: v for k, v in pre.items() if k not in _PRE_FLAT and v != default[k]}
        out = {k: flat[k] for k in _FLAT_ORDER}
        if changed:
            out["preprocessing"] = changed
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """A configuration from flat settings (:meth:`to_dict`'s form; parts may be nested).

        Raises
        ------
        InputError
            For an unknown setting or an invalid value.
        """
        known = set(_FLAT) | set(_TOP) | set(_PRE_FLAT) | set(PARTS) | {"preprocessing"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training setting(s) {unknown}")
        parts: dict[str, dict[str, Any]] = {p: {} for p in PARTS}
        for p in PARTS:
            nested = data.get(p, {})
            if not isinstance(nested, dict):
                raise InputError(f"training setting {p!r} must be a JSON object")
            for k, v in nested.items():
                key = _RENAMED.get((p, k), k)
                if _FLAT.get(key, (None,))[0] != p:
                    raise InputError(f"unknown training setting(s) {[f'{p}.{k}']}")
                parts[p][_FLAT[key][1]] = v
        for key, (p, name) in _FLAT.items():
            if key in data:
                parts[p][name] = data[key]
        pre = dict(data.get("preprocessing") or {})
        if not isinstance(pre, dict):
            raise InputError("training setting 'preprocessing' must be a JSON object")
        pre.setdefault("target_spacing_mm", None)
        for k in _PRE_FLAT:
            if k in data:
                pre[k] = data[k]
        try:
            built = {p: cls_(**parts[p]) for p, cls_ in PARTS.items()}
            preprocessing = Preprocessing(**pre)
        except TypeError as exc:
            raise InputError(f"bad training setting: {exc}") from None
        return cls(preprocessing=preprocessing, **{k: data[k] for k in _TOP if k in data},
                   **built)

    def with_(self, **flat) -> "TrainConfig":
        """A copy with some settings changed, given by their flat names."""
        return type(self).from_dict({**self.to_dict(), **flat})


#: Learning-rate scaling rules of :class:`DeadlineConfig` (``lr_scaling``).
LR_SCALING = ("sqrt", "linear", "none")


@dataclass
class DeadlineConfig:
    """A fixed-network training run to a wall-clock deadline, and its throughput levers.

    Used by :class:`~soars_dose.segmentation.training.deadline.FastTrainer`
    (anchor and mid-level branches). Not part of :class:`TrainConfig`'s flat
    on-disk form; stored as :meth:`to_dict` in the model's provenance.

    Learning rate
    -------------
    The peak learning rate scales with the batch by the **square-root rule**
    (default ``lr_scaling="sqrt"``)::

        peak_lr = base_lr * sqrt(batch_size / reference_batch)

    with ``base_lr`` = 0.01 at ``reference_batch`` = 4, the setting of run 3
    (the shipped model): batch 32 trains at 0.0283. ``"linear"`` gives
    ``base_lr * batch_size / reference_batch`` (Goyal et al. 2017; with
    Nesterov momentum 0.99 it reaches 0.08 at batch 32, which we expect to
    be unstable), ``"none"`` keeps ``base_lr``. The schedule is made for warm
    restarts (:func:`~.schedule.warm_restart_lr`): a linear warm-up from
    ``warmup_start`` x peak to the peak over the first ``warmup_fraction``
    of the training seconds, then a cosine decay to ``final_fraction`` x
    peak at the deadline; every run starts it again from the shipped
    weights.

    Levers (each can be switched alone, ``benchmarks/bench_training_throughput.py``)
    ---------------------------------------------------------------------------------
    batch_size
        Patches per step (run 3: 4; 16-64 fill a large GPU).
    resident
        All training volumes on the device (:class:`~.resident.ResidentVolumes`),
        the batch cropped there with one gather; False: the per-sample
        cropping of :class:`~.batches.Task`.
    vectorised_augment
        One ``affine_grid``/``grid_sample`` for flips and rotations of the
        whole batch and elementwise intensity changes
        (:func:`~.batch_augment.augment_batch`); False: the per-sample
        :func:`~.augment.augment` loop.
    bf16
        bfloat16 autocast of the forward pass on CUDA (no effect on the CPU).
    channels_last
        ``torch.channels_last_3d`` memory format for the network and its input.
    compile
        ``torch.compile`` of the network; skipped (with a log line) where it
        fails, e.g. without a compiler on the CPU.
    sync_every
        Steps between reading the loss back to the host (and writing a log
        line); 1 synchronises every step as the epoch loop does.
    """

    batch_size: int = 32
    patch_size: tuple[int, int, int] = (48, 96, 96)
    base_lr: float = 0.01
    reference_batch: int = 4
    lr_scaling: str = "sqrt"
    warmup_fraction: float = 0.05
    warmup_start: float = 0.1
    final_fraction: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 3e-5
    grad_clip: float = 12.0
    ce_balance: float = 1.0
    ce_balance_final: float = 0.0
    resident: bool = True
    vectorised_augment: bool = True
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False
    sync_every: int = 25
    seed: int = 0
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def __post_init__(self) -> None:
        _tuples(self, ("patch_size",))
        if isinstance(self.augmentation, dict):
            self.augmentation = AugmentationConfig(**self.augmentation)
        for name in ("batch_size", "reference_batch", "sync_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_scaling not in LR_SCALING:
            raise InputError(f"lr_scaling must be one of {', '.join(LR_SCALING)}, "
                             f"got {self.lr_scaling!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise InputError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")

    def peak_lr(self) -> float:
        """The learning rate after the warm-up: ``base_lr`` scaled to ``batch_size``."""
        ratio = self.batch_size / self.reference_batch
        if self.lr_scaling == "sqrt":
            return self.base_lr * ratio ** 0.5
        if self.lr_scaling == "linear":
            return self.base_lr * ratio
        return self.base_lr

    def to_dict(self) -> dict[str, Any]:
        """JSON types (the augmentation nested)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "augmentation":
                v = {g.name: (list(getattr(v, g.name)) if isinstance(getattr(v, g.name), tuple)
                              else getattr(v, g.name)) for g in fields(v)}
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out
