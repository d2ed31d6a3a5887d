"""The 42 head-and-neck OARs that SOARS segments, stratified into three branches.

SOARS (Guo, Ge, Ye et al.) splits its organs at risk into

* ``anchor`` (9): large, high-contrast organs that are reliably found and
  serve as spatial anchors for the others;
* ``mid_level`` (19): soft-tissue organs of moderate size and contrast;
* ``small_hard`` (14): small organs with poor CT contrast.

Every OAR carries its canonical soars-dose name (AAPM TG-263 where it has
one, otherwise a short custom name; the same names as
``soars_dose/data/aliases.yaml``), its left/right partner, an RGB display
colour for RTSTRUCT export and a typical maximum extent in mm (the largest
dimension of the organ in an adult, a plausible round value used to size
crops and sanity-check predictions, not a measured statistic).

Label maps
----------
A segmentation network predicts ``1 + len(names)`` classes: label 0 is
background and label ``i`` (``i >= 1``) is ``names[i - 1]``;
:func:`label_map` builds that mapping.

This module does not import torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import InputError, UnknownOARError

__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "CATALOGUE",
    "EXTRAS",
    "EXTRA_PARTS",
    "OAR",
    "UnknownOARError",
    "by_category",
    "get",
    "label_map",
    "lr_permutation",
    "names",
    "swap_lr",
]

#: Branch names, in the order SOARS processes them (anchors first).
CATEGORIES: tuple[str, ...] = ("anchor", "mid_level", "small_hard")
#: How tables and reports spell each branch.
CATEGORY_LABELS: dict[str, str] = {"anchor": "anchor", "mid_level": "mid-level",
                                   "small_hard": "small & hard"}


@dataclass(frozen=True)
class OAR:
    """One organ at risk of the SOARS catalogue.

    Attributes
    ----------
    name : str
        Canonical soars-dose name (TG-263 style), e.g. ``Parotid_L``.
    category : {'anchor', 'mid_level', 'small_hard'}
        SOARS branch that segments it.
    partner : str or None
        Name of the contralateral organ (``Parotid_R`` for ``Parotid_L``);
        None for a midline organ.
    color : tuple of int
        ``(R, G, B)`` display colour, each 0-255 (ROIDisplayColor).
    max_extent_mm : float
        Typical largest dimension of the organ in an adult, mm.
    """

    name: str
    category: str
    partner: str | None
    color: tuple[int, int, int]
    max_extent_mm: float

    @property
    def side(self) -> str | None:
        """``'L'``, ``'R'`` or None (midline)."""
        if self.partner is None:
            return None
        return self.name[-1]


def _pair(base: str, category: str, left: tuple[int, int, int], right: tuple[int, int, int],
          extent: float) -> list[OAR]:
    return [OAR(f"{base}_L", category, f"{base}_R", left, extent),
            OAR(f"{base}_R", category, f"{base}_L", right, extent)]


def _one(name: str, category: str, color: tuple[int, int, int], extent: float) -> list[OAR]:
    return [OAR(name, category, None, color, extent)]


_A, _M, _S = CATEGORIES

#: The 42 OARs in label order (anchor, mid-level, small & hard).
CATALOGUE: tuple[OAR, ...] = tuple(
    # ---- anchor (9)
    _one("Brainstem", _A, (240, 200, 60), 45.0)
    + _one("Cerebellum", _A, (200, 160, 100), 110.0)
    + _pair("Eye", _A, (0, 160, 255), (0, 110, 220), 26.0)
    + _pair("Bone_Mandible", _A, (235, 235, 200), (205, 205, 165), 110.0)
    + _one("SpinalCord", _A, (255, 255, 0), 250.0)
    + _pair("Joint_TM", _A, (150, 90, 200), (120, 60, 170), 25.0)
    # ---- mid-level (19)
    + _pair("BrachialPlex", _M, (255, 140, 0), (215, 110, 0), 130.0)
    + _pair("BasalGanglia", _M, (170, 220, 120), (130, 190, 80), 55.0)
    + _one("Musc_Constrict_I", _M, (255, 120, 160), 35.0)
    + _one("Musc_Constrict_M", _M, (230, 90, 140), 35.0)
    + _one("Musc_Constrict_S", _M, (205, 60, 120), 45.0)
    + _one("Epiglottis", _M, (120, 200, 200), 35.0)
    + _one("Esophagus", _M, (160, 100, 60), 120.0)
    + _one("Larynx_GSL", _M, (90, 170, 160), 65.0)
    + _one("Cavity_Oral", _M, (255, 180, 140), 85.0)
    + _pair("Parotid", _M, (0, 200, 90), (0, 150, 60), 65.0)
    + _pair("Glnd_Submand", _M, (100, 230, 230), (60, 190, 190), 45.0)
    + _pair("Lobe_Temporal", _M, (255, 100, 60), (215, 70, 35), 110.0)
    + _pair("Glnd_Thyroid", _M, (110, 80, 230), (80, 50, 190), 55.0)
    # ---- small & hard (14)
    + _pair("Cochlea", _S, (255, 0, 255), (200, 0, 200), 10.0)
    + _one("Hypothalamus", _S, (180, 140, 255), 15.0)
    + _pair("Ear_Internal", _S, (255, 90, 220), (215, 50, 180), 20.0)
    + _pair("Glnd_Lacrimal", _S, (140, 220, 255), (90, 180, 230), 25.0)
    + _pair("Lens", _S, (255, 230, 160), (230, 200, 120), 10.0)
    + _pair("OpticNrv", _S, (255, 60, 60), (200, 20, 20), 40.0)
    + _one("OpticChiasm", _S, (255, 170, 0), 25.0)
    + _one("Pineal", _S, (160, 160, 160), 10.0)
    + _one("Pituitary", _S, (240, 120, 255), 15.0)
)

#: OARs outside the 42 that a model may output instead of some of them:
#: whole-organ structures of data sets that do not split them (OpenKBP's
#: one ``Mandible`` = ``Bone_Mandible_L`` + ``Bone_Mandible_R``).
#: :func:`get` knows them, :func:`names` and :data:`CATALOGUE` do not list them.
EXTRAS: tuple[OAR, ...] = tuple(
    _one("Bone_Mandible", _A, (235, 235, 200), 110.0)
)
#: For each extra, the catalogue OARs it unites.
EXTRA_PARTS: dict[str, tuple[str, ...]] = {"Bone_Mandible": ("Bone_Mandible_L",
                                                             "Bone_Mandible_R")}

_BY_NAME: dict[str, OAR] = {o.name: o for o in CATALOGUE + EXTRAS}


def names(category: str | None = None) -> list[str]:
    """Catalogue names in label order, optionally of one category only."""
    return [o.name for o in (CATALOGUE if category is None else by_category(category))]


def by_category(category: str) -> tuple[OAR, ...]:
    """The OARs of one SOARS branch, in catalogue order.

    Parameters
    ----------
    category : {'anchor', 'mid_level', 'small_hard'}

    Raises
    ------
    UnknownOARError
        If ``category`` is not one of :data:`CATEGORIES`.
    """
    if category not in CATEGORIES:
        raise UnknownOARError(
            f"unknown OAR category {category!r}; choose one of {', '.join(CATEGORIES)}")
    return tuple(o for o in CATALOGUE if o.category == category)


def get(name: str) -> OAR:
    """The catalogue entry of a canonical OAR name (exact, case-sensitive).

    Raises
    ------
    UnknownOARError
        If ``name`` is not a catalogue name (or one of :data:`EXTRAS`); map
        institutional names first with :func:`soars_dose.names.match_names`.
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownOARError(
            f"{name!r} is not one of the 42 SOARS OARs; use canonical names such as "
            "'Parotid_L' (map institutional names with soars_dose.names.match_names)"
        ) from None


def swap_lr(name: str) -> str:
    """The contralateral partner's name; a midline organ maps to itself.

    Used to relabel targets when an image is mirrored left-right.
    """
    oar = get(name)
    return oar.partner if oar.partner is not None else oar.name


def label_map(oar_names: Iterable[str]) -> dict[str, int]:
    """Label values of a subset of OARs: ``names[i]`` gets label ``i + 1`` (0 is background).

    Parameters
    ----------
    oar_names : iterable of str
        Catalogue names in the order of the network's output channels 1, 2, ...

    Returns
    -------
    dict
        ``{name: label}``, in the given order.

    Raises
    ------
    UnknownOARError
        For a name not in the catalogue.
    InputError
        For a repeated name, a single string instead of a list, or no names.
    """
    if isinstance(oar_names, str):
        raise InputError(f"label_map expects a list of OAR names, got the string {oar_names!r}")
    out: dict[str, int] = {}
    for n in oar_names:
        get(n)
        if n in out:
            raise InputError(f"OAR {n!r} is listed twice; each OAR gets exactly one label")
        out[n] = len(out) + 1
    if not out:
        raise InputError("label_map needs at least one OAR name")
    return out


def lr_permutation(oar_names: Sequence[str]) -> list[int]:
    """Label permutation that goes with a left-right mirror of the image.

    Returns ``perm`` of length ``len(oar_names) + 1`` such that, after
    flipping an image left-right, label ``l`` becomes ``perm[l]``
    (background 0 stays 0). A lateral OAR whose partner is not in
    ``oar_names`` cannot be mirrored.

    Raises
    ------
    InputError
        If a lateral OAR's partner is missing from ``oar_names``.
    """
    labels = label_map(oar_names)
    perm = [0]
    for n in oar_names:
        partner = swap_lr(n)
        if partner not in labels:
            raise InputError(f"{n} is in the label list but its partner {partner} is not; "
                             "a left-right flip cannot relabel it")
        perm.append(labels[partner])
    return perm
