"""Per-structure statistics of contour sets on one fixed dose, and eq 6/7 differences.

    Diff_mean = (mean(OAR_sub, Dose) - mean(OAR_ref, Dose)) / mean(OAR_ref, Dose) x 100 %   (eq 6)
    Diff_max  = (max(OAR_sub, Dose)  - max(OAR_ref, Dose))  / max(OAR_ref, Dose)  x 100 %   (eq 7)

``mean`` is the volume-weighted mean dose and ``max`` the highest dose at
a sub-voxel sample point of the structure (see :mod:`soars_dose.dose.dvh`).
Where the reference value is below the near-zero threshold (1 Gy, or 2 % of
the prescription when known; :mod:`soars_dose.dose.differences`) the
percentage is left empty and flagged; the absolute differences (Gy) are
always given. Diff_d0_03cc (eq 7 on the near-maximum D0.03cc) is given too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analysis.plausibility import (
    AIR_HU,
    BONE_HU,
    MAX_TISSUE_SHARE,
    load_volume_table,
    plausibility_flags,
)
from ..between_planes import check_mode as check_between_planes
from ..between_planes import prepare as prepare_between_planes
from ..case import (
    COMPUTED,
    EMPTY,
    ERROR,
    MISSING,
    OK,
    OUTSIDE_GRID,
    PARTIAL,
    REFERENCE,
    TOO_LARGE,
    Case,
    RoiOutcome,
)
from ..errors import (
    EmptyStructureSetError,
    NoMatchingOARError,
    SoarsDoseError,
    SoarsDoseWarning,
    ZeroDoseError,
    warn,
)
from ..names import AliasTable, MatchedSets, match_sets
from ..structures import Structure
from .compute import compute_dvh
from .differences import (
    NEAR_ZERO_GY,
    NEAR_ZERO_RX_PCT,
    add_differences,
    near_zero_threshold_gy,
)
from .dvh import BIN_WIDTH_GY, DVH
from .precheck import DEFAULT_MAX_MEMORY_GB, check_sampling_size, outside_grid
from .settings_checks import validate_settings

#: Columns every ``stats`` table starts with.
STAT_COLUMNS = [
    "patient", "set", "roi", "roi_original", "status", "volume_cc", "volume_in_grid_cc",
    "coverage", "mean_gy", "min_gy", "max_gy", "d0_03cc_gy", "d2_gy", "d50_gy", "d95_gy",
    "d98_gy", "between_planes",
]
#: Default dose step (Gy) of the written DVH table (see :attr:`Settings.dvh_step_gy`).
DVH_STEP_GY = 0.1


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
        Reference doses (Gy) below this leave eq 6/7 percentages empty when
        no prescription is known (default 1 Gy; ``--near-zero-gy``).
    near_zero_rx_pct : float
        With a known prescription the threshold is this % of it instead
        (default 2 %; ``--near-zero-rx-pct``; 0 ignores the prescription).
    prescription_gy : float or None
        The plan's prescription (Gy), when known (manifest
        ``prescription_gy`` / ``--prescription-gy``); only the near-zero
        threshold uses it.
    dvh_step_gy : float or None
        Dose step of the written DVH table, 0.1 Gy by default (None: the
        bin width). The statistics always use the full-resolution DVH; the
        step only sizes the table: at 0.1 Gy a head-and-neck patient with
        4 sets of 13 OARs writes about 0.8 MB of DVH tables, so a
        100-patient cohort folder stays well under 200 MB.
    interpolation : {"linear", "nearest"}
        Dose between voxel centres: trilinear (default) or constant per voxel.
    between_planes : {"stack", "interpolate"}
        The object between contour planes: the planning-system stack
        (default) or the shape-based reconstruction of
        :mod:`soars_dose.between_planes`. Contour metrics always use the
        planar contours as drawn.
    max_memory_gb : float
        Refuse (status ``too_large``) a structure whose rasterisation would
        need more than this many GB (1e9 bytes); see
        :mod:`soars_dose.dose.precheck`. Default 2.
    plausibility_volumes : str or None
        YAML file of plausible OAR volumes overriding entries of the
        packaged ``soars_dose/data/oar_volumes.yaml``
        (see :mod:`soars_dose.analysis.plausibility`).
    plausibility_air_hu, plausibility_bone_hu : float
        HU below which a CT voxel counts as air (-500) and above which as
        bone (300) in the plausibility check.
    plausibility_max_share : float
        Largest share (0-1) of a contour's volume in air or bone before it
        is flagged (0.2).

    Every value is checked when the object is made
    (:class:`~soars_dose.errors.SettingsError` naming the field and its
    command-line option).
    """

    factor: "int | str" = "auto"
    bin_width_gy: float = BIN_WIDTH_GY
    d_pct: tuple[float, ...] = ()
    d_cc: tuple[float, ...] = ()
    v_gy: tuple[float, ...] = ()
    near_zero_gy: float = NEAR_ZERO_GY
    near_zero_rx_pct: float = NEAR_ZERO_RX_PCT
    prescription_gy: "float | None" = None
    dvh_step_gy: float | None = DVH_STEP_GY
    interpolation: str = "linear"
    between_planes: str = "stack"
    # ---- input checks (issue 11)
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB
    plausibility_volumes: "str | None" = None
    plausibility_air_hu: float = AIR_HU
    plausibility_bone_hu: float = BONE_HU
    plausibility_max_share: float = MAX_TISSUE_SHARE

    def __post_init__(self) -> None:
        check_between_planes(self.between_planes)
        validate_settings(self)

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
    settings : Settings
        The settings the tables were computed with.
    contour_metrics : DataFrame or None
        One row per (substitute set, OAR) (see
        :func:`soars_dose.analysis.contours.contour_metrics_for_case`);
        None when not computed.
    """

    stats: pd.DataFrame
    dvh: pd.DataFrame
    names: pd.DataFrame
    messages: list[str] = field(default_factory=list)
    dvhs: dict = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    contour_metrics: pd.DataFrame | None = None


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


def _evaluate(case: Case, set_name: str, rois: dict[str, Structure | RoiOutcome], s: Settings,
              nominal: float | None, messages: list[str]):
    """Statistics of the given structures (label -> Structure or status string)."""
    rows, dvhs, curves = [], {}, []
    sset = case.sets[set_name]
    src = str(sset.source or set_name)
    for label, item in rois.items():
        row = {"patient": case.patient, "set": set_name, "roi": label,
               "between_planes": s.between_planes}
        if isinstance(item, RoiOutcome):
            row.update(status=item.status, roi_original=item.original, message=item.message)
            rows.append(row)
            continue
        row["roi_original"] = item.name
        refused = _precheck(item, case, s, nominal, src)
        if refused is not None:
            row.update(status=refused[0], message=refused[1])
            messages.append(refused[1])
            rows.append(row)
            continue
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
            row.update(status=getattr(exc, "status", ERROR), message=str(exc))
            messages.append(str(exc))
            rows.append(row)
            continue
        row.update(status=OK if dvh.coverage >= 0.9999 else PARTIAL, message="; ".join(dvh.notes))
        row.update(_stat_row(dvh, s))
        rows.append(row)
        dvhs[(set_name, label)] = dvh
        curves.append(_dvh_rows(case.patient, set_name, label, dvh, s.dvh_step_gy))
    return rows, dvhs, curves


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if "message" not in df:
        df["message"] = pd.Series(dtype=object)
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
    check_sets_not_empty(case)
    messages += check_dose_not_zero(case, refuse=False)
    rows, dvhs, curves, name_rows = [], {}, [], []
    for set_name, sset in case.sets.items():
        counts: dict[str, int] = {}
        for st in sset:
            counts[st.name] = counts.get(st.name, 0) + 1
        rois: dict[str, Structure | RoiOutcome] = {}
        for st in sset:
            label = st.name
            if counts[st.name] > 1:
                label = f"{st.name}#{st.number}"
                messages.append(f"{sset.source}: ROI name {st.name!r} is used {counts[st.name]} "
                                f"times; reported as {label!r}")
            if st.is_empty:
                outcome = RoiOutcome(EMPTY, st.name, f"{sset.source}: ROI {st.name!r} has no contour")
                rois[label] = outcome
                messages.append(outcome.message)
            else:
                rois[label] = st
            name_rows.append({"set": set_name, "original": st.name, "roi": label,
                              "status": "clash" if counts[st.name] > 1 else "as_written"})
        r, d, c = _evaluate(case, set_name, rois, s, case.nominal_spacing_mm(set_name), messages)
        rows += r; dvhs.update(d); curves += c
    messages += check_rows_not_zero(case, rows, refuse=False)
    return Result(
        stats=_frame(rows, STAT_COLUMNS),
        dvh=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        names=pd.DataFrame(name_rows),
        messages=list(dict.fromkeys(messages)),
        dvhs=dvhs,
        settings=s,
    )


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
    check_reference_set(case, ms)
    check_dose_not_zero(case, refuse=True)
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
                rois[oar] = RoiOutcome(MISSING, "", f"set {set_name!r} has no ROI for {oar}")
        r, d, c = _evaluate(case, set_name, rois, s, case.nominal_spacing_mm(set_name), messages)
        rows += r; dvhs.update(d); curves += c

    check_rows_not_zero(case, rows, refuse=True)
    stats = _frame(rows, STAT_COLUMNS)
    stats = add_differences(stats, near_zero_threshold_gy(s.near_zero_gy, s.prescription_gy,
                                                          s.near_zero_rx_pct))
    stats, names = add_plausibility(case, ms, stats, s, messages)
    return Result(
        stats=stats,
        dvh=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        names=names,
        messages=list(dict.fromkeys(messages)),
        dvhs=dvhs,
        settings=s,
    )


# --------------------------------------------------- input checks (issue 11)
#: A structure whose highest dose is at or below this (Gy) received no dose.
ZERO_DOSE_GY = 1e-6


def _precheck(structure, case: Case, s: Settings, nominal: float | None, src: str):
    """``(status, message)`` for a structure refused before rasterising, else None.

    ``outside_grid`` when its bounding box misses the dose grid (nothing is
    rasterised); ``too_large`` when rasterising it would need more than
    ``s.max_memory_gb``.
    """
    grid = case.dose.grid
    if outside_grid(structure, grid, nominal):
        lo, hi = structure.bounds()
        g_lo, g_hi = grid.world_bounds()
        return (OUTSIDE_GRID,
                f"{src}: ROI {structure.name!r} lies entirely outside the dose grid (its contours "
                f"span {np.round(lo, 1).tolist()} to {np.round(hi, 1).tolist()} mm, the grid "
                f"{np.round(g_lo, 1).tolist()} to {np.round(g_hi, 1).tolist()} mm); check that "
                "the dose and the structures belong to the same patient and plan")
    try:
        check_sampling_size(structure, grid, s.factor, nominal, s.max_memory_gb, source=src)
    except SoarsDoseError as exc:
        return (TOO_LARGE, str(exc))
    return None


def _examples(names: list[str], n: int = 6) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def check_reference_set(case: Case, ms: MatchedSets) -> None:
    """Refuse a comparison whose reference set has no usable OAR.

    Raises
    ------
    NoMatchingOARError
        The reference RTSTRUCT has no ROI, only targets / derived / unknown
        names, or only OARs without contours; the message names the file,
        lists some of its names and says what to do.
    """
    sset = case.sets[REFERENCE]
    src = str(sset.source or REFERENCE)
    usable = [o for o, v in ms.rois[REFERENCE].items() if not isinstance(v, RoiOutcome)]
    if usable:
        return
    names = sset.names()
    if not names:
        raise NoMatchingOARError(
            f"{src}: the reference structure set has no ROI at all, so there is nothing to "
            "compare; check that this is the clinical RTSTRUCT with the contours")
    ref_names = ms.names[ms.names["set"] == REFERENCE] if "set" in ms.names else ms.names
    kinds: dict[str, list[str]] = {}
    if "kind" in ref_names and "original" in ref_names:
        for _, r in ref_names.iterrows():
            kinds.setdefault(str(r["kind"]), []).append(str(r["original"]))
    matched = list(ms.rois[REFERENCE])
    if matched:  # OARs were matched, but each is empty or duplicated
        what = "; ".join(f"{o}: {v.status}" for o, v in ms.rois[REFERENCE].items()
                         if isinstance(v, RoiOutcome))
        raise NoMatchingOARError(
            f"{src}: none of the reference set's OARs can be used ({what}); every statistic "
            "would be missing. Check that the RTSTRUCT holds the contours (not only ROI names) "
            "and that no OAR name is used twice")
    detail = "; ".join(f"{k}: {_examples(v)}" for k, v in kinds.items()) or _examples(names)
    raise NoMatchingOARError(
        f"{src}: none of the reference set's {len(names)} ROIs matches an OAR ({detail}). "
        "Nothing can be compared. If these are organs under institutional names, map them to "
        "canonical OAR names in an alias file (--names aliases.yaml; AliasTable.load(file) "
        "from Python); otherwise check that this is the clinical RTSTRUCT")


def check_sets_not_empty(case: Case) -> None:
    """Refuse a structure set without any ROI (``soars-dose dvh`` has nothing to compute).

    Raises
    ------
    EmptyStructureSetError
    """
    for name, sset in case.sets.items():
        if len(sset) == 0:
            raise EmptyStructureSetError(
                f"{sset.source or name}: the structure set has no ROI (its "
                "StructureSetROISequence is empty), so there is no DVH to compute; check that "
                "this is the RTSTRUCT with the contours")


def _dose_name(case: Case) -> str:
    return ", ".join(str(p) for p in case.dose.sources) or "the dose"


def check_dose_not_zero(case: Case, refuse: bool) -> list[str]:
    """Refuse (``refuse``) or warn about a dose that is zero everywhere.

    Decided from the dose values themselves (DoseGridScaling 0 or an all-zero
    PixelData alike), whatever the reader said. Returns the messages made.

    Raises
    ------
    ZeroDoseError
        When ``refuse`` and no voxel has a positive dose.
    """
    v = case.dose.values
    if np.any(v > ZERO_DOSE_GY):
        return []
    msg = (f"{_dose_name(case)}: the dose is zero everywhere (largest voxel "
           f"{float(np.max(v)) if v.size else 0.0:g} Gy), so every statistic would be 0 Gy; check "
           "DoseGridScaling and that this is the plan dose, not an empty placeholder")
    if refuse:
        raise ZeroDoseError(msg)
    warn(msg)
    return [msg]


def check_rows_not_zero(case: Case, rows: list[dict], refuse: bool) -> list[str]:
    """Refuse or warn when every computed structure received no dose at all.

    Raises
    ------
    ZeroDoseError
        When ``refuse`` and every row with a DVH has ``max_gy`` <= ZERO_DOSE_GY.
    """
    computed = [r for r in rows if r.get("status") in COMPUTED]
    if not computed or any(float(r.get("max_gy", 0.0)) > ZERO_DOSE_GY for r in computed):
        return []
    msg = (f"{_dose_name(case)}: the dose is zero inside every structure ({len(computed)} "
           f"computed, largest voxel dose {case.dose.max_gy:.4g} Gy lies outside all of them), so "
           "every statistic would be 0 Gy; check that dose and structures belong to the same "
           "plan and frame of reference")
    if refuse:
        raise ZeroDoseError(msg)
    warn(msg)
    return [msg]


def add_plausibility(case: Case, ms: MatchedSets, stats: pd.DataFrame, s: Settings,
                     messages: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add the ``plausibility`` column to ``stats`` and ``names`` and warn per (set, OAR).

    See :mod:`soars_dose.analysis.plausibility` for the flags; with a CT
    (``case.ct``) the HU and slice-range checks run too. Flags never
    change a row's status.
    """
    table = load_volume_table(s.plausibility_volumes)
    hu = None
    if case.ct is not None:
        try:
            hu = case.ct.load_hu()
        except Exception as exc:  # undecodable pixels: the HU check is skipped, said once
            msg = (f"CT series {case.ct.series_uid} ({case.ct.paths[0].parent}): pixels could "
                   f"not be read ({exc}); the air/bone plausibility check was skipped")
            warn(msg)
            messages.append(msg)
    stats = stats.copy()
    flags_col = [""] * len(stats)
    by_name: dict[tuple[str, str], str] = {}
    for pos, (_, row) in enumerate(stats.iterrows()):
        item = ms.rois.get(row["set"], {}).get(row["roi"])
        if item is None or isinstance(item, RoiOutcome) or row["status"] not in COMPUTED:
            continue
        src = str(case.sets[row["set"]].source or row["set"])
        flags, msgs = plausibility_flags(
            row["roi"], item, float(row["volume_cc"]), table, ct=case.ct, hu=hu,
            air_hu=s.plausibility_air_hu, bone_hu=s.plausibility_bone_hu,
            max_share=s.plausibility_max_share, source=src)
        if flags:
            flags_col[pos] = ";".join(flags)
            by_name[(row["set"], item.name)] = flags_col[pos]
            msg = f"patient {case.patient}, set {row['set']!r}: " + "; ".join(msgs)
            warn(msg)
            messages.append(msg)
    cols = [c for c in stats.columns if c != "message"]
    stats["plausibility"] = flags_col
    stats = stats[cols + ["plausibility", "message"]]
    names = ms.names.copy()
    if len(names) and {"set", "original"} <= set(names.columns):
        names["plausibility"] = [by_name.get((a, b), "") for a, b in
                                 zip(names["set"], names["original"])]
    else:
        names["plausibility"] = pd.Series(dtype=object)
    return stats, names
