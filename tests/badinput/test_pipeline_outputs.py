"""Output safety: CSV formula injection (class 1) and full / read-only disks (class 2)."""

from __future__ import annotations

import csv
import errno
import os

import numpy as np
import pandas as pd
import pytest

from soars_dose import outputs
from soars_dose.errors import OutputWriteError
from soars_dose.outputs import write_output_dir

from .pipeline_builders import MEAN_GY, case, cli, cohort, leftovers

HOSTILE = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1:A2)", "\tTAB", "\rCR",
           "=cmd|' /C calc'!A0"]
HARMLESS = ["Parotid_L", "a=b", "x-1", "", "'already quoted", "1e-3"]


def _csv_cells(path, column):
    with open(path, newline="", encoding="utf-8") as f:
        return [r[column] for r in csv.DictReader(f)]


# ------------------------------------------------------------- class 1: CSV injection
def test_csv_safe_prefixes_only_formula_strings(tmp_path):
    values = HOSTILE + HARMLESS
    df = pd.DataFrame({
        "roi": values,
        "note": pd.array(values, dtype="string"),
        "cat": pd.Categorical(values),
        "dose": np.linspace(-5, 7, len(values)),      # negative numbers stay numbers
        "count": np.arange(-6, len(values) - 6),
    })
    out = write_output_dir(tmp_path / "o", {"t": df}, {})
    mixed_df = pd.DataFrame({"mixed": [1, -2.5, None, "=1+2", "-x", "ok", "@x", 3, -4]})
    write_output_dir(tmp_path / "m", {"t": mixed_df}, {}, formats=("csv",))
    want = [("'" + v) if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v for v in values]
    for col in ("roi", "note", "cat"):
        got = _csv_cells(out / "t.csv", col)
        # the csv module and pandas both read the text back, prefix included
        assert got == want, col
        back = pd.read_csv(out / "t.csv", keep_default_na=False, dtype=str)[col]
        assert list(back) == want, col
    mixed = _csv_cells(tmp_path / "m" / "t.csv", "mixed")
    assert mixed[:7] == ["1", "-2.5", "", "'=1+2", "'-x", "ok", "'@x"]
    assert mixed[7:9] == ["3", "-4"]  # numbers in an object column are not text: untouched
    back = pd.read_csv(out / "t.csv")
    assert back["dose"].dtype == float and back["dose"].min() == -5.0
    assert back["count"].dtype == np.int64 and list(back["count"]) == list(df["count"])
    # Parquet keeps the raw values
    raw = pd.read_parquet(out / "t.parquet")
    assert list(raw["roi"]) == values and list(raw["note"]) == values
    assert list(df["roi"]) == values  # the caller's frame is not modified


def test_compare_csv_tables_hold_no_live_formula(tmp_path, capsys):
    files = case(tmp_path / "in", ref_names=('=HYPERLINK("x")', "-SpinalCord"),
                 auto_names=("@SUM(A1)", "+Cord"))
    rc, err = cli(["compare", "--rtdose", files["rtdose"], "--reference", files["ref"],
                   "--set", f"auto={files['auto']}", "--out", tmp_path / "o"], capsys)
    assert rc == 0
    stats = pd.read_csv(tmp_path / "o" / "stats.csv")
    ref = stats[stats["set"] == "reference"].set_index("roi")
    assert ref.loc["SpinalCord", "roi_original"] == "'-SpinalCord"
    # the number is right: the closed-form mean of the cylinder at x = 12 mm
    assert ref.loc["SpinalCord", "mean_gy"] == pytest.approx(MEAN_GY[1], abs=0.05)
    raw = pd.read_parquet(tmp_path / "o" / "stats.parquet")
    assert "-SpinalCord" in set(raw["roi_original"])
    for table in ("stats", "names", "dvh", "contour_metrics"):
        with open(tmp_path / "o" / f"{table}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        for row in rows[1:]:
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), (table, cell)
                # a leading '-' is only ever a number
                if cell.startswith("-"):
                    float(cell)
    names = pd.read_csv(tmp_path / "o" / "names.csv", keep_default_na=False)
    assert "'=HYPERLINK(\"x\")" in set(names["original"]) | set(names.get("roi_original", []))


def test_cohort_tables_hostile_patient_id_and_metadata(tmp_path, capsys):
    m = cohort(tmp_path, ids=("-P1", "P2"),
               meta={"-P1": {"institution": "=cmd|' /C calc'!A0", "note": "@x"},
                     "P2": {"institution": "+A", "note": "fine"}})
    rc, err = cli(["cohort", m, "--out", tmp_path / "out", "--jobs", "1", "--quiet"], capsys)
    assert rc == 0, err
    folder = tmp_path / "out" / "cohort"
    patients = pd.read_csv(folder / "patients.csv", keep_default_na=False)
    assert list(patients["patient"]) == ["'-P1", "P2"]
    assert list(patients["institution"]) == ["'=cmd|' /C calc'!A0", "'+A"]
    assert list(patients["note"]) == ["'@x", "fine"]
    stats = pd.read_csv(folder / "stats.csv")
    assert set(stats["patient"]) == {"'-P1", "P2"}
    raw = pd.read_parquet(folder / "stats.parquet")
    assert set(raw["patient"]) == {"-P1", "P2"}
    ok = raw[(raw["set"] == "reference") & (raw["roi"] == "Parotid_L")]
    assert np.allclose(ok["mean_gy"], MEAN_GY[0], atol=0.05)
    per_patient = pd.read_csv(tmp_path / "out" / "patients" / "-P1" / "stats.csv")
    assert set(per_patient["patient"]) == {"'-P1"}


# ------------------------------------------------- class 2: full or read-only disk
def _fail_on(monkeypatch, name, err, after=0):
    """Make ``outputs.<os|pd function>`` raise OSError(err) after ``after`` good calls."""
    calls = {"n": 0}
    if name == "to_parquet":
        real = pd.DataFrame.to_parquet

        def fake(self, *a, **k):
            calls["n"] += 1
            if calls["n"] > after:
                raise OSError(err, os.strerror(err))
            return real(self, *a, **k)

        monkeypatch.setattr(pd.DataFrame, "to_parquet", fake)
        return
    real = getattr(os, name)

    def fake(*a, **k):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(err, os.strerror(err), str(a[0]) if a else None)
        return real(*a, **k)

    monkeypatch.setattr(outputs.os, name, fake)


@pytest.mark.parametrize("name,err,after", [
    ("to_parquet", errno.ENOSPC, 0),     # disk full on the first table
    ("to_parquet", errno.ENOSPC, 2),     # disk full mid-write, after two tables
    ("replace", errno.EROFS, 0),         # read-only when renaming into place
    ("fsync", errno.ENOSPC, 0),          # full when flushing provenance.json
    ("chmod", errno.EPERM, 0),
])
def test_write_output_dir_failure_named_and_nothing_left(tmp_path, monkeypatch, name, err, after):
    df = pd.DataFrame({"a": [1, 2]})
    _fail_on(monkeypatch, name, err, after)
    with pytest.raises(OutputWriteError) as exc:
        write_output_dir(tmp_path / "o", {"t1": df, "t2": df, "t3": df}, {})
    msg = str(exc.value)
    assert str(tmp_path / "o") in msg and os.strerror(err) in msg
    assert exc.value.errno == err
    assert not (tmp_path / "o").exists()
    assert os.listdir(tmp_path) == []  # no temporary folder left


def test_failed_replace_keeps_the_previous_folder(tmp_path, monkeypatch):
    first = write_output_dir(tmp_path / "o", {"t": pd.DataFrame({"a": [1]})}, {"n": 1})
    real = os.replace
    calls = {"n": 0}

    def second_fails(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # old folder moved aside, the new one cannot be moved in
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", second_fails)
    with pytest.raises(OutputWriteError):
        write_output_dir(first, {"t": pd.DataFrame({"a": [2]})}, {"n": 2}, overwrite=True)
    assert pd.read_parquet(first / "t.parquet")["a"].tolist() == [1]
    assert sorted(os.listdir(tmp_path)) == ["o"]


def test_read_only_folder_cli(tmp_path, capsys, monkeypatch):
    files = case(tmp_path / "in")
    parent = tmp_path / "ro"
    parent.mkdir()
    os.chmod(parent, 0o555)
    try:
        if os.access(parent, os.W_OK):  # root ignores permissions: simulate the file system
            _fail_on(monkeypatch, "replace", errno.EROFS)
        rc, err = cli(["dvh", "--rtstruct", files["ref"], "--rtdose", files["rtdose"],
                       "--out", parent / "out"], capsys)
    finally:
        os.chmod(parent, 0o755)
    assert rc == 2
    assert str(parent / "out") in err or str(parent) in err
    assert "read-only" in err.lower() or "permission" in err.lower()
    assert not (parent / "out").exists() and leftovers(parent) == []


@pytest.mark.parametrize("err,words", [(errno.ENOSPC, "space"), (errno.EROFS, "read-only")])
def test_full_disk_in_cohort_cli(tmp_path, capsys, monkeypatch, err, words):
    m = cohort(tmp_path, ids=("P1",))
    _fail_on(monkeypatch, "to_parquet", err)
    rc, msg = cli(["cohort", m, "--out", tmp_path / "out", "--jobs", "1", "--quiet"], capsys)
    # the patient cannot be written and neither can the cohort tables: exit 2, named
    assert rc == 2
    assert str(tmp_path / "out") in msg and words in msg.lower()
    assert leftovers(tmp_path / "out") == []
    assert not (tmp_path / "out" / "cohort").exists()
    assert not (tmp_path / "out" / "cohort.lock").exists()


def test_atomic_write_file_full_disk(tmp_path, monkeypatch):
    def write(f):
        f.write(b"x" * 10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputWriteError, match="No space left"):
        outputs.atomic_write_file(tmp_path / "f.bin", write)
    assert os.listdir(tmp_path) == []
