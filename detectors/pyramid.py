"""The maps a head reads: input padding, cropping the padding off again, and the FPN neck.

- :func:`padded_size` / :func:`pad_images`: torchvision's convention, zero padding at the
  bottom and right to a multiple of ``SIZE_DIVISOR`` (32); anchors are counted after it.
- :func:`backbone_divisor` / :func:`pad_for_backbone` / :func:`crop_map`: for detectors that
  keep their input size (SSD, CenterNet) or pad further for a deep hourglass (YOLOv3): pad to
  the hourglass's multiple, then crop every stride-s map back to the ceil(H / s) cells that see
  the input.
- :class:`PyramidNeck`: torchvision's ``FeaturePyramidNetwork`` over named hourglass maps
  (``"s4"``, ``"s8"``, ...) plus optional extra levels: ``"p6p7"`` (RetinaNet's P6 = 3x3
  stride-2 conv of C5 = s32, P7 = 3x3 stride-2 conv of ReLU(P6)) or ``"maxpool"`` (Faster
  R-CNN's P6 = stride-2 subsampling of P5). ``level_sizes(H, W)`` gives each level's map size
  without running the network.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

__all__ = [
    "SIZE_DIVISOR",
    "PyramidNeck",
    "backbone_divisor",
    "crop_map",
    "downsample_size",
    "pad_for_backbone",
    "pad_images",
    "padded_size",
]

#: inputs are padded to a multiple of this (torchvision's GeneralizedRCNNTransform default,
#: and what the tiny hourglass needs)
SIZE_DIVISOR = 32


def padded_size(height: int, width: int, divisor: int = SIZE_DIVISOR) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``divisor``; ValueError for sizes < 1."""
    for name, v in (("height", height), ("width", width), ("divisor", divisor)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}={v!r}: expected a positive int")
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def pad_images(images: torch.Tensor, divisor: int = SIZE_DIVISOR) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H', W') zero-padded at the bottom/right to multiples of divisor.

    Returns ``images`` itself when no padding is needed.
    """
    h, w = images.shape[-2:]
    ph, pw = padded_size(int(h), int(w), divisor)
    if (ph, pw) == (h, w):
        return images
    return F.pad(images, (0, pw - w, 0, ph - h))


def backbone_divisor(backbone: nn.Module) -> int:
    """Input multiple the hourglass needs: 2**(n + 2) (32 for depth 3, 128 for depth 5)."""
    return 2 ** (int(backbone.n) + 2)


def pad_for_backbone(images: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """(N, C, H, W) zero-padded at the bottom/right to the hourglass's multiple."""
    return pad_images(images, backbone_divisor(backbone))


def crop_map(feature: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) map of a padded input -> (N, C, ceil(H/stride), ceil(W/stride)), size=(H, W).

    Keeps the cells that see the (H, W) input; padding is at the bottom/right.
    """
    h, w = -(-size[0] // stride), -(-size[1] // stride)
    if h > feature.shape[-2] or w > feature.shape[-1]:
        raise ValueError(
            f"feature map {tuple(feature.shape)} at stride {stride} is smaller than the "
            f"{h}x{w} cells an input of {size[0]}x{size[1]} needs"
        )
    return feature[..., :h, :w]


def downsample_size(size: int) -> int:
    """Output size of a stride-2 3x3 conv with padding 1 (or a 1x1 stride-2 pool): ceil(size/2)."""
    return (size + 1) // 2


class PyramidNeck(nn.Module):
    """FPN over backbone maps ``levels`` (e.g. ``("s8", "s16", "s32")``) plus extra levels.

    Args:
        in_channels: channels of every backbone map by name (``backbone.out_channels``).
        levels: the backbone maps to use, finest first; their names must be ``s<stride>``.
        out_channels: width of every pyramid level.
        extra: ``None``, ``"p6p7"`` (two stride-2 convs on the coarsest *backbone* map, as in
            the RetinaNet paper) or ``"maxpool"`` (one stride-2 subsampling of the coarsest
            pyramid level, as in the FPN paper's RPN).

    ``forward(features)`` -> ordered ``{"p<log2 stride>": (N, out_channels, H/s, W/s)}``.
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        levels: Sequence[str],
        out_channels: int,
        extra: str | None = None,
    ) -> None:
        super().__init__()
        missing = [name for name in levels if name not in in_channels]
        if not levels or missing:
            raise ValueError(
                f"pyramid levels {tuple(levels)!r}: expected names among {sorted(in_channels)}"
            )
        if extra not in (None, "p6p7", "maxpool"):
            raise ValueError(f"extra={extra!r}: expected None, 'p6p7' or 'maxpool'")
        self.levels = tuple(levels)
        self.out_channels = out_channels
        strides = [int(name[1:]) for name in levels]
        extra_block: nn.Module | None = None
        if extra == "p6p7":
            extra_block = LastLevelP6P7(in_channels[levels[-1]], out_channels)
            # torchvision switches to P5 when the widths happen to match; the paper uses C5.
            extra_block.use_P5 = False
            strides += [strides[-1] * 2, strides[-1] * 4]
        elif extra == "maxpool":
            extra_block = LastLevelMaxPool()
            strides += [strides[-1] * 2]
        self.strides = tuple(strides)
        self.names = tuple(f"p{s.bit_length() - 1}" for s in strides)
        self.fpn = FeaturePyramidNetwork(
            [in_channels[name] for name in levels], out_channels, extra_blocks=extra_block
        )

    def forward(self, features: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        """Named backbone maps -> ordered pyramid levels (finest first)."""
        inputs = OrderedDict((name, features[name]) for name in self.levels)
        outputs = self.fpn(inputs)
        return OrderedDict(zip(self.names, outputs.values()))

    def level_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Map size of every level for an input of (height, width) divisible by 32."""
        sizes = [(height // s, width // s) for s in self.strides[: len(self.levels)]]
        while len(sizes) < len(self.strides):
            h, w = sizes[-1]
            sizes.append((downsample_size(h), downsample_size(w)))
        return sizes
