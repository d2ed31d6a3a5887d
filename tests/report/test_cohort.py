"""The cohort report end to end: cohort run -> statistics -> HTML, checked in headless Chromium."""

from __future__ import annotations

import pandas as pd
import pytest

from soars_dose.cohort import run_cohort
from soars_dose.demo import write_manifest, write_revisions
from soars_dose.errors import OutputExistsError
from soars_dose.report.cohort import build_report
from soars_dose.synthetic.cohort import make_cohort

from .browser import chromium, rendered_state, screenshot

N = 3


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort_report")
    cases = make_cohort(root / "data", n_patients=N, seed=11, progress=False)
    manifest = write_manifest(cases, root / "data" / "manifest.csv")
    res = run_cohort(manifest, root / "audit", jobs=1, progress=False)
    revisions = write_revisions(cases, res.contour_metrics, root / "data" / "revisions.csv", 1)
    return build_report(root / "audit", revisions=revisions), res


def test_report_tables(report):
    path, res = report
    folder = path.parent
    for name in ("table5", "summary_by_oar", "paired_tests", "threshold_counts", "correlations",
                 "constraints", "constraint_flips", "revision_summary", "time_saved"):
        assert (folder / f"{name}.csv").exists() and (folder / f"{name}.parquet").exists(), name
    t5 = pd.read_parquet(folder / "table5.parquet")
    n_oars = res.stats[res.stats["set"] == "reference"]["roi"].nunique()
    # one row per substitute set and OAR, plus the pooled ALL row per set
    assert len(t5) == 3 * (n_oars + 1)
    assert {"dice", "hd95_mm", "asd_mm", "abs_diff_mean_pct", "abs_diff_max_pct"} <= set(t5.columns)
    thr = pd.read_parquet(folder / "threshold_counts.parquet")
    all_rows = thr[(thr["roi"] == "ALL") & (thr["metric"] == "abs_diff_mean_pct")
                   & (thr["threshold_pct"] == 10)]
    assert set(all_rows["set"]) == {"soars", "revised", "reader"}
    # counts agree with the stats table
    st = res.stats[(res.stats["set"] == "reader") & res.stats["status"].isin(["ok", "partial"])]
    n_over = int((st["diff_mean_pct"].abs() > 10).sum())
    assert int(all_rows.set_index("set").loc["reader", "n_over"]) == n_over
    with pytest.raises(OutputExistsError):
        build_report(folder.parent)


def test_report_pages_layout(report):
    path, res = report
    text = path.read_text(encoding="utf-8")
    # plotly.js once per page, compressed; no per-patient DVH overlays on the cohort page
    assert text.count("id='plotly-gz'") == 1 and "soarsDVH" not in text
    assert "<nav class='toc'>" in text and "Headline" in text
    n_ref = int((res.stats["set"] == "reference").sum())
    assert "OAR instances differing from the reference by more than 10 %: soars " in text
    assert f" of {n_ref}" in text
    # long raw tables are folded, with their CSV beside
    assert "<details id=" in text and "href='paired_tests.csv'" in text
    for pid in res.stats["patient"].unique():
        page = path.parent / "patients" / f"{pid}.html"
        assert page.is_file() and f"href='patients/{pid}.html'" in text
        ptext = page.read_text(encoding="utf-8")
        assert "soarsDVH" in ptext and "p_holm" not in ptext and "Wilcoxon" not in ptext
        assert "href='../report.html'" in ptext
    # no temporary files left beside the report folder
    assert not [q for q in path.parent.parent.iterdir() if q.name.startswith(".report")]


@pytest.mark.skipif(chromium() is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    path, res = report
    state = rendered_state(path)
    assert state["errors"] == 0, "JavaScript errors on the page"
    # 5 cohort figures (2 |Diff| box plots, Dice box plot, 2 scatters) + the DVH bands
    assert state["expected"] == 6
    assert state["rendered"] == state["expected"] == state["dom_plots"]
    png = screenshot(path, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    pid = res.stats["patient"].iloc[0]
    state = rendered_state(path.parent / "patients" / f"{pid}.html")
    assert state["errors"] == 0 and state["expected"] == state["rendered"] == 1
    # the DVH view titles the plot with the OAR it shows
    first = res.dvh["roi"].iloc[0]
    assert f"patient {pid}: {first}" in state["console"]


def test_patient_pages_carry_the_slice_viewer_and_survive_bad_slice_files(report, tmp_path):
    import shutil

    path, res = report
    audit = path.parent.parent
    patients = sorted(p.name for p in (audit / "patients").iterdir() if p.is_dir())
    assert len(patients) == N
    for p in patients:
        assert (audit / "patients" / p / "slices.npz").stat().st_size > 10_000
        page = (path.parent / "patients" / f"{p}.html").read_text(encoding="utf-8")
        assert "soarsSlices(" in page and "id='dvh-slices-data'" in page
    # a damaged slices.npz and a missing one cost those pages their viewer, not the report
    copy = tmp_path / "audit"
    shutil.copytree(audit, copy)
    bad = copy / "patients" / patients[0] / "slices.npz"
    bad.write_bytes(bad.read_bytes()[:500])
    (copy / "patients" / patients[1] / "slices.npz").unlink()
    out = build_report(copy, overwrite=True)
    pages = {p: (out.parent / "patients" / f"{p}.html").read_text(encoding="utf-8")
             for p in patients}
    assert "cannot be read" in pages[patients[0]] and str(bad) in pages[patients[0]]
    assert "id='dvh-slices-data'" not in pages[patients[0]]
    assert "slices.npz: missing" in pages[patients[1]]
    assert "id='dvh-slices-data'" not in pages[patients[1]]
    assert "id='dvh-slices-data'" in pages[patients[2]]
