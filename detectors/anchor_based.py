"""Pieces shared by the anchor-based detectors (RetinaNet, Faster R-CNN, SSD, DSSD, YOLOv3).

- :func:`padded_size` / :func:`pad_images`: torchvision's convention, zero padding at the
  bottom and right to a multiple of ``SIZE_DIVISOR`` (32); anchors are counted after it.
- :class:`PyramidNeck`: torchvision's ``FeaturePyramidNetwork`` over named hourglass maps
  (``"s4"``, ``"s8"``, ...) plus optional extra levels: ``"p6p7"`` (RetinaNet's P6 = 3x3
  stride-2 conv of C5 = s32, P7 = 3x3 stride-2 conv of ReLU(P6)) or ``"maxpool"`` (Faster
  R-CNN's P6 = stride-2 subsampling of P5). ``level_sizes(H, W)`` gives each level's map size
  without running the network.
- :func:`anchor_boxes` / :func:`count_anchors`: an ``AnchorGenerator`` or ``DefaultBoxGenerator``
  run on empty placeholder maps of the given sizes: the anchors of one image, or their number.
- :func:`match_anchors` / :func:`assignment_counts`: a torchvision ``Matcher`` over IoU(gt,
  anchors) per image, and the per-image means of positives (index >= 0), negatives
  (``Matcher.BELOW_LOW_THRESHOLD``) and ignored anchors (``Matcher.BETWEEN_THRESHOLDS``).
- :func:`decode_dense`: per-level top-k of per-anchor class probabilities, box decoding,
  clipping and ``batched_nms`` (the post-processing of torchvision's RetinaNet/FCOS, written
  once here so that each stage can be called and timed separately).
- :func:`preset_config`, :func:`targets_to`, :func:`check_image_sizes`: builder and input
  plumbing every detector repeats; ``anchors=PRESET`` takes another preset's anchor fields
  (:class:`AnchorFields`), e.g. the paper's anchors with everything else synthetic.
- :class:`AnchorBasedDetector`: a :class:`~detectors.base.Detector` whose ``anchors_per_image``
  and ``anchor_grid`` (the anchors) come from ``self.anchor_generator`` and ``feature_sizes``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork, batched_nms, box_iou, clip_boxes_to_image
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from detectors.base import Detections, Detector

__all__ = [
    "SIZE_DIVISOR",
    "AnchorBasedDetector",
    "AnchorFields",
    "anchor_boxes",
    "PyramidNeck",
    "assignment_counts",
    "check_image_sizes",
    "count_anchors",
    "decode_dense",
    "downsample_size",
    "generate_anchors",
    "head_norm_groups",
    "kaiming_init_towers",
    "match_anchors",
    "pad_images",
    "padded_size",
    "preset_config",
    "targets_to",
]

ConfigT = TypeVar("ConfigT")

#: inputs are padded to a multiple of this (torchvision's GeneralizedRCNNTransform default,
#: and what the tiny hourglass needs)
SIZE_DIVISOR = 32


def padded_size(height: int, width: int, divisor: int = SIZE_DIVISOR) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``divisor``; ValueError for sizes < 1."""
    for name, v in (("height", height), ("width", width), ("divisor", divisor)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}={v!r}: expected a positive int")
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def pad_images(images: torch.Tensor, divisor: int = SIZE_DIVISOR) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H', W') zero-padded at the bottom/right to multiples of divisor.

    Returns ``images`` itself when no padding is needed.
    """
    h, w = images.shape[-2:]
    ph, pw = padded_size(int(h), int(w), divisor)
    if (ph, pw) == (h, w):
        return images
    return F.pad(images, (0, pw - w, 0, ph - h))


def head_norm_groups(channels: int, min_group_channels: int = 8) -> int:
    """GroupNorm groups for the head: 32 (paper), fewer when channels / 32 < min_group_channels.

    torchvision's ``GroupNorm(32, C)`` was made for C = 256 (8 channels per group). With the
    tiny backbone's C = 32 it puts one channel in each group, and on a 1x1 level (P7 of a
    128 px input) each group then holds one value: normalised, it is 0 whatever the image
    (torch raises for a batch of one; larger batches silently lose the level). Keeping groups
    of ``min_group_channels`` channels makes a 1x1 level normalise that many values.
    """
    return max(1, min(32, channels // min_group_channels))


def kaiming_init_towers(*towers: nn.Module) -> None:
    """Re-initialise every ``Conv2d`` in ``towers`` Kaiming-normal (fan-in, ReLU), bias 0.

    Deviation from torchvision, which initialises RetinaNet's and FCOS's head towers with
    ``normal(std=0.01)``, a scale chosen for 256-channel heads: at C channels a 3x3 conv
    then multiplies the signal's standard deviation by about 0.01 * sqrt(9 C / 2), 0.12 at
    the tiny backbone's C = 32, so RetinaNet's four unnormalised convs shrink it ~5,000x and
    the head starts blind (it could not memorise 32 images: training AP50 0.45, 0.945 with
    this init). Under GroupNorm (FCOS) the forward is scale-free but Adam's fixed step on
    weights of norm ~0.01 is a ~70x larger effective learning rate. Only the towers change:
    the final predictors keep torchvision's init and prior bias. See docs/training-notes.md.
    """
    for tower in towers:
        for module in tower.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def downsample_size(size: int) -> int:
    """Output size of a stride-2 3x3 conv with padding 1 (or a 1x1 stride-2 pool): ceil(size/2)."""
    return (size + 1) // 2


class PyramidNeck(nn.Module):
    """FPN over backbone maps ``levels`` (e.g. ``("s8", "s16", "s32")``) plus extra levels.

    Args:
        in_channels: channels of every backbone map by name (``backbone.out_channels``).
        levels: the backbone maps to use, finest first; their names must be ``s<stride>``.
        out_channels: width of every pyramid level.
        extra: ``None``, ``"p6p7"`` (two stride-2 convs on the coarsest *backbone* map, as in
            the RetinaNet paper) or ``"maxpool"`` (one stride-2 subsampling of the coarsest
            pyramid level, as in the FPN paper's RPN).

    ``forward(features)`` -> ordered ``{"p<log2 stride>": (N, out_channels, H/s, W/s)}``.
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        levels: Sequence[str],
        out_channels: int,
        extra: str | None = None,
    ) -> None:
        super().__init__()
        missing = [name for name in levels if name not in in_channels]
        if not levels or missing:
            raise ValueError(
                f"pyramid levels {tuple(levels)!r}: expected names among {sorted(in_channels)}"
            )
        if extra not in (None, "p6p7", "maxpool"):
            raise ValueError(f"extra={extra!r}: expected None, 'p6p7' or 'maxpool'")
        self.levels = tuple(levels)
        self.out_channels = out_channels
        strides = [int(name[1:]) for name in levels]
        extra_block: nn.Module | None = None
        if extra == "p6p7":
            extra_block = LastLevelP6P7(in_channels[levels[-1]], out_channels)
            # torchvision switches to P5 when the widths happen to match; the paper uses C5.
            extra_block.use_P5 = False
            strides += [strides[-1] * 2, strides[-1] * 4]
        elif extra == "maxpool":
            extra_block = LastLevelMaxPool()
            strides += [strides[-1] * 2]
        self.strides = tuple(strides)
        self.names = tuple(f"p{s.bit_length() - 1}" for s in strides)
        self.fpn = FeaturePyramidNetwork(
            [in_channels[name] for name in levels], out_channels, extra_blocks=extra_block
        )

    def forward(self, features: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        """Named backbone maps -> ordered pyramid levels (finest first)."""
        inputs = OrderedDict((name, features[name]) for name in self.levels)
        outputs = self.fpn(inputs)
        return OrderedDict(zip(self.names, outputs.values()))

    def level_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Map size of every level for an input of (height, width) divisible by 32."""
        sizes = [(height // s, width // s) for s in self.strides[: len(self.levels)]]
        while len(sizes) < len(self.strides):
            h, w = sizes[-1]
            sizes.append((downsample_size(h), downsample_size(w)))
        return sizes


def generate_anchors(
    generator: nn.Module, images: torch.Tensor, feature_maps: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Run an anchor generator: per image, anchors (A, 4) xyxy over all levels, finest first."""
    image_sizes = [(int(images.shape[-2]), int(images.shape[-1]))] * int(images.shape[0])
    return generator(ImageList(images, image_sizes), list(feature_maps))


def anchor_boxes(
    generator: nn.Module, image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """(A, 4) xyxy anchors ``generator`` places on one (H, W) input with levels ``feature_sizes``
    (finest first): the generator runs on zero-channel placeholders on the default device."""
    h, w = image_size
    images = torch.empty(1, 0, h, w)
    maps = [torch.empty(1, 0, fh, fw) for fh, fw in feature_sizes]
    return generate_anchors(generator, images, maps)[0]


def count_anchors(
    generator: nn.Module, image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]
) -> int:
    """Anchors ``generator`` places on one (H, W) input whose levels have ``feature_sizes``:
    counted on :func:`anchor_boxes`, so it follows the generator rather than a formula."""
    return int(anchor_boxes(generator, image_size, feature_sizes).shape[0])


def match_anchors(
    matcher: Matcher,
    anchors: Sequence[torch.Tensor],
    targets: Sequence[dict[str, torch.Tensor]],
) -> list[torch.Tensor]:
    """Per image, the matcher's assignment of each anchor (A,) int64.

    A gt index (>= 0), ``Matcher.BELOW_LOW_THRESHOLD`` (-1, negative) or
    ``Matcher.BETWEEN_THRESHOLDS`` (-2, ignored). Images without boxes: all negative.
    """
    matched = []
    for anchors_i, target in zip(anchors, targets):
        boxes = target["boxes"].to(anchors_i)
        if boxes.numel() == 0:
            matched.append(
                torch.full(
                    (anchors_i.shape[0],),
                    Matcher.BELOW_LOW_THRESHOLD,
                    dtype=torch.int64,
                    device=anchors_i.device,
                )
            )
        else:
            matched.append(matcher(box_iou(boxes, anchors_i)))
    return matched


def assignment_counts(matched_idxs: Sequence[torch.Tensor]) -> dict[str, float]:
    """Per-image means of ``positives``, ``negatives`` and ``ignored`` in matcher outputs."""
    n = max(len(matched_idxs), 1)
    pos = sum(int((m >= 0).sum()) for m in matched_idxs)
    neg = sum(int((m == Matcher.BELOW_LOW_THRESHOLD).sum()) for m in matched_idxs)
    ign = sum(int((m == Matcher.BETWEEN_THRESHOLDS).sum()) for m in matched_idxs)
    return {"positives": pos / n, "negatives": neg / n, "ignored": ign / n}


def decode_dense(
    scores: torch.Tensor,
    box_regression: torch.Tensor,
    anchors: Sequence[torch.Tensor],
    num_per_level: Sequence[int],
    image_sizes: Sequence[tuple[int, int]],
    decode_boxes: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.5,
    max_detections: int = 100,
) -> list[Detections]:
    """Dense per-anchor predictions -> per-image detections after class-wise NMS.

    Args:
        scores: (N, A, K) class probabilities (sigmoid, not softmax: no background column).
        box_regression: (N, A, 4) box deltas.
        anchors: N tensors (A, 4) xyxy.
        num_per_level: anchors of each level, summing to A (top-k is taken per level).
        image_sizes: (h, w) per image; boxes are clipped to it.
        decode_boxes: ``(deltas (M, 4), anchors (M, 4)) -> boxes (M, 4)``, e.g.
            ``BoxCoder.decode_single``.
    """
    if scores.dim() != 3 or box_regression.shape[:2] != scores.shape[:2]:
        raise ValueError(
            f"scores {tuple(scores.shape)} and box_regression {tuple(box_regression.shape)}: "
            "expected (N, A, K) and (N, A, 4)"
        )
    if sum(num_per_level) != scores.shape[1]:
        raise ValueError(f"num_per_level {list(num_per_level)} must sum to A={scores.shape[1]}")
    num_classes = scores.shape[2]
    results = []
    for i, (h, w) in enumerate(image_sizes):
        boxes_all, scores_all, labels_all = [], [], []
        for s_lvl, r_lvl, a_lvl in zip(
            scores[i].split(list(num_per_level)),
            box_regression[i].split(list(num_per_level)),
            anchors[i].split(list(num_per_level)),
        ):
            flat = s_lvl.flatten()  # (A_l, K) -> (A_l * K,)
            keep = torch.nonzero(flat > score_thresh).squeeze(1)
            top = flat[keep].topk(min(topk_candidates, keep.numel()))
            idx = keep[top.indices]
            anchor_idx = torch.div(idx, num_classes, rounding_mode="floor")
            boxes = decode_boxes(r_lvl[anchor_idx], a_lvl[anchor_idx])
            boxes_all.append(clip_boxes_to_image(boxes.reshape(-1, 4), (h, w)))
            scores_all.append(top.values)
            labels_all.append(idx % num_classes)
        boxes_i = torch.cat(boxes_all)
        scores_i = torch.cat(scores_all)
        labels_i = torch.cat(labels_all)
        keep = batched_nms(boxes_i, scores_i, labels_i, nms_thresh)[:max_detections]
        results.append(Detections(boxes_i[keep], scores_i[keep], labels_i[keep]))
    return results


class AnchorFields:
    """Mixin of a frozen detector config: ``ANCHOR_FIELDS`` name the fields that define the
    anchors (sizes, ratios, scales, priors), which ``anchors="paper"`` takes from a preset."""

    ANCHOR_FIELDS: ClassVar[tuple[str, ...]] = ()

    def anchor_values(self) -> dict[str, Any]:
        """``{field: value}`` of the anchor fields."""
        return {name: getattr(self, name) for name in self.ANCHOR_FIELDS}

    def with_anchors_of(self, other: Any) -> Any:
        """A copy of this config with ``other``'s anchor fields (everything else kept)."""
        return dataclasses.replace(self, **other.anchor_values())  # type: ignore[type-var]


def preset_config(
    presets: Mapping[str, ConfigT], preset: str, overrides: dict[str, Any]
) -> ConfigT:
    """``presets[preset]`` (a frozen dataclass) with fields replaced by ``overrides``.

    ``overrides["anchors"]`` (a preset name, for configs with :class:`AnchorFields`) first
    takes that preset's anchor fields; the other overrides then apply. ``overrides`` is not
    changed. ValueError naming the choices for an unknown preset, anchors preset or field.
    """
    if preset not in presets:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(presets)}")
    config = presets[preset]
    overrides = dict(overrides)
    anchors = overrides.pop("anchors", None)
    options = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    if isinstance(config, AnchorFields):
        options.add("anchors")
    unknown = sorted(set(overrides) - options)
    if anchors is not None and "anchors" not in options:
        unknown.append("anchors")
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {type(config).__name__}: "
            f"expected among {', '.join(sorted(options))}"
        )
    if anchors is not None:
        if anchors not in presets:
            raise ValueError(f"anchors={anchors!r}: expected one of {', '.join(presets)}")
        config = config.with_anchors_of(presets[anchors])  # type: ignore[attr-defined]
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]


def targets_to(
    targets: Sequence[dict[str, torch.Tensor]], device: torch.device, dtype: torch.dtype
) -> list[dict[str, torch.Tensor]]:
    """Copies of ``targets`` with boxes (M, 4) as ``dtype`` and labels (M,) int64 on ``device``."""
    return [
        {
            "boxes": t["boxes"].to(device=device, dtype=dtype).reshape(-1, 4),
            "labels": t["labels"].to(device=device, dtype=torch.int64),
        }
        for t in targets
    ]


def check_image_sizes(image_sizes: object, batch: int) -> list[tuple[int, int]]:
    """Validate ``image_sizes``: ``batch`` pairs (h, w) of positive ints; ValueError otherwise."""
    sizes = list(image_sizes) if isinstance(image_sizes, (list, tuple)) else None
    if sizes is None or len(sizes) != batch:
        raise ValueError(f"image_sizes must be a list of {batch} (height, width) pairs")
    out = []
    for i, hw in enumerate(sizes):
        if len(hw) != 2 or any(int(v) < 1 for v in hw):
            raise ValueError(f"image_sizes[{i}]={hw!r}: expected (height, width) >= 1")
        out.append((int(hw[0]), int(hw[1])))
    return out


class AnchorBasedDetector(Detector):
    """A detector with an ``anchor_generator`` and a ``feature_sizes(H, W)`` method.

    Subclasses set ``self.anchor_generator`` (``AnchorGenerator`` or ``DefaultBoxGenerator``)
    and either ``self.neck`` (a :class:`PyramidNeck`) or their own :meth:`feature_sizes`.
    """

    #: inputs are zero-padded to a multiple of this before the backbone
    size_divisor: int = SIZE_DIVISOR

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Size of each map the anchor generator sees, for a padded (height, width) input."""
        return self.neck.level_sizes(height, width)

    def anchors_per_image(self, height: int, width: int) -> int:
        """Anchors on an input of (height, width) after padding to ``size_divisor``."""
        h, w = padded_size(height, width, self.size_divisor)
        return count_anchors(self.anchor_generator, (h, w), self.feature_sizes(h, w))

    def anchor_grid(self, height: int, width: int) -> tuple[torch.Tensor, list[int]]:
        """The anchors ``forward`` places on an (height, width) input, without the network.

        Returns (A, 4) xyxy float32 anchors on the CPU in input pixels (after the detector's
        padding), finest level first, and the number of anchors on each level (summing to A).
        """
        h, w = padded_size(height, width, self.size_divisor)
        sizes = self.feature_sizes(h, w)
        with torch.device("cpu"):  # placeholders on the CPU, whatever device the model is on
            anchors = anchor_boxes(self.anchor_generator, (h, w), sizes)
        per_location = self.anchor_generator.num_anchors_per_location()
        return anchors.float(), [fh * fw * a for (fh, fw), a in zip(sizes, per_location)]
