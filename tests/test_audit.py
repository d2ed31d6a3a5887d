"""The one-case recipe: audit.compare returns what `soars-dose compare` writes."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from soars_dose import audit
from soars_dose.cli.main import main

from .helpers import oars, write_case


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Two cylinders (r 6 and 4 mm) and the same cylinders shifted by 2 mm along x."""
    folder = tmp_path_factory.mktemp("audit")
    paths = write_case(folder, {"reference": oars(), "shifted": oars(2.0)})
    return paths


def _load(paths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit.load_case(paths["rtdose"], {"reference": paths["reference"],
                                                 "shifted": paths["shifted"]})


def _lens_dice(r: float, d: float) -> float:
    """Dice of two discs of radius ``r`` whose centres are ``d`` apart (closed form)."""
    lens = 2 * r * r * math.acos(d / (2 * r)) - 0.5 * d * math.sqrt(4 * r * r - d * d)
    return lens / (math.pi * r * r)


def test_contour_metrics_against_closed_form(shifted):
    res = audit.compare(_load(shifted))
    cm = res.contour_metrics.set_index("roi")
    assert set(cm["set"]) == {"shifted"}
    # the cylinders share their z extent, so Dice is the in-plane lens ratio
    for roi, r in (("Parotid_L", 6.0), ("SpinalCord", 4.0)):
        assert cm.loc[roi, "status"] == "ok"
        assert cm.loc[roi, "dice"] == pytest.approx(_lens_dice(r, 2.0), abs=0.02)
        # a translated disc is 2 mm from its original everywhere at its farthest
        assert cm.loc[roi, "hd_mm"] == pytest.approx(2.0, abs=0.5)


def test_api_returns_what_the_cli_writes(shifted, tmp_path, capsys):
    res = audit.compare(_load(shifted))
    out = tmp_path / "cli"
    rc = main(["compare", "--rtdose", str(shifted["rtdose"]), "--reference",
               str(shifted["reference"]), "--set", f"shifted={shifted['shifted']}",
               "--out", str(out)])
    capsys.readouterr()
    assert rc == 0
    for name, frame in (("stats", res.stats), ("contour_metrics", res.contour_metrics)):
        written = pd.read_parquet(out / f"{name}.parquet")
        assert list(written.columns) == list(frame.columns)
        pd.testing.assert_frame_equal(written.drop(columns=["message"]).reset_index(drop=True),
                                      frame.drop(columns=["message"]).reset_index(drop=True),
                                      check_dtype=False)


def test_result_carries_its_settings_into_the_provenance(shifted, tmp_path):
    s = audit.Settings(bin_width_gy=0.05, factor=2, d_cc=(0.5,))
    res = audit.compare(_load(shifted), s, contour_metrics=False)
    assert res.settings is s and res.contour_metrics is None
    out = audit.write_result(res, _load(shifted), tmp_path / "o")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["bin_width_gy"] == 0.05 and prov["settings"]["factor"] == 2
    assert prov["settings"]["d_cc"] == [0.5]
    assert not (out / "contour_metrics.parquet").exists()
    # the DVH bins are those settings' bins, not the defaults
    widths = np.diff(res.dvhs[("reference", "Parotid_L")].edges_gy)
    np.testing.assert_allclose(widths, 0.05, rtol=1e-9)
    with pytest.raises(TypeError):
        audit.write_result(res, _load(shifted), tmp_path / "p", settings=audit.Settings())


def test_steps_are_reported_in_order(shifted):
    seen: list[str] = []
    audit.compare(_load(shifted), on_step=seen.append)
    assert seen == ["match", "dvh", "metrics"]


def test_package_exports_the_public_verbs_lazily():
    import subprocess
    import sys

    code = ("import sys, soars_dose as s; "
            "assert 'soars_dose.cohort' not in sys.modules and 'torch' not in sys.modules; "
            "from soars_dose import load_case, compare, write_result, run_cohort, load_cohort, "
            "build_report; "
            "from soars_dose import audit, load, cohort; "
            "assert compare is audit.compare and load_case is load.load_case; "
            "assert run_cohort is cohort.run_cohort; "
            "assert set(s.__all__) >= {'load_case', 'compare', 'write_result', 'run_cohort', "
            "'load_cohort', 'build_report', 'segment'}; "
            "assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
