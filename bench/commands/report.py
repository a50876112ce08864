"""``python -m bench report DIR``: rewrite a run folder's report from its saved results (what
the report holds: :mod:`bench.results.report`), and the summary table ``bench run`` prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.commands._output import writable_folder
from bench.commands._tables import Col, Markup, add_wide_option, fit_table, print_table
from bench.results.report import COLUMNS, fmt, load_results, write_report

SUMMARY = ("detector", "weights", "batch", "params", "anchors/img", "AP", "AP50", "p50 ms")
# what a narrow terminal keeps (0: always), the rest in this order while it fits
SUMMARY_KEEP = {"detector": 0, "anchors/img": 0, "AP": 0, "AP50": 0, "p50 ms": 0,
                "weights": 1, "batch": 2, "params": 3}  # fmt: skip


def _summary(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Col], list[list[str]]]:
    chosen = [c for c in COLUMNS if c[0] in SUMMARY]
    random = any(r.get("weights") == "random" for r in rows)
    batches = len({r.get("batch") for r in rows}) > 1
    cols = []
    for header, _, _ in chosen:
        keep = SUMMARY_KEEP[header]
        if (header == "weights" and random) or (header == "batch" and batches):
            keep = 0  # RANDOM must show; several batch sizes need the batch beside p50
        kind = {"detector": "name", "weights": "text"}.get(header, "number")
        cols.append(Col(header, kind, keep))
    cells = []
    for r in rows:
        row = [fmt(r.get(field), spec) for _, field, spec in chosen]
        row[1] = Markup("[bold red]RANDOM[/]") if row[1] == "RANDOM" else row[1]
        cells.append(row)
    return cols, cells


def summary_table(rows: Sequence[Mapping[str, Any]], *, width: int | None = None) -> Table:
    """A rich table of the main columns (the run's summary): those that fit in ``width``
    terminal columns, every one when ``width`` is None."""
    cols, cells = _summary(rows)
    return fit_table("cornerbench results", cols, cells, width=width)[0]


def print_summary(
    console: Console, rows: Sequence[Mapping[str, Any]], *, wide: bool = False, full=None
) -> None:
    """Print the summary, one table per device, fitted to ``console`` (all columns when
    ``wide``), with a pointer to ``full`` (the report) when columns were left out."""
    devices = sorted({str(r.get("device")) for r in rows})
    for device in devices:
        group = [r for r in rows if str(r.get("device")) == device] if len(devices) > 1 else rows
        title = "cornerbench results" + f" ({device})" * (len(devices) > 1)
        print_table(console, title, *_summary(group), wide=wide, full=full)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench report``."""
    parser.add_argument("dir", help="a run folder (holding results.json)")
    add_wide_option(parser)


def run(args: argparse.Namespace) -> int:
    """Regenerate the report of ``args.dir`` and print its summary table."""
    rows = load_results(args.dir)["rows"]  # no results.json: UsageError naming the folder
    for folder in (Path(args.dir), Path(args.dir) / "plots"):  # before any plot is drawn
        writable_folder(folder, "DIR")
    md, page = write_report(args.dir)
    if rows:
        print_summary(Console(), rows, wide=getattr(args, "wide", False), full=md)
    print(f"wrote {md} and {page}")
    return 0
