"""``--ct-series`` on the command line and the ``ct_series`` manifest column (by subprocess)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from soars_dose.cohort import read_manifest

from ..helpers import oars, run_cli, write_case, write_ct_folder


def _cli(*args):
    return run_cli(*args)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctseries")
    paths = write_case(root / "case", {"ref": oars(), "auto": oars(1.0)})
    uids = write_ct_folder(root / "ct", [{"description": "Planning CT", "thickness": 2.5,
                                          "acquisition_date": "20240131"},
                                         {"description": "CBCT", "thickness": 5.0,
                                          "series_date": "20240301"}])
    return root, paths, uids


def test_compare_without_a_choice_names_the_flag_and_lists_the_series(inputs, tmp_path):
    root, paths, uids = inputs
    r = _cli("compare", "--rtdose", paths["rtdose"], "--reference", paths["ref"],
             "--set", f"auto={paths['auto']}", "--ct", root / "ct", "--out", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert "--ct-series UID" in r.stderr and "ct_series=" not in r.stderr
    assert all(u in r.stderr for u in uids)
    assert "'Planning CT', 20 slices, 2.5 mm slices, acquired 2024-01-31" in r.stderr
    assert "'CBCT', 10 slices, 5 mm slices, acquired 2024-03-01" in r.stderr
    assert "Traceback" not in r.stderr


def test_dvh_with_a_choice_runs_and_an_unknown_uid_lists_the_folder(inputs, tmp_path):
    root, paths, uids = inputs
    r = _cli("dvh", "--rtdose", paths["rtdose"], "--rtstruct", paths["ref"], "--ct", root / "ct",
             "--ct-series", uids[1], "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    r = _cli("dvh", "--rtdose", paths["rtdose"], "--rtstruct", paths["ref"], "--ct", root / "ct",
             "--ct-series", "9.9.9", "--out", tmp_path / "o2")
    assert r.returncode == 2
    assert "no CT series with SeriesInstanceUID 9.9.9" in r.stderr
    assert all(u in r.stderr for u in uids)


def _manifest(path: Path, rows: list[list[str]], header: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_cohort_ct_series_column_reaches_the_loader(inputs, tmp_path):
    root, paths, uids = inputs
    header = ["patient", "rtdose", "reference", "set:auto", "ct", "ct_series"]
    common = [str(paths["rtdose"]), str(paths["ref"]), str(paths["auto"]), str(root / "ct")]
    man = _manifest(tmp_path / "m.csv", [["P1", *common, uids[0]], ["P2", *common, ""]], header)
    rows, _ = read_manifest(man)
    assert [r.ct_series for r in rows] == [uids[0], None]
    r = _cli("cohort", man, "--out", tmp_path / "out", "--jobs", "1", "--quiet")
    assert r.returncode == 3, r.stderr  # P1 ran, P2 needs a choice
    failures = pd.read_csv(tmp_path / "out" / "cohort" / "failures.csv")
    assert list(failures["patient"]) == ["P2"]
    msg = failures["message"].iloc[0]
    assert "the ct_series column of the manifest (line 3)" in msg and uids[1] in msg
    assert "--ct-series" not in msg  # a cohort chooses in the manifest, not by a flag
    assert (tmp_path / "out" / "patients" / "P1").is_dir()


def test_manifest_without_the_column_still_loads_and_keeps_old_inputs(inputs, tmp_path):
    root, paths, _ = inputs
    header = ["patient", "rtdose", "reference", "set:auto", "ct"]
    man = _manifest(tmp_path / "m.csv", [["P1", str(paths["rtdose"]), str(paths["ref"]),
                                          str(paths["auto"]), ""]], header)
    (row,), _ = read_manifest(man)
    assert row.ct_series is None
    # results written before the column existed recorded these inputs: resume still matches
    assert "ct_series" not in row.inputs()


def test_ct_series_without_ct_is_refused_in_the_manifest(inputs, tmp_path):
    root, paths, uids = inputs
    header = ["patient", "rtdose", "reference", "set:auto", "ct", "ct_series"]
    man = _manifest(tmp_path / "m.csv", [["P1", str(paths["rtdose"]), str(paths["ref"]),
                                          str(paths["auto"]), "", uids[0]]], header)
    from soars_dose.errors import InputError

    with pytest.raises(InputError, match="line 2.*ct_series .* ct is blank"):
        read_manifest(man)


def test_segment_without_a_choice_names_the_flag(inputs, tmp_path):
    pytest.importorskip("torch")
    root, _, uids = inputs
    r = _cli("segment", root / "ct", "--out", tmp_path / "rs.dcm", "--quiet")
    assert r.returncode == 2, r.stderr
    assert "--ct-series UID" in r.stderr and all(u in r.stderr for u in uids)
    assert not (tmp_path / "rs.dcm").exists()
