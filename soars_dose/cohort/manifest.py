"""The cohort manifest (see :mod:`soars_dose.cohort`) and the layout of a cohort folder."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..case import valid_set_name
from ..console import in_cli, option
from ..errors import (
    InputError,
)
from ..inputs import require_file

PATIENT_TABLES = ("stats", "dvh", "names", "contour_metrics")
COHORT_TABLES = PATIENT_TABLES + ("patients", "failures")
REQUIRED_COLUMNS = ("patient", "rtdose", "reference")
OPTIONAL_COLUMNS = ("ct", "ct_series", "sum_doses", "prescription_gy", "rtplan")
#: Columns of the ``patients`` table that metadata columns may not shadow.
RESERVED_COLUMNS = ("line", "sets", "status", "seconds", "resumed", "error", "message",
                    "prescription_source")
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
  prescription_gy  optional: the prescription (Gy, total; default --prescription-gy):
               the near-zero threshold, the report's % of prescription axis and
               the Gy that 1.0 stands for in RELATIVE dose units
  rtplan       optional: RTPLAN file; its target prescription (the highest
               TargetPrescriptionDose) is used when prescription_gy is blank
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
        Per-patient values; None means "the run's default". The
        prescription is in Gy (total over all fractions).
    rtplan : str or None
        RTPLAN file giving the prescription when ``prescription_gy`` (and
        the run's default) is None.
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
    rtplan: str | None = None

    def inputs(self) -> dict:
        """The inputs of the row (what a finished result must have been computed from).

        ``ct_series`` and ``rtplan`` are listed only when given, so that
        results written before the columns existed still count as computed
        from the same inputs.
        """
        out = {"rtdose": list(self.rtdose), "reference": self.reference,
               "sets": dict(self.sets), "ct": self.ct, "sum_doses": self.sum_doses,
               "prescription_gy": self.prescription_gy}
        if self.ct_series:
            out["ct_series"] = self.ct_series
        if self.rtplan:
            out["rtplan"] = self.rtplan
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
        rtplan = existing("rtplan", cell.get("rtplan", ""))
        ct_series = cell.get("ct_series", "").strip() or None
        if ct_series and not cell.get("ct", "").strip():
            bad(line, f"{who}: ct_series {ct_series} is given but ct is blank; give the CT "
                      "folder in the ct column or leave ct_series blank")
        rows.append(ManifestRow(
            patient=pid, line=line, rtdose=[p for p in dose_paths if p], reference=ref or "",
            sets={k: v for k, v in sets.items() if v}, ct=ct, ct_series=ct_series,
            sum_doses=row_sum,
            prescription_gy=rx, metadata={m: cell[m] for m in meta_cols}, rtplan=rtplan))
    if not rows and not problems:
        bad(header_line, "the manifest has a header but no patient rows")
    if problems:
        raise InputError(f"{path}: invalid manifest ({len(problems)} problem"
                         f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems))
    return rows, meta_cols


# ============================================================ one patient


def out_option() -> str:
    return "--out" if in_cli() else "output folder"
