"""The ``soars-dose`` command: dvh, compare and demo, and its error handling."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from soars_dose.cli.main import main

from ..helpers import oars, write_case


@pytest.fixture()
def case_files(tmp_path):
    return write_case(tmp_path / "in", {"ref": oars(), "auto": oars(1.5, ("L Parotid", "Cord"))})


def test_dvh_command(case_files, tmp_path, capsys):
    out = tmp_path / "dvh"
    rc = main(["dvh", "--rtstruct", str(case_files["ref"]), "--rtdose", str(case_files["rtdose"]),
               "--out", str(out), "--vgy", "20", "--dx", "5"])
    assert rc == 0
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["set"]) == {"rtstruct"}
    assert set(stats["roi"]) == {"Parotid_L", "SpinalCord"}
    assert {"v20gy_cc", "v20gy_pct", "d5_gy"} <= set(stats.columns)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["v_gy"] == [20.0]
    # a second run refuses to overwrite
    rc = main(["dvh", "--rtstruct", str(case_files["ref"]), "--rtdose", str(case_files["rtdose"]),
               "--out", str(out)])
    assert rc == 2
    assert "--overwrite" in capsys.readouterr().err


def test_compare_command(case_files, tmp_path):
    out = tmp_path / "cmp"
    rc = main(["compare", "--rtdose", str(case_files["rtdose"]), "--reference",
               str(case_files["ref"]), "--set", f"auto={case_files['auto']}", "--out", str(out)])
    assert rc == 0
    stats = pd.read_parquet(out / "stats.parquet")
    auto = stats[stats["set"] == "auto"].set_index("roi")
    assert auto.loc["Parotid_L", "roi_original"] == "L Parotid"
    # shifted +1.5 mm in a 0.5 Gy/mm field
    assert auto.loc["Parotid_L", "diff_mean_gy"] == pytest.approx(0.75, abs=1e-3)


def test_compare_with_user_alias_file(case_files, tmp_path):
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text("exact:\n  Mystery: SpinalCord\n")
    from soars_dose.structures import Structure

    sub = [Structure("Mystery", 1, oars()[1].contours)]
    files = write_case(tmp_path / "x", {"ref": oars(), "m": sub})
    out = tmp_path / "cmp"
    rc = main(["compare", "--rtdose", str(files["rtdose"]), "--reference", str(files["ref"]),
               "--set", f"m={files['m']}", "--names", str(aliases), "--out", str(out)])
    assert rc == 0
    st = pd.read_csv(out / "stats.csv").set_index(["set", "roi"])
    assert st.loc[("m", "SpinalCord"), "status"] == "ok"
    assert st.loc[("m", "Parotid_L"), "status"] == "missing"


@pytest.mark.parametrize("args,message", [
    (["--set", "reference=x.dcm"], "reserved"),
    (["--set", "nonsense"], "NAME=RTSTRUCT"),
    (["--set", "a/b=x.dcm"], "set name"),
])
def test_compare_bad_arguments(case_files, tmp_path, capsys, args, message):
    rc = main(["compare", "--rtdose", str(case_files["rtdose"]), "--reference",
               str(case_files["ref"]), *args, "--out", str(tmp_path / "o")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_alias_file_names_the_file(case_files, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("organs: [unclosed\n")
    rc = main(["compare", "--rtdose", str(case_files["rtdose"]), "--reference",
               str(case_files["ref"]), "--set", f"auto={case_files['auto']}",
               "--names", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_demo_one_patient(tmp_path):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--patients", "1", "--quiet"])
    assert rc == 0
    stats = pd.read_csv(out / "audit" / "cohort" / "stats.csv")
    assert set(stats["set"]) == {"reference", "soars", "revised", "reader"}
    study = {"Brainstem", "Eye_L", "Eye_R", "Lens_L", "Lens_R", "OpticChiasm", "OpticNrv_L",
             "OpticNrv_R", "Parotid_L", "Parotid_R", "SpinalCord", "Joint_TM_L", "Joint_TM_R"}
    assert study == set(stats[stats["set"] == "reference"]["roi"])
    cm = pd.read_csv(out / "audit" / "cohort" / "contour_metrics.csv")
    assert set(cm["set"]) == {"soars", "revised", "reader"}
    html = (out / "audit" / "report" / "report.html").read_text()
    assert "<script src" not in html  # plotly.js is inlined: works offline
    assert "Plotly.newPlot" in html
    assert main(["demo", "--out", str(out), "--patients", "1", "--quiet"]) == 2
