"""``--rtplan`` on compare and dvh, and the ``rtplan`` manifest column: the prescription reaches
the near-zero threshold, the report's % of prescription axis and the provenance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from soars_dose.cohort import read_manifest, run_cohort
from soars_dose.errors import InputError

from ..helpers import oars, run_cli, write_case, write_rtplan


def _cli(*args):
    return run_cli(*args)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rtplan")
    paths = write_case(root / "case", {"ref": oars(), "auto": oars(1.0)})
    # 1500 Gy: 2 % is 30 Gy, between the reference mean of Parotid_L (about 25 Gy on the
    # 30 + 0.5 Gy/mm gradient) and that of SpinalCord (about 36 Gy)
    paths["plan"] = write_rtplan(root / "rp.dcm", [("TARGET", "1200", "PTV low"),
                                                   ("TARGET", "1500", "PTV high")])
    return root, paths


def _compare(paths, out, *extra):
    return _cli("compare", "--rtdose", paths["rtdose"], "--reference", paths["ref"],
                "--set", f"auto={paths['auto']}", "--out", out, *extra)


def test_compare_takes_the_plans_prescription(inputs, tmp_path):
    _, paths = inputs
    r = _compare(paths, tmp_path / "o", "--rtplan", paths["plan"])
    assert r.returncode == 0, r.stderr
    assert "2 target prescriptions" in r.stderr and "the highest, 1500 Gy" in r.stderr
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["prescription"]["gy"] == 1500.0 and prov["prescription"]["source"] == "rtplan"
    assert prov["prescription"]["rtplan"] == str(paths["plan"])
    assert prov["settings"]["prescription_gy"] == 1500.0
    assert prov["rtplan"]["fractions_planned"] == 35
    assert any(i["role"] == "rtplan" for i in prov["inputs"])
    stats = pd.read_csv(tmp_path / "o" / "stats.csv").set_index(["set", "roi"])
    auto = stats.loc["auto"]  # the reference rows have no differences
    assert auto["near_zero_threshold_gy"].tolist() == pytest.approx([30.0, 30.0])  # 2 % of 1500
    assert pd.isna(auto.loc["Parotid_L", "diff_mean_pct"])  # reference mean < 30 Gy
    assert pd.notna(auto.loc["Parotid_L", "diff_mean_gy"])
    assert pd.notna(auto.loc["SpinalCord", "diff_mean_pct"])  # reference mean > 30 Gy
    page = (tmp_path / "o" / "report.html").read_text()
    assert '"rx":1500.0' in page and "no prescription known" not in page


def test_a_given_prescription_wins_and_the_difference_is_warned(inputs, tmp_path):
    _, paths = inputs
    r = _compare(paths, tmp_path / "o", "--rtplan", paths["plan"], "--prescription-gy", "40")
    assert r.returncode == 0, r.stderr
    line = next(m for m in r.stderr.splitlines() if "differs from the given" in m)
    assert "1500 Gy" in line and "40 Gy" in line and str(paths["plan"]) in line
    assert "--prescription-gy" in line
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["prescription"] == {"gy": 40.0, "source": "given", "given_as": "--prescription-gy",
                                    "rtplan": str(paths["plan"]), "rtplan_gy": 1500.0}
    stats = pd.read_csv(tmp_path / "o" / "stats.csv")
    auto = stats[stats["set"] == "auto"]
    assert auto["near_zero_threshold_gy"].tolist() == pytest.approx([0.8, 0.8])  # 2 % of 40 Gy


def test_dvh_with_a_bad_plan_names_the_file_and_what_to_do(inputs, tmp_path):
    root, paths = inputs
    ion = write_rtplan(root / "ion.dcm", sop_class="1.2.840.10008.5.1.4.1.1.481.8")
    r = _cli("dvh", "--rtdose", paths["rtdose"], "--rtstruct", paths["ref"], "--rtplan", ion,
             "--out", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert str(ion) in r.stderr and "RT Ion Plan" in r.stderr and "--prescription-gy" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
    other = write_rtplan(root / "other.dcm", frame="1.2.3.4")
    r = _cli("dvh", "--rtdose", paths["rtdose"], "--rtstruct", paths["ref"], "--rtplan", other,
             "--out", tmp_path / "o")
    assert r.returncode == 2 and "--allow-frame-mismatch" in r.stderr
    assert str(other) in r.stderr and str(paths["rtdose"]) in r.stderr


def _manifest(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_manifest_rtplan_column_relative_paths_and_old_manifests(inputs, tmp_path):
    root, paths = inputs
    header = ["patient", "rtdose", "reference", "set:auto", "rtplan"]
    common = [str(paths["rtdose"]), str(paths["ref"]), str(paths["auto"])]
    man = _manifest(root / "m.csv", header, [["P1", *common, "rp.dcm"], ["P2", *common, ""]])
    rows, meta = read_manifest(man)
    assert rows[0].rtplan == str(paths["plan"]) and rows[1].rtplan is None
    assert "rtplan" not in meta
    assert rows[0].inputs()["rtplan"] == str(paths["plan"]) and "rtplan" not in rows[1].inputs()
    old = _manifest(tmp_path / "old.csv", header[:-1], [["P1", *common]])
    (row,), _ = read_manifest(old)
    assert row.rtplan is None and "rtplan" not in row.inputs()
    bad = _manifest(tmp_path / "bad.csv", header, [["P1", *common, "nope.dcm"]])
    with pytest.raises(InputError, match=r"line 2: patient 'P1': rtplan 'nope.dcm' .* not found"):
        read_manifest(bad)


def test_cohort_records_the_prescription_per_patient(inputs, tmp_path):
    root, paths = inputs
    header = ["patient", "rtdose", "reference", "set:auto", "rtplan", "prescription_gy"]
    common = [str(paths["rtdose"]), str(paths["ref"]), str(paths["auto"])]
    man = _manifest(root / "m2.csv", header, [["P1", *common, "rp.dcm", ""],
                                              ["P2", *common, "rp.dcm", "50"],
                                              ["P3", *common, "", ""]])
    res = run_cohort(man, tmp_path / "out", jobs=1, progress=False)
    assert res.n_failed == 0
    prov = {p: json.loads((tmp_path / "out" / "patients" / p / "provenance.json").read_text())
            for p in ("P1", "P2", "P3")}
    assert prov["P1"]["prescription"]["source"] == "rtplan"
    assert prov["P2"]["prescription"]["source"] == "given"
    assert prov["P2"]["prescription"]["given_as"] == "manifest prescription_gy (line 3)"
    assert prov["P3"]["prescription"]["gy"] is None and prov["P3"]["rtplan"] is None
    stats = pd.read_csv(tmp_path / "out" / "cohort" / "stats.csv")
    threshold = stats.groupby("patient")["near_zero_threshold_gy"].first().to_dict()
    assert threshold == pytest.approx({"P1": 30.0, "P2": 1.0, "P3": 1.0})
    patients = pd.read_csv(tmp_path / "out" / "cohort" / "patients.csv").set_index("patient")
    assert patients["prescription_gy"].to_dict() == pytest.approx(
        {"P1": 1500.0, "P2": 50.0, "P3": float("nan")}, nan_ok=True)
    assert patients.loc["P1", "prescription_source"] == "rtplan"
