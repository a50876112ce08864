"""COCO bbox evaluation with pycocotools, and ``python -m bench eval``.

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

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.errors import UsageError
from bench.results.coco_eval import STAT_NAMES, evaluate_coco


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench eval``."""
    parser.add_argument("--gt", required=True, help="COCO annotations JSON (ground truth)")
    parser.add_argument("--dt", required=True, help="COCO results JSON (list of detections)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def _fmt(v: float) -> str:
    return "n/a" if v < 0 else f"{v:.3f}"


def run(args: argparse.Namespace) -> int:
    """Evaluate ``--dt`` against ``--gt``; print a table or (``--json``) one JSON object."""
    try:
        result = evaluate_coco(args.gt, args.dt)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        payload = {k: result[k] for k in (*STAT_NAMES, "per_class")}
        payload["num_images"] = result["num_images"]
        payload["num_detections"] = result["num_detections"]
        print(json.dumps(payload, indent=2))
        return 0

    print_result(
        result,
        f"COCO bbox evaluation of {args.dt} against {args.gt}: "
        f"{result['num_images']} images, {result['num_detections']} detections",
    )
    return 0


def print_result(result: dict[str, Any], title: str) -> None:
    """Print ``evaluate_coco``'s result: ``title``, the 12 statistics, per-class AP (rich)."""

    console = Console()
    console.print(title)
    stats = Table()
    stats.add_column("metric")
    stats.add_column("value", justify="right")
    for name in STAT_NAMES:
        stats.add_row(name, _fmt(result[name]))
    console.print(stats)
    classes = Table()
    classes.add_column("category")
    classes.add_column("AP", justify="right")
    for name, ap in result["per_class"].items():
        classes.add_row(name, _fmt(ap))
    console.print(classes)
