"""The case data model: one fixed RTDOSE and named contour sets of one patient.

Reading files into a checked :class:`Case` is :mod:`soars_dose.load`; what
is computed from it is :mod:`soars_dose.audit`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .dicom.ct import CTSeries
from .dicom.rtplan import Prescription, RTPlan
from .dosegrid import DoseGrid
from .errors import InputError
from .rasterize import nominal_spacing_mm
from .structures import StructureSet

#: Name of the reference set in every table.
REFERENCE = "reference"

#: ``status`` values of a (set, ROI) row in ``stats``: computed in full, or
#: with part of the structure outside the dose grid.
OK, PARTIAL = "ok", "partial"
#: Not computed: the set has no ROI for an OAR of the reference, the ROI has
#: no contour, two ROIs claim one OAR, the structure misses the dose grid,
#: it would need more memory than allowed, or another input error.
MISSING, EMPTY, DUPLICATE, OUTSIDE_GRID, TOO_LARGE, ERROR = (
    "missing", "empty", "duplicate", "outside_grid", "too_large", "error")
#: Statuses whose row carries dose statistics.
COMPUTED = (OK, PARTIAL)


@dataclass(frozen=True)
class RoiOutcome:
    """Why a set has no usable structure for an OAR (or for one ROI).

    Attributes
    ----------
    status : str
        One of :data:`MISSING`, :data:`EMPTY`, :data:`DUPLICATE`.
    original : str
        The ROI name(s) as written in the file; ``""`` when missing.
    message : str
        What happened and what to do, naming the file.
    """

    status: str
    original: str
    message: str


@dataclass
class Case:
    """Everything needed to audit one patient.

    Attributes
    ----------
    dose : DoseGrid
        The fixed clinical dose (Gy).
    sets : dict of str -> StructureSet
        Contour sets by name; for a comparison the first is ``"reference"``.
    ct : CTSeries or None
        The planning CT, when given (slice thickness, frame of reference).
    patient : str
        Identifier used in tables (PatientID or a user label).
    notes : list of str
    plan : RTPlan or None
        The RTPLAN, when given (its prescription and frame of reference).
    prescription : Prescription
        The prescription (Gy) the audit uses and its source: a given value,
        else the plan's, else unknown (``gy`` None).
    """

    dose: DoseGrid
    sets: dict[str, StructureSet]
    ct: CTSeries | None = None
    patient: str = ""
    notes: list[str] = field(default_factory=list)
    plan: RTPlan | None = None
    prescription: Prescription = field(default_factory=Prescription)

    @property
    def prescription_gy(self) -> float | None:
        """The prescription in Gy (total over all fractions), or None when unknown."""
        return self.prescription.gy

    def nominal_spacing_mm(self, set_name: str) -> float | None:
        """The contour-plane spacing (mm) that gives the structures of a set their end caps.

        The CT's slice thickness when the case has a CT; otherwise the most
        common gap between contour planes over the set's structures (None
        when no structure has two planes). DVHs and contour metrics both
        use this value, so a structure's end caps are the same in both.
        """
        if self.ct is not None:
            return self.ct.slice_thickness_mm
        return nominal_spacing_mm(self.sets[set_name].structures, self.dose.grid)


#: A set name: ASCII letters, digits, ``_`` and ``-`` (a column value and part of file names).
SET_NAME = re.compile(r"[A-Za-z0-9_-]+")


def valid_set_name(name: str) -> bool:
    """Whether ``name`` matches :data:`SET_NAME` (the one rule for set names)."""
    return bool(SET_NAME.fullmatch(name or ""))


def check_set_name(name: str) -> None:
    """Refuse a set name that cannot be a column value and part of a file name.

    Raises
    ------
    InputError
        ``name`` is empty or holds characters other than ASCII letters,
        digits, ``_`` and ``-``.
    """
    if not valid_set_name(name):
        raise InputError(
            f"set name {name!r} must be non-empty letters, digits, '_' or '-' "
            "(it becomes a column value and part of file names)"
        )
