"""bench.measure.timing: stage timers, warm-up handling, percentiles."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bench.measure.timing import StageTimer, measure, measure_stages, summarize


def test_summarize_known_arrays():
    # numpy's linear interpolation on 1..100: rank q/100 * 99 between sorted values
    s = summarize(np.arange(1, 101, dtype=float))
    assert s == {
        "p50": 50.5,
        "p90": pytest.approx(90.1),
        "p99": pytest.approx(99.01),
        "mean": 50.5,
        "n": 100,
    }
    shuffled = np.random.default_rng(0).permutation([5.0, 1.0, 3.0, 2.0, 4.0])
    s = summarize(list(shuffled))
    assert (s["p50"], s["p90"], s["mean"], s["n"]) == (3.0, pytest.approx(4.6), 3.0, 5)
    assert summarize([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0, "mean": 7.0, "n": 1}
    with pytest.raises(ValueError, match="non-empty"):
        summarize([])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])


def test_stage_timer_cpu_records_each_stage_per_iteration():
    timer = StageTimer("cpu")
    for _ in range(3):
        with timer.stage("forward"):
            time.sleep(0.004)
        with timer.stage("decode"):
            pass
    times = timer.times()
    assert set(times) == {"forward", "decode"}
    assert times["forward"].shape == (3,) and times["decode"].shape == (3,)
    assert np.all(times["forward"] >= 4.0)  # ms
    assert np.all(times["decode"] < times["forward"])
    timer.reset()
    assert timer.times() == {}


def test_stage_timer_skips_failed_blocks_and_bad_names():
    timer = StageTimer(torch.device("cpu"))
    with pytest.raises(RuntimeError), timer.stage("forward"):
        raise RuntimeError("boom")
    assert timer.counts() == {}
    with pytest.raises(ValueError, match="reserved"), timer.stage("total"):
        pass
    with pytest.raises(ValueError, match="already running"), timer.stage("a"), timer.stage("a"):
        pass
    with pytest.raises(ValueError, match="meta"):
        StageTimer("meta")


def test_measure_excludes_warmup():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.03 if len(calls) <= 2 else 0.001)  # only warm-up calls are slow

    ms = measure(fn, warmup=2, iters=4, device="cpu")
    assert len(calls) == 6 and ms.shape == (4,)
    assert np.all(ms >= 1.0) and np.all(ms < 25.0)
    with pytest.raises(ValueError, match="iters"):
        measure(fn, warmup=0, iters=0, device="cpu")
    with pytest.raises(ValueError, match="warmup"):
        measure(fn, warmup=-1, iters=1, device="cpu")


def test_measure_stages_per_stage_and_total():
    seen = []

    def step(timer):
        seen.append(timer.enabled)
        slow = len(seen) <= 1  # the warm-up iteration
        with timer.stage("forward"):
            time.sleep(0.03 if slow else 0.002)
        with timer.stage("decode"):
            time.sleep(0.001)

    out = measure_stages(step, warmup=1, iters=3, device="cpu")
    assert seen == [False, True, True, True]
    assert set(out) == {"forward", "decode", "total"}
    assert all(v.shape == (3,) for v in out.values())
    assert np.all(out["forward"] >= 2.0) and np.all(out["forward"] < 25.0)
    assert np.all(out["total"] >= out["forward"] + out["decode"])

    calls = []

    def uneven(timer):  # "decode" runs on the second call only
        calls.append(1)
        with timer.stage("forward"):
            pass
        if len(calls) == 2:
            with timer.stage("decode"):
                pass

    with pytest.raises(ValueError, match="once per iteration"):
        measure_stages(uneven, warmup=0, iters=3, device="cpu")


@pytest.mark.gpu
def test_cuda_events_time_gpu_work():
    x = torch.randn(2048, 2048, device="cuda")

    def step(timer):
        with timer.stage("small"):
            x[:8, :8].sum()
        with timer.stage("matmul"):
            for _ in range(10):
                x @ x

    out = measure_stages(step, warmup=2, iters=5, device="cuda")
    assert np.all(out["matmul"] > out["small"])
    assert np.all(out["total"] >= out["matmul"])
    ms = measure(lambda: x @ x, warmup=2, iters=5, device="cuda")
    assert ms.shape == (5,) and np.all(ms > 0)
