"""CornerNet targets against the original release's vectors (tests/fixtures/targets.pt)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch.testing import assert_close

from detectors.cornernet.targets import (
    build_batch_targets,
    build_targets,
    draw_gaussian,
    gaussian_radius,
)

IN_SIZE, OUT_SIZE, NUM_CLASSES = (511, 511), (128, 128), 80


@pytest.fixture(scope="module")
def ref(fixtures_dir: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse-invariant notice from torch.load
        return torch.load(os.path.join(fixtures_dir, "targets.pt"), weights_only=True)


def _image_inputs(image: dict) -> tuple[torch.Tensor, torch.Tensor]:
    det = image["detections"]
    return det[:, :4], det[:, 4].long() - 1  # fixture categories are 1-based


@pytest.mark.parametrize("min_overlap", [0.3, 0.5, 0.7], ids=str)
def test_gaussian_radius_matches_release(ref: dict, min_overlap: float) -> None:
    got = torch.tensor(
        [gaussian_radius((h, w), min_overlap) for h, w in ref["sizes"].tolist()],
        dtype=torch.float64,
    )
    assert_close(got, ref["radius"][min_overlap], rtol=0, atol=1e-12)


def test_gaussian_radius_rejects_bad_overlap() -> None:
    with pytest.raises(ValueError, match="min_overlap"):
        gaussian_radius((10, 10), 1.5)


def test_draw_gaussian_matches_release(ref: dict) -> None:
    for case in ref["draws"]:
        heatmap = torch.zeros(case["size"])
        for x, y, radius in case["centers_radii"].tolist():
            assert draw_gaussian(heatmap, (x, y), radius) is heatmap  # in place
        assert_close(heatmap, case["heatmap"], rtol=0, atol=0)


@pytest.mark.parametrize("center", [(-3, 2), (0, 0), (10, 13), (12, 4), (20, 20)], ids=str)
def test_draw_gaussian_clips_like_a_larger_map(center: tuple[int, int]) -> None:
    # Drawing on a 14x12 map equals drawing on a padded map and cropping.
    pad, radius = 6, 4
    small = torch.rand(14, 12) * 0.5
    big = torch.zeros(14 + 2 * pad, 12 + 2 * pad)
    big[pad:-pad, pad:-pad] = small
    draw_gaussian(small, center, radius)
    draw_gaussian(big, (center[0] + pad, center[1] + pad), radius)
    assert_close(small, big[pad:-pad, pad:-pad], rtol=0, atol=0)


def test_draw_gaussian_shape_and_peak() -> None:
    heatmap = draw_gaussian(torch.zeros(9, 9), (4, 4), 2)
    assert heatmap[4, 4] == 1.0
    assert torch.count_nonzero(heatmap) == 25  # (2r + 1)^2 cells
    assert_close(heatmap, heatmap.t())  # symmetric
    with pytest.raises(ValueError, match="radius"):
        draw_gaussian(heatmap, (1, 1), -1)


@pytest.mark.parametrize("i", range(4), ids=lambda i: f"image{i}")
def test_build_targets_matches_release(ref: dict, i: int) -> None:
    image = ref["images"][i]
    got = build_targets(*_image_inputs(image), IN_SIZE, OUT_SIZE, NUM_CLASSES)
    for key in ("tl_heat", "br_heat"):
        assert got[key].dtype == torch.float32
        assert_close(got[key], image[key].to_dense(), rtol=0, atol=0, msg=key)
    for key in ("tl_regr", "br_regr", "tl_tag", "br_tag"):
        assert_close(got[key], image[key], rtol=0, atol=0, msg=key)
    assert got["mask"].dtype == torch.bool
    assert torch.equal(got["mask"], image["mask"].bool())


def test_build_batch_targets_stacks_images(ref: dict) -> None:
    samples = [_image_inputs(im) for im in ref["images"][:2]]
    batch = build_batch_targets(samples, IN_SIZE, OUT_SIZE, NUM_CLASSES, max_objects=16)
    assert batch["tl_heat"].shape == (2, NUM_CLASSES, 128, 128)
    assert batch["tl_regr"].shape == (2, 16, 2)
    assert batch["mask"].shape == (2, 16)
    for n, (boxes, labels) in enumerate(samples):
        one = build_targets(boxes, labels, IN_SIZE, OUT_SIZE, NUM_CLASSES, max_objects=16)
        for key, value in one.items():
            assert torch.equal(batch[key][n], value), key


def test_without_gaussian_bump_one_pixel_per_corner() -> None:
    boxes = torch.tensor([[3.0, 5.0, 40.0, 33.0], [10.5, 2.25, 60.0, 62.0], [0.0, 0.0, 9.0, 9.0]])
    labels = torch.tensor([0, 2, 0])
    t = build_targets(boxes, labels, (64, 64), (16, 16), 3, max_objects=4, gaussian_bump=False)
    for corner in ("tl", "br"):
        heat, tag = t[f"{corner}_heat"], t[f"{corner}_tag"]
        assert torch.count_nonzero(heat) == 3
        assert set(heat.unique().tolist()) == {0.0, 1.0}
        for k, c in enumerate(labels.tolist()):
            assert heat[c].flatten()[tag[k]] == 1.0
    bumped = build_targets(boxes, labels, (64, 64), (16, 16), 3, max_objects=4)
    assert torch.count_nonzero(bumped["tl_heat"]) > 3  # the Gaussian does spread


def test_clips_boxes_and_drops_empty_ones() -> None:
    boxes = torch.tensor(
        [
            [-20.0, -5.0, 700.0, 600.0],  # past every border: clipped to the image
            [30.0, 30.0, 30.0, 50.0],  # zero width: dropped
            [100.0, 120.0, 90.0, 200.0],  # x2 < x1: dropped
            [5.0, 6.0, 50.0, 60.0],
        ]
    )
    t = build_targets(boxes, torch.tensor([1, 0, 0, 2]), IN_SIZE, OUT_SIZE, 3, max_objects=8)
    assert t["mask"].tolist() == [True, True] + [False] * 6
    assert t["tl_tag"][0] == 0  # (0, 0)
    assert t["br_tag"][0] == 127 * 128 + 127  # 510 * 128 / 511 -> cell 127
    assert t["tl_heat"][1, 0, 0] == 1.0 and t["tl_heat"][2].max() == 1.0
    assert t["tl_heat"][0].max() == 0.0  # the dropped boxes drew nothing
    assert ((t["tl_regr"] >= 0) & (t["tl_regr"] < 1)).all()


def test_more_boxes_than_slots_warns_and_keeps_first() -> None:
    boxes = torch.tensor([[4.0 * k, 4.0 * k, 4.0 * k + 8, 4.0 * k + 8] for k in range(6)])
    labels = torch.zeros(6, dtype=torch.int64)
    with pytest.warns(UserWarning, match="max_objects=4"):
        t = build_targets(boxes, labels, (64, 64), (32, 32), 1, max_objects=4, gaussian_bump=False)
    full = build_targets(boxes, labels, (64, 64), (32, 32), 1, max_objects=8, gaussian_bump=False)
    assert t["mask"].all()
    assert torch.equal(t["tl_tag"], full["tl_tag"][:4])
    assert torch.equal(t["tl_heat"], full["tl_heat"])  # every box is still a positive


def test_bad_inputs_raise() -> None:
    boxes = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match="labels"):
        build_targets(boxes, torch.tensor([3]), (64, 64), (16, 16), 3)
    with pytest.raises(ValueError, match="boxes"):
        build_targets(boxes[:, :3], torch.tensor([0]), (64, 64), (16, 16), 3)
    with pytest.raises(ValueError, match="output_size"):
        build_targets(boxes, torch.tensor([0]), (64, 64), (0, 16), 3)
    with pytest.raises(ValueError, match="finite"):
        build_targets(boxes * float("nan"), torch.tensor([0]), (64, 64), (16, 16), 3)
