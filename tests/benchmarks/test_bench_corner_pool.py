"""pytest-benchmark: CornerNet's top-left pooled sum, top(a) + left(b), per provider.

Providers: triton (the fused kernel, GPU only), torch (the reference: one in-place maximum
per row), cummax (flip + torch.cummax + flip), loop (the original's row-by-row algorithm).
Inference at (1, 256, 128, 128) and forward + backward training at batch 1 (every device:
the CPU loops of the baselines take seconds per round at larger batches on 2 shared cores)
and batch 8 (GPU only). On a GPU the timed function synchronises, so host timings are
device timings. The CPU medians are gated against tests/benchmarks/baseline.json by
conftest.py (bench/results/regression.py); GPU figures are recorded, not gated.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from kernels import fused_corner_pool, fused_corner_pool_reference
from kernels.corner_pool_baselines import corner_pool_cummax, corner_pool_loop

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CHANNELS, SIZE = 256, 128  # CornerNet's pooling branch: 128 x 128 maps (511 input), 256 channels

PROVIDERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "triton": lambda a, b: fused_corner_pool(a, b, "tl", backend="triton"),
    "torch": lambda a, b: fused_corner_pool_reference(a, b, "tl"),
    "cummax": lambda a, b: corner_pool_cummax(a, "top") + corner_pool_cummax(b, "left"),
    "loop": lambda a, b: corner_pool_loop(a, "top") + corner_pool_loop(b, "left"),
}
PROVIDER_PARAMS = [
    pytest.param(name, marks=[pytest.mark.gpu] if name == "triton" else [], id=name)
    for name in PROVIDERS
]


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _rounds(cpu: int) -> dict[str, int]:
    # CPU: few rounds, each already 30-300 ms, after one warm-up round (the first touches
    # freshly allocated 64 MB buffers and ran 2-6x slower); GPU: enough for a stable median
    if DEVICE == "cuda":
        return {"rounds": 50, "warmup_rounds": 5, "iterations": 1}
    return {"rounds": cpu, "warmup_rounds": 1, "iterations": 1}


@pytest.mark.parametrize("provider", PROVIDER_PARAMS)
def test_bench_fused_tl_inference(benchmark, provider: str) -> None:
    shape = (1, CHANNELS, SIZE, SIZE)
    a, b = torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE)
    fn = PROVIDERS[provider]

    def run() -> torch.Tensor:
        with torch.no_grad():
            out = fn(a, b)
        _sync()
        return out

    benchmark.group = "corner_pool tl inference (1, 256, 128, 128)"
    benchmark.extra_info.update(provider=provider, shape=list(shape), device=DEVICE)
    out = benchmark.pedantic(run, **_rounds(7))
    assert out.shape == shape


@pytest.mark.parametrize(
    "batch", [pytest.param(1, id="batch1"), pytest.param(8, marks=pytest.mark.gpu, id="batch8")]
)
@pytest.mark.parametrize("provider", PROVIDER_PARAMS)
def test_bench_fused_tl_training(benchmark, provider: str, batch: int) -> None:
    shape = (batch, CHANNELS, SIZE, SIZE)
    a = torch.randn(shape, device=DEVICE, requires_grad=True)
    b = torch.randn(shape, device=DEVICE, requires_grad=True)
    grad = torch.randn(shape, device=DEVICE)
    fn = PROVIDERS[provider]

    def run() -> tuple[torch.Tensor, ...]:
        # autograd.grad: no accumulation into .grad between rounds
        grads = torch.autograd.grad(fn(a, b), (a, b), grad)
        _sync()
        return grads

    benchmark.group = f"corner_pool tl forward+backward {shape}"
    benchmark.extra_info.update(provider=provider, shape=list(shape), device=DEVICE)
    ga, gb = benchmark.pedantic(run, **_rounds(5))
    assert ga.shape == gb.shape == shape
