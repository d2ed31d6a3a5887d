"""Speed and memory of SOARS segmentation on the CPU, and stratified vs one network.

What is measured (each part in a fresh subprocess, so that its peak memory,
``ru_maxrss``, is its own)
----------------------------------------------------------------------------
1. ``phantom``: time to generate one 48 x 64 x 64 phantom case (42 OARs).
2. ``unet128``: one forward pass (no gradients, float32) on a 1 x 128^3
   volume, for the searched architecture and for a plain 3-D UNet (every
   block 3x3x3) of the same widths (default SOARS size: 32, 64, 128, 256,
   320). The searched operations come from ``--arch`` (a JSON architecture,
   e.g. a run's ``architecture.json``) or, by default, from a short search
   on the phantom (anchor branch, small networks) whose derived operations
   are then used at full width.
3. ``full``: the whole 42-OAR stratified inference (anchor, mid-level,
   detection, 14 VOI segmentations; ``segment_volume``, no DICOM I/O) on a
   512 x 512 x 200 CT (0.98 x 0.98 x 2.5 mm; the phantom's anatomy drawn on
   that grid plus shoulders, so the body crop is realistic) with
   random-weight branches of the default size and the searched operations;
   every S&H organ is forced through its VOI segmentation. Target: < 3 min,
   < 6 GB.
4. ``stratified``: on the phantom, the stratified pipeline (trained anchor ->
   mid -> S&H detection + VOI segmentation) against one network trained for
   all 42 OARs at once (43 classes, same budget of optimiser steps); Dice of
   the 14 small & hard organs on held-out phantom cases.

Run (all parts, about 15-25 min on 2 cores)::

    .venv/bin/python benchmarks/bench_segmentation.py
    .venv/bin/python benchmarks/bench_segmentation.py --parts full --spacing 2,1,1 --patch 64,128,128

The report is printed and written to
``benchmarks/results/segmentation_benchmark.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from soars_dose.machine import machine

ROOT = Path(__file__).resolve().parents[1]

#: The default architecture size: that of the packaged model (TrainConfig's defaults).
DEFAULT_WIDTHS = (16, 32, 64, 80, 96)


# =========================================================================== workers
def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def work_phantom(args) -> dict:
    import numpy as np

    from soars_dose.synthetic import oars42 as phantom42

    phantom42.make_case(0)
    times = []
    for s in range(10):
        t = time.perf_counter()
        phantom42.make_case(s)
        times.append(time.perf_counter() - t)
    return {"mean_s": float(np.mean(times)), "max_s": float(np.max(times))}


def work_unet128(args) -> dict:
    import torch

    from soars_dose.segmentation import branches as B
    from soars_dose.segmentation import nas

    arch = json.loads(args.arch_json)
    torch.manual_seed(0)
    net = B.fast_norm(nas.build_network(arch)).eval()
    x = torch.randn(1, arch["in_channels"], 128, 128, 128)
    times = []
    with torch.no_grad():
        for _ in range(args.repeat):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    params = sum(p.numel() for p in net.parameters())
    return {"best_s": min(times), "all_s": times, "params": params, "peak_mb": _peak_mb()}


def _ct_512(spacing_z=2.5, pixel=0.977):
    """A 512 x 512 x 200 CT: the phantom's anatomy on that grid, plus shoulders below the neck."""
    import numpy as np

    from soars_dose.synthetic import oars42 as phantom42

    case = phantom42.make_case(0, shape=(200, 512, 512), spacing=(spacing_z, pixel, pixel),
                               partial=False)
    hu = case.hu
    g = case.grid
    z = g.origin[2] + g.spacing[0] * np.arange(g.shape[0])
    y = g.origin[1] + g.spacing[1] * np.arange(g.shape[1])
    x = g.origin[0] + g.spacing[2] * np.arange(g.shape[2])
    shoulder = ((x[None, :] / 200.0) ** 2 + ((y[:, None] - 10.0) / 100.0) ** 2) <= 1.0
    rng = np.random.default_rng(0)
    for k in np.flatnonzero(z < -120.0):
        sl = hu[k]
        add = shoulder & (sl < -500)
        sl[add] = 40.0 + rng.normal(0, 8.0, int(add.sum()))
    return hu, g


def work_full(args) -> dict:
    import numpy as np
    import torch

    from soars_dose import oars as catalogue
    from soars_dose.segmentation import branches as B
    from soars_dose.segmentation import inference, nas, sliding_window
    from soars_dose.segmentation.bundle import BranchModel, SoarsModels
    from soars_dose.segmentation.modelfile import ModelFile
    from soars_dose.segmentation.preprocess import Preprocessing

    t0 = time.perf_counter()
    hu, grid = _ct_512()
    t_ct = time.perf_counter() - t0
    ops = json.loads(args.arch_json)["ops"]
    spacing = tuple(float(v) for v in args.spacing.split(","))
    pre = Preprocessing(target_spacing_mm=spacing)
    patch = tuple(int(v) for v in args.patch.split(","))
    branches = {}
    for i, role in enumerate(B.ROLES):
        names = B.branch_oars(role)
        arch = {"in_channels": B.in_channels(role), "out_channels": len(names) + 1,
                "widths": list(DEFAULT_WIDTHS), "ops": ops}
        torch.manual_seed(i)
        net = B.fast_norm(nas.build_network(arch)).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        meta = {"branch": role, "patch_size": list(patch),
                "anchor_oars": catalogue.names("anchor") if B.needs_anchor(role) else [],
                "voi_factor": 3.0, "sh_min_patch": [16, 24, 24], "detect_threshold": 0.3}
        mf = ModelFile(architecture=arch, state_dict={}, oar_names=names, preprocessing=pre,
                       provenance={"soars": meta})
        branches[role] = BranchModel(role, mf, net, meta)
    models = SoarsModels(branches, pre, ["random weights"])
    t = time.perf_counter()
    res = inference.segment_volume(hu, grid, models, progress=False, tta=args.tta,
                                   detect_threshold=-np.inf)
    t_inf = time.perf_counter() - t
    # expand every mask once, as the RTSTRUCT writer does (one at a time)
    t = time.perf_counter()
    n_vox = {n: int(res.masks[n].sum()) for n in res.masks}
    t_masks = time.perf_counter() - t
    windows = sliding_window.n_windows(res.network_grid.shape, patch)
    return {"ct_shape": list(hu.shape), "network_grid": list(res.network_grid.shape),
            "windows_per_branch": windows,
            "spacing": list(spacing), "patch": list(patch), "ops": ops, "tta": args.tta,
            "make_ct_s": t_ct, "inference_s": t_inf, "timings_s": res.timings_s,
            "expand_masks_s": t_masks, "n_oars": len(n_vox), "peak_mb": _peak_mb()}


def work_stratified(args) -> dict:
    import numpy as np

    from soars_dose.segmentation import (
        bundle,
        catalogue,
        inference,
        phantom42,
        training,
    )
    from soars_dose.segmentation.training import TrainConfig

    tmp = Path(tempfile.mkdtemp(prefix="soars_bench_"))
    ds = phantom42.write_dataset(tmp / "ds", 12, seed=11)
    steps = args.steps
    it = 12
    ep = max(1, steps // it)
    common = dict(ops=("p3d_3",) * 9, epochs=ep, iterations_per_epoch=it, validate_every=1000)
    t = {}
    t0 = time.perf_counter()
    anchor = training.train(ds, tmp / "a", TrainConfig.tiny("anchor", **common))
    t["anchor"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    det = training.train(ds, tmp / "d", TrainConfig.tiny(
        "sh_detect", anchor_model=str(anchor.model_path), **common))
    t["sh_detect"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    seg = training.train(ds, tmp / "s", TrainConfig.tiny("sh_seg", **common))
    t["sh_seg"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = _train_one_network(ds, tmp / "one", 3 * ep * it)
    t["one_network"] = time.perf_counter() - t0
    models = bundle.load_models([anchor.model_path, det.model_path, seg.model_path])
    sh = catalogue.names("small_hard")
    d_strat = {n: [] for n in sh}
    d_one = {n: [] for n in sh}
    for seed in (9001, 9002, 9003):
        case = phantom42.make_case(seed, partial=False)
        res = inference.segment_volume(case.hu, case.grid, models, sh, progress=False,
                                       detect_threshold=-np.inf)
        lab = one(case)
        for n in sh:
            truth = case.mask(n)
            d_strat[n].append(_dice(res.masks[n], truth))
            d_one[n].append(_dice(lab == catalogue.names().index(n) + 1, truth))
    return {"steps_per_branch": ep * it, "seconds": t,
            "dice_stratified": {n: float(np.mean(v)) for n, v in d_strat.items()},
            "dice_one_network": {n: float(np.mean(v)) for n, v in d_one.items()}}


def _dice(a, b) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _train_one_network(ds, run_dir, steps):
    """One UNet for all 42 OARs (43 classes): the ablation baseline, same recipe and steps."""
    import numpy as np
    import torch

    from soars_dose import oars as catalogue
    from soars_dose.segmentation import sliding_window, training
    from soars_dose.segmentation.dataset import load_dataset
    from soars_dose.segmentation.preprocess import (
        Preprocessing,
        prepare_ct,
        prepare_labels,
    )

    _, cases = load_dataset(ds)
    pre = Preprocessing(target_spacing_mm=(4.0, 3.0, 3.0), window_hu=(-200.0, 500.0))
    names = catalogue.names()
    samples = []
    for c in cases:
        prep = prepare_ct(c.hu, c.grid, pre)
        lab = np.zeros(prep.grid.shape, np.uint8)
        for b in catalogue.CATEGORIES:  # one exclusive map: later (smaller) branches win
            bl = prepare_labels(c.labels[b], prep)
            off = names.index(catalogue.names(b)[0])
            lab[bl > 0] = bl[bl > 0] + off
        ann = np.concatenate([[True], c.annotated])
        samples.append(training.Sample(c.case_id, prep.image, lab, ann, None,
                                       np.full((42, 3), np.nan), prep.grid.spacing, 0.0))
    cfg = training.TrainConfig.tiny("anchor", widths=(16, 32, 32, 32, 32), ops=("p3d_3",) * 9)
    task = training.Task("anchor", cfg, None)
    task.names, task.perm_out = names, catalogue.lr_permutation(names)
    net = training.build_network(training.fixed_architecture(cfg, 1, 43), 1)
    so = training.Stage("train", net, cfg, 1)
    rng = np.random.default_rng(0)
    for it in range(steps):
        frac = it / max(steps - 1, 1)
        task.balance = 1.0 - frac
        for g in so.opt_w.param_groups:
            g["lr"] = 0.02 * (1 - it / steps) ** 0.9
        training.step(so, so.opt_w, task, samples, [(it % len(samples), 0)],
                      cfg.schedule.patch_size, rng, cfg, clip=12.0, step=True, world=1)
    net.eval()

    def predict(case):
        prep = prepare_ct(case.hu, case.grid, pre)
        with torch.no_grad():
            p = sliding_window.sliding_window(net, [(prep.image, 0.0)], cfg.schedule.patch_size, 43)
        from soars_dose.segmentation.preprocess import restore_probabilities

        return restore_probabilities(p.numpy(), prep, as_labels=True)

    return predict


WORKERS = {"phantom": work_phantom, "unet128": work_unet128, "full": work_full,
           "stratified": work_stratified}


# =========================================================================== driver
def _run_worker(part: str, args, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", part] + extra
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr[-3000:], "wall_s": time.perf_counter() - t}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


def _searched_arch(args) -> dict:
    """Operations from ``--arch``, or from a short search on the phantom."""
    if args.arch:
        arch = json.loads(Path(args.arch).read_text())
        return {"ops": arch["ops"], "source": str(args.arch)}
    from soars_dose.segmentation import training
    from soars_dose.segmentation.dataset import DatasetCase
    from soars_dose.segmentation.preprocess import Preprocessing
    from soars_dose.segmentation.training import TrainConfig
    from soars_dose.synthetic import oars42 as phantom42

    cases = [DatasetCase.from_phantom(phantom42.make_case(s)) for s in range(6)]
    pre = Preprocessing(target_spacing_mm=(4.0, 3.0, 3.0), window_hu=(-200.0, 500.0))
    s = training.prepare_samples(cases, "anchor", pre)
    cfg = TrainConfig.tiny("anchor", widths=(8, 16, 32, 32, 32), search=True, warmup_epochs=2,
                           search_epochs=3, epochs=1, iterations_per_epoch=8, batch_size=1,
                           search_patch_size=(32, 48, 48), validate_search=False,
                           window_hu=(-200.0, 500.0))
    tmp = Path(tempfile.mkdtemp(prefix="soars_search_"))
    t = time.perf_counter()
    res = training.train("unused", tmp / "run", cfg, samples=(s[:4], s[4:]))
    return {"ops": res.architecture["ops"], "source": "short search on the phantom (anchor, "
            f"2 warm-up + 3 search epochs of 8 steps, {time.perf_counter() - t:.0f} s)"}


def _arch(ops, in_ch=1, out_ch=10) -> dict:
    return {"in_channels": in_ch, "out_channels": out_ch, "widths": list(DEFAULT_WIDTHS),
            "ops": list(ops)}


def _machine() -> str:
    import torch

    m = machine()
    return (f"{platform.system()} {platform.machine()}, {m['cpu']}, {m['nproc']} cores, "
            f"{m['ram']}; Python {m['python']}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="phantom,unet128,full,stratified")
    ap.add_argument("--arch", help="architecture JSON whose ops are 'the searched architecture'")
    ap.add_argument("--spacing", default="2.5,3.906,3.906",
                    help="network grid spacing (mm, slice,row,column) for the full inference")
    ap.add_argument("--patch", default="48,96,96", help="sliding-window patch of 'full'")
    ap.add_argument("--tta", action="store_true", help="mirror TTA in 'full'")
    ap.add_argument("--steps", type=int, default=144, help="optimiser steps per branch in "
                    "'stratified'")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--arch-json", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"
                                         / "segmentation_benchmark.md"))
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    command = shlex.join([".venv/bin/python", "benchmarks/bench_segmentation.py"] + sys.argv[1:])
    lines = ["# SOARS segmentation benchmark", "",
             f"Command: `{command}`  ", f"Machine: {_machine()}  ",
             f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}", ""]
    print("\n".join(lines), flush=True)
    searched = None
    if {"unet128", "full"} & set(parts):
        searched = _searched_arch(args)
        msg = f"Searched architecture ops: {searched['ops']} ({searched['source']})\n"
        print(msg, flush=True)
        lines += [msg]
    common = ["--repeat", str(args.repeat), "--spacing", args.spacing, "--patch", args.patch,
              "--steps", str(args.steps)] + (["--tta"] if args.tta else [])
    for part in parts:
        block: list[str] = []
        if part == "phantom":
            r = _run_worker("phantom", args, common)
            block = ["## Phantom generation", "",
                     f"48 x 64 x 64 case, 42 OARs: mean {r.get('mean_s', float('nan')):.3f} s, "
                     f"max {r.get('max_s', float('nan')):.3f} s (10 cases; target < 0.5 s)", ""]
        elif part == "unet128":
            block = ["## One forward pass on 1 x 128^3 (widths "
                     f"{'-'.join(map(str, DEFAULT_WIDTHS))}, float32, no gradients)", "",
                     "| network | ops | parameters | best time (s) | peak RSS (MB) |",
                     "|---|---|---|---|---|"]
            wall = 0.0
            for label, ops in (("searched", searched["ops"]), ("plain 3-D UNet", ["3d_3"] * 9)):
                r = _run_worker("unet128", args, common + ["--arch-json",
                                                           json.dumps(_arch(ops))])
                wall += r.get("wall_s", 0.0)
                if "error" in r:
                    block.append(f"| {label} | {' '.join(ops)} | error | {r['error'][-200:]} | |")
                    continue
                block.append(f"| {label} | {' '.join(ops)} | {r['params'] / 1e6:.2f} M | "
                             f"{r['best_s']:.2f} | {r['peak_mb']:.0f} |")
            block.append("")
            r = {"wall_s": wall}
        elif part == "full":
            r = _run_worker("full", args, common + ["--arch-json",
                                                    json.dumps(_arch(searched["ops"]))])
            if "error" in r:
                block = ["## Full 42-OAR inference", "", "error:", "```", r["error"], "```", ""]
            else:
                tm = r["timings_s"]
                block = ["## Full 42-OAR inference, 512 x 512 x 200 CT, random weights, default "
                         "size", "",
                         f"CT {r['ct_shape']} at 2.5 x 0.98 x 0.98 mm -> network grid "
                         f"{r['network_grid']} at {r['spacing']} mm (body crop), patch "
                         f"{r['patch']} ({r['windows_per_branch']} windows per branch), ops "
                         f"{' '.join(r['ops'])}, TTA {r['tta']}", "",
                         "| stage | seconds |", "|---|---|"]
                for k in ("preprocess", "anchor", "mid_level", "sh_detect", "sh_seg", "total"):
                    if k in tm:
                        block.append(f"| {k} | {tm[k]:.1f} |")
                block += [f"| expand 42 masks on the CT grid | {r['expand_masks_s']:.1f} |", "",
                          f"Inference {r['inference_s']:.1f} s (target < 180 s); peak RSS of "
                          f"the process {r['peak_mb'] / 1024:.2f} GB (target < 6 GB; includes "
                          f"generating the CT, {r['make_ct_s']:.0f} s).", ""]
        elif part == "stratified":
            r = _run_worker("stratified", args, common)
            if "error" in r:
                block = ["## Stratified vs one network", "", "error:", "```", r["error"], "```"]
            else:
                block = ["## Stratified pipeline vs one network for all 42 OARs (phantom)", "",
                         f"{r['steps_per_branch']} optimiser steps per branch (phantom preset: "
                         "SGD for anchor, Adam for detection and S&H segmentation; batch 1, "
                         "48x64x64, except the S&H segmentation network: 2 VOI crops per "
                         "step; p3d_3 blocks); the single 43-class network (SGD, 16 "
                         "channels at full resolution) gets the three branches' steps "
                         f"together; training seconds: "
                         f"{json.dumps({k: round(v) for k, v in r['seconds'].items()})}; Dice "
                         "of the small & hard OARs, mean of 3 held-out phantom cases:", "",
                         "| OAR | stratified | one network |", "|---|---|---|"]
                for n, v in r["dice_stratified"].items():
                    block.append(f"| {n} | {v:.3f} | {r['dice_one_network'][n]:.3f} |")
                ms = sum(r["dice_stratified"].values()) / len(r["dice_stratified"])
                mo = sum(r["dice_one_network"].values()) / len(r["dice_one_network"])
                block += [f"| **mean** | **{ms:.3f}** | **{mo:.3f}** |", ""]
        block.append(f"(part `{part}`: {r.get('wall_s', 0):.0f} s wall)\n")
        print("\n".join(block), flush=True)
        lines += block
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if args.append and out.exists():
        text = out.read_text() + "\n---\n\n" + text
    out.write_text(text)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
