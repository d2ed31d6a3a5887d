"""Reading RTDOSE files into a :class:`~soars_dose.dosegrid.DoseGrid` in Gy."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..console import option
from ..dosegrid import DoseGrid
from ..errors import (
    DicomReadError,
    DoseUnitsError,
    FrameOfReferenceError,
    GeometryError,
    warn,
)
from ..grid import AXIS_TOLERANCE, Grid
from .common import (
    NATIVE_SYNTAXES,
    check_pixel_length,
    decoder_available,
    expected_pixel_bytes,
    integer,
    numbers,
    orientation,
    read_checked,
    require,
    text,
    uid,
)


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
    off = numbers(ds, path, "GridFrameOffsetVector")
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


#: DoseSummationType values that mean "the dose of the whole plan" (no warning).
WHOLE_PLAN_SUMMATIONS = ("PLAN", "MULTI_PLAN")


def read_rtdose(
    path: "str | Path",
    *,
    prescription_gy: float | None = None,
    warn_summation: bool = True,
) -> DoseGrid:
    """Read one RTDOSE file.

    Parameters
    ----------
    path : path
        The RTDOSE file (multi-frame or single-frame).
    prescription_gy : float, optional
        Needed only for ``DoseUnits RELATIVE``: the dose (Gy) that a relative
        value of 1.0 stands for. Without it relative doses are refused.
    warn_summation : bool
        Warn when DoseSummationType is not PLAN or MULTI_PLAN (a BEAM,
        FRACTION, BRACHY, CONTROL_POINT or RECORD dose, or none stated):
        audited as if it were the plan. :func:`read_rtdoses` turns it off
        per file when it sums several doses and warns once about the sum.

    Returns
    -------
    DoseGrid
        Dose in Gy on the grid the file defines; slices are reordered when
        GridFrameOffsetVector decreases so that axis 0 increases along the
        normal ``row_direction x column_direction``.

    Raises
    ------
    DicomReadError
        Truncated file; missing, non-numeric or wrongly counted attributes
        (PixelSpacing not 2 positive values, ImagePositionPatient not 3,
        non-finite DoseGridScaling or GridFrameOffsetVector); PixelData
        whose length disagrees with Rows x Columns x NumberOfFrames x
        SamplesPerPixel x BitsAllocated/8 (only the DICOM pad byte is
        allowed); compressed pixel data that cannot be decoded here.
    GeometryError
        Degenerate, non-unit or oblique orientation; repeated or uneven
        frame offsets.
    DoseUnitsError
        Relative dose without a prescription, unknown DoseUnits.

    Warns
    -----
    SoarsDoseWarning
        DoseGridScaling 0 or a dose that is 0 everywhere (every statistic
        would be 0 Gy); a non-plan DoseSummationType; no FrameOfReferenceUID
        (the frame check against structures and CT is then skipped);
        negative or non-finite values; single-plane dose; CGY units.
    """
    path = Path(path)
    ds, layout = read_checked(path, "RTDOSE")
    require(ds, path, "DoseUnits")
    if "PixelData" not in ds:
        raise DicomReadError(
            f"{path}: RTDOSE without pixel data (a DVH-only dose object?); "
            "export the 3-D dose grid from the planning system"
        )
    iop = orientation(ds, path)
    ipp = numbers(ds, path, "ImagePositionPatient", 3)
    spacing = numbers(ds, path, "PixelSpacing", 2, positive=True)
    rows, cols = integer(ds, path, "Rows"), integer(ds, path, "Columns")
    n_frames = integer(ds, path, "NumberOfFrames", default=1)
    if np.any((np.abs(iop) > AXIS_TOLERANCE) & (np.abs(iop) < 1 - AXIS_TOLERANCE)):
        raise GeometryError(
            f"{path}: dose orientation {iop.round(4).tolist()} is oblique; only axis-aligned "
            "orientations (HFS, HFP, FFS, FFP, decubitus) are supported"
        )
    pixels = _dose_pixels(ds, path, layout, rows, cols, n_frames)
    if "DoseGridScaling" in ds and ds.DoseGridScaling not in (None, ""):
        scaling = float(numbers(ds, path, "DoseGridScaling", 1)[0])
        if scaling < 0:
            raise DicomReadError(
                f"{path}: DoseGridScaling = {scaling:g} is negative; the dose cannot be "
                "converted to Gy, re-export it"
            )
    else:
        if np.issubdtype(pixels.dtype, np.integer):
            raise DicomReadError(
                f"{path}: integer dose pixels without DoseGridScaling; the dose cannot be "
                "converted to Gy"
            )
        scaling = 1.0
    dose = pixels.astype(np.float64) * scaling

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
                f"({option('prescription_gy', 'GY')}) so that 1.0 maps to it, or export the "
                "dose in absolute units (GY)"
            )
        if not 0 < prescription_gy < float("inf"):
            raise DoseUnitsError(f"{path}: prescription ({option('prescription_gy', 'GY')}) "
                                 f"must be a finite number > 0 Gy, got {prescription_gy}")
        dose *= float(prescription_gy)
        notes.append(f"RELATIVE dose scaled by the given prescription {prescription_gy} Gy")
    else:
        raise DoseUnitsError(f"{path}: unknown DoseUnits {units!r}; expected GY or RELATIVE")

    offsets = _frame_offsets(ds, path, n_frames, ipp, iop)
    if offsets.size > 1:
        order = np.argsort(offsets, kind="stable")
        offsets = offsets[order]
        dose = dose[order]
        steps = np.diff(offsets)
        if np.any(steps < 1e-6):
            at = offsets[1:][steps < 1e-6][0]
            raise GeometryError(
                f"{path}: two dose frames at the same offset {at:g} mm in GridFrameOffsetVector; "
                "the dose file is inconsistent, re-export it"
            )
        if np.ptp(steps) > 1e-3 * max(1.0, steps.mean()):
            raise GeometryError(
                f"{path}: dose frames (GridFrameOffsetVector) are unevenly spaced (steps "
                f"{np.unique(np.round(steps, 3)).tolist()} mm); resample the dose to a "
                "regular grid in the planning system"
            )
        grid_offsets = offsets
        thick = 0.0
    else:
        grid_offsets = offsets
        thick = 0.0
        if "SliceThickness" in ds and ds.SliceThickness not in (None, ""):
            thick = float(numbers(ds, path, "SliceThickness", 1, positive=True)[0])
        msg = f"{path}: single-plane dose; values are used as constant across the plane"
        notes.append(msg)
        warn(msg)
    try:
        grid = Grid.from_dicom(iop, ipp, spacing, grid_offsets, rows, cols)
        if offsets.size == 1 and thick > 0:
            grid = Grid(grid.shape, (thick, *grid.spacing[1:]), grid.origin, grid.direction)
    except GeometryError as exc:
        raise GeometryError(f"{path}: {exc}; the dose geometry is invalid, re-export it") from exc

    summation = str(ds.get("DoseSummationType", "") or "").strip().upper() or None
    dose_type = str(ds.get("DoseType", "") or "") or None
    if summation not in WHOLE_PLAN_SUMMATIONS:
        msg = (f"DoseSummationType {summation}: not the whole-plan dose" if summation
               else "no DoseSummationType: not stated to be the whole-plan dose")
        notes.append(msg)
        if warn_summation:
            warn(f"{path}: {msg}; it is audited as if it were the plan dose. Give the plan "
                 "dose, or all beam doses with --sum-doses")
    if dose_type == "ERROR":
        warn(f"{path}: DoseType ERROR (an uncertainty map, not a dose)")
    frame = uid(ds, "FrameOfReferenceUID")
    if frame is None:
        msg = (f"{path}: RTDOSE has no FrameOfReferenceUID; the check that dose, structures "
               "and CT share one frame of reference is skipped")
        notes.append(msg)
        warn(msg)
    if not np.all(np.isfinite(dose)) or dose.min() < 0:
        warn(f"{path}: dose has negative or non-finite values; they are kept as read")
    if scaling == 0:
        warn(f"{path}: DoseGridScaling is 0, so the dose is 0 Gy everywhere; every dose "
             "statistic would be 0 Gy. Re-export the dose")
    elif not np.any(dose):
        warn(f"{path}: the dose is 0 Gy in every voxel; every dose statistic would be 0 Gy. "
             "Check that the right (calculated) dose was exported")
    return DoseGrid(
        grid=grid,
        values=dose.astype(np.float32),
        summation_type=summation,
        dose_type=dose_type,
        frame_of_reference_uid=frame,
        sources=[path],
        sop_instance_uids=[uid(ds, "SOPInstanceUID") or ""],
        notes=notes,
        patient_id=text(ds.get("PatientID", "")),
    )


def _dose_pixels(ds, path: Path, layout, rows: int, cols: int, n_frames: int) -> np.ndarray:
    """The stored pixel values as ``[frame, row, column]``, lengths checked first.

    Native data is length-checked before pydicom sees it (pydicom 3 only
    warns and drops the excess of a too-long PixelData). Encapsulated data
    cannot be checked that way: it is decoded when a decoder is installed
    and the decoded size compared with the header.
    """
    ts = layout.transfer_syntax or str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "") or None
    encapsulated = layout.encapsulated or (ts is not None and ts not in NATIVE_SYNTAXES)
    if not encapsulated:
        check_pixel_length(ds, path, len(ds.PixelData), allowed_bits=(16, 32))
    elif not decoder_available(ts):
        raise DicomReadError(
            f"{path}: pixel data is compressed (transfer syntax {ts}) and no decoder for it is "
            "installed; export the dose uncompressed"
        )
    else:
        expected_pixel_bytes(ds, path, allowed_bits=(16, 32))  # header fields still checked
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise DicomReadError(f"{path}: pixel data cannot be decoded ({exc})") from exc
    if pixels.size != n_frames * rows * cols:
        raise DicomReadError(
            f"{path}: decoded pixel data has {pixels.size} values but the header needs "
            f"{n_frames * rows * cols} (NumberOfFrames {n_frames} x Rows {rows} x Columns {cols}); "
            "re-export the dose"
        )
    return pixels.reshape(n_frames, rows, cols)


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
    summing = sum_doses and len(paths) > 1
    doses = [read_rtdose(p, prescription_gy=prescription_gy, warn_summation=not summing)
             for p in paths]
    if len(doses) == 1:
        return doses[0]
    if not sum_doses:
        raise DicomReadError(
            f"{len(paths)} RTDOSE files given ({', '.join(Path(p).name for p in paths)}); pass "
            f"{option('sum_doses')} to add them, e.g. per-beam doses of one plan"
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
    if any(k not in WHOLE_PLAN_SUMMATIONS for k in kinds):
        warn(f"summed {len(doses)} RTDOSE files ({', '.join(Path(p).name for p in paths)}) of "
             f"DoseSummationType {'/'.join(kinds)}; the sum is audited as the plan dose: check "
             "that they are all the beams (or fractions) of one plan")
    return DoseGrid(
        grid=first.grid,
        values=total.astype(np.float32),
        summation_type=f"SUM of {len(doses)} ({'/'.join(kinds)})",
        dose_type=first.dose_type,
        frame_of_reference_uid=first.frame_of_reference_uid,
        sources=[p for d in doses for p in d.sources],
        sop_instance_uids=[u for d in doses for u in d.sop_instance_uids],
        notes=[n for d in doses for n in d.notes] + [f"summed {len(doses)} dose files"],
        patient_id=first.patient_id,
    )
