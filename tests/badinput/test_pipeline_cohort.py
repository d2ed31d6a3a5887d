"""Cohort runs under bad conditions: locks (class 3), interrupts (4), unexpected errors in one
patient (5), damaged Parquet given to ``report`` (6), warnings on the console (8)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from soars_dose import cohort
from soars_dose.cohort import (
    LOCK_FILE,
    acquire_lock,
    load_cohort,
    release_lock,
    run_cohort,
)
from soars_dose.errors import InputError, OutputLockedError, SoarsDoseWarning

from .pipeline_builders import MEAN_GY, case, cli, leftovers, manifest
from .pipeline_builders import cohort as make_cohort

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A two-patient cohort and a finished run of it (module-shared, never modified)."""
    root = tmp_path_factory.mktemp("small")
    m = make_cohort(root, ids=("P1", "P2"))
    out = root / "done"
    run_cohort(m, out, jobs=1, progress=False)
    return {"root": root, "manifest": m, "out": out}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _lock(folder: Path, **doc) -> Path:
    base = {"pid": os.getpid(), "host": socket.gethostname(), "started_utc": "2026-01-01T00:00:00",
            "command": "soars-dose cohort other.csv"}
    path = folder / LOCK_FILE
    path.write_text(json.dumps({**base, **doc}))
    return path


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------- class 3: the lock
def test_second_resume_on_a_locked_folder_is_refused(small, tmp_path, capsys):
    out = _copy(small["out"], tmp_path / "out")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (os.getpid(), sleeper.pid):  # two live holders on this host
            lock = _lock(out, pid=pid)
            before = lock.read_text()
            rc, err = cli(["cohort", small["manifest"], "--out", out, "--resume", "--jobs", "1",
                           "--quiet"], capsys)
            assert rc == 2
            assert f"PID {pid}" in err and socket.gethostname() in err and str(lock) in err
            assert "2026-01-01T00:00:00" in err and "--out" in err
            assert lock.read_text() == before  # the holder's lock is untouched
            with pytest.raises(OutputLockedError, match="output folder"):
                run_cohort(small["manifest"], out, resume=True, jobs=1, progress=False)
        # --overwrite on a locked folder neither runs nor deletes it
        rc, err = cli(["cohort", small["manifest"], "--out", out, "--overwrite", "--jobs", "1",
                       "--quiet"], capsys)
        assert rc == 2 and f"PID {sleeper.pid}" in err
        assert (out / "cohort" / "stats.parquet").is_file()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_from_another_host_is_never_taken_over(small, tmp_path, capsys):
    out = _copy(small["out"], tmp_path / "out")
    _lock(out, pid=_dead_pid(), host="another-node-17")
    rc, err = cli(["cohort", small["manifest"], "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and "another-node-17" in err and "another host" in err


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_unreadable_lock_is_refused_by_name(small, tmp_path, capsys, content):
    out = _copy(small["out"], tmp_path / "out")
    (out / LOCK_FILE).write_text(content)
    rc, err = cli(["cohort", small["manifest"], "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 2 and str(out / LOCK_FILE) in err and "delete" in err


def test_stale_lock_is_taken_over_with_a_warning(small, tmp_path, capsys):
    out = _copy(small["out"], tmp_path / "out")
    dead = _dead_pid()
    _lock(out, pid=dead)
    rc, err = cli(["cohort", small["manifest"], "--out", out, "--resume", "--jobs", "1",
                   "--quiet"], capsys)
    assert rc == 0, err
    assert "stale lock" in err and f"PID {dead}" in err
    assert not (out / LOCK_FILE).exists()  # released at the end
    res = load_cohort(out)
    assert list(res.patients["resumed"]) == [True, True]


def test_lock_is_held_during_the_run_and_released_on_error(small, tmp_path, monkeypatch):
    seen = []
    real = cohort.run_patient

    def spy(task):
        doc = json.loads((Path(task.folder).parents[1] / LOCK_FILE).read_text())
        seen.append((doc["pid"], doc["host"]))
        return real(task)

    monkeypatch.setattr(cohort.run, "run_patient", spy)
    res = run_cohort(small["manifest"], tmp_path / "fresh", jobs=1, progress=False)
    assert res.n_ok == 2 and seen == [(os.getpid(), socket.gethostname())] * 2
    assert not (tmp_path / "fresh" / LOCK_FILE).exists()

    def broken_finish(*a, **k):
        raise RuntimeError("synthetic failure while writing the cohort tables")

    monkeypatch.setattr(cohort.run, "_finish", broken_finish)
    with pytest.raises(RuntimeError):
        run_cohort(small["manifest"], tmp_path / "fresh", jobs=1, progress=False,
                   overwrite=True)
    assert not (tmp_path / "fresh" / LOCK_FILE).exists()


def test_two_real_runs_at_once(tmp_path, capsys):
    """A real second process runs on the folder; a resume started meanwhile is refused."""
    ids = [f"P{i}" for i in range(1, 7)]
    m = make_cohort(tmp_path, ids=ids)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "soars_dose.cli.main", "cohort", str(m), "--out", str(out),
         "--jobs", "1", "--quiet", "--supersample", "8"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / LOCK_FILE).exists() and proc.poll() is None:
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.skip("the first run ended before the second could start")
        rc, err = cli(["cohort", m, "--out", out, "--resume", "--jobs", "1", "--quiet",
                       "--supersample", "8"], capsys)
        still_running = proc.poll() is None
    finally:
        _, first_err = proc.communicate(timeout=300)
    if not still_running and rc == 0:
        pytest.skip("the first run ended while the second was starting")
    assert rc == 2 and f"PID {proc.pid}" in err and "another soars-dose cohort run" in err
    assert proc.returncode == 0, first_err  # the first run is not disturbed
    assert not (out / LOCK_FILE).exists()
    res = load_cohort(out)
    assert res.n_ok == len(ids) and not res.patients["resumed"].any()


def test_acquire_twice_in_one_process(tmp_path):
    lock = acquire_lock(tmp_path, "first")
    with pytest.raises(OutputLockedError, match=f"PID {os.getpid()}"):
        acquire_lock(tmp_path, "second")
    release_lock(lock)
    assert not lock.exists()
    release_lock(acquire_lock(tmp_path, "third"))  # free again


# -------------------------------------------------- class 4: the interrupt message
def test_interrupt_message_lists_kept_lost_and_not_started(tmp_path, monkeypatch):
    m = make_cohort(tmp_path, ids=("P1", "P2", "P3", "P4"))
    real = cohort.run_patient

    def interrupted_at_third(task):
        if task.row.patient == "P3":
            raise KeyboardInterrupt  # Ctrl-C while P3 runs
        return real(task)

    monkeypatch.setattr(cohort.run, "run_patient", interrupted_at_third)
    out = tmp_path / "out"
    with pytest.raises(cohort.CohortInterrupted) as exc:
        run_cohort(m, out, jobs=1, progress=False)
    msg = str(exc.value)
    assert "interrupted (Ctrl-C): 2 of 4 patients are finished and kept" in msg
    assert "(P1, P2)" in msg
    assert "1 were running and were stopped; their work is lost (P3)" in msg
    assert "1 were not started (P4)" in msg and "resume=True" in msg
    assert [p for p in ("P1", "P2", "P3", "P4") if cohort.is_complete(out / "patients" / p)] \
        == ["P1", "P2"]
    assert not (out / "patients" / "P3").exists() and not (out / "patients" / "P4").exists()
    assert leftovers(out) == [] and not (out / LOCK_FILE).exists()


def test_interrupt_of_a_pool_by_process_group_sigint(tmp_path):
    """Ctrl-C in a terminal signals the whole process group: the message must match the disk."""
    ids = [f"P{i}" for i in range(1, 9)]
    m = make_cohort(tmp_path, ids=ids)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "soars_dose.cli.main", "cohort", str(m), "--out", str(out),
         "--jobs", "2", "--quiet", "--supersample", "8"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(cohort.is_complete(out / "patients" / p) for p in ids):
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    if proc.returncode == 0:
        pytest.skip("every patient finished before the interrupt could be sent")
    assert proc.returncode == 130, err
    line = next(x for x in err.splitlines() if x.startswith("interrupted"))
    assert "finish and are kept too" not in line
    kept = [p for p in ids if cohort.is_complete(out / "patients" / p)]
    assert f"{len(kept)} of 8 patients are finished and kept" in line
    assert f"({', '.join(kept)})" in line
    rest = [p for p in ids if p not in kept]
    for p in rest:  # every other patient is named as lost or not started, and is not on disk
        assert p in line.split("finished and kept")[1]
        assert not (out / "patients" / p).exists()
    assert leftovers(out) == [] and not (out / LOCK_FILE).exists()
    assert "--resume" in line


# ------------------------------------------- class 5: unexpected errors in one patient
def _patch_for(monkeypatch, target, attr, patient_file: str, exc: BaseException):
    """Make the reader ``target.attr(path, ...)`` raise ``exc`` for ``patient_file`` only."""
    real = getattr(target, attr)

    def deep(path, *a, **k):
        if str(path) == patient_file:
            raise exc
        return real(path, *a, **k)

    monkeypatch.setattr(target, attr, deep)


@pytest.mark.parametrize("step,exc", [
    ("load", ValueError("invalid literal for int() with base 10: 'abc'")),
    ("load", KeyError("ROIContourSequence")),
    ("match", KeyError("Parotid_L")),
    ("dvh", MemoryError()),
    ("metrics", ZeroDivisionError("division by zero")),
    ("write", OSError(28, "No space left on device")),
])
def test_unexpected_error_in_one_patient_is_recorded(tmp_path, monkeypatch, capsys, step, exc):
    m = make_cohort(tmp_path, ids=("P1", "P2", "P3"))
    bad_ref = str(tmp_path / "P2" / "rs_ref.dcm")
    if step == "load":
        from soars_dose import load as case_mod

        _patch_for(monkeypatch, case_mod, "read_rtstruct", bad_ref, exc)
    else:
        import soars_dose.audit as audit_mod
        import soars_dose.dose.compare as compare
        import soars_dose.outputs as outputs_mod

        target, attr = {"match": (audit_mod, "match_sets"), "dvh": (compare, "compute_dvh"),
                        "metrics": (audit_mod, "contour_metrics_for_case"),
                        "write": (outputs_mod, "write_output_dir")}[step]
        real = getattr(target, attr)

        def deep(*a, **k):
            first = a[0]
            who = getattr(first, "patient", None) or str(first)
            if step == "dvh":
                who = str(getattr(first, "source", "")) + str(k.get("source", ""))
            if "P2" in who:
                raise exc
            return real(*a, **k)

        monkeypatch.setattr(target, attr, deep)
    rc, err = cli(["cohort", m, "--out", tmp_path / "out", "--jobs", "1", "--quiet"], capsys)
    assert rc == 3, err
    out = tmp_path / "out"
    res = load_cohort(out)
    assert list(res.patients["status"]) == ["ok", "failed", "ok"]
    f = res.failures.iloc[0]
    assert f["patient"] == "P2" and f["step"] == step
    assert f["error"] == type(exc).__name__
    assert "Traceback" in f["traceback"]
    if str(exc):
        assert str(exc).strip("'") in f["message"]
    if step == "load":
        assert f["file"] == bad_ref
    if step == "write":
        assert f["file"] == str(out / "patients" / "P2")
    if step == "dvh":  # the RTSTRUCT whose structure was being computed
        assert f["file"] in (str(tmp_path / "P2" / "rs_ref.dcm"),
                             str(tmp_path / "P2" / "rs_auto.dcm"))
    failed = json.loads((out / "patients" / "P2" / "FAILED.json").read_text())
    assert failed["step"] == step and failed["error"] == type(exc).__name__
    assert failed["file"] == f["file"]
    # the console names the patient, the step and (when known) the file
    assert f"P2 (line 3) in step {step}" in err and type(exc).__name__ in err
    if step == "load":
        assert bad_ref in err
    # the others are right: closed-form mean dose of the reference Parotid_L
    ok = res.stats[(res.stats["set"] == "reference") & (res.stats["roi"] == "Parotid_L")]
    assert list(ok["patient"]) == ["P1", "P3"]
    assert np.allclose(ok["mean_gy"], MEAN_GY[0], atol=0.05)


# ----------------------------------------------- class 6: damaged Parquet in `report`
def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "csv":  # a CSV file renamed; cohort/dvh has no CSV twin, so make one
        twin = path.with_suffix(".csv")
        path.write_bytes(twin.read_bytes() if twin.exists()
                         else pd.read_parquet(path).to_csv(index=False).encode())
    elif how == "footer":  # valid magic at both ends, garbage between
        path.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")


@pytest.mark.parametrize("table", ["stats", "dvh", "patients"])
@pytest.mark.parametrize("how", ["truncated", "random", "empty", "csv", "footer"])
def test_report_refuses_damaged_parquet_by_name(small, tmp_path, capsys, table, how):
    out = _copy(small["out"], tmp_path / "out")
    bad = out / "cohort" / f"{table}.parquet"
    _damage(bad, how)
    rc, err = cli(["report", out], capsys)
    assert rc == 2
    assert str(bad) in err and "--resume" in err and "resume=True" not in err
    assert not (out / "report").exists()
    # from Python: the same refusal, in Python's spelling
    with pytest.raises(InputError, match="resume=True"):
        load_cohort(out)


@pytest.mark.parametrize("how", ["truncated", "random", "empty", "csv"])
def test_resume_recomputes_a_patient_with_damaged_tables(small, tmp_path, capsys, how):
    out = _copy(small["out"], tmp_path / "out")
    bad = out / "patients" / "P2" / "stats.parquet"
    _damage(bad, how)
    rc, err = cli(["cohort", small["manifest"], "--out", out, "--resume", "--jobs", "1",
                   "--quiet"], capsys)
    assert rc == 0, err
    res = load_cohort(out)
    assert list(res.patients["resumed"]) == [True, False]
    assert any("P2" in n and "damaged" in n for n in res.provenance["messages"])
    ref = res.stats[(res.stats["set"] == "reference") & (res.stats["roi"] == "SpinalCord")]
    assert np.allclose(ref["mean_gy"], MEAN_GY[1], atol=0.05)
    rc, err = cli(["report", out], capsys)
    assert rc == 0, err


def test_report_on_existing_report_names_its_option(small, tmp_path, capsys):
    out = _copy(small["out"], tmp_path / "out")
    (out / "report").mkdir()
    rc, err = cli(["report", out], capsys)
    assert rc == 2 and "--overwrite" in err and "--out" not in err
    assert str(out / "report") in err


def test_corrupt_cohort_provenance_in_report(small, tmp_path, capsys):
    out = _copy(small["out"], tmp_path / "out")
    (out / "cohort" / "provenance.json").write_text("{truncated")
    rc, err = cli(["report", out], capsys)
    assert rc == 2 and "provenance.json" in err and "--resume" in err


# ------------------------------------------------- class 8: warnings on the console
def test_cohort_warnings_reach_stderr_per_patient(tmp_path, capsys):
    # P1: a reference ROI the alias table does not know; P2: a structure partly outside the
    # dose grid (x up to 39 mm; the grid ends at x = 37.5 mm)
    p1 = case(tmp_path / "P1", ref_names=("Parotid_L", "Mystery_Block"))
    from soars_dose.structures import Structure

    from ..helpers import disc_stack, write_case

    p2 = write_case(tmp_path / "P2", {
        "ref": [Structure("Parotid_L", 1, disc_stack(-10, 0, 6, -8, 8)),
                Structure("Parotid_R", 2, disc_stack(33, 0, 6, -8, 8))],
        "auto": [Structure("Parotid_L", 1, disc_stack(-9, 0, 6, -8, 8)),
                 Structure("Parotid_R", 2, disc_stack(34, 0, 6, -8, 8))]})
    m = manifest(tmp_path / "m.csv", {"P1": p1, "P2": p2})
    rc, err = cli(["cohort", m, "--out", tmp_path / "out", "--jobs", "1", "--quiet"], capsys)
    assert rc == 0, err
    lines = [x for x in err.splitlines() if x.startswith("warning: ")]
    assert any(x.startswith("warning: P1: ") and "Mystery_Block" in x for x in lines)
    partial = [x for x in lines if "partly outside the dose grid" in x]
    assert len(partial) == 1 and partial[0].startswith("warning: P2: 2 structures")
    assert sum("dose grid" in x for x in lines) == 1, err  # one line for the patient
    stats = pd.read_parquet(tmp_path / "out" / "cohort" / "stats.parquet")
    rows = stats[(stats["patient"] == "P2") & (stats["status"] == "partial")]
    assert sorted(rows["set"]) == ["auto", "reference"] and set(rows["roi"]) == {"Parotid_R"}
    for _, r in rows.iterrows():
        pct = f"{100 * r['coverage']:.1f} %"
        assert f"Parotid_R (set {r['set']}) {pct}" in partial[0]
    # closed form: the share of a disc (r 6 mm, centre 33 or 34 mm) left of the grid's
    # edge at x = 37.5 mm (last voxel centre 36.25 mm): 92.8 % and 84.8 %
    cov = rows.set_index("set")["coverage"]
    assert cov["reference"] == pytest.approx(0.928, abs=0.015)
    assert cov["auto"] == pytest.approx(0.848, abs=0.015)
    assert len(lines) == len(set(lines))  # each warning once


def test_cohort_warnings_are_issued_in_python(small, tmp_path):
    p1 = case(tmp_path / "P1", ref_names=("Parotid_L", "Mystery_Block"))
    m = manifest(tmp_path / "m.csv", {"P1": p1})
    with pytest.warns(SoarsDoseWarning, match="^P1: .*Mystery_Block"):
        run_cohort(m, tmp_path / "out", jobs=1, progress=False)
