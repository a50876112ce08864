"""FCOS: batch-1 forward at 128 px (a 1x1 P7), head GroupNorm groups, point assignment, decoding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models.detection.fcos import FCOSHead

from detectors.fcos import FCOS, FCOSConfig, build_fcos, head_norm_groups, match_points

K = 3


@pytest.fixture(scope="module")
def model() -> FCOS:
    torch.manual_seed(0)
    return build_fcos(K).eval()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batch_of_one_at_128_px_runs_with_a_1x1_level(model: FCOS, mode: str) -> None:
    # P7 of a 128 px input is 1x1: torchvision's GroupNorm(32, 32) raised here (one value
    # per group); the regression would come back as a ValueError from F.group_norm.
    model.train(mode == "train")
    try:
        images = torch.randn(1, 3, 128, 128)
        out = model(images)
        a = model.points_per_image(128, 128)
        assert out["num_points_per_level"] == [256, 64, 16, 4, 1]
        assert a == sum(out["num_points_per_level"])
        assert out["cls_logits"].shape == (1, a, K)
        assert out["bbox_regression"].shape == (1, a, 4)
        assert out["bbox_ctrness"].shape == (1, a, 1)
        assert out["points"].shape == (a, 4)
        assert all(torch.isfinite(out[k]).all() for k in ("cls_logits", "bbox_regression"))
        if mode == "train":
            targets = [{"boxes": torch.tensor([[10.0, 20, 60, 90]]), "labels": torch.tensor([1])}]
            losses = model.loss(out, targets)
            assert all(math.isfinite(float(v.detach())) for v in losses.values())
            losses["loss"].backward()
            assert model.head.classification_head.conv[0].weight.grad is not None
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_a_1x1_level_still_sees_the_image(model: FCOS) -> None:
    # With one channel per group, a 1x1 map normalises to its bias whatever the input: the
    # last point's logits were the prior's for every image (larger batches ran, silently).
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    p7 = out["cls_logits"][:, -1]  # (N, K): the single P7 point
    assert (p7[0] - p7[1]).abs().max() > 1e-4


@pytest.mark.parametrize(("channels", "groups"), [(32, 4), (64, 8), (256, 32), (512, 32)], ids=str)
def test_head_norm_groups_keep_eight_channels_and_the_paper_s_32(channels, groups) -> None:
    assert head_norm_groups(channels) == groups


def test_head_norms_are_regrouped_without_changing_parameters(model: FCOS) -> None:
    norms = [m for m in model.head.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 8 and {(m.num_groups, m.num_channels) for m in norms} == {(4, 32)}
    reference = FCOSHead(32, 1, K)  # torchvision's GroupNorm(32, 32)
    assert model.head.state_dict().keys() == reference.state_dict().keys()
    with torch.device("meta"):
        wide = build_fcos(K, fpn_channels=256)
    assert {m.num_groups for m in wide.head.modules() if isinstance(m, nn.GroupNorm)} == {32}
    with pytest.raises(ValueError, match="min_group_channels=3"):
        build_fcos(K, min_group_channels=3)
    assert FCOSConfig().min_group_channels == 8


def _squares(centres: list[tuple[float, float]], stride: float) -> torch.Tensor:
    """(P, 4) stride-sized squares around ``centres``, as FCOS.forward's ``points``."""
    c = torch.tensor(centres, dtype=torch.float32)
    return torch.cat([c - stride / 2, c + stride / 2], 1)


# two levels: stride 8 for max(l, t, r, b) in (0, 32], stride 16 for (32, inf)
BOUNDS = (32.0,)
POINTS = torch.cat(
    [
        _squares([(20, 20), (40, 40), (100, 100)], 8),
        _squares([(20, 20), (40, 40)], 16),
    ]
)
PER_LEVEL = [3, 2]


def _match(boxes: list[list[float]], radius: float = 1.5) -> list[int]:
    return match_points(POINTS, PER_LEVEL, torch.tensor(boxes), BOUNDS, radius).tolist()


def test_match_points_positive_inside_a_box_of_the_level_s_size() -> None:
    # box 40 px: from (20, 20) every side is 20 px away, in level 0's range (0, 32] only;
    # (40, 40) sits on the box's edge (not inside), (100, 100) is outside
    assert _match([[0.0, 0, 40, 40]]) == [0, -1, -1, -1, -1]
    # box 80 px: (20, 20) reaches 60 px and (40, 40) 40 px, both in level 1's range only
    # (and within 1.5 strides = 24 px of the centre at stride 16)
    assert _match([[0.0, 0, 80, 80]]) == [-1, -1, -1, 0, 0]


def test_match_points_centre_sampling_and_smallest_box() -> None:
    # inside a 200 x 40 box, but 80 px from its centre: more than 1.5 strides (24 px) away
    assert _match([[0.0, 0, 200, 40]]) == [-1, -1, -1, -1, -1]
    assert _match([[0.0, 0, 200, 40]], radius=10.0)[3] == 0
    # two boxes around (20, 20) in level 0's range: the smaller one (index 1) wins
    assert _match([[0.0, 0, 40, 40], [4.0, 4, 36, 36]])[0] == 1
    empty = match_points(POINTS, PER_LEVEL, torch.zeros(0, 4), BOUNDS, 1.5)
    assert empty.tolist() == [-1] * 5 and empty.dtype == torch.int64


def _outputs(points: torch.Tensor) -> dict:
    a = points.shape[0]
    return {
        "points": points,
        "cls_logits": torch.full((1, a, K), -10.0),
        "bbox_regression": torch.zeros(1, a, 4),
        "bbox_ctrness": torch.zeros(1, a, 1),
        "num_points_per_level": [a],
    }


def test_decode_scales_distances_by_the_stride_and_clips(model: FCOS) -> None:
    points = _squares([(24, 24), (56, 8), (90, 90)], 16)
    out = _outputs(points)
    out["cls_logits"][0, 0, 2] = 3.0
    out["bbox_ctrness"][0, 0, 0] = 1.0
    out["bbox_regression"][0, 0] = torch.tensor([0.5, 0.25, 1.0, 0.5])  # x 16 px: 8, 4, 16, 8
    out["cls_logits"][0, 1, 0] = 4.0
    out["bbox_regression"][0, 1] = torch.tensor([1.0, 1.0, 1.0, 1.0])  # 16 px: past the top
    (det,) = model.decode(out, [(60, 64)])
    order = det.labels.argsort()
    assert det.labels[order].tolist() == [0, 2]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = [math.sqrt(sig(4.0) * sig(0.0)), math.sqrt(sig(3.0) * sig(1.0))]
    assert det.scores[order].tolist() == pytest.approx(expected)
    torch.testing.assert_close(
        det.boxes[order], torch.tensor([[40.0, 0, 64, 24], [16.0, 20, 40, 32]])
    )
    # sqrt(sigmoid(-10) * 0.5) is below the 0.2 threshold: the third point is gone
    assert len(det) == 2


def test_head_tower_convs_are_kaiming_initialised() -> None:
    """Under GroupNorm the forward is scale-free, but Adam's fixed step on std=0.01 weights
    is a ~70x larger effective learning rate: the towers start Kaiming-normal (fan-in)."""
    torch.manual_seed(0)
    model = build_fcos(9)
    for tower in (model.head.classification_head.conv, model.head.regression_head.conv):
        convs = [m for m in tower.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 4
        for conv in convs:
            fan_in = conv.weight[0].numel()
            expected = math.sqrt(2.0 / fan_in)
            assert 0.8 * expected < float(conv.weight.std()) < 1.2 * expected
