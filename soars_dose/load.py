"""Files -> a checked :class:`~soars_dose.case.Case`.

One RTDOSE (or several, summed on request), named RTSTRUCT files, an
optional CT series and an optional RTPLAN (for the prescription) are read,
and their frames of reference checked against each other before anything
is computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .case import Case, check_set_name
from .console import in_cli, option
from .dicom.ct import read_ct_series
from .dicom.rtdose import read_rtdoses
from .dicom.rtplan import choose_prescription, read_rtplan
from .dicom.rtstruct import read_rtstruct
from .errors import FrameOfReferenceError, InputError, warn
from .structures import StructureSet


def check_frames(case: Case, allow_mismatch: bool = False) -> list[str]:
    """Check that dose, every structure set, the CT and the RTPLAN share one frame of reference.

    Every set, the CT and the plan are checked against the dose; the plan
    is checked against the CT instead when the dose has no
    FrameOfReferenceUID. Returns the notes made; raises
    :class:`FrameOfReferenceError` on a mismatch unless ``allow_mismatch``
    (then a note is made instead).
    """
    notes = []
    dose_for = case.dose.frame_of_reference_uid
    dose_src = case.dose.sources[0] if case.dose.sources else "dose"
    notes += _warn_missing_dose_frame(case, dose_src)
    others = [(f"set {n!r} ({s.source})", s.frame_of_reference_uid) for n, s in case.sets.items()]
    if case.ct is not None:
        others.append((f"CT series {case.ct.series_uid} ({case.ct.paths[0].parent})",
                       case.ct.frame_of_reference_uid))
    for what, uid in others:
        if dose_for and uid and uid != dose_for:
            msg = (f"{what} has FrameOfReferenceUID {uid} but the dose {dose_src} has "
                   f"{dose_for}: they are not in one patient coordinate system. Check that the "
                   "files belong to the same patient and plan; if they were registered and "
                   "share coordinates, pass --allow-frame-mismatch")
            if not allow_mismatch:
                raise FrameOfReferenceError(msg)
            notes.append("ignored on request: " + msg)
        elif not uid or not dose_for:
            notes.append(f"{what}: frame of reference could not be checked (UID absent)")
    notes += _check_plan_frame(case, allow_mismatch)
    if case.ct is not None:
        for n, s in case.sets.items():
            ref = s.referenced_series_uid
            if ref and ref != case.ct.series_uid:
                msg = (f"set {n!r} ({s.source}) was drawn on image series {ref}, not on the "
                       f"given CT series {case.ct.series_uid}; the frame of reference agrees, "
                       "so the contours are used as they are")
                warn(msg)
                notes.append(msg)
    return notes


def _check_plan_frame(case: Case, allow_mismatch: bool) -> list[str]:
    """The RTPLAN's FrameOfReferenceUID against the dose's (or, without it, the CT's)."""
    plan = case.plan
    if plan is None:
        return []
    against = [(f"the dose {case.dose.sources[0] if case.dose.sources else ''}".strip(),
                case.dose.frame_of_reference_uid)]
    if case.ct is not None:
        against.append((f"the CT series {case.ct.series_uid} ({case.ct.paths[0].parent})",
                        case.ct.frame_of_reference_uid))
    known = [(what, u) for what, u in against if u]
    if not plan.frame_of_reference_uid or not known:
        return [f"RT plan {plan.path}: frame of reference could not be checked (UID absent)"]
    what, other = known[0]
    if plan.frame_of_reference_uid == other:
        return []
    msg = (f"RT plan {plan.path} has FrameOfReferenceUID {plan.frame_of_reference_uid} but "
           f"{what} has {other}: the plan is not of this dose and patient. Give the plan the "
           f"dose was calculated for; if they share coordinates, pass "
           f"{option('allow_frame_mismatch')}")
    if not allow_mismatch:
        raise FrameOfReferenceError(msg)
    return ["ignored on request: " + msg]


def _warn_missing_dose_frame(case: Case, dose_src) -> list[str]:
    """Warn once, naming the dose file, when the RTDOSE has no FrameOfReferenceUID.

    Without it no structure set or CT can be checked against the dose. The
    reader may already have warned at read time (its note in ``dose.notes``
    names FrameOfReferenceUID); then only the note is kept, not a second
    console line.
    """
    if case.dose.frame_of_reference_uid:
        return []
    msg = (f"{dose_src}: the RTDOSE has no FrameOfReferenceUID, so the frame-of-reference "
           "check of the structure sets and CT against the dose was skipped; make sure they "
           "belong to the same patient and plan")
    already = any("FrameOfReferenceUID" in str(n) for n in case.dose.notes)
    if not already:
        warn(msg)
    return [msg]


def load_case(
    rtdose: "str | Path | Sequence[str | Path]",
    sets: Mapping[str, "str | Path | StructureSet"],
    *,
    ct: "str | Path | None" = None,
    ct_series: str | None = None,
    patient: str | None = None,
    sum_doses: bool = False,
    prescription_gy: float | None = None,
    rtplan: "str | Path | None" = None,
    allow_frame_mismatch: bool = False,
    prescription_given_as: str | None = None,
) -> Case:
    """Read a dose, contour sets and optionally a CT into a checked :class:`Case`.

    Parameters
    ----------
    rtdose : path or list of paths
        RTDOSE file(s); several are summed only with ``sum_doses``.
    sets : mapping name -> RTSTRUCT path (or StructureSet)
        Contour sets in order; use ``"reference"`` first for a comparison.
    ct : path, optional
        Folder of the CT series.
    ct_series : str, optional
        SeriesInstanceUID of the CT series to use when ``ct`` holds several
        (blank or None: the folder's only series).
    patient : str, optional
        Label; default the dose file's PatientID or its folder name.
    sum_doses, prescription_gy
        See :func:`soars_dose.dicom.rtdose.read_rtdoses`. ``prescription_gy``
        (Gy, total) is also the case's prescription and wins over the plan's.
    rtplan : path, optional
        RTPLAN file whose primary target prescription (Gy; see
        :mod:`soars_dose.dicom.rtplan`) becomes the case's prescription when
        ``prescription_gy`` is not given. It is not used to scale a
        RELATIVE dose. Its FrameOfReferenceUID is checked against the
        dose's (or the CT's).
    allow_frame_mismatch : bool
        Downgrade a FrameOfReferenceUID mismatch from an error to a note.
    prescription_given_as : str, optional
        How ``prescription_gy`` was given (e.g. ``"manifest prescription_gy
        (line 3)"``), for the warning when it differs from the plan's and
        the provenance; default ``--prescription-gy`` / ``prescription_gy=GY``.

    The chosen prescription and its source are :attr:`Case.prescription`.
    """
    paths = [rtdose] if isinstance(rtdose, (str, Path)) else list(rtdose)
    dose = read_rtdoses(paths, sum_doses=sum_doses, prescription_gy=prescription_gy)
    loaded: dict[str, StructureSet] = {}
    for name, s in sets.items():
        check_set_name(name)
        loaded[name] = s if isinstance(s, StructureSet) else read_rtstruct(s)
    if ct_series is not None and ct is None:
        raise InputError(f"a CT series ({ct_series}) was chosen but no CT folder given; "
                         f"give the folder with {option('ct', 'FOLDER')}")
    series = None
    if ct is not None:
        choose_with = "--ct-series UID" if in_cli() else "ct_series='UID'"
        series = read_ct_series(ct, (ct_series or "").strip() or None, choose_with=choose_with)
    plan = read_rtplan(rtplan) if rtplan is not None else None
    if patient is None:
        patient = dose.patient_id or Path(paths[0]).parent.name
    case = Case(dose=dose, sets=loaded, ct=series, patient=patient, plan=plan,
                prescription=choose_prescription(prescription_gy, plan,
                                                 given_as=prescription_given_as))
    case.notes.extend(check_frames(case, allow_frame_mismatch))
    case.notes.extend(dose.notes)
    if series is not None:
        case.notes.extend(series.notes)
    if plan is not None:
        case.notes.extend(plan.notes)
    return case
