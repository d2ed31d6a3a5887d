"""Reading a CT image series into a :class:`~soars_dose.grid.Grid` and HU array."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from ..errors import DicomReadError, GeometryError, warn
from ..grid import AXIS_TOLERANCE, Grid
from .common import require


@dataclass
class CTSeries:
    """A CT series sorted along its slice normal.

    Attributes
    ----------
    paths : list of Path
        One file per slice, sorted by increasing position along the normal
        ``row_direction x column_direction`` (array axis 0).
    positions_mm : ndarray
        Slice positions along the normal, mm, increasing.
    grid : Grid
        The image grid (axis-0 spacing = median slice step when uneven).
    series_uid, study_uid, frame_of_reference_uid : str
    sop_instance_uids : list of str
        In slice order (for RTSTRUCT references).
    uneven : bool
        True when slice steps differ; ``missing_slices`` counts the gaps
        that look like dropped slices (a step of about k x the usual one).
    """

    paths: list[Path]
    positions_mm: np.ndarray
    grid: Grid
    series_uid: str
    study_uid: str | None
    frame_of_reference_uid: str | None
    sop_instance_uids: list[str]
    patient_position: str | None = None
    uneven: bool = False
    missing_slices: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def slice_thickness_mm(self) -> float:
        """Nominal slice step (mm) along the normal."""
        return float(self.grid.spacing[0])

    def load_hu(self) -> np.ndarray:
        """Read every slice; return HU as float32 ``[k, j, i]`` on :attr:`grid`."""
        out = np.empty(self.grid.shape, dtype=np.float32)
        for k, p in enumerate(self.paths):
            ds = pydicom.dcmread(p)
            slope = float(ds.get("RescaleSlope", 1.0))
            icpt = float(ds.get("RescaleIntercept", 0.0))
            out[k] = ds.pixel_array.astype(np.float32) * slope + icpt
        return out


def _is_ct(ds) -> bool:
    return str(ds.get("Modality", "")).upper() == "CT" or str(
        ds.get("SOPClassUID", "")
    ) in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")


def read_ct_series(directory: "str | Path", series_uid: str | None = None) -> CTSeries:
    """Read the CT series in ``directory`` (non-CT files there are ignored).

    Parameters
    ----------
    directory : path
        Folder holding the CT slices (searched recursively).
    series_uid : str, optional
        Which series to take when the folder holds several.

    Raises
    ------
    DicomReadError
        No CT slice found, several series without ``series_uid``, or slices
        missing geometry attributes.
    GeometryError
        Oblique or inconsistent orientations, or duplicate slice positions.

    Notes
    -----
    Uneven slice steps (including dropped slices) are detected and reported
    with a :class:`~soars_dose.errors.SoarsDoseWarning`; the grid then uses
    the median step and :attr:`CTSeries.uneven` is set.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DicomReadError(f"{directory}: not a folder (expected a folder of CT slices)")
    by_series: dict[str, list] = {}
    for p in sorted(directory.rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue  # non-DICOM files (notes, thumbnails) live in CT folders
        if _is_ct(ds):
            by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    if not by_series:
        raise DicomReadError(f"{directory}: no CT image found (looked for Modality CT files)")
    if series_uid is not None:
        if series_uid not in by_series:
            raise DicomReadError(
                f"{directory}: no CT series with SeriesInstanceUID {series_uid}; "
                f"found {sorted(by_series)}"
            )
        items = by_series[series_uid]
    elif len(by_series) > 1:
        raise DicomReadError(
            f"{directory}: holds {len(by_series)} CT series ({sorted(by_series)}); "
            "pass the SeriesInstanceUID to use or give a folder with one series"
        )
    else:
        series_uid, items = next(iter(by_series.items()))

    for p, ds in items:
        require(ds, p, "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
                "Rows", "Columns")
    iops = np.array([np.asarray(ds.ImageOrientationPatient, dtype=float) for _, ds in items])
    if np.ptp(iops, axis=0).max() > 1e-4:
        raise GeometryError(
            f"{directory}: slices of series {series_uid} have different ImageOrientationPatient; "
            "a series must share one orientation"
        )
    iop = iops[0]
    if np.any((np.abs(iop) > AXIS_TOLERANCE) & (np.abs(iop) < 1 - AXIS_TOLERANCE)):
        raise GeometryError(
            f"{directory}: CT orientation {iop.round(4).tolist()} is oblique; only axis-aligned "
            "orientations (HFS, HFP, FFS, FFP, decubitus) are supported: resample the CT first"
        )
    normal = np.cross(iop[:3], iop[3:])
    ipps = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for _, ds in items])
    pos = ipps @ normal
    order = np.argsort(pos)
    pos = pos[order]
    items = [items[i] for i in order]
    ipps = ipps[order]
    if pos.size > 1 and np.min(np.diff(pos)) < 1e-3:
        dup = pos[np.argmin(np.diff(pos))]
        raise GeometryError(
            f"{directory}: two CT slices at the same position {dup:.3f} mm along the normal; "
            "the folder probably mixes two acquisitions"
        )
    rows, cols = int(items[0][1].Rows), int(items[0][1].Columns)
    ps = [float(v) for v in items[0][1].PixelSpacing]
    notes: list[str] = []
    uneven, missing = False, 0
    if pos.size > 1:
        steps = np.diff(pos)
        step = float(np.median(steps))
        if np.ptp(steps) > 0.01 * step:
            uneven = True
            ratio = steps / step
            missing = int(np.sum(np.maximum(np.round(ratio) - 1, 0)))
            msg = (
                f"{directory}: CT slices are unevenly spaced (steps "
                f"{np.unique(np.round(steps, 2)).tolist()} mm"
                + (f"; about {missing} slice(s) seem to be missing" if missing else "")
                + f"); using the median step {step:.3f} mm for the nominal grid"
            )
            notes.append(msg)
            warn(msg)
    else:
        step = float(items[0][1].get("SliceThickness", 1.0) or 1.0)
    # The nominal grid starts at the first slice and uses the median step.
    grid = Grid(
        shape=(pos.size, rows, cols),
        spacing=(step, ps[0], ps[1]),
        origin=tuple(ipps[0]),
        direction=np.vstack([normal, iop[3:], iop[:3]]),
    )
    first = items[0][1]
    return CTSeries(
        paths=[p for p, _ in items],
        positions_mm=pos,
        grid=grid,
        series_uid=series_uid,
        study_uid=str(first.get("StudyInstanceUID", "")) or None,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")) or None,
        sop_instance_uids=[str(ds.SOPInstanceUID) for _, ds in items],
        patient_position=str(first.get("PatientPosition", "")) or None,
        uneven=uneven,
        missing_slices=missing,
        notes=notes,
    )
