"""What a command was asked to do, parsed once into frozen specifications.

Every command shares some options: the device and dtype, ``--detectors`` (detector names and
the named variants: CornerNet's ablations, the paper-anchor rows), ``--warmup`` / ``--iters``,
``--batch-size``, the output folder. This module adds them to a parser (``add_*_options``),
validates them once (``parse_*``, :class:`~bench.errors.UsageError` naming the option and the
value) and holds the results in frozen dataclasses: :class:`Variant` (one row family),
:class:`TimingSpec` (the latency protocol), :class:`DataSpec` (the evaluated data) and
:class:`RunSpec` (a ``bench run``). Library functions take these objects, never an
``argparse.Namespace``; commands (``bench/commands/``) build them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import UsageError
from detectors import DETECTORS

__all__ = [
    "ABLATIONS",
    "ANCHOR_ABLATIONS",
    "ANCHOR_DETECTORS",
    "DTYPES",
    "DataSpec",
    "LatencySpec",
    "RunSpec",
    "TimingSpec",
    "Variant",
    "add_device_options",
    "add_detectors_option",
    "add_timing_options",
    "named_variants",
    "parse_detectors",
    "parse_int_list",
    "parse_timing",
    "resolve_device",
]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}

#: (row name, registry base detector, build kwargs): CornerNet's ablations (paper Tables 1, 2)
ABLATIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("cornernet-no-corner-pool", "cornernet", {"corner_pooling": False}),
    ("cornernet-no-gaussian", "cornernet", {"gaussian_bump": False}),
)
#: the detectors that place anchors (``bench anchors --fit`` fits them)
ANCHOR_DETECTORS = ("retinanet", "faster_rcnn", "ssd", "dssd", "yolov3")
#: each anchor-based detector with its paper's anchor settings (sizes, ratios, scales, priors
#: as published) and everything else of the synthetic preset: ``build_detector(base, K,
#: anchors="paper")``. ``bench run`` adds them where the zoo has weights for them.
ANCHOR_ABLATIONS: tuple[tuple[str, str, dict[str, Any]], ...] = tuple(
    (f"{base}-paper-anchors", base, {"anchors": "paper"}) for base in ANCHOR_DETECTORS
)


@dataclass(frozen=True)
class Variant:
    """One row family: ``name`` in the results, registry ``base`` detector, build kwargs."""

    name: str
    base: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def named_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """Variant name -> (base detector, build kwargs): :data:`ABLATIONS` and
    :data:`ANCHOR_ABLATIONS` (resolvable by ``--detectors``)."""
    return {name: (base, dict(kw)) for name, base, kw in (*ABLATIONS, *ANCHOR_ABLATIONS)}


# ---------------------------------------------------------------- options
def add_device_options(parser: argparse.ArgumentParser, *, dtype: bool = True) -> None:
    """``--device {cpu,cuda}`` (default: CUDA when there is one) and ``--dtype``."""
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: auto")
    if dtype:
        parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")


def add_detectors_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--detectors a,b`` (default: all)."""
    parser.add_argument(
        "--detectors", default=None, help=help or "comma-separated names (default all)"
    )


def add_timing_options(
    parser: argparse.ArgumentParser, *, warmup_help: str = "untimed iterations",
    iters_help: str = "timed iterations",
) -> None:  # fmt: skip
    """``--warmup N`` and ``--iters N`` (None: the command's default)."""
    parser.add_argument("--iters", type=int, default=None, help=iters_help)
    parser.add_argument("--warmup", type=int, default=None, help=warmup_help)


# ---------------------------------------------------------------- parsing
def resolve_device(name: str | None) -> torch.device:
    """``--device`` -> a torch device (None: CUDA when available); UsageError for CUDA
    requested on a machine without it."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: expected cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4); UsageError naming ``option`` unless all are ints >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UsageError(f"{option} {text!r}: expected comma-separated integers >= 1")
    return tuple(dict.fromkeys(values))


def parse_detectors(
    text: str | None,
    builders: Mapping[str, Callable] | None = None,
    *,
    variants: bool = True,
    allowed: Sequence[str] | None = None,
) -> list[Variant]:
    """``--detectors a,b`` -> the variants, in the given order without repeats.

    ``None`` or ``"all"``: every detector of ``builders`` (default: the registry's) or of
    ``allowed``. A name is a detector of ``builders`` or, with ``variants``, a named variant
    (:func:`named_variants`) whose base is one; ``allowed`` restricts the names further.
    UsageError naming the unknown names and the choices.
    """
    builders = DETECTORS if builders is None else builders
    named = named_variants() if variants else {}
    choices = [n for n in (*builders, *named) if allowed is None or n in allowed]
    if text is None or text.strip() == "all":
        return [Variant(n, n) for n in builders if allowed is None or n in allowed]
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in choices] or ([] if names else ["(none given)"])
    unbuildable = [n for n in names if n in named and named[n][0] not in builders]
    if bad or unbuildable:
        raise UsageError(
            f"--detectors {text!r}: unknown detector {', '.join(bad + unbuildable)}; expected "
            f"all or a comma-separated list from {', '.join(choices)}"
        )
    return [Variant(n, *named[n]) if n in named else Variant(n, n) for n in names]


@dataclass(frozen=True)
class TimingSpec:
    """The latency protocol: ``warmup`` untimed and ``iters`` timed calls per batch size in
    ``batches``, cycling through ``images`` distinct images."""

    warmup: int
    iters: int
    batches: tuple[int, ...] = (1,)
    images: int = 4


def parse_timing(
    warmup: int | None, iters: int | None, defaults: tuple[int, int], *,
    batches: str = "1", images: int = 4,
) -> TimingSpec:  # fmt: skip
    """``--warmup`` / ``--iters`` (None: ``defaults`` = (warmup, iters)) and ``--batch-size``
    validated: UsageError unless warmup >= 0 and iters >= 1."""
    warmup = defaults[0] if warmup is None else warmup
    iters = defaults[1] if iters is None else iters
    if warmup < 0 or iters < 1:
        raise UsageError(f"--warmup {warmup} / --iters {iters}: expected >= 0 / >= 1")
    return TimingSpec(warmup, iters, parse_int_list(batches, "--batch-size"), images)


@dataclass(frozen=True)
class LatencySpec:
    """One ``bench latency``: ``names`` timed on ``suite`` (``bench.measure.latency.SUITES``)
    at ``input_size`` (None: the suite's), each in every mode of ``modes`` ("eager",
    "compile", "cudagraphs")."""

    names: tuple[str, ...]
    suite: str
    device: torch.device
    dtype: str
    timing: TimingSpec
    modes: tuple[str, ...] = ("eager",)
    input_size: int | None = None

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class DataSpec:
    """The evaluated data: ``source`` as given (``synthetic``, ``synthetic:PATH``,
    ``coco:PATH``), its ``kind`` and ``root``, the network ``input_size``, the detectors'
    anchor ``preset`` for it and the validation images evaluated (``max_images``, None: all)."""

    source: str
    kind: str
    root: Path
    input_size: int
    preset: str
    max_images: int | None = None
    split: str = "val"


@dataclass(frozen=True)
class RunSpec:
    """One ``bench run``: the rows (``variants``), the data, the device, the weights and
    where everything goes. ``weights_dir`` is None with ``train`` (the run exports its own)."""

    variants: tuple[Variant, ...]
    profile: str
    data: DataSpec
    device: torch.device
    dtype: str
    backbone: str
    timing: TimingSpec
    out: Path
    weights_dir: Path | None
    explicit_weights: bool = False
    train: bool = False
    train_images: int | None = None
    progress: bool = True

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def config(self) -> dict[str, Any]:
        """The run's identity in ``run.json``: a rerun with another config is refused."""
        return {
            "detectors": [v.name for v in self.variants], "profile": self.profile,
            "data": self.data.source,
            "weights": "train" if self.train else str(Path(self.weights_dir).resolve()),
            "device": self.device.type, "dtype": self.dtype, "input_size": self.data.input_size,
            "batches": list(self.timing.batches), "backbone": self.backbone,
            "preset": self.data.preset,
        }  # fmt: skip
