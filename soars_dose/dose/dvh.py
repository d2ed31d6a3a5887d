"""Dose-volume histograms and the dose statistics read from them.

The DVH is built from the weighted sub-voxel samples of
:mod:`soars_dose.rasterize`. Inside one sample box the trilinear dose is
(to first order) linear, so each sample contributes its volume spread
*uniformly* over ``[d - w/2, d + w/2]`` where ``d`` is the dose at the box
centre and ``w = sqrt(sum_a (g_a * h_a)^2)`` (``g`` the dose gradient,
``h`` the box size): for a gradient along one axis this is the exact dose
distribution of the box; otherwise it has the right mean and variance.
The cumulative DVH is then piecewise linear and is evaluated *exactly* at
the bin edges, so no staircase of sample positions shows through and
statistics interpolate linearly between edges (never nearest bin).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import OutsideGridError

#: Default dose bin width (Gy).
BIN_WIDTH_GY = 0.01


class CumulativeAccumulator:
    """Streams samples into an exact cumulative DVH on edges ``k * bin_width``.

    Each sample is a volume spread uniformly over ``[lo, hi]`` Gy. Its
    share of ``V(>= e)`` is the ramp ``w * ((hi - e)_+ - (lo - e)_+) / (hi - lo)``,
    so ``V`` is a sum of kinks ``c_j (a_j - e)_+``. Binning the kink
    positions ``a_j`` by edge index and keeping the sums of ``c_j`` and
    ``c_j a_j`` per bin gives ``V(e_k) = S1(k) - e_k S0(k)`` exactly, with
    ``S0, S1`` the sums over kinks at or above edge ``k``. Samples of zero
    spread (no gradient) are steps, counted at every edge ``<= d``.
    """

    def __init__(self, bin_width: float = BIN_WIDTH_GY):
        self.bin_width = float(bin_width)
        self.c0 = np.zeros(2)
        self.c1 = np.zeros(2)
        self.steps = np.zeros(2)

    def _grow(self, n: int) -> None:
        if n > self.c0.size:
            pad = n - self.c0.size
            self.c0 = np.pad(self.c0, (0, pad))
            self.c1 = np.pad(self.c1, (0, pad))
            self.steps = np.pad(self.steps, (0, pad))

    def _kinks(self, a: np.ndarray, c: np.ndarray) -> None:
        """Add kinks ``c (a - e)_+`` at doses ``a >= 0``."""
        if a.size == 0:
            return
        m = (a / self.bin_width).astype(np.int64)  # a >= 0: truncation is the floor
        n = int(m.max()) + 2
        self._grow(n)
        self.c0[:n] += np.bincount(m, weights=c, minlength=n)
        self.c1[:n] += np.bincount(m, weights=c * a, minlength=n)

    def add(self, dose: np.ndarray, spread: np.ndarray, weight: np.ndarray) -> None:
        """Add samples: centre dose (Gy), spread width (Gy), volume (any unit)."""
        self.add_interval(dose - spread / 2.0, dose + spread / 2.0, weight)

    def add_interval(self, lo: np.ndarray, hi: np.ndarray, weight: np.ndarray) -> None:
        """Add samples spread uniformly over ``[lo, hi]`` Gy (``lo == hi``: a step)."""
        # doses below 0 Gy never exceed an edge e_k >= 0: count them at 0
        lo = np.maximum(lo, 0.0)
        hi = np.maximum(hi, 0.0)
        width = hi - lo
        ramp = width > 1e-9 * self.bin_width
        if ramp.all():
            r_lo, r_hi, step = lo, hi, None
            r_w = np.divide(weight, width, out=width)
        else:
            step = ~ramp
            r_lo, r_hi = lo[ramp], hi[ramp]
            r_w = weight[ramp] / width[ramp]
        # both kinks of every ramp: +w at hi, -w at lo
        self._kinks2(r_hi, r_lo, r_w)
        if step is not None and np.any(step):
            k = np.floor(hi[step] / self.bin_width + 1e-9).astype(np.int64)
            n = int(k.max()) + 2
            self._grow(n)
            self.steps[:n] += np.bincount(k, weights=weight[step], minlength=n)

    def _kinks2(self, a_hi: np.ndarray, a_lo: np.ndarray, c: np.ndarray) -> None:
        """Add kinks ``c (a_hi - e)_+ - c (a_lo - e)_+`` (doses ``>= 0``, ``a_lo <= a_hi``)."""
        if a_hi.size == 0:
            return
        m_hi = (a_hi / self.bin_width).astype(np.int64)  # a >= 0: truncation is the floor
        m_lo = (a_lo / self.bin_width).astype(np.int64)
        n = int(m_hi.max()) + 2
        self._grow(n)
        ca = c * a_hi
        self.c0[:n] += np.bincount(m_hi, weights=c, minlength=n)
        self.c1[:n] += np.bincount(m_hi, weights=ca, minlength=n)
        np.multiply(c, a_lo, out=ca)
        self.c0[:n] -= np.bincount(m_lo, weights=c, minlength=n)[:n]
        self.c1[:n] -= np.bincount(m_lo, weights=ca, minlength=n)[:n]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(edges_gy, volume)``: volume receiving at least each edge dose."""
        # a_j > e_k  <=>  bin(a_j) >= k (a_j == e_k contributes 0 anyway)
        s0 = np.cumsum(self.c0[::-1])[::-1]
        s1 = np.cumsum(self.c1[::-1])[::-1]
        e = np.arange(self.c0.size) * self.bin_width
        vol = s1 - e * s0 + np.cumsum(self.steps[::-1])[::-1]
        return e, np.maximum(vol, 0.0)


@dataclass
class DVH:
    """A cumulative DVH with exact sample statistics.

    Attributes
    ----------
    name : str
        Structure name.
    edges_gy : ndarray (m,)
        Dose bin edges in Gy, from 0, evenly spaced.
    cumulative_cc : ndarray (m,)
        Volume (cm^3) receiving at least ``edges_gy[k]``.
    volume_cc : float
        Volume of the structure inside the dose grid (cm^3): the 100 % of the DVH.
    mean_gy, min_gy, max_gy : float
        Volume-weighted mean dose (Gy), and the lowest and highest dose
        (Gy) over the part of the object inside the dose grid. From
        :func:`soars_dose.dose.compute.compute_dvh` these are the extremes
        of the interpolated dose over the object the contours define (see
        :func:`soars_dose.dose.compute.dose_extremes`); the cumulative DVH
        is 100 % up to ``min_gy`` and 0 from ``max_gy``, so every Dx lies
        between them.
    structure_volume_cc : float
        Volume of the whole contour-defined object (cm^3), also outside the grid.
    notes : list of str
    """

    name: str
    edges_gy: np.ndarray
    cumulative_cc: np.ndarray
    volume_cc: float
    mean_gy: float
    min_gy: float
    max_gy: float
    structure_volume_cc: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def bin_width_gy(self) -> float:
        """Dose bin width (Gy)."""
        return float(self.edges_gy[1] - self.edges_gy[0])

    @property
    def coverage(self) -> float:
        """Fraction (0-1) of the structure's volume inside the dose grid."""
        if not self.structure_volume_cc > 0:
            return float("nan")
        return float(self.volume_cc / self.structure_volume_cc)

    @property
    def cumulative_pct(self) -> np.ndarray:
        """Cumulative volume in % of :attr:`volume_cc`."""
        return 100.0 * self.cumulative_cc / self.volume_cc

    @property
    def differential_cc(self) -> np.ndarray:
        """Volume (cm^3) in each bin ``[edges[k], edges[k+1])``, length m-1."""
        return np.maximum(-np.diff(self.cumulative_cc), 0.0)

    @property
    def differential_pct(self) -> np.ndarray:
        """Volume in each bin in % of :attr:`volume_cc`, length m-1."""
        return 100.0 * self.differential_cc / self.volume_cc

    @property
    def differential_cc_per_gy(self) -> np.ndarray:
        """Differential DVH as a density (cm^3 / Gy), length m-1."""
        return self.differential_cc / self.bin_width_gy

    # ---------------------------------------------------------------- queries
    def volume_at_dose_cc(self, dose_gy: float) -> float:
        """V(dose): volume (cm^3) receiving at least ``dose_gy``, linearly interpolated.

        The whole in-grid volume at or below ``min_gy``, 0 above ``max_gy``.
        """
        if dose_gy <= self.min_gy:
            return float(self.volume_cc)
        if dose_gy > self.max_gy:
            return 0.0
        return float(np.interp(dose_gy, self.edges_gy, self.cumulative_cc,
                               left=self.volume_cc, right=0.0))

    def volume_at_dose_pct(self, dose_gy: float) -> float:
        """V(dose) in % of the in-grid volume."""
        return 100.0 * self.volume_at_dose_cc(dose_gy) / self.volume_cc

    def dose_at_volume_cc(self, volume_cc: float) -> float:
        """D(volume): the highest dose that ``volume_cc`` cm^3 receive, Gy.

        Linear interpolation of the cumulative DVH, kept within
        ``[min_gy, max_gy]`` (the curve is known only at bin edges, so
        between the last full edge and ``min_gy`` it would otherwise read up
        to one bin low); NaN when ``volume_cc`` exceeds the structure's
        in-grid volume.
        """
        if volume_cc > self.volume_cc * (1 + 1e-9) or volume_cc < 0:
            return float("nan")
        d = self._dose_at_volume_cc(volume_cc)
        if np.isfinite(self.min_gy) and np.isfinite(self.max_gy):
            d = min(max(d, self.min_gy), self.max_gy)
        return float(d)

    def _dose_at_volume_cc(self, volume_cc: float) -> float:
        v = self.cumulative_cc
        # v is non-increasing; find the last edge with v >= volume_cc
        k = int(np.searchsorted(-v, -volume_cc, side="right")) - 1
        if k < 0:
            return float(self.edges_gy[0])
        if k >= v.size - 1:
            return float(self.edges_gy[-1])
        v0, v1 = v[k], v[k + 1]
        if v0 == v1:
            return float(self.edges_gy[k])
        t = (v0 - volume_cc) / (v0 - v1)
        return float(self.edges_gy[k] + t * (self.edges_gy[k + 1] - self.edges_gy[k]))

    def dose_at_volume_pct(self, pct: float) -> float:
        """D(pct %): dose (Gy) received by at least ``pct`` % of the in-grid volume."""
        return self.dose_at_volume_cc(self.volume_cc * pct / 100.0)

    def statistics(
        self,
        d_pct: tuple[float, ...] = (2, 50, 95, 98),
        d_cc: tuple[float, ...] = (0.03,),
        v_gy: tuple[float, ...] = (),
    ) -> dict[str, float]:
        """Standard statistics as a flat dict (keys as in the ``stats`` table).

        Keys: ``volume_cc, mean_gy, min_gy, max_gy``, ``d<x>_gy`` for each
        Dx%, ``d<x>cc_gy`` for each Dxcc (dots as underscores, e.g.
        ``d0_03cc_gy``), ``v<x>gy_cc`` and ``v<x>gy_pct`` for each VxGy.
        """
        out = {
            "volume_cc": self.structure_volume_cc,
            "volume_in_grid_cc": self.volume_cc,
            "coverage": self.coverage,
            "mean_gy": self.mean_gy,
            "min_gy": self.min_gy,
            "max_gy": self.max_gy,
        }
        for p in d_pct:
            out[f"d{_fmt(p)}_gy"] = self.dose_at_volume_pct(p)
        for c in d_cc:
            out[f"d{_fmt(c)}cc_gy"] = self.dose_at_volume_cc(c)
        for g in v_gy:
            out[f"v{_fmt(g)}gy_cc"] = self.volume_at_dose_cc(g)
            out[f"v{_fmt(g)}gy_pct"] = self.volume_at_dose_pct(g)
        return out

    def resampled(self, step_gy: float) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative DVH (dose Gy, volume cm^3) at a coarser step, up to the max dose."""
        top = self.edges_gy[-1]
        d = np.arange(0.0, top + step_gy / 2, step_gy)
        return d, np.interp(d, self.edges_gy, self.cumulative_cc)

    def to_dicompyler(self):
        """This DVH as a ``dicompylercore.dvh.DVH`` (cumulative, Gy, cm^3).

        dicompyler-core expects ``len(counts) == len(bins) - 1`` with counts
        the cumulative volume at the lower edge of each bin.
        """
        from dicompylercore import dvh as dcdvh

        return dcdvh.DVH(
            counts=self.cumulative_cc[:-1].copy(),
            bins=self.edges_gy.copy(),
            dvh_type="cumulative",
            dose_units="Gy",
            volume_units="cm3",
            name=self.name,
        )


def _fmt(x: float) -> str:
    s = f"{x:g}"
    return s.replace(".", "_").replace("-", "m")


class DVHBuilder:
    """Accumulates samples block by block into a :class:`DVH`.

    Parameters
    ----------
    name : str
    bin_width : float
        Gy.
    dose_range : (float, float), optional
        The exact lowest and highest dose over the object (Gy), e.g. from
        :func:`soars_dose.dose.compute.dose_extremes`. Each sample's dose
        interval is clipped to it (a box partly outside the object may
        spread past the object's extremes) and it becomes the DVH's
        ``min_gy, max_gy``. Without it they are the extremes of the sample
        intervals, so the statistics still agree with the curve.
    """

    def __init__(self, name: str, bin_width: float = BIN_WIDTH_GY,
                 dose_range: tuple[float, float] | None = None):
        self.name = name
        self.acc = CumulativeAccumulator(bin_width)
        self.volume = 0.0
        self.dose_volume = 0.0
        self.range = dose_range
        self.min = np.inf
        self.max = -np.inf

    def add(self, dose: np.ndarray, spread: np.ndarray, weight_mm3: np.ndarray) -> None:
        """Add samples: centre dose (Gy), spread (Gy), volume (mm^3)."""
        if dose.size == 0:
            return
        half = spread * 0.5
        lo = dose - half
        hi = np.add(dose, half, out=half)
        if self.range is not None:
            np.clip(lo, self.range[0], self.range[1], out=lo)
            np.clip(hi, self.range[0], self.range[1], out=hi)
        else:
            # the range, when given, replaces the sample extremes
            self.min = min(self.min, float(lo.min()))
            self.max = max(self.max, float(hi.max()))
        self.acc.add_interval(lo, hi, weight_mm3)
        self.volume += float(weight_mm3.sum())
        self.dose_volume += float(np.dot(weight_mm3, dose))

    def build(self, structure_volume_mm3: float) -> DVH:
        """The DVH; ``structure_volume_mm3`` is the whole structure's volume."""
        if self.volume <= 0:
            raise OutsideGridError(f"ROI {self.name!r} lies entirely outside the dose grid")
        edges, vol = self.acc.result()
        lo, hi = self.range if self.range is not None else (self.min, self.max)
        # the mean of a dose over the object lies between its extremes; the
        # clip only removes rounding of the sample centroids
        mean = min(max(self.dose_volume / self.volume, lo), hi)
        return DVH(
            name=self.name,
            edges_gy=edges,
            cumulative_cc=vol / 1000.0,
            volume_cc=self.volume / 1000.0,
            mean_gy=mean,
            min_gy=float(lo),
            max_gy=float(hi),
            structure_volume_cc=structure_volume_mm3 / 1000.0,
        )
