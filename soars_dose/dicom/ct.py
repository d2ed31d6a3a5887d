"""Reading a CT image series into a :class:`~soars_dose.grid.Grid` and HU array."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from ..console import in_cli
from ..errors import CTSeriesChoiceError, DicomReadError, GeometryError, warn
from ..grid import AXIS_TOLERANCE, Grid
from ..inputs import require_folder
from .common import (
    NATIVE_SYNTAXES,
    check_pixel_length,
    decoder_available,
    file_layout,
    integer,
    numbers,
    orientation,
    require,
    text,
)


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
    patient_id, patient_name : str
        Of the first slice (``""`` when absent), read with the headers so
        that writing an RTSTRUCT for the series opens no slice again.
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
    patient_id: str = ""
    patient_name: str = ""

    @property
    def slice_thickness_mm(self) -> float:
        """Nominal slice step (mm) along the normal."""
        return float(self.grid.spacing[0])

    def load_hu(self, slices: "slice | None" = None) -> np.ndarray:
        """Read the slices; return HU as float32 ``[k, j, i]`` on :attr:`grid`.

        ``slices`` (a ``slice`` of array axis 0) reads only those slices,
        e.g. the few a crop needs out of a long series.

        Raises
        ------
        DicomReadError
            A slice that cannot be decoded (unsupported compression, wrong
            size) or with a non-numeric RescaleSlope / RescaleIntercept; the
            message names the slice file.
        """
        paths = self.paths if slices is None else self.paths[slices]
        out = np.empty((len(paths), *self.grid.shape[1:]), dtype=np.float32)
        for k, p in enumerate(paths):
            try:
                ds = pydicom.dcmread(p)
            except Exception as exc:
                raise DicomReadError(f"{p}: CT slice cannot be read ({exc})") from exc
            slope = _rescale(ds, p, "RescaleSlope", 1.0)
            icpt = _rescale(ds, p, "RescaleIntercept", 0.0)
            if "PixelData" not in ds:
                raise DicomReadError(f"{p}: CT slice has no pixel data; re-export the series")
            try:
                arr = np.asarray(ds.pixel_array)
            except Exception as exc:
                raise DicomReadError(
                    f"{p}: CT pixel data cannot be decoded (transfer syntax "
                    f"{getattr(ds.file_meta, 'TransferSyntaxUID', '?')}: {exc}); export the "
                    "series uncompressed"
                ) from exc
            if arr.shape != tuple(self.grid.shape[1:]):
                raise DicomReadError(
                    f"{p}: CT pixels decode to shape {arr.shape}, the series grid needs "
                    f"{tuple(self.grid.shape[1:])} (Rows x Columns); re-export the series"
                )
            out[k] = arr.astype(np.float32) * slope + icpt
        return out


def _rescale(ds, path: Path, keyword: str, default: float) -> float:
    if keyword not in ds or ds[keyword].value in (None, "", b""):
        return default
    return float(numbers(ds, path, keyword, 1)[0])


#: Header fields every slice of one series must share, with how to read them.
_SHARED = ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient")


def _slice_geometry(p: Path, ds) -> dict:
    """The checked geometry of one slice (refuses malformed values naming ``p``)."""
    require(ds, p, "SOPInstanceUID")
    return {
        "Rows": integer(ds, p, "Rows"),
        "Columns": integer(ds, p, "Columns"),
        "PixelSpacing": numbers(ds, p, "PixelSpacing", 2, positive=True),
        "ImageOrientationPatient": orientation(ds, p),
        "ImagePositionPatient": numbers(ds, p, "ImagePositionPatient", 3),
    }


def _check_slice_pixels(p: Path, ds, layout) -> str | None:
    """Refuse a native PixelData of the wrong length; return why pixels can't be decoded.

    Uses the byte walk of the file (no pixel data is read). Returns a
    warning text for a slice whose pixels this installation cannot decode
    (none, or a compressed syntax without decoder), or None.
    """
    ts = layout.transfer_syntax or str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")
                                        or "") or None
    if not layout.walked:
        return None  # no preamble: pydicom will decide when the pixels are read
    if layout.pixel_data_length is None and not layout.encapsulated:
        return f"{p}: CT slice has no pixel data"
    if layout.encapsulated or (ts is not None and ts not in NATIVE_SYNTAXES):
        if not decoder_available(ts):
            return (f"{p}: CT pixel data is compressed (transfer syntax {ts}) and no decoder "
                    "for it is installed; commands that need the CT numbers will fail")
        return None
    check_pixel_length(ds, p, layout.pixel_data_length, allowed_bits=(8, 16, 32))
    return None


#: Media Storage Directory (DICOMDIR): an index file, not an image.
_DICOMDIR = "1.2.840.10008.1.3.10"


def _has_dicom_magic(p: Path) -> bool:
    with open(p, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def _is_ct(ds) -> bool:
    return str(ds.get("Modality", "")).upper() == "CT" or str(
        ds.get("SOPClassUID", "")
    ) in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")


def _dicom_date(value) -> str:
    """``YYYYMMDD`` as ``YYYY-MM-DD``; anything else as written."""
    v = str(value or "").strip()
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}" if len(v) == 8 and v.isdigit() else v


def _series_line(uid: str, items: list) -> str:
    """One line describing a CT series of a folder, for the choose-a-series message."""
    ds = items[0][1]
    desc = str(ds.get("SeriesDescription", "") or "").strip() or "no description"
    try:
        thick = f"{float(ds.get('SliceThickness', '')):g} mm slices"
    except (TypeError, ValueError):  # absent or not a number: say so, the list still helps
        thick = "slice thickness unknown"
    date = _dicom_date(ds.get("AcquisitionDate", "")) or _dicom_date(ds.get("SeriesDate", ""))
    n = len(items)
    return (f"{uid or '(no SeriesInstanceUID)'}: {desc!r}, {n} slice{'s' if n != 1 else ''}, "
            f"{thick}, acquired {date or 'on an unknown date'}")


def read_ct_series(directory: "str | Path", series_uid: str | None = None, *,
                   choose_with: str | None = None) -> CTSeries:
    """Read the CT series in ``directory`` (non-CT files there are ignored).

    Parameters
    ----------
    directory : path
        Folder holding the CT slices (searched recursively).
    series_uid : str, optional
        SeriesInstanceUID of the series to take when the folder holds several.
    choose_with : str, optional
        How the caller's user chooses a series (``--ct-series UID``, a
        manifest column), named in the error; default the CLI flag under
        the command line, ``series_uid='UID'`` from Python.

    Raises
    ------
    DicomReadError
        No CT slice found; a slice
        that is truncated (checked on the bytes, see
        :func:`~soars_dose.dicom.common.file_layout`), lacks SOPInstanceUID
        or shares another slice's, has malformed geometry (PixelSpacing not
        2 positive finite values, ImagePositionPatient not 3, Rows/Columns
        not positive whole numbers), or native PixelData whose length
        disagrees with Rows x Columns x SamplesPerPixel x BitsAllocated/8
        (the one pad byte of an odd length is allowed). Each message names
        the slice file.
    CTSeriesChoiceError
        Several series and no ``series_uid``, or a ``series_uid`` the folder
        does not hold; the message lists every series (SeriesInstanceUID,
        SeriesDescription, slice count, slice thickness, AcquisitionDate or
        else SeriesDate) and names ``choose_with``.
    GeometryError
        A degenerate, non-unit or oblique ImageOrientationPatient; slices
        that differ in Rows, Columns, PixelSpacing or ImageOrientationPatient
        (the message names two disagreeing files and both values: the series
        is never gridded from its first slice); duplicate slice positions.

    Warns
    -----
    SoarsDoseWarning
        A slice whose pixels cannot be decoded here (no pixel data, or a
        compressed transfer syntax without an installed decoder), even
        though only :meth:`CTSeries.load_hu` needs the pixels; a DICOM file
        in the folder that pydicom cannot read or that has no Modality.

    Notes
    -----
    Uneven slice steps (including dropped slices) are detected and reported
    with a :class:`~soars_dose.errors.SoarsDoseWarning`; the grid then uses
    the median step and :attr:`CTSeries.uneven` is set.
    """
    directory = require_folder(directory, "a folder of CT slices", error=DicomReadError)
    by_series: dict[str, list] = {}
    layouts: dict[Path, object] = {}
    for p in sorted(directory.rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as exc:
            if _has_dicom_magic(p):
                file_layout(p)  # names a truncated file
                warn(f"{p}: a DICOM file in the CT folder cannot be read ({exc}); ignored")
            continue  # non-DICOM files (notes, thumbnails) live in CT folders
        if not _is_ct(ds):
            meta_sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
            if "Modality" not in ds and "SOPClassUID" not in ds and meta_sop != _DICOMDIR:
                # Neither CT nor anything else: perhaps a slice cut before its Modality.
                file_layout(p)
                warn(f"{p}: a DICOM file in the CT folder has no Modality or SOPClassUID; "
                     "ignored")
            continue  # another modality (an RTSTRUCT kept beside the slices)
        # Completeness first: a cut slice reads "successfully" with fewer values.
        layouts[p] = file_layout(p)
        by_series.setdefault(text(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    if not by_series:
        raise DicomReadError(f"{directory}: no CT image found (looked for Modality CT files)")
    if series_uid is not None:
        series_uid = series_uid.strip()
    if (series_uid is not None and series_uid not in by_series) or (
            series_uid is None and len(by_series) > 1):
        hint = choose_with or ("--ct-series UID" if in_cli() else "series_uid='UID'")
        raise CTSeriesChoiceError(str(directory), [_series_line(u, it) for u, it in
                                                   sorted(by_series.items())],
                                  series_uid, hint)
    if series_uid is None:
        series_uid = next(iter(by_series))
    items = by_series[series_uid]

    geoms = [_slice_geometry(p, ds) for p, ds in items]
    ref_path, ref = items[0][0], geoms[0]
    for (p, _), g in zip(items[1:], geoms[1:]):
        for key in _SHARED:
            a, b = np.atleast_1d(ref[key]), np.atleast_1d(g[key])
            tol = 1e-4 if key == "ImageOrientationPatient" else 1e-3
            if a.shape != b.shape or np.max(np.abs(a - b)) > tol:
                raise GeometryError(
                    f"{p}: {key} {np.round(b, 6).tolist()} differs from {ref_path} "
                    f"({np.round(a, 6).tolist()}); the slices of series {series_uid} in "
                    f"{directory} do not share one image grid. Resample the series to one "
                    "grid, or remove the slices that do not belong to it"
                )
    uids: dict[str, Path] = {}
    undecodable: list[str] = []
    for p, ds in items:
        u = text(ds.SOPInstanceUID)
        if u in uids:
            raise DicomReadError(
                f"{p}: SOPInstanceUID {u} is also the UID of {uids[u]}; the folder holds a "
                "copy of a slice or two exports mixed together"
            )
        uids[u] = p
        why = _check_slice_pixels(p, ds, layouts[p])
        if why:
            undecodable.append(why)
    if undecodable:
        more = f" (and {len(undecodable) - 1} more slice(s))" if len(undecodable) > 1 else ""
        warn(undecodable[0] + more)
    iop = ref["ImageOrientationPatient"]
    if np.any((np.abs(iop) > AXIS_TOLERANCE) & (np.abs(iop) < 1 - AXIS_TOLERANCE)):
        raise GeometryError(
            f"{directory}: CT orientation {iop.round(4).tolist()} is oblique; only axis-aligned "
            "orientations (HFS, HFP, FFS, FFP, decubitus) are supported: resample the CT first"
        )
    normal = np.cross(iop[:3], iop[3:])
    ipps = np.array([g["ImagePositionPatient"] for g in geoms])
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
    rows, cols = ref["Rows"], ref["Columns"]
    ps = [float(v) for v in ref["PixelSpacing"]]
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
        first = items[0][1]
        step = 1.0
        if "SliceThickness" in first and first.SliceThickness not in (None, ""):
            step = float(numbers(first, items[0][0], "SliceThickness", 1, positive=True)[0])
    # The nominal grid starts at the first slice and uses the median step.
    try:
        grid = Grid(
            shape=(pos.size, rows, cols),
            spacing=(step, ps[0], ps[1]),
            origin=tuple(ipps[0]),
            direction=np.vstack([normal, iop[3:], iop[:3]]),
        )
    except GeometryError as exc:
        raise GeometryError(f"{directory}: CT series {series_uid}: {exc}") from exc
    first = items[0][1]
    return CTSeries(
        paths=[p for p, _ in items],
        positions_mm=pos,
        grid=grid,
        series_uid=series_uid,
        study_uid=str(first.get("StudyInstanceUID", "")) or None,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")) or None,
        sop_instance_uids=[text(ds.SOPInstanceUID) for _, ds in items],
        patient_position=str(first.get("PatientPosition", "")) or None,
        uneven=uneven,
        missing_slices=missing,
        notes=notes,
        patient_id=text(first.get("PatientID", "")),
        patient_name=text(first.get("PatientName", "")),
    )
