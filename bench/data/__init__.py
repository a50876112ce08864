"""Datasets for the benchmark: the synthetic generator, COCO-format loading and transforms.

- ``bench.data.synthetic``: ``generate_synthetic``, ``ensure_synthetic``, ``PRESETS``
  (``bench.data.render``: one image; ``bench.data.shapes``: its drawing primitives);
- ``bench.data.coco``: ``CocoDetection`` (synthetic and COCO 2017 layouts);
- ``bench.data.transforms``: ``Letterbox``, ``invert_boxes``, augmentations, ``Compose``,
  ``collate_detection``;
- ``bench.data.card``: dataset cards; ``bench.commands.data``: ``python -m bench data``.

Names are imported lazily, so the CLI does not pay for torch when it only generates images.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "generate_synthetic": "bench.data.synthetic",
    "ensure_synthetic": "bench.data.synthetic",
    "PRESETS": "bench.data.synthetic",
    "CocoDetection": "bench.data.coco",
    "find_split": "bench.data.coco",
    "Letterbox": "bench.data.transforms",
    "invert_boxes": "bench.data.transforms",
    "Compose": "bench.data.transforms",
    "collate_detection": "bench.data.transforms",
    "write_card": "bench.data.card",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bench.data' has no attribute {name!r}")
