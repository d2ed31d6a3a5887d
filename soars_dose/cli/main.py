"""``soars-dose``: dose audit of contour sets from the command line.

Every sub-command prints warnings to stderr (one line each, each once:
``warning: ...``), writes its results atomically and refuses to replace an
existing output folder without ``--overwrite``.

Exit status: 0 success, 2 bad input or an output that cannot be written
(one paragraph on stderr naming the file and what to do), 3 some cohort
patients failed, 130 interrupted, 1 an unexpected internal error: a bug.
For a bug, stderr gets a short message and the full traceback is saved to
a log file in the temporary folder (``$TMPDIR/soars-dose-error-*.log``;
the message gives its path), never printed as a Python traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import shlex
import sys
import warnings
from pathlib import Path

from ..console import cli_interface, console_messages, dedupe
from ..errors import InputError, OutputExistsError, SoarsDoseError, SoarsDoseWarning
from ..inputs import require_file, require_folder

#: OARs of the packaged segmentation model (soars_dose/segmentation/models/soars_default.pt),
#: for the help text: reading them from the file would need torch, which --help must not.
PACKAGED_MODEL_OARS = ("Brainstem", "SpinalCord", "Bone_Mandible", "Parotid_L", "Parotid_R",
                       "Esophagus", "Larynx_GSL")


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def _number(lo: float, *, above: bool = True, integer: bool = False, unit: str = ""):
    """An argparse ``type``: a finite number > ``lo`` (``above``) or >= ``lo``.

    argparse puts the option's name before the message and exits with
    status 2 before any work is done.
    """
    kind = "a whole number" if integer else "a finite number"
    need = f"{kind} {'>' if above else '>='} {lo:g}{(' ' + unit) if unit else ''}"

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}") from None
        if not math.isfinite(value) or value < lo or (above and value == lo):
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


_PRESCRIPTION_HELP = ("dose (Gy, > 0) that 1.0 stands for, required for RELATIVE dose units; "
                      "ignored for doses in Gy")
_PRESCRIPTION_HELP_RX = ("the prescription (Gy, > 0, total) of the report's %% of prescription "
                         "axis and of the near-zero threshold (wins over --rtplan); also the "
                         "dose that 1.0 stands for in RELATIVE dose units")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path,
                   help="output folder (must not exist, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--ct", type=Path, help="folder of the CT series (slice thickness, frame check)")
    p.add_argument("--ct-series", metavar="UID",
                   help="SeriesInstanceUID of the CT series to use when the --ct folder holds "
                        "several")
    p.add_argument("--sum-doses", action="store_true",
                   help="sum several --rtdose files on one grid (e.g. per-beam doses)")
    p.add_argument("--prescription-gy", type=_number(0, unit="Gy"), help=_PRESCRIPTION_HELP_RX)
    p.add_argument("--rtplan", type=Path, metavar="FILE",
                   help="DICOM RTPLAN whose target prescription (Gy, the highest "
                        "TargetPrescriptionDose of its TARGET dose references) is the "
                        "prescription when --prescription-gy is not given; its frame of "
                        "reference is checked against the dose")
    p.add_argument("--allow-frame-mismatch", action="store_true",
                   help="accept structures (or an RTPLAN) whose FrameOfReferenceUID differs from "
                        "the dose's")
    p.add_argument("--supersample", default="auto",
                   help="in-plane supersampling factor (even integer) or 'auto' (default)")
    p.add_argument("--bin-width", type=float, default=0.01, help="DVH bin width in Gy (0.01)")
    p.add_argument("--dvh-step", type=float, default=0.1,
                   help="dose step (Gy) of the written DVH table (0.1; the statistics use "
                        "the full-resolution DVH)")
    p.add_argument("--interpolation", choices=["linear", "nearest"], default="linear",
                   help="dose between voxel centres: trilinear (default) or constant per voxel")
    _add_between_planes(p)
    _add_checks(p)
    p.add_argument("--dx", type=_float_list, default=(), help="extra Dx%% values, e.g. 5,10")
    p.add_argument("--dcc", type=_float_list, default=(), help="extra Dxcc values, e.g. 0.1,1")
    p.add_argument("--vgy", type=_float_list, default=(), help="VxGy values, e.g. 20,30")


def _add_checks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--near-zero-gy", type=float, default=1.0,
                   help="reference doses (Gy) below this leave the eq 6/7 percentages (mean, "
                        "max and D0.03cc alike) empty when no prescription is known (the Gy "
                        "difference is still given; default 1)")
    p.add_argument("--near-zero-rx-pct", type=float, default=2.0,
                   help="with a known prescription (--prescription-gy, --rtplan, manifest "
                        "columns prescription_gy, rtplan) the near-zero threshold is this %% of "
                        "it instead "
                        "(default 2; 0 ignores the prescription)")
    p.add_argument("--max-memory-gb", type=float, default=2.0,
                   help="refuse (status too_large) a structure whose rasterisation would need "
                        "more memory than this, in GB (default 2)")
    p.add_argument("--plausibility-volumes", type=Path, default=None,
                   help="YAML file of plausible OAR volumes (cc) replacing entries of the "
                        "packaged soars_dose/data/oar_volumes.yaml")
    p.add_argument("--plausibility-air-hu", type=float, default=-500.0,
                   help="HU below which a CT voxel counts as air in the plausibility check "
                        "(default -500)")
    p.add_argument("--plausibility-bone-hu", type=float, default=300.0,
                   help="HU above which a CT voxel counts as bone (default 300)")
    p.add_argument("--plausibility-max-share", type=float, default=0.2,
                   help="largest share (0-1) of a contour's volume in air or bone before it is "
                        "flagged (default 0.2)")


def _add_between_planes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--between-planes", choices=["stack", "interpolate"], default="stack",
                   help="the object between contour planes: 'stack' (default, the planning-system "
                        "convention: each plane's region extruded half-way to its neighbours, "
                        "half a slice beyond the ends) or 'interpolate' (true shape: shape-based "
                        "interpolation of the planar regions, end caps following the shape); "
                        "contour metrics always use the contours as drawn")


def _sampling_options(args) -> "int | str":
    """``--supersample`` as Settings.factor; the rules are settings_checks.check_sampling's."""
    from ..dose.settings_checks import check_sampling

    factor = args.supersample
    if factor != "auto":
        try:
            factor = int(factor)
        except ValueError:
            raise InputError(f"--supersample must be an integer or 'auto', got {factor!r}") from None
    check_sampling(factor, args.bin_width)
    return factor


def _settings(args):
    from ..dose.compare import Settings

    factor = _sampling_options(args)
    if args.plausibility_volumes is not None:
        require_file(args.plausibility_volumes, "a YAML file of plausible OAR volumes")
    return Settings(factor=factor, bin_width_gy=args.bin_width, d_pct=args.dx, d_cc=args.dcc,
                    v_gy=args.vgy, dvh_step_gy=args.dvh_step, interpolation=args.interpolation,
                    between_planes=getattr(args, "between_planes", "stack"),
                    near_zero_gy=args.near_zero_gy, near_zero_rx_pct=args.near_zero_rx_pct,
                    prescription_gy=getattr(args, "prescription_gy", None),
                    max_memory_gb=args.max_memory_gb,
                    plausibility_volumes=(str(args.plausibility_volumes)
                                          if args.plausibility_volumes else None),
                    plausibility_air_hu=args.plausibility_air_hu,
                    plausibility_bone_hu=args.plausibility_bone_hu,
                    plausibility_max_share=args.plausibility_max_share)


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


@contextlib.contextmanager
def _case_warnings():
    """Collect the warnings of loading and computing a case; print each once on exit.

    ``say(messages)`` adds messages recorded elsewhere (a result's
    ``messages``: warnings that the computation caught for provenance).
    """
    shown: list[str] = []

    def say(messages) -> None:
        shown.extend(messages)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SoarsDoseWarning)
        try:
            yield say
        finally:
            recorded = [str(w.message) for w in caught if issubclass(w.category, SoarsDoseWarning)]
            for message in dedupe(recorded + shown):
                print(f"warning: {message}", file=sys.stderr)


def cmd_dvh(args) -> int:
    from .. import audit

    settings = _settings(args)
    audit.check_writable(args.out, args.overwrite)
    with _case_warnings() as say:
        case = audit.load_case(args.rtdose, {"rtstruct": args.rtstruct}, ct=args.ct,
                               ct_series=args.ct_series, sum_doses=args.sum_doses,
                               prescription_gy=args.prescription_gy, rtplan=args.rtplan,
                               allow_frame_mismatch=args.allow_frame_mismatch)
        result = audit.dvh_all(case, settings)
        say(console_messages(result.messages, result.stats, case.patient))
    out = audit.write_result(result, case, args.out, command=shlex.join(sys.argv),
                             overwrite=args.overwrite, report=not args.no_report)
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
    with _case_warnings() as say:
        case = audit.load_case(args.rtdose, sets, ct=args.ct, ct_series=args.ct_series,
                               sum_doses=args.sum_doses,
                               prescription_gy=args.prescription_gy, rtplan=args.rtplan,
                               allow_frame_mismatch=args.allow_frame_mismatch)
        result = audit.compare(case, settings, table)
        say(console_messages(result.messages, result.stats, case.patient))
    out = audit.write_result(result, case, args.out, command=shlex.join(sys.argv),
                             overwrite=args.overwrite,
                             extra={"alias_file": str(args.names) if args.names else None},
                             report=not args.no_report)
    _report(result, out)
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, n_patients=args.patients, seed=args.seed, overwrite=args.overwrite,
             progress=not args.quiet)
    return 0


def cmd_report(args) -> int:
    from ..outputs import check_parent_writable
    from ..report.cohort import build_report

    report = require_folder(args.dir, "the output folder of soars-dose cohort") / "report"
    if report.exists() and not report.is_dir():
        raise OutputExistsError(f"{report}: is a file; report writes its tables into the "
                                "folder DIR/report: move that file away")
    if report.exists() and not args.overwrite:
        raise OutputExistsError(f"{report}: a report already exists; pass --overwrite to "
                                "replace it (report always writes into DIR/report)")
    check_parent_writable(report)
    for path, what in ((args.revisions, "a CSV revision file"),
                       (args.constraints, "a YAML constraints file")):
        if path is not None:
            require_file(path, what)

    path = build_report(args.dir, revisions=args.revisions, constraints=args.constraints,
                        overwrite=args.overwrite, from_scratch_min=args.from_scratch_min,
                        point_max=args.point_max,
                        command=shlex.join(sys.argv))
    print(f"report written: {path}", file=sys.stderr)
    return 0


def cmd_cohort(args) -> int:
    from .. import cohort
    from ..outputs import check_parent_writable

    settings = _settings(args)
    check_parent_writable(args.out)
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
    if args.quiet and res.n_failed:  # without --quiet the run's summary listed them
        print(f"cohort: {res.n_failed} of {len(res.patients)} patients failed (see "
              f"{res.out / 'cohort' / 'failures.csv'}):", file=sys.stderr)
        for line in cohort.failure_lines(res.failures):
            print(line, file=sys.stderr)
    return 0 if res.n_failed == 0 else 3


def cmd_tps_check(args) -> int:
    from ..dose.tps import Tolerances, compare_with_tps

    if args.out is not None:
        from ..outputs import check_writable

        check_writable(args.out, args.overwrite)
    factor = _sampling_options(args)
    if args.nominal_spacing_mm is not None and not args.nominal_spacing_mm > 0:
        raise InputError(f"--nominal-spacing-mm must be > 0, got {args.nominal_spacing_mm}")
    try:
        tol = Tolerances(volume_pct=args.volume_tol_pct, volume_cc=args.volume_tol_cc,
                         dose_pct=args.dose_tol_pct, dose_gy=args.dose_tol_gy)
    except ValueError as exc:
        raise InputError(f"tolerances: {exc}") from None
    result = compare_with_tps(args.rtdose, args.rtstruct, prescription_gy=args.prescription_gy,
                              nominal_spacing_mm=args.nominal_spacing_mm, tolerances=tol,
                              bin_width=args.bin_width, factor=factor,
                              allow_frame_mismatch=args.allow_frame_mismatch)
    for m in result.messages:
        print(f"note: {m}", file=sys.stderr)
    if args.out is None:
        cols = ["roi_number", "roi", "status", "metric", "ours", "theirs", "diff", "tolerance",
                "cause"]
        print(result.table.reindex(columns=cols).to_string(index=False, na_rep="",
                                                            float_format=lambda v: f"{v:.4g}"))
        return 0
    from ..report.tps import write_tps_outputs

    out = write_tps_outputs(result, args.out, overwrite=args.overwrite,
                            command=shlex.join(sys.argv))
    n = int((result.table["cause"] != "").sum())
    print(f"{len(result.curves)} ROI(s) compared, {n} difference(s) above tolerance; "
          f"results in {out}", file=sys.stderr)
    return 0


def cmd_names(args) -> int:
    from ..dicom.rtstruct import read_rtstruct
    from ..names import AliasTable, describe_rois

    path = args.rtstruct
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a DICOM RTSTRUCT file")
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path of the RTSTRUCT")
    if args.out is not None:
        if args.out.is_dir():
            raise InputError(f"{args.out}: is a folder; --out names the CSV file to write")
        if args.out.exists() and not args.overwrite:
            from ..errors import OutputExistsError

            raise OutputExistsError(f"{args.out}: already exists; choose another --out or pass "
                                    "--overwrite to replace it")
    table = AliasTable.load(args.names)
    sset = read_rtstruct(path)
    frame = describe_rois([(st.number, st.name) for st in sset], table, source=str(path))
    if args.out is None:
        print(frame.to_string(index=False, na_rep=""))
    else:
        from ..outputs import atomic_write_file, csv_safe

        atomic_write_file(args.out, lambda f: csv_safe(frame).to_csv(f, index=False))
        print(f"{len(frame)} ROI(s) written to {args.out}", file=sys.stderr)
    counts = frame["status"].value_counts()
    print("; ".join(f"{n} {status}" for status, n in counts.items()), file=sys.stderr)
    return 0


def _require_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(
            f"soars-dose {command} needs PyTorch (the optional segmentation backend). Install "
            "the torch build you want first, e.g. CPU only: pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu (or CUDA torch, see pytorch.org); then "
            'pip install "soars-dose[segmentation]" for an installed wheel, or '
            'pip install -e ".[segmentation]" in a checkout') from None


def cmd_segment(args) -> int:
    from ..outputs import check_writable_file

    # before torch, the model and inference: a refused --out must not cost a run
    check_writable_file(args.out, args.overwrite, "the RTSTRUCT file to write")
    _require_torch("segment")
    require_folder(args.ct_dir, "a folder of CT slices")
    from .. import oars as catalogue
    from ..segmentation.bundle import default_model_path
    from ..segmentation.inference import segment_ct

    organs = None
    if args.organs:
        organs = []
        for item in args.organs:
            for name in (n.strip() for n in item.split(",")):
                if not name:
                    continue
                if name in catalogue.CATEGORIES:
                    organs += catalogue.names(name)
                else:
                    organs.append(catalogue.get(name).name)
    from ..segmentation.bundle import load_models

    models = load_models(args.model if args.model else [default_model_path()])
    print(f"model: {', '.join(models.sources)}\n  covers {len(models.available_oars())} OARs: "
          f"{', '.join(models.available_oars())}", file=sys.stderr)
    result = segment_ct(args.ct_dir, models, args.out, organs=organs, tta=args.tta,
                        progress=not args.quiet, overwrite=args.overwrite, device=args.device,
                        ct_series=args.ct_series)
    n = len(result.masks)
    empty = [k for k in result.masks if result.masks.voxel_count(k) == 0]
    print(f"{n - len(empty)} of {n} OARs segmented in {result.timings_s.get('total', 0):.1f} s; "
          f"RTSTRUCT written: {args.out}", file=sys.stderr)
    if empty:
        print(f"  empty: {', '.join(empty)}", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    _require_torch("train")
    import json

    from ..segmentation.training import TrainConfig, train

    kw: dict = {}
    if args.config:
        try:
            kw.update(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{args.config}: cannot read the training settings ({exc})") from None
        if not isinstance(kw, dict):
            raise InputError(f"{args.config}: must hold a JSON object of training settings")
    kw["branch"] = args.branch
    if args.search:
        kw["search"] = True
    for name in ("anchor_model", "epochs", "warmup_epochs", "search_epochs", "seed"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = str(value) if name == "anchor_model" else value
    config = (TrainConfig.tiny(**kw) if args.preset == "phantom"
              else TrainConfig.from_dict(kw))
    result = train(args.dataset, args.out, config, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.quiet, device=args.device)
    if result.rank == 0:
        last = result.log[-1] if result.log else {}
        print(f"{config.branch}: {len(result.log)} epochs logged, last loss "
              f"{last.get('loss', float('nan')):.4f}; model: {result.model_path}",
              file=sys.stderr)
    return 0


def _report(result, out: Path) -> None:
    stats = result.stats
    ok = stats["status"].isin(["ok", "partial"]).sum()
    print(f"{ok} of {len(stats)} (set, ROI) rows computed; results in {out}", file=sys.stderr)
    if (out / "report.html").is_file():
        print(f"report: {out / 'report.html'}", file=sys.stderr)
    bad = stats[~stats["status"].isin(["ok", "partial"])]
    for _, r in bad.iterrows():
        print(f"  {r['set']}/{r['roi']}: {r['status']}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from ..outputs import version

    p = argparse.ArgumentParser(
        prog="soars-dose",
        description="Dose audit of organ-at-risk contour sets on a fixed RTDOSE grid, and "
                    "SOARS segmentation of a CT series. The packaged segmentation model covers "
                    f"{len(PACKAGED_MODEL_OARS)} head-and-neck OARs "
                    f"({', '.join(PACKAGED_MODEL_OARS)}); models trained with the train "
                    "command can cover up to the 42 SOARS OARs.",
        epilog="Run soars-dose COMMAND -h for the options of a command.")
    p.add_argument("--version", action="version", version=f"soars-dose {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dvh", help="DVHs and dose statistics of every ROI of one RTSTRUCT")
    d.add_argument("--rtstruct", required=True, type=Path,
                   help="DICOM RTSTRUCT file whose ROIs are evaluated")
    d.add_argument("--rtdose", required=True, type=Path, nargs="+",
                   help="DICOM RTDOSE file (several with --sum-doses)")
    d.add_argument("--no-report", action="store_true",
                   help="do not write OUT/report.html (a DVH page of its structures)")
    _add_common(d)
    d.set_defaults(func=cmd_dvh)

    c = sub.add_parser("compare", help="compare contour sets with a reference on one fixed dose")
    c.add_argument("--rtdose", required=True, type=Path, nargs="+",
                   help="DICOM RTDOSE file, the fixed dose of every set (several with --sum-doses)")
    c.add_argument("--reference", required=True, type=Path, help="reference (clinical) RTSTRUCT")
    c.add_argument("--set", action="append", metavar="NAME=RTSTRUCT",
                   help="a substitute contour set (repeatable)")
    c.add_argument("--names", type=Path, help="YAML alias file extending the OAR name table")
    c.add_argument("--no-report", action="store_true",
                   help="do not write OUT/report.html (the one-patient report (DVHs, dose statistics with eq 6/7, contour metrics))")
    _add_common(c)
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("report", help="statistics and the HTML report of a cohort output folder")
    r.add_argument("dir", type=Path, help="output folder written by soars-dose cohort")
    r.add_argument("--revisions", type=Path,
                   help="CSV of per (patient, roi) revision category (none, <1 min, 1-3 min, >3 min)")
    r.add_argument("--constraints", type=Path,
                   help="YAML constraint table replacing the packaged published limits")
    r.add_argument("--point-max", action="store_true",
                   help="judge the serial-organ constraints (cord, brainstem, optic structures, "
                        "lenses) on the point maximum instead of the near-maximum D0.03cc")
    r.add_argument("--from-scratch-min", type=_number(0, unit="min"), default=5.0,
                   help="minutes to contour one OAR from scratch, for the time saved (5)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing DIR/report")
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("demo", help="generate the synthetic head-and-neck cohort and audit it")
    m.add_argument("--out", required=True, type=Path,
                   help="folder for the synthetic data, the audit and the report (must not "
                        "exist, unless --overwrite)")
    m.add_argument("--patients", type=_number(1, above=False, integer=True), default=5,
                   help="number of synthetic patients (5)")
    m.add_argument("--seed", type=_number(0, above=False, integer=True), default=0,
                   help="random seed of the synthetic cohort (0); the same seed gives the same "
                        "data")
    m.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder (kept until the new run is done)")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_demo)

    g = sub.add_parser(
        "segment", help="segment OARs on a CT series and write an RTSTRUCT (packaged model: "
                        f"{len(PACKAGED_MODEL_OARS)} OARs)",
        description="Stratified SOARS segmentation (anchor -> mid-level -> small & hard) of a "
                    "DICOM CT series; the OARs are written as an RTSTRUCT on that CT. Needs "
                    "PyTorch; by default the packaged model, trained on OpenKBP, segments 7 OARs "
                    f"({', '.join(PACKAGED_MODEL_OARS)}); models trained with the train "
                    "command give the others of the 42 SOARS OARs.")
    g.add_argument("ct_dir", type=Path, help="folder of the CT series")
    g.add_argument("--out", required=True, type=Path, help="RTSTRUCT file to write")
    g.add_argument("--ct-series", metavar="UID",
                   help="SeriesInstanceUID of the CT series to segment when the folder holds "
                        "several")
    g.add_argument("--model", nargs="+", type=Path, metavar="MODEL.pt",
                   help="a model bundle, or the branch model files written by train "
                        "(default: $SOARS_DOSE_MODEL or the installed default model)")
    g.add_argument("--organs", nargs="+", metavar="OAR",
                   help="OARs to segment (catalogue names, or anchor / mid_level / small_hard); "
                        "default all")
    g.add_argument("--tta", action="store_true",
                   help="left-right mirror test-time augmentation (about twice the time)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    g.add_argument("--device", help="torch device for the networks, e.g. cuda (default: cpu)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_segment)

    t = sub.add_parser(
        "train", help="train one SOARS branch on a data set folder",
        description="Train one SOARS branch (optionally with architecture search) on a data set "
                    "folder (dataset.json + cases, see soars_dose.synthetic.oars42). "
                    "The run folder gets config.json, log.jsonl, checkpoint.pt (resumable) and "
                    "model.soars.pt. Runs distributed when launched by torchrun, e.g. "
                    "torchrun --nproc_per_node 2 -m soars_dose.cli.main train ...")
    t.add_argument("dataset", type=Path, help="data set folder")
    t.add_argument("--branch", required=True, choices=["anchor", "mid", "sh-detect", "sh-seg"],
                   help="the branch to train: anchor, mid-level, small-and-hard detection or "
                        "small-and-hard segmentation")
    t.add_argument("--out", required=True, type=Path, help="run folder")
    t.add_argument("--search", action="store_true",
                   help="architecture search (warm-up, alternating alpha/weight updates) before "
                        "training the derived network from scratch")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--overwrite", action="store_true", help="start afresh in a non-empty --out")
    t.add_argument("--anchor-model", type=Path,
                   help="the anchor branch's model.soars.pt (needed by mid and sh-detect)")
    t.add_argument("--preset", choices=["default", "phantom"], default="default",
                   help="default: full-size SOARS networks; phantom: small networks for the "
                        "synthetic 48x64x64 phantom on a CPU")
    t.add_argument("--config", type=Path, help="JSON file of training settings (TrainConfig fields)")
    t.add_argument("--epochs", type=_number(1, above=False, integer=True),
                   help="epochs of the final training")
    t.add_argument("--warmup-epochs", type=_number(0, above=False, integer=True),
                   help="search warm-up epochs")
    t.add_argument("--search-epochs", type=_number(0, above=False, integer=True),
                   help="alternating search epochs")
    t.add_argument("--seed", type=_number(0, above=False, integer=True),
                   help="random seed (default: the configuration's)")
    t.add_argument("--device", help="torch device, e.g. cuda or cuda:1 (default: cpu; under "
                                    "torchrun with CUDA: the GPU LOCAL_RANK)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    k = sub.add_parser(
        "tps-check", help="our DVHs beside the planning system's DVHs stored in the RTDOSE",
        description="Reads the DVHSequence of an RTDOSE (cumulative or differential; CM3, "
                    "PERCENT or VOXELS; GY, CGY or RELATIVE), computes our DVH of each "
                    "referenced ROI of the RTSTRUCT on the same dose, and tabulates volume, "
                    "mean, max, D95, D50, D2 and D0.03cc (ours, theirs, difference) with the "
                    "likely cause of each difference above tolerance: end caps, clipped, bin "
                    "width or none of these. Without --out the table goes to stdout.")
    k.add_argument("--rtdose", required=True, type=Path,
                   help="RTDOSE holding the planning system's DVHSequence")
    k.add_argument("--rtstruct", required=True, type=Path,
                   help="RTSTRUCT whose ROI numbers the DVHSequence refers to")
    k.add_argument("--out", type=Path, help="output folder for tps_check.csv/.parquet/.html "
                                            "and provenance.json (default: print the table)")
    k.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    k.add_argument("--prescription-gy", type=_number(0, unit="Gy"), help=_PRESCRIPTION_HELP)
    k.add_argument("--allow-frame-mismatch", action="store_true",
                   help="accept structures whose FrameOfReferenceUID differs from the dose's")
    k.add_argument("--nominal-spacing-mm", type=_number(0, unit="mm"),
                   help="contour spacing (CT slice thickness, mm) for our end caps (default: "
                        "the most common gap between contour planes)")
    k.add_argument("--supersample", default="auto",
                   help="in-plane supersampling factor (even integer) or 'auto' (default)")
    k.add_argument("--bin-width", type=float, default=0.01, help="our DVH bin width in Gy (0.01)")
    k.add_argument("--volume-tol-pct", type=_number(0, above=False, unit="%"), default=2.0,
                   help="volume tolerance in %% of the TPS volume (2); the larger of the two counts")
    k.add_argument("--volume-tol-cc", type=_number(0, above=False, unit="cc"), default=0.1,
                   help="volume tolerance in cc (0.1); the larger of the two counts")
    k.add_argument("--dose-tol-pct", type=_number(0, above=False, unit="%"), default=1.0,
                   help="dose tolerance in %% of our maximum dose of the ROI (1); the larger of "
                        "the two counts")
    k.add_argument("--dose-tol-gy", type=_number(0, above=False, unit="Gy"), default=0.1,
                   help="dose tolerance in Gy (0.1); the larger of the two counts")
    k.set_defaults(func=cmd_tps_check)

    n = sub.add_parser(
        "names", help="how every ROI name of an RTSTRUCT matches the OAR name table",
        description="Lists every ROI of an RTSTRUCT (ROI number, name, canonical name or "
                    "status, the rule that matched). Unmatched names get close canonical "
                    "names as suggestions only; nothing is renamed.")
    n.add_argument("rtstruct", type=Path, help="DICOM RTSTRUCT file")
    n.add_argument("--names", type=Path, help="YAML alias file extending the OAR name table")
    n.add_argument("--out", type=Path, help="CSV file to write instead of printing the table")
    n.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    n.set_defaults(func=cmd_names)

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
    where.add_argument("--jobs", type=_number(1, above=False, integer=True), default=None,
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
    h.add_argument("--prescription-gy", type=_number(0, unit="Gy"),
                   help="default (Gy, > 0) for the manifest's prescription_gy column (RELATIVE "
                        "dose)")
    h.add_argument("--allow-frame-mismatch", action="store_true",
                   help="accept structures whose FrameOfReferenceUID differs from the dose's")
    h.add_argument("--supersample", default="auto",
                   help="in-plane supersampling factor (even integer) or 'auto' (default)")
    h.add_argument("--bin-width", type=float, default=0.01, help="DVH bin width in Gy (0.01)")
    h.add_argument("--dvh-step", type=float, default=0.1,
                   help="dose step (Gy) of the written DVH table (0.1; the statistics use "
                        "the full-resolution DVH)")
    h.add_argument("--interpolation", choices=["linear", "nearest"], default="linear",
                   help="dose between voxel centres: trilinear (default) or constant per voxel")
    _add_between_planes(h)
    _add_checks(h)
    h.add_argument("--dx", type=_float_list, default=(), help="extra Dx%% values, e.g. 5,10")
    h.add_argument("--dcc", type=_float_list, default=(), help="extra Dxcc values, e.g. 0.1,1")
    h.add_argument("--vgy", type=_float_list, default=(), help="VxGy values, e.g. 20,30")
    h.set_defaults(func=cmd_cohort)
    return p


def _save_traceback(exc: BaseException, argv) -> str:
    """Write the traceback of an unexpected error to a log file; its path, or '' if impossible."""
    import datetime
    import os
    import tempfile
    import traceback

    from ..outputs import version

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        fd, path = tempfile.mkstemp(prefix=f"soars-dose-error-{stamp}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"soars-dose {version()}\ncommand: {shlex.join(map(str, argv))}\n\n")
            f.write("".join(traceback.format_exception(exc)))
        return path
    except Exception:  # a full or read-only temporary folder: say so instead
        return ""


def _os_error_message(exc: OSError) -> str:
    name = exc.filename if exc.filename is not None else ""
    target = f"{name}: " if name else ""
    advice = {errno.ENOENT: "check the path", errno.EACCES: "check its permissions",
              errno.EPERM: "check its permissions",
              errno.ENOSPC: "the disk is full; free space or choose another --out",
              errno.EROFS: "the file system is read-only; choose another --out",
              errno.EISDIR: "a folder was given where a file is needed",
              errno.ENOTDIR: "a file was given where a folder is needed"}.get(
                  exc.errno, "check the file and the disk")
    return f"{target}{exc.strerror or exc}; {advice}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    old_show = warnings.showwarning
    warnings.showwarning = show
    warnings.simplefilter("default", SoarsDoseWarning)
    try:
        with cli_interface():
            return int(args.func(args) or 0)
    except SoarsDoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written for the unfinished work", file=sys.stderr)
        return 130
    except OSError as exc:  # a file we were given or write to: bad input, not a bug
        print(f"error: {_os_error_message(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; the input is larger than this machine can hold (try "
              "a smaller --supersample, or a machine with more memory)", file=sys.stderr)
        return 2
    except Exception as exc:  # anything else is a bug in soars-dose, never a traceback
        log = _save_traceback(exc, sys.argv if argv is None else ["soars-dose", *argv])
        where = (f"the traceback was saved to {log}" if log
                 else "the traceback could not be saved (the temporary folder is not writable)")
        print(f"error: internal error in soars-dose (a bug, not your input's fault): "
              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; {where}. "
              "Please report it with that file.", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
