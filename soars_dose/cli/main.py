"""``soars-dose``: dose audit of contour sets from the command line.

Every sub-command prints warnings to stderr, writes its results atomically
and refuses to replace an existing output folder without ``--overwrite``.
Exit status: 0 success, 2 bad input (message on stderr), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path

from ..errors import InputError, SoarsDoseError, SoarsDoseWarning


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--ct", type=Path, help="folder of the CT series (slice thickness, frame check)")
    p.add_argument("--sum-doses", action="store_true",
                   help="sum several --rtdose files on one grid (e.g. per-beam doses)")
    p.add_argument("--prescription-gy", type=float,
                   help="dose (Gy) that 1.0 stands for, required for RELATIVE dose units")
    p.add_argument("--allow-frame-mismatch", action="store_true",
                   help="accept structures whose FrameOfReferenceUID differs from the dose's")
    p.add_argument("--supersample", default="auto",
                   help="in-plane supersampling factor (even integer) or 'auto' (default)")
    p.add_argument("--bin-width", type=float, default=0.01, help="DVH bin width in Gy (0.01)")
    p.add_argument("--dvh-step", type=float, default=None,
                   help="dose step (Gy) of the written DVH table (default: the bin width)")
    p.add_argument("--interpolation", choices=["linear", "nearest"], default="linear",
                   help="dose between voxel centres: trilinear (default) or constant per voxel")
    p.add_argument("--dx", type=_float_list, default=(), help="extra Dx%% values, e.g. 5,10")
    p.add_argument("--dcc", type=_float_list, default=(), help="extra Dxcc values, e.g. 0.1,1")
    p.add_argument("--vgy", type=_float_list, default=(), help="VxGy values, e.g. 20,30")


def _settings(args):
    from ..dose.compare import Settings

    factor = args.supersample
    if factor != "auto":
        try:
            factor = int(factor)
        except ValueError:
            raise InputError(f"--supersample must be an integer or 'auto', got {factor!r}")
        if factor < 1:
            raise InputError(f"--supersample must be >= 1, got {factor}")
    if not 0 < args.bin_width <= 1:
        raise InputError(f"--bin-width must be in (0, 1] Gy, got {args.bin_width}")
    return Settings(factor=factor, bin_width_gy=args.bin_width, d_pct=args.dx, d_cc=args.dcc,
                    v_gy=args.vgy, dvh_step_gy=args.dvh_step, interpolation=args.interpolation)


def _parse_sets(items: list[str]) -> dict[str, Path]:
    sets: dict[str, Path] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set expects NAME=RTSTRUCT, got {item!r}")
        name, path = item.split("=", 1)
        name = name.strip()
        if name == "reference":
            raise InputError("--set name 'reference' is reserved for --reference")
        if name in sets:
            raise InputError(f"--set name {name!r} given twice; set names must be unique")
        sets[name] = Path(path)
    return sets


def cmd_dvh(args) -> int:
    from .. import audit

    settings = _settings(args)
    audit.check_writable(args.out, args.overwrite)
    case = audit.load_case(args.rtdose, {"rtstruct": args.rtstruct}, ct=args.ct,
                           sum_doses=args.sum_doses, prescription_gy=args.prescription_gy,
                           allow_frame_mismatch=args.allow_frame_mismatch)
    result = audit.dvh_all(case, settings)
    out = audit.write_result(result, case, args.out, settings=settings,
                             command=shlex.join(sys.argv), overwrite=args.overwrite)
    _report(result, out)
    return 0


def cmd_compare(args) -> int:
    from .. import audit

    settings = _settings(args)
    audit.check_writable(args.out, args.overwrite)
    sets = {"reference": args.reference, **_parse_sets(args.set)}
    if len(sets) < 2:
        raise InputError("compare needs at least one --set NAME=RTSTRUCT besides --reference")
    table = audit.AliasTable.load(args.names)
    case = audit.load_case(args.rtdose, sets, ct=args.ct, sum_doses=args.sum_doses,
                           prescription_gy=args.prescription_gy,
                           allow_frame_mismatch=args.allow_frame_mismatch)
    from ..analysis.contours import contour_metrics_for_case
    from ..dose.compare import match_sets

    matched = match_sets(case, table)
    result = audit.compare(case, settings, table, matched_sets=matched)
    metrics = contour_metrics_for_case(case, aliases=table, matched_sets=matched)
    out = audit.write_result(result, case, args.out, settings=settings,
                             command=shlex.join(sys.argv), overwrite=args.overwrite,
                             extra={"alias_file": str(args.names) if args.names else None},
                             tables={"contour_metrics": metrics})
    _report(result, out)
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, n_patients=args.patients, seed=args.seed, overwrite=args.overwrite,
             progress=not args.quiet)
    return 0


def cmd_report(args) -> int:
    from ..analysis.cohort_report import build_report

    path = build_report(args.dir, revisions=args.revisions, constraints=args.constraints,
                        overwrite=args.overwrite, from_scratch_min=args.from_scratch_min,
                        command=shlex.join(sys.argv))
    print(f"report written: {path}", file=sys.stderr)
    return 0


def cmd_cohort(args) -> int:
    from .. import cohort

    settings = _settings(args)
    try:
        res = cohort.run_cohort(
            args.manifest, args.out, jobs=args.jobs, scheduler=args.scheduler,
            resume=args.resume, overwrite=args.overwrite, settings=settings,
            aliases_file=args.names, progress=not args.quiet, sum_doses=args.sum_doses,
            prescription_gy=args.prescription_gy,
            allow_frame_mismatch=args.allow_frame_mismatch, command=shlex.join(sys.argv))
    except cohort.CohortInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    return 0 if res.n_failed == 0 else 3


def _report(result, out: Path) -> None:
    stats = result.stats
    ok = stats["status"].isin(["ok", "partial"]).sum()
    print(f"{ok} of {len(stats)} (set, ROI) rows computed; results in {out}", file=sys.stderr)
    bad = stats[~stats["status"].isin(["ok", "partial"])]
    for _, r in bad.iterrows():
        print(f"  {r['set']}/{r['roi']}: {r['status']}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soars-dose", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dvh", help="DVHs and dose statistics of every ROI of one RTSTRUCT")
    d.add_argument("--rtstruct", required=True, type=Path)
    d.add_argument("--rtdose", required=True, type=Path, nargs="+")
    _add_common(d)
    d.set_defaults(func=cmd_dvh)

    c = sub.add_parser("compare", help="compare contour sets with a reference on one fixed dose")
    c.add_argument("--rtdose", required=True, type=Path, nargs="+")
    c.add_argument("--reference", required=True, type=Path, help="reference (clinical) RTSTRUCT")
    c.add_argument("--set", action="append", metavar="NAME=RTSTRUCT",
                   help="a substitute contour set (repeatable)")
    c.add_argument("--names", type=Path, help="YAML alias file extending the OAR name table")
    _add_common(c)
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("report", help="statistics and the HTML report of a cohort output folder")
    r.add_argument("dir", type=Path, help="folder written by `soars-dose cohort`")
    r.add_argument("--revisions", type=Path,
                   help="CSV of per (patient, roi) revision category (none, <1 min, 1-3 min, >3 min)")
    r.add_argument("--constraints", type=Path,
                   help="YAML constraint table replacing the packaged published limits")
    r.add_argument("--from-scratch-min", type=float, default=5.0,
                   help="minutes to contour one OAR from scratch, for the time saved (5)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing DIR/report")
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("demo", help="generate the synthetic head-and-neck cohort and audit it")
    m.add_argument("--out", required=True, type=Path)
    m.add_argument("--patients", type=int, default=5)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_demo)

    from ..cohort import manifest_help

    h = sub.add_parser(
        "cohort", help="audit every patient of a CSV manifest (process pool or Dask)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Audit every patient of a manifest: per-patient results in OUT/patients/, "
                    "union tables in OUT/cohort/. Exit status 0 all patients ok, 3 some "
                    "failed (see OUT/cohort/failures), 2 bad input, 130 interrupted "
                    "(rerun with --resume).",
        epilog=manifest_help())
    h.add_argument("manifest", type=Path, help="CSV manifest (format below)")
    h.add_argument("--out", required=True, type=Path, help="output folder")
    where = h.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=None,
                       help="local processes (default: number of CPUs; 1 = in this process)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="Dask scheduler, e.g. tcp://host:8786 (workers must see the inputs "
                            "and --out at the same paths)")
    h.add_argument("--resume", action="store_true",
                   help="keep finished patients of an earlier run in --out, compute the rest")
    h.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    h.add_argument("--names", type=Path, help="YAML alias file extending the OAR name table")
    h.add_argument("--quiet", action="store_true", help="no progress bar")
    h.add_argument("--sum-doses", action="store_true",
                   help="default for the manifest's sum_doses column")
    h.add_argument("--prescription-gy", type=float,
                   help="default for the manifest's prescription_gy column (RELATIVE dose)")
    h.add_argument("--allow-frame-mismatch", action="store_true",
                   help="accept structures whose FrameOfReferenceUID differs from the dose's")
    h.add_argument("--supersample", default="auto",
                   help="in-plane supersampling factor (even integer) or 'auto' (default)")
    h.add_argument("--bin-width", type=float, default=0.01, help="DVH bin width in Gy (0.01)")
    h.add_argument("--dvh-step", type=float, default=None,
                   help="dose step (Gy) of the written DVH table (default: the bin width)")
    h.add_argument("--interpolation", choices=["linear", "nearest"], default="linear",
                   help="dose between voxel centres: trilinear (default) or constant per voxel")
    h.add_argument("--dx", type=_float_list, default=(), help="extra Dx%% values, e.g. 5,10")
    h.add_argument("--dcc", type=_float_list, default=(), help="extra Dxcc values, e.g. 0.1,1")
    h.add_argument("--vgy", type=_float_list, default=(), help="VxGy values, e.g. 20,30")
    h.set_defaults(func=cmd_cohort)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    warnings.simplefilter("default", SoarsDoseWarning)
    try:
        return int(args.func(args) or 0)
    except SoarsDoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written for the unfinished work", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
