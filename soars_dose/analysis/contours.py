"""Contour accuracy of every substitute set against the reference, per OAR.

Both structures of a pair are rasterised with the sub-voxel kernel
(:mod:`soars_dose.rasterize`) onto one common grid and binarised at 50 %
occupancy; the metrics of :mod:`soars_dose.analysis.metrics` are computed
on those masks with the grid's true (anisotropic) spacing.

The common grid is

* the CT grid when the case has a CT (cropped to the pair's bounding box
  plus a margin): the grid the contours were drawn on;
* otherwise a *supersampled* grid over both structures: the dose grid's
  orientation, ``fine_mm`` (default 0.5 mm) in-plane, and the nominal
  contour spacing along the plane normal with slices on the reference's
  contour planes, so every contour plane is one slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..case import DUPLICATE, REFERENCE, Case, RoiOutcome
from ..errors import MemoryLimitError, SoarsDoseError
from ..grid import Grid
from ..names import AliasTable, MatchedSets, match_sets
from ..rasterize import contour_planes, occupancy, sample_structure
from ..structures import Structure
from . import metrics as M

#: Voxels of margin around the pair's bounding box.
MARGIN = 2


def _nominal(case: Case, set_name: str) -> float:
    """The set's end-cap spacing (the DVH's, :meth:`Case.nominal_spacing_mm`), else the grid's."""
    n = case.nominal_spacing_mm(set_name)
    return n if n is not None else float(case.dose.grid.spacing[0])


def _bbox_index(structures: list[Structure], grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    pts = np.vstack([c for s in structures for c in s.contours])
    idx = grid.world_to_index(pts)
    return idx.min(axis=0), idx.max(axis=0)


def ct_pair_grid(ct_grid: Grid, structures: list[Structure], nominal_mm: float) -> Grid:
    """The CT grid cropped to the structures' bounding box (+ margin and half a slice cap)."""
    lo, hi = _bbox_index(structures, ct_grid)
    pad = MARGIN + np.ceil(0.5 * nominal_mm / np.asarray(ct_grid.spacing))
    start = np.clip(np.floor(lo - pad), 0, None).astype(int)
    stop = np.minimum(np.ceil(hi + pad) + 1, np.asarray(ct_grid.shape)).astype(int)
    return ct_grid.crop(start, stop)


def supersampled_pair_grid(ref: Structure, structures: list[Structure], dose_grid: Grid,
                           nominal_mm: float, fine_mm: float = 0.5) -> Grid:
    """A fine grid over the structures, slices on the reference's contour planes."""
    axis, planes = contour_planes(ref, dose_grid)
    others = [a for a in range(3) if a != axis]
    spacing = np.empty(3)
    spacing[axis] = nominal_mm
    spacing[others] = fine_mm
    # world bounding box projected on the dose grid's axes
    pts = np.vstack([c for s in structures for c in s.contours])
    proj = pts @ dose_grid.direction.T  # coordinates along each grid direction (mm)
    lo = proj.min(axis=0) - (MARGIN + 0.5) * spacing
    hi = proj.max(axis=0) + (MARGIN + 0.5) * spacing
    # put a slice on a reference contour plane
    plane0 = float(np.dot(dose_grid.index_to_world(np.eye(3)[axis] * planes[0][0]),
                          dose_grid.direction[axis]))
    lo[axis] = plane0 - np.ceil((plane0 - lo[axis]) / spacing[axis]) * spacing[axis]
    shape = np.floor((hi - lo) / spacing).astype(int) + 1
    origin = lo @ dose_grid.direction  # back to LPS
    return Grid(tuple(shape), tuple(spacing), tuple(origin), dose_grid.direction)


def _check_sizes(members: list[tuple[str, Structure]], grid: Grid, case: Case,
                 oar: str) -> None:
    """Refuse (MemoryLimitError) a common grid, or a rasterisation on it, that is too large."""
    from ..dose.precheck import check_grid_size, check_sampling_size

    for name, st in members:
        src = str(case.sets[name].source or name)
        check_sampling_size(st, grid, 1, _nominal(case, name), source=src,
                            grid_name="contour-metric grid")
    sets = ", ".join(repr(n) for n, _ in members[1:]) or "no set"
    check_grid_size(grid, what=f"contour metrics of {oar} ({sets} vs {REFERENCE!r})",
                    source=str(case.sets[REFERENCE].source or REFERENCE))


def mask(structure: Structure, grid: Grid, nominal_mm: float) -> np.ndarray:
    """Binary mask (occupancy >= 50 %) of ``structure`` on ``grid``.

    Exact coverage per pixel needs no supersampling for a 50 % occupancy
    mask; ``nominal_mm`` gives the end caps (the set's, as for its DVH).
    """
    return occupancy(sample_structure(structure, grid, factor=1, allow_odd=True,
                                      nominal_spacing_mm=nominal_mm)) >= 0.5


@dataclass
class _OARGrid:
    """The common grid of one OAR and the reference's mask on it."""

    grid: Grid
    kind: str
    ref_mask: np.ndarray


def _common_grid(case: Case, ref: Structure, members: list[tuple[str, Structure]], oar: str,
                 fine_mm: float) -> _OARGrid:
    """One grid over the reference and ``members`` (set, structure); the reference rasterised once."""
    structures = [ref] + [st for _, st in members]
    nominal = _nominal(case, REFERENCE)
    if case.ct is not None:
        grid, kind = ct_pair_grid(case.ct.grid, structures, nominal), "ct"
    else:
        grid = supersampled_pair_grid(ref, structures, case.dose.grid, nominal, fine_mm)
        kind = "supersampled"
    _check_sizes([(REFERENCE, ref)] + members, grid, case, oar)
    return _OARGrid(grid, kind, mask(ref, grid, nominal))


def contour_metrics_for_case(
    case: Case,
    *,
    aliases: AliasTable | None = None,
    tolerances: dict | None = None,
    fine_mm: float = 0.5,
    matched_sets: MatchedSets | None = None,
) -> pd.DataFrame:
    """Contour metrics of every (substitute set, OAR) against the reference.

    Returns
    -------
    DataFrame
        One row per (set, roi) with ``patient, set, roi, status, grid,
        spacing_mm`` and the keys of
        :func:`soars_dose.analysis.metrics.contour_metrics`. ``status``:
        ``ok``; ``missing_in_set`` (the set has no such OAR, or an empty
        one: Dice 0, surface Dice 0, distances inf); ``no_reference`` (only
        the substitute has it: not evaluated); ``duplicate`` or ``error``
        (not evaluated, see ``message``).
    """
    ms = matched_sets or match_sets(case, aliases)
    tol_table = tolerances if tolerances is not None else M.load_tolerances()
    rows = []
    ref_rois = ms.rois[REFERENCE]
    subs = [n for n in case.sets if n != REFERENCE]
    shared: dict[str, _OARGrid | None] = {}  # per OAR: one grid for every set, or None

    def grid_of(oar: str, ref: Structure, set_name: str, sub_st: Structure | None) -> _OARGrid:
        """The OAR's shared grid; a grid of this pair alone when the shared one is too large."""
        if oar not in shared:
            members = [(n, st) for n in subs
                       if isinstance(st := ms.rois[n].get(oar), Structure)]
            try:
                shared[oar] = _common_grid(case, ref, members, oar, fine_mm)
            except MemoryLimitError:
                # one far-off substitute must not make the OAR too large for every set
                shared[oar] = None
        if shared[oar] is not None:
            return shared[oar]
        pair = [(set_name, sub_st)] if sub_st is not None else []
        return _common_grid(case, ref, pair, oar, fine_mm)

    for set_name in subs:
        sub_rois = ms.rois[set_name]
        for oar in ms.order:
            row = {"patient": case.patient, "set": set_name, "roi": oar}
            ref = ref_rois.get(oar)
            sub = sub_rois.get(oar)
            if ref is None or isinstance(ref, RoiOutcome):
                row.update(status="no_reference" if ref is None else ref.status,
                           message="not evaluated: no usable reference ROI")
                if sub is None:
                    continue
                rows.append(row)
                continue
            if isinstance(sub, RoiOutcome) and sub.status == DUPLICATE:
                row.update(status=DUPLICATE, message=sub.message)
                rows.append(row)
                continue
            sub_st = sub if isinstance(sub, Structure) else None  # None: missing or empty
            tol = M.tolerance_for(oar, tol_table)
            try:
                g = grid_of(oar, ref, set_name, sub_st)
                m_sub = (mask(sub_st, g.grid, _nominal(case, set_name)) if sub_st is not None
                         else np.zeros_like(g.ref_mask))
                res = M.contour_metrics(g.ref_mask, m_sub, g.grid.spacing, tol)
            except SoarsDoseError as exc:
                row.update(status="too_large" if isinstance(exc, MemoryLimitError) else "error",
                           message=str(exc))
                rows.append(row)
                continue
            row.update(res)
            row.update(grid=g.kind, spacing_mm="x".join(f"{v:.3g}" for v in g.grid.spacing),
                       message="" if sub_st is not None else f"set {set_name!r} has no usable ROI for {oar}")
            rows.append(row)
    return pd.DataFrame(rows)
