"""Dense detectors: a prediction at every prior (anchor box or point) of every feature level.

RetinaNet, SSD (and DSSD), YOLOv3 and FCOS run the same stages; :class:`DenseDetector` writes
them once, with hooks for what differs (as detectron2's ``DenseDetector``):

- ``forward``: pad the images, :meth:`~DenseDetector.feature_maps`, the head's outputs, the
  priors placed on those maps by ``prior_generator`` and their count per level.
- ``loss`` and ``assignment_stats`` both start from :meth:`~DenseDetector._match`: targets
  checked and moved to the priors' device, then each prior's assignment (a box index, -1
  negative, -2 ignored) from the detector's own matcher.
- ``decode``: per-prior class scores and box regression into :func:`decode_dense`, with the
  config's ``score_thresh``, ``topk_candidates`` and ``nms_thresh``.

Helpers:

- :func:`generate_anchors` / :func:`float32_anchors` / :func:`anchor_boxes` /
  :func:`count_anchors`: a torchvision ``AnchorGenerator`` or ``DefaultBoxGenerator`` run on
  the maps (or on empty placeholders of their sizes): the priors of one image, or their number.
- :func:`assignment_counts`: per-image means of positives (index >= 0), negatives
  (``Matcher.BELOW_LOW_THRESHOLD``) and ignored priors (``Matcher.BETWEEN_THRESHOLDS``).
- :func:`decode_dense`: per-level top-k of per-prior class probabilities, box decoding,
  clipping and ``batched_nms`` (the post-processing of torchvision's RetinaNet/FCOS, written
  once here so that each stage can be called and timed separately).
- :func:`head_norm_groups` / :func:`kaiming_init_towers`: the head-tower settings RetinaNet
  and FCOS need on the narrow tiny backbone.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, clip_boxes_to_image

from detectors.base import (
    Detections,
    Detector,
    check_image_sizes,
    check_images,
    check_targets,
    targets_to,
)
from detectors.pyramid import SIZE_DIVISOR, pad_images, padded_size

__all__ = [
    "DenseDetector",
    "anchor_boxes",
    "assignment_counts",
    "count_anchors",
    "decode_dense",
    "float32_anchors",
    "generate_anchors",
    "head_norm_groups",
    "kaiming_init_towers",
]


def head_norm_groups(channels: int, min_group_channels: int = 8) -> int:
    """GroupNorm groups for the head: 32 (paper), fewer when channels / 32 < min_group_channels.

    torchvision's ``GroupNorm(32, C)`` was made for C = 256 (8 channels per group). With the
    tiny backbone's C = 32 it puts one channel in each group, and on a 1x1 level (P7 of a
    128 px input) each group then holds one value: normalised, it is 0 whatever the image
    (torch raises for a batch of one; larger batches silently lose the level). Keeping groups
    of ``min_group_channels`` channels makes a 1x1 level normalise that many values.
    """
    return max(1, min(32, channels // min_group_channels))


def kaiming_init_towers(*towers: nn.Module) -> None:
    """Re-initialise every ``Conv2d`` in ``towers`` Kaiming-normal (fan-in, ReLU), bias 0.

    Deviation from torchvision, which initialises RetinaNet's and FCOS's head towers with
    ``normal(std=0.01)``, a scale chosen for 256-channel heads: at C channels a 3x3 conv
    then multiplies the signal's standard deviation by about 0.01 * sqrt(9 C / 2), 0.12 at
    the tiny backbone's C = 32, so RetinaNet's four unnormalised convs shrink it ~5,000x and
    the head starts blind (it could not memorise 32 images: training AP50 0.45, 0.945 with
    this init). Under GroupNorm (FCOS) the forward is scale-free but Adam's fixed step on
    weights of norm ~0.01 is a ~70x larger effective learning rate. Only the towers change:
    the final predictors keep torchvision's init and prior bias. See docs/training-notes.md.
    """
    for tower in towers:
        for module in tower.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def generate_anchors(
    generator: nn.Module, images: torch.Tensor, feature_maps: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Run an anchor generator: per image, anchors (A, 4) xyxy over all levels, finest first."""
    image_sizes = [(int(images.shape[-2]), int(images.shape[-1]))] * int(images.shape[0])
    return generator(ImageList(images, image_sizes), list(feature_maps))


def float32_anchors(
    generator: nn.Module, images: torch.Tensor, maps: Sequence[torch.Tensor]
) -> torch.Tensor:
    """(A, 4) float32 anchors of ``generator`` for ``images`` (N, C, H, W) and its ``maps``.

    The generator runs on empty float32 placeholders of the same sizes, so that anchors keep
    full precision when the network runs in half precision.
    """
    device = maps[0].device
    image = torch.empty(1, 0, *images.shape[-2:], device=device)
    placeholders = [torch.empty(1, 0, *m.shape[-2:], device=device) for m in maps]
    return generate_anchors(generator, image, placeholders)[0]


def anchor_boxes(
    generator: nn.Module, image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """(A, 4) xyxy anchors ``generator`` places on one (H, W) input with levels ``feature_sizes``
    (finest first): the generator runs on zero-channel placeholders on the default device."""
    h, w = image_size
    images = torch.empty(1, 0, h, w)
    maps = [torch.empty(1, 0, fh, fw) for fh, fw in feature_sizes]
    return generate_anchors(generator, images, maps)[0]


def count_anchors(
    generator: nn.Module, image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]
) -> int:
    """Anchors ``generator`` places on one (H, W) input whose levels have ``feature_sizes``:
    counted on :func:`anchor_boxes`, so it follows the generator rather than a formula."""
    return int(anchor_boxes(generator, image_size, feature_sizes).shape[0])


def assignment_counts(matched_idxs: Sequence[torch.Tensor]) -> dict[str, float]:
    """Per-image means of ``positives``, ``negatives`` and ``ignored`` in matcher outputs."""
    n = max(len(matched_idxs), 1)
    pos = sum(int((m >= 0).sum()) for m in matched_idxs)
    neg = sum(int((m == Matcher.BELOW_LOW_THRESHOLD).sum()) for m in matched_idxs)
    ign = sum(int((m == Matcher.BETWEEN_THRESHOLDS).sum()) for m in matched_idxs)
    return {"positives": pos / n, "negatives": neg / n, "ignored": ign / n}


def decode_dense(
    scores: torch.Tensor,
    box_regression: torch.Tensor,
    anchors: Sequence[torch.Tensor],
    num_per_level: Sequence[int],
    image_sizes: Sequence[tuple[int, int]],
    decode_boxes: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.5,
    max_detections: int = 100,
) -> list[Detections]:
    """Dense per-anchor predictions -> per-image detections after class-wise NMS.

    Args:
        scores: (N, A, K) class probabilities (sigmoid, not softmax: no background column).
        box_regression: (N, A, 4) box deltas.
        anchors: N tensors (A, 4) xyxy.
        num_per_level: anchors of each level, summing to A (top-k is taken per level).
        image_sizes: (h, w) per image; boxes are clipped to it.
        decode_boxes: ``(deltas (M, 4), anchors (M, 4)) -> boxes (M, 4)``, e.g.
            ``BoxCoder.decode_single``.
    """
    if scores.dim() != 3 or box_regression.shape[:2] != scores.shape[:2]:
        raise ValueError(
            f"scores {tuple(scores.shape)} and box_regression {tuple(box_regression.shape)}: "
            "expected (N, A, K) and (N, A, 4)"
        )
    if sum(num_per_level) != scores.shape[1]:
        raise ValueError(f"num_per_level {list(num_per_level)} must sum to A={scores.shape[1]}")
    num_classes = scores.shape[2]
    results = []
    for i, (h, w) in enumerate(image_sizes):
        boxes_all, scores_all, labels_all = [], [], []
        for s_lvl, r_lvl, a_lvl in zip(
            scores[i].split(list(num_per_level)),
            box_regression[i].split(list(num_per_level)),
            anchors[i].split(list(num_per_level)),
        ):
            flat = s_lvl.flatten()  # (A_l, K) -> (A_l * K,)
            keep = torch.nonzero(flat > score_thresh).squeeze(1)
            top = flat[keep].topk(min(topk_candidates, keep.numel()))
            idx = keep[top.indices]
            anchor_idx = torch.div(idx, num_classes, rounding_mode="floor")
            boxes = decode_boxes(r_lvl[anchor_idx], a_lvl[anchor_idx])
            boxes_all.append(clip_boxes_to_image(boxes.reshape(-1, 4), (h, w)))
            scores_all.append(top.values)
            labels_all.append(idx % num_classes)
        boxes_i = torch.cat(boxes_all)
        scores_i = torch.cat(scores_all)
        labels_i = torch.cat(labels_all)
        keep = batched_nms(boxes_i, scores_i, labels_i, nms_thresh)[:max_detections]
        results.append(Detections(boxes_i[keep], scores_i[keep], labels_i[keep]))
    return results


class DenseDetector(Detector):
    """The stages of a dense detector, with hooks (see the module docstring).

    Subclasses provide ``prior_generator`` (the torchvision generator placing the priors),
    ``config`` (with ``score_thresh``, ``topk_candidates``, ``nms_thresh``), either
    ``self.neck`` (a :class:`~detectors.pyramid.PyramidNeck`) and ``self.head`` or their own
    :meth:`feature_maps` / :meth:`feature_sizes` / :meth:`_head_outputs`, and the hooks
    :meth:`_match_priors`, :meth:`_head_loss`, :meth:`_class_scores`, :meth:`_decode_regression`.
    """

    #: output keys: the priors (A, 4) xyxy, their number per level, a head output (N, A, ...)
    PRIORS_KEY: ClassVar[str] = "anchors"
    COUNTS_KEY: ClassVar[str] = "num_anchors_per_level"
    BATCH_KEY: ClassVar[str] = "cls_logits"
    #: loss keys and the parts of torchvision's ``compute_loss`` they are, in summation order
    LOSS_PARTS: ClassVar[dict[str, str]] = {
        "loss_cls": "classification",
        "loss_box": "bbox_regression",
    }
    #: inputs are zero-padded to a multiple of this before the backbone (1: no padding)
    size_divisor: int = SIZE_DIVISOR
    #: place the priors in float32 whatever the maps' dtype (else in the maps' dtype)
    float32_priors: bool = False

    @property
    def prior_generator(self) -> nn.Module:
        """The generator placing the priors (an ``AnchorGenerator`` or ``DefaultBoxGenerator``)."""
        raise NotImplementedError  # pragma: no cover - abstract

    # ---- forward -------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict:
        """(N, 3, H, W) -> the head's outputs, the priors and their count per level (and
        whatever :meth:`_extra_outputs` adds); see each detector's module docstring."""
        x = pad_images(check_images(images), self.size_divisor)
        maps = self.feature_maps(x)
        outputs = self._head_outputs(maps)
        if self.float32_priors:
            priors = float32_anchors(self.prior_generator, x, maps)
        else:
            priors = generate_anchors(self.prior_generator, x[:1], maps)[0]
        per_location = self.prior_generator.num_anchors_per_location()
        outputs[self.PRIORS_KEY] = priors
        outputs[self.COUNTS_KEY] = [
            int(m.shape[-2] * m.shape[-1]) * a for m, a in zip(maps, per_location)
        ]
        outputs.update(self._extra_outputs(x, maps, outputs))
        return outputs

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Padded (N, 3, H, W) -> the maps priors are placed on (default: the neck's levels)."""
        return list(self.neck(self.backbone.forward_features(x)).values())

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Size of each map :meth:`feature_maps` gives for a padded (height, width) input."""
        return self.neck.level_sizes(height, width)

    def _head_outputs(self, maps: list[torch.Tensor]) -> dict:
        """Maps -> head outputs, each (N, A, ...) over all levels (default: ``self.head``)."""
        return dict(self.head(maps))

    def _extra_outputs(self, x: torch.Tensor, maps: list[torch.Tensor], outputs: dict) -> dict:
        """Outputs beyond the head's and the priors (default: none)."""
        return {}

    def _count_priors(self, height: int, width: int) -> int:
        """Priors on an input of (height, width) after padding to ``size_divisor``."""
        h, w = padded_size(height, width, self.size_divisor)
        return count_anchors(self.prior_generator, (h, w), self.feature_sizes(h, w))

    # ---- matching, loss, assignment statistics -------------------------------------------
    def _prepare_targets(
        self, outputs: dict, targets: list[dict[str, torch.Tensor]]
    ) -> list[dict[str, torch.Tensor]]:
        """Targets checked against the batch and moved to the priors' device and dtype."""
        priors = outputs[self.PRIORS_KEY]
        checked = check_targets(targets, outputs[self.BATCH_KEY].shape[0], self.num_classes)
        return targets_to(checked, priors.device, priors.dtype)

    def _match(self, outputs: dict, targets: list[dict[str, torch.Tensor]]):
        """(prepared targets, the priors of each image, each prior's assignment per image)."""
        targets = self._prepare_targets(outputs, targets)
        priors = [outputs[self.PRIORS_KEY]] * len(targets)
        return targets, priors, self._match_priors(outputs, priors, targets)

    def _match_priors(
        self, outputs: dict, priors: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Per image (A,) int64: a box index, -1 (negative) or -2 (ignored)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def loss(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """The :attr:`LOSS_PARTS` of the head's loss and their sum ``loss``."""
        targets, priors, matched = self._match(outputs, targets)
        parts = self._head_loss(targets, outputs, priors, matched)
        losses = {key: parts[part] for key, part in self.LOSS_PARTS.items()}
        losses["loss"] = functools.reduce(operator.add, losses.values())
        return losses

    def _head_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        outputs: dict,
        priors: list[torch.Tensor],
        matched: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """torchvision's ``compute_loss`` parts (``classification``, ``bbox_regression``...)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def assignment_stats(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """Per-image means of positive, negative and ignored priors under the detector's own
        matcher, plus what :meth:`_assignment_summary` adds."""
        with torch.no_grad():
            matched = self._match(outputs, targets)[2]
            return self._assignment_summary(outputs, matched)

    def _assignment_summary(self, outputs: dict, matched: list[torch.Tensor]) -> dict:
        """Matched indices per image -> statistics (default: :func:`assignment_counts`)."""
        return assignment_counts(matched)

    # ---- decoding ------------------------------------------------------------------------
    def decode(self, outputs: dict, image_sizes: list[tuple[int, int]]) -> list[Detections]:
        """Per-prior class scores, top-k per level, box decoding, clipping to each image and
        class-wise NMS (:func:`decode_dense` with the config's thresholds)."""
        sizes = check_image_sizes(image_sizes, outputs[self.BATCH_KEY].shape[0])
        cfg = self.config
        return decode_dense(
            self._class_scores(outputs),
            self._box_regression(outputs),
            [outputs[self.PRIORS_KEY]] * len(sizes),
            outputs[self.COUNTS_KEY],
            sizes,
            self._decode_regression,
            score_thresh=cfg.score_thresh,
            topk_candidates=cfg.topk_candidates,
            nms_thresh=cfg.nms_thresh,
            max_detections=self.max_detections,
        )

    def _class_scores(self, outputs: dict) -> torch.Tensor:
        """(N, A, K) class probabilities, 0-based labels (no background column)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _box_regression(self, outputs: dict) -> torch.Tensor:
        """(N, A, 4) what :meth:`_decode_regression` turns into boxes."""
        return outputs["bbox_regression"]

    def _decode_regression(self, regression: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """(M, 4) regression of (M, 4) priors -> (M, 4) xyxy boxes."""
        raise NotImplementedError  # pragma: no cover - abstract
