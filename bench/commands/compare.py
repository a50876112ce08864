"""``python -m bench compare DIR_A DIR_B``: the metric deltas of two run folders as a table
(``--json``: the dict); matching and deltas are :mod:`bench.results.compare`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console

from bench.commands._tables import Col, add_wide_option, print_table
from bench.results.compare import METRICS, compare_results, dataset_mismatch

# columns a narrow terminal keeps (0: always), the others in this order while they fit
KEEP = {"AP": 0, "AP50": 0, "p50 ms": 0, "anchors/img": 1, "AP75": 2, "fwd ms": 3, "dec ms": 4,
        "p90 ms": 5, "AR100": 6, "p99 ms": 7, "params": 8}  # fmt: skip


def _cell(field: str, m: Mapping[str, Any] | None) -> tuple[str, ...]:
    """``A -> B`` and ``(delta)``: two segments, on two lines when the column is narrow."""
    if m is None:
        return ("n/a", "(device)")
    if m["a"] is None or m["b"] is None:
        return ("-",)
    if field.startswith("latency"):
        rel = f" {m['relative']:+.0%}" if m["relative"] is not None else ""
        return f"{m['a']:.1f} -> {m['b']:.1f}", f"({m['delta']:+.1f}{rel})"
    if field in ("params", "anchors_per_image"):
        return f"{m['a']:,.0f} -> {m['b']:,.0f}", f"({m['delta']:+,.0f})"
    return f"{m['a']:.3f} -> {m['b']:.3f}", f"({m['delta']:+.3f})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench compare``."""
    parser.add_argument("dir_a", help="the baseline run folder (A)")
    parser.add_argument("dir_b", help="the run folder compared with it (B)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    add_wide_option(parser)


def run(args: argparse.Namespace) -> int:
    """Print the deltas of ``dir_b`` against ``dir_a`` (a rich table, or JSON)."""
    result = compare_results(args.dir_a, args.dir_b)
    mismatch = dataset_mismatch(result)
    if mismatch:  # stderr: `--json` output stays parseable
        print(f"warning: {mismatch}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0

    console = Console()
    matched = result["matched"]
    batches = len({item["key"]["batch"] for item in matched}) > 1  # then the key needs it
    cols = [Col("detector", "name"), Col("batch", keep=0 if batches else 1)]
    cols += [Col(header, keep=KEEP.get(header, 9)) for header, _ in METRICS]
    rows = [
        [str(item["key"]["detector"]), str(item["key"]["batch"])]
        + [_cell(f, item["metrics"].get(f)) for _, f in METRICS]
        for item in matched
    ]
    title = f"B - A: A = {args.dir_a}, B = {args.dir_b}"
    print_table(console, title, cols, rows, wide=getattr(args, "wide", False))
    if any(not item["same_device"] for item in result["matched"]):
        console.print(
            "latency not compared: the two runs measured on different devices", markup=False
        )
    for side in ("only_a", "only_b"):
        for key in result[side]:
            console.print(f"only in {side[-1].upper()}: {key}", markup=False)
    return 0
