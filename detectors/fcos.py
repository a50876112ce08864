"""FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019).

Anchor-free: every location of P3-P7 is one *point* that predicts K class scores, its distances
to the four sides of a box (l, t, r, b, in units of the level's stride) and a centre-ness
logit. :meth:`FCOS.anchors_per_image` therefore reports **0** (no anchor boxes, no IoU
matching, no anchor shapes to tune); :meth:`FCOS.points_per_image` gives the number of
locations (one per pixel of each level), and :meth:`FCOS.assignment_stats` the positive and
negative points.

Neck: as RetinaNet's (FPN over s8/s16/s32, P6/P7 from C5). Head: torchvision's ``FCOSHead``
(4 conv + GroupNorm layers per branch; sigmoid focal loss, GIoU box loss and centre-ness BCE,
each / positives), with GroupNorm groups of at least 8 channels (:func:`head_norm_groups`):
torchvision's 32 groups leave one channel per group at the tiny backbone's width 32, and a
1x1 level (P7 of a 128 px input) would then normalise single values to a constant.
Points are the centres of one stride-sized square per location, made by torchvision's
``AnchorGenerator`` (as torchvision's FCOS does).

Assignment (:func:`match_points`, from the paper and its centre-sampling refinement): a point
is positive for a box when it lies inside the box, within ``center_sampling_radius`` strides of
its centre, and the largest of its distances to the sides is in the level's range (paper:
(0, 64], (64, 128], (128, 256], (256, 512], (512, inf) for P3..P7); among several boxes the
smallest wins. Labels are 0-based (sigmoid per class, no background).

Outputs of :meth:`FCOS.forward` for (N, 3, H, W) padded to (H', W') with A points:
``cls_logits`` (N, A, K), ``bbox_regression`` (N, A, 4), ``bbox_ctrness`` (N, A, 1),
``points`` (A, 4) (the stride squares), ``num_points_per_level`` (5 ints).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead

from detectors.backbones import build_hourglass
from detectors.dense import (
    DenseDetector,
    assignment_counts,
    head_norm_groups,
    kaiming_init_towers,
)
from detectors.presets import preset_config
from detectors.pyramid import PyramidNeck

__all__ = ["FCOS", "FCOS_PRESETS", "FCOSConfig", "build_fcos", "head_norm_groups", "match_points"]

STRIDES = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class FCOSConfig:
    """FCOS hyper-parameters; defaults are the paper's / torchvision's."""

    # boundaries between the levels' ranges of max(l, t, r, b) in pixels (paper: m3..m6)
    level_bounds: tuple[float, ...] = (64, 128, 256, 512)
    # positives within 1.5 strides of the box centre (torchvision; the paper's follow-up)
    center_sampling_radius: float = 1.5
    # decoding: sqrt(cls * centre-ness) > 0.2, top 1000 per level, NMS 0.6 (torchvision)
    score_thresh: float = 0.2
    topk_candidates: int = 1000
    nms_thresh: float = 0.6
    # FPN width (a multiple of 32); None: the backbone's cnv_dim
    fpn_channels: int | None = None
    # the head's GroupNorm: 32 groups (paper, torchvision), but at least this many channels
    # per group, so that a 1x1 level (P7 of a 128 px input) still normalises 8 values
    min_group_channels: int = 8


FCOS_PRESETS: dict[str, FCOSConfig] = {
    "paper": FCOSConfig(),
    # 128 px images: the ranges are halved. max(l, t, r, b) < 128 px there, so P6 and P7 get
    # no positives (measured on the smoke set: P3..P5 only); they still see every negative
    "synthetic": FCOSConfig(level_bounds=(32, 64, 128, 256)),
}


def match_points(
    points: torch.Tensor,
    num_per_level: list[int],
    boxes: torch.Tensor,
    level_bounds: tuple[float, ...],
    radius: float,
) -> torch.Tensor:
    """Assign each point to a box index, or -1 for background.

    Args:
        points: (A, 4) stride-sized squares centred on the points, levels concatenated.
        num_per_level: points per level (len(level_bounds) + 1 levels).
        boxes: (M, 4) xyxy ground truth.
        level_bounds: the L - 1 boundaries of the levels' ranges of max(l, t, r, b).
        radius: centre-sampling radius in strides.

    Returns:
        (A,) int64: the matched box (the smallest candidate) or -1.
    """
    if boxes.numel() == 0:
        return torch.full((points.shape[0],), -1, dtype=torch.int64, device=points.device)
    centres = (points[:, :2] + points[:, 2:]) / 2  # (A, 2)
    strides = points[:, 2] - points[:, 0]  # (A,)
    lows = torch.tensor((0.0, *level_bounds), dtype=points.dtype, device=points.device)
    highs = torch.tensor((*level_bounds, float("inf")), dtype=points.dtype, device=points.device)
    counts = torch.tensor(num_per_level, device=points.device)
    low, high = lows.repeat_interleave(counts), highs.repeat_interleave(counts)  # (A,)
    # distances to the sides: (A, M, 4) = (l, t, r, b)
    sides = torch.cat(
        [centres[:, None] - boxes[None, :, :2], boxes[None, :, 2:] - centres[:, None]], 2
    )
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2)
    near = (centres[:, None] - box_centres[None]).abs().amax(2) < radius * strides[:, None]
    reach = sides.amax(2)
    ok = (sides.amin(2) > 0) & near & (reach > low[:, None]) & (reach <= high[:, None])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (M,)
    cost = torch.where(ok, areas[None].expand_as(ok), torch.full_like(reach, float("inf")))
    best, index = cost.min(1)
    return torch.where(torch.isfinite(best), index, torch.full_like(index, -1))


def _set_group_norm_groups(module: nn.Module, num_groups: int) -> None:
    """Set ``num_groups`` of every ``nn.GroupNorm`` in ``module`` (in place).

    The affine parameters are per channel, so parameters and state-dict keys do not change.
    """
    for norm in module.modules():
        if isinstance(norm, nn.GroupNorm):
            if norm.num_channels % num_groups:
                raise ValueError(
                    f"num_groups={num_groups}: expected a divisor of {norm.num_channels}"
                )
            norm.num_groups = num_groups


class FCOS(DenseDetector):
    """FCOS on a shared backbone with ``forward_features`` -> {"s8", "s16", "s32", ...}.

    Args:
        num_classes: K, foreground classes (0-based labels).
        backbone: the shared hourglass (``out_channels`` by map name, ``cnv_dim``).
        config: hyper-parameters (:data:`FCOS_PRESETS`).
    """

    name = "fcos"
    PRIORS_KEY = "points"
    COUNTS_KEY = "num_points_per_level"
    LOSS_PARTS = {
        "loss_cls": "classification",
        "loss_box": "bbox_regression",
        "loss_ctr": "bbox_ctrness",
    }

    def __init__(
        self, num_classes: int, backbone: nn.Module, config: FCOSConfig | None = None
    ) -> None:
        super().__init__(num_classes, backbone)
        cfg = config or FCOSConfig()
        channels = cfg.fpn_channels or backbone.cnv_dim
        if channels % 32:
            raise ValueError(f"fpn_channels={channels}: expected a multiple of 32 (GroupNorm)")
        if cfg.min_group_channels < 1 or 32 % cfg.min_group_channels:
            raise ValueError(
                f"min_group_channels={cfg.min_group_channels}: expected a divisor of 32"
            )
        if len(cfg.level_bounds) != len(STRIDES) - 1:
            raise ValueError(f"level_bounds={cfg.level_bounds}: expected {len(STRIDES) - 1}")
        self.config = cfg
        self.neck = PyramidNeck(backbone.out_channels, ("s8", "s16", "s32"), channels, "p6p7")
        self.point_generator = AnchorGenerator(tuple((s,) for s in STRIDES), ((1.0,),) * 5)
        self.head = FCOSHead(channels, 1, num_classes)
        kaiming_init_towers(self.head.classification_head.conv, self.head.regression_head.conv)
        _set_group_norm_groups(self.head, head_norm_groups(channels, cfg.min_group_channels))

    @property
    def prior_generator(self) -> nn.Module:
        """The point generator: one stride-sized square per location."""
        return self.point_generator

    def anchors_per_image(self, height: int, width: int) -> int:
        """0: FCOS places no anchor boxes (see :meth:`points_per_image`)."""
        return 0

    def points_per_image(self, height: int, width: int) -> int:
        """Locations on P3-P7 (one point each) after padding to a multiple of 32."""
        return self._count_priors(height, width)

    def _match_priors(
        self, outputs: dict, points: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Per image (A,): the box each point is assigned to, or -1 (:func:`match_points`)."""
        cfg = self.config
        return [
            match_points(
                p,
                outputs["num_points_per_level"],
                t["boxes"],
                cfg.level_bounds,
                cfg.center_sampling_radius,
            )
            for p, t in zip(points, targets)
        ]

    def _head_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        outputs: dict,
        points: list[torch.Tensor],
        matched: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Focal (``loss_cls``), GIoU (``loss_box``) and centre-ness BCE (``loss_ctr``)."""
        return self.head.compute_loss(targets, outputs, points, matched)

    def _assignment_summary(self, outputs: dict, matched: list[torch.Tensor]) -> dict:
        """Positive / negative points (none ignored) and ``points``, per image."""
        stats = assignment_counts(matched)
        stats["points"] = float(outputs["points"].shape[0])
        return stats

    def _class_scores(self, outputs: dict) -> torch.Tensor:
        """sqrt(sigmoid(cls) * sigmoid(centre-ness)): (N, A, K)."""
        return torch.sqrt(outputs["cls_logits"].sigmoid() * outputs["bbox_ctrness"].sigmoid())

    def _decode_regression(self, regression: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Distances (l, t, r, b) in strides (M, 4) from points (M, 4) -> xyxy boxes (M, 4)."""
        return self.head.box_coder.decode(regression, points)


def build_fcos(
    num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs: object
) -> FCOS:
    """FCOS on ``build_hourglass(backbone)``; ``kwargs`` override :class:`FCOSConfig`."""
    config = preset_config(FCOS_PRESETS, preset, kwargs)
    return FCOS(num_classes, build_hourglass(backbone), config)
