"""Training throughput of one SOARS branch, each lever of the deadline trainer alone.

    python benchmarks/bench_training_throughput.py --arrays .devdata/train.npz --device cuda

Takes the first ``--patients`` OpenKBP training patients (a training-arrays
file, ``python training/openkbp/export_data.py export-training``; or
``--synthetic N`` random volumes, for a CPU check of the code paths),
prepares them for the anchor branch and trains the plain 3-D UNet at the
packaged size with :class:`~soars_dose.segmentation.training.deadline.FastTrainer`.
``baseline`` is run 3's step (batch 4, patches cropped and augmented one by
one on the device, bf16 autocast on CUDA, the loss read back every step);
each further row switches on one lever alone (``DeadlineConfig``: batch
16/32/64 with the learning rate scaled by the square-root rule, resident
volumes, batch-vectorised augmentation, channels-last 3-D, loss read back
every 25 steps, ``torch.compile``); ``all`` switches them all on at batch
32 (without compile; ``all_compile`` adds it). Each row: ``--warmup`` untimed
steps, then ``--steps`` timed steps; prints patches per second and the
speed-up over the baseline, one JSON line per row (``--json`` also writes them).
On CUDA each row also counts the synchronising calls inside ``--sync-steps``
more training steps (``host_syncs_per_step``, CUDA's sync debug mode in
``warn``; the loss read-back of ``run`` is outside the step and not counted):
0 for the resident rows is the "no host synchronisation inside the step" lever.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from soars_dose.machine import machine

BASELINE = dict(batch_size=4, resident=False, vectorised_augment=False, bf16=True,
                channels_last=False, compile=False, sync_every=1)
ALL = dict(batch_size=32, resident=True, vectorised_augment=True, bf16=True,
           channels_last=True, compile=False, sync_every=25)
#: Row name -> the settings changed from the baseline.
LEVERS: dict[str, dict] = {
    "baseline": {}, "batch16": dict(batch_size=16), "batch32": dict(batch_size=32),
    "batch64": dict(batch_size=64), "resident": dict(resident=True),
    "vectorised_augment": dict(vectorised_augment=True),
    "channels_last": dict(channels_last=True), "no_sync": dict(sync_every=25),
    "compile": dict(compile=True), "all": ALL, "all_compile": {**ALL, "compile": True},
}


def count_host_syncs(trainer, steps: int):
    """Synchronising CUDA calls per training step over ``steps`` steps; None off CUDA.

    Uses :func:`torch.cuda.set_sync_debug_mode` (``warn``: every call that
    waits for the device issues a warning) around :meth:`FastTrainer.step`.
    """
    import warnings

    import torch

    if trainer.dev.type != "cuda" or steps < 1:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.step(trainer.cfg.peak_lr(), 1.0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    return syncs / steps


def synthetic_samples(n: int, shape, seed: int = 0):
    """Random volumes with three box-shaped OARs (for CPU checks of the code paths)."""
    from soars_dose.segmentation.training import Sample

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.random(shape, dtype=np.float32)
        lab = np.zeros(shape, np.uint8)
        d, h, w = shape
        lab[d // 4:d // 2, h // 4:h // 2, w // 4:w // 2] = 1
        lab[d // 2:3 * d // 4, h // 2:3 * h // 4, w // 4:w // 2] = 2
        lab[d // 4:d // 2, h // 2:3 * h // 4, w // 2:3 * w // 4] = 3
        out.append(Sample(f"s{i}", img, lab, np.ones(4, bool), None, np.full((3, 3), np.nan),
                          (2.5, 3.906, 3.906), 0.0))
    return out


def main(argv=None) -> int:
    import torch

    from soars_dose.datasets.openkbp import TRAINING_BRANCHES, dataset_cases
    from soars_dose.segmentation.device import free_device_memory
    from soars_dose.segmentation.preprocess import Preprocessing
    from soars_dose.segmentation.training import (
        DeadlineConfig,
        TrainConfig,
        build_network,
        fixed_architecture,
        prepare_samples,
    )
    from soars_dose.segmentation.training.deadline import FastTrainer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--arrays", help="OpenKBP training-arrays file")
    src.add_argument("--synthetic", type=int, help="this many random volumes instead")
    ap.add_argument("--synthetic-shape", default="56,112,112")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--levers", default=",".join(LEVERS),
                    help=f"comma-separated rows ({', '.join(LEVERS)})")
    ap.add_argument("--patch", default="48,96,96")
    ap.add_argument("--widths", default="16,32,64,80,96")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--sync-steps", type=int, default=3,
                    help="CUDA: steps under the sync debug mode after the timed ones")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print("command:", " ".join([sys.executable] + sys.argv), flush=True)
    m = machine()
    print(f"machine: {m['platform']}, {m['cpu']}, {m['nproc']} CPUs, {m['ram']}, "
          f"torch {torch.__version__}, GPU {gpu}", flush=True)
    t0 = time.perf_counter()
    names = list(TRAINING_BRANCHES["anchor"])
    if args.arrays:
        cases = dataset_cases(args.arrays, args.patients)
        spacing = tuple(float(np.median([c.grid.spacing[a] for c in cases])) for a in range(3))
        pre = Preprocessing(target_spacing_mm=spacing, window_hu=(-500.0, 1000.0))
        samples = prepare_samples(cases, "anchor", pre)
    else:
        shape = tuple(int(v) for v in args.synthetic_shape.split(","))
        samples = synthetic_samples(args.synthetic, shape)
        pre = Preprocessing(target_spacing_mm=samples[0].spacing, window_hu=(-500.0, 1000.0))
    print(f"prepared {len(samples)} volumes in {time.perf_counter() - t0:.1f} s", flush=True)
    patch = tuple(int(v) for v in args.patch.split(","))
    widths = [int(v) for v in args.widths.split(",")]
    arch = fixed_architecture(TrainConfig.from_dict({"branch": "anchor", "widths": widths}),
                              1, len(names) + 1)
    rows, base = [], None
    for name in [v for v in args.levers.split(",") if v]:
        if name not in LEVERS:
            raise SystemExit(f"unknown lever {name!r}; choose from {', '.join(LEVERS)}")
        cfg = DeadlineConfig(**{**BASELINE, **LEVERS[name]}, patch_size=patch,
                             augmentation={"rotation_probability": 0.2})
        row: dict = {"lever": name, "batch": cfg.batch_size}
        tr = None
        try:
            tr = FastTrainer(build_network(arch, 0), samples, cfg, role="anchor", names=names,
                             preprocessing=pre, device=args.device)
            tr.run(1e9, max_steps=args.warmup)
            out = tr.run(1e9, max_steps=args.steps)
            row.update(patches_per_s=out["patches_per_s"],
                       s_per_patch=out["seconds"] / out["patches"], compiled=out["compiled"],
                       lr=cfg.peak_lr(), host_syncs_per_step=count_host_syncs(
                           tr, args.sync_steps))
            if name == "baseline":
                base = out["patches_per_s"]
            if base:
                row["speedup"] = out["patches_per_s"] / base
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: report, go on
            row["error"] = repr(exc)[:200]
        finally:  # a failed lever must not hold its memory into the next row
            del tr
            free_device_memory(args.device)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                          for k, v in row.items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv, "gpu": gpu,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
