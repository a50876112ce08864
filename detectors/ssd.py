"""SSD (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016) on the hourglass.

Maps: the hourglass's s8, s16 and s32 maps, then ``extra_layers`` (each a 1x1 conv to half
width and a 3x3 conv, with ReLU, as SSD's conv8-conv11): ``"s2"`` is a stride-2 3x3 conv with
padding 1 (size ceil(s / 2)), ``"valid"`` a 3x3 conv without padding (size s - 2; a map smaller
than 3x3 is first zero-padded to 3x3, so it gives 1x1). SSD300 = ("s2", "valid", "valid").
Head: torchvision's ``SSDHead`` (one 3x3 conv per map for the K + 1 class logits, label 0
background, and one for the box deltas). Default boxes: torchvision's ``DefaultBoxGenerator``.
Matching: ``SSDMatcher(0.5)`` (IoU >= 0.5, plus each box's best default box; none ignored).
Loss: torchvision's ``SSD.compute_loss``: smooth L1 on ``BoxCoder((10, 10, 5, 5))`` deltas and
cross-entropy with hard negative mining (the 3 negatives per positive of highest loss, per
image), both divided by the number of positives.

Input size. SSD keeps its input: the images (N, 3, H, W) are zero-padded at the bottom/right
only for the hourglass (to a multiple of 2**(n + 2): 32 for "tiny", 128 for "hg104") and every
backbone map of stride s is cropped back to ceil(H / s) x ceil(W / s) cells, the ones that see
the image. A 300x300 input (padded to 320 for "tiny", 384 for "hg104") thus gives SSD300's
maps 38, 19, 10, then 5, 3, 1 from the extras: 8,732 default boxes with 4, 6, 6, 6, 4, 4 per
location (without the crop, 40, 20, 10, 5, 3, 1 would give 9,788). ``anchors_per_image``
counts on those cropped sizes (``size_divisor`` is 1: SSD does no padding of its own).
Default boxes tile the input evenly (``steps=None``): centre (j + 0.5) * H / h_map, equal to
the map's stride whenever H is a multiple of it (7.9 instead of torchvision's 8 for 38 cells
over 300 px). VGG's L2Norm on conv4_3 is replaced by a BatchNorm on every map the head reads
(``head_batch_norm``, see :class:`SSDConfig`: from-scratch training needs it).

Outputs of :meth:`SSD.forward` with A default boxes: ``cls_logits`` (N, A, K + 1),
``bbox_regression`` (N, A, 4), ``anchors`` (A, 4) xyxy in input pixels (the same for every
image), ``num_anchors_per_level`` (ints summing to A), ``feature_sizes`` [(h, w)] per map.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import ssd as tv_ssd
from torchvision.models.detection._utils import BoxCoder, SSDMatcher
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from detectors.anchors import AnchorBasedDetector
from detectors.backbones import build_hourglass
from detectors.dense import assignment_counts
from detectors.presets import AnchorFields, preset_config
from detectors.pyramid import crop_map, pad_for_backbone

__all__ = [
    "SSD",
    "SSD_PRESETS",
    "ExtraLayer",
    "SSDConfig",
    "build_ssd",
]

#: the backbone maps SSD predicts on, finest first
BACKBONE_LEVELS = ("s8", "s16", "s32")
EXTRA_KINDS = ("s2", "valid")


@dataclass(frozen=True)
class SSDConfig(AnchorFields):
    """SSD hyper-parameters; defaults are SSD300's as torchvision's ``ssd300_vgg16`` has them."""

    ANCHOR_FIELDS: ClassVar[tuple[str, ...]] = ("aspect_ratios", "scales")

    # per map, the ratios r adding boxes of ratio r and 1/r to the two square ones (SSD300)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    # box scale s_k per map as a fraction of the input, plus one for sqrt(s_k s_k+1) (SSD300)
    scales: tuple[float, ...] = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
    # extra maps after s32: "s2" (stride-2 3x3) or "valid" (3x3, no padding) (SSD300)
    extra_layers: tuple[str, ...] = ("s2", "valid", "valid")
    # width of the extra maps; None: the backbone's s32 width
    extra_channels: int | None = None
    # IoU >= 0.5 positive, and each box's best default box (SSD paper section 2.2)
    iou_thresh: float = 0.5
    # hard negative mining: at most 3 negatives per positive (SSD paper section 2.2)
    neg_to_pos_ratio: float = 3.0
    # BatchNorm on every map the head reads. Not in SSD300 (VGG's conv4_3 gets an L2Norm
    # instead): ScratchDet (Zhu et al., ICCV 2019) found BatchNorm in the head is what lets
    # SSD train from scratch, as every detector on the shared backbone does; the hourglass
    # maps are sums of residual branches, not normalised. False: the paper's head inputs
    head_batch_norm: bool = True
    # decoding: softmax score > 0.01, top 400, NMS 0.45 (torchvision's SSD defaults)
    score_thresh: float = 0.01
    topk_candidates: int = 400
    nms_thresh: float = 0.45

    def with_anchors_of(self, other: SSDConfig) -> SSDConfig:
        """This config with ``other``'s default boxes on this config's L maps.

        A preset for more maps gives its first L maps' ratios and its first L + 1 scales
        (DSSD's paper preset, 7 maps at 512 px, on the synthetic preset's 6 maps at 128 px).
        """
        maps = len(BACKBONE_LEVELS) + len(self.extra_layers)
        if len(other.aspect_ratios) < maps:
            raise ValueError(
                f"anchors for {len(other.aspect_ratios)} maps cannot fill this config's {maps}"
            )
        return replace(
            self, aspect_ratios=other.aspect_ratios[:maps], scales=other.scales[: maps + 1]
        )


SSD_PRESETS: dict[str, SSDConfig] = {
    "paper": SSDConfig(),
    # maps 16, 8, 4, 2, 1, 1 at 128 px (stride-2 extras: valid convs would leave nothing),
    # 6 boxes per location. Scales and ratios fitted: `python -m bench anchors --fit` on the
    # default training split (data/synthetic, difficulty standard, 3000 images, 9618 boxes of
    # 13-87 px, w/h 0.35-2.86 at the 1st/99th percentiles), 2026-12-02; see
    # reports/anchors-fit/fit.md. Boxes choose the maps in shares 53, 28, 11, 3, 2, 3%.
    "synthetic": SSDConfig(
        aspect_ratios=((1.69, 2.43),) * 6,
        scales=(0.16, 0.329, 0.464, 0.483, 0.484, 0.648, 0.717),
        extra_layers=("s2", "s2", "s2"),
    ),
    # the hand-chosen default boxes before the fit, for objects ~6 px to most of a 128 px
    # image with ratios 1:5..5:1: scales 8 to 109 px, ratios 1/4..4
    "synthetic-hand": SSDConfig(
        aspect_ratios=((2, 4),) * 6,
        scales=(0.06, 0.12, 0.25, 0.45, 0.65, 0.85, 1.0),
        extra_layers=("s2", "s2", "s2"),
    ),
}


def _extra_size(size: int, kind: str) -> int:
    return (size + 1) // 2 if kind == "s2" else max(size, 3) - 2


class ExtraLayer(nn.Module):
    """SSD extra layer: 1x1 conv to ``in_dim // 2``, ReLU, 3x3 conv to ``out_dim``, ReLU.

    ``kind="s2"``: stride 2, padding 1, (N, in_dim, h, w) -> (N, out_dim, ceil(h/2), ceil(w/2)).
    ``kind="valid"``: stride 1, no padding, -> (h - 2, w - 2); sides below 3 are zero-padded
    to 3 first (bottom/right get the odd cell), giving 1.
    """

    def __init__(self, in_dim: int, out_dim: int, kind: str) -> None:
        super().__init__()
        if kind not in EXTRA_KINDS:
            raise ValueError(f"extra layer kind {kind!r}: expected one of {EXTRA_KINDS}")
        self.kind = kind
        mid = max(in_dim // 2, 1)
        stride, padding = (2, 1) if kind == "s2" else (1, 0)
        self.reduce = nn.Conv2d(in_dim, mid, 1)
        self.conv = nn.Conv2d(mid, out_dim, 3, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.reduce(x))
        if self.kind == "valid":
            ph, pw = max(3 - x.shape[-2], 0), max(3 - x.shape[-1], 0)
            if ph or pw:
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.relu(self.conv(x))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class SSD(AnchorBasedDetector):
    """SSD on a shared hourglass backbone (see the module docstring).

    Args:
        num_classes: K foreground classes (0-based labels; the head has K + 1 with background 0).
        backbone: the shared hourglass (``forward_features``, ``out_channels``, ``n``).
        config: hyper-parameters (:data:`SSD_PRESETS`).

    Subclasses (DSSD) insert layers between the maps and the head by overriding
    :meth:`_build_neck` and :meth:`neck`.
    """

    name = "ssd"
    #: SSD keeps its input size; the backbone's padding is cropped off the maps
    size_divisor = 1
    float32_priors = True

    def __init__(
        self, num_classes: int, backbone: nn.Module, config: SSDConfig | None = None
    ) -> None:
        super().__init__(num_classes, backbone)
        cfg = config or SSDConfig()
        num_maps = len(BACKBONE_LEVELS) + len(cfg.extra_layers)
        if len(cfg.aspect_ratios) != num_maps or len(cfg.scales) != num_maps + 1:
            raise ValueError(
                f"{num_maps} maps (3 backbone + {len(cfg.extra_layers)} extra): expected "
                f"{num_maps} aspect_ratios and {num_maps + 1} scales, got "
                f"{len(cfg.aspect_ratios)} and {len(cfg.scales)}"
            )
        self.config = cfg
        channels = [backbone.out_channels[name] for name in BACKBONE_LEVELS]
        width = cfg.extra_channels or channels[-1]
        extras = []
        for kind in cfg.extra_layers:
            extras.append(ExtraLayer(channels[-1], width, kind))
            channels.append(width)
        self.extras = nn.ModuleList(extras)
        self.anchor_generator = DefaultBoxGenerator(
            [list(r) for r in cfg.aspect_ratios], scales=list(cfg.scales), steps=None
        )
        head_channels = self._build_neck(channels)
        self.map_norms = (
            nn.ModuleList(nn.BatchNorm2d(c) for c in head_channels) if cfg.head_batch_norm else None
        )
        self.head = tv_ssd.SSDHead(
            head_channels, self.anchor_generator.num_anchors_per_location(), num_classes + 1
        )
        # attribute names read by torchvision's SSD.compute_loss (called in loss())
        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.neg_to_pos_ratio = cfg.neg_to_pos_ratio
        self.matcher = SSDMatcher(cfg.iou_thresh)

    # ---- the maps ------------------------------------------------------------------------
    def _build_neck(self, channels: list[int]) -> list[int]:
        """Build layers between the SSD maps (``channels`` wide) and the head; their widths."""
        return channels

    def neck(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """SSD maps -> the maps the head sees (SSD: unchanged)."""
        return maps

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) -> SSD maps: cropped s8, s16, s32 (ceil(H/s) cells), then the extras."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        features = self.backbone.forward_features(pad_for_backbone(images, self.backbone))
        maps = [crop_map(features[name], int(name[1:]), size) for name in BACKBONE_LEVELS]
        for layer in self.extras:
            maps.append(layer(maps[-1]))
        return maps

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(h, w) of every SSD map for an (height, width) input, without running the network."""
        sizes = [(-(-height // int(n[1:])), -(-width // int(n[1:]))) for n in BACKBONE_LEVELS]
        for kind in self.config.extra_layers:
            sizes.append((_extra_size(sizes[-1][0], kind), _extra_size(sizes[-1][1], kind)))
        return sizes

    def anchors_per_image(self, height: int, width: int) -> int:
        """Default boxes on an (height, width) input (counted on CPU, also in a meta context)."""
        # DefaultBoxGenerator keeps its box shapes on the CPU: keep the placeholders there too
        with torch.device("cpu"):
            return super().anchors_per_image(height, width)

    # ---- the hooks of DenseDetector -----------------------------------------------------
    def _head_outputs(self, maps: list[torch.Tensor]) -> dict:
        """SSD maps -> neck -> BatchNorm -> head: ``cls_logits`` (N, A, K + 1) and
        ``bbox_regression`` (N, A, 4)."""
        inputs = self.neck(maps)
        if self.map_norms is not None:
            inputs = [norm(x) for norm, x in zip(self.map_norms, inputs)]
        head = self.head(inputs)  # per map (N, A_l*(K+1), h, w) -> (N, sum h*w*A_l, K+1)
        return {"cls_logits": head["cls_logits"], "bbox_regression": head["bbox_regression"]}

    def _extra_outputs(self, x: torch.Tensor, maps: list[torch.Tensor], outputs: dict) -> dict:
        return {"feature_sizes": [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]}

    def _head_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        outputs: dict,
        anchors: list[torch.Tensor],
        matched: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy with 3:1 hard negatives (``loss_cls``), smooth L1 (``loss_box``)."""
        # label 0 is background in the head: shift the 0-based labels by one
        shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        return tv_ssd.SSD.compute_loss(self, shifted, outputs, anchors, matched)

    def _assignment_summary(self, outputs: dict, matched: list[torch.Tensor]) -> dict:
        """Positives / negatives (none ignored) and ``hard_negatives``: the negatives the loss
        keeps, min(3 x positives, negatives), per image."""
        stats = assignment_counts(matched)
        kept = [
            min(self.neg_to_pos_ratio * int((m >= 0).sum()), int((m < 0).sum())) for m in matched
        ]
        stats["hard_negatives"] = sum(kept) / max(len(kept), 1)
        return stats

    def _class_scores(self, outputs: dict) -> torch.Tensor:
        """Softmax scores without the background column: (N, A, K + 1) -> (N, A, K), 0-based."""
        return F.softmax(outputs["cls_logits"], dim=-1)[..., 1:]

    def _decode_regression(self, regression: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """``BoxCoder((10, 10, 5, 5))`` deltas (M, 4) of default boxes (M, 4) -> xyxy (M, 4)."""
        return self.box_coder.decode_single(regression, anchors)


def build_ssd(
    num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs: object
) -> SSD:
    """SSD on ``build_hourglass(backbone)``; ``kwargs`` override :class:`SSDConfig` fields."""
    config = preset_config(SSD_PRESETS, preset, kwargs)
    return SSD(num_classes, build_hourglass(backbone), config)
