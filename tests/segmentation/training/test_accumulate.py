"""Accumulating training: resume from the int8 bundle, ship only gains, the runs table."""

import pytest

torch = pytest.importorskip("torch")

from soars_dose.errors import TrainingError  # noqa: E402
from soars_dose.segmentation.bundle import quantize_int8, save_bundle  # noqa: E402
from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402
from soars_dose.segmentation.training import DeadlineConfig, build_network  # noqa: E402
from soars_dose.segmentation.training.accumulate import (  # noqa: E402
    RunRecord,
    append_run,
    format_run_row,
    save_branch,
    should_ship,
    start_network,
)
from soars_dose.segmentation.training.config import TrainConfig  # noqa: E402
from soars_dose.segmentation.training.deadline import FastTrainer  # noqa: E402
from soars_dose.segmentation.training.stage import fixed_architecture  # noqa: E402

from .fast_helpers import ANCHOR3, toy_samples  # noqa: E402

PRE = Preprocessing(target_spacing_mm=(2.5, 3.9, 3.9), window_hu=(-500.0, 1000.0))


def _branch_file(tmp_path):
    cfg = TrainConfig.from_dict({"branch": "anchor", "widths": [4, 8, 8, 8, 8]})
    net = build_network(fixed_architecture(cfg, 1, 4), 5)
    path = save_branch(tmp_path / "anchor.soars.pt", net, role="anchor", names=ANCHOR3,
                       preprocessing=PRE, patch_size=(16, 24, 24), anchor_names=None,
                       training={"patches": 10, "patches_cumulative": 10})
    return net, path


def test_resuming_from_the_int8_bundle_gives_its_dequantised_weights(tmp_path):
    net, path = _branch_file(tmp_path)
    bundle = save_bundle(tmp_path / "b.pt", [path], weights="int8")
    start, br = start_network(bundle, "anchor")
    assert br.oar_names == ANCHOR3 and br.model.provenance["training"]["patches"] == 10
    got = start.state_dict()
    n_int8 = 0
    for k, v in net.state_dict().items():
        if v.is_floating_point() and v.dim() >= 2:  # int8 kernels: exactly q * scale
            q, scale = quantize_int8(v)
            expect = q.float() * scale.view((-1,) + (1,) * (v.dim() - 1))
            assert torch.equal(got[k], expect), k
            assert float((got[k] - v).abs().max()) <= float(scale.max()) / 2 + 1e-7
            n_int8 += 1
        elif v.is_floating_point():  # the rest float16
            assert torch.equal(got[k], v.half().float()), k
    assert n_int8 > 5
    assert start.training and all(p.requires_grad for p in start.parameters())
    # a couple of steps on it, saved and read back as the next run's start
    tr = FastTrainer(start, toy_samples(2), DeadlineConfig(batch_size=2, patch_size=(16, 24, 24),
                                                           sync_every=1),
                     role="anchor", names=ANCHOR3, preprocessing=PRE)
    tr.run(60.0, max_steps=2)
    out = save_branch(tmp_path / "next.soars.pt", tr.trained_network(), role="anchor",
                      names=ANCHOR3, preprocessing=PRE, patch_size=(16, 24, 24),
                      anchor_names=None, training={"patches": 4})
    again, _ = start_network(out, "anchor")
    for k, v in tr.trained_network().state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_a_model_is_shipped_only_when_the_mean_dice_improves():
    old = {"Brainstem": 0.70, "SpinalCord": 0.70, "Esophagus": 0.50}
    assert should_ship({"Brainstem": 0.72, "SpinalCord": 0.70, "Esophagus": 0.50}, old)
    assert not should_ship(dict(old), old)  # a tie is no gain
    assert not should_ship({"Brainstem": 0.80, "SpinalCord": 0.70, "Esophagus": 0.30}, old)
    assert not should_ship({"Brainstem": 0.72, "SpinalCord": 0.70, "Esophagus": 0.50}, old,
                           min_gain=0.01)
    # compared over the OARs both have; an unmeasured OAR does not count
    assert should_ship({"Brainstem": 0.71, "SpinalCord": None, "Esophagus": 0.50}, old)
    assert not should_ship({}, old) and not should_ship({"Brainstem": None}, old)


def test_runs_are_appended_to_the_table(tmp_path):
    p = tmp_path / "RUNS.md"
    p.write_text("# Runs\n\n| date | x |\n|---|---|\n| 2026-11-27 | a |\n\nNotes after.\n")
    r = RunRecord("2026-12-01", "NVIDIA H200", 400.0, 12800, 40000,
                  {"Brainstem": 0.7312, "SpinalCord": None}, shipped=True, note="a|b")
    append_run(p, r, ["Brainstem", "SpinalCord"])
    lines = p.read_text().splitlines()
    assert lines[5] == ("| 2026-12-01 | NVIDIA H200 | 400 | 12800 | 40000 | 0.731 | - | 0.731 "
                        "| yes | a/b |")
    assert lines[-1] == "Notes after." and lines[4] == "| 2026-11-27 | a |"
    assert format_run_row(RunRecord("d", "cpu", None, None, None), ["Brainstem"]) == \
        "| d | cpu | - | - | - | - | - | no |  |"
    q = tmp_path / "empty.md"
    q.write_text("no table\n")
    with pytest.raises(TrainingError, match="no runs table"):
        append_run(q, r, ["Brainstem"])
