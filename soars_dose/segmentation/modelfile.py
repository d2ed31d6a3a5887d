"""One file per trained SOARS network: architecture, weights, labels, preprocessing, provenance.

File layout
-----------
A model file is written with :func:`torch.save` of a dict holding only plain
types and tensors::

    {
      "format": "soars-dose-model",          # identifies the file
      "format_version": 1,                   # FORMAT_VERSION
      "architecture": "<JSON text>",         # UNet.architecture() / derive()
      "oar_names": ["Brainstem", ...],       # label i is oar_names[i - 1]; 0 = background
      "preprocessing": "<JSON text>",        # Preprocessing.to_dict()
      "provenance": "<JSON text>",           # training data, software, dates, ...
      "state_dict": {name: tensor, ...},     # the network weights
    }

and read back **only** with ``torch.load(path, map_location="cpu",
weights_only=True)``: the restricted unpickler accepts tensors and plain
containers and refuses any other object *without constructing it*, so a
model file from an untrusted source cannot run code when it is opened.

Errors
------
Every problem raises a :class:`ModelFileError` naming the file:

* :class:`NotAModelFileError`: not a torch file, or a torch file that is not
  a soars-dose model (keys missing or of the wrong type);
* :class:`UnsafeModelFileError`: the file holds objects other than tensors
  and plain types, refused by the weights-only loader;
* :class:`ModelVersionError`: written by a newer (or unknown) format version.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import oars as catalogue
from ..console import option
from ..errors import (
    InputError,
    ModelFileError,
    ModelVersionError,
    NotAModelFileError,
    OutputExistsError,
    UnsafeModelFileError,
)
from ..outputs import atomic_write_file
from .nas import UNet, build_network
from .preprocess import Preprocessing

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFile",
    "ModelFileError",
    "ModelVersionError",
    "NotAModelFileError",
    "UnsafeModelFileError",
    "load_model",
    "save_model",
]

FORMAT = "soars-dose-model"
FORMAT_VERSION = 1
_KEYS = {
    "format": str,
    "format_version": int,
    "architecture": str,
    "oar_names": list,
    "preprocessing": str,
    "provenance": str,
    "state_dict": dict,
}


@dataclass
class ModelFile:
    """Contents of a model file.

    Attributes
    ----------
    architecture : dict
        Network description (see :mod:`soars_dose.segmentation.nas`).
    state_dict : dict of str -> Tensor
        Weights, on the CPU.
    oar_names : list of str
        Catalogue names of output channels 1, 2, ... (0 is background).
    preprocessing : Preprocessing
    provenance : dict
        Free-form JSON-able training provenance.
    format_version : int
    path : Path or None
        File it was read from.
    """

    architecture: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    oar_names: list[str]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    path: Path | None = None

    def label_map(self) -> dict[str, int]:
        """``{oar_name: label}`` of the network's output channels."""
        return catalogue.label_map(self.oar_names)

    def build(self) -> UNet:
        """The network with its weights loaded, in eval mode, on the CPU.

        Raises
        ------
        ModelFileError
            If the weights do not fit the architecture.
        """
        where = self.path or "model"
        try:
            net = build_network(self.architecture)
        except InputError as exc:
            raise NotAModelFileError(f"{where}: invalid architecture: {exc}") from None
        try:
            net.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise NotAModelFileError(
                f"{where}: the stored weights do not fit the stored architecture "
                f"({first[1].strip() if len(first) > 1 else first[0]})") from None
        return net.eval()


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be JSON-serialisable: {exc}") from None


def check_labels(oar_names: list[str], out_channels: int, where: str) -> None:
    catalogue.label_map(oar_names)  # known, unique
    if out_channels != len(oar_names) + 1:
        raise InputError(f"{where}: the network has {out_channels} output channels but "
                         f"{len(oar_names)} OARs are named (+1 background expected)")


def save_model(path: "str | os.PathLike", network: nn.Module | None = None, *,
               oar_names: list[str], preprocessing: Preprocessing | dict | None = None,
               provenance: dict[str, Any] | None = None,
               architecture: dict[str, Any] | None = None,
               state_dict: dict[str, torch.Tensor] | None = None,
               overwrite: bool = False) -> Path:
    """Write a model file (atomically).

    Parameters
    ----------
    path : path
        Output file (conventionally ``*.soars.pt``).
    network : UNet, optional
        The network; its ``architecture()`` and ``state_dict()`` are stored.
        Alternatively give ``architecture`` and ``state_dict``.
    oar_names : list of str
        Catalogue names of output channels 1, 2, ... in order.
    preprocessing : Preprocessing or dict, optional
        Settings the network was trained with (default settings if None).
    provenance : dict, optional
        JSON-able training provenance (data set, epochs, software versions...).
    architecture, state_dict : optional
        Used when ``network`` is None.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        Unknown OAR names, wrong number of output channels, non-JSON values.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if network is not None:
        architecture = network.architecture()  # type: ignore[operator]
        state_dict = network.state_dict()
    if architecture is None or state_dict is None:
        raise InputError("save_model needs a network, or both architecture and state_dict")
    oar_names = list(oar_names)
    check_labels(oar_names, int(architecture["out_channels"]), str(path))
    if isinstance(preprocessing, dict):
        preprocessing = Preprocessing.from_dict(preprocessing)
    preprocessing = preprocessing or Preprocessing()
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass {option('overwrite')} to replace it")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": _json(architecture, "architecture"),
        "oar_names": oar_names,
        "preprocessing": _json(preprocessing.to_dict(), "preprocessing"),
        "provenance": _json(provenance or {}, "provenance"),
        "state_dict": OrderedDict((k, v.detach().cpu().clone()) for k, v in state_dict.items()),
    }
    return atomic_write_file(path, lambda f: torch.save(payload, f))


def _refusal_reason(text: str) -> str:
    """The line of a weights-only refusal that names the offending object, if any."""
    for line in text.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().split(". Please use")[0]
    return "unsupported pickle content"


def read_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a zip-format torch file; errors as ModelFileError.

    Files that are not zip archives (raw pickles, legacy torch files, other
    data) are rejected before anything is unpickled: :func:`save_model`
    always writes torch's zip format.
    """
    if not zipfile.is_zipfile(path):
        raise NotAModelFileError(
            f"{path}: not a soars-dose model file (not a PyTorch archive written by torch.save; "
            "nothing was loaded from it)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeModelFileError(
            f"{path}: refused to load: the file holds objects other than tensors and plain "
            f"types ({_refusal_reason(str(exc))}), which could run code when opened; it was "
            "not unpickled. Use model files written by soars-dose's save_model, from sources "
            "you trust."
        ) from None
    except Exception as exc:  # torch raises RuntimeError, ValueError, EOFError... for bad archives
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotAModelFileError(f"{path}: not a soars-dose model file (not a readable "
                                 f"PyTorch archive: {first})") from None


def load_model(path: "str | os.PathLike") -> ModelFile:
    """Read a model file safely (``torch.load(..., weights_only=True)`` only).

    Parameters
    ----------
    path : path

    Returns
    -------
    ModelFile
        Call :meth:`ModelFile.build` for the network.

    Raises
    ------
    NotAModelFileError
        Missing file, not a torch file, or missing / malformed keys.
    UnsafeModelFileError
        The file holds arbitrary pickled objects (refused without running them).
    ModelVersionError
        Format version other than :data:`FORMAT_VERSION`.
    """
    path = Path(path)
    if not path.is_file():
        raise NotAModelFileError(f"{path}: no such model file")
    data = read_torch_file(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NotAModelFileError(
            f"{path}: a PyTorch file but not a soars-dose model (no 'format': {FORMAT!r} entry); "
            "model files are written by soars_dose.segmentation.modelfile.save_model")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise NotAModelFileError(f"{path}: soars-dose model without a valid format_version")
    if version != FORMAT_VERSION:
        raise ModelVersionError(
            f"{path}: model format version {version}, but this soars-dose reads version "
            f"{FORMAT_VERSION}; " + ("upgrade soars-dose to use it" if version > FORMAT_VERSION
                                     else "re-export the model with save_model"))
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise NotAModelFileError(f"{path}: soars-dose model lacks {', '.join(missing)}")
    wrong = [k for k, t in _KEYS.items() if not isinstance(data[k], t)]
    if wrong:
        raise NotAModelFileError(f"{path}: soars-dose model has malformed {', '.join(wrong)}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor)
               for k, v in data["state_dict"].items()):
        raise NotAModelFileError(f"{path}: state_dict must map names to tensors")
    try:
        architecture = json.loads(data["architecture"])
        preprocessing = Preprocessing.from_dict(json.loads(data["preprocessing"]))
        provenance = json.loads(data["provenance"])
        oar_names = [str(n) for n in data["oar_names"]]
        check_labels(oar_names, int(architecture["out_channels"]), str(path))
    except (json.JSONDecodeError, InputError, KeyError, TypeError, ValueError) as exc:
        raise NotAModelFileError(f"{path}: malformed soars-dose model: {exc}") from None
    return ModelFile(architecture=architecture, state_dict=dict(data["state_dict"]),
                     oar_names=oar_names, preprocessing=preprocessing, provenance=provenance,
                     format_version=version, path=path)
