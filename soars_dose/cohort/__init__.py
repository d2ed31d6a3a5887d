"""Cohort runs (:mod:`.manifest`, :mod:`.run`, :mod:`.backends`, :mod:`.lock`, :mod:`.results`): many patients from a manifest, on a local process pool or a Dask cluster.

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
    The prescription (Gy, total over all fractions; blank: the
    ``--prescription-gy`` default): the near-zero threshold of eq 6/7, the
    report's "% of prescription" axis, and the dose that 1.0 stands for in a
    ``DoseUnits RELATIVE`` RTDOSE.
``rtplan``
    An RTPLAN file (blank: none). Its target prescription (the highest
    TargetPrescriptionDose of its TARGET dose references, see
    :mod:`soars_dose.dicom.rtplan`) is the patient's prescription when
    ``prescription_gy`` and ``--prescription-gy`` are blank; a given value
    that differs from it by more than 0.5 % is warned about. Its
    FrameOfReferenceUID is checked against the dose's.

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

from .lock import acquire_lock, release_lock
from .manifest import (
    COHORT_TABLES,
    FAILED_FILE,
    LOCK_FILE,
    PATIENT_TABLES,
    RUN_FILE,
    ManifestRow,
    check_patient_id,
    manifest_help,
    patient_dir,
    read_manifest,
)
from .results import CohortResult, load_cohort
from .run import (
    CohortInterrupted,
    PatientTask,
    failure_lines,
    interrupt_message,
    is_complete,
    run_cohort,
    run_patient,
)

__all__ = [
    "CohortResult", "CohortInterrupted", "ManifestRow", "PatientTask", "manifest_help",
    "read_manifest", "run_cohort", "run_patient", "load_cohort", "patient_dir",
    "acquire_lock", "release_lock", "check_patient_id", "failure_lines", "interrupt_message", "is_complete",
    "COHORT_TABLES", "FAILED_FILE", "LOCK_FILE", "PATIENT_TABLES", "RUN_FILE",
]
