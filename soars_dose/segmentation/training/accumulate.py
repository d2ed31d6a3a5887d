"""Training that accumulates from run to run: start from the shipped model, ship only gains.

:func:`start_network` turns a branch of a model bundle (the shipped int8
bundle is dequantised on loading: each kernel ``q * scale``) into a
trainable network; :func:`should_ship` decides whether new weights
replace the shipped ones (only if the mean validation Dice improves);
:func:`save_branch` writes a trained branch as a model file with the
cumulative patch count in its provenance; :func:`append_run` adds one row
to the runs table (``training/openkbp/RUNS.md``), rewriting it atomically.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import TrainingError
from ...outputs import write_text_file
from .. import branches as B
from ..modelfile import save_model
from ..preprocess import Preprocessing
from .config import ReadoutConfig

__all__ = ["RunRecord", "append_run", "format_run_row", "mean_dice", "save_branch",
           "should_ship", "start_network"]


def start_network(source, role: str) -> tuple[nn.Module, Any]:
    """The trainable network of branch ``role`` of a model (bundle, branch files, folder).

    Parameters
    ----------
    source : path or list of paths
        Anything :func:`~soars_dose.segmentation.bundle.load_models` reads;
        int8 weights come back dequantised (float32 ``q * scale``).
    role : str

    Returns
    -------
    net : nn.Module
        Weights loaded, gradients enabled, train mode, CPU.
    branch : BranchModel
        What the file says about the branch (OARs, preprocessing, provenance).
    """
    from ..bundle import load_models

    br = load_models(source)[role]
    net = br.net
    for p in net.parameters():
        p.requires_grad_(True)
    return net.train(), br


def mean_dice(dice: dict[str, "float | None"]) -> float:
    """Mean of the defined per-OAR Dice values (NaN if there is none)."""
    vals = [float(v) for v in dice.values() if v is not None and math.isfinite(float(v))]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def should_ship(new: dict[str, "float | None"], old: dict[str, "float | None"], *,
                min_gain: float = 0.0) -> bool:
    """Whether the new model replaces the old one: its mean Dice must be higher.

    Parameters
    ----------
    new, old : dict of OAR -> Dice (None: not measured)
        Validation Dice of the new and the shipped model, measured the same
        way in the same run; compared over the OARs both have.
    min_gain : float
        The mean must exceed the old mean by more than this (Dice units).

    Returns
    -------
    bool
        True only for a strict improvement; False for a tie, a loss, or
        when either mean is undefined.
    """
    common = [k for k in new if k in old and new[k] is not None and old[k] is not None]
    if not common:
        return False
    a = mean_dice({k: new[k] for k in common})
    b = mean_dice({k: old[k] for k in common})
    return bool(math.isfinite(a) and math.isfinite(b) and a > b + min_gain)


def save_branch(path: "str | os.PathLike", net: nn.Module, *, role: str, names: list[str],
                preprocessing: Preprocessing, patch_size, anchor_names: "list[str] | None",
                training: dict[str, Any], overwrite: bool = True) -> Path:
    """Write a trained anchor or mid-level network as a branch model file.

    ``training`` goes into ``provenance['training']`` (settings, seconds,
    ``patches``, ``patches_cumulative``...); the ``soars`` entry is that of
    :func:`~soars_dose.segmentation.training.train`'s models.
    """
    r = ReadoutConfig()
    meta = {"branch": role, "patch_size": [int(p) for p in patch_size],
            "anchor_oars": list(anchor_names) if anchor_names else [],
            "heatmap_sigma_mm": r.heatmap_sigma_mm, "detect_threshold": r.detect_threshold,
            "voi_factor": r.voi_factor, "sh_min_patch": list(r.sh_min_patch),
            "pair_merged_readout": False}
    prov = {"soars": meta, "training": {
        **training, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__}}
    if role not in (B.ANCHOR, B.MID):
        raise TrainingError(f"save_branch writes anchor or mid-level branches, not {role}")
    return save_model(path, net, oar_names=list(names), preprocessing=preprocessing,
                      provenance=prov, overwrite=overwrite)


@dataclass
class RunRecord:
    """One row of the runs table.

    Attributes
    ----------
    date : str
        ISO date of the run.
    device : str
        E.g. ``"NVIDIA H200"``.
    train_s : float or None
        Seconds of training (all branches).
    patches : int or None
        Training patches seen in this run (all branches).
    cumulative : int or None
        Patches since the first run of the shipped model's lineage.
    dice : dict of OAR -> float or None
        Validation Dice per OAR.
    shipped : bool
    note : str
    """

    date: str
    device: str
    train_s: "float | None"
    patches: "int | None"
    cumulative: "int | None"
    dice: dict[str, "float | None"] = field(default_factory=dict)
    shipped: bool = False
    note: str = ""


def format_run_row(r: RunRecord, oars: list[str]) -> str:
    """The Markdown table row of ``r`` (Dice to 3 decimals, ``-`` where unknown)."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    mean = mean_dice({k: r.dice.get(k) for k in oars})
    cells = [r.date, r.device, num(r.train_s, ".0f"), num(r.patches, "d"),
             num(r.cumulative, "d")] + [num(r.dice.get(k), ".3f") for k in oars] + [
        "-" if not math.isfinite(mean) else f"{mean:.3f}", "yes" if r.shipped else "no",
        r.note.replace("|", "/")]
    return "| " + " | ".join(cells) + " |"


def append_run(path: "str | os.PathLike", record: RunRecord, oars: list[str]) -> Path:
    """Append ``record`` as the last row of the last table in ``path`` (atomic rewrite).

    Raises
    ------
    TrainingError
        If the file has no Markdown table to append to.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("|")]
    if not rows:
        raise TrainingError(f"{path}: no runs table (Markdown lines starting with '|') to "
                            "append the run to")
    lines.insert(rows[-1] + 1, format_run_row(record, oars))
    return write_text_file(path, "\n".join(lines) + "\n")
