"""soars-dose: dose audit of OAR contour sets on a fixed RTDOSE grid.

The public verbs (each also reachable from its own module):

======================  ===========================================================
``load_case``           files -> a checked :class:`~soars_dose.case.Case` (:mod:`.load`)
``compare``             one case: names matched once, DVH statistics, eq 6/7
                        differences and contour metrics (:func:`.audit.compare`)
``dvh_all``             DVH statistics of every ROI as written (:mod:`.audit`)
``write_result``        what ``soars-dose compare`` writes (:mod:`.audit`)
``run_cohort``          a manifest of patients, one folder each (:mod:`.cohort`)
``load_cohort``         the tables of a finished cohort folder (:mod:`.cohort`)
``build_report``        the offline HTML cohort report (:mod:`.report.cohort`)
``segment``             a CT folder -> a SOARS RTSTRUCT (needs torch;
                        :func:`.segmentation.inference.segment_ct`)
======================  ===========================================================

The data model is :class:`~soars_dose.grid.Grid`,
:class:`~soars_dose.dosegrid.DoseGrid`,
:class:`~soars_dose.structures.StructureSet`, :class:`~soars_dose.case.Case`
and :class:`~soars_dose.dose.dvh.DVH`. Importing this package loads none of
the verbs' modules (and never torch) until a verb is used.
"""

from __future__ import annotations

import importlib

from .errors import SoarsDoseError, SoarsDoseWarning

__version__ = "0.1.0"

#: verb -> (module, attribute); imported on first use
_VERBS = {
    "load_case": ("soars_dose.load", "load_case"),
    "compare": ("soars_dose.audit", "compare"),
    "dvh_all": ("soars_dose.audit", "dvh_all"),
    "write_result": ("soars_dose.audit", "write_result"),
    "run_cohort": ("soars_dose.cohort", "run_cohort"),
    "load_cohort": ("soars_dose.cohort", "load_cohort"),
    "build_report": ("soars_dose.report.cohort", "build_report"),
    "segment": ("soars_dose.segmentation.inference", "segment_ct"),
}

__all__ = ["SoarsDoseError", "SoarsDoseWarning", "__version__", *_VERBS]


def __getattr__(name: str):
    if name in _VERBS:
        module, attr = _VERBS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'soars_dose' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_VERBS))
