"""The tables of a finished cohort folder (:class:`CohortResult`, :func:`load_cohort`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..console import option
from ..errors import (
    InputError,
)
from .manifest import COHORT_TABLES


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
    from ..outputs import read_table

    advice = (f"The cohort tables are rebuilt from the patient folders: rerun the cohort "
              f"with {option('resume')} into {out}")
    tables = {t: read_table(folder / f"{t}.parquet", advice=advice) for t in COHORT_TABLES}
    try:
        prov = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / 'provenance.json'}: unreadable ({exc}). {advice}") from None
    return CohortResult(out=out, provenance=prov, **tables)
