"""The one interface every detector in cornerbench provides.

So that the harness can time each stage alone and count anchors honestly, a detector is an
``nn.Module`` with

- ``forward(images) -> dict`` of raw outputs, the same type in training and eval mode;
  images are (N, 3, H, W) float, already resized/letterboxed and normalised by the harness.
- ``loss(outputs, targets) -> dict`` with ``loss`` (the total to back-propagate) and its parts
  ``loss_<part>``; ``targets`` is a list of N dicts with ``boxes`` (M, 4) float xyxy in input
  pixels and ``labels`` (M,) int64 in 0..num_classes-1 (contiguous; a detector that reserves
  0 for background shifts them itself).
- ``decode(outputs, image_sizes) -> list[Detections]``: per image, boxes xyxy in input pixels,
  scores and labels (0-based), after the detector's own NMS, at most ``max_detections``.
- ``anchors_per_image(height, width) -> int``: from the model's own anchor generator at run
  time, for an input of that size (0 for anchor-free detectors).
- ``assignment_stats(outputs, targets) -> dict``: per image means of what the detector's own
  matcher assigns (``positives``, ``negatives``, ``ignored`` for anchor-based models;
  ``candidates`` and ``pairs`` for keypoint models), reported beside AP.

``backbone`` is the shared :class:`~detectors.backbones.HourglassBackbone`; everything else
(necks, extra levels, heads) is the detector's and counts in :meth:`head_parameters`.

Input checks every detector shares: :func:`check_images`, :func:`check_targets` (and
:func:`targets_to`, their copy on a device and dtype), :func:`check_image_sizes`. The stages
of dense detectors are in :mod:`detectors.dense`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "float32_outputs",
    "Detections",
    "Detector",
    "check_image_sizes",
    "check_images",
    "check_targets",
    "targets_to",
]


@dataclass
class Detections:
    """One image's detections: boxes (M, 4) xyxy, scores (M,), labels (M,) int64 (0-based)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device: torch.device | str) -> Detections:
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device))


class Detector(nn.Module):
    """Base class: holds ``num_classes`` and ``backbone``; subclasses implement the stages."""

    #: registry name, set by subclasses
    name: str = "detector"
    #: detections kept per image after NMS (COCO evaluates at most 100)
    max_detections: int = 100

    def __init__(self, num_classes: int, backbone: nn.Module) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        raise NotImplementedError  # pragma: no cover - abstract

    def decode(self, outputs: dict, image_sizes: list[tuple[int, int]]) -> list[Detections]:
        raise NotImplementedError  # pragma: no cover - abstract

    def anchors_per_image(self, height: int, width: int) -> int:
        """Anchors the model places on an input of (height, width); 0 when anchor-free."""
        return 0

    def assignment_stats(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """Per-image means of the matcher's assignment (see the module docstring)."""
        return {}

    def backbone_parameters(self) -> int:
        return sum(p.numel() for p in self.backbone.parameters())

    def head_parameters(self) -> int:
        """Everything that is not the shared backbone: necks, extra levels, heads."""
        return sum(p.numel() for p in self.parameters()) - self.backbone_parameters()


def float32_outputs(obj: Any) -> Any:
    """Floating tensors in nested dicts/lists/tuples -> float32 (decoding runs in float32)."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, Mapping):
        return {k: float32_outputs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(float32_outputs(v) for v in obj)
    return obj


def check_images(images: object, name: str = "images") -> torch.Tensor:
    """Validate a batch of images: a float tensor (N, 3, H, W); ValueError naming the shape."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a tensor (N, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {images.dtype}")
    return images


def check_targets(targets: object, batch: int, num_classes: int) -> list[dict[str, torch.Tensor]]:
    """Validate targets: a list of ``batch`` dicts with boxes (M, 4) and labels (M,) in range."""
    if not isinstance(targets, (list, tuple)) or len(targets) != batch:
        raise ValueError(f"targets must be a list of {batch} dicts (one per image)")
    for i, t in enumerate(targets):
        boxes, labels = t.get("boxes"), t.get("labels")
        if boxes is None or labels is None:
            raise ValueError(f"targets[{i}] must have 'boxes' and 'labels', got {sorted(t)}")
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"targets[{i}]: boxes must be (M, 4) and labels (M,), "
                f"got {tuple(boxes.shape)} and {tuple(labels.shape)}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"targets[{i}]: labels must lie in 0..{num_classes - 1}, "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
    return list(targets)


def targets_to(
    targets: Sequence[dict[str, torch.Tensor]], device: torch.device, dtype: torch.dtype
) -> list[dict[str, torch.Tensor]]:
    """Copies of ``targets`` with boxes (M, 4) as ``dtype`` and labels (M,) int64 on ``device``."""
    return [
        {
            "boxes": t["boxes"].to(device=device, dtype=dtype).reshape(-1, 4),
            "labels": t["labels"].to(device=device, dtype=torch.int64),
        }
        for t in targets
    ]


def check_image_sizes(image_sizes: object, batch: int) -> list[tuple[int, int]]:
    """Validate ``image_sizes``: ``batch`` pairs (h, w) of positive ints; ValueError otherwise."""
    sizes = list(image_sizes) if isinstance(image_sizes, (list, tuple)) else None
    if sizes is None or len(sizes) != batch:
        raise ValueError(f"image_sizes must be a list of {batch} (height, width) pairs")
    out = []
    for i, hw in enumerate(sizes):
        if len(hw) != 2 or any(int(v) < 1 for v in hw):
            raise ValueError(f"image_sizes[{i}]={hw!r}: expected (height, width) >= 1")
        out.append((int(hw[0]), int(hw[1])))
    return out
