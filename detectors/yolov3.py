"""YOLOv3 (Redmon and Farhadi, "YOLOv3: An Incremental Improvement", arXiv 1804.02767, 2018).

Maps: the hourglass's s8, s16 and s32 maps (its decoder path already merges coarse into fine
features, the role of YOLOv3's upsample-and-concatenate routes). Head per map: 1x1
conv-BN-LeakyReLU(0.1) to C, 3x3 conv-BN-LeakyReLU to 2C, and a 1x1 conv to A * (5 + K)
outputs ``(tx, ty, tw, th, objectness, K class logits)``, A = 3 priors per location.

Priors: (w, h) pairs per map, placed at every cell by :class:`PriorBoxGenerator`, a
torchvision ``AnchorGenerator`` whose cell anchors are the given pairs instead of
sizes x ratios. torchvision centres anchors on the cell's top-left corner (c_x, c_y) * s,
which is YOLO's parametrisation: ``b_x = (c_x + sigmoid(t_x)) * s``, ``b_w = p_w exp(t_w)``.

Assignment (YOLOv3 section 2.1): each ground-truth box goes to the one prior of the nine with
the best shape IoU (boxes aligned at their centres), at the cell holding its centre on that
prior's map (a later box wins a slot two boxes claim; empty boxes are dropped). Every other
prior whose *predicted* box overlaps some ground truth with IoU > 0.5 is ignored (no
objectness loss); the rest are negatives. Losses, summed and divided by the batch size:
squared error on (sigmoid(t_xy), t_wh) against the targets, weighted by 2 - w h / (W H) as
darknet does (``loss_box``), binary cross-entropy on objectness (``loss_obj``) and on each
class (``loss_cls``).

Input: padded at the bottom/right to a multiple of 32 (torchvision's convention; further for
the hourglass, e.g. 128 at hg104, with the extra cells cropped off): 416 x 416 gives 52, 26, 13
cells and 3 x (52^2 + 26^2 + 13^2) = 10,647 priors with the paper's nine COCO priors.

Outputs of :meth:`YOLOv3.forward`: ``preds`` (N, A, 5 + K) raw, ``anchors`` (A, 4) xyxy priors
centred at the cells' top-left corners, ``strides`` (A,), ``num_anchors_per_level``,
``feature_sizes`` [(h, w)] per map and ``input_size`` (the padded (H, W)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import box_iou

from detectors.anchors import AnchorBasedDetector
from detectors.backbones import build_hourglass
from detectors.presets import AnchorFields, preset_config
from detectors.pyramid import crop_map, pad_for_backbone

__all__ = [
    "COCO_PRIORS",
    "YOLOV3_PRESETS",
    "YOLOv3",
    "YOLOv3Config",
    "PriorBoxGenerator",
    "build_yolov3",
    "scale_priors",
]

LEVELS = ("s8", "s16", "s32")
Priors = tuple[tuple[tuple[float, float], ...], ...]

#: the nine COCO priors (w, h) at a 416 input, three per map s8, s16, s32 (YOLOv3 paper)
COCO_PRIORS: Priors = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)


def scale_priors(priors: Priors, factor: float) -> Priors:
    """Every (w, h) multiplied by ``factor``."""
    return tuple(tuple((w * factor, h * factor) for w, h in level) for level in priors)


@dataclass(frozen=True)
class YOLOv3Config(AnchorFields):
    """YOLOv3 hyper-parameters; defaults are the paper's / darknet's."""

    ANCHOR_FIELDS: ClassVar[tuple[str, ...]] = ("priors",)

    # (w, h) priors in input pixels per map s8, s16, s32 (paper: COCO k-means at 416)
    priors: Priors = COCO_PRIORS
    # a non-assigned prior whose prediction has IoU > 0.5 with a box is ignored (paper 2.1)
    ignore_thresh: float = 0.5
    # decoding: objectness x class > 0.005, top 1000 per map, NMS 0.45 (darknet's COCO eval)
    score_thresh: float = 0.005
    topk_candidates: int = 1000
    nms_thresh: float = 0.45
    # objectness bias at init: logit(0.01), so that the many negatives start near p = 0.01
    obj_bias: float = -4.595


YOLOV3_PRESETS: dict[str, YOLOv3Config] = {
    "paper": YOLOv3Config(),
    # fitted: `python -m bench anchors --fit` on the default training split (data/synthetic,
    # difficulty standard, 3000 images, 9618 boxes of 13-87 px, w/h 0.35-2.86 at the 1st/99th
    # percentiles), 2026-12-02; see reports/anchors-fit/fit.md. k-means (1 - IoU).
    "synthetic": YOLOv3Config(
        priors=(
            ((22.4, 13.0), (13.4, 22.4), (36.5, 21.0)),
            ((21.1, 37.8), (56.8, 31.0), (32.8, 55.6)),
            ((78.9, 45.2), (45.1, 80.0), (80.4, 79.7)),
        )
    ),
    # the hand-chosen priors before the fit: the COCO priors scaled from 416 to 128 px images
    "synthetic-hand": YOLOv3Config(priors=scale_priors(COCO_PRIORS, 128 / 416)),
}


class PriorBoxGenerator(AnchorGenerator):
    """``AnchorGenerator`` with explicit (w, h) priors per level (len(level) per location).

    ``forward(image_list, feature_maps)`` is torchvision's: per image (A, 4) xyxy anchors,
    each prior centred at a cell's top-left corner (x * stride, y * stride).
    """

    def __init__(self, priors: Sequence[Sequence[tuple[float, float]]]) -> None:
        if not priors or any(not level for level in priors):
            raise ValueError(f"priors={priors!r}: expected one or more (w, h) pairs per level")
        if any(w <= 0 or h <= 0 for level in priors for w, h in level):
            raise ValueError(f"priors={priors!r}: expected positive widths and heights")
        sizes = tuple(tuple((w * h) ** 0.5 for w, h in level) for level in priors)
        super().__init__(sizes, ((1.0,),) * len(priors))
        self.cell_anchors = [
            torch.tensor([[-w / 2, -h / 2, w / 2, h / 2] for w, h in level], device="cpu")
            for level in priors
        ]


def _conv_bn_leaky(in_dim: int, out_dim: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(out_dim),
        nn.LeakyReLU(0.1, inplace=True),
    )


class YOLOv3(AnchorBasedDetector):
    """YOLOv3 heads on the hourglass's s8/s16/s32 maps (see the module docstring)."""

    name = "yolov3"
    BATCH_KEY = "preds"
    float32_priors = True

    def __init__(
        self, num_classes: int, backbone: nn.Module, config: YOLOv3Config | None = None
    ) -> None:
        super().__init__(num_classes, backbone)
        cfg = config or YOLOv3Config()
        if len(cfg.priors) != len(LEVELS):
            raise ValueError(f"priors has {len(cfg.priors)} levels: expected 3 (s8, s16, s32)")
        self.config = cfg
        self.anchor_generator = PriorBoxGenerator(cfg.priors)
        per_location = self.anchor_generator.num_anchors_per_location()
        self.heads = nn.ModuleList()
        for name, a in zip(LEVELS, per_location):
            c = backbone.out_channels[name]
            out = nn.Conv2d(2 * c, a * (5 + num_classes), 1)
            with torch.no_grad():
                out.bias.view(a, 5 + num_classes)[:, 4].fill_(cfg.obj_bias)
            self.heads.append(
                nn.Sequential(_conv_bn_leaky(c, c, 1), _conv_bn_leaky(c, 2 * c, 3), out)
            )
        # prior (w, h) of the nine, in level order, for the shape-IoU assignment: (P, 2)
        self.register_buffer(
            "prior_wh",
            torch.tensor([wh for level in cfg.priors for wh in level], device="cpu").float(),
            persistent=False,
        )

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(h, w) of the s8, s16, s32 maps for a padded (height, width) input."""
        return [(height // int(n[1:]), width // int(n[1:])) for n in LEVELS]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Padded (N, 3, H, W) -> the s8, s16, s32 maps, the hourglass's padding cropped off."""
        size = (int(x.shape[-2]), int(x.shape[-1]))
        features = self.backbone.forward_features(pad_for_backbone(x, self.backbone))
        return [crop_map(features[n], int(n[1:]), size) for n in LEVELS]

    def _head_outputs(self, maps: list[torch.Tensor]) -> dict:
        """Maps -> ``preds`` (N, A, 5 + K): (tx, ty, tw, th, objectness, K class logits)."""
        preds = []
        for head, m in zip(self.heads, maps):
            p = head(m)  # (N, A*(5+K), H, W) -> (N, H*W*A, 5+K), the anchors' order
            n, _, h, w = p.shape
            preds.append(p.view(n, -1, 5 + self.num_classes, h, w).permute(0, 3, 4, 1, 2))
        preds = torch.cat([p.reshape(p.shape[0], -1, 5 + self.num_classes) for p in preds], 1)
        return {"preds": preds}

    def _extra_outputs(self, x: torch.Tensor, maps: list[torch.Tensor], outputs: dict) -> dict:
        """``strides`` (A,) of every prior, ``feature_sizes`` and ``input_size`` (padded)."""
        anchors, counts = outputs["anchors"], outputs["num_anchors_per_level"]
        return {
            "strides": torch.cat(
                [anchors.new_full((c,), float(n[1:])) for c, n in zip(counts, LEVELS)]
            ),
            "feature_sizes": [(int(m.shape[-2]), int(m.shape[-1])) for m in maps],
            "input_size": (int(x.shape[-2]), int(x.shape[-1])),
        }

    @staticmethod
    def decode_boxes(
        preds: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor
    ) -> torch.Tensor:
        """(..., A, >= 4) raw t, (A, 4) priors, (A,) strides -> (..., A, 4) xyxy boxes."""
        corner = anchors[:, :2] + anchors[:, 2:]  # 2 x prior centre = 2 x cell corner
        xy = corner / 2 + preds[..., :2].sigmoid() * strides[:, None]
        wh = (anchors[:, 2:] - anchors[:, :2]) * preds[..., 2:4].clamp(max=10.0).exp()
        return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)

    def _assign(self, outputs: dict, targets: list[dict[str, torch.Tensor]]):
        """Per image: assigned prior ids (M',), their boxes (M', 4) and labels, the ignore mask."""
        return self._assign_prepared(outputs, self._prepare_targets(outputs, targets))

    def _assign_prepared(self, outputs: dict, targets: list[dict[str, torch.Tensor]]):
        """:meth:`_assign` of targets already on the priors' device and dtype."""
        preds, anchors = outputs["preds"], outputs["anchors"]
        per_location = self.anchor_generator.num_anchors_per_location()
        starts = torch.tensor([0, *outputs["num_anchors_per_level"]]).cumsum(0).tolist()
        first = torch.tensor([0, *per_location]).cumsum(0).tolist()  # level's first prior
        level_of = [lvl for lvl, a in enumerate(per_location) for _ in range(a)]
        pred_boxes = self.decode_boxes(preds.detach(), anchors, outputs["strides"])
        out = []
        for t, boxes_pred in zip(targets, pred_boxes):
            valid = (t["boxes"][:, 2:] > t["boxes"][:, :2]).all(1)  # drop empty boxes
            boxes, labels = t["boxes"][valid], t["labels"][valid]
            wh = boxes[:, 2:] - boxes[:, :2]  # (M, 2)
            prior_wh = self.prior_wh.to(wh)  # (P, 2)
            inter = torch.minimum(wh[:, None], prior_wh[None]).prod(-1)  # (M, P)
            shape_iou = inter / (wh.prod(-1)[:, None] + prior_wh.prod(-1)[None] - inter)
            centre = ((boxes[:, :2] + boxes[:, 2:]) / 2).tolist()
            slot_of: dict[int, int] = {}  # slot -> box; a later box takes a claimed slot
            for m, p in enumerate(shape_iou.argmax(1).tolist()):
                lvl = level_of[p]
                s = int(LEVELS[lvl][1:])
                h, w = outputs["feature_sizes"][lvl]
                cx = min(max(int(centre[m][0] // s), 0), w - 1)
                cy = min(max(int(centre[m][1] // s), 0), h - 1)
                slot = starts[lvl] + (cy * w + cx) * per_location[lvl] + p - first[lvl]
                slot_of[slot] = m
            slots = torch.tensor(list(slot_of), dtype=torch.int64, device=preds.device)
            keep = torch.tensor(list(slot_of.values()), dtype=torch.int64, device=preds.device)
            ignore = torch.zeros(preds.shape[1], dtype=torch.bool, device=preds.device)
            if boxes.numel():
                ignore = box_iou(boxes_pred, boxes).amax(1) > self.config.ignore_thresh
            ignore[slots] = False
            out.append((slots, boxes[keep], labels[keep], ignore))
        return out

    def loss(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """``loss_box`` (squared error), ``loss_obj`` and ``loss_cls`` (BCE), each / batch."""
        preds, anchors, strides = outputs["preds"], outputs["anchors"], outputs["strides"]
        batch = preds.shape[0]
        image_area = float(outputs["input_size"][0] * outputs["input_size"][1])
        zero = preds.sum() * 0.0
        loss_box, loss_obj, loss_cls = zero, zero, zero
        for i, (slots, boxes, labels, ignore) in enumerate(self._assign(outputs, targets)):
            obj_target = torch.zeros_like(preds[i, :, 4])
            obj_target[slots] = 1.0
            obj_loss = F.binary_cross_entropy_with_logits(
                preds[i, :, 4], obj_target, reduction="none"
            )
            loss_obj = loss_obj + obj_loss[~ignore].sum()
            if slots.numel() == 0:
                continue
            p, a, s = preds[i, slots], anchors[slots], strides[slots]
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            corner = (a[:, :2] + a[:, 2:]) / 2
            wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
            t_xy = ((centre - corner) / s[:, None]).clamp(0.0, 1.0)
            t_wh = torch.log(wh / (a[:, 2:] - a[:, :2]))
            scale = 2.0 - wh.prod(-1) / image_area  # darknet: small boxes weigh more
            err = (p[:, :2].sigmoid() - t_xy).pow(2).sum(-1) + (p[:, 2:4] - t_wh).pow(2).sum(-1)
            loss_box = loss_box + (scale * err).sum()
            cls_target = F.one_hot(labels, self.num_classes).to(p.dtype)
            loss_cls = loss_cls + F.binary_cross_entropy_with_logits(
                p[:, 5:], cls_target, reduction="sum"
            )
        parts = {"loss_box": loss_box / batch, "loss_obj": loss_obj / batch}
        parts["loss_cls"] = loss_cls / batch
        parts["loss"] = parts["loss_box"] + parts["loss_obj"] + parts["loss_cls"]
        return parts

    def _match_priors(
        self, outputs: dict, priors: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Per image (A,) int64: 0 for an assigned prior, -2 ignored (a prediction with IoU >
        ``ignore_thresh``), -1 negative (the rest); for :meth:`assignment_stats`."""
        matched = []
        for slots, _, _, ignore in self._assign_prepared(outputs, targets):
            m = torch.full_like(ignore, Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64)
            m[ignore] = Matcher.BETWEEN_THRESHOLDS
            m[slots] = 0
            matched.append(m)
        return matched

    def _class_scores(self, outputs: dict) -> torch.Tensor:
        """Objectness x class, both sigmoid: (N, A, K)."""
        preds = outputs["preds"]
        return preds[..., 4:5].sigmoid() * preds[..., 5:].sigmoid()

    def _box_regression(self, outputs: dict) -> torch.Tensor:
        """The boxes (N, A, 4) xyxy, decoded here: decoding needs each prior's stride."""
        return self.decode_boxes(outputs["preds"], outputs["anchors"], outputs["strides"])

    def _decode_regression(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """The identity: :meth:`_box_regression` has decoded the boxes."""
        return boxes


def build_yolov3(
    num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs: object
) -> YOLOv3:
    """YOLOv3 on ``build_hourglass(backbone)``; ``kwargs`` override :class:`YOLOv3Config`."""
    config = preset_config(YOLOV3_PRESETS, preset, kwargs)
    return YOLOv3(num_classes, build_hourglass(backbone), config)
