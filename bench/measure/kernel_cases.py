"""The kernel benchmark cases, defined once: ``python -m bench kernels``
(:func:`bench.measure.kernel_timing.kernel_cases`) and the pytest-benchmark modules of
tests/benchmarks/ (parametrised over :data:`KERNEL_CASES` by their conftest.py) time these.

A :class:`KernelCase` is a ``name`` (the workload, e.g. ``corner_pool_tl_fwd``), a ``provider``
(``triton``: the kernel, CUDA only; ``torch``: the reference, our CPU path; or a baseline) and
a builder: ``inputs(device, size)`` makes the workload's :class:`Inputs` (shared by the
providers of one name) and ``op(inputs)`` returns the call to time. Its ``id``,
``"<name>-<provider>"``, is the pytest id (``test_bench_kernel[<id>]``, the key of
tests/benchmarks/baseline.json).

Sizes: :data:`FULL` (the benchmark shapes, on a GPU) and :data:`SMALL` (on the CPU: the CLI and
the CI benchmarks); they differ in the batch of the pooling forward + backward, 8 or 1 (the
baselines' Python row loops take seconds per call on the CPU at batch 8).

- ``corner_pool_tl_fwd``: ``fused_corner_pool(a, b, "tl")`` at (1, 256, 128, 128) fp32, under
  ``no_grad``; providers triton, torch, cummax (flip + cummax + flip), loop (the original's
  row loop);
- ``corner_pool_tl_fwd_bwd``: forward and backward (``autograd.grad``) at (B, 256, 128, 128);
- ``cornernet_decode``: 1 x 80 x 128 x 128 heads (heat ~ N(-3, 1), as the original's
  recorded test heads), K = 100, 1000 detections; triton, torch, dense (the original's decode
  written naively, K x K x 4 boxes);
- ``heatmap_peaks``: the top-left heat of those heads, k = 100; triton, torch;
- ``soft_nms``: Gaussian soft-NMS of 1000 boxes, one class; triton, torch;
- ``soft_nms_per_class``: the same boxes in 80 classes; triton, torch;
- ``soft_nms_cornernet_rows``: the rows CornerNet's decode hands soft-NMS (zoo weights
  zoo/cornernet-tiny.pt, 8 synthetic-benchmark images at 128 px: about 300 boxes in 9 classes
  each), all 8 per call; torch (``batched_soft_nms``), triton (the same, Triton backend),
  per_class (``soft_nms_per_class``, the per-class loop). Raises :class:`CaseUnavailable`
  without the zoo file.

Bandwidth (pooling): ``elements`` x ``bytes_per_element``, the minimum traffic of the op:
12 B per fp32 element forward (read a and b, write the sum), 32 B forward + backward (+ read
the output gradient, write two input gradients, read the saved pooled maps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import torch

from bench import REPO_DIR
from kernels import cornernet_decode, fused_corner_pool, heatmap_peaks, soft_nms
from kernels.corner_pool_baselines import corner_pool_cummax, corner_pool_loop
from kernels.decode import cornernet_decode_dense, cornernet_decode_reference
from kernels.soft_nms import batched_soft_nms, soft_nms_per_class

__all__ = [
    "FULL", "KERNEL_CASES", "SMALL", "CaseUnavailable", "Inputs", "KernelCase", "Size",
    "cases_for", "cases_named", "cornernet_rows", "size_for",
]  # fmt: skip

POOL_SHAPE = (256, 128, 128)  # CornerNet's pooling branch at a 511 x 511 input
FWD_BYTES, FWD_BWD_BYTES = 12, 32  # minimum bytes per fp32 element (module docstring)
HEAT_SHAPE, K, NUM_DETS, BOXES, CLASSES = (1, 80, 128, 128), 100, 1000, 1000, 80
ZOO = REPO_DIR / "zoo" / "cornernet-tiny.pt"
ROWS_SIZE, ROWS_IMAGES = 128, 8


class CaseUnavailable(RuntimeError):
    """A case's inputs cannot be made here (a missing file); the message says why."""


@dataclass(frozen=True)
class Size:
    """The shapes a case is built at (see the module docstring)."""

    name: str
    train_batch: int  # batch of corner_pool_tl_fwd_bwd


FULL, SMALL = Size("full", train_batch=8), Size("small", train_batch=1)


def size_for(device: torch.device | str) -> Size:
    """FULL on a GPU, SMALL on the CPU."""
    return FULL if torch.device(device).type == "cuda" else SMALL


@dataclass(frozen=True)
class Inputs:
    """One workload: what its providers run on, how it is labelled, and a check of a result.

    ``label``: the case with its shape (the CLI's ``case`` column, pytest-benchmark's group);
    ``data``: tensors and objects by name; ``elements`` / ``bytes_per_element``: the traffic
    for GB/s (None: not counted); ``check(result)``: raises AssertionError when a provider's
    result is not the expected one (the tests run it once, after timing).
    """

    label: str
    data: dict[str, Any]
    elements: int | None = None
    bytes_per_element: int | None = None
    check: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class KernelCase:
    """A workload timed with one provider: ``op(inputs(device, size))`` is the timed call."""

    name: str
    provider: str
    inputs: Callable[[torch.device, Size], Inputs]
    op: Callable[[Inputs], Callable[[], Any]]

    @property
    def id(self) -> str:
        """``"<name>-<provider>"``: the pytest id and the CLI rows' ``id``."""
        return f"{self.name}-{self.provider}"

    @property
    def cuda_only(self) -> bool:
        return self.provider == "triton"

    def build(
        self, device: torch.device | str, size: Size | None = None
    ) -> tuple[Inputs, Callable[[], Any]]:
        """The inputs on ``device`` at ``size`` (default :func:`size_for`) and the timed call."""
        device = torch.device(device)
        inputs = self.inputs(device, size or size_for(device))
        return inputs, self.op(inputs)


# ---------------------------------------------------------------- corner pooling
POOLS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "triton": lambda a, b: fused_corner_pool(a, b, "tl", backend="triton"),
    "torch": lambda a, b: fused_corner_pool(a, b, "tl", backend="torch"),
    "cummax": lambda a, b: corner_pool_cummax(a, "top") + corner_pool_cummax(b, "left"),
    "loop": lambda a, b: corner_pool_loop(a, "top") + corner_pool_loop(b, "left"),
}


def _pool_inputs(batch: int, backward: bool, device: torch.device) -> Inputs:
    shape = (batch, *POOL_SHAPE)
    gen = torch.Generator(device).manual_seed(0)
    data = {k: torch.randn(shape, generator=gen, device=device, requires_grad=backward)
            for k in ("a", "b")}  # fmt: skip
    if backward:
        data["grad"] = torch.randn(shape, generator=gen, device=device)

    def check(out: Any) -> None:
        got = [t.shape for t in out] if backward else [out.shape]
        assert got == [shape] * len(got), f"{got} != {shape}"

    what, nbytes = ("fwd+bwd", FWD_BWD_BYTES) if backward else ("fwd", FWD_BYTES)
    return Inputs(f"corner_pool tl {what} {shape}", data, math.prod(shape), nbytes, check)


def _pool_fwd_inputs(device: torch.device, size: Size) -> Inputs:
    return _pool_inputs(1, False, device)


def _pool_fwd_bwd_inputs(device: torch.device, size: Size) -> Inputs:
    return _pool_inputs(size.train_batch, True, device)


def _pool_op(pool: Callable, x: Inputs) -> Callable[[], Any]:
    a, b = x.data["a"], x.data["b"]
    if "grad" in x.data:  # autograd.grad: nothing accumulates into .grad between calls
        return lambda: torch.autograd.grad(pool(a, b), (a, b), x.data["grad"])

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return pool(a, b)

    return forward


# ---------------------------------------------------------------- decode and heatmap peaks
def _heads(device: torch.device) -> list[torch.Tensor]:
    """tl/br heat ~ N(-3, 1) (sparse peaks), tags ~ N(0, 1), offsets ~ U(0, 1)."""
    gen = torch.Generator().manual_seed(0)
    heat = [torch.randn(HEAT_SHAPE, generator=gen) - 3 for _ in range(2)]
    tags = [torch.randn(1, 1, *HEAT_SHAPE[2:], generator=gen) for _ in range(2)]
    regr = [torch.rand(1, 2, *HEAT_SHAPE[2:], generator=gen) for _ in range(2)]
    return [t.to(device) for t in (*heat, *tags, *regr)]


def _decode_inputs(device: torch.device, size: Size) -> Inputs:
    heads = _heads(device)

    def check(out: torch.Tensor) -> None:
        ref = cornernet_decode_reference(*heads, K=K, num_dets=NUM_DETS)
        valid, expected = int((out[..., 4] > -1).sum()), int((ref[..., 4] > -1).sum())
        assert out.shape == ref.shape and valid == expected > 0, (out.shape, valid, expected)

    label = "cornernet_decode {}x{}x{}x{} K={}".format(*HEAT_SHAPE, K)
    return Inputs(label, {"heads": heads}, check=check)


DECODERS: dict[str, Callable[..., torch.Tensor]] = {
    "triton": partial(cornernet_decode, backend="triton"),
    "torch": cornernet_decode_reference,
    "dense": cornernet_decode_dense,
}


def _decode_op(decode: Callable, x: Inputs) -> Callable[[], Any]:
    return partial(decode, *x.data["heads"], K=K, num_dets=NUM_DETS)


def _peaks_inputs(device: torch.device, size: Size) -> Inputs:
    def check(out: tuple[torch.Tensor, ...]) -> None:
        assert out[0].shape == (1, K), out[0].shape

    label = "heatmap_peaks {}x{}x{}x{} k={}".format(*HEAT_SHAPE, K)
    return Inputs(label, {"heat": _heads(device)[0]}, check=check)


def _peaks_op(backend: str, x: Inputs) -> Callable[[], Any]:
    return partial(heatmap_peaks, x.data["heat"], K, backend=backend)


# ---------------------------------------------------------------- soft-NMS
def _boxes(device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(BOXES, 2, generator=gen) * 400
    wh = torch.rand(BOXES, 2, generator=gen) * 120 + 4
    scores = torch.rand(BOXES, generator=gen)
    labels = torch.randint(0, CLASSES, (BOXES,), generator=gen)
    data = {"boxes": torch.cat([xy, xy + wh], 1), "scores": scores, "labels": labels}
    return {k: v.to(device) for k, v in data.items()}


def _check_kept(out: tuple[torch.Tensor, torch.Tensor]) -> None:
    keep, kept = out
    assert 0 < keep.shape[0] <= BOXES and kept.shape == keep.shape, (keep.shape, kept.shape)


def _soft_nms_inputs(device: torch.device, size: Size) -> Inputs:
    return Inputs(f"soft_nms gaussian {BOXES} boxes", _boxes(device), check=_check_kept)


def _soft_nms_op(backend: str, x: Inputs) -> Callable[[], Any]:
    return partial(soft_nms, x.data["boxes"], x.data["scores"], backend=backend)


def _per_class_inputs(device: torch.device, size: Size) -> Inputs:
    label = f"soft_nms_per_class gaussian {BOXES} boxes, {CLASSES} classes"
    return Inputs(label, _boxes(device), check=_check_kept)


def _per_class_op(backend: str, x: Inputs) -> Callable[[], Any]:
    d = x.data
    return partial(soft_nms_per_class, d["boxes"], d["scores"], d["labels"], backend=backend)


@lru_cache(maxsize=1)  # a model load and 8 forwards (seconds); its providers share them
def cornernet_rows(device: torch.device, size: Size) -> Inputs:
    """The zoo CornerNet, its inputs and outputs, and the soft-NMS rows of each image.

    ``data``: ``model``, ``inputs`` and ``outputs`` (one per image) and ``nms``, one
    ``(boxes, scores, labels)`` per image as ``select_detections`` hands them to soft-NMS.
    """
    if not ZOO.exists():
        raise CaseUnavailable(f"{ZOO} is missing")
    # the detector stack: imported on use (seconds of start-up for every other case)
    from bench.measure.latency import preprocess, render_raw_images
    from bench.train.checkpoints import load_detector

    model = load_detector(ZOO, device)
    images = render_raw_images(ROWS_IMAGES, ROWS_SIZE)
    inputs = [preprocess(r, ROWS_SIZE, device, torch.float32)[0][None] for r in images]
    with torch.inference_mode():
        outputs = [model(x) for x in inputs]
        rows = [model._input_rows(out, model.test_cfg)[0] for out in outputs]
    rows = [r[r[:, 4] > -1].clamp(min=0) for r in rows]  # as select_detections sees them
    nms = [(r[:, :4].contiguous(), r[:, 4].contiguous(), r[:, 7].long()) for r in rows]

    def check(out: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        assert sum(keep.shape[0] for keep, _ in out) > 0

    label = f"soft_nms CornerNet {ROWS_SIZE} px rows ({ROWS_IMAGES} images per call)"
    data = {"model": model, "inputs": inputs, "outputs": outputs, "nms": nms}
    return Inputs(label, data, check=check)


ROWS_NMS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "triton": partial(batched_soft_nms, backend="triton"),
    "torch": partial(batched_soft_nms, backend="torch"),
    "per_class": partial(soft_nms_per_class, backend="torch"),
}


def _rows_op(nms: Callable, x: Inputs) -> Callable[[], Any]:
    rows = x.data["nms"]
    return lambda: [nms(*r) for r in rows]


# ---------------------------------------------------------------- the list
KERNEL_CASES: tuple[KernelCase, ...] = (
    *(
        KernelCase("corner_pool_tl_fwd", p, _pool_fwd_inputs, partial(_pool_op, f))
        for p, f in POOLS.items()
    ),
    *(
        KernelCase("corner_pool_tl_fwd_bwd", p, _pool_fwd_bwd_inputs, partial(_pool_op, f))
        for p, f in POOLS.items()
    ),
    *(
        KernelCase("cornernet_decode", p, _decode_inputs, partial(_decode_op, f))
        for p, f in DECODERS.items()
    ),
    *(
        KernelCase("heatmap_peaks", p, _peaks_inputs, partial(_peaks_op, p))
        for p in ("triton", "torch")
    ),
    *(
        KernelCase("soft_nms", p, _soft_nms_inputs, partial(_soft_nms_op, p))
        for p in ("triton", "torch")
    ),
    *(
        KernelCase("soft_nms_per_class", p, _per_class_inputs, partial(_per_class_op, p))
        for p in ("triton", "torch")
    ),
    *(
        KernelCase("soft_nms_cornernet_rows", p, cornernet_rows, partial(_rows_op, f))
        for p, f in ROWS_NMS.items()
    ),
)


def cases_named(*names: str) -> list[KernelCase]:
    """The cases of the workloads ``names``, in :data:`KERNEL_CASES` order; an unknown name
    raises KeyError."""
    unknown = set(names) - {c.name for c in KERNEL_CASES}
    if unknown:
        raise KeyError(f"no kernel case named {sorted(unknown)}")
    return [c for c in KERNEL_CASES if c.name in names]


def cases_for(device: torch.device | str) -> list[KernelCase]:
    """The cases that run on ``device``: all on a GPU, all but triton's on the CPU."""
    cuda = torch.device(device).type == "cuda"
    return [c for c in KERNEL_CASES if cuda or not c.cuda_only]
