"""Physician revision effort of automatic contours (the SOARS study's Fig. 4) and time saved.

A *revision file* is a CSV with one row per patient x OAR of an automatic
set that a physician reviewed::

    patient,roi,category,minutes
    HN001,Brainstem,none,
    HN001,Parotid_L,<1 min,0.5
    HN001,OpticChiasm,1-3,
    HN002,Cochlea_L,gt3,4.5

Columns (header names case-insensitive, any order, extra columns kept):

``patient``, ``roi``
    Required, non-empty. ``roi`` is the canonical OAR name.
``category``
    The revision time class: ``none``, ``<1 min``, ``1-3 min`` or
    ``>3 min`` (also written ``lt1``, ``<1``, ``1-3``, ``gt3``, ``>3``;
    case, spaces and a trailing ``min``/``mins``/``minutes`` are ignored).
    May be blank when ``minutes`` is given: it is then derived from it.
``minutes``
    Optional measured revision time (a number >= 0). When both are given
    they must agree: ``none`` is 0 minutes, ``<1 min`` is 0 < m < 1,
    ``1-3 min`` is 1 <= m <= 3, ``>3 min`` is m > 3.

A (patient, roi) pair — with ``set`` too when the file has a ``set``
column — appears at most once.

OAR categories follow the SOARS stratification (anchor, mid-level, small &
hard); the mapping lives in :data:`OAR_CATEGORY`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import InputError
from ..inputs import require_file
from ..oars import CATALOGUE, CATEGORIES, CATEGORY_LABELS

#: Revision classes, in order (the names used in every table).
REVISION_CATEGORIES = ("none", "<1 min", "1-3 min", ">3 min")

#: Minutes assumed for a class when no ``minutes`` were recorded: the
#: midpoint of the class; ``>3 min`` is open-ended and taken as 4 minutes.
CATEGORY_MINUTES = {"none": 0.0, "<1 min": 0.5, "1-3 min": 2.0, ">3 min": 4.0}

#: Whole-organ names filed with the branch of their parts (OpenKBP-style
#: structures that do not split left and right or the larynx's parts).
WHOLE_ORGAN_PARTS = {"Larynx": "Larynx_GSL", "OpticNrv": "OpticNrv_L",
                     "Glnd_Thyroid": "Glnd_Thyroid_L", "Bone_Mandible": "Bone_Mandible_L"}
#: OAR category of the SOARS stratification (9 anchor, 19 mid-level, 14 small &
#: hard OARs), by canonical name, from the one OAR catalogue
#: (:mod:`soars_dose.oars`); the whole-organ names of
#: :data:`WHOLE_ORGAN_PARTS` are filed with their parts. OARs not listed are
#: "other".
OAR_CATEGORY: dict[str, str] = {o.name: CATEGORY_LABELS[o.category] for o in CATALOGUE}
OAR_CATEGORY.update({whole: OAR_CATEGORY[part] for whole, part in WHOLE_ORGAN_PARTS.items()})
#: OAR categories in display order ("other" follows when present).
OAR_CATEGORIES = tuple(CATEGORY_LABELS[c] for c in CATEGORIES)
OTHER = "other"

#: Default time to contour one OAR from scratch (minutes). An assumption of
#: this package, not a value measured in the SOARS study: pass your own
#: (a number, or a dict by OAR / OAR category) to :func:`time_saved`.
DEFAULT_FROM_SCRATCH_MIN = 5.0

_SPELLINGS = {
    "none": "none",
    "<1": "<1 min", "lt1": "<1 min",
    "1-3": "1-3 min",
    ">3": ">3 min", "gt3": ">3 min",
}
_COLUMNS = ["patient", "roi", "category", "minutes", "oar_category", "line"]


def oar_category(roi: str) -> str:
    """SOARS category of a canonical OAR name (:data:`OAR_CATEGORY`), ``"other"`` if unlisted."""
    return OAR_CATEGORY.get(roi, OTHER)


def normalize_category(text: str) -> str | None:
    """Canonical revision class of a spelling (see the module docstring), None if unknown."""
    s = str(text).strip().lower().replace("\u2013", "-").replace("\u2212", "-")
    s = "".join(s.split())
    for suffix in ("minutes", "minute", "mins", "min"):
        if s.endswith(suffix) and s != suffix:
            s = s[: -len(suffix)]
            break
    return _SPELLINGS.get(s)


def _category_of_minutes(m: float) -> str:
    if m == 0:
        return "none"
    if m < 1:
        return "<1 min"
    if m <= 3:
        return "1-3 min"
    return ">3 min"


def _validate(records: list[tuple[str, dict]], source: str) -> pd.DataFrame:
    """Check and normalise rows given as (where, {column: text}); ``where`` like ``"line 3"``."""
    out, seen = [], {}
    has_set = any("set" in rec for _, rec in records)
    accepted = "none, <1 min, 1-3 min, >3 min (or lt1, 1-3, gt3)"
    for where, rec in records:
        def fail(problem: str, where: str = where) -> InputError:
            return InputError(f"{source}, {where}: {problem}")

        patient = "" if rec.get("patient") is None else str(rec.get("patient")).strip()
        roi = "" if rec.get("roi") is None else str(rec.get("roi")).strip()
        if not patient or patient.lower() == "nan":
            raise fail("empty patient")
        if not roi or roi.lower() == "nan":
            raise fail("empty roi")
        raw_min = rec.get("minutes")
        minutes = np.nan
        if raw_min is not None and str(raw_min).strip() not in ("", "nan", "NaN"):
            try:
                minutes = float(str(raw_min).strip())
            except ValueError:
                raise fail(f"minutes {str(raw_min).strip()!r} is not a number") from None
            if not math.isfinite(minutes) or minutes < 0:
                raise fail(f"minutes must be a finite number >= 0, got {minutes:g}")
        raw_cat = rec.get("category")
        raw_cat = "" if raw_cat is None or (isinstance(raw_cat, float) and np.isnan(raw_cat)) \
            else str(raw_cat).strip()
        if raw_cat:
            cat = normalize_category(raw_cat)
            if cat is None:
                raise fail(f"unknown revision category {raw_cat!r}; use {accepted}")
            if not np.isnan(minutes) and _category_of_minutes(minutes) != cat:
                raise fail(f"category {raw_cat!r} disagrees with minutes {minutes:g} "
                           f"(that is {_category_of_minutes(minutes)!r}); correct one of them")
        elif not np.isnan(minutes):
            cat = _category_of_minutes(minutes)
        else:
            raise fail(f"empty category and no minutes; give a category ({accepted})")
        key = (patient, roi, str(rec.get("set", "")).strip()) if has_set else (patient, roi)
        if key in seen:
            raise fail(f"{' / '.join(key)} is listed twice (also at {seen[key]}); keep one")
        seen[key] = where
        row = {k: v for k, v in rec.items() if k not in _COLUMNS}
        row.update(patient=patient, roi=roi, category=cat, minutes=minutes,
                   oar_category=oar_category(roi), line=where)
        out.append(row)
    df = pd.DataFrame(out)
    if df.empty:
        df = pd.DataFrame(columns=_COLUMNS)
    rest = [c for c in df.columns if c not in _COLUMNS]
    df = df[_COLUMNS + rest]
    df["category"] = pd.Categorical(df["category"], categories=list(REVISION_CATEGORIES))
    df["minutes"] = df["minutes"].astype(float)
    return df


def read_revisions(path: str | Path) -> pd.DataFrame:
    """Read and validate a revision CSV (format in the module docstring).

    Parameters
    ----------
    path : str or Path
        UTF-8 CSV (a byte-order mark, as Excel writes, is accepted) with a
        header line.

    Returns
    -------
    DataFrame
        One row per data line: ``patient, roi, category`` (one of
        :data:`REVISION_CATEGORIES`, an ordered categorical), ``minutes``
        (float, NaN when not recorded), ``oar_category``
        (:func:`oar_category`), ``line`` (``"line N"``, N counted from 1
        with the header as line 1), then any extra columns as text. Blank
        lines are skipped.

    Raises
    ------
    InputError
        The file is absent or unreadable, lacks a required column, or a line
        is malformed; the message names the file and the line.
    """
    p = require_file(path, "a CSV revision file", missing=f"{path}: revision file not found")
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{p}: the revision file is empty; it needs a header line "
                                 "'patient,roi,category[,minutes]'")
            names = [h.strip().lower() for h in header]
            dups = sorted({n for n in names if names.count(n) > 1 and n})
            if dups:
                raise InputError(f"{p}, line 1: column(s) {dups} appear more than once")
            lacking = [c for c in ("patient", "roi") if c not in names]
            if "category" not in names and "minutes" not in names:
                lacking.append("category")
            if lacking:
                raise InputError(f"{p}, line 1: missing column(s) {lacking}; the header must "
                                 f"name patient, roi, category (and optionally minutes), "
                                 f"comma-separated; found {header}")
            records = []
            for row in reader:
                where = f"line {reader.line_num}"
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(names):
                    raise InputError(f"{p}, {where}: {len(row)} fields where the header has "
                                     f"{len(names)}; check for a stray or missing comma")
                records.append((where, {n: v for n, v in zip(names, row) if n}))
    except FileNotFoundError:
        raise InputError(f"{p}: revision file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{p}: cannot read the revision file ({exc})") from None
    return _validate(records, str(p))


def revisions_table(revisions: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A validated revision table from a CSV path or a DataFrame.

    A DataFrame is validated like a file (its rows are called ``row N``,
    counted from 1) unless it already is the output of
    :func:`read_revisions`.
    """
    if isinstance(revisions, (str, Path)):
        return read_revisions(revisions)
    if not isinstance(revisions, pd.DataFrame):
        raise InputError(f"revisions must be a CSV path or a DataFrame, "
                         f"got {type(revisions).__name__}")
    if isinstance(revisions.get("category", pd.Series(dtype=object)).dtype,
                  pd.CategoricalDtype) and set(_COLUMNS) <= set(revisions.columns):
        return revisions
    cols = {c: str(c).strip().lower() for c in revisions.columns}
    df = revisions.rename(columns=cols)
    lacking = [c for c in ("patient", "roi") if c not in df.columns]
    if "category" not in df.columns and "minutes" not in df.columns:
        lacking.append("category")
    if lacking:
        raise InputError(f"revisions table lacks the column(s) {lacking}")
    recs = [(f"row {i}", r) for i, r in enumerate(df.to_dict("records"), start=1)]
    return _validate(recs, "revisions table")


def _levels(df: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(level, group, oar_category, rows): per OAR, per OAR category, then all."""
    out = []
    for roi in dict.fromkeys(df["roi"]):
        out.append(("roi", roi, oar_category(roi), df[df["roi"] == roi]))
    present = set(df["oar_category"])
    for cat in list(OAR_CATEGORIES) + [OTHER]:
        if cat in present:
            out.append(("oar_category", cat, cat, df[df["oar_category"] == cat]))
    out.append(("all", "all", "all", df))
    return out


def revision_summary(revisions: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Count and share of OAR instances in each revision class (the SOARS study's Fig. 4).

    Parameters
    ----------
    revisions : DataFrame or str or Path
        A revision CSV or table (:func:`revisions_table`).

    Returns
    -------
    DataFrame
        One row per (group, revision class), every class listed even with a
        count of 0. Groups: each OAR (``level == "roi"``, in order of
        appearance), each OAR category present (``level ==
        "oar_category"``: anchor, mid-level, small & hard, then other), and
        all instances (``level == "all"``). Columns: ``level, group,
        oar_category, revision, count, n`` (instances in the group),
        ``pct`` (``100 count / n``; the four classes of a group sum to 100).
    """
    df = revisions_table(revisions)
    rows = []
    for level, group, cat, g in _levels(df):
        n = len(g)
        counts = g["category"].value_counts()
        for rev in REVISION_CATEGORIES:
            c = int(counts.get(rev, 0))
            rows.append({"level": level, "group": group, "oar_category": cat, "revision": rev,
                         "count": c, "n": n, "pct": 100.0 * c / n if n else np.nan})
    out = pd.DataFrame(rows, columns=["level", "group", "oar_category", "revision", "count",
                                      "n", "pct"])
    out["revision"] = pd.Categorical(out["revision"], categories=list(REVISION_CATEGORIES))
    return out


def _scratch_minutes(roi: str, from_scratch_min) -> float | None:
    if isinstance(from_scratch_min, Mapping):
        for key in (roi, oar_category(roi), "default"):
            if key in from_scratch_min:
                return float(from_scratch_min[key])
        return None
    return float(from_scratch_min)


def instance_times(revisions: pd.DataFrame | str | Path,
                   from_scratch_min: float | Mapping[str, float] = DEFAULT_FROM_SCRATCH_MIN
                   ) -> pd.DataFrame:
    """Revision time and from-scratch time of every OAR instance.

    Parameters
    ----------
    revisions : DataFrame or str or Path
        A revision CSV or table (:func:`revisions_table`).
    from_scratch_min : float or mapping
        Minutes to contour one OAR from scratch. A number applies to every
        OAR. A mapping is looked up by the OAR name, then by its OAR
        category (``"anchor"``, ``"mid-level"``, ``"small & hard"``,
        ``"other"``), then by the key ``"default"``. Default
        :data:`DEFAULT_FROM_SCRATCH_MIN` (5 min, an assumption: supply
        your own times).

    Returns
    -------
    DataFrame
        The revision table plus ``revision_min`` (the recorded ``minutes``
        when given, else the class's :data:`CATEGORY_MINUTES`: 0, 0.5, 2
        or 4), ``minutes_recorded`` (bool), ``from_scratch_min`` and
        ``saved_min = from_scratch_min - revision_min`` (negative when a
        revision took longer than contouring from scratch; kept as is).

    Raises
    ------
    InputError
        A from-scratch time is negative or not finite, or the mapping has
        no time for some OARs (all of them named).
    """
    df = revisions_table(revisions).copy()
    scratch = [_scratch_minutes(r, from_scratch_min) for r in df["roi"]]
    lacking = sorted({r for r, s in zip(df["roi"], scratch) if s is None})
    if lacking:
        raise InputError(f"from_scratch_min has no time for {lacking}; add them, their OAR "
                         "category or a 'default' key")
    bad = sorted({r for r, s in zip(df["roi"], scratch) if not math.isfinite(s) or s < 0})
    if bad:
        raise InputError(f"from_scratch_min must be finite and >= 0; check {bad}")
    mid = df["category"].astype(str).map(CATEGORY_MINUTES).astype(float)
    df["minutes_recorded"] = df["minutes"].notna()
    df["revision_min"] = df["minutes"].where(df["minutes_recorded"], mid)
    df["from_scratch_min"] = np.asarray(scratch, dtype=float)
    df["saved_min"] = df["from_scratch_min"] - df["revision_min"]
    return df


def time_saved(revisions: pd.DataFrame | str | Path,
               from_scratch_min: float | Mapping[str, float] = DEFAULT_FROM_SCRATCH_MIN
               ) -> pd.DataFrame:
    """Time spent revising automatic contours against contouring from scratch.

    Parameters
    ----------
    revisions, from_scratch_min
        As in :func:`instance_times` (revision time of an instance = the
        recorded minutes, else the class midpoint 0 / 0.5 / 2 / 4 min).

    Returns
    -------
    DataFrame
        One row per group (each OAR, each OAR category present, all; as in
        :func:`revision_summary`). Columns: ``level, group, oar_category,
        n`` (instances), ``n_minutes_recorded`` (instances with measured
        minutes; the rest use midpoints), ``revision_min_total``,
        ``revision_min_mean``, ``from_scratch_min_total``,
        ``saved_min_total`` (= from-scratch total - revision total),
        ``saved_pct`` (``100 saved / from-scratch``, NaN when the
        from-scratch total is 0).
    """
    df = instance_times(revisions, from_scratch_min)
    rows = []
    for level, group, cat, g in _levels(df):
        rev, scr = float(g["revision_min"].sum()), float(g["from_scratch_min"].sum())
        rows.append({
            "level": level, "group": group, "oar_category": cat, "n": int(len(g)),
            "n_minutes_recorded": int(g["minutes_recorded"].sum()),
            "revision_min_total": rev,
            "revision_min_mean": rev / len(g) if len(g) else np.nan,
            "from_scratch_min_total": scr, "saved_min_total": scr - rev,
            "saved_pct": 100.0 * (scr - rev) / scr if scr > 0 else np.nan,
        })
    return pd.DataFrame(rows, columns=["level", "group", "oar_category", "n",
                                       "n_minutes_recorded", "revision_min_total",
                                       "revision_min_mean", "from_scratch_min_total",
                                       "saved_min_total", "saved_pct"])
