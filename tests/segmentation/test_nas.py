"""Searchable UNet: shapes, architecture gradients, derive / build_fixed, plain 3D baseline."""

import json

import pytest

torch = pytest.importorskip("torch")

from soars_dose.errors import InputError  # noqa: E402
from soars_dose.segmentation import nas  # noqa: E402

SHAPE = (1, 1, 16, 32, 32)

EXPECTED_KERNELS = {
    "2d_3": [(1, 3, 3)],
    "2d_5": [(1, 5, 5)],
    "3d_3": [(3, 3, 3)],
    "3d_5": [(5, 5, 5)],
    "p3d_3": [(1, 3, 3), (3, 1, 1)],
    "p3d_5": [(1, 5, 5), (5, 1, 1)],
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def block_kernels(block):
    """Kernel sizes of the two main convolutions of a block (skip projection excluded)."""
    out = []
    for conv in (block.conv1, block.conv2):
        out.append([tuple(m.kernel_size) for m in conv.modules() if isinstance(m, torch.nn.Conv3d)])
    return out


@pytest.mark.parametrize("up", ["trilinear", "transposed"])
def test_forward_shapes(up):
    net = nas.SearchableUNet(1, 3, base_width=4, up=up)
    assert net.widths == [4, 8, 16, 32, 64]
    y = net(torch.randn(SHAPE))
    assert y.shape == (1, 3, 16, 32, 32)
    # sizes that are not multiples of 16 still work
    assert net(torch.randn(1, 1, 5, 12, 20)).shape == (1, 3, 5, 12, 20)


def test_parameter_groups_and_alpha_gradients():
    net = nas.SearchableUNet(1, 2, base_width=4)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert len(arch) == 9 and all(a.shape == (6,) for a in arch)
    ids_a, ids_w = {id(p) for p in arch}, {id(p) for p in weights}
    assert not ids_a & ids_w
    assert ids_a | ids_w == {id(p) for p in net.parameters()}
    target = torch.randint(0, 2, (1, 16, 32, 32))
    loss = torch.nn.functional.cross_entropy(net(torch.randn(SHAPE)), target)
    loss.backward()
    for name, a in zip(nas.BLOCK_NAMES, arch):
        assert a.grad is not None and torch.count_nonzero(a.grad) > 0, name
    assert any(p.grad is not None and torch.count_nonzero(p.grad) for p in weights)


def test_derive_json_round_trip_and_fixed_ops():
    net = nas.SearchableUNet(1, 4, base_width=4)
    for blk, op in zip(net.mixed_blocks(), ["2d_3", "2d_5", "3d_3", "3d_5", "p3d_3",
                                            "p3d_5", "p3d_3", "3d_5", "2d_3"]):
        with torch.no_grad():
            blk.alpha.zero_()
            blk.alpha[nas.OP_NAMES.index(op)] = 1.0
    arch = net.derive()
    text = json.dumps(arch)
    arch2 = json.loads(text)
    assert arch2 == arch
    assert arch2["ops"] == ["2d_3", "2d_5", "3d_3", "3d_5", "p3d_3", "p3d_5", "p3d_3", "3d_5", "2d_3"]
    fixed = nas.build_fixed(arch2)
    assert not any(isinstance(m, (nas.MixedBlock, nas.MixedConv)) for m in fixed.modules())
    assert not any("alpha" in n for n, _ in fixed.named_parameters())
    for (name, blk), op in zip(fixed.blocks(), arch2["ops"]):
        assert isinstance(blk, nas.FixedBlock) and blk.op_name == op, name
        assert block_kernels(blk) == [EXPECTED_KERNELS[op]] * 2, name
    assert fixed.architecture() == arch2
    assert fixed(torch.randn(SHAPE)).shape == (1, 4, 16, 32, 32)
    assert sum(p.numel() for p in fixed.parameters()) < sum(p.numel() for p in net.parameters())


def test_changing_alpha_changes_the_choice():
    net = nas.SearchableUNet(1, 2, base_width=4)
    blk = net.mixed_blocks()[3]
    before = net.derive()["ops"][3]
    other = next(o for o in nas.OP_NAMES if o != before)
    with torch.no_grad():
        blk.alpha[nas.OP_NAMES.index(other)] += 5.0
    after = net.derive()["ops"]
    assert after[3] == other != before
    w = net.op_weights()["enc3"]
    assert max(w, key=w.get) == other and abs(sum(w.values()) - 1) < 1e-6


def test_plain_3d_and_errors():
    net = nas.SearchableUNet(1, 3, base_width=4, up="transposed")
    plain = nas.plain_3d(net)
    assert plain.architecture()["ops"] == ["3d_3"] * 9
    assert plain.architecture()["widths"] == net.widths and plain.up_mode == "transposed"
    for _, blk in plain.blocks():
        assert block_kernels(blk) == [[(3, 3, 3)]] * 2
    assert nas.plain_3d(net.derive()).architecture() == plain.architecture()
    with pytest.raises(InputError, match="derive"):
        nas.build_fixed(net.architecture())
    searchable = nas.build_network(net.architecture())
    assert isinstance(searchable, nas.SearchableUNet) and len(searchable.arch_parameters()) == 9
    bad = net.derive()
    bad["ops"][0] = "4d_7"
    with pytest.raises(InputError, match="4d_7"):
        nas.build_fixed(bad)
    with pytest.raises(InputError, match="too small"):
        net(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(InputError, match="expected input"):
        net(torch.randn(1, 2, 8, 8, 8))
