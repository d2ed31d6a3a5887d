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
