"""Export of SOARS segmentations: DICOM RTSTRUCT on the CT, and NIfTI-1 label maps.

Conventions
-----------
* Masks and label maps are indexed ``[k, j, i]`` (slice, row, column) on
  the CT's :class:`~soars_dose.grid.Grid`; world coordinates are DICOM LPS
  in mm.
* RTSTRUCT contours are traced slice by slice on the CT's own slices with
  marching squares at level 0.5 (:func:`soars_dose.dicom.write.masks_to_contours`):
  polygons pass half-way between inside and outside voxel centres, holes
  come out as separate contours (even-odd rule). Rasterising them back on
  the CT grid and keeping voxels at least half covered restores the mask,
  except for voxels with no 4-connected in-plane neighbour in the mask
  (a lone voxel becomes a diamond covering exactly half of it).
* NIfTI files use RAS world coordinates: ``(x, y, z)_RAS = (-x, -y, z)_LPS``.
  NIfTI voxel ``(i, j, k)`` (i fastest in the file) is array element
  ``[k, j, i]``.

Only numpy and pydicom are used; this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom

from .. import oars as catalogue
from ..dicom.ct import CTSeries
from ..dicom.uids import new_uid
from ..dicom.write import masks_to_contours, write_rtstruct
from ..errors import FrameOfReferenceError, GeometryError, InputError, warn
from ..grid import Grid
from ..outputs import atomic_write_file, check_writable_file
from ..structures import Structure

__all__ = [
    "referenced_ct",
    "labels_to_masks",
    "masks_to_labels",
    "nifti_affine",
    "write_nifti_labels",
    "write_segmentation_rtstruct",
]

#: LPS -> RAS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------- masks
def labels_to_masks(label_volume: np.ndarray, oar_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Split a label map into one boolean mask per OAR.

    Parameters
    ----------
    label_volume : ndarray of int, shape (n_k, n_j, n_i)
        0 = background, ``l >= 1`` = ``oar_names[l - 1]``.
    oar_names : sequence of str
        Catalogue names in label order.
    """
    labels = catalogue.label_map(oar_names)
    lv = np.asarray(label_volume)
    return {name: lv == value for name, value in labels.items()}


def masks_to_labels(masks: Mapping[str, np.ndarray], oar_names: Sequence[str] | None = None
                    ) -> np.ndarray:
    """Combine boolean masks into a label map (later names win where masks overlap).

    Parameters
    ----------
    masks : mapping of str -> ndarray of bool
        All of one shape, indexed ``[k, j, i]``.
    oar_names : sequence of str, optional
        Label order (default: the order of ``masks``).

    Returns
    -------
    ndarray of uint8 (int16 beyond 255 labels)
    """
    names = list(masks) if oar_names is None else list(oar_names)
    labels = catalogue.label_map(names)
    shapes = {np.shape(m) for m in masks.values()}
    if len(shapes) != 1:
        raise InputError(f"masks have different shapes: {sorted(shapes)}")
    out = np.zeros(shapes.pop(), dtype=np.uint8 if len(names) < 256 else np.int16)
    for name in names:
        if name in masks:
            out[np.asarray(masks[name], dtype=bool)] = labels[name]
    return out


# --------------------------------------------------------------------------- RTSTRUCT
def referenced_ct(ct: CTSeries) -> CTSeries:
    """``ct`` checked for an RTSTRUCT to reference it (a StudyInstanceUID made if it has none).

    Raises
    ------
    FrameOfReferenceError
        If the CT carries no FrameOfReferenceUID.
    GeometryError
        If the CT slices are unevenly spaced (its nominal grid then does not
        give the true slice positions, and contours would be misplaced).
    """
    src = ct.paths[0].parent if ct.paths else "CT series"
    if not ct.frame_of_reference_uid:
        raise FrameOfReferenceError(
            f"{src}: the CT series {ct.series_uid} has no FrameOfReferenceUID; an RTSTRUCT "
            "must name the frame its contours are in")
    if ct.uneven:
        raise GeometryError(
            f"{src}: the CT slices are unevenly spaced; contours on its nominal grid would not "
            "lie on the real slices. Resample the CT to an even slice spacing first.")
    study = ct.study_uid
    if not study:
        study = new_uid()
        warn(f"{src}: the CT series has no StudyInstanceUID; the RTSTRUCT gets a new one ({study})")
    return dataclasses.replace(ct, study_uid=study)


def _patient_of(ct: CTSeries) -> tuple[str, str]:
    """PatientID and PatientName of the CT's first slice ('' when unreadable)."""
    try:
        ds = pydicom.dcmread(ct.paths[0], stop_before_pixels=True,
                             specific_tags=["PatientID", "PatientName"])
        return str(ds.get("PatientID", "") or ""), str(ds.get("PatientName", "") or "")
    except Exception:  # noqa: BLE001 - missing or moved files: caller gets a warning
        warn(f"could not read the patient of the CT series {ct.series_uid}; pass patient_id")
        return "", ""


def _as_mask(name: str, mask: np.ndarray, grid: Grid) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != grid.shape:
        raise InputError(f"mask of {name} has shape {mask.shape} but the CT grid is {grid.shape}")
    if mask.dtype != bool:
        if not (np.issubdtype(mask.dtype, np.integer) and mask.size
                and mask.min() >= 0 and mask.max() <= 1):
            raise InputError(f"mask of {name} must be boolean (or 0/1 integers), "
                             f"got {mask.dtype}")
        mask = mask.astype(bool)
    return mask


def write_segmentation_rtstruct(
    masks: Mapping[str, np.ndarray],
    ct: CTSeries,
    path: "str | os.PathLike",
    *,
    label: str = "SOARS",
    patient_id: str | None = None,
    patient_name: str | None = None,
    series_number: int = 99,
    overwrite: bool = False,
) -> str:
    """Write automatic OAR segmentations as an RTSTRUCT referencing their CT series.

    Parameters
    ----------
    masks : mapping of str -> ndarray of bool
        Catalogue OAR name -> mask on ``ct.grid`` (shape ``ct.grid.shape``,
        indexed ``[k, j, i]``). One ROI per entry, in mapping order, numbered
        from 1; an all-false mask gives an ROI without contours (with a
        warning).
    ct : CTSeries
        The CT the masks were predicted on (:func:`soars_dose.dicom.ct.read_ct_series`).
    path : path
        Output RTSTRUCT file.
    label : str
        StructureSetLabel / SeriesDescription.
    patient_id, patient_name : str, optional
        Default: those of the CT's first slice.
    series_number : int
        SeriesNumber of the RTSTRUCT.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    str
        SOPInstanceUID of the written file.

    Notes
    -----
    Every ROI gets its catalogue name and colour, RTROIInterpretedType
    ORGAN and ROIGenerationAlgorithm AUTOMATIC. Contours lie on the CT
    slices and reference them; the file references the CT's study, series
    and frame of reference.

    Raises
    ------
    UnknownOARError
        For a name not in the catalogue.
    InputError
        For masks that are not boolean or not on the CT grid, or no masks.
    FrameOfReferenceError, GeometryError
        See :func:`referenced_ct`.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    if not masks:
        raise InputError("no masks to write; give at least one OAR mask")
    path = check_writable_file(path, overwrite, "the RTSTRUCT file to write")
    info = referenced_ct(ct)
    structures = []
    for number, (name, mask) in enumerate(masks.items(), start=1):
        oar = catalogue.get(name)
        mask = _as_mask(name, mask, ct.grid)
        contours = masks_to_contours(mask, ct.grid) if mask.any() else []
        if not contours:
            warn(f"{path}: {name} is empty; written as an ROI without contours")
        structures.append(Structure(name=oar.name, number=number, contours=contours,
                                    color=oar.color, interpreted_type="ORGAN",
                                    generation_algorithm="AUTOMATIC"))
    if patient_id is None or patient_name is None:
        # read with the series' headers; files are opened again only for a CT built by hand
        pid, pname = ((ct.patient_id, ct.patient_name) if ct.patient_id or ct.patient_name
                      else _patient_of(ct))
        patient_id = pid if patient_id is None else patient_id
        patient_name = pname if patient_name is None else patient_name
    return write_rtstruct(
        structures, path, frame_of_reference_uid=info.frame_of_reference_uid, ct=info,
        patient_id=patient_id or "ANONYMOUS", patient_name=patient_name or "", label=label,
        generation_algorithm="AUTOMATIC", series_number=series_number, overwrite=overwrite)


# --------------------------------------------------------------------------- NIfTI
def nifti_affine(grid: Grid) -> np.ndarray:
    """4x4 matrix mapping NIfTI voxel ``(i, j, k, 1)`` to RAS mm for data on ``grid``.

    NIfTI ``(i, j, k)`` is array element ``[k, j, i]`` of the grid.
    """
    d = grid.direction
    s = np.asarray(grid.spacing)
    a = np.eye(4)
    a[:3, 0] = _LPS_TO_RAS @ (s[2] * d[2])
    a[:3, 1] = _LPS_TO_RAS @ (s[1] * d[1])
    a[:3, 2] = _LPS_TO_RAS @ (s[0] * d[0])
    a[:3, 3] = _LPS_TO_RAS @ np.asarray(grid.origin)
    return a


def _quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """``(b, c, d, qfac)`` of a 3x3 orthonormal matrix (NIfTI-1 ``mat44_to_quatern``)."""
    r = np.array(rotation, dtype=float)
    qfac = 1.0
    if np.linalg.det(r) < 0:
        qfac = -1.0
        r[:, 2] = -r[:, 2]
    a = r[0, 0] + r[1, 1] + r[2, 2] + 1.0
    if a > 0.5:
        a = 0.5 * np.sqrt(a)
        b = 0.25 * (r[2, 1] - r[1, 2]) / a
        c = 0.25 * (r[0, 2] - r[2, 0]) / a
        d = 0.25 * (r[1, 0] - r[0, 1]) / a
    else:
        xd = 1.0 + r[0, 0] - (r[1, 1] + r[2, 2])
        yd = 1.0 + r[1, 1] - (r[0, 0] + r[2, 2])
        zd = 1.0 + r[2, 2] - (r[0, 0] + r[1, 1])
        if xd > 1.0:
            b = 0.5 * np.sqrt(xd)
            c = 0.25 * (r[0, 1] + r[1, 0]) / b
            d = 0.25 * (r[0, 2] + r[2, 0]) / b
            a = 0.25 * (r[2, 1] - r[1, 2]) / b
        elif yd > 1.0:
            c = 0.5 * np.sqrt(yd)
            b = 0.25 * (r[0, 1] + r[1, 0]) / c
            d = 0.25 * (r[1, 2] + r[2, 1]) / c
            a = 0.25 * (r[0, 2] - r[2, 0]) / c
        else:
            d = 0.5 * np.sqrt(zd)
            b = 0.25 * (r[0, 2] + r[2, 0]) / d
            c = 0.25 * (r[1, 2] + r[2, 1]) / d
            a = 0.25 * (r[1, 0] - r[0, 1]) / d
        if a < 0:
            b, c, d = -b, -c, -d
    return (*_float32_bcd(b, c, d), qfac)


def _float32_bcd(b: float, c: float, d: float) -> tuple[float, float, float]:
    """``(b, c, d)`` rounded to float32 so that readers recover ``a`` accurately.

    Readers compute ``a = sqrt(1 - b^2 - c^2 - d^2)``. For half-turn
    rotations (``a = 0``, e.g. a grid with identity direction) float32
    rounding can leave ``1 - b^2 - c^2 - d^2`` at ~1e-7 and thus ``a`` at
    ~3e-4 (0.03 % shear); nudging the largest component outwards by a few
    ulps makes the sum reach 1 and ``a`` come out 0.
    """
    q = np.array([b, c, d], dtype=np.float32)
    if 1.0 - float(np.sum(np.asarray([b, c, d]) ** 2)) < 1e-12:  # a is (numerically) zero
        m = int(np.argmax(np.abs(q)))
        for _ in range(8):
            if 1.0 - float(np.sum(q.astype(np.float64) ** 2)) <= 0.0:
                break
            q[m] = np.nextafter(q[m], np.float32(np.copysign(2.0, q[m])))
    return float(q[0]), float(q[1]), float(q[2])


_DTYPES = [  # (numpy dtype, NIfTI datatype code, bitpix)
    (np.dtype("<u1"), 2, 8),
    (np.dtype("<i2"), 4, 16),
    (np.dtype("<i4"), 8, 32),
]


def _nifti_header(shape_kji: tuple[int, int, int], grid: Grid, code: int, bitpix: int,
                  cal_max: float, description: str) -> bytes:
    """The 348-byte NIfTI-1 header plus the 4-byte (empty) extension flag."""
    hdr = bytearray(348)
    aff = nifti_affine(grid)
    sp = grid.spacing
    pix = (sp[2], sp[1], sp[0])
    b, c, d, qfac = _quaternion(aff[:3, :3] / np.asarray(pix)[None, :])
    nk, nj, ni = shape_kji
    struct.pack_into("<i", hdr, 0, 348)                       # sizeof_hdr
    hdr[38] = ord("r")                                        # regular
    struct.pack_into("<8h", hdr, 40, 3, ni, nj, nk, 1, 1, 1, 1)  # dim
    struct.pack_into("<h", hdr, 68, 1002)                     # intent_code: NIFTI_INTENT_LABEL
    struct.pack_into("<hh", hdr, 70, code, bitpix)            # datatype, bitpix
    struct.pack_into("<8f", hdr, 76, qfac, pix[0], pix[1], pix[2], 0, 0, 0, 0)  # pixdim
    struct.pack_into("<fff", hdr, 108, 352.0, 1.0, 0.0)       # vox_offset, scl_slope, scl_inter
    hdr[123] = 2                                              # xyzt_units: mm
    struct.pack_into("<ff", hdr, 124, float(cal_max), 0.0)    # cal_max, cal_min
    desc = description.encode("ascii", "replace")[:79]
    hdr[148:148 + len(desc)] = desc                           # descrip
    struct.pack_into("<hh", hdr, 252, 1, 1)                   # qform_code, sform_code: scanner
    struct.pack_into("<6f", hdr, 256, b, c, d, *aff[:3, 3])   # quatern_b..d, qoffset_x..z
    struct.pack_into("<12f", hdr, 280, *aff[:3, :].ravel())   # srow_x, srow_y, srow_z
    name = b"labels"
    hdr[328:328 + len(name)] = name                           # intent_name
    hdr[344:348] = b"n+1\0"                                   # magic
    return bytes(hdr) + b"\0\0\0\0"


def write_nifti_labels(label_volume: np.ndarray, grid: Grid, path: "str | os.PathLike", *,
                       description: str = "soars-dose labels", overwrite: bool = False) -> Path:
    """Write a label map as a single-file NIfTI-1 image (``.nii`` or ``.nii.gz``).

    Parameters
    ----------
    label_volume : ndarray of int or bool, shape ``grid.shape``
        Indexed ``[k, j, i]``; non-negative labels. Stored as uint8 when
        they fit, else int16 or int32.
    grid : Grid
        Geometry of the labels (LPS mm); qform and sform (both code 1,
        scanner) give the same voxel-to-RAS mapping (:func:`nifti_affine`).
    path : path
        Output file; ``.gz`` suffix means gzip-compressed.
    description : str
        Header ``descrip`` (79 characters at most).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
    """
    lv = np.asarray(label_volume)
    if lv.shape != grid.shape:
        raise InputError(f"label volume has shape {lv.shape} but the grid is {grid.shape}")
    if lv.dtype == bool:
        lv = lv.astype(np.uint8)
    if not np.issubdtype(lv.dtype, np.integer):
        raise InputError(f"label volume must hold integers, got {lv.dtype}")
    lo, hi = (int(lv.min()), int(lv.max())) if lv.size else (0, 0)
    if lo < 0:
        raise InputError(f"labels must be >= 0, found {lo}")
    fitting = [entry for entry in _DTYPES if hi <= np.iinfo(entry[0]).max]
    if not fitting:
        raise InputError(f"label {hi} does not fit a 32-bit NIfTI integer")
    dt, code, bitpix = fitting[0]  # the smallest type that holds every label
    path = check_writable_file(path, overwrite, "the NIfTI label file to write")
    payload = _nifti_header(grid.shape, grid, code, bitpix, hi, description) + \
        np.ascontiguousarray(lv, dtype=dt).tobytes(order="C")

    def write(f):
        if path.suffix == ".gz":
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
                gz.write(payload)
        else:
            f.write(payload)

    return atomic_write_file(path, write)
