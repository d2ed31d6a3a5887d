"""A 3-D dose distribution on a fixed :class:`~soars_dose.grid.Grid`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..grid import Grid


@dataclass
class DoseGrid:
    """Absolute dose in Gy at the voxel centres of ``grid``.

    Attributes
    ----------
    grid : Grid
        The RTDOSE grid (arrays ``[k, j, i]``, LPS mm).
    values : ndarray of float32
        Dose in Gy, shape ``grid.shape``.
    summation_type : str or None
        DoseSummationType (PLAN, BEAM, FRACTION, ...), or a description of
        the sum when several files were added.
    dose_type : str or None
        DoseType (PHYSICAL, EFFECTIVE, ERROR).
    frame_of_reference_uid : str or None
    sources : list of Path
        File(s) the dose was read from.
    sop_instance_uids : list of str
    notes : list of str
        How units were converted, what was summed, ...
    """

    grid: Grid
    values: np.ndarray
    summation_type: str | None = None
    dose_type: str | None = None
    frame_of_reference_uid: str | None = None
    sources: list[Path] = field(default_factory=list)
    sop_instance_uids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        if self.values.shape != self.grid.shape:
            raise ValueError(f"dose shape {self.values.shape} != grid shape {self.grid.shape}")

    @property
    def max_gy(self) -> float:
        """Largest voxel dose (Gy)."""
        return float(self.values.max())

    def inside(self, index: np.ndarray) -> np.ndarray:
        """Mask of continuous indices ``[..., (k, j, i)]`` inside the voxel boxes of the grid."""
        index = np.asarray(index)
        hi = np.asarray(self.grid.shape) - 0.5
        return np.all((index >= -0.5 - 1e-9) & (index <= hi + 1e-9), axis=-1)

    def interpolate(self, index: np.ndarray, gradient: bool = False):
        """Trilinear dose at continuous indices, optionally with its gradient.

        Parameters
        ----------
        index : ndarray, shape (n, 3)
            Continuous ``(k, j, i)`` indices on :attr:`grid`. Between the
            outermost voxel centre and the outer voxel face (half a voxel) the
            dose is held constant (nearest face value); beyond that the
            caller must exclude points (see :meth:`inside`).
        gradient : bool
            Also return d(dose)/d(index) per axis.

        Returns
        -------
        dose : ndarray (n,), float64, Gy
        grad : ndarray (n, 3), Gy per index step (only when ``gradient``)
        """
        idx = np.asarray(index, dtype=np.float64)
        shape = np.asarray(self.grid.shape)
        c = np.clip(idx, 0.0, shape - 1.0)
        i0 = np.minimum(np.floor(c).astype(np.intp), np.maximum(shape - 2, 0))
        f = c - i0
        # A single-plane axis has no neighbour: interpolation degenerates to it.
        single = shape == 1
        f[:, single] = 0.0
        i1 = np.where(single, i0, i0 + 1)
        v = self.values
        k0, j0, x0 = i0[:, 0], i0[:, 1], i0[:, 2]
        k1, j1, x1 = i1[:, 0], i1[:, 1], i1[:, 2]
        c000 = v[k0, j0, x0]; c001 = v[k0, j0, x1]
        c010 = v[k0, j1, x0]; c011 = v[k0, j1, x1]
        c100 = v[k1, j0, x0]; c101 = v[k1, j0, x1]
        c110 = v[k1, j1, x0]; c111 = v[k1, j1, x1]
        fk, fj, fi = f[:, 0], f[:, 1], f[:, 2]
        c00 = c000 + (c001 - c000) * fi
        c01 = c010 + (c011 - c010) * fi
        c10 = c100 + (c101 - c100) * fi
        c11 = c110 + (c111 - c110) * fi
        c0 = c00 + (c01 - c00) * fj
        c1 = c10 + (c11 - c10) * fj
        dose = c0 + (c1 - c0) * fk
        if not gradient:
            return dose
        g = np.empty((idx.shape[0], 3))
        g[:, 0] = c1 - c0
        g[:, 1] = (1 - fk) * (c01 - c00) + fk * (c11 - c10)
        d0 = (1 - fj) * (c001 - c000) + fj * (c011 - c010)
        d1 = (1 - fj) * (c101 - c100) + fj * (c111 - c110)
        g[:, 2] = (1 - fk) * d0 + fk * d1
        # Outside the centre-to-centre hull the dose is held constant.
        outside = (idx < 0.0) | (idx > shape - 1.0) | single
        g[outside] = 0.0
        return dose, g
