"""The slice viewer in headless Chromium: it renders, its controls move it, no JS errors (issue 13)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from soars_dose.report import slices as SL
from soars_dose.report.patient import render_patient_page
from soars_dose.report.slice_viewer import slice_viewer

from .browser import Browser, webdriver_available
from .slice_case import make_case, make_stats

OARS = ("Parotid_L", "SpinalCord")


def _tables(data: SL.SliceData) -> tuple[pd.DataFrame, pd.DataFrame]:
    stats = make_stats(oars=OARS).assign(volume_cc=4.29, mean_gy=31.5, max_gy=38.25,
                                         d0_03cc_gy=37.9, diff_mean_gy=[np.nan, 0.25] * 2)
    cm = pd.DataFrame({"set": "auto", "roi": list(OARS), "dice": [0.987, 0.654],
                       "hd95_mm": [0.5, np.inf]})
    return stats, cm


@pytest.fixture()
def page(tmp_path):
    case = make_case(tmp_path, cord=True)
    data = SL.build_slice_data(case, make_stats(oars=OARS))
    stats, cm = _tables(data)
    path = tmp_path / "p.html"
    path.write_bytes(render_patient_page(stats, pd.DataFrame(), cm, patient="P<1>",
                                         slices=data, prescription_gy=40.0))
    return path, data


def test_widget_html_escapes_names_and_carries_the_data(tmp_path):
    case = make_case(tmp_path)
    case.sets["a<b>"] = case.sets.pop("auto")
    data = SL.build_slice_data(case, make_stats(sets=("reference", "a<b>")))
    w = slice_viewer(data, make_stats(sets=("reference", "a<b>")))
    assert "a<b>" not in w.body and "a&lt;b&gt;" in w.body
    # the JSON header cannot close its script element
    head = re.search(r"id='slices-head'>(.*?)</script>", w.body).group(1)
    assert "<" not in head and "a\\u003cb>" in head


needs_browser = pytest.mark.skipif(not webdriver_available(),
                                        reason="needs chromium, chromedriver and selenium")


def _state(b: Browser) -> dict:
    return b.js("var r=document.querySelector('.slices');return {oar:r.dataset.oar,"
                "a:+r.dataset.sliceAxial,c:+r.dataset.sliceCoronal,s:+r.dataset.sliceSagittal,"
                "draws:+r.dataset.draws};")


def _pixels(b: Browser, view: str) -> list:
    """A digest of a view's canvas: sum of RGB and count of non-grey (coloured) pixels."""
    return b.js("var c=document.querySelector('.slices canvas[data-view=\"'+arguments[0]+'\"]'),"
                "d=c.getContext('2d').getImageData(0,0,c.width,c.height).data,s=0,col=0;"
                "for(var i=0;i<d.length;i+=4){s+=d[i]+d[i+1]+d[i+2];"
                "if(Math.abs(d[i]-d[i+1])>40||Math.abs(d[i+1]-d[i+2])>40)col++;}"
                "return [s,col,c.width,c.height];", view)


@needs_browser
def test_viewer_renders_and_its_controls_work(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    path, data = page
    with Browser() as b:
        b.open(path, "document.querySelector('.slices[data-ready]')!==null")
        assert b.errors() == []
        st = _state(b)
        # opens on the first OAR's centroid, every view drawn
        assert st["oar"] == "Parotid_L"
        assert [st["a"], st["c"], st["s"]] == data.centroid["Parotid_L"]
        for view in ("axial", "coronal", "sagittal"):
            total, coloured, w, h = _pixels(b, view)
            assert w > 50 and h > 20 and total > 0 and coloured > 20
        # physical aspect: the axial view is 1 mm x 1 mm pixels, coronal 2 mm slices
        _, _, wa, ha = _pixels(b, "axial")
        assert wa / ha == pytest.approx(data.grid.shape[2] / data.grid.shape[1], rel=0.03)
        _, _, wc, hc = _pixels(b, "coronal")
        assert hc / wc == pytest.approx(2.0 * data.grid.shape[0] / data.grid.shape[2], rel=0.03)
        # the numbers beside: one row per set, with the contour metrics
        rows = b.driver.find_elements(By.CSS_SELECTOR, ".slices table.numbers tr")
        assert len(rows) == 3 and "0.99" in rows[2].text and "∞" not in rows[2].text
        # another OAR: jumps to its centroid, its numbers shown
        Select(b.driver.find_element(By.CSS_SELECTOR, ".slices select.oar")).select_by_value(
            "SpinalCord")
        st = _state(b)
        assert st["oar"] == "SpinalCord"
        assert [st["a"], st["c"], st["s"]] == data.centroid["SpinalCord"]
        assert "∞" in b.driver.find_elements(By.CSS_SELECTOR, ".slices table.numbers tr")[2].text
        # largest difference: the cord of 'auto' starts 4 mm higher and sits 2 mm to the left
        b.driver.find_element(By.CSS_SELECTOR, ".slices button.largest").click()
        st = _state(b)
        assert [st["a"], st["c"], st["s"]] == data.largest_difference["SpinalCord"]
        assert [st["a"], st["c"], st["s"]] != data.centroid["SpinalCord"]
        # the axial slider moves one slice per key press and the image changes with it
        before = _pixels(b, "axial")
        slider = b.driver.find_element(By.CSS_SELECTOR, ".slices input[data-view='axial']")
        slider.send_keys(Keys.ARROW_RIGHT)
        after = _state(b)
        assert after["a"] == st["a"] + 1 and after["draws"] > st["draws"]
        label = b.driver.find_element(By.CSS_SELECTOR, ".slices span[data-view='axial']").text
        z = data.grid.origin[2] + after["a"] * data.grid.spacing[0]
        assert f"axial {after['a'] + 1}/{data.grid.shape[0]}" in label and f"{z:.1f} mm" in label
        assert _pixels(b, "axial") != before
        # a set's contours off: fewer coloured pixels; the dose wash off: fewer again
        before = _pixels(b, "axial")[1]
        b.driver.find_element(By.CSS_SELECTOR, ".slices input.set[value='reference']").click()
        fewer = _pixels(b, "axial")[1]
        assert fewer < before
        b.driver.find_element(By.CSS_SELECTOR, ".slices input.set[value='reference']").click()
        b.driver.find_element(By.CSS_SELECTOR, ".slices button.centroid").click()
        washed = _pixels(b, "axial")[1]
        b.js("var e=document.querySelector('.slices input.alpha');e.value=0;"
             "e.dispatchEvent(new Event('input'))")
        unwashed = _pixels(b, "axial")[1]
        b.driver.find_element(By.CSS_SELECTOR, ".slices input.iso").click()
        assert _pixels(b, "axial")[1] < unwashed < washed
        # window presets change the grey levels
        before = _pixels(b, "axial")[0]
        Select(b.driver.find_element(By.CSS_SELECTOR, ".slices select.window")).select_by_index(2)
        assert _pixels(b, "axial")[0] != before
        # pointing at the image reads out CT number and dose
        canvas = b.driver.find_element(By.CSS_SELECTOR, ".slices canvas[data-view='axial']")
        ActionChains(b.driver).move_to_element(canvas).perform()
        text = b.driver.find_element(By.CSS_SELECTOR, ".slices .readout").text
        assert re.search(r"-?\d+ HU, (\d+\.\d Gy|outside the dose grid)", text)
        assert b.errors() == []


@needs_browser
def test_readout_is_the_stored_ct_and_dose(page):
    """The page decodes what was stored: HU to its 3 HU step, dose to 0.1 Gy (at a known voxel)."""
    path, data = page
    with Browser() as b:
        b.open(path, "document.querySelector('.slices[data-ready]')!==null")
        k, j, i = data.centroid["Parotid_L"]
        canvas = b.js("return document.querySelector('.slices canvas[data-view=\"axial\"]')"
                      ".getBoundingClientRect().toJSON()")
        # dispatch a pointer event at the centre of pixel (j, i) of the axial slice k
        x = canvas["left"] + (i + 0.5) * canvas["width"] / data.grid.shape[2]
        y = canvas["top"] + (j + 0.5) * canvas["height"] / data.grid.shape[1]
        b.js("document.querySelector('.slices canvas[data-view=\"axial\"]').dispatchEvent("
             "new MouseEvent('mousemove',{clientX:arguments[0],clientY:arguments[1]}))", x, y)
        text = b.js("return document.querySelector('.slices .readout').textContent")
        hu, gy = re.match(r"(-?\d+) HU, (\d+\.\d) Gy", text).groups()
        assert abs(int(hu) - int(data.hu[k, j, i])) <= 2
        assert float(gy) == pytest.approx(data.dose_cgy[k, j, i] / 100, abs=0.051)
        assert b.errors() == []
