"""The public dose-audit API: load a case, compute DVHs, compare sets, write results.

Examples
--------
>>> from soars_dose import audit
>>> case = audit.load_case("RD.dcm", {"reference": "RS_clin.dcm", "soars": "RS_auto.dcm"})
>>> result = audit.compare(case)
>>> result.stats[["set", "roi", "mean_gy", "diff_mean_pct"]]
>>> audit.write_result(result, case, "out/", settings=audit.Settings())
"""

from __future__ import annotations

from pathlib import Path

from .case import REFERENCE, Case, case_inputs, load_case
from .dose.compare import Result, Settings, compare, dvh_all
from .names import AliasTable
from .outputs import check_writable, provenance, write_output_dir

__all__ = ["REFERENCE", "Case", "Result", "Settings", "AliasTable", "load_case", "compare",
           "dvh_all", "write_result", "check_writable"]


def write_result(result: Result, case: Case, out_dir: "str | Path", *, settings: Settings,
                 command: str = "", overwrite: bool = False, extra: dict | None = None,
                 tables: dict | None = None) -> Path:
    """Write ``stats``, ``dvh`` and ``names`` (CSV + Parquet), any extra ``tables``
    (e.g. ``contour_metrics``) and ``provenance.json``.

    The folder is written atomically and never replaces an existing one
    unless ``overwrite``.
    """
    record = provenance(
        settings.as_dict(),
        case_inputs(case),
        result.messages,
        command=command,
        patient=case.patient,
        dose_summation_type=case.dose.summation_type,
        dose_grid={"shape": case.dose.grid.shape, "spacing_mm": case.dose.grid.spacing,
                   "origin_mm": case.dose.grid.origin,
                   "direction": case.dose.grid.direction.tolist()},
        **(extra or {}),
    )
    all_tables = {"stats": result.stats, "dvh": result.dvh, "names": result.names,
                  **(tables or {})}
    return write_output_dir(out_dir, all_tables, record, overwrite=overwrite)
