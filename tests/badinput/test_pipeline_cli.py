"""The command line under bad conditions: messages in the CLI's own spelling (class 7),
warnings on the console in dvh / compare (class 8), and no traceback ever (class 9)."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from soars_dose import errors
from soars_dose.console import option
from soars_dose.errors import DicomReadError, GeometryError, OutputExistsError
from soars_dose.outputs import check_writable

from ..helpers import disc_stack, write_case
from .pipeline_builders import MEAN_GY, case, cli, cohort


@pytest.fixture()
def files(tmp_path):
    return case(tmp_path / "in")


def _dvh(files, out):
    return ["dvh", "--rtstruct", files["ref"], "--rtdose", files["rtdose"], "--out", out]


def _compare(files, out):
    return ["compare", "--rtdose", files["rtdose"], "--reference", files["ref"],
            "--set", f"auto={files['auto']}", "--out", out]


# ------------------------------------------------- class 7: the interface's own spelling
def test_python_messages_say_overwrite_true(tmp_path):
    (tmp_path / "o").mkdir()
    with pytest.raises(OutputExistsError) as exc:
        check_writable(tmp_path / "o", False)
    assert "overwrite=True" in str(exc.value) and "--" not in str(exc.value)
    assert option("overwrite") == "overwrite=True" and option("sum_doses") == "sum_doses=True"


@pytest.mark.parametrize("command", ["dvh", "compare", "cohort"])
def test_cli_messages_say_double_dash(tmp_path, capsys, files, command):
    out = tmp_path / "o"
    out.mkdir()
    argv = {"dvh": _dvh(files, out), "compare": _compare(files, out),
            "cohort": ["cohort", cohort(tmp_path / "m"), "--out", out, "--quiet"]}[command]
    rc, err = cli(argv, capsys)
    assert rc == 2 and "--overwrite" in err and "overwrite=True" not in err and str(out) in err


def test_cli_resume_and_overwrite_together(tmp_path, capsys):
    m = cohort(tmp_path / "m", ids=("P1",))
    rc, err = cli(["cohort", m, "--out", tmp_path / "o", "--resume", "--overwrite"], capsys)
    assert rc == 2 and "--resume" in err and "--overwrite" in err and "=True" not in err


def test_library_messages_follow_the_interface(tmp_path):
    """A message raised deep in the library names the option of the interface in use."""
    from soars_dose.console import cli_interface
    from soars_dose.outputs import check_writable_file

    (tmp_path / "rs.dcm").write_bytes(b"")
    with pytest.raises(OutputExistsError) as py:
        check_writable_file(tmp_path / "rs.dcm", False)
    with cli_interface(), pytest.raises(OutputExistsError) as cl:
        check_writable_file(tmp_path / "rs.dcm", False)
    assert "overwrite=True" in str(py.value) and "--overwrite" not in str(py.value)
    assert "--overwrite" in str(cl.value) and "overwrite=True" not in str(cl.value)


def _literal_strings(tree):
    import ast

    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node.lineno, node.value


# no module is exempt: scripts with their own command line (training/openkbp/export_data.py)
# enter console.cli_interface() too
_OWN_CLI: set[str] = set()


def test_no_message_hard_codes_a_python_option_spelling():
    """Every message naming overwrite / resume / sum_doses goes through console.option."""
    import ast
    import re

    root = Path(__file__).resolve().parents[2] / "soars_dose"
    # "resume=True)" closes a whole call shown to a Python user (an in_cli() branch)
    spelled = re.compile(r"\b(overwrite|resume|sum_doses)=True\b(?!\))")
    found = []
    for f in sorted(root.rglob("*.py")):
        if f.name in _OWN_CLI:
            continue
        for line, text in _literal_strings(ast.parse(f.read_text(encoding="utf-8"))):
            if spelled.search(text):
                found.append(f"{f.relative_to(root)}:{line}: {text.strip()}")
    assert not found, "\n".join(found)


# --------------------------------------------- class 8: warnings in dvh and compare
def test_reader_warnings_reach_stderr_once(files, tmp_path, capsys, monkeypatch):
    from soars_dose import load as case_mod

    real = case_mod.read_rtdoses

    def warns(*a, **k):
        for _ in range(3):  # the same warning three times is shown once
            errors.warn(f"{files['rtdose']}: DoseSummationType is BEAM: one beam's dose")
        errors.warn(f"{files['rtdose']}: no FrameOfReferenceUID; the frame check was skipped")
        return real(*a, **k)

    monkeypatch.setattr(case_mod, "read_rtdoses", warns)
    for argv in (_dvh(files, tmp_path / "a"), _compare(files, tmp_path / "b")):
        rc, err = cli(argv, capsys)
        assert rc == 0
        lines = err.splitlines()
        beam = [x for x in lines if "DoseSummationType is BEAM" in x]
        assert beam == [f"warning: {files['rtdose']}: DoseSummationType is BEAM: one beam's dose"]
        assert sum("FrameOfReferenceUID" in x for x in lines) == 1
    st = pd.read_csv(tmp_path / "a" / "stats.csv").set_index("roi")
    assert st.loc["Parotid_L", "mean_gy"] == pytest.approx(MEAN_GY[0], abs=0.05)
    assert st.loc["SpinalCord", "mean_gy"] == pytest.approx(MEAN_GY[1], abs=0.05)


def _disc_share(roi: str) -> float:
    """Area share of a disc (r, centre cx) on the near side of the line x = 37.5 mm."""
    import math

    r, cx = {"Parotid_R": (6.0, 33.0), "SpinalCord": (4.0, 34.0)}[roi]
    d = 37.5 - cx
    segment = r * r * math.acos(d / r) - d * math.sqrt(r * r - d * d)
    return 1 - segment / (math.pi * r * r)


def test_partial_structures_one_line(tmp_path, capsys):
    from soars_dose.structures import Structure

    # x to 39 mm and to 38 mm: the grid's last voxel centre is at 36.25 mm, its edge 37.5
    f = write_case(tmp_path / "in", {
        "ref": [Structure("Parotid_L", 1, disc_stack(-10, 0, 6, -8, 8)),
                Structure("Parotid_R", 2, disc_stack(33, 0, 6, -8, 8)),
                Structure("SpinalCord", 3, disc_stack(34, 0, 4, -10, 10))],
        "auto": [Structure("Parotid_L", 1, disc_stack(-9, 0, 6, -8, 8)),
                 Structure("Parotid_R", 2, disc_stack(33, 0, 6, -8, 8)),
                 Structure("SpinalCord", 3, disc_stack(12, 5, 4, -10, 10))]})
    for argv, n in ((["dvh", "--rtstruct", f["ref"], "--rtdose", f["rtdose"],
                      "--out", tmp_path / "a"], 2),
                    (["compare", "--rtdose", f["rtdose"], "--reference", f["ref"],
                      "--set", f"auto={f['auto']}", "--out", tmp_path / "b"], 3)):
        rc, err = cli(argv, capsys)
        assert rc == 0
        lines = [x for x in err.splitlines() if "partly outside the dose grid" in x]
        assert len(lines) == 1 and f"{n} structures partly outside" in lines[0]
        # one line for the case: no per-structure coverage lines beside it
        assert sum("dose grid" in x for x in err.splitlines()) == 1, err
        st = pd.read_csv(Path(argv[-1]) / "stats.csv")
        part = st[st["status"] == "partial"]
        assert len(part) == n
        for _, r in part.iterrows():
            assert f"{r['roi']} (set {r['set']}) {100 * r['coverage']:.1f} %" in lines[0]
            # closed form: the share of the disc's area left of the grid's edge at x = 37.5 mm
            assert r["coverage"] == pytest.approx(_disc_share(r["roi"]), abs=0.015)
        # the fully inside structure is not listed
        assert "Parotid_L" not in lines[0]


# ---------------------------------------------------------- class 9: no traceback
@pytest.fixture()
def logs(tmp_path, monkeypatch):
    folder = tmp_path / "logs"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _targets(tmp_path, files):
    import soars_dose.audit as audit
    import soars_dose.cohort as cohort_mod
    import soars_dose.demo as demo
    import soars_dose.report.cohort as cohort_report

    (tmp_path / "o4").mkdir(exist_ok=True)  # report checks that its folder exists first
    return {
        "dvh": (audit, "load_case", _dvh(files, tmp_path / "o1")),
        "compare": (audit, "load_case", _compare(files, tmp_path / "o2")),
        "cohort": (cohort_mod, "run_cohort",
                   ["cohort", tmp_path / "m.csv", "--out", tmp_path / "o3", "--quiet"]),
        "report": (cohort_report, "build_report", ["report", tmp_path / "o4"]),
        "demo": (demo, "run_demo", ["demo", "--out", tmp_path / "o5", "--quiet"]),
    }


BUGS = [RuntimeError("internal state broken"), KeyError("ROIContourSequence"),
        ValueError("could not broadcast (3,) into (2,)"), IndexError("list index out of range"),
        AttributeError("'NoneType' object has no attribute 'shape'")]


@pytest.mark.parametrize("command", ["dvh", "compare", "cohort", "report", "demo"])
@pytest.mark.parametrize("exc", BUGS, ids=lambda e: type(e).__name__)
def test_unexpected_error_is_a_bug_report_not_a_traceback(tmp_path, files, capsys, logs,
                                                          monkeypatch, command, exc):
    target, attr, argv = _targets(tmp_path, files)[command]

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(target, attr, boom)
    rc, err = cli(argv, capsys)
    assert rc == 1
    assert "internal error" in err and "a bug" in err and type(exc).__name__ in err
    saved = list(logs.glob("soars-dose-error-*.log"))
    assert len(saved) == 1 and str(saved[0]) in err
    text = saved[0].read_text()
    assert "Traceback" in text and "boom" in text and type(exc).__name__ in text
    assert len(err.strip().splitlines()) == 1  # one paragraph


@pytest.mark.parametrize("command", ["dvh", "compare", "cohort", "report", "demo"])
@pytest.mark.parametrize("exc,rc_want,words", [
    (DicomReadError("/data/P1/RD.dcm: PixelData holds 100 bytes, the header needs 7200"),
     2, "/data/P1/RD.dcm"),
    (GeometryError("/data/P1/CT/1.dcm: PixelSpacing has one value"), 2, "PixelSpacing"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/P1/RS.dcm"), 2,
     "/data/P1/RS.dcm: Permission denied"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/x.dcm"), 2,
     "/data/x.dcm"),
    (OSError(errno.ENOSPC, "No space left on device", "/out/stats.csv"), 2, "free space"),
    (MemoryError(), 2, "out of memory"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_named_errors_exit_2(tmp_path, files, capsys, logs, monkeypatch, command, exc,
                             rc_want, words):
    target, attr, argv = _targets(tmp_path, files)[command]

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(target, attr, boom)
    rc, err = cli(argv, capsys)
    assert rc == rc_want and words in err
    assert list(logs.iterdir()) == []  # bad input is not a bug: no log
    assert "internal error" not in err


def test_unwritable_log_folder_still_no_traceback(tmp_path, files, capsys, monkeypatch):
    import soars_dose.audit as audit

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "does-not-exist"))
    monkeypatch.setattr(audit, "load_case", lambda *a, **k: 1 / 0)
    rc, err = cli(_dvh(files, tmp_path / "o"), capsys)
    assert rc == 1 and "ZeroDivisionError" in err and "could not be saved" in err
