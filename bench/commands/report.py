"""The report of a run folder, and ``python -m bench report DIR``.

A pure function of the saved results: ``results.json`` (rows, dataset, env), the evaluated
ground truth (``dataset.annotations``, else ``DIR/annotations.json``), the detection files
``detections/<detector>.json``, the loss curves named by the rows and the sample images
``plots/sample_<detector>.png`` saved by the run (they need the model). Rerunning it gives
the same ``report.md``.

Written: ``plots/`` (:mod:`bench.results.plots`: AP against latency with the Pareto front, anchors
against AP, per-stage latency, precision-recall curves recomputed with pycocotools from the
saved detections, training curves when loss curves exist, the TIDE error bars), ``report.md``
(images linked; with the AP/AP50 bootstrap intervals, the pairs of detectors not significantly
different and the TIDE table of :mod:`bench.results.report_eval`) and ``report.html``
(self-contained: images embedded as base64). Rows of different devices go to
separate tables, never one. Rows evaluated with random weights are flagged in a warning and in
the table's ``weights`` column.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from bench.results.report import COLUMNS, fmt, write_report

SUMMARY = ("detector", "weights", "batch", "params", "anchors/img", "AP", "AP50", "p50 ms")


def summary_table(rows: Sequence[Mapping[str, Any]]):
    """A rich table of the main columns (the run's summary)."""

    table = Table(title="cornerbench results")
    chosen = [c for c in COLUMNS if c[0] in SUMMARY]
    for header, _, _ in chosen:
        left = header in ("detector", "weights")
        table.add_column(header, justify="left" if left else "right", no_wrap=left)
    for r in rows:
        cells = [fmt(r.get(field), spec) for _, field, spec in chosen]
        cells[1] = "[bold red]RANDOM[/]" if cells[1] == "RANDOM" else cells[1]
        table.add_row(*cells)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench report``."""
    parser.add_argument("dir", help="a run folder (holding results.json)")


def run(args: argparse.Namespace) -> int:
    """Regenerate the report of ``args.dir``."""
    md, page = write_report(args.dir)
    print(f"wrote {md} and {page}")
    return 0
