"""Atomic, non-clobbering output folders with tidy tables and a provenance JSON.

Every table soars-dose writes goes through :func:`write_output_dir`, the
one CSV writer: string cells that a spreadsheet would run as a formula
(starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) are
prefixed with ``'`` in the CSV file (OWASP's advice against CSV
injection); the Parquet twin keeps the raw value. CSV rows end in CRLF
(RFC 4180), so a cell holding a line break is quoted and reads back whole. Floating-point
columns of the CSV file are rounded to the precision a physicist reads
(:data:`CSV_DECIMALS`, chosen by column name: doses 0.001 Gy, volumes
0.001 cc, percentages 0.01, distances 0.001 mm, fractions 1e-6); the
Parquet twin keeps full precision and is what soars-dose itself reads
back. A write that fails for
a full disk, a read-only file system or missing permissions raises
:class:`~soars_dose.errors.OutputWriteError` naming the folder and the
cause, and leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import csv
import errno as _errno
import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import pandas as pd

from .console import in_cli, option
from .errors import InputError, OutputExistsError, OutputWriteError

if TYPE_CHECKING:
    from .case import Case

#: First characters that make a spreadsheet evaluate a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Operating-system errors that mean "this output cannot be written here".
_WRITE_ERRNOS = frozenset({_errno.ENOSPC, _errno.EDQUOT, _errno.EROFS, _errno.EACCES,
                           _errno.EPERM, _errno.EFBIG, _errno.EIO})


def version() -> str:
    """Installed soars-dose version."""
    try:
        return metadata.version("soars-dose")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def sha256(path: "str | Path") -> str:
    """Hex SHA-256 of a file's bytes (for provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_file(path: "str | Path", write, *, mode: "int | None" = 0o644) -> Path:
    """Write one file atomically: ``write(f)`` fills a temporary file beside it, then rename.

    The one atomic file writer of soars-dose (tables, DICOM, pages, lock
    and failure records). A reader never sees a half-written file and a
    failure leaves no temporary file behind. The parent folder is created.
    Whether an existing file may be replaced is the caller's decision.

    Parameters
    ----------
    path : path
    write : callable
        Called with the open binary file object.
    mode : int or None
        Permission bits of the file (default 0644: results are meant to be
        shared); None follows the user's umask.

    Returns
    -------
    Path
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise write_error(exc, path) from exc
        raise
    return path


def csv_safe_cell(value):
    """``value`` prefixed with ``'`` when it is a string a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose string cells cannot become spreadsheet formulas.

    Only object, string and categorical columns are touched, so negative
    numbers in numeric columns stay numbers.
    """
    out = None
    for col in df.columns:
        s = df[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype(object)
        elif not (s.dtype == object or pd.api.types.is_string_dtype(s.dtype)):
            continue
        safe = s.map(csv_safe_cell)
        if not safe.equals(df[col]):
            if out is None:
                out = df.copy()
            out[col] = safe
    return df if out is None else out


#: Decimals kept in CSV files, by column name: ``(pattern, decimals, why)``, the first
#: pattern that matches the whole name wins. Columns that match none (p-values, which
#: are meaningful far below any fixed step, and free-form numbers) are written as
#: computed. Parquet files are never rounded.
#: Column names that hold p-values ("p", "p_holm", "dice_p_vs_reader", ...).
P_VALUE_COLUMN = r"p|p_.*|.*_p|.*_p_.*"

CSV_DECIMALS: tuple[tuple[str, int, str], ...] = (
    # p-values first: "dice_p_vs_reader" must not be taken for a fraction
    (P_VALUE_COLUMN, -1, "p-value: not rounded"),
    (r".*_gy|limit|value|reference_value|ours|theirs|diff|tolerance", 3,
     "dose 0.001 Gy (limits, values and TPS differences are Gy or cc: 0.001 either way)"),
    (r".*_cc", 3, "volume 0.001 cc"),
    (r".*_mm", 3, "distance 0.001 mm"),
    (r".*pct.*", 2, "percentage 0.01"),
    (r".*_min.*", 2, "minutes 0.01"),
    (r"seconds", 3, "run time 0.001 s"),
    # a fraction 0-1 to 1e-6: coverage 1 - 1e-6 of a 1000 cc organ is 0.001 cc, the volume
    # precision; Dice, surface Dice and correlations stay finer than any difference that matters
    (r"coverage|dice|surface_dice|rho|rank_biserial|mean|sd|median.*|q1|q3|ci_.*|statistic",
     6, "fraction or mixed-unit statistic 1e-6"),
)


def is_p_value(column: str) -> bool:
    """Whether a column holds p-values (:data:`P_VALUE_COLUMN`), in CSV files and pages alike."""
    import re

    return re.fullmatch(P_VALUE_COLUMN, str(column)) is not None


def csv_decimals(column: str) -> "int | None":
    """Decimals :func:`write_output_dir` keeps for ``column`` in CSV files (None: not rounded)."""
    import re

    for pattern, decimals, _ in CSV_DECIMALS:
        if re.fullmatch(pattern, str(column)):
            return None if decimals < 0 else decimals
    return None


def csv_rounded(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with its floating-point columns rounded as :data:`CSV_DECIMALS` says.

    Only float columns are touched (integers, strings and NaN stay as they
    are); ``df`` itself is not modified.
    """
    out = None
    for col in df.columns:
        if df[col].dtype.kind != "f":
            continue
        decimals = csv_decimals(col)
        if decimals is None:
            continue
        if out is None:
            out = df.copy()
        # + 0.0 turns the -0.0 that rounding a tiny negative gives into 0.0
        out[col] = df[col].round(decimals) + 0.0
    return df if out is None else out


def write_error(exc: OSError, target: "str | Path", what: str = "write") -> OutputWriteError:
    """An :class:`OutputWriteError` naming ``target`` and the cause of ``exc``."""
    cause = exc.strerror or str(exc)
    advice = {
        _errno.ENOSPC: "free space on that disk or choose another output folder",
        _errno.EDQUOT: "your disk quota is used up; free space or choose another output folder",
        _errno.EROFS: "the file system is read-only; choose an output folder on a writable disk",
        _errno.EACCES: "you may not write there; choose another output folder or fix its "
                       "permissions",
        _errno.EPERM: "you may not write there; choose another output folder or fix its "
                      "permissions",
    }.get(exc.errno, "check the disk and the folder, or choose another output folder")
    return OutputWriteError(f"{target}: cannot {what} the output ({cause}); {advice}. "
                            "Nothing was left half-written.", path=str(target), errno=exc.errno)


def _replace_advice() -> str:
    if in_cli():
        return "choose another --out or pass --overwrite to replace it"
    return f"choose another path or pass {option('overwrite')} to replace it"


def check_parent_writable(path: "str | Path") -> None:
    """Fail early when ``path`` could not be created: its nearest existing parent is a file
    or not writable.

    Raises
    ------
    OutputWriteError
        Naming the parent and what to do.
    """
    path = Path(os.path.abspath(path))
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    where = "another --out" if in_cli() else "another output path"
    if not parent.is_dir():
        raise OutputWriteError(f"{path}: cannot write the output, {parent} is a file, not a "
                               f"folder; choose {where}", path=str(path), errno=_errno.ENOTDIR)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputWriteError(f"{path}: cannot write the output, you may not write into "
                               f"{parent}; choose {where} or fix its permissions",
                               path=str(path), errno=_errno.EACCES)


def check_writable(out_dir: "str | Path", overwrite: bool) -> Path:
    """Fail early, before any work, when the output folder ``out_dir`` cannot be written.

    Raises
    ------
    OutputExistsError
        ``out_dir`` exists and ``overwrite`` is not set, or it is a file.
    OutputWriteError
        Its parent is a file or not writable.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: is a file, expected an output folder; "
                                f"{'choose another --out' if in_cli() else 'choose another path'}"
                                " (a file is never replaced by a folder)")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: already exists; {_replace_advice()}")
    check_parent_writable(out)
    return out


def check_writable_file(path: "str | Path", overwrite: bool, what: str = "a file") -> Path:
    """Fail early, before any work, when the output file ``path`` cannot be written.

    Parameters
    ----------
    path : path
    overwrite : bool
    what : str
        What the file will be, for the message, e.g. ``"the RTSTRUCT file to write"``.

    Raises
    ------
    OutputExistsError
        ``path`` is a folder, or exists and ``overwrite`` is not set.
    OutputWriteError
        Its parent is a file or not writable.
    """
    p = Path(path)
    if p.is_dir():
        example = p / "RS.dcm" if "RTSTRUCT" in what else p / "out"
        raise OutputExistsError(f"{p}: is a folder, expected {what}; give a file name, "
                                f"e.g. {example} (a folder is never replaced by a file)")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: already exists; {_replace_advice()}")
    check_parent_writable(p)
    return p


def software_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers."""
    out = {"python": platform.python_version(), "soars-dose": version()}
    for pkg in ("numpy", "scipy", "pandas", "pydicom", "pyarrow", "dicompyler-core"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(settings: Mapping, inputs: list[dict], messages: list[str], **extra) -> dict:
    """A provenance record: version, time, platform, settings, inputs, messages."""
    return {
        "tool": "soars-dose",
        "version": version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "software": software_versions(),
        "settings": dict(settings),
        "inputs": inputs,
        "messages": list(messages),
        **extra,
    }


@contextlib.contextmanager
def _staged_folder(out: Path):
    """A hidden temporary folder beside ``out``, renamed to ``out`` when the block succeeds.

    A failure removes it and leaves the old ``out`` (if any) untouched; an
    OSError of the disk becomes :class:`OutputWriteError` naming ``out``.
    """
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        yield tmp
        # mkdtemp makes the folder private; the result follows the user's umask
        os.chmod(tmp, 0o777 & ~_umask())
        _replace_folder(tmp, out)
    except OSError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(exc, out) from exc
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_output_dir(
    out_dir: "str | Path",
    tables: Mapping[str, pd.DataFrame],
    provenance_record: Mapping,
    *,
    overwrite: bool = False,
    formats: tuple[str, ...] = ("csv", "parquet"),
    parquet_only: tuple[str, ...] = (),
    files: "Mapping[str, bytes | Callable[[], bytes]] | None" = None,
) -> Path:
    """Write tables (CSV and Parquet) and ``provenance.json`` into ``out_dir`` atomically.

    Everything is written into a hidden temporary folder beside ``out_dir``
    and renamed into place only when complete, so a crash leaves either
    the old folder or the new one, never a half-written mix.

    ``parquet_only`` names tables written without their CSV twin (the
    cohort's ``dvh``, whose CSV the patient folders already hold).
    ``files`` are more files of the folder (relative name -> bytes, or a
    function returning them, called once the tables are written), e.g. an
    HTML report that must never be seen half written.

    Raises
    ------
    OutputExistsError
        ``out_dir`` exists and ``overwrite`` is False.
    """
    out = check_writable(out_dir, overwrite)
    with _staged_folder(out) as tmp:
        for name, df in tables.items():
            if "csv" in formats and name not in parquet_only:
                # CRLF rows (RFC 4180): the csv writer then quotes any cell holding a bare
                # CR, which with LF rows would silently split the row in two when read back
                csv_safe(csv_rounded(df)).to_csv(tmp / f"{name}.csv", index=False, lineterminator="\r\n")
            if "parquet" in formats:
                df.to_parquet(tmp / f"{name}.parquet", index=False)
        with open(tmp / "provenance.json", "w", encoding="utf-8") as f:
            json.dump(provenance_record, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        for rel, content in (files or {}).items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content() if callable(content) else content)
    return out


def write_folder(out_dir: "str | Path", files: Mapping[str, "str | bytes"], *,
                 overwrite: bool = False) -> Path:
    """Replace ``out_dir`` by a folder holding exactly ``files`` (name -> text or bytes), atomically.

    Like :func:`write_output_dir` for files that are not tables (a
    patient's ``FAILED.json``): a crash leaves the old folder or the new
    one, never a mix.
    """
    out = check_writable(out_dir, overwrite)
    with _staged_folder(out) as tmp:
        for name, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    return out


def write_text_file(path: "str | Path", text: str) -> Path:
    """Write one UTF-8 text file atomically (see :func:`atomic_write_file`)."""
    data = text.encode("utf-8")
    return atomic_write_file(path, lambda f: f.write(data))


def write_csv_rows(path: "str | Path", rows) -> Path:
    """Write rows (the first the header) as one CSV file atomically, values as given.

    For input files soars-dose makes for itself (the demo's manifest and
    revision log): no rounding, no formula guard, CRLF rows as ``csv``
    writes them by default.
    """
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows(rows)
    return write_text_file(path, buf.getvalue())


def _replace_folder(new: Path, dest: Path) -> None:
    """Rename ``new`` to ``dest``; an existing ``dest`` is replaced, or kept if that fails."""
    if not dest.exists():
        os.replace(new, dest)
        return
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        # put the previous result back: a failed replace must not lose it
        with contextlib.suppress(OSError):
            os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_table(path: "str | Path", *, advice: str = "") -> pd.DataFrame:
    """Read one Parquet table written by soars-dose, refusing a damaged file by name.

    Raises
    ------
    InputError
        The file is missing, truncated, empty or not Parquet at all (e.g. a
        CSV file renamed); ``advice`` says what to do and ends the message.
    """
    path = Path(path)
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(f"{path}: not found. {advice}".strip()) from None
    except MemoryError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError...
        size = path.stat().st_size if path.exists() else 0
        raise InputError(f"{path}: not a readable Parquet table ({size} bytes; "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                         f"{advice}".strip()) from None


def case_inputs(case: "Case") -> list[dict]:
    """Provenance entries (role, path, SHA-256, UIDs) for every input file of ``case``."""
    out = []
    for path, sop in zip(case.dose.sources, case.dose.sop_instance_uids):
        out.append({"role": "rtdose", "path": str(path), "sha256": sha256(path),
                    "sop_instance_uid": sop,
                    "frame_of_reference_uid": case.dose.frame_of_reference_uid,
                    "dose_summation_type": case.dose.summation_type,
                    "dose_type": case.dose.dose_type})
    for name, s in case.sets.items():
        entry = {"role": f"rtstruct:{name}", "path": str(s.source) if s.source else None,
                 "sop_instance_uid": s.sop_instance_uid,
                 "series_instance_uid": s.series_instance_uid,
                 "study_instance_uid": s.study_instance_uid,
                 "frame_of_reference_uid": s.frame_of_reference_uid,
                 "referenced_series_uid": s.referenced_series_uid}
        if s.source:
            entry["sha256"] = sha256(s.source)
        out.append(entry)
    if case.ct is not None:
        h = hashlib.sha256()
        for p in case.ct.paths:
            h.update(sha256(p).encode())
        out.append({"role": "ct", "path": str(case.ct.paths[0].parent),
                    "series_instance_uid": case.ct.series_uid,
                    "frame_of_reference_uid": case.ct.frame_of_reference_uid,
                    "n_slices": len(case.ct.paths),
                    "sha256_of_slice_hashes": h.hexdigest()})
    plan = getattr(case, "plan", None)
    if plan is not None:
        out.append({"role": "rtplan", "path": str(plan.path), "sha256": sha256(plan.path),
                    "sop_instance_uid": plan.sop_instance_uid,
                    "frame_of_reference_uid": plan.frame_of_reference_uid})
    return out


def case_provenance(case: "Case", settings: Mapping, messages: list[str], *,
                    command: str = "", **extra) -> dict:
    """The provenance record of one case's results.

    :func:`provenance` plus the patient, the dose's summation type, its
    grid (shape, spacing and origin in mm, direction cosines as rows), the
    ``prescription`` used (``gy``, in Gy or null; ``source``: ``"given"``,
    ``"rtplan"`` or null; see :class:`~soars_dose.dicom.rtplan.Prescription`)
    and, when an RTPLAN was read, what it holds (``rtplan``: its target
    prescriptions in Gy, the fractions planned).
    """
    grid = case.dose.grid
    plan = getattr(case, "plan", None)
    rx = getattr(case, "prescription", None)
    return provenance(
        settings, case_inputs(case), messages, command=command, patient=case.patient,
        dose_summation_type=case.dose.summation_type,
        dose_grid={"shape": grid.shape, "spacing_mm": grid.spacing, "origin_mm": grid.origin,
                   "direction": grid.direction.tolist()},
        prescription=rx.as_dict() if rx is not None else None,
        rtplan=plan.as_dict() if plan is not None else None,
        **extra,
    )
