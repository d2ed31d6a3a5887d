"""Regular voxel grids in DICOM patient coordinates.

Conventions
-----------
* World coordinates are DICOM patient coordinates, LPS, in mm.
* Arrays on a grid are indexed ``[k, j, i]`` = ``[slice, row, column]``
  (written ``[z, y, x]`` elsewhere, although for a decubitus or prone
  patient axis 0 need not point along patient z).
* ``origin`` is the world position of the *centre* of voxel ``[0, 0, 0]``.
* ``direction[a]`` is the LPS unit vector along which array axis ``a``
  increases; ``spacing[a]`` the voxel pitch along it (mm, > 0).

So ``world = origin + sum_a index[a] * spacing[a] * direction[a]``.
Voxel ``[k, j, i]`` covers the continuous index box
``[k - 0.5, k + 0.5] x [j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import GeometryError

#: Largest |cosine| that still counts as 0 (or 1) for an axis-aligned grid.
AXIS_TOLERANCE = 1e-4


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular 3-D grid: shape, spacing, origin and direction.

    Parameters
    ----------
    shape : tuple of int
        ``(n_slices, n_rows, n_columns)``, the array shape.
    spacing : tuple of float
        Voxel pitch in mm along array axes 0, 1, 2.
    origin : tuple of float
        LPS position (mm) of the centre of voxel ``[0, 0, 0]``.
    direction : array_like, shape (3, 3)
        Row ``a`` is the LPS unit vector of array axis ``a``. Defaults to
        the identity permutation ``axis0=+z, axis1=+y, axis2=+x``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray = field(
        default_factory=lambda: np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        d.setflags(write=False)
        object.__setattr__(self, "direction", d)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise GeometryError(f"grid shape must be three positive sizes, got {self.shape}")
        if min(self.spacing) <= 0 or not np.all(np.isfinite(self.spacing)):
            raise GeometryError(f"grid spacing must be positive and finite, got {self.spacing}")
        if not np.allclose(d @ d.T, np.eye(3), atol=1e-4):
            raise GeometryError(f"grid direction is not orthonormal: {d.tolist()}")

    # ------------------------------------------------------------------ queries
    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(np.prod(self.spacing))

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``[k, j, i, 1]`` to LPS ``[x, y, z, 1]``."""
        a = np.eye(4)
        a[:3, :3] = (self.direction * np.asarray(self.spacing)[:, None]).T
        a[:3, 3] = self.origin
        return a

    def is_axis_aligned(self) -> bool:
        """True when every array axis runs along a patient axis (a signed permutation)."""
        d = np.abs(self.direction)
        return bool(np.all((d < AXIS_TOLERANCE) | (d > 1 - AXIS_TOLERANCE)))

    def patient_axis(self, axis: int) -> tuple[int, int]:
        """Patient axis (0=x, 1=y, 2=z) and sign (+1/-1) along which array axis ``axis`` runs.

        Raises
        ------
        GeometryError
            If the grid is oblique.
        """
        if not self.is_axis_aligned():
            raise GeometryError(
                "grid is oblique (direction cosines "
                f"{np.round(self.direction, 4).tolist()}); only axis-aligned patient "
                "orientations (HFS, HFP, FFS, FFP, decubitus) are supported: resample it first"
            )
        p = int(np.argmax(np.abs(self.direction[axis])))
        return p, int(np.sign(self.direction[axis, p]))

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """Map continuous indices ``[..., (k, j, i)]`` to LPS mm ``[..., (x, y, z)]``."""
        index = np.asarray(index, dtype=float)
        m = self.direction * np.asarray(self.spacing)[:, None]
        return index @ m + np.asarray(self.origin)

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map LPS mm ``[..., (x, y, z)]`` to continuous indices ``[..., (k, j, i)]``."""
        xyz = np.asarray(xyz, dtype=float)
        return ((xyz - np.asarray(self.origin)) @ self.direction.T) / np.asarray(self.spacing)

    def world_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper LPS corner (mm) of the box covered by the voxels."""
        corners = np.array(
            [[a, b, c] for a in (-0.5, self.shape[0] - 0.5)
             for b in (-0.5, self.shape[1] - 0.5) for c in (-0.5, self.shape[2] - 0.5)]
        )
        w = self.index_to_world(corners)
        return w.min(axis=0), w.max(axis=0)

    def crop(self, start, stop) -> "Grid":
        """The sub-grid of voxels ``start <= index < stop`` (per axis), same spacing and direction."""
        start = np.asarray(start, dtype=int)
        stop = np.asarray(stop, dtype=int)
        if np.any(start < 0) or np.any(stop > np.asarray(self.shape)) or np.any(stop <= start):
            raise GeometryError(f"crop {start.tolist()}..{stop.tolist()} outside grid {self.shape}")
        return Grid(tuple(stop - start), self.spacing, tuple(self.index_to_world(start)),
                    self.direction)

    def same_as(self, other: "Grid", tol_mm: float = 1e-3) -> bool:
        """True when both grids have the same shape and voxel centres (within ``tol_mm``)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol_mm)
            and np.allclose(self.origin, other.origin, atol=tol_mm)
            and np.allclose(self.direction, other.direction, atol=AXIS_TOLERANCE)
        )

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_dicom(
        cls,
        image_orientation: "np.ndarray | list[float]",
        first_position: "np.ndarray | list[float]",
        pixel_spacing: "np.ndarray | list[float]",
        slice_positions: "np.ndarray | list[float]",
        rows: int,
        columns: int,
    ) -> "Grid":
        """Build a grid from DICOM image-plane attributes.

        Parameters
        ----------
        image_orientation : sequence of 6 float
            ImageOrientationPatient: direction of increasing column index,
            then of increasing row index (LPS).
        first_position : sequence of 3 float
            ImagePositionPatient of the first slice (LPS mm, centre of the
            first transmitted pixel).
        pixel_spacing : sequence of 2 float
            PixelSpacing: (distance between rows, distance between columns) in mm.
        slice_positions : sequence of float
            Offsets (mm) of each slice along the normal ``row x col`` relative
            to ``first_position``, in array order; must be strictly increasing
            and evenly spaced.
        rows, columns : int
            Rows and Columns.
        """
        iop = np.asarray(image_orientation, dtype=float)
        col_dir, row_dir = iop[:3], iop[3:]
        normal = np.cross(col_dir, row_dir)
        offsets = np.asarray(slice_positions, dtype=float)
        if offsets.size > 1:
            steps = np.diff(offsets)
            if np.any(steps <= 0):
                raise GeometryError("slice positions must be strictly increasing along the normal")
            if np.ptp(steps) > 1e-3 * max(1.0, float(np.mean(steps))) + 1e-4:
                raise GeometryError(
                    f"slices are unevenly spaced (steps {np.unique(np.round(steps, 3)).tolist()} mm)"
                )
            dz = float(np.mean(steps))
        else:
            dz = 1.0
        origin = np.asarray(first_position, dtype=float) + offsets[0] * normal
        return cls(
            shape=(offsets.size, int(rows), int(columns)),
            spacing=(dz, float(pixel_spacing[0]), float(pixel_spacing[1])),
            origin=tuple(origin),
            direction=np.vstack([normal, row_dir, col_dir]),
        )

    def __repr__(self) -> str:
        return (
            f"Grid(shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)}, "
            f"origin={tuple(round(o, 3) for o in self.origin)}, "
            f"direction={np.round(self.direction, 4).tolist()})"
        )
