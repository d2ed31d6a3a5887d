"""The training loop on tiny phantoms: refusals, search, resume, DDP."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose.segmentation import branches as B  # noqa: E402
from soars_dose.segmentation import nas, training  # noqa: E402
from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402
from soars_dose.segmentation.training import TrainConfig  # noqa: E402
from soars_dose.synthetic import oars42 as phantom42  # noqa: E402

from .training_helpers import SMALL, small_config  # noqa: E402


def test_hu_shift_is_refused_for_z_score_intensities(tmp_path, small_samples):
    cfg = small_config(shift_hu=200.0, shift_probability=0.5)
    pre = Preprocessing(target_spacing_mm=SMALL["spacing"], intensity="zscore")
    with pytest.raises(training.TrainingError, match="shift_hu"):
        training.train("x", tmp_path / "run", cfg, samples=small_samples, preprocessing=pre)


def test_search_alpha_gradients_and_updates(tmp_path, small_samples):
    net = B.fast_norm(nas.SearchableUNet(1, 10, widths=(4, 8, 8, 8, 8)))
    s = small_samples[0][0]
    x = torch.from_numpy(s.image)[None, None]
    t = torch.from_numpy(s.labels.astype(np.int64))[None]
    ann = torch.from_numpy(s.annotated)[None]
    training.partial_dice_ce(net(x), t, ann).backward()
    for name, a in zip(nas.BLOCK_NAMES, net.arch_parameters()):
        assert a.grad is not None and torch.count_nonzero(a.grad) > 0, name

    cfg = small_config(search=True, warmup_epochs=2, search_epochs=2, epochs=1,
                       iterations_per_epoch=2, alpha_lr=0.05, validate_search=False)
    res = training.train("unused", tmp_path / "run", cfg, samples=small_samples)
    stages = [e["stage"] for e in res.log]
    assert stages == ["warmup", "warmup", "search", "search", "train"]
    alpha = [np.array([list(w.values()) for w in e["alpha"].values()]) for e in res.log[:4]]
    np.testing.assert_array_equal(alpha[0], alpha[1])  # fixed during the warm-up
    assert np.allclose(alpha[0], 1 / 6, atol=1e-3)  # (nearly) uniform mixture
    assert np.abs(alpha[2] - alpha[1]).max() > 1e-3  # alpha moves in the alternating phase
    assert np.abs(alpha[3] - alpha[2]).max() > 1e-3
    assert "alpha_loss" in res.log[2] and "alpha_loss" not in res.log[0]
    arch = json.loads((tmp_path / "run" / "architecture.json").read_text())
    assert nas.MIXED not in arch["ops"] and arch["ops"] == res.architecture["ops"]
    # derived from the final alphas, trained as a fixed network
    chosen = [nas.OP_NAMES[int(np.argmax(row))] for row in alpha[3]]
    assert arch["ops"] == chosen
    assert not any(isinstance(m, nas.MixedBlock) for m in res.net.modules())
    assert (tmp_path / "run" / "model.soars.pt").is_file()


def test_resume_continues_at_the_right_epoch_with_identical_losses(tmp_path, small_samples):
    cfg = small_config(search=True, warmup_epochs=1, search_epochs=1, epochs=2,
                       iterations_per_epoch=2, validate_search=False)
    full = training.train("unused", tmp_path / "full", cfg, samples=small_samples)
    part = training.train("unused", tmp_path / "part", cfg, samples=small_samples,
                          stop_after_epoch=2)
    assert [e["epoch"] for e in part.log] == [0, 1]
    assert not (tmp_path / "part" / "model.soars.pt").exists()
    ck = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and ck["stage"] == "search" and isinstance(ck["torch_rng"],
                                                                       torch.Tensor)
    resumed = training.train("unused", tmp_path / "part", cfg, samples=small_samples,
                             resume=True)
    log = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1, 2, 3]
    for a, b in zip(full.log, log):
        assert a["stage"] == b["stage"]
        assert a["loss"] == b["loss"], (a["epoch"], a["loss"], b["loss"])
    assert full.architecture == resumed.architecture
    for (k, v), (k2, v2) in zip(full.net.state_dict().items(), resumed.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    with pytest.raises(training.TrainingError, match="other settings"):
        training.train("unused", tmp_path / "part", small_config(epochs=5), resume=True,
                       samples=small_samples)


def _ddp_worker(rank, world, init, dataset, run_dir, cfg, out_dir):
    import torch

    torch.set_num_threads(1)
    res = training.train(dataset, run_dir, TrainConfig.from_dict(cfg), rank=rank,
                         world_size=world, init_method=init)
    torch.save({"state": res.net.state_dict(), "log": res.log, "model": str(res.model_path)},
               f"{out_dir}/rank{rank}.pt")


def test_ddp_two_gloo_processes_end_with_identical_weights(tmp_path):
    import torch.multiprocessing as mp

    ds = phantom42.write_dataset(tmp_path / "ds", 5, seed=3, **SMALL)
    cfg = small_config(epochs=1, batch_size=1).to_dict()
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/rendezvous", str(ds), str(tmp_path / "run"),
                                cfg, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["log"][0]["iterations"] == math.ceil(3 / 2)  # 3 training cases shared by 2 ranks
    assert r0["log"][0]["loss"] == pytest.approx(r1["log"][0]["loss"])  # all-reduced
    changed = False
    c = TrainConfig.from_dict(cfg)
    init = training.build_network(training.fixed_architecture(c, 1, 10), c.seed + 1)
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
        changed |= not torch.equal(v, init.state_dict()[k])
    assert changed
    assert r0["model"].endswith("model.soars.pt") and r1["model"] == "None"
    assert (tmp_path / "run" / "model.soars.pt").is_file()
