"""``--between-planes stack|interpolate`` on dvh, compare and cohort (column, provenance, resume)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from soars_dose.cli.main import main
from soars_dose.structures import Structure
from soars_dose.synthetic.cohort import SUBSTITUTE_SETS, make_cohort
from soars_dose.synthetic.solids import Solid

from ..helpers import oars, write_case

R = 10.0


@pytest.fixture()
def sphere_files(tmp_path):
    s = Solid("sphere", R, (0.7, -0.4, 0.45))
    ball = Structure("Ball", 1, s.contours(3.0, 0.45 + 1.37))
    return write_case(tmp_path / "in", {"ref": [ball], "auto": oars()})


@pytest.mark.parametrize("mode", ["stack", "interpolate"])
def test_dvh_records_the_mode_in_stats_and_provenance(sphere_files, tmp_path, mode):
    out = tmp_path / mode
    args = ["dvh", "--rtstruct", str(sphere_files["ref"]), "--rtdose", str(sphere_files["rtdose"]),
            "--out", str(out)]
    rc = main(args + (["--between-planes", mode] if mode != "stack" else []))
    assert rc == 0
    stats = pd.read_csv(out / "stats.csv").set_index("roi")
    assert stats.loc["Ball", "between_planes"] == mode
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["between_planes"] == mode
    v_true = 4 / 3 * np.pi * R**3 / 1000
    if mode == "interpolate":
        assert stats.loc["Ball", "volume_cc"] == pytest.approx(v_true, rel=0.01)


def test_compare_accepts_the_mode(sphere_files, tmp_path):
    files = write_case(tmp_path / "cmp_in", {"ref": oars(), "auto": oars(1.5)})
    out = tmp_path / "cmp"
    rc = main(["compare", "--rtdose", str(files["rtdose"]), "--reference", str(files["ref"]),
               "--set", f"auto={files['auto']}", "--out", str(out), "--between-planes", "interpolate"])
    assert rc == 0
    stats = pd.read_parquet(out / "stats.parquet")
    assert set(stats["between_planes"]) == {"interpolate"}
    # disc stacks (flat ends): interpolation keeps the stack's volume
    auto = stats.set_index(["set", "roi"])
    assert auto.loc[("reference", "Parotid_L"), "volume_cc"] == pytest.approx(
        np.pi * 36 * 18 / 1000, rel=0.01)


def test_unknown_mode_is_a_usage_error(sphere_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["dvh", "--rtstruct", str(sphere_files["ref"]), "--rtdose",
              str(sphere_files["rtdose"]), "--out", str(tmp_path / "x"), "--between-planes", "spline"])
    assert exc.value.code == 2
    assert "--between-planes" in capsys.readouterr().err


def test_cohort_resume_checks_the_mode(tmp_path, capsys):
    root = tmp_path / "data"
    (pc,) = make_cohort(root, n_patients=1, seed=3, progress=False)
    rel = lambda p: str(p.relative_to(root))  # noqa: E731
    manifest = root / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient", "rtdose", "reference", *(f"set:{s}" for s in SUBSTITUTE_SETS)])
        w.writerow([pc.patient_id, rel(pc.rtdose), rel(pc.reference),
                    *(rel(pc.sets[s]) for s in SUBSTITUTE_SETS)])
    out = tmp_path / "run"
    assert main(["cohort", str(manifest), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["between_planes"] == "stack"
    capsys.readouterr()
    rc = main(["cohort", str(manifest), "--out", str(out), "--jobs", "1", "--quiet", "--resume",
               "--between-planes", "interpolate"])
    assert rc == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["cohort", str(manifest), "--out", str(out), "--jobs", "1", "--quiet", "--resume",
                 "--between-planes", "stack"]) == 0
