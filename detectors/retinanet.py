"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) on the hourglass.

Neck: an FPN over the hourglass's s8/s16/s32 maps (P3-P5) plus P6 = 3x3 stride-2 conv of
C5 (= s32) and P7 = 3x3 stride-2 conv of ReLU(P6), all ``fpn_channels`` wide. Head:
torchvision's ``RetinaNetHead`` (4 conv layers per branch, GroupNorm in them unless
``head_group_norm=False`` (the paper's head; see the config), sigmoid focal loss with alpha 0.25
and gamma 2 normalised by the number of positives, L1 box loss on ``BoxCoder`` deltas).
Anchors: torchvision's ``AnchorGenerator``, 3 scales x 3 ratios = 9 per location on P3-P7.
Assignment: ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``; IoU in [0.4, 0.5) ignored.
Labels are 0-based (no background class: sigmoid per class).

Outputs of :meth:`RetinaNet.forward` for images (N, 3, H, W), padded to H', W' (multiples of
32), with A anchors in total:
``cls_logits`` (N, A, K), ``bbox_regression`` (N, A, 4), ``anchors`` (A, 4) xyxy (the same for
every image of a batch), ``num_anchors_per_level`` (list of 5 ints summing to A).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead

from detectors.anchors import AnchorBasedDetector
from detectors.backbones import build_hourglass
from detectors.dense import head_norm_groups, kaiming_init_towers
from detectors.presets import AnchorFields, preset_config
from detectors.pyramid import PyramidNeck

__all__ = ["RETINANET_PRESETS", "RetinaNet", "RetinaNetConfig", "build_retinanet", "scale_sizes"]

#: octave scales 2^0, 2^(1/3), 2^(2/3) (RetinaNet paper, section 4)
OCTAVE_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))


def scale_sizes(
    base_sizes: tuple[float, ...], scales: tuple[float, ...] = OCTAVE_SCALES
) -> tuple[tuple[float, ...], ...]:
    """Per level, ``base * scale`` for every scale: ((32, 40.3, 50.8), (64, ...), ...)."""
    return tuple(tuple(base * s for s in scales) for base in base_sizes)


@dataclass(frozen=True)
class RetinaNetConfig(AnchorFields):
    """RetinaNet hyper-parameters; defaults are the paper's unless noted."""

    ANCHOR_FIELDS: ClassVar[tuple[str, ...]] = ("anchor_sizes", "aspect_ratios")

    # per level P3..P7, the anchor sizes (square side in input pixels) at each location
    anchor_sizes: tuple[tuple[float, ...], ...] = scale_sizes((32, 64, 128, 256, 512))
    # h / w of the anchors (paper: {1:2, 1:1, 2:1})
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # IoU >= 0.5 positive, < 0.4 negative, in between ignored (paper section 4)
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    # decoding: score > 0.05, top 1000 per level, NMS 0.5 (paper section 4, "Inference")
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float = 0.5
    # FPN width; None: the backbone's cnv_dim (256 at hg104 = the paper's 256)
    fpn_channels: int | None = None
    # GroupNorm in the head towers (torchvision's RetinaNet v2; He et al. 2019, "Rethinking
    # ImageNet Pre-training", for training from scratch): True here, since every detector on
    # the shared backbone trains from scratch; False = the paper's unnormalised towers
    head_group_norm: bool = True
    # channels per GroupNorm group at least (32 groups of 8 at 256 channels, 4 at 32)
    min_group_channels: int = 8


RETINANET_PRESETS: dict[str, RetinaNetConfig] = {
    "paper": RetinaNetConfig(),
    # fitted: `python -m bench anchors --fit` on the default training split (data/synthetic,
    # difficulty standard, 3000 images, 9618 boxes of 13-87 px, w/h 0.35-2.86 at the 1st/99th
    # percentiles), 2026-12-02; see reports/anchors-fit/fit.md. Boxes choose P3 (71%) and P4
    # (28%); P5-P7 keep octaves around 4 x their stride.
    "synthetic": RetinaNetConfig(
        anchor_sizes=(
            (16.0, 24.5, 38.1),
            (51.0, 59.8, 73.7),
            (101.6, 128.0, 161.3),
            (203.2, 256.0, 322.5),
            (406.4, 512.0, 645.1),
        ),
        aspect_ratios=(0.49, 1.0, 2.06),
    ),
    # the hand-chosen anchors before the fit, for objects ~6 px to most of a 128 px image
    # with ratios 1:5..5:1: sizes one stride (8..128 on P3..P7, up to 203 with the octave
    # scales) and ratios 1:3, 1:1, 3:1
    "synthetic-hand": RetinaNetConfig(
        anchor_sizes=scale_sizes((8, 16, 32, 64, 128)), aspect_ratios=(1 / 3, 1.0, 3.0)
    ),
}


class RetinaNet(AnchorBasedDetector):
    """RetinaNet on a shared backbone with ``forward_features`` -> {"s8", "s16", "s32", ...}.

    Args:
        num_classes: K, foreground classes (0-based labels).
        backbone: the shared hourglass (``out_channels`` by map name, ``cnv_dim``).
        config: hyper-parameters (:data:`RETINANET_PRESETS`).
    """

    name = "retinanet"

    def __init__(
        self, num_classes: int, backbone: nn.Module, config: RetinaNetConfig | None = None
    ) -> None:
        super().__init__(num_classes, backbone)
        cfg = config or RetinaNetConfig()
        if len(cfg.anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes has {len(cfg.anchor_sizes)} levels: expected 5 (P3-P7)")
        self.config = cfg
        channels = cfg.fpn_channels or backbone.cnv_dim
        self.neck = PyramidNeck(backbone.out_channels, ("s8", "s16", "s32"), channels, "p6p7")
        self.anchor_generator = AnchorGenerator(
            cfg.anchor_sizes, (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes)
        )
        num_anchors = self.anchor_generator.num_anchors_per_location()
        if len(set(num_anchors)) != 1:
            raise ValueError(f"anchors per location differ between levels: {num_anchors}")
        norm = None
        if cfg.head_group_norm:
            norm = functools.partial(
                nn.GroupNorm, head_norm_groups(channels, cfg.min_group_channels)
            )
        self.head = RetinaNetHead(channels, num_anchors[0], num_classes, norm_layer=norm)
        kaiming_init_towers(self.head.classification_head.conv, self.head.regression_head.conv)
        self.matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh, allow_low_quality_matches=True)

    def _head_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        outputs: dict,
        anchors: list[torch.Tensor],
        matched: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Focal loss (``loss_cls``) and L1 box loss (``loss_box``), each / positives."""
        return self.head.compute_loss(targets, outputs, anchors, matched)

    def _class_scores(self, outputs: dict) -> torch.Tensor:
        """Sigmoid per class: (N, A, K)."""
        return outputs["cls_logits"].sigmoid()

    def _decode_regression(self, regression: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """``BoxCoder`` deltas (M, 4) of anchors (M, 4) -> xyxy boxes (M, 4)."""
        return self.head.regression_head.box_coder.decode_single(regression, anchors)


def build_retinanet(
    num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs: object
) -> RetinaNet:
    """RetinaNet on ``build_hourglass(backbone)``; ``kwargs`` override :class:`RetinaNetConfig`."""
    config = preset_config(RETINANET_PRESETS, preset, kwargs)
    return RetinaNet(num_classes, build_hourglass(backbone), config)
