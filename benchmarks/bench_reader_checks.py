"""Cost of the reader input checks (issue 11) on real files, run by hand.

What is measured
----------------
On ``../shared/data/dicompyler_example`` (a 10-ROI, 441-contour RTSTRUCT,
a 194 x 129 x 98 RTDOSE, one CT slice) and the rt_utils 2-slice CT:

* ``file_layout``: the byte-level walk that detects truncated files;
* the contour checks of one RTSTRUCT (``warn_contour_problems``: exact
  duplicates and self-intersection, every contour);
* the whole ``read_rtstruct`` / ``read_rtdose`` / ``read_ct_series``.

Each figure is the fastest of ``--repeat`` calls (seconds). The machine is
shared, so take the ratios, not the absolute values.

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_reader_checks.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from soars_dose.dicom.common import file_layout
from soars_dose.dicom.ct import read_ct_series
from soars_dose.dicom.rtdose import read_rtdose
from soars_dose.dicom.rtstruct import read_rtstruct, warn_contour_problems

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    ex = DATA / "dicompyler_example"
    rs, rd = ex / "rtss.dcm", ex / "rtdose.dcm"
    warnings.simplefilter("ignore")
    ss = read_rtstruct(rs)
    n_contours = sum(len(s.contours) for s in ss.structures)
    rows = [
        ("file_layout(rtss.dcm)", best(lambda: file_layout(rs), args.repeat)),
        ("file_layout(rtdose.dcm)", best(lambda: file_layout(rd), args.repeat)),
        (f"contour checks, {n_contours} contours",
         best(lambda: [warn_contour_problems(s, rs) for s in ss.structures], args.repeat)),
        ("read_rtstruct(rtss.dcm)", best(lambda: read_rtstruct(rs), args.repeat)),
        ("read_rtdose(rtdose.dcm)", best(lambda: read_rtdose(rd), args.repeat)),
        ("read_ct_series(rt_utils/mock_data)",
         best(lambda: read_ct_series(DATA / "rt_utils" / "mock_data"), args.repeat)),
    ]
    for name, t in rows:
        print(f"{name:45s} {t * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
