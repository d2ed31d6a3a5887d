"""``compare`` and ``dvh`` write a one-patient page inside their output folder (issue 13 part 4)."""

from __future__ import annotations

import pandas as pd
import pytest

from soars_dose.cli.main import main

from ..helpers import oars, write_case
from ..report.browser import chromium, rendered_state


@pytest.fixture()
def case_files(tmp_path):
    return write_case(tmp_path / "in", {"ref": oars(), "auto": oars(1.5, ("L Parotid", "Cord"))})


def _compare(files, out, *extra):
    return main(["compare", "--rtdose", str(files["rtdose"]), "--reference", str(files["ref"]),
                 "--set", f"auto={files['auto']}", "--out", str(out), *extra])


def test_compare_writes_a_one_patient_report(case_files, tmp_path):
    out = tmp_path / "cmp"
    assert _compare(case_files, out) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    # DVH view, the eq 6/7 table, contour metrics; nothing that needs a cohort
    assert "soarsDVH" in page and "Diff mean (Gy)" in page and "HD95 (mm)" in page
    assert "Wilcoxon" not in page and "p (Holm)" not in page and "type\":\"box" not in page
    assert page.count("id='plotly-gz'") == 1
    stats = pd.read_parquet(out / "stats.parquet")
    diff = stats.set_index(["set", "roi"]).loc[("auto", "Parotid_L"), "diff_mean_gy"]
    assert f"{diff:.2f}" in page
    # no temporary folder left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp", "in"]


def test_no_report_and_dvh_page(case_files, tmp_path):
    assert _compare(case_files, tmp_path / "plain", "--no-report") == 0
    assert not (tmp_path / "plain" / "report.html").exists()
    out = tmp_path / "dvh"
    assert main(["dvh", "--rtstruct", str(case_files["ref"]), "--rtdose",
                 str(case_files["rtdose"]), "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "soarsDVH" in page and "Parotid_L" in page and "Diff mean" not in page


@pytest.mark.skipif(chromium() is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_compare_report_renders(case_files, tmp_path):
    out = tmp_path / "cmp"
    assert _compare(case_files, out, "--prescription-gy", "70") == 0
    state = rendered_state(out / "report.html")
    assert state["errors"] == 0 and state["expected"] == state["rendered"] == 1
    assert "patient " in state["console"] and "Parotid_L" in state["console"]
