"""Backbones shared by the detectors: the stacked hourglass family (CornerNet's)."""

from detectors.backbones.hourglass import (
    HOURGLASS_PRESETS,
    HourglassBackbone,
    HourglassConfig,
    HourglassOutput,
    build_hourglass,
    count_parameters,
)

__all__ = [
    "HOURGLASS_PRESETS",
    "HourglassBackbone",
    "HourglassConfig",
    "HourglassOutput",
    "build_hourglass",
    "count_parameters",
]
