"""outputs.py: CSV values rounded by column name, Parquet at full precision, early path checks."""

from __future__ import annotations

import errno

import numpy as np
import pandas as pd
import pytest

from soars_dose import outputs
from soars_dose.errors import OutputWriteError
from soars_dose.outputs import csv_decimals, csv_rounded, write_output_dir


@pytest.mark.parametrize("column,decimals", [
    ("mean_gy", 3), ("d0_03cc_gy", 3), ("diff_max_gy", 3), ("dose_gy", 3),
    ("volume_cc", 3), ("volume_in_grid_cc", 3), ("volume_diff_cc", 3),
    ("volume_pct", 2), ("diff_mean_pct", 2), ("v20gy_pct", 2), ("saved_pct", 2),
    ("hd95_mm", 3), ("asd_ref_to_sub_mm", 3), ("tolerance_mm", 3),
    ("coverage", 6), ("dice", 6), ("surface_dice", 6), ("rho", 6),
    ("revision_min_total", 2), ("seconds", 3), ("ours", 3), ("limit", 3),
    # p-values are meaningful far below any fixed step
    ("p", None), ("p_holm", None), ("dice_p_vs_reader", None), ("mean_gy_p_vs_reference", None),
    ("unknown_number", None),
])
def test_decimals_by_column_name(column, decimals):
    assert csv_decimals(column) == decimals


@pytest.mark.parametrize("column,value,written", [
    ("coverage", 0.9999999999999999, 1.0),
    ("volume_pct", 99.99999999999983, 100.0),
    ("mean_gy", 23.456789, 23.457),
    ("volume_cc", 0.0304999, 0.03),
    ("hd95_mm", 2.00049, 2.0),
    ("diff_mean_gy", -1e-9, 0.0),
    ("p", 1.234e-12, 1.234e-12),
])
def test_csv_rounded_values(column, value, written):
    out = csv_rounded(pd.DataFrame({column: [value]}))
    assert out[column].iloc[0] == written
    assert str(out[column].iloc[0]) != "-0.0"


def test_only_float_columns_are_touched_and_input_unchanged():
    df = pd.DataFrame({"roi": ["=A"], "roi_number": [3], "mean_gy": [1.23456], "n_cc": [np.nan]})
    out = csv_rounded(df)
    assert out["roi"].iloc[0] == "=A" and out["roi_number"].dtype.kind == "i"
    assert out["mean_gy"].iloc[0] == 1.235 and np.isnan(out["n_cc"].iloc[0])
    assert df["mean_gy"].iloc[0] == 1.23456


def test_csv_is_rounded_parquet_keeps_full_precision(tmp_path):
    df = pd.DataFrame({"roi": ["Brainstem"], "coverage": [0.9999999999999999],
                       "volume_pct": [99.99999999999983], "mean_gy": [23.456789012345678]})
    out = write_output_dir(tmp_path / "o", {"stats": df}, {"tool": "test"})
    text = (out / "stats.csv").read_text()
    assert "0.9999999" not in text and "99.9999" not in text
    back = pd.read_csv(out / "stats.csv")
    assert back["coverage"].iloc[0] == 1.0 and back["volume_pct"].iloc[0] == 100.0
    assert back["mean_gy"].iloc[0] == 23.457
    pq = pd.read_parquet(out / "stats.parquet")
    pd.testing.assert_frame_equal(pq, df, check_exact=True)


def test_parent_without_write_permission_is_refused(tmp_path, monkeypatch):
    """os.access is asked (root would pass any mode test), and the message names the parent."""
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    with pytest.raises(OutputWriteError) as exc:
        outputs.check_writable(tmp_path / "new" / "out", False)
    assert exc.value.errno == errno.EACCES and str(tmp_path) in str(exc.value)
    with pytest.raises(OutputWriteError):
        outputs.check_writable_file(tmp_path / "rs.dcm", False, "the RTSTRUCT file to write")


@pytest.mark.filterwarnings("ignore::soars_dose.errors.SoarsDoseWarning")
def test_nothing_reads_the_rounded_csv_back(tmp_path):
    """Resume and report give the same tables with every CSV file deleted: they read Parquet."""
    from soars_dose.cohort import run_cohort
    from soars_dose.report.cohort import build_report

    from .badinput.pipeline_builders import cohort

    manifest = cohort(tmp_path / "m", ids=("P1", "P2"))
    out = tmp_path / "run"
    first = run_cohort(manifest, out, jobs=1, progress=False)
    for f in out.rglob("*.csv"):
        f.unlink()
    again = run_cohort(manifest, out, jobs=1, progress=False, resume=True)
    pd.testing.assert_frame_equal(again.stats, first.stats, check_exact=True)
    for f in out.rglob("*.csv"):
        f.unlink()
    build_report(out)
    summary = pd.read_parquet(out / "report" / "summary_by_oar.parquet")
    assert len(summary) and (out / "report" / "report.html").is_file()
