"""``python -m bench compare DIR_A DIR_B``: the metric deltas of two run folders as a table
(``--json``: the dict); matching and deltas are :mod:`bench.results.compare`'s.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.results.compare import METRICS, compare_results


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
