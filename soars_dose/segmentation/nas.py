"""A UNet whose per-block convolution type is found by differentiable architecture search.

SOARS (Guo, Ge, Ye et al.) lets every UNet block choose between 2D, 3D and
pseudo-3D (P3D) convolutions of size 3 or 5. During the search each block
computes a softmax-weighted mixture of all candidate operations (DARTS); the
mixture weights come from learnable logits ``alpha`` (one vector per block).
After the search, :meth:`SearchableUNet.derive` keeps the most-weighted
operation of each block and :func:`build_fixed` rebuilds a plain network
that contains only the chosen operations.

Tensor layout
-------------
``N, C, D, H, W`` with ``D`` the slice axis (array axis ``k`` of a
:class:`~soars_dose.grid.Grid`), ``H`` rows (``j``), ``W`` columns (``i``).
A kernel written ``a x b x c`` in the paper is ``(in-plane, in-plane,
through-slice)``, i.e. PyTorch ``kernel_size=(c, a, b)``: the 2D 3x3x1
kernel is ``(1, 3, 3)``.

Candidate operations (:data:`OPS`)
----------------------------------
===========  ============================================  ===================
name         convolution(s)                                kernel_size (D,H,W)
===========  ============================================  ===================
``2d_3``     2D 3x3x1                                      (1, 3, 3)
``2d_5``     2D 5x5x1                                      (1, 5, 5)
``3d_3``     3D 3x3x3                                      (3, 3, 3)
``3d_5``     3D 5x5x5                                      (5, 5, 5)
``p3d_3``    P3D: 3x3x1 then 1x1x3                         (1, 3, 3), (3, 1, 1)
``p3d_5``    P3D: 5x5x1 then 1x1x5                         (1, 5, 5), (5, 1, 1)
===========  ============================================  ===================

All use "same" zero padding and stride 1, so they preserve the spatial size.

Network
-------
Five encoder blocks of widths ``base * (1, 2, 4, 8, 16)`` (capped at
``max_width``) separated by 2x2x2 max-pooling, four decoder blocks that
up-sample (trilinear, or a 2x2x2 transposed convolution) and concatenate the
skip connection of the same level, and a 1x1x1 convolution to
``out_channels`` logits. A block is::

    x ─► conv(op) ─► InstanceNorm ─► LeakyReLU ─► conv(op) ─► InstanceNorm ─► + ─► LeakyReLU
    └──────────────── identity, or 1x1x1 conv when channels change ───────────┘

Any input size works (pooling uses ``ceil_mode``; up-sampled maps are
cropped to the skip's size) as long as the deepest level (1/16 of the input,
rounded up) holds more than one voxel; multiples of 16 avoid padding effects.

The architecture description (:meth:`UNet.architecture`) is a small JSON-able
dict::

    {"format": "soars-unet", "version": 1, "in_channels": 1, "out_channels": 10,
     "widths": [32, 64, 128, 256, 512], "up": "trilinear", "negative_slope": 0.01,
     "blocks": ["enc0", ..., "enc4", "dec3", ..., "dec0"],
     "ops": ["3d_3", "p3d_5", ...]}          # "mixed" for a searchable block
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = [
    "ARCH_FORMAT",
    "ARCH_VERSION",
    "OPS",
    "FixedBlock",
    "MixedBlock",
    "MixedConv",
    "SearchableUNet",
    "UNet",
    "build_fixed",
    "build_network",
    "plain_3d",
]

ARCH_FORMAT = "soars-unet"
ARCH_VERSION = 1
#: Name of a searchable (mixture) block in an architecture description.
MIXED = "mixed"

#: Candidate operations: name -> kernel sizes (D, H, W) of the convolutions applied in turn.
OPS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "2d_3": ((1, 3, 3),),
    "2d_5": ((1, 5, 5),),
    "3d_3": ((3, 3, 3),),
    "3d_5": ((5, 5, 5),),
    "p3d_3": ((1, 3, 3), (3, 1, 1)),
    "p3d_5": ((1, 5, 5), (5, 1, 1)),
}
OP_NAMES: tuple[str, ...] = tuple(OPS)

N_ENCODER = 5
N_DECODER = 4
BLOCK_NAMES: tuple[str, ...] = tuple(
    [f"enc{i}" for i in range(N_ENCODER)] + [f"dec{i}" for i in reversed(range(N_DECODER))]
)


# --------------------------------------------------------------------------- operations
class ConvOp(nn.Sequential):
    """One candidate operation: its convolution(s) in sequence, no bias, "same" padding.

    Attributes
    ----------
    op_name : str
        Key of :data:`OPS`.
    """

    def __init__(self, op_name: str, in_channels: int, out_channels: int) -> None:
        if op_name not in OPS:
            raise InputError(f"unknown operation {op_name!r}; choose one of {', '.join(OPS)}")
        convs = []
        c_in = in_channels
        for ks in OPS[op_name]:
            convs.append(nn.Conv3d(c_in, out_channels, ks, padding=tuple(k // 2 for k in ks),
                                   bias=False))
            c_in = out_channels
        super().__init__(*convs)
        self.op_name = op_name


class MixedConv(nn.Module):
    """Softmax-weighted sum of all candidate operations (weights passed at call time)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ConvOp(n, in_channels, out_channels) for n in OP_NAMES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class _BlockBase(nn.Module):
    """Norms, activation and residual path shared by fixed and mixed blocks."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float) -> None:
        super().__init__()
        self.norm1 = nn.InstanceNorm3d(out_channels, affine=True)
        self.norm2 = nn.InstanceNorm3d(out_channels, affine=True)
        self.act = nn.LeakyReLU(negative_slope, inplace=False)
        self.skip: nn.Module = (nn.Identity() if in_channels == out_channels
                                else nn.Conv3d(in_channels, out_channels, 1, bias=False))

    def _run(self, x: torch.Tensor, conv1, conv2) -> torch.Tensor:
        y = self.act(self.norm1(conv1(x)))
        y = self.norm2(conv2(y))
        return self.act(y + self.skip(x))


class FixedBlock(_BlockBase):
    """A residual block using one operation for both of its convolutions."""

    def __init__(self, op_name: str, in_channels: int, out_channels: int,
                 negative_slope: float = 0.01) -> None:
        super().__init__(in_channels, out_channels, negative_slope)
        self.op_name = op_name
        self.conv1 = ConvOp(op_name, in_channels, out_channels)
        self.conv2 = ConvOp(op_name, out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.conv1, self.conv2)


class MixedBlock(_BlockBase):
    """A residual block whose two convolutions are mixtures sharing one ``alpha`` vector.

    Attributes
    ----------
    alpha : nn.Parameter, shape (len(OPS),)
        Architecture logits; the mixture weights are ``softmax(alpha)``.
    """

    op_name = MIXED

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.01) -> None:
        super().__init__(in_channels, out_channels, negative_slope)
        self.conv1 = MixedConv(in_channels, out_channels)
        self.conv2 = MixedConv(out_channels, out_channels)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(OP_NAMES)))

    def weights(self) -> torch.Tensor:
        """Mixture weights ``softmax(alpha)``, in the order of :data:`OP_NAMES`."""
        return torch.softmax(self.alpha, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights()
        return self._run(x, lambda t: self.conv1(t, w), lambda t: self.conv2(t, w))

    def chosen(self) -> str:
        """Name of the operation with the largest weight."""
        return OP_NAMES[int(torch.argmax(self.alpha.detach()))]


# --------------------------------------------------------------------------- network
def _fit(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop or zero-pad the spatial dims of ``x`` to ``shape`` (at the high end)."""
    d = [s - t for s, t in zip(shape, x.shape[2:])]
    if all(v == 0 for v in d):
        return x
    x = x[..., : shape[0], : shape[1], : shape[2]]
    pad = []
    for v in reversed(d):
        pad += [0, max(v, 0)]
    return F.pad(x, pad)


def _widths(base_width: int, max_width: int | None) -> list[int]:
    w = [base_width * 2 ** i for i in range(N_ENCODER)]
    return [min(v, max_width) for v in w] if max_width else w


class UNet(nn.Module):
    """UNet with one operation per block; ``"mixed"`` blocks make it searchable.

    Parameters
    ----------
    in_channels, out_channels : int
        Input image channels; output classes (logits, background included).
    widths : sequence of 5 int
        Feature channels of encoder levels 0-4 (decoder level ``l`` uses
        ``widths[l]``).
    ops : sequence of 9 str
        Operation of each block in :data:`BLOCK_NAMES` order (``enc0`` ...
        ``enc4``, ``dec3`` ... ``dec0``): a key of :data:`OPS` or ``"mixed"``.
    up : {'trilinear', 'transposed'}
        Up-sampling in the decoder.
    negative_slope : float
        Leaky ReLU slope.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int],
                 ops: Sequence[str], up: str = "trilinear", negative_slope: float = 0.01) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        ops = list(ops)
        if len(widths) != N_ENCODER or min(widths) < 1:
            raise InputError(f"widths must be {N_ENCODER} positive channel counts, got {widths}")
        if len(ops) != len(BLOCK_NAMES):
            raise InputError(f"ops must name {len(BLOCK_NAMES)} blocks ({', '.join(BLOCK_NAMES)}), "
                             f"got {len(ops)}")
        bad = [o for o in ops if o not in OPS and o != MIXED]
        if bad:
            raise InputError(f"unknown operation(s) {bad}; choose from {', '.join(OPS)} or {MIXED!r}")
        if up not in ("trilinear", "transposed"):
            raise InputError(f"up must be 'trilinear' or 'transposed', got {up!r}")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise InputError("in_channels and out_channels must be positive")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.widths, self.ops, self.up_mode = widths, ops, up
        self.negative_slope = float(negative_slope)

        def block(op: str, cin: int, cout: int) -> nn.Module:
            if op == MIXED:
                return MixedBlock(cin, cout, negative_slope)
            return FixedBlock(op, cin, cout, negative_slope)

        self.encoder = nn.ModuleList()
        cin = self.in_channels
        for lvl in range(N_ENCODER):
            self.encoder.append(block(ops[lvl], cin, widths[lvl]))
            cin = widths[lvl]
        self.pool = nn.MaxPool3d(2, ceil_mode=True)
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()  # order dec3, dec2, dec1, dec0
        for n, lvl in enumerate(reversed(range(N_DECODER))):
            deeper = widths[lvl + 1]
            if up == "transposed":
                self.upsamplers.append(nn.ConvTranspose3d(deeper, widths[lvl], 2, stride=2))
                cin = 2 * widths[lvl]
            else:
                self.upsamplers.append(nn.Identity())
                cin = deeper + widths[lvl]
            self.decoder.append(block(ops[N_ENCODER + n], cin, widths[lvl]))
        self.head = nn.Conv3d(widths[0], self.out_channels, 1)

    # ---- structure
    def blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """``(name, block)`` pairs in :data:`BLOCK_NAMES` order."""
        yield from zip(BLOCK_NAMES, list(self.encoder) + list(self.decoder))

    def architecture(self) -> dict[str, Any]:
        """JSON-able description from which :func:`build_network` rebuilds this network."""
        return {
            "format": ARCH_FORMAT,
            "version": ARCH_VERSION,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "widths": list(self.widths),
            "up": self.up_mode,
            "negative_slope": self.negative_slope,
            "blocks": list(BLOCK_NAMES),
            "ops": [b.op_name for _, b in self.blocks()],
        }

    # ---- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, out_channels, D, H, W)`` for an input ``(N, in_channels, D, H, W)``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise InputError(f"expected input (N, {self.in_channels}, D, H, W), "
                             f"got {tuple(x.shape)}")
        bottom = [-(-int(n) // 2 ** (N_ENCODER - 1)) for n in x.shape[2:]]
        if bottom[0] * bottom[1] * bottom[2] < 2:
            raise InputError(f"input {tuple(x.shape[2:])} (D, H, W) is too small: after "
                             f"{N_ENCODER - 1} poolings the deepest level must hold more than one "
                             "voxel for instance norm; use at least 17 voxels along one axis")
        skips = []
        for lvl, blk in enumerate(self.encoder):
            if lvl:
                x = self.pool(x)
            x = blk(x)
            skips.append(x)
        for n, lvl in enumerate(reversed(range(N_DECODER))):
            skip = skips[lvl]
            if self.up_mode == "transposed":
                x = _fit(self.upsamplers[n](x), skip.shape[2:])
            else:
                x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = self.decoder[n](torch.cat([x, skip], dim=1))
        return self.head(x)


class SearchableUNet(UNet):
    """The search network: every block is a :class:`MixedBlock`.

    Parameters
    ----------
    in_channels : int
        Input image channels (1 for CT).
    out_channels : int
        Classes, background included (``1 + number of OARs``).
    base_width : int
        Channels of the first level (32 by default; 4-8 for tests).
    max_width : int, optional
        Cap on the channels of deeper levels.
    up : {'trilinear', 'transposed'}
    negative_slope : float
    widths : sequence of 5 int, optional
        Explicit level widths (overrides ``base_width``/``max_width``).
    ops : sequence of 9 str, optional
        Per-block operations; default all ``"mixed"``. Blocks given a fixed
        operation take no part in the search.

    Notes
    -----
    Train the weights (:meth:`weight_parameters`) and the architecture
    logits (:meth:`arch_parameters`) with separate optimisers, typically on
    separate data splits (first-order DARTS).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, base_width: int = 32,
                 max_width: int | None = 320, up: str = "trilinear",
                 negative_slope: float = 0.01, widths: Sequence[int] | None = None,
                 ops: Sequence[str] | None = None) -> None:
        super().__init__(in_channels, out_channels,
                         _widths(base_width, max_width) if widths is None else widths,
                         [MIXED] * len(BLOCK_NAMES) if ops is None else ops, up, negative_slope)

    def mixed_blocks(self) -> list[MixedBlock]:
        """The searchable blocks, in :data:`BLOCK_NAMES` order."""
        return [b for _, b in self.blocks() if isinstance(b, MixedBlock)]

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits ``alpha`` (one vector of ``len(OPS)`` per block)."""
        return [b.alpha for b in self.mixed_blocks()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture logits."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> dict[str, dict[str, float]]:
        """Current mixture weights: ``{block: {op: weight}}`` (for logging)."""
        return {name: dict(zip(OP_NAMES, b.weights().detach().cpu().tolist()))
                for name, b in self.blocks() if isinstance(b, MixedBlock)}

    def derive(self) -> dict[str, Any]:
        """Architecture with the most-weighted operation of every block (JSON-able).

        The result is the input of :func:`build_fixed`.
        """
        arch = self.architecture()
        arch["ops"] = [b.chosen() if isinstance(b, MixedBlock) else b.op_name
                       for _, b in self.blocks()]
        return arch


# --------------------------------------------------------------------------- building
_REQUIRED = ("in_channels", "out_channels", "widths", "ops")


def _check_arch(arch: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(arch, dict):
        raise InputError(f"an architecture must be a dict, got {type(arch).__name__}")
    if arch.get("format", ARCH_FORMAT) != ARCH_FORMAT:
        raise InputError(f"not a {ARCH_FORMAT} architecture (format {arch.get('format')!r})")
    if int(arch.get("version", ARCH_VERSION)) > ARCH_VERSION:
        raise InputError(f"architecture version {arch['version']} is newer than this "
                         f"soars-dose understands ({ARCH_VERSION}); upgrade soars-dose")
    missing = [k for k in _REQUIRED if k not in arch]
    if missing:
        raise InputError(f"architecture lacks {', '.join(missing)}")
    blocks = arch.get("blocks")
    if blocks is not None and list(blocks) != list(BLOCK_NAMES):
        raise InputError(f"architecture blocks {blocks} differ from {list(BLOCK_NAMES)}")
    return arch


def build_network(arch: dict[str, Any]) -> UNet:
    """Build the network an architecture describes (searchable or fixed), freshly initialised."""
    arch = _check_arch(arch)
    ops = list(arch["ops"])
    kw = dict(up=arch.get("up", "trilinear"), negative_slope=arch.get("negative_slope", 0.01))
    if MIXED in ops:
        return SearchableUNet(arch["in_channels"], arch["out_channels"],
                              widths=arch["widths"], ops=ops, **kw)
    return UNet(arch["in_channels"], arch["out_channels"], arch["widths"], ops, **kw)


def build_fixed(arch: dict[str, Any]) -> UNet:
    """Build the fixed network of a derived architecture (:meth:`SearchableUNet.derive`).

    Raises
    ------
    InputError
        If a block is still ``"mixed"`` or names an unknown operation.
    """
    arch = _check_arch(arch)
    if MIXED in arch["ops"]:
        raise InputError("the architecture still has searchable blocks; derive() it first")
    return build_network(arch)


def plain_3d(arch_like: "dict[str, Any] | UNet") -> UNet:
    """The ablation baseline: same channels and widths, every block 3D 3x3x3.

    Parameters
    ----------
    arch_like : dict or UNet
        An architecture description or a network to take the shape from.
    """
    arch = copy.deepcopy(arch_like.architecture() if isinstance(arch_like, nn.Module)
                         else _check_arch(arch_like))
    arch["ops"] = ["3d_3"] * len(BLOCK_NAMES)
    return build_fixed(arch)
