"""Training the SOARS branches: partial-label losses, architecture search, fixed training.

One entry function, :func:`train`, trains one branch (``anchor``,
``mid_level``, ``sh_detect`` or ``sh_seg``, see
:mod:`~soars_dose.segmentation.branches`) on a data set folder
(:func:`~soars_dose.segmentation.dataset.load_dataset`) into a run folder.
It runs in one process, or as one rank of ``torch.distributed`` (DDP,
gloo on the CPU) when launched by ``torchrun`` (``WORLD_SIZE``/``RANK``
in the environment) or by :func:`torch.multiprocessing.spawn` (pass
``rank`` and ``world_size``).

Stages
------
``warmup`` (search only, ``warmup_epochs``)
    The searchable network (every block a softmax mixture of the six
    candidate convolutions) trains its weights with RAdam; the
    architecture logits ``alpha`` stay fixed (uniform mixture).
``search`` (search only, ``search_epochs``)
    Alternating first-order DARTS: each iteration takes one RAdam step on
    the weights with a batch of the *training* split, then one Adam step on
    ``alpha`` with a batch of the *held-out* split. The cases are split
    2:1 (``holdout_fraction`` = 1/3) once, by the seed.
``train`` (``epochs``)
    The derived architecture (most-weighted operation per block; without
    ``search`` the fixed ``ops`` of the configuration) is built *from
    scratch* and trained with SGD (Nesterov momentum 0.99, weight decay
    3e-5, gradient norm clipped at 12) and the polynomial learning rate
    ``lr * (1 - epoch / epochs) ** 0.9``. ``optimizer="adam"`` swaps SGD
    for Adam (same schedule); the phantom preset uses it for the S&H
    detector and the S&H segmentation network, which SGD trains too slowly
    for a CPU budget.

Modules
-------
:mod:`.config` (:class:`TrainConfig` in parts; the flat on-disk form),
:mod:`.losses` (partial-label Dice + cross-entropy, heat-map L2),
:mod:`.augment` (flip, rotation, intensity, noise), :mod:`.batches`
(samples, the split, branch tasks and validation), :mod:`.stage` (networks,
optimisers, one step), :mod:`.run_dir` (config, split, log, checkpoints) and
:mod:`.loop` (:func:`train`); for training a fixed network to a wall-clock
deadline with the throughput levers (issue 14): :mod:`.batch_augment`
(augmentation vectorised over the batch), :mod:`.resident` (all volumes
on the device), :mod:`.schedule` (warm-up + cosine to the deadline),
:mod:`.deadline` (:class:`~.deadline.FastTrainer`, :class:`~.deadline.BatchSource`,
:class:`~.deadline.LineLog`), :mod:`.fast_search` (the warm-up and search
stages to a deadline with the same levers, :class:`~.fast_search.FastSearcher`)
and :mod:`.accumulate` (start from the shipped model, ship only gains,
the runs table).

Run folder
----------
``config.json`` (the :class:`TrainConfig`, a resumed run must match it),
``split.json`` (training / held-out case ids), ``log.jsonl`` (one JSON
line per epoch: stage, loss, learning rate, validation Dice per OAR or
detection error per OAR, mixture weights during the search, seconds),
``checkpoint.pt`` (written atomically after every epoch: network, optimiser
states, next epoch, RNG states, derived architecture; loadable with
``weights_only=True``), ``architecture.json`` and, at the end,
``model.soars.pt`` (:func:`~soars_dose.segmentation.modelfile.save_model`,
with the branch description in ``provenance['soars']``).

Determinism: every epoch's random numbers derive from ``(seed, epoch,
rank)``, the network initialisation from ``seed``; a run resumed from its
checkpoint continues with the same losses as an uninterrupted one (on the
same machine and thread count).
"""

from ...errors import TrainingError
from .augment import augment
from .batches import (
    Sample,
    Task,
    organ_centres,
    prepare_branches,
    prepare_samples,
    split_cases,
)
from .config import (
    AugmentationConfig,
    DeadlineConfig,
    ExecutionConfig,
    NetworkConfig,
    OptimiserConfig,
    ReadoutConfig,
    ScheduleConfig,
    TrainConfig,
)
from .loop import TrainResult, train
from .losses import heatmap_loss, partial_dice_ce
from .run_dir import CHECKPOINT_FORMAT
from .stage import Stage, build_network, fixed_architecture, step

__all__ = [
    "CHECKPOINT_FORMAT",
    "AugmentationConfig",
    "DeadlineConfig",
    "ExecutionConfig",
    "NetworkConfig",
    "OptimiserConfig",
    "ReadoutConfig",
    "Sample",
    "ScheduleConfig",
    "Stage",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "augment",
    "build_network",
    "fixed_architecture",
    "heatmap_loss",
    "organ_centres",
    "partial_dice_ce",
    "prepare_branches",
    "prepare_samples",
    "split_cases",
    "step",
    "train",
]
