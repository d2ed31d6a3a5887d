"""Does a larger batch reach the same Dice per patch seen? (issue 14, part 1)

    python training/openkbp/batch_per_patch.py --train .devdata/train.npz \\
        --val .devdata/validation.npz --out "$OUT" --device cuda --patches 16000

For each batch size of ``--batches`` (default 32, then 4), the anchor branch
(the shipped model's widths, every block 3-D 3x3x3) is trained **from
scratch, from the same initial weights**, for the same number of training
patches (``--patches``), with :class:`FastTrainer` and every lever on; the
learning rate follows the square-root rule of :class:`DeadlineConfig`
(0.01 at batch 4) and the warm-up + cosine schedule runs over the arm's
steps (not its seconds), so that both arms see the same schedule per patch.
At ``--checkpoints`` evenly spaced patch counts the Dice of each anchor OAR
is measured on the validation crops (the validation patients' training
crops in the network grid, ``Task.validate``: sliding window, argmax,
annotated OARs only). An arm that would pass its seconds
(``--arm-cap-s``, default an equal share of the time left) stops early and
says so; its last checkpoint is then at fewer patches.

Outputs under ``--out``: ``train_log.jsonl`` (every line flushed),
``batch_per_patch.json`` (per arm: checkpoints with patches, steps,
seconds, Dice per OAR and mean; patches/s) and ``batch_per_patch.md`` (the
table for the issue note and the README).

Smoke test on the CPU (a minute; tiny sizes)::

    python training/openkbp/batch_per_patch.py --train .devdata/train.npz \\
        --val .devdata/validation.npz --out /tmp/bp --device cpu --max-patients 2 \\
        --max-val-patients 1 --patch 16 32 32 --batches 2 4 --patches 16 --checkpoints 2
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _table(arms: dict, oars: list[str]) -> str:
    """One row per (arm, checkpoint): patches, steps, seconds, Dice per OAR, mean."""
    head = ["batch", "peak lr", "patches", "steps", "training s"] + oars + ["mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b, arm in arms.items():
        for c in arm["checkpoints"]:
            d = c["dice"]
            cells = [str(b), f"{arm['peak_lr']:.4f}", str(c["patches"]), str(c["steps"]),
                     f"{c['seconds']:.1f}"]
            cells += ["-" if d.get(k) is None else f"{d[k]:.3f}" for k in oars]
            cells.append("-" if c["mean"] is None else f"{c['mean']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    t0 = time.perf_counter()  # start-up includes the imports
    import numpy as np
    import torch
    from run_support import begin, common_parser, deadline_config

    from soars_dose.outputs import write_text_file
    from soars_dose.segmentation import nas
    from soars_dose.segmentation.device import free_device_memory
    from soars_dose.segmentation.training import prepare_branches
    from soars_dose.segmentation.training.deadline import FastTrainer
    from soars_dose.segmentation.training.stage import build_network

    ap = common_parser(
        __doc__.split("\n")[0], deadline_s=300.0, reserve_s=20.0,
        reserve_help="seconds kept after the last arm (writing the results)",
        base_lr=0.01, base_lr_help="SGD learning rate at batch 4 (scaled by sqrt(batch / 4))")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 4],
                    help="batch sizes, one arm each, in this order (the fast arm first: an arm "
                         "that ends under its cap leaves its seconds to the later ones)")
    ap.add_argument("--patches", type=int, default=16000,
                    help="training patches per arm (rounded down to whole steps)")
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--arm-cap-s", type=float, default=None,
                    help="seconds per arm at most (default: an equal share of the time left)")
    args = ap.parse_args(argv)
    clock, dev_name, inputs = begin(args, t0, mid_level=False)
    out = clock.out
    note = clock.note
    if inputs is None:
        return 2
    start = inputs.start
    pre, br = start.preprocessing, start["anchor"]
    with clock.phase("prepare_validation"):
        val = prepare_branches(inputs.val, pre, workers=args.threads)["anchor"]
    arch = nas.plain_3d(br.net).architecture()
    arms: dict[int, dict] = {}
    oars = list(br.oar_names)

    def write_results() -> None:
        """Both files as they stand (after every checkpoint: a run killed at its limit keeps them)."""
        md = (f"# Dice per patch seen, by batch size ({date.today().isoformat()}, {dev_name})\n\n"
              f"Anchor branch from scratch (same initial weights), {len(inputs.cases)} training "
              f"/ {len(val)} validation patients, patch {'x'.join(map(str, args.patch))}, "
              f"{args.patches} patches per arm; validation crops (`Task.validate`).\n\n"
              + _table(arms, oars)
              + "".join(f"\nbatch {b}: {a['patches_per_s']:.1f} patches/s"
                        + (" (stopped early at its cap)" if a["stopped_early"] else "")
                        for b, a in arms.items() if a.get("patches_per_s")) + "\n")
        write_text_file(out / "batch_per_patch.md", md)
        write_text_file(out / "batch_per_patch.json", json.dumps(
            {"device": dev_name, "arms": arms, "phases": clock.phases, "args": vars(args),
             "wall_s": clock.elapsed()}, indent=1))

    end = args.deadline_s - args.reserve_s
    for k, b in enumerate(args.batches):
        t_arm = clock.elapsed()
        cfg = deadline_config(args, b)
        cap = (args.arm_cap_s if args.arm_cap_s is not None
               else (end - t_arm) / (len(args.batches) - k))
        steps = max(1, args.patches // b)
        marks = sorted({max(1, round(steps * (i + 1) / args.checkpoints))
                        for i in range(args.checkpoints)})
        with clock.phase(f"to_device_batch{b}"):
            trainer = FastTrainer(build_network(arch, args.seed + 1), inputs.samples["anchor"],
                                  cfg, role="anchor", names=br.oar_names, preprocessing=pre,
                                  device=args.device, log=clock.log)
        note("arm_start", batch=b, steps=steps, patches=steps * b, peak_lr=cfg.peak_lr(),
             cap_s=round(cap, 1))
        arm = {"batch": b, "peak_lr": cfg.peak_lr(), "planned_steps": steps, "checkpoints": [],
               "stopped_early": False, "cap_s": round(cap, 3)}
        arms[b] = arm
        train_s = val_s = 0.0
        for m in marks:
            # the cap is wall-clock: set-up and validation count, and one more validation
            # pass (as long as the last) must still fit after this stretch of training
            left = cap - (clock.elapsed() - t_arm) - val_s
            res = trainer.run(max(left, 0.0), max_steps=m - trainer.steps,
                              schedule_steps=steps)
            train_s += res["seconds"]
            t_val = clock.elapsed()
            with torch.no_grad():
                v = trainer.source.task.validate(trainer.net, val)["val_dice"]
            val_s = clock.elapsed() - t_val
            dice = {n: (None if v.get(n) is None else float(v[n])) for n in br.oar_names}
            got = [x for x in dice.values() if x is not None]
            c = {"patches": trainer.steps * b, "steps": trainer.steps,
                 "seconds": round(train_s, 3), "validation_s": round(val_s, 3), "dice": dice,
                 "mean": float(np.mean(got)) if got else None}
            arm["checkpoints"].append(c)
            arm["patches_per_s"] = trainer.steps * b / train_s if train_s > 0 else None
            note("checkpoint", batch=b, **c)
            stopped = trainer.steps < m  # the arm's seconds ran out before this mark
            arm["stopped_early"] = stopped
            write_results()
            if stopped:
                note("warning", message=f"batch {b}: stopped at {trainer.steps} of {steps} "
                                        f"steps ({cap:.0f} s cap)")
                break
        del trainer
        free_device_memory(args.device)
    write_results()
    note("done", wall_s=round(clock.elapsed(), 1))
    clock.log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
