"""Stacked hourglass backbones: the family CornerNet (ECCV 2018) is built on.

Structure, with module attribute names equal to the CornerNet release's parameter names:

- ``pre``: a 7x7 stride-2 conv-BN-ReLU (3 -> stem_dims[0]) and a stride-2 residual block
  (stem_dims[0] -> stem_dims[1] = dims[0]). Output stride 4.
- ``kps[i]``, one :class:`HourglassModule` per stack. A module of depth n at width dims[0]:
  ``up1`` (modules[0] residuals at dims[0]) on the input; ``low1`` (a stride-2 residual
  dims[0] -> dims[1], then modules[0] - 1 residuals); ``low2`` (the module of depth n - 1
  over dims[1:], or modules[1] residuals at dims[1] when n == 1); ``low3`` (modules[0] - 1
  residuals at dims[1], then one residual dims[1] -> dims[0]); the merge
  ``up1 + nearest_upsample_x2(low3)``. The release has no max-pooling: ``low1`` strides.
- ``cnvs[i]``: a 3x3 conv-BN-ReLU dims[0] -> cnv_dim on each stack's output (the stride-4
  features CornerNet's heads read).
- Between stacks: ``inter = inters[i](relu(inters_[i](inter) + cnvs_[i](cnvs[i](...))))``,
  where ``inters_`` / ``cnvs_`` are 1x1 conv-BN and ``inters`` is a residual block.

The multi-scale features are the merge outputs of the last hourglass: level l (stride
4 * 2**l) has dims[l] channels; the bottom of the hourglass (stride 4 * 2**n) is the output
of its innermost residuals. Strides 4, 8, 16 and 32 are returned (those that exist).

Sizes: a frozen :class:`HourglassConfig` (defaults: Hourglass-104), named in
:data:`HOURGLASS_PRESETS` ("tiny", "small", "hg52", "hg104"); ``build_hourglass(name)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HOURGLASS_PRESETS",
    "ConvBNReLU",
    "HourglassBackbone",
    "HourglassConfig",
    "HourglassModule",
    "HourglassOutput",
    "Residual",
    "build_hourglass",
    "count_parameters",
]


@dataclass(frozen=True)
class HourglassConfig:
    """Sizes of a :class:`HourglassBackbone`; the defaults are Hourglass-104 (CornerNet)."""

    n: int = 5  # hourglass depth (release models/CornerNet.py: n = 5)
    nstack: int = 2  # two stacked hourglasses: Hourglass-104 (CornerNet paper section 4.1)
    dims: tuple[int, ...] = (256, 256, 384, 384, 384, 512)  # widths per level (release)
    modules: tuple[int, ...] = (2, 2, 2, 2, 2, 4)  # residual blocks per level (release)
    cnv_dim: int = 256  # width of the per-stack 3x3 convs (release kp cnv_dim)
    stem_dims: tuple[int, int] = (128, 256)  # 7x7 conv to 128, residual to 256 (release kp.pre)

    def kwargs(self) -> dict[str, object]:
        """Keyword arguments of :class:`HourglassBackbone`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The CornerNet release (models/CornerNet.py): two stacks, Hourglass-104.
_HG104 = HourglassConfig()

# Backbone sizes by name.
HOURGLASS_PRESETS: dict[str, HourglassConfig] = {
    # CPU-trainable at 128 px: three levels, one stack.
    "tiny": HourglassConfig(
        n=3, nstack=1, dims=(32, 32, 48, 48), modules=(1, 1, 1, 2), cnv_dim=32, stem_dims=(16, 32)
    ),
    # Two stacks of four levels at a quarter of the release's widths.
    "small": HourglassConfig(
        n=4,
        nstack=2,
        dims=(64, 64, 96, 96, 128),
        modules=(1, 1, 1, 1, 2),
        cnv_dim=64,
        stem_dims=(32, 64),
    ),
    # One stack of the release's hourglass (CenterNet's "Hourglass-52").
    "hg52": replace(_HG104, nstack=1),
    "hg104": _HG104,
}

# Strides of the named feature maps, in output order.
FEATURE_STRIDES = (4, 8, 16, 32)


class ConvBNReLU(nn.Module):
    """k x k convolution ("same" padding), BatchNorm (or a conv bias), ReLU.

    The release's ``convolution``: parameters ``conv.weight`` and ``bn.*``, or ``conv.weight``
    and ``conv.bias`` with ``with_bn=False``. Input (N, in_dim, H, W) -> (N, out_dim, H', W').
    """

    def __init__(
        self, kernel_size: int, in_dim: int, out_dim: int, stride: int = 1, with_bn: bool = True
    ) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_dim, out_dim, kernel_size, stride=stride, padding=pad, bias=not with_bn
        )
        self.bn = nn.BatchNorm2d(out_dim) if with_bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    """Two 3x3 conv-BN (ReLU between) plus a skip; ReLU after the sum.

    The skip is a 1x1 conv-BN when the stride or the width changes, else the identity
    (then it has no parameters, as in the release). (N, in_dim, H, W) -> (N, out_dim, H/s, W/s).
    """

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        if stride != 1 or in_dim != out_dim:
            self.skip: nn.Module = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm2d(out_dim)
            )
        else:
            self.skip = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu(y + self.skip(x))


def _residuals(in_dim: int, out_dim: int, count: int, stride: int = 1) -> nn.Sequential:
    """``count`` residual blocks; the first maps in_dim -> out_dim with ``stride``."""
    blocks = [Residual(in_dim, out_dim, stride)]
    blocks += [Residual(out_dim, out_dim) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


def _residuals_reversed(in_dim: int, out_dim: int, count: int) -> nn.Sequential:
    """``count`` residual blocks; the last maps in_dim -> out_dim (the release's order)."""
    blocks = [Residual(in_dim, in_dim) for _ in range(count - 1)]
    blocks.append(Residual(in_dim, out_dim))
    return nn.Sequential(*blocks)


class HourglassModule(nn.Module):
    """One hourglass of depth ``n`` (recursive); see the module docstring.

    Input (N, dims[0], H, W) with H and W divisible by 2**n -> output of the same shape.
    """

    def __init__(self, n: int, dims: Sequence[int], modules: Sequence[int]) -> None:
        super().__init__()
        self.n = n
        curr_dim, next_dim = dims[0], dims[1]
        self.up1 = _residuals(curr_dim, curr_dim, modules[0])
        self.low1 = _residuals(curr_dim, next_dim, modules[0], stride=2)
        if n > 1:
            self.low2: nn.Module = HourglassModule(n - 1, dims[1:], modules[1:])
        else:
            self.low2 = _residuals(next_dim, next_dim, modules[1])
        self.low3 = _residuals_reversed(next_dim, curr_dim, modules[0])

    def forward(self, x: torch.Tensor, collect: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Run the hourglass; append each level's output to ``collect`` deepest first.

        With ``collect``, it receives n + 1 maps: the bottom (stride 2**n relative to x), then
        the merges at relative strides 2**(n-1), ..., 1 (the last one is the return value).
        """
        up1 = self.up1(x)
        low1 = self.low1(x)
        if isinstance(self.low2, HourglassModule):
            low2 = self.low2(low1, collect)
        else:
            low2 = self.low2(low1)
            if collect is not None:
                collect.append(low2)
        low3 = self.low3(low2)
        out = up1 + F.interpolate(low3, scale_factor=2.0, mode="nearest")
        if collect is not None:
            collect.append(out)
        return out


class HourglassOutput(NamedTuple):
    """Outputs of :class:`HourglassBackbone`.

    features: ``{"s4": (N, dims[0], H/4, W/4), "s8": (N, dims[1], H/8, W/8), ...}`` from the
        last hourglass (strides 4, 8, 16, 32 where the depth allows).
    stacks: per stack, the stride-4 map after ``cnvs[i]``: (N, cnv_dim, H/4, W/4).
    """

    features: dict[str, torch.Tensor]
    stacks: list[torch.Tensor]


class HourglassBackbone(nn.Module):
    """Stem, ``nstack`` hourglasses with intermediate links, and per-stack 3x3 convs.

    Args (defaults: Hourglass-104, :class:`HourglassConfig`'s):
        n: hourglass depth (number of stride-2 levels inside each hourglass).
        nstack: number of stacked hourglasses.
        dims: widths per level, length n + 1.
        modules: residual blocks per level, length n + 1 (the last is the bottom count).
        cnv_dim: width of the per-stack 3x3 conv outputs.
        stem_dims: widths of the stem's 7x7 conv and its residual; stem_dims[1] == dims[0].
    """

    def __init__(
        self,
        n: int = _HG104.n,
        nstack: int = _HG104.nstack,
        dims: Sequence[int] = _HG104.dims,
        modules: Sequence[int] = _HG104.modules,
        cnv_dim: int = _HG104.cnv_dim,
        stem_dims: Sequence[int] = _HG104.stem_dims,
    ) -> None:
        super().__init__()
        _validate_hourglass_args(n, nstack, dims, modules, cnv_dim, stem_dims)
        self.n = n
        self.nstack = nstack
        self.dims = tuple(dims)
        self.cnv_dim = cnv_dim
        curr_dim = dims[0]
        self.pre = nn.Sequential(
            ConvBNReLU(7, 3, stem_dims[0], stride=2), Residual(stem_dims[0], stem_dims[1], stride=2)
        )
        self.kps = nn.ModuleList([HourglassModule(n, dims, modules) for _ in range(nstack)])
        self.cnvs = nn.ModuleList([ConvBNReLU(3, curr_dim, cnv_dim) for _ in range(nstack)])
        self.inters = nn.ModuleList([Residual(curr_dim, curr_dim) for _ in range(nstack - 1)])
        self.inters_ = nn.ModuleList([_conv1x1_bn(curr_dim, curr_dim) for _ in range(nstack - 1)])
        self.cnvs_ = nn.ModuleList([_conv1x1_bn(cnv_dim, curr_dim) for _ in range(nstack - 1)])
        self.relu = nn.ReLU(inplace=True)
        levels = min(n, len(FEATURE_STRIDES) - 1) + 1
        # Channels of each named feature map (the merge at level l has dims[l] channels).
        self.out_channels: dict[str, int] = {
            f"s{FEATURE_STRIDES[level]}": dims[level] for level in range(levels)
        }

    def forward(self, images: torch.Tensor) -> HourglassOutput:
        """(N, 3, H, W) -> :class:`HourglassOutput` (named features and per-stack maps)."""
        return self._run(images, collect_features=True)

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) -> ``{"s4": ..., "s8": ..., ...}`` only (torchvision FPN style).

        Skips the last stack's ``cnvs`` conv, which only CornerNet-style heads read.
        """
        return self._run(images, collect_features=True, last_cnv=False).features

    def forward_stacks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) -> per-stack stride-4 maps (N, cnv_dim, H/4, W/4) after ``cnvs``."""
        return self._run(images, collect_features=False).stacks

    def _run(
        self, images: torch.Tensor, collect_features: bool, last_cnv: bool = True
    ) -> HourglassOutput:
        _check_images(images)
        inter = self.pre(images)
        _check_stem_size(images, inter, self.n)
        stacks: list[torch.Tensor] = []
        collected: list[torch.Tensor] = []
        for i in range(self.nstack):
            last = i == self.nstack - 1
            kp = self.kps[i](inter, collected if (last and collect_features) else None)
            if last and not last_cnv:
                break
            cnv = self.cnvs[i](kp)
            stacks.append(cnv)
            if not last:
                inter = self.relu(self.inters_[i](inter) + self.cnvs_[i](cnv))
                inter = self.inters[i](inter)
        features: dict[str, torch.Tensor] = {}
        if collect_features:
            # collected is deepest first: index n is stride 4, index n - l is stride 4 * 2**l.
            for level, name in enumerate(self.out_channels):
                features[name] = collected[self.n - level]
        return HourglassOutput(features, stacks)


def _conv1x1_bn(in_dim: int, out_dim: int) -> nn.Sequential:
    """1x1 conv (no bias) + BatchNorm: the release's ``inters_`` / ``cnvs_`` links."""
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, bias=False), nn.BatchNorm2d(out_dim))


def _validate_hourglass_args(
    n: int,
    nstack: int,
    dims: Sequence[int],
    modules: Sequence[int],
    cnv_dim: int,
    stem_dims: Sequence[int],
) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"hourglass depth n={n!r}: expected an int >= 1")
    if not isinstance(nstack, int) or nstack < 1:
        raise ValueError(f"nstack={nstack!r}: expected an int >= 1")
    for name, seq in (("dims", dims), ("modules", modules)):
        if len(seq) != n + 1 or any(not isinstance(v, int) or v < 1 for v in seq):
            raise ValueError(f"{name}={tuple(seq)!r}: expected n + 1 = {n + 1} positive ints")
    if not isinstance(cnv_dim, int) or cnv_dim < 1:
        raise ValueError(f"cnv_dim={cnv_dim!r}: expected a positive int")
    if len(stem_dims) != 2 or stem_dims[1] != dims[0]:
        raise ValueError(
            f"stem_dims={tuple(stem_dims)!r}: expected two widths, the second equal to "
            f"dims[0]={dims[0]}"
        )


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"images of shape {shape}: expected (N, 3, H, W)")
    if not images.is_floating_point():
        raise ValueError(f"images of dtype {images.dtype}: expected a floating-point dtype")


def _check_stem_size(images: torch.Tensor, stem: torch.Tensor, n: int) -> None:
    h, w = stem.shape[-2:]
    if h % 2**n or w % 2**n:
        raise ValueError(
            f"images of shape {tuple(images.shape)} give a stride-4 map of {h}x{w}; "
            f"the hourglass of depth {n} needs it divisible by 2**{n} = {2**n} "
            f"(e.g. H, W = {2 ** (n + 2) * 4 - 1} or multiples of {2 ** (n + 2)})"
        )


def build_hourglass(preset: str | None = "hg104", **kwargs: object) -> HourglassBackbone:
    """Build a backbone from a :data:`HOURGLASS_PRESETS` name, overridden by ``kwargs``.

    ``preset=None`` uses the keyword arguments (and the class defaults) only.
    """
    if preset is None:
        args: dict[str, object] = {}
    elif preset in HOURGLASS_PRESETS:
        args = HOURGLASS_PRESETS[preset].kwargs()
    else:
        raise ValueError(
            f"hourglass preset {preset!r}: expected one of {sorted(HOURGLASS_PRESETS)}"
        )
    args.update(kwargs)
    return HourglassBackbone(**args)  # type: ignore[arg-type]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
