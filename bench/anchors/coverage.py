"""Anchor coverage: the share of ground-truth boxes some anchor of a detector overlaps well.

CornerNet's paper argues that anchor boxes must be sized by hand to the data set, and that a
detector whose anchors miss an object's size or shape can hardly learn it. Coverage measures
that directly, without any training: for every box, the best IoU over the detector's own
anchors (its generator at the real network input, exactly the anchors ``forward`` places:
:meth:`detectors.anchors.AnchorBasedDetector.anchor_grid`), and the share of boxes whose
best IoU reaches 0.5 (RetinaNet's, SSD's and the box head's positive threshold) and 0.7 (the
RPN's). The IoU is positional: anchors stay where the generator puts them. (YOLOv3 assigns
boxes by the IoU of shapes aligned at the centre, so its coverage here is the same strict,
positional notion as every other detector's, not the one its loss uses.)

- ``SIZE_BUCKETS``: box size sqrt(w h) in input pixels: < 12, 12-24, 24-48, >= 48.
- ``load_boxes(root, split, input_size)`` -> per image (M, 4) xyxy boxes of a COCO-format split,
  letterboxed into the network input as :class:`bench.data.transforms.Letterbox` does.
- ``best_anchor_iou(anchors, boxes)`` -> (best IoU (M,), index of that anchor (M,)).
- ``coverage_of(best_iou, sizes)`` -> the coverage dict from best IoUs and box sizes.
- ``anchor_coverage(detector, boxes_list, image_size)`` -> ``{"coverage50", "coverage70",
  "mean_best_iou", "boxes", "by_size": {bucket: {"coverage50", "coverage70", "boxes"}}}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import box_iou

from bench.data.coco import find_split, load_coco_json

__all__ = [
    "SIZE_BUCKETS",
    "THRESHOLDS",
    "anchor_coverage",
    "best_anchor_iou",
    "box_sizes",
    "coverage_of",
    "load_boxes",
]

#: (name, lower bound, upper bound) of box size sqrt(w h) in input pixels (issue 10)
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<12", 0.0, 12.0),
    ("12-24", 12.0, 24.0),
    ("24-48", 24.0, 48.0),
    (">48", 48.0, math.inf),
)
#: coverage keys and IoU thresholds: 0.5 (RetinaNet / SSD positives), 0.7 (RPN positives)
THRESHOLDS: tuple[tuple[str, float], ...] = (("coverage50", 0.5), ("coverage70", 0.7))
#: boxes per block of the IoU matrix (256 x 4k anchors: 4 MB in float32, twice as fast on a
#: CPU as blocks of 4096, measured)
_BLOCK = 256


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"image_size={size!r}: expected an int or (H, W) of positive ints")
    return int(h), int(w)


def load_boxes(root: str | Path, split: str, input_size: int | Sequence[int]) -> list[torch.Tensor]:
    """Per image of ``split`` under ``root`` (COCO layout), its boxes (M, 4) xyxy float32.

    Boxes are mapped into the (H, W) network input as ``Letterbox`` maps them (uniform scale
    min(H/h, W/w), centred padding); crowd boxes and boxes of zero width or height are left out.
    UsageError (from :func:`bench.data.coco.find_split`) when the split is missing.
    """

    out_h, out_w = _size_pair(input_size)
    data = load_coco_json(find_split(root, split)[1])
    per_image: dict[int, list[list[float]]] = {im["id"]: [] for im in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w > 0 and h > 0 and not ann.get("iscrowd", 0):
            per_image[ann["image_id"]].append([x, y, x + w, y + h])
    boxes = []
    for im in data["images"]:
        h, w = im["height"], im["width"]
        # the geometry of bench.data.transforms.Letterbox, applied to boxes only
        s = min(out_h / h, out_w / w)
        new_h, new_w = max(1, min(out_h, round(h * s))), max(1, min(out_w, round(w * s)))
        sx, sy = new_w / w, new_h / h
        px, py = (out_w - new_w) // 2, (out_h - new_h) // 2
        b = torch.tensor(per_image[im["id"]], dtype=torch.float32).reshape(-1, 4)
        boxes.append(b * torch.tensor([sx, sy, sx, sy]) + torch.tensor([px, py, px, py]))
    return boxes


def box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """(M, 4) xyxy -> (M,) sqrt(w h)."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return wh.prod(-1).sqrt()


def best_anchor_iou(
    anchors: torch.Tensor, boxes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, 4) anchors, (M, 4) boxes, both xyxy -> best IoU (M,) and its anchor's index (M,).

    Computed in blocks of boxes, so any number of boxes fits in memory.
    """
    anchors = anchors.float()
    boxes = boxes.to(anchors).reshape(-1, 4)
    if boxes.shape[0] == 0 or anchors.shape[0] == 0:
        m = boxes.shape[0]
        return boxes.new_zeros(m), torch.zeros(m, dtype=torch.int64, device=boxes.device)
    values, indices = [], []
    for block in boxes.split(_BLOCK):
        best = box_iou(block, anchors).max(dim=1)  # (b, A) -> (b,)
        values.append(best.values)
        indices.append(best.indices)
    return torch.cat(values), torch.cat(indices)


def coverage_of(best_iou: torch.Tensor, sizes: torch.Tensor) -> dict[str, Any]:
    """Coverage from each box's best anchor IoU (M,) and size sqrt(w h) (M,).

    Shares are of the boxes in each group; ``None`` for a group without boxes.
    """

    def shares(mask: torch.Tensor) -> dict[str, Any]:
        n = int(mask.sum())
        out: dict[str, Any] = {"boxes": n}
        for key, t in THRESHOLDS:
            out[key] = float((best_iou[mask] >= t).float().mean()) if n else None
        return out

    everything = torch.ones_like(best_iou, dtype=torch.bool)
    result = shares(everything)
    result["mean_best_iou"] = float(best_iou.mean()) if best_iou.numel() else None
    result["by_size"] = {
        name: shares((sizes >= lo) & (sizes < hi)) for name, lo, hi in SIZE_BUCKETS
    }
    return result


def anchor_coverage(
    detector: Any, boxes_list: Sequence[torch.Tensor], image_size: int | Sequence[int]
) -> dict[str, Any]:
    """Coverage of ``boxes_list`` (per image (M, 4) xyxy in input pixels) by ``detector``.

    ``detector`` is a built anchor-based detector (with ``anchor_grid``); its anchors are those
    it places on an ``image_size`` (int or (H, W)) input. Returns ``coverage50`` and
    ``coverage70`` (shares of boxes whose best anchor has IoU >= 0.5 / 0.7), ``mean_best_iou``,
    ``boxes`` and ``by_size`` (the same per :data:`SIZE_BUCKETS` bucket). ValueError for a
    detector without anchors.
    """
    if not hasattr(detector, "anchor_grid"):
        raise ValueError(f"{type(detector).__name__} has no anchors (no anchor_grid method)")
    anchors, _ = detector.anchor_grid(*_size_pair(image_size))
    boxes = [b.detach().to("cpu", torch.float32).reshape(-1, 4) for b in boxes_list]
    boxes = torch.cat(boxes) if boxes else torch.zeros(0, 4)
    best, _ = best_anchor_iou(anchors, boxes)
    return coverage_of(best, box_sizes(boxes))
