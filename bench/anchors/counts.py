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
