"""A synthetic, low-resolution head-and-neck phantom with all 42 SOARS OARs.

It exists to train and test the segmentation pipeline end to end on a CPU
in seconds: every case is a CT volume (HU) and, per SOARS branch, a label
map of that branch's OARs, drawn from one analytic anatomy with per-case
random variation. It is *not* anatomy-grade; positions and sizes are
plausible relative to each other (the eyes in front of the brain, the
lenses in the front of the eyes, the cochleae in the petrous bone, the
thyroid below the larynx ...) and sizes follow the catalogue extents.

Geometry
--------
* Default grid: 48 x 64 x 64 voxels ``[k, j, i]`` at (4, 3, 3) mm, HFS
  (axis 0 = +z superior, axis 1 = +y posterior, axis 2 = +x, the patient's
  left), DICOM LPS mm. ``_L`` organs lie at +x, i.e. at larger ``i``.
* Small organs are a few voxels: a lens is about 3 x 2 x 2 voxels, a
  cochlea about 3 x 3 x 2, the pineal gland about 3 x 3 x 2.
* CT: air -1000 HU, soft tissue about 40 HU, brain 30 HU, bone 600-1300
  HU, orbital fat -80 HU, airways -850 HU; each OAR has its own mean HU
  (table :data:`OAR_HU`), so that a small network can learn it from
  intensity *and* position. Small & hard organs have modest contrast.
  A slight blur (partial volume) and Gaussian noise are added.

Variation per case (all from one seed, deterministic)
-----------------------------------------------------
anisotropic scale 0.94-1.06, rotation about the cranio-caudal axis of
+-4 degrees, shift of +-5 mm (x, y) and +-6 mm (z), per-organ (or per
organ-group) centre jitter of about 1.2 mm and size factor 0.9-1.1,
tissue HU +-5, noise standard deviation 6-12 HU.

Labels
------
One label map per branch (:data:`~soars_dose.oars.CATEGORIES`):
within a branch the labels are exclusive (where two organs of a branch
touch, the smaller wins); across branches organs may overlap (the lens
lies inside the eye). Label ``l`` of a branch's map is
``catalogue.names(branch)[l - 1]``.

Partial labels
--------------
Real training sets rarely have all 42 OARs contoured in every patient. A
case may be *partial*: :attr:`Phantom42Case.annotated` says which OARs
were contoured; the label maps given to training
(:meth:`Phantom42Case.annotated_labels`, and those written by
:func:`write_dataset`) have the others set to background, exactly what an
unannotated organ looks like in a real data set. The full truth stays in
:attr:`Phantom42Case.labels` for evaluation.

Data set folder (:func:`write_dataset`)
---------------------------------------
The layout of :mod:`~soars_dose.segmentation.dataset` (read back by its
:func:`~soars_dose.segmentation.dataset.load_dataset`), with all 42 OARs
listed; a real data set converted to this layout trains the same way.

This module uses numpy and scipy only (no torch).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .. import oars as catalogue
from ..console import option
from ..errors import InputError, OutputExistsError
from ..grid import Grid
from ..outputs import atomic_write_file
from ..segmentation.dataset import DATASET_FORMAT, DATASET_VERSION
from .shapes import Capsule, Ellipsoid, EllipticCylinder, Union, carve

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "OAR_HU",
    "Phantom42Case",
    "make_case",
    "write_dataset",
]

DEFAULT_SHAPE = (48, 64, 64)
DEFAULT_SPACING = (4.0, 3.0, 3.0)
#: Anatomy-frame point (x, y, z mm) at the centre of the default grid.
_GRID_CENTRE = np.array([0.0, 8.0, -6.0])
_HFS = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

#: Mean CT number (HU) of every OAR in the phantom.
OAR_HU: dict[str, float] = {
    "Brainstem": 58, "Cerebellum": 46, "Eye_L": 12, "Eye_R": 12,
    "Bone_Mandible_L": 1300, "Bone_Mandible_R": 1300, "SpinalCord": 42,
    "Joint_TM_L": 350, "Joint_TM_R": 350,
    "BrachialPlex_L": 70, "BrachialPlex_R": 70, "BasalGanglia_L": 44, "BasalGanglia_R": 44,
    "Musc_Constrict_I": 62, "Musc_Constrict_M": 62, "Musc_Constrict_S": 62,
    "Epiglottis": 75, "Esophagus": 48, "Larynx_GSL": 85, "Cavity_Oral": 52,
    "Parotid_L": 5, "Parotid_R": 5, "Glnd_Submand_L": 56, "Glnd_Submand_R": 56,
    "Lobe_Temporal_L": 40, "Lobe_Temporal_R": 40, "Glnd_Thyroid_L": 110, "Glnd_Thyroid_R": 110,
    "Cochlea_L": 110, "Cochlea_R": 110, "Hypothalamus": 52, "Ear_Internal_L": 160,
    "Ear_Internal_R": 160, "Glnd_Lacrimal_L": 70, "Glnd_Lacrimal_R": 70, "Lens_L": 95,
    "Lens_R": 95, "OpticNrv_L": 45, "OpticNrv_R": 45, "OpticChiasm": 55, "Pineal": 130,
    "Pituitary": 62,
}


# =========================================================================== anatomy
class _Variation:
    """Per-case random variation: per-group jitter of centres and sizes."""

    def __init__(self, rng: np.random.Generator, amount: float):
        self.rng, self.amount = rng, amount
        self._groups: dict[str, tuple[np.ndarray, float]] = {}

    def group(self, key: str) -> tuple[np.ndarray, float]:
        if key not in self._groups:
            self._groups[key] = (self.rng.normal(0.0, 1.2 * self.amount, 3),
                                 float(1.0 + self.amount * self.rng.uniform(-0.1, 0.1)))
        return self._groups[key]

    def ell(self, key, centre, radii, inherit: str | None = None):
        d, s = self.group(key)
        if inherit is not None:
            d = d + self.group(inherit)[0]
        return Ellipsoid(tuple(np.asarray(centre, float) + d), tuple(np.asarray(radii, float) * s))

    def cap(self, key, p0, p1, radius):
        d, s = self.group(key)
        return Capsule(tuple(np.asarray(p0, float) + d), tuple(np.asarray(p1, float) + d),
                        float(radius * s))


def _mirror(p, side: int):
    return (side * p[0], p[1], p[2])


def _anatomy(v: _Variation) -> tuple[list[tuple[object, float]], dict[str, object], object]:
    """``(tissues, oars, body)`` in the anatomy frame (mm; x left, y posterior, z superior)."""
    head = Ellipsoid((0.0, 10.0, 30.0), (70.0, 84.0, 58.0))
    inner = Ellipsoid((0.0, 10.0, 30.0), (63.0, 77.0, 51.0))
    face = Ellipsoid((0.0, -20.0, -30.0), (60.0, 58.0, 40.0))
    front = Ellipsoid((0.0, -30.0, 20.0), (60.0, 55.0, 40.0))
    neck = EllipticCylinder((0.0, 6.0), (54.0, 52.0), -200.0, -20.0)
    body = Union((head, face, front, neck))
    face_block = carve((Ellipsoid((0.0, -80.0, 0.0), (200.0, 40.0, 45.0)),))  # y < -40, z < 45
    skull = carve((head,), minus=(inner, face_block), lo=(-np.inf, -np.inf, -12.0))
    brain = carve((inner,), minus=(face_block, EllipticCylinder((0.0, -60.0), (200.0, 86.0),
                                                                     -200.0, -6.0)))
    tissues: list[tuple[object, float]] = [(body, 40.0), (skull, 1000.0), (brain, 30.0)]
    for s in (1, -1):
        tissues.append((v.ell(f"orbit{s}", _mirror((30.0, -50.0, 18.0), s), (15.0, 22.0, 14.0)),
                        -80.0))
        tissues.append((v.ell(f"petrous{s}", _mirror((34.0, 16.0, -8.0), s), (16.0, 12.0, 9.0)),
                        900.0))
    tissues += [
        (v.ell("nasal", (0.0, -58.0, 5.0), (10.0, 16.0, 18.0)), -850.0),
        (v.cap("vertebra", (0.0, 31.0, -200.0), (0.0, 23.0, -30.0), 14.0), 700.0),
        (v.cap("vertebra", (0.0, 31.0, -200.0), (0.0, 23.0, -30.0), 7.5), 25.0),
        (v.cap("vbody", (0.0, 12.0, -200.0), (0.0, 8.0, -32.0), 9.0), 600.0),
        (v.ell("sella", (0.0, -12.0, 2.0), (11.0, 9.0, 7.0)), 650.0),
        (v.cap("pharynx", (0.0, -16.0, -20.0), (0.0, -18.0, -54.0), 5.0), -850.0),
    ]
    o: dict[str, object] = {}
    # ---- anchor
    o["Brainstem"] = v.ell("Brainstem", (0.0, 12.0, 0.0), (12.0, 13.0, 22.0))
    o["Cerebellum"] = carve((v.ell("Cerebellum", (0.0, 50.0, -6.0), (46.0, 20.0, 17.0)), inner))
    o["SpinalCord"] = v.cap("vertebra", (0.0, 31.0, -200.0), (0.0, 22.0, -24.0), 5.5)
    for s, side in ((1, "L"), (-1, "R")):
        o[f"Eye_{side}"] = v.ell(f"eye{s}", _mirror((32.0, -60.0, 18.0), s), (12.0, 12.0, 12.0))
        body_ring = carve(
            (EllipticCylinder((0.0, -18.0), (48.0, 50.0), -58.0, -40.0),),
            minus=(EllipticCylinder((0.0, -18.0), (41.0, 43.0), -200.0, 200.0),),
            lo=(0.0, -np.inf, -np.inf) if s > 0 else (-np.inf, -np.inf, -np.inf),
            hi=(np.inf, -16.0, np.inf) if s > 0 else (0.0, -16.0, np.inf))
        ramus = v.cap(f"ramus{s}", _mirror((44.0, -12.0, -50.0), s), _mirror((44.0, -6.0, -17.0), s),
                      5.0)
        o[f"Bone_Mandible_{side}"] = Union((body_ring, ramus))
        o[f"Joint_TM_{side}"] = v.ell(f"tmj{s}", _mirror((45.0, -3.0, -7.0), s), (12.0, 9.0, 9.0),
                                      inherit=f"ramus{s}")
    # ---- mid-level
    for s, side in ((1, "L"), (-1, "R")):
        o[f"BrachialPlex_{side}"] = v.cap(f"plex{s}", _mirror((14.0, 30.0, -78.0), s),
                                          _mirror((52.0, 18.0, -100.0), s), 4.0)
        o[f"BasalGanglia_{side}"] = v.ell(f"bg{s}", _mirror((20.0, -2.0, 42.0), s),
                                          (10.0, 20.0, 13.0))
        o[f"Parotid_{side}"] = v.ell(f"parotid{s}", _mirror((46.0, 14.0, -32.0), s),
                                     (11.0, 15.0, 22.0))
        o[f"Glnd_Submand_{side}"] = v.ell(f"submand{s}", _mirror((28.0, -24.0, -56.0), s),
                                          (11.0, 14.0, 11.0))
        o[f"Lobe_Temporal_{side}"] = carve((v.ell(f"temporal{s}", _mirror((46.0, 0.0, 14.0), s),
                                                   (16.0, 32.0, 18.0)), inner))
        o[f"Glnd_Thyroid_{side}"] = v.ell(f"thyroid{s}", _mirror((20.0, -24.0, -92.0), s),
                                          (8.0, 9.0, 12.0))
    o["Musc_Constrict_S"] = v.ell("cs", (0.0, -8.0, -28.0), (15.0, 4.0, 9.0))
    o["Musc_Constrict_M"] = v.ell("cm", (0.0, -8.0, -46.0), (14.0, 4.0, 8.0))
    o["Musc_Constrict_I"] = v.ell("ci", (0.0, -8.0, -63.0), (13.0, 4.0, 8.0))
    o["Epiglottis"] = v.ell("epiglottis", (0.0, -26.0, -56.0), (8.0, 3.0, 9.0))
    o["Esophagus"] = v.cap("eso", (0.0, -5.0, -200.0), (0.0, -6.0, -80.0), 5.0)
    o["Larynx_GSL"] = v.ell("larynx", (0.0, -30.0, -80.0), (16.0, 12.0, 20.0))
    o["Cavity_Oral"] = v.ell("oral", (0.0, -46.0, -34.0), (26.0, 18.0, 11.0))
    # ---- small & hard
    for s, side in ((1, "L"), (-1, "R")):
        o[f"Cochlea_{side}"] = v.ell(f"cochlea{s}", _mirror((30.0, 12.0, -8.0), s), (4.5, 4.5, 4.0),
                                     inherit=f"petrous{s}")
        o[f"Ear_Internal_{side}"] = v.ell(f"ear{s}", _mirror((40.0, 20.0, -6.0), s), (6.0, 5.0, 7.0),
                                          inherit=f"petrous{s}")
        o[f"Glnd_Lacrimal_{side}"] = v.ell(f"lacrimal{s}", _mirror((42.0, -52.0, 30.0), s),
                                           (6.0, 9.0, 4.5))
        o[f"Lens_{side}"] = v.ell(f"lens{s}", _mirror((32.0, -68.5, 18.0), s), (5.0, 3.0, 4.5),
                                  inherit=f"eye{s}")
        o[f"OpticNrv_{side}"] = v.cap(f"nerve{s}", _mirror((28.0, -49.0, 17.0), s),
                                      _mirror((9.0, -20.0, 20.0), s), 2.5)
    o["Hypothalamus"] = v.ell("hypothalamus", (0.0, -4.0, 30.0), (6.0, 6.0, 5.0))
    o["OpticChiasm"] = v.ell("chiasm", (0.0, -16.0, 21.0), (10.0, 4.0, 3.0))
    o["Pineal"] = v.ell("pineal", (0.0, 26.0, 36.0), (4.5, 4.5, 4.0))
    o["Pituitary"] = v.ell("pituitary", (0.0, -12.0, 6.0), (6.0, 5.0, 4.0), inherit="sella")
    assert set(o) == set(catalogue.names()), sorted(set(catalogue.names()) ^ set(o))
    return tissues, o, body


# =========================================================================== cases
@dataclass
class Phantom42Case:
    """One synthetic case.

    Attributes
    ----------
    case_id : str
    hu : ndarray of float32, shape ``grid.shape``
        CT numbers, indexed ``[k, j, i]``.
    grid : Grid
        HFS grid (LPS mm).
    labels : dict of str -> ndarray of uint8
        Full truth: one exclusive label map per branch (``'anchor'``,
        ``'mid_level'``, ``'small_hard'``); label ``l`` is
        ``catalogue.names(branch)[l - 1]``.
    annotated : ndarray of bool, shape (42,)
        Which catalogue OARs (catalogue order) were "contoured" in this case.
    seed : int
    """

    case_id: str
    hu: np.ndarray
    grid: Grid
    labels: dict[str, np.ndarray]
    annotated: np.ndarray
    seed: int = 0
    meta: dict = field(default_factory=dict)

    def mask(self, name: str) -> np.ndarray:
        """Full-truth boolean mask ``[k, j, i]`` of one OAR."""
        oar = catalogue.get(name)
        return self.labels[oar.category] == catalogue.names(oar.category).index(name) + 1

    def annotated_names(self) -> list[str]:
        """Names of the annotated OARs, catalogue order."""
        return [n for n, a in zip(catalogue.names(), self.annotated) if a]

    def annotated_labels(self, branch: str) -> np.ndarray:
        """The branch's label map with unannotated OARs set to background (what training sees)."""
        names = catalogue.names(branch)
        lab = self.labels[branch].copy()
        all_names = catalogue.names()
        for value, n in enumerate(names, start=1):
            if not self.annotated[all_names.index(n)]:
                lab[lab == value] = 0
        return lab

    def centre(self, name: str) -> np.ndarray:
        """Centroid ``(k, j, i)`` (continuous voxel indices) of an OAR's full-truth mask."""
        idx = np.argwhere(self.mask(name))
        if idx.size == 0:
            return np.full(3, np.nan)
        return idx.mean(axis=0)


def _world_axes(grid: Grid):
    z = grid.origin[2] + grid.spacing[0] * np.arange(grid.shape[0])
    y = grid.origin[1] + grid.spacing[1] * np.arange(grid.shape[1])
    x = grid.origin[0] + grid.spacing[2] * np.arange(grid.shape[2])
    return x, y, z


class _Sampler:
    """Evaluates shapes given in the anatomy frame on a case's world grid, inside their boxes."""

    def __init__(self, grid: Grid, scale: np.ndarray, angle_rad: float, shift: np.ndarray):
        self.grid = grid
        self.scale = np.asarray(scale, float)
        c, s = np.cos(angle_rad), np.sin(angle_rad)
        self.rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        self.shift = np.asarray(shift, float)
        self.x, self.y, self.z = _world_axes(grid)

    def to_world(self, p: np.ndarray) -> np.ndarray:
        return (self.rot @ (np.asarray(p, float) * self.scale).T).T + self.shift

    def box(self, shape) -> tuple[slice, slice, slice] | None:
        lo, hi = shape.bounds()
        lo = np.maximum(lo, -500.0)
        hi = np.minimum(hi, 500.0)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                            for c in (lo[2], hi[2])])
        w = self.to_world(corners)
        wl, wh = w.min(axis=0), w.max(axis=0)
        out = []
        for axis, p in ((0, 2), (1, 1), (2, 0)):
            o, sp, n = self.grid.origin[p], self.grid.spacing[axis], self.grid.shape[axis]
            a = max(int(np.floor((wl[p] - o) / sp)) - 1, 0)
            b = min(int(np.ceil((wh[p] - o) / sp)) + 2, n)
            if a >= b:
                return None
            out.append(slice(a, b))
        return tuple(out)

    def mask(self, shape) -> tuple[tuple[slice, slice, slice] | None, np.ndarray | None]:
        box = self.box(shape)
        if box is None:
            return None, None
        sk, sj, si = box
        wx = self.x[si][None, None, :] - self.shift[0]
        wy = self.y[sj][None, :, None] - self.shift[1]
        wz = self.z[sk][:, None, None] - self.shift[2]
        r = self.rot  # anatomy = R^T (w - shift) / scale
        ax = (r[0, 0] * wx + r[1, 0] * wy) / self.scale[0]
        ay = (r[0, 1] * wx + r[1, 1] * wy) / self.scale[1]
        az = np.broadcast_to(wz / self.scale[2], np.broadcast_shapes(wx.shape, wy.shape, wz.shape))
        ax = np.broadcast_to(ax, az.shape)
        ay = np.broadcast_to(ay, az.shape)
        return box, shape.inside(ax, ay, az)


def _partial_mask(rng: np.random.Generator, partial: bool, drop_fraction: float) -> np.ndarray:
    n = len(catalogue.CATALOGUE)
    annotated = np.ones(n, dtype=bool)
    if partial:
        drop = rng.random(n) < drop_fraction
        if not drop.any():
            drop[rng.integers(n)] = True
        annotated &= ~drop
    return annotated


def make_case(seed: int = 0, *, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING,
              partial: bool | None = None, partial_probability: float = 0.35,
              drop_fraction: float = 0.25, variation: float = 1.0,
              noise_hu: tuple[float, float] = (6.0, 12.0), case_id: str | None = None
              ) -> Phantom42Case:
    """Generate one synthetic 42-OAR case (deterministic in ``seed``).

    Parameters
    ----------
    seed : int
        Everything random derives from it.
    shape, spacing : tuple of 3
        Grid size ``[k, j, i]`` and voxel pitch (mm). The anatomy spans
        about 190 mm along each axis; other grids cover more or less of it.
    partial : bool, optional
        Force a partial (True) or fully annotated (False) case; by default
        a case is partial with probability ``partial_probability``.
    drop_fraction : float
        In a partial case, the probability that each OAR is unannotated
        (at least one is).
    variation : float
        Scale of the per-case anatomical variation (0 = the mean anatomy).
    noise_hu : (low, high)
        Range of the per-case noise standard deviation (HU).
    case_id : str, optional
        Default ``phantom42-<seed>``.

    Returns
    -------
    Phantom42Case
    """
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 1 or len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"phantom grid needs three positive sizes and spacings, got {shape}, "
                         f"{spacing}")
    rng = np.random.default_rng([int(seed), 4242])
    extent = (np.asarray(shape[::-1]) - 1) * np.asarray(spacing[::-1])  # x, y, z
    origin = _GRID_CENTRE - extent / 2.0
    grid = Grid(shape, spacing, tuple(origin), _HFS)
    amount = float(variation)
    scale = 1.0 + amount * rng.uniform(-0.06, 0.06, 3)
    angle = np.deg2rad(amount * rng.uniform(-4.0, 4.0))
    shift = amount * np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-6, 6)])
    sampler = _Sampler(grid, scale, angle, shift)
    tissues, oars, body = _anatomy(_Variation(rng, amount))

    hu = np.full(shape, -1000.0, dtype=np.float32)
    body_box, body_mask = sampler.mask(body)
    body_full = np.zeros(shape, dtype=bool)
    if body_box is not None:
        body_full[body_box] = body_mask
    for t, value in tissues:
        box, m = sampler.mask(t)
        if box is None:
            continue
        m = m & body_full[box]
        hu[box][m] = value + amount * rng.uniform(-5, 5)

    masks: dict[str, tuple] = {}
    for name in catalogue.names():
        box, m = sampler.mask(oars[name])
        if box is None:
            m = None
        else:
            m = m & body_full[box]
        masks[name] = (box, m)
    # CT: paint organs (big first, so that small ones inside big ones stay visible)
    size = {n: (0 if m is None else int(m.sum())) for n, (_, m) in masks.items()}
    for name in sorted(masks, key=lambda n: -size[n]):
        box, m = masks[name]
        if m is not None and m.any():
            hu[box][m] = OAR_HU[name] + amount * rng.uniform(-5, 5)
    labels: dict[str, np.ndarray] = {}
    for branch in catalogue.CATEGORIES:
        names = catalogue.names(branch)
        lab = np.zeros(shape, dtype=np.uint8)
        for name in sorted(names, key=lambda n: -size[n]):  # within a branch the smaller wins
            box, m = masks[name]
            if m is not None and m.any():
                lab[box][m] = names.index(name) + 1
        labels[branch] = lab
    hu = ndimage.gaussian_filter(hu, sigma=0.5, mode="nearest")
    sigma = rng.uniform(*noise_hu)
    hu += rng.normal(0.0, sigma, shape).astype(np.float32)
    if partial is None:
        partial = bool(rng.random() < partial_probability)
    annotated = _partial_mask(rng, partial, drop_fraction)
    return Phantom42Case(case_id=case_id or f"phantom42-{int(seed)}", hu=hu.astype(np.float32),
                         grid=grid, labels=labels, annotated=annotated, seed=int(seed),
                         meta={"noise_hu": float(sigma), "scale": scale.tolist(),
                               "angle_deg": float(np.rad2deg(angle)), "shift_mm": shift.tolist(),
                               "partial": bool(partial)})


# =========================================================================== data set files
def write_dataset(out_dir: "str | os.PathLike", n_cases: int, *, seed: int = 0,
                  overwrite: bool = False, **case_kwargs) -> Path:
    """Write ``n_cases`` phantom cases as a training data set folder.

    Parameters
    ----------
    out_dir : path
        Folder to create (``dataset.json`` + one ``.npz`` per case).
    n_cases : int
    seed : int
        Case ``c`` uses seed ``seed * 100003 + c``.
    overwrite : bool
        Allow writing into an existing data set folder.
    **case_kwargs
        Passed to :func:`make_case` (``shape``, ``spacing``, ``partial_probability``...).

    Returns
    -------
    Path
        The folder.
    """
    out = Path(out_dir)
    if (out / "dataset.json").exists() and not overwrite:
        raise OutputExistsError(f"{out} already holds a data set; pass {option('overwrite')} "
                                 "to replace it")
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for c in range(int(n_cases)):
        case = make_case(int(seed) * 100003 + c, case_id=f"case_{c:04d}", **case_kwargs)
        arrays = {
            "hu": np.round(case.hu).astype(np.int16),
            "spacing": np.asarray(case.grid.spacing), "origin": np.asarray(case.grid.origin),
            "direction": np.asarray(case.grid.direction), "annotated": case.annotated,
        }
        for b in catalogue.CATEGORIES:
            arrays[f"labels_{b}"] = case.annotated_labels(b)
        atomic_write_file(out / f"{case.case_id}.npz",
                          lambda f, arrays=arrays: np.savez_compressed(f, **arrays))
        cases.append({"id": case.case_id, "file": f"{case.case_id}.npz",
                      "annotated": int(case.annotated.sum()), "seed": case.seed})
    meta = {"format": DATASET_FORMAT, "version": DATASET_VERSION, "source": "phantom42",
            "seed": int(seed), "spacing_mm": list(DEFAULT_SPACING if "spacing" not in case_kwargs
                                                  else case_kwargs["spacing"]),
            "oar_names": {b: catalogue.names(b) for b in catalogue.CATEGORIES},
            "cases": cases}
    atomic_write_file(out / "dataset.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return out
