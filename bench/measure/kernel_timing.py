"""Timing the kernels against their torch references and baselines (the command is
:mod:`bench.commands.kernels`).

The cases are :data:`bench.measure.kernel_cases.KERNEL_CASES`, the definition the
pytest-benchmark modules of tests/benchmarks/ time too (workloads, providers and sizes are
described there): the benchmark shapes (FULL) on a GPU, SMALL on the CPU (pooling forward +
backward at batch 1). They are measured the harness's way, :func:`bench.measure.timing.measure`:
warm-up, then timed calls, CUDA events on a GPU, ``perf_counter`` on the CPU. Providers:
``triton`` (CUDA only), ``torch`` (the reference, our CPU path; ``x_vs_torch`` divides by it)
and baselines (``cummax``, ``loop``, ``dense``, ``per_class``).

Bandwidth (pooling rows): ``GB/s`` counts the minimum traffic of the op, 12 B per fp32
element forward (read a and b, write the sum) and 32 B forward + backward (+ read the output
gradient, write two input gradients, read the saved pooled maps), divided by the median time.
``of_copy`` is that figure over the device's copy bandwidth measured in the same process (a
256 MiB ``copy_`` into a preallocated tensor: read + write), the practical ceiling;
``of_peak`` is over the nominal peak when the GPU is one of :data:`NOMINAL_GBPS`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from bench.measure.kernel_cases import CaseUnavailable, Inputs, Size, cases_for, size_for
from bench.measure.timing import measure, summarize

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


def copy_bandwidth(device: torch.device, mib: int = 256, iters: int = 10) -> float:
    """GB/s of copying a ``mib`` MiB tensor into another on ``device`` (bytes read + written)."""
    x = torch.ones(mib * 2**20 // 4, device=device)
    y = torch.empty_like(x)
    ms = measure(lambda: y.copy_(x), warmup=2, iters=iters, device=device)
    return 2 * x.numel() * 4 / (float(sorted(ms)[len(ms) // 2]) * 1e-3) / 1e9


def kernel_cases(device: torch.device, size: Size | None = None) -> list[dict[str, Any]]:
    """``[{"id", "case", "provider", "fn"[, "elements", "bytes_per_element"]}]``: every case
    of :data:`~bench.measure.kernel_cases.KERNEL_CASES` that runs on ``device``, built at
    ``size`` (default: FULL on a GPU, SMALL on the CPU). The providers of a workload share its
    inputs; a workload whose inputs cannot be made here is left out with a warning."""
    size = size or size_for(device)
    made: dict[str, Inputs | None] = {}
    cases: list[dict[str, Any]] = []
    for case in cases_for(device):
        if case.name not in made:
            try:
                made[case.name] = case.inputs(device, size)
            except CaseUnavailable as exc:
                warnings.warn(f"{case.name}: left out ({exc})", stacklevel=2)
                made[case.name] = None
        inputs = made[case.name]
        if inputs is None:
            continue
        row = {"id": case.id, "case": inputs.label, "provider": case.provider,
               "fn": case.op(inputs)}  # fmt: skip
        if inputs.elements is not None:
            row.update(elements=inputs.elements, bytes_per_element=inputs.bytes_per_element)
        cases.append(row)
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
        if "id" in c:  # the shared case's id: test_bench_kernel[<id>] in tests/benchmarks
            row["id"] = c["id"]
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
