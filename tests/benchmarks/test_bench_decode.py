"""Benchmarks: CornerNet decode, heatmap peaks and soft-NMS (pytest-benchmark).

Providers: "torch" (our reference, the CPU path), "dense" (the original's decode written
naively: max_pool2d NMS, K x K x 4 boxes) and "triton" (CUDA only, marked gpu). Inputs are the
recorded CornerNet head outputs at 1x80x128x128 (tests/fixtures/decode.pt, K = 100, 1000
detections). Each case runs 20 timed rounds after one warm-up; the median is the figure to
read. CPU figures use the thread count tests/conftest.py sets (1 unless
CORNERBENCH_TEST_THREADS says otherwise). On a GPU the timed function synchronises, and a
CUDA-event figure from triton.testing.do_bench is stored in extra_info["cuda_ms"].
"""

from __future__ import annotations

import os
import time
from functools import partial

import pytest
import torch

from kernels.decode import cornernet_decode, cornernet_decode_dense, cornernet_decode_reference
from kernels.heatmap import heatmap_peaks
from kernels.soft_nms import soft_nms, soft_nms_per_class

HEADS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_regr", "br_regr")
ROUNDS = 20
PROVIDERS = ["torch", "dense", pytest.param("triton", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def coco(fixtures_dir: str) -> dict:
    return torch.load(os.path.join(fixtures_dir, "decode.pt"), weights_only=True)["cases"]["coco"]


def _run(benchmark, fn, device: str):
    """Time fn: 1 warm-up + ROUNDS rounds; on CUDA synchronise and also record CUDA events."""
    if device == "cuda":
        import triton.testing

        benchmark.extra_info["cuda_ms"] = triton.testing.do_bench(fn)

        def timed():
            out = fn()
            torch.cuda.synchronize()
            return out

    else:
        timed = fn
    out = benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return out


def _boxes(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=gen) * 400
    wh = torch.rand(n, 2, generator=gen) * 120 + 4
    scores = torch.rand(n, generator=gen)
    labels = torch.randint(0, 80, (n,), generator=gen)
    return torch.cat([xy, xy + wh], 1).to(device), scores.to(device), labels.to(device)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_decode(benchmark, coco: dict, provider: str) -> None:
    benchmark.group = "cornernet_decode 1x80x128x128 K=100 num_dets=1000"
    device = "cuda" if provider == "triton" else "cpu"
    heads = [coco[k].to(device) for k in HEADS]
    fn = {
        "torch": cornernet_decode_reference,
        "dense": cornernet_decode_dense,
        "triton": partial(cornernet_decode, backend="triton"),
    }[provider]
    out = _run(benchmark, lambda: fn(*heads, K=100, num_dets=1000), device)
    n_valid = int((coco["detections"][..., 4] > -1).sum())
    assert int((out[..., 4] > -1).sum()) == n_valid


@pytest.mark.parametrize("provider", ["torch", pytest.param("triton", marks=pytest.mark.gpu)])
def test_bench_heatmap_peaks(benchmark, coco: dict, provider: str) -> None:
    benchmark.group = "heatmap_peaks 1x80x128x128 k=100"
    device = "cuda" if provider == "triton" else "cpu"
    heat = coco["tl_heat"].to(device)
    scores, *_ = _run(benchmark, lambda: heatmap_peaks(heat, 100, backend=provider), device)
    assert scores.shape == (1, 100)


@pytest.mark.parametrize("provider", ["torch", pytest.param("triton", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("per_class", [False, True], ids=["one_class", "80_classes"])
def test_bench_soft_nms(benchmark, provider: str, per_class: bool) -> None:
    benchmark.group = f"soft_nms gaussian 1000 boxes {'80 classes' if per_class else '1 class'}"
    device = "cuda" if provider == "triton" else "cpu"
    boxes, scores, labels = _boxes(1000, device)
    if per_class:
        fn = partial(soft_nms_per_class, boxes, scores, labels, backend=provider)
    else:
        fn = partial(soft_nms, boxes, scores, backend=provider)
    keep, kept = _run(benchmark, fn, device)
    assert 0 < keep.shape[0] <= 1000 and kept.shape == keep.shape


def test_torch_decode_at_most_half_of_dense(coco: dict) -> None:
    """Speed target: our CPU decode takes at most half the original-style dense decode.

    Both run interleaved in this process on one thread (two threads on a busy shared machine
    mostly measure OpenMP barrier waits) and are compared by their best of 9 runs, the figure
    least disturbed by other work.
    """
    heads = [coco[k] for k in HEADS]
    best = {cornernet_decode_reference: float("inf"), cornernet_decode_dense: float("inf")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(9):
            for fn in best:
                start = time.perf_counter()
                fn(*heads, K=100, num_dets=1000)
                best[fn] = min(best[fn], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    ours, dense = best.values()
    assert ours <= 0.5 * dense, f"torch decode {ours * 1e3:.1f} ms, dense {dense * 1e3:.1f} ms"
