"""batch_per_patch.py at the tiniest size: equal patches per arm, checkpoints, the cap."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from .openkbp_inputs import ANCHOR, load_script, make_inputs  # noqa: E402


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("batch_inputs"))


def _run(inputs, out, *extra):
    root, start, _ = inputs
    return load_script("batch_per_patch").main([
        "--train", str(root / "train.npz"), "--val", str(root / "validation.npz"),
        "--out", str(out), "--start", str(start), "--device", "cpu", "--patch", "16", "32", "32",
        "--sync-every", "1", "--threads", "1", "--deadline-s", "600", *extra])


def test_every_arm_is_measured_at_the_same_patch_counts(inputs, tmp_path):
    out = tmp_path / "out"
    assert _run(inputs, out, "--batches", "2", "1", "--patches", "4", "--checkpoints", "2") == 0
    rec = json.loads((out / "batch_per_patch.json").read_text())
    arms = rec["arms"]
    assert list(arms) == ["2", "1"]
    for b, arm in arms.items():
        assert [c["patches"] for c in arm["checkpoints"]] == [2, 4]
        assert [c["steps"] for c in arm["checkpoints"]] == [2 // int(b), 4 // int(b)]
        assert arm["peak_lr"] == pytest.approx(0.01 * math.sqrt(int(b) / 4))
        assert not arm["stopped_early"]
        for c in arm["checkpoints"]:
            assert set(c["dice"]) == set(ANCHOR)
            vals = [v for v in c["dice"].values() if v is not None]
            assert all(0.0 <= v <= 1.0 for v in vals)
            assert c["mean"] == pytest.approx(sum(vals) / len(vals))
    md = (out / "batch_per_patch.md").read_text()
    assert md.count("\n| 2 |") == 2 and md.count("\n| 1 |") == 2


def test_an_arm_past_its_cap_stops_and_says_so(inputs, tmp_path):
    out = tmp_path / "out"
    assert _run(inputs, out, "--batches", "1", "--patches", "400", "--checkpoints", "2",
                "--arm-cap-s", "0.5") == 0
    arm = json.loads((out / "batch_per_patch.json").read_text())["arms"]["1"]
    assert arm["stopped_early"] and len(arm["checkpoints"]) == 1
    assert arm["checkpoints"][0]["steps"] < 200
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "warning" and "stopped at" in e["message"] for e in log)
    assert "(stopped early at its cap)" in (out / "batch_per_patch.md").read_text()
