"""Cohort runs: many patients from a manifest, on a local process pool or a Dask cluster.

::

    soars-dose cohort manifest.csv --out DIR [--jobs N | --scheduler tcp://host:8786]
                      [--resume] [--overwrite] [--names aliases.yaml] [dose settings...]

Manifest
--------
A CSV file (UTF-8, a byte-order mark is accepted), one row per patient,
with a header line::

    patient,rtdose,reference,set:soars,set:revised,set:reader,ct,institution
    P001,P001/RD.dcm,P001/RS_clin.dcm,P001/RS_auto.dcm,P001/RS_rev.dcm,P001/RS_reader.dcm,P001/CT,A
    P002,P002/RD.dcm,P002/RS_clin.dcm,P002/RS_auto.dcm,P002/RS_rev.dcm,,,B

Required columns

``patient``
    Identifier used in every table and as the result folder name: letters,
    digits, ``-``, ``_`` and ``.``, not starting with ``.``, at most 128
    characters, unique (also ignoring case, for case-insensitive file
    systems).
``rtdose``
    The fixed RTDOSE file. Several files separated by ``;`` (e.g. per-beam
    doses on one grid) are summed only where the row's ``sum_doses`` column
    (or ``--sum-doses``) says true; otherwise several files are an error.
``reference``
    The reference (clinical) RTSTRUCT.
``set:<name>``
    One column per substitute contour set (at least one); ``<name>`` is
    letters, digits, ``_`` or ``-`` and not ``reference``. A blank cell
    means the patient has no such set; every row needs at least one set.

Optional columns

``ct``
    Folder of the CT series (blank: none).
``sum_doses``
    ``true``/``false`` (also ``yes``/``no``/``1``/``0``; blank: the
    ``--sum-doses`` default).
``prescription_gy``
    Dose (Gy) that 1.0 stands for in a ``DoseUnits RELATIVE`` RTDOSE
    (blank: the ``--prescription-gy`` default).

Every other column (``institution``, ``site``, ``age``...) is patient
metadata, copied into the ``patients`` table. Relative paths are relative
to the manifest's folder; ``~`` is expanded. Blank lines and lines whose
first cell starts with ``#`` are skipped. The whole manifest is checked
before anything runs, and every problem is reported at once with its line
number (the header is line 1).

Output folder
-------------
::

    DIR/run.json                       settings of the run (checked on --resume)
    DIR/patients/<patient>/            stats, dvh, names, contour_metrics (CSV + Parquet),
                                       provenance.json -- written atomically as each
                                       patient finishes
    DIR/patients/<patient>/FAILED.json instead, for a patient that failed
    DIR/cohort/                        union of the per-patient tables, plus ``patients``
                                       (manifest metadata, status, seconds) and
                                       ``failures``; CSV + Parquet + provenance.json,
                                       except ``dvh``: Parquet only (its CSV is in
                                       the patient folders)

A failing patient (any exception, also an unexpected one such as a
``KeyError`` or ``MemoryError`` from deep code) is recorded with the step
it failed in (``load``, ``match``, ``dvh``, ``metrics``, ``write``), the
file being read when the traceback names one, the exception type and its
message, and the run goes on (exit status 3). An interrupted run (Ctrl-C,
SIGTERM) stops at once: queued patients are not started, patients running
in local worker processes are stopped (worker processes ignore Ctrl-C; the
main process ends them) and are lost, every finished patient is kept, and
the message lists which were kept, which were lost while running and which
were never started. On Dask, running patients cannot be stopped and may
still be written. Rerun with ``--resume`` to compute only the others (and
the ones that failed). ``--resume`` refuses a folder computed with other
settings or alias file, and recomputes a patient whose Parquet tables are
damaged.

Only one run at a time may use an output folder: ``DIR/cohort.lock``
names the holder (PID, host, start time, command). A second run on the
same folder is refused; a lock left by a dead process on this host (its
PID no longer runs) is taken over with a warning; a lock from another
host is never taken over (delete it by hand once that run is gone). The
lock is released when the run ends, fails or is interrupted.

Each patient's warnings (and one line listing its structures only partly
inside the dose grid) are re-issued in the main process as
:class:`~soars_dose.errors.SoarsDoseWarning`, prefixed with the patient id,
as that patient finishes: the command line prints them on stderr.

Execution
---------
One top-level function, :func:`run_patient`, does a patient's whole work
(load, compare, contour metrics, write) and runs unchanged in the main
process (``jobs=1``), in a local process pool (default: one process per
CPU) or on Dask distributed workers (``scheduler=``). Dask workers must see
the input files and ``DIR`` at the same paths (a shared file system).

Python
------
>>> from soars_dose.cohort import run_cohort, load_cohort
>>> res = run_cohort("manifest.csv", "out/", jobs=4)
>>> res.stats.groupby("set")["diff_mean_pct"].describe()
>>> res = load_cohort("out/")                      # later, e.g. for the report
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .case import valid_set_name
from .console import console_messages, dedupe, in_cli, option
from .errors import (
    CTSeriesChoiceError,
    InputError,
    OutputExistsError,
    OutputLockedError,
    SoarsDoseError,
    SoarsDoseWarning,
)
from .inputs import require_file
from .outputs import write_folder, write_text_file

__all__ = [
    "CohortResult", "CohortInterrupted", "ManifestRow", "PatientTask", "manifest_help",
    "read_manifest", "run_cohort", "run_patient", "load_cohort", "patient_dir",
]

#: Tables of every patient folder and of the cohort folder.
PATIENT_TABLES = ("stats", "dvh", "names", "contour_metrics")
COHORT_TABLES = PATIENT_TABLES + ("patients", "failures")
REQUIRED_COLUMNS = ("patient", "rtdose", "reference")
OPTIONAL_COLUMNS = ("ct", "ct_series", "sum_doses", "prescription_gy")
#: Columns of the ``patients`` table that metadata columns may not shadow.
RESERVED_COLUMNS = ("line", "sets", "status", "seconds", "resumed", "error", "message")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                               *(f"LPT{i}" for i in range(1, 10))})
_TRUE = {"true", "yes", "1", "y", "t"}
_FALSE = {"false", "no", "0", "n", "f"}
FAILED_FILE = "FAILED.json"
RUN_FILE = "run.json"
LOCK_FILE = "cohort.lock"
#: Steps of one patient's work, as recorded in ``FAILED.json`` and the failures table.
STEPS = ("load", "match", "dvh", "metrics", "write")


def manifest_help() -> str:
    """The manifest format, as shown by ``soars-dose cohort --help``."""
    return """\
manifest: CSV, header on line 1, one row per patient
  patient      id and result folder name: letters, digits, '-', '_', '.'
               (not starting with '.'), unique
  rtdose       RTDOSE file; several separated by ';' only with sum_doses true
  reference    reference (clinical) RTSTRUCT
  set:<name>   one column per substitute set (letters, digits, '_', '-'; not
               'reference'); blank cell = the patient has no such set
  ct           optional: CT series folder (blank = none)
  ct_series    optional: SeriesInstanceUID of the CT series to use when the
               ct folder holds several (blank = the folder's only series)
  sum_doses    optional: true/false per patient (default --sum-doses)
  prescription_gy  optional: Gy for RELATIVE dose units (default --prescription-gy)
  any other column (institution, ...) is metadata copied to the patients table
Relative paths are relative to the manifest's folder. Blank lines and lines
starting with '#' are skipped. Every problem is reported with its line number.

example:
  patient,rtdose,reference,set:soars,set:reader,ct,institution
  P001,P001/RD.dcm,P001/RS_clin.dcm,P001/RS_auto.dcm,P001/RS_reader.dcm,P001/CT,A
"""


# =================================================================== manifest
@dataclass
class ManifestRow:
    """One validated manifest row (absolute paths).

    Attributes
    ----------
    patient : str
    line : int
        CSV line number of the row (header = line 1).
    rtdose : list of str
    reference : str
    sets : dict of str -> str
        Substitute sets present for this patient, in manifest column order.
    ct : str or None
    ct_series : str or None
        SeriesInstanceUID chosen in the ``ct_series`` column (None: the CT
        folder's only series).
    sum_doses, prescription_gy : bool or None, float or None
        Per-patient values; None means "the run's default".
    metadata : dict of str -> str
    """

    patient: str
    line: int
    rtdose: list[str]
    reference: str
    sets: dict[str, str]
    ct: str | None = None
    ct_series: str | None = None
    sum_doses: bool | None = None
    prescription_gy: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def inputs(self) -> dict:
        """The inputs of the row (what a finished result must have been computed from).

        ``ct_series`` is listed only when chosen, so that results written
        before the column existed still count as computed from the same inputs.
        """
        out = {"rtdose": list(self.rtdose), "reference": self.reference,
               "sets": dict(self.sets), "ct": self.ct, "sum_doses": self.sum_doses,
               "prescription_gy": self.prescription_gy}
        if self.ct_series:
            out["ct_series"] = self.ct_series
        return out


def check_patient_id(pid: str) -> str | None:
    """Why ``pid`` is not a safe folder name, or None when it is."""
    if not pid:
        return "empty patient id"
    if not _SAFE_ID.fullmatch(pid):
        return (f"patient id {pid!r} is not safe as a folder name: use letters, digits, "
                "'-', '_' and '.', not starting with '.', at most 128 characters")
    if pid.endswith(".") or pid.split(".")[0].upper() in _WINDOWS_RESERVED:
        return (f"patient id {pid!r} is not a portable folder name (a reserved device name "
                "or a trailing '.' on Windows); rename it")
    return None


def patient_dir(out: "str | Path", patient: str) -> Path:
    """``out/patients/<patient>``, refusing any id that is not a plain, safe folder name."""
    why = check_patient_id(patient)
    if why:
        raise InputError(why)
    return Path(out) / "patients" / patient


def _resolve(base: Path, text: str) -> Path:
    p = Path(os.path.expanduser(text.strip()))
    return Path(os.path.abspath(p if p.is_absolute() else base / p))


def read_manifest(path: "str | Path", *, sum_doses: bool = False
                  ) -> tuple[list[ManifestRow], list[str]]:
    """Read and fully validate a manifest (format: :func:`manifest_help`).

    ``sum_doses`` is the default for rows whose ``sum_doses`` cell is blank.

    Returns
    -------
    rows : list of ManifestRow
    metadata_columns : list of str

    Raises
    ------
    InputError
        Listing *every* problem found, each with its line number.
    """
    path = require_file(path, "a CSV manifest file",
                        missing=f"{path}: manifest not found; check the path")
    default_sum = sum_doses
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: manifest not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the manifest as UTF-8 text ({exc})") from None
    base = path.resolve().parent
    problems: list[str] = []

    def bad(line: int, msg: str) -> None:
        problems.append(f"line {line}: {msg}")

    records: list[tuple[int, list[str]]] = []
    reader = csv.reader(text.splitlines(keepends=True))
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            records.append((line, cells))
    except csv.Error as exc:
        raise InputError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
    if not records:
        raise InputError(f"{path}: the manifest is empty; it needs a header line and one row "
                         f"per patient.\n{manifest_help()}")
    header_line, header = records[0]
    header = [h.strip() for h in header]
    seen: dict[str, int] = {}
    for i, h in enumerate(header):
        if not h:
            bad(header_line, f"column {i + 1} has no name")
        elif h in seen:
            bad(header_line, f"column {h!r} appears twice (columns {seen[h] + 1} and {i + 1})")
        else:
            seen[h] = i
    missing = [c for c in REQUIRED_COLUMNS if c not in seen]
    if missing:
        bad(header_line, f"missing required column(s) {', '.join(missing)} (found: "
                         f"{', '.join(header)}); see soars-dose cohort --help")
    set_cols: list[str] = []
    for h in header:
        if h.startswith("set:"):
            name = h[4:].strip()
            if not valid_set_name(name):
                bad(header_line, f"set column {h!r}: set names are letters, digits, '_' or '-'")
            elif name == "reference":
                bad(header_line, "set column 'set:reference': 'reference' is the reference "
                                 "column's name; use the 'reference' column")
            else:
                set_cols.append(h)
        elif h.lower() in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            bad(header_line, f"column {h!r}: column names are lower case (write {h.lower()!r})")
        elif h.lower() in RESERVED_COLUMNS:
            bad(header_line, f"metadata column {h!r} would clash with the patients table's "
                             f"own column; rename it")
    if not set_cols and not any(h.startswith("set:") for h in header):
        bad(header_line, "no 'set:<name>' column: give at least one substitute contour set")
    meta_cols = [h for h in header if h and h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS
                 and not h.startswith("set:") and h.lower() not in RESERVED_COLUMNS]
    if missing:  # nothing below can be checked
        raise InputError(f"{path}: invalid manifest:\n  " + "\n  ".join(problems))

    rows: list[ManifestRow] = []
    ids: dict[str, int] = {}
    for line, cells in records[1:]:
        if len(cells) != len(header):
            bad(line, f"{len(cells)} cells but the header has {len(header)} columns")
            continue
        cell = {h: c.strip() for h, c in zip(header, cells)}
        pid = cell["patient"]
        why = check_patient_id(pid)
        if why:
            bad(line, why)
        elif pid.lower() in ids:
            bad(line, f"patient id {pid!r} already used on line {ids[pid.lower()]} "
                      "(ids must be unique, also ignoring case)")
        else:
            ids[pid.lower()] = line
        who = f"patient {pid!r}" if pid else "row"

        def existing(col: str, value: str, *, folder: bool = False, line=line,
                     who=who) -> str | None:
            if not value:
                return None
            p = _resolve(base, value)
            if folder and not p.is_dir():
                bad(line, f"{who}: {col} {value!r} -> {p}: " +
                          ("is not a folder" if p.exists() else "folder not found"))
                return None
            if not folder and not p.is_file():
                bad(line, f"{who}: {col} {value!r} -> {p}: " +
                          ("is not a file" if p.exists() else "file not found"))
                return None
            return str(p)

        doses = [d.strip() for d in cell["rtdose"].split(";") if d.strip()]
        if not doses:
            bad(line, f"{who}: rtdose is empty")
        dose_paths = [existing("rtdose", d) for d in doses]
        row_sum: bool | None = None
        if cell.get("sum_doses"):
            v = cell["sum_doses"].lower()
            if v in _TRUE:
                row_sum = True
            elif v in _FALSE:
                row_sum = False
            else:
                bad(line, f"{who}: sum_doses {cell['sum_doses']!r} is not true/false")
        if len(doses) > 1 and not (default_sum if row_sum is None else row_sum):
            bad(line, f"{who}: {len(doses)} rtdose files given; they are added only with "
                      f"sum_doses = true in this row (or {option('sum_doses')}): give one file or "
                      "set sum_doses to true")
        rx: float | None = None
        if cell.get("prescription_gy"):
            try:
                rx = float(cell["prescription_gy"])
                if not 0 < rx < float("inf"):
                    raise ValueError
            except ValueError:
                bad(line, f"{who}: prescription_gy {cell['prescription_gy']!r} is not a "
                          "positive number")
                rx = None
        if not cell["reference"]:
            bad(line, f"{who}: reference is empty")
        ref = existing("reference", cell["reference"])
        sets = {}
        for col in set_cols:
            if cell[col]:
                sets[col[4:].strip()] = existing(col, cell[col])
        if not any(cell[c] for c in set_cols) and set_cols:
            bad(line, f"{who}: every set column is blank; give at least one substitute set")
        ct = existing("ct", cell.get("ct", ""), folder=True)
        ct_series = cell.get("ct_series", "").strip() or None
        if ct_series and not cell.get("ct", "").strip():
            bad(line, f"{who}: ct_series {ct_series} is given but ct is blank; give the CT "
                      "folder in the ct column or leave ct_series blank")
        rows.append(ManifestRow(
            patient=pid, line=line, rtdose=[p for p in dose_paths if p], reference=ref or "",
            sets={k: v for k, v in sets.items() if v}, ct=ct, ct_series=ct_series,
            sum_doses=row_sum,
            prescription_gy=rx, metadata={m: cell[m] for m in meta_cols}))
    if not rows and not problems:
        bad(header_line, "the manifest has a header but no patient rows")
    if problems:
        raise InputError(f"{path}: invalid manifest ({len(problems)} problem"
                         f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems))
    return rows, meta_cols


# ============================================================ one patient
@dataclass
class PatientTask:
    """Everything :func:`run_patient` needs; plain data, picklable for processes and Dask.

    ``aliases`` is the loaded alias table (so every worker matches names
    exactly as the main process validated them).
    """

    row: ManifestRow
    folder: str
    settings: Any
    aliases: Any = None
    aliases_file: str | None = None
    sum_doses: bool = False
    prescription_gy: float | None = None
    allow_frame_mismatch: bool = False
    command: str = ""
    manifest: str = ""


def run_patient(task: PatientTask) -> dict:
    """Audit one patient and write its folder; never raises for a bad patient.

    Loads the case, compares every set with the reference, doses and
    contours (:func:`soars_dose.audit.compare`), and writes ``stats``, ``dvh``, ``names``, ``contour_metrics`` and
    ``provenance.json`` atomically to ``task.folder``. Any exception is
    caught: ``FAILED.json`` (error type, message, traceback for unexpected
    errors) is written atomically instead.

    Returns
    -------
    dict
        ``patient, status ("ok" | "failed"), seconds, error, message,
        traceback``.
    """
    from . import audit
    from .outputs import case_provenance, write_output_dir

    row = task.row
    t0 = time.perf_counter()
    rec = {"patient": row.patient, "status": "ok", "seconds": 0.0, "step": "", "file": "",
           "error": "", "message": "", "traceback": "", "warnings": []}
    step = "load"
    caught: list = []

    def at(name: str) -> None:
        nonlocal step
        step = name

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SoarsDoseWarning)
            sum_doses = task.sum_doses if row.sum_doses is None else row.sum_doses
            rx = task.prescription_gy if row.prescription_gy is None else row.prescription_gy
            try:
                case = audit.load_case(
                    row.rtdose, {audit.REFERENCE: row.reference, **row.sets}, ct=row.ct,
                    ct_series=row.ct_series, patient=row.patient, sum_doses=sum_doses,
                    prescription_gy=rx, allow_frame_mismatch=task.allow_frame_mismatch)
            except CTSeriesChoiceError as exc:  # in a cohort the choice is a manifest cell
                raise exc.with_choice(f"the ct_series column of the manifest (line {row.line})"
                                      ) from None
            # the near-zero threshold of eq 6/7 follows this patient's prescription
            settings = (dataclasses.replace(task.settings, prescription_gy=rx)
                        if rx is not None else task.settings)
            result = audit.compare(case, settings, task.aliases, on_step=at)
        step = "write"
        messages = list(result.messages) + [str(w.message) for w in caught
                                            if issubclass(w.category, SoarsDoseWarning)]
        rec["warnings"] = console_messages(messages, result.stats)
        names = result.names.copy()
        if "patient" not in names.columns:
            names.insert(0, "patient", row.patient)
        seconds = round(time.perf_counter() - t0, 3)
        record = case_provenance(
            case, result.settings.as_dict(), list(dict.fromkeys(messages)),
            command=task.command, alias_file=task.aliases_file,
            load_options={"sum_doses": sum_doses, "prescription_gy": rx,
                          "allow_frame_mismatch": task.allow_frame_mismatch},
            cohort={"manifest": task.manifest, "line": row.line, "inputs": row.inputs(),
                    "metadata": row.metadata},
            seconds=seconds,
        )
        tables = {"stats": result.stats, "dvh": result.dvh, "names": names,
                  "contour_metrics": result.contour_metrics}
        write_output_dir(task.folder, tables, record, overwrite=True)
        rec["seconds"] = seconds
        return rec
    except Exception as exc:  # one bad patient never stops the cohort
        where = _file_of(exc, row) or (task.folder if step == "write" else "")
        rec.update(status="failed", step=step, file=where, error=type(exc).__name__,
                   message=str(exc) or repr(exc), seconds=round(time.perf_counter() - t0, 3))
        if not rec["warnings"]:
            rec["warnings"] = dedupe(str(w.message) for w in caught
                                     if issubclass(w.category, SoarsDoseWarning))
        if not isinstance(exc, SoarsDoseError):
            rec["traceback"] = traceback.format_exc()
        _write_failure(task, rec)
        return rec


def _file_of(exc: BaseException, row: ManifestRow) -> str:
    """The input file ``exc`` arose while reading: named in its message, its ``filename``,
    or held by the innermost frame of its traceback that holds one of the row's inputs."""
    singles = [*row.rtdose, row.reference, *row.sets.values()]
    folders = [row.ct] if row.ct else []

    def match(value) -> str:
        if isinstance(value, (str, os.PathLike)):
            try:
                text = os.path.abspath(os.fspath(value))
            except (TypeError, ValueError):
                return ""
            if text in singles or any(text == f or text.startswith(f + os.sep) for f in folders):
                return text
        return ""

    found = match(getattr(exc, "filename", None))
    if found:
        return found
    message = str(exc)
    for cand in sorted(singles + folders, key=len, reverse=True):
        if cand and cand in message:
            return cand
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):  # innermost first: the file actually being read
        for value in list(frame.f_locals.values()):
            found = match(value)
            if found:
                return found
    return ""


def _write_failure(task: PatientTask, rec: dict) -> None:
    """Write ``FAILED.json`` as the patient's whole folder, atomically; note it if that fails."""
    from .outputs import version

    doc = {**rec, "tool": "soars-dose", "version": version(), "line": task.row.line,
           "inputs": task.row.inputs(), "manifest": task.manifest}
    try:
        write_folder(Path(task.folder), {FAILED_FILE: json.dumps(doc, indent=2, default=str)},
                     overwrite=True)
    except Exception as exc:  # pragma: no cover - disk full, permissions
        rec["message"] += f" (and {FAILED_FILE} could not be written: {exc})"


def is_complete(folder: "str | Path") -> bool:
    """A patient folder holds a finished result (``provenance.json`` and ``stats.parquet``)."""
    folder = Path(folder)
    return (folder / "provenance.json").is_file() and (folder / "stats.parquet").is_file()


# ============================================================= backends
class _SerialBackend:
    """Runs each task in this process when its future is collected (``jobs=1``)."""

    description = "in-process (jobs=1)"

    def __init__(self) -> None:
        self._queue: list[tuple[Future, Any, tuple]] = []

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        self._queue.append((fut, fn, args))
        return fut

    def as_completed(self, futures: Iterable[Future]):
        wanted = set(map(id, futures))
        for fut, fn, args in self._queue:
            if id(fut) not in wanted or not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except Exception as exc:
                fut.set_exception(exc)
            yield fut

    def cancel(self, futures) -> None:
        for f in futures:
            f.cancel()

    def started(self, fut) -> bool:
        return fut.running()

    def close(self, interrupted: bool = False) -> None:
        self._queue.clear()


class _PoolBackend:
    """A local process pool (spawned processes: safe beside threads, same on every OS)."""

    def __init__(self, jobs: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.description = f"local process pool ({jobs} processes)"
        self._before = {p.pid for p in multiprocessing.active_children()}
        self._ex = ProcessPoolExecutor(max_workers=jobs,
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_ignore_sigint)

    def submit(self, fn, *args):
        return self._ex.submit(fn, *args)

    def as_completed(self, futures):
        from concurrent.futures import as_completed

        return as_completed(futures)

    def cancel(self, futures) -> None:
        for f in futures:
            f.cancel()

    def started(self, fut) -> bool:
        return fut.running()

    def close(self, interrupted: bool = False) -> None:
        import multiprocessing

        if not interrupted:
            self._ex.shutdown(wait=True)
            return
        # Stop now: queued patients are dropped and running ones are ended, so that what
        # the interrupt message reports from the disk afterwards is final.
        self._ex.shutdown(wait=False, cancel_futures=True)
        workers = [p for p in multiprocessing.active_children() if p.pid not in self._before]
        for p in workers:
            p.terminate()
        for p in workers:
            p.join(timeout=10)


class _DaskBackend:
    """A Dask distributed cluster: an address, a ``distributed.Client`` or a cluster object."""

    def __init__(self, scheduler) -> None:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - a dependency
            raise InputError(f"{'--scheduler' if in_cli() else 'scheduler='} needs "
                             f"dask.distributed ({exc})") from None
        self._own = not isinstance(scheduler, Client)
        if self._own:
            try:
                self.client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"cannot connect to the Dask scheduler {scheduler!r} ({exc}); "
                                 "check the address and that the scheduler is running") from None
        else:
            self.client = scheduler
        self.description = f"dask distributed ({self.client.scheduler.address})"
        self._run = uuid.uuid4().hex[:8]

    def submit(self, fn, task):
        return self.client.submit(fn, task, pure=False,
                                  key=f"soars-patient-{task.row.patient}-{self._run}")

    def as_completed(self, futures):
        from distributed import as_completed

        return as_completed(futures)

    #: Tasks already running on a Dask worker cannot be stopped from here.
    running_may_finish = True

    def cancel(self, futures) -> None:
        try:
            self.client.cancel(list(futures))
        except Exception:  # pragma: no cover - a closing client
            pass

    def started(self, fut) -> bool:
        return fut.status in ("pending", "processing") and not fut.done()

    def close(self, interrupted: bool = False) -> None:
        if self._own:
            self.client.close()


def _out_option() -> str:
    return "--out" if in_cli() else "output folder"


def _ignore_sigint() -> None:
    """Pool workers ignore Ctrl-C: the main process alone decides what stops (see close)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_jobs() -> int:
    """Number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


# ============================================================== results
@dataclass
class CohortResult:
    """Tables of a cohort run (see the module documentation).

    Attributes
    ----------
    out : Path
        The output folder.
    stats, dvh, names, contour_metrics : DataFrame
        Union of the per-patient tables (manifest order).
    patients : DataFrame
        One row per manifest patient: ``patient, line``, metadata columns,
        ``sets, status ("ok" | "failed"), seconds, resumed, error``.
    failures : DataFrame
        ``patient, line, step`` (one of :data:`STEPS`), ``file`` (the input being read,
        when known), ``error`` (exception type), ``message, traceback``.
    provenance : dict
    """

    out: Path
    stats: pd.DataFrame
    dvh: pd.DataFrame
    names: pd.DataFrame
    contour_metrics: pd.DataFrame
    patients: pd.DataFrame
    failures: pd.DataFrame
    provenance: dict = field(default_factory=dict)

    @property
    def n_ok(self) -> int:
        return int((self.patients["status"] == "ok").sum()) if len(self.patients) else 0

    @property
    def n_failed(self) -> int:
        return int((self.patients["status"] != "ok").sum()) if len(self.patients) else 0

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in COHORT_TABLES}


class CohortInterrupted(KeyboardInterrupt):
    """The run was interrupted; finished patients are on disk. ``str()`` says how to resume."""


FAILURE_COLUMNS = ["patient", "line", "step", "file", "error", "message", "traceback"]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and len(f.columns)]
    if not frames:
        return pd.DataFrame()
    nonempty = [f for f in frames if len(f)]
    return pd.concat(nonempty or frames[:1], ignore_index=True)


def _sha256(path: "str | Path | None") -> str | None:
    if path is None:
        return None
    from .outputs import sha256

    return sha256(path)


def _contains(folder: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def run_cohort(
    manifest: "str | Path",
    out: "str | Path",
    *,
    jobs: int | None = None,
    scheduler: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    settings=None,
    aliases_file: "str | Path | None" = None,
    progress: bool = True,
    sum_doses: bool = False,
    prescription_gy: float | None = None,
    allow_frame_mismatch: bool = False,
    command: str | None = None,
) -> CohortResult:
    """Audit every patient of ``manifest`` and write per-patient and cohort tables under ``out``.

    Parameters
    ----------
    manifest : path
        CSV manifest (format: module documentation, :func:`manifest_help`).
    out : path
        Output folder; must not exist unless ``resume`` or ``overwrite``.
    jobs : int, optional
        Local processes (default: the CPUs available; 1 runs in this
        process, for debugging). Ignored when ``scheduler`` is given.
    scheduler : str or distributed.Client or cluster, optional
        Run on Dask distributed (address such as ``tcp://host:8786``, a
        client, or e.g. a ``LocalCluster``); workers must see the inputs
        and ``out`` at the same paths.
    resume : bool
        Keep finished patients of an earlier run in ``out`` (same settings
        and alias file required) and compute only the others.
    overwrite : bool
        Replace an existing ``out``.
    settings : soars_dose.audit.Settings, optional
    aliases_file : path, optional
        YAML alias file extending the OAR name table.
    progress : bool
        tqdm progress bar on stderr.
    sum_doses, prescription_gy, allow_frame_mismatch
        Loading defaults (a manifest's ``sum_doses``/``prescription_gy``
        columns override the first two per patient).
    command : str, optional
        Recorded in the provenance.

    Returns
    -------
    CohortResult

    Raises
    ------
    InputError
        Invalid manifest (every problem with its line), alias file or options.
    OutputExistsError
        ``out`` exists and neither ``resume`` nor ``overwrite``.
    CohortInterrupted
        Ctrl-C or SIGTERM; finished patients are kept, the message says how to resume.
    """
    from .dose.compare import Settings
    from .names import AliasTable
    from .outputs import version

    t0 = time.perf_counter()
    manifest = Path(manifest)
    out = Path(os.path.abspath(os.path.expanduser(str(out))))
    settings = settings or Settings()
    if resume and overwrite:
        raise InputError(f"{option('resume')} keeps the finished patients of an earlier run "
                         f"and {option('overwrite')} replaces them: give one of the two")
    if jobs is not None and jobs < 1:
        raise InputError(f"{'--jobs' if in_cli() else 'jobs'} must be >= 1, got {jobs}")

    # ---- validate everything before running anything
    problems: list[str] = []
    try:
        rows, meta_cols = read_manifest(manifest, sum_doses=sum_doses)
    except InputError as exc:
        problems.append(str(exc))
        rows, meta_cols = [], []
    aliases = None
    try:
        aliases = AliasTable.load(aliases_file)
    except InputError as exc:
        problems.append(str(exc))
    if problems:
        raise InputError("\n".join(problems))
    inputs = {manifest.resolve()} | {Path(p) for r in rows for p in
                                     r.rtdose + [r.reference, *r.sets.values()] + ([r.ct] if r.ct else [])}
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another "
                                f"{_out_option()}")
    if out.exists() and (resume or overwrite):
        inside = sorted(str(p) for p in inputs if _contains(out, p))
        if inside and overwrite:
            raise InputError(f"{out}: {option('overwrite')} would delete input files inside it "
                             f"(e.g. {inside[0]}); choose another {_out_option()}")
    aliases_file = str(Path(aliases_file).resolve()) if aliases_file else None
    run_doc = {"tool": "soars-dose", "version": version(), "settings": settings.as_dict(),
               "alias_file": aliases_file, "alias_sha256": _sha256(aliases_file),
               "load_options": {"sum_doses": sum_doses, "prescription_gy": prescription_gy,
                                "allow_frame_mismatch": allow_frame_mismatch}}
    run_file = out / RUN_FILE
    if out.exists() and not resume and not overwrite:
        raise OutputExistsError(f"{out}: already exists; pass {option('resume')} to continue "
                                f"that run, {option('overwrite')} to replace it, or choose "
                                f"another {_out_option()}")
    if resume and out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        if not run_file.is_file():
            raise InputError(f"{out}: not a cohort output folder (no {RUN_FILE}); choose "
                             f"another {_out_option()} or use {option('overwrite')}")
        try:
            before = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{run_file}: unreadable ({exc}); use {option('overwrite')} "
                             "to recompute everything") from None
        if isinstance(before.get("settings"), dict):
            # a folder written before a setting existed was computed with its default
            before["settings"] = {**type(settings)().as_dict(), **before["settings"]}
        diff = [k for k in ("settings", "alias_sha256", "load_options")
                if json.loads(json.dumps(before.get(k), default=str)) !=
                json.loads(json.dumps(run_doc[k], default=str))]
        if diff:
            raise InputError(
                f"{out}: the finished patients there were computed with other "
                f"{' and '.join(d.replace('_sha256', ' file').replace('_', ' ') for d in diff)} "
                f"(earlier: {json.dumps({d: before.get(d) for d in diff}, default=str)}; now: "
                f"{json.dumps({d: run_doc[d] for d in diff}, default=str)}); rerun with "
                f"{option('resume')} and the same options, or use {option('overwrite')} to "
                "recompute everything")

    command = command if command is not None else f"soars_dose.cohort.run_cohort({str(manifest)!r})"
    lock: Path | None = None
    try:
        if out.exists():  # a second run on this folder stops here, before reading it
            lock = acquire_lock(out, command)
        return _run_locked(out, manifest, rows, meta_cols, aliases, aliases_file, settings,
                           run_doc, run_file, resume, overwrite, jobs, scheduler, progress,
                           sum_doses, prescription_gy, allow_frame_mismatch, command, t0, lock)
    finally:
        if lock is not None:
            release_lock(lock)


def _run_locked(out, manifest, rows, meta_cols, aliases, aliases_file, settings, run_doc,
                run_file, resume, overwrite, jobs, scheduler, progress, sum_doses,
                prescription_gy, allow_frame_mismatch, command, t0, lock) -> CohortResult:
    """The part of :func:`run_cohort` that reads and writes ``out`` (the lock is held or taken)."""
    from tqdm import tqdm

    from .outputs import write_error

    # ---- what to run
    todo: list[ManifestRow] = []
    resumed: dict[str, dict] = {}
    notes: list[str] = []
    if resume and out.exists():
        for r in rows:
            folder = patient_dir(out, r.patient)
            if is_complete(folder):
                try:
                    prov = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    prov = {}
                damaged = _damaged_tables(folder)
                if damaged:
                    notes.append(f"patient {r.patient!r}: recomputed ({damaged} is damaged)")
                elif prov.get("cohort", {}).get("inputs") == r.inputs():
                    resumed[r.patient] = prov
                    continue
                else:
                    notes.append(f"patient {r.patient!r}: recomputed (its inputs in the manifest "
                                 "changed since it was computed)")
            todo.append(r)
    else:
        todo = list(rows)

    if scheduler is not None:
        backend: Any = _DaskBackend(scheduler)
    else:
        n = min(jobs or default_jobs(), max(len(todo), 1))
        backend = _SerialBackend() if n == 1 else _PoolBackend(n)

    # ---- prepare the folder (nothing touched before this point)
    try:
        if out.exists() and overwrite:
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)  # the lock (if any) goes with the old folder
            shutil.rmtree(old, ignore_errors=True)
            lock = None
        (out / "patients").mkdir(parents=True, exist_ok=True)
        if lock is None:
            lock = acquire_lock(out, command)
        shutil.rmtree(out / "cohort", ignore_errors=True)  # rebuilt from patients/ at the end
        for stale in (out / "patients").glob(".*.tmp-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        write_text_file(run_file, json.dumps({**run_doc, "manifest": str(manifest.resolve())},
                                          indent=2, default=str))
    except OSError as exc:
        backend.close(interrupted=True)
        raise write_error(exc, out, "prepare") from exc
    except BaseException:
        backend.close(interrupted=True)
        raise
    try:
        return _run_tasks(out, manifest, rows, todo, resumed, meta_cols, notes, aliases,
                          aliases_file, settings, run_doc, backend, progress, sum_doses,
                          prescription_gy, allow_frame_mismatch, command, t0, tqdm)
    finally:
        if lock is not None:
            release_lock(lock)


def _run_tasks(out, manifest, rows, todo, resumed, meta_cols, notes, aliases, aliases_file,
               settings, run_doc, backend, progress, sum_doses, prescription_gy,
               allow_frame_mismatch, command, t0, tqdm) -> CohortResult:
    tasks = {r.patient: PatientTask(
        row=r, folder=str(patient_dir(out, r.patient)), settings=settings, aliases=aliases,
        aliases_file=aliases_file, sum_doses=sum_doses, prescription_gy=prescription_gy,
        allow_frame_mismatch=allow_frame_mismatch, command=command,
        manifest=str(manifest.resolve())) for r in todo}
    records: dict[str, dict] = {}
    running: list[str] = []
    bar = tqdm(total=len(rows), initial=len(resumed), desc="patients", unit="patient",
               disable=not progress, file=sys.stderr)
    restore = _install_sigterm()
    try:
        _collect(backend, tasks, records, bar, running)
        return _finish(out, rows, records, resumed, meta_cols, notes, settings, manifest,
                       aliases_file, run_doc, command, backend.description, t0, progress)
    except KeyboardInterrupt as exc:
        for stale in (out / "patients").glob(".*.tmp-*"):  # a stopped worker's unfinished folder
            shutil.rmtree(stale, ignore_errors=True)
        raise CohortInterrupted(interrupt_message(
            out, manifest, rows, tasks, running, signal_text=str(exc.args[0]) if exc.args else "",
            may_finish=getattr(backend, "running_may_finish", False))) from None
    finally:
        restore()


def interrupt_message(out: Path, manifest: Path, rows: list[ManifestRow], tasks: dict,
                      running: list[str], *, signal_text: str = "",
                      may_finish: bool = False) -> str:
    """What an interrupted run kept and lost, read from the disk after the workers stopped.

    ``running``: patients whose work had started and not finished when the
    interrupt came; ``may_finish``: those may still be written (Dask).
    """
    kept = [r.patient for r in rows if is_complete(patient_dir(out, r.patient))]
    failed = [r.patient for r in rows if r.patient not in kept
              and (patient_dir(out, r.patient) / FAILED_FILE).is_file()]
    lost = [p for p in running if p not in kept and p not in failed]
    not_started = [p for p in tasks if p not in kept and p not in failed and p not in lost]

    def names(ids: list[str]) -> str:
        return ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")

    how = signal_text.replace("signal 15", "SIGTERM") if signal_text else "Ctrl-C"
    parts = [f"interrupted ({how}): {len(kept)} of {len(rows)} patients are finished and kept "
             f"in {out / 'patients'}" + (f" ({names(kept)})" if kept else "")]
    if failed:
        parts.append(f"{len(failed)} finished with an error and are recomputed on resume "
                     f"({names(failed)})")
    if lost:
        parts.append(f"{len(lost)} were running and " +
                     ("may still finish on the Dask workers (kept if they do)" if may_finish
                      else "were stopped; their work is lost") + f" ({names(lost)})")
    if not_started:
        parts.append(f"{len(not_started)} were not started ({names(not_started)})")
    parts.append("the cohort tables were not written")
    if in_cli():
        resume = (f"Resume with: soars-dose cohort {manifest} --out {out} --resume "
                  "(and the same options)")
    else:
        resume = f"Resume with run_cohort({str(manifest)!r}, {str(out)!r}, resume=True) " \
                 "and the same options"
    return "; ".join(parts) + ". " + resume


def acquire_lock(out: Path, command: str = "") -> Path:
    """Take ``out/cohort.lock`` for this process, or refuse when a live run holds it.

    A lock whose PID no longer runs on this host is stale: it is taken over
    with a warning. Returns the lock path (give it to :func:`release_lock`).

    Raises
    ------
    OutputLockedError
        Another live run (or a run on another host, or an unreadable lock) holds it.
    """
    import socket
    from datetime import datetime, timezone

    from .errors import warn

    path = out / LOCK_FILE
    doc = {"pid": os.getpid(), "host": socket.gethostname(),
           "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": command, "token": uuid.uuid4().hex}
    for _ in range(3):
        if _create_exclusive(path, json.dumps(doc, indent=2)):
            return path
        holder = _read_lock(path)
        if holder is None:
            if not path.exists():
                continue  # released meanwhile
            raise OutputLockedError(
                f"{path}: a lock file that cannot be read holds this output folder; if no other "
                f"soars-dose cohort run uses {out}, delete {path} and rerun")
        who = (f"PID {holder.get('pid')} on host {holder.get('host')!r}, started "
               f"{holder.get('started_utc')}, command: {holder.get('command') or '?'}")
        if holder.get("host") == doc["host"] and not _pid_alive(holder.get("pid")):
            warn(f"{path}: taking over a stale lock ({who}): that process no longer runs")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        where = ("" if holder.get("host") == doc["host"] else
                 " (on another host, so its liveness cannot be checked from here)")
        raise OutputLockedError(
            f"{out}: another soars-dose cohort run is using this output folder ({who}){where}; "
            f"wait for it to finish or choose another {_out_option()}; if that run "
            f"is gone, delete {path}")
    raise OutputLockedError(f"{path}: could not take the lock (another run keeps taking it); "
                            "retry when the other run has finished")


def release_lock(path: Path) -> None:
    """Remove the lock at ``path`` if this process still holds it."""
    holder = _read_lock(path)
    if holder is not None and holder.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; never shows a half-written lock."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)  # atomic, and fails when the lock exists
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
            return True
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_lock(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _pid_alive(pid) -> bool:
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return True
    return True


def _damaged_tables(folder: Path) -> str:
    """The first of a patient folder's Parquet tables whose footer cannot be read, or ''."""
    import pyarrow.parquet as pq

    for t in PATIENT_TABLES:
        p = folder / f"{t}.parquet"
        if p.is_file():
            try:
                pq.read_metadata(p)
            except Exception:
                return str(p)
    return ""


def _collect(backend, tasks: dict, records: dict, bar, running: list | None = None) -> None:
    """Submit every task and record each result as it completes (one path for every backend).

    Each patient's warnings are re-issued here, prefixed by its id, as it
    finishes. On an interrupt, ``running`` receives the patients whose work
    had started and not finished.
    """
    futures: dict[Any, str] = {}
    interrupted = False
    try:
        for pid, task in tasks.items():
            futures[backend.submit(run_patient, task)] = pid
        for fut in backend.as_completed(list(futures)):
            pid = futures[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # the worker itself died (killed, unpicklable, ...)
                rec = {"patient": pid, "status": "failed", "seconds": float("nan"),
                       "step": "", "file": "", "error": type(exc).__name__,
                       "message": f"the worker running this patient failed: {exc}",
                       "traceback": "".join(traceback.format_exception(exc)), "warnings": []}
                _write_failure(tasks[pid], rec)
            records[pid] = rec
            for message in rec.get("warnings", ()):
                warnings.warn(f"{pid}: {message}", SoarsDoseWarning, stacklevel=2)
            n_failed = sum(r["status"] != "ok" for r in records.values())
            bar.set_postfix_str(f"{pid} {rec['status']}" + (f", {n_failed} failed" if n_failed else ""),
                                refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        if running is not None:
            running.extend(pid for f, pid in futures.items()
                           if pid not in records and backend.started(f))
        backend.cancel([f for f, pid in futures.items() if pid not in records])
        raise
    finally:
        bar.close()
        backend.close(interrupted=interrupted)


def _finish(out, rows, records, resumed, meta_cols, notes, settings, manifest, aliases_file,
            run_doc, command, backend_description, t0, progress) -> CohortResult:
    """Build the cohort tables from the patient folders and write ``out/cohort`` atomically."""
    from .outputs import provenance, read_table, write_output_dir

    frames: dict[str, list[pd.DataFrame]] = {t: [] for t in PATIENT_TABLES}
    patient_rows, failures = [], []
    for r in rows:
        folder = patient_dir(out, r.patient)
        rec = records.get(r.patient)
        prow = {"patient": r.patient, "line": r.line, **r.metadata,
                "sets": ",".join(r.sets), "status": "ok", "seconds": float("nan"),
                "resumed": r.patient in resumed, "error": ""}
        if r.patient in resumed:
            prow["seconds"] = resumed[r.patient].get("seconds", float("nan"))
        elif rec is not None:
            prow.update(status=rec["status"], seconds=rec["seconds"], error=rec["error"])
            if rec["status"] != "ok":
                failures.append({"patient": r.patient, "line": r.line,
                                 "step": rec.get("step", ""), "file": rec.get("file", ""),
                                 "error": rec["error"], "message": rec["message"],
                                 "traceback": rec["traceback"]})
        if prow["status"] == "ok":
            for t in PATIENT_TABLES:
                p = folder / f"{t}.parquet"
                if p.is_file():
                    frames[t].append(read_table(p, advice=(
                        f"Delete {folder} and rerun with {option('resume')} to recompute "
                        "this patient")))
        patient_rows.append(prow)
    tables = {t: _concat(frames[t]) for t in PATIENT_TABLES}
    tables["patients"] = pd.DataFrame(patient_rows)
    tables["failures"] = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    elapsed = round(time.perf_counter() - t0, 2)
    n_ok = int((tables["patients"]["status"] == "ok").sum())
    record = provenance(
        settings.as_dict(),
        [{"role": "manifest", "path": str(manifest.resolve()), "sha256": _sha256(manifest)},
         *([{"role": "alias_file", "path": aliases_file, "sha256": _sha256(aliases_file)}]
           if aliases_file else [])],
        notes,
        command=command, backend=backend_description,
        load_options=run_doc["load_options"], alias_file=aliases_file,
        n_patients=len(rows), n_ok=n_ok, n_failed=len(rows) - n_ok, n_resumed=len(resumed),
        metadata_columns=meta_cols, seconds=elapsed,
    )
    # the patient folders hold every DVH as CSV already: the cohort keeps the Parquet only
    write_output_dir(out / "cohort", tables, record, overwrite=True, parquet_only=("dvh",))
    if progress:
        print(f"cohort: {n_ok} of {len(rows)} patients ok ({len(resumed)} resumed), "
              f"{len(rows) - n_ok} failed, {elapsed:.1f} s; tables in {out / 'cohort'}",
              file=sys.stderr)
        for line in failure_lines(tables["failures"]):
            print(line, file=sys.stderr)
    return CohortResult(out=out, provenance=record, **tables)


def failure_lines(failures: pd.DataFrame) -> list[str]:
    """One console line per failed patient: id, manifest line, step, file, error, message."""
    lines = []
    for _, f in failures.iterrows():
        where = (f" in step {f['step']}" if f.get("step") else "") + \
                (f" reading {f['file']}" if f.get("file") else "")
        message = str(f["message"]).splitlines()[0] if f["message"] else ""
        lines.append(f"  {f['patient']} (line {f['line']}){where}: {f['error']}: {message}")
    return lines


def _install_sigterm():
    """Turn SIGTERM into KeyboardInterrupt while a run is collecting; returns the restorer."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, old)


def load_cohort(out: "str | Path") -> CohortResult:
    """Read the tables of a finished cohort run from ``out/cohort``.

    Raises
    ------
    InputError
        ``out`` holds no finished cohort tables.
    """
    out = Path(out)
    folder = out / "cohort"
    missing = [t for t in COHORT_TABLES if not (folder / f"{t}.parquet").is_file()]
    if missing or not (folder / "provenance.json").is_file():
        raise InputError(f"{out}: no finished cohort tables in {folder} (missing: "
                         f"{', '.join(missing) or 'provenance.json'}); run the cohort, "
                         f"or rerun it with {option('resume')} to finish an interrupted run")
    from .outputs import read_table

    advice = (f"The cohort tables are rebuilt from the patient folders: rerun the cohort "
              f"with {option('resume')} into {out}")
    tables = {t: read_table(folder / f"{t}.parquet", advice=advice) for t in COHORT_TABLES}
    try:
        prov = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / 'provenance.json'}: unreadable ({exc}). {advice}") from None
    return CohortResult(out=out, provenance=prov, **tables)
