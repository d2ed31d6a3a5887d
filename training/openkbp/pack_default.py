"""Pack the trained anchor and mid-level branches into the shipped default model (int8 bundle).

    python training/openkbp/pack_default.py RUN_OUT/plain_anchor.soars.pt \\
        RUN_OUT/plain_mid_level.soars.pt soars_dose/segmentation/models/soars_default.pt --overwrite

Convolution kernels are stored as int8 with one float32 scale per output
channel, everything else as float16 (``save_bundle(..., weights="int8")``);
the figures in the README are measured on the packed file itself.
"""

from __future__ import annotations

import argparse
import os


def main(argv=None) -> int:
    from soars_dose.segmentation.bundle import WEIGHT_FORMATS, load_models, save_bundle

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="branch model files (anchor, mid-level)")
    ap.add_argument("out", help="bundle file to write")
    ap.add_argument("--weights", default="int8", choices=WEIGHT_FORMATS)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    path = save_bundle(args.out, args.models, weights=args.weights, overwrite=args.overwrite)
    m = load_models(path)
    print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB, {args.weights}, branches "
          f"{', '.join(m.branches)}, OARs {', '.join(m.available_oars())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
