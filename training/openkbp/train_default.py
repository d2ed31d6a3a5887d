"""Train the default SOARS model on OpenKBP, with its ablations, under a wall-clock budget.

The shipped model (``soars_dose/segmentation/models/soars_default.pt``) is
the ``plain`` variant of this script, trained on the 169 OpenKBP training
patients and selected on the 33 validation patients (the runs and their
settings: ``training/openkbp/README.md``). Run::

    python training/openkbp/export_data.py export-training ../shared/data/openkbp/train train.npz
    python training/openkbp/export_data.py export-training ../shared/data/openkbp/validation val.npz
    python training/openkbp/train_default.py --train train.npz --val val.npz \\
        --out RUN --device cuda --budget-s 420

Variants (each its own process; on one GPU they run side by side):

``searched``
    The SOARS method: anchor branch (Brainstem, SpinalCord, Bone_Mandible)
    with architecture search (fixed-alpha warm-up, then alternating alpha
    updates on the held-out third and weight updates on the rest, RAdam),
    the derived network trained from scratch (SGD, Nesterov, polynomial
    learning rate) on all training patients; then the mid-level branch
    (Parotid_L/R, Esophagus, Larynx_GSL) on CT + the anchor probabilities,
    searched and trained the same way.
``plain``
    The same two branches with plain 3-D 3x3x3 convolutions everywhere, no
    search (the "searched vs plain 3-D" ablation).
``one``
    One plain 3-D network for all seven OARs (the "stratified vs one
    network" ablation), given the two branches' budget together.

Each variant gets ``--budget-s`` seconds of training. Step counts are set
from a short timing run of each stage on the machine itself (the
per-iteration time is measured, then the epochs that fit the budget are
chosen), so the same command fits a CPU or a GPU; the counts used are in
``results.json``. Partial labels: an OAR a patient lacks is unannotated
and does not enter the loss.

Writes ``RUN/<variant>/<branch>/`` (config.json, log.jsonl, model.soars.pt,
architecture.json, search.json) and ``RUN/results.json`` (settings, step
counts, seconds, validation Dice per OAR and inference seconds per patient
for every variant).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from soars_dose.datasets.openkbp import TRAINING_BRANCHES, dataset_cases

ANCHOR_OARS = list(TRAINING_BRANCHES["anchor"])
MID_OARS = list(TRAINING_BRANCHES["mid"])
ITERS = 40  # iterations per epoch


def load_cases(arrays_file, limit=None):
    """DatasetCases straight from an OpenKBP training-arrays file (no data set folder)."""
    return dataset_cases(arrays_file, limit)


def base_config(args, branch, **kw):
    from soars_dose.segmentation.training import TrainConfig

    c = dict(branch=branch, widths=tuple(args.widths), patch_size=tuple(args.patch),
             search_patch_size=tuple(args.patch), batch_size=args.batch,
             iterations_per_epoch=ITERS, lr=0.01, momentum=0.99, window_hu=(-500.0, 1000.0),
             validate_every=10 ** 6, validate_search=False, final_on_all=True,
             rotation_probability=0.2, shift_hu=args.shift_hu,
             shift_probability=args.shift_probability, seed=args.seed,
             batches_on_device=not args.host_batches)
    c.update(kw)
    return TrainConfig.from_dict(c)


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def calibrate(args, cfg, samples, names, run_dir, device):
    """Seconds per iteration of each stage, measured on the machine.

    The second epoch of each stage is timed (the first carries start-up
    costs, the last of the run a validation pass).
    """
    from soars_dose.segmentation.training import train

    sch = cfg.schedule
    stages = {"warmup": 2, "search": 2} if sch.search else {}
    c = cfg.with_(warmup_epochs=2 if sch.search else sch.warmup_epochs,
                  search_epochs=2 if sch.search else sch.search_epochs, epochs=3,
                iterations_per_epoch=args.calibration_iters, final_on_all=False)
    tr, ho = samples
    res = train("unused", run_dir, c, samples=(tr[:12], ho[:6]), oar_names=names,
                device=device, overwrite=True)
    per = {}
    for st in list(stages) + ["train"]:
        t = [e["time_s"] for e in res.log if e["stage"] == st]
        per[st] = t[1] / args.calibration_iters
    return per


def plan(cfg, per_iter, budget_s):
    """Epochs per stage that fit ``budget_s``: search 35 % (warm-up 1/3 of it), training the rest."""
    if cfg.schedule.search:
        w = max(1, int(0.35 * budget_s / 3 / (per_iter["warmup"] * ITERS)))
        s = max(1, int(0.35 * budget_s * 2 / 3 / (per_iter["search"] * ITERS)))
        e = max(1, int(0.65 * budget_s / (per_iter["train"] * ITERS)))
        return cfg.with_(warmup_epochs=w, search_epochs=s, epochs=e)
    return cfg.with_(epochs=max(1, int(budget_s / (per_iter["train"] * ITERS))))


def train_branch(args, variant, branch, cases, pre, names, budget_s, device, anchor_model=None,
                 label_fn=None):
    """Prepare samples, time the stages, train; returns (model path, info)."""
    from soars_dose.segmentation import branches as B
    from soars_dose.segmentation.training import prepare_samples, split_cases, train

    run = Path(args.out) / variant / branch
    search = variant == "searched" and not args.init
    kw = dict(search=search, warmup_epochs=1, search_epochs=1)
    if not search:
        kw["ops"] = ("3d_3",) * 9
    if args.init:
        kw["init_model"] = str(Path(args.init) / f"{variant}_{branch}.soars.pt")
        kw["lr"] = args.init_lr
    if anchor_model:
        kw["anchor_model"] = str(anchor_model)
    cfg = base_config(args, "anchor" if branch == "one" else branch, **kw)
    t0 = time.perf_counter()
    anchor = None
    if anchor_model:
        from soars_dose.segmentation.bundle import load_models

        anchor = load_models(anchor_model)[B.ANCHOR]
        anchor.net.to(device)
    role = "anchor" if branch == "one" else branch
    tr_idx, ho_idx = split_cases([c.case_id for c in cases], cfg.holdout_fraction, cfg.seed)
    if label_fn is None:
        tr = prepare_samples([cases[i] for i in tr_idx], role, pre, anchor)
        ho = prepare_samples([cases[i] for i in ho_idx], role, pre, anchor)
    else:
        tr, ho = label_fn([cases[i] for i in tr_idx]), label_fn([cases[i] for i in ho_idx])
    prep_s = time.perf_counter() - t0
    per = calibrate(args, cfg, (tr, ho), names, run.with_name(branch + "_calibration"), device)
    cfg = plan(cfg, per, budget_s)
    res, secs = timed(train, "openkbp-train", run, cfg, samples=(tr, ho), oar_names=names,
                      device=device, overwrite=True, preprocessing=pre)
    info = {"prepare_s": prep_s, "seconds_per_iteration": per, "train_s": secs,
            "epochs": {"warmup": cfg.schedule.warmup_epochs if search else 0,
                       "search": cfg.schedule.search_epochs if search else 0,
                       "train": cfg.schedule.epochs},
            "iterations_per_epoch": ITERS, "batch_size": cfg.schedule.batch_size,
            "architecture_ops": res.architecture["ops"], "config": cfg.to_dict(),
            "n_train": len(tr), "n_held_out": len(ho)}
    return res.model_path, info


def one_network_samples(pre):
    """Sample builder for the one-network baseline: one exclusive 7-OAR label map."""
    from soars_dose.segmentation.preprocess import prepare_ct, prepare_labels
    from soars_dose.segmentation.training import Sample, organ_centres

    def build(cases):
        out = []
        for c in cases:
            prep = prepare_ct(c.hu, c.grid, pre)
            lab = prepare_labels(c.labels["anchor"], prep).astype(np.uint8)
            mid = prepare_labels(c.labels["mid_level"], prep).astype(np.uint8)
            lab[mid > 0] = mid[mid > 0] + len(ANCHOR_OARS)
            ann = np.concatenate([[True], c.annotated])
            out.append(Sample(c.case_id, prep.image, lab, ann, None,
                              organ_centres(lab, 7, ann), prep.grid.spacing,
                              float((-1024.0 - pre.window_hu[0])
                                    / (pre.window_hu[1] - pre.window_hu[0]))))
        return out
    return build


def dice(a, b):
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def evaluate(variant, paths, val_cases, device):
    """Validation Dice per OAR (annotated patients only) and inference seconds per patient."""
    import torch

    from soars_dose.segmentation import inference, sliding_window
    from soars_dose.segmentation.bundle import load_models
    from soars_dose.segmentation.modelfile import load_model
    from soars_dose.segmentation.preprocess import prepare_ct, restore_probabilities

    names = ANCHOR_OARS + MID_OARS
    per = {n: [] for n in names}
    secs = []
    if variant == "one":
        mf = load_model(paths[0])
        net = mf.build().to(device).eval()
    else:
        models = load_models(paths).to(device)
    for c in val_cases:
        t = time.perf_counter()
        if variant == "one":
            prep = prepare_ct(c.hu, c.grid, mf.preprocessing)
            fill = float((-1024.0 - mf.preprocessing.window_hu[0])
                         / (mf.preprocessing.window_hu[1] - mf.preprocessing.window_hu[0]))
            with torch.no_grad():
                p = sliding_window.sliding_window(net, [(prep.image, fill)],
                                                  tuple(mf.provenance["soars"]["patch_size"]), 8)
            lab = restore_probabilities(p.numpy(), prep, as_labels=True)
            masks = {n: lab == i + 1 for i, n in enumerate(names)}
        else:
            res = inference.segment_volume(c.hu, c.grid, models, progress=False)
            masks = {n: res.masks[n] for n in names}
        secs.append(time.perf_counter() - t)
        allv = c.all_names()
        for n in names:
            if not c.annotated[allv.index(n)]:
                continue
            cat = "anchor" if n in ANCHOR_OARS else "mid_level"
            lab_id = c.oar_names[cat].index(n) + 1
            per[n].append(dice(masks[n], c.labels[cat] == lab_id))
    return {"dice": {n: (float(np.mean(v)) if v else None) for n, v in per.items()},
            "n": {n: len(v) for n, v in per.items()},
            "mean_dice": float(np.mean([np.mean(v) for v in per.values() if v])),
            "inference_s_per_patient": float(np.median(secs))}


def run_variant(args, variant, device, queue):
    import torch

    torch.set_num_threads(max(1, args.threads))
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    from soars_dose.segmentation.preprocess import Preprocessing

    t0 = time.perf_counter()
    out = {"variant": variant}
    try:
        cases = load_cases(args.train, args.max_patients)
        spacing = tuple(float(np.median([c.grid.spacing[a] for c in cases])) for a in range(3))
        pre = Preprocessing(target_spacing_mm=spacing, window_hu=(-500.0, 1000.0))
        out["target_spacing_mm"] = spacing
        if variant == "one":
            p, info = train_branch(args, variant, "one", cases, pre, ANCHOR_OARS + MID_OARS,
                                   args.budget_s, device, label_fn=one_network_samples(pre))
            out["one"] = info
            paths = [p]
        else:
            pa, ia = train_branch(args, variant, "anchor", cases, pre, ANCHOR_OARS,
                                  args.budget_s * args.anchor_share, device)
            pm, im = train_branch(args, variant, "mid_level", cases, pre, MID_OARS,
                                  args.budget_s * (1 - args.anchor_share), device,
                                  anchor_model=pa)
            out["anchor"], out["mid_level"] = ia, im
            paths = [pa, pm]
        out["models"] = [str(p) for p in paths]
        val = load_cases(args.val, args.max_patients)
        out["validation"] = evaluate(variant, paths, val, device)
    except Exception:  # noqa: BLE001 - one variant's failure must not lose the others
        out["error"] = traceback.format_exc()
    out["seconds"] = time.perf_counter() - t0
    queue.put(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, help="training-arrays file of the train split")
    ap.add_argument("--val", required=True, help="training-arrays file of the validation split")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="training seconds per variant (both branches together)")
    ap.add_argument("--anchor-share", type=float, default=0.4)
    ap.add_argument("--variants", default="searched,plain,one")
    ap.add_argument("--widths", type=int, nargs=5, default=[16, 32, 64, 80, 96])
    ap.add_argument("--patch", type=int, nargs=3, default=[48, 96, 96])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--shift-hu", type=float, default=0.0,
                    help="augmentation: CT-number offsets up to +- this many HU")
    ap.add_argument("--shift-probability", type=float, default=0.0)
    ap.add_argument("--host-batches", action="store_true",
                    help="crop and augment on the CPU (TrainConfig.batches_on_device=False)")
    ap.add_argument("--max-patients", type=int, default=None,
                    help="use only the first N patients of each split (dry runs)")
    ap.add_argument("--calibration-iters", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="folder of <variant>_<branch>.soars.pt files: continue training "
                                   "those networks (no search) with a fresh polynomial schedule")
    ap.add_argument("--init-lr", type=float, default=0.005)
    args = ap.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    variants = [v for v in args.variants.split(",") if v]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=run_variant, args=(args, v, args.device, q)) for v in variants]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    import torch

    summary = {"command": " ".join([sys.executable] + sys.argv), "args": vars(args),
               "machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "torch": torch.__version__, "cpus": os.cpu_count(),
                           "gpu": (torch.cuda.get_device_name(0)
                                   if torch.cuda.is_available() else None)},
               "wall_s": time.perf_counter() - t0,
               "variants": {r["variant"]: r for r in results}}
    (Path(args.out) / "results.json").write_text(json.dumps(summary, indent=1))
    for r in results:
        v = r.get("validation", {})
        print(r["variant"], "ERROR" if "error" in r else "",
              json.dumps({k: (round(x, 3) if x is not None else None)
                          for k, x in v.get("dice", {}).items()}),
              "mean", round(v.get("mean_dice", float("nan")), 3),
              f"{r['seconds']:.0f} s", flush=True)
        if "error" in r:
            print(r["error"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
