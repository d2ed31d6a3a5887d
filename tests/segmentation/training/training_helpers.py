"""Tiny phantom samples and configurations shared by the training tests."""

from soars_dose.segmentation.training import TrainConfig

SMALL = dict(shape=(24, 32, 32), spacing=(8.0, 6.0, 6.0))


def small_config(**kw):
    base = dict(widths=(4, 8, 8, 8, 8), patch_size=(24, 32, 32), search_patch_size=(24, 32, 32),
                batch_size=1, epochs=2, ops=("p3d_3",) * 9, lr=0.01, iterations_per_epoch=None,
                momentum=0.9)
    base.update(kw)
    return TrainConfig.tiny(kw.pop("branch", "anchor"), **base)
