"""Accuracy of ``--between-planes stack`` and ``interpolate`` against true solids (run by hand).

Spheres, cylinders lying in the contour plane and cones along the normal,
radii 10, 15, 20 mm, contoured on 1, 2 and 3 mm planes at three plane
offsets (cone: flat base half a spacing beyond its last plane, apex offset),
on a 2.5 mm dose grid. Truth: ``soars_dose/synthetic/solids.py`` (formula / analytic
cross-sections, independent of the kernel). Prints the largest |volume
error| per shape and spacing for each mode, and for r = 10 mm at 3 mm the
largest |error| of Dmean, D95, D5, Dmin, Dmax (% of the true dose) in linear
gradients along x, y and z.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/between_planes_accuracy.py
"""

from __future__ import annotations

import numpy as np

from soars_dose.between_planes import prepare  # noqa: E402
from soars_dose.dose.compute import compute_dvh  # noqa: E402
from soars_dose.rasterize import sample_structure  # noqa: E402
from soars_dose.structures import Structure  # noqa: E402
from soars_dose.synthetic.solids import (  # noqa: E402
    DOSE_AT_CENTRE,
    SLOPE,
    grid_around,
    linear_dose,
    placed_solid,
)


def _structure(solid, dz: float, z0: float) -> Structure:
    return Structure(name="solid", number=1, contours=solid.contours(dz, z0))


def _volume_mm3(structure: Structure, grid, dz: float, mode: str) -> float:
    rec = prepare(structure, mode, nominal_spacing_mm=dz)
    return sample_structure(rec.structure, grid,
                            nominal_spacing_mm=rec.nominal_spacing_mm).volume_mm3


def main() -> int:
    print("largest |volume error| (%) over offsets 0, 0.37, dz/2 (cone: apex offsets)")
    print(f"{'shape':9s} {'r':>4s} {'dz':>4s} {'stack':>7s} {'interp':>7s}")
    for kind in ("sphere", "cylinder", "cone"):
        for r in (10.0, 15.0, 20.0):
            for dz in (1.0, 2.0, 3.0):
                errs = {"stack": [], "interpolate": []}
                for off in (0.0, 0.37, dz / 2):
                    solid, z0 = placed_solid(kind, r, dz, off)
                    st, grid = _structure(solid, dz, z0), grid_around(solid)
                    for mode in errs:
                        errs[mode].append(100 * (_volume_mm3(st, grid, dz, mode) / solid.volume - 1))
                print(f"{kind:9s} {r:4.0f} {dz:4.0f} {max(map(abs, errs['stack'])):7.2f} "
                      f"{max(map(abs, errs['interpolate'])):7.2f}", flush=True)
    print("\nr = 10 mm, 3 mm planes, offset 1.37 mm: largest |error| (% of true dose) over x, y, z")
    print(f"{'shape':9s} {'mode':12s} " + " ".join(f"{k:>6s}" for k in ("mean", "D95", "D5", "Dmin", "Dmax")))
    for kind in ("sphere", "cylinder", "cone"):
        solid, z0 = placed_solid(kind, 10.0, 3.0, 1.37)
        st = _structure(solid, 3.0, z0)
        for mode in ("stack", "interpolate"):
            worst = np.zeros(5)
            for axis in "xyz":
                t = solid.dvh(axis, DOSE_AT_CENTRE, SLOPE[axis])
                rec = prepare(st, mode, nominal_spacing_mm=3.0)
                d = compute_dvh(rec.structure, linear_dose(grid_around(solid), axis),
                                nominal_spacing_mm=rec.nominal_spacing_mm)
                ours = [d.mean_gy, d.dose_at_volume_pct(95), d.dose_at_volume_pct(5), d.min_gy, d.max_gy]
                true = [t.mean, t.dose_at_pct(95), t.dose_at_pct(5), t.dmin, t.dmax]
                worst = np.maximum(worst, [abs(100 * (o / v - 1)) for o, v in zip(ours, true)])
            print(f"{kind:9s} {mode:12s} " + " ".join(f"{w:6.2f}" for w in worst), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
