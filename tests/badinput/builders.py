"""Hostile DICOM files built from first principles with pydicom.

Nothing here uses soars-dose's own writers: every file is assembled from
the attributes PS3.3 defines (RT Dose, CT Image, Structure Set modules), so
that what the readers return can be checked against the arrays and
coordinates put in. Helpers then break one thing at a time: a raw value
(:func:`set_raw`), a cut file (:func:`cut`), a pixel buffer of the wrong
length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

FRAME = "1.2.826.0.1.3680043.8.498.1101"
STUDY = "1.2.826.0.1.3680043.8.498.1102"
RTDOSE_SOP = "1.2.840.10008.5.1.4.1.1.481.2"
RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"


def _base(sop_class: str, modality: str, syntax=ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.Modality = modality
    ds.PatientID = "HOSTILE"
    ds.PatientName = "Hostile^Test"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = FRAME
    return ds


def dose_truth(shape=(4, 5, 6)) -> np.ndarray:
    """A dose (Gy) whose every voxel tells its index: 0.5 + i + 10 j + 100 k cGy."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (50 + i + 10 * j + 100 * k) / 100.0


def rtdose(values_gy: np.ndarray, *, spacing=(3.0, 2.0, 2.5), origin=(-10.0, -20.0, 5.0),
           bits: int = 32, scaling: float = 1e-4, summation: str = "PLAN") -> Dataset:
    """A multi-frame axial RTDOSE holding ``values_gy[k, j, i]``.

    ``spacing`` is (slice step, row spacing, column spacing) in mm and
    ``origin`` the LPS centre (mm) of voxel [0, 0, 0]; frames go up in z.
    """
    v = np.asarray(values_gy, dtype=float)
    ds = _base(RTDOSE_SOP, "RTDOSE")
    nk, nj, ni = v.shape
    ds.Rows, ds.Columns, ds.NumberOfFrames = nj, ni, nk
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.ImagePositionPatient = [float(o) for o in origin]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing[1], spacing[2]]
    ds.GridFrameOffsetVector = [spacing[0] * k for k in range(nk)]
    ds.FrameIncrementPointer = Tag(0x3004000C)
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    ds.DoseGridScaling = scaling
    dtype = {16: np.uint16, 32: np.uint32}[bits]
    ds.PixelData = np.round(v / scaling).astype(dtype).tobytes()
    return ds


def ct_slice(hu: np.ndarray, z: float, *, spacing=(0.8, 0.9), origin_xy=(-30.0, -40.0),
             series: str = "1.2.826.0.1.3680043.8.498.1103", bits: int = 16,
             intercept: float = -1024.0) -> Dataset:
    """One axial CT slice with HU ``hu[j, i]`` at height ``z`` (mm)."""
    ds = _base(CT_SOP, "CT")
    ds.SeriesInstanceUID = series
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
    ds.ImagePositionPatient = [origin_xy[0], origin_xy[1], z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 2.0
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[bits]
    ds.PixelData = (np.asarray(hu) - intercept).astype(dtype).tobytes()
    return ds


def ct_truth(n_slices=3, shape=(4, 5)) -> np.ndarray:
    """HU per voxel that tells its index: -1000 + i + 10 j + 100 k."""
    k, j, i = np.meshgrid(np.arange(n_slices), *[np.arange(n) for n in shape], indexing="ij")
    return (-1000 + i + 10 * j + 100 * k).astype(float)


def ct_series(folder: Path, hu: np.ndarray, *, z0: float = 0.0, dz: float = 2.0,
              edit=None, **kw) -> list[Path]:
    """Write slices ``hu[k]`` at ``z0 + k dz``; ``edit(k, ds)`` may break slice ``k``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(hu.shape[0]):
        ds = ct_slice(hu[k], z0 + k * dz, **kw)
        if edit is not None:
            edit(k, ds)
        paths.append(write(ds, folder / f"ct_{k:03d}.dcm"))
    return paths


def square(cx, cy, z, half=5.0) -> np.ndarray:
    """A square contour (mm) centred on (cx, cy) in the plane z."""
    return np.array([[cx - half, cy - half, z], [cx + half, cy - half, z],
                     [cx + half, cy + half, z], [cx - half, cy + half, z]], dtype=float)


def rtstruct(rois, *, undefined_length: bool = False, label: str = "HOSTILE") -> Dataset:
    """An RTSTRUCT from ``rois``: a list of ``(number, name, [contour (n, 3) mm, ...])``.

    ``undefined_length`` writes every sequence with undefined length and
    delimiters (as many planning systems do) instead of explicit lengths.
    """
    ds = _base(RTSTRUCT_SOP, "RTSTRUCT")
    ds.StructureSetLabel = label
    ref = Dataset()
    ref.FrameOfReferenceUID = FRAME
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ss, rcs, obs = [], [], []
    for number, name, contours in rois:
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = FRAME
        item.ROIName = name
        item.ROIGenerationAlgorithm = "MANUAL"
        ss.append(item)
        rc = Dataset()
        rc.ROIDisplayColor = [255, 0, 0]
        rc.ReferencedROINumber = number
        seq = []
        for c in contours:
            ci = Dataset()
            ci.ContourGeometricType = "CLOSED_PLANAR"
            ci.NumberOfContourPoints = len(c)
            ci.ContourData = [float(v) for v in np.asarray(c).ravel()]
            seq.append(ci)
        rc.ContourSequence = Sequence(seq)
        rcs.append(rc)
        o = Dataset()
        o.ObservationNumber = number
        o.ReferencedROINumber = number
        o.RTROIInterpretedType = "ORGAN"
        o.ROIInterpreter = ""
        obs.append(o)
    ds.StructureSetROISequence = Sequence(ss)
    ds.ROIContourSequence = Sequence(rcs)
    ds.RTROIObservationsSequence = Sequence(obs)
    if undefined_length:
        _undefined(ds)
    return ds


def _undefined(ds: Dataset) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
                _undefined(item)


def raw(tag, vr: str, value: bytes, *, pad: bool = True) -> RawDataElement:
    """A raw element written byte for byte (pydicom does not validate it).

    ``pad`` adds the space that makes an odd length even, as DICOM requires;
    ``pad=False`` writes an odd length on purpose.
    """
    if pad and len(value) % 2:
        value += b" "
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def set_raw(ds: Dataset, keyword: str, value: "str | bytes") -> Dataset:
    """Replace ``keyword``'s value by the given text, keeping its VR."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    b = value.encode("latin-1") if isinstance(value, str) else value
    ds[tag] = raw(tag, dictionary_VR(tag), b)
    return ds


def write(ds: Dataset, path: Path, *, implicit: bool = False) -> Path:
    """Write ``ds`` with preamble and meta group; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def cut(path: Path, at: "int | float", out: Path | None = None) -> Path:
    """Write the first ``at`` bytes (or fraction of the file) of ``path`` to ``out``."""
    data = path.read_bytes()
    n = int(len(data) * at) if isinstance(at, float) else int(at)
    out = out or path.with_name(f"{path.stem}_cut{n}{path.suffix}")
    out.write_bytes(data[:n])
    return out


def element_offset(path: Path, needle: bytes) -> int:
    """Byte offset of the first occurrence of ``needle`` in the file (for cuts)."""
    pos = path.read_bytes().find(needle)
    assert pos >= 0, f"{needle!r} not in {path}"
    return pos
