"""CenterNet (Zhou et al., "Objects as Points", arXiv 1904.07850, 2019) on the hourglass.

Anchor-free: every object is the peak of a class heatmap at its box centre, with the box size
and the centre's sub-cell offset regressed at that cell. Heads (CornerNet's ``make_head``:
3x3 conv + ReLU + 1x1 conv) on the last stack's stride-4 map (N, cnv_dim, H/4, W/4):
``heat`` (N, K, h, w) logits (bias -2.19), ``wh`` (N, 2, h, w) box (w, h) in map cells and
``reg`` (N, 2, h, w) offsets. (CenterNet's release puts heads on both stacks of Hourglass-104
for intermediate supervision; here only the last stack has them.)

Targets for a box (x1, y1, x2, y2) in input pixels: centre c = ((x1 + x2) / 2, (y1 + y2) / 2)
/ 4 on the map, cell q = floor(c); a Gaussian of radius r at q in the class heatmap
(CornerNet's ``draw_gaussian``), wh = (x2 - x1, y2 - y1) / 4, offset c - q.
r = max(0, int(radius((ceil(h), ceil(w)), 0.7))) in map cells. ``radius_form="release"``
(default) is CenterNet's: the earlier form of CornerNet's formula, three quadratic roots
(b + sqrt(b^2 - 4ac)) / 2 without the 1/a (CornerNet issue #37); it gives radii about 3x
those of the corrected form ``"corrected"`` (:func:`detectors.cornernet.targets.
gaussian_radius`, which our CornerNet uses): 5.5 against 1.6 cells for a 20x20-cell box.

Loss: CornerNet's focal loss variant on the heatmap (``loss_heat``), L1 on wh at the centres
x 0.1 (``loss_size``) and L1 on the offsets x 1 (``loss_offset``); the L1 terms are divided
by the number of regressed values (2 per object), as CenterNet's RegL1Loss; the parts are
reported weighted and sum to ``loss``.

Decoding: :func:`kernels.heatmap.heatmap_peaks` (sigmoid, 3x3 max-pool NMS, top 100 over
classes and cells), boxes ``(q + offset -/+ wh / 2) * 4`` clipped to the image; no box NMS
(the max-pool is CenterNet's NMS); slots without a peak (score 0) are dropped.
``decode_padded`` (= ``decode_graph``) is the same with static shapes, padded to k slots and
a count per image: exportable, with no host synchronisation (``decode_host`` unpads).

Input: zero-padded for the hourglass at the bottom/right and the map cropped to ceil(H/4) x
ceil(W/4) cells. ``anchors_per_image`` is 0. ``assignment_stats``: ``positives`` (centre
cells, heatmap value 1), ``negatives`` (every other heatmap cell: all enter the focal loss,
down-weighted near centres), ``ignored`` (0) and ``candidates``: the decoded peaks with score
above ``candidate_thresh`` = 0.05 (the score threshold RetinaNet's decoding uses; CenterNet
itself keeps all top 100 for COCO evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import clip_boxes_to_image

from detectors.backbones import build_hourglass
from detectors.base import (
    Detections,
    Detector,
    check_image_sizes,
    check_images,
    check_targets,
    targets_to,
)
from detectors.cornernet.inference import unpad_detections
from detectors.cornernet.loss import focal_loss, gather_at
from detectors.cornernet.modules import make_head
from detectors.cornernet.targets import draw_gaussian, gaussian_radius
from detectors.presets import preset_config
from detectors.pyramid import crop_map, pad_for_backbone
from kernels.ops import heatmap_peaks_op

__all__ = [
    "CENTERNET_PRESETS",
    "CenterNet",
    "CenterNetConfig",
    "build_centernet",
    "build_centernet_targets",
    "centernet_radius",
]

STRIDE = 4
RADIUS_FORMS = ("release", "corrected")


@dataclass(frozen=True)
class CenterNetConfig:
    """CenterNet hyper-parameters; defaults are the paper's / release's."""

    # IoU the Gaussian radius keeps (release: gaussian_radius(..., min_overlap=0.7))
    gaussian_iou: float = 0.7
    # "release": CenterNet's earlier radius form; "corrected": CornerNet's corrected one
    radius_form: str = "release"
    # lambda_size 0.1 and lambda_off 1 (paper section 3)
    size_weight: float = 0.1
    offset_weight: float = 1.0
    # heatmap bias init (release: -2.19)
    heat_bias: float = -2.19
    # hidden width of the heads; None: the backbone's dims[0] (256 at hg104, the release's)
    head_dim: int | None = None
    # decoding: top 100 peaks of a 3x3 max-pool NMS (paper section 4)
    topk: int = 100
    nms_kernel: int = 3
    # score above which a decoded peak counts as a candidate in assignment_stats
    candidate_thresh: float = 0.05

    def __post_init__(self) -> None:
        if self.radius_form not in RADIUS_FORMS:
            raise ValueError(f"radius_form={self.radius_form!r}: expected one of {RADIUS_FORMS}")


#: anchor-free: both presets are the paper's settings
CENTERNET_PRESETS: dict[str, CenterNetConfig] = {
    "paper": CenterNetConfig(),
    "synthetic": CenterNetConfig(),
}


def centernet_radius(det_size: tuple[float, float], min_overlap: float) -> float:
    """CenterNet's Gaussian radius: the earlier form of CornerNet's formula (see module doc).

    For the three corner-displacement cases, the larger root of ``a r^2 + b r + c = 0`` taken
    as ``(b + sqrt(b^2 - 4ac)) / 2`` (not divided by ``a``); the smallest over the cases.
    ``det_size`` is (height, width) in map cells; the result is not truncated.
    """
    h, w = float(det_size[0]), float(det_size[1])
    if not 0.0 < min_overlap < 1.0:
        raise ValueError(f"min_overlap={min_overlap}: expected a value in (0, 1)")
    if h < 0 or w < 0 or not (math.isfinite(h) and math.isfinite(w)):
        raise ValueError(f"det_size={det_size}: expected finite (height, width) >= 0")
    o = min_overlap
    cases = (
        (1.0, h + w, w * h * (1 - o) / (1 + o)),
        (4.0, 2 * (h + w), (1 - o) * w * h),
        (4 * o, -2 * o * (h + w), (o - 1) * w * h),
    )
    return min((b + math.sqrt(b * b - 4 * a * c)) / 2 for a, b, c in cases)


def build_centernet_targets(
    targets: list[dict[str, torch.Tensor]],
    num_classes: int,
    input_size: tuple[int, int],
    map_size: tuple[int, int],
    gaussian_iou: float = 0.7,
    radius_form: str = "release",
) -> dict[str, torch.Tensor]:
    """Heatmaps and regression targets for a batch (CPU, float32).

    Args:
        targets: N dicts with ``boxes`` (M_i, 4) xyxy input pixels, ``labels`` (M_i,) 0-based.
        input_size: (H, W) of the input; boxes are clipped to it, empty ones dropped.
        map_size: (h, w) of the output map (stride 4).

    Returns:
        ``heat`` (N, K, h, w), ``wh`` and ``reg`` (N, M, 2), ``ind`` (N, M) int64 flat cell
        indices, ``mask`` (N, M) bool, with M = max_i M_i (at least 1).
    """
    if radius_form not in RADIUS_FORMS:
        raise ValueError(f"radius_form={radius_form!r}: expected one of {RADIUS_FORMS}")
    radius_fn = centernet_radius if radius_form == "release" else gaussian_radius
    n, (h, w) = len(targets), map_size
    m = max([1] + [int(t["boxes"].shape[0]) for t in targets])
    heat = torch.zeros(n, num_classes, h, w)
    wh, reg = torch.zeros(n, m, 2), torch.zeros(n, m, 2)
    ind, mask = torch.zeros(n, m, dtype=torch.int64), torch.zeros(n, m, dtype=torch.bool)
    for i, t in enumerate(targets):
        boxes = t["boxes"].detach().float().cpu().clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, input_size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, input_size[0])
        for k, (box, label) in enumerate(zip(boxes.tolist(), t["labels"].tolist())):
            bw, bh = (box[2] - box[0]) / STRIDE, (box[3] - box[1]) / STRIDE
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = (box[0] + box[2]) / (2 * STRIDE), (box[1] + box[3]) / (2 * STRIDE)
            qx, qy = min(int(cx), w - 1), min(int(cy), h - 1)
            r = max(0, int(radius_fn((math.ceil(bh), math.ceil(bw)), gaussian_iou)))
            draw_gaussian(heat[i, label], (qx, qy), r)
            wh[i, k] = torch.tensor([bw, bh])
            reg[i, k] = torch.tensor([cx - qx, cy - qy])
            ind[i, k], mask[i, k] = qy * w + qx, True
    return {"heat": heat, "wh": wh, "reg": reg, "ind": ind, "mask": mask}


def _masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of |pred - target| over masked (N, M, 2) slots / (2 * objects + 1e-4)."""
    valid = mask.unsqueeze(2).to(pred.dtype)  # (N, M, 1)
    return ((pred - target).abs() * valid).sum() / (2 * valid.sum() + 1e-4)


class CenterNet(Detector):
    """CenterNet heads on the hourglass's last stack (see the module docstring)."""

    name = "centernet"

    def __init__(
        self, num_classes: int, backbone: nn.Module, config: CenterNetConfig | None = None
    ) -> None:
        super().__init__(num_classes, backbone)
        cfg = config or CenterNetConfig()
        self.config = cfg
        cnv_dim, hidden = int(backbone.cnv_dim), cfg.head_dim or int(backbone.dims[0])
        self.heat = make_head(cnv_dim, hidden, num_classes, cfg.heat_bias)
        self.wh = make_head(cnv_dim, hidden, 2)
        self.reg = make_head(cnv_dim, hidden, 2)

    def forward(self, images: torch.Tensor) -> dict:
        """(N, 3, H, W) -> ``heat`` (N, K, h, w), ``wh``, ``reg`` (N, 2, h, w); h = ceil(H/4)."""
        check_images(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        stack = self.backbone.forward_stacks(pad_for_backbone(images, self.backbone))[-1]
        x = crop_map(stack, STRIDE, size)
        return {"heat": self.heat(x), "wh": self.wh(x), "reg": self.reg(x), "input_size": size}

    def targets(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """Training targets for ``outputs``' map (see :func:`build_centernet_targets`)."""
        heat = outputs["heat"]
        checked = check_targets(targets, heat.shape[0], self.num_classes)
        built = build_centernet_targets(
            targets_to(checked, torch.device("cpu"), torch.float32),
            self.num_classes,
            outputs["input_size"],
            (int(heat.shape[-2]), int(heat.shape[-1])),
            self.config.gaussian_iou,
            self.config.radius_form,
        )
        return {k: v.to(heat.device) for k, v in built.items()}

    def loss(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """``loss_heat`` (focal), ``loss_size`` (0.1 x L1), ``loss_offset`` (L1), ``loss``."""
        gt = self.targets(outputs, targets)
        cfg = self.config
        loss_heat = focal_loss(outputs["heat"], gt["heat"])
        wh = gather_at(outputs["wh"], gt["ind"]).float()  # (N, 2, h, w) -> (N, M, 2)
        reg = gather_at(outputs["reg"], gt["ind"]).float()
        loss_size = cfg.size_weight * _masked_l1(wh, gt["wh"], gt["mask"])
        loss_offset = cfg.offset_weight * _masked_l1(reg, gt["reg"], gt["mask"])
        return {
            "loss_heat": loss_heat,
            "loss_size": loss_size,
            "loss_offset": loss_offset,
            "loss": loss_heat + loss_size + loss_offset,
        }

    def decode_padded(
        self, outputs: dict, image_sizes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode` with static shapes (exportable): boxes (N, k, 4), scores (N, k),
        labels (N, k), count (N,) with k = min(topk, max_detections, C*h*w); slots >= count
        (no peak: score 0) hold box 0, score 0, label -1."""
        heat = outputs["heat"]
        n, c, h, w = heat.shape
        sizes = check_image_sizes(image_sizes, n)
        k = min(self.config.topk, self.max_detections, c * h * w)
        # peaks are not differentiable (and the torch path writes with out=): detach
        scores, classes, ys, xs = heatmap_peaks_op(heat.detach(), k, kernel=self.config.nms_kernel)
        idx = ys * w + xs  # (N, k) flat cell index
        wh = gather_at(outputs["wh"], idx).float().clamp(min=0)  # (N, k, 2); x2 >= x1
        reg = gather_at(outputs["reg"], idx).float()
        cx, cy = xs.float() + reg[..., 0], ys.float() + reg[..., 1]
        half_w, half_h = wh[..., 0] / 2, wh[..., 1] / 2
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1) * STRIDE
        boxes = torch.stack([clip_boxes_to_image(boxes[i], size) for i, size in enumerate(sizes)])
        # scores are sorted descending and slots past the last peak hold 0: a prefix is kept
        keep = scores > 0  # (N, k)
        boxes = torch.where(keep[..., None], boxes, 0.0)
        classes = torch.where(keep, classes, -1)
        return boxes, scores, classes, keep.sum(dim=1)

    def decode_graph(
        self, outputs: dict, image_sizes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The part of :meth:`decode` a CUDA graph can capture: all of it, padded."""
        return self.decode_padded(outputs, image_sizes)

    def decode_host(self, padded: tuple[torch.Tensor, ...]) -> list[Detections]:
        """:meth:`decode_graph`'s padded detections -> one :class:`Detections` per image."""
        return unpad_detections(*padded)

    def decode(self, outputs: dict, image_sizes: list[tuple[int, int]]) -> list[Detections]:
        """Top-100 heatmap peaks (3x3 max-pool NMS) -> boxes clipped to each image."""
        return self.decode_host(self.decode_padded(outputs, image_sizes))

    def assignment_stats(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """Per-image means: ``positives``, ``negatives``, ``ignored`` (0), ``candidates``."""
        with torch.no_grad():
            gt = self.targets(outputs, targets)
            dets = self.decode(outputs, [outputs["input_size"]] * outputs["heat"].shape[0])
        n = max(len(dets), 1)
        pos = int(gt["heat"].eq(1).sum())
        cand = sum(int((d.scores > self.config.candidate_thresh).sum()) for d in dets)
        return {
            "positives": pos / n,
            "negatives": (gt["heat"].numel() - pos) / n,
            "ignored": 0.0,
            "candidates": cand / n,
        }


def build_centernet(
    num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs: object
) -> CenterNet:
    """CenterNet on ``build_hourglass(backbone)``; ``kwargs`` override :class:`CenterNetConfig`."""
    config = preset_config(CENTERNET_PRESETS, preset, kwargs)
    return CenterNet(num_classes, build_hourglass(backbone), config)
