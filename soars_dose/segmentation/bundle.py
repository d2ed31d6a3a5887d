"""A trained SOARS model: the four branch networks, as one *bundle* file or as branch files.

Bundle format (chosen: **one file holding all branches**)
---------------------------------------------------------
``soars-dose segment --model MODEL.pt`` takes one file. A bundle is written
with :func:`torch.save` of a dict of plain types and tensors only::

    {
      "format": "soars-dose-bundle",
      "format_version": 1,
      "branches": {                       # any subset of anchor, mid_level, sh_detect, sh_seg
        "anchor": {<exactly the dict a model file holds, see modelfile>},
        "mid_level": {...}, "sh_detect": {...}, "sh_seg": {...},
      },
    }

and read back only with ``torch.load(..., weights_only=True)``, so it is as
safe to open as a single model file. Each branch entry is a complete
:mod:`~soars_dose.segmentation.modelfile` payload, validated with the same
rules as :func:`~soars_dose.segmentation.modelfile.load_model`; its
``provenance`` JSON carries a ``"soars"`` entry describing the branch::

    {"branch": "mid_level", "patch_size": [48, 64, 64],
     "anchor_oars": ["Brainstem", ...],          # input channels 1.. (mid_level, sh_detect)
     "heatmap_sigma_mm": 8.0, "detect_threshold": 0.3,    # sh_detect
     "voi_factor": 3.0, "sh_min_patch": [16, 24, 24]}     # sh_seg

``soars-dose train`` writes one ordinary model file per branch
(``RUN_DIR/model.soars.pt``); :func:`load_models` accepts a bundle, one or
several branch model files, or a folder of them, and :func:`save_bundle`
packs branch files into a bundle. All branches of one model must share the
preprocessing (they run on one network grid).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import oars as catalogue
from ..console import option
from ..errors import InputError, NoModelError, OutputExistsError
from ..outputs import atomic_write_file
from . import branches as B
from .modelfile import (
    FORMAT as MODEL_FORMAT,
)
from .modelfile import (
    FORMAT_VERSION as MODEL_FORMAT_VERSION,
)
from .modelfile import (
    ModelFile,
    ModelVersionError,
    NotAModelFileError,
    check_labels,
    load_model,
    read_torch_file,
)
from .preprocess import Preprocessing

__all__ = [
    "BUNDLE_FORMAT",
    "BranchModel",
    "NoModelError",
    "SoarsModels",
    "default_model_path",
    "load_models",
    "quantize_int8",
    "save_bundle",
]

BUNDLE_FORMAT = "soars-dose-bundle"
BUNDLE_VERSION = 2  # 2: optional int8 weights ("quantized"); version 1 bundles still load
_READABLE_BUNDLE_VERSIONS = (1, 2)
#: Where a packaged default model would live (none is shipped).
_DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "soars_default.pt"
_ENV = "SOARS_DOSE_MODEL"


def default_model_path() -> Path:
    """The model used when ``--model`` is not given.

    ``$SOARS_DOSE_MODEL`` if set, else the packaged default
    ``soars_dose/segmentation/models/soars_default.pt``.

    Raises
    ------
    NoModelError
        When neither exists (the packaged model is part of the
        installation: a 7-OAR model trained on OpenKBP, see the README).
    """
    env = os.environ.get(_ENV)
    if env:
        p = Path(env)
        if not p.exists():
            raise NoModelError(f"${_ENV} points to {p}, which does not exist")
        return p
    if _DEFAULT_MODEL.is_file():
        return _DEFAULT_MODEL
    raise NoModelError(
        f"no trained SOARS segmentation model is installed ({_DEFAULT_MODEL} is missing: "
        "reinstall soars-dose, or train your own). "
        "Train the four branches on a data set folder, e.g.\n"
        "  soars-dose train DATASET --branch anchor --out runs/anchor\n"
        "  soars-dose train DATASET --branch mid --anchor-model runs/anchor/model.soars.pt "
        "--out runs/mid\n"
        "  soars-dose train DATASET --branch sh-detect --anchor-model runs/anchor/model.soars.pt "
        "--out runs/shd\n"
        "  soars-dose train DATASET --branch sh-seg --out runs/shs\n"
        "then pass them with --model runs/*/model.soars.pt (or pack them into one bundle with "
        "soars_dose.segmentation.bundle.save_bundle), or set $SOARS_DOSE_MODEL")


@dataclass
class BranchModel:
    """One branch network, ready to run.

    Attributes
    ----------
    role : str
        ``anchor``, ``mid_level``, ``sh_detect`` or ``sh_seg``.
    model : ModelFile
    net : nn.Module
        Built, weights loaded, eval mode, CPU, instance norms swapped for
        the equivalent faster group norms (:func:`branches.fast_norm`).
    meta : dict
        The ``"soars"`` provenance entry.
    """

    role: str
    model: ModelFile
    net: nn.Module
    meta: dict[str, Any]

    @property
    def oar_names(self) -> list[str]:
        return list(self.model.oar_names)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.meta.get("patch_size", (64, 128, 128)))  # type: ignore


@dataclass
class SoarsModels:
    """The branches of one SOARS model (any subset), sharing one preprocessing."""

    branches: dict[str, BranchModel]
    preprocessing: Preprocessing
    sources: list[str] = field(default_factory=list)

    def __contains__(self, role: str) -> bool:
        return role in self.branches

    def __getitem__(self, role: str) -> BranchModel:
        try:
            return self.branches[role]
        except KeyError:
            raise NoModelError(f"the model ({', '.join(self.sources)}) has no {role} branch") \
                from None

    def to(self, device) -> "SoarsModels":
        """Move every branch network to ``device`` (``"cpu"``, ``"cuda"``...); returns self."""
        for br in self.branches.values():
            br.net.to(device)
        return self

    def available_oars(self) -> list[str]:
        """OARs this model can segment (a branch needs the branches it depends on)."""
        out: list[str] = []
        if B.ANCHOR in self:
            out += self[B.ANCHOR].oar_names
            if B.MID in self:
                out += self[B.MID].oar_names
            if B.SH_DETECT in self and B.SH_SEG in self:
                out += [n for n in self[B.SH_DETECT].oar_names if n in self[B.SH_SEG].oar_names]
        return out


def _soars_meta(mf: ModelFile, where: str) -> dict[str, Any]:
    meta = mf.provenance.get("soars") if isinstance(mf.provenance, dict) else None
    if not isinstance(meta, dict) or meta.get("branch") not in B.ROLES:
        raise NotAModelFileError(
            f"{where}: a soars-dose model but not a SOARS branch (its provenance has no "
            "'soars': {'branch': ...} entry); models written by `soars-dose train` have one")
    role = meta["branch"]
    cat = B.label_category(role)
    wrong = [n for n in mf.oar_names if catalogue.get(n).category != cat]
    if wrong or not mf.oar_names:
        raise NotAModelFileError(f"{where}: the {role} branch outputs {cat} OARs (a subset of "
                                 f"{B.branch_oars(role)}), the file names {mf.oar_names}")
    return meta


def _model_from_payload(data: Any, where: str) -> ModelFile:
    """Validate one model payload (the rules of :func:`modelfile.load_model`)."""
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise NotAModelFileError(f"{where}: not a soars-dose model payload")
    if data.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelVersionError(f"{where}: model format version {data.get('format_version')}, "
                                f"this soars-dose reads {MODEL_FORMAT_VERSION}")
    types = {"architecture": str, "oar_names": list, "preprocessing": str, "provenance": str,
             "state_dict": dict}
    bad = [k for k, t in types.items() if not isinstance(data.get(k), t)]
    if bad:
        raise NotAModelFileError(f"{where}: missing or malformed {', '.join(bad)}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor)
               for k, v in data["state_dict"].items()):
        raise NotAModelFileError(f"{where}: state_dict must map names to tensors")
    state = _dequantize(data["state_dict"], data.get("quantized", {}), where)
    try:
        arch = json.loads(data["architecture"])
        pre = Preprocessing.from_dict(json.loads(data["preprocessing"]))
        prov = json.loads(data["provenance"])
        names = [str(n) for n in data["oar_names"]]
        check_labels(names, int(arch["out_channels"]), where)
    except (json.JSONDecodeError, InputError, KeyError, TypeError, ValueError) as exc:
        raise NotAModelFileError(f"{where}: malformed soars-dose model: {exc}") from None
    return ModelFile(architecture=arch, state_dict=state, oar_names=names,
                     preprocessing=pre, provenance=prov, format_version=MODEL_FORMAT_VERSION,
                     path=Path(where.split("[")[0]))


def _read_any(path: Path) -> list[tuple[ModelFile, str]]:
    """Model files contained in ``path`` (a bundle, a model file or a folder of model files)."""
    if path.is_dir():
        files = sorted(path.glob("*.pt"))
        if not files:
            raise NotAModelFileError(f"{path}: folder without model files (*.pt)")
        out = []
        for f in files:
            out += _read_any(f)
        return out
    if not path.is_file():
        raise NotAModelFileError(f"{path}: no such model file")
    data = read_torch_file(path)
    if isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT:
        if data.get("format_version") not in _READABLE_BUNDLE_VERSIONS:
            raise ModelVersionError(f"{path}: bundle format version {data.get('format_version')}, "
                                    f"this soars-dose reads {BUNDLE_VERSION}")
        br = data.get("branches")
        if not isinstance(br, dict) or not br:
            raise NotAModelFileError(f"{path}: bundle without branches")
        out = []
        for role, payload in br.items():
            where = f"{path}[{role}]"
            mf = _model_from_payload(payload, where)
            if _soars_meta(mf, where)["branch"] != role:
                raise NotAModelFileError(f"{where}: the entry holds a "
                                         f"{mf.provenance['soars']['branch']} network")
            out.append((mf, where))
        return out
    mf = load_model(path)
    return [(mf, str(path))]


def load_models(source: "str | os.PathLike | list | tuple | SoarsModels") -> SoarsModels:
    """Load a SOARS model: a bundle file, branch model files, or a folder of them.

    Parameters
    ----------
    source : path or list of paths or SoarsModels

    Raises
    ------
    ModelFileError
        Unreadable, unsafe or foreign files; a branch given twice; branches
        with different preprocessing or mismatching anchor inputs.
    """
    if isinstance(source, SoarsModels):
        return source
    paths = [Path(p) for p in (source if isinstance(source, (list, tuple)) else [source])]
    if not paths:
        raise NoModelError("no model files given")
    found: dict[str, BranchModel] = {}
    for p in paths:
        for mf, where in _read_any(p):
            meta = _soars_meta(mf, where)
            role = meta["branch"]
            if role in found:
                raise NotAModelFileError(f"{where}: a second {role} branch (the first came from "
                                         f"{found[role].meta.get('_source')}); give each once")
            net = B.fast_norm(mf.build()).eval()
            for prm in net.parameters():
                prm.requires_grad_(False)
            found[role] = BranchModel(role, mf, net, {**meta, "_source": where})
    pres = {r: b.model.preprocessing.to_dict() for r, b in found.items()}
    first = next(iter(pres.values()))
    if any(p != first for p in pres.values()):
        raise NotAModelFileError(
            "the branches were trained with different preprocessing "
            + "; ".join(f"{r}: {json.dumps(p, sort_keys=True)}" for r, p in pres.items())
            + "; all branches of a model must share one network grid")
    if B.ANCHOR in found:
        anchor = found[B.ANCHOR].oar_names
        for r in (B.MID, B.SH_DETECT):
            if r in found and list(found[r].meta.get("anchor_oars", [])) != anchor:
                raise NotAModelFileError(f"{found[r].meta['_source']}: trained on anchor maps of "
                                         f"{found[r].meta.get('anchor_oars')}, but the anchor "
                                         f"branch outputs {anchor}")
    ordered = {r: found[r] for r in B.ROLES if r in found}
    return SoarsModels(ordered, found[next(iter(ordered))].model.preprocessing,
                       [str(p) for p in paths])


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantisation of a weight tensor.

    Parameters
    ----------
    w : Tensor (C_out, ...)
        Floating-point weights (a convolution kernel).

    Returns
    -------
    q : Tensor int8, same shape
        ``round(w / scale)`` in [-127, 127].
    scale : Tensor float32 (C_out,)
        ``max |w|`` of each output channel / 127 (1 for an all-zero channel),
        so every weight is restored within ``scale / 2`` of its value.
    """
    w = w.detach().cpu().float()
    amax = w.abs().reshape(w.shape[0], -1).amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.round(w / scale.view(shape)).clamp(-127, 127).to(torch.int8)
    return q, scale


def _dequantize(state: dict[str, torch.Tensor], scales: Any, where: str
                ) -> dict[str, torch.Tensor]:
    """``state`` with its int8 entries restored to float32 (``scales``: name -> per-channel scale)."""
    if not isinstance(scales, dict):
        raise NotAModelFileError(f"{where}: malformed 'quantized' entry")
    out = dict(state)
    for name, scale in scales.items():
        q = state.get(name)
        if (not isinstance(q, torch.Tensor) or q.dtype != torch.int8
                or not isinstance(scale, torch.Tensor) or scale.dim() != 1
                or q.dim() < 1 or scale.shape[0] != q.shape[0]):
            raise NotAModelFileError(f"{where}: quantised weight {name!r} does not match its "
                                     "scales")
        out[name] = q.float() * scale.float().view((-1,) + (1,) * (q.dim() - 1))
    unscaled = [k for k, v in state.items() if v.dtype == torch.int8 and k not in scales]
    if unscaled:  # int8 without a scale would load as whole numbers: refuse, never guess
        raise NotAModelFileError(f"{where}: int8 weights without scales: {unscaled[:3]}")
    return out


WEIGHT_FORMATS = ("float32", "float16", "int8")


def _payload(mf: ModelFile, weights: str = "float32") -> dict[str, Any]:
    state, scales = {}, {}
    for k, v in mf.state_dict.items():
        v = v.detach().cpu()
        if weights == "int8" and v.is_floating_point() and v.dim() >= 2:
            state[k], scales[k] = quantize_int8(v)
        elif weights in ("int8", "float16") and v.is_floating_point():
            state[k] = v.half().clone()
        else:
            state[k] = v.clone()
    out = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": json.dumps(mf.architecture, sort_keys=True),
        "oar_names": list(mf.oar_names),
        "preprocessing": json.dumps(mf.preprocessing.to_dict(), sort_keys=True),
        "provenance": json.dumps(mf.provenance, sort_keys=True),
        "state_dict": state,
    }
    if scales:
        out["quantized"] = scales
    return out


def save_bundle(path: "str | os.PathLike", source, *, overwrite: bool = False,
                weights: str = "float32") -> Path:
    """Pack branch models into one bundle file (atomically).

    Parameters
    ----------
    path : path
        Output file (conventionally ``*.pt``).
    source : path, list of paths or SoarsModels
        Anything :func:`load_models` accepts.
    overwrite : bool
    weights : {"float32", "float16", "int8"}
        Storage of the weights. float16 halves the file (each weight
        rounded to a relative 5e-4); int8 quarters it: convolution kernels
        as int8 with a float32 scale per output channel
        (:func:`quantize_int8`, each weight within half a step of
        ``max|w| / 127`` of its channel), the rest as float16. Networks
        always load float32 parameters.

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass {option('overwrite')} to replace it")
    if weights not in WEIGHT_FORMATS:
        raise InputError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    models = load_models(source)
    payload = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
               "branches": {r: _payload(b.model, weights) for r, b in models.branches.items()}}
    return atomic_write_file(path, lambda f: torch.save(payload, f))
