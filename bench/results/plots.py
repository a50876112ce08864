"""The report's figures (matplotlib, Agg backend), each a function of data -> one PNG file.

- :func:`plot_ap_vs_latency`: AP against end-to-end median latency, the Pareto front joined
  (no other row is both faster and more accurate than a point on it);
- :func:`plot_anchors_vs_ap`: anchors per image (symlog: anchor-free detectors sit at 0)
  against AP;
- :func:`plot_stage_latency`: per-stage median latency, stacked bars;
- :func:`plot_pr_curves`: precision against recall (COCOeval's 101 recall points);
- :func:`plot_training_curves`: training loss against images seen;
- :func:`plot_tide`: TIDE's dAP50 per error type, one group of six bars per detector;
- :func:`plot_sample`: one image with its detections and, for CornerNet, the top-left and
  bottom-right corner heatmaps (max over classes) overlaid.

Rows are result rows (:mod:`bench.measure.suite`); a statistic of -1 (COCO's "undefined") or None is
left out of a plot. Rows with random weights are drawn hollow and labelled "(random)".
PNG files carry no version or date metadata, so the same data gives the same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.results.store import write_atomic
from bench.results.tide import LABELS

__all__ = [
    "pareto_front",
    "plot_anchors_vs_ap",
    "plot_ap_vs_latency",
    "plot_pr_curves",
    "plot_sample",
    "plot_stage_latency",
    "plot_tide",
    "plot_training_curves",
]

STAGE_COLUMNS = (
    ("preprocess", "latency_preprocess_ms_p50"),
    ("forward", "latency_forward_ms_p50"),
    ("decode + NMS", "latency_decode_ms_p50"),
)


def _pyplot():
    import matplotlib  # matplotlib: imported on use (start-up time)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: imported on use (start-up time)

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save = {"format": "png", "dpi": 110, "bbox_inches": "tight", "metadata": {"Software": None}}
    write_atomic(path, lambda fh: fig.savefig(fh, **save), binary=True)
    _pyplot().close(fig)
    return path


def _number(value: Any) -> float | None:
    """A finite, defined value (COCO's -1 means undefined) or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return None if value < 0 else float(value)


def _label(row: Mapping[str, Any]) -> str:
    name = str(row["detector"])
    if row.get("batch", 1) != 1:
        name += f" (batch {row['batch']})"
    return name + (" (random)" if row.get("weights") == "random" else "")


def pareto_front(latency: Sequence[float], ap: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both (lower latency, higher AP),
    ordered by latency. Ties: of equal latencies only the best AP is kept."""
    if len(latency) != len(ap):
        raise ValueError(f"pareto_front: {len(latency)} latencies but {len(ap)} APs")
    order = sorted(range(len(ap)), key=lambda i: (latency[i], -ap[i]))
    front, best = [], -math.inf
    for i in order:
        if ap[i] > best:
            front.append(i)
            best = ap[i]
    return front


def _scatter(ax, xs, ys, rows) -> None:
    for x, y, row in zip(xs, ys, rows):
        hollow = row.get("weights") == "random"
        ax.scatter([x], [y], s=40, facecolors="none" if hollow else "C0", edgecolors="C0")
        ax.annotate(_label(row), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)


def plot_ap_vs_latency(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """AP (0.50:0.95) against end-to-end median latency, with the Pareto front."""
    plt = _pyplot()
    pts = [
        (lat, ap, r)
        for r in rows
        if (lat := _number(r.get("latency_ms_p50"))) is not None
        and (ap := _number(r.get("AP"))) is not None
    ]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if pts:
        xs, ys, used = zip(*pts)
        _scatter(ax, xs, ys, used)
        front = pareto_front(xs, ys)
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="C1", label="Pareto")
        ax.legend(loc="lower right")
    ax.set_xscale("log")  # latencies span orders of magnitude (CPU/GPU, tiny/hg104)
    ax.set_xlabel("end-to-end latency, median (ms per call, log scale)")
    ax.set_ylabel("COCO AP")
    ax.set_title("Accuracy against latency")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_anchors_vs_ap(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Anchors per image (symlog x axis) against AP."""
    plt = _pyplot()
    pts = [
        (float(r["anchors_per_image"]), ap, r)
        for r in rows
        if r.get("anchors_per_image") is not None and (ap := _number(r.get("AP"))) is not None
    ]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if pts:
        xs, ys, used = zip(*pts)
        _scatter(ax, xs, ys, used)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("anchors per image (0: anchor-free)")
    ax.set_ylabel("COCO AP")
    ax.set_title("Anchors against accuracy")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_stage_latency(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Stacked horizontal bars of each row's per-stage median latency."""
    plt = _pyplot()
    used = [r for r in rows if all(_number(r.get(c)) is not None for _, c in STAGE_COLUMNS)]
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(used), 2) + 1.2))
    left = np.zeros(len(used))
    for k, (stage, column) in enumerate(STAGE_COLUMNS):
        values = np.array([float(r[column]) for r in used])
        ax.barh(range(len(used)), values, left=left, color=f"C{k}", label=stage)
        left += values
    ax.set_yticks(range(len(used)), [_label(r) for r in used])
    ax.invert_yaxis()
    ax.set_xlabel("median latency per stage (ms per call)")
    ax.set_title("Where the time goes")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str
) -> Path:
    """Precision against recall, one line per name: ``{name: (recall (R,), precision (R,))}``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    if curves:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_training_curves(curves: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Training loss against images seen: ``{name: DataFrame with images_seen and loss}``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, frame in curves.items():
        ax.plot(frame["images_seen"], frame["loss"], label=name)
    ax.set_xlabel("images seen")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("Training curves (equal budgets)")
    if curves:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_tide(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Grouped bars: per row (detector) the AP50 gained by fixing each TIDE error type
    (``row["tide"]``: {type: dAP50}); rows without it are left out."""

    plt = _pyplot()
    used = [r for r in rows if isinstance(r.get("tide"), Mapping)]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(used) + 2), 4.5))
    width = 0.8 / len(LABELS)
    x = np.arange(len(used))
    for k, (key, name) in enumerate(LABELS.items()):
        values = [_number(r["tide"].get(key)) or 0.0 for r in used]
        ax.bar(x + (k - (len(LABELS) - 1) / 2) * width, values, width, color=f"C{k}",
               label=name)  # fmt: skip
    ax.set_xticks(x, [_label(r) for r in used], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("dAP50 (AP50 gained by the fix)")
    ax.set_title("TIDE error breakdown at IoU 0.5", pad=24)
    ax.legend(ncols=len(LABELS), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)  # fmt: skip
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_sample(
    path: str | os.PathLike,
    image: Any,
    detections: Any,
    class_names: Sequence[str],
    *,
    heatmaps: Mapping[str, Any] | None = None,
    title: str = "",
    max_boxes: int = 10,
) -> Path:
    """An image (3, S, S) in [0, 1] with its best ``max_boxes`` detections (boxes in its own
    pixels); ``heatmaps`` ``{"tl": (h, w), "br": (h, w)}`` add one overlaid panel each."""
    plt = _pyplot()
    img = np.asarray(image.detach().cpu().float() if hasattr(image, "detach") else image)
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"plot_sample: image must be (3, H, W), got shape {img.shape}")
    img = img.transpose(1, 2, 0).clip(0, 1)
    heatmaps = dict(heatmaps or {})
    panels = 1 + len(heatmaps)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    ax.imshow(img)
    scores = np.asarray(detections.scores, dtype=float)
    for j in np.argsort(-scores, kind="stable")[:max_boxes]:
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[j])
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="yellow", lw=1))
        label = int(detections.labels[j])
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        ax.text(x1, y1, f"{name} {scores[j]:.2f}", color="black", fontsize=6,
                bbox={"facecolor": "yellow", "alpha": 0.7, "pad": 1, "lw": 0})  # fmt: skip
    ax.set_title(title or "detections", fontsize=9)
    h, w = img.shape[:2]
    for k, (name, heat) in enumerate(heatmaps.items(), start=1):
        ax = axes[0, k]
        ax.imshow(img)
        ax.imshow(np.asarray(heat, dtype=float), cmap="magma", alpha=0.6, vmin=0, vmax=1,
                  extent=(0, w, h, 0), interpolation="nearest")  # fmt: skip
        ax.set_title(f"{name} corner heatmap (max over classes)", fontsize=9)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)
