"""The whole hostile corpus through the CLI: exit 2, the file named, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from soars_dose.cli.main import main

from . import builders as b
from .corpus import CORPUS, good_rois


def _good(folder: Path) -> dict[str, Path]:
    """A dose covering the corpus ROIs (2 Gy everywhere) and an intact RTSTRUCT."""
    dose = b.rtdose(np.full((10, 30, 30), 2.0), spacing=(2.0, 2.0, 2.0),
                    origin=(-30.0, -30.0, -2.0))
    return {"rtdose": b.write(dose, folder / "good_rd.dcm"),
            "rtstruct": b.write(b.rtstruct(good_rois()), folder / "good_rs.dcm")}


def _argv(kind, target, good, out):
    if kind == "rtdose":
        return ["dvh", "--rtstruct", str(good["rtstruct"]), "--rtdose", str(target), "--out", out]
    if kind == "rtstruct":
        return ["compare", "--rtdose", str(good["rtdose"]), "--reference", str(good["rtstruct"]),
                "--set", f"x={target}", "--out", out]
    return ["compare", "--rtdose", str(good["rtdose"]), "--reference", str(good["rtstruct"]),
            "--set", f"x={good['rtstruct']}", "--ct", str(target), "--out", out]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_cli_refuses_with_exit_2(name, tmp_path, capsys):
    h = CORPUS[name]
    good = _good(tmp_path / "good")
    target = h.make(tmp_path / "bad")
    out = tmp_path / "out"
    code = main(_argv(h.kind, target, good, str(out)))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and h.named(target) in error_lines[0], err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", ["dvh", "compare"])
def test_rtstruct_refused_as_reference_too(command, tmp_path, capsys):
    good = _good(tmp_path / "good")
    bad = CORPUS["rtstruct_undefined_cut_at_50pct"].make(tmp_path / "bad")
    argv = (["dvh", "--rtstruct", str(bad), "--rtdose", str(good["rtdose"])] if command == "dvh"
            else ["compare", "--rtdose", str(good["rtdose"]), "--reference", str(bad),
                  "--set", f"x={good['rtstruct']}"])
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "rs.dcm" in err and "truncated" in err


def _run(argv):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "soars_dose.cli.main", *argv],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("name", ["dose_pixels_one_voxel_too_many", "rtstruct_cut_mid_tag",
                                  "ct_rows_differ"])
def test_cli_subprocess_has_no_traceback(name, tmp_path):
    h = CORPUS[name]
    good = _good(tmp_path / "good")
    target = h.make(tmp_path / "bad")
    r = _run(_argv(h.kind, target, good, str(tmp_path / "out")))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and h.named(target) in r.stderr


def test_cli_shows_reader_warnings_and_still_computes(tmp_path, capsys):
    """Kept-but-surprising inputs: exit 0, each warning on the console naming the file."""
    _good(tmp_path / "good")
    rois = good_rois()
    rois[0][2].append(rois[0][2][1].copy())  # an exact duplicate on z = 2 mm
    rs = b.write(b.rtstruct(rois), tmp_path / "dup_rs.dcm")
    ds = b.rtdose(np.full((10, 30, 30), 2.0), spacing=(2.0, 2.0, 2.0),
                  origin=(-30.0, -30.0, -2.0), summation="BEAM")
    del ds.FrameOfReferenceUID
    rd = b.write(ds, tmp_path / "beam_rd.dcm")
    code = main(["dvh", "--rtstruct", str(rs), "--rtdose", str(rd), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    assert any("dup_rs.dcm" in ln and "'Parotid_L' contour 6 on plane z = 2 mm repeats contour 2"
               in ln for ln in err.splitlines())
    assert any("beam_rd.dcm" in ln and "DoseSummationType BEAM" in ln for ln in err.splitlines())
    assert any("beam_rd.dcm" in ln and "no FrameOfReferenceUID" in ln for ln in err.splitlines())


@pytest.mark.parametrize("name", ["ct_missing_sop_instance_uid", "ct_slice_cut_mid_pixel_data"])
def test_segment_refuses_a_bad_ct_by_name(name, tmp_path, capsys):
    pytest.importorskip("torch")
    h = CORPUS[name]
    target = h.make(tmp_path / "bad")
    code = main(["segment", str(target), "--out", str(tmp_path / "o.dcm"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert h.named(target) in err and not (tmp_path / "o.dcm").exists()
