"""Synthetic head-and-neck cases written as real DICOM-RT.

Each case is a CT series, a reference RTSTRUCT (13 OARs, External, PTV70),
three substitute RTSTRUCTs (``soars``, ``revised``, ``reader``) and an
IMRT-like RTDOSE on its own grid, all in one study and frame of reference:
everything the dose audit reads, with a known truth.

Conventions
-----------
* World coordinates are DICOM LPS in mm: x to the patient's left, y
  posterior, z superior. ``_L`` organs lie at +x.
* Anatomy is described by approximate signed-distance functions (mm,
  negative inside) of analytic shapes, so one description serves the CT,
  the masks on the CT grid and the PTV on the dose grid.
* The anatomy frame has its origin on the midline at the level of the eye
  centres; a patient is that frame scaled and shifted by a few per cent/mm.
* Masks are indexed ``[k, j, i]`` on an HFS grid (axis 0 = +z, 1 = +y, 2 = +x).

How the substitute sets differ from the reference mimics how real
contour sets differ: every organ is shifted, grown or shrunk
anisotropically and given a wavy boundary (1-3 mm), sometimes gains or
loses an end slice; small organs (lenses, chiasm, optic nerves) are
systematically over- or under-contoured; ROI names sometimes follow
another convention, and now and then an organ is missing. ``revised`` is
the ``soars`` set with most of each error undone (a physician edited it),
so it is the closest to the reference; ``reader`` is the farthest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..dicom.uids import new_uid
from ..dicom.write import (
    masks_to_contours,
    write_ct_series,
    write_rtdose,
    write_rtstruct,
)
from ..grid import Grid
from ..structures import Structure
from .shapes import (
    Capsule,
    Difference,
    Ellipsoid,
    HalfSpace,
    Intersection,
    Perturbed,
    Shape,
    SweptEllipse,
    Union,
    hfs_axes,
    mask_on_grid,
    sdf_on_grid,
)

__all__ = [
    "OAR_NAMES",
    "SUBSTITUTE_SETS",
    "NAME_VARIANTS",
    "PRESCRIPTION_GY",
    "PTV_NAME",
    "EXTERNAL_NAME",
    "PhantomCase",
    "make_patient",
    "make_cohort",
]

#: The 13 OARs of the reference study, TG-263 names.
OAR_NAMES: tuple[str, ...] = (
    "Brainstem", "Eye_L", "Eye_R", "Lens_L", "Lens_R", "OpticChiasm", "OpticNrv_L",
    "OpticNrv_R", "Parotid_L", "Parotid_R", "SpinalCord", "Joint_TM_L", "Joint_TM_R",
)
SUBSTITUTE_SETS: tuple[str, ...] = ("soars", "revised", "reader")
PRESCRIPTION_GY = 70.0
PTV_NAME = "PTV70"
EXTERNAL_NAME = "External"

#: Other names institutions give these OARs; substitute sets sometimes use
#: them so that name matching is exercised. Every one should map back to its
#: key in the alias table.
NAME_VARIANTS: dict[str, tuple[str, ...]] = {
    "Brainstem": ("Brain Stem", "BrainStem"),
    "Eye_L": ("L Eye", "Eye Lt", "Eye_Left"),
    "Eye_R": ("R Eye", "Eye Rt", "Eye_Right"),
    "Lens_L": ("L Lens", "Lens Lt", "Lens_Left"),
    "Lens_R": ("R Lens", "Lens Rt", "Lens_Right"),
    "OpticChiasm": ("Chiasm", "Optic Chiasm"),
    "OpticNrv_L": ("L Optic Nerve", "OpticNerve_L", "Optic Nerve Lt"),
    "OpticNrv_R": ("R Optic Nerve", "OpticNerve_R", "Optic Nerve Rt"),
    "Parotid_L": ("L Parotid", "Parotid Lt", "LeftParotid"),
    "Parotid_R": ("R Parotid", "Parotid Rt", "RightParotid"),
    "SpinalCord": ("Cord", "Spinal Cord", "Spinal_Cord"),
    "Joint_TM_L": ("L TMJ", "TMJ_L", "TMJ Lt"),
    "Joint_TM_R": ("R TMJ", "TMJ_R", "TMJ Rt"),
}

#: Organs small enough that readers disagree mostly by over/under-contouring.
_SMALL_OARS = frozenset({"Lens_L", "Lens_R", "OpticChiasm", "OpticNrv_L", "OpticNrv_R"})
#: High-contrast organs every observer draws nearly alike: half the error.
_EASY_OARS = frozenset({"Eye_L", "Eye_R"})
_COLORS = {
    "Brainstem": (0, 128, 255), "Eye_L": (255, 255, 0), "Eye_R": (255, 200, 0),
    "Lens_L": (255, 0, 255), "Lens_R": (200, 0, 255), "OpticChiasm": (0, 255, 128),
    "OpticNrv_L": (0, 200, 100), "OpticNrv_R": (0, 160, 80), "Parotid_L": (255, 128, 0),
    "Parotid_R": (255, 80, 0), "SpinalCord": (255, 0, 0), "Joint_TM_L": (128, 64, 0),
    "Joint_TM_R": (160, 90, 30), EXTERNAL_NAME: (0, 255, 0), PTV_NAME: (255, 0, 128),
}
#: Version of the phantom recipe; part of every UID, so a changed recipe
#: never reuses the UIDs of old files.
_RECIPE = "soars-phantom-1"


@dataclass
class PhantomCase:
    """One synthetic patient on disk.

    Attributes
    ----------
    patient_id : str
    root : Path
        Folder holding everything below.
    ct_dir : Path
        CT series, one file per slice.
    rtdose : Path
        RT Dose file (Gy, PLAN).
    reference : Path
        Reference RTSTRUCT: 13 OARs, External and PTV70.
    sets : dict of str to Path
        Substitute RTSTRUCTs by set name (``soars``, ``revised``, ``reader``).
    study_uid, frame_of_reference_uid : str
        Shared by every file of the case.
    truth : dict
        What was generated (JSON-serialisable): ``seed``,
        ``prescription_gy``, ``ptv_side`` ('L' or 'R', the patient side of
        the nodal PTV), ``scale`` and ``shift_mm`` (anatomy vs the nominal
        head), ``roi_names`` (set -> TG-263 name -> ROIName written),
        ``missing`` (set -> OARs left out), ``perturbations`` (set -> OAR ->
        error applied: ``shift_mm`` [x, y, z], ``grow_mm`` [x, y, z],
        ``bias_mm``, ``wobble_mm``, ``end_slice``), ``volumes_cc`` (set ->
        OAR -> mask volume on the CT grid, cc) and ``dose_max_gy``.
    """

    patient_id: str
    root: Path
    ct_dir: Path
    rtdose: Path
    reference: Path
    sets: dict[str, Path]
    study_uid: str
    frame_of_reference_uid: str
    truth: dict = field(default_factory=dict)


# ===================================================================== shapes
# Each shape gives an approximate signed distance (mm, negative inside) at
# LPS points passed as broadcastable x, y, z arrays, and a conservative
# bounding box so that it is only evaluated near where it can be inside.
# =================================================================== anatomy
@dataclass
class _Anatomy:
    """One patient's anatomy: shapes in world LPS mm."""

    body: Shape
    oars: dict[str, Shape]
    ptv: Shape
    tissues: list[tuple[Shape, float]]  # painted in order: (shape, HU)
    ptv_side: int
    scale: float
    shift: np.ndarray


class _Frame:
    """Maps the anatomy frame to a patient's world frame, with per-organ jitter."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.scale = float(rng.uniform(0.94, 1.06))
        self.shift = rng.uniform(-4.0, 4.0, 3)

    def point(self, p, jitter_mm: float = 0.0) -> tuple[float, float, float]:
        p = np.asarray(p, dtype=float) * self.scale + self.shift
        if jitter_mm:
            p = p + self.rng.normal(0.0, jitter_mm, 3)
        return tuple(float(v) for v in p)

    def radii(self, r, spread: float = 0.0) -> tuple[float, ...]:
        f = self.rng.uniform(1 - spread, 1 + spread) if spread else 1.0
        return tuple(float(v) * self.scale * f for v in np.atleast_1d(r))

    def ellipsoid(self, c, r, jitter_mm=1.0, spread=0.08) -> Ellipsoid:
        return Ellipsoid(self.point(c, jitter_mm), self.radii(r, spread))

    def swept(self, knots, jitter_mm: float = 0.0, spread: float = 0.0) -> SweptEllipse:
        """Knots ``(z, cx, cy, rx, ry)`` mapped to the world, jittered as one piece."""
        offset = self.rng.normal(0.0, jitter_mm, 3) if jitter_mm else np.zeros(3)
        f = self.rng.uniform(1 - spread, 1 + spread) if spread else 1.0
        rows = []
        for z, cx, cy, rx, ry in knots:
            wx, wy, wz = np.asarray(self.point((cx, cy, z))) + offset
            rows.append((wz, wx, wy, rx * self.scale * f, ry * self.scale * f))
        return SweptEllipse(tuple(rows))


def _eye(head: Ellipsoid, approx_center: tuple, rng: np.random.Generator) -> Ellipsoid:
    """A globe at ``approx_center`` (x, z kept) whose front sits 3-4 mm under the skin.

    Adult globes hardly vary with head size (radius 11.8 mm +- 4 %), so
    they are placed against the face rather than scaled with it; otherwise
    a small head would have eyes bulging through the skin.
    """
    radius = 11.8 * rng.uniform(0.96, 1.04)
    x, _, z = approx_center
    (cx, cy, cz), (rx, ry, rz) = head.center, head.radii
    skin_y = cy - ry * np.sqrt(max(1.0 - ((x - cx) / rx) ** 2 - ((z - cz) / rz) ** 2, 0.0))
    y = skin_y + rng.uniform(3.0, 4.0) + radius
    return Ellipsoid((float(x), float(y), float(z)), (radius,) * 3)


def _build_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw one patient's anatomy (all organs, tissues, body and PTV)."""
    f = _Frame(rng)
    body = Union((
        f.ellipsoid((0, 0, 15), (72, 90, 105), jitter_mm=0, spread=0.03),   # head
        f.swept([(-140, 0, 15, 55, 58), (-20, 0, 15, 55, 58)]),              # neck
        f.ellipsoid((0, -30, -45), (58, 62, 35), jitter_mm=0, spread=0.03),  # lower face
    ))
    head = body.parts[0]
    oars: dict[str, Shape] = {}

    eyes = {}
    for side, sfx in ((1, "L"), (-1, "R")):
        eye = _eye(head, f.point((side * 32, -66, 0), 1.0), rng)
        eyes[sfx] = eye
        oars[f"Eye_{sfx}"] = eye
        # The lens centre lies ~5.8 mm behind the cornea (3.6 mm chamber + half its thickness).
        lens_c = np.asarray(eye.center) - np.array([0.0, eye.radii[1] - 5.8, 0.0])
        oars[f"Lens_{sfx}"] = Ellipsoid(tuple(lens_c), f.radii((5.0, 2.2, 5.0), 0.08))

    chiasm = f.ellipsoid((0, -25, 8), (7.5, 4.5, 2.8), jitter_mm=1.0, spread=0.1)
    oars["OpticChiasm"] = chiasm
    for side, sfx in ((1, "L"), (-1, "R")):
        eye = eyes[sfx]
        end = np.asarray(chiasm.center) + np.array([side * 0.8 * chiasm.radii[0], 0.0, 0.0])
        u = end - np.asarray(eye.center)
        start = np.asarray(eye.center) + u / np.linalg.norm(u) * eye.radii[0]
        nerve = Capsule(tuple(start), tuple(end), 2.4 * f.scale * rng.uniform(0.92, 1.08))
        # Optic nerves are contoured from the globe to the chiasm, excluding both.
        oars[f"OpticNrv_{sfx}"] = Difference(nerve, Union((eye, chiasm)))

    oars["Brainstem"] = f.swept(
        [(10, 0, 3, 13, 11), (-15, 0, 8, 13.5, 13), (-48, 0, 18, 9, 9)], jitter_mm=1.0, spread=0.06
    )
    cord_knots = [(-49, 0, 18, 5, 4.5), (-75, 0, 19, 5, 4.5), (-140, 0, 13, 5, 4.5)]
    oars["SpinalCord"] = f.swept(cord_knots, jitter_mm=0.5, spread=0.05)

    skin_margin = Difference(body, _offset(body, -2.5))
    for side, sfx in ((1, "L"), (-1, "R")):
        gland = Union((
            f.ellipsoid((side * 47, 2, -37), (12, 17, 23), jitter_mm=1.5, spread=0.1),
            f.ellipsoid((side * 38, -8, -38), (7, 8, 12), jitter_mm=1.0, spread=0.1),  # deep lobe
        ))
        oars[f"Parotid_{sfx}"] = Difference(gland, skin_margin)  # stays under the skin
        oars[f"Joint_TM_{sfx}"] = f.ellipsoid((side * 47, -12, -14), (8, 6, 5), jitter_mm=1.0, spread=0.08)

    ptv_side = int(rng.choice([-1, 1]))
    ptv = Union((
        f.ellipsoid((ptv_side * 6, -18, -58), (22, 18, 20), jitter_mm=1.5, spread=0.08),  # primary
        f.ellipsoid((ptv_side * 30, -2, -72), (12, 13, 17), jitter_mm=1.5, spread=0.12),  # nodes
    ))
    ptv = Intersection((ptv, _offset(body, -3.0)))  # PTVs are cropped 3 mm from the skin

    tissues = _tissues(f, body, head, oars, eyes)
    return _Anatomy(body, oars, ptv, tissues, ptv_side, f.scale, f.shift)


def _offset(shape: Shape, mm: float) -> Shape:
    """``shape`` grown by ``mm`` (shrunk when negative), in the signed-distance sense."""
    return Perturbed(shape, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), bias=mm)


def _tissues(f: _Frame, body: Shape, head: Ellipsoid, oars: dict, eyes: dict) -> list:
    """CT composition as ``(shape, HU)`` painted in order over air (-1000 HU)."""
    cord = oars["SpinalCord"]
    s = f.scale

    def around_cord(dy: float, rx: float, ry: float) -> SweptEllipse:
        """A tube following the cord's centre line, ``dy`` mm posterior of it."""
        return SweptEllipse(tuple((z, cx, cy + dy * s, rx * s, ry * s) for z, cx, cy, _, _ in cord.knots))

    canal = around_cord(0.0, 8.0, 7.5)
    mandible = Union((
        Intersection((  # horseshoe of the mandibular body, anterior half only
            Difference(
                f.swept([(-68, 0, -22, 48, 58), (-50, 0, -22, 48, 58)]),
                f.swept([(-75, 0, -22, 41, 51), (-43, 0, -22, 41, 51)]),
            ),
            HalfSpace((0, 1, 0), f.point((0, -22, 0))[1]),
        )),
        Capsule(f.point((44.5, -22, -60)), f.point((47, -13, -17)), 5 * s),   # rami
        Capsule(f.point((-44.5, -22, -60)), f.point((-47, -13, -17)), 5 * s),
        f.ellipsoid((47, -12, -15), (4.5, 4.5, 4.5), jitter_mm=0, spread=0),  # condyles
        f.ellipsoid((-47, -12, -15), (4.5, 4.5, 4.5), jitter_mm=0, spread=0),
    ))
    skull = Intersection((
        Difference(_offset(head, -5.0), _offset(head, -12.0)),
        # vault above the orbits, occiput behind the ears, nothing below the skull base
        Union((
            HalfSpace((0, 0, -1), -f.point((0, 0, 18))[2]),
            HalfSpace((0, -1, 0), -f.point((0, 15, 0))[1]),
        )),
        HalfSpace((0, 0, -1), -f.point((0, 0, -30))[2]),
    ))
    orbits = tuple(
        Ellipsoid(tuple(np.asarray(e.center) + [0.0, 4.0 * s, 0.0]), tuple(r * 1.45 for r in e.radii))
        for e in eyes.values()
    )
    return [
        (body, 40.0),
        (Difference(body, _offset(body, -4.0)), -90.0),          # subcutaneous fat
        (_offset(head, -12.0), 35.0),                             # brain
        (Union(orbits), -80.0),                                  # orbital fat
        (Union((eyes["L"], eyes["R"])), 10.0),
        (Union((oars["Lens_L"], oars["Lens_R"])), 80.0),
        (Union((oars["Parotid_L"], oars["Parotid_R"])), 0.0),
        (skull, 1100.0),
        (mandible, 1000.0),
        (around_cord(-17.0, 10.0, 8.0), 700.0),                   # vertebral bodies
        (Difference(around_cord(0.0, 12.5, 11.5), canal), 900.0),  # neural arches
        (canal, 15.0),                                            # CSF around the cord
        (cord, 40.0),
        (oars["Brainstem"], 35.0),
        (f.ellipsoid((0, -62, -12), (11, 18, 14), jitter_mm=1.0), -1000.0),  # nasal cavity
        (f.ellipsoid((0, -50, -43), (20, 16, 5), jitter_mm=1.0), -1000.0),   # oral cavity
        (f.swept([(-20, 0, -30, 9, 6), (-50, 0, -17, 10, 7), (-140, 0, -12, 8, 6)]), -1000.0),  # pharynx
    ]


# ========================================================================= CT
def _ct_grid(spacing: tuple[float, float, float]) -> Grid:
    """HFS CT grid of 220 x 220 mm in-plane and 150 mm from z = -100 to +50 (eye level ~0)."""
    dz, dy, dx = (float(s) for s in spacing)
    nz = int(round(150.0 / dz))
    ny, nx = int(round(220.0 / dy)), int(round(220.0 / dx))
    origin = (-(nx - 1) * dx / 2.0, -(ny - 1) * dy / 2.0, -100.0 + dz / 2.0)
    return Grid((nz, ny, nx), (dz, dy, dx), origin)


def _paint_ct(anatomy: _Anatomy, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """CT numbers (HU, int16) ``[k, j, i]``: tissues painted in order, plus vertebral discs and noise."""
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    for shape, value in anatomy.tissues:
        hu[mask_on_grid(shape, grid)] = value
    # Intervertebral discs: bone interrupted every ~17 mm along z.
    z = hfs_axes(grid)[2]
    disc = (np.mod(z - anatomy.shift[2], 17.0 * anatomy.scale) < 4.0)[:, None, None]
    hu[(hu == 700.0) & disc] = 90.0
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


# ====================================================================== dose
def _dose_grid(body_mask: np.ndarray, ct: Grid, rng: np.random.Generator, spacing: float = 2.5) -> Grid:
    """A dose grid over the body (5 mm margin), offset from the CT voxel lattice."""
    idx = np.argwhere(body_mask)
    lo = ct.index_to_world(idx.min(axis=0)) - 5.0
    hi = ct.index_to_world(idx.max(axis=0)) + 5.0
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    # A sub-voxel offset (0.3-1.7 mm) so that no dose voxel centre sits on a CT one.
    origin = np.floor(lo / spacing) * spacing + rng.uniform(0.3, 1.7, 3)
    n = np.ceil((hi - origin) / spacing).astype(int) + 1
    return Grid((n[2], n[1], n[0]), (spacing,) * 3, tuple(origin))


def _dose(anatomy: _Anatomy, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """IMRT-like dose (Gy) ``[k, j, i]`` on ``grid``.

    Prescription dose in the PTV and a fall-off with the distance ``d`` (mm)
    beyond a 1.5 mm rim around it: ``Rx (0.6 exp(-d / 7) + 0.4 exp(-d / 50))``,
    about 9 %/mm near the PTV edge and a low bath far away; then 2 % smooth
    heterogeneity, a 2 mm blur (penumbra) and nothing outside the body.
    The rim keeps the blur from eating the PTV coverage (D95 about 95 %).
    """
    ptv = mask_on_grid(anatomy.ptv, grid)
    d = np.maximum(ndimage.distance_transform_edt(~ptv, sampling=grid.spacing) - 1.5, 0.0)
    dose = PRESCRIPTION_GY * (0.6 * np.exp(-d / 7.0) + 0.4 * np.exp(-d / 50.0))
    wobble = ndimage.gaussian_filter(rng.normal(size=grid.shape), 8.0 / grid.spacing[0])
    dose *= 1.0 + 0.02 * wobble / max(float(wobble.std()), 1e-12)
    dose = ndimage.gaussian_filter(dose, 2.0 / np.asarray(grid.spacing))
    body = ndimage.gaussian_filter(mask_on_grid(anatomy.body, grid).astype(float), 1.0)
    dose *= body
    # Normalise so that the PTV median gets the prescription, as planners do.
    dose *= PRESCRIPTION_GY / float(np.median(dose[ptv]))
    return np.clip(dose, 0.0, None)


# ============================================================ substitute sets
@dataclass(frozen=True)
class _Profile:
    """How far one substitute set strays from the reference (all mm unless noted)."""

    shift_sd: float        # translation, per axis
    grow_sd: float         # anisotropic dilation/erosion, per axis
    wobble: float          # amplitude of the wavy boundary
    small_bias: float      # systematic over/under-contouring of small organs
    end_slice_p: float     # probability of an extra or missing end slice
    alias_p: float         # probability of a non-TG-263 ROI name
    missing_p: float       # probability (per patient) that one OAR is missing


_PROFILES = {
    "soars": _Profile(1.2, 1.0, 0.8, 0.8, 0.35, 0.0, 0.15),
    "reader": _Profile(2.2, 1.6, 1.2, 1.0, 0.55, 0.5, 0.25),
}
#: ``revised`` keeps this fraction of each soars error (the physician's edit
#: undoes the rest), and keeps soars' end-slice errors with this probability.
_REVISED_KEEP = 0.35
_REVISED_END_SLICE_KEEP = 0.3
_REVISED_ALIAS_P = 0.1


def _organ_geometry(mask: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre and half extent (mm, per LPS axis, at least 1 mm) and depth of a non-empty mask.

    The depth is the largest distance (mm) from a voxel centre inside to the
    nearest one outside, i.e. about the largest inscribed radius.
    """
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    first = [b.start for b in box]
    last = [b.stop - 1 for b in box]
    pts = grid.index_to_world(np.array([first, last], dtype=float))
    center = pts.mean(axis=0)
    half = np.maximum(np.abs(pts[1] - pts[0]) / 2.0, 1.0)
    depth = float(ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=grid.spacing).max())
    return center, half, depth


def _draw_error(name: str, profile: _Profile, rng: np.random.Generator) -> dict:
    """Random error of one organ in one set (mm; see :class:`Perturbed`)."""
    small = name in _SMALL_OARS
    ease = 0.5 if name in _EASY_OARS else 1.0
    # Small organs move less but are drawn systematically too big or too small.
    shift = np.clip(rng.normal(0.0, profile.shift_sd * ease * (0.5 if small else 1.0), 3), -3.0, 3.0)
    grow = np.clip(rng.normal(0.0, profile.grow_sd * ease * (0.4 if small else 1.0), 3), -3.0, 3.0)
    # Readers over-contour small organs more often than they under-contour them.
    sign = 1.0 if rng.random() < 0.65 else -1.0
    bias = float(sign * rng.uniform(0.5, 1.0) * profile.small_bias) if small else 0.0
    wavelengths = rng.uniform(15.0, 40.0, 3)
    directions = rng.normal(size=(3, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    waves = directions * (2 * np.pi / wavelengths)[:, None]
    end_slice = None
    if rng.random() < profile.end_slice_p:
        end_slice = (str(rng.choice(["superior", "inferior"])), str(rng.choice(["extra", "missing"])))
    return {
        "shift_mm": shift.tolist(), "grow_mm": grow.tolist(), "bias_mm": bias,
        "wobble_mm": profile.wobble * (0.5 if small else 1.0),
        "waves": waves.tolist(), "phases": rng.uniform(0, 2 * np.pi, 3).tolist(),
        "end_slice": end_slice,
    }


def _revised_error(soars: dict, rng: np.random.Generator) -> dict:
    """The soars error after a physician's edit: most of it undone."""
    keep = _REVISED_KEEP
    end = soars["end_slice"] if rng.random() < _REVISED_END_SLICE_KEEP else None
    return {
        **soars,
        "shift_mm": [keep * v for v in soars["shift_mm"]],
        "grow_mm": [keep * v for v in soars["grow_mm"]],
        "bias_mm": keep * soars["bias_mm"],
        "wobble_mm": keep * soars["wobble_mm"],
        "end_slice": end,
    }


def _apply_end_slice(mask: np.ndarray, end_slice: tuple[str, str] | None) -> np.ndarray:
    """Add or remove the organ's top (superior, +z) or bottom slice."""
    if end_slice is None:
        return mask
    filled = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(filled) < 3:  # too thin: a slice more or less would change its nature
        return mask
    where, what = end_slice
    k = filled[-1] if where == "superior" else filled[0]
    out = mask.copy()
    if what == "missing":
        out[k] = False
    else:
        k_new = k + 1 if where == "superior" else k - 1
        if 0 <= k_new < mask.shape[0]:
            out[k_new] = mask[k]
    return out


def _perturbed_mask(
    shape: Shape, reference: np.ndarray, error: dict, grid: Grid, inside_body: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Mask ``[k, j, i]`` of ``shape`` drawn with ``error`` (see :func:`_draw_error`).

    Growth is capped at a quarter of the organ's half extent per axis, the
    small-organ bias at a quarter of its depth (largest inscribed radius),
    and an error that would still leave less than 40 % or more than 250 % of
    the reference volume is halved until it does not: a lens or optic nerve
    is mis-drawn, not replaced by a dot or a blob.

    Returns
    -------
    mask : ndarray of bool
    effective : dict
        The error actually applied (``shift_mm``, ``grow_mm``, ``bias_mm``,
        ``wobble_mm``, ``end_slice``).
    """
    center, half, depth = _organ_geometry(reference, grid)
    cap = depth / 4.0
    effective = {
        "shift_mm": np.asarray(error["shift_mm"], dtype=float),
        "grow_mm": np.clip(error["grow_mm"], -0.25 * half, 0.25 * half),
        "bias_mm": float(np.clip(error["bias_mm"], -cap, cap)),
        "wobble_mm": float(error["wobble_mm"]),
    }
    waves = tuple(tuple(w) for w in error["waves"])
    for _ in range(4):
        p = Perturbed(
            shape, tuple(center), tuple(half), tuple(effective["shift_mm"]),
            tuple(effective["grow_mm"]), effective["bias_mm"], effective["wobble_mm"],
            waves, tuple(error["phases"]),
        )
        mask = _apply_end_slice(mask_on_grid(p, grid) & inside_body, error["end_slice"])
        if 0.4 <= mask.sum() / reference.sum() <= 2.5:
            break
        effective = {k: v * 0.5 for k, v in effective.items()}
    if not mask.any():  # an eroded organ must never vanish
        mask = reference
    effective = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in effective.items()}
    return mask, {**effective, "end_slice": error["end_slice"]}


def _roi_name(name: str, alias_p: float, rng: np.random.Generator) -> str:
    if alias_p and rng.random() < alias_p:
        return str(rng.choice(NAME_VARIANTS[name]))
    return name


# ==================================================================== writing
def _volume_cc(mask: np.ndarray, grid: Grid) -> float:
    return float(mask.sum()) * grid.voxel_volume_mm3 / 1000.0


def _structures(masks: dict[str, np.ndarray], names: dict[str, str], grid: Grid,
                kinds: dict[str, str], algorithm: str) -> list[Structure]:
    return [
        Structure(
            name=names[key], number=n + 1, contours=masks_to_contours(mask, grid),
            color=_COLORS.get(key), interpreted_type=kinds.get(key, "ORGAN"),
            generation_algorithm=algorithm,
        )
        for n, (key, mask) in enumerate(masks.items())
    ]


def make_patient(
    out_dir: str | os.PathLike,
    patient_id: str,
    seed: int,
    *,
    ct_spacing: tuple[float, float, float] = (2.5, 1.0, 1.0),
    dose_spacing: float = 2.5,
    overwrite: bool = False,
) -> PhantomCase:
    """Write one synthetic head-and-neck case as DICOM-RT.

    Parameters
    ----------
    out_dir : path
        Parent folder; the case goes to ``out_dir / patient_id`` with
        ``CT/``, ``RTDOSE.dcm``, ``RTSTRUCT_reference.dcm`` and
        ``RTSTRUCT_<set>.dcm`` for each substitute set.
    patient_id : str
        PatientID (also the folder name).
    seed : int
        Everything (anatomy, noise, errors, names, UIDs) follows from it.
    ct_spacing : tuple of float
        CT voxel size (slice, row, column) in mm; the CT covers 220 x 220 mm
        in-plane and 150 mm craniocaudally (HFS).
    dose_spacing : float
        Dose voxel size (mm, isotropic).
    overwrite : bool
        Replace existing files instead of raising OutputExistsError.

    Returns
    -------
    PhantomCase
    """
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / patient_id

    def uid(role: str) -> str:
        # Derived from recipe, patient and seed: reruns reproduce the files exactly.
        return str(new_uid(_RECIPE, patient_id, seed, role))

    common = dict(patient_id=patient_id, patient_name=f"Phantom^{patient_id}", study_uid=uid("study"),
                  frame_of_reference_uid=uid("frame"), overwrite=overwrite)

    anatomy = _build_anatomy(rng)
    ct_grid = _ct_grid(ct_spacing)
    ct = write_ct_series(_paint_ct(anatomy, ct_grid, rng), ct_grid, root / "CT", series_uid=uid("ct"),
                         **common)

    body_sdf = sdf_on_grid(anatomy.body, ct_grid)
    inside_body = body_sdf <= -1.0  # organs keep at least 1 mm of skin
    reference = {name: mask_on_grid(anatomy.oars[name], ct_grid) & inside_body for name in OAR_NAMES}
    truth: dict = {
        "seed": int(seed), "prescription_gy": PRESCRIPTION_GY,
        "ptv_side": "L" if anatomy.ptv_side > 0 else "R",
        "scale": anatomy.scale, "shift_mm": anatomy.shift.tolist(),
        "roi_names": {"reference": {n: n for n in OAR_NAMES}},
        "missing": {"reference": []}, "perturbations": {},
        "volumes_cc": {"reference": {n: _volume_cc(m, ct_grid) for n, m in reference.items()}},
    }

    ref_masks = {EXTERNAL_NAME: body_sdf <= 0.0, PTV_NAME: mask_on_grid(anatomy.ptv, ct_grid), **reference}
    ref_path = root / "RTSTRUCT_reference.dcm"
    kinds = {EXTERNAL_NAME: "EXTERNAL", PTV_NAME: "PTV"}
    write_rtstruct(
        _structures(ref_masks, {k: k for k in ref_masks}, ct_grid, kinds, "MANUAL"), ref_path,
        ct=ct, label="reference", series_uid=uid("rs-reference"), sop_instance_uid=uid("rs-reference-sop"),
        **common,
    )

    errors = _draw_set_errors(rng)
    set_paths = {}
    for set_name in SUBSTITUTE_SETS:
        masks, applied = _substitute_masks(anatomy, reference, errors[set_name], ct_grid, inside_body)
        names = {n: errors[set_name]["names"][n] for n in masks}
        set_paths[set_name] = root / f"RTSTRUCT_{set_name}.dcm"
        write_rtstruct(
            _structures(masks, names, ct_grid, {}, "AUTOMATIC" if set_name == "soars" else "MANUAL"),
            set_paths[set_name], ct=ct, label=set_name, series_uid=uid(f"rs-{set_name}"),
            sop_instance_uid=uid(f"rs-{set_name}-sop"), **common,
        )
        truth["roi_names"][set_name] = names
        truth["missing"][set_name] = list(errors[set_name]["missing"])
        truth["perturbations"][set_name] = applied
        truth["volumes_cc"][set_name] = {n: _volume_cc(m, ct_grid) for n, m in masks.items()}

    dose_grid = _dose_grid(ref_masks[EXTERNAL_NAME], ct_grid, rng, dose_spacing)
    dose = _dose(anatomy, dose_grid, rng)
    dose_path = root / "RTDOSE.dcm"
    write_rtdose(dose, dose_grid, dose_path, series_uid=uid("dose"), sop_instance_uid=uid("dose-sop"),
                 **common)
    truth["dose_max_gy"] = float(dose.max())

    return PhantomCase(
        patient_id=patient_id, root=root, ct_dir=root / "CT", rtdose=dose_path,
        reference=ref_path, sets=set_paths, study_uid=common["study_uid"],
        frame_of_reference_uid=common["frame_of_reference_uid"], truth=truth,
    )


def _substitute_masks(anatomy: _Anatomy, reference: dict, errors: dict, grid: Grid,
                      inside_body: np.ndarray) -> tuple[dict, dict]:
    """Masks of one substitute set (OARs it misses left out) and the errors applied."""
    masks, applied = {}, {}
    for name in OAR_NAMES:
        if name not in errors["missing"]:
            masks[name], applied[name] = _perturbed_mask(
                anatomy.oars[name], reference[name], errors["oars"][name], grid, inside_body
            )
    return masks, applied


def _draw_set_errors(rng: np.random.Generator) -> dict[str, dict]:
    """Per set: per-OAR errors, written ROI names and OARs left out."""
    out = {}
    for set_name in ("soars", "reader"):
        profile = _PROFILES[set_name]
        missing = [str(rng.choice(OAR_NAMES))] if rng.random() < profile.missing_p else []
        out[set_name] = {
            "oars": {n: _draw_error(n, profile, rng) for n in OAR_NAMES},
            "names": {n: _roi_name(n, profile.alias_p, rng) for n in OAR_NAMES},
            "missing": missing,
        }
    out["revised"] = {
        "oars": {n: _revised_error(out["soars"]["oars"][n], rng) for n in OAR_NAMES},
        "names": {n: _roi_name(n, _REVISED_ALIAS_P, rng) for n in OAR_NAMES},
        "missing": [],  # the physician restores whatever soars missed
    }
    return out


def make_cohort(
    out_dir: str | os.PathLike,
    n_patients: int = 5,
    seed: int = 0,
    progress: bool = True,
    *,
    ct_spacing: tuple[float, float, float] = (2.5, 1.0, 1.0),
    overwrite: bool = False,
) -> list[PhantomCase]:
    """Write ``n_patients`` synthetic cases ``PHANTOM_001``, ``PHANTOM_002``, ... under ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Parent folder of the case folders.
    n_patients : int
        Number of cases.
    seed : int
        Cohort seed; case ``i`` uses an independent seed derived from it.
    progress : bool
        Show a tqdm progress bar.
    ct_spacing : tuple of float
        CT voxel size (slice, row, column), mm.
    overwrite : bool
        Replace existing files instead of raising OutputExistsError.

    Returns
    -------
    list of PhantomCase
    """
    from tqdm.auto import tqdm

    seeds = np.random.SeedSequence(seed).generate_state(n_patients)
    ids = [f"PHANTOM_{i + 1:03d}" for i in range(n_patients)]
    return [
        make_patient(out_dir, pid, int(s), ct_spacing=ct_spacing, overwrite=overwrite)
        for pid, s in tqdm(list(zip(ids, seeds)), desc="phantom cohort", disable=not progress)
    ]
