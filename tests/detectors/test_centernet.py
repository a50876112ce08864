"""CenterNet specifics: the radius forms, centre targets, the loss at a perfect prediction and
decoding through kernels.heatmap. Shared behaviour is in test_registry.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from detectors.centernet import build_centernet, build_centernet_targets, centernet_radius
from detectors.cornernet.targets import gaussian_radius

K = 3
BOX = [9.0, 13.0, 42.0, 38.0]  # centre (25.5, 25.5) px -> (6.375, 6.375) cells at stride 4


def test_release_radius_is_the_earlier_larger_form() -> None:
    # 20 x 20 cells at IoU 0.7; smallest root, case 3: a = 2.8, b = -28 * 2, c = -0.3 * 400:
    # (-56 + sqrt(56^2 + 4 * 2.8 * 120)) / 2 = (-56 + sqrt(4480)) / 2
    assert centernet_radius((20, 20), 0.7) == pytest.approx((-56 + math.sqrt(4480)) / 2)
    for size in [(20, 20), (6, 30), (3, 4)]:
        assert centernet_radius(size, 0.7) > 2 * gaussian_radius(size, 0.7)
    with pytest.raises(ValueError, match="min_overlap"):
        centernet_radius((4, 4), 1.0)
    with pytest.raises(ValueError, match="radius_form"):
        build_centernet(K, radius_form="cornernet")


@pytest.mark.parametrize("form", ["release", "corrected"])
def test_targets_put_a_peak_at_the_centre_cell(form: str) -> None:
    targets = [{"boxes": torch.tensor([BOX]), "labels": torch.tensor([1])}]
    gt = build_centernet_targets(targets, K, (64, 64), (16, 16), 0.7, form)
    heat = gt["heat"][0]
    assert heat[1, 6, 6] == 1 and int(heat.eq(1).sum()) == 1
    assert heat[0].sum() == 0 and heat[2].sum() == 0
    assert gt["ind"][0, 0] == 6 * 16 + 6 and gt["mask"].tolist() == [[True]]
    assert_close(gt["reg"][0, 0], torch.tensor([0.375, 0.375]))
    assert_close(gt["wh"][0, 0], torch.tensor([33 / 4, 25 / 4]))
    # the bump reaches exactly r cells: r from the chosen form on (ceil(h), ceil(w)) cells
    fn = centernet_radius if form == "release" else gaussian_radius
    r = int(fn((7, 9), 0.7))
    assert heat[1, 6, 6 + r] > 0 and heat[1, 6, 7 + r] == 0


def test_padding_and_empty_images() -> None:
    model = build_centernet(K).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 60, 60))  # padded to 64 for the hourglass, cropped back
    assert out["heat"].shape == (2, K, 15, 15) and out["wh"].shape == (2, 2, 15, 15)
    assert model.anchors_per_image(60, 60) == model.anchors_per_image(512, 512) == 0
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = model.loss(out, empty)
    assert float(losses["loss_size"]) == float(losses["loss_offset"]) == 0
    assert math.isfinite(float(losses["loss_heat"]))


def perfect_outputs(model, targets: list[dict], size: int = 64, logit: float = 20.0) -> dict:
    """Outputs equal to the targets: a +logit peak per object, -logit elsewhere."""
    with torch.no_grad():
        out = model.eval()(torch.zeros(len(targets), 3, size, size))
    gt = model.targets(out, targets)
    heat = torch.where(gt["heat"] == 1, logit, -logit)
    wh, reg = torch.zeros_like(out["wh"]), torch.zeros_like(out["reg"])
    n, _, h, w = wh.shape
    for i in range(n):
        for k in gt["mask"][i].nonzero().squeeze(1).tolist():
            y, x = divmod(int(gt["ind"][i, k]), w)
            wh[i, :, y, x], reg[i, :, y, x] = gt["wh"][i, k], gt["reg"][i, k]
    return {**out, "heat": heat, "wh": wh, "reg": reg}


def test_perfect_predictions_cost_nothing_and_decode_to_the_boxes() -> None:
    model = build_centernet(K)
    targets = [
        {"boxes": torch.tensor([BOX, [40.0, 2.0, 62.0, 20.0]]), "labels": torch.tensor([1, 0])},
        {"boxes": torch.tensor([[0.0, 30.0, 30.0, 64.0]]), "labels": torch.tensor([2])},
    ]
    out = perfect_outputs(model, targets)
    losses = model.loss(out, targets)
    assert all(float(v) < 1e-4 for v in losses.values()), losses
    assert float(losses["loss"]) == pytest.approx(
        float(losses["loss_heat"] + losses["loss_size"] + losses["loss_offset"])
    )
    dets = model.decode(out, [(64, 64)] * 2)
    for d, t in zip(dets, targets):
        m = len(t["labels"])
        assert len(d) == model.max_detections  # no box NMS: 100 peaks (the plateau survives)
        order = d.labels[:m].argsort()
        assert_close(d.boxes[:m][order], t["boxes"][t["labels"].argsort()], atol=1e-4, rtol=0)
        assert_close(d.scores[:m], torch.full((m,), torch.sigmoid(torch.tensor(20.0)).item()))
    stats = model.assignment_stats(out, targets)
    assert stats["positives"] == 1.5 and stats["candidates"] == 1.5 and stats["ignored"] == 0
    assert stats["negatives"] == K * 16 * 16 - 1.5


def test_size_and_offset_weights() -> None:
    model = build_centernet(K, size_weight=0.5, offset_weight=2.0)
    targets = [{"boxes": torch.tensor([BOX]), "labels": torch.tensor([1])}]
    out = perfect_outputs(model, targets)
    out["wh"] = out["wh"] + 1.0  # |error| 1 on both wh values
    out["reg"] = out["reg"] - 0.25  # |error| 0.25 on both offsets
    losses = model.loss(out, targets)
    assert float(losses["loss_size"]) == pytest.approx(0.5 * 1.0, rel=1e-3)
    assert float(losses["loss_offset"]) == pytest.approx(2.0 * 0.25, rel=1e-3)
