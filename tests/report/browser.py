"""Headless Chromium for the report tests (Debian's ``chromium``; skipped where absent)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--virtual-time-budget=15000"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def rendered_state(page: Path) -> dict:
    """Load ``page``; return the attributes the report sets after its scripts ran."""
    out = _run(["--dump-dom", page.resolve().as_uri()]).stdout
    m = re.search(r"<html([^>]*)>", out)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1))) if m else {}
    return {"errors": int(attrs.get("data-js-errors", 0)),
            "expected": int(attrs.get("data-plots-expected", -1)),
            "rendered": int(attrs.get("data-plots-rendered", -1)),
            "dom_plots": out.count('class="plot js-plotly-plot"'),
            "console": out}


def screenshot(page: Path, png: Path, size: str = "1300,2600") -> Path:
    _run([f"--window-size={size}", f"--screenshot={png}", page.resolve().as_uri()])
    return png


def webdriver_available() -> bool:
    """Chromium, its chromedriver and the selenium package are all here."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return chromium() is not None and shutil.which("chromedriver") is not None


class Browser:
    """A headless Chromium driven through chromedriver (selenium), for click-through tests.

    The driver binary is named explicitly, so selenium never tries to
    download one. ``errors()`` returns what the page collected in
    ``window.__errors`` plus the browser log's SEVERE entries.
    """

    def __init__(self, width: int = 1300, height: int = 1000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium()
        for flag in ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--window-size={width},{height}"]:
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")),
                                       options=opts)

    def open(self, page: Path, ready_js: str, timeout: float = 60.0) -> None:
        """Load ``page``; wait until ``ready_js`` (an expression) is true."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(page.resolve().as_uri())
        WebDriverWait(self.driver, timeout).until(lambda d: d.execute_script(f"return {ready_js}"))

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def errors(self) -> list[str]:
        page = self.js("return window.__errors||[]") or []
        log = [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        return [*page, *log]

    def close(self) -> None:
        self.driver.quit()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
