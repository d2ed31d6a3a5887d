"""OpenKBP patients on the command line: compact training arrays and DICOM export.

    python training/openkbp/export_data.py export-training ../shared/data/openkbp/train .devdata/train.npz
    python training/openkbp/export_data.py to-dicom ../shared/data/openkbp/validation/pt_201.npz out/

``export-training`` packs a split with
:func:`soars_dose.datasets.openkbp.write_training_arrays` and warns when the
file exceeds :data:`TRAVEL_LIMIT_BYTES`, what travels with a working tree to
the development GPU machines; ``to-dicom`` writes one patient with
:func:`soars_dose.datasets.openkbp.write_dicom`. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from soars_dose.console import cli_interface
from soars_dose.datasets.openkbp import read_patient, write_dicom, write_training_arrays
from soars_dose.errors import SoarsDoseError, warn

#: Bytes a file may have and still travel with the working tree to a device machine.
TRAVEL_LIMIT_BYTES = 64 * 2**20


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python training/openkbp/export_data.py",
        description="OpenKBP patients: DICOM export and compact training arrays.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export-training", help="pack a split into one compact .npz")
    p.add_argument("src", help="split folder (pt_N.npz files or raw pt_N/ folders)")
    p.add_argument("out", help="output .npz")
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("to-dicom", help="write one patient as CT + RTDOSE + RTSTRUCT")
    p.add_argument("src", help="pt_N.npz or a raw pt_N/ CSV folder")
    p.add_argument("out", help="output folder")
    p.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        with cli_interface():  # messages name --overwrite, the flag this script takes
            return _run(args)
    except SoarsDoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "export-training":
        s = write_training_arrays(args.src, args.out, overwrite=args.overwrite)
        print(f"{s.path}: {s.n_patients} patients, {s.size_bytes / 1e6:.1f} MB "
              f"({s.voxels} voxels per array), {s.seconds:.1f} s")
        for k, v in s.overlaps.items():
            print(f"  overlap {k}: {v['voxels']} voxels in {v['patients']} patients")
        for k in s.skipped:
            print(f"  skipped {k}")
        if s.size_bytes > TRAVEL_LIMIT_BYTES:
            warn(f"{s.path}: {s.size_bytes / 2**20:.1f} MiB, more than the 64 MiB that can "
                 "travel with the working tree; write fewer patients per file")
    else:
        e = write_dicom(read_patient(args.src), args.out, overwrite=args.overwrite)
        print(f"wrote {e.ct_dir} ({len(e.ct.paths)} slices), {e.rtdose}, {e.rtstruct}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
