"""Builders of bad cases decided at case/compare level (issue 11): DICOM written on the fly."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom

from soars_dose import audit
from soars_dose.cli.main import main

from ..helpers import write_case


def strip_rois(path: Path) -> Path:
    """Rewrite an RTSTRUCT with empty ROI sequences (a valid file with zero ROIs)."""
    ds = pydicom.dcmread(path)
    ds.StructureSetROISequence = pydicom.Sequence([])
    ds.ROIContourSequence = pydicom.Sequence([])
    ds.RTROIObservationsSequence = pydicom.Sequence([])
    ds.save_as(path)
    return path


def load(paths: dict, names=("reference", "auto"), **kw) -> audit.Case:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit.load_case(paths["rtdose"], {k: paths[k] for k in names}, **kw)


def cli(args: list[str], capsys) -> tuple[int, str]:
    """Run the CLI; return (exit code, stderr). Fails the test on a traceback."""
    rc = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def compare_args(paths: dict, out: Path, *extra: str) -> list[str]:
    return ["compare", "--rtdose", str(paths["rtdose"]), "--reference", str(paths["reference"]),
            "--set", f"auto={paths['auto']}", "--out", str(out), *extra]


__all__ = ["strip_rois", "load", "cli", "compare_args", "write_case"]
