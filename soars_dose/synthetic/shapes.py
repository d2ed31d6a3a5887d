"""Analytic shapes for the synthetic patients: signed distances and inside tests.

One library for both synthetic data sets of soars-dose: the demo cohort
written as DICOM-RT (:mod:`soars_dose.synthetic.cohort`) and the 42-OAR
arrays the segmentation tests train on (:mod:`soars_dose.synthetic.oars42`).

Conventions
-----------
* Coordinates are DICOM LPS in mm (x to the patient's left, y posterior,
  z superior); arrays of any broadcastable shape.
* ``sdf(x, y, z)`` is an approximate signed distance in mm, negative
  inside: exact on the surface, so ``sdf <= 0`` is the shape.
* ``inside(x, y, z)`` is the exact membership test of the closed shape
  (the quadratic or squared-distance form, no square roots), used where
  only a mask is wanted.
* Grids are HFS: array axis 0 = +z, 1 = +y, 2 = +x (:data:`HFS`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..grid import Grid


def ellipse_sdf(qs: list, radii: list) -> np.ndarray:
    """Approximate distance to an axis-aligned ellipse/ellipsoid centred at 0.

    ``k0 (k0 - 1) / k1`` with ``k0 = |q / r|`` and ``k1 = |q / r^2|``: exact on
    the axes and on the surface, a close bound elsewhere (I. Quilez).
    """
    k0 = np.sqrt(sum((q / r) ** 2 for q, r in zip(qs, radii)))
    k1 = np.sqrt(sum((q / r**2) ** 2 for q, r in zip(qs, radii)))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = k0 * (k0 - 1.0) / k1
    # At the exact centre the formula is 0/0; the depth there is the smallest radius.
    return np.where(k1 > 1e-12, d, -functools.reduce(np.minimum, radii))


class Shape:
    """An analytic shape: :meth:`sdf`, :meth:`inside` and an axis-aligned :meth:`bounds`."""

    def sdf(self, x, y, z) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def inside(self, x, y, z) -> np.ndarray:
        """Boolean membership of the points (``sdf <= 0`` unless a shape has an exact form)."""
        return self.sdf(x, y, z) <= 0


@dataclass(frozen=True)
class Ellipsoid(Shape):
    center: tuple[float, float, float]
    radii: tuple[float, float, float]

    def inside(self, x, y, z):
        (cx, cy, cz), (rx, ry, rz) = self.center, self.radii
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0

    def sdf(self, x, y, z):
        c = self.center
        return ellipse_sdf([x - c[0], y - c[1], z - c[2]], list(self.radii))

    def bounds(self):
        c, r = np.asarray(self.center), np.asarray(self.radii)
        return c - r, c + r


@dataclass(frozen=True)
class Capsule(Shape):
    """All points within ``radius`` of the segment ``a``-``b``."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    radius: float

    def sdf(self, x, y, z):
        # Python floats throughout keep float32 coordinate arrays float32.
        a = [float(v) for v in self.a]
        ba = [float(v) - u for v, u in zip(self.b, a)]
        pa = (x - a[0], y - a[1], z - a[2])
        h = np.clip((pa[0] * ba[0] + pa[1] * ba[1] + pa[2] * ba[2]) / sum(v * v for v in ba), 0.0, 1.0)
        return np.sqrt(sum((pa[i] - ba[i] * h) ** 2 for i in range(3))) - float(self.radius)

    def inside(self, x, y, z):
        a, b = np.asarray(self.a, float), np.asarray(self.b, float)
        d = b - a
        dd = float(d @ d)
        px, py, pz = x - a[0], y - a[1], z - a[2]
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / dd, 0.0, 1.0)
        return (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2 <= self.radius ** 2

    def bounds(self):
        a, b = np.asarray(self.a), np.asarray(self.b)
        return np.minimum(a, b) - self.radius, np.maximum(a, b) + self.radius


@dataclass(frozen=True)
class SweptEllipse(Shape):
    """Transverse ellipses whose centre and radii vary linearly with z between knots.

    ``knots`` rows are ``(z, cx, cy, rx, ry)``; the shape is cut flat at the
    lowest and highest knot, like a contoured tubular organ.
    """

    knots: tuple[tuple[float, float, float, float, float], ...]

    def _table(self) -> np.ndarray:
        t = np.asarray(self.knots, dtype=float)
        return t[np.argsort(t[:, 0])]

    def sdf(self, x, y, z):
        t = self._table()
        cx, cy, rx, ry = (np.interp(z, t[:, 0], t[:, c]).astype(np.float32) for c in range(1, 5))
        d = ellipse_sdf([x - cx, y - cy], [rx, ry])
        return np.maximum(d, np.maximum(float(t[0, 0]) - z, z - float(t[-1, 0])))

    def bounds(self):
        t = self._table()
        lo = [np.min(t[:, 1] - t[:, 3]), np.min(t[:, 2] - t[:, 4]), t[0, 0]]
        hi = [np.max(t[:, 1] + t[:, 3]), np.max(t[:, 2] + t[:, 4]), t[-1, 0]]
        return np.asarray(lo), np.asarray(hi)


@dataclass(frozen=True)
class HalfSpace(Shape):
    """Points with ``normal . p <= offset`` (unbounded; use only inside an intersection)."""

    normal: tuple[float, float, float]
    offset: float

    def sdf(self, x, y, z):
        n = self.normal
        return n[0] * x + n[1] * y + n[2] * z - self.offset

    def inside(self, x, y, z):
        n = self.normal
        return n[0] * x + n[1] * y + n[2] * z <= self.offset

    def bounds(self):
        return np.full(3, -np.inf), np.full(3, np.inf)


@dataclass(frozen=True)
class Union(Shape):
    parts: tuple[Shape, ...]

    def sdf(self, x, y, z):
        return np.minimum.reduce([p.sdf(x, y, z) for p in self.parts])

    def inside(self, x, y, z):
        m = self.parts[0].inside(x, y, z)
        for p in self.parts[1:]:
            m = m | p.inside(x, y, z)
        return m

    def bounds(self):
        los, his = zip(*(p.bounds() for p in self.parts))
        return np.min(los, axis=0), np.max(his, axis=0)


@dataclass(frozen=True)
class Intersection(Shape):
    parts: tuple[Shape, ...]

    def sdf(self, x, y, z):
        return np.maximum.reduce([p.sdf(x, y, z) for p in self.parts])

    def inside(self, x, y, z):
        m = self.parts[0].inside(x, y, z)
        for p in self.parts[1:]:
            m = m & p.inside(x, y, z)
        return m

    def bounds(self):
        los, his = zip(*(p.bounds() for p in self.parts))
        return np.max(los, axis=0), np.min(his, axis=0)


@dataclass(frozen=True)
class Difference(Shape):
    keep: Shape
    cut: Shape

    def sdf(self, x, y, z):
        return np.maximum(self.keep.sdf(x, y, z), -self.cut.sdf(x, y, z))

    def inside(self, x, y, z):
        return self.keep.inside(x, y, z) & ~self.cut.inside(x, y, z)

    def bounds(self):
        return self.keep.bounds()


@dataclass(frozen=True)
class EllipticCylinder(Shape):
    """An elliptic cylinder along z: ellipse ``center_xy``, ``radii_xy`` (mm), between ``z0`` and ``z1``."""

    center_xy: tuple[float, float]
    radii_xy: tuple[float, float]
    z0: float
    z1: float

    def sdf(self, x, y, z):
        (cx, cy), (rx, ry) = self.center_xy, self.radii_xy
        d = ellipse_sdf([x - cx, y - cy], [rx, ry])
        return np.maximum(d, np.maximum(self.z0 - z, z - self.z1))

    def inside(self, x, y, z):
        (cx, cy), (rx, ry) = self.center_xy, self.radii_xy
        return (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0) & (z >= self.z0) & (z <= self.z1)

    def bounds(self):
        (cx, cy), (rx, ry) = self.center_xy, self.radii_xy
        return np.array([cx - rx, cy - ry, self.z0]), np.array([cx + rx, cy + ry, self.z1])


@dataclass(frozen=True)
class AxisBox(Shape):
    """The box ``lo <= (x, y, z) <= hi`` (mm); infinite limits leave an axis open."""

    lo: tuple[float, float, float] = (-np.inf, -np.inf, -np.inf)
    hi: tuple[float, float, float] = (np.inf, np.inf, np.inf)

    def sdf(self, x, y, z):
        d = np.full(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), -np.inf)
        for v, a, b in ((x, self.lo[0], self.hi[0]), (y, self.lo[1], self.hi[1]),
                        (z, self.lo[2], self.hi[2])):
            if np.isfinite(a):
                d = np.maximum(d, a - v)
            if np.isfinite(b):
                d = np.maximum(d, v - b)
        return d

    def inside(self, x, y, z):
        m = np.ones(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), dtype=bool)
        for v, a, b in ((x, self.lo[0], self.hi[0]), (y, self.lo[1], self.hi[1]),
                        (z, self.lo[2], self.hi[2])):
            if np.isfinite(a):
                m = m & (v >= a)
            if np.isfinite(b):
                m = m & (v <= b)
        return m

    def bounds(self):
        return np.asarray(self.lo, float), np.asarray(self.hi, float)


def carve(parts: tuple, minus: tuple = (), lo=(-np.inf, -np.inf, -np.inf),
          hi=(np.inf, np.inf, np.inf)) -> Shape:
    """``(a ∩ b ∩ ...) minus (c ∪ ...)``, restricted to the box ``lo <= (x, y, z) <= hi``."""
    keep: Shape = Intersection(tuple(parts) + (AxisBox(tuple(lo), tuple(hi)),))
    return Difference(keep, Union(tuple(minus))) if minus else keep


@dataclass(frozen=True)
class Perturbed(Shape):
    """A shape as another observer would draw it.

    Shifted by ``shift`` (mm), stretched about ``center`` so that its extent
    along x, y, z changes by ``grow`` mm on each side (anisotropic
    dilation/erosion), grown isotropically by ``bias`` mm, and given a wavy
    boundary: ``amplitude`` mm times a sum of plane waves (wave vectors
    ``waves``, rad/mm, and ``phases``).
    """

    base: Shape
    center: tuple[float, float, float]
    half_extent: tuple[float, float, float]
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    grow: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bias: float = 0.0
    amplitude: float = 0.0
    waves: tuple[tuple[float, float, float], ...] = ()
    phases: tuple[float, ...] = ()

    def _stretch(self) -> np.ndarray:
        s = 1.0 + np.asarray(self.grow) / np.asarray(self.half_extent)
        return np.clip(s, 0.4, None)  # never invert or collapse an organ

    def sdf(self, x, y, z):
        c = [float(v) for v in self.center]
        t = [float(v) for v in self.shift]
        s = [float(v) for v in self._stretch()]
        d = self.base.sdf(
            c[0] + (x - t[0] - c[0]) / s[0],
            c[1] + (y - t[1] - c[1]) / s[1],
            c[2] + (z - t[2] - c[2]) / s[2],
        ) * min(s) - float(self.bias)
        if self.amplitude and self.waves:
            wave = sum(
                np.sin(float(k[0]) * x + float(k[1]) * y + float(k[2]) * z + float(ph))
                for k, ph in zip(self.waves, self.phases)
            )
            d = d + float(self.amplitude) * wave / len(self.waves)
        return d

    def bounds(self):
        lo, hi = self.base.bounds()
        c, t, s = np.asarray(self.center), np.asarray(self.shift), self._stretch()
        pad = 2.0 * (abs(self.bias) + abs(self.amplitude)) + 2.0
        return c + (lo - c) * s + t - pad, c + (hi - c) * s + t + pad


# ===================================================================== grids
#: Direction of the phantom's grids: HFS, axis 0 = +z, axis 1 = +y, axis 2 = +x.
HFS = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def hfs_axes(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates x (columns), y (rows), z (slices) of an HFS grid, in mm."""
    if not np.allclose(grid.direction, HFS):
        raise ValueError("phantom grids are HFS: axis 0 = +z, axis 1 = +y, axis 2 = +x")
    return tuple(
        (grid.origin[p] + grid.spacing[a] * np.arange(grid.shape[a])).astype(np.float32)
        for a, p in ((2, 0), (1, 1), (0, 2))
    )


def grid_box(shape: Shape, grid: Grid, margin_mm: float = 1.0) -> tuple[slice, slice, slice] | None:
    """Index slices ``[k, j, i]`` of the voxels inside ``shape``'s bounding box, or None."""
    lo, hi = shape.bounds()
    slices = []
    for axis, p in ((0, 2), (1, 1), (2, 0)):
        c0 = grid.origin[p]
        step = grid.spacing[axis]
        a = int(np.floor((lo[p] - margin_mm - c0) / step)) if np.isfinite(lo[p]) else 0
        b = int(np.ceil((hi[p] + margin_mm - c0) / step)) + 1 if np.isfinite(hi[p]) else grid.shape[axis]
        a, b = max(a, 0), min(b, grid.shape[axis])
        if a >= b:
            return None
        slices.append(slice(a, b))
    return tuple(slices)


def sdf_in_box(shape: Shape, grid: Grid):
    """``(box, values)``: the signed distance at the voxel centres of the shape's box only.

    Evaluating only there is what keeps a whole patient to about a second.
    """
    box = grid_box(shape, grid)
    if box is None:
        return None, None
    x, y, z = hfs_axes(grid)
    sk, sj, si = box
    return box, shape.sdf(x[si][None, None, :], y[sj][None, :, None], z[sk][:, None, None])


def sdf_on_grid(shape: Shape, grid: Grid, *, fill: float = 1e3) -> np.ndarray:
    """Signed distance (mm) of ``shape`` at every voxel centre ``[k, j, i]`` (``fill`` outside its box)."""
    out = np.full(grid.shape, fill, dtype=np.float32)
    box, values = sdf_in_box(shape, grid)
    if box is not None:
        out[box] = values
    return out


def mask_on_grid(shape: Shape, grid: Grid) -> np.ndarray:
    """Boolean mask ``[k, j, i]`` of the voxel centres inside ``shape``."""
    mask = np.zeros(grid.shape, dtype=bool)
    box, values = sdf_in_box(shape, grid)
    if box is not None:
        mask[box] = values <= 0
    return mask
