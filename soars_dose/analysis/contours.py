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

import numpy as np
import pandas as pd

from ..case import DUPLICATE, REFERENCE, Case, RoiOutcome
from ..errors import MemoryLimitError, SoarsDoseError
from ..grid import Grid
from ..names import AliasTable, MatchedSets, match_sets
from ..rasterize import contour_planes, nominal_spacing_mm, occupancy, sample_structure
from ..structures import Structure
from . import metrics as M

#: Voxels of margin around the pair's bounding box.
MARGIN = 2


def _nominal(case: Case, set_name: str) -> float:
    if case.ct is not None:
        return case.ct.slice_thickness_mm
    n = nominal_spacing_mm(case.sets[set_name].structures, case.dose.grid)
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


def _check_pair_size(pair: list[Structure], grid: Grid, nominal: float, case: Case,
                     set_name: str, oar: str) -> None:
    """Refuse (MemoryLimitError) a pair whose common grid or rasterisation is too large."""
    from ..dose.precheck import check_grid_size, check_sampling_size

    names = [REFERENCE, set_name]
    for st, name in zip(pair, names):
        src = str(case.sets[name].source or name)
        check_sampling_size(st, grid, 1, nominal, source=src, grid_name="contour-metric grid")
    check_grid_size(grid, what=f"contour metrics of {oar} ({set_name!r} vs {REFERENCE!r})",
                    source=str(case.sets[REFERENCE].source or REFERENCE))


def pair_masks(ref: Structure, sub: Structure | None, grid: Grid,
               nominal_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary masks (occupancy >= 50 %) of both structures on ``grid``; empty when ``sub`` is None."""
    # exact coverage per pixel needs no supersampling for a 50 % occupancy mask
    m_ref = occupancy(sample_structure(ref, grid, factor=1, allow_odd=True,
                                       nominal_spacing_mm=nominal_mm)) >= 0.5
    if sub is None:
        return m_ref, np.zeros_like(m_ref)
    m_sub = occupancy(sample_structure(sub, grid, factor=1, allow_odd=True,
                                       nominal_spacing_mm=nominal_mm)) >= 0.5
    return m_ref, m_sub


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
    for set_name in case.sets:
        if set_name == REFERENCE:
            continue
        sub_rois = ms.rois[set_name]
        nominal = _nominal(case, REFERENCE)
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
                pair = [ref] + ([sub_st] if sub_st is not None else [])
                if case.ct is not None:
                    grid, kind = ct_pair_grid(case.ct.grid, pair, nominal), "ct"
                else:
                    grid = supersampled_pair_grid(ref, pair, case.dose.grid, nominal, fine_mm)
                    kind = "supersampled"
                _check_pair_size(pair, grid, nominal, case, set_name, oar)
                m_ref, m_sub = pair_masks(ref, sub_st, grid, nominal)
                res = M.contour_metrics(m_ref, m_sub, grid.spacing, tol)
            except SoarsDoseError as exc:
                row.update(status="too_large" if isinstance(exc, MemoryLimitError) else "error",
                           message=str(exc))
                rows.append(row)
                continue
            row.update(res)
            row.update(grid=kind, spacing_mm="x".join(f"{v:.3g}" for v in grid.spacing),
                       message="" if sub_st is not None else f"set {set_name!r} has no usable ROI for {oar}")
            rows.append(row)
    return pd.DataFrame(rows)
