"""Dose constraints (published OAR tolerances) evaluated on every contour set.

The question: would a substitute contour set change a plan-evaluation
decision? Each constraint (e.g. ``Brainstem max_gy < 54``) is checked on
the same fixed dose with the reference contours and with each substitute
set; :func:`constraint_flips` lists the instances where the verdicts
differ.

The packaged table ``soars_dose/data/constraints.yaml`` documents its
schema and cites the source of every limit (QUANTEC, Emami, RTOG 0225...).
A user file has the same schema and *replaces* the packaged one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import yaml

from ..case import REFERENCE
from ..config_files import YamlReader, packaged_text, user_text
from ..errors import InputError

#: Comparison operators a constraint may use.
OPS = ("<", "<=")
#: Keys of one entry of a constraints file (all required).
ENTRY_KEYS = ("roi", "metric", "op", "limit", "source")
#: Metric names: columns of the ``stats`` table (see :meth:`soars_dose.dose.dvh.DVH.statistics`).
METRIC_RE = re.compile(r"^(mean_gy|max_gy|min_gy|d\d+(_\d+)?(cc)?_gy|v\d+(_\d+)?gy_(pct|cc))$")
_VALID_STATUS = ("ok", "partial")


@dataclass(frozen=True)
class Constraint:
    """One dose constraint: met when ``value <op> limit``.

    Attributes
    ----------
    roi : str
        Canonical OAR name.
    metric : str
        ``stats`` column (``mean_gy``, ``max_gy``, ``d0_03cc_gy``,
        ``v20gy_pct``...).
    op : {"<", "<="}
    limit : float
        Gy for ``*_gy`` metrics, % for ``*_pct``, cm³ for ``*_cc``.
    source : str
        Citation.
    """

    roi: str
    metric: str
    op: str
    limit: float
    source: str

    @property
    def unit(self) -> str:
        """``"Gy"``, ``"%"`` or ``"cc"``."""
        return {"gy": "Gy", "pct": "%", "cc": "cc"}[self.metric.rsplit("_", 1)[1]]

    @property
    def label(self) -> str:
        """Short text that identifies the constraint, e.g. ``"Brainstem max_gy < 54 Gy"``."""
        return f"{self.roi} {self.metric} {self.op} {self.limit:g} {self.unit}"

    def met(self, value: float) -> bool:
        """Whether ``value`` satisfies the constraint (``value`` not NaN)."""
        return bool(value < self.limit) if self.op == "<" else bool(value <= self.limit)


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------

def _parse(text: str, source: str) -> list[Constraint]:
    r = YamlReader(text, source)
    if r.root is None or r.is_null(r.root):
        raise InputError(f"{source}: contains no constraints; write a list of entries "
                         f"with the keys {', '.join(ENTRY_KEYS)}")
    out: list[Constraint] = []
    seen: dict[str, int] = {}
    for i, node in enumerate(r.sequence(r.root, "the constraints file"), start=1):
        what = f"entry {i}"
        fields = {k: (kn, vn) for k, kn, vn in r.mapping(node, what)}
        unknown = [k for k in fields if k not in ENTRY_KEYS]
        if unknown:
            raise r.fail(node, f"{what}: unknown key(s) {unknown}; allowed: "
                               f"{', '.join(ENTRY_KEYS)}")
        lacking = [k for k in ENTRY_KEYS if k not in fields]
        if lacking:
            raise r.fail(node, f"{what}: missing key(s) {lacking}; every entry needs "
                               f"{', '.join(ENTRY_KEYS)}")
        rnode = fields["roi"][1]
        if isinstance(rnode, yaml.SequenceNode):
            rois = [r.string(n, f"{what}: roi") for n in r.sequence(rnode, f"{what}: roi")]
            if not rois:
                raise r.fail(rnode, f"{what}: roi is an empty list")
        else:
            rois = [r.string(rnode, f"{what}: roi")]
        what = f"entry {i} ({', '.join(rois)})"
        metric = r.string(fields["metric"][1], f"{what}: metric")
        if not METRIC_RE.match(metric):
            raise r.fail(fields["metric"][1],
                         f"{what}: metric {metric!r} is not a stats column; use mean_gy, "
                         "max_gy, min_gy, d<x>_gy (e.g. d2_gy), d<x>cc_gy (e.g. d0_03cc_gy) "
                         "or v<x>gy_pct / v<x>gy_cc (e.g. v20gy_pct)")
        op = r.string(fields["op"][1], f"{what}: op")
        if op not in OPS:
            raise r.fail(fields["op"][1], f"{what}: op must be '<' or '<=', got {op!r}")
        lnode = fields["limit"][1]
        limit = r.scalar(lnode, f"{what}: limit")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) \
                or not math.isfinite(limit) or limit < 0:
            raise r.fail(lnode, f"{what}: limit must be a finite number >= 0 "
                                f"(Gy, % or cc), got {lnode.value!r}")
        src = r.string(fields["source"][1], f"{what}: source")
        for roi in rois:
            c = Constraint(roi=roi, metric=metric, op=op, limit=float(limit), source=src)
            if c.label in seen:
                raise r.fail(node, f"{what}: constraint {c.label!r} repeats entry "
                                   f"{seen[c.label]}; keep one")
            seen[c.label] = i
            out.append(c)
    return out


#: The near-maximum metric of serial-organ constraints, and the point maximum it stands for.
NEAR_MAX, POINT_MAX = "d0_03cc_gy", "max_gy"


def load_constraints(path: str | Path | None = None, *, point_max: bool = False
                     ) -> list[Constraint]:
    """Read a constraints YAML file (default: the packaged table).

    Parameters
    ----------
    path : str or Path or None
        A user file with the schema of ``soars_dose/data/constraints.yaml``
        (a list of entries with the keys ``roi`` (a name or a list of
        names), ``metric``, ``op``, ``limit``, ``source``). It *replaces*
        the packaged table. None: the packaged table.
    point_max : bool
        Evaluate every near-maximum entry (``d0_03cc_gy``, the packaged
        default for cord, brainstem, optic structures and lenses) on the
        point maximum ``max_gy`` instead (``soars-dose report --point-max``).

    Returns
    -------
    list of Constraint
        One per (roi, entry), in file order (an entry with a list of rois
        gives one constraint per roi).

    Raises
    ------
    InputError
        The file is absent, not valid YAML, empty, or an entry is malformed;
        the message names the file, the line and the entry (its number from
        1 and its rois).
    """
    if path is None:
        out = _parse(*packaged_text("constraints.yaml"))
    else:
        out = _parse(*user_text(path, "constraints file"))
    if point_max:
        out = [Constraint(c.roi, POINT_MAX, c.op, c.limit, c.source + " (on the point maximum)")
               if c.metric == NEAR_MAX else c for c in out]
    return out


def _as_constraints(constraints) -> list[Constraint]:
    if constraints is None:
        return load_constraints()
    if isinstance(constraints, pd.DataFrame):
        lacking = [k for k in ENTRY_KEYS if k not in constraints.columns]
        if lacking:
            raise InputError(f"constraints table lacks the column(s) {lacking}")
        return [Constraint(str(r.roi), str(r.metric), str(r.op), float(r.limit), str(r.source))
                for r in constraints.itertuples(index=False)]
    out = list(constraints)
    bad = [c for c in out if not isinstance(c, Constraint)]
    if bad:
        raise InputError(f"constraints must be Constraint objects (load_constraints()), "
                         f"got {type(bad[0]).__name__}")
    return out


# --------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------

#: Columns of :func:`evaluate_constraints`.
EVALUATED_COLUMNS = ["patient", "set", "roi", "roi_status", "constraint", "metric", "op",
                     "limit", "unit", "source", "value", "passed", "status"]


def evaluate_constraints(stats: pd.DataFrame,
                         constraints: Iterable[Constraint] | pd.DataFrame | None = None
                         ) -> pd.DataFrame:
    """Check every constraint on every (patient, set) row of its OAR.

    Parameters
    ----------
    stats : DataFrame
        Cohort ``stats`` table (patient, set, roi, status and the dose
        columns).
    constraints : list of Constraint, DataFrame or None
        From :func:`load_constraints` (None: the packaged table), or a table
        with the columns ``roi, metric, op, limit, source``.

    Returns
    -------
    DataFrame
        One row per (stats row, constraint of its roi), in the order of
        ``stats`` then of the constraints; OARs without a constraint, and
        constraints on OARs absent from ``stats``, give no row. Columns:

        ``patient, set, roi``; ``roi_status``: the row's ``status``;
        ``constraint``: its label (``"Brainstem max_gy < 54 Gy"``);
        ``metric, op, limit, unit, source``;
        ``value``: the metric of the row;
        ``passed``: ``value <op> limit`` (nullable boolean, NA unless
        evaluated);
        ``status``: ``"evaluated"``, ``"not_available"`` (``stats`` has no
        column for the metric, e.g. a VxGy not computed) or ``"no_value"``
        (the structure has no dose: status other than ok/partial, or a NaN
        value).
    """
    if not isinstance(stats, pd.DataFrame):
        raise InputError(f"stats must be a pandas DataFrame, got {type(stats).__name__}")
    lacking = [c for c in ("patient", "set", "roi", "status") if c not in stats.columns]
    if lacking:
        raise InputError(f"stats table lacks the column(s) {lacking}")
    dup = stats.duplicated(["patient", "set", "roi"], keep=False)
    if dup.any():
        first = stats.loc[dup, ["patient", "set", "roi"]].drop_duplicates().head(3)
        raise InputError(f"stats table has rows sharing a (patient, set, roi), e.g. "
                         f"{first.to_dict('records')}; keep one row per patient x set x roi")
    by_roi: dict[str, list[Constraint]] = {}
    for c in _as_constraints(constraints):
        by_roi.setdefault(c.roi, []).append(c)
    rows = []
    for rec in stats.to_dict("records"):
        for c in by_roi.get(rec["roi"], []):
            row = {"patient": rec["patient"], "set": rec["set"], "roi": rec["roi"],
                   "roi_status": rec["status"], "constraint": c.label, "metric": c.metric,
                   "op": c.op, "limit": c.limit, "unit": c.unit, "source": c.source,
                   "value": np.nan, "passed": pd.NA}
            if c.metric not in stats.columns:
                row["status"] = "not_available"
            else:
                v = pd.to_numeric(pd.Series([rec[c.metric]]), errors="coerce").iloc[0]
                if rec["status"] not in _VALID_STATUS or pd.isna(v):
                    row["status"] = "no_value"
                else:
                    row.update(value=float(v), passed=c.met(float(v)), status="evaluated")
            rows.append(row)
    out = pd.DataFrame(rows, columns=EVALUATED_COLUMNS)
    out["passed"] = out["passed"].astype("boolean")
    return out


def constraint_flips(evaluated: pd.DataFrame) -> pd.DataFrame:
    """Instances where a substitute set's verdict differs from the reference's.

    Parameters
    ----------
    evaluated : DataFrame
        Output of :func:`evaluate_constraints` (reference and substitute
        sets).

    Returns
    -------
    DataFrame
        One row per (patient, substitute set, roi, constraint) evaluated in
        both the reference and the set with different ``passed``, in the
        order of ``evaluated``. Columns: ``patient, set, roi, constraint,
        metric, op, limit, unit, source``; ``reference_value``, ``value``:
        the metric with the reference and with the substitute contours;
        ``reference_passed``, ``passed``; ``direction``: ``"pass->fail"``
        (met with the reference contours, failed with the substitute) or
        ``"fail->pass"``. Rows not evaluated on either side are never flips.
    """
    cols = ["patient", "set", "roi", "constraint", "metric", "op", "limit", "unit", "source",
            "reference_value", "value", "reference_passed", "passed", "direction"]
    need = ["patient", "set", "roi", "constraint", "value", "passed", "status"]
    lacking = [c for c in need if c not in evaluated.columns]
    if lacking:
        raise InputError(f"evaluated table lacks the column(s) {lacking}; "
                         "pass the output of evaluate_constraints")
    ev = evaluated[evaluated["status"] == "evaluated"]
    key = ["patient", "roi", "constraint"]
    ref = ev[ev["set"] == REFERENCE][key + ["value", "passed"]].rename(
        columns={"value": "reference_value", "passed": "reference_passed"})
    sub = ev[ev["set"] != REFERENCE]
    m = sub.merge(ref, on=key, how="inner", sort=False)
    m = m[m["passed"].astype(bool) != m["reference_passed"].astype(bool)].copy()
    m["direction"] = np.where(m["reference_passed"].astype(bool), "pass->fail", "fail->pass")
    for c in cols:
        if c not in m.columns:
            m[c] = np.nan
    out = m[cols].reset_index(drop=True)
    out["passed"] = out["passed"].astype("boolean")
    out["reference_passed"] = out["reference_passed"].astype("boolean")
    return out
