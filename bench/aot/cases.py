"""What :mod:`bench.aot.compile` compiles: the kernel launches of the public kernels functions.

:func:`record_launches` calls the public functions (corner_pool, fused_corner_pool,
heatmap_peaks, cornernet_decode, soft_nms) on storage-less "meta" tensors that claim to be
CUDA tensors, each JITFunction's ``run`` replaced by a recorder: every launch heuristic (grid,
BLOCK sizes, UNROLL, num_warps) is the launcher's own, and a kernel whose signature changes is
picked up as it is. Nothing runs on a device and no CUDA runtime is needed, but triton must
have been imported without TRITON_INTERPRET (the interpreter replaces JITFunctions).

Cases (:func:`benchmark_cases`, the shapes of ``python -m bench kernels``): corner_pool
forward and backward in each direction and fused_corner_pool tl/br for inference and training
at (1|8, 256, 128, 128); heatmap_peaks and cornernet_decode at 1 x 80 x 128 x 128, K = 100;
soft_nms of 1000 boxes, each method, float32. Dtypes (:func:`dtypes_from`): float32 by
default, float16 and bfloat16 too with "all".
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

import kernels

__all__ = [
    "DTYPES",
    "Launch",
    "benchmark_cases",
    "dtypes_from",
    "kernel_functions",
    "record_launches",
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
POOL_SHAPES = ((1, 256, 128, 128), (8, 256, 128, 128))  # CornerNet's pooling at 511 x 511
HEADS = (1, 80, 128, 128)  # heatmaps of 80 classes at 511 x 511
K = 100
SOFT_NMS_BOXES = 1000


def _meta(shape: Sequence[int], dtype: torch.dtype, grad: bool = False) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device="meta", requires_grad=grad)


def dtypes_from(spec: str | None) -> list[str]:
    """The dtype names ``spec`` means: None or "" -> float32, "all", or "name,name"."""
    if not spec:
        return ["float32"]
    names = list(DTYPES) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not names or any(n not in DTYPES for n in names):
        raise ValueError(f"dtypes: expected 'all' or names from {list(DTYPES)}, got {spec!r}")
    return names


def _pool(shape: Sequence[int], dtype: torch.dtype, direction: str) -> None:
    x = _meta(shape, dtype, True)
    kernels.corner_pool(x, direction, backend="triton").backward(_meta(shape, dtype))


def _fused(shape: Sequence[int], dtype: torch.dtype, corner: str, train: bool) -> None:
    a, b = _meta(shape, dtype, train), _meta(shape, dtype, train)
    out = kernels.fused_corner_pool(a, b, corner, backend="triton")
    if train:
        out.backward(_meta(shape, dtype))


def _peaks(dtype: torch.dtype) -> None:
    kernels.heatmap_peaks(_meta(HEADS, dtype), K, backend="triton")


def _decode(dtype: torch.dtype) -> None:
    n, _, h, w = HEADS
    heads = [_meta(HEADS, dtype) for _ in range(2)]
    tags, regr = [_meta((n, 1, h, w), dtype)] * 2, [_meta((n, 2, h, w), dtype)] * 2
    kernels.cornernet_decode(*heads, *tags, *regr, K=K, backend="triton")


def _soft_nms(method: str) -> None:
    boxes, scores = (
        _meta((SOFT_NMS_BOXES, 4), torch.float32),
        _meta((SOFT_NMS_BOXES,), torch.float32),
    )
    kernels.soft_nms(boxes, scores, method=method, backend="triton")


def benchmark_cases(dtypes: Sequence[str]) -> dict[str, Callable[[], None]]:
    """``{label: thunk}``: each thunk calls public kernels functions on meta tensors."""

    def fmt(shape: Sequence[int]) -> str:
        return "(" + ",".join(map(str, shape)) + ")"

    cases: dict[str, Callable[[], None]] = {}
    for name in dtypes:
        dt = DTYPES[name]
        for s in POOL_SHAPES:
            for d in ("top", "bottom", "left", "right"):
                cases[f"corner_pool {d} fwd+bwd {fmt(s)} {name}"] = partial(_pool, s, dt, d)
            for corner, mode in itertools.product(("tl", "br"), ("infer", "train")):
                fused = partial(_fused, s, dt, corner, mode == "train")
                cases[f"fused_corner_pool {corner} {mode} {fmt(s)} {name}"] = fused
        cases[f"heatmap_peaks {fmt(HEADS)} k={K} {name}"] = partial(_peaks, dt)
        cases[f"cornernet_decode {fmt(HEADS)} K={K} {name}"] = partial(_decode, dt)
    for method in ("hard", "linear", "gaussian"):
        cases[f"soft_nms {SOFT_NMS_BOXES} boxes {method} float32"] = partial(_soft_nms, method)
    return cases


@dataclass
class Launch:
    """One recorded kernel launch: the JITFunction, its arguments and grid, and its case."""

    fn: Any
    args: tuple
    kwargs: dict
    grid: tuple[int, ...]
    case: str


def kernel_functions() -> dict[str, Any]:
    """Every @triton.jit function of the kernels package, ``{"module:name": fn}``.

    JITFunctions, or the interpreter's stand-ins when TRITON_INTERPRET was set at import.
    """
    # triton on use: TRITON_INTERPRET at import decides what it holds
    from triton.runtime.jit import KernelInterface

    found = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        mod = importlib.import_module(f"kernels.{info.name}")
        for name, obj in vars(mod).items():
            if isinstance(obj, KernelInterface) and obj.fn.__module__ == mod.__name__:
                found[f"{mod.__name__}:{name}"] = obj
    return found


@contextlib.contextmanager
def _recording(launches: list[Launch], case: list[str]) -> Iterator[None]:
    """Kernels are recorded instead of launched, and meta tensors say they are CUDA tensors.

    is_cuda is patched on torch.Tensor rather than given to a subclass: autograd hands a
    custom Function its saved outputs back as plain tensors, which would lose a subclass's.
    """
    # triton on use: TRITON_INTERPRET at import decides what it holds
    from triton.runtime.jit import JITFunction

    fns = [fn for fn in kernel_functions().values() if isinstance(fn, JITFunction)]

    def recorder(fn: Any) -> Callable[..., None]:
        def run(*args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
            grid = tuple(grid(kwargs) if callable(grid) else grid)
            launches.append(Launch(fn, args, kwargs, grid, case[0]))

        return run

    device = torch.cuda.device
    torch.Tensor.is_cuda = property(lambda t: t.device.type in ("cuda", "meta"))
    torch.cuda.device = lambda *a, **k: contextlib.nullcontext()  # no CUDA runtime for meta
    for fn in fns:
        fn.run = recorder(fn)  # fn[grid](...) calls fn.run(..., grid=grid, warmup=False)
    try:
        yield
    finally:
        del torch.Tensor.is_cuda  # TensorBase's again
        torch.cuda.device = device
        for fn in fns:
            del fn.run


def record_launches(dtypes: Sequence[str], pattern: str | None = None) -> list[Launch]:
    """The launches of every case of :func:`benchmark_cases` whose label contains ``pattern``.

    Code after a case's last launch may need real data (soft_nms compacts its output): its
    error is ignored once the case has launched something; a case that launched nothing
    raises RuntimeError.
    """
    import triton  # triton on use: TRITON_INTERPRET at import decides what it holds

    if triton.knobs.runtime.interpret:
        raise RuntimeError(
            "triton was imported with TRITON_INTERPRET: use bench.aot.compile.aot_table"
        )
    launches: list[Launch] = []
    case = [""]
    with _recording(launches, case):
        for label, thunk in benchmark_cases(dtypes).items():
            if pattern and pattern.lower() not in label.lower():
                continue
            case[0], before = label, len(launches)
            try:
                thunk()
            except Exception as exc:
                if len(launches) == before:
                    raise RuntimeError(f"{label}: no kernel launched ({exc!r})") from exc
    return launches
