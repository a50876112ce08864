"""YOLOv3 specifics: the nine COCO priors, their placement, best-prior assignment, the ignore
rule and the box parametrisation. Shared behaviour is in test_registry.py."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.image_list import ImageList

from detectors.dense import count_anchors
from detectors.yolov3 import COCO_PRIORS, PriorBoxGenerator, YOLOv3, build_yolov3

K = 3


@pytest.mark.parametrize("backbone", ["tiny", "hg104"])
def test_coco_priors_at_416(backbone: str) -> None:
    with torch.device("meta"):
        model = build_yolov3(80, backbone=backbone, preset="paper")
    assert model.anchors_per_image(416, 416) == 10_647  # 3 x (52^2 + 26^2 + 13^2)
    assert model.anchors_per_image(400, 400) == 10_647  # padded to 416
    assert model.config.priors == COCO_PRIORS


def test_hand_chosen_priors_are_the_coco_ones_scaled_to_128() -> None:
    model = build_yolov3(K, anchors="synthetic-hand")
    got = torch.tensor(model.config.priors).reshape(-1, 2)
    assert_close(got, torch.tensor(COCO_PRIORS, dtype=torch.float32).reshape(-1, 2) * 128 / 416)
    assert model.anchors_per_image(128, 128) == 3 * (16**2 + 8**2 + 4**2)


def test_prior_generator_places_each_prior_at_every_cell_corner() -> None:
    gen = PriorBoxGenerator((((2, 4), (6, 3)),))
    assert gen.num_anchors_per_location() == [2]
    assert count_anchors(gen, (16, 24), [(2, 3)]) == 12
    anchors = gen(ImageList(torch.zeros(1, 3, 16, 24), [(16, 24)]), [torch.zeros(1, 1, 2, 3)])[0]
    # location-major, prior-minor; cell (x=1, y=0) is centred at (8, 0)
    assert_close(anchors[:2], torch.tensor([[-1.0, -2, 1, 2], [-3, -1.5, 3, 1.5]]))
    assert_close(anchors[2:4], torch.tensor([[7.0, -2, 9, 2], [5, -1.5, 11, 1.5]]))
    with pytest.raises(ValueError, match="positive"):
        PriorBoxGenerator((((2, 0),),))


def forward(model: YOLOv3, n: int = 1) -> dict:
    with torch.no_grad():
        return model.eval()(torch.zeros(n, 3, 128, 128))


def test_each_box_goes_to_its_best_shaped_prior_at_its_centre_cell() -> None:
    model = build_yolov3(K)
    out = forward(model)
    # ~ the largest prior (114.8 x 100.3) -> s32, prior 2; a 4 x 5 box -> s8, prior 0
    boxes = torch.tensor([[10.0, 12.0, 126.0, 110.0], [40.0, 70.0, 44.0, 75.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])}]
    slots, got_boxes, labels, _ = model._assign(out, targets)[0]
    s8, s16 = 16 * 16 * 3, 8 * 8 * 3
    # centre (68, 61) -> s32 cell (2, 1) on a 4x4 grid; centre (42, 72.5) -> s8 cell (5, 9)
    assert slots.tolist() == [s8 + s16 + (1 * 4 + 2) * 3 + 2, (9 * 16 + 5) * 3 + 0]
    assert_close(got_boxes, boxes) and labels.tolist() == [1, 2]
    # two boxes claiming one slot: the later one keeps it
    twice = [{"boxes": boxes[:1].repeat(2, 1), "labels": torch.tensor([0, 1])}]
    slots, _, labels, _ = model._assign(out, twice)[0]
    assert slots.numel() == 1 and labels.tolist() == [1]
    # an empty box is dropped, not assigned
    empty = [{"boxes": torch.tensor([[5.0, 5.0, 5.0, 9.0]]), "labels": torch.tensor([0])}]
    assert model._assign(out, empty)[0][0].numel() == 0
    assert torch.isfinite(model.loss(out, empty)["loss"])


def perfect_preds(model: YOLOv3, out: dict, targets: list[dict], logit: float = 20.0):
    """Raw predictions whose decoded boxes, objectness and classes equal the targets."""
    preds = torch.zeros_like(out["preds"])
    preds[..., 4:] = -logit
    for i, (slots, boxes, labels, _) in enumerate(model._assign(out, targets)):
        a, s = out["anchors"][slots], out["strides"][slots]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        t_xy = (centre - (a[:, :2] + a[:, 2:]) / 2) / s[:, None]
        preds[i, slots, :2] = torch.logit(t_xy, eps=1e-6)  # t_xy may be 0 on a cell edge
        preds[i, slots, 2:4] = torch.log((boxes[:, 2:] - boxes[:, :2]) / (a[:, 2:] - a[:, :2]))
        preds[i, slots, 4] = logit
        preds[i, slots, 5 + labels] = logit
    return preds


def test_perfect_predictions_decode_to_the_boxes_at_no_cost() -> None:
    model = build_yolov3(K)
    out = forward(model, 2)
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 100.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[70.0, 20.0, 90.0, 34.0]]), "labels": torch.tensor([0])},
    ]
    out = {**out, "preds": perfect_preds(model, out, targets)}
    losses = model.loss(out, targets)
    assert all(float(v) < 1e-3 for v in losses.values()), losses
    for d, t in zip(model.decode(out, [(128, 128)] * 2), targets):
        assert d.labels[0] == t["labels"][0]
        assert_close(d.boxes[0], t["boxes"][0], atol=1e-3, rtol=0)


def test_priors_predicting_a_box_well_are_ignored() -> None:
    # the small hand-chosen priors: no untrained prediction overlaps the box by chance
    model = build_yolov3(K, anchors="synthetic-hand")
    out = forward(model)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 100.0]]), "labels": torch.tensor([1])}]
    preds = perfect_preds(model, out, targets)
    slot = int(model._assign(out, targets)[0][0])
    other = slot - 1 if slot % 3 else slot + 1  # the next prior at the same cell
    preds[0, other, :4] = preds[0, slot, :4]  # a mismatched shape, scaled to the same box
    a, b = out["anchors"][[slot, other]]
    preds[0, other, 2:4] += torch.log((a[2:] - a[:2]) / (b[2:] - b[:2]))
    out = {**out, "preds": preds}
    stats = model.assignment_stats(out, targets)
    assert stats == {"positives": 1, "ignored": 1, "negatives": out["preds"].shape[1] - 2}
    base = float(model.loss(out, targets)["loss_obj"])
    preds[0, other, 4] = 5.0  # an ignored prior's objectness costs nothing ...
    assert float(model.loss(out, targets)["loss_obj"]) == pytest.approx(base)
    preds[0, other + 3, 4] = 5.0  # ... a negative's does
    assert float(model.loss(out, targets)["loss_obj"]) > base + 4


def test_bad_priors_raise() -> None:
    with pytest.raises(ValueError, match="3 \\(s8, s16, s32\\)"):
        build_yolov3(K, priors=COCO_PRIORS[:2])
