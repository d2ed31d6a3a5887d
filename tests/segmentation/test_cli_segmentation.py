"""`soars-dose segment` and `soars-dose train`: errors and a tiny end-to-end run."""

import json

import pytest

from soars_dose.cli.main import main

pytest.importorskip("torch")

from soars_dose.synthetic import oars42 as phantom42  # noqa: E402


def test_segment_without_a_model_fails_clearly(tmp_path, capsys, monkeypatch):
    from soars_dose.segmentation import bundle

    monkeypatch.delenv("SOARS_DOSE_MODEL", raising=False)
    monkeypatch.setattr(bundle, "_DEFAULT_MODEL", tmp_path / "absent.pt")
    rc = main(["segment", str(tmp_path), "--out", str(tmp_path / "rs.dcm"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no trained SOARS segmentation model is installed" in err
    assert "soars-dose train" in err and "--model" in err
    assert not (tmp_path / "rs.dcm").exists()


def test_segment_bad_organ_and_bad_model(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_text("not a model")
    rc = main(["segment", str(tmp_path), "--out", str(tmp_path / "rs.dcm"), "--model", str(bad),
               "--organs", "Parotid"])
    assert rc == 2 and "not one of the 42 SOARS OARs" in capsys.readouterr().err
    rc = main(["segment", str(tmp_path), "--out", str(tmp_path / "rs.dcm"), "--model", str(bad)])
    assert rc == 2 and "not a soars-dose model file" in capsys.readouterr().err


def test_train_needs_the_anchor_model_for_mid_and_detection(tmp_path, capsys):
    for branch in ("mid", "sh-detect"):
        rc = main(["train", str(tmp_path), "--branch", branch, "--out", str(tmp_path / "run")])
        assert rc == 2 and "--anchor-model" in capsys.readouterr().err
    rc = main(["train", str(tmp_path), "--branch", "anchor", "--out", str(tmp_path / "run")])
    assert rc == 2 and "dataset.json" in capsys.readouterr().err


def test_train_tiny_run_then_resume_and_refusals(tmp_path, capsys):
    ds = phantom42.write_dataset(tmp_path / "ds", 3, seed=4, shape=(24, 32, 32),
                                 spacing=(8.0, 6.0, 6.0))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"widths": [4, 8, 8, 8, 8], "patch_size": [24, 32, 32],
                               "batch_size": 1, "ops": ["2d_3"] * 9}))
    args = ["train", str(ds), "--branch", "anchor", "--out", str(tmp_path / "run"), "--preset",
            "phantom", "--config", str(cfg), "--epochs", "2", "--quiet"]
    assert main(args) == 0
    run = tmp_path / "run"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1]
    assert set(log[-1]["val_dice"]) == set(phantom42.catalogue.names("anchor"))
    assert (run / "model.soars.pt").is_file() and (run / "checkpoint.pt").is_file()
    assert main(args) == 2 and "--resume" in capsys.readouterr().err  # no silent overwrite
    assert main(args + ["--resume"]) == 0  # already finished: nothing more to do
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    changed = args[:-3] + ["--epochs", "3", "--quiet", "--resume"]
    assert main(changed) == 2 and "other settings" in capsys.readouterr().err
