"""pytest-benchmark: CornerNet's top-left pooled sum, top(a) + left(b), per provider.

The cases are the shared ``corner_pool_tl_fwd`` (inference at (1, 256, 128, 128), under
no_grad) and ``corner_pool_tl_fwd_bwd`` (forward + backward at batch 1 on the CPU, 8 on a GPU)
of bench/measure/kernel_cases.py, the ones ``python -m bench kernels`` times. Providers:
triton (the fused kernel, GPU only), torch (the reference: one in-place maximum per row),
cummax (flip + torch.cummax + flip), loop (the original's row-by-row algorithm). CPU: few
rounds, each already 30-300 ms, after one warm-up round (the first touches freshly allocated
64 MB buffers and ran 2-6x slower). The CPU medians are gated against
tests/benchmarks/baseline.json by conftest.py (bench/results/regression.py); GPU figures are
recorded, not gated.
"""

from __future__ import annotations

from bench.measure.kernel_cases import KernelCase

# the shared cases timed here (conftest.py parametrises kernel_case) -> timed rounds on the CPU
CPU_ROUNDS = {"corner_pool_tl_fwd": 7, "corner_pool_tl_fwd_bwd": 5}


def test_bench_kernel(time_case, kernel_case: KernelCase) -> None:
    time_case(kernel_case)
