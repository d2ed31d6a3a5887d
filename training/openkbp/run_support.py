"""What the GPU-run scripts share: the timed, line-flushed log, start-up and data preparation.

Used by ``train_deadline.py`` (continue the shipped model to a deadline) and
``search_vs_plain.py`` (searched against plain at an equal budget).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "soars_dose/segmentation/models/soars_default.pt"


def common_parser(description: str, *, deadline_s: float, reserve_s: float, reserve_help: str,
                  base_lr: float, base_lr_help: str):
    """The arguments both scripts take (data, output, device, time plan, batch, dry-run limits)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--start", default=str(SHIPPED),
                    help="the shipped bundle (default: the packaged model)")
    ap.add_argument("--runs-md", default=str(Path(__file__).resolve().parent / "RUNS.md"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--deadline-s", type=float, default=deadline_s,
                    help="seconds from the start of this script to its end")
    ap.add_argument("--reserve-s", type=float, default=reserve_s, help=reserve_help)
    ap.add_argument("--anchor-share", type=float, default=0.4,
                    help="share of the training seconds for the anchor branch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--base-lr", type=float, default=base_lr, help=base_lr_help)
    ap.add_argument("--patch", type=int, nargs=3, default=[48, 96, 96])
    ap.add_argument("--shift-hu", type=float, default=300.0)
    ap.add_argument("--shift-probability", type=float, default=0.2)
    ap.add_argument("--max-patients", type=int, default=None,
                    help="dry runs: the first N training patients")
    ap.add_argument("--max-val-patients", type=int, default=None,
                    help="dry runs: the first N validation patients (default: --max-patients)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="dry runs: at most this many steps per branch (and search stage)")
    ap.add_argument("--sync-every", type=int, default=25)
    ap.add_argument("--min-gain", type=float, default=0.0,
                    help="ship only if the mean validation Dice exceeds the shipped model's by "
                         "more than this (Dice units)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the initial weights, patches and augmentation")
    return ap


def deadline_config(args, batch: "int | None" = None, **kw):
    """The :class:`DeadlineConfig` of the command line (``batch`` overrides ``--batch``).

    The augmentation adds CT-number shifts (``--shift-hu`` on a
    ``--shift-probability`` share of the patches) to rotations on a fifth.
    """
    from soars_dose.segmentation.training import DeadlineConfig
    from soars_dose.segmentation.training.config import AugmentationConfig

    aug = AugmentationConfig(shift_hu=args.shift_hu, shift_probability=args.shift_probability,
                             rotation_probability=0.2)
    return DeadlineConfig(batch_size=args.batch if batch is None else batch,
                          patch_size=tuple(args.patch), base_lr=args.base_lr,
                          augmentation=aug, sync_every=args.sync_every, seed=args.seed, **kw)


class RunClock:
    """The run's clock, its ``train_log.jsonl`` and the seconds of each phase.

    Parameters
    ----------
    out : Path
        Run folder (``train_log.jsonl`` is appended there, every line flushed).
    device : str
        ``cuda...`` phases wait for the device before they are timed.
    t0 : float, optional
        ``time.perf_counter()`` at the script's start, before its imports
        (torch's import is part of the start-up phase); default now.
    """

    def __init__(self, out: Path, device: str, t0: "float | None" = None):
        from soars_dose.segmentation.training.deadline import LineLog

        self.out = out
        self.t0 = time.perf_counter() if t0 is None else t0
        self.device = device
        self.log = LineLog(out / "train_log.jsonl", echo=lambda s: print(s, flush=True))
        self.phases: dict[str, float] = {}

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t0

    def note(self, event: str, **kw: Any) -> None:
        """One log line ``{"event": event, "t_s": ..., **kw}``."""
        self.log.write({"event": event, "t_s": round(self.elapsed(), 2), **kw})

    def phase(self, name: str) -> "_Phase":
        """A ``with`` block whose wall-clock seconds go into :attr:`phases` and the log."""
        return _Phase(self, name)


class _Phase:
    def __init__(self, clock: RunClock, name: str):
        self.clock, self.name = clock, name

    def __enter__(self) -> "_Phase":
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        if exc[0] is None:  # after an error, waiting on the device could hide it
            import torch

            from soars_dose.segmentation.device import synchronize

            synchronize(torch.device(self.clock.device))
        secs = round(time.perf_counter() - self.t, 3)
        self.clock.phases[self.name] = secs
        self.clock.note("phase", phase=self.name, seconds=secs,
                        **({"failed": True} if exc[0] is not None else {}))
        return False


def start_torch(clock: RunClock, threads: int) -> str:
    """Threads, cuDNN autotuning and the CUDA context inside the ``startup`` phase; the device name."""
    import torch

    torch.set_num_threads(threads)
    if clock.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.zeros(1, device=clock.device)  # CUDA context inside the start-up phase
    name = torch.cuda.get_device_name(0) if clock.device.startswith("cuda") else "CPU"
    clock.phases["startup"] = round(clock.elapsed(), 3)
    clock.note("start", command=" ".join([sys.executable] + sys.argv), device=name,
               torch=torch.__version__, pid=os.getpid())
    clock.note("phase", phase="startup", seconds=clock.phases["startup"])
    return name


@dataclass
class Inputs:
    """The run's data: training and validation cases, the start model, prepared samples."""

    cases: list
    val: list
    start: Any
    samples: dict


def load_inputs(clock: RunClock, train: str, val: str, start: str, *,
                max_patients: "int | None", max_val_patients: "int | None",
                workers: int, mid_level: bool = True) -> "Inputs | None":
    """Load the arrays and the start bundle, and prepare both branches' samples.

    The mid-level inputs are the *start* model's anchor probability maps;
    ``mid_level=False`` prepares the anchor samples only (no anchor maps).
    Returns None (after an ``error`` log line) when an input file is missing.
    """
    import train_default as T

    from soars_dose.segmentation.bundle import load_models
    from soars_dose.segmentation.training import prepare_branches

    for f in (train, val, start):
        if not Path(f).is_file():
            clock.note("error", message=f"{f} is missing")
            return None
    n_val = max_val_patients if max_val_patients is not None else max_patients
    with clock.phase("load_arrays"):
        cases = T.load_cases(train, max_patients)
        val_cases = T.load_cases(val, n_val)
        model = load_models(start)
    anchor = model["anchor"] if mid_level else None
    if anchor is not None:
        anchor.net.to(clock.device).eval()
    prep_t: dict[str, float] = {}
    with clock.phase("prepare"):
        samples = prepare_branches(cases, model.preprocessing, anchor, workers=workers,
                                   timings=prep_t)
    if anchor is not None:
        anchor.net.cpu()
    ph = clock.phases
    ph["prepare_preprocess"] = round(prep_t.get("preprocess_s", 0.0), 3)
    ph["prepare_anchor_maps"] = round(prep_t.get("anchor_inference_s", 0.0), 3)
    clock.note("data_ready", patients=len(cases), validation=len(val_cases),
               preprocess_s=ph["prepare_preprocess"], anchor_maps_s=ph["prepare_anchor_maps"],
               s_per_patient=round(ph["prepare"] / max(1, len(cases)), 3))
    return Inputs(cases, val_cases, model, samples)


def begin(args, t0: float, *, mid_level: bool = True
          ) -> "tuple[RunClock, str, Inputs | None]":
    """The run folder, its clock and log, torch started, the data prepared.

    Returns ``(clock, device name, inputs)``; ``inputs`` is None when an
    input file is missing (logged).
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = RunClock(out, args.device, t0)
    name = start_torch(clock, args.threads)
    inputs = load_inputs(clock, args.train, args.val, args.start,
                         max_patients=args.max_patients, max_val_patients=args.max_val_patients,
                         workers=args.threads, mid_level=mid_level)
    return clock, name, inputs


def validate(clock: RunClock, label: str, bundle: str, val: list) -> dict:
    """Validation Dice of one bundle (``train_default.evaluate``), timed and logged."""
    import train_default as T

    with clock.phase(f"validate_{label}"):
        res = T.evaluate("plain", [bundle], val, clock.device)
    clock.note(f"validation_{label}", dice=res["dice"], mean=res["mean_dice"])
    return res
