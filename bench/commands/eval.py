"""``python -m bench eval --gt GT --dt DT``: COCO bbox evaluation of a COCO results JSON,
printed as a table (``--json``: the dict). The conventions (100 detections per image, -1 for
undefined statistics, per-class AP) are :mod:`bench.results.coco_eval`'s.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.data.coco import load_coco_json
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
    # the ground truth goes through bench run's loader: the same checks (unique ids, known
    # images and categories, finite boxes; warnings for negative or outside boxes)
    gt = load_coco_json(args.gt)
    try:
        result = evaluate_coco(gt, args.dt)
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
    console.print(title, markup=False)  # paths and names print as they are
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
        classes.add_row(escape(name), _fmt(ap))
    console.print(classes)
