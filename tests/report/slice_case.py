"""A small analytic case with a CT for the slice viewer's tests (CT, dose and OARs in closed form)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from soars_dose.case import Case
from soars_dose.dicom.write import write_ct_series
from soars_dose.dosegrid import DoseGrid
from soars_dose.grid import Grid
from soars_dose.structures import Structure, StructureSet

from ..helpers import disc_stack

CT_GRID = Grid((30, 60, 60), (2.0, 1.0, 1.0), (-29.5, -29.5, -29.0))  # z = -29, -27, ..., 29
DOSE_GRID = Grid((16, 20, 20), (2.5, 2.5, 2.5), (-23.75, -23.75, -18.75))
# cylinder: planes z = -11..9 (11 CT slices), centre (3.5, -2.5, -1) on a CT voxel centre
CX, CY, R, Z0, Z1 = 3.5, -2.5, 8.0, -11.0, 9.0
CENTRE_MM = (CX, CY, -1.0)


def hu_of(xyz: np.ndarray) -> np.ndarray:
    """An analytic CT: every voxel's number says where it is."""
    return np.rint(40 + 3 * xyz[:, 0] - 2 * xyz[:, 1] + xyz[:, 2])


def dose_of(xyz: np.ndarray) -> np.ndarray:
    """Linear in x, y and z (Gy): trilinear interpolation reproduces it exactly."""
    return 30.0 + 0.5 * xyz[:, 0] + 0.2 * xyz[:, 1] - 0.1 * xyz[:, 2]


def values_on(grid: Grid, f) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    return f(grid.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))).reshape(grid.shape)


def make_case(tmp_path, ct_grid=CT_GRID, sub_contours=None, name="ct", cord=False) -> Case:
    """The reference and ``auto`` sets: one cylinder (and a cord, shifted 2 mm in ``auto``)."""
    ct = write_ct_series(values_on(ct_grid, hu_of).astype(np.int16), ct_grid, tmp_path / name,
                         patient_id="P")
    dose = DoseGrid(DOSE_GRID, values_on(DOSE_GRID, dose_of).astype(np.float32))
    ref = [Structure("Parotid_L", 1, disc_stack(CX, CY, R, Z0, Z1, dz=2.0, n=96))]
    sub = [Structure("Parotid_L", 1, sub_contours or disc_stack(CX, CY, R, Z0, Z1, 2.0, 96))]
    if cord:
        ref.append(Structure("SpinalCord", 2, disc_stack(-12.5, 10.5, 4.0, -25.0, 15.0, 2.0)))
        sub.append(Structure("SpinalCord", 2, disc_stack(-10.5, 10.5, 4.0, -21.0, 15.0, 2.0)))
    return Case(dose=dose, sets={"reference": StructureSet(ref), "auto": StructureSet(sub)},
                ct=ct, patient="P")


def make_stats(sets=("reference", "auto"), oars=("Parotid_L",)) -> pd.DataFrame:
    rows = [{"set": s, "roi": o, "roi_original": o, "status": "ok"} for o in oars for s in sets]
    return pd.DataFrame(rows)
