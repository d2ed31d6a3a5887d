"""A 3-D dose distribution on a fixed :class:`~soars_dose.grid.Grid`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .grid import Grid

#: Points interpolated per block.
CHUNK = 1 << 15


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
    patient_id : str
        PatientID of the (first) RTDOSE file, ``""`` when absent.
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
    patient_id: str = ""

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

    def interpolate(self, index: np.ndarray, gradient: bool = False, method: str = "linear"):
        """Dose at continuous indices (trilinear or nearest voxel), optionally with its gradient.

        Parameters
        ----------
        index : ndarray, shape (n, 3)
            Continuous ``(k, j, i)`` indices on :attr:`grid`. Between the
            outermost voxel centre and the outer voxel face (half a voxel) the
            dose is held constant (nearest face value); beyond that the
            caller must exclude points (see :meth:`inside`).
        gradient : bool
            Also return d(dose)/d(index) per axis.
        method : {"linear", "nearest"}
            ``"linear"`` (default): trilinear interpolation between voxel
            centres. ``"nearest"``: the value of the voxel containing the
            point (dose constant per voxel, gradient 0), the convention of
            voxel-based tools.

        Returns
        -------
        dose : ndarray (n,), float64, Gy
        grad : ndarray (n, 3), Gy per index step (only when ``gradient``)
        """
        idx = np.asarray(index, dtype=np.float64)
        n = idx.shape[0]
        if method == "nearest":
            top = np.asarray(self.grid.shape) - 1
            vox = np.clip(np.floor(idx + 0.5).astype(np.int64), 0, top)
            dose = self.values[vox[:, 0], vox[:, 1], vox[:, 2]].astype(np.float64)
            return (dose, np.zeros((n, 3))) if gradient else dose
        if method != "linear":
            raise ValueError(f"unknown interpolation {method!r}; use 'linear' or 'nearest'")
        if n > CHUNK:
            # chunks keep the temporaries in cache: several times faster on 10^7 points
            dose = np.empty(n)
            g = np.empty((n, 3) if gradient else (0, 3))
            for a in range(0, n, CHUNK):
                r = self._interpolate(idx[a:a + CHUNK], gradient)
                if gradient:
                    dose[a:a + CHUNK], g[a:a + CHUNK] = r
                else:
                    dose[a:a + CHUNK] = r
            return (dose, g) if gradient else dose
        return self._interpolate(idx, gradient)

    def _interpolate(self, idx: np.ndarray, gradient: bool):
        shape = np.asarray(self.grid.shape)
        single = shape == 1
        top = np.maximum(shape - 2, 0)
        flat = self.values.ravel()
        strides = np.array([shape[1] * shape[2], shape[2], 1])
        base = np.zeros(idx.shape[0], dtype=np.int64)
        f = np.empty((3, idx.shape[0]))
        for a in range(3):
            # clamp to the centre-to-centre hull: constant dose out to the faces
            c = np.minimum(np.maximum(idx[:, a], 0.0), shape[a] - 1.0)
            i0 = np.minimum(c.astype(np.int64), top[a])
            f[a] = 0.0 if single[a] else c - i0
            base += i0 * strides[a]
        sk, sj, si = (0 if single[a] else strides[a] for a in range(3))
        c000 = flat.take(base); c001 = flat.take(base + si)
        c010 = flat.take(base + sj); c011 = flat.take(base + sj + si)
        c100 = flat.take(base + sk); c101 = flat.take(base + sk + si)
        c110 = flat.take(base + sk + sj); c111 = flat.take(base + sk + sj + si)
        fk, fj, fi = f
        d00 = c001 - c000; d01 = c011 - c010; d10 = c101 - c100; d11 = c111 - c110
        c00 = c000 + d00 * fi
        c01 = c010 + d01 * fi
        c10 = c100 + d10 * fi
        c11 = c110 + d11 * fi
        c0 = c00 + (c01 - c00) * fj
        c1 = c10 + (c11 - c10) * fj
        dose = c0 + (c1 - c0) * fk
        if not gradient:
            return dose
        g = np.empty((idx.shape[0], 3))
        g[:, 0] = c1 - c0
        g[:, 1] = (1 - fk) * (c01 - c00) + fk * (c11 - c10)
        g[:, 2] = (1 - fk) * ((1 - fj) * d00 + fj * d01) + fk * ((1 - fj) * d10 + fj * d11)
        # Outside the centre-to-centre hull the dose is held constant.
        for a in range(3):
            if single[a]:
                g[:, a] = 0.0
            else:
                g[(idx[:, a] < 0.0) | (idx[:, a] > shape[a] - 1.0), a] = 0.0
        return dose, g
