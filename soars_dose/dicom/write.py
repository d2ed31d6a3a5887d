"""Writing CT series, RT Dose and RT Structure Set files.

Conventions
-----------
* World coordinates are DICOM patient coordinates (LPS, mm).
* Arrays are indexed ``[k, j, i]`` = ``[slice, row, column]`` on a
  :class:`~soars_dose.grid.Grid`; ``grid.direction[2]`` is the DICOM row
  direction (increasing column index), ``grid.direction[1]`` the column
  direction (increasing row index), so ImageOrientationPatient is
  ``direction[2] + direction[1]`` and PixelSpacing ``[spacing[1], spacing[2]]``.
* Doses in Gy, CT numbers in HU.

Every file is written atomically (a temporary file in the target folder,
then :func:`os.replace`), so a reader never sees half a file, and no
existing file is replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
)
from pydicom.valuerep import format_number_as_ds
from skimage.measure import find_contours

from ..console import option
from ..errors import FrameOfReferenceError, GeometryError, OutputExistsError, warn
from ..grid import Grid
from ..outputs import atomic_write_file
from ..structures import Structure, StructureSet
from .ct import CTSeries
from .uids import new_uid

__all__ = [
    "UnwritableGeometryError",
    "masks_to_contours",
    "patient_position_from_direction",
    "write_ct_series",
    "write_rtdose",
    "write_rtstruct",
]

#: Detached Study Management SOP Class, which RTReferencedStudySequence
#: conventionally names as the referenced SOP class of a study.
_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
_CONTOUR_DATA = Tag(0x3006, 0x0050)
_GRID_FRAME_OFFSET_VECTOR = Tag(0x3004, 0x000C)
#: Largest value length an explicit-VR DS element can carry (16-bit length).
_MAX_EXPLICIT_LENGTH = 0xFFFE
_CHARSET = "ISO_IR 192"  # UTF-8: ROI and patient names may be any language

#: ImageOrientationPatient (rounded, row then column cosines) of the eight
#: standard patient positions (PS3.3 C.7.3.1.1.2), derived from the gantry
#: frame: image +row = right of a viewer at the table foot facing the
#: gantry, image +column = towards the floor.
_POSITION_BY_IOP: dict[tuple[int, ...], str] = {
    (1, 0, 0, 0, 1, 0): "HFS",
    (-1, 0, 0, 0, -1, 0): "HFP",
    (-1, 0, 0, 0, 1, 0): "FFS",
    (1, 0, 0, 0, -1, 0): "FFP",
    (0, -1, 0, 1, 0, 0): "HFDL",
    (0, 1, 0, -1, 0, 0): "HFDR",
    (0, 1, 0, 1, 0, 0): "FFDL",
    (0, -1, 0, -1, 0, 0): "FFDR",
}

_DOSE_UNITS = {"GY", "RELATIVE"}
_DOSE_TYPES = {"PHYSICAL", "EFFECTIVE", "ERROR"}
_SUMMATION_TYPES = {
    "PLAN", "MULTI_PLAN", "PLAN_OVERVIEW", "FRACTION", "BEAM", "BRACHY",
    "FRACTION_SESSION", "BEAM_SESSION", "BRACHY_SESSION", "CONTROL_POINT", "RECORD",
}
_INTERPRETED_TYPES = {
    "EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "OAR",
    "BOLUS", "AVOIDANCE", "ORGAN", "MARKER", "REGISTRATION", "ISOCENTER",
    "CONTRAST_AGENT", "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY",
    "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT", "FIXATION", "DOSE_REGION",
    "CONTROL", "DOSE_MEASUREMENT",
}

#: Display colours cycled through for ROIs that carry none.
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195),
    (128, 128, 0), (255, 215, 180), (0, 0, 128),
]


class UnwritableGeometryError(GeometryError, ValueError):
    """A grid whose geometry the requested DICOM encoding cannot express."""


# --------------------------------------------------------------------- helpers
def _ds(value: float) -> str:
    """Format one number as a DICOM DS string (at most 16 characters).

    Values are rounded to 1e-6 first, so floating-point dust such as
    ``-2.7e-15`` from index arithmetic is written as ``0.0``.
    """
    return format_number_as_ds(round(float(value), 6) + 0.0)


def _ds_list(values: Iterable[float]) -> list[str]:
    return [_ds(v) for v in values]


def _direction_cosines(vector: np.ndarray) -> list[str]:
    """DS strings of a unit vector, rounded so exact axes stay exact."""
    return [format_number_as_ds(round(float(c), 10) + 0.0) for c in vector]


def patient_position_from_direction(direction: np.ndarray, default: str = "HFS") -> str:
    """DICOM PatientPosition implied by a grid's in-plane directions.

    Parameters
    ----------
    direction : array_like, shape (3, 3)
        Grid direction rows (LPS unit vectors of array axes 0, 1, 2); rows 2
        (DICOM row direction) and 1 (DICOM column direction) decide.
    default : str
        Returned for an orientation that is none of the eight standard ones
        (oblique planes, or slices that are not transverse).

    Returns
    -------
    str
        One of HFS, HFP, FFS, FFP, HFDL, HFDR, FFDL, FFDR, or ``default``.
    """
    d = np.asarray(direction, dtype=float)
    iop = np.concatenate([d[2], d[1]])
    rounded = np.rint(iop)
    if np.max(np.abs(iop - rounded)) > 1e-4:
        return default
    return _POSITION_BY_IOP.get(tuple(int(v) for v in rounded), default)


def _file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SOARS_DOSE"
    return meta


def _base_dataset(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    series_number: int,
    series_description: str,
    frame_of_reference_uid: str | None,
) -> Dataset:
    """Patient, General Study, Series, Frame of Reference, Equipment and SOP Common modules."""
    ds = Dataset()
    ds.SpecificCharacterSet = _CHARSET
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    # Type 2 dates and times are left empty: synthetic and converted data
    # have no meaningful acquisition time, and empty values keep output
    # byte-identical between runs.
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "soars-dose"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = series_number
    if frame_of_reference_uid is not None:
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
    return ds


def _check_writable(paths: Sequence[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"{existing[0]}{more} already exists; pass {option('overwrite')} to replace it "
            "or choose another output folder"
        )


def _write_dicom(ds: Dataset, path: Path) -> None:
    """Write ``ds`` (with ``file_meta`` set) to ``path`` atomically."""
    atomic_write_file(path, lambda f: pydicom.dcmwrite(f, ds, enforce_file_format=True))


def _check_array_on_grid(array: np.ndarray, grid: Grid, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != grid.shape:
        raise ValueError(f"{what} has shape {array.shape} but the grid is {grid.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return array


# ------------------------------------------------------------------ CT series
def _ct_pixels(hu: np.ndarray) -> tuple[np.ndarray, int]:
    """Stored pixel values (HU + 1024) and PixelRepresentation (0 unsigned, 1 signed)."""
    stored = np.rint(hu).astype(np.int64) + 1024
    lo, hi = int(stored.min()), int(stored.max())
    if lo >= 0 and hi <= np.iinfo(np.uint16).max:
        return stored.astype("<u2"), 0
    if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
        return stored.astype("<i2"), 1
    raise ValueError(
        f"CT values span {lo - 1024}..{hi - 1024} HU, more than 16-bit pixels with "
        "RescaleIntercept -1024 can hold"
    )


def write_ct_series(
    hu: np.ndarray,
    grid: Grid,
    out_dir: str | os.PathLike,
    *,
    patient_id: str,
    patient_name: str = "",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    patient_position: str | None = None,
    overwrite: bool = False,
) -> CTSeries:
    """Write a volume as a DICOM CT Image Storage series, one file per slice.

    Parameters
    ----------
    hu : ndarray, shape ``grid.shape``
        CT numbers in HU, indexed ``[k, j, i]`` = ``[slice, row, column]``;
        rounded to integers. Stored as ``HU + 1024`` (RescaleSlope 1,
        RescaleIntercept -1024) in unsigned 16-bit pixels when that fits,
        else signed.
    grid : Grid
        Geometry of ``hu`` (LPS mm). Slice ``k`` gets ImagePositionPatient
        ``grid.index_to_world([k, 0, 0])`` and ImageOrientationPatient
        ``direction[2] + direction[1]``; any orientation (HFS, HFP, FFS,
        decubitus, oblique) is written as given.
    out_dir : path
        Folder for the files ``CT.0001.dcm``, ``CT.0002.dcm``, ... (created).
    patient_id, patient_name : str
        PatientID and PatientName.
    study_uid, frame_of_reference_uid, series_uid : str, optional
        New UIDs are made for those not given. SOPInstanceUIDs are derived
        deterministically from ``series_uid`` and the slice index, so a
        series written twice with the same ``series_uid`` is identical.
    series_number : int
        SeriesNumber.
    patient_position : str, optional
        PatientPosition; by default derived from the grid direction with
        :func:`patient_position_from_direction` (HFS when not standard).
    overwrite : bool
        Replace existing files of the same names instead of raising.

    Returns
    -------
    CTSeries
        The series as :func:`~soars_dose.dicom.ct.read_ct_series` would read
        it back (UIDs, paths and positions, slices in grid axis-0 order).

    Raises
    ------
    ValueError
        If ``hu`` does not match the grid, is not finite or does not fit 16 bits.
    OutputExistsError
        If a target file exists and ``overwrite`` is false.
    """
    hu = _check_array_on_grid(hu, grid, "CT volume")
    pixels, representation = _ct_pixels(hu)
    study_uid = study_uid or new_uid()
    frame_of_reference_uid = frame_of_reference_uid or new_uid()
    series_uid = series_uid or new_uid()
    position = patient_position or patient_position_from_direction(grid.direction)

    out_dir = Path(out_dir)
    n_slices = grid.shape[0]
    width = max(4, len(str(n_slices)))
    paths = [out_dir / f"CT.{k + 1:0{width}d}.dcm" for k in range(n_slices)]
    _check_writable(paths, overwrite)

    normal = np.cross(grid.direction[2], grid.direction[1])
    orientation = _direction_cosines(grid.direction[2]) + _direction_cosines(grid.direction[1])
    sop_uids = [new_uid(series_uid, "CT", k) for k in range(n_slices)]
    for k, (path, sop_uid) in enumerate(zip(paths, sop_uids)):
        ds = _base_dataset(
            sop_class_uid=CTImageStorage,
            sop_instance_uid=sop_uid,
            modality="CT",
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            series_uid=series_uid,
            series_number=series_number,
            series_description="CT",
            frame_of_reference_uid=frame_of_reference_uid,
        )
        position_k = grid.index_to_world(np.array([k, 0, 0]))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = ""
        ds.PatientPosition = position
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = _ds_list(position_k)
        ds.ImageOrientationPatient = orientation
        ds.SliceThickness = _ds(grid.spacing[0])
        ds.SliceLocation = _ds(float(np.dot(position_k, normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
        ds.PixelSpacing = _ds_list(grid.spacing[1:])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = representation
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        ds.file_meta = _file_meta(CTImageStorage, sop_uid, ExplicitVRLittleEndian)
        _write_dicom(ds, path)

    return CTSeries(
        paths=paths,
        positions_mm=np.array([float(grid.index_to_world(np.array([k, 0, 0])) @ grid.direction[0])
                               for k in range(grid.shape[0])]),
        grid=grid,
        series_uid=str(series_uid),
        study_uid=str(study_uid),
        frame_of_reference_uid=str(frame_of_reference_uid),
        sop_instance_uids=[str(u) for u in sop_uids],
        patient_position=position,
        patient_id=patient_id,
        patient_name=patient_name,
    )


# -------------------------------------------------------------------- RT Dose
def _frame_offsets(grid: Grid, offsets: str) -> list[float]:
    """GridFrameOffsetVector (mm) of ``grid``: relative (from 0) or absolute (patient z)."""
    normal = np.cross(grid.direction[2], grid.direction[1])
    if not np.allclose(grid.direction[0], normal, atol=1e-4):
        raise UnwritableGeometryError(
            "RT Dose frames must follow the slice normal (row direction x column direction) "
            f"but grid axis 0 runs along {np.round(grid.direction[0], 4).tolist()} and the "
            f"normal is {np.round(normal, 4).tolist()}: flip the dose along axis 0 (and move "
            "the origin to the last slice) before writing"
        )
    steps = grid.spacing[0] * np.arange(grid.shape[0])
    if offsets == "relative":
        return steps.tolist()
    if offsets == "absolute":
        if not np.allclose(grid.direction[0], [0.0, 0.0, 1.0], atol=1e-4):
            raise UnwritableGeometryError(
                "absolute GridFrameOffsetVector values are patient z positions and need "
                "frames along +z; this grid's axis 0 runs along "
                f"{np.round(grid.direction[0], 4).tolist()}: use offsets='relative'"
            )
        return (grid.origin[2] + steps).tolist()
    raise ValueError(f"offsets must be 'relative' or 'absolute', got {offsets!r}")


def _dose_scaling(dose_max: float, bits: int) -> float:
    """DoseGridScaling (Gy per pixel unit) that maps ``dose_max`` just below the top pixel value.

    The scaling is rounded to what DS can hold *before* pixels are computed,
    so stored values times the written scaling reproduce the dose; the
    ``1 + 1e-6`` margin keeps that rounding from overflowing the top value.
    """
    if dose_max <= 0:
        return 1.0
    top = 2**bits - 1
    return float(format_number_as_ds(dose_max / top * (1 + 1e-6)))


def write_rtdose(
    dose_gy: np.ndarray,
    grid: Grid,
    path: str | os.PathLike,
    *,
    frame_of_reference_uid: str,
    study_uid: str | None = None,
    patient_id: str = "ANONYMOUS",
    patient_name: str = "",
    summation_type: str = "PLAN",
    dose_units: str = "GY",
    dose_type: str = "PHYSICAL",
    offsets: str = "relative",
    referenced_plan_uid: str | None = None,
    bits: int = 32,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 3,
    overwrite: bool = False,
) -> str:
    """Write a dose volume as a multi-frame RT Dose Storage file.

    Parameters
    ----------
    dose_gy : ndarray, shape ``grid.shape``
        Dose (Gy, or relative when ``dose_units='RELATIVE'``), indexed
        ``[k, j, i]``, finite and non-negative. Frame ``k`` is ``dose_gy[k]``.
    grid : Grid
        Geometry (LPS mm). ImagePositionPatient is the centre of voxel
        ``[0, 0, 0]``; ImageOrientationPatient ``direction[2] + direction[1]``;
        PixelSpacing ``[spacing[1], spacing[2]]``. Axis 0 must run along the
        slice normal ``cross(direction[2], direction[1])``, because readers
        add GridFrameOffsetVector along that normal.
    path : path
        Output file.
    frame_of_reference_uid : str
        FrameOfReferenceUID shared with the CT and structures.
    study_uid : str, optional
        StudyInstanceUID (new if not given).
    patient_id, patient_name : str
        PatientID and PatientName.
    summation_type, dose_units, dose_type : str
        DoseSummationType, DoseUnits (GY or RELATIVE), DoseType.
    offsets : {'relative', 'absolute'}
        GridFrameOffsetVector style: ``'relative'`` starts at 0 and grows by
        ``spacing[0]``; ``'absolute'`` holds patient z of each frame (first
        element = ImagePositionPatient z) and needs axis 0 along +z.
    referenced_plan_uid : str, optional
        SOPInstanceUID of the RT Plan, written as ReferencedRTPlanSequence.
    bits : {32, 16}
        Unsigned pixel width; DoseGridScaling maps the maximum dose onto the
        top of that range (resolution max/(2**bits - 1)).
    series_uid, sop_instance_uid : str, optional
        UIDs of this file (new if not given).
    series_number : int
        SeriesNumber.
    overwrite : bool
        Replace an existing ``path`` instead of raising.

    Returns
    -------
    str
        SOPInstanceUID of the written file.

    Raises
    ------
    UnwritableGeometryError
        If axis 0 does not follow the slice normal, or absolute offsets are
        asked for frames not along +z (also a ValueError).
    ValueError
        For a dose that does not match the grid, is negative or not finite,
        or for unknown codes.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    dose = _check_array_on_grid(dose_gy, grid, "dose").astype(np.float64, copy=False)
    if dose.size and dose.min() < 0:
        raise ValueError(f"dose must be non-negative, its minimum is {dose.min():.6g}")
    if bits not in (16, 32):
        raise ValueError(f"bits must be 16 or 32, got {bits!r}")
    for value, allowed, name in (
        (dose_units, _DOSE_UNITS, "dose_units"),
        (dose_type, _DOSE_TYPES, "dose_type"),
        (summation_type, _SUMMATION_TYPES, "summation_type"),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    frame_offsets = _frame_offsets(grid, offsets)
    path = Path(path)
    _check_writable([path], overwrite)

    scaling = _dose_scaling(float(dose.max()) if dose.size else 0.0, bits)
    pixels = np.rint(dose / scaling).astype("<u4" if bits == 32 else "<u2")
    sop_uid = sop_instance_uid or new_uid()
    ds = _base_dataset(
        sop_class_uid=RTDoseStorage,
        sop_instance_uid=sop_uid,
        modality="RTDOSE",
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid or new_uid(),
        series_uid=series_uid or new_uid(),
        series_number=series_number,
        series_description="RT Dose",
        frame_of_reference_uid=frame_of_reference_uid,
    )
    ds.OperatorsName = ""
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = _ds_list(grid.origin)
    ds.ImageOrientationPatient = _direction_cosines(grid.direction[2]) + _direction_cosines(
        grid.direction[1]
    )
    ds.SliceThickness = _ds(grid.spacing[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = grid.shape[0]
    ds.FrameIncrementPointer = _GRID_FRAME_OFFSET_VECTOR
    ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
    ds.PixelSpacing = _ds_list(grid.spacing[1:])
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.DoseUnits = dose_units
    ds.DoseType = dose_type
    ds.DoseSummationType = summation_type
    ds.GridFrameOffsetVector = _ds_list(frame_offsets)
    ds.DoseGridScaling = format_number_as_ds(scaling)
    if referenced_plan_uid is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = RTPlanStorage
        ref.ReferencedSOPInstanceUID = referenced_plan_uid
        ds.ReferencedRTPlanSequence = DicomSequence([ref])
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.file_meta = _file_meta(RTDoseStorage, sop_uid, ExplicitVRLittleEndian)
    _write_dicom(ds, path)
    return str(sop_uid)


# ------------------------------------------------------------ masks -> contours
def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Remove vertices of a closed polygon that lie on a straight run (same direction).

    Marching squares on a voxel mask emits a vertex at every voxel edge it
    crosses; on straight boundary runs those are redundant and only bloat
    the file. The polygon itself is unchanged.
    """
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot = np.einsum("ij,ij->i", before, after)
    scale = np.einsum("ij,ij->i", before, before) * np.einsum("ij,ij->i", after, after)
    straight = (np.abs(cross) <= 1e-9 * np.sqrt(scale) + 1e-12) & (dot > 0)
    return points[~straight]


def masks_to_contours(mask: np.ndarray, grid: Grid, *, level: float = 0.5) -> list[np.ndarray]:
    """Planar contours of a voxel mask, one slice (axis-0 plane) at a time.

    Each slice ``mask[k]`` is padded with one voxel of zeros and traced with
    :func:`skimage.measure.find_contours` at ``level``, so every contour is
    closed even where the mask touches the grid edge. A binary mask traced
    at 0.5 gives polygons through the midpoints between inside and outside
    voxel centres: every inside voxel centre lies inside the polygons and
    every outside one outside. Holes come out as separate contours
    (even-odd rule); the repeated closing point, vertices on straight runs
    and contours with fewer than three points are dropped.

    Parameters
    ----------
    mask : ndarray, shape ``grid.shape``
        Boolean (or fractional) mask indexed ``[k, j, i]``.
    grid : Grid
        Geometry of ``mask``.
    level : float
        Iso-value traced.

    Returns
    -------
    list of ndarray
        ``(n, 3)`` arrays of LPS points (mm), slices in increasing ``k``.
    """
    mask = np.asarray(mask)
    if mask.shape != grid.shape:
        raise ValueError(f"mask has shape {mask.shape} but the grid is {grid.shape}")
    contours: list[np.ndarray] = []
    occupied = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    for k in occupied:
        plane = mask[k]
        rows = np.flatnonzero(plane.any(axis=1))
        cols = np.flatnonzero(plane.any(axis=0))
        # Trace only the bounding box of the slice's content (big speed-up for
        # small organs); the zero padding makes every contour close.
        r0, c0 = rows[0], cols[0]
        crop = plane[r0 : rows[-1] + 1, c0 : cols[-1] + 1].astype(np.float64)
        padded = np.pad(crop, 1)
        for rc in find_contours(padded, level):
            if len(rc) > 1 and np.array_equal(rc[0], rc[-1]):
                rc = rc[:-1]
            rc = _drop_collinear(rc)
            if len(rc) < 3:
                continue
            index = np.column_stack([np.full(len(rc), float(k)), rc[:, 0] + r0 - 1, rc[:, 1] + c0 - 1])
            contours.append(grid.index_to_world(index))
    return contours


# --------------------------------------------------------------- RT Structure
def _format_contour(points: np.ndarray) -> bytes:
    """ContourData value bytes: x\\y\\z triplets rounded to 1 um, trailing zeros trimmed."""
    flat = (np.round(np.asarray(points, dtype=np.float64), 3) + 0.0).ravel().tolist()
    text = "\\".join([("%.3f" % v).rstrip("0").rstrip(".") for v in flat])
    data = text.encode("ascii")
    return data + b" " if len(data) % 2 else data  # DICOM values have even length


def _contour_image_uid(points: np.ndarray, ct: CTSeries, tol_mm: float = 0.01) -> str | None:
    """SOPInstanceUID of the CT slice a contour lies on, or None if it lies on none."""
    k = ct.grid.world_to_index(points)[:, 0]
    k_mean = float(np.mean(k))
    k_round = int(round(k_mean))
    tol = tol_mm / ct.grid.spacing[0]
    if np.ptp(k) > tol or abs(k_mean - k_round) > tol or not 0 <= k_round < ct.grid.shape[0]:
        return None
    return ct.sop_instance_uids[k_round]


def _image_reference(sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def _contour_item(
    points: np.ndarray, data: bytes, implicit_vr: bool, ct: CTSeries | None
) -> Dataset:
    item = Dataset()
    # ContourData goes in pre-encoded: building a DSfloat per coordinate
    # costs ~100x more than formatting, and a structure set holds 1e5-1e6 of
    # them. Declaring the item's encoding equal to the file's lets pydicom
    # copy the raw bytes.
    item.set_original_encoding(implicit_vr, True, default_encoding)
    uid = _contour_image_uid(points, ct) if ct is not None else None
    if uid is not None:
        item.ContourImageSequence = DicomSequence([_image_reference(uid)])
    item.ContourGeometricType = "POINT" if len(points) == 1 else "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(points)
    item[_CONTOUR_DATA] = RawDataElement(
        _CONTOUR_DATA, "DS", len(data), data, 0, implicit_vr, True
    )
    return item


def _usable_contours(structure: Structure) -> list[np.ndarray]:
    kept = []
    for c in structure.contours:
        c = np.asarray(c, dtype=np.float64).reshape(-1, 3)
        if len(c) == 1 or len(c) >= 3:
            kept.append(c)
        else:
            warn(f"ROI {structure.name!r}: skipped a contour of {len(c)} points (need 1 or >= 3)")
    return kept


def _check_structures(structures: list[Structure]) -> None:
    numbers = [s.number for s in structures]
    dupes = sorted({n for n in numbers if numbers.count(n) > 1})
    if dupes:
        raise ValueError(f"ROI numbers must be unique; repeated: {dupes}")
    for s in structures:
        if not s.name or len(s.name) > 64:
            raise ValueError(f"ROI name {s.name!r} must have 1 to 64 characters")
        kind = (s.interpreted_type or "ORGAN").upper()
        if kind not in _INTERPRETED_TYPES:
            raise ValueError(f"ROI {s.name!r}: unknown RTROIInterpretedType {kind!r}")


def _referenced_frame(frame_of_reference_uid: str, ct: CTSeries | None) -> Dataset:
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_of_reference_uid
    if ct is not None:
        series = Dataset()
        series.SeriesInstanceUID = ct.series_uid
        series.ContourImageSequence = DicomSequence(
            [_image_reference(u) for u in ct.sop_instance_uids]
        )
        study = Dataset()
        study.ReferencedSOPClassUID = _STUDY_SOP_CLASS
        study.ReferencedSOPInstanceUID = ct.study_uid
        study.RTReferencedSeriesSequence = DicomSequence([series])
        frame.RTReferencedStudySequence = DicomSequence([study])
    return frame


def write_rtstruct(
    structures: StructureSet | Sequence[Structure],
    path: str | os.PathLike,
    *,
    frame_of_reference_uid: str,
    ct: CTSeries | None = None,
    study_uid: str | None = None,
    patient_id: str = "ANONYMOUS",
    patient_name: str = "",
    label: str = "soars-dose",
    generation_algorithm: str = "MANUAL",
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 2,
    overwrite: bool = False,
) -> str:
    """Write ROIs as an RT Structure Set Storage file.

    Parameters
    ----------
    structures : StructureSet or sequence of Structure
        ROIs in file order. Each contour is an ``(n, 3)`` array of LPS points
        (mm) of a closed planar polygon (closing edge implicit), written as
        CLOSED_PLANAR (POINT for a single point) with coordinates rounded to
        0.001 mm. ``interpreted_type`` (default ORGAN) and
        ``generation_algorithm`` (default: the argument) are used when set;
        ROIs without colour get one from a fixed palette.
    path : path
        Output file.
    frame_of_reference_uid : str
        FrameOfReferenceUID the contours are given in.
    ct : CTSeries, optional
        The image series the contours were drawn on. When given, the file
        references the study, series and every slice, and each contour that
        lies on a CT slice (within 0.01 mm) references that slice.
    study_uid : str, optional
        StudyInstanceUID; defaults to the CT's, else a new one.
    patient_id, patient_name : str
        PatientID and PatientName.
    label : str
        StructureSetLabel (first 16 characters) and StructureSetName.
    generation_algorithm : str
        ROIGenerationAlgorithm for ROIs that do not set their own
        (AUTOMATIC, SEMIAUTOMATIC or MANUAL).
    series_uid, sop_instance_uid : str, optional
        UIDs of this file (new if not given).
    series_number : int
        SeriesNumber.
    overwrite : bool
        Replace an existing ``path`` instead of raising.

    Returns
    -------
    str
        SOPInstanceUID of the written file.

    Raises
    ------
    FrameOfReferenceError
        If ``ct`` lies in another frame of reference.
    ValueError
        For repeated ROI numbers, bad names or unknown interpreted types.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    items = list(structures.structures if isinstance(structures, StructureSet) else structures)
    _check_structures(items)
    if ct is not None and ct.frame_of_reference_uid != frame_of_reference_uid:
        raise FrameOfReferenceError(
            f"the CT series {ct.series_uid} is in frame of reference "
            f"{ct.frame_of_reference_uid}, not {frame_of_reference_uid}: contours must be "
            "written in the frame of the images they were drawn on"
        )
    path = Path(path)
    _check_writable([path], overwrite)

    contours = [_usable_contours(s) for s in items]
    encoded = [[_format_contour(c) for c in cs] for cs in contours]
    # Explicit VR lengths are 16-bit; a contour of ~2,500+ points no longer
    # fits, and implicit VR (32-bit lengths) is the portable way out.
    implicit_vr = any(len(d) > _MAX_EXPLICIT_LENGTH for ds in encoded for d in ds)

    sop_uid = sop_instance_uid or new_uid()
    ds = _base_dataset(
        sop_class_uid=RTStructureSetStorage,
        sop_instance_uid=sop_uid,
        modality="RTSTRUCT",
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid or (ct.study_uid if ct is not None else None) or new_uid(),
        series_uid=series_uid or new_uid(),
        series_number=series_number,
        series_description=label[:64],
        frame_of_reference_uid=None,  # RTSTRUCT carries it per referenced frame
    )
    ds.OperatorsName = ""
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate = ""
    ds.StructureSetTime = ""
    ds.ReferencedFrameOfReferenceSequence = DicomSequence(
        [_referenced_frame(frame_of_reference_uid, ct)]
    )

    roi_items, contour_items, observation_items = [], [], []
    for n, (s, cs, data) in enumerate(zip(items, contours, encoded)):
        roi = Dataset()
        roi.ROINumber = s.number
        roi.ReferencedFrameOfReferenceUID = frame_of_reference_uid
        roi.ROIName = s.name
        roi.ROIGenerationAlgorithm = s.generation_algorithm or generation_algorithm
        roi_items.append(roi)

        rc = Dataset()
        rc.ROIDisplayColor = list(s.color or _PALETTE[n % len(_PALETTE)])
        rc.ReferencedROINumber = s.number
        if cs:  # ContourSequence is optional: an empty ROI carries none
            rc.ContourSequence = DicomSequence(
                [_contour_item(c, d, implicit_vr, ct) for c, d in zip(cs, data)]
            )
        contour_items.append(rc)

        obs = Dataset()
        obs.ObservationNumber = n + 1
        obs.ReferencedROINumber = s.number
        obs.RTROIInterpretedType = (s.interpreted_type or "ORGAN").upper()
        obs.ROIInterpreter = ""
        observation_items.append(obs)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observation_items)

    syntax = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    ds.file_meta = _file_meta(RTStructureSetStorage, sop_uid, syntax)
    _write_dicom(ds, path)
    return str(sop_uid)
