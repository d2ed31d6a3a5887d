"""Small cases, cohorts and CLI runs for the pipeline bad-input tests.

The dose of :func:`tests.helpers.gradient_dose` is ``30 + 0.5 x`` Gy (x in mm,
LPS), linear, so the mean dose of a structure symmetric about its centre
``cx`` is ``30 + 0.5 cx`` Gy exactly (trilinear interpolation reproduces a
linear field): the independent truth the exit-0 cases are checked against.
"""

from __future__ import annotations

import csv
from pathlib import Path

from soars_dose.cli.main import main
from soars_dose.structures import Structure

from ..helpers import disc_stack, write_case

#: Centres (mm) of the two cylinders :func:`case` writes; their closed-form mean doses.
CX = (-10.0, 12.0)
MEAN_GY = tuple(30.0 + 0.5 * c for c in CX)


def structures(names=("Parotid_L", "SpinalCord"), shift_x: float = 0.0) -> list[Structure]:
    """Two cylinders (r 6 mm and 4 mm) centred at x = -10 and 12 mm (+ shift)."""
    return [Structure(names[0], 1, disc_stack(CX[0] + shift_x, 0, 6, -8, 8)),
            Structure(names[1], 2, disc_stack(CX[1] + shift_x, 5, 4, -10, 10))]


def case(folder: Path, ref_names=("Parotid_L", "SpinalCord"),
         auto_names=("Parotid_L", "SpinalCord"), ref: list | None = None) -> dict[str, Path]:
    """An RTDOSE, a reference and an ``auto`` RTSTRUCT (auto = reference shifted 1 mm in x)."""
    return write_case(folder, {"ref": ref if ref is not None else structures(ref_names),
                               "auto": structures(auto_names, 1.0)})


def manifest(path: Path, patients: dict[str, dict[str, Path]],
             meta: dict[str, dict[str, str]] | None = None) -> Path:
    """A cohort manifest: one row per patient id -> files of :func:`case`."""
    meta = meta or {}
    cols = sorted({k for m in meta.values() for k in m})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["patient", "rtdose", "reference", "set:auto", *cols])
        for pid, files in patients.items():
            w.writerow([pid, files["rtdose"], files["ref"], files["auto"],
                        *(meta.get(pid, {}).get(c, "") for c in cols)])
    return path


def cohort(root: Path, ids=("P1", "P2"), meta=None) -> Path:
    """A manifest of small patients (each its own files) under ``root``."""
    return manifest(root / "manifest.csv", {p: case(root / p) for p in ids}, meta)


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run the CLI; return (exit status, stderr), asserting no traceback reached the user."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, err


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders (``.name.tmp-*``, ``.name.old-*``) left under ``folder``."""
    return sorted(str(p) for p in Path(folder).rglob(".*") if ".tmp" in p.name or ".old-" in p.name)
