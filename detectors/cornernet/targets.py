"""CornerNet training targets: corner heatmaps, offsets, embedding indices and mask.

For every ground-truth box ``k`` with class ``c`` and corners ``(x1, y1)``, ``(x2, y2)`` in
input pixels, the corners are scaled to the output map, ``fx = x * (w_out / w_in)`` (float32
arithmetic, as the release), and split into an integer cell ``ix = int(fx)`` and the offset
lost by the downscale, ``fx - ix``:

* ``tl_heat[c]`` / ``br_heat[c]`` ``(C, h, w)``: element-wise maximum over the boxes of an
  unnormalised Gaussian centred on the corner cell, ``exp(-(dx^2 + dy^2) / (2 sigma^2))``
  for ``|dx|, |dy| <= r``, ``sigma = (2r + 1) / 6``, where
  ``r = max(0, int(gaussian_radius((ceil(h_k * s), ceil(w_k * s)), gaussian_iou)))``
  (box size in output cells); with ``gaussian_bump=False`` just a 1 at the corner cell.
* ``tl_regr[k]`` / ``br_regr[k]`` ``(M, 2)``: offsets ``(fx - ix, fy - iy)``.
* ``tl_tag[k]`` / ``br_tag[k]`` ``(M,)`` int64: flat index ``iy * w + ix`` into the map.
* ``mask[k]`` ``(M,)`` bool: slot ``k`` holds an object.

Public functions: :func:`gaussian_radius`, :func:`draw_gaussian`, :func:`build_targets`,
:func:`build_batch_targets`. All run on the CPU in the data pipeline (one Python step per
box); the outputs are plain tensors ready for :func:`detectors.cornernet.loss.cornernet_loss`.

Input hygiene, as the release's data pipeline (``_clip_detections`` before the targets):
boxes are clipped to ``[0, W_in - 1] x [0, H_in - 1]`` and boxes left with zero width or
height are dropped; integer corner cells are additionally clamped into the output map.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["build_batch_targets", "build_targets", "draw_gaussian", "gaussian_radius"]

TARGET_KEYS = ("tl_heat", "br_heat", "tl_regr", "br_regr", "tl_tag", "br_tag", "mask")


def gaussian_radius(det_size: tuple[float, float], min_overlap: float) -> float:
    """Largest corner displacement that keeps IoU >= ``min_overlap`` with the true box.

    Three cases (both corners inside, both outside, one in and one out); each gives a
    quadratic ``a r^2 + b r + c = 0`` and the smallest root over the cases is returned.
    This is the corrected form the CornerNet release uses (princeton-vl/CornerNet issue
    #37: the roots are divided by ``2a``); CenterNet keeps the earlier form. Computed in
    float64 (Python floats); callers apply ``int()`` themselves.

    Args:
        det_size: ``(height, width)`` of the box, in output-map cells.
        min_overlap: the IoU to keep, in ``(0, 1)``; the release trains with 0.3.

    Returns:
        The radius as a float (not truncated).
    """
    height, width = float(det_size[0]), float(det_size[1])
    if not (0.0 < min_overlap < 1.0):
        raise ValueError(f"min_overlap={min_overlap}: expected a value in (0, 1)")
    if height < 0 or width < 0 or not (math.isfinite(height) and math.isfinite(width)):
        raise ValueError(f"det_size={det_size}: expected finite (height, width) >= 0")
    # Case 1: both corners displaced inwards or both outwards together (a = 1).
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - math.sqrt(b1**2 - 4 * c1)) / 2
    # Case 2: both corners inside the true box (a = 4).
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 - math.sqrt(b2**2 - 4 * 4 * c2)) / (2 * 4)
    # Case 3: both corners outside the true box (a = 4 * min_overlap).
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / (2 * a3)
    return min(r1, r2, r3)


@lru_cache(maxsize=256)
def _gaussian_kernel(radius: int) -> Tensor:
    """Unnormalised Gaussian of side ``2r + 1``, sigma ``(2r + 1) / 6``: (2r+1, 2r+1) float32.

    Evaluated in float64 and rounded once to float32, as the release does (numpy float64
    kernel, maximum written into a float32 map). The release also zeroes values below
    ``eps * max``; with sigma = diameter / 6 every value is at least
    ``exp(-36 r^2 / (2r + 1)^2) > exp(-9)``, so that never fires and is left out.
    Cached: read-only, never modify the result.
    """
    diameter = 2 * radius + 1
    sigma = diameter / 6
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(d[None, :] * d[None, :] + d[:, None] * d[:, None]) / (2 * sigma * sigma))
    return g.to(torch.float32)


def draw_gaussian(heatmap: Tensor, center_xy: tuple[int, int], radius: int) -> Tensor:
    """Draw a Gaussian bump into ``heatmap`` IN PLACE: ``heatmap = max(heatmap, gaussian)``.

    The Gaussian has diameter ``2r + 1`` and sigma ``(2r + 1) / 6`` and peaks at 1 on
    ``center_xy``; the part outside the map is clipped away (a centre outside the map draws
    only its visible part, or nothing).

    Args:
        heatmap: ``(H, W)`` float tensor, modified in place.
        center_xy: integer ``(x, y)`` cell of the peak.
        radius: integer radius ``r >= 0`` (0 draws a single 1.0).

    Returns:
        ``heatmap`` itself (the same tensor object).
    """
    if heatmap.dim() != 2 or not heatmap.is_floating_point():
        raise ValueError(
            f"heatmap: expected a 2-D float tensor (H, W), got shape {tuple(heatmap.shape)} "
            f"dtype {heatmap.dtype}"
        )
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"radius={radius!r}: expected an integer >= 0")
    radius = int(radius)
    x, y = int(center_xy[0]), int(center_xy[1])
    height, width = heatmap.shape
    # Visible window of the kernel, in map coordinates [y0, y1) x [x0, x1).
    x0, x1 = max(x - radius, 0), min(x + radius + 1, width)
    y0, y1 = max(y - radius, 0), min(y + radius + 1, height)
    if x0 >= x1 or y0 >= y1:
        return heatmap
    g = _gaussian_kernel(radius)
    patch = g[y0 - y + radius : y1 - y + radius, x0 - x + radius : x1 - x + radius]
    region = heatmap[y0:y1, x0:x1]
    torch.maximum(region, patch.to(device=heatmap.device, dtype=heatmap.dtype), out=region)
    return heatmap


def _check_size(name: str, size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"{name}={tuple(size)}: expected (height, width) positive integers")
    return int(size[0]), int(size[1])


def build_targets(
    boxes: Tensor,
    labels: Tensor,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    num_classes: int,
    max_objects: int = 128,
    gaussian_iou: float = 0.3,
    gaussian_bump: bool = True,
) -> dict[str, Tensor]:
    """CornerNet training targets of one image (see the module docstring for the maths).

    Args:
        boxes: ``(K, 4)`` boxes ``x1, y1, x2, y2`` in input pixels (any float dtype; the
            arithmetic is float32 like the release's). Clipped to the input image; boxes
            with zero width or height after clipping are dropped.
        labels: ``(K,)`` integer classes in ``[0, num_classes)`` (0-based; the release's
            detections are 1-based).
        input_size: ``(H_in, W_in)`` of the network input (511, 511 in the release).
        output_size: ``(h, w)`` of the heatmaps (128, 128 in the release).
        num_classes: ``C``, heatmap channels.
        max_objects: ``M``, slots for tags and offsets (``max_tag_len``, 128). With more
            boxes, all are drawn into the heatmaps but only the first ``M`` get a slot
            (tag, offset, mask) and a warning is issued; the release would fail instead.
        gaussian_iou: ``min_overlap`` of the radius formula (0.3 in the release).
        gaussian_bump: False gives single-pixel corners (the paper's ablation without
            the Gaussian penalty reduction).

    Returns:
        dict with ``tl_heat``, ``br_heat`` ``(C, h, w)`` float32; ``tl_regr``, ``br_regr``
        ``(M, 2)`` float32; ``tl_tag``, ``br_tag`` ``(M,)`` int64; ``mask`` ``(M,)`` bool.
        Slots are filled in box order.
    """
    in_h, in_w = _check_size("input_size", input_size)
    out_h, out_w = _check_size("output_size", output_size)
    if num_classes <= 0 or max_objects <= 0:
        raise ValueError(
            f"num_classes={num_classes}, max_objects={max_objects}: expected positive integers"
        )
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (K, 4), got {tuple(boxes.shape)}")
    if labels.shape != (boxes.shape[0],) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels: expected an integer tensor of shape ({boxes.shape[0]},), got shape "
            f"{tuple(labels.shape)} dtype {labels.dtype}"
        )
    boxes = boxes.detach().to("cpu", torch.float32)
    labels = labels.detach().to("cpu", torch.int64)
    if not torch.isfinite(boxes).all():
        raise ValueError("boxes: expected finite coordinates, got NaN or inf")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels: expected values in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )

    # The release's _clip_detections: clip into the image, drop empty boxes.
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, in_w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, in_h - 1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, labels = boxes[keep], labels[keep]
    if boxes.shape[0] > max_objects:
        warnings.warn(
            f"build_targets: {boxes.shape[0]} boxes but max_objects={max_objects}; all are "
            f"drawn into the heatmaps, only the first {max_objects} get tags and offsets",
            stacklevel=2,
        )

    # float32 scale factors: the release multiplies float32 detections by Python floats.
    ratio = torch.tensor([out_w / in_w, out_h / in_h], dtype=torch.float32)
    scaled = boxes * ratio.repeat(2)  # (K, 4) x1, y1, x2, y2 in output cells
    cells = scaled.to(torch.int64)  # int() truncation; coordinates are >= 0 after clipping
    offsets = scaled - cells.to(torch.float32)
    cells[:, 0::2] = cells[:, 0::2].clamp(0, out_w - 1)
    cells[:, 1::2] = cells[:, 1::2].clamp(0, out_h - 1)
    # Box size in output cells, scaled in float32 then rounded up, as the release.
    sizes = ((boxes[:, 2:] - boxes[:, :2]) * ratio).tolist()  # (K, 2) w, h

    tl_heat = torch.zeros(num_classes, out_h, out_w, dtype=torch.float32)
    br_heat = torch.zeros(num_classes, out_h, out_w, dtype=torch.float32)
    for k, (x1, y1, x2, y2) in enumerate(cells.tolist()):
        c = int(labels[k])
        if gaussian_bump:
            w, h = sizes[k]
            radius = max(0, int(gaussian_radius((math.ceil(h), math.ceil(w)), gaussian_iou)))
            draw_gaussian(tl_heat[c], (x1, y1), radius)
            draw_gaussian(br_heat[c], (x2, y2), radius)
        else:
            tl_heat[c, y1, x1] = 1.0
            br_heat[c, y2, x2] = 1.0

    n = min(boxes.shape[0], max_objects)
    tl_regr = torch.zeros(max_objects, 2, dtype=torch.float32)
    br_regr = torch.zeros(max_objects, 2, dtype=torch.float32)
    tl_tag = torch.zeros(max_objects, dtype=torch.int64)
    br_tag = torch.zeros(max_objects, dtype=torch.int64)
    mask = torch.zeros(max_objects, dtype=torch.bool)
    tl_regr[:n] = offsets[:n, :2]
    br_regr[:n] = offsets[:n, 2:]
    tl_tag[:n] = cells[:n, 1] * out_w + cells[:n, 0]
    br_tag[:n] = cells[:n, 3] * out_w + cells[:n, 2]
    mask[:n] = True
    return {
        "tl_heat": tl_heat,
        "br_heat": br_heat,
        "tl_regr": tl_regr,
        "br_regr": br_regr,
        "tl_tag": tl_tag,
        "br_tag": br_tag,
        "mask": mask,
    }


def build_batch_targets(
    samples: Sequence[tuple[Tensor, Tensor]],
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    num_classes: int,
    max_objects: int = 128,
    gaussian_iou: float = 0.3,
    gaussian_bump: bool = True,
) -> dict[str, Tensor]:
    """:func:`build_targets` for each ``(boxes, labels)`` of a batch, stacked along N.

    Returns:
        dict with ``tl_heat``, ``br_heat`` ``(N, C, h, w)``; ``tl_regr``, ``br_regr``
        ``(N, M, 2)``; ``tl_tag``, ``br_tag`` ``(N, M)`` int64; ``mask`` ``(N, M)`` bool:
        the ``targets`` argument of :func:`detectors.cornernet.loss.cornernet_loss`.
    """
    if len(samples) == 0:
        raise ValueError("samples: expected at least one (boxes, labels) pair, got none")
    per_image = [
        build_targets(
            boxes,
            labels,
            input_size,
            output_size,
            num_classes,
            max_objects=max_objects,
            gaussian_iou=gaussian_iou,
            gaussian_bump=gaussian_bump,
        )
        for boxes, labels in samples
    ]
    return {key: torch.stack([t[key] for t in per_image]) for key in TARGET_KEYS}
