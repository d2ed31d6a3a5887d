"""What the command line says (issue 15): --version, help text, and refusals that name the
option to pass or the kind of file expected, each before any work is done."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soars_dose.cli.main import PACKAGED_MODEL_OARS, build_parser

from ..helpers import oars, write_case

ROOT = Path(__file__).resolve().parents[2]


def _run(argv, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}  # help on one line
    return subprocess.run([sys.executable, "-m", "soars_dose.cli.main", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("wording")
    paths = write_case(d / "in", {"ref": oars(), "auto": oars(1.5)})
    (d / "a_file").write_text("not a folder\n")
    return {**paths, "dir": d / "in", "file": d / "a_file"}


def test_version():
    from soars_dose.outputs import version

    r = _run(["--version"], ROOT)
    assert r.returncode == 0 and r.stdout.strip() == f"soars-dose {version()}"


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_option_has_help_without_backticks(command):
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest}: no help"
        assert "`" not in action.help, f"{command} {action.option_strings}: backtick"
    assert "`" not in (sub.description or "")


def test_top_level_help_says_what_the_packaged_model_covers():
    r = _run(["-h"], ROOT)
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "`" not in r.stdout
    assert f"covers {len(PACKAGED_MODEL_OARS)} head-and-neck OARs" in text
    assert "segment the 42" not in text


def test_help_lists_the_packaged_model_oars_truly():
    pytest.importorskip("torch")
    from soars_dose.segmentation.bundle import default_model_path, load_models

    assert tuple(load_models([default_model_path()]).available_oars()) == PACKAGED_MODEL_OARS


def _dvh(files, *extra, out="o"):
    return ["dvh", "--rtstruct", files["ref"], "--rtdose", files["rtdose"], "--out", out, *extra]


@pytest.mark.parametrize("extra,option", [
    (["--prescription-gy", "0"], "--prescription-gy"),
    (["--prescription-gy", "-60"], "--prescription-gy"),
    (["--prescription-gy", "nan"], "--prescription-gy"),
    (["--prescription-gy", "inf"], "--prescription-gy"),
    (["--supersample", "3"], "--supersample"),
    (["--bin-width", "nan"], "--bin-width"),
    (["--dvh-step", "0"], "--dvh-step"),
    (["--dx", "nan"], "--dx"),
])
def test_dvh_refuses_nonsense_numbers_by_option_name(files, tmp_path, extra, option):
    r = _run(_dvh(files, *extra), tmp_path)
    assert r.returncode == 2 and option in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,option", [
    (["tps-check", "--supersample", "5"], "--supersample"),
    (["tps-check", "--prescription-gy", "-1"], "--prescription-gy"),
    (["tps-check", "--nominal-spacing-mm", "0"], "--nominal-spacing-mm"),
    (["tps-check", "--volume-tol-pct", "-2"], "--volume-tol-pct"),
    (["tps-check", "--dose-tol-gy", "nan"], "--dose-tol-gy"),
    (["demo", "--out", "d", "--patients", "0"], "--patients"),
    (["demo", "--out", "d", "--seed", "-1"], "--seed"),
    (["report", ".", "--from-scratch-min", "0"], "--from-scratch-min"),
    (["cohort", "m.csv", "--out", "o", "--jobs", "0"], "--jobs"),
    (["cohort", "m.csv", "--out", "o", "--prescription-gy", "nan"], "--prescription-gy"),
    (["train", "ds", "--branch", "anchor", "--out", "t", "--epochs", "0"], "--epochs"),
])
def test_other_commands_refuse_nonsense_numbers(files, tmp_path, argv, option):
    if argv[0] == "tps-check":
        argv = [*argv, "--rtdose", files["rtdose"], "--rtstruct", files["ref"]]
    r = _run(argv, tmp_path)
    assert r.returncode == 2 and option in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("swap,expected", [
    ("rtstruct", "is a folder, expected a DICOM RTSTRUCT file"),
    ("rtdose", "is a folder, expected a DICOM RTDOSE file"),
    ("ct", "is a file, expected a folder of CT slices"),
    ("plausibility", "is a folder, expected a YAML file of plausible OAR volumes"),
])
def test_folder_for_file_and_file_for_folder(files, tmp_path, swap, expected):
    argv = {"rtstruct": ["dvh", "--rtstruct", files["dir"], "--rtdose", files["rtdose"],
                         "--out", "o"],
            "rtdose": ["dvh", "--rtstruct", files["ref"], "--rtdose", files["dir"], "--out", "o"],
            "ct": _dvh(files, "--ct", files["file"]),
            "plausibility": _dvh(files, "--plausibility-volumes", files["dir"])}[swap]
    r = _run(argv, tmp_path)
    assert r.returncode == 2 and expected in r.stderr, r.stderr
    assert "no such file" not in r.stderr


def test_cohort_manifest_folder(files, tmp_path):
    r = _run(["cohort", files["dir"], "--out", "o", "--quiet"], tmp_path)
    assert r.returncode == 2 and "is a folder, expected a CSV manifest file" in r.stderr
    assert "Errno" not in r.stderr


# ------------------------------------------- outputs checked before any work (15.4)
def test_segment_output_folder_refused_before_inference(files, tmp_path):
    """--out naming a folder, even with --overwrite, is refused before torch or the CT is read.

    The CT folder does not exist: a refusal that names --out proves the check came first.
    """
    (tmp_path / "seg").mkdir()
    r = _run(["segment", tmp_path / "no_ct", "--out", "seg", "--overwrite"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "seg: is a folder, expected the RTSTRUCT file to write" in r.stderr
    assert "IsADirectoryError" not in r.stderr and "no_ct" not in r.stderr


def test_segment_existing_file_names_overwrite(files, tmp_path):
    r = _run(["segment", tmp_path / "no_ct", "--out", files["file"]], tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert "overwrite=True" not in r.stderr and "no_ct" not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
@pytest.mark.parametrize("command", ["dvh", "demo", "segment"])
def test_unwritable_parent_refused_first(files, tmp_path, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        argv = {"dvh": _dvh(files, out=locked / "o"),
                "demo": ["demo", "--out", locked / "o", "--quiet"],
                "segment": ["segment", tmp_path / "no_ct", "--out", locked / "rs.dcm"]}[command]
        r = _run(argv, tmp_path)
    finally:
        locked.chmod(0o755)
    assert r.returncode == 2 and "you may not write into" in r.stderr, r.stderr


@pytest.mark.parametrize("command", ["dvh", "demo", "tps-check", "segment"])
def test_output_under_a_file_refused_first(files, tmp_path, command):
    out = files["file"] / "o"
    argv = {"dvh": _dvh(files, out=out),
            "demo": ["demo", "--out", out, "--quiet"],
            "tps-check": ["tps-check", "--rtdose", files["rtdose"], "--rtstruct", files["ref"],
                          "--out", out],
            "segment": ["segment", tmp_path / "no_ct", "--out", out]}[command]
    r = _run(argv, tmp_path)
    assert r.returncode == 2 and f"{files['file']} is a file, not a folder" in r.stderr, r.stderr


def test_output_folder_that_is_a_file_with_overwrite(files, tmp_path):
    r = _run(_dvh(files, "--overwrite", out=files["file"]), tmp_path)
    assert r.returncode == 2 and "is a file, expected an output folder" in r.stderr
    assert files["file"].read_text() == "not a folder\n"


def test_report_on_an_existing_report_names_overwrite(tmp_path):
    (tmp_path / "cohort_out" / "report").mkdir(parents=True)
    r = _run(["report", "cohort_out"], tmp_path)
    assert r.returncode == 2 and "a report already exists; pass --overwrite" in r.stderr
    assert "--out" not in r.stderr

