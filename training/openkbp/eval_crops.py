"""Validation Dice of model files on the validation training-arrays crops (the selection metric).

    python training/openkbp/eval_crops.py --val .devdata/validation.npz MODEL [MODEL ...]

The same crops, inference and Dice as ``train_default.evaluate`` (the
figures of ``results.json``), for a model file or bundle made afterwards,
e.g. the int8 bundle of ``pack_default.py`` against its float16 source.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    import torch
    import train_default as T

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="stratified model bundles or branch-file sets "
                                              "(one bundle per argument)")
    ap.add_argument("--val", required=True, help="training-arrays file of the validation split")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    val = T.load_cases(args.val)
    out = {}
    for name in args.models:
        t = time.perf_counter()
        r = T.evaluate("plain", [name], val, args.device)
        r["wall_s"] = time.perf_counter() - t
        out[name] = r
        print(name, json.dumps({k: round(v, 3) for k, v in r["dice"].items()}),
              "mean", round(r["mean_dice"], 3),
              "s/patient", round(r["inference_s_per_patient"], 2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
