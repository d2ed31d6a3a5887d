"""A few training steps on ``--device`` with every augmentation on: checks that cropping and
augmentation on the device work there before a long run is started (exit status 1 if not).

    python training/openkbp/smoke_device.py --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def sample(i, rng):
    from soars_dose.segmentation.training import Sample

    img = rng.random((24, 32, 32), dtype=np.float32)
    lab = np.zeros((24, 32, 32), np.uint8)
    lab[8:16, 10:20, 4:14] = 1
    lab[8:16, 10:20, 18:28] = 2
    return Sample(f"c{i}", img, lab, np.array([True, True, True]), None,
                  np.full((2, 3), np.nan), (2.5, 3.9, 3.9), 0.0)


def main(argv=None) -> int:
    from soars_dose.segmentation.training import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    cfg = TrainConfig.from_dict(dict(
        branch="anchor", widths=(4, 8, 8, 8, 8), patch_size=(24, 32, 32), batch_size=2,
        epochs=2, iterations_per_epoch=3, ops=("3d_3",) * 9, flip_probability=1.0,
        rotation_probability=1.0, intensity_probability=1.0, noise_probability=1.0,
        shift_hu=300.0, shift_probability=1.0))
    with tempfile.TemporaryDirectory() as d:
        res = train("smoke", Path(d) / "run", cfg,
                    samples=([sample(0, rng), sample(1, rng)], [sample(2, rng)]),
                    oar_names=["Parotid_L", "Parotid_R"], device=args.device, overwrite=True,
                    progress=False)
    print(f"training on {args.device} with batches built there: ok "
          f"(loss {res.log[-1]['loss']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
