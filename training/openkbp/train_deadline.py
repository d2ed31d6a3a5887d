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
stdout); ``OUT/run_record.json`` holds the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Patches of the shipped model (run 3): anchor 86 epochs x 40 iterations x 4, mid-level
#: 132 x 40 x 4 (training/openkbp/README.md), used when the start bundle records none.
RUN3_PATCHES = {"anchor": 86 * 40 * 4, "mid_level": 132 * 40 * 4}
REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    import torch
    import train_default as T

    from soars_dose.segmentation.bundle import load_models, save_bundle
    from soars_dose.segmentation.training import DeadlineConfig, prepare_samples
    from soars_dose.segmentation.training.accumulate import (
        RunRecord,
        append_run,
        mean_dice,
        save_branch,
        should_ship,
        start_network,
    )
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
    ap.add_argument("--max-patients", type=int, default=None, help="dry runs: first N of each")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = LineLog(out / "train_log.jsonl", echo=lambda s: print(s, flush=True))

    def note(event, **kw):
        log.write({"event": event, "t_s": round(time.perf_counter() - t0, 2), **kw})

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    dev_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    note("start", command=" ".join([sys.executable] + sys.argv), device=dev_name,
         torch=torch.__version__)
    for f in (args.train, args.val, args.start):
        if not Path(f).is_file():
            note("error", message=f"{f} is missing")
            return 2
    cases = T.load_cases(args.train, args.max_patients)
    val = T.load_cases(args.val, args.max_patients)
    start = load_models(args.start)
    pre = start.preprocessing
    anchor_names = start["anchor"].oar_names
    maps_anchor = start["anchor"]
    maps_anchor.net.to(args.device)
    tr_a = prepare_samples(cases, "anchor", pre)
    tr_m = prepare_samples(cases, "mid_level", pre, maps_anchor)
    maps_anchor.net.cpu()
    note("data_ready", patients=len(cases), validation=len(val))
    end_train = args.deadline_s - args.reserve_s
    aug = {"shift_hu": args.shift_hu, "shift_probability": args.shift_probability,
           "rotation_probability": 0.2}
    results, files = {}, []
    for role, samples, share in (("anchor", tr_a, args.anchor_share),
                                 ("mid_level", tr_m, 1.0)):
        net, br = start_network(args.start, role)
        cfg = DeadlineConfig(batch_size=args.batch, patch_size=tuple(args.patch),
                             base_lr=args.base_lr, compile=args.compile, augmentation=aug)
        left = end_train - (time.perf_counter() - t0)
        budget = left * share
        note("train_start", role=role, budget_s=round(budget, 1), peak_lr=cfg.peak_lr())
        if budget < 1:
            note("error", message=f"no time left to train {role}")
            return 3
        trainer = FastTrainer(net, samples, cfg, role=role, names=br.oar_names,
                              preprocessing=pre, device=args.device, log=log,
                              anchor_names=anchor_names if role == "mid_level" else None)
        res = trainer.run(budget)
        before = br.model.provenance.get("training", {}).get("patches_cumulative",
                                                             RUN3_PATCHES[role])
        res["patches_cumulative"] = int(before) + int(res["patches"])
        results[role] = res
        path = save_branch(Path("/tmp") / f"deadline_{role}.soars.pt" if args.device != "cpu"
                           else out / f"{role}.soars.pt", trainer.trained_network(), role=role,
                           names=br.oar_names, preprocessing=pre,
                           patch_size=br.patch_size, anchor_names=br.meta.get("anchor_oars"),
                           training={"deadline_config": cfg.to_dict(), **res,
                                     "started_from": str(args.start)})
        files.append(path)
    candidate = save_bundle(out / "candidate_int8.pt", files, weights="int8", overwrite=True)
    note("packed", file=str(candidate))
    old = T.evaluate("plain", [args.start], val, args.device)
    note("validation_start_model", dice=old["dice"], mean=old["mean_dice"])
    new = T.evaluate("plain", [str(candidate)], val, args.device)
    note("validation_candidate", dice=new["dice"], mean=new["mean_dice"])
    ship = should_ship(new["dice"], old["dice"])
    if ship:
        shutil.copyfile(candidate, out / "soars_default.pt")
    train_s = sum(r["seconds"] for r in results.values())
    patches = sum(r["patches"] for r in results.values())
    cumulative = sum(r["patches_cumulative"] for r in results.values())
    record = RunRecord(date.today().isoformat(), dev_name, train_s, patches, cumulative,
                       new["dice"], shipped=ship,
                       note=f"deadline run from the shipped model, batch {args.batch}; start "
                            f"model re-measured: mean {mean_dice(old['dice']):.3f}")
    if Path(args.runs_md).is_file():
        shutil.copyfile(args.runs_md, out / "RUNS.md")
        append_run(out / "RUNS.md", record, list(new["dice"]))
    (out / "run_record.json").write_text(json.dumps(
        {"record": record.__dict__, "branches": results, "start_validation": old,
         "candidate_validation": new, "wall_s": time.perf_counter() - t0}, indent=1))
    note("done", shipped=ship, wall_s=round(time.perf_counter() - t0, 1))
    log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
