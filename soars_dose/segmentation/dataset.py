"""The training data set format: a folder of cases with partial OAR labels.

Layout
------
``dataset.json`` (format ``soars-dose-dataset`` version 1: OAR names per
category, the list of cases) and one ``<case>.npz`` per case holding
``hu`` (int16 ``[k, j, i]``), ``spacing``, ``origin``, ``direction``,
``labels_<category>`` (uint8, annotated organs only; one per category that
lists OARs) and ``annotated`` (bool, one flag per listed OAR, categories in
:data:`~soars_dose.oars.CATEGORIES` order).

:func:`~soars_dose.synthetic.oars42.write_dataset` writes one from the
synthetic phantom; :func:`load_dataset` reads any folder of this layout
into :class:`DatasetCase` objects, what training
(:func:`~soars_dose.segmentation.training.train`) consumes.

This module uses numpy only (no torch).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import oars as catalogue
from ..errors import InputError
from ..grid import Grid

__all__ = ["DATASET_FORMAT", "DATASET_VERSION", "DatasetCase", "load_dataset"]

DATASET_FORMAT = "soars-dose-dataset"
DATASET_VERSION = 1


@dataclass
class DatasetCase:
    """One case of a data set folder, as training reads it.

    Attributes
    ----------
    case_id : str
    hu : ndarray of float32 ``[k, j, i]``
    grid : Grid
    labels : dict of category -> ndarray of uint8 (annotated OARs only)
        Label ``l`` of category ``b`` is ``oar_names[b][l - 1]``.
    annotated : ndarray of bool
        One flag per OAR of ``oar_names`` (categories in
        :data:`~soars_dose.oars.CATEGORIES` order).
    oar_names : dict of category -> list of str
        The data set's OARs per category: the catalogue's by default; a
        real data set may list a subset, or an extra such as
        ``Bone_Mandible`` (:data:`~soars_dose.oars.EXTRAS`).
    """

    case_id: str
    hu: np.ndarray
    grid: Grid
    labels: dict[str, np.ndarray]
    annotated: np.ndarray
    oar_names: dict[str, list[str]] = field(
        default_factory=lambda: {b: catalogue.names(b) for b in catalogue.CATEGORIES})

    def all_names(self) -> list[str]:
        """The OARs that ``annotated`` flags, in order."""
        return [n for b in catalogue.CATEGORIES for n in self.oar_names.get(b, [])]

    @classmethod
    def from_phantom(cls, case) -> "DatasetCase":
        """The training view of a phantom case (unannotated OARs removed from the labels).

        ``case`` is a :class:`~soars_dose.synthetic.oars42.Phantom42Case`
        (not imported: the phantom builds on this module, not the reverse).
        """
        return cls(case.case_id, case.hu, case.grid,
                   {b: case.annotated_labels(b) for b in catalogue.CATEGORIES},
                   case.annotated.copy())


def load_dataset(path: "str | os.PathLike") -> tuple[dict, list[DatasetCase]]:
    """Read a data set folder written by :func:`write_dataset` (or converted to its layout).

    Returns
    -------
    meta : dict
        Contents of ``dataset.json``.
    cases : list of DatasetCase

    Raises
    ------
    InputError
        Missing or malformed ``dataset.json`` or case files.
    """
    root = Path(path)
    mf = root / "dataset.json"
    if not mf.is_file():
        raise InputError(f"{root}: not a soars-dose data set (no dataset.json); write one with "
                         "soars_dose.synthetic.oars42.write_dataset or convert your data "
                         "to that layout")
    try:
        meta = json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{mf}: not valid JSON ({exc})") from None
    if meta.get("format") != DATASET_FORMAT:
        raise InputError(f"{mf}: format is {meta.get('format')!r}, expected {DATASET_FORMAT!r}")
    if int(meta.get("version", 0)) > DATASET_VERSION:
        raise InputError(f"{mf}: data set version {meta.get('version')} is newer than this "
                         f"soars-dose reads ({DATASET_VERSION})")
    oar_names: dict[str, list[str]] = {}
    for b in catalogue.CATEGORIES:
        listed = meta.get("oar_names", {}).get(b, [])
        if not isinstance(listed, list):
            raise InputError(f"{mf}: oar_names.{b} must be a list of OAR names")
        for n in listed:
            try:
                cat = catalogue.get(n).category
            except InputError:
                raise InputError(f"{mf}: oar_names.{b} lists {n!r}, not a catalogue OAR") from None
            if cat != b:
                raise InputError(f"{mf}: {n} is a {cat} OAR, listed under {b}")
        oar_names[b] = [str(n) for n in listed]
    n_all = sum(len(v) for v in oar_names.values())
    if n_all == 0:
        raise InputError(f"{mf}: oar_names lists no OARs")
    cases = []
    for entry in meta.get("cases", []):
        f = root / entry["file"]
        try:
            with np.load(f) as z:
                grid = Grid(tuple(z["hu"].shape), tuple(z["spacing"]), tuple(z["origin"]),
                            z["direction"])
                labels = {b: z[f"labels_{b}"].astype(np.uint8) for b in catalogue.CATEGORIES
                  if oar_names[b]}
                annotated = z["annotated"].astype(bool)
                hu = z["hu"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{f}: unreadable data set case ({exc})") from None
        for b, lab in labels.items():
            if lab.shape != hu.shape:
                raise InputError(f"{f}: labels_{b} has shape {lab.shape}, the CT {hu.shape}")
        if annotated.shape != (n_all,):
            raise InputError(f"{f}: 'annotated' must hold {n_all} flags (one per listed OAR)")
        cases.append(DatasetCase(str(entry["id"]), hu, grid, labels, annotated, oar_names))
    if not cases:
        raise InputError(f"{mf}: the data set lists no cases")
    return meta, cases
