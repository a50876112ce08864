"""Benchmarks: CornerNet decode, heatmap peaks and soft-NMS (pytest-benchmark).

The cases are the shared ``cornernet_decode``, ``heatmap_peaks``, ``soft_nms`` (1000 boxes,
one class) and ``soft_nms_per_class`` (the same boxes in 80 classes) of
bench/measure/kernel_cases.py, the ones ``python -m bench kernels`` times: 1x80x128x128 heads
with the statistics of the original's recorded test heads, K = 100, 1000 detections.
Providers: "torch" (our reference, the CPU path), "dense" (the original's decode written
naively: max_pool2d NMS, K x K x 4 boxes) and "triton" (CUDA only, marked gpu). Each case runs
20 timed rounds after one warm-up on the CPU; the median is the figure to read. CPU figures
use the thread count tests/conftest.py sets (1 unless CORNERBENCH_TEST_THREADS says
otherwise). On a GPU the timed function synchronises, and a CUDA-event figure from
triton.testing.do_bench is stored in extra_info["cuda_ms"] (conftest.py's time_case).
"""

from __future__ import annotations

import time

import torch

from bench.measure.kernel_cases import SMALL, KernelCase, cases_named

# the shared cases timed here (conftest.py parametrises kernel_case) -> timed rounds on the CPU
CPU_ROUNDS = {"cornernet_decode": 20, "heatmap_peaks": 20, "soft_nms": 20, "soft_nms_per_class": 20}


def test_bench_kernel(time_case, kernel_case: KernelCase) -> None:
    time_case(kernel_case)


def test_torch_decode_at_most_half_of_dense() -> None:
    """Speed target: our CPU decode takes at most half the original-style dense decode.

    Both (the shared cornernet_decode case's torch and dense providers) run interleaved in
    this process on one thread (two threads on a busy shared machine mostly measure OpenMP
    barrier waits) and are compared by their best of 9 runs, the figure least disturbed by
    other work.
    """
    cases = {c.provider: c for c in cases_named("cornernet_decode")}
    inputs = cases["torch"].inputs(torch.device("cpu"), SMALL)
    best = {cases[p].op(inputs): float("inf") for p in ("torch", "dense")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(9):
            for fn in best:
                start = time.perf_counter()
                fn()
                best[fn] = min(best[fn], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    ours, dense = best.values()
    assert ours <= 0.5 * dense, f"torch decode {ours * 1e3:.1f} ms, dense {dense * 1e3:.1f} ms"
