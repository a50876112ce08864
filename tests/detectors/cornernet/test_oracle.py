"""CornerNet's oracle analysis: ground truth in place of the predicted heads."""

from __future__ import annotations

import pytest
import torch

from detectors import build_detector
from detectors.cornernet.oracle import oracle_outputs

BOXES = [
    torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]]),
    torch.tensor([[10.0, 12.0, 22.0, 26.0]]),
]
LABELS = [torch.tensor([0, 2]), torch.tensor([1])]


@pytest.fixture(scope="module")
def decoded_by_oracle():
    torch.manual_seed(0)
    model = build_detector("cornernet", 3).eval()  # untrained: every head is wrong
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(BOXES, LABELS)]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
        t = model.targets(out, targets)

        def run(oracles):
            return model.decode(oracle_outputs(out, t, oracles), [(64, 64)] * 2)

        yield run, out


def _top(dets, k):
    return dets.boxes[:k], dets.labels[:k]


def test_all_three_oracles_give_back_the_ground_truth(decoded_by_oracle) -> None:
    run, _ = decoded_by_oracle
    for dets, boxes, labels in zip(run(["heatmaps", "offsets", "embeddings"]), BOXES, LABELS):
        top_boxes, top_labels = _top(dets, len(boxes))
        assert torch.allclose(top_boxes, boxes, atol=1e-4)
        assert torch.equal(top_labels, labels)
        assert dets.scores[: len(boxes)].min() > 0.99
        rest = dets.scores[len(boxes) :]
        assert rest.numel() == 0 or rest.max() < 0.01  # the rest: near-zero pairs


def test_heatmaps_alone_leave_the_offset_error(decoded_by_oracle) -> None:
    run, _ = decoded_by_oracle
    dets = run(["heatmaps"])[0]
    top_boxes, top_labels = _top(dets, 2)
    assert torch.equal(top_labels, LABELS[0])
    err = (top_boxes - BOXES[0]).abs()
    assert err.max() > 0.5 and err.max() < 4.0  # whole cells of stride 4, not sub-cell


def test_outputs_are_not_modified_and_names_are_checked(decoded_by_oracle) -> None:
    run, out = decoded_by_oracle
    before = {k: v.clone() for k, v in out["stacks"][-1].items()}
    run(["heatmaps", "offsets", "embeddings"])
    for k, v in out["stacks"][-1].items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="expected names from"):
        oracle_outputs(out, {"mask": torch.zeros(2, 1)}, ["corners"])
