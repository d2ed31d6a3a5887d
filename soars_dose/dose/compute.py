"""Structures on a fixed dose grid -> DVHs (the core of the dose audit)."""

from __future__ import annotations

import numpy as np

from ..errors import StructureError, warn
from ..rasterize import StructureSamples, sample_structure
from ..structures import Structure
from .dosegrid import DoseGrid
from .dvh import BIN_WIDTH_GY, DVH, DVHBuilder

#: Below this fraction of its volume inside the dose grid a structure is warned about.
FULL_COVERAGE = 0.9999


def dvh_of_samples(samples: StructureSamples, dose: DoseGrid, name: str,
                   bin_width: float = BIN_WIDTH_GY, interpolation: str = "linear") -> DVH:
    """DVH of already computed samples (reuse the geometry for many doses).

    Streams the samples plane by plane so that memory stays proportional
    to one plane's samples plus three numbers per sample.
    """
    builder = DVHBuilder(name, bin_width)
    for blk in samples.blocks:
        idx, w, box, inside = samples.block_arrays(blk)
        if not np.any(inside):
            continue
        d, g = dose.interpolate(idx[inside], gradient=True, method=interpolation)
        gb = g * box[inside]
        builder.add(d, np.sqrt(np.einsum("ij,ij->i", gb, gb)), w[inside])
    if builder.volume <= 0:
        raise StructureError(
            f"ROI {name!r} lies entirely outside the dose grid {dose.grid}; check that the "
            "dose and the structures belong to the same patient and plan"
        )
    dvh = builder.build(samples.volume_mm3)
    dvh.notes.extend(samples.notes)
    return dvh


def compute_dvh(
    structure: Structure,
    dose: DoseGrid,
    *,
    factor: "int | str" = "auto",
    nominal_spacing_mm: float | None = None,
    bin_width: float = BIN_WIDTH_GY,
    interpolation: str = "linear",
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
    interpolation : {"linear", "nearest"}
        Dose between voxel centres: trilinear (default) or constant per voxel.
    source : str
        File name for messages.

    Warns
    -----
    SoarsDoseWarning
        When less than 100 % of the structure lies inside the dose grid.
    """
    samples = sample_structure(structure, dose.grid, factor=factor,
                               nominal_spacing_mm=nominal_spacing_mm, source=source)
    dvh = dvh_of_samples(samples, dose, structure.name, bin_width, interpolation)
    if dvh.coverage < FULL_COVERAGE:
        msg = (f"{source}: ROI {structure.name!r}: only {100 * dvh.coverage:.1f} % of its "
               f"volume lies inside the dose grid; its statistics cover that part only")
        dvh.notes.append(msg)
        warn(msg)
    return dvh
