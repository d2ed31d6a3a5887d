"""Structure sets: ROIs made of closed planar contours in patient coordinates.

A :class:`Structure` keeps its contours exactly as the RTSTRUCT gives them
(LPS mm points); rasterisation onto a grid lives in :mod:`soars_dose.rasterize`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Structure:
    """One ROI.

    Attributes
    ----------
    name : str
        ROIName as written in the file (unmodified).
    number : int
        ROINumber.
    contours : list of ndarray
        Closed planar polygons, each an ``(n, 3)`` array of LPS points in mm
        (the closing edge from the last to the first point is implicit).
        Several polygons may share one plane; holes follow the even-odd rule.
    color : tuple of int or None
        ROIDisplayColor (R, G, B).
    interpreted_type : str or None
        RTROIInterpretedType (ORGAN, PTV, EXTERNAL, ...).
    generation_algorithm : str or None
        ROIGenerationAlgorithm (AUTOMATIC, SEMIAUTOMATIC, MANUAL).
    """

    name: str
    number: int
    contours: list[np.ndarray] = field(default_factory=list)
    color: tuple[int, int, int] | None = None
    interpreted_type: str | None = None
    generation_algorithm: str | None = None

    @property
    def is_empty(self) -> bool:
        """True when the ROI holds no usable contour."""
        return len(self.contours) == 0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS lower and upper corners (mm) of all contour points."""
        pts = np.vstack(self.contours)
        return pts.min(axis=0), pts.max(axis=0)


@dataclass
class StructureSet:
    """All ROIs of one RTSTRUCT (or made in memory).

    Attributes
    ----------
    structures : list of Structure
        In file order.
    frame_of_reference_uid : str or None
        The frame of reference the contours are given in.
    source : Path or None
        File it was read from.
    sop_instance_uid, series_instance_uid, study_instance_uid : str or None
        UIDs of the RTSTRUCT itself.
    referenced_series_uid : str or None
        SeriesInstanceUID of the image series the contours were drawn on.
    label : str or None
        StructureSetLabel.
    """

    structures: list[Structure] = field(default_factory=list)
    frame_of_reference_uid: str | None = None
    source: Path | None = None
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    referenced_series_uid: str | None = None
    label: str | None = None

    def names(self) -> list[str]:
        """ROI names in file order."""
        return [s.name for s in self.structures]

    def __getitem__(self, name: str) -> Structure:
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(f"no ROI named {name!r} in {self.source or 'structure set'}")

    def __iter__(self):
        return iter(self.structures)

    def __len__(self) -> int:
        return len(self.structures)
