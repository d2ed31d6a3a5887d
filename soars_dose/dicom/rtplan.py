"""Reading the prescription of an RT Plan (RTPLAN) file.

Only what the audit needs is read: the target prescription dose (Gy, the
total over all fractions) of the plan's dose references, the planned
number of fractions (for the record) and the FrameOfReferenceUID (checked
against the dose and CT by :func:`soars_dose.load.check_frames`). Beams,
control points and the like are not read.

The prescription rule
---------------------
Every item of DoseReferenceSequence (300A,0010) whose DoseReferenceType
(300A,0020) is ``TARGET`` and that has a TargetPrescriptionDose
(300A,0026, Gy) is a *target prescription*. With one, it is the plan's
prescription. With several (a simultaneous integrated boost plan has one
per dose level), **the highest TargetPrescriptionDose is the primary
prescription**, and a warning lists them all. Without any, the plan gives
no prescription: :attr:`RTPlan.prescription_gy` is None and a note (and a
warning) says so; the audit then goes on as if no plan had been given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..console import option
from ..errors import DicomReadError, warn
from .common import SOP_CLASS, read_checked, text, uid

#: SOP Class UID of RT Plan Storage, the only plan class read.
RT_PLAN_SOP_CLASS = SOP_CLASS["RTPLAN"]
#: Other plan classes, named in the refusal so that the user knows what was given.
OTHER_PLAN_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.481.8": "RT Ion Plan",
    "1.2.840.10008.5.1.4.1.1.481.13": "RT Beams Treatment Record",
    "1.2.840.10008.5.1.4.1.1.481.14": "RT Brachy Treatment Record",
}

#: Given and plan prescriptions differing by more than this fraction of the
#: plan's value are warned about (0.5 %).
PRESCRIPTION_TOLERANCE = 0.005


@dataclass(frozen=True)
class TargetPrescription:
    """One TARGET dose reference of a plan.

    Attributes
    ----------
    number : int or None
        DoseReferenceNumber (None when absent or not a whole number).
    description : str
        DoseReferenceDescription (e.g. ``"PTV70"``), ``""`` when absent.
    structure_type : str
        DoseReferenceStructureType (POINT, VOLUME, COORDINATES, SITE), ``""``
        when absent.
    dose_gy : float
        TargetPrescriptionDose in Gy (total over all fractions), > 0.
    """

    number: int | None
    description: str
    structure_type: str
    dose_gy: float

    def label(self) -> str:
        """``"DoseReferenceNumber 2 'PTV70' 70 Gy"``, for messages."""
        num = f"DoseReferenceNumber {self.number}" if self.number is not None else "no number"
        desc = f" {self.description!r}" if self.description else ""
        return f"{num}{desc} {self.dose_gy:g} Gy"


@dataclass
class RTPlan:
    """What was read from an RTPLAN file.

    Attributes
    ----------
    path : Path
        The file.
    prescription_gy : float or None
        The primary prescription in Gy (total over all fractions): the
        highest TargetPrescriptionDose of the TARGET dose references; None
        when the plan states none (see the module's rule).
    targets : list of TargetPrescription
        Every TARGET dose reference with a TargetPrescriptionDose, in file order.
    fractions_planned : int or None
        NumberOfFractionsPlanned of the plan's fraction group (None when
        absent, unreadable, or when the plan has several fraction groups:
        see ``fraction_groups``). For the record only.
    fraction_groups : list of (int or None, int or None)
        (FractionGroupNumber, NumberOfFractionsPlanned) of every fraction group.
    frame_of_reference_uid : str or None
    sop_instance_uid : str or None
    label : str
        RTPlanLabel, ``""`` when absent.
    notes : list of str
        What was skipped or assumed, each naming the file.
    """

    path: Path
    prescription_gy: float | None
    targets: list[TargetPrescription] = field(default_factory=list)
    fractions_planned: int | None = None
    fraction_groups: list[tuple[int | None, int | None]] = field(default_factory=list)
    frame_of_reference_uid: str | None = None
    sop_instance_uid: str | None = None
    label: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """A JSON-ready record for the provenance (doses in Gy)."""
        return {
            "path": str(self.path),
            "label": self.label,
            "sop_instance_uid": self.sop_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "prescription_gy": self.prescription_gy,
            "targets": [{"dose_reference_number": t.number, "description": t.description,
                         "structure_type": t.structure_type, "dose_gy": t.dose_gy}
                        for t in self.targets],
            "fractions_planned": self.fractions_planned,
            "fraction_groups": [{"number": n, "fractions_planned": f}
                                for n, f in self.fraction_groups],
        }


#: (300A,0026) TargetPrescriptionDose.
_TARGET_PRESCRIPTION_DOSE = 0x300A0026


def _raw_text(item, tag: int) -> str:
    """An element's value as the text in the file, without pydicom's conversion.

    pydicom converts a DS value on access and raises on text such as
    ``"abc"``; the stored bytes are read instead so that the message can
    quote them.
    """
    if tag not in item:
        return ""
    elem = item.get_item(tag)
    value = getattr(elem, "value", None)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("ascii", "replace").strip(" \x00")
    return text(value).strip()


def _whole(value) -> int | None:
    """An IS value as int, or None when absent, blank or not a whole number."""
    try:
        v = float(text(value).strip())
    except ValueError:
        return None
    return int(v) if math.isfinite(v) and v == int(v) else None


def _target_dose(item, path: Path, where: str) -> float:
    """TargetPrescriptionDose of one item in Gy, refused unless a finite number > 0."""
    raw = _raw_text(item, _TARGET_PRESCRIPTION_DOSE)
    try:
        dose = float(raw)
    except ValueError:
        raise DicomReadError(
            f"{path}: {where}: TargetPrescriptionDose {raw!r} is not a number; the plan is "
            f"malformed: re-export it, or give the prescription with "
            f"{option('prescription_gy', 'GY')} instead of the plan"
        ) from None
    if not math.isfinite(dose) or dose <= 0:
        raise DicomReadError(
            f"{path}: {where}: TargetPrescriptionDose {raw!r} Gy is not a finite dose > 0 Gy; "
            f"the plan is malformed: re-export it, or give the prescription with "
            f"{option('prescription_gy', 'GY')} instead of the plan"
        )
    return dose


def read_rtplan(path: "str | Path") -> RTPlan:
    """Read the prescription, fractions and frame of reference of an RTPLAN.

    Parameters
    ----------
    path : path
        An RT Plan Storage file (SOP Class UID 1.2.840.10008.5.1.4.1.1.481.5).

    Returns
    -------
    RTPlan
        ``prescription_gy`` in Gy (total over all fractions) by the module's
        rule: the highest TargetPrescriptionDose of the TARGET dose
        references, or None when there is none.

    Raises
    ------
    DicomReadError
        The file is missing, truncated or not DICOM; it is another object
        (an RTDOSE, an RT Ion Plan, a treatment record...): its SOP class
        is not RT Plan Storage; a TARGET's TargetPrescriptionDose is not a
        number, not finite or not > 0 Gy. Every message names the file.

    Warns
    -----
    SoarsDoseWarning
        Several target prescriptions (the highest is used, all are listed);
        no target prescription at all (the prescription stays unknown).
    """
    path = Path(path)
    ds, _ = read_checked(path, "RTPLAN", stop_before_pixels=True)
    sop = uid(ds, "SOPClassUID")
    if sop != RT_PLAN_SOP_CLASS:
        what = (OTHER_PLAN_CLASSES.get(sop or "", f"SOP class {sop}") if sop
                else "a file without SOPClassUID")
        raise DicomReadError(
            f"{path}: is {what}, not an RT Plan (SOP Class UID {RT_PLAN_SOP_CLASS}); only the "
            f"prescription of an RT Plan is read: give the plan exported from the planning "
            f"system, or the prescription itself with {option('prescription_gy', 'GY')}"
        )
    notes: list[str] = []
    targets: list[TargetPrescription] = []
    refs = ds.get("DoseReferenceSequence") or []
    for i, item in enumerate(refs, start=1):
        number = _whole(item.get("DoseReferenceNumber"))
        where = (f"DoseReferenceSequence item {i}"
                 + (f" (DoseReferenceNumber {number})" if number is not None else ""))
        kind = text(item.get("DoseReferenceType", "")).strip().upper()
        has_dose = _raw_text(item, _TARGET_PRESCRIPTION_DOSE) != ""
        if kind != "TARGET":
            if has_dose:
                notes.append(f"{path}: {where}: DoseReferenceType {kind or '(absent)'} is not "
                             "TARGET; its TargetPrescriptionDose is not taken as the "
                             "prescription")
            continue
        if not has_dose:
            notes.append(f"{path}: {where}: a TARGET without TargetPrescriptionDose; skipped")
            continue
        targets.append(TargetPrescription(
            number=number, description=text(item.get("DoseReferenceDescription", "")).strip(),
            structure_type=text(item.get("DoseReferenceStructureType", "")).strip().upper(),
            dose_gy=_target_dose(item, path, where)))

    prescription: float | None = None
    if targets:
        primary = max(targets, key=lambda t: t.dose_gy)
        prescription = primary.dose_gy
        if len(targets) > 1:
            msg = (f"{path}: the plan has {len(targets)} target prescriptions "
                   f"({'; '.join(t.label() for t in targets)}); the highest, {prescription:g} Gy "
                   f"({primary.label()}), is used as the prescription. Give another with "
                   f"{option('prescription_gy', 'GY')} if it is not the one to audit against")
            notes.append(msg)
            warn(msg)
    else:
        why = ("has no DoseReferenceSequence" if not refs
               else "has no TARGET dose reference with a TargetPrescriptionDose")
        msg = (f"{path}: the plan {why}, so it gives no prescription; the prescription stays "
               f"unknown (give it with {option('prescription_gy', 'GY')})")
        notes.append(msg)
        warn(msg)

    groups: list[tuple[int | None, int | None]] = []
    for item in ds.get("FractionGroupSequence") or []:
        n = _whole(item.get("NumberOfFractionsPlanned"))
        groups.append((_whole(item.get("FractionGroupNumber")), n if n and n > 0 else None))
    fractions = groups[0][1] if len(groups) == 1 else None
    if len(groups) > 1:
        notes.append(f"{path}: {len(groups)} fraction groups (fractions planned: "
                     f"{', '.join(str(f) for _, f in groups)}); no single number of fractions")
    return RTPlan(
        path=path, prescription_gy=prescription, targets=targets, fractions_planned=fractions,
        fraction_groups=groups, frame_of_reference_uid=uid(ds, "FrameOfReferenceUID"),
        sop_instance_uid=uid(ds, "SOPInstanceUID"), label=text(ds.get("RTPlanLabel", "")).strip(),
        notes=notes)


@dataclass(frozen=True)
class Prescription:
    """The prescription an audit uses, and where it came from.

    Attributes
    ----------
    gy : float or None
        Dose in Gy (total over all fractions); None when unknown.
    source : {"given", "rtplan"} or None
        ``"given"``: a value given explicitly (``--prescription-gy``, the
        ``prescription_gy`` argument or manifest cell), which always wins;
        ``"rtplan"``: the RTPLAN's primary target prescription; None: unknown.
    given_as : str or None
        How the given value was passed (e.g. ``"--prescription-gy"``).
    rtplan : str or None
        The RTPLAN file, when one was read.
    rtplan_gy : float or None
        The plan's prescription (Gy), also when a given value won.
    """

    gy: float | None = None
    source: str | None = None
    given_as: str | None = None
    rtplan: str | None = None
    rtplan_gy: float | None = None

    def as_dict(self) -> dict:
        """A JSON-ready record for the provenance."""
        return {"gy": self.gy, "source": self.source, "given_as": self.given_as,
                "rtplan": self.rtplan, "rtplan_gy": self.rtplan_gy}


def choose_prescription(given_gy: float | None, plan: RTPlan | None, *,
                        given_as: str | None = None) -> Prescription:
    """The prescription to use: a given value wins over the plan's.

    Parameters
    ----------
    given_gy : float or None
        A value given explicitly (Gy).
    plan : RTPlan or None
        The plan read with :func:`read_rtplan`.
    given_as : str, optional
        How the given value was passed, for the message and the provenance
        (default ``--prescription-gy`` / ``prescription_gy=GY``).

    Warns
    -----
    SoarsDoseWarning
        Both are known and differ by more than :data:`PRESCRIPTION_TOLERANCE`
        (0.5 %) of the plan's value; the message names both values and the file.
    """
    given_as = given_as or option("prescription_gy", "GY")
    plan_gy = plan.prescription_gy if plan is not None else None
    plan_path = str(plan.path) if plan is not None else None
    if given_gy is not None:
        if plan_gy is not None and abs(given_gy - plan_gy) > PRESCRIPTION_TOLERANCE * plan_gy:
            warn(f"{plan_path}: the plan's prescription {plan_gy:g} Gy differs from the given "
                 f"{given_gy:g} Gy ({given_as}) by {100 * (given_gy - plan_gy) / plan_gy:+.1f} "
                 f"%; the given {given_gy:g} Gy is used. Check which is right")
        return Prescription(gy=float(given_gy), source="given", given_as=given_as,
                            rtplan=plan_path, rtplan_gy=plan_gy)
    if plan_gy is not None:
        return Prescription(gy=plan_gy, source="rtplan", rtplan=plan_path, rtplan_gy=plan_gy)
    return Prescription(rtplan=plan_path)
