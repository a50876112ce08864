"""What anchor-based detectors (RetinaNet, Faster R-CNN, SSD, DSSD, YOLOv3) add to a dense one.

- :func:`match_anchors`: a torchvision ``Matcher`` over IoU(gt, anchors) per image.
- :class:`AnchorBasedDetector`: a :class:`~detectors.dense.DenseDetector` whose priors are
  anchor boxes from ``self.anchor_generator``, matched by ``self.matcher``; it reports
  ``anchors_per_image`` and ``anchor_grid`` (the anchors, without the network).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from detectors.dense import DenseDetector, anchor_boxes
from detectors.pyramid import padded_size

__all__ = ["AnchorBasedDetector", "match_anchors"]


def match_anchors(
    matcher: Matcher,
    anchors: Sequence[torch.Tensor],
    targets: Sequence[dict[str, torch.Tensor]],
) -> list[torch.Tensor]:
    """Per image, the matcher's assignment of each anchor (A,) int64.

    A gt index (>= 0), ``Matcher.BELOW_LOW_THRESHOLD`` (-1, negative) or
    ``Matcher.BETWEEN_THRESHOLDS`` (-2, ignored). Images without boxes: all negative.
    """
    matched = []
    for anchors_i, target in zip(anchors, targets):
        boxes = target["boxes"].to(anchors_i)
        if boxes.numel() == 0:
            matched.append(
                torch.full(
                    (anchors_i.shape[0],),
                    Matcher.BELOW_LOW_THRESHOLD,
                    dtype=torch.int64,
                    device=anchors_i.device,
                )
            )
        else:
            matched.append(matcher(box_iou(boxes, anchors_i)))
    return matched


class AnchorBasedDetector(DenseDetector):
    """A dense detector with an ``anchor_generator`` and a ``matcher``.

    Subclasses set ``self.anchor_generator`` (``AnchorGenerator`` or ``DefaultBoxGenerator``),
    ``self.matcher`` (unless they override :meth:`_match_priors`) and either ``self.neck`` (a
    :class:`~detectors.pyramid.PyramidNeck`) or their own :meth:`feature_sizes`.
    """

    @property
    def prior_generator(self) -> nn.Module:
        """The anchor generator."""
        return self.anchor_generator

    def _match_priors(
        self, outputs: dict, priors: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """``self.matcher`` over IoU(gt, anchors) per image (:func:`match_anchors`)."""
        return match_anchors(self.matcher, priors, targets)

    def anchors_per_image(self, height: int, width: int) -> int:
        """Anchors on an input of (height, width) after padding to ``size_divisor``."""
        return self._count_priors(height, width)

    def anchor_grid(self, height: int, width: int) -> tuple[torch.Tensor, list[int]]:
        """The anchors ``forward`` places on an (height, width) input, without the network.

        Returns (A, 4) xyxy float32 anchors on the CPU in input pixels (after the detector's
        padding), finest level first, and the number of anchors on each level (summing to A).
        """
        h, w = padded_size(height, width, self.size_divisor)
        sizes = self.feature_sizes(h, w)
        with torch.device("cpu"):  # placeholders on the CPU, whatever device the model is on
            anchors = anchor_boxes(self.anchor_generator, (h, w), sizes)
        per_location = self.anchor_generator.num_anchors_per_location()
        return anchors.float(), [fh * fw * a for (fh, fw), a in zip(sizes, per_location)]
