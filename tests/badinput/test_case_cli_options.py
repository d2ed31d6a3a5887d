"""The checks' own command-line options: passed through to Settings, refused by name when bad."""

from __future__ import annotations

import pandas as pd
import pytest

from ..helpers import oars
from .case_helpers import cli, compare_args, write_case


@pytest.mark.parametrize("option, value", [
    ("--max-memory-gb", "0"), ("--max-memory-gb", "-1"),
    ("--plausibility-max-share", "1.5"), ("--plausibility-max-share", "0"),
    ("--near-zero-gy", "-0.1"),
])
def test_bad_check_option_exit_2_names_it(tmp_path, capsys, option, value):
    paths = write_case(tmp_path / "in", {"reference": oars(), "auto": oars()})
    rc, err = cli(compare_args(paths, tmp_path / "out", option, value), capsys)
    assert rc == 2
    assert option in err
    assert not (tmp_path / "out").exists()


def test_air_bone_thresholds_must_be_ordered(tmp_path, capsys):
    paths = write_case(tmp_path / "in", {"reference": oars(), "auto": oars()})
    rc, err = cli(compare_args(paths, tmp_path / "out", "--plausibility-air-hu", "400",
                               "--plausibility-bone-hu", "300"), capsys)
    assert rc == 2
    assert "--plausibility-air-hu" in err or "--plausibility-bone-hu" in err


def test_memory_limit_reaches_the_computation(tmp_path, capsys):
    """A limit far below what a 2 cc cylinder needs marks every row too_large; the default does not."""
    paths = write_case(tmp_path / "in", {"reference": oars(), "auto": oars()})
    rc, _ = cli(compare_args(paths, tmp_path / "ok"), capsys)
    assert rc == 0
    ok = pd.read_parquet(tmp_path / "ok" / "stats.parquet")
    assert (ok["status"] == "ok").all()
    rc, err = cli(compare_args(paths, tmp_path / "tiny", "--max-memory-gb", "1e-6"), capsys)
    assert rc == 0
    st = pd.read_parquet(tmp_path / "tiny" / "stats.parquet")
    assert (st["status"] == "too_large").all()
    assert st["mean_gy"].isna().all()
