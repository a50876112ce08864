"""Joint image + box transforms for detection, and the batch collate function.

Every transform is a picklable callable ``(image, target) -> (image, target)`` with ``image`` a
float (3, H, W) tensor and ``target`` a dict holding ``boxes`` (M, 4) float xyxy in pixels
(a box covers pixels [x0, x1) x [y0, y1)) and per-box ``labels`` (M,); other per-box tensors
named in ``PER_BOX_KEYS`` follow the boxes when some are dropped. Randomness comes from torch's
global RNG, which DataLoader seeds differently in every worker.

- ``Letterbox(size)``: resize keeping the aspect ratio and pad to ``size``; ``Resize(size)``
  stretches instead. Both store ``target["meta"] = {"scale": (sx, sy), "pad": (left, top),
  "orig_size": (h, w), "input_size": (H, W)}``, and ``invert_boxes(boxes, meta)`` maps boxes
  predicted on the network input back to the original image (and clips them to it).
- ``RandomHorizontalFlip(p)``, ``RandomScaleCrop(scale_range, size)`` (the deterministic core
  is ``scale_crop``) and ``ColorJitter(...)`` for training.
- Boxes narrower or shorter than ``min_size`` (1 px) after a crop are dropped and counted, in
  ``target["dropped"]`` (cumulative over the transforms) and in the transform's ``dropped``
  attribute (per process).
- ``Compose(transforms)`` chains them; ``collate_detection(batch)`` stacks equal-size images and
  keeps the targets as a list (a module-level function, so DataLoader workers can pickle it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision

PER_BOX_KEYS = ("boxes", "labels", "area", "iscrowd")
Target = dict[str, Any]


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"{name} must be positive (H, W) or an int, got {size!r}")
    return int(h), int(w)


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.is_floating_point():
        what = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected a float (C, H, W) image tensor, got {what}")


def _scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize(image: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if image.shape[-2:] == (h, w):
        return image
    # antialias: downscaling without it aliases thin strokes away
    out = F.interpolate(image[None], size=(h, w), mode="bilinear", antialias=True)
    return out[0].clamp_(0.0, 1.0)


def _keep_boxes(target: Target, keep: torch.Tensor) -> Target:
    """Drop the boxes (and per-box fields) where ``keep`` is False, counting them."""
    n = int(keep.numel())
    for key in PER_BOX_KEYS:
        if key in target and isinstance(target[key], torch.Tensor) and len(target[key]) == n:
            target[key] = target[key][keep]
    target["dropped"] = int(target.get("dropped", 0)) + int((~keep).sum())
    return target


def _place(image: torch.Tensor, target: Target, scale: tuple[float, float], pad, size, fill):
    """Scale the boxes, shift them by ``pad`` and paste ``image`` at ``pad`` on a canvas."""
    h, w = size
    out = image.new_full((image.shape[0], h, w), fill)
    left, top = pad
    ih, iw = image.shape[-2:]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ih, h), min(left + iw, w)
    if y1 > y0 and x1 > x0:
        out[:, y0:y1, x0:x1] = image[:, y0 - top : y1 - top, x0 - left : x1 - left]
    target = dict(target)
    if "boxes" in target:
        sx, sy = scale
        factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        shift = torch.tensor([left, top, left, top], dtype=torch.float32)
        target["boxes"] = target["boxes"].float() * factor + shift
    return out, target


def invert_boxes(boxes: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """Map (N, 4) xyxy boxes on the network input back to the original image, clipped to it."""
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy, got shape {tuple(boxes.shape)}")
    sx, sy = meta["scale"]
    left, top = meta["pad"]
    h, w = meta["orig_size"]
    out = boxes.float().clone()
    out[:, 0::2] = ((out[:, 0::2] - left) / sx).clamp(0, w)
    out[:, 1::2] = ((out[:, 1::2] - top) / sy).clamp(0, h)
    return out


class Letterbox:
    """Resize keeping the aspect ratio so the image fits ``size``, then pad it centred.

    ``size`` is an int (square) or (H, W); ``fill`` the padding value. Put it last among the
    geometric transforms: ``target["meta"]`` describes this step only.
    """

    def __init__(self, size: int | Sequence[int], fill: float = 0.5) -> None:
        self.size = _pair(size, "Letterbox size")
        self.fill = float(fill)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        _check_image(image)
        h, w = image.shape[-2:]
        out_h, out_w = self.size
        s = min(out_h / h, out_w / w)
        new_h, new_w = max(1, min(out_h, round(h * s))), max(1, min(out_w, round(w * s)))
        scale = (new_w / w, new_h / h)  # exact per axis after rounding, so inversion is exact
        pad = ((out_w - new_w) // 2, (out_h - new_h) // 2)
        out, target = _place(_resize(image, new_h, new_w), target, scale, pad, self.size, self.fill)
        target["meta"] = {"scale": scale, "pad": pad, "orig_size": (h, w), "input_size": self.size}
        return out, target

    def __repr__(self) -> str:
        return f"Letterbox(size={self.size}, fill={self.fill})"


class Resize(Letterbox):
    """Stretch the image to ``size`` (no padding); same ``meta`` as ``Letterbox``."""

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        _check_image(image)
        h, w = image.shape[-2:]
        out_h, out_w = self.size
        scale = (out_w / w, out_h / h)
        out, target = _place(_resize(image, out_h, out_w), target, scale, (0, 0), self.size, 0.0)
        target["meta"] = {"scale": scale, "pad": (0, 0), "orig_size": (h, w)}
        target["meta"]["input_size"] = self.size
        return out, target


class RandomHorizontalFlip:
    """Mirror the image and its boxes left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        _check_image(image)
        if torch.rand(()) >= self.p:
            return image, target
        target = dict(target)
        if "boxes" in target:
            w = image.shape[-1]
            b = target["boxes"]
            target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
        return image.flip(-1), target


def scale_crop(
    image: torch.Tensor,
    target: Target,
    scale: float,
    offset: tuple[int, int],
    size: tuple[int, int],
    *,
    fill: float = 0.5,
    min_size: float = 1.0,
) -> tuple[torch.Tensor, Target, int]:
    """Scale by ``scale``, then cut the (H, W) ``size`` window whose top-left corner is
    ``offset`` = (x, y) in the scaled image (negative or overhanging parts are padded).

    Boxes are scaled, shifted, clipped to the window; those under ``min_size`` px wide or high
    are dropped. Returns the image, target and the number of boxes dropped.
    """
    _check_image(image)
    h, w = image.shape[-2:]
    new_h, new_w = _scaled_size(h, w, scale)
    image = _resize(image, new_h, new_w)
    pad = (-int(offset[0]), -int(offset[1]))
    image, target = _place(image, target, (new_w / w, new_h / h), pad, size, fill)
    if "boxes" not in target:
        return image, target, 0
    b = target["boxes"]
    b[:, 0::2] = b[:, 0::2].clamp(0, size[1])
    b[:, 1::2] = b[:, 1::2].clamp(0, size[0])
    keep = ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)
    before = int(target.get("dropped", 0))
    target = _keep_boxes(target, keep)
    return image, target, target["dropped"] - before


class RandomScaleCrop:
    """Scale by a factor drawn uniformly from ``scale_range``, then crop (or pad) a random
    window of ``size`` ((H, W) or int; default: the input's size). Degenerate boxes are dropped
    and counted in ``target["dropped"]`` and ``self.dropped``."""

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.6, 1.4),
        size: int | Sequence[int] | None = None,
        fill: float = 0.5,
        min_size: float = 1.0,
    ) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(lo), float(hi))
        self.size = None if size is None else _pair(size, "RandomScaleCrop size")
        self.fill, self.min_size = float(fill), float(min_size)
        self.dropped = 0

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        _check_image(image)
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand(()))
        size = self.size or tuple(image.shape[-2:])
        new_h, new_w = _scaled_size(image.shape[-2], image.shape[-1], scale)
        offset = []
        for new, out in ((new_w, size[1]), (new_h, size[0])):
            lo_o, hi_o = min(0, new - out), max(0, new - out)  # negative offsets pad
            offset.append(int(torch.randint(lo_o, hi_o + 1, ())))
        kw = {"fill": self.fill, "min_size": self.min_size}
        image, target, n = scale_crop(image, target, scale, (offset[0], offset[1]), size, **kw)
        self.dropped += n
        return image, target


class ColorJitter:
    """Random brightness, contrast, saturation and hue (torchvision's); boxes are unchanged."""

    def __init__(
        self,
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.3,
        hue: float = 0.02,
    ) -> None:
        self.jitter = torchvision.transforms.ColorJitter(brightness, contrast, saturation, hue)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        _check_image(image)
        return self.jitter(image).clamp(0.0, 1.0), target


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[torch.Tensor, list[Target]]:
    """Stack B equal-size (3, H, W) images into (B, 3, H, W); targets stay a list of B dicts."""
    if not batch:
        raise ValueError("collate_detection got an empty batch")
    images = [item[0] for item in batch]
    first = tuple(images[0].shape)
    for i, im in enumerate(images):
        if tuple(im.shape) != first:
            raise ValueError(
                f"collate_detection: image {i} has shape {tuple(im.shape)} but image 0 has "
                f"{first}; add Letterbox or Resize to the dataset's transforms so sizes match"
            )
    return torch.stack(images), [item[1] for item in batch]
