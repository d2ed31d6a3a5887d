"""Per-structure statistics of contour sets on one fixed dose, and eq 6/7 differences.

    Diff_mean = (mean(OAR_sub, Dose) - mean(OAR_ref, Dose)) / mean(OAR_ref, Dose) x 100 %   (eq 6)
    Diff_max  = (max(OAR_sub, Dose)  - max(OAR_ref, Dose))  / max(OAR_ref, Dose)  x 100 %   (eq 7)

``mean`` is the volume-weighted mean dose and ``max`` the highest dose at
a sub-voxel sample point of the structure (see :mod:`soars_dose.dose.dvh`).
Where the reference value is below ``near_zero_gy`` the percentage is left
empty and flagged; the absolute differences (Gy) are always given.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..between_planes import check_mode as check_between_planes
from ..between_planes import prepare as prepare_between_planes
from ..case import REFERENCE, Case
from ..errors import SoarsDoseError, SoarsDoseWarning
from ..names import AliasTable, match_names
from ..rasterize import nominal_spacing_mm
from .compute import compute_dvh
from .dvh import BIN_WIDTH_GY, DVH

#: Columns every ``stats`` table starts with.
STAT_COLUMNS = [
    "patient", "set", "roi", "roi_original", "status", "volume_cc", "volume_in_grid_cc",
    "coverage", "mean_gy", "min_gy", "max_gy", "d0_03cc_gy", "d2_gy", "d50_gy", "d95_gy",
    "d98_gy", "between_planes",
]
DIFF_COLUMNS = ["diff_mean_pct", "diff_max_pct", "diff_mean_gy", "diff_max_gy", "diff_flag"]


@dataclass
class Settings:
    """Computation settings (all recorded in the provenance).

    Attributes
    ----------
    factor : int or "auto"
        In-plane supersampling factor.
    bin_width_gy : float
        DVH bin width (Gy).
    d_pct, d_cc, v_gy : tuples of float
        Extra Dx%, Dxcc and VxGy to report (D2/50/95/98 % and D0.03cc always).
    near_zero_gy : float
        Reference doses below this leave eq 6/7 percentages empty.
    dvh_step_gy : float or None
        Step of the written DVH table (default: the bin width).
    interpolation : {"linear", "nearest"}
        Dose between voxel centres: trilinear (default) or constant per voxel.
    between_planes : {"stack", "interpolate"}
        The object between contour planes: the planning-system stack
        (default) or the shape-based reconstruction of
        :mod:`soars_dose.between_planes`. Contour metrics always use the
        planar contours as drawn.
    """

    factor: "int | str" = "auto"
    bin_width_gy: float = BIN_WIDTH_GY
    d_pct: tuple[float, ...] = ()
    d_cc: tuple[float, ...] = ()
    v_gy: tuple[float, ...] = ()
    near_zero_gy: float = 0.05
    dvh_step_gy: float | None = None
    interpolation: str = "linear"
    between_planes: str = "stack"

    def __post_init__(self) -> None:
        check_between_planes(self.between_planes)

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class Result:
    """Tables of one case.

    Attributes
    ----------
    stats : DataFrame
        One row per (set, roi).
    dvh : DataFrame
        One row per (set, roi, dose_gy): cumulative ``volume_cc`` and ``volume_pct``.
    names : DataFrame
        How each ROI name of each set was matched.
    messages : list of str
        Warnings and notes raised while computing.
    dvhs : dict of (set, roi) -> DVH
    """

    stats: pd.DataFrame
    dvh: pd.DataFrame
    names: pd.DataFrame
    messages: list[str] = field(default_factory=list)
    dvhs: dict = field(default_factory=dict)


def _stat_row(dvh: DVH, s: Settings) -> dict:
    return dvh.statistics(
        d_pct=tuple(dict.fromkeys((2, 50, 95, 98) + tuple(s.d_pct))),
        d_cc=tuple(dict.fromkeys((0.03,) + tuple(s.d_cc))),
        v_gy=tuple(s.v_gy),
    )


def _dvh_rows(patient: str, set_name: str, roi: str, dvh: DVH, step: float | None) -> pd.DataFrame:
    if step is None or step <= dvh.bin_width_gy * (1 + 1e-9):
        d, v = dvh.edges_gy, dvh.cumulative_cc
    else:
        d, v = dvh.resampled(step)
    nz = np.nonzero(v > 0)[0]
    stop = min(int(nz[-1]) + 2, v.size) if nz.size else 1
    d, v = d[:stop], v[:stop]
    return pd.DataFrame({
        "patient": patient, "set": set_name, "roi": roi,
        "dose_gy": np.round(d, 6), "volume_cc": v, "volume_pct": 100.0 * v / dvh.volume_cc,
    })


def _evaluate(case: Case, set_name: str, rois: dict[str, object], s: Settings,
              nominal: float | None, messages: list[str]):
    """Statistics of the given structures (label -> Structure or status string)."""
    rows, dvhs, curves = [], {}, []
    sset = case.sets[set_name]
    src = str(sset.source or set_name)
    for label, item in rois.items():
        row = {"patient": case.patient, "set": set_name, "roi": label,
               "between_planes": s.between_planes}
        if isinstance(item, tuple):  # (status, original name or "", message)
            row.update(status=item[0], roi_original=item[1], message=item[2])
            rows.append(row)
            continue
        row["roi_original"] = item.name
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SoarsDoseWarning)
                rec = prepare_between_planes(item, s.between_planes, nominal_spacing_mm=nominal,
                                             source=src)
                dvh = compute_dvh(rec.structure, case.dose, factor=s.factor,
                                  nominal_spacing_mm=rec.nominal_spacing_mm,
                                  bin_width=s.bin_width_gy, interpolation=s.interpolation,
                                  source=src)
                dvh.notes.extend(rec.notes)
            for w in caught:
                messages.append(str(w.message))
        except SoarsDoseError as exc:
            status = "outside_grid" if "outside the dose grid" in str(exc) else (
                "empty" if "no contour" in str(exc) else "error")
            row.update(status=status, message=str(exc))
            messages.append(str(exc))
            rows.append(row)
            continue
        row.update(status="ok" if dvh.coverage >= 0.9999 else "partial", message="; ".join(dvh.notes))
        row.update(_stat_row(dvh, s))
        rows.append(row)
        dvhs[(set_name, label)] = dvh
        curves.append(_dvh_rows(case.patient, set_name, label, dvh, s.dvh_step_gy))
    return rows, dvhs, curves


def _nominal(case: Case, set_name: str) -> float | None:
    if case.ct is not None:
        return case.ct.slice_thickness_mm
    return nominal_spacing_mm(case.sets[set_name].structures, case.dose.grid)


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in columns:
        if c not in df:
            df[c] = np.nan
    rest = [c for c in df.columns if c not in columns and c != "message"]
    return df[columns + rest + ["message"]]


def dvh_all(case: Case, settings: Settings | None = None) -> Result:
    """Statistics and DVHs of *every* ROI of every set (``soars-dose dvh``).

    ROIs are keyed by their names as written; a name used twice in one set
    is disambiguated as ``name#ROINumber`` and reported.
    """
    s = settings or Settings()
    messages = list(case.notes)
    rows, dvhs, curves, name_rows = [], {}, [], []
    for set_name, sset in case.sets.items():
        counts: dict[str, int] = {}
        for st in sset:
            counts[st.name] = counts.get(st.name, 0) + 1
        rois: dict[str, object] = {}
        for st in sset:
            label = st.name
            if counts[st.name] > 1:
                label = f"{st.name}#{st.number}"
                messages.append(f"{sset.source}: ROI name {st.name!r} is used {counts[st.name]} "
                                f"times; reported as {label!r}")
            if st.is_empty:
                rois[label] = ("empty", st.name, f"{sset.source}: ROI {st.name!r} has no contour")
                messages.append(rois[label][2])
            else:
                rois[label] = st
            name_rows.append({"set": set_name, "original": st.name, "roi": label,
                              "status": "clash" if counts[st.name] > 1 else "as_written"})
        r, d, c = _evaluate(case, set_name, rois, s, _nominal(case, set_name), messages)
        rows += r; dvhs.update(d); curves += c
    return Result(
        stats=_frame(rows, STAT_COLUMNS),
        dvh=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        names=pd.DataFrame(name_rows),
        messages=list(dict.fromkeys(messages)),
        dvhs=dvhs,
    )


@dataclass
class MatchedSets:
    """ROIs of every set keyed by canonical OAR name.

    Attributes
    ----------
    rois : dict set -> dict OAR -> Structure or (status, original, message)
        A Structure when the OAR is usable; a tuple for ``duplicate`` or
        ``empty`` ROIs.
    order : list of str
        OARs of the reference first, then those only other sets have.
    names : DataFrame
        How every ROI name was matched (one row per set x ROI).
    messages : list of str
    """

    rois: dict[str, dict[str, object]]
    order: list[str]
    names: pd.DataFrame
    messages: list[str]


def match_sets(case: Case, aliases: AliasTable | None = None) -> MatchedSets:
    """Match the ROI names of every set to canonical OAR names (never guessing).

    Only organs are kept; External (BODY), targets, derived and unmatched
    names are listed in :attr:`MatchedSets.names`. Two ROIs of one set
    that map to one OAR (or one ROIName used twice) make that OAR a
    ``duplicate`` for the set.
    """
    if REFERENCE not in case.sets:
        raise SoarsDoseError(f"a comparison needs a set named {REFERENCE!r}; got {list(case.sets)}")
    table = aliases or AliasTable.load()
    messages: list[str] = []
    matched: dict[str, dict[str, object]] = {}
    name_frames = []
    for set_name, sset in case.sets.items():
        rep = match_names(sset.names(), table, source=str(sset.source or set_name))
        nf = rep.to_frame()
        nf.insert(0, "set", set_name)
        name_frames.append(nf)
        by_name: dict[str, list] = {}
        for st in sset:
            by_name.setdefault(st.name, []).append(st)
        m: dict[str, object] = {}
        kinds = {mt.original: mt.kind for mt in rep.matches}
        for original, canonical in rep.mapping.items():
            if kinds.get(original) != "oar":
                continue
            sts = by_name.get(original, [])
            if len(sts) != 1:  # the same ROIName twice: a clash, never pick one
                m[canonical] = ("duplicate", original,
                                f"{sset.source}: ROI name {original!r} is used {len(sts)} times")
                messages.append(m[canonical][2])
            elif sts[0].is_empty:
                m[canonical] = ("empty", original, f"{sset.source}: ROI {original!r} has no contour")
                messages.append(m[canonical][2])
            else:
                m[canonical] = sts[0]
        for canonical, originals in rep.duplicates.items():
            if table.kind_of(canonical) != "oar":
                continue
            m[canonical] = ("duplicate", " | ".join(originals),
                            f"{sset.source}: {len(originals)} ROIs ({', '.join(map(repr, originals))}) "
                            f"all match {canonical}; rename one or map it in an alias file")
            messages.append(m[canonical][2])
        for um in rep.unmatched:
            if um.kind == "unmatched":
                messages.append(f"{sset.source}: ROI {um.original!r} not matched to an OAR "
                                f"({um.reason}); add it to an alias file to include it")
        matched[set_name] = m
    ref_oars = list(matched[REFERENCE])
    order = ref_oars + sorted({o for m in matched.values() for o in m} - set(ref_oars))
    return MatchedSets(matched, order, pd.concat(name_frames, ignore_index=True), messages)


def compare(case: Case, settings: Settings | None = None, aliases: AliasTable | None = None,
            matched_sets: MatchedSets | None = None) -> Result:
    """Compare every set with the ``"reference"`` set on the case's fixed dose (eq 6/7).

    ROI names are matched to canonical OAR names with ``aliases`` (see
    :func:`match_sets`); only matched OARs are compared. Unmatched names,
    targets and duplicates are listed in :attr:`Result.names` and never
    guessed. An OAR of the reference that a set lacks gets a row with
    status ``missing``.
    """
    s = settings or Settings()
    ms = matched_sets or match_sets(case, aliases)
    messages = list(case.notes) + ms.messages
    matched, order = ms.rois, ms.order
    rows, dvhs, curves = [], {}, []
    for set_name in case.sets:
        m = matched[set_name]
        rois = {}
        for oar in order:
            if oar in m:
                rois[oar] = m[oar]
            elif oar in matched[REFERENCE]:
                rois[oar] = ("missing", "", f"set {set_name!r} has no ROI for {oar}")
        r, d, c = _evaluate(case, set_name, rois, s, _nominal(case, set_name), messages)
        rows += r; dvhs.update(d); curves += c

    stats = _frame(rows, STAT_COLUMNS)
    stats = _add_differences(stats, s.near_zero_gy)
    return Result(
        stats=stats,
        dvh=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        names=ms.names,
        messages=list(dict.fromkeys(messages)),
        dvhs=dvhs,
    )


def _add_differences(stats: pd.DataFrame, near_zero_gy: float) -> pd.DataFrame:
    """Append eq 6/7 percentages and absolute Gy differences against the reference."""
    ref = stats[(stats["set"] == REFERENCE) & stats["status"].isin(["ok", "partial"])]
    ref = ref.set_index("roi")[["mean_gy", "max_gy"]]
    out = stats.copy()
    for c in DIFF_COLUMNS:
        out[c] = np.nan if c != "diff_flag" else ""
    for i, row in out.iterrows():
        if row["set"] == REFERENCE or row["status"] not in ("ok", "partial"):
            continue
        if row["roi"] not in ref.index:
            out.at[i, "diff_flag"] = "no_reference"
            continue
        rm, rx = ref.at[row["roi"], "mean_gy"], ref.at[row["roi"], "max_gy"]
        out.at[i, "diff_mean_gy"] = row["mean_gy"] - rm
        out.at[i, "diff_max_gy"] = row["max_gy"] - rx
        flags = []
        if rm >= near_zero_gy:
            out.at[i, "diff_mean_pct"] = 100.0 * (row["mean_gy"] - rm) / rm
        else:
            flags.append("reference_mean_near_zero")
        if rx >= near_zero_gy:
            out.at[i, "diff_max_pct"] = 100.0 * (row["max_gy"] - rx) / rx
        else:
            flags.append("reference_max_near_zero")
        out.at[i, "diff_flag"] = ";".join(flags)
    cols = [c for c in out.columns if c not in DIFF_COLUMNS and c != "message"]
    return out[cols + DIFF_COLUMNS + ["message"]]
