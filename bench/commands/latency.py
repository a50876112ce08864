"""``python -m bench latency``: per-stage latency of every detector with random weights on a
suite (``synthetic``: the tiny backbone at 128 px; ``paper``: Hourglass-104 at 511 px, 80
classes, beside the CornerNet paper's 244 ms), printed as a table (``--json``: the rows),
saved with ``--out``. The protocol is :mod:`bench.measure.latency`'s.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.commands._output import writable_folder
from bench.commands._tables import Col, add_wide_option, fit_table, print_table
from bench.errors import UsageError
from bench.measure.latency import (
    DEFAULT_ITERS,
    PAPER_CORNERNET_MS,
    STAGES,
    SUITES,
    Builder,
    time_suite,
)
from bench.results.store import save_rows
from bench.spec import (
    LatencySpec,
    add_detectors_option,
    add_device_options,
    add_timing_options,
    parse_detectors,
    parse_timing,
    resolve_device,
)
from detectors import DETECTORS

__all__ = ["add_arguments", "latency_table", "latency_spec", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench latency``."""
    parser.add_argument("--suite", choices=sorted(SUITES), default="synthetic")
    add_detectors_option(parser)
    add_device_options(parser)
    add_timing_options(parser, iters_help="timed iterations per detector")
    parser.add_argument("--input-size", type=int, default=None, help="override the suite's size")
    parser.add_argument("--batch-size", default="1", help="batch sweep, e.g. 1,2,4")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time CUDA graphs")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_wide_option(parser)
    parser.add_argument(
        "--out", type=Path, default=None,
        help="also save latency.json (rows + environment), latency.csv and env.json here",
    )  # fmt: skip


def latency_spec(args: argparse.Namespace, builders: Mapping[str, Builder]) -> LatencySpec:
    """The command line of ``bench latency`` -> its :class:`LatencySpec`."""
    names = tuple(v.name for v in parse_detectors(args.detectors, builders, variants=False))
    device = resolve_device(args.device)
    timing = parse_timing(
        args.warmup, args.iters, DEFAULT_ITERS[(args.suite, device.type)], batches=args.batch_size
    )
    if args.input_size is not None and args.input_size < 32:
        raise UsageError(f"--input-size {args.input_size}: expected an int >= 32")
    modes = ("eager",) + ("compile",) * args.compile + ("cudagraphs",) * args.cuda_graphs
    if "cudagraphs" in modes and device.type != "cuda":
        raise UsageError("--cuda-graphs needs --device cuda (CUDA graphs are GPU only)")
    return LatencySpec(names, args.suite, device, args.dtype, timing, modes, args.input_size)


def run(args: argparse.Namespace, *, builders: Mapping[str, Builder] | None = None) -> int:
    """``python -m bench latency``: time the suite and print a table (or JSON)."""
    builders = DETECTORS if builders is None else builders
    spec = latency_spec(args, builders)
    err = Console(stderr=True)
    iters = spec.timing.iters
    if spec.suite == "paper" and spec.device.type == "cpu":
        err.print(
            f"[bold yellow]warning:[/] the paper suite (Hourglass-104, 511 px, 80 classes) on a "
            f"CPU: seconds per image, {iters} timed iteration(s) each; not comparable with the "
            f"paper's {PAPER_CORNERNET_MS:.0f} ms on a Titan X GPU"
        )
    if spec.device.type == "cuda" and iters < 100:
        warnings.warn(
            f"--iters {iters}: the protocol times at least 100 images on a GPU", stacklevel=1
        )
    progress = None if args.json else lambda what: err.print(f"timing {what} ...", markup=False)
    if args.out is not None:
        writable_folder(args.out, "--out")  # before the timing, not after it
    rows = time_suite(spec, builders, progress)
    if args.out is not None:
        save_rows(args.out, "latency", rows, suite=spec.suite)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    full = args.out / "latency.csv" if args.out is not None else None
    title, cols, cells = _latency_cells(rows, title=f"Latency, {spec.suite} suite")
    print_table(Console(), title, cols, cells, wide=getattr(args, "wide", False), full=full)
    return 0


# a narrow terminal keeps detector, variant, p50 (and the paper's figure), then these in order
LATENCY_KEEP = {"batch": 1, "forward": 2, "decode": 3, "p90": 4, "preprocess": 5, "p99": 6,
                "mean": 7, "params": 8}  # fmt: skip


def _latency_cells(
    rows: Sequence[Mapping[str, Any]], title: str
) -> tuple[str, list[Col], list[list[str]]]:
    devices = sorted({r["device"] for r in rows})
    if len(devices) > 1:
        raise ValueError(f"one latency table holds one device, got rows for {devices}")
    first = rows[0] if rows else {}
    title = (
        f"{title}: {first.get('backbone', '')} {first.get('input_size', '')} px, "
        f"{', '.join(devices)}, {first.get('dtype', '')}; ms per call (batch images)"
    )
    batches = len({r["batch"] for r in rows}) > 1  # several: p50 means nothing without it
    cols = [Col("detector", "name"), Col("variant", "text")]
    for col in ("batch", "params", *STAGES, "p50", "p90", "p99", "mean"):
        cols.append(Col(col, keep=0 if col == "batch" and batches else LATENCY_KEEP.get(col, 0)))
    has_paper = any("paper_ms" in r for r in rows)
    if has_paper:
        cols.append(Col("paper (Titan X)"))
    cells = []
    for r in rows:
        row = [r["detector"], r["variant"], str(r["batch"]), f"{r['params'] / 1e6:.2f}M"]
        row += [f"{r[f'latency_{s}_ms_p50']:.1f}" for s in STAGES]
        row += [f"{r[f'latency_ms_{k}']:.1f}" for k in ("p50", "p90", "p99", "mean")]
        if has_paper:
            row.append(f"{r['paper_ms']:.0f}" if "paper_ms" in r else "")
        cells.append(row)
    return title, cols, cells


def latency_table(
    rows: Sequence[Mapping[str, Any]], title: str, *, width: int | None = None
) -> Table:
    """A rich table of latency rows (one device: the caller's rows come from one run): the
    columns that fit in ``width`` terminal columns, every one when ``width`` is None."""
    return fit_table(*_latency_cells(rows, title), width=width)[0]
