"""How often do the plausibility flags fire on real clinical contours? (run by hand)

For every OpenKBP patient (../shared/data/openkbp, 202 real H&N plans) the seven OAR
masks are measured: volume (voxel count x voxel volume, cc) against
``soars_dose/data/oar_volumes.yaml``, and the share of each mask's voxels below -500 HU
(air) and above 300 HU (bone), flagged by the organ's tissue rule as in
:mod:`soars_dose.analysis.plausibility`. These are clinically used contours, so every
flag here is a false positive of the check (or a real oddity worth a look).

    PYTHONPATH=$PWD python benchmarks/plausibility_openkbp.py [../shared/data/openkbp]
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from soars_dose.analysis.plausibility import (
    AIR_HU,
    BONE_HU,
    MAX_TISSUE_SHARE,
    TISSUES,
    load_volume_table,
    volume_flags,
)

NAMES = {"Brainstem": "Brainstem", "SpinalCord": "SpinalCord", "RightParotid": "Parotid_R",
         "LeftParotid": "Parotid_L", "Esophagus": "Esophagus", "Larynx": "Larynx_GSL",
         "Mandible": "Bone_Mandible"}


def main(root: str = "../shared/data/openkbp") -> None:
    table = load_volume_table()
    files = sorted(Path(root).glob("train/pt_*.npz")) + sorted(Path(root).glob("validation/pt_*.npz"))
    n, flagged, vols = Counter(), Counter(), {}
    examples = []
    for f in files:
        z = np.load(f)
        vox_cc = float(np.prod(z["voxel_dimensions_mm"])) / 1000.0
        hu = z["ct_hu"]
        for key, oar in NAMES.items():
            if f"mask_{key}" not in z:
                continue
            m = z[f"mask_{key}"]
            if not m.any():
                continue
            n[oar] += 1
            v = float(m.sum()) * vox_cc
            vols.setdefault(oar, []).append(v)
            flags = volume_flags(oar, v, table)
            h = hu[m]
            shares = {"air": float(np.mean(h < AIR_HU)), "bone": float(np.mean(h > BONE_HU))}
            flags += [k for k in TISSUES[table[oar].tissue] if shares[k] > MAX_TISSUE_SHARE]
            for fl in flags:
                flagged[(oar, fl)] += 1
                examples.append(f"{f.stem} {oar}: {fl} (volume {v:.1f} cc, air "
                                f"{100 * shares['air']:.0f} %, bone {100 * shares['bone']:.0f} %)")
    print(f"{len(files)} patients, {sum(n.values())} OAR masks")
    print("| OAR | masks | volume cc: min / median / max | table range | flagged |")
    print("| --- | --- | --- | --- | --- |")
    for oar in NAMES.values():
        if not n[oar]:
            continue
        v = np.array(vols[oar])
        e = table[oar]
        fl = ", ".join(f"{k[1]} {c}" for k, c in flagged.items() if k[0] == oar) or "0"
        print(f"| {oar} | {n[oar]} | {v.min():.1f} / {np.median(v):.1f} / {v.max():.1f} | "
              f"{e.min_cc:g}-{e.max_cc:g} | {fl} |")
    print("\n".join(examples))


if __name__ == "__main__":
    main(*sys.argv[1:])
