"""TrainConfig in parts: the flat on-disk form of earlier releases still loads and is written."""

import json

import pytest

pytest.importorskip("torch")

from soars_dose.errors import InputError, TrainingError  # noqa: E402
from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402
from soars_dose.segmentation.training import TrainConfig  # noqa: E402
from soars_dose.segmentation.training.run_dir import prepare_run_dir  # noqa: E402

#: ``config.json["config"]`` of a run made before the configuration was split into parts
#: (training/openkbp/run_2026-11-27/searched/anchor), without the later keys shift_hu,
#: shift_probability, init_model and batches_on_device.
OLD_FLAT = {
    "alpha_lr": 0.003, "alpha_weight_decay": 0.001, "anchor_model": None, "augment": True,
    "batch_size": 2, "branch": "anchor", "ce_balance": 1.0, "ce_balance_final": 0.0,
    "detect_threshold": 0.3, "epochs": 19, "final_on_all": True, "flip_probability": 0.5,
    "grad_clip": 12.0, "heatmap_fg_weight": 0.0, "heatmap_sigma_mm": 8.0,
    "holdout_fraction": 0.3333333333333333, "intensity_probability": 0.15,
    "intensity_range": [0.75, 1.25], "iterations_per_epoch": 40, "lr": 0.01, "momentum": 0.99,
    "noise_probability": 0.1, "noise_std": 0.03, "ops": None, "optimizer": "sgd",
    "patch_size": [48, 96, 96], "poly_power": 0.9, "rotation_deg": 10.0,
    "rotation_probability": 0.2, "search": True, "search_epochs": 1, "search_lr": 0.001,
    "search_patch_size": [48, 96, 96], "seed": 0, "sh_min_patch": [16, 24, 24],
    "target_spacing_mm": None, "up": "trilinear", "validate_every": 1000000,
    "validate_search": False, "voi_factor": 3.0, "voi_jitter_vox": 2.0, "warmup_epochs": 1,
    "weight_decay": 3e-05, "widths": [12, 24, 48, 96, 128], "window_hu": [-500.0, 1000.0],
}


def test_an_old_flat_config_loads_into_its_parts():
    c = TrainConfig.from_dict(OLD_FLAT)
    assert c.network.widths == (12, 24, 48, 96, 128) and c.network.ops is None
    assert c.schedule.search and c.schedule.epochs == 19 and c.schedule.patch_size == (48, 96, 96)
    assert c.optimiser.lr == 0.01 and c.optimiser.optimizer == "sgd"
    assert c.augmentation.enabled and c.augmentation.shift_hu == 0.0
    assert c.readout.sh_min_patch == (16, 24, 24) and c.execution.final_on_all
    assert c.preprocessing == Preprocessing(target_spacing_mm=None, window_hu=(-500.0, 1000.0))
    # written back flat: the old keys with the old values, plus the keys added since
    flat = c.to_dict()
    assert {k: flat[k] for k in OLD_FLAT} == OLD_FLAT
    assert set(flat) - set(OLD_FLAT) == {"shift_hu", "shift_probability", "init_model",
                                         "batches_on_device"}
    assert TrainConfig.from_dict(flat) == c


def test_an_old_run_folder_resumes_with_the_same_settings(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": OLD_FLAT, "dataset": "ds"}))
    c = TrainConfig.from_dict(OLD_FLAT)
    with pytest.raises(TrainingError, match="other settings"):  # the keys added since differ
        prepare_run_dir(run, c, "ds", resume=True, overwrite=False)
    full = {**OLD_FLAT, "shift_hu": 0.0, "shift_probability": 0.0, "init_model": None,
            "batches_on_device": True}
    (run / "config.json").write_text(json.dumps({"config": full, "dataset": "ds"}))
    prepare_run_dir(run, TrainConfig.from_dict(full), "ds", resume=True, overwrite=False)


def test_parts_may_be_given_nested_and_changed_by_flat_name():
    c = TrainConfig.from_dict({"branch": "anchor", "network": {"widths": [4, 8, 8, 8, 8]},
                               "augmentation": {"augment": False}, "epochs": 3})
    assert c.network.widths == (4, 8, 8, 8, 8) and not c.augmentation.enabled
    d = c.with_(epochs=5, window_hu=(-200.0, 500.0))
    assert d.schedule.epochs == 5 and d.preprocessing.window_hu == (-200.0, 500.0)
    assert c.schedule.epochs == 3  # the original is unchanged
    # a preprocessing other than spacing and window travels under "preprocessing"
    z = TrainConfig(preprocessing=Preprocessing(target_spacing_mm=None, intensity="zscore"))
    assert z.to_dict()["preprocessing"] == {"intensity": "zscore"}
    assert TrainConfig.from_dict(z.to_dict()) == z
    assert "preprocessing" not in TrainConfig().to_dict()


@pytest.mark.parametrize("bad, match", [
    ({"widths_typo": 1}, "unknown training setting"),
    ({"network": {"lr": 0.1}}, "unknown training setting"),
    ({"widths": [1, 2]}, "5 channel counts"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"holdout_fraction": 1.0}, "holdout_fraction"),
    ({"branch": "mid_level"}, "anchor_model"),
    ({"window_hu": [500, -200]}, "window_hu"),
])
def test_bad_settings_are_refused_by_name(bad, match):
    with pytest.raises(InputError, match=match):
        TrainConfig.from_dict(bad)
