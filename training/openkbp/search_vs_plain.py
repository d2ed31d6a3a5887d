"""Searched against plain at an equal budget, with the throughput levers (issue 14, part 4).

    python training/openkbp/search_vs_plain.py --train .devdata/train.npz \\
        --val .devdata/validation.npz --out "$OUT" --device cuda --deadline-s 540

Both arms train the anchor and the mid-level branch *from scratch* on the
same prepared samples (mid-level inputs: the shipped model's anchor maps,
the same for both), with the same batch, patch, levers, learning-rate rule
and warm-up + cosine schedule (:class:`FastTrainer`), the shipped model's
widths, and **the same wall-clock seconds per branch**, set-up on the device
included:

``plain``
    every block 3-D 3x3x3, trained for the whole budget;
``searched``
    the method's search first (:class:`FastSearcher`: ``--search-share`` of
    the budget, a third of it the weight warm-up, two thirds alternating
    first-order DARTS on a 2:1 split of the training patients, at
    ``--search-batch``), then the derived architecture built from scratch
    and trained for the rest of the budget on all training patients.

The four (branch, arm) jobs run one after another, the GPU to each alone;
each job's seconds are its share of the training time fixed when training
starts (anchor ``--anchor-share`` of it, halved between the arms), shortened
only if earlier jobs ran over. Then each arm is packed as
an int8 bundle and measured on the validation split, with the shipped
model, by ``train_default.evaluate`` (the README's evaluation). The better
arm (higher mean Dice; a tie goes to plain, the cheaper network) is named in
``comparison.json`` and ``search_vs_plain.md``; it is shipped
(``OUT/soars_default.pt``) only if it also beats the shipped model's mean
Dice (``--min-gain``), which a from-scratch arm of one run may not. Both
arms are appended to a copy of RUNS.md (``OUT/RUNS.md``), each its own
lineage. Logs: ``OUT/train_log.jsonl`` (every line flushed), phase seconds
in ``run_record.json``.

Smoke test on the CPU (minutes; tiny sizes)::

    python training/openkbp/search_vs_plain.py --train .devdata/train.npz \\
        --val .devdata/validation.npz --out /tmp/sv --device cpu --max-patients 3 \\
        --max-val-patients 1 --patch 16 32 32 --batch 2 --search-batch 2 --max-steps 3 \\
        --deadline-s 900 --reserve-s 400
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

ARMS = ("plain", "searched")


def _job_budget(shares: list[float], total: float, left: float, k: int) -> float:
    """Seconds of job ``k``: its share of the ``total`` training seconds fixed at the start.

    Jobs that ran over (set-up on the device is inside a job's seconds) only
    shorten the later ones where ``left``, the seconds until the end of
    training, no longer holds their fixed shares: job ``k`` then gets its
    share of what is left. A job that ends early (``--max-steps``) gives
    the later ones nothing extra, so the arms of a branch stay equal.
    """
    rest = sum(shares[k:])
    fixed = total * shares[k]
    return min(fixed, left * shares[k] / rest) if rest > 0 else 0.0


def _seconds(arm: dict) -> float:
    """Training seconds of an arm: its search (if any) and its network's training, both branches."""
    return sum(b["seconds"] + b.get("search", {}).get("seconds", 0.0) for b in arm.values())


def _table(results: dict, vals: dict, oars: list[str]) -> str:
    """The Markdown comparison of the arms (and the shipped model's validation)."""
    head = ["arm", "training s (search + network)", "patches (network)",
            "search (warm-up + search iterations, batch)",
            "ops (enc0-4, dec3-0)"] + oars + ["mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, val in vals.items():
        r = results.get(arm)
        if r is None:
            cells = [arm, "-", "-", "-", "-"]
        else:
            s = [f"{b}: {r[b]['search']['warmup_steps']} + {r[b]['search']['search_steps']}, "
                 f"{r[b]['search']['batch_size']}" for b in ("anchor", "mid_level")
                 if r[b].get("search")]
            ops = [f"{b}: {' '.join(r[b]['ops'])}" for b in ("anchor", "mid_level")]
            cells = [arm, f"{_seconds(r):.0f}",
                     str(sum(r[b]['patches'] for b in r)), "; ".join(s) or "-",
                     "; ".join(ops)]
        d = val["dice"]
        cells += ["-" if d.get(k) is None else f"{d[k]:.3f}" for k in oars]
        cells.append(f"{val['mean_dice']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    t0 = time.perf_counter()  # start-up includes the imports
    from run_support import begin, common_parser, deadline_config, validate

    from soars_dose.outputs import write_text_file
    from soars_dose.segmentation import nas
    from soars_dose.segmentation.bundle import save_bundle
    from soars_dose.segmentation.device import free_device_memory
    from soars_dose.segmentation.training.accumulate import (
        RunRecord,
        append_run,
        mean_dice,
        save_branch,
        should_ship,
    )
    from soars_dose.segmentation.training.deadline import FastTrainer
    from soars_dose.segmentation.training.fast_search import FastSearcher, split_samples
    from soars_dose.segmentation.training.stage import build_network

    ap = common_parser(
        __doc__.split("\n")[0], deadline_s=540.0, reserve_s=150.0,
        reserve_help="seconds kept for packing and the three validation passes",
        base_lr=0.01, base_lr_help="SGD learning rate at batch 4 (scaled by sqrt(batch / 4)); "
                                   "run 3's, both arms from scratch")
    ap.add_argument("--search-share", type=float, default=0.35,
                    help="share of the searched arm's budget spent searching (a third of it "
                         "the weight warm-up)")
    ap.add_argument("--held-fraction", type=float, default=1 / 3,
                    help="training patients held out for the architecture steps")
    ap.add_argument("--search-batch", type=int, default=16,
                    help="batch of the search (a mixed block holds all six operations' "
                         "activations: on the CPU in float32, 2.8 GB for one 48x96x96 patch and "
                         "1.3 GB for each further one, against 0.84 and 0.70 GB for the plain "
                         "network; halved automatically on CUDA out-of-memory)")
    ap.add_argument("--search-lr", type=float, default=1e-3)
    ap.add_argument("--alpha-lr", type=float, default=3e-3)
    args = ap.parse_args(argv)
    clock, dev_name, inputs = begin(args, t0)
    out = clock.out
    note, phases = clock.note, clock.phases
    if inputs is None:
        return 2
    start, samples, val = inputs.start, inputs.samples, inputs.val
    pre = start.preprocessing
    anchor_names = start["anchor"].oar_names
    cfg = deadline_config(args)
    end_train = args.deadline_s - args.reserve_s
    jobs = [(role, arm) for role in ("anchor", "mid_level") for arm in ARMS]
    shares = [args.anchor_share / 2] * 2 + [(1 - args.anchor_share) / 2] * 2
    results: dict[str, dict] = {arm: {} for arm in ARMS}
    files: dict[str, list] = {arm: [] for arm in ARMS}
    tmp = Path(tempfile.mkdtemp(prefix="search_vs_plain_"))
    plain_archs = {role: nas.plain_3d(start[role].net).architecture()
                   for role in ("anchor", "mid_level")}
    total = end_train - clock.elapsed()  # fixed here: the jobs' shares are of this
    vals: dict[str, dict] = {}

    def save(**kw) -> None:
        """comparison.json as it stands (after every job and validation pass)."""
        write_text_file(out / "comparison.json", json.dumps(
            {**kw, "arms": results, "validation": vals, "phases": phases,
             "wall_s": clock.elapsed(), "device": dev_name}, indent=1))
    for k, (role, arm) in enumerate(jobs):
        br = start[role]
        kw = dict(role=role, names=br.oar_names, preprocessing=pre, device=args.device,
                  log=clock.log, anchor_names=anchor_names if role == "mid_level" else None)
        t_job = clock.elapsed()
        budget = _job_budget(shares, total, end_train - t_job, k)
        note("job_start", role=role, arm=arm, budget_s=round(budget, 1))
        if budget < 1:
            note("error", message=f"no time left for {role} {arm}")
            save(stage=f"stopped: no time left for {role} {arm}")
            return 3
        plain_arch = plain_archs[role]
        res: dict = {}
        if arm == "searched":
            arch = dict(plain_arch, ops=[nas.MIXED] * len(nas.BLOCK_NAMES))
            tr, held = split_samples(samples[role], args.held_fraction, args.seed)
            with clock.phase(f"search_{role}"):
                searcher = FastSearcher(build_network(arch, args.seed), tr, held,
                                        deadline_config(args, args.search_batch), search_lr=args.search_lr,
                                        alpha_lr=args.alpha_lr, **kw)
                s_budget = budget * args.search_share - (clock.elapsed() - t_job)
                sres = searcher.run(s_budget / 3, 2 * s_budget / 3, max_steps=args.max_steps)
                del searcher
            free_device_memory(args.device)
            res["search"] = {k2: v for k2, v in sres.items() if k2 != "architecture"}
            arch = sres["architecture"]
        else:
            arch = plain_arch
        with clock.phase(f"to_device_{role}_{arm}"):
            trainer = FastTrainer(build_network(arch, args.seed + 1), samples[role], cfg, **kw)
        left = budget - (clock.elapsed() - t_job)
        with clock.phase(f"train_{role}_{arm}"):
            tres = trainer.run(left, max_steps=args.max_steps)
        res.update(tres)
        res["ops"] = list(arch["ops"])
        res["job_seconds"] = round(clock.elapsed() - t_job, 3)
        res["budget_s"] = round(budget, 3)
        res["patches_cumulative"] = int(tres["patches"])
        results[arm][role] = res
        files[arm].append(save_branch(
            tmp / f"{arm}_{role}.soars.pt", trainer.trained_network(), role=role,
            names=br.oar_names, preprocessing=pre, patch_size=br.patch_size,
            anchor_names=br.meta.get("anchor_oars"),
            training={"deadline_config": cfg.to_dict(), "arm": arm, **res,
                      "started_from": "scratch"}))
        del trainer
        free_device_memory(args.device)
        save(stage=f"trained {role} {arm}")
    bundles = {}
    with clock.phase("pack"):
        for arm in ARMS:
            bundles[arm] = save_bundle(out / f"candidate_{arm}_int8.pt", files[arm],
                                       weights="int8", overwrite=True)
    for label, bundle in (("shipped", args.start), *((a, str(bundles[a])) for a in ARMS)):
        vals[label] = validate(clock, "start_model" if label == "shipped" else label, bundle,
                               val)
        save(stage=f"validated {label}")
    better = "searched" if should_ship(vals["searched"]["dice"], vals["plain"]["dice"]) \
        else "plain"
    ship = should_ship(vals[better]["dice"], vals["shipped"]["dice"], min_gain=args.min_gain)
    if ship:
        shutil.copyfile(bundles[better], out / "soars_default.pt")
    note("decision", better=better, shipped=ship,
         means={k: mean_dice(v["dice"]) for k, v in vals.items()})
    oars = list(vals["plain"]["dice"])
    md = (f"# Searched against plain at an equal budget ({date.today().isoformat()}, "
          f"{dev_name})\n\nEach arm: anchor + mid-level from scratch, "
          f"{len(inputs.cases)} training / {len(val)} validation patients, batch {args.batch}, "
          f"patch {'x'.join(map(str, args.patch))}; better: **{better}**; shipped: "
          f"{'yes' if ship else 'no'} (against the shipped model's mean "
          f"{mean_dice(vals['shipped']['dice']):.3f}).\n\n"
          + _table(results, vals, oars))
    (out / "search_vs_plain.md").write_text(md, encoding="utf-8")
    if Path(args.runs_md).is_file():
        shutil.copyfile(args.runs_md, out / "RUNS.md")
        for arm in ARMS:
            r = results[arm]
            searched = [b["search"] for b in r.values() if "search" in b]
            extra = (f"; search {sum(x['seconds'] for x in searched):.0f} s, "
                     f"{sum(x['patches'] for x in searched)} weight + "
                     f"{sum(x['alpha_patches'] for x in searched)} alpha patches, not counted "
                     f"in patches" if searched else "")
            rec = RunRecord(date.today().isoformat(), dev_name, _seconds(r),
                            sum(b["patches"] for b in r.values()),
                            sum(b["patches"] for b in r.values()), vals[arm]["dice"],
                            shipped=ship and arm == better,
                            note=f"part 4 `{arm}` arm from scratch at an equal budget "
                                 f"(search_vs_plain.py), batch {args.batch}; "
                                 f"{'better' if arm == better else 'worse'} of the two{extra}")
            append_run(out / "RUNS.md", rec, oars)
    else:
        note("warning", message=f"{args.runs_md} is missing; no RUNS.md rows written")
    save(stage="done", better=better, shipped=ship)
    note("done", better=better, shipped=ship, wall_s=round(clock.elapsed(), 1))
    clock.log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
