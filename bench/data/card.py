"""Dataset cards: counts and statistics of a COCO-format dataset, in Markdown, JSON and PNG.

``write_card(root, splits)`` writes, into ``root``:

- ``card.json``: per split, image and annotation counts, instances per category, objects per
  image, box sizes (sqrt(w * h), pixels) and aspect ratios (w / h), COCO area bins, the share
  of boxes overlapping another box of the same image, and occlusion when annotated;
- ``README.md``: the same as tables, with the generator's conventions when given;
- ``card_stats.png``: histograms of box size and aspect ratio, and instances per category;
- ``card_samples.png``: a grid of sample images with their boxes and category names.

Each annotation file is read and checked by :func:`bench.data.coco.load_coco_json`, as
``bench run``'s loader does: a file that is not COCO is a ``UsageError`` naming it and what was
expected. Statistics are computed from the annotation JSON alone (plus a few images for the
grid), so a card for COCO 2017 takes seconds. Plots use matplotlib's ``Figure`` with the Agg
canvas and never touch pyplot's global state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.data.coco import load_coco_json
from bench.errors import UsageError

SIZE_BINS = np.geomspace(1, 1024, 41)  # box size bins, pixels
ASPECT_BINS = np.geomspace(1 / 8, 8, 37)  # w / h bins


def _boxes_by_image(data: dict) -> dict[int, np.ndarray]:
    per_image: dict[int, list] = {}
    for ann in data["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in per_image.items()}


def _overlap_share(per_image: dict[int, np.ndarray]) -> float:
    """Share of boxes that intersect (positive area) another box of their image."""
    hits = total = 0
    for b in per_image.values():
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        iw = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
        ih = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
        inter = (iw > 0) & (ih > 0)
        np.fill_diagonal(inter, False)
        hits += int(inter.any(1).sum())
        total += len(b)
    return hits / max(total, 1)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {}
    q = np.quantile(x, [0.0, 0.05, 0.5, 0.95, 1.0])
    return {k: round(float(v), 3) for k, v in zip(("min", "p5", "median", "p95", "max"), q)}


def split_stats(data: dict) -> dict[str, Any]:
    """Statistics of one COCO annotation dict (see the module docstring for the keys)."""
    anns = data["annotations"]
    boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    sizes = np.sqrt(boxes[keep, 2] * boxes[keep, 3])
    aspects = boxes[keep, 2] / boxes[keep, 3]
    areas = np.asarray([a.get("area", 0.0) for a in anns], dtype=np.float64)
    cats = [a["category_id"] for a in anns]
    per_cat = {c["id"]: 0 for c in data["categories"]}
    for c in cats:
        per_cat[c] = per_cat.get(c, 0) + 1
    per_image = _boxes_by_image(data)
    counts = np.asarray([len(v) for v in per_image.values()] or [0])
    repeats: dict[int, set] = {}
    seen: set[tuple[int, int]] = set()
    for a in anns:
        key = (a["image_id"], a["category_id"])
        if key in seen:
            repeats.setdefault(a["image_id"], set()).add(a["category_id"])
        seen.add(key)
    names = {c["id"]: c["name"] for c in data["categories"]}
    stats: dict[str, Any] = {
        "images": len(data["images"]),
        "annotations": len(anns),
        "images_without_annotations": len(data["images"]) - len(per_image),
        "per_category": [
            {"id": k, "name": names.get(k, "?"), "count": v} for k, v in per_cat.items()
        ],
        "objects_per_image": {"mean": round(float(counts.mean()), 3), "max": int(counts.max())},
        "images_with_repeated_category": len(repeats),
        "box_size": _quantiles(sizes),
        "box_aspect": _quantiles(aspects),
        "area_bins": {
            "small (< 32^2)": int((areas < 32**2).sum()),
            "medium": int(((areas >= 32**2) & (areas < 96**2)).sum()),
            "large (>= 96^2)": int((areas >= 96**2).sum()),
        },
        "overlapping_boxes_share": round(_overlap_share(per_image), 3),
        "crowd": int(sum(a.get("iscrowd", 0) for a in anns)),
    }
    vis = [a["visible_fraction"] for a in anns if "visible_fraction" in a]
    if vis:
        stats["visible_fraction"] = _quantiles(np.asarray(vis))
    return stats


def _plot_stats(path: Path, loaded: dict[str, dict]) -> None:
    from matplotlib.figure import Figure  # matplotlib: imported on use (start-up time)
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(15, 4.5))  # fixed margins: a layout engine costs a second
    ax_size, ax_aspect, ax_cat = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.27, top=0.92, wspace=0.2)
    top = 1
    for split, data in loaded.items():
        b = np.asarray([a["bbox"] for a in data["annotations"]], dtype=np.float64).reshape(-1, 4)
        b = b[(b[:, 2] > 0) & (b[:, 3] > 0)]
        top = max(top, max(max(i["width"], i["height"]) for i in data["images"]))
        # fractions per bin (not densities): equal-ratio bins then read as equal-width ones
        kw = {"histtype": "step", "linewidth": 1.5, "label": split}
        kw["weights"] = np.full(len(b), 1.0 / max(len(b), 1))
        ax_size.hist(np.sqrt(b[:, 2] * b[:, 3]), bins=SIZE_BINS, **kw)
        ax_aspect.hist(b[:, 2] / b[:, 3], bins=ASPECT_BINS, **kw)
    ax_size.set(xscale="log", xlim=(1, top), xlabel="box size sqrt(w*h) [px]", title="size")
    ax_size.set_ylabel("fraction of boxes")
    ax_aspect.set(xscale="log", xlabel="aspect ratio w/h", title="aspect ratio")
    ax_aspect.set_xticks([0.2, 0.5, 1, 2, 5], ["1:5", "1:2", "1:1", "2:1", "5:1"])
    ax_aspect.xaxis.set_minor_formatter(NullFormatter())
    first = next(iter(loaded.values()))
    names = [c["name"] for c in first["categories"]]
    width = 0.8 / max(len(loaded), 1)
    for k, (split, data) in enumerate(loaded.items()):
        per = {c["id"]: 0 for c in data["categories"]}
        for a in data["annotations"]:
            per[a["category_id"]] = per.get(a["category_id"], 0) + 1
        ids = [c["id"] for c in first["categories"]]
        ax_cat.bar(
            np.arange(len(ids)) + k * width, [per.get(i, 0) for i in ids], width, label=split
        )
    ax_cat.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax_cat.set(ylabel="instances", title="instances per category")
    for ax in (ax_size, ax_aspect, ax_cat):
        ax.legend()
    fig.savefig(path, dpi=80)


def _plot_samples(path: Path, data: dict, image_dir: Path, n: int = 16) -> None:
    from matplotlib.figure import Figure  # matplotlib: imported on use (start-up time)

    images = data["images"][:n]
    cols = int(np.ceil(np.sqrt(max(len(images), 1))))
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig = Figure(figsize=(3 * cols, 3 * rows))  # no layout engine: it costs a second here
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.97, wspace=0.04, hspace=0.1)
    names = {c["id"]: c["name"] for c in data["categories"]}
    palette = {cid: f"C{k % 10}" for k, cid in enumerate(sorted(names))}
    per_image: dict[int, list] = {}
    for a in data["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    for ax, info in zip(axes, images):
        try:
            with Image.open(image_dir / info["file_name"]) as im:
                ax.imshow(np.asarray(im.convert("RGB")))
        except OSError:
            ax.text(0.5, 0.5, "unreadable", ha="center", transform=ax.transAxes)
        for a in per_image.get(info["id"], []):
            x, y, w, h = a["bbox"]
            colour = palette.get(a["category_id"], "w")
            ax.add_patch(_rectangle(x, y, w, h, colour))
            ax.text(x, y, names.get(a["category_id"], "?"), color=colour, fontsize=6, va="bottom")
        ax.set_title(info["file_name"], fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.savefig(path, dpi=80)


def _rectangle(x: float, y: float, w: float, h: float, colour: str):
    from matplotlib.patches import Rectangle  # matplotlib: imported on use (start-up time)

    # COCO boxes cover pixels [x, x + w); imshow centres pixel i on i, so shift by half a pixel
    return Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1)


def _markdown(title: str, card: dict, generator: dict | None, conventions: str) -> str:
    lines = [f"# Dataset card: {title}", ""]
    if generator:
        params = ", ".join(f"{k}={v}" for k, v in generator.get("params", {}).items())
        lines += [f"Generated by `{generator.get('generator')}` v{generator.get('version')}"]
        lines += [f"with {params}.", ""]
    if conventions:
        lines += ["## Conventions", "", conventions.strip(), ""]
    lines += ["## Counts", "", "| split | images | annotations | objects/image (mean, max) |"]
    lines += ["| --- | --- | --- | --- |"]
    for split, s in card["splits"].items():
        opi = s["objects_per_image"]
        lines += [f"| {split} | {s['images']} | {s['annotations']} | {opi['mean']}, {opi['max']} |"]
    splits = list(card["splits"])
    lines += ["", "| category (id) | " + " | ".join(splits) + " |"]
    lines += ["| --- |" + " --- |" * len(splits)]
    first = card["splits"][splits[0]]["per_category"]
    for k, cat in enumerate(first):
        row = [str(card["splits"][s]["per_category"][k]["count"]) for s in splits]
        lines += [f"| {cat['name']} ({cat['id']}) | " + " | ".join(row) + " |"]
    lines += ["", "## Statistics", ""]
    for split, s in card["splits"].items():
        lines += [f"**{split}**", ""]
        for key in ("box_size", "box_aspect", "area_bins", "visible_fraction"):
            if key in s:
                lines += [f"- {key}: " + ", ".join(f"{k} {v}" for k, v in s[key].items())]
        lines += ["- images with two or more instances of one category: "]
        lines[-1] += f"{s['images_with_repeated_category']} of {s['images']}"
        lines += [f"- boxes overlapping another box: {s['overlapping_boxes_share']:.1%}"]
        if generator and split in generator.get("counts", {}):
            dropped = generator["counts"][split].get("dropped_occluded", 0)
            lines += [
                "- objects drawn but dropped as too occluded (less than the difficulty's "
                f"`min_visible` visible): {dropped}"
            ]
        lines += [""]
    lines += ["![size and aspect-ratio histograms](card_stats.png)", ""]
    lines += ["![sample images with their boxes](card_samples.png)", ""]
    return "\n".join(lines)


def write_card(
    root: str | Path,
    splits: dict[str, tuple[str | Path, str | Path]],
    *,
    title: str = "dataset",
    generator: dict | None = None,
    conventions: str = "",
) -> dict[str, Path]:
    """Write the card files into ``root``; returns their paths by kind.

    ``splits`` maps a split name to ``(image_dir, ann_file)``; the sample grid shows the first
    split's first 16 images. ``generator`` (the synthetic generator's parameters and counts)
    and ``conventions`` (Markdown) are copied into the card when given.
    """
    root = Path(root)
    loaded = {name: load_coco_json(ann) for name, (_, ann) in splits.items()}
    card = {"title": title, "generator": generator, "splits": {}}
    for name, data in loaded.items():
        ann = splits[name][1]
        try:
            if not all(im["width"] > 0 and im["height"] > 0 for im in data["images"]):
                raise ValueError("an image with a width or height <= 0")
            card["splits"][name] = split_stats(data)
        except (KeyError, TypeError, ValueError) as exc:  # COCO, but not the card's fields
            raise UsageError(
                f"annotation file {ann}: expected every image with a positive 'width' and "
                f"'height' and every box with 4 numbers; {type(exc).__name__}: {exc}"
            ) from exc
    paths = {
        "json": root / "card.json",
        "markdown": root / "README.md",
        "stats_png": root / "card_stats.png",
        "samples_png": root / "card_samples.png",
    }
    paths["json"].write_text(json.dumps(card, indent=2) + "\n")
    paths["markdown"].write_text(_markdown(title, card, generator, conventions))
    _plot_stats(paths["stats_png"], loaded)
    first = next(iter(splits))
    _plot_samples(paths["samples_png"], loaded[first], Path(splits[first][0]))
    return paths
