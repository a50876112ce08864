"""Forward + decode as one module with static shapes, for ``torch.export`` / ``torch.compile``.

:class:`StaticInference` wraps a detector that has ``decode_padded`` (CenterNet, CornerNet):
``forward(images)`` (N, 3, H, W) -> boxes (N, M, 4), scores (N, M), labels (N, M) int64 and
count (N,) int64, padded to M detections per image (slots >= count are padding). The image
size is fixed at construction: every image of the batch is the input size, as in the
harness. The kernels enter the graph as the opaque ops of :mod:`kernels.ops`; there is no
host synchronisation between them in the traced code. What each op does inside (soft-NMS is
data-dependent) is documented there.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EXPORTABLE", "StaticInference"]

#: registry names of the detectors with ``decode_padded``
EXPORTABLE = ("centernet", "cornernet")


class StaticInference(nn.Module):
    """``detector.decode_padded(detector(images), [image_size] * N)`` as a module."""

    def __init__(self, detector: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__()
        if not hasattr(detector, "decode_padded"):
            raise ValueError(
                f"{type(detector).__name__} has no decode_padded: exportable detectors are "
                f"{', '.join(EXPORTABLE)}"
            )
        self.detector = detector
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def forward(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.detector(images)
        return self.detector.decode_padded(outputs, [self.image_size] * images.shape[0])
