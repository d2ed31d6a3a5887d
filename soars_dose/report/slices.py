"""What the slice viewer shows: CT, dose and every set's OAR masks on one cropped grid.

The viewer (:mod:`soars_dose.report.slice_viewer`) draws axial, coronal and
sagittal slices of the CT with the dose and the contours of the chosen OAR
in every set. This module makes its data from a :class:`~soars_dose.case.Case`:

* the **display grid** is the CT grid, cropped to the OARs' region (their
  bounding box over all sets plus a margin) and put in LPS order: array
  axes ``[k, j, i]`` run along +z (inferior to superior), +y (anterior to
  posterior) and +x (patient right to left). When the crop holds more
  than ``max_voxels`` voxels, it is coarsened in-plane by an integer
  stride (CT numbers averaged over each block);
* the **masks** are rasterised from the contours with the same code and
  the same end caps (the set's nominal plane spacing) as the DVHs and the
  contour metrics (:func:`soars_dose.analysis.contours.mask`, occupancy
  >= 50 %). On the uncoarsened CT grid they are the contour metrics'
  masks voxel for voxel;
* the **dose** is the RTDOSE interpolated trilinearly at the display
  voxel centres (:meth:`soars_dose.dosegrid.DoseGrid.interpolate`), stored
  in cGy; points outside the dose grid are marked :data:`DOSE_OUTSIDE`.

:func:`to_npz` / :func:`from_npz` keep it beside a patient's tables
(``slices.npz``) so that a cohort report can show it without the DICOM
files.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..case import COMPUTED, REFERENCE, Case
from ..errors import GeometryError
from ..grid import Grid
from ..structures import Structure

#: Default cap on the display grid's voxels (a 1.5 M-voxel crop stays under
#: the viewer's 2 MB budget per patient; measured in the README).
MAX_VOXELS = 1_500_000
#: Margin (mm) around the OARs' bounding box.
MARGIN_MM = 15.0
#: Stored dose value of a point outside the RTDOSE grid (cGy are stored below it).
DOSE_OUTSIDE = 65535
#: Most bytes of the compressed CT and dose on a page (base64 makes 4/3 of it:
#: with the masks the viewer stays under 2 MB per patient).
PAGE_BUDGET_BYTES = 1_400_000
#: CT number -> page code (uint8), piecewise linear: 20 HU per code in air and
#: lung, 3 HU in soft tissue (-200 to 300 HU), 58 HU in bone.
HU_KNOTS = ((-1024.0, 0.0), (-200.0, 40.0), (300.0, 207.0), (3071.0, 255.0))
#: Dose step of the page (Gy): the readout and the isodose lines; the tables
#: hold the computed values.
PAGE_DOSE_STEP_GY = 0.1
#: Version of the stored layout (``slices.npz``).
FORMAT = 1


@dataclass
class SliceData:
    """The viewer's data for one patient.

    Attributes
    ----------
    grid : Grid
        Display grid, identity LPS order (axis 0 = +z, 1 = +y, 2 = +x).
    hu : ndarray of int16, shape ``grid.shape``
        CT numbers (HU), ``[k, j, i]``.
    dose_cgy : ndarray of uint16, shape ``grid.shape``
        Dose in cGy (rounded); :data:`DOSE_OUTSIDE` outside the dose grid.
    masks : dict of (oar, set) -> (offset, mask)
        ``offset`` (3 ints) of the mask's bounding box on ``grid`` and the
        boolean mask inside it.
    centroid : dict of oar -> list of 3 int
        Display index of the OAR's centroid (the reference's when it has
        the OAR, else the first set's).
    largest_difference : dict of oar -> list of 3 int
        Per axis, the slice where the sets' masks disagree on the most
        voxels (the centroid's slice where they agree everywhere).
    stride : int
        In-plane coarsening of the CT grid (1: the CT's own pixels).
    sets, oars : list of str
        In display order (reference first; OARs as in the tables).
    notes : list of str
    """

    grid: Grid
    hu: np.ndarray
    dose_cgy: np.ndarray
    masks: dict[tuple[str, str], tuple[tuple[int, int, int], np.ndarray]]
    centroid: dict[str, list[int]]
    largest_difference: dict[str, list[int]]
    stride: int = 1
    sets: list[str] = field(default_factory=list)
    oars: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------- building
def _canonical(hu: np.ndarray, grid: Grid) -> tuple[np.ndarray, Grid]:
    """``hu`` and ``grid`` turned into identity LPS order (a signed axis permutation)."""
    axes, signs = [], []
    for p in (2, 1, 0):  # z, y, x
        a = next(a for a in range(3) if grid.patient_axis(a)[0] == p)
        axes.append(a)
        signs.append(grid.patient_axis(a)[1])
    out = np.transpose(hu, axes)
    first = np.zeros(3)
    for d, (a, s) in enumerate(zip(axes, signs)):
        if s < 0:
            out = np.flip(out, axis=d)
            first[a] = grid.shape[a] - 1
    origin = grid.index_to_world(first)
    spacing = tuple(grid.spacing[a] for a in axes)
    return np.ascontiguousarray(out), Grid(out.shape, spacing, tuple(origin))


def _crop_box(structures, grid: Grid, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    pts = np.vstack([c for st in structures for c in st.contours])
    lo = grid.world_to_index(pts.min(axis=0) - margin_mm)
    hi = grid.world_to_index(pts.max(axis=0) + margin_mm)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    start = np.clip(np.floor(lo), 0, np.asarray(grid.shape) - 1).astype(int)
    stop = np.clip(np.ceil(hi) + 1, start + 1, np.asarray(grid.shape)).astype(int)
    return start, stop


def _coarsen(hu: np.ndarray, grid: Grid, stride: int) -> tuple[np.ndarray, Grid]:
    """Average ``stride x stride`` in-plane blocks (whole blocks only)."""
    if stride == 1:
        return hu, grid
    nz, ny, nx = hu.shape
    my, mx = ny // stride, nx // stride
    blocks = hu[:, :my * stride, :mx * stride].reshape(nz, my, stride, mx, stride)
    out = blocks.mean(axis=(2, 4), dtype=np.float64)
    dz, dy, dx = grid.spacing
    # the coarse voxel's centre is the centre of its block of fine voxels
    origin = grid.index_to_world(np.array([0.0, (stride - 1) / 2, (stride - 1) / 2]))
    return out, Grid(out.shape, (dz, dy * stride, dx * stride), tuple(origin))


def _largest_difference(masks: list[tuple[tuple[int, int, int], np.ndarray]],
                        shape: tuple[int, int, int], fallback: list[int]) -> list[int]:
    """Per axis, the slice with most voxels on which the masks disagree."""
    if len(masks) < 2:
        return list(fallback)
    count = np.zeros(shape, dtype=np.int16)
    for (k, j, i), m in masks:
        count[k:k + m.shape[0], j:j + m.shape[1], i:i + m.shape[2]] += m
    disagree = (count > 0) & (count < len(masks))
    out = []
    for axis in range(3):
        per = disagree.sum(axis=tuple(a for a in range(3) if a != axis))
        out.append(int(np.argmax(per)) if per.max() > 0 else int(fallback[axis]))
    return out


def _dose_on(case: Case, grid: Grid) -> np.ndarray:
    """The RTDOSE at ``grid``'s voxel centres, cGy (uint16; :data:`DOSE_OUTSIDE` outside)."""
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    world = grid.index_to_world(np.stack([kk.ravel(), jj.ravel(), ii.ravel()], axis=1))
    didx = case.dose.grid.world_to_index(world)
    inside = case.dose.inside(didx)
    dose = np.full(world.shape[0], DOSE_OUTSIDE, dtype=np.uint16)
    if inside.any():
        d = case.dose.interpolate(didx[inside])
        dose[inside] = np.clip(np.rint(d * 100.0), 0, DOSE_OUTSIDE - 1).astype(np.uint16)
    return dose.reshape(grid.shape)


def build_slice_data(case: Case, stats: pd.DataFrame, *, margin_mm: float = MARGIN_MM,
                     max_voxels: int = MAX_VOXELS, budget_bytes: int = PAGE_BUDGET_BYTES,
                     hu: "np.ndarray | None" = None) -> SliceData | None:
    """The viewer's data for ``case``; None when it has no CT or no evaluated OAR.

    Parameters
    ----------
    case : Case
        With its CT (``case.ct``); the CT pixels are read here unless ``hu``
        is given.
    stats : DataFrame
        The audit's ``stats`` (``set``, ``roi``, ``roi_original``,
        ``status``): the OARs and the ROI of each set that the DVHs used.
    margin_mm : float
        Margin around the OARs' bounding box (mm).
    max_voxels : int
        Above this many voxels the crop is coarsened in-plane (integer stride).
    budget_bytes : int
        Most bytes the page's compressed CT and dose may take
        (:func:`page_block`); the stride grows until they fit.
    hu : ndarray, optional
        CT numbers on ``case.ct.grid`` (when already read).

    Raises
    ------
    GeometryError
        The CT grid is oblique.
    """
    from ..analysis.contours import mask as oar_mask

    if case.ct is None:
        return None
    ok = stats[stats["status"].isin(COMPUTED)] if len(stats) else stats
    if not len(ok):
        return None
    sets = [s for s in dict.fromkeys(ok["set"]) if s in case.sets]
    members: dict[tuple[str, str], Structure] = {}
    for rec in ok.itertuples(index=False):
        if rec.set not in case.sets:
            continue
        names = case.sets[rec.set].names()
        original = getattr(rec, "roi_original", rec.roi)
        name = original if original in names else rec.roi if rec.roi in names else None
        if name is not None and not case.sets[rec.set][name].is_empty:
            members[(rec.roi, rec.set)] = case.sets[rec.set][name]
    if not members:
        return None
    grid0 = case.ct.grid
    if not grid0.is_axis_aligned():
        raise GeometryError(f"{case.ct.paths[0]}: the CT grid is oblique; the slice viewer "
                            "needs an axis-aligned CT")
    start, stop = _crop_box(list(members.values()), grid0, margin_mm)
    if hu is None:  # only the slices of the crop are read
        cropped = case.ct.load_hu(slice(start[0], stop[0]))[:, start[1]:stop[1],
                                                           start[2]:stop[2]]
    else:
        cropped = hu[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]
    hu_full, grid_full = _canonical(cropped, grid0.crop(start, stop))
    n_slices = grid_full.shape[0]
    stride = 1
    while True:
        can_coarsen = min(grid_full.shape[1], grid_full.shape[2]) // (stride + 1) >= 8
        big = n_slices * (grid_full.shape[1] // stride) * (grid_full.shape[2] // stride)
        if big > max_voxels and can_coarsen:
            stride += 1
            continue
        hu_c, grid = _coarsen(hu_full, grid_full, stride)
        hu16 = np.clip(np.rint(hu_c), -32768, 32767).astype(np.int16)
        dose = _dose_on(case, grid)
        size = len(gzip.compress(hu_codes(hu16).tobytes() + dose_block(dose), 6, mtime=0))
        if size > budget_bytes and can_coarsen:
            stride += 1
            continue
        break

    masks: dict[tuple[str, str], tuple[tuple[int, int, int], np.ndarray]] = {}
    for (oar, set_name), st in members.items():
        nominal = case.nominal_spacing_mm(set_name)
        nominal = nominal if nominal is not None else float(case.dose.grid.spacing[0])
        # rasterised on the part of the lattice around the structure (the same voxels,
        # far less work than the whole crop)
        pts = np.vstack(st.contours)
        idx = grid.world_to_index(pts)
        pad = 2 + np.ceil(0.5 * nominal / np.asarray(grid.spacing))
        start = np.clip(np.floor(idx.min(axis=0) - pad), 0, None).astype(int)
        stop = np.minimum(np.ceil(idx.max(axis=0) + pad) + 1, grid.shape).astype(int)
        if np.any(stop <= start):
            continue
        m = oar_mask(st, grid.crop(start, stop), nominal)
        nz = np.argwhere(m)
        if not len(nz):
            continue
        lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
        masks[(oar, set_name)] = (tuple(int(v) for v in lo + start),  # type: ignore[misc]
                                  m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].copy())
    oars = [o for o in dict.fromkeys(ok["roi"]) if any((o, s) in masks for s in sets)]
    centroid, largest = {}, {}
    for oar in oars:
        own = [(s, masks[(oar, s)]) for s in sets if (oar, s) in masks]
        first = next((v for s, v in own if s == REFERENCE), own[0][1])
        (k, j, i), m = first
        c = np.argwhere(m).mean(axis=0) + np.array([k, j, i])
        centroid[oar] = [int(v) for v in np.rint(c)]
        largest[oar] = _largest_difference([v for _, v in own], grid.shape, centroid[oar])
    notes = []
    if stride > 1:
        notes.append(f"CT shown at {stride} x its pixel size in-plane, to keep the page "
                     "small; the contours are rasterised on that coarser grid")
    return SliceData(grid, hu16, dose, masks, centroid, largest, stride, sets, oars, notes)


# ------------------------------------------------------------ page encoding
def hu_codes(hu: np.ndarray) -> np.ndarray:
    """CT numbers as the page's uint8 codes (:data:`HU_KNOTS`)."""
    h, c = np.array(HU_KNOTS).T
    return np.rint(np.interp(np.asarray(hu, float).ravel(), h, c)).astype(np.uint8)


def hu_from_codes(codes: np.ndarray) -> np.ndarray:
    """The CT number (HU) a code stands for (the page's lookup table)."""
    h, c = np.array(HU_KNOTS).T
    return np.interp(np.asarray(codes, float), c, h)


def dose_block(dose_cgy: np.ndarray) -> bytes:
    """Dose for the page: int16 steps of :data:`PAGE_DOSE_STEP_GY` (-1 outside the grid),
    differenced along the flat array and split into low and high bytes (both
    compress far better than the values)."""
    d = np.asarray(dose_cgy).ravel()
    v = np.where(d == DOSE_OUTSIDE, -1,
                 np.rint(d / (100 * PAGE_DOSE_STEP_GY))).astype("<i2")
    delta = np.diff(v, prepend=np.int16(0)).astype("<i2")
    b = delta.view(np.uint8).reshape(-1, 2)
    return b[:, 0].tobytes() + b[:, 1].tobytes()


def page_block(data: SliceData) -> bytes:
    """The viewer's binary block: HU codes, :func:`dose_block`, each mask's packed bits."""
    parts = [hu_codes(data.hu).tobytes(), dose_block(data.dose_cgy)]
    parts += [np.packbits(m.ravel()).tobytes() for _, m in data.masks.values()]
    return b"".join(parts)


# ------------------------------------------------------------------ storing
def header(data: SliceData) -> dict:
    """The JSON-ready description of ``data``: grid, sets, OARs, jump slices, mask boxes.

    Stored in ``slices.npz`` and, with the display settings, given to the page.
    """
    g = data.grid
    return {"format": FORMAT, "shape": list(g.shape), "spacing": list(g.spacing),
            "origin": list(g.origin), "stride": data.stride, "sets": data.sets,
            "oars": data.oars, "notes": data.notes, "centroid": data.centroid,
            "largest_difference": data.largest_difference,
            "masks": [[oar, s, list(off), list(m.shape)]
                      for (oar, s), (off, m) in data.masks.items()]}


def to_npz(data: SliceData) -> bytes:
    """``slices.npz`` bytes (compressed; masks bit-packed)."""
    arrays = {"hu": data.hu, "dose_cgy": data.dose_cgy,
              "header": np.frombuffer(json.dumps(header(data)).encode("utf-8"), dtype=np.uint8)}
    for n, (_, m) in enumerate(data.masks.values()):
        arrays[f"mask{n}"] = np.packbits(m.ravel())
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def from_npz(source) -> SliceData:
    """Read what :func:`to_npz` wrote (a path or a file object).

    Raises
    ------
    ValueError
        The file is not a ``slices.npz`` of this layout.
    """
    try:
        with np.load(source, allow_pickle=False) as z:
            head = json.loads(bytes(z["header"]).decode("utf-8"))
            if head.get("format") != FORMAT:
                raise ValueError(f"layout {head.get('format')!r}, expected {FORMAT}")
            masks = {}
            for n, (oar, s, off, shape) in enumerate(head["masks"]):
                bits = np.unpackbits(z[f"mask{n}"])[:int(np.prod(shape))]
                masks[(oar, s)] = (tuple(off), bits.reshape(shape).astype(bool))
            grid = Grid(tuple(head["shape"]), tuple(head["spacing"]), tuple(head["origin"]))
            data = SliceData(grid, z["hu"], z["dose_cgy"], masks, head["centroid"],
                             head["largest_difference"], head["stride"], head["sets"],
                             head["oars"], head["notes"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, GeometryError) as exc:
        raise ValueError(f"not a readable slices.npz ({type(exc).__name__}: {exc})") from exc
    if data.hu.shape != grid.shape or data.dose_cgy.shape != grid.shape:
        raise ValueError("not a readable slices.npz (array shapes differ from its grid)")
    return data


def slice_data_or_note(case: Case, stats: pd.DataFrame, **kwargs) -> tuple[SliceData | None, str]:
    """:func:`build_slice_data`, or None and why there is no viewer (never raises for bad input).

    A CT that cannot be read or shown costs the page its viewer, not the
    audit: the reason is returned (and shown on the page) instead.
    """
    from ..errors import SoarsDoseError

    if case.ct is None:
        return None, ("No CT was given (--ct, or the ct column of a cohort manifest): the slice "
                      "viewer needs the planning CT.")
    try:
        data = build_slice_data(case, stats, **kwargs)
    except (SoarsDoseError, MemoryError) as exc:
        return None, f"No slice viewer: {exc}"
    except Exception as exc:  # the viewer is an extra: a bug in it must not cost the audit
        return None, (f"No slice viewer: internal error ({type(exc).__name__}: {exc}); the "
                      "numbers are unaffected. Please report it.")
    if data is None:
        return None, "No slice viewer: no OAR was evaluated on the dose grid."
    return data, ""
