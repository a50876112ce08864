"""Detectors compared by cornerbench, all on the shared hourglass backbone.

``DETECTORS`` maps a name to its builder ``build(num_classes, backbone="tiny",
preset="synthetic", **kwargs) -> Detector``.

``preset="synthetic"`` sizes anchors for the built-in 128 px benchmark (fitted to its training
boxes by ``python -m bench anchors --fit``); ``preset="paper"`` uses the published settings, so
that anchor counts can be compared with the literature. The anchor-based detectors' builders
also take ``anchors="paper"`` (or ``"synthetic-hand"``, the hand-chosen anchors before the fit):
that preset's anchor sizes, ratios, scales or priors with everything else of ``preset``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detectors.base import Detections, Detector
from detectors.centernet import build_centernet
from detectors.cornernet.detector import build_cornernet
from detectors.dssd import build_dssd
from detectors.faster_rcnn import build_faster_rcnn
from detectors.fcos import build_fcos
from detectors.retinanet import build_retinanet
from detectors.ssd import build_ssd
from detectors.yolov3 import build_yolov3

__all__ = [
    "DETECTORS",
    "PRESETS",
    "Detections",
    "Detector",
    "build_detector",
]

#: anchor presets every builder accepts
PRESETS = ("synthetic", "paper")

DETECTORS: dict[str, Callable[..., Detector]] = {
    "cornernet": build_cornernet,
    "centernet": build_centernet,
    "retinanet": build_retinanet,
    "faster_rcnn": build_faster_rcnn,
    "ssd": build_ssd,
    "dssd": build_dssd,
    "yolov3": build_yolov3,
    "fcos": build_fcos,
}


def _check_name(name: str) -> None:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}: expected one of {', '.join(DETECTORS)}")


def build_detector(
    name: str,
    num_classes: int,
    backbone: str = "tiny",
    preset: str = "synthetic",
    **kwargs: Any,
) -> Detector:
    """Build detector ``name`` for ``num_classes`` classes on the ``backbone`` hourglass preset.

    Raises ValueError for an unknown name (naming the choices), ``num_classes`` < 1 or an
    unknown preset.
    """
    _check_name(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    return DETECTORS[name](num_classes, backbone=backbone, preset=preset, **kwargs)
