"""``python -m bench data``: generate the synthetic benchmark, or write a dataset card.

    python -m bench data synthetic --out DIR [--preset default|smoke] [--num-train N]
        [--num-val N] [--image-size S] [--seed S] [--difficulty standard|hard|easy]
        [--workers W] [--overwrite] [--no-card]
    python -m bench data card ROOT [--splits train,val] [--out DIR]

``--num-train`` and friends override the preset (default: 3000 train and 500 val images of
128 x 128, seed 0). An existing non-empty ``--out`` is refused unless ``--overwrite`` is given,
and even then only a folder holding a previous synthetic set is replaced.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.commands._output import writable_folder
from bench.data.card import write_card
from bench.data.coco import find_split
from bench.data.synthetic import DIFFICULTIES, PRESETS, generate_synthetic
from bench.errors import UsageError

# bench.cli prints this after Ctrl-C: generate_synthetic writes into a temporary folder
# beside --out, renamed only when complete and removed when interrupted
INTERRUPTED = (
    "no dataset was written (--out is left as it was); rerun the command to generate it: "
    "generation restarts from the beginning"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synthetic`` and ``card`` actions to ``parser``."""

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    syn = sub.add_parser("synthetic", help="write the synthetic COCO-format benchmark")
    syn.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    syn.add_argument("--preset", choices=sorted(PRESETS), default="default")
    for flag, what in (
        ("--num-train", "training images"),
        ("--num-val", "validation images"),
        ("--image-size", "image side in pixels"),
        ("--seed", "random seed"),
    ):
        syn.add_argument(flag, type=int, default=None, help=f"{what} (overrides the preset)")
    syn.add_argument(
        "--difficulty",
        choices=sorted(DIFFICULTIES),
        default=None,
        help="rendering: standard (default), hard (the version-1 rendering), easy (debugging)",
    )
    syn.add_argument("--workers", type=int, default=None, help="processes (default: CPUs, <= 8)")
    syn.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic set")
    syn.add_argument("--no-card", action="store_true", help="skip the dataset card")
    card = sub.add_parser("card", help="write a dataset card for a COCO-layout dataset")
    card.add_argument("root", type=Path, help="dataset root (synthetic or COCO 2017 layout)")
    card.add_argument("--splits", default="train,val", help="comma-separated split names")
    card.add_argument("--out", type=Path, default=None, help="card folder (default: ROOT)")


def _synthetic(args: argparse.Namespace) -> int:

    # the set is written beside --out first, then renamed: its folder must take files
    writable_folder(args.out.resolve().parent, f"--out {args.out}: its folder")
    params = dict(PRESETS[args.preset])
    for key in params:
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    start = time.perf_counter()
    out = generate_synthetic(
        args.out, **params, workers=args.workers, overwrite=args.overwrite, card=not args.no_card
    )
    seconds = time.perf_counter() - start

    counts = json.loads((out / "synthetic.json").read_text())["counts"]
    print(f"wrote {out} in {seconds:.1f} s ({', '.join(f'{k}={v}' for k, v in params.items())})")
    for split, c in counts.items():
        print(
            f"  {split}: {c['images']} images, {c['annotations']} annotations, "
            f"{c['dropped_occluded']} objects dropped as too occluded"
        )
    if not args.no_card:
        print(f"  card: {out / 'README.md'}, {out / 'card_stats.png'}, {out / 'card_samples.png'}")
    return 0


def _card(args: argparse.Namespace) -> int:

    names = [s for s in args.splits.split(",") if s]
    if not names:
        raise UsageError(f"--splits must name at least one split, got {args.splits!r}")
    splits = {name: find_split(args.root, name) for name in names}
    out = writable_folder(args.out or args.root, "--out")
    paths = write_card(out, splits, title=str(args.root))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action; returns the exit code."""
    return _synthetic(args) if args.action == "synthetic" else _card(args)
