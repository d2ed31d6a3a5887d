"""OpenKBP patients written as DICOM: CT series, RTDOSE, reference RTSTRUCT.

:func:`write_dicom` writes one patient so that the dose audit runs on a
real plan; :func:`write_masks_rtstruct` adds further RTSTRUCTs (a
segmentation's masks) on the same CT series. Contours follow the voxel
faces exactly (:func:`~soars_dose.datasets.openkbp.axes.voxel_edge_contours`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...console import option
from ...dicom.ct import CTSeries
from ...dicom.write import (
    write_ct_series,
    write_rtdose,
    write_rtstruct,
)
from ...errors import InputError, OutputExistsError, warn
from ...grid import Grid
from ...outputs import atomic_write_file
from ...structures import Structure
from .axes import to_lps_axes, voxel_edge_contours
from .read import DEFINITION_NOTES, STRUCTURE_MAP, OpenKBPPatient

__all__ = ["DicomExport", "write_dicom", "write_masks_rtstruct"]

#: ROI display colours (R, G, B) used in the RTSTRUCTs written here.
_COLORS: dict[str, tuple[int, int, int]] = {
    "Brainstem": (240, 200, 60), "SpinalCord": (255, 255, 0), "Bone_Mandible": (235, 235, 200),
    "Parotid_L": (0, 200, 90), "Parotid_R": (0, 150, 60), "Esophagus": (160, 100, 60),
    "Larynx_GSL": (90, 170, 160), "PTV56": (255, 160, 160), "PTV63": (255, 90, 90),
    "PTV70": (220, 0, 0),
}


@dataclass(frozen=True)
class DicomExport:
    """What :func:`write_dicom` wrote.

    Attributes
    ----------
    ct_dir : Path
        Folder of the CT series (``CT.0001.dcm`` ...).
    rtdose : Path
        ``RTDOSE.dcm``: the clinical dose in Gy on the CT grid.
    rtstruct : Path
        ``RTSTRUCT_reference.dcm``: the OpenKBP masks as contours.
    ct : CTSeries
        UIDs of the CT series, for further RTSTRUCTs on it
        (:func:`write_masks_rtstruct`).
    provenance : Path
        ``openkbp_export.json``: source, conventions and UIDs.
    """

    ct_dir: Path
    rtdose: Path
    rtstruct: Path
    ct: CTSeries
    provenance: Path


def _structures_from_masks(masks: Mapping[str, np.ndarray], grid: Grid, where: str
                           ) -> list[Structure]:
    items = []
    for n, (name, mask) in enumerate(masks.items(), start=1):
        mask = np.asarray(mask)
        if mask.shape != grid.shape:
            raise InputError(f"{where}: mask {name!r} has shape {mask.shape}, the CT {grid.shape}")
        contours = voxel_edge_contours(mask.astype(bool, copy=False), grid)
        if not contours:
            warn(f"{where}: mask {name!r} is empty; written as an ROI without contours")
        kind = "PTV" if name.upper().startswith("PTV") else "ORGAN"
        items.append(Structure(name, n, contours, color=_COLORS.get(name), interpreted_type=kind))
    return items


def _patient_uids(patient: OpenKBPPatient) -> dict[str, str]:
    """Deterministic UIDs: the same arrays always give the same files."""
    from ...dicom.uids import new_uid

    h = hashlib.blake2b(digest_size=16)
    for a in (patient.ct_hu, patient.dose_gy):
        h.update(np.ascontiguousarray(a).tobytes())
    seed = ("openkbp", patient.patient_id, h.hexdigest())
    return {k: str(new_uid(*seed, k)) for k in ("study", "frame", "ct", "dose", "rtstruct",
                                                 "rtstruct_series", "dose_series")}


def write_dicom(patient: OpenKBPPatient, out_dir: str | os.PathLike, *,
                overwrite: bool = False) -> DicomExport:
    """Write a patient as DICOM: CT series, RTDOSE and reference RTSTRUCT.

    Parameters
    ----------
    patient : OpenKBPPatient
        From :func:`read_patient`.
    out_dir : path
        Output folder (created). Receives ``CT/`` (one file per slice, HU),
        ``RTDOSE.dcm`` (the dose in Gy on the same grid, PLAN summation),
        ``RTSTRUCT_reference.dcm`` (every mask of ``patient.masks`` as
        contours that follow the voxel faces, :func:`voxel_edge_contours`;
        catalogue names; OARs as ORGAN, PTVs as PTV; ROIGenerationAlgorithm
        MANUAL) and ``openkbp_export.json`` (provenance).
    overwrite : bool
        Replace existing files; without it nothing is written when any
        target exists.

    Returns
    -------
    DicomExport
        Paths and the CT series UIDs. All files share one StudyInstanceUID,
        FrameOfReferenceUID and PatientID (``patient.patient_id``); UIDs are
        derived from the patient id and a hash of the CT and dose, so the
        same input gives the same files.

    Raises
    ------
    OutputExistsError
        If a target exists and ``overwrite`` is false.
    """
    out = Path(out_dir)
    ct_dir = out / "CT"
    rd, rs, prov = out / "RTDOSE.dcm", out / "RTSTRUCT_reference.dcm", out / "openkbp_export.json"
    if not overwrite:
        existing = [p for p in (rd, rs, prov) if p.exists()]
        if ct_dir.is_dir() and any(ct_dir.glob("*.dcm")):
            existing.insert(0, ct_dir)
        if existing:
            raise OutputExistsError(
                f"{existing[0]} already exists; pass {option('overwrite')} to replace it "
                "or choose another output folder"
            )
    uids = _patient_uids(patient)
    common = {"patient_id": patient.patient_id, "patient_name": f"OpenKBP^{patient.patient_id}"}
    structures = _structures_from_masks(patient.masks, patient.grid, str(patient.source))
    info = write_ct_series(patient.ct_hu, patient.grid, ct_dir, study_uid=uids["study"],
                           frame_of_reference_uid=uids["frame"], series_uid=uids["ct"],
                           overwrite=overwrite, **common)
    write_rtdose(patient.dose_gy, patient.grid, rd, frame_of_reference_uid=uids["frame"],
                 study_uid=uids["study"], series_uid=uids["dose_series"],
                 sop_instance_uid=uids["dose"], overwrite=overwrite, **common)
    write_rtstruct(structures, rs, frame_of_reference_uid=uids["frame"], ct=info,
                   label="reference", generation_algorithm="MANUAL",
                   series_uid=uids["rtstruct_series"], sop_instance_uid=uids["rtstruct"],
                   overwrite=overwrite, **common)
    from ...outputs import provenance

    record = provenance(
        {"axes": "[slice +z (inferior->superior), row +y, column +x], HFS",
         "origin": "in-plane centre at x = y = 0; most inferior slice at z = 0",
         "contours": "exact voxel faces (voxel_edge_contours, corners snapped)"},
        [{"path": str(patient.source), "patient_id": patient.patient_id,
          "voxel_dimensions_mm": list(patient.voxel_dimensions_mm)}],
        [],
        structure_map=STRUCTURE_MAP,
        definition_notes={k: DEFINITION_NOTES[k] for k in patient.masks},
        uids={"study": uids["study"], "frame_of_reference": uids["frame"],
              "ct_series": uids["ct"], "rtdose": uids["dose"], "rtstruct": uids["rtstruct"]},
    )
    atomic_write_file(prov, lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))
    return DicomExport(ct_dir, rd, rs, info, prov)


def _ct_info(ct: CTSeries | DicomExport | str | os.PathLike) -> CTSeries:
    if isinstance(ct, CTSeries):
        return ct
    if isinstance(ct, DicomExport):
        return ct.ct
    from ...dicom.ct import read_ct_series

    folder = Path(ct)
    if (folder / "CT").is_dir():
        folder = folder / "CT"
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give write_dicom's output folder or its CT/")
    series = read_ct_series(folder)
    if not series.frame_of_reference_uid or not series.study_uid:
        raise InputError(f"{folder}: the CT series lacks a FrameOfReferenceUID or StudyInstanceUID")
    return series


def write_masks_rtstruct(
    masks: Mapping[str, np.ndarray],
    ct: CTSeries | DicomExport | str | os.PathLike,
    path: str | os.PathLike,
    *,
    label: str = "substitute",
    layout: str = "lps",
    generation_algorithm: str = "AUTOMATIC",
    patient_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write masks on an OpenKBP CT as an RTSTRUCT (a substitute contour set).

    Parameters
    ----------
    masks : mapping str -> ndarray of bool
        ROI name (use catalogue names, e.g. ``Parotid_L``) -> mask on the
        CT grid; ROIs are written in this order. An empty mask becomes an
        ROI without contours (with a warning).
    ct : CTSeries, DicomExport or path
        The CT the masks lie on: :func:`write_dicom`'s result, its
        ``.ct``, its output folder or the ``CT/`` folder itself.
    path : path
        Output RTSTRUCT file.
    label : str
        StructureSetLabel / name (e.g. ``'soars'``).
    layout : {'lps', 'openkbp'}
        ``'lps'``: masks indexed ``[k, j, i]`` like
        :attr:`OpenKBPPatient.masks`; ``'openkbp'``: OpenKBP ``[i, j, k]``
        arrays (reordered with :func:`to_lps_axes`).
    generation_algorithm : str
        ROIGenerationAlgorithm (AUTOMATIC, SEMIAUTOMATIC or MANUAL).
    patient_id : str, optional
        PatientID; by default the CT's.
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        For a mask whose shape is not the CT grid's or an unknown layout.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    import pydicom

    if layout not in ("lps", "openkbp"):
        raise InputError(f"layout must be 'lps' or 'openkbp', got {layout!r}")
    info = _ct_info(ct)
    if layout == "openkbp":
        masks = {k: to_lps_axes(v) for k, v in masks.items()}
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass {option('overwrite')} to replace it")
    first = pydicom.dcmread(info.paths[0], stop_before_pixels=True)
    pid = patient_id if patient_id is not None else str(first.get("PatientID", ""))
    structures = _structures_from_masks(masks, info.grid, str(path))
    write_rtstruct(structures, path, frame_of_reference_uid=info.frame_of_reference_uid, ct=info,
                   patient_id=pid, patient_name=str(first.get("PatientName", "")), label=label,
                   generation_algorithm=generation_algorithm, overwrite=overwrite)
    return path
