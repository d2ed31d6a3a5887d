"""One GPU run that continues the shipped model to a wall-clock deadline (issue 14).

    python training/openkbp/train_deadline.py --train .devdata/train.npz \\
        --val .devdata/validation.npz --out "$OUT" --device cuda --deadline-s 480

Within ``--deadline-s`` seconds from its start: load the training and
validation arrays; start both branches from the shipped model
(``--start``, the int8 bundle, dequantised); prepare the training patients
(mid-level inputs: the *starting* anchor's probability maps); train the
anchor then the mid-level branch with :class:`FastTrainer` (all levers on,
warm-up + cosine to the branch's deadline) until ``--reserve-s`` seconds
are left; pack the candidate as an int8 bundle; measure the validation Dice
of the starting and the candidate bundle (same crops, device and code as
``train_default.evaluate``); ship (``OUT/soars_default.pt``) only if the
mean Dice improves; append the run to a copy of RUNS.md (``OUT/RUNS.md``).
Every log line is flushed as written (``OUT/train_log.jsonl``, and on
stdout); ``OUT/run_record.json`` holds the figures, ``phases`` among them:
wall-clock seconds of start-up (imports, CUDA initialisation), loading the
arrays, preprocessing, the starting anchor over every training patient
(the mid-level inputs), putting the volumes on the device, training each
branch, packing and each validation pass. Each phase is also logged as a
``{"event": "phase", ...}`` line when it ends.

Smoke test on the CPU (a few minutes; ``--start`` can be any small bundle)::

    python training/openkbp/train_deadline.py --train .devdata/train.npz \
        --val .devdata/validation.npz --out /tmp/smoke --device cpu --max-patients 2 \
        --max-val-patients 1 --patch 16 32 32 --batch 2 --max-steps 4 --deadline-s 600 \
        --reserve-s 300

``--min-gain`` sets how much the mean Dice must improve to ship (negative:
ship a tie or a small loss; tests use it to exercise both branches).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Patches of the shipped model (run 3): anchor 86 epochs x 40 iterations x 4, mid-level
#: 132 x 40 x 4 (training/openkbp/README.md), used when the start bundle records none.
RUN3_PATCHES = {"anchor": 86 * 40 * 4, "mid_level": 132 * 40 * 4}
REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    t0 = time.perf_counter()
    import torch
    import train_default as T

    from soars_dose.segmentation.bundle import load_models, save_bundle
    from soars_dose.segmentation.training import DeadlineConfig, prepare_branches
    from soars_dose.segmentation.training.accumulate import (
        RunRecord,
        append_run,
        mean_dice,
        save_branch,
        should_ship,
        start_network,
    )
    from soars_dose.segmentation.training.config import AugmentationConfig
    from soars_dose.segmentation.training.deadline import FastTrainer, LineLog

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--start", default=str(REPO / "soars_dose/segmentation/models/soars_default.pt"))
    ap.add_argument("--runs-md", default=str(Path(__file__).resolve().parent / "RUNS.md"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--deadline-s", type=float, default=480.0,
                    help="seconds from the start of this script to its end")
    ap.add_argument("--reserve-s", type=float, default=100.0,
                    help="seconds kept for packing and the two validation passes")
    ap.add_argument("--anchor-share", type=float, default=0.4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--base-lr", type=float, default=0.005,
                    help="learning rate at batch 4 (scaled by sqrt(batch / 4)); continuing "
                         "from trained weights, half run 3's 0.01")
    ap.add_argument("--patch", type=int, nargs=3, default=[48, 96, 96])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--shift-hu", type=float, default=300.0)
    ap.add_argument("--shift-probability", type=float, default=0.2)
    ap.add_argument("--max-patients", type=int, default=None,
                    help="dry runs: the first N training patients")
    ap.add_argument("--max-val-patients", type=int, default=None,
                    help="dry runs: the first N validation patients (default: --max-patients)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="dry runs: at most this many steps per branch")
    ap.add_argument("--sync-every", type=int, default=25)
    ap.add_argument("--min-gain", type=float, default=0.0,
                    help="ship only if the mean validation Dice exceeds the start model's by "
                         "more than this (Dice units)")
    ap.add_argument("--keep-branches", action="store_true",
                    help="also keep the float32 branch files under OUT")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = LineLog(out / "train_log.jsonl", echo=lambda s: print(s, flush=True))
    phases: dict[str, float] = {}

    def note(event, **kw):
        log.write({"event": event, "t_s": round(time.perf_counter() - t0, 2), **kw})

    class phase:
        """Time a block; its seconds go into ``phases`` and a log line."""

        def __init__(self, name):
            self.name = name

        def __enter__(self):
            self.t = time.perf_counter()
            return self

        def __exit__(self, *exc):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            phases[self.name] = round(time.perf_counter() - self.t, 3)
            note("phase", phase=self.name, seconds=phases[self.name],
                 **({"failed": True} if exc[0] is not None else {}))
            return False

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.zeros(1, device=args.device)  # CUDA context inside the start-up phase
    dev_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    phases["startup"] = round(time.perf_counter() - t0, 3)
    note("start", command=" ".join([sys.executable] + sys.argv), device=dev_name,
         torch=torch.__version__, pid=os.getpid())
    note("phase", phase="startup", seconds=phases["startup"])
    for f in (args.train, args.val, args.start):
        if not Path(f).is_file():
            note("error", message=f"{f} is missing")
            return 2
    n_val = args.max_val_patients if args.max_val_patients is not None else args.max_patients
    with phase("load_arrays"):
        cases = T.load_cases(args.train, args.max_patients)
        val = T.load_cases(args.val, n_val)
        start = load_models(args.start)
    pre = start.preprocessing
    anchor_names = start["anchor"].oar_names
    maps_anchor = start["anchor"]
    maps_anchor.net.to(args.device).eval()
    prep_t: dict[str, float] = {}
    with phase("prepare"):
        samples = prepare_branches(cases, pre, maps_anchor, workers=args.threads,
                                   timings=prep_t)
    maps_anchor.net.cpu()
    phases["prepare_preprocess"] = round(prep_t["preprocess_s"], 3)
    phases["prepare_anchor_maps"] = round(prep_t["anchor_inference_s"], 3)
    note("data_ready", patients=len(cases), validation=len(val),
         preprocess_s=phases["prepare_preprocess"],
         anchor_maps_s=phases["prepare_anchor_maps"],
         s_per_patient=round(phases["prepare"] / max(1, len(cases)), 3))
    end_train = args.deadline_s - args.reserve_s
    aug = AugmentationConfig(shift_hu=args.shift_hu, shift_probability=args.shift_probability,
                             rotation_probability=0.2)
    results, files = {}, []
    branch_dir = out / "branches" if args.keep_branches else Path(
        tempfile.mkdtemp(prefix="deadline_"))
    for role, share in (("anchor", args.anchor_share), ("mid_level", 1.0)):
        net, br = start_network(args.start, role)
        cfg = DeadlineConfig(batch_size=args.batch, patch_size=tuple(args.patch),
                             base_lr=args.base_lr, compile=args.compile, augmentation=aug,
                             sync_every=args.sync_every)
        with phase(f"to_device_{role}"):
            trainer = FastTrainer(net, samples[role], cfg, role=role, names=br.oar_names,
                                  preprocessing=pre, device=args.device, log=log,
                                  anchor_names=anchor_names if role == "mid_level" else None)
        left = end_train - (time.perf_counter() - t0)
        budget = left * share
        note("train_start", role=role, budget_s=round(budget, 1), peak_lr=cfg.peak_lr(),
             resident_mb=(round(trainer.volumes.nbytes() / 2**20, 1)
                          if trainer.volumes is not None else None))
        if budget < 1:
            note("error", message=f"no time left to train {role}")
            return 3
        with phase(f"train_{role}"):
            res = trainer.run(budget, max_steps=args.max_steps)
        before = br.model.provenance.get("training", {}).get("patches_cumulative",
                                                             RUN3_PATCHES[role])
        res["patches_cumulative"] = int(before) + int(res["patches"])
        results[role] = res
        path = save_branch(branch_dir / f"{role}.soars.pt", trainer.trained_network(),
                           role=role, names=br.oar_names, preprocessing=pre,
                           patch_size=br.patch_size, anchor_names=br.meta.get("anchor_oars"),
                           training={"deadline_config": cfg.to_dict(), **res,
                                     "started_from": str(args.start)})
        files.append(path)
        del trainer
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    with phase("pack"):
        candidate = save_bundle(out / "candidate_int8.pt", files, weights="int8",
                                overwrite=True)
    note("packed", file=str(candidate), mb=round(candidate.stat().st_size / 1e6, 2))
    with phase("validate_start_model"):
        old = T.evaluate("plain", [args.start], val, args.device)
    note("validation_start_model", dice=old["dice"], mean=old["mean_dice"])
    with phase("validate_candidate"):
        new = T.evaluate("plain", [str(candidate)], val, args.device)
    note("validation_candidate", dice=new["dice"], mean=new["mean_dice"])
    ship = should_ship(new["dice"], old["dice"], min_gain=args.min_gain)
    if ship:
        shutil.copyfile(candidate, out / "soars_default.pt")
    note("ship_decision", shipped=ship, candidate_mean=mean_dice(new["dice"]),
         start_mean=mean_dice(old["dice"]), min_gain=args.min_gain)
    train_s = sum(r["seconds"] for r in results.values())
    patches = sum(r["patches"] for r in results.values())
    cumulative = sum(r["patches_cumulative"] for r in results.values())
    size = f"{len(cases)} training / {len(val)} validation patients"
    record = RunRecord(date.today().isoformat(), dev_name, train_s, patches, cumulative,
                       new["dice"], shipped=ship,
                       note=f"deadline run from {Path(args.start).name}, batch {args.batch}, "
                            f"patch {'x'.join(map(str, args.patch))}, {size}; start model "
                            f"re-measured: mean {mean_dice(old['dice']):.3f}")
    if Path(args.runs_md).is_file():
        shutil.copyfile(args.runs_md, out / "RUNS.md")
        append_run(out / "RUNS.md", record, list(new["dice"]))
    else:
        note("warning", message=f"{args.runs_md} is missing; no RUNS.md row written")
    (out / "run_record.json").write_text(json.dumps(
        {"record": record.__dict__, "branches": results, "phases": phases,
         "start_validation": old, "candidate_validation": new,
         "wall_s": time.perf_counter() - t0}, indent=1))
    note("done", shipped=ship, wall_s=round(time.perf_counter() - t0, 1), phases=phases)
    log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
