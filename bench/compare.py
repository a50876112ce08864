"""``python -m bench compare DIR_A DIR_B``: metric deltas between two run folders.

Rows are matched on (detector, backbone, input size, dtype, batch). Deltas are ``B - A``
(and ``B / A - 1`` for latency). Latency is only compared when both runs measured on the
same device (type and model name, from ``env``): figures from two devices never share a
table; the accuracy columns are compared whatever the device. COCO's -1 ("undefined") and
missing values give no delta. Rows present in one folder only are listed.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

from bench.report import load_results

__all__ = ["METRICS", "add_arguments", "compare_results", "run"]

MATCH: tuple[str, ...] = ("detector", "backbone", "input_size", "dtype", "batch")
# (header, row field)
METRICS: tuple[tuple[str, str], ...] = (
    ("AP", "AP"),
    ("AP50", "AP50"),
    ("AP75", "AP75"),
    ("AR100", "AR100"),
    ("anchors/img", "anchors_per_image"),
    ("params", "params"),
    ("p50 ms", "latency_ms_p50"),
    ("p90 ms", "latency_ms_p90"),
    ("p99 ms", "latency_ms_p99"),
    ("fwd ms", "latency_forward_ms_p50"),
    ("dec ms", "latency_decode_ms_p50"),
)


def _device(doc: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str]:
    env = doc.get("env") or {}
    kind = str(row.get("device"))
    return kind, str(env.get("gpu_name") if kind == "cuda" else env.get("cpu"))


def _value(row: Mapping[str, Any], field: str) -> float | None:
    v = row.get(field)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if field.startswith("A") and v < 0:  # AP / AR: -1 is COCO's "undefined"
        return None
    return float(v)


def compare_results(dir_a: str | os.PathLike, dir_b: str | os.PathLike) -> dict[str, Any]:
    """Compare two run folders.

    Returns ``{"matched": [{"key": {...}, "same_device": bool, "metrics": {field: {"a", "b",
    "delta", "relative"}}}], "only_a": [key dicts], "only_b": [key dicts]}``; latency fields
    are left out of ``metrics`` when the devices differ.
    """
    doc_a, doc_b = load_results(dir_a), load_results(dir_b)

    def index(doc):
        return {tuple(json.dumps(r.get(k)) for k in MATCH): r for r in doc["rows"]}

    rows_a, rows_b = index(doc_a), index(doc_b)
    matched = []
    for key, ra in rows_a.items():
        rb = rows_b.get(key)
        if rb is None:
            continue
        same = _device(doc_a, ra) == _device(doc_b, rb)
        metrics = {}
        for _, field in METRICS:
            if field.startswith("latency") and not same:
                continue
            a, b = _value(ra, field), _value(rb, field)
            delta = None if a is None or b is None else b - a
            rel = delta / a if delta is not None and a else None
            metrics[field] = {"a": a, "b": b, "delta": delta, "relative": rel}
        matched.append(
            {"key": {k: ra.get(k) for k in MATCH}, "same_device": same, "metrics": metrics}
        )

    def keys(rows, other):
        return [{k: r.get(k) for k in MATCH} for key, r in rows.items() if key not in other]

    return {"matched": matched, "only_a": keys(rows_a, rows_b), "only_b": keys(rows_b, rows_a)}


def _cell(field: str, m: Mapping[str, Any] | None) -> str:
    if m is None:
        return "n/a (device)"
    if m["a"] is None or m["b"] is None:
        return "-"
    if field.startswith("latency"):
        rel = f" {m['relative']:+.0%}" if m["relative"] is not None else ""
        return f"{m['a']:.1f} -> {m['b']:.1f} ({m['delta']:+.1f}{rel})"
    if field in ("params", "anchors_per_image"):
        return f"{m['a']:,.0f} -> {m['b']:,.0f} ({m['delta']:+,.0f})"
    return f"{m['a']:.3f} -> {m['b']:.3f} ({m['delta']:+.3f})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench compare``."""
    parser.add_argument("dir_a", help="the baseline run folder (A)")
    parser.add_argument("dir_b", help="the run folder compared with it (B)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the deltas of ``dir_b`` against ``dir_a`` (a rich table, or JSON)."""
    result = compare_results(args.dir_a, args.dir_b)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"B - A: A = {args.dir_a}, B = {args.dir_b}")
    table.add_column("detector")
    table.add_column("batch", justify="right")
    for header, _ in METRICS:
        table.add_column(header, justify="right")
    for item in result["matched"]:
        cells = [str(item["key"]["detector"]), str(item["key"]["batch"])]
        cells += [_cell(f, item["metrics"].get(f)) for _, f in METRICS]
        table.add_row(*cells)
    console.print(table)
    if any(not item["same_device"] for item in result["matched"]):
        console.print("latency not compared: the two runs measured on different devices")
    for side in ("only_a", "only_b"):
        for key in result[side]:
            console.print(f"only in {side[-1].upper()}: {key}")
    return 0
