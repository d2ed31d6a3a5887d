"""The public dose-audit API: the one recipe for one case.

``soars-dose compare``, ``soars-dose cohort`` (per patient) and a Python
script all run :func:`compare`: ROI names are matched to canonical OAR
names once; every matched structure's DVH and statistics are computed on
the case's fixed dose (eq 6/7 differences to the reference); the contour
metrics of every substitute set against the reference use the same
matching. :func:`write_result` writes exactly what the command line writes.

Examples
--------
>>> from soars_dose import audit
>>> case = audit.load_case("RD.dcm", {"reference": "RS_clin.dcm", "soars": "RS_auto.dcm"})
>>> result = audit.compare(case)
>>> result.stats[["set", "roi", "mean_gy", "diff_mean_pct"]]
>>> result.contour_metrics[["set", "roi", "dice", "hd95_mm"]]
>>> audit.write_result(result, case, "out/")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from .analysis.contours import contour_metrics_for_case
from .case import REFERENCE, Case
from .dose.compare import Result, Settings
from .dose.compare import compare as dose_statistics
from .dose.compare import dvh_all as dvh_statistics
from .load import load_case
from .names import AliasTable, MatchedSets, match_sets
from .outputs import case_provenance, check_writable, write_output_dir

__all__ = ["REFERENCE", "Case", "Result", "Settings", "AliasTable", "MatchedSets", "load_case",
           "compare", "dvh_all", "write_result", "check_writable"]


def compare(case: Case, settings: Settings | None = None, aliases: AliasTable | None = None, *,
            contour_metrics: bool = True, tolerances: dict | None = None,
            on_step: Callable[[str], None] | None = None) -> Result:
    """Compare every set of ``case`` with its ``"reference"`` set: doses and contours.

    Parameters
    ----------
    case : Case
        A checked case (:func:`load_case`) whose first set is ``"reference"``.
    settings : Settings, optional
        DVH sampling and statistics; default :class:`Settings()`. Kept in
        :attr:`Result.settings`. Without a ``prescription_gy`` of its own it
        takes the case's (:attr:`Case.prescription`: given, or the RTPLAN's),
        which sets the near-zero threshold of eq 6/7.
    aliases : AliasTable, optional
        ROI name matching; default the packaged table.
    contour_metrics : bool
        Also compute Dice, Hausdorff, HD95, ASD and surface Dice of every
        substitute set against the reference (what ``soars-dose compare``
        writes); False leaves :attr:`Result.contour_metrics` None.
    tolerances : dict, optional
        Surface-Dice tolerances (mm) per OAR; default the packaged table.
    on_step : callable, optional
        Called with ``"match"``, ``"dvh"`` and ``"metrics"`` as each step
        starts (the cohort runner records the step a failure happened in).

    Returns
    -------
    Result
        ``stats``, ``dvh``, ``names``, ``contour_metrics``, ``messages``,
        ``dvhs`` and the ``settings`` used.
    """
    step = on_step or (lambda name: None)
    settings = with_case_prescription(settings or Settings(), case)
    table = aliases or AliasTable.load()
    step("match")
    matched = match_sets(case, table)  # matched once for doses and contours alike
    step("dvh")
    result = dose_statistics(case, settings, table, matched_sets=matched)
    if contour_metrics:
        step("metrics")
        result.contour_metrics = contour_metrics_for_case(case, aliases=table,
                                                          tolerances=tolerances,
                                                          matched_sets=matched)
    return result


def with_case_prescription(settings: Settings, case: Case) -> Settings:
    """``settings`` with the case's prescription (Gy) when it has none of its own."""
    if settings.prescription_gy is None and case.prescription_gy is not None:
        return dataclasses.replace(settings, prescription_gy=case.prescription_gy)
    return settings


def dvh_all(case: Case, settings: Settings | None = None) -> Result:
    """Statistics and DVHs of every ROI of every set (``soars-dose dvh``).

    :func:`soars_dose.dose.compare.dvh_all` with the case's prescription
    (Gy) in the settings when they have none (recorded in the provenance).
    """
    return dvh_statistics(case, with_case_prescription(settings or Settings(), case))


def write_result(result: Result, case: Case, out_dir: "str | Path", *, command: str = "",
                 overwrite: bool = False, extra: dict | None = None, report: bool = False,
                 prescription_gy: float | None = None, constraints=None) -> Path:
    """Write ``stats``, ``dvh``, ``names``, ``contour_metrics`` (CSV + Parquet) and ``provenance.json``.

    The provenance records ``result.settings``, the settings the numbers
    were computed with. The folder is written atomically and never replaces
    an existing one unless ``overwrite``. With ``report`` it also holds
    ``report.html``, the one-patient page (:mod:`soars_dose.report.patient`),
    written inside the folder before it is renamed into place, and, when
    the case has a CT, ``slices.npz``, the slice viewer's data
    (:mod:`soars_dose.report.slices`).

    Parameters
    ----------
    result : Result
        From :func:`compare` or :func:`dvh_all`.
    case : Case
        The case ``result`` was computed from (its inputs are hashed).
    out_dir : path
    command : str
        The command line, for the provenance.
    overwrite : bool
    extra : dict, optional
        More provenance entries.
    report : bool
        Also write ``report.html`` (what the command line does unless
        ``--no-report``).
    prescription_gy : float, optional
        Offers the page's "% of prescription" dose axis (Gy); default the
        case's prescription (:attr:`Case.prescription`: given, or the RTPLAN's).
    constraints : path or list of Constraint, optional
        Marked on the DVHs and evaluated; default the packaged table.
    """
    if prescription_gy is None:
        prescription_gy = case.prescription_gy
    record = case_provenance(case, result.settings.as_dict(), result.messages,
                             command=command, **(extra or {}))
    tables = {"stats": result.stats, "dvh": result.dvh, "names": result.names}
    if result.contour_metrics is not None:
        tables["contour_metrics"] = result.contour_metrics
    files = {}
    if report:
        from .analysis.constraints import load_constraints
        from .report.patient import render_patient_page

        cons = (constraints if isinstance(constraints, list)
                else load_constraints(constraints))
        from .report.slices import slice_data_or_note, to_npz

        slices, slice_note = slice_data_or_note(case, result.stats)
        if slices is not None:
            files["slices.npz"] = to_npz(slices)
        files["report.html"] = lambda: render_patient_page(
            result.stats, result.dvh, result.contour_metrics, patient=str(case.patient),
            constraints=cons, prescription_gy=prescription_gy, slices=slices,
            slice_note=slice_note)
    return write_output_dir(out_dir, tables, record, overwrite=overwrite, files=files)
