"""Anchors per image of each detector at an input size (:func:`anchor_counts`, built on the
meta device) and the coverage of a set of boxes by each anchor set a detector has
(:func:`coverage_table`). The command is :mod:`bench.commands.anchors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.anchors.coverage import anchor_coverage
from detectors import build_detector

__all__ = ["anchor_counts", "count_for", "coverage_table"]

#: classes used to build the detectors (anchor counts do not depend on it)
NUM_CLASSES = 80
#: the anchor sets compared by --coverage: a preset name, or "fitted"
ANCHOR_SETS = ("synthetic", "synthetic-hand", "fitted", "paper")


def count_for(name: str, height: int, width: int, preset: str, backbone: str = "tiny") -> int:
    """Anchors detector ``name`` places on an (height, width) input.

    Built on the meta device (no memory, no initialisation cost); falls back to the CPU when
    a detector cannot be built there.
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
) -> dict[str, int]:
    """``{name: anchors per image}`` for each detector."""
    return {name: count_for(name, height, width, preset, backbone) for name in names}


def _tuples(value: Any) -> Any:
    """JSON lists back to the nested tuples the configs hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def coverage_table(
    names: Sequence[str], boxes: list, size: tuple[int, int], fitted: dict[str, dict]
) -> dict[str, dict[str, dict]]:
    """``{name: {anchor set: coverage dict + "anchors"}}`` for every anchor set a detector has.

    Anchor sets: :data:`ANCHOR_SETS`; ``fitted`` holds each detector's builder keyword
    arguments (``fit_presets(...)["detectors"][name]["fields"]``).
    """

    table: dict[str, dict[str, dict]] = {}
    for name in names:
        table[name] = {}
        for anchors in ANCHOR_SETS:
            if anchors == "fitted":
                if name not in fitted:
                    continue
                kwargs = {k: _tuples(v) for k, v in fitted[name]["fields"].items()}
            else:
                kwargs = {"anchors": anchors}
            try:
                model = build_detector(name, NUM_CLASSES, **kwargs)
            except ValueError:  # no such preset for this detector (synthetic-hand)
                continue
            row = anchor_coverage(model, boxes, size)
            row["anchors"] = int(model.anchors_per_image(*size))
            table[name][anchors] = row
    return table
