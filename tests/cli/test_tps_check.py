"""``soars-dose tps-check``: outputs, the offline page, stdout mode and bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.sequence import Sequence

from soars_dose.cli.main import main
from soars_dose.dicom.write import write_rtdose, write_rtstruct

from ..dose.test_tps_check import (
    FINE,
    FRAME,
    GRID,
    cumulative_item,
    prism,
    true_cumulative,
)

pytestmark = pytest.mark.filterwarnings("ignore:The value for the data element")

HOSTILE = "<script>alert(1)</script>%{x}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tpscli")
    write_rtstruct([prism(HOSTILE, 1, 1.0), prism("Other", 2, -20.0)], d / "rs.dcm",
                   frame_of_reference_uid=FRAME)
    x = GRID.origin[0] + GRID.spacing[2] * np.arange(GRID.shape[2])
    dose = np.broadcast_to(20.0 + 0.2 * x, GRID.shape).astype(np.float32)
    write_rtdose(dose, GRID, d / "plain.dcm", frame_of_reference_uid=FRAME)
    ds = pydicom.dcmread(d / "plain.dcm")
    ds.DVHSequence = Sequence([cumulative_item(1, FINE, true_cumulative(1.0, FINE, 18.0))])
    ds.save_as(d / "rd.dcm")
    return d


def test_writes_table_page_and_provenance(files, tmp_path, capsys):
    out = tmp_path / "check"
    args = ["tps-check", "--rtdose", str(files / "rd.dcm"), "--rtstruct", str(files / "rs.dcm"),
            "--out", str(out)]
    assert main(args) == 0
    table = pd.read_csv(out / "tps_check.csv", keep_default_na=False)
    assert pd.read_parquet(out / "tps_check.parquet").shape[0] == len(table)
    vol = table[(table["roi_number"] == 1) & (table["metric"] == "volume_cc")].iloc[0]
    assert vol["cause"] == "end caps"  # their DVH was built without the end caps
    assert set(table.loc[table["roi"] == "Other", "status"]) == {"no TPS DVH"}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["tolerances"]["volume_pct"] == 2.0
    assert {i["role"] for i in prov["inputs"]} == {"rtdose", "rtstruct"}
    page = (out / "tps_check.html").read_text()
    # offline: no script loaded from anywhere
    assert not re.search(r"<script[^>]+src=", page, re.I)
    # the hostile ROI name never appears raw, neither as markup nor as a plotly template
    assert "<script>alert(1)" not in page
    body = page.split("</head>", 1)[1]  # plotly.js itself holds template examples
    figures = re.findall(r"<script type='application/json' class='figspec'[^>]*>(.*?)</script>",
                         body, re.S)
    assert len(figures) == 1 and "alert(1)" in figures[0]
    assert "%{x}" not in figures[0].replace("%{x:", "")  # no template field from the name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("class='plot'") == 1
    # a second run refuses to replace the folder
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_without_out_prints_the_table(files, capsys):
    rc = main(["tps-check", "--rtdose", str(files / "rd.dcm"), "--rtstruct",
               str(files / "rs.dcm"), "--volume-tol-pct", "20"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "volume_cc" in out and "d0_03cc_gy" in out and "Other" in out
    # with a 20 % volume tolerance the missing end caps (14 %) are not flagged
    line = next(s for s in out.splitlines() if "volume_cc" in s)
    assert "end caps" not in line


def test_rtdose_without_dvh_sequence_exits_2(files, capsys):
    rc = main(["tps-check", "--rtdose", str(files / "plain.dcm"), "--rtstruct",
               str(files / "rs.dcm")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "plain.dcm" in err and "DVHSequence" in err and "Traceback" not in err


@pytest.mark.parametrize("extra", [["--dose-tol-gy", "-1"], ["--bin-width", "0"],
                                   ["--supersample", "x"], ["--nominal-spacing-mm", "0"]])
def test_bad_options_exit_2(files, capsys, extra):
    argv = ["tps-check", "--rtdose", str(files / "rd.dcm"), "--rtstruct", str(files / "rs.dcm"),
            *extra]
    try:
        rc = main(argv)
    except SystemExit as exc:  # refused by argparse itself, naming the option
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and extra[0] in err
    assert err.startswith("error:") or f"error: argument {extra[0]}:" in err


def test_frame_mismatch_exits_2_unless_allowed(files, tmp_path, capsys):
    other = tmp_path / "rs_other.dcm"
    write_rtstruct([prism("Cyl", 1, 1.0)], other, frame_of_reference_uid=FRAME + ".9")
    args = ["tps-check", "--rtdose", str(files / "rd.dcm"), "--rtstruct", str(other)]
    assert main(args) == 2
    assert "FrameOfReferenceUID" in capsys.readouterr().err
    assert main(args + ["--allow-frame-mismatch"]) == 0
