"""``soars-dose names RS.dcm``: the listing, --out, and bad input (by subprocess)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from soars_dose.dicom.write import write_rtstruct
from soars_dose.structures import Structure

from ..helpers import FOR, disc_stack, run_cli, write_case

NAMES = ["Parotid_L", "PCMs", "Constrictors", "Brianstem", "Glottis", "PTV70", "BODY", "Bladder"]


def _cli(*args):
    return run_cli("names", *args, timeout=300)


@pytest.fixture(scope="module")
def rs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("names") / "rs.dcm"
    write_rtstruct([Structure(n, i + 10, disc_stack(0, 0, 5, -4, 4)) for i, n in enumerate(NAMES)],
                   path, frame_of_reference_uid=FOR)
    return path


def test_every_roi_is_listed_with_its_status(rs):
    r = _cli(rs)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[1]: line for line in r.stdout.splitlines()[1:]}
    assert set(lines) == set(NAMES)
    assert lines["Parotid_L"].split()[:4] == ["10", "Parotid_L", "Parotid_L", "matched"]
    assert "union" in lines["PCMs"] and "Musc_Constrict_S" not in lines["PCMs"]
    assert "union" in lines["Constrictors"]
    assert "unmatched" in lines["Brianstem"] and lines["Brianstem"].rstrip().endswith("Brainstem")
    assert "outside_42" in lines["Glottis"] and "out_of_scope" in lines["Bladder"]
    assert "target" in lines["PTV70"] and "external" in lines["BODY"]


def test_out_writes_a_csv_and_refuses_to_overwrite(rs, tmp_path):
    out = tmp_path / "names.csv"
    assert _cli(rs, "--out", out).returncode == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ["roi_number", "roi_name", "canonical", "status", "rule",
                                "suggestions"]
    assert df.set_index("roi_name").loc["Brianstem", "suggestions"] == "Brainstem"
    r = _cli(rs, "--out", out)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert _cli(rs, "--out", out, "--overwrite").returncode == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_user_alias_file_is_used(rs, tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("organs:\n  Brainstem:\n    synonyms: [Brianstem]\n")
    r = _cli(rs, "--names", f)
    line = next(x for x in r.stdout.splitlines() if " Brianstem " in x)
    assert "matched" in line and "unmatched" not in line


def test_bad_input_exits_2_with_a_clear_message(rs, tmp_path):
    r = _cli(tmp_path / "missing.dcm")
    assert r.returncode == 2 and "missing.dcm: no such file" in r.stderr
    r = _cli(tmp_path)
    assert r.returncode == 2 and "is a folder, expected a DICOM RTSTRUCT file" in r.stderr
    dose = write_case(tmp_path / "c", {})["rtdose"]
    r = _cli(dose)
    assert r.returncode == 2 and "rd.dcm" in r.stderr and "Traceback" not in r.stderr
