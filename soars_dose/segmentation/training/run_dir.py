"""The run folder: settings, split, log and checkpoints.

``config.json`` (the flat :meth:`~.config.TrainConfig.to_dict` and the data
set; a resumed run must match it), ``split.json`` (training / held-out case
ids), ``log.jsonl`` (one JSON line per epoch), ``checkpoint.pt`` (written
atomically after every epoch; loadable with ``weights_only=True``),
``architecture.json``, ``search.json`` (mixture weights during a search)
and, at the end, ``model.soars.pt``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from ...console import option
from ...errors import OutputExistsError, TrainingError
from ...outputs import atomic_write_file
from .config import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "prepare_run_dir",
    "read_log",
    "save_checkpoint",
    "write_json",
]

CHECKPOINT_FORMAT = "soars-dose-checkpoint"
CHECKPOINT_VERSION = 1
#: Files a run writes (removed by ``overwrite``).
RUN_FILES = ("checkpoint.pt", "log.jsonl", "model.soars.pt", "architecture.json", "split.json",
             "config.json", "search.json")


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON with sorted keys, written atomically."""
    atomic_write_file(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))


def read_log(path: Path) -> list[dict[str, Any]]:
    """The entries of ``log.jsonl`` (a torn last line, from an interrupted run, is dropped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def prepare_run_dir(run_dir: Path, config: TrainConfig, dataset: Path, resume: bool,
                    overwrite: bool) -> None:
    """Create the run folder and its ``config.json``, or check it against a resumed run."""
    cfg_path = run_dir / "config.json"
    wanted = {"config": config.to_dict(), "dataset": str(dataset)}
    if resume:
        if not cfg_path.is_file():
            raise TrainingError(f"{run_dir}: nothing to resume (no config.json); start a new run "
                                f"without {option('resume')}")
        old = json.loads(cfg_path.read_text())
        if old.get("config") != wanted["config"]:
            diff = sorted(k for k in set(old.get("config", {})) | set(wanted["config"])
                          if old.get("config", {}).get(k) != wanted["config"].get(k))
            raise TrainingError(f"{run_dir}: was started with other settings ({', '.join(diff)} "
                                "differ); resume with the same settings or use a new folder")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{run_dir} already exists and is not empty; use "
                                    f"{option('resume')} to continue its run or "
                                    f"{option('overwrite')} to start again")
        for f in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (run_dir / f).unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, wanted)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash never leaves half a file)."""
    atomic_write_file(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint read with ``weights_only=True``; TrainingError if it is not ours."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a soars-dose training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path}: checkpoint version {state.get('version')} is not "
                            f"{CHECKPOINT_VERSION}")
    return state
