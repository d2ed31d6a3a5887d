"""train_deadline.py end to end at the tiniest size: train, pack, validate, ship or not, RUNS.md.

A synthetic OpenKBP split (3 small patients with all seven OARs) is packed
with the real export code; the start model is a tiny anchor + mid-level
int8 bundle. Both ship branches are exercised through ``--min-gain``: -1
ships any finite result, +1 none; the Dice figures themselves are measured.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose.segmentation.bundle import load_models  # noqa: E402

from .openkbp_inputs import OARS, load_script, make_inputs  # noqa: E402


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("deadline_inputs"))


class _Stdout(io.StringIO):
    """Stdout that checks, as each JSON line is printed, that the log file already holds it."""

    def __init__(self, log: Path):
        super().__init__()
        self.log, self.checked = log, []

    def write(self, s):
        if s.startswith("{"):
            last = self.log.read_text().splitlines()[-1]
            self.checked.append(json.loads(last) == json.loads(s))
        return super().write(s)


@pytest.mark.parametrize("min_gain, shipped", [(-1.0, True), (1.0, False)])
def test_deadline_run_trains_packs_validates_and_ships_only_on_a_gain(
        inputs, tmp_path, monkeypatch, min_gain, shipped):
    root, start, runs = inputs
    out = tmp_path / "out"
    fake = _Stdout(out / "train_log.jsonl")
    monkeypatch.setattr(sys, "stdout", fake)
    rc = load_script("train_deadline").main([
        "--train", str(root / "train.npz"), "--val", str(root / "validation.npz"),
        "--out", str(out), "--start", str(start), "--runs-md", str(runs), "--device", "cpu",
        "--patch", "16", "32", "32", "--batch", "2", "--max-steps", "3", "--sync-every", "1",
        "--deadline-s", "300", "--reserve-s", "100", "--threads", "1",
        "--min-gain", str(min_gain)])
    monkeypatch.undo()
    assert rc == 0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert fake.checked and all(fake.checked)  # every line on disk when it was printed
    assert len(fake.checked) == len(log)
    phases = {e["phase"] for e in log if e.get("event") == "phase"}
    assert {"startup", "load_arrays", "prepare", "to_device_anchor", "train_anchor",
            "to_device_mid_level", "train_mid_level", "pack", "validate_start_model",
            "validate_candidate"} <= phases
    done = [e for e in log if e.get("event") == "done"]
    assert [d["steps"] for d in done if "role" in d] == [3, 3]
    assert log[-1]["event"] == "done" and log[-1]["shipped"] is shipped
    # the candidate is an int8 bundle of both branches; the shipped file only on a gain
    cand = load_models(out / "candidate_int8.pt")
    assert set(cand.branches) == {"anchor", "mid_level"}
    assert (out / "soars_default.pt").is_file() is shipped
    if shipped:
        assert (out / "soars_default.pt").read_bytes() == (out / "candidate_int8.pt").read_bytes()
    rec = json.loads((out / "run_record.json").read_text())
    dice = rec["candidate_validation"]["dice"]
    assert set(dice) == set(OARS) and all(0.0 <= v <= 1.0 for v in dice.values())
    row = (out / "RUNS.md").read_text().splitlines()[-1].strip("|").split("|")
    cells = [c.strip() for c in row]
    assert len(cells) == 5 + len(OARS) + 3
    assert cells[1] == "CPU" and len(cells[0]) == 10  # ISO date
    assert float(cells[2]) == pytest.approx(rec["record"]["train_s"], abs=0.5)
    assert int(cells[3]) == 2 * 3 * 2  # patches: 2 branches x 3 steps x batch 2
    assert int(cells[4]) == 2 * 100 + 12  # cumulative: the start files' 100 each + this run
    assert [float(c) for c in cells[5:5 + len(OARS)]] == pytest.approx(
        [dice[k] for k in OARS], abs=5e-4)
    assert cells[5 + len(OARS) + 1] == ("yes" if shipped else "no")
    assert runs.read_text().count("\n| 20") == 0  # the source table is not modified


def test_prepare_branches_matches_prepare_samples_per_branch(inputs):
    from soars_dose.datasets.openkbp import dataset_cases
    from soars_dose.segmentation.training import prepare_branches, prepare_samples

    root, start, _ = inputs
    cases = dataset_cases(root / "train.npz")
    models = load_models(start)
    timings: dict = {}
    both = prepare_branches(cases, models.preprocessing, models["anchor"], workers=2,
                            timings=timings)
    assert set(timings) == {"preprocess_s", "anchor_inference_s"}
    for role, anchor in (("anchor", None), ("mid_level", models["anchor"])):
        ref = prepare_samples(cases, role, models.preprocessing, anchor)
        assert [s.case_id for s in both[role]] == [s.case_id for s in ref]
        for a, b in zip(both[role], ref):
            assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
            assert np.array_equal(a.annotated, b.annotated)
            assert np.allclose(a.centres, b.centres, equal_nan=True)
            assert (a.extra is None) == (b.extra is None)
            if a.extra is not None:
                assert np.array_equal(a.extra, b.extra)
    assert "mid_level" not in prepare_branches(cases[:1], models.preprocessing)
