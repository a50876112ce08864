"""Loading and exporting the CornerNet release's checkpoint (parameter names of the original).

The release (princeton-vl/CornerNet, ``CornerNet_500000.pkl``) is a plain state dict saved from
``DataParallel``: every key carries the ``module.`` prefix. It was written by PyTorch 0.4, so
BatchNorm ``num_batches_tracked`` entries may be absent. Our :class:`CornerNet` uses the same
attribute names, so a key maps to ours by dropping the prefix.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

__all__ = [
    "RELEASE_MODULE_ORDER",
    "RELEASE_PREFIX",
    "load_official_checkpoint",
    "load_official_state_dict",
    "official_state_dict",
]

RELEASE_PREFIX = "module."
# Top-level modules in the order the release registers them (the order of its state dict).
RELEASE_MODULE_ORDER = (
    "pre",
    "kps",
    "cnvs",
    "tl_cnvs",
    "br_cnvs",
    "tl_heats",
    "br_heats",
    "tl_tags",
    "br_tags",
    "inters",
    "inters_",
    "cnvs_",
    "tl_regrs",
    "br_regrs",
)
_OPTIONAL_SUFFIX = ".num_batches_tracked"  # absent from PyTorch 0.4 files
_MAX_LISTED = 20


def official_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """``model.state_dict()`` under the release's names (``module.`` prefix, release order)."""
    own = model.state_dict()
    rank = {name: i for i, name in enumerate(RELEASE_MODULE_ORDER)}
    # Stable sort by top-level module; modules the release lacks go last in registration order.
    keys = sorted(own, key=lambda k: rank.get(k.split(".", 1)[0], len(rank)))
    return OrderedDict((RELEASE_PREFIX + k, own[k]) for k in keys)


def load_official_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict with the release's names into ``model``, strictly.

    Keys may carry the ``module.`` prefix (the release) or not. Every key must be used and
    every shape must equal the model's; only ``num_batches_tracked`` entries may be missing.
    Raises ValueError listing the missing and unexpected keys and the shape mismatches.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict of type {type(state_dict).__name__}: expected a mapping")
    stripped: dict[str, torch.Tensor] = {}
    not_tensors: list[str] = []
    for key, value in state_dict.items():
        name = key[len(RELEASE_PREFIX) :] if key.startswith(RELEASE_PREFIX) else key
        if not isinstance(value, torch.Tensor):
            not_tensors.append(f"{key} ({type(value).__name__})")
            continue
        stripped[name] = value
    own = model.state_dict()
    missing = [k for k in own if k not in stripped and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in stripped if k not in own]
    mismatched = [
        f"{k}: checkpoint {_shape(stripped[k])} vs model {_shape(own[k])}"
        for k in stripped
        if k in own and stripped[k].shape != own[k].shape
    ]
    problems = [
        _listing("missing keys", missing),
        _listing("unexpected keys", unexpected),
        _listing("shape mismatches", mismatched),
        _listing("values that are not tensors", not_tensors),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(
            f"state dict does not match {type(model).__name__} "
            f"({len(state_dict)} checkpoint entries, {len(own)} model entries):\n"
            + "\n".join(problems)
        )
    model.load_state_dict(stripped, strict=False)


def load_official_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a release checkpoint (``.pkl`` / ``.pth``: a plain state dict) onto the CPU.

    Loaded with ``weights_only=True``. Raises FileNotFoundError for a missing file and
    ValueError naming the file when it is not a state dict (a mapping of str to tensors).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a state dict"
        raise ValueError(
            f"checkpoint {path!r} could not be read as a state dict with torch.load("
            f"weights_only=True): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"checkpoint {path!r} holds a {type(obj).__name__}: expected a non-empty state dict "
            "(a mapping of parameter names to tensors)"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"checkpoint {path!r} is not a plain state dict: entries {bad[:5]!r} are not "
            "str -> tensor"
        )
    return dict(obj)


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) if t.dim() else "scalar"


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = "\n  ".join(items[:_MAX_LISTED])
    more = f"\n  ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{title} ({len(items)}):\n  {shown}{more}"
