"""CornerNet's test-time pipeline: canvas placement, coordinate mapping, flip, scales, NMS."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detectors.cornernet.inference import (
    CornerNetTestConfig,
    detect,
    input_size,
    mirror_detections,
    place_centered,
    rescale_detections,
    select_detections,
)

BOX = (20.0, 8.0, 126.0, 30.0)  # x1, y1, x2, y2 of the bright rectangle, original pixels
LABEL = 1


class PeakStub(nn.Module):
    """Finds the bright rectangle in its (normalised) input and answers with one corner pair
    of class ``LABEL`` at the rectangle's corners: heatmap peaks at the corner cells, the
    sub-cell remainder in the offsets, a shared tag (10) that no background cell has.

    Maps are (N, C, (H + 1) // 4, (W + 1) // 4), as the hourglass gives for 128 k - 1 inputs.
    """

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.calls: list[tuple[int, ...]] = []
        self.last_input = torch.empty(0)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        self.calls.append(tuple(x.shape))
        self.last_input = x.clone()
        n, _, height, width = x.shape
        h, w = (height + 1) // 4, (width + 1) // 4
        rx, ry = w / width, h / height
        out = {
            "tl_heat": torch.full((n, self.num_classes, h, w), -20.0),
            "br_heat": torch.full((n, self.num_classes, h, w), -20.0),
            "tl_tag": torch.zeros(n, 1, h, w),
            "br_tag": torch.zeros(n, 1, h, w),
            "tl_regr": torch.zeros(n, 2, h, w),
            "br_regr": torch.zeros(n, 2, h, w),
        }
        for b in range(n):
            ys, xs = torch.nonzero(x[b, 0] > 0, as_tuple=True)  # the rectangle's pixels
            # pixel rows / columns [y0, y1) x [x0, x1) -> box corners in map coordinates
            corners = {
                "tl": (float(xs.min()) * rx, float(ys.min()) * ry),
                "br": ((float(xs.max()) + 1) * rx, (float(ys.max()) + 1) * ry),
            }
            for corner, (cx, cy) in corners.items():
                ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
                out[f"{corner}_heat"][b, LABEL, iy, ix] = 20.0
                out[f"{corner}_tag"][b, 0, iy, ix] = 10.0
                out[f"{corner}_regr"][b, :, iy, ix] = torch.tensor([cx - ix, cy - iy])
        return [out]


def _image(height: int = 40, width: int = 150, dtype: torch.dtype = torch.float32):
    """A non-square image, 0 everywhere but the rectangle BOX (1.0, or 255 as uint8)."""
    image = torch.zeros(3, height, width)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    image[:, y1:y2, x1:x2] = 1.0
    return (image * 255).to(torch.uint8) if dtype == torch.uint8 else image


def test_input_size_is_128k_minus_1() -> None:
    assert [input_size(s) for s in (1, 40, 127, 128, 150, 511, 512)] == [
        127, 127, 127, 255, 255, 511, 639,
    ]  # fmt: skip


def test_place_centered_border() -> None:
    image = torch.rand(3, 5, 130)
    canvas, top, left = place_centered(image, (input_size(5), input_size(130)))
    assert canvas.shape == (3, 127, 255)
    # the release's crop_image: border = canvas centre - image centre (floor division)
    assert (top, left) == (127 // 2 - 5 // 2, 255 // 2 - 130 // 2) == (61, 62)
    torch.testing.assert_close(canvas[:, top : top + 5, left : left + 130], image)
    assert canvas.abs().sum() == image.abs().sum()  # zeros everywhere else
    with pytest.raises(ValueError, match="canvas"):
        place_centered(image, (4, 255))


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8], ids=str)
def test_detect_maps_peak_back_to_original_image(dtype: torch.dtype) -> None:
    stub = PeakStub()
    (dets,) = detect(stub, [_image(dtype=dtype)])
    assert stub.calls == [(1, 3, 127, 255)]  # 40 | 127, 150 | 127; no flip by default
    assert dets.boxes.shape == (len(dets), 4) and len(dets) <= 100
    torch.testing.assert_close(dets.boxes[0], torch.tensor(BOX), atol=1e-3, rtol=0)
    assert int(dets.labels[0]) == LABEL
    assert float(dets.scores[0]) == pytest.approx(1.0, abs=1e-6)
    assert (dets.scores[1:] < 1e-3).all()  # background pairs only
    assert (dets.scores[:-1] >= dets.scores[1:]).all()


def test_canvas_normalised_after_padding() -> None:
    """As the release: pad with zeros, then normalise, so the padding is -mean / std."""
    stub = PeakStub()
    cfg = CornerNetTestConfig(mean=(0.2, 0.4, 0.6), std=(0.5, 0.25, 0.125), flip=True)
    image = _image()
    detect(stub, [image], cfg)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    canvas, top, left = place_centered(image, (127, 255))
    expected = (canvas - mean) / std
    torch.testing.assert_close(stub.last_input[0], expected)
    torch.testing.assert_close(stub.last_input[1], expected.flip(-1))
    assert stub.last_input[0, 2, 0, 0] == pytest.approx(-0.6 / 0.125)


def test_flip_gives_the_same_box() -> None:
    stub = PeakStub()
    cfg = CornerNetTestConfig(flip=True)
    (dets,) = detect(stub, [_image()], cfg)
    assert stub.calls == [(2, 3, 127, 255)]  # the image and its mirror in one batch
    strong = dets.scores > 0.01
    assert int(strong.sum()) == 2
    # both passes find BOX; Gaussian soft-NMS (IoU 1) keeps the second at s * exp(-1 / 0.5)
    torch.testing.assert_close(dets.boxes[strong], torch.tensor([BOX, BOX]), atol=1e-3, rtol=0)
    expected = torch.tensor([1.0, math.exp(-1 / 0.5)])
    torch.testing.assert_close(dets.scores[strong], expected, atol=1e-5, rtol=0)


def test_multi_scale_maps_each_scale_back() -> None:
    stub = PeakStub()
    # BOX has even coordinates, so its edges stay sharp at scale 0.5 and 2 (bilinear)
    cfg = CornerNetTestConfig(scales=(0.5, 1.0, 2.0), nms="none")
    (dets,) = detect(stub, [_image()], cfg)
    assert stub.calls == [(1, 3, 127, 127), (1, 3, 127, 255), (1, 3, 127, 383)]
    strong = dets.scores > 0.5
    assert int(strong.sum()) == 3
    torch.testing.assert_close(dets.boxes[strong], torch.tensor([BOX] * 3), atol=1e-3, rtol=0)


def test_detect_restores_training_mode_and_rejects_bad_images() -> None:
    stub = PeakStub().train()
    detect(stub, [_image(), _image(60, 140)])
    assert stub.training
    with pytest.raises(ValueError, match=r"images\[1\].*\(3, H, W\)"):
        detect(stub, [_image(), torch.zeros(1, 40, 150)])
    with pytest.raises(ValueError, match="int32"):
        detect(stub, [torch.zeros(3, 8, 8, dtype=torch.int32)])
    with pytest.raises(ValueError, match="list"):
        detect(stub, _image())


@pytest.mark.parametrize(
    "kwargs", [{"scales": ()}, {"scales": (0.0,)}, {"nms": "box"}, {"K": 0}, {"kernel": 2}], ids=str
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="CornerNetTestConfig"):
        CornerNetTestConfig(**kwargs)


def test_rescale_and_mirror() -> None:
    rows = torch.tensor([[1.0, 2.0, 30.0, 40.0, 0.9, 0.8, 0.7, 2.0]])
    mirrored = mirror_detections(rows, 32.0)
    assert mirrored[0, :4].tolist() == [2.0, 2.0, 31.0, 40.0]
    assert torch.equal(mirror_detections(mirrored, 32.0), rows)
    # ratio (out / in) 0.25: x 1 -> 4 - left 3 = 1; y 2 -> 8 - 1 = 7; x2 120 - 3 clipped to 100
    out = rescale_detections(rows, (0.25, 0.25), (1.0, 3.0), (50.0, 100.0), scale=2.0)
    assert out[0, :4].tolist() == [0.5, 3.5, 50.0, 25.0]  # y2: 159 clipped to 50, halved
    assert torch.equal(out[:, 4:], rows[:, 4:])


def test_select_detections_per_class_and_cap() -> None:
    box = [0.0, 0.0, 10.0, 10.0]
    rows = torch.tensor(
        [
            box + [0.9, 0, 0, 0.0],
            box + [0.8, 0, 0, 0.0],  # same class, IoU 1: decayed by exp(-2)
            box + [0.7, 0, 0, 1.0],  # another class: untouched
            box + [-1.0, 0, 0, 1.0],  # rejected pair
        ]
    )
    dets = select_detections(rows, CornerNetTestConfig())
    torch.testing.assert_close(dets.scores, torch.tensor([0.9, 0.7, 0.8 * math.exp(-2)]))
    assert dets.labels.tolist() == [0, 1, 0]
    capped = select_detections(rows, CornerNetTestConfig(nms="none", max_per_image=2))
    assert capped.scores.tolist() == pytest.approx([0.9, 0.8])
