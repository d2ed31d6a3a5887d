"""Training losses: partial-label Dice + cross-entropy, and the S&H heat-map L2.

* anchor, mid-level: Dice + cross-entropy that counts only the OARs
  annotated in each case (:func:`partial_dice_ce`): the logits of
  unannotated OARs are excluded from the softmax (their gradient is
  exactly zero) and their Dice terms are dropped; voxels of unannotated
  organs are background in the labels, as in real partially contoured
  data. The cross-entropy is class-balanced at the start of each stage
  (every class's voxels weigh as much as the background's, exponent
  ``ce_balance`` = 1) and turns linearly into the plain voxel mean by its
  end (``ce_balance_final`` = 0): small organs are learnt early instead
  of being drowned by the background, and the final bias towards
  over-segmentation is removed.
* sh_detect: L2 between predicted and target heat maps (Gaussian,
  ``heatmap_sigma_mm``, at each annotated S&H organ's centroid), over the
  annotated organs only (:func:`heatmap_loss`); ``heatmap_fg_weight``
  weights voxels by ``1 + w * target`` (0 = plain L2).
* sh_seg: the partial Dice + cross-entropy on left/right-merged classes
  (:func:`~soars_dose.segmentation.branches.pair_groups`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import branches as B

__all__ = ["MASKED_LOGIT", "heatmap_loss", "partial_dice_ce"]

MASKED_LOGIT = -1.0e4


def partial_dice_ce(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, *,
                    groups: list[list[int]] | None = None, smooth: float = 1.0,
                    balance: float = 0.0) -> torch.Tensor:
    """Dice + cross-entropy over the OARs annotated in each sample.

    Parameters
    ----------
    logits : Tensor (N, C, D, H, W)
        Channel 0 background.
    target : Tensor (N, D, H, W) of int
        Labels 0..C-1; unannotated OARs must already be background (any
        voxel labelled with an unannotated class is treated as background).
    annotated : Tensor (N, C) of bool
        Which channels are annotated per sample (channel 0 is always taken
        as annotated).
    groups : list of list of int, optional
        Merge channels into output classes before the loss (S&H left/right
        pairs, :func:`~soars_dose.segmentation.branches.pair_groups`); a
        group is annotated when any member is.
    smooth : float
        Soft Dice smoothing.

    Returns
    -------
    Tensor
        Scalar: mean cross-entropy + (1 - mean soft Dice over the annotated
        foreground classes present in each sample). Classes absent from a
        sample's labels are left to the cross-entropy: their soft Dice
        would be (almost) 1 for an all-background prediction and reward
        predicting nothing in crops that hold one organ of many.

    Notes
    -----
    Unannotated channels are replaced by a large negative constant before
    the softmax (``torch.where``), so their logits receive exactly zero
    gradient: the loss neither rewards nor punishes what the network says
    about an organ nobody contoured in that case.
    """
    annotated = annotated.clone().bool()
    annotated[:, 0] = True
    n, c = logits.shape[:2]
    ann = annotated.view(n, c, 1, 1, 1).expand_as(logits)
    masked = torch.where(ann, logits, torch.full_like(logits, MASKED_LOGIT))
    logp = torch.log_softmax(masked, dim=1)
    target = target.long()
    target = torch.where(torch.gather(annotated, 1, target.view(n, -1)).view_as(target),
                         target, torch.zeros_like(target))
    if groups is not None:
        logq = torch.stack([torch.logsumexp(logp[:, g], dim=1) for g in groups], dim=1)
        lut = torch.tensor(B.group_of_channel(groups, c), dtype=torch.long, device=target.device)
        target = lut[target]
        ann_g = torch.stack([annotated[:, g].any(dim=1) for g in groups], dim=1)
    else:
        logq, ann_g = logp, annotated
    if balance:
        nll = -torch.gather(logq, 1, target[:, None])[:, 0]
        cnt = torch.zeros(n, logq.shape[1], dtype=nll.dtype, device=nll.device).scatter_add_(
            1, target.view(n, -1), torch.ones_like(nll).view(n, -1))
        tot = torch.zeros_like(cnt).scatter_add_(1, target.view(n, -1), nll.view(n, -1))
        w = torch.where(cnt > 0, cnt.clamp(min=1) ** -float(balance), torch.zeros_like(cnt))
        ce = ((w * tot).sum(1) / (w * cnt).sum(1)).mean()
    else:
        ce = F.nll_loss(logq, target)
    q = logq.exp()
    onehot = F.one_hot(target, logq.shape[1]).permute(0, 4, 1, 2, 3).to(q.dtype)
    dims = (2, 3, 4)
    inter = (q * onehot).sum(dims)
    denom = q.sum(dims) + onehot.sum(dims)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    valid = ann_g & (onehot.sum(dims) > 0)  # annotated classes present in the sample
    valid[:, 0] = False
    # mean over the valid (sample, class) pairs, 0 where there is none; no host round trip
    # (``bool(valid.any())`` would synchronise a GPU step)
    vf = valid.to(dice.dtype)
    dice_loss = ((1.0 - dice) * vf).sum() / vf.sum().clamp(min=1.0)
    return ce + dice_loss


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, *,
                 fg_weight: float = 0.0, normalize: bool = True) -> torch.Tensor:
    """L2 loss of S&H heat maps over the annotated organs only.

    Parameters
    ----------
    pred, target : Tensor (N, C, D, H, W)
        Channel 0 is reserved and ignored.
    annotated : Tensor (N, C) of bool
    fg_weight : float
        Voxel weight ``1 + fg_weight * target`` (0: unweighted).
    normalize : bool
        Divide each channel's sum of squared errors by the sum of its
        squared target (the loss of an all-zero prediction is then 1
        whatever the patch size); otherwise the mean squared error. A
        target that is zero in the patch (organ outside it) is normalised
        by the Gaussian's nominal mass instead.

    Returns
    -------
    Tensor
        Scalar, mean over the annotated (sample, organ) pairs.
    """
    valid = annotated.clone().bool()
    valid[:, 0] = False
    se = (pred - target) ** 2
    if fg_weight:
        se = se * (1.0 + fg_weight * target)
    if normalize:
        mass = (target ** 2).sum(dim=(2, 3, 4))
        nominal = mass[valid & (mass > 0)]
        floor = (nominal.mean().detach() if nominal.numel()
                 else torch.tensor(1.0, device=pred.device))
        per = se.sum(dim=(2, 3, 4)) / torch.where(mass > 0, mass, floor)
    else:
        per = se.mean(dim=(2, 3, 4))
    return per[valid].mean() if bool(valid.any()) else pred.sum() * 0.0
