"""Closed-form objects and their exact DVHs in linear dose fields.

The truth here is independent of soars-dose's kernel: the object a set of
planar contours defines (each contour extruded over +-dz/2 around its
plane) is clipped against half-spaces with shapely, and the dose field is
linear, so V(>= d) is an exact area/length computation.

Needs shapely (the ``test`` extra): the tests and ``benchmarks/bench_dvh.py``
use it; nothing in the dose toolkit does.
"""

from __future__ import annotations

import numpy as np

N_VERTICES = 96
AXES = {"x": 0, "y": 1, "z": 2}


def _circle(cx, cy, r, z):
    th = np.linspace(0, 2 * np.pi, N_VERTICES, endpoint=False)
    return np.c_[cx + r * np.cos(th), cy + r * np.sin(th), np.full(N_VERTICES, z)]


def planes(kind: str, r: float, centre, dz: float, height: float | None = None):
    """Contours (list of (n,3) LPS arrays) of a sphere, z-cylinder or z-cone."""
    cx, cy, cz = centre
    out = []
    if kind == "sphere":
        n = int(np.floor(r / dz))
        for k in range(-n, n + 1):
            z = cz + k * dz
            rr = np.sqrt(max(r * r - (k * dz) ** 2, 0.0))
            if rr > 0.05:
                out.append(_circle(cx, cy, rr, z))
    elif kind in ("cylinder", "cone"):
        h = height if height is not None else 2 * r
        n = int(round(h / dz))
        for k in range(n):
            z = cz - h / 2 + (k + 0.5) * dz
            t = (k + 0.5) / n
            rr = r if kind == "cylinder" else r * (1 - t)
            out.append(_circle(cx, cy, rr, z))
    else:
        raise ValueError(kind)
    return out


class ExactDVH:
    """Exact cumulative DVH of contour slabs in ``dose = a + b * (coordinate[axis] - c0)``."""

    def __init__(self, contours, dz, a, b, axis, c0=0.0):
        from shapely.geometry import Polygon  # the test extra: only the truth needs it

        a = a - b * c0  # fold the offset into the intercept
        self.polys = [Polygon(c[:, :2]) for c in contours]
        self.z = np.array([c[0, 2] for c in contours])
        self.dz, self.a, self.b, self.axis = dz, a, b, AXES[axis]
        self.areas = np.array([p.area for p in self.polys])
        self.volume = float(np.sum(self.areas) * dz)  # mm^3
        if self.axis == 2:
            centres = self.z
        else:
            centres = np.array([p.centroid.coords[0][self.axis] for p in self.polys])
        self.mean = float(np.sum(self.areas * (a + b * centres)) / np.sum(self.areas))
        if self.axis == 2:
            lo, hi = self.z - dz / 2, self.z + dz / 2
            ext = np.r_[lo, hi]
        else:
            ext = np.concatenate([np.asarray(p.exterior.coords)[:, self.axis] for p in self.polys])
        d = a + b * ext
        self.dmin, self.dmax = float(d.min()), float(d.max())

    def volume_at(self, dose: float) -> float:
        """mm^3 receiving >= dose."""
        from shapely.geometry import box

        c0 = (dose - self.a) / self.b  # coordinate where dose is reached
        big = 1e5
        if self.axis == 2:
            lo, hi = self.z - self.dz / 2, self.z + self.dz / 2
            if self.b > 0:
                length = np.clip(hi - np.maximum(lo, c0), 0, None)
            else:
                length = np.clip(np.minimum(hi, c0) - lo, 0, None)
            return float(np.sum(self.areas * length))
        if self.axis == 0:
            half = box(c0, -big, big, big) if self.b > 0 else box(-big, -big, c0, big)
        else:
            half = box(-big, c0, big, big) if self.b > 0 else box(-big, -big, big, c0)
        return float(sum(p.intersection(half).area for p in self.polys) * self.dz)

    def dose_at_volume(self, v_mm3: float) -> float:
        lo, hi = self.dmin, self.dmax
        for _ in range(60):
            mid = (lo + hi) / 2
            if self.volume_at(mid) >= v_mm3:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2
