"""Partial-label losses: unannotated OARs neither rewarded nor punished."""

import pytest

torch = pytest.importorskip("torch")

from soars_dose.segmentation import training  # noqa: E402


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
