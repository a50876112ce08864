"""``python -m bench analyze``: the analyses behind the comparison's numbers.

    python -m bench analyze cornernet --oracle heatmaps,offsets,embeddings [--weights FILE]
    python -m bench analyze budgets --runs runs/zoo [--detectors a,b]

- ``cornernet --oracle``: CornerNet's error analysis (paper Table 6): AP with the predicted
  heatmaps, then offsets, then embeddings replaced by ground truth, cumulatively
  (:mod:`detectors.cornernet.oracle`), on the validation images.
- ``budgets``: AP at several training budgets from one schedule (the snapshots that
  ``bench train --snapshots`` keeps, and ``last.pt``), each with the training seconds it took,
  so that detectors can be compared at equal images seen and at equal wall-clock time.

They write ``oracle.json``/``oracle.md`` or ``budgets.json``/``budgets.md`` into ``--out``
(atomically) and print the table. ``--out zoo`` for ``budgets`` puts the table beside the zoo
files, where ``bench run`` finds it and its report shows both budget views
(:mod:`bench.results.report_budget`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from bench.commands._output import writable_folder
from bench.errors import UsageError
from bench.measure.analysis import budget_table, oracle_table
from bench.results.report_budget import normalise_rows, run_key
from bench.results.store import write_json_atomic, write_text_atomic
from detectors.cornernet.oracle import ORACLES


def _markdown(title: str, frame: pd.DataFrame) -> str:
    """A markdown table of ``frame`` (floats to 3 decimals) under a heading."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.values]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return f"# {title}\n\n" + "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench analyze``."""
    parser.add_argument("what", choices=["cornernet", "budgets"], help="the analysis")
    parser.add_argument(
        "--oracle", default=",".join(ORACLES),
        help="cornernet: heads replaced by ground truth, cumulatively, in this order",
    )  # fmt: skip
    parser.add_argument("--weights", type=Path, default=Path("zoo/cornernet-tiny.pt"))
    parser.add_argument("--runs", type=Path, default=Path("runs/zoo"), help="budgets: train runs")
    parser.add_argument("--detectors", default=None, help="budgets: comma-separated run names")
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="dataset root")
    parser.add_argument("--max-images", type=int, default=300, help="validation images")
    parser.add_argument("--out", type=Path, default=None, help="default reports/analysis-WHAT")


def run(args: argparse.Namespace) -> int:
    """``python -m bench analyze``; returns the exit code."""
    out = args.out or Path("reports") / f"analysis-{args.what}"
    stem = "oracle" if args.what == "cornernet" else "budgets"
    if args.what == "cornernet":
        oracles = [o.strip() for o in args.oracle.split(",") if o.strip()]
        bad = [o for o in oracles if o not in ORACLES]
        if bad or not oracles:
            raise UsageError(f"--oracle {args.oracle!r}: expected names from {', '.join(ORACLES)}")
        if not args.weights.is_file():
            raise UsageError(f"--weights {args.weights}: no such file")
        writable_folder(out, "--out")  # before the analysis, not after it
        rows = oracle_table(args.weights, args.data, oracles, max_images=args.max_images)
        title = f"CornerNet oracle analysis ({args.weights}, {args.max_images} val images)"
    else:
        detectors = args.detectors.split(",") if args.detectors else None
        writable_folder(out, "--out")
        rows = budget_table(args.runs, args.data, detectors, max_images=args.max_images)
        title = f"AP by training budget ({args.runs}, {args.max_images} val images)"
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    previous = out / f"{stem}.json"
    if args.what == "budgets" and previous.is_file():  # keep the other runs' rows
        redone = {run_key(r) for r in public}
        kept = normalise_rows(json.loads(previous.read_text()).get("rows", []))
        public = [r for r in kept if run_key(r) not in redone] + public
    frame = pd.DataFrame(public)
    write_json_atomic(out / f"{stem}.json", {"title": title, "rows": public})
    write_text_atomic(out / f"{stem}.md", _markdown(title, frame))
    print(_markdown(title, frame))
    return 0
