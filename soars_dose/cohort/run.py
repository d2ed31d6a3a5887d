"""Running a cohort: one audit per patient, resume, interrupts, failures, the pooled tables."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..console import console_messages, dedupe, in_cli, option
from ..errors import (
    CTSeriesChoiceError,
    InputError,
    OutputExistsError,
    SoarsDoseError,
    SoarsDoseWarning,
)
from ..outputs import write_folder, write_text_file
from .backends import DaskBackend, PoolBackend, SerialBackend, default_jobs
from .lock import acquire_lock, release_lock
from .manifest import (
    FAILED_FILE,
    LOCK_FILE,
    PATIENT_TABLES,
    RUN_FILE,
    ManifestRow,
    out_option,
    patient_dir,
    read_manifest,
)
from .results import CohortResult


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
    from .. import audit
    from ..outputs import case_provenance, write_output_dir
    from ..report.slices import slice_data_or_note, to_npz

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
                    prescription_gy=rx, allow_frame_mismatch=task.allow_frame_mismatch,
                    rtplan=row.rtplan, prescription_given_as=(
                        f"manifest prescription_gy (line {row.line})"
                        if row.prescription_gy is not None else "the run's --prescription-gy"))
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
        step = "slices"
        slices, slice_note = slice_data_or_note(case, result.stats)
        record["slice_viewer"] = slice_note or "slices.npz"
        files = {"slices.npz": to_npz(slices)} if slices is not None else {}
        step = "write"
        write_output_dir(task.folder, tables, record, overwrite=True, files=files)
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
    singles = [*row.rtdose, row.reference, *row.sets.values(), *filter(None, [row.rtplan])]
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
    from ..outputs import version

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
    from ..outputs import sha256

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
    from ..dose.compare import Settings
    from ..names import AliasTable
    from ..outputs import version

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
                                f"{out_option()}")
    if out.exists() and (resume or overwrite):
        inside = sorted(str(p) for p in inputs if _contains(out, p))
        if inside and overwrite:
            raise InputError(f"{out}: {option('overwrite')} would delete input files inside it "
                             f"(e.g. {inside[0]}); choose another {out_option()}")
    aliases_file = str(Path(aliases_file).resolve()) if aliases_file else None
    run_doc = {"tool": "soars-dose", "version": version(), "settings": settings.as_dict(),
               "alias_file": aliases_file, "alias_sha256": _sha256(aliases_file),
               "load_options": {"sum_doses": sum_doses, "prescription_gy": prescription_gy,
                                "allow_frame_mismatch": allow_frame_mismatch}}
    run_file = out / RUN_FILE
    if out.exists() and not resume and not overwrite:
        raise OutputExistsError(f"{out}: already exists; pass {option('resume')} to continue "
                                f"that run, {option('overwrite')} to replace it, or choose "
                                f"another {out_option()}")
    if resume and out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        if not run_file.is_file():
            raise InputError(f"{out}: not a cohort output folder (no {RUN_FILE}); choose "
                             f"another {out_option()} or use {option('overwrite')}")
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

    from ..outputs import write_error

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
        backend: Any = DaskBackend(scheduler)
    else:
        n = min(jobs or default_jobs(), max(len(todo), 1))
        backend = SerialBackend() if n == 1 else PoolBackend(n)

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


def _prescription_columns(folder: Path, prov: "dict | None") -> dict:
    """``prescription_gy`` (Gy or NaN) and ``prescription_source`` of a finished patient.

    Read from its ``provenance.json`` (``prescription``: given, from the
    RTPLAN, or unknown); the report's per-patient pages take their "% of
    prescription" axis from them.
    """
    if prov is None:
        try:
            prov = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            prov = {}
    rx = (prov or {}).get("prescription") or {}
    gy = rx.get("gy")
    return {"prescription_gy": float(gy) if isinstance(gy, (int, float)) else float("nan"),
            "prescription_source": rx.get("source") or ""}


def _finish(out, rows, records, resumed, meta_cols, notes, settings, manifest, aliases_file,
            run_doc, command, backend_description, t0, progress) -> CohortResult:
    """Build the cohort tables from the patient folders and write ``out/cohort`` atomically."""
    from ..outputs import provenance, read_table, write_output_dir

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
            prow.update(_prescription_columns(folder, resumed.get(r.patient)))
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
