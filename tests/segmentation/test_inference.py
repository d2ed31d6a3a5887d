"""Inference: model bundles, the stratified pipeline's plumbing."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose import oars as catalogue  # noqa: E402
from soars_dose.errors import InputError, OutputExistsError  # noqa: E402
from soars_dose.segmentation import bundle, inference  # noqa: E402
from soars_dose.segmentation.modelfile import (  # noqa: E402
    NotAModelFileError,
    UnsafeModelFileError,
    load_model,
)
from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402
from soars_dose.synthetic import oars42 as phantom42  # noqa: E402

from .seg_helpers import random_branch, random_models  # noqa: E402


def test_bundle_round_trip_and_checks(tmp_path):
    files = random_models(tmp_path / "m")
    models = bundle.load_models(files)
    assert list(models.branches) == ["anchor", "mid_level", "sh_detect", "sh_seg"]
    assert models.available_oars() == catalogue.names()
    path = bundle.save_bundle(tmp_path / "soars.pt", files)
    again = bundle.load_models(path)
    for role, b in models.branches.items():
        b2 = again[role]
        assert b2.oar_names == b.oar_names and b2.patch_size == (48, 64, 64)
        for k, v in b.net.state_dict().items():
            assert torch.equal(v, b2.net.state_dict()[k])
    # a bundle is a torch zip of plain types: loadable weights-only
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "soars-dose-bundle" and set(raw["branches"]) == set(models.branches)
    assert bundle.load_models(tmp_path / "m").available_oars() == catalogue.names()  # a folder
    assert bundle.load_models(files[:1]).available_oars() == catalogue.names("anchor")
    with pytest.raises(OutputExistsError):
        bundle.save_bundle(path, files)
    with pytest.raises(NotAModelFileError, match="second anchor"):
        bundle.load_models([files[0], path])
    other = random_branch(tmp_path / "other.pt", "mid_level",
                          preprocessing=Preprocessing(target_spacing_mm=(3.0, 1.0, 1.0)))
    with pytest.raises(NotAModelFileError, match="different preprocessing"):
        bundle.load_models([files[0], other])


def test_int8_quantisation_error_is_within_half_a_step():
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.normal(size=(6, 3, 3, 3, 3)).astype(np.float32))
    w[2] = 0.0  # an all-zero channel keeps a finite scale
    w[4] *= 1e-3  # a small channel gets its own fine scale
    q, scale = bundle.quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (6,)
    amax = w.abs().reshape(6, -1).amax(1)
    torch.testing.assert_close(scale[[0, 1, 3, 4, 5]], amax[[0, 1, 3, 4, 5]] / 127)
    back = q.float() * scale.view(-1, 1, 1, 1, 1)
    err = (back - w).abs().reshape(6, -1).amax(1)
    assert bool((err <= scale / 2 + 1e-7).all())
    assert float(back[2].abs().max()) == 0.0
    assert int(q.abs().max()) == 127  # the largest weight of a channel uses the full range


def test_int8_bundle_is_smaller_and_segments_like_the_float_one(tmp_path):
    files = random_models(tmp_path / "m")[:2]  # anchor + mid-level
    f32 = bundle.save_bundle(tmp_path / "f32.pt", files)
    i8 = bundle.save_bundle(tmp_path / "i8.pt", files, weights="int8")
    raw = torch.load(i8, weights_only=True)

    def data_bytes(branches):  # tensor payload (the zip's per-entry overhead dominates tiny nets)
        return sum(t.numel() * t.element_size() for p in branches.values()
                   for part in (p["state_dict"], p.get("quantized", {})) for t in part.values())
    ref = data_bytes(torch.load(f32, weights_only=True)["branches"])
    assert data_bytes(raw["branches"]) < 0.3 * ref
    assert raw["format_version"] == 2 and raw["branches"]["anchor"]["quantized"]
    a, b = bundle.load_models(f32), bundle.load_models(i8)
    for role in ("anchor", "mid_level"):
        for k, v in a[role].net.state_dict().items():
            w = b[role].net.state_dict()[k]
            assert w.dtype == v.dtype
            if v.is_floating_point() and v.dim() >= 2:
                step = v.abs().reshape(v.shape[0], -1).amax(1) / 127
                assert bool(((w - v).abs().reshape(v.shape[0], -1).amax(1)
                             <= step / 2 + 1e-6).all()), k
    hu = np.random.default_rng(0).normal(0, 300, (20, 40, 40)).astype(np.float32)
    x = torch.from_numpy(hu / 1000.0)[None, None]
    with torch.no_grad():
        pa = torch.softmax(a["anchor"].net(x), 1)
        pb = torch.softmax(b["anchor"].net(x), 1)
    assert float((pa - pb).abs().max()) < 0.05
    with pytest.raises(InputError, match="weights must be one of"):
        bundle.save_bundle(tmp_path / "x.pt", files, weights="int4")


def test_int8_weights_without_scales_are_refused(tmp_path):
    files = random_models(tmp_path / "m")[:1]
    i8 = bundle.save_bundle(tmp_path / "i8.pt", files, weights="int8")
    raw = torch.load(i8, weights_only=True)
    del raw["branches"]["anchor"]["quantized"]
    torch.save(raw, tmp_path / "broken.pt")
    with pytest.raises(NotAModelFileError, match="int8 weights without scales"):
        bundle.load_models(tmp_path / "broken.pt")
    raw = torch.load(i8, weights_only=True)
    name = next(iter(raw["branches"]["anchor"]["quantized"]))
    raw["branches"]["anchor"]["quantized"][name] = torch.ones(1)
    torch.save(raw, tmp_path / "broken2.pt")
    with pytest.raises(NotAModelFileError, match="does not match its scales"):
        bundle.load_models(tmp_path / "broken2.pt")
    plain = tmp_path / "plain.pt"
    mf = load_model(files[0])
    from soars_dose.segmentation.modelfile import save_model
    save_model(plain, architecture=mf.architecture, state_dict=mf.state_dict,
               oar_names=mf.oar_names, provenance={"note": "no branch"})
    with pytest.raises(NotAModelFileError, match="not a SOARS branch"):
        bundle.load_models(plain)


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bundle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "soars-dose-bundle", "format_version": 1,
                "branches": {"anchor": Evil(marker)}}, path)
    with pytest.raises(UnsafeModelFileError):
        bundle.load_models(path)
    assert not marker.exists()


def test_no_model_installed_says_how_to_train(monkeypatch, tmp_path):
    monkeypatch.delenv("SOARS_DOSE_MODEL", raising=False)
    monkeypatch.setattr(bundle, "_DEFAULT_MODEL", tmp_path / "absent.pt")
    with pytest.raises(bundle.NoModelError, match="no trained SOARS segmentation model") as e:
        bundle.default_model_path()
    assert "soars-dose train" in str(e.value)
    monkeypatch.setenv("SOARS_DOSE_MODEL", "/nonexistent/model.pt")
    with pytest.raises(bundle.NoModelError, match="does not exist"):
        bundle.default_model_path()


def test_segment_volume_plumbing_with_random_weights(tmp_path):
    models = bundle.load_models(random_models(tmp_path / "m"))
    case = phantom42.make_case(7, partial=False)
    organs = ["Brainstem", "Parotid_L", "Lens_L", "Cochlea_R"]
    res = inference.segment_volume(case.hu, case.grid, models, organs, progress=False,
                                   detect_threshold=-np.inf)
    assert list(res.masks) == organs
    for n in organs:
        m = res.masks[n]
        assert m.shape == case.grid.shape and m.dtype == bool
    assert set(res.centres_mm) == {"Lens_L", "Cochlea_R"} and not res.not_found
    assert {"anchor", "mid_level", "sh_detect", "sh_seg", "total"} <= set(res.timings_s)
    # nothing is found above an impossible threshold: empty ROIs, reported
    with pytest.warns(Warning, match="not found"):
        res = inference.segment_volume(case.hu, case.grid, models, ["Lens_R"], progress=False,
                                       detect_threshold=np.inf)
    assert res.not_found == ["Lens_R"] and not res.masks["Lens_R"].any()
    # only what is asked runs
    res = inference.segment_volume(case.hu, case.grid, models, ["Eye_L"], progress=False)
    assert list(res.masks) == ["Eye_L"] and "mid_level" not in res.timings_s
    with pytest.raises(Exception, match="cannot segment"):
        inference.segment_volume(case.hu, case.grid, bundle.load_models(
            tmp_path / "m" / "anchor.soars.pt"), ["Parotid_L"], progress=False)


def test_keep_largest_components_drops_only_the_smaller_pieces():
    lab = np.zeros((6, 8, 9), np.uint8)
    lab[1:4, 1:4, 1:4] = 1          # 27 voxels: kept
    lab[5, 7, 8] = 1                # isolated voxel of the same OAR: dropped
    lab[0, 6, 0:2] = 2              # label 2, two voxels touching diagonally-adjacent ...
    lab[1, 7, 2] = 2                # ... (26-connectivity): one component, kept whole
    lab[5, 0, 8] = 3                # label 3 not cleaned: kept
    lab[0, 0, 8] = 3
    out = inference.keep_largest_components(lab.copy(), [1, 2])
    assert (out == 1).sum() == 27 and out[5, 7, 8] == 0
    assert (out == 2).sum() == 3
    assert (out == 3).sum() == 2
