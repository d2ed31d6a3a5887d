"""search_vs_plain.py end to end at the tiniest size: both arms, equal budgets, the decision.

The synthetic OpenKBP split of :mod:`.openkbp_inputs`; the Dice figures are
measured, and the decision is checked against them, not assumed.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from soars_dose.segmentation import nas  # noqa: E402
from soars_dose.segmentation.bundle import load_models  # noqa: E402
from soars_dose.segmentation.training.accumulate import mean_dice  # noqa: E402

from .openkbp_inputs import OARS, load_script, make_inputs  # noqa: E402


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("search_inputs"))


def test_job_budgets_are_fixed_shares_shortened_only_by_overruns():
    m = load_script("search_vs_plain")
    shares = [0.2, 0.2, 0.3, 0.3]
    assert m._job_budget(shares, 100.0, 100.0, 0) == pytest.approx(20.0)
    # on time or early: the fixed share, never more
    assert m._job_budget(shares, 100.0, 80.0, 1) == pytest.approx(20.0)
    assert m._job_budget(shares, 100.0, 95.0, 1) == pytest.approx(20.0)
    # the first job ran 10 s over: the rest share what is left
    assert m._job_budget(shares, 100.0, 70.0, 1) == pytest.approx(70.0 * 0.2 / 0.8)
    assert m._job_budget(shares, 100.0, 20.0, 3) == pytest.approx(20.0)


@pytest.mark.parametrize("min_gain", [-1.0, 1.0])
def test_both_arms_train_from_scratch_and_the_better_is_named_and_shipped_only_on_a_gain(
        inputs, tmp_path, min_gain):
    root, start, runs = inputs
    out = tmp_path / "out"
    rc = load_script("search_vs_plain").main([
        "--train", str(root / "train.npz"), "--val", str(root / "validation.npz"),
        "--out", str(out), "--start", str(start), "--runs-md", str(runs), "--device", "cpu",
        "--patch", "16", "32", "32", "--batch", "2", "--search-batch", "2",
        "--max-steps", "2", "--sync-every", "1", "--deadline-s", "400", "--reserve-s", "150",
        "--threads", "1", "--min-gain", str(min_gain)])
    assert rc == 0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    phases = {e["phase"] for e in log if e.get("event") == "phase"}
    assert {"search_anchor", "search_mid_level", "train_anchor_plain", "train_anchor_searched",
            "train_mid_level_plain", "train_mid_level_searched", "pack",
            "validate_start_model", "validate_plain", "validate_searched"} <= phases
    rec = json.loads((out / "comparison.json").read_text())
    arms = rec["arms"]
    for role in ("anchor", "mid_level"):
        assert arms["plain"][role]["ops"] == ["3d_3"] * len(nas.BLOCK_NAMES)
        s = arms["searched"][role]["search"]
        assert s["warmup_steps"] == 2 and s["search_steps"] == 2
        # the derived ops are the argmax of the final mixture weights
        w = s["op_weights"]
        assert arms["searched"][role]["ops"] == [max(w[b], key=w[b].get)
                                                 for b in nas.BLOCK_NAMES]
        # equal budgets for the two arms of a branch, each kept (set-up included; slack for
        # the last step on a loaded CPU)
        assert arms["searched"][role]["budget_s"] == pytest.approx(
            arms["plain"][role]["budget_s"], abs=1e-3)
        for arm in ("plain", "searched"):
            assert arms[arm][role]["job_seconds"] <= arms[arm][role]["budget_s"] + 5.0
    # the packed arms hold the trained architectures
    for arm in ("plain", "searched"):
        m = load_models(out / f"candidate_{arm}_int8.pt")
        for role in ("anchor", "mid_level"):
            assert m[role].net.architecture()["ops"] == arms[arm][role]["ops"]
    vals = rec["validation"]
    means = {k: mean_dice(v["dice"]) for k, v in vals.items()}
    assert rec["better"] == ("searched" if means["searched"] > means["plain"] else "plain")
    expect_ship = means[rec["better"]] > means["shipped"] + min_gain
    assert rec["shipped"] is expect_ship
    assert (out / "soars_default.pt").is_file() is expect_ship
    rows = (out / "RUNS.md").read_text().splitlines()[-2:]
    assert ["`plain` arm" in rows[0], "`searched` arm" in rows[1]] == [True, True]
    for arm, row in zip(("plain", "searched"), rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert [float(c) for c in cells[5:5 + len(OARS)]] == pytest.approx(
            [vals[arm]["dice"][k] for k in OARS], abs=5e-4)
        assert cells[5 + len(OARS) + 1] == ("yes" if expect_ship and arm == rec["better"]
                                            else "no")
    md = (out / "search_vs_plain.md").read_text()
    assert f"better: **{rec['better']}**" in md and md.count("\n| ") == 4  # head + 3 rows
