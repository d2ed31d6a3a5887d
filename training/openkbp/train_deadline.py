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

import json
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


def main(argv=None) -> int:
    t0 = time.perf_counter()  # start-up includes the imports
    from run_support import begin, common_parser, deadline_config, validate

    from soars_dose.segmentation.bundle import save_bundle
    from soars_dose.segmentation.device import free_device_memory
    from soars_dose.segmentation.training.accumulate import (
        RunRecord,
        append_run,
        mean_dice,
        save_branch,
        should_ship,
        start_network,
    )
    from soars_dose.segmentation.training.deadline import FastTrainer

    ap = common_parser(
        __doc__.split("\n")[0], deadline_s=480.0, reserve_s=100.0,
        reserve_help="seconds kept for packing and the two validation passes",
        base_lr=0.005, base_lr_help="learning rate at batch 4 (scaled by sqrt(batch / 4)); "
                                    "continuing from trained weights, half run 3's 0.01")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--keep-branches", action="store_true",
                    help="also keep the float32 branch files under OUT")
    args = ap.parse_args(argv)
    clock, dev_name, inputs = begin(args, t0)
    out = clock.out
    log, note, phase, phases = clock.log, clock.note, clock.phase, clock.phases
    if inputs is None:
        return 2
    cases, val, samples = inputs.cases, inputs.val, inputs.samples
    pre = inputs.start.preprocessing
    anchor_names = inputs.start["anchor"].oar_names
    end_train = args.deadline_s - args.reserve_s
    results, files = {}, []
    branch_dir = out / "branches" if args.keep_branches else Path(
        tempfile.mkdtemp(prefix="deadline_"))
    for role, share in (("anchor", args.anchor_share), ("mid_level", 1.0)):
        net, br = start_network(args.start, role)
        cfg = deadline_config(args, compile=args.compile)
        with phase(f"to_device_{role}"):
            trainer = FastTrainer(net, samples[role], cfg, role=role, names=br.oar_names,
                                  preprocessing=pre, device=args.device, log=log,
                                  anchor_names=anchor_names if role == "mid_level" else None)
        left = end_train - clock.elapsed()
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
        free_device_memory(args.device)
    with phase("pack"):
        candidate = save_bundle(out / "candidate_int8.pt", files, weights="int8",
                                overwrite=True)
    note("packed", file=str(candidate), mb=round(candidate.stat().st_size / 1e6, 2))
    old = validate(clock, "start_model", args.start, val)
    new = validate(clock, "candidate", str(candidate), val)
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
         "wall_s": clock.elapsed()}, indent=1))
    note("done", shipped=ship, wall_s=round(clock.elapsed(), 1), phases=phases)
    log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
