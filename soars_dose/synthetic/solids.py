"""True solids (sphere, cylinder lying in the plane, cone), their planar contours and exact DVHs.

The truth here is the solid itself, not the object its contours define:
volumes by formula and DVHs in a linear dose ``a + b * (coordinate - centre)``
by integrating the solid's analytic cross-section area perpendicular to the
gradient axis (closed form where it exists, else ``scipy.integrate.quad`` of
an analytic integrand). Nothing here uses soars-dose's kernel.

Contours lie on planes ``z = z0 + k * dz`` (LPS mm) with ``z0`` chosen by the
caller, so the planes need not align with the solid's ends. Circles are
polygons whose area equals the circle's (vertices pushed out by the
polygon-to-circle area ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize

from ..dosegrid import DoseGrid
from ..grid import Grid

N_VERTICES = 128
AXES = {"x": 0, "y": 1, "z": 2}
#: Cross-sections smaller than this (mm, radius or half width) are not drawn.
MIN_DRAWN_MM = 0.05


def _circle(cx, cy, r, z, n=N_VERTICES):
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = r * np.sqrt(2 * np.pi / (n * np.sin(2 * np.pi / n)))  # equal-area polygon
    return np.c_[cx + r * np.cos(th), cy + r * np.sin(th), np.full(n, z)]


def _rect(x0, x1, y0, y1, z):
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)


@dataclass
class Solid:
    """A solid of revolution with its axis along ``axis``; ``kind`` in sphere/cylinder/cone.

    sphere: radius ``r`` about ``centre``. cylinder: radius ``r``, length
    ``length`` along x (lies in the contour plane). cone: base radius ``r``,
    height ``length`` along +z from its base at ``centre[2] - length / 2``
    to its apex.
    """

    kind: str
    r: float
    centre: tuple[float, float, float]
    length: float = 0.0

    # ------------------------------------------------------------ extent
    def extent(self, axis: int) -> tuple[float, float]:
        c = self.centre[axis]
        if self.kind == "sphere":
            return c - self.r, c + self.r
        if self.kind == "cylinder":
            half = self.length / 2 if axis == 0 else self.r
            return c - half, c + half
        if axis == 2:
            return c - self.length / 2, c + self.length / 2
        return c - self.r, c + self.r

    @property
    def volume(self) -> float:
        """mm^3."""
        if self.kind == "sphere":
            return 4 / 3 * np.pi * self.r**3
        if self.kind == "cylinder":
            return np.pi * self.r**2 * self.length
        return np.pi * self.r**2 * self.length / 3

    def _cone_radius(self, z):
        zb = self.centre[2] - self.length / 2
        return self.r * np.clip(1 - (z - zb) / self.length, 0, None)

    def area(self, axis: int, c: float) -> float:
        """Area (mm^2) of the solid's section by the plane ``coordinate[axis] = c``."""
        u = c - self.centre[axis]
        if self.kind == "sphere":
            return np.pi * max(self.r**2 - u**2, 0.0)
        if self.kind == "cylinder":
            if axis == 0:
                return np.pi * self.r**2 if abs(u) <= self.length / 2 else 0.0
            return 2 * np.sqrt(max(self.r**2 - u**2, 0.0)) * self.length
        if axis == 2:
            lo, hi = self.extent(2)
            return np.pi * self._cone_radius(c) ** 2 if lo <= c <= hi else 0.0
        # section parallel to the axis at distance u: integral over z of the chord
        # 2 sqrt(r(z)^2 - u^2), with dz = (H / R) dr, in closed form
        u = abs(u)
        if u >= self.r:
            return 0.0
        q = np.sqrt(self.r**2 - u**2)
        log = np.log((self.r + q) / u) if u > 0 else 0.0
        return self.length / self.r * (self.r * q - u**2 * log)

    # ------------------------------------------------------------ contours
    def contours(self, dz: float, z0: float) -> list[np.ndarray]:
        """Sections on planes ``z = z0 + k dz`` (all k meeting the solid)."""
        lo, hi = self.extent(2)
        k0, k1 = int(np.ceil((lo - z0) / dz)), int(np.floor((hi - z0) / dz))
        cx, cy, cz = self.centre
        out = []
        for k in range(k0, k1 + 1):
            z = z0 + k * dz
            if self.kind == "sphere":
                rr = np.sqrt(max(self.r**2 - (z - cz) ** 2, 0.0))
                if rr > MIN_DRAWN_MM:
                    out.append(_circle(cx, cy, rr, z))
            elif self.kind == "cylinder":
                w = np.sqrt(max(self.r**2 - (z - cz) ** 2, 0.0))
                if w > MIN_DRAWN_MM:
                    out.append(_rect(cx - self.length / 2, cx + self.length / 2, cy - w, cy + w, z))
            else:
                rr = float(self._cone_radius(z))
                if rr > MIN_DRAWN_MM and lo <= z <= hi:
                    out.append(_circle(cx, cy, rr, z))
        return out

    # ------------------------------------------------------------ DVH
    def dvh(self, axis: str, a: float, b: float) -> "LinearDVH":
        return LinearDVH(self, AXES[axis], a, b)


class LinearDVH:
    """Exact DVH of a solid in ``dose = a + b * (coordinate[axis] - centre[axis])`` (Gy)."""

    def __init__(self, solid: Solid, axis: int, a: float, b: float):
        self.s, self.axis, self.a, self.b = solid, axis, a, b
        self.lo, self.hi = solid.extent(axis)
        c0 = solid.centre[axis]
        self.volume = self._int(self.lo, self.hi)
        first = integrate.quad(lambda c: (c - c0) * solid.area(axis, c), self.lo, self.hi,
                               limit=200, points=self._kinks())[0]
        self.mean = a + b * first / self.volume
        ends = [a + b * (self.lo - c0), a + b * (self.hi - c0)]
        self.dmin, self.dmax = min(ends), max(ends)

    def _kinks(self):
        return [self.s.centre[self.axis]]

    def _int(self, lo, hi):
        if hi <= lo:
            return 0.0
        pts = [p for p in self._kinks() if lo < p < hi] or None
        return integrate.quad(lambda c: self.s.area(self.axis, c), lo, hi, limit=200,
                              points=pts, epsabs=1e-9, epsrel=1e-10)[0]

    def volume_at(self, dose: float) -> float:
        """mm^3 receiving at least ``dose`` Gy."""
        c = self.s.centre[self.axis] + (dose - self.a) / self.b
        if self.b > 0:
            return self._int(max(c, self.lo), self.hi)
        return self._int(self.lo, min(c, self.hi))

    def dose_at_pct(self, pct: float) -> float:
        """D<pct>%: the dose (Gy) that ``pct`` % of the volume receives at least."""
        target = pct / 100 * self.volume
        return optimize.brentq(lambda d: self.volume_at(d) - target, self.dmin, self.dmax,
                               xtol=1e-10)


# ------------------------------------------------ placed solids in linear dose fields
#: Centre of the placed solids (mm, on no grid point) and the dose field (Gy, Gy/mm).
CENTRE = (1.3, -0.8, 0.45)  # on no grid point
SLOPE = {"x": 1.5, "y": -1.2, "z": 1.0}  # Gy/mm, as the closed-form DVH tests
DOSE_AT_CENTRE = 60.0


def placed_solid(kind: str, r: float, dz: float, offset: float):
    """A solid at :data:`CENTRE` and the plane origin ``z0`` (mm): planes ``offset`` mm
    from its centre (cone: from its apex), ``dz`` mm apart."""
    if kind == "cone":
        s = Solid("cone", r, CENTRE, length=2 * r + offset)
        return s, CENTRE[2] - s.length / 2 + dz / 2
    if kind == "cylinder":
        return Solid("cylinder", r, CENTRE, length=2 * r), CENTRE[2] + offset
    return Solid("sphere", r, CENTRE), CENTRE[2] + offset


def grid_around(solid: Solid, spacing=2.5) -> Grid:
    """An axis-aligned grid (``spacing`` mm) over the solid with 6 mm to spare."""
    lo = np.array([solid.extent(a)[0] for a in range(3)]) - 6
    hi = np.array([solid.extent(a)[1] for a in range(3)]) + 6
    n = np.ceil((hi - lo) / spacing).astype(int) + 1
    return Grid(shape=(n[2], n[1], n[0]), spacing=(spacing,) * 3, origin=tuple(lo))


def linear_dose(grid: Grid, axis: str) -> DoseGrid:
    """``DOSE_AT_CENTRE + SLOPE[axis] * (coordinate - CENTRE)`` Gy at every voxel of ``grid``."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    xyz = grid.index_to_world(np.stack([k, j, i], axis=-1).reshape(-1, 3))
    a = AXES[axis]
    d = DOSE_AT_CENTRE + SLOPE[axis] * (xyz[:, a] - CENTRE[a])
    return DoseGrid(grid, d.reshape(grid.shape))
