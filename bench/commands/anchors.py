"""``python -m bench anchors``: anchors per image of each detector at a network input size.

CornerNet's paper argues that anchor-based detectors need very many anchors (over 100k for
RetinaNet, over 40k for DSSD), most of them negatives. This command counts them: every
detector is built (on the meta device, so even ``--backbone hg104`` is instant) and asked for
``anchors_per_image(H, W)``, which runs its own anchor generator on the input size after the
detector's own padding (to a multiple of 32 for the FPN detectors). Anchor-free detectors
(CornerNet, CenterNet, FCOS) report 0.

A rich table by default; with ``--json`` one object ``{name: count}``
(:func:`bench.anchors.counts.anchor_counts`).

Two more modes read a COCO-format data set (``--data DIR``, default ``data/synthetic``) at the
network input (``--size``, default the synthetic set's image size, else 128):

- ``--fit`` fits every anchor-based detector's anchors to the training boxes
  (:func:`bench.anchors.fit.fit_presets`), prints the preset values and writes ``fit.json``
  and ``fit.md`` to ``--out`` (default ``reports/anchors-fit``).
- ``--coverage`` prints, for every anchor-based detector and each set of anchors (the
  ``synthetic`` preset, ``synthetic-hand`` where a detector keeps one, the fitted ones, the
  ``paper`` preset's), the share of the ``--split`` boxes (default val) whose best anchor has
  IoU >= 0.5 and >= 0.7, overall and by size (:func:`bench.anchors.coverage.anchor_coverage`).
  The fit is read from ``--out/fit.json`` when it was made on the same training annotations,
  else made anew. With ``--fit`` it is also written there as ``coverage.json`` /
  ``coverage.md``; with ``--json`` printed as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.anchors.counts import anchor_counts, coverage_table
from bench.anchors.coverage import SIZE_BUCKETS, load_boxes
from bench.anchors.fit import fit_presets, format_fields
from bench.commands._output import writable_folder
from bench.data.coco import find_split
from bench.errors import UsageError
from bench.results.store import write_json_atomic, write_text_atomic
from bench.spec import ANCHOR_DETECTORS, parse_detectors
from detectors import DETECTORS, PRESETS
from detectors.backbones import HOURGLASS_PRESETS


def _parse_names(text: str | None) -> list[str]:
    """``--detectors``: registry detectors only (anchors are counted per detector)."""
    return [v.name for v in parse_detectors(text, variants=False)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench anchors``."""
    parser.add_argument(
        "--detectors",
        default=None,
        help=f"comma-separated names (default: all of {','.join(DETECTORS)})",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=None,
        metavar=("H", "W"),
        help="network input height and width in pixels (before the detector's padding); "
        "required to count anchors; --fit/--coverage default: the data's image size",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="synthetic",
        help="anchor settings: 'paper' (published) or 'synthetic' (the 128 px benchmark)",
    )
    parser.add_argument(
        "--backbone",
        choices=sorted(HOURGLASS_PRESETS),
        default="tiny",
        help="hourglass preset (anchor counts do not depend on it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--fit", action="store_true", help="fit the anchors to --data's training boxes"
    )
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="share of --split boxes whose best anchor has IoU >= 0.5 / 0.7, by anchor set",
    )
    parser.add_argument("--data", default="data/synthetic", help="COCO-format data set root")
    parser.add_argument("--split", default="val", help="--coverage's split (default val)")
    parser.add_argument(
        "--out", default="reports/anchors-fit", help="--fit's output folder (fit.json, fit.md)"
    )


def run(args: argparse.Namespace) -> int:
    """Count anchors; print a table or (``--json``) ``{name: count}``. Exit code 0.

    With ``--fit`` and/or ``--coverage``: :func:`run_fit` instead.
    """
    if args.fit or args.coverage:
        return run_fit(args)
    if args.size is None:
        raise UsageError("--size H W is required to count anchors (or give --fit / --coverage)")
    names = _parse_names(args.detectors)
    height, width = args.size
    if height < 1 or width < 1:
        raise UsageError(f"--size {height} {width}: expected two positive ints (H W)")
    counts = anchor_counts(names, height, width, args.preset, args.backbone)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0

    table = Table(
        title=escape(
            f"Anchors per image at {height}x{width} (preset {args.preset}, "
            f"backbone {args.backbone}; each detector pads the input itself)"
        )
    )
    table.add_column("detector")
    table.add_column("anchors / image", justify="right")
    table.add_column("note")
    for name, count in counts.items():
        table.add_row(escape(name), f"{count:,}", "anchor-free" if count == 0 else "")
    Console().print(table)
    return 0


# ---------------------------------------------------------------- --fit and --coverage
def _input_size(args: argparse.Namespace, root: Path) -> tuple[int, int]:
    if args.size is not None:
        if min(args.size) < 1:
            raise UsageError(f"--size {args.size[0]} {args.size[1]}: expected two positive ints")
        return int(args.size[0]), int(args.size[1])
    try:  # a synthetic set says its image size; anything else: the synthetic default
        side = int(json.loads((root / "synthetic.json").read_text())["params"]["image_size"])
    except (OSError, ValueError, KeyError, TypeError):
        side = 128
    return side, side


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_or_fit(args, root: Path, size: tuple[int, int], names: list[str]) -> dict:

    sha = _sha256(find_split(root, "train")[1])
    saved = Path(args.out) / "fit.json"
    if not args.fit and saved.is_file():
        fit = json.loads(saved.read_text())
        same = fit.get("train_sha256") == sha and fit.get("input_size") == list(size)
        if same and set(names) <= set(fit.get("detectors", {})):
            return fit
        print(f"{saved} holds another fit (data, size or detectors): fitting anew", file=sys.stderr)
    print(f"fitting anchors to {root} (train split) ...", file=sys.stderr)
    fit = fit_presets(root, size, names)
    fit["train_sha256"] = sha
    return fit


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"


def _coverage_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per detector and anchor set, "cov50/cov70" in % overall and by size."""

    first = next((c for sets in table.values() for c in sets.values()), None)
    count = (lambda b: f" ({first['by_size'][b]['boxes']})") if first else (lambda b: "")
    header = ["detector", "anchors", "per image", f"all ({first['boxes'] if first else 0})"]
    header += [f"{b} px{count(b)}" for b, _, _ in SIZE_BUCKETS]
    rows = []
    for name, sets in table.items():
        for anchors, c in sets.items():
            row = [name, anchors, f"{c['anchors']:,}"]
            for part in [c, *(c["by_size"][b] for b, _, _ in SIZE_BUCKETS)]:
                row.append(f"{_pct(part['coverage50'])}/{_pct(part['coverage70'])}")
            rows.append(row)
    return header, rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _fit_markdown(fit: dict) -> str:

    h, w = fit["input_size"]
    sizes = ", ".join(f"{k}: {v:.1f}" for k, v in fit["size_quantiles"].items())
    ratios = ", ".join(f"{k}: {v:.2f}" for k, v in fit["aspect_w_over_h_quantiles"].items())
    out = [
        f"# Anchors fitted to {fit['data']} ({fit['split']} split)\n",
        f"`python -m bench anchors --fit --data {fit['data']}` on {fit['date']}: "
        f"{fit['boxes']} boxes in {fit['images']} images, at a {h}x{w} input. Procedure: "
        "`bench/anchors/fit.py` (module docstring).\n",
        f"- box size sqrt(w h) quantiles (px): {sizes}",
        f"- aspect ratio w / h quantiles: {ratios}\n",
    ]
    for name, d in fit["detectors"].items():
        score = d.get("mean_best_iou", d.get("mean_shape_iou"))
        kind = "mean best IoU" if "mean_best_iou" in d else "mean shape IoU (YOLOv2's Avg IoU)"
        out.append(f"## {name}\n\n{d['method']}; {kind} on the training boxes {score:.3f}")
        if "start" in d:
            out.append(
                f"(start: {d['start']}, round {d['rounds']}; share of boxes whose best anchor "
                f"is on each level: {d['level_shares']})"
            )
        out.append(f"\n```python\n{format_fields(d['fields'])}\n```\n")
    return "\n".join(out)


def run_fit(args: argparse.Namespace) -> int:
    """``--fit`` and/or ``--coverage`` (see the module docstring). Exit code 0."""

    root = Path(args.data)
    size = _input_size(args, root)
    requested = _parse_names(args.detectors) if args.detectors else list(ANCHOR_DETECTORS)
    names = [n for n in requested if n in ANCHOR_DETECTORS]
    if not names:
        raise UsageError(f"--detectors: none of {', '.join(requested)} has anchors to fit")
    if args.fit:
        writable_folder(args.out, "--out")  # before the fit, not after it
    try:
        fit = _load_or_fit(args, root, size, names)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    out = Path(args.out)
    if args.fit:
        write_json_atomic(out / "fit.json", fit)
        write_text_atomic(out / "fit.md", _fit_markdown(fit))
        for name, d in fit["detectors"].items():
            print(f"{name}:\n{format_fields(d['fields'])}")
        print(f"written: {out / 'fit.json'}, {out / 'fit.md'}", file=sys.stderr)
    if not args.coverage:
        return 0
    boxes = load_boxes(root, args.split, size)
    table = coverage_table(names, boxes, size, fit["detectors"])
    header, rows = _coverage_rows(table)
    n_boxes = sum(int(b.shape[0]) for b in boxes)
    title = (
        f"Anchor coverage of {n_boxes} {args.split} boxes of {root} at {size[0]}x{size[1]}: "
        "% of boxes whose best anchor has IoU >= 0.5 / >= 0.7, overall and by size sqrt(w h) "
        "(boxes in parentheses)"
    )
    if args.fit:
        doc = {"data": str(root), "split": args.split, "input_size": list(size)}
        write_json_atomic(out / "coverage.json", {**doc, "boxes": n_boxes, "coverage": table})
        write_text_atomic(out / "coverage.md", f"# {title}\n\n{_markdown(header, rows)}")
    if args.json:
        print(json.dumps(table, indent=2))
        return 0

    rich_table = Table(title=escape(title))  # a path or split name prints as it is
    for i, column in enumerate(header):
        width = max(len(column), *(len(r[i]) for r in rows))
        rich_table.add_column(escape(column), justify="left" if i < 2 else "right", min_width=width)
    for row in rows:
        rich_table.add_row(*map(escape, row))
    console = Console()
    console.width = max(console.width, 120)  # the whole table, also when piped
    console.print(rich_table)
    return 0
