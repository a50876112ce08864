"""Detectors compared by cornerbench, all on the shared hourglass backbone.

``DETECTORS`` maps a name to its builder ``build(num_classes, backbone="tiny",
preset="synthetic", **kwargs) -> Detector``. Each builder imports its module only when called,
so importing this package is cheap and a detector whose module is missing (or broken) does not
break the others; calling the builder of a missing module raises :class:`DetectorUnavailable`.

``preset="synthetic"`` sizes anchors for the built-in 128 px benchmark (fitted to its training
boxes by ``python -m bench anchors --fit``); ``preset="paper"`` uses the published settings, so
that anchor counts can be compared with the literature. The anchor-based detectors' builders
also take ``anchors="paper"`` (or ``"synthetic-hand"``, the hand-chosen anchors before the fit):
that preset's anchor sizes, ratios, scales or priors with everything else of ``preset``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from detectors.base import Detections, Detector

__all__ = [
    "DETECTORS",
    "PRESETS",
    "Detections",
    "Detector",
    "DetectorUnavailable",
    "build_detector",
    "detector_target",
    "is_available",
]

#: anchor presets every builder accepts
PRESETS = ("synthetic", "paper")


class DetectorUnavailable(ImportError):
    """The module implementing a registered detector is not part of this installation."""


def _is_missing(module_name: str, exc: ModuleNotFoundError) -> bool:
    """True when ``exc`` says ``module_name`` (or a parent package) itself does not exist."""
    return exc.name is not None and (module_name + ".").startswith(exc.name + ".")


def _lazy(target: str) -> Callable[..., Detector]:
    """A builder that imports ``"package.module:function"`` on first call and forwards to it."""
    module_name, func_name = target.split(":")

    def build(
        num_classes: int, backbone: str = "tiny", preset: str = "synthetic", **kwargs: Any
    ) -> Detector:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if _is_missing(module_name, exc):
                raise DetectorUnavailable(f"{target} is not available: {exc}") from exc
            raise
        func = getattr(module, func_name, None)
        if func is None:
            raise DetectorUnavailable(f"{module_name} has no {func_name}()")
        return func(num_classes, backbone=backbone, preset=preset, **kwargs)

    build.__name__ = func_name
    build.__qualname__ = func_name
    build.__doc__ = f"Build with {target} (imported on first call)."
    build.target = target  # type: ignore[attr-defined]
    return build


DETECTORS: dict[str, Callable[..., Detector]] = {
    "cornernet": _lazy("detectors.cornernet.detector:build_cornernet"),
    "centernet": _lazy("detectors.centernet:build_centernet"),
    "retinanet": _lazy("detectors.retinanet:build_retinanet"),
    "faster_rcnn": _lazy("detectors.faster_rcnn:build_faster_rcnn"),
    "ssd": _lazy("detectors.ssd:build_ssd"),
    "dssd": _lazy("detectors.dssd:build_dssd"),
    "yolov3": _lazy("detectors.yolov3:build_yolov3"),
    "fcos": _lazy("detectors.fcos:build_fcos"),
}


def _check_name(name: str) -> None:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}: expected one of {', '.join(DETECTORS)}")


def detector_target(name: str) -> str:
    """``"package.module:function"`` that builds detector ``name``."""
    _check_name(name)
    return DETECTORS[name].target  # type: ignore[attr-defined]


def is_available(name: str) -> bool:
    """Whether detector ``name``'s module and builder can be imported (imports the module)."""
    module_name, func_name = detector_target(name).split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if _is_missing(module_name, exc):
            return False
        raise
    return hasattr(module, func_name)


def build_detector(
    name: str,
    num_classes: int,
    backbone: str = "tiny",
    preset: str = "synthetic",
    **kwargs: Any,
) -> Detector:
    """Build detector ``name`` for ``num_classes`` classes on the ``backbone`` hourglass preset.

    Raises ValueError for an unknown name (naming the choices), ``num_classes`` < 1 or an
    unknown preset, and :class:`DetectorUnavailable` when the detector's module is missing.
    """
    _check_name(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    return DETECTORS[name](num_classes, backbone=backbone, preset=preset, **kwargs)
