"""Reading RTDOSE files into a :class:`~soars_dose.dose.dosegrid.DoseGrid` in Gy."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..dose.dosegrid import DoseGrid
from ..errors import DicomReadError, DoseUnitsError, FrameOfReferenceError, GeometryError, warn
from ..grid import AXIS_TOLERANCE, Grid
from .common import read_dataset, require, uid


def _frame_offsets(ds, path: Path, n_frames: int, ipp: np.ndarray, iop: np.ndarray) -> np.ndarray:
    """Slice offsets (mm) along the normal, relative to ImagePositionPatient.

    GridFrameOffsetVector comes in two forms (PS3.3 C.8.8.3.2): *relative*,
    whose first element is 0, and *absolute*, whose elements are patient z
    positions (only defined for an axial ``[1,0,0,0,1,0]`` orientation,
    where the first element equals ImagePositionPatient z).
    """
    if n_frames == 1 and "GridFrameOffsetVector" not in ds:
        return np.zeros(1)
    require(ds, path, "GridFrameOffsetVector")
    off = np.asarray(ds.GridFrameOffsetVector, dtype=float).ravel()
    if off.size != n_frames:
        raise DicomReadError(
            f"{path}: GridFrameOffsetVector has {off.size} values for {n_frames} frames; "
            "the dose file is inconsistent"
        )
    if abs(off[0]) < 1e-6:
        return off
    standard_axial = np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=AXIS_TOLERANCE)
    if standard_axial and abs(off[0] - ipp[2]) < 1e-3:
        return off - ipp[2]
    raise GeometryError(
        f"{path}: GridFrameOffsetVector starts at {off[0]} mm, which is neither 0 (relative "
        f"form) nor ImagePositionPatient z = {ipp[2]} with an axial orientation (absolute "
        "form); the slice positions are ambiguous, re-export the dose from the planning system"
    )


def read_rtdose(
    path: "str | Path",
    *,
    prescription_gy: float | None = None,
) -> DoseGrid:
    """Read one RTDOSE file.

    Parameters
    ----------
    path : path
        The RTDOSE file (multi-frame or single-frame).
    prescription_gy : float, optional
        Needed only for ``DoseUnits RELATIVE``: the dose (Gy) that a relative
        value of 1.0 stands for. Without it relative doses are refused.

    Returns
    -------
    DoseGrid
        Dose in Gy on the grid the file defines; slices are reordered when
        GridFrameOffsetVector decreases so that axis 0 increases along the
        normal ``row_direction x column_direction``.

    Raises
    ------
    DicomReadError, GeometryError, DoseUnitsError
        With the file name and what to do.
    """
    path = Path(path)
    ds = read_dataset(path, "RTDOSE")
    require(ds, path, "Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
            "ImageOrientationPatient", "DoseUnits")
    if "PixelData" not in ds:
        raise DicomReadError(
            f"{path}: RTDOSE without pixel data (a DVH-only dose object?); "
            "export the 3-D dose grid from the planning system"
        )
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    if np.any((np.abs(iop) > AXIS_TOLERANCE) & (np.abs(iop) < 1 - AXIS_TOLERANCE)):
        raise GeometryError(
            f"{path}: dose orientation {iop.round(4).tolist()} is oblique; only axis-aligned "
            "orientations (HFS, HFP, FFS, FFP, decubitus) are supported"
        )
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DicomReadError(f"{path}: pixel data cannot be decoded ({exc})") from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = np.asarray(pixels).reshape(n_frames, int(ds.Rows), int(ds.Columns))
    scaling = ds.get("DoseGridScaling")
    if scaling is None:
        if np.issubdtype(pixels.dtype, np.integer):
            raise DicomReadError(
                f"{path}: integer dose pixels without DoseGridScaling; the dose cannot be "
                "converted to Gy"
            )
        scaling = 1.0
    dose = pixels.astype(np.float64) * float(scaling)

    units = str(ds.DoseUnits).strip().upper()
    notes: list[str] = []
    if units == "GY":
        pass
    elif units == "CGY":  # not a defined term, but written by some systems
        dose /= 100.0
        notes.append("DoseUnits CGY converted to Gy")
        warn(f"{path}: DoseUnits 'CGY' is not a DICOM defined term; converted to Gy")
    elif units == "RELATIVE":
        if prescription_gy is None:
            raise DoseUnitsError(
                f"{path}: DoseUnits RELATIVE; the dose is not in Gy. Give the prescription "
                "(--prescription-gy / prescription_gy=) so that 1.0 maps to it, or export the "
                "dose in absolute units (GY)"
            )
        if not prescription_gy > 0:
            raise DoseUnitsError(f"{path}: prescription must be > 0 Gy, got {prescription_gy}")
        dose *= float(prescription_gy)
        notes.append(f"RELATIVE dose scaled by the given prescription {prescription_gy} Gy")
    else:
        raise DoseUnitsError(f"{path}: unknown DoseUnits {units!r}; expected GY or RELATIVE")

    offsets = _frame_offsets(ds, path, n_frames, ipp, iop)
    if offsets.size > 1:
        order = np.argsort(offsets)
        offsets = offsets[order]
        dose = dose[order]
        steps = np.diff(offsets)
        if np.any(steps < 1e-6):
            raise GeometryError(f"{path}: two dose frames at the same offset")
        if np.ptp(steps) > 1e-3 * max(1.0, steps.mean()):
            raise GeometryError(
                f"{path}: dose frames are unevenly spaced (steps "
                f"{np.unique(np.round(steps, 3)).tolist()} mm); resample the dose to a "
                "regular grid in the planning system"
            )
        grid_offsets = offsets
    else:
        grid_offsets = offsets
        thick = float(ds.get("SliceThickness", 0) or 0)
        msg = f"{path}: single-plane dose; values are used as constant across the plane"
        notes.append(msg)
        warn(msg)
    grid = Grid.from_dicom(iop, ipp, ds.PixelSpacing, grid_offsets, ds.Rows, ds.Columns)
    if offsets.size == 1 and float(ds.get("SliceThickness", 0) or 0) > 0:
        grid = Grid(grid.shape, (thick, *grid.spacing[1:]), grid.origin, grid.direction)

    summation = str(ds.get("DoseSummationType", "") or "") or None
    dose_type = str(ds.get("DoseType", "") or "") or None
    if summation in ("FRACTION", "BEAM", "BRACHY", "CONTROL_POINT"):
        notes.append(f"DoseSummationType {summation}: not the whole-plan dose")
    if dose_type == "ERROR":
        warn(f"{path}: DoseType ERROR (an uncertainty map, not a dose)")
    if not np.all(np.isfinite(dose)) or dose.min() < 0:
        warn(f"{path}: dose has negative or non-finite values; they are kept as read")
    return DoseGrid(
        grid=grid,
        values=dose.astype(np.float32),
        summation_type=summation,
        dose_type=dose_type,
        frame_of_reference_uid=uid(ds, "FrameOfReferenceUID"),
        sources=[path],
        sop_instance_uids=[uid(ds, "SOPInstanceUID") or ""],
        notes=notes,
    )


def read_rtdoses(
    paths: Sequence["str | Path"],
    *,
    sum_doses: bool = False,
    prescription_gy: float | None = None,
) -> DoseGrid:
    """Read one RTDOSE, or several on one grid summed when ``sum_doses`` is set.

    Raises
    ------
    DicomReadError
        Several files without ``sum_doses``.
    GeometryError, FrameOfReferenceError
        Files on different grids or frames of reference.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DicomReadError("no RTDOSE file given")
    doses = [read_rtdose(p, prescription_gy=prescription_gy) for p in paths]
    if len(doses) == 1:
        return doses[0]
    if not sum_doses:
        raise DicomReadError(
            f"{len(paths)} RTDOSE files given ({', '.join(p.name for p in paths)}); pass "
            "--sum-doses (sum_doses=True) to add them, e.g. per-beam doses of one plan"
        )
    first = doses[0]
    for d in doses[1:]:
        if d.frame_of_reference_uid != first.frame_of_reference_uid:
            raise FrameOfReferenceError(
                f"{d.sources[0]}: FrameOfReferenceUID {d.frame_of_reference_uid} differs from "
                f"{first.sources[0]} ({first.frame_of_reference_uid}); doses of different "
                "frames cannot be summed"
            )
        if not d.grid.same_as(first.grid):
            raise GeometryError(
                f"{d.sources[0]}: dose grid {d.grid} differs from {first.sources[0]} "
                f"({first.grid}); only doses on one grid are summed, resample them first"
            )
    total = np.sum([d.values.astype(np.float64) for d in doses], axis=0)
    kinds = sorted({d.summation_type or "?" for d in doses})
    return DoseGrid(
        grid=first.grid,
        values=total.astype(np.float32),
        summation_type=f"SUM of {len(doses)} ({'/'.join(kinds)})",
        dose_type=first.dose_type,
        frame_of_reference_uid=first.frame_of_reference_uid,
        sources=[p for d in doses for p in d.sources],
        sop_instance_uids=[u for d in doses for u in d.sop_instance_uids],
        notes=[n for d in doses for n in d.notes] + [f"summed {len(doses)} dose files"],
    )
