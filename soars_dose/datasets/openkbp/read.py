"""OpenKBP patients read from their sparse-CSV folders or ``.npz`` files.

OpenKBP (Babier et al., Med Phys 2021) ships 340 head-and-neck IMRT
patients on a fixed ``128 x 128 x 128`` grid: CT, clinical dose, a
"possible dose" mask, seven OAR masks and up to three PTVs. This module
reads them, either in OpenKBP's original sparse-CSV folders or as the
``.npz`` files of ``shared/data/openkbp``, onto a
:class:`~soars_dose.grid.Grid` in DICOM patient coordinates
(:mod:`~soars_dose.datasets.openkbp.axes`).

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

import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError, SoarsDoseError, warn
from ...grid import Grid
from .axes import OPENKBP_SHAPE, check_voxel_dimensions, openkbp_grid, to_lps_axes

__all__ = [
    "DEFINITION_NOTES",
    "NPZ_ERRORS",
    "OAR_NAMES",
    "STRUCTURE_MAP",
    "TARGET_NAMES",
    "OpenKBPPatient",
    "iter_split",
    "list_patients",
    "read_patient",
]

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

#: What np.load raises for a file that is not a (readable) .npz.
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


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


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


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
    return check_voxel_dimensions(values, str(path))


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
    except NPZ_ERRORS as e:  # pickled objects are refused with a ValueError
        raise InputError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if "voxel_dimensions_mm" not in arrays:
        raise InputError(
            f"{path}: no 'voxel_dimensions_mm' array; the voxel size (mm along OpenKBP i, j, k) "
            "is needed to place the patient on a grid"
        )
    vd = check_voxel_dimensions(arrays.pop("voxel_dimensions_mm"), str(path))
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
