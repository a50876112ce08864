"""Detection transforms: boxes move with the pixels, letterbox inverts, degenerate boxes count."""

from __future__ import annotations

import pickle

import pytest
import torch

from bench.data.transforms import (
    ColorJitter,
    Compose,
    Letterbox,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    collate_detection,
    invert_boxes,
    scale_crop,
)


def _white_box(h: int, w: int, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, dict]:
    """A black (3, h, w) image with the pixels of the xyxy ``box`` white, and its target."""
    image = torch.zeros(3, h, w)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 1.0
    target = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([4])}
    return image, target


def _pixel_box(image: torch.Tensor) -> torch.Tensor:
    """xyxy box of the pixels brighter than 0.5 (a pixel i covers [i, i + 1))."""
    ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


@pytest.mark.parametrize("shape", [(37, 64), (64, 23), (50, 50), (9, 120)], ids=str)
@pytest.mark.parametrize("size", [48, (40, 64)], ids=str)
def test_letterbox_then_invert_is_identity(shape: tuple[int, int], size) -> None:
    h, w = shape
    xy = torch.rand(20, 2) * torch.tensor([w, h])
    wh = torch.rand(20, 2) * torch.tensor([w, h])
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w, h]))], dim=1)
    image = torch.rand(3, h, w)
    out, target = Letterbox(size, fill=0.25)(image, {"boxes": boxes})
    out_h, out_w = (size, size) if isinstance(size, int) else size
    assert out.shape == (3, out_h, out_w)
    sx, sy = target["meta"]["scale"]
    assert abs(sx - sy) < 0.05  # aspect ratio kept (up to rounding of the new size)
    left, top = target["meta"]["pad"]
    assert out[:, :top].eq(0.25).all() and out[:, :, :left].eq(0.25).all()
    torch.testing.assert_close(
        invert_boxes(target["boxes"], target["meta"]), boxes, atol=1e-4, rtol=0
    )


def test_letterbox_and_resize_keep_boxes_on_pixels() -> None:
    image, target = _white_box(32, 16, (3, 5, 11, 20))
    out, t = Letterbox(64, fill=0.0)(image, target)  # scale 2, padded 16 px left and right
    assert t["meta"]["pad"] == (16, 0)
    torch.testing.assert_close(_pixel_box(out), t["boxes"][0])
    out, t = Resize((16, 48))(image, target)  # x * 3, y / 2
    torch.testing.assert_close(_pixel_box(out), t["boxes"][0], atol=1.0, rtol=0)
    torch.testing.assert_close(invert_boxes(t["boxes"], t["meta"]), target["boxes"])


def test_flip_moves_boxes_with_pixels() -> None:
    image, target = _white_box(20, 31, (2, 4, 9, 15))
    out, t = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(out, image.flip(-1))
    torch.testing.assert_close(t["boxes"][0], _pixel_box(out))
    torch.testing.assert_close(t["boxes"][0], torch.tensor([22.0, 4.0, 29.0, 15.0]))
    out, t = RandomHorizontalFlip(p=0.0)(image, target)
    assert out is image and t is target


@pytest.mark.parametrize(
    "scale,offset",
    [(1.0, (5, -3)), (2.0, (10, 14)), (0.5, (-7, -2)), (1.5, (-4, 20)), (0.75, (3, 0))],
    ids=str,
)
def test_scale_crop_moves_boxes_with_pixels(scale: float, offset: tuple[int, int]) -> None:
    image, target = _white_box(40, 48, (10, 12, 30, 34))
    out, t, dropped = scale_crop(image, target, scale, offset, (32, 36), fill=0.0)
    assert out.shape == (3, 32, 36) and dropped == 0
    # bilinear resampling blurs edges by at most a pixel; the box is clipped like the pixels
    torch.testing.assert_close(_pixel_box(out), t["boxes"][0], atol=1.0, rtol=0)


def test_random_scale_crop_moves_boxes_with_pixels() -> None:
    transform = RandomScaleCrop((0.5, 2.0), size=(40, 40), fill=0.0)
    for _ in range(10):
        image, target = _white_box(40, 40, (8, 6, 34, 30))
        out, t = transform(image, target)
        assert out.shape == (3, 40, 40)
        if len(t["boxes"]):
            torch.testing.assert_close(_pixel_box(out), t["boxes"][0], atol=1.0, rtol=0)
        else:
            assert (out[0] > 0.5).sum() < 40  # the object left the window (a sliver at most)


def test_degenerate_boxes_are_dropped_and_counted() -> None:
    image = torch.rand(3, 32, 32)
    boxes = torch.tensor(
        [[2.0, 2.0, 8.0, 8.0], [5.0, 4.0, 10.5, 20.0], [12.0, 12.0, 30.0, 30.0]]
    )  # left of the window; 0.5 px wide after the crop; inside
    target = {"boxes": boxes, "labels": torch.tensor([0, 1, 2]), "dropped": 1}
    _, t, dropped = scale_crop(image, target, 1.0, (10, 0), (32, 32))
    assert dropped == 2 and t["dropped"] == 3  # counts add up over the transforms
    assert t["labels"].tolist() == [2]
    torch.testing.assert_close(t["boxes"], torch.tensor([[2.0, 12.0, 20.0, 30.0]]))
    transform = RandomScaleCrop((1.0, 1.0), size=(16, 16))
    whole, sliver = [0.0, 0.0, 32.0, 32.0], [3.0, 3.0, 3.5, 9.0]
    for _ in range(3):
        _, t = transform(image, {"boxes": torch.tensor([whole, sliver]), "labels": torch.ones(2)})
        assert t["dropped"] == 1 and t["boxes"].shape == (1, 4)
    assert transform.dropped == 3


def test_color_jitter_keeps_boxes_and_range() -> None:
    image, target = _white_box(16, 16, (2, 2, 9, 9))
    image = image * 0.5 + 0.25
    out, t = ColorJitter(0.5, 0.5, 0.5, 0.1)(image, target)
    assert t is target and out.shape == image.shape
    assert out.min() >= 0.0 and out.max() <= 1.0 and not torch.equal(out, image)


def test_compose_pickles_and_replays() -> None:
    pipeline = Compose(
        [RandomScaleCrop((0.8, 1.2)), RandomHorizontalFlip(), ColorJitter(), Letterbox(24)]
    )
    clone = pickle.loads(pickle.dumps(pipeline))
    image, target = _white_box(20, 28, (3, 3, 12, 14))
    torch.manual_seed(7)
    a = pipeline(image, target)
    torch.manual_seed(7)
    b = clone(image, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert a[0].shape == (3, 24, 24)


def test_collate_detection() -> None:
    batch = [_white_box(8, 10, (1, 1, 4, 4)), _white_box(8, 10, (2, 2, 5, 5))]
    images, targets = collate_detection(batch)
    assert images.shape == (2, 3, 8, 10) and targets == [batch[0][1], batch[1][1]]
    with pytest.raises(ValueError, match=r"image 1 has shape \(3, 9, 10\).*Letterbox"):
        collate_detection([batch[0], _white_box(9, 10, (1, 1, 4, 4))])
    with pytest.raises(ValueError, match="empty"):
        collate_detection([])


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\).*\(8, 8\)"):
        Letterbox(16)(torch.zeros(8, 8), {})
    with pytest.raises(ValueError, match="uint8|float"):
        RandomHorizontalFlip()(torch.zeros(3, 8, 8, dtype=torch.uint8), {})
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        invert_boxes(torch.zeros(4), {"scale": (1, 1), "pad": (0, 0), "orig_size": (8, 8)})
    with pytest.raises(ValueError, match="scale_range"):
        RandomScaleCrop((1.5, 0.5))
    with pytest.raises(ValueError, match="size"):
        Letterbox((0, 8))
