"""OpenKBP head-and-neck patients: reading, DICOM export and compact training arrays.

OpenKBP (Babier et al., Med Phys 2021) ships 340 head-and-neck IMRT
patients on a fixed ``128 x 128 x 128`` grid: CT, clinical dose, a
"possible dose" mask, seven OAR masks and up to three PTVs. This module
reads them, either in OpenKBP's original sparse-CSV folders or as the
``.npz`` files of ``shared/data/openkbp``, puts them on a
:class:`~soars_dose.grid.Grid` in DICOM patient coordinates, writes them as
DICOM (CT series, RTDOSE, reference RTSTRUCT) so that the dose audit can run
on real plans, and packs a whole split into one small file for training
the segmentation backend. It imports neither torch nor
:mod:`soars_dose.segmentation`.

Axes and coordinates
--------------------
OpenKBP arrays are indexed ``[i, j, k]`` with (read off the anatomy and
checked on all 202 patients of ``shared/data/openkbp``):

* ``i`` running anterior -> posterior (DICOM +y),
* ``j`` running patient right -> left (DICOM +x),
* ``k`` running superior -> inferior (DICOM -z),

and voxel size ``voxel_dimensions_mm[0], [1], [2]`` along ``i, j, k``.
soars-dose arrays are indexed ``[k, j, i]`` = ``[slice, row, column]``;
:func:`to_lps_axes` maps an OpenKBP array onto them as

    ``ours[s, r, c] = openkbp[r, c, n_k - 1 - s]``

so slices run inferior -> superior (+z), rows anterior -> posterior (+y) and
columns right -> left (+x): a head-first-supine (HFS) grid with the
identity direction of :class:`~soars_dose.grid.Grid`. OpenKBP stores no
patient position, so :func:`openkbp_grid` places the grid by convention:
the volume is centred on ``x = y = 0`` in-plane and the most inferior slice
(OpenKBP ``k = n_k - 1``) lies at ``z = 0``; all slices are at ``z >= 0``.

Units: CT in HU (int16), dose in Gy (float32), lengths in mm, volumes in cc.

File formats
------------
Raw CSV folder (``pt_N/``)
    ``ct.csv``, ``dose.csv``, ``possible_dose_mask.csv``,
    ``voxel_dimensions.csv`` and one ``<Structure>.csv`` per structure
    present. Every file but ``voxel_dimensions.csv`` starts with the header
    ``,data`` followed by ``flat_index,value`` rows, ``flat_index`` a C-order
    index into the ``(128, 128, 128)`` array; mask files carry indices only
    (empty value). CT values are ``HU + 1024``; a voxel absent from
    ``ct.csv`` is 0, i.e. -1024 HU. ``voxel_dimensions.csv`` holds three
    numbers, one per line.
``.npz`` file (``pt_N.npz``)
    ``ct_hu`` int16, ``dose_gy`` float32, ``possible_dose_mask`` bool,
    ``voxel_dimensions_mm`` float (3,), and ``mask_<Structure>`` bool for
    the structures present, all in OpenKBP ``[i, j, k]`` order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dicom.write import (
    CTSeriesInfo,
    masks_to_contours,
    write_ct_series,
    write_rtdose,
    write_rtstruct,
)
from .errors import InputError, OutputExistsError, SoarsDoseError, warn
from .outputs import atomic_write_file
from .grid import Grid
from .structures import Structure

__all__ = [
    "CT_STEP_HU",
    "CT_WINDOW_HU",
    "DEFINITION_NOTES",
    "OAR_NAMES",
    "OPENKBP_SHAPE",
    "STRUCTURE_MAP",
    "TARGET_NAMES",
    "TRAINING_BRANCHES",
    "DicomExport",
    "OpenKBPPatient",
    "TrainingArraysSummary",
    "decode_ct",
    "encode_ct",
    "from_lps_axes",
    "iter_split",
    "list_patients",
    "openkbp_grid",
    "read_patient",
    "read_training_arrays",
    "to_lps_axes",
    "training_crop",
    "voxel_edge_contours",
    "write_dicom",
    "write_masks_rtstruct",
    "write_training_arrays",
]

#: Array shape of every OpenKBP volume, ``(n_i, n_j, n_k)`` in OpenKBP order.
OPENKBP_SHAPE: tuple[int, int, int] = (128, 128, 128)

#: OpenKBP structure name -> soars-dose catalogue name, OARs then targets.
STRUCTURE_MAP: dict[str, str] = {
    "Brainstem": "Brainstem",
    "SpinalCord": "SpinalCord",
    "Mandible": "Bone_Mandible",
    "LeftParotid": "Parotid_L",
    "RightParotid": "Parotid_R",
    "Esophagus": "Esophagus",
    "Larynx": "Larynx_GSL",
    "PTV56": "PTV56",
    "PTV63": "PTV63",
    "PTV70": "PTV70",
}

#: The seven OARs (catalogue names) in :data:`STRUCTURE_MAP` order.
OAR_NAMES: tuple[str, ...] = (
    "Brainstem", "SpinalCord", "Bone_Mandible", "Parotid_L", "Parotid_R", "Esophagus",
    "Larynx_GSL",
)
#: The three targets.
TARGET_NAMES: tuple[str, ...] = ("PTV56", "PTV63", "PTV70")

#: Where OpenKBP's structure may not be what the soars-dose name means.
DEFINITION_NOTES: dict[str, str] = {
    "Brainstem": (
        "Clinical contours from several institutions; the cranial (midbrain) and caudal "
        "(brainstem/cord junction at the foramen magnum) borders may be placed differently "
        "from the SOARS guideline."
    ),
    "SpinalCord": (
        "May be contoured as the cord or, in some source plans, closer to the spinal canal; "
        "its extent is limited to the planned region the CT was cropped to."
    ),
    "Bone_Mandible": (
        "OpenKBP contours the mandible as one structure; the SOARS catalogue segments "
        "Bone_Mandible_L and Bone_Mandible_R. Compare against the union of both halves "
        "(TG-263 Bone_Mandible); the teeth may or may not be included."
    ),
    "Parotid_L": (
        "Patient left (verified from anatomy: at larger x than Parotid_R). Inclusion of the "
        "deep lobe, accessory parotid tissue or the retromandibular vein may differ."
    ),
    "Parotid_R": (
        "Patient right. Inclusion of the deep lobe, accessory parotid tissue or the "
        "retromandibular vein may differ."
    ),
    "Esophagus": (
        "Present in about 35 % of patients. The cranial border (cricopharyngeus) and "
        "especially the caudal extent may differ: clinical contours often stop a few cm "
        "below the target or at the edge of the cropped CT."
    ),
    "Larynx_GSL": (
        "OpenKBP's 'Larynx' may not be the glottic + supraglottic larynx (Larynx_GSL) of the "
        "SOARS catalogue: it may include the subglottis, the epiglottis or the laryngeal "
        "cartilages, or stop at the glottis. Note that the alias table maps a plain "
        "'Larynx' onto the separate TG-263 name 'Larynx'. Present in about half the patients."
    ),
    "PTV56": "Target (nominal 56 Gy); absent in some patients. Not an OAR.",
    "PTV63": "Target (nominal 63 Gy); absent in many patients. Not an OAR.",
    "PTV70": "Target (nominal 70 Gy), present in every patient. Not an OAR.",
}

#: ROI display colours (R, G, B) used in the RTSTRUCTs written here.
_COLORS: dict[str, tuple[int, int, int]] = {
    "Brainstem": (240, 200, 60), "SpinalCord": (255, 255, 0), "Bone_Mandible": (235, 235, 200),
    "Parotid_L": (0, 200, 90), "Parotid_R": (0, 150, 60), "Esophagus": (160, 100, 60),
    "Larynx_GSL": (90, 170, 160), "PTV56": (255, 160, 160), "PTV63": (255, 90, 90),
    "PTV70": (220, 0, 0),
}

#: HU window stored by :func:`write_training_arrays` (lower, upper).
CT_WINDOW_HU: tuple[float, float] = (-500.0, 1000.0)
#: HU per uint8 step of the stored CT: 1500 / 255 = 5.88 HU.
CT_STEP_HU: float = (CT_WINDOW_HU[1] - CT_WINDOW_HU[0]) / 255.0

#: Label maps of :func:`write_training_arrays`: branch -> names, label = position + 1.
TRAINING_BRANCHES: dict[str, tuple[str, ...]] = {
    "anchor": ("Brainstem", "SpinalCord", "Bone_Mandible"),
    "mid": ("Parotid_L", "Parotid_R", "Esophagus", "Larynx_GSL"),
}

_TRAINING_FORMAT = "soars-dose/openkbp-training/1"
#: What np.load raises for a file that is not a (readable) .npz.
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)
#: Bytes a file may have and still travel with the working tree to a device machine.
_HARD_LIMIT_BYTES = 64 * 2**20


# ------------------------------------------------------------------ geometry
def to_lps_axes(a: np.ndarray) -> np.ndarray:
    """Reorder an OpenKBP array onto soars-dose axes.

    Parameters
    ----------
    a : ndarray, shape (n_i, n_j, n_k)
        Indexed OpenKBP ``[i (anterior->posterior), j (right->left),
        k (superior->inferior)]``.

    Returns
    -------
    ndarray, shape (n_k, n_i, n_j)
        Contiguous copy indexed ``[slice (inferior->superior, +z),
        row (+y), column (+x)]``: ``out[s, r, c] = a[r, c, n_k - 1 - s]``.
    """
    a = np.asarray(a)
    if a.ndim != 3:
        raise InputError(f"an OpenKBP volume has 3 axes, got shape {a.shape}")
    return np.ascontiguousarray(np.transpose(a, (2, 0, 1))[::-1])


def from_lps_axes(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_lps_axes`: soars-dose ``[k, j, i]`` back to OpenKBP ``[i, j, k]``.

    Parameters
    ----------
    a : ndarray, shape (n_k, n_i, n_j)
        Indexed ``[slice (+z), row (+y), column (+x)]`` on an
        :func:`openkbp_grid`.

    Returns
    -------
    ndarray, shape (n_i, n_j, n_k)
        Contiguous copy in OpenKBP order (e.g. to write a prediction back in
        OpenKBP's own format).
    """
    a = np.asarray(a)
    if a.ndim != 3:
        raise InputError(f"a volume has 3 axes, got shape {a.shape}")
    return np.ascontiguousarray(np.transpose(a[::-1], (1, 2, 0)))


def openkbp_grid(voxel_dimensions_mm: Sequence[float],
                 shape: Sequence[int] = OPENKBP_SHAPE) -> Grid:
    """The soars-dose grid of an OpenKBP volume.

    Parameters
    ----------
    voxel_dimensions_mm : sequence of 3 float
        OpenKBP ``voxel_dimensions`` (mm) along OpenKBP axes ``i`` (A->P),
        ``j`` (R->L), ``k`` (S->I).
    shape : sequence of 3 int
        OpenKBP array shape ``(n_i, n_j, n_k)``.

    Returns
    -------
    Grid
        Shape ``(n_k, n_i, n_j)``, spacing ``(vd[2], vd[0], vd[1])`` mm,
        identity direction (slices +z, rows +y, columns +x; HFS). By
        convention the in-plane centre of the volume is at ``x = y = 0`` and
        the centre of slice 0 (the most inferior, OpenKBP ``k = n_k - 1``)
        at ``z = 0``.
    """
    vd = _check_voxel_dimensions(voxel_dimensions_mm, "voxel_dimensions_mm")
    ni, nj, nk = (int(n) for n in shape)
    return Grid(
        shape=(nk, ni, nj),
        spacing=(vd[2], vd[0], vd[1]),
        origin=(-0.5 * (nj - 1) * vd[1], -0.5 * (ni - 1) * vd[0], 0.0),
    )


def _snap_to_corners(index: np.ndarray) -> np.ndarray | None:
    """Move corner-cut vertices (continuous ``[k, j, i]``) onto the voxel corner they cut.

    Every vertex of a contour traced on an upsampled mask lies on a voxel
    face (one in-plane coordinate a half-integer) within ``0.5 / up`` voxel
    of a corner; rounding both in-plane coordinates to half-integers puts
    it on that corner, the two ends of a cut meet there and collapse into
    one vertex. Returns None when fewer than three vertices remain.
    """
    out = np.empty_like(index)
    out[:, 0] = np.round(index[:, 0])
    out[:, 1:] = np.round(index[:, 1:] - 0.5) + 0.5
    keep = np.any(out[:, 1:] != np.roll(out[:, 1:], 1, axis=0), axis=1)
    out = out[keep]
    if len(out) >= 3:  # drop vertices on straight runs (axis-parallel in index space)
        prev, nxt = np.roll(out, 1, axis=0), np.roll(out, -1, axis=0)
        straight = ((prev[:, 1] == out[:, 1]) & (out[:, 1] == nxt[:, 1])) | (
            (prev[:, 2] == out[:, 2]) & (out[:, 2] == nxt[:, 2]))
        out = out[~straight]
    return out if len(out) >= 3 else None


def voxel_edge_contours(mask: np.ndarray, grid: Grid, up: int = 4, *,
                        snap: bool = True) -> list[np.ndarray]:
    """Planar contours that follow a voxel mask's faces.

    Marching squares on the in-plane ``up``-fold nearest-neighbour upsampled
    mask puts every straight edge exactly on a voxel face and cuts each
    corner by a triangle of ``1 / (8 up^2)`` voxel (3 % of an isolated
    voxel at ``up = 4``). With ``snap`` (default) the two ends of every cut
    are moved onto the voxel corner, so each polygon is the exact boundary
    of the mask's voxels on that slice: the contoured area equals the voxel
    count x pixel area. Voxels that touch only at a corner give a polygon
    that touches itself at that corner (or two polygons sharing the point).

    Parameters
    ----------
    mask : ndarray of bool, shape ``grid.shape``
        Indexed ``[k, j, i]`` = ``[slice, row, column]``.
    grid : Grid
        Geometry of ``mask`` (LPS mm, axis-aligned).
    up : int
        In-plane upsampling factor (>= 2 with ``snap``, else >= 1).
    snap : bool
        Put the vertices on the voxel corners (exact voxel boundary).

    Returns
    -------
    list of ndarray
        ``(n, 3)`` LPS points (mm) of closed planar polygons, one or more
        per occupied slice, on the slice centre planes; holes are separate
        polygons (even-odd rule).
    """
    mask = np.asarray(mask)
    if mask.shape != grid.shape:
        raise InputError(f"mask has shape {mask.shape} but the grid is {grid.shape}")
    if int(up) < (2 if snap else 1):
        raise InputError(f"up must be an integer >= {2 if snap else 1}, got {up!r}")
    up = int(up)
    fine = np.repeat(np.repeat(mask.astype(bool, copy=False), up, axis=1), up, axis=2)
    sp = grid.spacing
    shift = (0.5 - 0.5 / up) * (sp[1] * grid.direction[1] + sp[2] * grid.direction[2])
    fine_grid = Grid(fine.shape, (sp[0], sp[1] / up, sp[2] / up),
                     tuple(np.asarray(grid.origin) - shift), grid.direction)
    contours = masks_to_contours(fine, fine_grid)
    if not snap:
        return contours
    snapped = []
    for c in contours:
        index = _snap_to_corners(grid.world_to_index(c))
        if index is not None:
            snapped.append(grid.index_to_world(index))
    return snapped


# -------------------------------------------------------------- data model
@dataclass
class OpenKBPPatient:
    """One OpenKBP patient on a soars-dose grid.

    Every array is indexed ``[k, j, i]`` = ``[slice (inferior->superior,
    +z), row (anterior->posterior, +y), column (right->left, +x)]`` on
    :attr:`grid` (see :func:`to_lps_axes` and :func:`openkbp_grid`).

    Attributes
    ----------
    patient_id : str
        OpenKBP identifier, e.g. ``'pt_201'``.
    grid : Grid
        Geometry in LPS mm (HFS, identity direction).
    ct_hu : ndarray of int16
        CT numbers in HU; -1024 outside the scanned region.
    dose_gy : ndarray of float32
        Clinical plan dose in Gy.
    possible_dose_mask : ndarray of bool
        Where OpenKBP allows non-zero dose.
    masks : dict of str -> ndarray of bool
        Catalogue name (:data:`STRUCTURE_MAP` values) -> mask, only for the
        structures present (and non-empty), in :data:`STRUCTURE_MAP` order.
    source : Path
        The ``.npz`` file or raw CSV folder read.
    voxel_dimensions_mm : tuple of float
        OpenKBP voxel size along its axes ``(i, j, k)``, mm.
    """

    patient_id: str
    grid: Grid
    ct_hu: np.ndarray
    dose_gy: np.ndarray
    possible_dose_mask: np.ndarray
    masks: dict[str, np.ndarray]
    source: Path
    voxel_dimensions_mm: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))

    @property
    def oars(self) -> list[str]:
        """Catalogue names of the OARs present, in :data:`OAR_NAMES` order."""
        return [n for n in OAR_NAMES if n in self.masks]

    @property
    def targets(self) -> list[str]:
        """Names of the PTVs present."""
        return [n for n in TARGET_NAMES if n in self.masks]

    def volume_cc(self, name: str) -> float:
        """Volume of mask ``name`` in cc (voxel count x voxel volume)."""
        return float(self.masks[name].sum()) * self.grid.voxel_volume_mm3 / 1000.0


# ----------------------------------------------------------------- reading
def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _check_voxel_dimensions(values, where: str) -> tuple[float, float, float]:
    try:
        vd = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: voxel dimensions are not numbers ({e})") from None
    if vd.size != 3 or not np.all(np.isfinite(vd)) or np.any(vd <= 0):
        raise InputError(
            f"{where}: voxel dimensions must be three positive sizes in mm (along OpenKBP "
            f"i, j, k), got {vd.tolist()}"
        )
    return float(vd[0]), float(vd[1]), float(vd[2])


def _first_bad(strings: Sequence[str], convert) -> int:
    for n, s in enumerate(strings):
        try:
            convert(s)
        except ValueError:
            return n
    return -1


def _read_sparse_csv(path: Path, *, with_values: bool, size: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat indices (and values) of one OpenKBP sparse CSV file.

    Raises InputError naming the file and line for a missing file, a bad
    header, a row that is not ``index,value``, a non-numeric field, an
    index outside ``[0, size)`` or a repeated index.
    """
    if not path.is_file():
        raise InputError(f"{path}: file not found; an OpenKBP patient folder needs it")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read as text ({e})") from None
    lines = text.splitlines()
    if not lines or lines[0].replace(" ", "") != ",data":
        first = lines[0][:40] if lines else ""
        raise InputError(
            f"{path}: line 1 is {first!r}, expected the OpenKBP header ',data' followed by "
            "'flat_index,value' rows; is this an OpenKBP CSV file?"
        )
    numbers = [n for n, line in enumerate(lines[1:], start=2) if line.strip()]
    rows = [lines[n - 1].split(",") for n in numbers]
    for n, r in zip(numbers, rows, strict=True):
        if len(r) != 2:
            raise InputError(
                f"{path}: line {n} is {lines[n - 1][:60]!r}; expected 'flat_index,value' "
                "(two comma-separated fields)"
            )
    idx_str = [r[0].strip() for r in rows]
    try:
        idx = np.array(idx_str, dtype=str).astype(np.int64) if rows else np.zeros(0, np.int64)
    except ValueError:
        n = _first_bad(idx_str, int)
        raise InputError(
            f"{path}: line {numbers[n]}: flat index {idx_str[n]!r} is not an integer"
        ) from None
    out_of_range = np.flatnonzero((idx < 0) | (idx >= size))
    if out_of_range.size:
        n = int(out_of_range[0])
        raise InputError(
            f"{path}: line {numbers[n]}: flat index {int(idx[n])} is outside 0..{size - 1} "
            f"(a C-order index into a {OPENKBP_SHAPE} array); {out_of_range.size} row(s) are "
            "out of range"
        )
    unique, counts = np.unique(idx, return_counts=True)
    if np.any(counts > 1):
        dup = int(unique[counts > 1][0])
        raise InputError(f"{path}: flat index {dup} appears {int(counts.max())} times")
    if not with_values:
        return idx, None
    val_str = [r[1].strip() for r in rows]
    try:
        vals = np.array(val_str, dtype=str).astype(np.float64) if rows else np.zeros(0)
    except ValueError:
        n = _first_bad(val_str, float)
        raise InputError(
            f"{path}: line {numbers[n]}: value {val_str[n]!r} is not a number"
        ) from None
    bad = np.flatnonzero(~np.isfinite(vals))
    if bad.size:
        n = int(bad[0])
        raise InputError(f"{path}: line {numbers[n]}: value {val_str[n]!r} is not finite")
    return idx, vals


def _read_voxel_dimensions_csv(path: Path) -> tuple[float, float, float]:
    if not path.is_file():
        raise InputError(
            f"{path}: file not found; the voxel dimensions (mm along OpenKBP i, j, k) are "
            "needed to place the patient on a grid"
        )
    values = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        for field_ in line.replace(",", " ").split():
            try:
                values.append(float(field_))
            except ValueError:
                raise InputError(
                    f"{path}: line {n}: {field_!r} is not a number; expected three voxel "
                    "sizes in mm, one per line"
                ) from None
    return _check_voxel_dimensions(values, str(path))


def _dense(idx: np.ndarray, values, dtype, fill=0) -> np.ndarray:
    out = np.full(int(np.prod(OPENKBP_SHAPE)), fill, dtype=dtype)
    out[idx] = values
    return out.reshape(OPENKBP_SHAPE)


def _read_raw_folder(folder: Path) -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
    size = int(np.prod(OPENKBP_SHAPE))
    vd = _read_voxel_dimensions_csv(folder / "voxel_dimensions.csv")
    idx, vals = _read_sparse_csv(folder / "ct.csv", with_values=True, size=size)
    hu = np.rint(vals) - 1024
    if hu.size and (hu.min() < np.iinfo(np.int16).min or hu.max() > np.iinfo(np.int16).max):
        raise InputError(
            f"{folder / 'ct.csv'}: CT values span {hu.min():.0f}..{hu.max():.0f} HU, outside int16"
        )
    arrays = {"ct_hu": _dense(idx, hu.astype(np.int16), np.int16, fill=-1024)}
    idx, vals = _read_sparse_csv(folder / "dose.csv", with_values=True, size=size)
    arrays["dose_gy"] = _dense(idx, vals.astype(np.float32), np.float32)
    idx, _ = _read_sparse_csv(folder / "possible_dose_mask.csv", with_values=False, size=size)
    arrays["possible_dose_mask"] = _dense(idx, True, bool)
    for name in STRUCTURE_MAP:
        f = folder / f"{name}.csv"
        if f.is_file():
            idx, _ = _read_sparse_csv(f, with_values=False, size=size)
            arrays[f"mask_{name}"] = _dense(idx, True, bool)
    return arrays, vd


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except _NPZ_ERRORS as e:  # pickled objects are refused with a ValueError
        raise InputError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if "voxel_dimensions_mm" not in arrays:
        raise InputError(
            f"{path}: no 'voxel_dimensions_mm' array; the voxel size (mm along OpenKBP i, j, k) "
            "is needed to place the patient on a grid"
        )
    vd = _check_voxel_dimensions(arrays.pop("voxel_dimensions_mm"), str(path))
    missing = [k for k in ("ct_hu", "dose_gy", "possible_dose_mask") if k not in arrays]
    if missing:
        raise InputError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}")
    for k in list(arrays):
        if k.startswith("mask_") and k[5:] not in STRUCTURE_MAP:
            warn(f"{path}: ignored {k!r}, not an OpenKBP structure ({sorted(STRUCTURE_MAP)})")
            del arrays[k]
    return arrays, vd


def _patient_from_arrays(arrays: dict[str, np.ndarray], vd, source: Path) -> OpenKBPPatient:
    shape = np.shape(arrays["ct_hu"])
    if len(shape) != 3:
        raise InputError(f"{source}: ct_hu must be 3-D (OpenKBP [i, j, k]), got shape {shape}")
    wrong = {k: np.shape(v) for k, v in arrays.items() if np.shape(v) != shape}
    if wrong:
        raise InputError(
            f"{source}: every array must have the CT's shape {shape}; these differ: {wrong}"
        )
    ct = np.asarray(arrays["ct_hu"])
    if not np.issubdtype(ct.dtype, np.integer):
        if not np.all(np.isfinite(ct)):
            raise InputError(f"{source}: ct_hu holds NaN or infinite values")
        ct = np.rint(ct)
    if ct.size and (ct.min() < np.iinfo(np.int16).min or ct.max() > np.iinfo(np.int16).max):
        raise InputError(f"{source}: ct_hu spans {ct.min()}..{ct.max()} HU, outside int16")
    dose = np.asarray(arrays["dose_gy"], dtype=np.float32)
    if not np.all(np.isfinite(dose)) or (dose.size and dose.min() < 0):
        raise InputError(f"{source}: dose_gy must be finite and non-negative (Gy)")
    masks = {}
    for name, ours in STRUCTURE_MAP.items():
        key = f"mask_{name}"
        if key not in arrays:
            continue
        m = to_lps_axes(np.asarray(arrays[key]).astype(bool, copy=False))
        if not m.any():
            warn(f"{source}: structure {name!r} is empty; treated as absent")
            continue
        masks[ours] = m
    return OpenKBPPatient(
        patient_id=source.stem if source.suffix == ".npz" else source.name,
        grid=openkbp_grid(vd, shape),
        ct_hu=to_lps_axes(ct.astype(np.int16, copy=False)),
        dose_gy=to_lps_axes(dose),
        possible_dose_mask=to_lps_axes(np.asarray(arrays["possible_dose_mask"]).astype(bool)),
        masks=masks,
        source=source,
        voxel_dimensions_mm=tuple(vd),
    )


def read_patient(path: str | os.PathLike) -> OpenKBPPatient:
    """Read one OpenKBP patient from a ``.npz`` file or a raw CSV folder.

    Parameters
    ----------
    path : path
        ``pt_N.npz`` (arrays as described in the module docstring) or a
        folder ``pt_N/`` in OpenKBP's sparse-CSV format.

    Returns
    -------
    OpenKBPPatient
        Arrays reordered to soars-dose ``[k, j, i]`` (slice +z, row +y,
        column +x) on :func:`openkbp_grid`; masks renamed with
        :data:`STRUCTURE_MAP`. The patient id is the file stem / folder name.

    Raises
    ------
    InputError
        Naming the file, for a missing file or folder, a malformed CSV row
        (with its line number), a flat index out of range, arrays of the
        wrong shape, non-finite or negative dose, or missing voxel
        dimensions.

    Notes
    -----
    Reading a raw folder parses about 300,000 CSV rows (about 0.5 s); the
    ``.npz`` form of the same patient decodes to identical arrays.
    """
    path = Path(path)
    if path.is_dir():
        arrays, vd = _read_raw_folder(path)
    elif path.is_file():
        if path.suffix != ".npz":
            raise InputError(
                f"{path}: expected a pt_N.npz file or an OpenKBP patient folder of CSV files"
            )
        arrays, vd = _read_npz(path)
    else:
        raise InputError(f"{path}: no such file or folder (expected pt_N.npz or a pt_N/ folder)")
    return _patient_from_arrays(arrays, vd, path)


def list_patients(folder: str | os.PathLike) -> list[Path]:
    """The patients of an OpenKBP split folder, in natural order (pt_2 before pt_10).

    Parameters
    ----------
    folder : path
        A folder of ``pt_N.npz`` files and/or raw ``pt_N/`` CSV folders
        (other files, such as ``index.json``, are ignored). When a patient
        is present in both forms the ``.npz`` is used.

    Returns
    -------
    list of Path
        One entry per patient.

    Raises
    ------
    InputError
        If ``folder`` is not a folder or holds no patient.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected an OpenKBP split such as train/)")
    found: dict[str, Path] = {}
    for p in folder.iterdir():
        if p.is_file() and p.suffix == ".npz":
            found[p.stem] = p
    for p in folder.iterdir():
        if p.is_dir() and (p / "ct.csv").is_file():
            if p.name in found:
                warn(f"{folder}: patient {p.name} is both a .npz and a CSV folder; using the .npz")
            else:
                found[p.name] = p
    if not found:
        raise InputError(
            f"{folder}: no OpenKBP patient found (looked for pt_N.npz files and pt_N/ folders "
            "holding ct.csv)"
        )
    return [found[k] for k in sorted(found, key=_natural_key)]


def iter_split(folder: str | os.PathLike, *, skip_errors: bool = False
               ) -> Iterator[OpenKBPPatient]:
    """Read the patients of a split one at a time, in natural order.

    Parameters
    ----------
    folder : path
        See :func:`list_patients`.
    skip_errors : bool
        Warn and go on when a patient cannot be read, instead of raising.

    Yields
    ------
    OpenKBPPatient
    """
    for p in list_patients(folder):
        try:
            yield read_patient(p)
        except SoarsDoseError as e:
            if not skip_errors:
                raise
            warn(f"skipped {p}: {e}")


# ------------------------------------------------------------------ DICOM
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
    ct : CTSeriesInfo
        UIDs of the CT series, for further RTSTRUCTs on it
        (:func:`write_masks_rtstruct`).
    provenance : Path
        ``openkbp_export.json``: source, conventions and UIDs.
    """

    ct_dir: Path
    rtdose: Path
    rtstruct: Path
    ct: CTSeriesInfo
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
    from .dicom.uids import new_uid

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
                f"{existing[0]} already exists; pass overwrite=True (--overwrite) to replace it "
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
    from .outputs import provenance

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
    _atomic_write_bytes(prov, (json.dumps(record, indent=1) + "\n").encode())
    return DicomExport(ct_dir, rd, rs, info, prov)


def _ct_info(ct: CTSeriesInfo | DicomExport | str | os.PathLike) -> CTSeriesInfo:
    if isinstance(ct, CTSeriesInfo):
        return ct
    if isinstance(ct, DicomExport):
        return ct.ct
    from .dicom.ct import read_ct_series

    folder = Path(ct)
    if (folder / "CT").is_dir():
        folder = folder / "CT"
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give write_dicom's output folder or its CT/")
    series = read_ct_series(folder)
    if not series.frame_of_reference_uid or not series.study_uid:
        raise InputError(f"{folder}: the CT series lacks a FrameOfReferenceUID or StudyInstanceUID")
    return CTSeriesInfo(series.series_uid, series.study_uid, series.frame_of_reference_uid,
                        list(series.sop_instance_uids), list(series.paths), series.grid)


def write_masks_rtstruct(
    masks: Mapping[str, np.ndarray],
    ct: CTSeriesInfo | DicomExport | str | os.PathLike,
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
    ct : CTSeriesInfo, DicomExport or path
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
        raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it")
    first = pydicom.dcmread(info.paths[0], stop_before_pixels=True)
    pid = patient_id if patient_id is not None else str(first.get("PatientID", ""))
    structures = _structures_from_masks(masks, info.grid, str(path))
    write_rtstruct(structures, path, frame_of_reference_uid=info.frame_of_reference_uid, ct=info,
                   patient_id=pid, patient_name=str(first.get("PatientName", "")), label=label,
                   generation_algorithm=generation_algorithm, overwrite=overwrite)
    return path


# -------------------------------------------------------- training arrays
def encode_ct(hu: np.ndarray) -> np.ndarray:
    """HU -> uint8: clip to :data:`CT_WINDOW_HU` ([-500, 1000]) and map linearly onto 0..255.

    The step is :data:`CT_STEP_HU` = 1500 / 255 = 5.88 HU, so
    :func:`decode_ct` returns the clipped HU within 2.94 HU.
    """
    lo, hi = CT_WINDOW_HU
    x = (np.clip(np.asarray(hu, dtype=np.float32), lo, hi) - lo) / np.float32(CT_STEP_HU)
    return np.rint(x).astype(np.uint8)


def decode_ct(u8: np.ndarray) -> np.ndarray:
    """uint8 from :func:`encode_ct` -> HU (float32), in [-500, 1000]."""
    return (np.asarray(u8, dtype=np.float32) * np.float32(CT_STEP_HU)
            + np.float32(CT_WINDOW_HU[0]))


def training_crop(patient: OpenKBPPatient, *, oars: Sequence[str] = OAR_NAMES,
                  body_hu: float = -500.0, body_margin: int = 4, z_margin: int = 12
                  ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The box kept for training, ``start <= [k, j, i] < stop``.

    Slices: those spanned by the union of the ``oars`` masks, widened by
    ``z_margin`` slices each way (all slices if the patient has none of
    them). In-plane: the bounding box of the body (``HU > body_hu``) on
    those slices, widened by ``body_margin`` voxels, and always containing
    every OAR voxel. Everything is clipped to the volume.

    Returns
    -------
    start, stop : tuple of int
        Voxel indices on ``patient.grid`` (``[k, j, i]``).
    """
    shape = patient.ct_hu.shape
    union = np.zeros(shape, dtype=bool)
    for name in oars:
        if name in patient.masks:
            union |= patient.masks[name]
    if union.any():
        ks = np.flatnonzero(union.any(axis=(1, 2)))
        k0, k1 = max(0, ks[0] - z_margin), min(shape[0], ks[-1] + 1 + z_margin)
    else:
        warn(f"{patient.source}: none of {list(oars)} present; keeping every slice")
        k0, k1 = 0, shape[0]
    keep = (patient.ct_hu[k0:k1] > body_hu) | union[k0:k1]
    if not keep.any():
        return (k0, 0, 0), (k1, shape[1], shape[2])
    js = np.flatnonzero(keep.any(axis=(0, 2)))
    is_ = np.flatnonzero(keep.any(axis=(0, 1)))
    j0, j1 = max(0, js[0] - body_margin), min(shape[1], js[-1] + 1 + body_margin)
    i0, i1 = max(0, is_[0] - body_margin), min(shape[2], is_[-1] + 1 + body_margin)
    return (int(k0), int(j0), int(i0)), (int(k1), int(j1), int(i1))


@dataclass
class TrainingArraysSummary:
    """What :func:`write_training_arrays` wrote.

    Attributes
    ----------
    path : Path
    n_patients : int
    size_bytes : int
        Size of the file.
    seconds : float
        Wall time to read the split and write the file.
    overlaps : dict of str -> dict
        ``'A>B'`` (B, later in its branch, overwrote A) -> ``{'patients': n,
        'voxels': n}``.
    skipped : list of str
        Patients that could not be read, with the reason.
    voxels : int
        Voxels stored per array (sum over patients).
    """

    path: Path
    n_patients: int
    size_bytes: int
    seconds: float
    overlaps: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    voxels: int = 0


def _check_branches(names: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    branches = {str(b): tuple(v) for b, v in names.items()}
    seen: list[str] = []
    for b, v in branches.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", b) or b in ("ct", "index", "meta"):
            raise InputError(f"branch name {b!r} must be an identifier other than ct/index/meta")
        if not 1 <= len(v) <= 255:
            raise InputError(f"branch {b!r} must list 1 to 255 names, got {len(v)}")
        for n in v:
            if n not in OAR_NAMES:
                raise InputError(f"branch {b!r}: {n!r} is not an OpenKBP OAR ({list(OAR_NAMES)})")
            if n in seen:
                raise InputError(f"{n!r} is listed in more than one branch")
            seen.append(n)
    return branches


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_file(path, lambda f: f.write(data))


def write_training_arrays(
    folder: str | os.PathLike,
    out_file: str | os.PathLike,
    *,
    names: Mapping[str, Sequence[str]] = TRAINING_BRANCHES,
    patients: Sequence[str] | None = None,
    overwrite: bool = False,
    body_hu: float = -500.0,
    body_margin: int = 4,
    z_margin: int = 12,
) -> TrainingArraysSummary:
    """Pack a split into one compact ``.npz`` for training the segmentation branches.

    For each patient the volume is cropped with :func:`training_crop`
    (body bounding box + ``body_margin`` voxels in-plane, OAR slices +-
    ``z_margin`` in z) and stored as

    * ``ct``: uint8, HU windowed to [-500, 1000] and mapped linearly onto
      0..255 (:func:`encode_ct`; step 5.88 HU, error <= 2.94 HU);
    * one uint8 label map per branch of ``names``: 0 background, ``n`` the
      n-th name of the branch; where two masks of one branch overlap the
      later name wins (overlaps are counted and reported);
    * ``annotated``: bool per OAR (the names of all branches, in order):
      False when the patient has no such mask, so label 0 there means
      "unknown", not "background" (partial labels).

    All volumes of one kind are flattened and concatenated (``ct``,
    ``label_<branch>``); an index table gives each patient's offset, shape,
    crop start (``[k, j, i]`` on its :func:`openkbp_grid`), spacing (mm,
    ``[k, j, i]``) and the LPS origin of the crop's first voxel. A JSON
    string ``meta`` records the format, window, label tables, overlaps and
    source. Read it back with :func:`read_training_arrays`.

    Parameters
    ----------
    folder : path
        OpenKBP split (see :func:`list_patients`).
    out_file : path
        Output ``.npz`` (written atomically with ``np.savez_compressed``).
    names : mapping branch -> sequence of str
        Label maps to build (default :data:`TRAINING_BRANCHES`: ``anchor``
        = Brainstem, SpinalCord, Bone_Mandible; ``mid`` = Parotid_L,
        Parotid_R, Esophagus, Larynx_GSL).
    patients : sequence of str, optional
        Only these patient ids (default: all of the split).
    overwrite : bool
        Replace an existing ``out_file``.
    body_hu, body_margin, z_margin
        Crop parameters of :func:`training_crop`.

    Returns
    -------
    TrainingArraysSummary

    Raises
    ------
    OutputExistsError
        If ``out_file`` exists and ``overwrite`` is false.
    InputError
        For a bad ``names`` or an unknown patient id; a patient that
        cannot be read is skipped with a warning and listed in the summary.

    Notes
    -----
    With the defaults the 169 train patients of OpenKBP take 21.3 MB (about
    25 s to write on one core) and the 33 validation patients 4.0 MB; the
    z crop keeps about 86 % of the slices because the spinal cord is
    usually contoured over most of the scan. The file is meant to travel
    (e.g. to a GPU machine); a warning is given above 64 MiB.
    """
    t0 = time.perf_counter()
    branches = _check_branches(names)
    oars = [n for v in branches.values() for n in v]
    out = Path(out_file)
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    paths = list_patients(folder)
    if patients is not None:
        by_id = {(p.stem if p.suffix == ".npz" else p.name): p for p in paths}
        unknown = [p for p in patients if p not in by_id]
        if unknown:
            raise InputError(f"{folder}: no patient(s) {unknown}")
        paths = [by_id[p] for p in patients]

    chunks: dict[str, list[np.ndarray]] = {"ct": [], **{b: [] for b in branches}}
    rows: dict[str, list] = {k: [] for k in ("patient_id", "offset", "shape", "crop_start",
                                             "spacing", "origin", "annotated")}
    overlaps: dict[str, dict[str, int]] = {}
    skipped: list[str] = []
    offset = 0
    for p in paths:
        try:
            pt = read_patient(p)
        except SoarsDoseError as e:
            warn(f"skipped {p}: {e}")
            skipped.append(f"{p.name}: {e}")
            continue
        start, stop = training_crop(pt, oars=oars, body_hu=body_hu, body_margin=body_margin,
                                    z_margin=z_margin)
        box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        shape = tuple(b - a for a, b in zip(start, stop, strict=True))
        chunks["ct"].append(encode_ct(pt.ct_hu[box]).ravel())
        for b, members in branches.items():
            lab = np.zeros(shape, dtype=np.uint8)
            for value, name in enumerate(members, start=1):
                if name not in pt.masks:
                    continue
                m = pt.masks[name][box]
                hit = lab[m]
                if hit.any():
                    counts = np.bincount(hit, minlength=value)
                    for prev in np.flatnonzero(counts[1:]) + 1:
                        key = f"{members[prev - 1]}>{name}"
                        o = overlaps.setdefault(key, {"patients": 0, "voxels": 0})
                        o["patients"] += 1
                        o["voxels"] += int(counts[prev])
                lab[m] = value
            chunks[b].append(lab.ravel())
        rows["patient_id"].append(pt.patient_id)
        rows["offset"].append(offset)
        rows["shape"].append(shape)
        rows["crop_start"].append(start)
        rows["spacing"].append(pt.grid.spacing)
        rows["origin"].append(tuple(pt.grid.index_to_world(start)))
        rows["annotated"].append([n in pt.masks for n in oars])
        offset += int(np.prod(shape))
    if not rows["patient_id"]:
        raise InputError(f"{folder}: no patient could be read ({len(skipped)} skipped)")

    meta = {
        "format": _TRAINING_FORMAT,
        "source": str(Path(folder)),
        "axes": "[k, j, i] = [slice +z (inferior->superior), row +y, column +x]; "
                "grid of soars_dose.openkbp.openkbp_grid",
        "ct_window_hu": list(CT_WINDOW_HU),
        "ct_step_hu": CT_STEP_HU,
        "ct_decode": "hu = u8 * ct_step_hu + ct_window_hu[0]",
        "branches": {b: list(v) for b, v in branches.items()},
        "annotated_names": oars,
        "crop": {"body_hu": body_hu, "body_margin": body_margin, "z_margin": z_margin},
        "overlaps": overlaps,
        "skipped": skipped,
    }
    payload = {
        "meta": np.array(json.dumps(meta)),
        "index_patient_id": np.array(rows["patient_id"]),
        "index_offset": np.array(rows["offset"], dtype=np.int64),
        "index_shape": np.array(rows["shape"], dtype=np.int32).reshape(-1, 3),
        "index_crop_start": np.array(rows["crop_start"], dtype=np.int32).reshape(-1, 3),
        "index_spacing": np.array(rows["spacing"], dtype=np.float64).reshape(-1, 3),
        "index_origin": np.array(rows["origin"], dtype=np.float64).reshape(-1, 3),
        "index_annotated": np.array(rows["annotated"], dtype=bool).reshape(-1, len(oars)),
        "ct": np.concatenate(chunks["ct"]),
        **{f"label_{b}": np.concatenate(chunks[b]) for b in branches},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_file(out, lambda f: np.savez_compressed(f, **payload))
    size = out.stat().st_size
    if size > _HARD_LIMIT_BYTES:
        warn(f"{out}: {size / 2**20:.1f} MiB, more than the 64 MiB that can travel with the "
             "working tree; write fewer patients per file")
    return TrainingArraysSummary(out, len(rows["patient_id"]), size, time.perf_counter() - t0,
                                 overlaps, skipped, offset)


def read_training_arrays(path: str | os.PathLike) -> list[dict]:
    """Read a file of :func:`write_training_arrays` into per-patient dicts.

    Parameters
    ----------
    path : path
        The ``.npz`` file.

    Returns
    -------
    list of dict
        One dict per patient, in file order, with keys

        * ``patient_id`` (str);
        * ``ct`` (uint8 ``[k, j, i]``; HU via :func:`decode_ct`);
        * ``labels`` (dict branch -> uint8 ``[k, j, i]`` label map) and
          ``branches`` (dict branch -> tuple of names, label n = name n-1);
        * ``annotated`` (dict OAR name -> bool);
        * ``crop_start`` (tuple ``[k, j, i]`` of the crop on the patient's
          :func:`openkbp_grid`), ``spacing`` (mm, ``[k, j, i]``),
          ``origin`` (LPS mm of the crop's voxel ``[0, 0, 0]``) and ``grid``
          (the crop's :class:`~soars_dose.grid.Grid`).

    Raises
    ------
    InputError
        If the file is missing, unreadable or not of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["meta"]))
    except (*_NPZ_ERRORS, KeyError) as e:
        raise InputError(
            f"{path}: not a training-arrays file ({type(e).__name__}: {e})") from None
    if meta.get("format") != _TRAINING_FORMAT:
        raise InputError(f"{path}: format {meta.get('format')!r}, expected {_TRAINING_FORMAT!r}")
    branches = {b: tuple(v) for b, v in meta["branches"].items()}
    names = list(meta["annotated_names"])
    out = []
    for n, pid in enumerate(data["index_patient_id"]):
        shape = tuple(int(s) for s in data["index_shape"][n])
        a = int(data["index_offset"][n])
        b = a + int(np.prod(shape))
        spacing = tuple(float(s) for s in data["index_spacing"][n])
        origin = tuple(float(s) for s in data["index_origin"][n])
        out.append({
            "patient_id": str(pid),
            "ct": data["ct"][a:b].reshape(shape),
            "labels": {br: data[f"label_{br}"][a:b].reshape(shape) for br in branches},
            "branches": branches,
            "annotated": {name: bool(v)
                          for name, v in zip(names, data["index_annotated"][n], strict=True)},
            "crop_start": tuple(int(s) for s in data["index_crop_start"][n]),
            "spacing": spacing,
            "origin": origin,
            "grid": Grid(shape, spacing, origin),
        })
    return out


# --------------------------------------------------------------------- CLI
def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m soars_dose.openkbp",
        description="OpenKBP patients: DICOM export and compact training arrays.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export-training", help="pack a split into one compact .npz")
    p.add_argument("src", help="split folder (pt_N.npz files or raw pt_N/ folders)")
    p.add_argument("out", help="output .npz")
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("to-dicom", help="write one patient as CT + RTDOSE + RTSTRUCT")
    p.add_argument("src", help="pt_N.npz or a raw pt_N/ CSV folder")
    p.add_argument("out", help="output folder")
    p.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "export-training":
            s = write_training_arrays(args.src, args.out, overwrite=args.overwrite)
            print(f"{s.path}: {s.n_patients} patients, {s.size_bytes / 1e6:.1f} MB "
                  f"({s.voxels} voxels per array), {s.seconds:.1f} s")
            for k, v in s.overlaps.items():
                print(f"  overlap {k}: {v['voxels']} voxels in {v['patients']} patients")
            for k in s.skipped:
                print(f"  skipped {k}")
        else:
            e = write_dicom(read_patient(args.src), args.out, overwrite=args.overwrite)
            print(f"wrote {e.ct_dir} ({len(e.ct.paths)} slices), {e.rtdose}, {e.rtstruct}")
    except SoarsDoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
