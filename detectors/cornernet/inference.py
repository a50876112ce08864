"""CornerNet's test-time pipeline (the release's ``test/coco.py`` ``kp_detection``), rewritten.

Per image (3, H, W) and per scale ``s`` in ``cfg.scales``:

1. Resize to ``(h', w') = (int(H * s), int(W * s))`` (bilinear, no antialiasing, as
   ``cv2.resize``); the network input is ``(h' | 127, w' | 127)``: the smallest size
   ``>= (h', w')`` of the form ``128 k - 1`` (511 for a 511 px side), whose stride-4 map is
   ``(size + 1) / 4 = 32 k`` cells, divisible by 2**5 as a depth-5 hourglass needs.
2. Place the resized image centred in a zero canvas of that size: its top-left corner (the
   "border") is at ``(inp_h // 2 - h' // 2, inp_w // 2 - w' // 2)``, as the release's
   ``crop_image``. (The release's crop drops the last row / column when ``h'`` or ``w'`` is
   already ``128 k - 1``; here the whole image is always placed. The border is the same.)
3. Normalise the canvas, padding included: ``(x - cfg.mean) / cfg.std`` (the release
   normalises after padding, so its padding is ``-mean / std``, not 0).
4. Run the model in eval mode on the canvas, or on the canvas and its horizontal mirror when
   ``cfg.flip``; decode the last stack with :func:`kernels.decode.cornernet_decode` (top K
   corners after a ``kernel`` x ``kernel`` max-pool NMS, tag distance <= ``ae_threshold``,
   ``num_dets`` pairs, rejected pairs at score -1). The mirror's boxes are mapped back with
   ``x1 = w_out - x2``, ``x2 = w_out - x1`` (w_out: heatmap width).
5. Map heatmap coordinates to the original image: divide by ``ratio = out / inp`` per axis,
   subtract the border, clip to ``[0, w'] x [0, h']``, divide by ``s`` (the release divides
   by the nominal scale, not by ``w' / W``).

Then, over all scales and flips together: drop rejected pairs (score -1), per-class soft-NMS
(Gaussian, sigma 0.5, Nt 0.5, score threshold 0.001, +1 px areas: the release's
``soft_nms`` run class by class; here all classes in one call of
:func:`kernels.soft_nms.batched_soft_nms`, with the same results) and keep the
``max_per_image`` = 100 best (the release keeps every score >= the 100th, which can keep
more than 100 on ties; here exactly 100, highest first, ties in order).

Not reproduced: the release's multi-scale configuration also merges boxes
(``soft_nms_merge``, weight_exp 10); here multi-scale uses plain soft-NMS.

Public: :class:`CornerNetTestConfig`, :func:`detect`, and its steps :func:`input_size`,
:func:`place_centered`, :func:`decode_heads`, :func:`mirror_detections`,
:func:`rescale_detections`, :func:`select_detections` (shared with the detector wrapper).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from detectors.base import Detections
from kernels.ops import cornernet_decode_op, select_detections_op
from kernels.soft_nms import METHODS

__all__ = [
    "COCO_MEAN_RGB",
    "COCO_STD_RGB",
    "MULTI_SCALES",
    "CornerNetTestConfig",
    "decode_heads",
    "detect",
    "input_size",
    "mirror_detections",
    "place_centered",
    "rescale_detections",
    "select_detections",
    "select_detections_padded",
    "unpad_detections",
]

HEAD_KEYS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_regr", "br_regr")
# The release's COCO statistics (db/coco.py) are for BGR images (cv2); reversed to RGB here.
COCO_MEAN_RGB = (0.47026115, 0.44719302, 0.40789654)
COCO_STD_RGB = (0.27809835, 0.27408164, 0.28863828)
#: the release's multi-scale test scales (config/CornerNet-multi_scale.json)
MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
NMS_METHODS = (*METHODS, "none")


@dataclass(frozen=True)
class CornerNetTestConfig:
    """Test-time settings; defaults are the release's single-scale COCO test without flip."""

    K: int = 100  # corners kept per heatmap (release config: top_k)
    kernel: int = 3  # max-pool NMS window on the heatmaps (release: nms_kernel)
    ae_threshold: float = 0.5  # max tag distance of a pair (release: ae_threshold)
    num_dets: int = 1000  # pairs kept by the decode (release kp._decode: num_dets=1000)
    flip: bool = False  # release: always on; off so the headline is one forward pass
    scales: tuple[float, ...] = (1.0,)  # release CornerNet.json; MULTI_SCALES for multi-scale
    nms: str = "gaussian"  # release nms_algorithm "exp_soft_nms"; or linear, hard, none
    nms_sigma: float = 0.5  # Gaussian soft-NMS sigma (release external/nms.pyx default)
    nms_threshold: float = 0.5  # Nt of linear / hard NMS (release: nms_threshold)
    score_threshold: float = 0.001  # soft-NMS drops boxes rescored below it (nms.pyx default)
    nms_offset: float = 1.0  # +1 px widths in soft-NMS areas (nms.pyx)
    max_per_image: int = 100  # detections kept per image (release: max_per_image)
    mean: tuple[float, float, float] = COCO_MEAN_RGB  # release db/coco.py, RGB order
    std: tuple[float, float, float] = COCO_STD_RGB  # release db/coco.py, RGB order
    backend: str = "auto"  # decode and soft-NMS kernels: "auto", "triton" or "torch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        for name in ("K", "kernel", "num_dets", "max_per_image"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CornerNetTestConfig.{name}={value!r}: expected an int >= 1")
        if self.kernel % 2 == 0:
            raise ValueError(f"CornerNetTestConfig.kernel={self.kernel}: expected an odd int")
        if not self.scales or any(not s > 0 for s in self.scales):
            raise ValueError(
                f"CornerNetTestConfig.scales={self.scales!r}: expected positive scales"
            )
        if self.nms not in NMS_METHODS:
            raise ValueError(f"CornerNetTestConfig.nms={self.nms!r}: expected one of {NMS_METHODS}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(not s > 0 for s in self.std):
            raise ValueError(
                f"CornerNetTestConfig mean={self.mean!r}, std={self.std!r}: expected three "
                "values each, std > 0"
            )
        if not self.nms_sigma > 0 or self.ae_threshold < 0:
            raise ValueError(
                f"CornerNetTestConfig nms_sigma={self.nms_sigma!r}, ae_threshold="
                f"{self.ae_threshold!r}: expected sigma > 0 and a threshold >= 0"
            )


def input_size(size: int) -> int:
    """Network input side for a scaled side: ``size | 127`` (the next ``128 k - 1``)."""
    return int(size) | 127


def place_centered(image: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
    """Paste a (3, h, w) image centred into a zero (3, H, W) canvas, H >= h and W >= w.

    Returns the canvas and the border ``(top, left) = (H // 2 - h // 2, W // 2 - w // 2)``,
    the position of the image's pixel (0, 0) in the canvas (the release's ``crop_image``).
    """
    h, w = image.shape[-2:]
    height, width = size
    if height < h or width < w:
        raise ValueError(f"canvas {size} smaller than the image {(h, w)}: expected H >= h, W >= w")
    top, left = height // 2 - h // 2, width // 2 - w // 2
    canvas = image.new_zeros(image.shape[0], height, width)
    canvas[:, top : top + h, left : left + w] = image
    return canvas, top, left


def decode_heads(heads: dict[str, torch.Tensor], cfg: CornerNetTestConfig) -> torch.Tensor:
    """One stack's head outputs -> (B, num_dets, 8) rows in heatmap coordinates.

    Rows: x1, y1, x2, y2, score (-1: rejected), tl score, br score, class. K is capped at
    C * h * w and num_dets at K * K, so small heatmaps (tests, tiny inputs) decode too.
    """
    missing = [k for k in HEAD_KEYS if k not in heads]
    if missing:
        raise ValueError(f"heads: missing keys {missing}; expected {list(HEAD_KEYS)}")
    c, h, w = heads["tl_heat"].shape[1:]
    k = min(cfg.K, c * h * w)
    with torch.no_grad():
        return cornernet_decode_op(  # kernels.cornernet_decode as an opaque, exportable op
            *(heads[key].detach() for key in HEAD_KEYS),
            K=k,
            kernel=cfg.kernel,
            ae_threshold=cfg.ae_threshold,
            num_dets=min(cfg.num_dets, k * k),
            backend=cfg.backend,
        )


def mirror_detections(dets: torch.Tensor, width: float) -> torch.Tensor:
    """(..., 8) rows decoded on a mirrored map of ``width`` cells -> rows on the unmirrored
    map: ``x1 = width - x2``, ``x2 = width - x1`` (a new tensor)."""
    out = dets.clone()
    out[..., 0] = width - dets[..., 2]
    out[..., 2] = width - dets[..., 0]
    return out


def rescale_detections(
    dets: torch.Tensor,
    ratio: tuple[float, float],
    border: tuple[float, float],
    clip_size: tuple[float, float],
    scale: float = 1.0,
) -> torch.Tensor:
    """(N, 8) rows in heatmap coordinates -> boxes in image pixels (a new tensor).

    ``x = clip(x / ratio_x - left, 0, clip_w) / scale`` (y likewise with ``ratio_y``, ``top``,
    ``clip_h``); ratio = (out_h / in_h, out_w / in_w), border = (top, left), clip_size = (h, w).
    Columns 4.. are copied unchanged.
    """
    out = dets.clone()
    for col, axis in ((0, 1), (1, 0), (2, 1), (3, 0)):
        v = dets[:, col] / ratio[axis] - border[axis]
        out[:, col] = v.clamp(0, clip_size[axis]) / scale
    return out


def select_detections_padded(
    rows: torch.Tensor, cfg: CornerNetTestConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, R, 8) rows in image pixels -> boxes (B, M, 4), scores (B, M), labels (B, M) and
    count (B,), M = ``cfg.max_per_image``: per image, drop rejected pairs (score -1),
    per-class soft-NMS (``cfg.nms``; all classes in one :func:`kernels.soft_nms.
    batched_soft_nms` call), the M highest scores; slots >= count are padding (box 0, score 0,
    label -1). Static shapes: :func:`kernels.ops.select_detections_op`, an opaque op."""
    return select_detections_op(
        rows,
        method=cfg.nms,
        sigma=cfg.nms_sigma,
        iou_threshold=cfg.nms_threshold,
        score_threshold=cfg.score_threshold,
        offset=cfg.nms_offset,
        max_per_image=cfg.max_per_image,
        backend=cfg.backend,
    )


def unpad_detections(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, count: torch.Tensor
) -> list[Detections]:
    """Padded (B, M, ...) detections and count (B,) -> B :class:`Detections` of ``count[i]``
    rows each (one host sync: ``count.tolist()``)."""
    return [
        Detections(boxes[i, :n], scores[i, :n], labels[i, :n]) for i, n in enumerate(count.tolist())
    ]


def select_detections(rows: torch.Tensor, cfg: CornerNetTestConfig) -> Detections:
    """(N, 8) rows in image pixels -> :class:`Detections`: :func:`select_detections_padded`
    of the one image, unpadded."""
    return unpad_detections(*select_detections_padded(rows[None], cfg))[0]


def _check_image(image: object, index: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        what = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"images[{index}]: expected a (3, H, W) tensor, got {what}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ValueError(f"images[{index}]: expected uint8 or a float dtype, got {image.dtype}")
    if min(image.shape[-2:]) < 1:
        raise ValueError(f"images[{index}]: expected a non-empty image, got {tuple(image.shape)}")
    return image


def _last_stack(outputs: object) -> dict[str, torch.Tensor]:
    """A model's outputs -> the last stack's heads (a list of per-stack dicts, or a dict with
    ``"stacks"``: the :class:`~detectors.cornernet.detector.CornerNetDetector`'s)."""
    stacks = outputs["stacks"] if isinstance(outputs, dict) else outputs
    if not isinstance(stacks, (list, tuple)) or not stacks:
        raise ValueError(
            f"model outputs: expected a list of per-stack head dicts, got {type(stacks).__name__}"
        )
    return stacks[-1]


def _detect_one(
    model: nn.Module,
    image: torch.Tensor,
    cfg: CornerNetTestConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> Detections:
    """One image (3, H, W) in [0, 1] on ``device``: every scale (and flip), then selection."""
    height, width = image.shape[-2:]
    mean = torch.tensor(cfg.mean, device=device, dtype=dtype).view(3, 1, 1)
    std = torch.tensor(cfg.std, device=device, dtype=dtype).view(3, 1, 1)
    rows = []
    for scale in cfg.scales:
        new_h, new_w = int(height * scale), int(width * scale)
        if new_h < 1 or new_w < 1:
            raise ValueError(f"scale {scale} shrinks a {height}x{width} image to nothing")
        resized = image
        if (new_h, new_w) != (height, width):
            resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear")[0]
        inp_h, inp_w = input_size(new_h), input_size(new_w)
        canvas, top, left = place_centered(resized, (inp_h, inp_w))
        batch = ((canvas - mean) / std)[None]  # (1, 3, inp_h, inp_w)
        if cfg.flip:
            batch = torch.cat([batch, batch.flip(-1)])  # (2, 3, inp_h, inp_w)
        heads = _last_stack(model(batch))
        out_h, out_w = heads["tl_heat"].shape[-2:]
        dets = decode_heads(heads, cfg).float()  # (1 or 2, num_dets, 8)
        if cfg.flip:
            dets = torch.cat([dets[0], mirror_detections(dets[1], float(out_w))])
        ratio = (out_h / inp_h, out_w / inp_w)
        rows.append(
            rescale_detections(dets.reshape(-1, 8), ratio, (top, left), (new_h, new_w), scale)
        )
    return select_detections(torch.cat(rows), cfg)


def detect(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    cfg: CornerNetTestConfig | None = None,
) -> list[Detections]:
    """Run the release's test-time pipeline (see the module docstring) on each image.

    Args:
        model: a :class:`~detectors.cornernet.CornerNet` (or any module mapping (N, 3, H, W)
            to a list of per-stack head dicts, or to a dict with ``"stacks"``); it is run in
            eval mode under ``torch.no_grad()`` and its training flag restored afterwards.
        images: (3, H, W) tensors (or one (N, 3, H, W) tensor), RGB, float in [0, 1] or
            uint8 (divided by 255); sizes may differ (each image is processed alone: a batch
            of 1, or of 2 with ``cfg.flip``).
        cfg: test settings (default :class:`CornerNetTestConfig`).

    Returns:
        One :class:`Detections` per image: boxes (M, 4) xyxy in the ORIGINAL image's pixels
        (clipped to it), scores (M,) and 0-based labels (M,), highest score first,
        M <= ``cfg.max_per_image``.
    """
    cfg = cfg or CornerNetTestConfig()
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"images: expected a list of (3, H, W) tensors, got {type(images)}")
    checked = [_check_image(img, i) for i, img in enumerate(images)]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            results = []
            for img in checked:
                x = img.to(device=device, dtype=dtype)
                if img.dtype == torch.uint8:
                    x = x / 255.0
                results.append(_detect_one(model, x, cfg, device, dtype))
    finally:
        model.train(was_training)
    return results
