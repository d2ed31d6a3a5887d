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
