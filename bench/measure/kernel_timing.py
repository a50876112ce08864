"""``python -m bench kernels``: the kernels against their torch references and baselines.

The cases are the CornerNet shapes of tests/benchmarks (same providers, measured the
harness's way, :func:`bench.measure.timing.measure`: warm-up, then timed calls, CUDA events on
a GPU,
``perf_counter`` on the CPU):

- ``corner_pool tl fwd``: ``fused_corner_pool(a, b, "tl")`` at (1, 256, 128, 128) fp32;
- ``corner_pool tl fwd+bwd``: forward and backward at (B, 256, 128, 128), B = 8 on a GPU, 1 on
  the CPU (the baselines' Python row loops take seconds per call there);
- ``cornernet_decode``: 1 x 80 x 128 x 128 heads, K = 100, 1000 detections;
- ``heatmap_peaks``: 1 x 80 x 128 x 128, k = 100;
- ``soft_nms``: 1000 boxes, Gaussian.

Providers: ``triton`` (CUDA only), ``torch`` (the reference, our CPU path), ``cummax`` (flip +
cummax + flip) and ``loop`` (the original's row loop) for pooling, ``dense`` (the original's
decode written naively, K x K x 4 boxes) for decode.

Bandwidth (pooling rows): ``GB/s`` counts the minimum traffic of the op, 12 B per fp32
element forward (read a and b, write the sum) and 32 B forward + backward (+ read the output
gradient, write two input gradients, read the saved pooled maps), divided by the median time.
``of_copy`` is that figure over the device's copy bandwidth measured in the same process (a
256 MiB ``copy_`` into a preallocated tensor: read + write), the practical ceiling;
``of_peak`` is over the nominal peak when the GPU is one of :data:`NOMINAL_GBPS`.

Writes ``kernels.json`` / ``kernels.csv`` / ``kernels.md`` and ``env.json`` into ``--out``
(default ``reports/kernels/<date>-<device>/``) and prints the table.

``--aot [--arch 80 90] [--dtypes float32|all]``: no timing and no GPU; every specialisation the
launchers choose at these shapes is compiled ahead of time for the given compute capabilities
and its static figures (registers, spills, shared memory, occupancy, loads in flight,
instructions) are written to ``<out>/aot-<arch>/`` (default ``reports/kernels/aot-<arch>/``):
see :mod:`bench.aot.cases`, :mod:`bench.aot.compile` and :mod:`bench.aot.report`. Exit code 1 when a
kernel does not compile.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from bench.measure.timing import measure, summarize
from kernels import cornernet_decode, fused_corner_pool, heatmap_peaks, soft_nms
from kernels.corner_pool_baselines import corner_pool_cummax, corner_pool_loop
from kernels.decode import cornernet_decode_dense, cornernet_decode_reference

__all__ = ["NOMINAL_GBPS", "copy_bandwidth", "kernel_cases", "run_cases"]

# nominal DRAM bandwidth (GB/s) of GPUs by a substring of torch.cuda.get_device_name()
NOMINAL_GBPS: dict[str, float] = {
    "H200": 4800.0,
    "H100 SXM": 3350.0,
    "H100 80GB HBM3": 3350.0,
    "H100 PCIe": 2000.0,
    "A100-SXM4-80GB": 2039.0,
    "A100-SXM4-40GB": 1555.0,
    "A100 80GB PCIe": 1935.0,
    "L4": 300.0,
    "RTX 4090": 1008.0,
}
POOL_SHAPE = (256, 128, 128)  # CornerNet's pooling branch at a 511 x 511 input
FWD_BYTES, FWD_BWD_BYTES = 12, 32  # minimum bytes per fp32 element (module docstring)


def copy_bandwidth(device: torch.device, mib: int = 256, iters: int = 10) -> float:
    """GB/s of copying a ``mib`` MiB tensor into another on ``device`` (bytes read + written)."""
    x = torch.ones(mib * 2**20 // 4, device=device)
    y = torch.empty_like(x)
    ms = measure(lambda: y.copy_(x), warmup=2, iters=iters, device=device)
    return 2 * x.numel() * 4 / (float(sorted(ms)[len(ms) // 2]) * 1e-3) / 1e9


def _pooling(batch: int, device: torch.device, backward: bool) -> dict[str, Callable]:
    shape = (batch, *POOL_SHAPE)
    a = torch.randn(shape, device=device, requires_grad=backward)
    b = torch.randn(shape, device=device, requires_grad=backward)
    grad = torch.randn(shape, device=device)
    ops = {
        "torch": lambda: fused_corner_pool(a, b, "tl", backend="torch"),
        "cummax": lambda: corner_pool_cummax(a, "top") + corner_pool_cummax(b, "left"),
        "loop": lambda: corner_pool_loop(a, "top") + corner_pool_loop(b, "left"),
    }
    if device.type == "cuda":
        ops = {"triton": lambda: fused_corner_pool(a, b, "tl", backend="triton"), **ops}

    def wrap(op: Callable) -> Callable:
        if backward:
            return lambda: torch.autograd.grad(op(), (a, b), grad)
        return lambda: op()

    return {name: wrap(op) for name, op in ops.items()}


def _decode_inputs(device: torch.device) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    heat = [torch.randn(1, 80, 128, 128, generator=gen) - 4 for _ in range(2)]  # sparse peaks
    tags = [torch.randn(1, 1, 128, 128, generator=gen) for _ in range(2)]
    regr = [torch.rand(1, 2, 128, 128, generator=gen) for _ in range(2)]
    return [t.to(device) for t in (*heat, *tags, *regr)]


def kernel_cases(device: torch.device) -> list[dict[str, Any]]:
    """``[{"case", "provider", "fn", "elements", "bytes_per_element"}]`` for ``device``."""
    triton = ["triton"] if device.type == "cuda" else []
    cases: list[dict[str, Any]] = []
    train_batch = 8 if device.type == "cuda" else 1
    for label, batch, backward, nbytes in (
        ("corner_pool tl fwd", 1, False, FWD_BYTES),
        ("corner_pool tl fwd+bwd", train_batch, True, FWD_BWD_BYTES),
    ):
        label = f"{label} ({batch}, 256, 128, 128)"
        for provider, fn in _pooling(batch, device, backward).items():
            elements = batch * POOL_SHAPE[0] * POOL_SHAPE[1] * POOL_SHAPE[2]
            cases.append(dict(case=label, provider=provider, fn=fn, elements=elements,
                              bytes_per_element=nbytes))  # fmt: skip
    heads = _decode_inputs(device)
    decoders = {"torch": cornernet_decode_reference, "dense": cornernet_decode_dense}
    if triton:
        decoders = {"triton": partial(cornernet_decode, backend="triton"), **decoders}
    for provider, fn in decoders.items():
        cases.append(dict(case="cornernet_decode 1x80x128x128 K=100", provider=provider,
                          fn=partial(fn, *heads, K=100, num_dets=1000)))  # fmt: skip
    for provider in [*triton, "torch"]:
        cases.append(dict(case="heatmap_peaks 1x80x128x128 k=100", provider=provider,
                          fn=partial(heatmap_peaks, heads[0], 100, backend=provider)))  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    xy, wh = torch.rand(1000, 2, generator=gen) * 400, torch.rand(1000, 2, generator=gen) * 120 + 4
    boxes, scores = (
        torch.cat([xy, xy + wh], 1).to(device),
        torch.rand(1000, generator=gen).to(device),
    )
    for provider in [*triton, "torch"]:
        cases.append(dict(case="soft_nms gaussian 1000 boxes", provider=provider,
                          fn=partial(soft_nms, boxes, scores, backend=provider)))  # fmt: skip
    return cases


def run_cases(
    cases: list[dict[str, Any]], device: torch.device, *, warmup: int, iters: int,
    copy_gbps: float | None, peak_gbps: float | None, progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Time every case; one row per case with median/p90 ms, speed-up and bandwidth."""

    rows = []
    for c in cases:
        if progress is not None:
            progress(f"{c['case']} [{c['provider']}]")
        stats = summarize(measure(c["fn"], warmup=warmup, iters=iters, device=device))
        row = {"case": c["case"], "provider": c["provider"], "median_ms": stats["p50"],
               "p90_ms": stats["p90"], "iters": stats["n"]}  # fmt: skip
        if "elements" in c:
            gbps = c["elements"] * c["bytes_per_element"] / (stats["p50"] * 1e-3) / 1e9
            row["GB/s"] = gbps
            row["of_copy"] = gbps / copy_gbps if copy_gbps else None
            row["of_peak"] = gbps / peak_gbps if peak_gbps else None
        rows.append(row)
    for row in rows:  # speed-up over the torch reference of the same case
        ref = next(r for r in rows if r["case"] == row["case"] and r["provider"] == "torch")
        row["x_vs_torch"] = ref["median_ms"] / row["median_ms"]
    return rows
