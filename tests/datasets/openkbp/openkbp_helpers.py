"""Small OpenKBP files for the error paths, and where the real data lies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soars_dose.datasets import openkbp as ok

N = 128 ** 3


def real(shared_data: Path, rel: str) -> Path:
    p = shared_data / "openkbp" / rel
    if not p.exists():
        pytest.skip(f"{p} absent")
    return p


def centroid(patient: ok.OpenKBPPatient, name: str) -> np.ndarray:
    return patient.grid.index_to_world(np.argwhere(patient.masks[name]).mean(axis=0))


def write_csv(path: Path, rows: list[str], header: str = ",data") -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


def npz(path: Path, shape=(12, 10, 8), vd=(2.0, 2.0, 3.0), **extra) -> Path:
    arrays = {"ct_hu": np.full(shape, -1024, np.int16), "dose_gy": np.zeros(shape, np.float32),
              "possible_dose_mask": np.zeros(shape, bool), "voxel_dimensions_mm": np.array(vd)}
    arrays.update(extra)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return path
