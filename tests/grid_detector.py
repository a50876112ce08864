"""A tiny dummy detector for the harness tests (``bench run`` end to end, reliability cases).

Class logits on a stride-8 grid; each cell proposes a 16 px and a 32 px box, so random
weights give image-dependent detections (a wrong image changes AP). ``tag`` counts forward
calls in :data:`CALLS`, ``fail`` makes the forward raise, ``batch_norm`` adds a BatchNorm
to the stem (buffers a checkpoint can corrupt). Imported by test modules as
``from grid_detector import ...`` (tests/conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

import collections
import math

import torch
from torch import nn

from detectors.base import Detections, Detector, check_images

CALLS: collections.Counter = collections.Counter()  # forward calls per builder tag
SIZES = (16.0, 32.0)  # box sides the dummy proposes at every cell


class GridDetector(Detector):
    """Class logits on a stride-8 grid; each cell proposes a 16 px and a 32 px box."""

    name = "grid"

    def __init__(
        self, num_classes: int, tag: str = "grid", fail: type | None = None,
        batch_norm: bool = False, **kwargs,
    ) -> None:  # fmt: skip
        stem = nn.Conv2d(3, 4, 3, stride=8, padding=1)
        super().__init__(
            num_classes, nn.Sequential(stem, nn.BatchNorm2d(4)) if batch_norm else stem
        )
        self.head = nn.Conv2d(4, num_classes * len(SIZES), 1)
        self.tag, self.fail, self.kwargs = tag, fail, kwargs

    def forward(self, images: torch.Tensor) -> dict:
        check_images(images)
        CALLS[self.tag] += 1
        if self.fail is not None:
            raise self.fail(f"{self.tag}: simulated crash")
        return {"logits": self.head(self.backbone(images))}  # (N, K*2, H/8, W/8)

    def loss(self, outputs: dict, targets: list) -> dict:
        loss = outputs["logits"].float().sigmoid().mean()
        return {"loss": loss, "loss_mean": loss.detach()}

    def decode(self, outputs: dict, image_sizes: list) -> list[Detections]:
        logits = outputs["logits"]
        n, c, h, w = logits.shape
        k = c // len(SIZES)
        # (N, 2*K, h, w) -> (N, h*w*2, K)
        probs = logits.sigmoid().view(n, len(SIZES), k, h, w).permute(0, 3, 4, 1, 2)
        probs = probs.reshape(n, -1, k)
        dev = logits.device
        ys, xs, ss = torch.meshgrid(
            torch.arange(float(h), device=dev),
            torch.arange(float(w), device=dev),
            torch.tensor(SIZES, device=dev),
            indexing="ij",
        )
        cx, cy, half = (xs.flatten() + 0.5) * 8, (ys.flatten() + 0.5) * 8, ss.flatten() / 2
        boxes = torch.stack([cx - half, cy - half, cx + half, cy + half], 1)
        out = []
        for i, (ih, iw) in enumerate(image_sizes):
            scores, labels = probs[i].max(1)
            keep = scores.argsort(descending=True)[: self.max_detections]
            b = boxes[keep].clone()
            b[:, 0::2] = b[:, 0::2].clamp(0, iw)
            b[:, 1::2] = b[:, 1::2].clamp(0, ih)
            out.append(Detections(b, scores[keep], labels[keep]))
        return out

    def anchors_per_image(self, height: int, width: int) -> int:
        return len(SIZES) * math.ceil(height / 8) * math.ceil(width / 8)

    def assignment_stats(self, outputs: dict, targets: list) -> dict:
        pos = sum(len(t["boxes"]) for t in targets) / len(targets)
        total = self.anchors_per_image(*outputs["logits"].shape[-2:]) * 64
        return {"positives": pos, "negatives": total - pos, "ignored": 0.0}


def grid(tag: str, fail: type | None = None, batch_norm: bool = False):
    """A registry-style builder of :class:`GridDetector`."""

    def build(num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs):
        return GridDetector(num_classes, tag, fail, batch_norm, **kwargs)

    return build
