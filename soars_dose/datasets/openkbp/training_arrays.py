"""A whole OpenKBP split packed into one compact ``.npz`` for training the segmentation branches.

:func:`write_training_arrays` crops each patient to its OARs and body,
stores the CT as uint8 and one label map per branch; :func:`read_training_arrays`
reads the file back per patient. The branch table (:data:`TRAINING_BRANCHES`)
takes each OpenKBP OAR's stratum from the one catalogue
(:mod:`~soars_dose.oars`); its keys (``anchor``, ``mid``)
are part of the file format.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import oars as catalogue
from ...console import option
from ...errors import InputError, OutputExistsError, SoarsDoseError, warn
from ...grid import Grid
from ...outputs import atomic_write_file
from ...segmentation.dataset import DatasetCase
from .read import NPZ_ERRORS, OAR_NAMES, OpenKBPPatient, list_patients, read_patient

__all__ = [
    "BRANCH_STRATA",
    "CT_STEP_HU",
    "CT_WINDOW_HU",
    "TRAINING_BRANCHES",
    "TrainingArraysSummary",
    "dataset_cases",
    "decode_ct",
    "encode_ct",
    "read_training_arrays",
    "training_crop",
    "write_training_arrays",
]

#: HU window stored by :func:`write_training_arrays` (lower, upper).
CT_WINDOW_HU: tuple[float, float] = (-500.0, 1000.0)
#: HU per uint8 step of the stored CT: 1500 / 255 = 5.88 HU.
CT_STEP_HU: float = (CT_WINDOW_HU[1] - CT_WINDOW_HU[0]) / 255.0

#: Branch key of the training-arrays file -> catalogue stratum.
BRANCH_STRATA: dict[str, str] = {"anchor": "anchor", "mid": "mid_level"}

#: Label maps of :func:`write_training_arrays`: branch -> names, label = position + 1
#: (the OpenKBP OARs of each stratum, in :data:`OAR_NAMES` order).
TRAINING_BRANCHES: dict[str, tuple[str, ...]] = {
    key: tuple(n for n in OAR_NAMES if catalogue.get(n).category == stratum)
    for key, stratum in BRANCH_STRATA.items()
}

_TRAINING_FORMAT = "soars-dose/openkbp-training/1"


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
    (e.g. to a GPU machine); ``training/openkbp/export_data.py`` warns when
    it exceeds what a development machine carries.
    """
    t0 = time.perf_counter()
    branches = _check_branches(names)
    oars = [n for v in branches.values() for n in v]
    out = Path(out_file)
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"{out} already exists; pass {option('overwrite')} to replace it")
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
                "grid of soars_dose.datasets.openkbp.openkbp_grid",
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
    except (*NPZ_ERRORS, KeyError) as e:
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


def dataset_cases(path: str | os.PathLike, limit: int | None = None) -> list[DatasetCase]:
    """Training cases straight from a training-arrays file (no data set folder written).

    Parameters
    ----------
    path : path
        A file of :func:`write_training_arrays`.
    limit : int, optional
        Only the first ``limit`` patients.

    Returns
    -------
    list of DatasetCase
        CT in HU (:func:`decode_ct`), each file branch's labels under its
        catalogue stratum (:data:`BRANCH_STRATA`), partial-label flags.

    Raises
    ------
    InputError
        If the file is unreadable or names a branch outside :data:`BRANCH_STRATA`.
    """
    out = []
    for r in read_training_arrays(path)[:limit]:
        names: dict[str, list[str]] = {s: [] for s in catalogue.CATEGORIES}
        labels = {}
        for key, members in r["branches"].items():
            if key not in BRANCH_STRATA:
                raise InputError(f"{path}: unknown branch {key!r} (known: {list(BRANCH_STRATA)})")
            names[BRANCH_STRATA[key]] = list(members)
            labels[BRANCH_STRATA[key]] = r["labels"][key]
        flagged = [n for s in catalogue.CATEGORIES for n in names[s]]
        out.append(DatasetCase(r["patient_id"], decode_ct(r["ct"]), r["grid"], labels,
                               np.array([r["annotated"][n] for n in flagged]), names))
    return out
