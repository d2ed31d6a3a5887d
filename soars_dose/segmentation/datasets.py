"""Training data set folders from real data (OpenKBP).

``soars-dose train`` reads a data set folder (``dataset.json`` + one
``.npz`` per case, the layout of
:func:`~soars_dose.segmentation.phantom42.write_dataset`). This module
writes one from the compact OpenKBP training file of
:func:`soars_dose.openkbp.write_training_arrays`: the CT is decoded back to
HU (exact within the file's 2.9 HU quantisation, inside the [-500, 1000]
window the networks use anyway), the label maps become the ``anchor`` and
``mid_level`` labels, and the data set lists the OARs it has
(``Bone_Mandible`` as one OAR, see
:data:`~soars_dose.segmentation.catalogue.EXTRAS`), with the per-patient
annotation flags that make training partial-label aware.

This module does not import torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..console import option
from ..errors import InputError, OutputExistsError
from . import catalogue
from .phantom42 import DATASET_FORMAT, DATASET_VERSION, _atomic_bytes

__all__ = ["dataset_from_training_arrays"]

#: Branch keys of the training-arrays file -> catalogue categories.
_CATEGORY = {"anchor": "anchor", "mid": "mid_level", "mid_level": "mid_level",
             "small_hard": "small_hard"}


def dataset_from_training_arrays(arrays_file: "str | os.PathLike", out_dir: "str | os.PathLike",
                                 *, patients: "list[str] | None" = None,
                                 overwrite: bool = False) -> Path:
    """Write a training data set folder from an OpenKBP training-arrays file.

    Parameters
    ----------
    arrays_file : path
        Written by :func:`soars_dose.openkbp.write_training_arrays`.
    out_dir : path
        Data set folder to create.
    patients : list of str, optional
        Patient ids to keep (default: all, in file order).
    overwrite : bool
        Allow writing into a folder that already holds a data set.

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    InputError
        Unknown branch or OAR names in the file, or an unknown patient id.
    OutputExistsError
        If the folder holds a data set and ``overwrite`` is false.
    """
    from ..openkbp import decode_ct, read_training_arrays

    out = Path(out_dir)
    if (out / "dataset.json").exists() and not overwrite:
        raise OutputExistsError(f"{out} already holds a data set; pass {option('overwrite')} "
                                 "to replace it")
    records = read_training_arrays(arrays_file)
    if patients is not None:
        known = {r["patient_id"] for r in records}
        missing = [p for p in patients if p not in known]
        if missing:
            raise InputError(f"{arrays_file}: no patient(s) {missing}")
        records = [r for r in records if r["patient_id"] in set(patients)]
    if not records:
        raise InputError(f"{arrays_file}: no patients to write")
    oar_names: dict[str, list[str]] = {b: [] for b in catalogue.CATEGORIES}
    key_of: dict[str, str] = {}
    for key, names in records[0]["branches"].items():
        cat = _CATEGORY.get(key)
        if cat is None:
            raise InputError(f"{arrays_file}: unknown branch {key!r}")
        for n in names:
            if catalogue.get(n).category != cat:
                raise InputError(f"{arrays_file}: {n} is not a {cat} OAR")
        oar_names[cat] = list(names)
        key_of[cat] = key
    all_names = [n for b in catalogue.CATEGORIES for n in oar_names[b]]
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    spacings = []
    for r in records:
        g = r["grid"]
        arrays = {"hu": np.rint(decode_ct(r["ct"])).astype(np.int16),
                  "spacing": np.asarray(g.spacing), "origin": np.asarray(g.origin),
                  "direction": np.asarray(g.direction),
                  "annotated": np.array([bool(r["annotated"].get(n, False)) for n in all_names])}
        for cat, key in key_of.items():
            arrays[f"labels_{cat}"] = np.asarray(r["labels"][key], np.uint8)
        cid = str(r["patient_id"])
        _atomic_bytes(out / f"{cid}.npz", lambda f, a=arrays: np.savez_compressed(f, **a))
        cases.append({"id": cid, "file": f"{cid}.npz", "annotated": int(arrays["annotated"].sum())})
        spacings.append(tuple(float(v) for v in g.spacing))
    spacing = [float(np.median([s[a] for s in spacings])) for a in range(3)]
    meta = {"format": DATASET_FORMAT, "version": DATASET_VERSION, "source": "openkbp",
            "arrays_file": str(arrays_file), "spacing_mm": spacing, "oar_names": oar_names,
            "cases": cases}
    _atomic_bytes(out / "dataset.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return out
