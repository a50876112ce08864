"""COCO bbox evaluation with pycocotools (the command is :mod:`bench.commands.eval`).

- ``detections_to_coco(image_ids, boxes_list, scores_list, labels_list, label_to_cat_id)``:
  per-image xyxy boxes, scores and contiguous labels -> COCO results dicts
  ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, the top 100 per image.
- ``evaluate_coco(gt, detections)``: the 12 COCO summary statistics and per-class AP.

Conventions:
- At most 100 detections per image (highest scores first; ties keep input order) are
  evaluated and written. COCOeval's ``maxDets=100`` applies per image *and per category*, so
  without this cap a detector emitting more boxes would be scored on more than 100.
- A statistic with no ground-truth objects behind it (e.g. APs when no object is small) is
  ``-1.0``, as pycocotools reports it, so the JSON stays standard; treat it as "not defined",
  never average it. The same holds for a category's AP when the category has no objects.
- Per-class AP: mean precision over IoU 0.50:0.95, area "all", 100 detections.
- Zero detections are evaluated like any other result set: AP/AR 0 where objects exist.
- Ground truth annotations without ``area`` get ``w * h``, without ``iscrowd`` get 0.
- pycocotools' prints are captured; the summary text is returned under ``"summary"`` and
  logged at DEBUG level.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.results.store import write_json_atomic

log = logging.getLogger(__name__)

STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip
MAX_PER_IMAGE = 100


def _to_numpy(x: Any, name: str, index: int) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{name}[{index}]: expected a numeric tensor or array, got {type(x)}")
    return arr


def detections_to_coco(
    image_ids: Sequence[int],
    boxes_list: Sequence[Any],
    scores_list: Sequence[Any],
    labels_list: Sequence[Any],
    label_to_cat_id: Sequence[int] | Mapping[int, int],
    max_per_image: int = MAX_PER_IMAGE,
) -> list[dict[str, Any]]:
    """Per-image detections -> COCO results format, top ``max_per_image`` per image by score.

    Args:
        image_ids: length B, the COCO image id of each image.
        boxes_list: B tensors/arrays of shape (N_i, 4), xyxy in the image's pixels.
        scores_list: B tensors/arrays of shape (N_i,).
        labels_list: B integer tensors/arrays of shape (N_i,), contiguous labels 0..K-1.
        label_to_cat_id: contiguous label -> COCO category id (a sequence indexed by label,
            or a mapping).

    Returns:
        ``[{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}]``.
    """
    n = len(image_ids)
    if not (len(boxes_list) == len(scores_list) == len(labels_list) == n):
        raise ValueError(
            f"detections_to_coco: expected one entry per image; got {n} image ids, "
            f"{len(boxes_list)} boxes, {len(scores_list)} scores, {len(labels_list)} labels"
        )
    if max_per_image < 1:
        raise ValueError(f"max_per_image must be >= 1, got {max_per_image}")
    mapping = (
        dict(label_to_cat_id)
        if isinstance(label_to_cat_id, Mapping)
        else dict(enumerate(label_to_cat_id))
    )
    out: list[dict[str, Any]] = []
    for i, image_id in enumerate(image_ids):
        boxes = _to_numpy(boxes_list[i], "boxes_list", i).astype(np.float64)
        scores = _to_numpy(scores_list[i], "scores_list", i).astype(np.float64)
        labels = _to_numpy(labels_list[i], "labels_list", i)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes_list[{i}]: expected shape (N, 4), got {tuple(boxes.shape)}")
        if scores.shape != (len(boxes),) or labels.shape != (len(boxes),):
            raise ValueError(
                f"image {i}: expected scores and labels of shape ({len(boxes)},) matching "
                f"boxes, got {tuple(scores.shape)} and {tuple(labels.shape)}"
            )
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels_list[{i}]: expected integer labels, got {labels.dtype}")
        unknown = sorted({int(v) for v in labels} - set(mapping))
        if unknown:
            raise ValueError(
                f"labels_list[{i}]: labels {unknown} have no COCO category id in "
                f"label_to_cat_id (known labels {sorted(mapping)})"
            )
        keep = np.argsort(-scores, kind="stable")[:max_per_image]
        for j in keep:
            x1, y1, x2, y2 = (float(v) for v in boxes[j])
            out.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(mapping[int(labels[j])]),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(scores[j]),
                }
            )
    return out


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {what})")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); expected {what}") from exc


def load_coco_gt(gt: str | os.PathLike | COCO | Mapping[str, Any]) -> COCO:
    """A pycocotools COCO object from an annotations path, a loaded dict or a COCO object.

    Raises ValueError naming the file when it is not a COCO annotations object
    (a dict with "images", "annotations" and "categories" lists).
    """
    if isinstance(gt, COCO):
        return gt
    source = str(gt) if isinstance(gt, (str, os.PathLike)) else "<ground truth dict>"
    what = 'COCO annotations: an object with "images", "annotations" and "categories"'
    data = _read_json(gt, what) if isinstance(gt, (str, os.PathLike)) else copy.deepcopy(gt)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected {what}, got a JSON {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{source}: expected {what}; missing {missing}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list) or not all(isinstance(x, dict) for x in data[key]):
            raise ValueError(f"{source}: {key!r} must be a list of objects")
    for key, fields in (
        ("images", ("id",)),
        ("categories", ("id", "name")),
        ("annotations", ("id", "image_id", "category_id", "bbox")),
    ):
        for i, item in enumerate(data[key]):
            absent = [f for f in fields if f not in item]
            if absent:
                raise ValueError(f"{source}: {key}[{i}] lacks {absent}")
    for i, ann in enumerate(data["annotations"]):
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
            raise ValueError(f"{source}: annotations[{i}] bbox must be 4 numbers, got {bbox!r}")
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_detections(dets: Any, source: str, coco_gt: COCO) -> list[dict[str, Any]]:
    """Validated copies ``{"image_id", "category_id", "bbox", "score"}`` of ``dets``."""
    if not isinstance(dets, list):
        raise ValueError(
            f"{source}: expected a JSON list of detections "
            f'{{"image_id", "category_id", "bbox", "score"}}, got a {type(dets).__name__}'
        )
    clean = []
    for i, d in enumerate(dets):
        if not isinstance(d, Mapping) or not all(
            k in d for k in ("image_id", "category_id", "bbox", "score")
        ):
            raise ValueError(
                f"{source}: detection {i} must be an object with image_id, category_id, "
                f"bbox and score; got {d!r:.200}"
            )
        for field in ("image_id", "category_id"):
            if not isinstance(d[field], (int, np.integer)) or isinstance(d[field], bool):
                raise ValueError(
                    f"{source}: detection {i} {field} must be an int, got {d[field]!r}"
                )
        bbox = d["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
            raise ValueError(f"{source}: detection {i} bbox must be 4 finite numbers, got {bbox!r}")
        if not _is_number(d["score"]):
            raise ValueError(f"{source}: detection {i} score must be a number, got {d['score']!r}")
        clean.append(
            {
                "image_id": int(d["image_id"]),
                "category_id": int(d["category_id"]),
                "bbox": [float(v) for v in bbox],
                "score": float(d["score"]),
            }
        )
    bad_imgs = sorted({d["image_id"] for d in clean} - set(coco_gt.getImgIds()))
    bad_cats = sorted({d["category_id"] for d in clean} - set(coco_gt.getCatIds()))
    if bad_imgs or bad_cats:
        parts = []
        if bad_imgs:
            parts.append(f"unknown image ids {bad_imgs[:20]}")
        if bad_cats:
            parts.append(f"unknown category ids {bad_cats[:20]} (known {coco_gt.getCatIds()})")
        raise ValueError(f"{source}: detections name {' and '.join(parts)}")
    return clean


def cap_per_image(dets: list[dict[str, Any]], k: int = MAX_PER_IMAGE) -> list[dict[str, Any]]:
    """The ``k`` highest-scoring detections of each image (ties: input order kept)."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i]["score"])  # sorted() is stable
    taken: dict[Any, int] = {}
    keep = []
    for i in order:
        img = dets[i]["image_id"]
        if taken.get(img, 0) < k:
            taken[img] = taken.get(img, 0) + 1
            keep.append(i)
    return [dets[i] for i in sorted(keep)]


def _results_coco(coco_gt: COCO, dets: list[dict[str, Any]]) -> COCO:
    """A results COCO object (what ``COCO.loadRes`` builds, which fails on an empty list)."""
    anns = []
    for i, d in enumerate(dets, start=1):
        x, y, w, h = d["bbox"]
        anns.append({**d, "area": w * h, "id": i, "iscrowd": 0})
    res = COCO()
    res.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": anns,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


def evaluate_coco(
    gt: str | os.PathLike | COCO | Mapping[str, Any],
    detections: str | os.PathLike | list[dict[str, Any]],
    *,
    img_ids: Sequence[int] | None = None,
    results_path: str | os.PathLike | None = None,
    keep_eval: bool = False,
) -> dict[str, Any]:
    """COCO bbox evaluation of ``detections`` against ``gt``.

    Args:
        gt: annotations JSON path, its loaded dict, or a pycocotools COCO object.
        detections: results JSON path or a list of results dicts (see detections_to_coco).
        img_ids: evaluate these images only (default: every image of ``gt``).
        results_path: if given, the evaluated (capped) detections are written there atomically.
        keep_eval: also return the evaluated pycocotools COCOeval under ``"coco_eval"``.

    Returns:
        ``{"AP": float, ..., "ARl": float}`` (the 12 STAT_NAMES; -1.0 where no objects exist),
        ``"per_class": {category name: AP}``, ``"num_images"``, ``"num_detections"`` (after
        the cap) and ``"summary"`` (pycocotools' printed table).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: malformed input, or detections naming unknown image or category ids.
    """
    coco_gt = load_coco_gt(gt)
    if isinstance(detections, (str, os.PathLike)):
        source = str(detections)
        raw = _read_json(detections, "a JSON list of COCO detections")
    else:
        source, raw = "<detections list>", detections
    dets = cap_per_image(_check_detections(raw, source, coco_gt))
    if results_path is not None:
        write_json_atomic(results_path, dets, indent=None)

    all_imgs = coco_gt.getImgIds()
    if img_ids is None:
        eval_imgs = sorted(all_imgs)
    else:
        eval_imgs = sorted({int(i) for i in img_ids})
        unknown = sorted(set(eval_imgs) - set(all_imgs))
        if unknown or not eval_imgs:
            raise ValueError(f"img_ids: {unknown or 'empty'} not among the ground truth's images")

    cat_ids = sorted(coco_gt.getCatIds())
    coco_eval = COCOeval(coco_gt, _results_coco(coco_gt, dets), iouType="bbox")
    coco_eval.params.imgIds = eval_imgs
    coco_eval.params.catIds = cat_ids
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    summary = "\n".join(ln for ln in text.getvalue().splitlines() if ln.startswith(" Average"))
    log.debug("COCOeval summary:\n%s", summary)

    out: dict[str, Any] = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}
    # precision: (T iou thresholds, R recall points, K categories, A areas, M maxDets);
    # area index 0 is "all", maxDets index -1 is 100.
    precision = coco_eval.eval["precision"]
    names = [coco_gt.cats[c]["name"] for c in cat_ids]
    per_class = {}
    for k, (cat, name) in enumerate(zip(cat_ids, names)):
        p = precision[:, :, k, 0, -1]
        key = name if names.count(name) == 1 else f"{name} ({cat})"
        per_class[key] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    out["per_class"] = per_class
    out["num_images"] = len(eval_imgs)
    evaluated = set(eval_imgs)
    out["num_detections"] = sum(d["image_id"] in evaluated for d in dets)
    out["summary"] = summary
    if keep_eval:
        out["coco_eval"] = coco_eval
    return out


# ---- command line ------------------------------------------------------------------------
