"""CornerNet behind cornerbench's common detector interface (:mod:`detectors.base`).

:class:`CornerNetDetector` wraps a :class:`~detectors.cornernet.CornerNet`, which IS the shared
hourglass (it subclasses :class:`~detectors.backbones.HourglassBackbone`): ``backbone`` is that
model. The parameter split follows the modules: the backbone is the stem and hourglasses
(``pre``, ``kps``, ``cnvs``, ``inters``, ``inters_``, ``cnvs_``: exactly the parameters of a
plain hourglass of the same preset); the head is the corner-pooling modules and the six heads.

- ``forward(images)`` -> ``{"stacks": [per-stack dicts of head outputs], "input_size": (H, W)}``
  in both modes (every stack in training, the last only in eval mode, as the model). Inputs
  whose stride-4 map (ceil(H / 4)) the hourglass cannot halve ``n`` times are zero-padded at the
  bottom / right and the maps cropped back to ceil(H / 4) cells before corner pooling, so
  padding never enters the pooled rows; 128 k - 1 and multiples of 2**(n + 2) need none.
- ``loss`` builds targets with :func:`~detectors.cornernet.targets.build_batch_targets`
  (output size = the heatmaps', ``gaussian_iou`` from the model config, ``gaussian_bump``
  switchable) and returns :meth:`CornerNet.loss` (:func:`~detectors.cornernet.loss.
  cornernet_loss` with the config's weights).
- ``decode`` (fixed-size letterboxed inputs): :func:`kernels.decode.cornernet_decode` on the
  last stack, boxes times input / map size (4 for multiples of 4; the release's ratio for
  its 511 px inputs), clipped to ``image_sizes``, rejected pairs dropped, per-class soft-NMS,
  top 100 (:func:`~detectors.cornernet.inference.select_detections`). Split for export and
  CUDA graphs: ``decode_graph`` (static shapes, no host sync: decode and clipping) then
  ``decode_host`` (soft-NMS, unpadding); ``decode_padded`` is all of it with static shapes
  (soft-NMS inside one opaque op), what :class:`detectors.export.StaticInference` exports.
- ``detect(images)``: the release's full test pipeline on original images (flip and
  multi-scale optional), :func:`detectors.cornernet.inference.detect`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from detectors.base import Detections, Detector, check_images, check_targets
from detectors.cornernet import inference
from detectors.cornernet.config import CornerNetConfig
from detectors.cornernet.inference import CornerNetTestConfig
from detectors.cornernet.model import CornerNet
from detectors.cornernet.targets import build_batch_targets

__all__ = ["CORNERNET_PRESETS", "CornerNetDetector", "build_cornernet"]

BACKBONE_MODULES = ("pre", "kps", "cnvs", "inters", "inters_", "cnvs_")
HEAD_MODULES = ("tl_cnvs", "br_cnvs", "tl_heats", "br_heats", "tl_tags", "br_tags")
HEAD_MODULES += ("tl_regrs", "br_regrs")

#: Test settings per preset. "paper": the release's (K 100, 3x3 NMS, ae 0.5, 1000 pairs,
#: Gaussian soft-NMS, 100 per image). "synthetic": the same; the 128 px benchmark's 32x32
#: maps hold 9216 (class, cell) slots for 9 classes, so K = 100 still fits, and keeping
#: num_dets = 1000 keeps the decode and soft-NMS costs comparable with the paper's.
CORNERNET_PRESETS: dict[str, CornerNetTestConfig] = {
    "paper": CornerNetTestConfig(),
    "synthetic": CornerNetTestConfig(),
}


def _count(module: nn.Module, names: tuple[str, ...]) -> int:
    return sum(p.numel() for name in names for p in getattr(module, name).parameters())


class CornerNetDetector(Detector):
    """A :class:`CornerNet` with the common interface (see the module docstring).

    Args:
        model: the network; it becomes ``self.backbone`` (also reachable as ``self.model``).
        test_cfg: decode / test settings (default: the release's).
        gaussian_bump: False trains with single-pixel corner targets (the paper's ablation).
        max_objects: target slots per image for tags and offsets (the release's 128).
    """

    name = "cornernet"

    def __init__(
        self,
        model: CornerNet,
        test_cfg: CornerNetTestConfig | None = None,
        *,
        gaussian_bump: bool = True,
        max_objects: int = 128,
    ) -> None:
        if not isinstance(model, CornerNet):
            raise ValueError(f"model: expected a CornerNet, got {type(model).__name__}")
        super().__init__(model.cfg.num_classes, model)
        self.test_cfg = test_cfg or CornerNetTestConfig()
        self.gaussian_bump = bool(gaussian_bump)
        self.max_objects = int(max_objects)
        self.max_detections = self.test_cfg.max_per_image

    @property
    def model(self) -> CornerNet:
        """The wrapped :class:`CornerNet` (the same module as ``backbone``)."""
        return self.backbone  # type: ignore[return-value]

    @property
    def cfg(self) -> CornerNetConfig:
        return self.model.cfg

    def backbone_parameters(self) -> int:
        """Stem, hourglasses and links: the parameters of the plain hourglass preset."""
        return _count(self.model, BACKBONE_MODULES)

    def head_parameters(self) -> int:
        """Corner-pooling modules and the six heads of every stack."""
        return _count(self.model, HEAD_MODULES)

    def forward(self, images: torch.Tensor) -> dict:
        """(N, 3, H, W) -> ``{"stacks": [...], "input_size": (H, W)}``.

        Each stack dict holds ``tl_heat``, ``br_heat`` (N, C, h, w) logits, ``tl_tag``,
        ``br_tag`` (N, 1, h, w), ``tl_regr``, ``br_regr`` (N, 2, h, w) with h = ceil(H / 4).
        """
        check_images(images)
        height, width = int(images.shape[-2]), int(images.shape[-1])
        h, w = -(-height // 4), -(-width // 4)  # the stem's two stride-2 convs: ceil(H / 4)
        step = 2**self.model.n  # the hourglass halves the stride-4 map n times
        ph, pw = -(-h // step) * step, -(-w // step) * step
        if (ph, pw) != (h, w):
            images = F.pad(images, (0, 4 * pw - width, 0, 4 * ph - height))
        maps = self.model.forward_stacks(images)  # per stack (N, cnv_dim, ph, pw)
        first = 0 if self.training else len(maps) - 1
        stacks = [self.model.heads(maps[i][..., :h, :w], i) for i in range(first, len(maps))]
        return {"stacks": stacks, "input_size": (height, width)}

    def targets(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """CornerNet training targets for ``outputs``' heatmaps, on their device."""
        heat = outputs["stacks"][-1]["tl_heat"]
        checked = check_targets(targets, heat.shape[0], self.num_classes)
        built = build_batch_targets(
            [(t["boxes"].reshape(-1, 4), t["labels"]) for t in checked],
            tuple(outputs["input_size"]),
            (int(heat.shape[-2]), int(heat.shape[-1])),
            self.num_classes,
            max_objects=self.max_objects,
            gaussian_iou=self.cfg.gaussian_iou,
            gaussian_bump=self.gaussian_bump,
        )
        return {k: v.to(heat.device) for k, v in built.items()}

    def loss(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """``loss`` and its weighted parts ``loss_focal``, ``loss_pull``, ``loss_push``,
        ``loss_regr`` over all stacks in ``outputs`` (each divided by the stack count)."""
        return self.model.loss(outputs["stacks"], self.targets(outputs, targets))

    def _input_rows(self, outputs: dict, test_cfg: CornerNetTestConfig) -> torch.Tensor:
        """Decoded (N, num_dets, 8) rows with boxes in input pixels (not clipped)."""
        heads = outputs["stacks"][-1]
        dets = inference.decode_heads(heads, test_cfg).float()
        height, width = outputs["input_size"]
        h, w = heads["tl_heat"].shape[-2:]
        factor = dets.new_tensor([width / w, height / h, width / w, height / h])
        dets[..., :4] *= factor
        return dets

    def decode_graph(self, outputs: dict, image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        """The static-shape part of :meth:`decode`, with no host synchronisation (a CUDA graph
        can capture it): decoded (N, num_dets, 8) rows, boxes in input pixels clipped to
        ``image_sizes[i]`` = (h, w), rejected pairs still in (score -1)."""
        rows = self._input_rows(outputs, self.test_cfg)
        if not isinstance(image_sizes, (list, tuple)) or len(image_sizes) != rows.shape[0]:
            raise ValueError(f"image_sizes: expected {rows.shape[0]} (height, width) pairs")
        clipped = []
        for i, size in enumerate(image_sizes):
            if len(size) != 2 or min(int(v) for v in size) < 1:
                raise ValueError(f"image_sizes[{i}]={size!r}: expected (height, width) >= 1")
            r = rows[i].clone()
            r[:, 0:4:2] = r[:, 0:4:2].clamp(0, int(size[1]))
            r[:, 1:4:2] = r[:, 1:4:2].clamp(0, int(size[0]))
            clipped.append(r)
        return torch.stack(clipped)

    def decode_host(self, rows: torch.Tensor) -> list[Detections]:
        """The rest of :meth:`decode` on :meth:`decode_graph`'s rows: rejected pairs dropped,
        per-class soft-NMS, the ``test_cfg.max_per_image`` best (data-dependent sizes)."""
        return inference.unpad_detections(*inference.select_detections_padded(rows, self.test_cfg))

    def decode_padded(
        self, outputs: dict, image_sizes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode` with static shapes (exportable): boxes (N, M, 4), scores (N, M),
        labels (N, M), count (N,); M = ``test_cfg.max_per_image``, slots >= count padding.
        Soft-NMS is one opaque op (``cornerbench::select_detections``), which synchronises
        with the host inside: exportable and compilable, but not capturable in a CUDA graph."""
        rows = self.decode_graph(outputs, image_sizes)
        return inference.select_detections_padded(rows, self.test_cfg)

    def decode(self, outputs: dict, image_sizes: list[tuple[int, int]]) -> list[Detections]:
        """Per image: boxes in input pixels clipped to ``image_sizes[i]`` = (h, w), rejected
        pairs dropped, per-class soft-NMS, the ``test_cfg.max_per_image`` best."""
        return self.decode_host(self.decode_graph(outputs, image_sizes))

    def assignment_stats(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        """Per-image means: ``candidates`` (2 K corners decoded), ``pairs`` (corner pairs that
        pass the class, tag and geometry tests, among all K * K), ``positives`` (corner cells
        of objects, 2 per box) and ``negatives`` (every other cell of both heatmaps)."""
        heat = outputs["stacks"][-1]["tl_heat"]
        n, c, h, w = heat.shape
        k = min(self.test_cfg.K, c * h * w)
        all_pairs = dataclasses.replace(self.test_cfg, K=k, num_dets=k * k)
        with torch.no_grad():
            rows = inference.decode_heads(outputs["stacks"][-1], all_pairs)
            objects = int(self.targets(outputs, targets)["mask"].sum())
        pairs = int((rows[..., 4] > -1).sum())
        return {
            "candidates": float(2 * k),
            "pairs": pairs / n,
            "positives": 2 * objects / n,
            "negatives": 2 * c * h * w - 2 * objects / n,
        }

    def detect(
        self, images: list[torch.Tensor], test_cfg: CornerNetTestConfig | None = None
    ) -> list[Detections]:
        """The release's test pipeline on original (3, H, W) images; boxes in their pixels.

        See :func:`detectors.cornernet.inference.detect` (``test_cfg`` defaults to the
        detector's own; images are normalised there with its ``mean`` / ``std``).
        """
        return inference.detect(self, images, test_cfg or self.test_cfg)


def build_cornernet(
    num_classes: int,
    backbone: str = "tiny",
    preset: str = "synthetic",
    *,
    corner_pooling: bool = True,
    gaussian_bump: bool = True,
    **kwargs: object,
) -> CornerNetDetector:
    """CornerNet on the ``backbone`` hourglass preset ("tiny", "small", "hg52", "hg104").

    ``preset`` picks the test settings (:data:`CORNERNET_PRESETS`); ``corner_pooling=False``
    and ``gaussian_bump=False`` are the paper's ablations. ``kwargs`` override fields of
    :class:`CornerNetConfig` (e.g. ``nstack``) or of :class:`CornerNetTestConfig` (e.g. ``K``,
    ``flip``); ValueError names an unknown one.
    """
    if preset not in CORNERNET_PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(CORNERNET_PRESETS)}")
    model_fields = {f.name for f in dataclasses.fields(CornerNetConfig)}
    test_fields = {f.name for f in dataclasses.fields(CornerNetTestConfig)}
    unknown = sorted(set(kwargs) - model_fields - test_fields)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for cornernet: expected among "
            f"{', '.join(sorted(model_fields | test_fields))}"
        )
    model_kw = {k: v for k, v in kwargs.items() if k in model_fields}
    test_kw = {k: v for k, v in kwargs.items() if k in test_fields}
    model_kw.update(num_classes=num_classes, corner_pooling=corner_pooling)
    cfg = CornerNetConfig.from_preset(backbone, **model_kw)
    test_cfg = dataclasses.replace(CORNERNET_PRESETS[preset], **test_kw)
    return CornerNetDetector(CornerNet(cfg), test_cfg, gaussian_bump=gaussian_bump)
