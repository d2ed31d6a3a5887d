"""Fixtures: the real validation patient pt_201, a sparse raw CSV folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from soars_dose.datasets import openkbp as ok

from .openkbp_helpers import N, real, write_csv


@pytest.fixture(scope="module")
def pt201(shared_data):
    return ok.read_patient(real(shared_data, "validation/pt_201.npz"))


@pytest.fixture()
def raw_folder(tmp_path) -> Path:
    """A sparse OpenKBP patient: a few CT voxels, some dose, one structure."""
    f = tmp_path / "pt_7"
    f.mkdir()
    (f / "voxel_dimensions.csv").write_text("3.906\n3.906\n2.5\n")
    write_csv(f / "ct.csv", ["0,1024.0", "5,2024.0", f"{N - 1},24.0"])
    write_csv(f / "dose.csv", ["5,12.5", "6,70.0"])
    write_csv(f / "possible_dose_mask.csv", ["5,", "6,"])
    write_csv(f / "LeftParotid.csv", ["6,", "7,"])
    return f
