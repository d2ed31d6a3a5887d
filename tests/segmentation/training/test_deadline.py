"""The deadline trainer: stops before the deadline, log lines on disk as written, levers."""

import json
import math

import pytest

torch = pytest.importorskip("torch")

from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402
from soars_dose.segmentation.training import DeadlineConfig, build_network  # noqa: E402
from soars_dose.segmentation.training.config import TrainConfig  # noqa: E402
from soars_dose.segmentation.training.deadline import FastTrainer, LineLog  # noqa: E402
from soars_dose.segmentation.training.stage import fixed_architecture  # noqa: E402

from .fast_helpers import ANCHOR3, toy_samples  # noqa: E402

PRE = Preprocessing(target_spacing_mm=(2.5, 3.9, 3.9), window_hu=(-500.0, 1000.0))


def _net(cin=1):
    cfg = TrainConfig.from_dict({"branch": "anchor", "widths": [4, 8, 8, 8, 8]})
    return build_network(fixed_architecture(cfg, cin, 4), 0)


def _cfg(**kw):
    base = dict(batch_size=2, patch_size=(16, 24, 24), sync_every=2, warmup_fraction=0.2,
                augmentation={"rotation_probability": 0.5, "shift_hu": 200.0,
                              "shift_probability": 0.5, "noise_probability": 0.5})
    base.update(kw)
    return DeadlineConfig(**base)


def test_training_stops_before_the_deadline_with_its_log_on_disk(tmp_path):
    path = tmp_path / "logs" / "anchor.jsonl"
    log = LineLog(path)
    seen = []

    def on_log(entry):  # the entry's line is already in the file when the hook runs
        lines = path.read_text().splitlines()
        seen.append(json.loads(lines[-1]) == json.loads(json.dumps(entry, sort_keys=True)))

    tr = FastTrainer(_net(), toy_samples(3), _cfg(), role="anchor", names=ANCHOR3,
                     preprocessing=PRE, log=log)
    before = [p.detach().clone() for p in tr.net.parameters()]
    tr.step(0.0, 1.0)  # start-up (first-call allocations) outside the timed run
    out = tr.run(3.0, on_log=on_log, max_steps=500)
    log.close()
    # stopped before the deadline; slack: one step's time (a loaded CPU varies)
    slowest = max(e["s_per_step"] for e in log.entries if "s_per_step" in e)
    assert out["seconds"] < 3.0 + max(slowest, 0.5), out
    assert out["steps"] < 500
    assert out["steps"] >= 2 and out["patches"] == 2 * out["steps"]
    assert seen and all(seen)
    entries = [json.loads(x) for x in path.read_text().splitlines()]
    assert entries[-1]["event"] == "done" and entries[-1]["steps"] == out["steps"]
    steps = [e for e in entries if "loss" in e]
    assert len(steps) == out["steps"] // 2 and all(math.isfinite(e["loss"]) for e in steps)
    assert all(e["elapsed_s"] < 3.0 for e in steps)
    peak = _cfg().peak_lr()
    assert all(0 < e["lr"] <= peak + 1e-12 for e in steps)
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.net.parameters()))


@pytest.mark.parametrize("levers", [
    dict(resident=False), dict(vectorised_augment=False), dict(channels_last=False, bf16=False),
    dict(resident=False, vectorised_augment=False, sync_every=1)])
def test_every_lever_path_trains(levers):
    tr = FastTrainer(_net(4), toy_samples(2, extra=3), _cfg(batch_size=3, **levers),
                     role="mid_level", names=["Parotid_L", "Parotid_R", "Esophagus"],
                     anchor_names=ANCHOR3, preprocessing=PRE)
    out = tr.run(60.0, max_steps=2)
    assert out["steps"] == 2 and math.isfinite(out["final_loss"])


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(_net, *a, **k):
        def call(*x):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    tr = FastTrainer(_net(), toy_samples(2), _cfg(compile=True), role="anchor", names=ANCHOR3,
                     preprocessing=PRE)
    out = tr.run(60.0, max_steps=2)
    assert out["steps"] == 2 and not out["compiled"]
    assert tr.log.entries[0]["event"] == "compile_skipped"


def test_a_step_schedule_runs_on_across_calls_without_restarting():
    from soars_dose.segmentation.training.schedule import warm_restart_lr

    cfg = _cfg(sync_every=1, warmup_fraction=0.25)
    tr = FastTrainer(_net(), toy_samples(2), cfg, role="anchor", names=ANCHOR3,
                     preprocessing=PRE)
    for _ in range(2):  # 4 steps of one schedule in two calls, seconds irrelevant
        tr.run(1e9, max_steps=2, schedule_steps=4)
    lrs = [e["lr"] for e in tr.log.entries if "lr" in e]
    want = [warm_restart_lr(n / 4, cfg.peak_lr(), warmup_fraction=0.25,
                            warmup_start=cfg.warmup_start, final_fraction=cfg.final_fraction)
            for n in range(4)]
    assert lrs == pytest.approx(want, rel=1e-12)
    assert tr.steps == 4
    # "step" counts within a call, "total_steps" over the trainer's life
    logged = [(e["step"], e["total_steps"]) for e in tr.log.entries if "lr" in e]
    assert logged == [(1, 1), (2, 2), (1, 3), (2, 4)]
