"""Training throughput of one SOARS branch: batches built on the device vs on the CPU, by batch size.

    python benchmarks/bench_training_throughput.py --arrays .devdata/train.npz --device cuda

Takes the first ``--patients`` OpenKBP training patients (a training-arrays
file, ``python training/openkbp/export_data.py export-training``), prepares them for
the anchor branch at the packaged model's size, and for each setting runs
``training.train`` for ``--epochs`` epochs of ``--iters`` iterations; the
time of the last epoch (the first carries start-up and cuDNN autotuning;
the run stops one epoch before the configured end, so no validation pass
is timed) gives seconds per iteration and per patch. Prints the command, the machine
and each number; ``--json`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from soars_dose.machine import machine


def main(argv=None) -> int:
    import torch

    from soars_dose.datasets.openkbp import TRAINING_BRANCHES, dataset_cases
    from soars_dose.segmentation.preprocess import Preprocessing
    from soars_dose.segmentation.training import (
        TrainConfig,
        prepare_samples,
        split_cases,
        train,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arrays", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--batches", default="2,4,8")
    ap.add_argument("--patch", default="48,96,96")
    ap.add_argument("--widths", default="16,32,64,80,96")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
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
    cases = dataset_cases(args.arrays, args.patients)
    spacing = tuple(float(np.median([c.grid.spacing[a] for c in cases])) for a in range(3))
    pre = Preprocessing(target_spacing_mm=spacing, window_hu=(-500.0, 1000.0))
    tr_idx, ho_idx = split_cases([c.case_id for c in cases], 1 / 3, 0)
    tr = prepare_samples([cases[i] for i in tr_idx], "anchor", pre)
    ho = prepare_samples([cases[i] for i in ho_idx], "anchor", pre)
    print(f"prepared {len(tr)} + {len(ho)} patients in {time.perf_counter() - t0:.1f} s",
          flush=True)
    rows = []
    patch = tuple(int(v) for v in args.patch.split(","))
    widths = tuple(int(v) for v in args.widths.split(","))
    for on_device in (True, False):
        for b in (int(v) for v in args.batches.split(",")):
            cfg = TrainConfig.from_dict(dict(
                branch="anchor", widths=widths, patch_size=patch, batch_size=b,
                epochs=args.epochs + 1, iterations_per_epoch=args.iters, ops=("3d_3",) * 9,
                validate_every=10 ** 6, seed=0, rotation_probability=0.2,
                batches_on_device=on_device))
            with tempfile.TemporaryDirectory() as d:
                try:
                    res = train("bench", Path(d) / "r", cfg, samples=(tr, ho[:1]),
                                oar_names=list(TRAINING_BRANCHES["anchor"]), device=args.device, overwrite=True,
                                stop_after_epoch=args.epochs)
                    e = res.log[-1]
                    it = e["time_s"] / e["iterations"]
                    row = {"batches_on_device": on_device, "batch": b, "s_per_iteration": it,
                           "s_per_patch": it / b}
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory: report, go on
                    row = {"batches_on_device": on_device, "batch": b, "error": repr(exc)[:200]}
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                              for k, v in row.items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv, "gpu": gpu,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
