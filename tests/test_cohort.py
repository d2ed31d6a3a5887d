"""Cohort runs: manifest validation, serial / process-pool / Dask execution, failures, resume, CLI.

One synthetic cohort of 3 patients is written per module and shared; the
serial run is the reference every other execution path must reproduce
exactly (same per-patient function, deterministic computation).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from soars_dose import cohort
from soars_dose.cli.main import main
from soars_dose.cohort import load_cohort, patient_dir, read_manifest, run_cohort
from soars_dose.errors import InputError, OutputExistsError
from soars_dose.synthetic.cohort import OAR_NAMES, SUBSTITUTE_SETS, make_cohort

N = 3
SETS = ("reference",) + SUBSTITUTE_SETS
HEADER = ["patient", "rtdose", "reference", *(f"set:{s}" for s in SUBSTITUTE_SETS), "ct",
          "institution"]


def _row(pc, root: Path, institution: str, *, ct: bool = True, patient: str | None = None,
         rtdose: str | None = None) -> list[str]:
    rel = lambda p: str(Path(p).relative_to(root))  # noqa: E731 - paths relative to the manifest
    return [pc.patient_id if patient is None else patient, rtdose or rel(pc.rtdose), rel(pc.reference),
            *(rel(pc.sets[s]) for s in SUBSTITUTE_SETS), rel(pc.ct_dir) if ct else "",
            institution]


def _write_manifest(path: Path, rows: list[list[str]], header=HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort-data")
    cases = make_cohort(root, n_patients=N, seed=11, progress=False)
    rows = [_row(pc, root, "ABC"[i]) for i, pc in enumerate(cases)]
    return {"root": root, "cases": cases, "manifest": _write_manifest(root / "manifest.csv", rows)}


@pytest.fixture(scope="module")
def serial(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "serial"
    return run_cohort(data["manifest"], out, jobs=1, progress=False)


def _sorted(df: pd.DataFrame, keys=("patient", "set", "roi")) -> pd.DataFrame:
    return df.sort_values(list(keys)).reset_index(drop=True)


# ------------------------------------------------------------------ serial
def test_serial_run_union_tables(serial, data):
    res = serial
    assert res.n_ok == N and res.n_failed == 0
    ids = [pc.patient_id for pc in data["cases"]]
    assert list(res.patients["patient"]) == ids
    assert list(res.patients["institution"]) == ["A", "B", "C"]
    assert list(res.patients["line"]) == [2, 3, 4]
    assert set(res.patients["status"]) == {"ok"} and (res.patients["seconds"] > 0).all()
    assert len(res.failures) == 0
    # one row per patient x set x reference OAR (a set's missing OAR is a 'missing' row)
    assert len(res.stats) == N * len(SETS) * len(OAR_NAMES)
    assert list(dict.fromkeys(res.stats["patient"])) == ids
    assert set(res.stats["set"]) == set(SETS)
    # the union is exactly the per-patient folders, in manifest order
    for t in ("stats", "dvh", "names", "contour_metrics"):
        parts = [pd.read_parquet(patient_dir(res.out, p) / f"{t}.parquet") for p in ids]
        assert len(getattr(res, t)) == sum(len(p) for p in parts), t
    assert len(res.dvh) > 0 and set(res.dvh["patient"]) == set(ids)
    assert set(res.names["patient"]) == set(ids)
    for p in ids:
        prov = json.loads((patient_dir(res.out, p) / "provenance.json").read_text())
        assert prov["patient"] == p and prov["cohort"]["line"] == ids.index(p) + 2
        assert any(i["role"] == "rtdose" and i["sha256"] for i in prov["inputs"])
        assert (patient_dir(res.out, p) / "stats.csv").is_file()
    # the cohort folder reads back identically
    back = load_cohort(res.out)
    for t in cohort.COHORT_TABLES:
        pd.testing.assert_frame_equal(getattr(back, t), getattr(res, t), check_dtype=False,
                                      obj=t)
    assert back.provenance["n_ok"] == N
    assert (res.out / "cohort" / "stats.csv").is_file()


def test_contour_metrics_in_cohort_tables(serial):
    cm = serial.contour_metrics
    # one row per (substitute set, reference OAR) of every patient
    assert len(cm) == N * len(SUBSTITUTE_SETS) * len(OAR_NAMES)
    assert set(cm["set"]) == set(SUBSTITUTE_SETS)
    assert list(dict.fromkeys(cm["patient"])) == [f"PHANTOM_{i:03d}" for i in range(1, N + 1)]
    ok = cm[cm["status"] == "ok"]
    assert len(ok) > 0 and ok["dice"].between(0, 1).all()


# --------------------------------------------------------- other backends
def test_process_pool_matches_serial(serial, data, tmp_path):
    res = run_cohort(data["manifest"], tmp_path / "pool", jobs=2, progress=False)
    assert "process pool (2 processes)" in res.provenance["backend"]
    assert res.n_ok == N
    pd.testing.assert_frame_equal(_sorted(res.stats), _sorted(serial.stats))
    pd.testing.assert_frame_equal(res.dvh, serial.dvh)
    pd.testing.assert_frame_equal(res.contour_metrics, serial.contour_metrics)


def test_dask_matches_serial(serial, data, tmp_path):
    distributed = pytest.importorskip("distributed")
    # two patients keep it short: one worker process computes them one after the other
    ids = [pc.patient_id for pc in data["cases"][:2]]
    manifest = _absolute(_write_manifest(tmp_path / "m.csv", [
        _row(pc, data["root"], "AB"[i]) for i, pc in enumerate(data["cases"][:2])]), data["root"])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        res = run_cohort(manifest, tmp_path / "dask", scheduler=cluster, progress=False)
    assert res.provenance["backend"].startswith("dask distributed")
    assert res.n_ok == 2
    want = serial.stats[serial.stats["patient"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(res.stats, want)
    want = serial.contour_metrics[serial.contour_metrics["patient"].isin(ids)]
    pd.testing.assert_frame_equal(res.contour_metrics, want.reset_index(drop=True))


# ---------------------------------------------------------------- failures
def test_broken_patient_is_recorded_and_others_finish(data, tmp_path):
    root, pc = data["root"], data["cases"][0]
    bad = root / "broken_RTDOSE.dcm"
    bad.write_bytes(b"this is not DICOM \x00\x01\x02" * 50)
    manifest = _write_manifest(tmp_path / "m.csv", [
        _row(pc, root, "A", patient="BROKEN", rtdose=str(bad)),
        _row(pc, root, "B"),
    ])
    # the relative paths point to the cohort folder: make them absolute for this manifest
    res = run_cohort(_absolute(manifest, root), tmp_path / "out", jobs=1, progress=False)
    assert list(res.patients["status"]) == ["failed", "ok"]
    assert list(res.failures["patient"]) == ["BROKEN"]
    f = res.failures.iloc[0]
    assert f["error"] == "DicomReadError" and "broken_RTDOSE.dcm" in f["message"]
    assert f["line"] == 2 and f["traceback"] == ""  # expected errors carry no traceback
    failed = json.loads((tmp_path / "out" / "patients" / "BROKEN" / "FAILED.json").read_text())
    assert failed["error"] == "DicomReadError" and failed["line"] == 2
    assert not (tmp_path / "out" / "patients" / "BROKEN" / "stats.parquet").exists()
    assert set(res.stats["patient"]) == {pc.patient_id}


def test_unexpected_error_keeps_traceback(data, tmp_path, monkeypatch):
    from soars_dose import audit

    def boom(*a, **k):
        raise ZeroDivisionError("synthetic bug")

    monkeypatch.setattr(audit, "compare", boom)
    manifest = _write_manifest(tmp_path / "m.csv", [_row(data["cases"][0], data["root"], "A")])
    res = run_cohort(_absolute(manifest, data["root"]), tmp_path / "out", jobs=1, progress=False)
    f = res.failures.iloc[0]
    assert f["error"] == "ZeroDivisionError" and "synthetic bug" in f["message"]
    assert "Traceback" in f["traceback"] and "boom" in f["traceback"]
    assert len(res.stats) == 0 and res.n_failed == 1


# ------------------------------------------------------------------ resume
def test_resume_recomputes_only_missing_patient(serial, data, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(serial.out, out)
    shutil.rmtree(out / "patients" / "PHANTOM_002")
    kept = out / "patients" / "PHANTOM_001" / "provenance.json"
    before = kept.stat().st_mtime_ns
    # from Python the message names the Python argument (the CLI test checks --resume)
    with pytest.raises(OutputExistsError, match="resume=True"):
        run_cohort(data["manifest"], out, jobs=1, progress=False)
    res = run_cohort(data["manifest"], out, jobs=1, resume=True, progress=False)
    assert list(res.patients["resumed"]) == [True, False, True]
    assert kept.stat().st_mtime_ns == before
    assert cohort.is_complete(out / "patients" / "PHANTOM_002")
    assert res.n_ok == N
    pd.testing.assert_frame_equal(res.stats, serial.stats)
    # other settings: refused rather than mixing two computations in one cohort
    from soars_dose.audit import Settings

    with pytest.raises(InputError, match="other settings"):
        run_cohort(data["manifest"], out, jobs=1, resume=True, progress=False,
                   settings=Settings(bin_width_gy=0.02))


def test_interrupt_keeps_finished_patients(data, tmp_path, monkeypatch):
    manifest = _write_manifest(tmp_path / "m.csv", [_row(pc, data["root"], "A")
                                                    for pc in data["cases"][:2]])
    manifest = _absolute(manifest, data["root"])
    real = cohort.run_patient
    calls = []

    def terminated_at_second(task):
        calls.append(task.row.patient)
        if len(calls) == 2:  # as `kill PID` would: SIGTERM to this process
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
        return real(task)

    monkeypatch.setattr(cohort.run, "run_patient", terminated_at_second)
    out = tmp_path / "out"
    handler = signal.getsignal(signal.SIGTERM)
    # from Python the message names the Python argument (the CLI spells --resume)
    with pytest.raises(cohort.CohortInterrupted, match="resume=True") as exc:
        run_cohort(manifest, out, jobs=1, progress=False)
    assert signal.getsignal(signal.SIGTERM) == handler  # restored
    assert "1 of 2 patients are finished" in str(exc.value)
    # exactly what happened: the running patient was stopped and is lost
    assert "(PHANTOM_001)" in str(exc.value) and "SIGTERM" in str(exc.value)
    assert "1 were running and were stopped; their work is lost (PHANTOM_002)" in str(exc.value)
    assert "finish and are kept too" not in str(exc.value)
    assert not (out / cohort.LOCK_FILE).exists()  # released on the interrupt
    assert cohort.is_complete(out / "patients" / "PHANTOM_001")
    assert not (out / "patients" / "PHANTOM_002").exists()
    assert not (out / "cohort").exists()
    monkeypatch.setattr(cohort.run, "run_patient", real)
    res = run_cohort(manifest, out, jobs=1, resume=True, progress=False)
    assert list(res.patients["resumed"]) == [True, False] and res.n_ok == 2


# ----------------------------------------------------------------- manifest
def test_manifest_errors_list_every_line(data, tmp_path):
    root, pc = data["root"], data["cases"][0]
    rows = [
        _row(pc, root, "A"),
        _row(pc, root, "A"),                                  # line 3: duplicate id
        _row(pc, root, "A", patient=""),                      # line 4: empty id
        _row(pc, root, "A", patient="P4", rtdose="nope.dcm"),  # line 5: missing file
        ["P5", "a.dcm;b.dcm", *_row(pc, root, "A")[2:]],      # line 6: two doses, no sum
        ["P6", "x"],                                          # line 7: short row
    ]
    manifest = _write_manifest(root / "bad_manifest.csv", rows)
    with pytest.raises(InputError) as exc:
        read_manifest(manifest)
    msg = str(exc.value)
    assert "line 3: patient id 'PHANTOM_001' already used on line 2" in msg
    assert "line 4: empty patient id" in msg
    assert "line 5: patient 'P4': rtdose 'nope.dcm'" in msg and "file not found" in msg
    assert "line 6:" in msg and "sum_doses" in msg and "a.dcm" in msg
    assert "line 7: 2 cells but the header has 8 columns" in msg
    assert "line 2" not in msg.replace("on line 2", "")

    header = ["patient", "rtdose", "set:reference", "set:bad name", "status"]
    with pytest.raises(InputError) as exc:
        read_manifest(_write_manifest(tmp_path / "h.csv", [["P1", "x", "y", "z", "w"]], header))
    msg = str(exc.value)
    assert "line 1: missing required column(s) reference" in msg
    assert "'set:reference'" in msg and "'set:bad name'" in msg and "'status'" in msg


def test_manifest_blank_ct_and_metadata(data, tmp_path):
    root = data["root"]
    manifest = _write_manifest(root / "blank_ct.csv", [
        _row(data["cases"][0], root, "A", ct=False),
        ["# a comment line"] + [""] * 7,
    ])
    rows, meta = read_manifest(manifest)
    assert meta == ["institution"] and len(rows) == 1
    r = rows[0]
    assert r.ct is None and r.metadata == {"institution": "A"} and r.line == 2
    assert Path(r.reference).is_absolute() and list(r.sets) == list(SUBSTITUTE_SETS)


def test_incomplete_patient_folder_is_not_complete(serial, tmp_path):
    folder = tmp_path / "P"
    shutil.copytree(serial.out / "patients" / "PHANTOM_001", folder)
    assert cohort.is_complete(folder)
    (folder / "stats.parquet").unlink()
    assert not cohort.is_complete(folder)


def test_unsafe_patient_id_refused(data, tmp_path):
    root, pc = data["root"], data["cases"][0]
    manifest = _write_manifest(tmp_path / "m.csv", [
        _row(pc, root, "A", patient="../evil"),
        _row(pc, root, "A", patient=".hidden"),
        _row(pc, root, "A", patient="a/b"),
    ])
    out = tmp_path / "out"
    with pytest.raises(InputError) as exc:
        run_cohort(_absolute(manifest, root), out, jobs=1, progress=False)
    for line, pid in ((2, "../evil"), (3, ".hidden"), (4, "a/b")):
        assert f"line {line}: patient id {pid!r} is not safe as a folder name" in str(exc.value)
    assert not out.exists()  # validated before anything was written
    for pid in ("CON", "nul.txt", "P1."):
        assert cohort.check_patient_id(pid) is not None
    assert cohort.check_patient_id("P-01_a.b") is None
    with pytest.raises(InputError):
        patient_dir(out, "../evil")


# ---------------------------------------------------------------------- CLI
def test_cli_cohort_end_to_end(data, tmp_path, capsys):
    root = data["root"]
    manifest = _write_manifest(root / "one.csv", [_row(data["cases"][2], root, "C")])
    out = tmp_path / "cli"
    args = ["cohort", str(manifest), "--out", str(out), "--jobs", "1", "--quiet",
            "--vgy", "20"]
    assert main(args) == 0
    stats = pd.read_csv(out / "cohort" / "stats.csv")
    assert set(stats["patient"]) == {"PHANTOM_003"} and "v20gy_cc" in stats.columns
    patients = pd.read_parquet(out / "cohort" / "patients.parquet")
    assert list(patients["institution"]) == ["C"]
    prov = json.loads((out / "cohort" / "provenance.json").read_text())
    assert prov["settings"]["v_gy"] == [20.0]
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert main(args + ["--overwrite"]) == 0
    bad = _write_manifest(root / "bad.csv", [_row(data["cases"][2], root, "C", patient="../x")])
    assert main(["cohort", str(bad), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "line 2" in capsys.readouterr().err


def _absolute(manifest: Path, root: Path) -> Path:
    """Rewrite the manifest's relative paths against ``root`` (it lives elsewhere)."""
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    path_cols = {i for i, h in enumerate(rows[0]) if h in ("rtdose", "reference", "ct")
                 or h.startswith("set:")}
    for r in rows[1:]:
        for i in path_cols:
            if i < len(r) and r[i]:
                r[i] = ";".join(str(p if Path(p).is_absolute() else root / p)
                                for p in r[i].split(";"))
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return manifest
