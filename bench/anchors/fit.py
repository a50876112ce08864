"""Anchor presets fitted to a data set's training boxes (``python -m bench anchors --fit``).

The anchor-based detectors' ``synthetic`` presets were first chosen by hand; this module
derives them from the training boxes instead (letterboxed into the network input), keeping
each detector's structure (levels, anchors per location, the number of sizes and ratios its
``synthetic`` preset has), so that its heads keep their shapes:

- YOLOv3 (:func:`kmeans_iou`): k-means on the boxes' (w, h) with distance 1 - IoU of boxes
  aligned at their centres, as YOLOv2 ("Dimension Clusters") and YOLOv3 (section 2.1) do: 9
  clusters from k-means++ starts drawn from a fixed seed, the best of ``restarts`` runs by mean
  IoU, sorted by area, three per map s8, s16, s32.
- RetinaNet, Faster R-CNN, SSD and DSSD (:func:`fit_levels`). Ratios: quantiles of the log
  aspect ratio at the centres of R equal-count bins (torchvision's h / w for the pyramid
  detectors' R ratios; for SSD's pairs r, 1/r, quantiles of |log(w / h)| at the centres of
  bins 2..R+1 of R + 1, bin 1 being the two squares). Sizes: per level, quantiles of the sizes
  sqrt(w h) of the boxes that level is responsible for, at the centres of S equal-count bins
  for S sizes per location (RetinaNet's 3 octave scales; one size, the median, for Faster
  R-CNN and for SSD's s_k; SSD's extra scale s_{L+1}, which only sets the second square of the
  last map, is the 99th percentile of all sizes, SSD's s_max). A level is responsible for the
  boxes whose best anchor (positional IoU; the detector's own generator at the input size)
  lies on it. So assignment and per-level quantiles alternate (Lloyd's algorithm; the sizes
  re-sorted after each round so that finer levels keep smaller anchors; a level fewer than
  ``min_share`` of the boxes choose keeps its sizes) for ``iters`` rounds or until nothing
  changes, from several starts: equal-count size bins, finest level first, and an octave
  around c x the level's stride for each c in ``STRIDE_MULTIPLES``. Kept: the round with the
  highest mean best IoU over the training boxes, the objective of YOLO's k-means too.
  Values are rounded (0.1 px, 0.001 of the image for SSD scales, 0.01 for ratios) before
  they are scored, so the score is the written preset's.

Public: ``ANCHOR_DETECTORS``, ``wh_iou``, ``kmeans_iou``, ``fit_priors``, ``fit_levels``,
``fit_presets`` (everything, from a data set's root folder), ``format_fields``.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.anchors.coverage import best_anchor_iou, box_sizes, load_boxes
from bench.spec import ANCHOR_DETECTORS
from detectors import build_detector
from detectors.pyramid import padded_size

__all__ = [
    "fit_levels",
    "fit_presets",
    "fit_priors",
    "format_fields",
    "kmeans_iou",
    "wh_iou",
]


# ---------------------------------------------------------------- YOLOv3: k-means on (w, h)
def wh_iou(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, 2), (K, 2) widths and heights -> (N, K) IoU of the boxes aligned at their centres."""
    inter = np.minimum(wh[:, None, 0], centroids[None, :, 0]) * np.minimum(
        wh[:, None, 1], centroids[None, :, 1]
    )
    return inter / (wh.prod(1)[:, None] + centroids.prod(1)[None, :] - inter)


def _kmeans_pp(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ starts under the 1 - IoU distance: each next centre drawn with probability
    proportional to its squared distance to the nearest centre so far."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(k - 1):
        d = 1.0 - wh_iou(wh, np.array(centres)).max(1)
        p = d**2
        total = p.sum()
        idx = rng.choice(len(wh), p=p / total) if total > 0 else rng.integers(len(wh))
        centres.append(wh[idx])
    return np.array(centres, dtype=np.float64)


def kmeans_iou(
    wh: np.ndarray, k: int = 9, seed: int = 0, restarts: int = 10, iters: int = 300
) -> tuple[np.ndarray, float]:
    """k-means of (N, 2) box widths and heights under the distance 1 - IoU.

    Returns the (k, 2) centroids (the mean (w, h) of their boxes) sorted by area, and the mean
    over boxes of the best centroid IoU ("Avg IoU" of YOLOv2's Table 1). Deterministic for a
    seed. ValueError for fewer than k boxes or non-positive sizes.
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    if len(wh) < k or k < 1:
        raise ValueError(f"{len(wh)} boxes for k={k} clusters: expected at least k >= 1 boxes")
    if (wh <= 0).any():
        raise ValueError("box widths and heights must be positive")
    rng = np.random.default_rng(seed)
    best, best_score = wh[:k], -1.0
    for _ in range(restarts):
        centres = _kmeans_pp(wh, k, rng)
        for _ in range(iters):
            assign = wh_iou(wh, centres).argmax(1)
            new = np.array(
                [wh[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)]
            )
            if np.allclose(new, centres):
                break
            centres = new
        score = float(wh_iou(wh, centres).max(1).mean())
        if score > best_score:
            best, best_score = centres, score
    return best[np.argsort(best.prod(1), kind="stable")], best_score


def fit_priors(
    wh: np.ndarray, per_level: Sequence[int] = (3, 3, 3), seed: int = 0, restarts: int = 10
) -> tuple[tuple[tuple[tuple[float, float], ...], ...], float]:
    """YOLOv3 priors: k-means (k = sum(per_level)), rounded to 0.1 px, smallest first, split
    ``per_level`` per map (finest map first). Returns the priors and their mean best IoU."""
    centres, _ = kmeans_iou(wh, sum(per_level), seed=seed, restarts=restarts)
    centres = np.round(centres, 1)
    score = float(wh_iou(np.asarray(wh, dtype=np.float64), centres).max(1).mean())
    pairs = [(float(w), float(h)) for w, h in centres]
    starts = np.cumsum([0, *per_level])
    return tuple(tuple(pairs[a:b]) for a, b in zip(starts[:-1], starts[1:])), score


# ---------------------------------------------------------------- levels: sizes and ratios
def _quantiles(values: torch.Tensor, n: int, first: int = 0, bins: int | None = None) -> list:
    """Quantiles of ``values`` at the centres of bins ``first``..``first + n - 1`` of ``bins``
    (default ``n``) equal-count bins."""
    bins = bins or n
    q = torch.tensor([(first + i + 0.5) / bins for i in range(n)], dtype=torch.float64)
    return torch.quantile(values.double(), q).tolist()


def _layout(config: Any) -> dict[str, Any]:
    """Levels, sizes per location and ratio counts of a pyramid or SSD config."""
    if "anchor_sizes" in config.ANCHOR_FIELDS:
        sizes = {len(level) for level in config.anchor_sizes}
        if len(sizes) != 1:
            raise ValueError(f"anchor sizes per level differ: {config.anchor_sizes}")
        return {"kind": "pyramid", "levels": len(config.anchor_sizes), "sizes": sizes.pop()}
    if "scales" in config.ANCHOR_FIELDS:
        return {"kind": "ssd", "levels": len(config.aspect_ratios), "sizes": 1}
    raise ValueError(f"{type(config).__name__}: no anchor sizes or scales to fit")


def _ratio_fields(config: Any, kind: str, boxes: torch.Tensor) -> dict[str, Any]:
    wh = (boxes[:, 2:] - boxes[:, :2]).double()
    if kind == "pyramid":  # torchvision's aspect ratio is h / w
        log_ratio = (wh[:, 1] / wh[:, 0]).log()
        n = len(config.aspect_ratios)
        return {"aspect_ratios": tuple(round(math.exp(q), 2) for q in _quantiles(log_ratio, n))}
    spread = (wh[:, 0] / wh[:, 1]).log().abs()
    per_map = []
    for ratios in config.aspect_ratios:  # pairs r, 1/r after the two squares (bin 1 of R + 1)
        qs = _quantiles(spread, len(ratios), first=1, bins=len(ratios) + 1)
        per_map.append(tuple(round(math.exp(q), 2) for q in qs))
    return {"aspect_ratios": tuple(per_map)}


def _size_fields(kind: str, sizes: list[list[float]], side: float, s_max: float) -> dict:
    if kind == "pyramid":
        return {"anchor_sizes": tuple(tuple(round(s, 1) for s in level) for level in sizes)}
    scales = [round(level[0] / side, 3) for level in sizes] + [round(s_max / side, 3)]
    return {"scales": tuple(scales)}


#: starting sizes c x stride of the level (for each c), besides equal-count size bins
STRIDE_MULTIPLES = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def fit_levels(
    name: str,
    boxes: torch.Tensor,
    image_size: tuple[int, int],
    iters: int = 15,
    min_share: float = 0.01,
    multiples: Sequence[float] = STRIDE_MULTIPLES,
) -> dict[str, Any]:
    """Fit the anchor sizes and ratios of detector ``name`` to ``boxes`` (N, 4) xyxy.

    ``boxes`` are in the pixels of an ``image_size`` (H, W) input; see the module docstring
    for the procedure. Returns ``{"fields": {config field: value}, "mean_best_iou", "start",
    "rounds", "level_shares"}`` (the share of boxes whose best anchor is on each level).
    """

    model = build_detector(name, 1)
    layout = _layout(model.config)
    kind, levels, per_level = layout["kind"], layout["levels"], layout["sizes"]
    sizes_all = box_sizes(boxes)
    ratio_fields = _ratio_fields(model.config, kind, boxes)
    s_max = _quantiles(sizes_all, 1, first=98, bins=99)[0] if kind == "ssd" else 0.0
    side = math.sqrt(image_size[0] * image_size[1])
    padded = padded_size(*image_size, model.size_divisor)
    strides = [side / math.sqrt(h * w) for h, w in model.feature_sizes(*padded)]
    flat = _quantiles(sizes_all, levels * per_level)
    starts = {
        "equal-count size bins": [flat[i * per_level : (i + 1) * per_level] for i in range(levels)]
    }
    for c in multiples:  # an octave of sizes around c x the level's stride
        steps = [2 ** ((i + 0.5) / per_level - 0.5) for i in range(per_level)]
        starts[f"{c:g} x stride"] = [[c * t * f for f in steps] for t in strides]

    def score(sizes: list[list[float]]) -> tuple[float, torch.Tensor, dict[str, Any]]:
        fields = {**_size_fields(kind, sizes, side, s_max), **ratio_fields}
        anchors, counts = build_detector(name, 1, **fields).anchor_grid(*image_size)
        best_iou, index = best_anchor_iou(anchors, boxes)
        level_of = torch.repeat_interleave(torch.arange(levels), torch.tensor(counts))[index]
        return float(best_iou.mean()), level_of, fields

    best: dict[str, Any] = {"mean_best_iou": -1.0}
    for start, sizes in starts.items():
        for rounds in range(1, iters + 2):
            mean_iou, level_of, fields = score(sizes)
            if mean_iou > best["mean_best_iou"]:
                shares = [
                    round(float((level_of == lvl).float().mean()), 4) for lvl in range(levels)
                ]
                best = {"fields": fields, "mean_best_iou": mean_iou, "start": start}
                best.update(rounds=rounds, level_shares=shares)
            new = []
            for lvl in range(levels):
                chosen = sizes_all[level_of == lvl]
                keep = chosen.numel() < max(min_share * len(boxes), 1)
                new.append(sizes[lvl] if keep else _quantiles(chosen, per_level))
            ordered = sorted(s for level in new for s in level)  # finest level: smallest sizes
            new = [ordered[i * per_level : (i + 1) * per_level] for i in range(levels)]
            if _size_fields(kind, new, side, s_max) == _size_fields(kind, sizes, side, s_max):
                break
            sizes = new
    return best


# ---------------------------------------------------------------- everything
def _distribution(boxes: torch.Tensor) -> dict[str, Any]:
    sizes = box_sizes(boxes)
    wh = boxes[:, 2:] - boxes[:, :2]
    ratio = wh[:, 0] / wh[:, 1]
    qs = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    at = torch.tensor(qs, dtype=torch.float64)
    return {
        "size_quantiles": dict(zip(map(str, qs), torch.quantile(sizes.double(), at).tolist())),
        "aspect_w_over_h_quantiles": dict(
            zip(map(str, qs), torch.quantile(ratio.double(), at).tolist())
        ),
    }


def fit_presets(
    root: str | Path,
    input_size: tuple[int, int] = (128, 128),
    names: Sequence[str] = ANCHOR_DETECTORS,
    split: str = "train",
    seed: int = 0,
) -> dict[str, Any]:
    """Fit every detector in ``names`` to the ``split`` boxes under ``root`` (COCO layout).

    Returns ``{"data", "split", "input_size", "images", "boxes", "date", "size_quantiles",
    "aspect_w_over_h_quantiles", "detectors": {name: {"fields", "mean_best_iou", "method",
    ...}}}``; ``fields`` are keyword arguments of the detector's builder.
    """

    per_image = load_boxes(root, split, input_size)
    boxes = torch.cat(per_image) if per_image else torch.zeros(0, 4)
    if boxes.shape[0] < 9:
        raise ValueError(f"{boxes.shape[0]} boxes in {root} ({split}): too few to fit anchors")
    out: dict[str, Any] = {
        "data": str(root),
        "split": split,
        "input_size": list(input_size),
        "images": len(per_image),
        "boxes": int(boxes.shape[0]),
        "date": datetime.date.today().isoformat(),
        **_distribution(boxes),
        "detectors": {},
    }
    done: dict[tuple, dict[str, Any]] = {}
    for name in names:
        model = build_detector(name, 1)
        config = model.config
        # the fit depends only on the generator, its preset's anchors and the maps' sizes
        key = (type(model.anchor_generator), repr(config.anchor_values()))
        key += (repr(model.anchor_grid(*input_size)[1]),)
        if key in done:
            out["detectors"][name] = {**done[key]}
            continue
        if "priors" in config.ANCHOR_FIELDS:
            wh = (boxes[:, 2:] - boxes[:, :2]).double().numpy()
            per_level = [len(level) for level in config.priors]
            priors, score = fit_priors(wh, per_level, seed=seed)
            fit = {"fields": {"priors": priors}, "mean_shape_iou": score}
            fit["method"] = f"k-means, 1 - IoU distance, k={sum(per_level)}, seed {seed}"
        else:
            fit = fit_levels(name, boxes, input_size)
            fit["method"] = "per-level size quantiles (Lloyd on best-anchor level), ratio quantiles"
        out["detectors"][name] = done[key] = fit
    return out


def format_fields(fields: dict[str, Any]) -> str:
    """``{"anchor_sizes": ((8.0, ...), ...)}`` -> ``anchor_sizes=((8.0, ...), ...)`` lines."""
    return "\n".join(f"{k}={v!r}," for k, v in fields.items())
