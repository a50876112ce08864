"""Named presets of frozen detector configs, and the anchor fields one preset lends another.

- :func:`preset_config`: ``presets[preset]`` with fields overridden, what every builder does
  with its ``preset=`` and ``**kwargs``; ``anchors=PRESET`` takes another preset's anchor
  fields first (e.g. the paper's anchors with everything else synthetic).
- :class:`AnchorFields`: the mixin of a config whose ``ANCHOR_FIELDS`` (sizes, ratios, scales,
  priors) ``anchors=PRESET`` replaces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

__all__ = ["AnchorFields", "preset_config"]

ConfigT = TypeVar("ConfigT")


class AnchorFields:
    """Mixin of a frozen detector config: ``ANCHOR_FIELDS`` name the fields that define the
    anchors (sizes, ratios, scales, priors), which ``anchors="paper"`` takes from a preset."""

    ANCHOR_FIELDS: ClassVar[tuple[str, ...]] = ()

    def anchor_values(self) -> dict[str, Any]:
        """``{field: value}`` of the anchor fields."""
        return {name: getattr(self, name) for name in self.ANCHOR_FIELDS}

    def with_anchors_of(self, other: Any) -> Any:
        """A copy of this config with ``other``'s anchor fields (everything else kept)."""
        return dataclasses.replace(self, **other.anchor_values())  # type: ignore[type-var]


def preset_config(
    presets: Mapping[str, ConfigT], preset: str, overrides: dict[str, Any]
) -> ConfigT:
    """``presets[preset]`` (a frozen dataclass) with fields replaced by ``overrides``.

    ``overrides["anchors"]`` (a preset name, for configs with :class:`AnchorFields`) first
    takes that preset's anchor fields; the other overrides then apply. ``overrides`` is not
    changed. ValueError naming the choices for an unknown preset, anchors preset or field.
    """
    if preset not in presets:
        raise ValueError(f"preset {preset!r}: expected one of {', '.join(presets)}")
    config = presets[preset]
    overrides = dict(overrides)
    anchors = overrides.pop("anchors", None)
    options = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    if isinstance(config, AnchorFields):
        options.add("anchors")
    unknown = sorted(set(overrides) - options)
    if anchors is not None and "anchors" not in options:
        unknown.append("anchors")
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {type(config).__name__}: "
            f"expected among {', '.join(sorted(options))}"
        )
    if anchors is not None:
        if anchors not in presets:
            raise ValueError(f"anchors={anchors!r}: expected one of {', '.join(presets)}")
        config = config.with_anchors_of(presets[anchors])  # type: ignore[attr-defined]
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]
