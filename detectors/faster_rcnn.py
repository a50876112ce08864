"""Faster R-CNN with FPN (Ren et al. 2015; Lin et al. 2017) on the hourglass, two-stage.

Neck: an FPN over the hourglass's s4/s8/s16/s32 maps (P2-P5) plus P6 = stride-2 subsampling of
P5 (the FPN paper's RPN level), all ``fpn_channels`` wide. Stage one: torchvision's ``RPNHead``
and ``RegionProposalNetwork`` (3 anchors per location on P2-P6, ``Matcher(0.7, 0.3)``, 256
sampled anchors per image, half positive, per-level top-k and NMS 0.7). Stage two: torchvision's
``MultiScaleRoIAlign`` (7x7 from P2-P5), ``TwoMLPHead``, ``FastRCNNPredictor`` and ``RoIHeads``
(``Matcher(0.5, 0.5)``, sampled proposals a quarter positive; softmax over K + 1
classes with 0 = background; class-wise NMS 0.5). Anchors counted: the RPN's.

``forward(images)`` needs no targets and returns the same outputs in training and evaluation:
the box head runs on every proposal the RPN keeps (``post_nms_top_n`` of the current mode),
which :meth:`FasterRCNN.decode` uses. In training mode that pass runs without gradients (an
extra forward-only cost torchvision does not have): as in torchvision, the second-stage loss
appends the ground-truth boxes to the proposals, samples ``box_batch_size_per_image`` of them
per image (512 in the paper preset, 128 in the synthetic one) and runs RoIAlign and the box
head on those, in :meth:`FasterRCNN.loss` because the sampling needs the targets; so
back-propagation costs what torchvision's does.

Outputs of :meth:`FasterRCNN.forward` for images (N, 3, H, W) padded to (H', W') with A anchors:
``objectness`` (N, A) logits, ``rpn_deltas`` (N, A, 4), ``anchors`` (A, 4),
``num_anchors_per_level`` (5 ints), ``proposals`` (list of N tensors (P_i, 4)),
``class_logits`` (sum P_i, K + 1), ``box_regression`` (sum P_i, 4 (K + 1)), ``features``
(the pyramid, ordered ``{"p2": (N, C, H'/4, W'/4), ..., "p6": ...}``), ``image_size`` (H', W').
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.ops import MultiScaleRoIAlign

from detectors.anchors import AnchorBasedDetector
from detectors.backbones import build_hourglass
from detectors.base import Detections, check_image_sizes, check_images
from detectors.dense import assignment_counts, generate_anchors
from detectors.presets import AnchorFields, preset_config
from detectors.pyramid import PyramidNeck, pad_images

__all__ = ["FASTER_RCNN_PRESETS", "FasterRCNN", "FasterRCNNConfig", "build_faster_rcnn"]


@dataclass(frozen=True)
class FasterRCNNConfig(AnchorFields):
    """Faster R-CNN (FPN) hyper-parameters; defaults are the FPN paper's / torchvision's."""

    ANCHOR_FIELDS: ClassVar[tuple[str, ...]] = ("anchor_sizes", "aspect_ratios")

    # one size per level P2..P6 (FPN paper: 32^2..512^2 areas), 3 ratios each
    anchor_sizes: tuple[tuple[float, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # RPN: IoU >= 0.7 positive, < 0.3 negative; 256 anchors sampled per image, 1:1
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    # proposals kept before / after NMS 0.7, per level before and per image after (torchvision)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    # box head: IoU >= 0.5 foreground; 512 RoIs per image, 25% foreground (Fast R-CNN)
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    # decoding: score > 0.05, class-wise NMS 0.5 (torchvision)
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    # RoIAlign 7x7 with 2x2 samples per bin (Mask R-CNN / torchvision)
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    # FPN width; None: the backbone's cnv_dim (256 at hg104, as in the FPN paper)
    fpn_channels: int | None = None
    # MLP width; None: 4 x fpn width (1024 at 256, the FPN paper's 2fc head)
    representation_size: int | None = None


_SYNTHETIC = FasterRCNNConfig(
    # fitted: `python -m bench anchors --fit` on the default training split (data/synthetic,
    # difficulty standard, 3000 images, 9618 boxes of 13-87 px, w/h 0.35-2.86 at the 1st/99th
    # percentiles), 2026-12-02; see reports/anchors-fit/fit.md. Boxes choose P2-P5 (35, 32, 26,
    # 7%); P6 keeps 4 x its stride.
    anchor_sizes=((17.5,), (31.8,), (54.6,), (80.4,), (256.0,)),
    aspect_ratios=(0.49, 1.0, 2.06),
    # fewer proposals for the few objects of an image, 128 sampled RoIs per image, not 512
    rpn_pre_nms_top_n_train=1000,
    rpn_pre_nms_top_n_test=500,
    rpn_post_nms_top_n_train=500,
    rpn_post_nms_top_n_test=300,
    box_batch_size_per_image=128,
)
FASTER_RCNN_PRESETS: dict[str, FasterRCNNConfig] = {
    "paper": FasterRCNNConfig(),
    "synthetic": _SYNTHETIC,
    # the hand-chosen anchors before the fit, for objects ~6 px to most of a 128 px image
    # with ratios 1:5..5:1: sizes twice the stride (8 on P2 .. 128 on P6), ratios 1:3, 1:1, 3:1
    "synthetic-hand": replace(
        _SYNTHETIC,
        anchor_sizes=((8,), (16,), (32,), (64,), (128,)),
        aspect_ratios=(1 / 3, 1.0, 3.0),
    ),
}


class FasterRCNN(AnchorBasedDetector):
    """Two-stage Faster R-CNN (FPN) on a shared backbone with s4..s32 feature maps.

    ``forward``, ``loss`` and ``decode`` are its own (two stages); target checks, matching and
    ``assignment_stats`` are :class:`~detectors.dense.DenseDetector`'s, on the RPN's anchors
    with the RPN's matcher.

    Args:
        num_classes: K, foreground classes (0-based labels; shifted by one internally).
        backbone: the shared hourglass (``out_channels`` by map name, ``cnv_dim``).
        config: hyper-parameters (:data:`FASTER_RCNN_PRESETS`).
    """

    name = "faster_rcnn"
    BATCH_KEY = "objectness"

    def __init__(
        self, num_classes: int, backbone: nn.Module, config: FasterRCNNConfig | None = None
    ) -> None:
        super().__init__(num_classes, backbone)
        cfg = config or FasterRCNNConfig()
        if len(cfg.anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes has {len(cfg.anchor_sizes)} levels: expected 5 (P2-P6)")
        self.config = cfg
        channels = cfg.fpn_channels or backbone.cnv_dim
        rep = cfg.representation_size or 4 * channels
        self.neck = PyramidNeck(
            backbone.out_channels, ("s4", "s8", "s16", "s32"), channels, "maxpool"
        )
        anchor_generator = AnchorGenerator(
            cfg.anchor_sizes, (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes)
        )
        per_location = anchor_generator.num_anchors_per_location()
        if len(set(per_location)) != 1:
            raise ValueError(f"anchors per location differ between levels: {per_location}")
        self.rpn = RegionProposalNetwork(
            anchor_generator,
            RPNHead(channels, per_location[0]),
            cfg.rpn_fg_iou_thresh,
            cfg.rpn_bg_iou_thresh,
            cfg.rpn_batch_size_per_image,
            cfg.rpn_positive_fraction,
            {"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
            {"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
            cfg.rpn_nms_thresh,
        )
        size = cfg.roi_output_size
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(list(self.neck.names[:4]), size, cfg.roi_sampling_ratio),
            TwoMLPHead(channels * size * size, rep),
            FastRCNNPredictor(rep, num_classes + 1),
            cfg.box_fg_iou_thresh,
            cfg.box_bg_iou_thresh,
            cfg.box_batch_size_per_image,
            cfg.box_positive_fraction,
            None,  # box coder weights (10, 10, 5, 5), torchvision's default
            cfg.box_score_thresh,
            cfg.box_nms_thresh,
            self.max_detections,
        )

    @property
    def anchor_generator(self) -> AnchorGenerator:  # type: ignore[override]
        """The RPN's anchor generator (the anchors this detector counts)."""
        return self.rpn.anchor_generator

    @property
    def matcher(self) -> Matcher:
        """The RPN's matcher (the assignment this detector reports)."""
        return self.rpn.proposal_matcher

    def forward(self, images: torch.Tensor) -> dict:
        """(N, 3, H, W) -> raw outputs of both stages (see the module docstring)."""
        x = pad_images(check_images(images))
        n = x.shape[0]
        image_size = (int(x.shape[-2]), int(x.shape[-1]))
        pyramid = self.neck(self.backbone.forward_features(x))
        levels = list(pyramid.values())
        objectness, deltas = self.rpn.head(levels)  # per level (N, A_l, H, W), (N, 4 A_l, H, W)
        num_per_level = [int(o[0].numel()) for o in objectness]
        anchors = generate_anchors(self.rpn.anchor_generator, x[:1], levels)[0]
        # per level -> (N * A, 1) and (N * A, 4), image-major, levels concatenated per image
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        # Faster R-CNN does not back-propagate through the proposals
        proposals = self.rpn.box_coder.decode(deltas.detach(), [anchors] * n).view(n, -1, 4)
        boxes, _ = self.rpn.filter_proposals(proposals, objectness, [image_size] * n, num_per_level)
        roi = self.roi_heads
        # the loss re-runs the box head on its own samples; these are for decode only
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.training):
            box_features = roi.box_head(roi.box_roi_pool(pyramid, boxes, [image_size] * n))
            class_logits, box_regression = roi.box_predictor(box_features)
        return {
            "objectness": objectness.view(n, -1),
            "rpn_deltas": deltas.view(n, -1, 4),
            "anchors": anchors,
            "num_anchors_per_level": num_per_level,
            "proposals": boxes,
            "class_logits": class_logits,
            "box_regression": box_regression,
            "features": pyramid,
            "image_size": image_size,
        }

    def loss(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """RPN objectness (BCE) and box (smooth L1) losses on 256 sampled anchors per image;
        box-head classification (cross-entropy) and box (smooth L1) losses on RoIs sampled
        among the RPN's proposals and the ground truth (the box head runs here). Keys
        ``loss_rpn_cls``, ``loss_rpn_box``, ``loss_cls``, ``loss_box`` and their sum ``loss``."""
        targets = self._prepare_targets(outputs, targets)
        n = len(targets)
        anchors = [outputs["anchors"]] * n
        labels, matched_boxes = self.rpn.assign_targets_to_anchors(anchors, targets)
        rpn_targets = self.rpn.box_coder.encode(matched_boxes, anchors)
        loss_rpn_cls, loss_rpn_box = self.rpn.compute_loss(
            outputs["objectness"].reshape(-1, 1),
            outputs["rpn_deltas"].reshape(-1, 4),
            labels,
            rpn_targets,
        )
        # second stage, as torchvision trains it: ground truth appended to the proposals,
        # labels shifted by one (0 = background), 512 sampled per image, then RoIAlign + head
        roi = self.roi_heads
        shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        rois, _, roi_labels, roi_targets = roi.select_training_samples(
            list(outputs["proposals"]), shifted
        )
        features = roi.box_head(
            roi.box_roi_pool(outputs["features"], rois, [outputs["image_size"]] * n)
        )
        class_logits, box_regression = roi.box_predictor(features)
        loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, roi_labels, roi_targets)
        return {
            "loss_rpn_cls": loss_rpn_cls,
            "loss_rpn_box": loss_rpn_box,
            "loss_cls": loss_cls,
            "loss_box": loss_box,
            "loss": loss_rpn_cls + loss_rpn_box + loss_cls + loss_box,
        }

    def decode(self, outputs: dict, image_sizes: list[tuple[int, int]]) -> list[Detections]:
        """Softmax scores per class, per-class box decoding, clipping, class-wise NMS."""
        proposals = outputs["proposals"]
        sizes = check_image_sizes(image_sizes, len(proposals))
        boxes, scores, labels = self.roi_heads.postprocess_detections(
            outputs["class_logits"], outputs["box_regression"], proposals, sizes
        )
        return [Detections(b, s, lab - 1) for b, s, lab in zip(boxes, scores, labels)]

    def _assignment_summary(self, outputs: dict, matched: list[torch.Tensor]) -> dict:
        """Per-image means over the RPN's anchors under its 0.7/0.3 matcher (before sampling),
        plus ``proposals``: the mean number of proposals the box head saw."""
        stats = assignment_counts(matched)
        stats["proposals"] = sum(p.shape[0] for p in outputs["proposals"]) / len(matched)
        return stats


def build_faster_rcnn(
    num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs: object
) -> FasterRCNN:
    """Faster R-CNN on ``build_hourglass(backbone)``; ``kwargs`` override the config fields."""
    config = preset_config(FASTER_RCNN_PRESETS, preset, kwargs)
    return FasterRCNN(num_classes, build_hourglass(backbone), config)
