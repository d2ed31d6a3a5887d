"""Flags for contours that cannot be what their name says.

A contour is never dropped for being implausible: it is computed as
usual and flagged, per set and OAR, in the ``plausibility`` column of the
``stats`` and ``names`` tables (flags joined by ``;``) and in a warning
naming the file. The flags:

``volume_high`` / ``volume_low``
    The contour's volume (cc, the object its planar contours define) lies
    outside the plausible range of the organ in
    ``soars_dose/data/oar_volumes.yaml`` (wide bounds, e.g. 1-80 cc for a
    SpinalCord; a 1359 cc "SpinalCord" is a block drawn for another
    purpose). Entries can be overridden with a user YAML file of the same
    form (``Settings.plausibility_volumes``).
``air`` / ``bone`` (needs the CT)
    More than ``max_share`` (default 20 %) of the contour's volume lies in
    CT voxels below ``air_hu`` (-500 HU) or above ``bone_hu`` (300 HU).
    Which share is checked depends on the organ's ``tissue`` in the
    volume table: ``soft`` organs both, ``air`` organs (oral cavity,
    larynx, pharyngeal constrictors, epiglottis, oesophagus: they hold or
    border air) only bone, ``bone`` organs (mandible, TM joints, cochlea,
    inner ear) only air. The shares are the structure's volume-weighted
    occupancy of the CT voxels, sampled with the same kernel as the dose
    (:func:`soars_dose.rasterize.sample_structure` on the CT grid), over
    the part of the contour inside the CT.
``beyond_ct`` (needs the CT)
    The contour planes reach beyond the CT's scanned slices (more than
    half a slice past the first or last slice centre): the part beyond
    has no image, so its dose and contour metrics cover only part of the
    organ. The message gives the extent beyond in mm.

Coordinates: contours in DICOM LPS mm; CT arrays ``[k, j, i]`` on the CT grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config_files import load_yaml, packaged_text, user_text
from ..errors import InputError, SoarsDoseError
from ..grid import Grid
from ..rasterize import sample_structure
from ..structures import Structure

#: CT numbers (HU) below this count as air.
AIR_HU = -500.0
#: CT numbers (HU) above this count as bone.
BONE_HU = 300.0
#: Largest share (0-1) of a contour's volume in air or bone before it is flagged.
MAX_TISSUE_SHARE = 0.2
#: Tissue classes of the volume table and the shares each checks.
TISSUES = {"soft": ("air", "bone"), "air": ("bone",), "bone": ("air",)}
#: Slack (mm) beyond the CT's outer slice faces before ``beyond_ct``.
BEYOND_TOL_MM = 0.01


@dataclass(frozen=True)
class OARVolume:
    """Plausible volume range and tissue of one OAR.

    Attributes
    ----------
    name : str
        Canonical OAR name.
    min_cc, max_cc : float
        Plausible volume range (cm^3).
    tissue : {'soft', 'air', 'bone'}
    source : str
        Where the figures come from.
    """

    name: str
    min_cc: float
    max_cc: float
    tissue: str
    source: str


def _parse(text: str, where: str) -> dict[str, OARVolume]:
    data = load_yaml(text, where)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping OAR -> {{min_cc, max_cc, tissue, source}}")
    out = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise InputError(f"{where}: entry {name!r} must be a mapping with min_cc, max_cc, "
                             "tissue and source")
        unknown = set(entry) - {"min_cc", "max_cc", "tissue", "source"}
        if unknown:
            raise InputError(f"{where}: entry {name!r} has unknown keys {sorted(unknown)}; "
                             "use min_cc, max_cc, tissue, source")
        try:
            lo, hi = float(entry["min_cc"]), float(entry["max_cc"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where}: entry {name!r} needs numeric min_cc and max_cc (cc)") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi):
            raise InputError(f"{where}: entry {name!r}: need 0 <= min_cc < max_cc, got {lo}, {hi}")
        tissue = entry.get("tissue", "soft")
        if tissue not in TISSUES:
            raise InputError(f"{where}: entry {name!r}: tissue must be one of "
                             f"{', '.join(TISSUES)}, got {tissue!r}")
        out[str(name)] = OARVolume(str(name), lo, hi, tissue, str(entry.get("source", where)))
    return out


def load_volume_table(user_file: "str | Path | None" = None) -> dict[str, OARVolume]:
    """The packaged plausible-volume table, with entries of ``user_file`` replacing its own.

    Raises
    ------
    InputError
        Unreadable or malformed file (named, with the entry at fault).
    """
    table = _parse(*packaged_text("oar_volumes.yaml"))
    if user_file is not None:
        table.update(_parse(*user_text(user_file, "plausibility volume file")))
    return table


def volume_flags(oar: str, volume_cc: float, table: dict[str, OARVolume]) -> list[str]:
    """``['volume_high']``, ``['volume_low']`` or ``[]`` for an OAR's volume (cc)."""
    entry = table.get(oar)
    if entry is None or not np.isfinite(volume_cc):
        return []
    if volume_cc > entry.max_cc:
        return ["volume_high"]
    if volume_cc < entry.min_cc:
        return ["volume_low"]
    return []


def tissue_shares(structure: Structure, ct_grid: Grid, hu: np.ndarray, *,
                  air_hu: float = AIR_HU, bone_hu: float = BONE_HU,
                  nominal_spacing_mm: float | None = None, source: str = "") -> tuple[float, float, float]:
    """Shares (0-1) of a structure's in-CT volume in air and in bone, and the in-CT fraction.

    Parameters
    ----------
    structure : Structure
        Contours in LPS mm.
    ct_grid : Grid
        The CT grid; ``hu`` is indexed ``[k, j, i]`` on it.
    hu : ndarray
        CT numbers (HU).
    air_hu, bone_hu : float
        Thresholds: a sample in a voxel below ``air_hu`` is air, above ``bone_hu`` bone.

    Returns
    -------
    air, bone : float
        Volume share of the part inside the CT (NaN when none is).
    inside : float
        Fraction of the structure's volume inside the CT grid.
    """
    s = sample_structure(structure, ct_grid, factor=2, nominal_spacing_mm=nominal_spacing_mm,
                         source=source)
    top = np.asarray(ct_grid.shape) - 1
    w_in = w_air = w_bone = 0.0
    for blk in s.blocks:
        idx, w, _, inside = s.block_arrays(blk)
        if not np.any(inside):
            continue
        vox = np.clip(np.floor(idx[inside] + 0.5).astype(np.int64), 0, top)
        v = hu[vox[:, 0], vox[:, 1], vox[:, 2]]
        wi = w[inside]
        w_in += float(wi.sum())
        w_air += float(wi[v < air_hu].sum())
        w_bone += float(wi[v > bone_hu].sum())
    if w_in <= 0:
        return float("nan"), float("nan"), 0.0
    return w_air / w_in, w_bone / w_in, w_in / s.volume_mm3


def beyond_slices_mm(structure: Structure, slice_positions_mm: np.ndarray, normal: np.ndarray,
                     slice_step_mm: float) -> tuple[float, float]:
    """How far (mm) a structure's contour planes reach beyond the CT's scanned slices.

    The CT covers ``[first - step/2, last + step/2]`` along its slice
    ``normal``; returns the distances of the outermost contour planes
    beyond that range below the first and above the last slice (0 when inside).
    """
    pts = np.vstack(structure.contours) @ np.asarray(normal, dtype=float)
    lo = float(slice_positions_mm[0]) - slice_step_mm / 2.0
    hi = float(slice_positions_mm[-1]) + slice_step_mm / 2.0
    below = max(0.0, lo - float(pts.min()))
    above = max(0.0, float(pts.max()) - hi)
    return (below if below > BEYOND_TOL_MM else 0.0), (above if above > BEYOND_TOL_MM else 0.0)


def plausibility_flags(
    oar: str,
    structure: Structure,
    volume_cc: float,
    table: dict[str, OARVolume],
    *,
    ct=None,
    hu: np.ndarray | None = None,
    air_hu: float = AIR_HU,
    bone_hu: float = BONE_HU,
    max_share: float = MAX_TISSUE_SHARE,
    source: str = "",
) -> tuple[list[str], list[str]]:
    """Flags and explanations for one OAR contour.

    Parameters
    ----------
    oar : str
        Canonical OAR name (the volume table's key).
    structure : Structure
        The contour (LPS mm).
    volume_cc : float
        Its volume (cc), as computed for the stats table.
    table : dict
        From :func:`load_volume_table`.
    ct : CTSeries, optional
        With ``hu`` (its HU array ``[k, j, i]``): enables ``air``, ``bone``
        and ``beyond_ct``.
    source : str
        The RTSTRUCT file, for messages.

    Returns
    -------
    flags : list of str
    messages : list of str
        One explanation per flag, naming the file and ROI.
    """
    flags, msgs = [], []
    label = f"{source}: ROI {structure.name!r} ({oar})"
    vf = volume_flags(oar, volume_cc, table)
    if vf:
        e = table[oar]
        flags += vf
        msgs.append(f"{label}: volume {volume_cc:.4g} cc is outside the plausible range "
                    f"{e.min_cc:g}-{e.max_cc:g} cc for {oar} ({e.source}); check that it is "
                    "the organ and not a structure drawn for another purpose")
    if ct is None or structure.is_empty:
        return flags, msgs
    below, above = beyond_slices_mm(structure, ct.positions_mm, ct.grid.direction[0],
                                    ct.slice_thickness_mm)
    if below or above:
        flags.append("beyond_ct")
        parts = [f"{d:.1f} mm before the first slice" for d in [below] if d] + \
                [f"{d:.1f} mm past the last slice" for d in [above] if d]
        msgs.append(f"{label}: reaches {' and '.join(parts)} of the CT series: the part beyond "
                    "has no image, its dose and contour metrics cover only part of the organ")
    if hu is None:
        return flags, msgs
    tissue = table[oar].tissue if oar in table else "soft"
    try:
        air, bone, _ = tissue_shares(structure, ct.grid, hu, air_hu=air_hu, bone_hu=bone_hu,
                                     nominal_spacing_mm=ct.slice_thickness_mm, source=source)
    except SoarsDoseError:
        return flags, msgs  # the dose computation reports what is wrong with the contour
    for kind, share, thr in (("air", air, f"< {air_hu:g} HU"), ("bone", bone, f"> {bone_hu:g} HU")):
        if kind in TISSUES[tissue] and np.isfinite(share) and share > max_share:
            flags.append(kind)
            msgs.append(f"{label}: {100 * share:.0f} % of its volume is {kind} ({thr} on the CT; "
                        f"more than {100 * max_share:g} % is implausible for {oar}); check the "
                        "contour against the image")
    return flags, msgs
