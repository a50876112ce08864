"""Faster R-CNN (FPN): RPN anchors on P2-P6, proposals, the two-stage loss, label shift."""

from __future__ import annotations

import pytest
import torch

from detectors.backbones import build_hourglass
from detectors.faster_rcnn import FasterRCNN, build_faster_rcnn
from detectors.pyramid import PyramidNeck

K = 3


@pytest.fixture(scope="module")
def model() -> FasterRCNN:
    torch.manual_seed(0)
    return build_faster_rcnn(K).eval()


def _cells(height: int, width: int) -> int:
    """Locations on P2..P6 of a padded input: strides 4..32, then P6 by ceil-halving P5."""
    sizes = [(height // s, width // s) for s in (4, 8, 16, 32)]
    sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    return sum(h * w for h, w in sizes)


def test_rpn_anchor_counts() -> None:
    with torch.device("meta"):
        paper = build_faster_rcnn(80, preset="paper")
        assert paper.anchors_per_image(512, 512) == 3 * _cells(512, 512) == 65_472
        assert paper.anchors_per_image(800, 1333) == 3 * _cells(800, 1344)
    synthetic = build_faster_rcnn(K)
    assert synthetic.anchor_generator is synthetic.rpn.anchor_generator
    assert synthetic.anchor_generator.num_anchors_per_location() == [3] * 5
    assert synthetic.anchors_per_image(128, 128) == 3 * _cells(128, 128) == 4_092


def test_neck_has_p2_to_p6_matching_the_features() -> None:
    backbone = build_hourglass("tiny").eval()
    neck = PyramidNeck(backbone.out_channels, ("s4", "s8", "s16", "s32"), 16, "maxpool")
    assert neck.names == ("p2", "p3", "p4", "p5", "p6") and neck.strides == (4, 8, 16, 32, 64)
    with torch.no_grad():
        levels = neck(backbone.forward_features(torch.zeros(1, 3, 96, 64)))
    assert [tuple(f.shape[-2:]) for f in levels.values()] == neck.level_sizes(96, 64)


def test_forward_outputs_in_both_modes(model: FasterRCNN) -> None:
    images = torch.randn(2, 3, 64, 64)
    cfg = model.config
    for training, keep in (
        (False, cfg.rpn_post_nms_top_n_test),
        (True, cfg.rpn_post_nms_top_n_train),
    ):
        model.train(training)
        out = model(images)
        a = model.anchors_per_image(64, 64)
        assert out["objectness"].shape == (2, a) and out["rpn_deltas"].shape == (2, a, 4)
        assert out["anchors"].shape == (a, 4) and sum(out["num_anchors_per_level"]) == a
        counts = [p.shape[0] for p in out["proposals"]]
        assert 0 < max(counts) <= keep
        assert out["class_logits"].shape == (sum(counts), K + 1)
        assert out["box_regression"].shape == (sum(counts), 4 * (K + 1))
        assert list(out["features"]) == ["p2", "p3", "p4", "p5", "p6"]
        # RPN outputs carry gradients; the box head's are for decode only when training
        assert out["objectness"].requires_grad
        assert out["class_logits"].requires_grad is not training
    model.eval()


def test_loss_trains_both_stages_and_handles_empty_images() -> None:
    model = build_faster_rcnn(K)
    images = torch.randn(2, 3, 64, 64)
    targets = [
        {
            "boxes": torch.tensor([[4.0, 8, 40, 30], [30, 30, 60, 62]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model.loss(model(images), targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss"}
    losses["loss"].backward()
    for p in (model.rpn.head.cls_logits.weight, model.roi_heads.box_head.fc6.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    with torch.no_grad():
        empty = model.loss(model(images), [targets[1], targets[1]])
    assert float(empty["loss_rpn_box"]) == 0.0 and float(empty["loss_box"]) == 0.0
    assert float(empty["loss_cls"]) > 0.0


def _outputs(model: FasterRCNN, anchors: torch.Tensor, proposals: torch.Tensor) -> dict:
    return {
        "anchors": anchors,
        "objectness": torch.zeros(1, anchors.shape[0]),
        "proposals": [proposals],
        "class_logits": torch.full((proposals.shape[0], K + 1), -5.0),
        "box_regression": torch.zeros(proposals.shape[0], 4 * (K + 1)),
    }


def test_decode_shifts_labels_back_and_clips(model: FasterRCNN) -> None:
    proposals = torch.tensor([[10.0, 10, 30, 30], [40, 40, 50, 50]])
    out = _outputs(model, proposals, proposals)
    out["class_logits"][0, 3] = 5.0  # column 3 = label 2 (column 0 is background)
    out["class_logits"][1, 0] = 5.0  # background: not reported
    (det,) = model.decode(out, [(100, 100)])
    assert det.labels.tolist() == [2]
    assert det.boxes[0].tolist() == pytest.approx([10, 10, 30, 30])
    (clipped,) = model.decode(out, [(20, 25)])
    assert clipped.boxes[0].tolist() == pytest.approx([10, 10, 25, 20])


def test_rpn_matcher_thresholds(model: FasterRCNN) -> None:
    # IoU with the box: 1 (positive), 0.5 (ignored: in [0.3, 0.7)), 0.2 and 0 (negative)
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 2], [50, 50, 60, 60.0]])
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}]
    stats = model.assignment_stats(_outputs(model, anchors, anchors[:2]), targets)
    assert stats == {"positives": 1.0, "negatives": 2.0, "ignored": 1.0, "proposals": 2.0}


def test_config_overrides() -> None:
    model = build_faster_rcnn(K, rpn_post_nms_top_n_test=7, representation_size=16).eval()
    assert model.rpn.post_nms_top_n() == 7 and model.roi_heads.box_head.fc7.out_features == 16
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 128  # synthetic preset
    with pytest.raises(ValueError, match="unknown option.*bogus"):
        build_faster_rcnn(K, bogus=True)
