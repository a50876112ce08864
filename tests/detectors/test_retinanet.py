"""RetinaNet: anchors (paper and synthetic presets), neck, matcher thresholds, loss, decoding."""

from __future__ import annotations

import math

import pytest
import torch

from detectors.backbones import build_hourglass
from detectors.pyramid import PyramidNeck, padded_size
from detectors.retinanet import RETINANET_PRESETS, RetinaNet, build_retinanet

K = 3


@pytest.fixture(scope="module")
def model() -> RetinaNet:
    torch.manual_seed(0)
    return build_retinanet(K).eval()


def _level_cells(height: int, width: int) -> int:
    """Locations on P3..P7 for a padded input: strides 8..128, P6/P7 by ceil-halving."""
    h, w = height // 8, width // 8
    cells = 0
    for _ in range(5):
        cells += h * w
        h, w = (h + 1) // 2, (w + 1) // 2
    return cells


def test_paper_preset_anchor_counts() -> None:
    with torch.device("meta"):
        paper = build_retinanet(80, preset="paper")
        assert paper.anchors_per_image(512, 512) == 49_104  # 9 x (64^2+32^2+16^2+8^2+4^2)
        # CornerNet's paper: RetinaNet sets "more than 100k" anchors at ~800 px inputs
        assert paper.anchors_per_image(800, 1333) == 9 * _level_cells(800, 1344) > 100_000
    sizes = paper.config.anchor_sizes
    assert [s[0] for s in sizes] == [32, 64, 128, 256, 512]
    assert sizes[0][2] == pytest.approx(32 * 2 ** (2 / 3))


@pytest.mark.parametrize("hw", [(128, 128), (100, 70), (64, 96)], ids=str)
def test_synthetic_preset_has_9_anchors_per_location(model: RetinaNet, hw) -> None:
    assert model.anchor_generator.num_anchors_per_location() == [9] * 5
    assert model.anchors_per_image(*hw) == 9 * _level_cells(*padded_size(*hw))


def test_neck_levels_match_the_features_and_p6_reads_c5() -> None:
    backbone = build_hourglass("tiny").eval()
    neck = PyramidNeck(backbone.out_channels, ("s8", "s16", "s32"), 16, "p6p7")
    assert neck.names == ("p3", "p4", "p5", "p6", "p7")
    assert neck.fpn.extra_blocks.p6.in_channels == backbone.out_channels["s32"]
    for h, w in [(64, 96), (32, 32)]:
        with torch.no_grad():
            levels = neck(backbone.forward_features(torch.zeros(1, 3, h, w)))
        assert [tuple(f.shape[-2:]) for f in levels.values()] == neck.level_sizes(h, w)
        assert all(f.shape[1] == 16 for f in levels.values())
    with pytest.raises(ValueError, match="s64"):
        PyramidNeck(backbone.out_channels, ("s8", "s64"), 16)


def test_forward_pads_and_its_anchors_are_the_counted_ones(model: RetinaNet) -> None:
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 50, 60))  # padded to 64 x 64
    a = model.anchors_per_image(50, 60)
    assert out["cls_logits"].shape == (2, a, K)
    assert out["bbox_regression"].shape == (2, a, 4)
    assert out["anchors"].shape == (a, 4)
    assert out["num_anchors_per_level"] == [9 * 64, 9 * 16, 9 * 4, 9, 9]


def _outputs(anchors: torch.Tensor) -> dict:
    return {
        "anchors": anchors,
        "cls_logits": torch.full((1, anchors.shape[0], K), -10.0),
        "bbox_regression": torch.zeros(1, anchors.shape[0], 4),
        "num_anchors_per_level": [anchors.shape[0]],
    }


def test_matcher_uses_the_paper_thresholds(model: RetinaNet) -> None:
    # IoU with the box: 1 (positive), 0.45 (ignored: in [0.4, 0.5)), 0.35 and 0 (negative)
    anchors = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 4.5], [0, 0, 10, 3.5], [50, 50, 60, 60]], dtype=torch.float32
    )
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    stats = model.assignment_stats(_outputs(anchors), targets)
    assert stats == {"positives": 1.0, "negatives": 2.0, "ignored": 1.0}
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert model.assignment_stats(_outputs(anchors), empty)["negatives"] == 4.0


def test_loss_rewards_the_right_class_and_handles_empty_images(model: RetinaNet) -> None:
    anchors = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])}]
    right, wrong = _outputs(anchors), _outputs(anchors)
    right["cls_logits"][0, 0, 2] = 5.0
    wrong["cls_logits"][0, 0, 1] = 5.0
    good, bad = model.loss(right, targets), model.loss(wrong, targets)
    assert set(good) == {"loss_cls", "loss_box", "loss"}
    assert good["loss_cls"] < bad["loss_cls"]
    assert float(good["loss_box"]) == 0.0  # zero deltas on an anchor equal to the box
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model.loss(_outputs(anchors), empty)
    assert float(losses["loss_box"]) == 0.0 and math.isfinite(float(losses["loss_cls"]))
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        model.loss(right, [{"boxes": targets[0]["boxes"], "labels": torch.tensor([3])}])


def test_decode_applies_deltas_clips_and_keeps_labels(model: RetinaNet) -> None:
    anchors = torch.tensor([[10, 10, 30, 30], [0, 0, 8, 8]], dtype=torch.float32)
    out = _outputs(anchors)
    out["cls_logits"][0, 0, 2] = 5.0
    out["bbox_regression"][0, 0, 0] = 0.25  # dx: shift by a quarter of the width (5 px)
    (det,) = model.decode(out, [(100, 100)])
    assert det.labels.tolist() == [2]
    assert det.scores.tolist() == pytest.approx([1 / (1 + math.exp(-5))])
    assert det.boxes[0].tolist() == pytest.approx([15, 10, 35, 30])
    (clipped,) = model.decode(out, [(20, 25)])
    assert clipped.boxes[0].tolist() == pytest.approx([15, 10, 25, 20])
    with pytest.raises(ValueError, match="image_sizes"):
        model.decode(out, [(20, 25), (20, 25)])


def test_decode_keeps_at_most_100_best(model: RetinaNet) -> None:
    # 300 disjoint anchors, all confident, distinct scores
    xy = torch.stack(torch.meshgrid(torch.arange(20), torch.arange(15), indexing="ij"), -1)
    xy = xy.reshape(-1, 2).float() * 10
    anchors = torch.cat([xy, xy + 8], dim=1)
    out = _outputs(anchors)
    out["cls_logits"][0, :, 0] = torch.linspace(1, 4, 300)
    (det,) = model.decode(out, [(200, 150)])
    assert len(det) == 100
    assert det.scores[0] == pytest.approx(torch.sigmoid(torch.tensor(4.0)))
    assert det.scores.min() >= torch.sigmoid(torch.linspace(1, 4, 300)[200]) - 1e-6


def test_config_overrides_and_validation() -> None:
    model = build_retinanet(K, fg_iou_thresh=0.6, fpn_channels=8)
    assert model.matcher.high_threshold == 0.6 and model.neck.out_channels == 8
    assert RETINANET_PRESETS["synthetic"].fg_iou_thresh == 0.5  # presets are not mutated
    with pytest.raises(ValueError, match="unknown option.*foo.*fg_iou_thresh"):
        build_retinanet(K, foo=1)
    with pytest.raises(ValueError, match="anchor_sizes has 4 levels"):
        build_retinanet(K, anchor_sizes=((8,), (16,), (32,), (64,)))


def test_head_towers_keep_the_signal_at_tiny_width() -> None:
    """torchvision's std=0.01 towers shrink a 32-channel signal ~5,000x over four convs; the
    Kaiming re-initialisation (detectors.dense.kaiming_init_towers) keeps it."""
    torch.manual_seed(0)
    model = build_retinanet(9, head_group_norm=False)  # the paper's towers: init alone decides
    x = torch.randn(2, model.head.classification_head.conv[0][0].in_channels, 16, 16)
    for tower in (model.head.classification_head.conv, model.head.regression_head.conv):
        with torch.no_grad():
            ratio = float(tower(x).std() / x.std())
        assert ratio > 0.2, ratio
    # the final predictors keep torchvision's init: the prior bias for the focal loss
    bias = model.head.classification_head.cls_logits.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log((1 - 0.01) / 0.01)))


def test_head_towers_are_group_normalised_by_default() -> None:
    """Training from scratch (every detector here): GroupNorm in the towers, 8 channels per
    group (torchvision's RetinaNet v2); ``head_group_norm=False`` is the paper's head."""
    norms = [m for m in build_retinanet(9).head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 8 and all(n.num_groups == n.num_channels // 8 for n in norms)
    plain = build_retinanet(9, head_group_norm=False).head.modules()
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in plain)
