"""``python -m bench anchors``: anchors per image of each detector at a network input size.

CornerNet's paper argues that anchor-based detectors need very many anchors (over 100k for
RetinaNet, over 40k for DSSD), most of them negatives. This command counts them: every
detector is built (on the meta device, so even ``--backbone hg104`` is instant) and asked for
``anchors_per_image(H, W)``, which runs its own anchor generator on the input size after the
detector's own padding (to a multiple of 32 for the FPN detectors). Anchor-free detectors
(CornerNet, CenterNet, FCOS) report 0.

- ``anchor_counts(names, height, width, preset, backbone)`` -> ``{name: count or None}``
  (``None``: the detector's module is not part of this installation).
- ``add_arguments(parser)`` / ``run(args)``: the subcommand. A rich table by default; with
  ``--json`` one object ``{name: count}`` of the available detectors only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from bench.errors import UsageError
from detectors import DETECTORS, PRESETS, DetectorUnavailable, build_detector
from detectors.backbones import HOURGLASS_PRESETS

__all__ = ["add_arguments", "anchor_counts", "count_for", "run"]

#: classes used to build the detectors (anchor counts do not depend on it)
NUM_CLASSES = 80


def count_for(name: str, height: int, width: int, preset: str, backbone: str = "tiny") -> int:
    """Anchors detector ``name`` places on an (height, width) input.

    Built on the meta device (no memory, no initialisation cost); falls back to the CPU when
    a detector cannot be built there. Raises :class:`DetectorUnavailable` for a missing module.
    """
    try:
        with torch.device("meta"):
            model = build_detector(name, NUM_CLASSES, backbone=backbone, preset=preset)
            return int(model.anchors_per_image(height, width))
    except (RuntimeError, NotImplementedError):
        model = build_detector(name, NUM_CLASSES, backbone=backbone, preset=preset)
        return int(model.anchors_per_image(height, width))


def anchor_counts(
    names: Sequence[str], height: int, width: int, preset: str, backbone: str = "tiny"
) -> dict[str, int | None]:
    """``{name: anchors per image}`` for each detector; ``None`` where it is unavailable."""
    counts: dict[str, int | None] = {}
    for name in names:
        try:
            counts[name] = count_for(name, height, width, preset, backbone)
        except DetectorUnavailable:
            counts[name] = None
    return counts


def _parse_names(text: str | None) -> list[str]:
    if text is None:
        return list(DETECTORS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DETECTORS]
    if not names or unknown:
        raise UsageError(
            f"--detectors {text!r}: unknown name(s) {', '.join(unknown) or '(none given)'}; "
            f"expected a comma-separated list from {', '.join(DETECTORS)}"
        )
    return list(dict.fromkeys(names))


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
        required=True,
        metavar=("H", "W"),
        help="network input height and width in pixels (before the detector's padding)",
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


def run(args: argparse.Namespace) -> int:
    """Count anchors; print a table or (``--json``) ``{name: count}``. Exit code 0."""
    names = _parse_names(args.detectors)
    height, width = args.size
    if height < 1 or width < 1:
        raise UsageError(f"--size {height} {width}: expected two positive ints (H W)")
    counts = anchor_counts(names, height, width, args.preset, args.backbone)
    missing = [n for n, c in counts.items() if c is None]
    if args.json:
        if missing:
            print(f"unavailable (left out): {', '.join(missing)}", file=sys.stderr)
        print(json.dumps({n: c for n, c in counts.items() if c is not None}, indent=2))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Anchors per image at {height}x{width} (preset {args.preset}, "
        f"backbone {args.backbone}; each detector pads the input itself)"
    )
    table.add_column("detector")
    table.add_column("anchors / image", justify="right")
    table.add_column("note")
    for name, count in counts.items():
        if count is None:
            table.add_row(name, "-", "unavailable (module not installed)")
        else:
            table.add_row(name, f"{count:,}", "anchor-free" if count == 0 else "")
    Console().print(table)
    return 0
