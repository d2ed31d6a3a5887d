"""Structures on a fixed dose grid -> DVHs (the core of the dose audit)."""

from __future__ import annotations

import numpy as np

from ..errors import StructureError, warn
from ..rasterize import StructureSamples, sample_structure
from ..structures import Structure
from .dosegrid import DoseGrid
from .dvh import BIN_WIDTH_GY, DVH, dvh_from_samples

#: Below this fraction of its volume inside the dose grid a structure is warned about.
FULL_COVERAGE = 0.9999


def dvh_of_samples(samples: StructureSamples, dose: DoseGrid, name: str,
                   bin_width: float = BIN_WIDTH_GY) -> DVH:
    """DVH of already computed samples (reuse the geometry for many doses)."""
    keep = samples.inside
    if not np.any(keep):
        raise StructureError(
            f"ROI {name!r} lies entirely outside the dose grid {dose.grid}; check that the "
            "dose and the structures belong to the same patient and plan"
        )
    d, g = dose.interpolate(samples.index[keep], gradient=True)
    dvh = dvh_from_samples(name, d, g, samples.box[keep], samples.weight_mm3[keep],
                           samples.volume_mm3, bin_width)
    dvh.notes.extend(samples.notes)
    return dvh


def compute_dvh(
    structure: Structure,
    dose: DoseGrid,
    *,
    factor: "int | str" = "auto",
    nominal_spacing_mm: float | None = None,
    bin_width: float = BIN_WIDTH_GY,
    source: str = "",
) -> DVH:
    """DVH and statistics of one structure on a dose grid.

    Parameters
    ----------
    structure : Structure
        Closed planar contours (LPS mm).
    dose : DoseGrid
        Dose in Gy.
    factor : int or "auto"
        In-plane supersampling factor (see :func:`soars_dose.rasterize.sample_structure`).
    nominal_spacing_mm : float, optional
        Nominal contour spacing (CT slice thickness) for end caps.
    bin_width : float
        DVH bin width in Gy (default 0.01 Gy).
    source : str
        File name for messages.

    Warns
    -----
    SoarsDoseWarning
        When less than 100 % of the structure lies inside the dose grid.
    """
    samples = sample_structure(structure, dose.grid, factor=factor,
                               nominal_spacing_mm=nominal_spacing_mm, source=source)
    dvh = dvh_of_samples(samples, dose, structure.name, bin_width)
    if dvh.coverage < FULL_COVERAGE:
        msg = (f"{source}: ROI {structure.name!r}: only {100 * dvh.coverage:.1f} % of its "
               f"volume lies inside the dose grid; its statistics cover that part only")
        dvh.notes.append(msg)
        warn(msg)
    return dvh
