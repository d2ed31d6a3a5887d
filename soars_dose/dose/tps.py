"""Planning-system DVH reconciliation: the DVHs stored in an RTDOSE beside ours.

A planning system (TPS) may store its own DVHs in the RTDOSE's
``DVHSequence`` (PS3.3 C.8.8.4). :func:`read_tps_dvhs` decodes them into
our :class:`~soars_dose.dose.dvh.DVH` (Gy, cm^3); :func:`compare_with_tps`
lays our DVH of the referenced ROI beside each one, flags every difference
above tolerance and names its likely cause.

Decoding a DVHSequence item
---------------------------
* ``DVHData`` holds ``(bin width, value)`` pairs. Bin widths times
  ``DVHDoseScaling`` are in ``DoseUnits`` (GY; CGY, not a defined term but
  written by some systems, divided by 100; RELATIVE times the prescription).
  Bin ``k`` spans ``[e_k, e_{k+1})`` with ``e_0 = 0``.
* CUMULATIVE: value ``k`` is the volume receiving at least ``e_k``; the
  curve is 0 from the last upper edge on (the dicompyler-core reading).
  DIFFERENTIAL: value ``k`` is the volume inside bin ``k``; the cumulative
  curve is its reverse cumulative sum. NATURAL is refused.
* ``DVHVolumeUnits`` CM3 as is; VOXELS times the voxel volume of the
  RTDOSE's own grid (PixelSpacing x GridFrameOffsetVector step), the only
  voxel a DVH in the RTDOSE can refer to; PERCENT of a total volume the
  TPS does not store: our volume of the ROI is used and the volume itself
  is not compared.
* ``DVHMinimumDose``, ``DVHMaximumDose``, ``DVHMeanDose`` are in
  ``DoseUnits`` (no ``DVHDoseScaling``, which scales bin widths only).

Statistics of a TPS DVH (:func:`binned_statistics`) are those of the
interpolated cumulative curve, the same rule as ours: Dx % and Dx cc by
linear interpolation between edges; the mean from the differential with
each bin's volume at its centre; the maximum the upper edge of the last
bin holding volume.

Causes of a difference
----------------------
For each difference above tolerance the first of these that brings our
value within tolerance of theirs is reported, with the numbers behind it:

``end caps``
    Our object without the half-slice end caps (the stack cut at the first
    and last contour plane and at each break), i.e. planar areas times the
    inter-plane spacing: the TPS's end-cap convention differs.
``clipped``
    Our volume inside the dose grid (volume rows only): the TPS counted
    the part of the ROI inside its dose grid.
``bin width``
    Our DVH re-binned on the TPS's bin edges, its statistics taken by the
    same rule as theirs: the coarse bins explain the difference.
``none of these``
    None of the above explains it (a real discrepancy: other dose, other
    contours, other interpolation).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..case import Case
from ..dicom.common import read_dataset, uid
from ..dicom.rtdose import read_rtdose
from ..dicom.rtstruct import read_rtstruct
from ..dosegrid import DoseGrid
from ..errors import (
    DicomReadError,
    DoseUnitsError,
    SoarsDoseError,
    SoarsDoseWarning,
    StructureError,
    warn,
)
from ..load import check_frames
from ..outputs import sha256
from ..rasterize import (
    StructureSamples,
    contour_planes,
    sample_structure,
    slab_bounds,
)
from ..rasterize import nominal_spacing_mm as _nominal_of_set
from ..structures import Structure
from .compute import FULL_COVERAGE, dvh_of_samples
from .dvh import BIN_WIDTH_GY, DVH

__all__ = ["CAUSES", "METRICS", "TPSCheckResult", "TPSDVH", "Tolerances", "binned_statistics",
           "compare_with_tps", "no_cap_volume_mm3", "our_statistics", "read_tps_dvhs",
           "rebinned", "tps_check", "without_end_caps"]

#: The statistics compared, in table order: (metric, unit).
METRICS = (("volume_cc", "cc"), ("mean_gy", "Gy"), ("max_gy", "Gy"), ("d95_gy", "Gy"),
           ("d50_gy", "Gy"), ("d2_gy", "Gy"), ("d0_03cc_gy", "Gy"))
#: TPS attributes compared with our exact statistics: metric -> (attribute, our key).
ATTRIBUTE_METRICS = {"tps_min_dose_gy": ("DVHMinimumDose", "min_gy"),
                     "tps_max_dose_gy": ("DVHMaximumDose", "max_gy"),
                     "tps_mean_dose_gy": ("DVHMeanDose", "mean_gy")}
CAUSES = ("end caps", "clipped", "bin width", "none of these")


@dataclass(frozen=True)
class Tolerances:
    """When a difference between our statistic and the TPS's counts as real.

    A volume differs when ``|ours - theirs| > max(volume_pct % of theirs,
    volume_cc)``; a dose when ``|ours - theirs| > max(dose_pct % of our
    maximum dose of the ROI, dose_gy)``.

    The defaults: TPS volumes come from their own voxelisation of the
    contours, which on 2.5-3 mm grids moves the volume of structures of
    10 cc and more by 1-2 % (the dicompyler example: 0.3-1.1 %), and
    0.1 cc is about two 2.5 x 2.5 x 3 mm voxels, the floor for small ROIs.
    1 % of the maximum dose is the scale of dose-calculation agreement a
    physicist accepts, and 0.1 Gy covers the 1 cGy bins most systems use
    plus their dose-grid interpolation at low doses, where 1 % of the
    maximum is smaller than one bin's rounding.
    """

    volume_pct: float = 2.0
    volume_cc: float = 0.1
    dose_pct: float = 1.0
    dose_gy: float = 0.1

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"tolerance {k} must be finite and >= 0, got {v}")

    def volume(self, theirs_cc: float) -> float:
        """Tolerance (cc) on a volume of ``theirs_cc``."""
        return max(self.volume_pct / 100.0 * abs(theirs_cc), self.volume_cc)

    def dose(self, max_dose_gy: float) -> float:
        """Tolerance (Gy) on a dose statistic of a ROI whose maximum dose is ``max_dose_gy``."""
        return max(self.dose_pct / 100.0 * abs(max_dose_gy), self.dose_gy)


@dataclass
class TPSDVH:
    """One decoded DVHSequence item.

    Attributes
    ----------
    item : int
        Position of the item in the DVHSequence (from 1).
    roi_numbers : list of int
        ReferencedROINumber of each DVHReferencedROISequence item.
    dvh_type, dose_units, volume_units : str
        As written (DVHType, DoseUnits, DVHVolumeUnits).
    dose_scaling : float
        DVHDoseScaling.
    edges_gy : ndarray (n+1,)
        Bin edges (Gy) from 0.
    cumulative : ndarray (n+1,)
        Volume receiving at least each edge, in ``cumulative_unit``.
    cumulative_unit : {"cc", "pct"}
        cm^3, or % of a volume the TPS did not store (PERCENT items).
    min_attr_gy, max_attr_gy, mean_attr_gy : float
        DVHMinimumDose / DVHMaximumDose / DVHMeanDose in Gy, NaN when absent.
    notes : list of str
        How the item was decoded (units, assumptions).
    refused : str or None
        Why the item cannot be compared (NATURAL, several ROIs, ...), else None.
    """

    item: int
    roi_numbers: list[int]
    dvh_type: str
    dose_units: str
    volume_units: str
    dose_scaling: float
    edges_gy: np.ndarray
    cumulative: np.ndarray
    cumulative_unit: str
    min_attr_gy: float = float("nan")
    max_attr_gy: float = float("nan")
    mean_attr_gy: float = float("nan")
    notes: list[str] = field(default_factory=list)
    refused: str | None = None

    @property
    def roi_number(self) -> int | None:
        """The one referenced ROI number (None when there is not exactly one)."""
        return self.roi_numbers[0] if len(self.roi_numbers) == 1 else None

    @property
    def bin_width_gy(self) -> float:
        """Largest bin width (Gy), the resolution of the TPS DVH."""
        return float(np.max(np.diff(self.edges_gy))) if self.edges_gy.size > 1 else float("nan")

    def to_dvh(self, name: str, total_cc: float | None = None) -> DVH:
        """The item as our :class:`DVH` in Gy and cm^3.

        ``total_cc`` (the 100 %) is required for PERCENT items and ignored
        otherwise. ``min_gy`` is the lower edge of the first bin holding
        volume and ``max_gy`` the upper edge of the last one.
        """
        if self.cumulative_unit == "pct":
            if total_cc is None or not total_cc > 0:
                raise SoarsDoseError(f"DVHSequence item {self.item}: PERCENT volumes need the "
                                     "ROI's total volume to be converted to cm^3")
            cum = self.cumulative / 100.0 * total_cc
        else:
            cum = self.cumulative.copy()
        return _binned_dvh(name, self.edges_gy, cum)


def _binned_dvh(name: str, edges: np.ndarray, cum: np.ndarray) -> DVH:
    """A DVH on given (possibly uneven) edges; extremes from the occupied bins."""
    diff = np.maximum(-np.diff(cum), 0.0)
    occupied = np.nonzero(diff > 0)[0]
    vol = float(cum[0])
    if occupied.size == 0 or not vol > 0:
        lo = hi = mean = float("nan")
    else:
        lo, hi = float(edges[occupied[0]]), float(edges[occupied[-1] + 1])
        mean = float(np.sum(diff * (edges[:-1] + edges[1:]) / 2.0) / vol)
    return DVH(name=name, edges_gy=np.asarray(edges, float), cumulative_cc=np.asarray(cum, float),
               volume_cc=vol, mean_gy=mean, min_gy=lo, max_gy=hi, structure_volume_cc=vol)


def _float(item, keyword: str) -> float:
    v = item.get(keyword)
    try:
        return float(v) if v is not None and v != "" else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _dvh_data(item) -> np.ndarray | None:
    """DVHData as an (n, 2) float array, None when absent or malformed.

    A DVHData longer than 64 kB cannot be written as DS in explicit VR, so
    writers (pydicom among them) fall back to UN: raw backslash-separated
    text, decoded here.
    """
    if "DVHData" not in item:
        return None
    raw = item["DVHData"].value
    try:
        if isinstance(raw, (bytes, bytearray)):
            vals = [float(t) for t in raw.decode("ascii").strip(" \x00").split("\\") if t.strip()]
        elif isinstance(raw, (str, float, int)):
            vals = [float(raw)]
        else:
            vals = [float(v) for v in raw]
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    if len(vals) < 2 or len(vals) % 2:
        return None
    return np.asarray(vals, float).reshape(-1, 2)


def _voxel_cc(ds, path: Path) -> float:
    """Voxel volume (cm^3) of the RTDOSE's own grid."""
    try:
        px = [float(v) for v in ds.PixelSpacing]
        off = np.asarray(ds.GridFrameOffsetVector, float).ravel()
        dz = float(np.median(np.abs(np.diff(off)))) if off.size > 1 else float(ds.SliceThickness)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomReadError(f"{path}: DVHVolumeUnits VOXELS, but the voxel volume of the dose "
                             f"grid cannot be read ({exc}); re-export the DVHs in CM3") from None
    return px[0] * px[1] * dz / 1000.0


def read_tps_dvhs(rtdose_path: "str | Path", *, prescription_gy: float | None = None) -> list[TPSDVH]:
    """Decode the DVHSequence of an RTDOSE (see the module notes for the rules).

    Parameters
    ----------
    rtdose_path : path
    prescription_gy : float, optional
        Dose (Gy) that a RELATIVE value of 1.0 stands for; required for
        items with DoseUnits RELATIVE.

    Returns
    -------
    list of TPSDVH
        One per item, in file order; items that cannot be compared carry
        ``refused`` and are otherwise empty.

    Raises
    ------
    DicomReadError
        Not an RTDOSE, or no DVHSequence.
    DoseUnitsError
        A RELATIVE item without ``prescription_gy``.
    """
    path = Path(rtdose_path)
    ds = read_dataset(path, "RTDOSE", stop_before_pixels=True)
    if not ds.get("DVHSequence"):
        raise DicomReadError(f"{path}: the RTDOSE holds no DVHSequence, so there is no planning-"
                             "system DVH to check against; export the dose with its DVHs "
                             "from the planning system")
    out = []
    for n, item in enumerate(ds.DVHSequence, start=1):
        refs = [int(r.ReferencedROINumber) for r in item.get("DVHReferencedROISequence", [])
                if "ReferencedROINumber" in r]
        dvh_type = str(item.get("DVHType", "")).strip().upper()
        units = str(item.get("DoseUnits", "")).strip().upper()
        vunits = str(item.get("DVHVolumeUnits", "")).strip().upper()
        scaling = _float(item, "DVHDoseScaling")
        empty = np.zeros(0)
        rec = TPSDVH(item=n, roi_numbers=refs, dvh_type=dvh_type, dose_units=units,
                     volume_units=vunits, dose_scaling=scaling if np.isfinite(scaling) else 1.0,
                     edges_gy=empty, cumulative=empty, cumulative_unit="cc")
        where = f"{path}: DVHSequence item {n}"
        if not np.isfinite(scaling):
            rec.notes.append("no DVHDoseScaling: taken as 1")
        if len(refs) != 1:
            rec.refused = (f"refers to {len(refs)} ROIs" if refs else "refers to no ROI")
        elif dvh_type == "NATURAL":
            rec.refused = "DVHType NATURAL (dose vs volume per dose) is not supported"
        elif dvh_type not in ("CUMULATIVE", "DIFFERENTIAL"):
            rec.refused = f"unknown DVHType {dvh_type!r}"
        elif vunits not in ("CM3", "PERCENT", "VOXELS"):
            rec.refused = f"unknown DVHVolumeUnits {vunits!r}"
        elif _dvh_data(item) is None:
            rec.refused = "DVHData missing, unreadable or not (bin width, value) pairs"
        if rec.refused:
            warn(f"{where}: not compared: {rec.refused}")
            out.append(rec)
            continue
        if units == "GY":
            to_gy = 1.0
        elif units == "CGY":
            to_gy = 0.01
            rec.notes.append("DoseUnits CGY converted to Gy")
        elif units == "RELATIVE":
            if prescription_gy is None:
                raise DoseUnitsError(f"{where}: DoseUnits RELATIVE; give the prescription "
                                     "(--prescription-gy) that a relative dose of 1.0 stands for")
            if not prescription_gy > 0:
                raise DoseUnitsError(f"{path}: prescription must be > 0 Gy, got {prescription_gy}")
            to_gy = float(prescription_gy)
            rec.notes.append(f"RELATIVE doses scaled by the prescription {prescription_gy} Gy")
        else:
            rec.refused = f"unknown DoseUnits {units!r}"
            warn(f"{where}: not compared: {rec.refused}")
            out.append(rec)
            continue
        data = _dvh_data(item)
        assert data is not None  # refused above otherwise
        widths = data[:, 0] * rec.dose_scaling * to_gy
        if np.any(widths <= 0) or not np.all(np.isfinite(data)):
            rec.refused = "DVHData has non-positive or non-finite bin widths"
            warn(f"{where}: not compared: {rec.refused}")
            out.append(rec)
            continue
        values = data[:, 1]
        edges = np.r_[0.0, np.cumsum(widths)]
        if dvh_type == "CUMULATIVE":
            cum = np.r_[values, 0.0]
        else:
            cum = np.r_[np.cumsum(values[::-1])[::-1], 0.0]
        mono = np.minimum.accumulate(cum)
        if np.any(cum - mono > 1e-9 * max(float(cum[0]), 1e-12)):
            rec.notes.append("cumulative DVH not non-increasing; made so (running minimum)")
        cum = mono
        if vunits == "VOXELS":
            vcc = _voxel_cc(ds, path)
            cum = cum * vcc
            rec.notes.append(f"VOXELS converted with the RTDOSE voxel volume {vcc * 1000:.4g} mm^3")
        elif vunits == "PERCENT":
            rec.cumulative_unit = "pct"
            rec.notes.append("PERCENT volumes: 100 % taken as our volume of the ROI; "
                             "the volume itself is not compared")
        rec.edges_gy, rec.cumulative = edges, cum
        for attr, name in (("DVHMinimumDose", "min_attr_gy"), ("DVHMaximumDose", "max_attr_gy"),
                           ("DVHMeanDose", "mean_attr_gy")):
            setattr(rec, name, _float(item, attr) * to_gy)
        out.append(rec)
    return out


# ------------------------------------------------------------------ statistics
def binned_statistics(dvh: DVH) -> dict[str, float]:
    """The compared statistics of a binned DVH, by the rule used for TPS DVHs.

    ``volume_cc`` the volume at 0 Gy; ``mean_gy`` from the differential with
    each bin's volume at its centre; ``min_gy`` / ``max_gy`` the lower edge
    of the first and the upper edge of the last bin holding volume; Dx % and D0.03cc by linear interpolation of the
    cumulative curve.
    """
    b = _binned_dvh(dvh.name, dvh.edges_gy, dvh.cumulative_cc)
    return {"volume_cc": b.volume_cc, "mean_gy": b.mean_gy, "min_gy": b.min_gy,
            "max_gy": b.max_gy, "d95_gy": b.dose_at_volume_pct(95), "d50_gy": b.dose_at_volume_pct(50),
            "d2_gy": b.dose_at_volume_pct(2), "d0_03cc_gy": b.dose_at_volume_cc(0.03)}


def our_statistics(dvh: DVH) -> dict[str, float]:
    """The compared statistics of our DVH (``volume_cc`` the whole object's volume)."""
    s = dvh.statistics(d_pct=(2, 50, 95), d_cc=(0.03,))
    return {k: float(s[k]) for k in ("volume_cc", "volume_in_grid_cc", "coverage", "mean_gy",
                                     "min_gy", "max_gy", "d95_gy", "d50_gy", "d2_gy",
                                     "d0_03cc_gy")}


def rebinned(dvh: DVH, edges_gy: np.ndarray) -> DVH:
    """Our DVH sampled on the TPS's bin edges (extended by its last width past our maximum)."""
    edges = np.asarray(edges_gy, float)
    top = float(dvh.edges_gy[-1])
    if edges[-1] < top:
        w = float(edges[-1] - edges[-2]) if edges.size > 1 else top
        edges = np.r_[edges, edges[-1] + w * np.arange(1, int(np.ceil((top - edges[-1]) / w)) + 1)]
    cum = np.interp(edges, dvh.edges_gy, dvh.cumulative_cc, left=dvh.volume_cc, right=0.0)
    return _binned_dvh(dvh.name, edges, cum)


# --------------------------------------------------------------------- end caps
def without_end_caps(samples: StructureSamples, structure: Structure,
                     nominal_mm: float) -> StructureSamples | None:
    """The samples of the stack stopped at its end planes (no half-slice end caps).

    Each contour plane's slab is kept between half-way boundaries with its
    neighbours; where the slab ends in an end cap (first and last plane,
    either side of a break wider than ``GAP_BREAK_FACTOR`` nominal
    spacings) it stops at the plane itself (``sample_structure(...,
    end_caps=False)``, same supersampling as ``samples``). The volume is
    then the planar areas times the inter-plane spacing. None when nothing
    is left (a single plane, or only isolated planes).
    """
    try:
        with warnings.catch_warnings():  # the contours' warnings were given by the first pass
            warnings.simplefilter("ignore", SoarsDoseWarning)
            return sample_structure(structure, samples.grid, factor=samples.factor,
                                    nominal_spacing_mm=nominal_mm, allow_odd=True,
                                    end_caps=False)
    except StructureError:
        return None


def no_cap_volume_mm3(structure: Structure, grid, nominal_mm: float) -> float:
    """Volume (mm^3) of the contour stack without end caps, from the planar areas alone.

    Each plane's even-odd area (shapely, independent of the sampling
    kernel) times the length of its slab between the half-way boundaries
    with joined neighbours, cut at the plane itself where the slab would
    end in an end cap. Used to check :func:`without_end_caps`.
    """
    import shapely
    from shapely.geometry import Polygon

    axis, planes = contour_planes(structure, grid)
    others = [a for a in range(3) if a != axis]
    px_area = grid.spacing[others[0]] * grid.spacing[others[1]]
    pos = np.array([p for p, _ in planes])
    nominal = nominal_mm / grid.spacing[axis]
    keep_lo, keep_hi = slab_bounds(pos, nominal, end_caps=False)
    volume = 0.0
    for (_, polys), a, b in zip(planes, keep_lo, keep_hi):
        if b - a <= 0:
            continue
        region = None
        for q in polys:
            g = shapely.make_valid(Polygon(q)) if len(q) >= 3 else None
            if g is None or g.is_empty:
                continue
            region = g if region is None else region.symmetric_difference(g)
        if region is not None:
            volume += region.area * px_area * (b - a) * grid.spacing[axis]
    return float(volume)


#: Largest relative difference between the trimmed samples' volume and the
#: planar-area formula for the trimmed samples' dose statistics to be used.
NOCAP_VOLUME_CHECK = 0.005


# ------------------------------------------------------------------- comparison
@dataclass
class TPSCheckResult:
    """Outcome of :func:`compare_with_tps`.

    Attributes
    ----------
    table : DataFrame
        One row per (ROI, metric); see :func:`compare_with_tps`.
    curves : dict
        ``"name (ROI n)" -> {"ours": DVH, "theirs": DVH, "roi_number": n}`` for the
        overlay plots.
    messages : list of str
        Items and ROIs that were not compared, and why.
    settings : dict
    inputs : list of dict
        Paths, SHA-256 and UIDs of the two files.
    """

    table: pd.DataFrame
    curves: dict
    messages: list[str]
    settings: dict
    inputs: list[dict]


class _NoCap:
    """Statistics of our object without end caps, computed on first use only."""

    def __init__(self, samples, structure, nominal, dose, bin_width, volume_cc):
        self._args = (samples, structure, nominal, dose, bin_width)
        self._volume_cc = volume_cc
        self._stats: "dict | None | bool" = False

    @property
    def stats(self) -> "dict | None":
        """Our statistics without end caps; the volume from the planar areas.

        The dose statistics come from the trimmed samples when their volume
        agrees with the planar-area formula (else NaN: the kernel's samples
        are not laid out as :func:`without_end_caps` expects).
        """
        if self._stats is False:
            samples, structure, nominal, dose, bin_width = self._args
            self._stats = None
            if nominal:
                vol = no_cap_volume_mm3(structure, samples.grid, nominal)
                if vol > 0:
                    trimmed = without_end_caps(samples, structure, nominal)
                    if (trimmed is not None and abs(trimmed.volume_mm3 / vol - 1)
                            <= NOCAP_VOLUME_CHECK):
                        st = our_statistics(dvh_of_samples(trimmed, dose, structure.name,
                                                           bin_width))
                    else:
                        st = {k: float("nan") for k, _ in METRICS}
                        st.update(min_gy=float("nan"))
                    st["volume_cc"] = vol / 1000.0
                    self._stats = st
        return self._stats if isinstance(self._stats, dict) else None

    @property
    def cap_cc(self) -> float:
        return self._volume_cc - (self.stats["volume_cc"] if self.stats else 0.0)


def _classify(metric: str, ours: float, theirs: float, tol: float, alt: dict) -> tuple[str, str]:
    """First cause that brings ``metric`` within ``tol`` of ``theirs``, and its numbers."""
    nocap = alt["nocap"].stats
    if nocap is not None:
        v = nocap[metric]
        if np.isfinite(v) and abs(v - theirs) <= tol:
            return "end caps", (f"ours without end caps {v:.4g} vs theirs {theirs:.4g} "
                                f"(ours with caps {ours:.4g}; caps {alt['nocap'].cap_cc:.4g} cc)")
    if metric == "volume_cc" and alt["coverage"] < FULL_COVERAGE:
        v = alt["in_grid_cc"]
        if abs(v - theirs) <= tol:
            return "clipped", (f"our volume inside the dose grid {v:.4g} cc vs theirs "
                               f"{theirs:.4g} cc (coverage {100 * alt['coverage']:.1f} %)")
    rb = alt["rebinned"]
    if metric != "volume_cc" and alt["their_bin_gy"] > alt["our_bin_gy"] * (1 + 1e-6):
        v = rb[metric]
        if np.isfinite(v) and abs(v - theirs) <= tol:
            return "bin width", (f"ours re-binned at their {alt['their_bin_gy']:.4g} Gy bins "
                                 f"{v:.4g} vs theirs {theirs:.4g}")
    parts = []
    if nocap is not None:
        parts.append(f"without end caps {nocap[metric]:.4g}")
    if metric == "volume_cc":
        parts.append(f"inside the grid {alt['in_grid_cc']:.4g}")
    else:
        parts.append(f"re-binned {rb[metric]:.4g}")
    return "none of these", f"ours {ours:.4g}, theirs {theirs:.4g}; ours " + ", ".join(parts)


def compare_with_tps(
    rtdose_path: "str | Path",
    rtstruct_path: "str | Path",
    *,
    prescription_gy: float | None = None,
    nominal_spacing_mm: float | None = None,
    tolerances: Tolerances = Tolerances(),
    bin_width: float = BIN_WIDTH_GY,
    factor: "int | str" = "auto",
    allow_frame_mismatch: bool = False,
) -> TPSCheckResult:
    """Our DVH of every ROI beside the planning system's DVH stored in the RTDOSE.

    Parameters
    ----------
    rtdose_path : path
        RTDOSE with a DVHSequence; its dose (Gy) is the one we integrate.
    rtstruct_path : path
        The RTSTRUCT whose ROI numbers the DVHSequence refers to.
    prescription_gy : float, optional
        For RELATIVE dose units (of the dose grid or of DVH items).
    nominal_spacing_mm : float, optional
        Contour spacing (CT slice thickness) for our end caps; default the
        most common gap between contour planes of the structure set.
    tolerances : Tolerances
    bin_width : float
        Our DVH bin width (Gy).
    factor : int or "auto"
        In-plane supersampling factor of our kernel.
    allow_frame_mismatch : bool
        Accept an RTSTRUCT whose FrameOfReferenceUID differs from the dose's.

    Returns
    -------
    TPSCheckResult
        ``table`` columns: ``roi_number, roi, status`` (``ok``, ``no TPS DVH``,
        ``ROI not in RTSTRUCT``, ``refused: ...``, ``error: ...``), ``metric,
        unit, ours, theirs, diff`` (ours - theirs), ``diff_pct`` (of theirs),
        ``tolerance, within_tolerance, cause`` (empty within tolerance, else
        one of :data:`CAUSES`), ``detail`` (the supporting numbers),
        ``tps_dvh_type, tps_volume_units, tps_bin_width_gy, note``.
        Metrics: :data:`METRICS`, then the TPS's DVHMinimumDose /
        DVHMaximumDose / DVHMeanDose where present (against our
        ``min_gy``, ``max_gy``, ``mean_gy``).

    Raises
    ------
    DicomReadError
        Unreadable files, or an RTDOSE without DVHSequence.
    FrameOfReferenceError
        Dose and structures in different frames of reference.
    """
    rtdose_path, rtstruct_path = Path(rtdose_path), Path(rtstruct_path)
    tps = read_tps_dvhs(rtdose_path, prescription_gy=prescription_gy)
    dose: DoseGrid = read_rtdose(rtdose_path, prescription_gy=prescription_gy)
    ss = read_rtstruct(rtstruct_path)
    messages: list[str] = check_frames(Case(dose=dose, sets={"rtstruct": ss}),
                                       allow_mismatch=allow_frame_mismatch)
    by_number = {s.number: s for s in ss}
    nominal = nominal_spacing_mm
    nominal_note = "given"
    if nominal is None:
        nominal = _nominal_of_set(list(ss), dose.grid)
        nominal_note = "most common gap between contour planes of the structure set"
    rows: list[dict] = []
    curves: dict = {}
    seen: set[int] = set()

    def base(rec, st, status):
        return {"roi_number": rec.roi_number if rec is not None else st.number,
                "roi": st.name if st is not None else "", "status": status,
                "tps_dvh_type": rec.dvh_type if rec is not None else "",
                "tps_volume_units": rec.volume_units if rec is not None else "",
                "tps_bin_width_gy": rec.bin_width_gy if rec is not None and rec.refused is None
                else float("nan"),
                "note": "; ".join(rec.notes) if rec is not None else ""}

    for rec in tps:
        num = rec.roi_number
        st = by_number.get(num) if num is not None else None
        if rec.refused:
            messages.append(f"DVHSequence item {rec.item}: not compared: {rec.refused}")
            rows.append(base(rec, st, f"refused: {rec.refused}"))
            continue
        if st is None:
            msg = (f"{rtdose_path}: DVHSequence item {rec.item} refers to ROI number {num}, "
                   f"which {rtstruct_path} does not hold")
            messages.append(msg)
            warn(msg)
            rows.append(base(rec, None, "ROI not in RTSTRUCT"))
            continue
        if num is not None:
            seen.add(num)
        if rec.notes:
            messages.append(f"DVHSequence item {rec.item} (ROI {st.name!r}): "
                            + "; ".join(rec.notes))
        try:
            samples = sample_structure(st, dose.grid, factor=factor, nominal_spacing_mm=nominal,
                                       source=str(rtstruct_path))
            ours_dvh = dvh_of_samples(samples, dose, st.name, bin_width)
        except SoarsDoseError as exc:
            msg = f"ROI {st.name!r} (number {num}): not compared: {exc}"
            messages.append(msg)
            warn(msg)
            rows.append(base(rec, st, f"error: {exc}"))
            continue
        ours = our_statistics(ours_dvh)
        if ours["coverage"] < FULL_COVERAGE:
            msg = (f"{rtstruct_path}: ROI {st.name!r}: only {100 * ours['coverage']:.1f} % of "
                   "its volume lies inside the dose grid; our dose statistics cover that part")
            messages.append(msg)
            warn(msg)
        theirs_dvh = rec.to_dvh(st.name, total_cc=ours["volume_cc"])
        theirs = binned_statistics(theirs_dvh)
        alt = {"nocap": _NoCap(samples, st, nominal, dose, bin_width, ours["volume_cc"]),
               "coverage": ours["coverage"], "in_grid_cc": ours["volume_in_grid_cc"],
               "rebinned": binned_statistics(rebinned(ours_dvh, rec.edges_gy)),
               "their_bin_gy": rec.bin_width_gy, "our_bin_gy": bin_width}
        dose_tol = tolerances.dose(ours["max_gy"])
        compared = list(METRICS) + [(m, "Gy") for m, (attr, _) in ATTRIBUTE_METRICS.items()
                                    if np.isfinite(getattr(rec, _attr_field(attr)))]
        for metric, unit in compared:
            if metric in ATTRIBUTE_METRICS:
                attr, key = ATTRIBUTE_METRICS[metric]
                o, t = ours[key], getattr(rec, _attr_field(attr))
                src_key = key
            else:
                o, t = ours[metric], theirs[metric]
                src_key = metric
            row = base(rec, st, "ok")
            row.update(metric=metric, unit=unit, ours=o, theirs=t)
            if metric == "volume_cc" and rec.cumulative_unit == "pct":
                row.update(theirs=float("nan"), diff=float("nan"), diff_pct=float("nan"),
                           tolerance=float("nan"), within_tolerance=np.nan, cause="",
                           detail="PERCENT volumes: their volume is not stored")
                rows.append(row)
                continue
            tol = tolerances.volume(t) if metric == "volume_cc" else dose_tol
            d = o - t
            within = bool(np.isfinite(d) and abs(d) <= tol)
            cause, detail = "", ""
            if not within:
                if np.isfinite(d):
                    cause, detail = _classify(src_key, o, t, tol, alt)
                    if metric in ATTRIBUTE_METRICS:
                        ratio = t / theirs[src_key] if theirs[src_key] else float("nan")
                        if np.isfinite(ratio) and abs(ratio - 1) > 0.05:
                            detail += (f"; the attribute is {ratio:.3g} x the same statistic of "
                                       "their DVHData, so it is not in the DVHData's dose unit "
                                       f"(as if in % of a prescription of {100 / ratio:.4g} Gy)")
                else:
                    cause, detail = "none of these", "one of the two values is undefined"
            row.update(diff=d, diff_pct=100.0 * d / t if t else float("nan"), tolerance=tol,
                       within_tolerance=within, cause=cause, detail=detail)
            rows.append(row)
        curves[f"{st.name} (ROI {num})"] = {"ours": ours_dvh, "theirs": theirs_dvh,
                                             "roi_number": num}
    for st in ss:
        if st.number not in seen and not any(r.roi_number == st.number for r in tps):
            msg = f"ROI {st.name!r} (number {st.number}) has no DVH in {rtdose_path}"
            messages.append(msg)
            rows.append({**base(None, st, "no TPS DVH"), "roi_number": st.number})
    cols = ["roi_number", "roi", "status", "metric", "unit", "ours", "theirs", "diff",
            "diff_pct", "tolerance", "within_tolerance", "cause", "detail", "tps_dvh_type",
            "tps_volume_units", "tps_bin_width_gy", "note"]
    table = pd.DataFrame(rows).reindex(columns=cols)
    table["within_tolerance"] = table["within_tolerance"].astype("boolean")
    for c in ("cause", "detail", "note", "metric", "unit", "tps_dvh_type", "tps_volume_units"):
        table[c] = table[c].fillna("").astype(str)
    settings = {"tolerances": asdict(tolerances), "bin_width_gy": bin_width,
                "supersample": factor, "nominal_spacing_mm": nominal,
                "nominal_spacing_source": nominal_note, "prescription_gy": prescription_gy,
                "between_planes": "stack", "allow_frame_mismatch": allow_frame_mismatch}
    inputs = []
    for p, modality in ((rtdose_path, "RTDOSE"), (rtstruct_path, "RTSTRUCT")):
        ds = read_dataset(p, modality, stop_before_pixels=True)
        inputs.append({"role": modality.lower(), "path": str(p), "sha256": sha256(p),
                       "sop_instance_uid": uid(ds, "SOPInstanceUID"),
                       "frame_of_reference_uid": uid(ds, "FrameOfReferenceUID")})
    return TPSCheckResult(table=table, curves=curves, messages=messages, settings=settings,
                          inputs=inputs)


def _attr_field(attr: str) -> str:
    return {"DVHMinimumDose": "min_attr_gy", "DVHMaximumDose": "max_attr_gy",
            "DVHMeanDose": "mean_attr_gy"}[attr]


def tps_check(rtdose_path: "str | Path", rtstruct_path: "str | Path", **kwargs) -> pd.DataFrame:
    """The table of :func:`compare_with_tps` (same arguments)."""
    return compare_with_tps(rtdose_path, rtstruct_path, **kwargs).table
