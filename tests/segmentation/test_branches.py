"""Branch helpers: fast instance norm, heat maps and their peaks, VOIs, left/right merging."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose import oars as catalogue  # noqa: E402
from soars_dose.segmentation import branches as B  # noqa: E402
from soars_dose.segmentation import nas  # noqa: E402


def test_fast_norm_is_exact_and_state_compatible():
    torch.manual_seed(0)
    net = nas.SearchableUNet(1, 3, base_width=4)
    x = torch.randn(1, 1, 16, 24, 20)
    ref = net(x)
    keys = set(net.state_dict())
    B.fast_norm(net)
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules())
    assert set(net.state_dict()) == keys
    torch.testing.assert_close(net(x), ref, atol=2e-5, rtol=1e-4)
    fresh = nas.SearchableUNet(1, 3, base_width=4)
    fresh.load_state_dict(net.state_dict())  # loads into the InstanceNorm version
    torch.testing.assert_close(fresh(x), ref, atol=2e-5, rtol=1e-4)


def test_heatmap_and_peak_detection():
    spacing = (4.0, 3.0, 3.0)
    centres = np.array([[10.3, 20.6, 15.2], [np.nan, np.nan, np.nan], [3.0, 40.0, 50.7]])
    h = B.gaussian_heatmaps((24, 48, 56), centres, spacing, sigma_mm=8.0)
    assert h.shape == (3, 24, 48, 56)
    assert float(h[1].abs().max()) == 0.0
    # isotropic in mm: the value 8 mm away along rows equals that 8 mm away along slices
    k, j, i = 10, 20, 15
    c = centres[0]
    expected = np.exp(-0.5 * (((k - c[0]) * 4) ** 2 + ((j - c[1]) * 3) ** 2
                              + ((i - c[2]) * 3) ** 2) / 64.0)
    assert float(h[0, k, j, i]) == pytest.approx(expected, rel=1e-5)
    found, peaks = B.detect_centres(h[[0, 2]])
    assert np.all(np.linalg.norm(found - centres[[0, 2]], axis=1) < 0.02)
    assert np.all(peaks > 0.9)


def test_voi_shapes_and_extract():
    voi, patch = B.voi_shapes("Lens_L", (4.0, 3.0, 3.0))
    # 3 x 10 mm = 30 mm: 8 slices -> 9 (odd), 10 pixels -> 11
    assert voi == (9, 11, 11) and patch == (16, 24, 24)
    voi, patch = B.voi_shapes("OpticNrv_L", (4.0, 3.0, 3.0))
    assert voi == (31, 41, 41) and patch == (32, 48, 48)
    vol = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    out = B.extract(vol, (-1, 2, 4), (3, 4, 4), fill=-7.0)
    assert out.shape == (1, 3, 4, 4)
    assert float(out[0, 0, 0, 0]) == -7.0  # before the first slice
    assert float(out[0, 1, 0, 0]) == float(vol[0, 0, 2, 4])
    assert float(out[0, 1, 3, 3]) == -7.0  # past the last row/column
    start, stop = B.crop_box((10.2, 5.7, 3.0), (16, 24, 24))
    assert tuple(start) == (2, -6, -9) and tuple(stop - start) == (16, 24, 24)


def test_pair_groups_and_merge():
    names = catalogue.names("small_hard")
    groups = B.pair_groups(names)
    assert groups[0] == [0]
    assert len(groups) == 1 + 9  # 14 OARs, 5 pairs
    lens = [names.index("Lens_L") + 1, names.index("Lens_R") + 1]
    assert lens in groups
    assert [names.index("Pineal") + 1] in groups
    assert sorted(c for g in groups for c in g) == list(range(15))
    p = torch.softmax(torch.randn(2, 15, 3, 4, 5), dim=1)
    m = B.merge_pairs(p, groups)
    assert m.shape == (2, 10, 3, 4, 5)
    torch.testing.assert_close(m.sum(1), torch.ones(2, 3, 4, 5))
    g = groups.index(lens)
    torch.testing.assert_close(m[:, g], p[:, lens[0]] + p[:, lens[1]])


def test_roles_and_channels():
    assert B.role_from_cli("mid") == "mid_level" and B.role_from_cli("sh-seg") == "sh_seg"
    assert B.in_channels("anchor") == 1 and B.in_channels("mid_level") == 10
    assert B.in_channels("sh_detect") == 10 and B.in_channels("sh_seg") == 1
    assert len(B.branch_oars("mid_level")) == 19 and len(B.branch_oars("sh_detect")) == 14
    perm = B.input_lr_permutation("mid_level")
    a = catalogue.names("anchor")
    assert perm[0] == 0 and perm[a.index("Eye_L") + 1] == a.index("Eye_R") + 1
