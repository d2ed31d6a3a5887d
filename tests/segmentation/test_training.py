"""Training mechanics on tiny phantoms: augmentation, partial labels, search, resume, DDP."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose.segmentation import branches as B  # noqa: E402
from soars_dose.segmentation import catalogue, nas, phantom42, training  # noqa: E402
from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402
from soars_dose.segmentation.training import TrainConfig  # noqa: E402

SMALL = dict(shape=(24, 32, 32), spacing=(8.0, 6.0, 6.0))


def small_config(**kw):
    base = dict(widths=(4, 8, 8, 8, 8), patch_size=(24, 32, 32), search_patch_size=(24, 32, 32),
                batch_size=1, epochs=2, ops=("p3d_3",) * 9, lr=0.01, iterations_per_epoch=None,
                momentum=0.9)
    base.update(kw)
    return TrainConfig.tiny(kw.pop("branch", "anchor"), **base)


@pytest.fixture(scope="module")
def small_samples():
    cases = [phantom42.DatasetCase.from_phantom(phantom42.make_case(s, **SMALL)) for s in range(3)]
    s = training.prepare_samples(cases, "anchor", Preprocessing(target_spacing_mm=SMALL["spacing"]))
    return s[:2], s[2:]


# ------------------------------------------------------------------ augmentation
def test_flip_swaps_left_and_right_labels():
    case = phantom42.make_case(0, partial=True, drop_fraction=0.3)
    names = catalogue.names("anchor")
    labels = torch.from_numpy(case.annotated_labels("anchor").astype(np.int64))
    image = torch.from_numpy(case.hu)[None]
    # a fake anchor-probability input: channel of Eye_L = its mask
    extra = torch.zeros((len(names),) + case.hu.shape)
    for c, n in enumerate(names):
        extra[c] = torch.from_numpy(case.mask(n).astype(np.float32))
    x = torch.cat([image, extra])
    ann = np.array([True] + [bool(case.annotated[catalogue.names().index(n)]) for n in names])
    ann[names.index("Eye_L") + 1] = False  # Eye_L unannotated, Eye_R annotated
    ann[names.index("Eye_R") + 1] = True
    centres = np.array([case.centre(n) for n in names])
    cfg = TrainConfig.tiny("anchor", flip_probability=1.0, rotation_probability=0.0,
                           intensity_range=(1.0, 1.0), noise_std=0.0)
    perm = catalogue.lr_permutation(names)
    x2, lab2, ann2, c2, info = training.augment(
        x, labels, ann, centres, np.random.default_rng(0), cfg, (4.0, 3.0, 3.0),
        B.input_lr_permutation("mid_level"), perm)
    assert info["flip"]
    w = case.hu.shape[2]
    for n in ("Eye_L", "Parotid_L", "Joint_TM_L", "Bone_Mandible_R"):
        if catalogue.get(n).category != "anchor":
            continue
        a, b = names.index(n) + 1, names.index(catalogue.swap_lr(n)) + 1
        if ann[a]:
            # voxels of n, mirrored, carry the partner's label
            np.testing.assert_array_equal((lab2 == b).numpy(),
                                          np.flip((labels == a).numpy(), axis=2))
        # the anchor input channel of n now holds the mirrored mask of n under the partner's name
        torch.testing.assert_close(x2[b], torch.flip(x[a], dims=(-1,)))
        assert ann2[b] == ann[a]
        np.testing.assert_allclose(c2[b - 1], [centres[a - 1][0], centres[a - 1][1],
                                               w - 1 - centres[a - 1][2]])
    mid = names.index("Brainstem") + 1  # midline organs keep their label
    np.testing.assert_array_equal((lab2 == mid).numpy(), np.flip((labels == mid).numpy(), 2))
    torch.testing.assert_close(x2[0], torch.flip(x[0], dims=(-1,)))
    assert not ann2[names.index("Eye_R") + 1] and ann2[names.index("Eye_L") + 1]


def test_rotation_intensity_and_noise():
    case = phantom42.make_case(1, partial=False)
    names = catalogue.names("anchor")
    labels = torch.from_numpy(case.labels["anchor"].astype(np.int64))
    x = torch.from_numpy(case.hu)[None] / 1000.0
    centres = np.array([case.centre(n) for n in names])
    cfg = TrainConfig.tiny("anchor", flip_probability=0.0, rotation_probability=1.0,
                           rotation_deg=10.0, intensity_range=(0.75, 1.25), noise_std=0.0,
                           intensity_probability=1.0)
    perm = catalogue.lr_permutation(names)
    x2, lab2, _, c2, info = training.augment(x, labels, np.ones(10, bool), centres,
                                             np.random.default_rng(3), cfg, (4.0, 3.0, 3.0),
                                             [0], perm, fill=-1.0)
    assert 0 < abs(info["angle_deg"]) <= 10 and 0.75 <= info["scale"] <= 1.25
    # the centres move with the labels (label centroid after rotation)
    for c, n in enumerate(names):
        m = (lab2 == c + 1).numpy()
        if m.sum() > 50:
            assert np.linalg.norm(np.argwhere(m).mean(0) - c2[c]) < 0.6, n
    # air (the fill value) stays air under scaling about the fill value, and rotation pads with it
    assert float(x2[0, 0, 0, 0]) == pytest.approx(-1.0, abs=1e-5)
    cfg = TrainConfig.tiny("anchor", flip_probability=0.0, rotation_probability=0.0,
                           intensity_range=(1.0, 1.0), noise_std=0.05,
                           noise_probability=1.0)
    x3, *_ , info = training.augment(x, labels, np.ones(10, bool), centres,
                                     np.random.default_rng(4), cfg, (4.0, 3.0, 3.0), [0], perm)
    d = (x3 - x).numpy()
    assert abs(d.std() - info["noise"]) < 0.01 * max(info["noise"], 1e-3) + 1e-3


def test_hu_shift_moves_tissue_by_the_offset_and_keeps_the_window():
    window = (-500.0, 1000.0)
    hu = np.array([-1000.0, -400.0, 0.0, 40.0, 300.0, 990.0], np.float32)
    x = torch.from_numpy((np.clip(hu, *window) - window[0]) / (window[1] - window[0]))
    x = x.view(1, 1, 1, -1)
    cfg = TrainConfig.tiny("anchor", flip_probability=0.0, rotation_probability=0.0,
                           intensity_probability=0.0, noise_probability=0.0, window_hu=window,
                           shift_hu=300.0, shift_probability=1.0)
    x2, *_, info = training.augment(x, None, np.ones(2, bool), None, np.random.default_rng(5),
                                    cfg, (1.0, 1.0, 1.0), [0], [0, 1])
    shift_hu = info["shift"] * (window[1] - window[0])
    assert 0 < abs(shift_hu) <= 300.0
    expect = (np.clip(np.clip(hu, *window) + shift_hu, *window) - window[0]) / 1500.0
    np.testing.assert_allclose(x2.numpy().ravel(), expect, atol=1e-6)
    # off by default: the random stream and the image are those of a run without it
    cfg0 = TrainConfig.tiny("anchor", flip_probability=0.0, rotation_probability=0.0,
                            intensity_probability=0.0, noise_probability=0.0)
    x3, *_, info0 = training.augment(x, None, np.ones(2, bool), None, np.random.default_rng(5),
                                     cfg0, (1.0, 1.0, 1.0), [0], [0, 1])
    assert info0["shift"] == 0.0 and torch.equal(x3, x)


def test_hu_shift_is_refused_for_z_score_intensities(tmp_path, small_samples):
    cfg = small_config(shift_hu=200.0, shift_probability=0.5)
    pre = Preprocessing(target_spacing_mm=SMALL["spacing"], intensity="zscore")
    with pytest.raises(training.TrainingError, match="shift_hu"):
        training.train("x", tmp_path / "run", cfg, samples=small_samples, preprocessing=pre)


def test_one_batch_step_gives_the_cross_entropy_of_the_examples(small_samples):
    """A batch of equal patches goes through the network at once: same CE as one by one."""
    train_s, _ = small_samples
    cfg = small_config(batch_size=2, augment=False)
    names = catalogue.names("anchor")
    task = training._Task("anchor", cfg, None, names)
    net = nas.build_fixed(training._fixed_arch(cfg, 1, len(names) + 1)).eval()
    rng = np.random.default_rng(0)
    made = [task.make(s, 0, cfg.patch_size, rng, False) for s in train_s]
    x = torch.stack([m[0] for m in made])
    with torch.no_grad():
        out = net(x)
    ce_batch = torch.nn.functional.cross_entropy(out, torch.stack([m[1] for m in made]))
    with torch.no_grad():
        ce_each = [torch.nn.functional.cross_entropy(net(m[0][None]), m[1][None]) for m in made]
    assert float(ce_batch) == pytest.approx(float(sum(ce_each) / 2), rel=1e-5)
    # the batched step runs and returns the batch loss (a finite positive number)
    so = training._Stage("train", nas.build_fixed(training._fixed_arch(cfg, 1, len(names) + 1)),
                         cfg, 1)
    loss = training._step(so, so.opt_w, task, train_s, [(0, 0), (1, 0)], cfg.patch_size,
                          np.random.default_rng(1), cfg, clip=None, step=True, world=1)
    assert math.isfinite(loss) and loss > 0


def test_examples_are_built_from_cached_volumes_without_copies(small_samples):
    train_s, _ = small_samples
    cfg = small_config()
    task = training._Task("anchor", cfg, None, catalogue.names("anchor")).to("cpu")
    a = task.make(train_s[0], 0, cfg.patch_size, np.random.default_rng(2), True)
    b = task.make(train_s[0], 0, cfg.patch_size, np.random.default_rng(2), True)
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # same draws, same example
    img, lab, _ = task._volumes(train_s[0])
    assert img.data_ptr() == torch.from_numpy(train_s[0].image).data_ptr()  # a view on the CPU
    assert lab.dtype == torch.uint8 and a[1].dtype == torch.int64


# ------------------------------------------------------------------ losses
def test_partial_label_loss_ignores_unannotated_oars():
    torch.manual_seed(0)
    n, c = 2, 6
    logits = torch.randn(n, c, 6, 7, 8, requires_grad=True)
    target = torch.randint(0, c, (n, 6, 7, 8))
    annotated = torch.ones(n, c, dtype=torch.bool)
    annotated[0, 2] = False
    annotated[1, 4] = False
    annotated[1, 5] = False
    target[0][target[0] == 2] = 0  # unannotated organs are background in the labels
    target[1][(target[1] == 4) | (target[1] == 5)] = 0
    loss = training.partial_dice_ce(logits, target, annotated)
    loss.backward()
    g = logits.grad
    assert torch.count_nonzero(g[0, 2]) == 0
    assert torch.count_nonzero(g[1, 4]) == 0 and torch.count_nonzero(g[1, 5]) == 0
    for b, ch in [(0, 0), (0, 1), (0, 3), (0, 4), (1, 1), (1, 2), (1, 3)]:
        assert torch.count_nonzero(g[b, ch]) > 0, (b, ch)
    # whatever the network says about an unannotated OAR does not change the loss
    with torch.no_grad():
        other = logits.detach().clone()
        other[0, 2] += 50 * torch.randn_like(other[0, 2])
        assert float(training.partial_dice_ce(other, target, annotated)) == pytest.approx(
            float(loss), rel=1e-6)
    # balanced CE and pair groups keep the property
    logits.grad = None
    groups = [[0], [1, 2], [3], [4, 5]]
    training.partial_dice_ce(logits, target, annotated, groups=groups, balance=1.0).backward()
    assert torch.count_nonzero(logits.grad[0, 2]) == 0
    assert torch.count_nonzero(logits.grad[1, 4]) == 0
    assert torch.count_nonzero(logits.grad[0, 1]) > 0


def test_heatmap_loss_ignores_unannotated_oars():
    pred = torch.randn(1, 4, 5, 6, 7, requires_grad=True)
    target = torch.rand(1, 4, 5, 6, 7)
    ann = torch.tensor([[True, True, False, True]])
    training.heatmap_loss(pred, target, ann, fg_weight=5.0).backward()
    assert torch.count_nonzero(pred.grad[0, 2]) == 0 and torch.count_nonzero(pred.grad[0, 0]) == 0
    assert torch.count_nonzero(pred.grad[0, 1]) > 0
    expected = ((pred - target) ** 2 * (1 + 5 * target))[0, [1, 3]].mean()
    assert float(training.heatmap_loss(pred, target, ann, fg_weight=5.0, normalize=False)
                 .detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    se = ((pred - target) ** 2 * (1 + 5 * target))[0, [1, 3]].sum((1, 2, 3))
    expected = (se / (target[0, [1, 3]] ** 2).sum((1, 2, 3))).mean()
    assert float(training.heatmap_loss(pred, target, ann, fg_weight=5.0).detach()) == \
        pytest.approx(float(expected.detach()), rel=1e-5)


# ------------------------------------------------------------------ search
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


# ------------------------------------------------------------------ resume
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


# ------------------------------------------------------------------ DDP
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
    init = training._build(training._fixed_arch(c, 1, 10), c.seed + 1)
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
        changed |= not torch.equal(v, init.state_dict()[k])
    assert changed
    assert r0["model"].endswith("model.soars.pt") and r1["model"] == "None"
    assert (tmp_path / "run" / "model.soars.pt").is_file()
