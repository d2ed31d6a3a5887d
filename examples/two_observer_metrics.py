"""Reader-vs-reference contour metrics on the DeepMind two-observer data, per OAR.

    .venv/bin/python examples/two_observer_metrics.py [DATA_DIR]

DATA_DIR defaults to ../shared/data/deepmind_two_observer. The oncologist's
masks are the reference, the radiographer's the second reader; prints the
mean over the scans of Dice, HD95, ASD and surface Dice (at each OAR's
tolerance) per OAR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nrrd
import numpy as np
import pandas as pd

from soars_dose.analysis import metrics as M
from soars_dose.names import AliasTable


def read_mask(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A NRRD mask as ``[z, y, x]`` with its spacing in the same order (mm)."""
    data, header = nrrd.read(str(path))
    spacing = np.linalg.norm(np.asarray(header["space directions"], float), axis=1)
    return np.transpose(data, (2, 1, 0)) > 0, tuple(spacing[::-1])


def main(root: Path) -> pd.DataFrame:
    aliases = AliasTable.load()
    tolerances = M.load_tolerances()
    rows = []
    scans = sorted(p.name for p in (root / "validation" / "oncologist").iterdir())
    for scan in scans:
        ref_dir = root / "validation" / "oncologist" / scan / "segmentations"
        sub_dir = root / "validation" / "radiographer" / scan / "segmentations"
        for f in sorted(ref_dir.glob("*.nrrd")):
            ref, spacing = read_mask(f)
            sub, _ = read_mask(sub_dir / f.name)
            oar = aliases.match(f.stem).canonical or f.stem
            res = M.contour_metrics(ref, sub, spacing, M.tolerance_for(oar, tolerances))
            rows.append({"scan": scan, "oar": oar, **res})
    df = pd.DataFrame(rows)
    table = df.groupby("oar")[["dice", "hd95_mm", "asd_mm", "surface_dice", "tolerance_mm"]].mean()
    print(table.round(3).to_string())
    return df


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deepmind_two_observer"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
