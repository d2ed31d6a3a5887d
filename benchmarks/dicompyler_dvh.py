"""DVHs of RTSTRUCT ROIs computed by dicompyler-core's ``dvhcalc.get_dvh``, as JSON.

Run with the interpreter of the benchmark venv (pydicom 2.4, see
``benchmarks/setup_dicompyler_env.sh``); dicompyler-core's DICOM parser
does not work under pydicom 3, so soars-dose's benchmark calls this as a
subprocess::

    .bench-venv/bin/python benchmarks/dicompyler_dvh.py RS.dcm RD.dcm --roi 1 2 3

Modes
-----
``default``
    ``get_dvh(rs, rd, roi)``: the contour mask is the set of dose-grid
    points inside each contour (matplotlib point-in-polygon), the dose of a
    contour plane is the nearest dose plane (within 0.5 mm) or a linear
    interpolation of the two around it, and every point counts as pixel
    area x the smallest contour-plane spacing.
``interp``
    ``get_dvh(..., interpolation_resolution=spacing / F,
    interpolation_segments_between_planes=S, use_structure_extents=True)``:
    the dose plane is bilinearly upsampled (scikit-image ``rescale``) to a
    pixel of ``spacing / F`` around the structure, and ``S`` extra planes are
    inserted between contour planes (dicompyler-core 0.5.6 copies the
    nearest contour into them, it does not interpolate the shape, and
    divides the slab thickness by ``S + 1``). F must be a power of 2
    (dicompyler-core requires ``spacing % resolution == 0``).
``interp-xy``
    The same without extra planes (``interpolation_segments_between_planes=0``),
    to separate the in-plane interpolation from the plane insertion.

Output (stdout): ``{"versions": {...}, "load_seconds": ..., "results": [...]}``
with one result per ROI and mode: ``volume_cc``, ``mean_gy``, ``max_gy``,
``min_gy``, ``d2_gy``, ``d98_gy``, ``d0_03cc_gy`` (dicompyler-core's own
``DVH.statistic``, as returned: it answers 0 Gy when the volume asked for
exceeds the structure's, and also when the nearest-bin search lands on bin
0), ``bins_gy`` (bin edges, 1 cGy wide) and ``cumulative_cc``
(``cumulative_cc[i]`` = cm^3 receiving >= ``bins_gy[i]``; dicompyler-core
returns a cumulative DVH in absolute volume, cm^3) and ``seconds`` (the
``get_dvh`` call alone, fastest of ``--repeat`` calls after one untimed call
per mode; the files are read once beforehand, ``load_seconds``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import dicompylercore
import numpy as np
import pydicom
from dicompylercore import dvhcalc


def _statistic(dvh, name: str) -> float:
    return float(dvh.statistic(name).value)


def run_one(rs, rd, roi: int, kwargs: dict, repeat: int = 1) -> dict:
    seconds = float("inf")
    for _ in range(repeat):  # fastest of `repeat` calls: the least disturbed by other load
        t0 = time.perf_counter()
        dvh = dvhcalc.get_dvh(rs, rd, roi, **kwargs)
        seconds = min(seconds, time.perf_counter() - t0)
    counts = np.asarray(dvh.counts, dtype=float)
    bins = np.asarray(dvh.bins, dtype=float)
    empty = counts.size <= 1 or counts.max() <= 0
    return {
        "roi": roi,
        "name": dvh.name,
        "seconds": seconds,
        "volume_cc": float(dvh.volume) if not empty else 0.0,
        "mean_gy": float(dvh.mean) if not empty else None,
        "max_gy": float(dvh.max) if not empty else None,
        "min_gy": float(dvh.min) if not empty else None,
        "d2_gy": None if empty else _statistic(dvh, "D2"),
        "d98_gy": None if empty else _statistic(dvh, "D98"),
        "d0_03cc_gy": None if empty else _statistic(dvh, "D0.03cc"),
        "bins_gy": [round(b, 4) for b in bins.tolist()],
        "cumulative_cc": [float(f"{c:.7g}") for c in counts.tolist()],
        "notes": dvh.notes,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rtstruct")
    ap.add_argument("rtdose")
    ap.add_argument("--roi", type=int, nargs="+", required=True, help="ROI numbers")
    ap.add_argument("--modes", nargs="+", default=["default", "interp", "interp-xy"],
                    choices=["default", "interp", "interp-xy"])
    ap.add_argument("--repeat", type=int, default=3,
                    help="time each DVH as the fastest of this many calls")
    ap.add_argument("--interp-factor", type=int, default=8,
                    help="interp: in-plane resolution = dose pixel spacing / this (power of 2)")
    ap.add_argument("--interp-segments", type=int, default=2,
                    help="interp: interpolation_segments_between_planes")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    rs = pydicom.dcmread(args.rtstruct)
    rd = pydicom.dcmread(args.rtdose)
    _ = rd.pixel_array  # decode once (pydicom caches it), as any caller holding the dataset would
    load_seconds = time.perf_counter() - t0
    spacing = [float(s) for s in rd.PixelSpacing]

    modes = {
        "default": {},
        "interp": {
            "interpolation_resolution": (spacing[0] / args.interp_factor,
                                         spacing[1] / args.interp_factor),
            "interpolation_segments_between_planes": args.interp_segments,
            "use_structure_extents": True,
        },
    }
    modes["interp-xy"] = dict(modes["interp"], interpolation_segments_between_planes=0)
    results = []
    for mode in args.modes:  # one untimed call first: first-call costs out of the timings
        run_one(rs, rd, args.roi[0], modes[mode])
    for mode in args.modes:
        for roi in args.roi:
            r = run_one(rs, rd, roi, modes[mode], args.repeat)
            r["mode"] = mode
            r["kwargs"] = {k: list(v) if isinstance(v, tuple) else v
                           for k, v in modes[mode].items()}
            results.append(r)
    json.dump({
        "versions": {"dicompyler-core": dicompylercore.__version__,
                     "pydicom": pydicom.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "load_seconds": load_seconds,
        "results": results,
    }, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
