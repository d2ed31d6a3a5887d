"""The deadline search: its split, which parameters each stage moves, the derived ops, OOM."""

import pytest

torch = pytest.importorskip("torch")

from soars_dose.errors import TrainingError  # noqa: E402
from soars_dose.segmentation import nas  # noqa: E402
from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402
from soars_dose.segmentation.training import DeadlineConfig, build_network  # noqa: E402
from soars_dose.segmentation.training.config import TrainConfig  # noqa: E402
from soars_dose.segmentation.training.deadline import BatchSource  # noqa: E402
from soars_dose.segmentation.training.fast_search import (  # noqa: E402
    FastSearcher,
    split_samples,
)
from soars_dose.segmentation.training.stage import (  # noqa: E402
    fixed_architecture,
    search_architecture,
)

from .fast_helpers import ANCHOR3, toy_samples  # noqa: E402

PRE = Preprocessing(target_spacing_mm=(2.5, 3.9, 3.9), window_hu=(-500.0, 1000.0))
TCFG = TrainConfig.from_dict({"branch": "anchor", "widths": [4, 4, 4, 4, 4]})
CFG = DeadlineConfig(batch_size=2, patch_size=(16, 16, 24), sync_every=2)


def _searcher(samples=None, **kw):
    s = samples or toy_samples(3)
    tr, held = split_samples(s, 1 / 3, 0)
    net = build_network(search_architecture(TCFG, 1, 4), 0)
    return FastSearcher(net, tr, held, kw.pop("config", CFG), role="anchor", names=ANCHOR3,
                        preprocessing=PRE, **kw)


@pytest.mark.parametrize("n, frac", [(2, 0.5), (3, 1 / 3), (7, 1 / 3), (10, 0.9), (5, 0.01)])
def test_split_is_disjoint_complete_seeded_and_never_empty(n, frac):
    s = toy_samples(n)
    tr, held = split_samples(s, frac, 3)
    ids = [x.case_id for x in tr] + [x.case_id for x in held]
    assert sorted(ids) == sorted(x.case_id for x in s) and len(set(ids)) == n
    assert tr and held
    assert len(held) == min(n - 1, max(1, round(frac * n)))  # the share, 1 each side at least
    again = split_samples(s, frac, 3)
    assert [x.case_id for x in again[1]] == [x.case_id for x in held]


@pytest.mark.parametrize("n, frac", [(1, 0.5), (3, 0.0), (3, 1.0)])
def test_split_refuses_what_cannot_be_split(n, frac):
    with pytest.raises(TrainingError):
        split_samples(toy_samples(n), frac, 0)


def test_warm_up_moves_only_the_weights_search_moves_alpha_and_derive_takes_the_argmax():
    fs = _searcher()
    alpha0 = [a.detach().clone() for a in fs.net.arch_parameters()]
    w0 = [p.detach().clone() for p in fs.net.weight_parameters()]
    res = fs.run(1e6, 0.0, max_steps=2)
    assert res["warmup_steps"] == 2 and res["search_steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(alpha0, fs.net.arch_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(w0, fs.net.weight_parameters()))
    res = fs.run(0.0, 1e6, max_steps=3)
    assert res["search_steps"] == 3 and res["patches"] == 6 and res["alpha_patches"] == 6
    assert all(not torch.equal(a, b) for a, b in zip(alpha0, fs.net.arch_parameters()))
    ops = res["architecture"]["ops"]
    assert ops == [nas.OP_NAMES[int(torch.argmax(a))] for a in fs.net.arch_parameters()]
    assert ops == [max(res["op_weights"][b], key=res["op_weights"][b].get)
                   for b in nas.BLOCK_NAMES]
    assert nas.build_fixed(res["architecture"]).architecture()["ops"] == ops


def test_the_stages_stop_at_their_seconds():
    fs = _searcher()
    fs.run(0.0, 0.0, max_steps=1)  # first-call allocations outside the timed run
    res = fs.run(1.0, 1.0, max_steps=1000)
    slowest = max(e["s_per_step"] for e in fs.log.entries if "s_per_step" in e)
    assert res["seconds"] < 2.0 + 2 * max(slowest, 0.5)
    assert res["warmup_steps"] >= 1 and res["search_steps"] >= 1


def test_alpha_steps_draw_from_the_held_out_split_only(monkeypatch):
    s = toy_samples(3)
    tr, held = split_samples(s, 1 / 3, 0)
    fs = _searcher(s)
    assert fs.train_source.samples == tr and fs.held_source.samples == held
    calls = []
    real = fs._try_step

    def spy(opt, source, balance):
        calls.append(("w" if opt is fs.opt_w else "a", "train" if source is fs.train_source
                      else "held"))
        return real(opt, source, balance)

    monkeypatch.setattr(fs, "_try_step", spy)
    fs.run(0.0, 1e6, max_steps=2)
    assert calls == [("w", "train"), ("a", "held")] * 2
    # the two sources are seeded apart: their first patches differ
    assert not torch.equal(fs.train_source.volumes.draw(4, fs.train_source.gen)[1],
                           fs.held_source.volumes.draw(4, fs.held_source.gen)[1])


def test_out_of_memory_halves_the_batch_and_retries_then_refuses_at_one(monkeypatch):
    fs = _searcher(config=DeadlineConfig(batch_size=4, patch_size=(16, 16, 24), sync_every=1))
    real = BatchSource.next
    fails = {"n": 1}

    def flaky(self):
        if fails["n"]:
            fails["n"] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self)

    monkeypatch.setattr(BatchSource, "next", flaky)
    res = fs.run(1e6, 0.0, max_steps=1)
    assert res["batch_size"] == 2 and fs.train_source.batch_size == 2
    assert fs.held_source.batch_size == 2 and res["patches"] == 2
    assert any(e.get("event") == "search_batch_halved" for e in fs.log.entries)
    fails["n"] = 10
    with pytest.raises(TrainingError, match="even at batch 1"):
        fs.run(1e6, 0.0, max_steps=1)


def test_refuses_a_network_without_mixed_blocks():
    tr, held = split_samples(toy_samples(3), 1 / 3, 0)
    net = build_network(fixed_architecture(TCFG, 1, 4), 0)
    with pytest.raises(TrainingError, match="SearchableUNet"):
        FastSearcher(net, tr, held, CFG, role="anchor", names=ANCHOR3, preprocessing=PRE)


def test_out_of_memory_after_the_forward_pass_frees_the_batch_before_the_retry(monkeypatch):
    import gc
    import weakref

    from soars_dose.segmentation.training import deadline, fast_search

    fs = _searcher(config=DeadlineConfig(batch_size=4, patch_size=(16, 16, 24), sync_every=1))
    real = deadline.partial_dice_ce
    seen, alive_at_release = [], []

    def failing_once(out, *a, **k):
        loss = real(out, *a, **k)
        if not seen:  # the first step's batch: fail after the forward pass
            seen.append((weakref.ref(out), weakref.ref(loss)))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return loss

    def release(device):  # when the cached memory is released, the failed batch is gone
        gc.collect()
        alive_at_release.append([r() is not None for r in seen[0]])

    monkeypatch.setattr(deadline, "partial_dice_ce", failing_once)  # the loss of every step
    monkeypatch.setattr(fast_search, "free_device_memory", release)
    res = fs.run(1e6, 0.0, max_steps=1)
    assert alive_at_release == [[False, False]]
    assert res["batch_size"] == 2 and res["patches"] == 2 and len(seen) == 1
