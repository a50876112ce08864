"""CornerNet's detection selection runs batched soft-NMS with the per-class loop's results."""

from __future__ import annotations

import pytest
import torch

from detectors.cornernet.inference import CornerNetTestConfig, select_detections
from kernels.soft_nms import soft_nms_per_class


def _rows(n: int, classes: int, seed: int) -> torch.Tensor:
    """(n, 8) decoded rows in pixels: boxes, score (some -1: rejected), tl, br scores, class."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 100
    wh = torch.rand(n, 2, generator=gen) * 40 + 2
    scores = torch.rand(n, generator=gen)
    scores[torch.rand(n, generator=gen) < 0.2] = -1.0
    labels = torch.randint(0, classes, (n,), generator=gen).float()
    return torch.cat([xy, xy + wh, scores[:, None], scores[:, None], scores[:, None],
                      labels[:, None]], 1)  # fmt: skip


@pytest.mark.parametrize("nms", ["gaussian", "linear", "hard"])
def test_select_detections_equals_the_per_class_loop(nms: str) -> None:
    rows = _rows(400, 9, seed=3)
    cfg = CornerNetTestConfig(nms=nms, max_per_image=100)
    got = select_detections(rows, cfg)
    valid = rows[rows[:, 4] > -1]
    keep, scores = soft_nms_per_class(
        valid[:, :4], valid[:, 4], valid[:, 7].long(), method=nms, backend="torch"
    )
    top = torch.sort(scores, descending=True, stable=True).indices[:100]
    assert torch.equal(got.boxes, valid[keep][top, :4])
    assert torch.equal(got.scores, scores[top])
    assert torch.equal(got.labels, valid[keep][top, 7].long())
