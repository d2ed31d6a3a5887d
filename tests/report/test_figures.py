"""The DVH views clicked through in headless Chromium (issue 13 part 2): title, OARs, axis units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from soars_dose.analysis.constraints import Constraint
from soars_dose.report.figures import dvh_band_figure, dvh_widget
from soars_dose.report.page import render_page

from .browser import Browser, webdriver_available

needs_browser = pytest.mark.skipif(not webdriver_available(),
                             reason="needs chromium, chromedriver and selenium")

RX = 70.0
VOLUMES = {"Parotid_L": 25.0, "SpinalCord": 8.0}


def _dvh() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Linear cumulative DVHs: V(d) = V0 (1 - d / dmax); the substitute 10 % hotter."""
    rows, stats = [], []
    for roi, vol in VOLUMES.items():
        for set_name, dmax in (("reference", 40.0), ("auto", 44.0)):
            d = np.arange(0, dmax + 1e-9, 0.1)
            cc = vol * (1 - d / dmax)
            rows.append(pd.DataFrame({"set": set_name, "roi": roi, "dose_gy": d,
                                      "volume_cc": cc, "volume_pct": cc * 100 / vol}))
            stats.append({"set": set_name, "roi": roi, "status": "ok", "volume_cc": vol,
                          "mean_gy": dmax / 2, "max_gy": dmax, "d0_03cc_gy": dmax * 0.99})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(stats)


def _layout(b: Browser, uid: str = "dvh") -> dict:
    return b.js("var d=document.getElementById(arguments[0]);return {title:d.layout.title.text,"
                "x:d.layout.xaxis.title.text,y:d.layout.yaxis.title.text,"
                "names:d.data.map(function(t){return t.name;}),"
                "first:d.data.map(function(t){return [t.x[t.x.length-1],t.y[0]];})};", uid)


@needs_browser
def test_dvh_view_keeps_its_title_and_switches_oars_and_units(tmp_path):
    from selenium.webdriver.common.by import By

    dvh, stats = _dvh()
    cons = [Constraint(roi="SpinalCord", metric="d0_03cc_gy", op="<", limit=45.0, source="test")]
    page = tmp_path / "dvh.html"
    page.write_bytes(render_page("t", [dvh_widget(dvh, stats, title="patient P", uid="dvh",
                                                  constraints=cons, prescription_gy=RX)]))
    with Browser() as b:
        b.open(page, "document.getElementById('dvh').layout!==undefined")
        lay = _layout(b)
        assert lay["title"] == "patient P: Parotid_L"
        assert lay["names"] == ["Parotid_L (reference)", "Parotid_L (auto)"]
        assert lay["x"] == "Dose (Gy)" and lay["y"] == "Volume (%)"
        # curves end where the DVH does and start at 100 %
        assert lay["first"][0][0] == pytest.approx(40.0, abs=0.2)
        assert lay["first"][1][0] == pytest.approx(44.0, abs=0.2)
        assert lay["first"][0][1] == pytest.approx(100.0)
        # a second OAR: both in the title, four curves plus the cord's constraint mark
        b.driver.find_element(By.CSS_SELECTOR, "input[name='dvh-roi'][value='1']").click()
        lay = _layout(b)
        assert lay["title"] == "patient P: Parotid_L, SpinalCord"
        assert len([n for n in lay["names"] if "(" in n]) == 4
        assert "SpinalCord d0_03cc_gy &lt; 45 Gy" in lay["names"]
        # volume in cc: the first point is the OAR's volume
        b.driver.find_element(By.CSS_SELECTOR, "input[name='dvh-vol'][value='cc']").click()
        lay = _layout(b)
        assert lay["y"] == "Volume (cc)"
        assert lay["first"][0][1] == pytest.approx(VOLUMES["Parotid_L"], rel=1e-3)
        assert lay["first"][2][1] == pytest.approx(VOLUMES["SpinalCord"], rel=1e-3)
        # dose in % of the prescription: 40 Gy of 70 Gy is 57.1 %
        b.driver.find_element(By.CSS_SELECTOR, "input[name='dvh-dose'][value='pct']").click()
        lay = _layout(b)
        assert lay["x"] == "Dose (% of prescription)"
        assert lay["first"][0][0] == pytest.approx(40.0 / RX * 100, abs=0.3)
        # the first OAR off: the title follows, never disappears
        b.driver.find_element(By.CSS_SELECTOR, "input[name='dvh-roi'][value='0']").click()
        assert _layout(b)["title"] == "patient P: SpinalCord"
        b.driver.find_element(By.CSS_SELECTOR, "input[name='dvh-roi'][value='1']").click()
        assert _layout(b)["title"] == "patient P: no OAR chosen"
        assert b.errors() == []


@needs_browser
def test_band_view_drop_down_keeps_the_title(tmp_path):
    dvh, _ = _dvh()
    cohort = pd.concat([dvh.assign(patient=f"P{k}",
                                   volume_pct=dvh["volume_pct"] * (1 - 0.02 * k))
                        for k in range(5)], ignore_index=True)
    fig = dvh_band_figure(cohort, ["reference", "auto"])
    page = tmp_path / "bands.html"
    page.write_bytes(render_page("t", [fig]))
    with Browser() as b:
        b.open(page, "document.querySelector('.js-plotly-plot')!==null")
        vis = ("return document.querySelector('.js-plotly-plot').data.map(function(t){"
               "return t.visible!==false;})")
        t0 = b.js("return document.querySelector('.js-plotly-plot').layout.title.text")
        assert "Parotid_L" in t0
        shown0 = b.js(vis)
        # choose the second OAR the way the drop-down does: its button's own update
        b.js("var d=document.querySelector('.js-plotly-plot'),"
             "btn=d.layout.updatemenus[0].buttons[1];"
             "Plotly.update(d,btn.args[0],btn.args[1]);")
        t1 = b.js("return document.querySelector('.js-plotly-plot').layout.title.text")
        assert "SpinalCord" in t1 and "Parotid_L" not in t1
        shown1 = b.js(vis)
        # the other OAR's curves: as many, none of the first OAR's
        assert sum(shown1) == sum(shown0) > 0 and not any(a and b_ for a, b_ in
                                                        zip(shown0, shown1))
        assert b.errors() == []
