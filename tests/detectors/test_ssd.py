"""SSD specifics: SSD300's maps and default boxes on the hourglass, the extra layers, the loss
(background label 0, 3:1 hard negatives) and decoding. Shared behaviour is in test_registry.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from detectors.pyramid import crop_map
from detectors.ssd import SSD, ExtraLayer, SSDConfig, build_ssd

K = 3
SSD300_SIZES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def targets_one_box() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[20.0, 4.0, 60.0, 30.0]]), "labels": torch.tensor([0])},
    ]


def test_ssd300_maps_and_default_boxes() -> None:
    model = build_ssd(K, preset="paper").eval()
    assert model.feature_sizes(300, 300) == SSD300_SIZES
    assert model.anchors_per_image(300, 300) == 8732
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 300, 300))  # padded to 320 inside, cropped back
    assert out["feature_sizes"] == SSD300_SIZES
    # 4, 6, 6, 6, 4, 4 boxes per location
    assert out["num_anchors_per_level"] == [38 * 38 * 4, 19 * 19 * 6, 600, 150, 36, 4]
    assert out["anchors"].shape == (8732, 4)
    assert out["cls_logits"].shape == (1, 8732, K + 1)
    assert out["bbox_regression"].shape == (1, 8732, 4)


def test_default_box_count_does_not_depend_on_the_backbone_padding() -> None:
    # hg104 pads 300 to 384 (a 48-cell s8 map) and tiny to 320 (40 cells): both crop to 38
    with torch.device("meta"):
        model = build_ssd(80, backbone="hg104", preset="paper")
        assert model.anchors_per_image(300, 300) == 8732
    assert model.feature_sizes(320, 320)[0] == (40, 40)


@pytest.mark.parametrize("size", [(64, 64), (72, 100)], ids=str)
def test_feature_sizes_formula_matches_the_network(size: tuple[int, int]) -> None:
    model = build_ssd(K).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, *size))
    assert out["feature_sizes"] == model.feature_sizes(*size)
    assert out["anchors"].shape[0] == model.anchors_per_image(*size)
    assert (out["anchors"][:, 2:] > out["anchors"][:, :2]).all()


@pytest.mark.parametrize(
    ("kind", "size", "expected"),
    [
        ("valid", 5, 3),
        ("valid", 3, 1),
        ("valid", 2, 1),
        ("valid", 1, 1),
        ("s2", 5, 3),
        ("s2", 1, 1),
    ],
    ids=str,
)
def test_extra_layer_sizes(kind: str, size: int, expected: int) -> None:
    # "valid" is SSD300's unpadded 3x3 (5 -> 3 -> 1); maps below 3x3 are padded up to it
    layer = ExtraLayer(8, 6, kind)
    assert layer(torch.randn(2, 8, size, size)).shape == (2, 6, expected, expected)


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError, match="kind 'pool'"):
        ExtraLayer(8, 8, "pool")
    with pytest.raises(ValueError, match="expected 5 aspect_ratios and 6 scales"):
        build_ssd(K, extra_layers=("s2", "s2"))
    with pytest.raises(ValueError, match="unknown option.*anchor_sizes"):
        build_ssd(K, anchor_sizes=(1, 2))
    with pytest.raises(ValueError, match="smaller than"):
        crop_map(torch.zeros(1, 1, 4, 4), 8, (64, 64))


def perfect_outputs(model: SSD, targets: list[dict], logit: float = 30.0) -> dict:
    """Outputs whose classes and deltas are exactly the matcher's targets."""
    with torch.no_grad():
        out = model(torch.zeros(len(targets), 3, 64, 64))
    matched = model._match(out, targets)[2]
    cls = torch.zeros_like(out["cls_logits"])
    reg = torch.zeros_like(out["bbox_regression"])
    for i, (m, t) in enumerate(zip(matched, targets)):
        pos = (m >= 0).nonzero().squeeze(1)
        cls[i, :, 0] = logit  # background everywhere ...
        cls[i, pos, 0] = 0.0
        cls[i, pos, t["labels"][m[pos]] + 1] = logit  # ... except positives: label + 1
        reg[i, pos] = model.box_coder.encode_single(t["boxes"][m[pos]], out["anchors"][pos])
    return {**out, "cls_logits": cls, "bbox_regression": reg}


def test_perfect_predictions_cost_nothing_and_decode_to_the_boxes() -> None:
    model = build_ssd(K)
    targets = targets_one_box()
    out = perfect_outputs(model, targets)
    losses = model.loss(out, targets)
    assert float(losses["loss_cls"]) < 1e-6 and float(losses["loss_box"]) < 1e-6
    dets = model.decode(out, [(64, 64)] * 2)
    for d, t in zip(dets, targets):
        assert d.labels[0] == t["labels"][0]  # 0-based again
        assert_close(d.boxes[0], t["boxes"][0], atol=1e-3, rtol=0)
    # the same logits one class off (no background shift) are expensive
    wrong = {**out, "cls_logits": out["cls_logits"].roll(-1, dims=2)}
    assert float(model.loss(wrong, targets)["loss_cls"]) > 10


def test_hard_negative_mining_keeps_three_negatives_per_positive() -> None:
    model = build_ssd(K)
    targets = targets_one_box()
    out = perfect_outputs(model, targets)
    matched = model._match(out, targets)[2]
    cls = out["cls_logits"].clone()
    for i, m in enumerate(matched):
        cls[i, m < 0] = 0.0  # every negative costs log(K + 1), positives nothing
    losses = model.loss({**out, "cls_logits": cls}, targets)
    # (3 P negatives x log(K + 1)) / P
    assert float(losses["loss_cls"]) == pytest.approx(3 * math.log(K + 1), rel=1e-5)
    stats = model.assignment_stats(out, targets)
    assert stats["ignored"] == 0
    assert stats["positives"] >= 1  # every box has at least its best default box
    assert stats["hard_negatives"] == 3 * stats["positives"]
    assert stats["positives"] + stats["negatives"] == model.anchors_per_image(64, 64)


def test_default_config_is_ssd300() -> None:
    cfg = SSDConfig()
    assert cfg.extra_layers == ("s2", "valid", "valid") and cfg.neg_to_pos_ratio == 3
    model = SSD(K, build_ssd(K).backbone, cfg)
    assert model.anchor_generator.num_anchors_per_location() == [4, 6, 6, 6, 4, 4]


def test_head_inputs_are_batch_normalised_for_training_from_scratch() -> None:
    """ScratchDet's finding, measured here too: without a norm on the head's inputs, SSD on
    the from-scratch hourglass memorises but does not generalise (docs/training-notes.md)."""
    model = build_ssd(9).train()
    seen = []
    model.head.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    model(torch.rand(4, 3, 128, 128))
    for x in seen[0]:
        mean = x.mean(dim=(0, 2, 3))
        assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert build_ssd(9, head_batch_norm=False).map_norms is None
