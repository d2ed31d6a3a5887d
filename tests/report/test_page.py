"""The HTML report escapes every string it shows and needs no network."""

from __future__ import annotations

import re

import pandas as pd

from soars_dose.report.figures import dvh_figure
from soars_dose.report.page import html_table, write_report

EVIL = "<script>alert('x')</script>"


def test_report_escapes_names_and_is_self_contained(tmp_path):
    stats = pd.DataFrame({"patient": ["P&1"], "set": ["reference"], "roi": [EVIL],
                          "mean_gy": [10.0], "max_gy": [20.0], "volume_cc": [1.0],
                          "diff_mean_pct": [float("nan")]})
    dvh = pd.DataFrame({"patient": "P&1", "set": "reference", "roi": EVIL,
                        "dose_gy": [0.0, 10.0, 20.0], "volume_pct": [100.0, 50.0, 0.0]})
    path = write_report(tmp_path / "r.html", title=f"t {EVIL}",
                        blocks=[(EVIL, html_table(stats)), dvh_figure(dvh, stats, "P&1")])
    text = path.read_text()
    assert EVIL not in text
    assert "&lt;script&gt;" in text
    # plotly.js is inlined: no element loads anything from the network
    assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)\s*=", text)
    assert text.count("Plotly.newPlot") == 1


def test_patient_page_escapes_roi_names_in_controls_and_data(tmp_path):
    from soars_dose.report.patient import write_patient_page

    stats = pd.DataFrame({"patient": "P1", "set": ["reference", "auto"], "roi": EVIL,
                          "status": "ok", "mean_gy": [10.0, 11.0], "max_gy": [20.0, 21.0],
                          "volume_cc": [1.0, 1.0], "d0_03cc_gy": [19.0, 20.0],
                          "diff_mean_pct": [float("nan"), 10.0], "diff_max_pct": [float("nan"), 5.0]})
    dvh = pd.DataFrame({"patient": "P1", "set": ["reference"] * 3 + ["auto"] * 3, "roi": EVIL,
                        "dose_gy": [0.0, 10.0, 20.0] * 2, "volume_cc": [1.0, 0.5, 0.0] * 2,
                        "volume_pct": [100.0, 50.0, 0.0] * 2})
    text = write_patient_page(tmp_path / "p.html", stats, dvh, patient="P1").read_text()
    assert EVIL not in text and "&lt;script&gt;" in text
    assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)\s*=", text)


def test_numbers_are_rounded_to_their_unit():
    df = pd.DataFrame({"mean_gy": [1.23456], "diff_mean_pct": [-0.04], "volume_cc": [0.123],
                       "p_holm": [0.0004], "dice": [float("inf")]})
    text = html_table(df)
    assert ">1.23<" in text and ">0.0<" in text and ">0.12<" in text and "&lt;0.001" in text
    assert "Mean (Gy)" in text and "Diff mean (%)" in text and "∞" in text
