"""DSSD (Fu et al., "DSSD: Deconvolutional Single Shot Detector", arXiv 1701.06659, 2017).

SSD (:mod:`detectors.ssd`: the same maps, default boxes, matcher, loss and decoding) with two
additions between the SSD maps f_1 (finest) .. f_L (coarsest) and the head:

- Deconvolution modules (paper Figure 3), a top-down path d_L = f_L,
  ``d_l = ReLU(BN(conv3x3(deconv2x2(d_{l+1}))) * BN(conv3x3(ReLU(BN(conv3x3(f_l))))))``:
  a learned 2x2 stride-2 deconvolution upsamples the coarser map, 3x3 conv + BN on each
  branch (two on the SSD branch), an element-wise product merges them. Where doubling does
  not give f_l's size (SSD's odd sizes: 1 -> 3, 3 -> 5, 10 -> 19), the upsampled map is
  resized to it with nearest-neighbour sampling (a crop when it is one cell too large).
- Prediction modules (paper Figure 2(c)), one per level: a residual block, branch
  1x1 conv (C/2) - ReLU - 1x1 conv (C/2) - ReLU - 1x1 conv (2C) plus a 1x1 conv (2C) skip,
  summed, then torchvision's ``SSDHead`` convs. With C = ``deconv_channels`` = 512 these are
  the paper's 256, 256, 1024 widths.

Presets: "paper" is DSSD513's default boxes at a 512 input (the 513 of the paper, rounded to
the backbone's stride): 7 maps 64, 32, 16, 8, 4, 2, 1 (four stride-2 extras, as SSD512), the
aspect ratios 1.6, 2 and 3 the paper chose by clustering (8 boxes per location with SSD's two
squares) and SSD512's scales: 43,688 default boxes (CornerNet's "more than 40k in DSSD").
"synthetic" is SSD's synthetic preset (fitted to the same boxes it would be: the same default
boxes on the same maps), "synthetic-hand" SSD's hand-chosen one.

BatchNorm in the deconvolution modules (as the paper) needs more than one value per channel
in training: a batch of one image with a 1x1 level cannot train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from detectors.backbones import build_hourglass
from detectors.presets import preset_config
from detectors.ssd import SSD, SSD_PRESETS, SSDConfig

__all__ = [
    "DSSD",
    "DSSD_PRESETS",
    "DSSDConfig",
    "DeconvolutionModule",
    "PredictionModule",
    "build_dssd",
]


@dataclass(frozen=True)
class DSSDConfig(SSDConfig):
    """SSD's fields plus the width of the deconvolution path."""

    # width C of the deconvolution modules; None: 2 x the backbone's cnv_dim (512 at hg104 =
    # the paper's 512)
    deconv_channels: int | None = None


DSSD_PRESETS: dict[str, DSSDConfig] = {
    "paper": DSSDConfig(
        aspect_ratios=((1.6, 2, 3),) * 7,  # DSSD section 3.3: clustered ratios 1.6, 2, 3
        # SSD512's min/max sizes 20.48, 51.2, 133.12, ..., 542.72 px over 512 (SSD's 513 base)
        scales=(0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06),
        extra_layers=("s2", "s2", "s2", "s2"),
    ),
    "synthetic": DSSDConfig(**vars(SSD_PRESETS["synthetic"])),
    "synthetic-hand": DSSDConfig(**vars(SSD_PRESETS["synthetic-hand"])),
}


def _conv_bn(in_dim: int, out_dim: int) -> list[nn.Module]:
    return [nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=False), nn.BatchNorm2d(out_dim)]


class DeconvolutionModule(nn.Module):
    """DSSD Figure 3: merge a coarser map into an SSD map.

    (d (N, deep_dim, h, w), f (N, skip_dim, H, W)) -> (N, channels, H, W).
    """

    def __init__(self, deep_dim: int, skip_dim: int, channels: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(deep_dim, channels, 2, stride=2)
        self.deep = nn.Sequential(*_conv_bn(channels, channels))
        self.skip = nn.Sequential(
            *_conv_bn(skip_dim, channels), nn.ReLU(inplace=True), *_conv_bn(channels, channels)
        )

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.deconv(deep)  # (N, C, 2h, 2w)
        if up.shape[-2:] != skip.shape[-2:]:
            up = F.interpolate(up, size=skip.shape[-2:], mode="nearest")
        return F.relu(self.deep(up) * self.skip(skip))


class PredictionModule(nn.Module):
    """DSSD Figure 2(c): residual block (N, in_dim, H, W) -> (N, 2 * channels, H, W)."""

    def __init__(self, in_dim: int, channels: int) -> None:
        super().__init__()
        mid, out = max(channels // 2, 1), 2 * channels
        self.branch = nn.Sequential(
            nn.Conv2d(in_dim, mid, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, 1),
        )
        self.skip = nn.Conv2d(in_dim, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.skip(x)


class DSSD(SSD):
    """SSD plus deconvolution and prediction modules (see the module docstring)."""

    name = "dssd"

    def __init__(
        self, num_classes: int, backbone: nn.Module, config: DSSDConfig | None = None
    ) -> None:
        super().__init__(num_classes, backbone, config or DSSDConfig())

    def _build_neck(self, channels: list[int]) -> list[int]:
        width = getattr(self.config, "deconv_channels", None) or 2 * int(self.backbone.cnv_dim)
        # deconv[i] builds level i from level i + 1 (the coarsest level has none)
        deep = [width] * (len(channels) - 2) + [channels[-1]]
        self.deconv = nn.ModuleList(
            DeconvolutionModule(d, c, width) for d, c in zip(deep, channels[:-1])
        )
        inputs = [width] * (len(channels) - 1) + [channels[-1]]
        self.predict = nn.ModuleList(PredictionModule(c, width) for c in inputs)
        return [2 * width] * len(channels)

    def neck(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """SSD maps f_1..f_L -> prediction-module outputs on d_1..d_L (finest first)."""
        path = [maps[-1]]
        for level in range(len(maps) - 2, -1, -1):
            path.append(self.deconv[level](path[-1], maps[level]))
        path.reverse()
        return [module(x) for module, x in zip(self.predict, path)]


def build_dssd(
    num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs: object
) -> DSSD:
    """DSSD on ``build_hourglass(backbone)``; ``kwargs`` override :class:`DSSDConfig` fields."""
    config = preset_config(DSSD_PRESETS, preset, kwargs)
    return DSSD(num_classes, build_hourglass(backbone), config)
